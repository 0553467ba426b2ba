//! One connection's task: handshake, serve, close gracefully within the grace period, then
//! close the TLS stream with the core's close sequence.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use conn_lifecycle::{CloseOutcome, CloseReason, CloseReport, Connection, ReturnedIo};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_rustls::server::TlsStream;

use crate::server::{App, BoxError, Shared};

/// A connection's TLS stream, boxed once after the handshake.
///
/// The stream is over a kilobyte, and async functions keep a slot for every value they take
/// or move, even after it has moved on; the tracked IO's hand-back channel keeps one too. Boxed,
/// each of those slots is a pointer, which saves several kilobytes per idle connection
/// (measured in `BENCHMARKS.md`) for one allocation per connection.
type Stream = Box<TlsStream<TcpStream>>;

/// Runs one accepted connection to its end. Every path ends in a recorded close. The
/// permit, the connection's place under `Server::max_connections`, is held to the end.
///
/// An async block rather than an async function: a function's future keeps each argument
/// twice, once as passed and once as moved into its body, and tokio sizes task cells in
/// steps of 128 bytes, which those copies were enough to cross.
#[allow(clippy::manual_async_fn)] // On purpose: see above.
pub(crate) fn run<S: App>(
    shared: Arc<Shared<S>>,
    tcp: TcpStream,
    conn: Connection,
    permit: Option<OwnedSemaphorePermit>,
) -> impl Future<Output = ()> {
    async move {
        if let Some(tls) = handshake(&shared, tcp, &conn).await {
            record_alpn(&tls, &conn);
            serve(&shared, tls, &conn).await;
        }
        drop(permit);
    }
}

/// Names the negotiated protocol in the connection's span, and tells the connection when
/// it is HTTP/2 (the header read timeout is for HTTP/1 only).
///
/// A function of its own, so that the name's buffer is not kept in the connection's task
/// for as long as it serves.
fn record_alpn(tls: &Stream, conn: &Connection) {
    let alpn = tls.get_ref().1.alpn_protocol();
    if alpn == Some(b"h2") {
        conn.set_http2();
    }
    let alpn = alpn.map(String::from_utf8_lossy);
    tracing::Span::current().record("alpn", alpn.as_deref().unwrap_or("none"));
}

/// The TLS handshake, bounded by the handshake timeout, by the end of a shutdown's grace
/// period, and by a stop.
async fn handshake<S>(shared: &Shared<S>, tcp: TcpStream, conn: &Connection) -> Option<Stream> {
    let start = Instant::now();
    let accept = timeout(shared.handshake_timeout, shared.acceptor.accept(tcp));
    let error = tokio::select! {
        // A finished handshake wins: that connection can still be closed with close_notify.
        biased;
        result = accept => match result {
            Ok(Ok(tls)) => return Some(Box::new(tls)),
            Ok(Err(error)) => error,
            Err(_elapsed) => io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"),
        },
        _ = shared.shutdown_grace_ended() => io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake unfinished when the shutdown's grace period ended",
        ),
        _ = shared.handle.stop_token().cancelled() => {
            io::Error::new(io::ErrorKind::Interrupted, "server stopped during the TLS handshake")
        }
    };

    // No TLS session exists yet, so there is no close_notify to send.
    tracing::debug!(%error, "TLS handshake failed");
    conn.start_closing(CloseReason::Handshake);
    conn.record_close(CloseReport {
        outcome: CloseOutcome::Dropped,
        elapsed: start.elapsed(),
        discarded: 0,
    });
    None
}

/// Serves HTTP until it ends or the policy closes the connection, then closes the stream.
async fn serve<S: App>(shared: &Shared<S>, tls: Stream, conn: &Connection) {
    let (io, mut returned) = conn.wrap_io(tls);
    let reason = serve_http(shared, io, conn).await;

    // hyper's connection is gone, and with it the IO wrapper: the stream is back already,
    // unless the connection was upgraded (WebSocket) and its handler holds it.
    let stream = match returned.try_take() {
        Some(stream) => Some(stream),
        None => upgraded(shared, conn, returned).await,
    };
    let Some(stream) = stream else {
        tracing::debug!("upgraded connection's handler kept its stream past the deadline");
        shared.abandoned.fetch_add(1, Relaxed);
        return;
    };
    conn.close(stream, reason, shared.close_deadline()).await;
}

/// Waits for an upgraded connection's handler to let its stream go.
///
/// The policy still applies: a trigger (idle, max age, drain, shutdown) starts the grace
/// period; at its end the IO wrapper is interrupted, so that a handler reading or writing
/// sees its stream end and drops it. One close_notify timeout later the server gives up.
async fn upgraded<S>(
    shared: &Shared<S>,
    conn: &Connection,
    mut returned: ReturnedIo<Stream>,
) -> Option<Stream> {
    tracing::debug!("connection upgraded");
    let stop = shared.handle.stop_token();

    // Upgraded -> Closing: the handler let go by itself, or a trigger fired.
    let reason = tokio::select! {
        biased;
        stream = &mut returned => return stream,
        reason = conn.close_trigger() => reason,
        _ = stop.cancelled() => CloseReason::Shutdown,
    };
    conn.start_closing(reason);

    // Closing -> Interrupted: the handler may finish within the grace period.
    if !stop.is_cancelled() {
        tokio::select! {
            biased;
            stream = &mut returned => return stream,
            _ = sleep_until(shared.grace_deadline(reason)) => {}
            _ = stop.cancelled() => {}
        }
    }
    forced(shared, conn, reason, true);
    conn.interrupt_io();

    // Interrupted -> back, or given up.
    let close_notify = shared.lifecycle.policy().close().get_close_notify_timeout();
    tokio::select! {
        biased;
        stream = &mut returned => stream,
        _ = sleep(close_notify) => None,
    }
}

/// The HTTP phases: serving, then closing gracefully within the grace period. Returns the
/// reason the connection ends; hyper's connection (and the IO it holds) is dropped on return.
async fn serve_http<S: App>(
    shared: &Shared<S>,
    io: conn_lifecycle::TrackedIo<Stream>,
    conn: &Connection,
) -> CloseReason {
    let service = TowerToHyperService::new(conn_lifecycle::InFlight::new(
        shared.service.clone(),
        conn.clone(),
    ));
    let http = shared
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(http);
    let stop = shared.handle.stop_token();

    // Serving -> Closing: hyper ended by itself, or a trigger fired. A stop fires the
    // trigger too (it starts the lifecycle's shutdown), so this select polls two futures at
    // every wake of the task rather than three. hyper first: the trigger then dates, in
    // the same wake, the activity and the request head that hyper's reads recorded.
    let reason = tokio::select! {
        biased;
        result = http.as_mut() => return ended_by_itself(result),
        reason = conn.close_trigger() => reason,
    };
    conn.start_closing(reason);
    if stop.is_cancelled() {
        return forced(shared, conn, reason, conn.in_flight() > 0);
    }
    // No request has started, so there is nothing to finish gracefully; and hyper would
    // wait for the rest of a first request's head.
    if reason == CloseReason::HeaderReadTimeout {
        tracing::debug!("request head unfinished at the header read timeout");
        return reason;
    }

    // Closing gracefully: HTTP/1 turns keep-alive off, HTTP/2 sends GOAWAY; in-flight
    // requests may finish until the grace deadline.
    http.as_mut().graceful_shutdown();
    tokio::select! {
        // Finished in time is not forced, even if a deadline passed meanwhile.
        biased;
        result = http.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(error = %error, "HTTP error while closing");
            }
            reason
        }
        _ = sleep_until(shared.grace_deadline(reason)) => forced(shared, conn, reason, true),
        _ = stop.cancelled() => forced(shared, conn, reason, true),
    }
}

/// Counts and reports a close that does not wait for the HTTP layer any longer. `busy`
/// says the HTTP layer still had work: a request in flight, or a response still being
/// written (hyper takes a body of known length at once, so that is not always in flight).
fn forced<S>(
    shared: &Shared<S>,
    conn: &Connection,
    reason: CloseReason,
    busy: bool,
) -> CloseReason {
    let in_flight = conn.in_flight();
    if busy {
        shared.forced.fetch_add(1, Relaxed);
        // With its own id: the connection's span may be filtered out.
        let id = conn.id();
        tracing::warn!(id, reason = %reason, in_flight, "closing a busy connection at its deadline");
    } else {
        tracing::debug!(reason = %reason, "closing an idle connection at its deadline");
    }
    reason
}

/// Why a connection ended when hyper finished it without a trigger.
fn ended_by_itself(result: Result<(), BoxError>) -> CloseReason {
    match result {
        Ok(()) => CloseReason::PeerClosed,
        Err(error) if peer_went_away(&*error) => {
            tracing::debug!(error = %error, "peer closed the connection");
            CloseReason::PeerClosed
        }
        Err(error) => {
            tracing::debug!(error = %error, "HTTP connection error");
            CloseReason::Error
        }
    }
}

/// Whether an error says the peer closed or reset the connection, rather than misbehaved.
fn peer_went_away(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() {
                return true;
            }
        }
        next = error.source();
    }
    false
}
