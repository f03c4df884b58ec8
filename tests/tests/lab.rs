//! The veth lab: gen -- rtr -- sink with kernel forwarding off in rtr, so
//! every packet that reaches the sink was forwarded by cowroute's XDP program.

use cowroute_tests::*;
use std::{net::SocketAddr, time::Duration};
use xtask::{lab, sh, traffic};

const PINGS: u32 = 100;
const DATAGRAMS: usize = 100;

fn forwards_v4_and_v6(letter: char, mode: &str) {
    let run = LabRun::start(&lab_tag(letter), mode, &[]);
    let rtr = &run.lab.rtr;
    for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
        let v = sh::run(&mut sh::in_ns(rtr, "sysctl", &["-n", key])).unwrap();
        assert_eq!(v.trim(), "0", "{key} must be off in rtr: only XDP may forward");
    }
    let base = run.counter("forwarded");
    assert_eq!(base, 0, "nothing forwarded before traffic");

    for dst in [lab::SINK_V4, lab::SINK_V6] {
        let (tx, rx, ttls) = traffic::ping(&run.lab.gen, dst, PINGS, "0.01").unwrap();
        assert_eq!((tx, rx), (PINGS, PINGS), "ping {dst}: every echo answered");
        assert_eq!(ttls.len(), PINGS as usize);
        assert!(ttls.iter().all(|t| *t == 63), "replies crossed rtr once: TTL/hop limit 64 - 1, got {ttls:?}");
    }
    for (dst, from) in [(format!("{}:7000", lab::SINK_V4), lab::GEN_V4), (format!("[{}]:7000", lab::SINK_V6), lab::GEN_V6)] {
        let addr: SocketAddr = dst.parse().unwrap();
        let sink = traffic::UdpSink::bind(&run.lab.sink, addr).unwrap();
        traffic::udp_send(&run.lab.gen, addr, DATAGRAMS, 200, 64, Duration::ZERO).unwrap();
        let got = sink.receive(DATAGRAMS, Duration::from_secs(5)).unwrap();
        assert_eq!(got.len(), DATAGRAMS, "UDP to {dst}: all datagrams arrive");
        for r in &got {
            assert_eq!(r.ttl, 63, "the sink sees the TTL / hop limit one less");
            assert_eq!(r.len, 200);
            assert_eq!(r.from, from.parse::<std::net::IpAddr>().unwrap());
        }
    }
    // Requests and replies of both pings, and the datagrams: nothing else.
    let expected = 2 * 2 * PINGS as u64 + 2 * DATAGRAMS as u64;
    assert_eq!(run.counter("forwarded"), expected, "forwarded counter equals the packets sent");
    assert_eq!(run.counter("no_neighbour"), 0);
    assert_eq!(run.counter("no_route"), 0);

    // bpftool sees the pinned, typed maps.
    let ro = run.pin_dir.join("METRICS_RO");
    let show = sh::run(sh::cmd("bpftool", &["map", "show", "pinned"]).arg(&ro)).unwrap();
    assert!(show.contains("name METRICS_RO") && show.contains("flags 0x80"), "BPF_F_RDONLY_PROG: {show}");
    let dump = bpftool_dump(&ro);
    let slot = |k: u64| dump.iter().find(|e| e["key"] == k).unwrap()["value"].clone();
    assert_eq!(slot(0)["mtu"], 0, "slot 0 is the all-zero default");
    assert_eq!(slot(1)["mtu"], 1500, "the sink routes' shared set, printed by field name");
    assert_eq!(slot(1)["advmss"], 1460);
    assert_eq!(slot(1)["lock"], 0);
    let text = sh::run(sh::cmd("bpftool", &["map", "dump", "pinned"]).arg(&ro)).unwrap();
    assert!(text.contains("\"mtu\": 1500") && text.contains("\"fastopen_no_cookie\": 0"), "{text}");
    let v = find_v4_route(&bpftool_dump(&run.pin_dir.join("ROUTES_V4")), [10, 2, 0, 0], 24).expect("10.2.0.0/24 in ROUTES_V4");
    assert!(v["nexthop"].is_number() && v["kind"] == 0, "{v}");
    assert_eq!(v["metrics"]["tagged"], 3, "RO slot 1, tag bit set: {v}");

    let mut run = run;
    assert!(run.agent.control_socket.exists());
    assert_eq!(run.agent.stop().unwrap(), 0, "clean exit on SIGTERM");
    assert!(!run.pin_dir.exists(), "pins removed on exit");
    assert!(!run.agent.control_socket.exists(), "control socket removed on exit");
    let attached = sh::run(&mut sh::in_ns(&run.lab.rtr, "ip", &["-d", "link", "show", "dev", &run.lab.rtr_gen_if])).unwrap();
    assert!(!attached.contains("prog/xdp"), "program detached: {attached}");
}

#[test]
fn lab_forwards_v4_and_v6_in_native_mode() {
    forwards_v4_and_v6('n', "native");
}

#[test]
fn lab_forwards_v4_and_v6_in_generic_mode() {
    forwards_v4_and_v6('g', "generic");
}
