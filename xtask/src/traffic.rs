//! Traffic inside the lab's namespaces: a thread enters a namespace with
//! setns(2) and its sockets live there, so no helper program is needed.

use anyhow::{anyhow, bail, Result};
use std::{
    mem::{size_of, zeroed},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

/// Runs `f` on a thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        common::netns::enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("thread in namespace panicked"))?
}

/// A datagram as the receiver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: IpAddr,
    /// The sender's port: which flow this is.
    pub port: u16,
    pub len: usize,
    /// IPv4 TTL or IPv6 hop limit on arrival.
    pub ttl: u8,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// The destination address in its IP header.
    pub dst: Option<IpAddr>,
}

/// A UDP socket bound in a namespace, reporting each datagram's TTL.
pub struct UdpSink {
    sock: UdpSocket,
}

impl UdpSink {
    pub fn bind(ns: &str, addr: SocketAddr) -> Result<UdpSink> {
        let sock = in_netns(ns, move || Ok(UdpSocket::bind(addr)?))?;
        let fd = sock.as_raw_fd();
        // Room for a whole burst: frames an XDP redirect delivers carry a
        // page-sized truesize, so the default buffer holds only ~100 of them.
        let rcvbuf: libc::c_int = 16 << 20;
        unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf as *const _ as *const libc::c_void, 4);
        }
        let on: libc::c_int = 1;
        let opts = if addr.is_ipv4() {
            [(libc::IPPROTO_IP, libc::IP_RECVTTL), (libc::IPPROTO_IP, libc::IP_PKTINFO)]
        } else {
            [(libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT), (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)]
        };
        for (level, opt) in opts {
            if unsafe { libc::setsockopt(fd, level, opt, &on as *const _ as *const libc::c_void, size_of::<libc::c_int>() as u32) } != 0 {
                bail!("setsockopt TTL/ingress reporting: {}", std::io::Error::last_os_error());
            }
        }
        Ok(UdpSink { sock })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("bound")
    }

    /// Receives until `count` datagrams arrived or `timeout` passed.
    pub fn receive(&self, count: usize, timeout: Duration) -> Result<Vec<Received>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.sock.set_read_timeout(Some(left.min(Duration::from_millis(200))))?;
            if let Some(r) = self.recv_one()? {
                got.push(r);
            }
        }
        Ok(got)
    }

    fn recv_one(&self) -> Result<Option<Received>> {
        let mut buf = [0u8; 65536];
        let mut cbuf = [0u8; 128];
        let mut from: libc::sockaddr_storage = unsafe { zeroed() };
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut _, iov_len: buf.len() };
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = &mut from as *mut _ as *mut _;
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut _;
        msg.msg_controllen = cbuf.len();
        let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // A signal (the test harness's, a child's) is not a failure: try again.
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) {
                return Ok(None);
            }
            return Err(e.into());
        }
        let (mut ttl, mut ifindex, mut dst) = (None, 0, None);
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let (l, t, data) = ((*c).cmsg_level, (*c).cmsg_type, libc::CMSG_DATA(c));
                match (l, t) {
                    (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                        ttl = Some(*(data as *const libc::c_int) as u8)
                    }
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let info = *(data as *const libc::in_pktinfo);
                        ifindex = info.ipi_ifindex as u32;
                        dst = Some(IpAddr::from(u32::from_be(info.ipi_addr.s_addr).to_be_bytes()));
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                        let info = *(data as *const libc::in6_pktinfo);
                        ifindex = info.ipi6_ifindex;
                        dst = Some(IpAddr::from(info.ipi6_addr.s6_addr));
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let (from, port) = match from.ss_family as i32 {
            libc::AF_INET => {
                let a = unsafe { *(&from as *const _ as *const libc::sockaddr_in) };
                (IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()), u16::from_be(a.sin_port))
            }
            _ => {
                let a = unsafe { *(&from as *const _ as *const libc::sockaddr_in6) };
                (IpAddr::from(a.sin6_addr.s6_addr), u16::from_be(a.sin6_port))
            }
        };
        let ttl = ttl.ok_or_else(|| anyhow!("no TTL control message"))?;
        Ok(Some(Received { from, port, len: n as usize, ttl, ifindex, dst }))
    }
}

/// Sends `count` datagrams of `len` bytes from namespace `ns` to `to`, with
/// the given TTL / hop limit, `gap` apart.
pub fn udp_send(ns: &str, to: SocketAddr, count: usize, len: usize, ttl: u32, gap: Duration) -> Result<()> {
    udp_send_from(ns, 0, to, count, len, ttl, gap)
}

/// `count` datagrams on each of the flows from source ports `ports` to `to`.
pub fn udp_send_flows(ns: &str, ports: std::ops::Range<u16>, to: SocketAddr, count: usize) -> Result<()> {
    for port in ports {
        udp_send_from(ns, port, to, count, 64, 64, Duration::ZERO)?;
    }
    Ok(())
}

/// As [`udp_send`], from source port `port` (0: any).
pub fn udp_send_from(ns: &str, port: u16, to: SocketAddr, count: usize, len: usize, ttl: u32, gap: Duration) -> Result<()> {
    in_netns(ns, move || {
        let any: IpAddr = if to.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
        let sock = UdpSocket::bind(SocketAddr::new(any, port))?;
        if to.is_ipv4() {
            sock.set_ttl(ttl)?;
        } else {
            let v = ttl as libc::c_int;
            unsafe {
                libc::setsockopt(sock.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &v as *const _ as *const libc::c_void, 4);
            }
        }
        let payload = vec![0x5au8; len];
        for _ in 0..count {
            sock.send_to(&payload, to)?;
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
        Ok(())
    })
}

/// `ping` from `ns`: returns (transmitted, received, reply TTLs seen).
pub fn ping(ns: &str, dst: &str, count: u32, interval: &str) -> Result<(u32, u32, Vec<u8>)> {
    let out = crate::sh::output(&mut crate::sh::in_ns(ns, "ping", &["-n", "-c", &count.to_string(), "-i", interval, "-W", "2", dst]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ttls: Vec<u8> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("ttl=").or_else(|| w.strip_prefix("hlim=")))
        .filter_map(|v| v.parse().ok())
        .collect();
    let summary = text.lines().find(|l| l.contains("packets transmitted")).ok_or_else(|| anyhow!("ping printed no summary: {text}"))?;
    let nums: Vec<u32> = summary.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
    Ok((nums[0], nums[1], ttls))
}
