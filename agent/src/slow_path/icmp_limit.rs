//! ICMP error rate limits, as the kernel keeps them (net/ipv4/icmp.c,
//! `inet_peer_xrlim_allow`, `icmp_global_allow`): a token bucket per
//! destination (the seed's `rate_tokens` / `rate_last`) that allows a burst
//! of 6 and then one message per `icmp_ratelimit`, and a global bucket of
//! `icmp_msgs_per_sec` with a burst of `icmp_msgs_burst`. Errors path-MTU
//! discovery depends on are exempt from the per-destination limit.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// The kernel's XRLIM_BURST_FACTOR.
const BURST_FACTOR: u32 = 6;
/// Destinations remembered at most; the idle ones go first.
const MAX_PEERS: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Per destination, one message per this (zero: no limit). Kernel: 1 s.
    pub per_destination: Duration,
    /// All destinations together (zero: no limit). Kernel: 1000.
    pub msgs_per_sec: u32,
    /// Kernel: 50.
    pub msgs_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { per_destination: Duration::from_millis(1000), msgs_per_sec: 1000, msgs_burst: 50 }
    }
}

/// `rate_tokens` / `rate_last`: credit in time, spent `per_destination` a message.
#[derive(Debug, Clone, Copy)]
struct Peer {
    tokens: Duration,
    last: Instant,
}

#[derive(Debug)]
pub struct Limiter {
    limits: RateLimits,
    peers: HashMap<IpAddr, Peer>,
    global_credit: f64,
    global_last: Instant,
}

impl Limiter {
    pub fn new(limits: RateLimits, now: Instant) -> Limiter {
        Limiter { limits, peers: HashMap::new(), global_credit: limits.msgs_burst as f64, global_last: now }
    }

    /// May an error go to `dest` now? Spends the tokens when it may.
    pub fn allow(&mut self, dest: IpAddr, pmtu: bool, now: Instant) -> bool {
        if !pmtu && !self.peer_allows(dest, now) {
            return false;
        }
        self.global_allows(now)
    }

    fn peer_allows(&mut self, dest: IpAddr, now: Instant) -> bool {
        let interval = self.limits.per_destination;
        if interval.is_zero() {
            return true;
        }
        let cap = interval * BURST_FACTOR;
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&dest) {
            self.peers.retain(|_, p| now.saturating_duration_since(p.last) < cap);
        }
        let peer = self.peers.entry(dest).or_insert(Peer { tokens: cap, last: now });
        peer.tokens = (peer.tokens + now.saturating_duration_since(peer.last)).min(cap);
        peer.last = now;
        if peer.tokens >= interval {
            peer.tokens -= interval;
            true
        } else {
            false
        }
    }

    fn global_allows(&mut self, now: Instant) -> bool {
        if self.limits.msgs_per_sec == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.global_last).as_secs_f64();
        self.global_last = now;
        self.global_credit = (self.global_credit + elapsed * self.limits.msgs_per_sec as f64).min(self.limits.msgs_burst.max(1) as f64);
        if self.global_credit >= 1.0 {
            self.global_credit -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_destination_gets_a_burst_of_six_then_one_per_interval() {
        let t = Instant::now();
        let mut l = Limiter::new(RateLimits { msgs_per_sec: 0, ..RateLimits::default() }, t);
        let allowed = (0..100).filter(|_| l.allow(a("10.1.0.2"), false, t)).count();
        assert_eq!(allowed, 6);
        assert!(l.allow(a("10.1.0.3"), false, t), "another destination has its own bucket");
        assert!(!l.allow(a("10.1.0.2"), false, t + Duration::from_millis(999)));
        assert!(l.allow(a("10.1.0.2"), false, t + Duration::from_millis(1000)));
        assert!(l.allow(a("10.1.0.2"), true, t + Duration::from_millis(1001)), "PMTU errors are exempt");
    }

    #[test]
    fn the_global_bucket_refills_at_its_rate() {
        let t = Instant::now();
        let limits = RateLimits { per_destination: Duration::ZERO, msgs_per_sec: 100, msgs_burst: 10 };
        let mut l = Limiter::new(limits, t);
        assert_eq!((0..50).filter(|i| l.allow(a(&format!("10.0.0.{i}")), false, t)).count(), 10);
        assert_eq!((0..50).filter(|_| l.allow(a("10.0.0.1"), false, t + Duration::from_millis(100))).count(), 10);
    }
}
