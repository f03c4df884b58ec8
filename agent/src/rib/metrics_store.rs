//! Interned, shared, read-only metric sets (`METRICS_RO`).
//!
//! Identical sets share one slot; the store refcounts slots. A slot whose last
//! reference went away is quarantined for a grace period before it can hold
//! other contents, because a program that looked it up may still be reading
//! it. Slot 0 is the all-zero default, shared by every route without metrics,
//! and is never freed.

use crate::dataplane::slots::SlotAllocator;
use common::{MetricsRef, RouteMetrics};
// foldhash: every route interns its metrics (68 bytes hashed).
use hashbrown::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsStoreError {
    #[error("METRICS_RO is full: all {0} shared metric slots are in use")]
    Full(u32),
}

#[derive(Debug, Clone)]
struct Slot {
    metrics: RouteMetrics,
    refs: u32,
}

/// A new reference, and the contents to write into its slot first when the
/// slot was not already holding them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interned {
    pub reference: MetricsRef,
    pub fill: Option<RouteMetrics>,
}

#[derive(Debug)]
pub struct MetricsStore {
    slots: SlotAllocator,
    /// Contents and refcount of every slot that holds a set, referenced or
    /// not: an unreferenced one keeps its contents until it is reused, so
    /// re-interning the same set revives it.
    sets: HashMap<u32, Slot>,
    by_metrics: HashMap<RouteMetrics, u32>,
}

impl MetricsStore {
    pub fn new(capacity: u32, grace: Duration) -> MetricsStore {
        let mut store = MetricsStore { slots: SlotAllocator::new(1, capacity, grace), sets: HashMap::new(), by_metrics: HashMap::new() };
        store.sets.insert(0, Slot { metrics: RouteMetrics::DEFAULT, refs: 0 });
        store.by_metrics.insert(RouteMetrics::DEFAULT, 0);
        store
    }

    /// A reference to the shared slot holding `metrics`, allocating one when
    /// no slot holds them yet.
    pub fn intern(&mut self, metrics: &RouteMetrics, now: Instant) -> Result<Interned, MetricsStoreError> {
        self.reap(now);
        if let Some(&slot) = self.by_metrics.get(metrics) {
            let s = self.sets.get_mut(&slot).expect("indexed slot exists");
            if s.refs == 0 && slot != 0 {
                self.slots.revive(slot);
            }
            s.refs += 1;
            return Ok(Interned { reference: MetricsRef::read_only(slot), fill: None });
        }
        let slot = self.slots.alloc().ok_or(MetricsStoreError::Full(self.slots.capacity()))?;
        if let Some(old) = self.sets.insert(slot, Slot { metrics: *metrics, refs: 1 }) {
            self.by_metrics.remove(&old.metrics);
        }
        self.by_metrics.insert(*metrics, slot);
        Ok(Interned { reference: MetricsRef::read_only(slot), fill: Some(*metrics) })
    }

    /// Drops one reference. Call it only after no published entry carries it.
    pub fn release(&mut self, reference: MetricsRef, now: Instant) {
        debug_assert!(reference.is_read_only());
        let slot = reference.slot();
        let Some(s) = self.sets.get_mut(&slot) else {
            tracing::error!(slot, "release of an unknown METRICS_RO slot");
            return;
        };
        if s.refs == 0 {
            tracing::error!(slot, "release of an unreferenced METRICS_RO slot");
            return;
        }
        s.refs -= 1;
        if s.refs == 0 && slot != 0 {
            self.slots.release(slot, now);
        }
    }

    /// Makes the quarantined slots whose grace period has passed reusable.
    pub fn reap(&mut self, now: Instant) {
        self.slots.reap(now);
    }

    pub fn refcount(&self, reference: MetricsRef) -> u32 {
        self.sets.get(&reference.slot()).map_or(0, |s| s.refs)
    }

    /// References to shared sets, all slots together.
    pub fn total_refs(&self) -> u64 {
        self.sets.values().map(|s| u64::from(s.refs)).sum()
    }

    /// Slots holding a set that is referenced (the default included).
    pub fn slots_in_use(&self) -> usize {
        self.sets.values().filter(|s| s.refs > 0).count()
    }

    pub fn quarantined(&self) -> usize {
        self.slots.quarantined()
    }

    /// Keeps `slot` (an adopted entry's) out of allocation; slot 0, the
    /// default, is shared by every generation.
    pub fn reserve(&mut self, slot: u32) {
        if slot != 0 {
            self.slots.reserve(slot);
        }
    }

    pub fn release_reserved(&mut self, now: Instant) -> usize {
        self.slots.release_reserved(now)
    }

    pub fn is_quarantined(&self, slot: u32) -> bool {
        self.slots.is_quarantined(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Rtax;

    fn with_mtu(mtu: u32) -> RouteMetrics {
        let mut m = RouteMetrics::DEFAULT;
        m.set(Rtax::Mtu, mtu);
        m
    }

    #[test]
    fn identical_sets_share_a_slot_and_default_is_slot_zero() {
        let t = Instant::now();
        let mut s = MetricsStore::new(8, Duration::from_secs(1));
        let d = s.intern(&RouteMetrics::DEFAULT, t).unwrap();
        assert_eq!(d, Interned { reference: MetricsRef::DEFAULT, fill: None });
        let a = s.intern(&with_mtu(1400), t).unwrap();
        assert_eq!(a.fill, Some(with_mtu(1400)));
        let b = s.intern(&with_mtu(1400), t).unwrap();
        assert_eq!(b.reference, a.reference);
        assert_eq!(b.fill, None);
        assert_eq!(s.refcount(a.reference), 2);
        let c = s.intern(&with_mtu(1300), t).unwrap();
        assert_ne!(c.reference, a.reference);
        assert_eq!(s.slots_in_use(), 3);
    }

    #[test]
    fn freed_slot_is_reused_only_after_the_grace_period() {
        let t = Instant::now();
        let mut s = MetricsStore::new(2, Duration::from_secs(1));
        let a = s.intern(&with_mtu(1400), t).unwrap().reference;
        s.release(a, t);
        assert_eq!(s.quarantined(), 1);
        // Capacity 2: slot 0 is the default, slot 1 is quarantined.
        assert_eq!(s.intern(&with_mtu(1300), t + Duration::from_millis(500)), Err(MetricsStoreError::Full(2)));
        let b = s.intern(&with_mtu(1300), t + Duration::from_secs(1)).unwrap();
        assert_eq!(b.reference, a, "reused after grace");
        assert_eq!(b.fill, Some(with_mtu(1300)));
    }

    #[test]
    fn reinterning_during_quarantine_revives_the_slot() {
        let t = Instant::now();
        let mut s = MetricsStore::new(4, Duration::from_secs(1));
        let a = s.intern(&with_mtu(1400), t).unwrap().reference;
        s.release(a, t);
        let again = s.intern(&with_mtu(1400), t).unwrap();
        assert_eq!(again, Interned { reference: a, fill: None });
        assert_eq!(s.quarantined(), 0);
        s.reap(t + Duration::from_secs(5));
        assert_eq!(s.refcount(a), 1);
    }

    #[test]
    fn default_slot_is_never_freed() {
        let t = Instant::now();
        let mut s = MetricsStore::new(4, Duration::ZERO);
        let d = s.intern(&RouteMetrics::DEFAULT, t).unwrap().reference;
        s.release(d, t);
        s.reap(t + Duration::from_secs(5));
        assert_eq!(s.intern(&RouteMetrics::DEFAULT, t).unwrap().reference, MetricsRef::DEFAULT);
    }
}
