//! The close sequence: where close_notify is sent, and what happens after it.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use crate::reason::CloseOutcome;

/// The default bound on writing our close_notify: one second.
pub const DEFAULT_CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(1);

/// The default cap on bytes read and discarded while waiting or lingering: 256 KiB.
pub const DEFAULT_MAX_DISCARD: u64 = 256 * 1024;

/// What the close sequence does after our close_notify is sent.
///
/// Each choice trades a little time for a little certainty:
/// - [`PeerClose::None`] frees the connection at once. If the peer still has unread data in
///   flight towards us, the kernel may answer it with a TCP reset, which can destroy the end
///   of the last response before the peer has read it.
/// - [`PeerClose::Wait`] waits for the peer's own close_notify: a complete, bidirectional
///   close, and an outcome that says whether the peer really saw ours.
/// - [`PeerClose::Linger`] reads and discards for a while, as nginx's lingering close does,
///   so that unread input does not turn our close into a reset; it does not expect the peer
///   to send close_notify, and running out of time is a normal end.
///
/// Both waiting modes end early when the peer closes (with or without close_notify) or resets,
/// and stop once `max_bytes` have been discarded, so a peer that keeps sending cannot hold the
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerClose {
    /// Close at once after our close_notify.
    None,
    /// Wait up to `timeout` for the peer's close_notify, discarding at most `max_bytes`.
    Wait {
        /// How long to wait for the peer's close_notify.
        timeout: Duration,
        /// How many bytes of application data may be read and discarded meanwhile.
        max_bytes: u64,
    },
    /// Read and discard for up to `timeout`, at most `max_bytes`, or until the peer closes.
    Linger {
        /// How long to linger.
        timeout: Duration,
        /// How many bytes may be read and discarded meanwhile.
        max_bytes: u64,
    },
}

impl PeerClose {
    /// Wait up to `timeout` for the peer's close_notify, with the default byte cap
    /// ([`DEFAULT_MAX_DISCARD`]).
    pub fn wait(timeout: Duration) -> Self {
        PeerClose::Wait {
            timeout,
            max_bytes: DEFAULT_MAX_DISCARD,
        }
    }

    /// Linger up to `timeout`, with the default byte cap ([`DEFAULT_MAX_DISCARD`]).
    pub fn linger(timeout: Duration) -> Self {
        PeerClose::Linger {
            timeout,
            max_bytes: DEFAULT_MAX_DISCARD,
        }
    }

    /// The longest this step can take.
    pub fn timeout(&self) -> Duration {
        match *self {
            PeerClose::None => Duration::ZERO,
            PeerClose::Wait { timeout, .. } | PeerClose::Linger { timeout, .. } => timeout,
        }
    }
}

impl Default for PeerClose {
    /// Wait one second for the peer's close_notify.
    fn default() -> Self {
        PeerClose::wait(Duration::from_secs(1))
    }
}

/// What a close sequence did: its outcome, how long it took, how many bytes it discarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseReport {
    /// How the close ended.
    pub outcome: CloseOutcome,
    /// Time from the start of the close sequence to its end.
    pub elapsed: Duration,
    /// Bytes of application data read and thrown away after our close_notify.
    pub discarded: u64,
}

/// A bounded close of a TLS stream: close_notify, then the [`PeerClose`] step.
///
/// Works on any stream whose `poll_shutdown` sends close_notify, which is what
/// tokio-rustls' client and server streams do; on a plain stream the same steps are a
/// half-close followed by the chosen wait. It never waits past its bounds, whatever the peer
/// does, and reports what happened instead of failing.
///
/// ```
/// use std::time::Duration;
/// use conn_lifecycle::{CloseSequence, PeerClose};
///
/// # async fn close(stream: tokio::io::DuplexStream) {
/// let close = CloseSequence::new()
///     .close_notify_timeout(Duration::from_millis(500))
///     .peer_close(PeerClose::wait(Duration::from_secs(1)));
/// let report = close.run(stream).await;
/// println!("closed: {} in {:?}", report.outcome, report.elapsed);
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseSequence {
    close_notify_timeout: Duration,
    peer_close: PeerClose,
}

impl Default for CloseSequence {
    fn default() -> Self {
        Self::new()
    }
}

impl CloseSequence {
    /// A close sequence with the defaults: close_notify bounded by one second, then wait up to
    /// one second for the peer's close_notify.
    pub fn new() -> Self {
        CloseSequence {
            close_notify_timeout: DEFAULT_CLOSE_NOTIFY_TIMEOUT,
            peer_close: PeerClose::default(),
        }
    }

    /// Bounds writing our close_notify (and any data still buffered before it).
    ///
    /// Default: one second. A peer that does not read can keep our send buffer full forever;
    /// when this runs out the outcome is [`CloseOutcome::SendTimedOut`] and the stream is
    /// dropped. Zero gives up at once unless the write completes without waiting.
    pub fn close_notify_timeout(mut self, timeout: Duration) -> Self {
        self.close_notify_timeout = timeout;
        self
    }

    /// What to do after our close_notify is sent. Default: [`PeerClose::default`].
    pub fn peer_close(mut self, peer_close: PeerClose) -> Self {
        self.peer_close = peer_close;
        self
    }

    /// The bound on writing close_notify.
    pub fn get_close_notify_timeout(&self) -> Duration {
        self.close_notify_timeout
    }

    /// The step after close_notify.
    pub fn get_peer_close(&self) -> PeerClose {
        self.peer_close
    }

    /// The longest the whole sequence can take.
    pub fn max_duration(&self) -> Duration {
        self.close_notify_timeout + self.peer_close.timeout()
    }

    /// Runs the close sequence on `stream` and consumes it.
    pub async fn run<S>(&self, stream: S) -> CloseReport
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.run_until(stream, None).await
    }

    /// Runs the close sequence, ending no later than `deadline` if one is given.
    ///
    /// The deadline cuts both steps: a server that must finish its shutdown by a fixed time
    /// passes it here, and the sequence gives up the wait (or the send) when it comes.
    pub async fn run_until<S>(&self, mut stream: S, deadline: Option<Instant>) -> CloseReport
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let start = Instant::now();
        let bound = |step: Duration| {
            let step_end = Instant::now() + step;
            deadline.map_or(step_end, |d| d.min(step_end))
        };
        let report = |outcome, discarded| CloseReport {
            outcome,
            elapsed: start.elapsed(),
            discarded,
        };

        // Step 1: close_notify, flushed, then the transport's write side. A peer that does not
        // read keeps this pending, hence the bound.
        match timeout_at(bound(self.close_notify_timeout), stream.shutdown()).await {
            Err(_elapsed) => return report(CloseOutcome::SendTimedOut, 0),
            Ok(Err(error)) => return report(classify_error(&error), 0),
            Ok(Ok(())) => {}
        }

        // Step 2: the peer's side, per policy.
        let (timeout, max_bytes, on_timeout) = match self.peer_close {
            PeerClose::None => return report(CloseOutcome::CloseNotifySent, 0),
            PeerClose::Wait { timeout, max_bytes } => {
                (timeout, max_bytes, CloseOutcome::WaitTimedOut)
            }
            PeerClose::Linger { timeout, max_bytes } => {
                (timeout, max_bytes, CloseOutcome::Lingered)
            }
        };
        let (outcome, discarded) =
            discard_until_close(&mut stream, bound(timeout), max_bytes, on_timeout).await;
        report(outcome, discarded)
    }
}

/// Reads and discards until the peer closes, the byte cap is reached, or `deadline` (which
/// ends with `on_timeout`). Returns the outcome and the bytes discarded.
async fn discard_until_close<S>(
    stream: &mut S,
    deadline: Instant,
    max_bytes: u64,
    on_timeout: CloseOutcome,
) -> (CloseOutcome, u64)
where
    S: AsyncRead + Unpin,
{
    // One buffer per close, not per read; closes are rare next to requests.
    let mut buf = vec![0u8; 4096];
    let mut discarded = 0u64;
    loop {
        let read = match timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(read) => read,
            Err(_elapsed) => return (on_timeout, discarded),
        };
        match read {
            // tokio-rustls reports the peer's close_notify as end of stream.
            Ok(0) => return (CloseOutcome::PeerCloseNotify, discarded),
            Ok(n) => {
                discarded += n as u64;
                if discarded >= max_bytes {
                    return (CloseOutcome::ByteLimit, discarded);
                }
            }
            Err(error) => return (classify_error(&error), discarded),
        }
    }
}

/// Maps an IO error seen while closing to what the peer did.
fn classify_error(error: &io::Error) -> CloseOutcome {
    match error.kind() {
        // tokio-rustls: "peer closed connection without sending TLS close_notify".
        io::ErrorKind::UnexpectedEof => CloseOutcome::PeerFin,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => CloseOutcome::PeerReset,
        _ => CloseOutcome::PeerError,
    }
}

/// A stream that can be closed abortively: no close_notify, and a TCP reset where the
/// transport has one.
///
/// An abortive close is the honest one when a clean close would make a truncated message
/// look complete: a response framed by the end of the connection (HTTP/1.0, or no length
/// and no chunking) cut before its end. Implemented for tokio's `TcpStream` (by setting a
/// zero linger time, so that the drop sends RST), for tokio-rustls streams over such a
/// transport, and for in-memory duplex streams (which just drop).
pub trait Abort {
    /// Prepares the transport so that dropping it resets the connection.
    ///
    /// # Errors
    ///
    /// Returns the error of the socket option call; the stream can still be dropped.
    fn prepare_abort(&self) -> io::Result<()>;
}

/// Closes `stream` abortively: no close_notify, and a reset where the transport allows.
///
/// Never waits. If the reset cannot be arranged the stream is still dropped, which ends the
/// connection without close_notify, so the peer sees an unexpected end either way.
pub fn abort<S: Abort>(stream: S) -> CloseReport {
    let start = Instant::now();
    if let Err(error) = stream.prepare_abort() {
        tracing::debug!(%error, "could not arrange a reset; dropping the stream");
    }
    drop(stream);
    CloseReport {
        outcome: CloseOutcome::Aborted,
        elapsed: start.elapsed(),
        discarded: 0,
    }
}

impl Abort for tokio::net::TcpStream {
    fn prepare_abort(&self) -> io::Result<()> {
        self.set_zero_linger()
    }
}

impl Abort for tokio::io::DuplexStream {
    fn prepare_abort(&self) -> io::Result<()> {
        Ok(())
    }
}

impl<IO: Abort> Abort for tokio_rustls::server::TlsStream<IO> {
    fn prepare_abort(&self) -> io::Result<()> {
        self.get_ref().0.prepare_abort()
    }
}

impl<IO: Abort> Abort for tokio_rustls::client::TlsStream<IO> {
    fn prepare_abort(&self) -> io::Result<()> {
        self.get_ref().0.prepare_abort()
    }
}

impl<IO: Abort> Abort for tokio_rustls::TlsStream<IO> {
    fn prepare_abort(&self) -> io::Result<()> {
        self.get_ref().0.prepare_abort()
    }
}

impl<T: Abort + ?Sized> Abort for Box<T> {
    fn prepare_abort(&self) -> io::Result<()> {
        (**self).prepare_abort()
    }
}
