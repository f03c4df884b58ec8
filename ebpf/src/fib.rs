//! The forwarding state the agent writes and the fast path reads, with tiny
//! accessors in the spirit of `include/net/dst.h`.
//!
//! Read-mostly maps (routes, next hops, RO metrics) are apart from written
//! ones (per-CPU counters, private metrics): a write never dirties a cache
//! line that every packet reads.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_F_RDONLY_PROG},
    btf_maps::{lpm_trie::Key, Array, DevMapHash, HashMap, LpmTrie, PerCpuArray},
    macros::btf_map,
};
use common::{
    capacity::{self, INDEX_WORDS},
    counters::NUM_REASONS,
    ingress::{IngressKey, IngressPort},
    nexthop::IndexSlots,
    route::{Dir24Blocks, LocalAddress, TableV4KeyData, TableV6KeyData, V4KeyData, V6IndexWord, V6KeyData},
    Counter, MetricsRef, NextHop, NextHopGroup, PrivateMeta, Reason, RouteEntry, RouteMetrics,
};

#[btf_map]
pub static ROUTES_V4: LpmTrie<V4KeyData, RouteEntry, { capacity::ROUTES_V4 as usize }> = LpmTrie::new();

/// The DIR-24 index in front of ROUTES_V4 (see the agent's `dir24.rs`):
/// per /16, one word per /24 block, 0 ("ask the trie") or 1 + a slot of
/// ROUTES_V4_DIR24_ENTRIES. Mapped into the agent, which writes it directly;
/// the program only reads both, but the kernel refuses a writable mapping of
/// a BPF_F_RDONLY_PROG map (a page kept writable could change a "constant").
#[btf_map]
pub static ROUTES_V4_DIR24: Array<Dir24Blocks, { capacity::ROUTES_V4_DIR24 as usize }, { BPF_F_MMAPABLE as usize }> = Array::new();

/// Copies of the entries of ≤/24 routes that ROUTES_V4_DIR24 points at;
/// mapped into the agent too (a route change costs no syscall here).
#[btf_map]
pub static ROUTES_V4_DIR24_ENTRIES: Array<RouteEntry, { capacity::ROUTES_V4_DIR24_ENTRIES as usize }, { BPF_F_MMAPABLE as usize }> =
    Array::new();

#[btf_map]
pub static ROUTES_V6: LpmTrie<V6KeyData, RouteEntry, { capacity::ROUTES_V6 as usize }> = LpmTrie::new();

/// The IPv6 index in front of ROUTES_V6 (see the agent's `v6index.rs`):
/// buckets keyed `[stage, top bits high, low]`, each word 0 ("ask the
/// trie") or 1 + a slot of ROUTES_V6_INDEX_ENTRIES, maybe `V6_LONGER`
/// ("search on"). Not preallocated: a replaced element is freed only once
/// no program can hold it.
#[btf_map]
pub static ROUTES_V6_INDEX: HashMap<[u32; 3], V6IndexWord, { capacity::ROUTES_V6_INDEX as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// Copies of the entries of ≤/64 routes that ROUTES_V6_INDEX points at;
/// mapped into the agent, as the DIR-24 entries are.
#[btf_map]
pub static ROUTES_V6_INDEX_ENTRIES: Array<RouteEntry, { capacity::ROUTES_V6_INDEX_ENTRIES as usize }, { BPF_F_MMAPABLE as usize }> =
    Array::new();

/// The routes of the tables rules look up (not main), every table in one
/// trie, its prefixes behind its id: one lookup per rule that asks.
#[btf_map]
pub static TABLE_ROUTES_V4: LpmTrie<TableV4KeyData, RouteEntry, { capacity::TABLE_ROUTES_V4 as usize }> = LpmTrie::new();

#[btf_map]
pub static TABLE_ROUTES_V6: LpmTrie<TableV6KeyData, RouteEntry, { capacity::TABLE_ROUTES_V6 as usize }> = LpmTrie::new();

/// A ROUTES_V6_INDEX word's flag: a longer prefix lies inside the bucket.
const V6_LONGER: u32 = 1 << 31;

/// An id's index word: 0 (none) or 1 + its slot. The agent fills a fresh
/// slot, then switches the word (one aligned store, mapped like the DIR-24
/// index), then frees the old slot after a grace period: a reader never
/// sees a value half-written.
type Index<const N: usize> = Array<IndexSlots, N, { BPF_F_MMAPABLE as usize }>;

#[btf_map]
pub static NEXTHOPS_INDEX: Index<{ (capacity::NEXTHOPS / INDEX_WORDS) as usize }> = Array::new();

#[btf_map]
pub static NEXTHOPS: Array<NextHop, { capacity::NEXTHOP_SLOTS as usize }> = Array::new();

/// ECMP groups: a route with `RouteEntry::MULTIPATH` names one by id.
#[btf_map]
pub static NH_GROUPS_INDEX: Index<{ (capacity::NH_GROUPS / INDEX_WORDS) as usize }> = Array::new();

#[btf_map]
pub static NH_GROUPS: Array<NextHopGroup, { capacity::NH_GROUP_SLOTS as usize }> = Array::new();

/// Interned, shared metric sets. The verifier rejects any write from a program.
#[btf_map]
pub static METRICS_RO: Array<RouteMetrics, { capacity::METRICS_RO as usize }, { BPF_F_RDONLY_PROG as usize }> = Array::new();

/// Private per-destination copies, written only by the agent's COW engine.
#[btf_map]
pub static METRICS_RW: Array<RouteMetrics, { capacity::METRICS_RW as usize }> = Array::new();

/// The agent's record of each private copy (its overrides' sources and
/// expiries), pinned so that a restarted agent keeps the copies. Sized like
/// METRICS_RW. Never read by the program.
#[btf_map]
pub static PRIVATE_META: HashMap<[u8; 16], PrivateMeta, { capacity::METRICS_RW as usize }> = HashMap::new();

/// Egress devices, keyed by ifindex.
#[btf_map]
pub static EGRESS_PORTS: DevMapHash<{ capacity::EGRESS_PORTS as usize }> = DevMapHash::new();

/// The interfaces (and VLAN sub-interfaces) frames arrive on: their MACs
/// and the sysctls source validation reads (`common::ingress`).
#[btf_map]
pub static INGRESS_PORTS: Array<IngressPort, { capacity::INGRESS_PORTS as usize }, { BPF_F_RDONLY_PROG as usize }> = Array::new();

/// VLAN sub-interfaces (keyed by parent and VID), and untagged ports whose
/// ifindex is beyond INGRESS_PORTS.
#[btf_map]
pub static INGRESS_VLAN_PORTS: HashMap<IngressKey, IngressPort, { capacity::INGRESS_VLAN_PORTS as usize }, { BPF_F_RDONLY_PROG as usize }> =
    HashMap::new();

/// The router's own IPv4 addresses: the source check without `rp_filter`.
#[btf_map]
pub static LOCAL_V4: HashMap<[u8; 4], LocalAddress, { capacity::LOCAL_V4 as usize }, { BPF_F_RDONLY_PROG as usize }> = HashMap::new();

/// Packets and bytes per verdict reason, per CPU.
#[btf_map]
pub static COUNTERS: PerCpuArray<Counter, { NUM_REASONS as usize }> = PerCpuArray::new();

/// Packets and bytes forwarded per next hop id, per CPU.
#[btf_map]
pub static NH_COUNTERS: PerCpuArray<Counter, { capacity::NEXTHOPS as usize }> = PerCpuArray::new();

/// Longest-prefix match of an IPv4 destination: its /24 block's word when
/// the index has one, else the trie.
///
/// The block's entry is looked up on both paths, after the branch: LLVM
/// otherwise sinks the entry's lookup and the trie's, on either side of a
/// branch, into one call whose map comes from a register, and the verifier
/// inlines an array lookup (a bounds check and an index, no helper call)
/// only where a call site sees one map. The forwarding path's lookup; the
/// reverse path's ([`route_lookup_v4_compact`]) keeps the shape that needs
/// one stack slot fewer, under its callers' stack.
#[inline(always)]
pub fn route_lookup_v4(dst: V4KeyData) -> Option<&'static RouteEntry> {
    let word = dir24_word(dst);
    let trie = if word == 0 { ROUTES_V4.get(&Key::new(32, dst)) } else { None };
    // Word 0 (no block route) looks up slot u32::MAX: out of range, none.
    trie.or(ROUTES_V4_DIR24_ENTRIES.get(word.wrapping_sub(1)))
}

/// [`route_lookup_v4`] with the lookups sunk into one helper call.
#[inline(always)]
pub fn route_lookup_v4_compact(dst: V4KeyData) -> Option<&'static RouteEntry> {
    match dir24_word(dst) {
        0 => ROUTES_V4.get(&Key::new(32, dst)),
        word => ROUTES_V4_DIR24_ENTRIES.get(word - 1),
    }
}

/// The DIR-24 word of `dst`'s /24 block: 0, or 1 + its entry's slot.
#[inline(always)]
fn dir24_word(dst: V4KeyData) -> u32 {
    let addr = u32::from_be_bytes(dst);
    ROUTES_V4_DIR24.get(addr >> 16).map_or(0, |blocks| blocks.blocks[((addr >> 8) & 0xff) as usize])
}

/// Longest-prefix match of an IPv6 destination: its index word's entry
/// when the index has one, else the trie.
#[inline(always)]
pub fn route_lookup_v6(dst: V6KeyData) -> Option<&'static RouteEntry> {
    let top = u64::from_be_bytes([dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], dst[6], dst[7]]);
    match v6_index_word(top) & !V6_LONGER {
        0 => ROUTES_V6.get(&Key::new(128, dst)),
        w => ROUTES_V6_INDEX_ENTRIES.get(w - 1),
    }
}

/// The index's word for an address's top 64 bits (the agent's
/// `v6index::search`): the /48 bucket answers, or sends the search on to
/// /56 and /64; without one, /40 then /32 answer; 0: the trie decides.
#[inline(always)]
fn v6_index_word(top: u64) -> u32 {
    match v6_bucket(48, top) {
        Some(w48) if w48 & V6_LONGER != 0 => match v6_bucket(56, top) {
            None => w48,
            Some(w56) if w56 & V6_LONGER != 0 => v6_bucket(64, top).unwrap_or(w56),
            Some(w56) => w56,
        },
        Some(w48) => w48,
        None => v6_bucket(40, top).or_else(|| v6_bucket(32, top)).unwrap_or(0),
    }
}

/// The word of the /`stage` bucket holding `top`, read once.
#[inline(always)]
fn v6_bucket(stage: u32, top: u64) -> Option<u32> {
    let bucket = top & (u64::MAX << (64 - stage));
    let key = [stage, (bucket >> 32) as u32, bucket as u32];
    // SAFETY: one aligned 4-byte load of an element the kernel keeps alive.
    unsafe { ROUTES_V6_INDEX.get(&key).map(|w| core::ptr::read_volatile(&w.word)) }
}

/// The kernel's `dst_metrics_ptr`: follow a tagged reference to its metrics,
/// shared (tag set) or private (tag clear). Both arrays are looked up, so
/// that each lookup is inlined (see [`route_lookup_v4`]): two inlined
/// lookups cost less than one helper call.
#[inline(always)]
pub fn dst_metrics_ptr(metrics: MetricsRef) -> Option<&'static RouteMetrics> {
    let (shared, private) = (METRICS_RO.get(metrics.slot()), METRICS_RW.get(metrics.slot()));
    if metrics.is_read_only() {
        shared
    } else {
        private
    }
}

/// The slot an index names for `id`; `None` (a bad reference) for an id
/// out of range or a 0 word. The word is read once.
#[inline(always)]
fn slot_of<const N: usize>(index: &'static Index<N>, id: u32) -> Option<u32> {
    let words = index.get(id / INDEX_WORDS)?;
    // SAFETY: in bounds (masked); one aligned 4-byte load, as the agent stores it.
    match unsafe { core::ptr::read_volatile(&words.slots[(id % INDEX_WORDS) as usize]) } {
        0 => None,
        w => Some(w - 1),
    }
}

#[inline(always)]
pub fn nexthop(id: u32) -> Option<&'static NextHop> {
    NEXTHOPS.get(slot_of(&NEXTHOPS_INDEX, id)?)
}

#[inline(always)]
pub fn nexthop_group(id: u32) -> Option<&'static NextHopGroup> {
    NH_GROUPS.get(slot_of(&NH_GROUPS_INDEX, id)?)
}

/// The next hop id a route's packet takes: the route's own, or the leg of
/// its ECMP group that the flow's hash picks.
#[inline(always)]
pub fn route_nexthop_id(route: &RouteEntry, flow_hash: u32) -> Option<u32> {
    if route.is_multipath() {
        nexthop_group(route.nexthop).map(|g| g.leg(flow_hash))
    } else {
        Some(route.nexthop)
    }
}

/// Arms the redirect to `ifindex`; the frame leaves when the program returns
/// the action. Fails, and changes nothing, if the port is not in `EGRESS_PORTS`.
#[inline(always)]
pub fn redirect_to(ifindex: u32) -> Result<u32, u32> {
    EGRESS_PORTS.redirect(ifindex, 0)
}

/// Counts one frame of `bytes` forwarded through next hop `id` on this CPU.
#[inline(always)]
pub fn count_nexthop(id: u32, bytes: usize) {
    if let Some(c) = NH_COUNTERS.get_ptr_mut(id) {
        // SAFETY: as in `count`.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}

/// Counts one frame of `bytes` under `reason` on this CPU.
#[inline(always)]
pub fn count(reason: Reason, bytes: usize) {
    count_in(&COUNTERS, reason as u32, bytes)
}

/// Counts one frame of `bytes` in slot `index` of a per-CPU counter array.
#[inline(always)]
pub fn count_in<const N: usize>(counters: &PerCpuArray<Counter, N>, index: u32, bytes: usize) {
    if let Some(c) = counters.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, written only by this CPU with preemption off.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}
