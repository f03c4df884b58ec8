//! The data plane's ABI stamp: what an adopting agent checks before it
//! touches maps an earlier agent pinned. Map sizes alone (checked too) do
//! not catch a changed meaning: a new route type, a field reinterpreted.
//! `VERSION` is bumped by hand on such a change; `layout` follows the
//! shared types' sizes by itself.

use crate::{
    counters::NUM_REASONS,
    metrics::RTAX_MAX,
    slow_path::{SlowPathIface, NUM_UNSERVED},
    NextHop, NextHopGroup, PrivateMeta, RouteEntry, RouteMetrics,
};

/// Bumped on every change of meaning in what the maps hold.
/// 2: `RouteKind::Kernel`, `Reason::KernelRoute`, `PrivateMeta` expiries
/// indexed by `Rtax::index`, next hops and groups through their indexes.
/// 3: `SLOW_PATH` keyed by the interface's slot in `SLOW_PATH_IFACES` (no
/// longer by ifindex modulo 256), the `UNSERVED` counters.
/// 4: `NH_COUNTERS`, private next hops and groups of kernel nexthop objects.
/// 5: `ROUTES_V6_INDEX` and its entries in front of `ROUTES_V6`.
/// 6: `INGRESS_PORTS`, `LOCAL_V4`, the ingress-validation reasons, `RouteEntry::ADDRESS`.
/// 7: `Reason::LinkLocalTransit`; a local host entry's next hop is its
/// device's (`fib_validate_source` with `accept_local` matches it).
/// 8: `POLICY` and `POLICY_SELECT` (`ip rule`), `Reason::RuleKernel`,
/// `RouteEntry::prefix_len` and `RouteEntry::LOCAL_TABLE`.
/// 9: `TABLE_ROUTES_V4`/`_V6`, `RuleAction::LookupTable` (`PolicyRule::table`).
pub const VERSION: u32 = 9;

/// The one value of the `ABI_STAMP` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AbiStamp {
    pub version: u32,
    /// FNV-1a over the shared types' sizes and the counts that size maps.
    pub layout: u32,
}

const fn fnv(mut h: u32, v: u32) -> u32 {
    let bytes = v.to_le_bytes();
    let mut i = 0;
    while i < 4 {
        h ^= bytes[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    h
}

const fn layout() -> u32 {
    let sizes = [
        core::mem::size_of::<RouteEntry>(),
        core::mem::size_of::<NextHop>(),
        core::mem::size_of::<NextHopGroup>(),
        core::mem::size_of::<RouteMetrics>(),
        core::mem::size_of::<PrivateMeta>(),
        RTAX_MAX,
        NUM_REASONS as usize,
        core::mem::size_of::<SlowPathIface>(),
        NUM_UNSERVED as usize,
        core::mem::size_of::<crate::ingress::IngressPort>(),
        core::mem::size_of::<crate::policy::RuleList>(),
    ];
    let mut h = 0x811c_9dc5;
    let mut i = 0;
    while i < sizes.len() {
        h = fnv(h, sizes[i] as u32);
        i += 1;
    }
    h
}

/// This build's stamp.
pub const STAMP: AbiStamp = AbiStamp { version: VERSION, layout: layout() };
