//! `--source kernel`: the agent mirrors rtr's kernel FIB (main table) over
//! netlink; `ip route` changes reach the maps and change forwarding.

use cowroute::control::Request;
use cowroute_tests::*;
use std::{
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
    let run = LabRun::start_custom(&lab_tag('k'), "generic", &["--source", "kernel"], &|lab| lab.hosts_config());
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
    let out = sh::output(std::process::Command::new(bin).args(["--pin-dir", "/sys/fs/bpf/cowroute-ksrc-none", "run", "--source", "kernel", "--iface", "lo", "--config"]).arg(&cfg)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains(":1: route: routes come from the kernel with --source kernel"), "{err}");
}

/// Sends `n` UDP datagrams gen -> sink (10.2.0.2) and returns how many arrived.
fn udp_through(run: &LabRun, port: u16, n: usize) -> usize {
    let to: SocketAddr = format!("{}:{port}", lab::SINK_V4).parse().unwrap();
    let sink = traffic::UdpSink::bind(&run.lab.sink, to).unwrap();
    traffic::udp_send(&run.lab.gen, to, n, 100, 64, Duration::from_millis(1)).unwrap();
    sink.receive(n, Duration::from_millis(800)).unwrap().len()
}

#[test]
fn link_down_and_neighbour_flush_leave_the_fast_path_until_they_recover() {
    let run = LabRun::start_custom(&lab_tag('l'), "native", &["--source", "kernel"], &|lab| lab.hosts_config());
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
