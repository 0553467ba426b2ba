//! The IO wrapper hands the stream back when hyper drops it, so the connection can still
//! end with close_notify; and HTTP/2 stream resets release requests in flight.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use conn_lifecycle::{CloseOutcome, CloseReason, Lifecycle, PeerClose, Policy};
use conn_lifecycle_test_support::tcp_pair;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// hyper gives up on a request it cannot parse and drops its IO without close_notify; the
// wrapper returns the stream and the close sequence sends close_notify after the error.
#[tokio::test]
async fn stream_comes_back_after_hyper_gives_up() {
    let lifecycle = Lifecycle::new(Policy::builder().peer_close(PeerClose::None).build());
    let conn = lifecycle.connection();
    let (mut client, server) = tcp_pair().await.unwrap();
    let (io, returned) = conn.wrap_io(server);
    let service = hyper::service::service_fn(|_req| async {
        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"hi"))))
    });
    let serving = tokio::spawn(
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service),
    );

    client.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    assert!(serving.await.unwrap().is_err(), "hyper rejects the request");
    let stream = returned.await.expect("the stream comes back");
    let report = conn.close(stream, CloseReason::Error, None).await;

    assert_eq!(report.outcome, CloseOutcome::CloseNotifySent);
    let mut received = Vec::new();
    client
        .read_to_end(&mut received)
        .await
        .expect("the client sees close_notify, not an unexpected EOF");
    assert!(received.starts_with(b"HTTP/1.1 400"), "{received:?}");
    let stats = lifecycle.stats();
    assert_eq!(stats.closed_by(CloseReason::Error), 1);
    assert_eq!(stats.outcome(CloseOutcome::CloseNotifySent), 1);
}

// A stream is never lost: taking it out with into_inner leaves nothing to hand back.
#[tokio::test]
async fn into_inner_takes_the_stream_out() {
    let conn = Lifecycle::default().connection();
    let (a, _b) = tokio::io::duplex(64);
    let (io, returned) = conn.wrap_io(a);

    let _stream = io.into_inner();

    assert!(returned.await.is_none());
}

// An HTTP/2 client that resets a stream mid-body releases its request, though hyper drops
// the body on another task.
#[tokio::test]
async fn http2_stream_reset_releases_the_request() {
    let conn = Lifecycle::default().connection();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::ServiceBuilder::new().layer(conn.layer()).service_fn(
        |_req: http::Request<hyper::body::Incoming>| async {
            let body = EndlessBody(Some(Bytes::from_static(b"chunk")));
            Ok::<_, Infallible>(http::Response::new(body))
        },
    );
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .await;
    });

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{addr}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(conn.in_flight(), 1);

    // Dropping the body resets the stream.
    drop(body);

    let released = tokio::time::timeout(Duration::from_secs(5), async {
        while conn.in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(released.await.is_ok(), "the reset released the request");
}

/// One chunk, then nothing, forever.
struct EndlessBody(Option<Bytes>);

impl http_body::Body for EndlessBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(data) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
            None => std::task::Poll::Pending,
        }
    }
}
