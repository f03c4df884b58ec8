//! TCP MSS clamping: a SYN's MSS option is lowered to the route's
//! `RTAX_ADVMSS`, so that connections through a smaller path never send
//! segments that need fragmenting (what `iptables ... TCPMSS` does).

use crate::packet::{ptr_at, ptr_at_mut};
use aya_ebpf::programs::XdpContext;
use common::checksum;

const TCP_HDR_LEN: usize = 20;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_CHECK_OFF: usize = 16;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
const TCPOLEN_MSS: usize = 4;
/// Options are at most 40 bytes; senders put MSS first, after a few NOPs at
/// most. Bounded, as the verifier wants.
const MAX_OPTION_STEPS: usize = 12;

/// Lowers the MSS option of the TCP SYN at `tcp_off` to `advmss`, updating
/// the checksum as RFC 1624 says. Anything else is left alone.
#[inline(always)]
pub fn clamp_mss(ctx: &XdpContext, tcp_off: usize, advmss: u32) {
    let Some(hdr) = ptr_at::<[u8; TCP_HDR_LEN]>(ctx, tcp_off) else { return };
    let (data_off, flags) = unsafe { ((*hdr)[12] >> 4, (*hdr)[13]) };
    if flags & TCP_FLAG_SYN == 0 {
        return;
    }
    let hdr_len = data_off as usize * 4;
    let mut off = TCP_HDR_LEN;
    for _ in 0..MAX_OPTION_STEPS {
        if off + TCPOLEN_MSS > hdr_len {
            return;
        }
        let Some(opt) = ptr_at_mut::<[u8; TCPOLEN_MSS]>(ctx, tcp_off + off) else { return };
        let (kind, len) = unsafe { ((*opt)[0], (*opt)[1] as usize) };
        match kind {
            TCPOPT_EOL => return,
            TCPOPT_NOP => {
                off += 1;
                continue;
            }
            TCPOPT_MSS if len == TCPOLEN_MSS => {
                let old = unsafe { u16::from_be_bytes([(*opt)[2], (*opt)[3]]) };
                if old as u32 <= advmss {
                    return;
                }
                let new = advmss as u16;
                let Some(check) = ptr_at_mut::<[u8; 2]>(ctx, tcp_off + TCP_CHECK_OFF) else { return };
                unsafe {
                    let [hi, lo] = new.to_be_bytes();
                    (*opt)[2] = hi;
                    (*opt)[3] = lo;
                    *check = checksum::replace_u16(u16::from_be_bytes(*check), old, new).to_be_bytes();
                }
                return;
            }
            _ if len < 2 => return,
            _ => off += len,
        }
    }
}
