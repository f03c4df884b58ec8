//! Entry copies shared by value, for the route indexes' entry arrays
//! (`ROUTES_V4_DIR24_ENTRIES`, `ROUTES_V6_INDEX_ENTRIES`): routes that
//! forward alike name one slot, whose copy leaves out the route's id (the
//! fast path never reads it; the trie's entry keeps it). A full table's
//! million routes over a few next hops and metric sets then take a few
//! slots, whose cache lines every packet finds warm, not a random one of
//! 16 MiB.
//!
//! A slot is refcounted by the prefixes that name it; the last one gone
//! releases it to the allocator, which quarantines it for the grace period.
//! A copy is written before any word names its slot and never changes
//! while one does.

use crate::dataplane::{map_error::MapError, slots::SlotAllocator};
use common::RouteEntry;
use hashbrown::HashMap;
use std::time::{Duration, Instant};

/// The index's copy of a route's entry: all the fast path reads, without
/// the route's id, so that routes which forward alike share it.
pub fn index_copy(entry: &RouteEntry) -> RouteEntry {
    RouteEntry { id: 0, ..*entry }
}

#[derive(Debug)]
pub struct SharedEntries {
    slots: SlotAllocator,
    /// Each copy in use: its slot and how many prefixes name it.
    by_copy: HashMap<RouteEntry, (u32, u32)>,
    /// The same, by slot.
    by_slot: HashMap<u32, RouteEntry>,
}

impl SharedEntries {
    pub fn new(capacity: u32, grace: Duration) -> SharedEntries {
        SharedEntries { slots: SlotAllocator::new(0, capacity, grace), by_copy: HashMap::new(), by_slot: HashMap::new() }
    }

    pub fn set_grace(&mut self, grace: Duration) {
        self.slots.set_grace(grace);
    }

    /// An earlier agent's slots: reusable after the grace period.
    pub fn forget_adopted(&mut self, referenced: impl IntoIterator<Item = u32>, now: Instant) {
        self.slots.release_adopted(referenced, now);
    }

    /// The copy in `slot` (one this holds).
    pub fn copy_in(&self, slot: u32) -> Option<&RouteEntry> {
        self.by_slot.get(&slot)
    }

    /// A slot holding `entry`'s copy for one more prefix: the one already
    /// shared, or a fresh one `write` fills first. `None`: the array is full.
    pub fn acquire(
        &mut self,
        entry: &RouteEntry,
        now: Instant,
        write: impl FnOnce(u32, &RouteEntry) -> Result<(), MapError>,
    ) -> Result<Option<u32>, MapError> {
        let copy = index_copy(entry);
        if let Some((slot, refs)) = self.by_copy.get_mut(&copy) {
            *refs += 1;
            return Ok(Some(*slot));
        }
        self.slots.reap(now);
        let Some(slot) = self.slots.alloc() else { return Ok(None) };
        if let Err(e) = write(slot, &copy) {
            self.slots.release(slot, now);
            return Err(e);
        }
        self.by_copy.insert(copy, (slot, 1));
        self.by_slot.insert(slot, copy);
        Ok(Some(slot))
    }

    /// One prefix fewer names `slot`; after the last, the slot goes back
    /// (reusable after the grace period).
    pub fn release(&mut self, slot: u32, now: Instant) {
        let Some(copy) = self.by_slot.get(&slot).copied() else { return };
        let refs = &mut self.by_copy.get_mut(&copy).expect("both maps hold every copy").1;
        *refs -= 1;
        if *refs == 0 {
            self.by_copy.remove(&copy);
            self.by_slot.remove(&slot);
            self.slots.release(slot, now);
        }
    }

    /// Slots in use, one per distinct copy.
    pub fn in_use(&self) -> usize {
        self.by_slot.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{MetricsRef, RouteKind};

    #[test]
    fn alike_entries_share_a_slot_that_goes_with_the_last_of_them() {
        let t = Instant::now();
        let mut s = SharedEntries::new(2, Duration::from_secs(1));
        let mut written = Vec::new();
        let mut acquire = |s: &mut SharedEntries, nexthop: u32, id: u32| {
            s.acquire(&RouteEntry::new(RouteKind::Unicast, nexthop, MetricsRef::DEFAULT, id), t, |slot, e| {
                written.push((slot, *e));
                Ok(())
            })
            .unwrap()
        };
        let a = acquire(&mut s, 1, 10);
        assert_eq!(acquire(&mut s, 1, 11), a, "same next hop, another route: the same slot");
        let b = acquire(&mut s, 2, 12);
        assert_ne!(a, b);
        assert_eq!(acquire(&mut s, 3, 13), None, "full: two copies in two slots");
        assert_eq!(s.copy_in(a.unwrap()).map(|e| e.id), Some(0), "the copy has no id");
        s.release(a.unwrap(), t);
        assert_eq!(s.in_use(), 2, "one route still names it");
        s.release(a.unwrap(), t);
        assert_eq!(s.in_use(), 1);
        assert_eq!(acquire(&mut s, 3, 13), None, "the slot waits out the grace period");
        assert_eq!(written.len(), 2, "each copy written once");
    }
}
