//! Internet checksum arithmetic (RFC 1071), with the incremental update of
//! RFC 1624 used when the fast path edits a header in place.

/// Folds a 32-bit one's-complement sum into 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 eqn. 3: the checksum `check` after a 16-bit word of the covered
/// data changes from `old` to `new`: HC' = ~(~HC + ~m + m').
/// All values are as read from the packet (network order in, network order out).
#[inline(always)]
pub const fn replace_u16(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u32 + (!old) as u32 + new as u32)
}

/// One's-complement sum of `data` as big-endian 16-bit words, plus `initial`.
pub fn sum_be_words(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum > 0xffff_ffff {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// The checksum of `data` (with its checksum field zeroed), big-endian.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_be_words(data, 0))
}

/// True when `data` (checksum field included) sums to 0xffff.
pub fn verifies(data: &[u8]) -> bool {
    fold(sum_be_words(data, 0)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    // An IPv4 header from RFC 1071 examples / Wikipedia, checksum 0xb861.
    const HDR: [u8; 20] =
        [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];

    #[test]
    fn known_header_checksum() {
        let mut h = HDR;
        assert!(verifies(&h));
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn ttl_decrement_incremental_equals_full_recompute() {
        // Every TTL and every starting checksum state the header can be in.
        for ttl in 1..=255u8 {
            for id in [0u16, 1, 0x1234, 0xfffe, 0xffff] {
                let mut h = HDR;
                h[4..6].copy_from_slice(&id.to_be_bytes());
                h[8] = ttl;
                h[10] = 0;
                h[11] = 0;
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                let old = u16::from_be_bytes([h[8], h[9]]);
                h[8] -= 1;
                let new = u16::from_be_bytes([h[8], h[9]]);
                let inc = replace_u16(c, old, new);
                h[10..12].copy_from_slice(&inc.to_be_bytes());
                assert!(verifies(&h), "ttl {ttl} id {id:#x}");
            }
        }
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum_be_words(&[0x12, 0x34, 0x56], 0), 0x1234 + 0x5600);
    }
}
