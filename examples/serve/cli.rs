//! The command line of the `serve` example; a stable contract that tests and benchmarks use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use conn_lifecycle_hyper::PeerClose;

/// A TLS server with the connection lifecycle policy, or plain hyper-util with `--bare`.
#[derive(Debug, Parser)]
#[command(name = "serve")]
pub(crate) struct Args {
    /// Listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub(crate) addr: SocketAddr,

    /// Certificate chain (PEM). Default: a self-signed certificate made at start.
    #[arg(long, requires = "key")]
    pub(crate) cert: Option<PathBuf>,

    /// Private key (PEM).
    #[arg(long, requires = "cert")]
    pub(crate) key: Option<PathBuf>,

    /// Idle timeout, such as "60s"; "off" disables it.
    #[arg(long, default_value = "60s", value_parser = parse_optional_duration)]
    // The full path keeps clap from treating the option as one that may be absent.
    pub(crate) idle_timeout: ::std::option::Option<Duration>,

    /// How long an HTTP/1 client may take over a request's head once begun; "off" disables
    /// it.
    #[arg(long, default_value = "30s", value_parser = parse_optional_duration)]
    pub(crate) header_read_timeout: ::std::option::Option<Duration>,

    /// Bound on the TLS handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) handshake_timeout: Duration,

    /// Maximum connection age, such as "10m"; "off" disables it.
    #[arg(long, default_value = "off", value_parser = parse_optional_duration)]
    pub(crate) max_age: ::std::option::Option<Duration>,

    /// Maximum requests per connection; "off" for no limit.
    #[arg(long, default_value = "off", value_parser = parse_optional_count)]
    pub(crate) max_requests: ::std::option::Option<u64>,

    /// How long in-flight requests may finish after a shutdown signal.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) grace: Duration,

    /// Bound on sending our close_notify.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) close_notify_timeout: Duration,

    /// After our close_notify: "none", "wait:DUR" (wait for the peer's close_notify) or
    /// "linger:DUR" (read and discard until the peer closes).
    #[arg(long, default_value = "wait:1s", value_parser = parse_peer_close)]
    pub(crate) peer_close: PeerClose,

    /// Serve the same routes with plain hyper-util and tokio-rustls: no lifecycle layer and
    /// no close policy, the baseline for comparisons.
    #[arg(long)]
    pub(crate) bare: bool,

    /// With --bare, serve the routes as a tower service through hyper-util's
    /// `TowerToHyperService`, as the lifecycle server does.
    #[arg(long, requires = "bare")]
    pub(crate) tower: bool,

    /// On exit, write the final stats as JSON to this file.
    #[arg(long)]
    pub(crate) stats_json: Option<PathBuf>,
}

fn parse_optional_duration(value: &str) -> Result<Option<Duration>, String> {
    match value {
        "off" => Ok(None),
        _ => humantime::parse_duration(value)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

fn parse_optional_count(value: &str) -> Result<Option<u64>, String> {
    match value {
        "off" => Ok(None),
        _ => value.parse().map(Some).map_err(|e| format!("{e}")),
    }
}

fn parse_peer_close(value: &str) -> Result<PeerClose, String> {
    let duration = |d: &str| humantime::parse_duration(d).map_err(|e| e.to_string());
    match value.split_once(':') {
        None if value == "none" => Ok(PeerClose::None),
        Some(("wait", d)) => Ok(PeerClose::wait(duration(d)?)),
        Some(("linger", d)) => Ok(PeerClose::linger(duration(d)?)),
        _ => Err(format!(
            "expected \"none\", \"wait:DUR\" or \"linger:DUR\", not {value:?}"
        )),
    }
}
