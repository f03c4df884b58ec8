//! `cargo xtask bench`: cowroute's figures. Every figure is the median of
//! several runs with min and max; every comparison is a ratio measured in the
//! same run. Writes a markdown report, a JSON file with every sample, and SVG
//! plots to the output directory.

mod bench_programs;
mod conformance;
mod control_plane;
mod cpus;
mod fib_scale;
mod fpm_scale;
mod full_table;
mod nexthop_scale;
mod plots;
mod policy_cost;
mod program_cost;
mod slow_path;
mod stats;
mod throughput;
mod trafficgen;

use anyhow::Result;
use stats::{fmt, summarize, Summary};
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};
use throughput::{Bench, Mode};

struct Config {
    quick: bool,
    out: PathBuf,
    repeat: u32,
    /// Samples per program-cost figure: cheap, and this machine's noise is bimodal.
    cost_runs: usize,
    v4_tables: Vec<usize>,
    /// IPv6 tables (prefixes besides the probe's), an Internet-like length mix.
    v6_tables: Vec<usize>,
    lab_seconds: f64,
    cow_dests: usize,
    memory_routes: usize,
    fib_routes: usize,
    fib_churn: usize,
    /// Routes through kernel nexthop objects (`nexthops`).
    nh_routes: usize,
    /// `--only SECTION` (one of `xtask::BENCH_SECTIONS`): that section alone,
    /// printed, no report (conformance, policy and full-table also write their keys of bench.json).
    only: Option<String>,
}

fn config() -> Result<Config> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.windows(2).find(|w| w[0] == "--only").map(|w| w[1].clone());
    if let Some(o) = only.as_deref().filter(|o| !xtask::BENCH_SECTIONS.contains(o)) {
        anyhow::bail!("--only {o}: no such section (sections: {})", xtask::BENCH_SECTIONS.join(", "));
    }
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).map_or("target/bench".into(), PathBuf::from);
    Ok(if quick {
        Config {
            quick,
            out,
            repeat: 200_000,
            cost_runs: 5,
            v4_tables: vec![0, 1_000, 100_000],
            v6_tables: vec![0, 20_000, 200_000],
            lab_seconds: 0.5,
            cow_dests: 10_000,
            memory_routes: 100_000,
            fib_routes: 100_000,
            fib_churn: 20_000,
            nh_routes: 100_000,
            only,
        }
    } else {
        Config {
            quick,
            out,
            repeat: 1_000_000,
            cost_runs: 11,
            v4_tables: vec![0, 1_000, 100_000, 1_000_000],
            v6_tables: vec![0, 20_000, 200_000],
            lab_seconds: 3.0,
            cow_dests: 50_000,
            memory_routes: 1_000_000,
            fib_routes: 1_000_000,
            fib_churn: 100_000,
            nh_routes: 1_000_000,
            only,
        }
    })
}

/// Runs of the COW engine's figures (each a fresh RIB and maps).
const COW_RUNS: usize = 3;

/// Runs of the kernel FIB mirror's figures (each loads the whole table).
const FIB_RUNS: usize = 3;

/// Whether `--only` leaves section `name` in.
fn want(cfg: &Config, name: &str) -> bool {
    cfg.only.as_deref().is_none_or(|o| o == name)
}

fn progress(start: Instant) -> impl Fn(&str) {
    move |msg: &str| eprintln!("[bench {:>6.1}s] {msg}", start.elapsed().as_secs_f64())
}

#[derive(serde::Serialize)]
struct LabRow {
    mode: Mode,
    size: usize,
    flows: u32,
    delivered_pps: Summary,
    router_ns_per_packet: Summary,
    /// delivered pps / kernel forwarding's in the same round
    pps_vs_kernel: Summary,
    /// kernel forwarding's router ns per packet / this mode's, same round
    capacity_vs_kernel: Summary,
    /// delivered pps / the redirect-only program's in the same round
    pps_vs_ceiling: Summary,
}

#[derive(serde::Serialize)]
struct Report {
    repeat: u32,
    machine: String,
    kernel: String,
    quick: bool,
    program_cost: Vec<program_cost::CostRow>,
    lab: Vec<LabRow>,
    full_table: Option<full_table::FullTableFigures>,
    /// Sections this machine cannot run, each with why.
    blocked: Vec<String>,
    /// One per run.
    cow: Vec<control_plane::CowFigures>,
    memory: control_plane::MemoryFigures,
    dir24: Vec<control_plane::Dir24Figures>,
    /// One per run.
    fib: Vec<fib_scale::FibScaleFigures>,
    /// One per run: a full table over FPM, at random.
    fpm: Vec<fpm_scale::FpmScaleFigures>,
    /// One per run: the same table in zebra's replay order (prefix order).
    fpm_replay: Vec<fpm_scale::FpmScaleFigures>,
    nexthops: nexthop_scale::NexthopScaleFigures,
    slow_path: Vec<slow_path::SlowPathFigures>,
    control_plane: ControlPlane,
    conformance: cowroute_tests::conformance::Figures,
}

/// The control plane's headline figures, under stable keys.
#[derive(serde::Serialize)]
struct ControlPlane {
    /// The agent's RssAnon per route with a full table of both families
    /// (FPM runs: `fib_routes` IPv4 and a fifth as many IPv6), median of the runs.
    memory_bytes_per_route: f64,
    memory_bytes_per_route_runs: Summary,
}

/// Every mode, frame size and flow count, interleaved round by round.
fn lab_throughput(cfg: &Config, say: &dyn Fn(&str)) -> Result<Vec<LabRow>> {
    say("lab throughput: kernel forwarding, native, generic; live-frames generator on CPU 0; modes interleaved round by round");
    let cases: &[(usize, u32)] = if cfg.quick { &[(64, 1), (64, 256)] } else { &[(64, 1), (64, 256), (1500, 1), (1500, 256)] };
    let mut bench = Bench::up(&throughput::Table::OneRoute, say)?;
    // (frame size, mode, flows) -> (router pps, sink pps) per round.
    type Samples = std::collections::BTreeMap<(usize, usize, u32), (Vec<f64>, Vec<f64>)>;
    let mut samples: Samples = Default::default();
    let rounds = if cfg.quick { 3 } else { 5 };
    for round in 0..rounds {
        for (mi, mode) in Mode::ALL.into_iter().enumerate() {
            bench.set_mode(mode)?;
            for &(size, flows) in cases {
                let r = bench.run(size, flows, &[], Duration::from_secs_f64(cfg.lab_seconds))?;
                say(&format!(
                    "  round {}: {}, {size} B, {flows} flows: {:.0} pps offered, {:.0} delivered, {:.0} ns/pkt",
                    round + 1,
                    mode.name(),
                    r.offered_pps,
                    r.delivered_pps,
                    r.router_ns_per_packet
                ));
                let e = samples.entry((mi, size, flows)).or_default();
                e.0.push(r.delivered_pps);
                e.1.push(r.router_ns_per_packet);
            }
        }
    }
    drop(bench);
    let raw: Vec<(Mode, usize, u32, Summary, Summary)> =
        samples.into_iter().map(|((mi, size, flows), (pps, ns))| (Mode::ALL[mi], size, flows, summarize(pps), summarize(ns))).collect();
    // Ratios are paired: each round's mode against the same round's kernel
    // forwarding, measured seconds apart; the report gives their median.
    Ok(raw
        .iter()
        .map(|(mode, size, flows, pps, ns)| {
            let of = |m: Mode| raw.iter().find(|r| r.0 == m && r.1 == *size && r.2 == *flows).unwrap();
            let (k, ceiling) = (of(Mode::Kernel), of(Mode::Ceiling));
            let paired = |a: &[f64], b: &[f64], f: &dyn Fn(f64, f64) -> f64| summarize(a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect());
            LabRow {
                mode: *mode,
                size: *size,
                flows: *flows,
                pps_vs_kernel: paired(&pps.samples, &k.3.samples, &|m, k| m / k),
                capacity_vs_kernel: paired(&ns.samples, &k.4.samples, &|m, k| k / m),
                pps_vs_ceiling: paired(&pps.samples, &ceiling.3.samples, &|m, c| m / c),
                delivered_pps: pps.clone(),
                router_ns_per_packet: ns.clone(),
            }
        })
        .collect())
}

fn main() -> Result<()> {
    let cfg = config()?;
    let start = Instant::now();
    let say = progress(start);
    std::fs::create_dir_all(&cfg.out)?;

    let mut cost = Vec::new();
    if want(&cfg, "cost") {
        // BPF_PROG_TEST_RUN runs on the calling CPU: one CPU for every
        // sample (the other is the noisier one here).
        let all = cpus::affinity()?;
        cpus::set_affinity(0, &[0])?;
        say("program cost: BPF_PROG_TEST_RUN, 64-byte frames, on CPU 0");
        let mut tables: Vec<(&'static str, Vec<ipnet::IpNet>)> =
            cfg.v4_tables.iter().map(|&n| ("ipv4", cowroute_tests::synthetic::v4_table(n, 42))).collect();
        tables.extend(cfg.v6_tables.iter().map(|&n| ("ipv6", cowroute_tests::synthetic::v6_table(n, 43))));
        cost = program_cost::measure(&tables, cfg.repeat, cfg.cost_runs, &say)?;
        // Back to every CPU: the agents and tools started from here on
        // inherit this thread's mask.
        cpus::set_affinity(0, &all)?;
    }

    if cfg.only.as_deref() == Some("cost") {
        for r in &cost {
            say(&format!(
                "{} {} prefixes: lookup RO {} ({} one IPv4 route, {} the largest IPv4 table, paired) RW {} ns; forward RO {} RW {} ns",
                r.family,
                r.prefixes,
                fmt(&r.lookup_ro_ns, 1),
                fmt(&r.lookup_vs_first, 2),
                fmt(&r.lookup_vs_largest_ipv4, 2),
                fmt(&r.lookup_rw_ns, 1),
                fmt(&r.forward_ro_ns, 1),
                fmt(&r.forward_rw_ns, 1)
            ));
        }
        return Ok(());
    }
    // A section the machine cannot run (a kernel that refuses the
    // generator) is reported blocked, loudly, and the others still run;
    // asked for alone, it fails.
    let mut blocked: Vec<String> = Vec::new();
    let unless_refused = |blocked: &mut Vec<String>, section: &str, e: anyhow::Error| -> Result<()> {
        if cfg.only.is_some() || !trafficgen::refused(&e) {
            return Err(e);
        }
        let why = format!("{section}: {}", trafficgen::LIVE_FRAMES_REFUSED);
        say(&format!("BLOCKED: section {why}"));
        blocked.push(why);
        Ok(())
    };
    let lab = if want(&cfg, "lab") {
        lab_throughput(&cfg, &say).or_else(|e| unless_refused(&mut blocked, "lab", e).map(|()| Vec::new()))?
    } else {
        Vec::new()
    };
    if cfg.only.as_deref() == Some("lab") {
        for r in &lab {
            say(&format!(
                "{}, {} B, {} flows: {} pps, {} ns/pkt, pps vs kernel {}, capacity vs kernel {}, pps vs the ceiling {}",
                r.mode.name(),
                r.size,
                r.flows,
                fmt(&r.delivered_pps, 0),
                fmt(&r.router_ns_per_packet, 0),
                fmt(&r.pps_vs_kernel, 2),
                fmt(&r.capacity_vs_kernel, 2),
                fmt(&r.pps_vs_ceiling, 2)
            ));
        }
        return Ok(());
    }

    // The same generator: once refused, the full-table lab is not built
    // only to be refused again.
    let full_table = if want(&cfg, "full-table") && !blocked.is_empty() {
        unless_refused(&mut blocked, "full-table", anyhow::anyhow!(trafficgen::LIVE_FRAMES_REFUSED))?;
        None
    } else if want(&cfg, "full-table") {
        full_table::measure(cfg.fib_routes, cfg.fib_routes / 5, if cfg.quick { 2 } else { 4 }, cfg.lab_seconds.max(1.0), &say)
            .map(Some)
            .or_else(|e| unless_refused(&mut blocked, "full-table", e).map(|()| None))?
    } else {
        None
    };
    if let (Some("full-table"), Some(f)) = (cfg.only.as_deref(), &full_table) {
        println!("{}", full_table::markdown(f));
        say(&format!("wrote the full-table figures to {}", write_key(&cfg, "full_table", f)?.display()));
        return Ok(());
    }
    if cfg.only.as_deref() == Some("fpm") {
        for order in [fpm_scale::Order::Random, fpm_scale::Order::Replay] {
            let f = fpm_scale::measure(cfg.fib_routes, cfg.fib_routes / 5, order, &say)?;
            say(&serde_json::to_string_pretty(&f)?);
        }
        return Ok(());
    }
    if cfg.only.as_deref() == Some("fib") {
        let fib = fib_scale::measure(cfg.fib_routes, cfg.fib_churn, &say)?;
        say(&serde_json::to_string_pretty(&fib)?);
        return Ok(());
    }
    if cfg.only.as_deref() == Some("conformance") {
        let f = conformance::measure(conformance_frames(&cfg), &say)?;
        say(&format!("wrote the conformance figures to {}", write_key(&cfg, "conformance", &f)?.display()));
        anyhow::ensure!(f.unexpected_differences == 0 && f.linux_against_linux == 0, "differences from Linux: see above");
        return Ok(());
    }
    if cfg.only.as_deref() == Some("policy") {
        let all = cpus::affinity()?;
        cpus::set_affinity(0, &[0])?;
        say("policy cost: BPF_PROG_TEST_RUN, 64-byte IPv4, rules before `lookup main` or `lookup 100`, on CPU 0");
        let rows = policy_cost::measure(cfg.repeat, cfg.cost_runs, &say)?;
        cpus::set_affinity(0, &all)?;
        for r in &rows {
            say(&format!(
                "{} rules, then {}: lookup {} ns ({} no rules, paired), forward {} ns",
                r.rules,
                r.decided_by,
                fmt(&r.lookup_ns, 1),
                fmt(&r.lookup_vs_no_rules, 2),
                fmt(&r.forward_ns, 1)
            ));
        }
        write_key(&cfg, "policy_cost", &rows)?;
        return Ok(());
    }
    if cfg.only.as_deref() == Some("nexthops") {
        say(&format!("kernel nexthop objects: {} routes through 1,064 objects, cold start, ip nexthop replace", cfg.nh_routes));
        let nh = nexthop_scale::measure(cfg.nh_routes, &say)?;
        say(&serde_json::to_string_pretty(&nh)?);
        println!("{}", nexthops_markdown(&nh));
        return Ok(());
    }
    say(&format!("COW engine: {} destinations, COW / write / destroy, {COW_RUNS} runs", cfg.cow_dests));
    let cow = (0..COW_RUNS).map(|_| control_plane::cow_latency(cfg.cow_dests)).collect::<Result<Vec<_>>>()?;
    say(&format!("metrics memory: {} routes, 10 distinct metric sets", cfg.memory_routes));
    let memory = control_plane::metrics_memory(cfg.memory_routes, 10, &say)?;
    say("DIR-24 index: the default route and a /8 added, changed, removed");
    let dir24 = control_plane::dir24_wide_routes(5)?;
    let mut fib = Vec::new();
    for run in 1..=FIB_RUNS {
        say(&format!(
            "kernel FIB mirror, run {run}/{FIB_RUNS}: {} routes with ip -batch into a lab router, then {} replaced",
            cfg.fib_routes, cfg.fib_churn
        ));
        fib.push(fib_scale::measure(cfg.fib_routes, cfg.fib_churn, &say)?);
    }
    let (mut fpm, mut fpm_replay) = (Vec::new(), Vec::new());
    for run in 1..=FIB_RUNS {
        say(&format!(
            "FPM source, run {run}/{FIB_RUNS}: {} routes from a zebra stand-in, at random, then in its replay's order",
            cfg.fib_routes
        ));
        fpm.push(fpm_scale::measure(cfg.fib_routes, cfg.fib_routes / 5, fpm_scale::Order::Random, &say)?);
        fpm_replay.push(fpm_scale::measure(cfg.fib_routes, cfg.fib_routes / 5, fpm_scale::Order::Replay, &say)?);
    }
    say(&format!("kernel nexthop objects: {} routes through 1,064 objects, cold start, ip nexthop replace", cfg.nh_routes));
    let nexthops = nexthop_scale::measure(cfg.nh_routes, &say)?;
    let slow_frames = if cfg.quick { 50_000 } else { 200_000 };
    say(&format!("slow path: {slow_frames} TTL-1 datagrams a run, each answered with Time Exceeded"));
    let slow_path = slow_path::measure(slow_frames, 3, &say)?;
    say(&format!("conformance: {} generated frames and the hand-written cases against Linux", conformance_frames(&cfg)));
    let conformance = conformance::measure(conformance_frames(&cfg), &say)?;

    let memory_per_route = summarize(fpm.iter().map(|f| f.memory_bytes_per_route).collect());
    let report = Report {
        repeat: cfg.repeat,
        machine: format!("{} CPUs, {}", num_cpus(), first_line("/proc/cpuinfo", "model name")),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_string(),
        quick: cfg.quick,
        program_cost: cost,
        lab,
        full_table,
        blocked,
        cow,
        memory,
        dir24,
        fib,
        fpm,
        fpm_replay,
        nexthops,
        slow_path,
        control_plane: ControlPlane { memory_bytes_per_route: memory_per_route.median, memory_bytes_per_route_runs: memory_per_route },
        conformance,
    };
    std::fs::write(cfg.out.join("bench.json"), serde_json::to_string_pretty(&report)?)?;
    plots::write(
        &cfg.out,
        &report.program_cost,
        &report.lab.iter().map(|r| (r.mode.name(), r.size, r.flows, r.delivered_pps.median)).collect::<Vec<_>>(),
    )?;
    let md = markdown(&report);
    std::fs::write(cfg.out.join("report.md"), &md)?;
    println!("{md}");
    say(&format!("wrote {}/report.md, bench.json, ns_per_packet.svg, pps_per_mode.svg", cfg.out.display()));
    Ok(())
}

/// A section run alone (`--only`) writes its key of bench.json, under the
/// same name the whole bench gives it, the rest of the file kept. Returns
/// the file's path.
fn write_key(cfg: &Config, key: &str, value: &impl serde::Serialize) -> Result<PathBuf> {
    let path = cfg.out.join("bench.json");
    let mut json: serde_json::Value =
        std::fs::read_to_string(&path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_else(|| serde_json::json!({}));
    json[key] = serde_json::to_value(value)?;
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    Ok(path)
}

/// Generated frames of the conformance section: 200,000 (20,000 with --quick).
fn conformance_frames(cfg: &Config) -> usize {
    if cfg.quick {
        20_000
    } else {
        200_000
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn first_line(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s += &format!(
        "# cowroute bench{}\n\nMachine: {}; kernel {}. Figures: median (min–max).\n\n",
        if r.quick { " (--quick)" } else { "" },
        r.machine,
        r.kernel
    );
    s += &format!("## Program cost (BPF_PROG_TEST_RUN, 64-byte frames)\n\nLookup path: {} repetitions per sample in 5 calls, the fastest call's mean (interference here comes in spells that double a call's time, whatever the table) (parse, LPM lookup, next hop, metrics through the reference; the kernel reuses one buffer, so after 254 forwarded copies the probe's TTL has run out and each repetition stops at the TTL check). Forward: the whole path, {} forwarded packets per sample (20 calls, their median).\n\n| family | prefixes | lookup, RO ns/pkt | vs 1 IPv4 route, paired | vs largest IPv4 table, paired | lookup, RW ns/pkt | RW / RO | forward, RO ns/pkt | forward, RW ns/pkt | RW / RO |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n", r.repeat, 250 * 20);
    for c in &r.program_cost {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.3} | {} | {} | {:.3} |\n",
            c.family,
            c.prefixes,
            fmt(&c.lookup_ro_ns, 1),
            fmt(&c.lookup_vs_first, 2),
            fmt(&c.lookup_vs_largest_ipv4, 2),
            fmt(&c.lookup_rw_ns, 1),
            c.rw_over_ro,
            fmt(&c.forward_ro_ns, 1),
            fmt(&c.forward_rw_ns, 1),
            c.forward_rw_over_ro
        );
    }
    if let Some(big) = r.program_cost.iter().rfind(|c| c.family == "ipv4") {
        s += &format!("\nTables are measured round by round (each round every table once, on CPU 0); \"vs 1 route\" is each round's ratio to the one-route table's lookup path in the same round. Largest IPv4 table ({} prefixes) against one route, lookup path: {} (goal: at most 1.1x). RW against RO: {:.3} (goal: at most 1.1).\n", big.prefixes, fmt(&big.lookup_vs_first, 2), big.rw_over_ro);
    }
    if let Some(v6) = r.program_cost.iter().rfind(|c| c.family == "ipv6") {
        s += &format!("Largest IPv6 table ({} prefixes, mostly /48, /29-/64, some longer) against the largest IPv4 table, lookup path, paired per round: {} (goal: at most 1.25x).\n", v6.prefixes, fmt(&v6.lookup_vs_largest_ipv4, 2));
    }
    for b in &r.blocked {
        s += &format!("\n**Blocked on this machine**: {b}.\n");
    }
    s += "\n## Lab throughput (gen -- rtr -- sink; live-frames generator on CPU 0, the router's NAPI thread on CPU 1)\n\n| mode | frame | flows | delivered pps | router ns/pkt | pps vs kernel | capacity vs kernel | pps vs redirect only |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for l in &r.lab {
        s += &format!(
            "| {} | {} B | {} | {} | {} | {} | {} | {} |\n",
            l.mode.name(),
            l.size,
            l.flows,
            fmt(&l.delivered_pps, 0),
            fmt(&l.router_ns_per_packet, 0),
            fmt(&l.pps_vs_kernel, 2),
            fmt(&l.capacity_vs_kernel, 2),
            fmt(&l.pps_vs_ceiling, 2)
        );
    }
    s += "\nModes are interleaved round by round; the ratios are per round (each mode against kernel forwarding measured seconds before it), then median (min–max) over the rounds. The generator (BPF_PROG_RUN with live frames, batches of 64) offers more than any mode forwards; what the router's veth queue (256 frames) cannot take is dropped there, so delivered pps is the router's rate. \"router ns/pkt\" is CPU 1's busy time (the router's NAPI thread, its forwarding and the sink's XDP drop) per delivered packet; \"capacity vs kernel\" is kernel forwarding's router ns/pkt over this mode's. CPU 1 is not saturated in any mode (its NAPI thread sleeps between bursts while the ring overflows), so the pps and capacity ratios differ; both are given. \"pps vs redirect only\" is against a native program that sends every frame straight to the sink's link (no parsing, lookup or rewrite) in the same round: the lab's ceiling (goal for cowroute native, 64 B: at least 0.9).\n";
    if let Some(f) = &r.full_table {
        s += &full_table::markdown(f);
    }
    // Each figure: median (min–max) over the runs.
    let l = |op: fn(&control_plane::CowFigures) -> &control_plane::Latency| {
        let over = |f: fn(&control_plane::Latency) -> f64, d: usize| fmt(&summarize(r.cow.iter().map(|c| f(op(c))).collect()), d);
        format!(
            "{} ops a run, p50 {} µs, p99 {} µs, max {} µs, {}/s",
            op(&r.cow[0]).operations,
            over(|x| x.p50_us, 1),
            over(|x| x.p99_us, 1),
            over(|x| x.max_us, 1),
            over(|x| x.per_second, 0)
        )
    };
    s += &format!("\n## Copy-on-write (agent write path into the real maps), {} runs\n\n- COW (allocate, fill, publish): {}\n- write into a private copy: {}\n- destroy (unpublish, quarantine): {}\n", r.cow.len(), l(|c| &c.cow), l(|c| &c.write), l(|c| &c.destroy));
    let m = &r.memory;
    s += &format!(
        "\n## Metrics memory (1 run: the counts are exact)\n\n{} IPv4 routes with {} distinct metric sets, loaded through the agent's write path in {:.1} s ({:.0} routes/s): {} shared METRICS_RO slots in use = {} bytes of metrics, against {} bytes ({:.1} MiB) with one copy per route. Agent RSS grew {:.0} MiB.\n",
        m.routes, m.distinct_sets, m.load_seconds, m.routes_per_second, m.metrics_ro_slots_used, m.shared_metrics_bytes, m.private_metrics_bytes, m.private_metrics_bytes as f64 / 1048576.0, m.agent_rss_growth_mib
    );
    s += "\n## DIR-24 index: wide IPv4 routes\n\nMilliseconds through the map writer (the blocks are one mapped array; a change takes a new entry slot and rewrites every block the route owns), 5 runs:\n\n| prefix | blocks | add ms | change ms | remove ms |\n|---|---:|---:|---:|---:|\n";
    for d in &r.dir24 {
        s += &format!("| {} | {} | {} | {} | {} |\n", d.prefix, d.blocks, fmt(&d.add_ms, 2), fmt(&d.change_ms, 2), fmt(&d.delete_ms, 2));
    }
    // Every figure: median (min–max) over the runs; map memory from the last.
    let f = |pick: fn(&fib_scale::FibScaleFigures) -> f64, digits: usize| fmt(&summarize(r.fib.iter().map(pick).collect()), digits);
    let last = r.fib.last().expect("at least one run");
    s += &format!(
        "\n## Kernel FIB mirror at scale (`--source kernel`, lab router), {} runs\n\n{} IPv4 routes (Internet-like prefix lengths, 4 gateways) put into rtr's kernel with `ip -batch` while the agent runs: the kernel took {} s; the maps held every route {} s after the batch began ({} routes/s; goal: under 10 s). Churn: {} `route replace` with a new MTU, kernel {} s, applied by the agent {} s after the batch began ({} routes/s; goal: at least 100,000/s). Netlink overruns: {}. Agent RSS {} MiB, of which its own (RssAnon, the rest being mapped maps and the binary) {} MiB. Map memory (kernel accounting, last run) {:.1} MiB:\n\n| map | bytes |\n|---|---:|\n",
        r.fib.len(), last.routes, f(|x| x.kernel_insert_seconds, 1), f(|x| x.mirrored_seconds, 1), f(|x| x.mirrored_routes_per_second, 0), last.churn_routes,
        f(|x| x.churn_kernel_seconds, 1), f(|x| x.churn_seconds, 1), f(|x| x.churn_routes_per_second, 0), f(|x| x.overruns as f64, 0), f(|x| x.agent_rss_mib, 0), f(|x| x.agent_private_mib, 0), last.map_memory_total_mib
    );
    for m in &last.map_memory {
        s += &format!("| {} | {} |\n", m.map, m.bytes);
    }
    s += &format!(
        "\nThe agent's own rates, the kernel out of the way: a new agent started against the full table was ready (dump, every route in the maps) in {} s ({} routes/s, {} µs of the agent's CPU a route), its peak resident set (VmHWM) {} MiB; stopped while the kernel took {} replaces and resumed, it applied the backlog in {} s ({} routes/s, {} µs of CPU a route).\n\n",
        f(|x| x.startup_seconds, 1), f(|x| x.startup_routes_per_second, 0), f(|x| x.startup_cpu_us_per_route, 2), f(|x| x.startup_peak_rss_mib, 0), last.churn_routes, f(|x| x.backlog_seconds, 2), f(|x| x.backlog_routes_per_second, 0), f(|x| x.backlog_cpu_us_per_route, 2)
    );
    let g = |pick: fn(&fpm_scale::FpmScaleFigures) -> f64, digits: usize| fmt(&summarize(r.fpm.iter().map(pick).collect()), digits);
    s += &format!(
        "## FPM source at scale (`--source fpm`), {} runs\n\nThe bench plays zebra's dplane_fpm_nl: {} IPv4 routes, one RTM_NEWROUTE frame each, over TCP to the agent in a lab router. The maps held every route {} s after the first byte ({} routes/s; goal: under 3 s; {} µs of the agent's CPU a route); the sender was done after {} s. The agent's own memory grew {} bytes per route. Then {} IPv6 routes on the same connection, in the maps after {} s: the agent's own memory (RssAnon) per route, both families, from before the first route to after the last: {} bytes (`control_plane.memory_bytes_per_route`; goal: at most 150).\n\n",
        r.fpm.len(), r.fpm.last().map_or(0, |x| x.routes), g(|x| x.mirrored_seconds, 2), g(|x| x.routes_per_second, 0), g(|x| x.cpu_us_per_route, 2), g(|x| x.send_seconds, 2), g(|x| x.agent_bytes_per_route, 0),
        r.fpm.last().map_or(0, |x| x.v6_routes), g(|x| x.v6_seconds, 2), fmt(&r.control_plane.memory_bytes_per_route_runs, 0)
    );
    let h = |pick: fn(&fpm_scale::FpmScaleFigures) -> f64, digits: usize| fmt(&summarize(r.fpm_replay.iter().map(pick).collect()), digits);
    s += &format!(
        "The same tables in zebra's replay order (prefix order: what it sends on connecting, a walk of its route table; `fpm_replay`): IPv4 in the maps after {} s ({} µs of the agent's CPU a route), IPv6 after {} s; the agent's own memory per route, both families, {} bytes: B-trees filled in key order split into half-full nodes.\n\n",
        h(|x| x.mirrored_seconds, 2), h(|x| x.cpu_us_per_route, 2), h(|x| x.v6_seconds, 2), h(|x| x.memory_bytes_per_route, 0)
    );
    s += &nexthops_markdown(&r.nexthops);
    s += "\n## Slow path (AF_XDP, copy mode): ICMP errors the agent answers\n\ngen floods rtr with TTL-1 datagrams from one socket; every one is handed to the agent, which answers with Time Exceeded (rate limits off). 3 runs.\n\n| XDP mode | offered frames/s | answered frames/s | dropped at a full socket |\n|---|---:|---:|---:|\n";
    for p in &r.slow_path {
        s += &format!(
            "| {} | {} | {} | {:.1}% |\n",
            p.mode,
            fmt(&p.offered_pps, 0),
            fmt(&p.answered_pps, 0),
            p.socket_dropped_share.median * 100.0
        );
    }
    let c = &r.conformance;
    s += &format!(
        "\n## Conformance with Linux\n\n{} hand-written cases and {} generated frames ({} frames a run) through rtr in the runs {:?}, compared byte for byte with the Linux run: {} differences, {} of them known (pending fixes, listed in the README), {} unexpected; Linux against Linux: {}. {:.0} s.\n",
        c.hand_written_cases, c.generated_frames, c.frames_per_run, c.runs, c.differences, c.known_differences, c.unexpected_differences, c.linux_against_linux, c.seconds
    );
    s
}

/// The `nexthops` section of the report.
fn nexthops_markdown(n: &nexthop_scale::NexthopScaleFigures) -> String {
    let mut s = format!(
        "\n## Kernel nexthop objects at scale (`--source kernel`, lab router, nexthop_compat_mode 0), 1 run\n\n{} single nexthop objects over {} gateways and {} groups of 4 (object 1 a member of each): the agent carried them all {:.2} s after their `ip -batch` began. {} IPv4 routes (`route add PREFIX nhid ID`, half through the singles, half through the groups) with `ip -batch`: the kernel took {:.1} s; the maps held every route {:.1} s after the batch began ({:.0} routes/s). Netlink overruns: {}. Agent RssAnon {:.0} MiB, {:.0} bytes per route over the load. A new agent started against the full table was ready in {:.1} s ({:.0} routes/s; its stats: {} routes; RssAnon {:.0} MiB).\n\n",
        n.singles, n.gateways, n.groups, n.objects_seconds, n.routes, n.kernel_insert_seconds, n.mirrored_seconds, n.mirrored_routes_per_second,
        n.overruns, n.agent_private_mib, n.agent_private_bytes_per_route, n.startup_seconds, n.startup_routes_per_second, n.startup_routes, n.startup_agent_private_mib
    );
    s += &format!(
        "`ip nexthop replace id 1` (object 1: {} routes straight through it, {} through the groups), {} times between two gateways. \"ip\" is the command's run time (any `ip` command here takes {} ms: `ip nexthop get`); \"entry\" is from the command's issue until object 1's NEXTHOPS entry, read from the pinned maps as the fast path reads it, held the new MAC; \"settled\" until the agent's netlink event count last moved.\n\n| compat mode | ip ms | entry ms | settled ms | events | overruns | NEXTHOPS entries republished | NH_GROUPS republished | route entries kept | routes before / after |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        n.object1_direct_routes, n.object1_group_routes, n.replaces.len(), fmt(&n.ip_floor_ms, 2)
    );
    s += &format!(
        "| 0 (median, min–max) | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
        fmt(&n.replace_kernel_ms, 2),
        fmt(&n.replace_entry_ms, 2),
        fmt(&n.replace_settled_ms, 0),
        n.replaces.iter().map(|r| r.events.to_string()).collect::<Vec<_>>().join(", "),
        n.replaces.iter().map(|r| r.overruns).sum::<u64>(),
        n.replaces.iter().map(|r| r.nexthops_republished.to_string()).collect::<Vec<_>>().join(", "),
        n.replaces.iter().map(|r| r.groups_republished.to_string()).collect::<Vec<_>>().join(", "),
        n.replaces.iter().all(|r| r.route_entries_kept),
        n.replaces[0].routes_before,
        n.replaces.last().map_or(0, |r| r.routes_after)
    );
    let c = &n.compat1;
    s += &format!(
        "| 1 | {:.1} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} / {} |\n",
        c.kernel_ms,
        c.entry_ms,
        c.settled_ms,
        c.events,
        c.overruns,
        c.nexthops_republished,
        c.groups_republished,
        c.route_entries_kept,
        c.routes_before,
        c.routes_after
    );
    let others: Vec<String> = n.replaces.iter().chain([c]).flat_map(|r| r.other_nexthop_ids.iter().map(|id| id.to_string())).collect();
    if !others.is_empty() {
        s += &format!("\nBesides object 1's, NEXTHOPS ids {} moved within those windows: not object 1's, so other events of the lab meanwhile (a neighbour's state), counted in the same columns.\n", others.join(", "));
    }
    if n.compat1_over_limit {
        s += "\nWith compat mode 1 the agent took over 60 s to settle at this size.\n";
    }
    s
}
