//! Sending frames from gen and capturing what comes out of rtr, once per
//! run: Linux forwarding (no agent), cowroute with kernel forwarding off,
//! cowroute with kernel forwarding on. The lab is prepared so that every
//! run sees the same world: the same routes, permanent neighbours, no ICMP
//! rate limits, hosts that never answer what they receive.

use super::frames::v4;
use crate::{mac_of, LabAgent};
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};
use xtask::{
    lab::{self, Lab},
    sh,
};

/// Destinations rtr routes to sink (sink drops them: not its own, and it
/// does not forward): IPv4, IPv6.
pub const ROUTED_V4: &str = "10.50.0.0/16";
pub const ROUTED_V6: &str = "fd00:50::/32";
/// Routed to sink over a route with `mtu 1300`.
pub const MTU_V4: &str = "10.51.0.0/16";
pub const MTU_V6: &str = "fd00:51::/32";
pub const ROUTE_MTU: u32 = 1300;
/// Blackhole, unreachable and prohibit routes.
pub const BLACKHOLE_V4: &str = "10.52.0.0/16";
pub const BLACKHOLE_V6: &str = "fd00:52::/32";
pub const UNREACHABLE_V4: &str = "10.53.0.0/16";
pub const UNREACHABLE_V6: &str = "fd00:53::/32";
pub const PROHIBIT_V4: &str = "10.54.0.0/16";
pub const PROHIBIT_V6: &str = "fd00:54::/32";
/// A class E prefix routed to sink (Linux takes 240/4 as unicast).
pub const CLASS_E_V4: &str = "240.1.0.0/16";
/// Sources behind gen (routed to it by rtr): every frame that may draw an
/// ICMP error gets one of its own here, so Linux's per-source limiter of
/// `ip_error` (net.ipv4.route.error_cost / error_burst, global and left
/// alone) never holds one back.
pub const BEHIND_GEN_V4: &str = "10.128.0.0/9";
pub const BEHIND_GEN_V6: &str = "fd00:11::/32";
/// Addresses in sink's subnets that are not sink's (spoofed sources):
/// permanent neighbours of rtr at sink's MAC.
pub const SPOOF_SINK_V4: &str = "10.2.0.77";
pub const SPOOF_SINK_V6: &str = "fd00:2::77";
/// Destinations Linux treats as unicast and resolves (permanent
/// neighbours of rtr, so no resolution ever times out during a run).
pub const SINK_NETWORK_V4: &str = "10.2.0.0";
pub const LINK_LOCAL_DST_V6: &str = "fe80::1234";
/// How long after the last frame the captures keep listening.
const SETTLE: Duration = Duration::from_millis(600);

/// The three runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// rtr's kernel forwards (ip_forward=1), no agent: the oracle.
    Linux,
    /// cowroute on rtr, kernel forwarding off.
    CowrouteKernelOff,
    /// cowroute on rtr, kernel forwarding on (what it passes, the kernel forwards).
    CowrouteKernelOn,
    /// Linux again: the oracle against itself, which proves the lab
    /// deterministic (`cargo xtask bench --only conformance` runs it).
    LinuxAgain,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Linux, Mode::CowrouteKernelOff, Mode::CowrouteKernelOn];

    pub fn from_name(name: &str) -> Option<Mode> {
        [Mode::Linux, Mode::CowrouteKernelOff, Mode::CowrouteKernelOn, Mode::LinuxAgain].into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Linux => "linux",
            Mode::CowrouteKernelOff => "cowroute/forwarding-off",
            Mode::CowrouteKernelOn => "cowroute/forwarding-on",
            Mode::LinuxAgain => "linux-again",
        }
    }
}

/// rtr's per-interface IPv4 settings a phase runs with (the same in all
/// three runs of the phase), set on `all`, `default` and both interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sysctls {
    pub rp_filter: u8,
    pub accept_local: u8,
    pub route_localnet: u8,
}

impl Sysctls {
    /// A fresh namespace's values.
    pub const DEFAULT: Sysctls = Sysctls { rp_filter: 0, accept_local: 0, route_localnet: 0 };
}

/// Where a frame was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// Arrived at sink (forwarded, or an error to a source in sink's subnet).
    Sink,
    /// Arrived back at gen (ICMP errors, replies).
    Gen,
}

/// A prepared lab: its MACs and rtr's addresses.
pub struct Env {
    pub gen_mac: [u8; 6],
    pub rtr_gen_mac: [u8; 6],
    pub rtr_sink_mac: [u8; 6],
    pub sink_mac: [u8; 6],
    /// gen's and rtr's (gen side) link-local addresses.
    pub gen_ll: [u8; 16],
    pub rtr_gen_ll: [u8; 16],
    /// rtr's IPv4 and IPv6 addresses (link-local included).
    pub rtr_v4: Vec<[u8; 4]>,
    pub rtr_v6: Vec<[u8; 16]>,
}

/// `dev`'s link-local address, once duplicate address detection is done
/// with it (up to 10 s).
fn link_local_of(ns: &str, dev: &str) -> [u8; 16] {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = sh::ip(&["-n", ns, "-j", "-6", "addr", "show", "dev", dev, "scope", "link"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let infos = v[0]["addr_info"].as_array().cloned().unwrap_or_default();
        if let Some(addr) = infos.iter().filter(|a| a.get("tentative").is_none()).find_map(|a| a["local"].as_str()) {
            return super::frames::v6(addr);
        }
        assert!(Instant::now() < deadline, "no usable link-local address on {dev} in {ns} after 10 s: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn sysctl(ns: &str, settings: &[String]) {
    let args: Vec<&str> = ["-qw"].into_iter().chain(settings.iter().map(String::as_str)).collect();
    sh::run(&mut sh::in_ns(ns, "sysctl", &args)).unwrap();
}

impl Env {
    /// Prepares `l` for the runs: routes in rtr (test prefixes to sink,
    /// blackhole / unreachable / prohibit, an MTU route, sources behind
    /// gen), permanent neighbours in rtr for every host it talks to, no
    /// ICMP rate limits in rtr (all per-namespace settings), and gen and
    /// sink as silent hosts (no forwarding, no answers to broadcasts).
    pub fn prepare(l: &Lab) -> Env {
        let (gen_mac, sink_mac) = (mac_of(&l.gen, &l.gen_if), mac_of(&l.sink, &l.sink_if));
        let env = Env {
            gen_mac,
            rtr_gen_mac: mac_of(&l.rtr, &l.rtr_gen_if),
            rtr_sink_mac: mac_of(&l.rtr, &l.rtr_sink_if),
            sink_mac,
            gen_ll: link_local_of(&l.gen, &l.gen_if),
            rtr_gen_ll: link_local_of(&l.rtr, &l.rtr_gen_if),
            rtr_v4: [lab::RTR_GEN_V4, lab::RTR_SINK_V4].map(v4).to_vec(),
            rtr_v6: vec![
                super::frames::v6(lab::RTR_GEN_V6),
                super::frames::v6(lab::RTR_SINK_V6),
                link_local_of(&l.rtr, &l.rtr_gen_if),
                link_local_of(&l.rtr, &l.rtr_sink_if),
            ],
        };
        let ip = |args: &[&str]| sh::ip(&[&["-n", l.rtr.as_str()][..], args].concat()).unwrap();
        for (p, via) in [(ROUTED_V4, lab::SINK_V4), (ROUTED_V6, lab::SINK_V6), (CLASS_E_V4, lab::SINK_V4)] {
            ip(&["route", "add", p, "via", via]);
        }
        for (p, via) in [(MTU_V4, lab::SINK_V4), (MTU_V6, lab::SINK_V6)] {
            ip(&["route", "add", p, "via", via, "mtu", &ROUTE_MTU.to_string()]);
        }
        for (p, via) in [(BEHIND_GEN_V4, lab::GEN_V4), (BEHIND_GEN_V6, lab::GEN_V6)] {
            ip(&["route", "add", p, "via", via]);
        }
        for (kind, p) in [
            ("blackhole", BLACKHOLE_V4),
            ("blackhole", BLACKHOLE_V6),
            ("unreachable", UNREACHABLE_V4),
            ("unreachable", UNREACHABLE_V6),
            ("prohibit", PROHIBIT_V4),
            ("prohibit", PROHIBIT_V6),
        ] {
            ip(&["route", "add", kind, p]);
        }
        let gen_ll = std::net::Ipv6Addr::from(env.gen_ll).to_string();
        let neighbours = [
            (lab::GEN_V4, &l.rtr_gen_if, gen_mac),
            (lab::GEN_V6, &l.rtr_gen_if, gen_mac),
            (gen_ll.as_str(), &l.rtr_gen_if, gen_mac),
            (lab::SINK_V4, &l.rtr_sink_if, sink_mac),
            (lab::SINK_V6, &l.rtr_sink_if, sink_mac),
            (lab::SINK2_V4, &l.rtr_sink_if, sink_mac),
            (lab::SINK2_V6, &l.rtr_sink_if, sink_mac),
            (SPOOF_SINK_V4, &l.rtr_sink_if, sink_mac),
            (SPOOF_SINK_V6, &l.rtr_sink_if, sink_mac),
            // Unicast to Linux, so resolved: sink's network address, and a
            // link-local destination (Linux forwards it back out of the
            // interface it came in on).
            (SINK_NETWORK_V4, &l.rtr_sink_if, sink_mac),
            (LINK_LOCAL_DST_V6, &l.rtr_gen_if, gen_mac),
        ];
        for (addr, dev, mac) in neighbours {
            ip(&["neigh", "replace", addr, "lladdr", &mac_text(mac), "dev", dev, "nud", "permanent"]);
        }
        let no_limits = [
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv4.icmp_ratemask=0",
            "net.ipv4.icmp_msgs_per_sec=10000000",
            "net.ipv4.icmp_msgs_burst=10000000",
            "net.ipv6.icmp.ratelimit=0",
        ];
        sysctl(&l.rtr, &no_limits.map(String::from));
        for ns in [&l.gen, &l.sink] {
            let silent = ["net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0", "net.ipv4.icmp_echo_ignore_broadcasts=1"];
            sysctl(ns, &silent.map(String::from));
        }
        env
    }

    /// Sets `s` on rtr (all, default and both interfaces) and kernel
    /// forwarding as `mode` runs with.
    pub fn set_rtr(&self, l: &Lab, mode: Mode, s: Sysctls) {
        let fwd = (mode != Mode::CowrouteKernelOff) as u8;
        let mut set = vec![format!("net.ipv4.ip_forward={fwd}"), format!("net.ipv6.conf.all.forwarding={fwd}")];
        for dev in ["all", "default", &l.rtr_gen_if, &l.rtr_sink_if] {
            set.push(format!("net.ipv4.conf.{dev}.rp_filter={}", s.rp_filter));
            set.push(format!("net.ipv4.conf.{dev}.accept_local={}", s.accept_local));
            set.push(format!("net.ipv4.conf.{dev}.route_localnet={}", s.route_localnet));
        }
        sysctl(&l.rtr, &set);
    }
}

/// The agent's arguments in the cowroute runs: generic XDP, no ICMP rate
/// limits (as rtr's kernel has none in the Linux run).
pub const AGENT_ARGS: [&str; 4] = ["--icmp-ratelimit-ms", "0", "--icmp-msgs-per-sec", "0"];

/// A socket's drop count (PACKET_STATISTICS).
fn packet_drops(fd: i32) -> u64 {
    let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as u32;
    let r = unsafe { libc::getsockopt(fd, libc::SOL_PACKET, libc::PACKET_STATISTICS, &mut st as *mut _ as *mut libc::c_void, &mut len) };
    assert_eq!(r, 0, "PACKET_STATISTICS: {}", std::io::Error::last_os_error());
    st.tp_drops as u64
}

fn packet_socket(dev: &str, protocol: u16) -> anyhow::Result<(OwnedFd, i32)> {
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol.to_be() as i32) };
    anyhow::ensure!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(dev).unwrap();
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
    anyhow::ensure!(ifindex > 0, "no interface {dev}");
    Ok((fd, ifindex))
}

/// A capture running on a thread: every frame `dev` in `ns` receives (not
/// those it sends), until stopped.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<(Vec<Vec<u8>>, u64)>>,
}

impl Capture {
    /// Starts capturing; returns once the socket is bound.
    pub fn start(ns: &str, dev: &str) -> Capture {
        let (ns, dev) = (ns.to_string(), dev.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (ready_tx, ready) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            common::netns::enter(&ns)?;
            let (fd, ifindex) = packet_socket(&dev, libc::ETH_P_ALL as u16)?;
            let raw = fd.as_raw_fd();
            // Room for every frame of a long run: the socket is read as
            // fast as it fills, and its drops are counted and reported.
            let rcvbuf: libc::c_int = 256 << 20;
            unsafe { libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf as *const _ as *const libc::c_void, 4) };
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sa.sll_ifindex = ifindex;
            let r = unsafe { libc::bind(raw, &sa as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_ll>() as u32) };
            anyhow::ensure!(r == 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
            unsafe { libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const libc::c_void, 16) };
            packet_drops(raw); // reading resets the counters
            ready_tx.send(()).unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut fl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = unsafe {
                    libc::recvfrom(raw, buf.as_mut_ptr() as *mut _, buf.len(), 0, &mut from as *mut _ as *mut libc::sockaddr, &mut fl)
                };
                if n > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
                    got.push(buf[..n as usize].to_vec());
                }
            }
            Ok((got, packet_drops(raw)))
        });
        ready.recv().expect("capture thread ready");
        Capture { stop, thread }
    }

    /// Stops; the frames and the socket's drop count.
    pub fn finish(self) -> (Vec<Vec<u8>>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("capture thread").expect("capture")
    }
}

/// Sends `frames` out of `dev` in `ns` (AF_PACKET), `rate` frames a second
/// in bursts of up to 16, calling `progress` with the count every 10,000.
pub fn send(ns: &str, dev: &str, frames: Vec<Vec<u8>>, rate: u32, progress: &(dyn Fn(usize) + Sync)) {
    let dev = dev.to_string();
    std::thread::scope(|s| {
        s.spawn(move || {
            common::netns::enter(ns).unwrap();
            let (fd, ifindex) = packet_socket(&dev, 0).unwrap();
            let start = Instant::now();
            for (i, f) in frames.iter().enumerate() {
                let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                sa.sll_family = libc::AF_PACKET as u16;
                sa.sll_ifindex = ifindex;
                sa.sll_halen = 6;
                sa.sll_addr[..6].copy_from_slice(&f[..6]);
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        f.as_ptr() as *const _,
                        f.len(),
                        0,
                        &sa as *const _ as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(n, f.len() as isize, "sendto of frame {i} ({} bytes): {}", f.len(), std::io::Error::last_os_error());
                if (i + 1) % 16 == 0 || i + 1 == frames.len() {
                    let due = start + Duration::from_secs_f64((i + 1) as f64 / rate as f64);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
                if (i + 1) % 10_000 == 0 {
                    progress(i + 1);
                }
            }
        });
    });
}

/// Backlog drops of every CPU (/proc/net/softnet_stat, second column):
/// frames a CPU's input queue had no room for, in any namespace.
pub fn softnet_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).and_then(|w| u64::from_str_radix(w, 16).ok()))
        .sum()
}

/// What one run saw: frames captured at sink and at gen (in arrival order),
/// and the drops that would make the comparison unsound.
pub struct Captured {
    pub frames: Vec<(Side, Vec<u8>)>,
    pub capture_drops: u64,
    pub backlog_drops: u64,
    /// The agent's slow-path statistics (cowroute runs).
    pub stats: Option<serde_json::Value>,
}

/// One run: rtr set up for `mode` and `sysctls`, the agent started for the
/// cowroute modes, `frames` sent from gen at `rate`, sink and gen captured.
pub fn run(l: &Lab, env: &Env, mode: Mode, sysctls: Sysctls, frames: &[Vec<u8>], rate: u32, say: &(dyn Fn(&str) + Sync)) -> Captured {
    env.set_rtr(l, mode, sysctls);
    let agent = matches!(mode, Mode::CowrouteKernelOff | Mode::CowrouteKernelOn)
        .then(|| LabAgent::start(l, "generic", &AGENT_ARGS, &|lab| lab.hosts_config()));
    // The agent logs ready once attached; give its mirror a moment.
    std::thread::sleep(Duration::from_millis(if agent.is_some() { 300 } else { 50 }));
    let backlog = softnet_drops();
    let (sink, gen) = (Capture::start(&l.sink, &l.sink_if), Capture::start(&l.gen, &l.gen_if));
    send(&l.gen, &l.gen_if, frames.to_vec(), rate, &|n| say(&format!("  {}: {n}/{} frames sent", mode.name(), frames.len())));
    std::thread::sleep(SETTLE);
    let ((at_sink, d1), (at_gen, d2)) = (sink.finish(), gen.finish());
    let stats = agent.as_ref().map(|a| a.control().call(&cowroute::operator::control::Request::Stats).expect("Stats"));
    drop(agent);
    let mut out: Vec<(Side, Vec<u8>)> = at_sink.into_iter().map(|f| (Side::Sink, f)).collect();
    out.extend(at_gen.into_iter().map(|f| (Side::Gen, f)));
    Captured { frames: out, capture_drops: d1 + d2, backlog_drops: softnet_drops() - backlog, stats }
}
