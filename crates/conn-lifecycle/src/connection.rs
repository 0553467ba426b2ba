//! Per-connection state, shared by the IO wrapper, the in-flight layer and the task that
//! owns the connection.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::close::{self, Abort, CloseReport};
use crate::in_flight::InFlightLayer;
use crate::io::{ReturnedIo, TrackedIo};
use crate::lifecycle::Lifecycle;
use crate::policy::unit_jitter;
use crate::reason::{CloseOutcome, CloseReason};
use crate::trigger::CloseTrigger;

/// One request in flight, in `Shared::load`.
const IN_FLIGHT: u64 = 1;
/// One request the application works on, in `Shared::load`.
const WORKING: u64 = 1 << 32;

/// A `last_activity_ms` meaning "active now; the time is not read yet", left by a read or
/// by the application handing something over. Both happen once or more per request, so they
/// cost a store, not a clock read: the write that usually follows in the same wake of the
/// task records the real time, the close trigger polled after them dates what is left with
/// one clock read (see `Shared::settle`), and any other reader takes its own "now" (see
/// `Shared::last_activity`).
const ACTIVE_NOW: u64 = u64::MAX;

/// A `head_started_ms` meaning "a request head began; the time is not read yet". The
/// trigger's next poll dates it, unless the whole head came at once and its request has
/// started (and cleared it) by then, which is the usual case.
const HEAD_PENDING: u64 = u64::MAX;

/// One connection's state: requests in flight and served, last activity, age, and whether
/// and why it is closing.
///
/// Cloning is cheap and shares the state; the IO wrapper ([`Connection::wrap_io`]), the
/// layer ([`Connection::layer`]) and the task that owns the connection each hold a clone.
/// Reading or updating it takes no lock.
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    id: u64,
    pub(crate) opened: Instant,
    pub(crate) lifecycle: Lifecycle,
    /// The drain epoch when the connection opened; a later one means "drain".
    drain_epoch: u64,
    /// Absolute max-age deadline, jitter applied.
    pub(crate) max_age_at: Option<Instant>,
    /// Two counts in one word, so that a request's start updates both with one atomic
    /// operation: requests in flight (low half, [`IN_FLIGHT`]), and those of them that wait
    /// on the application (high half, [`WORKING`]): a handler running, or a response body
    /// that has not produced its next frame yet. The others wait on the peer.
    load: AtomicU64,
    requests: AtomicU64,
    /// Milliseconds from `opened` to the last byte read or written, or [`ACTIVE_NOW`].
    last_activity_ms: AtomicU64,
    /// One more than the milliseconds from `opened` to the first byte of the request head
    /// being read now, or [`HEAD_PENDING`] until that is dated; zero while no head is being
    /// read (see `Shared::bytes_read`).
    head_started_ms: AtomicU64,
    /// Whether the header read timeout applies: the policy sets one, and the connection
    /// reads HTTP/1 request heads (it is not HTTP/2, nor upgraded).
    reads_heads: AtomicBool,
    /// Set once the connection is upgraded: its stream is then read by the handler's task,
    /// which does not poll the trigger, so reads record their time themselves.
    upgraded: AtomicBool,
    /// Zero while open; otherwise the closing reason's index plus one.
    closing: AtomicU8,
    closed: AtomicBool,
    drain_requested: AtomicBool,
    /// Set when a response framed by the end of the connection was dropped before its end.
    cut_close_delimited: AtomicBool,
    /// Wakes the close trigger on rare events only (drain, shutdown, last request), never
    /// per request.
    pub(crate) events: Notify,
    /// Counts those events, so that a trigger polled for another reason can tell, with
    /// one load, that none came.
    pub(crate) event_count: AtomicU64,
    /// Set by `interrupt_io`: the IO wrapper then ends reads and fails writes.
    interrupted: AtomicBool,
    /// The tasks waiting in the IO wrapper, woken by `interrupt_io`.
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
}

impl Connection {
    pub(crate) fn new(id: u64, lifecycle: Lifecycle) -> Self {
        let opened = Instant::now();
        let policy = lifecycle.policy();
        let max_age_at = policy.max_age().map(|age| {
            let jitter = policy.max_age_jitter().mul_f64(unit_jitter(id));
            opened + age.saturating_sub(jitter)
        });
        let drain_epoch = lifecycle.drain_epoch();
        let reads_heads = policy.header_read_timeout().is_some();
        Connection {
            shared: Arc::new(Shared {
                id,
                opened,
                drain_epoch,
                max_age_at,
                lifecycle,
                load: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                last_activity_ms: AtomicU64::new(0),
                head_started_ms: AtomicU64::new(0),
                reads_heads: AtomicBool::new(reads_heads),
                upgraded: AtomicBool::new(false),
                closing: AtomicU8::new(0),
                closed: AtomicBool::new(false),
                drain_requested: AtomicBool::new(false),
                cut_close_delimited: AtomicBool::new(false),
                events: Notify::new(),
                event_count: AtomicU64::new(0),
                interrupted: AtomicBool::new(false),
                read_waker: AtomicWaker::new(),
                write_waker: AtomicWaker::new(),
            }),
        }
    }

    /// A number that identifies this connection within its [`Lifecycle`], for logs.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// How long ago the connection opened.
    pub fn age(&self) -> Duration {
        self.shared.opened.elapsed()
    }

    /// How long since a byte was last read or written, or the application last handed over
    /// a response or one of its frames.
    pub fn idle_for(&self) -> Duration {
        let now = Instant::now();
        now.saturating_duration_since(self.shared.last_activity(now))
    }

    /// Requests in flight: received by the service, with a response body not yet dropped.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight()
    }

    /// Requests received on this connection so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests()
    }

    /// Why the connection is closing, once it is.
    pub fn closing_reason(&self) -> Option<CloseReason> {
        match self.shared.closing.load(Relaxed) {
            0 => None,
            n => CloseReason::from_index(usize::from(n) - 1),
        }
    }

    /// The lifecycle this connection belongs to.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.shared.lifecycle
    }

    /// Asks this connection to close gracefully, with [`CloseReason::Drain`].
    ///
    /// [`Connection::close_trigger`] resolves soon after; the task that owns the connection
    /// does the rest.
    pub fn drain(&self) {
        self.shared.drain_requested.store(true, Relaxed);
        self.shared.wake_trigger();
    }

    /// Marks the connection as closing for `reason`. Returns false, and changes nothing, if
    /// it was already closing: the first reason is the one that counts.
    pub fn start_closing(&self, reason: CloseReason) -> bool {
        let code = (reason.index() + 1) as u8;
        if self
            .shared
            .closing
            .compare_exchange(0, code, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.lifecycle().counters().closing();
        tracing::debug!(
            reason = %reason,
            in_flight = self.in_flight(),
            requests = self.requests(),
            "connection closing"
        );
        true
    }

    /// Wraps the connection's stream so that reads and writes count as activity and the
    /// stream comes back when the wrapper is dropped. See [`TrackedIo`].
    pub fn wrap_io<T>(&self, io: T) -> (TrackedIo<T>, ReturnedIo<T>) {
        TrackedIo::new(io, self.clone())
    }

    /// A tower layer that counts this connection's requests in flight. See [`InFlightLayer`].
    pub fn layer(&self) -> InFlightLayer {
        InFlightLayer::new(self.clone())
    }

    /// A future that resolves with the reason once the policy says this connection should
    /// close.
    ///
    /// The triggers, first match wins: server shutdown, a drain (of this connection or of
    /// all), the last allowed request received, max age reached, the header read timeout
    /// (a request's head begun and not finished in time; see
    /// [`PolicyBuilder::header_read_timeout`]), and idle (no request that the application
    /// is working on, and no activity for the idle timeout, counted from the open for a
    /// connection that never sent anything; see [`PolicyBuilder::idle_timeout`]). It sleeps
    /// between deadlines and is woken only by rare events, so an armed idle timer costs
    /// nothing while nothing happens. Cancel-safe: dropping it and calling this again loses
    /// nothing, and several may wait on one connection at once.
    ///
    /// Poll it in the task that serves the connection, after the HTTP connection's future
    /// (a `biased` `select!` with that future first). Reads record activity and the start of
    /// a request head without reading the clock, and the trigger dates them at its next
    /// poll: in that position, in the same wake of the task. Polled first, it dates them at
    /// the task's next wake (the next byte, at the latest); polled from another task, at its
    /// own next wake, which may be its timer: the idle and header read timeouts can then
    /// count from later than the read, by up to one idle timeout, and never fire early.
    ///
    /// [`PolicyBuilder::header_read_timeout`]: crate::PolicyBuilder::header_read_timeout
    /// [`PolicyBuilder::idle_timeout`]: crate::PolicyBuilder::idle_timeout
    pub fn close_trigger(&self) -> CloseTrigger<'_> {
        CloseTrigger::new(self)
    }

    /// Tells the connection that it speaks HTTP/2, to which the header read timeout does not
    /// apply (frames arrive between requests there, and are not request heads).
    ///
    /// Call it when ALPN negotiated `h2`. Without the call, the in-flight layer makes it on
    /// the connection's first HTTP/2 request; until then, bytes count as the start of an
    /// HTTP/1 request head (HTTP/2 over TLS without ALPN is not allowed by RFC 9113 anyway).
    pub fn set_http2(&self) {
        self.shared.stop_reading_heads();
    }

    /// Makes the IO wrapper end every read (as end of stream) and fail every write, now and
    /// from now on, waking whoever waits on it.
    ///
    /// For a connection whose stream is held by someone else when it must close: an
    /// upgraded connection (WebSocket) held by its handler, typically. A handler that then
    /// sees the end of its stream drops it, and the stream comes back through
    /// [`ReturnedIo`] to be closed with close_notify. A handler that ignores its stream
    /// does not notice; there is nothing more to do from outside.
    pub fn interrupt_io(&self) {
        let s = &*self.shared;
        s.interrupted.store(true, Relaxed);
        s.read_waker.wake();
        s.write_waker.wake();
    }

    /// Whether a response framed by the end of the connection was cut before its end.
    ///
    /// Such a response (HTTP/1.0, or HTTP/1.1 without length or chunking) has no framing of
    /// its own: if the connection then ended with close_notify, the client would take the
    /// truncated body for a complete one. [`Connection::close`] closes abortively instead.
    pub fn cut_close_delimited(&self) -> bool {
        self.shared.cut_close_delimited.load(Relaxed)
    }

    /// Closes `stream` by the policy's close sequence, bounded by `deadline` too if given,
    /// then counts and logs the close.
    ///
    /// `reason` is used only if the connection was not already closing. The close is
    /// abortive, not clean, when [`Connection::cut_close_delimited`] says a clean one would
    /// lie.
    pub async fn close<S>(
        &self,
        stream: S,
        reason: CloseReason,
        deadline: Option<Instant>,
    ) -> CloseReport
    where
        S: AsyncRead + AsyncWrite + Abort + Unpin,
    {
        self.start_closing(reason);
        let report = if self.cut_close_delimited() {
            close::abort(stream)
        } else {
            let sequence = self.lifecycle().policy().close();
            sequence.run_until(stream, deadline).await
        };
        self.record_close(report);
        report
    }

    /// Counts and logs a close that ran outside [`Connection::close`]: a close sequence of
    /// your own, or a handshake that failed. Only the first record counts.
    pub fn record_close(&self, report: CloseReport) {
        if self.shared.closed.swap(true, Relaxed) {
            return;
        }
        let was_closing = self.closing_reason().is_some();
        let reason = self.closing_reason().unwrap_or(CloseReason::PeerClosed);
        self.lifecycle()
            .counters()
            .closed(reason, report.outcome, was_closing);
        tracing::debug!(
            reason = %reason,
            outcome = %report.outcome,
            elapsed_ms = report.elapsed.as_millis() as u64,
            discarded = report.discarded,
            requests = self.requests(),
            "connection closed"
        );
    }

    /// Counts a new request; returns true if it is the last one the policy allows.
    #[inline]
    pub(crate) fn request_started(&self) -> bool {
        let s = &*self.shared;
        let requests = s.requests.fetch_add(1, Relaxed) + 1;
        // The handler runs from now on: the application is working on the request.
        s.load.fetch_add(IN_FLIGHT + WORKING, Relaxed);
        // Its head is complete.
        s.head_started_ms.store(0, Relaxed);
        // Wake the trigger once, on the last allowed request, so that its response can still
        // carry `Connection: close`.
        let last = s.lifecycle.policy().max_requests().map(|max| max.max(1)) == Some(requests);
        if last {
            // Closing starts now: hyper may finish the connection on its own after this
            // response, before the trigger runs.
            self.start_closing(CloseReason::MaxRequests);
            s.wake_trigger();
        }
        last
    }

    /// Counts a request in flight as waiting on the application (`true`: a handler running,
    /// a response body preparing its next frame) or on the peer (`false`).
    ///
    /// Only requests the application works on keep a connection from being idle: a response
    /// the peer does not take (it stops reading, or gives an HTTP/2 stream no flow-control
    /// credit) moves no byte, and such a peer must not hold the connection forever.
    #[inline]
    pub(crate) fn set_working(&self, working: bool) {
        let s = &*self.shared;
        if working {
            s.load.fetch_add(WORKING, Relaxed);
        } else {
            // The idle clock starts when the application hands over, not at the last byte
            // that moved before a long handler.
            s.mark_active();
            s.load.fetch_sub(WORKING, Relaxed);
        }
    }

    /// Counts a request as finished; `working` says the application was still working on it
    /// (the request was cancelled).
    #[inline]
    pub(crate) fn request_finished(&self, working: bool, cut_close_delimited: bool) {
        let s = &*self.shared;
        if working {
            s.mark_active();
            s.load.fetch_sub(IN_FLIGHT + WORKING, Relaxed);
        } else {
            // Nothing to record: the application's last hand-over already did.
            s.load.fetch_sub(IN_FLIGHT, Relaxed);
        }
        if cut_close_delimited {
            s.cut_close_delimited.store(true, Relaxed);
        }
    }
}

impl Shared {
    pub(crate) fn is_interrupted(&self) -> bool {
        self.interrupted.load(Relaxed)
    }

    /// Remembers who waits to read, so that an interruption can wake it.
    pub(crate) fn register_reader(&self, waker: &std::task::Waker) {
        self.read_waker.register(waker);
    }

    /// Remembers who waits to write, so that an interruption can wake it.
    pub(crate) fn register_writer(&self, waker: &std::task::Waker) {
        self.write_waker.register(waker);
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.load.load(Relaxed) & (WORKING - 1)
    }

    pub(crate) fn working(&self) -> u64 {
        self.load.load(Relaxed) >> 32
    }

    /// Whether this connection, or all, were asked to drain.
    pub(crate) fn drain_requested(&self) -> bool {
        self.drain_requested.load(Relaxed) || self.lifecycle.drain_epoch() != self.drain_epoch
    }

    /// Wakes every close trigger waiting on this connection, so that they look again.
    pub(crate) fn wake_trigger(&self) {
        self.event_count.fetch_add(1, Release);
        self.events.notify_waiters();
    }

    pub(crate) fn head_started_ms(&self) -> u64 {
        self.head_started_ms.load(Relaxed)
    }

    /// When the request head recorded as `head` (a `head_started_ms` value) must be
    /// complete; `None` for no head, one not dated yet, or no header read timeout.
    pub(crate) fn header_read_deadline(&self, head: u64) -> Option<Instant> {
        if head == 0 || head == HEAD_PENDING || !self.reads_heads.load(Relaxed) {
            return None;
        }
        let timeout = self.lifecycle.policy().header_read_timeout()?;
        Some(self.opened + Duration::from_millis(head - 1) + timeout)
    }

    /// The connection switched protocols (a 101, or a tunnel after CONNECT): no more request
    /// heads, and its reads may happen on another task than the trigger's.
    pub(crate) fn upgraded(&self) {
        self.upgraded.store(true, Relaxed);
        self.stop_reading_heads();
    }

    /// The header read timeout no longer applies: HTTP/2, or an upgraded connection.
    pub(crate) fn stop_reading_heads(&self) {
        if self.reads_heads.load(Relaxed) {
            self.reads_heads.store(false, Relaxed);
            self.head_started_ms.store(0, Relaxed);
        }
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Records activity now. Called on every write: one clock read and one store.
    pub(crate) fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Relaxed);
    }

    /// Records a read: activity, and the start of a request head if it is the first byte
    /// read since the last request started, with none in flight. Reads no clock (see
    /// [`ACTIVE_NOW`] and [`HEAD_PENDING`]), except on an upgraded connection.
    ///
    /// HTTP/1 reads a request's head only once the previous response is done, so bytes
    /// read while a request is in flight (its body, or a request pipelined behind it) start
    /// no head; the next read after the response does.
    #[inline]
    pub(crate) fn bytes_read(&self) {
        if self.upgraded.load(Relaxed) {
            self.touch();
            return;
        }
        self.mark_active();
        if self.head_started_ms.load(Relaxed) == 0
            && self.load.load(Relaxed) == 0
            && self.reads_heads.load(Relaxed)
        {
            self.head_started_ms.store(HEAD_PENDING, Relaxed);
        }
    }

    /// Dates the marks that reads and hand-overs left since the last call, with one clock
    /// read, and none when there are none. The trigger calls it at every poll, so that a
    /// read in one wake of the connection's task is dated in that same wake.
    #[inline]
    pub(crate) fn settle(&self) {
        if self.last_activity_ms.load(Relaxed) == ACTIVE_NOW
            || self.head_started_ms.load(Relaxed) == HEAD_PENDING
        {
            self.settle_at(Instant::now());
        }
    }

    /// [`Shared::settle`] with the time given.
    pub(crate) fn settle_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.opened).as_millis() as u64;
        // A write may have recorded a real time meanwhile, or a request started; they win.
        let _ = self
            .last_activity_ms
            .compare_exchange(ACTIVE_NOW, ms, Relaxed, Relaxed);
        let _ = self
            .head_started_ms
            .compare_exchange(HEAD_PENDING, ms + 1, Relaxed, Relaxed);
    }

    /// Records activity now without reading the clock: see [`ACTIVE_NOW`].
    #[inline]
    fn mark_active(&self) {
        self.last_activity_ms.store(ACTIVE_NOW, Relaxed);
    }

    /// When the last activity was; `now` if it is not dated yet (see [`ACTIVE_NOW`]), in
    /// which case `now` is also recorded as its time.
    ///
    /// Taking the reader's "now" only ever makes the connection look busier: at worst an
    /// idle timeout counts from a check made after the read or hand-over instead of from
    /// the moment itself, and only when neither a write nor the trigger dated it first.
    pub(crate) fn last_activity(&self, now: Instant) -> Instant {
        let ms = self.last_activity_ms.load(Relaxed);
        if ms != ACTIVE_NOW {
            return self.opened + Duration::from_millis(ms);
        }
        let now_ms = now.saturating_duration_since(self.opened).as_millis() as u64;
        // A write may have recorded a real time meanwhile; it wins.
        let _ = self
            .last_activity_ms
            .compare_exchange(ACTIVE_NOW, now_ms, Relaxed, Relaxed);
        now
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.lifecycle.forget(self.id, self.requests());
        if !self.closed.load(Relaxed) {
            let was_closing = self.closing.load(Relaxed) != 0;
            let reason = match self.closing.load(Relaxed) {
                0 => CloseReason::PeerClosed,
                n => CloseReason::from_index(usize::from(n) - 1).unwrap_or(CloseReason::Error),
            };
            let stats = self.lifecycle.counters();
            stats.closed(reason, CloseOutcome::Dropped, was_closing);
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id())
            .field("age", &self.age())
            .field("in_flight", &self.in_flight())
            .field("requests", &self.requests())
            .field("closing_reason", &self.closing_reason())
            .finish()
    }
}
