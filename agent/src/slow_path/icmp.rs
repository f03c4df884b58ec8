//! ICMP errors as a router sends them: Time Exceeded, Fragmentation Needed /
//! Packet Too Big, Destination Unreachable (RFC 792, RFC 1191, RFC 1812,
//! RFC 4443). Pure functions from the offending frame to the reply frame.
//!
//! The reply goes back out of the ingress interface to the sender's MAC
//! (the frame's source), from the ingress interface's address, in the same
//! VLAN. It quotes as much of the offending packet as the RFCs allow (an
//! IPv4 error at most 576 bytes long, RFC 1812 4.3.2.3; an IPv6 one at most
//! the minimum MTU, 1280, RFC 4443 2.4(c)). No error is sent about an ICMP
//! error, about a non-first fragment, or to a source that is not one host.

use crate::slow_path::ip_options;
use common::{
    checksum,
    proto::{ethernet_payload, ipv6_packet_len, ETH_HLEN, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6},
    Reason,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
/// RFC 1812 4.3.2.3: an ICMP error's IP datagram is at most 576 bytes.
const V4_ERROR_MAX: usize = 576;
/// RFC 4443 2.4(c): at most the IPv6 minimum MTU.
const V6_ERROR_MAX: usize = 1280;

/// Which error a frame gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    TimeExceeded,
    /// Fragmentation Needed (IPv4, DF set) or Packet Too Big (IPv6).
    TooBig {
        mtu: u32,
    },
    /// No route to the destination.
    NoRoute,
    /// An unreachable route.
    Unreachable,
    /// A prohibit route.
    Prohibited,
    /// An IPv6 packet from a link-local source that would leave its link
    /// (`ip6_forward`: Destination Unreachable, beyond scope of source).
    BeyondScope,
    /// A header field the router cannot process (`ip_options_compile`,
    /// `ip6_parse_tlv`): `pointer` is the offending byte's offset from the
    /// IP header; `code` the ICMPv6 code (IPv4's is always 0).
    ParameterProblem {
        code: u8,
        pointer: u32,
    },
}

impl ErrorKind {
    /// The error for a fast-path verdict reason; `None` for reasons that
    /// get none.
    pub fn for_reason(reason: Reason, mtu: u32) -> Option<ErrorKind> {
        Some(match reason {
            Reason::TtlExceeded => ErrorKind::TimeExceeded,
            Reason::TooBig => ErrorKind::TooBig { mtu },
            Reason::NoRoute => ErrorKind::NoRoute,
            Reason::Unreachable => ErrorKind::Unreachable,
            Reason::Prohibit => ErrorKind::Prohibited,
            Reason::LinkLocal => ErrorKind::BeyondScope,
            _ => return None,
        })
    }

    /// Path MTU discovery depends on it: never limited per destination
    /// (as the kernel exempts it).
    pub fn is_pmtu(self) -> bool {
        matches!(self, ErrorKind::TooBig { .. })
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::TimeExceeded => "time_exceeded",
            ErrorKind::TooBig { .. } => "too_big",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Prohibited => "prohibited",
            ErrorKind::BeyondScope => "beyond_scope",
            ErrorKind::ParameterProblem { .. } => "parameter_problem",
        }
    }

    /// ICMPv4 type, code and the 4 bytes after the checksum.
    fn v4(self) -> (u8, u8, [u8; 4]) {
        match self {
            ErrorKind::TimeExceeded => (11, 0, [0; 4]),
            ErrorKind::TooBig { mtu } => {
                let m = (mtu.min(u16::MAX as u32) as u16).to_be_bytes();
                (3, 4, [0, 0, m[0], m[1]])
            }
            ErrorKind::NoRoute => (3, 0, [0; 4]),
            ErrorKind::Unreachable => (3, 1, [0; 4]),
            ErrorKind::Prohibited => (3, 13, [0; 4]),
            // IPv4 has no scopes: not sent (host unreachable, were it).
            ErrorKind::BeyondScope => (3, 1, [0; 4]),
            ErrorKind::ParameterProblem { pointer, .. } => (12, 0, [pointer.min(255) as u8, 0, 0, 0]),
        }
    }

    /// ICMPv6 type, code and the 4 bytes after the checksum.
    fn v6(self) -> (u8, u8, [u8; 4]) {
        match self {
            ErrorKind::TimeExceeded => (3, 0, [0; 4]),
            ErrorKind::TooBig { mtu } => (2, 0, mtu.to_be_bytes()),
            ErrorKind::NoRoute | ErrorKind::Unreachable => (1, 0, [0; 4]),
            ErrorKind::Prohibited => (1, 1, [0; 4]),
            ErrorKind::BeyondScope => (1, 2, [0; 4]),
            ErrorKind::ParameterProblem { code, pointer } => (4, code, pointer.to_be_bytes()),
        }
    }
}

/// Why a frame gets no error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Headers too short or inconsistent.
    Malformed,
    /// It is an ICMP error itself.
    AboutIcmpError,
    /// Its source is not one host (unspecified, broadcast, multicast, loopback).
    NotUnicastSource,
    /// A fragment other than the first.
    LaterFragment,
    /// The ingress interface has no address of this family.
    NoSourceAddress,
    /// Its IPv4 options cannot be echoed (`__ip_options_echo` fails on a
    /// slot cut short).
    OptionsEcho,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::AboutIcmpError => "about_icmp_error",
            Refusal::NotUnicastSource => "not_unicast_source",
            Refusal::LaterFragment => "later_fragment",
            Refusal::NoSourceAddress => "no_source_address",
            Refusal::OptionsEcho => "options_echo",
        }
    }
}

/// The ingress interface's addresses: the errors' source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfAddrs {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// The source of errors to a link-local address (source address
    /// selection prefers the same scope, RFC 6724 rule 2).
    pub v6_link_local: Option<Ipv6Addr>,
}

/// An error ready to send, and whom it goes to (for rate limiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub frame: Vec<u8>,
    pub to: IpAddr,
}

/// The Ethernet header of the reply: back to the frame's source, from the
/// address it was sent to, in the same VLAN. Returns it and where the IP
/// header of `frame` starts.
fn reply_l2(frame: &[u8], ether_type: u16) -> Result<(Vec<u8>, usize), Refusal> {
    if frame.len() < ETH_HLEN {
        return Err(Refusal::Malformed);
    }
    let mut l2 = Vec::with_capacity(18);
    l2.extend_from_slice(&frame[6..12]);
    l2.extend_from_slice(&frame[0..6]);
    let mut off = 12;
    if u16::from_be_bytes([frame[12], frame[13]]) == ETH_P_8021Q {
        if frame.len() < ETH_HLEN + 4 {
            return Err(Refusal::Malformed);
        }
        l2.extend_from_slice(&frame[12..16]);
        off = 16;
    }
    l2.extend_from_slice(&ether_type.to_be_bytes());
    Ok((l2, off + 2))
}

/// The error `kind` for `frame` (an Ethernet frame as it arrived), from the
/// interface addresses `ours`; `is_local` names the router's IPv4
/// addresses (a prespecified timestamp's turn).
pub fn error_for(frame: &[u8], kind: ErrorKind, ours: &IfAddrs, is_local: &dyn Fn(Ipv4Addr) -> bool) -> Result<Reply, Refusal> {
    match ethernet_payload(frame).ok_or(Refusal::Malformed)?.0 {
        ETH_P_IP => error_v4(frame, kind, ours.v4.ok_or(Refusal::NoSourceAddress)?, is_local),
        ETH_P_IPV6 => error_v6(frame, kind, ours),
        _ => Err(Refusal::Malformed),
    }
}

fn v4_source_ok(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() || a.octets()[0] >= 240)
}

fn error_v4(frame: &[u8], kind: ErrorKind, src: Ipv4Addr, is_local: &dyn Fn(Ipv4Addr) -> bool) -> Result<Reply, Refusal> {
    let (mut out, l3) = reply_l2(frame, ETH_P_IP)?;
    let ip = frame.get(l3..).ok_or(Refusal::Malformed)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err(Refusal::Malformed);
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    // `ip_rcv_core` drops a bad header (options included) before any error.
    if ihl < 20 || tot_len < ihl || ip.len() < ihl || !checksum::verifies(&ip[..ihl]) {
        return Err(Refusal::Malformed);
    }
    let orig_src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    if !v4_source_ok(orig_src) {
        return Err(Refusal::NotUnicastSource);
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return Err(Refusal::LaterFragment);
    }
    if ip[9] == IPPROTO_ICMP {
        // `icmp_send`: the type as the header's length places it, within the
        // packet; none about an error (`icmp_pointers[].error`: unreachable,
        // source quench, redirect, time exceeded, parameter problem, and the
        // unassigned 1, 2, 6, 7, 9, 10), an unknown type (> NR_ICMP_TYPES)
        // or a type it cannot read.
        let icmp_type = *ip[..tot_len.min(ip.len())].get(ihl).ok_or(Refusal::AboutIcmpError)?;
        if matches!(icmp_type, 1..=7 | 9..=12) || icmp_type > 18 {
            return Err(Refusal::AboutIcmpError);
        }
    }
    // The packet as the receive path left it (its options compiled: the
    // record route and timestamp written, `src` being `spec_dst`), and the
    // reply's own options echoed from them.
    let mut quote = ip[..tot_len.min(ip.len())].to_vec();
    let ctx = ip_options::Context {
        ingress: src,
        egress: Ipv4Addr::UNSPECIFIED,
        accept_source_route: false,
        now_ms: ip_options::ms_since_midnight(),
        is_local,
    };
    let options = match ihl > 20 {
        true => {
            let compiled = ip_options::receive_options(&mut quote, &ctx);
            ip_options::echo_options(&quote, &compiled, &ctx).ok_or(Refusal::OptionsEcho)?
        }
        false => Vec::new(),
    };
    let hlen = 20 + options.len();
    quote.truncate(V4_ERROR_MAX - hlen - 8);
    let (icmp_type, code, rest) = kind.v4();
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(&quote);
    let c = checksum::checksum(&icmp).to_be_bytes();
    icmp[2..4].copy_from_slice(&c);
    let total = (hlen + icmp.len()) as u16;
    let mut hdr = vec![0u8; 20];
    hdr[0] = 0x40 | (hlen / 4) as u8;
    // Precedence internetwork control, the packet's TOS bits kept (`icmp_send`).
    hdr[1] = (ip[1] & 0x1e) | 0xc0;
    hdr[2..4].copy_from_slice(&total.to_be_bytes());
    hdr[4..6].copy_from_slice(&next_ip_id().to_be_bytes());
    hdr[8] = 64;
    hdr[9] = IPPROTO_ICMP;
    hdr[12..16].copy_from_slice(&src.octets());
    hdr[16..20].copy_from_slice(&orig_src.octets());
    hdr.extend_from_slice(&options);
    let c = checksum::checksum(&hdr).to_be_bytes();
    hdr[10..12].copy_from_slice(&c);
    out.extend_from_slice(&hdr);
    out.extend_from_slice(&icmp);
    Ok(Reply { frame: out, to: orig_src.into() })
}

fn next_ip_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static ID: AtomicU16 = AtomicU16::new(1);
    ID.fetch_add(1, Ordering::Relaxed)
}

/// The upper-layer protocol of an IPv6 packet and its header's offset,
/// past the extension headers a router may find (RFC 8200 4).
fn v6_upper_layer(ip: &[u8]) -> Option<(u8, usize)> {
    let (mut next, mut off) = (ip[6], 40);
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let len = (*ip.get(off + 1)? as usize + 1) * 8;
                next = *ip.get(off)?;
                off += len;
            }
            44 => {
                // Fragment header: only the first fragment names the upper layer.
                let frag_off = u16::from_be_bytes([*ip.get(off + 2)?, *ip.get(off + 3)?]) >> 3;
                if frag_off != 0 {
                    return Some((44, off));
                }
                next = *ip.get(off)?;
                off += 8;
            }
            _ => return Some((next, off)),
        }
    }
    None
}

fn error_v6(frame: &[u8], kind: ErrorKind, ours: &IfAddrs) -> Result<Reply, Refusal> {
    let (mut out, l3) = reply_l2(frame, ETH_P_IPV6)?;
    let ip = frame.get(l3..).ok_or(Refusal::Malformed)?;
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Err(Refusal::Malformed);
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&ip[8..24]);
    let orig_src = Ipv6Addr::from(a);
    if orig_src.is_unspecified() || orig_src.is_multicast() || orig_src.is_loopback() {
        return Err(Refusal::NotUnicastSource);
    }
    let src = match orig_src.is_unicast_link_local() {
        true => ours.v6_link_local.or(ours.v6),
        false => ours.v6,
    }
    .ok_or(Refusal::NoSourceAddress)?;
    // A jumbogram candidate is quoted whole, as the kernel left it untrimmed.
    let packet = &ip[..ipv6_packet_len(ip).min(ip.len())];
    // `icmp6_send`'s `is_ineligible`: no error about an ICMPv6 error, nor
    // about one whose type is not within the packet; later fragments, and
    // packets whose extension headers run past their end (which show no
    // upper layer), do get errors.
    if let Some((IPPROTO_ICMPV6, off)) = v6_upper_layer(packet) {
        if packet.get(off).is_none_or(|t| *t < 128) {
            return Err(Refusal::AboutIcmpError);
        }
    }
    let mut quote = packet[..packet.len().min(V6_ERROR_MAX - 48)].to_vec();
    if matches!(kind, ErrorKind::TooBig { .. }) {
        // `ip6_forward` has decremented the hop limit when it finds the packet too big.
        quote[7] = quote[7].saturating_sub(1);
    }
    let quote = &quote[..];
    let (icmp_type, code, rest) = kind.v6();
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quote);
    // The pseudo header: source, destination, upper-layer length, next header.
    let mut sum = checksum::sum_be_words(&src.octets(), 0);
    sum = checksum::sum_be_words(&orig_src.octets(), sum);
    sum = checksum::sum_be_words(&(icmp.len() as u32).to_be_bytes(), sum);
    sum = checksum::sum_be_words(&[0, 0, 0, IPPROTO_ICMPV6], sum);
    let c = (!checksum::fold(checksum::sum_be_words(&icmp, sum))).to_be_bytes();
    icmp[2..4].copy_from_slice(&c);
    let mut hdr = [0u8; 40];
    hdr[0] = 0x60;
    hdr[4..6].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
    hdr[6] = IPPROTO_ICMPV6;
    hdr[7] = 64;
    hdr[8..24].copy_from_slice(&src.octets());
    hdr[24..40].copy_from_slice(&orig_src.octets());
    out.extend_from_slice(&hdr);
    out.extend_from_slice(&icmp);
    Ok(Reply { frame: out, to: orig_src.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const US4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const OURS: IfAddrs = IfAddrs { v4: Some(US4), v6: Some(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1)), v6_link_local: Some(US6_LL) };
    const US6_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

    fn eth(ether_type: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn v4_packet(proto: u8, payload_len: usize, ttl: u8, frag: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, ttl, proto, 0, 0, 10, 1, 0, 2, 10, 2, 0, 2];
        p[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        let c = checksum::checksum(&p).to_be_bytes();
        p[10..12].copy_from_slice(&c);
        p.extend((0..payload_len).map(|i| i as u8));
        p
    }

    #[test]
    fn time_exceeded_v4_is_addressed_back_and_checksummed() {
        let f = eth(ETH_P_IP, &v4_packet(17, 100, 1, 0));
        let r = error_for(&f, ErrorKind::TimeExceeded, &OURS, &|_| false).unwrap();
        assert_eq!(r.to, IpAddr::from([10, 1, 0, 2]));
        assert_eq!(&r.frame[0..6], &f[6..12], "to the sender's MAC");
        assert_eq!(&r.frame[6..12], &f[0..6], "from the MAC it was sent to");
        let ip = &r.frame[14..];
        assert!(checksum::verifies(&ip[..20]), "IPv4 header checksum");
        assert_eq!((ip[9], &ip[12..16], &ip[16..20]), (1, &[10, 1, 0, 1][..], &[10, 1, 0, 2][..]));
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
        let icmp = &ip[20..];
        assert_eq!((icmp[0], icmp[1]), (11, 0));
        assert!(checksum::verifies(icmp), "ICMP checksum");
        assert_eq!(&icmp[8..], &f[14..], "the whole (short) packet quoted");
    }

    /// `v4_packet` with `opts` (a multiple of 4 bytes) after its header.
    fn v4_with_options(opts: &[u8], payload_len: usize, ttl: u8) -> Vec<u8> {
        let mut p = v4_packet(17, payload_len, ttl, 0);
        p.splice(20..20, opts.iter().copied());
        p[0] = 0x45 + (opts.len() / 4) as u8;
        p[2..4].copy_from_slice(&((20 + opts.len() + payload_len) as u16).to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&p[..20 + opts.len()]).to_be_bytes();
        p[10..12].copy_from_slice(&c);
        p
    }

    #[test]
    fn an_error_about_options_echoes_them_and_quotes_the_packet_as_received() {
        let rr = [7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let f = eth(ETH_P_IP, &v4_with_options(&rr, 1000, 1));
        let r = error_for(&f, ErrorKind::TooBig { mtu: 1300 }, &OURS, &|_| false).unwrap();
        let ip = &r.frame[14..];
        assert_eq!((ip[0], ip.len()), (0x48, 576), "its options in the header, the quote 12 bytes shorter");
        assert!(checksum::verifies(&ip[..32]));
        assert_eq!(&ip[20..32], &[7, 11, 12, 10, 1, 0, 1, 10, 1, 0, 1, 0], "the record route, and its own address");
        let icmp = &ip[32..];
        assert!(checksum::verifies(icmp));
        let quoted = &icmp[8..];
        assert_eq!(quoted.len(), 576 - 32 - 8);
        assert_eq!(&quoted[20..32], &[7, 11, 8, 10, 1, 0, 1, 0, 0, 0, 0, 1], "the receive path's record");
        assert_eq!(quoted[10..12], f[14 + 10..14 + 12], "its checksum as it came");
        assert_eq!(quoted[32..], f[14 + 32..14 + 32 + quoted.len() - 32]);
        // An echo the kernel cannot make: no error.
        let cut = eth(ETH_P_IP, &v4_with_options(&[7, 9, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8, 1));
        assert_eq!(error_for(&cut, ErrorKind::TimeExceeded, &OURS, &|_| false), Err(Refusal::OptionsEcho));
        // After an EOL, zeros; no options to echo.
        let eol = eth(ETH_P_IP, &v4_with_options(&[0, 0x30, 0x39, 0x3a], 8, 1));
        let r = error_for(&eol, ErrorKind::TimeExceeded, &OURS, &|_| false).unwrap();
        assert_eq!(r.frame[14], 0x45);
        assert_eq!(r.frame[14 + 28 + 20..14 + 28 + 24], [0, 0, 0, 0]);
    }

    #[test]
    fn frag_needed_carries_the_mtu_and_quotes_at_most_576_bytes() {
        let f = eth(ETH_P_IP, &v4_packet(6, 1380, 64, 0x4000));
        let r = error_for(&f, ErrorKind::TooBig { mtu: 1300 }, &OURS, &|_| false).unwrap();
        let ip = &r.frame[14..];
        assert_eq!(ip.len(), 576, "RFC 1812: at most 576 bytes");
        let icmp = &ip[20..];
        assert_eq!((icmp[0], icmp[1], u16::from_be_bytes([icmp[6], icmp[7]])), (3, 4, 1300));
        assert!(checksum::verifies(icmp));
        assert_eq!(&icmp[8..], &f[14..14 + 548]);
    }

    #[test]
    fn no_error_about_errors_fragments_or_group_sources() {
        let mut icmp_err = v4_packet(1, 36, 1, 0);
        icmp_err[20] = 11;
        assert_eq!(error_for(&eth(ETH_P_IP, &icmp_err), ErrorKind::TimeExceeded, &OURS, &|_| false), Err(Refusal::AboutIcmpError));
        let mut echo = v4_packet(1, 36, 1, 0);
        echo[20] = 8;
        assert!(error_for(&eth(ETH_P_IP, &echo), ErrorKind::TimeExceeded, &OURS, &|_| false).is_ok(), "an echo request gets one");
        for unassigned in [1, 2, 6, 7, 9, 10] {
            let mut p = v4_packet(1, 36, 1, 0);
            p[20] = unassigned;
            let r = error_for(&eth(ETH_P_IP, &p), ErrorKind::TimeExceeded, &OURS, &|_| false);
            assert_eq!(r, Err(Refusal::AboutIcmpError), "type {unassigned}: an error to icmp_pointers");
        }
        let mut unknown = v4_packet(1, 36, 1, 0);
        unknown[20] = 19;
        assert_eq!(
            error_for(&eth(ETH_P_IP, &unknown), ErrorKind::TimeExceeded, &OURS, &|_| false),
            Err(Refusal::AboutIcmpError),
            "type > 18"
        );
        let mut bad_sum = echo.clone();
        bad_sum[10] ^= 1;
        assert_eq!(
            error_for(&eth(ETH_P_IP, &bad_sum), ErrorKind::TimeExceeded, &OURS, &|_| false),
            Err(Refusal::Malformed),
            "a bad header"
        );
        assert_eq!(
            error_for(&eth(ETH_P_IP, &v4_packet(17, 8, 1, 0x0010)), ErrorKind::TimeExceeded, &OURS, &|_| false),
            Err(Refusal::LaterFragment)
        );
        let from = |src: [u8; 4]| {
            let mut p = v4_packet(17, 8, 1, 0);
            p[12..16].copy_from_slice(&src);
            p[10..12].fill(0);
            let c = checksum::checksum(&p[..20]).to_be_bytes();
            p[10..12].copy_from_slice(&c);
            p
        };
        let bcast = from([255; 4]);
        assert_eq!(error_for(&eth(ETH_P_IP, &bcast), ErrorKind::TimeExceeded, &OURS, &|_| false), Err(Refusal::NotUnicastSource));
        let bcast = from([224, 0, 0, 5]);
        assert_eq!(error_for(&eth(ETH_P_IP, &bcast), ErrorKind::TimeExceeded, &OURS, &|_| false), Err(Refusal::NotUnicastSource));
        let none = IfAddrs::default();
        assert_eq!(
            error_for(&eth(ETH_P_IP, &v4_packet(17, 8, 1, 0)), ErrorKind::NoRoute, &none, &|_| false),
            Err(Refusal::NoSourceAddress)
        );
    }

    fn v6_packet(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 1];
        p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2).octets());
        p.extend_from_slice(&Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 2).octets());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn packet_too_big_v6_with_pseudo_header_checksum_and_1280_limit() {
        let f = eth(ETH_P_IPV6, &v6_packet(17, &[7u8; 1400]));
        let r = error_for(&f, ErrorKind::TooBig { mtu: 1300 }, &OURS, &|_| false).unwrap();
        let ip = &r.frame[14..];
        assert_eq!(ip.len(), 1280, "RFC 4443: at most the minimum MTU");
        assert_eq!((ip[6], ip[7]), (58, 64));
        assert_eq!(ip[48 + 7], 0, "the quote's hop limit as ip6_forward left it (1, decremented)");
        let icmp = &ip[40..];
        assert_eq!((icmp[0], icmp[1], u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]])), (2, 0, 1300));
        let mut sum = checksum::sum_be_words(&ip[8..40], 0);
        sum = checksum::sum_be_words(&(icmp.len() as u32).to_be_bytes(), sum);
        sum = checksum::sum_be_words(&[0, 0, 0, 58], sum);
        assert_eq!(checksum::fold(checksum::sum_be_words(icmp, sum)), 0xffff, "ICMPv6 checksum");
        // An ICMPv6 error behind a destination-options header is still an error.
        let mut ext = vec![58, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            error_for(&eth(ETH_P_IPV6, &v6_packet(60, &ext)), ErrorKind::TimeExceeded, &OURS, &|_| false),
            Err(Refusal::AboutIcmpError)
        );
        let echo = [128u8, 0, 0, 0, 0, 0, 0, 0];
        assert!(error_for(&eth(ETH_P_IPV6, &v6_packet(58, &echo)), ErrorKind::TimeExceeded, &OURS, &|_| false).is_ok());
    }

    #[test]
    fn a_vlan_tag_is_kept_in_the_reply() {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0, 0, 100, 0x08, 0];
        f.extend_from_slice(&v4_packet(17, 8, 1, 0));
        let r = error_for(&f, ErrorKind::TimeExceeded, &OURS, &|_| false).unwrap();
        assert_eq!(&r.frame[12..18], &[0x81, 0, 0, 100, 0x08, 0]);
    }

    proptest! {
        /// Whatever bytes arrive, the builder answers or refuses; it never
        /// panics, and what it sends is within the RFC limits.
        #[test]
        fn arbitrary_frames_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..1600), v6 in any::<bool>(), reason in 0u8..18) {
            let mut f = frame;
            if f.len() > 14 {
                let t = if v6 { ETH_P_IPV6 } else { ETH_P_IP };
                f[12..14].copy_from_slice(&t.to_be_bytes());
            }
            if let Some(kind) = ErrorKind::for_reason(Reason::from_u8(reason).unwrap(), 1300) {
                if let Ok(r) = error_for(&f, kind, &OURS, &|_| false) {
                    prop_assert!(r.frame.len() <= 18 + V6_ERROR_MAX);
                }
            }
        }

        /// Any IPv4 options behind a valid header checksum (the receive
        /// path's compile and the echo run on them): an error or a refusal,
        /// never a panic; an error's header is as long as it says, checksummed,
        /// and at most 576 bytes in all.
        #[test]
        fn arbitrary_options_are_echoed_or_refused_without_panic(
            opts in proptest::collection::vec(any::<u8>(), 0..=40),
            payload in 0usize..600,
            local in any::<bool>(),
        ) {
            let mut opts = opts;
            opts.truncate(opts.len() / 4 * 4);
            let f = eth(ETH_P_IP, &v4_with_options(&opts, payload, 1));
            match error_for(&f, ErrorKind::TimeExceeded, &OURS, &|_| local) {
                Ok(r) => {
                    let ip = &r.frame[14..];
                    let ihl = (ip[0] & 0x0f) as usize * 4;
                    prop_assert!(ip.len() <= V4_ERROR_MAX && ihl >= 20 && ihl <= 20 + opts.len());
                    prop_assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
                    prop_assert!(checksum::verifies(&ip[..ihl]) && checksum::verifies(&ip[ihl..]));
                }
                Err(refusal) => prop_assert!(matches!(refusal, Refusal::OptionsEcho | Refusal::Malformed), "{refusal:?}"),
            }
        }
    }
}
