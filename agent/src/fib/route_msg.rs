//! Route messages (RTM_NEWROUTE / RTM_DELROUTE, the kernel's or zebra's
//! over FPM) in the RIB's terms: what the fast path can reproduce, and
//! what becomes a pass-to-kernel entry.

use crate::rib::{
    ecmp::Leg,
    types::{Event, KernelRoute, RouteAttrs},
    RouteInput,
};
use common::{RouteKind, RouteMetrics, Rtax};
use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteNextHop, RouteNextHopFlags, RouteType, RouteVia,
};
use std::net::IpAddr;

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// RTA_METRICS into a metric set (every RTAX value; CC_ALGO is a name in
/// netlink and is not carried).
pub fn route_metrics(list: &[RouteMetric]) -> RouteMetrics {
    let mut m = RouteMetrics::DEFAULT;
    for metric in list {
        let (rtax, v) = match metric {
            RouteMetric::Lock(v) => (Rtax::Lock, *v),
            RouteMetric::Mtu(v) => (Rtax::Mtu, *v),
            RouteMetric::Window(v) => (Rtax::Window, *v),
            RouteMetric::Rtt(v) => (Rtax::Rtt, *v),
            RouteMetric::RttVar(v) => (Rtax::Rttvar, *v),
            RouteMetric::SsThresh(v) => (Rtax::Ssthresh, *v),
            RouteMetric::Cwnd(v) => (Rtax::Cwnd, *v),
            RouteMetric::Advmss(v) => (Rtax::Advmss, *v),
            RouteMetric::Reordering(v) => (Rtax::Reordering, *v),
            RouteMetric::Hoplimit(v) => (Rtax::Hoplimit, *v),
            RouteMetric::InitCwnd(v) => (Rtax::Initcwnd, *v),
            RouteMetric::Features(v) => (Rtax::Features, *v),
            RouteMetric::RtoMin(v) => (Rtax::RtoMin, *v),
            RouteMetric::InitRwnd(v) => (Rtax::Initrwnd, *v),
            RouteMetric::QuickAck(v) => (Rtax::Quickack, *v),
            RouteMetric::FastopenNoCookie(v) => (Rtax::FastopenNoCookie, *v),
            _ => continue,
        };
        m.set(rtax, v);
    }
    m
}

/// RTA_GATEWAY, or RTA_VIA (an IPv6 gateway of an IPv4 route, RFC 5549).
fn gateway(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(a) => route_addr(a),
        RouteAttribute::Via(RouteVia::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Via(RouteVia::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

/// RTA_MULTIPATH's legs; dead legs (RTNH_F_DEAD) are left out.
fn legs(hops: &[RouteNextHop]) -> Vec<Leg> {
    hops.iter()
        .filter(|h| !h.flags.contains(RouteNextHopFlags::Dead))
        .map(|h| Leg { dev: h.interface_index, via: gateway(&h.attributes), weight: u32::from(h.hops) + 1 })
        .collect()
}

/// Why the fast path cannot reproduce a kernel route (then its prefix maps
/// to a pass-to-kernel entry): never forward such a route's packets by what
/// the entry would lack, and never let a covering route take them.
fn kernel_only(msg: &RouteMessage) -> Option<&'static str> {
    let h = &msg.header;
    match h.kind {
        RouteType::Throw => return Some("throw"),
        RouteType::Nat => return Some("nat"),
        RouteType::Multicast => return Some("multicast"),
        RouteType::ExternalResolve => return Some("xresolve"),
        _ => {}
    }
    if h.source_prefix_length != 0 {
        return Some("source-specific");
    }
    if h.tos != 0 {
        return Some("TOS-keyed");
    }
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Encap(_) | RouteAttribute::EncapType(_) => return Some("encap (lwtunnel)"),
            RouteAttribute::Iif(_) => return Some("input-interface-specific"),
            RouteAttribute::MultiPath(hops) if hops.iter().any(|h| h.attributes.iter().any(|a| matches!(a, RouteAttribute::Encap(_)))) => {
                return Some("multipath leg with an encap")
            }
            _ => {}
        }
    }
    None
}

/// A route message as a [`KernelRoute`]; `None` for what names no route the
/// fast path needs (an unknown type). What it cannot reproduce becomes a
/// [`RouteKind::Kernel`] entry: its packets go to the stack.
pub fn route_event(msg: &RouteMessage, present: bool, replace: bool) -> Option<Event> {
    let h = &msg.header;
    let mut kind = match h.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local | RouteType::Broadcast | RouteType::Anycast => RouteKind::Local,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        RouteType::Throw | RouteType::Nat | RouteType::Multicast | RouteType::ExternalResolve => RouteKind::Kernel,
        _ => return None,
    };
    if kernel_only(msg).is_some() {
        kind = RouteKind::Kernel;
    }
    let mut f = RouteFields::new(kind, h.table as u32);
    let mut dst = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_addr(a),
            // RTA_TABLE carries tables above 255; the header's byte cannot.
            RouteAttribute::Table(t) => f.table = *t,
            RouteAttribute::Oif(i) => f.dev = Some(*i),
            RouteAttribute::Priority(p) => f.priority = *p,
            RouteAttribute::Metrics(list) => f.metrics = route_metrics(list),
            RouteAttribute::MultiPath(hops) => f.multipath = legs(hops),
            RouteAttribute::NhId(id) => f.nhid = Some(*id),
            _ => {}
        }
    }
    f.via = gateway(&msg.attributes);
    let v6 = h.address_family == netlink_packet_route::AddressFamily::Inet6;
    f.into_event(dst, v6, h.destination_prefix_length, present, replace)
}

/// What the mirror keeps of a route message, however it was read
/// ([`route_event`], or [`crate::fib::route_wire`] straight off the wire).
pub(crate) struct RouteFields {
    pub kind: RouteKind,
    pub table: u32,
    pub priority: u32,
    pub dev: Option<u32>,
    /// RTA_GATEWAY (or RTA_VIA): the first one.
    pub via: Option<IpAddr>,
    pub multipath: Vec<Leg>,
    pub nhid: Option<u32>,
    pub metrics: RouteMetrics,
}

impl RouteFields {
    pub fn new(kind: RouteKind, table: u32) -> RouteFields {
        RouteFields { kind, table, priority: 0, dev: None, via: None, multipath: Vec::new(), nhid: None, metrics: RouteMetrics::DEFAULT }
    }

    /// The route to `dst`/`len` (no RTA_DST: the family's default route);
    /// `None` for a length past the family's.
    pub fn into_event(self, dst: Option<IpAddr>, v6: bool, len: u8, present: bool, replace: bool) -> Option<Event> {
        let RouteFields { mut kind, table, priority, dev, via, multipath, nhid, metrics } = self;
        let dst = dst.unwrap_or(if v6 { IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) });
        let prefix = IpNet::new(dst, len).ok()?.trunc();
        // A unicast route with neither a device, legs nor a nexthop object: the
        // kernel's to forward.
        if kind == RouteKind::Unicast && dev.is_none() && multipath.is_empty() && nhid.is_none() {
            kind = RouteKind::Kernel;
        }
        let route = match (kind, nhid) {
            (RouteKind::Kernel, _) => RouteInput::new(prefix, kind, None, None, RouteMetrics::DEFAULT),
            // Through a nexthop object: only its id, whatever the kernel expanded
            // it to (compat mode 1), so a replace of the object is not a route
            // change. A blackhole/unreachable route never names one.
            (RouteKind::Unicast, Some(id)) => RouteInput::via_object(prefix, id, metrics),
            _ => RouteInput::from_attrs(prefix, RouteAttrs { kind, dev, via, multipath, nhid: None, metrics: metrics.into() }),
        };
        Some(Event::Route { route: KernelRoute { table, priority, route }, present, replace })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::{
        route::{RouteHeader, RouteLwEnCapType},
        AddressFamily,
    };

    fn msg(kind: RouteType, extra: Vec<RouteAttribute>, tweak: impl Fn(&mut RouteHeader)) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 24;
        m.header.table = 254;
        m.header.kind = kind;
        tweak(&mut m.header);
        m.attributes = vec![RouteAttribute::Destination(RouteAddress::Inet("10.9.0.0".parse().unwrap())), RouteAttribute::Oif(2)];
        m.attributes.extend(extra);
        m
    }

    fn kind_of(m: &RouteMessage) -> RouteKind {
        match route_event(m, true, false) {
            Some(Event::Route { route, .. }) => route.route.kind,
            other => panic!("{other:?}"),
        }
    }

    /// What the fast path cannot reproduce is never dropped (a covering
    /// route would take its packets) nor forwarded without its meaning: it
    /// becomes a pass-to-kernel entry at its prefix.
    #[test]
    fn routes_the_fast_path_cannot_reproduce_become_kernel_entries() {
        assert_eq!(kind_of(&msg(RouteType::Unicast, vec![], |_| {})), RouteKind::Unicast);
        let kernel = [
            msg(RouteType::Throw, vec![], |_| {}),
            msg(RouteType::Nat, vec![], |_| {}),
            msg(RouteType::Unicast, vec![], |h| h.tos = 0x10),
            msg(RouteType::Unicast, vec![], |h| h.source_prefix_length = 16),
            msg(RouteType::Unicast, vec![RouteAttribute::EncapType(RouteLwEnCapType::Seg6)], |_| {}),
            msg(RouteType::Unicast, vec![RouteAttribute::Iif(3)], |_| {}),
        ];
        for m in &kernel {
            assert_eq!(kind_of(m), RouteKind::Kernel, "{m:?}");
        }
        // Neither a device, legs nor a nexthop object.
        let mut nothing = msg(RouteType::Unicast, vec![], |_| {});
        nothing.attributes.retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        assert_eq!(kind_of(&nothing), RouteKind::Kernel);
    }

    /// A route through a nexthop object is its id alone, in compat mode 0
    /// (the id only) and 1 (the id and the kernel's expansion) alike.
    #[test]
    fn routes_through_nexthop_objects_carry_the_id_only() {
        let mut compat0 = msg(RouteType::Unicast, vec![RouteAttribute::NhId(7)], |_| {});
        compat0.attributes.retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        let compat1 = msg(
            RouteType::Unicast,
            vec![RouteAttribute::NhId(7), RouteAttribute::Gateway(RouteAddress::Inet("10.0.1.2".parse().unwrap()))],
            |_| {},
        );
        for m in [compat0, compat1] {
            let Some(Event::Route { route, .. }) = route_event(&m, true, false) else { panic!() };
            assert_eq!(route.route, RouteInput::via_object("10.9.0.0/24".parse().unwrap(), 7, RouteMetrics::DEFAULT));
        }
    }
}
