//! Read-only questions about what the fast path forwards with.

use crate::rib::{cow::Source, MapSink, Rib};
use common::{
    policy::{address_words, Choice, FlowKeys, MainHit, RuleList, LOOPBACK_IFINDEX},
    proto::{IPPROTO_ICMP, IPPROTO_ICMPV6},
    RouteKind, RouteMetrics,
};
use std::net::IpAddr;

/// Where the fast path sends a destination, for checks that need the path
/// rather than the metrics (path-MTU learning's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingPath {
    pub kind: RouteKind,
    /// The egress devices: the route's, or every leg's of a multipath route.
    pub egress: Vec<u32>,
    /// The MTU the fast path checks without a private copy: the route's
    /// `RTAX_MTU`, else the smallest egress device MTU (0: none known).
    pub mtu: u32,
}

/// Where an ICMP error to an address leaves, as `icmp_send` routes it
/// (`ip_route_output` / `ip6_dst_lookup` on the error's destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorRoute {
    /// Out of `ifindex` to neighbour `neighbour` (a gateway, or the
    /// destination itself on a connected route).
    Via { ifindex: u32, neighbour: IpAddr },
    /// To a subnet's broadcast address: out of that subnet's interface, to
    /// the link broadcast (the kernel's broadcast route).
    LinkBroadcast { ifindex: u32 },
    /// To one of the router's own addresses: the kernel delivers such an
    /// error to itself, nothing goes on the wire.
    ToSelf,
    /// No route back (none, or blackhole, unreachable, prohibit, a route
    /// only the kernel carries): the kernel sends no error.
    NoRoute,
    /// A rule the agent cannot evaluate decides (fwmark, uidrange, ...):
    /// not sent, rather than sent where the kernel might not send it.
    RuleKernel,
}

/// What `icmp_send`'s route lookup asks of the rules besides the error's
/// destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFlow {
    /// The error's source when chosen before the lookup (`None`: left
    /// open, as `icmp_send` leaves it for a forwarded packet's error).
    pub src: Option<IpAddr>,
    /// The error's TOS byte (traffic class).
    pub dscp: u8,
}

impl<S: MapSink> Rib<S> {
    /// How an ICMP error to `to` leaves; `ingress` is where the packet it
    /// is about came in, the scope of a link-local `to` (icmp6_send's
    /// `icmp6_iif`).
    pub fn error_route(&self, to: IpAddr, ingress: u32) -> ErrorRoute {
        if let IpAddr::V6(v6) = to {
            if v6.is_unicast_link_local() {
                return ErrorRoute::Via { ifindex: ingress, neighbour: to };
            }
        }
        if let Some(ifindex) = self.broadcast_link(to) {
            return ErrorRoute::LinkBroadcast { ifindex };
        }
        let Some(base) = self.base(to, true) else { return ErrorRoute::NoRoute };
        self.error_via(base.kind, base.nexthop, base.flags & common::RouteEntry::MULTIPATH != 0, to)
    }

    /// Where an error to `to` leaves by a route of `kind` through `nexthop`
    /// (a group's id when `multipath`).
    fn error_via(&self, kind: RouteKind, nexthop: u32, multipath: bool, to: IpAddr) -> ErrorRoute {
        let nexthop = match kind {
            RouteKind::Local => return ErrorRoute::ToSelf,
            RouteKind::Unicast if multipath => {
                // The leg of bucket 0: one fixed choice among equals.
                match self.groups.written_table(nexthop) {
                    Some(table) => table.buckets[0],
                    None => return ErrorRoute::NoRoute,
                }
            }
            RouteKind::Unicast => nexthop,
            _ => return ErrorRoute::NoRoute,
        };
        match self.nexthop_key(nexthop) {
            Some(key) => ErrorRoute::Via { ifindex: key.ifindex, neighbour: key.gateway.unwrap_or(to) },
            None => ErrorRoute::NoRoute,
        }
    }

    /// [`Rib::error_route`] through `rules` (a family's compiled `ip rule`
    /// list; `None`: the kernel's defaults), as `ip_route_output` looks the
    /// error's flow up: from `lo`, protocol ICMP, `flow`'s source and DSCP.
    /// The local table answers first, as for a forwarded packet.
    pub fn error_route_ruled(&self, to: IpAddr, ingress: u32, flow: &ErrorFlow, rules: Option<&RuleList>) -> ErrorRoute {
        let Some(rules) = rules else { return self.error_route(to, ingress) };
        let link_local = matches!(to, IpAddr::V6(v6) if v6.is_unicast_link_local());
        let main = self.base(to, true);
        if link_local || self.broadcast_link(to).is_some() || main.is_some_and(|b| b.kind == RouteKind::Local) {
            return self.error_route(to, ingress);
        }
        let hit = |kind: RouteKind, prefix_len: u8| MainHit {
            prefix_len,
            error: matches!(kind, RouteKind::Blackhole | RouteKind::Unreachable | RouteKind::Prohibit),
        };
        let found = std::cell::Cell::new(None);
        let tables = |table: u32| {
            let r = self.table_longest_match(table, to)?;
            found.set(Some((r.kind, r.nexthop, r.multipath)));
            Some(hit(r.kind, r.prefix_len))
        };
        let words = |a: Option<IpAddr>| {
            let mut b = [0u8; 16];
            match a {
                Some(IpAddr::V4(a)) => b[..4].copy_from_slice(&a.octets()),
                Some(IpAddr::V6(a)) => b = a.octets(),
                None => {}
            }
            address_words(&b)
        };
        let keys = FlowKeys {
            iif: LOOPBACK_IFINDEX,
            src: words(flow.src),
            dst: words(Some(to)),
            dscp: flow.dscp & 0xfc,
            ip_proto: if to.is_ipv4() { IPPROTO_ICMP } else { IPPROTO_ICMPV6 },
            l4_known: true,
            ..Default::default()
        };
        match rules.lookup_flow(&keys, false, main.map(|b| hit(b.kind, b.covering.prefix_len())), &tables) {
            Choice::Main => self.error_route(to, ingress),
            Choice::Table => {
                found.get().map_or(ErrorRoute::NoRoute, |(kind, nexthop, multipath)| self.error_via(kind, nexthop, multipath, to))
            }
            Choice::Kernel => ErrorRoute::RuleKernel,
            Choice::NoRoute | Choice::Blackhole | Choice::Prohibit => ErrorRoute::NoRoute,
        }
    }

    /// The metrics `dest` forwards with, as the fast path reads them: its
    /// private copy when it has one, else its route's shared metrics (a
    /// neighbour host's are its connected route's). `None`: no route.
    pub fn forwarding_metrics(&self, dest: IpAddr) -> Option<RouteMetrics> {
        match self.private.get(&dest) {
            Some(p) => Some(p.values),
            None => self.base(dest, true).map(|b| b.shared),
        }
    }

    /// The type, egress devices and MTU of `dest`'s route (`None`: no route).
    pub fn forwarding_path(&self, dest: IpAddr) -> Option<ForwardingPath> {
        let base = self.base(dest, true)?;
        let route = self.routes.get(&base.covering);
        let egress: Vec<u32> = match route {
            Some(r) if r.attrs.nhid.is_some() => self.object_devices(r.attrs.nhid.expect("checked")),
            Some(r) if !r.attrs.multipath.is_empty() => r.attrs.multipath.iter().map(|l| l.dev).collect(),
            Some(r) => r.attrs.dev.into_iter().collect(),
            None => Vec::new(),
        };
        let device = egress.iter().filter_map(|i| self.links.get(i)).map(|l| l.mtu).min().unwrap_or(0);
        let mtu = if base.shared.mtu != 0 { base.shared.mtu } else { device };
        Some(ForwardingPath { kind: base.kind, egress, mtu })
    }

    /// The next hop (its id) the fast path sends `dest` through, for the
    /// packets the slow path forwards itself; `None`: no unicast route, or
    /// a multipath one (the leg is the fast path's choice).
    pub fn forwarding_nexthop(&self, dest: IpAddr) -> Option<u32> {
        let base = self.base(dest, true)?;
        (base.kind == RouteKind::Unicast && base.flags & common::RouteEntry::MULTIPATH == 0).then_some(base.nexthop)
    }

    /// Destinations whose private copy holds a learned (path-MTU) value.
    pub fn learned_copies(&self) -> usize {
        self.private.values().filter(|p| p.overrides.values().any(|o| o.source == Source::Learned)).count()
    }

    /// Does `dest`'s private copy hold a learned value?
    pub fn has_learned(&self, dest: IpAddr) -> bool {
        self.private.get(&dest).is_some_and(|p| p.overrides.values().any(|o| o.source == Source::Learned))
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        dataplane::map_writer::memory::MemoryMaps,
        rib::{
            cow::Source,
            types::{Event, Link},
            Capacities, Rib, RouteInput,
        },
    };
    use common::{RouteKind, RouteMetrics, Rtax};
    use std::time::{Duration, Instant};

    #[test]
    fn a_destination_forwards_with_its_private_copy_else_its_routes_metrics() {
        let now = Instant::now();
        let mut rib = Rib::new(MemoryMaps::default(), Capacities::default(), Duration::from_secs(1));
        let link = Link { index: 3, name: "if3".into(), mac: [2, 0, 0, 0, 0, 3], mtu: 1500, up: true, vlan: None, rx_queues: 1 };
        rib.apply(Event::Link(link), now).unwrap();
        let mut shared = RouteMetrics::DEFAULT;
        shared.set(Rtax::Advmss, 1360);
        let via = Some("10.2.0.254".parse().unwrap());
        rib.set_route(RouteInput::new("10.2.0.0/24".parse().unwrap(), RouteKind::Unicast, Some(3), via, shared), now).unwrap();
        let (d, neighbour) = ("10.2.0.9".parse().unwrap(), "10.2.0.8".parse().unwrap());
        assert_eq!(rib.forwarding_metrics(d), Some(shared));
        rib.cow_metrics(d, Rtax::Mtu, 1300, Source::Operator, None, now).unwrap();
        let private = rib.forwarding_metrics(d).unwrap();
        assert_eq!((private.mtu, private.advmss), (1300, 1360), "the private copy: the shared metrics and the override");
        assert_eq!(rib.forwarding_metrics(neighbour), Some(shared), "its neighbours keep the shared ones");
        assert_eq!(rib.forwarding_metrics("192.0.2.1".parse().unwrap()), None);
    }
}

#[cfg(test)]
mod error_route_tests {
    use super::ErrorRoute;
    use crate::{
        dataplane::map_writer::memory::MemoryMaps,
        rib::{
            types::{Event, Link},
            Capacities, Rib, RouteInput,
        },
    };
    use common::{RouteKind, RouteMetrics};
    use std::{
        net::IpAddr,
        time::{Duration, Instant},
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A RIB with links 3 and 4, up.
    fn rib_with_links() -> (Rib<MemoryMaps>, Instant) {
        let now = Instant::now();
        let mut rib = Rib::new(MemoryMaps::default(), Capacities::default(), Duration::from_secs(1));
        for i in [3, 4] {
            let link =
                Link { index: i, name: format!("if{i}"), mac: [2, 0, 0, 0, 0, i as u8], mtu: 1500, up: true, vlan: None, rx_queues: 1 };
            rib.apply(Event::Link(link), now).unwrap();
        }
        (rib, now)
    }

    #[test]
    fn an_error_leaves_as_its_route_back_says_or_not_at_all() {
        let (mut rib, now) = rib_with_links();
        let route =
            |p: &str, kind, dev, via: Option<&str>| RouteInput::new(p.parse().unwrap(), kind, dev, via.map(ip), RouteMetrics::DEFAULT);
        rib.set_route(route("10.1.0.0/24", RouteKind::Unicast, Some(3), None), now).unwrap();
        rib.set_route(route("10.2.0.0/24", RouteKind::Unicast, Some(4), None), now).unwrap();
        rib.set_route(route("10.9.0.0/16", RouteKind::Unicast, Some(4), Some("10.2.0.254")), now).unwrap();
        rib.set_route(route("10.66.0.0/16", RouteKind::Blackhole, None, None), now).unwrap();
        rib.set_route(route("10.67.0.0/16", RouteKind::Unreachable, None, None), now).unwrap();
        rib.apply(Event::Address { index: 3, addr: ip("10.1.0.1"), present: true }, now).unwrap();

        let via = |ifindex, n: &str| ErrorRoute::Via { ifindex, neighbour: ip(n) };
        // Connected: to the source itself, on whichever link its route names
        // (not the ingress: a spoofed source's error goes where it claims to be).
        assert_eq!(rib.error_route(ip("10.1.0.2"), 3), via(3, "10.1.0.2"));
        assert_eq!(rib.error_route(ip("10.2.0.7"), 3), via(4, "10.2.0.7"));
        // Behind a gateway: to the gateway.
        assert_eq!(rib.error_route(ip("10.9.1.1"), 3), via(4, "10.2.0.254"));
        // None back: no route, a blackhole, an unreachable route.
        for to in ["192.0.2.1", "10.66.0.1", "10.67.0.1"] {
            assert_eq!(rib.error_route(ip(to), 3), ErrorRoute::NoRoute, "{to}");
        }
        assert_eq!(rib.error_route(ip("10.1.0.1"), 3), ErrorRoute::ToSelf);
        // A link-local source is on the link the packet came in on.
        assert_eq!(rib.error_route(ip("fe80::1"), 4), via(4, "fe80::1"));
    }

    #[test]
    fn an_error_is_routed_through_the_rules_as_ip_route_output_would() {
        use super::ErrorFlow;
        use common::policy::{address_words, mask_words, PolicyRule, RuleAction, RuleList};
        let (mut rib, now) = rib_with_links();
        let route = |p: &str, dev, via: Option<&str>| {
            RouteInput::new(p.parse().unwrap(), RouteKind::Unicast, dev, via.map(ip), RouteMetrics::DEFAULT)
        };
        rib.set_route(route("10.1.0.0/24", Some(3), None), now).unwrap();
        rib.set_route(route("10.2.0.0/24", Some(4), None), now).unwrap();
        rib.set_route(route("10.9.0.0/16", Some(3), Some("10.1.0.254")), now).unwrap();
        rib.set_table_route(100, route("192.0.2.0/24", Some(4), Some("10.2.0.254")), now).unwrap();
        rib.apply(Event::Address { index: 3, addr: ip("10.1.0.1"), present: true }, now).unwrap();
        let to = |net: [u8; 4], len: u8, action: RuleAction| {
            let m = mask_words(len);
            let w = address_words(&[net[0], net[1], net[2], net[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            PolicyRule {
                dst: [w[0] & m[0], 0, 0, 0],
                dst_mask: m,
                action: action as u8,
                suppress_prefixlen: PolicyRule::NO_SUPPRESS,
                ..Default::default()
            }
        };
        let mut rules = RuleList { count: 5, ..Default::default() };
        rules.rules[0] = PolicyRule { table: 100, ..to([192, 0, 2, 0], 24, RuleAction::LookupTable) };
        rules.rules[1] = to([10, 9, 0, 0], 16, RuleAction::Prohibit);
        // Arrived on if3: not the error's flow, which comes from lo.
        rules.rules[2] = PolicyRule { iif: 3, ..to([0; 4], 0, RuleAction::Blackhole) };
        rules.rules[3] = to([10, 2, 0, 0], 24, RuleAction::Kernel);
        rules.rules[4] = to([0; 4], 0, RuleAction::LookupMain);
        let flow = ErrorFlow { src: None, dscp: 0xc0 };
        let via = |ifindex, n: &str| ErrorRoute::Via { ifindex, neighbour: ip(n) };
        let ruled = |t: &str| rib.error_route_ruled(ip(t), 3, &flow, Some(&rules));
        assert_eq!(ruled("192.0.2.7"), via(4, "10.2.0.254"), "table 100's route, which main lacks");
        assert_eq!(rib.error_route(ip("192.0.2.7"), 3), ErrorRoute::NoRoute);
        assert_eq!(ruled("10.9.1.1"), ErrorRoute::NoRoute, "prohibited by a rule");
        assert_eq!(ruled("10.1.0.2"), via(3, "10.1.0.2"), "main, past the iif rule");
        assert_eq!(ruled("10.2.0.9"), ErrorRoute::RuleKernel);
        assert_eq!(ruled("10.1.0.1"), ErrorRoute::ToSelf, "the local table first");
        assert_eq!(rib.error_route_ruled(ip("10.9.1.1"), 3, &flow, None), via(3, "10.1.0.254"), "no rules: main");
    }
}
