//! The agent's routing table and how it becomes map entries.
//!
//! Three kinds of object may own an exact prefix in the LPM tries; `publish`
//! is the one place that decides which, in the kernel's order:
//! 1. the router's own addresses (host entries of kind Local);
//! 2. routes (configured or mirrored from the FIB);
//! 3. neighbour host entries: a /32 or /128 for each known neighbour under a
//!    connected route, with the neighbour's own next hop and the covering
//!    route's metrics (like the kernel's cached clones).
//!
//! Resources are acquired before an entry that uses them is published and
//! released only after the entry that used them is replaced or deleted.

use crate::{
    metrics_store::{MetricsStore, MetricsStoreError},
    netlink_mirror::{Event, Link},
};
use anyhow::{bail, Result};
use common::{MetricsRef, NextHop, RouteEntry, RouteKind, RouteMetrics};
use ipnet::IpNet;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

/// Where the agent's writes go: the real maps, or memory in unit tests.
pub trait MapSink {
    fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()>;
    fn delete_route(&mut self, prefix: &IpNet) -> Result<()>;
    fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()>;
    fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()>;
    fn add_port(&mut self, ifindex: u32) -> Result<()>;
}

impl MapSink for crate::map_writer::MapWriter {
    fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()> {
        crate::map_writer::MapWriter::put_route(self, prefix, entry)
    }
    fn delete_route(&mut self, prefix: &IpNet) -> Result<()> {
        crate::map_writer::MapWriter::delete_route(self, prefix)
    }
    fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()> {
        crate::map_writer::MapWriter::put_nexthop(self, id, nh)
    }
    fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
        crate::map_writer::MapWriter::put_ro_metrics(self, slot, m)
    }
    fn add_port(&mut self, ifindex: u32) -> Result<()> {
        crate::map_writer::MapWriter::add_port(self, ifindex)
    }
}

/// A route as the agent holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInput {
    pub prefix: IpNet,
    pub kind: RouteKind,
    /// Egress device (unicast routes).
    pub dev: Option<u32>,
    /// Gateway; `None` on a unicast route means a connected route.
    pub via: Option<IpAddr>,
    pub metrics: RouteMetrics,
}

#[derive(Debug, Clone)]
struct Route {
    input: RouteInput,
    metrics_ref: MetricsRef,
    nexthop: u32,
    id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NeighbourHost {
    ifindex: u32,
    covering: IpNet,
    metrics_ref: MetricsRef,
    nexthop: u32,
}

/// A next hop is the pair (device, gateway); no gateway: the "glean" next hop
/// of a connected prefix, which never forwards (no neighbour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHopKey {
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug)]
struct NextHopTable {
    capacity: u32,
    grace: Duration,
    by_key: HashMap<NextHopKey, u32>,
    slots: HashMap<u32, (NextHopKey, u32, NextHop)>,
    free: Vec<u32>,
    quarantine: VecDeque<(Instant, u32)>,
    next_unused: u32,
}

impl NextHopTable {
    /// Id 0 is never handed out: routes without a next hop point there, and
    /// it stays all-zero (not usable).
    fn new(capacity: u32, grace: Duration) -> Self {
        NextHopTable {
            capacity,
            grace,
            by_key: HashMap::new(),
            slots: HashMap::new(),
            free: Vec::new(),
            quarantine: VecDeque::new(),
            next_unused: 1,
        }
    }

    /// The id for `key`, with one more reference; `true` when newly allocated.
    fn acquire(&mut self, key: NextHopKey, now: Instant) -> Result<(u32, bool)> {
        if let Some(&id) = self.by_key.get(&key) {
            self.slots.get_mut(&id).expect("indexed").1 += 1;
            return Ok((id, false));
        }
        while let Some(&(since, id)) = self.quarantine.front() {
            if now.duration_since(since) < self.grace {
                break;
            }
            self.quarantine.pop_front();
            self.free.push(id);
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None if self.next_unused < self.capacity => {
                self.next_unused += 1;
                self.next_unused - 1
            }
            None => bail!("NEXTHOPS is full ({} next hops)", self.capacity),
        };
        self.by_key.insert(key, id);
        self.slots.insert(id, (key, 1, NextHop::default()));
        Ok((id, true))
    }

    fn release(&mut self, id: u32, now: Instant) {
        if id == 0 {
            return;
        }
        let Some(slot) = self.slots.get_mut(&id) else { return };
        slot.1 -= 1;
        if slot.1 == 0 {
            let (key, _, _) = self.slots.remove(&id).expect("present");
            self.by_key.remove(&key);
            self.quarantine.push_back((now, id));
        }
    }
}

/// What the agent has published, in counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RibSummary {
    pub routes: usize,
    pub local_addresses: usize,
    pub neighbour_hosts: usize,
    pub nexthops: usize,
    pub nexthops_resolved: usize,
    pub metrics_ro_in_use: usize,
    pub metrics_ro_quarantined: usize,
}

pub struct Rib<S: MapSink> {
    sink: S,
    metrics: MetricsStore,
    nexthops: NextHopTable,
    links: HashMap<u32, Link>,
    routes: BTreeMap<IpNet, Route>,
    /// Own addresses, with how many interfaces carry each.
    local_addrs: BTreeMap<IpAddr, u32>,
    /// Known neighbours, `Some(mac)` when usable.
    neighbours: BTreeMap<(u32, IpAddr), Option<[u8; 6]>>,
    /// Neighbours set by configuration: kernel events do not override them.
    static_neighbours: BTreeSet<(u32, IpAddr)>,
    neighbour_hosts: BTreeMap<IpAddr, NeighbourHost>,
    ports: BTreeSet<u32>,
    next_route_id: u32,
}

fn host_prefix(addr: IpAddr) -> IpNet {
    IpNet::from(addr)
}

impl<S: MapSink> Rib<S> {
    pub fn new(sink: S, metrics_ro_slots: u32, nexthop_slots: u32, grace: Duration) -> Self {
        Rib {
            sink,
            metrics: MetricsStore::new(metrics_ro_slots, grace),
            nexthops: NextHopTable::new(nexthop_slots, grace),
            links: HashMap::new(),
            routes: BTreeMap::new(),
            local_addrs: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            static_neighbours: BTreeSet::new(),
            neighbour_hosts: BTreeMap::new(),
            ports: BTreeSet::new(),
            next_route_id: 1,
        }
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }

    pub fn metrics_store(&self) -> &MetricsStore {
        &self.metrics
    }

    /// The metrics reference a route is published with.
    pub fn route_metrics_ref(&self, prefix: &IpNet) -> Option<MetricsRef> {
        self.routes.get(prefix).map(|r| r.metrics_ref)
    }

    pub fn summary(&self) -> RibSummary {
        RibSummary {
            routes: self.routes.len(),
            local_addresses: self.local_addrs.len(),
            neighbour_hosts: self.neighbour_hosts.len(),
            nexthops: self.nexthops.slots.len(),
            nexthops_resolved: self.nexthops.slots.values().filter(|(_, _, nh)| nh.is_usable()).count(),
            metrics_ro_in_use: self.metrics.slots_in_use(),
            metrics_ro_quarantined: self.metrics.quarantined(),
        }
    }

    /// Gateways of next hops that have no usable neighbour yet, with their device.
    pub fn unresolved_gateways(&self) -> Vec<(u32, IpAddr)> {
        self.nexthops
            .slots
            .values()
            .filter(|(_, _, nh)| nh.flags & NextHop::RESOLVED == 0)
            .filter_map(|(k, _, _)| Some((k.ifindex, k.gateway?)))
            .collect()
    }

    pub fn neighbour_resolved(&self, ifindex: u32, addr: IpAddr) -> bool {
        matches!(self.neighbours.get(&(ifindex, addr)), Some(Some(_)))
    }

    pub fn apply(&mut self, event: Event, now: Instant) -> Result<()> {
        match event {
            Event::Link(link) => self.link_changed(link),
            Event::LinkGone(index) => {
                if let Some(mut link) = self.links.get(&index).cloned() {
                    link.up = false;
                    self.link_changed(link)?;
                }
                self.links.remove(&index);
                Ok(())
            }
            Event::Address { index: _, addr, present } => self.address_changed(addr, present),
            Event::Neighbour { index, addr, mac } => {
                if self.static_neighbours.contains(&(index, addr)) {
                    return Ok(());
                }
                self.neighbour_changed(index, addr, Some(mac), now)
            }
            Event::NeighbourGone { index, addr } => {
                if self.static_neighbours.contains(&(index, addr)) {
                    return Ok(());
                }
                self.neighbour_changed(index, addr, None, now)
            }
        }
    }

    /// A neighbour the operator configured with its MAC.
    pub fn set_static_neighbour(&mut self, ifindex: u32, addr: IpAddr, mac: [u8; 6], now: Instant) -> Result<()> {
        self.static_neighbours.insert((ifindex, addr));
        self.neighbour_changed(ifindex, addr, Some(Some(mac)), now)
    }

    /// Adds or replaces a route. On error nothing has changed.
    pub fn set_route(&mut self, input: RouteInput, now: Instant) -> Result<()> {
        let interned = self.metrics.intern(&input.metrics, now).map_err(|e: MetricsStoreError| anyhow::anyhow!("route {}: {e}", input.prefix))?;
        if let Some(m) = interned.fill {
            if let Err(e) = self.sink.put_ro_metrics(interned.reference.slot(), &m) {
                self.metrics.release(interned.reference, now);
                return Err(e);
            }
        }
        let nexthop = match (input.kind, input.dev) {
            (RouteKind::Unicast, Some(dev)) => {
                match self.acquire_nexthop(NextHopKey { ifindex: dev, gateway: input.via }, now) {
                    Ok(id) => id,
                    Err(e) => {
                        self.metrics.release(interned.reference, now);
                        return Err(e);
                    }
                }
            }
            (RouteKind::Unicast, None) => bail!("unicast route {} has no device", input.prefix),
            _ => 0,
        };
        let prefix = input.prefix;
        let id = self.next_route_id;
        self.next_route_id += 1;
        let old = self.routes.insert(prefix, Route { input, metrics_ref: interned.reference, nexthop, id });
        self.publish(&prefix)?;
        if let Some(old) = old {
            self.release_route(&old, now);
        }
        self.refresh_neighbour_hosts_under(&prefix, now)
    }

    pub fn delete_route(&mut self, prefix: &IpNet, now: Instant) -> Result<bool> {
        let Some(old) = self.routes.remove(prefix) else { return Ok(false) };
        self.publish(prefix)?;
        self.release_route(&old, now);
        self.refresh_neighbour_hosts_under(prefix, now)?;
        Ok(true)
    }

    /// Frees quarantined slots whose grace period has passed.
    pub fn reap(&mut self, now: Instant) {
        self.metrics.reap(now);
    }

    fn release_route(&mut self, route: &Route, now: Instant) {
        self.metrics.release(route.metrics_ref, now);
        self.nexthops.release(route.nexthop, now);
    }

    /// The one place that decides what an exact prefix maps to.
    fn publish(&mut self, prefix: &IpNet) -> Result<()> {
        let host_addr = (prefix.prefix_len() == prefix.max_prefix_len()).then(|| prefix.addr());
        let entry = if host_addr.is_some_and(|a| self.local_addrs.contains_key(&a)) {
            let mut e = RouteEntry::new(RouteKind::Local, 0, MetricsRef::DEFAULT, 0);
            e.flags = RouteEntry::HOST;
            Some(e)
        } else if let Some(r) = self.routes.get(prefix) {
            let mut e = RouteEntry::new(r.input.kind, r.nexthop, r.metrics_ref, r.id);
            if host_addr.is_some() {
                e.flags = RouteEntry::HOST;
            }
            Some(e)
        } else if let Some(h) = host_addr.and_then(|a| self.neighbour_hosts.get(&a)) {
            let mut e = RouteEntry::new(RouteKind::Unicast, h.nexthop, h.metrics_ref, 0);
            e.flags = RouteEntry::HOST | RouteEntry::CLONE;
            Some(e)
        } else {
            None
        };
        match entry {
            Some(e) => self.sink.put_route(prefix, &e),
            None => self.sink.delete_route(prefix).or(Ok(())),
        }
    }

    fn acquire_nexthop(&mut self, key: NextHopKey, now: Instant) -> Result<u32> {
        let (id, new) = self.nexthops.acquire(key, now)?;
        if new {
            if let Err(e) = self.write_nexthop(id) {
                self.nexthops.release(id, now);
                return Err(e);
            }
        }
        Ok(id)
    }

    /// Recomputes next hop `id` from its link and neighbour and writes it when changed.
    fn write_nexthop(&mut self, id: u32) -> Result<()> {
        let Some(&(key, _, old)) = self.nexthops.slots.get(&id) else { return Ok(()) };
        let mut nh = NextHop::default();
        if let Some(link) = self.links.get(&key.ifindex) {
            nh.mtu = link.mtu;
            nh.smac = link.mac;
            nh.ifindex = link.index;
            let mut up = link.up;
            if let Some((parent, vid)) = link.vlan {
                nh.ifindex = parent;
                nh.vlan = vid;
                up &= self.links.get(&parent).is_some_and(|p| p.up);
            }
            if up {
                nh.flags |= NextHop::LINK_UP;
            }
        }
        if let Some(Some(mac)) = key.gateway.and_then(|g| self.neighbours.get(&(key.ifindex, g))) {
            nh.dmac = *mac;
            nh.flags |= NextHop::RESOLVED;
        }
        if nh.ifindex != 0 && self.ports.insert(nh.ifindex) {
            if let Err(e) = self.sink.add_port(nh.ifindex) {
                self.ports.remove(&nh.ifindex);
                return Err(e);
            }
        }
        if nh != old || old == NextHop::default() {
            self.sink.put_nexthop(id, &nh)?;
            self.nexthops.slots.get_mut(&id).expect("present").2 = nh;
        }
        Ok(())
    }

    fn refresh_nexthops(&mut self, wanted: impl Fn(&NextHopKey) -> bool) -> Result<()> {
        let ids: Vec<u32> = self.nexthops.slots.iter().filter(|(_, (k, _, _))| wanted(k)).map(|(id, _)| *id).collect();
        for id in ids {
            self.write_nexthop(id)?;
        }
        Ok(())
    }

    fn link_changed(&mut self, link: Link) -> Result<()> {
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

    fn address_changed(&mut self, addr: IpAddr, present: bool) -> Result<()> {
        let count = self.local_addrs.entry(addr).or_insert(0);
        if present {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.local_addrs.remove(&addr);
            }
        }
        self.publish(&host_prefix(addr))
    }

    /// `state`: `Some(Some(mac))` usable, `Some(None)` known but unusable,
    /// `None` gone.
    fn neighbour_changed(&mut self, ifindex: u32, addr: IpAddr, state: Option<Option<[u8; 6]>>, now: Instant) -> Result<()> {
        let key = (ifindex, addr);
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
    fn covering_connected(&self, ifindex: u32, addr: IpAddr) -> Option<&Route> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let p = IpNet::new(addr, len).ok()?.trunc();
            self.routes.get(&p).filter(|r| {
                r.input.kind == RouteKind::Unicast && r.input.via.is_none() && r.input.dev == Some(ifindex)
            })
        })
    }

    /// Makes the host entry of neighbour `addr` match the neighbour table and
    /// the covering connected route.
    fn refresh_neighbour_host(&mut self, addr: IpAddr, now: Instant) -> Result<()> {
        let wanted = self
            .neighbours
            .keys()
            .filter(|(_, a)| *a == addr)
            .find_map(|&(ifindex, _)| {
                self.covering_connected(ifindex, addr).map(|r| (ifindex, r.input.prefix, r.input.metrics))
            });
        let current = self.neighbour_hosts.get(&addr).cloned();
        let Some((ifindex, covering, metrics)) = wanted else {
            if let Some(old) = current {
                self.neighbour_hosts.remove(&addr);
                self.publish(&host_prefix(addr))?;
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
        let interned = self.metrics.intern(&metrics, now).map_err(|e| anyhow::anyhow!("neighbour {addr}: {e}"))?;
        debug_assert_eq!(interned.reference, covering_ref);
        let nexthop = match self.acquire_nexthop(NextHopKey { ifindex, gateway: Some(addr) }, now) {
            Ok(id) => id,
            Err(e) => {
                self.metrics.release(interned.reference, now);
                return Err(e);
            }
        };
        self.neighbour_hosts.insert(addr, NeighbourHost { ifindex, covering, metrics_ref: interned.reference, nexthop });
        self.publish(&host_prefix(addr))?;
        if let Some(old) = current {
            self.metrics.release(old.metrics_ref, now);
            self.nexthops.release(old.nexthop, now);
        }
        Ok(())
    }

    fn refresh_neighbour_hosts_under(&mut self, prefix: &IpNet, now: Instant) -> Result<()> {
        let addrs: BTreeSet<IpAddr> = self
            .neighbours
            .keys()
            .map(|(_, a)| *a)
            .filter(|a| prefix.contains(a))
            .chain(self.neighbour_hosts.iter().filter(|(_, h)| h.covering == *prefix).map(|(a, _)| *a))
            .collect();
        for addr in addrs {
            self.refresh_neighbour_host(addr, now)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub mod memory {
    //! An in-memory map set for unit tests.
    use super::*;

    #[derive(Default, Debug)]
    pub struct MemoryMaps {
        pub routes: BTreeMap<IpNet, RouteEntry>,
        pub nexthops: BTreeMap<u32, NextHop>,
        pub metrics_ro: BTreeMap<u32, RouteMetrics>,
        pub ports: BTreeSet<u32>,
    }

    impl MapSink for MemoryMaps {
        fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()> {
            self.routes.insert(*prefix, *entry);
            Ok(())
        }
        fn delete_route(&mut self, prefix: &IpNet) -> Result<()> {
            self.routes.remove(prefix).map(|_| ()).ok_or_else(|| anyhow::anyhow!("no such route"))
        }
        fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()> {
            self.nexthops.insert(id, *nh);
            Ok(())
        }
        fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
            self.metrics_ro.insert(slot, *m);
            Ok(())
        }
        fn add_port(&mut self, ifindex: u32) -> Result<()> {
            self.ports.insert(ifindex);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{memory::MemoryMaps, *};
    use common::Rtax;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn rib() -> (Rib<MemoryMaps>, Instant) {
        let now = Instant::now();
        let mut rib = Rib::new(MemoryMaps::default(), 64, 64, Duration::from_secs(1));
        for (index, mac) in [(2, MAC_A), (3, MAC_B)] {
            let link = Link { index, name: format!("if{index}"), mac, mtu: 1500, up: true, vlan: None };
            rib.apply(Event::Link(link), now).unwrap();
        }
        (rib, now)
    }

    fn route(prefix: &str, dev: u32, via: Option<&str>, mtu: u32) -> RouteInput {
        let mut metrics = RouteMetrics::DEFAULT;
        metrics.set(Rtax::Mtu, mtu);
        RouteInput { prefix: prefix.parse().unwrap(), kind: RouteKind::Unicast, dev: Some(dev), via: via.map(|v| v.parse().unwrap()), metrics }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
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
        let vlan = Link { index: 7, name: "if3.100".into(), mac: MAC_B, mtu: 1496, up: true, vlan: Some((3, 100)) };
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
        let mut rib = Rib::new(MemoryMaps::default(), 2, 64, Duration::from_secs(1));
        rib.apply(Event::Link(Link { index: 2, name: "a".into(), mac: MAC_A, mtu: 1500, up: true, vlan: None }), now).unwrap();
        rib.set_route(route("10.1.0.0/24", 2, None, 1400), now).unwrap();
        let err = rib.set_route(route("10.3.0.0/24", 2, None, 1300), now).unwrap_err();
        assert!(err.to_string().contains("METRICS_RO is full"), "{err}");
        assert!(!rib.sink().routes.contains_key(&net("10.3.0.0/24")));
        assert_eq!(rib.summary().routes, 1);
    }
}
