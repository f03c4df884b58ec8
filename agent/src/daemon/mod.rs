//! `cowroute run`: load, program the maps, attach, then keep the maps in step
//! with the kernel until SIGINT or SIGTERM.
//!
//! Owns: the daemon's state ([`Daemon`], one struct), its event loop,
//! config and reload. Files: `kernel_events` (netlink batches, resync,
//! neighbour resolution), `requests` (control requests, stats), [`reload`]
//! (the file's settings and SIGHUP), `neighbour_wait` (frames held for a
//! neighbour). May call every other folder; nothing calls it but main.

mod compaction;
pub mod config;
mod error_routing;
mod kernel_events;
mod neighbour_wait;
mod policy_routing;
pub mod reload;
mod requests;
mod route_feeds;
mod transit;

use crate::{
    daemon::{
        config::Config,
        reload::{CliSettings, Effective, Resolved},
    },
    dataplane::{map_writer::MapWriter, trie_batch::Refuse, trie_queue::TrieFaults, Attached, DataPlane},
    fib::{
        netlink_mirror::{self, Mirror, NetlinkStats},
        source::{Feed, RouteSource},
    },
    operator::{control, stats},
    rib::{Capacities, Rib},
    slow_path::{self, egress::Egress, neighbour_queue::NeighbourQueue, pmtu, SlowPathMode},
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

/// FPM reads (each a batch of frames) taken from the listener's queue in
/// one turn of the loop (bounded, so that control calls and netlink are
/// served during a replay).
const FPM_READS_PER_TURN: usize = 16;

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
    /// `--source fpm`: where zebra connects, and whether a non-loopback address may be used.
    pub fpm_listen: std::net::SocketAddr,
    pub fpm_allow_remote: bool,
    /// After zebra reconnects: how long its replay must go quiet before what
    /// it did not resend is swept.
    pub fpm_sweep_after: Duration,
    /// The Prometheus endpoint's address, when wanted.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// A group whose members may use the control socket besides root.
    pub control_group: Option<u32>,
}

/// Everything the running agent holds. Its loop is the one writer of the
/// maps: control requests, netlink events, slow-path reports and timers
/// all come here, one at a time.
struct Daemon {
    opts: RunOptions,
    eff: Effective,
    /// What the config file names, as running.
    running: Resolved,
    rib: Rib<MapWriter>,
    /// Where routes come from: the kernel FIB or the config file.
    feed: Feed,
    dp: DataPlane,
    mirror: Mirror,
    netlink: NetlinkStats,
    counters: PerCpuArray<MapData, Counter>,
    /// Exceptions the slow path could not take (`UNSERVED`).
    unserved: PerCpuArray<MapData, Counter>,
    slow: Arc<slow_path::Shared>,
    slow_path: Option<slow_path::SlowPath>,
    slow_path_mode: SlowPathMode,
    /// Frames waiting for their neighbour, and how they leave once it is known.
    waiting: NeighbourQueue,
    egress: Option<Egress>,
    pmtu: pmtu::Learner,
    /// When each pending neighbour was last solicited.
    asked: HashMap<(u32, IpAddr), Instant>,
    /// Route changes the maps could not carry yet, by prefix or nexthop
    /// object (see `apply_route`).
    retry: std::collections::BTreeMap<crate::rib::types::ChangeKey, crate::rib::RouteChange>,
    /// Optional parts that failed to start (slow path, frame sender,
    /// Prometheus): the agent runs on without them, and says so in its stats.
    degraded: Vec<String>,
    /// `--source fpm`: what the FPM listener hears, and when it last did.
    fpm_rx: Option<tokio::sync::mpsc::Receiver<crate::fib::fpm::FpmInput>>,
    /// The last FPM hand-over of changes applied (or read by a reconcile).
    fpm_applied: u64,
    /// `ip rule`: the kernel's rules and their compiled lists.
    policy: policy_routing::PolicyRouting,
    /// When the tables' B-trees are rebuilt after a bulk load.
    compaction: compaction::Compaction,
}

/// A `PMTU_EVENTS` record, as the program wrote it.
fn pmtu_event(bytes: &[u8]) -> Option<Box<PmtuEvent>> {
    if bytes.len() != std::mem::size_of::<PmtuEvent>() {
        return None;
    }
    // SAFETY: PmtuEvent is plain old data of exactly this size.
    Some(Box::new(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const PmtuEvent) }))
}

impl Daemon {
    /// Opens the AF_XDP slow path on the attached interfaces. Where it
    /// cannot (no AF_XDP, memlock), exceptions stay with the kernel, loudly.
    fn start_slow_path(&mut self) {
        if self.eff.slow_path == SlowPathMode::Kernel {
            return;
        }
        let links = self.rib.link_indexes();
        let ports: std::collections::BTreeMap<u32, slow_path::Port> =
            self.running.ifaces.iter().filter_map(|i| links.get(i)).map(|&x| (x, self.slow_path_port(x))).collect();
        let started = (|| -> Result<slow_path::SlowPath> {
            let mut take = |name: &str| self.dp.ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the object"));
            let xsk: aya::maps::XskMap<MapData> = take(maps::SLOW_PATH)?.try_into()?;
            let ifaces: aya::maps::HashMap<MapData, u32, common::slow_path::SlowPathIface> = take(maps::SLOW_PATH_IFACES)?.try_into()?;
            slow_path::start(xsk, ifaces, &ports, self.slow.clone())
        })();
        match started {
            Ok(sp) => {
                tracing::info!(
                    sockets = sp.sockets(),
                    "slow path: AF_XDP sockets answer TTL expiry, too big and unreachable with ICMP errors"
                );
                self.slow_path = Some(sp);
                self.slow_path_mode = SlowPathMode::Afxdp;
            }
            Err(e) => {
                tracing::warn!("slow path: AF_XDP unavailable ({e:#}); exceptions go to the kernel stack");
                self.degraded.push(format!("slow_path: {e:#}"));
            }
        }
    }

    /// What the slow path needs of interface `index`: its RX queues and MTU.
    fn slow_path_port(&self, index: u32) -> slow_path::Port {
        self.rib.link(index).map_or(slow_path::Port { queues: 1, mtu: 1500 }, |l| slow_path::Port { queues: l.rx_queues, mtu: l.mtu })
    }

    /// Once a second: expiries, quarantines, queued frames, solicitations.
    fn tick(&mut self, ticks: u64) {
        let now = Instant::now();
        if let Err(e) = self.rib.expire(now) {
            tracing::error!(error = %e, "expiring overrides");
        }
        self.rib.reap(now);
        self.sweep_fpm(now);
        self.retry_routes(now);
        // The routes a trie refused in a turn, written again.
        self.rib.retry_owed_routes();
        self.waiting.expire(now);
        self.release_resolved(now);
        self.solicit_pending(Duration::from_secs(3));
        self.refresh_all_port_sysctls();
        self.compact_when_settled(now);
        if ticks.is_multiple_of(30) {
            if let Ok(c) = stats::read_counters(&self.counters) {
                let fwd = c.iter().find(|r| r.reason == common::Reason::Forwarded.name()).map_or(0, |r| r.packets);
                tracing::info!(forwarded = fwd, summary = ?self.rib.summary(), "status");
            }
        }
    }

    /// After a bulk load, once the routes are quiet: the feed's, the RIB's
    /// and the indexes' B-trees rebuilt with full nodes (`compaction`).
    fn compact_when_settled(&mut self, now: Instant) {
        let routes = self.rib.route_count();
        let Some(step) = self.compaction.step(routes, now) else { return };
        let started = Instant::now();
        match step {
            compaction::Step::Feed => self.feed.compact(),
            compaction::Step::Rib => self.rib.compact_routes(),
            compaction::Step::Indexes => self.rib.compact_indexes(),
        }
        let took = started.elapsed();
        if step == compaction::Step::Indexes {
            compaction::release_free_memory();
        }
        tracing::info!(
            routes,
            ?step,
            took_ms = took.as_millis() as u64,
            trim_ms = (started.elapsed() - took).as_millis() as u64,
            "tables compacted after a bulk load"
        );
    }

    /// Reports of Frag Needed / Packet Too Big the fast path saw passing.
    fn learn_pmtu(&mut self, records: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        let now = Instant::now();
        while let Some(item) = records.next() {
            match pmtu_event(&item) {
                Some(event) => self.pmtu.learn(&mut self.rib, &event, self.opts.default_expires, now),
                None => self.pmtu.count_malformed(),
            }
        }
    }

    /// Stops on a signal: the sockets close before the maps and links they
    /// serve; then the data plane is removed, unless it is to outlive the
    /// agent (--keep-on-exit).
    fn shut_down(self) -> Result<()> {
        let Daemon { opts, rib, dp, slow_path, .. } = self;
        drop(slow_path);
        drop(rib);
        if opts.keep_on_exit {
            tracing::info!(pin_dir = %opts.pin_dir.display(), "exiting; the data plane keeps forwarding (--keep-on-exit)");
            return Ok(());
        }
        dp.remove_pins()?;
        tracing::info!("detached; pins removed");
        Ok(())
    }
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
    let eff = Effective::new(&opts.cli, &config.settings);
    if eff.source == RouteSource::Config && opts.config.is_none() {
        bail!("--source config needs --config FILE (the route list)");
    }
    let feed = Feed::new(eff.source, &eff.tables);
    let fpm_rx = match eff.source {
        RouteSource::Fpm => {
            let routes = feed.fpm_shared().expect("an FPM feed");
            Some(crate::daemon::route_feeds::listen_fpm(opts.fpm_listen, opts.fpm_allow_remote, routes).await?)
        }
        _ => None,
    };
    // Subscribe, then dump: no change between the two is lost.
    let (mirror, dump) = Mirror::start(eff.source == RouteSource::Kernel, opts.netlink_rcvbuf).await?;
    let (misses_tx, mut misses) = tokio::sync::mpsc::channel::<slow_path::Handoff>(4096);
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
    let running = reload::resolve(opts.config.as_deref(), &opts.ifaces, eff.source, &config, &links)?;
    let access = control::Access { group: opts.control_group };
    let (listener, _socket_file) = control::bind(&opts.control_socket, access)?;
    let (calls_tx, mut calls) = tokio::sync::mpsc::channel(1024);
    // Prometheus is optional: an address it cannot listen on is a counted
    // warning, not a router without its data plane.
    let mut degraded = Vec::new();
    if let Some(addr) = opts.metrics_listen {
        match crate::operator::prometheus::bind(addr).await {
            Ok(l) => {
                tracing::info!(addr = %l.local_addr()?, "Prometheus metrics at /metrics");
                tokio::spawn(crate::operator::prometheus::serve(l, calls_tx.clone()));
            }
            Err(e) => {
                tracing::warn!("{e:#}; running without the Prometheus endpoint");
                degraded.push(format!("prometheus: {e:#}"));
            }
        }
    }
    let server = tokio::spawn(control::serve(listener, access, calls_tx));

    // One writer per data plane, held until the process ends.
    let _pin_lock = crate::dataplane::pin_lock::PinLock::acquire(&opts.pin_dir)?;
    // The routes' dump starts now and fills while the program loads (on a
    // blocking thread: the verifier's second or so overlaps the kernel's).
    let mut route_dump = mirror.route_dump().await?;
    // Pinned maps of an earlier agent are adopted, contents and all.
    let load = {
        let (load, dir) = (eff.load.clone(), opts.pin_dir.clone());
        tokio::task::spawn_blocking(move || DataPlane::load_pinned(&load, &dir))
    };
    let (mut dp, adopting) = load.await.map_err(|e| anyhow!("loading the data plane: {e}"))??;
    let mut logger = match aya_log::EbpfLogger::init(&mut dp.ebpf) {
        // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd lives.
        Ok(l) => Some(unsafe { AsyncFd::register(l) }.map_err(|e| anyhow!("polling aya-log: {e}"))?),
        Err(e) => {
            tracing::info!(error = %e, "no eBPF log channel");
            None
        }
    };
    let counters: PerCpuArray<MapData, Counter> = crate::dataplane::map_writer::open_pinned(&opts.pin_dir, maps::COUNTERS)?;
    let unserved: PerCpuArray<MapData, Counter> = crate::dataplane::map_writer::open_pinned(&opts.pin_dir, maps::UNSERVED)?;
    let now = Instant::now();
    let capacities = Capacities { metrics_rw: eff.load.metrics_rw_slots, ..Capacities::default() };
    let mut writer = dp.map_writer()?.with_grace(opts.grace);
    if control::fault_injected(control::FAULT_REFUSE_TRIE_BATCH) {
        writer.arm_trie_faults(TrieFaults { bulk: Some(Refuse::BatchCall), turn: None });
    }
    let adopted = if adopting { Some(writer.adopt()?) } else { None };
    let mut rib = Rib::new(writer, capacities, opts.grace);
    if let Some(old) = adopted {
        tracing::info!(routes = old.prefixes.len(), nexthops = old.nexthops.len(), metrics_ro = old.metrics_ro.len(), pin_dir = %opts.pin_dir.display(), "adopting the data plane an earlier agent left pinned; it forwards on meanwhile");
        rib.adopt(old);
    }
    let resolve_wait = opts.resolve_wait;
    let policy_maps = crate::dataplane::policy_maps::PolicyMaps::open(&opts.pin_dir)?;
    let policy = policy_routing::PolicyRouting::new(policy_maps, eff.source == RouteSource::Kernel, &eff.tables);
    let learner = pmtu::Learner::new(eff.pmtu, now);
    let mut d = Daemon {
        opts,
        eff,
        running,
        rib,
        feed,
        dp,
        mirror,
        netlink: NetlinkStats::default(),
        counters,
        unserved,
        slow,
        slow_path: None,
        slow_path_mode: SlowPathMode::Kernel,
        waiting: NeighbourQueue::new(16, 1024, Duration::from_secs(3)),
        egress: None,
        pmtu: learner,
        asked: HashMap::new(),
        retry: Default::default(),
        degraded,
        fpm_rx,
        fpm_applied: 0,
        compaction: compaction::Compaction::default(),
        policy,
    };
    // Links, addresses and neighbours first: routes need their devices,
    // and nexthop objects before the routes through them.
    let mut dump = netlink_mirror::SplitDump::new(dump);
    d.policy.reset(std::mem::take(&mut dump.rules), &[], &d.eff.tables);
    for ev in dump.rest {
        if let netlink_mirror::Event::Link(l) = &ev {
            d.refresh_port_sysctls(l.index, &l.name.clone());
        }
        d.rib.apply(ev, now)?;
    }
    if let Some(routes) = route_dump.as_mut() {
        d.load_routes(routes, !adopting, now).await?;
    }
    for (&(index, address), &mac) in &d.running.static_neighbours {
        d.rib.set_static_neighbour(index, address, mac, now)?;
    }
    // The file's routes are the operator's word: one that cannot be carried fails the start.
    for change in d.feed.configured(&d.running.routes) {
        d.rib.apply_route_change(change, now)?;
    }

    d.publish_policy();
    // Program first, attach second: no window where the fast path has no routes.
    for iface in &d.running.ifaces {
        match d.dp.attach(iface, d.eff.mode)? {
            Attached::New(mode) => tracing::info!(iface, ?mode, "XDP attached"),
            Attached::Adopted => tracing::info!(iface, "XDP program replaced in the pinned link"),
        }
    }
    let gone = d.dp.detach_others(&d.running.ifaces)?;
    if gone > 0 {
        tracing::info!(links = gone, "detached from interfaces no longer configured");
    }
    d.start_slow_path();
    d.resolve_neighbours(resolve_wait).await?;
    if adopting {
        let r = d.rib.sweep_adopted(Instant::now())?;
        tracing::info!(
            routes_kept = r.routes_kept,
            routes_removed = r.routes_removed,
            slots_released = r.slots_released,
            private_kept = r.private_kept,
            "adoption complete: the earlier agent's entries are replaced"
        );
    }
    // Held frames leave through a raw socket (CAP_NET_RAW); without one
    // they are dropped, counted, and the agent runs on.
    d.egress = match Egress::new(d.slow.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("neighbour queue: no socket to send held frames ({e:#}); they are dropped and counted");
            d.degraded.push(format!("neighbour_queue: {e:#}"));
            None
        }
    };
    let s = d.rib.summary();
    tracing::info!(
        source = ?d.feed.source(), routes = s.routes, local = s.local_addresses, neighbour_hosts = s.neighbour_hosts,
        nexthops = s.nexthops, resolved = s.nexthops_resolved, metrics_ro = s.metrics_ro_in_use,
        metrics_rw_capacity = s.metrics_rw_capacity, pin_dir = %d.opts.pin_dir.display(), "ready"
    );

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u64;
    let pmtu_map = d.dp.ebpf.take_map(maps::PMTU_EVENTS).ok_or_else(|| anyhow!("map PMTU_EVENTS missing from the object"))?;
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut pmtu_reports =
        unsafe { AsyncFd::register(aya::maps::RingBuf::try_from(pmtu_map)?) }.map_err(|e| anyhow!("polling PMTU_EVENTS: {e}"))?;
    loop {
        tokio::select! {
            _ = sigint.recv() => { tracing::info!("SIGINT: detaching"); break }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching"); break }
            _ = sighup.recv() => {
                match d.reload_config().await {
                    Ok(r) => tracing::info!(
                        interfaces_added = r.interfaces_added, interfaces_removed = r.interfaces_removed, routes_set = r.routes_set,
                        routes_removed = r.routes_removed, neighbours_changed = r.neighbours_changed, tables_changed = r.tables_changed,
                        pmtu_changed = r.pmtu_changed,
                        needs_restart = ?r.needs_restart, "SIGHUP: config reloaded"
                    ),
                    Err(e) => tracing::error!("SIGHUP: config reload refused; the running config stays: {e:#}"),
                }
            }
            input = async { d.fpm_rx.as_mut().expect("guarded").recv().await }, if d.fpm_rx.is_some() => {
                let input = input.ok_or_else(|| anyhow!("the FPM listener stopped"))?;
                // One turn (see `dataplane::trie_queue`) of this read's
                // changes, and about as many a read queued behind.
                d.rib.begin_turn(input.changes() * (1 + d.fpm_rx.as_ref().map_or(0, |rx| rx.len())));
                d.fpm_input(input, Instant::now());
                // A replay is a million frames: what is queued already is
                // taken in this turn, not one select round each.
                for _ in 0..FPM_READS_PER_TURN {
                    let Some(input) = d.fpm_rx.as_mut().and_then(|rx| rx.try_recv().ok()) else { break };
                    d.fpm_input(input, Instant::now());
                }
                d.rib.end_turn();
            }
            batch = d.mirror.next() => {
                let batch = batch.ok_or_else(|| anyhow!("netlink subscription closed"))?;
                d.apply_batch(batch).await?;
                d.release_resolved(Instant::now());
            }
            miss = misses.recv() => {
                match miss {
                    Some(slow_path::Handoff::Miss(miss)) => d.hold_for_neighbour(miss, Instant::now()),
                    Some(slow_path::Handoff::Transit(held)) => d.forward_transit(held, Instant::now()),
                    Some(slow_path::Handoff::Error(error)) => d.route_error(error, Instant::now()),
                    None => continue,
                }
            }
            call = calls.recv() => {
                let Some((req, reply)) = call else { bail!("control socket server stopped") };
                let _ = reply.send(d.handle(req));
            }
            guard = pmtu_reports.readable_mut() => {
                let mut guard = guard?;
                d.learn_pmtu(guard.get_inner_mut());
                guard.clear_ready();
            }
            guard = async { logger.as_mut().expect("guarded").readable_mut().await }, if logger.is_some() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = tick.tick() => {
                ticks += 1;
                d.tick(ticks);
            }
        }
    }
    server.abort();
    d.shut_down()
}
