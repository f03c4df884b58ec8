//! `ip rule` in the fast path, with the kernel as the oracle: rtr gets
//! source-, destination-, TOS-, port- and interface-based rules (goto, not,
//! suppress_prefixlength, blackhole, prohibit, unreachable, lookups of
//! table 100, held apart, with a default, a gateway route and error
//! routes, and `iif` of the second link looking up table 200); thousands of
//! generated frames from gen, and in over the second link, must leave by the link
//! `ip route get ADDR from SRC iif DEV ...` names, or not at all where it
//! answers with an error. Then rules and table 100's routes go and come
//! while the agent runs, and the comparison is made again. IPv6 runs the
//! same rules and routes, each IPv4 prefix `a.b.c.d/n` as `fdaa:bbcc::/8+n`
//! (and `ip -6 route get` is its oracle): there `suppress_prefixlength`
//! ignores error routes too.

use cowroute_tests::conformance::{frames, runner};
use cowroute_tests::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};
use xtask::{lab, sh};

/// Which family a run tests; IPv6 maps each IPv4 address and prefix of the
/// probes, rules and routes into `fd00::/8` (`a.b.c.d` as `fdaa:bbcc::dd`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn addr(self, a: [u8; 4]) -> IpAddr {
        match self {
            Family::V4 => Ipv4Addr::from(a).into(),
            Family::V6 => {
                let mut b = [0u8; 16];
                (b[0], b[1], b[2], b[3], b[15]) = (0xfd, a[0], a[1], a[2], a[3]);
                Ipv6Addr::from(b).into()
            }
        }
    }

    /// A rule's or route's words, each IPv4 address or prefix (the lab's
    /// gateways as their IPv6 twins) in this family.
    fn spec(self, spec: &str) -> String {
        if self == Family::V4 {
            return spec.to_string();
        }
        let word = |w: &str| -> String {
            for (v4, v6) in [(lab::SINK_V4, lab::SINK_V6), (lab::SINK_B_V4, lab::SINK_B_V6), (lab::GEN_V4, lab::GEN_V6)] {
                if w == v4 {
                    return v6.to_string();
                }
            }
            match w.split_once('/').map(|(a, n)| (a.parse::<Ipv4Addr>(), n.parse::<u8>())) {
                Some((Ok(a), Ok(n))) => format!("{}/{}", self.addr(a.octets()), 8 + n),
                _ => w.to_string(),
            }
        };
        spec.split_whitespace().map(word).collect::<Vec<_>>().join(" ")
    }

    fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

/// One generated frame and what it asks the rules (addresses IPv4-shaped,
/// mapped by the run's [`Family`]).
struct Probe {
    src: [u8; 4],
    dst: [u8; 4],
    tos: u8,
    dport: u16,
}

/// Where the kernel routes a probe: out of a link, or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Link(usize),
    Nowhere,
}

const SPORT: u16 = 40000;

/// Where probes enter rtr and where they may leave.
struct Path<'a> {
    /// The namespace and device they are sent from, and rtr's device
    /// they arrive on (`iif`).
    from: (&'a str, &'a str),
    iif: &'a str,
    /// rtr's devices they may leave by, as `ip route get` names them, and
    /// where each is captured.
    links: [&'a str; 2],
    captures: [(&'a str, &'a str); 2],
    /// The table held apart whose share is counted.
    table: u32,
}

fn probes(n: usize, seed: u64) -> Vec<Probe> {
    let mut rng = synthetic::Rng::new(seed);
    let sources: [[u8; 3]; 6] = [[10, 1, 5], [10, 1, 6], [10, 1, 7], [10, 1, 0], [10, 1, 9], [192, 0, 2]];
    (0..n)
        .map(|_| {
            let s = sources[(rng.next_u64() % sources.len() as u64) as usize];
            let r = rng.next_u64();
            let src = [s[0], s[1], s[2], 2 + (r % 250) as u8];
            let dst = [10, 8 + ((r >> 8) % 2) as u8, (r >> 16) as u8, 1 + ((r >> 24) % 250) as u8];
            let tos = [0u8, 0x10, 0x28][((r >> 32) % 3) as usize];
            let dport = [53u16, 80, 12345][((r >> 40) % 3) as usize];
            Probe { src, dst, tos, dport }
        })
        .collect()
}

/// `ip route get` for each probe, arriving on rtr's gen-side interface.
fn oracle(l: &lab::Lab, f: Family, path: &Path, probes: &[Probe]) -> (Vec<Way>, usize) {
    let mut via_table = 0;
    let ways = probes
        .iter()
        .map(|p| {
            let a = |b: [u8; 4]| f.addr(b).to_string();
            let args = [
                f.flag(),
                "-n",
                &l.rtr,
                "route",
                "get",
                &a(p.dst),
                "from",
                &a(p.src),
                "iif",
                path.iif,
                "tos",
                &format!("{:#x}", p.tos),
                "ipproto",
                "udp",
                "sport",
                &SPORT.to_string(),
                "dport",
                &p.dport.to_string(),
            ];
            let out = sh::output(&mut sh::cmd("ip", &args)).expect("ip route get");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if !out.status.success() {
                return Way::Nowhere;
            }
            if text.contains(&format!(" table {} ", path.table)) {
                via_table += 1;
            }
            let dev = text.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or_default().to_string();
            match path.links.iter().position(|l| *l == dev) {
                Some(i) => Way::Link(i),
                None => panic!("ip route get gave an unexpected answer: {text}"),
            }
        })
        .collect();
    (ways, via_table)
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A UDP frame from gen to rtr (`macs`: to, from), marked `seq`; `header`
/// sets its TOS or TTL (as an IPv4 header's: the IPv6 one takes them as
/// traffic class and hop limit); `dport` with source port [`SPORT`].
fn udp_frame(
    f: Family,
    macs: [[u8; 6]; 2],
    src: IpAddr,
    dst: IpAddr,
    seq: u32,
    header: impl Fn(&mut frames::Ip4),
    dport: Option<u16>,
) -> Vec<u8> {
    let (s, d) = (octets(src), octets(dst));
    let mut udp = frames::udp(&s, &d, seq, 24);
    if let Some(dport) = dport {
        udp[0..2].copy_from_slice(&SPORT.to_be_bytes());
        udp[2..4].copy_from_slice(&dport.to_be_bytes());
    }
    // No UDP checksum, valid for IPv4; mandatory in IPv6: again, over the ports as they are now.
    udp[6..8].fill(0);
    let mut ip4 = frames::Ip4::new([0; 4], [0; 4], seq as u16);
    header(&mut ip4);
    if f == Family::V6 {
        let c = !common::checksum::fold(l4_sum(&s, &d, 17, &udp));
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        let mut ip = frames::Ip6::new(s.try_into().unwrap(), d.try_into().unwrap(), seq);
        (ip.tclass, ip.hop_limit) = (ip4.tos, ip4.ttl);
        return eth(macs[0], macs[1], None, 0x86dd, &ip.packet(17, &udp));
    }
    (ip4.src, ip4.dst) = (s.try_into().unwrap(), d.try_into().unwrap());
    eth(macs[0], macs[1], None, 0x0800, &ip4.packet(&udp))
}

/// Sends every probe along `path`; returns where each arrived.
fn observe(l: &lab::Lab, f: Family, path: &Path, probes: &[Probe]) -> Vec<Way> {
    let macs = [mac_of(&l.rtr, path.iif), mac_of(path.from.0, path.from.1)];
    let frames: Vec<Vec<u8>> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| udp_frame(f, macs, f.addr(p.src), f.addr(p.dst), i as u32, |ip| ip.tos = p.tos, Some(p.dport)))
        .collect();
    let captures = path.captures.map(|(ns, dev)| runner::Capture::start(ns, dev));
    runner::send(path.from.0, path.from.1, frames, 4000, &|_| {});
    std::thread::sleep(Duration::from_millis(300));
    let mut ways = vec![Way::Nowhere; probes.len()];
    for (link, capture) in captures.into_iter().enumerate() {
        let (got, drops) = capture.finish();
        assert_eq!(drops, 0, "the capture on link {link} dropped frames");
        for f in got {
            let Some(at) = f.windows(4).position(|w| w == frames::MAGIC) else { continue };
            let seq = u32::from_be_bytes(f[at + 4..at + 8].try_into().unwrap()) as usize;
            if seq < ways.len() {
                assert_eq!(ways[seq], Way::Nowhere, "probe {seq} arrived twice");
                ways[seq] = Way::Link(link);
            }
        }
    }
    ways
}

/// `ip [-6] VERB SPEC` in rtr, SPEC in family `f`.
fn ip(l: &lab::Lab, f: Family, what: &str, verb: &str, spec: &str) {
    let spec = f.spec(spec);
    let mut args = vec![f.flag(), "-n", l.rtr.as_str(), what, verb];
    args.extend(spec.split_whitespace());
    sh::ip(&args).unwrap_or_else(|e| panic!("ip {what} {verb} {spec}: {e}"));
}

/// Waits until the agent's `show rules` holds `count` rules of family `f`.
fn rules_shown(run: &LabRun, f: Family, count: usize) -> Vec<serde_json::Value> {
    let family = if f == Family::V4 { "inet" } else { "inet6" };
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let rows: Vec<serde_json::Value> = serde_json::from_str(&run.cowroute(&["show", "rules", "--json"])).unwrap();
        let mine: Vec<serde_json::Value> = rows.into_iter().filter(|r| r["family"] == family).collect();
        if mine.len() == count {
            return mine;
        }
        assert!(Instant::now() < deadline, "the agent shows {} {family} rules, not {count}", mine.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn compare(run: &LabRun, f: Family, path: &Path, round: &str, probes: &[Probe]) {
    let (expected, via_table) = oracle(&run.lab, f, path, probes);
    let before = (run.counter("rule_kernel"), run.counter("forwarded"));
    let seen = observe(&run.lab, f, path, probes);
    let wrong: Vec<String> = (0..probes.len())
        .filter(|i| expected[*i] != seen[*i])
        .map(|i| {
            let p = &probes[i];
            let (src, dst) = (f.addr(p.src), f.addr(p.dst));
            format!("{src} -> {dst} tos {:#x} dport {}: kernel {:?}, cowroute {:?}", p.tos, p.dport, expected[i], seen[i])
        })
        .collect();
    assert!(wrong.is_empty(), "{round}: {} of {} probes differ from ip route get:\n{}", wrong.len(), probes.len(), wrong.join("\n"));
    let links_used = [0, 1].map(|k| expected.iter().filter(|w| **w == Way::Link(k)).count());
    let nowhere = expected.iter().filter(|w| **w == Way::Nowhere).count();
    let (kernel, forwarded) = (run.counter("rule_kernel") - before.0, run.counter("forwarded") - before.1);
    println!(
        "[policy] {round}: {} probes as ip route get says: {} by link 1, {} by link 2, {nowhere} nowhere; \
         {forwarded} forwarded by the fast path, {kernel} left to the kernel; {via_table} routed by table {}",
        probes.len(),
        links_used[0],
        links_used[1],
        path.table
    );
    assert!(links_used.iter().all(|n| *n > 0) && nowhere > 0 && via_table > 0, "{round}: the probes cover every outcome");
    // Every rule is the fast path's, table lookups included: none
    // goes to the kernel, and the fast path forwarded every probe that leaves.
    assert_eq!(kernel, 0, "{round}: frames left to the kernel");
    assert_eq!(forwarded as usize, links_used[0] + links_used[1], "{round}: frames the fast path forwarded");
}

#[test]
fn ip_rules_route_frames_where_ip_route_get_says() {
    rules_against_the_kernel(Family::V4, 'q');
}

#[test]
fn ipv6_rules_route_frames_where_ip_6_route_get_says() {
    rules_against_the_kernel(Family::V6, 'y');
}

fn rules_against_the_kernel(f: Family, tag: char) {
    require_root();
    let lab = lab::Lab::up(&lab_tag(tag)).expect("lab up");
    // The second link before the agent starts: it takes frames in on r2 too.
    let (r2, s1) = lab.add_second_link().unwrap();
    let on_r2 = |lab: &lab::Lab| {
        let r1 = format!("\"{}\"]", lab.rtr_sink_if);
        lab.hosts_config().replacen(&r1, &format!("\"{}\", \"{r2}\"]", lab.rtr_sink_if), 1)
    };
    let run = LabRun::start_on(lab, "generic", &[], &on_r2);
    let l = &run.lab;
    let links = [l.rtr_sink_if.as_str(), r2.as_str()];
    let sink_links = [l.sink_if.as_str(), s1.as_str()];
    // `ip route get ... iif` answers for a forwarding router; and what the
    // fast path leaves to the kernel (table 100) the kernel then forwards.
    for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        sh::run(&mut sh::cmd("ip", &["netns", "exec", &l.rtr, "sysctl", "-qw", sysctl])).unwrap();
    }
    for route in [
        format!("10.9.0.0/16 via {} dev {}", lab::SINK_V4, l.rtr_sink_if),
        format!("10.9.200.0/24 via {} dev {r2}", lab::SINK_B_V4),
        format!("10.8.0.0/16 via {} dev {r2}", lab::SINK_B_V4),
        format!("10.9.128.0/17 via {} dev {r2} table 100", lab::SINK_B_V4),
        format!("default via {} dev {} table 100", lab::SINK_V4, l.rtr_sink_if),
        "blackhole 10.9.192.0/20 table 100".to_string(),
        "unreachable 10.8.0.0/24 table 100".to_string(),
        // Table 200, for what arrives over the second link (from sink).
        format!("default via {} dev {} table 200", lab::GEN_V4, l.rtr_gen_if),
        format!("10.9.0.0/16 via {} dev {} table 200", lab::SINK_V4, l.rtr_sink_if),
        "prohibit 10.9.64.0/18 table 200".to_string(),
    ] {
        ip(l, f, "route", "add", &route);
    }
    // The gateways resolved before the rules: `not from 10.1.0.0/16
    // blackhole` leaves the router's own solicitations no route.
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.control().call(&cowroute::operator::control::Request::Stats).unwrap()["gateways_unresolved"] != 0 {
        if Instant::now() > deadline {
            let neigh = sh::output(&mut sh::cmd("ip", &["-n", &l.rtr, "-6", "neigh"])).unwrap();
            let routes = sh::output(&mut sh::cmd("ip", &["-n", &l.rtr, "-6", "route", "show", "table", "all"])).unwrap();
            panic!(
                "gateways unresolved: {}\n{}\n{}",
                run.cowroute(&["show", "nexthops"]),
                String::from_utf8_lossy(&neigh.stdout),
                String::from_utf8_lossy(&routes.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let rules = [
        format!("pref 40 iif {r2} lookup 200"),
        "pref 100 from 10.1.5.0/24 lookup 100 suppress_prefixlength 0".to_string(),
        "pref 150 from 10.1.9.0/24 lookup 100".to_string(),
        "pref 200 from 10.1.6.0/24 to 10.9.64.0/18 prohibit".to_string(),
        "pref 300 not from 10.1.0.0/16 blackhole".to_string(),
        "pref 400 to 10.8.0.0/16 tos 0x10 unreachable".to_string(),
        "pref 500 from 10.1.7.0/24 goto 700".to_string(),
        "pref 600 lookup main suppress_prefixlength 16".to_string(),
        "pref 650 to 10.9.0.0/17 blackhole".to_string(),
        format!("pref 700 iif {} ipproto udp dport 53 prohibit", l.rtr_gen_if),
    ];
    for r in &rules {
        ip(l, f, "rule", "add", r);
    }
    // IPv6 starts with two rules (local, main), IPv4 with three (and default).
    let defaults = if f == Family::V4 { 3 } else { 2 };
    let shown = rules_shown(&run, f, defaults + rules.len());
    let carried = |pref: u64| shown.iter().find(|r| r["priority"] == pref).map(|r| r["carried"].as_str().unwrap().to_string());
    assert_eq!(carried(0).as_deref(), Some("local_entries"));
    for pref in [40, 100, 150, 200, 300, 400, 500, 600, 650, 700, 32766] {
        assert_eq!(carried(pref).as_deref(), Some("fast_path"), "rule {pref}: {shown:?}");
    }
    if f == Family::V4 {
        assert_eq!(carried(32767).as_deref(), Some("no_op"), "table default is empty");
    }
    // `show routes --table`: main's routes, the local table's entries,
    // table 100's as held apart; a name that is no table is refused.
    let table = |t: &str| -> Vec<(String, String)> {
        let rows: Vec<serde_json::Value> = serde_json::from_str(&run.cowroute(&["show", "routes", "--table", t, "--json"])).unwrap();
        rows.iter().map(|r| (r["prefix"].as_str().unwrap().to_string(), r["kind"].as_str().unwrap().to_string())).collect()
    };
    let prefixes = |t: &str| table(t).into_iter().map(|(p, _)| p).collect::<Vec<_>>();
    let a = |v4: &str| f.spec(v4);
    let (main, local) = (prefixes("main"), prefixes("local"));
    let own = if f == Family::V4 { format!("{}/32", lab::RTR_GEN_V4) } else { format!("{}/128", lab::RTR_GEN_V6) };
    assert!(main.contains(&a("10.9.200.0/24")) && !main.contains(&own), "{main:?}");
    assert!(local.contains(&own) && !local.contains(&a("10.9.0.0/16")), "{local:?}");
    let t100 = table("100");
    let kinds = |k: &str| t100.iter().filter(|(_, kind)| kind == k).map(|(p, _)| p.clone()).collect::<Vec<_>>();
    let default = if f == Family::V4 { "0.0.0.0/0" } else { "::/0" };
    assert_eq!(kinds("unicast"), [default.to_string(), a("10.9.128.0/17")], "{t100:?}");
    assert_eq!((kinds("blackhole"), kinds("unreachable")), (vec![a("10.9.192.0/20")], vec![a("10.8.0.0/24")]), "{t100:?}");
    let inside = f.addr([10, 9, 130, 7]).to_string();
    let one: Vec<serde_json::Value> =
        serde_json::from_str(&run.cowroute(&["show", "routes", &inside, "--table", "100", "--json"])).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["prefix"].as_str(), Some(a("10.9.128.0/17").as_str()), "table 100's longest match: {one:?}");
    let refused = run.cowroute_output(&["show", "routes", "--table", "blue"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("--table blue: not a table"), "{err}");

    let probes = probes(3000, 0x5eed);
    let name = if f == Family::V4 { "IPv4" } else { "IPv6" };
    // From gen (to sink's two links), and in over the second link from sink
    // (`iif r2 lookup 200`: to sink's first link or back to gen).
    let from_gen = Path {
        from: (&l.gen, &l.gen_if),
        iif: &l.rtr_gen_if,
        links,
        captures: [(&l.sink, sink_links[0]), (&l.sink, sink_links[1])],
        table: 100,
    };
    let from_r2 = Path {
        from: (&l.sink, &s1),
        iif: &r2,
        links: [&l.rtr_sink_if, &l.rtr_gen_if],
        captures: [(&l.sink, &l.sink_if), (&l.gen, &l.gen_if)],
        table: 200,
    };
    compare(&run, f, &from_gen, &format!("{name}, all rules"), &probes);
    compare(&run, f, &from_r2, &format!("{name}, all rules, in by the second link"), &probes[..1000]);

    // Rules go and come while the agent runs: the fast path follows.
    ip(l, f, "rule", "del", "pref 300 not from 10.1.0.0/16 blackhole");
    ip(l, f, "rule", "del", "pref 600 lookup main suppress_prefixlength 16");
    ip(l, f, "rule", "add", "pref 250 from 192.0.2.0/24 to 10.9.0.0/16 prohibit");
    ip(l, f, "route", "del", "10.9.128.0/17 table 100");
    rules_shown(&run, f, defaults + rules.len() - 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    while table("100").iter().any(|(p, _)| *p == a("10.9.128.0/17")) {
        assert!(Instant::now() < deadline, "table 100's deleted route is still in the fast path");
        std::thread::sleep(Duration::from_millis(20));
    }
    compare(&run, f, &from_gen, &format!("{name}, after changes"), &probes);
    ip(l, f, "route", "del", "prohibit 10.9.64.0/18 table 200");
    ip(l, f, "route", "add", "blackhole 10.9.64.0/18 table 200");
    std::thread::sleep(Duration::from_millis(200));
    compare(&run, f, &from_r2, &format!("{name}, after changes, in by the second link"), &probes[..1000]);
    errors_follow_the_rules(&run, f, links, sink_links, defaults + rules.len() - 1 + 2);
}

/// Where the kernel sends its own packets to `to` (`ip route get` with no
/// source or ingress: an ICMP error's lookup).
fn output_way(l: &lab::Lab, f: Family, links: [&str; 3], to: IpAddr) -> Way {
    let out = sh::output(&mut sh::cmd("ip", &[f.flag(), "-n", &l.rtr, "route", "get", &to.to_string()])).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let dev = text.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or_default().to_string();
    match links.iter().position(|l| *l == dev) {
        Some(i) if out.status.success() && !text.starts_with("prohibit") => Way::Link(i),
        _ => Way::Nowhere,
    }
}

/// The ICMP errors the agent sends are routed through the rules as the
/// kernel's own packets are (from lo): Time Exceeded for hop-limit-1 probes
/// whose sources rules send to table 100 (out to sink), prohibit (none), or
/// leave to main (back to gen); where each arrives is where `ip route get`
/// says the kernel's would leave.
fn errors_follow_the_rules(run: &LabRun, f: Family, links: [&str; 2], sink_links: [&str; 2], rules_then: usize) {
    let l = &run.lab;
    ip(l, f, "rule", "add", "pref 50 to 10.1.5.0/24 lookup 100");
    ip(l, f, "rule", "add", "pref 60 to 10.1.6.0/24 prohibit");
    rules_shown(run, f, rules_then);
    // The last, gen itself: main's connected route.
    let gen: IpAddr = if f == Family::V4 { lab::GEN_V4 } else { lab::GEN_V6 }.parse().unwrap();
    let sources = [f.addr([10, 1, 5, 77]), f.addr([10, 1, 6, 77]), gen];
    let ways = [links[0], links[1], l.rtr_gen_if.as_str()];
    let expected: Vec<Way> = sources.iter().map(|s| output_way(l, f, ways, *s)).collect();
    assert_eq!(expected, [Way::Link(0), Way::Nowhere, Way::Link(2)], "the lab's rules route errors three ways");
    let macs = [mac_of(&l.rtr, &l.rtr_gen_if), mac_of(&l.gen, &l.gen_if)];
    let frames: Vec<Vec<u8>> =
        sources.iter().enumerate().map(|(i, s)| udp_frame(f, macs, *s, f.addr([10, 9, 130, 1]), i as u32, |ip| ip.ttl = 1, None)).collect();
    let captures = [(l.sink.as_str(), sink_links[0]), (l.sink.as_str(), sink_links[1]), (l.gen.as_str(), l.gen_if.as_str())]
        .map(|(ns, dev)| runner::Capture::start(ns, dev));
    runner::send(&l.gen, &l.gen_if, frames, 100, &|_| {});
    std::thread::sleep(Duration::from_millis(500));
    let mut seen = vec![Way::Nowhere; sources.len()];
    for (link, capture) in captures.into_iter().enumerate() {
        for fr in capture.finish().0 {
            // An ICMP Time Exceeded (ICMPv6 type 3) to one of the sources.
            let (is_error, to) = match f {
                Family::V4 => (fr.len() > 34 && fr[23] == 1 && fr[34] == 11, fr.get(30..34).map(|d| d.to_vec())),
                Family::V6 => (fr.len() > 54 && fr[20] == 58 && fr[54] == 3, fr.get(38..54).map(|d| d.to_vec())),
            };
            if let Some(i) = sources.iter().position(|s| is_error && to == Some(octets(*s))) {
                assert_eq!(seen[i], Way::Nowhere, "the error about probe {i} arrived twice");
                seen[i] = Way::Link(link);
            }
        }
    }
    assert_eq!(seen, expected, "where the agent's errors went, against where ip route get sends the kernel's");
    println!("[policy] {}: the agent's ICMP errors go where the rules send them: {seen:?}", if f == Family::V4 { "IPv4" } else { "IPv6" });
}
