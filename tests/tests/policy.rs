//! `ip rule` in the fast path, with the kernel as the oracle: rtr gets
//! source-, destination-, TOS-, port- and interface-based rules (goto, not,
//! suppress_prefixlength, blackhole, prohibit, unreachable, and a table the
//! fast path leaves to the kernel); thousands of generated frames from gen
//! must leave by the link `ip route get ADDR from SRC iif DEV ...` names, or
//! not at all where it answers with an error. Then rules go and come while
//! the agent runs, and the comparison is made again.

use cowroute_tests::conformance::{frames, runner};
use cowroute_tests::*;
use std::time::{Duration, Instant};
use xtask::{lab, sh};

/// One generated frame and what it asks the rules.
struct Probe {
    src: [u8; 4],
    dst: [u8; 4],
    tos: u8,
    dport: u16,
}

/// Where the kernel routes a probe: out of a link, through table 100
/// (which the fast path leaves to the kernel), or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Link(usize),
    Nowhere,
}

const SPORT: u16 = 40000;

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
fn oracle(l: &lab::Lab, links: [&str; 2], probes: &[Probe]) -> (Vec<Way>, usize) {
    let mut via_table_100 = 0;
    let ways = probes
        .iter()
        .map(|p| {
            let a = |b: [u8; 4]| std::net::Ipv4Addr::from(b).to_string();
            let args = [
                "-n",
                &l.rtr,
                "route",
                "get",
                &a(p.dst),
                "from",
                &a(p.src),
                "iif",
                &l.rtr_gen_if,
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
            if text.contains(" table 100 ") {
                via_table_100 += 1;
            }
            let dev = text.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or_default().to_string();
            match links.iter().position(|l| *l == dev) {
                Some(i) => Way::Link(i),
                None => panic!("ip route get gave an unexpected answer: {text}"),
            }
        })
        .collect();
    (ways, via_table_100)
}

/// Sends every probe from gen; returns where each arrived (sink's two links).
fn observe(l: &lab::Lab, sink_links: [&str; 2], probes: &[Probe]) -> Vec<Way> {
    let (gen_mac, rtr_mac) = (mac_of(&l.gen, &l.gen_if), mac_of(&l.rtr, &l.rtr_gen_if));
    let frames: Vec<Vec<u8>> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut ip = frames::Ip4::new(p.src, p.dst, i as u16);
            ip.tos = p.tos;
            let mut udp = frames::udp(&p.src, &p.dst, i as u32, 24);
            udp[0..2].copy_from_slice(&SPORT.to_be_bytes());
            udp[2..4].copy_from_slice(&p.dport.to_be_bytes());
            udp[6..8].fill(0); // no UDP checksum: valid for IPv4, and the ports changed
            eth(rtr_mac, gen_mac, None, 0x0800, &ip.packet(&udp))
        })
        .collect();
    let captures = sink_links.map(|dev| runner::Capture::start(&l.sink, dev));
    runner::send(&l.gen, &l.gen_if, frames, 4000, &|_| {});
    std::thread::sleep(Duration::from_millis(300));
    let mut ways = vec![Way::Nowhere; probes.len()];
    for (link, capture) in captures.into_iter().enumerate() {
        let (got, drops) = capture.finish();
        assert_eq!(drops, 0, "the capture on sink's link {link} dropped frames");
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

fn rule(l: &lab::Lab, verb: &str, spec: &str) {
    let mut args = vec!["-n", l.rtr.as_str(), "rule", verb];
    args.extend(spec.split_whitespace());
    sh::ip(&args).unwrap_or_else(|e| panic!("ip rule {verb} {spec}: {e}"));
}

/// Waits until the agent's `show rules` holds `count` IPv4 rules.
fn rules_shown(run: &LabRun, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let rows: Vec<serde_json::Value> = serde_json::from_str(&run.cowroute(&["show", "rules", "--json"])).unwrap();
        let v4: Vec<serde_json::Value> = rows.into_iter().filter(|r| r["family"] == "inet").collect();
        if v4.len() == count {
            return v4;
        }
        assert!(Instant::now() < deadline, "the agent shows {} IPv4 rules, not {count}", v4.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn compare(run: &LabRun, links: [&str; 2], sink_links: [&str; 2], round: &str, probes: &[Probe]) {
    let (expected, via_table_100) = oracle(&run.lab, links, probes);
    let before = (run.counter("rule_kernel"), run.counter("forwarded"));
    let seen = observe(&run.lab, sink_links, probes);
    let wrong: Vec<String> = (0..probes.len())
        .filter(|i| expected[*i] != seen[*i])
        .map(|i| {
            let p = &probes[i];
            format!("{:?} -> {:?} tos {:#x} dport {}: kernel {:?}, cowroute {:?}", p.src, p.dst, p.tos, p.dport, expected[i], seen[i])
        })
        .collect();
    assert!(wrong.is_empty(), "{round}: {} of {} probes differ from ip route get:\n{}", wrong.len(), probes.len(), wrong.join("\n"));
    let links_used = [0, 1].map(|k| expected.iter().filter(|w| **w == Way::Link(k)).count());
    let nowhere = expected.iter().filter(|w| **w == Way::Nowhere).count();
    let (kernel, forwarded) = (run.counter("rule_kernel") - before.0, run.counter("forwarded") - before.1);
    println!(
        "[policy] {round}: {} probes as ip route get says: {} by link 1, {} by link 2, {nowhere} nowhere; \
         {forwarded} forwarded by the fast path, {kernel} left to the kernel ({via_table_100} of them through table 100)",
        probes.len(),
        links_used[0],
        links_used[1]
    );
    assert!(links_used.iter().all(|n| *n > 0) && nowhere > 0 && via_table_100 > 0, "{round}: the probes cover every outcome");
    // Rule 100 (table 100, not held) claims every probe from 10.1.5.0/24:
    // exactly those go to the kernel (which forwards or goes on past the
    // table); the fast path forwarded all the others that leave.
    let claimed = |p: &Probe| p.src[..3] == [10, 1, 5];
    let to_kernel = probes.iter().filter(|p| claimed(p)).count();
    let kernel_forwarded = (0..probes.len()).filter(|i| claimed(&probes[*i]) && expected[*i] != Way::Nowhere).count();
    assert_eq!(kernel as usize, to_kernel, "{round}: frames left to the kernel");
    assert_eq!(forwarded as usize, links_used[0] + links_used[1] - kernel_forwarded, "{round}: frames the fast path forwarded");
}

#[test]
fn ip_rules_route_frames_where_ip_route_get_says() {
    let run = LabRun::start_custom(&lab_tag('q'), "generic", &[], &|lab| lab.hosts_config());
    let l = &run.lab;
    let (r2, s1) = l.add_second_link().unwrap();
    let links = [l.rtr_sink_if.as_str(), r2.as_str()];
    let sink_links = [l.sink_if.as_str(), s1.as_str()];
    // `ip route get ... iif` answers for a forwarding router; and what the
    // fast path leaves to the kernel (table 100) the kernel then forwards.
    sh::run(&mut sh::cmd("ip", &["netns", "exec", &l.rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1"])).unwrap();
    for route in [
        format!("10.9.0.0/16 via {} dev {}", lab::SINK_V4, l.rtr_sink_if),
        format!("10.9.200.0/24 via {} dev {r2}", lab::SINK_B_V4),
        format!("10.8.0.0/16 via {} dev {r2}", lab::SINK_B_V4),
        format!("10.9.128.0/17 via {} dev {r2} table 100", lab::SINK_B_V4),
    ] {
        let mut args = vec!["-n", l.rtr.as_str(), "route", "add"];
        args.extend(route.split_whitespace());
        sh::ip(&args).unwrap();
    }
    let rules = [
        "pref 100 from 10.1.5.0/24 lookup 100".to_string(),
        "pref 200 from 10.1.6.0/24 to 10.9.64.0/18 prohibit".to_string(),
        "pref 300 not from 10.1.0.0/16 blackhole".to_string(),
        "pref 400 to 10.8.0.0/16 tos 0x10 unreachable".to_string(),
        "pref 500 from 10.1.7.0/24 goto 700".to_string(),
        "pref 600 lookup main suppress_prefixlength 16".to_string(),
        "pref 650 to 10.9.0.0/17 blackhole".to_string(),
        format!("pref 700 iif {} ipproto udp dport 53 prohibit", l.rtr_gen_if),
    ];
    for r in &rules {
        rule(l, "add", r);
    }
    let shown = rules_shown(&run, 3 + rules.len());
    let carried = |pref: u64| shown.iter().find(|r| r["priority"] == pref).map(|r| r["carried"].as_str().unwrap().to_string());
    assert_eq!(carried(0).as_deref(), Some("local_entries"));
    assert_eq!(carried(100).as_deref(), Some("kernel"), "table 100 is not held by the fast path: {shown:?}");
    for pref in [200, 300, 400, 500, 600, 650, 700, 32766] {
        assert_eq!(carried(pref).as_deref(), Some("fast_path"), "rule {pref}: {shown:?}");
    }
    assert_eq!(carried(32767).as_deref(), Some("no_op"), "table default is empty");
    // The gateways resolved before the comparison.
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.control().call(&cowroute::operator::control::Request::Stats).unwrap()["gateways_unresolved"] != 0 {
        assert!(Instant::now() < deadline, "gateways unresolved");
        std::thread::sleep(Duration::from_millis(50));
    }

    // `show routes --table`: main's routes, the local table's entries; a
    // table the fast path does not hold is refused, saying why.
    let table = |t: &str| -> Vec<String> {
        let rows: Vec<serde_json::Value> = serde_json::from_str(&run.cowroute(&["show", "routes", "--table", t, "--json"])).unwrap();
        rows.iter().map(|r| r["prefix"].as_str().unwrap().to_string()).collect()
    };
    let (main, local) = (table("main"), table("local"));
    assert!(main.contains(&"10.9.200.0/24".to_string()) && !main.contains(&format!("{}/32", lab::RTR_GEN_V4)), "{main:?}");
    assert!(local.contains(&format!("{}/32", lab::RTR_GEN_V4)) && !local.contains(&"10.9.0.0/16".to_string()), "{local:?}");
    let refused = run.cowroute_output(&["show", "routes", "--table", "100"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("table 100 is not held by the fast path"), "{err}");

    let probes = probes(3000, 0x5eed);
    compare(&run, links, sink_links, "all rules", &probes);

    // Rules go and come while the agent runs: the fast path follows.
    rule(l, "del", "pref 300 not from 10.1.0.0/16 blackhole");
    rule(l, "del", "pref 600 lookup main suppress_prefixlength 16");
    rule(l, "add", "pref 250 from 192.0.2.0/24 to 10.9.0.0/16 prohibit");
    rules_shown(&run, 3 + rules.len() - 1);
    compare(&run, links, sink_links, "after changes", &probes);
}
