//! Routes and the one place that decides what an exact prefix maps to
//! (`publish_entry`): local address, route, or neighbour host, with a
//! destination's private copy on top.

use super::{host_prefix, is_host, Base, MapSink, NextHopKey, Rib, RibError, Route, RouteChange, RouteInput, WantedBy};
use crate::{dataplane::map_writer::MapError, rib::metrics_store::MetricsStoreError};
use common::{MetricsRef, RouteEntry, RouteKind, RouteMetrics};
use ipnet::IpNet;
use std::{net::IpAddr, time::Instant};

impl<S: MapSink> Rib<S> {
    /// Adds or replaces a route. On error nothing has changed.
    pub fn set_route(&mut self, input: RouteInput, now: Instant) -> Result<(), RibError> {
        let prefix = input.prefix;
        let route = self.acquire_route(input, false, now)?;
        let old = self.routes.insert(prefix, route);
        self.republish(&prefix, now)?;
        self.refresh_dependents(&prefix, now)?;
        if let Some(old) = old {
            self.release_route(&old, now);
        }
        Ok(())
    }

    /// What a route's entries are made of: its metrics interned, its next
    /// hop, group or object acquired, a fresh id. `connected_is_kernel`: a
    /// route to a link with no gateway (whose entries would need the
    /// destinations' neighbours) is the kernel's to forward. On error
    /// nothing is held.
    pub(super) fn acquire_route(&mut self, input: RouteInput, connected_is_kernel: bool, now: Instant) -> Result<Route, RibError> {
        let by = WantedBy::Route(input.prefix);
        let interned = self.metrics.intern(&input.metrics, now).map_err(|e: MetricsStoreError| RibError::from(e).wanted_by(by))?;
        if let Some(m) = interned.fill {
            if let Err(e) = self.sink.put_ro_metrics(interned.reference.slot(), &m) {
                self.metrics.release(interned.reference, now);
                return Err(e.into());
            }
        }
        let (kind, nexthop, multipath) = match (input.kind, input.dev) {
            (RouteKind::Unicast, _) if connected_is_kernel && self.connects_directly(&input) => (RouteKind::Kernel, 0, false),
            (RouteKind::Unicast, _) if input.nhid.is_some() => self.acquire_object(input.nhid.expect("checked")).entry(),
            (RouteKind::Unicast, _) if !input.multipath.is_empty() => match self.acquire_group(&input.multipath, now) {
                Ok(id) => (RouteKind::Unicast, id, true),
                Err(e) => {
                    self.metrics.release(interned.reference, now);
                    return Err(e.wanted_by(by));
                }
            },
            (RouteKind::Unicast, Some(dev)) => match self.acquire_nexthop(NextHopKey { ifindex: dev, gateway: input.via }, now) {
                Ok(id) => (RouteKind::Unicast, id, false),
                Err(e) => {
                    self.metrics.release(interned.reference, now);
                    return Err(e.wanted_by(by));
                }
            },
            (RouteKind::Unicast, None) => {
                self.metrics.release(interned.reference, now);
                return Err(RibError::NoDevice(input.prefix));
            }
            (kind, _) => (kind, 0, false),
        };
        let id = self.next_route_id;
        self.next_route_id += 1;
        if let Some(nhid) = input.nhid {
            *self.object_routes.entry(nhid).or_default() += 1;
        }
        Ok(Route {
            prefix_len: input.prefix.prefix_len(),
            attrs: input.attrs().clone(),
            metrics_ref: interned.reference,
            nexthop,
            id,
            kind,
            multipath,
        })
    }

    /// The one door for routes from any source (`fib::source`).
    pub fn apply_route_change(&mut self, change: RouteChange, now: Instant) -> Result<(), RibError> {
        match change {
            RouteChange::Set(input) => self.set_route(input, now),
            RouteChange::Delete(prefix) => self.delete_route(&prefix, now).map(|_| ()),
            RouteChange::TableSet(table, input) => self.set_table_route(table, input, now),
            RouteChange::TableDelete(table, prefix) => self.delete_table_route(table, &prefix, now),
            RouteChange::SetNexthop(object) => self.set_nexthop_object(object, now),
            RouteChange::DeleteNexthop(id) => self.delete_nexthop_object(id, now),
        }
    }

    pub fn delete_route(&mut self, prefix: &IpNet, now: Instant) -> Result<bool, RibError> {
        let Some(old) = self.routes.remove(prefix) else { return Ok(false) };
        self.republish(prefix, now)?;
        self.refresh_dependents(prefix, now)?;
        self.release_route(&old, now);
        Ok(true)
    }

    /// Frees quarantined slots whose grace period has passed.
    pub fn reap(&mut self, now: Instant) {
        self.metrics.reap(now);
        self.rw.reap(now);
    }

    pub(super) fn release_route(&mut self, route: &Route, now: Instant) {
        self.metrics.release(route.metrics_ref, now);
        if let Some(nhid) = route.attrs.nhid {
            if let Some(n) = self.object_routes.get_mut(&nhid) {
                *n -= 1;
                if *n == 0 {
                    self.object_routes.remove(&nhid);
                }
            }
        }
        if route.multipath {
            self.release_group(route.nexthop, now);
        } else {
            self.nexthops.release(route.nexthop, now);
        }
    }

    /// The route with the longest prefix covering `addr`.
    pub(super) fn longest_match(&self, addr: IpAddr) -> Option<&Route> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| self.routes.get(&IpNet::new(addr, len).ok()?.trunc()))
    }

    /// What `addr`'s host entry would be without a private copy. `clone`:
    /// also when it has no host entry of its own (then it is cloned from the
    /// covering route).
    pub(super) fn base(&self, addr: IpAddr, clone: bool) -> Option<Base> {
        let host = host_prefix(addr);
        let delivered_locally = |flags: u8| Base {
            kind: RouteKind::Local,
            nexthop: self.local_devices.get(&addr).copied().unwrap_or(0),
            metrics_ref: MetricsRef::DEFAULT,
            shared: RouteMetrics::DEFAULT,
            covering: host,
            id: 0,
            flags: RouteEntry::HOST | RouteEntry::LOCAL_TABLE | flags,
        };
        if self.local_addrs.contains_key(&addr) {
            return Some(delivered_locally(RouteEntry::ADDRESS));
        }
        if self.broadcasts.contains_key(&addr) {
            // The kernel's broadcast route: delivered locally, never
            // forwarded; not one of the router's addresses (no source is
            // refused for it).
            return Some(delivered_locally(0));
        }
        let from_route = |r: &Route, flags: u8| Base {
            kind: r.kind,
            nexthop: r.nexthop,
            metrics_ref: r.metrics_ref,
            shared: *r.attrs.metrics,
            covering: r.prefix_of(addr),
            id: r.id,
            flags: flags | r.entry_flags(),
        };
        if let Some(r) = self.routes.get(&host) {
            return Some(from_route(r, RouteEntry::HOST));
        }
        // A neighbour host whose covering route is being removed has no base
        // of its own any more: the refresh after the removal drops it.
        if let Some((h, covering)) = self.neighbour_hosts.get(&addr).and_then(|h| Some((h, self.routes.get(&h.covering)?))) {
            return Some(Base {
                kind: RouteKind::Unicast,
                nexthop: h.nexthop,
                metrics_ref: h.metrics_ref,
                shared: *covering.attrs.metrics,
                covering: h.covering,
                id: 0,
                flags: RouteEntry::HOST | RouteEntry::CLONE,
            });
        }
        if clone {
            return self.longest_match(addr).map(|r| from_route(r, RouteEntry::HOST | RouteEntry::CLONE));
        }
        None
    }

    pub(super) fn publish(&mut self, prefix: &IpNet) -> Result<(), MapError> {
        self.publish_entry(prefix).map(|_| ())
    }

    /// The one place that decides what an exact prefix maps to. Returns
    /// whether it maps to an entry (else it was deleted).
    pub(super) fn publish_entry(&mut self, prefix: &IpNet) -> Result<bool, MapError> {
        let entry = if is_host(prefix) {
            let addr = prefix.addr();
            let private = self.private.get(&addr).map(|p| p.slot);
            self.base(addr, private.is_some()).map(|b| {
                let mut e = RouteEntry::new(b.kind, b.nexthop, b.metrics_ref, b.id);
                e.flags = b.flags;
                e.prefix_len = b.covering.prefix_len();
                if let (RouteKind::Unicast, Some(slot)) = (b.kind, private) {
                    e.metrics = MetricsRef::private(slot);
                }
                e
            })
        } else {
            self.routes.get(prefix).map(|r| {
                let mut e = RouteEntry::new(r.kind, r.nexthop, r.metrics_ref, r.id);
                e.flags = r.entry_flags();
                e.prefix_len = prefix.prefix_len();
                e
            })
        };
        match entry {
            Some(e) => self.sink.put_route(prefix, &e).map(|_| true),
            None => self.sink.delete_route(prefix).or(Ok(())).map(|_| false),
        }
    }

    /// Publishes `prefix`, first bringing a private copy at that destination
    /// in line with its (possibly new) base.
    pub(super) fn republish(&mut self, prefix: &IpNet, now: Instant) -> Result<(), RibError> {
        if is_host(prefix) && self.private.contains_key(&prefix.addr()) {
            return self.rederive(prefix.addr(), now);
        }
        Ok(self.publish(prefix)?)
    }

    /// Routes at `prefix` changed: everything derived from routes inside it
    /// (neighbour host entries, private copies) follows.
    pub(super) fn refresh_dependents(&mut self, prefix: &IpNet, now: Instant) -> Result<(), RibError> {
        self.refresh_neighbour_hosts_under(prefix, now)?;
        // A copy's covering route contains it: only the prefix's range.
        let addrs: Vec<IpAddr> = self.private.range(prefix.network()..=prefix.broadcast()).map(|(a, _)| *a).collect();
        for addr in addrs {
            self.rederive(addr, now)?;
        }
        Ok(())
    }
}
