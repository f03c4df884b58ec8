//! Links, addresses and neighbours from the kernel over rtnetlink.
//!
//! The mirror subscribes to the multicast groups first and dumps second, so
//! no change between the two is lost; the caller applies the dump, then the
//! events, in order, from one task.

// The kernel-state vocabulary is the RIB's (it consumes it); the mirror
// speaks it, so that the dependency runs one way: fib -> rib.
pub use crate::rib::types::{Event, KernelRoute, Link};

/// `NLM_F_REPLACE` (include/uapi/linux/netlink.h).
const NLM_F_REPLACE: u16 = 0x100;
use crate::fib::nexthop_msg::{MirrorMessage, RTNLGRP_NEXTHOP};
use crate::{fib::netlink_codec, rib::ecmp::Leg, rib::RouteInput};
use anyhow::{Context as _, Result};
use common::{RouteKind, RouteMetrics, Rtax};
use futures::{channel::mpsc::UnboundedReceiver, StreamExt, TryStreamExt};
use ipnet::IpNet;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteNextHop, RouteNextHopFlags, RouteType, RouteVia},
    RouteNetlinkMessage,
};
use rtnetlink::{
    packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST},
    proto::ConnectionHandle,
    sys::SocketAddr,
    Handle, MulticastGroup,
};
use std::net::{IpAddr, SocketAddr as InetSocketAddr, UdpSocket};

pub struct Mirror {
    pub handle: Handle,
    /// Speaks nexthop messages, which `handle` cannot.
    nexthop_handle: ConnectionHandle<MirrorMessage>,
    events: UnboundedReceiver<(NetlinkMessage<MirrorMessage>, SocketAddr)>,
    routes: bool,
}

/// Sets the subscription socket's receive buffer (SO_RCVBUFFORCE: above
/// rmem_max, as root): how big a burst of changes it absorbs before an overrun.
fn set_rcvbuf(fd: std::os::fd::RawFd, bytes: u32) -> Result<()> {
    let v = bytes as libc::c_int;
    let p = &v as *const libc::c_int as *const libc::c_void;
    if unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, 4) } != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVBUFFORCE on the netlink subscription");
    }
    Ok(())
}

impl Mirror {
    /// Subscribes (with a receive buffer of `rcvbuf` bytes), then dumps
    /// (routes and nexthop objects too with `routes`). Returns the mirror
    /// and the dump as events.
    pub async fn start(routes: bool, rcvbuf: u32) -> Result<(Mirror, Vec<Event>)> {
        let mut groups = vec![MulticastGroup::Link, MulticastGroup::Neigh, MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr];
        if routes {
            groups.extend([MulticastGroup::Ipv4Route, MulticastGroup::Ipv6Route]);
        }
        let (mut conn, events) = subscribe(&groups, routes).context("netlink subscription")?;
        {
            use rtnetlink::sys::AsyncSocket;
            use std::os::fd::AsRawFd;
            set_rcvbuf(conn.socket_mut().socket_ref().as_raw_fd(), rcvbuf)?;
        }
        tokio::spawn(conn);
        let (conn, handle, _) = rtnetlink::new_connection().context("netlink connection")?;
        tokio::spawn(conn);
        let (conn, nexthop_handle, _) =
            rtnetlink::proto::new_connection::<MirrorMessage>(rtnetlink::sys::protocols::NETLINK_ROUTE).context("netlink connection")?;
        tokio::spawn(conn);
        let mirror = Mirror { handle, nexthop_handle, events, routes };
        let dump = mirror.dump().await?;
        Ok((mirror, dump))
    }

    /// Everything the kernel holds now, as events: links, addresses,
    /// neighbours, and nexthop objects then routes when mirrored.
    pub async fn dump(&self) -> Result<Vec<Event>> {
        let handle = &self.handle;
        let mut dump = Vec::new();
        let mut links = handle.link().get().execute();
        while let Some(msg) = links.try_next().await.context("dumping links")? {
            dump.extend(link_event(&msg));
        }
        let mut addrs = handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.context("dumping addresses")? {
            dump.extend(address_event(&msg, true));
        }
        let mut neighs = handle.neighbours().get().execute();
        while let Some(msg) = neighs.try_next().await.context("dumping neighbours")? {
            dump.extend(neighbour_event(&msg, true));
        }
        if self.routes {
            dump.extend(self.dump_nexthops().await?);
            for req in [
                rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
                rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            ] {
                let mut routes = handle.route().get(req).execute();
                while let Some(msg) = routes.try_next().await.context("dumping routes")? {
                    dump.extend(route_event(&msg, true, false));
                }
            }
        }
        Ok(dump)
    }

    /// Every nexthop object (RTM_GETNEXTHOP dump).
    async fn dump_nexthops(&self) -> Result<Vec<Event>> {
        let mut req = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(MirrorMessage::GetNexthops));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.finalize();
        let mut replies = self.nexthop_handle.request(req, SocketAddr::new(0, 0)).map_err(|e| anyhow::anyhow!("RTM_GETNEXTHOP: {e}"))?;
        let mut dump = Vec::new();
        while let Some(msg) = replies.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(MirrorMessage::NewNexthop(object)) => dump.push(Event::Nexthop { object, present: true }),
                NetlinkPayload::InnerMessage(MirrorMessage::Undecodable { message_type, error }) => {
                    anyhow::bail!("dumping nexthops: message type {message_type} undecodable: {error}")
                }
                // A kernel without nexthop objects (before 5.3): none to mirror.
                NetlinkPayload::Error(e) if e.code.map(|c| c.get()) == Some(-libc::EOPNOTSUPP) => {
                    tracing::info!("this kernel has no nexthop objects (RTM_GETNEXTHOP: EOPNOTSUPP)");
                    return Ok(Vec::new());
                }
                NetlinkPayload::Error(e) if e.code.is_some() => anyhow::bail!("dumping nexthops: {e}"),
                _ => {}
            }
        }
        Ok(dump)
    }

    /// The next batch of events: the next netlink message and up to 1,023
    /// queued behind it (a backlog costs a turn of the daemon's loop a
    /// batch, not a message); `None` once the subscription closed.
    pub async fn next(&mut self) -> Option<Vec<Event>> {
        let (msg, _) = self.events.next().await?;
        let mut batch = events(msg);
        // Empty for now, or closed: the next call says which.
        for _ in 1..1024 {
            let Ok((msg, _)) = self.events.try_recv() else { break };
            batch.extend(events(msg));
        }
        Some(batch)
    }
}

/// The subscription: the multicast `groups` (and RTNLGRP_NEXTHOP with
/// `nexthops`) on a connection whose codec turns a datagram it cannot frame
/// into a resync ([`netlink_codec`]); a message it frames but cannot read
/// arrives as [`MirrorMessage::Undecodable`], a resync too.
#[allow(clippy::type_complexity)]
fn subscribe(
    groups: &[MulticastGroup],
    nexthops: bool,
) -> std::io::Result<(
    rtnetlink::proto::Connection<MirrorMessage, rtnetlink::sys::TokioSocket, netlink_codec::ResyncingCodec>,
    UnboundedReceiver<(NetlinkMessage<MirrorMessage>, SocketAddr)>,
)> {
    let (mut conn, _handle, events) =
        rtnetlink::proto::new_connection_with_codec::<MirrorMessage, rtnetlink::sys::TokioSocket, netlink_codec::ResyncingCodec>(
            rtnetlink::sys::protocols::NETLINK_ROUTE,
        )?;
    use rtnetlink::sys::AsyncSocket as _;
    let bits = groups.iter().filter(|g| !g.need_via_add_membership()).fold(0u32, |all, g| all | 1 << (*g as u32 - 1));
    conn.socket_mut().socket_mut().bind(&SocketAddr::new(0, bits))?;
    for group in groups.iter().filter(|g| g.need_via_add_membership()) {
        conn.socket_mut().socket_mut().add_membership(*group as u32)?;
    }
    if nexthops {
        conn.socket_mut().socket_mut().add_membership(RTNLGRP_NEXTHOP)?;
    }
    Ok((conn, events))
}

/// One netlink message of the subscription as events. An overrun (ENOBUFS)
/// and a message that could not be decoded both ask for a resync.
pub fn events(msg: NetlinkMessage<MirrorMessage>) -> Vec<Event> {
    // NLM_F_REPLACE: the route replaces the kernel's one of the same
    // table, prefix, TOS and priority, whatever its device.
    let replace = msg.header.flags & NLM_F_REPLACE != 0;
    if netlink_codec::is_undecodable_marker(&msg.payload) {
        return vec![Event::Undecodable];
    }
    let inner = match msg.payload {
        NetlinkPayload::InnerMessage(MirrorMessage::Route(inner)) => inner,
        NetlinkPayload::InnerMessage(MirrorMessage::NewNexthop(object)) => return vec![Event::Nexthop { object, present: true }],
        NetlinkPayload::InnerMessage(MirrorMessage::DelNexthop(object)) => return vec![Event::Nexthop { object, present: false }],
        NetlinkPayload::InnerMessage(MirrorMessage::Undecodable { message_type, error }) => {
            tracing::warn!(message_type, error, "netlink: an undecodable message; resyncing");
            return vec![Event::Undecodable];
        }
        NetlinkPayload::Overrun(_) => return vec![Event::Overrun],
        _ => return Vec::new(),
    };
    match inner {
        RouteNetlinkMessage::NewLink(m) => link_event(&m).into_iter().collect(),
        RouteNetlinkMessage::DelLink(m) => vec![Event::LinkGone(m.header.index)],
        RouteNetlinkMessage::NewAddress(m) => address_event(&m, true).into_iter().collect(),
        RouteNetlinkMessage::DelAddress(m) => address_event(&m, false).into_iter().collect(),
        RouteNetlinkMessage::NewNeighbour(m) => neighbour_event(&m, true).into_iter().collect(),
        RouteNetlinkMessage::DelNeighbour(m) => neighbour_event(&m, false).into_iter().collect(),
        RouteNetlinkMessage::NewRoute(m) => route_event(&m, true, replace).into_iter().collect(),
        RouteNetlinkMessage::DelRoute(m) => route_event(&m, false, false).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// A dump, by what consumes it: the RIB takes `rest` (links, addresses,
/// neighbours) first, the route feed then takes the objects and the routes.
#[derive(Debug, Default)]
pub struct SplitDump {
    pub rest: Vec<Event>,
    pub nexthops: Vec<crate::rib::types::NexthopObject>,
    pub routes: Vec<KernelRoute>,
}

impl SplitDump {
    pub fn new(dump: Vec<Event>) -> SplitDump {
        let mut split = SplitDump::default();
        for ev in dump {
            match ev {
                Event::Route { route, .. } => split.routes.push(route),
                Event::Nexthop { object, .. } => split.nexthops.push(object),
                other => split.rest.push(other),
            }
        }
        split
    }
}

pub fn link_event(msg: &LinkMessage) -> Option<Event> {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: [0; 6],
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up) && msg.header.flags.contains(LinkFlags::Running),
        vlan: None,
        rx_queues: 1,
    };
    let mut parent = None;
    let mut vid = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(a),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::NumRxQueues(n) => link.rx_queues = *n,
            LinkAttribute::Link(p) => parent = Some(*p),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Data(InfoData::Vlan(vlan)) = info {
                        vid = vlan.iter().find_map(|v| match v {
                            InfoVlan::Id(id) => Some(*id),
                            _ => None,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some(p), Some(v)) = (parent, vid) {
        link.vlan = Some((p, v));
    }
    Some(Event::Link(link))
}

pub fn address_event(msg: &AddressMessage, present: bool) -> Option<Event> {
    // IFA_LOCAL is the interface's own address on point-to-point links;
    // IFA_ADDRESS otherwise.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    Some(Event::Address { index: msg.header.index, addr, present })
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// RTA_METRICS into a metric set (every RTAX value; CC_ALGO is a name in
/// netlink and is not carried).
pub fn route_metrics(list: &[RouteMetric]) -> RouteMetrics {
    let mut m = RouteMetrics::DEFAULT;
    for metric in list {
        let (rtax, v) = match metric {
            RouteMetric::Lock(v) => (Rtax::Lock, *v),
            RouteMetric::Mtu(v) => (Rtax::Mtu, *v),
            RouteMetric::Window(v) => (Rtax::Window, *v),
            RouteMetric::Rtt(v) => (Rtax::Rtt, *v),
            RouteMetric::RttVar(v) => (Rtax::Rttvar, *v),
            RouteMetric::SsThresh(v) => (Rtax::Ssthresh, *v),
            RouteMetric::Cwnd(v) => (Rtax::Cwnd, *v),
            RouteMetric::Advmss(v) => (Rtax::Advmss, *v),
            RouteMetric::Reordering(v) => (Rtax::Reordering, *v),
            RouteMetric::Hoplimit(v) => (Rtax::Hoplimit, *v),
            RouteMetric::InitCwnd(v) => (Rtax::Initcwnd, *v),
            RouteMetric::Features(v) => (Rtax::Features, *v),
            RouteMetric::RtoMin(v) => (Rtax::RtoMin, *v),
            RouteMetric::InitRwnd(v) => (Rtax::Initrwnd, *v),
            RouteMetric::QuickAck(v) => (Rtax::Quickack, *v),
            RouteMetric::FastopenNoCookie(v) => (Rtax::FastopenNoCookie, *v),
            _ => continue,
        };
        m.set(rtax, v);
    }
    m
}

/// RTA_GATEWAY, or RTA_VIA (an IPv6 gateway of an IPv4 route, RFC 5549).
fn gateway(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(a) => route_addr(a),
        RouteAttribute::Via(RouteVia::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Via(RouteVia::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

/// RTA_MULTIPATH's legs; dead legs (RTNH_F_DEAD) are left out.
fn legs(hops: &[RouteNextHop]) -> Vec<Leg> {
    hops.iter()
        .filter(|h| !h.flags.contains(RouteNextHopFlags::Dead))
        .map(|h| Leg { dev: h.interface_index, via: gateway(&h.attributes), weight: u32::from(h.hops) + 1 })
        .collect()
}

/// Why the fast path cannot reproduce a kernel route (then its prefix maps
/// to a pass-to-kernel entry): never forward such a route's packets by what
/// the entry would lack, and never let a covering route take them.
fn kernel_only(msg: &RouteMessage) -> Option<&'static str> {
    let h = &msg.header;
    match h.kind {
        RouteType::Throw => return Some("throw"),
        RouteType::Nat => return Some("nat"),
        RouteType::Multicast => return Some("multicast"),
        RouteType::ExternalResolve => return Some("xresolve"),
        _ => {}
    }
    if h.source_prefix_length != 0 {
        return Some("source-specific");
    }
    if h.tos != 0 {
        return Some("TOS-keyed");
    }
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Encap(_) | RouteAttribute::EncapType(_) => return Some("encap (lwtunnel)"),
            RouteAttribute::Iif(_) => return Some("input-interface-specific"),
            RouteAttribute::MultiPath(hops) if hops.iter().any(|h| h.attributes.iter().any(|a| matches!(a, RouteAttribute::Encap(_)))) => {
                return Some("multipath leg with an encap")
            }
            _ => {}
        }
    }
    None
}

/// A route message as a [`KernelRoute`]; `None` for what names no route the
/// fast path needs (an unknown type). What it cannot reproduce becomes a
/// [`RouteKind::Kernel`] entry: its packets go to the stack.
pub fn route_event(msg: &RouteMessage, present: bool, replace: bool) -> Option<Event> {
    let h = &msg.header;
    let mut kind = match h.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local | RouteType::Broadcast | RouteType::Anycast => RouteKind::Local,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        RouteType::Throw | RouteType::Nat | RouteType::Multicast | RouteType::ExternalResolve => RouteKind::Kernel,
        _ => return None,
    };
    if kernel_only(msg).is_some() {
        kind = RouteKind::Kernel;
    }
    let (mut dst, mut table, mut dev, mut priority, mut metrics) = (None, h.table as u32, None, 0, RouteMetrics::DEFAULT);
    let (mut multipath, mut nhid) = (Vec::new(), None);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_addr(a),
            // RTA_TABLE carries tables above 255; the header's byte cannot.
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => dev = Some(*i),
            RouteAttribute::Priority(p) => priority = *p,
            RouteAttribute::Metrics(list) => metrics = route_metrics(list),
            RouteAttribute::MultiPath(hops) => multipath = legs(hops),
            RouteAttribute::NhId(id) => nhid = Some(*id),
            _ => {}
        }
    }
    let via = gateway(&msg.attributes);
    let dst = dst.unwrap_or(match h.address_family {
        netlink_packet_route::AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    });
    let prefix = IpNet::new(dst, h.destination_prefix_length).ok()?.trunc();
    // A unicast route with neither a device, legs nor a nexthop object: the
    // kernel's to forward.
    if kind == RouteKind::Unicast && dev.is_none() && multipath.is_empty() && nhid.is_none() {
        kind = RouteKind::Kernel;
    }
    let route = match (kind, nhid) {
        (RouteKind::Kernel, _) => RouteInput::new(prefix, kind, None, None, RouteMetrics::DEFAULT),
        // Through a nexthop object: only its id, whatever the kernel expanded
        // it to (compat mode 1), so a replace of the object is not a route
        // change. A blackhole/unreachable route never names one.
        (RouteKind::Unicast, Some(id)) => RouteInput::via_object(prefix, id, metrics),
        _ => RouteInput { prefix, kind, dev, via, multipath, nhid: None, metrics: metrics.into() },
    };
    Some(Event::Route { route: KernelRoute { table, priority, route }, present, replace })
}

/// Neighbour states whose link-layer address may be used to forward
/// (the kernel's NUD_VALID).
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

pub fn neighbour_event(msg: &NeighbourMessage, present: bool) -> Option<Event> {
    let mut addr = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => addr = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => addr = Some(IpAddr::V6(*a)),
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => mac = Some([l[0], l[1], l[2], l[3], l[4], l[5]]),
            _ => {}
        }
    }
    let addr = addr?;
    let index = msg.header.ifindex;
    if !present {
        return Some(Event::NeighbourGone { index, addr });
    }
    let mac = mac.filter(|_| usable(msg.header.state));
    Some(Event::Neighbour { index, addr, mac })
}

/// Asks the kernel to resolve `addr` on `ifindex` over netlink: RTM_NEWNEIGH
/// with NTF_USE, which starts ARP / Neighbour Solicitation as a packet
/// would, and creates the entry if need be. The result arrives as an event.
pub async fn resolve(handle: Handle, ifindex: u32, addr: IpAddr) -> Result<()> {
    use netlink_packet_route::neighbour::NeighbourFlags;
    handle
        .neighbours()
        .add(ifindex, addr)
        .state(NeighbourState::None)
        .flags(NeighbourFlags::Use)
        .replace()
        .execute()
        .await
        .with_context(|| format!("RTM_NEWNEIGH (NTF_USE) for {addr} on ifindex {ifindex}"))
}

/// Has the kernel resolve `addr` on device `dev`: sends it one byte on the
/// discard port, which makes the kernel send ARP or Neighbour Solicitation
/// (the resulting neighbour entry reaches us as an event).
pub fn solicit(addr: IpAddr, dev: &str, ifindex: u32) -> Result<()> {
    let (bind, target): (InetSocketAddr, InetSocketAddr) = match addr {
        IpAddr::V4(_) => ("0.0.0.0:0".parse()?, InetSocketAddr::new(addr, 9)),
        IpAddr::V6(a) => ("[::]:0".parse()?, InetSocketAddr::V6(std::net::SocketAddrV6::new(a, 9, 0, ifindex))),
    };
    let sock = UdpSocket::bind(bind)?;
    bind_to_device(&sock, dev)?;
    sock.send_to(&[0], target).with_context(|| format!("soliciting {addr} on {dev}"))?;
    Ok(())
}

fn bind_to_device(sock: &UdpSocket, dev: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr() as *const libc::c_void,
            dev.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("SO_BINDTODEVICE {dev}"));
    }
    Ok(())
}

/// How the netlink mirror is doing.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetlinkStats {
    /// Events applied.
    pub events: u64,
    /// Events the maps could not carry (logged).
    pub errors: u64,
    /// Socket overruns (ENOBUFS), each followed by a resync.
    pub overruns: u64,
    /// Messages of the subscription that could not be decoded (their
    /// change is unknown), each followed by a resync as an overrun is.
    #[serde(default)]
    pub undecodable: u64,
    pub resyncs: u64,
    /// What the last resync changed.
    pub last_resync: Option<crate::rib::ResyncReport>,
    /// Route changes the maps could not carry yet (a full table), retried
    /// every second until they fit or a later change supersedes them.
    pub retry_pending: u64,
    /// Retries that succeeded.
    pub retried: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::{
        route::{RouteHeader, RouteLwEnCapType},
        AddressFamily,
    };

    fn msg(kind: RouteType, extra: Vec<RouteAttribute>, tweak: impl Fn(&mut RouteHeader)) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 24;
        m.header.table = 254;
        m.header.kind = kind;
        tweak(&mut m.header);
        m.attributes = vec![RouteAttribute::Destination(RouteAddress::Inet("10.9.0.0".parse().unwrap())), RouteAttribute::Oif(2)];
        m.attributes.extend(extra);
        m
    }

    fn kind_of(m: &RouteMessage) -> RouteKind {
        match route_event(m, true, false) {
            Some(Event::Route { route, .. }) => route.route.kind,
            other => panic!("{other:?}"),
        }
    }

    /// What the fast path cannot reproduce is never dropped (a covering
    /// route would take its packets) nor forwarded without its meaning: it
    /// becomes a pass-to-kernel entry at its prefix.
    #[test]
    fn routes_the_fast_path_cannot_reproduce_become_kernel_entries() {
        assert_eq!(kind_of(&msg(RouteType::Unicast, vec![], |_| {})), RouteKind::Unicast);
        let kernel = [
            msg(RouteType::Throw, vec![], |_| {}),
            msg(RouteType::Nat, vec![], |_| {}),
            msg(RouteType::Unicast, vec![], |h| h.tos = 0x10),
            msg(RouteType::Unicast, vec![], |h| h.source_prefix_length = 16),
            msg(RouteType::Unicast, vec![RouteAttribute::EncapType(RouteLwEnCapType::Seg6)], |_| {}),
            msg(RouteType::Unicast, vec![RouteAttribute::Iif(3)], |_| {}),
        ];
        for m in &kernel {
            assert_eq!(kind_of(m), RouteKind::Kernel, "{m:?}");
        }
        // Neither a device, legs nor a nexthop object.
        let mut nothing = msg(RouteType::Unicast, vec![], |_| {});
        nothing.attributes.retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        assert_eq!(kind_of(&nothing), RouteKind::Kernel);
    }

    /// A route through a nexthop object is its id alone, in compat mode 0
    /// (the id only) and 1 (the id and the kernel's expansion) alike.
    #[test]
    fn routes_through_nexthop_objects_carry_the_id_only() {
        let mut compat0 = msg(RouteType::Unicast, vec![RouteAttribute::NhId(7)], |_| {});
        compat0.attributes.retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        let compat1 = msg(
            RouteType::Unicast,
            vec![RouteAttribute::NhId(7), RouteAttribute::Gateway(RouteAddress::Inet("10.0.1.2".parse().unwrap()))],
            |_| {},
        );
        for m in [compat0, compat1] {
            let Some(Event::Route { route, .. }) = route_event(&m, true, false) else { panic!() };
            assert_eq!(route.route, RouteInput::via_object("10.9.0.0/24".parse().unwrap(), 7, RouteMetrics::DEFAULT));
        }
    }
}
