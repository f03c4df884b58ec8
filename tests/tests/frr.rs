//! FRR as the route source: zebra and bgpd in rtr, an ExaBGP speaker in
//! sink over both rtr-sink links (eBGP, IPv4 and IPv6 sessions). zebra
//! installs the BGP routes through kernel nexthop objects; cowroute mirrors
//! them and forwards. 10,000 IPv4 /24s (one leg or the other, 100 over both),
//! 400 nested /26s through the other leg than their /24, 100 IPv6 /48s and
//! 10 nested /56s; then half withdrawn. Probes must reach the longest match's
//! next hop, with nexthop_compat_mode 0 and 1. Kernel forwarding is off in
//! rtr: what arrives, cowroute forwarded.

use cowroute_tests::*;
use ipnet::IpNet;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};
use xtask::{
    frr::{Daemon, ExaBgp, Frr, Session},
    lab, sh, traffic,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    A,
    B,
    Both,
}

/// What sink announces: prefix -> leg, and which of them are withdrawn later.
fn announcements() -> (BTreeMap<IpNet, Leg>, BTreeSet<IpNet>) {
    let (mut table, mut withdrawn) = (BTreeMap::new(), BTreeSet::new());
    let other = |l: Leg| if l == Leg::A { Leg::B } else { Leg::A };
    for i in 0u32..10_000 {
        let leg = if i % 100 == 0 {
            Leg::Both
        } else if i % 2 == 0 {
            Leg::A
        } else {
            Leg::B
        };
        let base: IpNet = format!("10.{}.{}.0/24", 128 + i / 256, i % 256).parse().unwrap();
        table.insert(base, leg);
        if i % 2 == 1 {
            withdrawn.insert(base);
        }
        if i % 25 == 0 {
            let nested: IpNet = format!("10.{}.{}.64/26", 128 + i / 256, i % 256).parse().unwrap();
            table.insert(nested, other(leg));
            if i % 50 == 0 {
                withdrawn.insert(nested);
            }
        }
    }
    for i in 0u32..100 {
        let leg = if i % 2 == 0 { Leg::A } else { Leg::B };
        let base: IpNet = format!("fd00:100:{i:x}::/48").parse().unwrap();
        table.insert(base, leg);
        if i % 2 == 1 {
            withdrawn.insert(base);
        }
        if i % 10 == 0 {
            let nested: IpNet = format!("fd00:100:{i:x}:100::/56").parse().unwrap();
            table.insert(nested, other(leg));
            if i % 20 == 0 {
                withdrawn.insert(nested);
            }
        }
    }
    (table, withdrawn)
}

/// ExaBGP API commands announcing (or withdrawing) `prefix` on its legs.
fn commands(verb: &str, prefix: &IpNet, leg: Leg) -> Vec<String> {
    let sessions: &[(&str, &str)] = match (prefix, leg) {
        (IpNet::V4(_), Leg::A) => &[(lab::RTR_SINK_V4, lab::SINK_V4)],
        (IpNet::V4(_), Leg::B) => &[(lab::RTR_SINK_B_V4, lab::SINK_B_V4)],
        (IpNet::V4(_), Leg::Both) => &[(lab::RTR_SINK_V4, lab::SINK_V4), (lab::RTR_SINK_B_V4, lab::SINK_B_V4)],
        (IpNet::V6(_), Leg::A) => &[(lab::RTR_SINK_V6, lab::SINK_V6)],
        (IpNet::V6(_), Leg::B) => &[(lab::RTR_SINK_B_V6, lab::SINK_B_V6)],
        (IpNet::V6(_), Leg::Both) => &[(lab::RTR_SINK_V6, lab::SINK_V6), (lab::RTR_SINK_B_V6, lab::SINK_B_V6)],
    };
    sessions.iter().map(|(peer, nh)| format!("neighbor {peer} {verb} route {prefix} next-hop {nh}")).collect()
}

/// The leg the longest match of `addr` in `table` names.
fn longest_match(table: &BTreeMap<IpNet, Leg>, addr: IpAddr) -> Option<Leg> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (0..=max).rev().find_map(|len| table.get(&IpNet::new(addr, len).ok()?.trunc()).copied())
}

/// Probe addresses: in every 37th /24 outside its /26, every nested /26,
/// every /48 and /56.
fn probes(table: &BTreeMap<IpNet, Leg>) -> Vec<IpAddr> {
    let mut v = Vec::new();
    for (i, p) in table.keys().enumerate() {
        let first = match p.addr() {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) + 1).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) + 1).into()),
        };
        if p.prefix_len() != 24 || i % 37 == 0 {
            v.push(first);
        }
    }
    v
}

fn ifindex(ns: &str, dev: &str) -> u32 {
    let v: serde_json::Value = serde_json::from_str(&sh::ip(&["-n", ns, "-j", "link", "show", "dev", dev]).unwrap()).unwrap();
    v[0]["ifindex"].as_u64().unwrap() as u32
}

/// BGP routes in rtr's kernel table, and in the fast path's maps.
fn bgp_prefixes(run: &LabRun) -> (BTreeSet<IpNet>, BTreeSet<IpNet>) {
    let mut kernel = BTreeSet::new();
    for family in ["-4", "-6"] {
        let out = sh::ip(&["-n", &run.lab.rtr, family, "-j", "route", "show", "proto", "bgp"]).unwrap();
        let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
        kernel.extend(rows.as_array().unwrap().iter().map(|r| r["dst"].as_str().unwrap().parse::<IpNet>().unwrap()));
    }
    let rows: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "routes", "--json"])).unwrap();
    let maps = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["flags"].as_str().unwrap().contains("host"))
        .map(|r| r["prefix"].as_str().unwrap().parse::<IpNet>().unwrap())
        .filter(|p| match p {
            IpNet::V4(v4) => v4.addr().octets()[0] == 10 && v4.addr().octets()[1] >= 128,
            IpNet::V6(v6) => v6.addr().segments()[..2] == [0xfd00, 0x100],
        })
        .collect();
    (kernel, maps)
}

/// Waits until the kernel holds exactly `want` BGP prefixes and the maps
/// hold what the kernel holds.
fn converge(run: &LabRun, want: &BTreeSet<IpNet>, frr: &Frr, exabgp: &ExaBgp, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let (kernel, maps) = bgp_prefixes(run);
        if &kernel == want && maps == kernel {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(60) {
            let missing: Vec<_> = want.difference(&maps).take(5).collect();
            let extra: Vec<_> = maps.difference(want).take(5).collect();
            panic!(
                "{what}: kernel {} / maps {} / wanted {} BGP prefixes; maps lack {missing:?}, have extra {extra:?}\nbgpd: {}\nexabgp: {}",
                kernel.len(),
                maps.len(),
                want.len(),
                frr.vtysh("show bgp summary").unwrap_or_default(),
                exabgp.output().chars().rev().take(3000).collect::<String>().chars().rev().collect::<String>()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends one datagram to each probe; checks each arrived on the leg of its
/// longest match in `table` (none when it has no match).
fn check_probes(run: &LabRun, table: &BTreeMap<IpNet, Leg>, probes: &[IpAddr], legs: (u32, u32), port: u16, what: &str) {
    let v4 = traffic::UdpSink::bind(&run.lab.sink, SocketAddr::new("0.0.0.0".parse().unwrap(), port)).unwrap();
    let v6 = traffic::UdpSink::bind(&run.lab.sink, SocketAddr::new("::".parse().unwrap(), port + 1)).unwrap();
    for p in probes {
        let to = SocketAddr::new(*p, if p.is_ipv4() { port } else { port + 1 });
        traffic::udp_send(&run.lab.gen, to, 1, 64, 64, Duration::ZERO).unwrap();
    }
    let expected: BTreeMap<IpAddr, Option<Leg>> = probes.iter().map(|p| (*p, longest_match(table, *p))).collect();
    let arriving = expected.values().filter(|l| l.is_some()).count();
    let mut got = v4.receive(arriving, Duration::from_secs(3)).unwrap();
    got.extend(v6.receive(arriving - got.len(), Duration::from_secs(3)).unwrap());
    // Stragglers that should not come.
    got.extend(v4.receive(1, Duration::from_millis(200)).unwrap());
    let arrived: BTreeMap<IpAddr, u32> = got.iter().map(|r| (r.dst.expect("destination"), r.ifindex)).collect();
    let mut wrong = Vec::new();
    for (p, leg) in &expected {
        let ok = match (leg, arrived.get(p)) {
            (None, None) => true,
            (Some(Leg::A), Some(i)) => *i == legs.0,
            (Some(Leg::B), Some(i)) => *i == legs.1,
            (Some(Leg::Both), Some(i)) => *i == legs.0 || *i == legs.1,
            _ => false,
        };
        if !ok {
            wrong.push(format!("{p}: wanted {leg:?}, arrived on {:?}", arrived.get(p)));
        }
    }
    assert!(wrong.is_empty(), "{what}: {} of {} probes wrong: {:?}", wrong.len(), probes.len(), &wrong[..wrong.len().min(10)]);
    eprintln!(
        "{what}: {} probes, {} delivered on the longest match's leg, {} without a route not delivered",
        probes.len(),
        arriving,
        probes.len() - arriving
    );
}

/// ExaBGP in sink, over both rtr-sink links (IPv4 and IPv6 sessions):
/// announces `table` at once, withdraws `withdrawn` on `go_on`.
fn speaker(sink: &str, dir: &std::path::Path, table: &BTreeMap<IpNet, Leg>, withdrawn: &BTreeSet<IpNet>) -> ExaBgp {
    let first: Vec<String> = table.iter().flat_map(|(p, l)| commands("announce", p, *l)).collect();
    let then: Vec<String> = withdrawn.iter().flat_map(|p| commands("withdraw", p, table[p])).collect();
    let sessions: Vec<Session> = [
        (lab::RTR_SINK_V4, lab::SINK_V4, false),
        (lab::RTR_SINK_B_V4, lab::SINK_B_V4, false),
        (lab::RTR_SINK_V6, lab::SINK_V6, true),
        (lab::RTR_SINK_B_V6, lab::SINK_B_V6, true),
    ]
    .map(|(peer, local, ipv6)| Session { peer: peer.into(), local: local.into(), ipv6 })
    .to_vec();
    ExaBgp::start(sink, dir, 65002, 65001, &sessions, &first, &then).unwrap()
}

/// rtr's bgpd: eBGP to the speaker over both sink links, both families. A
/// restarted bgpd retries a peer every 5 s (FRR's default is 120 s), so
/// that its sessions come back within a test's patience.
fn bgpd_config() -> String {
    let peers = [lab::SINK_V4, lab::SINK_B_V4, lab::SINK_V6, lab::SINK_B_V6];
    format!(
        "hostname rtr\nrouter bgp 65001\n bgp router-id {r}\n no bgp ebgp-requires-policy\n{n}\n address-family ipv6 unicast\n{a}\n exit-address-family\n",
        r = lab::RTR_SINK_V4,
        n = peers.map(|p| format!(" neighbor {p} remote-as 65002\n neighbor {p} timers connect 5")).join("\n"),
        a = [lab::SINK_V6, lab::SINK_B_V6].map(|p| format!("  neighbor {p} activate")).join("\n"),
    )
}

fn bgp_routes_through_frr(compat: u8, tag: char) {
    let run = LabRun::start_custom(&lab_tag(tag), "generic", &["--slow-path", "kernel"], &|lab| lab.hosts_config());
    let (rtr, sink) = (run.lab.rtr.clone(), run.lab.sink.clone());
    sh::run(&mut sh::in_ns(&rtr, "sysctl", &["-qw", &format!("net.ipv4.nexthop_compat_mode={compat}")])).unwrap();
    let (_r2, s1) = run.lab.add_second_link().unwrap();
    let legs = (ifindex(&sink, &run.lab.sink_if), ifindex(&sink, &s1));
    for p in ["10.128.0.0/9", "fd00:100::/32"] {
        sh::ip(&["-n", &sink, "route", "add", "local", p, "dev", "lo"]).unwrap();
    }
    let dir = TempDir::new(&format!("frr{tag}"));
    let bgpd = bgpd_config();
    let frr =
        Frr::start(&rtr, &dir.0.join("frr"), &[Daemon::new("zebra", "hostname rtr\n", &[]), Daemon::new("bgpd", &bgpd, &["-p", "179"])])
            .unwrap();
    let (table, withdrawn) = announcements();
    let exabgp = speaker(&sink, &dir.0.join("exabgp"), &table, &withdrawn);

    let want: BTreeSet<IpNet> = table.keys().copied().collect();
    let took = converge(&run, &want, &frr, &exabgp, "announce");
    eprintln!("compat {compat}: {} BGP prefixes in rtr's kernel and in the maps {took:?} after the speaker started", want.len());
    let objects: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "nexthop-objects", "--json"])).unwrap();
    let objects = objects.as_array().unwrap();
    assert!(objects.iter().any(|o| o["kind"] == "group"), "zebra's ECMP routes go through a group object: {objects:?}");
    assert!(objects.iter().filter(|o| o["kind"] == "single").count() >= 4, "{objects:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.control().call(&cowroute::operator::control::Request::Stats).unwrap()["gateways_unresolved"] != 0 {
        assert!(Instant::now() < deadline, "gateways unresolved");
        std::thread::sleep(Duration::from_millis(50));
    }
    let probes = probes(&table);
    check_probes(&run, &table, &probes, legs, 7800, &format!("compat {compat}, announced"));

    exabgp.go_on().unwrap();
    let left: BTreeMap<IpNet, Leg> = table.iter().filter(|(p, _)| !withdrawn.contains(p)).map(|(p, l)| (*p, *l)).collect();
    let want: BTreeSet<IpNet> = left.keys().copied().collect();
    let took = converge(&run, &want, &frr, &exabgp, "withdraw");
    eprintln!("compat {compat}: {} withdrawn, {} left, in the maps {took:?} after the withdrawals were sent", withdrawn.len(), want.len());
    check_probes(&run, &left, &probes, legs, 7810, &format!("compat {compat}, half withdrawn"));
    drop(exabgp);
    drop(frr);
}

#[test]
fn bgp_routes_from_frr_with_compat_mode_0() {
    bgp_routes_through_frr(0, 'f');
}

#[test]
fn bgp_routes_from_frr_with_compat_mode_1() {
    bgp_routes_through_frr(1, 'g');
}

/// The fast path's prefixes among `of` (FPM: the agent reads no kernel route).
fn mapped_among(run: &LabRun, of: &BTreeSet<IpNet>) -> BTreeSet<IpNet> {
    let rows: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "routes", "--json"])).unwrap();
    rows.as_array().unwrap().iter().filter_map(|r| r["prefix"].as_str()?.parse::<IpNet>().ok()).filter(|p| of.contains(p)).collect()
}

fn fpm_stats(run: &LabRun) -> serde_json::Value {
    run.control().call(&cowroute::operator::control::Request::Stats).unwrap()["fpm"].clone()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// How zebra's routes reach the agent in an FPM test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZebraKernel {
    /// zebra installs in rtr's kernel too (Debian's FRR 8.4 always does),
    /// and connects over FPM as the routes come (3 s after it starts):
    /// what it selected before, its replay on connecting carries; the rest
    /// reaches the agent as zebra selects it.
    Installs,
    /// zebra runs without CAP_NET_ADMIN over rtr, so the kernel refuses
    /// every install and holds none of its routes. FRR 8.4 hands a context
    /// the kernel refused to no later dataplane provider, so FPM is
    /// configured once zebra's dataplane has been refused every route (a
    /// refused route stays selected): the replay on connecting (a walk of
    /// the RIB) carries them all.
    Refused,
}

const FPM_ADDRESS: &str = "fpm address 127.0.0.1 port 2620";

/// zebra's dataplane counters (`show zebra dplane`): route updates the
/// kernel refused, and those still queued.
fn zebra_dplane(frr: &Frr) -> (u64, u64) {
    let out = frr.vtysh("show zebra dplane").unwrap_or_default();
    let field =
        |name: &str| out.lines().find_map(|l| l.strip_prefix(name)?.trim().trim_start_matches(':').trim().parse::<u64>().ok()).unwrap_or(0);
    (field("Route update errors"), field("Route update queue depth"))
}

/// Starts zebra, staticd and bgpd.
fn start_zebra(frr: &mut Frr) {
    for d in ["zebra", "staticd", "bgpd"] {
        frr.start_daemon(d).unwrap();
    }
}

/// With `ZebraKernel::Refused`: connects FPM once the kernel has refused
/// zebra each of its `routes` routes (its dataplane's queue empty: none
/// left to come after the replay).
fn connect_fpm(frr: &Frr, kernel: ZebraKernel, routes: usize) {
    if kernel == ZebraKernel::Refused {
        let started = Instant::now();
        loop {
            let (refused, queued) = zebra_dplane(frr);
            if refused >= routes as u64 && queued == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "timed out waiting for the kernel to refuse zebra its {routes} routes: {refused} refused, {queued} queued\n{}",
                frr.vtysh("show zebra dplane").unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        frr.configure(&[FPM_ADDRESS]).unwrap();
    }
}

/// Every route of rtr's kernel (all tables) among `of`.
fn kernel_among(run: &LabRun, of: &BTreeSet<IpNet>) -> BTreeSet<IpNet> {
    let mut found = BTreeSet::new();
    for family in ["-4", "-6"] {
        let out = sh::ip(&["-n", &run.lab.rtr, family, "-j", "route", "show", "table", "all"]).unwrap();
        let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
        found.extend(rows.as_array().unwrap().iter().filter_map(|r| r["dst"].as_str()?.parse::<IpNet>().ok()).filter(|p| of.contains(p)));
    }
    found
}

/// `--source fpm`: zebra (with dplane_fpm_nl) pushes its routes, static and
/// BGP, straight to the agent; the agent reads no route from the kernel.
/// Kernel forwarding is off in rtr: every probe that arrives, cowroute
/// forwarded from what FPM said.
/// Then zebra is killed under traffic while a tenth of the BGP routes are
/// withdrawn, and restarted: no datagram to a route zebra resends is lost,
/// and the withdrawn ones are swept once its replay is done.
#[test]
fn zebra_over_fpm_feeds_the_maps_and_a_restart_loses_nothing_it_resends() {
    zebra_over_fpm(ZebraKernel::Installs, 'p');
}

/// The same with rtr's kernel refusing zebra's every install: it holds
/// none of zebra's routes, and traffic still reaches the right next hops.
#[test]
fn zebra_over_fpm_with_no_route_in_the_kernel() {
    zebra_over_fpm(ZebraKernel::Refused, 'q');
}

fn zebra_over_fpm(kernel: ZebraKernel, tag: char) {
    let run =
        LabRun::start_custom(&lab_tag(tag), "generic", &["--source", "fpm", "--slow-path", "kernel", "--fpm-sweep-after", "20"], &|lab| {
            lab.hosts_config()
        });
    let (rtr, sink) = (run.lab.rtr.clone(), run.lab.sink.clone());
    let (_r2, s1) = run.lab.add_second_link().unwrap();
    let legs = (ifindex(&sink, &run.lab.sink_if), ifindex(&sink, &s1));
    for p in ["10.128.0.0/9", "10.60.0.0/24", "fd00:100::/32"] {
        sh::ip(&["-n", &sink, "route", "add", "local", p, "dev", "lo"]).unwrap();
    }
    // 2,000 /24s and 20 /48s over BGP, a static route each way.
    let mut table: BTreeMap<IpNet, Leg> = BTreeMap::new();
    for i in 0u32..2000 {
        table.insert(format!("10.{}.{}.0/24", 128 + i / 256, i % 256).parse().unwrap(), if i % 2 == 0 { Leg::A } else { Leg::B });
    }
    for i in 0u32..20 {
        table.insert(format!("fd00:100:{i:x}::/48").parse().unwrap(), if i % 2 == 0 { Leg::A } else { Leg::B });
    }
    let withdrawn: BTreeSet<IpNet> = table.keys().enumerate().filter(|(i, _)| i % 10 == 3).map(|(_, p)| *p).collect();
    let dir = TempDir::new(&format!("fpm{tag}"));
    let bgpd = bgpd_config();
    let staticd = format!("hostname rtr\nip route 10.60.0.0/24 {}\n", lab::SINK_B_V4);
    let zebra = match kernel {
        ZebraKernel::Installs => Daemon::new("zebra", &format!("hostname rtr\n{FPM_ADDRESS}\n"), &["-M", "dplane_fpm_nl"]),
        ZebraKernel::Refused => Daemon::new("zebra", "hostname rtr\n", &["-M", "dplane_fpm_nl"]).without_net_admin(),
    };
    let mut frr =
        Frr::new(&rtr, &dir.0.join("frr"), &[zebra, Daemon::new("staticd", &staticd, &[]), Daemon::new("bgpd", &bgpd, &["-p", "179"])])
            .unwrap();
    let mut ours: BTreeSet<IpNet> = table.keys().copied().collect();
    ours.insert("10.60.0.0/24".parse().unwrap());
    start_zebra(&mut frr);
    let exabgp = speaker(&sink, &dir.0.join("exabgp"), &table, &withdrawn);
    let spoke = Instant::now();
    connect_fpm(&frr, kernel, ours.len());
    let (started, patience) = (Instant::now(), Duration::from_secs(60));
    while mapped_among(&run, &ours) != ours {
        let m = mapped_among(&run, &ours);
        assert!(
            started.elapsed() < patience,
            "timed out after {patience:?} waiting for zebra's routes over FPM in the maps: {} of {} there, missing e.g. {:?}; fpm stats {}\nzebra: {}\nbgpd: {}\nzebra's log: {}",
            m.len(),
            ours.len(),
            ours.difference(&m).take(3).collect::<Vec<_>>(),
            fpm_stats(&run),
            frr.vtysh("show ip route summary").unwrap_or_default(),
            frr.vtysh("show bgp summary").unwrap_or_default(),
            frr.log("zebra").lines().rev().take(30).collect::<Vec<_>>().join("\n"),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = fpm_stats(&run);
    let configured = match kernel {
        ZebraKernel::Refused => format!(" ({:?} after FPM was configured)", started.elapsed()),
        ZebraKernel::Installs => String::new(),
    };
    eprintln!(
        "fpm ({kernel:?}): {} prefixes in the maps {:?} after the speaker started{configured}; stats {s}",
        ours.len(),
        spoke.elapsed()
    );
    assert_eq!(s["connected"], true);
    assert_eq!(s["errors"], 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.control().call(&cowroute::operator::control::Request::Stats).unwrap()["gateways_unresolved"] != 0 {
        assert!(Instant::now() < deadline, "gateways unresolved");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut with_static = table.clone();
    with_static.insert("10.60.0.0/24".parse().unwrap(), Leg::B);
    let probes = probes(&with_static);
    let in_kernel = kernel_among(&run, &ours);
    eprintln!("fpm ({kernel:?}): rtr's kernel holds {} of the {} routes", in_kernel.len(), ours.len());
    if kernel == ZebraKernel::Refused {
        assert!(in_kernel.is_empty(), "zebra's routes reached rtr's kernel: {:?}", in_kernel.iter().take(5).collect::<Vec<_>>());
        let (refused, _) = zebra_dplane(&frr);
        assert!(refused >= ours.len() as u64, "the kernel refused zebra {refused} route updates, not each of its {} routes", ours.len());
        eprintln!("fpm: the kernel refused zebra {refused} route updates");
    }
    check_probes(&run, &with_static, &probes, legs, 7820, "fpm");

    // zebra killed under traffic; a tenth withdrawn while it is down; zebra back.
    let kept: Vec<SocketAddr> =
        ["10.128.0.1:7830", "10.128.1.1:7830", "[fd00:100::1]:7831", "10.60.0.1:7830"].iter().map(|a| a.parse().unwrap()).collect();
    assert!(kept.iter().all(|a| !withdrawn.iter().any(|w| w.contains(&a.ip()))));
    let receivers = [SocketAddr::new("0.0.0.0".parse().unwrap(), 7830), SocketAddr::new("::".parse().unwrap(), 7831)]
        .map(|a| traffic::UdpSink::bind(&sink, a).unwrap());
    let per_flow = 4000;
    let streams: Vec<_> = kept
        .iter()
        .map(|to| {
            let (gen, to) = (run.lab.gen.clone(), *to);
            std::thread::spawn(move || traffic::udp_send(&gen, to, per_flow, 64, 64, Duration::from_millis(4)).unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    // A crash of zebra, and what watchfrr does about it: the daemons that
    // talked to it are restarted with it (bgpd does not find a new zebra by itself).
    for d in ["zebra", "bgpd", "staticd"] {
        frr.kill(d);
    }
    wait_for("the agent to see zebra gone", Duration::from_secs(5), || fpm_stats(&run)["connected"] == false);
    exabgp.go_on().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(mapped_among(&run, &ours), ours, "zebra down: every route still in the maps");
    let left: BTreeSet<IpNet> = ours.difference(&withdrawn).copied().collect();
    start_zebra(&mut frr);
    connect_fpm(&frr, kernel, left.len());
    let (restarted, patience) = (Instant::now(), Duration::from_secs(120));
    loop {
        let m = mapped_among(&run, &ours);
        assert!(
            left.is_subset(&m),
            "a route zebra resends left the maps {:?} after its restart: {:?}; fpm stats {}\nbgpd: {}\nbgpd's log: {}\nzebra's log: {}",
            restarted.elapsed(),
            left.difference(&m).take(3).collect::<Vec<_>>(),
            fpm_stats(&run),
            frr.vtysh("show bgp summary").unwrap_or_default(),
            frr.log("bgpd").lines().rev().take(20).collect::<Vec<_>>().join("\n"),
            frr.log("zebra").lines().rev().take(20).collect::<Vec<_>>().join("\n"),
        );
        if m == left {
            break;
        }
        assert!(
            restarted.elapsed() < patience,
            "timed out after {patience:?} waiting for the withdrawn routes swept after zebra's replay: {} of them still mapped, e.g. {:?}; fpm stats {}\nbgpd: {}\nexabgp: {}",
            m.len() - left.len(),
            m.difference(&left).take(3).collect::<Vec<_>>(),
            fpm_stats(&run),
            frr.vtysh("show bgp summary").unwrap_or_default(),
            exabgp.output().chars().rev().take(3000).collect::<String>().chars().rev().collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let swept = restarted.elapsed();
    let s = fpm_stats(&run);
    eprintln!("fpm: zebra restarted; {} withdrawn routes swept {swept:?} later; stats {s}", withdrawn.len());
    assert!(s["connections"].as_u64() >= Some(2) && s["swept"].as_u64() >= Some(withdrawn.len() as u64), "{s}");
    streams.into_iter().for_each(|t| t.join().unwrap());
    let got = receivers[0].receive(3 * per_flow, Duration::from_secs(3)).unwrap().len()
        + receivers[1].receive(per_flow, Duration::from_secs(3)).unwrap().len();
    assert_eq!(got, 4 * per_flow, "no datagram lost to a route zebra resent");
    let mut left_table = with_static.clone();
    left_table.retain(|p, _| !withdrawn.contains(p));
    check_probes(&run, &left_table, &probes, legs, 7840, "fpm after zebra's restart");
    if kernel == ZebraKernel::Refused {
        let in_kernel = kernel_among(&run, &ours);
        assert!(
            in_kernel.is_empty(),
            "the restarted zebra's routes reached rtr's kernel: {:?}",
            in_kernel.iter().take(5).collect::<Vec<_>>()
        );
    }
    drop(exabgp);
    drop(frr);
}

/// What is not zebra's FPM stream never reaches the maps: a frame of the
/// wrong version is counted and closes the connection, the routes already
/// in stay, and the next connection is served. A non-loopback listen
/// address is refused unless asked for.
#[test]
fn bad_fpm_input_is_counted_closes_the_connection_and_touches_no_route() {
    use cowroute::fib::fpm::{frame_of, route_message};
    use std::io::{Read, Write};
    let run = LabRun::start_custom(&lab_tag('b'), "generic", &["--source", "fpm", "--slow-path", "kernel"], &|lab| lab.hosts_config());
    let oif = ifindex(&run.lab.rtr, &run.lab.rtr_sink_if);
    let connect = || {
        let addr: SocketAddr = cowroute::fib::fpm::DEFAULT_LISTEN.parse().unwrap();
        xtask::traffic::in_netns(&run.lab.rtr, move || Ok(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?)).unwrap()
    };
    let route = |p: &str| frame_of(&[route_message(p.parse().unwrap(), lab::SINK_V4.parse().unwrap(), oif, true)]);
    let mut conn = connect();
    conn.write_all(&route("10.70.0.0/16")).unwrap();
    let want: BTreeSet<IpNet> = ["10.70.0.0/16".parse().unwrap()].into();
    wait_for("the route over FPM", Duration::from_secs(3), || mapped_among(&run, &want) == want);
    let cases: [(&str, Vec<u8>); 4] = [
        ("wrong version", [&[2u8][..], &route("10.71.0.0/16")[1..]].concat()),
        ("unknown type", [&[1u8, 9][..], &route("10.71.0.0/16")[2..]].concat()),
        ("oversized length", vec![1, 1, 0xff, 0xff, 0, 0, 0, 0]),
        ("undecodable netlink", {
            let mut f = route("10.71.0.0/16");
            let n = f.len();
            f[n - 8] = 0x40; // the last attribute claims 64 bytes
            f
        }),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        if i > 0 {
            conn = connect();
        }
        conn.write_all(bytes).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        assert_eq!(conn.read(&mut [0u8; 16]).unwrap_or(1), 0, "{what}: the agent closed the connection");
        // The listener hands the error to the daemon's loop: counted soon after the close.
        wait_for(&format!("{what} counted"), Duration::from_secs(3), || fpm_stats(&run)["errors"].as_u64() == Some(i as u64 + 1));
        assert_eq!(mapped_among(&run, &["10.70.0.0/16".parse().unwrap(), "10.71.0.0/16".parse().unwrap()].into()), want, "{what}");
    }
    // The next connection is served as before.
    let mut conn = connect();
    conn.write_all(&route("10.72.0.0/16")).unwrap();
    let want: BTreeSet<IpNet> = ["10.70.0.0/16".parse().unwrap(), "10.72.0.0/16".parse().unwrap()].into();
    wait_for("a good connection after bad ones", Duration::from_secs(3), || mapped_among(&run, &want) == want);

    // Only loopback without --fpm-allow-remote.
    let bin = xtask::agent_proc::cowroute_bin().unwrap();
    let out = sh::output(std::process::Command::new(bin).args([
        "--pin-dir",
        "/sys/fs/bpf/cowroute-fpm-remote-none",
        "run",
        "--source",
        "fpm",
        "--fpm-listen",
        "192.0.2.1:2620",
        "--iface",
        "lo",
    ]))
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--fpm-listen 192.0.2.1:2620: not a loopback address") && err.contains("--fpm-allow-remote"), "{err}");
}
