//! Counters shared by every connection of a server, read as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::reason::{CloseOutcome, CloseReason};

const REASONS: usize = CloseReason::ALL.len();
const OUTCOMES: usize = CloseOutcome::ALL.len();

/// The live counters. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    closing: AtomicU64,
    closed: AtomicU64,
    by_reason: [AtomicU64; REASONS],
    by_outcome: [AtomicU64; OUTCOMES],
}

impl Stats {
    pub(crate) fn opened(&self) {
        self.inner.opened.fetch_add(1, Relaxed);
    }

    pub(crate) fn closing(&self) {
        self.inner.closing.fetch_add(1, Relaxed);
    }

    pub(crate) fn closed(&self, reason: CloseReason, outcome: CloseOutcome, was_closing: bool) {
        let c = &self.inner;
        if was_closing {
            c.closing.fetch_sub(1, Relaxed);
        }
        c.closed.fetch_add(1, Relaxed);
        c.by_reason[reason.index()].fetch_add(1, Relaxed);
        c.by_outcome[outcome.index()].fetch_add(1, Relaxed);
    }

    /// Connections opened and not yet closed.
    pub(crate) fn open(&self) -> u64 {
        let closed = self.inner.closed.load(Relaxed);
        self.inner.opened.load(Relaxed).saturating_sub(closed)
    }

    /// The counters, with the request counts summed from the connections by the caller.
    pub(crate) fn snapshot(&self, in_flight: u64, requests: u64) -> StatsSnapshot {
        let c = &self.inner;
        let closed = c.closed.load(Relaxed);
        let opened = c.opened.load(Relaxed);
        StatsSnapshot {
            opened,
            open: opened.saturating_sub(closed),
            closing: c.closing.load(Relaxed),
            closed,
            in_flight,
            requests,
            by_reason: std::array::from_fn(|i| c.by_reason[i].load(Relaxed)),
            by_outcome: std::array::from_fn(|i| c.by_outcome[i].load(Relaxed)),
        }
    }
}

/// A copy of a server's counters at one moment.
///
/// The connection counters are read one by one, without a lock, so a snapshot taken while
/// connections open and close may be off by the few that changed during the read. The
/// request counts are summed over the open connections when the snapshot is taken (requests
/// cost no server-wide update that way), so taking one costs a little per open connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections opened since the start.
    pub opened: u64,
    /// Connections open now (opened and not yet closed), closing ones included.
    pub open: u64,
    /// Connections that have started closing and not finished yet.
    pub closing: u64,
    /// Connections closed since the start.
    pub closed: u64,
    /// Requests in flight now: received, with a response body not yet dropped.
    pub in_flight: u64,
    /// Requests received since the start.
    pub requests: u64,
    by_reason: [u64; REASONS],
    by_outcome: [u64; OUTCOMES],
}

impl StatsSnapshot {
    /// Connections closed for `reason`.
    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.by_reason[reason.index()]
    }

    /// Connections whose close ended with `outcome`.
    pub fn outcome(&self, outcome: CloseOutcome) -> u64 {
        self.by_outcome[outcome.index()]
    }

    /// Every reason with a non-zero count.
    pub fn reasons(&self) -> impl Iterator<Item = (CloseReason, u64)> + '_ {
        nonzero(&self.by_reason, CloseReason::from_index)
    }

    /// Every outcome with a non-zero count.
    pub fn outcomes(&self) -> impl Iterator<Item = (CloseOutcome, u64)> + '_ {
        nonzero(&self.by_outcome, CloseOutcome::from_index)
    }
}

fn nonzero<'a, T: 'a>(
    counts: &'a [u64],
    name: fn(usize) -> Option<T>,
) -> impl Iterator<Item = (T, u64)> + 'a {
    counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .filter_map(move |(i, n)| Some((name(i)?, *n)))
}
