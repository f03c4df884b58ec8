//! A route's metrics as `show routes` prints them: the values inline, as
//! `ip route` prints them (`mtu lock 1300 advmss 1260`), and where they come
//! from (the default slot, a shared read-only slot, the destination's
//! private copy with what overrides it and until when). Read from the pinned
//! maps, so it works whether or not the agent runs.

use crate::dataplane::map_writer::{meta_key, open_pinned};
use anyhow::Result;
use aya::maps::{Array, HashMap, MapData};
use common::{maps, MetricsRef, PrivateMeta, RouteMetrics, Rtax};
use std::{collections::BTreeMap, net::IpAddr, path::Path};

/// Where a route's metrics come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MetricsInfo {
    /// `default` (slot ro:0, nothing set), `shared` (a read-only slot other
    /// routes with the same set use too), `private` (this destination's
    /// copy-on-write slot), or `unreadable` (a reference past its pool).
    pub origin: &'static str,
    /// The metrics set, by `ip route`'s names (the lock mask apart).
    pub values: BTreeMap<&'static str, u32>,
    /// The metrics locked (`ip route ... mtu lock N`).
    pub locked: Vec<&'static str>,
    /// A private copy's overrides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OverrideRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OverrideRow {
    pub metric: &'static str,
    /// `operator` (`cowroute metrics set`) or `learned` (path MTU).
    pub by: &'static str,
    /// Seconds left; absent: until reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

impl MetricsInfo {
    /// `ip route`'s rendering of the values (`print_rta_metrics`), then the
    /// origin and any overrides.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Rtax::ALL
            .iter()
            .filter_map(|m| self.values.get(m.name()).map(|v| ip_route_metric(*m, *v, self.locked.contains(&m.name()))))
            .collect();
        let overrides: Vec<String> = self
            .overrides
            .iter()
            .map(|o| match o.expires_in {
                Some(s) => format!("{} {}, expires in {s} s", o.metric, o.by),
                None => format!("{} {}", o.metric, o.by),
            })
            .collect();
        parts.push(match overrides.is_empty() {
            true => format!("({})", self.origin),
            false => format!("({}: {})", self.origin, overrides.join("; ")),
        });
        parts.join(" ")
    }
}

/// One metric as `ip route` prints it: the name, `lock` when locked, the
/// value (RTT in ms from its 1/8 ms units, RTT variance from 1/4 ms,
/// `rto_min` in ms, features in hex).
pub fn ip_route_metric(m: Rtax, value: u32, locked: bool) -> String {
    let value = match m {
        Rtax::Rtt => format!("{}ms", value / 8),
        Rtax::Rttvar => format!("{}ms", value / 4),
        Rtax::RtoMin => format!("{value}ms"),
        Rtax::Features => format!("{value:#x}"),
        _ => value.to_string(),
    };
    match locked {
        true => format!("{} lock {value}", m.name()),
        false => format!("{} {value}", m.name()),
    }
}

/// The pinned metric pools and the private copies' records.
pub struct MetricsView {
    ro: Array<MapData, RouteMetrics>,
    rw: Array<MapData, RouteMetrics>,
    meta: HashMap<MapData, [u8; 16], PrivateMeta>,
    /// Shared slots already read (few, and many routes point at each).
    shared: std::collections::HashMap<u32, Option<RouteMetrics>>,
}

impl MetricsView {
    pub fn open(pin_dir: &Path) -> Result<MetricsView> {
        Ok(MetricsView {
            ro: open_pinned(pin_dir, maps::METRICS_RO)?,
            rw: open_pinned(pin_dir, maps::METRICS_RW)?,
            meta: open_pinned(pin_dir, maps::PRIVATE_META)?,
            shared: Default::default(),
        })
    }

    /// What `reference` holds for the route to `dest`, at `now_epoch`
    /// (seconds since the Unix epoch, the records' clock).
    pub fn info(&mut self, reference: MetricsRef, dest: IpAddr, now_epoch: u64) -> MetricsInfo {
        let slot = reference.slot();
        let private = !reference.is_read_only();
        let values = match private {
            true => self.rw.get(&slot, 0).ok(),
            false => *self.shared.entry(slot).or_insert_with(|| self.ro.get(&slot, 0).ok()),
        };
        let Some(values) = values else {
            return MetricsInfo { origin: "unreadable", values: BTreeMap::new(), locked: Vec::new(), overrides: Vec::new() };
        };
        let origin = match (private, slot) {
            (true, _) => "private",
            (false, 0) => "default",
            (false, _) => "shared",
        };
        let overrides = match private {
            true => self.meta.get(&meta_key(dest), 0).map(|meta| override_rows(&meta, now_epoch)).unwrap_or_default(),
            false => Vec::new(),
        };
        let set = Rtax::ALL.iter().filter(|m| **m != Rtax::Lock);
        MetricsInfo {
            origin,
            values: set.clone().filter(|m| values.get(**m) != 0).map(|m| (m.name(), values.get(*m))).collect(),
            locked: set.filter(|m| values.is_locked(**m)).map(|m| m.name()).collect(),
            overrides,
        }
    }
}

fn override_rows(meta: &PrivateMeta, now_epoch: u64) -> Vec<OverrideRow> {
    Rtax::ALL
        .iter()
        .filter(|m| meta.overridden & m.lock_bit() != 0)
        .map(|m| OverrideRow {
            metric: m.name(),
            by: if meta.learned & m.lock_bit() != 0 { "learned" } else { "operator" },
            expires_in: match meta.expiry(*m) {
                0 => None,
                t => Some(t.saturating_sub(now_epoch)),
            },
        })
        .collect()
}

/// Seconds since the Unix epoch, the clock of `PRIVATE_META`'s expiries.
pub fn now_epoch() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_print_as_ip_route_prints_them() {
        assert_eq!(ip_route_metric(Rtax::Mtu, 1300, true), "mtu lock 1300");
        assert_eq!(ip_route_metric(Rtax::Advmss, 1260, false), "advmss 1260");
        assert_eq!(ip_route_metric(Rtax::Rtt, 80, false), "rtt 10ms", "1/8 ms units");
        assert_eq!(ip_route_metric(Rtax::Rttvar, 20, false), "rttvar 5ms", "1/4 ms units");
        assert_eq!(ip_route_metric(Rtax::Features, 1, false), "features 0x1");
        let info = MetricsInfo {
            origin: "private",
            values: [("mtu", 1300), ("advmss", 1260)].into_iter().collect(),
            locked: vec!["mtu"],
            overrides: vec![
                OverrideRow { metric: "mtu", by: "learned", expires_in: Some(583) },
                OverrideRow { metric: "advmss", by: "operator", expires_in: None },
            ],
        };
        assert_eq!(info.summary(), "mtu lock 1300 advmss 1260 (private: mtu learned, expires in 583 s; advmss operator)");
    }

    #[test]
    fn overrides_are_named_by_who_made_them_and_when_they_end() {
        let mut meta = PrivateMeta::EMPTY;
        meta.overridden = Rtax::Mtu.lock_bit() | Rtax::Hoplimit.lock_bit();
        meta.learned = Rtax::Mtu.lock_bit();
        meta.expires[Rtax::Mtu.index()] = 1_000_600;
        let rows = override_rows(&meta, 1_000_000);
        assert_eq!(
            rows,
            vec![
                OverrideRow { metric: "mtu", by: "learned", expires_in: Some(600) },
                OverrideRow { metric: "hoplimit", by: "operator", expires_in: None },
            ]
        );
    }
}
