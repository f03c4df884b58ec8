//! `cargo xtask run` without an interface: the lab demo.

use anyhow::{bail, Context as _, Result};
use std::{net::SocketAddr, path::Path, time::Duration};
use xtask::{
    agent_proc::AgentProc,
    lab::{self, Lab},
    sh,
    traffic::{self, UdpSink},
};

const UDP_COUNT: usize = 200;

pub fn run(bin: &Path, mode: &str) -> Result<()> {
    std::env::set_var("COWROUTE_BIN", bin);
    println!("== building the lab: gen -- rtr -- sink (kernel forwarding off in rtr)");
    let lab = Lab::up("demo")?;
    let result = run_in(&lab, bin, mode);
    println!("== tearing the lab down");
    lab.down()?;
    result
}

fn run_in(lab: &Lab, bin: &Path, mode: &str) -> Result<()> {
    if mode != "generic" {
        lab.attach_peer_pass_programs(bin)?;
    }
    let dir = tempfile_dir()?;
    let cfg = dir.join("rtr.toml");
    std::fs::write(&cfg, lab.hosts_config())?;
    println!("== starting cowroute in {} on {} and {}, mirroring rtr's kernel FIB", lab.rtr, lab.rtr_gen_if, lab.rtr_sink_if);
    let pin_dir = Path::new("/sys/fs/bpf/cowroute-demo");
    let args = vec!["--config".into(), cfg.display().to_string(), "--xdp-mode".into(), mode.to_string()];
    let mut agent = AgentProc::start(&lab.rtr, pin_dir, &args, true)?;
    // A kernel route with metrics, added while the agent runs: it reaches
    // the maps with its metrics interned into METRICS_RO.
    let add = ["-n", lab.rtr.as_str(), "route", "add", "10.50.0.0/16", "via", lab::SINK_V4, "mtu", "lock", "1400", "advmss", "1360"];
    println!("== ip {}", add.join(" "));
    sh::ip(&add)?;
    std::thread::sleep(Duration::from_millis(200));

    println!("== traffic from gen to sink");
    let mut ok = true;
    for (family, dst) in [("IPv4", lab::SINK_V4), ("IPv6", lab::SINK_V6)] {
        let (tx, rx, ttls) = traffic::ping(&lab.gen, dst, 20, "0.05")?;
        println!("ping {family} {dst}: {tx} sent, {rx} answered, reply TTL {:?} (sink sent 64; rtr took one)", ttls.first());
        ok &= tx == rx && ttls.iter().all(|t| *t == 63);
    }
    for (family, dst) in [("IPv4", format!("{}:7000", lab::SINK_V4)), ("IPv6", format!("[{}]:7000", lab::SINK_V6))] {
        let addr: SocketAddr = dst.parse()?;
        let sink = UdpSink::bind(&lab.sink, addr)?;
        traffic::udp_send(&lab.gen, addr, UDP_COUNT, 64, 64, Duration::ZERO)?;
        let got = sink.receive(UDP_COUNT, Duration::from_secs(3))?;
        let ttl_ok = got.iter().all(|r| r.ttl == 63);
        println!("UDP {family} to {dst}: {UDP_COUNT} sent, {} received, every TTL/hop limit 63: {ttl_ok}", got.len());
        ok &= got.len() == UDP_COUNT && ttl_ok;
    }
    println!("== the slow path: a TTL-1 ping gets its Time Exceeded from cowroute (kernel forwarding is off)");
    let out = sh::output(&mut sh::in_ns(&lab.gen, "ping", &["-n", "-c", "1", "-W", "2", "-t", "1", lab::SINK_V4]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let answer = text.lines().find(|l| l.starts_with("From ")).unwrap_or("(no answer)");
    println!("ping -t 1 {}: {answer}", lab::SINK_V4);
    ok &= answer.contains("Time to live exceeded");
    println!("== counters (cowroute show stats)");
    let stats = sh::run(std::process::Command::new(bin).arg("--pin-dir").arg(pin_dir).args(["show", "stats"]))?;
    for line in stats.lines().filter(|l| l.starts_with("reason") || !l.contains(" 0 ")) {
        println!("{line}");
    }
    println!("== routes (cowroute show routes)");
    print!("{}", sh::run(std::process::Command::new(bin).arg("--pin-dir").arg(pin_dir).args(["show", "routes"]))?);
    println!("== which map answers an address (cowroute show routes 10.50.1.1, then {})", lab::SINK_V4);
    for target in ["10.50.1.1", lab::SINK_V4] {
        let out = sh::run(std::process::Command::new(bin).arg("--pin-dir").arg(pin_dir).args(["show", "routes", target]))?;
        print!("{}", out.lines().skip(1).map(|l| format!("{l}\n")).collect::<String>());
    }
    println!("== shared metrics (cowroute show metrics)");
    let show = sh::run(std::process::Command::new(bin).arg("--pin-dir").arg(pin_dir).args(["show", "metrics"]))?;
    print!("{show}");
    let ro = pin_dir.join("METRICS_RO");
    println!("== bpftool map show pinned {}", ro.display());
    print!("{}", sh::run(sh::cmd("bpftool", &["map", "show", "pinned"]).arg(&ro))?);
    agent.stop().context("stopping the agent")?;
    let _ = std::fs::remove_dir_all(&dir);
    if !ok {
        bail!("some traffic was not forwarded by XDP (see above)");
    }
    println!("== all traffic was forwarded by XDP alone");
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("cowroute-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
