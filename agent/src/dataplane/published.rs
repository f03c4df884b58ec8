//! The publish rule for values named by a stable id (next hops, ECMP
//! groups): [`Published`] fills a fresh slot, switches the id's one index
//! word, and frees the old slot after the grace period (see `map_writer`).

use crate::dataplane::{
    map_error::{access, update, MapError},
    map_writer::{open_pinned, take, DEFAULT_GRACE},
    mapped::MappedArray,
    slots::SlotAllocator,
};
use aya::maps::{Array, MapData};
use aya::Ebpf;
use common::{capacity, maps, NextHop, NextHopGroup};
use std::{
    collections::HashMap as StdHashMap,
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Where a [`Published`] kind's writes land: its index and slot maps, or
/// memory in the tests.
pub trait PublishStore<T> {
    /// Fills `slot`, which no index word names.
    fn write_slot(&mut self, slot: u32, value: &T) -> Result<(), MapError>;
    fn read_slot(&self, slot: u32) -> Result<T, MapError>;
    /// `id`'s index word: 0 (none) or 1 + its slot.
    fn word(&self, id: u32) -> u32;
    /// Switches `id`'s word: one aligned store, ordered after the slot's fill.
    fn set_word(&mut self, id: u32, word: u32);
}

/// An index (`NEXTHOPS_INDEX`, mapped) and its slot array (`NEXTHOPS`).
pub struct IndexedMaps<T: aya::Pod> {
    index: MappedArray<AtomicU32>,
    slots: Array<MapData, T>,
    /// The slot map's name, for errors.
    name: &'static str,
}

/// `id`'s slot and value as the fast path finds them: its word, then the
/// slot the word names (none for a 0 word).
fn lookup<T>(store: &impl PublishStore<T>, id: u32) -> Result<Option<(u32, T)>, MapError> {
    match store.word(id) {
        0 => Ok(None),
        w => Ok(Some((w - 1, store.read_slot(w - 1).map_err(|e| e.within(format!("reading the slot of id {id}")))?))),
    }
}

impl<T: aya::Pod> PublishStore<T> for IndexedMaps<T> {
    fn write_slot(&mut self, slot: u32, value: &T) -> Result<(), MapError> {
        // A syscall: done (and visible) before the word's store below.
        update(self.slots.set(slot, value, 0), self.name, slot, || format!("writing slot {slot}"))
    }
    fn read_slot(&self, slot: u32) -> Result<T, MapError> {
        access(self.slots.get(&slot, 0), self.name, || format!("reading slot {slot}"))
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
pub(crate) struct Kind {
    /// For errors: "next hop", "ECMP group".
    what: &'static str,
    index: &'static str,
    slots: &'static str,
    ids: u32,
    slot_count: u32,
}

pub(crate) const NEXTHOPS: Kind = Kind {
    what: "next hop",
    index: maps::NEXTHOPS_INDEX,
    slots: maps::NEXTHOPS,
    ids: capacity::NEXTHOPS,
    slot_count: capacity::NEXTHOP_SLOTS,
};
pub(crate) const GROUPS: Kind = Kind {
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
    /// For errors: "next hop", "ECMP group", and the slot map's name.
    what: &'static str,
    map: &'static str,
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
    pub(crate) fn take(ebpf: &mut Ebpf, kind: &Kind) -> Result<Self, MapError> {
        let store = IndexedMaps {
            index: MappedArray::take(ebpf, kind.index, kind.ids as usize)?,
            slots: take(ebpf, kind.slots)?,
            name: kind.slots,
        };
        Ok(Published::new(kind.what, store, kind.ids, kind.slot_count, DEFAULT_GRACE).in_map(kind.slots))
    }
}

impl<T: Copy + PartialEq, S: PublishStore<T>> Published<T, S> {
    pub(crate) fn new(what: &'static str, store: S, ids: u32, slots: u32, grace: Duration) -> Published<T, S> {
        let slots = SlotAllocator::new(0, slots, grace);
        Published { what, map: what, store, ids, slots, current: StdHashMap::new(), adopted: Vec::new() }
    }

    /// Names the slot map in errors.
    fn in_map(mut self, map: &'static str) -> Self {
        self.map = map;
        self
    }

    /// `id` now holds `value`; readers move to it at one store.
    pub fn publish(&mut self, id: u32, value: &T, now: Instant) -> Result<(), MapError> {
        let (map, what) = (self.map, self.what);
        if id >= self.ids {
            return Err(MapError::BeyondIndex { map, what, id, ids: self.ids });
        }
        if matches!(self.current.get(&id), Some((_, v)) if v == value) {
            return Ok(());
        }
        self.slots.reap(now);
        let Some(slot) = self.slots.alloc() else {
            let (in_use, capacity, quarantined) = (self.slots.in_use(), self.slots.capacity(), self.slots.quarantined());
            return Err(MapError::NoFreeSlot { map, what, id, in_use, capacity, quarantined });
        };
        if let Err(e) = self.store.write_slot(slot, value) {
            self.slots.release(slot, now);
            return Err(e.within(format!("publishing {what} {id}")));
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
    pub fn get(&self, id: u32) -> Result<Option<(u32, T)>, MapError> {
        lookup(&self.store, id)
    }

    /// What `slot` holds (an old slot stays intact for its grace period).
    pub fn read_slot(&self, slot: u32) -> Result<T, MapError> {
        self.store.read_slot(slot)
    }

    pub(crate) fn set_grace(&mut self, grace: Duration) {
        self.slots.set_grace(grace);
    }

    /// An earlier agent's index: every slot it names stays untouched (its
    /// routes still lead there) until [`Published::release_adopted`].
    pub(crate) fn adopt(&mut self) {
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
    pub(crate) fn release_adopted(&mut self, now: Instant) -> usize {
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
    pub fn nexthops(dir: &Path) -> Result<Self, MapError> {
        Self::open(dir, &NEXTHOPS)
    }
}

impl PublishedReader<NextHopGroup> {
    pub fn groups(dir: &Path) -> Result<Self, MapError> {
        Self::open(dir, &GROUPS)
    }
}

impl<T: aya::Pod> PublishedReader<T> {
    pub(crate) fn open(dir: &Path, kind: &Kind) -> Result<Self, MapError> {
        Ok(PublishedReader(IndexedMaps {
            index: MappedArray::open_pinned(dir, kind.index, kind.ids as usize)?,
            slots: open_pinned(dir, kind.slots)?,
            name: kind.slots,
        }))
    }

    /// `id`'s slot and value; `None` when its word is 0 (or it is out of range).
    pub fn get(&self, id: u32) -> Result<Option<(u32, T)>, MapError> {
        lookup(&self.0, id)
    }

    /// Every id whose word names a slot: (id, slot, value).
    pub fn all(&self) -> Result<Vec<(u32, u32, T)>, MapError> {
        let mut all = Vec::new();
        for id in 0..self.0.index.len as u32 {
            if let Some((slot, v)) = lookup(&self.0, id)? {
                all.push((id, slot, v));
            }
        }
        Ok(all)
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
        fn write_slot(&mut self, slot: u32, value: &u64) -> Result<(), MapError> {
            assert!(!self.words.values().any(|w| *w == slot + 1), "slot {slot} is filled while a word names it");
            self.slots.insert(slot, *value);
            self.log.push(format!("fill {slot}"));
            Ok(())
        }
        fn read_slot(&self, slot: u32) -> Result<u64, MapError> {
            let error = Box::new(aya::maps::MapError::KeyNotFound);
            self.slots.get(&slot).copied().ok_or_else(|| MapError::Access {
                map: "model".into(),
                what: format!("slot {slot} never filled"),
                error,
            })
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
        let err = p.publish(1, &3, t + GRACE / 2).unwrap_err();
        assert!(matches!(err, MapError::NoFreeSlot { id: 1, in_use: 1, capacity: 2, quarantined: 1, .. }) && err.is_full(), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("no free value slot for id 1") && err.contains("1 waiting out the grace period"), "{err}");
        assert_eq!((p.store.word(1), p.store.slots[&old]), (0, 1));
        p.publish(1, &3, t + GRACE).unwrap();
        assert_eq!(p.get(1).unwrap(), Some((old, 3)), "the old slot, after the grace period");
    }

    #[test]
    fn ids_beyond_the_index_are_refused_and_a_withdrawn_id_names_nothing() {
        let t = Instant::now();
        let mut p = published(2, 4);
        let err = p.publish(2, &1, t).unwrap_err();
        assert!(matches!(err, MapError::BeyondIndex { id: 2, ids: 2, .. }) && !err.is_full(), "{err:?}");
        let err = err.to_string();
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
