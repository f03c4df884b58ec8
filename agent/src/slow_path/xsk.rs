//! One AF_XDP socket of the slow path: its UMEM (sized for the interface's
//! MTU), its rings, and the loop that receives and hands frames over.

use super::Shared;
use anyhow::{anyhow, Context as _, Result};
use common::slow_path::SlowPathHeader;
use std::{
    num::NonZeroU32,
    ptr::NonNull,
    sync::atomic::{AtomicBool, Ordering},
};
use xdpilone::{BufIdx, IfInfo, Socket, SocketConfig, Umem, UmemConfig};

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
    device: xdpilone::DeviceQueue,
    umem: Umem,
    _area: Area,
}

impl XskSocket {
    /// Frames a socket's ring takes: all of its UMEM's (nothing is sent
    /// from it: the daemon routes the errors).
    pub(super) fn ring(frame_size: u32) -> u32 {
        UMEM_BYTES / frame_size
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
        let cfg = SocketConfig { rx_size: NonZeroU32::new(ring), tx_size: None, bind_flags };
        let user = umem.rx_tx(&sock, &cfg).map_err(|e| anyhow!("rx ring: {e}"))?;
        let rx = user.map_rx().map_err(|e| anyhow!("rx ring: {e}"))?;
        umem.bind(&user).map_err(|e| anyhow!("bind: {e}"))?;
        let offset = |i: u32| umem.frame(BufIdx(i)).expect("in the UMEM").offset;
        let mut fill = device.fill(ring);
        fill.insert((0..ring).map(offset));
        fill.commit();
        drop(fill);
        Ok(XskSocket { ifindex, frame_size, rx, device, umem, _area: area })
    }

    pub(super) fn rx_fd(&self) -> std::os::fd::RawFd {
        self.rx.as_raw_fd()
    }

    fn base(&self) -> *mut u8 {
        self.umem.frame(BufIdx(0)).expect("frame 0").addr.as_ptr() as *mut u8
    }

    /// Receives, hands each frame to [`Shared::answer`]; until `stop`.
    pub(super) fn serve(mut self, shared: &Shared, stop: &AtomicBool) {
        let mut pfd = libc::pollfd { fd: self.rx_fd(), events: libc::POLLIN, revents: 0 };
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
                shared.answer(self.ifindex, frame);
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
            if let Ok(s) = self.device.statistics_v2() {
                let dropped = s.rx_dropped + s.rx_ring_full;
                shared.stats.socket_dropped.fetch_add(dropped - dropped_before, Ordering::Relaxed);
                dropped_before = dropped;
            }
        }
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
        assert_eq!(XskSocket::ring(2048), 256);
        assert_eq!(XskSocket::ring(4096), 128);
    }
}
