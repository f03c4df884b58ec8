//! Slot allocation with a grace period: the free list behind `METRICS_RO`,
//! `METRICS_RW`, the DIR-24 entries, the `NEXTHOPS` and `NH_GROUPS` slots
//! (the map writer's `Published`) and the RIB's next hop and group ids.
//!
//! A released slot is quarantined first: a program that looked it up just
//! before the entry referring to it was replaced may still be reading it, so
//! it may hold new contents only after the grace period (the BPF analogue of
//! an RCU grace period; programs run for microseconds).

use std::{
    collections::{BTreeSet, VecDeque},
    time::{Duration, Instant},
};

#[derive(Debug)]
pub struct SlotAllocator {
    capacity: u32,
    grace: Duration,
    next_unused: u32,
    free: Vec<u32>,
    quarantine: VecDeque<(Instant, u32)>,
    in_use: usize,
    /// Slots an earlier agent's entries still refer to (an adopted data
    /// plane): never handed out until released after the sweep.
    reserved: BTreeSet<u32>,
}

impl SlotAllocator {
    /// Slots `first..capacity` are handed out; those below `first` are reserved.
    pub fn new(first: u32, capacity: u32, grace: Duration) -> SlotAllocator {
        SlotAllocator {
            capacity,
            grace,
            next_unused: first,
            free: Vec::new(),
            quarantine: VecDeque::new(),
            in_use: 0,
            reserved: BTreeSet::new(),
        }
    }

    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Moves slots whose grace period has passed to the free list; returns them.
    pub fn reap(&mut self, now: Instant) -> Vec<u32> {
        let mut reaped = Vec::new();
        while let Some(&(since, slot)) = self.quarantine.front() {
            if now.saturating_duration_since(since) < self.grace {
                break;
            }
            self.quarantine.pop_front();
            self.free.push(slot);
            reaped.push(slot);
        }
        reaped
    }

    /// A slot no one refers to, or `None` when all are in use or quarantined.
    pub fn alloc(&mut self) -> Option<u32> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => loop {
                if self.next_unused >= self.capacity {
                    return None;
                }
                self.next_unused += 1;
                if !self.reserved.contains(&(self.next_unused - 1)) {
                    break self.next_unused - 1;
                }
            },
        };
        self.in_use += 1;
        Some(slot)
    }

    /// Gives `slot` back; it is reusable after the grace period.
    pub fn release(&mut self, slot: u32, now: Instant) {
        self.in_use -= 1;
        self.quarantine.push_back((now, slot));
    }

    /// Takes `slot` back into use if it is quarantined or free (its contents
    /// never changed), for a store that finds by contents.
    pub fn revive(&mut self, slot: u32) -> bool {
        if let Some(i) = self.quarantine.iter().position(|&(_, s)| s == slot) {
            self.quarantine.remove(i);
        } else if let Some(i) = self.free.iter().position(|&s| s == slot) {
            self.free.swap_remove(i);
        } else {
            return false;
        }
        self.in_use += 1;
        true
    }

    /// Keeps `slot` out of allocation: an adopted entry refers to it.
    pub fn reserve(&mut self, slot: u32) {
        if slot < self.capacity && slot >= self.next_unused {
            self.reserved.insert(slot);
        }
    }

    /// An earlier agent's entries named `referenced`: they are reusable only
    /// after the grace period (its readers may still hold them).
    pub fn release_adopted(&mut self, referenced: impl IntoIterator<Item = u32>, now: Instant) {
        for slot in referenced {
            self.reserve(slot);
        }
        self.release_reserved(now);
    }

    /// The adopted entries are gone: reserved slots become reusable after
    /// the grace period, like any released slot. The allocation front moves
    /// past the last of them (the slots it passes that no one refers to are
    /// free), so none is handed out before its grace period.
    pub fn release_reserved(&mut self, now: Instant) -> usize {
        let reserved = std::mem::take(&mut self.reserved);
        if let Some(&last) = reserved.last() {
            while self.next_unused <= last {
                if !reserved.contains(&self.next_unused) {
                    self.free.push(self.next_unused);
                }
                self.next_unused += 1;
            }
        }
        let n = reserved.len();
        self.quarantine.extend(reserved.into_iter().map(|slot| (now, slot)));
        n
    }

    pub fn is_quarantined(&self, slot: u32) -> bool {
        self.quarantine.iter().any(|&(_, s)| s == slot)
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    pub fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_back_only_after_the_grace_period() {
        let t = Instant::now();
        let mut a = SlotAllocator::new(1, 3, Duration::from_secs(1));
        assert_eq!((a.alloc(), a.alloc(), a.alloc()), (Some(1), Some(2), None));
        a.release(1, t);
        assert_eq!(a.alloc(), None, "quarantined");
        assert!(a.reap(t + Duration::from_millis(999)).is_empty());
        assert_eq!(a.reap(t + Duration::from_secs(1)), vec![1]);
        assert_eq!(a.alloc(), Some(1));
        assert_eq!(a.in_use(), 2);
    }

    #[test]
    fn reserved_slots_are_skipped_until_released_then_quarantined() {
        let t = Instant::now();
        let mut a = SlotAllocator::new(1, 6, Duration::from_secs(1));
        for s in [2, 3, 5] {
            a.reserve(s);
        }
        assert_eq!((a.alloc(), a.alloc(), a.alloc()), (Some(1), Some(4), None));
        assert_eq!(a.release_reserved(t), 3);
        assert_eq!(a.alloc(), None, "quarantined first");
        a.reap(t + Duration::from_secs(1));
        let mut got: Vec<u32> = std::iter::from_fn(|| a.alloc()).collect();
        got.sort();
        assert_eq!(got, vec![2, 3, 5]);
    }

    #[test]
    fn reserved_slots_beyond_the_allocation_front_also_wait_out_the_grace() {
        let t = Instant::now();
        let mut a = SlotAllocator::new(0, 8, Duration::from_secs(1));
        a.reserve(6);
        assert_eq!(a.release_reserved(t), 1);
        let got: Vec<u32> = std::iter::from_fn(|| a.alloc()).collect();
        assert!(!got.contains(&6) && got.len() == 7, "{got:?}");
        a.reap(t + Duration::from_secs(1));
        assert_eq!(a.alloc(), Some(6));
    }

    #[test]
    fn revive_takes_a_slot_back_from_quarantine_or_free_list() {
        let t = Instant::now();
        let mut a = SlotAllocator::new(0, 4, Duration::from_secs(1));
        let s = a.alloc().unwrap();
        a.release(s, t);
        assert!(a.revive(s));
        assert_eq!((a.in_use(), a.quarantined()), (1, 0));
        a.release(s, t);
        a.reap(t + Duration::from_secs(2));
        assert!(a.revive(s));
        assert!(!a.revive(s), "already in use");
    }
}
