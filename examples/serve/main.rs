//! The example server: every route behind the lifecycle policy, or plain hyper-util with
//! `--bare`. Its command line is a stable contract used by tests and benchmarks; see
//! `cli.rs`.
//!
//! ```text
//! cargo run --release --example serve
//! curl -k https://127.0.0.1:8443/
//! ```

mod bare;
mod cli;
mod routes;
mod tls;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use conn_lifecycle_hyper::{signal, Handle, Policy, Server, Summary};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("serve: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: cli::Args) -> Result<(), BoxError> {
    let tls = tls::server_config(args.cert.as_deref(), args.key.as_deref())?;
    let listener = TcpListener::bind(args.addr).await?;
    if args.bare {
        bare::run(listener, tls, &args).await
    } else {
        with_lifecycle(listener, tls, &args).await
    }
}

async fn with_lifecycle(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    args: &cli::Args,
) -> Result<(), BoxError> {
    let policy = Policy::builder()
        .idle_timeout(args.idle_timeout)
        .header_read_timeout(args.header_read_timeout)
        .max_age(args.max_age)
        .max_requests(args.max_requests)
        .grace(args.grace)
        .close_notify_timeout(args.close_notify_timeout)
        .peer_close(args.peer_close)
        .build();
    let handle = Handle::new();
    signal::spawn_handler(handle.clone());
    let draining: routes::Draining = {
        let handle = handle.clone();
        Arc::new(move || handle.is_draining())
    };
    let service = tower::service_fn(move |request| routes::route(request, draining.clone()));

    let server = Server::from_listener(listener, tls)
        .policy(policy)
        .handshake_timeout(args.handshake_timeout)
        .handle(handle);
    announce(server.local_addr()?);
    let summary = server.serve(service).await?;

    println!("{summary}");
    if let Some(path) = &args.stats_json {
        std::fs::write(path, stats_json(&summary).to_string())?;
    }
    Ok(())
}

/// The line that tells scripts the server is ready.
pub(crate) fn announce(addr: SocketAddr) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on https://{addr}");
    let _ = stdout.flush();
}

fn stats_json(summary: &Summary) -> serde_json::Value {
    let s = &summary.stats;
    let reasons: serde_json::Map<_, _> = s
        .reasons()
        .map(|(reason, n)| (reason.to_string(), n.into()))
        .collect();
    let outcomes: serde_json::Map<_, _> = s
        .outcomes()
        .map(|(outcome, n)| (outcome.to_string(), n.into()))
        .collect();
    serde_json::json!({
        "mode": "lifecycle",
        "connections": s.opened,
        "closed": s.closed,
        "requests": s.requests,
        "forced": summary.forced,
        "abandoned": summary.abandoned,
        "shutdown_ms": summary.shutdown.as_millis() as u64,
        "reasons": reasons,
        "outcomes": outcomes,
    })
}
