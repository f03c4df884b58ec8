//! TCP MSS clamping in the frame: the rule is common's
//! ([`common::mss::tcp_clamp_mss`]); this gives it the frame's bytes, each
//! access bounds-checked against `data_end` right before it.

use crate::packet::ptr_at_mut;
use aya_ebpf::programs::XdpContext;
use common::mss::{tcp_clamp_mss, TcpBytes};

/// The TCP header at `off` in the frame.
struct FrameTcp<'a> {
    ctx: &'a XdpContext,
    off: usize,
}

impl TcpBytes for FrameTcp<'_> {
    #[inline(always)]
    fn at(&mut self, off: usize) -> Option<&mut [u8; 4]> {
        // SAFETY: inside the frame (checked), and nothing else holds it.
        ptr_at_mut::<[u8; 4]>(self.ctx, self.off + off).map(|p| unsafe { &mut *p })
    }
}

/// Lowers the MSS option of the TCP SYN at `tcp_off` to `advmss`.
#[inline(always)]
pub fn clamp_mss(ctx: &XdpContext, tcp_off: usize, advmss: u32) {
    tcp_clamp_mss(&mut FrameTcp { ctx, off: tcp_off }, advmss);
}
