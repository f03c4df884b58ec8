//! Route table entries: the values of the `ROUTES_V4` / `ROUTES_V6` LPM tries.

use crate::MetricsRef;

/// What the fast path does with a matching packet, by route type (`RTN_*`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Forward to the next hop.
    Unicast = 0,
    /// Addressed to this router (local, broadcast): the kernel stack's.
    Local = 1,
    /// Silently discarded.
    Blackhole = 2,
    /// The kernel answers with ICMP unreachable.
    Unreachable = 3,
    /// The kernel answers with ICMP administratively prohibited.
    Prohibit = 4,
    /// A route only the kernel can carry (an encap, a TOS key, a source
    /// prefix, throw, nat, ...): its packets go to the stack, never
    /// forwarded without what the route says.
    Kernel = 5,
}

impl RouteKind {
    pub const fn from_u8(v: u8) -> Option<RouteKind> {
        Some(match v {
            0 => RouteKind::Unicast,
            1 => RouteKind::Local,
            2 => RouteKind::Blackhole,
            3 => RouteKind::Unreachable,
            4 => RouteKind::Prohibit,
            5 => RouteKind::Kernel,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            RouteKind::Unicast => "unicast",
            RouteKind::Local => "local",
            RouteKind::Blackhole => "blackhole",
            RouteKind::Unreachable => "unreachable",
            RouteKind::Prohibit => "prohibit",
            RouteKind::Kernel => "kernel",
        }
    }
}

/// A route: 16 bytes, read by every packet, written only by the agent (by
/// replacing the whole element, never in place).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteEntry {
    /// A next hop id (`NEXTHOPS_INDEX`), or with `MULTIPATH` a group id
    /// (`NH_GROUPS_INDEX`): stable while the value behind it is republished.
    pub nexthop: u32,
    /// Where this route's metrics are: RO (shared) or RW (private).
    pub metrics: MetricsRef,
    /// A [`RouteKind`].
    pub kind: u8,
    /// `RouteEntry::HOST`, `RouteEntry::CLONE`, `RouteEntry::MULTIPATH`, ...
    pub flags: u8,
    /// The prefix length of the kernel route it stands for (a host entry's
    /// covering route's): what `suppress_prefixlength` compares.
    pub prefix_len: u8,
    pub _pad: u8,
    /// The agent's id of the route, for `show` and bookkeeping.
    pub id: u32,
}

const _: () = assert!(core::mem::size_of::<RouteEntry>() == 16);

impl RouteEntry {
    /// A per-destination entry (/32, /128).
    pub const HOST: u8 = 0x1;
    /// A host entry the agent cloned from a covering prefix.
    pub const CLONE: u8 = 0x2;
    /// `nexthop` names an ECMP group in `NH_GROUPS`.
    pub const MULTIPATH: u8 = 0x4;
    /// A local entry that is one of the router's interface addresses (what
    /// `fib_validate_source` refuses as a source), not a broadcast or
    /// other local route.
    pub const ADDRESS: u8 = 0x8;
    /// From the local table (an address, a broadcast): the rule before all
    /// others (`0: from all lookup local`) answers with it.
    pub const LOCAL_TABLE: u8 = 0x10;

    pub const fn new(kind: RouteKind, nexthop: u32, metrics: MetricsRef, id: u32) -> RouteEntry {
        RouteEntry { nexthop, metrics, kind: kind as u8, flags: 0, prefix_len: 0, _pad: 0, id }
    }

    pub const fn kind(&self) -> Option<RouteKind> {
        RouteKind::from_u8(self.kind)
    }

    pub const fn is_multipath(&self) -> bool {
        self.flags & Self::MULTIPATH != 0
    }
}

/// One `ROUTES_V4_DIR24` element: a /16's 256 /24 blocks, each word 0 (the
/// trie answers) or 1 + a `ROUTES_V4_DIR24_ENTRIES` slot. A struct, not a
/// bare array, so that bpftool names the field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dir24Blocks {
    pub blocks: [u32; 256],
}

const _: () = assert!(core::mem::size_of::<Dir24Blocks>() == 1024);

/// A `ROUTES_V6_INDEX` bucket's value: 0 (the trie answers) or 1 + a
/// `ROUTES_V6_INDEX_ENTRIES` slot, maybe with the "search on" flag. A
/// struct so that bpftool names it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V6IndexWord {
    pub word: u32,
}

/// A `LOCAL_V4` value: the key is one of the router's addresses (always 1;
/// the key's presence is what the program reads).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddress {
    pub local: u8,
}

/// The bits of an IPv4 prefix as the LPM trie's key data: network byte order.
pub type V4KeyData = [u8; 4];
/// The bits of an IPv6 prefix as the LPM trie's key data: network byte order.
pub type V6KeyData = [u8; 16];

/// The bits a table's id takes in front of a prefix in the tables' tries.
pub const TABLE_KEY_BITS: u32 = 32;

/// A `TABLE_ROUTES_V4` key's data: one LPM trie holds the routes of every
/// table rules look up (other than main), each prefix behind its table's
/// id, both in network byte order (the key's length: [`TABLE_KEY_BITS`] +
/// the prefix's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableV4KeyData {
    pub table: [u8; 4],
    pub addr: [u8; 4],
}

/// A `TABLE_ROUTES_V6` key's data, as [`TableV4KeyData`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableV6KeyData {
    pub table: [u8; 4],
    pub addr: [u8; 16],
}

/// Clears the host bits of `addr` beyond `prefix_len`, so that one prefix has
/// one key however it was written (`10.1.2.3/24` is `10.1.2.0/24`).
pub fn mask_prefix<const N: usize>(mut addr: [u8; N], prefix_len: u32) -> [u8; N] {
    for (i, byte) in addr.iter_mut().enumerate() {
        let bits = (prefix_len as i64 - (i as i64) * 8).clamp(0, 8) as u32;
        *byte &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_16_bytes_with_fields_in_place() {
        let e = RouteEntry::new(RouteKind::Blackhole, 3, MetricsRef::read_only(2), 99);
        let bytes: [u8; 16] = unsafe { core::mem::transmute(e) };
        assert_eq!(&bytes[0..4], &3u32.to_ne_bytes());
        assert_eq!(&bytes[4..8], &5u32.to_ne_bytes(), "RO slot 2 = (2 << 1) | 1");
        assert_eq!(bytes[8], RouteKind::Blackhole as u8);
        assert_eq!(&bytes[12..16], &99u32.to_ne_bytes());
        assert_eq!(e.kind(), Some(RouteKind::Blackhole));
    }

    #[test]
    fn route_kinds_round_trip() {
        for v in 0..=255u8 {
            if let Some(k) = RouteKind::from_u8(v) {
                assert_eq!(k as u8, v);
            } else {
                assert!(v > 4);
            }
        }
    }

    #[test]
    fn prefixes_are_masked() {
        assert_eq!(mask_prefix([10, 1, 2, 3], 24), [10, 1, 2, 0]);
        assert_eq!(mask_prefix([10, 1, 2, 3], 0), [0, 0, 0, 0]);
        assert_eq!(mask_prefix([10, 1, 2, 3], 32), [10, 1, 2, 3]);
        assert_eq!(mask_prefix([255, 255, 255, 255], 17), [255, 255, 128, 0]);
        let mut v6 = [0xffu8; 16];
        v6 = mask_prefix(v6, 65);
        assert_eq!(v6[7], 0xff);
        assert_eq!(v6[8], 0x80);
        assert_eq!(v6[9], 0);
    }
}
