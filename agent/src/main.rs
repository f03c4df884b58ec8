//! The `cowroute` command: the agent (`run`) and its operator commands.

use anyhow::Result;
use clap::{Parser, Subcommand};
use cowroute::{
    daemon::{self, reload::CliSettings, RunOptions},
    dataplane::{self, DataPlane, LoadOptions, ModeChoice},
    fib::source::RouteSource,
    operator::{
        control::{self, Client, Request},
        show,
    },
    DEFAULT_PIN_DIR,
};
use std::{path::PathBuf, time::Duration};

#[derive(Parser)]
#[command(name = "cowroute", version, about = "XDP routing data plane with copy-on-write route metrics")]
struct Cli {
    /// Run in this network namespace (/run/netns/NAME), entered before anything else.
    #[arg(long, global = true)]
    netns: Option<String>,
    /// Where the maps are pinned.
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// The agent's control socket.
    #[arg(long, global = true, default_value = control::DEFAULT_SOCKET)]
    control_socket: PathBuf,
    /// Log lines as text, or as one JSON object each (for a log pipeline).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP program, program the routes, attach, and keep the maps in step.
    Run {
        /// Interface to attach to (repeatable; adds to the config's `interfaces`).
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// The config (TOML): interfaces, settings, neighbours, and with
        /// --source config the routes. SIGHUP reloads it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where routes come from: the kernel's FIB over netlink, the config
        /// file's [[route]] list, or FRR's zebra over FPM (dplane_fpm_nl)
        /// [default: kernel, or the file's `source`].
        #[arg(long, value_enum)]
        source: Option<RouteSource>,
        /// Kernel routing table to mirror with --source kernel (repeatable)
        /// [default: 254 (main), or the file's `tables`].
        #[arg(long = "table", value_parser = clap::value_parser!(u32).range(1..))]
        tables: Vec<u32>,
        /// XDP mode: auto tries native and falls back to generic [default:
        /// auto, or the file's `xdp_mode`].
        #[arg(long, value_enum)]
        xdp_mode: Option<ModeChoice>,
        /// Slots in the private metrics pool, METRICS_RW [default: 65536, or
        /// the file's `metrics_rw_slots`].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
        metrics_rw_slots: Option<u32>,
        /// Grace period before a freed slot is reused, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
        grace_ms: u64,
        /// Seconds to wait for configured neighbours before declaring ready.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=3600))]
        resolve_wait: u64,
        /// Keep the XDP program's debug log lines.
        #[arg(long)]
        bpf_debug_log: bool,
        /// Lifetime of a metric override set without --expires, in seconds
        /// (0: until reset). The kernel's PMTU expiry is 600.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=control::MAX_EXPIRES_SECS))]
        default_expires: u64,
        /// Receive buffer of the netlink subscription, in bytes: the burst of
        /// kernel changes absorbed before an overrun (which costs a resync).
        #[arg(long, default_value_t = 32 << 20, value_parser = clap::value_parser!(u32).range(4096..))]
        netlink_rcvbuf: u32,
        /// Leave the data plane (pinned maps and XDP links) forwarding when the
        /// agent exits: a restarted agent adopts it without a gap. Without it,
        /// SIGINT/SIGTERM detach and unpin (a crash or SIGKILL always leaves it).
        #[arg(long)]
        keep_on_exit: bool,
        /// With --source fpm: where zebra's dplane_fpm_nl connects (its
        /// `fpm address A port P`).
        #[arg(long, default_value = cowroute::fib::fpm::DEFAULT_LISTEN)]
        fpm_listen: std::net::SocketAddr,
        /// Accept FPM connections on a non-loopback --fpm-listen address
        /// (FPM has no authentication: anyone who connects writes routes).
        #[arg(long)]
        fpm_allow_remote: bool,
        /// After zebra reconnects (a restart), seconds its replay must go
        /// quiet before the routes it did not resend are removed; until
        /// then they keep forwarding.
        #[arg(long, default_value_t = cowroute::fib::fpm::SWEEP_AFTER.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
        fpm_sweep_after: u64,
        /// Where exceptions go: the agent over AF_XDP (ICMP errors, rate
        /// limited), or the kernel stack [default: afxdp where the interfaces
        /// take AF_XDP sockets, or the file's `slow_path`].
        #[arg(long, value_enum)]
        slow_path: Option<cowroute::slow_path::SlowPathMode>,
        /// ICMP errors to one destination: a burst of 6, then one per this
        /// many milliseconds, 0 for no limit [default: 1000, as the kernel].
        #[arg(long)]
        icmp_ratelimit_ms: Option<u32>,
        /// ICMP errors to all destinations a second, 0 for no limit [default: 1000].
        #[arg(long)]
        icmp_msgs_per_sec: Option<u32>,
        /// Burst of the all-destinations limit [default: 50].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        icmp_msgs_burst: Option<u32>,
        /// Learn path MTUs from the Fragmentation Needed / Packet Too Big
        /// errors forwarded through here (validated, rate limited) [default:
        /// on, or the file's `pmtu_learning`].
        #[arg(long, value_enum)]
        pmtu_learning: Option<cowroute::slow_path::pmtu::PmtuLearning>,
        /// Destinations that may hold a learned private copy at once, held
        /// below --metrics-rw-slots so operator writes always find slots
        /// [default: half the pool].
        #[arg(long)]
        pmtu_max_learned: Option<u32>,
        /// Members of GROUP may use the control socket too (mode 0660);
        /// without it, root and the agent's own user only (mode 0600).
        #[arg(long, value_name = "GROUP")]
        control_group: Option<String>,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9469).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Remove the data plane pinned under --pin-dir: XDP links (the program
    /// detaches) and maps. Refuses while an agent answers on --control-socket.
    Detach,
    /// Per-destination metrics: copy-on-write into a private slot.
    Metrics {
        #[command(subcommand)]
        action: MetricsAction,
    },
    /// Read the pinned maps (works while the agent is stopped).
    Show {
        #[command(subcommand)]
        what: ShowWhat,
        /// JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Attach a pass-only XDP program to IFACE in native mode and pin its link
    /// at PIN: the far end of a lab veth needs one to receive redirected frames.
    AttachPeer {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        pin: PathBuf,
    },
}

#[derive(Subcommand)]
enum MetricsAction {
    /// Set METRIC of DEST to VALUE in DEST's private copy (created on first write).
    Set {
        dest: String,
        /// An RTAX metric by its `ip route` name: mtu, advmss, hoplimit, window, ...
        metric: String,
        value: u64,
        /// Seconds until the override expires (0: until reset).
        #[arg(long)]
        expires: Option<u64>,
    },
    /// Drop DEST's private copy: it reads its shared metrics again.
    Reset { dest: String },
    /// What DEST forwards with (reference, values, covering route, overrides);
    /// without DEST, every destination with private metrics.
    Show {
        dest: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ShowWhat {
    /// Packets and bytes per verdict reason.
    Stats,
    /// The route entries in ROUTES_V4 and ROUTES_V6; with TARGET, the entry
    /// an address is forwarded by (longest match), or a prefix's own.
    Routes {
        target: Option<String>,
        /// Only table main's routes, the local table's entries (`main`,
        /// `local`), or another table's (a number, `default`): the tables
        /// `ip rule` looks up, held apart in TABLE_ROUTES_V4/_V6.
        #[arg(long)]
        table: Option<String>,
    },
    /// The next hops in use, with packets and bytes forwarded through each.
    Nexthops,
    /// The kernel nexthop objects (`ip nexthop`) the agent carries, and
    /// their entries.
    NexthopObjects,
    /// The shared (RO) and private (RW) metric slots in use.
    Metrics,
    /// The kernel's `ip rule` list, and how the fast path carries each rule.
    Rules,
    /// What the fast path hands to the slow path, by reason.
    Slowpath,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("cowroute: error: {e:#}");
        std::process::exit(1);
    }
}

/// After the agent stopped on an error: says whether the data plane it
/// leaves behind forwards on.
fn note_pinned_data_plane(pin_dir: &std::path::Path) {
    if pin_dir.join(common::maps::ROUTES_V4).exists() {
        eprintln!(
            "cowroute: the data plane stays pinned under {} and forwards on: a restarted agent adopts it, `cowroute detach` removes it",
            pin_dir.display()
        );
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    // Before any thread exists, so every thread lives in the namespace.
    if let Some(ns) = &cli.netns {
        common::netns::enter(ns)?;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,netlink_proto=error".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Command::Run {
            ifaces,
            config,
            source,
            tables,
            xdp_mode,
            metrics_rw_slots,
            grace_ms,
            resolve_wait,
            bpf_debug_log,
            default_expires,
            netlink_rcvbuf,
            keep_on_exit,
            fpm_listen,
            fpm_allow_remote,
            fpm_sweep_after,
            metrics_listen,
            slow_path,
            icmp_ratelimit_ms,
            icmp_msgs_per_sec,
            icmp_msgs_burst,
            pmtu_learning,
            pmtu_max_learned,
            control_group,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let pin_dir = cli.pin_dir.clone();
            let outcome = rt.block_on(daemon::run(RunOptions {
                ifaces,
                config,
                cli: CliSettings {
                    source,
                    tables: (!tables.is_empty()).then_some(tables),
                    mode: xdp_mode,
                    metrics_rw_slots,
                    bpf_debug_log,
                    slow_path,
                    icmp_ratelimit_ms,
                    icmp_msgs_per_sec,
                    icmp_msgs_burst,
                    pmtu_learning,
                    pmtu_max_learned,
                },
                pin_dir: cli.pin_dir,
                grace: Duration::from_millis(grace_ms),
                resolve_wait: Duration::from_secs(resolve_wait),
                control_socket: cli.control_socket,
                default_expires: Duration::from_secs(default_expires),
                netlink_rcvbuf,
                keep_on_exit,
                fpm_listen,
                fpm_allow_remote,
                fpm_sweep_after: Duration::from_secs(fpm_sweep_after),
                metrics_listen,
                control_group: control_group.as_deref().map(control::group_id).transpose()?,
            }));
            if outcome.is_err() {
                note_pinned_data_plane(&pin_dir);
            }
            outcome
        }
        Command::Detach => {
            if Client::connect(&cli.control_socket).and_then(|mut c| c.call(&Request::Stats)).is_ok() {
                anyhow::bail!(
                    "an agent is running on {} and owns {}: stop it first (SIGTERM detaches too)",
                    cli.control_socket.display(),
                    cli.pin_dir.display()
                );
            }
            let removed = dataplane::detach(&cli.pin_dir)?;
            if removed.is_empty() {
                println!("nothing pinned under {}", cli.pin_dir.display());
            }
            for p in removed {
                println!("removed {}", p.display());
            }
            Ok(())
        }
        Command::Metrics { action } => metrics_command(&cli.control_socket, action),
        Command::Show { what, json } => match what {
            ShowWhat::Stats => show::print_stats(&cli.pin_dir, &cli.control_socket, json),
            ShowWhat::Routes { target, table } => show::print_routes(&cli.pin_dir, target.as_deref(), table.as_deref(), json),
            ShowWhat::Slowpath => show::print_slowpath(&cli.pin_dir, &cli.control_socket, json),
            ShowWhat::Nexthops => show::print_nexthops(&cli.pin_dir, &cli.control_socket, json),
            ShowWhat::NexthopObjects => show::print_nexthop_objects(&cli.control_socket, json),
            ShowWhat::Metrics => show::print_metrics(&cli.pin_dir, json),
            ShowWhat::Rules => cowroute::operator::show_rules::print_rules(&cli.control_socket, json),
        },
        Command::AttachPeer { iface, pin } => {
            let mut dp = DataPlane::load(&LoadOptions { metrics_rw_slots: 1, bpf_debug_log: false })?;
            dp.attach_peer_pinned(&iface, &pin)
        }
    }
}

/// `cowroute metrics ...`: checks the input, then asks the agent.
fn metrics_command(socket: &std::path::Path, action: MetricsAction) -> Result<()> {
    let (req, json) = match action {
        MetricsAction::Set { dest, metric, value, expires } => {
            control::parse_dest(&dest)?;
            control::parse_metric_value(&metric, value)?;
            control::parse_expires(expires, Duration::ZERO, std::time::Instant::now())?;
            (Request::MetricsSet { dest, metric, value, expires }, false)
        }
        MetricsAction::Reset { dest } => {
            control::parse_dest(&dest)?;
            (Request::MetricsReset { dest }, false)
        }
        MetricsAction::Show { dest, json } => {
            if let Some(d) = &dest {
                control::parse_dest(d)?;
            }
            (Request::MetricsShow { dest }, json)
        }
    };
    let answer = Client::connect(socket)?.call(&req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match req {
        Request::MetricsReset { dest } => {
            if answer["reset"] == true {
                println!("{dest}: private metrics dropped; shared metrics again");
            } else {
                println!("{dest}: had no private metrics");
            }
        }
        _ => print_destinations(&answer),
    }
    Ok(())
}

fn print_destinations(answer: &serde_json::Value) {
    let rows: Vec<&serde_json::Value> = match answer {
        serde_json::Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    println!("{:<40} {:<10} {:<20} {:<10} values / overrides", "destination", "metrics", "covering", "mask");
    for r in rows {
        let values: Vec<String> = r["values"].as_object().into_iter().flatten().map(|(k, v)| format!("{k} {v}")).collect();
        let overrides: Vec<String> = r["overrides"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                let exp = o["expires_in"].as_u64().map_or("no expiry".to_string(), |s| format!("expires in {s}s"));
                format!("{}={} ({}, {exp})", o["metric"].as_str().unwrap_or("?"), o["value"], o["source"].as_str().unwrap_or("?"))
            })
            .collect();
        println!(
            "{:<40} {:<10} {:<20} {:<#10x} {}{}",
            r["destination"].as_str().unwrap_or("?"),
            r["reference"].as_str().unwrap_or("?"),
            r["covering"].as_str().unwrap_or("-"),
            r["override_mask"].as_u64().unwrap_or(0),
            if values.is_empty() { "(all zero)".to_string() } else { values.join(" ") },
            if overrides.is_empty() { String::new() } else { format!(" / {}", overrides.join(", ")) },
        );
    }
}
