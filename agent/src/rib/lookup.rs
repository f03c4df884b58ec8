//! Read-only questions about what the fast path forwards with.

use crate::rib::{cow::Source, MapSink, Rib};
use common::{RouteKind, RouteMetrics};
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

impl<S: MapSink> Rib<S> {
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
            Some(r) if r.input.nhid.is_some() => self.object_devices(r.input.nhid.expect("checked")),
            Some(r) if !r.input.multipath.is_empty() => r.input.multipath.iter().map(|l| l.dev).collect(),
            Some(r) => r.input.dev.into_iter().collect(),
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
