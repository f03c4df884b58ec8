//! The bench's traffic generator, not part of cowroute. Run by
//! BPF_PROG_RUN in live-frames mode (the technique of xdp-trafficgen): the
//! kernel hands it one page-pool copy of the bench's frame per repetition,
//! it picks the frame's flow (and, for a full table, its destination) and
//! sends it out of the interface the run names as ingress. On a veth that is
//! straight into the peer's receive queue, with no socket or skb on the
//! sending side.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_redirect},
    macros::map,
    maps::Array,
    programs::XdpContext,
};
use cowroute_ebpf::packet::ptr_at_mut;

/// Flows to spread frames over: the UDP source port becomes
/// `TRAFFICGEN_FIRST_PORT + random % flows`. Set at load time.
#[no_mangle]
static TRAFFICGEN_FLOWS: u32 = 1;
const TRAFFICGEN_FIRST_PORT: u32 = 10_000;

/// Where the UDP header starts: 34 (Ethernet + IPv4) or 54 (Ethernet +
/// IPv6). Set at load time.
#[no_mangle]
static TRAFFICGEN_L4_OFFSET: u32 = 34;

/// Destinations to spread frames over, the first of `TRAFFICGEN_DSTS`
/// (0: the frame's own). Set at load time.
#[no_mangle]
static TRAFFICGEN_DST_COUNT: u32 = 0;

/// The longest headers rewritten: Ethernet, IPv6, UDP.
const HEADERS_LEN: usize = 14 + 40 + 8;

/// The frame's first HEADERS_LEN bytes (UDP checksum zero, so a new source
/// port needs no checksum update). Set at load time.
#[no_mangle]
static TRAFFICGEN_HEADERS: [u8; HEADERS_LEN] = [0; HEADERS_LEN];

/// A destination and, for IPv4, the header checksum that goes with it
/// (computed by the bench, so the generator does no arithmetic).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TrafficgenDst {
    /// IPv4: the first 4 bytes.
    pub addr: [u8; 16],
    pub ipv4_check: [u8; 2],
    pub _pad: [u8; 2],
}

/// Capacity of the destination table: 2^17 (a full table's lab spreads
/// frames over at least 65,536 prefixes).
#[map]
static TRAFFICGEN_DSTS: Array<TrafficgenDst> = Array::with_max_entries(1 << 17, 0);

/// Offsets of the destination address in the frame.
const IPV4_DST: usize = 14 + 16;
const IPV4_CHECK: usize = 14 + 10;
const IPV6_DST: usize = 14 + 24;

/// The kernel copies the bench's frame into a page once and recycles the
/// page: what the router wrote into it (MACs, TTL, checksum) comes back.
/// So every repetition writes the headers whole, then the flow's port and
/// destination.
#[inline(always)]
pub fn generate(ctx: &XdpContext) -> u32 {
    let Some(headers) = ptr_at_mut::<[u8; HEADERS_LEN]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    unsafe { *headers = core::ptr::read_volatile(&TRAFFICGEN_HEADERS) };
    let flows = unsafe { core::ptr::read_volatile(&TRAFFICGEN_FLOWS) };
    let l4 = unsafe { core::ptr::read_volatile(&TRAFFICGEN_L4_OFFSET) };
    if flows > 1 {
        let port = TRAFFICGEN_FIRST_PORT + unsafe { bpf_get_prandom_u32() } % flows;
        let sport = (port as u16).to_be_bytes();
        // Two fixed offsets, so that the verifier sees each bounds check.
        let at = if l4 == 34 { ptr_at_mut::<[u8; 2]>(ctx, 34) } else { ptr_at_mut::<[u8; 2]>(ctx, 54) };
        if let Some(p) = at {
            unsafe { *p = sport };
        }
    }
    let dsts = unsafe { core::ptr::read_volatile(&TRAFFICGEN_DST_COUNT) };
    if dsts > 0 {
        if let Some(d) = TRAFFICGEN_DSTS.get(unsafe { bpf_get_prandom_u32() } % dsts) {
            set_destination(ctx, d, l4 == 34);
        }
    }
    unsafe { bpf_redirect(ctx.ingress_ifindex() as u32, 0) as u32 }
}

#[inline(always)]
fn set_destination(ctx: &XdpContext, d: &TrafficgenDst, ipv4: bool) {
    if ipv4 {
        if let (Some(dst), Some(check)) = (ptr_at_mut::<[u8; 4]>(ctx, IPV4_DST), ptr_at_mut::<[u8; 2]>(ctx, IPV4_CHECK)) {
            unsafe {
                *dst = [d.addr[0], d.addr[1], d.addr[2], d.addr[3]];
                *check = d.ipv4_check;
            }
        }
    } else if let Some(dst) = ptr_at_mut::<[u8; 16]>(ctx, IPV6_DST) {
        unsafe { *dst = d.addr };
    }
}
