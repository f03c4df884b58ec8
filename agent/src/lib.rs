//! cowroute: an XDP routing data plane with copy-on-write route metrics.
//!
//! The modules follow the architecture of shared/DESIGN.md:
//! - [`dataplane`]: loads the XDP program, pins its maps, attaches it;
//! - [`map_writer`]: the one owner of every write to the maps;
//! - [`metrics_store`]: interned, refcounted, read-only metric sets;
//! - [`rib`]: the agent's route table and how it maps onto entries and next hops;
//! - [`netlink_mirror`]: links, addresses and neighbours from the kernel;
//! - [`cow`]: copy-on-write of per-destination metrics (in [`rib`]);
//! - [`control`]: the control socket the CLI talks to;
//! - [`config`]: the TOML route list (`--source config`);
//! - [`stats`] and [`show`]: reading the pinned maps for operators.

pub mod bpffs;
pub mod config;
pub mod control;
pub mod cow;
#[cfg(test)]
mod cow_model_tests;
pub mod daemon;
pub mod dataplane;
pub mod dir24;
pub mod ecmp;
pub mod fib_mirror;
pub mod icmp;
pub mod icmp_limit;
pub mod map_writer;
pub mod metrics_store;
pub mod neighbour_queue;
pub mod netlink_mirror;
pub mod netns;
pub mod pmtu;
pub mod prometheus;
pub mod reload;
pub mod rib;
pub mod show;
pub mod slots;
pub mod slow_path;
pub mod stats;

/// The XDP program, built by build.rs with BTF.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cowroute"));

/// Where the agent pins its maps unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/cowroute";
