//! `cowroute run`: load, program the maps, attach, then keep the maps in step
//! with the kernel until SIGINT or SIGTERM.

pub mod config;
pub mod netns;
pub mod reload;

use crate::{
    daemon::config::Config,
    daemon::reload::{CliSettings, Effective, ReloadReport, Resolved},
    dataplane::map_writer::MapWriter,
    dataplane::{Attached, DataPlane},
    fib::kernel_fib::{Change, KernelFib},
    fib::netlink_mirror::{self, Mirror},
    operator::control::{self, Request, Response},
    operator::stats,
    rib::cow::Source,
    rib::{Capacities, ResyncReport, Rib},
    slow_path::neighbour_queue::{self, FrameSender, NeighbourQueue, QueueStats},
    slow_path::pmtu,
    slow_path::{self, SlowPathMode},
};
use anyhow::{anyhow, bail, Result};
use aya::maps::{MapData, PerCpuArray};
use common::{maps, slow_path::PmtuEvent, Counter};
use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

/// Where the routes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RouteSource {
    /// The kernel's FIB over netlink (the tables given with --table).
    Kernel,
    /// The `[[route]]` list of the config file.
    Config,
}

pub struct RunOptions {
    pub ifaces: Vec<String>,
    /// The config file; optional with `--source kernel`.
    pub config: Option<PathBuf>,
    /// Settings the command line gave; the file's fill the rest.
    pub cli: CliSettings,
    pub pin_dir: PathBuf,
    pub grace: Duration,
    /// How long to wait for configured neighbours before declaring ready.
    pub resolve_wait: Duration,
    pub control_socket: PathBuf,
    /// Lifetime of an override set without `--expires` (the kernel's PMTU expiry).
    pub default_expires: Duration,
    /// SO_RCVBUF of the netlink subscription.
    pub netlink_rcvbuf: u32,
    /// Leave the data plane in place on exit.
    pub keep_on_exit: bool,
    /// The Prometheus endpoint's address, when wanted.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// How the netlink mirror is doing.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct NetlinkStats {
    /// Events applied.
    pub events: u64,
    /// Events the maps could not carry (logged).
    pub errors: u64,
    /// Socket overruns (ENOBUFS), each followed by a resync.
    pub overruns: u64,
    pub resyncs: u64,
    /// What the last resync changed.
    pub last_resync: Option<ResyncReport>,
}

/// Answers one control request. Runs on the daemon's loop: the one writer.
/// What `Stats` reads besides the RIB.
struct StatsSources<'a> {
    netlink: &'a NetlinkStats,
    counters: &'a PerCpuArray<MapData, Counter>,
    slow_path: &'a SlowPathStatus,
    pmtu: &'a pmtu::PmtuStats,
    waiting: &'a QueueStats,
}

/// A frame whose neighbour is unknown waits in its queue; the first one
/// has the kernel resolve the neighbour (over netlink).
fn hold_for_neighbour(
    rib: &Rib<MapWriter>,
    waiting: &mut NeighbourQueue,
    mirror: &Mirror,
    sender: &FrameSender,
    miss: slow_path::NeighbourMiss,
    now: Instant,
) {
    let Some(key) = rib.nexthop_key(miss.nexthop) else {
        waiting.stats.dropped += 1;
        return;
    };
    // A gateway's next hop waits for the gateway; a connected route's for
    // the packet's own destination.
    let Some(addr) = key.gateway.or_else(|| neighbour_queue::frame_destination(&miss.frame)) else {
        waiting.stats.dropped += 1;
        return;
    };
    if rib.usable_nexthop(key.ifindex, addr).is_some() {
        // Resolved meanwhile: waits for nothing.
        waiting.hold((key.ifindex, addr), miss.frame, now);
        release_resolved(rib, waiting, sender);
        return;
    }
    if waiting.hold((key.ifindex, addr), miss.frame, now) {
        let handle = mirror.handle.clone();
        tokio::spawn(async move {
            if let Err(e) = netlink_mirror::resolve(handle, key.ifindex, addr).await {
                tracing::debug!(error = %format!("{e:#}"), "neighbour resolution request");
            }
        });
    }
}

/// Sends the frames of every neighbour that is now resolved.
fn release_resolved(rib: &Rib<MapWriter>, waiting: &mut NeighbourQueue, sender: &FrameSender) {
    for key in waiting.keys() {
        let Some(nh) = rib.usable_nexthop(key.0, key.1) else { continue };
        for frame in waiting.release(&key) {
            let sent = neighbour_queue::forward_frame(&frame, &nh, nh.mtu).map(|f| sender.send(nh.ifindex, &f));
            if !matches!(sent, Some(Ok(()))) {
                waiting.stats.dropped += 1;
            }
        }
    }
}

/// A `PMTU_EVENTS` record, as the program wrote it.
fn pmtu_event(bytes: &[u8]) -> Option<PmtuEvent> {
    if bytes.len() != std::mem::size_of::<PmtuEvent>() {
        return None;
    }
    // SAFETY: PmtuEvent is plain old data of exactly this size.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const PmtuEvent) })
}

/// The slow path as it runs.
struct SlowPathStatus {
    mode: SlowPathMode,
    shared: Arc<slow_path::Shared>,
}

/// Opens the AF_XDP slow path on the attached interfaces. Where it cannot
/// (no AF_XDP, memlock), exceptions stay with the kernel, loudly.
fn start_slow_path(
    eff: &Effective,
    ifaces: &[String],
    rib: &Rib<MapWriter>,
    dp: &mut DataPlane,
    shared: &Arc<slow_path::Shared>,
) -> (Option<slow_path::SlowPath>, SlowPathStatus) {
    let kernel = SlowPathStatus { mode: SlowPathMode::Kernel, shared: shared.clone() };
    if eff.slow_path == SlowPathMode::Kernel {
        return (None, kernel);
    }
    let links = rib.link_indexes();
    let queues: std::collections::BTreeMap<u32, u32> =
        ifaces.iter().filter_map(|i| links.get(i)).map(|&x| (x, rib.link(x).map_or(1, |l| l.rx_queues))).collect();
    let started = (|| -> Result<slow_path::SlowPath> {
        let map = dp.ebpf.take_map(maps::SLOW_PATH).ok_or_else(|| anyhow!("map SLOW_PATH missing from the object"))?;
        let xsk: aya::maps::XskMap<MapData> = map.try_into()?;
        slow_path::start(xsk, &queues, shared.clone())
    })();
    match started {
        Ok(sp) => {
            tracing::info!(sockets = sp.sockets(), "slow path: AF_XDP sockets answer TTL expiry, too big and unreachable with ICMP errors");
            let status = SlowPathStatus { mode: SlowPathMode::Afxdp, shared: shared.clone() };
            (Some(sp), status)
        }
        Err(e) => {
            tracing::warn!("slow path: AF_XDP unavailable ({e:#}); exceptions go to the kernel stack");
            (None, kernel)
        }
    }
}

fn handle(rib: &mut Rib<MapWriter>, sources: &StatsSources, req: Request, default_expires: Duration) -> Response {
    let now = Instant::now();
    let result = (|| -> Result<serde_json::Value> {
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
                let m = rib.destination_metrics(dest, now).ok_or_else(|| anyhow!("no route to {dest}"))?;
                serde_json::to_value(vec![m])?
            }
            Request::MetricsShow { dest: None } => {
                let all: Vec<_> = rib.private_copies().filter_map(|(d, _)| rib.destination_metrics(*d, now)).collect();
                serde_json::to_value(all)?
            }
            Request::Stats => {
                let mut v = serde_json::to_value(rib.summary())?;
                v["dir24"] = serde_json::to_value(rib.sink().dir24_stats())?;
                v["netlink"] = serde_json::to_value(sources.netlink)?;
                v["packets"] = serde_json::to_value(stats::read_counters(sources.counters)?)?;
                let mut sp = sources.slow_path.shared.stats.snapshot();
                sp["mode"] = serde_json::json!(match sources.slow_path.mode {
                    SlowPathMode::Afxdp => "afxdp",
                    SlowPathMode::Kernel => "kernel",
                });
                v["slow_path"] = sp;
                v["pmtu"] = serde_json::to_value(sources.pmtu)?;
                v["neighbour_queue"] = serde_json::to_value(sources.waiting)?;
                v
            }
        })
    })();
    match result {
        Ok(v) => Response::ok(v),
        Err(e) => Response::error(format!("{e:#}")),
    }
}

/// Neighbours the agent has the kernel resolve: configured ones without a
/// MAC, and the gateways of routes.
fn pending_neighbours(rib: &Rib<MapWriter>, configured: &[(u32, IpAddr)]) -> Vec<(u32, IpAddr)> {
    let mut v: Vec<(u32, IpAddr)> = configured.iter().copied().filter(|(i, a)| !rib.neighbour_resolved(*i, *a)).collect();
    v.extend(rib.unresolved_gateways());
    v.sort();
    v.dedup();
    v
}

/// Has the kernel resolve every pending neighbour not asked for in the last
/// `again` (a new gateway at once, a silent one every `again`).
fn solicit_pending(rib: &Rib<MapWriter>, configured: &[(u32, IpAddr)], asked: &mut HashMap<(u32, IpAddr), Instant>, again: Duration) {
    let now = Instant::now();
    let pending = pending_neighbours(rib, configured);
    asked.retain(|k, _| pending.contains(k));
    for (ifindex, addr) in pending {
        if asked.get(&(ifindex, addr)).is_some_and(|t| now.duration_since(*t) < again) {
            continue;
        }
        asked.insert((ifindex, addr), now);
        if let Some(dev) = rib.link_name(ifindex) {
            if let Err(e) = netlink_mirror::solicit(addr, dev, ifindex) {
                tracing::debug!(%addr, dev, error = %e, "solicit failed");
            }
        }
    }
}

/// Has the kernel resolve the neighbours we need, applying netlink events
/// meanwhile, until all are resolved or `wait` has passed.
async fn resolve_neighbours(
    rib: &mut Rib<MapWriter>,
    fib: &mut KernelFib,
    mirror: &mut Mirror,
    stats: &mut NetlinkStats,
    slow: &slow_path::Shared,
    to_resolve: &[(u32, IpAddr)],
    wait: Duration,
) -> Result<()> {
    let deadline = Instant::now() + wait;
    let mut asked = HashMap::new();
    loop {
        let pending = pending_neighbours(rib, to_resolve);
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            tracing::warn!(?pending, "neighbours still unresolved; their traffic goes to the kernel until they are");
            return Ok(());
        }
        solicit_pending(rib, to_resolve, &mut asked, Duration::ZERO);
        let pause = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                batch = mirror.next() => {
                    let batch = batch.ok_or_else(|| anyhow!("netlink subscription closed"))?;
                    apply_batch(rib, fib, mirror, stats, slow, batch).await?;
                }
            }
        }
    }
}

/// Applies one netlink event: routes through the FIB mirror's choice, the
/// rest straight to the RIB.
fn apply(rib: &mut Rib<MapWriter>, fib: &mut KernelFib, ev: netlink_mirror::Event, now: Instant) -> Result<()> {
    match ev {
        netlink_mirror::Event::Route { route, present } => match fib.apply(route, present) {
            Some(change) => apply_change(rib, change, now),
            None => Ok(()),
        },
        other => rib.apply(other, now),
    }
}

fn apply_change(rib: &mut Rib<MapWriter>, change: Change, now: Instant) -> Result<()> {
    match change {
        Change::Set(input) => rib.set_route(input, now),
        Change::Delete(prefix) => rib.delete_route(&prefix, now).map(|_| ()),
    }
}

/// Applies a batch of events in order; an overrun among them ends in a
/// resync. An event the maps cannot carry is logged and counted, and the
/// rest go on.
async fn apply_batch(
    rib: &mut Rib<MapWriter>,
    fib: &mut KernelFib,
    mirror: &Mirror,
    stats: &mut NetlinkStats,
    slow: &slow_path::Shared,
    batch: Vec<netlink_mirror::Event>,
) -> Result<()> {
    let mut overrun = false;
    for ev in batch {
        if ev == netlink_mirror::Event::Overrun {
            overrun = true;
            continue;
        }
        if let netlink_mirror::Event::Address { index, addr, present } = ev {
            slow.note_address(index, addr, present);
        }
        stats.events += 1;
        if let Err(e) = apply(rib, fib, ev.clone(), Instant::now()) {
            stats.errors += 1;
            tracing::error!(?ev, error = %e, "applying netlink event");
        }
    }
    if overrun {
        stats.overruns += 1;
        resync(rib, fib, mirror, stats, slow).await?;
    }
    Ok(())
}

/// After an overrun: dump everything again and apply exactly the
/// differences, so that no stale entry survives the lost events. Events
/// queued behind the overrun are applied afterwards, in order; each sets its
/// object to its state at that time, so the maps converge on the kernel's.
async fn resync(
    rib: &mut Rib<MapWriter>,
    fib: &mut KernelFib,
    mirror: &Mirror,
    stats: &mut NetlinkStats,
    slow: &slow_path::Shared,
) -> Result<()> {
    let started = Instant::now();
    let dump = mirror.dump().await?;
    slow.set_addresses(&dump);
    let (routes, rest): (Vec<_>, Vec<_>) = dump.into_iter().partition(|e| matches!(e, netlink_mirror::Event::Route { .. }));
    let now = Instant::now();
    let mut report = rib.resync(rest, now)?;
    let routes = routes.into_iter().filter_map(|e| match e {
        netlink_mirror::Event::Route { route, .. } => Some(route),
        _ => None,
    });
    for change in fib.resync(routes) {
        match &change {
            Change::Delete(_) => report.routes_removed += 1,
            Change::Set(r) if rib.route_metrics_ref(&r.prefix).is_some() => report.routes_changed += 1,
            Change::Set(_) => report.routes_added += 1,
        }
        if let Err(e) = apply_change(rib, change, now) {
            stats.errors += 1;
            tracing::error!(error = %e, "resync: route not carried");
        }
    }
    stats.resyncs += 1;
    stats.last_resync = Some(report);
    tracing::warn!(
        took_ms = started.elapsed().as_millis() as u64,
        links = report.links,
        addresses = report.addresses,
        neighbours = report.neighbours,
        routes_added = report.routes_added,
        routes_changed = report.routes_changed,
        routes_removed = report.routes_removed,
        "netlink overrun: resynced with a full dump"
    );
    Ok(())
}

/// SIGHUP: reads the config again and applies what changed (see
/// [`crate::daemon::reload`]). On any error before applying, nothing changes.
#[allow(clippy::too_many_arguments)]
async fn reload_config(
    opts: &RunOptions,
    eff: &mut Effective,
    running: &mut Resolved,
    rib: &mut Rib<MapWriter>,
    fib: &mut KernelFib,
    dp: &mut DataPlane,
    mirror: &Mirror,
    stats: &mut NetlinkStats,
    slow: &slow_path::Shared,
    slow_path: Option<&mut slow_path::SlowPath>,
) -> Result<ReloadReport> {
    let path = opts.config.as_deref().ok_or_else(|| anyhow!("no config file to reload (started without --config)"))?;
    let config = config::load(path).map_err(|e| anyhow!("config error: {e}"))?;
    let new_eff = Effective::new(&opts.cli, &config.settings);
    let new = reload::resolve(Some(path), &opts.ifaces, eff.source, &config, &rib.link_indexes())?;
    let mut report = ReloadReport { needs_restart: new_eff.needs_restart(eff), ..ReloadReport::default() };
    let d = reload::diff(running, &new);
    let now = Instant::now();
    let links = rib.link_indexes();
    let mut slow_path = slow_path;
    for iface in &d.add_ifaces {
        dp.attach(iface, eff.mode)?;
        report.interfaces_added += 1;
        // The slow path serves it too.
        if let (Some(sp), Some(&index)) = (slow_path.as_deref_mut(), links.get(*iface)) {
            let queues = rib.link(index).map_or(1, |l| l.rx_queues);
            if let Err(e) = sp.add_interface(index, queues) {
                tracing::warn!(iface = %iface, "slow path: no AF_XDP socket ({e:#}); its exceptions go to the kernel");
            }
        }
    }
    report.interfaces_removed = dp.detach_others(&new.ifaces)?;
    for r in &d.set_routes {
        rib.set_route((*r).clone(), now)?;
        report.routes_set += 1;
    }
    for p in &d.del_routes {
        rib.delete_route(p, now)?;
        report.routes_removed += 1;
    }
    for &((index, addr), mac) in &d.set_neighbours {
        rib.set_static_neighbour(index, addr, mac, now)?;
    }
    for &(index, addr) in &d.unset_neighbours {
        rib.unset_static_neighbour(index, addr, now)?;
    }
    report.neighbours_changed = d.set_neighbours.len() + d.unset_neighbours.len();
    report.tables_changed = eff.source == RouteSource::Kernel && new_eff.tables != eff.tables;
    let unset = !d.unset_neighbours.is_empty();
    *running = new;
    if report.tables_changed {
        fib.set_tables(new_eff.tables.iter().copied());
        eff.tables = new_eff.tables;
    }
    // The kernel's view of what the file no longer overrides.
    if report.tables_changed || unset {
        resync(rib, fib, mirror, stats, slow).await?;
    }
    Ok(report)
}

pub async fn run(opts: RunOptions) -> Result<()> {
    // Handlers first: a signal that comes early (SIGHUP right after "ready")
    // must not meet the default action, which ends the process.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let config: Config = match &opts.config {
        Some(path) => config::load(path).map_err(|e| anyhow!("config error: {e}"))?,
        None => Config::default(),
    };
    let mut eff = Effective::new(&opts.cli, &config.settings);
    if eff.source == RouteSource::Config && opts.config.is_none() {
        bail!("--source config needs --config FILE (the route list)");
    }
    let kernel = eff.source == RouteSource::Kernel;
    let mut fib = KernelFib::new(eff.tables.iter().copied());
    // Subscribe, then dump: no change between the two is lost.
    let (mut mirror, dump) = Mirror::start(kernel, opts.netlink_rcvbuf).await?;
    let mut netlink_stats = NetlinkStats::default();
    let (misses_tx, mut misses) = tokio::sync::mpsc::channel::<slow_path::NeighbourMiss>(4096);
    let slow = slow_path::Shared::new(eff.icmp_limits, misses_tx);
    slow.set_addresses(&dump);
    // Everything the config names must exist before anything is loaded.
    let links: HashMap<String, u32> = dump
        .iter()
        .filter_map(|e| match e {
            netlink_mirror::Event::Link(l) => Some((l.name.clone(), l.index)),
            _ => None,
        })
        .collect();
    let mut running = reload::resolve(opts.config.as_deref(), &opts.ifaces, eff.source, &config, &links)?;
    let (listener, _socket_file) = control::bind(&opts.control_socket)?;
    let (calls_tx, mut calls) = tokio::sync::mpsc::channel(1024);
    // Bound before anything is loaded: a taken port fails the start cleanly.
    let metrics_listener = match opts.metrics_listen {
        Some(addr) => Some(crate::operator::prometheus::bind(addr).await?),
        None => None,
    };
    if let Some(l) = metrics_listener {
        tracing::info!(addr = %l.local_addr()?, "Prometheus metrics at /metrics");
        tokio::spawn(crate::operator::prometheus::serve(l, calls_tx.clone()));
    }
    let server = tokio::spawn(control::serve(listener, calls_tx));

    // Pinned maps of an earlier agent are adopted, contents and all.
    let (mut dp, adopting) = DataPlane::load_pinned(&eff.load, &opts.pin_dir)?;
    dp.keep_on_exit = opts.keep_on_exit;
    let logger = match aya_log::EbpfLogger::init(&mut dp.ebpf) {
        // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd lives.
        Ok(l) => Some(unsafe { AsyncFd::register(l) }.map_err(|e| anyhow!("polling aya-log: {e}"))?),
        Err(e) => {
            tracing::info!(error = %e, "no eBPF log channel");
            None
        }
    };
    let counters: PerCpuArray<MapData, Counter> = crate::dataplane::map_writer::open_pinned(&opts.pin_dir, maps::COUNTERS)?;
    let now = Instant::now();
    let capacities = Capacities { metrics_rw: eff.load.metrics_rw_slots, ..Capacities::default() };
    let mut writer = dp.map_writer()?.with_grace(opts.grace);
    let adopted = if adopting { Some(writer.adopt()?) } else { None };
    let mut rib = Rib::new(writer, capacities, opts.grace);
    if let Some(old) = adopted {
        tracing::info!(routes = old.prefixes.len(), nexthops = old.nexthops.len(), metrics_ro = old.metrics_ro.len(), pin_dir = %opts.pin_dir.display(), "adopting the data plane an earlier agent left pinned; it forwards on meanwhile");
        rib.adopt(old);
    }
    let mut route_events = Vec::new();
    for ev in dump {
        // Links, addresses and neighbours first: routes need their devices.
        match ev {
            netlink_mirror::Event::Route { .. } => route_events.push(ev),
            other => rib.apply(other, now)?,
        }
    }
    for ev in route_events {
        if let Err(e) = apply(&mut rib, &mut fib, ev.clone(), now) {
            tracing::warn!(?ev, error = %e, "kernel route not carried");
        }
    }
    for (&(index, address), &mac) in &running.static_neighbours {
        rib.set_static_neighbour(index, address, mac, now)?;
    }
    for r in running.routes.values() {
        rib.set_route(r.clone(), now)?;
    }

    // Program first, attach second: no window where the fast path has no routes.
    for iface in &running.ifaces {
        match dp.attach(iface, eff.mode)? {
            Attached::New(mode) => tracing::info!(iface, ?mode, "XDP attached"),
            Attached::Adopted => tracing::info!(iface, "XDP program replaced in the pinned link"),
        }
    }
    let gone = dp.detach_others(&running.ifaces)?;
    if gone > 0 {
        tracing::info!(links = gone, "detached from interfaces no longer configured");
    }
    let (mut slow_path, slow_status) = start_slow_path(&eff, &running.ifaces, &rib, &mut dp, &slow);
    resolve_neighbours(&mut rib, &mut fib, &mut mirror, &mut netlink_stats, &slow, &running.to_resolve, opts.resolve_wait).await?;
    if adopting {
        let r = rib.sweep_adopted(Instant::now())?;
        tracing::info!(
            routes_kept = r.routes_kept,
            routes_removed = r.routes_removed,
            slots_released = r.slots_released,
            private_kept = r.private_kept,
            "adoption complete: the earlier agent's entries are replaced"
        );
    }
    let s = rib.summary();
    tracing::info!(
        source = ?eff.source, routes = s.routes, local = s.local_addresses, neighbour_hosts = s.neighbour_hosts,
        nexthops = s.nexthops, resolved = s.nexthops_resolved, metrics_ro = s.metrics_ro_in_use,
        metrics_rw_capacity = s.metrics_rw_capacity, pin_dir = %opts.pin_dir.display(), "ready"
    );

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut logger = logger;
    let mut ticks = 0u64;
    let mut pmtu_stats = pmtu::PmtuStats::default();
    let mut waiting = NeighbourQueue::new(16, 1024, Duration::from_secs(3));
    let sender = FrameSender::new()?;
    let pmtu_map = dp.ebpf.take_map(maps::PMTU_EVENTS).ok_or_else(|| anyhow!("map PMTU_EVENTS missing from the object"))?;
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut pmtu_reports =
        unsafe { AsyncFd::register(aya::maps::RingBuf::try_from(pmtu_map)?) }.map_err(|e| anyhow!("polling PMTU_EVENTS: {e}"))?;
    let mut asked = HashMap::new();
    loop {
        tokio::select! {
            _ = sigint.recv() => { tracing::info!("SIGINT: detaching"); break }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching"); break }
            _ = sighup.recv() => {
                match reload_config(&opts, &mut eff, &mut running, &mut rib, &mut fib, &mut dp, &mirror, &mut netlink_stats, &slow, slow_path.as_mut()).await {
                    Ok(r) => tracing::info!(
                        interfaces_added = r.interfaces_added, interfaces_removed = r.interfaces_removed, routes_set = r.routes_set,
                        routes_removed = r.routes_removed, neighbours_changed = r.neighbours_changed, tables_changed = r.tables_changed,
                        needs_restart = ?r.needs_restart, "SIGHUP: config reloaded"
                    ),
                    Err(e) => tracing::error!("SIGHUP: config reload refused; the running config stays: {e:#}"),
                }
            }
            batch = mirror.next() => {
                let batch = batch.ok_or_else(|| anyhow!("netlink subscription closed"))?;
                apply_batch(&mut rib, &mut fib, &mirror, &mut netlink_stats, &slow, batch).await?;
                release_resolved(&rib, &mut waiting, &sender);
            }
            miss = misses.recv() => {
                let Some(miss) = miss else { continue };
                hold_for_neighbour(&rib, &mut waiting, &mirror, &sender, miss, Instant::now());
            }
            call = calls.recv() => {
                let Some((req, reply)) = call else { bail!("control socket server stopped") };
                let sources = StatsSources { netlink: &netlink_stats, counters: &counters, slow_path: &slow_status, pmtu: &pmtu_stats, waiting: &waiting.stats };
                let _ = reply.send(handle(&mut rib, &sources, req, opts.default_expires));
            }
            guard = pmtu_reports.readable_mut() => {
                let mut guard = guard?;
                let now = Instant::now();
                while let Some(item) = guard.get_inner_mut().next() {
                    match pmtu_event(&item) {
                        Some(event) => pmtu::learn(&mut rib, &event, opts.default_expires, &mut pmtu_stats, now),
                        None => pmtu_stats.refused += 1,
                    }
                }
                guard.clear_ready();
            }
            guard = async { logger.as_mut().expect("guarded").readable_mut().await }, if logger.is_some() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = tick.tick() => {
                ticks += 1;
                let now = Instant::now();
                if let Err(e) = rib.expire(now) {
                    tracing::error!(error = %e, "expiring overrides");
                }
                rib.reap(now);
                waiting.expire(now);
                release_resolved(&rib, &mut waiting, &sender);
                solicit_pending(&rib, &running.to_resolve, &mut asked, Duration::from_secs(3));
                if ticks % 30 == 0 {
                    if let Ok(c) = stats::read_counters(&counters) {
                        let fwd = c.iter().find(|r| r.reason == "forwarded").map_or(0, |r| r.packets);
                        tracing::info!(forwarded = fwd, summary = ?rib.summary(), "status");
                    }
                }
            }
        }
    }
    server.abort();
    // The sockets close before the maps and links they serve.
    drop(slow_path);
    drop(rib);
    // Dropping the data plane detaches the program and removes the pins.
    let keep = dp.keep_on_exit;
    drop(dp);
    if keep {
        tracing::info!(pin_dir = %opts.pin_dir.display(), "exiting; the data plane keeps forwarding (--keep-on-exit)");
    } else {
        tracing::info!("detached; pins removed");
    }
    Ok(())
}
