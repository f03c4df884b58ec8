//! One AF_XDP socket of the slow path: its UMEM (sized for the interface's
//! MTU), its rings, and the loop that receives, answers and sends.

use super::Shared;
use anyhow::{anyhow, Context as _, Result};
use common::slow_path::SlowPathHeader;
use std::{
    num::NonZeroU32,
    ptr::NonNull,
    sync::atomic::{AtomicBool, Ordering},
};
use xdpilone::{xdp::XdpDesc, BufIdx, IfInfo, Socket, SocketConfig, Umem, UmemConfig};

/// Bytes of UMEM per socket, whatever its frame size: 512 KiB a socket
/// keeps a router's worth of queues under an 8 MiB memlock limit.
pub(super) const UMEM_BYTES: u32 = 512 * 1024;
/// What the kernel keeps in front of a received frame in its UMEM frame
/// (XDP_PACKET_HEADROOM): a frame takes the rest.
pub(super) const XDP_PACKET_HEADROOM: u32 = 256;

/// The UMEM frame size for an interface of `mtu`: 2048, or 4096 (the
/// largest aligned frame, a page) when a full-size frame with one VLAN tag
/// and the [`SlowPathHeader`] needs it.
pub fn frame_size_for(mtu: u32) -> u32 {
    let need = mtu.saturating_add(18 + SlowPathHeader::LEN as u32 + XDP_PACKET_HEADROOM);
    if need <= 2048 {
        2048
    } else {
        4096
    }
}

/// An anonymous, page-aligned mapping: a UMEM.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> Result<Area> {
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping an AF_XDP UMEM");
        }
        Ok(Area { ptr: NonNull::new(p as *mut u8).expect("mmap gave an address"), len })
    }

    fn bytes(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut _, self.len) };
    }
}

pub(super) struct XskSocket {
    ifindex: u32,
    /// Bytes of each UMEM frame.
    frame_size: u32,
    // Field order is drop order: the rings and the socket go before the UMEM's memory.
    rx: xdpilone::RingRx,
    tx: xdpilone::RingTx,
    device: xdpilone::DeviceQueue,
    umem: Umem,
    _area: Area,
    /// Frames (UMEM offsets) free to carry a reply.
    tx_free: Vec<u64>,
}

impl XskSocket {
    /// Frames a socket's ring takes: half of its UMEM's frames.
    pub(super) fn ring(frame_size: u32) -> u32 {
        UMEM_BYTES / frame_size / 2
    }

    /// A socket on (`ifindex`, `queue`) with UMEM frames of `frame_size`
    /// bytes, bound with `bind_flags` (zero-copy or copy).
    pub(super) fn open(ifindex: u32, queue: u32, frame_size: u32, bind_flags: u16) -> Result<XskSocket> {
        let ring = Self::ring(frame_size);
        let area = Area::new(UMEM_BYTES as usize)?;
        let config = UmemConfig { fill_size: ring, complete_size: ring, frame_size, headroom: 0, flags: 0 };
        // SAFETY: the area outlives the UMEM (field order) and is used only through it.
        let umem = unsafe { Umem::new(config, area.bytes()) }.map_err(|e| anyhow!("UMEM: {e}"))?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex).map_err(|e| anyhow!("interface: {e}"))?;
        info.set_queue(queue);
        let sock = Socket::with_shared(&info, &umem).map_err(|e| anyhow!("socket: {e}"))?;
        let mut device = umem.fq_cq(&sock).map_err(|e| anyhow!("fill/completion rings: {e}"))?;
        let cfg = SocketConfig { rx_size: NonZeroU32::new(ring), tx_size: NonZeroU32::new(ring), bind_flags };
        let user = umem.rx_tx(&sock, &cfg).map_err(|e| anyhow!("rx/tx rings: {e}"))?;
        let rx = user.map_rx().map_err(|e| anyhow!("rx ring: {e}"))?;
        let tx = user.map_tx().map_err(|e| anyhow!("tx ring: {e}"))?;
        umem.bind(&user).map_err(|e| anyhow!("bind: {e}"))?;
        let offset = |i: u32| umem.frame(BufIdx(i)).expect("in the UMEM").offset;
        let mut fill = device.fill(ring);
        fill.insert((0..ring).map(offset));
        fill.commit();
        drop(fill);
        let tx_free = (ring..2 * ring).map(offset).collect();
        Ok(XskSocket { ifindex, frame_size, rx, tx, device, umem, _area: area, tx_free })
    }

    pub(super) fn rx_fd(&self) -> std::os::fd::RawFd {
        self.rx.as_raw_fd()
    }

    fn base(&self) -> *mut u8 {
        self.umem.frame(BufIdx(0)).expect("frame 0").addr.as_ptr() as *mut u8
    }

    /// Receives, answers, sends; until `stop`.
    pub(super) fn serve(mut self, shared: &Shared, stop: &AtomicBool) {
        let mut pfd = libc::pollfd { fd: self.rx_fd(), events: libc::POLLIN, revents: 0 };
        let mut replies: Vec<Vec<u8>> = Vec::new();
        let mut refill: Vec<u64> = Vec::new();
        let mut dropped_before = 0;
        while !stop.load(Ordering::Relaxed) {
            unsafe { libc::poll(&mut pfd, 1, 100) };
            let base = self.base();
            let mut rx = self.rx.receive(Self::ring(self.frame_size));
            while let Some(desc) = rx.read() {
                // SAFETY: the kernel wrote `len` bytes at `addr` inside the UMEM,
                // and the frame is ours until it goes back to the fill ring.
                let frame = unsafe { std::slice::from_raw_parts(base.add(desc.addr as usize), desc.len as usize) };
                if let Some(reply) = shared.answer(self.ifindex, frame) {
                    replies.push(reply);
                }
                refill.push(desc.addr - desc.addr % self.frame_size as u64);
            }
            rx.release();
            drop(rx);
            if !refill.is_empty() {
                let mut fill = self.device.fill(refill.len() as u32);
                let n = fill.insert(refill.iter().copied()) as usize;
                fill.commit();
                drop(fill);
                refill.drain(..n);
            }
            self.send(&mut replies, shared);
            if let Ok(s) = self.device.statistics_v2() {
                let dropped = s.rx_dropped + s.rx_ring_full;
                shared.stats.socket_dropped.fetch_add(dropped - dropped_before, Ordering::Relaxed);
                dropped_before = dropped;
            }
        }
    }

    /// Puts `replies` on the TX ring and kicks the kernel until all are sent
    /// (copy mode sends only on `sendto`, some 32 frames a call).
    fn send(&mut self, replies: &mut Vec<Vec<u8>>, shared: &Shared) {
        self.reclaim();
        let base = self.base();
        for reply in replies.drain(..) {
            let Some(offset) = self.tx_free.pop() else {
                shared.stats.tx_full.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let len = reply.len().min(self.frame_size as usize);
            // SAFETY: a free TX frame inside the UMEM, frame_size long.
            unsafe { std::ptr::copy_nonoverlapping(reply.as_ptr(), base.add(offset as usize), len) };
            let mut tx = self.tx.transmit(1);
            if tx.insert_once(XdpDesc { addr: offset, len: len as u32, options: 0 }) {
                tx.commit();
                shared.stats.icmp_sent.fetch_add(1, Ordering::Relaxed);
            } else {
                drop(tx);
                self.tx_free.push(offset);
                shared.stats.tx_full.fetch_add(1, Ordering::Relaxed);
            }
        }
        for _ in 0..64 {
            if self.tx.pending() == 0 {
                break;
            }
            self.tx.wake();
            self.reclaim();
        }
        self.reclaim();
    }

    /// Frames the kernel has sent come back as free TX frames.
    fn reclaim(&mut self) {
        let mut done = self.device.complete(Self::ring(self.frame_size));
        while let Some(offset) = done.read() {
            self.tx_free.push(offset);
        }
        done.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umem_frames_fit_the_mtu_up_to_a_page() {
        assert_eq!(frame_size_for(1500), 2048);
        // 1766 + 18 + 8 + 256 = 2048: the largest MTU in 2048-byte frames.
        assert_eq!(frame_size_for(1766), 2048);
        assert_eq!(frame_size_for(1767), 4096);
        assert_eq!(frame_size_for(9000), 4096);
        assert_eq!(frame_size_for(u32::MAX), 4096);
        assert_eq!(XskSocket::ring(2048), 128);
        assert_eq!(XskSocket::ring(4096), 64);
    }
}
