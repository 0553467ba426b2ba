//! The server-wide side: one policy, shared counters, and the drain and shutdown signals.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;
use crate::policy::Policy;
use crate::stats::{Stats, StatsSnapshot};

/// What every connection of one server shares: the policy, the counters, and the signals
/// that drain or shut down all connections at once.
///
/// Cloning is cheap and shares everything. A server keeps one and calls
/// [`Lifecycle::connection`] for each connection it accepts.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    policy: Policy,
    stats: Stats,
    next_id: AtomicU64,
    /// Bumped by `drain_all`; each connection remembers the value it started with.
    drain_epoch: watch::Sender<u64>,
    shutdown: CancellationToken,
}

impl Lifecycle {
    /// A lifecycle for connections that follow `policy`.
    pub fn new(policy: Policy) -> Self {
        Lifecycle {
            inner: Arc::new(Inner {
                policy,
                stats: Stats::default(),
                next_id: AtomicU64::new(1),
                drain_epoch: watch::Sender::new(0),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The policy every connection follows.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Registers a new connection, opened now.
    pub fn connection(&self) -> Connection {
        let id = self.inner.next_id.fetch_add(1, Relaxed);
        self.inner.stats.opened();
        Connection::new(id, self.clone())
    }

    /// Asks every connection open now to close gracefully, with [`CloseReason::Drain`].
    ///
    /// Connections opened afterwards are not affected; the server keeps accepting. Use
    /// [`Lifecycle::shutdown`] to stop for good.
    ///
    /// [`CloseReason::Drain`]: crate::CloseReason::Drain
    pub fn drain_all(&self) {
        self.inner.drain_epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Starts the graceful shutdown: every connection, open now or later, closes with
    /// [`CloseReason::Shutdown`]. Calling it again does nothing.
    ///
    /// [`CloseReason::Shutdown`]: crate::CloseReason::Shutdown
    pub fn shutdown(&self) {
        if !self.inner.shutdown.is_cancelled() {
            tracing::debug!("shutdown signalled");
        }
        self.inner.shutdown.cancel();
    }

    /// Whether [`Lifecycle::shutdown`] has been called; what a readiness probe reports.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Resolves once [`Lifecycle::shutdown`] has been called.
    pub async fn shutdown_started(&self) {
        self.inner.shutdown.cancelled().await
    }

    /// The counters, as of now.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    pub(crate) fn counters(&self) -> &Stats {
        &self.inner.stats
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub(crate) fn drain_epoch(&self) -> watch::Receiver<u64> {
        self.inner.drain_epoch.subscribe()
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new(Policy::default())
    }
}
