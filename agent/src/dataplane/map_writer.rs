//! The one owner of every write to the fast path's maps.
//!
//! Every value is written whole with one `bpf_map_update_elem`, so a reader
//! sees the old element or the new one, never a mix.

use crate::dataplane::dir24::{self, Dir24, Dir24Stats, Dir24Store};
use anyhow::{anyhow, Context as _, Result};
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
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// The RIB's default grace period (`--grace-ms`), until [`MapWriter::with_grace`].
const DEFAULT_GRACE: Duration = Duration::from_secs(1);

/// What an earlier agent left in the pinned maps: the keys it published and
/// every slot its entries refer to. The new agent allocates around them,
/// publishes its own state over them, then sweeps (see `Rib::adopt`).
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

pub struct MapWriter {
    routes_v4: LpmTrie<MapData, V4KeyData, RouteEntry>,
    /// Follows every ROUTES_V4 write into the DIR-24 index.
    dir24: Dir24,
    dir24_maps: Dir24Maps,
    routes_v6: LpmTrie<MapData, V6KeyData, RouteEntry>,
    nexthops: Array<MapData, NextHop>,
    nh_groups: Array<MapData, NextHopGroup>,
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

/// A removal whose key was already gone is a removal done.
fn absent_is_fine(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
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
    /// Maps `name`'s `len` elements of `T` (the map's value size must be a
    /// multiple of 8 and of `T`'s size: the kernel pads elements to 8).
    fn take(ebpf: &mut Ebpf, name: &str, len: usize) -> Result<MappedArray<T>> {
        let map = match ebpf.take_map(name) {
            Some(Map::Array(data)) => data,
            _ => return Err(anyhow!("map {name} missing from the object or not an array")),
        };
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
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, map.fd().as_fd().as_raw_fd(), 0)
        };
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
            nexthops: take(ebpf, maps::NEXTHOPS)?,
            nh_groups: take(ebpf, maps::NH_GROUPS)?,
            metrics_ro: take(ebpf, maps::METRICS_RO)?,
            metrics_rw: take(ebpf, maps::METRICS_RW)?,
            egress_ports: take(ebpf, maps::EGRESS_PORTS)?,
            private_meta: take(ebpf, maps::PRIVATE_META)?,
        })
    }

    /// Slots the DIR-24 index frees wait `grace` before reuse (as the RIB's).
    pub fn with_grace(mut self, grace: Duration) -> MapWriter {
        self.dir24.set_grace(grace);
        self
    }

    /// Publishes `entry` as the route for `prefix` (insert or atomic
    /// replace); an IPv4 route then reaches the DIR-24 index.
    pub fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()> {
        match prefix {
            IpNet::V4(p) => self.routes_v4.insert(&v4_key(p), entry, 0),
            IpNet::V6(p) => self.routes_v6.insert(&v6_key(p), entry, 0),
        }
        .with_context(|| format!("writing route {prefix}"))?;
        if let IpNet::V4(p) = prefix {
            self.dir24.put(p, entry, Instant::now(), &mut self.dir24_maps)?;
        }
        Ok(())
    }

    /// Removes `prefix` from its trie, then from the DIR-24 index (which
    /// asked the trie, or named the route being removed, meanwhile).
    pub fn delete_route(&mut self, prefix: &IpNet) -> Result<()> {
        match prefix {
            IpNet::V4(p) => self.routes_v4.remove(&v4_key(p)),
            IpNet::V6(p) => self.routes_v6.remove(&v6_key(p)),
        }
        .with_context(|| format!("deleting route {prefix}"))?;
        if let IpNet::V4(p) = prefix {
            self.dir24.delete(p, Instant::now(), &mut self.dir24_maps);
        }
        Ok(())
    }

    pub fn dir24_stats(&self) -> Dir24Stats {
        self.dir24.stats()
    }

    /// An earlier agent's DIR-24 index: every block back to "ask the trie"
    /// (its routes are in the trie), its slots free after the grace period.
    /// The routes published from here on index themselves again.
    pub fn forget_adopted_dir24(&mut self) {
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
    pub fn read_adopted(&self) -> Result<Adopted> {
        let mut a = Adopted::default();
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
                if let Ok(g) = self.nh_groups.get(&e.nexthop, 0) {
                    a.nexthops.extend(g.buckets);
                }
            } else {
                a.nexthops.insert(e.nexthop);
            }
        }
        Ok(a)
    }

    pub fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()> {
        self.nexthops.set(id, nh, 0).with_context(|| format!("writing next hop {id}"))
    }

    pub fn put_private_meta(&mut self, dest: std::net::IpAddr, meta: &PrivateMeta) -> Result<()> {
        self.private_meta.insert(meta_key(dest), meta, 0).with_context(|| format!("recording {dest}'s private copy in PRIVATE_META"))
    }

    pub fn delete_private_meta(&mut self, dest: std::net::IpAddr) -> Result<()> {
        absent_is_fine(self.private_meta.remove(&meta_key(dest)))
            .with_context(|| format!("forgetting {dest}'s private copy in PRIVATE_META"))
    }

    /// One `bpf_map_update_elem` per group: a flow sees the old buckets or
    /// the new ones.
    pub fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<()> {
        self.nh_groups.set(id, group, 0).with_context(|| format!("writing ECMP group {id}"))
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

use std::{collections::BTreeSet, net::IpAddr};

/// The RIB's view of the maps: every write it makes goes through one of
/// these, to the real maps ([`MapWriter`]) or to memory in unit tests.
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

impl MapSink for MapWriter {
    fn put_route(&mut self, prefix: &IpNet, entry: &RouteEntry) -> Result<()> {
        MapWriter::put_route(self, prefix, entry)
    }
    fn delete_route(&mut self, prefix: &IpNet) -> Result<()> {
        MapWriter::delete_route(self, prefix)
    }
    fn put_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<()> {
        MapWriter::put_nexthop(self, id, nh)
    }
    fn put_group(&mut self, id: u32, group: &NextHopGroup) -> Result<()> {
        MapWriter::put_group(self, id, group)
    }
    fn put_ro_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
        MapWriter::put_ro_metrics(self, slot, m)
    }
    fn put_rw_metrics(&mut self, slot: u32, m: &RouteMetrics) -> Result<()> {
        MapWriter::put_rw_metrics(self, slot, m)
    }
    fn add_port(&mut self, ifindex: u32) -> Result<()> {
        MapWriter::add_port(self, ifindex)
    }
    fn remove_port(&mut self, ifindex: u32) -> Result<()> {
        MapWriter::remove_port(self, ifindex)
    }
    fn put_private_meta(&mut self, dest: IpAddr, meta: &PrivateMeta) -> Result<()> {
        MapWriter::put_private_meta(self, dest, meta)
    }
    fn delete_private_meta(&mut self, dest: IpAddr) -> Result<()> {
        MapWriter::delete_private_meta(self, dest)
    }
}

#[cfg(test)]
pub mod memory {
    //! An in-memory map set for unit tests.
    use super::MapSink;
    use anyhow::Result;
    use common::{NextHop, NextHopGroup, PrivateMeta, RouteEntry, RouteMetrics};
    use ipnet::IpNet;
    use std::{
        collections::{BTreeMap, BTreeSet},
        net::IpAddr,
    };

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
