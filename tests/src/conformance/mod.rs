//! The kernel-differential conformance suite (issue 13): the same frames
//! sent from gen through rtr in three runs, Linux forwarding (the oracle),
//! cowroute with kernel forwarding off, cowroute with kernel forwarding
//! on; what arrives at sink and what comes back to gen compared byte for
//! byte, after the mask rules of [`frames::mask`].
//!
//! - [`frames`]: building, parsing, identifying and masking frames.
//! - [`cases`]: the hand-written cases and the sysctl phases.
//! - [`corpus`]: the seeded generator of mutated frames.
//! - [`runner`]: the lab's preparation, the captures, the sender, one run.

pub mod cases;
pub mod corpus;
pub mod frames;
pub mod runner;

use frames::{captured_keys, describe, hex, marker_seq, mask, sent_keys, Key};
use runner::{Captured, Env, Mode, Side, Sysctls};
use std::collections::HashMap;
use xtask::lab::Lab;

/// One frame to send, named.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub frame: Vec<u8>,
}

/// A difference between Linux and cowroute that is expected, for now or
/// for good, with the reason.
#[derive(Debug)]
pub struct KnownDifference {
    /// A hand-written case's name; or `corpus: TOKEN ...`, which covers
    /// every generated frame whose name has all the tokens.
    pub case: &'static str,
    pub reason: &'static str,
}

/// Every difference the suite accepts (`KnownDifference { case, reason }`,
/// a pending fix or an intended one, with its reason). Anything else fails
/// it. None today: every difference the suite has found is fixed.
pub const KNOWN_DIFFERENCES: &[KnownDifference] = &[];

/// The known difference covering case `name`, if any.
pub fn known_difference(name: &str) -> Option<&'static KnownDifference> {
    KNOWN_DIFFERENCES.iter().find(|k| match k.case.strip_prefix("corpus:") {
        Some(tokens) => {
            name.starts_with("corpus ") && tokens.split_whitespace().all(|t| name.split_whitespace().any(|n| token_matches(t, n)))
        }
        None => k.case == name,
    })
}

/// A known difference's token against a corpus name's: equal, or a
/// prefix of it when the token ends with `*`; `key=a|b` matches `key=a`
/// and `key=b`.
fn token_matches(pattern: &str, token: &str) -> bool {
    if let Some((key, alternatives)) = pattern.split_once('=').filter(|(_, a)| a.contains('|')) {
        return alternatives.split('|').any(|a| token_matches(&format!("{key}={a}"), token));
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => token.starts_with(prefix),
        None => pattern == token,
    }
}

/// What one run saw, per case, after masking.
#[derive(Debug, Default)]
pub struct Seen {
    /// Per case (by index): where each frame it caused arrived, and the
    /// masked frame, sorted.
    pub per_case: Vec<Vec<(Side, Vec<u8>)>>,
    /// Captured frames tied to no single case (sorted): compared as a multiset.
    pub unattributed: Vec<(Side, Vec<u8>)>,
    /// The hosts' own traffic that was left out (ARP, ND, MLD, IGMP, ...).
    pub host_traffic: usize,
}

impl Seen {
    /// Frames case `i` caused at `side`.
    pub fn count(&self, i: usize, side: Side) -> usize {
        self.per_case[i].iter().filter(|(s, _)| *s == side).count()
    }
}

/// The hosts' own traffic, which no case caused: anything that is not
/// IPv4/IPv6, IGMP, and ICMPv6 neighbour discovery, MLD and router
/// messages (straight after the header or behind a hop-by-hop header).
/// A frame with the marker is never host traffic.
pub fn is_host_traffic(f: &[u8]) -> bool {
    if marker_seq(f).is_some() {
        return false;
    }
    let Some((off, et)) = frames::l3_of(f) else { return true };
    let ip = &f[off..];
    match et {
        0x0800 => ip.len() < 20 || ip[9] == 2,
        0x86dd if ip.len() >= 40 => {
            let (mut nh, mut at) = (ip[6], 40);
            if nh == 0 && ip.len() >= at + 8 {
                (nh, at) = (ip[at], at + 8 * (ip[at + 1] as usize + 1));
            }
            nh == 58 && ip.get(at).is_some_and(|t| matches!(t, 130..=137 | 143))
        }
        0x86dd => false,
        _ => true,
    }
}

/// Looks the captured frames' causes up: by marker first, else by the
/// first key (see [`frames::captured_keys`]) that names exactly one case.
pub struct Index {
    by_key: HashMap<Key, Vec<usize>>,
    cases: usize,
}

impl Index {
    pub fn new(cases: &[Case]) -> Index {
        let mut by_key: HashMap<Key, Vec<usize>> = HashMap::new();
        for (i, c) in cases.iter().enumerate() {
            if let Some(seq) = marker_seq(&c.frame) {
                assert_eq!(seq as usize, i, "case {:?} carries the marker of frame {seq}", c.name);
            }
            for k in sent_keys(&c.frame) {
                let v = by_key.entry(k).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
        Index { by_key, cases: cases.len() }
    }

    pub fn case_of(&self, f: &[u8]) -> Option<usize> {
        if let Some(seq) = marker_seq(f).filter(|s| (*s as usize) < self.cases) {
            return Some(seq as usize);
        }
        captured_keys(f).iter().find_map(|k| match self.by_key.get(k).map(Vec::as_slice) {
            Some([one]) => Some(*one),
            _ => None,
        })
    }
}

/// Sorts a run's captured frames out per case, masked.
pub fn attribute(index: &Index, env: &Env, captured: &Captured) -> Seen {
    let mut seen = Seen { per_case: vec![Vec::new(); index.cases], ..Seen::default() };
    for (side, f) in &captured.frames {
        if is_host_traffic(f) {
            seen.host_traffic += 1;
            continue;
        }
        let mut m = f.clone();
        mask(&mut m, &env.rtr_v4, &env.rtr_v6);
        match index.case_of(f) {
            Some(i) => seen.per_case[i].push((*side, m)),
            None => seen.unattributed.push((*side, m)),
        }
    }
    seen.per_case.iter_mut().for_each(|v| v.sort());
    seen.unattributed.sort();
    seen
}

/// One case (or the unattributed frames) where a cowroute run did not do
/// what Linux did.
#[derive(Debug)]
pub struct Difference {
    pub phase: &'static str,
    pub mode: Mode,
    pub case: String,
    /// The frame sent (empty for unattributed frames).
    pub frame: Vec<u8>,
    pub linux: Vec<(Side, Vec<u8>)>,
    pub cowroute: Vec<(Side, Vec<u8>)>,
    pub known: Option<&'static KnownDifference>,
}

/// What a case caused, in words: one line per frame, or "nothing".
pub fn verdict(frames: &[(Side, Vec<u8>)]) -> String {
    if frames.is_empty() {
        return "nothing arrived (dropped)".into();
    }
    frames.iter().map(|(s, f)| format!("{s:?}: {} [{}]", describe(f), hex(f))).collect::<Vec<_>>().join("\n      ")
}

impl std::fmt::Display for Difference {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(out, "[{}] {} ({}):", self.phase, self.case, self.mode.name())?;
        if !self.frame.is_empty() {
            writeln!(out, "    frame:    {}", hex(&self.frame))?;
        }
        writeln!(out, "    Linux:    {}", verdict(&self.linux))?;
        write!(out, "    cowroute: {}", verdict(&self.cowroute))?;
        if let Some(k) = self.known {
            write!(out, "\n    known: {}", k.reason)?;
        }
        Ok(())
    }
}

/// Where `ours` differs from `linux`, per case and in the unattributed multiset.
pub fn compare(phase: &'static str, mode: Mode, cases: &[Case], linux: &Seen, ours: &Seen) -> Vec<Difference> {
    let mut out = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        if linux.per_case[i] != ours.per_case[i] {
            out.push(Difference {
                phase,
                mode,
                case: c.name.clone(),
                frame: c.frame.clone(),
                linux: linux.per_case[i].clone(),
                cowroute: ours.per_case[i].clone(),
                // The oracle against itself excuses nothing.
                known: if mode == Mode::LinuxAgain { None } else { known_difference(&c.name) },
            });
        }
    }
    let (only_linux, only_ours) = multiset_difference(&linux.unattributed, &ours.unattributed);
    if !only_linux.is_empty() || !only_ours.is_empty() {
        out.push(Difference {
            phase,
            mode,
            case: "(frames tied to no single case)".into(),
            frame: Vec::new(),
            linux: only_linux,
            cowroute: only_ours,
            known: None,
        });
    }
    out
}

/// The elements of sorted `a` not in sorted `b`, and of `b` not in `a`.
fn multiset_difference<T: Ord + Clone>(a: &[T], b: &[T]) -> (Vec<T>, Vec<T>) {
    let (mut i, mut j, mut only_a, mut only_b) = (0, 0, Vec::new(), Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => (i, j) = (i + 1, j + 1),
            (Some(x), Some(y)) if x < y => (only_a.push(x.clone()), i += 1).1,
            (Some(_), Some(y)) => (only_b.push(y.clone()), j += 1).1,
            (Some(x), None) => (only_a.push(x.clone()), i += 1).1,
            (None, Some(y)) => (only_b.push(y.clone()), j += 1).1,
            (None, None) => unreachable!(),
        }
    }
    (only_a, only_b)
}

/// One phase's runs: what each mode saw, and the differences.
pub struct PhaseOutcome {
    pub name: &'static str,
    pub sysctls: Sysctls,
    pub cases: Vec<Case>,
    pub runs: Vec<(Mode, Seen)>,
    /// The agent's Stats per cowroute run.
    pub stats: Vec<(Mode, serde_json::Value)>,
    pub differences: Vec<Difference>,
}

impl PhaseOutcome {
    pub fn seen(&self, mode: Mode) -> &Seen {
        &self.runs.iter().find(|(m, _)| *m == mode).expect("that mode ran").1
    }

    /// The index of the case named `name`.
    pub fn case(&self, name: &str) -> usize {
        self.cases.iter().position(|c| c.name == name).unwrap_or_else(|| panic!("no case named {name:?}"))
    }
}

/// Runs `phase`'s cases in `modes` (Linux first) with its sysctls, `rate` frames a
/// second; fails when a capture socket or a CPU's backlog dropped a frame
/// (the comparison would not be sound).
pub fn run_phase(l: &Lab, env: &Env, phase: cases::Phase, modes: &[Mode], rate: u32, say: &(dyn Fn(&str) + Sync)) -> PhaseOutcome {
    let cases::Phase { name, sysctls, cases } = phase;
    assert_eq!(modes.first(), Some(&Mode::Linux), "Linux runs first: it is the oracle");
    let index = Index::new(&cases);
    let frames: Vec<Vec<u8>> = cases.iter().map(|c| c.frame.clone()).collect();
    let mut runs = Vec::new();
    let mut stats = Vec::new();
    for &mode in modes {
        let t = std::time::Instant::now();
        let cap = runner::run(l, env, mode, sysctls, &frames, rate, say);
        assert_eq!(cap.capture_drops, 0, "[{name}] {}: the capture sockets dropped {} frames", mode.name(), cap.capture_drops);
        assert_eq!(cap.backlog_drops, 0, "[{name}] {}: CPU backlogs dropped {} frames (softnet_stat)", mode.name(), cap.backlog_drops);
        let seen = attribute(&index, env, &cap);
        say(&format!(
            "[{name}] {}: {} frames sent, {} captured ({} host traffic left out, {} tied to no single case), no drops, {:.1} s",
            mode.name(),
            frames.len(),
            cap.frames.len(),
            seen.host_traffic,
            seen.unattributed.len(),
            t.elapsed().as_secs_f64()
        ));
        if let Some(s) = cap.stats {
            stats.push((mode, s));
        }
        runs.push((mode, seen));
    }
    let mut differences = Vec::new();
    for (mode, seen) in &runs[1..] {
        differences.extend(compare(name, *mode, &cases, &runs[0].1, seen));
    }
    PhaseOutcome { name, sysctls, cases, runs, stats, differences }
}

/// The whole suite's outcome.
pub struct SuiteOutcome {
    pub phases: Vec<PhaseOutcome>,
    /// Hand-written cases in all phases, and in the default phase (which
    /// lists them before the generated frames).
    pub hand_written: usize,
    pub default_hand_written: usize,
    pub generated: usize,
    pub seconds: f64,
}

impl SuiteOutcome {
    pub fn differences(&self) -> impl Iterator<Item = &Difference> {
        self.phases.iter().flat_map(|p| &p.differences)
    }

    /// Differences no known difference covers.
    pub fn unexpected(&self) -> Vec<&Difference> {
        self.differences().filter(|d| d.known.is_none()).collect()
    }

    /// What Linux did with each hand-written case, one line each.
    pub fn linux_table(&self) -> String {
        let mut s = String::new();
        for p in &self.phases {
            let linux = p.seen(Mode::Linux);
            for (i, c) in p.cases.iter().enumerate().filter(|(_, c)| !c.name.starts_with("corpus ")) {
                let what: Vec<String> = linux.per_case[i].iter().map(|(side, f)| format!("{side:?}: {}", describe(f))).collect();
                let what = if what.is_empty() { "dropped".to_string() } else { what.join("; ") };
                s += &format!("[{}] {}: {what}\n", p.name, c.name);
            }
        }
        s
    }

    /// Known differences of hand-written cases that did not show (fixed:
    /// their entries can go).
    pub fn known_not_seen(&self) -> Vec<&'static KnownDifference> {
        // A corpus entry may cover frames only a longer corpus has.
        KNOWN_DIFFERENCES
            .iter()
            .filter(|k| !k.case.starts_with("corpus:"))
            .filter(|k| !self.differences().any(|d| d.known.is_some_and(|x| std::ptr::eq(x, *k))))
            .collect()
    }
}

/// The suite's figures under stable keys (`cargo xtask bench --only
/// conformance` writes them to bench.json as `conformance`).
#[derive(Debug, serde::Serialize)]
pub struct Figures {
    pub hand_written_cases: usize,
    pub generated_frames: usize,
    /// Frames sent in each run (every phase's cases and the corpus).
    pub frames_per_run: usize,
    pub runs: Vec<&'static str>,
    /// Differences from the Linux run, per case and run.
    pub differences: usize,
    pub known_differences: usize,
    pub unexpected_differences: usize,
    /// Of the differences, those of the Linux-again run (the lab's own
    /// nondeterminism: must be 0).
    pub linux_against_linux: usize,
    /// Known differences per reason (the reason's first words).
    pub known_by_reason: std::collections::BTreeMap<String, usize>,
    /// The unexpected ones, printed (at most 100).
    pub unexpected: Vec<String>,
    pub seconds: f64,
}

impl SuiteOutcome {
    pub fn figures(&self) -> Figures {
        let all: Vec<&Difference> = self.differences().collect();
        let unexpected = self.unexpected();
        let mut known_by_reason = std::collections::BTreeMap::new();
        for d in &all {
            if let Some(k) = d.known {
                let short: String = k.reason.split(':').take(2).collect::<Vec<_>>().join(":");
                *known_by_reason.entry(short.chars().take(100).collect()).or_insert(0) += 1;
            }
        }
        Figures {
            hand_written_cases: self.hand_written,
            generated_frames: self.generated,
            frames_per_run: self.phases.iter().map(|p| p.cases.len()).sum(),
            runs: self.phases[0].runs.iter().map(|(m, _)| m.name()).collect(),
            differences: all.len(),
            known_differences: all.len() - unexpected.len(),
            unexpected_differences: unexpected.len(),
            linux_against_linux: all.iter().filter(|d| d.mode == Mode::LinuxAgain).count(),
            known_by_reason,
            unexpected: unexpected.iter().take(100).map(|d| d.to_string()).collect(),
            seconds: self.seconds,
        }
    }
}

/// Frames a second the suite sends: what rtr's slowest path (the agent's
/// AF_XDP slow path answering every frame) keeps up with, with room.
pub const RATE: u32 = 5_000;

/// Builds lab `tag`, prepares it, and runs the default phase (hand-written
/// cases and `generated` corpus frames) and every sysctl phase, each in
/// `modes`.
pub fn run_suite(tag: &str, generated: usize, modes: &[Mode], say: &(dyn Fn(&str) + Sync)) -> SuiteOutcome {
    let t = std::time::Instant::now();
    let l = Lab::up(tag).expect("lab up");
    let env = Env::prepare(&l);
    let mut cases = cases::default_phase(&env);
    let hand = cases.len();
    cases.extend(corpus::generate(&env, corpus::SEED, hand as u32, generated));
    let default = cases::Phase { name: "default", sysctls: Sysctls::DEFAULT, cases };
    let mut phases = vec![run_phase(&l, &env, default, modes, RATE, say)];
    let mut hand_written = hand;
    for p in cases::sysctl_phases(&env) {
        hand_written += p.cases.len();
        phases.push(run_phase(&l, &env, p, modes, RATE, say));
    }
    SuiteOutcome { phases, hand_written, default_hand_written: hand, generated, seconds: t.elapsed().as_secs_f64() }
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn corpus_tokens_match_exactly_by_prefix_or_by_alternatives() {
        assert!(token_matches("opt=rr", "opt=rr"));
        assert!(!token_matches("opt=rr", "opt=rr2"));
        assert!(token_matches("opt=r*", "opt=rr"));
        assert!(token_matches("opt=rr|ts|eol", "opt=ts"));
        assert!(!token_matches("opt=rr|ts", "opt=eol"));
        assert!(!token_matches("opt=rr|ts", "dst=ts"));
    }
}
