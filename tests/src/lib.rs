//! Test support: frame builders and a BPF_PROG_TEST_RUN harness around the
//! real XDP program, with the verdict reason read from its counters.

use aya::{
    maps::{MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use common::{checksum, maps, Counter, Reason};
use cowroute::{
    dataplane::map_writer::MapWriter,
    dataplane::{DataPlane, LoadOptions, PROG_FORWARD},
};

pub use common::proto::{ETH_P_IP, ETH_P_IPV6};

pub mod conformance;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

/// Fails loudly when not root: these tests need the kernel.
pub fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test loads BPF programs and builds namespaces: run it as root (cargo xtask test)");
}

/// The MAC of `dev` in namespace `ns`.
pub fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = xtask::sh::ip(&["-n", ns, "-j", "link", "show", "dev", dev]).expect("ip link show");
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    let s = v[0]["address"].as_str().expect("an address");
    let b: Vec<u8> = s.split(':').map(|x| u8::from_str_radix(x, 16).expect("hex")).collect();
    b.try_into().expect("6 bytes")
}

/// An Ethernet frame around `l3`, with an optional 802.1Q tag.
pub fn eth(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ether_type: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + l3.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(vid) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// An IPv4/UDP packet of `total_len` bytes with a valid header checksum.
pub fn ipv4_udp(src: [u8; 4], dst: [u8; 4], ttl: u8, total_len: usize) -> Vec<u8> {
    assert!(total_len >= 28);
    let mut p = vec![0u8; total_len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = ttl;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&7000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((total_len - 20) as u16).to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// Recomputes the IPv4 header checksum of `p` (after editing the header).
pub fn fix_ipv4_checksum(p: &mut [u8]) {
    let ihl = (p[0] & 0xf) as usize * 4;
    p[10] = 0;
    p[11] = 0;
    let c = checksum::checksum(&p[..ihl.min(p.len())]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// An IPv6/UDP packet with `payload_len` bytes after the IPv6 header.
pub fn ipv6_udp(src: [u8; 16], dst: [u8; 16], hop_limit: u8, payload_len: usize) -> Vec<u8> {
    assert!(payload_len >= 8);
    let mut p = vec![0u8; 40 + payload_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    p[6] = 17;
    p[7] = hop_limit;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p[40..42].copy_from_slice(&4000u16.to_be_bytes());
    p[42..44].copy_from_slice(&7000u16.to_be_bytes());
    p[44..46].copy_from_slice(&(payload_len as u16).to_be_bytes());
    p
}

/// What the program did with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: u32,
    pub reason: Reason,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// The real XDP program, loaded (not attached), with its maps.
pub struct FastPath {
    pub dp: DataPlane,
    pub maps: MapWriter,
    counters: PerCpuArray<MapData, Counter>,
}

impl FastPath {
    pub fn load() -> FastPath {
        require_root();
        let mut dp = DataPlane::load(&LoadOptions::default()).expect("load the XDP program");
        let maps = dp.map_writer().expect("maps");
        let counters = PerCpuArray::try_from(dp.ebpf.take_map(maps::COUNTERS).expect("COUNTERS")).expect("typed");
        FastPath { dp, maps, counters }
    }

    /// Frames to `mac` arriving on `ifindex` (1, loopback: where test runs
    /// arrive) with VLAN `vid` (0: untagged) are for this router, with
    /// rp_filter and the rest off.
    pub fn accept_on(&mut self, ifindex: u32, vid: u32, mac: [u8; 6]) {
        let port = common::ingress::IngressPort { mac, lower_mac: mac, ..Default::default() };
        self.set_port(ifindex, vid, port);
    }

    pub fn set_port(&mut self, ifindex: u32, vid: u32, mut port: common::ingress::IngressPort) {
        port.flags |= common::ingress::IngressPort::PRESENT;
        self.maps.put_ingress_port(common::ingress::IngressKey { ifindex, vid }, &port).expect("INGRESS_PORTS");
    }

    fn counts(&self) -> Vec<u64> {
        Reason::ALL.iter().map(|r| self.counters.get(&(*r as u32), 0).expect("counter").iter().map(|c| c.packets).sum()).collect()
    }

    /// Runs the program once on `frame` (BPF_PROG_TEST_RUN); the reason is
    /// the one counter that moved.
    pub fn run(&mut self, frame: &[u8]) -> Result<Outcome, aya::programs::ProgramError> {
        let before = self.counts();
        let (action, out) = test_run(&mut self.dp, frame)?;
        let after = self.counts();
        let moved: Vec<Reason> = Reason::ALL.iter().zip(before.iter().zip(&after)).filter(|(_, (b, a))| a != b).map(|(r, _)| *r).collect();
        assert_eq!(moved.len(), 1, "exactly one reason counter must move per frame, moved: {moved:?}");
        let r = moved[0];
        assert_eq!(after[r as usize] - before[r as usize], 1);
        Ok(Outcome { action, reason: r, frame: out })
    }

    /// Runs `frame` and asserts the frame was not redirected.
    pub fn run_not_forwarded(&mut self, frame: &[u8]) -> Outcome {
        let o = self.run(frame).expect("test_run");
        assert_ne!(o.action, XDP_REDIRECT, "frame must not be forwarded: {o:?}");
        assert_ne!(o.reason, Reason::Forwarded);
        o
    }
}

/// Runs the forwarding program once on `frame` (BPF_PROG_TEST_RUN): its
/// action and the frame as it left it. Borrows only the program, so the
/// maps can be written meanwhile from another thread.
pub fn test_run(dp: &mut DataPlane, frame: &[u8]) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
    test_run_on(dp, frame, None)
}

/// As [`test_run`]; with `rx`, as if the frame arrived on RX queue `rx.1`
/// of the interface of ifindex `rx.0` (in the calling thread's namespace).
pub fn test_run_on(dp: &mut DataPlane, frame: &[u8], rx: Option<(u32, u32)>) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
    let prog: &mut Xdp = dp.ebpf.program_mut(PROG_FORWARD).unwrap().try_into().unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let ctx: Option<Vec<u8>> =
        rx.map(|(ifindex, queue)| [0u32, frame.len() as u32, 0, ifindex, queue, 0].iter().flat_map(|w| w.to_ne_bytes()).collect());
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = ctx.as_deref();
    let res = prog.test_run(opts)?;
    out.truncate(res.data_size_out as usize);
    Ok((res.return_value, out))
}

/// IPv4 lookups in pinned maps exactly as the XDP program makes them: the
/// DIR-24 block's entry when it has one, else the trie's longest match.
pub struct PinnedV4 {
    pub trie: aya::maps::LpmTrie<MapData, [u8; 4], common::RouteEntry>,
    dir24: cowroute::operator::show::Dir24Reader,
}

impl PinnedV4 {
    pub fn open(pin_dir: &std::path::Path) -> PinnedV4 {
        use cowroute::dataplane::map_writer::open_pinned;
        PinnedV4 {
            trie: open_pinned(pin_dir, maps::ROUTES_V4).unwrap(),
            dir24: cowroute::operator::show::Dir24Reader::open(pin_dir).unwrap(),
        }
    }

    /// The route for `addr` (the trie's entry, which carries the route's
    /// id), and whether the DIR-24 index gave it; where it did, its copy is
    /// asserted to be the trie's entry but the id (routes that forward alike
    /// share a copy).
    pub fn lookup(&self, addr: std::net::Ipv4Addr) -> Option<(common::RouteEntry, bool)> {
        let trie = self.trie.get(&aya::maps::lpm_trie::Key::new(32, addr.octets()), 0).ok();
        if let Some((entry, slot)) = self.dir24.answer(addr).unwrap() {
            let trie = trie.unwrap_or_else(|| panic!("{addr}: the DIR-24 index answers (slot {slot}) where the trie has no route"));
            assert_eq!(
                entry,
                cowroute::dataplane::shared_entries::index_copy(&trie),
                "{addr}: the DIR-24 copy in slot {slot} is not the trie's entry"
            );
            return Some((trie, true));
        }
        trie.map(|e| (e, false))
    }
}

/// A lab with the agent running on rtr, torn down on drop (agent first).
pub struct LabRun {
    pub agent: xtask::agent_proc::AgentProc,
    pub lab: xtask::lab::Lab,
    pub pin_dir: std::path::PathBuf,
    /// `cowroute run` arguments, for a restart.
    pub run_args: Vec<String>,
    _config_dir: TempDir,
}

impl Drop for LabRun {
    /// Whatever the agent left pinned (after a SIGKILL) goes too.
    fn drop(&mut self) {
        let _ = self.agent.stop();
        let _ = cowroute::dataplane::detach(&self.pin_dir);
    }
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("cowroute-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A lab tag unique to this test process and `letter` (at most 8 characters).
pub fn lab_tag(letter: char) -> String {
    format!("{letter}{}", std::process::id() % 1_000_000)
}

impl LabRun {
    /// Builds lab `tag`, starts the agent on rtr in `mode` (native also
    /// gets the veth peers their pass programs), waits for "ready".
    pub fn start(tag: &str, mode: &str, extra_args: &[&str]) -> LabRun {
        LabRun::start_with(tag, mode, extra_args, "")
    }

    /// As [`LabRun::start`], with `extra_config` appended to rtr's config;
    /// the routes come from the config (`--source config`).
    pub fn start_with(tag: &str, mode: &str, extra_args: &[&str], extra_config: &str) -> LabRun {
        let args: Vec<&str> = ["--source", "config"].iter().chain(extra_args).copied().collect();
        LabRun::start_custom(tag, mode, &args, &|lab| lab.router_config() + extra_config)
    }

    /// As [`LabRun::start`], with rtr's config made by `config` from the lab.
    pub fn start_custom(tag: &str, mode: &str, extra_args: &[&str], config: &dyn Fn(&xtask::lab::Lab) -> String) -> LabRun {
        require_root();
        LabRun::start_on(xtask::lab::Lab::up(tag).expect("lab up"), mode, extra_args, config)
    }

    /// As [`LabRun::start_custom`], on a lab already built (and changed as
    /// the test needs before the agent starts).
    pub fn start_on(lab: xtask::lab::Lab, mode: &str, extra_args: &[&str], config: &dyn Fn(&xtask::lab::Lab) -> String) -> LabRun {
        LabRun::start_under(lab, &[], mode, extra_args, config)
    }

    /// As [`LabRun::start_on`], the agent run by `wrapper` (a command and
    /// its arguments, e.g. `env NAME=VALUE`).
    pub fn start_under(
        lab: xtask::lab::Lab,
        wrapper: &[String],
        mode: &str,
        extra_args: &[&str],
        config: &dyn Fn(&xtask::lab::Lab) -> String,
    ) -> LabRun {
        let (agent, pin_dir, run_args, dir) = spawn_agent(&lab, wrapper, mode, extra_args, config);
        LabRun { agent, lab, pin_dir, run_args, _config_dir: dir }
    }

    /// Starts the agent again with the same arguments (the previous one
    /// must have exited or been killed).
    pub fn restart_agent(&mut self) {
        self.agent = xtask::agent_proc::AgentProc::start(&self.lab.rtr, &self.pin_dir, &self.run_args, false).expect("agent ready again");
    }

    /// `cowroute --pin-dir PIN --control-socket SOCK ARGS...`, stdout.
    pub fn cowroute(&self, args: &[&str]) -> String {
        let out = self.cowroute_output(args);
        assert!(out.status.success(), "cowroute {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// As [`LabRun::cowroute`], whatever the exit status.
    pub fn cowroute_output(&self, args: &[&str]) -> std::process::Output {
        let bin = xtask::agent_proc::cowroute_bin().unwrap();
        let mut c = std::process::Command::new(bin);
        c.arg("--pin-dir").arg(&self.pin_dir).arg("--control-socket").arg(&self.agent.control_socket).args(args);
        xtask::sh::output(&mut c).expect("cowroute runs")
    }

    /// A control-socket client to the running agent.
    pub fn control(&self) -> cowroute::operator::control::Client {
        cowroute::operator::control::Client::connect(&self.agent.control_socket).expect("control socket")
    }

    /// Packets counted under `reason`, from `cowroute show stats --json`.
    pub fn counter(&self, reason: &str) -> u64 {
        let v: serde_json::Value = serde_json::from_str(&self.cowroute(&["show", "stats", "--json"])).unwrap();
        v.as_array().unwrap().iter().find(|r| r["reason"] == reason).unwrap()["packets"].as_u64().unwrap()
    }
}

/// Starts the agent on `lab`'s rtr in `mode` (native also gets the veth
/// peers their pass programs) with rtr's config made by `config`; waits for
/// "ready". Returns it, its pin directory, its `run` arguments and the
/// directory holding its config.
fn spawn_agent(
    lab: &xtask::lab::Lab,
    wrapper: &[String],
    mode: &str,
    extra_args: &[&str],
    config: &dyn Fn(&xtask::lab::Lab) -> String,
) -> (xtask::agent_proc::AgentProc, std::path::PathBuf, Vec<String>, TempDir) {
    let tag = lab.tag.as_str();
    let bin = xtask::agent_proc::cowroute_bin().expect("cowroute binary");
    if mode == "native" {
        lab.attach_peer_pass_programs(&bin).expect("pass programs on the veth peers");
    }
    let dir = TempDir::new(tag);
    let cfg = dir.0.join("rtr.toml");
    std::fs::write(&cfg, config(lab)).unwrap();
    let pin_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/cowroute-test-{tag}"));
    let mut args: Vec<String> = vec!["--config".into(), cfg.display().to_string(), "--xdp-mode".into(), mode.into()];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    let agent =
        match xtask::agent_proc::AgentProc::start_under(wrapper, &lab.rtr, &pin_dir, &args, false, std::time::Duration::from_secs(30)) {
            Ok(agent) => agent,
            Err(e) => {
                // It may have pinned its maps before failing (a program the
                // verifier refused): no test leaves pins behind.
                let _ = std::fs::remove_dir_all(&pin_dir);
                panic!("agent ready: {e:?}");
            }
        };
    (agent, pin_dir, args, dir)
}

/// The agent on a lab that outlives it (the lab is borrowed, not owned):
/// stopped, and its pins removed, on drop.
pub struct LabAgent {
    pub agent: xtask::agent_proc::AgentProc,
    pub pin_dir: std::path::PathBuf,
    _config_dir: TempDir,
}

impl LabAgent {
    /// As [`LabRun::start_on`], leaving the lab to the caller.
    pub fn start(lab: &xtask::lab::Lab, mode: &str, extra_args: &[&str], config: &dyn Fn(&xtask::lab::Lab) -> String) -> LabAgent {
        let (agent, pin_dir, _, dir) = spawn_agent(lab, &[], mode, extra_args, config);
        LabAgent { agent, pin_dir, _config_dir: dir }
    }

    /// A control-socket client to the running agent.
    pub fn control(&self) -> cowroute::operator::control::Client {
        cowroute::operator::control::Client::connect(&self.agent.control_socket).expect("control socket")
    }
}

impl Drop for LabAgent {
    fn drop(&mut self) {
        let _ = self.agent.stop();
        let _ = cowroute::dataplane::detach(&self.pin_dir);
    }
}

/// `bpftool -j map dump pinned PATH`: the typed ("formatted") entries.
pub fn bpftool_dump(path: &std::path::Path) -> Vec<serde_json::Value> {
    let out = xtask::sh::run(xtask::sh::cmd("bpftool", &["-j", "map", "dump", "pinned"]).arg(path)).expect("bpftool map dump");
    let all: serde_json::Value = serde_json::from_str(&out).expect("bpftool JSON");
    all.as_array().expect("an array").iter().map(|e| e["formatted"].clone()).collect()
}

/// The IPv4 route entry for `addr/prefix_len` in a `ROUTES_V4` dump.
pub fn find_v4_route(dump: &[serde_json::Value], addr: [u8; 4], prefix_len: u32) -> Option<serde_json::Value> {
    dump.iter().find(|e| e["key"]["prefix_len"] == prefix_len && e["key"]["data"] == serde_json::json!(addr)).map(|e| e["value"].clone())
}

/// The one's-complement sum of `l4` and the IPv4 or IPv6 pseudo header of
/// `src`, `dst` and `proto`.
pub fn l4_sum(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u32 {
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    if src.len() == 4 {
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    } else {
        pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
    }
    checksum::sum_be_words(l4, checksum::sum_be_words(&pseudo, 0))
}

/// The TCP/UDP checksum of `l4` (checksum field included) verifies.
pub fn l4_checksum_ok(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> bool {
    checksum::fold(l4_sum(src, dst, proto, l4)) == 0xffff
}

/// A TCP header with `flags` and `options` (padded to 4 bytes), with a
/// valid checksum over the pseudo header of `src` and `dst`.
pub fn tcp(src: &[u8], dst: &[u8], flags: u8, options: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    t[12] = ((20 + opts.len()) / 4) as u8 * 16;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&opts);
    let c = !checksum::fold(l4_sum(src, dst, 6, &t));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// An IPv4 packet carrying `l4` (protocol `proto`), with a valid header checksum.
pub fn ipv4_with(src: [u8; 4], dst: [u8; 4], ttl: u8, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = ipv4_udp(src, dst, ttl, 28);
    p.truncate(20);
    p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p[9] = proto;
    p.extend_from_slice(l4);
    fix_ipv4_checksum(&mut p);
    p
}

/// An IPv6 packet carrying `l4` (next header `proto`).
pub fn ipv6_with(src: [u8; 16], dst: [u8; 16], hop_limit: u8, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = ipv6_udp(src, dst, hop_limit, 8);
    p.truncate(40);
    p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    p[6] = proto;
    p.extend_from_slice(l4);
    p
}

/// The MSS option with `mss`.
pub fn mss_option(mss: u16) -> [u8; 4] {
    let [hi, lo] = mss.to_be_bytes();
    [2, 4, hi, lo]
}

/// Synthetic route tables with an Internet-like shape, the same on every run.
pub mod synthetic {
    use ipnet::IpNet;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// A small deterministic PRNG (xorshift64*), so every run builds the same table.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed.max(1))
        }
        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// An Internet-like IPv4 prefix-length mix: most /24, then /22-/23, /16-/21,
    /// a few shorter.
    pub fn v4_prefix_len(r: u64) -> u8 {
        match r % 100 {
            0..=59 => 24,
            60..=69 => 23,
            70..=77 => 22,
            78..=83 => 21,
            84..=88 => 20,
            89..=92 => 19,
            93..=95 => 18,
            96..=97 => 16,
            _ => 12 + (r / 100 % 4) as u8,
        }
    }

    /// `n` distinct random IPv4 prefixes (none covering 10.2.0.0/24, the probe's route).
    pub fn v4_table(n: usize, seed: u64) -> Vec<IpNet> {
        v4_table_where(n, seed, |p| !p.contains(&IpAddr::from([10, 2, 0, 2])))
    }

    /// `n` distinct random IPv4 prefixes the kernel takes as unicast routes and
    /// that stay clear of the lab (10/8): first octet 1-223 but 10 and 127.
    pub fn v4_kernel_table(n: usize, seed: u64) -> Vec<IpNet> {
        v4_table_where(n, seed, |p| {
            let IpAddr::V4(a) = p.addr() else { return false };
            let first = a.octets()[0];
            p.prefix_len() >= 8 && (1..=223).contains(&first) && first != 10 && first != 127
        })
    }

    fn v4_table_where(n: usize, seed: u64, keep: impl Fn(&IpNet) -> bool) -> Vec<IpNet> {
        let mut rng = Rng::new(seed);
        let mut set = std::collections::HashSet::with_capacity(n);
        let mut table = Vec::with_capacity(n);
        while table.len() < n {
            let r = rng.next_u64();
            let addr = Ipv4Addr::from((r >> 32) as u32 | 0x0100_0000);
            let p = IpNet::new(addr.into(), v4_prefix_len(r)).unwrap().trunc();
            if keep(&p) && set.insert(p) {
                table.push(p);
            }
        }
        table
    }

    /// An Internet-like IPv6 prefix-length mix: most /48, then /29-/44,
    /// /52-/64, a few longer.
    pub fn v6_prefix_len(r: u64) -> u8 {
        match r % 100 {
            0..=59 => 48,
            60..=66 => 32,
            67..=69 => 29,
            70..=72 => 36,
            73..=78 => 40,
            79..=84 => 44,
            85..=89 => 56,
            90..=92 => 52,
            93..=96 => 64,
            97..=98 => 96,
            _ => 128,
        }
    }

    /// `n` random IPv6 prefixes under 2000::/3 ([`v6_prefix_len`]).
    pub fn v6_table(n: usize, seed: u64) -> Vec<IpNet> {
        let mut rng = Rng::new(seed);
        let mut set = std::collections::HashSet::with_capacity(n);
        while set.len() < n {
            let (a, b) = (rng.next_u64(), rng.next_u64());
            let addr = Ipv6Addr::from(((a as u128) << 64 | b as u128) & !(0xe000u128 << 112) | (0x2000u128 << 112));
            let len = v6_prefix_len(b >> 7);
            set.insert(IpNet::new(addr.into(), len).unwrap().trunc());
        }
        set.into_iter().collect()
    }
}

/// Large route tables put into a lab's kernel FIB with `ip -batch`.
pub mod kernel_table {
    use anyhow::{Context as _, Result};
    use ipnet::IpNet;
    use std::time::{Duration, Instant};
    use xtask::{lab::Lab, sh};

    /// A gateway on rtr's sink link, with the MAC rtr knows it by.
    #[derive(Debug, Clone)]
    pub struct Gateway {
        pub addr: String,
        pub mac: [u8; 6],
    }

    /// `n` gateways 10.2.0.10, .11, ... as permanent neighbours of rtr with
    /// made-up MACs (02:00:00:00:0a:NN), so that each next hop has a MAC
    /// of its own to be told apart by.
    pub fn gateways(lab: &Lab, n: u8) -> Result<Vec<Gateway>> {
        permanent_neighbours(lab, n, 0x0a, |i| format!("10.2.0.{}", 10 + i))
    }

    /// The IPv6 counterparts of [`gateways`]: fd00:2::10, ::11, ... with
    /// MACs 02:00:00:00:0b:NN.
    pub fn gateways_v6(lab: &Lab, n: u8) -> Result<Vec<Gateway>> {
        permanent_neighbours(lab, n, 0x0b, |i| format!("fd00:2::{:x}", 0x10 + i))
    }

    /// `n` permanent neighbours of rtr on its sink link: `addr(i)` with MAC
    /// 02:00:00:00:FAMILY:(10 + i).
    fn permanent_neighbours(lab: &Lab, n: u8, family: u8, addr: impl Fn(u8) -> String) -> Result<Vec<Gateway>> {
        (0..n)
            .map(|i| {
                let (addr, mac) = (addr(i), [0x02, 0, 0, 0, family, 10 + i]);
                let text = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
                sh::ip(&["-n", &lab.rtr, "neigh", "replace", &addr, "lladdr", &text, "dev", &lab.rtr_sink_if, "nud", "permanent"])?;
                Ok(Gateway { addr, mac })
            })
            .collect()
    }

    /// Runs `ip -batch` in rtr with one `route VERB PREFIX via GW [extra]` per
    /// prefix, gateways taken in turn. Returns how long the kernel took.
    pub fn batch(lab: &Lab, verb: &str, table: &[IpNet], gateways: &[Gateway], extra: &str) -> Result<Duration> {
        batch_lines(lab, &route_lines(verb, table, gateways, extra))
    }

    /// One `route VERB PREFIX via GW [extra]` line per prefix, gateways taken in turn.
    pub fn route_lines(verb: &str, table: &[IpNet], gateways: &[Gateway], extra: &str) -> String {
        let mut cmds = String::with_capacity(table.len() * 48);
        for (i, p) in table.iter().enumerate() {
            let gw = &gateways[i % gateways.len()].addr;
            cmds += &format!("route {verb} {p} via {gw} {extra}\n");
        }
        cmds
    }

    /// Runs `ip -batch` in rtr with `cmds` (one `ip` command a line, without
    /// the `ip`). Returns how long the kernel took.
    pub fn batch_lines(lab: &Lab, cmds: &str) -> Result<Duration> {
        static FILES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = std::env::temp_dir().join(format!("cowroute-{}-{}-{n}.batch", lab.tag, std::process::id()));
        std::fs::write(&file, cmds)?;
        let what = cmds.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let start = Instant::now();
        let r = sh::run(sh::cmd("ip", &["-n", &lab.rtr, "-batch"]).arg(&file)).with_context(|| format!("ip -batch ({what} ...)"));
        let took = start.elapsed();
        let _ = std::fs::remove_file(&file);
        r.map(|_| took)
    }
}

/// Sends one UDP datagram of `len` bytes (IP header included) with `ttl`
/// and DF set from `ns` to `to`, and returns the first ICMP error about it
/// that `ns` receives (IP header and all), if one comes within 2 s.
pub fn icmp_error_about(ns: &str, to: &'static str, ttl: u32, len: usize) -> Option<Vec<u8>> {
    xtask::traffic::in_netns(ns, move || {
        let to: std::net::Ipv4Addr = to.parse()?;
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
        anyhow::ensure!(raw >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let raw = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&raw);
        let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
        let tv = &timeout as *const _ as *const libc::c_void;
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, tv, std::mem::size_of::<libc::timeval>() as u32) };
        let udp = std::net::UdpSocket::bind("0.0.0.0:0")?;
        let ufd = std::os::fd::AsRawFd::as_raw_fd(&udp);
        // DF set whatever the path MTU cache says.
        let (probe, ttl) = (libc::IP_PMTUDISC_PROBE, ttl as libc::c_int);
        unsafe { libc::setsockopt(ufd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, &probe as *const _ as *const libc::c_void, 4) };
        unsafe { libc::setsockopt(ufd, libc::IPPROTO_IP, libc::IP_TTL, &ttl as *const _ as *const libc::c_void, 4) };
        udp.send_to(&vec![0x5a; len - 28], (to, 7995))?;
        let mut buf = vec![0u8; 2048];
        loop {
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Ok(None);
            }
            let p = &buf[..n as usize];
            // An error (type 3 or 11) quoting a packet to `to`.
            if p.len() >= 48 && matches!(p[20], 3 | 11) && p[28 + 16..28 + 20] == to.octets() {
                return Ok(Some(p.to_vec()));
            }
        }
    })
    .unwrap()
}
