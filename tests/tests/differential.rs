//! The fast path's choice against the kernel's: for 10,000 random
//! destinations over a 100,000-route table mirrored from rtr's FIB, the next
//! hop (its gateway) that the real XDP program forwards a frame to (run by
//! BPF_PROG_TEST_RUN over the agent's pinned maps), and the route (its
//! prefix) the maps hold for it, equal what `ip route get fibmatch` says in
//! the same namespace.

use common::RouteEntry;
use cowroute::{
    dataplane::map_writer::PublishedReader,
    dataplane::{DataPlane, LoadOptions},
    operator::control::Request,
};
use cowroute_tests::{kernel_table, synthetic, *};
use std::{
    collections::HashMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};
use xtask::sh;

const ROUTES: usize = 100_000;
const DESTINATIONS: usize = 10_000;

/// Random destinations: half inside random routes of `table`, half
/// anywhere in unicast space outside the lab (covered by the default route).
fn destinations(table: &[ipnet::IpNet]) -> Vec<Ipv4Addr> {
    let mut rng = synthetic::Rng::new(99);
    let mut out = Vec::with_capacity(DESTINATIONS);
    while out.len() < DESTINATIONS {
        let r = rng.next_u64();
        let a = if out.len() % 2 == 0 {
            let ipnet::IpNet::V4(p) = table[(r % table.len() as u64) as usize] else { unreachable!() };
            let host_bits = 32 - p.prefix_len() as u32;
            let mask = if host_bits == 32 { u32::MAX } else { (1u32 << host_bits) - 1 };
            Ipv4Addr::from(u32::from(p.network()) | ((r >> 32) as u32 & mask))
        } else {
            Ipv4Addr::from((r >> 32) as u32)
        };
        let first = a.octets()[0];
        if (1..=223).contains(&first) && first != 10 && first != 127 {
            out.push(a);
        }
    }
    out
}

/// `ip route get fibmatch` for each destination, in one `ip -batch`:
/// (prefix, gateway) per line.
fn kernel_choices(rtr: &str, dests: &[Ipv4Addr]) -> Vec<(String, String)> {
    let file = std::env::temp_dir().join(format!("cowroute-diff-{}.batch", std::process::id()));
    std::fs::write(&file, dests.iter().map(|d| format!("route get fibmatch {d}\n")).collect::<String>()).unwrap();
    let out = sh::run(sh::cmd("ip", &["-n", rtr, "-batch"]).arg(&file)).unwrap();
    let _ = std::fs::remove_file(&file);
    out.lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let prefix = match words[0] {
                "default" => "0.0.0.0/0".to_string(),
                p if p.contains('/') => p.to_string(),
                p => format!("{p}/32"),
            };
            let via = words.iter().position(|w| *w == "via").map_or("-".to_string(), |i| words[i + 1].to_string());
            (prefix, via)
        })
        .collect()
}

#[test]
fn fast_path_choice_of_route_and_next_hop_equals_ip_route_get() {
    let run = LabRun::start_custom(&lab_tag('d'), "generic", &[], &|lab| lab.hosts_config());
    let rtr = run.lab.rtr.clone();
    let routes_before = run.control().call(&Request::Stats).unwrap()["routes"].as_u64().unwrap();
    let gateways = kernel_table::gateways(&run.lab, 4).unwrap();
    let table = synthetic::v4_kernel_table(ROUTES, 11);
    kernel_table::batch(&run.lab, "add", &table, &gateways, "").unwrap();
    sh::ip(&["-n", &rtr, "route", "add", "default", "via", &gateways[0].addr]).unwrap();
    let want = routes_before + ROUTES as u64 + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.control().call(&Request::Stats).unwrap()["routes"].as_u64().unwrap() < want {
        assert!(Instant::now() < deadline, "the table never reached the maps");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The maps: route ids to prefixes (a walk), next hops to gateways (by MAC).
    let pinned = PinnedV4::open(&run.pin_dir);
    let v4 = &pinned.trie;
    let nexthops = PublishedReader::nexthops(&run.pin_dir).unwrap();
    let mut prefix_of: HashMap<u32, String> = HashMap::new();
    for item in v4.iter() {
        let (k, e) = item.unwrap();
        if e.flags & RouteEntry::HOST == 0 {
            prefix_of.insert(e.id, format!("{}/{}", Ipv4Addr::from(k.data()), k.prefix_len()));
        }
    }
    let gateway_of: HashMap<[u8; 6], String> = gateways.iter().map(|g| (g.mac, g.addr.clone())).collect();

    let dests = destinations(&table);
    let kernel = kernel_choices(&rtr, &dests);
    assert_eq!(kernel.len(), dests.len(), "one answer per destination");
    // The judge of the next hop is the XDP program itself: a copy loaded
    // over the agent's pinned maps runs each destination's frame
    // (BPF_PROG_TEST_RUN) and the MAC it writes names the gateway.
    let (mut program, _) = DataPlane::load_pinned(&LoadOptions::default(), &run.pin_dir).expect("the program over the pinned maps");
    let (mut mismatches, mut from_index) = (Vec::new(), 0);
    for (d, k) in dests.iter().zip(&kernel) {
        // Test runs arrive on loopback (ifindex 1 in every namespace, rtr's
        // too, whose port the agent published): to its MAC, all zeros.
        let frame = eth([0; 6], [2, 0, 0, 0, 0, 2], None, ETH_P_IP, &ipv4_udp([10, 1, 0, 2], d.octets(), 64, 64));
        let (action, out) = test_run(&mut program, &frame).unwrap();
        let via = match action {
            XDP_REDIRECT => {
                gateway_of.get(&<[u8; 6]>::try_from(&out[..6]).unwrap()).cloned().unwrap_or_else(|| format!("{:02x?}", &out[..6]))
            }
            other => format!("action {other}"),
        };
        // The prefix, by the maps' own record (the program does not say which route it took).
        let (e, indexed) = pinned.lookup(*d).unwrap_or_else(|| panic!("{d}: no route in the maps"));
        from_index += indexed as usize;
        let (_slot, nh) = nexthops.get(e.nexthop).unwrap().unwrap_or_else(|| panic!("{d}: next hop {} not published", e.nexthop));
        assert_eq!(
            gateway_of.get(&nh.dmac),
            gateway_of.get(&<[u8; 6]>::try_from(&out[..6]).unwrap()),
            "{d}: the maps' next hop is the one the program used"
        );
        let ours = (prefix_of.get(&e.id).cloned().unwrap_or_default(), via);
        if &ours != k {
            mismatches.push(format!("{d}: program {ours:?}, kernel {k:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{} of {} differ, e.g. {:#?}", mismatches.len(), dests.len(), &mismatches[..mismatches.len().min(10)]);
    // Most of the table is /24 and shorter: the index answers for most.
    assert!(from_index > dests.len() / 2, "the DIR-24 index answered for only {from_index} of {}", dests.len());
    eprintln!(
        "{} destinations over {} routes: the maps choose as the kernel does ({from_index} answered by the DIR-24 index)",
        dests.len(),
        ROUTES
    );
}
