//! A TLS server for hyper and axum that applies a connection lifecycle policy and ends
//! every connection with close_notify.
//!
//! ```no_run
//! use std::{convert::Infallible, sync::Arc, time::Duration};
//! use conn_lifecycle_hyper::{signal, Handle, Policy, Server};
//!
//! # async fn run(tls: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
//! // Any tower service works; an axum `Router` is one.
//! let app = tower::service_fn(|_request: http::Request<hyper::body::Incoming>| async {
//!     Ok::<_, Infallible>(http::Response::new(String::from("hello\n")))
//! });
//!
//! let policy = Policy::builder()
//!     .idle_timeout(Duration::from_secs(30))
//!     .max_requests(10_000)
//!     .grace(Duration::from_secs(5))
//!     .build();
//! let handle = Handle::new();
//! // SIGTERM or Ctrl-C: graceful shutdown; a second one: stop at once.
//! signal::spawn_handler(handle.clone());
//!
//! let summary = Server::bind("0.0.0.0:8443", tls)
//!     .await?
//!     .policy(policy)
//!     .handle(handle)
//!     .serve(app)
//!     .await?;
//! println!("{summary}");
//! # Ok(())
//! # }
//! ```
//!
//! # What a connection goes through
//!
//! 1. The TLS handshake, bounded by [`Server::handshake_timeout`].
//! 2. Serving, with hyper-util's auto connection (HTTP/1.1 and HTTP/2 on one port), until the
//!    client leaves or a trigger of the [`Policy`] fires: idle, max age, max requests, a
//!    drain ([`Handle::drain`], [`Handle::drain_all`]) or the server's shutdown.
//! 3. Closing gracefully: HTTP/1 stops keep-alive (an idle connection closes at once, a busy
//!    one after its response, which carries `Connection: close`); HTTP/2 sends GOAWAY and
//!    finishes its open streams. This phase ends at the grace deadline at the latest.
//! 4. The close sequence on the TLS stream, taken back from hyper however it ended:
//!    close_notify, bounded, then the policy's [`PeerClose`] step. A response framed by the
//!    end of the connection that was cut at the deadline is closed abortively instead, so
//!    the client cannot take it for a whole one.
//!
//! # The shutdown
//!
//! A signal (see [`Server::with_graceful_shutdown`] and [`signal`]) or [`Handle::shutdown`]
//! stops the accept loop, starts step 3 on every connection, and makes
//! [`Server::serve`] resolve with a [`Summary`] once the last connection has closed. The
//! whole shutdown ends within grace + close_notify timeout + 250 ms, whatever the peers do:
//! a client that never reads, never answers a PING or stalls its handshake cannot hold it.
//! [`Handle::stop`] ends it at once, still with close_notify on every connection.
//!
//! # Logs and counters
//!
//! Every connection runs in a `connection` span (its `id`, `peer` and `alpn`), at `DEBUG`
//! unless [`Server::connection_span_level`] says otherwise; closes are logged at `DEBUG`
//! with their reason and outcome, and a busy connection closed at its deadline at `WARN`.
//! [`Handle::stats`] counts connections by close reason and outcome, and requests.
//!
//! # With your own accept loop
//!
//! The pieces are in `conn-lifecycle`: a `Lifecycle` per server, a `Connection` per
//! accepted stream, its IO wrapper and tower layer, its close trigger and close sequence.
//! This crate is one way to put them together; its `connection.rs` is a short template.

#![forbid(unsafe_code)]
// Library code handles every error; tests (allowed in clippy.toml) may unwrap.
#![warn(clippy::unwrap_used)]

mod connection;
mod handle;
mod server;
pub mod signal;
mod summary;

pub use conn_lifecycle::{
    CloseOutcome, CloseReason, CloseSequence, PeerClose, Policy, PolicyBuilder, StatsSnapshot,
};

pub use crate::handle::Handle;
pub use crate::server::{BoxError, Server};
pub use crate::summary::Summary;
