//! The AF_XDP slow path: with kernel forwarding off in rtr, only cowroute
//! can answer, so every ICMP error gen sees from rtr was built by the agent
//! from a frame the fast path handed over.

use cowroute::control::Request;
use cowroute_tests::*;
use std::time::{Duration, Instant};
use xtask::{lab, sh, traffic};

/// `ping ARGS` in namespace `ns`: what it printed.
fn ping(ns: &str, args: &[&str]) -> String {
    let out = sh::output(&mut sh::in_ns(ns, "ping", args)).unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn slow_stats(run: &LabRun) -> serde_json::Value {
    run.control().call(&Request::Stats).unwrap()["slow_path"].clone()
}

fn wait_route(run: &LabRun, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !run.cowroute(&["show", "routes", "--json"]).contains(&format!("\"prefix\": \"{prefix}\"")) {
        assert!(Instant::now() < deadline, "{prefix} never reached the maps");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_router_answers_with_icmp_errors_v4_and_v6() {
    // Many errors to gen in a row: no per-destination limit here (see below).
    let run = LabRun::start_custom(&lab_tag('i'), "generic", &["--icmp-ratelimit-ms", "0"], &|lab| lab.hosts_config());
    assert!(run.agent.log().contains("AF_XDP sockets answer"), "{}", run.agent.log());
    assert_eq!(slow_stats(&run)["mode"], "afxdp");
    let (gen, rtr, sink) = (run.lab.gen.clone(), run.lab.rtr.clone(), run.lab.sink.clone());

    // TTL / hop limit 1: Time Exceeded from rtr's address towards gen.
    let out = ping(&gen, &["-n", "-c", "1", "-W", "2", "-t", "1", lab::SINK_V4]);
    assert!(out.contains(&format!("From {} icmp_seq=1 Time to live exceeded", lab::RTR_GEN_V4)), "{out}");
    let out = ping(&gen, &["-6", "-n", "-c", "1", "-W", "2", "-t", "1", lab::SINK_V6]);
    assert!(out.contains(&format!("From {} icmp_seq=1 Time exceeded: Hop limit", lab::RTR_GEN_V6)), "{out}");

    // A route with mtu 1300: DF packets of 1428 bytes get Fragmentation
    // Needed / Packet Too Big with that MTU, and tracepath finds it.
    for (family, prefix, via) in [("-4", "10.50.0.0/16", lab::SINK_V4), ("-6", "fd00:50::/64", lab::SINK_V6)] {
        sh::ip(&["-n", &rtr, family, "route", "add", prefix, "via", via, "mtu", "1300"]).unwrap();
        sh::ip(&["-n", &sink, family, "route", "add", "local", prefix, "dev", "lo"]).unwrap();
        wait_route(&run, prefix);
    }
    let out = ping(&gen, &["-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1400", "10.50.0.1"]);
    assert!(out.contains(&format!("From {} icmp_seq=1 Frag needed and DF set (mtu = 1300)", lab::RTR_GEN_V4)), "{out}");
    let out = ping(&gen, &["-6", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1400", "fd00:50::1"]);
    assert!(out.contains(&format!("From {} icmp_seq=1 Packet too big: mtu=1300", lab::RTR_GEN_V6)), "{out}");
    let trace = sh::output(&mut sh::in_ns(&gen, "tracepath", &["-n", "-m", "5", "10.50.0.2"])).unwrap();
    let trace = String::from_utf8_lossy(&trace.stdout);
    assert!(trace.contains("pmtu 1300"), "tracepath learns the path MTU from cowroute:\n{trace}");

    // No route, a prohibit route: Destination Unreachable with the right code.
    let out = ping(&gen, &["-n", "-c", "1", "-W", "2", "192.0.2.1"]);
    assert!(out.contains(&format!("From {} icmp_seq=1 Destination Net Unreachable", lab::RTR_GEN_V4)), "{out}");
    let out = ping(&gen, &["-6", "-n", "-c", "1", "-W", "2", "2001:db8::1"]);
    assert!(out.contains(&format!("From {} icmp_seq=1 Destination unreachable: No route", lab::RTR_GEN_V6)), "{out}");
    sh::ip(&["-n", &rtr, "route", "add", "prohibit", "198.51.100.0/24"]).unwrap();
    sh::ip(&["-n", &rtr, "-6", "route", "add", "prohibit", "2001:db8:99::/48"]).unwrap();
    wait_route(&run, "198.51.100.0/24");
    wait_route(&run, "2001:db8:99::/48");
    let out = ping(&gen, &["-n", "-c", "1", "-W", "2", "198.51.100.1"]);
    assert!(out.contains(&format!("From {} icmp_seq=1 Packet filtered", lab::RTR_GEN_V4)), "{out}");
    let out = ping(&gen, &["-6", "-n", "-c", "1", "-W", "2", "2001:db8:99::1"]);
    assert!(out.contains(&format!("From {} icmp_seq=1 Destination unreachable: Administratively prohibited", lab::RTR_GEN_V6)), "{out}");

    let s = slow_stats(&run);
    assert!(s["icmp_sent"].as_u64().unwrap() >= 9, "{s}");
    assert_eq!(s["malformed"], 0, "{s}");
}

/// gen's kernel count of Time Exceeded messages received (`/proc/net/snmp`).
fn time_exceeded_received(gen: &str) -> u64 {
    let snmp = sh::run(&mut sh::in_ns(gen, "cat", &["/proc/net/snmp"])).unwrap();
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
    let i = names.split_whitespace().position(|n| n == "InTimeExcds").unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Sends an ICMP packet with TTL 1 from `ns` (a raw socket): type and code given.
fn send_icmp_ttl1(ns: &str, to: &'static str, icmp_type: u8, code: u8) {
    traffic::in_netns(ns, move || {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        anyhow::ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let ttl: libc::c_int = 1;
        unsafe { libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl as *const _ as *const libc::c_void, 4) };
        // An error quotes an IP header and 8 bytes; any will do here.
        let mut msg = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 2, 0, 2, 10, 1, 0, 2, 0, 9, 0, 9, 0, 8, 0, 0]);
        let c = common::checksum::checksum(&msg).to_be_bytes();
        msg[2..4].copy_from_slice(&c);
        let addr: std::net::Ipv4Addr = to.parse()?;
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_addr.s_addr = u32::from_ne_bytes(addr.octets());
        let n = unsafe { libc::sendto(fd, msg.as_ptr() as *const _, msg.len(), 0, &sa as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32) };
        unsafe { libc::close(fd) };
        anyhow::ensure!(n == msg.len() as isize, "sendto: {}", std::io::Error::last_os_error());
        Ok(())
    })
    .unwrap();
}

#[test]
fn errors_are_rate_limited_and_never_about_errors() {
    let run = LabRun::start_custom(&lab_tag('q'), "generic", &[], &|lab| lab.hosts_config());
    let gen = run.lab.gen.clone();
    let (before, s0) = (time_exceeded_received(&gen), slow_stats(&run));

    // A flood of TTL-1 datagrams to one destination: a burst of 6, then one
    // a second (the kernel's icmp_ratelimit); the rest are counted.
    let to = format!("{}:7960", lab::SINK_V4).parse().unwrap();
    traffic::udp_send(&gen, to, 300, 64, 1, Duration::from_micros(200)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s1 = slow_stats(&run);
    let delta = |k: &str| s1[k].as_u64().unwrap() - s0[k].as_u64().unwrap();
    let (sent, limited, dropped) = (delta("icmp_sent"), delta("rate_limited"), delta("socket_dropped"));
    assert!((6..=7).contains(&sent), "a burst of 6 (7 if a second passed): {s1}");
    assert_eq!(sent + limited + dropped, 300, "every frame answered or counted: {s1}");
    assert!(limited >= 250, "{s1}");
    assert_eq!(time_exceeded_received(&gen) - before, sent, "gen received exactly what was sent");

    // An ICMP error with TTL 1 gets no error back; an echo request does.
    std::thread::sleep(Duration::from_secs(1));
    let refused = slow_stats(&run)["refused"].as_u64().unwrap();
    send_icmp_ttl1(&gen, lab::SINK_V4, 3, 3);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(slow_stats(&run)["refused"].as_u64().unwrap(), refused + 1, "no error about an error");
    let out = ping(&gen, &["-n", "-c", "1", "-W", "2", "-t", "1", lab::SINK2_V4]);
    assert!(out.contains("Time to live exceeded"), "the agent answers on: {out}");
}
