//! The ingress checks that read the maps: the port a frame arrived on, and
//! what the FIB says of its source. The decisions are common's
//! (`common::ingress`), shared with the tests.

pub use common::ingress::*;

use crate::{
    fib::{self, INGRESS_PORTS, INGRESS_VLAN_PORTS, LOCAL_V4},
    packet::ptr_at,
    policy::{self, Arrival},
};
use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use common::{policy::Choice, NextHop, NextHopGroup, RouteEntry, RouteKind};
use network_types::ip::Ipv4Hdr;

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
fn source_route(route: Option<&RouteEntry>, ingress: &IngressKey, need_dev: bool) -> SourceRoute {
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

/// The reverse route of the IPv4 source of the frame at `l3_off`, arrived
/// on `ifindex` (`key`: the VLAN id, bit 16 strict mode), as
/// `fib_validate_source` looks it up: through the rules when there are
/// any. A global function (see `policy::cowroute_ip_rules`): verified once,
/// not at each of the many states the program reaches its callers in.
/// Returns `SourceRoute::to_u32`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn cowroute_source_route_v4(ctx: *mut xdp_md, l3_off: u32, ifindex: u32, key: u32) -> u32 {
    let ctx = XdpContext::new(ctx);
    let at = Arrival { l3_off: l3_off as usize, ingress: IngressKey { ifindex, vid: key & 0xffff } };
    if at.l3_off > policy::MAX_L3_OFF {
        return SourceRoute::Kernel.to_u32();
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(&ctx, at.l3_off) else { return SourceRoute::Kernel.to_u32() };
    // SAFETY: in bounds (checked by ptr_at).
    let src = unsafe { (*ip).src_addr };
    let route = fib::route_lookup_v4_compact(src);
    let source = match policy::choose(&ctx, &at, false, route, true) {
        Choice::Main => source_route(route, &at.ingress, key & 1 << 16 != 0),
        Choice::Table => source_route(policy::chosen_route(true), &at.ingress, key & 1 << 16 != 0),
        Choice::Kernel => SourceRoute::Kernel,
        Choice::NoRoute | Choice::Blackhole | Choice::Prohibit => SourceRoute::Reject,
    };
    source.to_u32()
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
