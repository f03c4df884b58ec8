//! The RIB against in-memory maps.

use super::*;
use crate::{
    dataplane::map_writer::memory::MemoryMaps,
    rib::{
        cow::{CowError, Source},
        ecmp::Leg,
    },
};
use common::Rtax;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

fn rib() -> (Rib<MemoryMaps>, Instant) {
    rib_on(MemoryMaps::default())
}

fn rib_on(maps: MemoryMaps) -> (Rib<MemoryMaps>, Instant) {
    let now = Instant::now();
    let mut rib = Rib::new(maps, Capacities { metrics_ro: 64, metrics_rw: 8, nexthops: 64, nexthop_groups: 16 }, Duration::from_secs(1));
    for (index, mac) in [(2, MAC_A), (3, MAC_B)] {
        let link = Link { index, name: format!("if{index}"), mac, mtu: 1500, up: true, vlan: None, rx_queues: 1 };
        rib.apply(Event::Link(link), now).unwrap();
    }
    (rib, now)
}

fn route(prefix: &str, dev: u32, via: Option<&str>, mtu: u32) -> RouteInput {
    let mut metrics = RouteMetrics::DEFAULT;
    metrics.set(Rtax::Mtu, mtu);
    RouteInput::new(prefix.parse().unwrap(), RouteKind::Unicast, Some(dev), via.map(|v| v.parse().unwrap()), metrics)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn multipath_routes_share_a_group_that_rebalances_over_usable_legs() {
    let (mut rib, now) = rib();
    let legs = vec![
        Leg { dev: 2, via: Some("10.1.0.9".parse().unwrap()), weight: 1 },
        Leg { dev: 3, via: Some("10.2.0.9".parse().unwrap()), weight: 1 },
    ];
    let ecmp =
        |p: &str| RouteInput::new(net(p), RouteKind::Unicast, None, None, RouteMetrics::DEFAULT).with(|a| a.multipath = legs.clone());
    rib.set_route(ecmp("10.8.0.0/16"), now).unwrap();
    rib.set_route(ecmp("10.7.0.0/16"), now).unwrap();
    let e = rib.sink().routes[&net("10.8.0.0/16")];
    assert!(e.is_multipath());
    assert_eq!(rib.sink().routes[&net("10.7.0.0/16")].nexthop, e.nexthop, "same legs, one group");
    assert_eq!((rib.summary().nexthop_groups, rib.summary().nexthops), (1, 2));
    let buckets = |rib: &Rib<MemoryMaps>| {
        let mut legs: Vec<u32> = rib.sink().groups[&e.nexthop].buckets.to_vec();
        legs.sort();
        legs.dedup();
        legs
    };
    assert_eq!(buckets(&rib).len(), 2, "no leg usable: both take part");
    // Only the second leg resolves: every bucket goes to it.
    rib.apply(Event::Neighbour { index: 3, addr: "10.2.0.9".parse().unwrap(), mac: Some([9; 6]) }, now).unwrap();
    let only = buckets(&rib);
    assert_eq!(only.len(), 1);
    assert_eq!(rib.sink().nexthops[&only[0]].ifindex, 3);
    rib.apply(Event::Neighbour { index: 2, addr: "10.1.0.9".parse().unwrap(), mac: Some([8; 6]) }, now).unwrap();
    assert_eq!(buckets(&rib).len(), 2);
    // Link 2 down: its leg leaves the buckets.
    let link = Link { index: 2, name: "if2".into(), mac: MAC_A, mtu: 1500, up: false, vlan: None, rx_queues: 1 };
    rib.apply(Event::Link(link), now).unwrap();
    assert_eq!(buckets(&rib), only);
    // Both routes gone: the group and its legs are released.
    rib.delete_route(&net("10.8.0.0/16"), now).unwrap();
    assert_eq!(rib.summary().nexthop_groups, 1);
    rib.delete_route(&net("10.7.0.0/16"), now).unwrap();
    assert_eq!((rib.summary().nexthop_groups, rib.summary().nexthops), (0, 0));
}

#[test]
fn adoption_allocates_around_the_earlier_slots_and_sweeps_what_is_gone() {
    let (mut old, now) = rib();
    old.set_route(route("10.9.0.0/16", 3, Some("10.2.0.2"), 1400), now).unwrap();
    old.set_route(route("10.8.0.0/16", 3, Some("10.2.0.3"), 1300), now).unwrap();
    let maps = old.into_sink();
    let adopted = Adopted {
        prefixes: maps.routes.keys().copied().collect(),
        metrics_ro: maps.routes.values().map(|e| e.metrics.slot()).collect(),
        nexthops: maps.routes.values().map(|e| e.nexthop).collect(),
        ..Adopted::default()
    };
    let (mut new, now) = rib_on(maps);
    new.adopt(adopted.clone());
    new.set_route(route("10.9.0.0/16", 3, Some("10.2.0.2"), 1200), now).unwrap();
    let e = new.sink().routes[&net("10.9.0.0/16")];
    assert!(!adopted.metrics_ro.contains(&e.metrics.slot()), "a fresh RO slot: the earlier one may still be read");
    assert!(!adopted.nexthops.contains(&e.nexthop), "a fresh next hop");
    assert!(new.sink().routes.contains_key(&net("10.8.0.0/16")), "the earlier route forwards until the sweep");
    let r = new.sweep_adopted(now).unwrap();
    assert_eq!((r.routes_kept, r.routes_removed), (1, 1));
    assert!(!new.sink().routes.contains_key(&net("10.8.0.0/16")));
    assert_eq!(r.slots_released, 4, "two RO slots and two next hops");
}

#[test]
fn adoption_keeps_private_copies_with_their_sources_and_expiries() {
    let (mut old, now) = rib();
    old.set_route(route("10.9.0.0/16", 3, Some("10.2.0.2"), 1400), now).unwrap();
    let dest: IpAddr = "10.9.0.7".parse().unwrap();
    old.cow_metrics(dest, Rtax::Mtu, 1300, Source::Operator, None, now).unwrap();
    old.cow_metrics(dest, Rtax::Advmss, 1260, Source::Learned, Some(now + Duration::from_secs(300)), now).unwrap();
    let maps = old.into_sink();
    let meta = maps.private_meta[&dest];
    assert_eq!((meta.overridden, meta.learned), (Rtax::Mtu.lock_bit() | Rtax::Advmss.lock_bit(), Rtax::Advmss.lock_bit()));
    let e = maps.routes[&net("10.9.0.7/32")];
    let values = maps.metrics_rw[&e.metrics.slot()];
    let adopted = Adopted {
        prefixes: maps.routes.keys().copied().collect(),
        metrics_ro: maps.routes.values().filter(|e| e.metrics.is_read_only()).map(|e| e.metrics.slot()).collect(),
        metrics_rw: [e.metrics.slot()].into(),
        nexthops: maps.routes.values().map(|e| e.nexthop).collect(),
        private: vec![(dest, values, meta)],
        ..Adopted::default()
    };
    let (mut new, now) = rib_on(maps);
    new.adopt(adopted);
    new.set_route(route("10.9.0.0/16", 3, Some("10.2.0.2"), 1400), now).unwrap();
    let r = new.sweep_adopted(now).unwrap();
    assert_eq!(r.private_kept, 1);
    let m = new.destination_metrics(dest, now).unwrap();
    assert_eq!((m.values["mtu"], m.values["advmss"]), (1300, 1260));
    let by = |name: &str| m.overrides.iter().find(|o| o.metric == name).unwrap().clone();
    assert_eq!((by("mtu").source, by("mtu").expires_in), (Source::Operator, None));
    assert_eq!(by("advmss").source, Source::Learned);
    assert!(by("advmss").expires_in.is_some_and(|s| (298..=300).contains(&s)), "{:?}", by("advmss"));
}

#[test]
fn gateway_route_resolves_when_its_neighbour_appears() {
    let (mut rib, now) = rib();
    rib.set_route(route("10.9.0.0/16", 3, Some("10.2.0.2"), 0), now).unwrap();
    let e = rib.sink().routes[&net("10.9.0.0/16")];
    assert_eq!(e.metrics, MetricsRef::DEFAULT);
    assert!(!rib.sink().nexthops[&e.nexthop].is_usable());
    assert_eq!(rib.unresolved_gateways(), vec![(3, "10.2.0.2".parse().unwrap())]);
    rib.apply(Event::Neighbour { index: 3, addr: "10.2.0.2".parse().unwrap(), mac: Some([9; 6]) }, now).unwrap();
    let nh = rib.sink().nexthops[&e.nexthop];
    assert!(nh.is_usable());
    assert_eq!((nh.dmac, nh.smac, nh.ifindex, nh.mtu), ([9; 6], MAC_B, 3, 1500));
    assert!(rib.sink().ports.contains(&3));
    assert!(rib.unresolved_gateways().is_empty());
}

#[test]
fn identical_metrics_share_one_ro_slot_freed_when_both_are_gone() {
    let (mut rib, now) = rib();
    rib.set_route(route("10.1.0.0/24", 2, Some("10.0.0.1"), 1400), now).unwrap();
    rib.set_route(route("10.3.0.0/24", 2, Some("10.0.0.1"), 1400), now).unwrap();
    let a = rib.route_metrics_ref(&net("10.1.0.0/24")).unwrap();
    assert_eq!(rib.route_metrics_ref(&net("10.3.0.0/24")), Some(a));
    assert!(a.is_read_only() && a.slot() != 0);
    assert_eq!(rib.metrics_store().refcount(a), 2);
    assert_eq!(rib.sink().metrics_ro[&a.slot()].mtu, 1400);
    rib.delete_route(&net("10.1.0.0/24"), now).unwrap();
    assert_eq!(rib.metrics_store().refcount(a), 1);
    rib.delete_route(&net("10.3.0.0/24"), now).unwrap();
    assert_eq!(rib.metrics_store().refcount(a), 0);
    assert_eq!(rib.summary().metrics_ro_quarantined, 1);
    assert!(rib.sink().routes.is_empty());
}

#[test]
fn connected_route_gets_neighbour_host_entries_with_its_metrics() {
    let (mut rib, now) = rib();
    rib.set_route(route("10.2.0.0/24", 3, None, 1400), now).unwrap();
    let glean = rib.sink().routes[&net("10.2.0.0/24")];
    assert!(!rib.sink().nexthops[&glean.nexthop].is_usable(), "a connected prefix itself never forwards");
    rib.apply(Event::Neighbour { index: 3, addr: "10.2.0.7".parse().unwrap(), mac: Some(MAC_A) }, now).unwrap();
    let host = rib.sink().routes[&net("10.2.0.7/32")];
    assert_eq!(host.flags, RouteEntry::HOST | RouteEntry::CLONE);
    assert_eq!(host.metrics, glean.metrics);
    assert_eq!(rib.metrics_store().refcount(glean.metrics), 2);
    assert_eq!(rib.sink().nexthops[&host.nexthop].dmac, MAC_A);
    // The covering route's metrics change: the host entry follows.
    rib.set_route(route("10.2.0.0/24", 3, None, 1300), now).unwrap();
    let host2 = rib.sink().routes[&net("10.2.0.7/32")];
    assert_eq!(rib.sink().metrics_ro[&host2.metrics.slot()].mtu, 1300);
    assert_eq!(rib.metrics_store().refcount(glean.metrics), 0);
    // Neighbour gone: host entry gone.
    rib.apply(Event::NeighbourGone { index: 3, addr: "10.2.0.7".parse().unwrap() }, now).unwrap();
    assert!(!rib.sink().routes.contains_key(&net("10.2.0.7/32")));
    // Route gone: nothing left.
    rib.delete_route(&net("10.2.0.0/24"), now).unwrap();
    assert!(rib.sink().routes.is_empty());
}

#[test]
fn local_addresses_win_over_routes_and_neighbours() {
    let (mut rib, now) = rib();
    rib.set_route(route("10.2.0.0/24", 3, None, 0), now).unwrap();
    rib.apply(Event::Address { index: 3, addr: "10.2.0.1".parse().unwrap(), present: true }, now).unwrap();
    rib.apply(Event::Neighbour { index: 3, addr: "10.2.0.1".parse().unwrap(), mac: Some(MAC_A) }, now).unwrap();
    let e = rib.sink().routes[&net("10.2.0.1/32")];
    assert_eq!(e.kind(), Some(RouteKind::Local));
    rib.apply(Event::Address { index: 3, addr: "10.2.0.1".parse().unwrap(), present: false }, now).unwrap();
    assert_eq!(rib.sink().routes[&net("10.2.0.1/32")].kind(), Some(RouteKind::Unicast));
}

#[test]
fn link_down_makes_next_hops_unusable_and_vlan_next_hops_use_the_parent() {
    let (mut rib, now) = rib();
    let vlan = Link { index: 7, name: "if3.100".into(), mac: MAC_B, mtu: 1496, up: true, vlan: Some((3, 100)), rx_queues: 1 };
    rib.apply(Event::Link(vlan), now).unwrap();
    rib.set_route(route("10.7.0.0/24", 7, Some("10.70.0.1"), 0), now).unwrap();
    rib.apply(Event::Neighbour { index: 7, addr: "10.70.0.1".parse().unwrap(), mac: Some([5; 6]) }, now).unwrap();
    let e = rib.sink().routes[&net("10.7.0.0/24")];
    let nh = rib.sink().nexthops[&e.nexthop];
    assert_eq!((nh.ifindex, nh.vlan, nh.mtu), (3, 100, 1496));
    assert!(nh.is_usable());
    let mut parent = rib.links[&3].clone();
    parent.up = false;
    rib.apply(Event::Link(parent), now).unwrap();
    assert!(!rib.sink().nexthops[&e.nexthop].is_usable());
}

#[test]
fn full_ro_store_fails_cleanly() {
    let now = Instant::now();
    let mut rib = Rib::new(
        MemoryMaps::default(),
        Capacities { metrics_ro: 2, metrics_rw: 8, nexthops: 64, nexthop_groups: 16 },
        Duration::from_secs(1),
    );
    rib.apply(Event::Link(Link { index: 2, name: "a".into(), mac: MAC_A, mtu: 1500, up: true, vlan: None, rx_queues: 1 }), now).unwrap();
    rib.set_route(route("10.1.0.0/24", 2, None, 1400), now).unwrap();
    let err = rib.set_route(route("10.3.0.0/24", 2, None, 1300), now).unwrap_err();
    assert!(matches!(err, RibError::PoolFull { pool: Pool::MetricsRo, .. }), "{err:?}");
    assert!(err.to_string().contains("METRICS_RO is full"), "{err}");
    assert!(!rib.sink().routes.contains_key(&net("10.3.0.0/24")));
    assert_eq!(rib.summary().routes, 1);
}

fn cow_rib(rw_slots: u32) -> (Rib<MemoryMaps>, Instant) {
    let (mut rib, now) = rib();
    rib.rw = SlotAllocator::new(0, rw_slots, Duration::from_secs(1));
    rib.set_route(route("10.2.0.0/24", 3, Some("10.2.0.254"), 1400), now).unwrap();
    (rib, now)
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn cow_clones_a_covered_destination_and_leaves_its_neighbours_shared() {
    let (mut rib, now) = cow_rib(4);
    let shared = rib.sink().routes[&net("10.2.0.0/24")];
    rib.cow_metrics(addr("10.2.0.9"), Rtax::Mtu, 1300, Source::Operator, None, now).unwrap();
    let host = rib.sink().routes[&net("10.2.0.9/32")];
    assert!(!host.metrics.is_read_only(), "tag clear: private");
    assert_eq!(host.flags, RouteEntry::HOST | RouteEntry::CLONE);
    assert_eq!(host.nexthop, shared.nexthop, "the clone copies the covering next hop");
    let m = rib.sink().metrics_rw[&host.metrics.slot()];
    assert_eq!((m.mtu, m.advmss), (1300, 0));
    assert_eq!(rib.sink().routes[&net("10.2.0.0/24")], shared, "the prefix keeps its shared reference");
    // A second write of one metric goes into the same slot, in place.
    rib.cow_metrics(addr("10.2.0.9"), Rtax::Mtu, 1280, Source::Operator, None, now).unwrap();
    assert_eq!(rib.sink().routes[&net("10.2.0.9/32")], host);
    assert_eq!(rib.sink().metrics_rw[&host.metrics.slot()].mtu, 1280);
    let s = rib.summary().cow;
    assert_eq!((s.cows, s.writes_in_place, s.failures), (1, 1, 0));
}

#[test]
fn exhausted_pool_fails_cleanly_and_is_counted() {
    let (mut rib, now) = cow_rib(1);
    rib.cow_metrics(addr("10.2.0.1"), Rtax::Mtu, 1300, Source::Operator, None, now).unwrap();
    let before = rib.sink().routes.clone();
    let err = rib.cow_metrics(addr("10.2.0.2"), Rtax::Mtu, 1300, Source::Operator, None, now).unwrap_err();
    assert!(matches!(err, CowError::PoolExhausted { capacity: 1, .. }), "{err}");
    assert!(err.to_string().contains("10.2.0.2 keeps its shared metrics"), "{err}");
    assert_eq!(rib.sink().routes, before, "nothing published");
    assert_eq!(rib.summary().cow.failures, 1);
    // Reset frees the slot, but only after the grace period.
    assert!(rib.reset_metrics(addr("10.2.0.1"), now).unwrap());
    assert!(!rib.sink().routes.contains_key(&net("10.2.0.1/32")), "clone unpublished");
    assert!(rib.cow_metrics(addr("10.2.0.2"), Rtax::Mtu, 1300, Source::Operator, None, now).is_err());
    let later = now + Duration::from_secs(1);
    rib.cow_metrics(addr("10.2.0.2"), Rtax::Mtu, 1300, Source::Operator, None, later).unwrap();
    assert_eq!(rib.summary().cow.destroys, 1);
}

#[test]
fn covering_route_changes_rederive_and_its_removal_destroys() {
    let (mut rib, now) = cow_rib(4);
    rib.cow_metrics(addr("10.2.0.9"), Rtax::Advmss, 1000, Source::Operator, None, now).unwrap();
    // New shared metrics: mtu 1450 with a lock; the override stays.
    let mut m = RouteMetrics::DEFAULT;
    m.set(Rtax::Mtu, 1450);
    m.set(Rtax::Hoplimit, 32);
    m.lock = Rtax::Mtu.lock_bit();
    let replaced = route("10.2.0.0/24", 3, Some("10.2.0.254"), 0).with(|a| a.metrics = m.into());
    rib.set_route(replaced, now).unwrap();
    let host = rib.sink().routes[&net("10.2.0.9/32")];
    let v = rib.sink().metrics_rw[&host.metrics.slot()];
    assert_eq!((v.mtu, v.hoplimit, v.advmss, v.lock), (1450, 32, 1000, Rtax::Mtu.lock_bit()));
    // Learning may not touch a locked metric; the operator may.
    let err = rib.cow_metrics(addr("10.2.0.9"), Rtax::Mtu, 1300, Source::Learned, None, now).unwrap_err();
    assert!(matches!(err, CowError::Locked { .. }));
    rib.cow_metrics(addr("10.2.0.9"), Rtax::Mtu, 1300, Source::Operator, None, now).unwrap();
    rib.delete_route(&net("10.2.0.0/24"), now).unwrap();
    assert!(rib.sink().routes.is_empty(), "the clone went with its route");
    assert_eq!(rib.summary().metrics_rw_in_use, 0);
}

#[test]
fn overrides_expire_one_by_one() {
    let (mut rib, now) = cow_rib(4);
    let d = addr("10.2.0.9");
    rib.cow_metrics(d, Rtax::Mtu, 1300, Source::Learned, Some(now + Duration::from_secs(600)), now).unwrap();
    rib.cow_metrics(d, Rtax::Advmss, 1200, Source::Operator, Some(now + Duration::from_secs(10)), now).unwrap();
    assert_eq!(rib.expire(now + Duration::from_secs(10)).unwrap(), 1);
    let v = rib.private_copy(&d).unwrap().values;
    assert_eq!((v.mtu, v.advmss), (1300, 0));
    assert_eq!(rib.expire(now + Duration::from_secs(600)).unwrap(), 1);
    assert!(rib.private_copy(&d).is_none());
    assert!(!rib.sink().routes.contains_key(&net("10.2.0.9/32")));
    assert_eq!(rib.summary().cow.expirations, 2);
}

#[test]
fn own_host_entries_keep_their_next_hop_and_local_or_unrouted_are_refused() {
    let (mut rib, now) = cow_rib(4);
    rib.set_route(route("10.2.0.0/24", 3, None, 1400), now).unwrap();
    rib.apply(Event::Neighbour { index: 3, addr: addr("10.2.0.7"), mac: Some(MAC_A) }, now).unwrap();
    let neigh = rib.sink().routes[&net("10.2.0.7/32")];
    rib.cow_metrics(addr("10.2.0.7"), Rtax::Mtu, 1300, Source::Operator, None, now).unwrap();
    let e = rib.sink().routes[&net("10.2.0.7/32")];
    assert_eq!(e.nexthop, neigh.nexthop, "the neighbour's own next hop");
    assert!(!e.metrics.is_read_only());
    rib.reset_metrics(addr("10.2.0.7"), now).unwrap();
    assert_eq!(rib.sink().routes[&net("10.2.0.7/32")], neigh, "shared reference restored");
    rib.apply(Event::Address { index: 3, addr: addr("10.2.0.1"), present: true }, now).unwrap();
    assert!(matches!(rib.cow_metrics(addr("10.2.0.1"), Rtax::Mtu, 1300, Source::Operator, None, now), Err(CowError::Local(_))));
    assert!(matches!(rib.cow_metrics(addr("172.16.0.1"), Rtax::Mtu, 1300, Source::Operator, None, now), Err(CowError::NoRoute(_))));
    rib.set_route(RouteInput::new(net("192.0.2.0/24"), RouteKind::Blackhole, None, None, RouteMetrics::DEFAULT), now).unwrap();
    assert!(matches!(rib.cow_metrics(addr("192.0.2.1"), Rtax::Mtu, 1300, Source::Operator, None, now), Err(CowError::NotUnicast { .. })));
}

/// A /32 connected route that covers a known neighbour: deleting the
/// route must leave the neighbour's host entry to the refresh, not index
/// the route just removed (it panicked the daemon).
#[test]
fn deleting_a_host_route_that_covers_a_neighbour_drops_its_host_entry() {
    let (mut rib, now) = rib();
    rib.set_route(route("10.2.0.7/32", 3, None, 1400), now).unwrap();
    rib.apply(Event::Neighbour { index: 3, addr: addr("10.2.0.7"), mac: Some(MAC_A) }, now).unwrap();
    assert!(rib.sink().routes.contains_key(&net("10.2.0.7/32")));
    assert!(rib.delete_route(&net("10.2.0.7/32"), now).unwrap());
    assert!(!rib.sink().routes.contains_key(&net("10.2.0.7/32")));
    assert_eq!(rib.summary().neighbour_hosts, 0);
}

proptest::proptest! {
    /// Every metric of the RTAX set (RTAX_LOCK .. RTAX_FASTOPEN_NO_COOKIE)
    /// is settable, shown, recorded for restarts, adopted by a new agent
    /// and expired, with or without a lifetime.
    #[test]
    fn every_rtax_metric_is_set_shown_adopted_and_expired(
        index in 0..common::RTAX_MAX,
        raw in 1u32..,
        lifetime in proptest::option::of(1u64..=crate::rib::cow::MAX_EXPIRES_SECS),
    ) {
        let metric = Rtax::ALL[index];
        let value = 1 + raw % metric.max_value();
        let (mut old, now) = cow_rib(4);
        let dest = addr("10.2.0.9");
        let expires = lifetime.map(|s| now + Duration::from_secs(s));
        old.cow_metrics(dest, metric, value, Source::Operator, expires, now).unwrap();
        let shown = old.destination_metrics(dest, now).unwrap();
        proptest::prop_assert_eq!(shown.values.get(metric.name()), Some(&value));
        proptest::prop_assert_eq!(shown.override_mask, metric.lock_bit());
        let meta = old.sink().private_meta[&dest];
        proptest::prop_assert_eq!(meta.overridden, metric.lock_bit());
        proptest::prop_assert_eq!(meta.expiry(metric) != 0, lifetime.is_some());
        // A restarted agent adopts the copy with its value and expiry.
        let maps = old.into_sink();
        let e = maps.routes[&net("10.2.0.9/32")];
        let adopted = Adopted {
            prefixes: maps.routes.keys().copied().collect(),
            metrics_ro: maps.routes.values().filter(|e| e.metrics.is_read_only()).map(|e| e.metrics.slot()).collect(),
            metrics_rw: [e.metrics.slot()].into(),
            nexthops: maps.routes.values().map(|e| e.nexthop).collect(),
            private: vec![(dest, maps.metrics_rw[&e.metrics.slot()], meta)],
            ..Adopted::default()
        };
        let (mut new, now) = rib_on(maps);
        new.rw = SlotAllocator::new(0, 4, Duration::from_secs(1));
        new.adopt(adopted);
        new.set_route(route("10.2.0.0/24", 3, Some("10.2.0.254"), 1400), now).unwrap();
        proptest::prop_assert_eq!(new.sweep_adopted(now).unwrap().private_kept, 1);
        let m = new.destination_metrics(dest, now).unwrap();
        proptest::prop_assert_eq!(m.values.get(metric.name()), Some(&value));
        let left = m.overrides[0].expires_in;
        proptest::prop_assert_eq!(left.is_some(), lifetime.is_some());
        if let (Some(left), Some(s)) = (left, lifetime) {
            proptest::prop_assert!(left + 2 >= s && left <= s, "{} left of {}", left, s);
        }
        // Expiry removes it (one with no lifetime stays until reset).
        let later = now + Duration::from_secs(lifetime.unwrap_or(1) + 2);
        proptest::prop_assert_eq!(new.expire(later).unwrap(), usize::from(lifetime.is_some()));
        proptest::prop_assert_eq!(new.private_copy(&dest).is_some(), lifetime.is_none());
    }
}

mod event_sequences {
    //! The RIB driven by random netlink-like event sequences (links up,
    //! down and gone, addresses, neighbours, routes of every shape, COW
    //! writes) against a model of what must be published: never a panic,
    //! the published routes are the model's, and once everything is taken
    //! away nothing is left (no entry, no next hop, no slot).
    use super::*;
    use proptest::prelude::*;

    const ROUTES: [&str; 7] = ["10.2.0.0/24", "10.2.0.7/32", "10.9.0.0/16", "10.9.1.0/24", "0.0.0.0/0", "192.0.2.0/24", "fd00:2::/64"];
    const ADDRS: [&str; 4] = ["10.2.0.1", "10.2.0.7", "10.9.1.1", "fd00:2::1"];

    fn input(i: usize, dev: u32, mtu: u32) -> RouteInput {
        let mut r = route(ROUTES[i], dev, None, mtu);
        match i {
            2 => r.via = Some(addr("10.2.0.9")),
            3 => {
                r.dev = None;
                r.multipath =
                    vec![Leg { dev: 2, via: Some(addr("10.3.0.9")), weight: 1 }, Leg { dev: 3, via: Some(addr("10.2.0.9")), weight: 2 }];
            }
            4 => r.via = Some(addr("10.3.0.9")),
            5 => r = RouteInput::new(net(ROUTES[5]), RouteKind::Blackhole, None, None, RouteMetrics::DEFAULT),
            _ => {}
        }
        r
    }

    #[derive(Debug, Clone)]
    enum Op {
        SetRoute(usize, u32, u32),
        DeleteRoute(usize),
        Address(usize, bool),
        Neighbour(u32, usize, bool),
        Link(u32, bool),
        LinkGone(u32),
        Cow(usize, u32),
        Reset(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..ROUTES.len(), 2u32..4, prop::sample::select(vec![0u32, 1300, 1400])).prop_map(|(i, d, m)| Op::SetRoute(i, d, m)),
            2 => (0..ROUTES.len()).prop_map(Op::DeleteRoute),
            2 => (0..ADDRS.len(), any::<bool>()).prop_map(|(a, p)| Op::Address(a, p)),
            3 => (2u32..4, 0..ADDRS.len(), any::<bool>()).prop_map(|(i, a, p)| Op::Neighbour(i, a, p)),
            1 => (2u32..4, any::<bool>()).prop_map(|(i, up)| Op::Link(i, up)),
            1 => (2u32..4).prop_map(Op::LinkGone),
            2 => (0..ADDRS.len(), 1280u32..1500).prop_map(|(a, m)| Op::Cow(a, m)),
            1 => (0..ADDRS.len()).prop_map(Op::Reset),
        ]
    }

    fn link(index: u32, up: bool) -> Link {
        Link { index, name: format!("if{index}"), mac: [index as u8; 6], mtu: 1500, up, vlan: None, rx_queues: 1 }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

        #[test]
        fn random_event_sequences_keep_the_rib_and_maps_consistent(ops in prop::collection::vec(op(), 1..80)) {
            let (mut rib, now) = rib();
            let mut model: BTreeMap<IpNet, RouteKind> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::SetRoute(i, dev, mtu) => {
                        let r = input(i, dev, mtu);
                        if rib.set_route(r.clone(), now).is_ok() {
                            model.insert(r.prefix, r.kind);
                        }
                    }
                    Op::DeleteRoute(i) => {
                        rib.delete_route(&net(ROUTES[i]), now).unwrap();
                        model.remove(&net(ROUTES[i]));
                    }
                    Op::Address(a, present) => rib.apply(Event::Address { index: 3, addr: addr(ADDRS[a]), present }, now).unwrap(),
                    Op::Neighbour(index, a, true) => rib.apply(Event::Neighbour { index, addr: addr(ADDRS[a]), mac: Some([7; 6]) }, now).unwrap(),
                    Op::Neighbour(index, a, false) => rib.apply(Event::NeighbourGone { index, addr: addr(ADDRS[a]) }, now).unwrap(),
                    Op::Link(index, up) => rib.apply(Event::Link(link(index, up)), now).unwrap(),
                    Op::LinkGone(index) => rib.apply(Event::LinkGone(index), now).unwrap(),
                    Op::Cow(a, mtu) => {
                        let _ = rib.cow_metrics(addr(ADDRS[a]), Rtax::Mtu, mtu, Source::Operator, None, now);
                    }
                    Op::Reset(a) => {
                        rib.reset_metrics(addr(ADDRS[a]), now).unwrap();
                    }
                }
                // Every route of the model is published with its type (a
                // local address at the same /32 or /128 wins, as in the kernel).
                for (p, k) in &model {
                    let published = rib.sink().routes.get(p).and_then(|e| e.kind());
                    prop_assert!(published == Some(*k) || published == Some(RouteKind::Local), "{} published as {:?}, not {:?}", p, published, k);
                }
                // And no prefix route the model does not have.
                for (p, e) in &rib.sink().routes {
                    prop_assert!(e.flags & RouteEntry::HOST != 0 || model.contains_key(p), "{} published without a route", p);
                }
                // Every entry refers to something that exists.
                for (p, e) in &rib.sink().routes {
                    if e.kind() == Some(RouteKind::Unicast) {
                        let known = if e.is_multipath() { rib.sink().groups.contains_key(&e.nexthop) } else { rib.sink().nexthops.contains_key(&e.nexthop) };
                        prop_assert!(known, "{} refers to next hop {} that was never written", p, e.nexthop);
                    }
                    if e.metrics.is_read_only() && e.metrics.slot() != 0 {
                        prop_assert!(rib.metrics_store().refcount(e.metrics) > 0, "{} refers to a free RO slot", p);
                    }
                }
            }
            // Take everything away: nothing is left.
            for p in ROUTES {
                rib.delete_route(&net(p), now).unwrap();
            }
            for a in ADDRS {
                // One RTM_DELADDR ends it, however many RTM_NEWADDR came.
                rib.apply(Event::Address { index: 3, addr: addr(a), present: false }, now).unwrap();
                rib.reset_metrics(addr(a), now).unwrap();
                for index in 2..4 {
                    rib.apply(Event::NeighbourGone { index, addr: addr(a) }, now).unwrap();
                }
            }
            prop_assert!(rib.sink().routes.is_empty(), "left: {:?}", rib.sink().routes.keys().collect::<Vec<_>>());
            let s = rib.summary();
            prop_assert_eq!((s.routes, s.neighbour_hosts, s.nexthops, s.nexthop_groups, s.metrics_ro_in_use, s.metrics_rw_in_use), (0, 0, 0, 0, 0, 0), "{:?}", s);
        }
    }
}

#[test]
fn a_subnet_broadcast_is_delivered_locally_not_forwarded_nor_an_address() {
    let (mut rib, now) = rib();
    rib.set_route(route("10.1.0.0/24", 2, None, 0), now).unwrap();
    let (bcast, own) = ("10.1.0.255".parse().unwrap(), "10.1.0.1".parse().unwrap());
    // The kernel's NUD_NOARP entry for the broadcast would forward it to the link broadcast.
    rib.apply(Event::Neighbour { index: 2, addr: bcast, mac: Some([0xff; 6]) }, now).unwrap();
    assert_eq!(rib.sink().routes[&net("10.1.0.255/32")].kind, RouteKind::Unicast as u8);
    rib.apply(Event::Broadcast { index: 2, addr: bcast, of: own, present: true }, now).unwrap();
    let entry = rib.sink().routes[&net("10.1.0.255/32")];
    assert_eq!((entry.kind, entry.flags & RouteEntry::ADDRESS), (RouteKind::Local as u8, 0), "local, but no source it refuses");
    assert_eq!(rib.error_route(bcast, 3), lookup::ErrorRoute::LinkBroadcast { ifindex: 2 });
    let nh = rib.link_broadcast_nexthop(2).unwrap();
    assert_eq!((nh.ifindex, nh.dmac, nh.smac), (2, [0xff; 6], MAC_A));
    // Gone with its address: back to what the neighbour says.
    rib.apply(Event::Broadcast { index: 2, addr: bcast, of: own, present: false }, now).unwrap();
    assert_eq!(rib.sink().routes[&net("10.1.0.255/32")].kind, RouteKind::Unicast as u8);
    assert_eq!(rib.error_route(bcast, 3), lookup::ErrorRoute::Via { ifindex: 2, neighbour: bcast });
}

#[test]
fn a_table_held_apart_shares_next_hops_and_sends_connected_routes_to_the_kernel() {
    let (mut rib, now) = rib();
    rib.set_route(route("10.1.0.0/16", 2, Some("10.1.0.9"), 0), now).unwrap();
    let main_nh = rib.sink().routes[&net("10.1.0.0/16")].nexthop;
    rib.apply_route_change(RouteChange::TableSet(100, route("0.0.0.0/0", 2, Some("10.1.0.9"), 1400)), now).unwrap();
    rib.apply_route_change(RouteChange::TableSet(100, route("10.3.0.0/16", 3, None, 0)), now).unwrap();
    let t = |p: &str| rib.sink().table_routes[&(100, net(p))];
    let default = t("0.0.0.0/0");
    assert_eq!((default.kind(), default.nexthop, default.prefix_len), (Some(RouteKind::Unicast), main_nh, 0), "one next hop for both");
    assert_eq!(rib.metrics_store().slots_in_use(), 2, "the default's mtu 1400 interned beside main's defaults");
    assert_eq!(t("10.3.0.0/16").kind(), Some(RouteKind::Kernel), "a link route: each destination's neighbour is the kernel's");
    assert!(!rib.sink().routes.contains_key(&net("0.0.0.0/0")), "not in the main view");
    // Deleting main's route keeps the next hop the table still uses.
    rib.delete_route(&net("10.1.0.0/16"), now).unwrap();
    assert_eq!(rib.summary().nexthops, 1);
    rib.apply_route_change(RouteChange::TableDelete(100, net("0.0.0.0/0")), now).unwrap();
    rib.apply_route_change(RouteChange::TableDelete(100, net("10.3.0.0/16")), now).unwrap();
    assert!(rib.sink().table_routes.is_empty());
    assert_eq!(rib.summary().nexthops, 0, "released with the last route");
}
