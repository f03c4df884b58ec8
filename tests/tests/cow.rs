//! Copy-on-write of per-destination metrics in the lab: the fast path honours
//! private metrics for one destination only; bad input is refused with a
//! clear message; an exhausted pool is a counted, reported condition; a
//! storm of COW operations under traffic loses nothing to a bad reference.

use cowroute::operator::control::Request;
use cowroute_tests::*;
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use xtask::{lab, sh, traffic};

/// Sends `count` UDP datagrams of `total` bytes (IP header included) from
/// gen to `dst` and returns how many the sink received.
fn delivered(run: &LabRun, dst: &str, total: usize, count: usize) -> usize {
    let ip: IpAddr = dst.parse().unwrap();
    let header = if ip.is_ipv4() { 28 } else { 48 };
    let addr = SocketAddr::new(ip, 7200);
    let sink = traffic::UdpSink::bind(&run.lab.sink, addr).unwrap();
    traffic::udp_send(&run.lab.gen, addr, count, total - header, 64, Duration::from_millis(1)).unwrap();
    sink.receive(count, Duration::from_millis(1500)).unwrap().len()
}

fn show(run: &LabRun, dest: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&run.cowroute(&["metrics", "show", dest, "--json"])).unwrap();
    v[0].clone()
}

#[test]
fn private_mtu_applies_to_one_destination_only_v4_and_v6() {
    // The fast path's counters are what is checked: exceptions stay with
    // the (non-forwarding) kernel, no ICMP error teaches gen a smaller MTU.
    let run = LabRun::start(&lab_tag('m'), "native", &["--slow-path", "kernel"]);
    for (dest, other, mtu) in [(lab::SINK_V4, lab::SINK2_V4, "1300"), (lab::SINK_V6, lab::SINK2_V6, "1280")] {
        assert_eq!(delivered(&run, dest, 1400, 10), 10, "{dest}: 1400 bytes fit the shared MTU 1500");
        let before = show(&run, dest);
        assert!(before["reference"].as_str().unwrap().starts_with("ro:"), "{before}");

        let out = run.cowroute(&["metrics", "set", dest, "mtu", mtu]);
        assert!(out.contains(dest) && out.contains("rw:"), "{out}");
        let after = show(&run, dest);
        assert!(after["reference"].as_str().unwrap().starts_with("rw:"), "tag clear: {after}");
        assert_eq!(after["values"]["mtu"].to_string(), mtu);
        assert_eq!(after["values"]["advmss"], 1460, "the rest copied from the shared set");
        assert_eq!(after["override_mask"], 1 << 2, "1 << RTAX_MTU");
        assert_eq!(after["covering"], if dest.contains(':') { "fd00:2::/64" } else { "10.2.0.0/24" });
        let left = after["overrides"][0]["expires_in"].as_u64().unwrap();
        assert!((590..=600).contains(&left), "default expiry 600 s, {left} left");
        // `show routes` (from the pinned maps) tells the same story.
        let rows: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "routes", dest, "--json"])).unwrap();
        let shown = &rows[0]["metric_values"];
        assert_eq!((shown["origin"].as_str(), shown["values"]["mtu"].to_string()), (Some("private"), mtu.to_string()), "{shown}");
        assert_eq!((shown["overrides"][0]["metric"].as_str(), shown["overrides"][0]["by"].as_str()), (Some("mtu"), Some("operator")));
        let left = shown["overrides"][0]["expires_in"].as_u64().unwrap();
        assert!((590..=600).contains(&left), "{shown}");
        let line = run.cowroute(&["show", "routes", dest]);
        assert!(line.contains(&format!("mtu {mtu} ")) && line.contains("(private: mtu operator, expires in"), "{line}");

        let too_big = run.counter("too_big");
        assert_eq!(delivered(&run, dest, 1400, 10), 0, "{dest}: 1400 bytes exceed the private MTU");
        assert_eq!(run.counter("too_big") - too_big, 10, "each one counted as too big");
        assert_eq!(delivered(&run, other, 1400, 10), 10, "{other} under the same prefix keeps MTU 1500");
        assert_eq!(delivered(&run, dest, mtu.parse().unwrap(), 10), 10, "{dest}: packets of the private MTU pass");

        let out = run.cowroute(&["metrics", "reset", dest]);
        assert!(out.contains("shared metrics again"), "{out}");
        assert!(show(&run, dest)["reference"].as_str().unwrap().starts_with("ro:"));
        assert_eq!(delivered(&run, dest, 1400, 10), 10, "{dest}: shared MTU again after reset");
    }
    // bpftool shows the private slot by field name, and the tag-clear reference.
    run.cowroute(&["metrics", "set", lab::SINK_V4, "mtu", "1300", "--expires", "0"]);
    let rw = bpftool_dump(&run.pin_dir.join("METRICS_RW"));
    assert!(rw.iter().any(|e| e["value"]["mtu"] == 1300), "METRICS_RW holds mtu 1300");
    let host = find_v4_route(&bpftool_dump(&run.pin_dir.join("ROUTES_V4")), [10, 2, 0, 2], 32).expect("host entry of 10.2.0.2");
    assert_eq!(host["metrics"]["tagged"].as_u64().unwrap() & 1, 0, "READ_ONLY tag clear: {host}");
    assert_eq!(show(&run, lab::SINK_V4)["overrides"][0]["expires_in"], serde_json::Value::Null, "no expiry");
}

#[test]
fn metrics_cli_rejects_bad_input_and_reports_a_missing_agent() {
    let run = LabRun::start(&lab_tag('e'), "generic", &[]);
    let cases: [(&[&str], &str); 7] = [
        (&["metrics", "set", "10.2.0.300", "mtu", "1300"], "\"10.2.0.300\" is not an IPv4 or IPv6 address"),
        (&["metrics", "set", "sink", "mtu", "1300"], "\"sink\" is not an IPv4 or IPv6 address"),
        (&["metrics", "set", "10.2.0.2", "mtux", "1300"], "unknown metric \"mtux\""),
        (&["metrics", "set", "10.2.0.2", "mtu", "65521"], "65521 is out of range for mtu (at most 65520)"),
        (&["metrics", "set", "10.2.0.2", "advmss", "65496"], "at most 65495"),
        (&["metrics", "set", "10.2.0.2", "hoplimit", "256"], "at most 255"),
        (&["metrics", "set", "172.16.9.9", "mtu", "1300"], "no route to 172.16.9.9"),
    ];
    for (args, expected) in cases {
        let out = run.cowroute_output(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: expected {expected:?} in {err}");
    }
    let out = run.cowroute_output(&["metrics", "set", lab::RTR_SINK_V4, "mtu", "1300"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a local address"), "{out:?}");
    // Asked directly over the control socket, past the CLI's checks, an
    // expiry near u64::MAX is refused by the agent, which answers on.
    let huge = Request::MetricsSet { dest: lab::SINK_V4.into(), metric: "mtu".into(), value: 1300, expires: Some(u64::MAX) };
    let err = run.control().call(&huge).unwrap_err().to_string();
    assert!(err.contains("too long"), "{err}");
    let out = run.cowroute_output(&["metrics", "set", lab::SINK_V4, "mtu", "1300", "--expires", "18446744073709551615"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("too long"), "{out:?}");
    assert_eq!(run.control().call(&Request::MetricsShow { dest: None }).unwrap(), serde_json::json!([]));

    let bin = xtask::agent_proc::cowroute_bin().unwrap();
    let out = sh::output(std::process::Command::new(bin).args(["--control-socket", "/run/cowroute/none.sock", "metrics", "show"])).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("no agent running") && err.contains("/run/cowroute/none.sock"), "{err}");
    // Nothing of the above changed anything.
    assert_eq!(run.control().call(&Request::MetricsShow { dest: None }).unwrap(), serde_json::json!([]));
}

/// Every RTAX metric, RTAX_FASTOPEN_NO_COOKIE (17) included, can be set with
/// the default expiry on a running agent (17 indexed past the end of the
/// expiry record and panicked the agent), and the agent answers on.
#[test]
fn every_rtax_metric_can_be_set_on_a_running_agent() {
    let run = LabRun::start(&lab_tag('k'), "generic", &[]);
    for m in common::Rtax::ALL {
        let value = m.max_value().min(7).to_string();
        run.cowroute(&["metrics", "set", lab::SINK_V4, m.name(), &value]);
        let v = show(&run, lab::SINK_V4);
        assert_eq!(v["values"][m.name()].to_string(), value, "{}: {v}", m.name());
        let o = v["overrides"].as_array().unwrap().iter().find(|o| o["metric"] == m.name()).cloned().unwrap();
        assert!(o["expires_in"].as_u64().is_some_and(|s| (590..=600).contains(&s)), "{o}");
    }
    let meta = bpftool_dump(&run.pin_dir.join("PRIVATE_META"));
    assert_eq!(meta.len(), 1, "{meta:?}");
    let expires = meta[0]["value"]["expires"].as_array().unwrap();
    assert!(expires.iter().all(|e| e.as_u64().unwrap() > 0), "every metric's expiry recorded: {expires:?}");
    assert_eq!(show(&run, lab::SINK_V4)["override_mask"], (1u64 << 18) - 2, "bits 1..=17");
}

#[test]
fn exhausted_pool_is_reported_and_forwarding_goes_on_with_shared_metrics() {
    let run = LabRun::start(&lab_tag('x'), "generic", &["--metrics-rw-slots", "1"]);
    run.cowroute(&["metrics", "set", lab::SINK_V4, "mtu", "1300"]);
    let out = run.cowroute_output(&["metrics", "set", lab::SINK2_V4, "mtu", "1300"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("private metrics pool is exhausted") && err.contains("10.2.0.3 keeps its shared metrics"), "{err}");
    let stats = run.control().call(&Request::Stats).unwrap();
    assert_eq!(stats["cow"]["failures"], 1, "{stats}");
    assert_eq!(stats["metrics_rw_in_use"], 1);
    assert!(show(&run, lab::SINK2_V4)["reference"].as_str().unwrap().starts_with("ro:"), "nothing half-published");
    assert_eq!(delivered(&run, lab::SINK2_V4, 1400, 10), 10, "forwarded on its shared metrics");
    // Expiry frees the slot (after the grace period) for the next writer.
    run.cowroute(&["metrics", "reset", lab::SINK_V4]);
    std::thread::sleep(Duration::from_millis(1100));
    run.cowroute(&["metrics", "set", lab::SINK2_V4, "mtu", "1300", "--expires", "1"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while show(&run, lab::SINK2_V4)["reference"].as_str().unwrap().starts_with("rw:") {
        assert!(Instant::now() < deadline, "override did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = run.control().call(&Request::Stats).unwrap();
    assert_eq!((stats["cow"]["expirations"].as_u64(), stats["cow"]["destroys"].as_u64()), (Some(1), Some(2)), "{stats}");
}

const DESTINATIONS: usize = 1000;
const COW_OPERATIONS: usize = 100_000;

#[test]
fn cow_storm_under_traffic_loses_nothing_to_a_bad_reference() {
    let extra = r#"
[[route]]
prefix = "10.50.0.0/16"
via = "10.2.0.2"
dev = "ROUTER_SINK_IF"
mtu = 1500
"#;
    let tag = lab_tag('s');
    let lab_probe = xtask::lab::Lab::named(&tag).unwrap();
    // The fast path's counters are what is checked: exceptions stay with
    // the (non-forwarding) kernel, no ICMP error teaches gen a smaller MTU.
    let run = LabRun::start_with(&tag, "native", &["--slow-path", "kernel"], &extra.replace("ROUTER_SINK_IF", &lab_probe.rtr_sink_if));
    std::mem::forget(lab_probe);
    // The sink accepts the whole /16 as its own (AnyIP).
    sh::ip(&["-n", &run.lab.sink, "route", "add", "local", "10.50.0.0/16", "dev", "lo"]).unwrap();
    let dests: Vec<IpAddr> = (0..DESTINATIONS).map(|i| IpAddr::from([10, 50, (i / 250) as u8, (i % 250 + 1) as u8])).collect();

    let sink = traffic::UdpSink::bind(&run.lab.sink, "0.0.0.0:7300".parse().unwrap()).unwrap();
    let fwd0 = run.counter("forwarded");
    let big0 = run.counter("too_big");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // 1425 bytes: too big under MTU 1400, forwarded under 1450 or 1500.
    let sender = {
        let (stop, sent, dests, gen) = (stop.clone(), sent.clone(), dests.clone(), run.lab.gen.clone());
        std::thread::spawn(move || {
            traffic::in_netns(&gen, move || {
                let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
                let payload = vec![7u8; 1425 - 28];
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    sock.send_to(&payload, SocketAddr::new(dests[i % DESTINATIONS], 7300))?;
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    if i.is_multiple_of(32) {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
                Ok(())
            })
        })
    };
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut got = 0usize;
            loop {
                let n = sink.receive(usize::MAX, Duration::from_millis(300)).unwrap().len();
                got += n;
                if n == 0 && stop.load(Ordering::Relaxed) {
                    return got;
                }
            }
        })
    };
    let mut control = run.control();
    let started = Instant::now();
    for i in 0..COW_OPERATIONS {
        let dest = dests[(i * 7) % DESTINATIONS].to_string();
        let req = if i % 10 == 9 {
            // Destroy the copy the previous operation wrote.
            Request::MetricsReset { dest: dests[((i - 1) * 7) % DESTINATIONS].to_string() }
        } else {
            Request::MetricsSet { dest, metric: "mtu".into(), value: if i % 2 == 0 { 1400 } else { 1450 }, expires: None }
        };
        control.call(&req).unwrap_or_else(|e| panic!("operation {i} failed: {e}"));
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap().unwrap();
    let received = receiver.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    let forwarded = run.counter("forwarded") - fwd0;
    let too_big = run.counter("too_big") - big0;
    eprintln!("{COW_OPERATIONS} COW operations in {took:?} under traffic: sent {sent}, forwarded {forwarded}, too big {too_big}, received {received}");
    assert_eq!(run.counter("bad_reference"), 0, "no packet met a bad reference");
    assert_eq!(forwarded + too_big, sent, "every packet was forwarded or judged too big: none lost");
    assert_eq!(received as u64, forwarded, "every forwarded packet arrived");
    assert!(forwarded > 0 && too_big > 0, "both MTUs were in force during the storm");
    let stats = run.control().call(&Request::Stats).unwrap();
    assert_eq!(stats["cow"]["failures"], 0, "{stats}");
    assert_eq!(stats["cow"]["destroys"], (COW_OPERATIONS / 10) as u64, "{stats}");
}
