//! Hostile peers, each under the idle timeout and under a graceful shutdown. In every case
//! the server lets go of the connection within its configured bound, counts the close,
//! does not panic, and keeps serving others meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    assert_serves, event, shutdown_bound, timeline, Peer, Serve, Stats, Streaming, CLOSE_NOTIFY,
    GRACE, HANDSHAKE_TIMEOUT, HEADER_READ_TIMEOUT, IDLE, MARGIN, PEER_WAIT, SHORT,
};

/// One hostile peer and what the server must do about it.
struct Case {
    /// The test's name, for its scratch directory.
    name: &'static str,
    /// The peer: a script of tests/peers and its arguments.
    script: &'static str,
    args: &'static [&'static str],
    /// The peer's hostile act waits for a go, so that under shutdown it comes after the
    /// shutdown started; the other peers are hostile by standing still.
    acts_on_go: bool,
    /// The server's policy flags.
    flags: &'static [&'static str],
    /// The longest the server may hold the connection once the peer is in place.
    bound: Duration,
    /// Why the server may say it closed the hostile connection (one of them).
    reasons: &'static [&'static str],
    /// How the close may have ended (one of them).
    outcomes: &'static [&'static str],
    /// What the peer must have seen.
    check: fn(&[Value]),
}

/// The flags of the shutdown tests: an idle timeout that stays out of the way.
const SHUTDOWN_FLAGS: &[&str] = &[
    "--idle-timeout",
    "60s",
    "--grace",
    "1s",
    "--close-notify-timeout",
    "1s",
    "--peer-close",
    "wait:1s",
];

/// The bound after an idle trigger: idle timeout, grace, close_notify, wait for the peer.
const IDLE_BOUND: Duration = IDLE
    .saturating_add(GRACE)
    .saturating_add(CLOSE_NOTIFY)
    .saturating_add(PEER_WAIT);

impl Case {
    fn start_peer(&self, serve: &Serve, wait_go: bool) -> (Peer, u16) {
        let mut args = self.args.to_vec();
        if wait_go {
            args.push("--wait-go");
        }
        let mut peer = Peer::start(self.script, serve.port(), &args);
        let ready = peer.expect("ready", MARGIN * 3);
        let port = ready["port"].as_u64().expect("ready carries the port");
        (peer, u16::try_from(port).expect("a port"))
    }

    /// The peer in place with the idle timeout armed: the server lets go within the bound,
    /// and serves a normal request meanwhile.
    fn under_idle_timeout(&self) {
        let mut serve = Serve::start(&format!("{}_idle", self.name), self.flags);
        let (peer, port) = self.start_peer(&serve, false);
        let since = Instant::now();

        assert_serves(&serve);
        let released = serve.wait_released(port, since, self.bound + MARGIN);
        if !self.acts_on_go {
            // A peer that stands still must have been seen holding its connection, or the
            // wait above proved nothing.
            assert!(
                released.held,
                "the connection was gone before the wait began"
            );
        }
        assert!(released.after <= self.bound + MARGIN, "{released:?}");
        let events = peer.finish();
        (self.check)(&events);

        let stats = serve.shut_down(GRACE);
        self.assert_counted(&stats, &[("peer_closed", 1)], &serve);
    }

    /// The peer in place, and another client's response in flight, when a graceful
    /// shutdown starts: the server exits within its bound, the other response is whole.
    fn under_shutdown(&self) {
        let mut serve = Serve::start(&format!("{}_shutdown", self.name), SHUTDOWN_FLAGS);
        let (mut peer, _port) = self.start_peer(&serve, self.acts_on_go);
        let other = Streaming::start(&serve, "--http1.1", 5, 100);

        let sent = serve.sigterm();
        if self.acts_on_go {
            serve.wait_listener_closed(MARGIN);
            peer.go();
        }
        let bound = shutdown_bound(GRACE) + MARGIN;
        let took = serve.wait_exit(sent, bound);
        assert!(took <= bound, "shutdown took {took:?}\n{}", serve.report());
        other.assert_whole();
        let events = peer.finish();
        (self.check)(&events);

        let stats = serve.stats();
        self.assert_counted(&stats, &[("shutdown", 1)], &serve);
    }

    /// Every connection closed and counted: the hostile one for one of `self.reasons`
    /// with one of `self.outcomes`, the others for `others`.
    fn assert_counted(&self, stats: &Stats, others: &[(&str, u64)], serve: &Serve) {
        let context = format!("{}\n{}", stats.0, serve.report());
        stats.assert_all_closed();
        let expected_total: u64 = 1 + others.iter().map(|(_, n)| n).sum::<u64>();
        assert_eq!(stats.count("closed"), expected_total, "{context}");

        let mut reasons: BTreeMap<String, u64> = stats.0["reasons"]
            .as_object()
            .expect("reasons")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect();
        for (reason, n) in others {
            let left = reasons.entry((*reason).to_string()).or_default();
            assert!(*left >= *n, "{reason} not counted: {context}");
            *left -= n;
        }
        reasons.retain(|_, n| *n > 0);
        let hostile: Vec<&String> = reasons.keys().collect();
        assert!(
            hostile.len() == 1 && self.reasons.contains(&hostile[0].as_str()),
            "hostile connection closed for {hostile:?}, expected one of {:?}: {context}",
            self.reasons
        );
        let outcomes: u64 = self.outcomes.iter().map(|o| stats.outcome(o)).sum();
        assert!(
            outcomes >= 1,
            "expected an outcome among {:?}: {context}",
            self.outcomes
        );
    }
}

fn end(events: &[Value]) -> &Value {
    event(events, "end")
}

/// The peer saw close_notify, then the TCP end.
fn saw_close_notify(events: &[Value]) {
    let end = end(events);
    assert_eq!(end["how"], "close_notify", "{end}");
    assert_eq!(end["tcp"], "fin", "{end}");
}

/// The peer saw its connection end at the TCP level (no TLS session to close).
fn saw_tcp_end(events: &[Value]) {
    let end = end(events);
    assert!(end["how"] == "fin" || end["how"] == "reset", "{end}");
}

fn nothing_to_check(_events: &[Value]) {}

// A peer that asks for a large response and never reads it: the server gives up the write
// at its bounds instead of waiting forever.
const NEVER_READ: Case = Case {
    name: "never_read",
    script: "hostile.py",
    args: &["--scenario", "never-read"],
    acts_on_go: false,
    flags: SHORT,
    bound: IDLE_BOUND,
    reasons: &["idle", "shutdown"],
    outcomes: &["send_timed_out"],
    check: nothing_to_check,
};

#[test]
fn never_reading_a_large_response_under_idle_timeout() {
    NEVER_READ.under_idle_timeout();
}

#[test]
fn never_reading_a_large_response_under_shutdown() {
    NEVER_READ.under_shutdown();
}

// A peer that sends its headers one byte per second: each byte is activity, so the idle
// timeout (2 s here, so that a byte always comes first) cannot end it; the header read
// timeout does, with close_notify and its own reason.
const SLOW_HEADERS: Case = Case {
    name: "slow_headers",
    script: "hostile.py",
    args: &["--scenario", "slow-headers"],
    acts_on_go: false,
    flags: &[
        "--idle-timeout",
        "2s",
        "--header-read-timeout",
        "3s",
        "--grace",
        "1s",
        "--peer-close",
        "wait:1s",
    ],
    bound: HEADER_READ_TIMEOUT
        .saturating_add(CLOSE_NOTIFY)
        .saturating_add(PEER_WAIT),
    reasons: &["header_read_timeout", "shutdown"],
    outcomes: &["peer_fin"],
    check: saw_close_notify,
};

#[test]
fn headers_one_byte_per_second_under_idle_timeout() {
    SLOW_HEADERS.under_idle_timeout();
}

#[test]
fn headers_one_byte_per_second_under_shutdown() {
    SLOW_HEADERS.under_shutdown();
}

// A peer that stops in the middle of the TLS handshake: there is no session to close, so
// the server drops it at its handshake timeout, or at the end of the shutdown's grace.
const HANDSHAKE_STALL: Case = Case {
    name: "handshake_stall",
    script: "hostile.py",
    args: &["--scenario", "handshake-stall"],
    acts_on_go: false,
    flags: SHORT,
    bound: HANDSHAKE_TIMEOUT,
    reasons: &["handshake"],
    outcomes: &["dropped"],
    check: saw_tcp_end,
};

#[test]
fn stalling_in_the_handshake_under_idle_timeout() {
    HANDSHAKE_STALL.under_idle_timeout();
}

#[test]
fn stalling_in_the_handshake_under_shutdown() {
    HANDSHAKE_STALL.under_shutdown();
}

// A peer that completes the handshake and sends nothing: closed with close_notify.
const SILENT: Case = Case {
    name: "silent",
    script: "hostile.py",
    args: &["--scenario", "silent"],
    acts_on_go: false,
    flags: SHORT,
    bound: IDLE_BOUND,
    reasons: &["idle", "shutdown"],
    outcomes: &["peer_fin"],
    check: saw_close_notify,
};

#[test]
fn silent_after_the_handshake_under_idle_timeout() {
    SILENT.under_idle_timeout();
}

#[test]
fn silent_after_the_handshake_under_shutdown() {
    SILENT.under_shutdown();
}

// Garbage instead of a ClientHello: the handshake fails at once; the server answers with an
// alert and closes.
const GARBAGE_HELLO: Case = Case {
    name: "garbage_hello",
    script: "hostile.py",
    args: &["--scenario", "garbage-hello"],
    acts_on_go: true,
    flags: SHORT,
    bound: Duration::ZERO,
    reasons: &["handshake"],
    outcomes: &["dropped"],
    check: garbage_hello_check,
};

fn garbage_hello_check(events: &[Value]) {
    saw_tcp_end(events);
    let data = end(events)["data"].as_str().unwrap_or_default();
    assert!(
        data.starts_with("15"),
        "expected a TLS alert record, got {data:?}"
    );
}

#[test]
fn garbage_instead_of_a_client_hello_under_idle_timeout() {
    GARBAGE_HELLO.under_idle_timeout();
}

#[test]
fn garbage_instead_of_a_client_hello_under_shutdown() {
    GARBAGE_HELLO.under_shutdown();
}

// Garbage inside TLS records after the handshake: HTTP cannot parse it; the connection still
// ends with close_notify. Under shutdown the garbage may arrive after our close_notify, in
// which case it is read and discarded.
const GARBAGE_HTTP: Case = Case {
    name: "garbage_http",
    script: "hostile.py",
    args: &["--scenario", "garbage-http"],
    acts_on_go: true,
    flags: SHORT,
    bound: CLOSE_NOTIFY.saturating_add(PEER_WAIT),
    reasons: &["error", "shutdown"],
    outcomes: &["peer_fin"],
    check: saw_close_notify,
};

#[test]
fn garbage_after_the_handshake_under_idle_timeout() {
    GARBAGE_HTTP.under_idle_timeout();
}

#[test]
fn garbage_after_the_handshake_under_shutdown() {
    GARBAGE_HTTP.under_shutdown();
}

// Bytes that are not TLS at all after the handshake: rustls rejects them with an alert, and
// the close is counted as the peer's error.
const GARBAGE_TLS: Case = Case {
    name: "garbage_tls",
    script: "hostile.py",
    args: &["--scenario", "garbage-tls"],
    acts_on_go: true,
    flags: SHORT,
    bound: CLOSE_NOTIFY.saturating_add(PEER_WAIT),
    // "handshake" when the garbage reaches the server before it has processed the client's
    // Finished: the peer's handshake is done, the server's not yet, and rustls fails it.
    reasons: &["error", "shutdown", "handshake"],
    // Dropped when rustls' debug assertion ends the task instead (see harness::assert_no_panic),
    // or when the server's handshake failed (no session to close).
    outcomes: &["peer_error", "dropped"],
    check: garbage_tls_check,
};

fn garbage_tls_check(events: &[Value]) {
    let how = end(events)["how"].as_str().unwrap_or_default().to_string();
    // The server's alert, or (under shutdown) its close_notify sent before the garbage came.
    assert!(
        how.starts_with("tls_error") || how == "close_notify",
        "{how}"
    );
}

#[test]
fn non_tls_bytes_after_the_handshake_under_idle_timeout() {
    GARBAGE_TLS.under_idle_timeout();
}

#[test]
fn non_tls_bytes_after_the_handshake_under_shutdown() {
    GARBAGE_TLS.under_shutdown();
}

// A peer that answers our close_notify with bytes that are not TLS: the wait for its
// close_notify ends at once and the close is counted. (In debug builds this trips rustls'
// fatal-alert debug assertion, rustls issue 959, and the task ends with the connection
// dropped; see harness::assert_no_panic.)
const GARBAGE_AFTER_CLOSE_NOTIFY: Case = Case {
    name: "garbage_after_close_notify",
    script: "hostile.py",
    args: &["--scenario", "garbage-after-close-notify"],
    acts_on_go: false,
    flags: SHORT,
    bound: IDLE_BOUND,
    reasons: &["idle", "shutdown"],
    outcomes: &["peer_error", "dropped"],
    check: saw_close_notify,
};

#[test]
fn non_tls_bytes_after_our_close_notify_under_idle_timeout() {
    GARBAGE_AFTER_CLOSE_NOTIFY.under_idle_timeout();
}

#[test]
fn non_tls_bytes_after_our_close_notify_under_shutdown() {
    GARBAGE_AFTER_CLOSE_NOTIFY.under_shutdown();
}

// A peer that resets the connection in the middle of a large response.
const RESET: Case = Case {
    name: "reset",
    script: "hostile.py",
    args: &["--scenario", "reset"],
    acts_on_go: true,
    flags: SHORT,
    bound: Duration::ZERO,
    reasons: &["peer_closed", "shutdown"],
    outcomes: &["peer_reset"],
    check: nothing_to_check,
};

#[test]
fn reset_in_the_middle_of_a_response_under_idle_timeout() {
    RESET.under_idle_timeout();
}

#[test]
fn reset_in_the_middle_of_a_response_under_shutdown() {
    RESET.under_shutdown();
}

// A peer that half-closes TCP in the middle of a request body: /echo sees an error, not a
// short body, so the response is cut (its length says so), never completed short.
const HALF_CLOSE_BODY: Case = Case {
    name: "half_close_body",
    script: "hostile.py",
    args: &["--scenario", "half-close-body"],
    acts_on_go: true,
    flags: SHORT,
    bound: CLOSE_NOTIFY.saturating_add(PEER_WAIT),
    reasons: &["peer_closed", "shutdown"],
    outcomes: &["peer_fin"],
    check: half_close_check,
};

fn half_close_check(events: &[Value]) {
    let end = end(events);
    let response = &end["response"];
    assert_eq!(
        response["complete"], false,
        "a short body passed as whole: {end}"
    );
    if let Some(length) = response["headers"]["content-length"].as_str() {
        assert_eq!(length, "100000", "{end}");
    }
    assert!(
        response["body_len"].as_u64().unwrap_or(0) < 100_000,
        "{end}"
    );
    assert_eq!(end["how"], "close_notify", "{end}");
}

#[test]
fn half_close_in_the_middle_of_a_request_body_under_idle_timeout() {
    HALF_CLOSE_BODY.under_idle_timeout();
}

#[test]
fn half_close_in_the_middle_of_a_request_body_under_shutdown() {
    HALF_CLOSE_BODY.under_shutdown();
}

// An HTTP/2 peer that never acknowledges the PING of the two-phase GOAWAY: the grace period
// ends the wait, and close_notify follows.
const NO_PING_ACK: Case = Case {
    name: "h2_no_ping_ack",
    script: "h2_client.py",
    args: &["--no-ping-ack", "--path", "/"],
    acts_on_go: false,
    flags: SHORT,
    bound: IDLE_BOUND,
    reasons: &["idle", "shutdown"],
    outcomes: &["wait_timed_out"],
    check: no_ping_ack_check,
};

fn no_ping_ack_check(events: &[Value]) {
    let end = end(events);
    let timeline = timeline(end);
    // Only the first GOAWAY of the two: the second needs the PING's acknowledgement.
    let expected = [
        "end_stream:1",
        "goaway:2147483647",
        "ping",
        "close_notify",
        "fin",
    ];
    assert_eq!(timeline, expected, "{end}");
}

#[test]
fn http2_peer_never_acking_the_goaway_ping_under_idle_timeout() {
    NO_PING_ACK.under_idle_timeout();
}

#[test]
fn http2_peer_never_acking_the_goaway_ping_under_shutdown() {
    NO_PING_ACK.under_shutdown();
}

// An HTTP/2 peer that opens streams for large responses and never reads them: HTTP/2 flow
// control stalls them, and the server must not wait for them forever.
const UNREAD_STREAMS: Case = Case {
    name: "h2_unread_streams",
    script: "h2_client.py",
    args: &[
        "--no-read",
        "--concurrent",
        "--path",
        "/bytes?n=1000000",
        "--path",
        "/bytes?n=1000000",
        "--path",
        "/bytes?n=1000000",
        "--path",
        "/stream?chunks=100000&ms=0",
    ],
    acts_on_go: false,
    flags: SHORT,
    bound: IDLE_BOUND,
    reasons: &["idle", "shutdown"],
    outcomes: &["wait_timed_out", "send_timed_out"],
    check: nothing_to_check,
};

#[test]
fn http2_streams_never_read_under_idle_timeout() {
    UNREAD_STREAMS.under_idle_timeout();
}

#[test]
fn http2_streams_never_read_under_shutdown() {
    UNREAD_STREAMS.under_shutdown();
}
