//! Frames for the conformance suite: builders (Ethernet with any tags,
//! IPv4 with options, IPv6 with extension headers, UDP/TCP/ICMP carrying
//! the marker), the parser that finds a frame's IP header, the keys that
//! tie a captured frame to the frame that caused it, and the mask rules.

use common::checksum;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The marker's first four bytes; a big-endian sequence number follows.
pub const MAGIC: [u8; 4] = *b"CwRc";
/// UDP ports of every datagram sent (the source's high byte, 0x30, is
/// also the ICMP type such a payload reads as when its protocol is mutated:
/// one no host answers).
pub const UDP_SRC: u16 = 0x3039;
pub const UDP_DST: u16 = 0x3a3a;

pub fn v4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// The 8-byte marker of frame `seq`.
pub fn marker(seq: u32) -> [u8; 8] {
    let mut m = [0; 8];
    m[..4].copy_from_slice(&MAGIC);
    m[4..].copy_from_slice(&seq.to_be_bytes());
    m
}

/// The marker and `len - 8` filler bytes.
pub fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut p = marker(seq).to_vec();
    p.extend((0..len.saturating_sub(8)).map(|i| (i as u8).wrapping_mul(7)));
    p
}

/// The L4 checksum of `l4` (its checksum field zeroed) over the pseudo
/// header of `src`, `dst` (4 or 16 bytes each).
fn l4_checksum(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u16 {
    !checksum::fold(crate::l4_sum(src, dst, proto, l4))
}

/// A UDP datagram whose payload is the marker of `seq` and filler, `len`
/// bytes of payload, checksummed over `src` and `dst`.
pub fn udp(src: &[u8], dst: &[u8], seq: u32, len: usize) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + len);
    u.extend_from_slice(&UDP_SRC.to_be_bytes());
    u.extend_from_slice(&UDP_DST.to_be_bytes());
    u.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(&payload(seq, len));
    let c = l4_checksum(src, dst, 17, &u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// A TCP SYN carrying the marker of `seq` as data.
pub fn tcp_syn(src: &[u8], dst: &[u8], seq: u32) -> Vec<u8> {
    let mut t = crate::tcp(src, dst, common::proto::TCP_FLAG_SYN, &crate::mss_option(1460));
    t.extend_from_slice(&payload(seq, 16));
    t[16..18].fill(0);
    let c = l4_checksum(src, dst, 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// An ICMP echo request (IPv4: no pseudo header) with the marker.
pub fn icmp_echo(seq: u32) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0, 0x43, 0x57, (seq >> 8) as u8, seq as u8];
    m.extend_from_slice(&payload(seq, 24));
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An ICMPv6 echo request with the marker.
pub fn icmpv6_echo(src: &[u8; 16], dst: &[u8; 16], seq: u32) -> Vec<u8> {
    let mut m = vec![128, 0, 0, 0, 0x43, 0x57, (seq >> 8) as u8, seq as u8];
    m.extend_from_slice(&payload(seq, 24));
    let c = l4_checksum(src, dst, 58, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An IPv4 header's fields; [`Ip4::packet`] adds lengths and the checksum.
#[derive(Debug, Clone)]
pub struct Ip4 {
    pub tos: u8,
    pub id: u16,
    /// Flags and fragment offset (DF by default).
    pub frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// Options, a multiple of 4 bytes.
    pub opts: Vec<u8>,
}

impl Ip4 {
    pub fn new(src: [u8; 4], dst: [u8; 4], id: u16) -> Ip4 {
        Ip4 { tos: 0, id, frag: common::proto::IP_DF, ttl: 64, proto: 17, src, dst, opts: Vec::new() }
    }

    /// The header and `l4`, with a right total length and checksum.
    pub fn packet(&self, l4: &[u8]) -> Vec<u8> {
        assert!(self.opts.len().is_multiple_of(4) && self.opts.len() <= 40);
        let ihl = 20 + self.opts.len();
        let mut p = vec![(0x40 | (ihl / 4)) as u8, self.tos];
        p.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.frag.to_be_bytes());
        p.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        p.extend_from_slice(&self.src);
        p.extend_from_slice(&self.dst);
        p.extend_from_slice(&self.opts);
        let c = checksum::checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(l4);
        p
    }

    /// A UDP packet with the marker of `seq` and `len` bytes of payload.
    pub fn udp(&self, seq: u32, len: usize) -> Vec<u8> {
        Ip4 { proto: 17, ..self.clone() }.packet(&udp(&self.src, &self.dst, seq, len))
    }
}

/// An IPv6 header's fields; [`Ip6::packet`] adds the payload length.
#[derive(Debug, Clone)]
pub struct Ip6 {
    pub tclass: u8,
    /// 20 bits.
    pub flow: u32,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

impl Ip6 {
    pub fn new(src: [u8; 16], dst: [u8; 16], flow: u32) -> Ip6 {
        Ip6 { tclass: 0, flow: flow & 0xf_ffff, hop_limit: 64, src, dst }
    }

    /// The header (next header `next`) and `rest` (extension headers and L4).
    pub fn packet(&self, next: u8, rest: &[u8]) -> Vec<u8> {
        let w = 6u32 << 28 | (self.tclass as u32) << 20 | self.flow;
        let mut p = w.to_be_bytes().to_vec();
        p.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, self.hop_limit]);
        p.extend_from_slice(&self.src);
        p.extend_from_slice(&self.dst);
        p.extend_from_slice(rest);
        p
    }

    /// A UDP packet with the marker of `seq`, behind extension headers
    /// `ext` (whose first header is `first`, their last next header UDP).
    pub fn udp_behind(&self, first: u8, ext: &[u8], seq: u32, len: usize) -> Vec<u8> {
        let mut rest = ext.to_vec();
        rest.extend_from_slice(&udp(&self.src, &self.dst, seq, len));
        self.packet(if ext.is_empty() { 17 } else { first }, &rest)
    }

    pub fn udp(&self, seq: u32, len: usize) -> Vec<u8> {
        self.udp_behind(17, &[], seq, len)
    }
}

/// An Ethernet frame around `l3` behind `tags` (TPID, TCI), outermost first.
pub fn eth_tagged(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], ether_type: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * tags.len() + l3.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// Where a frame's network header starts and its EtherType, past any
/// number of 802.1Q / 802.1ad tags.
pub fn l3_of(f: &[u8]) -> Option<(usize, u16)> {
    let mut off = 12;
    loop {
        let t = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
        if t == 0x8100 || t == 0x88a8 {
            off += 4;
        } else {
            return Some((off + 2, t));
        }
    }
}

/// What ties a frame to the frame that caused it, besides the marker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// IPv4 source, destination, ID and protocol.
    V4([u8; 4], [u8; 4], u16, u8),
    /// IPv6 source, destination and flow label.
    V6([u8; 16], [u8; 16], u32),
    /// Source and destination alone (IPv4 ones v4-mapped).
    Pair([u8; 16], [u8; 16]),
}

fn mapped(a: &[u8]) -> [u8; 16] {
    if a.len() == 16 {
        return a.try_into().unwrap();
    }
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(a);
    m
}

/// An IP header at `ip`'s start: its exact key and its address pair.
fn header_keys(ip: &[u8], ether_type: u16) -> Option<(Key, [u8; 16], [u8; 16])> {
    match ether_type {
        0x0800 if ip.len() >= 20 && ip[0] >> 4 == 4 => {
            let (s, d): ([u8; 4], [u8; 4]) = (ip[12..16].try_into().unwrap(), ip[16..20].try_into().unwrap());
            Some((Key::V4(s, d, u16::from_be_bytes([ip[4], ip[5]]), ip[9]), mapped(&s), mapped(&d)))
        }
        0x86dd if ip.len() >= 40 && ip[0] >> 4 == 6 => {
            let (s, d): ([u8; 16], [u8; 16]) = (ip[8..24].try_into().unwrap(), ip[24..40].try_into().unwrap());
            let flow = u32::from_be_bytes([0, ip[1] & 0x0f, ip[2], ip[3]]);
            Some((Key::V6(s, d, flow), s, d))
        }
        _ => None,
    }
}

/// The keys a frame sent by gen is known by: exact, then its address pair.
pub fn sent_keys(f: &[u8]) -> Vec<Key> {
    let Some((off, et)) = l3_of(f) else { return Vec::new() };
    match header_keys(&f[off..], et) {
        Some((k, s, d)) => vec![k, Key::Pair(s, d)],
        None => Vec::new(),
    }
}

/// Where the packet an ICMP or ICMPv6 error quotes starts in `ip` (the
/// error's IP packet), and its EtherType.
fn quoted(ip: &[u8], ether_type: u16) -> Option<(usize, u16)> {
    match ether_type {
        0x0800 if ip.len() >= 20 && ip[9] == 1 => {
            let ihl = (ip[0] & 15) as usize * 4;
            matches!(ip.get(ihl)?, 3 | 11 | 12).then_some((ihl + 8, 0x0800))
        }
        0x86dd if ip.len() >= 48 && ip[6] == 58 => matches!(ip[40], 1..=4).then_some((48, 0x86dd)),
        _ => None,
    }
}

/// The keys to look a captured frame's cause up by, best first: its own
/// header, the header it quotes (an ICMP error), the address pairs of
/// both, and its own pair reversed (a reply).
pub fn captured_keys(f: &[u8]) -> Vec<Key> {
    let Some((off, et)) = l3_of(f) else { return Vec::new() };
    let ip = &f[off..];
    let Some((outer, s, d)) = header_keys(ip, et) else { return Vec::new() };
    let inner = quoted(ip, et).and_then(|(q, qet)| header_keys(ip.get(q..)?, qet));
    let mut keys = vec![outer];
    if let Some((k, ..)) = &inner {
        keys.push(k.clone());
    }
    if let Some((_, is, id)) = inner {
        keys.push(Key::Pair(is, id));
    }
    keys.push(Key::Pair(s, d));
    keys.push(Key::Pair(d, s));
    keys
}

/// The sequence number in the first marker `f` carries.
pub fn marker_seq(f: &[u8]) -> Option<u32> {
    let at = memchr::memmem::find(f, &MAGIC)?;
    let b = f.get(at + 4..at + 8)?;
    Some(u32::from_be_bytes(b.try_into().unwrap()))
}

/// The mask rules: fields of a captured frame that legitimately differ
/// between runs are zeroed before frames are compared (README, "Conformance
/// with Linux"):
///
/// 1. An IPv4 packet from one of rtr's own addresses (`ours`: an ICMP error
///    or reply, a TCP reset): its IP ID and header checksum. Linux takes
///    the ID from a hashed per-destination counter that moves from one run
///    to the next (even between two Linux runs); cowroute's slow path
///    numbers its own.
/// 2. The IPv4 timestamp option (type 68), in the packet and in the packet
///    an ICMP error quotes: every timestamp value, with the header checksum
///    (and, when quoted, the ICMP checksum). Each router stamps its own
///    clock, milliseconds since midnight.
/// 3. An ICMPv6 error from one of rtr's addresses (`ours6`): its flow
///    label. Linux fills it from a per-boot hash of the flow
///    (auto_flowlabels); there is nothing to reproduce.
pub fn mask(f: &mut [u8], ours: &[[u8; 4]], ours6: &[[u8; 16]]) {
    let Some((off, et)) = l3_of(f) else { return };
    let ip = &mut f[off..];
    if et == 0x0800 && ip.len() >= 20 && ip[0] >> 4 == 4 {
        let from_us = ip[12] == 127 || ours.iter().any(|a| ip[12..16] == *a);
        let ts = mask_timestamps(ip);
        if from_us || ts {
            ip[10..12].fill(0);
        }
        if from_us {
            ip[4..6].fill(0);
        }
        if let Some((q, _)) = quoted(ip, et) {
            let ihl = (ip[0] & 15) as usize * 4;
            if ip.len() >= q + 20 && ip[q] >> 4 == 4 && mask_timestamps(&mut ip[q..]) {
                ip[q + 10..q + 12].fill(0);
                ip[ihl + 2..ihl + 4].fill(0);
            }
        }
    } else if et == 0x86dd && ip.len() >= 48 && quoted(ip, et).is_some() && ours6.iter().any(|a| ip[8..24] == *a) {
        ip[1] &= 0xf0;
        ip[2..4].fill(0);
    }
}

/// Zeroes the timestamp values of a timestamp option in the IPv4 header at
/// `ip`'s start; true when it had one.
fn mask_timestamps(ip: &mut [u8]) -> bool {
    let ihl = ((ip[0] & 15) as usize * 4).min(ip.len());
    let mut i = 20;
    let mut found = false;
    while i < ihl {
        match ip[i] {
            0 => break,
            1 => i += 1,
            t => {
                let Some(&len) = ip.get(i + 1) else { break };
                let len = len as usize;
                if len < 2 || i + len > ihl {
                    break;
                }
                if t == 68 && len >= 4 {
                    found = true;
                    let flag = ip[i + 3] & 15;
                    // Flag 0: timestamps only; 1 and 3: address, timestamp pairs.
                    let (first, step) = if flag == 0 { (4, 4) } else { (8, 8) };
                    let mut at = first;
                    while at + 4 <= len {
                        ip[i + at..i + at + 4].fill(0);
                        at += step;
                    }
                }
                i += len;
            }
        }
    }
    found
}

/// A frame as hex, in one line.
pub fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short reading of a captured frame: family, addresses, protocol or
/// ICMP type/code, TTL, length.
pub fn describe(f: &[u8]) -> String {
    let Some((off, et)) = l3_of(f) else { return format!("{} bytes, no L3", f.len()) };
    let ip = &f[off..];
    let tags = if off > 14 { format!(" tagged({})", (off - 14) / 4) } else { String::new() };
    match et {
        0x0800 if ip.len() >= 20 => {
            let (s, d) =
                (Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()), Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()));
            let ihl = (ip[0] & 15) as usize * 4;
            let what = match (ip[9], ip.get(ihl), ip.get(ihl + 1)) {
                (1, Some(t), Some(c)) => format!("ICMP {t}/{c}"),
                (p, ..) => format!("proto {p}"),
            };
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            format!("IPv4{tags} {s} > {d} {what} ttl {} len {} frag {frag:#06x}", ip[8], u16::from_be_bytes([ip[2], ip[3]]))
        }
        0x86dd if ip.len() >= 40 => {
            let (s, d) =
                (Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()), Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()));
            let what = match (ip[6], ip.get(40), ip.get(41)) {
                (58, Some(t), Some(c)) => format!("ICMPv6 {t}/{c}"),
                (n, ..) => format!("next header {n}"),
            };
            format!("IPv6{tags} {s} > {d} {what} hlim {} plen {}", ip[7], u16::from_be_bytes([ip[4], ip[5]]))
        }
        t => format!("EtherType {t:#06x}{tags}, {} bytes", f.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_packet_is_found_by_marker_and_keys() {
        let ip = Ip4::new(v4("10.128.0.1"), v4("10.50.0.1"), 7).udp(0x01020304, 32);
        assert!(checksum::verifies(&ip[..20]));
        let f = eth_tagged([2; 6], [4; 6], &[(0x8100, 100)], 0x0800, &ip);
        assert_eq!(l3_of(&f), Some((18, 0x0800)));
        assert_eq!(marker_seq(&f), Some(0x01020304));
        assert_eq!(sent_keys(&f)[0], Key::V4(v4("10.128.0.1"), v4("10.50.0.1"), 7, 17));
        let p6 = Ip6::new(v6("fd00:11::1"), v6("fd00:50::1"), 0x12345).udp(9, 16);
        assert_eq!(u16::from_be_bytes([p6[4], p6[5]]), 24);
        assert_eq!(sent_keys(&eth_tagged([2; 6], [4; 6], &[], 0x86dd, &p6))[0], Key::V6(v6("fd00:11::1"), v6("fd00:50::1"), 0x12345));
    }

    #[test]
    fn timestamps_and_our_ids_are_masked() {
        let mut ip = Ip4::new(v4("10.1.0.1"), v4("10.1.0.2"), 0x4242);
        ip.opts = vec![68, 12, 5, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut f = eth_tagged([2; 6], [4; 6], &[], 0x0800, &ip.udp(1, 8));
        mask(&mut f, &[v4("10.1.0.1")], &[]);
        let h = &f[14..];
        assert_eq!(&h[4..6], &[0, 0]);
        assert_eq!(&h[10..12], &[0, 0]);
        assert_eq!(&h[24..32], &[0; 8]);
    }
}
