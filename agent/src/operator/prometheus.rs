//! The Prometheus text endpoint (`--metrics-listen ADDR`, opt-in): `GET
//! /metrics` renders the agent's `Stats` (asked of the daemon loop, like the
//! control socket does) in the text exposition format 0.0.4.

use crate::operator::{
    control::{Call, Request},
    stats::{AgentStats, ReasonCount},
};
use anyhow::{Context as _, Result};
use std::{fmt::Write as _, net::SocketAddr};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};

/// One metric family: name, type, help, and samples (labels, value).
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
    samples: Vec<(String, u64)>,
}

fn gauge<'a>(name: &'a str, help: &'a str, value: u64) -> Family<'a> {
    Family { name, kind: "gauge", help, samples: vec![(String::new(), value)] }
}

fn counter<'a>(name: &'a str, help: &'a str, value: u64) -> Family<'a> {
    Family { name, kind: "counter", help, samples: vec![(String::new(), value)] }
}

/// Renders the agent's stats.
pub fn render(s: &AgentStats) -> String {
    let by_reason = |value: fn(&ReasonCount) -> u64| -> Vec<(String, u64)> {
        s.packets.iter().map(|r| (format!("{{reason=\"{}\"}}", r.reason), value(r))).collect()
    };
    let c = &s.rib.cow;
    let fpm = s.fpm.clone().unwrap_or_default();
    let cow_ops = [
        ("cows", c.cows),
        ("writes_in_place", c.writes_in_place),
        ("copies_replaced", c.copies_replaced),
        ("destroys", c.destroys),
        ("expirations", c.expirations),
        ("failures", c.failures),
    ];
    let families = [
        gauge(
            "cowroute_degraded_parts",
            "Optional parts (slow path, frame sender, Prometheus) that failed to start.",
            s.degraded.len() as u64,
        ),
        Family {
            name: "cowroute_packets_total",
            kind: "counter",
            help: "Frames by the fast path's verdict reason.",
            samples: by_reason(|r| r.packets),
        },
        Family {
            name: "cowroute_bytes_total",
            kind: "counter",
            help: "Bytes by the fast path's verdict reason.",
            samples: by_reason(|r| r.bytes),
        },
        gauge("cowroute_routes", "Routes in the agent's table.", s.rib.routes as u64),
        gauge("cowroute_local_addresses", "The router's own addresses (local host entries).", s.rib.local_addresses as u64),
        gauge("cowroute_neighbour_hosts", "Host entries of neighbours under connected routes.", s.rib.neighbour_hosts as u64),
        gauge("cowroute_nexthops", "Next hops in NEXTHOPS.", s.rib.nexthops as u64),
        gauge("cowroute_nexthops_resolved", "Next hops with a usable neighbour and link.", s.rib.nexthops_resolved as u64),
        gauge("cowroute_gateways_unresolved", "Gateways whose neighbour is not known yet.", s.rib.gateways_unresolved as u64),
        gauge("cowroute_nexthop_groups", "ECMP groups in NH_GROUPS.", s.rib.nexthop_groups as u64),
        gauge("cowroute_metrics_ro_slots_in_use", "Shared METRICS_RO slots referenced.", s.rib.metrics_ro_in_use as u64),
        gauge("cowroute_metrics_ro_references", "References to shared metric slots (sum of refcounts).", s.rib.metrics_ro_references),
        gauge("cowroute_metrics_ro_quarantined", "Freed METRICS_RO slots in their grace period.", s.rib.metrics_ro_quarantined as u64),
        gauge("cowroute_metrics_rw_slots_in_use", "Private METRICS_RW slots in use.", s.rib.metrics_rw_in_use as u64),
        gauge("cowroute_metrics_rw_quarantined", "Freed METRICS_RW slots in their grace period.", s.rib.metrics_rw_quarantined as u64),
        gauge("cowroute_metrics_rw_capacity", "Size of the METRICS_RW pool.", s.rib.metrics_rw_capacity as u64),
        gauge("cowroute_dir24_indexed_prefixes", "IPv4 prefixes up to /24 the DIR-24 index answers for.", s.dir24.indexed),
        gauge(
            "cowroute_dir24_unindexed_prefixes",
            "IPv4 prefixes up to /24 left to the trie: ROUTES_V4_DIR24_ENTRIES was full.",
            s.dir24.unindexed_now,
        ),
        counter("cowroute_dir24_full_total", "Times a prefix found ROUTES_V4_DIR24_ENTRIES full.", s.dir24.full_events),
        gauge("cowroute_dir24_blocks_to_trie", "/24 blocks holding a longer prefix, whose lookups go to the trie.", s.dir24.blocks_to_trie),
        Family {
            name: "cowroute_cow_operations_total",
            kind: "counter",
            help: "Copy-on-write engine operations (failures: pool exhausted).",
            samples: cow_ops.iter().map(|(op, n)| (format!("{{op=\"{op}\"}}"), *n)).collect(),
        },
        counter("cowroute_netlink_events_total", "Netlink events applied.", s.netlink.events),
        counter("cowroute_netlink_errors_total", "Netlink events the maps could not carry.", s.netlink.errors),
        counter("cowroute_netlink_overruns_total", "Netlink socket overruns (ENOBUFS).", s.netlink.overruns),
        counter(
            "cowroute_netlink_undecodable_total",
            "Netlink messages that could not be decoded (each answered by a resync).",
            s.netlink.undecodable,
        ),
        counter("cowroute_netlink_resyncs_total", "Full resyncs from a fresh dump.", s.netlink.resyncs),
        gauge(
            "cowroute_routes_retry_pending",
            "Route changes the maps could not carry yet (a full table), retried every second.",
            s.netlink.retry_pending,
        ),
        counter("cowroute_routes_retried_total", "Route changes carried on a retry.", s.netlink.retried),
        counter("cowroute_trie_batches_total", "Batch calls (BPF_MAP_UPDATE_BATCH) of queued trie writes.", s.trie_writes.batches),
        counter("cowroute_trie_batched_routes_total", "Routes the batch calls wrote.", s.trie_writes.batched),
        counter("cowroute_trie_retried_routes_total", "Routes written one by one after a batch call stopped short.", s.trie_writes.retried),
        counter("cowroute_trie_refused_routes_total", "Queued route writes the kernel refused one by one too.", s.trie_writes.refused),
        gauge("cowroute_trie_owed_routes", "Refused routes out of their trie, retried every second.", s.trie_writes.owed),
        gauge("cowroute_fpm_connected", "1 while zebra's FPM connection is up (--source fpm).", fpm.connected as u64),
        counter("cowroute_fpm_connections_total", "FPM connections accepted.", fpm.connections),
        counter("cowroute_fpm_frames_total", "FPM frames applied.", fpm.frames),
        counter("cowroute_fpm_errors_total", "Bad FPM frames (each closes its connection).", fpm.errors),
        counter("cowroute_fpm_swept_total", "Routes and nexthops zebra did not resend after a reconnect, removed.", fpm.swept),
        counter("cowroute_pmtu_reports_total", "Fragmentation Needed / Packet Too Big seen passing through.", s.pmtu.reports),
        counter("cowroute_pmtu_learned_total", "Destinations whose MTU was lowered by a report.", s.pmtu.learned),
        Family {
            name: "cowroute_pmtu_refused_total",
            kind: "counter",
            help: "Path-MTU reports not learned, by reason (validation, rate limits, quota, switch).",
            samples: s.pmtu.refusals().iter().map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n)).collect(),
        },
        counter("cowroute_neighbour_queue_held_total", "Packets held for an unresolved neighbour.", s.neighbour_queue.held),
        counter("cowroute_neighbour_queue_released_total", "Held packets sent once the neighbour resolved.", s.neighbour_queue.released),
        counter(
            "cowroute_neighbour_queue_timed_out_total",
            "Held packets dropped: the neighbour never resolved.",
            s.neighbour_queue.timed_out,
        ),
        counter(
            "cowroute_neighbour_queue_overflowed_total",
            "Packets dropped: the neighbour's queue was full.",
            s.neighbour_queue.overflowed,
        ),
        gauge("cowroute_neighbour_queue_waiting", "Packets waiting for a neighbour now.", s.neighbour_queue.waiting as u64),
        gauge("cowroute_slowpath_sockets", "AF_XDP sockets of the slow path (0: the kernel stack is the slow path).", s.slow_path.sockets),
        counter("cowroute_slowpath_frames_total", "Exception frames the slow path received.", s.slow_path.frames),
        counter("cowroute_slowpath_icmp_sent_total", "ICMP errors the slow path sent.", s.slow_path.icmp_sent),
        counter("cowroute_slowpath_rate_limited_total", "ICMP errors held back by the rate limits.", s.slow_path.rate_limited),
        counter(
            "cowroute_slowpath_refused_total",
            "Frames that get no ICMP error (errors about errors, group sources, later fragments).",
            s.slow_path.refused,
        ),
        counter("cowroute_slowpath_malformed_total", "Frames the slow path could not read: dropped.", s.slow_path.malformed),
        counter(
            "cowroute_slowpath_no_route_back_total",
            "ICMP errors not sent: no route back to their destination, or one to the router itself.",
            s.slow_path.no_route_back,
        ),
        counter("cowroute_slowpath_send_failed_total", "ICMP errors the device refused.", s.slow_path.send_failed),
        counter(
            "cowroute_slowpath_socket_dropped_total",
            "Exception frames the kernel dropped at a full slow-path socket.",
            s.slow_path.socket_dropped,
        ),
        Family {
            name: "cowroute_slowpath_transit_total",
            kind: "counter",
            help: "Packets in transit the slow path finished itself (options, hop-by-hop headers, fragmentation), by outcome.",
            samples: transit_samples(&s.slow_path.transit),
        },
        Family {
            name: "cowroute_slowpath_unserved_total",
            kind: "counter",
            help: "Exceptions for the slow path passed to the kernel instead, by cause (no slow path on the interface, queue beyond the slots or without a socket, too long for a UMEM frame, no headroom).",
            samples: s.unserved.iter().map(|c| (format!("{{cause=\"{}\"}}", c.reason), c.packets)).collect(),
        },
    ];
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, f.kind);
        for (labels, v) in f.samples {
            let _ = writeln!(out, "{}{labels} {v}", f.name);
        }
    }
    out
}

/// Binds the endpoint; an address in use or not ours is a clear error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("--metrics-listen {addr}: cannot listen"))
}

/// Scrapes served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 16;
/// A scrape whose request head has not arrived by then is closed.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `GET /metrics` until the daemon stops. A slow or flooding client
/// costs a connection slot at most; an accept error is waited out.
pub async fn serve(listener: TcpListener, calls: mpsc::Sender<Call>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed; retrying in 100 ms");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let calls = calls.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, calls).await {
                tracing::debug!(error = %e, "metrics endpoint request");
            }
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, calls: mpsc::Sender<Call>) -> Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    // The request head; nothing after it is needed.
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
        let got = tokio::time::timeout_at(deadline, stream.read(&mut buf[n..])).await.context("no request head in time")??;
        if got == 0 {
            break;
        }
        n += got;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let (status, body) = if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
        let (tx, rx) = oneshot::channel();
        calls.send((Request::Stats, tx)).await.context("daemon gone")?;
        let response = rx.await.context("daemon gone")?;
        let stats: AgentStats = serde_json::from_value(response.data.context("the daemon sent no stats")?)?;
        ("200 OK", render(&stats))
    } else {
        ("404 Not Found", "only /metrics is here\n".to_string())
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// The transit counters as labelled samples.
fn transit_samples(t: &crate::slow_path::transit::TransitSnapshot) -> Vec<(String, u64)> {
    [
        ("frames", t.frames),
        ("options_forwarded", t.options_forwarded),
        ("hop_by_hop_forwarded", t.hop_by_hop_forwarded),
        ("source_routes_refused", t.source_routes_refused),
        ("parameter_problems", t.parameter_problems),
        ("header_drops", t.header_drops),
        ("no_route", t.no_route),
        ("fragmented", t.fragmented),
        ("fragments", t.fragments),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{{outcome=\"{k}\"}}"), v))
    .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_families_with_help_type_and_labels() {
        let mut stats = super::AgentStats::default();
        stats.rib.routes = 7;
        stats.packets = vec![super::ReasonCount { reason: "forwarded".into(), packets: 3, bytes: 180 }];
        stats.rib.cow.cows = 2;
        stats.netlink.resyncs = 1;
        stats.netlink.undecodable = 4;
        stats.trie_writes = crate::dataplane::trie_writer::TrieWriteStats { batches: 3, batched: 2048, retried: 1024, refused: 2, owed: 1 };
        let text = super::render(&stats);
        assert!(text.contains("# TYPE cowroute_packets_total counter\ncowroute_packets_total{reason=\"forwarded\"} 3\n"), "{text}");
        assert!(text.contains("cowroute_bytes_total{reason=\"forwarded\"} 180\n"));
        assert!(text.contains("# TYPE cowroute_routes gauge\ncowroute_routes 7\n"));
        assert!(text.contains("cowroute_cow_operations_total{op=\"cows\"} 2\n"));
        assert!(text.contains("cowroute_netlink_resyncs_total 1\n"));
        assert!(text.contains("# TYPE cowroute_netlink_undecodable_total counter\ncowroute_netlink_undecodable_total 4\n"), "{text}");
        assert!(text.contains("# TYPE cowroute_trie_batches_total counter\ncowroute_trie_batches_total 3\n"), "{text}");
        assert!(text.contains("cowroute_trie_batched_routes_total 2048\n") && text.contains("cowroute_trie_retried_routes_total 1024\n"));
        assert!(
            text.contains("cowroute_trie_refused_routes_total 2\n")
                && text.contains("# TYPE cowroute_trie_owed_routes gauge\ncowroute_trie_owed_routes 1\n")
        );
        // One family a name: Prometheus refuses an exposition that repeats one.
        let mut families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let all = families.len();
        families.sort();
        families.dedup();
        assert_eq!(families.len(), all, "a family repeated: {text}");
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
