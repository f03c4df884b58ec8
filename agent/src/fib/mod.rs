//! Where routes come from, and the kernel state they need.
//!
//! Owns: the netlink subscription and dumps ([`netlink_mirror`]: links,
//! addresses, neighbours, routes; [`netlink_codec`]: what cannot be decoded
//! is a resync, never a silent loss), the choice among the kernel's candidate
//! routes ([`kernel_fib`]), and the seam every route source plugs into
//! ([`source`]). May call: the RIB's route types only; it never
//! writes a map.

pub mod kernel_fib;
pub mod netlink_codec;
pub mod netlink_mirror;
pub mod source;
