//! The AF_XDP slow path's capacity: gen floods rtr with TTL-1 datagrams, the
//! fast path hands every one to the agent, and the agent answers each with
//! a Time Exceeded (rate limits off). Frames handled per second, from the
//! agent's own counters, with what the kernel dropped at a full socket.

use crate::stats::{summarize, Summary};
use anyhow::{Context as _, Result};
use cowroute::operator::control::{Client, Request};
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};
use xtask::{
    agent_proc::{cowroute_bin, AgentProc},
    lab::{self, Lab},
    traffic,
};

#[derive(Debug, Clone, serde::Serialize)]
pub struct SlowPathFigures {
    pub mode: &'static str,
    pub offered_pps: Summary,
    /// ICMP errors built and sent per second.
    pub answered_pps: Summary,
    /// Of the offered frames, the share the kernel dropped at a full socket ring.
    pub socket_dropped_share: Summary,
}

fn stats(c: &mut Client) -> Result<serde_json::Value> {
    Ok(c.call(&Request::Stats)?["slow_path"].clone())
}

pub fn measure(frames: usize, runs: usize, progress: &dyn Fn(&str)) -> Result<Vec<SlowPathFigures>> {
    let mut out = Vec::new();
    for mode in ["generic", "native"] {
        let tag = format!("s{}", std::process::id() % 100_000);
        let lab = Lab::up(&tag)?;
        if mode == "native" {
            lab.attach_peer_pass_programs(&cowroute_bin()?)?;
        }
        let dir = cowroute_tests::TempDir::new(&tag);
        let config = dir.0.join("rtr.toml");
        std::fs::write(&config, lab.hosts_config())?;
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/cowroute-bench-{tag}"));
        let args: Vec<String> =
            ["--config", &config.display().to_string(), "--xdp-mode", mode, "--icmp-ratelimit-ms", "0", "--icmp-msgs-per-sec", "0"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let agent = AgentProc::start(&lab.rtr, &pin_dir, &args, false)?;
        let mut client = Client::connect(&agent.control_socket)?;
        let (mut offered, mut answered, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let before = stats(&mut client)?;
            let to = format!("{}:9", lab::SINK_V4).parse()?;
            let started = Instant::now();
            traffic::udp_send(&lab.gen, to, frames, 18, 1, Duration::ZERO).context("the TTL-1 flood")?;
            let sent_in = started.elapsed().as_secs_f64();
            // Until the agent has caught up with what reached it.
            let mut last = stats(&mut client)?;
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let now = stats(&mut client)?;
                if now["frames"] == last["frames"] {
                    break;
                }
                last = now;
            }
            let took = started.elapsed().as_secs_f64() - 0.1;
            let d = |k: &str| last[k].as_u64().unwrap_or(0).saturating_sub(before[k].as_u64().unwrap_or(0)) as f64;
            offered.push(frames as f64 / sent_in);
            answered.push(d("icmp_sent") / took);
            dropped.push(d("socket_dropped") / frames as f64);
            progress(&format!(
                "  {mode}, run {}: {:.0} frames/s offered, {:.0} answered/s, {:.1}% dropped at the socket",
                run + 1,
                offered[run],
                answered[run],
                dropped[run] * 100.0
            ));
        }
        drop(agent);
        lab.down()?;
        out.push(SlowPathFigures {
            mode: if mode == "native" { "native" } else { "generic" },
            offered_pps: summarize(offered),
            answered_pps: summarize(answered),
            socket_dropped_share: summarize(dropped),
        });
    }
    Ok(out)
}
