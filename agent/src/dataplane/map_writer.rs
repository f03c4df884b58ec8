//! The one owner of every write to the fast path's maps, and the one place
//! that states how a value reaches the fast path (the publish rule):
//!
//! **Fill a slot no reader refers to, switch the one word (or one whole map
//! element) that points at it, free the old slot only after a grace period.**
//! A program that read the old word may still be reading the old slot, and
//! never may any reader see a value half-written.
//!
//! How each map follows it:
//! - `ROUTES_V4`, `ROUTES_V6` (LPM tries): the element is the word. An update
//!   replaces the whole element (the kernel links in a new node), so a reader
//!   sees the old entry or the new one. The update may be queued for the
//!   writer thread, a bounded time ([`crate::dataplane::trie_queue`]).
//! - `METRICS_RO`, `METRICS_RW`: the COW engine fills a fresh slot, then one
//!   route update points the entry at it; old slots are quarantined by the
//!   RIB's [`SlotAllocator`]s. A private copy is changed in place only when a
//!   single word differs (the word is the switch).
//! - `ROUTES_V4_DIR24` and its entries: a changed route's copy goes into a
//!   fresh slot, then the blocks' words (one aligned store each, release
//!   order) switch to it, the old slot waits out the grace ([`Dir24`]).
//! - `ROUTES_V6_INDEX` and its entries: the same, a bucket being one hash
//!   element that an update replaces whole ([`V6Index`]).
//! - `NEXTHOPS`, `NH_GROUPS`: routes name a stable id; the fast path reads the
//!   id's word in `NEXTHOPS_INDEX` / `NH_GROUPS_INDEX` (1 + slot, 0 = none),
//!   then the slot. [`Published`] is the only writer of both: fresh slot, one
//!   word store, the old slot after the grace period.
//!
//! An adopted data plane (an earlier agent's pins) keeps every slot its
//! indexes name reserved until none of its route entries remains.

use crate::dataplane::local_addrs::LocalAddrsV4;
pub use crate::dataplane::map_error::MapError;
#[cfg(test)]
pub use crate::dataplane::map_sink::memory;
pub use crate::dataplane::map_sink::MapSink;
pub use crate::dataplane::published::{IndexedMaps, PublishStore, Published, PublishedReader};
use crate::dataplane::{
    dir24::{self, Dir24, Dir24Stats, Dir24Store},
    map_error::{absent_is_fine, access, update},
    mapped::MappedArray,
    published,
    table_routes::TableRoutes,
    trie_batch::route_map,
    trie_queue::{TrieFaults, TrieQueue, Tries},
    trie_writer::TrieWriteStats,
    v6index::{V6Index, V6IndexStats, V6IndexStore},
};
use aya::{
    maps::{Array, DevMapHash, HashMap, LpmTrie, Map, MapData},
    Ebpf,
};
use common::capacity;
use common::{
    ingress::{IngressKey, IngressPort},
    maps,
    route::{V4KeyData, V6IndexWord, V6KeyData},
    NextHop, NextHopGroup, PrivateMeta, RouteEntry, RouteMetrics,
};
use ipnet::IpNet;
use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// The RIB's default grace period (`--grace-ms`), until [`MapWriter::with_grace`].
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(1);

/// What an earlier agent left in the pinned maps: the keys it published and
/// every slot its entries refer to. The new agent allocates around them,
/// publishes its own state over them, then sweeps (see `Rib::adopt`).
#[derive(Debug, Default, Clone)]
pub struct Adopted {
    pub prefixes: Vec<IpNet>,
    /// The routes of tables rules look up: (table, prefix).
    pub table_prefixes: Vec<(u32, IpNet)>,
    pub metrics_ro: BTreeSet<u32>,
    pub metrics_rw: BTreeSet<u32>,
    pub nexthops: BTreeSet<u32>,
    pub groups: BTreeSet<u32>,
    /// Private copies: the destination, the values its slot holds, and
    /// their record (which are overridden, by whom, until when).
    pub private: Vec<(IpAddr, RouteMetrics, PrivateMeta)>,
    /// The ingress ports it published: republished or deleted by this agent.
    pub ingress_ports: Vec<IngressKey>,
}

pub struct MapWriter {
    routes_v4: LpmTrie<MapData, V4KeyData, RouteEntry>,
    /// Follows every ROUTES_V4 write into the DIR-24 index.
    dir24: Dir24,
    dir24_maps: Dir24Maps,
    routes_v6: LpmTrie<MapData, V6KeyData, RouteEntry>,
    /// Follows every ROUTES_V6 write into the IPv6 index.
    v6index: V6Index,
    v6index_maps: V6IndexMaps,
    nexthops: Published<NextHop, IndexedMaps<NextHop>>,
    groups: Published<NextHopGroup, IndexedMaps<NextHopGroup>>,
    /// The routes of the tables rules look up.
    tables: TableRoutes,
    /// An earlier agent's route keys (`Some(table)`: a table's) not yet
    /// rewritten or deleted by this one: until none is left, its index
    /// slots stay reserved.
    adopted_prefixes: HashSet<(Option<u32>, IpNet)>,
    metrics_ro: Array<MapData, RouteMetrics>,
    metrics_rw: Array<MapData, RouteMetrics>,
    egress_ports: DevMapHash<MapData>,
    ingress_ports: Array<MapData, IngressPort>,
    ingress_vlan_ports: HashMap<MapData, IngressKey, IngressPort>,
    local_v4: LocalAddrsV4,
    private_meta: HashMap<MapData, [u8; 16], PrivateMeta>,
    /// When the tries' writes wait for the writer thread.
    queue: TrieQueue,
}

/// On the way out (an error, SIGTERM with `--keep-on-exit`): the queued
/// route writes land and the owed routes get one more try, so that the
/// pinned tries a next agent adopts hold no stale entry.
impl Drop for MapWriter {
    fn drop(&mut self) {
        let (queue, mut tries) = self.queue_and_tries();
        queue.finish(&mut tries);
    }
}

/// A destination as `PRIVATE_META`'s key: 16 bytes, IPv4 mapped.
pub fn meta_key(dest: std::net::IpAddr) -> [u8; 16] {
    match dest {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    }
}

pub(crate) fn take<T: TryFrom<Map, Error = aya::maps::MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T, MapError> {
    let map = ebpf.take_map(name).ok_or_else(|| MapError::Missing { map: name.into(), detail: "" })?;
    access(T::try_from(map), name, || format!("map {name} has an unexpected type"))
}

/// Opens a pinned map as its typed view.
pub fn open_pinned<T: TryFrom<Map, Error = aya::maps::MapError>>(dir: &Path, name: &str) -> Result<T, MapError> {
    let path = dir.join(name);
    let data = access(MapData::from_pin(&path), name, || {
        format!("opening pinned map {} (is the agent running, or was it ever started with this --pin-dir?)", path.display())
    })?;
    let map = access(Map::from_map_data(data), name, || format!("pinned map {}", path.display()))?;
    access(T::try_from(map), name, || format!("pinned map {} has an unexpected type", path.display()))
}

/// Every entry of both route tries, with its prefix.
pub fn route_entries(
    v4: &LpmTrie<MapData, V4KeyData, RouteEntry>,
    v6: &LpmTrie<MapData, V6KeyData, RouteEntry>,
) -> Result<Vec<(IpNet, RouteEntry)>, MapError> {
    let mut all = Vec::new();
    let prefix = |addr: IpAddr, len: u32, map: &'static str| {
        IpNet::new(addr, len as u8).map_err(|_| MapError::Layout {
            path: map.into(),
            detail: format!("{map} holds a key of prefix length {len}: a map of another layout"),
        })
    };
    for item in v4.iter() {
        let (k, e) = access(item, maps::ROUTES_V4, || "reading ROUTES_V4".into())?;
        all.push((prefix(std::net::Ipv4Addr::from(k.data()).into(), k.prefix_len(), maps::ROUTES_V4)?, e));
    }
    for item in v6.iter() {
        let (k, e) = access(item, maps::ROUTES_V6, || "reading ROUTES_V6".into())?;
        all.push((prefix(std::net::Ipv6Addr::from(k.data()).into(), k.prefix_len(), maps::ROUTES_V6)?, e));
    }
    Ok(all)
}

/// The DIR-24 index's two maps, where [`Dir24`]'s writes land: a block's
/// word is one aligned 4-byte store, which a reader sees whole; an entry is
/// written into a slot no block names yet, and the store that makes a block
/// name it comes after (release order), so a reader sees it whole too.
struct Dir24Maps {
    blocks: MappedArray<AtomicU32>,
    entries: MappedArray<RouteEntry>,
}

impl Dir24Store for Dir24Maps {
    fn write_entry(&mut self, slot: u32, entry: &RouteEntry) -> Result<(), MapError> {
        // SAFETY: in bounds (checked), aligned, no reader yet.
        unsafe { self.entries.at(slot as usize).write_volatile(*entry) };
        Ok(())
    }
    fn set_block(&mut self, block: u32, word: u32) {
        // SAFETY: in bounds (checked); atomics are shared with the program.
        unsafe { &*self.blocks.at(block as usize) }.store(word, Ordering::Release);
    }
}

/// The IPv6 index's two maps, where [`V6Index`]'s writes land: a bucket is
/// one hash element (a syscall each), an entry a slot no bucket names yet.
struct V6IndexMaps {
    buckets: HashMap<MapData, [u32; 3], V6IndexWord>,
    entries: MappedArray<RouteEntry>,
}

impl V6IndexStore for V6IndexMaps {
    fn write_entry(&mut self, slot: u32, entry: &RouteEntry) -> Result<(), MapError> {
        // SAFETY: in bounds (checked), aligned, no reader yet.
        unsafe { self.entries.at(slot as usize).write_volatile(*entry) };
        std::sync::atomic::fence(Ordering::Release);
        Ok(())
    }
    fn set_bucket(&mut self, key: [u32; 3], word: Option<u32>) -> Result<(), MapError> {
        let result = match word {
            Some(word) => self.buckets.insert(key, V6IndexWord { word }, 0),
            None => absent_is_fine(self.buckets.remove(&key)),
        };
        update(result, maps::ROUTES_V6_INDEX, format!("{key:?}"), || format!("writing IPv6 index bucket {key:?}"))
    }
}

impl MapWriter {
    /// Takes the writable maps out of a freshly loaded object.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<MapWriter, MapError> {
        Ok(MapWriter {
            routes_v4: take(ebpf, maps::ROUTES_V4)?,
            dir24: Dir24::new(capacity::ROUTES_V4_DIR24_ENTRIES, DEFAULT_GRACE),
            dir24_maps: Dir24Maps {
                blocks: MappedArray::take(ebpf, maps::ROUTES_V4_DIR24, dir24::BLOCKS)?,
                entries: MappedArray::take(ebpf, maps::ROUTES_V4_DIR24_ENTRIES, capacity::ROUTES_V4_DIR24_ENTRIES as usize)?,
            },
            routes_v6: take(ebpf, maps::ROUTES_V6)?,
            v6index: V6Index::new(capacity::ROUTES_V6_INDEX_ENTRIES, DEFAULT_GRACE),
            v6index_maps: V6IndexMaps {
                buckets: take(ebpf, maps::ROUTES_V6_INDEX)?,
                entries: MappedArray::take(ebpf, maps::ROUTES_V6_INDEX_ENTRIES, capacity::ROUTES_V6_INDEX_ENTRIES as usize)?,
            },
            nexthops: Published::take(ebpf, &published::NEXTHOPS)?,
            groups: Published::take(ebpf, &published::GROUPS)?,
            tables: TableRoutes::take(ebpf)?,
            adopted_prefixes: HashSet::new(),
            metrics_ro: take(ebpf, maps::METRICS_RO)?,
            metrics_rw: take(ebpf, maps::METRICS_RW)?,
            egress_ports: take(ebpf, maps::EGRESS_PORTS)?,
            ingress_ports: take(ebpf, maps::INGRESS_PORTS)?,
            ingress_vlan_ports: take(ebpf, maps::INGRESS_VLAN_PORTS)?,
            local_v4: LocalAddrsV4::new(take(ebpf, maps::LOCAL_V4)?),
            private_meta: take(ebpf, maps::PRIVATE_META)?,
            queue: TrieQueue::new(DEFAULT_GRACE),
        })
    }

    /// Slots the DIR-24 index and the published kinds free wait `grace`
    /// before reuse (as the RIB's).
    pub fn with_grace(mut self, grace: Duration) -> MapWriter {
        self.set_grace(grace);
        self
    }

    pub fn set_grace(&mut self, grace: Duration) {
        self.dir24.set_grace(grace);
        self.v6index.set_grace(grace);
        self.nexthops.set_grace(grace);
        self.groups.set_grace(grace);
        self.queue.set_grace(grace);
    }

    /// Whether `prefix`'s trie surely has room for one more: the prefixes
    /// the index holds (every write so far, queued or made) and those an
    /// earlier agent left.
    fn trie_room(&self, prefix: &IpNet) -> bool {
        let (held, size) = match prefix {
            IpNet::V4(_) => (self.dir24.prefixes(), capacity::ROUTES_V4),
            IpNet::V6(_) => (self.v6index.prefixes(), capacity::ROUTES_V6),
        };
        held + self.adopted_prefixes.len() < size as usize
    }

    /// The queue, and the tries it writes (one split borrow).
    fn queue_and_tries(&mut self) -> (&mut TrieQueue, Tries<'_>) {
        (&mut self.queue, Tries { v4: &mut self.routes_v4, v6: &mut self.routes_v6 })
    }

    /// Publishes `entry` as the route for `prefix` (insert or atomic
    /// replace); it then reaches the DIR-24 or the IPv6 index.
    pub fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<(), MapError> {
        // An earlier agent's entry is replaced at once: its slots are
        // released once none of its entries is left.
        let room = self.trie_room(prefix) && !self.adopted_prefixes.contains(&(None, *prefix));
        let (queue, mut tries) = self.queue_and_tries();
        if !queue.queue(prefix, entry, room, &mut tries) {
            update(tries.insert(prefix, entry), route_map(prefix), prefix, || format!("writing route {prefix}"))?;
        }
        self.adopted_route_replaced(None, prefix);
        self.local_v4.put(prefix, entry)?;
        match prefix {
            IpNet::V4(p) => self.dir24.put(p, entry, Instant::now(), &mut self.dir24_maps)?,
            IpNet::V6(p) => self.v6index.put(p, entry, Instant::now(), &mut self.v6index_maps)?,
        }
        Ok(())
    }

    /// Removes `prefix` from its trie, then from its index (which
    /// asked the trie, or named the route being removed, meanwhile).
    pub fn delete_route(&mut self, prefix: &IpNet) -> Result<(), MapError> {
        // After the queued writes, one of which may be this prefix's. A
        // route out of its trie already (owed, say): its index entry goes
        // all the same.
        let (queue, mut tries) = self.queue_and_tries();
        queue.before_delete(prefix, &mut tries);
        let removed = tries.remove(prefix);
        if removed.is_ok() {
            self.adopted_route_replaced(None, prefix);
        }
        update(removed, route_map(prefix), prefix, || format!("deleting route {prefix}"))?;
        self.local_v4.delete(prefix)?;
        match prefix {
            IpNet::V4(p) => self.dir24.delete(p, Instant::now(), &mut self.dir24_maps),
            IpNet::V6(p) => self.v6index.delete(p, Instant::now(), &mut self.v6index_maps)?,
        }
        Ok(())
    }

    /// Starts a bulk load: from here until [`MapWriter::end_bulk`], route
    /// writes to the tries are queued and made in batches on the writer
    /// thread ([`trie_queue`](crate::dataplane::trie_queue)). Only for a
    /// load no program reads yet (a cold start's dump, nothing adopted or
    /// attached).
    pub fn begin_bulk(&mut self) {
        let (queue, tries) = self.queue_and_tries();
        queue.begin_bulk(&tries);
    }

    /// Ends a bulk load: every queued route written, or a route the kernel
    /// refused (the load fails with it).
    pub fn end_bulk(&mut self) -> Result<(), MapError> {
        let (queue, mut tries) = self.queue_and_tries();
        queue.end_bulk(&mut tries)
    }

    /// Starts a turn of the daemon of about `changes`: route writes are
    /// queued, and may land after the turn (with a grace period; see
    /// [`trie_queue`](crate::dataplane::trie_queue)).
    pub fn begin_turn(&mut self, changes: usize) {
        let (queue, mut tries) = self.queue_and_tries();
        queue.begin_turn(changes, &mut tries);
    }

    pub fn end_turn(&mut self) {
        let (queue, mut tries) = self.queue_and_tries();
        queue.end_turn(&mut tries);
    }

    /// Before any other write: outside a turn, the turns' queued route
    /// writes landed; within one, none waiting too long.
    pub fn settle_routes(&mut self) -> &mut MapWriter {
        let (queue, mut tries) = self.queue_and_tries();
        queue.settle_lagging(&mut tries);
        self
    }

    /// Each second: the queued writes landed, the owed routes written again.
    pub fn retry_owed_routes(&mut self) {
        let (queue, mut tries) = self.queue_and_tries();
        queue.retry_owed(&mut tries);
    }

    /// Fault injection: what the kernel refuses of the next bulk load's or
    /// turn's first batch.
    pub fn arm_trie_faults(&mut self, faults: TrieFaults) {
        self.queue.arm_faults(faults);
    }

    pub fn trie_write_stats(&self) -> TrieWriteStats {
        self.queue.stats()
    }

    /// Publishes `entry` as table `table`'s route for `prefix`.
    pub fn put_table_route(&mut self, table: u32, prefix: &IpNet, entry: &RouteEntry) -> Result<(), MapError> {
        self.tables.put(table, prefix, entry)?;
        self.adopted_route_replaced(Some(table), prefix);
        Ok(())
    }

    pub fn delete_table_route(&mut self, table: u32, prefix: &IpNet) -> Result<(), MapError> {
        self.tables.delete(table, prefix)?;
        self.adopted_route_replaced(Some(table), prefix);
        Ok(())
    }

    /// The indexes' B-trees rebuilt with full nodes (see `PrefixMap::compact`).
    pub fn compact(&mut self) {
        self.dir24.compact();
        self.v6index.compact();
    }

    pub fn dir24_stats(&self) -> Dir24Stats {
        self.dir24.stats()
    }

    pub fn v6index_stats(&self) -> V6IndexStats {
        self.v6index.stats()
    }

    /// Takes over what an earlier agent published into these (pinned) maps:
    /// its DIR-24 index is reset (the trie answers), the slots its next hop
    /// and group indexes name stay reserved until every one of its route
    /// entries is rewritten or deleted (the RIB's sweep), and what it
    /// published is returned for the RIB to allocate around.
    pub fn adopt(&mut self) -> Result<Adopted, MapError> {
        self.forget_adopted_dir24();
        self.forget_adopted_v6index()?;
        let adopted = self.read_adopted()?;
        self.local_v4.adopt();
        self.nexthops.adopt();
        self.groups.adopt();
        self.adopted_prefixes = adopted.prefixes.iter().map(|p| (None, *p)).collect();
        self.adopted_prefixes.extend(adopted.table_prefixes.iter().map(|(t, p)| (Some(*t), *p)));
        if self.adopted_prefixes.is_empty() {
            self.release_adopted();
        }
        Ok(adopted)
    }

    /// An earlier agent's DIR-24 index: every block back to "ask the trie"
    /// (its routes are in the trie), its slots free after the grace period.
    /// The routes published from here on index themselves again.
    fn forget_adopted_dir24(&mut self) {
        let mut referenced = std::collections::BTreeSet::new();
        for b in 0..dir24::BLOCKS as u32 {
            // SAFETY: in bounds (checked); atomics.
            let w = unsafe { &*self.dir24_maps.blocks.at(b as usize) };
            let v = w.load(Ordering::Acquire);
            if v != 0 {
                referenced.insert(v - 1);
                w.store(0, Ordering::Release);
            }
        }
        self.dir24.forget_adopted(referenced, Instant::now());
    }

    /// An earlier agent's IPv6 index: every bucket removed (the trie
    /// answers), the slots they named free after the grace period.
    fn forget_adopted_v6index(&mut self) -> Result<(), MapError> {
        let buckets = &mut self.v6index_maps.buckets;
        let found = buckets.iter().collect::<Result<Vec<_>, _>>();
        let found = access(found, maps::ROUTES_V6_INDEX, || "reading ROUTES_V6_INDEX".into())?;
        for (key, _) in &found {
            update(absent_is_fine(buckets.remove(key)), maps::ROUTES_V6_INDEX, format!("{key:?}"), || "clearing ROUTES_V6_INDEX".into())?;
        }
        let referenced = found.iter().map(|(_, w)| w.word & !crate::dataplane::v6index::LONGER).filter(|&w| w != 0).map(|w| w - 1);
        self.v6index.forget_adopted(referenced.collect::<BTreeSet<_>>(), Instant::now());
        Ok(())
    }

    /// What an earlier agent published into these (adopted) maps: every
    /// route key, and every slot those entries refer to.
    fn read_adopted(&self) -> Result<Adopted, MapError> {
        let mut a = Adopted::default();
        let tables = self.tables.entries()?;
        let table_entries = tables.iter().map(|(t, p, e)| (Some(*t), *p, *e));
        let entries = route_entries(&self.routes_v4, &self.routes_v6)?.into_iter().map(|(p, e)| (None, p, e));
        for (table, prefix, e) in entries.chain(table_entries) {
            match table {
                None => a.prefixes.push(prefix),
                Some(t) => a.table_prefixes.push((t, prefix)),
            }
            let slot = e.metrics.slot();
            if e.metrics.is_read_only() {
                a.metrics_ro.insert(slot);
            } else if table.is_none() {
                a.metrics_rw.insert(slot);
                // A host entry's private copy: its values and its record.
                let dest = prefix.addr();
                if let (Ok(values), Ok(meta)) = (self.metrics_rw.get(&slot, 0), self.private_meta.get(&meta_key(dest), 0)) {
                    a.private.push((dest, values, meta));
                }
            }
            if e.is_multipath() {
                a.groups.insert(e.nexthop);
                if let Ok(Some((_, g))) = self.groups.get(e.nexthop) {
                    a.nexthops.extend(g.buckets);
                }
            } else {
                a.nexthops.insert(e.nexthop);
            }
        }
        let present = |(i, p): (u32, Result<IngressPort, _>)| {
            p.ok().filter(|p| p.has(IngressPort::PRESENT)).map(|_| IngressKey { ifindex: i, vid: 0 })
        };
        a.ingress_ports = (0..self.ingress_ports.len()).zip(self.ingress_ports.iter()).filter_map(present).collect();
        a.ingress_ports.extend(self.ingress_vlan_ports.keys().filter_map(Result::ok));
        Ok(a)
    }

    /// The last adopted entry gone, the earlier agent's index slots go too.
    fn adopted_route_replaced(&mut self, table: Option<u32>, prefix: &IpNet) {
        if self.adopted_prefixes.remove(&(table, *prefix)) && self.adopted_prefixes.is_empty() {
            self.release_adopted();
        }
    }

    fn release_adopted(&mut self) {
        let now = Instant::now();
        let n = self.nexthops.release_adopted(now) + self.groups.release_adopted(now);
        tracing::info!(slots = n, "no entry of the earlier agent is left: its next hop and group slots are released");
    }

    /// Next hop `id` holds `nh` from now on (fresh slot, one word switched).
    pub fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<(), MapError> {
        self.nexthops.publish(id, nh, Instant::now())
    }

    /// ECMP group `id` has `group`'s buckets from now on: a flow sees the
    /// old buckets or the new ones, never a mix.
    pub fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<(), MapError> {
        self.groups.publish(id, group, Instant::now())
    }

    pub fn withdraw_nexthop(&mut self, id: u32) {
        self.nexthops.withdraw(id, Instant::now())
    }

    pub fn withdraw_group(&mut self, id: u32) {
        self.groups.withdraw(id, Instant::now())
    }

    /// The next hops as the fast path finds them (reads only).
    pub fn nexthops(&self) -> &Published<NextHop, IndexedMaps<NextHop>> {
        &self.nexthops
    }

    pub fn groups(&self) -> &Published<NextHopGroup, IndexedMaps<NextHopGroup>> {
        &self.groups
    }

    pub fn put_private_meta(&mut self, dest: std::net::IpAddr, meta: &PrivateMeta) -> Result<(), MapError> {
        let result = self.private_meta.insert(meta_key(dest), meta, 0);
        update(result, maps::PRIVATE_META, dest, || format!("recording {dest}'s private copy in PRIVATE_META"))
    }

    pub fn delete_private_meta(&mut self, dest: std::net::IpAddr) -> Result<(), MapError> {
        let result = absent_is_fine(self.private_meta.remove(&meta_key(dest)));
        update(result, maps::PRIVATE_META, dest, || format!("forgetting {dest}'s private copy in PRIVATE_META"))
    }

    /// Fills a shared slot. Only for a slot no route refers to yet (or to the
    /// same contents): the program never sees it half-written.
    pub fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<(), MapError> {
        update(self.metrics_ro.set(slot, m, 0), maps::METRICS_RO, slot, || format!("writing METRICS_RO slot {slot}"))
    }

    pub fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<(), MapError> {
        update(self.metrics_rw.set(slot, m, 0), maps::METRICS_RW, slot, || format!("writing METRICS_RW slot {slot}"))
    }

    pub fn add_port(&mut self, ifindex: u32) -> Result<(), MapError> {
        let result = self.egress_ports.insert(ifindex, ifindex, None, 0).map_err(|e| match e {
            aya::maps::xdp::XdpMapError::MapError(e) => e,
            // No program is chained to the port (None): not reached.
            aya::maps::xdp::XdpMapError::ChainedProgramNotSupported => aya::maps::MapError::ProgramNotLoaded,
        });
        update(result, maps::EGRESS_PORTS, ifindex, || {
            format!("adding ifindex {ifindex} to EGRESS_PORTS (does the driver support XDP redirect?)")
        })
    }

    /// Frames arriving on `key` are judged by `port` from now on (one element replaced whole).
    pub fn put_ingress_port(&mut self, key: IngressKey, port: &IngressPort) -> Result<(), MapError> {
        let (result, map) = match common::ingress::array_slot(&key) {
            Some(slot) => (self.ingress_ports.set(slot, port, 0), maps::INGRESS_PORTS),
            None => (self.ingress_vlan_ports.insert(key, port, 0), maps::INGRESS_VLAN_PORTS),
        };
        update(result, map, format!("{}/{}", key.ifindex, key.vid), || {
            format!("publishing ingress port ifindex {} vlan {}", key.ifindex, key.vid)
        })
    }

    pub fn delete_ingress_port(&mut self, key: IngressKey) -> Result<(), MapError> {
        let (result, map) = match common::ingress::array_slot(&key) {
            Some(slot) => (self.ingress_ports.set(slot, IngressPort::default(), 0), maps::INGRESS_PORTS),
            None => (absent_is_fine(self.ingress_vlan_ports.remove(&key)), maps::INGRESS_VLAN_PORTS),
        };
        update(result, map, format!("{}/{}", key.ifindex, key.vid), || {
            format!("removing ingress port ifindex {} vlan {}", key.ifindex, key.vid)
        })
    }

    /// Removes a port; one the kernel already dropped (its device was
    /// unregistered) is not an error.
    pub fn remove_port(&mut self, ifindex: u32) -> Result<(), MapError> {
        let result = absent_is_fine(self.egress_ports.remove(ifindex));
        update(result, maps::EGRESS_PORTS, ifindex, || format!("removing ifindex {ifindex} from EGRESS_PORTS"))
    }
}
