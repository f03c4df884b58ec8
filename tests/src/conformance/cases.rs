//! The hand-written cases: one named frame each, for every rule of issue 13
//! (ingress validation, layer 2, trailers, options and extension headers,
//! fragmentation, route types, rp_filter / accept_local / route_localnet).
//!
//! Frame `seq` of a run carries marker `seq`, IPv4 ID `seq` (IPv6 flow
//! label `seq`) and, unless the case is about its source, a source of its
//! own behind gen (10.128.0.0/9, fd00:11::/32), so that nothing one case
//! leaves in rtr (an `ip_error` token spent, a neighbour) touches another.

use super::{
    frames::{eth_tagged, icmp_echo, icmpv6_echo, tcp_syn, v4, v6, Ip4, Ip6},
    runner::{Env, Sysctls},
    Case,
};
use common::proto::{ETH_P_IP, ETH_P_IPV6};
use xtask::lab;

/// A MAC that is neither rtr's nor a group address (PACKET_OTHERHOST).
pub const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
pub const MULTICAST_MAC_V4: [u8; 6] = [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03];
pub const MULTICAST_MAC_V6: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// A routed destination (to sink, which drops it), one over the MTU route,
/// and one with no route at all.
pub const ROUTED4: &str = "10.50.0.1";
pub const ROUTED6: &str = "fd00:50::1";
pub const MTU4: &str = "10.51.0.1";
pub const MTU6: &str = "fd00:51::1";
pub const NO_ROUTE4: &str = "10.99.0.1";
pub const NO_ROUTE6: &str = "fd00:99::1";

/// A list of cases under construction: each added frame takes the next
/// sequence number.
pub struct Cases<'a> {
    pub env: &'a Env,
    pub list: Vec<Case>,
    /// Added to a case's sequence number to pick its own source: each
    /// phase has sources none of the others used.
    pub src_base: u32,
}

/// The source behind gen of frame `seq` (IPv4, IPv6).
pub fn own_src4(seq: u32) -> [u8; 4] {
    (0x0a80_0001u32 + seq).to_be_bytes()
}

pub fn own_src6(seq: u32) -> [u8; 16] {
    let mut a = v6("fd00:11::");
    a[12..].copy_from_slice(&(seq + 1).to_be_bytes());
    a
}

impl<'a> Cases<'a> {
    pub fn new(env: &'a Env) -> Cases<'a> {
        Cases { env, list: Vec::new(), src_base: 0 }
    }

    /// The sequence number the next case takes.
    pub fn seq(&self) -> u32 {
        self.list.len() as u32
    }

    pub fn add(&mut self, name: &str, frame: Vec<u8>) {
        assert!(!self.list.iter().any(|c| c.name == name), "two cases named {name:?}");
        self.list.push(Case { name: name.to_string(), frame });
    }

    /// IPv4 header fields from the next case's own source to `dst`.
    pub fn ip4(&self, dst: &str) -> Ip4 {
        Ip4::new(own_src4(self.src_base + self.seq()), v4(dst), self.seq() as u16)
    }

    pub fn ip6(&self, dst: &str) -> Ip6 {
        Ip6::new(own_src6(self.src_base + self.seq()), v6(dst), self.seq())
    }

    /// An Ethernet frame from gen to rtr around `l3`.
    pub fn eth(&self, ether_type: u16, l3: &[u8]) -> Vec<u8> {
        eth_tagged(self.env.rtr_gen_mac, self.env.gen_mac, &[], ether_type, l3)
    }

    /// A UDP frame with IPv4 header `ip`, 32 bytes of payload.
    pub fn udp4(&mut self, name: &str, ip: Ip4) {
        let f = self.eth(ETH_P_IP, &ip.udp(self.seq(), 32));
        self.add(name, f);
    }

    pub fn udp6(&mut self, name: &str, ip: Ip6) {
        let f = self.eth(ETH_P_IPV6, &ip.udp(self.seq(), 32));
        self.add(name, f);
    }

    /// A UDP packet to ROUTED4 with `edit` applied to its bytes (header
    /// checksum left as `edit` leaves it).
    pub fn udp4_edited(&mut self, name: &str, ip: Ip4, edit: impl FnOnce(&mut Vec<u8>)) {
        let mut p = ip.udp(self.seq(), 32);
        edit(&mut p);
        let f = self.eth(ETH_P_IP, &p);
        self.add(name, f);
    }

    pub fn udp6_edited(&mut self, name: &str, ip: Ip6, edit: impl FnOnce(&mut Vec<u8>)) {
        let mut p = ip.udp(self.seq(), 32);
        edit(&mut p);
        let f = self.eth(ETH_P_IPV6, &p);
        self.add(name, f);
    }

    /// A UDP frame to ROUTED4 with source `src`.
    fn from4(&mut self, name: &str, src: &str) {
        let ip = Ip4 { src: v4(src), ..self.ip4(ROUTED4) };
        self.udp4(name, ip);
    }

    fn from6(&mut self, name: &str, src: [u8; 16]) {
        let ip = Ip6 { src, ..self.ip6(ROUTED6) };
        self.udp6(name, ip);
    }

    fn to4(&mut self, name: &str, dst: &str) {
        let ip = self.ip4(dst);
        self.udp4(name, ip);
    }

    fn to6(&mut self, name: &str, dst: &str) {
        let ip = self.ip6(dst);
        self.udp6(name, ip);
    }

    /// A UDP frame to `dst`, either family.
    fn to(&mut self, name: &str, dst: &str) {
        match dst.contains(':') {
            true => self.to6(name, dst),
            false => self.to4(name, dst),
        }
    }

    /// A UDP frame to group address `dst` (either family), to `mac`.
    fn group_frame(&mut self, name: &str, dst: &str, mac: [u8; 6]) {
        let (p, et) = match dst.contains(':') {
            true => (self.ip6(dst).udp(self.seq(), 32), ETH_P_IPV6),
            false => (self.ip4(dst).udp(self.seq(), 32), ETH_P_IP),
        };
        let f = eth_tagged(mac, self.env.gen_mac, &[], et, &p);
        self.add(name, f);
    }

    fn echo4(&mut self, name: &str, ip: Ip4, dst_mac: [u8; 6]) {
        let p = Ip4 { proto: 1, ..ip }.packet(&icmp_echo(self.seq()));
        let f = eth_tagged(dst_mac, self.env.gen_mac, &[], ETH_P_IP, &p);
        self.add(name, f);
    }

    fn echo6(&mut self, name: &str, ip: Ip6, dst_mac: [u8; 6]) {
        let p = ip.packet(58, &icmpv6_echo(&ip.src, &ip.dst, self.seq()));
        let f = eth_tagged(dst_mac, self.env.gen_mac, &[], ETH_P_IPV6, &p);
        self.add(name, f);
    }

    fn tcp4(&mut self, name: &str, ip: Ip4) {
        let p = Ip4 { proto: 6, ..ip.clone() }.packet(&tcp_syn(&ip.src, &ip.dst, self.seq()));
        let f = self.eth(ETH_P_IP, &p);
        self.add(name, f);
    }

    fn tcp6(&mut self, name: &str, ip: Ip6) {
        let p = ip.packet(6, &tcp_syn(&ip.src, &ip.dst, self.seq()));
        let f = self.eth(ETH_P_IPV6, &p);
        self.add(name, f);
    }

    /// A UDP frame to the routed destination behind `tags`, to `dst_mac`.
    fn l2_4(&mut self, name: &str, dst_mac: [u8; 6], tags: &[(u16, u16)]) {
        let p = self.ip4(ROUTED4).udp(self.seq(), 32);
        let f = eth_tagged(dst_mac, self.env.gen_mac, tags, ETH_P_IP, &p);
        self.add(name, f);
    }

    fn l2_6(&mut self, name: &str, dst_mac: [u8; 6], tags: &[(u16, u16)]) {
        let p = self.ip6(ROUTED6).udp(self.seq(), 32);
        let f = eth_tagged(dst_mac, self.env.gen_mac, tags, ETH_P_IPV6, &p);
        self.add(name, f);
    }

    /// An IPv4 UDP to `dst` with options `opts`, `frag` flags, `len` bytes of payload.
    fn opt4(&mut self, name: &str, dst: &str, opts: &[u8], frag: u16, len: usize) {
        let ip = Ip4 { opts: opts.to_vec(), frag, ..self.ip4(dst) };
        let f = self.eth(ETH_P_IP, &ip.udp(self.seq(), len));
        self.add(name, f);
    }

    /// An IPv6 UDP to `dst` behind extension headers `ext` (first `first`).
    fn ext6(&mut self, name: &str, dst: &str, first: u8, ext: &[u8]) {
        let p = self.ip6(dst).udp_behind(first, ext, self.seq(), 32);
        let f = self.eth(ETH_P_IPV6, &p);
        self.add(name, f);
    }
}

/// Recomputes an IPv4 header checksum after an edit (over the IHL the
/// header claims, within the packet).
fn refix(p: &mut [u8]) {
    crate::fix_ipv4_checksum(p)
}

fn set_tot_len(p: &mut [u8], len: u16) {
    p[2..4].copy_from_slice(&len.to_be_bytes());
    refix(p);
}

/// The options and extension-header cases of the slow path's own lab test
/// (tests/tests/slow_path_options.rs), as it has always sent them.
pub fn options(c: &mut Cases) {
    let df = common::proto::IP_DF;
    c.opt4("v4 option record route", ROUTED4, &[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1], df, 64);
    c.opt4("v4 option timestamp", ROUTED4, &[68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0], df, 64);
    c.opt4("v4 option router alert", ROUTED4, &[148, 4, 0, 0], df, 64);
    c.opt4("v4 option nop nop eol", ROUTED4, &[1, 1, 0, 0], df, 64);
    c.opt4("v4 option loose source route", ROUTED4, &[131, 7, 4, 10, 2, 0, 3, 0], df, 64);
    c.opt4("v4 option record route bad pointer", ROUTED4, &[7, 7, 3, 0, 0, 0, 0, 0], df, 64);
    c.opt4("v4 df clear too big: fragmented", MTU4, &[], 0, 1380);
    c.opt4("v4 df clear too big with options: fragmented", MTU4, &[148, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 0], 0, 1368);
    c.ext6("v6 hop-by-hop router alert", ROUTED6, 0, &[17, 0, 5, 2, 0, 0, 1, 0]);
    c.ext6("v6 hop-by-hop unknown option: parameter problem", ROUTED6, 0, &[17, 0, 0x9e, 2, 0, 0, 1, 0]);
    c.ext6("v6 destination options", ROUTED6, 60, &[17, 0, 1, 4, 0, 0, 0, 0]);
    c.ext6("v6 routing type 4 segments left 0", ROUTED6, 43, &[17, 0, 4, 0, 0, 0, 0, 0]);
    c.ext6("v6 atomic fragment", ROUTED6, 44, &[17, 0, 0, 0, 0, 0, 0, 42]);
}

/// Every case of the default phase (rtr's per-interface settings as a
/// fresh namespace has them).
pub fn default_phase(env: &Env) -> Vec<Case> {
    let mut c = Cases::new(env);
    basics_v4(&mut c);
    martians_v4(&mut c);
    local_and_l2_v4(&mut c);
    options(&mut c);
    more_options(&mut c);
    sizes_and_routes(&mut c);
    basics_v6(&mut c);
    martians_v6(&mut c);
    local_and_l2_v6(&mut c);
    c.list
}

/// The plain cases of either family: UDP, TCP SYN and echo forwarded, a
/// DSCP, TTL / hop limit 0, 1 and 2.
fn plain(c: &mut Cases, v6: bool) {
    let (fam, ttl, echo, tos) =
        if v6 { ("v6", "hop limit", "icmpv6 echo", "traffic class") } else { ("v4", "ttl", "icmp echo", "udp tos") };
    let udp = |c: &mut Cases, name: String, ttl: u8, tos: u8| match v6 {
        true => c.udp6(&name, Ip6 { hop_limit: ttl, tclass: tos, ..c.ip6(ROUTED6) }),
        false => c.udp4(&name, Ip4 { ttl, tos, ..c.ip4(ROUTED4) }),
    };
    udp(c, format!("{fam} udp forwarded"), 64, 0);
    match v6 {
        true => c.tcp6("v6 tcp syn forwarded", c.ip6(ROUTED6)),
        false => c.tcp4("v4 tcp syn forwarded", c.ip4(ROUTED4)),
    }
    let name = format!("{fam} {echo} forwarded");
    match v6 {
        true => c.echo6(&name, c.ip6(ROUTED6), c.env.rtr_gen_mac),
        false => c.echo4(&name, c.ip4(ROUTED4), c.env.rtr_gen_mac),
    }
    udp(c, format!("{fam} {tos} 0xb8 forwarded"), 64, 0xb8);
    for t in [0u8, 1, 2] {
        udp(c, format!("{fam} {ttl} {t}"), t, 0);
    }
}

fn basics_v4(c: &mut Cases) {
    plain(c, false);
    c.tcp4("v4 tcp syn ttl 1", Ip4 { ttl: 1, ..c.ip4(ROUTED4) });
    {
        // An ICMP error (host unreachable, quoting a datagram) with TTL 1:
        // no error is sent about an error.
        let inner = Ip4::new(v4(ROUTED4), c.ip4(ROUTED4).src, 1).udp(c.seq(), 8);
        let mut m = vec![3, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&inner);
        let s = common::checksum::checksum(&m);
        m[2..4].copy_from_slice(&s.to_be_bytes());
        let p = Ip4 { ttl: 1, proto: 1, ..c.ip4(ROUTED4) }.packet(&m);
        let f = c.eth(ETH_P_IP, &p);
        c.add("v4 icmp error ttl 1", f);
    }
    c.udp4("v4 tos 0x7a, ttl 1", Ip4 { tos: 0x7a, ttl: 1, ..c.ip4(ROUTED4) });
    {
        // IHL 6 over an echo request: the ICMP header's first word reads as
        // an option (type 8, length 0: a parameter problem), and the "ICMP
        // type" behind the header is the echo's identifier byte.
        let mut p = Ip4 { proto: 1, ..c.ip4(ROUTED4) }.packet(&icmp_echo(c.seq()));
        p[0] = 0x46;
        refix(&mut p);
        let f = c.eth(ETH_P_IP, &p);
        c.add("v4 icmp echo with ihl 6", f);
    }
    c.udp4_edited("v4 udp sent as protocol 1 (icmp type 48), ttl 1", Ip4 { ttl: 1, ..c.ip4(ROUTED4) }, |p| {
        p[9] = 1;
        refix(p)
    });
    {
        let mut p = Ip4 { proto: 1, ttl: 1, ..c.ip4(ROUTED4) }.packet(&icmp_echo(c.seq()));
        set_tot_len(&mut p, 20);
        let f = c.eth(ETH_P_IP, &p);
        c.add("v4 icmp echo cut to its ip header, ttl 1", f);
    }
    c.udp4("v4 first fragment forwarded", Ip4 { frag: 0x2000, ..c.ip4(ROUTED4) });
    c.udp4("v4 later fragment forwarded", Ip4 { frag: 0x0010, ..c.ip4(ROUTED4) });
    c.udp4("v4 later fragment ttl 1", Ip4 { frag: 0x0010, ttl: 1, ..c.ip4(ROUTED4) });
    c.udp4("v4 last fragment ttl 1", Ip4 { frag: 0x0020, ttl: 1, ..c.ip4(ROUTED4) });
    c.udp4_edited("v4 bad header checksum", c.ip4(ROUTED4), |p| p[11] ^= 0x5a);
    c.udp4_edited("v4 checksum 0", c.ip4(ROUTED4), |p| p[10..12].fill(0));
    c.udp4_edited("v4 version 6 under ethertype 0x0800", c.ip4(ROUTED4), |p| {
        p[0] = 0x65;
        refix(p)
    });
    c.udp4_edited("v4 version 0", c.ip4(ROUTED4), |p| {
        p[0] = 0x05;
        refix(p)
    });
    c.udp4_edited("v4 ihl 4", c.ip4(ROUTED4), |p| {
        p[0] = 0x44;
        refix(p)
    });
    c.udp4_edited("v4 ihl 0", c.ip4(ROUTED4), |p| {
        p[0] = 0x40;
        p[10..12].fill(0);
    });
    c.udp4_edited("v4 ihl 6 over the udp header", c.ip4(ROUTED4), |p| {
        p[0] = 0x46;
        refix(p)
    });
    c.udp4_edited("v4 total length beyond the frame", c.ip4(ROUTED4), |p| {
        let l = p.len() as u16;
        set_tot_len(p, l + 10)
    });
    c.udp4_edited("v4 total length below ihl", c.ip4(ROUTED4), |p| set_tot_len(p, 19));
    c.udp4_edited("v4 total length equal to ihl", c.ip4(ROUTED4), |p| set_tot_len(p, 20));
    c.udp4_edited("v4 total length inside the udp header", c.ip4(ROUTED4), |p| set_tot_len(p, 24));
    c.udp4_edited("v4 total length short by 10", c.ip4(ROUTED4), |p| {
        let l = p.len() as u16;
        set_tot_len(p, l - 10)
    });
    c.udp4_edited("v4 total length short by 10, ttl 1", Ip4 { ttl: 1, ..c.ip4(ROUTED4) }, |p| {
        let l = p.len() as u16;
        set_tot_len(p, l - 10)
    });
    c.udp4_edited("v4 truncated header", c.ip4(ROUTED4), |p| p.truncate(12));
    c.udp4_edited("v4 options cut by the frame", Ip4 { opts: vec![1; 20], ..c.ip4(ROUTED4) }, |p| p.truncate(30));
    {
        let p = c.ip4(ROUTED4).udp(c.seq(), 4);
        let mut f = c.eth(ETH_P_IP, &p);
        f.resize(60, 0);
        c.add("v4 ethernet padding", f);
    }
    for (name, ttl) in [("v4 ethernet trailer", 64), ("v4 ethernet trailer, ttl 1", 1)] {
        let p = Ip4 { ttl, ..c.ip4(ROUTED4) }.udp(c.seq(), 32);
        let mut f = c.eth(ETH_P_IP, &p);
        f.extend_from_slice(&[0xee; 64]);
        c.add(name, f);
    }
}

fn martians_v4(c: &mut Cases) {
    let sources = [
        ("v4 src loopback 127.0.0.1", "127.0.0.1"),
        ("v4 src loopback 127.1.2.3", "127.1.2.3"),
        ("v4 src 0.0.0.0", "0.0.0.0"),
        ("v4 src zero network 0.1.2.3", "0.1.2.3"),
        ("v4 src multicast 224.0.0.5", "224.0.0.5"),
        ("v4 src multicast 239.1.1.1", "239.1.1.1"),
        ("v4 src limited broadcast", "255.255.255.255"),
        ("v4 src class e 240.0.0.1", "240.0.0.1"),
        ("v4 src class e 255.255.255.254", "255.255.255.254"),
        ("v4 src rtr's gen-side address", lab::RTR_GEN_V4),
        ("v4 src rtr's sink-side address", lab::RTR_SINK_V4),
        ("v4 src gen's subnet broadcast", "10.1.0.255"),
        ("v4 src sink's subnet broadcast", "10.2.0.255"),
        ("v4 src sink's subnet (spoofed)", super::runner::SPOOF_SINK_V4),
        ("v4 src gen's own address", lab::GEN_V4),
        ("v4 src link-local 169.254.1.1", "169.254.1.1"),
        ("v4 src documentation 192.0.2.1", "192.0.2.1"),
        ("v4 src shared 100.64.0.1", "100.64.0.1"),
    ];
    for (name, src) in sources {
        c.from4(name, src);
    }
    // Errors about martian or unanswerable sources: Linux routes its errors
    // (one to its own address stays in rtr).
    let ip = Ip4 { src: v4(lab::RTR_GEN_V4), ..c.ip4(NO_ROUTE4) };
    c.udp4("v4 src rtr's gen-side address, no route", ip);
    for (name, src) in [
        ("v4 src gen's subnet broadcast, ttl 1", "10.1.0.255"),
        ("v4 src zero network, ttl 1", "0.1.2.3"),
        ("v4 src link-local, ttl 1", "169.254.1.1"),
        ("v4 src class e, ttl 1", "240.0.0.1"),
        ("v4 src loopback, ttl 1", "127.0.0.1"),
        ("v4 src sink's subnet (spoofed), ttl 1", super::runner::SPOOF_SINK_V4),
        ("v4 src documentation (no route back), ttl 1", "192.0.2.1"),
    ] {
        let ip = Ip4 { src: v4(src), ttl: 1, ..c.ip4(ROUTED4) };
        c.udp4(name, ip);
    }
    let destinations = [
        ("v4 dst loopback 127.0.0.1", "127.0.0.1"),
        ("v4 dst loopback 127.1.2.3", "127.1.2.3"),
        ("v4 dst 0.0.0.0", "0.0.0.0"),
        ("v4 dst zero network 0.1.2.3", "0.1.2.3"),
        ("v4 dst class e routed 240.1.0.1", "240.1.0.1"),
        ("v4 dst class e unrouted 250.0.0.1", "250.0.0.1"),
        ("v4 dst limited broadcast", "255.255.255.255"),
        ("v4 dst sink's subnet broadcast", "10.2.0.255"),
        ("v4 dst gen's subnet broadcast", "10.1.0.255"),
        ("v4 dst sink's subnet network address", "10.2.0.0"),
        ("v4 dst multicast 239.1.2.3, rtr's MAC", "239.1.2.3"),
        ("v4 dst link-local 169.254.1.1", "169.254.1.1"),
        ("v4 dst documentation 198.51.100.1", "198.51.100.1"),
    ];
    destinations_then_group(c, &destinations, ("v4 dst multicast 239.1.2.3, multicast MAC", "239.1.2.3", MULTICAST_MAC_V4));
    c.echo4("v4 echo to all-hosts 224.0.0.1", c.ip4("224.0.0.1"), [0x01, 0x00, 0x5e, 0, 0, 1]);
}

/// A UDP frame to each of `destinations`, then one to a group address at its group MAC.
fn destinations_then_group(c: &mut Cases, destinations: &[(&str, &str)], group: (&str, &str, [u8; 6])) {
    for (name, dst) in destinations {
        c.to(name, dst);
    }
    c.group_frame(group.0, group.1, group.2);
}

fn local_and_l2_v4(c: &mut Cases) {
    let mac = c.env.rtr_gen_mac;
    c.echo4("v4 echo to rtr's gen-side address", c.ip4(lab::RTR_GEN_V4), mac);
    c.echo4("v4 echo to rtr's sink-side address", c.ip4(lab::RTR_SINK_V4), mac);
    c.echo4("v4 echo to rtr, ttl 1", Ip4 { ttl: 1, ..c.ip4(lab::RTR_SINK_V4) }, mac);
    c.echo4("v4 echo to rtr from gen's address", Ip4 { src: v4(lab::GEN_V4), ..c.ip4(lab::RTR_GEN_V4) }, mac);
    c.to4("v4 udp to rtr's closed port", lab::RTR_GEN_V4);
    c.tcp4("v4 tcp syn to rtr's closed port", c.ip4(lab::RTR_SINK_V4));
    c.echo4("v4 echo to rtr, broadcast MAC", c.ip4(lab::RTR_GEN_V4), BROADCAST_MAC);
    c.echo4("v4 echo to rtr, other host's MAC", c.ip4(lab::RTR_GEN_V4), OTHER_MAC);
    c.l2_4("v4 other host's MAC (PACKET_OTHERHOST)", OTHER_MAC, &[]);
    c.l2_4("v4 broadcast MAC, unicast IP", BROADCAST_MAC, &[]);
    c.l2_4("v4 multicast MAC, unicast IP", MULTICAST_MAC_V4, &[]);
    c.l2_4("v4 802.1Q VID 100 (no such VLAN)", mac, &[(0x8100, 100)]);
    c.l2_4("v4 802.1Q VID 0 priority tag", mac, &[(0x8100, 0)]);
    c.l2_4("v4 802.1Q VID 0 priority 5", mac, &[(0x8100, 0xa000)]);
    c.l2_4("v4 802.1Q VID 4095", mac, &[(0x8100, 4095)]);
    c.l2_4("v4 802.1ad QinQ 100/200", mac, &[(0x88a8, 100), (0x8100, 200)]);
    c.l2_4("v4 802.1ad single tag 100", mac, &[(0x88a8, 100)]);
    c.l2_4("v4 802.1Q stacked 100/200", mac, &[(0x8100, 100), (0x8100, 200)]);
    c.l2_4("v4 802.1Q VID 0 priority tag, other host's MAC", OTHER_MAC, &[(0x8100, 0)]);
}

fn more_options(c: &mut Cases) {
    let df = common::proto::IP_DF;
    c.opt4("v4 option strict source route", ROUTED4, &[137, 7, 4, 10, 2, 0, 3, 0], df, 64);
    c.opt4("v4 option timestamp with addresses", ROUTED4, &[68, 12, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0], df, 64);
    c.opt4("v4 option timestamp full (overflow)", ROUTED4, &[68, 8, 9, 0, 0, 0, 0, 0], df, 64);
    c.opt4("v4 option record route full", ROUTED4, &[7, 7, 8, 0, 0, 0, 0, 0], df, 64);
    c.opt4("v4 option unknown type 25", ROUTED4, &[25, 4, 0, 0], df, 64);
    c.opt4("v4 option length 2 record route", ROUTED4, &[7, 2, 0, 0], df, 64);
    c.opt4("v4 option length beyond header", ROUTED4, &[7, 40, 4, 0], df, 64);
    c.opt4("v4 option security (130)", ROUTED4, &[130, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], df, 64);
    c.opt4("v4 option 40 bytes of nop", ROUTED4, &[1; 40], df, 64);
    let ip = Ip4 { ttl: 1, opts: vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1], ..c.ip4(ROUTED4) };
    c.udp4("v4 option record route, ttl 1", ip);
    let ip = Ip4 { ttl: 1, opts: vec![68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..c.ip4(ROUTED4) };
    c.udp4("v4 option timestamp, ttl 1", ip);
    let ip = Ip4 { ttl: 1, opts: vec![0, 0x30, 0x39, 0x3a], ..c.ip4(ROUTED4) };
    c.udp4("v4 option eol then garbage, ttl 1", ip);
    c.opt4("v4 option router alert to rtr", lab::RTR_GEN_V4, &[148, 4, 0, 0], df, 64);
    c.opt4("v4 option record route, df set too big", MTU4, &[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1], df, 1380);
}

fn sizes_and_routes(c: &mut Cases) {
    let df = common::proto::IP_DF;
    c.opt4("v4 df set too big: fragmentation needed", MTU4, &[], df, 1380);
    c.opt4("v4 df clear exactly the mtu", MTU4, &[], 0, 1300 - 28);
    c.opt4("v4 df set exactly the mtu", MTU4, &[], df, 1300 - 28);
    c.opt4("v4 df clear too big, odd length", MTU4, &[], 0, 1401);
    let ip = Ip4 { frag: 0, ttl: 1, ..c.ip4(MTU4) };
    let f = c.eth(ETH_P_IP, &ip.udp(c.seq(), 1380));
    c.add("v4 df clear too big, ttl 1", f);
    let ip = Ip4 { frag: 0x2000 | 0x0100, ..c.ip4(MTU4) };
    let f = c.eth(ETH_P_IP, &ip.udp(c.seq(), 1380));
    c.add("v4 later fragment too big: fragmented again", f);
    // Its options were fixed where it was first cut: all kept in every piece.
    c.opt4("v4 later fragment with record route too big", MTU4, &[7, 7, 4, 0, 0, 0, 0, 1], 0x2000 | 0x0010, 1380);
    c.opt4("v4 option record route to an unreachable route", "10.53.0.9", &[7, 7, 4, 0, 0, 0, 0, 1], df, 32);
    c.opt4("v4 option nops to no route", "10.99.0.9", &[1, 1, 1, 1], df, 32);
    c.to4("v4 blackhole route", "10.52.0.1");
    c.to4("v4 unreachable route", "10.53.0.1");
    c.to4("v4 prohibit route", "10.54.0.1");
    c.to4("v4 no route", NO_ROUTE4);
    // `icmp_pointers[].error`: the unassigned types 1, 2, 6, 7, 9, 10 count
    // as errors too (no error about them); 13 (timestamp) does not.
    for icmp_type in [7u8, 9, 13] {
        let mut m = icmp_echo(c.seq());
        m[0] = icmp_type;
        let p = Ip4 { proto: 1, ..c.ip4(NO_ROUTE4) }.packet(&m);
        let f = c.eth(ETH_P_IP, &p);
        c.add(&format!("v4 icmp type {icmp_type} to no route"), f);
    }
    c.udp4("v4 unreachable route, ttl 1", Ip4 { ttl: 1, ..c.ip4("10.53.0.2") });
    c.udp4("v4 no route, ttl 1", Ip4 { ttl: 1, ..c.ip4("10.99.0.2") });
    c.echo4("v4 echo to an unreachable route", c.ip4("10.53.0.3"), c.env.rtr_gen_mac);
    let mut trailer = c.eth(ETH_P_IP, &c.ip4(MTU4).udp(c.seq(), 1380));
    trailer.extend_from_slice(&[0xee; 40]);
    c.add("v4 df set too big with a trailer", trailer);
    c.opt4("v4 df clear 1500-byte packet to the mtu route", MTU4, &[], 0, 1472);
    let ip = Ip6 { hop_limit: 64, ..c.ip6(MTU6) };
    let f = c.eth(ETH_P_IPV6, &ip.udp(c.seq(), 1400));
    c.add("v6 too big: packet too big", f);
    let f = c.eth(ETH_P_IPV6, &c.ip6(MTU6).udp(c.seq(), 1300 - 48));
    c.add("v6 exactly the mtu", f);
    let ip = Ip6 { hop_limit: 1, ..c.ip6(MTU6) };
    let f = c.eth(ETH_P_IPV6, &ip.udp(c.seq(), 1400));
    c.add("v6 too big, hop limit 1", f);
    c.to6("v6 blackhole route", "fd00:52::1");
    c.to6("v6 unreachable route", "fd00:53::1");
    c.to6("v6 prohibit route", "fd00:54::1");
    c.to6("v6 no route", NO_ROUTE6);
    c.udp6("v6 unreachable route, hop limit 1", Ip6 { hop_limit: 1, ..c.ip6("fd00:53::2") });
}

fn basics_v6(c: &mut Cases) {
    plain(c, true);
    {
        // An ICMPv6 error (destination unreachable) with hop limit 1.
        let ip = Ip6 { hop_limit: 1, ..c.ip6(ROUTED6) };
        let inner = Ip6::new(ip.dst, ip.src, 1).udp(c.seq(), 8);
        let mut m = vec![1, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&inner);
        let s = !common::checksum::fold(crate::l4_sum(&ip.src, &ip.dst, 58, &m));
        m[2..4].copy_from_slice(&s.to_be_bytes());
        let f = c.eth(ETH_P_IPV6, &ip.packet(58, &m));
        c.add("v6 icmpv6 error, hop limit 1", f);
    }
    c.udp6_edited("v6 version 4 under ethertype 0x86dd", c.ip6(ROUTED6), |p| p[0] = 0x40 | (p[0] & 15));
    c.udp6_edited("v6 version 0", c.ip6(ROUTED6), |p| p[0] &= 15);
    c.udp6_edited("v6 payload length beyond the frame", c.ip6(ROUTED6), |p| p[5] += 10);
    c.udp6_edited("v6 payload length 0", c.ip6(ROUTED6), |p| p[4..6].fill(0));
    c.udp6_edited("v6 payload length 8 (udp header only)", c.ip6(ROUTED6), |p| p[4..6].copy_from_slice(&8u16.to_be_bytes()));
    c.udp6_edited("v6 payload length short by 10, hop limit 1", Ip6 { hop_limit: 1, ..c.ip6(ROUTED6) }, |p| p[5] -= 10);
    c.udp6_edited("v6 truncated header", c.ip6(ROUTED6), |p| p.truncate(30));
    for (name, h) in [("v6 ethernet trailer", 64), ("v6 ethernet trailer, hop limit 1", 1)] {
        let p = Ip6 { hop_limit: h, ..c.ip6(ROUTED6) }.udp(c.seq(), 32);
        let mut f = c.eth(ETH_P_IPV6, &p);
        f.extend_from_slice(&[0xee; 64]);
        c.add(name, f);
    }
    c.ext6("v6 hop-by-hop padn", ROUTED6, 0, &[17, 0, 1, 4, 0, 0, 0, 0]);
    c.ext6("v6 hop-by-hop unknown option to no route", NO_ROUTE6, 0, &[17, 0, 0x9e, 2, 0, 0, 1, 0]);
    c.ext6("v6 hop-by-hop padn to no route", "fd00:99::2", 0, &[17, 0, 1, 4, 0, 0, 0, 0]);
    c.ext6("v6 hop-by-hop after destination options", ROUTED6, 60, &[0, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0]);
    c.ext6("v6 hop-by-hop then fragment", ROUTED6, 0, &[44, 0, 1, 4, 0, 0, 0, 0, 17, 0, 0, 1, 0, 0, 0, 7]);
    c.ext6("v6 first fragment of two", ROUTED6, 44, &[17, 0, 0, 1, 0, 0, 0, 43]);
    c.ext6("v6 later fragment forwarded", ROUTED6, 44, &[17, 0, 0, 8, 0, 0, 0, 44]);
    c.ext6("v6 later fragment to an unreachable route", "fd00:53::9", 44, &[17, 0, 0, 8, 0, 0, 0, 45]);
    let ip = Ip6 { hop_limit: 1, ..c.ip6(ROUTED6) };
    let f = c.eth(ETH_P_IPV6, &ip.udp_behind(44, &[17, 0, 0, 8, 0, 0, 0, 46], c.seq(), 32));
    c.add("v6 later fragment, hop limit 1", f);
    let ip = c.ip6(ROUTED6);
    let mut p = ip.udp_behind(0, &[17, 0, 1, 4, 0, 0, 0, 0], c.seq(), 32);
    p[4..6].fill(0);
    let f = c.eth(ETH_P_IPV6, &p);
    c.add("v6 payload length 0 behind hop-by-hop", f);
    let ip = c.ip6(NO_ROUTE6);
    let mut p = ip.packet(58, &icmpv6_echo(&ip.src, &ip.dst, c.seq()));
    p[4..6].fill(0);
    let f = c.eth(ETH_P_IPV6, &p);
    c.add("v6 echo with payload length 0 to no route", f);
    c.ext6("v6 routing type 0 segments left 0", ROUTED6, 43, &[17, 0, 0, 0, 0, 0, 0, 0]);
    let mut rt2 = vec![17, 2, 2, 0, 0, 0, 0, 0];
    rt2.extend_from_slice(&v6("fd00:50::2"));
    c.ext6("v6 routing type 2 segments left 0", ROUTED6, 43, &rt2);
    let mut rt0 = vec![17, 2, 0, 1, 0, 0, 0, 0];
    rt0.extend_from_slice(&v6(ROUTED6));
    c.ext6("v6 routing type 0 to rtr, segments left 1", lab::RTR_GEN_V6, 43, &rt0);
    let ip = Ip6 { hop_limit: 1, ..c.ip6(ROUTED6) };
    let f = c.eth(ETH_P_IPV6, &ip.udp_behind(0, &[17, 0, 5, 2, 0, 0, 1, 0], c.seq(), 32));
    c.add("v6 hop-by-hop router alert, hop limit 1", f);
}

fn martians_v6(c: &mut Cases) {
    let (gen_ll, rtr_ll) = (c.env.gen_ll, c.env.rtr_gen_ll);
    let sources: [(&str, [u8; 16]); 16] = [
        ("v6 src loopback ::1", v6("::1")),
        ("v6 src unspecified ::", v6("::")),
        ("v6 src multicast ff02::1", v6("ff02::1")),
        ("v6 src multicast ff0e::1", v6("ff0e::1")),
        ("v6 src v4-mapped ::ffff:10.1.0.2", v6("::ffff:10.1.0.2")),
        ("v6 src v4-compatible ::10.1.0.2", v6("::10.1.0.2")),
        ("v6 src link-local fe80::1", v6("fe80::1")),
        ("v6 src gen's link-local", gen_ll),
        ("v6 src rtr's link-local", rtr_ll),
        ("v6 src site-local fec0::1", v6("fec0::1")),
        ("v6 src unique-local fd12:3456::1", v6("fd12:3456::1")),
        ("v6 src documentation 2001:db8::1", v6("2001:db8::1")),
        ("v6 src rtr's gen-side address", v6(lab::RTR_GEN_V6)),
        ("v6 src rtr's sink-side address", v6(lab::RTR_SINK_V6)),
        ("v6 src sink's subnet (spoofed)", v6(super::runner::SPOOF_SINK_V6)),
        ("v6 src gen's own address", v6(lab::GEN_V6)),
    ];
    for (name, src) in sources {
        c.from6(name, src);
    }
    for (name, src) in [
        ("v6 src gen's link-local, hop limit 1", gen_ll),
        ("v6 src sink's subnet (spoofed), hop limit 1", v6(super::runner::SPOOF_SINK_V6)),
        ("v6 src documentation (no route back), hop limit 1", v6("2001:db8::1")),
        ("v6 src v4-mapped, hop limit 1", v6("::ffff:10.1.0.2")),
    ] {
        c.udp6(name, Ip6 { src, hop_limit: 1, ..c.ip6(ROUTED6) });
    }
    let destinations = [
        ("v6 dst loopback ::1", "::1"),
        ("v6 dst unspecified ::", "::"),
        ("v6 dst multicast ff0e::1, rtr's MAC", "ff0e::1"),
        ("v6 dst multicast reserved scope ff00::1", "ff00::1"),
        ("v6 dst multicast interface-local ff01::1", "ff01::1"),
        ("v6 dst v4-mapped ::ffff:10.50.0.1", "::ffff:10.50.0.1"),
        ("v6 dst link-local fe80::1234", "fe80::1234"),
        ("v6 dst site-local fec0::1", "fec0::1"),
        ("v6 dst documentation 2001:db8::1", "2001:db8::1"),
        ("v6 dst unique-local fd12:3456::1", "fd12:3456::1"),
    ];
    destinations_then_group(c, &destinations, ("v6 dst multicast ff0e::1, multicast MAC", "ff0e::1", MULTICAST_MAC_V6));
}

fn local_and_l2_v6(c: &mut Cases) {
    let mac = c.env.rtr_gen_mac;
    c.echo6("v6 echo to rtr's gen-side address", c.ip6(lab::RTR_GEN_V6), mac);
    c.echo6("v6 echo to rtr's sink-side address", c.ip6(lab::RTR_SINK_V6), mac);
    c.echo6("v6 echo to rtr, hop limit 1", Ip6 { hop_limit: 1, ..c.ip6(lab::RTR_SINK_V6) }, mac);
    let rtr_ll = std::net::Ipv6Addr::from(c.env.rtr_gen_ll).to_string();
    c.echo6("v6 echo to rtr's link-local from gen's", Ip6 { src: c.env.gen_ll, ..c.ip6(&rtr_ll) }, mac);
    c.echo6("v6 echo to all-nodes ff02::1", c.ip6("ff02::1"), [0x33, 0x33, 0, 0, 0, 1]);
    c.to6("v6 udp to rtr's closed port", lab::RTR_GEN_V6);
    c.tcp6("v6 tcp syn to rtr's closed port", c.ip6(lab::RTR_SINK_V6));
    c.echo6("v6 echo to rtr, other host's MAC", c.ip6(lab::RTR_GEN_V6), OTHER_MAC);
    c.l2_6("v6 other host's MAC (PACKET_OTHERHOST)", OTHER_MAC, &[]);
    c.l2_6("v6 broadcast MAC, unicast IP", BROADCAST_MAC, &[]);
    c.l2_6("v6 multicast MAC, unicast IP", MULTICAST_MAC_V6, &[]);
    c.l2_6("v6 802.1Q VID 100 (no such VLAN)", mac, &[(0x8100, 100)]);
    c.l2_6("v6 802.1Q VID 0 priority tag", mac, &[(0x8100, 0)]);
    c.l2_6("v6 802.1ad QinQ 100/200", mac, &[(0x88a8, 100), (0x8100, 200)]);
}

/// The sysctl phases' own sources start here (after the default phase's
/// cases and any corpus).
const PHASE_SOURCES: u32 = 4_000_000;

/// A phase of rtr settings and the cases about them.
pub struct Phase {
    pub name: &'static str,
    pub sysctls: Sysctls,
    pub cases: Vec<Case>,
}

/// The sysctl phases after the default one: rp_filter strict and loose,
/// accept_local (alone and with strict rp_filter), route_localnet. Each
/// phase's cases run in all three runs with the phase's settings.
pub fn sysctl_phases(env: &Env) -> Vec<Phase> {
    let rp = |rp_filter| Sysctls { rp_filter, ..Sysctls::DEFAULT };
    let spoofing = |c: &mut Cases, p: &str| {
        c.udp4(&format!("{p}: plain forwarded"), c.ip4(ROUTED4));
        c.from4(&format!("{p}: src in sink's subnet, from gen"), super::runner::SPOOF_SINK_V4);
        c.from4(&format!("{p}: src sink's own address, from gen"), lab::SINK_V4);
        c.from4(&format!("{p}: src with no route at all"), "10.99.0.9");
        c.from4(&format!("{p}: src documentation, no route"), "192.0.2.9");
        c.from4(&format!("{p}: src rtr's gen-side address"), lab::RTR_GEN_V4);
        c.from4(&format!("{p}: src rtr's sink-side address"), lab::RTR_SINK_V4);
        c.from4(&format!("{p}: src class e"), "240.0.0.9");
        c.from4(&format!("{p}: src loopback"), "127.0.0.5");
        let ip = Ip4 { src: v4("10.99.0.10"), ttl: 1, ..c.ip4(ROUTED4) };
        c.udp4(&format!("{p}: src with no route, ttl 1"), ip);
        c.echo4(
            &format!("{p}: echo to rtr from sink's subnet"),
            Ip4 { src: v4(super::runner::SPOOF_SINK_V4), ..c.ip4(lab::RTR_GEN_V4) },
            env.rtr_gen_mac,
        );
        c.from6(&format!("{p}: v6 src in sink's subnet, from gen"), v6(super::runner::SPOOF_SINK_V6));
    };
    let mut phases = Vec::new();
    let base = |i: usize| PHASE_SOURCES + 1000 * i as u32;
    for (i, (name, s)) in [
        ("rp_filter=1 (strict)", rp(1)),
        ("rp_filter=2 (loose)", rp(2)),
        ("accept_local=1", Sysctls { accept_local: 1, ..Sysctls::DEFAULT }),
        ("accept_local=1 rp_filter=1", Sysctls { accept_local: 1, rp_filter: 1, ..Sysctls::DEFAULT }),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Cases { src_base: base(i), ..Cases::new(env) };
        spoofing(&mut c, name);
        phases.push(Phase { name, sysctls: s, cases: c.list });
    }
    let mut c = Cases { src_base: base(phases.len()), ..Cases::new(env) };
    let p = "route_localnet=1";
    c.from4(&format!("{p}: src 127.0.0.5"), "127.0.0.5");
    c.from4(&format!("{p}: src 127.0.0.1"), "127.0.0.1");
    c.to4(&format!("{p}: dst 127.0.0.5"), "127.0.0.5");
    c.echo4(&format!("{p}: echo to 127.0.0.1"), c.ip4("127.0.0.1"), env.rtr_gen_mac);
    c.udp4(&format!("{p}: plain forwarded"), c.ip4(ROUTED4));
    let ip = Ip4 { src: v4("127.0.0.6"), ttl: 1, ..c.ip4(ROUTED4) };
    c.udp4(&format!("{p}: src 127.0.0.6, ttl 1"), ip);
    phases.push(Phase { name: p, sysctls: Sysctls { route_localnet: 1, ..Sysctls::DEFAULT }, cases: c.list });
    phases
}
