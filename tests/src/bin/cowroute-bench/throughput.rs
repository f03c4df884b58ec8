//! Lab throughput: the same lab and the same generator for every mode —
//! (a) kernel forwarding in rtr, (b) cowroute native, (c) cowroute generic.
//!
//! The generator is trafgen (AF_PACKET) pinned to CPU 0 in gen. A veth hands
//! each frame to the receiver's softirq on the sending CPU, so the router's
//! work (and the sink's XDP drop) runs inline on CPU 0 as softirq: delivered
//! pps measures generator + router, and softirq time per delivered packet
//! measures the router alone. (Putting the router's NAPI in a thread on the
//! other CPU costs a cross-CPU wakeup per skb on veth, which swamps what is
//! measured.) The sink drops at XDP and counts.

use anyhow::{bail, Context as _, Result};
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};
use xtask::{
    agent_proc::{cowroute_bin, AgentProc},
    lab::{self, Lab},
    sh,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Kernel,
    Native,
    Generic,
    /// A minimal forwarder on the kernel's FIB (`bpf_fib_lookup`), native:
    /// what XDP can do in this lab at all, to judge cowroute's share.
    Reference,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Kernel, Mode::Native, Mode::Generic, Mode::Reference];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel forwarding",
            Mode::Native => "cowroute native",
            Mode::Generic => "cowroute generic",
            Mode::Reference => "minimal bpf_fib_lookup forwarder, native",
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Rate {
    pub offered_pps: f64,
    pub delivered_pps: f64,
    /// Softirq time (the router's receive and forwarding work) per delivered packet.
    pub router_ns_per_packet: f64,
}

fn mac_of(ns: &str, dev: &str) -> Result<String> {
    let out = sh::ip(&["-n", ns, "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v[0]["address"].as_str().context("no MAC")?.to_string())
}

/// Frames the sink's XDP program saw (veth's per-queue `xdp_packets`).
fn sink_packets(ns: &str, dev: &str) -> Result<u64> {
    let out = sh::run(&mut sh::in_ns(ns, "ethtool", &["-S", dev]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .filter(|(k, _)| k.starts_with("rx_queue_") && k.ends_with("_xdp_packets"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum())
}

fn tx_packets(ns: &str, dev: &str) -> Result<u64> {
    let out = sh::ip(&["-n", ns, "-s", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["stats64"]["tx"]["packets"].as_u64().context("no tx stats")
}

/// Nanoseconds all CPUs have spent in softirq (`/proc/stat`, USER_HZ ticks).
fn softirq_ns() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat")?;
    let ticks: u64 = line.split_whitespace().nth(7).context("softirq column")?.parse()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(ticks * 1_000_000_000 / hz)
}

/// One lab for every mode, torn down on drop; `set_mode` switches between
/// them, so that rounds can interleave the modes.
pub struct Bench {
    pub lab: Lab,
    agent: Option<AgentProc>,
    mode: Option<Mode>,
    config: PathBuf,
    pin_dir: PathBuf,
    dir: cowroute_tests::TempDir,
}

impl Bench {
    pub fn up() -> Result<Bench> {
        let tag = format!("b{}", std::process::id() % 100_000);
        let lab = Lab::up(&tag)?;
        let rtr = lab.rtr.clone();
        // The sink owns the flows' destinations and drops everything it
        // receives, ARP included: rtr gets its MAC for good.
        sh::ip(&["-n", &lab.sink, "route", "add", "local", "10.50.0.0/16", "dev", "lo"])?;
        let sink_mac = mac_of(&lab.sink, &lab.sink_if)?;
        sh::ip(&["-n", &rtr, "neigh", "replace", lab::SINK_V4, "lladdr", &sink_mac, "dev", &lab.rtr_sink_if, "nud", "permanent"])?;
        sh::ip(&["-n", &rtr, "route", "add", "10.50.0.0/16", "via", lab::SINK_V4])?;
        lab.attach_peer_programs(&cowroute_bin()?, true)?;
        let dir = cowroute_tests::TempDir::new(&tag);
        let config = dir.0.join("rtr.toml");
        let extra = format!("\n[[route]]\nprefix = \"10.50.0.0/16\"\nvia = \"{}\"\ndev = \"{}\"\n", lab::SINK_V4, lab.rtr_sink_if);
        std::fs::write(&config, lab.router_config() + &extra)?;
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/cowroute-bench-{tag}"));
        Ok(Bench { lab, agent: None, mode: None, config, pin_dir, dir })
    }

    /// Kernel forwarding on, no agent; or the agent in native or generic
    /// mode with kernel forwarding off.
    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        if self.mode == Some(mode) {
            return Ok(());
        }
        if let Some(mut a) = self.agent.take() {
            a.stop()?;
        }
        let reference_pin = self.lab.pass_pin_dir.join("reference-r0");
        if reference_pin.exists() {
            std::fs::remove_file(&reference_pin)?;
        }
        // The kernel forwards, or its FIB serves the reference forwarder.
        let forward = if matches!(mode, Mode::Kernel | Mode::Reference) { "net.ipv4.ip_forward=1" } else { "net.ipv4.ip_forward=0" };
        sh::run(&mut sh::in_ns(&self.lab.rtr, "sysctl", &["-qw", forward]))?;
        if mode == Mode::Reference {
            let mut c = std::process::Command::new(cowroute_bin()?);
            c.args(["--netns", &self.lab.rtr, "attach-peer", "--reference", "--iface", &self.lab.rtr_gen_if, "--pin"]).arg(&reference_pin);
            sh::run(&mut c).context("attaching the reference forwarder")?;
        } else if mode != Mode::Kernel {
            let m = if mode == Mode::Native { "native" } else { "generic" };
            let args = vec!["--source".into(), "config".into(), "--config".into(), self.config.display().to_string(), "--xdp-mode".into(), m.into()];
            self.agent = Some(AgentProc::start(&self.lab.rtr, &self.pin_dir, &args, false)?);
        }
        self.mode = Some(mode);
        Ok(())
    }

    /// trafgen sends `size`-byte frames over `flows` flows (source ports)
    /// for `duration`.
    pub fn run(&self, size: usize, flows: u32, duration: Duration) -> Result<Rate> {
        let (gen, sink) = (&self.lab.gen, &self.lab.sink);
        let sport = if flows > 1 { format!("dinc(10000, {})", 10_000 + flows - 1) } else { "10000".into() };
        let cfg = self.dir.0.join(format!("trafgen-{size}-{flows}.cfg"));
        std::fs::write(
            &cfg,
            format!(
                "{{ eth(da={}, sa={}), ipv4(saddr={}, daddr=10.50.0.1, ttl=64), udp(sp={sport}, dp=7300), fill(0x5a, {}) }}\n",
                mac_of(&self.lab.rtr, &self.lab.rtr_gen_if)?,
                mac_of(gen, &self.lab.gen_if)?,
                lab::GEN_V4,
                size - 42,
            ),
        )?;
        // trafgen takes a while to set its ring up: measure a window of
        // steady sending, not its start.
        let mut child = sh::in_ns(gen, "taskset", &["-c", "0", "trafgen", "-o", &self.lab.gen_if, "-i"])
            .arg(&cfg)
            .args(["-q", "--cpus", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting trafgen")?;
        let result = (|| -> Result<Rate> {
            let t0 = tx_packets(gen, &self.lab.gen_if)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while tx_packets(gen, &self.lab.gen_if)? < t0 + 10_000 {
                if Instant::now() > deadline {
                    bail!("trafgen did not start sending");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(200));
            let (rx0, tx0, cpu0) = (sink_packets(sink, &self.lab.sink_if)?, tx_packets(gen, &self.lab.gen_if)?, softirq_ns()?);
            let started = Instant::now();
            std::thread::sleep(duration);
            let (rx1, tx1, cpu1) = (sink_packets(sink, &self.lab.sink_if)?, tx_packets(gen, &self.lab.gen_if)?, softirq_ns()?);
            let secs = started.elapsed().as_secs_f64();
            let delivered = rx1 - rx0;
            Ok(Rate {
                offered_pps: (tx1 - tx0) as f64 / secs,
                delivered_pps: delivered as f64 / secs,
                router_ns_per_packet: if delivered > 0 { (cpu1 - cpu0) as f64 / delivered as f64 } else { f64::NAN },
            })
        })();
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        result
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.stop();
        }
    }
}
