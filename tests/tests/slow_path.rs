//! The AF_XDP slow path: with kernel forwarding off in rtr, only cowroute
//! can answer, so every ICMP error gen sees from rtr was built by the agent
//! from a frame the fast path handed over.

use cowroute::operator::control::Request;
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
    for (family, far) in [("-4", "10.50.0.2"), ("-6", "fd00:50::2")] {
        let trace = sh::output(&mut sh::in_ns(&gen, "tracepath", &[family, "-n", "-m", "5", far])).unwrap();
        let trace = String::from_utf8_lossy(&trace.stdout);
        assert!(trace.contains("pmtu 1300"), "tracepath {family} learns the path MTU from cowroute:\n{trace}");
    }

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
        let n = unsafe {
            libc::sendto(
                fd,
                msg.as_ptr() as *const _,
                msg.len(),
                0,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
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
    // The same for IPv6, a destination of its own.
    let to = format!("[{}]:7960", lab::SINK_V6).parse().unwrap();
    traffic::udp_send(&gen, to, 300, 64, 1, Duration::from_micros(200)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s2 = slow_stats(&run);
    let delta6 = |k: &str| s2[k].as_u64().unwrap() - s1[k].as_u64().unwrap();
    assert!((6..=7).contains(&delta6("icmp_sent")), "IPv6: a burst of 6: {s2}");
    assert_eq!(delta6("icmp_sent") + delta6("rate_limited") + delta6("socket_dropped"), 300, "{s2}");

    // An ICMP error with TTL 1 gets no error back; an echo request does.
    std::thread::sleep(Duration::from_secs(1));
    let refused = slow_stats(&run)["refused"].as_u64().unwrap();
    send_icmp_ttl1(&gen, lab::SINK_V4, 3, 3);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(slow_stats(&run)["refused"].as_u64().unwrap(), refused + 1, "no error about an error");
    let out = ping(&gen, &["-n", "-c", "1", "-W", "2", "-t", "1", lab::SINK2_V4]);
    assert!(out.contains("Time to live exceeded"), "the agent answers on: {out}");
}

/// Polls `pred` for up to 3 s.
fn eventually(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pred() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn learned(run: &LabRun, dest: &str) -> Option<(u64, u64)> {
    let rows: serde_json::Value = serde_json::from_str(&run.cowroute(&["metrics", "show", dest, "--json"])).ok()?;
    let row = &rows[0];
    let learned = row["overrides"].as_array()?.iter().all(|o| o["source"] == "learned") && row["reference"].as_str()?.starts_with("rw:");
    learned.then(|| (row["values"]["mtu"].as_u64().unwrap_or(0), row["values"]["advmss"].as_u64().unwrap_or(0)))
}

/// The MSS option of the first SYN to `port` that far's interface sees,
/// while `connect` runs.
fn syn_mss_at_far(far: &str, far_if: &str, port: u16, connect: impl FnOnce()) -> String {
    // The first packet to the port is the SYN (pcap's tcp[] offsets are IPv4's only).
    let filter = format!("tcp dst port {port}");
    let mut dump = sh::in_ns(far, "tcpdump", &["-l", "-nn", "-c", "1", "-i", far_if, &filter]);
    dump.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = dump.spawn().unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0, "tcpdump did not start");
    }
    connect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    out
}

/// A fourth namespace behind a 1300-byte link: sink (a kernel router) sends
/// Fragmentation Needed / Packet Too Big to gen through rtr; cowroute learns
/// the far host's path MTU from it, answers later oversized packets itself,
/// and clamps the MSS of SYNs to it.
#[test]
fn path_mtu_is_learned_from_errors_passing_through_and_clamps_syns() {
    let run = LabRun::start_custom(&lab_tag('u'), "generic", &[], &|lab| lab.hosts_config());
    let (far, far_if) = run.lab.add_far_network(1300).unwrap();
    let (gen, rtr) = (run.lab.gen.clone(), run.lab.rtr.clone());
    sh::ip(&["-n", &rtr, "route", "add", "10.7.0.0/24", "via", lab::SINK_V4]).unwrap();
    sh::ip(&["-n", &rtr, "-6", "route", "add", "fd00:7::/64", "via", lab::SINK_V6]).unwrap();
    wait_route(&run, "10.7.0.0/24");
    wait_route(&run, "fd00:7::/64");

    for (family, far_addr, sink_net, rtr_addr, text, advmss) in [
        ("-4", lab::FAR_V4, "10.2.0.", lab::RTR_GEN_V4, "Frag needed and DF set (mtu = 1300)", 1260),
        ("-6", lab::FAR_V6, "fd00:2::", lab::RTR_GEN_V6, "Packet too big: mtu=1300", 1240),
    ] {
        // The first error comes from sink (one of its addresses towards rtr),
        // and passes through rtr ...
        let out = ping(&gen, &[family, "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1400", far_addr]);
        let from_sink = out.lines().any(|l| l.starts_with(&format!("From {sink_net}")) && l.ends_with(text));
        assert!(from_sink, "{out}");
        // ... which learns: a private copy with the MTU and an MSS to match.
        eventually(&format!("{far_addr}'s path MTU learned"), || learned(&run, far_addr) == Some((1300, advmss)));
        // Later oversized packets get the error from rtr at once.
        sh::ip(&["-n", &gen, family, "route", "flush", "cache"]).unwrap();
        let out = ping(&gen, &[family, "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1400", far_addr]);
        assert!(out.contains(&format!("From {rtr_addr} icmp_seq=1 {text}")), "{out}");
    }
    assert!(run.control().call(&Request::Stats).unwrap()["pmtu"]["learned"].as_u64().unwrap() >= 2);

    // A SYN from gen (its own PMTU cache flushed, so it offers 1460 / 1440)
    // reaches far with the MSS cowroute clamped it to.
    for (family, to, port, mss) in
        [("-4", format!("{}:7979", lab::FAR_V4), 7979, 1260), ("-6", format!("[{}]:7980", lab::FAR_V6), 7980, 1240)]
    {
        sh::ip(&["-n", &gen, family, "route", "flush", "cache"]).unwrap();
        let any = if family == "-4" { format!("0.0.0.0:{port}") } else { format!("[::]:{port}") };
        let listener = traffic::in_netns(&far, move || Ok(std::net::TcpListener::bind(any)?)).unwrap();
        let dump = syn_mss_at_far(&far, &far_if, port, || {
            let to: std::net::SocketAddr = to.parse().unwrap();
            traffic::in_netns(&gen, move || Ok(std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3))?)).unwrap();
        });
        drop(listener);
        assert!(dump.contains(&format!("mss {mss}")), "far sees the clamped MSS: {dump}");
    }
}

/// A destination on a connected subnet whose neighbour rtr has never
/// resolved: its first packets wait in the agent while the kernel resolves
/// it (asked over netlink), then leave; none is lost, though kernel
/// forwarding is off. A neighbour that never answers: its packets wait,
/// then time out, and the queue's bound holds; all counted.
#[test]
fn packets_wait_for_an_unresolved_neighbour_and_leave_when_it_resolves() {
    let run = LabRun::start_custom(&lab_tag('w'), "generic", &[], &|lab| lab.hosts_config());
    let (gen, sink, s0) = (run.lab.gen.clone(), run.lab.sink.clone(), run.lab.sink_if.clone());
    sh::ip(&["-n", &sink, "addr", "add", "10.2.0.9/24", "dev", &s0]).unwrap();
    sh::ip(&["-n", &sink, "-6", "addr", "add", "fd00:2::9/64", "dev", &s0, "nodad"]).unwrap();
    let queue = |run: &LabRun| run.control().call(&Request::Stats).unwrap()["neighbour_queue"].clone();
    for dst in ["10.2.0.9:7990", "[fd00:2::9]:7990"] {
        let to: std::net::SocketAddr = dst.parse().unwrap();
        let any: std::net::SocketAddr = if to.is_ipv4() { "0.0.0.0:7990" } else { "[::]:7990" }.parse().unwrap();
        let sock = traffic::UdpSink::bind(&sink, any).unwrap();
        traffic::udp_send(&gen, to, 5, 100, 64, Duration::ZERO).unwrap();
        let got = sock.receive(5, Duration::from_secs(3)).unwrap();
        assert_eq!(got.len(), 5, "{dst}: every packet arrived, the first ones after waiting: {}", queue(&run));
        assert!(got.iter().all(|r| r.ttl == 63), "{dst}: one hop taken off: {got:?}");
    }
    let q = queue(&run);
    assert!(q["held"].as_u64().unwrap() >= 2 && q["released"] == q["held"], "the first of each waited and left: {q}");

    // Nobody at 10.2.0.99: 20 packets, 16 wait (the bound), 4 overflow; after 3 s the 16 time out.
    traffic::udp_send(&gen, "10.2.0.99:7991".parse().unwrap(), 20, 100, 64, Duration::ZERO).unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    let q2 = queue(&run);
    let delta = |k: &str| q2[k].as_u64().unwrap() - q[k].as_u64().unwrap();
    assert_eq!((delta("held"), delta("overflowed"), delta("timed_out")), (16, 4, 16), "{q2}");
    assert_eq!(q2["waiting"], 0, "{q2}");
}

/// Towards destinations on a connected route whose neighbours rtr has not
/// resolved, the rules run in the kernel's order, TTL, then MTU, then the
/// neighbour: a TTL-1 packet gets Time Exceeded and a too-big DF packet
/// Fragmentation Needed at once (nothing waits), and a SYN that waits for
/// its neighbour leaves with its MSS clamped to the route's advmss.
#[test]
fn unresolved_neighbours_come_after_ttl_and_mtu_and_held_syns_are_clamped() {
    let run = LabRun::start_custom(&lab_tag('o'), "generic", &[], &|lab| lab.hosts_config());
    let (gen, rtr, sink) = (run.lab.gen.clone(), run.lab.rtr.clone(), run.lab.sink.clone());
    let (r1, s0) = (run.lab.rtr_sink_if.clone(), run.lab.sink_if.clone());
    sh::ip(&["-n", &rtr, "route", "add", "10.2.0.64/26", "dev", &r1, "mtu", "1300", "advmss", "1200"]).unwrap();
    sh::ip(&["-n", &rtr, "-6", "route", "add", "fd00:2::40/122", "dev", &r1, "mtu", "1300"]).unwrap();
    wait_route(&run, "10.2.0.64/26");
    wait_route(&run, "fd00:2::40/122");
    let queue = |run: &LabRun| run.control().call(&Request::Stats).unwrap()["neighbour_queue"].clone();
    let q0 = queue(&run);

    // TTL 1 (and too big as well: TTL comes first): Time Exceeded from rtr.
    let te = icmp_error_about(&gen, "10.2.0.71", 1, 1400).expect("Time Exceeded from rtr");
    assert_eq!(&te[12..16], &lab::RTR_GEN_V4.parse::<std::net::Ipv4Addr>().unwrap().octets(), "from rtr's address towards gen");
    assert_eq!((te[9], te[20], te[21]), (1, 11, 0), "ICMP Time Exceeded, TTL exceeded in transit");
    assert!(common::checksum::verifies(&te[..20]) && common::checksum::verifies(&te[20..]), "IP and ICMP checksums");
    assert_eq!((te[28 + 8], u16::from_be_bytes([te[28 + 6], te[29 + 6]]) & 0x4000), (1, 0x4000), "quotes the packet as it came");
    // Too big with DF towards the route's 1300: Fragmentation Needed with it.
    let fneed = icmp_error_about(&gen, "10.2.0.72", 64, 1400).expect("Frag Needed from rtr");
    assert_eq!((fneed[20], fneed[21], u16::from_be_bytes([fneed[26], fneed[27]])), (3, 4, 1300), "Frag Needed, next-hop MTU 1300");
    assert!(common::checksum::verifies(&fneed[20..]), "ICMP checksum");
    assert_eq!(u16::from_be_bytes([fneed[28 + 2], fneed[28 + 3]]), 1400, "quotes the 1400-byte packet");
    let out = ping(&gen, &["-6", "-n", "-c", "1", "-W", "2", "-t", "1", "fd00:2::47"]);
    assert!(out.contains(&format!("From {} icmp_seq=1 Time exceeded: Hop limit", lab::RTR_GEN_V6)), "{out}");
    let out = ping(&gen, &["-6", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1400", "fd00:2::48"]);
    assert!(out.contains(&format!("From {} icmp_seq=1 Packet too big: mtu=1300", lab::RTR_GEN_V6)), "{out}");
    assert_eq!(queue(&run)["held"], q0["held"], "none of them waited for a neighbour: {}", queue(&run));

    // A SYN to a host rtr has not resolved waits, then leaves clamped to 1200.
    sh::ip(&["-n", &sink, "addr", "add", "10.2.0.70/24", "dev", &s0]).unwrap();
    let listener = traffic::in_netns(&sink, || Ok(std::net::TcpListener::bind("10.2.0.70:7981")?)).unwrap();
    let dump = syn_mss_at_far(&sink, &s0, 7981, || {
        traffic::in_netns(&gen, || Ok(std::net::TcpStream::connect_timeout(&"10.2.0.70:7981".parse()?, Duration::from_secs(3))?)).unwrap();
    });
    drop(listener);
    assert!(dump.contains("mss 1200"), "sink sees the SYN clamped to the route's advmss: {dump}");
    let q = queue(&run);
    assert!(q["held"].as_u64().unwrap() > q0["held"].as_u64().unwrap(), "the SYN waited: {q}");
    assert!(q["mss_clamped"].as_u64().unwrap() >= 1 && q["forwarded"].as_u64().unwrap() >= 1, "{q}");
}
