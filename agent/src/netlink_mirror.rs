//! Links, addresses and neighbours from the kernel over rtnetlink.
//!
//! The mirror subscribes to the multicast groups first and dumps second, so
//! no change between the two is lost; the caller applies the dump, then the
//! events, in order, from one task.

use anyhow::{Context as _, Result};
use futures::{channel::mpsc::UnboundedReceiver, StreamExt, TryStreamExt};
use common::{RouteKind, RouteMetrics, Rtax};
use ipnet::IpNet;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType},
    RouteNetlinkMessage,
};
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    sys::SocketAddr,
    Handle, MulticastGroup,
};
use std::net::{IpAddr, SocketAddr as InetSocketAddr, UdpSocket};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Administratively up and with carrier.
    pub up: bool,
    /// An 802.1Q sub-interface: its parent and VLAN id.
    pub vlan: Option<(u32, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Link(Link),
    LinkGone(u32),
    Address { index: u32, addr: IpAddr, present: bool },
    /// A neighbour entry; `mac` is set when it may be used to forward.
    Neighbour { index: u32, addr: IpAddr, mac: Option<[u8; 6]> },
    NeighbourGone { index: u32, addr: IpAddr },
    /// A route of the kernel's FIB (`--source kernel`).
    Route { route: KernelRoute, present: bool },
}

/// A kernel route, as far as the fast path can carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub table: u32,
    pub prefix: IpNet,
    /// The kernel prefers the lowest.
    pub priority: u32,
    pub kind: RouteKind,
    pub dev: Option<u32>,
    pub via: Option<IpAddr>,
    pub metrics: RouteMetrics,
}

pub struct Mirror {
    pub handle: Handle,
    events: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

impl Mirror {
    /// Subscribes, then dumps (routes too with `routes`). Returns the mirror
    /// and the dump as events.
    pub async fn start(routes: bool) -> Result<(Mirror, Vec<Event>)> {
        let mut groups = vec![
            MulticastGroup::Link,
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ];
        if routes {
            groups.extend([MulticastGroup::Ipv4Route, MulticastGroup::Ipv6Route]);
        }
        let (conn, _mc_handle, events) =
            rtnetlink::new_multicast_connection(&groups).context("netlink subscription")?;
        tokio::spawn(conn);
        let (conn, handle, _) = rtnetlink::new_connection().context("netlink connection")?;
        tokio::spawn(conn);
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
        if routes {
            for req in [
                rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
                rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            ] {
                let mut routes = handle.route().get(req).execute();
                while let Some(msg) = routes.try_next().await.context("dumping routes")? {
                    dump.extend(route_event(&msg, true));
                }
            }
        }
        Ok((Mirror { handle, events }, dump))
    }

    /// The next batch of events (one netlink message); `None` when the
    /// subscription closed.
    pub async fn next(&mut self) -> Option<Vec<Event>> {
        let (msg, _) = self.events.next().await?;
        let NetlinkPayload::InnerMessage(inner) = msg.payload else { return Some(Vec::new()) };
        Some(match inner {
            RouteNetlinkMessage::NewLink(m) => link_event(&m).into_iter().collect(),
            RouteNetlinkMessage::DelLink(m) => vec![Event::LinkGone(m.header.index)],
            RouteNetlinkMessage::NewAddress(m) => address_event(&m, true).into_iter().collect(),
            RouteNetlinkMessage::DelAddress(m) => address_event(&m, false).into_iter().collect(),
            RouteNetlinkMessage::NewNeighbour(m) => neighbour_event(&m, true).into_iter().collect(),
            RouteNetlinkMessage::DelNeighbour(m) => neighbour_event(&m, false).into_iter().collect(),
            RouteNetlinkMessage::NewRoute(m) => route_event(&m, true).into_iter().collect(),
            RouteNetlinkMessage::DelRoute(m) => route_event(&m, false).into_iter().collect(),
            _ => Vec::new(),
        })
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
    };
    let mut parent = None;
    let mut vid = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(a),
            LinkAttribute::Mtu(m) => link.mtu = *m,
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

/// A route message as a [`KernelRoute`]; `None` for what the fast path does
/// not carry (multicast, source-specific, multipath for now).
pub fn route_event(msg: &RouteMessage, present: bool) -> Option<Event> {
    let h = &msg.header;
    let kind = match h.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local | RouteType::Broadcast | RouteType::Anycast => RouteKind::Local,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        _ => return None,
    };
    if h.source_prefix_length != 0 {
        return None;
    }
    let (mut dst, mut table, mut dev, mut via, mut priority, mut metrics) = (None, h.table as u32, None, None, 0, RouteMetrics::DEFAULT);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_addr(a),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => dev = Some(*i),
            RouteAttribute::Gateway(a) => via = route_addr(a),
            RouteAttribute::Priority(p) => priority = *p,
            RouteAttribute::Metrics(list) => metrics = route_metrics(list),
            RouteAttribute::MultiPath(_) => {
                tracing::warn!(?h, "multipath route not carried yet");
                return None;
            }
            _ => {}
        }
    }
    let dst = dst.unwrap_or(match h.address_family {
        netlink_packet_route::AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    });
    let prefix = IpNet::new(dst, h.destination_prefix_length).ok()?.trunc();
    if kind == RouteKind::Unicast && dev.is_none() {
        return None;
    }
    Some(Event::Route { route: KernelRoute { table, prefix, priority, kind, dev, via, metrics }, present })
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
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                mac = Some([l[0], l[1], l[2], l[3], l[4], l[5]])
            }
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

/// Has the kernel resolve `addr` on device `dev`: sends it one byte on the
/// discard port, which makes the kernel send ARP or Neighbour Solicitation
/// (the resulting neighbour entry reaches us as an event).
pub fn solicit(addr: IpAddr, dev: &str, ifindex: u32) -> Result<()> {
    let (bind, target): (InetSocketAddr, InetSocketAddr) = match addr {
        IpAddr::V4(_) => ("0.0.0.0:0".parse()?, InetSocketAddr::new(addr, 9)),
        IpAddr::V6(a) => (
            "[::]:0".parse()?,
            InetSocketAddr::V6(std::net::SocketAddrV6::new(a, 9, 0, ifindex)),
        ),
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
