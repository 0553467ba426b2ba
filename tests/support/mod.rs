//! Shared pieces of the end-to-end tests: a server on a free port, TLS clients, and a
//! witness of how a client's TLS stream ended.

#![allow(dead_code)] // Each test file uses a different subset.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use conn_lifecycle_hyper::{Handle, Policy, Server, Summary};
use conn_lifecycle_test_support::{server_name, TestCert};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

#[path = "../../examples/serve/routes.rs"]
pub(crate) mod routes;

/// A server of the example's routes on a free loopback port.
pub(crate) struct TestServer {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) handle: Handle,
    pub(crate) cert: TestCert,
    pub(crate) serving: JoinHandle<io::Result<Summary>>,
}

impl TestServer {
    pub(crate) async fn start(policy: Policy) -> Self {
        Self::start_with(policy, |server| server).await
    }

    pub(crate) async fn start_with(
        policy: Policy,
        configure: impl FnOnce(Server) -> Server,
    ) -> Self {
        let cert = TestCert::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = Handle::new();
        let draining: routes::Draining = {
            let handle = handle.clone();
            Arc::new(move || handle.is_draining())
        };
        let service = tower::service_fn(move |req| routes::route(req, draining.clone()));
        let server = Server::from_listener(listener, cert.server_config(&[b"h2", b"http/1.1"]))
            .policy(policy)
            .handle(handle.clone());
        let serving = tokio::spawn(configure(server).serve(service));
        TestServer {
            addr,
            handle,
            cert,
            serving,
        }
    }

    /// A TLS connection to the server, offering `alpn`.
    pub(crate) async fn connect(&self, alpn: &[u8]) -> TlsStream<TcpStream> {
        let connector = TlsConnector::from(self.cert.client_config(&[alpn]));
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        connector.connect(server_name(), tcp).await.unwrap()
    }

    /// A new HTTP/1.1 connection on which `request` has been sent.
    pub(crate) async fn send_http1(&self, request: &[u8]) -> TlsStream<TcpStream> {
        let mut tls = self.connect(b"http/1.1").await;
        tls.write_all(request).await.unwrap();
        tls
    }

    /// Shuts down and returns the summary.
    pub(crate) async fn shutdown(self) -> Summary {
        self.handle.shutdown();
        self.serving.await.unwrap().unwrap()
    }
}

/// How a TLS stream's reading side ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Not yet.
    Open,
    /// The peer's close_notify.
    CloseNotify,
    /// TCP end without close_notify.
    UnexpectedEof,
    /// Reset, or another error.
    Error,
}

/// Reads everything until the end; returns the bytes and how the stream ended.
pub(crate) async fn read_until_end<S: AsyncRead + Unpin>(stream: &mut S) -> (Vec<u8>, End) {
    let mut received = Vec::new();
    let end = match stream.read_to_end(&mut received).await {
        Ok(_) => End::CloseNotify,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => End::UnexpectedEof,
        Err(_) => End::Error,
    };
    (received, end)
}

/// Sends a raw HTTP/1 request on a new connection and reads until the server closes.
pub(crate) async fn http1_exchange(server: &TestServer, request: &[u8]) -> (String, End) {
    let mut tls = server.send_http1(request).await;
    let (received, end) = read_until_end(&mut tls).await;
    (String::from_utf8_lossy(&received).into_owned(), end)
}

/// Reads one HTTP/1.1 response framed by `content-length` (the example's small routes) and
/// returns it whole, leaving the connection open.
pub(crate) async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        received.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&received).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("a content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    received.extend_from_slice(&body);
    String::from_utf8_lossy(&received).into_owned()
}

/// A stream that hyper's client can own while the test keeps a way to take it back after
/// the client is done, to read how it ends. Locks per poll: fine for tests.
pub(crate) struct SharedIo<T>(Arc<Mutex<Option<T>>>);

impl<T> SharedIo<T> {
    pub(crate) fn new(inner: T) -> (Self, Arc<Mutex<Option<T>>>) {
        let shared = Arc::new(Mutex::new(Some(inner)));
        (SharedIo(shared.clone()), shared)
    }

    fn with<R>(&self, f: impl FnOnce(Pin<&mut T>) -> Poll<io::Result<R>>) -> Poll<io::Result<R>>
    where
        T: Unpin,
    {
        let mut guard = self.0.lock().unwrap();
        match guard.as_mut() {
            Some(inner) => f(Pin::new(inner)),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SharedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.with(|inner| inner.poll_read(cx, buf))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SharedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|inner| inner.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|inner| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|inner| inner.poll_shutdown(cx))
    }
}

/// An HTTP/2 client connection whose TLS end is witnessed.
pub(crate) struct H2Client {
    pub(crate) sender: hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    stream: Arc<Mutex<Option<TlsStream<TcpStream>>>>,
    pub(crate) connection: JoinHandle<Result<(), hyper::Error>>,
}

impl H2Client {
    pub(crate) async fn connect(server: &TestServer) -> Self {
        let tls = server.connect(b"h2").await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (io, stream) = SharedIo::new(tls);
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(io),
        )
        .await
        .unwrap();
        H2Client {
            sender,
            stream,
            connection: tokio::spawn(connection),
        }
    }

    /// GET `path`; returns the status and the whole body, or the body error.
    pub(crate) async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), hyper::Error> {
        use http_body_util::BodyExt;
        let request = http::Request::get(format!("https://localhost{path}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body.to_vec()))
    }

    /// Waits for the connection to end and says how its TLS stream ended.
    pub(crate) async fn ended(self) -> End {
        let _ = self.connection.await;
        let stream = self.stream.lock().unwrap().take();
        let mut stream = stream.expect("the stream is taken once");
        read_until_end(&mut stream).await.1
    }
}

/// Waits until `condition` holds, checking every few milliseconds, for at most 10 seconds.
pub(crate) async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
