//! The policy: when a connection closes, and how.

use std::time::Duration;

use crate::close::{CloseSequence, PeerClose};

/// When connections close, and how.
///
/// Built with [`Policy::builder`]; [`Policy::default`] gives the safe defaults listed on each
/// option of [`PolicyBuilder`]. Cloning is cheap; a policy is read, never changed, once the
/// server runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    idle_timeout: Option<Duration>,
    header_read_timeout: Option<Duration>,
    max_age: Option<Duration>,
    max_age_jitter: Option<Duration>,
    max_requests: Option<u64>,
    grace: Duration,
    close: CloseSequence,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::builder().build()
    }
}

impl Policy {
    /// Starts a policy from the defaults.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy {
                idle_timeout: Some(Duration::from_secs(60)),
                header_read_timeout: Some(Duration::from_secs(30)),
                max_age: None,
                max_age_jitter: None,
                max_requests: None,
                grace: Duration::from_secs(10),
                close: CloseSequence::new(),
            },
        }
    }

    /// How long a connection may stay idle; `None` when idle connections are kept.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// How long an HTTP/1 client may take over a request's head once it has begun; `None`
    /// for no limit.
    pub fn header_read_timeout(&self) -> Option<Duration> {
        self.header_read_timeout
    }

    /// The maximum connection age before jitter; `None` when connections may live forever.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// How much earlier than [`Policy::max_age`] a connection may be closed, at most.
    pub fn max_age_jitter(&self) -> Duration {
        match (self.max_age_jitter, self.max_age) {
            (Some(jitter), Some(age)) => jitter.min(age),
            (None, Some(age)) => age / 10,
            (_, None) => Duration::ZERO,
        }
    }

    /// The number of requests a connection may carry; `None` for no limit.
    pub fn max_requests(&self) -> Option<u64> {
        self.max_requests
    }

    /// How long in-flight requests may finish once a connection starts closing.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The close sequence run at the end of every connection.
    pub fn close(&self) -> &CloseSequence {
        &self.close
    }
}

/// Builds a [`Policy`]. Every option states its default.
#[derive(Clone, Debug)]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// Closes a connection once the application has worked on none of its requests and no
    /// byte has moved for `timeout`.
    ///
    /// Default: 60 seconds. `None` disables the timeout (a connection that sends nothing
    /// then stays open until the peer, another trigger or a shutdown ends it). The clock
    /// starts when the connection opens, so a client that completes its handshake and then
    /// sends nothing is covered.
    ///
    /// A request keeps its connection busy while its handler runs and while its response
    /// body prepares its next frame, however long that takes: a slow stream is not idle. A
    /// response that waits on the peer does not: a client that stops reading, or an HTTP/2
    /// stream it gives no flow-control credit, moves no byte, and the connection counts as
    /// idle after `timeout`, then closes through the grace period. A request body the client
    /// stops sending keeps the handler waiting, so it is busy: there only the max age and a
    /// shutdown end it, unless the handler bounds its reads (tower-http's
    /// `RequestBodyTimeoutLayer` does, for every route). Zero closes a connection as soon as
    /// it is idle.
    ///
    /// The clock restarts at every read and write, and when the application hands over a
    /// response or one of its frames. A hand-over records no time of its own (that would be
    /// a clock read per request): the write that follows it does. If no byte moves after a
    /// hand-over, the timeout counts from the trigger's next check instead, which can add up
    /// to one more `timeout`, never less.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.policy.idle_timeout = timeout.into();
        self
    }

    /// Closes an HTTP/1 connection whose client began a request and has not finished its
    /// head (the request line and headers) within `timeout`.
    ///
    /// Default: 30 seconds. `None` disables it. This is what stops a client that sends its
    /// headers a byte at a time: every byte is activity, so the idle timeout never ends such
    /// a connection. The clock starts at the first byte read while no request is in flight
    /// and stops when the request reaches the service; a keep-alive connection waiting for
    /// its next request is the idle timeout's business, not this one's. (hyper's own header
    /// read timeout runs from the end of the previous response instead, so it also closes
    /// keep-alive connections that are merely idle, and without telling why; the hyper
    /// adapter turns it off in favour of this one.) The connection closes at once, without a
    /// grace period, since no request has started.
    ///
    /// It does not apply to HTTP/2, where frames come and go between requests (see
    /// [`Connection::set_http2`]), nor to a connection upgraded to another protocol. So an
    /// HTTP/2 client that trickles the frames of a request's headers is ended by neither
    /// this nor the idle timeout; [`max_age`](Self::max_age) bounds it.
    /// Zero closes a connection whose request head did not come whole in one read.
    ///
    /// [`Connection::set_http2`]: crate::Connection::set_http2
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.policy.header_read_timeout = timeout.into();
        self
    }

    /// Closes a connection gracefully once it is this old, minus a random jitter.
    ///
    /// Default: `None` (no limit). Useful behind a load balancer, so that clients reconnect
    /// and spread over new instances. See [`PolicyBuilder::max_age_jitter`].
    pub fn max_age(mut self, age: impl Into<Option<Duration>>) -> Self {
        self.policy.max_age = age.into();
        self
    }

    /// Spreads max-age closes: each connection's age limit is lowered by a random amount up
    /// to `jitter`, so connections opened together do not all reconnect together.
    ///
    /// Default: a tenth of the max age. Zero disables jitter; a value above the max age is
    /// cut to it. Has no effect without [`PolicyBuilder::max_age`].
    pub fn max_age_jitter(mut self, jitter: Duration) -> Self {
        self.policy.max_age_jitter = Some(jitter);
        self
    }

    /// Closes a connection gracefully after it has received `max` requests.
    ///
    /// Default: `None` (no limit). The last request is served in full; HTTP/1 marks its
    /// response `Connection: close`, HTTP/2 sends GOAWAY. Zero behaves like one, since a
    /// connection cannot refuse the request that tells it the count.
    ///
    /// HTTP/2 streams that the client opened before the GOAWAY reached it are still served
    /// (GOAWAY names the last stream the server will answer), so a client that multiplexes
    /// may get a few more than `max` on one connection.
    pub fn max_requests(mut self, max: impl Into<Option<u64>>) -> Self {
        self.policy.max_requests = max.into();
        self
    }

    /// How long in-flight requests may finish once a connection starts closing, before it
    /// is closed anyway.
    ///
    /// Default: 10 seconds. Zero closes at once after asking the HTTP layer to stop; a
    /// response cut this way is ended so the client can tell (see the crate docs).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.policy.grace = grace;
        self
    }

    /// The close sequence run at the end of every connection. Default: [`CloseSequence::new`].
    pub fn close(mut self, close: CloseSequence) -> Self {
        self.policy.close = close;
        self
    }

    /// Shorthand for the close sequence's close_notify timeout. Default: one second.
    pub fn close_notify_timeout(mut self, timeout: Duration) -> Self {
        self.policy.close = self.policy.close.close_notify_timeout(timeout);
        self
    }

    /// Shorthand for the close sequence's step after close_notify. Default: wait one second
    /// for the peer's close_notify.
    pub fn peer_close(mut self, peer_close: PeerClose) -> Self {
        self.policy.close = self.policy.close.peer_close(peer_close);
        self
    }

    /// Finishes the policy.
    pub fn build(self) -> Policy {
        self.policy
    }
}

/// A number in `0..1` derived from `seed`, spread well enough for jitter.
///
/// std's `RandomState` is seeded randomly per process, so two servers started together do
/// not pick the same jitter; no random-number crate is needed for this.
pub(crate) fn unit_jitter(seed: u64) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;

    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut hasher = STATE.get_or_init(Default::default).build_hasher();
    hasher.write_u64(seed);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_ones() {
        let policy = Policy::default();
        assert_eq!(policy.idle_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(policy.header_read_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(policy.max_age(), None);
        assert_eq!(policy.max_requests(), None);
        assert_eq!(policy.grace(), Duration::from_secs(10));
        assert_eq!(
            policy.close().get_close_notify_timeout(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn jitter_defaults_to_a_tenth_and_is_capped_by_age() {
        let policy = Policy::builder().max_age(Duration::from_secs(100)).build();
        assert_eq!(policy.max_age_jitter(), Duration::from_secs(10));
        let policy = Policy::builder()
            .max_age(Duration::from_secs(1))
            .max_age_jitter(Duration::from_secs(5))
            .build();
        assert_eq!(policy.max_age_jitter(), Duration::from_secs(1));
    }

    #[test]
    fn unit_jitter_stays_in_range_and_varies() {
        let values: Vec<f64> = (0..1000).map(unit_jitter).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }
}
