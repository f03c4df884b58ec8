//! Kernel nexthop objects (`ip nexthop`), as FRR installs routes: singles,
//! groups (weighted and resilient), an IPv6 gateway for IPv4 routes
//! (RFC 5549), replace, member removal, deletion and link down, with
//! nexthop_compat_mode 0 (routes carry only RTA_NH_ID) and 1. Kernel
//! forwarding is off in rtr: what arrives, cowroute forwarded.

use cowroute_tests::*;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};
use xtask::{lab, sh, traffic};

fn ifindex(ns: &str, dev: &str) -> u32 {
    let v: serde_json::Value = serde_json::from_str(&sh::ip(&["-n", ns, "-j", "link", "show", "dev", dev]).unwrap()).unwrap();
    v[0]["ifindex"].as_u64().unwrap() as u32
}

fn json(run: &LabRun, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&run.cowroute(args)).unwrap()
}

/// The fast path's route prefixes (not host entries).
fn mapped_prefixes(run: &LabRun) -> BTreeSet<String> {
    let rows = json(run, &["show", "routes", "--json"]);
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["flags"].as_str().unwrap().contains("host"))
        .map(|r| r["prefix"].as_str().unwrap().to_string())
        .collect()
}

/// The kernel's nexthop ids in rtr, and the agent's.
fn object_ids(run: &LabRun) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let out = sh::ip(&["-n", &run.lab.rtr, "-j", "nexthop", "show"]).unwrap();
    let kernel: serde_json::Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap();
    let kernel = kernel.as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect();
    let agent = json(run, &["show", "nexthop-objects", "--json"]).as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect();
    (kernel, agent)
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `flows` flows of 2 datagrams to `to`; returns each flow's arrival interfaces.
fn legs_of(run: &LabRun, to: SocketAddr, flows: u16) -> BTreeMap<u16, BTreeSet<u32>> {
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
    let sink = traffic::UdpSink::bind(&run.lab.sink, SocketAddr::new(any.ip(), to.port())).unwrap();
    traffic::udp_send_flows(&run.lab.gen, 30000..30000 + flows, to, 2).unwrap();
    let got = sink.receive(flows as usize * 2, Duration::from_secs(3)).unwrap();
    let mut legs: BTreeMap<u16, BTreeSet<u32>> = BTreeMap::new();
    for r in got {
        legs.entry(r.port).or_default().insert(r.ifindex);
    }
    assert_eq!(legs.len(), flows as usize, "{to}: every flow arrived: {legs:?}");
    legs
}

/// The one interface `to`'s datagrams arrive on.
fn leg_of(run: &LabRun, to: &str) -> u32 {
    let legs: BTreeSet<u32> = legs_of(run, to.parse().unwrap(), 4).into_values().flatten().collect();
    assert_eq!(legs.len(), 1, "{to} took {legs:?}");
    legs.into_iter().next().unwrap()
}

/// Packets forwarded through the entry of kernel nexthop `nhid`.
fn nexthop_packets(run: &LabRun, nhid: u64) -> u64 {
    let rows = json(run, &["show", "nexthops", "--json"]);
    rows.as_array().unwrap().iter().filter(|r| r["object"].as_u64() == Some(nhid)).map(|r| r["packets"].as_u64().unwrap()).sum()
}

fn nexthops_follow_the_kernel(compat: u8, tag: char) {
    let run = LabRun::start_custom(&lab_tag(tag), "generic", &["--slow-path", "kernel"], &|lab| lab.hosts_config());
    let (rtr, sink, r1) = (run.lab.rtr.clone(), run.lab.sink.clone(), run.lab.rtr_sink_if.clone());
    sh::run(&mut sh::in_ns(&rtr, "sysctl", &["-qw", &format!("net.ipv4.nexthop_compat_mode={compat}")])).unwrap();
    let (r2, s1) = run.lab.add_second_link().unwrap();
    let (leg_a, leg_b) = (ifindex(&sink, &run.lab.sink_if), ifindex(&sink, &s1));
    let ip = |args: &str| sh::ip(&["-n", &rtr].into_iter().chain(args.split_whitespace()).collect::<Vec<_>>()).unwrap();
    ip(&format!("nexthop add id 1 via {} dev {r1}", lab::SINK_V4));
    ip(&format!("nexthop add id 2 via {} dev {r2}", lab::SINK_B_V4));
    ip(&format!("nexthop add id 3 via {} dev {r2}", lab::SINK_B_V6));
    ip(&format!("nexthop add id 4 via {} dev {r1}", lab::SINK_V6));
    ip("nexthop add id 10 group 1/2");
    ip("nexthop add id 11 group 1/2 type resilient buckets 32 idle_timer 60");
    ip("route add 10.20.0.0/24 nhid 1");
    // Nested: inside 10.20.0.0/24, through the other leg.
    ip("route add 10.20.0.16/28 nhid 2");
    ip("route add 10.21.0.0/24 nhid 10");
    // RFC 5549: an IPv4 route through an IPv6 gateway.
    ip("route add 10.22.0.0/24 nhid 3");
    ip("route add 10.23.0.0/24 nhid 11");
    ip("-6 route add fd00:20::/64 nhid 4");
    for p in ["10.20.0.0/14", "fd00:20::/64"] {
        sh::ip(&["-n", &sink, "route", "add", "local", p, "dev", "lo"]).unwrap();
    }
    let ours = ["10.20.0.0/24", "10.20.0.16/28", "10.21.0.0/24", "10.22.0.0/24", "10.23.0.0/24", "fd00:20::/64"];
    wait_until("the routes through objects in the maps", Duration::from_secs(3), || {
        let m = mapped_prefixes(&run);
        ours.iter().all(|p| m.contains(*p))
    });
    let (kernel, agent) = object_ids(&run);
    assert_eq!(agent, kernel, "the agent carries every kernel nexthop object");
    wait_until("every gateway resolved", Duration::from_secs(10), || {
        run.control().call(&cowroute::operator::control::Request::Stats).unwrap()["gateways_unresolved"] == 0
    });

    let fwd = run.counter("forwarded");
    assert_eq!(leg_of(&run, "10.20.0.1:7700"), leg_a, "nhid 1");
    assert_eq!(leg_of(&run, "10.20.0.17:7701"), leg_b, "the nested /28 through nhid 2");
    assert_eq!(leg_of(&run, "10.22.0.1:7702"), leg_b, "IPv4 via an IPv6 gateway");
    assert_eq!(leg_of(&run, "[fd00:20::1]:7703"), leg_a, "IPv6 through nhid 4");
    assert!(run.counter("forwarded") - fwd >= 16, "the fast path forwarded them");
    for (to, group) in [("10.21.0.1:7704", "group"), ("10.23.0.1:7705", "resilient group")] {
        let legs = legs_of(&run, to.parse().unwrap(), 64);
        assert!(legs.values().all(|l| l.len() == 1), "{group}: a flow on one leg");
        let on_a = legs.values().filter(|l| l.contains(&leg_a)).count();
        assert!((8..=56).contains(&on_a), "{group}: flows on both legs ({on_a} of 64 on the first)");
    }
    assert!(nexthop_packets(&run, 1) > 0 && nexthop_packets(&run, 2) > 0, "per-nexthop counters");

    // Replace: the object's entry is rewritten, the routes' entries are not.
    let entry_of = |p: &str| {
        let rows = json(&run, &["show", "routes", "--json"]);
        rows.as_array().unwrap().iter().find(|r| r["prefix"] == p).unwrap()["nexthop"].clone()
    };
    let before = entry_of("10.20.0.0/24");
    let to: SocketAddr = "10.20.0.1:7710".parse().unwrap();
    let receiver = traffic::UdpSink::bind(&sink, "0.0.0.0:7710".parse().unwrap()).unwrap();
    let started = Instant::now();
    let stream = {
        let gen = run.lab.gen.clone();
        std::thread::spawn(move || traffic::udp_send(&gen, to, 3000, 64, 64, Duration::from_micros(500)).unwrap())
    };
    std::thread::sleep(Duration::from_millis(300));
    let replaced = Instant::now();
    ip(&format!("nexthop replace id 1 via {} dev {r2}", lab::SINK_B_V4));
    stream.join().unwrap();
    let per_datagram = started.elapsed() / 3000;
    let got = receiver.receive(3000, Duration::from_secs(2)).unwrap();
    let first_b = got.iter().position(|r| r.ifindex == leg_b).expect("traffic moved to the new leg");
    assert!(got[first_b..].iter().all(|r| r.ifindex == leg_b), "once moved, every packet on the new leg");
    // The stream is even: the first datagram on the new leg dates the switch.
    let switched = (per_datagram * first_b as u32).saturating_sub(replaced - started);
    eprintln!("compat {compat}: ip nexthop replace -> first datagram on the new leg after ~{switched:?} ({} of 3000 arrived)", got.len());
    assert_eq!(entry_of("10.20.0.0/24"), before, "the route's entry is untouched");
    assert_eq!(leg_of(&run, "10.20.0.1:7711"), leg_b);

    // Group member removal: every flow on the member left.
    ip("nexthop replace id 10 group 2");
    std::thread::sleep(Duration::from_millis(200));
    assert!(legs_of(&run, "10.21.0.1:7712".parse().unwrap(), 32).values().all(|l| l == &BTreeSet::from([leg_b])));

    // Deletion: the kernel removes the route through it (silently in compat 0).
    ip("nexthop del id 3");
    wait_until("10.22.0.0/24 removed with its nexthop", Duration::from_secs(2), || !mapped_prefixes(&run).contains("10.22.0.0/24"));

    // r2 down: the kernel flushes nexthops 1 (now on r2) and 2, shrinks and
    // removes groups, and the routes through them, and says little of it.
    ip(&format!("link set {r2} down"));
    wait_until("the objects on r2 gone", Duration::from_secs(2), || {
        let (kernel, agent) = object_ids(&run);
        kernel == agent && !agent.contains(&2)
    });
    let kernel_routes: BTreeSet<String> = ["-4", "-6"]
        .iter()
        .flat_map(|f| {
            let v: serde_json::Value = serde_json::from_str(&sh::ip(&["-n", &rtr, f, "-j", "route", "show"]).unwrap()).unwrap();
            v.as_array().unwrap().iter().map(|r| r["dst"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect();
    let mapped = mapped_prefixes(&run);
    for p in ours {
        assert_eq!(mapped.contains(p), kernel_routes.contains(p), "{p}: maps and kernel agree (kernel: {kernel_routes:?})");
    }
    assert!(!mapped.contains("10.20.0.16/28") && mapped.contains("fd00:20::/64"));
    assert_eq!(leg_of(&run, "[fd00:20::1]:7713"), leg_a, "the object on r1 still forwards");
}

#[test]
fn nexthop_objects_with_compat_mode_0() {
    nexthops_follow_the_kernel(0, 'n');
}

#[test]
fn nexthop_objects_with_compat_mode_1() {
    nexthops_follow_the_kernel(1, 'c');
}
