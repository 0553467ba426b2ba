//! The close sequence against a real rustls peer, for every outcome it can report.

use std::time::Duration;

use conn_lifecycle::{abort, CloseOutcome, CloseSequence, PeerClose};
use conn_lifecycle_test_support::{duplex_pair, tcp_pair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const BOUND: Duration = Duration::from_millis(300);

fn waiting(peer_close: PeerClose) -> CloseSequence {
    CloseSequence::new()
        .close_notify_timeout(BOUND)
        .peer_close(peer_close)
}

/// Reads until the end of the stream and says whether it ended with close_notify.
async fn read_to_end_clean<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut sink = Vec::new();
    stream.read_to_end(&mut sink).await.is_ok()
}

// A peer that answers our close_notify with its own gives the clean, bidirectional close.
#[tokio::test]
async fn peer_answering_close_notify_is_a_clean_close() {
    let (mut client, server) = duplex_pair(64 * 1024).await;
    let peer = tokio::spawn(async move {
        let clean = read_to_end_clean(&mut client).await;
        client.shutdown().await.expect("client sends close_notify");
        clean
    });

    let report = waiting(PeerClose::wait(BOUND)).run(server).await;

    assert_eq!(report.outcome, CloseOutcome::PeerCloseNotify);
    assert!(peer.await.unwrap(), "client saw our close_notify");
}

// Same over real TCP sockets.
#[tokio::test]
async fn peer_answering_close_notify_over_tcp() {
    let (mut client, server) = tcp_pair().await.unwrap();
    let peer = tokio::spawn(async move {
        let clean = read_to_end_clean(&mut client).await;
        client.shutdown().await.expect("client sends close_notify");
        clean
    });

    let report = waiting(PeerClose::wait(BOUND)).run(server).await;

    assert_eq!(report.outcome, CloseOutcome::PeerCloseNotify);
    assert!(peer.await.unwrap(), "client saw our close_notify");
}

// A peer that closes TCP without close_notify is classified, not treated as an error of ours.
#[tokio::test]
async fn peer_fin_without_close_notify() {
    let (mut client, server) = tcp_pair().await.unwrap();
    let peer = tokio::spawn(async move {
        let clean = read_to_end_clean(&mut client).await;
        // FIN on the raw socket, no close_notify.
        client.get_mut().0.shutdown().await.unwrap();
        clean
    });

    let report = waiting(PeerClose::wait(BOUND)).run(server).await;

    assert_eq!(report.outcome, CloseOutcome::PeerFin);
    assert!(peer.await.unwrap());
}

// A peer that resets the connection ends the wait at once.
#[tokio::test]
async fn peer_reset() {
    let (mut client, server) = tcp_pair().await.unwrap();
    let peer = tokio::spawn(async move {
        let clean = read_to_end_clean(&mut client).await;
        abort(client);
        clean
    });

    let report = waiting(PeerClose::wait(Duration::from_secs(10)))
        .run(server)
        .await;

    assert_eq!(report.outcome, CloseOutcome::PeerReset);
    assert!(report.elapsed < Duration::from_secs(10));
    assert!(peer.await.unwrap());
}

// A peer that never reads keeps our send buffer full; the close_notify step gives up at its
// bound instead of waiting forever.
#[tokio::test(start_paused = true)]
async fn peer_never_reading_cannot_hold_close_notify() {
    let (_client, mut server) = duplex_pair(4096).await;
    // Fill the pipe: nobody reads on the other side.
    let chunk = vec![7u8; 1024];
    while tokio::time::timeout(Duration::from_millis(10), server.write_all(&chunk))
        .await
        .is_ok()
    {}

    let start = Instant::now();
    let report = waiting(PeerClose::wait(BOUND)).run(server).await;

    assert_eq!(report.outcome, CloseOutcome::SendTimedOut);
    assert_eq!(start.elapsed(), BOUND);
}

// Same with real sockets: the kernel buffers fill and our close_notify cannot be written.
#[tokio::test]
async fn peer_never_reading_over_tcp() {
    let (_client, mut server) = tcp_pair().await.unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while tokio::time::timeout(Duration::from_millis(50), server.write_all(&chunk))
        .await
        .is_ok()
    {}

    let report = waiting(PeerClose::wait(BOUND)).run(server).await;

    assert_eq!(report.outcome, CloseOutcome::SendTimedOut);
    assert!(report.elapsed >= BOUND && report.elapsed < BOUND * 10);
}

// A peer that reads our close_notify but never answers ends the wait at its deadline.
#[tokio::test(start_paused = true)]
async fn peer_never_answering_times_out() {
    let (mut client, server) = duplex_pair(64 * 1024).await;
    let peer = tokio::spawn(async move {
        let clean = read_to_end_clean(&mut client).await;
        // Hold the connection open without answering.
        std::future::pending::<()>().await;
        drop(client);
        clean
    });

    let report = waiting(PeerClose::wait(BOUND)).run(server).await;

    assert_eq!(report.outcome, CloseOutcome::WaitTimedOut);
    assert_eq!(report.elapsed, BOUND);
    peer.abort();
}

// Lingering treats a silent peer as a normal end, not a timeout.
#[tokio::test(start_paused = true)]
async fn linger_ends_at_its_deadline() {
    let (_client, server) = duplex_pair(64 * 1024).await;

    let report = waiting(PeerClose::linger(BOUND)).run(server).await;

    assert_eq!(report.outcome, CloseOutcome::Lingered);
    assert_eq!(report.elapsed, BOUND);
}

// A peer that keeps sending data is cut off by the byte cap.
#[tokio::test]
async fn peer_flooding_hits_the_byte_cap() {
    let (mut client, server) = tcp_pair().await.unwrap();
    let flood = tokio::spawn(async move {
        let chunk = vec![1u8; 16 * 1024];
        while client.write_all(&chunk).await.is_ok() {}
    });
    let sequence = waiting(PeerClose::Wait {
        timeout: Duration::from_secs(30),
        max_bytes: 64 * 1024,
    });

    let report = sequence.run(server).await;

    assert_eq!(report.outcome, CloseOutcome::ByteLimit);
    assert!(report.discarded >= 64 * 1024);
    flood.await.unwrap();
}

// A peer that trickles bytes slower than the cap is cut off by the deadline.
#[tokio::test(start_paused = true)]
async fn peer_trickling_hits_the_deadline() {
    let (mut client, server) = duplex_pair(64 * 1024).await;
    let trickle = tokio::spawn(async move {
        loop {
            if client.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let report = waiting(PeerClose::wait(BOUND)).run(server).await;

    assert_eq!(report.outcome, CloseOutcome::WaitTimedOut);
    assert_eq!(report.elapsed, BOUND);
    assert!(
        report.discarded > 0,
        "trickled bytes were read and discarded"
    );
    trickle.abort();
}

// With no wait, the call returns as soon as close_notify is out, and the peer sees it.
#[tokio::test]
async fn no_wait_still_sends_close_notify() {
    let (mut client, server) = tcp_pair().await.unwrap();

    let report = waiting(PeerClose::None).run(server).await;

    assert_eq!(report.outcome, CloseOutcome::CloseNotifySent);
    assert!(
        read_to_end_clean(&mut client).await,
        "client saw close_notify"
    );
}

// The sequence works from the client side too.
#[tokio::test]
async fn client_side_close() {
    let (client, mut server) = tcp_pair().await.unwrap();
    let peer = tokio::spawn(async move {
        let clean = read_to_end_clean(&mut server).await;
        server.shutdown().await.unwrap();
        clean
    });

    let report = waiting(PeerClose::wait(BOUND)).run(client).await;

    assert_eq!(report.outcome, CloseOutcome::PeerCloseNotify);
    assert!(peer.await.unwrap(), "server saw the client's close_notify");
}

// An abortive close sends no close_notify: the peer sees a reset or an unexpected end,
// never a clean end of stream.
#[tokio::test]
async fn abortive_close_is_not_clean() {
    let (mut client, server) = tcp_pair().await.unwrap();

    let report = abort(server);

    assert_eq!(report.outcome, CloseOutcome::Aborted);
    let mut sink = Vec::new();
    let error = client.read_to_end(&mut sink).await.unwrap_err();
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
        "{error:?}"
    );
}

// A shared deadline cuts the wait short, whatever the wait's own bound.
#[tokio::test(start_paused = true)]
async fn outer_deadline_cuts_the_wait() {
    let (_client, server) = duplex_pair(64 * 1024).await;
    let deadline = Instant::now() + Duration::from_millis(50);

    let report = waiting(PeerClose::wait(Duration::from_secs(60)))
        .run_until(server, Some(deadline))
        .await;

    assert_eq!(report.outcome, CloseOutcome::WaitTimedOut);
    assert_eq!(report.elapsed, Duration::from_millis(50));
}
