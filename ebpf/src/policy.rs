//! `ip rule` in the fast path: the rule lists the agent compiled
//! (`common::policy`), and the choice they make between the main view's
//! route and a verdict. A family whose rules are the kernel's defaults reads
//! one word and nothing else.
//!
//! The walk runs under `bpf_loop`: the verifier checks its step once, where
//! an inlined loop of sixteen rules multiplied the program's paths past
//! what it can verify. The step's state lives in a per-CPU scratch map (the
//! program's stack has no room for it).

use crate::{fib, packet::ptr_at};
use aya_ebpf::{
    bindings::{xdp_md, BPF_F_RDONLY_PROG},
    btf_maps::{lpm_trie::Key, Array, PerCpuArray},
    cty::c_void,
    helpers::generated::bpf_loop,
    macros::btf_map,
    programs::XdpContext,
};
use common::{
    ingress::IngressKey,
    policy::{address_words, policy_slot, Choice, FlowKeys, MainHit, PolicySelect, RuleList, MAX_RULES},
    proto::{
        IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPV6_NEXTHDR_DEST, IPV6_NEXTHDR_FRAGMENT, IPV6_NEXTHDR_HOP, IPV6_NEXTHDR_ROUTING, IP_MF,
        IP_OFFSET, VLAN_HLEN,
    },
    route::{TableV4KeyData, TableV6KeyData, TABLE_KEY_BITS},
    RouteEntry, RouteKind,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

/// Two banks per family (`policy_slot`): the agent fills the one not in
/// use, then switches `POLICY_SELECT`, so a reader never sees a half-written list.
#[btf_map]
pub static POLICY: Array<RuleList, 4, { BPF_F_RDONLY_PROG as usize }> = Array::new();

/// Per family: 0, no rules to evaluate; else 1 + the bank in use.
#[btf_map]
pub static POLICY_SELECT: Array<PolicySelect, 2, { BPF_F_RDONLY_PROG as usize }> = Array::new();

/// A walk over a rule list: what it asks, where it is, what it decided.
#[repr(C)]
struct RuleWalk {
    flow: FlowKeys,
    /// The `POLICY` element walked.
    slot: u32,
    /// The reverse flow's walk (`fib_validate_source`).
    reverse: u32,
    /// `MainHit::pack` of the main view's route.
    main: u32,
    next: u32,
    /// A `Choice`, once decided.
    choice: u32,
}

#[btf_map]
static RULE_WALK: PerCpuArray<RuleWalk, 1> = PerCpuArray::new();

/// A rule's table lookup: its key, built here (the program's stack, at its
/// deepest call, has no byte to spare), and what it found, for the forward
/// flow's walk and the reverse one's (both may run for one frame).
#[repr(C)]
struct TableLookup {
    found: [RouteEntry; 2],
    v4: Key<TableV4KeyData>,
    v6: Key<TableV6KeyData>,
}

#[btf_map]
static TABLE_LOOKUP: PerCpuArray<TableLookup, 1> = PerCpuArray::new();

/// A family's rules in use: where they are, and whether they read ports.
#[derive(Clone, Copy)]
struct Policy {
    slot: u32,
    reads_ports: bool,
}

/// The route of the walk's `Choice::Table` (`reverse`: the reverse flow's
/// walk); per CPU, valid until the next frame.
#[inline(always)]
pub fn chosen_route(reverse: bool) -> Option<&'static RouteEntry> {
    Some(&TABLE_LOOKUP.get(0)?.found[reverse as usize & 1])
}

/// Table `table`'s longest match for `addr` (the header's bytes as
/// words), kept as `reverse`'s find.
#[inline(always)]
fn table_lookup(table: u32, ipv6: bool, addr: &[u32; 4], reverse: bool) -> Option<MainHit> {
    let t = TABLE_LOOKUP.get_ptr_mut(0)?;
    // SAFETY: per-CPU, and nothing else on this CPU uses it meanwhile. The
    // words are the address's bytes in memory order, written as they are.
    let t = unsafe { &mut *t };
    let found = if ipv6 {
        t.v6.prefix_len = TABLE_KEY_BITS + 128;
        t.v6.data.table = table.to_be_bytes();
        unsafe { core::ptr::addr_of_mut!(t.v6.data.addr).cast::<[u32; 4]>().write_unaligned(*addr) };
        fib::TABLE_ROUTES_V6.get(&t.v6)?
    } else {
        t.v4.prefix_len = TABLE_KEY_BITS + 32;
        t.v4.data.table = table.to_be_bytes();
        unsafe { core::ptr::addr_of_mut!(t.v4.data.addr).cast::<u32>().write_unaligned(addr[0]) };
        fib::TABLE_ROUTES_V4.get(&t.v4)?
    };
    t.found[reverse as usize & 1] = *found;
    hit(Some(found))
}

/// The family's bank in use: 0 when its rules are the defaults.
#[inline(always)]
fn bank(ipv6: bool) -> u32 {
    // SAFETY: one aligned word the agent writes whole.
    POLICY_SELECT.get(ipv6 as u32).map_or(0, |s| unsafe { core::ptr::read_volatile(&s.bank) })
}

/// The family's rules, unless they are the defaults.
#[inline(always)]
fn rules(ipv6: bool) -> Option<Policy> {
    let bank = bank(ipv6);
    if bank == 0 {
        return None;
    }
    let slot = policy_slot(ipv6, bank - 1);
    let list = POLICY.get(slot)?;
    Some(Policy { slot, reads_ports: list.flags & RuleList::PORTS != 0 })
}

/// The local table's entry answers before any rule (`0: from all lookup local`).
#[inline(always)]
fn from_local_table(route: Option<&RouteEntry>) -> bool {
    route.is_some_and(|r| r.flags & RouteEntry::LOCAL_TABLE != 0)
}

/// What the rules see of a lookup's route.
#[inline(always)]
fn hit(route: Option<&RouteEntry>) -> Option<MainHit> {
    route.map(|r| MainHit {
        prefix_len: r.prefix_len,
        error: matches!(r.kind(), Some(RouteKind::Blackhole | RouteKind::Unreachable | RouteKind::Prohibit)),
    })
}

/// Where the frame's IP header is and where it came from.
pub struct Arrival {
    pub l3_off: usize,
    pub ingress: IngressKey,
}

/// `fib_rules_lookup` for the frame, the main view having `route` for its
/// destination; `reverse`: for the reverse flow `fib_validate_source`
/// looks up, `route` being the source's. `Main` when the family's rules
/// are the defaults.
#[inline(always)]
pub fn choose(ctx: &XdpContext, at: &Arrival, ipv6: bool, route: Option<&RouteEntry>, reverse: bool) -> Choice {
    // No inline check of POLICY_SELECT before the call: it saved no
    // measurable time (69 against 76 ns, within the noise) and cost the
    // verifier 120k instructions (668k against 547k).
    if from_local_table(route) {
        return Choice::Main;
    }
    let key = at.ingress.vid & 0xffff | (ipv6 as u32) << 16 | (reverse as u32) << 17;
    Choice::from_u32(cowroute_ip_rules(ctx.ctx, at.l3_off as u32, at.ingress.ifindex, key, MainHit::pack(hit(route))))
}

/// The rules' walk for a frame. A global function (BTF linkage global,
/// being `no_mangle`): the verifier checks it once, on its own, rather
/// than again for every state its callers reach it in (which took the
/// program past a million instructions). It reads the headers itself, so
/// only scalars (and the context) pass in and out. `key`: the VLAN id, bit
/// 16 IPv6, bit 17 the reverse flow.
#[no_mangle]
#[inline(never)]
pub extern "C" fn cowroute_ip_rules(ctx: *mut xdp_md, l3_off: u32, ifindex: u32, key: u32, main: u32) -> u32 {
    let (ipv6, reverse) = (key & 1 << 16 != 0, key & 1 << 17 != 0);
    let Some(policy) = rules(ipv6) else { return Choice::Main as u32 };
    let ctx = XdpContext::new(ctx);
    let Some(w) = RULE_WALK.get_ptr_mut(0) else { return Choice::Kernel as u32 };
    // SAFETY: per-CPU, and nothing else on this CPU uses it meanwhile.
    let w = unsafe { &mut *w };
    (w.flow.iif, w.flow.iif_vid) = (ifindex, key & 0xffff);
    let read = match ipv6 {
        false => flow_v4(&ctx, &mut w.flow, l3_off as usize, policy.reads_ports),
        true => flow_v6(&ctx, &mut w.flow, l3_off as usize, policy.reads_ports),
    };
    if read.is_none() {
        return Choice::Kernel as u32;
    }
    (w.slot, w.reverse, w.main, w.next, w.choice) = (policy.slot, reverse as u32, main, 0, Choice::NoRoute as u32);
    // SAFETY: the callback's only state is RULE_WALK's.
    unsafe { bpf_loop(MAX_RULES as u32, rule_step as *mut c_void, core::ptr::null_mut(), 0) };
    w.choice
}

/// The IPv4 header's part of the flow (ports only when a rule reads them,
/// and the packet has no options and is no fragment: the flow dissector's).
#[inline(always)]
fn flow_v4(ctx: &XdpContext, f: &mut FlowKeys, l3_off: usize, reads_ports: bool) -> Option<()> {
    if l3_off > MAX_L3_OFF {
        return None;
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3_off)?;
    // SAFETY: in bounds (checked by ptr_at).
    let (vihl, tos, frags, proto, src, dst) =
        unsafe { ((*ip).vihl, (*ip).tos, u16::from_be_bytes((*ip).frags), *(ip as *const u8).add(9), (*ip).src_addr, (*ip).dst_addr) };
    let v4 = |a: [u8; 4]| address_words(&[a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    (f.src, f.dst, f.dscp, f.ip_proto, f.l4_known, f.ports_known) = (v4(src), v4(dst), tos & 0xfc, proto, true, false);
    if reads_ports && vihl & 0x0f == 5 && frags & (IP_MF | IP_OFFSET) == 0 {
        ports(ctx, f, l3_off + Ipv4Hdr::LEN, proto);
    }
    Some(())
}

/// The IPv6 header's part: behind an extension header the flow dissector's
/// protocol and ports are unknown here.
#[inline(always)]
fn flow_v6(ctx: &XdpContext, f: &mut FlowKeys, l3_off: usize, reads_ports: bool) -> Option<()> {
    if l3_off > MAX_L3_OFF {
        return None;
    }
    let ip: *const Ipv6Hdr = ptr_at(ctx, l3_off)?;
    // SAFETY: in bounds (checked by ptr_at).
    let (vcf, next, src, dst) = unsafe { ((*ip).vcf, *(ip as *const u8).add(6), (*ip).src_addr, (*ip).dst_addr) };
    let l4_known = !matches!(next, IPV6_NEXTHDR_HOP | IPV6_NEXTHDR_ROUTING | IPV6_NEXTHDR_FRAGMENT | IPV6_NEXTHDR_DEST);
    let tclass = (vcf[0] << 4) | (vcf[1] >> 4);
    (f.src, f.dst, f.dscp, f.ip_proto, f.l4_known, f.ports_known) =
        (address_words(&src), address_words(&dst), tclass & 0xfc, next, l4_known, false);
    if reads_ports && l4_known {
        ports(ctx, f, l3_off + Ipv6Hdr::LEN, next);
    }
    Some(())
}

/// A TCP, UDP or SCTP header's ports at `off` (the same two words in all
/// three); another protocol's stay unknown, the kernel's to judge.
#[inline(always)]
fn ports(ctx: &XdpContext, f: &mut FlowKeys, off: usize, proto: u8) {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP {
        return;
    }
    if let Some(p) = ptr_at::<[u8; 4]>(ctx, off) {
        // SAFETY: in bounds (checked by ptr_at).
        let p = unsafe { *p };
        (f.sport, f.dport, f.ports_known) = (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]), true);
    }
}

/// Where an IP header may start: behind one 802.1Q tag at most.
pub const MAX_L3_OFF: usize = EthHdr::LEN + VLAN_HLEN;

/// One rule of the walk (`bpf_loop`'s callback): 0 on to the next, 1 decided.
unsafe extern "C" fn rule_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(w) = RULE_WALK.get_ptr_mut(0) else { return 1 };
    let w = &mut *w;
    let Some(rules) = POLICY.get(w.slot) else {
        w.choice = Choice::Kernel as u32;
        return 1;
    };
    let (ipv6, reverse) = (rules.flags & RuleList::IPV6 != 0, w.reverse != 0);
    // The destination's route, or the source's for the reverse flow.
    let addr = if reverse { &w.flow.src } else { &w.flow.dst };
    let table = |id: u32| table_lookup(id, ipv6, addr, reverse);
    match rules.step(&w.flow, reverse, MainHit::unpack(w.main), &mut w.next, table) {
        None => 0,
        Some(choice) => {
            w.choice = choice as u32;
            1
        }
    }
}
