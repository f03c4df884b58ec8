//! The COW engine against a plain in-memory model: random sequences of route
//! add / replace / delete, metric set / reset and expiry. After every step
//! the maps equal the model, refcounts are exact, no slot leaks, and no entry
//! refers to a free or quarantined slot.

use crate::{
    dataplane::map_writer::memory::MemoryMaps,
    rib::cow::{Override, Source},
    rib::types::{Event, Link},
    rib::{Capacities, Rib, RouteInput},
};
use common::{MetricsRef, RouteKind, RouteMetrics, Rtax};
use ipnet::IpNet;
use proptest::prelude::*;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

const PREFIXES: [&str; 6] = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "10.2.0.0/16", "0.0.0.0/0"];
const DESTS: [&str; 5] = ["10.1.2.3", "10.1.2.4", "10.1.9.9", "10.2.0.1", "192.0.2.1"];
const METRICS: [Rtax; 3] = [Rtax::Mtu, Rtax::Advmss, Rtax::Hoplimit];

#[derive(Debug, Clone)]
enum Op {
    SetRoute { prefix: usize, mtu: u32, lock_mtu: bool },
    DeleteRoute { prefix: usize },
    Cow { dest: usize, metric: usize, value: u32, learned: bool, expires: Option<u64> },
    Reset { dest: usize },
    Advance { millis: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PREFIXES.len(), prop::sample::select(vec![0u32, 1400, 1500]), any::<bool>())
            .prop_map(|(prefix, mtu, lock_mtu)| Op::SetRoute { prefix, mtu, lock_mtu }),
        1 => (0..PREFIXES.len()).prop_map(|prefix| Op::DeleteRoute { prefix }),
        4 => (0..DESTS.len(), 0..METRICS.len(), 1000u32..1500, any::<bool>(), prop::option::of(1u64..4))
            .prop_map(|(dest, metric, value, learned, expires)| Op::Cow { dest, metric, value, learned, expires }),
        1 => (0..DESTS.len()).prop_map(|dest| Op::Reset { dest }),
        1 => (0u64..2500).prop_map(|millis| Op::Advance { millis }),
    ]
}

#[derive(Default, Debug)]
struct Model {
    routes: BTreeMap<IpNet, RouteMetrics>,
    /// dest -> (covering route, overrides)
    private: BTreeMap<IpAddr, (IpNet, BTreeMap<Rtax, Override>)>,
}

impl Model {
    fn longest_match(&self, addr: IpAddr) -> Option<IpNet> {
        self.routes.keys().filter(|p| p.contains(&addr)).max_by_key(|p| p.prefix_len()).copied()
    }

    /// After routes inside `changed` changed: copies follow, or go with their route.
    fn route_changed(&mut self, changed: IpNet) {
        let affected: Vec<IpAddr> =
            self.private.iter().filter(|(a, (c, _))| changed.contains(*a) || *c == changed).map(|(a, _)| *a).collect();
        for a in affected {
            let covering = self.private[&a].0;
            match self.longest_match(a) {
                Some(now) if self.routes.contains_key(&covering) || now == covering => {
                    self.private.get_mut(&a).unwrap().0 = now;
                }
                _ => {
                    self.private.remove(&a);
                }
            }
        }
    }
}

/// What a private copy must hold, computed here and not by the engine's own
/// `derive`: the covering route's metrics, each overridden metric replaced,
/// except a learned value for a metric whose RTAX_LOCK bit the route sets.
fn model_derive(shared: &RouteMetrics, overrides: &BTreeMap<Rtax, Override>) -> RouteMetrics {
    let mut vals = *shared.as_array();
    for (m, o) in overrides {
        let locked = shared.lock & (1 << (*m as u32)) != 0;
        if !(locked && o.source == Source::Learned) {
            vals[*m as usize - 1] = o.value;
        }
    }
    RouteMetrics::from_array(vals)
}

fn check(rib: &Rib<MemoryMaps>, model: &Model) -> Result<(), TestCaseError> {
    let maps = rib.sink();
    let mut expected: BTreeSet<IpNet> = model.routes.keys().copied().collect();
    expected.extend(model.private.keys().map(|a| IpNet::from(*a)));
    let published: BTreeSet<IpNet> = maps.routes.keys().copied().collect();
    prop_assert_eq!(&published, &expected, "published prefixes");
    let referenced_rw: BTreeSet<u32> = model.private.keys().map(|a| rib.private_copy(a).unwrap().slot).collect();
    prop_assert_eq!(referenced_rw.len(), model.private.len(), "one slot per private copy");
    for (prefix, entry) in &maps.routes {
        let r = entry.metrics;
        let values = if r.is_read_only() {
            prop_assert!(rib.metrics_store().refcount(r) > 0, "{} refers to an unreferenced RO slot {}", prefix, r.slot());
            prop_assert!(!rib.metrics_store().is_quarantined(r.slot()));
            // Arrays are zero-initialised: slot 0 (the default) is never written.
            maps.metrics_ro.get(&r.slot()).copied().unwrap_or_default()
        } else {
            prop_assert!(referenced_rw.contains(&r.slot()), "{} refers to RW slot {} of no copy", prefix, r.slot());
            prop_assert!(!rib.rw_pool().is_quarantined(r.slot()), "{} refers to a quarantined RW slot", prefix);
            maps.metrics_rw.get(&r.slot()).copied().unwrap_or_default()
        };
        let want = match model.private.get(&prefix.addr()).filter(|_| prefix.prefix_len() == 32) {
            Some((covering, overrides)) => model_derive(&model.routes[covering], overrides),
            None => model.routes[prefix],
        };
        prop_assert_eq!(values, want, "metrics of {}", prefix);
        prop_assert_eq!(entry.kind(), Some(RouteKind::Unicast));
    }
    // Exact refcounts: one per route holding the set.
    let mut holders: BTreeMap<MetricsRef, u32> = BTreeMap::new();
    for p in model.routes.keys() {
        *holders.entry(rib.route_metrics_ref(p).unwrap()).or_default() += 1;
    }
    for (r, n) in &holders {
        prop_assert_eq!(rib.metrics_store().refcount(*r), *n, "refcount of {:?}", r);
    }
    prop_assert_eq!(rib.metrics_store().slots_in_use(), holders.len(), "no RO slot leaks");
    prop_assert_eq!(rib.rw_pool().in_use(), model.private.len(), "no RW slot leaks");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cow_engine_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut now = Instant::now();
        let grace = Duration::from_millis(500);
        let mut rib = Rib::new(MemoryMaps::default(), Capacities { metrics_ro: 64, metrics_rw: 128, nexthops: 16, nexthop_groups: 16 }, grace);
        rib.apply(Event::Link(Link { index: 2, name: "a".into(), mac: [2; 6], mtu: 1500, up: true, vlan: None, rx_queues: 1 }), now).unwrap();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::SetRoute { prefix, mtu, lock_mtu } => {
                    let p: IpNet = PREFIXES[prefix].parse().unwrap();
                    let mut m = RouteMetrics::DEFAULT;
                    m.mtu = mtu;
                    if lock_mtu { m.lock = Rtax::Mtu.lock_bit(); }
                    let input = RouteInput::new(p, RouteKind::Unicast, Some(2), Some("10.9.9.9".parse().unwrap()), m);
                    rib.set_route(input, now).unwrap();
                    model.routes.insert(p, m);
                    model.route_changed(p);
                }
                Op::DeleteRoute { prefix } => {
                    let p: IpNet = PREFIXES[prefix].parse().unwrap();
                    let existed = rib.delete_route(&p, now).unwrap();
                    prop_assert_eq!(existed, model.routes.remove(&p).is_some());
                    model.route_changed(p);
                }
                Op::Cow { dest, metric, value, learned, expires } => {
                    let d: IpAddr = DESTS[dest].parse().unwrap();
                    let metric = METRICS[metric];
                    let source = if learned { Source::Learned } else { Source::Operator };
                    let expires = expires.map(|s| now + Duration::from_secs(s));
                    let got = rib.cow_metrics(d, metric, value, source, expires, now);
                    let covering = model.longest_match(d);
                    match covering {
                        None => prop_assert!(got.is_err(), "no route: {:?}", got),
                        Some(c) if learned && model.routes[&c].is_locked(metric) => prop_assert!(got.is_err()),
                        Some(c) => {
                            prop_assert!(got.is_ok(), "{:?}", got);
                            let entry = model.private.entry(d).or_insert((c, BTreeMap::new()));
                            entry.1.insert(metric, Override { value, source, expires });
                        }
                    }
                }
                Op::Reset { dest } => {
                    let d: IpAddr = DESTS[dest].parse().unwrap();
                    prop_assert_eq!(rib.reset_metrics(d, now).unwrap(), model.private.remove(&d).is_some());
                }
                Op::Advance { millis } => {
                    now += Duration::from_millis(millis);
                    rib.expire(now).unwrap();
                    rib.reap(now);
                    for (_, o) in model.private.values_mut() {
                        o.retain(|_, v| v.expires.is_none_or(|t| t > now));
                    }
                    model.private.retain(|_, (_, o)| !o.is_empty());
                }
            }
            check(&rib, &model)?;
        }
    }
}
