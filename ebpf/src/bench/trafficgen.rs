//! The bench's traffic generator, not part of cowroute. Run by
//! BPF_PROG_RUN in live-frames mode (the technique of xdp-trafficgen): the
//! kernel hands it one page-pool copy of the bench's frame per repetition,
//! it picks the frame's flow and sends it out of the interface the run
//! names as ingress. On a veth that is straight into the peer's receive
//! queue, with no socket or skb on the sending side.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_redirect},
    programs::XdpContext,
};
use cowroute_ebpf::packet::ptr_at_mut;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

/// Flows to spread frames over: the UDP source port becomes
/// `TRAFFICGEN_FIRST_PORT + random % flows`. Set at load time.
#[no_mangle]
static TRAFFICGEN_FLOWS: u32 = 1;
const TRAFFICGEN_FIRST_PORT: u32 = 10_000;

const HEADERS_LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN + 8;

/// The frame's Ethernet, IPv4 and UDP headers (UDP checksum zero, so a new
/// source port needs no checksum update). Set at load time.
#[no_mangle]
static TRAFFICGEN_HEADERS: [u8; HEADERS_LEN] = [0; HEADERS_LEN];

/// The kernel copies the bench's frame into a page once and recycles the
/// page: what the router wrote into it (MACs, TTL, checksum) comes back.
/// So every repetition writes the headers whole, then the flow's port.
#[inline(always)]
pub fn generate(ctx: &XdpContext) -> u32 {
    let Some(headers) = ptr_at_mut::<[u8; HEADERS_LEN]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    unsafe { *headers = core::ptr::read_volatile(&TRAFFICGEN_HEADERS) };
    let flows = unsafe { core::ptr::read_volatile(&TRAFFICGEN_FLOWS) };
    if flows > 1 {
        if let Some(sport) = ptr_at_mut::<[u8; 2]>(ctx, EthHdr::LEN + Ipv4Hdr::LEN) {
            let port = TRAFFICGEN_FIRST_PORT + unsafe { bpf_get_prandom_u32() } % flows;
            unsafe { *sport = (port as u16).to_be_bytes() };
        }
    }
    unsafe { bpf_redirect(ctx.ingress_ifindex() as u32, 0) as u32 }
}
