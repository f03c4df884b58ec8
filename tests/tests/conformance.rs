//! The kernel-differential conformance suite (issue 13; README, "Conformance
//! with Linux"): every hand-written case and 20,000 generated frames sent
//! from gen through rtr three times, Linux forwarding, cowroute with kernel
//! forwarding off, cowroute with it on; what reaches sink and what comes
//! back to gen compared byte for byte. Any difference not in
//! `KNOWN_DIFFERENCES` fails the test, naming the case and the frame.

use cowroute_tests::{
    conformance::{self, runner::Mode, runner::Side},
    *,
};

/// Generated frames per CI run (`cargo xtask bench --only conformance` sends 200,000).
const GENERATED: usize = 20_000;

fn say(msg: &str) {
    eprintln!("[conformance] {msg}");
}

#[test]
fn cowroute_forwards_and_answers_exactly_as_linux() {
    require_root();
    // For investigations: COWROUTE_CONFORMANCE_MODES=linux,linux-again
    // (the oracle against itself), COWROUTE_CONFORMANCE_FRAMES=N,
    // COWROUTE_CONFORMANCE_VERBOSE=1 (what Linux did with every case).
    let modes: Vec<Mode> = std::env::var("COWROUTE_CONFORMANCE_MODES")
        .map(|s| s.split(',').map(|m| Mode::from_name(m).unwrap_or_else(|| panic!("no mode {m:?}"))).collect())
        .unwrap_or(Mode::ALL.to_vec());
    let generated = std::env::var("COWROUTE_CONFORMANCE_FRAMES").map_or(GENERATED, |n| n.parse().expect("a number of frames"));
    let out = conformance::run_suite(&lab_tag('c'), generated, &modes, &say);
    if std::env::var_os("COWROUTE_CONFORMANCE_VERBOSE").is_some() {
        eprint!("{}", out.linux_table());
    }

    // The oracle worked: Linux forwarded the plain cases, answered the
    // TTL and MTU cases, fragmented, delivered locally, and forwarded a
    // good part of the corpus. Without this a broken lab would pass.
    let main = &out.phases[0];
    let linux = main.seen(Mode::Linux);
    let at = |name: &str, side: Side| linux.count(main.case(name), side);
    for name in ["v4 udp forwarded", "v4 tcp syn forwarded", "v4 icmp echo forwarded", "v6 udp forwarded", "v6 tcp syn forwarded"] {
        assert_eq!((at(name, Side::Sink), at(name, Side::Gen)), (1, 0), "Linux forwards {name:?}: {:?}", linux.per_case[main.case(name)]);
    }
    for name in
        ["v4 ttl 1", "v6 hop limit 1", "v4 df set too big: fragmentation needed", "v6 too big: packet too big", "v4 unreachable route"]
    {
        assert_eq!((at(name, Side::Sink), at(name, Side::Gen)), (0, 1), "Linux answers {name:?} with one ICMP error");
    }
    assert_eq!(at("v4 df clear too big: fragmented", Side::Sink), 2, "Linux fragments");
    assert_eq!(at("v4 echo to rtr's gen-side address", Side::Gen), 1, "Linux answers an echo to itself");
    let corpus: Vec<usize> = (out.default_hand_written..main.cases.len()).collect();
    let forwarded = corpus.iter().filter(|&&i| linux.count(i, Side::Sink) > 0).count();
    let answered = corpus.iter().filter(|&&i| linux.count(i, Side::Gen) > 0).count();
    say(&format!("corpus: Linux forwarded {forwarded} of {} generated frames, answered {answered}", corpus.len()));
    assert!(forwarded > corpus.len() / 5 && answered > corpus.len() / 20, "the corpus exercises forwarding and errors");
    for p in &out.phases[1..] {
        let plain = p.cases.iter().position(|c| c.name.ends_with(": plain forwarded")).unwrap();
        assert_eq!(p.seen(Mode::Linux).count(plain, Side::Sink), 1, "[{}] Linux forwards the plain case", p.name);
    }

    let all: Vec<_> = out.differences().collect();
    for d in &all {
        eprintln!("{d}");
    }
    for k in out.known_not_seen() {
        say(&format!("known difference no longer seen (remove it from KNOWN_DIFFERENCES): {} ({})", k.case, k.reason));
    }
    let unexpected = out.unexpected();
    say(&format!(
        "{} hand-written cases, {} generated frames, {} runs each: {} differences, {} of them known, {} unexpected; {:.0} s",
        out.hand_written,
        out.generated,
        modes.len(),
        all.len(),
        all.len() - unexpected.len(),
        unexpected.len(),
        out.seconds
    ));
    assert!(
        unexpected.is_empty(),
        "{} differences from Linux:\n{}",
        unexpected.len(),
        unexpected.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
    );
}
