//! Under load: hundreds of keep-alive clients, a graceful shutdown in the middle. Every
//! request the server accepted gets a whole response, every connection ends with
//! close_notify, and the server's counts match what the clients saw.

mod support;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use conn_lifecycle_hyper::{CloseOutcome, Policy};
use support::{wait_until, End, H2Client, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const H1_CLIENTS: usize = 100;
const H2_CLIENTS: usize = 100;

/// What all clients saw so far.
#[derive(Debug, Default)]
struct Counts {
    connected: AtomicU64,
    responses: AtomicU64,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    responses: u64,
    /// A response that started but did not finish.
    cut: bool,
    end: Option<End>,
}

/// Sends `GET /` in a loop on one HTTP/1.1 connection until the server closes it.
async fn h1_client(server: Arc<TestServer>, counts: Arc<Counts>) -> Seen {
    let mut tls = server.connect(b"http/1.1").await;
    counts.connected.fetch_add(1, Relaxed);
    let mut seen = Seen::default();
    let mut buffer = Vec::new();
    loop {
        if tls
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .is_err()
        {
            break;
        }
        match read_response(&mut tls, &mut buffer).await {
            Ok(true) => {
                seen.responses += 1;
                counts.responses.fetch_add(1, Relaxed);
            }
            Ok(false) => break,
            Err(cut) => {
                seen.cut = cut;
                break;
            }
        }
    }
    seen.end = Some(support::read_until_end(&mut tls).await.1);
    seen
}

/// Reads one `hello\n` response. `Ok(false)`: the stream ended before one started;
/// `Err(true)`: it ended in the middle of one.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> Result<bool, bool> {
    const BODY: &[u8] = b"hello\n";
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let whole = head_end + 4 + BODY.len();
            if buffer.len() >= whole {
                assert!(buffer.starts_with(b"HTTP/1.1 200"));
                assert_eq!(&buffer[head_end + 4..whole], BODY);
                buffer.drain(..whole);
                return Ok(true);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) if buffer.is_empty() => return Ok(false),
            Ok(0) | Err(_) => return Err(true),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `GET /` in a loop on one HTTP/2 connection until the server closes it.
async fn h2_client(server: Arc<TestServer>, counts: Arc<Counts>) -> Seen {
    let mut client = H2Client::connect(&server).await;
    counts.connected.fetch_add(1, Relaxed);
    let mut seen = Seen::default();
    while let Ok((status, body)) = client.get("/").await {
        assert_eq!((status, body.as_slice()), (200, &b"hello\n"[..]));
        seen.responses += 1;
        counts.responses.fetch_add(1, Relaxed);
    }
    seen.end = Some(client.ended().await);
    seen
}

// A graceful shutdown in the middle of steady traffic loses no accepted request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_lost_when_shutting_down_under_load() {
    let policy = Policy::builder()
        .idle_timeout(None)
        .grace(Duration::from_secs(10))
        .build();
    let server = Arc::new(TestServer::start(policy).await);
    let counts = Arc::new(Counts::default());
    let mut clients = Vec::new();
    for i in 0..H1_CLIENTS + H2_CLIENTS {
        let (server, counts) = (server.clone(), counts.clone());
        clients.push(tokio::spawn(async move {
            if i < H1_CLIENTS {
                h1_client(server, counts).await
            } else {
                h2_client(server, counts).await
            }
        }));
    }
    // Every client connected and traffic flowing everywhere: a few requests per client.
    let clients_total = (H1_CLIENTS + H2_CLIENTS) as u64;
    wait_until(|| {
        counts.connected.load(Relaxed) == clients_total
            && counts.responses.load(Relaxed) >= 5 * clients_total
    })
    .await;

    server.handle.shutdown();

    let mut seen = Vec::new();
    for client in clients {
        seen.push(client.await.unwrap());
    }
    let server = Arc::into_inner(server).expect("clients are done");
    let summary = server.serving.await.unwrap().unwrap();
    let responses: u64 = seen.iter().map(|s| s.responses).sum();
    assert!(seen.iter().all(|s| !s.cut), "no response was cut");
    assert!(
        seen.iter().all(|s| s.end == Some(End::CloseNotify)),
        "every connection ended with close_notify: {:?}",
        seen.iter()
            .filter(|s| s.end != Some(End::CloseNotify))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        summary.stats.requests, responses,
        "every accepted request was answered"
    );
    assert_eq!(summary.stats.closed, (H1_CLIENTS + H2_CLIENTS) as u64);
    assert_eq!(summary.forced, 0);
    let clean = summary.stats.outcome(CloseOutcome::PeerCloseNotify)
        + summary.stats.outcome(CloseOutcome::PeerFin)
        + summary.stats.outcome(CloseOutcome::CloseNotifySent);
    assert_eq!(clean, summary.stats.closed, "{:?}", summary.stats);
}

// More clients than the connection cap: the excess waits its turn, nobody is turned away,
// and the server stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_their_turn() {
    let server = Arc::new(
        TestServer::start_with(Policy::default(), |server| server.max_connections(8)).await,
    );
    let mut clients = Vec::new();
    for _ in 0..64 {
        let server = server.clone();
        clients.push(tokio::spawn(async move {
            support::http1_exchange(
                &server,
                b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )
            .await
        }));
    }

    for client in clients {
        let (response, end) = client.await.unwrap();
        assert!(response.ends_with("hello\n"), "{response}");
        assert_eq!(end, End::CloseNotify);
    }
    let server = Arc::into_inner(server).expect("clients are done");
    let summary = server.shutdown().await;
    assert_eq!(summary.stats.requests, 64);
}
