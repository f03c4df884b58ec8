//! Path-MTU learning: the fast path reports every Fragmentation Needed /
//! Packet Too Big it forwards (`PMTU_EVENTS`, the whole IP packet and the
//! interface it came in on); the agent copies-on-write that destination's
//! MTU (a learned override, expiring like the kernel's PMTU cache) and its
//! ADVMSS (the MTU less the IP and TCP headers). From then on the fast path
//! answers oversized packets to it with an ICMP error of its own, and clamps
//! the MSS of SYNs to it, which saves connections behind hops that filter
//! ICMP.
//!
//! A report lowers what every flow to its destination may send, so it is
//! believed only when it could be genuine. Linux, as an end host, verifies
//! the ICMP checksum (`icmp_rcv`, `icmpv6_rcv` with the pseudo header),
//! drops a mangled quote (`icmp_unreach`: IHL below 5; `pskb_may_pull` of
//! the quoted header and 8 bytes), and hands the quote to the protocol's
//! error handler, which believes it only for a socket of its own whose
//! 4-tuple (and, for TCP, in-window sequence number) it names: the quoted
//! packet must be one it sent. A router has no sockets; the flow's analogue
//! is its path through this router. So a report is learned only if, in order
//! (each refusal counted by its reason in [`PmtuStats`]):
//!
//! 1. learning is on (`--pmtu-learning`, `pmtu_learning`): else `disabled`;
//! 2. the whole ICMP message was copied (1280 bytes: RFC 4443's whole PTB,
//!    RFC 1812's 576-byte ICMPv4): else `truncated`, as its checksum cannot
//!    be verified; it is an ICMPv4 3/4 or ICMPv6 2/0 with a sane outer
//!    header: else `malformed`;
//! 3. its checksum is right (ICMPv6: with the pseudo header): else
//!    `bad_checksum`;
//! 4. the quote is a packet that was too big (`bad_quote` otherwise): IPv4
//!    version 4, IHL at least 5, the quoted header and 8 bytes of payload
//!    present, its header checksum right, DF set (RFC 1191 sends it only for
//!    DF packets), its length above the reported MTU; IPv6 version 6, 40 + 8
//!    bytes, its length above the MTU;
//! 5. addresses (`bogus_address`): the reporter and the quoted addresses are
//!    unicast (not multicast, broadcast, loopback, unspecified), and the
//!    ICMP goes to the quoted packet's source, as an error goes to the
//!    sender of what caused it;
//! 6. the quoted flow passes through here (`not_forwarded`): the quoted
//!    destination has a unicast route here whose egress (one of its legs')
//!    is the interface the report arrived on: the hop that could not carry
//!    the packet is beyond that interface, where this router sent it; and
//!    the quoted source has a unicast route out of another interface: the
//!    one the report is heading to, back to the flow's sender. A report for
//!    a destination behind another interface, or about a source on the
//!    reporter's own side, was not caused by a packet this router forwarded;
//! 7. the MTU is not above the route's (`RTAX_MTU`) or, without one, the
//!    egress device's MTU (`above_mtu`): a packet this router sent was no
//!    larger. It is clamped up to the family minimum (552, the kernel's
//!    `ip_rt_min_pmtu`; 1280), as `__ip_rt_update_pmtu` and
//!    `rt6_do_update_pmtu` do, and must lower what the destination has now
//!    (`not_lower`): learning never raises;
//! 8. rate limits, after the checks so that forgeries do not spend a genuine
//!    reporter's tokens: per reporting source and per destination (token
//!    buckets like `icmp_limit`'s, with the same bounded tables) and overall
//!    (`rate_limited_source`, `rate_limited_destination`);
//! 9. a quota: at most `--pmtu-max-learned` destinations (default half the
//!    `METRICS_RW` pool, always below it) hold a learned copy (`quota`), so
//!    operator writes always find slots;
//! 10. the route's MTU is not locked (`locked`); the copy-on-write itself
//!     may still fail (no route by now, a full pool: `refused`).

use crate::{
    rib::cow::{CowError, Source},
    rib::{MapSink, Rib},
    slow_path::icmp_limit::{Limiter, RateLimits},
    slow_path::pmtu_report::{self, Refusal, Report},
};
use common::{slow_path::PmtuEvent, RouteKind, Rtax};
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

/// The kernel's `ip_rt_min_pmtu` (RFC 791's 576 less some headroom).
pub const MIN_PMTU_V4: u32 = 552;
/// RFC 8200: every IPv6 link carries 1280.
pub const MIN_PMTU_V6: u32 = 1280;

/// `--pmtu-learning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PmtuLearning {
    #[default]
    On,
    Off,
}

/// How learning is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmtuSettings {
    pub learning: PmtuLearning,
    /// Destinations with a learned copy at most: below the pool's size.
    pub max_learned: u32,
    /// Per reporting source (`per_destination` is the per-source interval),
    /// and all reports together (`msgs_per_sec`, `msgs_burst`).
    pub per_source: RateLimits,
    /// Per quoted destination (no global bucket of its own).
    pub per_destination: RateLimits,
}

impl PmtuSettings {
    /// The defaults for a pool of `pool` private slots.
    pub fn new(learning: PmtuLearning, max_learned: Option<u32>, pool: u32) -> PmtuSettings {
        PmtuSettings {
            learning,
            max_learned: max_learned.unwrap_or(pool / 2).min(pool.saturating_sub(1)),
            // A burst of 6, then 10 a second from one reporter; 200 a second overall.
            per_source: RateLimits { per_destination: Duration::from_millis(100), msgs_per_sec: 200, msgs_burst: 50 },
            // A burst of 6, then one a second about one destination.
            per_destination: RateLimits { per_destination: Duration::from_secs(1), msgs_per_sec: 0, msgs_burst: 1 },
        }
    }
}

/// What became of the reports, for `Stats` and Prometheus: each report
/// counted once, under `learned` or the reason it was refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PmtuStats {
    pub reports: u64,
    /// A destination's MTU lowered.
    pub learned: u64,
    /// Learning is off.
    pub disabled: u64,
    pub truncated: u64,
    pub malformed: u64,
    pub bad_checksum: u64,
    pub bad_quote: u64,
    pub bogus_address: u64,
    /// The quoted flow does not pass through this router that way.
    pub not_forwarded: u64,
    /// Above the route's or device's MTU.
    pub above_mtu: u64,
    /// Not below what the destination already has.
    pub not_lower: u64,
    pub rate_limited_source: u64,
    pub rate_limited_destination: u64,
    /// `--pmtu-max-learned` destinations hold learned copies already.
    pub quota: u64,
    /// The route's MTU is locked.
    pub locked: u64,
    /// The copy-on-write failed (no route by now, a full pool, a map error).
    pub refused: u64,
}

impl PmtuStats {
    /// Every refusal reason with its count, for Prometheus and `show stats`.
    pub fn refusals(&self) -> [(&'static str, u64); 14] {
        [
            ("disabled", self.disabled),
            ("truncated", self.truncated),
            ("malformed", self.malformed),
            ("bad_checksum", self.bad_checksum),
            ("bad_quote", self.bad_quote),
            ("bogus_address", self.bogus_address),
            ("not_forwarded", self.not_forwarded),
            ("above_mtu", self.above_mtu),
            ("not_lower", self.not_lower),
            ("rate_limited_source", self.rate_limited_source),
            ("rate_limited_destination", self.rate_limited_destination),
            ("quota", self.quota),
            ("locked", self.locked),
            ("refused", self.refused),
        ]
    }
}

/// The learner: its settings, rate limits and counts.
#[derive(Debug)]
pub struct Learner {
    settings: PmtuSettings,
    sources: Limiter,
    destinations: Limiter,
    pub stats: PmtuStats,
}

/// IP and TCP headers: what an MSS leaves of the MTU.
fn tcp_overhead(dest: IpAddr) -> u32 {
    if dest.is_ipv4() {
        40
    } else {
        60
    }
}

impl Learner {
    pub fn new(settings: PmtuSettings, now: Instant) -> Learner {
        Learner {
            settings,
            sources: Limiter::new(settings.per_source, now),
            destinations: Limiter::new(settings.per_destination, now),
            stats: PmtuStats::default(),
        }
    }

    pub fn settings(&self) -> PmtuSettings {
        self.settings
    }

    /// New settings (a reload); the rate limiters start afresh when theirs change.
    pub fn set_settings(&mut self, settings: PmtuSettings, now: Instant) {
        if settings.per_source != self.settings.per_source {
            self.sources = Limiter::new(settings.per_source, now);
        }
        if settings.per_destination != self.settings.per_destination {
            self.destinations = Limiter::new(settings.per_destination, now);
        }
        self.settings = settings;
    }

    /// A record of the ring that is not a `PmtuEvent`.
    pub fn count_malformed(&mut self) {
        self.stats.reports += 1;
        self.stats.malformed += 1;
    }

    /// Judges one report by the rule above and learns it when it passes.
    pub fn learn<S: MapSink>(&mut self, rib: &mut Rib<S>, event: &PmtuEvent, expires: Duration, now: Instant) {
        self.stats.reports += 1;
        if self.settings.learning == PmtuLearning::Off {
            self.stats.disabled += 1;
            return;
        }
        let report = match pmtu_report::parse(event) {
            Ok(r) => r,
            Err(refusal) => {
                let s = &mut self.stats;
                *match refusal {
                    Refusal::Truncated => &mut s.truncated,
                    Refusal::Malformed => &mut s.malformed,
                    Refusal::BadChecksum => &mut s.bad_checksum,
                    Refusal::BadQuote => &mut s.bad_quote,
                    Refusal::BogusAddress => &mut s.bogus_address,
                } += 1;
                tracing::debug!(?refusal, ingress = event.ingress, "path MTU report refused");
                return;
            }
        };
        let Some(mtu) = self.judge(rib, &report, now) else { return };
        let dest = report.quoted_dst;
        if !self.sources.allow(report.reporter, false, now) {
            self.stats.rate_limited_source += 1;
            return;
        }
        if !self.destinations.allow(dest, false, now) {
            self.stats.rate_limited_destination += 1;
            return;
        }
        if !rib.has_learned(dest) && rib.learned_copies() >= self.settings.max_learned as usize {
            self.stats.quota += 1;
            return;
        }
        let expires = (!expires.is_zero()).then(|| now + expires);
        let result = rib
            .cow_metrics(dest, Rtax::Mtu, mtu, Source::Learned, expires, now)
            .and_then(|()| rib.cow_metrics(dest, Rtax::Advmss, mtu - tcp_overhead(dest), Source::Learned, expires, now));
        match result {
            Ok(()) => {
                self.stats.learned += 1;
                tracing::info!(%dest, mtu, reporter = %report.reporter, "path MTU learned");
            }
            Err(CowError::Locked { .. }) => self.stats.locked += 1,
            Err(e) => {
                self.stats.refused += 1;
                tracing::debug!(%dest, mtu, error = %e, "path MTU not learned");
            }
        }
    }

    /// Rules 6 and 7: the flow's path through here, and the MTU to learn.
    fn judge<S: MapSink>(&mut self, rib: &Rib<S>, r: &Report, now: Instant) -> Option<u32> {
        let towards_dst = rib.forwarding_path(r.quoted_dst).filter(|p| p.kind == RouteKind::Unicast && p.egress.contains(&r.ingress));
        let towards_src = rib
            .forwarding_path(r.quoted_src)
            .filter(|p| p.kind == RouteKind::Unicast && !p.egress.is_empty() && !p.egress.contains(&r.ingress));
        let (Some(path), Some(_)) = (towards_dst, towards_src) else {
            self.stats.not_forwarded += 1;
            tracing::debug!(dest = %r.quoted_dst, src = %r.quoted_src, ingress = r.ingress, "path MTU report for a flow not forwarded that way");
            return None;
        };
        if path.mtu != 0 && r.mtu > path.mtu {
            self.stats.above_mtu += 1;
            return None;
        }
        let floor = if r.quoted_dst.is_ipv4() { MIN_PMTU_V4 } else { MIN_PMTU_V6 };
        let mtu = r.mtu.max(floor);
        let current =
            rib.destination_metrics(r.quoted_dst, now).and_then(|m| m.values.get("mtu").copied()).filter(|m| *m != 0).unwrap_or(path.mtu);
        if current != 0 && mtu >= current {
            self.stats.not_lower += 1;
            return None;
        }
        Some(mtu)
    }
}

#[cfg(test)]
#[path = "pmtu_tests.rs"]
mod tests;
