//! The lab's traffic generator: BPF_PROG_RUN in live-frames mode, the
//! technique of xdp-trafficgen. A thread enters the generator's namespace,
//! loads `cowroute_trafficgen` and runs it over the bench's frame again and
//! again; each repetition leaves through the generator's veth straight into
//! the router's receive queue (no socket, no skb on the sending side), so
//! the generator costs far less per frame than the router does.

use anyhow::{anyhow, Context as _, Result};
use aya::{
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    EbpfLoader,
};
use cowroute::bench_object::PROG_TRAFFICGEN;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
};

/// Why the generator cannot run: the kernel refuses the live-frames flag.
pub const LIVE_FRAMES_REFUSED: &str = "this kernel refuses BPF_F_TEST_XDP_LIVE_FRAMES to every caller (EPERM where upstream has none: a vendor build's policy); the live-frames generator, and so the lab throughput sections (lab, full-table), cannot run here";

/// Whether `e` is that refusal.
pub fn refused(e: &anyhow::Error) -> bool {
    // The generator's thread hands its error over as text.
    format!("{e:#}").contains(LIVE_FRAMES_REFUSED)
}

/// Frames per BPF_PROG_RUN call (about 20-50 ms here), and per batch the
/// kernel sends before it flushes the redirects.
const FRAMES_PER_CALL: u32 = 1 << 16;
const BATCH: u32 = 64;
/// The first bytes of the frame rewritten on every repetition: Ethernet,
/// IPv6 and UDP headers (of an IPv4 frame, its headers and the payload's
/// first 20 bytes).
const HEADERS_LEN: usize = 14 + 40 + 8;

/// One of the generator's destinations, as `TRAFFICGEN_DSTS` holds it
/// (`ebpf/src/bench/trafficgen.rs`'s `TrafficgenDst`): the address (IPv4:
/// the first 4 bytes), then the IPv4 header checksum that goes with it.
pub type Destination = [u8; 20];

/// The generator's destination for `addr` in frames like `frame` (an IPv4
/// frame's header checksum computed with it).
pub fn destination(frame: &[u8], addr: std::net::IpAddr) -> Destination {
    let mut d = [0u8; 20];
    match addr {
        std::net::IpAddr::V4(a) => {
            let mut ip: [u8; 20] = frame[14..34].try_into().expect("an IPv4 frame");
            ip[16..20].copy_from_slice(&a.octets());
            ip[10..12].fill(0);
            d[..4].copy_from_slice(&a.octets());
            d[16..18].copy_from_slice(&common::checksum::checksum(&ip).to_be_bytes());
        }
        std::net::IpAddr::V6(a) => d[..16].copy_from_slice(&a.octets()),
    }
    d
}

/// A running generator; stops when dropped.
pub struct Generator {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Generator {
    /// Sends `frame` out of `iface` in namespace `netns` from CPU `cpu`,
    /// spread over `flows` UDP source ports and over `dsts` (none: the
    /// frame's own destination); returns once the first call ran.
    pub fn start(netns: &str, iface: &str, frame: Vec<u8>, flows: u32, dsts: Vec<Destination>, cpu: usize) -> Result<Generator> {
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (netns, iface) = (netns.to_string(), iface.to_string());
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let headers: [u8; HEADERS_LEN] = frame.get(..HEADERS_LEN).context("frame shorter than its headers")?.try_into()?;
        let thread = std::thread::spawn(move || -> Result<()> {
            let setup = || -> Result<(aya::Ebpf, u32)> {
                common::netns::enter(&netns)?;
                crate::cpus::set_affinity(0, &[cpu])?;
                let ifindex = ifindex(&iface)?;
                let mut loader = EbpfLoader::new();
                let l4_offset: u32 = if frame[12..14] == [0x86, 0xdd] { 54 } else { 34 };
                let dst_count = dsts.len() as u32;
                loader
                    .override_global("TRAFFICGEN_FLOWS", &flows, true)
                    .override_global("TRAFFICGEN_HEADERS", &headers, true)
                    .override_global("TRAFFICGEN_L4_OFFSET", &l4_offset, true)
                    .override_global("TRAFFICGEN_DST_COUNT", &dst_count, true);
                let mut ebpf = crate::bench_programs::load(&mut loader).context("loading the generator")?;
                let mut table: aya::maps::Array<_, Destination> =
                    aya::maps::Array::try_from(ebpf.map_mut("TRAFFICGEN_DSTS").context("no TRAFFICGEN_DSTS")?)?;
                anyhow::ensure!(dsts.len() <= table.len() as usize, "{} destinations, room for {}", dsts.len(), table.len());
                for (i, d) in dsts.iter().enumerate() {
                    table.set(i as u32, d, 0)?;
                }
                let prog: &mut Xdp = ebpf.program_mut(PROG_TRAFFICGEN).context("no generator program")?.try_into()?;
                prog.load().context("verifying the generator")?;
                Ok((ebpf, ifindex))
            };
            let (mut ebpf, ifindex) = match setup() {
                Ok(v) => v,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("{e:#}")));
                    return Ok(());
                }
            };
            let prog: &mut Xdp = ebpf.program_mut(PROG_TRAFFICGEN).unwrap().try_into()?;
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
            // rx_queue_index, egress_ifindex; data_end must be the frame's length.
            let ctx: Vec<u8> = [0u32, frame.len() as u32, 0, ifindex, 0, 0].iter().flat_map(|w| w.to_ne_bytes()).collect();
            let mut first = true;
            while !stop2.load(Ordering::Relaxed) {
                let mut opts = TestRunOptions::new();
                opts.data_in = Some(&frame);
                opts.ctx_in = Some(&ctx);
                opts.repeat = FRAMES_PER_CALL;
                opts.attrs = TestRunAttrs::new().xdp_live_frames(BATCH);
                let r = prog.test_run(opts).map_err(|e| {
                    // Some vendor kernels refuse the flag outright (upstream
                    // has no EPERM on this path): say so, not just "EPERM".
                    let refused =
                        matches!(&e, aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EPERM));
                    let why = if refused { LIVE_FRAMES_REFUSED } else { "BPF_PROG_RUN (live frames)" };
                    anyhow::Error::new(e).context(why)
                });
                if first {
                    first = false;
                    let _ = ready_tx.send(r.as_ref().map(|_| ()).map_err(|e| anyhow!("{e:#}")));
                }
                r?;
                sent2.fetch_add(FRAMES_PER_CALL as u64, Ordering::Relaxed);
            }
            Ok(())
        });
        let g = Generator { stop, sent, thread: Some(thread) };
        ready_rx.recv().context("the generator thread ended")??;
        Ok(g)
    }

    /// Frames sent so far (counted per call).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if let Ok(Err(e)) = t.join() {
                eprintln!("bench: the generator failed: {e:#}");
            }
        }
    }
}

fn ifindex(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface)?;
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(anyhow!("no interface {iface} in the generator's namespace")),
        i => Ok(i),
    }
}
