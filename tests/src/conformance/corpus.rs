//! The generated corpus: valid base frames (UDP, TCP SYN, ICMP echo; IPv4
//! and IPv6) whose header fields are mutated at random by a seeded
//! generator, the same frames on every run. Each frame's name lists what
//! was chosen and mutated (`corpus 123: v4 udp src=loopback dst=routed
//! ttl=1 csum=bad`), the tokens a known difference can name.
//!
//! Two things are kept out so that the kernel's answer stays a function of
//! the frame alone: a frame that draws an `ip_error` ICMP (unreachable,
//! prohibit, no route) always has a source of its own (Linux's per-source
//! limiter of those errors is global and left alone); and frames to rtr's
//! own addresses are never fragments (a reassembly queue would outlive the
//! run and tie frames together).

use super::{
    cases::{own_src4, own_src6, BROADCAST_MAC, MULTICAST_MAC_V4, MULTICAST_MAC_V6, OTHER_MAC},
    frames::{eth_tagged, icmp_echo, icmpv6_echo, tcp_syn, udp, v4, v6, Ip4, Ip6},
    runner::Env,
    Case,
};
use crate::synthetic::Rng;
use xtask::lab;

/// The corpus's seed: the same frames on every run.
pub const SEED: u64 = 0x1313_c0a5_7e57;

struct Gen {
    rng: Rng,
}

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }
    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn byte(&mut self) -> u8 {
        self.rng.next_u64() as u8
    }
    /// One of `items` with weights.
    /// One of `items` (several lists read as one) with weights.
    fn weighted<T: Copy>(&mut self, items: &[&[(u64, T)]]) -> T {
        let total: u64 = items.iter().flat_map(|l| l.iter()).map(|(w, _)| w).sum();
        let mut r = self.below(total);
        for (w, t) in items.iter().flat_map(|l| l.iter()) {
            if r < *w {
                return *t;
            }
            r -= w;
        }
        unreachable!()
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Kinds of destination, and what rtr does with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dst {
    Routed,
    Mtu,
    Local,
    Blackhole,
    Unreachable,
    Prohibit,
    NoRoute,
    /// Any special address of the family (martian, group, broadcast, scoped).
    Special(&'static str, &'static str),
}

impl Dst {
    fn tag(self) -> &'static str {
        match self {
            Dst::Routed => "routed",
            Dst::Mtu => "mtu",
            Dst::Local => "local",
            Dst::Blackhole => "blackhole",
            Dst::Unreachable => "unreachable",
            Dst::Prohibit => "prohibit",
            Dst::NoRoute => "noroute",
            Dst::Special(t, _) => t,
        }
    }
    /// Linux answers it through `ip_error` (IPv4).
    fn draws_ip_error(self) -> bool {
        matches!(
            self,
            Dst::Unreachable | Dst::Prohibit | Dst::NoRoute | Dst::Special("classe-unrouted" | "linklocal" | "doc" | "zeronet", _)
        )
    }
    /// Delivered to rtr itself (or might be): no fragments to it.
    fn local_ish(self) -> bool {
        matches!(self, Dst::Local | Dst::Special("lbcast" | "dbcast" | "netaddr" | "allnodes" | "allhosts", _))
    }
}

const SRC4: &[(&str, &str)] = &[
    ("loopback", "127.0.0.1"),
    ("loopback2", "127.9.9.9"),
    ("zeronet", "0.1.2.3"),
    ("zero", "0.0.0.0"),
    ("multicast", "224.0.0.5"),
    ("lbcast", "255.255.255.255"),
    ("classe", "240.0.0.1"),
    ("rtr-gen", lab::RTR_GEN_V4),
    ("rtr-sink", lab::RTR_SINK_V4),
    ("sink-subnet", super::runner::SPOOF_SINK_V4),
    ("gen", lab::GEN_V4),
    ("linklocal", "169.254.1.1"),
    ("doc", "192.0.2.1"),
    ("subnet-bcast", "10.1.0.255"),
];

/// The destinations by what rtr's routes do with them, either family.
const BY_ROUTE: &[(u64, Dst)] =
    &[(40, Dst::Routed), (8, Dst::Mtu), (8, Dst::Local), (4, Dst::Blackhole), (4, Dst::Unreachable), (4, Dst::Prohibit), (4, Dst::NoRoute)];

/// IPv4 special destinations (with [`BY_ROUTE`]).
const DST4: &[(u64, Dst)] = &[
    (3, Dst::Special("classe-routed", "240.1.0.9")),
    (2, Dst::Special("classe-unrouted", "250.0.0.9")),
    (3, Dst::Special("multicast", "239.1.2.3")),
    (1, Dst::Special("allhosts", "224.0.0.1")),
    (3, Dst::Special("lbcast", "255.255.255.255")),
    (3, Dst::Special("dbcast", "10.2.0.255")),
    (1, Dst::Special("netaddr", "10.2.0.0")),
    (3, Dst::Special("loopback", "127.0.0.1")),
    (2, Dst::Special("zeronet", "0.1.2.3")),
    (1, Dst::Special("zero", "0.0.0.0")),
    (2, Dst::Special("linklocal", "169.254.1.1")),
    (1, Dst::Special("doc", "198.51.100.7")),
];

const SRC6: &[(&str, &str)] = &[
    ("loopback", "::1"),
    ("unspecified", "::"),
    ("multicast", "ff02::1"),
    ("multicast-global", "ff0e::1"),
    ("v4mapped", "::ffff:10.1.0.2"),
    ("linklocal", "fe80::1"),
    ("sitelocal", "fec0::1"),
    ("ula", "fd12:3456::1"),
    ("doc", "2001:db8::1"),
    ("rtr-gen", lab::RTR_GEN_V6),
    ("rtr-sink", lab::RTR_SINK_V6),
    ("sink-subnet", super::runner::SPOOF_SINK_V6),
    ("gen", lab::GEN_V6),
];

/// IPv6 special destinations (with [`BY_ROUTE`]).
const DST6: &[(u64, Dst)] = &[
    (3, Dst::Special("multicast-global", "ff0e::1")),
    (2, Dst::Special("allnodes", "ff02::1")),
    (2, Dst::Special("loopback", "::1")),
    (2, Dst::Special("unspecified", "::")),
    (2, Dst::Special("v4mapped", "::ffff:10.50.0.1")),
    (2, Dst::Special("linklocal", "fe80::1234")),
    (2, Dst::Special("sitelocal", "fec0::1")),
    (2, Dst::Special("doc", "2001:db8::1")),
];

/// IPv4 options a frame may carry (each a multiple of 4 bytes).
const OPTIONS4: &[(&str, &[u8])] = &[
    ("nops", &[1, 1, 1, 1]),
    ("rr", &[7, 7, 4, 0, 0, 0, 0, 1]),
    ("ts", &[68, 8, 5, 0, 0, 0, 0, 0]),
    ("ra", &[148, 4, 0, 0]),
    ("lsrr", &[131, 7, 4, 10, 2, 0, 3, 0]),
    ("badlen", &[7, 2, 0, 0]),
    ("unknown", &[25, 4, 0, 0]),
    ("eol", &[0, 0, 0, 0]),
];

/// IPv6 extension headers a frame may carry in front of its L4 header:
/// (tag, next header of the extension, its bytes with next header 0xff
/// to be filled), and whether it is a fragment header.
const EXT6: &[(&str, u8, &[u8])] = &[
    ("hbh-padn", 0, &[0xff, 0, 1, 4, 0, 0, 0, 0]),
    ("hbh-ra", 0, &[0xff, 0, 5, 2, 0, 0, 1, 0]),
    ("hbh-unknown-skip", 0, &[0xff, 0, 0x1e, 2, 0, 0, 1, 0]),
    ("hbh-unknown-icmp", 0, &[0xff, 0, 0x9e, 2, 0, 0, 1, 0]),
    ("dstopt", 60, &[0xff, 0, 1, 4, 0, 0, 0, 0]),
    ("rt0", 43, &[0xff, 0, 0, 0, 0, 0, 0, 0]),
    ("rt4", 43, &[0xff, 0, 4, 0, 0, 0, 0, 0]),
    ("frag-atomic", 44, &[0xff, 0, 0, 0, 0, 0, 0, 9]),
    ("frag-first", 44, &[0xff, 0, 0, 1, 0, 0, 0, 9]),
];

/// `n` frames numbered from `first_seq` (their markers, IPv4 IDs and IPv6
/// flow labels), from `seed`.
pub fn generate(env: &Env, seed: u64, first_seq: u32, n: usize) -> Vec<Case> {
    let mut g = Gen { rng: Rng::new(seed) };
    (0..n as u32)
        .map(|i| {
            let seq = first_seq + i;
            let mut tags: Vec<String> = Vec::new();
            let l3 = if g.pct(60) { frame_v4(&mut g, env, seq, &mut tags) } else { frame_v6(&mut g, env, seq, &mut tags) };
            let frame = layer2(&mut g, env, l3, &mut tags);
            Case { name: format!("corpus {seq}: {}", tags.join(" ")), frame }
        })
        .collect()
}

/// The L4 of a base frame: UDP (most), TCP SYN, ICMP echo.
fn base_l4(g: &mut Gen, src: &[u8], dst: &[u8], seq: u32, v6: bool, tags: &mut Vec<String>) -> (u8, Vec<u8>) {
    match g.below(100) {
        0..=69 => {
            let len = if g.pct(6) { 1200 + g.below(260) as usize } else { 8 + g.below(64) as usize };
            tags.push(format!("udp{len}"));
            (17, udp(src, dst, seq, len))
        }
        70..=84 => {
            tags.push("tcp".into());
            (6, tcp_syn(src, dst, seq))
        }
        _ => {
            tags.push("icmp".into());
            match v6 {
                false => (1, icmp_echo(seq)),
                true => (58, icmpv6_echo(src.try_into().unwrap(), dst.try_into().unwrap(), seq)),
            }
        }
    }
}

fn frame_v4(g: &mut Gen, env: &Env, seq: u32, tags: &mut Vec<String>) -> Vec<u8> {
    tags.push("v4".into());
    let (src_tag, src) = if g.pct(70) { ("own", own_src4(seq)) } else { g.pick(SRC4).map_second(v4) };
    let mut dst = g.weighted(&[BY_ROUTE, DST4]);
    if src_tag != "own" && dst.draws_ip_error() {
        dst = Dst::Routed;
    }
    let r = g.rng.next_u64() as u32;
    let dst_addr = match dst {
        Dst::Routed => [10, 50, (r >> 8) as u8, r as u8],
        Dst::Mtu => [10, 51, (r >> 8) as u8, r as u8],
        Dst::Local => *env.rtr_v4.get((r % 2) as usize).unwrap(),
        Dst::Blackhole => [10, 52, 0, r as u8],
        Dst::Unreachable => [10, 53, 0, r as u8],
        Dst::Prohibit => [10, 54, 0, r as u8],
        Dst::NoRoute => [10, 99, (r >> 8) as u8, r as u8],
        Dst::Special(_, a) => v4(a),
    };
    tags.push(format!("src={src_tag}"));
    tags.push(format!("dst={}", dst.tag()));
    let (proto, l4) = base_l4(g, &src, &dst_addr, seq, false, tags);
    let mut ip = Ip4 { proto, ..Ip4::new(src, dst_addr, seq as u16) };
    if g.pct(20) {
        let b = g.byte();
        ip.ttl = g.pick(&[0, 1, 1, 2, b]);
        tags.push(format!("ttl={}", ip.ttl));
    }
    if g.pct(8) {
        ip.tos = g.byte();
        tags.push(format!("tos={:#04x}", ip.tos));
    }
    if g.pct(12) && !dst.local_ish() {
        let r = g.rng.next_u64() as u16;
        ip.frag = g.pick(&[0, 0x2000, 0x0010, 0x2010, 0x8000, r]);
        tags.push(format!("frag={:#06x}", ip.frag));
    }
    if g.pct(4) {
        ip.id = g.rng.next_u64() as u16;
        tags.push("id=random".into());
    }
    if g.pct(8) {
        let (t, o) = g.pick(OPTIONS4);
        ip.opts = o.to_vec();
        tags.push(format!("opt={t}"));
    }
    let mut p = ip.packet(&l4);
    if g.pct(5) {
        let b = g.byte();
        p[9] = g.pick(&[1, 2, 4, 6, 17, 41, 47, 50, 58, 132, 253, b]);
        tags.push(format!("proto={}", p[9]));
    }
    if g.pct(3) {
        p[0] = g.byte() & 0xf0 | (p[0] & 0x0f);
        tags.push(format!("version={}", p[0] >> 4));
    }
    if g.pct(4) {
        p[0] = (p[0] & 0xf0) | (g.byte() & 0x0f);
        tags.push(format!("ihl={}", p[0] & 15));
    }
    if g.pct(8) {
        let len = p.len() as u64;
        let tot = match g.below(4) {
            0 => len + 1 + g.below(100),
            1 => len.saturating_sub(1 + g.below(len)),
            2 => (p[0] as u64 & 15) * 4,
            _ => g.rng.next_u64() & 0xffff,
        } as u16;
        p[2..4].copy_from_slice(&tot.to_be_bytes());
        tags.push(format!("totlen={tot}"));
    }
    crate::fix_ipv4_checksum(&mut p);
    if g.pct(6) {
        p[10] ^= 1 + g.byte() % 255;
        tags.push("csum=bad".into());
    }
    p
}

fn frame_v6(g: &mut Gen, env: &Env, seq: u32, tags: &mut Vec<String>) -> Vec<u8> {
    tags.push("v6".into());
    let (src_tag, src) = match g.below(100) {
        0..=69 => ("own", own_src6(seq)),
        70..=72 => ("gen-ll", env.gen_ll),
        _ => g.pick(SRC6).map_second(v6),
    };
    let dst = g.weighted(&[BY_ROUTE, DST6]);
    let r = g.rng.next_u64() as u16;
    let mut dst_addr = match dst {
        Dst::Routed => v6("fd00:50::"),
        Dst::Mtu => v6("fd00:51::"),
        Dst::Local => env.rtr_v6[(r % 2) as usize],
        Dst::Blackhole => v6("fd00:52::"),
        Dst::Unreachable => v6("fd00:53::"),
        Dst::Prohibit => v6("fd00:54::"),
        Dst::NoRoute => v6("fd00:99::"),
        Dst::Special(_, a) => v6(a),
    };
    if !matches!(dst, Dst::Local | Dst::Special(..)) {
        dst_addr[14..].copy_from_slice(&r.max(1).to_be_bytes());
    }
    tags.push(format!("src={src_tag}"));
    tags.push(format!("dst={}", dst.tag()));
    let (proto, l4) = base_l4(g, &src, &dst_addr, seq, true, tags);
    let mut ip = Ip6::new(src, dst_addr, seq);
    if g.pct(20) {
        let b = g.byte();
        ip.hop_limit = g.pick(&[0, 1, 1, 2, b]);
        tags.push(format!("hlim={}", ip.hop_limit));
    }
    if g.pct(8) {
        ip.tclass = g.byte();
        tags.push(format!("tclass={:#04x}", ip.tclass));
    }
    if g.pct(3) {
        ip.flow = g.rng.next_u64() as u32 & 0xf_ffff;
        tags.push("flow=random".into());
    }
    let (mut next, mut rest) = (proto, l4);
    if g.pct(12) {
        let (t, nh, bytes) = g.pick(EXT6);
        if !(nh == 44 && dst.local_ish()) {
            let mut ext = bytes.to_vec();
            ext[0] = next;
            ext.extend_from_slice(&rest);
            (next, rest) = (nh, ext);
            tags.push(format!("ext={t}"));
        }
    }
    let mut p = ip.packet(next, &rest);
    if g.pct(4) {
        let b = g.byte();
        let nh = g.pick(&[0, 6, 17, 43, 44, 58, 59, 60, 135, b]);
        if !(nh == 44 && dst.local_ish()) {
            p[6] = nh;
            tags.push(format!("nh={nh}"));
        }
    }
    if g.pct(3) {
        p[0] = g.byte() & 0xf0 | (p[0] & 0x0f);
        tags.push(format!("version={}", p[0] >> 4));
    }
    if g.pct(8) {
        let len = (p.len() - 40) as u64;
        let pl = match g.below(4) {
            0 => len + 1 + g.below(100),
            1 => len.saturating_sub(1 + g.below(len.max(1))),
            2 => 0,
            _ => g.rng.next_u64() & 0xffff,
        } as u16;
        p[4..6].copy_from_slice(&pl.to_be_bytes());
        tags.push(format!("plen={pl}"));
    }
    p
}

/// The Ethernet frame: to rtr's MAC or another (other host, broadcast,
/// multicast), with or without VLAN tags, cut short or extended.
fn layer2(g: &mut Gen, env: &Env, l3: Vec<u8>, tags: &mut Vec<String>) -> Vec<u8> {
    let ether_type = if tags[0] == "v4" { 0x0800 } else { 0x86dd };
    let mut dst_mac = env.rtr_gen_mac;
    if g.pct(8) {
        let (t, m) =
            g.pick(&[("other", OTHER_MAC), ("broadcast", BROADCAST_MAC), ("multicast", MULTICAST_MAC_V4), ("multicast", MULTICAST_MAC_V6)]);
        dst_mac = m;
        tags.push(format!("mac={t}"));
    }
    let mut vlan: &[(u16, u16)] = &[];
    if g.pct(6) {
        let (t, v): (&str, &'static [(u16, u16)]) = g.pick(&[
            ("vid100", &[(0x8100, 100)]),
            ("vid0", &[(0x8100, 0)]),
            ("vid0-pcp3", &[(0x8100, 0x6000)]),
            ("qinq", &[(0x88a8, 100), (0x8100, 200)]),
        ]);
        vlan = v;
        tags.push(format!("vlan={t}"));
    }
    let mut f = eth_tagged(dst_mac, env.gen_mac, vlan, ether_type, &l3);
    if g.pct(4) {
        let keep = 14 + g.below((f.len() - 14) as u64) as usize;
        f.truncate(keep);
        tags.push(format!("cut={keep}"));
    } else if g.pct(6) {
        let extra = 1 + g.below(80) as usize;
        let random = g.pct(50);
        for _ in 0..extra {
            let b = if random { g.byte() } else { 0 };
            f.push(b);
        }
        tags.push(format!("trailer={extra}"));
    }
    f.truncate(1514);
    f
}

trait MapSecond<A, B> {
    fn map_second<C>(self, f: impl FnOnce(B) -> C) -> (A, C);
}

impl<A, B> MapSecond<A, B> for (A, B) {
    fn map_second<C>(self, f: impl FnOnce(B) -> C) -> (A, C) {
        (self.0, f(self.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            gen_mac: [2, 0, 0, 0, 0, 1],
            rtr_gen_mac: [2, 0, 0, 0, 0, 2],
            rtr_sink_mac: [2, 0, 0, 0, 0, 3],
            sink_mac: [2, 0, 0, 0, 0, 4],
            gen_ll: v6("fe80::1:1"),
            rtr_gen_ll: v6("fe80::1:2"),
            rtr_v4: vec![v4("10.1.0.1"), v4("10.2.0.1")],
            rtr_v6: vec![v6("fd00:1::1"), v6("fd00:2::1")],
        }
    }

    #[test]
    fn the_corpus_is_the_same_every_time_and_numbered() {
        let e = env();
        let (a, b) = (generate(&e, SEED, 100, 2000), generate(&e, SEED, 100, 2000));
        assert!(a.iter().zip(&b).all(|(x, y)| x.name == y.name && x.frame == y.frame));
        for (i, c) in a.iter().enumerate() {
            assert!(c.frame.len() >= 14 && c.frame.len() <= 1514, "{}", c.name);
            if let Some(seq) = super::super::frames::marker_seq(&c.frame) {
                assert_eq!(seq, 100 + i as u32, "{}", c.name);
            }
        }
        // Every kind of mutation shows up.
        let all: String = a.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(" ");
        for t in ["ttl=", "csum=bad", "totlen=", "plen=", "ext=", "vlan=", "mac=", "cut=", "trailer=", "opt=", "frag=", "src=loopback"] {
            assert!(all.contains(t), "no {t} in 2000 frames");
        }
    }
}
