//! Helpers shared by `cargo xtask` and the integration tests: commands, the
//! veth lab, and traffic sent and received inside its namespaces.
//!
//! xtask must build before the eBPF toolchain is installed, so nothing here
//! depends on the agent crate.

pub mod agent_proc;
pub mod frr;
pub mod lab;
pub mod sh;
pub mod traffic;

/// The sections `cargo xtask bench --only` runs alone (the bench binary
/// refuses any other name).
pub const BENCH_SECTIONS: [&str; 8] = ["cost", "lab", "full-table", "fib", "fpm", "nexthops", "conformance", "policy"];
