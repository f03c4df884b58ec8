//! cowroute: an XDP routing data plane with copy-on-write route metrics.
//!
//! One folder per concept (shared/DESIGN.md); a route change flows
//! fib -> rib -> dataplane, and nothing flows back up:
//! - [`fib`]: where routes come from: the kernel's links, addresses,
//!   neighbours and routes over netlink, and the route-source seam (kernel
//!   FIB, config file) that feeds the RIB;
//! - [`rib`]: the agent's routing table: routes, next hops and ECMP groups,
//!   interned metrics, copy-on-write of per-destination metrics, adoption;
//! - [`dataplane`]: the XDP program, its pinned maps, and the map writer,
//!   the one owner of every write the fast path reads (the publish rule);
//! - [`slow_path`]: AF_XDP exceptions: ICMP errors, path-MTU learning, frames
//!   waiting for a neighbour;
//! - [`operator`]: what operators talk to: the control socket, `show`,
//!   Prometheus, and the typed stats they all render;
//! - [`daemon`]: `cowroute run`: the event loop, config and reload.

pub mod daemon;
pub mod dataplane;
pub mod fib;
pub mod operator;
pub mod rib;
pub mod slow_path;

/// The XDP program, built by build.rs with BTF: the production object, with
/// the forwarding program and the pass program for the far ends of veths.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cowroute"));

/// The bench's XDP programs (`cargo xtask bench`), built beside the
/// production object from the same crate but never loaded by the agent.
/// Nothing in the `cowroute` binary refers to it, so the linker leaves it
/// out of the binary (tests/tests/bench_object.rs checks both).
#[doc(hidden)]
pub mod bench_object {
    pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cowroute-bench"));
    /// Drops everything: a benchmark sink's veth end.
    pub const PROG_DROP: &str = "cowroute_drop";
    /// A minimal forwarder on the kernel's FIB: the bench's yardstick.
    pub const PROG_REFERENCE: &str = "cowroute_reference";
    /// The live-frames traffic generator (never attached).
    pub const PROG_TRAFFICGEN: &str = "cowroute_trafficgen";
    /// Redirect-only, no lookup or rewrite: the lab's ceiling.
    pub const PROG_REDIRECT: &str = "cowroute_redirect";
    /// Every program of the bench's object.
    pub const PROGRAMS: [&str; 4] = [PROG_DROP, PROG_REFERENCE, PROG_TRAFFICGEN, PROG_REDIRECT];
}

/// Where the agent pins its maps unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/cowroute";

/// An error and its causes, `outer: inner: ...`, as anyhow's `{:#}` prints
/// them: for typed errors logged where they are handled.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
