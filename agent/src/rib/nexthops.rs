//! Next hops and ECMP groups: one `NEXTHOPS` entry per (device, gateway),
//! refcounted and shared by every route and neighbour host that uses it, and
//! one `NH_GROUPS` entry per set of legs. An entry is recomputed from its
//! link and neighbour whenever either changes.

use super::{MapSink, NextHopKey, Rib, RibError};
use crate::{
    dataplane::slots::SlotAllocator,
    rib::{
        ecmp::Leg,
        error::{full, Pool},
    },
};
use common::NextHop;
// foldhash: every route acquires its next hop.
use hashbrown::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct NextHopTable {
    /// Id 0 is never handed out: routes without a next hop point there, and
    /// it stays all-zero (not usable).
    pub(super) ids: SlotAllocator,
    pub(super) by_key: HashMap<NextHopKey, u32>,
    /// key, refcount, what was last written.
    pub(super) entries: HashMap<u32, (NextHopKey, u32, NextHop)>,
}

impl NextHopTable {
    pub(super) fn new(capacity: u32, grace: Duration) -> Self {
        NextHopTable { ids: SlotAllocator::new(1, capacity, grace), by_key: HashMap::new(), entries: HashMap::new() }
    }

    /// The id for `key`, with one more reference; `true` when newly allocated.
    pub(super) fn acquire(&mut self, key: NextHopKey, now: Instant) -> Result<(u32, bool), RibError> {
        if let Some(&id) = self.by_key.get(&key) {
            self.entries.get_mut(&id).expect("indexed").1 += 1;
            return Ok((id, false));
        }
        self.ids.reap(now);
        let Some(id) = self.ids.alloc() else { return Err(full(Pool::NextHops, self.ids.capacity())) };
        self.by_key.insert(key, id);
        self.entries.insert(id, (key, 1, NextHop::default()));
        Ok((id, true))
    }

    /// A next hop of its own for a nexthop object (not shared by key, so
    /// that the object can change its device and gateway in place), with
    /// one reference: the object's.
    pub(super) fn acquire_private(&mut self, key: NextHopKey, now: Instant) -> Result<u32, RibError> {
        self.ids.reap(now);
        let Some(id) = self.ids.alloc() else { return Err(full(Pool::NextHops, self.ids.capacity())) };
        self.entries.insert(id, (key, 1, NextHop::default()));
        Ok(id)
    }

    /// A private next hop's new device and gateway (written by the caller).
    pub(super) fn rekey(&mut self, id: u32, key: NextHopKey) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.0 = key;
        }
    }

    /// One more reference to `id`, held.
    pub(super) fn retain(&mut self, id: u32) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.1 += 1;
        }
    }

    pub(super) fn release(&mut self, id: u32, now: Instant) {
        if id == 0 {
            return;
        }
        let Some(entry) = self.entries.get_mut(&id) else { return };
        entry.1 -= 1;
        if entry.1 == 0 {
            let (key, _, _) = self.entries.remove(&id).expect("present");
            // A private next hop is not the key's shared one.
            if self.by_key.get(&key) == Some(&id) {
                self.by_key.remove(&key);
            }
            self.ids.release(id, now);
        }
    }
}

impl<S: MapSink> Rib<S> {
    pub(super) fn acquire_nexthop(&mut self, key: NextHopKey, now: Instant) -> Result<u32, RibError> {
        let (id, new) = self.nexthops.acquire(key, now)?;
        if new {
            if let Err(e) = self.write_nexthop(id) {
                self.nexthops.release(id, now);
                return Err(e);
            }
        }
        Ok(id)
    }

    /// Recomputes next hop `id` from its link and neighbour and writes it when changed.
    pub(super) fn write_nexthop(&mut self, id: u32) -> Result<(), RibError> {
        let Some(&(key, _, old)) = self.nexthops.entries.get(&id) else { return Ok(()) };
        let nh = self.nexthop_for(key);
        if nh.ifindex != 0 && self.ports.insert(nh.ifindex) {
            if let Err(e) = self.sink.add_port(nh.ifindex) {
                self.ports.remove(&nh.ifindex);
                return Err(e.into());
            }
        }
        if nh != old || old == NextHop::default() {
            self.sink.put_nexthop(id, &nh)?;
            self.nexthops.entries.get_mut(&id).expect("present").2 = nh;
            if nh.is_usable() != old.is_usable() {
                // ECMP groups with this leg rebalance over their usable legs.
                for group in self.groups.containing(id) {
                    self.write_group(group)?;
                }
            }
        }
        Ok(())
    }

    /// Next hop `key` as the links and neighbours make it now.
    pub(super) fn nexthop_for(&self, key: NextHopKey) -> NextHop {
        let mut nh = NextHop::default();
        if let Some(link) = self.links.get(&key.ifindex) {
            nh.mtu = link.mtu;
            nh.smac = link.mac;
            nh.ifindex = link.index;
            let mut up = link.up;
            if let Some((parent, vid)) = link.vlan {
                nh.ifindex = parent;
                nh.vlan = vid;
                up &= self.links.get(&parent).is_some_and(|p| p.up);
            }
            if up {
                nh.flags |= NextHop::LINK_UP;
            }
        }
        if let Some(Some(mac)) = key.gateway.and_then(|g| self.neighbours.get(&(g, key.ifindex))) {
            nh.dmac = *mac;
            nh.flags |= NextHop::RESOLVED;
        }
        nh
    }

    /// An ECMP group for `legs`: a next hop per leg, then the group (shared
    /// with routes of the same legs). On error nothing is held.
    pub(super) fn acquire_group(&mut self, legs: &[Leg], now: Instant) -> Result<u32, RibError> {
        let mut ids: Vec<(u32, u32)> = Vec::with_capacity(legs.len());
        for leg in legs {
            match self.acquire_nexthop(NextHopKey { ifindex: leg.dev, gateway: leg.via }, now) {
                Ok(id) => ids.push((id, leg.weight)),
                Err(e) => {
                    ids.iter().for_each(|(id, _)| self.nexthops.release(*id, now));
                    return Err(e);
                }
            }
        }
        let (group, new) = match self.groups.acquire(ids.clone(), now) {
            Ok(g) => g,
            Err(e) => {
                ids.iter().for_each(|(id, _)| self.nexthops.release(*id, now));
                return Err(e);
            }
        };
        if !new {
            // The existing group holds its legs already.
            ids.iter().for_each(|(id, _)| self.nexthops.release(*id, now));
        } else if let Err(e) = self.write_group(group) {
            self.release_group(group, now);
            return Err(e);
        }
        Ok(group)
    }

    pub(super) fn release_group(&mut self, group: u32, now: Instant) {
        for (id, _) in self.groups.release(group, now).unwrap_or_default() {
            self.nexthops.release(id, now);
        }
    }

    /// Writes group `id`'s buckets when its legs' usability moved them.
    pub(super) fn write_group(&mut self, id: u32) -> Result<(), RibError> {
        let usable = |nh: u32| self.nexthops.entries.get(&nh).is_some_and(|(_, _, n)| n.is_usable());
        let Some(table) = self.groups.recompute(id, usable) else { return Ok(()) };
        self.sink.put_group(id, &table)?;
        self.groups.written(id, table);
        Ok(())
    }

    pub(super) fn refresh_nexthops(&mut self, wanted: impl Fn(&NextHopKey) -> bool) -> Result<(), RibError> {
        let ids: Vec<u32> = self.nexthops.entries.iter().filter(|(_, (k, _, _))| wanted(k)).map(|(id, _)| *id).collect();
        for id in ids {
            self.write_nexthop(id)?;
        }
        Ok(())
    }
}
