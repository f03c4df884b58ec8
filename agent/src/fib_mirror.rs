//! The kernel FIB as cowroute carries it (`--source kernel`): the routes of
//! the chosen tables, with the kernel's choice among routes to one prefix
//! (the lowest priority number wins).

use crate::{netlink_mirror::KernelRoute, rib::RouteInput};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What a route event does to the fast path's entry for its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(RouteInput),
    Delete(IpNet),
}

pub struct KernelFib {
    tables: BTreeSet<u32>,
    /// prefix -> (priority, device) -> route. IPv6 keeps one route per
    /// device for a prefix (`fe80::/64` on every link).
    routes: HashMap<IpNet, BTreeMap<(u32, Option<u32>), KernelRoute>>,
}

fn input(r: &KernelRoute) -> RouteInput {
    RouteInput { prefix: r.prefix, kind: r.kind, dev: r.dev, via: r.via, metrics: r.metrics }
}

impl KernelFib {
    pub fn new(tables: impl IntoIterator<Item = u32>) -> KernelFib {
        KernelFib { tables: tables.into_iter().collect(), routes: HashMap::new() }
    }

    /// Applies one route event; `None` when the prefix's winner did not change.
    pub fn apply(&mut self, route: KernelRoute, present: bool) -> Option<Change> {
        if !self.tables.contains(&route.table) {
            return None;
        }
        let prefix = route.prefix;
        let before = self.winner(&prefix).map(input);
        let slot = self.routes.entry(prefix).or_default();
        if present {
            slot.insert((route.priority, route.dev), route);
        } else {
            slot.remove(&(route.priority, route.dev));
            if slot.is_empty() {
                self.routes.remove(&prefix);
            }
        }
        let after = self.winner(&prefix).map(input);
        match (before, after) {
            (b, a) if b == a => None,
            (_, Some(a)) => Some(Change::Set(a)),
            (Some(_), None) => Some(Change::Delete(prefix)),
            (None, None) => None,
        }
    }

    fn winner(&self, prefix: &IpNet) -> Option<&KernelRoute> {
        self.routes.get(prefix)?.values().next()
    }


    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{RouteKind, RouteMetrics};

    fn r(prefix: &str, table: u32, priority: u32, mtu: u32) -> KernelRoute {
        let mut metrics = RouteMetrics::DEFAULT;
        metrics.mtu = mtu;
        KernelRoute { table, prefix: prefix.parse().unwrap(), priority, kind: RouteKind::Unicast, dev: Some(2), via: None, metrics }
    }

    #[test]
    fn lowest_priority_wins_and_other_tables_are_ignored() {
        let mut fib = KernelFib::new([254]);
        assert_eq!(fib.apply(r("10.0.0.0/8", 100, 0, 0), true), None, "table 100 not chosen");
        assert!(matches!(fib.apply(r("10.0.0.0/8", 254, 100, 1400), true), Some(Change::Set(i)) if i.metrics.mtu == 1400));
        assert!(matches!(fib.apply(r("10.0.0.0/8", 254, 10, 1300), true), Some(Change::Set(i)) if i.metrics.mtu == 1300));
        assert_eq!(fib.apply(r("10.0.0.0/8", 254, 100, 1400), false), None, "the loser went: no change");
        assert!(matches!(fib.apply(r("10.0.0.0/8", 254, 10, 1300), false), Some(Change::Delete(_))));
        assert!(fib.is_empty());
    }
}
