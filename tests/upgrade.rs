//! Upgraded connections (as WebSocket uses them) still follow the policy: at the end of
//! the grace period the handler's stream ends, it lets go, and the connection closes with
//! close_notify; a handler that never lets go cannot hold the shutdown.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use conn_lifecycle_hyper::{Handle, Policy, Server};
use conn_lifecycle_test_support::TestCert;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::{read_until_end, wait_until, End};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const GRACE: Duration = Duration::from_millis(300);

/// What the upgraded handler does with its stream.
#[derive(Clone, Copy)]
enum Handler {
    /// Echoes until the stream ends.
    Echo,
    /// Holds the stream and never touches it.
    Ignore,
}

async fn start(
    handler: Handler,
) -> (
    std::net::SocketAddr,
    Handle,
    TestCert,
    tokio::task::JoinHandle<std::io::Result<conn_lifecycle_hyper::Summary>>,
) {
    let cert = TestCert::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Handle::new();
    let service = tower::service_fn(move |mut request: Request<Incoming>| async move {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            match handler {
                Handler::Echo => {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = io.read(&mut buf).await {
                        if io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
                Handler::Ignore => std::future::pending::<()>().await,
            }
        });
        let mut response = Response::new(Empty::<Bytes>::new());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert("upgrade", "echo".parse().unwrap());
        response
            .headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        Ok::<_, Infallible>(response)
    });
    let policy = Policy::builder()
        .idle_timeout(None)
        .grace(GRACE)
        .close_notify_timeout(GRACE)
        .build();
    let server = Server::from_listener(listener, cert.server_config(&[b"http/1.1"]))
        .policy(policy)
        .handle(handle.clone());
    let serving = tokio::spawn(server.serve(service));
    (addr, handle, cert, serving)
}

async fn upgraded_client(
    addr: std::net::SocketAddr,
    cert: &TestCert,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(cert.client_config(&[b"http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(conn_lifecycle_test_support::server_name(), tcp)
        .await
        .unwrap();
    tls.write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tls
}

// The handler's stream ends at the grace deadline; it lets go, and the client gets
// close_notify.
#[tokio::test]
async fn upgraded_connection_closes_with_close_notify_at_shutdown() {
    let (addr, handle, cert, serving) = start(Handler::Echo).await;
    let mut tls = upgraded_client(addr, &cert).await;
    tls.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tls.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");

    handle.shutdown();

    assert_eq!(read_until_end(&mut tls).await.1, End::CloseNotify);
    let summary = serving.await.unwrap().unwrap();
    assert_eq!((summary.forced, summary.abandoned), (1, 0));
}

// A handler that never touches its stream is given up on; the shutdown still ends within
// its bound.
#[tokio::test]
async fn handler_holding_its_stream_cannot_hold_the_shutdown() {
    let (addr, handle, cert, serving) = start(Handler::Ignore).await;
    let _tls = upgraded_client(addr, &cert).await;
    wait_until(|| handle.stats().requests >= 1).await;

    let start = Instant::now();
    handle.shutdown();
    let summary = serving.await.unwrap().unwrap();

    // grace + close_notify timeout + 250 ms, with room for a slow machine.
    assert!(
        start.elapsed() < GRACE * 2 + Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(summary.abandoned, 1);
}
