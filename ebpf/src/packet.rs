//! Bounds-checked access to the frame. Every read or write of packet memory
//! goes through these, with the check against `data_end` right before it.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;

/// A `T` at `offset` from the start of the frame, or `None` if the frame is
/// too short to hold it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    ptr_at_mut(ctx, offset).map(|p| p as *const T)
}

/// As [`ptr_at`], for writing.
#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// The frame's length in bytes.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// Moves the start of the frame by `delta` bytes (negative: grow at the front).
#[inline(always)]
pub fn adjust_head(ctx: &XdpContext, delta: i32) -> bool {
    // SAFETY: the helper checks headroom itself; pointers derived before this
    // call are not used after it (callers re-derive them).
    unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(ctx.ctx, delta) == 0 }
}

/// Moves the end of the frame by `delta` bytes (negative: shorten it).
#[inline(always)]
pub fn adjust_tail(ctx: &XdpContext, delta: i32) -> bool {
    // SAFETY: as for adjust_head: the helper checks the bounds, and callers
    // re-derive any packet pointer after it.
    unsafe { aya_ebpf::helpers::bpf_xdp_adjust_tail(ctx.ctx, delta) == 0 }
}
