//! The IPv6 index in front of `ROUTES_V6`: hash buckets of five lengths,
//! /32, /40, /48, /56 and /64 (`ROUTES_V6_INDEX`, keyed by the stage and the
//! address's top bits), so that the fast path finds a /48 route (most of an
//! Internet table) with one hash probe and any route up to /64 with at most
//! three, whatever the table's size (an LPM trie lookup walks a path as
//! deep as the table).
//!
//! A prefix of length 24..=64 lands in the buckets of its stage (the
//! shortest stage not shorter than it; a /44 fills 16 /48 buckets). The
//! search starts at /48: a bucket there answers, or (`LONGER`: a longer
//! prefix lies inside) sends the search on to /56 and then /64; a missing
//! /48 bucket sends it back to /40, then /32. So a /48 or /56 bucket also
//! exists as a marker for longer prefixes inside it, and every bucket's
//! word names its best match among all prefixes up to its length: no
//! backtracking. A word's low bits are 0, "ask the trie", or 1 + the slot
//! of a copy of the route's entry in `ROUTES_V6_INDEX_ENTRIES`; a /64
//! bucket with a longer prefix inside always asks the trie, and so does an
//! address no bucket takes (under a prefix shorter than /24, or none).
//!
//! Routes that forward alike share one entry copy ([`SharedEntries`]).
//!
//! `ROUTES_V6` stays the table of record. An entry never changes in place
//! (fresh slot, buckets switched, the old slot reused after the grace), and
//! a bucket is one hash element, replaced whole by the kernel.

use crate::dataplane::{
    map_error::MapError,
    shared_entries::{index_copy, SharedEntries},
};
use common::RouteEntry;
use hashbrown::{HashMap, HashSet};
use ipnet::Ipv6Net;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// The bucket lengths, the search's stages.
pub const STAGES: [u8; 5] = [32, 40, 48, 56, 64];
/// Stages where a bucket also marks longer prefixes inside it (/48, /56, /64).
const MARKER_STAGES: std::ops::Range<usize> = 2..5;
/// A word's flag: a longer prefix lies inside the bucket, search on.
pub const LONGER: u32 = 1 << 31;
/// The shortest prefix the index expands (into at most 256 /32 buckets).
pub const SHORTEST: u8 = 24;

/// A bucket's key in `ROUTES_V6_INDEX`: the stage, then the address's top 64
/// bits masked to it, high word first.
pub fn bucket_key(stage: u8, bucket: u64) -> [u32; 3] {
    [stage as u32, (bucket >> 32) as u32, bucket as u32]
}

/// Where the index's writes land.
pub trait V6IndexStore {
    /// Fills entry slot `slot` (not yet named by any bucket).
    fn write_entry(&mut self, slot: u32, entry: &RouteEntry) -> Result<(), MapError>;
    /// Sets bucket `key` to `word`, or removes it (`None`).
    fn set_bucket(&mut self, key: [u32; 3], word: Option<u32>) -> Result<(), MapError>;
}

#[derive(Clone, Copy, Debug)]
struct Indexed {
    /// `None`: no free slot was left; its buckets ask the trie.
    slot: Option<u32>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct V6IndexStats {
    /// Prefixes up to /64 with a slot.
    pub indexed: u64,
    /// Times a prefix found the entries array full (its buckets ask the trie).
    pub full_events: u64,
    /// Buckets in `ROUTES_V6_INDEX`.
    pub buckets: u64,
}

pub struct V6Index {
    /// Prefixes up to /64, by (network's top 64 bits, length): sixteen
    /// bytes a key, not the thirty-two of a `u128`'s alignment.
    prefixes: HashMap<(u64, u8), Indexed>,
    /// Longer prefixes (the trie alone answers inside their /64).
    beyond: HashSet<(u128, u8)>,
    /// Prefixes up to /64 per length: the lengths a longest match tries.
    per_len: [u32; 65],
    /// Per stage and bucket, prefixes longer than the stage inside it
    /// (kept for the marker stages).
    longer: [HashMap<u64, u32>; 5],
    /// Per stage, the words written, by bucket.
    written: [BTreeMap<u64, u32>; 5],
    entries: SharedEntries,
    /// Prefixes with a slot (kept as they change: `stats` is polled).
    indexed: u64,
    full_events: u64,
}

fn mask64(len: u8) -> u64 {
    if len == 0 {
        0
    } else {
        u64::MAX << (64 - len as u32)
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

fn key(p: &Ipv6Net) -> (u128, u8) {
    (u128::from(p.network()), p.prefix_len())
}

/// A prefix up to /64 as `prefixes` holds it.
fn short_key(net: u128, len: u8) -> (u64, u8) {
    debug_assert!(len <= 64);
    ((net >> 64) as u64, len)
}

/// The top 64 bits of an address.
fn top(addr: u128) -> u64 {
    (addr >> 64) as u64
}

/// The stage a prefix of `len` fills buckets of, if any.
fn own_stage(len: u8) -> Option<usize> {
    (SHORTEST..=64).contains(&len).then(|| STAGES.iter().position(|&s| s >= len).expect("len <= 64"))
}

impl V6Index {
    pub fn new(entries: u32, grace: Duration) -> V6Index {
        V6Index {
            prefixes: HashMap::new(),
            beyond: HashSet::new(),
            per_len: [0; 65],
            longer: Default::default(),
            written: Default::default(),
            entries: SharedEntries::new(entries, grace),
            indexed: 0,
            full_events: 0,
        }
    }

    pub fn set_grace(&mut self, grace: Duration) {
        self.entries.set_grace(grace);
    }

    /// An earlier agent's index: its slots (as its words named them) are
    /// reusable after the grace period. The caller has removed its buckets.
    pub fn forget_adopted(&mut self, referenced: impl IntoIterator<Item = u32>, now: Instant) {
        self.entries.forget_adopted(referenced, now);
    }

    /// The longest prefix up to `max` long covering `addr`.
    fn covering(&self, addr: u128, max: u8) -> Option<(u8, &Indexed)> {
        (0..=max)
            .rev()
            .filter(|&l| self.per_len[l as usize] > 0)
            .find_map(|l| self.prefixes.get(&short_key(addr & mask128(l), l)).map(|i| (l, i)))
    }

    /// The word bucket `bucket` of stage `i` should hold; `None`: no bucket.
    fn word(&self, i: usize, bucket: u64) -> Option<u32> {
        let stage = STAGES[i];
        let cover = self.covering((bucket as u128) << 64, stage);
        let own = cover.is_some_and(|(l, _)| own_stage(l) == Some(i));
        let longer = MARKER_STAGES.contains(&i) && self.longer[i].contains_key(&bucket);
        if !own && !longer {
            return None;
        }
        if longer && stage == 64 {
            return Some(0);
        }
        let target = cover.and_then(|(_, ix)| ix.slot).map_or(0, |s| s + 1);
        Some(if longer { LONGER | target } else { target })
    }

    fn refresh_bucket(&mut self, i: usize, bucket: u64, store: &mut impl V6IndexStore) -> Result<(), MapError> {
        let want = self.word(i, bucket);
        if want == self.written[i].get(&bucket).copied() {
            return Ok(());
        }
        store.set_bucket(bucket_key(STAGES[i], bucket), want)?;
        match want {
            Some(w) => self.written[i].insert(bucket, w),
            None => self.written[i].remove(&bucket),
        };
        Ok(())
    }

    /// Counts a prefix longer than the marker stages' buckets it lies in.
    fn count_longer(&mut self, net: u128, len: u8, added: bool) {
        for i in MARKER_STAGES.filter(|&i| STAGES[i] < len) {
            let b = top(net) & mask64(STAGES[i]);
            let n = self.longer[i].entry(b).or_insert(0);
            if added {
                *n += 1;
            } else {
                *n -= 1;
                if *n == 0 {
                    self.longer[i].remove(&b);
                }
            }
        }
    }

    /// Rewrites every bucket whose word may follow prefix (`net`, `len`):
    /// the buckets it lies in (markers), those of its own stage it covers,
    /// and the deeper ones written inside it.
    fn refresh(&mut self, net: u128, len: u8, store: &mut impl V6IndexStore) -> Result<(), MapError> {
        for (i, &stage) in STAGES.iter().enumerate() {
            let first = top(net) & mask64(len.min(64));
            if stage < len {
                self.refresh_bucket(i, top(net) & mask64(stage), store)?;
            } else if own_stage(len) == Some(i) {
                let step = 1u64 << (64 - stage as u32);
                for k in 0..1u64 << (stage - len) {
                    self.refresh_bucket(i, first + k * step, store)?;
                }
            } else {
                let last = first | !mask64(len);
                let inside: Vec<u64> = self.written[i].range(first..=last).map(|(&b, _)| b).collect();
                for b in inside {
                    self.refresh_bucket(i, b, store)?;
                }
            }
        }
        Ok(())
    }

    /// `prefix` now routes with `entry` (added or replaced).
    pub fn put(&mut self, prefix: &Ipv6Net, entry: &RouteEntry, now: Instant, store: &mut impl V6IndexStore) -> Result<(), MapError> {
        let (net, len) = key(prefix);
        if len > 64 {
            if self.beyond.insert((net, len)) {
                self.count_longer(net, len, true);
                self.refresh(net, len, store)?;
            }
            return Ok(());
        }
        let old = self.prefixes.get(&short_key(net, len)).copied();
        if old.and_then(|o| o.slot).is_some_and(|s| self.entries.copy_in(s) == Some(&index_copy(entry))) {
            return Ok(());
        }
        let slot = self.entries.acquire(entry, now, |slot, copy| store.write_entry(slot, copy))?;
        if slot.is_none() {
            self.full_events += 1;
        }
        self.prefixes.insert(short_key(net, len), Indexed { slot });
        self.indexed += slot.is_some() as u64;
        self.indexed -= old.is_some_and(|o| o.slot.is_some()) as u64;
        if old.is_none() {
            self.per_len[len as usize] += 1;
            self.count_longer(net, len, true);
        }
        self.refresh(net, len, store)?;
        if let Some(Indexed { slot: Some(s), .. }) = old {
            self.entries.release(s, now);
        }
        Ok(())
    }

    /// `prefix` is gone from the trie.
    pub fn delete(&mut self, prefix: &Ipv6Net, now: Instant, store: &mut impl V6IndexStore) -> Result<(), MapError> {
        let (net, len) = key(prefix);
        if len > 64 {
            if self.beyond.remove(&(net, len)) {
                self.count_longer(net, len, false);
                self.refresh(net, len, store)?;
            }
            return Ok(());
        }
        let Some(gone) = self.prefixes.remove(&short_key(net, len)) else { return Ok(()) };
        self.indexed -= gone.slot.is_some() as u64;
        self.per_len[len as usize] -= 1;
        self.count_longer(net, len, false);
        self.refresh(net, len, store)?;
        if let Some(s) = gone.slot {
            self.entries.release(s, now);
        }
        Ok(())
    }

    /// Every prefix it follows (so, every prefix in the trie it indexes).
    pub fn prefixes(&self) -> usize {
        self.prefixes.len() + self.beyond.len()
    }

    /// Its written words rebuilt with full nodes (see `PrefixMap::compact`).
    pub fn compact(&mut self) {
        // From sorted contents a B-tree is built with full nodes.
        for words in &mut self.written {
            *words = std::mem::take(words).into_iter().collect();
        }
    }

    pub fn stats(&self) -> V6IndexStats {
        V6IndexStats { indexed: self.indexed, full_events: self.full_events, buckets: self.written.iter().map(|w| w.len() as u64).sum() }
    }
}

/// The fast path's search (`ebpf/src/fib.rs`, `route_lookup_v6`) over the
/// buckets `bucket` gives: the word of the address's best match, 0 when the
/// trie decides. The agent's copy, for `show` and the tests.
pub fn search(addr: u128, bucket: impl Fn([u32; 3]) -> Option<u32>) -> u32 {
    let at = |stage: u8| bucket(bucket_key(stage, top(addr) & mask64(stage)));
    let word = match at(48) {
        Some(w48) if w48 & LONGER != 0 => match at(56) {
            None => w48,
            Some(w56) if w56 & LONGER != 0 => at(64).unwrap_or(w56),
            Some(w56) => w56,
        },
        Some(w48) => w48,
        None => at(40).or_else(|| at(32)).unwrap_or(0),
    };
    word & !LONGER
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
        buckets: HashMap<[u32; 3], u32>,
    }

    impl V6IndexStore for Model {
        fn write_entry(&mut self, slot: u32, entry: &RouteEntry) -> Result<(), MapError> {
            self.entries.insert(slot, *entry);
            Ok(())
        }
        fn set_bucket(&mut self, key: [u32; 3], word: Option<u32>) -> Result<(), MapError> {
            match word {
                Some(w) => self.buckets.insert(key, w),
                None => self.buckets.remove(&key),
            };
            Ok(())
        }
    }

    fn entry(id: u32) -> RouteEntry {
        RouteEntry::new(RouteKind::Unicast, id, MetricsRef::DEFAULT, id)
    }

    /// What the index holds for `entry(id)`.
    fn copy(id: u32) -> RouteEntry {
        index_copy(&entry(id))
    }

    type Table = HashMap<(u128, u8), RouteEntry>;

    /// What the program would take for `addr`: the index's entry, else the
    /// trie's longest match (`table`), as the index copies it (no id).
    fn fast_path(m: &Model, table: &Table, addr: u128) -> Option<RouteEntry> {
        match search(addr, |k| m.buckets.get(&k).copied()) {
            0 => lpm(table, addr).map(|e| index_copy(&e)),
            w => Some(m.entries[&(w - 1)]),
        }
    }

    fn lpm(table: &Table, addr: u128) -> Option<RouteEntry> {
        (0..=128u8).rev().find_map(|l| table.get(&(addr & mask128(l), l)).copied())
    }

    fn net(addr: u128, len: u8) -> Ipv6Net {
        Ipv6Net::new(std::net::Ipv6Addr::from(addr & mask128(len)), len).unwrap()
    }

    fn p(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn a(s: &str) -> u128 {
        s.parse::<std::net::Ipv6Addr>().unwrap().into()
    }

    #[test]
    fn a_48_takes_one_bucket_and_a_longer_prefix_makes_it_a_marker() {
        let (t, mut m) = (Instant::now(), Model::default());
        let mut x = V6Index::new(16, Duration::from_secs(1));
        x.put(&p("2001:db8:1::/48"), &entry(1), t, &mut m).unwrap();
        assert_eq!(m.buckets.len(), 1);
        let w = m.buckets[&bucket_key(48, 0x2001_0db8_0001_0000)];
        assert_eq!(m.entries[&(w - 1)], copy(1));
        x.put(&p("2001:db8:1:100::/56"), &entry(2), t, &mut m).unwrap();
        assert_ne!(m.buckets[&bucket_key(48, 0x2001_0db8_0001_0000)] & LONGER, 0, "the /48 now sends the search on");
        let table: Table = [(key(&p("2001:db8:1::/48")), entry(1)), (key(&p("2001:db8:1:100::/56")), entry(2))].into();
        assert_eq!(fast_path(&m, &table, a("2001:db8:1:1ff::1")), Some(copy(2)));
        assert_eq!(fast_path(&m, &table, a("2001:db8:1:200::1")), Some(copy(1)));
        x.put(&p("2001:db8:1:1ff::/96"), &entry(3), t, &mut m).unwrap();
        assert_eq!(m.buckets[&bucket_key(64, 0x2001_0db8_0001_01ff)], 0, "a /64 with a longer prefix inside asks the trie");
        for s in ["2001:db8:1:1ff::/96", "2001:db8:1:100::/56", "2001:db8:1::/48"] {
            x.delete(&p(s), t, &mut m).unwrap();
        }
        assert!(m.buckets.is_empty());
        assert_eq!(x.stats(), V6IndexStats::default());
    }

    #[test]
    fn a_changed_entry_takes_a_new_slot_and_a_shorter_prefix_is_found_behind_a_missing_48() {
        let (t, mut m) = (Instant::now(), Model::default());
        let mut x = V6Index::new(4, Duration::from_secs(1));
        x.put(&p("2001:db8::/32"), &entry(1), t, &mut m).unwrap();
        let first = m.buckets[&bucket_key(32, 0x2001_0db8_0000_0000)];
        x.put(&p("2001:db8::/32"), &entry(2), t, &mut m).unwrap();
        let second = m.buckets[&bucket_key(32, 0x2001_0db8_0000_0000)];
        assert_ne!(first, second, "never rewritten in place");
        assert_eq!(m.entries[&(first - 1)], copy(1), "the old copy is intact for late readers");
        let table: Table = [(key(&p("2001:db8::/32")), entry(2))].into();
        assert_eq!(fast_path(&m, &table, a("2001:db8:ffff::1")), Some(copy(2)));
    }

    /// Prefix lengths around every stage boundary, and beyond /64.
    const LENGTHS: [u8; 20] = [0, 16, 23, 24, 29, 31, 32, 33, 36, 40, 41, 44, 48, 49, 52, 56, 60, 64, 65, 96];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
        /// Random adds, replaces and deletes of prefixes of every length
        /// class under one /16 (so that they nest): for every probed
        /// address the index's answer (or the trie's, where it defers) is
        /// the table's longest match.
        #[test]
        fn the_index_always_agrees_with_the_longest_match(
            ops in prop::collection::vec((any::<u128>(), prop::sample::select(LENGTHS.to_vec()), 0u32..4, any::<bool>()), 1..60),
            probes in prop::collection::vec(any::<u128>(), 64),
            slots in 8u32..64,
        ) {
            let (t, mut m) = (Instant::now(), Model::default());
            let mut x = V6Index::new(slots, Duration::ZERO);
            let mut table = Table::new();
            // Under 2001::/16, two random bits at the top of each of the next
            // eight bytes and a random last byte, so that prefixes and probes meet.
            let within = |a: u128| (0..8).fold((0x2001u128 << 112) | (a & 0xff), |x, k| x | ((a >> (2 * k) & 3) << (110 - 8 * k)));
            let (ops_len, probes_from_ops) = (ops.len(), ops.iter().map(|o| o.0).collect::<Vec<_>>());
            for (raw, len, id, delete) in ops {
                let p = net(within(raw), len);
                if delete {
                    table.remove(&key(&p));
                    x.delete(&p, t, &mut m).unwrap();
                } else {
                    table.insert(key(&p), entry(id));
                    x.put(&p, &entry(id), t, &mut m).unwrap();
                }
            }
            prop_assert!(ops_len > 0);
            // The kept count is the count (stats is polled: no scan).
            prop_assert_eq!(x.stats().indexed, x.prefixes.values().filter(|i| i.slot.is_some()).count() as u64);
            for a in probes.into_iter().chain(probes_from_ops).map(within) {
                prop_assert_eq!(fast_path(&m, &table, a), lpm(&table, a).map(|e| index_copy(&e)), "address {:#x}", a);
            }
        }
    }
}
