//! The AF_XDP slow path's limits, in the lab with kernel forwarding off:
//! every exception is answered by the agent, or passed to the kernel and
//! counted (`UNSERVED`, by cause), whatever the frame's length and the RX
//! queue it arrived on. Never lost uncounted.

use cowroute::{
    dataplane::{DataPlane, LoadOptions},
    operator::control::Request,
};
use cowroute_tests::*;
use std::time::{Duration, Instant};
use xtask::{lab, sh, traffic};

/// Exceptions the slow path could not take for `cause`, by the agent's stats.
fn unserved(run: &LabRun, cause: &str) -> u64 {
    let stats = run.control().call(&Request::Stats).unwrap();
    let all = stats["unserved"].as_array().unwrap_or_else(|| panic!("no unserved counters: {stats}")).clone();
    all.iter().find(|c| c["reason"] == cause).unwrap_or_else(|| panic!("no cause {cause}: {all:?}"))["packets"].as_u64().unwrap()
}

fn eventually(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pred() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// gen -- rtr at MTU 9000 (rtr -- sink stays at 1500): the agent gives rtr's
/// gen side 4096-byte UMEM frames, so a 3,000-byte DF datagram too big for
/// sink's link reaches it and is answered; a 5,000-byte one cannot fit any
/// UMEM frame: the fast path passes it to the kernel (which, forwarding
/// off, answers nothing) and counts it as too_long.
#[test]
fn jumbo_exceptions_are_answered_or_passed_and_counted() {
    require_root();
    let lab = lab::Lab::up(&lab_tag('j')).expect("lab up");
    for (ns, dev) in [(&lab.gen, &lab.gen_if), (&lab.rtr, &lab.rtr_gen_if)] {
        sh::ip(&["-n", ns, "link", "set", "dev", dev, "mtu", "9000"]).unwrap();
    }
    let run = LabRun::start_on(lab, "generic", &[], &|lab| lab.hosts_config());
    let gen = run.lab.gen.clone();
    assert_eq!(unserved(&run, "too_long"), 0);

    let err = icmp_error_about(&gen, lab::SINK_V4, 64, 3000).expect("Frag Needed for the 3,000-byte datagram");
    assert_eq!((err[20], err[21]), (3, 4), "Fragmentation Needed: {:02x?}", &err[20..28]);
    assert_eq!(u16::from_be_bytes([err[26], err[27]]), 1500, "the MTU of sink's link");
    assert_eq!(unserved(&run, "too_long"), 0);

    assert_eq!(icmp_error_about(&gen, lab::SINK_V4, 64, 5000), None, "nothing answers a frame the slow path cannot take");
    eventually("the 5,000-byte frame counted as too_long", || unserved(&run, "too_long") == 1);
    assert!(run.counter("too_big") >= 2, "both are too_big exceptions");
    let show = run.cowroute(&["show", "slowpath"]);
    assert!(show.contains("passed to the kernel instead of the slow path: too_long 1"), "{show}");
}

/// `ping -t 1 SINK` from gen on CPU `cpu`: whether rtr answered with Time Exceeded.
fn time_exceeded_from_cpu(gen: &str, cpu: usize) -> bool {
    let ping = ["-c", &cpu.to_string(), "ping", "-n", "-c", "1", "-W", "1", "-t", "1", lab::SINK_V4];
    let out = sh::output(&mut sh::in_ns(gen, "taskset", &ping)).unwrap();
    String::from_utf8_lossy(&out.stdout).contains("Time to live exceeded")
}

/// A gen -- rtr pair with 32 queues: the slow path serves rtr's queues 0 to
/// 15. gen's XPS sends from CPU 0 on TX queue 3 and from CPU 1 on TX queue
/// 20, and a veth receives on the RX queue of the sender's TX queue: a TTL-1
/// ping from CPU 0 is answered, one from CPU 1 goes to the kernel (which,
/// forwarding off, drops it) and is counted as queue_beyond_slots. Then
/// the program itself, over the agent's maps, on queues 15 and 16.
#[test]
fn exceptions_on_queues_past_the_slots_go_to_the_kernel_counted() {
    require_root();
    let lab = lab::Lab::up_with_queues(&lab_tag('m'), 32).expect("lab up");
    for q in 0..32 {
        let cpus = match q {
            3 => "1",
            20 => "2",
            _ => "0",
        };
        let xps = format!("echo {cpus} > /sys/class/net/{}/queues/tx-{q}/xps_cpus", lab.gen_if);
        sh::run(&mut sh::in_ns(&lab.gen, "sh", &["-c", &xps])).unwrap();
    }
    let run = LabRun::start_on(lab, "native", &[], &|lab| lab.hosts_config());
    let stats = run.control().call(&Request::Stats).unwrap();
    assert_eq!(stats["slow_path"]["sockets"], 16 + 1, "16 of r0's 32 queues and r1's one: {stats}");
    assert!(run.agent.log().contains("more RX queues than the slow path serves"), "{}", run.agent.log());
    let gen = run.lab.gen.clone();

    assert!(time_exceeded_from_cpu(&gen, 0), "queue 3 has a socket: answered");
    assert_eq!(unserved(&run, "queue_beyond_slots"), 0);
    assert!(!time_exceeded_from_cpu(&gen, 1), "queue 20 has none: the kernel's, and it does not forward");
    eventually("queue 20's exception counted", || unserved(&run, "queue_beyond_slots") == 1);
    assert_eq!(unserved(&run, "no_socket"), 0);

    // The boundary, by the program over the agent's pinned maps, as if the
    // frame arrived on r0's queue 15 (the last with a socket) and 16.
    let (pin_dir, rtr, r0) = (run.pin_dir.clone(), run.lab.rtr.clone(), run.lab.rtr_gen_if.clone());
    let r0_mac = mac_of(&rtr, &r0);
    let actions = traffic::in_netns(&rtr, move || {
        let name = std::ffi::CString::new(r0)?;
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        anyhow::ensure!(ifindex != 0, "no r0 in rtr");
        let (mut program, _) = DataPlane::load_pinned(&LoadOptions::default(), &pin_dir)?;
        let dst = lab::SINK_V4.parse::<std::net::Ipv4Addr>()?.octets();
        let frame = eth(r0_mac, [2, 0, 0, 0, 0, 2], None, ETH_P_IP, &ipv4_udp([10, 1, 0, 2], dst, 1, 64));
        let mut actions = Vec::new();
        for queue in [15, 16] {
            actions.push(test_run_on(&mut program, &frame, Some((ifindex, queue)))?.0);
        }
        Ok(actions)
    })
    .unwrap();
    assert_eq!(actions, [XDP_REDIRECT, XDP_PASS], "queue 15 to its socket, queue 16 to the kernel");
    assert_eq!(unserved(&run, "queue_beyond_slots"), 2);
}
