//! The tables `ip rule` looks up besides main: each route published apart
//! (`MapSink::put_table_route`), keyed by its table, with the same next
//! hops, groups, objects and shared metrics as the main view's routes.
//!
//! What the main view derives on top of its routes (local addresses,
//! neighbour host entries, private metrics copies) these tables do not
//! have: a route to a link without a gateway (whose packets need each
//! destination's neighbour) is published as the kernel's to forward.

use super::{MapSink, Rib, RibError, Route, RouteInput};
use crate::rib::types::NexthopKind;
use common::RouteEntry;
use ipnet::IpNet;
use std::time::Instant;

impl<S: MapSink> Rib<S> {
    /// Adds or replaces table `table`'s route. On error nothing has changed.
    pub fn set_table_route(&mut self, table: u32, input: RouteInput, now: Instant) -> Result<(), RibError> {
        let prefix = input.prefix;
        let route = self.acquire_route(input, true, now)?;
        if let Err(e) = self.sink.put_table_route(table, &prefix, &table_entry(&route)) {
            self.release_route(&route, now);
            return Err(e.into());
        }
        if let Some(old) = self.table_routes.insert((table, prefix), route) {
            self.release_route(&old, now);
        }
        Ok(())
    }

    pub fn delete_table_route(&mut self, table: u32, prefix: &IpNet, now: Instant) -> Result<(), RibError> {
        let Some(old) = self.table_routes.remove(&(table, *prefix)) else { return Ok(()) };
        self.sink.delete_table_route(table, prefix)?;
        self.release_route(&old, now);
        Ok(())
    }

    /// Every route of the tables held apart: (table, prefix) and the route.
    pub fn table_routes(&self) -> impl Iterator<Item = (&(u32, IpNet), RouteInput)> {
        self.table_routes.iter().map(|(k, r)| (k, r.input(k.1)))
    }

    /// The route table `table` holds for `prefix`.
    pub fn table_route_input(&self, table: u32, prefix: &IpNet) -> Option<RouteInput> {
        self.table_routes.get(&(table, *prefix)).map(|r| r.input(*prefix))
    }

    /// Table `table`'s route with the longest prefix covering `addr`.
    pub(super) fn table_longest_match(&self, table: u32, addr: std::net::IpAddr) -> Option<&Route> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| self.table_routes.get(&(table, IpNet::new(addr, len).ok()?.trunc())))
    }

    /// The entry table `table`'s route to `prefix` is published as.
    pub fn table_route_entry(&self, table: u32, prefix: &IpNet) -> Option<RouteEntry> {
        self.table_routes.get(&(table, *prefix)).map(table_entry)
    }

    /// Republishes table `key`'s route, or deletes its entry when there is
    /// none (an earlier agent's key, at the adoption sweep). Whether it maps.
    pub(super) fn publish_table_entry(&mut self, key: (u32, IpNet)) -> Result<bool, RibError> {
        match self.table_routes.get(&key).map(table_entry) {
            Some(e) => self.sink.put_table_route(key.0, &key.1, &e).map(|_| true),
            None => self.sink.delete_table_route(key.0, &key.1).map(|_| false),
        }
        .map_err(RibError::from)
    }

    /// The table routes through object `nhid`, set again (it changed kind).
    pub(super) fn rewrite_table_routes_through(&mut self, nhid: u32, now: Instant) -> Result<(), RibError> {
        let through: Vec<(u32, RouteInput)> =
            self.table_routes.iter().filter(|(_, r)| r.attrs.nhid == Some(nhid)).map(|((t, p), r)| (*t, r.input(*p))).collect();
        for (table, input) in through {
            self.set_table_route(table, input, now)?;
        }
        Ok(())
    }

    /// Whether a unicast route reaches a link with no gateway (itself, a
    /// leg, its object or a member of its object).
    pub(super) fn connects_directly(&self, input: &RouteInput) -> bool {
        let object_connects = |id: u32| match self.objects.get(&id).map(|o| &o.object.kind) {
            Some(NexthopKind::Single { via, .. }) => via.is_none(),
            Some(NexthopKind::Group { members, .. }) => members
                .iter()
                .any(|(m, _)| matches!(self.objects.get(m).map(|o| &o.object.kind), Some(NexthopKind::Single { via: None, .. }))),
            _ => false,
        };
        match input.nhid {
            Some(id) => object_connects(id),
            None if !input.multipath.is_empty() => input.multipath.iter().any(|l| l.via.is_none()),
            None => input.via.is_none(),
        }
    }
}

/// A table route's entry: no host entries, no private copies.
fn table_entry(r: &Route) -> RouteEntry {
    let mut e = RouteEntry::new(r.kind, r.nexthop, r.metrics_ref, r.id);
    e.flags = r.entry_flags();
    e.prefix_len = r.prefix_len;
    e
}
