//! The close trigger: the future that says when the policy wants a connection closed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Acquire;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::sync::futures::Notified;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::connection::{Connection, Shared};
use crate::reason::CloseReason;

pin_project! {
    /// Resolves with the reason once the policy says its connection should close. Made by
    /// [`Connection::close_trigger`], which lists the triggers.
    ///
    /// It sleeps on one timer until the next deadline and is woken by rare events only (a
    /// drain, a shutdown, the last allowed request), never per request. It is polled at
    /// every wake of the task that runs it, though, whatever woke the task: such a poll
    /// costs a few loads and comparisons when neither its timer nor an event is due, and
    /// touches neither the timer nor the notification. It also dates the activity that reads
    /// and hand-overs in that wake recorded without reading the clock: one clock read, and
    /// only when a write did not date it first.
    #[must_use = "futures do nothing unless polled"]
    pub struct CloseTrigger<'a> {
        conn: &'a Connection,
        #[pin]
        sleep: Sleep,
        #[pin]
        event: Notified<'a>,
        // The deadline the timer is set to, while it is set.
        armed: Option<Instant>,
        // The event count as of the last look; a change means "look again".
        seen_events: u64,
        // The connection's `head_started_ms` as of the last poll.
        seen_head: u64,
        // The waker the timer and the notification hold, from the last full poll.
        task: Option<Waker>,
    }
}

impl<'a> CloseTrigger<'a> {
    pub(crate) fn new(conn: &'a Connection) -> Self {
        let shared = &*conn.shared;
        CloseTrigger {
            conn,
            // Not polled until a deadline is set; the open time saves a clock read.
            sleep: sleep_until(shared.opened),
            event: shared.events.notified(),
            armed: None,
            seen_events: 0,
            seen_head: 0,
            task: None,
        }
    }
}

impl Future for CloseTrigger<'_> {
    type Output = CloseReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let mut this = self.project();
        let shared = &*this.conn.shared;
        // Reads and hand-overs in this wake of the task left marks without a time.
        shared.settle();
        // Quiet since the last full poll: same waker, no event, timer not fired, and no
        // request head that needs an earlier deadline.
        let same_task = this
            .task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()));
        if same_task
            && shared.event_count.load(Acquire) == *this.seen_events
            && (this.armed.is_none() || !this.sleep.is_elapsed())
            && !head_moves_deadline(shared, this.seen_head, *this.armed)
        {
            return Poll::Pending;
        }

        loop {
            // Listening before looking, so that an event between the look and the wait is
            // not missed.
            this.event.as_mut().enable();
            *this.seen_events = shared.event_count.load(Acquire);
            *this.seen_head = shared.head_started_ms();

            let wake_at = match look(shared, Instant::now()) {
                Ok(reason) => return Poll::Ready(reason),
                Err(wake_at) => wake_at,
            };
            if let Some(at) = wake_at.filter(|at| Some(*at) != *this.armed) {
                this.sleep.as_mut().reset(at);
            }
            *this.armed = wake_at;

            // Waiting -> Looking again: an event came, or the deadline passed.
            if this.event.as_mut().poll(cx).is_ready() {
                this.event.set(shared.events.notified());
                continue;
            }
            if this.armed.is_some() && this.sleep.as_mut().poll(cx).is_ready() {
                *this.armed = None;
                continue;
            }
            // Waiting: both hold this waker now.
            if !this
                .task
                .as_ref()
                .is_some_and(|task| task.will_wake(cx.waker()))
            {
                *this.task = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
    }
}

/// Whether a request's head started since the last poll with a header read deadline before
/// the timer's. Records the head it saw either way.
///
/// Checked at every poll without reading the clock: the IO wrapper records the start of a
/// head during the HTTP connection's poll, and a trigger polled after it in the same wake
/// of the task sets its timer at once.
#[inline]
fn head_moves_deadline(shared: &Shared, seen_head: &mut u64, armed: Option<Instant>) -> bool {
    let head = shared.head_started_ms();
    if head == *seen_head {
        return false;
    }
    *seen_head = head;
    match (shared.header_read_deadline(head), armed) {
        (Some(deadline), Some(armed)) => deadline < armed,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The policy's verdict at `now`: a reason to close, or when to look again (`None`: only an
/// event can change the verdict).
fn look(shared: &Shared, now: Instant) -> Result<CloseReason, Option<Instant>> {
    let policy = shared.lifecycle.policy();
    shared.settle_at(now);
    if shared.lifecycle.is_shutting_down() {
        return Ok(CloseReason::Shutdown);
    }
    if shared.drain_requested() {
        return Ok(CloseReason::Drain);
    }
    let max_requests = policy.max_requests().map(|max| max.max(1));
    if max_requests.is_some_and(|max| shared.requests() >= max) {
        return Ok(CloseReason::MaxRequests);
    }

    let max_age_at = shared.max_age_at;
    let header_at = shared.header_read_deadline(shared.head_started_ms());
    let idle_at = policy.idle_timeout().map(|timeout| {
        // A busy connection is not idle; look again one timeout from now.
        let from = if shared.working() > 0 {
            now
        } else {
            shared.last_activity(now)
        };
        from + timeout
    });
    let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
    if due(max_age_at) {
        return Ok(CloseReason::MaxAge);
    }
    if due(header_at) {
        return Ok(CloseReason::HeaderReadTimeout);
    }
    if due(idle_at) {
        return Ok(CloseReason::Idle);
    }
    Err([max_age_at, header_at, idle_at].into_iter().flatten().min())
}

impl fmt::Debug for CloseTrigger<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseTrigger")
            .field("connection", &self.conn.id())
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}
