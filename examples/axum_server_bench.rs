//! The `serve` example's routes behind axum-server at its defaults, with rustls and the
//! ring provider: the third contender of `benches/compare.sh`.
//!
//! It speaks the part of `serve`'s command line that the benchmarks use: `--addr`,
//! `--cert` and `--key`; it prints `listening on https://IP:PORT` when ready, and SIGTERM
//! starts axum-server's graceful shutdown (bounded by ten seconds).
//!
//! ```text
//! cargo run --release --example axum_server_bench -- --addr 127.0.0.1:0
//! ```

#[path = "serve/routes.rs"]
mod routes;
#[path = "serve/tls.rs"]
mod tls;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use clap::Parser;
use conn_lifecycle_hyper::signal::shutdown_signal;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long the graceful shutdown may take before axum-server closes what is left.
const GRACE: Duration = Duration::from_secs(10);

/// The routes of `serve`, served by axum-server.
#[derive(Debug, Parser)]
#[command(name = "axum_server_bench")]
struct Args {
    /// Listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8443")]
    addr: SocketAddr,

    /// Certificate chain (PEM). Default: a self-signed certificate made at start.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,

    /// Private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let listener = std::net::TcpListener::bind(args.addr)?;
    let addr = listener.local_addr()?;
    let tls = RustlsConfig::from_config(tls::server_config(
        args.cert.as_deref(),
        args.key.as_deref(),
    )?);

    let draining = Arc::new(AtomicBool::new(false));
    // Built once and cloned per request, as `serve` does: the same work in every contender.
    let is_draining: routes::Draining = {
        let flag = draining.clone();
        Arc::new(move || flag.load(Relaxed))
    };
    let service = tower::service_fn(move |request| routes::route(request, is_draining.clone()));

    let handle = axum_server::Handle::new();
    let on_signal = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        draining.store(true, Relaxed);
        on_signal.graceful_shutdown(Some(GRACE));
    });

    let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on https://{addr}")?;
    stdout.flush()?;
    drop(stdout);
    server.serve(tower::make::Shared::new(service)).await?;
    Ok(())
}
