//! The kernel FIB as cowroute carries it (`--source kernel`): the routes of
//! the chosen tables, with the kernel's choice among routes to one prefix
//! (the lowest priority number wins).

use crate::{
    fib::{
        candidates::{names_no_nexthop, rank, Candidates},
        kernel_nexthops::{KernelNexthops, NexthopDelta},
        netlink_mirror::KernelRoute,
    },
    rib::{
        prefix_map::PrefixMap,
        types::{AttrsInterner, NexthopObject, RouteAttrs},
        RouteChange as Change, RouteInput,
    },
};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How many candidate routes name each nexthop object: a removed object
/// with none costs no scan of the table.
#[derive(Debug, Default)]
struct ObjectUse(HashMap<u32, u32>);

impl ObjectUse {
    fn add(&mut self, ids: impl Iterator<Item = u32>) {
        for id in ids {
            *self.0.entry(id).or_default() += 1;
        }
    }

    fn sub(&mut self, ids: impl Iterator<Item = u32>) {
        for id in ids {
            if let Some(n) = self.0.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    self.0.remove(&id);
                }
            }
        }
    }

    fn used(&self, id: u32) -> bool {
        self.0.contains_key(&id)
    }
}

/// The routes of one table, by prefix.
type Routes = PrefixMap<Candidates>;

/// `RT_TABLE_LOCAL`: the RIB derives its entries from addresses.
const TABLE_LOCAL: u32 = 255;

pub struct KernelFib {
    /// The tables merged into the main view (`--table`).
    tables: BTreeSet<u32>,
    routes: Routes,
    /// With `policy_tables`: every other table (but local), each apart, for
    /// the rules that look them up.
    apart: Option<BTreeMap<u32, Routes>>,
    /// The nexthop objects routes may name (every table's: they are global).
    nexthops: KernelNexthops,
    object_use: ObjectUse,
    /// What the routes say, one copy per distinct set.
    attrs: AttrsInterner,
}

impl KernelFib {
    pub fn new(tables: impl IntoIterator<Item = u32>) -> KernelFib {
        KernelFib {
            tables: tables.into_iter().collect(),
            routes: Routes::new(),
            apart: None,
            nexthops: KernelNexthops::default(),
            object_use: ObjectUse::default(),
            attrs: AttrsInterner::default(),
        }
    }

    /// As [`KernelFib::new`], and also every other table but local, each
    /// apart ([`Change::TableSet`]): the tables `ip rule` may look up.
    pub fn with_policy_tables(tables: impl IntoIterator<Item = u32>) -> KernelFib {
        KernelFib { apart: Some(BTreeMap::new()), ..KernelFib::new(tables) }
    }

    /// Where a route of `table` goes: the main view's routes, a table held
    /// apart (`Some(id)`), or nowhere.
    fn table_mut(&mut self, table: u32) -> Option<(&mut Routes, Option<u32>)> {
        if self.tables.contains(&table) {
            return Some((&mut self.routes, None));
        }
        let apart = self.apart.as_mut().filter(|_| table != TABLE_LOCAL)?;
        Some((apart.entry(table).or_default(), Some(table)))
    }

    pub fn nexthops(&self) -> &KernelNexthops {
        &self.nexthops
    }

    /// A nexthop object event: the objects set, then what the routes
    /// through removed objects become, then the removals.
    pub fn apply_nexthop(&mut self, object: NexthopObject, present: bool) -> Vec<Change> {
        let delta = self.nexthops.apply(object, present);
        self.nexthop_changes(delta)
    }

    /// Device `ifindex` is down or gone: the kernel has removed its nexthop
    /// objects (and the routes through them) without a word.
    pub fn flush_dev(&mut self, ifindex: u32) -> Vec<Change> {
        let delta = self.nexthops.flush_dev(ifindex);
        self.nexthop_changes(delta)
    }

    fn nexthop_changes(&mut self, delta: NexthopDelta) -> Vec<Change> {
        let mut changes: Vec<Change> = delta.set.into_iter().map(Change::SetNexthop).collect();
        if delta.removed.iter().any(|id| self.object_use.used(*id)) {
            changes.extend(self.remove_routes_through(|id| delta.removed.contains(&id)));
        }
        if !delta.removed.is_empty() {
            changes.extend(delta.removed.into_iter().map(Change::DeleteNexthop));
        }
        changes
    }

    /// Removes every candidate route through an object `gone` names (the
    /// kernel removed them with it); returns the winners' changes.
    fn remove_routes_through(&mut self, gone: impl Fn(u32) -> bool) -> Vec<Change> {
        let mut changes = remove_through(&mut self.routes, &mut self.object_use, None, &gone);
        for (table, routes) in self.apart.iter_mut().flatten() {
            changes.extend(remove_through(routes, &mut self.object_use, Some(*table), &gone));
        }
        changes
    }

    /// Replaces every nexthop object with those of a fresh dump (before the
    /// routes' resync: their objects must be there first).
    pub fn resync_nexthops(&mut self, dump: impl IntoIterator<Item = NexthopObject>) -> Vec<Change> {
        let delta = self.nexthops.resync(dump);
        self.nexthop_changes(delta)
    }

    /// Applies one route event; `None` when the prefix's winner did not
    /// change. `replace` (NLM_F_REPLACE): the kernel replaced its route of
    /// the same priority, whatever device that one had.
    pub fn apply(&mut self, mut route: KernelRoute, present: bool, replace: bool) -> Option<Change> {
        if present {
            route.route = self.attrs.route(route.route);
        }
        let mut object_use = std::mem::take(&mut self.object_use);
        let (routes, apart) = match self.table_mut(route.table) {
            Some(t) => t,
            None => {
                self.object_use = object_use;
                return None;
            }
        };
        let change = apply_to(routes, &mut object_use, route, present, replace).map(|c| in_table(apart, c));
        if let Some(apart) = apart.filter(|_| routes.is_empty()) {
            self.apart.as_mut().expect("held apart").remove(&apart);
        }
        self.object_use = object_use;
        change
    }

    /// Its tables rebuilt with full nodes ([`PrefixMap::compact`]).
    pub fn compact(&mut self) {
        self.routes.compact();
        for routes in self.apart.iter_mut().flat_map(|a| a.values_mut()) {
            routes.compact();
        }
    }

    /// Removes every route to `prefix` (a route source's sweep).
    pub fn remove_prefix(&mut self, prefix: &IpNet) -> Option<Change> {
        let gone = self.routes.remove(prefix)?;
        self.object_use.sub(gone.nhids());
        Some(Change::Delete(*prefix))
    }

    /// Mirrors `tables` from now on; a resync brings the routes in line.
    pub fn set_tables(&mut self, tables: impl IntoIterator<Item = u32>) {
        self.tables = tables.into_iter().collect();
    }

    /// Replaces the whole table with `dump` (a fresh dump after an
    /// overrun); returns the changes that make the maps equal to it.
    pub fn resync(&mut self, dump: impl IntoIterator<Item = KernelRoute>) -> Vec<Change> {
        let old = std::mem::take(&mut self.routes);
        let old_apart = self.apart.as_mut().map(std::mem::take).unwrap_or_default();
        self.object_use = ObjectUse::default();
        let dump = dump.into_iter();
        for route in dump {
            let attrs = self.attrs.intern(route.route.attrs().clone());
            if let Some((routes, _)) = self.table_mut(route.table) {
                routes.get_or_insert_with(route.route.prefix, Candidates::default).insert(route.priority, attrs);
            }
        }
        for c in self.routes.values().chain(self.apart.iter().flat_map(|a| a.values().flat_map(|t| t.values()))) {
            self.object_use.add(c.nhids());
        }
        let mut changes = differences(&old, &self.routes, None);
        let empty = Routes::new();
        let apart = self.apart.as_ref();
        let tables: BTreeSet<u32> = old_apart.keys().chain(apart.into_iter().flat_map(|a| a.keys())).copied().collect();
        for t in tables {
            let now = apart.and_then(|a| a.get(&t)).unwrap_or(&empty);
            changes.extend(differences(old_apart.get(&t).unwrap_or(&empty), now, Some(t)));
        }
        changes
    }

    /// The best route of each prefix of each table held apart.
    pub fn table_winners(&self) -> impl Iterator<Item = (u32, RouteInput)> + '_ {
        self.apart.iter().flat_map(|a| a.iter().flat_map(|(t, routes)| routes.iter().filter_map(|(p, c)| Some((*t, c.best_route(p)?)))))
    }

    /// The route the kernel prefers for each prefix: the table the RIB must hold.
    pub fn winners(&self) -> impl Iterator<Item = RouteInput> + '_ {
        self.routes.iter().filter_map(|(p, c)| c.best_route(p))
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// A change of the main view's, or (`apart`) of a table held apart.
fn in_table(apart: Option<u32>, change: Change) -> Change {
    match (apart, change) {
        (Some(t), Change::Set(r)) => Change::TableSet(t, r),
        (Some(t), Change::Delete(p)) => Change::TableDelete(t, p),
        (_, c) => c,
    }
}

/// One route event on one table's routes; the change of its prefix's winner.
fn apply_to(routes: &mut Routes, object_use: &mut ObjectUse, route: KernelRoute, present: bool, replace: bool) -> Option<Change> {
    let prefix = route.route.prefix;
    let slot = routes.get_or_insert_with(prefix, Candidates::default);
    let before = slot.best().cloned();
    object_use.sub(slot.nhids());
    if present {
        if replace {
            slot.remove_priority(route.priority);
        }
        slot.insert(route.priority, route.route.attrs().clone());
    } else if !slot.remove(rank(route.priority, &route.route)) && names_no_nexthop(&route.route) {
        // A delete naming only prefix, table and priority (zebra's
        // RTM_DELROUTE over FPM) takes the route of that priority, as
        // the kernel's fib_table_delete matches when no nexthop is given.
        slot.remove_priority(route.priority);
    }
    object_use.add(slot.nhids());
    let after = slot.best().cloned();
    if slot.is_empty() {
        routes.remove(&prefix);
    }
    match (before, after) {
        (b, a) if b == a => None,
        (_, Some(a)) => Some(Change::Set(RouteInput::from_attrs(prefix, a))),
        (Some(_), None) => Some(Change::Delete(prefix)),
        (None, None) => None,
    }
}

/// Removes from one table every candidate route through an object `gone`
/// names (the kernel removed them with it); returns the winners' changes.
fn remove_through(routes: &mut Routes, object_use: &mut ObjectUse, apart: Option<u32>, gone: &impl Fn(u32) -> bool) -> Vec<Change> {
    let through = |r: &RouteAttrs| r.nhid.is_some_and(gone);
    let mut changes = Vec::new();
    routes.retain(|prefix, c| {
        if !c.as_slice().iter().any(|(_, r)| through(r)) {
            return true;
        }
        let before = c.best().cloned();
        let gone: Vec<u32> = c.as_slice().iter().filter(|(_, r)| through(r)).filter_map(|(_, r)| r.nhid).collect();
        object_use.sub(gone.into_iter());
        c.retain(|_, r| !through(r));
        match c.best() {
            None => changes.push(in_table(apart, Change::Delete(prefix))),
            Some(a) if Some(a) != before.as_ref() => changes.push(in_table(apart, Change::Set(RouteInput::from_attrs(prefix, a.clone())))),
            Some(_) => {}
        }
        !c.is_empty()
    });
    changes
}

/// What turns table `old` into `new` (`apart`: a table held apart).
fn differences(old: &Routes, new: &Routes, apart: Option<u32>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (prefix, routes) in old.iter() {
        match new.get(&prefix).and_then(|c| c.best()) {
            None => changes.push(in_table(apart, Change::Delete(prefix))),
            Some(w) if routes.best() != Some(w) => changes.push(in_table(apart, Change::Set(RouteInput::from_attrs(prefix, w.clone())))),
            Some(_) => {}
        }
    }
    for (prefix, c) in new.iter().filter(|(p, _)| !old.contains_key(p)) {
        changes.push(in_table(apart, Change::Set(c.best_route(prefix).expect("present"))));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{RouteKind, RouteMetrics};
    use std::sync::Arc;

    fn r(prefix: &str, table: u32, priority: u32, mtu: u32) -> KernelRoute {
        let mut metrics = RouteMetrics::DEFAULT;
        metrics.mtu = mtu;
        KernelRoute { table, priority, route: RouteInput::new(prefix.parse().unwrap(), RouteKind::Unicast, Some(2), None, metrics) }
    }

    #[test]
    fn lowest_priority_wins_and_other_tables_are_ignored() {
        let mut fib = KernelFib::new([254]);
        assert_eq!(fib.apply(r("10.0.0.0/8", 100, 0, 0), true, false), None, "table 100 not chosen");
        assert!(matches!(fib.apply(r("10.0.0.0/8", 254, 100, 1400), true, false), Some(Change::Set(i)) if i.metrics.mtu == 1400));
        assert!(matches!(fib.apply(r("10.0.0.0/8", 254, 10, 1300), true, false), Some(Change::Set(i)) if i.metrics.mtu == 1300));
        assert_eq!(fib.apply(r("10.0.0.0/8", 254, 100, 1400), false, false), None, "the loser went: no change");
        assert!(matches!(fib.apply(r("10.0.0.0/8", 254, 10, 1300), false, false), Some(Change::Delete(_))));
        assert!(fib.is_empty());
    }

    #[test]
    fn resync_yields_exactly_the_differences() {
        let mut fib = KernelFib::new([254]);
        for (p, mtu) in [("10.1.0.0/16", 0), ("10.2.0.0/16", 0), ("10.3.0.0/16", 0)] {
            fib.apply(r(p, 254, 0, mtu), true, false);
        }
        let dump = [r("10.1.0.0/16", 254, 0, 0), r("10.2.0.0/16", 254, 0, 1400), r("10.4.0.0/16", 254, 0, 0), r("10.5.0.0/16", 100, 0, 0)];
        let mut changes = fib.resync(dump);
        changes.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(changes.contains(&Change::Delete("10.3.0.0/16".parse().unwrap())));
        assert!(changes.iter().any(|c| matches!(c, Change::Set(i) if i.prefix.to_string() == "10.2.0.0/16" && i.metrics.mtu == 1400)));
        assert!(changes.iter().any(|c| matches!(c, Change::Set(i) if i.prefix.to_string() == "10.4.0.0/16")));
    }

    #[test]
    fn replace_takes_the_place_of_the_route_of_that_priority_on_any_device() {
        let mut fib = KernelFib::new([254]);
        let on = |dev: u32, mtu: u32| {
            let mut k = r("10.7.0.0/16", 254, 0, mtu);
            k.route.dev = Some(dev);
            k
        };
        fib.apply(on(2, 1400), true, false);
        // `ip route replace ... dev 3`: the route on device 2 is gone.
        assert!(matches!(fib.apply(on(3, 1300), true, true), Some(Change::Set(i)) if i.dev == Some(3)));
        assert_eq!(fib.apply(on(3, 1300), false, false), Some(Change::Delete("10.7.0.0/16".parse().unwrap())), "nothing left behind");
        // Without NLM_F_REPLACE (`ip route append`), both stay; the lower device wins.
        fib.apply(on(3, 1300), true, false);
        assert!(matches!(fib.apply(on(2, 1400), true, false), Some(Change::Set(i)) if i.dev == Some(2)));
    }

    #[test]
    fn a_route_only_the_kernel_carries_comes_first_among_equals() {
        let mut fib = KernelFib::new([254]);
        fib.apply(r("10.8.0.0/16", 254, 0, 0), true, false);
        let mut tos = r("10.8.0.0/16", 254, 0, 0);
        tos.route = RouteInput::new(tos.route.prefix, RouteKind::Kernel, None, None, RouteMetrics::DEFAULT);
        assert!(matches!(fib.apply(tos.clone(), true, false), Some(Change::Set(i)) if i.kind == RouteKind::Kernel));
        assert!(matches!(fib.apply(tos, false, false), Some(Change::Set(i)) if i.kind == RouteKind::Unicast));
    }

    /// The kernel removes the routes through a removed nexthop object and
    /// does not say so (compat mode 0): the FIB does it for the kernel.
    #[test]
    fn routes_through_removed_objects_go_with_them() {
        use crate::rib::types::{NexthopKind, NexthopObject};
        let mut fib = KernelFib::new([254]);
        let single = |id, dev| NexthopObject { id, kind: NexthopKind::Single { dev, via: None }, protocol: 0 };
        assert_eq!(fib.apply_nexthop(single(1, 2), true).len(), 1);
        fib.apply_nexthop(single(2, 3), true);
        let through = |p: &str, nhid| KernelRoute {
            table: 254,
            priority: 0,
            route: RouteInput::via_object(p.parse().unwrap(), nhid, RouteMetrics::DEFAULT),
        };
        fib.apply(through("10.1.0.0/16", 1), true, false);
        fib.apply(through("10.2.0.0/16", 2), true, false);
        // A fallback of a higher priority under the one through object 2.
        fib.apply(KernelRoute { priority: 100, ..r("10.2.0.0/16", 254, 0, 0) }, true, false);
        let changes = fib.flush_dev(3);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(matches!(&changes[0], Change::Set(i) if i.prefix.to_string() == "10.2.0.0/16" && i.nhid.is_none()), "the fallback wins");
        assert_eq!(changes[1], Change::DeleteNexthop(2));
        assert_eq!(fib.apply_nexthop(single(1, 2), false), vec![Change::Delete("10.1.0.0/16".parse().unwrap()), Change::DeleteNexthop(1)]);
    }

    /// zebra's RTM_DELROUTE over FPM names the prefix, table and priority
    /// only: it removes the route of that priority, whatever its next hop.
    #[test]
    fn a_delete_naming_no_nexthop_removes_the_route_of_its_priority() {
        let mut fib = KernelFib::new([254]);
        let through = KernelRoute {
            table: 254,
            priority: 20,
            route: RouteInput::via_object("10.1.0.0/16".parse().unwrap(), 7, RouteMetrics::DEFAULT),
        };
        fib.apply(through, true, false);
        fib.apply(KernelRoute { priority: 20, ..r("10.2.0.0/16", 254, 0, 0) }, true, false);
        for p in ["10.1.0.0/16", "10.2.0.0/16"] {
            let bare = KernelRoute {
                table: 254,
                priority: 20,
                route: RouteInput::new(p.parse().unwrap(), RouteKind::Kernel, None, None, RouteMetrics::DEFAULT),
            };
            assert_eq!(fib.apply(bare, false, false), Some(Change::Delete(p.parse().unwrap())), "{p}");
        }
        assert!(fib.is_empty());
    }

    #[test]
    fn other_tables_are_held_apart_for_the_rules_and_resync_by_table() {
        let mut fib = KernelFib::with_policy_tables([254]);
        assert!(
            matches!(fib.apply(r("10.0.0.0/8", 100, 20, 0), true, false), Some(Change::TableSet(100, i)) if i.prefix.to_string() == "10.0.0.0/8")
        );
        assert!(matches!(fib.apply(r("10.0.0.0/8", 100, 10, 1400), true, false), Some(Change::TableSet(100, i)) if i.metrics.mtu == 1400));
        assert_eq!(fib.apply(r("10.0.0.0/8", 255, 0, 0), true, false), None, "the local table: the RIB's, from addresses");
        assert!(KernelFib::new([254]).apply(r("10.0.0.0/8", 100, 0, 0), true, false).is_none(), "without policy tables: ignored");
        let dump = [r("10.0.0.0/8", 254, 0, 0), r("10.1.0.0/16", 100, 0, 0), r("10.2.0.0/16", 200, 0, 0)];
        let mut changes = fib.resync(dump);
        changes.sort_by_key(|c| format!("{c:?}"));
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert!(changes.contains(&Change::TableDelete(100, net("10.0.0.0/8"))));
        assert!(changes.iter().any(|c| matches!(c, Change::TableSet(100, i) if i.prefix == net("10.1.0.0/16"))));
        assert!(changes.iter().any(|c| matches!(c, Change::TableSet(200, i) if i.prefix == net("10.2.0.0/16"))));
        assert!(changes.iter().any(|c| matches!(c, Change::Set(i) if i.prefix == net("10.0.0.0/8"))));
        assert_eq!(fib.table_winners().count(), 2);
        assert_eq!(fib.apply(r("10.2.0.0/16", 200, 0, 0), false, false), Some(Change::TableDelete(200, net("10.2.0.0/16"))));
        assert_eq!(fib.table_winners().count(), 1, "table 200 gone with its last route");
    }

    /// A full table names a handful of next hops: the record keeps one
    /// copy of what its routes say, not one per route, and a route that
    /// changes unshares only itself.
    #[test]
    fn routes_that_say_the_same_share_one_copy() {
        let mut fib = KernelFib::new([254]);
        let set = |c: Option<Change>| match c {
            Some(Change::Set(r)) => r,
            other => panic!("{other:?}"),
        };
        let a = set(fib.apply(r("10.1.0.0/16", 254, 0, 0), true, false));
        let b = set(fib.apply(r("10.2.0.0/16", 254, 0, 0), true, false));
        assert!(Arc::ptr_eq(a.attrs(), b.attrs()), "one copy for both");
        let c = set(fib.apply(r("10.3.0.0/16", 254, 0, 1400), true, false));
        assert!(!Arc::ptr_eq(a.attrs(), c.attrs()) && c.metrics.mtu == 1400);
        let mut edited = b.clone();
        edited.dev = Some(9);
        assert_eq!((a.dev, edited.dev), (Some(2), Some(9)), "a write unshares");
        assert!(fib.winners().all(|w| w.dev == Some(2)), "the record is untouched");
        assert_eq!(fib.attrs.sets(), 2);
    }
}
