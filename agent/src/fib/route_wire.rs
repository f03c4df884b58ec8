//! A route message of the common shape read straight off the wire: the
//! kernel's notification or dump of a unicast route, or zebra's over FPM,
//! whose attributes are a destination, a gateway, a device, a priority, a
//! table, a nexthop object, metrics and what the mirror ignores (preferred
//! source, preference, cache info). netlink-packet-route would build a list
//! of attribute values first (an allocation per message, 1 µs a route at a
//! cold start's rate); this reads the few fields the mirror keeps.
//!
//! Anything else — another route type, multipath, encap, an attribute or
//! length it does not expect — is `None`, and the caller parses the message
//! in full ([`crate::fib::route_msg::route_event`]). Where this answers, it
//! answers as that path does: a proptest holds the two equal.

use crate::{fib::route_msg::RouteFields, rib::types::Event};
use common::{RouteKind, Rtax};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `struct rtmsg` (include/uapi/linux/rtnetlink.h).
const RTMSG_LEN: usize = 12;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_CACHEINFO: u16 = 12;
const RTA_TABLE: u16 = 15;
const RTA_PREF: u16 = 20;
const RTA_NH_ID: u16 = 30;
/// `struct rta_cacheinfo`.
const CACHEINFO_LEN: usize = 32;
/// `NLA_TYPE_MASK`: the type without the nested / byte-order flags, as
/// netlink-packet-core reads it.
const NLA_TYPE_MASK: u16 = 0x3fff;
const RTAX_CC_ALGO: u16 = Rtax::CcAlgo as u16;

/// One attribute at the head of `buf`: its type, its value and what
/// follows it; `None` where its length does not fit (the full parse then
/// reports the message undecodable).
fn attribute(buf: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let len = u16::from_ne_bytes(buf.get(..2)?.try_into().ok()?) as usize;
    let kind = u16::from_ne_bytes(buf.get(2..4)?.try_into().ok()?) & NLA_TYPE_MASK;
    if len < 4 || len > buf.len() {
        return None;
    }
    let next = len.div_ceil(4) * 4;
    Some((kind, &buf[4..len], &buf[next.min(buf.len())..]))
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.try_into().ok()?))
}

fn addr_of(v: &[u8], v6: bool) -> Option<IpAddr> {
    match (v6, v.len()) {
        (false, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?))),
        (true, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
        _ => None,
    }
}

/// RTA_METRICS's nested RTAX values, every one a u32 (CC_ALGO, a name, is
/// not the common shape).
fn metrics_into(mut buf: &[u8], f: &mut RouteFields) -> Option<()> {
    while !buf.is_empty() {
        let (kind, value, rest) = attribute(buf)?;
        let rtax = Rtax::ALL.iter().find(|m| **m as u16 == kind && kind != RTAX_CC_ALGO)?;
        f.metrics.set(*rtax, u32_of(value)?);
        buf = rest;
    }
    Some(())
}

/// The route an RTM_NEWROUTE (`present`) or RTM_DELROUTE payload names,
/// when it has the common shape; `None` otherwise.
pub fn route_event(payload: &[u8], present: bool, replace: bool) -> Option<Event> {
    let h = payload.get(..RTMSG_LEN)?;
    let (family, dst_len, src_len, tos, table, kind) = (h[0], h[1], h[2], h[3], h[4], h[7]);
    let v6 = match family {
        AF_INET => false,
        AF_INET6 => true,
        _ => return None,
    };
    if kind != RTN_UNICAST || src_len != 0 || tos != 0 {
        return None;
    }
    let mut f = RouteFields::new(RouteKind::Unicast, u32::from(table));
    let mut dst = None;
    let mut buf = &payload[RTMSG_LEN..];
    while !buf.is_empty() {
        let (kind, value, rest) = attribute(buf)?;
        match kind {
            RTA_DST => dst = Some(addr_of(value, v6)?),
            // The first gateway, as the full path takes it.
            RTA_GATEWAY => {
                let a = addr_of(value, v6)?;
                f.via.get_or_insert(a);
            }
            RTA_PREFSRC => drop(addr_of(value, v6)?),
            RTA_OIF => f.dev = Some(u32_of(value)?),
            RTA_PRIORITY => f.priority = u32_of(value)?,
            RTA_TABLE => f.table = u32_of(value)?,
            RTA_NH_ID => f.nhid = Some(u32_of(value)?),
            RTA_METRICS => {
                f.metrics = common::RouteMetrics::DEFAULT;
                metrics_into(value, &mut f)?
            }
            RTA_PREF if value.len() == 1 => {}
            RTA_CACHEINFO if value.len() == CACHEINFO_LEN => {}
            _ => return None,
        }
        buf = rest;
    }
    f.into_event(dst, v6, dst_len, present, replace)
}

#[cfg(test)]
#[path = "route_wire_tests.rs"]
mod tests;
