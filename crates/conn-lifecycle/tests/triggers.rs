//! Each close trigger fires at the right time, on paused tokio time.

use std::time::Duration;

use conn_lifecycle::{CloseReason, Lifecycle, Policy};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{advance, timeout, Instant};

fn lifecycle(policy: Policy) -> Lifecycle {
    Lifecycle::new(policy)
}

const SECOND: Duration = Duration::from_secs(1);

// A connection that never sends anything is idle from the moment it opens.
#[tokio::test(start_paused = true)]
async fn idle_fires_for_a_silent_connection() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(SECOND * 5).build());
    let conn = lifecycle.connection();
    let start = Instant::now();

    assert_eq!(conn.close_trigger().await, CloseReason::Idle);
    assert_eq!(start.elapsed(), SECOND * 5);
}

// Bytes moving through the IO wrapper push the idle deadline back.
#[tokio::test(start_paused = true)]
async fn activity_resets_the_idle_timer() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(SECOND * 5).build());
    let conn = lifecycle.connection();
    let (client, server) = tokio::io::duplex(1024);
    let (mut io, _returned) = conn.wrap_io(server);
    let start = Instant::now();

    let trigger = conn.close_trigger();
    tokio::pin!(trigger);
    assert!(timeout(SECOND * 4, &mut trigger).await.is_err());
    io.write_all(b"x").await.unwrap();

    assert_eq!(trigger.await, CloseReason::Idle);
    assert_eq!(start.elapsed(), SECOND * 9);
    drop(client);
}

// A response the application is still producing (its body has no next frame yet) keeps the
// connection busy, however long it takes.
#[tokio::test(start_paused = true)]
async fn in_flight_request_is_not_idle() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(SECOND).build());
    let conn = lifecycle.connection();
    let mut service = tower::ServiceBuilder::new().layer(conn.layer()).service_fn(
        |_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(NoFrameYet))
        },
    );
    let response = tower::ServiceExt::oneshot(&mut service, http::Request::new(()))
        .await
        .unwrap();
    let mut body = response.into_body();
    // The HTTP layer asks for the next frame; the application has none yet.
    assert!(timeout(Duration::ZERO, body.frame()).await.is_err());

    assert!(timeout(SECOND * 30, conn.close_trigger()).await.is_err());
    let released = Instant::now();
    drop(body);

    assert_eq!(conn.close_trigger().await, CloseReason::Idle);
    assert_eq!(released.elapsed(), SECOND);
}

// A response that waits on the peer (handed to the HTTP layer, which does not ask for more,
// as when a client stops reading) does not keep the connection busy: it is idle one timeout
// after the handler returned, though still in flight.
#[tokio::test(start_paused = true)]
async fn response_waiting_on_the_peer_is_idle() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(SECOND).build());
    let conn = lifecycle.connection();
    let mut service = tower::ServiceBuilder::new().layer(conn.layer()).service_fn(
        |_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"never taken"),
            )))
        },
    );
    let start = Instant::now();
    let _response = tower::ServiceExt::oneshot(&mut service, http::Request::new(()))
        .await
        .unwrap();

    assert_eq!(conn.close_trigger().await, CloseReason::Idle);
    assert_eq!(start.elapsed(), SECOND);
    assert_eq!(conn.in_flight(), 1);
}

// After a handler longer than the idle timeout, the idle clock counts from its hand-over,
// not from the last byte before it. The hand-over reads no clock (the write that normally
// follows it does), so with no byte after it the timeout may count from the trigger's next
// check instead: later, by at most one timeout, never earlier.
#[tokio::test(start_paused = true)]
async fn idle_counts_from_the_hand_over_after_a_long_handler() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(SECOND).build());
    let conn = lifecycle.connection();
    let trigger = tokio::spawn({
        let conn = conn.clone();
        async move { conn.close_trigger().await }
    });
    let mut service = tower::ServiceBuilder::new().layer(conn.layer()).service_fn(
        |_req: http::Request<()>| async {
            tokio::time::sleep(SECOND * 5 + SECOND / 2).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"late"),
            )))
        },
    );
    let _response = tower::ServiceExt::oneshot(&mut service, http::Request::new(()))
        .await
        .unwrap();
    let handed_over = Instant::now();

    assert_eq!(trigger.await.unwrap(), CloseReason::Idle);
    let idle = handed_over.elapsed();
    assert!(idle >= SECOND && idle <= SECOND * 2, "idle after {idle:?}");
}

// A byte that moves after the hand-over gives the idle clock its exact start.
#[tokio::test(start_paused = true)]
async fn a_write_after_the_hand_over_starts_the_idle_clock() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(SECOND).build());
    let conn = lifecycle.connection();
    // Already waiting before the request, so that its first look after the hand-over
    // comes after the write too.
    let trigger = tokio::spawn({
        let conn = conn.clone();
        async move { conn.close_trigger().await }
    });
    tokio::task::yield_now().await;
    let (client, server) = tokio::io::duplex(64);
    let (mut io, _returned) = conn.wrap_io(server);
    let mut service = tower::ServiceBuilder::new().layer(conn.layer()).service_fn(
        |_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"hi"),
            )))
        },
    );
    let _response = tower::ServiceExt::oneshot(&mut service, http::Request::new(()))
        .await
        .unwrap();
    advance(SECOND / 2).await;
    io.write_all(b"hi").await.unwrap();
    let written = Instant::now();

    assert_eq!(trigger.await.unwrap(), CloseReason::Idle);
    assert_eq!(written.elapsed(), SECOND);
    drop(client);
}

/// A response body that never has a frame ready: an application still producing it.
struct NoFrameYet;

impl http_body::Body for NoFrameYet {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

// Max age fires between age - jitter and age.
#[tokio::test(start_paused = true)]
async fn max_age_fires_within_its_jitter() {
    let policy = Policy::builder()
        .idle_timeout(None)
        .max_age(SECOND * 100)
        .max_age_jitter(SECOND * 20)
        .build();
    let lifecycle = lifecycle(policy);
    let mut ages = Vec::new();
    for _ in 0..20 {
        let conn = lifecycle.connection();
        let start = Instant::now();
        assert_eq!(conn.close_trigger().await, CloseReason::MaxAge);
        ages.push(start.elapsed());
    }

    assert!(ages
        .iter()
        .all(|age| *age >= SECOND * 80 && *age <= SECOND * 100));
    ages.dedup();
    assert!(ages.len() > 1, "jitter spreads the ages: {ages:?}");
}

// The last allowed request fires the trigger at once, while its response is in flight.
#[tokio::test(start_paused = true)]
async fn max_requests_fires_on_the_last_request() {
    let lifecycle = lifecycle(Policy::builder().max_requests(2).build());
    let conn = lifecycle.connection();
    let service = tower::ServiceBuilder::new().layer(conn.layer()).service_fn(
        |_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        },
    );
    let first = tower::ServiceExt::oneshot(service.clone(), http::Request::new(()))
        .await
        .unwrap();
    assert!(timeout(SECOND, conn.close_trigger()).await.is_err());

    let trigger = tokio::spawn({
        let conn = conn.clone();
        async move { conn.close_trigger().await }
    });
    tokio::task::yield_now().await;
    let _second = tower::ServiceExt::oneshot(service, http::Request::new(()))
        .await
        .unwrap();

    assert_eq!(trigger.await.unwrap(), CloseReason::MaxRequests);
    drop(first);
}

// Draining one connection leaves the others alone.
#[tokio::test(start_paused = true)]
async fn drain_one_connection() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(None).build());
    let drained = lifecycle.connection();
    let other = lifecycle.connection();

    drained.drain();

    assert_eq!(drained.close_trigger().await, CloseReason::Drain);
    assert!(timeout(SECOND, other.close_trigger()).await.is_err());
}

// A connection can be drained by its id through the lifecycle, as long as it exists.
#[tokio::test(start_paused = true)]
async fn drain_one_connection_by_id() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(None).build());
    let drained = lifecycle.connection();
    let other = lifecycle.connection();
    let gone = lifecycle.connection().id();

    assert!(lifecycle.drain(drained.id()));
    assert!(
        !lifecycle.drain(gone),
        "a dropped connection is no longer found"
    );

    assert_eq!(drained.close_trigger().await, CloseReason::Drain);
    assert!(timeout(SECOND, other.close_trigger()).await.is_err());
}

// Every close trigger waiting on a connection hears of an event, not just one of them.
#[tokio::test(start_paused = true)]
async fn every_waiting_trigger_sees_a_drain() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(None).build());
    let conn = lifecycle.connection();
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.close_trigger().await })
        })
        .collect();
    tokio::task::yield_now().await;

    lifecycle.drain_all();

    for trigger in waiting {
        assert_eq!(
            timeout(SECOND, trigger).await.unwrap().unwrap(),
            CloseReason::Drain
        );
    }
}

// Draining all connections reaches those open now, not those opened afterwards.
#[tokio::test(start_paused = true)]
async fn drain_all_spares_later_connections() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(None).build());
    let before = lifecycle.connection();
    let waiting = tokio::spawn({
        let before = before.clone();
        async move { before.close_trigger().await }
    });
    tokio::task::yield_now().await;

    lifecycle.drain_all();
    let after = lifecycle.connection();

    assert_eq!(waiting.await.unwrap(), CloseReason::Drain);
    assert!(timeout(SECOND, after.close_trigger()).await.is_err());
}

// Shutdown reaches every connection, open now or later, and wins over other triggers.
#[tokio::test(start_paused = true)]
async fn shutdown_reaches_every_connection() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(SECOND).build());
    let before = lifecycle.connection();
    let waiting = tokio::spawn({
        let before = before.clone();
        async move { before.close_trigger().await }
    });
    tokio::task::yield_now().await;

    lifecycle.shutdown();
    advance(SECOND * 2).await;
    let after = lifecycle.connection();

    assert_eq!(waiting.await.unwrap(), CloseReason::Shutdown);
    assert_eq!(after.close_trigger().await, CloseReason::Shutdown);
    assert!(lifecycle.is_shutting_down());
}

// With every trigger off, nothing fires.
#[tokio::test(start_paused = true)]
async fn nothing_fires_when_all_triggers_are_off() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(None).build());
    let conn = lifecycle.connection();

    assert!(timeout(SECOND * 3600, conn.close_trigger()).await.is_err());
}

// The header read timeout counts from the first byte of a request head, not from the end of
// the previous exchange, and fires before the idle timeout that each byte pushes back.
#[tokio::test(start_paused = true)]
async fn header_read_timeout_counts_from_the_first_byte_of_a_head() {
    let policy = Policy::builder()
        .header_read_timeout(SECOND * 3)
        .idle_timeout(SECOND * 10)
        .build();
    let lifecycle = lifecycle(policy);
    let conn = lifecycle.connection();
    let (mut client, server) = tokio::io::duplex(64);
    let (mut io, _returned) = conn.wrap_io(server);
    let trigger = conn.close_trigger();
    tokio::pin!(trigger);
    assert!(timeout(SECOND * 2, &mut trigger).await.is_err());

    deliver(&mut client, &mut io, b"GET / HTT").await;
    let head_began = Instant::now();

    assert_eq!(trigger.await, CloseReason::HeaderReadTimeout);
    assert_eq!(head_began.elapsed(), SECOND * 3);
}

// Once the request reaches the service its head is complete: the header read clock stops.
#[tokio::test(start_paused = true)]
async fn header_read_timeout_stops_when_the_request_starts() {
    let policy = Policy::builder()
        .header_read_timeout(SECOND)
        .idle_timeout(None)
        .build();
    let lifecycle = lifecycle(policy);
    let conn = lifecycle.connection();
    let (mut client, server) = tokio::io::duplex(64);
    let (mut io, _returned) = conn.wrap_io(server);
    deliver(&mut client, &mut io, b"GET / HTTP/1.1\r\n\r\n").await;

    let mut service = tower::ServiceBuilder::new().layer(conn.layer()).service_fn(
        |_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        },
    );
    let response = tower::ServiceExt::oneshot(&mut service, http::Request::new(()))
        .await
        .unwrap();
    drop(response);

    assert!(timeout(SECOND * 10, conn.close_trigger()).await.is_err());
}

// HTTP/2 frames are no request heads: the header read timeout does not apply.
#[tokio::test(start_paused = true)]
async fn header_read_timeout_does_not_apply_to_http2() {
    let policy = Policy::builder()
        .header_read_timeout(SECOND)
        .idle_timeout(None)
        .build();
    let lifecycle = lifecycle(policy);
    let conn = lifecycle.connection();
    conn.set_http2();
    let (mut client, server) = tokio::io::duplex(64);
    let (mut io, _returned) = conn.wrap_io(server);
    deliver(&mut client, &mut io, b"PRI * HTTP/2.0").await;

    assert!(timeout(SECOND * 10, conn.close_trigger()).await.is_err());
}

// A trigger polled once by one task and then by another wakes the second on an event: its
// shortcut for polls with nothing new does not keep the first task's waker.
#[tokio::test(start_paused = true)]
async fn a_trigger_polled_by_another_task_hears_a_drain() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let lifecycle = lifecycle(Policy::builder().idle_timeout(None).build());
    let conn = lifecycle.connection();
    let mut trigger = Box::pin(conn.close_trigger());
    let mut elsewhere = Context::from_waker(Waker::noop());
    assert_eq!(trigger.as_mut().poll(&mut elsewhere), Poll::Pending);

    let drain = tokio::spawn({
        let lifecycle = lifecycle.clone();
        async move {
            tokio::time::sleep(SECOND).await;
            lifecycle.drain_all();
        }
    });

    let start = Instant::now();

    // `timeout` polls the trigger once more when it expires, so the time tells whether the
    // drain itself woke this task.
    let reason = timeout(SECOND * 5, trigger).await.unwrap();
    assert_eq!(reason, CloseReason::Drain);
    assert_eq!(start.elapsed(), SECOND);
    drain.await.unwrap();
}

// Bytes read push the idle deadline back from the moment they were read: the read records
// no time itself, and the trigger polled after it dates it.
#[tokio::test(start_paused = true)]
async fn a_read_resets_the_idle_timer_from_its_moment() {
    let lifecycle = lifecycle(Policy::builder().idle_timeout(SECOND * 5).build());
    let conn = lifecycle.connection();
    let (mut client, server) = tokio::io::duplex(1024);
    let (mut io, _returned) = conn.wrap_io(server);
    let start = Instant::now();

    let trigger = conn.close_trigger();
    tokio::pin!(trigger);
    assert!(timeout(SECOND * 4, &mut trigger).await.is_err());
    deliver(&mut client, &mut io, b"x").await;

    assert_eq!(trigger.await, CloseReason::Idle);
    assert_eq!(start.elapsed(), SECOND * 9);
}

/// Sends `bytes` from the client and reads them through the IO wrapper, as an HTTP layer
/// would.
async fn deliver(
    client: &mut (impl AsyncWrite + Unpin),
    io: &mut (impl AsyncRead + Unpin),
    bytes: &[u8],
) {
    client.write_all(bytes).await.unwrap();
    let mut buf = vec![0; bytes.len()];
    io.read_exact(&mut buf).await.unwrap();
}
