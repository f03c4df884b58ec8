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
//!   sees the old entry or the new one.
//! - `METRICS_RO`, `METRICS_RW`: the COW engine fills a fresh slot, then one
//!   route update points the entry at it; old slots are quarantined by the
//!   RIB's [`SlotAllocator`]s. A private copy is changed in place only when a
//!   single word differs (the word is the switch).
//! - `ROUTES_V4_DIR24` and its entries: a changed route's copy goes into a
//!   fresh slot, then the blocks' words (one aligned store each, release
//!   order) switch to it, the old slot waits out the grace ([`Dir24`]).
//! - `NEXTHOPS`, `NH_GROUPS`: routes name a stable id; the fast path reads the
//!   id's word in `NEXTHOPS_INDEX` / `NH_GROUPS_INDEX` (1 + slot, 0 = none),
//!   then the slot. [`Published`] is the only writer of both: fresh slot, one
//!   word store, the old slot after the grace period.
//!
//! An adopted data plane (an earlier agent's pins) keeps every slot its
//! indexes name reserved until none of its route entries remains.

use crate::dataplane::{
    dir24::{self, Dir24, Dir24Stats, Dir24Store},
    slots::SlotAllocator,
};
use anyhow::{anyhow, ensure, Context as _, Result};
use aya::{
    maps::{lpm_trie::Key, Array, DevMapHash, HashMap, LpmTrie, Map, MapData},
    Ebpf,
};
use common::capacity;
use common::{
    maps,
    route::{V4KeyData, V6KeyData},
    NextHop, NextHopGroup, PrivateMeta, RouteEntry, RouteMetrics,
};
use ipnet::IpNet;
use std::{
    collections::{HashMap as StdHashMap, HashSet},
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// The RIB's default grace period (`--grace-ms`), until [`MapWriter::with_grace`].
const DEFAULT_GRACE: Duration = Duration::from_secs(1);

pub struct MapWriter {
    routes_v4: LpmTrie<MapData, V4KeyData, RouteEntry>,
    /// Follows every ROUTES_V4 write into the DIR-24 index.
    dir24: Dir24,
    dir24_maps: Dir24Maps,
    routes_v6: LpmTrie<MapData, V6KeyData, RouteEntry>,
    nexthops: Published<NextHop, IndexedMaps<NextHop>>,
    groups: Published<NextHopGroup, IndexedMaps<NextHopGroup>>,
    /// An earlier agent's route keys not yet rewritten or deleted by this
    /// one: until none is left, its index slots stay reserved.
    adopted_prefixes: HashSet<IpNet>,
    metrics_ro: Array<MapData, RouteMetrics>,
    metrics_rw: Array<MapData, RouteMetrics>,
    egress_ports: DevMapHash<MapData>,
    private_meta: HashMap<MapData, [u8; 16], PrivateMeta>,
}

/// A destination as `PRIVATE_META`'s key: 16 bytes, IPv4 mapped.
pub fn meta_key(dest: std::net::IpAddr) -> [u8; 16] {
    match dest {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    }
}

fn take<T: TryFrom<Map, Error = aya::maps::MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// Opens a pinned map as its typed view.
pub fn open_pinned<T: TryFrom<Map, Error = aya::maps::MapError>>(dir: &Path, name: &str) -> Result<T> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!("opening pinned map {} (is the agent running, or was it ever started with this --pin-dir?)", path.display())
    })?;
    let map = Map::from_map_data(data).with_context(|| format!("pinned map {}", path.display()))?;
    T::try_from(map).with_context(|| format!("pinned map {} has an unexpected type", path.display()))
}

fn is_absent(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// A removal whose key was already gone is a removal done.
fn absent_is_fine(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(e) if is_absent(&e) => Ok(()),
        other => other,
    }
}

/// Every entry of both route tries, with its prefix.
pub fn route_entries(
    v4: &LpmTrie<MapData, V4KeyData, RouteEntry>,
    v6: &LpmTrie<MapData, V6KeyData, RouteEntry>,
) -> Result<Vec<(IpNet, RouteEntry)>> {
    let mut all = Vec::new();
    for item in v4.iter() {
        let (k, e) = item.context("reading ROUTES_V4")?;
        all.push((IpNet::new(std::net::Ipv4Addr::from(k.data()).into(), k.prefix_len() as u8)?, e));
    }
    for item in v6.iter() {
        let (k, e) = item.context("reading ROUTES_V6")?;
        all.push((IpNet::new(std::net::Ipv6Addr::from(k.data()).into(), k.prefix_len() as u8)?, e));
    }
    Ok(all)
}

/// An array map mapped into this process (`BPF_F_MMAPABLE`): its elements
/// are plain memory, written without a syscall each.
struct MappedArray<T> {
    base: *mut T,
    len: usize,
    _map: MapData,
}

// SAFETY: the mapping lives as long as the struct and is written only
// through `&mut self` or atomics.
unsafe impl<T> Send for MappedArray<T> {}

impl<T> MappedArray<T> {
    /// Maps `name`'s `len` elements of `T`, writable.
    fn take(ebpf: &mut Ebpf, name: &str, len: usize) -> Result<MappedArray<T>> {
        let map = match ebpf.take_map(name) {
            Some(Map::Array(data)) => data,
            _ => return Err(anyhow!("map {name} missing from the object or not an array")),
        };
        Self::map(map, name, len, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// Maps a pinned map's `len` elements of `T`, read-only.
    fn open_pinned(dir: &Path, name: &str, len: usize) -> Result<MappedArray<T>> {
        let path = dir.join(name);
        let map = MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))?;
        Self::map(map, name, len, libc::PROT_READ)
    }

    /// Maps `len` elements of `T` (the map's value size must be a multiple
    /// of 8 and of `T`'s size: the kernel pads elements to 8).
    fn map(map: MapData, name: &str, len: usize, prot: libc::c_int) -> Result<MappedArray<T>> {
        let bytes = len * std::mem::size_of::<T>();
        let info = map.info().with_context(|| format!("reading {name}'s definition"))?;
        let have = info.value_size() as usize * info.max_entries() as usize;
        if have != bytes || info.value_size() % 8 != 0 {
            return Err(anyhow!(
                "{name} holds {have} bytes ({} B values), this agent maps {bytes}: a map of another layout",
                info.value_size()
            ));
        }
        // SAFETY: a shared mapping of the map's own pages, of its size.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), bytes, prot, libc::MAP_SHARED, map.fd().as_fd().as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("mapping {name} (BPF_F_MMAPABLE)"));
        }
        Ok(MappedArray { base: p as *mut T, len, _map: map })
    }

    fn at(&self, i: usize) -> *mut T {
        assert!(i < self.len, "index {i} beyond a mapped array of {}", self.len);
        // SAFETY: in bounds of the live mapping.
        unsafe { self.base.add(i) }
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len * std::mem::size_of::<T>()) };
    }
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
    fn write_entry(&mut self, slot: u32, entry: &RouteEntry) -> Result<()> {
        // SAFETY: in bounds (checked), aligned, no reader yet.
        unsafe { self.entries.at(slot as usize).write_volatile(*entry) };
        Ok(())
    }
    fn set_block(&mut self, block: u32, word: u32) {
        // SAFETY: in bounds (checked); atomics are shared with the program.
        unsafe { &*self.blocks.at(block as usize) }.store(word, Ordering::Release);
    }
}

/// Where a [`Published`] kind's writes land: its index and slot maps, or
/// memory in the tests.
pub trait PublishStore<T> {
    /// Fills `slot`, which no index word names.
    fn write_slot(&mut self, slot: u32, value: &T) -> Result<()>;
    fn read_slot(&self, slot: u32) -> Result<T>;
    /// `id`'s index word: 0 (none) or 1 + its slot.
    fn word(&self, id: u32) -> u32;
    /// Switches `id`'s word: one aligned store, ordered after the slot's fill.
    fn set_word(&mut self, id: u32, word: u32);
}

/// An index (`NEXTHOPS_INDEX`, mapped) and its slot array (`NEXTHOPS`).
pub struct IndexedMaps<T: aya::Pod> {
    index: MappedArray<AtomicU32>,
    slots: Array<MapData, T>,
}

/// `id`'s slot and value as the fast path finds them: its word, then the
/// slot the word names (none for a 0 word).
fn lookup<T>(store: &impl PublishStore<T>, id: u32) -> Result<Option<(u32, T)>> {
    match store.word(id) {
        0 => Ok(None),
        w => Ok(Some((w - 1, store.read_slot(w - 1).with_context(|| format!("reading the slot of id {id}"))?))),
    }
}

impl<T: aya::Pod> PublishStore<T> for IndexedMaps<T> {
    fn write_slot(&mut self, slot: u32, value: &T) -> Result<()> {
        // A syscall: done (and visible) before the word's store below.
        self.slots.set(slot, value, 0).with_context(|| format!("writing slot {slot}"))
    }
    fn read_slot(&self, slot: u32) -> Result<T> {
        self.slots.get(&slot, 0).with_context(|| format!("reading slot {slot}"))
    }
    fn word(&self, id: u32) -> u32 {
        if id as usize >= self.index.len {
            return 0;
        }
        // SAFETY: in bounds; atomics are shared with the program.
        unsafe { &*self.index.at(id as usize) }.load(Ordering::Acquire)
    }
    fn set_word(&mut self, id: u32, word: u32) {
        // SAFETY: in bounds (checked); atomics are shared with the program.
        unsafe { &*self.index.at(id as usize) }.store(word, Ordering::Release);
    }
}

/// A published kind's maps and sizes.
struct Kind {
    /// For errors: "next hop", "ECMP group".
    what: &'static str,
    index: &'static str,
    slots: &'static str,
    ids: u32,
    slot_count: u32,
}

const NEXTHOPS: Kind = Kind {
    what: "next hop",
    index: maps::NEXTHOPS_INDEX,
    slots: maps::NEXTHOPS,
    ids: capacity::NEXTHOPS,
    slot_count: capacity::NEXTHOP_SLOTS,
};
const GROUPS: Kind = Kind {
    what: "ECMP group",
    index: maps::NH_GROUPS_INDEX,
    slots: maps::NH_GROUPS,
    ids: capacity::NH_GROUPS,
    slot_count: capacity::NH_GROUP_SLOTS,
};

/// One kind of value the fast path finds by id through an index, kept by
/// the publish rule: [`Published::publish`] fills a fresh slot, switches the
/// id's word to it, and quarantines the old slot for the grace period. Ids
/// stay what the RIB handed out; only the slots behind them move.
pub struct Published<T, S> {
    /// For errors: "next hop", "ECMP group".
    what: &'static str,
    store: S,
    ids: u32,
    slots: SlotAllocator,
    /// Per published id: its slot and what it holds.
    current: StdHashMap<u32, (u32, T)>,
    /// Ids whose words an earlier agent set (their slots are reserved).
    adopted: Vec<u32>,
}

impl<T: aya::Pod + PartialEq> Published<T, IndexedMaps<T>> {
    /// Takes `kind`'s maps out of a freshly loaded object.
    fn take(ebpf: &mut Ebpf, kind: &Kind) -> Result<Self> {
        let store = IndexedMaps { index: MappedArray::take(ebpf, kind.index, kind.ids as usize)?, slots: take(ebpf, kind.slots)? };
        Ok(Published::new(kind.what, store, kind.ids, kind.slot_count, DEFAULT_GRACE))
    }
}

impl<T: Copy + PartialEq, S: PublishStore<T>> Published<T, S> {
    fn new(what: &'static str, store: S, ids: u32, slots: u32, grace: Duration) -> Published<T, S> {
        Published { what, store, ids, slots: SlotAllocator::new(0, slots, grace), current: StdHashMap::new(), adopted: Vec::new() }
    }

    /// `id` now holds `value`; readers move to it at one store.
    pub fn publish(&mut self, id: u32, value: &T, now: Instant) -> Result<()> {
        ensure!(id < self.ids, "{} id {id} is beyond the index ({} ids)", self.what, self.ids);
        if matches!(self.current.get(&id), Some((_, v)) if v == value) {
            return Ok(());
        }
        self.slots.reap(now);
        let Some(slot) = self.slots.alloc() else {
            return Err(anyhow!(
                "no free {} slot for id {id}: {} of {} in use, {} waiting out the grace period (too many changes within it)",
                self.what,
                self.slots.in_use(),
                self.slots.capacity(),
                self.slots.quarantined()
            ));
        };
        if let Err(e) = self.store.write_slot(slot, value) {
            self.slots.release(slot, now);
            return Err(e.context(format!("publishing {} {id}", self.what)));
        }
        self.store.set_word(id, slot + 1);
        if let Some((old, _)) = self.current.insert(id, (slot, *value)) {
            self.slots.release(old, now);
        }
        Ok(())
    }

    /// `id` names nothing any more (a bad reference to the fast path); its
    /// slot is reused after the grace period.
    pub fn withdraw(&mut self, id: u32, now: Instant) {
        if let Some((old, _)) = self.current.remove(&id) {
            self.store.set_word(id, 0);
            self.slots.release(old, now);
        }
    }

    /// `id`'s slot and value as the fast path finds them.
    pub fn get(&self, id: u32) -> Result<Option<(u32, T)>> {
        lookup(&self.store, id)
    }

    /// What `slot` holds (an old slot stays intact for its grace period).
    pub fn read_slot(&self, slot: u32) -> Result<T> {
        self.store.read_slot(slot)
    }

    fn set_grace(&mut self, grace: Duration) {
        self.slots.set_grace(grace);
    }

    /// An earlier agent's index: every slot it names stays untouched (its
    /// routes still lead there) until [`Published::release_adopted`].
    fn adopt(&mut self) {
        for id in 0..self.ids {
            let w = self.store.word(id);
            if w != 0 {
                self.slots.reserve(w - 1);
                self.adopted.push(id);
            }
        }
    }

    /// No adopted route entry is left: the earlier agent's ids that this one
    /// has not published again name nothing, and their slots are reused
    /// after the grace period.
    fn release_adopted(&mut self, now: Instant) -> usize {
        for id in std::mem::take(&mut self.adopted) {
            if !self.current.contains_key(&id) {
                self.store.set_word(id, 0);
            }
        }
        self.slots.release_reserved(now)
    }
}

/// A published kind read from the pinned maps as the fast path reads it
/// (index word, then slot): for `show`, the tests and bpftool-free checks.
pub struct PublishedReader<T: aya::Pod>(IndexedMaps<T>);

impl PublishedReader<NextHop> {
    pub fn nexthops(dir: &Path) -> Result<Self> {
        Self::open(dir, &NEXTHOPS)
    }
}

impl PublishedReader<NextHopGroup> {
    pub fn groups(dir: &Path) -> Result<Self> {
        Self::open(dir, &GROUPS)
    }
}

impl<T: aya::Pod> PublishedReader<T> {
    fn open(dir: &Path, kind: &Kind) -> Result<Self> {
        Ok(PublishedReader(IndexedMaps {
            index: MappedArray::open_pinned(dir, kind.index, kind.ids as usize)?,
            slots: open_pinned(dir, kind.slots)?,
        }))
    }

    /// `id`'s slot and value; `None` when its word is 0 (or it is out of range).
    pub fn get(&self, id: u32) -> Result<Option<(u32, T)>> {
        lookup(&self.0, id)
    }

    /// Every id whose word names a slot: (id, slot, value).
    pub fn all(&self) -> Result<Vec<(u32, u32, T)>> {
        let mut all = Vec::new();
        for id in 0..self.0.index.len as u32 {
            if let Some((slot, v)) = lookup(&self.0, id)? {
                all.push((id, slot, v));
            }
        }
        Ok(all)
    }
}

fn v4_key(prefix: &ipnet::Ipv4Net) -> Key<V4KeyData> {
    Key::new(prefix.prefix_len() as u32, prefix.trunc().addr().octets())
}

fn v6_key(prefix: &ipnet::Ipv6Net) -> Key<V6KeyData> {
    Key::new(prefix.prefix_len() as u32, prefix.trunc().addr().octets())
}

impl MapWriter {
    /// Takes the writable maps out of a freshly loaded object.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<MapWriter> {
        Ok(MapWriter {
            routes_v4: take(ebpf, maps::ROUTES_V4)?,
            dir24: Dir24::new(capacity::ROUTES_V4_DIR24_ENTRIES, DEFAULT_GRACE),
            dir24_maps: Dir24Maps {
                blocks: MappedArray::take(ebpf, maps::ROUTES_V4_DIR24, dir24::BLOCKS)?,
                entries: MappedArray::take(ebpf, maps::ROUTES_V4_DIR24_ENTRIES, capacity::ROUTES_V4_DIR24_ENTRIES as usize)?,
            },
            routes_v6: take(ebpf, maps::ROUTES_V6)?,
            nexthops: Published::take(ebpf, &NEXTHOPS)?,
            groups: Published::take(ebpf, &GROUPS)?,
            adopted_prefixes: HashSet::new(),
            metrics_ro: take(ebpf, maps::METRICS_RO)?,
            metrics_rw: take(ebpf, maps::METRICS_RW)?,
            egress_ports: take(ebpf, maps::EGRESS_PORTS)?,
            private_meta: take(ebpf, maps::PRIVATE_META)?,
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
        self.nexthops.set_grace(grace);
        self.groups.set_grace(grace);
    }

    /// Publishes `entry` as the route for `prefix` (insert or atomic
    /// replace); an IPv4 route then reaches the DIR-24 index.
    pub fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()> {
        match prefix {
            IpNet::V4(p) => self.routes_v4.insert(&v4_key(p), entry, 0),
            IpNet::V6(p) => self.routes_v6.insert(&v6_key(p), entry, 0),
        }
        .with_context(|| format!("writing route {prefix}"))?;
        self.adopted_route_replaced(prefix);
        if let IpNet::V4(p) = prefix {
            self.dir24.put(p, entry, Instant::now(), &mut self.dir24_maps)?;
        }
        Ok(())
    }

    /// Removes `prefix` from its trie, then from the DIR-24 index (which
    /// asked the trie, or named the route being removed, meanwhile).
    pub fn delete_route(&mut self, prefix: &IpNet) -> Result<()> {
        let removed = match prefix {
            IpNet::V4(p) => self.routes_v4.remove(&v4_key(p)),
            IpNet::V6(p) => self.routes_v6.remove(&v6_key(p)),
        };
        if removed.as_ref().err().is_none_or(is_absent) {
            self.adopted_route_replaced(prefix);
        }
        removed.with_context(|| format!("deleting route {prefix}"))?;
        if let IpNet::V4(p) = prefix {
            self.dir24.delete(p, Instant::now(), &mut self.dir24_maps);
        }
        Ok(())
    }

    pub fn dir24_stats(&self) -> Dir24Stats {
        self.dir24.stats()
    }

    /// Takes over what an earlier agent published into these (pinned) maps:
    /// its DIR-24 index is reset (the trie answers), the slots its next hop
    /// and group indexes name stay reserved until every one of its route
    /// entries is rewritten or deleted (the RIB's sweep), and what it
    /// published is returned for the RIB to allocate around.
    pub fn adopt(&mut self) -> Result<crate::rib::Adopted> {
        self.forget_adopted_dir24();
        let adopted = self.read_adopted()?;
        self.nexthops.adopt();
        self.groups.adopt();
        self.adopted_prefixes = adopted.prefixes.iter().copied().collect();
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

    /// What an earlier agent published into these (adopted) maps: every
    /// route key, and every slot those entries refer to.
    fn read_adopted(&self) -> Result<crate::rib::Adopted> {
        let mut a = crate::rib::Adopted::default();
        for (prefix, e) in route_entries(&self.routes_v4, &self.routes_v6)? {
            a.prefixes.push(prefix);
            let slot = e.metrics.slot();
            if e.metrics.is_read_only() {
                a.metrics_ro.insert(slot);
            } else {
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
        Ok(a)
    }

    /// The last adopted entry gone, the earlier agent's index slots go too.
    fn adopted_route_replaced(&mut self, prefix: &IpNet) {
        if self.adopted_prefixes.remove(prefix) && self.adopted_prefixes.is_empty() {
            self.release_adopted();
        }
    }

    fn release_adopted(&mut self) {
        let now = Instant::now();
        let n = self.nexthops.release_adopted(now) + self.groups.release_adopted(now);
        tracing::info!(slots = n, "no entry of the earlier agent is left: its next hop and group slots are released");
    }

    /// Next hop `id` holds `nh` from now on (fresh slot, one word switched).
    pub fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()> {
        self.nexthops.publish(id, nh, Instant::now())
    }

    /// ECMP group `id` has `group`'s buckets from now on: a flow sees the
    /// old buckets or the new ones, never a mix.
    pub fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<()> {
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

    pub fn put_private_meta(&mut self, dest: std::net::IpAddr, meta: &PrivateMeta) -> Result<()> {
        self.private_meta.insert(meta_key(dest), meta, 0).with_context(|| format!("recording {dest}'s private copy in PRIVATE_META"))
    }

    pub fn delete_private_meta(&mut self, dest: std::net::IpAddr) -> Result<()> {
        absent_is_fine(self.private_meta.remove(&meta_key(dest)))
            .with_context(|| format!("forgetting {dest}'s private copy in PRIVATE_META"))
    }

    /// Fills a shared slot. Only for a slot no route refers to yet (or to the
    /// same contents): the program never sees it half-written.
    pub fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
        self.metrics_ro.set(slot, m, 0).with_context(|| format!("writing METRICS_RO slot {slot}"))
    }

    pub fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
        self.metrics_rw.set(slot, m, 0).with_context(|| format!("writing METRICS_RW slot {slot}"))
    }

    pub fn add_port(&mut self, ifindex: u32) -> Result<()> {
        self.egress_ports
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to EGRESS_PORTS (does the driver support XDP redirect?)"))
    }

    /// Removes a port; one the kernel already dropped (its device was
    /// unregistered) is not an error.
    pub fn remove_port(&mut self, ifindex: u32) -> Result<()> {
        absent_is_fine(self.egress_ports.remove(ifindex)).with_context(|| format!("removing ifindex {ifindex} from EGRESS_PORTS"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The maps as the fast path sees them, and every write in order.
    #[derive(Default)]
    struct Model {
        slots: StdHashMap<u32, u64>,
        words: StdHashMap<u32, u32>,
        log: Vec<String>,
    }

    impl PublishStore<u64> for Model {
        fn write_slot(&mut self, slot: u32, value: &u64) -> Result<()> {
            assert!(!self.words.values().any(|w| *w == slot + 1), "slot {slot} is filled while a word names it");
            self.slots.insert(slot, *value);
            self.log.push(format!("fill {slot}"));
            Ok(())
        }
        fn read_slot(&self, slot: u32) -> Result<u64> {
            self.slots.get(&slot).copied().ok_or_else(|| anyhow!("slot {slot} never filled"))
        }
        fn word(&self, id: u32) -> u32 {
            self.words.get(&id).copied().unwrap_or(0)
        }
        fn set_word(&mut self, id: u32, word: u32) {
            assert!(word == 0 || self.slots.contains_key(&(word - 1)), "word {word} names a slot never filled");
            self.words.insert(id, word);
            self.log.push(format!("word {id} = {word}"));
        }
    }

    const GRACE: Duration = Duration::from_secs(1);

    fn published(ids: u32, slots: u32) -> Published<u64, Model> {
        Published::new("value", Model::default(), ids, slots, GRACE)
    }

    #[test]
    fn a_new_value_goes_to_a_fresh_slot_and_the_word_switches_after_the_fill() {
        let t = Instant::now();
        let mut p = published(4, 8);
        p.publish(1, &10, t).unwrap();
        let (first, v) = p.get(1).unwrap().unwrap();
        assert_eq!(v, 10);
        p.store.log.clear();
        p.publish(1, &20, t).unwrap();
        let (second, v) = p.get(1).unwrap().unwrap();
        assert_eq!(v, 20);
        assert_ne!(first, second, "never rewritten in place");
        assert_eq!(p.store.log, vec![format!("fill {second}"), format!("word 1 = {}", second + 1)], "fill first, then one switch");
        assert_eq!(p.store.slots[&first], 10, "the old slot is intact for late readers");
        p.store.log.clear();
        p.publish(1, &20, t).unwrap();
        assert!(p.store.log.is_empty(), "the same value: nothing written");
    }

    #[test]
    fn an_old_slot_is_reused_only_after_the_grace_period() {
        let t = Instant::now();
        let mut p = published(2, 2);
        p.publish(0, &1, t).unwrap();
        let (old, _) = p.get(0).unwrap().unwrap();
        p.publish(0, &2, t).unwrap();
        // Both slots taken, one of them quarantined: a clear error, nothing changes.
        let err = p.publish(1, &3, t + GRACE / 2).unwrap_err().to_string();
        assert!(err.contains("no free value slot for id 1") && err.contains("1 waiting out the grace period"), "{err}");
        assert_eq!((p.store.word(1), p.store.slots[&old]), (0, 1));
        p.publish(1, &3, t + GRACE).unwrap();
        assert_eq!(p.get(1).unwrap(), Some((old, 3)), "the old slot, after the grace period");
    }

    #[test]
    fn ids_beyond_the_index_are_refused_and_a_withdrawn_id_names_nothing() {
        let t = Instant::now();
        let mut p = published(2, 4);
        let err = p.publish(2, &1, t).unwrap_err().to_string();
        assert!(err.contains("value id 2 is beyond the index (2 ids)"), "{err}");
        p.publish(1, &5, t).unwrap();
        let (slot, _) = p.get(1).unwrap().unwrap();
        p.withdraw(1, t);
        assert_eq!(p.get(1).unwrap(), None);
        assert_eq!(p.store.slots[&slot], 5, "intact until the grace period has passed");
        assert!(p.slots.is_quarantined(slot));
    }

    #[test]
    fn an_adopted_index_keeps_its_slots_until_released() {
        let t = Instant::now();
        let mut model = Model::default();
        // An earlier agent's ids 0 and 1 in slots 0 and 2.
        model.slots.extend([(0, 7), (2, 8)]);
        model.words.extend([(0, 1), (1, 3)]);
        let mut p = Published::new("value", model, 4, 4, GRACE);
        p.adopt();
        p.publish(2, &9, t).unwrap();
        p.publish(1, &10, t).unwrap();
        let fresh: Vec<u32> = [1, 2].iter().map(|id| p.get(*id).unwrap().unwrap().0).collect();
        assert!(!fresh.contains(&0) && !fresh.contains(&2), "reserved slots untouched: {fresh:?}");
        assert_eq!((p.store.slots[&0], p.store.slots[&2]), (7, 8));
        assert_eq!(p.release_adopted(t), 2);
        assert_eq!((p.get(0).unwrap(), p.get(1).unwrap().map(|x| x.1)), (None, Some(10)), "only the ids not published again are gone");
        assert!(p.publish(3, &11, t).is_err(), "the released slots wait out the grace period");
        p.publish(3, &11, t + GRACE).unwrap();
    }
}
