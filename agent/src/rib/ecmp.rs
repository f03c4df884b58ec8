//! ECMP groups (`RTA_MULTIPATH`): legs with weights, turned into the bucket
//! table the fast path indexes with a flow's hash.
//!
//! Buckets move as little as they can: when a leg fails (link down, no
//! neighbour) or comes back, only the buckets that must change do, so flows
//! on the other legs stay where they are (resilient hashing, RFC 2992's
//! concern with hash-threshold).

use crate::{
    dataplane::slots::SlotAllocator,
    rib::error::{full, Pool, RibError},
};
use common::NextHopGroup;
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

const BUCKETS: usize = NextHopGroup::BUCKETS;

/// One leg of a multipath route, as the kernel gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Leg {
    pub dev: u32,
    pub via: Option<IpAddr>,
    /// `rtnh_hops + 1`: 1 to 256.
    pub weight: u32,
}

/// How many buckets each leg gets: in proportion to its weight, at least one
/// each (the first `BUCKETS` legs), summing to `BUCKETS`.
fn quotas(weights: &[u32]) -> Vec<usize> {
    let n = weights.len().min(BUCKETS);
    let weights = &weights[..n];
    let total: u64 = weights.iter().map(|w| u64::from((*w).max(1))).sum();
    let exact: Vec<f64> = weights.iter().map(|w| (u64::from((*w).max(1)) * BUCKETS as u64) as f64 / total as f64).collect();
    let mut q: Vec<usize> = exact.iter().map(|e| (e.floor() as usize).max(1)).collect();
    // Largest remainder first while short; largest share gives back while over.
    while q.iter().sum::<usize>() < BUCKETS {
        let i = (0..n).max_by(|a, b| (exact[*a] - q[*a] as f64).total_cmp(&(exact[*b] - q[*b] as f64))).expect("n > 0");
        q[i] += 1;
    }
    while q.iter().sum::<usize>() > BUCKETS {
        let i = (0..n).max_by_key(|i| q[*i]).expect("n > 0");
        q[i] -= 1;
    }
    q
}

/// The bucket table for `legs` (next hop id, weight), given which are
/// usable now and what the table held before. With no usable leg, every
/// leg takes part (the fast path then hands the flow to the kernel).
pub fn assign_buckets(legs: &[(u32, u32)], usable: impl Fn(u32) -> bool, previous: &NextHopGroup) -> NextHopGroup {
    let mut active: Vec<(u32, u32)> = legs.iter().copied().filter(|(id, _)| usable(*id)).collect();
    if active.is_empty() {
        active = legs.to_vec();
    }
    if active.is_empty() {
        return NextHopGroup::EMPTY;
    }
    let weights: Vec<u32> = active.iter().map(|(_, w)| *w).collect();
    let mut wanted: HashMap<u32, usize> = HashMap::new();
    for ((id, _), q) in active.iter().zip(quotas(&weights)) {
        *wanted.entry(*id).or_default() += q;
    }
    let mut table = NextHopGroup::EMPTY;
    let mut free = Vec::new();
    // Keep every bucket whose leg still wants it ...
    for (b, &id) in previous.buckets.iter().enumerate() {
        match wanted.get_mut(&id) {
            Some(left) if *left > 0 => {
                *left -= 1;
                table.buckets[b] = id;
            }
            _ => free.push(b),
        }
    }
    // ... and hand the rest to the legs short of their share, in leg order.
    let mut short = active.iter().flat_map(|(id, _)| {
        let n = std::mem::take(wanted.get_mut(id).expect("wanted"));
        std::iter::repeat_n(*id, n)
    });
    for b in free {
        table.buckets[b] = short.next().expect("quotas sum to BUCKETS");
    }
    table
}

#[derive(Debug)]
struct Group {
    legs: Vec<(u32, u32)>,
    refs: u32,
    written: NextHopGroup,
}

/// The groups in `NH_GROUPS`, shared by every route with the same legs.
#[derive(Debug)]
pub struct GroupTable {
    ids: SlotAllocator,
    by_legs: HashMap<Vec<(u32, u32)>, u32>,
    groups: HashMap<u32, Group>,
}

impl GroupTable {
    pub fn new(capacity: u32, grace: Duration) -> GroupTable {
        // Id 0 is never handed out: an all-zero bucket table leads to next hop 0.
        GroupTable { ids: SlotAllocator::new(1, capacity, grace), by_legs: HashMap::new(), groups: HashMap::new() }
    }

    /// The group for `legs` (next hop id, weight), with one more reference;
    /// `true` when it is new (the caller writes it, and its legs' references
    /// are now the group's).
    pub fn acquire(&mut self, legs: Vec<(u32, u32)>, now: Instant) -> Result<(u32, bool), RibError> {
        if let Some(&id) = self.by_legs.get(&legs) {
            self.groups.get_mut(&id).expect("indexed").refs += 1;
            return Ok((id, false));
        }
        self.ids.reap(now);
        let Some(id) = self.ids.alloc() else { return Err(full(Pool::NhGroups, self.ids.capacity())) };
        self.by_legs.insert(legs.clone(), id);
        self.groups.insert(id, Group { legs, refs: 1, written: NextHopGroup::EMPTY });
        Ok((id, true))
    }

    /// A group of its own for a nexthop group object (not shared by legs,
    /// so that the object can change its members in place), with one
    /// reference: the object's. Its legs' references are now the group's.
    pub fn acquire_private(&mut self, legs: Vec<(u32, u32)>, now: Instant) -> Result<u32, RibError> {
        self.ids.reap(now);
        let Some(id) = self.ids.alloc() else { return Err(full(Pool::NhGroups, self.ids.capacity())) };
        self.groups.insert(id, Group { legs, refs: 1, written: NextHopGroup::EMPTY });
        Ok(id)
    }

    /// A private group's new legs; returns the old ones (the caller releases
    /// their next hops once the group is rewritten).
    pub fn set_legs(&mut self, id: u32, legs: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
        match self.groups.get_mut(&id) {
            Some(g) => std::mem::replace(&mut g.legs, legs),
            None => legs,
        }
    }

    /// One more reference to group `id`, held.
    pub fn retain(&mut self, id: u32) {
        if let Some(g) = self.groups.get_mut(&id) {
            g.refs += 1;
        }
    }

    /// The bucket table last written for group `id`.
    pub fn written_table(&self, id: u32) -> Option<&NextHopGroup> {
        self.groups.get(&id).map(|g| &g.written)
    }

    /// Drops one reference; returns the legs when the group is freed (the
    /// caller releases their next hops).
    pub fn release(&mut self, id: u32, now: Instant) -> Option<Vec<(u32, u32)>> {
        let g = self.groups.get_mut(&id)?;
        g.refs -= 1;
        if g.refs > 0 {
            return None;
        }
        let g = self.groups.remove(&id).expect("present");
        // A private group is not the legs' shared one.
        if self.by_legs.get(&g.legs) == Some(&id) {
            self.by_legs.remove(&g.legs);
        }
        self.ids.release(id, now);
        Some(g.legs)
    }

    /// The bucket table group `id` should hold now, when it differs from
    /// what was written.
    pub fn recompute(&self, id: u32, usable: impl Fn(u32) -> bool) -> Option<NextHopGroup> {
        let g = self.groups.get(&id)?;
        let table = assign_buckets(&g.legs, usable, &g.written);
        (table != g.written).then_some(table)
    }

    pub fn written(&mut self, id: u32, table: NextHopGroup) {
        if let Some(g) = self.groups.get_mut(&id) {
            g.written = table;
        }
    }

    /// Groups with next hop `nh` among their legs.
    pub fn containing(&self, nh: u32) -> Vec<u32> {
        self.groups.iter().filter(|(_, g)| g.legs.iter().any(|(l, _)| *l == nh)).map(|(id, _)| *id).collect()
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The id allocator, for adoption (see `Rib::adopt`).
    pub fn ids_mut(&mut self) -> &mut SlotAllocator {
        &mut self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(t: &NextHopGroup) -> HashMap<u32, usize> {
        let mut c = HashMap::new();
        for b in t.buckets {
            *c.entry(b).or_default() += 1;
        }
        c
    }

    #[test]
    fn buckets_follow_weights() {
        let t = assign_buckets(&[(1, 1), (2, 1)], |_| true, &NextHopGroup::EMPTY);
        assert_eq!(counts(&t), HashMap::from([(1, 32), (2, 32)]));
        let t = assign_buckets(&[(1, 1), (2, 3)], |_| true, &NextHopGroup::EMPTY);
        assert_eq!(counts(&t), HashMap::from([(1, 16), (2, 48)]));
        // A tiny weight still gets a bucket.
        let t = assign_buckets(&[(1, 1), (2, 256)], |_| true, &NextHopGroup::EMPTY);
        assert_eq!(counts(&t), HashMap::from([(1, 1), (2, 63)]));
        let t = assign_buckets(&[(1, 1), (2, 1), (3, 1)], |_| true, &NextHopGroup::EMPTY);
        assert_eq!(counts(&t).values().sum::<usize>(), 64);
        assert!(counts(&t).values().all(|c| *c == 21 || *c == 22));
    }

    #[test]
    fn a_failed_leg_moves_only_its_buckets_and_gets_them_back() {
        let legs = [(1, 1), (2, 1), (3, 1), (4, 1)];
        let all = assign_buckets(&legs, |_| true, &NextHopGroup::EMPTY);
        let without_3 = assign_buckets(&legs, |id| id != 3, &all);
        for b in 0..BUCKETS {
            if all.buckets[b] != 3 {
                assert_eq!(without_3.buckets[b], all.buckets[b], "bucket {b} of a healthy leg moved");
            } else {
                assert_ne!(without_3.buckets[b], 3);
            }
        }
        assert!(!without_3.buckets.contains(&3));
        // Back: leg 3 gets 16 buckets again, the others lose only what it takes.
        let back = assign_buckets(&legs, |_| true, &without_3);
        assert_eq!(counts(&back), HashMap::from([(1, 16), (2, 16), (3, 16), (4, 16)]));
        let moved = (0..BUCKETS).filter(|b| back.buckets[*b] != without_3.buckets[*b]).count();
        assert_eq!(moved, 16);
    }

    #[test]
    fn no_usable_leg_keeps_every_leg() {
        let t = assign_buckets(&[(1, 1), (2, 1)], |_| false, &NextHopGroup::EMPTY);
        assert_eq!(counts(&t), HashMap::from([(1, 32), (2, 32)]));
    }

    #[test]
    fn groups_are_shared_and_freed_with_their_last_route() {
        let now = Instant::now();
        let mut g = GroupTable::new(8, Duration::ZERO);
        let (a, new) = g.acquire(vec![(1, 1), (2, 1)], now).unwrap();
        assert!(new && a != 0);
        assert_eq!(g.acquire(vec![(1, 1), (2, 1)], now).unwrap(), (a, false));
        assert_eq!(g.containing(2), vec![a]);
        assert_eq!(g.release(a, now), None);
        assert_eq!(g.release(a, now), Some(vec![(1, 1), (2, 1)]));
        assert_eq!(g.len(), 0);
    }
}
