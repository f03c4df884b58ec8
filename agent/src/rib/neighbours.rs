//! Links, the router's own addresses and neighbours: what next hops are
//! made of, and the neighbour host entries (a /32 or /128 per known
//! neighbour under a connected route, like the kernel's cached clones).

use super::{host_prefix, MapSink, NeighbourHost, NextHopKey, Rib, RibError, Route, WantedBy};
use crate::rib::types::Link;
use common::RouteKind;
use ipnet::IpNet;
use std::{collections::BTreeSet, net::IpAddr, time::Instant};

impl<S: MapSink> Rib<S> {
    /// The neighbours the operator configured.
    pub fn static_neighbours(&self) -> impl Iterator<Item = (u32, IpAddr)> + '_ {
        self.static_neighbours.iter().copied()
    }

    /// A neighbour the operator configured with its MAC.
    pub fn set_static_neighbour(&mut self, ifindex: u32, addr: IpAddr, mac: [u8; 6], now: Instant) -> Result<(), RibError> {
        self.static_neighbours.insert((ifindex, addr));
        self.neighbour_changed(ifindex, addr, Some(Some(mac)), now)
    }

    /// The operator no longer sets this neighbour: it is forgotten until
    /// the kernel reports it (a resync or its next change).
    pub fn unset_static_neighbour(&mut self, ifindex: u32, addr: IpAddr, now: Instant) -> Result<(), RibError> {
        if self.static_neighbours.remove(&(ifindex, addr)) {
            self.neighbour_changed(ifindex, addr, None, now)?;
        }
        Ok(())
    }

    pub(super) fn link_changed(&mut self, link: Link) -> Result<(), RibError> {
        let index = link.index;
        if self.links.get(&index) == Some(&link) {
            return Ok(());
        }
        tracing::debug!(index, name = %link.name, up = link.up, mtu = link.mtu, "link");
        self.links.insert(index, link);
        // Next hops on this link, and on VLAN sub-interfaces of it.
        let vlan_children: BTreeSet<u32> =
            self.links.values().filter(|l| l.vlan.is_some_and(|(p, _)| p == index)).map(|l| l.index).collect();
        self.refresh_nexthops(|k| k.ifindex == index || vlan_children.contains(&k.ifindex))
    }

    /// RTM_NEWADDR / RTM_DELADDR of `addr` on `index`. The kernel sends
    /// NEWADDR again whenever an address's attributes change (lifetimes,
    /// flags), so an address is a set of interfaces, not a count.
    pub(super) fn address_changed(&mut self, index: u32, addr: IpAddr, present: bool, now: Instant) -> Result<(), RibError> {
        let mut on = self.local_addrs.get(&addr).cloned().unwrap_or_default();
        if present {
            on.insert(index);
        } else {
            on.remove(&index);
        }
        self.set_local_address(addr, on, now)
    }

    /// `addr` is an address of the interfaces `on` (none: not ours).
    pub(super) fn set_local_address(&mut self, addr: IpAddr, on: BTreeSet<u32>, now: Instant) -> Result<(), RibError> {
        let ours = !on.is_empty();
        if ours {
            self.local_addrs.insert(addr, on);
        } else {
            self.local_addrs.remove(&addr);
        }
        self.hold_local_device(addr, now);
        if ours && self.private.contains_key(&addr) {
            // A local address has no private metrics.
            return self.reset_metrics(addr, now).map(|_| ());
        }
        Ok(self.publish(&host_prefix(addr))?)
    }

    /// A subnet broadcast address came or went with address `of` on `index`.
    pub(super) fn broadcast_changed(&mut self, index: u32, addr: IpAddr, of: IpAddr, present: bool, now: Instant) -> Result<(), RibError> {
        let mut by = self.broadcasts.get(&addr).cloned().unwrap_or_default();
        if present {
            by.insert((index, of));
        } else {
            by.remove(&(index, of));
        }
        self.set_broadcast(addr, by, now)
    }

    /// `addr` is a subnet broadcast address by the (interface, address)
    /// pairs `by` (none: no longer).
    pub(super) fn set_broadcast(&mut self, addr: IpAddr, by: BTreeSet<(u32, IpAddr)>, now: Instant) -> Result<(), RibError> {
        if by.is_empty() {
            self.broadcasts.remove(&addr);
        } else {
            self.broadcasts.insert(addr, by);
        }
        self.hold_local_device(addr, now);
        Ok(self.publish(&host_prefix(addr))?)
    }

    /// Holds the next hop of the device local host entry `addr` is on (as
    /// the kernel's local route names one), releasing the one it held. Best
    /// effort: without one (the table full) the fast path leaves the
    /// `accept_local` check that needs it to the kernel.
    fn hold_local_device(&mut self, addr: IpAddr, now: Instant) {
        let device = match self.local_addrs.get(&addr) {
            Some(on) => on.first().copied(),
            None => self.broadcast_link(addr),
        };
        let want = device.map(|ifindex| NextHopKey { ifindex, gateway: None });
        let held = self.local_devices.get(&addr).copied();
        if held.and_then(|id| self.nexthop_key(id)) == want {
            return;
        }
        let new = want.and_then(|key| self.acquire_nexthop(key, now).ok());
        if let Some(id) = held {
            self.local_devices.remove(&addr);
            self.nexthops.release(id, now);
        }
        if let Some(id) = new {
            self.local_devices.insert(addr, id);
        }
    }

    /// The interface whose subnet broadcast address `addr` is, if it is one.
    pub fn broadcast_link(&self, addr: IpAddr) -> Option<u32> {
        self.broadcasts.get(&addr).and_then(|by| by.first()).map(|&(index, _)| index)
    }

    /// `state`: `Some(Some(mac))` usable, `Some(None)` known but unusable,
    /// `None` gone.
    pub(super) fn neighbour_changed(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
        state: Option<Option<[u8; 6]>>,
        now: Instant,
    ) -> Result<(), RibError> {
        let key = (addr, ifindex);
        let before = self.neighbours.get(&key).copied();
        match state {
            Some(s) => self.neighbours.insert(key, s),
            None => self.neighbours.remove(&key),
        };
        if before != state {
            tracing::debug!(ifindex, %addr, ?state, "neighbour");
            self.refresh_nexthops(|k| k.ifindex == ifindex && k.gateway == Some(addr))?;
        }
        self.refresh_neighbour_host(addr, now)
    }

    /// The connected route (no gateway) on `ifindex` that covers `addr`, longest first.
    pub(super) fn covering_connected(&self, ifindex: u32, addr: IpAddr) -> Option<&Route> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let p = IpNet::new(addr, len).ok()?.trunc();
            self.routes.get(&p).filter(|r| r.attrs.kind == RouteKind::Unicast && r.attrs.via.is_none() && r.attrs.dev == Some(ifindex))
        })
    }

    /// Makes the host entry of neighbour `addr` match the neighbour table and
    /// the covering connected route.
    pub(super) fn refresh_neighbour_host(&mut self, addr: IpAddr, now: Instant) -> Result<(), RibError> {
        let wanted = self
            .neighbours
            .range((addr, 0)..=(addr, u32::MAX))
            .find_map(|(&(_, ifindex), _)| self.covering_connected(ifindex, addr).map(|r| (ifindex, r.prefix_of(addr), *r.attrs.metrics)));
        let current = self.neighbour_hosts.get(&addr).cloned();
        let Some((ifindex, covering, metrics)) = wanted else {
            if let Some(old) = current {
                self.neighbour_hosts.remove(&addr);
                self.republish(&host_prefix(addr), now)?;
                self.metrics.release(old.metrics_ref, now);
                self.nexthops.release(old.nexthop, now);
            }
            return Ok(());
        };
        let covering_ref = self.routes[&covering].metrics_ref;
        if let Some(cur) = &current {
            if cur.ifindex == ifindex && cur.covering == covering && cur.metrics_ref == covering_ref {
                return Ok(());
            }
        }
        let interned = self.metrics.intern(&metrics, now).map_err(|e| RibError::from(e).wanted_by(WantedBy::Neighbour(addr)))?;
        debug_assert_eq!(interned.reference, covering_ref);
        let nexthop = match self.acquire_nexthop(NextHopKey { ifindex, gateway: Some(addr) }, now) {
            Ok(id) => id,
            Err(e) => {
                self.metrics.release(interned.reference, now);
                return Err(e.wanted_by(WantedBy::Neighbour(addr)));
            }
        };
        self.neighbour_hosts.insert(addr, NeighbourHost { ifindex, covering, metrics_ref: interned.reference, nexthop });
        self.republish(&host_prefix(addr), now)?;
        if let Some(old) = current {
            self.metrics.release(old.metrics_ref, now);
            self.nexthops.release(old.nexthop, now);
        }
        Ok(())
    }

    pub(super) fn refresh_neighbour_hosts_under(&mut self, prefix: &IpNet, now: Instant) -> Result<(), RibError> {
        // Ranges of the prefix's addresses, not scans: a full table's load
        // calls this once a route.
        let (lo, hi) = (prefix.network(), prefix.broadcast());
        let addrs: BTreeSet<IpAddr> = self
            .neighbours
            .range((lo, 0)..=(hi, u32::MAX))
            .map(|((a, _), _)| *a)
            .chain(self.neighbour_hosts.range(lo..=hi).filter(|(_, h)| h.covering == *prefix).map(|(a, _)| *a))
            .collect();
        for addr in addrs {
            self.refresh_neighbour_host(addr, now)?;
        }
        Ok(())
    }
}
