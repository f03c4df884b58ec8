//! The RIB's public vocabulary: a route as it comes in, a next hop's key,
//! table sizes, and the reports and views it hands out.

use crate::rib::cow::{CowStats, Source};
use crate::rib::ecmp::Leg;
use common::ingress::IngressPort;
use common::{RouteKind, RouteMetrics};
use ipnet::IpNet;
use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

/// What a route source hands the RIB (see `fib::source`): the route a prefix
/// maps to now, shared with the source's own record, or its removal; or a
/// nexthop object (`ip nexthop`) that routes name by id, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    Set(RouteInput),
    Delete(IpNet),
    /// A route of a table that rules look up (not one the main view merges).
    TableSet(u32, RouteInput),
    TableDelete(u32, IpNet),
    SetNexthop(Arc<NexthopObject>),
    DeleteNexthop(u32),
}

/// What a change is about: the retry set keeps the latest change per key.
/// Routes sort before objects (retries run in reverse: objects first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKey {
    Prefix(IpNet),
    TablePrefix(u32, IpNet),
    Nexthop(u32),
}

impl RouteChange {
    pub fn key(&self) -> ChangeKey {
        match self {
            RouteChange::Set(r) => ChangeKey::Prefix(r.prefix),
            RouteChange::Delete(p) => ChangeKey::Prefix(*p),
            RouteChange::TableSet(t, r) => ChangeKey::TablePrefix(*t, r.prefix),
            RouteChange::TableDelete(t, p) => ChangeKey::TablePrefix(*t, *p),
            RouteChange::SetNexthop(o) => ChangeKey::Nexthop(o.id),
            RouteChange::DeleteNexthop(id) => ChangeKey::Nexthop(*id),
        }
    }
}

/// A kernel nexthop object (`ip nexthop`, RTM_NEWNEXTHOP): what routes with
/// RTA_NH_ID forward through. Shared the way metrics are: one fast-path
/// entry per object, however many routes name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NexthopObject {
    pub id: u32,
    pub kind: NexthopKind,
    /// The kernel's `nh_protocol` (who installed it: zebra is 11, `ip` 0).
    pub protocol: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NexthopKind {
    /// A device and, unless connected, a gateway (an IPv6 one for an IPv4
    /// route too: RFC 5549).
    Single {
        dev: u32,
        via: Option<IpAddr>,
    },
    Blackhole,
    /// Other objects (never groups) with weights 1..=65536.
    Group {
        members: Vec<(u32, u32)>,
        resilient: Option<Resilient>,
    },
    /// What the fast path cannot carry (an encap, an FDB nexthop): routes
    /// through it go to the kernel.
    KernelOnly(&'static str),
}

/// A resilient group's table parameters, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resilient {
    pub buckets: u16,
    /// Seconds (the kernel reports clock_t: USER_HZ).
    pub idle_timer: u32,
    pub unbalanced_timer: u32,
}

/// A route as the agent holds it: its prefix, and what it says, shared with
/// every route that says the same (a full table's million routes name a
/// handful of next hops: [`AttrsInterner`]). Thirty-two bytes a route and no
/// allocation of its own; fields read through to [`RouteAttrs`].
#[derive(Clone, PartialEq, Eq)]
pub struct RouteInput {
    pub prefix: IpNet,
    attrs: Arc<RouteAttrs>,
}

/// Everything a route says but its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteAttrs {
    pub kind: RouteKind,
    /// Egress device (unicast routes).
    pub dev: Option<u32>,
    /// Gateway; `None` on a unicast route means a connected route.
    pub via: Option<IpAddr>,
    /// The legs of a multipath route (then `dev` and `via` are unused).
    pub multipath: Vec<Leg>,
    /// A nexthop object (RTA_NH_ID): then `dev`, `via` and `multipath` are
    /// unused, whatever the kernel expanded them to (nexthop_compat_mode 1),
    /// so that `ip nexthop replace` changes the object and not the route.
    pub nhid: Option<u32>,
    pub metrics: Metrics,
}

impl std::ops::Deref for RouteInput {
    type Target = RouteAttrs;
    fn deref(&self) -> &RouteAttrs {
        &self.attrs
    }
}

/// A write unshares first (copy-on-write, as the metrics are): the other
/// routes keep what they said.
impl std::ops::DerefMut for RouteInput {
    fn deref_mut(&mut self) -> &mut RouteAttrs {
        Arc::make_mut(&mut self.attrs)
    }
}

impl std::fmt::Debug for RouteInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.prefix, self.attrs)
    }
}

/// One shared [`RouteAttrs`] for every route that says the same. A route
/// source's record interns what it keeps; sets no route names any more are
/// dropped once they are as many as the live ones.
#[derive(Debug, Default)]
pub struct AttrsInterner {
    sets: hashbrown::HashSet<Arc<RouteAttrs>>,
    /// Size after the last sweep.
    swept_at: usize,
}

impl AttrsInterner {
    pub fn intern(&mut self, attrs: Arc<RouteAttrs>) -> Arc<RouteAttrs> {
        if let Some(shared) = self.sets.get(&attrs) {
            return shared.clone();
        }
        if self.sets.len() >= 2 * self.swept_at.max(512) {
            self.sets.retain(|a| Arc::strong_count(a) > 1);
            self.swept_at = self.sets.len();
        }
        self.sets.insert(attrs.clone());
        attrs
    }

    /// `route` with its attributes shared.
    pub fn route(&mut self, route: RouteInput) -> RouteInput {
        RouteInput { attrs: self.intern(route.attrs), ..route }
    }

    /// Distinct sets held (live or not yet swept).
    pub fn sets(&self) -> usize {
        self.sets.len()
    }
}

/// A route's metrics as the RIB and the feeds hold them: nothing for the
/// all-zero default that nearly every route has, else one shared copy.
/// Eight bytes in each of a full table's routes, not sixty-eight.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metrics(Option<Arc<RouteMetrics>>);

static DEFAULT_METRICS: RouteMetrics = RouteMetrics::DEFAULT;

impl From<RouteMetrics> for Metrics {
    fn from(m: RouteMetrics) -> Metrics {
        Metrics((m != RouteMetrics::DEFAULT).then(|| Arc::new(m)))
    }
}

impl std::ops::Deref for Metrics {
    type Target = RouteMetrics;
    fn deref(&self) -> &RouteMetrics {
        self.0.as_deref().unwrap_or(&DEFAULT_METRICS)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl PartialEq<RouteMetrics> for Metrics {
    fn eq(&self, other: &RouteMetrics) -> bool {
        **self == *other
    }
}

impl RouteInput {
    /// A route with one next hop (or none, for the types that drop).
    pub fn new(prefix: IpNet, kind: RouteKind, dev: Option<u32>, via: Option<IpAddr>, metrics: RouteMetrics) -> RouteInput {
        RouteInput::from_attrs(prefix, RouteAttrs { kind, dev, via, multipath: Vec::new(), nhid: None, metrics: metrics.into() })
    }

    pub fn from_attrs(prefix: IpNet, attrs: impl Into<Arc<RouteAttrs>>) -> RouteInput {
        RouteInput { prefix, attrs: attrs.into() }
    }

    /// A unicast route through nexthop object `nhid`.
    pub fn via_object(prefix: IpNet, nhid: u32, metrics: RouteMetrics) -> RouteInput {
        RouteInput::new(prefix, RouteKind::Unicast, None, None, metrics).with(|a| a.nhid = Some(nhid))
    }

    /// The same route saying something else (its attributes unshared first).
    pub fn with(mut self, edit: impl FnOnce(&mut RouteAttrs)) -> RouteInput {
        edit(&mut self);
        self
    }

    pub fn attrs(&self) -> &Arc<RouteAttrs> {
        &self.attrs
    }
}

/// A next hop is the pair (device, gateway); no gateway: the "glean" next hop
/// of a connected prefix, which never forwards (no neighbour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHopKey {
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
}

/// What the agent has published, in counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RibSummary {
    pub routes: usize,
    pub local_addresses: usize,
    pub neighbour_hosts: usize,
    pub nexthops: usize,
    pub nexthops_resolved: usize,
    /// Next hops with a gateway whose neighbour is not known yet.
    pub gateways_unresolved: usize,
    pub nexthop_groups: usize,
    pub metrics_ro_in_use: usize,
    /// References to them (routes, neighbour hosts), all together.
    pub metrics_ro_references: u64,
    pub metrics_ro_quarantined: usize,
    pub metrics_rw_in_use: usize,
    pub metrics_rw_quarantined: usize,
    pub metrics_rw_capacity: u32,
    pub cow: CowStats,
}

/// What the sweep after adoption did, in counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdoptionReport {
    /// Earlier keys this agent published too (overwritten in place).
    pub routes_kept: usize,
    /// Earlier keys this agent has nothing for (deleted).
    pub routes_removed: usize,
    /// Slots of the earlier agent freed (after the grace period).
    pub slots_released: usize,
    /// Private copies taken over (values, sources and expiries kept).
    pub private_kept: usize,
}

/// What a resync after a netlink overrun changed, in counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResyncReport {
    pub links: usize,
    pub addresses: usize,
    pub neighbours: usize,
    pub routes_added: usize,
    pub routes_changed: usize,
    pub routes_removed: usize,
    /// Nexthop objects set or removed.
    #[serde(default)]
    pub nexthops_changed: usize,
}

/// How `metrics show` describes one destination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DestinationMetrics {
    pub destination: IpAddr,
    /// `ro:N` or `rw:N`.
    pub reference: String,
    pub values: BTreeMap<&'static str, u32>,
    pub covering: Option<String>,
    /// `1 << RTAX_x` of the overridden metrics.
    pub override_mask: u32,
    pub overrides: Vec<OverrideInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OverrideInfo {
    pub metric: &'static str,
    pub value: u32,
    pub source: Source,
    /// Seconds left; `None`: until reset.
    pub expires_in: Option<u64>,
}

/// Sizes of the agent's tables.
#[derive(Debug, Clone, Copy)]
pub struct Capacities {
    pub metrics_ro: u32,
    pub metrics_rw: u32,
    pub nexthops: u32,
    pub nexthop_groups: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            metrics_ro: common::capacity::METRICS_RO,
            metrics_rw: common::capacity::METRICS_RW,
            nexthops: common::capacity::NEXTHOPS,
            nexthop_groups: common::capacity::NH_GROUPS,
        }
    }
}

/// A network device, as the kernel reports it.
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
    /// RX queues (IFLA_NUM_RX_QUEUES): a slow-path socket for each.
    pub rx_queues: u32,
}

/// An interface's source-validation sysctls, as the kernel combines
/// `conf/all` and `conf/DEV` (`IN_DEV_RPFILTER`: the larger; the others: either).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSysctls {
    pub rp_filter: u8,
    pub accept_local: bool,
    pub route_localnet: bool,
    pub send_redirects: bool,
}

impl PortSysctls {
    /// As `IngressPort::flags`.
    pub fn flags(&self) -> u8 {
        (if self.accept_local { IngressPort::ACCEPT_LOCAL } else { 0 })
            | (if self.route_localnet { IngressPort::ROUTE_LOCALNET } else { 0 })
            | (if self.send_redirects { IngressPort::SEND_REDIRECTS } else { 0 })
    }
}

/// What the kernel says changed (netlink), in the RIB's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Link(Link),
    LinkGone(u32),
    Address {
        index: u32,
        addr: IpAddr,
        present: bool,
    },
    /// A subnet broadcast address that address `of` on `index` gives the
    /// router (the kernel's RTN_BROADCAST route in the local table): its
    /// packets are delivered locally (bc_forwarding off), never forwarded.
    Broadcast {
        index: u32,
        addr: IpAddr,
        of: IpAddr,
        present: bool,
    },
    /// A neighbour entry; `mac` is set when it may be used to forward.
    Neighbour {
        index: u32,
        addr: IpAddr,
        mac: Option<[u8; 6]>,
    },
    NeighbourGone {
        index: u32,
        addr: IpAddr,
    },
    /// A route of the kernel's FIB (`--source kernel`).
    Route {
        route: KernelRoute,
        present: bool,
        /// NLM_F_REPLACE: it replaces the route of the same priority.
        replace: bool,
    },
    /// A nexthop object appeared, changed or went (`present`).
    Nexthop {
        object: NexthopObject,
        present: bool,
    },
    /// An `ip rule` appeared or went (`present`).
    Rule {
        rule: crate::rib::policy::KernelRule,
        present: bool,
    },
    /// The subscription's socket overflowed (ENOBUFS): events were lost, and
    /// only a full dump can say what the kernel holds now.
    Overrun,
    /// A message of the subscription could not be decoded: its change is
    /// lost as an overrun's are, and a full dump follows as well.
    Undecodable,
}

impl Event {
    /// Events were lost: only a full dump can say what the kernel holds.
    pub fn needs_resync(&self) -> bool {
        matches!(self, Event::Overrun | Event::Undecodable)
    }
}

/// A kernel route, as far as the fast path can carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub table: u32,
    /// The kernel prefers the lowest.
    pub priority: u32,
    pub route: RouteInput,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_metrics_hold_nothing_and_others_read_through() {
        assert_eq!(Metrics::from(RouteMetrics::DEFAULT), Metrics::default());
        assert!(Metrics::from(RouteMetrics::DEFAULT).0.is_none(), "no allocation for the all-zero set");
        let mut m = RouteMetrics::DEFAULT;
        m.mtu = 1400;
        let shared = Metrics::from(m);
        assert_eq!((shared.mtu, *shared), (1400, m));
        assert!(shared == m && shared != Metrics::default());
        let route = RouteInput::new("10.0.0.0/8".parse().unwrap(), RouteKind::Unicast, Some(2), None, m);
        assert_eq!(route.clone().metrics, shared, "equal by value");
    }

    /// Sets no route holds any more go once they are as many as the live
    /// ones: the interner never grows past twice what is in use.
    #[test]
    fn the_interner_drops_sets_no_route_holds() {
        let mut interner = AttrsInterner::default();
        let route = |dev: u32| RouteInput::new("10.0.0.0/8".parse().unwrap(), RouteKind::Unicast, Some(dev), None, RouteMetrics::DEFAULT);
        let kept: Vec<RouteInput> = (0..10).map(|d| interner.route(route(d))).collect();
        for dev in 10..5000 {
            drop(interner.route(route(dev)));
        }
        assert!(interner.sets() <= 2 * 512, "{} sets held", interner.sets());
        for (d, r) in kept.iter().enumerate() {
            assert!(Arc::ptr_eq(interner.route(route(d as u32)).attrs(), r.attrs()), "a live set is still the one shared");
        }
    }
}
