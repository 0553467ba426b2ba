//! Many idle TLS clients, and what they see of a server: the client side of the idle
//! connection benchmarks in `benches/compare.sh`.
//!
//! `run` opens `--connections` TLS connections to the server, makes one HTTP/1.1 request
//! (`GET /`) on each, and leaves them open and idle. Then it measures the server whose
//! process id it is given: its resident memory before and after the connections opened,
//! the CPU time it used while they sat idle, and, after sending it SIGTERM, when each
//! connection saw the server's close_notify (or an end without one). It answers every
//! close_notify with its own, as a well-behaved client does, and prints one line of
//! `key=value` fields.
//!
//! `cert` writes a self-signed certificate for `localhost` and `127.0.0.1` for the server
//! to use (`--cert`, `--key`) and the clients to trust (`--ca`).
//!
//! ```text
//! idle_clients cert --out DIR
//! serve --addr 127.0.0.1:8443 --cert DIR/cert.pem --key DIR/key.pem &
//! idle_clients run --addr 127.0.0.1:8443 --ca DIR/cert.pem --connections 1000 --server-pid PID
//! ```
//!
//! The signal is sent by running `kill`, and the clock starts just before that process
//! starts, so the drain times include the millisecond or so it takes to start.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Linux reports CPU times in /proc in units of USER_HZ, which is 100 on every architecture.
const TICKS_PER_SECOND: u64 = 100;

/// How long all the connections together may take to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(name = "idle_clients")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Writes a self-signed certificate and its key to DIR/cert.pem and DIR/key.pem.
    Cert {
        /// The folder to write to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Opens idle connections, measures the server, then signals it and times the drain.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The server's address.
    #[arg(long)]
    addr: SocketAddr,

    /// The certificate to trust (PEM), as written by `cert`.
    #[arg(long)]
    ca: PathBuf,

    /// How many connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,

    /// How many connections may be in their handshake and first request at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// The server's process id: its memory and CPU are read from /proc, and it gets SIGTERM.
    #[arg(long)]
    server_pid: u32,

    /// How long to wait once every connection is open, before reading the memory.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,

    /// How long the connections sit idle while the server's CPU time is counted.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_for: Duration,

    /// How long to wait for every connection to end after SIGTERM.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

/// How a connection ended, from the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The server sent close_notify.
    CloseNotify,
    /// The TCP stream ended without close_notify.
    NoCloseNotify,
    /// A read failed: a reset, most likely.
    Error,
}

/// When and how one connection ended.
#[derive(Debug)]
struct Ending {
    at: Instant,
    end: End,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    match Args::parse().command {
        Cmd::Cert { out } => write_cert(&out),
        Cmd::Run(args) => run(args).await,
    }
}

fn write_cert(out: &Path) -> Result<(), BoxError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names)?;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("cert.pem"), certified.cert.pem())?;
    std::fs::write(out.join("key.pem"), certified.key_pair.serialize_pem())?;
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), BoxError> {
    let connector = TlsConnector::from(client_config(&args.ca)?);
    let pid = args.server_pid;
    let rss_before = rss_kib(pid)?;

    let (opened, mut connections) = open_all(&args, connector).await?;
    sleep(args.settle).await;
    let rss_after = rss_kib(pid)?;
    let cpu_before = cpu_ticks(pid)?;
    sleep(args.idle_for).await;
    let idle_cpu_ms = (cpu_ticks(pid)? - cpu_before) * 1000 / TICKS_PER_SECOND;

    // The clock starts before `kill` does, so the drain times include its start-up.
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("kill -TERM {pid} failed: {status}").into());
    }
    let endings = collect_endings(&mut connections, signalled + args.drain_timeout).await;

    let per_connection = rss_after.saturating_sub(rss_before) * 1024 / opened.max(1) as u64;
    let idle_for_ms = args.idle_for.as_millis();
    print!("connections={opened} rss_before_kib={rss_before} rss_after_kib={rss_after} ");
    print!("bytes_per_connection={per_connection} ");
    print!("idle_cpu_ms={idle_cpu_ms} idle_for_ms={idle_for_ms} ");
    println!("{}", drain_fields(&endings, signalled, opened));
    Ok(())
}

/// Opens every connection; returns how many opened, and their tasks, which end with them.
async fn open_all(
    args: &RunArgs,
    connector: TlsConnector,
) -> Result<(usize, JoinSet<Option<Ending>>), BoxError> {
    let setup = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::channel(args.connections.max(1));
    let mut connections = JoinSet::new();
    for _ in 0..args.connections {
        let (setup, ready, connector) = (setup.clone(), ready_tx.clone(), connector.clone());
        connections.spawn(one_connection(args.addr, connector, setup, ready));
    }
    drop(ready_tx);

    let (mut opened, mut failed) = (0, 0);
    let deadline = Instant::now() + OPEN_TIMEOUT;
    while opened + failed < args.connections {
        match timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => opened += 1,
            Ok(Some(Err(error))) => {
                failed += 1;
                eprintln!("idle_clients: a connection failed: {error}");
            }
            Ok(None) | Err(_) => break,
        }
    }
    if opened < args.connections {
        return Err(format!("only {opened} of {} connections opened", args.connections).into());
    }
    Ok((opened, connections))
}

/// Opens one connection, makes one request, reports it ready, then waits for its end.
async fn one_connection(
    addr: SocketAddr,
    connector: TlsConnector,
    setup: Arc<Semaphore>,
    ready: mpsc::Sender<Result<(), BoxError>>,
) -> Option<Ending> {
    let opened = async {
        let _permit = setup.acquire().await?;
        let tcp = TcpStream::connect(addr).await?;
        let tls = connector.connect(server_name(), tcp).await?;
        get_root(tls).await
    };
    match opened.await {
        Ok(tls) => {
            let _ = ready.send(Ok(())).await;
            Some(wait_for_end(tls).await)
        }
        Err(error) => {
            let _ = ready.send(Err(error)).await;
            None
        }
    }
}

/// `GET /` over HTTP/1.1 with keep-alive; returns the stream once the response is read.
async fn get_root(tls: TlsStream<TcpStream>) -> Result<TlsStream<TcpStream>, BoxError> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    let request = Request::get("/")
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    // Dropping the sender after the response lets the connection give its stream back.
    let exchange = async move {
        let response = sender.send_request(request).await?;
        response.into_body().collect().await.map(drop)
    };
    let (parts, ()) = tokio::try_join!(connection.without_shutdown(), exchange)?;
    Ok(parts.io.into_inner())
}

/// Reads until the server ends the connection, then answers a close_notify with ours.
async fn wait_for_end(mut tls: TlsStream<TcpStream>) -> Ending {
    let mut buf = [0u8; 512];
    let end = loop {
        match tls.read(&mut buf).await {
            // tokio-rustls reports the peer's close_notify as the end of the stream.
            Ok(0) => break End::CloseNotify,
            Ok(_) => continue,
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break End::NoCloseNotify,
            Err(_) => break End::Error,
        }
    };
    let at = Instant::now();
    if end == End::CloseNotify {
        let _ = timeout(Duration::from_secs(1), tls.shutdown()).await;
    }
    Ending { at, end }
}

/// Waits for every connection to end, until `deadline`; those still open are dropped.
async fn collect_endings(
    connections: &mut JoinSet<Option<Ending>>,
    deadline: Instant,
) -> Vec<Option<Ending>> {
    let mut endings = Vec::with_capacity(connections.len());
    while let Ok(Some(joined)) = timeout_at(deadline, connections.join_next()).await {
        endings.push(joined.ok().flatten());
    }
    connections.abort_all();
    endings
}

/// The drain, as `key=value` fields: how each connection ended, and when, after the signal.
fn drain_fields(endings: &[Option<Ending>], signalled: Instant, opened: usize) -> String {
    let count = |end: End| endings.iter().flatten().filter(|e| e.end == end).count();
    let early = endings
        .iter()
        .flatten()
        .filter(|e| e.at < signalled)
        .count();
    let mut close_notify_ms: Vec<f64> = endings
        .iter()
        .flatten()
        .filter(|e| e.end == End::CloseNotify && e.at >= signalled)
        .map(|e| (e.at - signalled).as_secs_f64() * 1000.0)
        .collect();
    close_notify_ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let last = close_notify_ms.len().saturating_sub(1);
        close_notify_ms
            .get((last as f64 * q).round() as usize)
            .map_or("none".to_string(), |ms| format!("{ms:.1}"))
    };
    format!(
        "close_notify={} no_close_notify={} read_error={} ended_before_signal={early} \
         still_open={} first_close_notify_ms={} median_close_notify_ms={} last_close_notify_ms={}",
        count(End::CloseNotify),
        count(End::NoCloseNotify),
        count(End::Error),
        opened.saturating_sub(endings.iter().flatten().count()),
        at(0.0),
        at(0.5),
        at(1.0),
    )
}

fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, BoxError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("\"localhost\" is a valid DNS name")
}

/// The resident memory of process `pid`, in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .ok_or("no VmRSS line in /proc/PID/status")?;
    let kib = line.trim().trim_end_matches("kB").trim();
    Ok(kib.parse()?)
}

/// The CPU time (user and system) process `pid` has used, in ticks, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> Result<u64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name, in parentheses, may hold spaces; the fields after it do not.
    let (_, after_name) = stat.rsplit_once(')').ok_or("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3 of the file, utime field 14, stime field 15.
    let field = |n: usize| -> Result<u64, BoxError> {
        Ok(fields.get(n - 3).ok_or("short /proc/PID/stat")?.parse()?)
    };
    Ok(field(14)? + field(15)?)
}
