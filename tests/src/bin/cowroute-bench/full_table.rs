//! The full-table lab (`--only full-table`): a million IPv4 routes in rtr's
//! kernel FIB, mirrored by the agent, so that kernel forwarding, the
//! `bpf_fib_lookup` forwarder and cowroute forward by the same table; and
//! beside it, up at the same time, the one-route lab. Frames are spread
//! over 65,536 destinations, each in a prefix of its own (in the one-route
//! lab, 65,536 addresses of its one route), so that the two labs differ in
//! the table alone. Every round runs every mode of both labs once: the
//! ratios are per round.

use crate::{
    stats::{summarize, Summary},
    throughput::{Bench, Mode, Table},
};
use anyhow::Result;
use ipnet::IpNet;
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

/// Destinations the frames are spread over (goal: at least 65,536).
pub const DESTINATIONS: usize = 1 << 16;
/// Frame size and flows (UDP source ports) of every run.
const FRAME: usize = 64;
const FLOWS: u32 = 256;

#[derive(Debug, Clone, serde::Serialize)]
pub struct FullTableRow {
    /// "one route" or "full table".
    pub table: &'static str,
    pub routes: usize,
    pub mode: Mode,
    pub delivered_pps: Summary,
    pub router_ns_per_packet: Summary,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FullTableFigures {
    pub routes: usize,
    pub destinations: usize,
    pub frame_bytes: usize,
    pub flows: u32,
    pub rounds: usize,
    pub rows: Vec<FullTableRow>,
    /// cowroute native, full table / one route, paired per round (goal: at least 0.9).
    pub native_full_vs_one_route: Summary,
    /// cowroute native / the bpf_fib_lookup forwarder, both on the full table, paired (goal: at least 1.5).
    pub native_vs_reference_full: Summary,
    /// cowroute native / kernel forwarding, both on the full table, paired.
    pub native_vs_kernel_full: Summary,
    /// cowroute native, one route / the redirect-only program, paired (goal: at least 0.9).
    pub native_vs_ceiling: Summary,
}

/// `n` destinations, each in a different prefix of `table` that holds no
/// longer prefix of it (so the prefix is the address's longest match), taken
/// evenly over the table's address order.
pub fn leaf_destinations(table: &[IpNet], n: usize) -> Vec<IpAddr> {
    let mut v4: Vec<(u32, u8)> = table
        .iter()
        .filter_map(|p| match p {
            IpNet::V4(p) => Some((u32::from(p.network()), p.prefix_len())),
            IpNet::V6(_) => None,
        })
        .collect();
    v4.sort_unstable();
    let last = |(net, len): (u32, u8)| net | (u32::MAX.checked_shr(len as u32).unwrap_or(0));
    // Sorted by (network, length), whatever lies inside a prefix comes right after it.
    let leaves: Vec<(u32, u8)> =
        v4.iter().enumerate().filter(|(i, p)| v4.get(i + 1).is_none_or(|q| q.0 > last(**p))).map(|(_, p)| *p).collect();
    let step = (leaves.len() / n.max(1)).max(1);
    leaves.iter().step_by(step).take(n).map(|&(net, len)| IpAddr::V4(Ipv4Addr::from(if len < 32 { net + 1 } else { net }))).collect()
}

pub fn measure(routes: usize, rounds: usize, seconds: f64, say: &dyn Fn(&str)) -> Result<FullTableFigures> {
    say(&format!(
        "full-table lab: {routes} IPv4 routes in rtr's kernel FIB, frames over {DESTINATIONS} destinations; the one-route lab beside it"
    ));
    let table = cowroute_tests::synthetic::v4_kernel_table(routes, 29);
    let full_dsts = leaf_destinations(&table, DESTINATIONS);
    anyhow::ensure!(full_dsts.len() == DESTINATIONS, "only {} leaf prefixes in the table", full_dsts.len());
    let one_dsts: Vec<IpAddr> = (0..DESTINATIONS as u32).map(|i| IpAddr::V4(Ipv4Addr::from(0x0a32_0000 | i))).collect();
    let mut one = Bench::up(&Table::OneRoute, say)?;
    let mut full = Bench::up(&Table::Kernel(table), say)?;
    let plan: [(&'static str, &[Mode]); 2] =
        [("one route", &[Mode::Native, Mode::Ceiling]), ("full table", &[Mode::Native, Mode::Reference, Mode::Kernel])];
    // (table, mode) -> (delivered pps, router ns per packet), one per round.
    type Samples = BTreeMap<(&'static str, Mode), (Vec<f64>, Vec<f64>)>;
    let mut samples = Samples::new();
    // Round 0 warms up (caches, the kernel's FIB after its batch, the
    // agent's first start against the full table) and is not recorded.
    for round in 0..=rounds {
        for (name, modes) in plan {
            let (bench, dsts) = if name == "one route" { (&mut one, &one_dsts) } else { (&mut full, &full_dsts) };
            for &mode in modes {
                bench.set_mode(mode)?;
                let r = bench.run(FRAME, FLOWS, dsts, Duration::from_secs_f64(seconds))?;
                let label = if round == 0 { "warm-up (not recorded)".to_string() } else { format!("round {round}/{rounds}") };
                say(&format!(
                    "  {label}: {name}, {}: {:.0} pps offered, {:.0} delivered, {:.0} ns/pkt",
                    mode.name(),
                    r.offered_pps,
                    r.delivered_pps,
                    r.router_ns_per_packet
                ));
                if round == 0 {
                    continue;
                }
                let e = samples.entry((name, mode)).or_default();
                e.0.push(r.delivered_pps);
                e.1.push(r.router_ns_per_packet);
            }
        }
    }
    drop((one, full));
    let pps = |table: &'static str, mode: Mode| samples[&(table, mode)].0.clone();
    let paired = |a: Vec<f64>, b: Vec<f64>| summarize(a.iter().zip(&b).map(|(x, y)| x / y).collect());
    let full_native = pps("full table", Mode::Native);
    Ok(FullTableFigures {
        routes,
        destinations: DESTINATIONS,
        frame_bytes: FRAME,
        flows: FLOWS,
        rounds,
        native_full_vs_one_route: paired(full_native.clone(), pps("one route", Mode::Native)),
        native_vs_reference_full: paired(full_native.clone(), pps("full table", Mode::Reference)),
        native_vs_kernel_full: paired(full_native, pps("full table", Mode::Kernel)),
        native_vs_ceiling: paired(pps("one route", Mode::Native), pps("one route", Mode::Ceiling)),
        rows: samples
            .iter()
            .map(|((table, mode), (pps, ns))| FullTableRow {
                table,
                routes: if *table == "one route" { 1 } else { routes },
                mode: *mode,
                delivered_pps: summarize(pps.clone()),
                router_ns_per_packet: summarize(ns.clone()),
            })
            .collect(),
    })
}

/// The section of the report.
pub fn markdown(f: &FullTableFigures) -> String {
    let mut s = format!(
        "\n## Full-table lab ({} IPv4 routes in rtr's kernel FIB, mirrored by the agent), {} rounds\n\n{} B frames, {} flows, spread over {} destinations each in a prefix of its own (the one-route lab: as many addresses of its one route). Both labs are up at once; each round runs every mode of both, after a warm-up round not recorded.\n\n| table | mode | delivered pps | router ns/pkt |\n|---|---|---:|---:|\n",
        f.routes, f.rounds, f.frame_bytes, f.flows, f.destinations
    );
    for r in &f.rows {
        s += &format!(
            "| {} ({}) | {} | {} | {} |\n",
            r.table,
            r.routes,
            r.mode.name(),
            crate::stats::fmt(&r.delivered_pps, 0),
            crate::stats::fmt(&r.router_ns_per_packet, 0)
        );
    }
    s += &format!(
        "\nPaired per round: cowroute native, full table against one route {} (goal: at least 0.9); against the `bpf_fib_lookup` forwarder on the same table {} (goal: at least 1.5); against kernel forwarding on the same table {}; one route against the redirect-only ceiling {} (goal: at least 0.9).\n",
        crate::stats::fmt(&f.native_full_vs_one_route, 2),
        crate::stats::fmt(&f.native_vs_reference_full, 2),
        crate::stats::fmt(&f.native_vs_kernel_full, 2),
        crate::stats::fmt(&f.native_vs_ceiling, 2)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::leaf_destinations;
    use ipnet::{IpNet, Ipv4Net};
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
            let dsts = leaf_destinations(&table, n);
            prop_assert!(!dsts.is_empty() && dsts.len() <= n);
            let matched: Vec<IpNet> = dsts.iter().map(|d| longest_match(&table, *d).expect("in the table")).collect();
            prop_assert_eq!(matched.iter().collect::<HashSet<_>>().len(), dsts.len(), "{:?} -> {:?}", dsts, matched);
        }
    }
}
