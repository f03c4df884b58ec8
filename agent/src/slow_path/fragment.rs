//! IPv4 fragmentation as the kernel does it in transit (`ip_do_fragment`),
//! for DF-clear packets too big for the next hop that the agent releases.

use common::{
    checksum,
    proto::{IPV4_HLEN, IP_MF, IP_OFFSET},
};

/// `ip_do_fragment` (its slow path): the IPv4 packet `ip` in fragments of at
/// most `mtu` bytes, each payload but the last a multiple of 8 bytes. The
/// first fragment keeps every option; later ones only those with the copied
/// flag, the others overwritten with NOPs (`ip_options_fragment`), so all
/// headers have one length. A fragment of a fragment keeps its offset and,
/// in the last piece, its MF; and, unless it was the first, all its options
/// (`ip_frag_next` fixes them only at offset 0: a later fragment's were
/// fixed where it was cut). `None` when `mtu` holds no 8-byte fragment.
pub fn ip_fragment(ip: &[u8], mtu: u32) -> Option<Vec<Vec<u8>>> {
    let ihl = (*ip.first()? & 0x0f) as usize * 4;
    let len = u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]) as usize;
    if ihl < IPV4_HLEN || len < ihl || len > ip.len() {
        return None;
    }
    let step = (mtu as usize).checked_sub(ihl)? & !7;
    if step == 0 {
        return None;
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let (first_offset, last_mf) = ((frag & IP_OFFSET) as usize * 8, frag & IP_MF);
    let mut later = ip[..ihl].to_vec();
    if first_offset == 0 {
        ip_options_fragment(&mut later[IPV4_HLEN..]);
    }
    let payload = &ip[ihl..len];
    let pieces = payload.chunks(step).enumerate().map(|(i, chunk)| {
        let mut p = if i == 0 { ip[..ihl].to_vec() } else { later.clone() };
        let last = (i + 1) * step >= payload.len();
        let offset = ((first_offset + i * step) / 8) as u16;
        p[2..4].copy_from_slice(&((ihl + chunk.len()) as u16).to_be_bytes());
        p[6..8].copy_from_slice(&(offset | if last { last_mf } else { IP_MF }).to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&p).to_be_bytes();
        p[10..12].copy_from_slice(&c);
        p.extend_from_slice(chunk);
        p
    });
    Some(pieces.collect())
}

/// `ip_options_fragment`: every option without the copied flag (0x80)
/// becomes NOPs, in place.
fn ip_options_fragment(opts: &mut [u8]) {
    const IPOPT_END: u8 = 0;
    const IPOPT_NOOP: u8 = 1;
    const IPOPT_COPY: u8 = 0x80;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            IPOPT_END => return,
            IPOPT_NOOP => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { return };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    return;
                }
                if kind & IPOPT_COPY == 0 {
                    opts[i..i + len].fill(IPOPT_NOOP);
                }
                i += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 + 8 bytes of options (record route, not copied; router alert,
    /// copied) and `payload` bytes, at fragment word `frag`.
    fn packet(frag: u16, payload: usize) -> Vec<u8> {
        let mut ip = vec![0x47, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 1, 0, 2, 10, 2, 0, 2];
        ip.extend_from_slice(&[7, 3, 4, 148, 4, 0, 0, 0]);
        ip[2..4].copy_from_slice(&((28 + payload) as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip.extend((0..payload).map(|i| i as u8));
        ip
    }

    #[test]
    fn later_pieces_lose_uncopied_options_unless_the_packet_was_a_later_fragment() {
        let pieces = ip_fragment(&packet(0, 100), 68).unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(&pieces[0][20..28], &[7, 3, 4, 148, 4, 0, 0, 0], "the first keeps them all");
        assert_eq!(&pieces[1][20..28], &[1, 1, 1, 148, 4, 0, 0, 0], "record route is not copied");
        // A later fragment's options were fixed where it was first cut.
        let pieces = ip_fragment(&packet(IP_MF | 0x10, 100), 68).unwrap();
        assert!(pieces.iter().all(|p| p[20..28] == [7, 3, 4, 148, 4, 0, 0, 0]));
        assert_eq!(u16::from_be_bytes([pieces[1][6], pieces[1][7]]), IP_MF | (0x10 + 5), "offsets go on from its own");
        assert!(pieces.iter().all(|p| checksum::verifies(&p[..28])));
    }
}
