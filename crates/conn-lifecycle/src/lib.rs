//! Connection lifecycle policy for TLS servers: idle timeouts, max age, max requests,
//! draining and shutdown, and a bounded close sequence that ends every connection with
//! close_notify.
//!
//! ```no_run
//! use std::time::Duration;
//! use conn_lifecycle::{CloseReason, Lifecycle, PeerClose, Policy};
//! use tokio::net::TcpListener;
//!
//! # async fn run(acceptor: tokio_rustls::TlsAcceptor) -> std::io::Result<()> {
//! let policy = Policy::builder()
//!     .idle_timeout(Duration::from_secs(30))
//!     .max_requests(1000)
//!     .grace(Duration::from_secs(5))
//!     .peer_close(PeerClose::wait(Duration::from_millis(500)))
//!     .build();
//! let lifecycle = Lifecycle::new(policy);
//! let listener = TcpListener::bind("127.0.0.1:8443").await?;
//!
//! loop {
//!     let (tcp, _peer) = listener.accept().await?;
//!     let conn = lifecycle.connection();
//!     let acceptor = acceptor.clone();
//!     tokio::spawn(async move {
//!         let Ok(tls) = acceptor.accept(tcp).await else { return };
//!         let (io, returned) = conn.wrap_io(tls);
//!         // Serve `io` with your protocol, with `conn.layer()` around your service,
//!         // until it ends or the policy says to close. The trigger goes second, in the
//!         // same task: it dates the activity that the reads of each wake recorded.
//!         let reason = tokio::select! {
//!             biased;
//!             _ = serve(io) => CloseReason::PeerClosed,
//!             reason = conn.close_trigger() => reason,
//!         };
//!         // The stream comes back however serving ended; close it with close_notify.
//!         if let Some(tls) = returned.await {
//!             conn.close(tls, reason, None).await;
//!         }
//!     });
//! }
//! # }
//! # async fn serve<T>(_io: T) {}
//! ```
//!
//! (`conn-lifecycle-hyper` runs all of this for hyper and axum, with a graceful phase before
//! the close.)
//!
//! # Why close_notify matters
//!
//! TLS runs over TCP, and anyone on the path can forge a TCP FIN. So TLS asks each side to
//! send a `close_notify` alert before it closes: a reader that sees the end of the stream
//! without one cannot tell a complete message from one an attacker cut short (a truncation
//! attack). That is what "peer closed connection without sending TLS close_notify" means
//! when rustls reports it, and what Python's `ssl` raises with `suppress_ragged_eofs=False`.
//! HTTP/1.1 with `Content-Length` or chunking can detect a cut body by itself; a response
//! framed by the end of the connection (HTTP/1.0, or no length) relies on close_notify alone.
//!
//! # Why hyper alone does not always send it
//!
//! tokio-rustls sends close_notify from `poll_shutdown`. hyper calls it when a connection
//! ends cleanly, but on its error paths (a parse error, its own header read timeout, a
//! graceful shutdown before the client sent anything) it simply drops the IO, and a dropped
//! TLS stream sends nothing. [`TrackedIo`] hands the stream back whenever it is dropped, so
//! [`Connection::close`] can close every connection the same way.
//!
//! # Why every wait is bounded
//!
//! Sending close_notify is a write: a peer that does not read can block it forever. Waiting
//! for the peer's close_notify can also last forever. The [`CloseSequence`] bounds each step
//! and reports a [`CloseOutcome`] instead of failing.
//!
//! # What each policy trades
//!
//! - Idle timeout: frees resources held by clients that keep connections open and unused, at
//!   the cost of a new handshake for a client that comes back later.
//! - Header read timeout: ends HTTP/1 clients that begin a request and send its head too
//!   slowly (every byte counts as activity, so the idle timeout cannot), at the cost of
//!   failing a genuinely slow client on a poor link.
//! - Max age (with jitter) and max requests: move long-lived clients to new connections (for
//!   load balancing or key rotation), spreading the reconnects.
//! - Grace: how long in-flight requests may finish once a close starts. Longer is kinder to
//!   slow responses; shorter makes deploys faster.
//! - [`PeerClose`]: what to do after our close_notify; close at once, wait for the peer's
//!   close_notify (a full bidirectional close), or linger so that unread input does not turn
//!   the close into a TCP reset. See its docs.
//!
//! # What counts as in flight
//!
//! A request is in flight from the moment the service is called until its response body is
//! dropped, not until the handler returns: a streaming response keeps its connection busy
//! and not idle while the application produces it. A response that waits on the peer (a
//! client that stops reading) does not, or such a client could hold a connection forever.
//! See [`InFlight`] and [`PolicyBuilder::idle_timeout`].

#![forbid(unsafe_code)]
// Library code handles every error; tests (allowed in clippy.toml) may unwrap.
#![warn(clippy::unwrap_used)]

mod close;
mod connection;
pub mod in_flight;
mod io;
mod lifecycle;
mod policy;
mod reason;
mod stats;
mod trigger;

pub use crate::close::{
    abort, Abort, CloseReport, CloseSequence, PeerClose, DEFAULT_CLOSE_NOTIFY_TIMEOUT,
    DEFAULT_MAX_DISCARD,
};
pub use crate::connection::Connection;
pub use crate::in_flight::{InFlight, InFlightBody, InFlightLayer};
pub use crate::io::{ReturnedIo, TrackedIo};
pub use crate::lifecycle::Lifecycle;
pub use crate::policy::{Policy, PolicyBuilder};
pub use crate::reason::{CloseOutcome, CloseReason};
pub use crate::stats::StatsSnapshot;
pub use crate::trigger::CloseTrigger;
