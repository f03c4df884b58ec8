//! The full-table lab (`--only full-table`): a full table of each family in
//! rtr's kernel FIB (a million IPv4 routes, 200,000 IPv6 ones), mirrored by
//! the agent, so that kernel forwarding, the `bpf_fib_lookup` forwarder and
//! cowroute forward by the same routes; and beside it, up at the same time,
//! the one-route lab. Frames are spread over 65,536 destinations, each in a
//! prefix of its own (in the one-route lab, 65,536 addresses of its one
//! route), so that the two labs differ in the table alone. Every round runs
//! every mode of both labs once, both families: the ratios are per round.

use crate::{
    stats::{fmt, summarize, Summary},
    throughput::{Bench, Mode, Table},
};
use anyhow::Result;
use ipnet::IpNet;
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

/// Destinations the frames are spread over (goal: at least 65,536).
pub const DESTINATIONS: usize = 1 << 16;
/// Frame size and flows (UDP source ports) of every run.
const FRAME: usize = 64;
const FLOWS: u32 = 256;

#[derive(Debug, Clone, serde::Serialize)]
pub struct FullTableRow {
    pub family: &'static str,
    /// "one route" or "full table".
    pub table: &'static str,
    pub routes: usize,
    pub mode: Mode,
    pub delivered_pps: Summary,
    pub router_ns_per_packet: Summary,
}

/// One family's ratios, paired per round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FamilyRatios {
    pub family: &'static str,
    pub routes: usize,
    /// Destinations the frames were spread over (each in a prefix of its own).
    pub destinations: usize,
    /// cowroute native, full table / one route (goal: at least 0.9).
    pub native_full_vs_one_route: Summary,
    /// cowroute native / the bpf_fib_lookup forwarder, both on the full table (goal: at least 1.5).
    pub native_vs_reference_full: Summary,
    /// cowroute native / kernel forwarding, both on the full table.
    pub native_vs_kernel_full: Summary,
    /// cowroute native, one route / the redirect-only program (goal: at least 0.9).
    pub native_vs_ceiling: Summary,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FullTableFigures {
    /// Destinations per family asked for (a --quick table may have fewer leaves).
    pub destinations: usize,
    pub frame_bytes: usize,
    pub flows: u32,
    pub rounds: usize,
    pub rows: Vec<FullTableRow>,
    pub ratios: Vec<FamilyRatios>,
}

/// `n` destinations, each in a different prefix of `table` (of `dst`'s
/// family) that holds no longer prefix of it (so the prefix is the
/// address's longest match), taken evenly over the table's address order.
pub fn leaf_destinations(table: &[IpNet], n: usize, v6: bool) -> Vec<IpAddr> {
    let bits = if v6 { 128 } else { 32 };
    let mut nets: Vec<(u128, u8)> = table
        .iter()
        .filter_map(|p| match (p, v6) {
            (IpNet::V4(p), false) => Some((u32::from(p.network()) as u128, p.prefix_len())),
            (IpNet::V6(p), true) => Some((u128::from(p.network()), p.prefix_len())),
            _ => None,
        })
        .collect();
    nets.sort_unstable();
    let last = |(net, len): (u128, u8)| net | (u128::MAX >> (128 - bits)).checked_shr(len as u32).unwrap_or(0);
    // Sorted by (network, length), whatever lies inside a prefix comes right after it.
    let leaves: Vec<(u128, u8)> =
        nets.iter().enumerate().filter(|(i, p)| nets.get(i + 1).is_none_or(|q| q.0 > last(**p))).map(|(_, p)| *p).collect();
    let step = (leaves.len() / n.max(1)).max(1);
    let addr = |(net, len): (u128, u8)| if len < bits { net + 1 } else { net };
    leaves
        .iter()
        .step_by(step)
        .take(n)
        .map(|&p| if v6 { IpAddr::V6(Ipv6Addr::from(addr(p))) } else { IpAddr::V4(Ipv4Addr::from(addr(p) as u32)) })
        .collect()
}

const TABLES: [&str; 2] = ["one route", "full table"];

/// Modes run in each lab: cowroute and the ceiling in the one-route lab;
/// cowroute and the kernel's two ways on the full table.
fn modes(table: &str) -> &'static [Mode] {
    if table == "one route" {
        &[Mode::Native, Mode::Ceiling]
    } else {
        &[Mode::Native, Mode::Reference, Mode::Kernel]
    }
}

pub fn measure(v4_routes: usize, v6_routes: usize, rounds: usize, seconds: f64, say: &dyn Fn(&str)) -> Result<FullTableFigures> {
    say(&format!(
        "full-table lab: {v4_routes} IPv4 and {v6_routes} IPv6 routes in rtr's kernel FIB, frames over {DESTINATIONS} destinations; the one-route lab beside it"
    ));
    let mut table = cowroute_tests::synthetic::v4_kernel_table(v4_routes, 29);
    table.extend(cowroute_tests::synthetic::v6_table(v6_routes, 31));
    // Per family: the full table's destinations, the one-route lab's.
    let dsts: [(&'static str, usize, Vec<IpAddr>, Vec<IpAddr>); 2] = [
        ("ipv4", v4_routes, leaf_destinations(&table, DESTINATIONS, false), {
            (0..DESTINATIONS as u32).map(|i| IpAddr::V4(Ipv4Addr::from(0x0a32_0000 | i))).collect()
        }),
        ("ipv6", v6_routes, leaf_destinations(&table, DESTINATIONS, true), {
            (0..DESTINATIONS as u128).map(|i| IpAddr::V6(Ipv6Addr::from(0xfd00_0050u128 << 96 | i << 16 | 1))).collect()
        }),
    ];
    for (family, routes, full, _) in &dsts {
        // A --quick table may be smaller than the goal's spread: all its leaves then.
        anyhow::ensure!(
            full.len() == DESTINATIONS || *routes < DESTINATIONS,
            "only {} leaf prefixes in the {family} table of {routes}",
            full.len()
        );
    }
    let dsts = dsts.map(|(family, routes, full, mut one)| {
        one.truncate(full.len());
        (family, routes, full, one)
    });
    let mut one = Bench::up(&Table::OneRoute, say)?;
    let mut full = Bench::up(&Table::Kernel(table), say)?;
    // (family, table, mode) -> (delivered pps, router ns per packet), one per round.
    type Samples = BTreeMap<(&'static str, &'static str, Mode), (Vec<f64>, Vec<f64>)>;
    let mut samples = Samples::new();
    // Round 0 warms up (caches, the kernel's FIB after its batch, the
    // agent's first start against the full table) and is not recorded.
    for round in 0..=rounds {
        for name in TABLES {
            let bench = if name == "one route" { &mut one } else { &mut full };
            for &mode in modes(name) {
                bench.set_mode(mode)?;
                for (family, _, full_dsts, one_dsts) in &dsts {
                    let d = if name == "one route" { one_dsts } else { full_dsts };
                    let r = bench.run(FRAME, FLOWS, d, Duration::from_secs_f64(seconds))?;
                    let label = if round == 0 { "warm-up (not recorded)".to_string() } else { format!("round {round}/{rounds}") };
                    say(&format!(
                        "  {label}: {family}, {name}, {}: {:.0} pps offered, {:.0} delivered, {:.0} ns/pkt",
                        mode.name(),
                        r.offered_pps,
                        r.delivered_pps,
                        r.router_ns_per_packet
                    ));
                    if round > 0 {
                        let e = samples.entry((family, name, mode)).or_default();
                        e.0.push(r.delivered_pps);
                        e.1.push(r.router_ns_per_packet);
                    }
                }
            }
        }
    }
    drop((one, full));
    let pps = |family: &'static str, table: &'static str, mode: Mode| samples[&(family, table, mode)].0.clone();
    let paired = |a: Vec<f64>, b: Vec<f64>| summarize(a.iter().zip(&b).map(|(x, y)| x / y).collect());
    let ratios = dsts
        .iter()
        .map(|(family, routes, full_dsts, _)| {
            let full_native = pps(family, "full table", Mode::Native);
            FamilyRatios {
                family,
                routes: *routes,
                destinations: full_dsts.len(),
                native_full_vs_one_route: paired(full_native.clone(), pps(family, "one route", Mode::Native)),
                native_vs_reference_full: paired(full_native.clone(), pps(family, "full table", Mode::Reference)),
                native_vs_kernel_full: paired(full_native, pps(family, "full table", Mode::Kernel)),
                native_vs_ceiling: paired(pps(family, "one route", Mode::Native), pps(family, "one route", Mode::Ceiling)),
            }
        })
        .collect();
    let routes_of = |family: &str| dsts.iter().find(|d| d.0 == family).map_or(0, |d| d.1);
    Ok(FullTableFigures {
        destinations: DESTINATIONS,
        frame_bytes: FRAME,
        flows: FLOWS,
        rounds,
        rows: samples
            .iter()
            .map(|((family, table, mode), (pps, ns))| FullTableRow {
                family,
                table,
                routes: if *table == "one route" { 1 } else { routes_of(family) },
                mode: *mode,
                delivered_pps: summarize(pps.clone()),
                router_ns_per_packet: summarize(ns.clone()),
            })
            .collect(),
        ratios,
    })
}

/// The section of the report.
pub fn markdown(f: &FullTableFigures) -> String {
    let mut s = format!(
        "\n## Full-table lab (full tables in rtr's kernel FIB, mirrored by the agent), {} rounds\n\n{} B frames, {} flows, spread over {} destinations each in a prefix of its own (the one-route lab: as many addresses of its one route). Both labs are up at once; each round runs every mode of both, both families, after a warm-up round not recorded.\n\n| family | table | mode | delivered pps | router ns/pkt |\n|---|---|---|---:|---:|\n",
        f.rounds, f.frame_bytes, f.flows, f.destinations
    );
    for r in &f.rows {
        s += &format!(
            "| {} | {} ({}) | {} | {} | {} |\n",
            r.family,
            r.table,
            r.routes,
            r.mode.name(),
            fmt(&r.delivered_pps, 0),
            fmt(&r.router_ns_per_packet, 0)
        );
    }
    s += "\nPaired per round, cowroute native:\n\n| family | routes | destinations | full table vs one route (goal ≥ 0.9) | vs `bpf_fib_lookup` forwarder, same table (goal ≥ 1.5) | vs kernel forwarding, same table | one route vs redirect-only ceiling (goal ≥ 0.9) |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for r in &f.ratios {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.family,
            r.routes,
            r.destinations,
            fmt(&r.native_full_vs_one_route, 2),
            fmt(&r.native_vs_reference_full, 2),
            fmt(&r.native_vs_kernel_full, 2),
            fmt(&r.native_vs_ceiling, 2)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::leaf_destinations;
    use ipnet::{IpNet, Ipv4Net, Ipv6Net};
    use proptest::prelude::*;
    use std::{collections::HashSet, net::IpAddr};

    /// The longest prefix of `table` holding `addr` (the model).
    fn longest_match(table: &[IpNet], addr: IpAddr) -> Option<IpNet> {
        table.iter().filter(|p| p.contains(&addr)).max_by_key(|p| p.prefix_len()).copied()
    }

    proptest! {
        /// Every destination's longest match is a prefix of its own: no two
        /// destinations share a route, whatever nests in the table.
        #[test]
        fn each_destination_matches_a_prefix_of_its_own(raw in prop::collection::vec((any::<u32>(), 8u8..=32), 1..300), n in 1usize..64) {
            let table: Vec<IpNet> = raw
                .iter()
                .map(|&(a, len)| IpNet::V4(Ipv4Net::new((a & 0x0f0f_ffff).into(), len).unwrap().trunc()))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let dsts = leaf_destinations(&table, n, false);
            prop_assert!(!dsts.is_empty() && dsts.len() <= n);
            let matched: Vec<IpNet> = dsts.iter().map(|d| longest_match(&table, *d).expect("in the table")).collect();
            prop_assert_eq!(matched.iter().collect::<HashSet<_>>().len(), dsts.len(), "{:?} -> {:?}", dsts, matched);
        }

        /// The same for IPv6, with an IPv4 table mixed in (which it skips).
        #[test]
        fn each_ipv6_destination_matches_a_prefix_of_its_own(raw in prop::collection::vec((any::<u128>(), 16u8..=128), 1..300), n in 1usize..64) {
            let mut table: Vec<IpNet> = raw
                .iter()
                .map(|&(a, len)| IpNet::V6(Ipv6Net::new((a & (0xffff_0f0f_u128 << 96 | 0xff << 64 | 0xff)).into(), len).unwrap().trunc()))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            table.push("10.0.0.0/8".parse().unwrap());
            let dsts = leaf_destinations(&table, n, true);
            prop_assert!(!dsts.is_empty() && dsts.len() <= n && dsts.iter().all(|d| d.is_ipv6()));
            let matched: Vec<IpNet> = dsts.iter().map(|d| longest_match(&table, *d).expect("in the table")).collect();
            prop_assert_eq!(matched.iter().collect::<HashSet<_>>().len(), dsts.len(), "{:?} -> {:?}", dsts, matched);
        }
    }
}
