//! Path-MTU learning: the fast path reports every Fragmentation Needed /
//! Packet Too Big it forwards (`PMTU_EVENTS`); the agent copies-on-write
//! that destination's MTU (a learned override, expiring like the kernel's
//! PMTU cache) and its ADVMSS (the MTU less the IP and TCP headers). From
//! then on the fast path answers oversized packets to it with an ICMP error
//! of its own, and clamps the MSS of SYNs to it, which saves connections
//! behind hops that filter ICMP.

use crate::{
    rib::cow::{CowError, Source},
    rib::{MapSink, Rib},
};
use common::{slow_path::PmtuEvent, Rtax};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

/// The kernel's `ip_rt_min_pmtu` (RFC 791's 576 less some headroom).
pub const MIN_PMTU_V4: u32 = 552;
/// RFC 8200: every IPv6 link carries 1280.
pub const MIN_PMTU_V6: u32 = 1280;

/// What became of the reports, for `Stats` and Prometheus.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PmtuStats {
    pub reports: u64,
    /// A destination's MTU lowered.
    pub learned: u64,
    /// Not below what the destination already has.
    pub not_lower: u64,
    /// The route's MTU is locked.
    pub locked: u64,
    /// No route, a local or non-unicast destination, a full pool, a bad report.
    pub refused: u64,
}

/// The destination and the MTU to learn, clamped to the family's minimum.
pub fn parse(event: &PmtuEvent) -> Option<(IpAddr, u32)> {
    match event.family {
        4 => {
            let d = &event.dst;
            Some((IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])), event.mtu.max(MIN_PMTU_V4)))
        }
        6 => Some((IpAddr::V6(Ipv6Addr::from(event.dst)), event.mtu.max(MIN_PMTU_V6))),
        _ => None,
    }
}

/// IP and TCP headers: what an MSS leaves of the MTU.
fn tcp_overhead(dest: IpAddr) -> u32 {
    if dest.is_ipv4() {
        40
    } else {
        60
    }
}

/// Learns one report: lowers `dest`'s MTU (and ADVMSS) in its private copy.
pub fn learn<S: MapSink>(rib: &mut Rib<S>, event: &PmtuEvent, expires: Duration, stats: &mut PmtuStats, now: Instant) {
    stats.reports += 1;
    let Some((dest, mtu)) = parse(event) else {
        stats.refused += 1;
        return;
    };
    let current = rib.destination_metrics(dest, now).and_then(|m| m.values.get("mtu").copied()).unwrap_or(0);
    if current != 0 && mtu >= current {
        stats.not_lower += 1;
        return;
    }
    let expires = (!expires.is_zero()).then(|| now + expires);
    let result = rib
        .cow_metrics(dest, Rtax::Mtu, mtu, Source::Learned, expires, now)
        .and_then(|()| rib.cow_metrics(dest, Rtax::Advmss, mtu - tcp_overhead(dest), Source::Learned, expires, now));
    match result {
        Ok(()) => {
            stats.learned += 1;
            tracing::info!(%dest, mtu, "path MTU learned");
        }
        Err(CowError::Locked { .. }) => stats.locked += 1,
        Err(e) => {
            stats.refused += 1;
            tracing::debug!(%dest, mtu, error = %e, "path MTU not learned");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dataplane::map_writer::memory::MemoryMaps,
        fib::netlink_mirror::{Event, Link},
        rib::{Capacities, RouteInput},
    };
    use common::{RouteKind, RouteMetrics};

    fn rib() -> (Rib<MemoryMaps>, Instant) {
        let now = Instant::now();
        let mut rib = Rib::new(
            MemoryMaps::default(),
            Capacities { metrics_ro: 8, metrics_rw: 8, nexthops: 8, nexthop_groups: 2 },
            Duration::from_secs(1),
        );
        rib.apply(Event::Link(Link { index: 2, name: "a".into(), mac: [2; 6], mtu: 1500, up: true, vlan: None, rx_queues: 1 }), now)
            .unwrap();
        let mut locked = RouteMetrics::DEFAULT;
        locked.set(Rtax::Mtu, 1400);
        locked.lock |= Rtax::Mtu.lock_bit();
        rib.set_route(
            RouteInput::new(
                "10.7.0.0/24".parse().unwrap(),
                RouteKind::Unicast,
                Some(2),
                Some("10.2.0.2".parse().unwrap()),
                RouteMetrics::DEFAULT,
            ),
            now,
        )
        .unwrap();
        rib.set_route(
            RouteInput::new("10.8.0.0/24".parse().unwrap(), RouteKind::Unicast, Some(2), Some("10.2.0.2".parse().unwrap()), locked),
            now,
        )
        .unwrap();
        (rib, now)
    }

    #[test]
    fn a_report_lowers_mtu_and_advmss_once_and_never_below_the_minimum() {
        let (mut rib, now) = rib();
        let mut stats = PmtuStats::default();
        learn(&mut rib, &PmtuEvent::v4([10, 7, 0, 2], 1300), Duration::from_secs(600), &mut stats, now);
        let m = rib.destination_metrics("10.7.0.2".parse().unwrap(), now).unwrap();
        assert_eq!((m.values["mtu"], m.values["advmss"]), (1300, 1260));
        assert!(m.reference.starts_with("rw:") && m.overrides.iter().all(|o| o.source == Source::Learned && o.expires_in == Some(600)));
        learn(&mut rib, &PmtuEvent::v4([10, 7, 0, 2], 1400), Duration::from_secs(600), &mut stats, now);
        assert_eq!(rib.destination_metrics("10.7.0.2".parse().unwrap(), now).unwrap().values["mtu"], 1300, "never raised by a report");
        learn(&mut rib, &PmtuEvent::v4([10, 7, 0, 3], 68), Duration::from_secs(600), &mut stats, now);
        assert_eq!(rib.destination_metrics("10.7.0.3".parse().unwrap(), now).unwrap().values["mtu"], 552, "clamped to 552");
        learn(&mut rib, &PmtuEvent::v4([10, 8, 0, 2], 1300), Duration::from_secs(600), &mut stats, now);
        assert_eq!(rib.destination_metrics("10.8.0.2".parse().unwrap(), now).unwrap().values["mtu"], 1400, "a locked MTU stays");
        learn(&mut rib, &PmtuEvent::v4([192, 0, 2, 1], 1300), Duration::from_secs(600), &mut stats, now);
        assert_eq!(stats, PmtuStats { reports: 5, learned: 2, not_lower: 1, locked: 1, refused: 1 });
    }
}
