//! Per-packet cost of the XDP program under BPF_PROG_TEST_RUN: 64-byte IPv4
//! and IPv6 frames against tables of growing size, with the destination's
//! route reading its metrics through an RO reference and through an RW one.

use crate::stats::{summarize, Summary};
use anyhow::Result;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use common::{MetricsRef, NextHop, RouteEntry, RouteKind, RouteMetrics};
use cowroute::dataplane::PROG_FORWARD;
use cowroute_tests::{eth, ipv4_udp, ipv6_udp, FastPath, ETH_P_IP, ETH_P_IPV6, XDP_REDIRECT};
use ipnet::IpNet;
use std::net::Ipv6Addr;

/// One table's figures. "lookup": ns/pkt over `repeat` (at least 1,000,000)
/// repetitions in one call; the kernel reuses one buffer, so after the probe's
/// TTL of 255 runs out every repetition takes the path up to the TTL check:
/// parse, LPM lookup, next hop, metrics through the reference. That is the
/// part that depends on the table and on the reference. "forward": the whole
/// forwarding path, from calls of 250 repetitions (all forwarded).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CostRow {
    pub family: &'static str,
    pub prefixes: usize,
    pub lookup_ro_ns: Summary,
    pub lookup_rw_ns: Summary,
    /// median RW / median RO, lookup path
    pub rw_over_ro: f64,
    pub forward_ro_ns: Summary,
    pub forward_rw_ns: Summary,
    /// median RW / median RO, whole forwarding path
    pub forward_rw_over_ro: f64,
}

/// Repetitions per call that are all forwarded: the TTL (255) lasts.
const FORWARDED_PER_CALL: u32 = 250;
/// Calls of `FORWARDED_PER_CALL` per forwarding sample (each call with
/// repeat > 1 costs the kernel ~16 ms of static-key patching here).
const FORWARD_CALLS: u32 = 20;

fn test_run(fp: &mut FastPath, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let prog: &mut Xdp = fp.dp.ebpf.program_mut(PROG_FORWARD).unwrap().try_into()?;
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat;
    let r = prog.test_run(opts)?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

/// Mean ns per packet of the lookup path over `repeat` repetitions.
fn lookup_ns(fp: &mut FastPath, frame: &[u8], repeat: u32) -> Result<f64> {
    Ok(test_run(fp, frame, repeat)?.1)
}

/// Mean ns per forwarded packet.
fn forward_ns(fp: &mut FastPath, frame: &[u8]) -> Result<f64> {
    let mut ns = 0.0;
    for _ in 0..FORWARD_CALLS {
        let (verdict, d) = test_run(fp, frame, FORWARDED_PER_CALL)?;
        anyhow::ensure!(verdict == XDP_REDIRECT, "the probe frame was not forwarded ({verdict})");
        ns += d;
    }
    Ok(ns / FORWARD_CALLS as f64)
}

/// Measures one table: `prefixes` random routes plus the probe's route,
/// alternating RO and RW references `runs` times.
pub fn measure(family: &'static str, table: &[IpNet], repeat: u32, runs: usize, progress: &dyn Fn(&str)) -> Result<CostRow> {
    let mut fp = FastPath::load();
    fp.maps.add_port(1)?;
    let nh = NextHop { ifindex: 1, mtu: 1500, dmac: [2, 0, 0, 0, 0, 2], smac: [2, 0, 0, 0, 0, 1], vlan: 0, flags: NextHop::USABLE };
    fp.maps.put_nexthop(1, &nh)?;
    let mut m = RouteMetrics::DEFAULT;
    m.mtu = 1500;
    fp.maps.put_ro_metrics(1, &m)?;
    fp.maps.put_rw_metrics(7, &m)?;
    let entry = RouteEntry::new(RouteKind::Unicast, 1, MetricsRef::read_only(1), 1);
    for (i, p) in table.iter().enumerate() {
        fp.maps.put_route(p, &entry)?;
        if (i + 1) % 200_000 == 0 {
            progress(&format!("  loaded {}/{} {family} prefixes", i + 1, table.len()));
        }
    }
    let (probe, frame) = if family == "ipv4" {
        ("10.2.0.0/24".parse::<IpNet>()?, eth([2; 6], [4; 6], None, ETH_P_IP, &ipv4_udp([10, 1, 0, 2], [10, 2, 0, 2], 255, 50)))
    } else {
        let dst = "2001:db8:2::2".parse::<Ipv6Addr>()?.octets();
        let src = "2001:db8:1::2".parse::<Ipv6Addr>()?.octets();
        ("2001:db8:2::/48".parse::<IpNet>()?, eth([2; 6], [4; 6], None, ETH_P_IPV6, &ipv6_udp(src, dst, 255, 10)))
    };
    fp.maps.put_route(&probe, &RouteEntry::new(RouteKind::Unicast, 1, MetricsRef::read_only(1), 1))?;
    let probe_outcome = fp.run(&frame)?;
    anyhow::ensure!(probe_outcome.reason == common::Reason::Forwarded, "probe not forwarded: {:?}", probe_outcome.reason);
    progress(&format!("  {family}: table ready, measuring"));
    let [mut lro, mut lrw, mut fro, mut frw] = [(); 4].map(|_| Vec::new());
    for _ in 0..runs {
        fp.maps.put_route(&probe, &RouteEntry::new(RouteKind::Unicast, 1, MetricsRef::read_only(1), 1))?;
        lro.push(lookup_ns(&mut fp, &frame, repeat)?);
        fro.push(forward_ns(&mut fp, &frame)?);
        fp.maps.put_route(&probe, &RouteEntry::new(RouteKind::Unicast, 1, MetricsRef::private(7), 1))?;
        lrw.push(lookup_ns(&mut fp, &frame, repeat)?);
        frw.push(forward_ns(&mut fp, &frame)?);
    }
    let (lookup_ro_ns, lookup_rw_ns) = (summarize(lro), summarize(lrw));
    let (forward_ro_ns, forward_rw_ns) = (summarize(fro), summarize(frw));
    Ok(CostRow {
        family,
        prefixes: table.len() + 1,
        rw_over_ro: lookup_rw_ns.median / lookup_ro_ns.median,
        lookup_ro_ns,
        lookup_rw_ns,
        forward_rw_over_ro: forward_rw_ns.median / forward_ro_ns.median,
        forward_ro_ns,
        forward_rw_ns,
    })
}
