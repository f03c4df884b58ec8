//! Operating a running router: bpftool on every pinned map, `show` with a
//! target and after the agent stopped, the Prometheus endpoint, JSON logs.

use cowroute::operator::control::Request;
use cowroute_tests::*;
use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    time::Duration,
};
use xtask::{lab, sh, traffic};

/// `GET path` from inside namespace `ns`; the whole response.
fn http_get(ns: &str, addr: &'static str, path: &'static str) -> String {
    traffic::in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .unwrap()
}

/// A sample's value in a Prometheus text body.
fn sample(body: &str, name_and_labels: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name_and_labels} not in:\n{body}"))
        .parse()
        .unwrap()
}

#[test]
fn prometheus_endpoint_and_json_logs() {
    let run = LabRun::start_custom(&lab_tag('p'), "generic", &["--metrics-listen", "127.0.0.1:9469", "--log-format", "json"], &|lab| {
        lab.hosts_config()
    });
    let to: SocketAddr = format!("{}:7900", lab::SINK_V4).parse().unwrap();
    let sink = traffic::UdpSink::bind(&run.lab.sink, to).unwrap();
    traffic::udp_send(&run.lab.gen, to, 25, 100, 64, Duration::ZERO).unwrap();
    assert_eq!(sink.receive(25, Duration::from_secs(2)).unwrap().len(), 25);

    let response = http_get(&run.lab.rtr, "127.0.0.1:9469", "/metrics");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK") && head.contains("text/plain; version=0.0.4"), "{head}");
    assert_eq!(sample(body, "cowroute_packets_total{reason=\"forwarded\"}"), run.counter("forwarded"));
    assert!(sample(body, "cowroute_packets_total{reason=\"forwarded\"}") >= 25);
    let stats = run.control().call(&Request::Stats).unwrap();
    assert_eq!(sample(body, "cowroute_routes"), stats["routes"].as_u64().unwrap());
    assert_eq!(sample(body, "cowroute_metrics_ro_slots_in_use"), stats["metrics_ro_in_use"].as_u64().unwrap());
    assert!(sample(body, "cowroute_metrics_ro_references") >= stats["routes"].as_u64().unwrap());
    for family in [
        "cowroute_cow_operations_total{op=\"failures\"}",
        "cowroute_netlink_events_total",
        "cowroute_netlink_resyncs_total",
        "cowroute_metrics_rw_capacity",
    ] {
        sample(body, family);
    }
    assert!(http_get(&run.lab.rtr, "127.0.0.1:9469", "/").starts_with("HTTP/1.1 404"));

    // Every log line is one JSON object with a level and a message.
    let log = run.agent.log();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["fields"]["message"].is_string()), "{log}");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "ready"), "{log}");
}

/// `bpftool map dump` of each pinned map prints typed values by field name.
#[test]
fn bpftool_prints_every_map_by_field_name() {
    let run = LabRun::start_custom(&lab_tag('b'), "generic", &[], &|lab| lab.hosts_config());
    let rtr = run.lab.rtr.clone();
    sh::ip(&["-n", &rtr, "route", "add", "10.50.0.0/16", "via", lab::SINK_V4, "mtu", "1400"]).unwrap();
    sh::ip(&["-n", &rtr, "route", "add", "10.9.0.0/24", "nexthop", "via", lab::SINK_V4, "nexthop", "via", lab::SINK2_V4]).unwrap();
    run.cowroute(&["metrics", "set", lab::SINK_V4, "mtu", "1300"]);
    traffic::udp_send(&run.lab.gen, format!("{}:9", lab::SINK_V4).parse().unwrap(), 3, 64, 64, Duration::ZERO).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let dump = |map: &str| bpftool_dump(&run.pin_dir.join(map));

    let v4 = dump("ROUTES_V4");
    let ecmp = find_v4_route(&v4, [10, 9, 0, 0], 24).expect("the ECMP route");
    assert_eq!(ecmp["flags"], 4, "MULTIPATH: {ecmp}");
    let with_mtu = find_v4_route(&v4, [10, 50, 0, 0], 16).expect("10.50.0.0/16");
    for field in ["nexthop", "kind", "flags", "id"] {
        assert!(with_mtu[field].is_number(), "{field} in {with_mtu}");
    }
    let ro_slot = with_mtu["metrics"]["tagged"].as_u64().unwrap() >> 1;
    let v6 = dump("ROUTES_V6");
    assert!(v6.iter().any(|e| e["key"]["prefix_len"] == 64 && e["value"]["kind"] == 0), "fd00:2::/64 in ROUTES_V6");
    let nh = dump("NEXTHOPS");
    assert!(
        nh.iter().any(|e| e["value"]["flags"] == 3 && e["value"]["mtu"] == 1500 && e["value"]["dmac"].is_array()),
        "a usable next hop by field name"
    );
    // The route names a group id; its word in NH_GROUPS_INDEX (256 per
    // element) is 1 + the group's slot in NH_GROUPS.
    let id = ecmp["nexthop"].as_u64().unwrap() as usize;
    let index = dump("NH_GROUPS_INDEX");
    let word = index.iter().find(|e| e["key"] == id / 256).expect("the id's element")["value"]["slots"][id % 256].as_u64().unwrap();
    assert_ne!(word, 0, "group {id} is published");
    // A DIR-24 element by name too: 10.50/16 (key 2610) holds 256 blocks,
    // each naming the route's slot in ROUTES_V4_DIR24_ENTRIES.
    let key: Vec<String> = 2610u32.to_ne_bytes().iter().map(|b| b.to_string()).collect();
    let mut lookup = sh::cmd("bpftool", &["-j", "map", "lookup", "pinned"]);
    lookup.arg(run.pin_dir.join("ROUTES_V4_DIR24")).arg("key").args(&key);
    let element: serde_json::Value = serde_json::from_str(&sh::run(&mut lookup).unwrap()).unwrap();
    let blocks = element["formatted"]["value"]["blocks"].as_array().unwrap_or_else(|| panic!("named blocks: {element}"));
    assert_eq!(blocks.len(), 256);
    assert!(blocks.iter().all(|w| w == &blocks[0] && w.as_u64() > Some(0)), "one route's slot in every block: {element}");
    // Scalar values are structs too: the IPv6 index's words, the router's addresses.
    let v6_index = dump("ROUTES_V6_INDEX");
    assert!(!v6_index.is_empty() && v6_index.iter().all(|e| e["value"]["word"].is_number()), "{v6_index:?}");
    let local = dump("LOCAL_V4");
    assert!(!local.is_empty() && local.iter().all(|e| e["value"]["local"] == 1), "{local:?}");
    let groups = dump("NH_GROUPS");
    let g = groups.iter().find(|e| e["key"] == word - 1).expect("the route's group");
    assert_eq!(g["value"]["buckets"].as_array().unwrap().len(), 64);
    let ro = dump("METRICS_RO");
    assert_eq!(ro.iter().find(|e| e["key"] == ro_slot).unwrap()["value"]["mtu"], 1400);
    let rw = dump("METRICS_RW");
    assert!(rw.iter().any(|e| e["value"]["mtu"] == 1300), "the private copy's mtu in METRICS_RW");
    let counters = dump("COUNTERS");
    let fwd = &counters[0];
    assert!(fwd["values"].as_array().unwrap().iter().any(|c| c["value"]["packets"].as_u64() > Some(0)), "per-CPU counters by field: {fwd}");
    // The DEVMAP and the XSKMAP hold kernel objects, no value type of ours;
    // bpftool shows they are there.
    let ports = sh::run(sh::cmd("bpftool", &["map", "show", "pinned"]).arg(run.pin_dir.join("EGRESS_PORTS"))).unwrap();
    assert!(ports.contains("devmap_hash"), "{ports}");
    let sockets = sh::run(sh::cmd("bpftool", &["map", "show", "pinned"]).arg(run.pin_dir.join("SLOW_PATH"))).unwrap();
    assert!(sockets.contains("xskmap"), "{sockets}");
    let ring = sh::run(sh::cmd("bpftool", &["map", "show", "pinned"]).arg(run.pin_dir.join("PMTU_EVENTS"))).unwrap();
    assert!(ring.contains("ringbuf"), "{ring}");
    for map in common::maps::ALL.iter().filter(|m| !["EGRESS_PORTS", "SLOW_PATH", "PMTU_EVENTS"].contains(*m)) {
        let show = sh::run(sh::cmd("bpftool", &["map", "show", "pinned"]).arg(run.pin_dir.join(map))).unwrap();
        assert!(show.contains("btf_id"), "{map} carries BTF: {show}");
    }
}

#[test]
fn show_routes_finds_what_forwards_an_address_and_works_with_the_agent_stopped() {
    let mut run = LabRun::start_custom(&lab_tag('s'), "generic", &["--keep-on-exit"], &|lab| lab.hosts_config());
    let row = |run: &LabRun, target: &str| -> serde_json::Value {
        let rows: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "routes", target, "--json"])).unwrap();
        rows.as_array().unwrap().first().cloned().unwrap_or_default()
    };
    assert_eq!(row(&run, "10.2.0.77")["prefix"], "10.2.0.0/24", "an address: its longest match");
    assert_eq!(row(&run, "10.2.0.2")["prefix"], "10.2.0.2/32", "a neighbour's host entry");
    assert_eq!(row(&run, "10.2.0.0/24")["prefix"], "10.2.0.0/24", "a prefix: exactly it");
    assert_eq!(row(&run, "fd00:2::99")["prefix"], "fd00:2::/64");
    assert_eq!(row(&run, "10.2.0.0/25"), serde_json::Value::Null, "no such prefix");
    let out = run.cowroute_output(&["show", "routes", "10.2.0.1/24"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("host bits set in a prefix (did you mean 10.2.0.0/24?)"), "{out:?}");
    let out = run.cowroute_output(&["show", "routes", "192.0.2.1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no route for 192.0.2.1"));
    // Which map answers: a block holding host entries asks the trie; a
    // block a /16 owns alone answers from its DIR-24 copy.
    assert_eq!(row(&run, "10.2.0.77")["lookup"], "trie");
    sh::ip(&["-n", &run.lab.rtr, "route", "add", "10.60.0.0/16", "via", lab::SINK_V4]).unwrap();
    eventually("10.60.0.0/16 in the maps", || row(&run, "10.60.7.7")["prefix"] == "10.60.0.0/16");
    let r = row(&run, "10.60.7.7");
    assert!(r["lookup"].as_str().unwrap().starts_with("dir24 slot "), "{r}");
    assert!(run.cowroute(&["show", "routes", "10.60.7.7"]).contains("dir24 slot"));
    assert_eq!(row(&run, "10.60.0.0/16")["lookup"], serde_json::Value::Null, "a prefix: the trie's entry itself");

    // The agent stopped, the data plane kept: show reads the pins.
    assert_eq!(run.agent.stop().unwrap(), 0);
    assert_eq!(row(&run, "10.2.0.77")["prefix"], "10.2.0.0/24");
    let slow = run.cowroute(&["show", "slowpath"]);
    assert!(slow.contains("slow path: no agent answering") && slow.contains("no_neighbour") && !slow.contains("forwarded"), "{slow}");
    let stats = run.cowroute(&["show", "stats"]);
    assert!(stats.contains("forwarded"), "{stats}");
}

/// Polls `pred` for up to 3 s.
fn eventually(what: &str, pred: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !pred() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reloads_the_config_and_a_bad_file_changes_nothing() {
    let run = LabRun::start(&lab_tag('h'), "generic", &[]);
    let cfg = std::path::PathBuf::from(&run.run_args[run.run_args.iter().position(|a| a == "--config").unwrap() + 1]);
    let base = std::fs::read_to_string(&cfg).unwrap();
    let r1 = run.lab.rtr_sink_if.clone();
    let added = format!("{base}\n[[route]]\nprefix = \"10.60.0.0/16\"\nvia = \"{}\"\ndev = \"{r1}\"\nmtu = 1400\n", lab::SINK_V4);
    let hup = || unsafe { libc::kill(run.agent.pid() as i32, libc::SIGHUP) };
    let has = |prefix: &str| run.cowroute(&["show", "routes", "--json"]).contains(&format!("\"prefix\": \"{prefix}\""));

    std::fs::write(&cfg, &added).unwrap();
    hup();
    eventually("the reloaded route reaches the maps", || has("10.60.0.0/16"));
    eventually("the reload is logged", || run.agent.log().contains("SIGHUP: config reloaded"));
    assert!(run.agent.log().contains("routes_set=1"), "{}", run.agent.log());
    sh::ip(&["-n", &run.lab.sink, "route", "add", "local", "10.60.0.0/16", "dev", "lo"]).unwrap();
    let to: SocketAddr = "10.60.0.1:7950".parse().unwrap();
    let sink = traffic::UdpSink::bind(&run.lab.sink, "0.0.0.0:7950".parse().unwrap()).unwrap();
    traffic::udp_send(&run.lab.gen, to, 10, 100, 64, Duration::ZERO).unwrap();
    assert_eq!(sink.receive(10, Duration::from_secs(2)).unwrap().len(), 10, "forwarded by the reloaded route");

    // A bad file: refused with file, line and field; nothing changes.
    let bad = format!("{added}\n[[route]]\nprefix = \"10.61.0.0/16\"\ndev = \"{r1}\"\nmtux = 1\n");
    let bad_line = bad.lines().position(|l| l.starts_with("mtux")).unwrap() + 1;
    std::fs::write(&cfg, &bad).unwrap();
    hup();
    let expected = format!("{}:{bad_line}:1: mtux: unknown field", cfg.display());
    eventually("the refusal is logged", || run.agent.log().contains("config reload refused"));
    assert!(run.agent.log().contains(&expected), "expected {expected:?} in:\n{}", run.agent.log());
    assert!(has("10.60.0.0/16") && !has("10.61.0.0/16"), "the running config stays");

    // The route taken out of the file: gone from the maps.
    std::fs::write(&cfg, &base).unwrap();
    hup();
    eventually("the removed route leaves the maps", || !has("10.60.0.0/16"));

    // An interface added to the file: XDP attached, and the slow path serves it.
    let sockets = || run.control().call(&Request::Stats).unwrap()["slow_path"]["sockets"].as_u64().unwrap();
    let before = sockets();
    let (r2, _) = run.lab.add_second_link().unwrap();
    let interfaces = format!("interfaces = [\"{}\", \"{}\"]", run.lab.rtr_gen_if, r1);
    assert!(base.contains(&interfaces), "{base}");
    std::fs::write(&cfg, base.replace(&interfaces, &format!("interfaces = [\"{}\", \"{}\", \"{r2}\"]", run.lab.rtr_gen_if, r1))).unwrap();
    hup();
    eventually("the new interface gets a slow-path socket", || sockets() == before + 1);
    let link = sh::run(&mut sh::in_ns(&run.lab.rtr, "ip", &["-d", "link", "show", "dev", &r2])).unwrap();
    assert!(link.contains("prog/xdp"), "{link}");
}
