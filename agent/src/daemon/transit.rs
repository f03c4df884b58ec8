//! Packets in transit the slow path finishes (IPv4 options, IPv6 hop-by-hop
//! headers, DF clear and too big): processed as the kernel's receive path
//! does ([`crate::slow_path::transit`]), then sent on through the neighbour
//! queue, whose release applies the forwarding rules and fragments.

use super::Daemon;
use crate::slow_path::{
    icmp::ErrorKind,
    ip_options,
    neighbour_queue::{self, Held},
    transit::{self, Prepared, TransitStats},
    NeighbourMiss,
};
use common::RouteKind;
use std::{net::Ipv4Addr, time::Instant};

impl Daemon {
    pub(super) fn forward_transit(&mut self, held: Held, now: Instant) {
        let slow = self.slow.clone();
        let stats = &slow.stats.transit;
        let dest = neighbour_queue::frame_destination(&held.frame);
        let route = dest.and_then(|d| self.rib.forwarding_nexthop(d)).and_then(|id| Some((id, self.rib.nexthop_key(id)?)));
        // The kernel reads the options before it answers for the route
        // (a bad option draws its parameter problem even towards no route).
        let prepared = {
            let addrs = slow.ifaddrs.read().expect("not poisoned");
            let v4 = |i: u32| addrs.get(&i).and_then(|a| a.v4).unwrap_or(Ipv4Addr::UNSPECIFIED);
            let is_local = |a: Ipv4Addr| addrs.values().any(|x| x.v4 == Some(a));
            let ctx = ip_options::Context {
                ingress: v4(held.ingress),
                egress: route.map_or(Ipv4Addr::UNSPECIFIED, |(_, key)| v4(key.ifindex)),
                accept_source_route: ip_options::accept_source_route(self.rib.link_name(held.ingress)),
                now_ms: ip_options::ms_since_midnight(),
                is_local: &is_local,
            };
            transit::prepare(&held.frame, &ctx)
        };
        let Some((nexthop, _)) = route else {
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
                self.hold_for_neighbour(NeighbourMiss { nexthop, held: Held::transit(held.ingress, frame) }, now);
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
