//! Copy-on-write of per-destination metrics (shared/DESIGN.md "Copy-on-write").
//!
//! A destination's private copy lives in one `METRICS_RW` slot and is always
//! "its shared metrics + its overrides": when the shared metrics change, the
//! copy is derived again. Learned values (path MTU) never override a metric
//! the route locks (`RTAX_LOCK`); the operator's do.

use common::{RouteMetrics, Rtax};
use ipnet::IpNet;
use std::{collections::BTreeMap, net::IpAddr, time::Instant};

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    #[error("writing the maps failed: {0}")]
    Map(String),
}

/// The COW engine's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
