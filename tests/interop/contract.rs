//! The `serve` example's command-line contract, which tests, benchmarks and outside tools
//! rely on: the readiness line, the routes, the summary line and exit code after SIGTERM,
//! and a second signal that stops at once.

use std::time::Duration;

use crate::harness::{curl, Serve, Streaming, MARGIN};

/// curl's body for `path`, which must succeed.
fn get(serve: &Serve, args: &[&str], path: &str) -> Vec<u8> {
    let mut all = args.to_vec();
    let url = serve.url(path);
    all.push(&url);
    let output = curl(&all);
    assert!(
        output.status.success(),
        "{path}: {output:?}\n{}",
        serve.report()
    );
    output.stdout
}

// Every route answers as documented, over both protocols; SIGTERM then ends the process
// with exit code 0 and a one-line summary on stdout.
#[test]
fn routes_then_sigterm_exits_zero_with_a_summary() {
    let mut serve = Serve::start("contract_routes", &[]);

    for http in ["--http1.1", "--http2"] {
        assert_eq!(get(&serve, &[http], "/"), b"hello\n");
        assert_eq!(get(&serve, &[http], "/slow?ms=50"), b"slow\n");
        assert_eq!(
            get(&serve, &[http], "/stream?chunks=3&ms=10"),
            b"chunk 0\nchunk 1\nchunk 2\n"
        );
        assert_eq!(get(&serve, &[http], "/bytes?n=100000").len(), 100_000);
        assert_eq!(
            get(&serve, &[http, "--data-binary", "echo me"], "/echo"),
            b"echo me"
        );
        assert_eq!(get(&serve, &[http], "/healthz"), b"ok");
        let missing = curl(&[
            http,
            "--write-out",
            "%{http_code}",
            "-o",
            "/dev/null",
            &serve.url("/nope"),
        ]);
        assert_eq!(missing.stdout, b"404");
    }

    let stats = serve.shut_down(Duration::from_secs(10));
    assert_eq!(stats.count("requests"), 14);
    let summary: Vec<_> = serve
        .stdout_lines()
        .iter()
        .filter(|line| line.starts_with("shutdown took"))
        .collect();
    assert_eq!(
        summary.len(),
        1,
        "one summary line: {:?}",
        serve.stdout_lines()
    );
}

// With a response that would outlast a long grace period, a second SIGTERM stops the
// server at once, still with exit code 0.
#[test]
fn second_sigterm_stops_at_once() {
    let mut serve = Serve::start("contract_second_signal", &["--grace", "60s"]);
    // A minute of chunks; its first one is in when this returns.
    let streaming = Streaming::start(&serve, "--http1.1", 1200, 50);

    let sent = serve.sigterm();
    // The first signal has been handled once the server stops listening.
    serve.wait_listener_closed(MARGIN);
    serve.sigterm();

    // A stop takes one close_notify timeout (1 s by default) at most, plus slack.
    let took = serve.wait_exit(sent, Duration::from_secs(1) + MARGIN);
    assert!(took < Duration::from_secs(1) + MARGIN, "took {took:?}");
    assert_eq!(serve.stats().count("forced"), 1);
    drop(streaming);
}
