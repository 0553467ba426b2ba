//! What a server reports when it has shut down.

use std::fmt;
use std::time::Duration;

use conn_lifecycle::StatsSnapshot;

/// What happened over a server's life, returned by [`Server::serve`] once it has shut down.
///
/// [`Server::serve`]: crate::Server::serve
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// The counters at the end: connections by close reason and outcome, requests.
    pub stats: StatsSnapshot,
    /// Connections that were still busy when their grace period ended (or at a stop), and were
    /// closed anyway: a request in flight, or a response not yet fully written.
    pub forced: u64,
    /// Connections the server stopped waiting for at the shutdown deadline. Zero unless an
    /// upgraded connection (WebSocket) outlived it.
    pub abandoned: u64,
    /// Time from the start of the shutdown to its end.
    pub shutdown: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "shutdown took {} ms; {} connections and {} requests served; closed by reason:",
            self.shutdown.as_millis(),
            s.opened,
            s.requests
        )?;
        for (reason, n) in s.reasons() {
            write!(f, " {reason}={n}")?;
        }
        write!(f, "; outcomes:")?;
        for (outcome, n) in s.outcomes() {
            write!(f, " {outcome}={n}")?;
        }
        write!(f, "; forced={} abandoned={}", self.forced, self.abandoned)
    }
}
