//! `--source kernel`: the agent mirrors rtr's kernel FIB (main table) over
//! netlink; `ip route` changes reach the maps and change forwarding.

use cowroute::operator::control::Request;
use cowroute_tests::*;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};
use xtask::{lab, sh, traffic};

fn route_row(run: &LabRun, prefix: &str) -> Option<serde_json::Value> {
    let rows: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "routes", "--json"])).unwrap();
    rows.as_array().unwrap().iter().find(|r| r["prefix"] == prefix).cloned()
}

/// Polls until `pred` holds for `prefix`'s row; returns how long it took.
fn wait_for(run: &LabRun, prefix: &str, pred: impl Fn(Option<&serde_json::Value>) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if pred(route_row(run, prefix).as_ref()) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{prefix} never reached the expected state");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn metrics_of(run: &LabRun, reference: &str) -> serde_json::Value {
    let rows: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "metrics", "--json"])).unwrap();
    rows.as_array().unwrap().iter().find(|r| r["reference"] == reference).unwrap()["values"].clone()
}

#[test]
fn kernel_routes_with_metrics_reach_the_maps_and_forwarding() {
    // The kernel is the default source.
    // The fast path's counters are what is checked: exceptions stay with
    // the (non-forwarding) kernel, no ICMP error teaches gen a smaller MTU.
    let run = LabRun::start_custom(&lab_tag('k'), "generic", &["--slow-path", "kernel"], &|lab| lab.hosts_config());
    let rtr = run.lab.rtr.clone();
    // The connected routes come from rtr's kernel table.
    for dst in [lab::SINK_V4, lab::SINK_V6] {
        let (tx, rx, ttls) = traffic::ping(&run.lab.gen, dst, 20, "0.01").unwrap();
        assert_eq!((tx, rx), (20, 20), "ping {dst}");
        assert!(ttls.iter().all(|t| *t == 63));
    }
    assert!(route_row(&run, "10.2.0.0/24").is_some() && route_row(&run, "fd00:2::/64").is_some());
    let ro_before = run.control().call(&Request::Stats).unwrap()["metrics_ro_in_use"].as_u64().unwrap();

    // ip route add with metrics: in the maps within 100 ms, interned.
    sh::ip(&["-n", &rtr, "route", "add", "10.50.0.0/16", "via", lab::SINK_V4, "mtu", "lock", "1400", "advmss", "1360"]).unwrap();
    let took = wait_for(&run, "10.50.0.0/16", |r| r.is_some());
    assert!(took < Duration::from_millis(100), "route add reached the maps in {took:?}");
    let a = route_row(&run, "10.50.0.0/16").unwrap()["metrics"].as_str().unwrap().to_string();
    assert!(a.starts_with("ro:") && a != "ro:0", "{a}");
    let m = metrics_of(&run, &a);
    assert_eq!((m["mtu"].as_u64(), m["advmss"].as_u64(), m["lock"].as_u64()), (Some(1400), Some(1360), Some(1 << 2)), "{m}");
    // `show routes` prints them inline, as `ip route` does.
    let shown = route_row(&run, "10.50.0.0/16").unwrap()["metric_values"].clone();
    assert_eq!(shown["origin"], "shared", "{shown}");
    assert_eq!((shown["values"]["mtu"].as_u64(), shown["values"]["advmss"].as_u64()), (Some(1400), Some(1360)), "{shown}");
    assert_eq!(shown["locked"], serde_json::json!(["mtu"]), "{shown}");
    let kernel = sh::ip(&["-n", &rtr, "route", "show", "10.50.0.0/16"]).unwrap();
    let line = run.cowroute(&["show", "routes", "10.50.0.0/16"]);
    assert!(kernel.contains("mtu lock 1400 advmss 1360"), "{kernel}");
    assert!(line.contains("mtu lock 1400 advmss 1360 (shared)"), "as ip route prints it: {line}");
    // Two routes with identical metrics share one RO slot.
    sh::ip(&["-n", &rtr, "route", "add", "10.51.0.0/16", "via", lab::SINK_V4, "mtu", "lock", "1400", "advmss", "1360"]).unwrap();
    wait_for(&run, "10.51.0.0/16", |r| r.is_some());
    assert_eq!(route_row(&run, "10.51.0.0/16").unwrap()["metrics"], a.as_str());
    // Forwarding follows: the sink owns 10.50/16; 1450 bytes exceed the route MTU.
    sh::ip(&["-n", &run.lab.sink, "route", "add", "local", "10.50.0.0/16", "dev", "lo"]).unwrap();
    let to: SocketAddr = "10.50.1.1:7400".parse().unwrap();
    let sink = traffic::UdpSink::bind(&run.lab.sink, "0.0.0.0:7400".parse().unwrap()).unwrap();
    traffic::udp_send(&run.lab.gen, to, 10, 1372, 64, Duration::from_millis(1)).unwrap();
    assert_eq!(sink.receive(10, Duration::from_secs(2)).unwrap().len(), 10, "1400-byte datagrams forwarded");
    let big = run.counter("too_big");
    traffic::udp_send(&run.lab.gen, to, 10, 1422, 64, Duration::from_millis(1)).unwrap();
    assert_eq!(sink.receive(10, Duration::from_millis(500)).unwrap().len(), 0);
    assert_eq!(run.counter("too_big") - big, 10, "1450 bytes judged too big by the kernel route's MTU");

    // replace: new metrics, the other route keeps the shared slot.
    sh::ip(&["-n", &rtr, "route", "replace", "10.50.0.0/16", "via", lab::SINK_V4, "mtu", "1300"]).unwrap();
    wait_for(&run, "10.50.0.0/16", |r| r.is_some_and(|r| r["metrics"] != a.as_str()));
    assert_eq!(route_row(&run, "10.51.0.0/16").unwrap()["metrics"], a.as_str());
    // del: gone from the maps; both gone, the shared slot is released.
    for p in ["10.50.0.0/16", "10.51.0.0/16"] {
        sh::ip(&["-n", &rtr, "route", "del", p]).unwrap();
        wait_for(&run, p, |r| r.is_none());
    }
    let ro_after = run.control().call(&Request::Stats).unwrap()["metrics_ro_in_use"].as_u64().unwrap();
    assert_eq!(ro_after, ro_before, "no RO slot left referenced");

    // A blackhole route drops, counted.
    sh::ip(&["-n", &rtr, "route", "add", "blackhole", "192.0.2.0/24"]).unwrap();
    wait_for(&run, "192.0.2.0/24", |r| r.is_some_and(|r| r["kind"] == "blackhole"));
    let dropped = run.counter("blackhole");
    traffic::udp_send(&run.lab.gen, "192.0.2.1:9".parse().unwrap(), 5, 64, 64, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(run.counter("blackhole") - dropped, 5);
    // Routes of other tables are not carried.
    sh::ip(&["-n", &rtr, "route", "add", "10.60.0.0/16", "via", lab::SINK_V4, "table", "100"]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(route_row(&run, "10.60.0.0/16").is_none());
}

#[test]
fn kernel_source_refuses_a_config_with_routes() {
    require_root();
    let dir = TempDir::new("ksrc");
    let cfg = dir.0.join("r.toml");
    std::fs::write(&cfg, "[[route]]\nprefix = \"10.0.0.0/8\"\ndev = \"lo\"\n").unwrap();
    let bin = xtask::agent_proc::cowroute_bin().unwrap();
    let out = sh::output(
        std::process::Command::new(bin)
            .args(["--pin-dir", "/sys/fs/bpf/cowroute-ksrc-none", "run", "--source", "kernel", "--iface", "lo", "--config"])
            .arg(&cfg),
    )
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains(":1: route: routes come from the kernel with --source kernel"), "{err}");
}

/// Sends `n` UDP datagrams gen -> sink (10.2.0.2) and returns how many arrived.
fn udp_through(run: &LabRun, port: u16, n: usize) -> usize {
    let to: SocketAddr = format!("{}:{port}", lab::SINK_V4).parse().unwrap();
    // Bound again and again in the loops below: a busy machine has seen the
    // port still held for a moment (EADDRINUSE).
    let deadline = Instant::now() + Duration::from_secs(2);
    let sink = loop {
        match traffic::UdpSink::bind(&run.lab.sink, to) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("binding {to} in sink: {e}; again");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("binding {to} in sink: {e}"),
        }
    };
    traffic::udp_send(&run.lab.gen, to, n, 100, 64, Duration::from_millis(1)).unwrap();
    sink.receive(n, Duration::from_millis(800)).unwrap().len()
}

#[test]
fn link_down_and_neighbour_flush_leave_the_fast_path_until_they_recover() {
    // The fast path's counters are what is checked: exceptions stay with
    // the (non-forwarding) kernel, no ICMP error teaches gen a smaller MTU.
    let run = LabRun::start_custom(&lab_tag('l'), "native", &["--source", "kernel", "--slow-path", "kernel"], &|lab| lab.hosts_config());
    let (rtr, r1) = (run.lab.rtr.clone(), run.lab.rtr_sink_if.clone());
    assert_eq!(udp_through(&run, 7500, 10), 10);

    // Link down: the next hop is unusable, nothing is forwarded, and the
    // frames go to the stack as "no neighbour" (kernel forwarding is off).
    sh::ip(&["-n", &rtr, "link", "set", &r1, "down"]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (fwd, nn) = (run.counter("forwarded"), run.counter("no_neighbour") + run.counter("no_route"));
    assert_eq!(udp_through(&run, 7501, 10), 0);
    assert_eq!(run.counter("forwarded"), fwd, "nothing forwarded through a down link");
    assert_eq!(run.counter("no_neighbour") + run.counter("no_route") - nn, 10);
    // Up again (the kernel brings the connected route back): forwarded again.
    sh::ip(&["-n", &rtr, "link", "set", &r1, "up"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while udp_through(&run, 7502, 5) < 5 {
        assert!(Instant::now() < deadline, "forwarding did not resume after link up");
    }

    // An MTU change on the link reaches the next hop: 1450 bytes no longer fit 1400.
    sh::ip(&["-n", &rtr, "link", "set", &r1, "mtu", "1400"]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let to: SocketAddr = format!("{}:7510", lab::SINK_V4).parse().unwrap();
    let big = run.counter("too_big");
    traffic::udp_send(&run.lab.gen, to, 5, 1422, 64, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(run.counter("too_big") - big, 5, "1450-byte packets exceed the new device MTU");
    sh::ip(&["-n", &rtr, "link", "set", &r1, "mtu", "1500"]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(udp_through(&run, 7511, 5), 5);

    // Neighbour flush: the host entry goes, packets leave as "no neighbour";
    // the agent has the kernel resolve the configured neighbour again.
    sh::ip(&["-n", &rtr, "neigh", "flush", "dev", &r1]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let nn = run.counter("no_neighbour");
    let got = udp_through(&run, 7503, 5);
    assert!(got < 5 && run.counter("no_neighbour") > nn, "a flushed neighbour is not forwarded to ({got} arrived)");
    let deadline = Instant::now() + Duration::from_secs(15);
    while udp_through(&run, 7504, 5) < 5 {
        assert!(Instant::now() < deadline, "the neighbour was not resolved again");
    }
}

/// ifindex of `dev` in namespace `ns`.
fn ifindex(ns: &str, dev: &str) -> u32 {
    let out = sh::ip(&["-n", ns, "-j", "link", "show", "dev", dev]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["ifindex"].as_u64().unwrap() as u32
}

/// Sends 2 datagrams on each flow from ports `ports` to `to`; returns, per
/// flow, the set of sink interfaces its datagrams arrived on.
fn flows_by_leg(run: &LabRun, ports: std::ops::Range<u16>, to: SocketAddr) -> BTreeMap<u16, BTreeSet<u32>> {
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
    let sink = traffic::UdpSink::bind(&run.lab.sink, SocketAddr::new(any.ip(), to.port())).unwrap();
    let n = ports.len() * 2;
    traffic::udp_send_flows(&run.lab.gen, ports, to, 2).unwrap();
    let got = sink.receive(n, Duration::from_secs(3)).unwrap();
    assert_eq!(got.len(), n, "every datagram of every flow arrived");
    let mut legs: BTreeMap<u16, BTreeSet<u32>> = BTreeMap::new();
    for r in got {
        legs.entry(r.port).or_default().insert(r.ifindex);
    }
    legs
}

/// Waits until the agent has every next hop resolved.
fn wait_resolved(run: &LabRun) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = run.control().call(&Request::Stats).unwrap();
        if s["nexthop_groups"].as_u64() >= Some(1) && s["gateways_unresolved"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "next hops not resolved: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ecmp_route_spreads_flows_over_both_legs_and_keeps_each_on_one() {
    // Main and a table above 255 (RTA_TABLE; the header's byte says 252).
    let run = LabRun::start_custom(&lab_tag('e'), "generic", &["--table", "254", "--table", "1000"], &|lab| lab.hosts_config());
    // A second rtr-sink link, added while the agent runs.
    let (r2, s1) = run.lab.add_second_link().unwrap();
    let (rtr, sink, r1) = (run.lab.rtr.clone(), run.lab.sink.clone(), run.lab.rtr_sink_if.clone());
    let legs = [ifindex(&sink, &run.lab.sink_if), ifindex(&sink, &s1)];
    let cases = [
        ("10.9.0.0/24", [lab::SINK_V4, lab::SINK_B_V4], "10.9.0.1", 256u16, "main"),
        ("fd00:9::/64", [lab::SINK_V6, lab::SINK_B_V6], "fd00:9::1", 128, "1000"),
    ];
    for (prefix, [gw_a, gw_b], dst, flows, table) in cases {
        let family = if dst.contains(':') { "-6" } else { "-4" };
        sh::ip(&[
            "-n", &rtr, family, "route", "add", prefix, "table", table, "nexthop", "via", gw_a, "dev", &r1, "nexthop", "via", gw_b, "dev",
            &r2,
        ])
        .unwrap();
        sh::ip(&["-n", &sink, family, "route", "add", "local", prefix, "dev", "lo"]).unwrap();
        wait_for(&run, prefix, |r| r.is_some_and(|r| r["flags"].as_str().unwrap().contains("multipath")));
        wait_resolved(&run);
        let to = SocketAddr::new(dst.parse().unwrap(), 7600);

        let first = flows_by_leg(&run, 20000..20000 + flows, to);
        assert!(first.values().all(|l| l.len() == 1), "{prefix}: a flow took two legs: {first:?}");
        let per_leg = |m: &BTreeMap<u16, BTreeSet<u32>>, leg: u32| m.values().filter(|l| l.contains(&leg)).count();
        let (a, b) = (per_leg(&first, legs[0]), per_leg(&first, legs[1]));
        assert_eq!(a + b, flows as usize);
        assert!(a > flows as usize / 4 && b > flows as usize / 4, "{prefix}: {a} and {b} flows on the two legs");
        // Again: every flow on the same leg as before.
        let second = flows_by_leg(&run, 20000..20000 + flows, to);
        assert_eq!(first, second, "{prefix}: flows stay on their legs");
    }
    // One leg's link goes down: every flow moves to the other, none is lost.
    sh::ip(&["-n", &rtr, "link", "set", &r2, "down"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = flows_by_leg(&run, 20000..20256, "10.9.0.1:7601".parse().unwrap());
    assert!(after.values().all(|l| l == &BTreeSet::from([legs[0]])), "all flows on the live leg: {after:?}");

    // The link removed while running: it leaves EGRESS_PORTS, the other stays.
    let ports = || -> Vec<u64> {
        let text = sh::run(sh::cmd("bpftool", &["-j", "map", "dump", "pinned"]).arg(run.pin_dir.join("EGRESS_PORTS"))).unwrap();
        let entries: serde_json::Value = serde_json::from_str(&text).unwrap();
        entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let bytes: Vec<u8> = e["key"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
                    .collect();
                u32::from_ne_bytes(bytes[..4].try_into().unwrap()) as u64
            })
            .collect()
    };
    let r2_index = ifindex(&rtr, &r2) as u64;
    assert!(ports().contains(&r2_index));
    sh::ip(&["-n", &rtr, "link", "del", &r2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while ports().contains(&r2_index) {
        assert!(Instant::now() < deadline, "a deleted link stays in EGRESS_PORTS: {:?}", ports());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ports().contains(&(ifindex(&rtr, &r1) as u64)));
    let after = flows_by_leg(&run, 20000..20064, "10.9.0.1:7602".parse().unwrap());
    assert!(after.values().all(|l| l == &BTreeSet::from([legs[0]])), "{after:?}");
}

/// rtr's kernel main table, IPv4: prefix -> route MTU (0: none).
fn kernel_v4_table(rtr: &str) -> BTreeMap<String, u64> {
    let out = sh::ip(&["-n", rtr, "-4", "-j", "route", "show", "table", "main"]).unwrap();
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let dst = r["dst"].as_str().unwrap();
            let prefix = if dst == "default" {
                "0.0.0.0/0".to_string()
            } else if dst.contains('/') {
                dst.to_string()
            } else {
                format!("{dst}/32")
            };
            let mtu = r["metrics"].as_array().and_then(|m| m.iter().find_map(|x| x["mtu"].as_u64())).unwrap_or(0);
            (prefix, mtu)
        })
        .collect()
}

/// The fast path's IPv4 routes (not host entries): prefix -> RTAX_MTU.
fn maps_v4_table(run: &LabRun) -> BTreeMap<String, u64> {
    let metrics: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "metrics", "--json"])).unwrap();
    let mtu_of = |reference: &str| {
        let row = metrics
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["reference"] == reference)
            .unwrap_or_else(|| panic!("{reference} not in METRICS"));
        row["values"]["mtu"].as_u64().unwrap_or(0)
    };
    let routes: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "routes", "--json"])).unwrap();
    routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["prefix"].as_str().unwrap().contains(':') && !r["flags"].as_str().unwrap().contains("host"))
        .map(|r| (r["prefix"].as_str().unwrap().to_string(), mtu_of(r["metrics"].as_str().unwrap())))
        .collect()
}

/// 100,000 route changes in one burst against a 4 KiB subscription buffer:
/// the socket overruns, the agent resyncs from a full dump, and the maps end
/// equal to the kernel's table (no stale route, no missing one, same MTUs).
#[test]
fn a_netlink_overrun_ends_in_a_resync_with_maps_equal_to_the_kernel() {
    let run =
        LabRun::start_custom(&lab_tag('o'), "generic", &["--source", "kernel", "--netlink-rcvbuf", "4096"], &|lab| lab.hosts_config());
    let rtr = run.lab.rtr.clone();
    let dir = TempDir::new("overrun");
    let batch = dir.0.join("burst.batch");
    let mut cmds = String::new();
    // 60,000 adds, then 20,000 of them replaced with an MTU and 20,000 deleted.
    let prefix = |i: u32| format!("11.{}.{}.0/24", i / 256, i % 256);
    for i in 0..60_000 {
        cmds += &format!("route add {} via {}\n", prefix(i), lab::SINK_V4);
    }
    for i in 0..20_000 {
        cmds += &format!("route replace {} via {} mtu {}\n", prefix(i), lab::SINK_V4, 1300 + i % 7);
    }
    for i in 40_000..60_000 {
        cmds += &format!("route del {}\n", prefix(i));
    }
    std::fs::write(&batch, cmds).unwrap();
    sh::run(sh::cmd("ip", &["-n", &rtr, "-batch"]).arg(&batch)).unwrap();

    let kernel = kernel_v4_table(&rtr);
    assert_eq!(kernel.len(), 40_000 + 2, "the lab's two connected routes and 40,000 of ours");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = run.control().call(&Request::Stats).unwrap();
        let (resyncs, routes) = (s["netlink"]["resyncs"].as_u64().unwrap(), s["routes"].as_u64().unwrap());
        // v4 routes plus rtr's IPv6 connected ones (fd00:1::/64, fd00:2::/64, fe80::/64 per link).
        if resyncs >= 1 && routes >= kernel.len() as u64 && maps_v4_table(&run) == kernel {
            eprintln!("converged: {s}");
            break;
        }
        assert!(Instant::now() < deadline, "maps never equal to the kernel's table: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = run.control().call(&Request::Stats).unwrap();
    assert!(s["netlink"]["overruns"].as_u64().unwrap() >= 1, "{s}");
    assert!(run.agent.log().contains("netlink overrun: resynced with a full dump"), "the resync logs its counts");
}

/// A route through an 802.1Q sub-interface of rtr's sink link: the fast
/// path pushes the tag and redirects to the parent; only sink's VLAN 100
/// device receives the frames.
///
/// This machine's kernel is built without 802.1Q (`# CONFIG_VLAN_8021Q is not
/// set`): `ip link add ... type vlan` answers "Unknown device type", so the
/// test is ignored here, with its reason printed, and fails loudly when run
/// on such a kernel. The tag push itself is covered by the fast-path test
/// `vlan_tags_are_removed_pushed_or_rewritten_as_the_next_hop_needs`, and the
/// VLAN next hop (parent device, VLAN id) by the RIB's unit tests.
#[test]
#[ignore = "needs a kernel with CONFIG_VLAN_8021Q (this one has none); run with --ignored where it has"]
fn a_vlan_sub_interface_route_forwards_tagged_frames() {
    let run = LabRun::start_custom(&lab_tag('v'), "generic", &[], &|lab| lab.hosts_config());
    let (rtr, sink) = (run.lab.rtr.clone(), run.lab.sink.clone());
    let (rv, sv) = (format!("{}rv", run.lab.tag), format!("{}sv", run.lab.tag));
    for (ns, parent, dev, addr) in [(&rtr, &run.lab.rtr_sink_if, &rv, "10.4.0.1/24"), (&sink, &run.lab.sink_if, &sv, "10.4.0.2/24")] {
        if let Err(e) = sh::ip(&["-n", ns, "link", "add", "link", parent, "name", dev, "type", "vlan", "id", "100"]) {
            panic!("cannot create an 802.1Q sub-interface (is CONFIG_VLAN_8021Q set?): {e:#}");
        }
        sh::ip(&["-n", ns, "addr", "add", addr, "dev", dev]).unwrap();
        sh::ip(&["-n", ns, "link", "set", dev, "up"]).unwrap();
    }
    sh::run(&mut sh::in_ns(&sink, "sysctl", &["-qw", "net.ipv4.conf.all.rp_filter=0", &format!("net.ipv4.conf.{sv}.rp_filter=0")]))
        .unwrap();
    sh::ip(&["-n", &sink, "route", "add", "local", "10.70.0.0/16", "dev", "lo"]).unwrap();
    sh::ip(&["-n", &rtr, "route", "add", "10.70.0.0/16", "via", "10.4.0.2", "dev", &rv]).unwrap();
    wait_for(&run, "10.70.0.0/16", |r| r.is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.control().call(&Request::Stats).unwrap()["gateways_unresolved"] != 0 {
        assert!(Instant::now() < deadline, "the agent did not have 10.4.0.2 resolved on {rv}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let nexthops: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "nexthops", "--json"])).unwrap();
    let parent = ifindex(&rtr, &run.lab.rtr_sink_if);
    assert!(
        nexthops.as_array().unwrap().iter().any(|n| n["vlan"] == 100 && n["ifindex"] == parent && n["usable"] == true),
        "a usable next hop with VLAN 100 on the parent device: {nexthops}"
    );

    let to: SocketAddr = "10.70.0.1:7700".parse().unwrap();
    let sock = traffic::UdpSink::bind(&sink, "0.0.0.0:7700".parse().unwrap()).unwrap();
    let fwd = run.counter("forwarded");
    traffic::udp_send(&run.lab.gen, to, 20, 200, 64, Duration::from_millis(1)).unwrap();
    let got = sock.receive(20, Duration::from_secs(2)).unwrap();
    assert_eq!(got.len(), 20, "all datagrams through the VLAN route");
    let vlan_dev = ifindex(&sink, &sv);
    assert!(got.iter().all(|r| r.ifindex == vlan_dev && r.ttl == 63), "arrived tagged, on VLAN 100's device: {got:?}");
    assert_eq!(run.counter("forwarded") - fwd, 20, "by the fast path");
}

/// Routes the fast path cannot reproduce (throw, a TOS key, an lwtunnel
/// encap) become pass-to-kernel entries at their prefix: their packets are
/// never forwarded by the covering route nor without their encap, and are
/// counted. `ip route replace` to another device leaves no old candidate.
#[test]
fn kernel_only_routes_pass_to_the_kernel_and_replace_moves_a_route() {
    let run = LabRun::start_custom(&lab_tag('q'), "generic", &["--slow-path", "kernel"], &|lab| lab.hosts_config());
    let rtr = run.lab.rtr.clone();
    sh::ip(&["-n", &run.lab.sink, "route", "add", "local", "10.57.0.0/16", "dev", "lo"]).unwrap();
    sh::ip(&["-n", &rtr, "route", "add", "10.57.0.0/16", "via", lab::SINK_V4]).unwrap();
    sh::ip(&["-n", &rtr, "route", "add", "throw", "10.57.1.0/24"]).unwrap();
    sh::ip(&["-n", &rtr, "route", "add", "10.57.2.0/24", "tos", "0x10", "via", lab::SINK_V4]).unwrap();
    // An IP tunnel-metadata encap: what every kernel with lwtunnels has
    // (seg6 and MPLS encaps are options some kernels leave out). Out of the
    // generator's side, so that a packet the kernel sends on never meets the
    // sink's socket.
    let dev = run.lab.rtr_gen_if.clone();
    sh::ip(&["-n", &rtr, "route", "add", "10.57.3.0/24", "encap", "ip", "id", "5", "dst", "192.0.2.1", "dev", &dev]).unwrap();
    for p in ["10.57.1.0/24", "10.57.2.0/24", "10.57.3.0/24"] {
        wait_for(&run, p, |r| r.is_some_and(|r| r["kind"] == "kernel"));
    }
    let sink = traffic::UdpSink::bind(&run.lab.sink, "0.0.0.0:7410".parse().unwrap()).unwrap();
    traffic::udp_send(&run.lab.gen, "10.57.9.1:7410".parse().unwrap(), 10, 64, 64, Duration::from_millis(1)).unwrap();
    assert_eq!(sink.receive(10, Duration::from_secs(2)).unwrap().len(), 10, "the covering route forwards");
    let passed = run.counter("kernel_route");
    for dst in ["10.57.1.1", "10.57.2.1", "10.57.3.1"] {
        traffic::udp_send(&run.lab.gen, format!("{dst}:7410").parse().unwrap(), 10, 64, 64, Duration::from_millis(1)).unwrap();
    }
    assert_eq!(sink.receive(30, Duration::from_millis(500)).unwrap().len(), 0, "none forwarded by the covering route");
    assert_eq!(run.counter("kernel_route") - passed, 30, "each passed to the kernel, counted");

    // replace to another device: the route follows, nothing of the old one stays.
    sh::ip(&["-n", &rtr, "route", "add", "10.58.0.0/16", "via", lab::SINK_V4]).unwrap();
    wait_for(&run, "10.58.0.0/16", |r| r.is_some());
    sh::ip(&["-n", &rtr, "route", "replace", "10.58.0.0/16", "dev", &run.lab.rtr_gen_if]).unwrap();
    let gen_index = ifindex(&rtr, &run.lab.rtr_gen_if);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let nexthops: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "nexthops", "--json"])).unwrap();
        let row = route_row(&run, "10.58.0.0/16").unwrap();
        let now = nexthops.as_array().unwrap().iter().find(|n| n["id"] == row["nexthop"]).map(|n| n["ifindex"].as_u64().unwrap());
        if now == Some(gen_index as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "the replaced route still leaves by ifindex {now:?}, not {gen_index}");
        std::thread::sleep(Duration::from_millis(50));
    }
    sh::ip(&["-n", &rtr, "route", "del", "10.58.0.0/16"]).unwrap();
    wait_for(&run, "10.58.0.0/16", |r| r.is_none());
}

/// A route the maps cannot carry (METRICS_RO full: more distinct metric
/// sets than slots) is kept for a retry, counted, and carried once there is
/// room: the RIB ends equal to the kernel's table, not to the mirror's hope.
#[test]
fn routes_that_do_not_fit_are_retried_until_they_do() {
    let run = LabRun::start_custom(&lab_tag('t'), "generic", &[], &|lab| lab.hosts_config());
    let rtr = run.lab.rtr.clone();
    let dir = TempDir::new("retry");
    let batch = dir.0.join("metrics.batch");
    let slots = common::capacity::METRICS_RO as usize;
    let prefix = |i: usize| format!("12.{}.{}.0/24", i / 256, i % 256);
    // One distinct metric set per route: 40 more than the RO slots.
    let n = slots + 40;
    let cmds: String = (0..n)
        .map(|i| format!("route add {} via {} mtu {} advmss {}\n", prefix(i), lab::SINK_V4, 1000 + i % 8000, 500 + i / 8000))
        .collect();
    std::fs::write(&batch, cmds).unwrap();
    sh::run(sh::cmd("ip", &["-n", &rtr, "-batch"]).arg(&batch)).unwrap();
    let stats = || run.control().call(&Request::Stats).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats()["netlink"]["retry_pending"].as_u64() < Some(30) {
        assert!(Instant::now() < deadline, "the overflow never counted: {}", stats()["netlink"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let pending = stats()["netlink"]["retry_pending"].as_u64().unwrap();
    // Room: 200 routes go; their slots leave quarantine after the grace period.
    let del: String = (0..200).map(|i| format!("route del {}\n", prefix(i))).collect();
    std::fs::write(&batch, del).unwrap();
    sh::run(sh::cmd("ip", &["-n", &rtr, "-batch"]).arg(&batch)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = stats();
        if s["netlink"]["retry_pending"] == 0 && s["netlink"]["retried"].as_u64() >= Some(pending) {
            break;
        }
        assert!(Instant::now() < deadline, "never retried: {}", s["netlink"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in [n - 1, n - 20, 200] {
        assert!(route_row(&run, &prefix(i)).is_some(), "{} carried after the retry", prefix(i));
    }
    assert!(route_row(&run, &prefix(0)).is_none());
}

/// The netlink port id of process `pid`'s route subscription: its socket
/// (by inode, among the process's) of protocol 0 with groups joined.
fn subscription_portid(pid: u32) -> u32 {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")).unwrap();
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 10 && f[1] == "0" && f[3] != "00000000" && inodes.contains(f[9]))
        .unwrap_or_else(|| panic!("no subscription socket of pid {pid} in:\n{table}"))[2]
        .parse()
        .unwrap()
}

/// Sends `msg` from a netlink socket in namespace `ns` to port `portid`.
fn send_netlink(ns: &str, portid: u32, msg: Vec<u8>) {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || unsafe {
        // This thread alone enters the namespace.
        let nsfd = libc::open(std::ffi::CString::new(path).unwrap().as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(nsfd >= 0 && libc::setns(nsfd, libc::CLONE_NEWNET) == 0, "{}", std::io::Error::last_os_error());
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        let mut to: libc::sockaddr_nl = std::mem::zeroed();
        to.nl_family = libc::AF_NETLINK as u16;
        to.nl_pid = portid;
        let sent = libc::sendto(
            fd,
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
            &to as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        assert_eq!(sent, msg.len() as isize, "{}", std::io::Error::last_os_error());
        libc::close(fd);
        libc::close(nsfd);
    })
    .join()
    .unwrap();
}

/// A message the agent cannot decode, sent to its subscription as the
/// kernel sends a change: an RTM_NEWROUTE whose first attribute claims 3
/// bytes. netlink-proto's codec would drop it with a log line; the agent
/// counts it as undecodable and resyncs from a full dump, as after an
/// overrun, and its maps stay equal to the kernel's.
#[test]
fn an_undecodable_netlink_message_is_counted_and_ends_in_a_resync() {
    let run = LabRun::start_custom(&lab_tag('u'), "generic", &["--source", "kernel"], &|lab| lab.hosts_config());
    let rtr = run.lab.rtr.clone();
    let stats = || run.control().call(&Request::Stats).unwrap();
    assert_eq!((stats()["netlink"]["undecodable"].as_u64(), stats()["netlink"]["resyncs"].as_u64()), (Some(0), Some(0)));
    let mut msg = Vec::new();
    msg.extend(36u32.to_ne_bytes()); // nlmsg_len
    msg.extend(24u16.to_ne_bytes()); // RTM_NEWROUTE
    msg.extend([0u8; 10]); // flags, seq, pid
    msg.extend([2, 24, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]); // rtmsg: AF_INET, /24, main, boot, unicast
    msg.extend(3u16.to_ne_bytes()); // rta_len 3: shorter than its own header
    msg.extend(1u16.to_ne_bytes()); // RTA_DST
    msg.extend([10, 9, 0, 0]);
    send_netlink(&rtr, subscription_portid(run.agent.pid()), msg);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats()["netlink"]["resyncs"].as_u64() < Some(1) {
        assert!(Instant::now() < deadline, "no resync: {}\n{}", stats()["netlink"], run.agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = stats();
    assert_eq!((s["netlink"]["undecodable"].as_u64(), s["netlink"]["overruns"].as_u64()), (Some(1), Some(0)), "{s}");
    let log = run.agent.log();
    assert!(log.contains("an undecodable message; resyncing") && log.contains("resynced with a full dump"), "{log}");
    assert_eq!(maps_v4_table(&run), kernel_v4_table(&rtr));
    let text = run.cowroute(&["show", "stats"]);
    assert!(text.contains("0 overruns, 1 undecodable"), "{text}");
}

/// Asserts every one of `v4` and `v6` is in its trie through one next hop
/// on rtr's sink link (the lab's sink gateway); returns the IPv4 trie.
fn assert_in_tries_via_sink(run: &LabRun, v4: &[ipnet::Ipv4Net], v6: &[ipnet::Ipv6Net]) -> PinnedV4 {
    let nexthops: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "nexthops", "--json"])).unwrap();
    let port_of = |id: u32| nexthops.as_array().unwrap().iter().find(|n| n["id"] == id).map(|n| n["ifindex"].clone());
    let sink_port: serde_json::Value = ifindex(&run.lab.rtr, &run.lab.rtr_sink_if).into();
    let pinned = PinnedV4::open(&run.pin_dir);
    let trie6: aya::maps::LpmTrie<aya::maps::MapData, [u8; 16], common::RouteEntry> =
        cowroute::dataplane::map_writer::open_pinned(&run.pin_dir, common::maps::ROUTES_V6).unwrap();
    let key = |len: u8, octets: &[u8]| (len as u32, octets.to_vec());
    let entries = v4
        .iter()
        .map(|n| (n.to_string(), key(n.prefix_len(), &n.addr().octets())))
        .chain(v6.iter().map(|n| (n.to_string(), key(n.prefix_len(), &n.addr().octets()))));
    let mut via = [None, None];
    for (net, (len, octets)) in entries {
        let entry = match <[u8; 4]>::try_from(octets.as_slice()) {
            Ok(a) => pinned.trie.get(&aya::maps::lpm_trie::Key::new(len, a), 0),
            Err(_) => trie6.get(&aya::maps::lpm_trie::Key::new(len, <[u8; 16]>::try_from(octets.as_slice()).unwrap()), 0),
        };
        let entry = entry.unwrap_or_else(|e| panic!("{net} not in its trie: {e}"));
        let family = octets.len() / 16;
        let first = *via[family].get_or_insert(entry.nexthop);
        assert_eq!(entry.nexthop, first, "{net}: through the same next hop as the family's first route");
    }
    for id in via.into_iter().flatten() {
        assert_eq!(port_of(id), Some(sink_port.clone()), "next hop {id} is on rtr's sink link");
    }
    pinned
}

/// A cold start against routes already in rtr's kernel: the agent writes
/// the tries in batches (1,024 routes a `bpf()` call on its trie-writer
/// thread, the last batch a partial one); after "ready" every one of the
/// kernel's routes, both families, is in its trie through the next hop of
/// the kernel's gateway, and the IPv4 ones answer from the DIR-24 index
/// with the trie's entry. Started again with the first batch call refused
/// (fault injection, the kernel's EINVAL), the agent writes that batch's
/// routes one by one: the same routes land, and the stats say how.
#[test]
fn a_cold_start_writes_every_kernel_route_in_batches() {
    let (v4, v6) = (2_500u32, 1_300u32);
    let v4_prefix = |i: u32| format!("12.{}.{}.0/24", i / 256, i % 256);
    let v6_prefix = |i: u32| format!("2001:db8:{:x}::/48", i);
    let dir = TempDir::new("coldstart");
    let setup = |lab: &lab::Lab| {
        let mut cmds = String::new();
        for i in 0..v4 {
            cmds += &format!("route add {} via {}\n", v4_prefix(i), lab::SINK_V4);
        }
        for i in 0..v6 {
            cmds += &format!("route add {} via {}\n", v6_prefix(i), lab::SINK_V6);
        }
        let batch = dir.0.join("routes.batch");
        std::fs::write(&batch, cmds).unwrap();
        sh::run(sh::cmd("ip", &["-n", &lab.rtr, "-batch"]).arg(&batch)).unwrap();
        lab.hosts_config()
    };
    let mut run = LabRun::start_custom(&lab_tag('b'), "generic", &["--source", "kernel"], &setup);
    assert!(kernel_v4_table(&run.lab.rtr).len() as u32 >= v4, "the routes were in the kernel before the agent started");

    let every_route_landed = |run: &LabRun| {
        let nets4: Vec<ipnet::Ipv4Net> = (0..v4).map(|i| v4_prefix(i).parse().unwrap()).collect();
        let nets6: Vec<ipnet::Ipv6Net> = (0..v6).map(|i| v6_prefix(i).parse().unwrap()).collect();
        let pinned = assert_in_tries_via_sink(run, &nets4, &nets6);
        for net in &nets4 {
            let entry = pinned.trie.get(&aya::maps::lpm_trie::Key::new(24, net.addr().octets()), 0).unwrap();
            let (found, indexed) = pinned.lookup(net.addr()).unwrap();
            assert!(indexed && found == entry, "{net}: the DIR-24 index answers with the trie's entry");
        }
        let s = run.control().call(&Request::Stats).unwrap();
        assert!(s["routes"].as_u64().unwrap() >= (v4 + v6) as u64, "{s}");
        s["trie_writes"].clone()
    };

    let writes = every_route_landed(&run);
    let (batches, batched) = (writes["batches"].as_u64().unwrap(), writes["batched"].as_u64().unwrap());
    // 2,500 IPv4 routes are at least three batch calls, 1,300 IPv6 two.
    assert!(batches >= 5, "{writes}");
    assert!(batched >= (v4 + v6) as u64 && writes["retried"] == 0, "every route written by a batch call: {writes}");
    assert!(run.cowroute(&["show", "stats"]).contains(&format!("{batches} batch calls, {batched} routes batched, 0 written one by one")));

    // Stopped (its pins go), then a cold start again with the first batch refused.
    run.agent.stop().unwrap();
    assert!(!run.pin_dir.join(common::maps::ROUTES_V4).exists(), "a stopped agent removes its pins");
    let fault = format!("{}={}", cowroute::operator::control::FAULT_INJECTION_ENV, cowroute::operator::control::FAULT_REFUSE_TRIE_BATCH);
    run.agent = xtask::agent_proc::AgentProc::start_under(
        &["env".into(), fault],
        &run.lab.rtr,
        &run.pin_dir,
        &run.run_args,
        false,
        Duration::from_secs(30),
    )
    .expect("ready with the first batch refused");
    let writes = every_route_landed(&run);
    let retried = writes["retried"].as_u64().unwrap();
    // The first batch handed over is a full one of IPv4 routes (the dump's first family).
    assert_eq!(retried, cowroute::dataplane::trie_batch::BATCH as u64, "the refused batch's routes were written one by one: {writes}");
    assert!(writes["batched"].as_u64().unwrap() + retried >= (v4 + v6) as u64, "{writes}");
}

/// Once the program reads the maps, the route writes of each netlink batch
/// (a turn of the daemon) are queued for the trie-writer thread. With the
/// next batch refused, its routes one by one too (fault injection over the
/// control socket: the kernel's EINVAL), those routes are owed and written
/// again each second: every route lands, through the kernel's gateway, the
/// stats count the refusal and owe nothing after, and traffic to the
/// refused route's prefix is forwarded by the fast path. A refused route
/// deleted before its retry is gone from the trie and the DIR-24 index; one
/// replaced before is there with its newer entry.
#[test]
fn a_route_the_trie_refuses_in_a_turn_is_owed_and_written_again() {
    let (v4, v6) = (3_000u32, 600u32);
    let v4_prefix = |i: u32| format!("13.{}.{}.0/24", i / 256, i % 256);
    let v6_prefix = |i: u32| format!("2001:db8:1:{:x}::/64", i);
    let fault = format!("{}=1", cowroute::operator::control::FAULT_INJECTION_ENV);
    let lab = lab::Lab::up(&lab_tag('q')).expect("lab up");
    let run = LabRun::start_under(lab, &["env".into(), fault], "generic", &["--source", "kernel"], &|lab| lab.hosts_config());
    let (rtr, sink) = (run.lab.rtr.clone(), run.lab.sink.clone());
    sh::ip(&["-n", &sink, "route", "add", "local", "13.0.0.0/16", "dev", "lo"]).unwrap();
    let dir = TempDir::new("turnfault");
    // `cmds` through `ip -batch`, the next queued batch refused when `refuse`
    // (its first write is `cmds`' first); returns the trie stats once every
    // refusal has been written again, and `done` holds.
    let refused_before = std::cell::Cell::new(0u64);
    let apply = |cmds: &str, refuse: bool, done: &dyn Fn(&PinnedV4) -> bool| {
        if refuse {
            let what = cowroute::operator::control::FAULT_REFUSE_TRIE_TURN.to_string();
            run.control().call(&Request::Fault { what }).expect("the fault armed");
        }
        let batch = dir.0.join("routes.batch");
        std::fs::write(&batch, cmds).unwrap();
        sh::run(sh::cmd("ip", &["-n", &rtr, "-batch"]).arg(&batch)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = run.control().call(&Request::Stats).unwrap();
            let refused = s["trie_writes"]["refused"].as_u64().unwrap();
            if done(&PinnedV4::open(&run.pin_dir)) && refused >= refused_before.get() + refuse as u64 && s["trie_writes"]["owed"] == 0 {
                refused_before.set(refused);
                return s["trie_writes"].clone();
            }
            assert!(Instant::now() < deadline, "the routes did not all land, or a refusal is still owed: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let entry_of = |pinned: &PinnedV4, prefix: &str| {
        let net: ipnet::Ipv4Net = prefix.parse().unwrap();
        pinned.trie.get(&aya::maps::lpm_trie::Key::new(24, net.addr().octets()), 0).ok()
    };

    let mut cmds = String::new();
    for i in 0..v4 {
        cmds += &format!("route add {} via {}\n", v4_prefix(i), lab::SINK_V4);
    }
    for i in 0..v6 {
        cmds += &format!("route add {} via {}\n", v6_prefix(i), lab::SINK_V6);
    }
    let last = v4_prefix(v4 - 1);
    let writes = apply(&cmds, true, &|p| entry_of(p, &last).is_some());
    assert!(writes["batches"].as_u64().unwrap() >= 1, "{writes}");
    // The refused batch is the first the routes' events queued: it holds 13.0.0.0/24.
    let log = run.agent.log();
    assert!(log.lines().any(|l| l.contains("prefix=13.0.0.0/24") && l.contains("refused the route")), "13.0.0.0/24 was refused: {log}");
    let nets4: Vec<ipnet::Ipv4Net> = (0..v4).map(|i| v4_prefix(i).parse().unwrap()).collect();
    let nets6: Vec<ipnet::Ipv6Net> = (0..v6).map(|i| v6_prefix(i).parse().unwrap()).collect();
    assert_in_tries_via_sink(&run, &nets4, &nets6);
    assert!(run.cowroute(&["show", "stats"]).contains(&format!("{} refused, 0 owed", writes["refused"])));

    // 13.0.0.0/24 was refused, owed, and written again: it forwards.
    let to: SocketAddr = "13.0.0.1:7701".parse().unwrap();
    let sock = traffic::UdpSink::bind(&sink, "0.0.0.0:7701".parse().unwrap()).unwrap();
    let fwd = run.counter("forwarded");
    traffic::udp_send(&run.lab.gen, to, 20, 200, 64, Duration::from_millis(1)).unwrap();
    let got = sock.receive(20, Duration::from_secs(2)).unwrap();
    assert_eq!(got.len(), 20, "all datagrams to 13.0.0.1 arrived");
    assert_eq!(run.counter("forwarded") - fwd, 20, "by the fast path");

    // A refused replace, then a delete of the same route before its retry:
    // in neither the trie nor the index.
    let gone = v4_prefix(5);
    apply(&format!("route replace {gone} via {} mtu 1300\nroute del {gone}\n", lab::SINK_V4), true, &|p| entry_of(p, &gone).is_none());
    let pinned = PinnedV4::open(&run.pin_dir);
    let answer = pinned.lookup("13.0.5.1".parse().unwrap());
    assert!(answer.is_none_or(|(_, indexed)| !indexed), "no DIR-24 copy answers for the deleted {gone}: {answer:?}");

    // A refused replace, then a newer one before its retry: the newer entry
    // (the metrics of a route already at mtu 1400, shared), in the trie and the index.
    let (twice, model) = (v4_prefix(6), v4_prefix(7));
    apply(&format!("route replace {model} via {} mtu 1400\n", lab::SINK_V4), false, &|_| true);
    let cmds =
        format!("route replace {twice} via {sink_gw} mtu 1300\nroute replace {twice} via {sink_gw} mtu 1400\n", sink_gw = lab::SINK_V4);
    let has_model_metrics = |p: &PinnedV4| match (entry_of(p, &twice), entry_of(p, &model)) {
        (Some(t), Some(m)) => t.metrics == m.metrics,
        _ => false,
    };
    apply(&cmds, true, &has_model_metrics);
    let pinned = PinnedV4::open(&run.pin_dir);
    assert_eq!(
        pinned.lookup("13.0.6.1".parse().unwrap()).map(|(e, _)| e),
        entry_of(&pinned, &twice),
        "the index answers with the newer entry"
    );
}
