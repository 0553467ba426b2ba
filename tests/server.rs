//! End-to-end: the adapter over real TLS and real sockets, HTTP/1.1 and HTTP/2. Every
//! trigger ends in close_notify seen by the client, and shutdown keeps its bounds.

mod support;

use std::time::Duration;

use conn_lifecycle_hyper::{CloseOutcome, CloseReason, PeerClose, Policy};
use support::{
    http1_exchange, read_response, read_until_end, wait_until, End, H2Client, TestServer,
};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

const SHORT: Duration = Duration::from_millis(300);

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn policy() -> Policy {
    Policy::builder()
        .idle_timeout(None)
        .grace(Duration::from_secs(5))
        .peer_close(PeerClose::wait(SHORT))
        .build()
}

// An idle HTTP/1.1 keep-alive connection is closed with close_notify after its response.
#[tokio::test]
async fn idle_http1_ends_with_close_notify() {
    let server = TestServer::start(Policy::builder().idle_timeout(SHORT).build()).await;

    let (response, end) = http1_exchange(&server, GET).await;

    assert!(response.ends_with("hello\n"), "{response}");
    assert_eq!(end, End::CloseNotify);
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.closed_by(CloseReason::Idle), 1);
}

// An idle HTTP/2 connection gets GOAWAY, then close_notify.
#[tokio::test]
async fn idle_http2_ends_with_close_notify() {
    let server = TestServer::start(Policy::builder().idle_timeout(SHORT).build()).await;
    let mut client = H2Client::connect(&server).await;

    assert_eq!(client.get("/").await.unwrap(), (200, b"hello\n".to_vec()));

    assert_eq!(client.ended().await, End::CloseNotify);
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.closed_by(CloseReason::Idle), 1);
}

// A client that completes the handshake and then sends nothing is timed out too, with
// close_notify, although hyper is still waiting to learn the protocol.
#[tokio::test]
async fn silent_client_is_closed_by_idle_timeout() {
    let server = TestServer::start(Policy::builder().idle_timeout(SHORT).build()).await;
    let mut tls = server.connect(b"http/1.1").await;

    let (received, end) = read_until_end(&mut tls).await;

    assert!(received.is_empty());
    assert_eq!(end, End::CloseNotify);
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.closed_by(CloseReason::Idle), 1);
}

// The last allowed HTTP/1.1 request gets `Connection: close`, then close_notify.
#[tokio::test]
async fn max_requests_http1() {
    let server = TestServer::start(Policy::builder().max_requests(2).build()).await;

    let (response, end) = http1_exchange(&server, &[GET, GET, GET].concat()).await;

    assert_eq!(response.matches("hello\n").count(), 2, "{response}");
    assert!(response.to_lowercase().contains("connection: close"));
    assert_eq!(end, End::CloseNotify);
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.closed_by(CloseReason::MaxRequests), 1);
}

// HTTP/2 finishes the last allowed request, then GOAWAY and close_notify.
#[tokio::test]
async fn max_requests_http2() {
    let server = TestServer::start(Policy::builder().max_requests(2).build()).await;
    let mut client = H2Client::connect(&server).await;

    assert_eq!(client.get("/").await.unwrap().0, 200);
    assert_eq!(client.get("/").await.unwrap().0, 200);

    assert_eq!(client.ended().await, End::CloseNotify);
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.closed_by(CloseReason::MaxRequests), 1);
}

// An old connection is closed once idle, with close_notify.
#[tokio::test]
async fn max_age_closes_with_close_notify() {
    let policy = Policy::builder()
        .idle_timeout(None)
        .max_age(SHORT)
        .max_age_jitter(Duration::ZERO)
        .build();
    let server = TestServer::start(policy).await;
    let mut client = H2Client::connect(&server).await;
    assert_eq!(client.get("/").await.unwrap().0, 200);

    assert_eq!(client.ended().await, End::CloseNotify);
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.closed_by(CloseReason::MaxAge), 1);
}

// Draining closes the connections open now, with close_notify; the server keeps serving.
#[tokio::test]
async fn drain_all_keeps_serving() {
    let server = TestServer::start(policy()).await;
    let mut drained = H2Client::connect(&server).await;
    assert_eq!(drained.get("/").await.unwrap().0, 200);

    server.handle.drain_all();

    assert_eq!(drained.ended().await, End::CloseNotify);
    let mut later = H2Client::connect(&server).await;
    assert_eq!(later.get("/").await.unwrap().0, 200);
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.closed_by(CloseReason::Drain), 1);
}

// Draining one connection by id leaves the others open.
#[tokio::test]
async fn drain_one_connection_by_id() {
    let server = TestServer::start(policy()).await;
    let mut first = H2Client::connect(&server).await;
    let mut second = H2Client::connect(&server).await;
    assert_eq!(first.get("/").await.unwrap().0, 200);
    assert_eq!(second.get("/").await.unwrap().0, 200);

    assert!(server.handle.drain(1), "the first connection has id 1");

    assert_eq!(first.ended().await, End::CloseNotify);
    assert_eq!(second.get("/").await.unwrap().0, 200);
    assert!(!server.handle.drain(1), "gone now");
    server.shutdown().await;
}

// Shutdown closes idle connections of both protocols with close_notify and reports them.
#[tokio::test]
async fn shutdown_closes_idle_connections_cleanly() {
    let server = TestServer::start(policy()).await;
    let mut h2 = H2Client::connect(&server).await;
    assert_eq!(h2.get("/").await.unwrap().0, 200);
    let mut h1 = server.connect(b"http/1.1").await;
    h1.write_all(GET).await.unwrap();
    let mut head = [0u8; 16];
    tokio::io::AsyncReadExt::read(&mut h1, &mut head)
        .await
        .unwrap();
    assert!(server.handle.stats().requests >= 2);

    server.handle.shutdown();

    assert_eq!(read_until_end(&mut h1).await.1, End::CloseNotify);
    assert_eq!(h2.ended().await, End::CloseNotify);
    let summary = server.serving.await.unwrap().unwrap();
    assert_eq!(summary.stats.closed_by(CloseReason::Shutdown), 2);
    assert_eq!(summary.forced, 0);
    assert_eq!(summary.stats.open, 0);
}

// Requests in flight when the shutdown starts finish with whole bodies, then close_notify.
#[tokio::test]
async fn in_flight_requests_finish_during_shutdown() {
    let server = TestServer::start(policy()).await;
    let mut h2 = H2Client::connect(&server).await;
    let h2_request = tokio::spawn(async move {
        let result = h2.get("/stream?chunks=5&ms=100").await;
        (result, h2.ended().await)
    });
    let mut h1 = server
        .send_http1(b"GET /slow?ms=400 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    wait_until(|| server.handle.stats().in_flight >= 2).await;

    server.handle.shutdown();

    let (h1_response, h1_end) = read_until_end(&mut h1).await;
    let h1_response = String::from_utf8(h1_response).unwrap();
    assert!(h1_response.ends_with("slow\n"), "{h1_response}");
    assert!(h1_response.to_lowercase().contains("connection: close"));
    assert_eq!(h1_end, End::CloseNotify);
    let (h2_result, h2_end) = h2_request.await.unwrap();
    let (status, body) = h2_result.unwrap();
    assert_eq!((status, body.len()), (200, "chunk 0\n".len() * 5));
    assert_eq!(h2_end, End::CloseNotify);
    assert_eq!(server.serving.await.unwrap().unwrap().forced, 0);
}

// A chunked HTTP/1.1 response still streaming at the deadline is cut; the client can tell
// because the last chunk never comes, even though the connection ends with close_notify.
#[tokio::test]
async fn streaming_http1_cut_at_deadline_is_detectable() {
    let server = TestServer::start(policy()).await;
    let mut h1 = server
        .send_http1(b"GET /stream?chunks=1000&ms=20 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    wait_until(|| server.handle.stats().in_flight >= 1).await;

    server.handle.shutdown_with_grace(SHORT);

    let (response, end) = read_until_end(&mut h1).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.contains("transfer-encoding: chunked"),
        "{response}"
    );
    assert!(
        !response.ends_with("0\r\n\r\n"),
        "the terminating chunk is missing"
    );
    assert_eq!(end, End::CloseNotify);
    assert_eq!(server.serving.await.unwrap().unwrap().forced, 1);
}

// An HTTP/1.0 response framed by the end of the connection, cut at the deadline, must not
// end with close_notify, or the client would take the truncated body for a whole one.
#[tokio::test]
async fn close_delimited_response_cut_at_deadline_is_aborted() {
    let server = TestServer::start(policy()).await;
    let mut h1 = server
        .send_http1(b"GET /stream?chunks=1000&ms=20 HTTP/1.0\r\n\r\n")
        .await;
    wait_until(|| server.handle.stats().in_flight >= 1).await;

    server.handle.shutdown_with_grace(SHORT);

    let (response, end) = read_until_end(&mut h1).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(!response.contains("chunked"));
    assert_ne!(end, End::CloseNotify, "a cut body must not look complete");
    let summary = server.serving.await.unwrap().unwrap();
    assert_eq!(summary.stats.outcome(CloseOutcome::Aborted), 1);
}

// An HTTP/1.0 response that completes still ends with close_notify.
#[tokio::test]
async fn complete_close_delimited_response_ends_cleanly() {
    let server = TestServer::start(policy()).await;

    let (response, end) =
        http1_exchange(&server, b"GET /stream?chunks=3&ms=1 HTTP/1.0\r\n\r\n").await;

    assert!(response.ends_with("chunk 2\n"), "{response}");
    assert_eq!(end, End::CloseNotify);
    server.shutdown().await;
}

// An HTTP/2 stream still open at the deadline is reset or cut; the client sees an error,
// not a short body that looks whole.
#[tokio::test]
async fn streaming_http2_cut_at_deadline_is_detectable() {
    let server = TestServer::start(policy()).await;
    let mut h2 = H2Client::connect(&server).await;
    let request = tokio::spawn(async move { h2.get("/stream?chunks=1000&ms=20").await });
    wait_until(|| server.handle.stats().in_flight >= 1).await;

    server.handle.shutdown_with_grace(SHORT);

    assert!(request.await.unwrap().is_err(), "the cut body is an error");
    assert_eq!(server.serving.await.unwrap().unwrap().forced, 1);
}

// A client that never reads a large body cannot hold the shutdown past
// grace + close_notify timeout (+ margin).
#[tokio::test]
async fn client_not_reading_cannot_hold_shutdown() {
    let policy = Policy::builder()
        .idle_timeout(None)
        .grace(SHORT)
        .close_notify_timeout(SHORT)
        .build();
    let server = TestServer::start(policy).await;
    let h1 = server
        .send_http1(b"GET /bytes?n=67108864 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    // hyper takes the whole body at once and is still writing it: the request is no longer
    // in flight, but the connection is busy.
    wait_until(|| server.handle.stats().requests >= 1).await;

    let start = Instant::now();
    server.handle.shutdown();
    let summary = server.serving.await.unwrap().unwrap();

    // The bound is grace + close_notify timeout + a 250 ms margin; allow for a slow machine.
    assert!(
        start.elapsed() < SHORT * 2 + Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(summary.stats.outcome(CloseOutcome::SendTimedOut), 1);
    assert_eq!(summary.forced, 1);
    drop(h1);
}

// A second signal (here, `stop`) ends a shutdown at once, still with close_notify.
#[tokio::test]
async fn stop_ends_a_long_grace_at_once() {
    let server = TestServer::start(policy()).await;
    let mut h1 = server
        .send_http1(b"GET /slow?ms=60000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    wait_until(|| server.handle.stats().in_flight >= 1).await;
    server.handle.shutdown();

    server.handle.stop();

    assert_eq!(read_until_end(&mut h1).await.1, End::CloseNotify);
    let summary = server.serving.await.unwrap().unwrap();
    assert_eq!(summary.forced, 1);
}

// A request head begun and left unfinished ends at the header read timeout, with
// close_notify and its own reason, not as an error.
#[tokio::test]
async fn header_read_timeout_ends_with_close_notify() {
    let server = TestServer::start(Policy::builder().header_read_timeout(SHORT).build()).await;
    let mut h1 = server.connect(b"http/1.1").await;
    h1.write_all(b"GET / HTTP/1.1\r\nHost: loc").await.unwrap();

    let (_, end) = read_until_end(&mut h1).await;

    assert_eq!(end, End::CloseNotify);
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.closed_by(CloseReason::HeaderReadTimeout), 1);
}

// A keep-alive connection waiting for its next request is idle, not slow with a header:
// with a header read timeout shorter than the idle timeout, it still closes for idleness.
// (hyper's own header read timeout would close it first, as an error.)
#[tokio::test]
async fn keep_alive_wait_is_not_a_header_read_timeout() {
    let policy = Policy::builder()
        .header_read_timeout(SHORT)
        .idle_timeout(SHORT * 3)
        .build();
    let server = TestServer::start(policy).await;

    let (response, end) = http1_exchange(&server, GET).await;

    assert!(response.ends_with("hello\n"), "{response}");
    assert_eq!(end, End::CloseNotify);
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.closed_by(CloseReason::Idle), 1);
    assert_eq!(summary.stats.closed_by(CloseReason::HeaderReadTimeout), 0);
}

// The header read clock of a second request starts at its first byte, not at the end of
// the first response: a client that pauses longer than the timeout between requests and
// then sends a whole request is served.
#[tokio::test]
async fn header_read_clock_starts_at_the_first_byte_of_a_head() {
    let policy = Policy::builder()
        .header_read_timeout(SHORT)
        .idle_timeout(SHORT * 10)
        .build();
    let server = TestServer::start(policy).await;
    let mut h1 = server.send_http1(GET).await;
    read_response(&mut h1).await;

    tokio::time::sleep(SHORT * 2).await;
    h1.write_all(GET).await.unwrap();

    assert!(read_response(&mut h1).await.ends_with("hello\n"));
    drop(h1);
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.closed_by(CloseReason::HeaderReadTimeout), 0);
    assert_eq!(summary.stats.requests, 2);
}

// A shutdown before the client sent a byte (hyper still detecting the protocol) ends with
// close_notify too.
#[tokio::test]
async fn shutdown_during_protocol_detection_sends_close_notify() {
    let server = TestServer::start(policy()).await;
    let mut tls = server.connect(b"http/1.1").await;
    wait_until(|| server.handle.open_connections() >= 1).await;

    server.handle.shutdown();

    assert_eq!(read_until_end(&mut tls).await.1, End::CloseNotify);
    server.serving.await.unwrap().unwrap();
}

// The readiness flag flips as soon as the shutdown starts, while requests still finish.
#[tokio::test]
async fn handle_reports_draining_once_shutdown_starts() {
    let server = TestServer::start(policy()).await;
    let mut h2 = H2Client::connect(&server).await;
    assert_eq!(h2.get("/healthz").await.unwrap(), (200, b"ok".to_vec()));
    let slow = tokio::spawn(async move { h2.get("/slow?ms=300").await });
    wait_until(|| server.handle.stats().in_flight >= 1).await;
    assert!(!server.handle.is_draining());

    server.handle.shutdown();

    assert!(server.handle.is_draining());
    assert_eq!(slow.await.unwrap().unwrap().0, 200);
    server.serving.await.unwrap().unwrap();
}
