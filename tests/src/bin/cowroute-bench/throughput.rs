//! Lab throughput: the same lab and the same generator for every mode —
//! (a) kernel forwarding in rtr, (b) cowroute native, (c) cowroute generic,
//! (d) a minimal `bpf_fib_lookup` forwarder, (e) a redirect-only program
//! (the ceiling: no lookup, no rewrite).
//!
//! The generator is BPF_PROG_RUN with live frames (`trafficgen.rs`) on
//! GENERATOR_CPU in gen: its frames enter rtr's veth queue as XDP frames,
//! the way a NIC's would, in batches of 64. rtr's queue is polled by a NAPI
//! thread pinned to ROUTER_CPU, where the router's work and the sink's XDP
//! drop run: delivered pps is the router's rate when the generator offers
//! more, and that CPU's busy time per delivered packet is the router's cost.
//! rtr's veth has GRO on, which gives it a NAPI queue without an XDP program
//! (kernel forwarding, generic mode). The sink drops at XDP and counts.
//!
//! rtr's table is one route (the agent's from its config), or a full table
//! in rtr's kernel FIB that the agent mirrors (`--source kernel`), so that
//! kernel forwarding, the `bpf_fib_lookup` forwarder and cowroute see the
//! same routes.

use crate::{
    bench_programs,
    trafficgen::{Destination, Generator},
};
use anyhow::{bail, Context as _, Result};
use cowroute::bench_object::{PROG_DROP, PROG_REDIRECT, PROG_REFERENCE};
use ipnet::IpNet;
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};
use xtask::{
    agent_proc::{cowroute_bin, AgentProc},
    lab::{self, Lab},
    sh,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Kernel,
    Native,
    Generic,
    /// A minimal forwarder on the kernel's FIB (`bpf_fib_lookup`), native:
    /// a yardstick of XDP forwarding with a lookup.
    Reference,
    /// Every frame redirected to the sink's link, native, with no parsing,
    /// lookup or rewrite: what XDP can do in this lab at all.
    Ceiling,
}

impl Mode {
    pub const ALL: [Mode; 5] = [Mode::Kernel, Mode::Native, Mode::Generic, Mode::Reference, Mode::Ceiling];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel forwarding",
            Mode::Native => "cowroute native",
            Mode::Generic => "cowroute generic",
            Mode::Reference => "minimal bpf_fib_lookup forwarder, native",
            Mode::Ceiling => "redirect only (ceiling), native",
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Rate {
    pub offered_pps: f64,
    pub delivered_pps: f64,
    /// Busy time of the router's CPU (its receive, forwarding and the
    /// sink's XDP drop) per delivered packet.
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

/// The CPU the router's receive queue polls on (its threaded NAPI); the
/// generator has the other one.
pub const ROUTER_CPU: usize = 1;
pub const GENERATOR_CPU: usize = 0;

/// Nanoseconds `cpu` has been busy (every `/proc/stat` column but idle and
/// iowait, USER_HZ ticks).
fn busy_ns(cpu: usize) -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(&name)).with_context(|| format!("{name} in /proc/stat"))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>()?;
    let busy: u64 = ticks.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).take(8).sum();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(busy * 1_000_000_000 / hz)
}

/// Pins the NAPI threads of `dev` (kthreads `napi/<dev>-<id>`) to `cpu`.
fn pin_napi_threads(dev: &str, cpu: usize) -> Result<()> {
    let prefix = format!("napi/{dev}-");
    let mut pinned = 0;
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(&prefix) {
            crate::cpus::set_affinity(pid, &[cpu])?;
            pinned += 1;
        }
    }
    anyhow::ensure!(pinned > 0, "no NAPI thread for {dev}: threaded NAPI is off");
    Ok(())
}

/// The one-route lab's route per family, via the sink.
pub const ONE_ROUTE_V4: &str = "10.50.0.0/16";
pub const ONE_ROUTE_V6: &str = "fd00:50::/32";

/// What rtr forwards by.
pub enum Table {
    /// One route per family, [`ONE_ROUTE_V4`] and [`ONE_ROUTE_V6`] (the
    /// agent's from its config).
    OneRoute,
    /// These routes (both families) in rtr's kernel FIB over 4 gateways per
    /// family on the sink link (permanent neighbours), mirrored by the agent.
    Kernel(Vec<IpNet>),
}

/// One lab for every mode, torn down on drop; `set_mode` switches between
/// them, so that rounds can interleave the modes.
pub struct Bench {
    pub lab: Lab,
    agent: Option<AgentProc>,
    mode: Option<Mode>,
    /// `cowroute run` arguments but the XDP mode.
    agent_args: Vec<String>,
    /// How long an agent may take to be ready (a full table's dump).
    ready_within: Duration,
    pin_dir: PathBuf,
    /// Holds the config file.
    _dir: cowroute_tests::TempDir,
}

impl Bench {
    pub fn up(table: &Table, say: &dyn Fn(&str)) -> Result<Bench> {
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("b{n}{}", std::process::id() % 10_000);
        let lab = Lab::up(&tag)?;
        let rtr = lab.rtr.clone();
        // The sink drops everything it receives at XDP, ARP included:
        // rtr knows its MAC (and the gateways') for good.
        let sink_mac = mac_of(&lab.sink, &lab.sink_if)?;
        for sink in [lab::SINK_V4, lab::SINK_V6] {
            sh::ip(&["-n", &rtr, "neigh", "replace", sink, "lladdr", &sink_mac, "dev", &lab.rtr_sink_if, "nud", "permanent"])?;
        }
        // gen's end passes (native redirects into it); sink's drops.
        lab.attach_peer_pass(&cowroute_bin()?, &lab.gen, &lab.gen_if)?;
        bench_programs::attach(PROG_DROP, &lab.sink, &lab.sink_if, &lab.peer_pin(&lab.sink_if), &[])?;
        // A NAPI queue on rtr's side for the generator's XDP frames when no
        // XDP program is attached there natively, polled by a thread of its
        // own (pinned to ROUTER_CPU for each run).
        sh::run(&mut sh::in_ns(&rtr, "ethtool", &["-K", &lab.rtr_gen_if, "gro", "on"]))?;
        sh::run(&mut sh::in_ns(&rtr, "sh", &["-c", &format!("echo 1 > /sys/class/net/{}/threaded", lab.rtr_gen_if)]))?;
        let dir = cowroute_tests::TempDir::new(&tag);
        let config = dir.0.join("rtr.toml");
        let (agent_args, ready_within) = match table {
            Table::OneRoute => {
                let mut extra = String::new();
                for (prefix, via) in [(ONE_ROUTE_V4, lab::SINK_V4), (ONE_ROUTE_V6, lab::SINK_V6)] {
                    sh::ip(&["-n", &rtr, "route", "add", prefix, "via", via])?;
                    extra += &format!("\n[[route]]\nprefix = \"{prefix}\"\nvia = \"{via}\"\ndev = \"{}\"\n", lab.rtr_sink_if);
                }
                std::fs::write(&config, lab.router_config() + &extra)?;
                (vec!["--source".into(), "config".into()], Duration::from_secs(30))
            }
            Table::Kernel(routes) => {
                let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = routes.iter().partition(|p| matches!(p, IpNet::V4(_)));
                let gateways = [cowroute_tests::kernel_table::gateways(&lab, 4)?, cowroute_tests::kernel_table::gateways_v6(&lab, 4)?];
                for (family, table, gateways) in [("IPv4", v4, &gateways[0]), ("IPv6", v6, &gateways[1])] {
                    say(&format!("  {} {family} routes into {rtr}'s kernel FIB (ip -batch)", table.len()));
                    let took = cowroute_tests::kernel_table::batch(&lab, "add", &table, gateways, "")?;
                    say(&format!("  the kernel took {:.1} s", took.as_secs_f64()));
                }
                std::fs::write(&config, lab.hosts_config())?;
                let rcvbuf = "536870912".to_string();
                (vec!["--source".into(), "kernel".into(), "--netlink-rcvbuf".into(), rcvbuf], Duration::from_secs(300))
            }
        };
        let agent_args = [agent_args, vec!["--config".into(), config.display().to_string()]].concat();
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/cowroute-bench-{tag}"));
        Ok(Bench { lab, agent: None, mode: None, agent_args, ready_within, pin_dir, _dir: dir })
    }

    /// Kernel forwarding on, no agent; or the agent in native or generic
    /// mode with kernel forwarding off; or one of the bench's programs.
    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        if self.mode == Some(mode) {
            return Ok(());
        }
        if let Some(mut a) = self.agent.take() {
            a.stop()?;
        }
        let program_pin = self.lab.pass_pin_dir.join("bench-program-r0");
        if program_pin.exists() {
            std::fs::remove_file(&program_pin)?;
        }
        // The kernel forwards, or its FIB serves the reference forwarder.
        let on = matches!(mode, Mode::Kernel | Mode::Reference) as u8;
        let (v4, v6) = (format!("net.ipv4.ip_forward={on}"), format!("net.ipv6.conf.all.forwarding={on}"));
        sh::run(&mut sh::in_ns(&self.lab.rtr, "sysctl", &["-qw", &v4, &v6]))?;
        match mode {
            Mode::Kernel => {}
            Mode::Reference => bench_programs::attach(PROG_REFERENCE, &self.lab.rtr, &self.lab.rtr_gen_if, &program_pin, &[])
                .context("attaching the reference forwarder")?,
            Mode::Ceiling => {
                let out = ifindex_in(&self.lab.rtr, &self.lab.rtr_sink_if)?;
                bench_programs::attach(PROG_REDIRECT, &self.lab.rtr, &self.lab.rtr_gen_if, &program_pin, &[("REDIRECT_IFINDEX", out)])
                    .context("attaching the redirect-only program")?
            }
            Mode::Native | Mode::Generic => {
                let m = if mode == Mode::Native { "native" } else { "generic" };
                let args = [self.agent_args.clone(), vec!["--xdp-mode".into(), m.into()]].concat();
                self.agent = Some(AgentProc::start_within(&self.lab.rtr, &self.pin_dir, &args, false, self.ready_within)?);
            }
        }
        self.mode = Some(mode);
        Ok(())
    }

    /// The live-frames generator sends `size`-byte frames over `flows` flows
    /// (source ports) and `dsts` (none: IPv4 to 10.50.0.1; IPv6 frames when
    /// the destinations are IPv6) for `duration` from GENERATOR_CPU.
    pub fn run(&self, size: usize, flows: u32, dsts: &[std::net::IpAddr], duration: Duration) -> Result<Rate> {
        let (gen, sink) = (&self.lab.gen, &self.lab.sink);
        let (dmac, smac) = (parse_mac(&mac_of(&self.lab.rtr, &self.lab.rtr_gen_if)?)?, parse_mac(&mac_of(gen, &self.lab.gen_if)?)?);
        let frame = match dsts.first() {
            Some(std::net::IpAddr::V6(dst)) => {
                let src: std::net::Ipv6Addr = lab::GEN_V6.parse()?;
                let packet = cowroute_tests::ipv6_udp(src.octets(), dst.octets(), 64, size - 14 - 40);
                cowroute_tests::eth(dmac, smac, None, cowroute_tests::ETH_P_IPV6, &packet)
            }
            _ => {
                let src: std::net::Ipv4Addr = lab::GEN_V4.parse()?;
                cowroute_tests::eth(
                    dmac,
                    smac,
                    None,
                    cowroute_tests::ETH_P_IP,
                    &cowroute_tests::ipv4_udp(src.octets(), [10, 50, 0, 1], 64, size - 14),
                )
            }
        };
        let dsts: Vec<Destination> = dsts.iter().map(|d| crate::trafficgen::destination(&frame, *d)).collect();
        pin_napi_threads(&self.lab.rtr_gen_if, ROUTER_CPU)?;
        let generator = Generator::start(gen, &self.lab.gen_if, frame, flows, dsts, GENERATOR_CPU)?;
        // Let the queues fill and settle before the window.
        std::thread::sleep(Duration::from_millis(200));
        let (rx0, tx0, cpu0) = (sink_packets(sink, &self.lab.sink_if)?, generator.sent(), busy_ns(ROUTER_CPU)?);
        let started = Instant::now();
        std::thread::sleep(duration);
        let (rx1, tx1, cpu1) = (sink_packets(sink, &self.lab.sink_if)?, generator.sent(), busy_ns(ROUTER_CPU)?);
        let secs = started.elapsed().as_secs_f64();
        drop(generator);
        let delivered = rx1 - rx0;
        if delivered == 0 {
            bail!("nothing reached the sink in {} mode ({} frames sent)", self.mode.map_or("?", Mode::name), tx1 - tx0);
        }
        Ok(Rate {
            offered_pps: (tx1 - tx0) as f64 / secs,
            delivered_pps: delivered as f64 / secs,
            router_ns_per_packet: (cpu1 - cpu0) as f64 / delivered as f64,
        })
    }
}

/// The ifindex of `dev` in namespace `ns`.
pub(crate) fn ifindex_in(ns: &str, dev: &str) -> Result<u32> {
    let out = sh::ip(&["-n", ns, "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v[0]["ifindex"].as_u64().context("no ifindex")? as u32)
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let b: Vec<u8> = s.split(':').map(|h| u8::from_str_radix(h, 16)).collect::<Result<_, _>>()?;
    b.try_into().map_err(|_| anyhow::anyhow!("not a MAC: {s}"))
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.stop();
        }
    }
}
