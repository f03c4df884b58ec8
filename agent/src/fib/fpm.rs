//! Routes straight from FRR's zebra over FPM (`--source fpm`): zebra's
//! `dplane_fpm_nl` module connects over TCP and sends each selected route
//! (and, with `fpm use-next-hop-groups`, each nexthop group) as netlink
//! messages behind a 4-byte FPM header: version 1, type 1 (netlink), the
//! frame's length in network order. It replays its whole table whenever the
//! connection comes back.
//!
//! A frame's messages are applied as one change per prefix (zebra sends an
//! update as RTM_DELROUTE then RTM_NEWROUTE in one frame: applied as one
//! replace, no gap). After a reconnect every route is marked stale; what
//! zebra resends is fresh again, and what it has not resent once the replay
//! has gone quiet is swept; a delete of a route still stale waits for the
//! sweep too (a restarted zebra deletes all its predecessor's routes before
//! its daemons resend them), so a resent route is never out of the maps. Bad input (a wrong version or type, a length out
//! of bounds, a netlink message that does not decode) is counted and closes
//! the connection: zebra reconnects and replays, and the sweep puts right
//! what was lost. It never reaches the maps.

use crate::{
    fib::{kernel_fib::KernelFib, netlink_mirror::Event, nexthop_msg::MirrorMessage},
    rib::types::{ChangeKey, RouteChange},
};
use hashbrown::HashSet;
use ipnet::IpNet;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};
use tokio::{io::AsyncReadExt, net::TcpListener, sync::mpsc};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:2620";
const FPM_VERSION: u8 = 1;
const FPM_TYPE_NETLINK: u8 = 1;
const FPM_HEADER: usize = 4;
/// The longest frame taken: zebra encodes into 8 KiB buffers (NL_PKT_BUF_SIZE),
/// a delete and an add in one frame.
pub const MAX_FRAME: usize = 32 * 1024;
const NLMSG_HEADER: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FpmError {
    #[error("FPM version {0} (only 1 is spoken)")]
    Version(u8),
    #[error("FPM message type {0} (only 1, netlink, is spoken)")]
    MessageType(u8),
    #[error("FPM frame length {0} (at least {min}, at most {MAX_FRAME})", min = FPM_HEADER + NLMSG_HEADER)]
    Length(usize),
    #[error("netlink message in an FPM frame: {0}")]
    Netlink(String),
}

/// Cuts the TCP stream into FPM frames.
#[derive(Debug, Default)]
pub struct FpmDecoder {
    buf: Vec<u8>,
    /// Where the next frame starts: consumed bytes are dropped once per
    /// push, not once per frame (a read holds thousands).
    start: usize,
}

impl FpmDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's netlink payload; `None` until one is in.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FpmError> {
        let buf = &self.buf[self.start..];
        if buf.len() < FPM_HEADER {
            return Ok(None);
        }
        let (version, kind, len) = (buf[0], buf[1], u16::from_be_bytes([buf[2], buf[3]]) as usize);
        if version != FPM_VERSION {
            return Err(FpmError::Version(version));
        }
        if kind != FPM_TYPE_NETLINK {
            return Err(FpmError::MessageType(kind));
        }
        if !(FPM_HEADER + NLMSG_HEADER..=MAX_FRAME).contains(&len) {
            return Err(FpmError::Length(len));
        }
        if buf.len() < len {
            return Ok(None);
        }
        let frame = buf[FPM_HEADER..len].to_vec();
        self.start += len;
        Ok(Some(frame))
    }
}

/// What one frame says, as the kernel mirror's events (routes and nexthop
/// objects), and how many of its messages name nothing cowroute carries
/// (EVPN neighbours, MPLS LSPs, ...).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Frame {
    pub events: Vec<Event>,
    pub ignored: usize,
}

/// The netlink messages of one frame's payload.
pub fn parse_frame(payload: &[u8]) -> Result<Frame, FpmError> {
    let mut frame = Frame::default();
    let mut off = 0;
    while off < payload.len() {
        let len = NetlinkBuffer::new_checked(&payload[off..]).map_err(|e| FpmError::Netlink(e.to_string()))?.length() as usize;
        let msg = NetlinkMessage::<MirrorMessage>::deserialize(&payload[off..off + len]).map_err(|e| FpmError::Netlink(e.to_string()))?;
        match msg.payload {
            NetlinkPayload::InnerMessage(MirrorMessage::RouteEvent(Some(e))) => frame.events.push(e),
            NetlinkPayload::InnerMessage(MirrorMessage::NewNexthop(object)) => frame.events.push(Event::Nexthop { object, present: true }),
            NetlinkPayload::InnerMessage(MirrorMessage::DelNexthop(object)) => frame.events.push(Event::Nexthop { object, present: false }),
            NetlinkPayload::InnerMessage(MirrorMessage::Undecodable { message_type, error }) => {
                return Err(FpmError::Netlink(format!("type {message_type}: {error}")))
            }
            _ => frame.ignored += 1,
        }
        // Netlink messages are 4-byte aligned in a stream of them.
        off += len.div_ceil(4) * 4;
    }
    Ok(frame)
}

/// An FPM frame around netlink messages, as dplane_fpm_nl writes it.
pub fn frame_of(messages: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = messages.concat();
    let mut f = vec![FPM_VERSION, FPM_TYPE_NETLINK];
    f.extend(((body.len() + FPM_HEADER) as u16).to_be_bytes());
    f.extend(body);
    f
}

/// An RTM_NEWROUTE (or, `!add`, RTM_DELROUTE) of `prefix` via `gateway` out
/// of `oif` in the main table, as zebra encodes a BGP route: for tests and
/// the bench, which play zebra.
pub fn route_message(prefix: IpNet, gateway: std::net::IpAddr, oif: u32, add: bool) -> Vec<u8> {
    use netlink_packet_route::{
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType},
        AddressFamily,
    };
    let addr = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(v4) => RouteAddress::Inet(v4),
        std::net::IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    };
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: if prefix.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 },
        destination_prefix_length: prefix.prefix_len(),
        table: 254,
        protocol: RouteProtocol::Bgp,
        scope: RouteScope::Universe,
        kind: RouteType::Unicast,
        ..Default::default()
    };
    m.attributes = vec![RouteAttribute::Destination(addr(prefix.addr())), RouteAttribute::Gateway(addr(gateway)), RouteAttribute::Oif(oif)];
    let inner = if add { RouteNetlinkMessage::NewRoute(m) } else { RouteNetlinkMessage::DelRoute(m) };
    let mut msg = NetlinkMessage::new(rtnetlink::packet_core::NetlinkHeader::default(), NetlinkPayload::InnerMessage(inner));
    msg.header.flags = rtnetlink::packet_core::NLM_F_REQUEST;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// How the FPM source is doing.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FpmStats {
    pub listen: String,
    pub connected: bool,
    /// Connections accepted (zebra reconnects after a restart).
    pub connections: u64,
    pub frames: u64,
    pub routes: u64,
    pub nexthops: u64,
    /// Messages of kinds cowroute does not carry.
    pub ignored: u64,
    /// Bad frames, each closing its connection.
    pub errors: u64,
    pub last_error: Option<String>,
    /// Routes and objects zebra did not resend after a reconnect, removed.
    pub swept: u64,
}

/// The FPM feed's record, shared: the listener applies zebra's frames to
/// it as it reads them, on its own thread (choosing among a prefix's
/// candidates is a third of a route's cost), and hands the RIB the changes
/// alone, numbered. The daemon sweeps it after a replay only once it has
/// applied every change handed over (so the changes reach the RIB in the
/// order they were made); a reconcile reads it with the number of the last
/// hand-over it holds, and the daemon skips those hand-overs when they
/// arrive. `show` reads it too.
pub type SharedFpmRoutes = Arc<Mutex<FpmRoutes>>;

/// The feed, whoever held it last (a panic aborts the process).
pub fn lock(routes: &SharedFpmRoutes) -> MutexGuard<'_, FpmRoutes> {
    routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the FPM listener hands the daemon (the feed has taken it already).
#[derive(Debug)]
pub enum FpmInput {
    Connected(SocketAddr),
    /// The route changes of one read's frames, in order: one hand-over
    /// (and one wake-up of the daemon) per read, not per frame; numbered
    /// (`FpmRoutes::handed_over` after it).
    Changes(u64, Vec<RouteChange>),
    /// A bad frame: counted; the connection is closed.
    Error(FpmError),
    Closed,
}

impl FpmInput {
    /// The route changes it carries.
    pub fn changes(&self) -> usize {
        match self {
            FpmInput::Changes(_, changes) => changes.len(),
            _ => 0,
        }
    }
}

/// Accepts zebra's connections one at a time, applies what they carry to
/// `routes` and forwards the changes.
pub async fn serve(listener: TcpListener, tx: mpsc::Sender<FpmInput>, routes: SharedFpmRoutes) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "FPM accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        {
            let mut feed = lock(&routes);
            feed.connected();
            feed.quiet.heard(Instant::now());
        }
        if tx.send(FpmInput::Connected(peer)).await.is_err() {
            return;
        }
        let mut decoder = FpmDecoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        'conn: loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            decoder.push(&buf[..n]);
            let mut frames = Vec::new();
            let error = loop {
                match decoder.next_frame().and_then(|f| f.map(|f| parse_frame(&f)).transpose()) {
                    Ok(None) => break None,
                    Ok(Some(frame)) => frames.push(frame),
                    Err(e) => break Some(e),
                }
            };
            // The frames before a bad one are zebra's word too.
            if !frames.is_empty() {
                let (number, changes) = {
                    let mut feed = lock(&routes);
                    let changes = frames.into_iter().flat_map(|f| feed.frame(f)).collect();
                    feed.quiet.heard(Instant::now());
                    feed.handed_over += 1;
                    (feed.handed_over, changes)
                };
                if tx.send(FpmInput::Changes(number, changes)).await.is_err() {
                    return;
                }
            }
            if let Some(e) = error {
                lock(&routes).error(&e);
                let _ = tx.send(FpmInput::Error(e)).await;
                break 'conn;
            }
        }
        lock(&routes).closed();
        if tx.send(FpmInput::Closed).await.is_err() {
            return;
        }
    }
}

/// What zebra has sent, as the route feed holds it: the kernel FIB's model
/// (one route per prefix and table, nexthop objects), and after a reconnect
/// what is stale until zebra resends it.
pub struct FpmRoutes {
    pub fib: KernelFib,
    stale: Option<Stale>,
    pub stats: FpmStats,
    /// When zebra was last heard (a connection, a read of frames): the
    /// sweep waits for it to go quiet. Kept here, set with the state it
    /// describes, so no sweep sees a fresh connection as an old silence.
    pub quiet: Quiet,
    /// Hand-overs of changes made so far ([`FpmInput::Changes`] numbers
    /// them): the daemon sweeps or reconciles only the state whose changes
    /// it has all applied.
    pub handed_over: u64,
}

struct Stale {
    prefixes: HashSet<IpNet>,
    nexthops: HashSet<u32>,
}

impl FpmRoutes {
    pub fn new(tables: impl IntoIterator<Item = u32>) -> FpmRoutes {
        FpmRoutes { fib: KernelFib::new(tables), stale: None, stats: FpmStats::default(), quiet: Quiet::default(), handed_over: 0 }
    }

    /// A (re)connection: everything held is stale until zebra resends it.
    pub fn connected(&mut self) {
        self.stats.connections += 1;
        self.stats.connected = true;
        let prefixes: HashSet<IpNet> = self.fib.winners().map(|r| r.prefix).collect();
        let nexthops: HashSet<u32> = self.fib.nexthops().objects().map(|o| o.id).collect();
        if !prefixes.is_empty() || !nexthops.is_empty() {
            self.stale = Some(Stale { prefixes, nexthops });
        }
    }

    /// One frame: its changes, one per prefix or object (the last one).
    pub fn frame(&mut self, frame: Frame) -> Vec<RouteChange> {
        self.stats.frames += 1;
        self.stats.ignored += frame.ignored as u64;
        let mut changes = Vec::new();
        for ev in frame.events {
            match ev {
                Event::Route { route, present, replace } => {
                    self.stats.routes += 1;
                    if let Some(s) = &mut self.stale {
                        // A restarted zebra first deletes what its predecessor
                        // installed (its startup sweep of the kernel), then
                        // adds back what its daemons resend: a stale route
                        // stays until the sweep, so a resent one never leaves.
                        if !present && s.prefixes.contains(&route.route.prefix) {
                            continue;
                        }
                        s.prefixes.remove(&route.route.prefix);
                    }
                    changes.extend(self.fib.apply(route, present, replace));
                }
                Event::Nexthop { object, present } => {
                    self.stats.nexthops += 1;
                    if let Some(s) = &mut self.stale {
                        if !present && s.nexthops.contains(&object.id) {
                            continue;
                        }
                        s.nexthops.remove(&object.id);
                    }
                    changes.extend(self.fib.apply_nexthop(object, present));
                }
                _ => {}
            }
        }
        coalesce(changes)
    }

    pub fn error(&mut self, e: &FpmError) {
        self.stats.errors += 1;
        self.stats.last_error = Some(e.to_string());
        self.stats.connected = false;
    }

    pub fn closed(&mut self) {
        self.stats.connected = false;
    }

    /// Once zebra's replay has gone quiet: removes what it did not resend.
    pub fn sweep(&mut self) -> Vec<RouteChange> {
        let Some(stale) = self.stale.take() else { return Vec::new() };
        let mut changes = Vec::new();
        for prefix in &stale.prefixes {
            changes.extend(self.fib.remove_prefix(prefix));
        }
        for id in &stale.nexthops {
            if let Some(object) = self.fib.nexthops().get(*id).map(|o| (**o).clone()) {
                changes.extend(self.fib.apply_nexthop(object, false));
            }
        }
        self.stats.swept += (stale.prefixes.len() + stale.nexthops.len()) as u64;
        coalesce(changes)
    }

    pub fn sweep_pending(&self) -> bool {
        self.stale.is_some()
    }
}

/// One change per key, the last; objects set first and removed last, so
/// that a route never names an object the RIB lacks.
fn coalesce(changes: Vec<RouteChange>) -> Vec<RouteChange> {
    // Zebra sends a route a frame: nothing to merge or order.
    if changes.len() < 2 {
        return changes;
    }
    let mut last: BTreeMap<ChangeKey, RouteChange> = BTreeMap::new();
    let mut order: Vec<ChangeKey> = Vec::new();
    for c in changes {
        let key = c.key();
        if last.insert(key, c).is_none() {
            order.push(key);
        }
    }
    let mut out: Vec<RouteChange> = Vec::with_capacity(order.len());
    let phase = |c: &RouteChange| match c {
        RouteChange::SetNexthop(_) => 0,
        RouteChange::Set(_) | RouteChange::Delete(_) | RouteChange::TableSet(..) | RouteChange::TableDelete(..) => 1,
        RouteChange::DeleteNexthop(_) => 2,
    };
    for p in 0..3 {
        out.extend(order.iter().filter(|k| phase(&last[*k]) == p).map(|k| last[k].clone()));
    }
    out
}

/// When a replay counts as done: no frame for this long (`--fpm-sweep-after`).
/// Long enough for the protocol daemons to find a restarted zebra again and
/// resend their routes (bgpd retries its zebra connection every few seconds).
pub const SWEEP_AFTER: Duration = Duration::from_secs(30);

/// Tracks the last frame's time, for the sweep.
#[derive(Debug, Default)]
pub struct Quiet(Option<Instant>);

impl Quiet {
    pub fn heard(&mut self, now: Instant) {
        self.0 = Some(now);
    }

    pub fn for_at_least(&self, now: Instant, quiet: Duration) -> bool {
        self.0.is_some_and(|t| now.duration_since(t) >= quiet)
    }
}

#[cfg(test)]
#[path = "fpm_tests.rs"]
mod tests;
