//! Reading one path-MTU report: the whole forwarded ICMPv4 Fragmentation
//! Needed or ICMPv6 Packet Too Big the fast path copied (`PmtuEvent`),
//! checked on its own bytes (checksum, the quoted header) before the RIB is
//! asked anything. The rule and where it comes from: `pmtu`'s module comment.

use common::{checksum, slow_path::PmtuEvent};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A report whose bytes hold together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The interface it arrived on.
    pub ingress: u32,
    /// The ICMP's source: the hop that could not carry the packet.
    pub reporter: IpAddr,
    /// The quoted packet's source (the ICMP's destination) and destination.
    pub quoted_src: IpAddr,
    pub quoted_dst: IpAddr,
    /// The MTU the hop reports (RFC 1191 / RFC 8201), unclamped.
    pub mtu: u32,
}

/// Why a report's bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Longer than the fast path copies: its checksum cannot be verified.
    Truncated,
    /// Not a well formed Fragmentation Needed / Packet Too Big.
    Malformed,
    /// The ICMP checksum is wrong.
    BadChecksum,
    /// The quoted header is not one of a packet that was too big: version,
    /// IHL, header checksum, DF, 8 bytes of payload, a length above the MTU.
    BadQuote,
    /// From an address no hop sends from (multicast, broadcast, loopback,
    /// unspecified), about one no packet goes to, or not addressed to the
    /// quoted packet's source.
    BogusAddress,
}

/// Checks the bytes of `event`; see `pmtu` for the rule.
pub fn parse(event: &PmtuEvent) -> Result<Report, Refusal> {
    if event.copied < event.len {
        return Err(Refusal::Truncated);
    }
    let p = event.bytes();
    if p.len() != event.len as usize {
        return Err(Refusal::Malformed);
    }
    match event.family {
        4 => parse_v4(event.ingress, p),
        6 => parse_v6(event.ingress, p),
        _ => Err(Refusal::Malformed),
    }
}

fn v4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn v6(b: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).expect("16 bytes"))
}

fn parse_v4(ingress: u32, p: &[u8]) -> Result<Report, Refusal> {
    // Outer header (no options: the fast path hands those to the kernel),
    // ICMP header, quoted header, 8 bytes of its payload.
    if p.len() < 20 + 8 + 20 + 8 || p[0] != 0x45 || p[9] != 1 || u16::from_be_bytes([p[2], p[3]]) as usize != p.len() {
        return Err(Refusal::Malformed);
    }
    let icmp = &p[20..];
    if !checksum::verifies(icmp) {
        return Err(Refusal::BadChecksum);
    }
    if icmp[0] != 3 || icmp[1] != 4 {
        return Err(Refusal::Malformed);
    }
    let mtu = u16::from_be_bytes([icmp[6], icmp[7]]) as u32;
    let q = &icmp[8..];
    let ihl = (q[0] & 0x0f) as usize * 4;
    // icmp_unreach: IHL below 5 is mangled; pskb_may_pull(ihl * 4 + 8).
    if q[0] >> 4 != 4 || ihl < 20 || q.len() < ihl + 8 || !checksum::verifies(&q[..ihl]) {
        return Err(Refusal::BadQuote);
    }
    let (quoted_len, df) = (u16::from_be_bytes([q[2], q[3]]) as u32, q[6] & 0x40 != 0);
    // RFC 1191: sent for a DF packet longer than the next hop's MTU.
    if !df || quoted_len <= mtu || (quoted_len as usize) < ihl + 8 {
        return Err(Refusal::BadQuote);
    }
    let (reporter, to, qsrc, qdst) = (v4(&p[12..]), v4(&p[16..]), v4(&q[12..]), v4(&q[16..]));
    let bogus = |a: Ipv4Addr| a.is_multicast() || a.is_broadcast() || a.is_loopback() || a.is_unspecified();
    if bogus(reporter) || bogus(qsrc) || bogus(qdst) || to != qsrc {
        return Err(Refusal::BogusAddress);
    }
    Ok(Report { ingress, reporter: reporter.into(), quoted_src: qsrc.into(), quoted_dst: qdst.into(), mtu })
}

fn parse_v6(ingress: u32, p: &[u8]) -> Result<Report, Refusal> {
    if p.len() < 40 + 8 + 40 + 8 || p[0] >> 4 != 6 || p[6] != 58 || 40 + u16::from_be_bytes([p[4], p[5]]) as usize != p.len() {
        return Err(Refusal::Malformed);
    }
    let icmp = &p[40..];
    // icmpv6_rcv: the checksum over the pseudo header and the message.
    let mut pseudo = [0u8; 40];
    pseudo[..32].copy_from_slice(&p[8..40]);
    pseudo[32..36].copy_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo[39] = 58;
    if checksum::fold(checksum::sum_be_words(icmp, checksum::sum_be_words(&pseudo, 0))) != 0xffff {
        return Err(Refusal::BadChecksum);
    }
    if icmp[0] != 2 || icmp[1] != 0 {
        return Err(Refusal::Malformed);
    }
    let mtu = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]);
    let q = &icmp[8..];
    let quoted_len = 40 + u16::from_be_bytes([q[4], q[5]]) as u32;
    if q[0] >> 4 != 6 || quoted_len <= mtu {
        return Err(Refusal::BadQuote);
    }
    let (reporter, to, qsrc, qdst) = (v6(&p[8..]), v6(&p[24..]), v6(&q[8..]), v6(&q[24..]));
    let bogus = |a: Ipv6Addr| a.is_multicast() || a.is_loopback() || a.is_unspecified();
    if bogus(reporter) || bogus(qsrc) || bogus(qdst) || to != qsrc {
        return Err(Refusal::BogusAddress);
    }
    Ok(Report { ingress, reporter: reporter.into(), quoted_src: qsrc.into(), quoted_dst: qdst.into(), mtu })
}

/// Reports as a hop sends them, and forgeries of them, for tests.
#[cfg(test)]
pub mod forge {
    use common::{checksum, slow_path::PmtuEvent};

    /// A 1400-byte DF datagram `src` -> `dst`, quoted in a Fragmentation
    /// Needed from `reporter` to `src` saying `mtu`, arriving on `ingress`:
    /// 20 + 8 + as much of the datagram as 576 bytes take (RFC 1812).
    pub fn frag_needed(ingress: u32, reporter: [u8; 4], src: [u8; 4], dst: [u8; 4], mtu: u16) -> PmtuEvent {
        let mut quote = vec![0u8; 548];
        quote[..20].copy_from_slice(&[0x45, 0, 0x05, 0x78, 0, 1, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        quote[12..16].copy_from_slice(&src);
        quote[16..20].copy_from_slice(&dst);
        let c = checksum::checksum(&quote[..20]);
        quote[10..12].copy_from_slice(&c.to_be_bytes());
        let mut icmp = vec![3, 4, 0, 0, 0, 0];
        icmp.extend_from_slice(&mtu.to_be_bytes());
        icmp.extend_from_slice(&quote);
        let c = checksum::checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let total = (20 + icmp.len()) as u16;
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 63, 1, 0, 0];
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&reporter);
        p.extend_from_slice(&src);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&icmp);
        PmtuEvent::from_packet(4, ingress, &p)
    }

    /// A Packet Too Big for a 1400-byte packet `src` -> `dst`, filled to 1280.
    pub fn packet_too_big(ingress: u32, reporter: [u8; 16], src: [u8; 16], dst: [u8; 16], mtu: u32) -> PmtuEvent {
        let mut quote = vec![0u8; 1280 - 48];
        quote[..8].copy_from_slice(&[0x60, 0, 0, 0, 0x05, 0x50, 17, 64]);
        quote[8..24].copy_from_slice(&src);
        quote[24..40].copy_from_slice(&dst);
        let mut icmp = vec![2, 0, 0, 0];
        icmp.extend_from_slice(&mtu.to_be_bytes());
        icmp.extend_from_slice(&quote);
        let mut pseudo = [0u8; 40];
        pseudo[..16].copy_from_slice(&reporter);
        pseudo[16..32].copy_from_slice(&src);
        pseudo[32..36].copy_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo[39] = 58;
        let c = !checksum::fold(checksum::sum_be_words(&icmp, checksum::sum_be_words(&pseudo, 0)));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 58, 63];
        p[4..6].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
        p.extend_from_slice(&reporter);
        p.extend_from_slice(&src);
        p.extend_from_slice(&icmp);
        PmtuEvent::from_packet(6, ingress, &p)
    }
}

#[cfg(test)]
mod tests {
    use super::{forge::*, *};

    const R: [u8; 4] = [10, 2, 0, 2];
    const S: [u8; 4] = [10, 1, 0, 2];
    const D: [u8; 4] = [10, 7, 0, 2];

    #[test]
    fn a_genuine_report_reads_and_every_forgery_is_named() {
        let r = parse(&frag_needed(3, R, S, D, 1300)).unwrap();
        assert_eq!((r.ingress, r.reporter, r.quoted_src, r.quoted_dst, r.mtu), (3, IpAddr::from(R), S.into(), D.into(), 1300));
        let mut bad = frag_needed(3, R, S, D, 1300);
        bad.packet[27] ^= 1; // the MTU's low byte, checksum left as it was
        assert_eq!(parse(&bad), Err(Refusal::BadChecksum));
        let mut long = frag_needed(3, R, S, D, 1300);
        long.len += 1;
        assert_eq!(parse(&long), Err(Refusal::Truncated));
        assert_eq!(parse(&frag_needed(3, R, S, D, 1400)), Err(Refusal::BadQuote), "the quoted 1400 bytes fit a 1400 MTU");
        assert_eq!(parse(&frag_needed(3, [224, 0, 0, 1], S, D, 1300)), Err(Refusal::BogusAddress));
        // A quoted header with a wrong checksum, the ICMP checksum fixed up.
        let mut p = frag_needed(3, R, S, D, 1300).bytes().to_vec();
        p[29] ^= 0x04; // the quote's TOS
        p[22..24].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&p[20..]);
        p[22..24].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&PmtuEvent::from_packet(4, 3, &p)), Err(Refusal::BadQuote));
        // Addressed to someone other than the quoted source.
        let mut p = frag_needed(3, R, S, D, 1300).bytes().to_vec();
        p[19] = 9;
        assert_eq!(parse(&PmtuEvent::from_packet(4, 3, &p)), Err(Refusal::BogusAddress));
    }

    #[test]
    fn packet_too_big_checks_the_pseudo_header_checksum() {
        let (r, s, d) = (
            [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0xfd, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        );
        let e = packet_too_big(3, r, s, d, 1300);
        assert_eq!(e.len, 1280);
        assert_eq!(parse(&e).unwrap().mtu, 1300);
        let mut bad = e;
        bad.packet[8] ^= 1; // the reporter: the pseudo header no longer matches
        assert_eq!(parse(&bad), Err(Refusal::BadChecksum));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, ..Default::default() })]

        /// A ring-buffer record is the program's copy of a packet off the
        /// wire: any bytes, any claimed lengths, either family, are parsed
        /// or refused, never a panic. A genuine report with bytes flipped
        /// at random is refused unless the flip left it valid.
        #[test]
        fn any_report_bytes_are_parsed_or_refused(
            family in proptest::prelude::prop_oneof![proptest::prelude::Just(4u8), proptest::prelude::Just(6u8), proptest::prelude::any::<u8>()],
            len in proptest::prelude::any::<u32>(),
            copied in proptest::prelude::any::<u32>(),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1400),
            flip in proptest::collection::vec((0usize..600, proptest::prelude::any::<u8>()), 0..4),
        ) {
            let mut e = frag_needed(3, R, S, D, 1400);
            let _ = parse(&e);
            for (at, x) in flip {
                e.packet[at] ^= x;
            }
            let _ = parse(&e);
            let mut raw = frag_needed(3, R, S, D, 1400);
            raw.family = family;
            raw.len = len;
            raw.copied = copied;
            let n = bytes.len().min(raw.packet.len());
            raw.packet[..n].copy_from_slice(&bytes[..n]);
            let _ = parse(&raw);
        }
    }
}
