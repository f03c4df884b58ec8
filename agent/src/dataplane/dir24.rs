//! The IPv4 DIR-24 index in front of `ROUTES_V4`: one word per /24 block of
//! the address space names the route every address in the block takes, so
//! the fast path finds most IPv4 routes with two array reads, whatever the
//! table's size (an LPM trie lookup walks a path as deep as the table).
//!
//! `ROUTES_V4` stays the table of record (show, adoption, bpftool, host
//! entries, private copies). A block's word is 0, "ask the trie", or 1 + the
//! slot of a copy of its longest-matching route's entry in
//! `ROUTES_V4_DIR24_ENTRIES`. 0 is always right, so the index claims only
//! what it knows: a block with a prefix longer than /24 inside is 0 (the
//! trie decides within it), and so is a block no route covers, or one whose
//! route found no free slot.
//!
//! Routes that forward alike share one entry copy ([`SharedEntries`]).
//!
//! An entry never changes in place: a new slot is filled, the blocks move
//! to it, the old slot waits out the grace period before reuse (a program
//! may still be reading it), so a reader never sees half an entry.
//!
//! This module is the bookkeeping; [`Dir24Store`] is where its writes go
//! (the real maps, or a model in the tests).

use crate::dataplane::{
    map_error::MapError,
    shared_entries::{index_copy, SharedEntries},
};
use common::RouteEntry;
use ipnet::Ipv4Net;
// foldhash, not SipHash: a /8 route visits 65,536 blocks, each a lookup.
use hashbrown::{HashMap, HashSet};
use std::{
    collections::{btree_map, BTreeMap},
    time::{Duration, Instant},
};

/// /24 blocks in the IPv4 space.
pub const BLOCKS: usize = 1 << 24;
// The mapped words are the elements' blocks, end to end: one /16's 256
// /24 blocks per `Dir24Blocks`.
const _: () = assert!(core::mem::size_of::<common::route::Dir24Blocks>() * (1 << 16) == BLOCKS * 4);

/// Where the index's writes land.
pub trait Dir24Store {
    /// Fills entry slot `slot` (not yet referenced by any block).
    fn write_entry(&mut self, slot: u32, entry: &RouteEntry) -> Result<(), MapError>;
    /// Sets block `block` (a /24: the address's top 24 bits) to `word`.
    fn set_block(&mut self, block: u32, word: u32);
}

/// A ≤/24 prefix's copy in the entries array: its slot, or none (no free
/// slot was left; its blocks ask the trie). Four bytes a route: the entry
/// itself is read back from the slot when needed.
#[derive(Clone, Copy, Debug)]
struct Indexed(u32);

impl Indexed {
    const NONE: u32 = u32::MAX;

    fn new(slot: Option<u32>) -> Indexed {
        Indexed(slot.unwrap_or(Indexed::NONE))
    }

    fn slot(self) -> Option<u32> {
        (self.0 != Indexed::NONE).then_some(self.0)
    }
}

pub struct Dir24 {
    /// Per block: 1 + the length of the longest ≤/24 prefix covering it,
    /// 0 when none does.
    depth: Vec<u8>,
    /// ≤/24 prefixes by (network, length).
    /// A B-tree, not a hash table: a million twelve-byte entries fill its
    /// nodes; a hash table of a million doubles to two million slots.
    short: BTreeMap<(u32, u8), Indexed>,
    /// Longer prefixes (/25../32), and per block how many lie inside it.
    long: HashSet<(u32, u8)>,
    long_per_block: HashMap<u32, u32>,
    entries: SharedEntries,
    /// ≤/24 prefixes with a slot (kept as they change: `stats` is polled).
    indexed: u64,
    /// Prefixes that found the entries array full (their blocks ask the trie).
    unindexed: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dir24Stats {
    /// ≤/24 prefixes with a slot (their blocks answer without the trie).
    pub indexed: u64,
    /// ≤/24 prefixes that found no free slot: their blocks ask the trie.
    pub unindexed_now: u64,
    /// Times a prefix found the entries array full.
    pub full_events: u64,
    /// Blocks that hold a longer prefix and so ask the trie.
    pub blocks_to_trie: u64,
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

fn key(p: &Ipv4Net) -> (u32, u8) {
    (u32::from(p.network()), p.prefix_len())
}

/// The blocks a ≤/24 prefix covers.
fn blocks_of(net: u32, len: u8) -> std::ops::Range<u32> {
    let first = net >> 8;
    first..first + (1u32 << (24 - len as u32))
}

impl Dir24 {
    pub fn new(entries: u32, grace: Duration) -> Dir24 {
        Dir24 {
            depth: vec![0; BLOCKS],
            short: BTreeMap::new(),
            long: HashSet::new(),
            long_per_block: HashMap::new(),
            entries: SharedEntries::new(entries, grace),
            indexed: 0,
            unindexed: 0,
        }
    }

    pub fn set_grace(&mut self, grace: Duration) {
        self.entries.set_grace(grace);
    }

    /// An earlier agent's index: its slots (block words - 1, as found in the
    /// adopted map) are reusable only after the grace period. The caller has
    /// zeroed the blocks, so until the routes are published again the
    /// trie answers.
    pub fn forget_adopted(&mut self, referenced: impl IntoIterator<Item = u32>, now: Instant) {
        self.entries.forget_adopted(referenced, now);
    }

    /// The word block `b` should hold.
    fn word(&self, b: u32) -> u32 {
        let d = self.depth[b as usize];
        if d == 0 || self.long_per_block.contains_key(&b) {
            return 0;
        }
        let len = d - 1;
        let net = (b << 8) & mask(len);
        match self.short.get(&(net, len)) {
            Some(i) => i.slot().map_or(0, |s| s + 1),
            None => 0,
        }
    }

    /// `prefix` now routes with `entry` (added or replaced).
    pub fn put(&mut self, prefix: &Ipv4Net, entry: &RouteEntry, now: Instant, store: &mut impl Dir24Store) -> Result<(), MapError> {
        let (net, len) = key(prefix);
        if len > 24 {
            if self.long.insert((net, len)) {
                let b = net >> 8;
                let n = self.long_per_block.entry(b).or_insert(0);
                *n += 1;
                if *n == 1 {
                    store.set_block(b, 0);
                }
            }
            return Ok(());
        }
        // One descent of the B-tree for the lookup and the write.
        let (indexed, fresh) = match self.short.entry((net, len)) {
            btree_map::Entry::Occupied(o) => (o.into_mut(), false),
            btree_map::Entry::Vacant(v) => (v.insert(Indexed::new(None)), true),
        };
        let old = indexed.slot();
        if old.is_some_and(|s| self.entries.copy_in(s) == Some(&index_copy(entry))) {
            return Ok(());
        }
        let slot = match self.entries.acquire(entry, now, |slot, copy| store.write_entry(slot, copy)) {
            Ok(slot) => slot,
            Err(e) => {
                // On error nothing changed: a prefix new to the index leaves it.
                if fresh {
                    self.short.remove(&(net, len));
                }
                return Err(e);
            }
        };
        if slot.is_none() {
            self.unindexed += 1;
        }
        *indexed = Indexed::new(slot);
        let depth = len + 1;
        for b in blocks_of(net, len) {
            if self.depth[b as usize] <= depth {
                self.depth[b as usize] = depth;
                if !self.long_per_block.contains_key(&b) {
                    store.set_block(b, slot.map_or(0, |s| s + 1));
                }
            }
        }
        if let Some(s) = old {
            self.entries.release(s, now);
            self.indexed -= 1;
        }
        self.indexed += slot.is_some() as u64;
        Ok(())
    }

    /// Its prefix index rebuilt with full nodes (see `PrefixMap::compact`).
    pub fn compact(&mut self) {
        // From sorted contents a B-tree is built with full nodes.
        self.short = std::mem::take(&mut self.short).into_iter().collect();
    }

    /// Entry slots in use (each shared by the prefixes that route alike).
    pub fn slots_in_use(&self) -> usize {
        self.entries.in_use()
    }

    /// `prefix` is gone from the trie.
    pub fn delete(&mut self, prefix: &Ipv4Net, now: Instant, store: &mut impl Dir24Store) {
        let (net, len) = key(prefix);
        if len > 24 {
            if self.long.remove(&(net, len)) {
                let b = net >> 8;
                let n = self.long_per_block.get_mut(&b).expect("counted");
                *n -= 1;
                if *n == 0 {
                    self.long_per_block.remove(&b);
                    store.set_block(b, self.word(b));
                }
            }
            return;
        }
        let Some(gone) = self.short.remove(&(net, len)) else { return };
        // The blocks it owned fall to the longest shorter prefix covering it.
        let parent = (0..len).rev().map(|l| (net & mask(l), l)).find(|k| self.short.contains_key(k));
        let (depth, word) = match parent.and_then(|k| self.short.get(&k).map(|i| (k.1, i.slot()))) {
            Some((l, slot)) => (l + 1, slot.map_or(0, |s| s + 1)),
            None => (0, 0),
        };
        for b in blocks_of(net, len) {
            if self.depth[b as usize] == len + 1 {
                self.depth[b as usize] = depth;
                if !self.long_per_block.contains_key(&b) {
                    store.set_block(b, word);
                }
            }
        }
        if let Some(s) = gone.slot() {
            self.entries.release(s, now);
            self.indexed -= 1;
        }
    }

    /// Every prefix it follows (so, every prefix in the trie it indexes).
    pub fn prefixes(&self) -> usize {
        self.short.len() + self.long.len()
    }

    pub fn stats(&self) -> Dir24Stats {
        Dir24Stats {
            indexed: self.indexed,
            unindexed_now: self.short.len() as u64 - self.indexed,
            full_events: self.unindexed,
            blocks_to_trie: self.long_per_block.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{MetricsRef, RouteKind};
    use proptest::prelude::*;

    /// The maps as the fast path sees them.
    #[derive(Default)]
    struct Model {
        entries: HashMap<u32, RouteEntry>,
        blocks: HashMap<u32, u32>,
        /// The kernel refuses entry writes.
        refuse: bool,
    }

    impl Dir24Store for Model {
        fn write_entry(&mut self, slot: u32, entry: &RouteEntry) -> Result<(), MapError> {
            if self.refuse {
                return Err(MapError::Full { map: "ROUTES_V4_DIR24_ENTRIES", capacity: 0 });
            }
            self.entries.insert(slot, *entry);
            Ok(())
        }
        fn set_block(&mut self, block: u32, word: u32) {
            if word == 0 {
                self.blocks.remove(&block)
            } else {
                self.blocks.insert(block, word)
            };
        }
    }

    fn entry(id: u32) -> RouteEntry {
        RouteEntry::new(RouteKind::Unicast, id, MetricsRef::DEFAULT, id)
    }

    /// What the index holds for `entry(id)`.
    fn copy(id: u32) -> RouteEntry {
        index_copy(&entry(id))
    }

    /// What the program would take for `addr`: the block's entry, else the
    /// trie's longest match (`table`).
    fn fast_path(m: &Model, table: &HashMap<(u32, u8), RouteEntry>, addr: u32) -> Option<RouteEntry> {
        match m.blocks.get(&(addr >> 8)) {
            Some(w) => Some(m.entries[&(w - 1)]),
            None => lpm(table, addr),
        }
    }

    fn lpm(table: &HashMap<(u32, u8), RouteEntry>, addr: u32) -> Option<RouteEntry> {
        (0..=32u8).rev().find_map(|l| table.get(&(addr & mask(l), l)).copied())
    }

    fn net(addr: u32, len: u8) -> Ipv4Net {
        Ipv4Net::new(std::net::Ipv4Addr::from(addr & mask(len)), len).unwrap()
    }

    #[test]
    fn a_block_answers_for_its_route_and_a_longer_prefix_sends_it_to_the_trie() {
        let (t, mut m) = (Instant::now(), Model::default());
        let mut d = Dir24::new(16, Duration::from_secs(1));
        d.put(&"10.0.0.0/8".parse().unwrap(), &entry(1), t, &mut m).unwrap();
        assert_eq!(m.blocks.len(), 65_536);
        d.put(&"10.1.2.0/24".parse().unwrap(), &entry(2), t, &mut m).unwrap();
        assert_eq!(m.entries[&(m.blocks[&0x0a0102] - 1)], copy(2));
        d.put(&"10.1.2.128/25".parse().unwrap(), &entry(3), t, &mut m).unwrap();
        assert!(!m.blocks.contains_key(&0x0a0102), "the trie decides inside the block");
        d.delete(&"10.1.2.128/25".parse().unwrap(), t, &mut m);
        assert_eq!(m.entries[&(m.blocks[&0x0a0102] - 1)], copy(2));
        d.delete(&"10.1.2.0/24".parse().unwrap(), t, &mut m);
        assert_eq!(m.entries[&(m.blocks[&0x0a0102] - 1)], copy(1), "back to the covering /8");
        d.delete(&"10.0.0.0/8".parse().unwrap(), t, &mut m);
        assert!(m.blocks.is_empty());
        assert_eq!(d.stats(), Dir24Stats::default());
    }

    /// A refused entry write changes nothing the index answers with: a new
    /// prefix stays out, a known one keeps its slot and blocks.
    #[test]
    fn a_refused_entry_write_leaves_the_index_as_it_was() {
        let (t, mut m) = (Instant::now(), Model::default());
        let mut d = Dir24::new(16, Duration::from_secs(1));
        let (known, fresh): (Ipv4Net, Ipv4Net) = ("192.0.2.0/24".parse().unwrap(), "198.51.100.0/24".parse().unwrap());
        d.put(&known, &entry(1), t, &mut m).unwrap();
        let (blocks, stats, prefixes) = (m.blocks.clone(), d.stats(), d.prefixes());
        m.refuse = true;
        assert!(d.put(&fresh, &entry(2), t, &mut m).is_err());
        assert!(d.put(&known, &entry(3), t, &mut m).is_err());
        assert_eq!((m.blocks.clone(), d.stats(), d.prefixes()), (blocks, stats, prefixes));
        assert_eq!(m.entries[&(m.blocks[&0xc00002] - 1)], copy(1));
        // Once the kernel takes writes again, the fresh prefix goes in.
        m.refuse = false;
        d.put(&fresh, &entry(2), t, &mut m).unwrap();
        assert_eq!(m.entries[&(m.blocks[&0xc63364] - 1)], copy(2));
    }

    #[test]
    fn a_changed_entry_takes_a_new_slot_and_the_old_one_waits_out_the_grace() {
        let (t, mut m) = (Instant::now(), Model::default());
        let mut d = Dir24::new(2, Duration::from_secs(1));
        let p: Ipv4Net = "192.0.2.0/24".parse().unwrap();
        d.put(&p, &entry(1), t, &mut m).unwrap();
        let first = m.blocks[&0xc00002];
        d.put(&p, &entry(1), t, &mut m).unwrap();
        assert_eq!(m.blocks[&0xc00002], first, "the same entry keeps its slot");
        d.put(&p, &entry(2), t, &mut m).unwrap();
        assert_ne!(m.blocks[&0xc00002], first, "never rewritten in place");
        assert_eq!(m.entries[&(first - 1)], copy(1), "the old copy is intact for late readers");
        // Both slots taken (one quarantined): a third entry finds none and
        // its block asks the trie, counted.
        d.put(&p, &entry(3), t, &mut m).unwrap();
        assert!(!m.blocks.contains_key(&0xc00002));
        assert_eq!(d.stats().full_events, 1);
        d.put(&p, &entry(4), t + Duration::from_secs(2), &mut m).unwrap();
        assert_eq!(m.entries[&(m.blocks[&0xc00002] - 1)], copy(4), "a slot back after the grace");
    }

    #[test]
    fn routes_that_forward_alike_share_one_slot_until_the_last_goes() {
        let (t, mut m) = (Instant::now(), Model::default());
        let mut d = Dir24::new(4, Duration::from_secs(1));
        // A thousand /24s, two next hops: two slots, whatever their ids.
        let alike = |i: u32| RouteEntry::new(RouteKind::Unicast, 1 + i % 2, MetricsRef::DEFAULT, 100 + i);
        for i in 0..1000u32 {
            d.put(&net(0x0a00_0000 | i << 8, 24), &alike(i), t, &mut m).unwrap();
        }
        assert_eq!(d.slots_in_use(), 2);
        assert_eq!(d.stats().indexed, 1000);
        assert_eq!(m.entries[&(m.blocks[&0x0a0003] - 1)], index_copy(&alike(3)), "the copy has all but the id");
        // One of them changes: a third slot; the others keep theirs.
        let before = m.blocks[&0x0a0001];
        d.put(&net(0x0a00_0300, 24), &RouteEntry::new(RouteKind::Blackhole, 0, MetricsRef::DEFAULT, 103), t, &mut m).unwrap();
        assert_eq!((d.slots_in_use(), m.blocks[&0x0a0001]), (3, before));
        // All but one of next hop 2's go: its slot stays for the last.
        for i in (1..1000u32).step_by(2).filter(|i| *i != 3 && *i != 999) {
            d.delete(&net(0x0a00_0000 | i << 8, 24), t, &mut m);
        }
        assert_eq!(m.entries[&(m.blocks[&0x0a03e7] - 1)], index_copy(&alike(999)));
        d.delete(&net(0x0a00_0000 | 999 << 8, 24), t, &mut m);
        assert_eq!(d.slots_in_use(), 2, "next hop 1's and the blackhole's");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Random adds, replaces and deletes of prefixes from /12 to /32
        /// inside one /12: for every probed address the index's answer (or
        /// the trie's, where it defers) is the table's longest match.
        #[test]
        fn the_index_always_agrees_with_the_longest_match(
            ops in prop::collection::vec((any::<u32>(), prop::sample::select(vec![12u8, 13, 14, 16, 20, 22, 23, 24, 25, 28, 32]), 0u32..4, any::<bool>()), 1..60),
            probes in prop::collection::vec(any::<u32>(), 64),
        ) {
            let (t, mut m) = (Instant::now(), Model::default());
            let mut d = Dir24::new(24, Duration::ZERO);
            let mut table = HashMap::new();
            let within = |a: u32| 0x0a00_0000 | (a & 0x000f_ffff);
            for (i, (a, len, id, delete)) in ops.into_iter().enumerate() {
                let p = net(within(a), len);
                // Rebuilding the prefix index with full nodes changes nothing it answers.
                if i % 16 == 15 {
                    d.compact();
                }
                if delete {
                    table.remove(&key(&p));
                    d.delete(&p, t, &mut m);
                } else {
                    table.insert(key(&p), entry(id));
                    d.put(&p, &entry(id), t, &mut m).unwrap();
                }
            }
            for a in probes.into_iter().map(within) {
                prop_assert_eq!(fast_path(&m, &table, a).map(|e| index_copy(&e)), lpm(&table, a).map(|e| index_copy(&e)), "address {:#x}", a);
            }
            // One slot per distinct copy among the ≤/24 routes, none leaked.
            let distinct: HashSet<RouteEntry> = table.iter().filter(|((_, len), _)| *len <= 24).map(|(_, e)| index_copy(e)).collect();
            prop_assert_eq!(d.slots_in_use(), distinct.len());
        }
    }
}
