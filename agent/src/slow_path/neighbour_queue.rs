//! Packets waiting for a neighbour: the fast path hands the agent frames
//! whose next hop has no resolved neighbour yet (link up); they wait here,
//! in a bounded queue per neighbour, while the kernel resolves it (asked
//! over netlink), and leave when it is resolved: MACs written, TTL / hop
//! limit decremented, sent out of the egress device. On timeout or overflow
//! they are dropped, and counted.

use anyhow::{Context as _, Result};
use common::{checksum, NextHop};
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;

/// A neighbour: device and address.
pub type NeighbourKey = (u32, IpAddr);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueStats {
    pub held: u64,
    pub released: u64,
    pub timed_out: u64,
    pub overflowed: u64,
    /// Released but not sendable (TTL out, too big, malformed, send error).
    pub dropped: u64,
    /// Waiting now.
    pub waiting: usize,
}

#[derive(Debug)]
pub struct NeighbourQueue {
    per_neighbour: usize,
    total: usize,
    timeout: Duration,
    queues: HashMap<NeighbourKey, (Instant, VecDeque<Vec<u8>>)>,
    pub stats: QueueStats,
}

impl NeighbourQueue {
    /// At most `per_neighbour` frames for one neighbour, `total` in all,
    /// each for at most `timeout` (the kernel's unres_qlen is 101 packets
    /// and its resolution gives up after about 3 s).
    pub fn new(per_neighbour: usize, total: usize, timeout: Duration) -> NeighbourQueue {
        NeighbourQueue { per_neighbour, total, timeout, queues: HashMap::new(), stats: QueueStats::default() }
    }

    /// Holds `frame` for `key`; `true` when it is the first (time to ask
    /// for resolution). A full queue drops the frame.
    pub fn hold(&mut self, key: NeighbourKey, frame: Vec<u8>, now: Instant) -> bool {
        if self.stats.waiting >= self.total {
            self.stats.overflowed += 1;
            return false;
        }
        let (_, q) = self.queues.entry(key).or_insert_with(|| (now, VecDeque::new()));
        if q.len() >= self.per_neighbour {
            self.stats.overflowed += 1;
            return false;
        }
        q.push_back(frame);
        self.stats.held += 1;
        self.stats.waiting += 1;
        q.len() == 1
    }

    pub fn is_waiting(&self, key: &NeighbourKey) -> bool {
        self.queues.contains_key(key)
    }

    pub fn keys(&self) -> Vec<NeighbourKey> {
        self.queues.keys().copied().collect()
    }

    /// The neighbour is resolved: its frames, oldest first.
    pub fn release(&mut self, key: &NeighbourKey) -> Vec<Vec<u8>> {
        let frames: Vec<Vec<u8>> = self.queues.remove(key).map(|(_, q)| q.into()).unwrap_or_default();
        self.stats.waiting -= frames.len();
        self.stats.released += frames.len() as u64;
        frames
    }

    /// Drops the queues that waited `timeout`; returns how many frames went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let timeout = self.timeout;
        let old: Vec<NeighbourKey> =
            self.queues.iter().filter(|(_, (since, _))| now.saturating_duration_since(*since) >= timeout).map(|(k, _)| *k).collect();
        let mut n = 0;
        for key in old {
            n += self.queues.remove(&key).map_or(0, |(_, q)| q.len());
        }
        self.stats.waiting -= n;
        self.stats.timed_out += n as u64;
        n
    }
}

/// `frame` (as it arrived) forwarded through `nh`: the next hop's MACs and
/// VLAN tag, TTL / hop limit one less (RFC 1624 for the IPv4 checksum).
/// `None` when it may not go: TTL out, bigger than the MTU, unreadable.
pub fn forward_frame(frame: &[u8], nh: &NextHop, mtu: u32) -> Option<Vec<u8>> {
    let mut l3 = 12;
    if u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) == ETH_P_8021Q {
        l3 += 4;
    }
    let ether_type = u16::from_be_bytes([*frame.get(l3)?, *frame.get(l3 + 1)?]);
    let mut ip = frame.get(l3 + 2..)?.to_vec();
    match ether_type {
        ETH_P_IP if ip.len() >= 20 => {
            let len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if ip[8] <= 1 || len > ip.len() || len as u32 > mtu {
                return None;
            }
            ip.truncate(len);
            let old = u16::from_be_bytes([ip[8], ip[9]]);
            ip[8] -= 1;
            let check = checksum::replace_u16(u16::from_be_bytes([ip[10], ip[11]]), old, old - 0x0100);
            ip[10..12].copy_from_slice(&check.to_be_bytes());
        }
        ETH_P_IPV6 if ip.len() >= 40 => {
            let len = 40 + u16::from_be_bytes([ip[4], ip[5]]) as usize;
            if ip[7] <= 1 || len > ip.len() || len as u32 > mtu {
                return None;
            }
            ip.truncate(len);
            ip[7] -= 1;
        }
        _ => return None,
    }
    let mut out = Vec::with_capacity(18 + ip.len());
    out.extend_from_slice(&nh.dmac);
    out.extend_from_slice(&nh.smac);
    if nh.vlan != 0 {
        out.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        out.extend_from_slice(&(nh.vlan & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(&ether_type.to_be_bytes());
    out.extend_from_slice(&ip);
    Some(out)
}

/// The destination of the IP packet in `frame`: the neighbour a connected
/// route's packet waits for.
pub fn frame_destination(frame: &[u8]) -> Option<IpAddr> {
    let mut l3 = 12;
    if u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) == ETH_P_8021Q {
        l3 += 4;
    }
    let ip = frame.get(l3 + 2..)?;
    match u16::from_be_bytes([frame[l3], frame[l3 + 1]]) {
        ETH_P_IP if ip.len() >= 20 => Some(IpAddr::from([ip[16], ip[17], ip[18], ip[19]])),
        ETH_P_IPV6 if ip.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&ip[24..40]);
            Some(IpAddr::from(a))
        }
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> NeighbourKey {
        (3, s.parse().unwrap())
    }

    #[test]
    fn frames_wait_bounded_and_leave_in_order_or_time_out() {
        let t = Instant::now();
        let mut q = NeighbourQueue::new(2, 3, Duration::from_secs(3));
        assert!(q.hold(key("10.2.0.9"), vec![1], t), "the first asks for resolution");
        assert!(!q.hold(key("10.2.0.9"), vec![2], t));
        assert!(!q.hold(key("10.2.0.9"), vec![3], t), "a full queue drops");
        assert!(q.hold(key("10.2.0.8"), vec![4], t));
        assert!(!q.hold(key("10.2.0.7"), vec![5], t), "the total is bounded too");
        assert_eq!(q.release(&key("10.2.0.9")), vec![vec![1], vec![2]]);
        assert_eq!(q.expire(t + Duration::from_secs(3)), 1);
        assert_eq!(q.stats, QueueStats { held: 3, released: 2, timed_out: 1, overflowed: 2, dropped: 0, waiting: 0 });
    }

    #[test]
    fn a_released_frame_gets_new_macs_and_one_ttl_less() {
        let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 1, 0, 2, 10, 2, 0, 9, 0, 9, 0, 9, 0, 8, 0, 0];
        let c = checksum::checksum(&ip[..20]).to_be_bytes();
        ip[10..12].copy_from_slice(&c);
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0];
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&[0; 4]); // Ethernet padding goes
        let nh = NextHop { ifindex: 3, mtu: 1500, dmac: [9; 6], smac: [8; 6], vlan: 0, flags: NextHop::USABLE };
        let out = forward_frame(&frame, &nh, 1500).unwrap();
        assert_eq!((&out[..6], &out[6..12]), (&[9u8; 6][..], &[8u8; 6][..]));
        assert_eq!(out.len(), 14 + 28);
        assert_eq!(out[14 + 8], 63);
        assert!(checksum::verifies(&out[14..34]));
        assert_eq!(frame_destination(&frame), Some("10.2.0.9".parse().unwrap()));
        assert!(forward_frame(&frame, &nh, 27).is_none(), "bigger than the MTU");
    }
}
