//! Control requests (from the CLI over the control socket, and Prometheus),
//! answered on the daemon's loop: the one writer of the maps.

use super::Daemon;
use crate::{
    operator::control::{self, Request, Response},
    operator::stats::{self, AgentStats},
    rib::cow::Source,
};
use anyhow::{anyhow, Result};
use std::time::Instant;

impl Daemon {
    pub(super) fn handle(&mut self, req: Request) -> Response {
        match self.answer(req) {
            Ok(v) => Response::ok(v),
            Err(e) => Response::error(format!("{e:#}")),
        }
    }

    fn answer(&mut self, req: Request) -> Result<serde_json::Value> {
        let now = Instant::now();
        let rib = &mut self.rib;
        Ok(match req {
            Request::MetricsSet { dest, metric, value, expires } => {
                let dest = control::parse_dest(&dest)?;
                let (metric, value) = control::parse_metric_value(&metric, value)?;
                let expires = control::parse_expires(expires, self.opts.default_expires, now)?;
                rib.cow_metrics(dest, metric, value, Source::Operator, expires, now)?;
                serde_json::to_value(rib.destination_metrics(dest, now))?
            }
            Request::MetricsReset { dest } => {
                let dest = control::parse_dest(&dest)?;
                serde_json::json!({ "reset": rib.reset_metrics(dest, now)? })
            }
            Request::MetricsShow { dest: Some(dest) } => {
                let dest = control::parse_dest(&dest)?;
                let m = rib.destination_metrics(dest, now).ok_or_else(|| anyhow!("no route to {dest}"))?;
                serde_json::to_value(vec![m])?
            }
            Request::MetricsShow { dest: None } => {
                let all: Vec<_> = rib.private_copies().filter_map(|(d, _)| rib.destination_metrics(*d, now)).collect();
                serde_json::to_value(all)?
            }
            Request::Stats => serde_json::to_value(self.stats()?)?,
            Request::Fault { what } => {
                if std::env::var(control::FAULT_INJECTION_ENV).as_deref() != Ok("1") {
                    anyhow::bail!("fault injection is off (start the agent with {}=1 to test crashes)", control::FAULT_INJECTION_ENV);
                }
                match what.as_str() {
                    // What a bug would do: the process ends at once (panic = "abort").
                    "panic" => panic!("fault injection: a panic on the daemon's loop"),
                    other => anyhow::bail!("unknown fault {other:?} (one of: panic)"),
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
            netlink: self.netlink.clone(),
            packets: stats::read_counters(&self.counters)?,
            slow_path: self.slow.stats.snapshot(self.slow_path_mode),
            pmtu: self.pmtu.stats,
            neighbour_queue: self.waiting.stats,
            degraded: self.degraded.clone(),
        })
    }
}
