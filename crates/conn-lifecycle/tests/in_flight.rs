//! Requests count as in flight from the service call until their response body is dropped.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use conn_lifecycle::{Connection, Lifecycle};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tower::{ServiceBuilder, ServiceExt};

type Frames = mpsc::Receiver<Bytes>;

/// A response body fed by a channel: ends when the sender is dropped.
struct ChannelBody(Frames);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(http_body::Frame::data(d))))
    }
}

fn streaming_service(
    conn: &Connection,
    frames: Frames,
) -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<impl http_body::Body<Data = Bytes, Error = Infallible>>,
    Error = Infallible,
> {
    let mut body = Some(ChannelBody(frames));
    ServiceBuilder::new()
        .layer(conn.layer())
        .service_fn(move |_req: http::Request<()>| {
            let body = body.take().expect("one request per test");
            async move { Ok(http::Response::new(body)) }
        })
}

// A streaming body keeps its request in flight until the body is dropped, not until the
// handler returns.
#[tokio::test]
async fn streaming_body_stays_in_flight_until_dropped() {
    let conn = Lifecycle::default().connection();
    let (tx, rx) = mpsc::channel(1);
    let response = streaming_service(&conn, rx)
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(conn.in_flight(), 1);

    let mut body = response.into_body();
    tx.send(Bytes::from_static(b"a")).await.unwrap();
    body.frame().await.unwrap().unwrap();
    assert_eq!(conn.in_flight(), 1, "still streaming");

    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(conn.in_flight(), 1, "finished but not dropped");
    drop(body);
    assert_eq!(conn.in_flight(), 0);
    assert_eq!(conn.requests(), 1);
}

// A request whose future is dropped before it resolves is released.
#[tokio::test]
async fn cancelled_request_is_released() {
    let conn = Lifecycle::default().connection();
    let service =
        ServiceBuilder::new()
            .layer(conn.layer())
            .service_fn(|_req: http::Request<()>| async {
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
            });
    let mut call = Box::pin(service.oneshot(http::Request::new(())));
    assert!(tokio::time::timeout(Duration::from_millis(10), &mut call)
        .await
        .is_err());
    assert_eq!(conn.in_flight(), 1);

    drop(call);
    assert_eq!(conn.in_flight(), 0);
}

// A handler error releases the request too.
#[tokio::test]
async fn failed_request_is_released() {
    let conn = Lifecycle::default().connection();
    let service =
        ServiceBuilder::new()
            .layer(conn.layer())
            .service_fn(|_req: http::Request<()>| async {
                Err::<http::Response<Full<Bytes>>, _>("handler failed")
            });

    assert!(service.oneshot(http::Request::new(())).await.is_err());
    assert_eq!(conn.in_flight(), 0);
    assert_eq!(conn.requests(), 1);
}

// The server-wide counters follow the per-connection ones.
#[tokio::test]
async fn stats_count_requests_across_connections() {
    let lifecycle = Lifecycle::default();
    let a = lifecycle.connection();
    let b = lifecycle.connection();
    let (_tx, rx_a) = mpsc::channel(1);
    let (_tx_b, rx_b) = mpsc::channel(1);
    let ra = streaming_service(&a, rx_a)
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    let rb = streaming_service(&b, rx_b)
        .oneshot(http::Request::new(()))
        .await
        .unwrap();

    let stats = lifecycle.stats();
    assert_eq!((stats.opened, stats.in_flight, stats.requests), (2, 2, 2));
    drop((ra, rb));
    assert_eq!(lifecycle.stats().in_flight, 0);
}

// Requests served on connections since dropped still count, and the count never goes back.
#[tokio::test]
async fn stats_keep_the_requests_of_dropped_connections() {
    let lifecycle = Lifecycle::default();
    let gone = lifecycle.connection();
    let kept = lifecycle.connection();
    for conn in [&gone, &gone, &kept] {
        let response = ServiceBuilder::new()
            .layer(conn.layer())
            .service_fn(|_req: http::Request<()>| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            })
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        drop(response);
    }
    assert_eq!(lifecycle.stats().requests, 3);

    drop(gone);
    let stats = lifecycle.stats();
    assert_eq!((stats.requests, stats.in_flight, stats.closed), (3, 0, 1));
}
