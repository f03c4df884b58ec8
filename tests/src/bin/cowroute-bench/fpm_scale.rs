//! FPM at scale (`--source fpm`): the bench plays zebra's dplane_fpm_nl,
//! connecting to the agent in a lab router and sending a full table, one
//! route per frame as zebra does. Records how long until the maps hold
//! every route, and the agent's own memory per route with an IPv6 table on
//! top (a full table's shape: 1M IPv4 and 200k IPv6 routes).

use crate::fib_scale::{cpu_seconds, get, settled, stats, status_mib};
use anyhow::{bail, Result};
use cowroute::{fib::fpm, operator::control::Client};
use cowroute_tests::{kernel_table, synthetic};
use std::{
    io::Write,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};
use xtask::{agent_proc::AgentProc, lab::Lab};

/// The order the table is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// At random, as BGP may deliver routes: every insert lands somewhere
    /// new in the agent's tables (the slow case for time).
    Random,
    /// Prefix order: what zebra sends when it connects, its replay being a
    /// walk of its route table. The agent's B-trees then split as they
    /// fill in order, and keep half-full nodes (the costly case for memory).
    Replay,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FpmScaleFigures {
    pub order: Order,
    pub routes: usize,
    /// From the first byte sent until the maps held every route.
    pub mirrored_seconds: f64,
    pub routes_per_second: f64,
    /// Of which the sender's own time (encoding is done before).
    pub send_seconds: f64,
    /// The agent's CPU time for the IPv4 table, per route.
    pub cpu_us_per_route: f64,
    /// The agent's own memory (RssAnon) per IPv4 route, from before to after.
    pub agent_bytes_per_route: f64,
    /// IPv6 routes sent after the IPv4 table.
    pub v6_routes: usize,
    pub v6_seconds: f64,
    /// RssAnon per route, IPv4 and IPv6 together, from before the first
    /// route to after the last: what `show routes` and adoption need is all
    /// kept (the RIB, the feed's record, the map writer's index).
    pub memory_bytes_per_route: f64,
}

/// Polls until the agent holds `want` routes (with a progress line a second).
fn wait_for_routes(client: &mut Client, want: u64, start: Instant, what: &str, progress: &dyn Fn(&str)) -> Result<f64> {
    let mut last_line = Instant::now();
    loop {
        let s = stats(client)?;
        if get(&s, &["routes"]) >= want {
            return Ok(start.elapsed().as_secs_f64());
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            progress(&format!(
                "  FPM: agent has {} of {want} routes ({what}, {:.1} s)",
                get(&s, &["routes"]),
                start.elapsed().as_secs_f64()
            ));
            last_line = Instant::now();
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("{what} over FPM not in the maps after 600 s: {s}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn measure(routes: usize, v6_routes: usize, order: Order, progress: &dyn Fn(&str)) -> Result<FpmScaleFigures> {
    let tag = format!("m{}", std::process::id() % 100_000);
    let lab = Lab::up(&tag)?;
    let dir = cowroute_tests::TempDir::new(&tag);
    let config = dir.0.join("rtr.toml");
    std::fs::write(&config, lab.hosts_config())?;
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/cowroute-bench-{tag}"));
    let args: Vec<String> =
        ["--config", &config.display().to_string(), "--xdp-mode", "generic", "--source", "fpm", "--slow-path", "kernel"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let agent = AgentProc::start(&lab.rtr, &pin_dir, &args, false)?;
    let mut client = Client::connect(&agent.control_socket)?;
    let gateways = kernel_table::gateways(&lab, 4)?;
    let oif = crate::throughput::ifindex_in(&lab.rtr, &lab.rtr_sink_if)?;
    let base = get(&stats(&mut client)?, &["routes"]);
    let before = status_mib(agent.pid(), "RssAnon");

    progress(&format!("  FPM: encoding {routes} routes, one RTM_NEWROUTE frame each, in {order:?} order"));
    let mut table = synthetic::v4_kernel_table(routes, 17);
    if order == Order::Replay {
        table.sort();
    }
    let mut stream = Vec::with_capacity(routes * 64);
    for (i, p) in table.iter().enumerate() {
        let gw: IpAddr = gateways[i % gateways.len()].addr.parse()?;
        stream.extend(fpm::frame_of(&[fpm::route_message(*p, gw, oif, true)]));
    }
    let addr = fpm::DEFAULT_LISTEN.parse()?;
    let mut conn = xtask::traffic::in_netns(&lab.rtr, move || Ok(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?))?;
    let start = Instant::now();
    let cpu0 = cpu_seconds(agent.pid());
    let (sent_tx, sent) = std::sync::mpsc::channel();
    let (close_tx, close) = std::sync::mpsc::channel::<()>();
    let (more_tx, more) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let r = conn.write_all(&stream).map(|_| start.elapsed().as_secs_f64());
        let _ = sent_tx.send(r);
        if let Ok(v6) = more.recv() {
            let _ = conn.write_all(&v6);
        }
        // Held open until the figures are taken: a closed connection is a zebra gone.
        let _ = close.recv();
    });
    let want = base + routes as u64;
    let mirrored = wait_for_routes(&mut client, want, start, &format!("{routes} IPv4 routes"), progress)?;
    let cpu = cpu_seconds(agent.pid()) - cpu0;
    let compactions = settled(&mut client, 0, progress)?;
    let after = status_mib(agent.pid(), "RssAnon");
    let send_seconds = sent.recv_timeout(Duration::from_secs(60))??;

    // The IPv6 table on the same connection (a new one would make every
    // route stale until the sweep).
    progress(&format!("  FPM: {v6_routes} IPv6 routes on top"));
    let gw6: IpAddr = xtask::lab::SINK_V6.parse()?;
    let mut v6_stream = Vec::with_capacity(v6_routes * 80);
    let mut v6_table = synthetic::v6_table(v6_routes, 23);
    if order == Order::Replay {
        v6_table.sort();
    }
    for p in v6_table {
        v6_stream.extend(fpm::frame_of(&[fpm::route_message(p, gw6, oif, true)]));
    }
    let v6_start = Instant::now();
    more_tx.send(v6_stream)?;
    let v6_seconds = wait_for_routes(&mut client, want + v6_routes as u64, v6_start, &format!("{v6_routes} IPv6 routes"), progress)?;
    settled(&mut client, compactions, progress)?;
    let all = status_mib(agent.pid(), "RssAnon");
    for line in agent.log().lines().filter(|l| l.contains("tables compacted")) {
        progress(&format!("  FPM: agent: {}", line.trim()));
    }
    let _ = close_tx.send(());
    drop(client);
    drop(agent);
    lab.down()?;
    Ok(FpmScaleFigures {
        order,
        routes,
        mirrored_seconds: mirrored,
        routes_per_second: routes as f64 / mirrored,
        send_seconds,
        cpu_us_per_route: cpu * 1e6 / routes as f64,
        agent_bytes_per_route: (after - before) * 1048576.0 / routes as f64,
        v6_routes,
        v6_seconds,
        memory_bytes_per_route: (all - before) * 1048576.0 / (routes + v6_routes) as f64,
    })
}
