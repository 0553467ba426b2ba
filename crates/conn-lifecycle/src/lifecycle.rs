//! The server-wide side: one policy, shared counters, and the drain and shutdown signals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, Shared};
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
    drain_epoch: AtomicU64,
    shutdown: CancellationToken,
    /// The connections not yet dropped, for draining one by id and for the request counts
    /// of a snapshot. Locked when a connection opens or is dropped, and by those two calls.
    open: Mutex<Open>,
    /// The highest request count a snapshot reported, so that the count never goes back.
    requests_reported: AtomicU64,
}

#[derive(Debug, Default)]
struct Open {
    by_id: HashMap<u64, Weak<Shared>>,
    /// Requests received on connections since dropped.
    closed_requests: u64,
}

impl Lifecycle {
    /// A lifecycle for connections that follow `policy`.
    pub fn new(policy: Policy) -> Self {
        Lifecycle {
            inner: Arc::new(Inner {
                policy,
                stats: Stats::default(),
                next_id: AtomicU64::new(1),
                drain_epoch: AtomicU64::new(0),
                shutdown: CancellationToken::new(),
                open: Mutex::default(),
                requests_reported: AtomicU64::new(0),
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
        let conn = Connection::new(id, self.clone());
        let weak = Arc::downgrade(&conn.shared);
        self.open().by_id.insert(id, weak);
        conn
    }

    /// Asks the open connection with this id to close gracefully, as [`Connection::drain`]
    /// does. Returns false if no such connection is open.
    pub fn drain(&self, id: u64) -> bool {
        let found = self.open().by_id.get(&id).and_then(Weak::upgrade);
        // Out of the lock: if the connection ended meanwhile, this was the last reference,
        // and dropping it takes the lock.
        let found = found.map(|shared| Connection { shared });
        found.as_ref().map(Connection::drain).is_some()
    }

    /// Asks every connection open now to close gracefully, with [`CloseReason::Drain`].
    ///
    /// Connections opened afterwards are not affected; the server keeps accepting. Use
    /// [`Lifecycle::shutdown`] to stop for good.
    ///
    /// [`CloseReason::Drain`]: crate::CloseReason::Drain
    pub fn drain_all(&self) {
        self.inner.drain_epoch.fetch_add(1, Relaxed);
        self.wake_all();
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
        self.wake_all();
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
    ///
    /// The request counts are summed over the open connections, so this takes a lock and a
    /// little time per open connection: fine for metrics and admin endpoints, not meant for
    /// every request. [`Lifecycle::open_connections`] is the cheap one.
    pub fn stats(&self) -> StatsSnapshot {
        let (live, closed_requests) = {
            let open = self.open();
            let live: Vec<_> = open.by_id.values().filter_map(Weak::upgrade).collect();
            (live, open.closed_requests)
        };
        let in_flight = live.iter().map(|shared| shared.in_flight()).sum();
        let requests = closed_requests + live.iter().map(|s| s.requests()).sum::<u64>();
        // Out of the lock, for the same reason as in `drain`.
        drop(live);
        // A connection dropped just before the lock was taken is in neither sum.
        let reported = self.inner.requests_reported.fetch_max(requests, Relaxed);
        self.inner.stats.snapshot(in_flight, requests.max(reported))
    }

    /// How many connections are open now (opened and not yet closed, closing ones
    /// included), without the cost of a full [`Lifecycle::stats`].
    pub fn open_connections(&self) -> u64 {
        self.inner.stats.open()
    }

    pub(crate) fn counters(&self) -> &Stats {
        &self.inner.stats
    }

    pub(crate) fn drain_epoch(&self) -> u64 {
        self.inner.drain_epoch.load(Relaxed)
    }

    /// Wakes the close trigger of every open connection, so that it looks at the signals.
    ///
    /// Each connection waits on its own notification rather than on server-wide ones: its
    /// close trigger stays small, and is cheap to poll at every wake of its task. A
    /// connection that opens during this call looks at the signals before it first waits.
    fn wake_all(&self) {
        let mut open: Vec<_> = (self.open().by_id.iter())
            .filter_map(|(id, shared)| Some((*id, shared.upgrade()?)))
            .collect();
        // In the order the connections opened, which is about the order their memory was
        // allocated in: the tasks then run through it in order too.
        open.sort_unstable_by_key(|(id, _)| *id);
        // Out of the lock, for the same reason as in `drain`.
        for (_, shared) in open {
            shared.wake_trigger();
        }
    }

    /// Called as a connection's state is dropped: keeps its request count, forgets the rest.
    pub(crate) fn forget(&self, id: u64, requests: u64) {
        let mut open = self.open();
        open.by_id.remove(&id);
        open.closed_requests += requests;
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        // The lock guards plain bookkeeping that a panic cannot leave half done.
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new(Policy::default())
    }
}
