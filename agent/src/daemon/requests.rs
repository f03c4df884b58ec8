//! Control requests (from the CLI over the control socket, and Prometheus),
//! answered on the daemon's loop: the one writer of the maps.

use super::Daemon;
use crate::rib::{MapSink, Rib, RibError};
use crate::{
    dataplane::{
        trie_batch::Refuse,
        trie_queue::{TrieFaults, TURN_QUEUES_WITH_GRACE},
    },
    operator::control::{self, ControlError, Request, Response},
    operator::stats::{self, AgentStats},
    rib::cow::{CowError, Source},
};
use anyhow::Result;
use std::time::{Duration, Instant};

/// Why a metrics request was refused: its fields, the COW engine, or the
/// RIB behind it. The client reads the message.
#[derive(Debug, thiserror::Error)]
enum MetricsRequestError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Cow(#[from] CowError),
    #[error(transparent)]
    Rib(#[from] RibError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("not a metrics request: {0}")]
    NotMetrics(String),
}

impl Daemon {
    pub(super) fn handle(&mut self, req: Request) -> Response {
        match self.answer(req) {
            Ok(v) => Response::ok(v),
            Err(e) => Response::error(format!("{e:#}")),
        }
    }

    fn answer(&mut self, req: Request) -> Result<serde_json::Value> {
        Ok(match req {
            Request::MetricsSet { .. } | Request::MetricsReset { .. } | Request::MetricsShow { .. } => {
                metrics_request(&mut self.rib, req, self.opts.default_expires, Instant::now())?
            }
            Request::Stats => serde_json::to_value(self.stats()?)?,
            Request::NexthopObjects => serde_json::to_value(crate::operator::show::nexthop_object_rows(&self.rib))?,
            Request::Rules => serde_json::to_value(crate::operator::show_rules::rule_rows(self.policy.view()))?,
            Request::Fault { what } => {
                if !control::fault_injected(control::FAULT_REQUESTS) {
                    anyhow::bail!(
                        "fault injection is off (start the agent with {}={} to test crashes and refusals)",
                        control::FAULT_INJECTION_ENV,
                        control::FAULT_REQUESTS
                    );
                }
                match what.as_str() {
                    // What a bug would do: the process ends at once (panic = "abort").
                    "panic" => panic!("fault injection: a panic on the daemon's loop"),
                    control::FAULT_REFUSE_TRIE_TURN => {
                        anyhow::ensure!(
                            self.opts.grace >= TURN_QUEUES_WITH_GRACE,
                            "turns queue no route writes with --grace-ms under {}: nothing to refuse",
                            TURN_QUEUES_WITH_GRACE.as_millis()
                        );
                        let faults = TrieFaults { bulk: None, turn: Some(Refuse::Every) };
                        self.rib.sink_mut().arm_trie_faults(faults);
                        serde_json::Value::Null
                    }
                    other => anyhow::bail!("unknown fault {other:?} (one of: panic, {})", control::FAULT_REFUSE_TRIE_TURN),
                }
            }
        })
    }

    /// Everything the agent counts, in the one typed shape that the control
    /// socket, `show stats` and Prometheus all render.
    pub(super) fn stats(&self) -> Result<AgentStats> {
        Ok(AgentStats {
            rib: self.rib.summary(),
            dir24: self.rib.sink().dir24_stats(),
            trie_writes: self.rib.sink().trie_write_stats(),
            netlink: self.netlink.clone(),
            packets: stats::read_counters(&self.counters)?,
            slow_path: self.slow.stats.snapshot(self.slow_path_mode),
            unserved: stats::read_unserved(&self.unserved)?,
            pmtu: self.pmtu.stats,
            neighbour_queue: self.waiting.stats,
            degraded: self.degraded.clone(),
            fpm: self.feed.fpm_stats(),
            compactions: self.compaction.runs,
        })
    }
}

/// The metrics requests, on any RIB: outside input (the control socket's
/// lines) meets the COW engine here, so this is what the fuzz test drives.
fn metrics_request<S: MapSink>(
    rib: &mut Rib<S>,
    req: Request,
    default_expires: Duration,
    now: Instant,
) -> Result<serde_json::Value, MetricsRequestError> {
    Ok(match req {
        Request::MetricsSet { dest, metric, value, expires } => {
            let dest = control::parse_dest(&dest)?;
            let (metric, value) = control::parse_metric_value(&metric, value)?;
            let expires = control::parse_expires(expires, default_expires, now)?;
            rib.cow_metrics(dest, metric, value, Source::Operator, expires, now)?;
            serde_json::to_value(rib.destination_metrics(dest, now))?
        }
        Request::MetricsReset { dest } => {
            let dest = control::parse_dest(&dest)?;
            serde_json::json!({ "reset": rib.reset_metrics(dest, now)? })
        }
        Request::MetricsShow { dest: Some(dest) } => {
            let dest = control::parse_dest(&dest)?;
            let m = rib.destination_metrics(dest, now).ok_or(CowError::NoRoute(dest))?;
            serde_json::to_value(vec![m])?
        }
        Request::MetricsShow { dest: None } => {
            let all: Vec<_> = rib.private_copies().filter_map(|(d, _)| rib.destination_metrics(*d, now)).collect();
            serde_json::to_value(all)?
        }
        other => return Err(MetricsRequestError::NotMetrics(format!("{other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dataplane::map_writer::memory::MemoryMaps,
        rib::{
            types::{Event, Link},
            Capacities, RouteInput,
        },
    };
    use common::{RouteKind, RouteMetrics, Rtax};
    use proptest::prelude::*;

    fn dest() -> impl Strategy<Value = String> {
        prop_oneof![(0u8..4).prop_map(|h| format!("10.2.0.{h}")), Just("fd00:2::9".to_string()), Just("192.0.2.1".to_string()), ".{0,40}",]
    }

    fn request() -> impl Strategy<Value = String> {
        let metric = prop_oneof![proptest::sample::select(Rtax::ALL.iter().map(|m| m.name().to_string()).collect::<Vec<_>>()), ".{0,12}"];
        prop_oneof![
            (dest(), metric, any::<u64>(), proptest::option::of(any::<u64>())).prop_map(|(dest, metric, value, expires)| {
                serde_json::to_string(&Request::MetricsSet { dest, metric, value, expires }).unwrap()
            }),
            dest().prop_map(|dest| serde_json::to_string(&Request::MetricsReset { dest }).unwrap()),
            proptest::option::of(dest()).prop_map(|dest| serde_json::to_string(&Request::MetricsShow { dest }).unwrap()),
            // Bytes off the wire: not even JSON.
            ".{0,200}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any sequence of control lines, well formed or not, is answered
        /// or refused, never a panic, and the pool's books stay exact.
        #[test]
        fn control_lines_never_panic_the_cow_engine(lines in proptest::collection::vec(request(), 1..40)) {
            let now = Instant::now();
            let caps = Capacities { metrics_ro: 64, metrics_rw: 4, nexthops: 64, nexthop_groups: 8 };
            let mut rib = Rib::new(MemoryMaps::default(), caps, Duration::from_secs(1));
            let link = Link { index: 3, name: "if3".into(), mac: [2; 6], mtu: 1500, up: true, vlan: None, rx_queues: 1 };
            rib.apply(Event::Link(link), now).unwrap();
            for p in ["10.2.0.0/24", "fd00:2::/64"] {
                rib.set_route(RouteInput::new(p.parse().unwrap(), RouteKind::Unicast, Some(3), None, RouteMetrics::DEFAULT), now).unwrap();
            }
            for line in lines {
                if let Ok(req) = serde_json::from_str::<Request>(&line) {
                    // Refused for what the line says, never for the maps (these never fail).
                    if let Err(e) = metrics_request(&mut rib, req, Duration::from_secs(600), now) {
                        let map = matches!(e, MetricsRequestError::Cow(CowError::Map(_)) | MetricsRequestError::Rib(_) | MetricsRequestError::Json(_));
                        prop_assert!(!map, "{:?}", e);
                    }
                }
                let s = rib.summary();
                prop_assert_eq!(s.metrics_rw_in_use, rib.private_copies().count());
                prop_assert!(s.metrics_rw_in_use <= 4);
            }
        }
    }
}
