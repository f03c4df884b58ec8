//! Types shared by the XDP program and the agent.
//!
//! Everything here is `#[repr(C)]`, plain old data, and `no_std`: the same
//! definitions describe the BPF maps' keys and values on both sides, and their
//! BTF is what `bpftool map dump` prints by field name.
#![no_std]

pub mod abi;
pub mod checksum;
pub mod counters;
pub mod flow_hash;
pub mod forwarding;
pub mod ingress;
pub mod metrics;
pub mod mss;
#[cfg(feature = "user")]
pub mod netns;
pub mod nexthop;
pub mod policy;
pub mod proto;
pub mod route;
pub mod slow_path;

pub use counters::{Counter, Reason};
pub use metrics::{MetricsRef, PrivateMeta, RouteMetrics, Rtax, RTAX_MAX};
pub use nexthop::{NextHop, NextHopGroup};
pub use route::{RouteEntry, RouteKind};

/// Names of the maps, one place, so the agent, the tests and `bpftool` agree.
pub mod maps {
    pub const ROUTES_V4: &str = "ROUTES_V4";
    /// The IPv4 DIR-24 index: per /16, 256 words, one per /24 block: 0, or
    /// 1 + the slot in `ROUTES_V4_DIR24_ENTRIES` of the block's route.
    pub const ROUTES_V4_DIR24: &str = "ROUTES_V4_DIR24";
    pub const ROUTES_V4_DIR24_ENTRIES: &str = "ROUTES_V4_DIR24_ENTRIES";
    pub const ROUTES_V6: &str = "ROUTES_V6";
    /// The IPv6 index: hash buckets keyed `[stage, top bits high, low]`
    /// (/32, /40, /48, /56, /64), each word 0, or 1 + the slot in
    /// `ROUTES_V6_INDEX_ENTRIES` of the bucket's route, maybe flagged
    /// "search on" (the agent's `v6index.rs`).
    pub const ROUTES_V6_INDEX: &str = "ROUTES_V6_INDEX";
    pub const ROUTES_V6_INDEX_ENTRIES: &str = "ROUTES_V6_INDEX_ENTRIES";
    /// Next hops as the fast path finds them: `NEXTHOPS_INDEX` maps a next
    /// hop id to 1 + its slot in `NEXTHOPS` (0: none), [`crate::capacity::INDEX_WORDS`]
    /// ids per element.
    pub const NEXTHOPS_INDEX: &str = "NEXTHOPS_INDEX";
    pub const NEXTHOPS: &str = "NEXTHOPS";
    /// ECMP groups the same way: group id -> 1 + slot in `NH_GROUPS`.
    pub const NH_GROUPS_INDEX: &str = "NH_GROUPS_INDEX";
    pub const NH_GROUPS: &str = "NH_GROUPS";
    pub const METRICS_RO: &str = "METRICS_RO";
    pub const METRICS_RW: &str = "METRICS_RW";
    pub const EGRESS_PORTS: &str = "EGRESS_PORTS";
    pub const COUNTERS: &str = "COUNTERS";
    /// Packets and bytes forwarded per next hop id, per CPU (`show nexthops`).
    pub const NH_COUNTERS: &str = "NH_COUNTERS";
    pub const SLOW_PATH: &str = "SLOW_PATH";
    /// The slow path's interfaces: ifindex -> `slow_path::SlowPathIface`.
    pub const SLOW_PATH_IFACES: &str = "SLOW_PATH_IFACES";
    /// Exceptions for the agent that went to the kernel, per `slow_path::Unserved` cause, per CPU.
    pub const UNSERVED: &str = "UNSERVED";
    pub const PMTU_EVENTS: &str = "PMTU_EVENTS";
    pub const PRIVATE_META: &str = "PRIVATE_META";
    /// Untagged ports by ifindex (an array: one inlined load per frame):
    /// `ingress::IngressPort`, `IngressPort::PRESENT` set where there is one.
    pub const INGRESS_PORTS: &str = "INGRESS_PORTS";
    /// VLAN sub-interfaces, and ports whose ifindex is beyond
    /// `INGRESS_PORTS`: `ingress::IngressKey` -> `ingress::IngressPort`.
    pub const INGRESS_VLAN_PORTS: &str = "INGRESS_VLAN_PORTS";
    /// The router's own IPv4 addresses (the `rp_filter` 0 source check).
    pub const LOCAL_V4: &str = "LOCAL_V4";
    /// Compiled `ip rule` lists: `policy::RuleList` by `policy::policy_slot`.
    pub const POLICY: &str = "POLICY";
    /// Per family (0 IPv4, 1 IPv6): `policy::PolicySelect`, the bank in use.
    pub const POLICY_SELECT: &str = "POLICY_SELECT";
    /// The routes of the tables rules look up (not main): LPM tries keyed
    /// by table and prefix (`route::TableV4KeyData`), `RouteEntry` values.
    pub const TABLE_ROUTES_V4: &str = "TABLE_ROUTES_V4";
    pub const TABLE_ROUTES_V6: &str = "TABLE_ROUTES_V6";
    /// Every map the agent pins, in the order `show` lists them.
    /// One [`crate::abi::AbiStamp`]: what made these maps.
    pub const ABI_STAMP: &str = "ABI_STAMP";
    pub const ALL: [&str; 28] = [
        ABI_STAMP,
        ROUTES_V4,
        ROUTES_V4_DIR24,
        ROUTES_V4_DIR24_ENTRIES,
        ROUTES_V6,
        ROUTES_V6_INDEX,
        ROUTES_V6_INDEX_ENTRIES,
        NEXTHOPS_INDEX,
        NEXTHOPS,
        NH_GROUPS_INDEX,
        NH_GROUPS,
        METRICS_RO,
        METRICS_RW,
        EGRESS_PORTS,
        COUNTERS,
        NH_COUNTERS,
        SLOW_PATH,
        SLOW_PATH_IFACES,
        UNSERVED,
        PMTU_EVENTS,
        PRIVATE_META,
        INGRESS_PORTS,
        INGRESS_VLAN_PORTS,
        LOCAL_V4,
        POLICY,
        POLICY_SELECT,
        TABLE_ROUTES_V4,
        TABLE_ROUTES_V6,
    ];
}

/// Default capacities; the agent may resize the arrays at load time.
pub mod capacity {
    pub const ROUTES_V4: u32 = 2_000_000;
    /// `ROUTES_V4_DIR24`: one element per /16.
    pub const ROUTES_V4_DIR24: u32 = 1 << 16;
    /// Copies of ≤/24 routes' entries (the rest of a full table's prefixes
    /// are longer, and found in the trie), with room for those in their
    /// grace period.
    pub const ROUTES_V4_DIR24_ENTRIES: u32 = 1_500_000;
    pub const ROUTES_V6: u32 = 1_000_000;
    /// IPv6 index buckets (allocated as used: the map is BPF_F_NO_PREALLOC).
    pub const ROUTES_V6_INDEX: u32 = 4_000_000;
    /// Copies of ≤/64 routes' entries, with room for those in their grace period.
    pub const ROUTES_V6_INDEX_ENTRIES: u32 = 1_000_000;
    /// Routes of the tables rules look up, all tables together (LPM tries:
    /// allocated as used).
    pub const TABLE_ROUTES_V4: u32 = 1_000_000;
    pub const TABLE_ROUTES_V6: u32 = 500_000;
    /// Next hop ids (`NEXTHOPS_INDEX` words).
    pub const NEXTHOPS: u32 = 65_536;
    /// ECMP group ids (`NH_GROUPS_INDEX` words).
    pub const NH_GROUPS: u32 = 4_096;
    /// Ids per element of an index array (`NEXTHOPS_INDEX`, `NH_GROUPS_INDEX`):
    /// an mmapped array's elements are multiples of 8 bytes, so words come in blocks.
    pub const INDEX_WORDS: u32 = 256;
    /// Slots: every id can have a fresh one while its old one waits out the grace period.
    pub const NEXTHOP_SLOTS: u32 = 2 * NEXTHOPS;
    pub const NH_GROUP_SLOTS: u32 = 2 * NH_GROUPS;
    const _: () = assert!(NEXTHOPS.is_multiple_of(INDEX_WORDS) && NH_GROUPS.is_multiple_of(INDEX_WORDS));
    pub const METRICS_RO: u32 = 16_384;
    pub const METRICS_RW: u32 = 65_536;
    pub const EGRESS_PORTS: u32 = 1_024;
    /// Untagged ports with an ifindex below this are in the array.
    pub const INGRESS_PORTS: u32 = 4_096;
    /// VLAN sub-interfaces and the rest.
    pub const INGRESS_VLAN_PORTS: u32 = 4_096;
    /// The router's own IPv4 addresses.
    pub const LOCAL_V4: u32 = 4_096;
    /// AF_XDP sockets: 256 interface slots of `slow_path::MAX_QUEUES` queues.
    pub const SLOW_PATH: u32 = 4_096;
    /// Bytes of path-MTU reports in flight to the agent.
    pub const PMTU_EVENTS: u32 = 256 * 1024;
}

/// Unit tests need `std`; the library itself never does.
#[cfg(test)]
extern crate std;

// SAFETY: every type is repr(C), has no implicit padding (asserted by the
// size checks beside each definition) and is valid for any bit pattern.
#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for crate::RouteMetrics {}
    unsafe impl aya::Pod for crate::MetricsRef {}
    unsafe impl aya::Pod for crate::RouteEntry {}
    unsafe impl aya::Pod for crate::NextHop {}
    unsafe impl aya::Pod for crate::NextHopGroup {}
    unsafe impl aya::Pod for crate::PrivateMeta {}
    unsafe impl aya::Pod for crate::Counter {}
    unsafe impl aya::Pod for crate::abi::AbiStamp {}
    unsafe impl aya::Pod for crate::slow_path::SlowPathIface {}
    unsafe impl aya::Pod for crate::ingress::IngressKey {}
    unsafe impl aya::Pod for crate::ingress::IngressPort {}
    unsafe impl aya::Pod for crate::route::Dir24Blocks {}
    unsafe impl aya::Pod for crate::nexthop::IndexSlots {}
    unsafe impl aya::Pod for crate::route::V6IndexWord {}
    unsafe impl aya::Pod for crate::route::LocalAddress {}
    unsafe impl aya::Pod for crate::policy::RuleList {}
    unsafe impl aya::Pod for crate::policy::PolicySelect {}
    unsafe impl aya::Pod for crate::route::TableV4KeyData {}
    unsafe impl aya::Pod for crate::route::TableV6KeyData {}
}
