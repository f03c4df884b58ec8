//! `cowroute show ...`: reads the pinned maps directly, so it works whether
//! or not the agent is running.

use crate::{
    dataplane::map_writer::{open_pinned, PublishedReader},
    dataplane::table_routes::TableRoutes,
    operator::route_metrics::{self, MetricsInfo, MetricsView},
    operator::{
        control::Request,
        stats::{self, AgentStats},
    },
    slow_path::SlowPathMode,
};
use anyhow::Result;
use anyhow::{anyhow, bail};
use aya::maps::{lpm_trie::Key, Array, LpmTrie, MapData, PerCpuArray};
use common::{
    maps,
    route::{V4KeyData, V6KeyData},
    Counter, RouteEntry, RouteMetrics, Rtax,
};
use ipnet::IpNet;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

#[derive(Debug, serde::Serialize)]
pub struct RouteRow {
    pub prefix: String,
    pub kind: &'static str,
    pub nexthop: u32,
    pub metrics: String,
    pub flags: String,
    /// For an IPv4 address (`show routes ADDRESS`): what the program's
    /// lookup reads, "dir24 slot N" (the block's copy) or "trie".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup: Option<String>,
    /// What `metrics` holds and where it comes from.
    pub metric_values: Option<MetricsInfo>,
}

/// Fills in the rows' metric values from the pinned pools; `entries`: each
/// row's entry and destination (a private copy's key).
fn with_metric_values(pin_dir: &Path, mut rows: Vec<RouteRow>, entries: &[(IpAddr, RouteEntry)]) -> Result<Vec<RouteRow>> {
    let mut view = MetricsView::open(pin_dir)?;
    let now = route_metrics::now_epoch();
    for (row, (dest, e)) in rows.iter_mut().zip(entries) {
        row.metric_values = Some(view.info(e.metrics, *dest, now));
    }
    Ok(rows)
}

fn route_row(prefix: String, e: &RouteEntry) -> RouteRow {
    let mut flags = Vec::new();
    if e.flags & RouteEntry::HOST != 0 {
        flags.push("host");
    }
    if e.flags & RouteEntry::CLONE != 0 {
        flags.push("clone");
    }
    if e.is_multipath() {
        flags.push("multipath");
    }
    if e.flags & RouteEntry::LOCAL_TABLE != 0 {
        flags.push("local_table");
    }
    RouteRow {
        prefix,
        kind: e.kind().map_or("invalid", |k| k.name()),
        nexthop: e.nexthop,
        metrics: e.metrics.to_string(),
        flags: flags.join(","),
        lookup: None,
        metric_values: None,
    }
}

/// The pinned DIR-24 index, read as the XDP program reads it.
pub struct Dir24Reader {
    blocks: Array<MapData, common::route::Dir24Blocks>,
    entries: Array<MapData, RouteEntry>,
}

impl Dir24Reader {
    pub fn open(pin_dir: &Path) -> Result<Dir24Reader> {
        Ok(Dir24Reader {
            blocks: open_pinned(pin_dir, maps::ROUTES_V4_DIR24)?,
            entries: open_pinned(pin_dir, maps::ROUTES_V4_DIR24_ENTRIES)?,
        })
    }

    /// The entry and slot `addr`'s /24 block names, if it names one (else
    /// the program asks the trie).
    pub fn answer(&self, addr: Ipv4Addr) -> Result<Option<(RouteEntry, u32)>> {
        let a = u32::from(addr);
        let word = self.blocks.get(&(a >> 16), 0)?.blocks[((a >> 8) & 0xff) as usize];
        Ok(match word {
            0 => None,
            w => Some((self.entries.get(&(w - 1), 0)?, w - 1)),
        })
    }
}

/// The longest-prefix match of `key_data` within `max` bits: the entry and
/// the length of the prefix it belongs to. The trie answers a lookup of
/// length L with the longest match no longer than L, so the matched length
/// is the shortest L that still answers with the same entry (entries of two
/// routes always differ: each carries its route's id).
fn longest_match<const N: usize>(
    trie: &LpmTrie<MapData, [u8; N], RouteEntry>,
    data: [u8; N],
    max: u32,
) -> Result<Option<(RouteEntry, u32)>> {
    let get = |len: u32| trie.get(&Key::new(len, common::route::mask_prefix(data, len)), 0).ok();
    let Some(entry) = get(max) else { return Ok(None) };
    let (mut lo, mut hi) = (0, max);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if get(mid) == Some(entry) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(Some((entry, lo)))
}

/// `show routes TARGET`: for an address, the entry that forwards it (the
/// XDP program's lookup); for a prefix, that exact entry.
pub fn route_for(pin_dir: &Path, target: &str) -> Result<Vec<RouteRow>> {
    let (addr, exact) = match target.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => bail!("{target}: host bits set in a prefix (did you mean {}?)", net.trunc()),
        Ok(net) => (net.addr(), Some(net.prefix_len() as u32)),
        Err(_) => (target.parse::<IpAddr>().map_err(|_| anyhow!("{target:?} is neither an address nor a prefix"))?, None),
    };
    let found = match addr {
        IpAddr::V4(a) => {
            let v4: LpmTrie<MapData, V4KeyData, RouteEntry> = open_pinned(pin_dir, maps::ROUTES_V4)?;
            longest_match(&v4, a.octets(), exact.unwrap_or(32))?
                .map(|(e, len)| (e, format!("{}/{len}", Ipv4Addr::from(common::route::mask_prefix(a.octets(), len)))))
        }
        IpAddr::V6(a) => {
            let v6: LpmTrie<MapData, V6KeyData, RouteEntry> = open_pinned(pin_dir, maps::ROUTES_V6)?;
            longest_match(&v6, a.octets(), exact.unwrap_or(128))?
                .map(|(e, len)| (e, format!("{}/{len}", Ipv6Addr::from(common::route::mask_prefix(a.octets(), len)))))
        }
    };
    let (mut row, entry) = match found {
        Some((e, prefix)) if exact.is_none() || prefix == target => (route_row(prefix, &e), e),
        _ => return Ok(Vec::new()),
    };
    if let (IpAddr::V4(a), None) = (addr, exact) {
        row.lookup = Some(match Dir24Reader::open(pin_dir)?.answer(a)? {
            Some((e, slot)) => {
                // The copy must be the trie's entry for the same route.
                let same = route_row(String::new(), &e);
                anyhow::ensure!(
                    same.nexthop == row.nexthop && same.metrics == row.metrics && same.kind == row.kind,
                    "the DIR-24 copy in slot {slot} differs from the trie's entry for {} (an agent still loading its routes writes the trie after the index: ask again once it is ready)",
                    row.prefix
                );
                format!("dir24 slot {slot}")
            }
            None => "trie".into(),
        });
    }
    with_metric_values(pin_dir, vec![row], &[(addr, entry)])
}

pub fn routes(pin_dir: &Path) -> Result<Vec<RouteRow>> {
    let v4: LpmTrie<MapData, V4KeyData, RouteEntry> = open_pinned(pin_dir, maps::ROUTES_V4)?;
    let v6: LpmTrie<MapData, V6KeyData, RouteEntry> = open_pinned(pin_dir, maps::ROUTES_V6)?;
    let all = crate::dataplane::map_writer::route_entries(&v4, &v6)?;
    let rows = all.iter().map(|(p, e)| route_row(p.to_string(), e)).collect();
    let entries: Vec<(IpAddr, RouteEntry)> = all.into_iter().map(|(p, e)| (p.addr(), e)).collect();
    with_metric_values(pin_dir, rows, &entries)
}

fn mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[derive(Debug, serde::Serialize)]
pub struct NextHopRow {
    pub id: u32,
    /// The `NEXTHOPS` slot the id's index word names now.
    pub slot: u32,
    pub ifindex: u32,
    pub dmac: String,
    pub smac: String,
    pub mtu: u32,
    pub vlan: u16,
    pub usable: bool,
    /// Forwarded through it (all CPUs), since the maps were made.
    pub packets: u64,
    pub bytes: u64,
    /// The kernel nexthop object it is the entry of (when the agent answers).
    pub object: Option<u32>,
}

/// Published next hops, by id (through `NEXTHOPS_INDEX`, as the program
/// finds them), with what was forwarded through each, and the kernel
/// nexthop objects they belong to when an agent answers on `socket`.
pub fn nexthops(pin_dir: &Path, socket: &Path) -> Result<Vec<NextHopRow>> {
    let counters: PerCpuArray<MapData, Counter> = open_pinned(pin_dir, maps::NH_COUNTERS)?;
    let objects: std::collections::BTreeMap<u32, u32> =
        agent_nexthop_objects(socket).unwrap_or_default().into_iter().filter_map(|o| Some((o.nexthop?, o.id))).collect();
    let mut rows = Vec::new();
    for (id, slot, nh) in PublishedReader::nexthops(pin_dir)?.all()? {
        let per_cpu = counters.get(&id, 0)?;
        rows.push(NextHopRow {
            id,
            slot,
            ifindex: nh.ifindex,
            dmac: mac(&nh.dmac),
            smac: mac(&nh.smac),
            mtu: nh.mtu,
            vlan: nh.vlan,
            usable: nh.is_usable(),
            packets: per_cpu.iter().map(|c| c.packets).sum(),
            bytes: per_cpu.iter().map(|c| c.bytes).sum(),
            object: objects.get(&id).copied(),
        });
    }
    Ok(rows)
}

/// A kernel nexthop object as the agent carries it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NexthopObjectRow {
    pub id: u32,
    /// `single`, `group`, `blackhole`, or `kernel` (what the fast path cannot carry).
    pub kind: String,
    /// Its own `NEXTHOPS` id (a single nexthop).
    pub nexthop: Option<u32>,
    /// Its own `NH_GROUPS` id (a group).
    pub group: Option<u32>,
    /// As `ip nexthop` says it: `via 10.0.1.2 dev 3`, `group 1/2,3 resilient buckets 128 idle_timer 120`.
    pub detail: String,
    pub protocol: u8,
}

/// The RIB's nexthop objects, by id.
pub fn nexthop_object_rows<S: crate::rib::MapSink>(rib: &crate::rib::Rib<S>) -> Vec<NexthopObjectRow> {
    use crate::rib::{objects::Resolved, types::NexthopKind};
    let mut rows: Vec<NexthopObjectRow> = rib
        .nexthop_objects()
        .map(|o| {
            let (nexthop, group) = match o.resolved {
                Resolved::Nexthop(id) => (Some(id), None),
                Resolved::Group(id) => (None, Some(id)),
                _ => (None, None),
            };
            let (kind, detail) = match &o.object.kind {
                NexthopKind::Single { dev, via: Some(v) } => ("single", format!("via {v} dev {dev}")),
                NexthopKind::Single { dev, via: None } => ("single", format!("dev {dev}")),
                NexthopKind::Blackhole => ("blackhole", "blackhole".to_string()),
                NexthopKind::KernelOnly(why) => ("kernel", format!("{why}: the kernel forwards")),
                NexthopKind::Group { members, resilient } => {
                    let m: Vec<String> = members.iter().map(|(id, w)| if *w == 1 { id.to_string() } else { format!("{id},{w}") }).collect();
                    let res = resilient.map_or(String::new(), |r| {
                        format!(" resilient buckets {} idle_timer {} unbalanced_timer {}", r.buckets, r.idle_timer, r.unbalanced_timer)
                    });
                    ("group", format!("group {}{res}", m.join("/")))
                }
            };
            let kind = if o.resolved == Resolved::Kernel { "kernel" } else { kind };
            NexthopObjectRow { id: o.object.id, kind: kind.into(), nexthop, group, detail, protocol: o.object.protocol }
        })
        .collect();
    rows.sort_by_key(|r| r.id);
    rows
}

/// The running agent's nexthop objects, when one answers on `socket`.
fn agent_nexthop_objects(socket: &Path) -> Option<Vec<NexthopObjectRow>> {
    let answer = crate::operator::control::Client::connect(socket).and_then(|mut c| c.call(&Request::NexthopObjects)).ok()?;
    serde_json::from_value(answer).ok()
}

pub fn print_nexthop_objects(socket: &Path, json: bool) -> Result<()> {
    let rows = agent_nexthop_objects(socket).ok_or_else(|| anyhow::anyhow!("no agent answering on {}", socket.display()))?;
    let header = format!("{:>8} {:<10} {:<10} detail", "nhid", "kind", "entry");
    print_rows(&rows, json, &header, |r| {
        let entry = match (r.nexthop, r.group) {
            (Some(n), _) => format!("nh {n}"),
            (_, Some(g)) => format!("group {g}"),
            _ => "-".into(),
        };
        format!("{:>8} {:<10} {:<10} {}", r.id, r.kind, entry, r.detail)
    })
}

#[derive(Debug, serde::Serialize)]
pub struct MetricsRow {
    pub reference: String,
    pub values: std::collections::BTreeMap<&'static str, u32>,
}

/// Non-zero metric slots of both pools (and RO slot 0, the default).
pub fn metrics(pin_dir: &Path) -> Result<Vec<MetricsRow>> {
    let mut rows = Vec::new();
    for (name, ro) in [(maps::METRICS_RO, true), (maps::METRICS_RW, false)] {
        let arr: Array<MapData, RouteMetrics> = open_pinned(pin_dir, name)?;
        for (slot, m) in arr.iter().enumerate() {
            let m = m?;
            if m.is_default() && !(ro && slot == 0) {
                continue;
            }
            let r = if ro { common::MetricsRef::read_only(slot as u32) } else { common::MetricsRef::private(slot as u32) };
            let values = Rtax::ALL.iter().filter(|x| m.get(**x) != 0).map(|x| (x.name(), m.get(*x))).collect();
            rows.push(MetricsRow { reference: r.to_string(), values });
        }
    }
    Ok(rows)
}

/// Prints `rows` as pretty JSON, or as a table: a header line, then one
/// line per row.
fn print_rows<T: serde::Serialize>(rows: &[T], json: bool, header: &str, line: impl Fn(&T) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else {
        println!("{header}");
        for r in rows {
            println!("{}", line(r));
        }
    }
    Ok(())
}

/// The running agent's stats, when one answers on `socket`.
fn agent_stats(socket: &Path) -> Option<AgentStats> {
    let answer = crate::operator::control::Client::connect(socket).and_then(|mut c| c.call(&Request::Stats)).ok()?;
    serde_json::from_value(answer).ok()
}

/// `show stats`: the fast path's verdicts by reason (from the pinned
/// counters, agent or not) and, when an agent answers, what it holds.
pub fn print_stats(pin_dir: &Path, socket: &Path, json: bool) -> Result<()> {
    let header = format!("{:<16} {:>14} {:>16}", "reason", "packets", "bytes");
    print_rows(&stats::read_pinned_counters(pin_dir)?, json, &header, |c| format!("{:<16} {:>14} {:>16}", c.reason, c.packets, c.bytes))?;
    if json {
        return Ok(());
    }
    let Some(s) = agent_stats(socket) else {
        println!("(no agent answering on {}: the pinned counters only)", socket.display());
        return Ok(());
    };
    let (r, q) = (&s.rib, &s.neighbour_queue);
    println!(
        "agent: {} routes, {} local addresses, {} neighbour hosts; {} next hops ({} resolved), {} ECMP groups",
        r.routes, r.local_addresses, r.neighbour_hosts, r.nexthops, r.nexthops_resolved, r.nexthop_groups
    );
    println!(
        "metrics: {} shared slots ({} references), {} of {} private slots; COW {} copies, {} in place, {} failures (pool exhausted)",
        r.metrics_ro_in_use,
        r.metrics_ro_references,
        r.metrics_rw_in_use,
        r.metrics_rw_capacity,
        r.cow.cows,
        r.cow.writes_in_place,
        r.cow.failures
    );
    println!(
        "netlink: {} events, {} errors, {} overruns, {} undecodable; pmtu: {} reports, {} learned; neighbour queue: {} held, {} released, {} dropped",
        s.netlink.events,
        s.netlink.errors,
        s.netlink.overruns,
        s.netlink.undecodable,
        s.pmtu.reports,
        s.pmtu.learned,
        q.held,
        q.released,
        q.dropped
    );
    let t = &s.trie_writes;
    println!(
        "trie writes queued: {} batch calls, {} routes batched, {} written one by one; {} refused, {} owed (out of the trie, retried)",
        t.batches, t.batched, t.retried, t.refused, t.owed
    );
    let refused: Vec<String> = s.pmtu.refusals().iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{n} {r}")).collect();
    if !refused.is_empty() {
        println!("pmtu refused: {}", refused.join(", "));
    }
    for part in &s.degraded {
        println!("degraded: {part}");
    }
    Ok(())
}

/// What `show routes --table` shows: the main view's routes (table main),
/// its local entries (the local table's, answered first by `ip rule`'s
/// local rule), or a table held apart for the rules that look it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableView {
    All,
    Main,
    Local,
    Apart(u32),
}

pub fn table_filter(table: Option<&str>) -> Result<TableView> {
    Ok(match table {
        None => TableView::All,
        Some("main" | "254") => TableView::Main,
        Some("local" | "255") => TableView::Local,
        Some("default") => TableView::Apart(253),
        Some(t) => match t.parse::<u32>() {
            Ok(n) if n != 0 => TableView::Apart(n),
            _ => bail!("--table {t}: not a table (main, local, default, or a number 1 to 4294967295)"),
        },
    })
}

/// Table `table`'s routes as the fast path holds them (`target`: the one
/// an address matches).
fn table_routes(pin_dir: &Path, table: u32, target: Option<&str>) -> Result<Vec<RouteRow>> {
    let tries = TableRoutes::open_pinned(pin_dir)?;
    let mut found: Vec<(IpNet, RouteEntry)> = match target {
        Some(t) => {
            let addr: IpAddr = t.parse().map_err(|_| anyhow!("{t}: not an IP address"))?;
            tries.lookup(table, addr).into_iter().collect()
        }
        None => tries.entries()?.into_iter().filter(|(t, _, _)| *t == table).map(|(_, p, e)| (p, e)).collect(),
    };
    found.sort_by_key(|(p, _)| *p);
    let entries: Vec<(IpAddr, RouteEntry)> = found.iter().map(|(p, e)| (p.addr(), *e)).collect();
    let rows = found.iter().map(|(p, e)| route_row(p.to_string(), e)).collect();
    with_metric_values(pin_dir, rows, &entries)
}

pub fn print_routes(pin_dir: &Path, target: Option<&str>, table: Option<&str>, json: bool) -> Result<()> {
    let view = table_filter(table)?;
    let rows = match (view, target) {
        (TableView::Apart(n), _) => {
            let rows = table_routes(pin_dir, n, target)?;
            if rows.is_empty() && !json {
                bail!(
                    "table {n} has no route in the fast path{}: it holds the kernel's tables apart (`ip route show table {n}` lists what the kernel has; `cowroute show rules` which rules look it up)",
                    target.map_or(String::new(), |t| format!(" for {t}"))
                );
            }
            rows
        }
        (_, Some(t)) => {
            let rows = route_for(pin_dir, t)?;
            if rows.is_empty() && !json {
                bail!("no route for {t} in the fast path's tables");
            }
            rows
        }
        (_, None) => routes(pin_dir)?,
    };
    let local = |r: &RouteRow| r.flags.split(',').any(|f| f == "local_table");
    let rows: Vec<RouteRow> = match view {
        TableView::All | TableView::Apart(_) => rows,
        TableView::Main => rows.into_iter().filter(|r| !local(r)).collect(),
        TableView::Local => rows.into_iter().filter(local).collect(),
    };
    let header =
        format!("{:<44} {:<12} {:>8} {:<10} {:<20} {:<14} metric values", "prefix", "type", "nexthop", "metrics", "flags", "lookup");
    print_rows(&rows, json, &header, |r| {
        format!(
            "{:<44} {:<12} {:>8} {:<10} {:<20} {:<14} {}",
            r.prefix,
            r.kind,
            r.nexthop,
            r.metrics,
            r.flags,
            r.lookup.as_deref().unwrap_or("-"),
            r.metric_values.as_ref().map_or(String::new(), |m| m.summary())
        )
    })
}

/// `show slowpath`: what the fast path could not finish and handed on, by
/// reason (from the pinned counters), and, when an agent answers on
/// `socket`, what its AF_XDP slow path did with them.
pub fn print_slowpath(pin_dir: &Path, socket: &Path, json: bool) -> Result<()> {
    let exceptions: Vec<stats::ReasonCount> = stats::read_pinned_counters(pin_dir)?
        .into_iter()
        .filter(|c| c.reason != common::Reason::Forwarded.name() && c.reason != common::Reason::Blackhole.name())
        .collect();
    let unserved = stats::read_pinned_unserved(pin_dir)?;
    let agent = agent_stats(socket).map(|s| s.slow_path);
    if json {
        let mode = agent.map_or(SlowPathMode::Kernel, |a| a.mode);
        let all = serde_json::json!({ "mode": mode, "agent": agent, "exceptions": exceptions, "unserved": unserved });
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    match &agent {
        Some(a) if a.mode == SlowPathMode::Afxdp => println!(
            "slow path: the agent over AF_XDP ({} sockets): {} frames, {} ICMP errors sent, {} rate-limited, {} refused, {} without a route back, {} malformed, {} not sent, {} dropped at a full socket",
            a.sockets, a.frames, a.icmp_sent, a.rate_limited, a.refused, a.no_route_back, a.malformed, a.send_failed, a.socket_dropped
        ),
        Some(_) => println!("slow path: the kernel stack (the agent runs with --slow-path kernel)"),
        None => println!("slow path: no agent answering; the kernel stack takes what the fast path passes up"),
    }
    if let Some(t) = agent.as_ref().map(|a| a.transit).filter(|t| t.frames > 0) {
        println!(
            "transit: {} frames, {} with options forwarded, {} with hop-by-hop forwarded, {} source routes refused, {} parameter problems, {} dropped, {} without a route, {} fragmented into {} fragments",
            t.frames, t.options_forwarded, t.hop_by_hop_forwarded, t.source_routes_refused, t.parameter_problems, t.header_drops, t.no_route, t.fragmented, t.fragments
        );
    }
    match &agent {
        Some(_) => {}
        None => println!("slow path: no agent answering; the kernel stack takes what the fast path passes up"),
    }
    let passed: Vec<String> = unserved.iter().filter(|c| c.packets > 0).map(|c| format!("{} {}", c.reason, c.packets)).collect();
    if !passed.is_empty() {
        println!("passed to the kernel instead of the slow path: {}", passed.join(", "));
    }
    println!("exceptions by reason (TTL, too big and unreachable ones go to the AF_XDP slow path when it runs; the rest to the kernel):");
    print_rows(&exceptions, false, &format!("{:<16} {:>14} {:>16}", "reason", "packets", "bytes"), |c| {
        format!("{:<16} {:>14} {:>16}", c.reason, c.packets, c.bytes)
    })
}

pub fn print_nexthops(pin_dir: &Path, socket: &Path, json: bool) -> Result<()> {
    let header = format!(
        "{:>6} {:>6} {:>8} {:<18} {:<18} {:>6} {:>5} {:<6} {:>12} {:>14} nhid",
        "id", "slot", "ifindex", "dmac", "smac", "mtu", "vlan", "usable", "packets", "bytes"
    );
    print_rows(&nexthops(pin_dir, socket)?, json, &header, |r| {
        format!(
            "{:>6} {:>6} {:>8} {:<18} {:<18} {:>6} {:>5} {:<6} {:>12} {:>14} {}",
            r.id,
            r.slot,
            r.ifindex,
            r.dmac,
            r.smac,
            r.mtu,
            r.vlan,
            r.usable,
            r.packets,
            r.bytes,
            r.object.map_or("-".into(), |o| o.to_string())
        )
    })
}

pub fn print_metrics(pin_dir: &Path, json: bool) -> Result<()> {
    let header = format!("{:<10} values", "slot");
    print_rows(&metrics(pin_dir)?, json, &header, |r| {
        let vals: Vec<String> = r.values.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!("{:<10} {}", r.reference, if vals.is_empty() { "(default: all zero)".into() } else { vals.join(" ") })
    })
}
