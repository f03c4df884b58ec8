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
//! On top of that, a destination with a private metrics copy (the COW engine,
//! [`crate::rib::cow`]) has its host entry published with a tag-clear reference to
//! its `METRICS_RW` slot, cloned from its covering route when it has no host
//! entry of its own.
//!
//! Resources are acquired before an entry that uses them is published and
//! released (into quarantine) only after the entry that used them is
//! replaced or deleted.

pub mod cow;
#[cfg(test)]
mod cow_model_tests;
pub mod ecmp;
mod lookup;
pub mod metrics_store;

use crate::{
    dataplane::slots::SlotAllocator,
    fib::netlink_mirror::{Event, Link},
    rib::cow::{CowError, CowStats, Override, PrivateCopy, Source},
    rib::ecmp::{GroupTable, Leg},
    rib::metrics_store::{MetricsStore, MetricsStoreError},
};
use anyhow::{bail, Result};
use common::{MetricsRef, NextHop, NextHopGroup, PrivateMeta, RouteEntry, RouteKind, RouteMetrics, Rtax};
use ipnet::IpNet;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

/// Where the agent's writes go: the real maps, or memory in unit tests.
pub trait MapSink {
    fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()>;
    fn delete_route(&mut self, prefix: &IpNet) -> Result<()>;
    fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()>;
    fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<()>;
    fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()>;
    fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()>;
    fn add_port(&mut self, ifindex: u32) -> Result<()>;
    fn remove_port(&mut self, ifindex: u32) -> Result<()>;
    fn put_private_meta(&mut self, dest: IpAddr, meta: &PrivateMeta) -> Result<()>;
    fn delete_private_meta(&mut self, dest: IpAddr) -> Result<()>;
}

impl MapSink for crate::dataplane::map_writer::MapWriter {
    fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()> {
        crate::dataplane::map_writer::MapWriter::put_route(self, prefix, entry)
    }
    fn delete_route(&mut self, prefix: &IpNet) -> Result<()> {
        crate::dataplane::map_writer::MapWriter::delete_route(self, prefix)
    }
    fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()> {
        crate::dataplane::map_writer::MapWriter::put_nexthop(self, id, nh)
    }
    fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<()> {
        crate::dataplane::map_writer::MapWriter::put_group(self, id, group)
    }
    fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
        crate::dataplane::map_writer::MapWriter::put_ro_metrics(self, slot, m)
    }
    fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
        crate::dataplane::map_writer::MapWriter::put_rw_metrics(self, slot, m)
    }
    fn add_port(&mut self, ifindex: u32) -> Result<()> {
        crate::dataplane::map_writer::MapWriter::add_port(self, ifindex)
    }
    fn remove_port(&mut self, ifindex: u32) -> Result<()> {
        crate::dataplane::map_writer::MapWriter::remove_port(self, ifindex)
    }
    fn put_private_meta(&mut self, dest: IpAddr, meta: &PrivateMeta) -> Result<()> {
        crate::dataplane::map_writer::MapWriter::put_private_meta(self, dest, meta)
    }
    fn delete_private_meta(&mut self, dest: IpAddr) -> Result<()> {
        crate::dataplane::map_writer::MapWriter::delete_private_meta(self, dest)
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
    /// The legs of a multipath route (then `dev` and `via` are unused).
    pub multipath: Vec<Leg>,
    pub metrics: RouteMetrics,
}

impl RouteInput {
    /// A route with one next hop (or none, for the types that drop).
    pub fn new(prefix: IpNet, kind: RouteKind, dev: Option<u32>, via: Option<IpAddr>, metrics: RouteMetrics) -> RouteInput {
        RouteInput { prefix, kind, dev, via, multipath: Vec::new(), metrics }
    }
}

#[derive(Debug, Clone)]
struct Route {
    /// Shared with the FIB mirror's record of the route: one copy each.
    input: Arc<RouteInput>,
    metrics_ref: MetricsRef,
    /// A `NEXTHOPS` id, or an `NH_GROUPS` id for a multipath route.
    nexthop: u32,
    id: u32,
}

impl Route {
    /// The flags its entries carry whatever the prefix.
    fn entry_flags(&self) -> u8 {
        if self.input.multipath.is_empty() {
            0
        } else {
            RouteEntry::MULTIPATH
        }
    }
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
    /// Id 0 is never handed out: routes without a next hop point there, and
    /// it stays all-zero (not usable).
    ids: SlotAllocator,
    by_key: HashMap<NextHopKey, u32>,
    /// key, refcount, what was last written.
    entries: HashMap<u32, (NextHopKey, u32, NextHop)>,
}

impl NextHopTable {
    fn new(capacity: u32, grace: Duration) -> Self {
        NextHopTable { ids: SlotAllocator::new(1, capacity, grace), by_key: HashMap::new(), entries: HashMap::new() }
    }

    /// The id for `key`, with one more reference; `true` when newly allocated.
    fn acquire(&mut self, key: NextHopKey, now: Instant) -> Result<(u32, bool)> {
        if let Some(&id) = self.by_key.get(&key) {
            self.entries.get_mut(&id).expect("indexed").1 += 1;
            return Ok((id, false));
        }
        self.ids.reap(now);
        let Some(id) = self.ids.alloc() else { bail!("NEXTHOPS is full ({} next hops)", self.ids.capacity()) };
        self.by_key.insert(key, id);
        self.entries.insert(id, (key, 1, NextHop::default()));
        Ok((id, true))
    }

    fn release(&mut self, id: u32, now: Instant) {
        if id == 0 {
            return;
        }
        let Some(entry) = self.entries.get_mut(&id) else { return };
        entry.1 -= 1;
        if entry.1 == 0 {
            let (key, _, _) = self.entries.remove(&id).expect("present");
            self.by_key.remove(&key);
            self.ids.release(id, now);
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
    /// Next hops with a gateway whose neighbour is not known yet.
    pub gateways_unresolved: usize,
    pub nexthop_groups: usize,
    pub metrics_ro_in_use: usize,
    /// References to them (routes, neighbour hosts), all together.
    pub metrics_ro_references: u64,
    pub metrics_ro_quarantined: usize,
    pub metrics_rw_in_use: usize,
    pub metrics_rw_quarantined: usize,
    pub metrics_rw_capacity: u32,
    pub cow: CowStats,
}

/// What an earlier agent left in the pinned maps: the keys it published and
/// every slot its entries refer to. The new agent allocates around them,
/// publishes its own state over them, then sweeps (see [`Rib::adopt`]).
#[derive(Debug, Default, Clone)]
pub struct Adopted {
    pub prefixes: Vec<IpNet>,
    pub metrics_ro: BTreeSet<u32>,
    pub metrics_rw: BTreeSet<u32>,
    pub nexthops: BTreeSet<u32>,
    pub groups: BTreeSet<u32>,
    /// Private copies: the destination, the values its slot holds, and
    /// their record (which are overridden, by whom, until when).
    pub private: Vec<(IpAddr, RouteMetrics, PrivateMeta)>,
}

/// What the sweep after adoption did, in counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AdoptionReport {
    /// Earlier keys this agent published too (overwritten in place).
    pub routes_kept: usize,
    /// Earlier keys this agent has nothing for (deleted).
    pub routes_removed: usize,
    /// Slots of the earlier agent freed (after the grace period).
    pub slots_released: usize,
    /// Private copies taken over (values, sources and expiries kept).
    pub private_kept: usize,
}

/// What a resync after a netlink overrun changed, in counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ResyncReport {
    pub links: usize,
    pub addresses: usize,
    pub neighbours: usize,
    pub routes_added: usize,
    pub routes_changed: usize,
    pub routes_removed: usize,
}

/// What a destination's host entry is derived from.
#[derive(Debug, Clone, Copy)]
struct Base {
    kind: RouteKind,
    nexthop: u32,
    /// The shared reference the entry carries without a private copy.
    metrics_ref: MetricsRef,
    /// The shared metrics a private copy is derived from.
    shared: RouteMetrics,
    /// The route this entry comes from.
    covering: IpNet,
    id: u32,
    flags: u8,
}

/// How `metrics show` describes one destination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DestinationMetrics {
    pub destination: IpAddr,
    /// `ro:N` or `rw:N`.
    pub reference: String,
    pub values: BTreeMap<&'static str, u32>,
    pub covering: Option<String>,
    /// `1 << RTAX_x` of the overridden metrics.
    pub override_mask: u32,
    pub overrides: Vec<OverrideInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OverrideInfo {
    pub metric: &'static str,
    pub value: u32,
    pub source: Source,
    /// Seconds left; `None`: until reset.
    pub expires_in: Option<u64>,
}

pub struct Rib<S: MapSink> {
    sink: S,
    metrics: MetricsStore,
    nexthops: NextHopTable,
    groups: GroupTable,
    links: HashMap<u32, Link>,
    routes: BTreeMap<IpNet, Route>,
    /// Own addresses, with how many interfaces carry each.
    local_addrs: BTreeMap<IpAddr, u32>,
    /// Known neighbours, `Some(mac)` when usable.
    neighbours: BTreeMap<(u32, IpAddr), Option<[u8; 6]>>,
    /// Neighbours set by configuration: kernel events do not override them.
    static_neighbours: BTreeSet<(u32, IpAddr)>,
    neighbour_hosts: BTreeMap<IpAddr, NeighbourHost>,
    /// The `METRICS_RW` pool.
    rw: SlotAllocator,
    /// Destinations with private metrics.
    private: BTreeMap<IpAddr, PrivateCopy>,
    cow_stats: CowStats,
    ports: BTreeSet<u32>,
    next_route_id: u32,
    /// Keys an earlier agent published, until the sweep.
    adopted: Vec<IpNet>,
    /// Private copies an earlier agent had, until the sweep.
    adopted_private: Vec<(IpAddr, RouteMetrics, PrivateMeta)>,
}

fn host_prefix(addr: IpAddr) -> IpNet {
    IpNet::from(addr)
}

fn is_host(prefix: &IpNet) -> bool {
    prefix.prefix_len() == prefix.max_prefix_len()
}

fn named_values(m: &RouteMetrics) -> BTreeMap<&'static str, u32> {
    Rtax::ALL.iter().filter(|x| m.get(**x) != 0).map(|x| (x.name(), m.get(*x))).collect()
}

/// Sizes of the agent's tables.
#[derive(Debug, Clone, Copy)]
pub struct Capacities {
    pub metrics_ro: u32,
    pub metrics_rw: u32,
    pub nexthops: u32,
    pub nexthop_groups: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            metrics_ro: common::capacity::METRICS_RO,
            metrics_rw: common::capacity::METRICS_RW,
            nexthops: common::capacity::NEXTHOPS,
            nexthop_groups: common::capacity::NH_GROUPS,
        }
    }
}

impl<S: MapSink> Rib<S> {
    pub fn new(sink: S, capacities: Capacities, grace: Duration) -> Self {
        Rib {
            sink,
            metrics: MetricsStore::new(capacities.metrics_ro, grace),
            nexthops: NextHopTable::new(capacities.nexthops, grace),
            groups: GroupTable::new(capacities.nexthop_groups, grace),
            links: HashMap::new(),
            routes: BTreeMap::new(),
            local_addrs: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            static_neighbours: BTreeSet::new(),
            neighbour_hosts: BTreeMap::new(),
            rw: SlotAllocator::new(0, capacities.metrics_rw, grace),
            private: BTreeMap::new(),
            cow_stats: CowStats::default(),
            ports: BTreeSet::new(),
            next_route_id: 1,
            adopted: Vec::new(),
            adopted_private: Vec::new(),
        }
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn into_sink(self) -> S {
        self.sink
    }

    pub fn metrics_store(&self) -> &MetricsStore {
        &self.metrics
    }

    pub fn rw_pool(&self) -> &SlotAllocator {
        &self.rw
    }

    /// The metrics reference a route holds (its shared set).
    pub fn route_metrics_ref(&self, prefix: &IpNet) -> Option<MetricsRef> {
        self.routes.get(prefix).map(|r| r.metrics_ref)
    }

    pub fn private_copy(&self, addr: &IpAddr) -> Option<&PrivateCopy> {
        self.private.get(addr)
    }

    pub fn private_copies(&self) -> impl Iterator<Item = (&IpAddr, &PrivateCopy)> {
        self.private.iter()
    }

    pub fn summary(&self) -> RibSummary {
        RibSummary {
            routes: self.routes.len(),
            local_addresses: self.local_addrs.len(),
            neighbour_hosts: self.neighbour_hosts.len(),
            nexthops: self.nexthops.entries.len(),
            nexthops_resolved: self.nexthops.entries.values().filter(|(_, _, nh)| nh.is_usable()).count(),
            gateways_unresolved: self.unresolved_gateways().len(),
            nexthop_groups: self.groups.len(),
            metrics_ro_in_use: self.metrics.slots_in_use(),
            metrics_ro_references: self.metrics.total_refs(),
            metrics_ro_quarantined: self.metrics.quarantined(),
            metrics_rw_in_use: self.rw.in_use(),
            metrics_rw_quarantined: self.rw.quarantined(),
            metrics_rw_capacity: self.rw.capacity(),
            cow: self.cow_stats,
        }
    }

    /// Gateways of next hops that have no usable neighbour yet, with their device.
    pub fn unresolved_gateways(&self) -> Vec<(u32, IpAddr)> {
        self.nexthops
            .entries
            .values()
            .filter(|(_, _, nh)| nh.flags & NextHop::RESOLVED == 0)
            .filter_map(|(k, _, _)| Some((k.ifindex, k.gateway?)))
            .collect()
    }

    /// Interface names to indexes, as the kernel has them now.
    pub fn link_indexes(&self) -> HashMap<String, u32> {
        self.links.values().map(|l| (l.name.clone(), l.index)).collect()
    }

    /// What next hop `id` is (device and gateway), while it is in use.
    pub fn nexthop_key(&self, id: u32) -> Option<NextHopKey> {
        self.nexthops.entries.get(&id).map(|(k, _, _)| *k)
    }

    /// The next hop through neighbour `addr` on `ifindex`, as written to the
    /// fast path, once it is usable.
    pub fn usable_nexthop(&self, ifindex: u32, addr: IpAddr) -> Option<NextHop> {
        let id = self.nexthops.by_key.get(&NextHopKey { ifindex, gateway: Some(addr) })?;
        self.nexthops.entries.get(id).map(|(_, _, nh)| *nh).filter(|nh| nh.is_usable())
    }

    pub fn link(&self, ifindex: u32) -> Option<&Link> {
        self.links.get(&ifindex)
    }

    pub fn link_name(&self, ifindex: u32) -> Option<&str> {
        self.links.get(&ifindex).map(|l| l.name.as_str())
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
                // The kernel drops a vanished device from the DEVMAP itself;
                // our record of the ports follows (and says so if it did not).
                if self.ports.remove(&index) {
                    self.sink.remove_port(index)?;
                }
                Ok(())
            }
            Event::Address { index: _, addr, present } => self.address_changed(addr, present, now),
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
            // Routes go through the FIB mirror's choice first, and an
            // overrun is the daemon's to resync (see `resync`).
            Event::Route { .. } | Event::Overrun => Ok(()),
        }
    }

    /// Takes over an earlier agent's maps: its slots stay untouched (every
    /// entry it published keeps pointing at valid contents) while this agent
    /// publishes its own state, each entry replaced in one update. Call
    /// before programming; then [`Rib::sweep_adopted`].
    pub fn adopt(&mut self, old: Adopted) {
        old.metrics_ro.iter().for_each(|s| self.metrics.reserve(*s));
        old.metrics_rw.iter().for_each(|s| self.rw.reserve(*s));
        old.nexthops.iter().filter(|id| **id != 0).for_each(|id| self.nexthops.ids.reserve(*id));
        old.groups.iter().filter(|id| **id != 0).for_each(|id| self.groups.ids_mut().reserve(*id));
        self.adopted = old.prefixes;
        self.adopted_private = old.private;
    }

    /// After the first full programming: every key the earlier agent
    /// published is published again from this agent's state (so none still
    /// refers to an earlier slot), or deleted; then its slots are released
    /// into quarantine.
    pub fn sweep_adopted(&mut self, now: Instant) -> Result<AdoptionReport> {
        let mut report = AdoptionReport::default();
        // The earlier private copies first, so that their host entries are
        // published with them below.
        let wall = std::time::SystemTime::now();
        for (dest, values, meta) in std::mem::take(&mut self.adopted_private) {
            let mut kept = false;
            for m in Rtax::ALL {
                if meta.overridden & m.lock_bit() == 0 {
                    continue;
                }
                let source = if meta.learned & m.lock_bit() != 0 { Source::Learned } else { Source::Operator };
                let expires = match meta.expiry(m) {
                    0 => None,
                    at => match std::time::UNIX_EPOCH.checked_add(Duration::from_secs(at)).and_then(|t| t.duration_since(wall).ok()) {
                        Some(left) => Some(now + left),
                        None => continue, // expired while no agent ran
                    },
                };
                match self.cow_metrics(dest, m, values.get(m), source, expires, now) {
                    Ok(()) => kept = true,
                    Err(e) => tracing::info!(%dest, metric = m.name(), error = %e, "an earlier private override not kept"),
                }
            }
            if !kept {
                let _ = self.sink.delete_private_meta(dest);
            }
            report.private_kept += usize::from(kept);
        }
        for prefix in std::mem::take(&mut self.adopted) {
            if self.publish_entry(&prefix)? {
                report.routes_kept += 1;
            } else {
                report.routes_removed += 1;
            }
        }
        report.slots_released = self.metrics.release_reserved(now)
            + self.rw.release_reserved(now)
            + self.nexthops.ids.release_reserved(now)
            + self.groups.ids_mut().release_reserved(now);
        Ok(report)
    }

    /// Makes links, addresses and neighbours equal to `dump` (a fresh dump
    /// after an overrun): what changed is applied, what is gone is removed.
    /// Routes are the FIB mirror's (see `fib_mirror::KernelFib::resync`).
    pub fn resync(&mut self, dump: Vec<Event>, now: Instant) -> Result<ResyncReport> {
        let mut report = ResyncReport::default();
        let (mut links, mut addrs, mut neighbours) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for ev in dump {
            match ev {
                Event::Link(l) => {
                    links.insert(l.index, l);
                }
                Event::Address { addr, present: true, .. } => *addrs.entry(addr).or_insert(0u32) += 1,
                Event::Neighbour { index, addr, mac } => {
                    neighbours.insert((index, addr), mac);
                }
                _ => {}
            }
        }
        let gone: Vec<u32> = self.links.keys().filter(|i| !links.contains_key(i)).copied().collect();
        for index in gone {
            self.apply(Event::LinkGone(index), now)?;
            report.links += 1;
        }
        for (index, link) in links {
            if self.links.get(&index) != Some(&link) {
                self.link_changed(link)?;
                report.links += 1;
            }
        }
        let all: BTreeSet<IpAddr> = self.local_addrs.keys().chain(addrs.keys()).copied().collect();
        for addr in all {
            let count = addrs.get(&addr).copied().unwrap_or(0);
            if self.local_addrs.get(&addr).copied().unwrap_or(0) != count {
                self.set_local_address(addr, count, now)?;
                report.addresses += 1;
            }
        }
        let known: Vec<(u32, IpAddr)> = self.neighbours.keys().copied().collect();
        for key in known {
            if !neighbours.contains_key(&key) && !self.static_neighbours.contains(&key) {
                self.neighbour_changed(key.0, key.1, None, now)?;
                report.neighbours += 1;
            }
        }
        for ((index, addr), mac) in neighbours {
            if self.static_neighbours.contains(&(index, addr)) {
                continue;
            }
            if self.neighbours.get(&(index, addr)) != Some(&mac) {
                self.neighbour_changed(index, addr, Some(mac), now)?;
                report.neighbours += 1;
            }
        }
        Ok(report)
    }

    /// A neighbour the operator configured with its MAC.
    pub fn set_static_neighbour(&mut self, ifindex: u32, addr: IpAddr, mac: [u8; 6], now: Instant) -> Result<()> {
        self.static_neighbours.insert((ifindex, addr));
        self.neighbour_changed(ifindex, addr, Some(Some(mac)), now)
    }

    /// The operator no longer sets this neighbour: it is forgotten until
    /// the kernel reports it (a resync or its next change).
    pub fn unset_static_neighbour(&mut self, ifindex: u32, addr: IpAddr, now: Instant) -> Result<()> {
        if self.static_neighbours.remove(&(ifindex, addr)) {
            self.neighbour_changed(ifindex, addr, None, now)?;
        }
        Ok(())
    }

    /// Adds or replaces a route. On error nothing has changed.
    pub fn set_route(&mut self, input: impl Into<Arc<RouteInput>>, now: Instant) -> Result<()> {
        let input: Arc<RouteInput> = input.into();
        let interned =
            self.metrics.intern(&input.metrics, now).map_err(|e: MetricsStoreError| anyhow::anyhow!("route {}: {e}", input.prefix))?;
        if let Some(m) = interned.fill {
            if let Err(e) = self.sink.put_ro_metrics(interned.reference.slot(), &m) {
                self.metrics.release(interned.reference, now);
                return Err(e);
            }
        }
        let nexthop = match (input.kind, input.dev) {
            (RouteKind::Unicast, _) if !input.multipath.is_empty() => match self.acquire_group(&input.multipath, now) {
                Ok(id) => id,
                Err(e) => {
                    self.metrics.release(interned.reference, now);
                    return Err(e.context(format!("route {}", input.prefix)));
                }
            },
            (RouteKind::Unicast, Some(dev)) => match self.acquire_nexthop(NextHopKey { ifindex: dev, gateway: input.via }, now) {
                Ok(id) => id,
                Err(e) => {
                    self.metrics.release(interned.reference, now);
                    return Err(e);
                }
            },
            (RouteKind::Unicast, None) => {
                self.metrics.release(interned.reference, now);
                bail!("unicast route {} has no device", input.prefix)
            }
            _ => 0,
        };
        let prefix = input.prefix;
        let id = self.next_route_id;
        self.next_route_id += 1;
        let old = self.routes.insert(prefix, Route { input, metrics_ref: interned.reference, nexthop, id });
        self.republish(&prefix, now)?;
        self.refresh_dependents(&prefix, now)?;
        if let Some(old) = old {
            self.release_route(&old, now);
        }
        Ok(())
    }

    pub fn delete_route(&mut self, prefix: &IpNet, now: Instant) -> Result<bool> {
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

    fn release_route(&mut self, route: &Route, now: Instant) {
        self.metrics.release(route.metrics_ref, now);
        if route.input.multipath.is_empty() {
            self.nexthops.release(route.nexthop, now);
        } else {
            self.release_group(route.nexthop, now);
        }
    }

    /// The route with the longest prefix covering `addr`.
    fn longest_match(&self, addr: IpAddr) -> Option<&Route> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| self.routes.get(&IpNet::new(addr, len).ok()?.trunc()))
    }

    /// What `addr`'s host entry would be without a private copy. `clone`:
    /// also when it has no host entry of its own (then it is cloned from the
    /// covering route).
    fn base(&self, addr: IpAddr, clone: bool) -> Option<Base> {
        let host = host_prefix(addr);
        if self.local_addrs.contains_key(&addr) {
            return Some(Base {
                kind: RouteKind::Local,
                nexthop: 0,
                metrics_ref: MetricsRef::DEFAULT,
                shared: RouteMetrics::DEFAULT,
                covering: host,
                id: 0,
                flags: RouteEntry::HOST,
            });
        }
        let from_route = |r: &Route, flags: u8| Base {
            kind: r.input.kind,
            nexthop: r.nexthop,
            metrics_ref: r.metrics_ref,
            shared: r.input.metrics,
            covering: r.input.prefix,
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
                shared: covering.input.metrics,
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

    fn publish(&mut self, prefix: &IpNet) -> Result<()> {
        self.publish_entry(prefix).map(|_| ())
    }

    /// The one place that decides what an exact prefix maps to. Returns
    /// whether it maps to an entry (else it was deleted).
    fn publish_entry(&mut self, prefix: &IpNet) -> Result<bool> {
        let entry = if is_host(prefix) {
            let addr = prefix.addr();
            let private = self.private.get(&addr).map(|p| p.slot);
            self.base(addr, private.is_some()).map(|b| {
                let mut e = RouteEntry::new(b.kind, b.nexthop, b.metrics_ref, b.id);
                e.flags = b.flags;
                if let (RouteKind::Unicast, Some(slot)) = (b.kind, private) {
                    e.metrics = MetricsRef::private(slot);
                }
                e
            })
        } else {
            self.routes.get(prefix).map(|r| {
                let mut e = RouteEntry::new(r.input.kind, r.nexthop, r.metrics_ref, r.id);
                e.flags = r.entry_flags();
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
    fn republish(&mut self, prefix: &IpNet, now: Instant) -> Result<()> {
        if is_host(prefix) && self.private.contains_key(&prefix.addr()) {
            return self.rederive(prefix.addr(), now);
        }
        self.publish(prefix)
    }

    /// Routes at `prefix` changed: everything derived from routes inside it
    /// (neighbour host entries, private copies) follows.
    fn refresh_dependents(&mut self, prefix: &IpNet, now: Instant) -> Result<()> {
        self.refresh_neighbour_hosts_under(prefix, now)?;
        let addrs: Vec<IpAddr> =
            self.private.iter().filter(|(a, p)| prefix.contains(*a) || p.covering == *prefix).map(|(a, _)| *a).collect();
        for addr in addrs {
            self.rederive(addr, now)?;
        }
        Ok(())
    }

    // ---- copy-on-write -------------------------------------------------

    /// `cow_metrics`: sets metric `metric` of destination `dest` to `value`
    /// in its private copy, creating the copy (and its host entry) first.
    /// On error nothing has changed and `dest` keeps its shared metrics.
    pub fn cow_metrics(
        &mut self,
        dest: IpAddr,
        metric: Rtax,
        value: u32,
        source: Source,
        expires: Option<Instant>,
        now: Instant,
    ) -> Result<(), CowError> {
        self.write_override(dest, metric, Override { value, source, expires }, now)?;
        self.record_private(dest, now);
        Ok(())
    }

    /// Keeps `PRIVATE_META` in step with `dest`'s copy (or its absence).
    /// A failed write costs only the copy's survival of a restart: logged.
    fn record_private(&mut self, dest: IpAddr, now: Instant) {
        let result = match self.private.get(&dest) {
            Some(p) => {
                let wall = std::time::SystemTime::now();
                let mut meta = PrivateMeta::EMPTY;
                for (m, o) in &p.overrides {
                    meta.overridden |= m.lock_bit();
                    if o.source == Source::Learned {
                        meta.learned |= m.lock_bit();
                    }
                    if let Some(t) = o.expires {
                        let at = wall.checked_add(t.saturating_duration_since(now)).unwrap_or(wall);
                        meta.set_expiry(*m, at.duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs().max(1)));
                    }
                }
                self.sink.put_private_meta(dest, &meta)
            }
            None => self.sink.delete_private_meta(dest),
        };
        if let Err(e) = result {
            tracing::warn!(%dest, error = %format!("{e:#}"), "private copy not recorded for restarts");
        }
    }

    /// The copy-on-write itself (see `cow_metrics`).
    fn write_override(&mut self, dest: IpAddr, metric: Rtax, ov: Override, now: Instant) -> Result<(), CowError> {
        let Override { value, source, expires } = ov;
        let base = self.base(dest, true).ok_or(CowError::NoRoute(dest))?;
        match base.kind {
            RouteKind::Unicast => {}
            RouteKind::Local => return Err(CowError::Local(dest)),
            other => return Err(CowError::NotUnicast { dest, kind: other.name() }),
        }
        if source == Source::Learned && base.shared.is_locked(metric) {
            return Err(CowError::Locked { dest, metric: metric.name() });
        }
        let map_err = |e: anyhow::Error| CowError::Map(format!("{e:#}"));
        let ov = Override { value, source, expires };
        if let Some(p) = self.private.get(&dest) {
            let mut overrides = p.overrides.clone();
            overrides.insert(metric, ov);
            let values = cow::derive(&base.shared, &overrides);
            let (slot, old_values) = (p.slot, p.values);
            if cow::words_changed(&old_values, &values) <= 1 {
                // One word: readers see the old value or the new one.
                self.sink.put_rw_metrics(slot, &values).map_err(map_err)?;
                let p = self.private.get_mut(&dest).expect("present");
                p.overrides = overrides;
                p.values = values;
                self.cow_stats.writes_in_place += 1;
                return Ok(());
            }
            return self.replace_copy(dest, overrides, values, base.covering, now);
        }
        self.rw.reap(now);
        let Some(slot) = self.rw.alloc() else {
            self.cow_stats.failures += 1;
            return Err(CowError::PoolExhausted { dest, capacity: self.rw.capacity() });
        };
        let overrides = BTreeMap::from([(metric, ov)]);
        let values = cow::derive(&base.shared, &overrides);
        // Fill the slot completely before anything refers to it ...
        if let Err(e) = self.sink.put_rw_metrics(slot, &values) {
            self.rw.release(slot, now);
            return Err(map_err(e));
        }
        self.private.insert(dest, PrivateCopy { slot, overrides, values, covering: base.covering });
        // ... then publish it with one entry update.
        if let Err(e) = self.publish(&host_prefix(dest)) {
            self.private.remove(&dest);
            self.rw.release(slot, now);
            return Err(map_err(e));
        }
        self.cow_stats.cows += 1;
        Ok(())
    }

    /// Moves `dest`'s copy to a fresh slot holding `values`: fill, publish,
    /// then quarantine the old slot. Without a free slot, the copy is
    /// destroyed instead (the destination falls back to shared metrics).
    fn replace_copy(
        &mut self,
        dest: IpAddr,
        overrides: BTreeMap<Rtax, Override>,
        values: RouteMetrics,
        covering: IpNet,
        now: Instant,
    ) -> Result<(), CowError> {
        let map_err = |e: anyhow::Error| CowError::Map(format!("{e:#}"));
        self.rw.reap(now);
        let Some(slot) = self.rw.alloc() else {
            self.cow_stats.failures += 1;
            return Err(CowError::PoolExhausted { dest, capacity: self.rw.capacity() });
        };
        if let Err(e) = self.sink.put_rw_metrics(slot, &values) {
            self.rw.release(slot, now);
            return Err(map_err(e));
        }
        let old = self.private.insert(dest, PrivateCopy { slot, overrides, values, covering }).expect("had a copy");
        self.publish(&host_prefix(dest)).map_err(map_err)?;
        self.rw.release(old.slot, now);
        self.cow_stats.copies_replaced += 1;
        Ok(())
    }

    /// Destroys `dest`'s private copy: unpublish first (restore the shared
    /// reference, or delete the clone), then quarantine the slot.
    pub fn reset_metrics(&mut self, dest: IpAddr, now: Instant) -> Result<bool> {
        let Some(p) = self.private.remove(&dest) else { return Ok(false) };
        self.publish(&host_prefix(dest))?;
        self.rw.release(p.slot, now);
        self.cow_stats.destroys += 1;
        self.record_private(dest, now);
        Ok(true)
    }

    /// Brings `dest`'s private copy in line with its base after a route
    /// change: destroyed when its covering route is gone or no longer
    /// unicast, else derived again from the (new) shared metrics.
    fn rederive(&mut self, dest: IpAddr, now: Instant) -> Result<()> {
        let Some(p) = self.private.get(&dest).cloned() else { return self.publish(&host_prefix(dest)) };
        let base = self.base(dest, true).filter(|b| b.kind == RouteKind::Unicast);
        let base = match base {
            Some(b) if self.routes.contains_key(&p.covering) || b.covering == p.covering => b,
            _ => return self.reset_metrics(dest, now).map(|_| ()),
        };
        let values = cow::derive(&base.shared, &p.overrides);
        if values == p.values {
            if base.covering != p.covering {
                self.private.get_mut(&dest).expect("present").covering = base.covering;
            }
            return self.publish(&host_prefix(dest));
        }
        if cow::words_changed(&p.values, &values) <= 1 {
            self.sink.put_rw_metrics(p.slot, &values)?;
            let c = self.private.get_mut(&dest).expect("present");
            c.values = values;
            c.covering = base.covering;
            return self.publish(&host_prefix(dest));
        }
        match self.replace_copy(dest, p.overrides, values, base.covering, now) {
            Ok(()) => Ok(()),
            Err(CowError::PoolExhausted { .. }) => {
                tracing::warn!(%dest, "no METRICS_RW slot to derive the private copy again; dropping it");
                self.reset_metrics(dest, now).map(|_| ())
            }
            Err(e) => Err(anyhow::anyhow!(e)),
        }
    }

    /// Removes overrides whose time has come; a copy without overrides is destroyed.
    pub fn expire(&mut self, now: Instant) -> Result<usize> {
        let due: Vec<IpAddr> = self
            .private
            .iter()
            .filter(|(_, p)| p.overrides.values().any(|o| o.expires.is_some_and(|t| t <= now)))
            .map(|(a, _)| *a)
            .collect();
        let mut expired = 0;
        for dest in due {
            let p = self.private.get_mut(&dest).expect("present");
            let before = p.overrides.len();
            p.overrides.retain(|_, o| !o.expires.is_some_and(|t| t <= now));
            expired += before - p.overrides.len();
            self.cow_stats.expirations += (before - p.overrides.len()) as u64;
            if p.overrides.is_empty() {
                self.reset_metrics(dest, now)?;
            } else {
                self.rederive(dest, now)?;
                self.record_private(dest, now);
            }
        }
        Ok(expired)
    }

    /// What `dest` forwards with: its reference, values, covering route and overrides.
    pub fn destination_metrics(&self, dest: IpAddr, now: Instant) -> Option<DestinationMetrics> {
        if let Some(p) = self.private.get(&dest) {
            let overrides = p
                .overrides
                .iter()
                .map(|(m, o)| OverrideInfo {
                    metric: m.name(),
                    value: o.value,
                    source: o.source,
                    expires_in: o.expires.map(|t| t.saturating_duration_since(now).as_secs()),
                })
                .collect();
            return Some(DestinationMetrics {
                destination: dest,
                reference: MetricsRef::private(p.slot).to_string(),
                values: named_values(&p.values),
                covering: Some(p.covering.to_string()),
                override_mask: cow::override_mask(&p.overrides),
                overrides,
            });
        }
        let base = self.base(dest, true)?;
        Some(DestinationMetrics {
            destination: dest,
            reference: base.metrics_ref.to_string(),
            values: named_values(&base.shared),
            covering: Some(base.covering.to_string()),
            override_mask: 0,
            overrides: Vec::new(),
        })
    }

    // ---- next hops, links, addresses, neighbours ------------------------

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
        let Some(&(key, _, old)) = self.nexthops.entries.get(&id) else { return Ok(()) };
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
            self.nexthops.entries.get_mut(&id).expect("present").2 = nh;
            if nh.is_usable() != old.is_usable() {
                // ECMP groups with this leg rebalance over their usable legs.
                for group in self.groups.containing(id) {
                    self.write_group(group)?;
                }
            }
        }
        Ok(())
    }

    /// An ECMP group for `legs`: a next hop per leg, then the group (shared
    /// with routes of the same legs). On error nothing is held.
    fn acquire_group(&mut self, legs: &[Leg], now: Instant) -> Result<u32> {
        let mut ids: Vec<(u32, u32)> = Vec::with_capacity(legs.len());
        for leg in legs {
            match self.acquire_nexthop(NextHopKey { ifindex: leg.dev, gateway: leg.via }, now) {
                Ok(id) => ids.push((id, leg.weight)),
                Err(e) => {
                    ids.iter().for_each(|(id, _)| self.nexthops.release(*id, now));
                    return Err(e);
                }
            }
        }
        let (group, new) = match self.groups.acquire(ids.clone(), now) {
            Ok(g) => g,
            Err(e) => {
                ids.iter().for_each(|(id, _)| self.nexthops.release(*id, now));
                return Err(e);
            }
        };
        if !new {
            // The existing group holds its legs already.
            ids.iter().for_each(|(id, _)| self.nexthops.release(*id, now));
        } else if let Err(e) = self.write_group(group) {
            self.release_group(group, now);
            return Err(e);
        }
        Ok(group)
    }

    fn release_group(&mut self, group: u32, now: Instant) {
        for (id, _) in self.groups.release(group, now).unwrap_or_default() {
            self.nexthops.release(id, now);
        }
    }

    /// Writes group `id`'s buckets when its legs' usability moved them.
    fn write_group(&mut self, id: u32) -> Result<()> {
        let usable = |nh: u32| self.nexthops.entries.get(&nh).is_some_and(|(_, _, n)| n.is_usable());
        let Some(table) = self.groups.recompute(id, usable) else { return Ok(()) };
        self.sink.put_group(id, &table)?;
        self.groups.written(id, table);
        Ok(())
    }

    fn refresh_nexthops(&mut self, wanted: impl Fn(&NextHopKey) -> bool) -> Result<()> {
        let ids: Vec<u32> = self.nexthops.entries.iter().filter(|(_, (k, _, _))| wanted(k)).map(|(id, _)| *id).collect();
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

    fn address_changed(&mut self, addr: IpAddr, present: bool, now: Instant) -> Result<()> {
        let count = self.local_addrs.get(&addr).copied().unwrap_or(0);
        let count = if present { count + 1 } else { count.saturating_sub(1) };
        self.set_local_address(addr, count, now)
    }

    /// `addr` is an address of `count` interfaces (0: not ours).
    fn set_local_address(&mut self, addr: IpAddr, count: u32, now: Instant) -> Result<()> {
        if count == 0 {
            self.local_addrs.remove(&addr);
        } else {
            self.local_addrs.insert(addr, count);
        }
        if count > 0 && self.private.contains_key(&addr) {
            // A local address has no private metrics.
            return self.reset_metrics(addr, now).map(|_| ());
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
            self.routes.get(&p).filter(|r| r.input.kind == RouteKind::Unicast && r.input.via.is_none() && r.input.dev == Some(ifindex))
        })
    }

    /// Makes the host entry of neighbour `addr` match the neighbour table and
    /// the covering connected route.
    fn refresh_neighbour_host(&mut self, addr: IpAddr, now: Instant) -> Result<()> {
        let wanted = self
            .neighbours
            .keys()
            .filter(|(_, a)| *a == addr)
            .find_map(|&(ifindex, _)| self.covering_connected(ifindex, addr).map(|r| (ifindex, r.input.prefix, r.input.metrics)));
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
        self.republish(&host_prefix(addr), now)?;
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
        pub groups: BTreeMap<u32, NextHopGroup>,
        pub private_meta: BTreeMap<IpAddr, PrivateMeta>,
        pub metrics_ro: BTreeMap<u32, RouteMetrics>,
        pub metrics_rw: BTreeMap<u32, RouteMetrics>,
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
        fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<()> {
            self.groups.insert(id, *group);
            Ok(())
        }
        fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
            self.metrics_ro.insert(slot, *m);
            Ok(())
        }
        fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
            self.metrics_rw.insert(slot, *m);
            Ok(())
        }
        fn add_port(&mut self, ifindex: u32) -> Result<()> {
            self.ports.insert(ifindex);
            Ok(())
        }
        fn remove_port(&mut self, ifindex: u32) -> Result<()> {
            self.ports.remove(&ifindex);
            Ok(())
        }
        fn put_private_meta(&mut self, dest: IpAddr, meta: &PrivateMeta) -> Result<()> {
            self.private_meta.insert(dest, *meta);
            Ok(())
        }
        fn delete_private_meta(&mut self, dest: IpAddr) -> Result<()> {
            self.private_meta.remove(&dest);
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
        rib_on(MemoryMaps::default())
    }

    fn rib_on(maps: MemoryMaps) -> (Rib<MemoryMaps>, Instant) {
        let now = Instant::now();
        let mut rib =
            Rib::new(maps, Capacities { metrics_ro: 64, metrics_rw: 8, nexthops: 64, nexthop_groups: 16 }, Duration::from_secs(1));
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
        let ecmp = |p: &str| RouteInput {
            multipath: legs.clone(),
            ..RouteInput::new(net(p), RouteKind::Unicast, None, None, RouteMetrics::DEFAULT)
        };
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
        rib.apply(Event::Link(Link { index: 2, name: "a".into(), mac: MAC_A, mtu: 1500, up: true, vlan: None, rx_queues: 1 }), now)
            .unwrap();
        rib.set_route(route("10.1.0.0/24", 2, None, 1400), now).unwrap();
        let err = rib.set_route(route("10.3.0.0/24", 2, None, 1300), now).unwrap_err();
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
        let replaced = RouteInput { metrics: m, ..route("10.2.0.0/24", 3, Some("10.2.0.254"), 0) };
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
        assert!(matches!(
            rib.cow_metrics(addr("192.0.2.1"), Rtax::Mtu, 1300, Source::Operator, None, now),
            Err(CowError::NotUnicast { .. })
        ));
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
            lifetime in proptest::option::of(1u64..=crate::operator::control::MAX_EXPIRES_SECS),
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
}
