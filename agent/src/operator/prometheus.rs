//! The Prometheus text endpoint (`--metrics-listen ADDR`, opt-in): `GET
//! /metrics` renders the agent's `Stats` (asked of the daemon loop, like the
//! control socket does) in the text exposition format 0.0.4.

use crate::operator::control::{Call, Request};
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

fn u(v: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

fn gauge<'a>(name: &'a str, help: &'a str, value: u64) -> Family<'a> {
    Family { name, kind: "gauge", help, samples: vec![(String::new(), value)] }
}

fn counter<'a>(name: &'a str, help: &'a str, value: u64) -> Family<'a> {
    Family { name, kind: "counter", help, samples: vec![(String::new(), value)] }
}

/// Renders the daemon's `Stats` answer.
pub fn render(stats: &serde_json::Value) -> String {
    let by_reason = |field: &str| -> Vec<(String, u64)> {
        stats["packets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (format!("{{reason=\"{}\"}}", r["reason"].as_str().unwrap_or("?")), r[field].as_u64().unwrap_or(0)))
            .collect()
    };
    let cow_ops = ["cows", "writes_in_place", "copies_replaced", "destroys", "expirations", "failures"];
    let families = [
        Family {
            name: "cowroute_packets_total",
            kind: "counter",
            help: "Frames by the fast path's verdict reason.",
            samples: by_reason("packets"),
        },
        Family {
            name: "cowroute_bytes_total",
            kind: "counter",
            help: "Bytes by the fast path's verdict reason.",
            samples: by_reason("bytes"),
        },
        gauge("cowroute_routes", "Routes in the agent's table.", u(stats, &["routes"])),
        gauge("cowroute_local_addresses", "The router's own addresses (local host entries).", u(stats, &["local_addresses"])),
        gauge("cowroute_neighbour_hosts", "Host entries of neighbours under connected routes.", u(stats, &["neighbour_hosts"])),
        gauge("cowroute_nexthops", "Next hops in NEXTHOPS.", u(stats, &["nexthops"])),
        gauge("cowroute_nexthops_resolved", "Next hops with a usable neighbour and link.", u(stats, &["nexthops_resolved"])),
        gauge("cowroute_gateways_unresolved", "Gateways whose neighbour is not known yet.", u(stats, &["gateways_unresolved"])),
        gauge("cowroute_nexthop_groups", "ECMP groups in NH_GROUPS.", u(stats, &["nexthop_groups"])),
        gauge("cowroute_metrics_ro_slots_in_use", "Shared METRICS_RO slots referenced.", u(stats, &["metrics_ro_in_use"])),
        gauge(
            "cowroute_metrics_ro_references",
            "References to shared metric slots (sum of refcounts).",
            u(stats, &["metrics_ro_references"]),
        ),
        gauge("cowroute_metrics_ro_quarantined", "Freed METRICS_RO slots in their grace period.", u(stats, &["metrics_ro_quarantined"])),
        gauge("cowroute_metrics_rw_slots_in_use", "Private METRICS_RW slots in use.", u(stats, &["metrics_rw_in_use"])),
        gauge("cowroute_metrics_rw_quarantined", "Freed METRICS_RW slots in their grace period.", u(stats, &["metrics_rw_quarantined"])),
        gauge("cowroute_metrics_rw_capacity", "Size of the METRICS_RW pool.", u(stats, &["metrics_rw_capacity"])),
        gauge("cowroute_dir24_indexed_prefixes", "IPv4 prefixes up to /24 the DIR-24 index answers for.", u(stats, &["dir24", "indexed"])),
        gauge(
            "cowroute_dir24_unindexed_prefixes",
            "IPv4 prefixes up to /24 left to the trie: ROUTES_V4_DIR24_ENTRIES was full.",
            u(stats, &["dir24", "unindexed_now"]),
        ),
        counter("cowroute_dir24_full_total", "Times a prefix found ROUTES_V4_DIR24_ENTRIES full.", u(stats, &["dir24", "full_events"])),
        gauge(
            "cowroute_dir24_blocks_to_trie",
            "/24 blocks holding a longer prefix, whose lookups go to the trie.",
            u(stats, &["dir24", "blocks_to_trie"]),
        ),
        Family {
            name: "cowroute_cow_operations_total",
            kind: "counter",
            help: "Copy-on-write engine operations (failures: pool exhausted).",
            samples: cow_ops.iter().map(|op| (format!("{{op=\"{op}\"}}"), u(stats, &["cow", op]))).collect(),
        },
        counter("cowroute_netlink_events_total", "Netlink events applied.", u(stats, &["netlink", "events"])),
        counter("cowroute_netlink_errors_total", "Netlink events the maps could not carry.", u(stats, &["netlink", "errors"])),
        counter("cowroute_netlink_overruns_total", "Netlink socket overruns (ENOBUFS).", u(stats, &["netlink", "overruns"])),
        counter("cowroute_netlink_resyncs_total", "Full resyncs from a fresh dump.", u(stats, &["netlink", "resyncs"])),
        counter(
            "cowroute_pmtu_reports_total",
            "Fragmentation Needed / Packet Too Big seen passing through.",
            u(stats, &["pmtu", "reports"]),
        ),
        counter("cowroute_pmtu_learned_total", "Destinations whose MTU was lowered by a report.", u(stats, &["pmtu", "learned"])),
        counter("cowroute_neighbour_queue_held_total", "Packets held for an unresolved neighbour.", u(stats, &["neighbour_queue", "held"])),
        counter(
            "cowroute_neighbour_queue_released_total",
            "Held packets sent once the neighbour resolved.",
            u(stats, &["neighbour_queue", "released"]),
        ),
        counter(
            "cowroute_neighbour_queue_timed_out_total",
            "Held packets dropped: the neighbour never resolved.",
            u(stats, &["neighbour_queue", "timed_out"]),
        ),
        counter(
            "cowroute_neighbour_queue_overflowed_total",
            "Packets dropped: the neighbour's queue was full.",
            u(stats, &["neighbour_queue", "overflowed"]),
        ),
        gauge("cowroute_neighbour_queue_waiting", "Packets waiting for a neighbour now.", u(stats, &["neighbour_queue", "waiting"])),
        gauge(
            "cowroute_slowpath_sockets",
            "AF_XDP sockets of the slow path (0: the kernel stack is the slow path).",
            u(stats, &["slow_path", "sockets"]),
        ),
        counter("cowroute_slowpath_frames_total", "Exception frames the slow path received.", u(stats, &["slow_path", "frames"])),
        counter("cowroute_slowpath_icmp_sent_total", "ICMP errors the slow path sent.", u(stats, &["slow_path", "icmp_sent"])),
        counter(
            "cowroute_slowpath_rate_limited_total",
            "ICMP errors held back by the rate limits.",
            u(stats, &["slow_path", "rate_limited"]),
        ),
        counter(
            "cowroute_slowpath_refused_total",
            "Frames that get no ICMP error (errors about errors, group sources, later fragments).",
            u(stats, &["slow_path", "refused"]),
        ),
        counter(
            "cowroute_slowpath_malformed_total",
            "Frames the slow path could not read: dropped.",
            u(stats, &["slow_path", "malformed"]),
        ),
        counter("cowroute_slowpath_tx_full_total", "Replies dropped for want of a TX frame.", u(stats, &["slow_path", "tx_full"])),
        counter(
            "cowroute_slowpath_socket_dropped_total",
            "Exception frames the kernel dropped at a full slow-path socket.",
            u(stats, &["slow_path", "socket_dropped"]),
        ),
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

/// Serves `GET /metrics` until the daemon stops.
pub async fn serve(listener: TcpListener, calls: mpsc::Sender<Call>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let calls = calls.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, calls).await {
                tracing::debug!(error = %e, "metrics endpoint request");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, calls: mpsc::Sender<Call>) -> Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    // The request head; nothing after it is needed.
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
        let got = stream.read(&mut buf[n..]).await?;
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
        ("200 OK", render(&response.data.unwrap_or_default()))
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

#[cfg(test)]
mod tests {
    #[test]
    fn renders_families_with_help_type_and_labels() {
        let stats = serde_json::json!({
            "routes": 7, "packets": [{"reason": "forwarded", "packets": 3, "bytes": 180}],
            "cow": {"cows": 2}, "netlink": {"resyncs": 1}
        });
        let text = super::render(&stats);
        assert!(text.contains("# TYPE cowroute_packets_total counter\ncowroute_packets_total{reason=\"forwarded\"} 3\n"), "{text}");
        assert!(text.contains("cowroute_bytes_total{reason=\"forwarded\"} 180\n"));
        assert!(text.contains("# TYPE cowroute_routes gauge\ncowroute_routes 7\n"));
        assert!(text.contains("cowroute_cow_operations_total{op=\"cows\"} 2\n"));
        assert!(text.contains("cowroute_netlink_resyncs_total 1\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
