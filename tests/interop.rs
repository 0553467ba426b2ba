//! Interop and hostile-peer tests of the `serve` example, with real external peers over
//! real TLS on loopback sockets.
//!
//! The peers: Python's `ssl` (with `suppress_ragged_eofs=False`, so that a missing
//! close_notify is an error) and the `h2` package, scripted in `tests/peers/`; `openssl
//! s_client -msg`; nghttp; curl. `.ci/install-test-deps` installs them.
//!
//! The server is the `serve` example's binary, found beside this test's binary (see
//! [`harness::serve_binary`]): build it first with `cargo build --example serve`, which
//! `cargo test` also does by itself when no target filter is given. Each test starts its
//! own server on a free port, with short timeouts, and reads its final counts from
//! `--stats-json` after a graceful shutdown.
//!
//! No test sleeps to synchronise: each waits for a line from a process (the server's
//! readiness line, a peer's event), for a process's exit, or polls the server's sockets in
//! /proc, and every wait has a bound. Bounds are the server's configured ones plus a
//! generous margin; nothing here measures speed.

#[path = "interop/contract.rs"]
mod contract;
#[path = "interop/harness.rs"]
mod harness;
#[path = "interop/hostile.rs"]
mod hostile;
#[path = "interop/tools.rs"]
mod tools;
#[path = "interop/triggers.rs"]
mod triggers;
