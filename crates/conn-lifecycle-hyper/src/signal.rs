//! The usual process signals, wired to a [`Handle`].

use crate::Handle;

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C).
///
/// Pass it to [`Server::with_graceful_shutdown`], or use [`spawn_handler`], which also makes
/// a second signal stop at once. If a signal handler cannot be installed the error is logged
/// and that signal is ignored, since the server is better off running than failing.
///
/// [`Server::with_graceful_shutdown`]: crate::Server::with_graceful_shutdown
pub async fn shutdown_signal() {
    Signals::new().recv().await
}

/// Spawns a task that starts a graceful shutdown at the first SIGTERM or SIGINT and stops
/// at once at the second.
///
/// # Panics
///
/// Panics if called outside a tokio runtime, like `tokio::spawn`.
pub fn spawn_handler(handle: Handle) {
    // Listen before spawning, so a signal sent right after this call is not missed.
    let mut signals = Signals::new();
    tokio::spawn(async move {
        signals.recv().await;
        tracing::info!("signal received, shutting down gracefully; send another to stop now");
        handle.shutdown();
        signals.recv().await;
        tracing::warn!("second signal received, stopping now");
        handle.stop();
    });
}

/// SIGTERM and SIGINT, listened to for as long as this lives.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, signal = name, "cannot listen for signal");
                None
            }
        };
        Signals {
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    #[cfg(not(unix))]
    fn new() -> Self {
        Signals {}
    }

    #[cfg(unix)]
    async fn recv(&mut self) {
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.terminate) => {}
            _ = next(&mut self.interrupt) => {}
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
