//! Where routes come from, and the kernel state they need.
//!
//! Owns: the netlink subscription and dumps ([`netlink_mirror`]: links,
//! addresses, neighbours, routes, nexthop objects in [`nexthop_msg`];
//! route messages in the RIB's terms in [`route_msg`], those of the common
//! shape read straight off the wire by [`route_wire`];
//! [`netlink_codec`]: what cannot be decoded is a resync, never a silent
//! loss), the choice among the kernel's candidate routes ([`kernel_fib`], one prefix's in `candidates`),
//! the kernel's nexthop objects and what it does to them unannounced
//! ([`kernel_nexthops`]), zebra's FPM stream ([`fpm`]), the interfaces' source-validation sysctls
//! ([`sysctl`]), the kernel's `ip rule` list ([`rules`]), and the seam every route source plugs into
//! ([`source`]). May call: the RIB's route types only; it never
//! writes a map.

mod candidates;
pub mod fpm;
pub mod kernel_fib;
pub mod kernel_nexthops;
pub mod netlink_codec;
pub mod netlink_mirror;
pub mod nexthop_msg;
pub mod route_msg;
pub mod route_wire;
pub mod rules;
pub mod source;
pub mod sysctl;
