//! The forwarding rules, one definition for the XDP program and for the
//! agent (frames it releases from the neighbour queue): whatever leaves the
//! router passes the same checks, in the kernel's order.
//!
//! The kernel's order (net/ipv4/ip_forward.c, net/ipv6/ip6_output.c): the
//! route (looked up on input, its type decided), then in `ip_forward` the
//! TTL (`ttl <= 1`: Time Exceeded), then the MTU (`ip_exceeds_mtu` against
//! `ip_dst_mtu_maybe_forward`: the route's `RTAX_MTU`, else the device's;
//! DF clear means `ip_fragment` later, in `ip_finish_output`), then TTL minus
//! one, and last the neighbour (`neigh_output`: an unresolved one queues).
//! The accessors are named after include/net/dst.h.

use crate::{proto::IPV4_HLEN, proto::IPV6_HLEN, NextHop, RouteMetrics};

/// `dst_mtu`: the route's (or the destination's private) `RTAX_MTU` when
/// set, else the egress device's MTU.
#[inline(always)]
pub const fn dst_mtu(metrics: &RouteMetrics, nh: &NextHop) -> u32 {
    if metrics.mtu != 0 {
        metrics.mtu
    } else {
        nh.mtu
    }
}

/// `dst_metric_advmss`: the MSS SYNs are clamped to; 0 when not set.
#[inline(always)]
pub const fn dst_metric_advmss(metrics: &RouteMetrics) -> u32 {
    metrics.advmss
}

/// What the rules make of a packet, the first failing check winning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarding {
    /// Every check passed: TTL minus one, MSS clamped, out it goes.
    Forward,
    /// The egress link is not up (or not known): no device to send on, the
    /// kernel's to decide (it checks TTL and MTU itself).
    LinkDown,
    /// TTL / hop limit would reach zero: ICMP Time Exceeded.
    TtlExceeded,
    /// Longer than `mtu`. `may_fragment` (IPv4 with DF clear): the kernel
    /// fragments it; otherwise Fragmentation Needed / Packet Too Big.
    TooBig { mtu: u32, may_fragment: bool },
    /// Fits, but the neighbour is not resolved yet: wait for it.
    NoNeighbour,
}

/// What the checks read of a packet, whatever its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpFacts {
    /// TTL or hop limit.
    pub ttl: u8,
    /// Length from the IP header on: what the MTU limits.
    pub len: u32,
    /// IPv4 with DF clear.
    pub may_fragment: bool,
}

/// The checks in the kernel's order: link, TTL, MTU, neighbour.
#[inline(always)]
pub const fn ip_forward_check(ip: &IpFacts, metrics: &RouteMetrics, nh: &NextHop) -> Forwarding {
    if nh.flags & NextHop::LINK_UP == 0 {
        return Forwarding::LinkDown;
    }
    if ip.ttl <= 1 {
        return Forwarding::TtlExceeded;
    }
    let mtu = dst_mtu(metrics, nh);
    if ip.len > mtu {
        return Forwarding::TooBig { mtu, may_fragment: ip.may_fragment };
    }
    if nh.flags & NextHop::RESOLVED == 0 {
        return Forwarding::NoNeighbour;
    }
    Forwarding::Forward
}

/// `ip_decrease_ttl`: TTL minus one, the header checksum updated as
/// RFC 1624 says (TTL and protocol are the header's fifth 16-bit word).
#[inline(always)]
pub fn ip_decrease_ttl(hdr: &mut [u8; IPV4_HLEN]) {
    let old = u16::from_be_bytes([hdr[8], hdr[9]]);
    hdr[8] = hdr[8].wrapping_sub(1);
    let new = u16::from_be_bytes([hdr[8], hdr[9]]);
    let check = crate::checksum::replace_u16(u16::from_be_bytes([hdr[10], hdr[11]]), old, new);
    [hdr[10], hdr[11]] = check.to_be_bytes();
}

/// Hop limit minus one (IPv6 has no header checksum).
#[inline(always)]
pub fn ipv6_decrease_hop_limit(hdr: &mut [u8; IPV6_HLEN]) {
    hdr[7] = hdr[7].wrapping_sub(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{checksum, Rtax};

    const RESOLVED: NextHop = NextHop { ifindex: 3, mtu: 1500, dmac: [9; 6], smac: [8; 6], vlan: 0, flags: NextHop::USABLE };
    const UNRESOLVED: NextHop = NextHop { flags: NextHop::LINK_UP, ..RESOLVED };

    fn metrics(mtu: u32) -> RouteMetrics {
        let mut m = RouteMetrics::DEFAULT;
        m.set(Rtax::Mtu, mtu);
        m
    }

    fn ip(ttl: u8, len: u32, may_fragment: bool) -> IpFacts {
        IpFacts { ttl, len, may_fragment }
    }

    #[test]
    fn the_route_mtu_wins_over_the_device_mtu() {
        assert_eq!(dst_mtu(&RouteMetrics::DEFAULT, &RESOLVED), 1500);
        assert_eq!(dst_mtu(&metrics(1300), &RESOLVED), 1300);
        assert_eq!(dst_mtu(&metrics(9000), &RESOLVED), 9000, "RTAX_MTU applies even above the device's, as ip_dst_mtu_maybe_forward");
        let mut m = RouteMetrics::DEFAULT;
        m.set(Rtax::Advmss, 1260);
        assert_eq!((dst_metric_advmss(&m), dst_metric_advmss(&RouteMetrics::DEFAULT)), (1260, 0));
    }

    #[test]
    fn checks_run_in_the_kernels_order_ttl_mtu_neighbour() {
        let m = metrics(1300);
        assert_eq!(ip_forward_check(&ip(64, 1300, false), &m, &RESOLVED), Forwarding::Forward);
        // TTL first: even too big and towards an unresolved neighbour.
        assert_eq!(ip_forward_check(&ip(1, 1400, false), &m, &UNRESOLVED), Forwarding::TtlExceeded);
        assert_eq!(ip_forward_check(&ip(0, 100, false), &m, &RESOLVED), Forwarding::TtlExceeded);
        // Then the MTU, before the neighbour.
        let too_big = Forwarding::TooBig { mtu: 1300, may_fragment: false };
        assert_eq!(ip_forward_check(&ip(64, 1301, false), &m, &UNRESOLVED), too_big);
        assert_eq!(ip_forward_check(&ip(2, 1301, true), &m, &RESOLVED), Forwarding::TooBig { mtu: 1300, may_fragment: true });
        // Last the neighbour.
        assert_eq!(ip_forward_check(&ip(2, 1300, false), &m, &UNRESOLVED), Forwarding::NoNeighbour);
        // No link: the kernel's, whatever the packet.
        let down = NextHop { flags: NextHop::RESOLVED, ..RESOLVED };
        assert_eq!(ip_forward_check(&ip(1, 1400, false), &m, &down), Forwarding::LinkDown);
        assert_eq!(ip_forward_check(&ip(64, 100, false), &m, &NextHop::default()), Forwarding::LinkDown);
    }

    #[test]
    fn ttl_decrement_keeps_the_header_checksum_valid() {
        for ttl in [2u8, 64, 255, 0x80, 0x81] {
            let mut h = [0x45, 0, 0, 0x73, 0, 0, 0x40, 0, ttl, 0x11, 0, 0, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0, 0xc7];
            let c = checksum::checksum(&h).to_be_bytes();
            h[10..12].copy_from_slice(&c);
            ip_decrease_ttl(&mut h);
            assert_eq!(h[8], ttl - 1);
            assert!(checksum::verifies(&h), "ttl {ttl}");
        }
        let mut h6 = [0u8; IPV6_HLEN];
        h6[7] = 64;
        ipv6_decrease_hop_limit(&mut h6);
        assert_eq!(h6[7], 63);
    }
}
