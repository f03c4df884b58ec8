//! How the frames the agent sends leave: those released from the neighbour
//! queue by the forwarding rules, and its own ICMP errors, once routed.
//! Out of a device over AF_PACKET, whole Ethernet frames.

use crate::slow_path::{
    icmp::ErrorKind,
    neighbour_queue::{forward_frame, with_l2, Held, QueueStats, Release},
    transit::TransitStats,
    Shared,
};
use anyhow::{Context as _, Result};
use common::{proto, NextHop, RouteMetrics};
use std::sync::Arc;

/// `frame` (an Ethernet frame) behind `nh`'s link header instead of its own.
pub fn relink(frame: &[u8], nh: &NextHop) -> Option<Vec<u8>> {
    let (ether_type, l3) = proto::ethernet_payload(frame)?;
    Some(with_l2(nh, ether_type, frame.get(l3..)?))
}

pub struct Egress {
    sender: FrameSender,
    slow: Arc<Shared>,
}

impl Egress {
    pub fn new(slow: Arc<Shared>) -> Result<Egress> {
        Ok(Egress { sender: FrameSender::new()?, slow })
    }

    /// Sends `held` through `nh`: the agent's own frame as it is, a frame in
    /// transit by the forwarding rules with its destination's `metrics`
    /// (see [`forward_frame`]). Counts the outcome in `stats`; returns the
    /// ICMP error due about it, for the caller to route.
    pub fn release(&self, held: &Held, nh: &NextHop, metrics: &RouteMetrics, stats: &mut QueueStats) -> Option<ErrorKind> {
        if held.originated {
            match relink(&held.frame, nh).map(|f| self.send(nh.ifindex, &f)) {
                Some(true) => {
                    stats.icmp_sent += 1;
                    self.slow.stats.icmp_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Some(false) => stats.send_failed += 1,
                None => stats.malformed += 1,
            }
            return None;
        }
        match forward_frame(&held.frame, nh, metrics) {
            Release::Send { frames, mss_clamped } => {
                let sent = frames.iter().try_for_each(|f| self.sender.send(nh.ifindex, f));
                match (sent, frames.len()) {
                    (Err(e), _) => {
                        tracing::debug!(error = %format!("{e:#}"), "released frame not sent");
                        stats.send_failed += 1;
                    }
                    (Ok(()), 1) => stats.forwarded += 1,
                    (Ok(()), n) => {
                        stats.fragmented += 1;
                        let transit = &self.slow.stats.transit;
                        TransitStats::bump(&transit.fragmented, 1);
                        TransitStats::bump(&transit.fragments, n as u64);
                    }
                }
                stats.mss_clamped += u64::from(mss_clamped);
                None
            }
            Release::Error(kind) => {
                match kind {
                    ErrorKind::TooBig { .. } => stats.too_big += 1,
                    _ => stats.ttl_exceeded += 1,
                }
                Some(kind)
            }
            Release::FragmentFailed => {
                stats.fragment_failed += 1;
                None
            }
            Release::Unusable => {
                stats.send_failed += 1;
                None
            }
            Release::Malformed => {
                stats.malformed += 1;
                None
            }
        }
    }

    /// Sends the whole frame `frame` out of `ifindex`: whether it went.
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> bool {
        match self.sender.send(ifindex, frame) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "frame not sent");
                false
            }
        }
    }
}

/// Sends whole Ethernet frames out of a device (AF_PACKET): how released
/// frames leave.
pub struct FrameSender {
    fd: std::os::fd::OwnedFd,
}

impl FrameSender {
    pub fn new() -> Result<FrameSender> {
        use std::os::fd::FromRawFd;
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("AF_PACKET socket for released frames");
        }
        Ok(FrameSender { fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) } })
    }

    pub fn send(&self, ifindex: u32, frame: &[u8]) -> Result<()> {
        use std::os::fd::AsRawFd;
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = ifindex as i32;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const _,
                frame.len(),
                0,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("sending a released frame on ifindex {ifindex}"));
        }
        Ok(())
    }
}
