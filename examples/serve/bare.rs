//! `--bare`: the same routes with plain hyper-util and tokio-rustls, and hyper-util's own
//! graceful shutdown (no deadline, no close policy). The baseline for comparisons.
//!
//! The routes are a hyper service; with `--tower` they are a tower service behind
//! hyper-util's `TowerToHyperService`, the adapter that the lifecycle server (and axum-server)
//! go through, so that a comparison can tell that adapter's cost from the lifecycle's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use conn_lifecycle_hyper::signal::shutdown_signal;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{announce, cli, routes, BoxError};

pub(crate) async fn run(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    args: &cli::Args,
) -> Result<(), BoxError> {
    let draining = Arc::new(AtomicBool::new(false));
    // Built once and cloned per request, as `serve` does: the same work in both modes.
    let is_draining: routes::Draining = {
        let flag = draining.clone();
        Arc::new(move || flag.load(Relaxed))
    };
    if args.tower {
        let service = tower::service_fn(move |request| routes::route(request, is_draining.clone()));
        serve(
            listener,
            tls,
            args,
            draining,
            TowerToHyperService::new(service),
        )
        .await
    } else {
        let service =
            hyper::service::service_fn(move |request| routes::route(request, is_draining.clone()));
        serve(listener, tls, args, draining, service).await
    }
}

async fn serve<S, B>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    args: &cli::Args,
    draining: Arc<AtomicBool>,
    service: S,
) -> Result<(), BoxError>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let acceptor = TlsAcceptor::from(tls);
    let http = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(AtomicU64::new(0));
    announce(listener.local_addr()?);

    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        connections.fetch_add(1, Relaxed);
        let (acceptor, http, service) = (acceptor.clone(), http.clone(), service.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let connection = http.serve_connection_with_upgrades(TokioIo::new(tls), service);
            let _ = watcher.watch(connection.into_owned()).await;
        });
    }

    drop(listener);
    draining.store(true, Relaxed);
    let started = Instant::now();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = shutdown_signal() => tracing::warn!("second signal received, stopping now"),
    }
    let connections = connections.load(Relaxed);
    let shutdown_ms = started.elapsed().as_millis() as u64;
    println!("bare: shutdown took {shutdown_ms} ms; {connections} connections served");
    if let Some(path) = &args.stats_json {
        let json = serde_json::json!({
            "mode": "bare",
            "connections": connections,
            "shutdown_ms": shutdown_ms,
        });
        std::fs::write(path, json.to_string())?;
    }
    Ok(())
}
