//! The IPv6 hop-by-hop options header of a packet in transit, read as the
//! kernel's `ipv6_parse_hopopts` / `ip6_parse_tlv` read it (the only
//! extension header a router processes; `ip6_forward` parses no other):
//! Pad1 / PadN (at most 7 bytes of padding in a row, PadN all zeros), router
//! alert (for `ip6_ra_chain` sockets, of which the agent has none:
//! forwarded), jumbo payload, IOAM (ignored: `ioam6_enabled` is off by
//! default), at most `max_hbh_opts_cnt` (8) other options, and an unknown
//! option's action bits: 00 skip, 01 discard, 10 Parameter Problem, 11
//! Parameter Problem unless the destination is multicast.

/// `net.ipv6.max_hbh_opts_cnt`'s default.
const MAX_HBH_OPTS: usize = 8;
const IPV6_TLV_PAD1: u8 = 0;
const IPV6_TLV_PADN: u8 = 1;
const IPV6_TLV_ROUTERALERT: u8 = 5;
const IPV6_TLV_JUMBO: u8 = 0xc2;
const IPV6_TLV_IOAM: u8 = 0x31;
/// ICMPv6 Parameter Problem codes (RFC 4443 3.4).
const ICMPV6_HDR_FIELD: u8 = 0;
const ICMPV6_UNK_OPTION: u8 = 2;

/// What becomes of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forward,
    /// Dropped without an error (a malformed header, action bits 01).
    Drop,
    /// ICMPv6 Parameter Problem `code` pointing at byte `pointer`.
    ParameterProblem {
        code: u8,
        pointer: u32,
    },
}

/// Reads the hop-by-hop header right after the IPv6 header of `ip` (the
/// packet, its length from the payload length).
pub fn parse_hopopts(ip: &[u8]) -> Outcome {
    if ip.len() < 48 {
        return Outcome::Drop;
    }
    let end = 40 + (ip[41] as usize + 1) * 8;
    if end > ip.len() {
        return Outcome::Drop;
    }
    let (mut off, mut padlen, mut count) = (42, 0, 0);
    while off < end {
        if ip[off] == IPV6_TLV_PAD1 {
            padlen += 1;
            if padlen > 7 {
                return Outcome::Drop;
            }
            off += 1;
            continue;
        }
        if end - off < 2 {
            return Outcome::Drop;
        }
        let optlen = ip[off + 1] as usize + 2;
        if optlen > end - off {
            return Outcome::Drop;
        }
        if ip[off] == IPV6_TLV_PADN {
            padlen += optlen;
            if padlen > 7 || ip[off + 2..off + optlen].iter().any(|&b| b != 0) {
                return Outcome::Drop;
            }
        } else {
            count += 1;
            if count > MAX_HBH_OPTS {
                return Outcome::Drop;
            }
            let verdict = match ip[off] {
                IPV6_TLV_ROUTERALERT if ip[off + 1] != 2 => Outcome::Drop,
                IPV6_TLV_ROUTERALERT => Outcome::Forward,
                IPV6_TLV_JUMBO => jumbo(ip, off),
                IPV6_TLV_IOAM if off & 3 != 0 => Outcome::Drop,
                IPV6_TLV_IOAM => Outcome::Forward,
                kind => unknown(kind, ip[24] == 0xff, off),
            };
            if verdict != Outcome::Forward {
                return verdict;
            }
            padlen = 0;
        }
        off += optlen;
    }
    Outcome::Forward
}

/// `ipv6_hop_jumbo`: the payload length must be 0 and the jumbo length
/// above 65535, which no packet that reaches the agent can be.
fn jumbo(ip: &[u8], off: usize) -> Outcome {
    if ip[off + 1] != 4 || off & 3 != 2 {
        return Outcome::Drop;
    }
    let len = u32::from_be_bytes([ip[off + 2], ip[off + 3], ip[off + 4], ip[off + 5]]);
    if len <= 0xffff {
        return Outcome::ParameterProblem { code: ICMPV6_HDR_FIELD, pointer: off as u32 + 2 };
    }
    if ip[4..6] != [0, 0] {
        return Outcome::ParameterProblem { code: ICMPV6_HDR_FIELD, pointer: off as u32 };
    }
    // Longer than the packet.
    Outcome::Drop
}

/// `ip6_tlvopt_unknown`: what the option type's two high bits ask for.
fn unknown(kind: u8, multicast: bool, off: usize) -> Outcome {
    match kind >> 6 {
        0 => Outcome::Forward,
        1 => Outcome::Drop,
        3 if multicast => Outcome::Drop,
        _ => Outcome::ParameterProblem { code: ICMPV6_UNK_OPTION, pointer: off as u32 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv6 header (next header 0, to `dst0`::) with the hop-by-hop
    /// header `hbh` (its next-header and length bytes filled) and 8 bytes of UDP.
    fn packet(dst0: u8, options: &[u8]) -> Vec<u8> {
        assert_eq!((options.len() + 2) % 8, 0);
        let mut ip = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        ip.extend_from_slice(&[0xfd; 16]);
        ip.push(dst0);
        ip.extend_from_slice(&[0x22; 15]);
        ip.extend_from_slice(&[17, ((options.len() + 2) / 8 - 1) as u8]);
        ip.extend_from_slice(options);
        ip.extend_from_slice(&[0; 8]);
        let payload = (ip.len() - 40) as u16;
        ip[4..6].copy_from_slice(&payload.to_be_bytes());
        ip
    }

    #[test]
    fn padding_router_alert_and_skippable_options_are_forwarded() {
        assert_eq!(parse_hopopts(&packet(0xfd, &[1, 4, 0, 0, 0, 0])), Outcome::Forward);
        assert_eq!(parse_hopopts(&packet(0xfd, &[5, 2, 0, 0, 1, 0])), Outcome::Forward, "router alert (MLD) + PadN");
        assert_eq!(parse_hopopts(&packet(0xfd, &[0x1e, 2, 9, 9, 0, 0])), Outcome::Forward, "unknown, action 00");
        assert_eq!(parse_hopopts(&packet(0xfd, &[0, 0, 0, 0, 0, 0])), Outcome::Forward, "six Pad1");
    }

    #[test]
    fn unknown_options_follow_their_action_bits() {
        assert_eq!(parse_hopopts(&packet(0xfd, &[0x5e, 2, 0, 0, 0, 0])), Outcome::Drop);
        assert_eq!(parse_hopopts(&packet(0xfd, &[1, 0, 0x9e, 2, 0, 0])), Outcome::ParameterProblem { code: 2, pointer: 44 });
        assert_eq!(parse_hopopts(&packet(0xfd, &[0xde, 2, 0, 0, 0, 0])), Outcome::ParameterProblem { code: 2, pointer: 42 });
        assert_eq!(parse_hopopts(&packet(0xff, &[0xde, 2, 0, 0, 0, 0])), Outcome::Drop, "11 to a group: no error");
        assert_eq!(parse_hopopts(&packet(0xff, &[0x9e, 2, 0, 0, 0, 0])), Outcome::ParameterProblem { code: 2, pointer: 42 });
    }

    #[test]
    fn malformed_headers_are_dropped_and_a_small_jumbo_is_a_parameter_problem() {
        assert_eq!(parse_hopopts(&packet(0xfd, &[5, 3, 0, 0, 0, 0])), Outcome::Drop, "router alert of 3 bytes");
        assert_eq!(parse_hopopts(&packet(0xfd, &[1, 4, 0, 1, 0, 0])), Outcome::Drop, "PadN not zero");
        assert_eq!(parse_hopopts(&packet(0xfd, &[1, 6, 0, 0, 0, 0])), Outcome::Drop, "past the header");
        let mut long_pad = vec![0u8; 14];
        long_pad[8] = 1;
        assert_eq!(parse_hopopts(&packet(0xfd, &long_pad)), Outcome::Drop, "8 Pad1 in a row");
        assert_eq!(parse_hopopts(&packet(0xfd, &[0xc2, 4, 0, 0, 0x10, 0])), Outcome::ParameterProblem { code: 0, pointer: 44 });
        let mut short = packet(0xfd, &[1, 4, 0, 0, 0, 0]);
        short[41] = 3;
        assert_eq!(parse_hopopts(&short), Outcome::Drop, "longer than the packet");
        let nine: Vec<u8> = (0..9).flat_map(|_| [0x1e, 0]).chain([1, 2, 0, 0]).collect();
        assert_eq!(parse_hopopts(&packet(0xfd, &nine)), Outcome::Drop, "more than 8 options");
    }
}
