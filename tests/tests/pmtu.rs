//! Path-MTU learning against forged reports: Fragmentation Needed sent
//! from sink's side through rtr to gen, crafted byte by byte on a raw
//! socket. Forgeries teach nothing and are counted by reason; a report that
//! holds together, for a flow that does pass rtr that way, is learned.

use cowroute::operator::control::Request;
use cowroute_tests::*;
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};
use xtask::{lab, sh, traffic};

fn v4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

/// A Fragmentation Needed from `reporter` to `src` about a DF datagram of
/// `quoted_len` bytes `src` -> `dst`, saying `mtu`: the quoted header and
/// 100 bytes of its payload. `corrupt`: the ICMP checksum off by one.
fn frag_needed(reporter: [u8; 4], src: [u8; 4], dst: [u8; 4], mtu: u16, quoted_len: usize, corrupt: bool) -> Vec<u8> {
    let mut quote = ipv4_udp(src, dst, 63, quoted_len);
    quote.truncate(128);
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&quote);
    let c = common::checksum::checksum(&icmp).wrapping_add(corrupt as u16);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_with(reporter, src, 64, 1, &icmp)
}

/// Sends `packet` (a whole IPv4 packet) from namespace `ns` on a raw socket.
fn send_raw(ns: &str, packet: Vec<u8>) {
    traffic::in_netns(ns, move || {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        anyhow::ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as u16;
        to.sin_addr.s_addr = u32::from_ne_bytes([packet[16], packet[17], packet[18], packet[19]]);
        let n = unsafe {
            libc::sendto(
                fd,
                packet.as_ptr() as *const libc::c_void,
                packet.len(),
                0,
                &to as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        let err = std::io::Error::last_os_error();
        unsafe { libc::close(fd) };
        anyhow::ensure!(n == packet.len() as isize, "sendto: {err}");
        Ok(())
    })
    .unwrap();
}

fn pmtu_stats(run: &LabRun) -> serde_json::Value {
    run.control().call(&Request::Stats).unwrap()["pmtu"].clone()
}

fn eventually(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pred() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `dest`'s MTU when it holds a learned private copy.
fn learned_mtu(run: &LabRun, dest: &str) -> Option<u64> {
    let rows: serde_json::Value = serde_json::from_str(&run.cowroute(&["metrics", "show", dest, "--json"])).ok()?;
    let row = &rows[0];
    let learned = row["overrides"].as_array()?.iter().any(|o| o["source"] == "learned");
    learned.then(|| row["values"]["mtu"].as_u64().unwrap_or(0))
}

#[test]
fn forged_frag_needed_from_the_sink_side_teaches_nothing_and_a_genuine_one_is_learned() {
    let run = LabRun::start_custom(&lab_tag('z'), "generic", &[], &|lab| lab.hosts_config());
    let (rtr, sink) = (run.lab.rtr.clone(), run.lab.sink.clone());
    // 10.7.0.0/24 lies beyond sink: gen's flows to it leave rtr towards sink.
    sh::ip(&["-n", &rtr, "route", "add", "10.7.0.0/24", "via", lab::SINK_V4]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !run.cowroute(&["show", "routes", "--json"]).contains("\"prefix\": \"10.7.0.0/24\"") {
        assert!(Instant::now() < deadline, "10.7.0.0/24 never reached the maps");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (reporter, gen) = (v4(lab::SINK_V4), v4(lab::GEN_V4));

    // A bad ICMP checksum; a destination on gen's own side (no flow to it
    // leaves towards sink); an MTU above the sink-side device's 1500.
    send_raw(&sink, frag_needed(reporter, gen, [10, 7, 0, 5], 1300, 1400, true));
    send_raw(&sink, frag_needed(reporter, gen, [10, 1, 0, 77], 1300, 1400, false));
    send_raw(&sink, frag_needed(reporter, gen, [10, 7, 0, 6], 2000, 3000, false));
    eventually("three forgeries counted", || {
        let s = pmtu_stats(&run);
        s["bad_checksum"] == 1 && s["not_forwarded"] == 1 && s["above_mtu"] == 1
    });
    let s = pmtu_stats(&run);
    assert_eq!((s["reports"].as_u64(), s["learned"].as_u64()), (Some(3), Some(0)), "{s}");
    for dest in ["10.7.0.5", "10.1.0.77", "10.7.0.6"] {
        assert_eq!(learned_mtu(&run, dest), None, "{dest} learned nothing");
    }
    let prom = run.cowroute(&["show", "stats"]);
    assert!(prom.contains("pmtu refused: ") && prom.contains("1 not_forwarded"), "{prom}");

    // The same report with its checksum right, for a flow that passes.
    send_raw(&sink, frag_needed(reporter, gen, [10, 7, 0, 5], 1300, 1400, false));
    eventually("10.7.0.5's path MTU learned", || learned_mtu(&run, "10.7.0.5") == Some(1300));
    assert_eq!(pmtu_stats(&run)["learned"], 1);
}
