//! Loading the XDP program, pinning its maps, attaching it to interfaces.

use crate::{bpffs, map_writer::MapWriter, EBPF_OBJECT};
use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    programs::{links::FdLink, ProgramError, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use common::maps;
use std::path::{Path, PathBuf};

/// The forwarding program, and the programs for the far ends of lab veths.
pub const PROG_FORWARD: &str = "cowroute";
pub const PROG_PASS: &str = "cowroute_pass";
pub const PROG_DROP: &str = "cowroute_drop";

/// How to attach: the operator's choice, or native falling back to generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeChoice {
    /// Native (driver) mode, falling back to generic with a log line.
    Auto,
    Native,
    Generic,
}

pub struct LoadOptions {
    /// Size of the private metrics pool (`METRICS_RW` slots).
    pub metrics_rw_slots: u32,
    /// Keep the program's debug log lines (aya-log); off unless asked.
    pub bpf_debug_log: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { metrics_rw_slots: common::capacity::METRICS_RW, bpf_debug_log: false }
    }
}

pub struct DataPlane {
    pub ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
}

/// Formats a program load failure with the verifier's log, which is the
/// only useful part of a rejection.
fn load_error(name: &str, e: ProgramError) -> anyhow::Error {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            anyhow!("the verifier rejected XDP program {name}: {io_error}\nverifier log:\n{verifier_log}")
        }
        other => anyhow!("loading XDP program {name}: {other}"),
    }
}

impl DataPlane {
    /// Loads the object: creates the maps and verifies both programs.
    pub fn load(opts: &LoadOptions) -> Result<DataPlane> {
        let level: u8 = if opts.bpf_debug_log { 0xff } else { 3 /* warn and above */ };
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::METRICS_RW, opts.metrics_rw_slots)
            .override_global("AYA_LOG_LEVEL", &level, false)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object (maps could not be created)")?;
        for name in [PROG_FORWARD, PROG_PASS, PROG_DROP] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()
                .with_context(|| format!("program {name} is not XDP"))?;
            prog.load().map_err(|e| load_error(name, e))?;
        }
        Ok(DataPlane { ebpf, pin_dir: None })
    }

    /// Pins every map under `dir` (replacing stale pins of an earlier run).
    pub fn pin_maps(&mut self, dir: &Path) -> Result<()> {
        bpffs::ensure_pin_dir(dir)?;
        for name in maps::ALL {
            let path = dir.join(name);
            if path.exists() {
                tracing::info!(path = %path.display(), "replacing a stale pin");
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
            self.ebpf
                .map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the object"))?
                .pin(&path)
                .with_context(|| format!("pinning {name} at {}", path.display()))?;
        }
        self.pin_dir = Some(dir.to_owned());
        Ok(())
    }

    /// Takes the writable maps; call after pinning.
    pub fn map_writer(&mut self) -> Result<MapWriter> {
        MapWriter::from_ebpf(&mut self.ebpf)
    }

    fn xdp(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?)
    }

    /// Attaches the forwarding program to `iface`; returns the mode it got.
    /// The link lives as long as this `DataPlane`.
    pub fn attach(&mut self, iface: &str, mode: ModeChoice) -> Result<XdpMode> {
        attach_program(self.xdp(PROG_FORWARD)?, iface, mode).map(|(_, m)| m)
    }

    /// Attaches `program` (PROG_PASS or PROG_DROP) to `iface` in native mode
    /// and pins the link at `pin`, so that it stays after this process exits.
    pub fn attach_peer_pinned(&mut self, program: &str, iface: &str, pin: &Path) -> Result<()> {
        let prog = self.xdp(program)?;
        let (id, _) = attach_program(prog, iface, ModeChoice::Native)?;
        let link = prog.take_link(id)?;
        let fd_link: FdLink = link.try_into().context("XDP link is not a bpf_link")?;
        if let Some(parent) = pin.parent() {
            bpffs::ensure_pin_dir(parent)?;
        }
        fd_link.pin(pin).with_context(|| format!("pinning XDP link at {}", pin.display()))?;
        Ok(())
    }

    /// Removes the pins (the maps go once no program or link holds them).
    pub fn unpin_maps(&mut self) {
        let Some(dir) = self.pin_dir.take() else { return };
        for name in maps::ALL {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

impl Drop for DataPlane {
    /// An orderly exit, error or signal, leaves no pins behind.
    fn drop(&mut self) {
        self.unpin_maps();
    }
}

fn if_index(iface: &str) -> Result<u32> {
    let c = std::ffi::CString::new(iface).with_context(|| format!("bad interface name {iface:?}"))?;
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => bail!("unknown interface {iface:?}"),
        i => Ok(i),
    }
}

fn attach_program(prog: &mut Xdp, iface: &str, mode: ModeChoice) -> Result<(aya::programs::xdp::XdpLinkId, XdpMode)> {
    let ifindex = if_index(iface)?;
    let try_mode = |prog: &mut Xdp, m: XdpMode| {
        prog.attach_to_if_index(ifindex, m).map(|id| (id, m))
    };
    match mode {
        ModeChoice::Native => try_mode(prog, XdpMode::Driver)
            .with_context(|| format!("attaching XDP to {iface} in native mode")),
        ModeChoice::Generic => try_mode(prog, XdpMode::Skb)
            .with_context(|| format!("attaching XDP to {iface} in generic mode")),
        ModeChoice::Auto => match try_mode(prog, XdpMode::Driver) {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!(iface, error = %e, "native XDP failed; falling back to generic mode");
                try_mode(prog, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP to {iface} in generic mode"))
            }
        },
    }
}
