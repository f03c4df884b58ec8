//! cowroute's fast path: an XDP program that forwards IPv4 and IPv6 from the
//! route tables in BPF maps, reading each route's metrics through a tagged
//! reference (shared read-only, or a destination's private copy).
//!
//! Every frame ends in exactly one [`Verdict`], made in one place per reason
//! and counted per CPU.
#![no_std]
#![no_main]

mod abi;
mod fib;
mod ingress;
mod mss;
mod policy;
mod slow_path;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use common::{
    checksum, flow_hash,
    forwarding::{self, Forwarding, IpFacts},
    ingress::{IngressKey, IngressPort, SourceCheck, SourceRoute},
    policy::Choice,
    proto::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN,
        IPV6_HLEN, IPV6_NEXTHDR_HOP, IP_DF, IP_MF, IP_OFFSET, VLAN_HLEN,
    },
    NextHop, Reason, RouteEntry, RouteKind, RouteMetrics,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
// Shared with the bench's object (the crate's lib); `crate::packet` for the modules.
use cowroute_ebpf::packet::{self, adjust_head, adjust_tail, frame_len, ptr_at, ptr_at_mut};

/// What becomes of a frame, and why. Eight bytes, like the `Result`s it
/// travels in: the verifier rejects reads of stack bytes a path left
/// unwritten, which a wider verdict invites. So `action` packs, besides the
/// XDP action in its low byte, [`Verdict::AGENT`] and a 16-bit detail for
/// the agent (an exceeded MTU, a next hop id).
struct Verdict {
    action: u32,
    reason: Reason,
}

impl Verdict {
    /// An exception the agent answers (an ICMP error): handed to its slow
    /// path when it has a socket here, else to the stack.
    const AGENT: u32 = 1 << 8;

    /// Leave the frame to the kernel stack.
    const fn pass(reason: Reason) -> Verdict {
        Verdict { action: xdp_action::XDP_PASS, reason }
    }
    const fn drop(reason: Reason) -> Verdict {
        Verdict { action: xdp_action::XDP_DROP, reason }
    }
    const fn forwarded(action: u32) -> Verdict {
        Verdict { action, reason: Reason::Forwarded }
    }
    /// The agent's to finish (an ICMP error is due, a neighbour to wait
    /// for); `detail`: what a too-big packet exceeded, the next hop.
    const fn exception(reason: Reason, detail: u32) -> Verdict {
        let detail = if detail > 0xffff { 0xffff } else { detail };
        Verdict { action: xdp_action::XDP_PASS | Self::AGENT | detail << 16, reason }
    }
    const fn xdp_action(&self) -> u32 {
        self.action & 0xff
    }
    const fn to_agent(&self) -> bool {
        self.action & Self::AGENT != 0
    }
    const fn detail(&self) -> u32 {
        self.action >> 16
    }
}

/// Early exits carry their verdict in `Err`, so `?` reads as "or leave with".
type Step<T> = Result<T, Verdict>;

#[xdp]
pub fn cowroute(ctx: XdpContext) -> u32 {
    let verdict = match route_frame(&ctx) {
        Ok(v) | Err(v) => v,
    };
    fib::count(verdict.reason, frame_len(&ctx));
    if verdict.to_agent() {
        if let Some(action) = slow_path::hand_over(&ctx, verdict.reason, verdict.detail()) {
            return action;
        }
    }
    verdict.xdp_action()
}

/// Does nothing but XDP_PASS: attached to the far end of a veth so that frames
/// redirected into it in native mode are received.
#[xdp]
pub fn cowroute_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The layer-2 facts the rest of the path needs.
struct L2 {
    /// Offset of the IP header: 14, or 18 behind one 802.1Q tag.
    l3_off: usize,
    /// The frame arrived with an 802.1Q tag (VID 0 included: it is removed on egress).
    tagged: bool,
    /// The interface (`vid`: the VLAN sub-interface) it arrived on.
    ingress: IngressKey,
    port: &'static IngressPort,
}

/// Layer 2 as the kernel sees it (`eth_type_trans`, `vlan_do_receive`):
/// only IP frames addressed to the ingress interface's own MAC, untagged,
/// priority-tagged (VID 0) or tagged for a VLAN sub-interface, are routed.
fn route_frame(ctx: &XdpContext) -> Step<Verdict> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(Verdict::pass(Reason::Malformed))?;
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let (mut l3_off, mut tagged, mut vid) = (EthHdr::LEN, false, 0);
    if ether_type == ETH_P_8021Q {
        // The tag names the ingress sub-interface; routing is on the inner packet.
        let tag: *const [u8; 4] = ptr_at(ctx, EthHdr::LEN).ok_or(Verdict::pass(Reason::Malformed))?;
        let tag = unsafe { *tag };
        vid = u16::from_be_bytes([tag[0], tag[1]]) as u32 & 0x0fff;
        ether_type = u16::from_be_bytes([tag[2], tag[3]]);
        (l3_off, tagged) = (EthHdr::LEN + VLAN_HLEN, true);
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            return Err(Verdict::pass(Reason::VlanStacked));
        }
    } else if ether_type == ETH_P_8021AD {
        return Err(Verdict::pass(Reason::VlanStacked));
    }
    if ether_type != ETH_P_IP && ether_type != ETH_P_IPV6 {
        return Err(Verdict::pass(Reason::NotIp));
    }
    let dmac = unsafe { (*eth).dst_addr };
    if dmac[0] & 1 != 0 {
        return Err(Verdict::pass(Reason::Multicast));
    }
    let ingress = IngressKey { ifindex: ctx.ingress_ifindex() as u32, vid };
    let missing = if vid != 0 { Reason::VlanUnknown } else { Reason::PortUnknown };
    let port = ingress::port(&ingress).ok_or(Verdict::pass(missing))?;
    if !port.is_for_us(&dmac) {
        return Err(Verdict::pass(Reason::OtherHost));
    }
    let l2 = L2 { l3_off, tagged, ingress, port };
    if ether_type == ETH_P_IP {
        route_v4(ctx, &l2)
    } else {
        route_v6(ctx, &l2)
    }
}

fn route_v4(ctx: &XdpContext, l2: &L2) -> Step<Verdict> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, l2.l3_off).ok_or(Verdict::pass(Reason::Malformed))?;
    let (vihl, tot_len, ttl, src, dst) =
        unsafe { ((*ip).vihl, u16::from_be_bytes((*ip).tot_len) as usize, (*ip).ttl, (*ip).src_addr, (*ip).dst_addr) };
    let ihl = (vihl & 0x0f) as usize * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || tot_len < ihl || l2.l3_off + tot_len > frame_len(ctx) {
        return Err(Verdict::pass(Reason::Malformed));
    }
    if ingress::ipv4_is_multicast(dst) || ingress::ipv4_is_lbcast(dst) {
        return Err(Verdict::pass(Reason::Multicast));
    }
    if let Some(martian) = ingress::ipv4_martian(src, dst, l2.port.has(IngressPort::ROUTE_LOCALNET)) {
        return Err(Verdict::drop(martian));
    }
    if ingress::ipv4_is_loopback(dst) {
        // Not a martian with `route_localnet`: the local table's 127/8 route
        // delivers it to the stack.
        return Err(Verdict::pass(Reason::Local));
    }
    let route = fib::route_lookup_v4(dst);
    let at = policy::Arrival { l3_off: l2.l3_off, ingress: l2.ingress };
    let route = match policy::choose(ctx, &at, false, route, false) {
        Choice::Main => route,
        // The agent's options path routes by the main view: a rule's
        // decision on a packet with options is the kernel's to carry out.
        _ if ihl != Ipv4Hdr::LEN => return Err(Verdict::pass(Reason::RuleKernel)),
        // Checked before any verdict, as `ip_rcv_core` does.
        _ if !ipv4_checksum_ok(ip) => return Err(Verdict::pass(Reason::Malformed)),
        choice => ruled(choice)?,
    };
    if ihl != Ipv4Hdr::LEN {
        // The agent processes the options of what it forwards (from a valid
        // source), and of what has no route or a reject route (the kernel
        // reads options before it answers for the route); local and the
        // kernel's own route kinds are the stack's.
        return Err(match route.map(|r| (r, r.kind())) {
            Some((r, Some(RouteKind::Unicast))) => {
                validate_source_v4(ctx, l2, src, &next_hop_of(r, 0)?)?;
                Verdict::exception(Reason::IpOptions, 0)
            }
            None | Some((_, Some(RouteKind::Blackhole | RouteKind::Unreachable | RouteKind::Prohibit))) => {
                Verdict::exception(Reason::IpOptions, 0)
            }
            _ => Verdict::pass(Reason::IpOptions),
        });
    }
    if !ipv4_checksum_ok(ip) {
        return Err(Verdict::pass(Reason::Malformed));
    }
    let route = route.ok_or(Verdict::exception(Reason::NoRoute, 0))?;
    let (proto, frags) = unsafe { (*(ip as *const u8).add(9), u16::from_be_bytes((*ip).frags)) };
    // The TCP header, when this is TCP and the first (or only) fragment.
    let tcp = (proto == IPPROTO_TCP && frags & IP_OFFSET == 0).then_some(Ipv4Hdr::LEN);
    let flow_hash = if route.is_multipath() {
        // Fragments hash without ports, so all of a datagram takes one leg.
        let ports = if frags & (IP_MF | IP_OFFSET) == 0 { l4_ports(ctx, l2.l3_off + Ipv4Hdr::LEN, proto) } else { [0; 4] };
        flow_hash::flow_hash_v4(src, dst, proto, ports)
    } else {
        0
    };
    let hop = next_hop_of(route, flow_hash)?;
    validate_source_v4(ctx, l2, src, &hop)?;
    // DF clear: a router may fragment it (the kernel does, when it is too big).
    let ip = IpFacts { ttl, len: tot_len as u32, may_fragment: frags & IP_DF == 0 };
    // Read before forward() may move the headers (a VLAN tag pushed or popped).
    let pmtu = proto == IPPROTO_ICMP && frags & (IP_OFFSET | IP_MF) == 0 && icmp_frag_needed(ctx, l2.l3_off + Ipv4Hdr::LEN);
    let verdict = forward(ctx, l2, hop, Packet { ip, tcp }, ip_decrease_ttl)?;
    if pmtu {
        slow_path::report_pmtu(ctx, 4, tot_len);
    }
    Ok(verdict)
}

/// The route a rule's choice other than the main view's leaves (a table's,
/// or none), or the verdict it calls for.
#[inline(always)]
fn ruled(choice: Choice) -> Step<Option<&'static RouteEntry>> {
    match choice {
        Choice::Table => Ok(policy::chosen_route(false)),
        Choice::Main | Choice::NoRoute => Ok(None),
        Choice::Blackhole => Err(Verdict::drop(Reason::Blackhole)),
        Choice::Prohibit => Err(Verdict::exception(Reason::Prohibit, 0)),
        Choice::Kernel => Err(Verdict::pass(Reason::RuleKernel)),
    }
}

/// `fib_validate_source` on a packet about to be forwarded through `hop`:
/// its source against the FIB (through the rules, for the reverse flow), as
/// the ingress port's sysctls ask.
#[inline(always)]
fn validate_source_v4(ctx: &XdpContext, l2: &L2, src: [u8; 4], hop: &Hop) -> Step<()> {
    let hairpin = ingress::leaves_by(hop.nh, &l2.ingress);
    let is_address = || ingress::is_local_v4(src);
    let reverse = || {
        let key = l2.ingress.vid | ((l2.port.rp_filter == 1) as u32) << 16;
        SourceRoute::from_u32(ingress::cowroute_source_route_v4(ctx.ctx, l2.l3_off as u32, l2.ingress.ifindex, key))
    };
    match ingress::fib_validate_source(l2.port, hairpin, is_address, reverse) {
        SourceCheck::Valid => Ok(()),
        SourceCheck::Invalid(reason) => Err(Verdict::drop(reason)),
        SourceCheck::Kernel => Err(Verdict::pass(Reason::KernelRoute)),
    }
}

fn route_v6(ctx: &XdpContext, l2: &L2) -> Step<Verdict> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, l2.l3_off).ok_or(Verdict::pass(Reason::Malformed))?;
    let (version, payload_len, next_hdr, hop_limit, src, dst) = unsafe {
        (
            (*ip).vcf[0] >> 4,
            u16::from_be_bytes((*ip).payload_len) as usize,
            *(ip as *const u8).add(6),
            (*ip).hop_limit,
            (*ip).src_addr,
            (*ip).dst_addr,
        )
    };
    let len = Ipv6Hdr::LEN + payload_len;
    if version != 6 || l2.l3_off + len > frame_len(ctx) {
        return Err(Verdict::pass(Reason::Malformed));
    }
    if dst[0] == 0xff {
        return Err(Verdict::pass(Reason::Multicast));
    }
    if let Some(martian) = ingress::ipv6_martian(&src, &dst) {
        return Err(Verdict::drop(martian));
    }
    let route = fib::route_lookup_v6(dst);
    if ingress::ipv6_is_link_local(&dst) {
        // The router's own: the stack's. Another: `ip6_forward` sends it
        // back out of the link it came from, which the agent does.
        let own = route.is_some_and(|r| r.kind() == Some(RouteKind::Local));
        return Err(if own { Verdict::pass(Reason::LinkLocal) } else { Verdict::exception(Reason::LinkLocalTransit, 0) });
    }
    let at = policy::Arrival { l3_off: l2.l3_off, ingress: l2.ingress };
    let route = match policy::choose(ctx, &at, true, route, false) {
        Choice::Main => route,
        // The agent's hop-by-hop path routes by the main view.
        _ if next_hdr == IPV6_NEXTHDR_HOP => return Err(Verdict::pass(Reason::RuleKernel)),
        choice => ruled(choice)?,
    };
    let Some(route) = route else {
        // `ip6_rcv_core` reads hop-by-hop options before the route: the agent's.
        let reason = if next_hdr == IPV6_NEXTHDR_HOP { Reason::IpOptions } else { Reason::NoRoute };
        return Err(Verdict::exception(reason, 0));
    };
    // `ip6_forward`, after the hop limit: no unspecified source, and a
    // link-local one gets Destination Unreachable (beyond scope), but only
    // once `ip6_rcv` has read the hop-by-hop options (the agent's then).
    let forwarded = route.kind() == Some(RouteKind::Unicast) && hop_limit > 1;
    if forwarded && ingress::ipv6_is_unspecified(&src) {
        return Err(Verdict::drop(Reason::SourceZero));
    }
    if next_hdr == IPV6_NEXTHDR_HOP {
        // Hop-by-hop options (the only ones a router reads): the agent's, as for IPv4.
        let agents = matches!(route.kind(), Some(RouteKind::Unicast | RouteKind::Blackhole | RouteKind::Unreachable | RouteKind::Prohibit));
        return Err(if agents { Verdict::exception(Reason::IpOptions, 0) } else { Verdict::pass(Reason::IpOptions) });
    }
    if forwarded && ingress::ipv6_is_link_local(&src) {
        return Err(Verdict::exception(Reason::LinkLocal, 0));
    }
    let tcp = (next_hdr == IPPROTO_TCP).then_some(Ipv6Hdr::LEN);
    let flow_hash = if route.is_multipath() {
        let ports = l4_ports(ctx, l2.l3_off + Ipv6Hdr::LEN, next_hdr);
        flow_hash::flow_hash_v6(&src, &dst, next_hdr, ports)
    } else {
        0
    };
    let hop = next_hop_of(route, flow_hash)?;
    let pmtu = next_hdr == IPPROTO_ICMPV6 && icmpv6_packet_too_big(ctx, l2.l3_off + Ipv6Hdr::LEN);
    let ip = IpFacts { ttl: hop_limit, len: len as u32, may_fragment: false };
    let verdict = forward(ctx, l2, hop, Packet { ip, tcp }, ipv6_decrease_hop_limit)?;
    if pmtu {
        slow_path::report_pmtu(ctx, 6, len);
    }
    Ok(verdict)
}

/// What forwarding needs to know of an IP packet, whatever its family.
struct Packet {
    /// What the forwarding rules check.
    ip: IpFacts,
    /// Offset of the TCP header from the IP header, when there is one.
    tcp: Option<usize>,
}

/// The source and destination ports of a TCP, UDP or SCTP header at `off`
/// (the same two words in all three); zeros for other protocols.
#[inline(always)]
fn l4_ports(ctx: &XdpContext, off: usize, proto: u8) -> [u8; 4] {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP {
        return [0; 4];
    }
    match ptr_at::<[u8; 4]>(ctx, off) {
        Some(p) => unsafe { *p },
        None => [0; 4],
    }
}

/// The family-independent rest of the path, once the route's type and next
/// hop are known (the flow's leg, for multipath): the forwarding rules in the kernel's order (TTL, MTU, neighbour: common's
/// [`forwarding::ip_forward_check`], one verdict per outcome here); then
/// redirect, rewrite, decrement, clamp. Generic over the decrement (BPF has
/// no indirect calls: each family gets a copy).
#[inline(always)]
fn forward<D: Fn(&XdpContext, usize) -> Step<()>>(ctx: &XdpContext, l2: &L2, hop: Hop, packet: Packet, decrease_ttl: D) -> Step<Verdict> {
    match forwarding::ip_forward_check(&packet.ip, hop.metrics, hop.nh) {
        Forwarding::Forward => {}
        // No device to send on: the kernel's.
        Forwarding::LinkDown => return Err(Verdict::pass(Reason::NoNeighbour)),
        Forwarding::TtlExceeded => return Err(Verdict::exception(Reason::TtlExceeded, 0)),
        // DF set: Fragmentation Needed; DF clear: the agent fragments it (it reads DF itself).
        Forwarding::TooBig { mtu, .. } => return Err(Verdict::exception(Reason::TooBig, mtu)),
        // The agent holds the packet while the neighbour is resolved (the
        // detail names the next hop: 16 bits of it).
        Forwarding::NoNeighbour => {
            return Err(match hop.id <= 0xffff {
                true => Verdict::exception(Reason::NoNeighbour, hop.id),
                false => Verdict::pass(Reason::NoNeighbour),
            })
        }
    }
    let action = arm_redirect(ctx, hop.nh)?;
    let l3_off = rewrite_l2(ctx, l2, hop.nh)?;
    decrease_ttl(ctx, l3_off)?;
    let advmss = forwarding::dst_metric_advmss(hop.metrics);
    if let (Some(tcp), true) = (packet.tcp, advmss != 0) {
        mss::clamp_mss(ctx, l3_off + tcp, advmss);
    }
    trim_to_packet(ctx, l3_off + packet.ip.len as usize);
    fib::count_nexthop(hop.id, frame_len(ctx));
    Ok(Verdict::forwarded(action))
}

/// Where a unicast route sends its packets, and the metrics it reads.
struct Hop {
    nh: &'static NextHop,
    /// `nh`'s NEXTHOPS id.
    id: u32,
    /// The route's shared metrics, or the destination's private copy.
    metrics: &'static RouteMetrics,
}

/// Turns a route into a next hop (the flow's leg, for a multipath route) and
/// its metrics, or the verdict its type calls for. Inlined: a `Step<Hop>`
/// returned through the stack is read back in pieces the verifier refuses.
#[inline(always)]
fn next_hop_of(route: &RouteEntry, flow: u32) -> Step<Hop> {
    match route.kind() {
        Some(RouteKind::Unicast) => {}
        Some(RouteKind::Local) => return Err(Verdict::pass(Reason::Local)),
        Some(RouteKind::Blackhole) => return Err(Verdict::drop(Reason::Blackhole)),
        Some(RouteKind::Unreachable) => return Err(Verdict::exception(Reason::Unreachable, 0)),
        Some(RouteKind::Prohibit) => return Err(Verdict::exception(Reason::Prohibit, 0)),
        Some(RouteKind::Kernel) => return Err(Verdict::pass(Reason::KernelRoute)),
        None => return Err(Verdict::pass(Reason::BadReference)),
    }
    let id = fib::route_nexthop_id(route, flow).ok_or(Verdict::pass(Reason::BadReference))?;
    let nh = fib::nexthop(id).ok_or(Verdict::pass(Reason::BadReference))?;
    let metrics = fib::dst_metrics_ptr(route.metrics).ok_or(Verdict::pass(Reason::BadReference))?;
    Ok(Hop { nh, id, metrics })
}

/// Arms the redirect before the frame is touched: a missing egress port
/// leaves the frame unchanged for the stack.
fn arm_redirect(ctx: &XdpContext, nh: &NextHop) -> Step<u32> {
    fib::redirect_to(nh.ifindex).map_err(|_| {
        debug!(ctx, "egress port {} missing from EGRESS_PORTS", nh.ifindex);
        Verdict::pass(Reason::RedirectFailed)
    })
}

/// Writes the next hop's MACs, pushing, rewriting or removing the 802.1Q tag
/// as the egress side needs. Returns the new offset of the IP header.
fn rewrite_l2(ctx: &XdpContext, l2: &L2, nh: &NextHop) -> Step<usize> {
    let egress_tagged = nh.vlan != 0;
    let delta: i32 = match (l2.tagged, egress_tagged) {
        (false, true) => -(VLAN_HLEN as i32),
        (true, false) => VLAN_HLEN as i32,
        _ => 0,
    };
    // The inner EtherType stays where it is; only what precedes it moves.
    if delta != 0 && !adjust_head(ctx, delta) {
        return Err(Verdict::pass(Reason::NoHeadroom));
    }
    let macs: *mut [u8; 12] = ptr_at_mut(ctx, 0).ok_or(Verdict::pass(Reason::Malformed))?;
    let (d, s) = (nh.dmac, nh.smac);
    unsafe { *macs = [d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1], s[2], s[3], s[4], s[5]] };
    if !egress_tagged {
        return Ok(EthHdr::LEN);
    }
    let tag: *mut [u8; 4] = ptr_at_mut(ctx, 12).ok_or(Verdict::pass(Reason::Malformed))?;
    let tpid = ETH_P_8021Q.to_be_bytes();
    let tci = (nh.vlan & 0x0fff).to_be_bytes();
    unsafe { *tag = [tpid[0], tpid[1], tci[0], tci[1]] };
    Ok(EthHdr::LEN + VLAN_HLEN)
}

/// Drops what follows the IP packet (Ethernet padding, a trailer), as
/// `ip_rcv_core` / `ip6_rcv_core` trim the skb to the header's length: the
/// next link gets the packet only. `end`: the packet's end in the frame.
#[inline(always)]
fn trim_to_packet(ctx: &XdpContext, end: usize) {
    let excess = frame_len(ctx).saturating_sub(end);
    if excess > 0 && excess < 0xffff {
        // Cannot fail: the frame stays longer than its headers.
        adjust_tail(ctx, -(excess as i32));
    }
}

/// An ICMP Fragmentation Needed (3/4) at `off` (RFC 1191). The agent gets
/// the whole packet and judges it (see `report_pmtu`).
#[inline(always)]
fn icmp_frag_needed(ctx: &XdpContext, off: usize) -> bool {
    match ptr_at::<[u8; 2]>(ctx, off) {
        Some(b) => unsafe { *b == [3, 4] },
        None => false,
    }
}

/// An ICMPv6 Packet Too Big (2/0) at `off` (RFC 8201).
#[inline(always)]
fn icmpv6_packet_too_big(ctx: &XdpContext, off: usize) -> bool {
    match ptr_at::<[u8; 2]>(ctx, off) {
        Some(b) => unsafe { *b == [2, 0] },
        None => false,
    }
}

/// TTL minus one and the checksum updated (common's `ip_decrease_ttl`).
fn ip_decrease_ttl(ctx: &XdpContext, l3_off: usize) -> Step<()> {
    let ip: *mut [u8; IPV4_HLEN] = ptr_at_mut(ctx, l3_off).ok_or(Verdict::pass(Reason::Malformed))?;
    forwarding::ip_decrease_ttl(unsafe { &mut *ip });
    Ok(())
}

fn ipv6_decrease_hop_limit(ctx: &XdpContext, l3_off: usize) -> Step<()> {
    let ip: *mut [u8; IPV6_HLEN] = ptr_at_mut(ctx, l3_off).ok_or(Verdict::pass(Reason::Malformed))?;
    forwarding::ipv6_decrease_hop_limit(unsafe { &mut *ip });
    Ok(())
}

/// RFC 1812 5.2.2: a router verifies the header checksum before forwarding.
fn ipv4_checksum_ok(ip: *const Ipv4Hdr) -> bool {
    let words = ip as *const [u8; Ipv4Hdr::LEN];
    let mut sum = 0u32;
    for i in 0..Ipv4Hdr::LEN / 2 {
        sum += u16::from_be_bytes(unsafe { [(*words)[2 * i], (*words)[2 * i + 1]] }) as u32;
    }
    checksum::fold(sum) == 0xffff
}
