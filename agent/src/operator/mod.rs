//! What operators see and say: the control socket the CLI talks to, the
//! `show` commands (which read the pinned maps, agent or not), the
//! Prometheus endpoint, and the per-reason packet counters.
//!
//! May call: the RIB's read-only views and the pinned maps; every change an
//! operator asks for goes to the daemon's loop, the one writer.

pub mod control;
pub mod prometheus;
pub mod route_metrics;
pub mod show;
pub mod show_rules;
pub mod stats;
