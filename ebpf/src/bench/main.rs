//! The bench's XDP programs, in an object of their own (`cowroute-bench`):
//! `cargo xtask bench` loads them; the agent never does, and they are not in
//! the production object it embeds.
#![no_std]
#![no_main]

mod reference;
mod trafficgen;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The bench's yardstick: a minimal forwarder on the kernel's FIB (see
/// `reference.rs`).
#[xdp]
pub fn cowroute_reference(ctx: XdpContext) -> u32 {
    reference::forward(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// The bench's traffic generator, run by BPF_PROG_RUN with live frames
/// (see `trafficgen.rs`). Never attached.
#[xdp]
pub fn cowroute_trafficgen(ctx: XdpContext) -> u32 {
    trafficgen::generate(&ctx)
}

/// Index of the interface `cowroute_redirect` sends every frame out of.
/// Set at load time.
#[no_mangle]
static REDIRECT_IFINDEX: u32 = 0;

/// The bench's ceiling: every frame straight out of `REDIRECT_IFINDEX`, no
/// parsing, no lookup, no rewrite. What XDP forwarding costs in this lab
/// before any work of a router's.
#[xdp]
pub fn cowroute_redirect(_ctx: XdpContext) -> u32 {
    unsafe { aya_ebpf::helpers::bpf_redirect(core::ptr::read_volatile(&REDIRECT_IFINDEX), 0) as u32 }
}

/// Drops everything: the sink of a benchmark lab, whose veth still counts
/// each frame it receives, without a network stack's work per frame.
#[xdp]
pub fn cowroute_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}
