//! Next hops: the values of the `NEXTHOPS` slots (found by id through `NEXTHOPS_INDEX`).

/// Where a route's packets go: egress device, MACs, optional 802.1Q tag.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// Egress device (the parent device when `vlan` is set); `EGRESS_PORTS` key.
    pub ifindex: u32,
    /// The egress device's MTU: the limit when the route has no `RTAX_MTU`.
    pub mtu: u32,
    /// The neighbour's MAC (valid when `flags & NextHop::RESOLVED`).
    pub dmac: [u8; 6],
    /// The egress device's MAC.
    pub smac: [u8; 6],
    /// 802.1Q VLAN id to push on egress, 0 for untagged.
    pub vlan: u16,
    pub flags: u16,
}

const _: () = assert!(core::mem::size_of::<NextHop>() == 24);

impl NextHop {
    /// The neighbour is known: `dmac` may be used.
    pub const RESOLVED: u16 = 0x1;
    /// The egress link is up.
    pub const LINK_UP: u16 = 0x2;
    /// What the fast path needs before it forwards through this next hop.
    pub const USABLE: u16 = Self::RESOLVED | Self::LINK_UP;

    pub const fn is_usable(&self) -> bool {
        self.flags & Self::USABLE == Self::USABLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_needs_neighbour_and_link() {
        let mut nh = NextHop::default();
        assert!(!nh.is_usable());
        nh.flags = NextHop::RESOLVED;
        assert!(!nh.is_usable());
        nh.flags = NextHop::RESOLVED | NextHop::LINK_UP;
        assert!(nh.is_usable());
    }
}

/// One element of `NEXTHOPS_INDEX` or `NH_GROUPS_INDEX`: the words of
/// [`crate::capacity::INDEX_WORDS`] consecutive ids, each 0 (none) or 1 +
/// the id's slot. A struct, not a bare array, so that bpftool names the
/// field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexSlots {
    pub slots: [u32; crate::capacity::INDEX_WORDS as usize],
}

/// An ECMP group (`RTA_MULTIPATH`): the values of `NH_GROUPS`. A flow's hash
/// picks one of [`NextHopGroup::BUCKETS`] buckets, and each bucket names a
/// leg (a next hop id); a leg's weight is the number of buckets it holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NextHopGroup {
    pub buckets: [u32; NextHopGroup::BUCKETS],
}

const _: () = assert!(NextHopGroup::BUCKETS.is_power_of_two());

impl NextHopGroup {
    /// Enough for the kernel's weights (1..=256) in proportion to a few
    /// percent, small enough for one cache line pair per lookup's bucket.
    pub const BUCKETS: usize = 64;

    pub const EMPTY: NextHopGroup = NextHopGroup { buckets: [0; Self::BUCKETS] };

    /// The leg a flow with `hash` takes.
    #[inline(always)]
    pub fn leg(&self, hash: u32) -> u32 {
        self.buckets[hash as usize & (Self::BUCKETS - 1)]
    }
}

impl Default for NextHopGroup {
    fn default() -> Self {
        Self::EMPTY
    }
}
