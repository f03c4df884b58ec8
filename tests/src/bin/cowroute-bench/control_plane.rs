//! Control-plane figures through the agent's own write path (Rib + MapWriter
//! into real maps): COW latency and rate, and metrics memory for a full
//! table with shared metric sets against one private copy per route.

use crate::stats::percentile;
use anyhow::Result;
use common::{RouteKind, RouteMetrics, Rtax};
use cowroute::{
    dataplane::map_writer::MapWriter,
    dataplane::{DataPlane, LoadOptions},
    fib::netlink_mirror::{Event, Link},
    rib::cow::Source,
    rib::{Capacities, Rib, RouteInput},
};
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

fn rib() -> Result<(DataPlane, Rib<MapWriter>)> {
    let mut dp = DataPlane::load(&LoadOptions::default())?;
    let writer = dp.map_writer()?;
    let mut rib = Rib::new(writer, Capacities::default(), Duration::from_secs(1));
    let lo = Link { index: 1, name: "lo".into(), mac: [0; 6], mtu: 65536, up: true, vlan: None, rx_queues: 1 };
    rib.apply(Event::Link(lo), Instant::now())?;
    Ok((dp, rib))
}

fn route(prefix: &str, metrics: RouteMetrics) -> Result<RouteInput> {
    Ok(RouteInput::new(prefix.parse()?, RouteKind::Unicast, Some(1), Some("10.255.255.254".parse()?), metrics))
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub operations: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub per_second: f64,
}

fn latency(mut us: Vec<f64>, wall: Duration) -> Latency {
    let n = us.len();
    us.sort_by(|a, b| a.total_cmp(b));
    Latency {
        operations: n,
        p50_us: percentile(&us, 50.0),
        p99_us: percentile(&us, 99.0),
        max_us: percentile(&us, 100.0),
        per_second: n as f64 / wall.as_secs_f64(),
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CowFigures {
    /// A new private copy: allocate, fill, publish the host entry.
    pub cow: Latency,
    /// A write into an existing private copy (one word, in place).
    pub write: Latency,
    /// Destroy: unpublish, quarantine.
    pub destroy: Latency,
}

/// `dests` destinations under one /8: each gets a private copy (COW), is
/// written again, and is destroyed.
pub fn cow_latency(dests: usize) -> Result<CowFigures> {
    let (_dp, mut rib) = rib()?;
    let mut m = RouteMetrics::DEFAULT;
    m.set(Rtax::Mtu, 1500);
    rib.set_route(route("10.0.0.0/8", m)?, Instant::now())?;
    let addrs: Vec<IpAddr> = (0..dests).map(|i| IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])).collect();
    let mut phase = |f: &mut dyn FnMut(&mut Rib<MapWriter>, IpAddr) -> Result<()>| -> Result<Latency> {
        let mut us = Vec::with_capacity(dests);
        let wall = Instant::now();
        for a in &addrs {
            let t = Instant::now();
            f(&mut rib, *a)?;
            us.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
        Ok(latency(us, wall.elapsed()))
    };
    let cow = phase(&mut |rib, a| Ok(rib.cow_metrics(a, Rtax::Mtu, 1400, Source::Operator, None, Instant::now())?))?;
    let write = phase(&mut |rib, a| Ok(rib.cow_metrics(a, Rtax::Mtu, 1450, Source::Operator, None, Instant::now())?))?;
    let destroy = phase(&mut |rib, a| Ok(rib.reset_metrics(a, Instant::now()).map(|_| ())?))?;
    Ok(CowFigures { cow, write, destroy })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryFigures {
    pub routes: usize,
    pub distinct_sets: usize,
    pub load_seconds: f64,
    pub routes_per_second: f64,
    pub metrics_ro_slots_used: usize,
    /// Bytes of metrics the routes read: shared slots.
    pub shared_metrics_bytes: usize,
    /// Bytes if every route had its own copy (the pre-seed layout).
    pub private_metrics_bytes: usize,
    pub agent_rss_growth_mib: f64,
}

fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Loads `routes` IPv4 prefixes with `sets` distinct metric sets through the
/// agent's write path and counts what the metrics take.
pub fn metrics_memory(routes: usize, sets: usize, progress: &dyn Fn(&str)) -> Result<MemoryFigures> {
    let table = cowroute_tests::synthetic::v4_table(routes, 7);
    let (_dp, mut rib) = rib()?;
    let rss0 = rss_kib();
    let started = Instant::now();
    for (i, p) in table.iter().enumerate() {
        let mut m = RouteMetrics::DEFAULT;
        m.set(Rtax::Mtu, 1400 + (i % sets) as u32 * 10);
        rib.set_route(RouteInput::new(*p, RouteKind::Unicast, Some(1), Some("10.255.255.254".parse()?), m), Instant::now())?;
        if (i + 1) % 250_000 == 0 {
            progress(&format!("  loaded {}/{} routes ({:.1} s)", i + 1, routes, started.elapsed().as_secs_f64()));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let used = rib.summary().metrics_ro_in_use;
    let size = std::mem::size_of::<RouteMetrics>();
    Ok(MemoryFigures {
        routes,
        distinct_sets: sets,
        load_seconds: secs,
        routes_per_second: routes as f64 / secs,
        metrics_ro_slots_used: used,
        shared_metrics_bytes: used * size,
        private_metrics_bytes: routes * size,
        agent_rss_growth_mib: (rss_kib() - rss0) / 1024.0,
    })
}

/// What a wide IPv4 route costs the DIR-24 index: ms to add it, to change
/// its entry (a new slot, every block it owns rewritten) and to remove it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Dir24Figures {
    pub prefix: String,
    pub blocks: u64,
    pub add_ms: crate::stats::Summary,
    pub change_ms: crate::stats::Summary,
    pub delete_ms: crate::stats::Summary,
}

/// The default route and a /8 through the map writer, `runs` times each.
pub fn dir24_wide_routes(runs: usize) -> Result<Vec<Dir24Figures>> {
    use common::{MetricsRef, RouteEntry};
    let mut dp = DataPlane::load(&LoadOptions::default())?;
    let mut writer = dp.map_writer()?.with_grace(Duration::ZERO);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let mut out = Vec::new();
    for prefix in ["0.0.0.0/0", "10.0.0.0/8"] {
        let p: ipnet::IpNet = prefix.parse()?;
        let [mut add, mut change, mut delete] = [(); 3].map(|_| Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            writer.put_route(&p, &RouteEntry::new(RouteKind::Unicast, 1, MetricsRef::DEFAULT, 1))?;
            add.push(ms(t));
            let t = Instant::now();
            writer.put_route(&p, &RouteEntry::new(RouteKind::Unicast, 2, MetricsRef::DEFAULT, 1))?;
            change.push(ms(t));
            let t = Instant::now();
            writer.delete_route(&p)?;
            delete.push(ms(t));
        }
        let blocks = 1u64 << (24 - p.prefix_len());
        let s = crate::stats::summarize;
        out.push(Dir24Figures { prefix: prefix.into(), blocks, add_ms: s(add), change_ms: s(change), delete_ms: s(delete) });
    }
    Ok(out)
}
