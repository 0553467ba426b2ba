//! Command-line peers: `openssl s_client -msg` shows each TLS alert it receives, nghttp
//! each HTTP/2 frame, and curl whether a whole response arrived.

use std::process::Command;
use std::time::Duration;

use crate::harness::{curl, Process, Serve, Streaming, CLOSE_NOTIFY, GRACE, IDLE, MARGIN, SHORT};

/// `openssl s_client` with `-msg`, over HTTP/1.1, having sent one request.
fn s_client(serve: &Serve) -> Process {
    let mut command = Command::new("openssl");
    command.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{}", serve.port()),
        "-servername",
        "localhost",
        "-alpn",
        "http/1.1",
        "-msg",
        "-quiet",
    ]);
    let mut s_client = Process::spawn("openssl s_client", command);
    s_client.send_line("GET / HTTP/1.1\r\nHost: localhost\r\n\r");
    s_client
}

/// Checks s_client's output: the response, then the server's close_notify alert (`<<<`),
/// and s_client's own in answer (`>>>`).
fn assert_close_notify_after_response(lines: &[String]) {
    let text = lines.join("\n");
    let hello = lines.iter().position(|l| l == "hello");
    let received = lines
        .iter()
        .position(|l| l.starts_with("<<<") && l.contains("Alert") && l.contains("close_notify"));
    let sent = lines
        .iter()
        .position(|l| l.starts_with(">>>") && l.contains("Alert") && l.contains("close_notify"));
    let hello = hello.unwrap_or_else(|| panic!("no response:\n{text}"));
    let received = received.unwrap_or_else(|| panic!("no close_notify received:\n{text}"));
    assert!(
        hello < received,
        "close_notify before the response:\n{text}"
    );
    assert!(
        sent.is_some_and(|s| s > received),
        "no close_notify answered:\n{text}"
    );
}

// openssl s_client sees the close_notify alert that ends an idle connection; stdin stays
// open, so the close is the server's.
#[test]
fn s_client_sees_close_notify_at_idle_timeout() {
    let mut serve = Serve::start("s_client_idle", SHORT);
    let mut s_client = s_client(&serve);

    let (status, lines) = s_client.wait(IDLE + GRACE + CLOSE_NOTIFY + MARGIN * 2);
    assert!(
        status.success(),
        "s_client: {status}\n{}",
        s_client.report()
    );
    assert_close_notify_after_response(&lines);
    let stats = serve.shut_down(GRACE);
    stats.assert_all_closed();
    assert_eq!(stats.reason("idle"), 1, "{}", stats.0);
    assert_eq!(stats.outcome("peer_close_notify"), 1, "{}", stats.0);
}

// openssl s_client sees close_notify at a graceful shutdown.
#[test]
fn s_client_sees_close_notify_at_shutdown() {
    let mut serve = Serve::start(
        "s_client_shutdown",
        &["--idle-timeout", "60s", "--grace", "1s"],
    );
    let mut s_client = s_client(&serve);
    s_client.expect_line(MARGIN * 3, |line| line == "hello");

    let stats = serve.shut_down(GRACE);
    let (status, lines) = s_client.wait(MARGIN);
    assert!(
        status.success(),
        "s_client: {status}\n{}",
        s_client.report()
    );
    assert_close_notify_after_response(&lines);
    stats.assert_all_closed();
    assert_eq!(stats.reason("shutdown"), 1, "{}", stats.0);
}

// nghttp, in the middle of a streamed response when the shutdown starts, receives GOAWAY
// and still the whole response, ending with END_STREAM.
#[test]
fn nghttp_gets_goaway_and_the_whole_stream_at_shutdown() {
    let mut serve = Serve::start(
        "nghttp_shutdown",
        &["--idle-timeout", "60s", "--grace", "5s"],
    );
    let mut command = Command::new("nghttp");
    command.args(["-v", &serve.url("/stream?chunks=10&ms=100")]);
    let mut nghttp = Process::spawn("nghttp", command);
    nghttp.expect_line(MARGIN * 3, |line| line.contains("recv DATA frame"));

    let stats = serve.shut_down(Duration::from_secs(5));
    let (status, lines) = nghttp.wait(MARGIN);
    let text = lines.join("\n");
    assert!(status.success(), "nghttp: {status}\n{}", nghttp.report());
    assert!(text.contains("recv GOAWAY frame"), "no GOAWAY:\n{text}");
    assert!(
        (0..10).all(|i| text.contains(&format!("chunk {i}"))),
        "{text}"
    );
    // The last END_STREAM is the server's, after the body's last chunk.
    let last_chunk = text.find("chunk 9").expect("the whole body");
    let end_stream = text.rfind("; END_STREAM").expect("the stream ended");
    assert!(end_stream > last_chunk, "{text}");
    stats.assert_all_closed();
    assert_eq!(stats.reason("shutdown"), 1, "{}", stats.0);
}

// curl downloads a streamed response whole across a graceful shutdown, over both protocols.
#[test]
fn curl_gets_whole_responses_across_a_shutdown() {
    let mut serve = Serve::start("curl_shutdown", &["--idle-timeout", "60s", "--grace", "5s"]);
    let http1 = Streaming::start(&serve, "--http1.1", 10, 100);
    let http2 = Streaming::start(&serve, "--http2", 10, 100);

    let stats = serve.shut_down(Duration::from_secs(5));
    http1.assert_whole();
    http2.assert_whole();
    stats.assert_all_closed();
    assert_eq!(stats.reason("shutdown"), 2, "{}", stats.0);
    assert_eq!(stats.count("forced"), 0, "{}", stats.0);
}

// With one request per connection, curl fetches several large responses in one run, each
// whole. Over HTTP/1.1 each comes on a connection of its own (the server said
// `Connection: close`); over HTTP/2 a request sent before the GOAWAY arrived may still be
// served on the same connection, as the two-phase GOAWAY allows.
#[test]
fn curl_gets_whole_responses_with_one_request_per_connection() {
    let mut serve = Serve::start("curl_max_requests", &["--max-requests", "1"]);
    for http in ["--http1.1", "--http2"] {
        let url = serve.url("/bytes?n=300000");
        let format = "%{http_code} %{size_download} %{num_connects}\n";
        let null = ["--output", "/dev/null"];
        let args = [
            http,
            "--write-out",
            format,
            null[0],
            null[1],
            &url,
            null[0],
            null[1],
            &url,
        ];
        let output = curl(&args);
        let report = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(output.status.success(), "{output:?}");
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 2, "{report}");
        for line in lines {
            assert!(line.starts_with("200 300000 "), "{http}: {report}");
            if http == "--http1.1" {
                assert!(line.ends_with(" 1"), "a connection was reused: {report}");
            }
        }
    }
    let stats = serve.shut_down(GRACE);
    stats.assert_all_closed();
    assert_eq!(
        stats.reason("max_requests"),
        stats.count("connections"),
        "{}",
        stats.0
    );
}
