//! IPv4 options, IPv6 extension headers and DF-clear fragmentation through
//! the AF_XDP slow path, with Linux as the oracle: the same raw frames from
//! gen once through rtr's kernel forwarding (no agent), once through
//! cowroute with kernel forwarding off; what sink receives (and the ICMP
//! errors gen gets from rtr) compared byte for byte.

use cowroute_tests::*;
use std::time::Duration;
use xtask::{lab, sh, traffic};

const MARK: &[u8; 8] = b"COWOPT\x00\x00";

fn v4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// A UDP payload carrying the marker and case `n`, `len` bytes long.
fn payload(n: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0, 9, 0x30, 0x39, 0, 0, 0, 0];
    p.extend_from_slice(MARK);
    p[8 + 7] = n;
    p.extend((0..len.saturating_sub(16)).map(|i| i as u8));
    let l = p.len() as u16;
    p[4..6].copy_from_slice(&l.to_be_bytes());
    p
}

/// IPv4 UDP to `dst` with `opts` (a multiple of 4 bytes), `frag` flags.
fn ip4(dst: [u8; 4], opts: &[u8], frag: u16, n: u8, len: usize) -> Vec<u8> {
    let ihl = 20 + opts.len();
    let mut ip = vec![(0x40 | (ihl / 4)) as u8, 0, 0, 0, 0x4c, n, 0, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&v4(lab::GEN_V4));
    ip.extend_from_slice(&dst);
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(opts);
    ip.extend_from_slice(&payload(n, len));
    let tot = ip.len() as u16;
    ip[2..4].copy_from_slice(&tot.to_be_bytes());
    let c = common::checksum::checksum(&ip[..ihl]).to_be_bytes();
    ip[10..12].copy_from_slice(&c);
    ip
}

/// IPv6 to sink with extension header `ext` (next header `first`) before UDP.
fn ip6(first: u8, ext: &[u8], n: u8) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0, 0, 0, first, 64];
    ip.extend_from_slice(&v6(lab::GEN_V6));
    ip.extend_from_slice(&v6(lab::SINK_V6));
    ip.extend_from_slice(ext);
    ip.extend_from_slice(&payload(n, 32));
    let len = (ip.len() - 40) as u16;
    ip[4..6].copy_from_slice(&len.to_be_bytes());
    ip
}

/// The frames, one per case: (case, frame).
fn cases(gen_mac: [u8; 6], rtr_mac: [u8; 6]) -> Vec<(u8, Vec<u8>)> {
    let sink = v4(lab::SINK_V4);
    let e4 = |ip: Vec<u8>| eth(rtr_mac, gen_mac, None, 0x0800, &ip);
    let e6 = |ip: Vec<u8>| eth(rtr_mac, gen_mac, None, 0x86dd, &ip);
    vec![
        (1, e4(ip4(sink, &[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1], 0x4000, 1, 64))),
        (2, e4(ip4(sink, &[68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0x4000, 2, 64))),
        (3, e4(ip4(sink, &[148, 4, 0, 0], 0x4000, 3, 64))),
        (4, e4(ip4(sink, &[1, 1, 0, 0], 0x4000, 4, 64))),
        (5, e4(ip4(sink, &[131, 7, 4, 10, 2, 0, 3, 0], 0x4000, 5, 64))),
        (6, e4(ip4(sink, &[7, 7, 3, 0, 0, 0, 0, 0], 0x4000, 6, 64))),
        (7, e4(ip4(v4("10.50.0.1"), &[], 0, 7, 1380))),
        (8, e4(ip4(v4("10.50.0.1"), &[148, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 0], 0, 8, 1368))),
        (9, e6(ip6(0, &[17, 0, 5, 2, 0, 0, 1, 0], 9))),
        (10, e6(ip6(0, &[17, 0, 0x9e, 2, 0, 0, 1, 0], 10))),
        (11, e6(ip6(60, &[17, 0, 1, 4, 0, 0, 0, 0], 11))),
        (12, e6(ip6(43, &[17, 0, 4, 0, 0, 0, 0, 0], 12))),
        (13, e6(ip6(44, &[17, 0, 0, 0, 0, 0, 0, 42], 13))),
    ]
}

/// Frames arriving on `dev` in `ns` (not sent by it) that carry the marker,
/// for `secs`, while `during` runs.
fn capture(ns: &str, dev: &str, secs: u64, during: impl FnOnce()) -> Vec<Vec<u8>> {
    let (ns2, dev2) = (ns.to_string(), dev.to_string());
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        traffic::in_netns(&ns2, move || {
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32) };
            anyhow::ensure!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
            let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
            let name = std::ffi::CString::new(dev2).unwrap();
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sa.sll_ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
            let r = unsafe { libc::bind(raw, &sa as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_ll>() as u32) };
            anyhow::ensure!(r == 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
            unsafe { libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const libc::c_void, 16) };
            ready_tx.send(()).unwrap();
            let end = std::time::Instant::now() + Duration::from_secs(secs);
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            while std::time::Instant::now() < end {
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut fl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = unsafe {
                    libc::recvfrom(raw, buf.as_mut_ptr() as *mut _, buf.len(), 0, &mut from as *mut _ as *mut libc::sockaddr, &mut fl)
                };
                if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let f = &buf[..n as usize];
                if f.windows(6).any(|w| w == &MARK[..6]) || is_fragment_of_ours(f) {
                    got.push(f.to_vec());
                }
            }
            Ok(got)
        })
        .unwrap()
    });
    ready.recv().unwrap();
    during();
    t.join().unwrap()
}

/// A later IPv4 fragment of case 7 or 8 (no marker in it): ID 0x4c07 / 0x4c08.
fn is_fragment_of_ours(f: &[u8]) -> bool {
    f.len() > 34 && f[12..14] == [8, 0] && f[18] == 0x4c && matches!(f[19], 7 | 8)
}

fn send(ns: &str, dev: &str, frames: Vec<Vec<u8>>) {
    let dev = dev.to_string();
    traffic::in_netns(ns, move || {
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        anyhow::ensure!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let name = std::ffi::CString::new(dev).unwrap();
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        for f in frames {
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_ifindex = ifindex;
            sa.sll_halen = 6;
            sa.sll_addr[..6].copy_from_slice(&f[..6]);
            let n = unsafe {
                libc::sendto(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    f.as_ptr() as *const _,
                    f.len(),
                    0,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            anyhow::ensure!(n == f.len() as isize, "sendto: {}", std::io::Error::last_os_error());
            std::thread::sleep(Duration::from_millis(150));
        }
        Ok(())
    })
    .unwrap();
}

/// What sink and gen received, per case: sink's frames, gen's ICMP errors
/// from rtr (the ICMP part only: the kernel's IP ID and TTL are its own).
#[derive(Debug, PartialEq)]
struct Seen {
    sink: Vec<(u8, Vec<u8>)>,
    errors: Vec<Vec<u8>>,
}

fn run_cases(l: &lab::Lab, frames: &[(u8, Vec<u8>)]) -> Seen {
    let frames: Vec<Vec<u8>> = frames.iter().map(|(_, f)| f.clone()).collect();
    let mut at_gen = Vec::new();
    let at_sink = capture(&l.sink, &l.sink_if, 4, || {
        at_gen = capture(&l.gen, &l.gen_if, 3, || send(&l.gen, &l.gen_if, frames));
    });
    let mut sink: Vec<(u8, Vec<u8>)> = at_sink.into_iter().map(|f| (case_of(&f), masked(f))).collect();
    sink.sort();
    let rtr4 = v4(lab::RTR_GEN_V4);
    let rtr6 = v6(lab::RTR_GEN_V6);
    let mut errors: Vec<Vec<u8>> = at_gen
        .into_iter()
        .filter_map(|f| match (f[12], f[13]) {
            (8, 0) if f[26..30] == rtr4 => Some(f[14 + (f[14] & 15) as usize * 4..].to_vec()),
            (0x86, 0xdd) if f[22..38] == rtr6 => Some(f[54..].to_vec()),
            _ => None,
        })
        .collect();
    errors.sort();
    Seen { sink, errors }
}

/// The case a captured frame belongs to (its IP ID, or the marker's last byte).
fn case_of(f: &[u8]) -> u8 {
    if f[12..14] == [8, 0] {
        f[19]
    } else {
        let at = f.windows(6).position(|w| w == &MARK[..6]).unwrap();
        f[at + 7]
    }
}

/// The timestamp case's time field and header checksum zeroed (each router stamps its own time).
fn masked(mut f: Vec<u8>) -> Vec<u8> {
    if f[12..14] == [8, 0] && f[19] == 2 && f[34] == 68 {
        f[38..42].fill(0);
        f[24..26].fill(0);
    }
    f
}

#[test]
fn options_extension_headers_and_fragments_leave_as_linux_forwards_them() {
    require_root();
    let l = lab::Lab::up(&lab_tag('o')).expect("lab up");
    let (gen_mac, rtr_mac) = (mac_of(&l.gen, &l.gen_if), mac_of(&l.rtr, &l.rtr_gen_if));
    let frames = cases(gen_mac, rtr_mac);
    sh::ip(&["-n", &l.rtr, "route", "add", "10.50.0.0/16", "via", lab::SINK_V4, "mtu", "1300"]).unwrap();
    // Both neighbours known before the first frame, in both runs.
    let _ = traffic::ping(&l.gen, lab::SINK_V4, 1, "0.2");
    let _ = sh::run(&mut sh::in_ns(&l.gen, "ping", &["-6", "-c", "1", "-W", "2", lab::SINK_V6]));

    // Something listens on the cases' port: sink sends no port unreachable
    // (whose IP header would echo the options, and pass rtr too).
    let _listener = traffic::UdpSink::bind(&l.sink, "[::]:12345".parse().unwrap()).unwrap();
    sh::run(&mut sh::in_ns(&l.rtr, "sysctl", &["-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])).unwrap();
    let linux = run_cases(&l, &frames);
    sh::run(&mut sh::in_ns(&l.rtr, "sysctl", &["-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"])).unwrap();

    let run = LabRun::start_on(l, "generic", &["--icmp-ratelimit-ms", "0"], &|lab| lab.hosts_config());
    std::thread::sleep(Duration::from_millis(500));
    let ours = run_cases(&run.lab, &frames);

    // The oracle did what the cases are about.
    let count = |s: &Seen, c: u8| s.sink.iter().filter(|(n, _)| *n == c).count();
    assert_eq!([1, 2, 3, 4].map(|c| count(&linux, c)), [1; 4], "options forwarded by Linux: {:?}", linux.sink);
    assert_eq!((count(&linux, 5), count(&linux, 6), count(&linux, 10)), (0, 0, 0), "refused by Linux");
    assert_eq!((count(&linux, 7), count(&linux, 8)), (2, 2), "fragmented by Linux");
    assert_eq!([9, 11, 12, 13].map(|c| count(&linux, c)), [1; 4], "IPv6 extension headers forwarded by Linux");
    for c in 1..=13u8 {
        let a: Vec<&Vec<u8>> = linux.sink.iter().filter(|(n, _)| *n == c).map(|(_, f)| f).collect();
        let b: Vec<&Vec<u8>> = ours.sink.iter().filter(|(n, _)| *n == c).map(|(_, f)| f).collect();
        assert_eq!(a, b, "case {c}: what sink received, Linux vs cowroute");
    }
    assert_eq!(linux.errors.len(), 2, "Linux's parameter problems: {:?}", linux.errors);
    assert_eq!(ours.errors, linux.errors, "the ICMP errors gen received, Linux vs cowroute");

    let t = run.control().call(&cowroute::operator::control::Request::Stats).unwrap()["slow_path"]["transit"].clone();
    assert_eq!(t["frames"], 10, "{t}");
    assert_eq!(t["options_forwarded"], 5, "{t}");
    assert_eq!(t["hop_by_hop_forwarded"], 1, "{t}");
    assert_eq!(t["source_routes_refused"], 1, "{t}");
    assert_eq!(t["parameter_problems"], 2, "{t}");
    assert_eq!((t["fragmented"].as_u64(), t["fragments"].as_u64()), (Some(2), Some(4)), "{t}");
}
