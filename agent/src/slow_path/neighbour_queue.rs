//! Packets waiting for a neighbour: the fast path hands the agent frames
//! whose next hop has no resolved neighbour yet (link up, TTL and MTU
//! already checked); they wait here, in a bounded queue per neighbour, while
//! the kernel resolves it (asked over netlink). When it is resolved they
//! leave by the same forwarding rules as the fast path's
//! ([`common::forwarding`]), with the destination's metrics as they are by
//! then: TTL out gets Time Exceeded, too big Fragmentation Needed / Packet
//! Too Big (DF clear: fragmented), SYNs get their MSS clamped. On timeout or
//! overflow they are dropped. Every outcome is counted.

use crate::slow_path::{fragment::ip_fragment, icmp::ErrorKind};
use common::{
    forwarding::{self, Forwarding, IpFacts},
    mss::tcp_clamp_mss,
    proto::{self, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPV4_HLEN, IPV6_HLEN, IP_DF, IP_OFFSET},
    NextHop, RouteMetrics,
};
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

/// A neighbour: device and address.
pub type NeighbourKey = (u32, IpAddr);

/// What became of the frames. Every released one ends in exactly one of
/// `forwarded`, `fragmented`, `ttl_exceeded`, `too_big`, `fragment_failed`,
/// `malformed`, `send_failed`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueStats {
    pub held: u64,
    pub released: u64,
    pub timed_out: u64,
    pub overflowed: u64,
    /// Not held: its next hop is gone, or it names no destination.
    pub dropped: u64,
    /// Released and sent on whole.
    pub forwarded: u64,
    /// Released, DF clear and bigger than the MTU: sent on in fragments.
    pub fragmented: u64,
    /// Released with TTL / hop limit 1 (the rules check it first): Time Exceeded due.
    pub ttl_exceeded: u64,
    /// Released, DF set (or IPv6) and bigger than the destination's MTU:
    /// Fragmentation Needed / Packet Too Big due.
    pub too_big: u64,
    /// DF clear but an MTU too small for one 8-byte fragment of it.
    pub fragment_failed: u64,
    /// Released but unreadable.
    pub malformed: u64,
    /// The device refused it (or its next hop was no longer usable).
    pub send_failed: u64,
    /// SYNs sent on with their MSS clamped to the destination's advmss.
    pub mss_clamped: u64,
    /// The agent's own ICMP errors that waited for their neighbour here
    /// and left (the slow path's `icmp_sent` counts them too).
    pub icmp_sent: u64,
    /// Waiting now.
    pub waiting: usize,
}

/// A frame waiting for its neighbour, as it arrived, and the interface it
/// came in on (the scope of the errors about it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub ingress: u32,
    pub frame: Vec<u8>,
    /// The agent's own frame (an ICMP error), not one in transit: it leaves
    /// as it is, only its link header set, none of the forwarding rules.
    pub originated: bool,
    /// The frame as it arrived, when `frame` is no longer that (its IPv4
    /// options processed for forwarding): what an ICMP error about it
    /// starts from, as the kernel's quote the packet before
    /// `ip_forward_options`.
    pub arrived: Option<Vec<u8>>,
}

impl Held {
    /// A frame in transit that came in on `ingress`.
    pub fn transit(ingress: u32, frame: Vec<u8>) -> Held {
        Held { ingress, frame, originated: false, arrived: None }
    }

    /// The frame as it arrived.
    pub fn arrived(&self) -> &[u8] {
        self.arrived.as_deref().unwrap_or(&self.frame)
    }
}

#[derive(Debug)]
pub struct NeighbourQueue {
    per_neighbour: usize,
    total: usize,
    timeout: Duration,
    queues: HashMap<NeighbourKey, (Instant, VecDeque<Held>)>,
    pub stats: QueueStats,
}

impl NeighbourQueue {
    /// At most `per_neighbour` frames for one neighbour, `total` in all,
    /// each for at most `timeout` (the kernel's unres_qlen is 101 packets
    /// and its resolution gives up after about 3 s).
    pub fn new(per_neighbour: usize, total: usize, timeout: Duration) -> NeighbourQueue {
        NeighbourQueue { per_neighbour, total, timeout, queues: HashMap::new(), stats: QueueStats::default() }
    }

    /// Holds `frame` for `key`; `true` when it is the first (time to ask
    /// for resolution). A full queue drops the frame.
    pub fn hold(&mut self, key: NeighbourKey, frame: Held, now: Instant) -> bool {
        if self.stats.waiting >= self.total {
            self.stats.overflowed += 1;
            return false;
        }
        let (_, q) = self.queues.entry(key).or_insert_with(|| (now, VecDeque::new()));
        if q.len() >= self.per_neighbour {
            self.stats.overflowed += 1;
            return false;
        }
        q.push_back(frame);
        self.stats.held += 1;
        self.stats.waiting += 1;
        q.len() == 1
    }

    pub fn is_waiting(&self, key: &NeighbourKey) -> bool {
        self.queues.contains_key(key)
    }

    pub fn keys(&self) -> Vec<NeighbourKey> {
        self.queues.keys().copied().collect()
    }

    /// The neighbour is resolved: its frames, oldest first.
    pub fn release(&mut self, key: &NeighbourKey) -> Vec<Held> {
        let frames: Vec<Held> = self.queues.remove(key).map(|(_, q)| q.into()).unwrap_or_default();
        self.stats.waiting -= frames.len();
        self.stats.released += frames.len() as u64;
        frames
    }

    /// Drops the queues that waited `timeout`; returns how many frames went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let timeout = self.timeout;
        let old: Vec<NeighbourKey> =
            self.queues.iter().filter(|(_, (since, _))| now.saturating_duration_since(*since) >= timeout).map(|(k, _)| *k).collect();
        let mut n = 0;
        for key in old {
            n += self.queues.remove(&key).map_or(0, |(_, q)| q.len());
        }
        self.stats.waiting -= n;
        self.stats.timed_out += n as u64;
        n
    }
}

/// What the forwarding rules make of a released frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Out through the next hop: the frame, or its fragments.
    Send {
        frames: Vec<Vec<u8>>,
        mss_clamped: bool,
    },
    /// An ICMP error about the frame (as it arrived) is due instead.
    Error(ErrorKind),
    /// DF clear, but the MTU holds no 8-byte fragment.
    FragmentFailed,
    /// The next hop is not usable (the queue releases only resolved ones).
    Unusable,
    Malformed,
}

/// The IP packet of `frame` (Ethernet padding cut off), what the rules read
/// of it, and where its TCP header is (the first fragment of TCP only).
fn ip_packet(frame: &[u8]) -> Option<(u16, &[u8], IpFacts, Option<usize>)> {
    let (ether_type, l3) = proto::ethernet_payload(frame)?;
    let ip = frame.get(l3..)?;
    match ether_type {
        ETH_P_IP if ip.len() >= IPV4_HLEN && ip[0] >> 4 == 4 => {
            let (ihl, len) = ((ip[0] & 0x0f) as usize * 4, u16::from_be_bytes([ip[2], ip[3]]) as usize);
            if ihl < IPV4_HLEN || len < ihl || len > ip.len() {
                return None;
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            let tcp = (ip[9] == IPPROTO_TCP && frag & IP_OFFSET == 0).then_some(ihl);
            Some((ether_type, &ip[..len], IpFacts { ttl: ip[8], len: len as u32, may_fragment: frag & IP_DF == 0 }, tcp))
        }
        ETH_P_IPV6 if ip.len() >= IPV6_HLEN && ip[0] >> 4 == 6 => {
            let len = proto::ipv6_packet_len(ip);
            if len > ip.len() {
                return None;
            }
            let tcp = (ip[6] == IPPROTO_TCP).then_some(IPV6_HLEN);
            Some((ether_type, &ip[..len], IpFacts { ttl: ip[7], len: len as u32, may_fragment: false }, tcp))
        }
        _ => None,
    }
}

/// `frame` (as it arrived) forwarded through `nh` by the fast path's rules,
/// with the destination's `metrics` (its route's, or its private copy): the
/// checks in the kernel's order, then TTL / hop limit minus one, the MSS
/// clamped to the advmss, the next hop's MACs and VLAN tag.
pub fn forward_frame(frame: &[u8], nh: &NextHop, metrics: &RouteMetrics) -> Release {
    let Some((ether_type, ip, facts, tcp)) = ip_packet(frame) else { return Release::Malformed };
    let mut ip = ip.to_vec();
    let fragment_to = match forwarding::ip_forward_check(&facts, metrics, nh) {
        Forwarding::Forward => None,
        Forwarding::TtlExceeded => return Release::Error(ErrorKind::TimeExceeded),
        Forwarding::TooBig { mtu, may_fragment: false } => return Release::Error(ErrorKind::TooBig { mtu }),
        Forwarding::TooBig { mtu, may_fragment: true } => Some(mtu),
        Forwarding::LinkDown | Forwarding::NoNeighbour => return Release::Unusable,
    };
    if ether_type == ETH_P_IP {
        forwarding::ip_decrease_ttl((&mut ip[..IPV4_HLEN]).try_into().expect("checked length"));
    } else {
        forwarding::ipv6_decrease_hop_limit((&mut ip[..IPV6_HLEN]).try_into().expect("checked length"));
    }
    let advmss = forwarding::dst_metric_advmss(metrics);
    let mss_clamped = match tcp {
        Some(off) if advmss != 0 => tcp_clamp_mss(&mut ip[off..], advmss),
        _ => false,
    };
    let packets = match fragment_to {
        None => vec![ip],
        Some(mtu) => match ip_fragment(&ip, mtu) {
            Some(fragments) => fragments,
            None => return Release::FragmentFailed,
        },
    };
    let frames = packets.iter().map(|p| with_l2(nh, ether_type, p)).collect();
    Release::Send { frames, mss_clamped }
}

/// `ip` behind the next hop's Ethernet header (and VLAN tag).
pub(super) fn with_l2(nh: &NextHop, ether_type: u16, ip: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(proto::ETH_HLEN + proto::VLAN_HLEN + ip.len());
    out.extend_from_slice(&nh.dmac);
    out.extend_from_slice(&nh.smac);
    if nh.vlan != 0 {
        out.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        out.extend_from_slice(&(nh.vlan & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(&ether_type.to_be_bytes());
    out.extend_from_slice(ip);
    out
}

/// The destination of the IP packet in `frame`: the neighbour a connected
/// route's packet waits for, and whose metrics it leaves with.
pub fn frame_destination(frame: &[u8]) -> Option<IpAddr> {
    let (ether_type, l3) = proto::ethernet_payload(frame)?;
    let ip = frame.get(l3..)?;
    match ether_type {
        ETH_P_IP if ip.len() >= IPV4_HLEN => Some(IpAddr::from([ip[16], ip[17], ip[18], ip[19]])),
        ETH_P_IPV6 if ip.len() >= IPV6_HLEN => Some(IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).expect("16 bytes"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Rtax;
    use common::{checksum, proto::IP_MF};

    fn key(s: &str) -> NeighbourKey {
        (3, s.parse().unwrap())
    }

    fn held(byte: u8) -> Held {
        Held::transit(2, vec![byte])
    }

    const NH: NextHop = NextHop { ifindex: 3, mtu: 1500, dmac: [9; 6], smac: [8; 6], vlan: 0, flags: NextHop::USABLE };
    const SRC: [u8; 4] = [10, 1, 0, 2];
    const DST: [u8; 4] = [10, 2, 0, 9];

    /// An IPv4 packet of `proto` carrying `l4`, with `frag` (DF, MF, offset)
    /// and a valid header checksum.
    fn v4(ttl: u8, frag: u16, proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, ttl, proto, 0, 0];
        ip.extend_from_slice(&SRC);
        ip.extend_from_slice(&DST);
        ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        let c = checksum::checksum(&ip).to_be_bytes();
        ip[10..12].copy_from_slice(&c);
        ip.extend_from_slice(l4);
        ip
    }

    fn frame(ether_type: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn udp4(ttl: u8, frag: u16, len: usize) -> Vec<u8> {
        frame(ETH_P_IP, &v4(ttl, frag, 17, &vec![7u8; len - 20]))
    }

    fn mtu(mtu: u32) -> RouteMetrics {
        let mut m = RouteMetrics::DEFAULT;
        m.set(Rtax::Mtu, mtu);
        m
    }

    fn sent(r: Release) -> Vec<Vec<u8>> {
        match r {
            Release::Send { frames, .. } => frames,
            other => panic!("not sent: {other:?}"),
        }
    }

    #[test]
    fn frames_wait_bounded_and_leave_in_order_or_time_out() {
        let t = Instant::now();
        let mut q = NeighbourQueue::new(2, 3, Duration::from_secs(3));
        assert!(q.hold(key("10.2.0.9"), held(1), t), "the first asks for resolution");
        assert!(!q.hold(key("10.2.0.9"), held(2), t));
        assert!(!q.hold(key("10.2.0.9"), held(3), t), "a full queue drops");
        assert!(q.hold(key("10.2.0.8"), held(4), t));
        assert!(!q.hold(key("10.2.0.7"), held(5), t), "the total is bounded too");
        assert_eq!(q.release(&key("10.2.0.9")), vec![held(1), held(2)]);
        assert_eq!(q.expire(t + Duration::from_secs(3)), 1);
        let s = q.stats;
        assert_eq!((s.held, s.released, s.timed_out, s.overflowed, s.waiting), (3, 2, 1, 2, 0));
    }

    #[test]
    fn a_released_frame_gets_new_macs_one_ttl_less_and_a_valid_header_checksum() {
        let mut f = udp4(64, IP_DF, 28);
        f.extend_from_slice(&[0; 4]); // Ethernet padding goes
        let out = sent(forward_frame(&f, &NH, &RouteMetrics::DEFAULT));
        assert_eq!(out.len(), 1);
        let out = &out[0];
        assert_eq!((&out[..6], &out[6..12]), (&[9u8; 6][..], &[8u8; 6][..]));
        assert_eq!(out.len(), 14 + 28);
        assert_eq!(out[14 + 8], 63);
        assert!(checksum::verifies(&out[14..34]), "IPv4 header checksum after the TTL decrement");
        assert_eq!(frame_destination(&f), Some("10.2.0.9".parse().unwrap()));
        let tagged = forward_frame(&f, &NextHop { vlan: 7, ..NH }, &RouteMetrics::DEFAULT);
        assert_eq!(&sent(tagged)[0][12..18], &[0x81, 0, 0, 7, 0x08, 0]);
    }

    #[test]
    fn the_destinations_private_mtu_applies_frag_needed_or_packet_too_big() {
        // 1400 bytes through a 1500-byte device, the destination's MTU 1300.
        let f = udp4(64, IP_DF, 1400);
        assert_eq!(sent(forward_frame(&f, &NH, &RouteMetrics::DEFAULT)).len(), 1, "the device's MTU alone lets it go");
        assert_eq!(forward_frame(&f, &NH, &mtu(1300)), Release::Error(ErrorKind::TooBig { mtu: 1300 }));
        assert_eq!(forward_frame(&udp4(64, IP_DF, 1501), &NH, &RouteMetrics::DEFAULT), Release::Error(ErrorKind::TooBig { mtu: 1500 }));
        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        v6[4..6].copy_from_slice(&1360u16.to_be_bytes());
        v6.extend_from_slice(&[0xfd; 32]);
        v6.extend_from_slice(&[0; 1360]);
        assert_eq!(forward_frame(&frame(ETH_P_IPV6, &v6), &NH, &mtu(1300)), Release::Error(ErrorKind::TooBig { mtu: 1300 }));
        let out = sent(forward_frame(&frame(ETH_P_IPV6, &v6), &NH, &mtu(1400)));
        assert_eq!(out[0][14 + 7], 63, "hop limit one less");
    }

    #[test]
    fn ttl_one_gets_time_exceeded_before_the_mtu_is_looked_at() {
        assert_eq!(forward_frame(&udp4(1, IP_DF, 100), &NH, &RouteMetrics::DEFAULT), Release::Error(ErrorKind::TimeExceeded));
        assert_eq!(forward_frame(&udp4(1, IP_DF, 1400), &NH, &mtu(1300)), Release::Error(ErrorKind::TimeExceeded));
        assert_eq!(sent(forward_frame(&udp4(2, IP_DF, 100), &NH, &RouteMetrics::DEFAULT))[0][14 + 8], 1, "TTL 2 leaves with 1");
        assert_eq!(forward_frame(&[0u8; 20], &NH, &RouteMetrics::DEFAULT), Release::Malformed);
        let down = NextHop { flags: NextHop::RESOLVED, ..NH };
        assert_eq!(forward_frame(&udp4(64, 0, 100), &down, &RouteMetrics::DEFAULT), Release::Unusable);
    }

    /// The TCP checksum of `tcp` over the IPv4 pseudo header verifies.
    fn tcp4_checksum_ok(tcp: &[u8]) -> bool {
        let mut pseudo = [SRC, DST].concat();
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        checksum::fold(checksum::sum_be_words(tcp, checksum::sum_be_words(&pseudo, 0))) == 0xffff
    }

    #[test]
    fn a_released_syn_has_its_mss_clamped_to_the_advmss_with_a_valid_checksum() {
        let mut tcp = vec![0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, 2, 4, 0x05, 0xb4];
        let mut pseudo = [SRC, DST].concat();
        pseudo.extend_from_slice(&[0, IPPROTO_TCP, 0, tcp.len() as u8]);
        let c = (!checksum::fold(checksum::sum_be_words(&tcp, checksum::sum_be_words(&pseudo, 0)))).to_be_bytes();
        tcp[16..18].copy_from_slice(&c);
        assert!(tcp4_checksum_ok(&tcp));
        let f = frame(ETH_P_IP, &v4(64, IP_DF, IPPROTO_TCP, &tcp));
        let mut m = RouteMetrics::DEFAULT;
        m.set(Rtax::Advmss, 1260);
        let Release::Send { frames, mss_clamped: true } = forward_frame(&f, &NH, &m) else { panic!("clamped and sent") };
        let out = &frames[0][34..];
        assert_eq!(u16::from_be_bytes([out[22], out[23]]), 1260);
        assert!(tcp4_checksum_ok(out), "TCP checksum after the clamp");
        assert!(checksum::verifies(&frames[0][14..34]));
        let Release::Send { mss_clamped: false, .. } = forward_frame(&f, &NH, &RouteMetrics::DEFAULT) else {
            panic!("no advmss, no clamp")
        };
    }

    #[test]
    fn df_clear_too_big_is_fragmented_on_8_byte_boundaries_with_copied_options() {
        // Options: record route (not copied) + NOP, router alert (copied).
        let opts = [7u8, 7, 4, 0, 0, 0, 0, 1, 0x94, 4, 0, 0];
        let mut ip = v4(64, 0, 17, &[]);
        ip.truncate(20);
        ip.extend_from_slice(&opts);
        ip[0] = 0x48;
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        ip.extend_from_slice(&payload);
        let len = ip.len() as u16;
        ip[2..4].copy_from_slice(&len.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&ip[..32]).to_be_bytes();
        ip[10..12].copy_from_slice(&c);
        let out = sent(forward_frame(&frame(ETH_P_IP, &ip), &NH, &mtu(500)));
        assert_eq!(out.len(), 3, "(500 - 32) & !7 = 464 bytes a fragment: 464 + 464 + 72");
        let mut reassembled = Vec::new();
        for (i, f) in out.iter().enumerate() {
            let p = &f[14..];
            assert!(p.len() <= 500);
            assert!(checksum::verifies(&p[..32]), "fragment {i}: header checksum");
            assert_eq!((p[0], &p[4..6], p[8]), (0x48, &[0x12, 0x34][..], 63), "fragment {i}: header length, id, TTL");
            let frag = u16::from_be_bytes([p[6], p[7]]);
            assert_eq!((frag & IP_OFFSET) as usize * 8, reassembled.len(), "fragment {i}: offset");
            assert_eq!(frag & IP_MF != 0, i < 2, "fragment {i}: MF");
            assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
            let expected_opts: &[u8] = if i == 0 { &opts } else { &[1, 1, 1, 1, 1, 1, 1, 1, 0x94, 4, 0, 0] };
            assert_eq!(&p[20..32], expected_opts, "fragment {i}: only copied options after the first");
            if i < 2 {
                assert_eq!((p.len() - 32) % 8, 0);
            }
            reassembled.extend_from_slice(&p[32..]);
        }
        assert_eq!(reassembled, payload);
        // A fragment fragmented again keeps its offset, and its MF in the last piece.
        let again = ip_fragment(&out[1][14..], 300).unwrap();
        let last = &again[again.len() - 1];
        assert_ne!(u16::from_be_bytes([last[6], last[7]]) & IP_MF, 0);
        assert_eq!(u16::from_be_bytes([again[0][6], again[0][7]]) & IP_OFFSET, 464 / 8);
        assert_eq!(forward_frame(&udp4(64, 0, 100), &NH, &mtu(27)), Release::FragmentFailed, "no room for 8 bytes");
    }

    proptest::proptest! {
        /// Frames off the wire into the release path: any bytes, any MTU,
        /// are released, answered or counted, never a panic; a fragment is
        /// never longer than the MTU.
        #[test]
        fn any_frame_is_released_answered_or_refused(
            frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1600),
            v4 in proptest::prelude::any::<bool>(),
            mtu in 0u32..2000,
        ) {
            let mut frame = frame;
            if frame.len() >= 14 {
                // Often a real EtherType, so the IP parsers are reached.
                let et: u16 = if v4 { 0x0800 } else { 0x86dd };
                frame[12..14].copy_from_slice(&et.to_be_bytes());
            }
            let nh = NextHop { ifindex: 3, mtu: 1500, dmac: [9; 6], smac: [8; 6], vlan: 0, flags: NextHop::USABLE };
            let mut metrics = RouteMetrics::DEFAULT;
            metrics.mtu = mtu;
            let _ = frame_destination(&frame);
            let _ = forward_frame(&frame, &nh, &metrics);
            if frame.len() > 14 {
                if let Some(frags) = ip_fragment(&frame[14..], mtu) {
                    for f in frags {
                        proptest::prop_assert!(f.len() as u32 <= mtu.max(68), "{} > {}", f.len(), mtu);
                    }
                }
            }
        }
    }
}
