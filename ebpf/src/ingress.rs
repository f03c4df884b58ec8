//! The ingress checks that read the maps: the port a frame arrived on, and
//! what the FIB says of its source. The decisions are common's
//! (`common::ingress`), shared with the tests.

pub use common::ingress::*;

use crate::fib::{self, INGRESS_PORTS, INGRESS_VLAN_PORTS, LOCAL_V4};
use common::{NextHop, NextHopGroup, RouteEntry, RouteKind};

/// The interface, or VLAN sub-interface (`vid` non-zero), a frame arrived on.
#[inline(always)]
pub fn port(key: &IngressKey) -> Option<&'static IngressPort> {
    match array_slot(key) {
        Some(slot) => INGRESS_PORTS.get(slot).filter(|p| p.has(IngressPort::PRESENT)),
        // SAFETY: a read-only value the agent replaces whole.
        None => unsafe { INGRESS_VLAN_PORTS.get(key) },
    }
}

/// `addr` is one of the router's IPv4 addresses (`inet_lookup_ifaddr_rcu`).
#[inline(always)]
pub fn is_local_v4(addr: [u8; 4]) -> bool {
    // SAFETY: only whether the key is there is read.
    unsafe { LOCAL_V4.get(&addr).is_some() }
}

/// The source's reverse route as `fib_validate_source` asks it.
/// `need_dev`: strict mode wants to know whether it leaves by `ingress`.
#[inline(always)]
pub fn source_route(route: Option<&RouteEntry>, ingress: &IngressKey, need_dev: bool) -> SourceRoute {
    let Some(r) = route else { return SourceRoute::None };
    match r.kind() {
        Some(RouteKind::Unicast) => SourceRoute::Unicast { via_ingress: need_dev && uses_ingress(r, ingress) },
        // Its next hop is its device's (none known: id 0, not on it); never
        // a group.
        Some(RouteKind::Local) if need_dev && fib::nexthop(r.nexthop).is_some_and(|nh| leaves_by(nh, ingress)) => {
            SourceRoute::LocalOnIngress
        }
        Some(RouteKind::Local) if r.flags & RouteEntry::ADDRESS != 0 => SourceRoute::Address,
        Some(RouteKind::Local) => SourceRoute::Local,
        Some(RouteKind::Blackhole | RouteKind::Unreachable | RouteKind::Prohibit) => SourceRoute::Reject,
        Some(RouteKind::Kernel) | None => SourceRoute::Kernel,
    }
}

/// `fib_info_nh_uses_dev`: one of the route's next hops leaves by `ingress`.
#[inline(always)]
fn uses_ingress(r: &RouteEntry, ingress: &IngressKey) -> bool {
    if !r.is_multipath() {
        return fib::nexthop(r.nexthop).is_some_and(|nh| leaves_by(nh, ingress));
    }
    let Some(group) = fib::nexthop_group(r.nexthop) else { return false };
    let mut i = 0;
    while i < NextHopGroup::BUCKETS {
        if fib::nexthop(group.buckets[i]).is_some_and(|nh| leaves_by(nh, ingress)) {
            return true;
        }
        i += 1;
    }
    false
}

/// The next hop's device is the one `ingress` names (a VLAN's by its tag).
#[inline(always)]
pub fn leaves_by(nh: &NextHop, ingress: &IngressKey) -> bool {
    nh.ifindex == ingress.ifindex && nh.vlan as u32 == ingress.vid
}
