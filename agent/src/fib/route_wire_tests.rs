//! The wire reader against netlink-packet-route's full parse: where it
//! answers, the same event; the kernel's own messages take the short way.

use super::*;
use crate::fib::route_msg;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteCacheInfo, RouteHeader, RouteMessage, RouteMetric, RouteNextHop, RoutePreference, RouteType,
    },
    AddressFamily,
};
use proptest::prelude::*;
use rtnetlink::packet_core::{Emitable, NetlinkDeserializable, NetlinkHeader};

fn bytes(m: &RouteMessage) -> Vec<u8> {
    let mut buf = vec![0; m.buffer_len()];
    m.emit(&mut buf);
    buf
}

/// What the full path makes of `payload` (`None`: undecodable, or no route).
fn full(payload: &[u8], present: bool, replace: bool) -> Option<Event> {
    let mut header = NetlinkHeader::default();
    header.message_type = if present { 24 } else { 25 };
    match RouteNetlinkMessage::deserialize(&header, payload).ok()? {
        RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m) => route_msg::route_event(&m, present, replace),
        _ => None,
    }
}

fn addr(v6: bool, raw: u128) -> RouteAddress {
    if v6 {
        RouteAddress::Inet6(Ipv6Addr::from(raw))
    } else {
        RouteAddress::Inet(Ipv4Addr::from(raw as u32))
    }
}

fn metric(kind: u8, v: u32) -> RouteMetric {
    match kind % 18 {
        0 => RouteMetric::Lock(v),
        1 => RouteMetric::Mtu(v),
        2 => RouteMetric::Window(v),
        3 => RouteMetric::Rtt(v),
        4 => RouteMetric::RttVar(v),
        5 => RouteMetric::SsThresh(v),
        6 => RouteMetric::Cwnd(v),
        7 => RouteMetric::Advmss(v),
        8 => RouteMetric::Reordering(v),
        9 => RouteMetric::Hoplimit(v),
        10 => RouteMetric::InitCwnd(v),
        11 => RouteMetric::Features(v),
        12 => RouteMetric::RtoMin(v),
        13 => RouteMetric::InitRwnd(v),
        14 => RouteMetric::QuickAck(v),
        15 => RouteMetric::FastopenNoCookie(v),
        16 => RouteMetric::CcAlgo("cubic".into()),
        _ => RouteMetric::Mtu(v),
    }
}

/// An RTA_METRICS attribute's own list: a prefix of `metrics` by `raw`,
/// so that two in one message differ.
fn metrics_of(raw: u128, metrics: &[(u8, u32)]) -> &[(u8, u32)] {
    &metrics[..(raw as usize) % (metrics.len() + 1)]
}

/// Whether the wire reader takes a message `message` builds from these.
fn common_shape(v6: bool, header: (u8, u8, u8, u8, u8), attrs: &[(u8, u128)], metrics: &[(u8, u32)]) -> bool {
    let (len, _, kind, src_len, tos) = header;
    let attr_ok = |(k, raw): &(u8, u128)| match k % 14 {
        0..=9 => true,
        10 => metrics_of(*raw, metrics).iter().all(|(m, _)| m % 18 != 16),
        _ => false,
    };
    kind == 1 && src_len == 0 && tos == 0 && len <= if v6 { 128 } else { 32 } && attrs.iter().all(attr_ok)
}

/// One attribute of a route message, common or not.
fn attribute(v6: bool, kind: u8, raw: u128, metrics: &[(u8, u32)]) -> RouteAttribute {
    let v = raw as u32;
    match kind % 14 {
        0 | 1 => RouteAttribute::Destination(addr(v6, raw)),
        2 => RouteAttribute::Gateway(addr(v6, raw)),
        3 => RouteAttribute::Oif(v),
        4 => RouteAttribute::Priority(v),
        5 => RouteAttribute::Table(v),
        6 => RouteAttribute::NhId(v),
        7 => RouteAttribute::PrefSource(addr(v6, raw)),
        8 => RouteAttribute::Preference(RoutePreference::Medium),
        9 => RouteAttribute::CacheInfo(RouteCacheInfo::parse(&[v as u8; 32]).expect("32 bytes")),
        10 => RouteAttribute::Metrics(metrics_of(raw, metrics).iter().map(|(k, v)| metric(*k, *v)).collect()),
        11 => RouteAttribute::Iif(v),
        12 => RouteAttribute::MultiPath(vec![{
            let mut hop = RouteNextHop::default();
            hop.interface_index = v;
            hop
        }]),
        // Another family's address: a length the reader does not expect.
        _ => RouteAttribute::Gateway(addr(!v6, raw)),
    }
}

fn message(v6: bool, header: (u8, u8, u8, u8, u8), attrs: &[(u8, u128)], metrics: &[(u8, u32)]) -> RouteMessage {
    let (len, table, kind, src_len, tos) = header;
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet },
        destination_prefix_length: len,
        source_prefix_length: src_len,
        tos,
        table,
        kind: RouteType::from(kind),
        ..Default::default()
    };
    m.attributes = attrs.iter().map(|(k, raw)| attribute(v6, *k, *raw, metrics)).collect();
    m
}

proptest! {
    /// Any message netlink-packet-route writes: where the wire reader
    /// answers, it answers as the full parse does.
    #[test]
    fn the_wire_reader_agrees_with_the_full_parse(
        v6 in any::<bool>(),
        len in prop_oneof![0u8..=32, 0u8..=129],
        table in any::<u8>(),
        kind in prop_oneof![4 => Just(1u8), 1 => 0u8..12],
        src_len in prop_oneof![8 => Just(0u8), 1 => any::<u8>()],
        tos in prop_oneof![8 => Just(0u8), 1 => any::<u8>()],
        attrs in prop::collection::vec((prop_oneof![6 => 0u8..11, 1 => 11u8..14], any::<u128>()), 0..8),
        metrics in prop::collection::vec((prop_oneof![8 => 0u8..16, 1 => 16u8..18], any::<u32>()), 0..5),
        present in any::<bool>(),
        replace in any::<bool>(),
    ) {
        let header = (len, table, kind, src_len, tos);
        let payload = bytes(&message(v6, header, &attrs, &metrics));
        let lean = route_event(&payload, present, replace);
        prop_assert_eq!(lean.is_some(), common_shape(v6, header, &attrs, &metrics), "which way {:?} goes", attrs);
        if lean.is_some() {
            prop_assert_eq!(lean, full(&payload, present, replace));
        }
    }

    /// A genuine message bent the ways the crate never writes (attribute
    /// type flags, a length a little off, cut short, trailing bytes):
    /// where the wire reader still answers, the full parse agrees.
    #[test]
    fn a_bent_message_is_read_the_same_way_or_left_to_the_full_parse(
        v6 in any::<bool>(),
        attrs in prop::collection::vec((0u8..11, any::<u128>()), 1..6),
        metrics in prop::collection::vec((0u8..16, any::<u32>()), 0..4),
        bends in prop::collection::vec((any::<u16>(), 0u8..5, any::<u8>()), 1..4),
    ) {
        let mut payload = bytes(&message(v6, (24, 254, 1, 0, 0), &attrs, &metrics));
        for (at, how, by) in bends {
            // Somewhere in the attributes (past the 12-byte rtmsg).
            let at = RTMSG_LEN + usize::from(at) % (payload.len() - RTMSG_LEN).max(1);
            let last = payload.len() - 1;
            match how {
                // A type's flag bits (NLA_F_NESTED, NLA_F_NET_BYTEORDER).
                0 if at + 3 < payload.len() => payload[at + 3] |= 0x40 << (by % 2),
                // A byte of a length or a value changed.
                1 => payload[at.min(last)] = by,
                2 => payload.truncate(at),
                3 => payload.extend(std::iter::repeat_n(by, usize::from(by % 4))),
                _ => payload.insert(at.min(last + 1), by),
            }
        }
        if let Some(lean) = route_event(&payload, true, false) {
            prop_assert_eq!(Some(lean), full(&payload, true, false));
        }
    }

    /// Any bytes at all: no panic, and an answer only where the full parse
    /// gives the same one.
    #[test]
    fn any_bytes_are_read_the_same_way_or_left_to_the_full_parse(payload in prop::collection::vec(any::<u8>(), 0..96), seed in any::<u64>()) {
        let mut payload = payload;
        // Mostly a plausible rtmsg, so the attribute walk is reached.
        if payload.len() >= RTMSG_LEN && seed % 4 != 0 {
            payload[0] = if seed % 2 == 0 { AF_INET } else { AF_INET6 };
            payload[2] = 0;
            payload[3] = 0;
            payload[7] = RTN_UNICAST;
        }
        if let Some(lean) = route_event(&payload, true, false) {
            prop_assert_eq!(Some(lean), full(&payload, true, false));
        }
    }
}

/// What the kernel sends for `ip route add 10.9.0.0/24 via 10.0.0.2 dev
/// if2 mtu 1400` (and its IPv6 twin with cache info) is the common shape.
#[test]
fn the_kernels_unicast_routes_take_the_short_way() {
    let v4 = message(false, (24, 254, 1, 0, 0), &[(0, 0x0a09_0000), (2, 0x0a00_0002), (3, 2), (4, 100), (5, 254), (10, 1)], &[(1, 1400)]);
    let v6 = message(true, (48, 254, 1, 0, 0), &[(0, 0x2001_0db8 << 96), (3, 2), (5, 254), (8, 0), (9, 0)], &[]);
    let nh = message(false, (24, 254, 1, 0, 0), &[(0, 0x0a09_0000), (6, 7), (5, 254)], &[]);
    for m in [v4, v6, nh] {
        let payload = bytes(&m);
        let lean = route_event(&payload, true, true);
        assert!(lean.is_some(), "{m:?}");
        assert_eq!(lean, full(&payload, true, true));
    }
    let Some(Event::Route { route, .. }) =
        route_event(&bytes(&message(false, (24, 254, 1, 0, 0), &[(0, 0x0a09_0000), (3, 2), (10, 1)], &[(1, 1400)])), true, false)
    else {
        panic!("a route")
    };
    assert_eq!(route.route.metrics.get(Rtax::Mtu), 1400);
}

/// zebra nests RTA_METRICS with NLA_F_NESTED set (type 0x8008): the
/// same route both ways.
#[test]
fn a_nested_flag_on_the_metrics_is_read_as_the_crate_reads_it() {
    let m = message(false, (24, 254, 1, 0, 0), &[(0, 0x0a09_0000), (3, 2), (10, 1)], &[(1, 1400)]);
    let mut payload = bytes(&m);
    // The attributes after the rtmsg: RTA_DST (8 bytes), RTA_OIF (8), then RTA_METRICS's header.
    let metrics_type = RTMSG_LEN + 16 + 2;
    assert_eq!(u16::from_ne_bytes([payload[metrics_type], payload[metrics_type + 1]]), RTA_METRICS);
    payload[metrics_type + 1] |= 0x80;
    let lean = route_event(&payload, true, false);
    assert!(lean.is_some());
    assert_eq!(lean, full(&payload, true, false));
    let Some(Event::Route { route, .. }) = lean else { panic!("a route") };
    assert_eq!(route.route.metrics.get(Rtax::Mtu), 1400);
}

/// Multipath, encap-free but unusual attributes, other types: the full
/// parse's to read.
#[test]
fn what_is_not_the_common_shape_is_left_to_the_full_parse() {
    for m in [
        message(false, (24, 254, 1, 0, 0), &[(0, 1), (12, 2)], &[]),
        message(false, (24, 254, 1, 0, 0), &[(0, 1), (11, 2)], &[]),
        message(false, (24, 254, 6, 0, 0), &[(0, 1)], &[]),
        message(false, (24, 254, 1, 16, 0), &[(0, 1), (3, 2)], &[]),
        message(false, (24, 254, 1, 0, 0), &[(0, 1), (3, 2), (10, 1)], &[(16, 0)]),
    ] {
        assert_eq!(route_event(&bytes(&m), true, false), None, "{m:?}");
    }
}

#[test]
fn rtax_numbers_are_the_kernels() {
    for (i, m) in Rtax::ALL.iter().enumerate() {
        assert_eq!(*m as usize, i + 1);
    }
}
