//! Loading the XDP program, pinning its maps, attaching it to interfaces.
//!
//! The data plane can outlive the agent: the maps and the XDP links are
//! pinned under the pin directory, so a restarted agent (after a crash,
//! SIGKILL, or `--keep-on-exit`) adopts them, reprograms the maps in place
//! and swaps its program into the links atomically (`bpf_link_update`):
//! forwarding never stops. `cowroute detach` removes it all.

pub mod bpffs;
pub mod dir24;
pub mod local_addrs;
pub mod map_error;
pub mod map_sink;
pub mod map_writer;
mod mapped;
pub mod pin_lock;
pub mod policy_maps;
pub mod published;
pub mod shared_entries;
pub mod slots;
pub mod table_routes;
pub mod trie_batch;
pub mod trie_queue;
pub mod trie_writer;
pub mod v6index;

use crate::{
    dataplane::{
        map_error::{access, MapError},
        map_writer::MapWriter,
    },
    EBPF_OBJECT,
};
use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::MapInfo,
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        ProgramError, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use common::abi::AbiStamp;
use common::maps;
use std::path::{Path, PathBuf};

/// The forwarding program, and the program for the far ends of veths.
/// The production object holds these two only (the bench's programs are in
/// [`crate::bench_object`]).
pub const PROG_FORWARD: &str = "cowroute";
pub const PROG_PASS: &str = "cowroute_pass";
pub const PROGRAMS: [&str; 2] = [PROG_FORWARD, PROG_PASS];

/// How to attach: the operator's choice, or native falling back to generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeChoice {
    /// Native (driver) mode, falling back to generic with a log line.
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The loaded program and its maps. Dropping it leaves whatever is pinned
/// in place, forwarding: a crash, a panic or an error exit never stops the
/// data plane, and the next agent adopts it. Only [`DataPlane::remove_pins`]
/// (SIGTERM without `--keep-on-exit`) or `cowroute detach` ends it.
pub struct DataPlane {
    pub ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
}

/// How the forwarding program got onto an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// A new link in this mode.
    New(XdpMode),
    /// An earlier agent's pinned link, its program replaced in place.
    Adopted,
}

/// Where the link of the forwarding program on `ifindex` is pinned. By
/// ifindex: a device deleted and created again is a new attachment.
fn link_pin(dir: &Path, ifindex: u32) -> PathBuf {
    dir.join(format!("link-{ifindex}"))
}

fn is_link_pin(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("link-"))
}

/// Checks the ABI stamp of the data plane pinned under `dir`: an agent
/// adopts only maps made by a build of the same ABI (see `common::abi`).
fn check_pinned_stamp(dir: &Path) -> Result<(), MapError> {
    let path = dir.join(maps::ABI_STAMP);
    let detach = format!(
        "run `cowroute --pin-dir {} detach` to remove the old data plane first (forwarding stops until this agent attaches)",
        dir.display()
    );
    let abi = |detail: String| MapError::Abi { dir: dir.to_owned(), detail };
    let pinned = match aya::maps::MapData::from_pin(&path) {
        Ok(data) => {
            let array = access(aya::maps::Array::<_, AbiStamp>::try_from(aya::maps::Map::Array(data)), maps::ABI_STAMP, || {
                format!("pinned map {} has an unexpected type", path.display())
            })?;
            access(array.get(&0, 0), maps::ABI_STAMP, || format!("reading {}", path.display()))?
        }
        Err(_) => {
            return Err(abi(format!(
                "the data plane pinned under {} has no ABI stamp (an earlier cowroute made it): {detach}",
                dir.display()
            )))
        }
    };
    if pinned != common::abi::STAMP {
        return Err(abi(format!(
            "the data plane pinned under {} was made by a cowroute of another ABI (version {}, layout {:#x}; this one is version {}, layout {:#x}): {detach}",
            dir.display(),
            pinned.version,
            pinned.layout,
            common::abi::STAMP.version,
            common::abi::STAMP.layout
        )));
    }
    Ok(())
}

/// Checks that every map pinned under `dir` has the layout this program's
/// object defines (key and value sizes, capacity, flags): a program built
/// with other structures must not read an earlier one's maps.
fn check_pinned_layout(dir: &Path, opts: &LoadOptions) -> Result<(), MapError> {
    let obj = aya_obj::Object::parse(EBPF_OBJECT)
        .map_err(|e| MapError::Layout { path: "cowroute.bpf.o".into(), detail: format!("parsing the eBPF object: {e}") })?;
    for name in maps::ALL {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = access(MapInfo::from_pin(&path), name, || format!("reading pinned map {}", path.display()))?;
        let def = obj.maps.get(name).ok_or_else(|| MapError::Missing { map: name.to_string(), detail: "" })?;
        let max = if [maps::METRICS_RW, maps::PRIVATE_META].contains(&name) { opts.metrics_rw_slots } else { def.max_entries() };
        // The kernel makes a DEVMAP read-only to programs by itself.
        let kernel_flags = if name == maps::EGRESS_PORTS { aya_obj::generated::BPF_F_RDONLY_PROG } else { 0 };
        let want = (def.key_size(), def.value_size(), max, def.map_flags() | kernel_flags);
        let have = (info.key_size(), info.value_size(), info.max_entries(), info.map_flags() | kernel_flags);
        if want != have {
            let hint = if name == maps::METRICS_RW && want.0 == have.0 && want.1 == have.1 {
                format!("start with --metrics-rw-slots {} to adopt it, or ", have.2)
            } else {
                String::new()
            };
            let detail = format!(
                "{} was pinned by a cowroute with another map layout (key {} B, value {} B, {} entries, flags {:#x}; this one needs {} B, {} B, {}, {:#x}): {hint}run `cowroute --pin-dir {} detach` to remove the old data plane first (forwarding stops until this agent attaches)",
                path.display(), have.0, have.1, have.2, have.3, want.0, want.1, want.2, want.3, dir.display()
            );
            return Err(MapError::Layout { path, detail });
        }
    }
    Ok(())
}

/// Removes the data plane pinned under `dir`: its links (which detaches
/// the program, once no process holds them) and its maps. Returns what it
/// removed.
pub fn detach(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if is_link_pin(&path) || maps::ALL.iter().any(|m| path.file_name() == Some(std::ffi::OsStr::new(m))) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed.push(path);
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(removed)
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
    /// Loads the object: creates the maps (unpinned) and verifies the programs.
    pub fn load(opts: &LoadOptions) -> Result<DataPlane> {
        Self::load_with(&[], opts)
    }

    /// Loads the object with every map pinned under `dir`: maps pinned by an
    /// earlier agent are adopted, contents and all (after a layout check),
    /// the others are created and pinned. Returns whether any was adopted.
    pub fn load_pinned(opts: &LoadOptions, dir: &Path) -> Result<(DataPlane, bool)> {
        bpffs::ensure_pin_dir(dir)?;
        let adopted = maps::ALL.iter().any(|m| dir.join(m).exists());
        if adopted {
            check_pinned_stamp(dir)?;
            check_pinned_layout(dir, opts)?;
        }
        let pins: Vec<(&str, PathBuf)> = maps::ALL.iter().map(|m| (*m, dir.join(m))).collect();
        let mut dp = Self::load_with(&pins, opts)?;
        dp.pin_dir = Some(dir.to_owned());
        let stamp = dp.ebpf.map_mut(maps::ABI_STAMP).ok_or_else(|| anyhow!("map ABI_STAMP missing from the object"))?;
        aya::maps::Array::<_, AbiStamp>::try_from(stamp)?.set(0, common::abi::STAMP, 0).context("writing ABI_STAMP")?;
        Ok((dp, adopted))
    }

    /// Loads with the maps named in `pins` pinned at (or adopted from) their paths.
    fn load_with(pins: &[(&str, PathBuf)], opts: &LoadOptions) -> Result<DataPlane> {
        let level: u8 = if opts.bpf_debug_log {
            0xff
        } else {
            3 /* warn and above */
        };
        let mut loader = EbpfLoader::new();
        for (name, path) in pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .map_max_entries(maps::METRICS_RW, opts.metrics_rw_slots)
            .map_max_entries(maps::PRIVATE_META, opts.metrics_rw_slots)
            .override_global("AYA_LOG_LEVEL", &level, false)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object (maps could not be created)")?;
        for name in PROGRAMS {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()
                .with_context(|| format!("program {name} is not XDP"))?;
            prog.load().map_err(|e| load_error(name, e))?;
        }
        Ok(DataPlane { ebpf, pin_dir: None })
    }

    /// The explicit end of the data plane: links and pins removed, so the
    /// program detaches once this process closes it.
    pub fn remove_pins(mut self) -> Result<Vec<PathBuf>> {
        match self.pin_dir.take() {
            Some(dir) => detach(&dir),
            None => Ok(Vec::new()),
        }
    }

    /// Takes the writable maps; call after pinning.
    pub fn map_writer(&mut self) -> Result<MapWriter, MapError> {
        MapWriter::from_ebpf(&mut self.ebpf)
    }

    fn xdp(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?)
    }

    /// Attaches the forwarding program to `iface`. With a pin directory the
    /// link is pinned there, and an earlier agent's pinned link is adopted:
    /// its program is replaced atomically, so no frame misses the fast path.
    pub fn attach(&mut self, iface: &str, mode: ModeChoice) -> Result<Attached> {
        let Some(dir) = self.pin_dir.clone() else {
            return attach_program(self.xdp(PROG_FORWARD)?, iface, mode).map(|(_, m)| Attached::New(m));
        };
        let pin = link_pin(&dir, if_index(iface)?);
        let prog = self.xdp(PROG_FORWARD)?;
        if pin.exists() {
            let link = PinnedLink::from_pin(&pin).with_context(|| format!("opening pinned link {}", pin.display()))?;
            let link = XdpLink::try_from(FdLink::from(link)).context("pinned link is not an XDP link")?;
            prog.attach_to_link(link).with_context(|| format!("replacing the program of {} on {iface}", pin.display()))?;
            return Ok(Attached::Adopted);
        }
        let (id, m) = attach_program(prog, iface, mode)?;
        let fd_link: FdLink = prog.take_link(id)?.try_into().context("XDP link is not a bpf_link")?;
        fd_link.pin(&pin).with_context(|| format!("pinning XDP link at {}", pin.display()))?;
        Ok(Attached::New(m))
    }

    /// Unpins the links of interfaces other than `ifaces` (an earlier
    /// agent's, for interfaces no longer configured): they detach.
    pub fn detach_others(&mut self, ifaces: &[String]) -> Result<usize> {
        let Some(dir) = self.pin_dir.clone() else { return Ok(0) };
        let keep: Vec<PathBuf> = ifaces.iter().filter_map(|i| if_index(i).ok()).map(|x| link_pin(&dir, x)).collect();
        let mut n = 0;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if is_link_pin(&path) && !keep.contains(&path) {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Attaches the pass-only program to `iface` in native mode and pins
    /// the link at `pin`, so that it stays after this process exits.
    pub fn attach_peer_pinned(&mut self, iface: &str, pin: &Path) -> Result<()> {
        attach_pinned(self.xdp(PROG_PASS)?, PROG_PASS, iface, pin)
    }
}

/// Loads `prog` (named `name`) if it is not yet, attaches it to `iface` in
/// native mode and pins the link at `pin`: it stays after this process
/// exits, until the pin is removed. Also the bench's, for its own object.
pub fn attach_pinned(prog: &mut Xdp, name: &str, iface: &str, pin: &Path) -> Result<()> {
    if prog.fd().is_err() {
        prog.load().map_err(|e| load_error(name, e))?;
    }
    let (id, _) = attach_program(prog, iface, ModeChoice::Native)?;
    let link = prog.take_link(id)?;
    let fd_link: FdLink = link.try_into().context("XDP link is not a bpf_link")?;
    if let Some(parent) = pin.parent() {
        bpffs::ensure_pin_dir(parent)?;
    }
    fd_link.pin(pin).with_context(|| format!("pinning XDP link at {}", pin.display()))?;
    Ok(())
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
    let try_mode = |prog: &mut Xdp, m: XdpMode| prog.attach_to_if_index(ifindex, m).map(|id| (id, m));
    match mode {
        ModeChoice::Native => try_mode(prog, XdpMode::Driver).with_context(|| format!("attaching XDP to {iface} in native mode")),
        ModeChoice::Generic => try_mode(prog, XdpMode::Skb).with_context(|| format!("attaching XDP to {iface} in generic mode")),
        ModeChoice::Auto => match try_mode(prog, XdpMode::Driver) {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!(iface, error = %e, "native XDP failed; falling back to generic mode");
                try_mode(prog, XdpMode::Skb).with_context(|| format!("attaching XDP to {iface} in generic mode"))
            }
        },
    }
}
