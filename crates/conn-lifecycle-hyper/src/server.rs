//! The server: accept loop, TLS, hyper-util's auto connection, and the shutdown sequence.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use conn_lifecycle::{CloseReason, Lifecycle, Policy};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{Instrument, Level, Span};

use crate::connection;
use crate::handle::Handle;
use crate::summary::Summary;

/// The error type services and bodies are converted into, as in hyper and tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bounds on a service that [`Server::serve`] accepts, written once for the crate's
/// internal functions. Implemented for every such service.
pub(crate) trait App:
    Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// The response body.
    type Body: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> App for S
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Body = B;
}

/// How long the shutdown waits past its own bound before it gives up on a connection.
const SHUTDOWN_MARGIN: Duration = Duration::from_millis(250);

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A TLS server for any tower service (an axum `Router` included) that applies a
/// [`Policy`] to every connection and ends each one with close_notify.
///
/// HTTP/1.1 and HTTP/2 are served on the same port by hyper-util's auto connection, chosen
/// by ALPN or, without it, by the first bytes. See the crate docs for an example.
pub struct Server {
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    policy: Policy,
    handshake_timeout: Duration,
    max_connections: Option<usize>,
    tcp_nodelay: bool,
    span_level: Level,
    handle: Handle,
    signal: Option<Signal>,
    http: auto::Builder<TokioExecutor>,
}

impl Server {
    /// Binds a listener on `addr` and serves TLS with `tls`.
    ///
    /// If `tls` offers no ALPN protocols, the server offers `h2` and `http/1.1`.
    ///
    /// # Errors
    ///
    /// Returns the error of binding the address.
    pub async fn bind(addr: impl ToSocketAddrs, tls: Arc<ServerConfig>) -> io::Result<Self> {
        Ok(Server::from_listener(TcpListener::bind(addr).await?, tls))
    }

    /// Serves connections accepted on `listener`.
    pub fn from_listener(listener: TcpListener, tls: Arc<ServerConfig>) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        // The policy's header read timeout replaces hyper's, which also closes idle keep-alive
        // connections (its clock runs from the previous response) and costs a timer per
        // request. Off explicitly, so that a timer installed later does not turn it on.
        http.http1().header_read_timeout(None);
        // For HTTP/2 keep-alive pings, should they be turned on through `http_builder`.
        http.http2().timer(TokioTimer::new());
        Server {
            listener,
            tls: with_default_alpn(tls),
            policy: Policy::default(),
            handshake_timeout: Duration::from_secs(10),
            max_connections: None,
            tcp_nodelay: false,
            span_level: Level::DEBUG,
            handle: Handle::new(),
            signal: None,
            http,
        }
    }

    /// The address the server listens on.
    ///
    /// # Errors
    ///
    /// Returns the error of the underlying `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The lifecycle policy every connection follows. Default: [`Policy::default`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Bounds the TLS handshake. Default: 10 seconds.
    ///
    /// A client that stalls in the handshake is dropped when this runs out, or when a
    /// shutdown's grace period ends if that comes first; it has no TLS session yet, so there
    /// is no close_notify to send. Zero fails every handshake that cannot finish at once.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Caps the connections open at once. Default: `None` (no cap).
    ///
    /// At the cap the server stops accepting; new clients wait in the kernel's listen
    /// backlog (and are refused by the kernel once it is full) until a connection closes.
    /// Zero is treated as one.
    pub fn max_connections(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_connections = max.into().map(|max| max.max(1));
        self
    }

    /// Sets `TCP_NODELAY` on accepted connections. Default: false, as in hyper-util and
    /// tokio.
    ///
    /// With Nagle's algorithm on (the default), many small HTTP/2 responses on one
    /// connection go out in fewer segments, which costs less CPU on both sides; turning it
    /// off sends each write at once, which can lower the latency of small responses that
    /// the HTTP layer writes in more than one piece.
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.tcp_nodelay = enabled;
        self
    }

    /// The level of the span each connection runs in. Default: `DEBUG`.
    ///
    /// The span, named `connection`, carries the connection's `id` (the one
    /// [`Handle::drain`] takes), the `peer` address and the negotiated `alpn`; every event
    /// logged inside the connection, your handlers' included, has it as a parent when it is
    /// enabled. At `INFO` it shows in a default log setup, at a price: with
    /// tracing-subscriber's `fmt` layer, an enabled span costs about 650 bytes per open
    /// connection (measured in `BENCHMARKS.md`), a third of what the whole lifecycle adds
    /// otherwise. A span that the subscriber filters out costs nothing.
    pub fn connection_span_level(mut self, level: Level) -> Self {
        self.span_level = level;
        self
    }

    /// Controls the server through `handle`. Default: a handle of its own, out of reach.
    pub fn handle(mut self, handle: Handle) -> Self {
        self.handle = handle;
        self
    }

    /// Starts a graceful shutdown when `signal` resolves.
    ///
    /// [`shutdown_signal`](crate::signal::shutdown_signal) resolves on SIGTERM or Ctrl-C.
    /// [`Handle::shutdown`] does the same from anywhere.
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.signal = Some(Box::pin(signal));
        self
    }

    /// hyper-util's connection builder, for HTTP options this server does not wrap (window
    /// sizes, max concurrent streams, and so on).
    ///
    /// Leave hyper's HTTP/1 header read timeout off: the policy's
    /// ([`PolicyBuilder::header_read_timeout`]) replaces it, and hyper's would also close
    /// keep-alive connections that wait for their next request, before the idle timeout.
    ///
    /// [`PolicyBuilder::header_read_timeout`]: conn_lifecycle::PolicyBuilder::header_read_timeout
    pub fn http_builder(&mut self) -> &mut auto::Builder<TokioExecutor> {
        &mut self.http
    }

    /// Serves `service` until a shutdown has run to its end, then reports what happened.
    ///
    /// The shutdown, once signalled: stop accepting; every connection starts closing
    /// gracefully; in-flight requests may finish until the grace period ends; each
    /// connection then ends with the close sequence (close_notify, bounded). The whole
    /// shutdown is bounded by grace + close_notify timeout + a small margin, whatever the
    /// peers do.
    ///
    /// # Errors
    ///
    /// Fails at once if `handle` already serves another server. Accept errors are not
    /// returned: they are logged, and the loop backs off and goes on.
    pub async fn serve<S, B>(self, service: S) -> io::Result<Summary>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let lifecycle = Lifecycle::new(self.policy);
        if !self.handle.attach(lifecycle.clone()) {
            return Err(io::Error::other(
                "this handle already controls another server",
            ));
        }
        let shared = Arc::new(Shared {
            acceptor: TlsAcceptor::from(self.tls),
            http: self.http,
            service,
            lifecycle,
            handle: self.handle,
            handshake_timeout: self.handshake_timeout,
            span_level: self.span_level,
            shutdown_grace_end: OnceLock::new(),
            forced: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
        });
        let tracker = TaskTracker::new();
        tracing::info!(addr = ?self.listener.local_addr().ok(), "serving");

        let signal = self
            .signal
            .unwrap_or_else(|| Box::pin(std::future::pending()));
        let grace = accept_loop(
            &shared,
            &tracker,
            self.listener,
            self.max_connections,
            self.tcp_nodelay,
            signal,
        )
        .await;
        Ok(shut_down(&shared, &tracker, grace).await)
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("policy", &self.policy)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_connections", &self.max_connections)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("span_level", &self.span_level)
            .finish_non_exhaustive()
    }
}

/// Accepts until a shutdown is asked for; returns the grace it asked for, if any.
async fn accept_loop<S: App>(
    shared: &Arc<Shared<S>>,
    tracker: &TaskTracker,
    listener: TcpListener,
    max_connections: Option<usize>,
    tcp_nodelay: bool,
    signal: Signal,
) -> Option<Duration> {
    let handle = shared.handle.clone();
    let shutdown = async move {
        tokio::select! {
            grace = handle.shutdown_requested() => grace,
            _ = signal => None,
            _ = handle.stop_token().cancelled() => None,
        }
    };
    tokio::pin!(shutdown);
    let limit = max_connections.map(|max| Arc::new(Semaphore::new(max)));
    let mut backoff = Backoff::default();

    loop {
        // At the cap, wait for a connection to close before accepting another.
        let permit = match &limit {
            Some(limit) => tokio::select! {
                permit = limit.clone().acquire_owned() => permit.ok(),
                grace = &mut shutdown => return grace,
            },
            None => None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            grace = &mut shutdown => return grace,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and the like: the next accept may work once connections close.
                let pause = backoff.next();
                tracing::warn!(%error, pause_ms = pause.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = sleep(pause) => continue,
                    grace = &mut shutdown => return grace,
                }
            }
        };
        backoff = Backoff::default();
        if tcp_nodelay {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        }

        let conn = shared.lifecycle.connection();
        let span = connection_span(shared.span_level, conn.id(), peer);
        // Spawned as it is: a wrapping async block would keep another copy of each argument.
        let task = connection::run(shared.clone(), tcp, conn, permit);
        // A span that the subscriber filters out (the default one, at DEBUG) would still be
        // entered and left at every poll of the task.
        if span.is_disabled() {
            tracker.spawn(task);
        } else {
            tracker.spawn(task.instrument(span));
        }
    }
}

/// The span a connection runs in, at `level`.
fn connection_span(level: Level, id: u64, peer: SocketAddr) -> Span {
    // A span's level is part of its static description, hence one call per level.
    macro_rules! span {
        ($level:expr) => {
            tracing::span!($level, "connection", id, peer = %peer, alpn = tracing::field::Empty)
        };
    }
    match level {
        Level::ERROR => span!(Level::ERROR),
        Level::WARN => span!(Level::WARN),
        Level::INFO => span!(Level::INFO),
        Level::DEBUG => span!(Level::DEBUG),
        _ => span!(Level::TRACE),
    }
}

/// Runs the shutdown: every connection closes, bounded by grace + close_notify timeout.
async fn shut_down<S>(
    shared: &Shared<S>,
    tracker: &TaskTracker,
    grace: Option<Duration>,
) -> Summary {
    let started = Instant::now();
    let policy = shared.lifecycle.policy();
    let grace = grace.unwrap_or(policy.grace());
    let grace_end = *shared.shutdown_grace_end.get_or_init(|| started + grace);
    shared.lifecycle.shutdown();
    tracing::info!(
        open = shared.lifecycle.open_connections(),
        grace_ms = grace.as_millis() as u64,
        "graceful shutdown started"
    );

    tracker.close();
    let bound = grace_end + policy.close().get_close_notify_timeout() + SHUTDOWN_MARGIN;
    tokio::select! {
        biased;
        _ = tracker.wait() => {}
        _ = sleep_until(bound) => {
            shared.handle.stop();
            tracing::warn!(remaining = tracker.len(), "shutdown deadline passed");
        }
    }

    let summary = Summary {
        stats: shared.lifecycle.stats(),
        forced: shared.forced.load(Relaxed),
        abandoned: shared.abandoned.load(Relaxed) + tracker.len() as u64,
        shutdown: started.elapsed(),
    };
    tracing::info!(%summary, "shutdown finished");
    summary
}

/// What every connection task of one server shares.
pub(crate) struct Shared<S> {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) http: auto::Builder<TokioExecutor>,
    pub(crate) service: S,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) handle: Handle,
    pub(crate) handshake_timeout: Duration,
    pub(crate) span_level: Level,
    /// When the shutdown's grace period ends; set when the shutdown starts.
    pub(crate) shutdown_grace_end: OnceLock<Instant>,
    pub(crate) forced: AtomicU64,
    pub(crate) abandoned: AtomicU64,
}

impl<S> Shared<S> {
    /// When a connection that starts closing now for `reason` must stop waiting for its
    /// in-flight requests.
    pub(crate) fn grace_deadline(&self, reason: CloseReason) -> Instant {
        let own = Instant::now() + self.lifecycle.policy().grace();
        match (self.shutdown_grace_end.get(), reason) {
            (Some(end), CloseReason::Shutdown) => *end,
            (Some(end), _) => own.min(*end),
            (None, _) => own,
        }
    }

    /// The outer bound on a connection's close sequence: none in normal operation, the end
    /// of the shutdown while shutting down, and one close_notify timeout after a stop.
    pub(crate) fn close_deadline(&self) -> Option<Instant> {
        let close_notify = self.lifecycle.policy().close().get_close_notify_timeout();
        if self.handle.stop_token().is_cancelled() {
            return Some(Instant::now() + close_notify);
        }
        self.shutdown_grace_end.get().map(|end| *end + close_notify)
    }

    /// Resolves once a shutdown has started and its grace period has ended.
    pub(crate) async fn shutdown_grace_ended(&self) {
        self.lifecycle.shutdown_started().await;
        if let Some(end) = self.shutdown_grace_end.get() {
            sleep_until(*end).await;
        }
    }
}

/// Offers h2 and http/1.1 when the config offers nothing.
fn with_default_alpn(tls: Arc<ServerConfig>) -> Arc<ServerConfig> {
    if !tls.alpn_protocols.is_empty() {
        return tls;
    }
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(tls)
}

/// Exponential pause after accept errors: 5 ms doubling up to one second.
#[derive(Debug)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(5))
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
        pause
    }
}
