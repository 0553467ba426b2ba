//! A cloneable handle that controls a running server from the outside.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use conn_lifecycle::{Lifecycle, StatsSnapshot};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Controls a server: graceful shutdown, stop, drain, and a look at its counters.
///
/// Make one with [`Handle::new`], give a clone to [`Server::handle`], and keep the others
/// wherever the decisions are taken (a signal handler, an admin endpoint, a readiness probe).
/// Cloning shares everything. Calls made before the server starts serving are remembered
/// for shutdown and stop; drains before the start do nothing, as there is nothing to drain.
///
/// [`Server::handle`]: crate::Server::handle
#[derive(Clone, Debug, Default)]
pub struct Handle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `Some(grace)` once a graceful shutdown was asked for; `None` in the grace means "the
    /// policy's".
    shutdown: watch::Sender<Option<Option<Duration>>>,
    stop: CancellationToken,
    running: OnceLock<Lifecycle>,
}

impl Handle {
    /// A handle not yet attached to a server.
    pub fn new() -> Self {
        Handle::default()
    }

    /// Starts a graceful shutdown with the policy's grace period.
    ///
    /// The server stops accepting; HTTP/1 connections close once idle or after their
    /// current response, HTTP/2 ones after GOAWAY and their open streams; whatever is left
    /// when the grace period ends is closed anyway. Calling it again does nothing.
    pub fn shutdown(&self) {
        self.request_shutdown(None);
    }

    /// Starts a graceful shutdown whose in-flight requests may run for `grace`.
    ///
    /// Zero closes every connection at once (with close_notify, after asking the HTTP
    /// layer to stop). Only the first request counts.
    pub fn shutdown_with_grace(&self, grace: Duration) {
        self.request_shutdown(Some(grace));
    }

    fn request_shutdown(&self, grace: Option<Duration>) {
        self.inner.shutdown.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(grace);
            }
            first
        });
    }

    /// Stops at once: every connection is closed now, in-flight requests included, each
    /// still with a bounded close_notify.
    pub fn stop(&self) {
        self.inner.stop.cancel();
        // Every connection's close trigger fires on the shutdown; each then sees the stop.
        if let Some(lifecycle) = self.inner.running.get() {
            lifecycle.shutdown();
        }
    }

    /// Asks every connection open now to close gracefully; the server keeps accepting.
    pub fn drain_all(&self) {
        if let Some(lifecycle) = self.inner.running.get() {
            lifecycle.drain_all();
        }
    }

    /// Asks the connection with this id (as in its tracing span) to close gracefully.
    /// Returns false if no such connection is open.
    pub fn drain(&self, id: u64) -> bool {
        self.inner
            .running
            .get()
            .is_some_and(|lifecycle| lifecycle.drain(id))
    }

    /// The server's counters now; all zero before it starts.
    ///
    /// The request counts are summed over the open connections: meant for metrics and admin
    /// endpoints, not for every request (see [`Lifecycle::stats`]).
    pub fn stats(&self) -> StatsSnapshot {
        self.inner
            .running
            .get()
            .map(Lifecycle::stats)
            .unwrap_or_default()
    }

    /// How many connections are open now, closing ones included. Cheap.
    pub fn open_connections(&self) -> u64 {
        self.inner
            .running
            .get()
            .map_or(0, Lifecycle::open_connections)
    }

    /// Whether a shutdown has begun: what a readiness probe should report as "not ready".
    pub fn is_draining(&self) -> bool {
        self.inner.shutdown.borrow().is_some() || self.inner.stop.is_cancelled()
    }

    // The server's side.

    pub(crate) fn attach(&self, lifecycle: Lifecycle) -> bool {
        self.inner.running.set(lifecycle).is_ok()
    }

    pub(crate) async fn shutdown_requested(&self) -> Option<Duration> {
        let mut rx = self.inner.shutdown.subscribe();
        let grace = match rx.wait_for(Option::is_some).await {
            Ok(grace) => grace.flatten(),
            // The sender lives in `self`; it cannot be gone.
            Err(_) => None,
        };
        grace
    }

    pub(crate) fn stop_token(&self) -> &CancellationToken {
        &self.inner.stop
    }
}
