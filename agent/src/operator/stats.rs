//! Reading the per-CPU verdict counters.

use crate::dataplane::map_writer::open_pinned;
use anyhow::Result;
use aya::maps::{MapData, PerCpuArray};
use common::{maps, Counter, Reason};
use std::path::Path;

/// Packets and bytes per reason, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReasonCount {
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

pub fn read_counters(counters: &PerCpuArray<MapData, Counter>) -> Result<Vec<ReasonCount>> {
    Reason::ALL
        .iter()
        .map(|r| {
            let per_cpu = counters.get(&(*r as u32), 0)?;
            Ok(ReasonCount {
                reason: r.name(),
                packets: per_cpu.iter().map(|c| c.packets).sum(),
                bytes: per_cpu.iter().map(|c| c.bytes).sum(),
            })
        })
        .collect()
}

pub fn read_pinned_counters(pin_dir: &Path) -> Result<Vec<ReasonCount>> {
    read_counters(&open_pinned(pin_dir, maps::COUNTERS)?)
}
