//! The harness: the `serve` binary, the Python peers and the external tools, each run as a
//! child process whose output lines are read as they come, with every wait bounded.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The idle timeout most tests configure.
pub(crate) const IDLE: Duration = Duration::from_secs(1);
/// The grace period most tests configure.
pub(crate) const GRACE: Duration = Duration::from_secs(1);
/// The bound on sending close_notify most tests configure.
pub(crate) const CLOSE_NOTIFY: Duration = Duration::from_secs(1);
/// How long most tests let the server wait for the peer's close_notify.
pub(crate) const PEER_WAIT: Duration = Duration::from_secs(1);
/// The server's own slack past grace + close_notify timeout at shutdown.
pub(crate) const SHUTDOWN_SLACK: Duration = Duration::from_millis(250);
/// The TLS handshake timeout in [`SHORT`].
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// The header read timeout of the slow-headers test (`--header-read-timeout 3s`).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Added to every bound: what a loaded two-core machine may add to a timer. Generous on
/// purpose: these tests check that waits end, not how fast.
pub(crate) const MARGIN: Duration = Duration::from_secs(3);

/// The policy flags of most tests: short timeouts, so that the suite stays fast.
pub(crate) const SHORT: &[&str] = &[
    "--handshake-timeout",
    "3s",
    "--idle-timeout",
    "1s",
    "--grace",
    "1s",
    "--close-notify-timeout",
    "1s",
    "--peer-close",
    "wait:1s",
];

/// The longest a graceful shutdown may take with `grace`, by the server's own bound.
pub(crate) fn shutdown_bound(grace: Duration) -> Duration {
    grace + CLOSE_NOTIFY + SHUTDOWN_SLACK
}

/// The `serve` example's binary.
///
/// Cargo gives integration tests no path to an example, so it is found next to this test's
/// own binary: `target/<profile>/deps/interop-*` sits beside `target/<profile>/examples/`.
/// `cargo test` builds the examples before it runs tests (`.ci/run` also builds it
/// explicitly, with `cargo build --example serve`); `SERVE_BIN` overrides the path.
pub(crate) fn serve_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SERVE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join("serve");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --example serve` (same profile), \
         or set SERVE_BIN",
        path.display()
    );
    path
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("interop")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A child process whose stdout lines arrive on a channel, read by a thread, so that a
/// test can wait for one line with a timeout.
pub(crate) struct Process {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `command` with piped stdin, stdout and stderr.
    pub(crate) fn spawn(name: &str, mut command: Command) -> Process {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {name} ({command:?}): {error}; run .ci/install-test-deps")
            });
        let stdin = child.stdin.take();
        let lines = read_lines(child.stdout.take().expect("stdout is piped"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            sink.lock().expect("stderr lock").push_str(&text);
        });
        Process {
            name: name.to_string(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits up to `bound` for a line that satisfies `wanted`, and returns it.
    pub(crate) fn expect_line(&mut self, bound: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no expected line within {bound:?}\n{}",
                        self.name,
                        self.report()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(50)); // let stderr be collected
                    panic!(
                        "{}: ended before the expected line\n{}",
                        self.name,
                        self.report()
                    )
                }
            }
        }
    }

    /// Writes one line to the process's standard input.
    pub(crate) fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the child's stdin");
        stdin.flush().expect("flush the child's stdin");
    }

    /// Closes standard input, which tells our peers to let go of their sockets.
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `bound` for the process to exit and for its output to end; returns its
    /// status and every stdout line.
    pub(crate) fn wait(&mut self, bound: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + bound;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "{}: still running after {bound:?}\n{}",
                    self.name,
                    self.report()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The reader thread ends at EOF, which follows the exit closely.
        loop {
            let left = deadline.saturating_duration_since(Instant::now()) + MARGIN;
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("{}: stdout still open", self.name),
            }
        }
        (status, self.seen.clone())
    }

    /// Everything seen so far, for failure messages.
    pub(crate) fn report(&self) -> String {
        let stderr = self.stderr.lock().expect("stderr lock").clone();
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            self.seen.join("\n"),
            self.name,
            stderr
        )
    }

    fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_lines(stdout: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running `serve` example.
pub(crate) struct Serve {
    process: Process,
    port: u16,
    dir: PathBuf,
}

impl Serve {
    /// Starts the server on a free loopback port with `args`, and waits for its readiness
    /// line. Its log (debug level for our crates) goes to a file in the test's scratch
    /// directory, and into every failure message.
    pub(crate) fn start(name: &str, args: &[&str]) -> Serve {
        let dir = scratch(name);
        let mut command = Command::new(serve_binary());
        command
            .args(["--addr", "127.0.0.1:0", "--stats-json"])
            .arg(dir.join("stats.json"))
            .args(args)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                "info,conn_lifecycle=debug,conn_lifecycle_hyper=debug",
            );
        let mut process = Process::spawn(&format!("serve[{name}]"), command);
        let line = process.expect_line(Duration::from_secs(30), |line| {
            line.starts_with("listening on https://")
        });
        let port = line
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Serve { process, port, dir }
    }

    /// The port the server listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT` followed by `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Sends SIGTERM: a graceful shutdown (a second one stops at once). Returns when it was
    /// sent.
    pub(crate) fn sigterm(&self) -> Instant {
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        sent
    }

    /// Waits up to `bound` for the server to exit; returns how long after `since` it did.
    /// The server must exit successfully and must not have panicked.
    pub(crate) fn wait_exit(&mut self, since: Instant, bound: Duration) -> Duration {
        let (status, _) = self.process.wait(bound);
        let took = since.elapsed();
        let report = self.report();
        assert!(status.success(), "server exited with {status}\n{report}");
        assert_no_panic(&report);
        took
    }

    /// A graceful shutdown that must end within the server's bound for `grace`, then the
    /// final counts.
    pub(crate) fn shut_down(&mut self, grace: Duration) -> Stats {
        let sent = self.sigterm();
        let bound = shutdown_bound(grace) + MARGIN;
        let took = self.wait_exit(sent, bound);
        assert!(took <= bound, "shutdown took {took:?}, bound {bound:?}");
        self.stats()
    }

    /// The counts the server wrote at exit (`--stats-json`).
    pub(crate) fn stats(&self) -> Stats {
        let path = self.dir.join("stats.json");
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}\n{}", path.display(), self.report()));
        Stats(serde_json::from_str(&text).expect("stats are JSON"))
    }

    /// The server's output so far, for failure messages.
    pub(crate) fn report(&self) -> String {
        self.process.report()
    }

    /// The lines the server printed on stdout so far (all of them once it has exited).
    pub(crate) fn stdout_lines(&self) -> &[String] {
        &self.process.seen
    }

    /// Waits until the server no longer holds the socket of its connection from
    /// `client_port`, that is until it has closed the connection and dropped it; returns
    /// how long after `since` that was seen, polling /proc every 20 ms, up to `bound`.
    ///
    /// `held` says whether the server held the socket when the wait began, so that a test
    /// can tell "released within the bound" from "was never seen".
    pub(crate) fn wait_released(
        &self,
        client_port: u16,
        since: Instant,
        bound: Duration,
    ) -> Released {
        let pid = self.process.id();
        let Some(inode) = server_socket_inode(self.port, client_port) else {
            return Released {
                held: false,
                after: since.elapsed(),
            };
        };
        let deadline = since + bound;
        let held = holds_socket(pid, inode);
        loop {
            if !holds_socket(pid, inode) {
                return Released {
                    held,
                    after: since.elapsed(),
                };
            }
            if Instant::now() >= deadline {
                panic!(
                    "the server still holds its connection from port {client_port} after \
                     {bound:?}\n{}",
                    self.report()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the server has stopped listening, which is the first step of its
    /// graceful shutdown.
    pub(crate) fn wait_listener_closed(&self, bound: Duration) {
        let pid = self.process.id();
        let deadline = Instant::now() + bound;
        while let Some(inode) = server_socket_inode(self.port, 0) {
            if !holds_socket(pid, inode) {
                return;
            }
            assert!(Instant::now() < deadline, "still listening after {bound:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Fails on any panic in the server's log but one known upstream panic, which is reported.
///
/// rustls 0.23 has a debug assertion that a connection sends at most one fatal alert, and
/// it counts our close_notify as one: a peer that sends bytes rustls cannot decrypt after our
/// close_notify trips it (rustls issue 959), in debug builds only. The panic ends that
/// connection's task; tokio contains it and the server goes on, and the tests still require
/// the connection to be counted as closed. Any other panic fails the test.
fn assert_no_panic(log: &str) {
    const KNOWN: &str = "assertion failed: !self.sent_fatal_alert";
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked at")).collect();
    let mut lines = log.lines();
    for panic in &panics {
        let at_rustls = panic.contains("/rustls-0.23.") && panic.contains("common_state.rs");
        let message = lines
            .by_ref()
            .skip_while(|l| l != panic)
            .nth(1)
            .unwrap_or_default();
        assert!(
            cfg!(debug_assertions) && at_rustls && message == KNOWN,
            "server panicked\n{log}"
        );
        eprintln!("note: the server tripped rustls' fatal-alert debug assertion (rustls#959)");
    }
}

/// What [`Serve::wait_released`] saw.
#[derive(Debug)]
pub(crate) struct Released {
    /// The server held the socket when the wait began.
    pub(crate) held: bool,
    /// When it no longer did, from the wait's `since`.
    pub(crate) after: Duration,
}

/// The inode of the server's socket on `port` whose peer is `peer_port` (0: the listening
/// socket), from /proc/net/tcp; `None` if there is none or no process holds it any more.
fn server_socket_inode(port: u16, peer_port: u16) -> Option<u64> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port_of = |field: &str| {
                field
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            };
            if fields.len() > 9
                && port_of(fields[1]) == Some(port)
                && port_of(fields[2]) == Some(peer_port)
            {
                let inode: u64 = fields[9].parse().ok()?;
                return (inode != 0).then_some(inode);
            }
        }
    }
    None
}

/// Whether process `pid` has a file descriptor on socket `inode`.
fn holds_socket(pid: u32, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .any(|target| target.as_os_str() == wanted.as_str())
}

/// The counts a server wrote at exit.
#[derive(Debug)]
pub(crate) struct Stats(pub(crate) Value);

impl Stats {
    /// A top-level count, such as "connections" or "forced".
    pub(crate) fn count(&self, key: &str) -> u64 {
        self.0[key].as_u64().unwrap_or(0)
    }

    /// Connections closed for `reason`.
    pub(crate) fn reason(&self, reason: &str) -> u64 {
        self.0["reasons"][reason].as_u64().unwrap_or(0)
    }

    /// Connections whose close ended with `outcome`.
    pub(crate) fn outcome(&self, outcome: &str) -> u64 {
        self.0["outcomes"][outcome].as_u64().unwrap_or(0)
    }

    /// Every connection opened was closed and counted, none abandoned.
    pub(crate) fn assert_all_closed(&self) {
        assert!(
            self.count("connections") > 0,
            "no connection counted: {}",
            self.0
        );
        assert_eq!(
            self.count("closed"),
            self.count("connections"),
            "{}",
            self.0
        );
        assert_eq!(self.count("abandoned"), 0, "{}", self.0);
    }
}

/// A Python peer from tests/peers: JSON event lines on stdout, see tests/peers/peer.py.
pub(crate) struct Peer {
    process: Process,
}

impl Peer {
    /// Starts `tests/peers/<script>` against `port` with `args`.
    pub(crate) fn start(script: &str, port: u16, args: &[&str]) -> Peer {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("peers")
            .join(script);
        let mut command = Command::new(python);
        command
            .arg(path)
            .args(["--port", &port.to_string()])
            .args(args);
        Peer {
            process: Process::spawn(&format!("{script} {}", args.join(" ")), command),
        }
    }

    /// Waits up to `bound` for the next event named `event`.
    pub(crate) fn expect(&mut self, event: &str, bound: Duration) -> Value {
        let line = self
            .process
            .expect_line(bound, |line| parse(line)["event"].as_str() == Some(event));
        parse(&line)
    }

    /// Tells the peer to go on with its next step.
    pub(crate) fn go(&mut self) {
        self.process.send_line("go");
    }

    /// Lets the peer go (closes its stdin), waits for its exit, checks that it succeeded;
    /// returns every event it printed.
    pub(crate) fn finish(mut self) -> Vec<Value> {
        self.process.close_stdin();
        let (status, lines) = self.process.wait(Duration::from_secs(60));
        assert!(
            status.success(),
            "peer failed: {status}\n{}",
            self.process.report()
        );
        lines.iter().map(|line| parse(line)).collect()
    }
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or(Value::Null)
}

/// The first event named `name` in `events`.
pub(crate) fn event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {events:#?}"))
}

/// Every event named `name` in `events`.
pub(crate) fn all_events<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// The `timeline` of a peer's `end` event: what it saw, in order.
pub(crate) fn timeline(end: &Value) -> Vec<&str> {
    end["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

/// Seconds in an event's `t` field, as a duration.
pub(crate) fn at(event: &Value) -> Duration {
    Duration::from_secs_f64(event["t"].as_f64().expect("events carry t"))
}

/// Runs curl on a URL of the server with `args`; curl bounds itself with --max-time.
pub(crate) fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--insecure", "--max-time", "30"])
        .args(args)
        .output()
        .expect("run curl (installed by .ci/install-test-deps)")
}

/// A normal request succeeds: the server still serves others.
pub(crate) fn assert_serves(serve: &Serve) {
    let output = curl(&[&serve.url("/")]);
    assert!(
        output.status.success() && output.stdout == b"hello\n",
        "a normal request failed: {output:?}\n{}",
        serve.report()
    );
}

/// A curl download of `/stream?chunks=N&ms=M` that is under way: its first chunk is in.
pub(crate) struct Streaming {
    process: Process,
    chunks: usize,
}

impl Streaming {
    /// Starts the download over `http` ("--http1.1" or "--http2") and waits for its first
    /// chunk.
    pub(crate) fn start(serve: &Serve, http: &str, chunks: usize, gap_ms: u64) -> Streaming {
        let url = serve.url(&format!("/stream?chunks={chunks}&ms={gap_ms}"));
        let mut command = Command::new("curl");
        command.args([
            "--silent",
            "--show-error",
            "--insecure",
            "--no-buffer",
            "--max-time",
            "30",
            http,
            &url,
        ]);
        let mut process = Process::spawn(&format!("curl {http} {url}"), command);
        process.expect_line(Duration::from_secs(10), |line| line == "chunk 0");
        Streaming { process, chunks }
    }

    /// Waits for the download to end and checks that it is whole and that curl is content.
    pub(crate) fn assert_whole(mut self) {
        let (status, lines) = self.process.wait(Duration::from_secs(40));
        let expected: Vec<String> = (0..self.chunks).map(|i| format!("chunk {i}")).collect();
        assert!(
            status.success(),
            "curl failed: {status}\n{}",
            self.process.report()
        );
        assert_eq!(lines, expected, "{}", self.process.report());
    }
}
