//! Handing exception frames to the agent's slow path over AF_XDP.

use crate::packet::{adjust_head, ptr_at, ptr_at_mut};
use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{RingBuf, XskMap},
    helpers::bpf_xdp_load_bytes,
    macros::btf_map,
    programs::XdpContext,
};
use common::{
    capacity,
    proto::ETH_P_8021Q,
    slow_path::{socket_key, PmtuEvent, SlowPathHeader, PMTU_COPY},
    Reason,
};

/// The agent's AF_XDP sockets, one per (interface, RX queue).
#[btf_map]
pub static SLOW_PATH: XskMap<{ capacity::SLOW_PATH as usize }> = XskMap::new();

/// Path-MTU reports for the agent: Fragmentation Needed / Packet Too Big
/// forwarded through this router.
#[btf_map]
pub static PMTU_EVENTS: RingBuf<PmtuEvent, { capacity::PMTU_EVENTS as usize }> = RingBuf::new();

/// Tells the agent: copies the forwarded IP packet (`len` bytes by its
/// header, at most `PMTU_COPY` of them) into the ring, with the ingress
/// interface. Called after the frame was rewritten, so the IP header is
/// found behind the egress side's Ethernet header (and tag, if any). A full
/// ring loses the report, never the packet.
#[inline(always)]
pub fn report_pmtu(ctx: &XdpContext, family: u8, len: usize) {
    let Some(ether_type) = ptr_at::<[u8; 2]>(ctx, 12) else { return };
    let l3_off = if unsafe { *ether_type == ETH_P_8021Q.to_be_bytes() } { 18u32 } else { 14u32 };
    if len == 0 {
        return;
    }
    // min(len, PMTU_COPY) as 1 + a value in 0..PMTU_COPY: a form whose
    // bounds the verifier sees (the helper refuses a size that may be 0).
    let n = len as u32 - 1;
    let copied = if n > PMTU_COPY as u32 - 1 { PMTU_COPY as u32 - 1 } else { n } + 1;
    let Some(mut entry) = PMTU_EVENTS.reserve(0) else { return };
    let event = entry.as_mut_ptr();
    // SAFETY: the entry is ours until submitted or discarded; the helper
    // writes at most `copied` <= PMTU_COPY bytes into `packet`.
    let loaded = unsafe {
        (*event).family = family;
        (*event)._pad = [0; 3];
        (*event).ingress = ctx.ingress_ifindex() as u32;
        (*event).len = len as u32;
        (*event).copied = copied;
        let buf = core::ptr::addr_of_mut!((*event).packet) as *mut core::ffi::c_void;
        bpf_xdp_load_bytes(ctx.ctx, l3_off, buf, copied)
    };
    if loaded == 0 {
        entry.submit(0);
    } else {
        entry.discard(0);
    }
}

/// Redirects the frame, behind a [`SlowPathHeader`] saying `reason`, to the
/// agent's socket on this interface and queue (`detail`: see the header). `None` (the frame untouched)
/// when there is no such socket: the kernel stack takes it.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, reason: Reason, detail: u32) -> Option<u32> {
    let key = socket_key(ctx.ingress_ifindex() as u32, ctx.rx_queue_index());
    SLOW_PATH.get(key)?;
    if !adjust_head(ctx, -(SlowPathHeader::LEN as i32)) {
        return None;
    }
    let Some(header) = ptr_at_mut::<SlowPathHeader>(ctx, 0) else {
        adjust_head(ctx, SlowPathHeader::LEN as i32);
        return None;
    };
    unsafe { *header = SlowPathHeader::new(reason, detail) };
    match SLOW_PATH.redirect(key, xdp_action::XDP_PASS as u64) {
        Ok(action) => Some(action),
        // The socket went away meanwhile: the frame as it came, to the stack.
        Err(_) => {
            adjust_head(ctx, SlowPathHeader::LEN as i32);
            None
        }
    }
}
