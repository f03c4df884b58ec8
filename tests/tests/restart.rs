//! Hitless restart: the data plane (pinned maps, pinned XDP links) outlives
//! the agent. Killed with SIGKILL and started again three times under
//! continuous traffic, no packet is lost: the program keeps forwarding from
//! the maps while no agent runs, and the new agent adopts the maps and swaps
//! its program into the links in place. `cowroute detach` removes it all.

use cowroute_tests::*;
use std::{net::SocketAddr, time::Duration};
use xtask::{lab, sh, traffic};

const DATAGRAMS: usize = 40_000;

fn xdp_attached(run: &LabRun) -> bool {
    let text = sh::run(&mut sh::in_ns(&run.lab.rtr, "ip", &["-d", "link", "show", "dev", &run.lab.rtr_gen_if])).unwrap();
    text.contains("prog/xdp")
}

#[test]
fn sigkill_and_restart_three_times_under_traffic_loses_nothing() {
    let mut run = LabRun::start_custom(&lab_tag('r'), "native", &["--keep-on-exit"], &|lab| lab.hosts_config());
    let to: SocketAddr = format!("{}:7800", lab::SINK_V4).parse().unwrap();
    let sink = traffic::UdpSink::bind(&run.lab.sink, "0.0.0.0:7800".parse().unwrap()).unwrap();
    let receiver = std::thread::spawn(move || sink.receive(DATAGRAMS, Duration::from_secs(60)).unwrap().len());
    let gen = run.lab.gen.clone();
    let sender = std::thread::spawn(move || traffic::udp_send(&gen, to, DATAGRAMS, 64, 64, Duration::from_micros(100)).unwrap());

    // Private metrics, the operator's: they survive the restarts, sources and expiries kept.
    run.cowroute(&["metrics", "set", lab::SINK2_V4, "mtu", "1300", "--expires", "0"]);
    run.cowroute(&["metrics", "set", lab::SINK2_V4, "hoplimit", "32", "--expires", "300"]);
    let dir24 = |run: &LabRun| run.control().call(&cowroute::operator::control::Request::Stats).unwrap()["dir24"].clone();
    let index_before = dir24(&run);
    assert!(index_before["indexed"].as_u64() > Some(0), "{index_before}");
    for round in 1..=3 {
        std::thread::sleep(Duration::from_millis(600));
        run.agent.kill().unwrap();
        let fwd = run.counter("forwarded");
        std::thread::sleep(Duration::from_millis(300));
        assert!(run.counter("forwarded") > fwd, "round {round}: the fast path forwards with no agent running");
        run.restart_agent();
        let log = run.agent.log();
        assert!(log.contains("adopting the data plane"), "round {round}: {log}");
        assert!(log.contains("XDP program replaced in the pinned link"), "round {round}: {log}");
        assert!(log.contains("adoption complete"), "round {round}: {log}");
        assert_eq!(dir24(&run), index_before, "round {round}: the new agent rebuilt the DIR-24 index");
    }
    sender.join().unwrap();
    let received = receiver.join().unwrap();
    assert_eq!(received, DATAGRAMS, "every datagram arrived across three SIGKILLs and restarts");
    let shown: serde_json::Value = serde_json::from_str(&run.cowroute(&["metrics", "show", lab::SINK2_V4, "--json"])).unwrap();
    let overrides = shown[0]["overrides"].as_array().unwrap();
    let by = |name: &str| overrides.iter().find(|o| o["metric"] == name).unwrap_or_else(|| panic!("{name} kept: {shown}")).clone();
    assert_eq!((by("mtu")["value"].as_u64(), by("mtu")["expires_in"].is_null()), (Some(1300), true), "{shown}");
    // Counted down meanwhile: three restarts take 10-20 s on a loaded machine.
    let left = by("hoplimit")["expires_in"].as_u64().unwrap();
    assert!(by("hoplimit")["value"] == 32 && (270..=300).contains(&left), "{shown}");
    assert!(run.agent.log().contains("private_kept=1"), "{}", run.agent.log());

    // `detach` refuses while the agent runs ...
    let out = run.cowroute_output(&["detach"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("an agent is running"), "{out:?}");
    // ... SIGTERM with --keep-on-exit leaves the data plane forwarding ...
    assert_eq!(run.agent.stop().unwrap(), 0);
    assert!(run.pin_dir.join("ROUTES_V4").exists() && xdp_attached(&run));
    let sink = traffic::UdpSink::bind(&run.lab.sink, "0.0.0.0:7801".parse().unwrap()).unwrap();
    traffic::udp_send(&run.lab.gen, format!("{}:7801", lab::SINK_V4).parse().unwrap(), 50, 64, 64, Duration::ZERO).unwrap();
    assert_eq!(sink.receive(50, Duration::from_secs(2)).unwrap().len(), 50, "forwarded with no agent");
    // ... and `detach` removes program, links and pins: nothing forwards.
    let text = run.cowroute(&["detach"]);
    assert!(text.contains("link-") && text.contains("ROUTES_V4"), "{text}");
    assert!(!run.pin_dir.exists(), "pin directory removed");
    assert!(!xdp_attached(&run), "program detached");
    traffic::udp_send(&run.lab.gen, format!("{}:7801", lab::SINK_V4).parse().unwrap(), 20, 64, 64, Duration::ZERO).unwrap();
    assert_eq!(sink.receive(20, Duration::from_millis(500)).unwrap().len(), 0, "kernel forwarding is off: nothing without cowroute");
}

/// What the fast path forwards with, without the slot numbers an adopting
/// agent picks afresh: route entries (prefix, type, flags), next hops (the
/// set of their contents: an earlier agent's slots linger until reused) and
/// private copies (values, overrides).
fn forwarding_state(run: &LabRun) -> (Vec<String>, Vec<String>, Vec<String>) {
    let json = |args: &[&str]| -> serde_json::Value { serde_json::from_str(&run.cowroute(args)).unwrap() };
    let rows = |v: serde_json::Value, keys: &[&str]| -> Vec<String> {
        let mut out: Vec<String> =
            v.as_array().unwrap().iter().map(|r| keys.iter().map(|k| r[*k].to_string()).collect::<Vec<_>>().join(" ")).collect();
        out.sort();
        out.dedup();
        out
    };
    let mut routes = rows(json(&["show", "routes", "--json"]), &["prefix", "kind", "flags"]);
    // Link-local neighbours come and go with the hosts' own neighbour
    // discovery (a router solicitation seconds after the lab is up leaves a
    // STALE entry): their host entries are the kernel's churn, not state the
    // adoption could lose.
    routes.retain(|r| !(r.starts_with("\"fe80:") && r.contains("clone")));
    let nexthops = rows(json(&["show", "nexthops", "--json"]), &["ifindex", "dmac", "smac", "mtu", "vlan", "usable"]);
    let mut private: Vec<String> = json(&["metrics", "show", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let overrides: Vec<String> =
                d["overrides"].as_array().unwrap().iter().map(|o| format!("{}={} {}", o["metric"], o["value"], o["source"])).collect();
            format!("{} {} {} {:?}", d["destination"], d["values"], d["covering"], overrides)
        })
        .collect();
    private.sort();
    (routes, nexthops, private)
}

/// A crash of the agent, by a panic or by SIGKILL, never stops forwarding,
/// even without --keep-on-exit: no unwinding runs the data plane's teardown
/// (panic = "abort"), the pins stay, and the restarted agent adopts them
/// with the same forwarding state. Under traffic: zero loss.
#[test]
fn a_panic_or_sigkill_of_the_agent_loses_no_packet_and_no_state() {
    std::env::set_var(cowroute::operator::control::FAULT_INJECTION_ENV, "1");
    let mut run = LabRun::start_custom(&lab_tag('p'), "native", &[], &|lab| lab.hosts_config());
    run.cowroute(&["metrics", "set", lab::SINK2_V4, "mtu", "1300", "--expires", "0"]);
    run.cowroute(&["metrics", "set", lab::SINK2_V6, "advmss", "1200", "--expires", "0"]);
    let before = forwarding_state(&run);
    assert!(before.0.len() > 4 && !before.1.is_empty() && before.2.len() == 2, "{before:?}");
    let to: SocketAddr = format!("{}:7803", lab::SINK_V4).parse().unwrap();
    let sink = traffic::UdpSink::bind(&run.lab.sink, "0.0.0.0:7803".parse().unwrap()).unwrap();
    let receiver = std::thread::spawn(move || sink.receive(DATAGRAMS, Duration::from_secs(60)).unwrap().len());
    let gen = run.lab.gen.clone();
    let sender = std::thread::spawn(move || traffic::udp_send(&gen, to, DATAGRAMS, 64, 64, Duration::from_micros(100)).unwrap());
    for crash in ["panic", "sigkill"] {
        std::thread::sleep(Duration::from_millis(500));
        match crash {
            "panic" => {
                let refused = run.control().call(&cowroute::operator::control::Request::Fault { what: "panic".into() });
                assert!(refused.is_err(), "the agent answered instead of crashing");
                let status = run.agent.wait_exit(Duration::from_secs(5)).unwrap();
                assert!(!status.success(), "{crash}: {status:?}");
                assert!(run.agent.log().contains("fault injection: a panic"), "{}", run.agent.log());
                assert!(!run.agent.log().contains("pins removed"), "no teardown ran: {}", run.agent.log());
            }
            _ => run.agent.kill().unwrap(),
        }
        assert!(run.pin_dir.join("ROUTES_V4").exists() && xdp_attached(&run), "{crash}: the data plane is still there");
        let fwd = run.counter("forwarded");
        std::thread::sleep(Duration::from_millis(300));
        assert!(run.counter("forwarded") > fwd, "{crash}: the fast path forwards with no agent running");
        run.restart_agent();
        assert!(run.agent.log().contains("adoption complete"), "{crash}: {}", run.agent.log());
        assert_eq!(forwarding_state(&run), before, "{crash}: the adopting agent forwards with the same state");
    }
    sender.join().unwrap();
    assert_eq!(receiver.join().unwrap(), DATAGRAMS, "every datagram arrived across a panic, a SIGKILL and two restarts");
}

/// A program whose maps differ from the pinned ones refuses to adopt them,
/// says which map and what to do, and leaves the running data plane alone.
#[test]
fn a_changed_map_layout_is_refused_with_what_to_do() {
    let mut run = LabRun::start_custom(&lab_tag('y'), "generic", &["--keep-on-exit"], &|lab| lab.hosts_config());
    assert_eq!(run.agent.stop().unwrap(), 0);
    let mut args = run.run_args.clone();
    args.extend(["--metrics-rw-slots".to_string(), "1024".to_string()]);
    let err = xtask::agent_proc::AgentProc::start(&run.lab.rtr, &run.pin_dir, &args, false).err().expect("refused").to_string();
    assert!(err.contains("METRICS_RW was pinned by a cowroute with another map layout"), "{err}");
    assert!(err.contains("start with --metrics-rw-slots 65536") && err.contains("detach"), "{err}");
    assert!(xdp_attached(&run) && run.pin_dir.join("METRICS_RW").exists(), "the running data plane is untouched");
    let sink = traffic::UdpSink::bind(&run.lab.sink, "0.0.0.0:7802".parse().unwrap()).unwrap();
    traffic::udp_send(&run.lab.gen, format!("{}:7802", lab::SINK_V4).parse().unwrap(), 20, 64, 64, Duration::ZERO).unwrap();
    assert_eq!(sink.receive(20, Duration::from_secs(2)).unwrap().len(), 20);
}

/// Maps made by a build of another ABI (same sizes, another meaning) are
/// not adopted: the ABI stamp is checked first, and a data plane without
/// one is refused too; the running data plane is left alone.
#[test]
fn a_data_plane_of_another_abi_is_refused() {
    let mut run = LabRun::start_custom(&lab_tag('z'), "generic", &["--keep-on-exit"], &|lab| lab.hosts_config());
    assert_eq!(run.agent.stop().unwrap(), 0);
    let stamp = run.pin_dir.join("ABI_STAMP");
    let dump = bpftool_dump(&stamp);
    assert_eq!(dump[0]["value"]["version"], common::abi::VERSION, "{dump:?}");
    let path = stamp.display().to_string();
    sh::run(&mut sh::cmd(
        "bpftool",
        &["map", "update", "pinned", &path, "key", "0", "0", "0", "0", "value", "99", "0", "0", "0", "0", "0", "0", "0"],
    ))
    .unwrap();
    let err = xtask::agent_proc::AgentProc::start(&run.lab.rtr, &run.pin_dir, &run.run_args, false).err().expect("refused").to_string();
    assert!(err.contains("made by a cowroute of another ABI (version 99") && err.contains("detach"), "{err}");
    std::fs::remove_file(&stamp).unwrap();
    let err = xtask::agent_proc::AgentProc::start(&run.lab.rtr, &run.pin_dir, &run.run_args, false).err().expect("refused").to_string();
    assert!(err.contains("has no ABI stamp"), "{err}");
    assert!(xdp_attached(&run) && run.pin_dir.join("ROUTES_V4").exists(), "the running data plane is untouched");
}
