//! Taking over an earlier agent's pinned maps (adopt, then sweep), and
//! resynchronising with a fresh kernel dump after a netlink overrun.

use super::{MapSink, Rib, RibError};
use crate::rib::{cow::Source, types::Event, Adopted, AdoptionReport, ResyncReport};
use common::Rtax;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

impl<S: MapSink> Rib<S> {
    /// Takes over an earlier agent's maps: its slots stay untouched (every
    /// entry it published keeps pointing at valid contents) while this agent
    /// publishes its own state, each entry replaced in one update. Call
    /// before programming; then [`Rib::sweep_adopted`].
    pub fn adopt(&mut self, old: Adopted) {
        old.metrics_ro.iter().for_each(|s| self.metrics.reserve(*s));
        old.metrics_rw.iter().for_each(|s| self.rw.reserve(*s));
        old.nexthops.iter().filter(|id| **id != 0).for_each(|id| self.nexthops.ids.reserve(*id));
        old.groups.iter().filter(|id| **id != 0).for_each(|id| self.groups.ids_mut().reserve(*id));
        self.adopted = old.prefixes;
        self.adopted_tables = old.table_prefixes;
        self.adopted_private = old.private;
        self.adopt_ingress_ports(old.ingress_ports);
    }

    /// After the first full programming: every key the earlier agent
    /// published is published again from this agent's state (so none still
    /// refers to an earlier slot), or deleted; then its slots are released
    /// into quarantine.
    pub fn sweep_adopted(&mut self, now: Instant) -> Result<AdoptionReport, RibError> {
        let mut report = AdoptionReport::default();
        // The earlier private copies first, so that their host entries are
        // published with them below.
        let wall = std::time::SystemTime::now();
        for (dest, values, meta) in std::mem::take(&mut self.adopted_private) {
            let mut kept = false;
            for m in Rtax::ALL {
                if meta.overridden & m.lock_bit() == 0 {
                    continue;
                }
                let source = if meta.learned & m.lock_bit() != 0 { Source::Learned } else { Source::Operator };
                let expires = match meta.expiry(m) {
                    0 => None,
                    at => match std::time::UNIX_EPOCH.checked_add(Duration::from_secs(at)).and_then(|t| t.duration_since(wall).ok()) {
                        Some(left) => Some(now + left),
                        None => continue, // expired while no agent ran
                    },
                };
                match self.cow_metrics(dest, m, values.get(m), source, expires, now) {
                    Ok(()) => kept = true,
                    Err(e) => {
                        tracing::info!(%dest, metric = m.name(), error = %crate::error_chain(&e), "an earlier private override not kept")
                    }
                }
            }
            if !kept {
                let _ = self.sink.delete_private_meta(dest);
            }
            report.private_kept += usize::from(kept);
        }
        for prefix in std::mem::take(&mut self.adopted) {
            if self.publish_entry(&prefix)? {
                report.routes_kept += 1;
            } else {
                report.routes_removed += 1;
            }
        }
        for key in std::mem::take(&mut self.adopted_tables) {
            if self.publish_table_entry(key)? {
                report.routes_kept += 1;
            } else {
                report.routes_removed += 1;
            }
        }
        self.sweep_adopted_ingress()?;
        report.slots_released = self.metrics.release_reserved(now)
            + self.rw.release_reserved(now)
            + self.nexthops.ids.release_reserved(now)
            + self.groups.ids_mut().release_reserved(now);
        Ok(report)
    }

    /// Makes links, addresses and neighbours equal to `dump` (a fresh dump
    /// after an overrun): what changed is applied, what is gone is removed.
    /// Routes are the FIB mirror's (see `fib_mirror::KernelFib::resync`).
    pub fn resync(&mut self, dump: Vec<Event>, now: Instant) -> Result<ResyncReport, RibError> {
        let mut report = ResyncReport::default();
        let (mut links, mut addrs, mut neighbours) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let mut broadcasts: BTreeMap<IpAddr, BTreeSet<(u32, IpAddr)>> = BTreeMap::new();
        for ev in dump {
            match ev {
                Event::Link(l) => {
                    links.insert(l.index, l);
                }
                Event::Address { index, addr, present: true } => {
                    addrs.entry(addr).or_insert_with(BTreeSet::new).insert(index);
                }
                Event::Broadcast { index, addr, of, present: true } => {
                    broadcasts.entry(addr).or_default().insert((index, of));
                }
                Event::Neighbour { index, addr, mac } => {
                    neighbours.insert((index, addr), mac);
                }
                _ => {}
            }
        }
        let gone: Vec<u32> = self.links.keys().filter(|i| !links.contains_key(i)).copied().collect();
        for index in gone {
            self.apply(Event::LinkGone(index), now)?;
            report.links += 1;
        }
        for (index, link) in links {
            if self.links.get(&index) != Some(&link) {
                self.link_changed(link)?;
                report.links += 1;
            }
        }
        let all: BTreeSet<IpAddr> = self.local_addrs.keys().chain(addrs.keys()).copied().collect();
        for addr in all {
            let on = addrs.get(&addr).cloned().unwrap_or_default();
            if self.local_addrs.get(&addr).cloned().unwrap_or_default() != on {
                self.set_local_address(addr, on, now)?;
                report.addresses += 1;
            }
        }
        let all: BTreeSet<IpAddr> = self.broadcasts.keys().chain(broadcasts.keys()).copied().collect();
        for addr in all {
            let by = broadcasts.get(&addr).cloned().unwrap_or_default();
            if self.broadcasts.get(&addr).cloned().unwrap_or_default() != by {
                self.set_broadcast(addr, by, now)?;
                report.addresses += 1;
            }
        }
        let known: Vec<(u32, IpAddr)> = self.neighbours.keys().map(|&(a, i)| (i, a)).collect();
        for key in known {
            if !neighbours.contains_key(&key) && !self.static_neighbours.contains(&key) {
                self.neighbour_changed(key.0, key.1, None, now)?;
                report.neighbours += 1;
            }
        }
        for ((index, addr), mac) in neighbours {
            if self.static_neighbours.contains(&(index, addr)) {
                continue;
            }
            if self.neighbours.get(&(addr, index)) != Some(&mac) {
                self.neighbour_changed(index, addr, Some(mac), now)?;
                report.neighbours += 1;
            }
        }
        Ok(report)
    }
}
