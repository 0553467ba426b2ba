//! Every close trigger, over HTTP/1.1 (Python's ssl) and HTTP/2 (Python's h2): the client
//! gets each whole response, then the server's close_notify, then the TCP end; over HTTP/2
//! a GOAWAY comes before the close_notify.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    all_events, at, event, timeline, Peer, Serve, CLOSE_NOTIFY, GRACE, IDLE, MARGIN, PEER_WAIT,
    SHORT,
};

#[derive(Clone, Copy, Debug)]
enum Http {
    One,
    Two,
}

impl Http {
    fn client(self, serve: &Serve, paths: &[&str]) -> Peer {
        let mut args = Vec::new();
        for path in paths {
            args.extend(["--path", path]);
        }
        let script = match self {
            Http::One => "h1_client.py",
            Http::Two => "h2_client.py",
        };
        Peer::start(script, serve.port(), &args)
    }
}

/// Checks what the client saw: every response whole with `bodies`, then the server's
/// close_notify (answered), then the TCP end; over HTTP/2, a GOAWAY before close_notify and
/// every stream's end before it too. Returns the `end` event.
fn assert_clean_end(http: Http, events: &[Value], bodies: &[&str]) -> Value {
    let responses = all_events(events, "response");
    let got: Vec<&str> = responses
        .iter()
        .map(|r| r["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(got, bodies, "{events:#?}");
    assert!(
        responses
            .iter()
            .all(|r| r["complete"] == true && r["status"] == 200),
        "{events:#?}"
    );

    let end = event(events, "end").clone();
    assert_eq!(end["how"], "close_notify", "{end}");
    assert_eq!(end["reply"], "answered", "{end}");
    assert_eq!(end["tcp"], "fin", "{end}");
    if let Http::Two = http {
        let timeline = timeline(&end);
        let position = |item: &str| timeline.iter().position(|t| t.starts_with(item));
        let close_notify = position("close_notify").expect("close_notify in the timeline");
        let goaway = position("goaway:").unwrap_or_else(|| panic!("no GOAWAY: {timeline:?}"));
        assert!(goaway < close_notify, "{timeline:?}");
        let last_stream_end = timeline
            .iter()
            .rposition(|t| t.starts_with("end_stream:"))
            .expect("streams ended");
        assert!(last_stream_end < close_notify, "{timeline:?}");
        assert_eq!(timeline.last(), Some(&"fin"), "{timeline:?}");
    }
    end
}

// The idle timeout closes a connection left idle after a response, with close_notify
// before the TCP end, and not before the connection has been idle that long.
fn idle_timeout(http: Http, name: &str) {
    let mut serve = Serve::start(name, SHORT);
    let events = http.client(&serve, &["/"]).finish();

    let end = assert_clean_end(http, &events, &["hello\n"]);
    let idle = at(&end) - at(event(&events, "response"));
    // The server's idle clock starts at its last write, a little before the client read.
    assert!(idle >= IDLE / 2, "closed after {idle:?} idle");
    assert!(
        idle <= IDLE + GRACE + CLOSE_NOTIFY + MARGIN,
        "closed after {idle:?} idle"
    );
    let stats = serve.shut_down(GRACE);
    stats.assert_all_closed();
    assert_eq!(stats.reason("idle"), 1, "{}", stats.0);
    assert_eq!(stats.outcome("peer_close_notify"), 1, "{}", stats.0);
}

#[test]
fn idle_timeout_http1() {
    idle_timeout(Http::One, "idle_timeout_http1");
}

#[test]
fn idle_timeout_http2() {
    idle_timeout(Http::Two, "idle_timeout_http2");
}

// After its last allowed request a connection closes at once, both responses whole; over
// HTTP/1.1 the last response says `Connection: close`, so the client knows not to reuse it.
fn max_requests(http: Http, name: &str) {
    let mut serve = Serve::start(name, &["--max-requests", "2", "--idle-timeout", "60s"]);
    let events = http.client(&serve, &["/", "/"]).finish();

    let end = assert_clean_end(http, &events, &["hello\n", "hello\n"]);
    let last = all_events(&events, "response")[1];
    if let Http::One = http {
        assert_eq!(last["headers"]["connection"], "close", "{last}");
    }
    let after = at(&end) - at(last);
    assert!(
        after <= GRACE + MARGIN,
        "closed {after:?} after the last response"
    );
    let stats = serve.shut_down(GRACE);
    stats.assert_all_closed();
    assert_eq!(stats.reason("max_requests"), 1, "{}", stats.0);
    assert_eq!(stats.count("requests"), 2, "{}", stats.0);
}

#[test]
fn max_requests_http1() {
    max_requests(Http::One, "max_requests_http1");
}

#[test]
fn max_requests_http2() {
    max_requests(Http::Two, "max_requests_http2");
}

const STREAM_20: &str = "/stream?chunks=20&ms=100";

fn chunks(n: usize) -> String {
    (0..n).map(|i| format!("chunk {i}\n")).collect()
}

// Max age reached in the middle of a two-second streamed response: the response still
// arrives whole, and only then does the connection close.
fn max_age_in_flight(http: Http, name: &str) {
    let args = ["--max-age", "1s", "--idle-timeout", "60s", "--grace", "5s"];
    let mut serve = Serve::start(name, &args);
    let events = http.client(&serve, &[STREAM_20]).finish();

    assert_clean_end(http, &events, &[&chunks(20)]);
    let stats = serve.shut_down(Duration::from_secs(5));
    stats.assert_all_closed();
    assert_eq!(stats.reason("max_age"), 1, "{}", stats.0);
    assert_eq!(stats.count("forced"), 0, "{}", stats.0);
}

#[test]
fn max_age_with_a_response_in_flight_http1() {
    max_age_in_flight(Http::One, "max_age_in_flight_http1");
}

#[test]
fn max_age_with_a_response_in_flight_http2() {
    max_age_in_flight(Http::Two, "max_age_in_flight_http2");
}

// A graceful shutdown closes an idle connection with close_notify, and the server exits
// within its bound.
fn shutdown_idle(http: Http, name: &str) {
    let mut serve = Serve::start(name, &["--idle-timeout", "60s", "--grace", "1s"]);
    let mut client = http.client(&serve, &["/"]);
    client.expect("response", MARGIN * 3);

    let stats = serve.shut_down(GRACE);
    let events = client.finish();
    assert_clean_end(http, &events, &["hello\n"]);
    stats.assert_all_closed();
    assert_eq!(stats.reason("shutdown"), 1, "{}", stats.0);
    assert_eq!(stats.outcome("peer_close_notify"), 1, "{}", stats.0);
}

#[test]
fn shutdown_with_the_connection_idle_http1() {
    shutdown_idle(Http::One, "shutdown_idle_http1");
}

#[test]
fn shutdown_with_the_connection_idle_http2() {
    shutdown_idle(Http::Two, "shutdown_idle_http2");
}

// A graceful shutdown in the middle of a streamed response lets it finish whole within the
// grace period, then closes with close_notify.
fn shutdown_in_flight(http: Http, name: &str) {
    let mut serve = Serve::start(name, &["--idle-timeout", "60s", "--grace", "5s"]);
    let mut client = http.client(&serve, &[STREAM_20]);
    let first = match http {
        Http::One => "first_chunk",
        Http::Two => "first_data",
    };
    client.expect(first, MARGIN * 3);

    let stats = serve.shut_down(Duration::from_secs(5));
    let events = client.finish();
    assert_clean_end(http, &events, &[&chunks(20)]);
    stats.assert_all_closed();
    assert_eq!(stats.reason("shutdown"), 1, "{}", stats.0);
    assert_eq!(stats.count("forced"), 0, "{}", stats.0);
}

#[test]
fn shutdown_with_a_response_in_flight_http1() {
    shutdown_in_flight(Http::One, "shutdown_in_flight_http1");
}

#[test]
fn shutdown_with_a_response_in_flight_http2() {
    shutdown_in_flight(Http::Two, "shutdown_in_flight_http2");
}

// A client that sends close_notify first gets the server's back before the TCP end: a full
// bidirectional close, counted as such.
#[test]
fn client_close_notify_first_gets_ours_back() {
    let mut serve = Serve::start("client_close_notify_first", SHORT);
    let client = Peer::start(
        "h1_client.py",
        serve.port(),
        &["--path", "/", "--then", "close-first"],
    );
    let events = client.finish();

    let end = event(&events, "end");
    assert_eq!(end["how"], "close_notify", "{end}");
    assert_eq!(end["reply"], "sent_first", "{end}");
    assert_eq!(end["tcp"], "fin", "{end}");
    let closed = at(end) - at(event(&events, "closing"));
    assert!(closed <= PEER_WAIT + MARGIN, "close took {closed:?}");
    let stats = serve.shut_down(GRACE);
    stats.assert_all_closed();
    assert_eq!(stats.reason("peer_closed"), 1, "{}", stats.0);
    assert_eq!(stats.outcome("peer_close_notify"), 1, "{}", stats.0);
}
