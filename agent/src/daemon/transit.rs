//! Packets in transit the slow path finishes (IPv4 options, IPv6 hop-by-hop
//! headers, DF clear and too big, IPv6 link-local destinations): processed
//! as the kernel's receive path does ([`crate::slow_path::transit`]), then
//! sent on through the neighbour queue, whose release applies the
//! forwarding rules and fragments.

use super::Daemon;
use crate::slow_path::{
    icmp::ErrorKind,
    ip_options,
    neighbour_queue::{self, Held, NeighbourKey},
    transit::{self, Prepared, TransitStats},
    NeighbourMiss,
};
use crate::{dataplane::map_writer::MapWriter, rib::Rib};
use common::RouteKind;
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

/// Where a transit frame leaves.
#[derive(Clone, Copy)]
enum Via {
    /// A route's next hop.
    Route(u32),
    /// The link it came from, to its link-local destination: `ip6_route_input`
    /// looks such a destination up on the ingress device only.
    Ingress(NeighbourKey),
}

impl Via {
    /// The way out for `dest` and the egress interface.
    fn of(dest: IpAddr, ingress: u32, rib: &Rib<MapWriter>) -> Option<(Via, u32)> {
        if matches!(dest, IpAddr::V6(d) if d.is_unicast_link_local()) {
            return Some((Via::Ingress((ingress, dest)), ingress));
        }
        let id = rib.forwarding_nexthop(dest)?;
        Some((Via::Route(id), rib.nexthop_key(id)?.ifindex))
    }
}

impl Daemon {
    pub(super) fn forward_transit(&mut self, held: Held, now: Instant) {
        let slow = self.slow.clone();
        let stats = &slow.stats.transit;
        let dest = neighbour_queue::frame_destination(&held.frame);
        let route = dest.and_then(|d| Via::of(d, held.ingress, &self.rib));
        // The kernel reads the options before it answers for the route
        // (a bad option draws its parameter problem even towards no route).
        let prepared = {
            let addrs = slow.ifaddrs.read().expect("not poisoned");
            let v4 = |i: u32| addrs.get(&i).and_then(|a| a.v4).unwrap_or(Ipv4Addr::UNSPECIFIED);
            let is_local = |a: Ipv4Addr| addrs.values().any(|x| x.v4 == Some(a));
            let ctx = ip_options::Context {
                ingress: v4(held.ingress),
                egress: route.map_or(Ipv4Addr::UNSPECIFIED, |(_, egress)| v4(egress)),
                accept_source_route: ip_options::accept_source_route(self.rib.link_name(held.ingress)),
                now_ms: ip_options::ms_since_midnight(),
                is_local: &is_local,
            };
            transit::prepare(&held.frame, &ctx)
        };
        let Some((via, egress)) = route else {
            if !matches!(prepared, Prepared::Forward { .. }) {
                return self.transit_refused(held.ingress, prepared, now);
            }
            TransitStats::bump(&stats.no_route, 1);
            // No route, unreachable, prohibit: the route's error, as `ip_error` sends it.
            let kind = match dest.and_then(|d| self.rib.forwarding_path(d)).map(|p| p.kind) {
                None => Some(ErrorKind::NoRoute),
                Some(RouteKind::Unreachable) => Some(ErrorKind::Unreachable),
                Some(RouteKind::Prohibit) => Some(ErrorKind::Prohibited),
                _ => None,
            };
            if let Some(kind) = kind {
                self.send_error(held, kind, now);
            }
            return;
        };
        match prepared {
            Prepared::Forward { frame, options } => {
                if options {
                    let v4 = frame.len() > 13 && frame[12..14] == [0x08, 0x00];
                    TransitStats::bump(if v4 { &stats.options_forwarded } else { &stats.hop_by_hop_forwarded }, 1);
                }
                // IPv4 options rewritten: errors about it start from what arrived.
                let arrived = (options && frame != held.frame).then_some(held.frame);
                let held = Held { arrived, ..Held::transit(held.ingress, frame) };
                let hairpin = egress == held.ingress || matches!(via, Via::Ingress(_));
                if transit::leaves_source_scope(&held.frame, hairpin) {
                    return self.send_error(held, ErrorKind::BeyondScope, now);
                }
                match via {
                    Via::Route(nexthop) => self.hold_for_neighbour(NeighbourMiss { nexthop, held }, now),
                    Via::Ingress(neighbour) => self.hold_at(neighbour, held, now),
                }
            }
            refused => self.transit_refused(held.ingress, refused, now),
        }
    }

    /// A transit frame the receive path refuses: counted, answered with its
    /// parameter problem where there is one.
    fn transit_refused(&mut self, ingress: u32, prepared: Prepared, now: Instant) {
        let slow = self.slow.clone();
        let stats = &slow.stats.transit;
        match prepared {
            Prepared::Forward { .. } => {}
            Prepared::Error { frame, kind } => {
                TransitStats::bump(&stats.parameter_problems, 1);
                self.send_error(Held::transit(ingress, frame), kind, now);
            }
            Prepared::SourceRouteRefused => TransitStats::bump(&stats.source_routes_refused, 1),
            Prepared::Drop => TransitStats::bump(&stats.header_drops, 1),
        }
    }
}
