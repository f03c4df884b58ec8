//! Ingress validation, as the kernel does it before it routes a packet:
//! the layer-2 checks of `eth_type_trans` and `vlan_do_receive`, the martian
//! checks of `ip_route_input_slow` and `ip6_rcv_core` / `ip6_forward`, and
//! `fib_validate_source` (`rp_filter`, `accept_local`). One definition, so
//! the XDP program and its tests agree on every verdict and its order.
//!
//! The kernel's order for IPv4 (net/ipv4/route.c): multicast or limited
//! broadcast destination (the stack's), then the source as multicast or
//! limited broadcast, 0/8 source, 0/8 destination, loopback destination,
//! loopback source (both allowed by `route_localnet`); then the route
//! lookup; then, for a unicast route, the source against the FIB
//! (`fib_validate_source`); then `ip_forward` (TTL, MTU).

use crate::Reason;

/// An `INGRESS_PORTS` key: the interface a frame arrived on and the VLAN id
/// of its 802.1Q tag (0: untagged or priority-tagged).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IngressKey {
    pub ifindex: u32,
    pub vid: u32,
}

/// What the program needs to know of the interface a frame arrived on (for
/// a tagged frame: of the VLAN sub-interface), as the agent reads it from
/// the kernel: its MAC and the sysctls `fib_validate_source` reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngressPort {
    /// The interface's own MAC: frames to another unicast MAC are
    /// PACKET_OTHERHOST.
    pub mac: [u8; 6],
    /// The lower device's MAC for a VLAN sub-interface (`vlan_do_receive`
    /// accepts either); the same as `mac` otherwise.
    pub lower_mac: [u8; 6],
    /// `max(conf/all/rp_filter, conf/DEV/rp_filter)`: 0 off, 1 strict, 2 loose.
    pub rp_filter: u8,
    /// [`IngressPort::ACCEPT_LOCAL`], [`IngressPort::ROUTE_LOCALNET`],
    /// [`IngressPort::SEND_REDIRECTS`]: each `all` OR `DEV`, as the kernel
    /// reads them; [`IngressPort::PRESENT`].
    pub flags: u8,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<IngressPort>() == 16 && core::mem::size_of::<IngressKey>() == 8);

/// Where a port lives: the `INGRESS_PORTS` array's index, for an untagged
/// port whose ifindex fits; else `INGRESS_VLAN_PORTS`.
#[inline(always)]
pub const fn array_slot(key: &IngressKey) -> Option<u32> {
    if key.vid == 0 && key.ifindex < crate::capacity::INGRESS_PORTS {
        Some(key.ifindex)
    } else {
        None
    }
}

impl IngressPort {
    /// `accept_local`: a source that is one of the router's addresses is valid.
    pub const ACCEPT_LOCAL: u8 = 0x1;
    /// `route_localnet`: 127/8 is routable, as source or destination.
    pub const ROUTE_LOCALNET: u8 = 0x2;
    /// `send_redirects`: a packet leaving by its ingress interface gets
    /// the full source check (`fib_validate_source`).
    pub const SEND_REDIRECTS: u8 = 0x4;
    /// An element of the `INGRESS_PORTS` array that holds a port (the
    /// others are zeros).
    pub const PRESENT: u8 = 0x80;

    /// `eth_type_trans`: the frame is addressed to this interface (a group
    /// address is the caller's to have handled).
    #[inline(always)]
    pub fn is_for_us(&self, dmac: &[u8; 6]) -> bool {
        *dmac == self.mac || *dmac == self.lower_mac
    }

    #[inline(always)]
    pub const fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// 224/4.
#[inline(always)]
pub const fn ipv4_is_multicast(a: [u8; 4]) -> bool {
    a[0] & 0xf0 == 0xe0
}

/// 255.255.255.255.
#[inline(always)]
pub const fn ipv4_is_lbcast(a: [u8; 4]) -> bool {
    a[0] == 255 && a[1] == 255 && a[2] == 255 && a[3] == 255
}

/// 0.0.0.0: since Linux 5.3 the rest of 0/8 is ordinary unicast
/// ("Allow 0.0.0.0/8 as a valid address range"), as the kernel-differential
/// suite confirms on 6.18.
#[inline(always)]
pub const fn ipv4_is_zeronet(a: [u8; 4]) -> bool {
    u32::from_be_bytes(a) == 0
}

/// 127/8.
#[inline(always)]
pub const fn ipv4_is_loopback(a: [u8; 4]) -> bool {
    a[0] == 127
}

/// `ip_route_input_slow`'s martian checks before the route lookup, for a
/// destination that is neither multicast nor limited broadcast (those are
/// the stack's first). `None`: on to the lookup. Class E (240/4) is not a
/// martian to Linux, as source or destination.
#[inline(always)]
pub const fn ipv4_martian(src: [u8; 4], dst: [u8; 4], route_localnet: bool) -> Option<Reason> {
    if ipv4_is_multicast(src) || ipv4_is_lbcast(src) {
        return Some(Reason::SourceGroup);
    }
    if ipv4_is_zeronet(src) {
        // 0.0.0.0 to 0.0.0.0 is the kernel's "broadcast input": not ours to judge.
        return if ipv4_is_zeronet(dst) { None } else { Some(Reason::SourceZero) };
    }
    if ipv4_is_zeronet(dst) {
        return Some(Reason::DestinationZero);
    }
    if ipv4_is_loopback(dst) {
        return if route_localnet { None } else { Some(Reason::DestinationLoopback) };
    }
    if ipv4_is_loopback(src) && !route_localnet {
        return Some(Reason::SourceLoopback);
    }
    None
}

/// The first 15 bytes are zero: `::` or `::1` (and `::2`..`::ff`).
#[inline(always)]
const fn ipv6_low_byte_only(a: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 15 {
        if a[i] != 0 {
            return false;
        }
        i += 1;
    }
    true
}

/// ::1.
#[inline(always)]
pub const fn ipv6_is_loopback(a: &[u8; 16]) -> bool {
    ipv6_low_byte_only(a) && a[15] == 1
}

/// ::.
#[inline(always)]
pub const fn ipv6_is_unspecified(a: &[u8; 16]) -> bool {
    ipv6_low_byte_only(a) && a[15] == 0
}

/// fe80::/10.
#[inline(always)]
pub const fn ipv6_is_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// `ip6_rcv_core`'s checks of a packet's addresses, for a destination that
/// is not multicast (the stack's): loopback source or destination (RFC 4291
/// 2.5.3) and a multicast source (RFC 4291 2.7) are dropped.
#[inline(always)]
pub const fn ipv6_martian(src: &[u8; 16], dst: &[u8; 16]) -> Option<Reason> {
    if ipv6_is_loopback(dst) {
        return Some(Reason::DestinationLoopback);
    }
    if ipv6_is_loopback(src) {
        return Some(Reason::SourceLoopback);
    }
    if src[0] == 0xff {
        return Some(Reason::SourceGroup);
    }
    None
}

/// What the FIB says of a packet's source (its reverse route), as far as
/// `fib_validate_source` asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceRoute {
    /// No route covers the source.
    None,
    /// A unicast route; `via_ingress`: one of its next hops leaves by the
    /// interface (and VLAN) the packet arrived on.
    Unicast { via_ingress: bool },
    /// One of the router's own addresses.
    Address,
    /// Another local route (broadcast, anycast, a custom local route).
    Local,
    /// A local route (an address or not) whose device is the interface the
    /// packet arrived on: known only when strict mode asks. (A variant, not
    /// a field of the two above: the verifier's path count grows with one.)
    LocalOnIngress,
    /// Blackhole, unreachable, prohibit: `fib_lookup` fails on them, as
    /// when no route covers the source.
    Reject,
    /// A route only the kernel can evaluate.
    Kernel,
}

impl SourceRoute {
    /// As one word (a BPF function's return value).
    pub const fn to_u32(self) -> u32 {
        match self {
            SourceRoute::None => 0,
            SourceRoute::Unicast { via_ingress: false } => 1,
            SourceRoute::Unicast { via_ingress: true } => 2,
            SourceRoute::Address => 3,
            SourceRoute::Local => 4,
            SourceRoute::LocalOnIngress => 5,
            SourceRoute::Reject => 6,
            SourceRoute::Kernel => 7,
        }
    }

    pub const fn from_u32(v: u32) -> SourceRoute {
        match v {
            0 => SourceRoute::None,
            1 => SourceRoute::Unicast { via_ingress: false },
            2 => SourceRoute::Unicast { via_ingress: true },
            3 => SourceRoute::Address,
            4 => SourceRoute::Local,
            5 => SourceRoute::LocalOnIngress,
            6 => SourceRoute::Reject,
            _ => SourceRoute::Kernel,
        }
    }
}

/// How a source fares in `fib_validate_source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceCheck {
    Valid,
    /// Dropped as a martian, for this reason.
    Invalid(Reason),
    /// Only the kernel can tell (its own route kinds).
    Kernel,
}

/// `fib_validate_source` for a packet to be forwarded, given the ingress
/// port's sysctls, whether it would leave by its ingress interface
/// (`hairpin`), and its source's reverse route.
///
/// Without `rp_filter` (and unless it goes back out where it came from with
/// `send_redirects` on) the kernel only refuses a source that is one of its
/// addresses, and with `accept_local` not even that. Otherwise the full
/// check: the source's route must be unicast (or local with
/// `accept_local`); strict mode wants it through the ingress interface (a
/// local route: on it), loose mode just wants one.
///
/// Lazy, as the kernel is: `is_address` (a hash of the router's addresses)
/// is asked only without `rp_filter`, `source` (a route lookup) only with.
#[inline(always)]
pub fn fib_validate_source(
    port: &IngressPort,
    hairpin: bool,
    is_address: impl FnOnce() -> bool,
    source: impl FnOnce() -> SourceRoute,
) -> SourceCheck {
    let rpf = port.rp_filter;
    let accept_local = port.has(IngressPort::ACCEPT_LOCAL);
    if rpf == 0 && !(hairpin && port.has(IngressPort::SEND_REDIRECTS)) {
        return if !accept_local && is_address() { SourceCheck::Invalid(Reason::SourceLocal) } else { SourceCheck::Valid };
    }
    match source() {
        SourceRoute::None | SourceRoute::Reject if rpf != 0 => SourceCheck::Invalid(Reason::SourceReversePath),
        SourceRoute::None | SourceRoute::Reject => SourceCheck::Valid,
        SourceRoute::Kernel => SourceCheck::Kernel,
        SourceRoute::Address | SourceRoute::Local | SourceRoute::LocalOnIngress if !accept_local => {
            SourceCheck::Invalid(Reason::SourceLocal)
        }
        // Local with accept_local, strict: valid on the ingress interface
        // (`fib_info_nh_uses_dev`); else `e_rpf`, which the kernel says
        // (a local entry whose device is unknown here is its to match too).
        SourceRoute::Address | SourceRoute::Local if rpf == 1 => SourceCheck::Kernel,
        SourceRoute::Address | SourceRoute::Local | SourceRoute::LocalOnIngress => SourceCheck::Valid,
        SourceRoute::Unicast { via_ingress: false } if rpf == 1 => SourceCheck::Invalid(Reason::SourceReversePath),
        SourceRoute::Unicast { .. } => SourceCheck::Valid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(rp_filter: u8, flags: u8) -> IngressPort {
        IngressPort { mac: [2, 0, 0, 0, 0, 1], lower_mac: [2, 0, 0, 0, 0, 1], rp_filter, flags, _pad: 0 }
    }

    #[test]
    fn ipv4_martians_in_the_kernels_order() {
        let (host, far) = ([10, 1, 0, 2], [10, 2, 0, 2]);
        assert_eq!(ipv4_martian(host, far, false), None);
        assert_eq!(ipv4_martian([224, 0, 0, 1], far, false), Some(Reason::SourceGroup));
        assert_eq!(ipv4_martian([255; 4], far, false), Some(Reason::SourceGroup));
        assert_eq!(ipv4_martian([0; 4], far, false), Some(Reason::SourceZero));
        assert_eq!(ipv4_martian([0, 1, 2, 3], far, false), None, "the rest of 0/8 is unicast since Linux 5.3");
        assert_eq!(ipv4_martian([0; 4], [0; 4], false), None, "0 to 0 is the stack's broadcast input");
        assert_eq!(ipv4_martian(host, [0; 4], false), Some(Reason::DestinationZero));
        assert_eq!(ipv4_martian(host, [0, 0, 0, 1], false), None);
        // A zero source beats a loopback destination.
        assert_eq!(ipv4_martian([0; 4], [127, 0, 0, 1], false), Some(Reason::SourceZero));
        assert_eq!(ipv4_martian(host, [127, 0, 0, 1], false), Some(Reason::DestinationLoopback));
        assert_eq!(ipv4_martian([127, 0, 0, 1], [127, 0, 0, 1], false), Some(Reason::DestinationLoopback));
        assert_eq!(ipv4_martian([127, 0, 0, 1], far, false), Some(Reason::SourceLoopback));
        assert_eq!(ipv4_martian([127, 0, 0, 1], far, true), None, "route_localnet");
        assert_eq!(ipv4_martian(host, [127, 0, 0, 1], true), None);
        assert_eq!(ipv4_martian([240, 0, 0, 1], [250, 0, 0, 1], false), None, "class E is routable to Linux");
    }

    #[test]
    fn ipv6_martians() {
        let mut lo = [0u8; 16];
        lo[15] = 1;
        let host = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(ipv6_martian(&host, &host), None);
        assert_eq!(ipv6_martian(&host, &lo), Some(Reason::DestinationLoopback));
        assert_eq!(ipv6_martian(&lo, &host), Some(Reason::SourceLoopback));
        let mut mc = host;
        mc[0] = 0xff;
        assert_eq!(ipv6_martian(&mc, &host), Some(Reason::SourceGroup));
        assert!(ipv6_is_unspecified(&[0; 16]) && !ipv6_is_unspecified(&lo) && !ipv6_is_loopback(&[0; 16]));
        assert!(ipv6_is_link_local(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]) && !ipv6_is_link_local(&host));
    }

    /// The check with the source's route `s` (and `s` the only truth about addresses).
    #[test]
    fn source_routes_survive_their_word() {
        use SourceRoute as S;
        let all = [
            S::None,
            S::Unicast { via_ingress: false },
            S::Unicast { via_ingress: true },
            S::Address,
            S::Local,
            S::LocalOnIngress,
            S::Reject,
            S::Kernel,
        ];
        for s in all {
            assert_eq!(S::from_u32(s.to_u32()), s);
        }
        assert_eq!(S::from_u32(99), S::Kernel, "an unknown word is the kernel's");
    }

    fn fib_check(port: &IngressPort, hairpin: bool, s: SourceRoute) -> SourceCheck {
        fib_validate_source(port, hairpin, || s == SourceRoute::Address, || s)
    }

    #[test]
    fn source_validation_as_fib_check() {
        use SourceCheck::*;
        use SourceRoute as S;
        let off = port(0, 0);
        assert_eq!(fib_check(&off, false, S::None), Valid);
        assert_eq!(fib_check(&off, false, S::Reject), Valid, "no full check without rp_filter");
        assert_eq!(fib_check(&off, false, S::Local), Valid, "only interface addresses, without rp_filter");
        assert_eq!(fib_check(&off, false, S::Address), Invalid(Reason::SourceLocal));
        assert_eq!(fib_check(&port(0, IngressPort::ACCEPT_LOCAL), false, S::Address), Valid);
        // Back out of the ingress interface with send_redirects: the full check.
        let redirects = port(0, IngressPort::SEND_REDIRECTS);
        assert_eq!(fib_check(&redirects, false, S::Reject), Valid);
        assert_eq!(fib_check(&redirects, true, S::Reject), Valid, "fib_lookup fails: the last resort");
        assert_eq!(fib_check(&redirects, true, S::Address), Invalid(Reason::SourceLocal));
        assert_eq!(fib_check(&redirects, true, S::Local), Invalid(Reason::SourceLocal));
        assert_eq!(fib_check(&redirects, true, S::None), Valid);
        assert_eq!(fib_check(&redirects, true, S::Unicast { via_ingress: false }), Valid);

        let strict = port(1, 0);
        assert_eq!(fib_check(&strict, false, S::Unicast { via_ingress: true }), Valid);
        assert_eq!(fib_check(&strict, false, S::Unicast { via_ingress: false }), Invalid(Reason::SourceReversePath));
        assert_eq!(fib_check(&strict, false, S::None), Invalid(Reason::SourceReversePath));
        assert_eq!(fib_check(&strict, false, S::Address), Invalid(Reason::SourceLocal));
        assert_eq!(fib_check(&strict, false, S::Kernel), Kernel);
        let strict_accept_local = port(1, IngressPort::ACCEPT_LOCAL);
        assert_eq!(fib_check(&strict_accept_local, false, S::LocalOnIngress), Valid, "the ingress interface's own address");
        assert_eq!(fib_check(&strict, false, S::LocalOnIngress), Invalid(Reason::SourceLocal));
        assert_eq!(fib_check(&strict_accept_local, false, S::Address), Kernel, "another interface's: e_rpf, the kernel's to say");

        let loose = port(2, IngressPort::ACCEPT_LOCAL);
        assert_eq!(fib_check(&loose, false, S::Unicast { via_ingress: false }), Valid);
        assert_eq!(fib_check(&loose, false, S::None), Invalid(Reason::SourceReversePath));
        assert_eq!(fib_check(&loose, false, S::Reject), Invalid(Reason::SourceReversePath));
        assert_eq!(fib_check(&loose, false, S::Local), Valid);
        assert_eq!(fib_check(&loose, false, S::Address), Valid);
    }

    #[test]
    fn a_vlan_port_takes_its_own_mac_and_its_lower_devices() {
        let p = IngressPort { lower_mac: [2, 0, 0, 0, 0, 9], ..port(0, 0) };
        assert!(p.is_for_us(&[2, 0, 0, 0, 0, 1]) && p.is_for_us(&[2, 0, 0, 0, 0, 9]) && !p.is_for_us(&[2, 0, 0, 0, 0, 8]));
    }
}
