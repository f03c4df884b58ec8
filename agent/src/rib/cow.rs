//! Copy-on-write of per-destination metrics (shared/DESIGN.md "Copy-on-write").
//!
//! A destination's private copy lives in one `METRICS_RW` slot and is always
//! "its shared metrics + its overrides": when the shared metrics change, the
//! copy is derived again. Learned values (path MTU) never override a metric
//! the route locks (`RTAX_LOCK`); the operator's do.

use crate::dataplane::map_writer::MapError;
use common::{RouteMetrics, Rtax};
use ipnet::IpNet;
use std::{collections::BTreeMap, net::IpAddr, time::Instant};

/// The longest lifetime an override may have, in seconds: the kernel keeps
/// route expiries in 32-bit seconds (`RTA_EXPIRES`), and no clock overflows.
pub const MAX_EXPIRES_SECS: u64 = i32::MAX as u64;

/// Who wrote an override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `cowroute metrics set`.
    Operator,
    /// Path-MTU learning and other feedback from traffic.
    Learned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    pub value: u32,
    pub source: Source,
    /// `None`: until reset.
    pub expires: Option<Instant>,
}

/// One destination's private metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateCopy {
    /// Its `METRICS_RW` slot.
    pub slot: u32,
    pub overrides: BTreeMap<Rtax, Override>,
    /// What the slot holds.
    pub values: RouteMetrics,
    /// The route the copy was derived from; removing it destroys the copy.
    pub covering: IpNet,
}

/// "Shared metrics + overrides", honouring `RTAX_LOCK` for learned values.
pub fn derive(shared: &RouteMetrics, overrides: &BTreeMap<Rtax, Override>) -> RouteMetrics {
    let mut m = *shared;
    for (metric, o) in overrides {
        if o.source == Source::Learned && shared.is_locked(*metric) {
            continue;
        }
        m.set(*metric, o.value);
    }
    m
}

/// Bit mask (`1 << RTAX_x`) of the metrics that have overrides.
pub fn override_mask(overrides: &BTreeMap<Rtax, Override>) -> u32 {
    overrides.keys().fold(0, |mask, m| mask | m.lock_bit())
}

/// Number of 32-bit words in which two metric sets differ: a one-word change
/// may be written in place (a reader sees the old or the new word), a larger
/// one goes to a fresh slot published with one entry update.
pub fn words_changed(a: &RouteMetrics, b: &RouteMetrics) -> usize {
    a.as_array().iter().zip(b.as_array()).filter(|(x, y)| x != y).count()
}

#[derive(Debug, thiserror::Error)]
pub enum CowError {
    #[error("the private metrics pool is exhausted: all {capacity} METRICS_RW slots are in use or in their grace period; {dest} keeps its shared metrics")]
    PoolExhausted { dest: IpAddr, capacity: u32 },
    #[error("no route to {0}")]
    NoRoute(IpAddr),
    #[error("{0} is a local address of this router")]
    Local(IpAddr),
    #[error("the route to {dest} is of type {kind}: it has no metrics to write")]
    NotUnicast { dest: IpAddr, kind: &'static str },
    #[error("{metric} of {dest} is locked by its route (RTAX_LOCK): not learned")]
    Locked { dest: IpAddr, metric: &'static str },
    #[error("writing the maps failed")]
    Map(#[from] MapError),
}

/// The COW engine's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CowStats {
    /// Private copies created.
    pub cows: u64,
    /// Writes into an existing private copy (in place, one word).
    pub writes_in_place: u64,
    /// Private copies moved to a fresh slot (a change of more than one word).
    pub copies_replaced: u64,
    /// Writes refused because the pool was exhausted.
    pub failures: u64,
    /// Private copies destroyed (reset, expiry, route removal).
    pub destroys: u64,
    /// Overrides that expired.
    pub expirations: u64,
}

// ---- the engine: copy-on-write on the RIB ----------------------------

use super::types::{DestinationMetrics, OverrideInfo};
use super::{host_prefix, named_values, MapSink, Rib, RibError};
use common::{MetricsRef, PrivateMeta, RouteKind};

impl<S: MapSink> Rib<S> {
    /// `cow_metrics`: sets metric `metric` of destination `dest` to `value`
    /// in its private copy, creating the copy (and its host entry) first.
    /// On error nothing has changed and `dest` keeps its shared metrics.
    pub fn cow_metrics(
        &mut self,
        dest: IpAddr,
        metric: Rtax,
        value: u32,
        source: Source,
        expires: Option<Instant>,
        now: Instant,
    ) -> Result<(), CowError> {
        self.write_override(dest, metric, Override { value, source, expires }, now)?;
        self.record_private(dest, now);
        Ok(())
    }

    /// Keeps `PRIVATE_META` in step with `dest`'s copy (or its absence).
    /// A failed write costs only the copy's survival of a restart: logged.
    pub(super) fn record_private(&mut self, dest: IpAddr, now: Instant) {
        let result = match self.private.get(&dest) {
            Some(p) => {
                let wall = std::time::SystemTime::now();
                let mut meta = PrivateMeta::EMPTY;
                for (m, o) in &p.overrides {
                    meta.overridden |= m.lock_bit();
                    if o.source == Source::Learned {
                        meta.learned |= m.lock_bit();
                    }
                    if let Some(t) = o.expires {
                        let at = wall.checked_add(t.saturating_duration_since(now)).unwrap_or(wall);
                        meta.set_expiry(*m, at.duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs().max(1)));
                    }
                }
                self.sink.put_private_meta(dest, &meta)
            }
            None => self.sink.delete_private_meta(dest),
        };
        if let Err(e) = result {
            tracing::warn!(%dest, error = %crate::error_chain(&e), "private copy not recorded for restarts");
        }
    }

    /// The copy-on-write itself (see `cow_metrics`).
    pub(super) fn write_override(&mut self, dest: IpAddr, metric: Rtax, ov: Override, now: Instant) -> Result<(), CowError> {
        let Override { value, source, expires } = ov;
        let base = self.base(dest, true).ok_or(CowError::NoRoute(dest))?;
        match base.kind {
            RouteKind::Unicast => {}
            RouteKind::Local => return Err(CowError::Local(dest)),
            other => return Err(CowError::NotUnicast { dest, kind: other.name() }),
        }
        if source == Source::Learned && base.shared.is_locked(metric) {
            return Err(CowError::Locked { dest, metric: metric.name() });
        }
        let ov = Override { value, source, expires };
        if let Some(p) = self.private.get(&dest) {
            let mut overrides = p.overrides.clone();
            overrides.insert(metric, ov);
            let values = derive(&base.shared, &overrides);
            let (slot, old_values) = (p.slot, p.values);
            if words_changed(&old_values, &values) <= 1 {
                // One word: readers see the old value or the new one.
                self.sink.put_rw_metrics(slot, &values)?;
                let p = self.private.get_mut(&dest).expect("present");
                p.overrides = overrides;
                p.values = values;
                self.cow_stats.writes_in_place += 1;
                return Ok(());
            }
            return self.replace_copy(dest, overrides, values, base.covering, now);
        }
        self.rw.reap(now);
        let Some(slot) = self.rw.alloc() else {
            self.cow_stats.failures += 1;
            return Err(CowError::PoolExhausted { dest, capacity: self.rw.capacity() });
        };
        let overrides = BTreeMap::from([(metric, ov)]);
        let values = derive(&base.shared, &overrides);
        // Fill the slot completely before anything refers to it ...
        if let Err(e) = self.sink.put_rw_metrics(slot, &values) {
            self.rw.release(slot, now);
            return Err(e.into());
        }
        self.private.insert(dest, PrivateCopy { slot, overrides, values, covering: base.covering });
        // ... then publish it with one entry update.
        if let Err(e) = self.publish(&host_prefix(dest)) {
            self.private.remove(&dest);
            self.rw.release(slot, now);
            return Err(e.into());
        }
        self.cow_stats.cows += 1;
        Ok(())
    }

    /// Moves `dest`'s copy to a fresh slot holding `values`: fill, publish,
    /// then quarantine the old slot. Without a free slot, the copy is
    /// destroyed instead (the destination falls back to shared metrics).
    pub(super) fn replace_copy(
        &mut self,
        dest: IpAddr,
        overrides: BTreeMap<Rtax, Override>,
        values: RouteMetrics,
        covering: IpNet,
        now: Instant,
    ) -> Result<(), CowError> {
        self.rw.reap(now);
        let Some(slot) = self.rw.alloc() else {
            self.cow_stats.failures += 1;
            return Err(CowError::PoolExhausted { dest, capacity: self.rw.capacity() });
        };
        if let Err(e) = self.sink.put_rw_metrics(slot, &values) {
            self.rw.release(slot, now);
            return Err(e.into());
        }
        let old = self.private.insert(dest, PrivateCopy { slot, overrides, values, covering }).expect("had a copy");
        self.publish(&host_prefix(dest))?;
        self.rw.release(old.slot, now);
        self.cow_stats.copies_replaced += 1;
        Ok(())
    }

    /// Destroys `dest`'s private copy: unpublish first (restore the shared
    /// reference, or delete the clone), then quarantine the slot.
    pub fn reset_metrics(&mut self, dest: IpAddr, now: Instant) -> Result<bool, RibError> {
        let Some(p) = self.private.remove(&dest) else { return Ok(false) };
        self.publish(&host_prefix(dest))?;
        self.rw.release(p.slot, now);
        self.cow_stats.destroys += 1;
        self.record_private(dest, now);
        Ok(true)
    }

    /// Brings `dest`'s private copy in line with its base after a route
    /// change: destroyed when its covering route is gone or no longer
    /// unicast, else derived again from the (new) shared metrics.
    pub(super) fn rederive(&mut self, dest: IpAddr, now: Instant) -> Result<(), RibError> {
        let Some(p) = self.private.get(&dest).cloned() else { return Ok(self.publish(&host_prefix(dest))?) };
        let base = self.base(dest, true).filter(|b| b.kind == RouteKind::Unicast);
        let base = match base {
            Some(b) if self.routes.contains_key(&p.covering) || b.covering == p.covering => b,
            _ => return self.reset_metrics(dest, now).map(|_| ()),
        };
        let values = derive(&base.shared, &p.overrides);
        if values == p.values {
            if base.covering != p.covering {
                self.private.get_mut(&dest).expect("present").covering = base.covering;
            }
            return Ok(self.publish(&host_prefix(dest))?);
        }
        if words_changed(&p.values, &values) <= 1 {
            self.sink.put_rw_metrics(p.slot, &values)?;
            let c = self.private.get_mut(&dest).expect("present");
            c.values = values;
            c.covering = base.covering;
            return Ok(self.publish(&host_prefix(dest))?);
        }
        match self.replace_copy(dest, p.overrides, values, base.covering, now) {
            Ok(()) => Ok(()),
            Err(CowError::PoolExhausted { .. }) => {
                tracing::warn!(%dest, "no METRICS_RW slot to derive the private copy again; dropping it");
                self.reset_metrics(dest, now).map(|_| ())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes overrides whose time has come; a copy without overrides is destroyed.
    pub fn expire(&mut self, now: Instant) -> Result<usize, RibError> {
        let due: Vec<IpAddr> = self
            .private
            .iter()
            .filter(|(_, p)| p.overrides.values().any(|o| o.expires.is_some_and(|t| t <= now)))
            .map(|(a, _)| *a)
            .collect();
        let mut expired = 0;
        for dest in due {
            let p = self.private.get_mut(&dest).expect("present");
            let before = p.overrides.len();
            p.overrides.retain(|_, o| o.expires.is_none_or(|t| t > now));
            expired += before - p.overrides.len();
            self.cow_stats.expirations += (before - p.overrides.len()) as u64;
            if p.overrides.is_empty() {
                self.reset_metrics(dest, now)?;
            } else {
                self.rederive(dest, now)?;
                self.record_private(dest, now);
            }
        }
        Ok(expired)
    }

    /// What `dest` forwards with: its reference, values, covering route and overrides.
    pub fn destination_metrics(&self, dest: IpAddr, now: Instant) -> Option<DestinationMetrics> {
        if let Some(p) = self.private.get(&dest) {
            let overrides = p
                .overrides
                .iter()
                .map(|(m, o)| OverrideInfo {
                    metric: m.name(),
                    value: o.value,
                    source: o.source,
                    expires_in: o.expires.map(|t| t.saturating_duration_since(now).as_secs()),
                })
                .collect();
            return Some(DestinationMetrics {
                destination: dest,
                reference: MetricsRef::private(p.slot).to_string(),
                values: named_values(&p.values),
                covering: Some(p.covering.to_string()),
                override_mask: override_mask(&p.overrides),
                overrides,
            });
        }
        let base = self.base(dest, true)?;
        Some(DestinationMetrics {
            destination: dest,
            reference: base.metrics_ref.to_string(),
            values: named_values(&base.shared),
            covering: Some(base.covering.to_string()),
            override_mask: 0,
            overrides: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ov(value: u32, source: Source) -> Override {
        Override { value, source, expires: None }
    }

    #[test]
    fn learned_values_respect_the_lock_operator_values_do_not() {
        let mut shared = RouteMetrics::DEFAULT;
        shared.set(Rtax::Mtu, 1500);
        shared.lock = Rtax::Mtu.lock_bit();
        let learned = BTreeMap::from([(Rtax::Mtu, ov(1300, Source::Learned)), (Rtax::Advmss, ov(1200, Source::Learned))]);
        let d = derive(&shared, &learned);
        assert_eq!((d.mtu, d.advmss), (1500, 1200));
        let operator = BTreeMap::from([(Rtax::Mtu, ov(1300, Source::Operator))]);
        assert_eq!(derive(&shared, &operator).mtu, 1300);
        assert_eq!(override_mask(&learned), (1 << 2) | (1 << 8));
    }

    #[test]
    fn words_changed_counts_differing_metrics() {
        let a = RouteMetrics::DEFAULT;
        let mut b = a;
        assert_eq!(words_changed(&a, &b), 0);
        b.mtu = 1;
        assert_eq!(words_changed(&a, &b), 1);
        b.advmss = 1;
        assert_eq!(words_changed(&a, &b), 2);
    }
}
