//! Verdict reasons and the per-CPU counters the fast path keeps for each.

/// Why a packet left the fast path the way it did. One counter per reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Redirected to the next hop.
    Forwarded = 0,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): the stack's.
    NotIp = 1,
    /// Truncated or inconsistent headers, bad IPv4 header checksum.
    Malformed = 2,
    /// More than one VLAN tag, or an 802.1ad outer tag.
    VlanStacked = 3,
    /// Multicast or broadcast destination.
    Multicast = 4,
    /// IPv6 link-local destination that is the router's own (the stack's),
    /// or a link-local source of a packet to be forwarded (Destination
    /// Unreachable, beyond scope).
    LinkLocal = 5,
    /// No route matches the destination.
    NoRoute = 6,
    /// The route is local (or broadcast): for this router.
    Local = 7,
    /// TTL or hop limit would reach zero.
    TtlExceeded = 8,
    /// Larger than the route MTU (or the egress device MTU).
    TooBig = 9,
    /// IPv4 options or an IPv6 hop-by-hop header.
    IpOptions = 10,
    /// The next hop has no resolved neighbour, or its link is down.
    NoNeighbour = 11,
    /// A blackhole route: dropped.
    Blackhole = 12,
    /// An unreachable route.
    Unreachable = 13,
    /// A prohibit route.
    Prohibit = 14,
    /// The egress port is not in `EGRESS_PORTS`.
    RedirectFailed = 15,
    /// A route names a metrics or next-hop slot that does not exist.
    BadReference = 16,
    /// Not enough headroom to push a VLAN tag.
    NoHeadroom = 17,
    /// The route is one only the kernel can carry (encap, TOS, source
    /// prefix, throw, ...): passed to the stack.
    KernelRoute = 18,
    /// Addressed to another MAC (PACKET_OTHERHOST: a promiscuous or bridged
    /// port, a macvlan's frame): never routed, the stack's.
    OtherHost = 19,
    /// An 802.1Q tag with no VLAN sub-interface for it here: the stack's
    /// (it drops it as PACKET_OTHERHOST).
    VlanUnknown = 20,
    /// The ingress interface is not (yet) in `INGRESS_PORTS`: the stack's.
    PortUnknown = 21,
    /// Martian source: multicast or limited broadcast.
    SourceGroup = 22,
    /// Martian source: 0.0.0.0, or IPv6 `::` on a forwarded packet.
    SourceZero = 23,
    /// Martian source: 127/8 (without `route_localnet`), `::1`.
    SourceLoopback = 24,
    /// Martian destination: 0.0.0.0.
    DestinationZero = 25,
    /// Martian destination: 127/8 (without `route_localnet`), `::1`.
    DestinationLoopback = 26,
    /// The source is one of the router's addresses (no `accept_local`).
    SourceLocal = 27,
    /// `rp_filter`: no route back to the source (loose), or not through the
    /// ingress interface (strict).
    SourceReversePath = 28,
    /// IPv6 link-local destination that is not the router's: forwarded back
    /// out of the link it came from (`ip6_forward`), by the agent.
    LinkLocalTransit = 29,
    /// An `ip rule` the fast path cannot evaluate, or a lookup in a table it
    /// does not hold, may claim the packet: the kernel's to route.
    RuleKernel = 30,
}

/// Number of reasons: the size of the `COUNTERS` array.
pub const NUM_REASONS: u32 = 31;

impl Reason {
    pub const ALL: [Reason; NUM_REASONS as usize] = [
        Reason::Forwarded,
        Reason::NotIp,
        Reason::Malformed,
        Reason::VlanStacked,
        Reason::Multicast,
        Reason::LinkLocal,
        Reason::NoRoute,
        Reason::Local,
        Reason::TtlExceeded,
        Reason::TooBig,
        Reason::IpOptions,
        Reason::NoNeighbour,
        Reason::Blackhole,
        Reason::Unreachable,
        Reason::Prohibit,
        Reason::RedirectFailed,
        Reason::BadReference,
        Reason::NoHeadroom,
        Reason::KernelRoute,
        Reason::OtherHost,
        Reason::VlanUnknown,
        Reason::PortUnknown,
        Reason::SourceGroup,
        Reason::SourceZero,
        Reason::SourceLoopback,
        Reason::DestinationZero,
        Reason::DestinationLoopback,
        Reason::SourceLocal,
        Reason::SourceReversePath,
        Reason::LinkLocalTransit,
        Reason::RuleKernel,
    ];

    pub fn from_u8(v: u8) -> Option<Reason> {
        Reason::ALL.get(v as usize).copied()
    }

    pub const fn name(self) -> &'static str {
        match self {
            Reason::Forwarded => "forwarded",
            Reason::NotIp => "not_ip",
            Reason::Malformed => "malformed",
            Reason::VlanStacked => "vlan_stacked",
            Reason::Multicast => "multicast",
            Reason::LinkLocal => "link_local",
            Reason::NoRoute => "no_route",
            Reason::Local => "local",
            Reason::TtlExceeded => "ttl_exceeded",
            Reason::TooBig => "too_big",
            Reason::IpOptions => "ip_options",
            Reason::NoNeighbour => "no_neighbour",
            Reason::Blackhole => "blackhole",
            Reason::Unreachable => "unreachable",
            Reason::Prohibit => "prohibit",
            Reason::RedirectFailed => "redirect_failed",
            Reason::BadReference => "bad_reference",
            Reason::NoHeadroom => "no_headroom",
            Reason::KernelRoute => "kernel_route",
            Reason::OtherHost => "other_host",
            Reason::VlanUnknown => "vlan_unknown",
            Reason::PortUnknown => "port_unknown",
            Reason::SourceGroup => "martian_source_group",
            Reason::SourceZero => "martian_source_zero",
            Reason::SourceLoopback => "martian_source_loopback",
            Reason::DestinationZero => "martian_destination_zero",
            Reason::DestinationLoopback => "martian_destination_loopback",
            Reason::SourceLocal => "martian_source_local",
            Reason::SourceReversePath => "rp_filter",
            Reason::LinkLocalTransit => "link_local_transit",
            Reason::RuleKernel => "rule_kernel",
        }
    }

    pub fn from_u32(v: u32) -> Option<Reason> {
        Reason::ALL.get(v as usize).copied()
    }
}

/// Packets and bytes for one reason, on one CPU (`COUNTERS` is per-CPU, so
/// the fast path never writes a line another CPU reads).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_dense_and_named_uniquely() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            assert_eq!(Reason::from_u32(i as u32), Some(*r));
            for other in &Reason::ALL[i + 1..] {
                assert_ne!(r.name(), other.name());
            }
        }
        assert_eq!(Reason::from_u32(NUM_REASONS), None);
    }
}
