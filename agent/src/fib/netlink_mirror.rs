//! Links, addresses and neighbours from the kernel over rtnetlink.
//!
//! The mirror subscribes to the multicast groups first and dumps second, so
//! no change between the two is lost; the caller applies the dump, then the
//! events, in order, from one task.

// The kernel-state vocabulary is the RIB's (it consumes it); the mirror
// speaks it, so that the dependency runs one way: fib -> rib.
pub use crate::rib::types::{Event, KernelRoute, Link};

use crate::fib::netlink_codec;
use crate::fib::nexthop_msg::{MirrorMessage, RTNLGRP_NEXTHOP};
use anyhow::{Context as _, Result};
use futures::{channel::mpsc::UnboundedReceiver, StreamExt, TryStreamExt};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
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
    /// Speaks the mirror's own message type: nexthop objects, which
    /// `handle` cannot (each route dump has a socket of its own: a second
    /// dump on one socket is refused, EBUSY, until the first is read out).
    mirror_handle: ConnectionHandle<MirrorMessage>,
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
    /// links, addresses, neighbours and rules. Returns the mirror and that
    /// dump as events; with `routes`, [`Mirror::route_dump`] brings the
    /// nexthop objects and routes.
    pub async fn start(routes: bool, rcvbuf: u32) -> Result<(Mirror, Vec<Event>)> {
        let mut groups = vec![
            MulticastGroup::Link,
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
            MulticastGroup::Ipv4Rule,
            MulticastGroup::Ipv6Rule,
        ];
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
        let (conn, mirror_handle, _) =
            rtnetlink::proto::new_connection::<MirrorMessage>(rtnetlink::sys::protocols::NETLINK_ROUTE).context("netlink connection")?;
        tokio::spawn(conn);
        let mirror = Mirror { handle, mirror_handle, events, routes };
        let dump = mirror.dump_devices().await?;
        Ok((mirror, dump))
    }

    /// Everything the kernel holds now, as events: links, addresses,
    /// neighbours, rules, and nexthop objects then routes when mirrored.
    pub async fn dump(&self) -> Result<Vec<Event>> {
        let mut dump = self.dump_devices().await?;
        if let Some(mut routes) = self.route_dump().await? {
            dump.extend(routes.nexthops.drain(..).map(|object| Event::Nexthop { object, present: true }));
            while let Some(route) = routes.next().await? {
                dump.push(Event::Route { route, present: true, replace: false });
            }
        }
        Ok(dump)
    }

    /// Links, addresses, neighbours and rules.
    async fn dump_devices(&self) -> Result<Vec<Event>> {
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
        for family in [rtnetlink::IpVersion::V4, rtnetlink::IpVersion::V6] {
            let mut rules = handle.rule().get(family).execute();
            while let Some(msg) = rules.try_next().await.context("dumping rules")? {
                dump.extend(rule_event(&msg, true));
            }
        }
        Ok(dump)
    }

    /// With routes mirrored: the nexthop objects (dumped first: routes
    /// name them), and the routes' dump under way. A task on the runtime
    /// reads and decodes it (IPv4, then IPv6) while the caller does other
    /// work, and the caller takes each route as it comes: a cold start
    /// applies the first while the kernel still sends the last.
    pub async fn route_dump(&self) -> Result<Option<RouteDump>> {
        if !self.routes {
            return Ok(None);
        }
        let nexthops = self
            .dump_nexthops()
            .await?
            .into_iter()
            .filter_map(|e| match e {
                Event::Nexthop { object, .. } => Some(object),
                _ => None,
            })
            .collect();
        let (tx, routes) = tokio::sync::mpsc::unbounded_channel();
        // Its own connection, speaking the mirror's message type (routes
        // read into the mirror's terms as they are decoded); it closes once
        // the dump is read.
        let (conn, dump_handle, _) = rtnetlink::proto::new_connection::<MirrorMessage>(rtnetlink::sys::protocols::NETLINK_ROUTE)
            .context("netlink connection for the route dump")?;
        tokio::spawn(conn);
        tokio::spawn(read_route_dump(dump_handle, tx));
        Ok(Some(RouteDump { nexthops, routes }))
    }

    /// Every nexthop object (RTM_GETNEXTHOP dump).
    async fn dump_nexthops(&self) -> Result<Vec<Event>> {
        let mut req = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(MirrorMessage::GetNexthops));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.finalize();
        let mut replies = self.mirror_handle.request(req, SocketAddr::new(0, 0)).map_err(|e| anyhow::anyhow!("RTM_GETNEXTHOP: {e}"))?;
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
    if netlink_codec::is_undecodable_marker(&msg.payload) {
        return vec![Event::Undecodable];
    }
    let inner = match msg.payload {
        NetlinkPayload::InnerMessage(MirrorMessage::Route(inner)) => inner,
        NetlinkPayload::InnerMessage(MirrorMessage::RouteEvent(event)) => return event.into_iter().collect(),
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
        RouteNetlinkMessage::NewAddress(m) => address_event(&m, true),
        RouteNetlinkMessage::DelAddress(m) => address_event(&m, false),
        RouteNetlinkMessage::NewNeighbour(m) => neighbour_event(&m, true).into_iter().collect(),
        RouteNetlinkMessage::DelNeighbour(m) => neighbour_event(&m, false).into_iter().collect(),
        RouteNetlinkMessage::NewRule(m) => rule_event(&m, true).into_iter().collect(),
        RouteNetlinkMessage::DelRule(m) => rule_event(&m, false).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// A routes dump in flight ([`Mirror::route_dump`]).
pub struct RouteDump {
    /// The kernel's nexthop objects, for the caller to apply before any route.
    pub nexthops: Vec<crate::rib::types::NexthopObject>,
    routes: tokio::sync::mpsc::UnboundedReceiver<Result<KernelRoute>>,
}

impl RouteDump {
    /// The next route dumped; `None` once both families are done.
    pub async fn next(&mut self) -> Result<Option<KernelRoute>> {
        self.routes.recv().await.transpose()
    }
}

/// Dumps the routes, IPv4 then IPv6, decoded into the mirror's terms on
/// the runtime's thread (what the RIB's thread receives is the route
/// alone); stops when the receiver is gone.
async fn read_route_dump(handle: ConnectionHandle<MirrorMessage>, tx: tokio::sync::mpsc::UnboundedSender<Result<KernelRoute>>) {
    let requests = [
        rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ];
    for req in requests {
        let mut req = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(MirrorMessage::Route(RouteNetlinkMessage::GetRoute(req))),
        );
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.finalize();
        let mut replies = match handle.request(req, SocketAddr::new(0, 0)) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(anyhow::anyhow!("dumping routes: {e}")));
                return;
            }
        };
        while let Some(msg) = replies.next().await {
            let route = match msg.payload {
                NetlinkPayload::InnerMessage(MirrorMessage::RouteEvent(Some(Event::Route { route, .. }))) => Ok(route),
                NetlinkPayload::InnerMessage(MirrorMessage::Undecodable { message_type, error }) => {
                    // As netlink-proto's own codec did, but said and counted
                    // (`netlink.undecodable`): the dump goes on.
                    netlink_codec::count_undecodable();
                    tracing::warn!(message_type, error, "dumping routes: an undecodable message left out");
                    continue;
                }
                NetlinkPayload::Error(e) if e.code.is_some() => Err(anyhow::anyhow!("dumping routes: {e}")),
                _ => continue,
            };
            let failed = route.is_err();
            if tx.send(route).is_err() || failed {
                return;
            }
        }
    }
}

/// A dump, by what consumes it: the RIB takes `rest` (links, addresses,
/// neighbours) first, the route feed then takes the objects and the routes.
#[derive(Debug, Default)]
pub struct SplitDump {
    pub rest: Vec<Event>,
    pub nexthops: Vec<crate::rib::types::NexthopObject>,
    pub routes: Vec<KernelRoute>,
    /// `ip rule`, both families, in the kernel's order.
    pub rules: Vec<crate::rib::policy::KernelRule>,
}

impl SplitDump {
    pub fn new(dump: Vec<Event>) -> SplitDump {
        let mut split = SplitDump::default();
        for ev in dump {
            match ev {
                Event::Route { route, .. } => split.routes.push(route),
                Event::Nexthop { object, .. } => split.nexthops.push(object),
                Event::Rule { rule, .. } => split.rules.push(rule),
                other => split.rest.push(other),
            }
        }
        split
    }
}

fn rule_event(msg: &netlink_packet_route::rule::RuleMessage, present: bool) -> Option<Event> {
    crate::fib::rules::kernel_rule(msg).map(|rule| Event::Rule { rule, present })
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

/// An address message's events: the address, and for IPv4 the subnet
/// broadcast addresses it gives the router, as `fib_add_ifaddr` adds
/// broadcast routes: the prefix's all-ones host below /31 (unless the
/// prefix is 0/8), and an explicit `brd` other than 255.255.255.255.
pub fn address_event(msg: &AddressMessage, present: bool) -> Vec<Event> {
    let find = |want: fn(&AddressAttribute) -> Option<IpAddr>| msg.attributes.iter().find_map(want);
    // IFA_LOCAL is the interface's own address on point-to-point links;
    // IFA_ADDRESS (the peer there) otherwise.
    let local = find(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = find(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    let Some(addr) = local.or(address) else { return Vec::new() };
    let index = msg.header.index;
    let mut events = vec![Event::Address { index, addr, present }];
    let (Some(IpAddr::V4(prefix_addr)), IpAddr::V4(_)) = (address.or(local), addr) else { return events };
    let mut broadcasts = Vec::new();
    let len = u32::from(msg.header.prefix_len.min(32));
    let host_mask = u32::MAX.checked_shr(len).unwrap_or(0);
    let prefix = u32::from(prefix_addr) & !host_mask;
    if len < 31 && prefix >> 24 != 0 {
        broadcasts.push(std::net::Ipv4Addr::from(prefix | host_mask));
    }
    if let Some(brd) = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Broadcast(b) => Some(*b),
        _ => None,
    }) {
        if !brd.is_broadcast() && !brd.is_unspecified() && !broadcasts.contains(&brd) {
            broadcasts.push(brd);
        }
    }
    events.extend(broadcasts.into_iter().map(|b| Event::Broadcast { index, addr: IpAddr::V4(b), of: addr, present }));
    events
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
    use netlink_packet_route::AddressFamily;
    use std::net::Ipv4Addr;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn address(local: &str, prefix_len: u8, brd: Option<&str>) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix_len;
        m.header.index = 7;
        m.attributes = vec![AddressAttribute::Address(v4(local)), AddressAttribute::Local(v4(local))];
        m.attributes.extend(brd.map(|b| AddressAttribute::Broadcast(b.parse::<Ipv4Addr>().unwrap())));
        m
    }

    fn broadcasts(m: &AddressMessage) -> Vec<IpAddr> {
        let events = address_event(m, true);
        assert!(matches!(events[0], Event::Address { index: 7, present: true, .. }));
        events[1..]
            .iter()
            .map(|e| match e {
                Event::Broadcast { index: 7, addr, of, present: true } if m.attributes.contains(&AddressAttribute::Local(*of)) => *addr,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// The broadcast routes `fib_add_ifaddr` adds, as `ip route show table
    /// local` lists them for these addresses.
    #[test]
    fn an_ipv4_address_gives_the_broadcasts_the_kernel_adds_routes_for() {
        assert_eq!(broadcasts(&address("10.9.1.1", 24, None)), [v4("10.9.1.255")]);
        assert_eq!(broadcasts(&address("10.9.1.1", 24, Some("10.9.1.255"))), [v4("10.9.1.255")], "brd + adds no second one");
        assert_eq!(broadcasts(&address("10.9.2.1", 24, Some("10.9.2.77"))), [v4("10.9.2.255"), v4("10.9.2.77")]);
        assert_eq!(broadcasts(&address("10.9.3.1", 31, None)), Vec::<IpAddr>::new(), "/31 and /32 have no broadcast");
        assert_eq!(broadcasts(&address("10.9.3.1", 32, None)), Vec::<IpAddr>::new());
        assert_eq!(
            broadcasts(&address("10.9.4.1", 8, Some("255.255.255.255"))),
            [v4("10.255.255.255")],
            "the limited broadcast is no route"
        );
        assert_eq!(broadcasts(&address("0.0.0.9", 8, None)), Vec::<IpAddr>::new(), "0/8 gets none");
        let mut v6 = AddressMessage::default();
        v6.header.family = AddressFamily::Inet6;
        v6.header.prefix_len = 64;
        v6.attributes = vec![AddressAttribute::Address("2001:db8::1".parse().unwrap())];
        assert_eq!(address_event(&v6, false).len(), 1, "IPv6 has no broadcast");
    }
}
