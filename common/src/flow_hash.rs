//! The hash that keeps a flow on one ECMP leg: the 5-tuple (addresses,
//! protocol, ports) through a murmur3-style mix. The same function in the
//! fast path and in the agent's tests, so a test can say which leg a flow
//! takes.

/// A fixed seed: every router running cowroute spreads flows alike; the
/// kernel salts its own multipath hash per boot for the same reason of
/// polarisation, which an operator may want later (a seed in a map).
const SEED: u32 = 0x6c6f_7721;

#[inline(always)]
const fn mix(h: u32, word: u32) -> u32 {
    let k = word.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of an IPv4 flow. `ports`: source and destination port as they are
/// in the packet (0 when the packet has none, or is a fragment).
#[inline(always)]
pub fn flow_hash_v4(src: [u8; 4], dst: [u8; 4], proto: u8, ports: [u8; 4]) -> u32 {
    let mut h = mix(SEED, u32::from_ne_bytes(src));
    h = mix(h, u32::from_ne_bytes(dst));
    h = mix(h, u32::from_ne_bytes(ports));
    finish(mix(h, proto as u32))
}

/// Hash of an IPv6 flow, as [`flow_hash_v4`].
#[inline(always)]
pub fn flow_hash_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, ports: [u8; 4]) -> u32 {
    let mut h = SEED;
    let mut i = 0;
    while i < 4 {
        h = mix(h, u32::from_ne_bytes([src[4 * i], src[4 * i + 1], src[4 * i + 2], src[4 * i + 3]]));
        h = mix(h, u32::from_ne_bytes([dst[4 * i], dst[4 * i + 1], dst[4 * i + 2], dst[4 * i + 3]]));
        i += 1;
    }
    h = mix(h, u32::from_ne_bytes(ports));
    finish(mix(h, proto as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NextHopGroup;

    #[test]
    fn ports_spread_flows_over_buckets_and_each_flow_is_stable() {
        let mut seen = [0u32; NextHopGroup::BUCKETS];
        for sport in 0..256u16 {
            let p = sport.to_be_bytes();
            let h = flow_hash_v4([10, 1, 0, 2], [10, 9, 0, 1], 17, [p[0], p[1], 0x1f, 0x90]);
            assert_eq!(h, flow_hash_v4([10, 1, 0, 2], [10, 9, 0, 1], 17, [p[0], p[1], 0x1f, 0x90]));
            seen[h as usize % NextHopGroup::BUCKETS] += 1;
        }
        // 256 flows over 64 buckets: every bucket of a fair hash is hit
        // about 4 times; none empty, none with a large share.
        assert!(seen.iter().filter(|c| **c == 0).count() < 6, "{seen:?}");
        assert!(seen.iter().all(|c| *c < 16), "{seen:?}");
        let a = flow_hash_v6(&[1; 16], &[2; 16], 6, [0, 1, 0, 2]);
        assert_ne!(a, flow_hash_v6(&[1; 16], &[2; 16], 6, [0, 1, 0, 3]));
    }
}
