//! Handing exception frames to the agent's slow path over AF_XDP.

use crate::packet::{adjust_head, frame_len, ptr_at, ptr_at_mut};
use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{HashMap, PerCpuArray, RingBuf, XskMap},
    helpers::bpf_xdp_load_bytes,
    macros::btf_map,
    programs::XdpContext,
};
use common::{
    capacity,
    proto::ETH_P_8021Q,
    slow_path::{socket_key, PmtuEvent, SlowPathHeader, SlowPathIface, Unserved, IFACE_SLOTS, NUM_UNSERVED, PMTU_COPY},
    Counter, Reason,
};

/// The agent's AF_XDP sockets, one per (interface, RX queue), at
/// `socket_key(slot, queue)` of the interface's slot.
#[btf_map]
pub static SLOW_PATH: XskMap<{ capacity::SLOW_PATH as usize }> = XskMap::new();

/// The interfaces the slow path serves: ifindex -> their slot in
/// `SLOW_PATH` and the longest frame their sockets take.
#[btf_map]
pub static SLOW_PATH_IFACES: HashMap<u32, SlowPathIface, { IFACE_SLOTS as usize }> = HashMap::new();

/// Exceptions for the agent that the kernel got instead, by cause, per CPU.
#[btf_map]
pub static UNSERVED: PerCpuArray<Counter, { NUM_UNSERVED as usize }> = PerCpuArray::new();

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
/// agent's socket on this interface and queue (`detail`: see the header).
/// `None` (the frame untouched, for the kernel stack) when no socket can
/// take it: no slow path on the interface, a queue beyond its slots or
/// without a socket, a frame longer than the socket's UMEM frames, no
/// headroom. Each of those is counted in `UNSERVED`.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, reason: Reason, detail: u32) -> Option<u32> {
    let len = frame_len(ctx);
    let served = socket_for(ctx, len);
    let key = match served {
        Ok(key) => key,
        Err(cause) => return unserved(cause, len),
    };
    if !adjust_head(ctx, -(SlowPathHeader::LEN as i32)) {
        return unserved(Unserved::NoHeadroom, len);
    }
    let Some(header) = ptr_at_mut::<SlowPathHeader>(ctx, 0) else {
        adjust_head(ctx, SlowPathHeader::LEN as i32);
        return unserved(Unserved::NoHeadroom, len);
    };
    unsafe { *header = SlowPathHeader::new(reason, detail) };
    match SLOW_PATH.redirect(key, xdp_action::XDP_PASS as u64) {
        Ok(action) => Some(action),
        // The socket went away meanwhile: the frame as it came, to the stack.
        Err(_) => {
            adjust_head(ctx, SlowPathHeader::LEN as i32);
            unserved(Unserved::NoSocket, len)
        }
    }
}

/// The `SLOW_PATH` key of the socket that takes a `len`-byte frame from
/// this interface and queue, or why there is none.
#[inline(always)]
fn socket_for(ctx: &XdpContext, len: usize) -> Result<u32, Unserved> {
    let iface = unsafe { SLOW_PATH_IFACES.get(&(ctx.ingress_ifindex() as u32)) }.ok_or(Unserved::NoInterface)?;
    let key = socket_key(iface.slot, ctx.rx_queue_index()).ok_or(Unserved::QueueBeyondSlots)?;
    if len + SlowPathHeader::LEN > iface.max_frame as usize {
        return Err(Unserved::TooLong);
    }
    SLOW_PATH.get(key).ok_or(Unserved::NoSocket)?;
    Ok(key)
}

/// Counts a frame the slow path could not take; `None`: the stack's.
#[inline(always)]
fn unserved(cause: Unserved, len: usize) -> Option<u32> {
    crate::fib::count_in(&UNSERVED, cause as u32, len);
    None
}
