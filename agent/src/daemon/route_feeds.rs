//! Route feeds other than the kernel's netlink: FRR's FPM stream. Its
//! frames become route changes through the same seam as the kernel FIB's
//! (`fib::source::Feed`), applied by the same door (`apply_route`).

use super::Daemon;
use crate::fib::fpm::{self, FpmInput, SharedFpmRoutes};
use anyhow::{bail, Context as _, Result};
use std::{net::SocketAddr, time::Instant};
use tokio::sync::mpsc;

/// Listens for zebra's FPM connection on `addr`: loopback only unless
/// `allow_remote` (FPM has no authentication).
pub(super) async fn listen_fpm(addr: SocketAddr, allow_remote: bool, routes: SharedFpmRoutes) -> Result<mpsc::Receiver<FpmInput>> {
    if !addr.ip().is_loopback() && !allow_remote {
        bail!("--fpm-listen {addr}: not a loopback address; FPM has no authentication, so anyone who connects writes routes (add --fpm-allow-remote to mean it)");
    }
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("FPM: listening on {addr}"))?;
    tracing::info!(%addr, "FPM: waiting for zebra (dplane_fpm_nl)");
    // Each item is one read's changes (thousands): a few in flight are plenty.
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(fpm::serve(listener, tx, routes));
    Ok(rx)
}

impl Daemon {
    /// One thing the FPM listener heard (its feed has taken it already).
    pub(super) fn fpm_input(&mut self, input: FpmInput, now: Instant) {
        match input {
            FpmInput::Connected(peer) => {
                let Some(mut feed) = self.feed.fpm() else { return };
                feed.stats.listen = self.opts.fpm_listen.to_string();
                tracing::info!(%peer, stale = feed.sweep_pending(), "FPM: zebra connected; what it does not resend is swept once it goes quiet");
            }
            // Made before a reconcile that read the feed after them: in the RIB already.
            FpmInput::Changes(number, _) if number <= self.fpm_applied => {}
            FpmInput::Changes(number, changes) => {
                for change in changes {
                    self.apply_route(change, now);
                }
                self.fpm_applied = number;
            }
            FpmInput::Error(e) => tracing::warn!(error = %e, "FPM: bad frame; connection closed (zebra reconnects and replays)"),
            FpmInput::Closed => tracing::warn!("FPM: zebra disconnected; its routes stay until it reconnects and replays"),
        }
    }

    /// After a reconnect, once zebra's replay has gone quiet: what it did
    /// not resend is removed.
    pub(super) fn sweep_fpm(&mut self, now: Instant) {
        let Some(mut feed) = self.feed.fpm() else { return };
        // Not while changes made before the sweep's are still on their way.
        let applied = feed.handed_over == self.fpm_applied;
        if !(applied && feed.sweep_pending() && feed.quiet.for_at_least(now, self.opts.fpm_sweep_after) && feed.stats.connected) {
            return;
        }
        let changes = feed.sweep();
        drop(feed);
        tracing::info!(removed = changes.len(), "FPM: replay done; routes zebra did not resend removed");
        for change in changes {
            self.apply_route(change, now);
        }
    }
}
