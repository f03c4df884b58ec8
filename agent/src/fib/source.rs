//! The route-source seam. Every feed of routes (the kernel FIB over netlink,
//! the config file's `[[route]]` list, FRR's FPM stream) turns what it
//! hears into the same [`RouteChange`]s, and the daemon hands them to the RIB
//! through one door ([`crate::rib::Rib::apply_route_change`]). Links,
//! addresses and neighbours are not routes: they always come from the kernel.

use crate::{
    fib::{
        fpm::{lock, FpmRoutes, SharedFpmRoutes},
        kernel_fib::KernelFib,
        netlink_mirror::KernelRoute,
    },
    rib::{types::NexthopObject, RouteChange, RouteInput},
};
use ipnet::IpNet;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

/// Where the routes come from (`--source`, or the file's `source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RouteSource {
    /// The kernel's FIB over netlink (the tables given with --table).
    Kernel,
    /// The `[[route]]` list of the config file.
    Config,
    /// FRR's zebra over FPM (`dplane_fpm_nl`), listening on --fpm-listen.
    Fpm,
}

/// The config file's routes as a feed: a (re)load yields the differences.
#[derive(Debug, Default)]
pub struct ConfigRoutes {
    routes: BTreeMap<IpNet, RouteInput>,
}

impl ConfigRoutes {
    /// Makes the feed's table `new`; returns what changed, deletions first.
    pub fn replace(&mut self, new: &BTreeMap<IpNet, RouteInput>) -> Vec<RouteChange> {
        let mut changes: Vec<RouteChange> = self.routes.keys().filter(|p| !new.contains_key(p)).map(|p| RouteChange::Delete(*p)).collect();
        for (prefix, route) in new {
            if self.routes.get(prefix) != Some(route) {
                changes.push(RouteChange::Set(route.clone()));
            }
        }
        self.routes = new.clone();
        changes
    }
}

/// A kernel-FIB model's nexthop objects, by id.
fn objects_of(fib: &KernelFib) -> BTreeMap<u32, Arc<NexthopObject>> {
    fib.nexthops().objects().map(|o| (o.id, o.clone())).collect()
}

/// A kernel-FIB model's winning routes, by prefix.
fn table_of(fib: &KernelFib) -> BTreeMap<IpNet, RouteInput> {
    fib.winners().map(|r| (r.prefix, r)).collect()
}

/// What a feed holds at one moment ([`Feed::snapshot`]).
pub struct FeedSnapshot {
    /// As [`Feed::nexthop_objects`].
    pub objects: BTreeMap<u32, Arc<NexthopObject>>,
    /// As [`Feed::table`].
    pub table: BTreeMap<IpNet, RouteInput>,
    /// The FPM feed's: the number of the last hand-over of changes it includes.
    pub fpm_handed_over: Option<u64>,
}

/// The feed the agent runs with: one of each kind, the same changes out.
pub enum Feed {
    Kernel(KernelFib),
    Config(ConfigRoutes),
    /// Shared with the FPM listener, which applies zebra's frames to it as
    /// it reads them ([`crate::fib::fpm::serve`]).
    Fpm(SharedFpmRoutes),
}

impl Feed {
    pub fn new(source: RouteSource, tables: &[u32]) -> Feed {
        match source {
            RouteSource::Kernel => Feed::Kernel(KernelFib::with_policy_tables(tables.iter().copied())),
            RouteSource::Config => Feed::Config(ConfigRoutes::default()),
            RouteSource::Fpm => Feed::Fpm(Arc::new(Mutex::new(FpmRoutes::new(tables.iter().copied())))),
        }
    }

    pub fn source(&self) -> RouteSource {
        match self {
            Feed::Kernel(_) => RouteSource::Kernel,
            Feed::Config(_) => RouteSource::Config,
            Feed::Fpm(_) => RouteSource::Fpm,
        }
    }

    /// A route event from netlink; only the kernel feed takes it.
    pub fn kernel_route(&mut self, route: KernelRoute, present: bool, replace: bool) -> Option<RouteChange> {
        match self {
            Feed::Kernel(fib) => fib.apply(route, present, replace),
            Feed::Config(_) | Feed::Fpm(_) => None,
        }
    }

    /// A nexthop object event; only the kernel feed takes it.
    pub fn kernel_nexthop(&mut self, object: NexthopObject, present: bool) -> Vec<RouteChange> {
        match self {
            Feed::Kernel(fib) => fib.apply_nexthop(object, present),
            Feed::Config(_) | Feed::Fpm(_) => Vec::new(),
        }
    }

    /// A device went down or away: what the kernel removed with it (its
    /// nexthop objects and the routes through them, which it does not report).
    pub fn device_down(&mut self, ifindex: u32) -> Vec<RouteChange> {
        match self {
            Feed::Kernel(fib) => fib.flush_dev(ifindex),
            // zebra says what it does about a device going down.
            Feed::Config(_) | Feed::Fpm(_) => Vec::new(),
        }
    }

    /// The nexthop objects and routes of a fresh kernel dump (startup is a
    /// resync from nothing, and so is an overrun): what brings the RIB in
    /// line with them, objects first.
    pub fn kernel_resync(
        &mut self,
        nexthops: impl IntoIterator<Item = NexthopObject>,
        routes: impl IntoIterator<Item = KernelRoute>,
    ) -> Vec<RouteChange> {
        match self {
            Feed::Kernel(fib) => {
                let mut changes = fib.resync_nexthops(nexthops);
                let deletes_at = changes.iter().position(|c| matches!(c, RouteChange::DeleteNexthop(_))).unwrap_or(changes.len());
                let deletes = changes.split_off(deletes_at);
                changes.extend(fib.resync(routes));
                changes.extend(deletes);
                changes
            }
            Feed::Config(_) | Feed::Fpm(_) => Vec::new(),
        }
    }

    /// The nexthop objects this feed wants the RIB to hold.
    pub fn nexthop_objects(&self) -> BTreeMap<u32, Arc<NexthopObject>> {
        match self {
            Feed::Kernel(fib) => objects_of(fib),
            Feed::Fpm(f) => objects_of(&lock(f).fib),
            Feed::Config(_) => BTreeMap::new(),
        }
    }

    /// The config file's routes, at start or on SIGHUP; only the config
    /// feed takes them (resolve() refuses routes in a file with --source kernel).
    pub fn configured(&mut self, routes: &BTreeMap<IpNet, RouteInput>) -> Vec<RouteChange> {
        match self {
            Feed::Config(c) => c.replace(routes),
            Feed::Kernel(_) | Feed::Fpm(_) => Vec::new(),
        }
    }

    /// The whole table this feed wants the RIB to hold, by prefix.
    pub fn table(&self) -> BTreeMap<IpNet, RouteInput> {
        match self {
            Feed::Kernel(fib) => table_of(fib),
            Feed::Fpm(f) => table_of(&lock(f).fib),
            Feed::Config(c) => c.routes.clone(),
        }
    }

    /// The nexthop objects and the table together, read at one moment.
    pub fn snapshot(&self) -> FeedSnapshot {
        match self {
            Feed::Fpm(f) => {
                let f = lock(f);
                FeedSnapshot { objects: objects_of(&f.fib), table: table_of(&f.fib), fpm_handed_over: Some(f.handed_over) }
            }
            _ => FeedSnapshot { objects: self.nexthop_objects(), table: self.table(), fpm_handed_over: None },
        }
    }

    /// The routes of the tables held apart for `ip rule` (the kernel feed's).
    pub fn table_routes(&self) -> BTreeMap<(u32, IpNet), RouteInput> {
        match self {
            Feed::Kernel(fib) => fib.table_winners().map(|(t, r)| ((t, r.prefix), r)).collect(),
            Feed::Config(_) | Feed::Fpm(_) => BTreeMap::new(),
        }
    }

    /// The kernel tables mirrored from now on (a resync follows).
    pub fn set_tables(&mut self, tables: &[u32]) {
        match self {
            Feed::Kernel(fib) => fib.set_tables(tables.iter().copied()),
            Feed::Fpm(f) => lock(f).fib.set_tables(tables.iter().copied()),
            Feed::Config(_) => {}
        }
    }

    /// The FPM feed, with `--source fpm` (held while the guard lives: the
    /// listener waits for it).
    pub fn fpm(&self) -> Option<MutexGuard<'_, FpmRoutes>> {
        match self {
            Feed::Fpm(f) => Some(lock(f)),
            _ => None,
        }
    }

    /// The FPM feed, for the listener to share.
    pub fn fpm_shared(&self) -> Option<SharedFpmRoutes> {
        match self {
            Feed::Fpm(f) => Some(f.clone()),
            _ => None,
        }
    }

    /// Its tables rebuilt with full B-tree nodes (see `PrefixMap::compact`).
    pub fn compact(&mut self) {
        match self {
            Feed::Kernel(k) => k.compact(),
            Feed::Fpm(f) => lock(f).fib.compact(),
            Feed::Config(_) => {}
        }
    }

    pub fn fpm_stats(&self) -> Option<crate::fib::fpm::FpmStats> {
        self.fpm().map(|f| f.stats.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{RouteKind, RouteMetrics};

    fn r(prefix: &str, dev: u32) -> RouteInput {
        RouteInput::new(prefix.parse().unwrap(), RouteKind::Unicast, Some(dev), None, RouteMetrics::DEFAULT)
    }

    #[test]
    fn a_config_reload_yields_only_the_differences() {
        let mut feed = Feed::new(RouteSource::Config, &[]);
        let first: BTreeMap<IpNet, RouteInput> = [r("10.1.0.0/16", 2), r("10.2.0.0/16", 2)].into_iter().map(|r| (r.prefix, r)).collect();
        assert_eq!(feed.configured(&first).len(), 2);
        assert!(feed.configured(&first).is_empty(), "the same file again changes nothing");
        let second: BTreeMap<IpNet, RouteInput> = [r("10.1.0.0/16", 3), r("10.3.0.0/16", 2)].into_iter().map(|r| (r.prefix, r)).collect();
        let changes = feed.configured(&second);
        assert_eq!(changes[0], RouteChange::Delete("10.2.0.0/16".parse().unwrap()), "deletions first");
        assert_eq!(changes.len(), 3);
        assert!(feed
            .kernel_route(crate::fib::netlink_mirror::KernelRoute { table: 254, priority: 0, route: r("10.9.0.0/16", 2) }, true, false)
            .is_none());
    }
}
