//! The AF_XDP slow path (`--slow-path afxdp`): one socket per RX queue of
//! each attached interface, in the `SLOW_PATH` XSKMAP, each served by a
//! thread. The fast path hands it the frames that need an ICMP error behind
//! a [`SlowPathHeader`] saying why; the thread builds the error
//! ([`crate::slow_path::icmp`]) and asks the rate limiter
//! ([`crate::slow_path::icmp_limit`]), and the daemon routes what is let
//! through as `icmp_send` routes it (the route back to the source, its
//! neighbour; none, none sent) and sends it ([`egress`]).
//!
//! Zero-copy where the driver offers it, else copy mode (veth). Each socket
//! has its own UMEM, all of it for the fill ring.
//! The frames are 2048 bytes, or 4096 on an interface whose MTU needs them
//! (jumbo frames up to some 3,800 bytes reach the agent); the fast path
//! passes a longer frame to the kernel and counts it (`UNSERVED`), as it
//! does an exception on a queue past [`MAX_QUEUES`] or without a socket.
//! Each interface has its own slot of `SLOW_PATH` keys
//! (`SLOW_PATH_IFACES`), so no two (interface, queue) pairs share a socket.
//! A thread per socket rather than a tokio task: the ring loop is a
//! blocking poll by nature, and the UMEM it owns may not cross threads.

pub mod egress;
pub mod fragment;
pub mod icmp;
pub mod icmp_limit;
pub mod ip_options;
pub mod ipv6_hbh;
pub mod neighbour_queue;
pub mod pmtu;
pub mod pmtu_report;
pub mod transit;
mod xsk;

use crate::{
    slow_path::icmp::{ErrorKind, IfAddrs},
    slow_path::icmp_limit::{Limiter, RateLimits},
};
use anyhow::{anyhow, Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, XskMap};
use common::slow_path::{socket_key, SlowPathHeader, SlowPathIface, IFACE_SLOTS, MAX_QUEUES};
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    thread::JoinHandle,
    time::Instant,
};
use xdpilone::SocketConfig;
pub use xsk::frame_size_for;
use xsk::{XskSocket, XDP_PACKET_HEADROOM};

/// What the slow path needs to know of an interface it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// RX queues (IFLA_NUM_RX_QUEUES): a socket on each, up to [`MAX_QUEUES`].
    pub queues: u32,
    /// Its MTU, which sizes the UMEM frames.
    pub mtu: u32,
}

/// Where the slow path is: the agent over AF_XDP, or the kernel stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowPathMode {
    /// The agent answers with ICMP errors over AF_XDP sockets.
    Afxdp,
    /// Exceptions go to the kernel stack (which answers as its settings say).
    #[default]
    Kernel,
}

/// What the slow path has done, for `Stats` and Prometheus.
#[derive(Debug, Default)]
pub struct SlowPathStats {
    /// AF_XDP sockets open.
    pub sockets: AtomicU64,
    pub frames: AtomicU64,
    pub icmp_sent: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Frames that get no error (an error about an error, a group source, ...).
    pub refused: AtomicU64,
    /// Frames the slow path could not read: dropped and counted.
    pub malformed: AtomicU64,
    /// ICMP errors with no route back to their destination (the kernel
    /// sends none either), or to one of the router's own addresses.
    pub no_route_back: AtomicU64,
    /// ICMP errors the device refused (the AF_PACKET send failed).
    pub send_failed: AtomicU64,
    /// Frames the kernel could not put on a socket's RX ring (ring full,
    /// no free frame): a burst beyond what the slow path takes in.
    pub socket_dropped: AtomicU64,
    /// Neighbour misses (and transit frames) the daemon's queue had no room for.
    pub misses_dropped: AtomicU64,
    /// Packets in transit the agent forwards itself.
    pub transit: transit::TransitStats,
}

impl SlowPathStats {
    pub fn snapshot(&self, mode: SlowPathMode) -> SlowPathSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SlowPathSnapshot {
            mode,
            sockets: g(&self.sockets),
            frames: g(&self.frames),
            icmp_sent: g(&self.icmp_sent),
            rate_limited: g(&self.rate_limited),
            refused: g(&self.refused),
            malformed: g(&self.malformed),
            no_route_back: g(&self.no_route_back),
            send_failed: g(&self.send_failed),
            socket_dropped: g(&self.socket_dropped),
            misses_dropped: g(&self.misses_dropped),
            transit: self.transit.snapshot(),
        }
    }
}

/// [`SlowPathStats`] read at one moment, with the mode the slow path runs in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlowPathSnapshot {
    pub mode: SlowPathMode,
    pub sockets: u64,
    pub frames: u64,
    pub icmp_sent: u64,
    pub rate_limited: u64,
    pub refused: u64,
    pub malformed: u64,
    #[serde(default)]
    pub no_route_back: u64,
    #[serde(default)]
    pub send_failed: u64,
    pub socket_dropped: u64,
    pub misses_dropped: u64,
    #[serde(default)]
    pub transit: transit::TransitSnapshot,
}

/// A frame whose next hop has no neighbour yet, for the daemon's queue.
#[derive(Debug)]
pub struct NeighbourMiss {
    /// The `NEXTHOPS` id the fast path chose.
    pub nexthop: u32,
    /// The frame as it arrived, and where (an error about it goes back there).
    pub held: neighbour_queue::Held,
}

/// What a socket thread hands the daemon.
#[derive(Debug)]
pub enum Handoff {
    /// A frame to hold until its neighbour is resolved.
    Miss(NeighbourMiss),
    /// A frame in transit to finish ([`transit`]): options, hop-by-hop
    /// header, or too big with DF clear.
    Transit(neighbour_queue::Held),
    /// An ICMP error to route and send.
    Error(AdmittedError),
}

/// An ICMP error the rules and the rate limits let through, built with the
/// ingress interface's addresses: the daemon routes it.
#[derive(Debug)]
pub struct AdmittedError {
    /// The frame it is about, as it arrived.
    pub about: neighbour_queue::Held,
    pub kind: ErrorKind,
    pub reply: icmp::Reply,
}

/// What the socket threads share with the daemon.
pub struct Shared {
    /// Addresses of each interface, kept current by the daemon: the errors' source.
    pub ifaddrs: RwLock<HashMap<u32, IfAddrs>>,
    pub limiter: Mutex<Limiter>,
    pub stats: SlowPathStats,
    /// Where neighbour misses and transit frames go (the daemon's loop).
    pub misses: tokio::sync::mpsc::Sender<Handoff>,
}

impl Shared {
    pub fn new(limits: RateLimits, misses: tokio::sync::mpsc::Sender<Handoff>) -> Arc<Shared> {
        Arc::new(Shared {
            ifaddrs: RwLock::new(HashMap::new()),
            limiter: Mutex::new(Limiter::new(limits, Instant::now())),
            stats: SlowPathStats::default(),
            misses,
        })
    }

    /// Every interface's addresses, from a dump.
    pub fn set_addresses(&self, dump: &[crate::fib::netlink_mirror::Event]) {
        self.ifaddrs.write().expect("not poisoned").clear();
        for ev in dump {
            if let crate::fib::netlink_mirror::Event::Address { index, addr, present: true } = ev {
                self.note_address(*index, *addr, true);
            }
        }
    }

    /// An address appeared on or left interface `index`.
    pub fn note_address(&self, index: u32, addr: IpAddr, present: bool) {
        let mut all = self.ifaddrs.write().expect("not poisoned");
        let e = all.entry(index).or_default();
        match (addr, present) {
            (IpAddr::V4(a), true) if e.v4.is_none() => e.v4 = Some(a),
            (IpAddr::V6(a), true) if a.is_unicast_link_local() && e.v6_link_local.is_none() => {
                e.v6_link_local = Some(a);
                e.v6.get_or_insert(a);
            }
            // A global address beats a link-local one as the errors' source.
            (IpAddr::V6(a), true) if e.v6.is_none_or(|v| v.is_unicast_link_local() && !a.is_unicast_link_local()) => e.v6 = Some(a),
            (IpAddr::V4(a), false) if e.v4 == Some(a) => e.v4 = None,
            (IpAddr::V6(a), false) if e.v6 == Some(a) || e.v6_link_local == Some(a) => {
                if e.v6_link_local == Some(a) {
                    e.v6_link_local = None;
                }
                if e.v6 == Some(a) {
                    e.v6 = e.v6_link_local;
                }
            }
            _ => {}
        }
    }

    /// The addresses of interface `ifindex` (an error's source).
    pub fn addresses(&self, ifindex: u32) -> IfAddrs {
        self.ifaddrs.read().expect("not poisoned").get(&ifindex).copied().unwrap_or_default()
    }

    /// Is `a` one of the router's IPv4 interface addresses?
    pub fn is_local_v4(&self, a: Ipv4Addr) -> bool {
        self.ifaddrs.read().expect("not poisoned").values().any(|x| x.v4 == Some(a))
    }

    /// The ICMP error `kind` about `original` from the addresses of
    /// `ifindex`.
    pub fn error_from(&self, ifindex: u32, original: &[u8], kind: ErrorKind) -> Result<icmp::Reply, icmp::Refusal> {
        icmp::error_for(original, kind, &self.addresses(ifindex), &|a| self.is_local_v4(a))
    }

    /// Takes one frame from the fast path: a neighbour miss, a frame in
    /// transit, or an admitted ICMP error, for the daemon; whether it was
    /// handed over (what is not is counted).
    pub fn answer(&self, ifindex: u32, frame: &[u8]) -> bool {
        let stats = &self.stats;
        stats.frames.fetch_add(1, Ordering::Relaxed);
        let Some((header, original)) = SlowPathHeader::parse(frame) else {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let held = || neighbour_queue::Held::transit(ifindex, original.to_vec());
        let handoff = match header.reason() {
            Some(common::Reason::NoNeighbour) => Handoff::Miss(NeighbourMiss { nexthop: header.detail, held: held() }),
            Some(r) if transit::is_transit(r, original) => {
                transit::TransitStats::bump(&stats.transit.frames, 1);
                Handoff::Transit(held())
            }
            reason => {
                let Some(kind) = reason.and_then(|r| ErrorKind::for_reason(r, header.detail)) else {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    return false;
                };
                let Some(reply) = self.admit_error(ifindex, original, kind) else { return false };
                Handoff::Error(AdmittedError { about: held(), kind, reply })
            }
        };
        if self.misses.try_send(handoff).is_err() {
            stats.misses_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The ICMP error `kind` about `original` (a frame as it arrived on
    /// `ifindex`), from that interface's address, if the rules and the rate
    /// limits allow one; what gets none is counted here.
    pub fn admit_error(&self, ifindex: u32, original: &[u8], kind: ErrorKind) -> Option<icmp::Reply> {
        let stats = &self.stats;
        let reply = match self.error_from(ifindex, original, kind) {
            Ok(r) => r,
            Err(icmp::Refusal::Malformed) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Err(refusal) => {
                tracing::debug!(ifindex, reason = refusal.name(), "no ICMP error");
                stats.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        if !self.limiter.lock().expect("not poisoned").allow(reply.to, kind.is_pmtu(), Instant::now()) {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(reply)
    }
}

/// The running slow path: its threads stop, and its sockets close (leaving
/// the XSKMAP), when this is dropped.
pub struct SlowPath {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    xsk_map: XskMap<MapData>,
    /// `SLOW_PATH_IFACES`: each served interface's slot, for the fast path.
    iface_map: BpfHashMap<MapData, u32, SlowPathIface>,
    shared: Arc<Shared>,
    /// Each served interface's slot (ifindex -> slot).
    slots: BTreeMap<u32, u32>,
    /// Which (ifindex, queue) holds each SLOW_PATH key.
    keys: HashMap<u32, (u32, u32)>,
}

impl Drop for SlowPath {
    fn drop(&mut self) {
        self.shared.stats.sockets.fetch_sub(self.sockets() as u64, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Opens a socket for every RX queue of every interface in `ifaces` and
/// puts it into `xsk_map`, each interface's slot into `iface_map`.
pub fn start(
    xsk_map: XskMap<MapData>,
    mut iface_map: BpfHashMap<MapData, u32, SlowPathIface>,
    ifaces: &BTreeMap<u32, Port>,
    shared: Arc<Shared>,
) -> Result<SlowPath> {
    // An earlier agent's interfaces (pinned): their sockets closed with it.
    let stale: Vec<u32> = iface_map.keys().filter_map(|k| k.ok()).collect();
    for ifindex in stale {
        iface_map.remove(&ifindex).with_context(|| format!("SLOW_PATH_IFACES[{ifindex}]"))?;
    }
    let mut sp = SlowPath {
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
        xsk_map,
        iface_map,
        shared,
        slots: BTreeMap::new(),
        keys: HashMap::new(),
    };
    for (&ifindex, &port) in ifaces {
        // On error `sp` drops: whatever did open closes again.
        sp.add_interface(ifindex, port)?;
    }
    Ok(sp)
}

impl SlowPath {
    /// Sockets open: one per SLOW_PATH key taken.
    pub fn sockets(&self) -> usize {
        self.keys.len()
    }

    /// The slot of `ifindex`: its own, or the lowest free one.
    fn slot_for(&self, ifindex: u32) -> Result<u32> {
        if let Some(&slot) = self.slots.get(&ifindex) {
            return Ok(slot);
        }
        let taken: std::collections::BTreeSet<u32> = self.slots.values().copied().collect();
        (0..IFACE_SLOTS).find(|s| !taken.contains(s)).ok_or_else(|| {
            anyhow!("the slow path serves {IFACE_SLOTS} interfaces at most; ifindex {ifindex}'s exceptions go to the kernel")
        })
    }

    /// Serves `ifindex` too: a socket on each of its active RX queues (at
    /// most `port.queues`, and [`MAX_QUEUES`]), with UMEM frames for its
    /// MTU. Returns how many it opened.
    pub fn add_interface(&mut self, ifindex: u32, port: Port) -> Result<usize> {
        let Port { queues, mtu } = port;
        if queues > MAX_QUEUES {
            tracing::warn!(
                ifindex,
                queues,
                max = MAX_QUEUES,
                "more RX queues than the slow path serves; the others' exceptions go to the kernel (counted: unserved queue_beyond_slots)"
            );
        }
        let slot = self.slot_for(ifindex)?;
        let frame_size = frame_size_for(mtu);
        let mut opened_here = 0;
        for queue in 0..queues.clamp(1, MAX_QUEUES) {
            let key = socket_key(slot, queue).expect("slot and queue in range");
            match self.keys.get(&key) {
                Some(&(i, q)) if (i, q) == (ifindex, queue) => continue,
                Some(other) => return Err(anyhow!("SLOW_PATH key {key} of ifindex {ifindex} queue {queue} is taken by {other:?}")),
                None => {}
            }
            // The socket lives on its thread (its UMEM is not Send); the
            // thread says how opening went, with the fd for the map.
            let (opened_tx, opened) = std::sync::mpsc::channel();
            let (shared, stop_flag) = (self.shared.clone(), self.stop.clone());
            let thread = std::thread::Builder::new().name(format!("slowpath-{ifindex}-{queue}")).spawn(move || {
                // Zero-copy where the driver offers it; copy mode otherwise (veth).
                let opened = XskSocket::open(ifindex, queue, frame_size, SocketConfig::XDP_BIND_ZEROCOPY).or_else(|e| {
                    tracing::debug!(ifindex, queue, error = %format!("{e:#}"), "no zero-copy AF_XDP; copy mode");
                    XskSocket::open(ifindex, queue, frame_size, SocketConfig::XDP_BIND_COPY)
                });
                match opened {
                    Ok(socket) => {
                        let _ = opened_tx.send(Ok(socket.rx_fd()));
                        socket.serve(&shared, &stop_flag);
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                    }
                }
            })?;
            self.threads.push(thread);
            let fd = opened
                .recv()
                .map_err(|_| anyhow!("the socket thread ended"))
                .and_then(|r| r)
                .with_context(|| format!("AF_XDP socket on ifindex {ifindex} queue {queue}"));
            let fd = match fd {
                Ok(fd) => fd,
                // IFLA_NUM_RX_QUEUES counts the queues allocated; fewer may be
                // active (`ethtool -l`), and binding past them fails.
                Err(e) if queue > 0 => {
                    tracing::debug!(ifindex, queue, error = %format!("{e:#}"), "no more active RX queues");
                    break;
                }
                Err(e) => return Err(e),
            };
            self.xsk_map.set(key, fd, 0).with_context(|| format!("SLOW_PATH[{key}]"))?;
            self.keys.insert(key, (ifindex, queue));
            self.shared.stats.sockets.fetch_add(1, Ordering::Relaxed);
            opened_here += 1;
        }
        // Then the fast path may hand the interface's exceptions over.
        let iface = SlowPathIface { slot, max_frame: frame_size - XDP_PACKET_HEADROOM };
        self.iface_map.insert(ifindex, iface, 0).with_context(|| format!("SLOW_PATH_IFACES[{ifindex}]"))?;
        self.slots.insert(ifindex, slot);
        tracing::debug!(ifindex, slot, frame_size, mtu, "slow path serves the interface");
        Ok(opened_here)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shared() -> Arc<Shared> {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let s = Shared::new(RateLimits { per_destination: std::time::Duration::ZERO, msgs_per_sec: 0, msgs_burst: 1 }, tx);
        s.note_address(2, "10.1.0.1".parse().unwrap(), true);
        s
    }

    proptest! {
        /// Whatever reaches a socket, the slow path answers, refuses or
        /// counts it as malformed; it never panics.
        #[test]
        fn any_frame_is_answered_refused_or_counted(body in proptest::collection::vec(any::<u8>(), 0..200), reason in 0u8..20, with_header in any::<bool>()) {
            let s = shared();
            let mut frame = Vec::new();
            if with_header {
                frame.extend_from_slice(b"CR");
                frame.extend_from_slice(&[reason, 0, 0, 5, 0, 0]);
            }
            frame.extend_from_slice(&body);
            let handed = s.answer(2, &frame);
            let st = &s.stats;
            let counted = st.refused.load(Ordering::Relaxed) + st.malformed.load(Ordering::Relaxed) + st.rate_limited.load(Ordering::Relaxed) + st.misses_dropped.load(Ordering::Relaxed);
            prop_assert_eq!(st.frames.load(Ordering::Relaxed), 1);
            prop_assert_eq!(counted + u64::from(handed), 1, "each frame: handed to the daemon, or counted once");
        }
    }
}
