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
    /// When the table was last swept of full buckets: at most once a second,
    /// so that a flood of new sources cannot make every call a sweep.
    last_sweep: Instant,
}

impl Limiter {
    pub fn new(limits: RateLimits, now: Instant) -> Limiter {
        Limiter { limits, peers: HashMap::new(), global_credit: limits.msgs_burst as f64, global_last: now, last_sweep: now }
    }

    /// May an error go to `dest` now? Spends the tokens when it may. The
    /// global bucket is asked first (as `icmp_global_allow` is): a flood
    /// from spoofed sources is refused before it costs a peer entry.
    pub fn allow(&mut self, dest: IpAddr, pmtu: bool, now: Instant) -> bool {
        if !self.global_has_credit(now) {
            return false;
        }
        if !pmtu && !self.peer_allows(dest, now) {
            return false;
        }
        self.global_spend();
        true
    }

    /// Destinations with a bucket now (at most [`MAX_PEERS`]).
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    fn peer_allows(&mut self, dest: IpAddr, now: Instant) -> bool {
        let interval = self.limits.per_destination;
        if interval.is_zero() {
            return true;
        }
        let cap = interval * BURST_FACTOR;
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&dest) {
            // Full buckets carry nothing worth keeping: forget those first.
            if now.saturating_duration_since(self.last_sweep) >= Duration::from_secs(1) {
                self.last_sweep = now;
                self.peers.retain(|_, p| now.saturating_duration_since(p.last) < cap);
            }
            if self.peers.len() >= MAX_PEERS {
                // Still full of live buckets (spoofed sources): memory stays
                // bounded, and this one goes by the global limit alone.
                return true;
            }
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

    /// Refills the global bucket; is there a message's worth in it?
    fn global_has_credit(&mut self, now: Instant) -> bool {
        if self.limits.msgs_per_sec == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.global_last).as_secs_f64();
        self.global_last = now;
        self.global_credit = (self.global_credit + elapsed * self.limits.msgs_per_sec as f64).min(self.limits.msgs_burst.max(1) as f64);
        self.global_credit >= 1.0
    }

    fn global_spend(&mut self) {
        if self.limits.msgs_per_sec != 0 {
            self.global_credit -= 1.0;
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

    #[test]
    fn spoofed_sources_cannot_grow_memory_and_the_global_limit_comes_first() {
        let t = Instant::now();
        // No global limit: every new source reaches the per-destination table.
        let mut l = Limiter::new(RateLimits { per_destination: Duration::from_millis(1000), msgs_per_sec: 0, msgs_burst: 50 }, t);
        let started = Instant::now();
        for i in 0..(3 * MAX_PEERS as u32) {
            let dest = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            // 10 us apart over 2 s: every bucket stays live.
            assert!(l.allow(dest, false, t + Duration::from_micros(u64::from(i) * 10)));
            assert!(l.peers() <= MAX_PEERS, "bounded at {MAX_PEERS}: {}", l.peers());
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no sweep per call: {:?}", started.elapsed());
        // With the global limit: about 2 s of a 1000/s bucket with a burst of 50.
        let mut l = Limiter::new(RateLimits { per_destination: Duration::from_millis(1000), msgs_per_sec: 1000, msgs_burst: 50 }, t);
        let allowed = (0..(3 * MAX_PEERS as u32))
            .filter(|i| {
                l.allow(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), false, t + Duration::from_micros(u64::from(*i) * 10))
            })
            .count();
        assert!((1900..=2100).contains(&allowed), "the global limit holds: {allowed}");
        // Refused by the global limit: no peer entry was spent on them.
        let mut g = Limiter::new(RateLimits { per_destination: Duration::from_millis(1000), msgs_per_sec: 1, msgs_burst: 1 }, t);
        assert!(g.allow(a("10.9.0.1"), false, t));
        for i in 2..100 {
            assert!(!g.allow(a(&format!("10.9.0.{i}")), false, t));
        }
        assert_eq!(g.peers(), 1, "a refused flood costs no memory");
    }
}
