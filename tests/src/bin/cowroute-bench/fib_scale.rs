//! The kernel FIB mirror at scale: a full table put into a lab router's
//! kernel with `ip -batch` while the agent runs (`--source kernel`), then
//! churn (replaces with new metrics). Records how long until the maps hold
//! every route, routes per second applied, agent RSS and map memory.

use anyhow::{bail, Context as _, Result};
use cowroute::operator::control::{Client, Request};
use cowroute_tests::{kernel_table, synthetic};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use xtask::{agent_proc::AgentProc, lab::Lab, sh};

#[derive(Debug, Clone, serde::Serialize)]
pub struct MapMemory {
    pub map: &'static str,
    pub bytes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FibScaleFigures {
    pub routes: usize,
    /// `ip -batch` of the whole table, kernel side.
    pub kernel_insert_seconds: f64,
    /// From the batch's start until the maps held every route.
    pub mirrored_seconds: f64,
    pub mirrored_routes_per_second: f64,
    pub churn_routes: usize,
    pub churn_kernel_seconds: f64,
    /// From the churn batch's start until the agent had applied all of it.
    pub churn_seconds: f64,
    pub churn_routes_per_second: f64,
    /// Netlink overruns (each answered by a full resync) during load and churn.
    pub overruns: u64,
    /// The agent started against the full table: from exec to "ready"
    /// (load, dump, every route in the maps).
    pub startup_seconds: f64,
    pub startup_routes_per_second: f64,
    /// That agent's peak resident set (VmHWM) when ready: what a cold
    /// start holds at once (the dump in flight, the RIB, the maps mapped).
    pub startup_peak_rss_mib: f64,
    /// The agent stopped (SIGSTOP) while the kernel took `churn_routes`
    /// replaces, then resumed: how fast it applied the backlog.
    pub backlog_seconds: f64,
    pub backlog_routes_per_second: f64,
    /// The agent's CPU time for the backlog, per route (both threads that
    /// read and apply it, and the trie writer's).
    pub backlog_cpu_us_per_route: f64,
    /// The agent's CPU time from exec to ready, per kernel route.
    pub startup_cpu_us_per_route: f64,
    /// Resident set, the maps it has mapped (the DIR-24 arrays) included.
    pub agent_rss_mib: f64,
    /// Of that, the agent's own memory (`RssAnon`): the mapped maps are
    /// kernel memory, counted under map memory.
    pub agent_private_mib: f64,
    pub map_memory: Vec<MapMemory>,
    pub map_memory_total_mib: f64,
}

pub fn stats(c: &mut Client) -> Result<serde_json::Value> {
    c.call(&Request::Stats).context("agent stats")
}

/// The number at `path` in a stats answer (0 when absent).
pub fn get(v: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

/// Waits (up to 15 s: the agent compacts at most every 10 s) for the
/// agent's next compaction after a bulk load (`compactions` past
/// `before`), so that its memory is read as it stays, not as the load left
/// it; says so when none came (a table too small to be due, or an agent
/// without it). Returns the count.
pub fn settled(client: &mut Client, before: u64, progress: &dyn Fn(&str)) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = get(&stats(client)?, &["compactions"]);
        if now > before {
            return Ok(now);
        }
        if Instant::now() > deadline {
            progress("  the agent did not compact its tables: memory read as the load left it");
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// MiB of `field` (`VmRSS`, `RssAnon`) in `/proc/PID/status`.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// CPU seconds (user + system, every thread's, exited ones too) the
/// process has used: a figure a noisy machine disturbs far less than the
/// wall clock, to compare binaries by.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // After "(comm)", which may hold spaces: state is field 3, utime 14, stime 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(f64::NAN)
}

/// Waits (at most `within`) until the CPUs are 90% idle over 100 ms;
/// returns how long it took.
fn wait_for_idle_cpus(within: Duration) -> Duration {
    // The first line of /proc/stat: "cpu user nice system idle iowait ...".
    let sample = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
        Some((ticks.iter().sum(), *ticks.get(3)? + ticks.get(4).copied().unwrap_or(0)))
    };
    let started = Instant::now();
    while started.elapsed() < within {
        let Some((total0, idle0)) = sample() else { break };
        std::thread::sleep(Duration::from_millis(100));
        let Some((total1, idle1)) = sample() else { break };
        if total1 > total0 && idle1.saturating_sub(idle0) * 10 >= (total1 - total0) * 9 {
            break;
        }
    }
    started.elapsed()
}

/// What each pinned map holds in kernel memory (bpftool's `bytes_memlock`,
/// the kernel's own accounting of the map).
fn map_memory(pin_dir: &Path) -> Result<Vec<MapMemory>> {
    common::maps::ALL
        .iter()
        .map(|name| {
            let out = sh::run(sh::cmd("bpftool", &["-j", "map", "show", "pinned"]).arg(pin_dir.join(name)))?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            Ok(MapMemory { map: name, bytes: v["bytes_memlock"].as_u64().unwrap_or(0) })
        })
        .collect()
}

/// Runs `ip -batch` of `cmds` on a thread and polls the agent until `done`
/// holds, with a progress line (`what`: the batch, in a few words) every
/// second. Returns (kernel seconds, seconds until done).
pub fn timed_batch(
    lab: &Lab,
    client: &mut Client,
    what: &str,
    cmds: String,
    done: &dyn Fn(&serde_json::Value) -> bool,
    progress: &dyn Fn(&str),
) -> Result<(f64, f64)> {
    let lab_named = Lab::named(&lab.tag)?;
    let start = Instant::now();
    let kernel = std::thread::spawn(move || {
        let r = kernel_table::batch_lines(&lab_named, &cmds);
        std::mem::forget(lab_named); // names only: the lab is torn down by its owner
        r
    });
    let mut last_line = Instant::now();
    let (mut kernel, mut kernel_took) = (Some(kernel), None);
    loop {
        let s = stats(client)?;
        // A failed batch fails the step now, not after the timeout.
        if let Some(k) = kernel.take_if(|k| k.is_finished()) {
            kernel_took = Some(k.join().map_err(|_| anyhow::anyhow!("ip -batch thread panicked"))??);
        }
        if done(&s) {
            let took = start.elapsed().as_secs_f64();
            let k = match kernel.take() {
                Some(k) => k.join().map_err(|_| anyhow::anyhow!("ip -batch thread panicked"))??,
                None => kernel_took.expect("joined"),
            };
            return Ok((k.as_secs_f64(), took));
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            progress(&format!(
                "  {what}: agent has {} routes, {} events, {} overruns ({:.1} s)",
                get(&s, &["routes"]),
                get(&s, &["netlink", "events"]),
                get(&s, &["netlink", "overruns"]),
                start.elapsed().as_secs_f64()
            ));
            last_line = Instant::now();
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("{what}: not applied after 600 s: {s}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A lab whose rtr runs the agent on its kernel's FIB (`--source kernel`,
/// generic XDP, a receive buffer for a full table's burst of notifications).
pub struct ScaleLab {
    pub lab: Lab,
    pub pin_dir: PathBuf,
    /// `cowroute run` arguments.
    args: Vec<String>,
    _config_dir: cowroute_tests::TempDir,
}

impl ScaleLab {
    /// Builds lab `letter` + this process's id and rtr's config.
    pub fn up(letter: char) -> Result<ScaleLab> {
        let tag = format!("{letter}{}", std::process::id() % 100_000);
        let lab = Lab::up(&tag)?;
        let dir = cowroute_tests::TempDir::new(&tag);
        let config = dir.0.join("rtr.toml");
        std::fs::write(&config, lab.hosts_config())?;
        let args = ["--config", &config.display().to_string(), "--xdp-mode", "generic", "--netlink-rcvbuf", "536870912"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Ok(ScaleLab { pin_dir: PathBuf::from(format!("/sys/fs/bpf/cowroute-bench-{tag}")), lab, args, _config_dir: dir })
    }

    /// Starts the agent (a fresh one each call) and waits up to `ready_within` for "ready".
    pub fn agent(&self, ready_within: Duration) -> Result<AgentProc> {
        AgentProc::start_within(&self.lab.rtr, &self.pin_dir, &self.args, false, ready_within)
    }

    pub fn down(self) -> Result<()> {
        self.lab.down()
    }
}

pub fn measure(routes: usize, churn: usize, progress: &dyn Fn(&str)) -> Result<FibScaleFigures> {
    let scale = ScaleLab::up('f')?;
    let (lab, pin_dir) = (&scale.lab, &scale.pin_dir);
    let agent = scale.agent(Duration::from_secs(30))?;
    let mut client = Client::connect(&agent.control_socket)?;
    let gateways = kernel_table::gateways(lab, 4)?;
    let base = stats(&mut client)?;
    let (base_routes, base_overruns) = (get(&base, &["routes"]), get(&base, &["netlink", "overruns"]));

    progress(&format!("  generating {routes} routes (Internet-like prefix lengths)"));
    let table = synthetic::v4_kernel_table(routes, 17);
    let want = base_routes + routes as u64;
    let cmds = kernel_table::route_lines("add", &table, &gateways, "");
    let (kernel_insert, mirrored) =
        timed_batch(lab, &mut client, &format!("add {routes}"), cmds, &|s| get(s, &["routes"]) >= want, progress)?;
    // Memory as it stays (once the load has settled and the agent has
    // compacted its tables), and the churn not sharing the CPUs with that.
    settled(&mut client, 0, progress)?;
    let (rss, private) = (status_mib(agent.pid(), "VmRSS"), status_mib(agent.pid(), "RssAnon"));
    let maps = map_memory(pin_dir)?;

    // Churn: the first `churn` routes replaced with a new MTU (a new shared
    // metric set each route moves to). Done when the agent has applied that
    // many events, or has resynced past an overrun and gone quiet.
    let before = stats(&mut client)?;
    let (events0, overruns0) = (get(&before, &["netlink", "events"]), get(&before, &["netlink", "overruns"]));
    let quiet = std::cell::Cell::new((0u64, Instant::now()));
    let churned = kernel_table::route_lines("replace", &table[..churn.min(table.len())], &gateways, "mtu 1400");
    let (churn_kernel, churn_secs) = timed_batch(
        lab,
        &mut client,
        &format!("replace {churn}"),
        churned,
        &|s| {
            let events = get(s, &["netlink", "events"]);
            if events - events0 >= churn as u64 {
                return true;
            }
            let (last, since) = quiet.get();
            if events != last {
                quiet.set((events, Instant::now()));
                return false;
            }
            get(s, &["netlink", "overruns"]) > overruns0 && since.elapsed() > Duration::from_millis(500)
        },
        progress,
    )?;
    let after = stats(&mut client)?;
    let total: u64 = maps.iter().map(|m| m.bytes).sum();

    // The agent's own rate, with the kernel out of the way: stopped while
    // the kernel takes the churn (the notifications wait in the socket),
    // then resumed: the time it takes to apply them.
    progress(&format!("  backlog: agent stopped while the kernel takes {churn} replaces, then resumed"));
    let events0 = get(&after, &["netlink", "events"]);
    unsafe { libc::kill(agent.pid() as i32, libc::SIGSTOP) };
    let backlog_cpu0 = cpu_seconds(agent.pid());
    let back = kernel_table::batch(lab, "replace", &table[..churn.min(table.len())], &gateways, "mtu 1360");
    let resumed = Instant::now();
    unsafe { libc::kill(agent.pid() as i32, libc::SIGCONT) };
    back?;
    loop {
        let s = stats(&mut client)?;
        if get(&s, &["netlink", "events"]) - events0 >= churn as u64
            || get(&s, &["netlink", "overruns"]) > get(&after, &["netlink", "overruns"])
        {
            break;
        }
        if resumed.elapsed() > Duration::from_secs(300) {
            bail!("the backlog of {churn} replaces was not applied in 300 s: {s}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let backlog = resumed.elapsed().as_secs_f64();
    let backlog_cpu = cpu_seconds(agent.pid()) - backlog_cpu0;

    // A fresh agent against the full table: start to ready.
    drop(client);
    drop(agent);
    // The old agent's maps (hundreds of MiB) are freed by kernel workers
    // after it exits: a cold start measured meanwhile shares the CPUs with
    // that teardown, which is the bench's, not the start's.
    let settled = wait_for_idle_cpus(Duration::from_secs(20));
    progress(&format!("  startup: a new agent against the {routes}-route table (CPUs idle after {:.1} s)", settled.as_secs_f64()));
    let started = Instant::now();
    let agent = scale.agent(Duration::from_secs(300))?;
    let startup = started.elapsed().as_secs_f64();
    let startup_peak = status_mib(agent.pid(), "VmHWM");
    let startup_cpu = cpu_seconds(agent.pid());
    drop(agent);
    scale.down()?;
    Ok(FibScaleFigures {
        routes,
        kernel_insert_seconds: kernel_insert,
        mirrored_seconds: mirrored,
        mirrored_routes_per_second: routes as f64 / mirrored,
        churn_routes: churn,
        churn_kernel_seconds: churn_kernel,
        churn_seconds: churn_secs,
        churn_routes_per_second: churn as f64 / churn_secs,
        overruns: get(&after, &["netlink", "overruns"]) - base_overruns,
        startup_seconds: startup,
        startup_routes_per_second: routes as f64 / startup,
        startup_peak_rss_mib: startup_peak,
        backlog_seconds: backlog,
        backlog_routes_per_second: churn as f64 / backlog,
        backlog_cpu_us_per_route: backlog_cpu * 1e6 / churn as f64,
        startup_cpu_us_per_route: startup_cpu * 1e6 / routes as f64,
        agent_rss_mib: rss,
        agent_private_mib: private,
        map_memory: maps,
        map_memory_total_mib: total as f64 / 1048576.0,
    })
}
