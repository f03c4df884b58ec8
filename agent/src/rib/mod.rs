//! The agent's routing table and how it becomes map entries.
//!
//! Three kinds of object may own an exact prefix in the LPM tries; `publish`
//! ([`routes`]) is the one place that decides which, in the kernel's order:
//! 1. the router's own addresses (host entries of kind Local);
//! 2. routes (configured or mirrored from the FIB);
//! 3. neighbour host entries: a /32 or /128 for each known neighbour under a
//!    connected route, with the neighbour's own next hop and the covering
//!    route's metrics (like the kernel's cached clones).
//!
//! On top of that, a destination with a private metrics copy (the COW engine,
//! [`cow`]) has its host entry published with a tag-clear reference to its
//! `METRICS_RW` slot, cloned from its covering route when it has no host
//! entry of its own.
//!
//! Resources are acquired before an entry that uses them is published and
//! released (into quarantine) only after the entry that used them is
//! replaced or deleted.
//!
//! Files: [`types`] (what callers hand in and get back), `routes` (set,
//! delete, publish), `tables` (the tables `ip rule` looks up, held apart), `nexthops` (next hops and ECMP groups), `objects`
//! (kernel nexthop objects, one entry each), `neighbours`
//! (links, local addresses, neighbour hosts), [`cow`] (the copy-on-write
//! engine), [`adoption`] (adopt, sweep, resync), [`metrics_store`] (interned
//! RO metric sets), [`ecmp`] (group buckets), [`prefix_map`] (the
//! prefix-keyed map a full table is held in). May call: the map writer, only
//! through [`MapSink`]; never the daemon, netlink or the slow path.
pub mod adoption;
pub mod cow;
#[cfg(test)]
mod cow_model_tests;
pub mod ecmp;
pub mod error;
pub mod ingress_ports;
pub mod lookup;
pub mod metrics_store;
mod neighbours;
mod nexthops;
pub mod objects;
#[cfg(test)]
mod objects_tests;
pub mod policy;
pub mod prefix_map;
mod routes;
mod tables;
#[cfg(test)]
mod tests;
pub mod types;

pub use crate::dataplane::map_writer::Adopted;
pub use crate::dataplane::map_writer::MapSink;
use crate::{
    dataplane::slots::SlotAllocator,
    rib::cow::{CowStats, PrivateCopy},
    rib::ecmp::GroupTable,
    rib::metrics_store::MetricsStore,
};
use common::{MetricsRef, NextHop, PrivateMeta, RouteEntry, RouteKind, RouteMetrics, Rtax};
pub use error::{Pool, RibError, WantedBy};
use ipnet::IpNet;
use nexthops::NextHopTable;
use prefix_map::PrefixMap;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};
pub use types::{
    AdoptionReport, Capacities, DestinationMetrics, NextHopKey, OverrideInfo, ResyncReport, RibSummary, RouteAttrs, RouteChange, RouteInput,
};
use types::{Event, Link};

#[derive(Debug, Clone)]
struct Route {
    /// What the route says, shared with the feed's record and every route
    /// that says the same (the prefix is the table's key).
    attrs: Arc<RouteAttrs>,
    prefix_len: u8,
    metrics_ref: MetricsRef,
    /// A `NEXTHOPS` id, or an `NH_GROUPS` id for a multipath route.
    nexthop: u32,
    id: u32,
    /// What its entries say: the input's kind, unless its nexthop object
    /// makes it another (a blackhole object, one the fast path cannot carry).
    kind: RouteKind,
    /// `nexthop` is a group (legs, or a group object).
    multipath: bool,
}

impl Route {
    /// The route as it came in, to `prefix` (its key).
    fn input(&self, prefix: IpNet) -> RouteInput {
        RouteInput::from_attrs(prefix, self.attrs.clone())
    }

    /// Its prefix, from an address inside it.
    fn prefix_of(&self, addr: IpAddr) -> IpNet {
        IpNet::new(addr, self.prefix_len).expect("a length its family has").trunc()
    }

    /// The flags its entries carry whatever the prefix.
    fn entry_flags(&self) -> u8 {
        if self.multipath {
            RouteEntry::MULTIPATH
        } else {
            0
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

pub struct Rib<S: MapSink> {
    sink: S,
    metrics: MetricsStore,
    nexthops: NextHopTable,
    groups: GroupTable,
    /// Kernel nexthop objects by their id, each with its own fast-path entry.
    objects: HashMap<u32, objects::ObjectState>,
    /// How many routes name each object: an object nothing names costs no
    /// scan of the routes when it changes kind.
    object_routes: HashMap<u32, u32>,
    links: HashMap<u32, Link>,
    /// Each link's source-validation sysctls, once read (`set_port_sysctls`).
    port_sysctls: BTreeMap<u32, types::PortSysctls>,
    /// `INGRESS_PORTS` as published.
    ingress_ports: BTreeMap<common::ingress::IngressKey, common::ingress::IngressPort>,
    /// An earlier agent's ports, kept until the adoption sweep.
    adopted_ingress: BTreeSet<common::ingress::IngressKey>,
    routes: PrefixMap<Route>,
    /// The routes of the tables rules look up, by (table, prefix).
    table_routes: BTreeMap<(u32, IpNet), Route>,
    /// Own addresses, with the interfaces that carry each.
    local_addrs: BTreeMap<IpAddr, BTreeSet<u32>>,
    /// Subnet broadcast addresses, with the (interface, address) pairs that give each.
    broadcasts: BTreeMap<IpAddr, BTreeSet<(u32, IpAddr)>>,
    /// The next hop of the device each local host entry's kernel route
    /// names (an address's first interface, a broadcast's): held for it.
    local_devices: BTreeMap<IpAddr, u32>,
    /// Known neighbours by (address, interface), `Some(mac)` when usable.
    neighbours: BTreeMap<(IpAddr, u32), Option<[u8; 6]>>,
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
    adopted_tables: Vec<(u32, IpNet)>,
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

impl<S: MapSink> Rib<S> {
    pub fn new(sink: S, capacities: Capacities, grace: Duration) -> Self {
        Rib {
            sink,
            metrics: MetricsStore::new(capacities.metrics_ro, grace),
            nexthops: NextHopTable::new(capacities.nexthops, grace),
            groups: GroupTable::new(capacities.nexthop_groups, grace),
            objects: HashMap::new(),
            object_routes: HashMap::new(),
            links: HashMap::new(),
            port_sysctls: BTreeMap::new(),
            ingress_ports: BTreeMap::new(),
            adopted_ingress: BTreeSet::new(),
            routes: PrefixMap::new(),
            table_routes: BTreeMap::new(),
            local_addrs: BTreeMap::new(),
            broadcasts: BTreeMap::new(),
            local_devices: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            static_neighbours: BTreeSet::new(),
            neighbour_hosts: BTreeMap::new(),
            rw: SlotAllocator::new(0, capacities.metrics_rw, grace),
            private: BTreeMap::new(),
            cow_stats: CowStats::default(),
            ports: BTreeSet::new(),
            next_route_id: 1,
            adopted: Vec::new(),
            adopted_tables: Vec::new(),
            adopted_private: Vec::new(),
        }
    }

    /// Its routes rebuilt with full B-tree nodes (see `PrefixMap::compact`).
    pub fn compact_routes(&mut self) {
        self.routes.compact();
        crate::rib::prefix_map::compact(&mut self.table_routes);
    }

    /// The map writer's indexes rebuilt likewise.
    pub fn compact_indexes(&mut self) {
        self.sink.compact_indexes();
    }

    /// The routes it holds (what `summary` counts, without the rest).
    pub fn route_count(&self) -> usize {
        self.routes.len() + self.table_routes.len()
    }

    /// The sink, past the RIB's bookkeeping: for fault injection only.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// A cold start's load, before any program reads the maps: the sink
    /// may batch route writes until [`Rib::end_bulk`].
    pub fn begin_bulk(&mut self) {
        self.sink.begin_bulk()
    }

    pub fn end_bulk(&mut self) -> Result<(), RibError> {
        Ok(self.sink.end_bulk()?)
    }

    /// A turn of the daemon of about `changes`: the sink may queue route
    /// writes, to land after [`Rib::end_turn`].
    pub fn begin_turn(&mut self, changes: usize) {
        self.sink.begin_turn(changes)
    }

    pub fn end_turn(&mut self) {
        self.sink.end_turn()
    }

    /// Each second: route writes the maps refused in a turn, written again.
    pub fn retry_owed_routes(&mut self) {
        self.sink.retry_owed_routes()
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

    /// The route the RIB holds for `prefix` (what its entries were made from).
    pub fn route_input(&self, prefix: &IpNet) -> Option<RouteInput> {
        self.routes.get(prefix).map(|r| r.input(*prefix))
    }

    /// Every prefix the RIB holds a route for.
    pub fn route_prefixes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.routes.keys()
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

    /// The next hop through neighbour `addr` on `ifindex` once it is usable:
    /// as written to the fast path, or (a neighbour no route leads to, such
    /// as a link-local one an ICMP error goes to) as the links make it.
    pub fn usable_nexthop(&self, ifindex: u32, addr: IpAddr) -> Option<NextHop> {
        let key = NextHopKey { ifindex, gateway: Some(addr) };
        let nh = match self.nexthops.by_key.get(&key) {
            Some(id) => self.nexthops.entries.get(id).map(|(_, _, nh)| *nh)?,
            None => self.nexthop_for(key),
        };
        Some(nh).filter(|nh| nh.is_usable())
    }

    /// The next hop to the link broadcast out of `ifindex` (a subnet
    /// broadcast destination, as the kernel's NUD_NOARP entry for it), if
    /// the link is up.
    pub fn link_broadcast_nexthop(&self, ifindex: u32) -> Option<NextHop> {
        let mut nh = self.nexthop_for(NextHopKey { ifindex, gateway: None });
        nh.dmac = [0xff; 6];
        nh.flags |= NextHop::RESOLVED;
        Some(nh).filter(|nh| nh.is_usable())
    }

    pub fn link(&self, ifindex: u32) -> Option<&Link> {
        self.links.get(&ifindex)
    }

    pub fn link_name(&self, ifindex: u32) -> Option<&str> {
        self.links.get(&ifindex).map(|l| l.name.as_str())
    }

    pub fn neighbour_resolved(&self, ifindex: u32, addr: IpAddr) -> bool {
        matches!(self.neighbours.get(&(addr, ifindex)), Some(Some(_)))
    }

    pub fn apply(&mut self, event: Event, now: Instant) -> Result<(), RibError> {
        match event {
            Event::Link(link) => {
                self.link_changed(link)?;
                self.publish_ingress_ports()
            }
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
                self.port_sysctls.remove(&index);
                self.publish_ingress_ports()
            }
            Event::Address { index, addr, present } => self.address_changed(index, addr, present, now),
            Event::Broadcast { index, addr, of, present } => self.broadcast_changed(index, addr, of, present, now),
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
            Event::Route { .. } | Event::Nexthop { .. } | Event::Overrun | Event::Undecodable => Ok(()),
            // Rules are the daemon's policy state's, not the RIB's.
            Event::Rule { .. } => Ok(()),
        }
    }
}
