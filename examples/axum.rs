//! An axum `Router` served with the lifecycle policy: idle timeout, bounded graceful
//! shutdown on SIGTERM or Ctrl-C, and close_notify at the end of every connection.
//!
//! ```text
//! cargo run --example axum
//! curl -k https://127.0.0.1:8443/
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use conn_lifecycle_hyper::{signal, Handle, Policy, Server};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::ServerConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();

    let app = Router::new().route("/", get(|| async { "hello from axum\n" }));
    let policy = Policy::builder()
        .idle_timeout(Duration::from_secs(30))
        .grace(Duration::from_secs(5))
        .build();
    let handle = Handle::new();
    signal::spawn_handler(handle.clone());

    let server = Server::bind("127.0.0.1:8443", self_signed()?)
        .await?
        .policy(policy)
        .handle(handle);
    println!("listening on https://{}", server.local_addr()?);
    let summary = server.serve(app).await?;
    println!("{summary}");
    Ok(())
}

/// A certificate for localhost made now; use your own in production.
fn self_signed() -> Result<Arc<ServerConfig>, Box<dyn std::error::Error + Send + Sync>> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key.into())?;
    Ok(Arc::new(config))
}
