//! Why a connection closed, and how its close ended.

use std::fmt;

/// Why a connection is closing.
///
/// The first six reasons are the policy's triggers; the others say that the connection
/// ended without one: the peer went away, or the HTTP layer gave up on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// No request was in flight and no byte moved for the idle timeout.
    Idle,
    /// An HTTP/1 client began a request and did not finish its head (request line and
    /// headers) within the header read timeout.
    HeaderReadTimeout,
    /// The connection reached its maximum age (after jitter).
    MaxAge,
    /// The connection received its last allowed request.
    MaxRequests,
    /// This connection, or every connection of the server, was drained on request.
    Drain,
    /// The server began a graceful shutdown.
    Shutdown,
    /// The peer ended the connection (or asked for it to end, as with `Connection: close`).
    PeerClosed,
    /// The HTTP layer gave up on the connection: a protocol error, an IO error, or a timeout
    /// of its own.
    Error,
    /// The TLS handshake failed or did not finish in time; there was no session to close.
    Handshake,
}

impl CloseReason {
    /// Every reason, in the order used by counters.
    pub const ALL: [CloseReason; 9] = [
        CloseReason::Idle,
        CloseReason::HeaderReadTimeout,
        CloseReason::MaxAge,
        CloseReason::MaxRequests,
        CloseReason::Drain,
        CloseReason::Shutdown,
        CloseReason::PeerClosed,
        CloseReason::Error,
        CloseReason::Handshake,
    ];

    /// A short, stable, lower-case name, as used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::HeaderReadTimeout => "header_read_timeout",
            CloseReason::MaxAge => "max_age",
            CloseReason::MaxRequests => "max_requests",
            CloseReason::Drain => "drain",
            CloseReason::Shutdown => "shutdown",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Error => "error",
            CloseReason::Handshake => "handshake",
        }
    }

    /// Whether the policy chose to close, as opposed to the peer or an error.
    pub fn is_policy(self) -> bool {
        !matches!(
            self,
            CloseReason::PeerClosed | CloseReason::Error | CloseReason::Handshake
        )
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a close sequence ended: what we managed to send and what the peer did.
///
/// None of these is an error of ours. A peer that closed without close_notify or reset the
/// connection is classified and counted, not reported as a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseOutcome {
    /// We sent close_notify and the peer answered with its own: a complete, clean close.
    PeerCloseNotify,
    /// We sent close_notify; the policy did not wait for the peer.
    CloseNotifySent,
    /// We sent close_notify; the peer closed its side (TCP FIN) without sending close_notify.
    PeerFin,
    /// The peer reset the connection (before or after our close_notify).
    PeerReset,
    /// Our close_notify could not be written before its deadline (the peer did not read).
    SendTimedOut,
    /// We sent close_notify; the peer's did not come before the wait's deadline.
    WaitTimedOut,
    /// We sent close_notify and lingered until the deadline; the peer never closed its side.
    Lingered,
    /// We sent close_notify; the peer kept sending data past the byte cap, so we stopped.
    ByteLimit,
    /// The peer sent something that could not be read as TLS, or another IO error ended the
    /// close.
    PeerError,
    /// We closed abortively: no close_notify, and a TCP reset where the transport has one.
    Aborted,
    /// The stream was dropped without a close sequence, so no close_notify was sent: a failed
    /// handshake, or a [`Connection`] dropped without [`Connection::close`].
    ///
    /// [`Connection`]: crate::Connection
    /// [`Connection::close`]: crate::Connection::close
    Dropped,
}

impl CloseOutcome {
    /// Every outcome, in the order used by counters.
    pub const ALL: [CloseOutcome; 11] = [
        CloseOutcome::PeerCloseNotify,
        CloseOutcome::CloseNotifySent,
        CloseOutcome::PeerFin,
        CloseOutcome::PeerReset,
        CloseOutcome::SendTimedOut,
        CloseOutcome::WaitTimedOut,
        CloseOutcome::Lingered,
        CloseOutcome::ByteLimit,
        CloseOutcome::PeerError,
        CloseOutcome::Aborted,
        CloseOutcome::Dropped,
    ];

    /// A short, stable, lower-case name, as used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseOutcome::PeerCloseNotify => "peer_close_notify",
            CloseOutcome::CloseNotifySent => "close_notify_sent",
            CloseOutcome::PeerFin => "peer_fin",
            CloseOutcome::PeerReset => "peer_reset",
            CloseOutcome::SendTimedOut => "send_timed_out",
            CloseOutcome::WaitTimedOut => "wait_timed_out",
            CloseOutcome::Lingered => "lingered",
            CloseOutcome::ByteLimit => "byte_limit",
            CloseOutcome::PeerError => "peer_error",
            CloseOutcome::Aborted => "aborted",
            CloseOutcome::Dropped => "dropped",
        }
    }

    /// Whether our close_notify was written to the transport.
    ///
    /// True for every outcome that got past the first step of the close sequence. A peer that
    /// reset the connection may or may not have received it, so that counts as false.
    pub fn close_notify_sent(self) -> bool {
        matches!(
            self,
            CloseOutcome::PeerCloseNotify
                | CloseOutcome::CloseNotifySent
                | CloseOutcome::PeerFin
                | CloseOutcome::WaitTimedOut
                | CloseOutcome::Lingered
                | CloseOutcome::ByteLimit
        )
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }
}

impl fmt::Display for CloseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_round_trip() {
        for (i, reason) in CloseReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
            assert_eq!(CloseReason::from_index(i), Some(reason));
        }
        for (i, outcome) in CloseOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome.index(), i);
            assert_eq!(CloseOutcome::from_index(i), Some(outcome));
        }
    }
}
