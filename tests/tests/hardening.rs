//! The agent under the conditions of a real deployment: the shipped systemd
//! unit's capability set, optional parts that cannot start.

use cowroute::operator::control::Request;
use cowroute_tests::*;
use std::{net::SocketAddr, time::Duration};
use xtask::{agent_proc::AgentProc, lab, traffic};

/// The capabilities the shipped unit grants (`CapabilityBoundingSet=`),
/// in setpriv's spelling (`net_admin`, ...).
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/dist/cowroute.service")).unwrap();
    let line = unit.lines().find_map(|l| l.strip_prefix("CapabilityBoundingSet=")).expect("the unit sets CapabilityBoundingSet");
    let ambient = unit.lines().find_map(|l| l.strip_prefix("AmbientCapabilities=")).expect("the unit sets AmbientCapabilities");
    assert_eq!(line, ambient, "ambient and bounding sets agree");
    line.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_lowercase()).collect()
}

/// `setpriv` limiting the agent to exactly `caps`, as systemd would.
fn under(caps: &[String]) -> Vec<String> {
    let set = format!("-all,{}", caps.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(","));
    ["setpriv".to_string(), format!("--bounding-set={set}"), format!("--inh-caps={set}"), format!("--ambient-caps={set}"), "--".into()]
        .to_vec()
}

/// The bounding set the kernel reports for `pid` (CapBnd in /proc).
fn bounding_set(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap().trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn restart_under(run: &mut LabRun, caps: &[String]) {
    run.agent.stop().unwrap();
    run.agent = AgentProc::start_under(&under(caps), &run.lab.rtr, &run.pin_dir, &run.run_args, false, Duration::from_secs(30))
        .expect("the agent starts under the unit's capabilities");
}

fn delivered(run: &LabRun, port: u16, count: usize) -> usize {
    let to: SocketAddr = format!("{}:{port}", lab::SINK_V4).parse().unwrap();
    let sink = traffic::UdpSink::bind(&run.lab.sink, format!("0.0.0.0:{port}").parse().unwrap()).unwrap();
    traffic::udp_send(&run.lab.gen, to, count, 64, 64, Duration::from_millis(1)).unwrap();
    sink.receive(count, Duration::from_secs(2)).unwrap().len()
}

/// Run with exactly the capabilities of agent/dist/cowroute.service, the
/// agent has everything: the AF_XDP slow path (CAP_NET_RAW), the frame
/// sender of the neighbour queue, forwarding; nothing is degraded.
#[test]
fn the_shipped_units_capabilities_run_every_part() {
    let caps = unit_capabilities();
    assert!(caps.contains(&"net_raw".to_string()), "AF_XDP and AF_PACKET sockets need CAP_NET_RAW: {caps:?}");
    let mut run = LabRun::start_custom(&lab_tag('u'), "generic", &[], &|lab| lab.hosts_config());
    restart_under(&mut run, &caps);
    let bnd = bounding_set(run.agent.pid());
    assert_eq!(bnd.count_ones() as usize, caps.len(), "the agent runs with exactly the unit's {caps:?}: CapBnd {bnd:#x}");
    let stats = run.control().call(&Request::Stats).unwrap();
    assert_eq!(stats["degraded"], serde_json::json!([]), "{stats}");
    assert!(stats["slow_path"]["sockets"].as_u64() > Some(0), "{stats}");
    assert_eq!(delivered(&run, 7900, 20), 20);
    // A TTL-1 ping is answered by the slow path, over AF_XDP.
    let before = run.control().call(&Request::Stats).unwrap()["slow_path"]["icmp_sent"].as_u64().unwrap();
    let _ = xtask::sh::run(&mut xtask::sh::in_ns(&run.lab.gen, "ping", &["-c", "1", "-t", "1", "-W", "1", lab::SINK_V4]));
    let after = run.control().call(&Request::Stats).unwrap()["slow_path"]["icmp_sent"].as_u64().unwrap();
    assert!(after > before, "Time Exceeded sent by the slow path under the unit's capabilities");
}

/// Without CAP_NET_RAW (a unit missing it) the agent still forwards: the
/// slow path and the frame sender degrade, loudly and counted, and it runs
/// on instead of restarting every second. So does a Prometheus address
/// already taken.
#[test]
fn optional_parts_that_cannot_start_degrade_counted_never_exit() {
    let caps: Vec<String> = unit_capabilities().into_iter().filter(|c| c != "net_raw").collect();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut run = LabRun::start_custom(&lab_tag('g'), "generic", &[], &|lab| lab.hosts_config());
    // The port is taken inside rtr's namespace: bind it there first.
    let port = taken.local_addr().unwrap().port();
    drop(taken);
    let holder = xtask::traffic::in_netns(&run.lab.rtr, move || Ok(std::net::TcpListener::bind(("127.0.0.1", port))?)).unwrap();
    run.run_args.extend(["--metrics-listen".to_string(), format!("127.0.0.1:{port}")]);
    restart_under(&mut run, &caps);
    std::thread::sleep(Duration::from_millis(1500));
    let stats = run.control().call(&Request::Stats).unwrap();
    let degraded: Vec<String> = serde_json::from_value(stats["degraded"].clone()).unwrap();
    for part in ["slow_path", "neighbour_queue", "prometheus"] {
        assert!(degraded.iter().any(|d| d.starts_with(part)), "{part} degraded: {degraded:?}");
    }
    assert_eq!(delivered(&run, 7901, 20), 20, "forwarding goes on");
    let log = run.agent.log();
    assert!(log.contains("slow path: AF_XDP unavailable") && log.contains("running without the Prometheus endpoint"), "{log}");
    assert!(run.control().call(&Request::Stats).is_ok(), "the agent still answers");
    drop(holder);
}

/// The local interfaces under abuse: idle and flooding Prometheus clients
/// never stop the agent or its control socket; an endless request line is
/// refused and closed; a peer that is not root (nor the agent's user, nor
/// in --control-group) is refused by its credentials; the socket is 0600.
#[test]
fn local_interfaces_survive_floods_and_refuse_strangers() {
    use std::{io::Write as _, os::unix::fs::PermissionsExt as _};
    let run = LabRun::start_custom(&lab_tag('f'), "generic", &["--metrics-listen", "127.0.0.1:9471"], &|lab| lab.hosts_config());
    let mode = std::fs::metadata(&run.agent.control_socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
    // 200 idle connections to the metrics endpoint (its cap is 16).
    let idle = xtask::traffic::in_netns(&run.lab.rtr, || {
        Ok((0..200).map(|_| std::net::TcpStream::connect("127.0.0.1:9471")).collect::<Result<Vec<_>, _>>()?)
    })
    .unwrap();
    let t = std::time::Instant::now();
    assert!(run.control().call(&Request::Stats).is_ok(), "the control socket answers through the flood");
    assert!(t.elapsed() < Duration::from_secs(1), "at once: {:?}", t.elapsed());
    assert_eq!(delivered(&run, 7902, 20), 20, "forwarding goes on");
    drop(idle);
    // The idle ones time out (5 s) or are gone: scrapes are served again.
    std::thread::sleep(Duration::from_millis(300));
    let body = xtask::traffic::in_netns(&run.lab.rtr, || {
        use std::io::Read as _;
        let mut s = std::net::TcpStream::connect("127.0.0.1:9471")?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200") && body.contains("cowroute_routes"), "{body}");
    // An endless request line: refused, closed, and the agent answers on.
    let mut s = std::os::unix::net::UnixStream::connect(&run.agent.control_socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..8 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut answer = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&s), &mut answer);
    assert!(answer.contains("longer than 65536 bytes"), "{answer}");
    assert!(run.control().call(&Request::Stats).is_ok());
    // A stranger (uid 65534): the 0600 socket keeps it out; opened up by
    // hand, SO_PEERCRED still does.
    let bin = xtask::agent_proc::cowroute_bin().unwrap();
    let stranger = || {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .arg("--control-socket")
            .arg(&run.agent.control_socket)
            .args(["metrics", "show"])
            .output()
            .unwrap()
    };
    let out = stranger();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    std::fs::set_permissions(&run.agent.control_socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = stranger();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(run.agent.log().contains("a peer without access"), "{}", run.agent.log());
    assert!(run.control().call(&Request::Stats).is_ok(), "root still gets in");
}

/// Two agents never write the same maps: a second one for a pin directory
/// that a running agent holds is refused (whatever its control socket),
/// and the running one goes on.
#[test]
fn a_second_agent_for_the_same_pin_directory_is_refused() {
    let run = LabRun::start_custom(&lab_tag('w'), "generic", &[], &|lab| lab.hosts_config());
    let bin = xtask::agent_proc::cowroute_bin().unwrap();
    let out = std::process::Command::new(bin)
        .args(["--netns", &run.lab.rtr, "--pin-dir"])
        .arg(&run.pin_dir)
        .args(["--control-socket", &format!("/run/cowroute/second-{}.sock", std::process::id()), "run"])
        .args(&run.run_args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("another agent (pid {})", run.agent.pid())) && err.contains("one writer per pin directory"), "{err}");
    assert!(run.control().call(&Request::Stats).is_ok(), "the first agent goes on");
    assert_eq!(delivered(&run, 7903, 10), 10);
}

/// A reload that fails while applying (here: more distinct metric sets
/// than METRICS_RO has slots) is rolled back: the routes it had set are
/// gone again, the running config's are all there, and the log says so.
#[test]
fn a_reload_that_cannot_be_applied_is_rolled_back() {
    let run = LabRun::start(&lab_tag('b'), "generic", &[]);
    let cfg = std::path::PathBuf::from(&run.run_args[run.run_args.iter().position(|a| a == "--config").unwrap() + 1]);
    let base = std::fs::read_to_string(&cfg).unwrap();
    let dev = run.lab.rtr_sink_if.clone();
    let routes = || -> std::collections::BTreeSet<String> {
        let v: serde_json::Value = serde_json::from_str(&run.cowroute(&["show", "routes", "--json"])).unwrap();
        v.as_array().unwrap().iter().map(|r| r["prefix"].as_str().unwrap().to_string()).collect()
    };
    let before = routes();
    let n = common::capacity::METRICS_RO as usize + 20;
    let mut big = base.clone();
    for i in 0..n {
        big += &format!(
            "\n[[route]]\nprefix = \"13.{}.{}.0/24\"\ndev = \"{dev}\"\nmtu = {}\nadvmss = {}\n",
            i / 256,
            i % 256,
            600 + i % 8000,
            500 + i / 8000
        );
    }
    std::fs::write(&cfg, &big).unwrap();
    unsafe { libc::kill(run.agent.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !run.agent.log().contains("config reload refused") && !run.agent.log().contains("config reloaded") {
        assert!(std::time::Instant::now() < deadline, "no refusal logged:\n{}", run.agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = run.agent.log();
    assert!(log.contains("while setting routes; rolled back") && log.contains("METRICS_RO is full"), "{log}");
    assert!(!log.contains("rollback incomplete"), "{log}");
    assert_eq!(routes(), before, "exactly the running config's routes again");
    assert_eq!(delivered(&run, 7904, 10), 10);
    let stats = run.control().call(&Request::Stats).unwrap();
    assert!(stats["metrics_ro_in_use"].as_u64() < Some(10), "the staged sets were released: {}", stats["metrics_ro_in_use"]);
}
