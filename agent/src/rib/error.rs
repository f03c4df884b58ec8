//! What a RIB change can fail with, typed, so that callers act on the
//! kind: a full table is kept for a retry, the rest is reported.

use crate::{
    dataplane::map_writer::MapError,
    rib::{cow::CowError, metrics_store::MetricsStoreError},
};
use ipnet::IpNet;
use std::net::IpAddr;

/// The RIB's own tables, each with a fixed number of ids or slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Interned shared metric sets (`METRICS_RO` slots).
    MetricsRo,
    /// Next hop ids (`NEXTHOPS`).
    NextHops,
    /// ECMP group ids (`NH_GROUPS`).
    NhGroups,
}

impl Pool {
    /// "METRICS_RO is full: ...", as an operator reads it.
    fn full(self, capacity: u32) -> String {
        match self {
            Pool::MetricsRo => format!("METRICS_RO is full: all {capacity} shared metric slots are in use"),
            Pool::NextHops => format!("NEXTHOPS is full ({capacity} next hops)"),
            Pool::NhGroups => format!("NH_GROUPS is full ({capacity} groups)"),
        }
    }
}

/// What wanted the id or slot a full pool could not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantedBy {
    Route(IpNet),
    Neighbour(IpAddr),
}

fn pool_full(pool: &Pool, capacity: &u32, by: &Option<WantedBy>) -> String {
    match by {
        Some(WantedBy::Route(p)) => format!("route {p}: {}", pool.full(*capacity)),
        Some(WantedBy::Neighbour(a)) => format!("neighbour {a}: {}", pool.full(*capacity)),
        None => pool.full(*capacity),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RibError {
    /// A table of the RIB's own has no free id or slot: the change was
    /// refused whole, and may be tried again once room is made.
    #[error("{}", pool_full(.pool, .capacity, .by))]
    PoolFull { pool: Pool, capacity: u32, by: Option<WantedBy> },
    /// A route the fast path cannot carry as given.
    #[error("unicast route {0} has no device")]
    NoDevice(IpNet),
    /// A private copy could not follow its route (see the COW engine).
    #[error(transparent)]
    Cow(#[from] CowError),
    /// The maps refused a write.
    #[error(transparent)]
    Map(#[from] MapError),
}

impl RibError {
    /// Worth trying again later: a full table (the RIB's or a map's), or
    /// the kernel short of memory. Anything else fails the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            RibError::PoolFull { .. } | RibError::Cow(CowError::PoolExhausted { .. }) => true,
            RibError::Map(e) | RibError::Cow(CowError::Map(e)) => e.is_transient(),
            RibError::NoDevice(_) | RibError::Cow(_) => false,
        }
    }

    /// A full pool's error names what wanted the slot (kept if named already).
    pub(crate) fn wanted_by(self, wanted: WantedBy) -> RibError {
        match self {
            RibError::PoolFull { pool, capacity, by: None } => RibError::PoolFull { pool, capacity, by: Some(wanted) },
            other => other,
        }
    }
}

/// A pool without a free id or slot, its user not named yet.
pub(crate) fn full(pool: Pool, capacity: u32) -> RibError {
    RibError::PoolFull { pool, capacity, by: None }
}

impl From<MetricsStoreError> for RibError {
    fn from(e: MetricsStoreError) -> RibError {
        match e {
            MetricsStoreError::Full(capacity) => full(Pool::MetricsRo, capacity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dataplane::map_writer::memory::MemoryMaps,
        rib::{
            ecmp::Leg,
            types::{Event, Link},
            Capacities, Rib, RouteInput,
        },
    };
    use common::{RouteKind, RouteMetrics, Rtax};
    use std::time::{Duration, Instant};

    fn rib(caps: Capacities, maps: MemoryMaps) -> (Rib<MemoryMaps>, Instant) {
        let now = Instant::now();
        let mut rib = Rib::new(maps, caps, Duration::from_secs(1));
        let link = Link { index: 2, name: "if2".into(), mac: [2; 6], mtu: 1500, up: true, vlan: None, rx_queues: 1 };
        rib.apply(Event::Link(link), now).unwrap();
        (rib, now)
    }

    fn caps() -> Capacities {
        Capacities { metrics_ro: 64, metrics_rw: 4, nexthops: 64, nexthop_groups: 8 }
    }

    fn route(prefix: &str, via: Option<&str>, mtu: u32) -> RouteInput {
        let mut m = RouteMetrics::DEFAULT;
        m.set(Rtax::Mtu, mtu);
        RouteInput::new(prefix.parse().unwrap(), RouteKind::Unicast, Some(2), via.map(|v| v.parse().unwrap()), m)
    }

    #[test]
    fn each_full_pool_of_the_rib_is_pool_full_naming_the_pool_and_the_route() {
        // METRICS_RO: slot 0 is the default, one slot left.
        let (mut r, now) = rib(Capacities { metrics_ro: 2, ..caps() }, MemoryMaps::default());
        r.set_route(route("10.1.0.0/24", None, 1400), now).unwrap();
        let e = r.set_route(route("10.3.0.0/24", None, 1300), now).unwrap_err();
        let p = "10.3.0.0/24".parse().unwrap();
        assert!(matches!(e, RibError::PoolFull { pool: Pool::MetricsRo, capacity: 2, by: Some(WantedBy::Route(q)) } if q == p), "{e:?}");
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "route 10.3.0.0/24: METRICS_RO is full: all 2 shared metric slots are in use");
        // NEXTHOPS: id 0 is never handed out, one id left.
        let (mut r, now) = rib(Capacities { nexthops: 2, ..caps() }, MemoryMaps::default());
        r.set_route(route("10.1.0.0/24", Some("10.1.0.1"), 0), now).unwrap();
        let e = r.set_route(route("10.2.0.0/24", Some("10.1.0.2"), 0), now).unwrap_err();
        assert!(matches!(e, RibError::PoolFull { pool: Pool::NextHops, capacity: 2, by: Some(WantedBy::Route(_)) }), "{e:?}");
        assert!(e.to_string().contains("NEXTHOPS is full (2 next hops)"), "{e}");
        // NH_GROUPS: id 0 is never handed out, none left.
        let (mut r, now) = rib(Capacities { nexthop_groups: 1, ..caps() }, MemoryMaps::default());
        let legs = ["10.1.0.1", "10.1.0.2"].map(|g| Leg { dev: 2, via: Some(g.parse().unwrap()), weight: 1 }).to_vec();
        let e = r.set_route(route("10.4.0.0/16", None, 0).with(|a| a.multipath = legs), now).unwrap_err();
        assert!(matches!(e, RibError::PoolFull { pool: Pool::NhGroups, capacity: 1, .. }), "{e:?}");
        assert!(e.to_string().starts_with("route 10.4.0.0/16: NH_GROUPS is full"), "{e}");
        assert_eq!(r.summary().nexthops, 0, "the legs' next hops were given back");
    }

    #[test]
    fn a_full_map_is_a_retryable_map_error_and_a_route_without_a_device_is_not_retryable() {
        let (mut r, now) = rib(caps(), MemoryMaps { route_capacity: Some(1), ..MemoryMaps::default() });
        r.set_route(route("10.1.0.0/24", None, 0), now).unwrap();
        let e = r.set_route(route("10.2.0.0/24", None, 0), now).unwrap_err();
        assert!(matches!(e, RibError::Map(MapError::Full { map: common::maps::ROUTES_V4, capacity: 1 })), "{e:?}");
        assert!(e.is_retryable());
        let e = r.set_route(route("10.5.0.0/24", None, 0).with(|a| a.dev = None), now).unwrap_err();
        assert!(matches!(e, RibError::NoDevice(_)) && !e.is_retryable(), "{e:?}");
        assert_eq!(e.to_string(), "unicast route 10.5.0.0/24 has no device");
    }

    #[test]
    fn an_exhausted_private_pool_is_retryable_a_missing_route_is_not() {
        let dest = "10.1.0.9".parse().unwrap();
        let exhausted = RibError::from(CowError::PoolExhausted { dest, capacity: 1 });
        assert!(exhausted.is_retryable());
        assert!(exhausted.to_string().contains("10.1.0.9 keeps its shared metrics"), "{exhausted}");
        assert!(!RibError::from(CowError::NoRoute(dest)).is_retryable());
    }
}
