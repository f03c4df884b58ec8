//! TCP MSS clamping: a SYN's MSS option is lowered to the route's
//! `RTAX_ADVMSS`, so that connections through a smaller path never send
//! segments that need fragmenting (what `iptables ... TCPMSS` does). One walk
//! of the options for both sides: the XDP program reads the frame through
//! bounds-checked pointers, the agent through a slice.

use crate::{
    checksum,
    proto::{TCPOLEN_MSS, TCPOPT_EOL, TCPOPT_MSS, TCPOPT_NOP, TCP_FLAG_SYN, TCP_HLEN},
};

/// Options are at most 40 bytes; senders put MSS first, after a few NOPs at
/// most. Bounded, as the verifier wants.
pub const MAX_OPTION_STEPS: usize = 12;

/// Where the TCP checksum's word sits in the header.
const TCP_CHECK_OFF: usize = 16;

/// Four bytes at a time of a TCP header: the only access the clamp needs.
pub trait TcpBytes {
    /// The 4 bytes at `off` from the start of the TCP header, `None` past
    /// the end of the packet.
    fn at(&mut self, off: usize) -> Option<&mut [u8; 4]>;
}

impl TcpBytes for [u8] {
    fn at(&mut self, off: usize) -> Option<&mut [u8; 4]> {
        self.get_mut(off..off.checked_add(4)?)?.try_into().ok()
    }
}

/// Lowers the MSS option of the TCP SYN in `tcp` to `advmss`, updating the
/// checksum as RFC 1624 says. Anything else is left alone. Returns whether
/// it changed the segment.
#[inline(always)]
pub fn tcp_clamp_mss<T: TcpBytes + ?Sized>(tcp: &mut T, advmss: u32) -> bool {
    // Data offset and flags are bytes 12 and 13.
    let Some(w) = tcp.at(12) else { return false };
    let (hdr_len, flags) = ((w[0] >> 4) as usize * 4, w[1]);
    if flags & TCP_FLAG_SYN == 0 {
        return false;
    }
    let mut off = TCP_HLEN;
    for _ in 0..MAX_OPTION_STEPS {
        if off + TCPOLEN_MSS > hdr_len {
            return false;
        }
        let Some(opt) = tcp.at(off) else { return false };
        let (kind, len) = (opt[0], opt[1] as usize);
        match kind {
            TCPOPT_EOL => return false,
            TCPOPT_NOP => off += 1,
            TCPOPT_MSS if len == TCPOLEN_MSS => {
                let old = u16::from_be_bytes([opt[2], opt[3]]);
                if old as u32 <= advmss {
                    return false;
                }
                let new = advmss as u16;
                [opt[2], opt[3]] = new.to_be_bytes();
                // The option's bytes are written; now its word in the checksum.
                let Some(c) = tcp.at(TCP_CHECK_OFF) else { return false };
                [c[0], c[1]] = checksum::replace_u16(u16::from_be_bytes([c[0], c[1]]), old, new).to_be_bytes();
                return true;
            }
            _ if len < 2 => return false,
            _ => off += len,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A SYN with `opts` and a valid checksum over a zero pseudo header.
    fn syn(flags: u8, opts: &[u8]) -> Vec<u8> {
        let mut t = std::vec![0u8; 20];
        t[12] = ((20 + opts.len()) / 4) as u8 * 16;
        t[13] = flags;
        t.extend_from_slice(opts);
        let c = checksum::checksum(&t).to_be_bytes();
        t[16..18].copy_from_slice(&c);
        t
    }

    #[test]
    fn the_mss_is_lowered_with_a_valid_checksum_and_nothing_else_changes() {
        let mut t = syn(TCP_FLAG_SYN, &[1, 1, 2, 4, 0x05, 0xb4, 1, 1]);
        assert!(tcp_clamp_mss(&mut t[..], 1260));
        assert_eq!(u16::from_be_bytes([t[24], t[25]]), 1260);
        assert!(checksum::verifies(&t));
        assert!(!tcp_clamp_mss(&mut t[..], 1300), "already smaller");
        let mut ack = syn(0x10, &[2, 4, 0x05, 0xb4]);
        assert!(!tcp_clamp_mss(&mut ack[..], 1260), "not a SYN");
        let mut bad = syn(TCP_FLAG_SYN, &[8, 0, 0, 0, 2, 4, 5, 180]);
        assert!(!tcp_clamp_mss(&mut bad[..], 1260), "a zero-length option ends the walk");
        let mut short = syn(TCP_FLAG_SYN, &[2, 4, 5, 180]);
        short.truncate(22);
        assert!(!tcp_clamp_mss(&mut short[..], 1260), "the header claims more than there is");
    }
}
