//! Packets in transit that the fast path hands the agent to finish rather
//! than to answer: IPv4 with options, IPv6 with a hop-by-hop header, IPv4
//! with DF clear too big for its next hop. What the kernel does on receipt
//! ([`ip_options`], [`ipv6_hbh`]) happens here; the daemon then sends the
//! packet on through the neighbour queue's release (the forwarding rules,
//! fragmentation), so that kernel forwarding can stay off.

use crate::slow_path::{icmp::ErrorKind, ip_options, ipv6_hbh};
use common::{
    checksum,
    proto::{self, ETH_P_IP, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN, IPV6_NEXTHDR_HOP, IP_DF},
};
use std::sync::atomic::{AtomicU64, Ordering};

/// What the slow path did with packets in transit.
#[derive(Debug, Default)]
pub struct TransitStats {
    /// Handed over to be forwarded by the agent.
    pub frames: AtomicU64,
    /// IPv4 options processed and the packet sent on.
    pub options_forwarded: AtomicU64,
    /// IPv6 hop-by-hop headers read and the packet sent on.
    pub hop_by_hop_forwarded: AtomicU64,
    /// Source-routed packets dropped (`accept_source_route` off).
    pub source_routes_refused: AtomicU64,
    /// Parameter Problems due (sent unless rate limited or refused).
    pub parameter_problems: AtomicU64,
    /// Dropped as the kernel drops them without an error (a bad header
    /// checksum, a malformed hop-by-hop header, option action 01).
    pub header_drops: AtomicU64,
    /// No unicast route (or a multipath one) when the agent looked.
    pub no_route: AtomicU64,
    /// Packets sent on in fragments, and the fragments sent.
    pub fragmented: AtomicU64,
    pub fragments: AtomicU64,
}

impl TransitStats {
    pub fn snapshot(&self) -> TransitSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransitSnapshot {
            frames: g(&self.frames),
            options_forwarded: g(&self.options_forwarded),
            hop_by_hop_forwarded: g(&self.hop_by_hop_forwarded),
            source_routes_refused: g(&self.source_routes_refused),
            parameter_problems: g(&self.parameter_problems),
            header_drops: g(&self.header_drops),
            no_route: g(&self.no_route),
            fragmented: g(&self.fragmented),
            fragments: g(&self.fragments),
        }
    }

    pub fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// [`TransitStats`] read at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransitSnapshot {
    pub frames: u64,
    pub options_forwarded: u64,
    pub hop_by_hop_forwarded: u64,
    pub source_routes_refused: u64,
    pub parameter_problems: u64,
    pub header_drops: u64,
    pub no_route: u64,
    pub fragmented: u64,
    pub fragments: u64,
}

/// Is `frame` one the agent forwards itself, given why the fast path handed
/// it over? Options and hop-by-hop headers, link-local destinations; too
/// big with DF clear.
pub fn is_transit(reason: common::Reason, frame: &[u8]) -> bool {
    match reason {
        common::Reason::IpOptions | common::Reason::LinkLocalTransit => true,
        common::Reason::TooBig => match proto::ethernet_payload(frame) {
            Some((ETH_P_IP, l3)) => frame.get(l3 + 6).is_some_and(|b| u16::from(*b) << 8 & IP_DF == 0),
            _ => false,
        },
        _ => false,
    }
}

/// Is `frame` IPv6 from a link-local source that forwarding would take off
/// its link? `ip6_forward` answers it with Destination Unreachable (beyond
/// scope) once the hop limit has passed, unless it leaves by the ingress
/// interface (the redirect branch, which does not look).
pub fn leaves_source_scope(frame: &[u8], hairpin: bool) -> bool {
    let Some((ETH_P_IPV6, l3)) = proto::ethernet_payload(frame) else { return false };
    let Some(ip) = frame.get(l3..l3 + IPV6_HLEN) else { return false };
    let src = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).expect("16 bytes"));
    !hairpin && ip[7] > 1 && src.is_unicast_link_local()
}

/// What the kernel's receive path makes of a transit frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Send on (by the forwarding rules): the frame, its options processed;
    /// `options`: it had IPv4 options or IPv6 hop-by-hop options.
    Forward {
        frame: Vec<u8>,
        options: bool,
    },
    /// An ICMP error about the frame (as it arrived: the error processes
    /// its options as the receive path did, up to the bad one) is due.
    Error {
        frame: Vec<u8>,
        kind: ErrorKind,
    },
    SourceRouteRefused,
    /// Dropped silently, as the kernel does.
    Drop,
}

/// Processes `frame` (an Ethernet frame as it arrived) as the kernel's
/// receive path does before it forwards.
pub fn prepare(arrived: &[u8], ctx: &ip_options::Context) -> Prepared {
    let Some((ether_type, l3)) = proto::ethernet_payload(arrived) else { return Prepared::Drop };
    let mut frame = arrived.to_vec();
    let ip = &mut frame[l3..];
    match ether_type {
        ETH_P_IP if ip.len() >= IPV4_HLEN => {
            let ihl = (ip[0] & 0x0f) as usize * 4;
            // `ip_rcv_core`: the whole header's checksum.
            if ihl < IPV4_HLEN || ip.len() < ihl || !checksum::verifies(&ip[..ihl]) {
                return Prepared::Drop;
            }
            if ihl == IPV4_HLEN {
                return Prepared::Forward { frame, options: false };
            }
            match ip_options::forward_options(ip, ctx) {
                ip_options::Outcome::Forward => Prepared::Forward { frame, options: true },
                ip_options::Outcome::ParameterProblem { pointer } => {
                    Prepared::Error { frame: arrived.to_vec(), kind: ErrorKind::ParameterProblem { code: 0, pointer: pointer.into() } }
                }
                ip_options::Outcome::SourceRouteRefused => Prepared::SourceRouteRefused,
            }
        }
        ETH_P_IPV6 if ip.len() >= IPV6_HLEN => {
            if ip[6] != IPV6_NEXTHDR_HOP {
                return Prepared::Forward { frame, options: false };
            }
            let len = proto::ipv6_packet_len(ip).min(ip.len());
            match ipv6_hbh::parse_hopopts(&ip[..len]) {
                ipv6_hbh::Outcome::Forward => Prepared::Forward { frame, options: true },
                ipv6_hbh::Outcome::ParameterProblem { code, pointer } => {
                    Prepared::Error { frame, kind: ErrorKind::ParameterProblem { code, pointer } }
                }
                ipv6_hbh::Outcome::Drop => Prepared::Drop,
            }
        }
        _ => Prepared::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Reason;
    use std::net::Ipv4Addr;

    fn ctx() -> ip_options::Context<'static> {
        ip_options::Context {
            ingress: Ipv4Addr::new(10, 1, 0, 1),
            egress: Ipv4Addr::new(10, 2, 0, 1),
            accept_source_route: false,
            now_ms: 0,
            is_local: &|_| false,
        }
    }

    fn eth(ether_type: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn v4(opts: &[u8], frag: u16) -> Vec<u8> {
        let ihl = 20 + opts.len();
        let mut ip = vec![0x40 | (ihl / 4) as u8, 0, 0, ihl as u8 + 4, 0, 7, 0, 0, 64, 17, 0, 0, 10, 1, 0, 2, 10, 2, 0, 2];
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(opts);
        let c = checksum::checksum(&ip).to_be_bytes();
        ip[10..12].copy_from_slice(&c);
        ip.extend_from_slice(&[1, 2, 3, 4]);
        eth(ETH_P_IP, &ip)
    }

    #[test]
    fn options_are_processed_and_bad_ones_answered_or_dropped() {
        let Prepared::Forward { frame, options: true } = prepare(&v4(&[7, 7, 4, 0, 0, 0, 0, 0], 0), &ctx()) else { panic!("forwarded") };
        assert_eq!(&frame[14 + 20..14 + 28], &[7, 7, 8, 10, 2, 0, 1, 0]);
        assert!(checksum::verifies(&frame[14..14 + 28]));
        let Prepared::Error { kind, .. } = prepare(&v4(&[7, 2, 4, 0], 0), &ctx()) else { panic!("an error") };
        assert_eq!(kind, ErrorKind::ParameterProblem { code: 0, pointer: 21 });
        assert_eq!(prepare(&v4(&[131, 7, 4, 10, 3, 0, 1, 0], 0), &ctx()), Prepared::SourceRouteRefused);
        let mut bad_sum = v4(&[1, 1, 1, 1], 0);
        bad_sum[14 + 10] ^= 1;
        assert_eq!(prepare(&bad_sum, &ctx()), Prepared::Drop, "the header checksum covers the options");
    }

    #[test]
    fn only_df_clear_ipv4_too_big_and_options_are_transit() {
        assert!(is_transit(Reason::TooBig, &v4(&[], 0)));
        assert!(!is_transit(Reason::TooBig, &v4(&[], IP_DF)));
        assert!(is_transit(Reason::IpOptions, &v4(&[1, 1, 1, 1], IP_DF)));
        assert!(!is_transit(Reason::TtlExceeded, &v4(&[], 0)));
        let v6 = eth(ETH_P_IPV6, &[0x60; 48]);
        assert!(!is_transit(Reason::TooBig, &v6), "IPv6 never fragments in transit");
        let Prepared::Forward { options: false, .. } = prepare(&v4(&[], 0), &ctx()) else { panic!("as it is") };
    }

    #[test]
    fn a_link_local_source_is_out_of_scope_off_its_link_with_hops_left() {
        let mut ip = [0u8; 48];
        ip[0] = 0x60;
        ip[7] = 64;
        ip[8..10].copy_from_slice(&[0xfe, 0x80]);
        assert!(leaves_source_scope(&eth(ETH_P_IPV6, &ip), false));
        assert!(!leaves_source_scope(&eth(ETH_P_IPV6, &ip), true), "back out of its link: no check");
        ip[7] = 1;
        assert!(!leaves_source_scope(&eth(ETH_P_IPV6, &ip), false), "the hop limit answers first");
        ip[7] = 64;
        ip[8] = 0xfd;
        assert!(!leaves_source_scope(&eth(ETH_P_IPV6, &ip), false));
        assert!(!leaves_source_scope(&v4(&[], 0), false));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, ..Default::default() })]

        /// Whatever arrives (options and hop-by-hop headers of any bytes,
        /// any frame at all), processing never panics, and what it sends on
        /// or quotes is the frame it got, options rewritten in place.
        #[test]
        fn any_options_or_frame_are_processed_without_panic(
            opts in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=40),
            hbh in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            accept in proptest::prelude::any::<bool>(),
        ) {
            let ctx = ip_options::Context { accept_source_route: accept, is_local: &|a| a.octets()[3] == 1, ..ctx() };
            let mut opts = opts;
            opts.truncate(opts.len() / 4 * 4);
            let mut v6 = vec![0x60, 0, 0, 0, 0, hbh.len() as u8, IPV6_NEXTHDR_HOP, 64];
            v6.extend_from_slice(&[0xfd; 32]);
            v6.extend_from_slice(&hbh);
            for frame in [v4(&opts, 0), eth(ETH_P_IPV6, &v6), junk.clone(), eth(ETH_P_IP, &junk), eth(ETH_P_IPV6, &junk)] {
                match prepare(&frame, &ctx) {
                    Prepared::Forward { frame: out, .. } | Prepared::Error { frame: out, .. } => {
                        proptest::prop_assert_eq!(out.len(), frame.len())
                    }
                    Prepared::SourceRouteRefused | Prepared::Drop => {}
                }
                let _ = is_transit(Reason::TooBig, &frame);
            }
        }
    }
}
