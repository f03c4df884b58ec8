//! IPv4 options, IPv6 extension headers and DF-clear fragmentation through
//! the AF_XDP slow path, with Linux as the oracle: the same raw frames from
//! gen once through rtr's kernel forwarding (no agent), once through
//! cowroute with kernel forwarding off; what sink receives (and the ICMP
//! errors gen gets from rtr) compared byte for byte by the conformance
//! suite's machinery (tests/src/conformance), which also runs these cases
//! among its own.

use cowroute_tests::{
    conformance::{
        self, cases,
        runner::{Env, Mode, Side, Sysctls},
    },
    *,
};
use xtask::lab;

#[test]
fn options_extension_headers_and_fragments_leave_as_linux_forwards_them() {
    require_root();
    let l = lab::Lab::up(&lab_tag('o')).expect("lab up");
    let env = Env::prepare(&l);
    let mut c = cases::Cases::new(&env);
    cases::options(&mut c);
    let phase = cases::Phase { name: "options", sysctls: Sysctls::DEFAULT, cases: c.list };
    let say = |m: &str| eprintln!("[slow_path_options] {m}");
    let out = conformance::run_phase(&l, &env, phase, &[Mode::Linux, Mode::CowrouteKernelOff], 1000, &say);

    // The oracle did what the cases are about.
    let linux = out.seen(Mode::Linux);
    let at = |name: &str, side: Side| linux.count(out.case(name), side);
    for name in ["v4 option record route", "v4 option timestamp", "v4 option router alert", "v4 option nop nop eol"] {
        assert_eq!(at(name, Side::Sink), 1, "options forwarded by Linux: {name}");
    }
    for name in ["v4 option loose source route", "v4 option record route bad pointer", "v6 hop-by-hop unknown option: parameter problem"] {
        assert_eq!(at(name, Side::Sink), 0, "refused by Linux: {name}");
    }
    for name in ["v4 df clear too big: fragmented", "v4 df clear too big with options: fragmented"] {
        assert_eq!(at(name, Side::Sink), 2, "fragmented by Linux: {name}");
    }
    for name in ["v6 hop-by-hop router alert", "v6 destination options", "v6 routing type 4 segments left 0", "v6 atomic fragment"] {
        assert_eq!(at(name, Side::Sink), 1, "IPv6 extension headers forwarded by Linux: {name}");
    }
    let errors: usize = (0..out.cases.len()).map(|i| linux.count(i, Side::Gen)).sum();
    assert_eq!(errors, 2, "Linux's parameter problems");

    let d: Vec<String> = out.differences.iter().map(|d| d.to_string()).collect();
    assert!(d.is_empty(), "what sink and gen received, Linux vs cowroute:\n{}", d.join("\n"));

    let stats = &out.stats.iter().find(|(m, _)| *m == Mode::CowrouteKernelOff).expect("the agent's Stats").1;
    let t = &stats["slow_path"]["transit"];
    assert_eq!(t["frames"], 10, "{t}");
    assert_eq!(t["options_forwarded"], 5, "{t}");
    assert_eq!(t["hop_by_hop_forwarded"], 1, "{t}");
    assert_eq!(t["source_routes_refused"], 1, "{t}");
    assert_eq!(t["parameter_problems"], 2, "{t}");
    assert_eq!((t["fragmented"].as_u64(), t["fragments"].as_u64()), (Some(2), Some(4)), "{t}");
}
