//! Handing exception frames to the agent's slow path over AF_XDP.

use crate::packet::{adjust_head, ptr_at_mut};
use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{RingBuf, XskMap},
    macros::btf_map,
    programs::XdpContext,
};
use common::{
    capacity,
    slow_path::{socket_key, PmtuEvent, SlowPathHeader},
    Reason,
};

/// The agent's AF_XDP sockets, one per (interface, RX queue).
#[btf_map]
pub static SLOW_PATH: XskMap<{ capacity::SLOW_PATH as usize }> = XskMap::new();

/// Path-MTU reports for the agent: Fragmentation Needed / Packet Too Big
/// forwarded through this router.
#[btf_map]
pub static PMTU_EVENTS: RingBuf<PmtuEvent, { capacity::PMTU_EVENTS as usize }> = RingBuf::new();

/// Tells the agent; a full ring loses the report, never the packet.
#[inline(always)]
pub fn report_pmtu(event: PmtuEvent) {
    let _ = PMTU_EVENTS.output(event, 0);
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
