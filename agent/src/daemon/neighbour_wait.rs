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
        let Some(addr) = key.gateway.or_else(|| neighbour_queue::frame_destination(&miss.frame)) else {
            self.waiting.stats.dropped += 1;
            return;
        };
        if self.rib.usable_nexthop(key.ifindex, addr).is_some() {
            // Resolved meanwhile: waits for nothing.
            self.waiting.hold((key.ifindex, addr), miss.frame, now);
            self.release_resolved();
            return;
        }
        if self.waiting.hold((key.ifindex, addr), miss.frame, now) {
            let handle = self.mirror.handle.clone();
            tokio::spawn(async move {
                if let Err(e) = netlink_mirror::resolve(handle, key.ifindex, addr).await {
                    tracing::debug!(error = %format!("{e:#}"), "neighbour resolution request");
                }
            });
        }
    }

    /// Sends the frames of every neighbour that is now resolved.
    pub(super) fn release_resolved(&mut self) {
        for key in self.waiting.keys() {
            let Some(nh) = self.rib.usable_nexthop(key.0, key.1) else { continue };
            for frame in self.waiting.release(&key) {
                let sent = match (&self.sender, neighbour_queue::forward_frame(&frame, &nh, nh.mtu)) {
                    (Some(sender), Some(f)) => sender.send(nh.ifindex, &f).is_ok(),
                    _ => false,
                };
                if !sent {
                    self.waiting.stats.dropped += 1;
                }
            }
        }
    }
}
