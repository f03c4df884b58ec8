//! What the daemon does with the kernel's news: netlink batches (routes
//! through the route feed, the rest straight to the RIB), a full resync
//! after an overrun, and having the kernel resolve the neighbours we need.

use super::Daemon;
use crate::{
    dataplane::map_writer::MapWriter,
    fib::netlink_mirror::{self, Event},
    rib::{Rib, RibError, RouteChange},
};
use anyhow::{anyhow, Result};
use ipnet::IpNet;
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

impl Daemon {
    /// Applies one route change from the feed. One the maps cannot carry
    /// yet (a full table: [`RibError::is_retryable`]) is kept for a retry,
    /// counted, and superseded by any later change to its prefix; one that
    /// would fail the same way again is counted and logged, not retried.
    pub(super) fn apply_route(&mut self, change: RouteChange, now: Instant) {
        self.compaction.route_changed();
        let key = change.key();
        match self.rib.apply_route_change(change.clone(), now) {
            Ok(()) => {
                self.retry.remove(&key);
            }
            Err(e) if e.is_retryable() => {
                self.netlink.errors += 1;
                if self.retry.insert(key, change).is_none() {
                    tracing::warn!(?key, error = %crate::error_chain(&e), "route not carried; retried every second");
                }
            }
            Err(e) => {
                self.netlink.errors += 1;
                self.retry.remove(&key);
                tracing::error!(?key, error = %crate::error_chain(&e), "route not carried");
            }
        }
        self.netlink.retry_pending = self.retry.len() as u64;
    }

    /// Once a second: the changes that failed for want of room, again.
    pub(super) fn retry_routes(&mut self, now: Instant) {
        // Nexthop objects first (keys sort prefixes before objects: reversed),
        // since the routes through them need them; a group retried before a
        // member is set again when the member comes (`Rib::set_nexthop_object`).
        for (key, change) in std::mem::take(&mut self.retry).into_iter().rev() {
            match self.rib.apply_route_change(change.clone(), now) {
                Ok(()) => {
                    self.netlink.retried += 1;
                    tracing::info!(?key, "route carried on retry");
                }
                Err(e) if e.is_retryable() => {
                    self.retry.insert(key, change);
                }
                Err(e) => {
                    tracing::error!(?key, error = %crate::error_chain(&e), "route not carried on retry; no longer retried");
                }
            }
        }
        self.netlink.retry_pending = self.retry.len() as u64;
    }

    /// Makes the RIB hold exactly the feed's table: what it lacks or holds
    /// differently is set, what the feed no longer has is deleted.
    pub(super) fn reconcile(&mut self, now: Instant) {
        let crate::fib::source::FeedSnapshot { objects, table, fpm_handed_over } = self.feed.snapshot();
        // FPM changes handed over before this snapshot are in it: applied
        // after it they would set routes back (see `fpm_input`).
        if let Some(n) = fpm_handed_over {
            self.fpm_applied = self.fpm_applied.max(n);
        }
        for (id, object) in &objects {
            if self.rib.nexthop_object(*id).map(|o| &o.object) != Some(object) {
                self.apply_route(RouteChange::SetNexthop(object.clone()), now);
            }
        }
        let stale: Vec<_> = self.rib.route_prefixes().filter(|p| !table.contains_key(p)).collect();
        for prefix in stale {
            self.apply_route(RouteChange::Delete(prefix), now);
        }
        for (prefix, route) in table {
            if self.rib.route_input(&prefix).as_ref() != Some(&route) {
                self.apply_route(RouteChange::Set(route), now);
            }
        }
        let tables = self.feed.table_routes();
        let stale: Vec<(u32, IpNet)> = self.rib.table_routes().map(|(k, _)| *k).filter(|k| !tables.contains_key(k)).collect();
        for (table, prefix) in stale {
            self.apply_route(RouteChange::TableDelete(table, prefix), now);
        }
        let differ: Vec<_> = tables.into_iter().filter(|((t, p), r)| self.rib.table_route_input(*t, p).as_ref() != Some(r)).collect();
        for ((table, _), route) in differ {
            self.apply_route(RouteChange::TableSet(table, route), now);
        }
        let stale: Vec<u32> = self.rib.nexthop_objects().map(|o| o.object.id).filter(|id| !objects.contains_key(id)).collect();
        for id in stale {
            self.apply_route(RouteChange::DeleteNexthop(id), now);
        }
    }

    /// Applies one netlink event: routes through the route feed's choice,
    /// the rest straight to the RIB.
    pub(super) fn apply_event(&mut self, ev: Event, now: Instant) -> Result<(), RibError> {
        match ev {
            Event::Route { route, present, replace } => {
                self.policy.route(&route, present);
                if let Some(change) = self.feed.kernel_route(route, present, replace) {
                    self.apply_route(change, now);
                }
                Ok(())
            }
            Event::Nexthop { object, present } => {
                for change in self.feed.kernel_nexthop(object, present) {
                    self.apply_route(change, now);
                }
                Ok(())
            }
            Event::Rule { rule, present } => {
                self.policy.rule(rule, present);
                Ok(())
            }
            Event::Link(link) => {
                self.policy.links_changed();
                // Its sysctls first: its ingress port is published with them.
                self.refresh_port_sysctls(link.index, &link.name);
                // Down or without carrier: the kernel has removed its nexthop
                // objects, and the routes through them, without a word.
                let down = (!link.up).then_some(link.index);
                self.rib.apply(Event::Link(link), now)?;
                for change in down.map(|i| self.feed.device_down(i)).unwrap_or_default() {
                    self.apply_route(change, now);
                }
                Ok(())
            }
            Event::LinkGone(index) => {
                self.policy.links_changed();
                self.rib.apply(Event::LinkGone(index), now)?;
                for change in self.feed.device_down(index) {
                    self.apply_route(change, now);
                }
                Ok(())
            }
            other => self.rib.apply(other, now),
        }
    }

    /// Reads link `index`'s source-validation sysctls; the RIB republishes
    /// its ingress port when they changed.
    pub(super) fn refresh_port_sysctls(&mut self, index: u32, name: &str) {
        let Some(sysctls) = crate::fib::sysctl::port_sysctls(name) else { return };
        if let Err(e) = self.rib.set_port_sysctls(index, sysctls) {
            tracing::error!(index, name, error = %crate::error_chain(&e), "publishing an ingress port");
        }
    }

    /// Every link's sysctls again (once a second: no event announces them).
    pub(super) fn refresh_all_port_sysctls(&mut self) {
        for (name, index) in self.rib.link_indexes() {
            self.refresh_port_sysctls(index, &name);
        }
    }

    /// Applies a batch of events in order; an overrun (or a message that
    /// could not be decoded) among them ends in a resync. An event the maps
    /// cannot carry is logged and counted, and the rest go on.
    pub(super) async fn apply_batch(&mut self, batch: Vec<Event>) -> Result<()> {
        let mut overrun = false;
        // One turn (see `dataplane::trie_queue`), ended before any resync's await.
        self.rib.begin_turn(batch.len());
        for ev in batch {
            if ev.needs_resync() {
                match ev {
                    Event::Undecodable => self.netlink.undecodable += 1,
                    _ => self.netlink.overruns += 1,
                }
                overrun = true;
                continue;
            }
            if let Event::Address { index, addr, present } = ev {
                self.slow.note_address(index, addr, present);
            }
            self.netlink.events += 1;
            if let Err(e) = self.apply_event(ev.clone(), Instant::now()) {
                self.netlink.errors += 1;
                tracing::error!(?ev, error = %crate::error_chain(&e), "applying netlink event");
            }
        }
        self.rib.end_turn();
        if overrun {
            self.resync().await?;
        }
        self.publish_policy();
        Ok(())
    }

    /// A cold start's routes, applied as the dump brings them. The feed
    /// starts empty, so a dumped route is what an event adding it would
    /// be: each prefix ends with the winner a resync would pick, and the
    /// first routes reach the maps while the kernel still sends the rest.
    ///
    /// With `bulk` (nothing adopted, so no program reads the maps yet) the
    /// tries are written in batches; a route the kernel refuses fails the
    /// start. Without (an adopted data plane, still forwarding), the whole
    /// dump is taken first and resynced, as after an overrun.
    pub(super) async fn load_routes(&mut self, dump: &mut netlink_mirror::RouteDump, bulk: bool, now: Instant) -> Result<()> {
        let nexthops = std::mem::take(&mut dump.nexthops);
        if !bulk {
            // An adopted data plane forwards on meanwhile: each prefix
            // gets its final winner only, after the whole dump (a route
            // dumped first may lose to one dumped later).
            let mut routes = Vec::new();
            while let Some(route) = dump.next().await? {
                self.policy.route(&route, true);
                routes.push(route);
            }
            for change in self.feed.kernel_resync(nexthops, routes) {
                self.apply_route(change, now);
            }
            return Ok(());
        }
        for change in self.feed.kernel_resync(nexthops, []) {
            self.apply_route(change, now);
        }
        self.rib.begin_bulk();
        while let Some(route) = dump.next().await? {
            self.policy.route(&route, true);
            if let Some(change) = self.feed.kernel_route(route, true, false) {
                self.apply_route(change, now);
            }
        }
        self.rib.end_bulk().map_err(|e| anyhow!("writing the kernel's routes: {}", crate::error_chain(&e)))
    }

    /// After an overrun: dump everything again and apply exactly the
    /// differences, so that no stale entry survives the lost events. Events
    /// queued behind the overrun are applied afterwards, in order; each sets
    /// its object to its state at that time, so the maps converge on the
    /// kernel's.
    pub(super) async fn resync(&mut self) -> Result<()> {
        let started = Instant::now();
        let dump = self.mirror.dump().await?;
        self.slow.set_addresses(&dump);
        let mut dump = netlink_mirror::SplitDump::new(dump);
        self.policy.reset(std::mem::take(&mut dump.rules), &dump.routes, &self.eff.tables);
        let now = Instant::now();
        let mut report = self.rib.resync(dump.rest, now)?;
        for change in self.feed.kernel_resync(dump.nexthops, dump.routes) {
            match &change {
                RouteChange::Delete(_) | RouteChange::TableDelete(..) => report.routes_removed += 1,
                RouteChange::Set(r) if self.rib.route_metrics_ref(&r.prefix).is_some() => report.routes_changed += 1,
                RouteChange::TableSet(t, r) if self.rib.table_route_entry(*t, &r.prefix).is_some() => report.routes_changed += 1,
                RouteChange::Set(_) | RouteChange::TableSet(..) => report.routes_added += 1,
                RouteChange::SetNexthop(_) | RouteChange::DeleteNexthop(_) => report.nexthops_changed += 1,
            }
            self.apply_route(change, now);
        }
        // The feed's diff says what changed in the kernel; the RIB may still
        // lack what failed before: compare the whole table against it.
        self.reconcile(now);
        self.netlink.resyncs += 1;
        self.netlink.last_resync = Some(report);
        tracing::warn!(
            took_ms = started.elapsed().as_millis() as u64,
            links = report.links,
            addresses = report.addresses,
            neighbours = report.neighbours,
            routes_added = report.routes_added,
            routes_changed = report.routes_changed,
            routes_removed = report.routes_removed,
            "netlink overrun: resynced with a full dump"
        );
        Ok(())
    }

    /// Has the kernel resolve every pending neighbour not asked for in the
    /// last `again` (a new gateway at once, a silent one every `again`).
    pub(super) fn solicit_pending(&mut self, again: Duration) {
        let now = Instant::now();
        let pending = pending_neighbours(&self.rib, &self.running.to_resolve);
        self.asked.retain(|k, _| pending.contains(k));
        for (ifindex, addr) in pending {
            if self.asked.get(&(ifindex, addr)).is_some_and(|t| now.duration_since(*t) < again) {
                continue;
            }
            self.asked.insert((ifindex, addr), now);
            if let Some(dev) = self.rib.link_name(ifindex) {
                if let Err(e) = netlink_mirror::solicit(addr, dev, ifindex) {
                    tracing::debug!(%addr, dev, error = %e, "solicit failed");
                }
            }
        }
    }

    /// Has the kernel resolve the neighbours we need, applying netlink
    /// events meanwhile, until all are resolved or `wait` has passed.
    pub(super) async fn resolve_neighbours(&mut self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        self.asked = HashMap::new();
        loop {
            let pending = pending_neighbours(&self.rib, &self.running.to_resolve);
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::warn!(?pending, "neighbours still unresolved; their traffic goes to the kernel until they are");
                return Ok(());
            }
            self.solicit_pending(Duration::ZERO);
            let pause = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    batch = self.mirror.next() => {
                        let batch = batch.ok_or_else(|| anyhow!("netlink subscription closed"))?;
                        self.apply_batch(batch).await?;
                    }
                }
            }
        }
    }
}

/// Neighbours the agent has the kernel resolve: configured ones without a
/// MAC, and the gateways of routes.
fn pending_neighbours(rib: &Rib<MapWriter>, configured: &[(u32, IpAddr)]) -> Vec<(u32, IpAddr)> {
    let mut v: Vec<(u32, IpAddr)> = configured.iter().copied().filter(|(i, a)| !rib.neighbour_resolved(*i, *a)).collect();
    v.extend(rib.unresolved_gateways());
    v.sort();
    v.dedup();
    v
}
