//! Kernel nexthop objects on the wire (RTM_NEWNEXTHOP / RTM_DELNEXTHOP,
//! `include/uapi/linux/nexthop.h`), which netlink-packet-route does not
//! carry, and the message type the mirror's sockets speak: every rtnetlink
//! message netlink-packet-route knows, nexthops, and the undecodable ones
//! (kept, not dropped inside netlink-proto, so the mirror can resync).

use crate::{
    fib::{route_msg::route_event, route_wire},
    rib::types::{Event, NexthopKind, NexthopObject, Resilient},
};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkDeserializable, NetlinkHeader, NetlinkSerializable, NlaBuffer, NlasIterator, NLM_F_REPLACE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `include/uapi/linux/rtnetlink.h`.
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
pub const RTM_NEWNEXTHOP: u16 = 104;
pub const RTM_DELNEXTHOP: u16 = 105;
pub const RTM_GETNEXTHOP: u16 = 106;
/// `RTNLGRP_NEXTHOP`: above 31, so joined with NETLINK_ADD_MEMBERSHIP.
pub const RTNLGRP_NEXTHOP: u32 = 32;

const NHMSG_LEN: usize = 8;
const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_GROUP_TYPE: u16 = 3;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NHA_ENCAP_TYPE: u16 = 7;
const NHA_ENCAP: u16 = 8;
const NHA_FDB: u16 = 11;
const NHA_RES_GROUP: u16 = 12;
const NHA_RES_GROUP_BUCKETS: u16 = 1;
const NHA_RES_GROUP_IDLE_TIMER: u16 = 2;
const NHA_RES_GROUP_UNBALANCED_TIMER: u16 = 3;
const NEXTHOP_GRP_TYPE_RES: u16 = 1;
/// `struct nexthop_grp`: id (u32), weight - 1 (u8), weight_high (u8, 6.12+), resvd (u16).
const NEXTHOP_GRP_LEN: usize = 8;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// USER_HZ: what the kernel's clock_t attributes count in.
const USER_HZ: u32 = 100;

/// Why a nexthop message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NexthopDecodeError {
    #[error("nexthop message of {0} bytes is shorter than struct nhmsg")]
    Short(usize),
    #[error("malformed nexthop attribute: {0}")]
    Attribute(String),
    #[error("nexthop message without NHA_ID")]
    NoId,
    #[error("nexthop {0}: NHA_GROUP of {1} bytes is not a whole number of entries")]
    Group(u32, usize),
    #[error("nexthop {0}: gateway of {1} bytes for family {2}")]
    Gateway(u32, usize, u8),
    #[error("nexthop {0} has neither a device, a group nor blackhole")]
    Empty(u32),
}

fn u32_at(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn u16_at(v: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?))
}

fn attributes(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NexthopDecodeError>> {
    NlasIterator::new(buf).map(|nla: Result<NlaBuffer<&[u8]>, _>| match nla {
        Ok(nla) => {
            let (kind, len) = (nla.kind() & rtnetlink::packet_core::NLA_TYPE_MASK, nla.length() as usize);
            // new_checked has made sure 4 <= len <= the buffer's length.
            Ok((kind, &nla.into_inner()[4..len]))
        }
        Err(e) => Err(NexthopDecodeError::Attribute(e.to_string())),
    })
}

fn resilient(buf: &[u8]) -> Result<Resilient, NexthopDecodeError> {
    let mut r = Resilient::default();
    for attr in attributes(buf) {
        let (kind, v) = attr?;
        match kind {
            NHA_RES_GROUP_BUCKETS => r.buckets = u16_at(v).unwrap_or(0),
            NHA_RES_GROUP_IDLE_TIMER => r.idle_timer = u32_at(v).unwrap_or(0) / USER_HZ,
            NHA_RES_GROUP_UNBALANCED_TIMER => r.unbalanced_timer = u32_at(v).unwrap_or(0) / USER_HZ,
            _ => {}
        }
    }
    Ok(r)
}

/// The payload of an RTM_NEWNEXTHOP / RTM_DELNEXTHOP (after the netlink header).
pub fn parse_nexthop(payload: &[u8]) -> Result<NexthopObject, NexthopDecodeError> {
    if payload.len() < NHMSG_LEN {
        return Err(NexthopDecodeError::Short(payload.len()));
    }
    let (family, protocol) = (payload[0], payload[2]);
    let (mut id, mut dev, mut via, mut blackhole, mut group, mut resilient_type, mut res, mut kernel_only) =
        (None, None, None, false, None, false, None, None);
    for attr in attributes(&payload[NHMSG_LEN..]) {
        let (kind, v) = attr?;
        match kind {
            NHA_ID => id = u32_at(v),
            NHA_OIF => dev = u32_at(v),
            NHA_BLACKHOLE => blackhole = true,
            NHA_GATEWAY => via = Some(v.to_vec()),
            NHA_GROUP => group = Some(v.to_vec()),
            NHA_GROUP_TYPE => resilient_type = u16_at(v) == Some(NEXTHOP_GRP_TYPE_RES),
            NHA_RES_GROUP => res = Some(resilient(v)?),
            NHA_ENCAP | NHA_ENCAP_TYPE => kernel_only = Some("encap (lwtunnel)"),
            NHA_FDB => kernel_only = Some("fdb"),
            _ => {}
        }
    }
    let id = id.filter(|i| *i != 0).ok_or(NexthopDecodeError::NoId)?;
    let kind = if let Some(g) = group {
        if g.is_empty() || g.len() % NEXTHOP_GRP_LEN != 0 {
            return Err(NexthopDecodeError::Group(id, g.len()));
        }
        let members = g
            .chunks_exact(NEXTHOP_GRP_LEN)
            .map(|e| {
                let member = u32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
                (member, (u32::from(e[5]) << 8 | u32::from(e[4])) + 1)
            })
            .collect();
        let resilient = resilient_type.then(|| res.unwrap_or_default());
        match kernel_only {
            Some(why) => NexthopKind::KernelOnly(why),
            None => NexthopKind::Group { members, resilient },
        }
    } else if blackhole {
        NexthopKind::Blackhole
    } else if let Some(why) = kernel_only {
        NexthopKind::KernelOnly(why)
    } else {
        let dev = dev.ok_or(NexthopDecodeError::Empty(id))?;
        let via = match via {
            None => None,
            Some(g) => Some(match (family, g.len()) {
                (AF_INET, 4) => IpAddr::V4(Ipv4Addr::new(g[0], g[1], g[2], g[3])),
                (AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&g[..]).expect("16 bytes"))),
                (f, n) => return Err(NexthopDecodeError::Gateway(id, n, f)),
            }),
        };
        NexthopKind::Single { dev, via }
    };
    Ok(NexthopObject { id, kind, protocol })
}

/// What the mirror's sockets carry. Decoding never fails: a message
/// netlink-packet-route cannot read arrives as [`MirrorMessage::Undecodable`]
/// (netlink-proto would drop a failed one silently, and a lost event is an
/// overrun by another name).
#[derive(Debug, Clone)]
pub enum MirrorMessage {
    Route(RouteNetlinkMessage),
    /// A route message (RTM_NEWROUTE / RTM_DELROUTE) already in the RIB's
    /// terms ([`route_event`]; `None`: a route type nothing carries). It is
    /// converted where it is read, so the thread that parsed the message
    /// frees it and the RIB's thread gets the route alone.
    RouteEvent(Option<Event>),
    NewNexthop(NexthopObject),
    DelNexthop(NexthopObject),
    /// A nexthop dump request (RTM_GETNEXTHOP, all families).
    GetNexthops,
    Undecodable {
        message_type: u16,
        error: String,
    },
}

impl NetlinkDeserializable for MirrorMessage {
    type Error = std::convert::Infallible;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        let undecodable = |error: String| MirrorMessage::Undecodable { message_type: header.message_type, error };
        // NLM_F_REPLACE: the route replaces the kernel's one of the same
        // table, prefix, TOS and priority, whatever its device.
        // (A delete replaces nothing.)
        let replace = header.message_type == RTM_NEWROUTE && header.flags & NLM_F_REPLACE != 0;
        // A route of the common shape is read off the wire; the rest in full.
        if matches!(header.message_type, RTM_NEWROUTE | RTM_DELROUTE) {
            if let Some(event) = route_wire::route_event(payload, header.message_type == RTM_NEWROUTE, replace) {
                return Ok(MirrorMessage::RouteEvent(Some(event)));
            }
        }
        Ok(match header.message_type {
            RTM_NEWNEXTHOP | RTM_DELNEXTHOP => match parse_nexthop(payload) {
                Ok(o) if header.message_type == RTM_NEWNEXTHOP => MirrorMessage::NewNexthop(o),
                Ok(o) => MirrorMessage::DelNexthop(o),
                // A delete needs the id alone (zebra's over FPM carries nothing else).
                Err(NexthopDecodeError::Empty(id)) if header.message_type == RTM_DELNEXTHOP => {
                    MirrorMessage::DelNexthop(NexthopObject { id, kind: NexthopKind::KernelOnly("deleted"), protocol: payload[2] })
                }
                Err(e) => undecodable(e.to_string()),
            },
            _ => match RouteNetlinkMessage::deserialize(header, payload) {
                Ok(RouteNetlinkMessage::NewRoute(m)) => MirrorMessage::RouteEvent(route_event(&m, true, replace)),
                Ok(RouteNetlinkMessage::DelRoute(m)) => MirrorMessage::RouteEvent(route_event(&m, false, false)),
                Ok(m) => MirrorMessage::Route(m),
                Err(e) => undecodable(e.to_string()),
            },
        })
    }
}

impl NetlinkSerializable for MirrorMessage {
    fn message_type(&self) -> u16 {
        match self {
            MirrorMessage::Route(m) => m.message_type(),
            // Received only, never sent.
            MirrorMessage::RouteEvent(_) => RTM_NEWROUTE,
            MirrorMessage::GetNexthops => RTM_GETNEXTHOP,
            MirrorMessage::NewNexthop(_) => RTM_NEWNEXTHOP,
            MirrorMessage::DelNexthop(_) => RTM_DELNEXTHOP,
            MirrorMessage::Undecodable { message_type, .. } => *message_type,
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            MirrorMessage::Route(m) => m.buffer_len(),
            // Requests only: received objects are never sent back.
            _ => NHMSG_LEN,
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        match self {
            MirrorMessage::Route(m) => m.serialize(buffer),
            // An all-zero nhmsg: every family, no filter (the kernel refuses
            // a dump request with any header field set).
            _ => buffer[..NHMSG_LEN].fill(0),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut v = Vec::new();
        v.extend((len as u16).to_ne_bytes());
        v.extend(kind.to_ne_bytes());
        v.extend(value);
        v.resize(len.div_ceil(4) * 4, 0);
        v
    }

    /// An RTM_NEWNEXTHOP payload as the kernel builds it.
    pub(crate) fn nhmsg(family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![family, 0, 11, 0, 0, 0, 0, 0];
        attrs.iter().for_each(|a| v.extend(a));
        v
    }

    fn group_entry(id: u32, weight: u16) -> Vec<u8> {
        let w = weight - 1;
        let mut v = id.to_ne_bytes().to_vec();
        v.extend([(w & 0xff) as u8, (w >> 8) as u8, 0, 0]);
        v
    }

    #[test]
    fn singles_groups_and_blackholes_parse_as_the_kernel_sends_them() {
        let v4 = nhmsg(AF_INET, &[nla(NHA_ID, &7u32.to_ne_bytes()), nla(NHA_OIF, &3u32.to_ne_bytes()), nla(NHA_GATEWAY, &[10, 0, 1, 2])]);
        assert_eq!(
            parse_nexthop(&v4),
            Ok(NexthopObject { id: 7, kind: NexthopKind::Single { dev: 3, via: Some("10.0.1.2".parse().unwrap()) }, protocol: 11 })
        );
        let v6gw: Ipv6Addr = "fe80::1".parse().unwrap();
        let v6 = nhmsg(AF_INET6, &[nla(NHA_ID, &8u32.to_ne_bytes()), nla(NHA_OIF, &4u32.to_ne_bytes()), nla(NHA_GATEWAY, &v6gw.octets())]);
        assert_eq!(parse_nexthop(&v6).unwrap().kind, NexthopKind::Single { dev: 4, via: Some(IpAddr::V6(v6gw)) });
        let mut members = group_entry(7, 1);
        members.extend(group_entry(8, 300));
        let group = nhmsg(0, &[nla(NHA_ID, &9u32.to_ne_bytes()), nla(NHA_GROUP, &members)]);
        assert_eq!(parse_nexthop(&group).unwrap().kind, NexthopKind::Group { members: vec![(7, 1), (8, 300)], resilient: None });
        let mut res = nla(NHA_RES_GROUP_BUCKETS, &32u16.to_ne_bytes());
        res.extend(nla(NHA_RES_GROUP_IDLE_TIMER, &(60 * USER_HZ).to_ne_bytes()));
        let resilient = nhmsg(
            0,
            &[
                nla(NHA_ID, &10u32.to_ne_bytes()),
                nla(NHA_GROUP, &group_entry(7, 1)),
                nla(NHA_GROUP_TYPE, &NEXTHOP_GRP_TYPE_RES.to_ne_bytes()),
                nla(NHA_RES_GROUP, &res),
            ],
        );
        assert_eq!(
            parse_nexthop(&resilient).unwrap().kind,
            NexthopKind::Group { members: vec![(7, 1)], resilient: Some(Resilient { buckets: 32, idle_timer: 60, unbalanced_timer: 0 }) }
        );
        let bh = nhmsg(AF_INET, &[nla(NHA_ID, &11u32.to_ne_bytes()), nla(NHA_BLACKHOLE, &[])]);
        assert_eq!(parse_nexthop(&bh).unwrap().kind, NexthopKind::Blackhole);
        let encap = nhmsg(AF_INET, &[nla(NHA_ID, &12u32.to_ne_bytes()), nla(NHA_OIF, &3u32.to_ne_bytes()), nla(NHA_ENCAP_TYPE, &[1, 0])]);
        assert_eq!(parse_nexthop(&encap).unwrap().kind, NexthopKind::KernelOnly("encap (lwtunnel)"));
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        assert_eq!(parse_nexthop(&[2, 0, 0]), Err(NexthopDecodeError::Short(3)));
        assert_eq!(parse_nexthop(&nhmsg(AF_INET, &[nla(NHA_OIF, &3u32.to_ne_bytes())])), Err(NexthopDecodeError::NoId));
        let odd_group = nhmsg(0, &[nla(NHA_ID, &9u32.to_ne_bytes()), nla(NHA_GROUP, &[1, 2, 3])]);
        assert_eq!(parse_nexthop(&odd_group), Err(NexthopDecodeError::Group(9, 3)));
        let bad_gw = nhmsg(AF_INET, &[nla(NHA_ID, &9u32.to_ne_bytes()), nla(NHA_OIF, &3u32.to_ne_bytes()), nla(NHA_GATEWAY, &[1, 2])]);
        assert_eq!(parse_nexthop(&bad_gw), Err(NexthopDecodeError::Gateway(9, 2, AF_INET)));
        let mut cut = nhmsg(AF_INET, &[nla(NHA_ID, &9u32.to_ne_bytes())]);
        cut[NHMSG_LEN] = 40; // the attribute claims more than there is
        assert!(matches!(parse_nexthop(&cut), Err(NexthopDecodeError::Attribute(_))));
    }

    proptest::proptest! {
        /// Any bytes: parsed or refused, never a panic.
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse_nexthop(&bytes);
        }
    }

    /// A message the crate cannot read (an RTM_NEWROUTE whose attribute
    /// claims more bytes than there are) is kept as undecodable, for the
    /// mirror to resync on, not dropped inside netlink-proto.
    #[test]
    fn undecodable_messages_are_kept_not_dropped() {
        let mut header = NetlinkHeader::default();
        header.message_type = 24; // RTM_NEWROUTE
        let mut rtmsg = vec![2u8, 24, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
        rtmsg.extend(nla(1, &[10, 9, 0, 0])); // RTA_DST
        let good = MirrorMessage::deserialize(&header, &rtmsg).unwrap();
        let prefix: ipnet::IpNet = "10.9.0.0/24".parse().unwrap();
        let is_route = |m: &MirrorMessage, present: bool, replace: bool| matches!(m, MirrorMessage::RouteEvent(Some(Event::Route { route, present: p, replace: r })) if route.route.prefix == prefix && *p == present && *r == replace);
        assert!(is_route(&good, true, false), "a route message arrives as the route: {good:?}");
        header.flags = NLM_F_REPLACE;
        assert!(is_route(&MirrorMessage::deserialize(&header, &rtmsg).unwrap(), true, true), "NLM_F_REPLACE is kept");
        header.message_type = 25; // RTM_DELROUTE
        assert!(is_route(&MirrorMessage::deserialize(&header, &rtmsg).unwrap(), false, false));
        header.message_type = 24;
        rtmsg[12] = 200; // RTA_DST's length: past the end
        let bad = MirrorMessage::deserialize(&header, &rtmsg).unwrap();
        assert!(matches!(bad, MirrorMessage::Undecodable { message_type: 24, .. }), "{bad:?}");
        header.message_type = RTM_NEWNEXTHOP;
        assert!(matches!(MirrorMessage::deserialize(&header, &[2, 0]).unwrap(), MirrorMessage::Undecodable { .. }));
    }

    /// zebra's RTM_DELNEXTHOP carries NHA_ID alone: a delete, not an error.
    #[test]
    fn a_delete_with_only_the_id_is_a_delete() {
        let mut header = NetlinkHeader::default();
        header.message_type = RTM_DELNEXTHOP;
        let del = nhmsg(AF_INET, &[nla(NHA_ID, &9u32.to_ne_bytes())]);
        assert!(matches!(MirrorMessage::deserialize(&header, &del).unwrap(), MirrorMessage::DelNexthop(NexthopObject { id: 9, .. })));
        header.message_type = RTM_NEWNEXTHOP;
        assert!(matches!(MirrorMessage::deserialize(&header, &del).unwrap(), MirrorMessage::Undecodable { .. }), "an add needs a nexthop");
    }
}
