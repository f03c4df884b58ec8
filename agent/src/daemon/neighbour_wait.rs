//! Frames whose next hop has no neighbour yet: they wait in the agent's
//! queue while the kernel resolves it, and leave once it is known.

use super::Daemon;
use crate::{
    fib::netlink_mirror,
    slow_path::{neighbour_queue, NeighbourMiss},
};
use std::time::Instant;

impl Daemon {
    /// A frame whose neighbour is unknown waits in its queue; the first one
    /// has the kernel resolve the neighbour (over netlink).
    pub(super) fn hold_for_neighbour(&mut self, miss: NeighbourMiss, now: Instant) {
        let Some(key) = self.rib.nexthop_key(miss.nexthop) else {
            self.waiting.stats.dropped += 1;
            return;
        };
        // A gateway's next hop waits for the gateway; a connected route's for
        // the packet's own destination.
        let Some(addr) = key.gateway.or_else(|| neighbour_queue::frame_destination(&miss.held.frame)) else {
            self.waiting.stats.dropped += 1;
            return;
        };
        self.hold_at((key.ifindex, addr), miss.held, now);
    }

    /// `held` waits for neighbour `key`; the first one has the kernel
    /// resolve it.
    pub(super) fn hold_at(&mut self, key: neighbour_queue::NeighbourKey, held: neighbour_queue::Held, now: Instant) {
        let (ifindex, addr) = key;
        if self.rib.usable_nexthop(ifindex, addr).is_some() {
            // Resolved meanwhile: waits for nothing.
            self.waiting.hold(key, held, now);
            self.release_resolved(now);
            return;
        }
        if self.waiting.hold(key, held, now) {
            let handle = self.mirror.handle.clone();
            tokio::spawn(async move {
                if let Err(e) = netlink_mirror::resolve(handle, ifindex, addr).await {
                    tracing::debug!(error = %format!("{e:#}"), "neighbour resolution request");
                }
            });
        }
    }

    /// Releases the frames of every neighbour that is now resolved, each by
    /// the fast path's rules with its destination's metrics as they are now
    /// (no route: the device's MTU). Without a frame sender they are dropped,
    /// counted. The errors due about them are routed.
    pub(super) fn release_resolved(&mut self, now: Instant) {
        for key in self.waiting.keys() {
            let Some(nh) = self.rib.usable_nexthop(key.0, key.1) else { continue };
            for held in self.waiting.release(&key) {
                let Some(egress) = &self.egress else {
                    self.waiting.stats.send_failed += 1;
                    continue;
                };
                let metrics =
                    neighbour_queue::frame_destination(&held.frame).and_then(|d| self.rib.forwarding_metrics(d)).unwrap_or_default();
                if let Some(kind) = egress.release(&held, &nh, &metrics, &mut self.waiting.stats) {
                    self.send_error(held, kind, now);
                }
            }
        }
    }
}
