//! What the config file sets, and changing it while running (SIGHUP).
//!
//! A reload is all or nothing up to the point of applying: the new file is
//! parsed and every name in it resolved against the kernel's links first; a
//! bad file is refused with its file, line and field, and the running config
//! stays as it was. Then interfaces, routes (`--source config`), static
//! neighbours and mirrored tables follow the file; what only a restart can
//! change (source, XDP mode, pool size) is reported, not applied.

use crate::{
    daemon::config::{self, Config},
    dataplane::{LoadOptions, ModeChoice},
    fib::source::RouteSource,
    rib::RouteInput,
    slow_path::icmp_limit::RateLimits,
    slow_path::pmtu::{PmtuLearning, PmtuSettings},
    slow_path::SlowPathMode,
};
use anyhow::{anyhow, bail, Result};
use ipnet::IpNet;
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::Path,
};

/// The settings in force: the command line's where given, else the file's,
/// else the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub source: RouteSource,
    pub tables: Vec<u32>,
    pub mode: ModeChoice,
    pub load: LoadOptions,
    pub slow_path: SlowPathMode,
    pub icmp_limits: RateLimits,
    /// Path-MTU learning: on or off, its quota and rate limits (a reload applies them).
    pub pmtu: PmtuSettings,
}

/// What the command line gave (`None`: not given).
#[derive(Debug, Clone, Default)]
pub struct CliSettings {
    pub source: Option<RouteSource>,
    pub tables: Option<Vec<u32>>,
    pub mode: Option<ModeChoice>,
    pub metrics_rw_slots: Option<u32>,
    pub bpf_debug_log: bool,
    pub slow_path: Option<SlowPathMode>,
    pub icmp_ratelimit_ms: Option<u32>,
    pub icmp_msgs_per_sec: Option<u32>,
    pub icmp_msgs_burst: Option<u32>,
    pub pmtu_learning: Option<PmtuLearning>,
    pub pmtu_max_learned: Option<u32>,
}

impl Effective {
    pub fn new(cli: &CliSettings, file: &config::Settings) -> Effective {
        let pool = cli.metrics_rw_slots.or(file.metrics_rw_slots).unwrap_or(common::capacity::METRICS_RW);
        Effective {
            source: cli.source.or(file.source).unwrap_or(RouteSource::Kernel),
            tables: cli.tables.clone().or_else(|| file.tables.clone()).unwrap_or_else(|| vec![254]),
            mode: cli.mode.or(file.xdp_mode).unwrap_or(ModeChoice::Auto),
            load: LoadOptions {
                metrics_rw_slots: cli.metrics_rw_slots.or(file.metrics_rw_slots).unwrap_or(common::capacity::METRICS_RW),
                bpf_debug_log: cli.bpf_debug_log,
            },
            slow_path: cli.slow_path.or(file.slow_path).unwrap_or(SlowPathMode::Afxdp),
            icmp_limits: {
                let d = RateLimits::default();
                RateLimits {
                    per_destination: cli
                        .icmp_ratelimit_ms
                        .or(file.icmp_ratelimit_ms)
                        .map_or(d.per_destination, |ms| std::time::Duration::from_millis(ms.into())),
                    msgs_per_sec: cli.icmp_msgs_per_sec.or(file.icmp_msgs_per_sec).unwrap_or(d.msgs_per_sec),
                    msgs_burst: cli.icmp_msgs_burst.or(file.icmp_msgs_burst).unwrap_or(d.msgs_burst),
                }
            },
            pmtu: PmtuSettings::new(
                cli.pmtu_learning.or(file.pmtu_learning).unwrap_or_default(),
                cli.pmtu_max_learned.or(file.pmtu_max_learned),
                pool,
            ),
        }
    }

    /// What differs from `other` that only a restart can change.
    pub fn needs_restart(&self, other: &Effective) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.source != other.source {
            v.push("source");
        }
        if self.mode != other.mode {
            v.push("xdp_mode");
        }
        if self.load.metrics_rw_slots != other.load.metrics_rw_slots {
            v.push("metrics_rw_slots");
        }
        if self.slow_path != other.slow_path {
            v.push("slow_path");
        }
        if self.icmp_limits != other.icmp_limits {
            v.push("icmp rate limits");
        }
        v
    }
}

/// What the config names, resolved against the kernel's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub ifaces: Vec<String>,
    /// `--source config` routes by prefix.
    pub routes: BTreeMap<IpNet, RouteInput>,
    /// Neighbours with a MAC in the file (set, kernel events do not touch them).
    pub static_neighbours: BTreeMap<(u32, IpAddr), [u8; 6]>,
    /// Neighbours the agent has the kernel resolve.
    pub to_resolve: Vec<(u32, IpAddr)>,
}

/// Checks that every interface the config and the command line name exists;
/// errors name the file, line and field.
pub fn resolve(
    file: Option<&Path>,
    cli_ifaces: &[String],
    source: RouteSource,
    config: &Config,
    links: &HashMap<String, u32>,
) -> Result<Resolved> {
    let mut ifaces = config.interfaces.clone();
    for i in cli_ifaces {
        if !ifaces.contains(i) {
            ifaces.push(i.clone());
        }
    }
    if ifaces.is_empty() {
        bail!("no interface to attach to: give --iface IF or `interfaces = [...]` in the config");
    }
    let file = file.unwrap_or(Path::new("(no config)"));
    if source == RouteSource::Kernel {
        if let Some(r) = config.routes.first() {
            bail!(
                "config error: {}:{}: route: routes come from the kernel with --source kernel; remove [[route]] or use --source config",
                file.display(),
                r.line.0
            );
        }
    }
    let cfg_err = |line: config::Line, field: &str, msg: String| anyhow!("config error: {}:{}: {field}: {msg}", file.display(), line.0);
    let lookup = |name: &str| -> Option<u32> { links.get(name).copied() };
    for iface in &ifaces {
        lookup(iface).ok_or_else(|| anyhow!("unknown interface {iface:?}"))?;
    }
    let mut routes = BTreeMap::new();
    for r in &config.routes {
        let dev = match &r.dev {
            Some(name) => Some(lookup(name).ok_or_else(|| cfg_err(r.line, "dev", format!("unknown interface {name:?}")))?),
            None => None,
        };
        routes.insert(r.prefix, RouteInput::new(r.prefix, r.kind, dev, r.via, r.metrics));
    }
    let (mut static_neighbours, mut to_resolve) = (BTreeMap::new(), Vec::new());
    for n in &config.neighbours {
        let index = lookup(&n.dev).ok_or_else(|| cfg_err(n.line, "dev", format!("unknown interface {:?}", n.dev)))?;
        match n.lladdr {
            Some(mac) => {
                static_neighbours.insert((index, n.address), mac);
            }
            None => to_resolve.push((index, n.address)),
        }
    }
    Ok(Resolved { ifaces, routes, static_neighbours, to_resolve })
}

/// What a reload changed, in counts, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub interfaces_added: usize,
    pub interfaces_removed: usize,
    pub routes_set: usize,
    pub routes_removed: usize,
    pub neighbours_changed: usize,
    pub tables_changed: bool,
    /// Path-MTU learning's switch or quota changed (applied at once).
    pub pmtu_changed: bool,
    /// Settings that changed in the file but wait for a restart.
    pub needs_restart: Vec<&'static str>,
}

/// The differences between the running `old` and the reloaded `new`.
pub struct Diff<'a> {
    pub add_ifaces: Vec<&'a String>,
    pub set_neighbours: Vec<((u32, IpAddr), [u8; 6])>,
    pub unset_neighbours: Vec<(u32, IpAddr)>,
}

pub fn diff<'a>(old: &Resolved, new: &'a Resolved) -> Diff<'a> {
    Diff {
        add_ifaces: new.ifaces.iter().filter(|i| !old.ifaces.contains(i)).collect(),
        set_neighbours: new
            .static_neighbours
            .iter()
            .filter(|(k, m)| old.static_neighbours.get(k) != Some(m))
            .map(|(k, m)| (*k, *m))
            .collect(),
        unset_neighbours: old.static_neighbours.keys().filter(|k| !new.static_neighbours.contains_key(k)).copied().collect(),
    }
}

impl super::Daemon {
    /// SIGHUP: reads the config again and applies what changed. On any
    /// error before applying, nothing changes.
    pub(super) async fn reload_config(&mut self) -> Result<ReloadReport> {
        let path = self.opts.config.clone().ok_or_else(|| anyhow!("no config file to reload (started without --config)"))?;
        let config = config::load(&path).map_err(|e| anyhow!("config error: {e}"))?;
        let new_eff = Effective::new(&self.opts.cli, &config.settings);
        let new = resolve(Some(&path), &self.opts.ifaces, self.eff.source, &config, &self.rib.link_indexes())?;
        let mut report = ReloadReport { needs_restart: new_eff.needs_restart(&self.eff), ..ReloadReport::default() };
        let d = diff(&self.running, &new);
        let now = std::time::Instant::now();
        // Staged, in the order of what may fail: routes (a full table), then
        // neighbours, then interfaces. A failure rolls back every step done,
        // and the running config stays.
        let old = self.running.clone();
        if let Err(e) = self.apply_config_routes(&new.routes, &mut report, now) {
            self.rollback(&old, &[], now);
            return Err(e.context("config reload refused while setting routes; rolled back, the running config stays"));
        }
        let neighbours = (|| -> Result<()> {
            for &((index, addr), mac) in &d.set_neighbours {
                self.rib.set_static_neighbour(index, addr, mac, now)?;
            }
            for &(index, addr) in &d.unset_neighbours {
                self.rib.unset_static_neighbour(index, addr, now)?;
            }
            Ok(())
        })();
        if let Err(e) = neighbours {
            self.rollback(&old, &[], now);
            return Err(e.context("config reload refused while setting neighbours; rolled back, the running config stays"));
        }
        let links = self.rib.link_indexes();
        let mut attached = Vec::new();
        for iface in &d.add_ifaces {
            if let Err(e) = self.dp.attach(iface, self.eff.mode) {
                self.rollback(&old, &attached, now);
                return Err(e.context(format!("config reload refused: attaching to {iface}; rolled back, the running config stays")));
            }
            attached.push((*iface).clone());
            report.interfaces_added += 1;
            // The slow path serves it too.
            if let Some(&index) = links.get(*iface) {
                let port = self.slow_path_port(index);
                let Some(sp) = self.slow_path.as_mut() else { continue };
                if let Err(e) = sp.add_interface(index, port) {
                    tracing::warn!(iface = %iface, "slow path: no AF_XDP socket ({e:#}); its exceptions go to the kernel");
                }
            }
        }
        report.interfaces_removed = self.dp.detach_others(&new.ifaces)?;
        report.neighbours_changed = d.set_neighbours.len() + d.unset_neighbours.len();
        if new_eff.pmtu != self.eff.pmtu {
            self.pmtu.set_settings(new_eff.pmtu, now);
            self.eff.pmtu = new_eff.pmtu;
            report.pmtu_changed = true;
        }
        report.tables_changed = self.eff.source == RouteSource::Kernel && new_eff.tables != self.eff.tables;
        let unset = !d.unset_neighbours.is_empty();
        self.running = new;
        if report.tables_changed {
            self.feed.set_tables(&new_eff.tables);
            self.eff.tables = new_eff.tables;
        }
        // The kernel's view of what the file no longer overrides.
        if report.tables_changed || unset {
            self.resync().await?;
        }
        Ok(report)
    }

    /// The file's routes, through the config feed.
    fn apply_config_routes(
        &mut self,
        routes: &BTreeMap<IpNet, RouteInput>,
        report: &mut ReloadReport,
        now: std::time::Instant,
    ) -> Result<()> {
        for change in self.feed.configured(routes) {
            match change {
                crate::rib::RouteChange::Set(_) => report.routes_set += 1,
                crate::rib::RouteChange::Delete(_) => report.routes_removed += 1,
                // The file has no nexthop objects, nor tables for rules.
                crate::rib::RouteChange::SetNexthop(_)
                | crate::rib::RouteChange::DeleteNexthop(_)
                | crate::rib::RouteChange::TableSet(..)
                | crate::rib::RouteChange::TableDelete(..) => {}
            }
            self.rib.apply_route_change(change, now)?;
        }
        Ok(())
    }

    /// Back to the running config `old` after a failed reload: its routes
    /// and static neighbours again, and no link on the interfaces just
    /// `attached`. What cannot be undone is logged as such.
    fn rollback(&mut self, old: &Resolved, attached: &[String], now: std::time::Instant) {
        let mut ignored = ReloadReport::default();
        if let Err(e) = self.apply_config_routes(&old.routes, &mut ignored, now) {
            tracing::error!("config reload rollback incomplete (routes): {e:#}");
        }
        let current: Vec<(u32, IpAddr)> = self.rib.static_neighbours().filter(|k| !old.static_neighbours.contains_key(k)).collect();
        for (index, addr) in current {
            if let Err(e) = self.rib.unset_static_neighbour(index, addr, now) {
                tracing::error!("config reload rollback incomplete (neighbours): {}", crate::error_chain(&e));
            }
        }
        for (&(index, addr), &mac) in &old.static_neighbours {
            if let Err(e) = self.rib.set_static_neighbour(index, addr, mac, now) {
                tracing::error!("config reload rollback incomplete (neighbours): {}", crate::error_chain(&e));
            }
        }
        if !attached.is_empty() {
            if let Err(e) = self.dp.detach_others(&old.ifaces) {
                tracing::error!("config reload rollback incomplete (interfaces): {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib::RouteChange;
    use common::{RouteKind, RouteMetrics};

    fn config(src: &str) -> Config {
        config::parse(Path::new("r.toml"), src).unwrap()
    }

    #[test]
    fn command_line_wins_over_the_file_and_the_file_over_defaults() {
        let file = config("source = \"config\"\ntables = [1000]\nmetrics_rw_slots = 64\n").settings;
        let e = Effective::new(&CliSettings::default(), &file);
        assert_eq!((e.source, e.tables.clone(), e.mode, e.load.metrics_rw_slots), (RouteSource::Config, vec![1000], ModeChoice::Auto, 64));
        let cli = CliSettings { source: Some(RouteSource::Kernel), tables: Some(vec![254]), ..CliSettings::default() };
        let e2 = Effective::new(&cli, &file);
        assert_eq!((e2.source, e2.tables.clone()), (RouteSource::Kernel, vec![254]));
        assert_eq!(e2.needs_restart(&e), vec!["source"]);
        assert_eq!((e.pmtu.learning, e.pmtu.max_learned), (PmtuLearning::On, 32), "half the pool by default");
        let file = config("pmtu_learning = \"off\"\npmtu_max_learned = 10\n").settings;
        let e3 = Effective::new(&CliSettings { pmtu_learning: Some(PmtuLearning::On), ..CliSettings::default() }, &file);
        assert_eq!((e3.pmtu.learning, e3.pmtu.max_learned), (PmtuLearning::On, 10));
        assert!(e3.needs_restart(&Effective::new(&CliSettings::default(), &file)).is_empty(), "a reload applies them");
    }

    #[test]
    fn reload_diff_names_exactly_what_changed() {
        let links = HashMap::from([("eth1".to_string(), 2), ("eth2".to_string(), 3)]);
        let old = resolve(None, &[], RouteSource::Config, &config("interfaces = [\"eth1\"]\n[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"eth1\"\n[[route]]\nprefix = \"10.1.0.0/16\"\ndev = \"eth1\"\n[[neighbour]]\naddress = \"10.0.0.9\"\ndev = \"eth1\"\nlladdr = \"02:00:00:00:00:09\"\n"), &links).unwrap();
        let new = resolve(
            None,
            &[],
            RouteSource::Config,
            &config("interfaces = [\"eth1\", \"eth2\"]\n[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"eth2\"\n"),
            &links,
        )
        .unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.add_ifaces, vec!["eth2"]);
        // Routes change through the config feed, as any source's do.
        let mut feed = crate::fib::source::Feed::new(RouteSource::Config, &[]);
        feed.configured(&old.routes);
        let set = RouteInput::new("10.0.0.0/8".parse().unwrap(), RouteKind::Unicast, Some(3), None, RouteMetrics::DEFAULT);
        assert_eq!(feed.configured(&new.routes), vec![RouteChange::Delete("10.1.0.0/16".parse::<IpNet>().unwrap()), RouteChange::Set(set)]);
        assert_eq!(d.unset_neighbours, vec![(2, "10.0.0.9".parse().unwrap())]);
        assert!(d.set_neighbours.is_empty());
        let e = resolve(
            Some(Path::new("r.toml")),
            &[],
            RouteSource::Config,
            &config("interfaces = [\"eth1\"]\n[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"eth9\"\n"),
            &links,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "config error: r.toml:2: dev: unknown interface \"eth9\"");
    }
}
