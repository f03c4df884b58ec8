//! Reading the per-CPU verdict counters.

use crate::{
    dataplane::{dir24::Dir24Stats, map_writer::open_pinned, trie_writer::TrieWriteStats},
    fib::netlink_mirror::NetlinkStats,
    rib::RibSummary,
    slow_path::{neighbour_queue::QueueStats, pmtu::PmtuStats, SlowPathSnapshot},
};
use anyhow::Result;
use aya::maps::{MapData, PerCpuArray};
use common::{maps, slow_path::Unserved, Counter, Reason};
use std::path::Path;

/// Everything the agent counts, in one typed shape: the control socket's
/// `Stats` answer is this serialized, and Prometheus and `show stats` render
/// it field by field (a renamed field fails to compile, never reads as 0).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentStats {
    #[serde(flatten)]
    pub rib: RibSummary,
    pub dir24: Dir24Stats,
    /// The queued trie writes: batched, retried, refused, owed.
    #[serde(default)]
    pub trie_writes: TrieWriteStats,
    pub netlink: NetlinkStats,
    pub packets: Vec<ReasonCount>,
    pub slow_path: SlowPathSnapshot,
    /// Exceptions for the agent that the kernel got instead, by cause
    /// (`common::slow_path::Unserved`), from the fast path's counters.
    #[serde(default)]
    pub unserved: Vec<ReasonCount>,
    pub pmtu: PmtuStats,
    pub neighbour_queue: QueueStats,
    /// Optional parts that failed to start, with why: the agent runs on.
    pub degraded: Vec<String>,
    /// `--source fpm`: the FPM connection and what came over it.
    #[serde(default)]
    pub fpm: Option<crate::fib::fpm::FpmStats>,
    /// Times the tables' B-trees were rebuilt with full nodes after a bulk
    /// load (see `daemon::compaction`).
    #[serde(default)]
    pub compactions: u64,
}

impl AgentStats {
    /// The packets counted under `reason`.
    pub fn packets(&self, reason: Reason) -> u64 {
        self.packets.iter().find(|c| c.reason == reason.name()).map_or(0, |c| c.packets)
    }
}

/// Packets and bytes per reason, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

pub fn read_counters(counters: &PerCpuArray<MapData, Counter>) -> Result<Vec<ReasonCount>> {
    read_named(counters, Reason::ALL.iter().map(|r| (*r as u32, r.name())))
}

/// The `UNSERVED` counters, by cause.
pub fn read_unserved(counters: &PerCpuArray<MapData, Counter>) -> Result<Vec<ReasonCount>> {
    read_named(counters, Unserved::ALL.iter().map(|u| (*u as u32, u.name())))
}

/// Each named slot of a per-CPU counter array, summed over CPUs.
fn read_named<'a>(counters: &PerCpuArray<MapData, Counter>, slots: impl Iterator<Item = (u32, &'a str)>) -> Result<Vec<ReasonCount>> {
    slots
        .map(|(index, name)| {
            let per_cpu = counters.get(&index, 0)?;
            Ok(ReasonCount {
                reason: name.to_string(),
                packets: per_cpu.iter().map(|c| c.packets).sum(),
                bytes: per_cpu.iter().map(|c| c.bytes).sum(),
            })
        })
        .collect()
}

pub fn read_pinned_counters(pin_dir: &Path) -> Result<Vec<ReasonCount>> {
    read_counters(&open_pinned(pin_dir, maps::COUNTERS)?)
}

pub fn read_pinned_unserved(pin_dir: &Path) -> Result<Vec<ReasonCount>> {
    read_unserved(&open_pinned(pin_dir, maps::UNSERVED)?)
}
