//! Path-MTU learning over genuine and forged reports.

use super::*;
use crate::{
    dataplane::map_writer::memory::MemoryMaps,
    fib::netlink_mirror::{Event, Link},
    rib::{Capacities, RouteInput},
    slow_path::pmtu_report::forge::{frag_needed, packet_too_big},
};
use common::{RouteKind, RouteMetrics};

/// gen side: if 2 (10.1.0.0/24, fd00:1::/64); sink side: if 3 (10.2.0.0/24,
/// and 10.7/16, 10.8/24 (MTU locked at 1400), 10.6/24 (MTU 1200), fd00:7::/64
/// behind 10.2.0.2); if 4 (MTU 1280) with 10.9.0.0/24.
fn rib(pool: u32) -> (Rib<MemoryMaps>, Instant) {
    let now = Instant::now();
    let mut rib = Rib::new(
        MemoryMaps::default(),
        Capacities { metrics_ro: 8, metrics_rw: pool, nexthops: 16, nexthop_groups: 2 },
        Duration::from_secs(1),
    );
    for (index, mtu) in [(2, 1500), (3, 1500), (4, 1280)] {
        let link = Link { index, name: format!("if{index}"), mac: [index as u8; 6], mtu, up: true, vlan: None, rx_queues: 1 };
        rib.apply(Event::Link(link), now).unwrap();
    }
    let mut locked = RouteMetrics::DEFAULT;
    locked.set(Rtax::Mtu, 1400);
    locked.lock |= Rtax::Mtu.lock_bit();
    let mut small = RouteMetrics::DEFAULT;
    small.set(Rtax::Mtu, 1200);
    let routes: [(&str, u32, Option<&str>, RouteMetrics); 9] = [
        ("10.1.0.0/24", 2, None, RouteMetrics::DEFAULT),
        ("10.2.0.0/24", 3, None, RouteMetrics::DEFAULT),
        ("10.7.0.0/16", 3, Some("10.2.0.2"), RouteMetrics::DEFAULT),
        ("10.8.0.0/24", 3, Some("10.2.0.2"), locked),
        ("10.6.0.0/24", 3, Some("10.2.0.2"), small),
        ("10.9.0.0/24", 4, Some("10.4.0.2"), RouteMetrics::DEFAULT),
        ("fd00:1::/64", 2, None, RouteMetrics::DEFAULT),
        ("fd00:2::/64", 3, None, RouteMetrics::DEFAULT),
        ("fd00:7::/64", 3, Some("fd00:2::2"), RouteMetrics::DEFAULT),
    ];
    for (prefix, dev, via, metrics) in routes {
        let input = RouteInput::new(prefix.parse().unwrap(), RouteKind::Unicast, Some(dev), via.map(|v| v.parse().unwrap()), metrics);
        rib.set_route(input, now).unwrap();
    }
    (rib, now)
}

fn learner(pool: u32) -> Learner {
    Learner::new(PmtuSettings::new(PmtuLearning::On, None, pool), Instant::now())
}

const SINK: [u8; 4] = [10, 2, 0, 2];
const GEN: [u8; 4] = [10, 1, 0, 2];
const EXPIRES: Duration = Duration::from_secs(600);

fn mtu_of(rib: &Rib<MemoryMaps>, dest: &str, now: Instant) -> u32 {
    rib.destination_metrics(dest.parse().unwrap(), now).unwrap().values.get("mtu").copied().unwrap_or(0)
}

/// Every report counted once: learned, or under one reason.
fn assert_counted_once(s: &PmtuStats) {
    assert_eq!(s.learned + s.refusals().iter().map(|(_, n)| n).sum::<u64>(), s.reports, "{s:?}");
}

#[test]
fn a_genuine_report_lowers_mtu_and_advmss_once_and_never_below_the_minimum() {
    let (mut rib, now) = rib(8);
    let mut l = learner(8);
    l.learn(&mut rib, &frag_needed(3, SINK, GEN, [10, 7, 0, 2], 1300), EXPIRES, now);
    let m = rib.destination_metrics("10.7.0.2".parse().unwrap(), now).unwrap();
    assert_eq!((m.values["mtu"], m.values["advmss"]), (1300, 1260));
    assert!(m.reference.starts_with("rw:") && m.overrides.iter().all(|o| o.source == Source::Learned && o.expires_in == Some(600)));
    l.learn(&mut rib, &frag_needed(3, SINK, GEN, [10, 7, 0, 2], 1350), EXPIRES, now);
    assert_eq!(mtu_of(&rib, "10.7.0.2", now), 1300, "never raised by a report");
    l.learn(&mut rib, &frag_needed(3, SINK, GEN, [10, 7, 0, 3], 68), EXPIRES, now);
    assert_eq!(mtu_of(&rib, "10.7.0.3", now), 552, "clamped to 552");
    l.learn(&mut rib, &frag_needed(3, SINK, GEN, [10, 8, 0, 2], 1300), EXPIRES, now);
    assert_eq!(mtu_of(&rib, "10.8.0.2", now), 1400, "a locked MTU stays");
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
    l.learn(&mut rib, &packet_too_big(3, v6("fd00:2::2"), v6("fd00:1::2"), v6("fd00:7::2"), 1300), EXPIRES, now);
    assert_eq!(mtu_of(&rib, "fd00:7::2", now), 1300);
    l.learn(&mut rib, &packet_too_big(3, v6("fd00:2::2"), v6("fd00:1::2"), v6("fd00:7::3"), 1000), EXPIRES, now);
    assert_eq!(mtu_of(&rib, "fd00:7::3", now), 1280, "clamped to 1280");
    let s = l.stats;
    assert_eq!((s.reports, s.learned, s.not_lower, s.locked), (6, 4, 1, 1), "{s:?}");
    assert_counted_once(&s);
}

#[test]
fn forged_reports_teach_nothing_and_each_is_counted() {
    let (mut rib, now) = rib(8);
    let mut l = learner(8);
    let private = |rib: &Rib<MemoryMaps>| rib.private_copies().count();
    // A bad checksum.
    let mut bad = frag_needed(3, SINK, GEN, [10, 7, 0, 2], 1300);
    bad.packet[27] ^= 1;
    l.learn(&mut rib, &bad, EXPIRES, now);
    // A destination behind the gen side, reported from the sink side.
    l.learn(&mut rib, &frag_needed(3, SINK, [10, 7, 0, 9], [10, 1, 0, 5], 1300), EXPIRES, now);
    // The quoted source on the reporter's own side.
    l.learn(&mut rib, &frag_needed(3, SINK, [10, 7, 0, 9], [10, 7, 0, 2], 1300), EXPIRES, now);
    // A destination this router has no route to.
    l.learn(&mut rib, &frag_needed(3, SINK, GEN, [192, 0, 2, 1], 1300), EXPIRES, now);
    // Above the egress device's MTU (1280), and above the route's (1200).
    l.learn(&mut rib, &frag_needed(4, [10, 4, 0, 2], GEN, [10, 9, 0, 2], 1300), EXPIRES, now);
    l.learn(&mut rib, &frag_needed(3, SINK, GEN, [10, 6, 0, 2], 1300), EXPIRES, now);
    // A quote that fits the MTU it reports, and one to someone else.
    l.learn(&mut rib, &frag_needed(3, SINK, GEN, [10, 7, 0, 2], 1400), EXPIRES, now);
    l.learn(&mut rib, &frag_needed(3, [127, 0, 0, 1], GEN, [10, 7, 0, 2], 1300), EXPIRES, now);
    assert_eq!(private(&rib), 0, "nothing learned");
    let s = l.stats;
    assert_eq!((s.bad_checksum, s.not_forwarded, s.above_mtu, s.bad_quote, s.bogus_address), (1, 3, 2, 1, 1), "{s:?}");
    assert_counted_once(&s);
    // Learning off: even a genuine one is refused.
    let mut off = Learner::new(PmtuSettings::new(PmtuLearning::Off, None, 8), now);
    off.learn(&mut rib, &frag_needed(3, SINK, GEN, [10, 7, 0, 2], 1300), EXPIRES, now);
    assert_eq!((off.stats.disabled, private(&rib)), (1, 0));
}

#[test]
fn a_flood_from_one_source_or_about_one_destination_is_rate_limited() {
    let (mut rib, now) = rib(64);
    let mut l = learner(64);
    for i in 1..=40u8 {
        l.learn(&mut rib, &frag_needed(3, SINK, GEN, [10, 7, 0, i], 1300), EXPIRES, now);
    }
    assert_eq!((l.stats.learned, l.stats.rate_limited_source), (6, 34), "a burst of 6 from one reporter: {:?}", l.stats);
    // A tenth of a second later, one more.
    l.learn(&mut rib, &frag_needed(3, SINK, GEN, [10, 7, 0, 99], 1300), EXPIRES, now + Duration::from_millis(100));
    assert_eq!(l.stats.learned, 7);
    // Many reporters, one destination, each lower than the last.
    let mut l = learner(64);
    for i in 0..20u16 {
        l.learn(&mut rib, &frag_needed(3, [10, 2, 1, i as u8], GEN, [10, 7, 1, 1], 1300 - i), EXPIRES, now);
    }
    assert_eq!((l.stats.learned, l.stats.rate_limited_destination), (6, 14), "{:?}", l.stats);
    assert_counted_once(&l.stats);
}

#[test]
fn learned_copies_have_a_quota_below_the_pool_so_operator_writes_find_slots() {
    let (mut rib, now) = rib(8);
    let mut l = learner(8);
    assert_eq!(l.settings().max_learned, 4, "half the pool by default");
    for i in 1..=20u8 {
        // A fresh reporter and destination each time: no rate limit applies.
        l.learn(&mut rib, &frag_needed(3, [10, 2, 0, 10 + i], GEN, [10, 7, 2, i], 1300), EXPIRES, now);
    }
    assert_eq!((l.stats.learned, l.stats.quota), (4, 16), "{:?}", l.stats);
    assert_eq!(rib.learned_copies(), 4);
    // An already learned destination may still be lowered.
    l.learn(&mut rib, &frag_needed(3, [10, 2, 0, 200], GEN, [10, 7, 2, 1], 1200), EXPIRES, now);
    assert_eq!(mtu_of(&rib, "10.7.2.1", now), 1200);
    for i in 1..=4u8 {
        let dest = IpAddr::from([10, 7, 3, i]);
        rib.cow_metrics(dest, Rtax::Mtu, 1400, Source::Operator, None, now).expect("the operator finds a slot");
    }
    assert_counted_once(&l.stats);
    // A quota at or above the pool is held below it.
    assert_eq!(PmtuSettings::new(PmtuLearning::On, Some(100), 8).max_learned, 7);
}
