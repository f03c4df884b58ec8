//! `cowroute show ...`: reads the pinned maps directly, so it works whether
//! or not the agent is running.

use crate::{map_writer::open_pinned, stats};
use anyhow::Result;
use aya::maps::{Array, LpmTrie, MapData};
use common::{
    maps,
    route::{V4KeyData, V6KeyData},
    NextHop, RouteEntry, RouteMetrics, Rtax,
};
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

#[derive(Debug, serde::Serialize)]
pub struct RouteRow {
    pub prefix: String,
    pub kind: &'static str,
    pub nexthop: u32,
    pub metrics: String,
    pub flags: String,
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
    RouteRow {
        prefix,
        kind: e.kind().map_or("invalid", |k| k.name()),
        nexthop: e.nexthop,
        metrics: e.metrics.to_string(),
        flags: flags.join(","),
    }
}

pub fn routes(pin_dir: &Path) -> Result<Vec<RouteRow>> {
    let v4: LpmTrie<MapData, V4KeyData, RouteEntry> = open_pinned(pin_dir, maps::ROUTES_V4)?;
    let v6: LpmTrie<MapData, V6KeyData, RouteEntry> = open_pinned(pin_dir, maps::ROUTES_V6)?;
    let mut rows = Vec::new();
    for item in v4.iter() {
        let (k, e) = item?;
        rows.push(route_row(format!("{}/{}", Ipv4Addr::from(k.data()), k.prefix_len()), &e));
    }
    for item in v6.iter() {
        let (k, e) = item?;
        rows.push(route_row(format!("{}/{}", Ipv6Addr::from(k.data()), k.prefix_len()), &e));
    }
    Ok(rows)
}

fn mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[derive(Debug, serde::Serialize)]
pub struct NextHopRow {
    pub id: u32,
    pub ifindex: u32,
    pub dmac: String,
    pub smac: String,
    pub mtu: u32,
    pub vlan: u16,
    pub usable: bool,
}

/// Next hops in use (non-zero entries).
pub fn nexthops(pin_dir: &Path) -> Result<Vec<NextHopRow>> {
    let arr: Array<MapData, NextHop> = open_pinned(pin_dir, maps::NEXTHOPS)?;
    let mut rows = Vec::new();
    for (id, nh) in arr.iter().enumerate() {
        let nh = nh?;
        if nh == NextHop::default() {
            continue;
        }
        rows.push(NextHopRow { id: id as u32, ifindex: nh.ifindex, dmac: mac(&nh.dmac), smac: mac(&nh.smac), mtu: nh.mtu, vlan: nh.vlan, usable: nh.is_usable() });
    }
    Ok(rows)
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

pub fn print_stats(pin_dir: &Path, json: bool) -> Result<()> {
    let header = format!("{:<16} {:>14} {:>16}", "reason", "packets", "bytes");
    print_rows(&stats::read_pinned_counters(pin_dir)?, json, &header, |c| {
        format!("{:<16} {:>14} {:>16}", c.reason, c.packets, c.bytes)
    })
}

pub fn print_routes(pin_dir: &Path, json: bool) -> Result<()> {
    let header = format!("{:<44} {:<12} {:>8} {:<10} flags", "prefix", "type", "nexthop", "metrics");
    print_rows(&routes(pin_dir)?, json, &header, |r| {
        format!("{:<44} {:<12} {:>8} {:<10} {}", r.prefix, r.kind, r.nexthop, r.metrics, r.flags)
    })
}

pub fn print_nexthops(pin_dir: &Path, json: bool) -> Result<()> {
    let header = format!("{:>6} {:>8} {:<18} {:<18} {:>6} {:>5} usable", "id", "ifindex", "dmac", "smac", "mtu", "vlan");
    print_rows(&nexthops(pin_dir)?, json, &header, |r| {
        format!("{:>6} {:>8} {:<18} {:<18} {:>6} {:>5} {}", r.id, r.ifindex, r.dmac, r.smac, r.mtu, r.vlan, r.usable)
    })
}

pub fn print_metrics(pin_dir: &Path, json: bool) -> Result<()> {
    let header = format!("{:<10} values", "slot");
    print_rows(&metrics(pin_dir)?, json, &header, |r| {
        let vals: Vec<String> = r.values.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!("{:<10} {}", r.reference, if vals.is_empty() { "(default: all zero)".into() } else { vals.join(" ") })
    })
}
