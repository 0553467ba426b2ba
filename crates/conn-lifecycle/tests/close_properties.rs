//! A property of the close sequence: whatever a peer does (read, write, wait, send FIN or
//! close_notify, go away), the close ends within its bounds and reports the outcome that
//! matches what the peer did, at the moment it did it.
//!
//! Each case runs a real rustls client and server over tokio's in-memory duplex on paused
//! time: the client plays a generated script while the server runs the close sequence, and
//! a model of the sequence says what it must report. Peer actions happen on multiples of
//! 10 ms and the sequence's bounds end in 5 ms, so no action ties with a deadline.

use std::time::Duration;

use conn_lifecycle::{CloseOutcome, CloseReport, CloseSequence, PeerClose};
use conn_lifecycle_test_support::duplex_pair;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;
use tokio::time::{sleep, timeout};
use tokio_rustls::{client, server};

const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_millis(105);
const PEER_WAIT: Duration = Duration::from_millis(205);
/// Each direction of the in-memory pipe holds this much.
const PIPE: usize = 16 * 1024;
/// A response large enough to fill the pipe and rustls' send buffer, so that close_notify
/// queues behind data the peer has to read first.
const LARGE_RESPONSE: usize = 512 * 1024;
/// The peer's writes stay small enough that all of them fit in the pipe, so a write never
/// waits and every action happens at its scripted time.
const WRITES: [usize; 2] = [100, 1500];

/// One thing the peer does, after a delay.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// Nothing: only the delay.
    Nothing,
    /// Reads until the end of the stream: the server's close_notify, or the end of TCP.
    ReadToEnd,
    /// Writes this many bytes of application data.
    Write(usize),
    /// Sends close_notify, without closing the transport.
    CloseNotify,
    /// Closes the transport's write side, without close_notify.
    Fin,
}

/// How the script ends.
#[derive(Clone, Copy, Debug)]
enum Last {
    /// Keeps the connection until the server is done, then reads to the end.
    Hold,
    /// Drops the connection.
    Drop,
}

#[derive(Clone, Debug)]
struct Script {
    /// Bytes the server writes just before it closes: zero, or more than fits.
    response: usize,
    /// The peer's actions, each after its delay in milliseconds.
    steps: Vec<(u64, Action)>,
    /// The delay before the script's end, and the end.
    last: (u64, Last),
    /// The step after our close_notify.
    policy: PeerClose,
}

/// Delays of 10 to 120 ms: on the scale of the sequence's bounds, so that scripts act
/// before, during and after each step.
fn delay() -> impl Strategy<Value = u64> {
    (1u64..=12).prop_map(|tens| tens * 10)
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Nothing),
        Just(Action::ReadToEnd),
        prop::sample::select(&WRITES[..]).prop_map(Action::Write),
        Just(Action::CloseNotify),
        Just(Action::Fin),
    ]
}

fn policy() -> impl Strategy<Value = PeerClose> {
    let max_bytes = prop_oneof![Just(1000u64), Just(1 << 20)];
    prop_oneof![
        Just(PeerClose::None),
        max_bytes.clone().prop_map(|max_bytes| PeerClose::Wait {
            timeout: PEER_WAIT,
            max_bytes
        }),
        max_bytes.prop_map(|max_bytes| PeerClose::Linger {
            timeout: PEER_WAIT,
            max_bytes
        }),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    let response = prop_oneof![2 => Just(0), 1 => Just(LARGE_RESPONSE)];
    let last = (delay(), prop_oneof![Just(Last::Hold), Just(Last::Drop)]);
    let steps = prop::collection::vec((delay(), action()), 0..8);
    (response, steps, last, policy()).prop_map(|(response, steps, last, policy)| Script {
        response,
        steps,
        last,
        policy,
    })
}

/// What the peer did, as the server's side of the pipe sees it.
#[derive(Clone, Copy, Debug)]
enum Seen {
    Act(Action),
    Dropped,
}

/// The model: the outcome the close must report for `script`, and when, from its start.
fn expected(script: &Script) -> (CloseOutcome, Duration) {
    let ms = Duration::from_millis;
    let mut seen = Vec::new();
    let mut at = 0;
    for (delay, action) in &script.steps {
        at += delay;
        seen.push((ms(at), Seen::Act(*action)));
    }
    if let (delay, Last::Drop) = script.last {
        seen.push((ms(at + delay), Seen::Dropped));
    }

    // Step 1: close_notify goes out at once, unless it queues behind a large response; then
    // the peer has to read before the bound, and a peer that goes away first resets.
    let sent_at = if script.response == 0 {
        Duration::ZERO
    } else {
        let first = seen.iter().find(|(at, seen)| {
            *at < CLOSE_NOTIFY_TIMEOUT
                && matches!(seen, Seen::Act(Action::ReadToEnd) | Seen::Dropped)
        });
        match first {
            Some((at, Seen::Act(_))) => *at,
            Some((at, Seen::Dropped)) => return (CloseOutcome::PeerReset, *at),
            None => return (CloseOutcome::SendTimedOut, CLOSE_NOTIFY_TIMEOUT),
        }
    };

    // Step 2: read what the peer sent, in order, until its first way of ending or the bound.
    let (wait, max_bytes, on_timeout) = match script.policy {
        PeerClose::None => return (CloseOutcome::CloseNotifySent, sent_at),
        PeerClose::Wait { timeout, max_bytes } => (timeout, max_bytes, CloseOutcome::WaitTimedOut),
        PeerClose::Linger { timeout, max_bytes } => (timeout, max_bytes, CloseOutcome::Lingered),
    };
    let deadline = sent_at + wait;
    let mut discarded = 0u64;
    for (at, seen) in seen {
        if at > deadline {
            break;
        }
        let read_at = at.max(sent_at);
        match seen {
            Seen::Act(Action::Write(n)) => {
                discarded += n as u64;
                if discarded >= max_bytes {
                    return (CloseOutcome::ByteLimit, read_at);
                }
            }
            Seen::Act(Action::CloseNotify) => return (CloseOutcome::PeerCloseNotify, read_at),
            Seen::Act(Action::Fin) | Seen::Dropped => return (CloseOutcome::PeerFin, read_at),
            Seen::Act(Action::Nothing | Action::ReadToEnd) => {}
        }
    }
    (on_timeout, deadline)
}

/// Reads to the end of the stream; true if it ended with close_notify.
async fn read_to_end(client: &mut client::TlsStream<DuplexStream>) -> bool {
    let mut sink = Vec::new();
    client.read_to_end(&mut sink).await.is_ok()
}

/// Plays the script. Returns how the stream ended for the peer when it read to the end:
/// `Some(true)` with close_notify, `Some(false)` without, `None` if it never got there.
async fn play(
    mut client: client::TlsStream<DuplexStream>,
    script: Script,
    server_done: oneshot::Receiver<()>,
) -> Option<bool> {
    let mut clean_end = None;
    for (delay, action) in script.steps {
        sleep(Duration::from_millis(delay)).await;
        // Errors are the peer's business: writing after the server went away fails, and the
        // script goes on, as a careless peer's would.
        match action {
            Action::Nothing => {}
            Action::ReadToEnd if clean_end.is_none() => {
                clean_end = Some(read_to_end(&mut client).await);
            }
            Action::ReadToEnd => {}
            Action::Write(n) => {
                let _ = client.write_all(&vec![b'w'; n]).await;
                let _ = client.flush().await;
            }
            Action::CloseNotify => {
                client.get_mut().1.send_close_notify();
                let _ = client.flush().await;
            }
            Action::Fin => {
                let _ = client.get_mut().0.shutdown().await;
            }
        }
    }
    sleep(Duration::from_millis(script.last.0)).await;
    match script.last.1 {
        Last::Drop => clean_end,
        Last::Hold => {
            let _ = server_done.await;
            if clean_end.is_none() {
                clean_end = Some(read_to_end(&mut client).await);
            }
            clean_end
        }
    }
}

/// Writes up to `n` bytes, as much as goes without waiting.
async fn write_without_waiting(server: &mut server::TlsStream<DuplexStream>, n: usize) {
    let chunk = vec![b'r'; 16 * 1024];
    let mut written = 0;
    while written < n {
        match timeout(Duration::ZERO, server.write(&chunk)).await {
            Ok(Ok(sent)) if sent > 0 => written += sent,
            _ => break,
        }
    }
}

/// Runs one script; returns the close's report, the sequence, and the peer's view.
fn run(script: &Script) -> (CloseReport, CloseSequence, Option<bool>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (client, mut server) = duplex_pair(PIPE).await;
        let sequence = CloseSequence::new()
            .close_notify_timeout(CLOSE_NOTIFY_TIMEOUT)
            .peer_close(script.policy);
        let (done, server_done) = oneshot::channel();
        let peer = tokio::spawn(play(client, script.clone(), server_done));

        write_without_waiting(&mut server, script.response).await;
        let report = sequence.run(server).await;
        let _ = done.send(());
        let clean_end = peer.await.expect("the peer task does not panic");
        (report, sequence, clean_end)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // Every script: the close ends within its bounds, with the outcome the model predicts,
    // at the moment it predicts; a peer still there at the end saw close_notify exactly when
    // the report says it was sent.
    #[test]
    fn close_ends_within_its_bounds_with_the_outcome_the_peer_caused(script in script()) {
        let (report, sequence, clean_end) = run(&script);
        let (outcome, at) = expected(&script);

        prop_assert!(report.elapsed <= sequence.max_duration(), "{report:?}");
        prop_assert_eq!(report.outcome, outcome, "{:?}", report);
        prop_assert_eq!(report.elapsed, at, "{:?}", report);
        if let Last::Hold = script.last.1 {
            prop_assert_eq!(clean_end, Some(outcome.close_notify_sent()));
        }
    }
}

// Hand-written scripts with their outcomes spelled out: one per outcome, and the cases the
// generator reaches only now and then (a FIN queued behind unread data, a read that comes
// too late). They check the model as much as the close sequence.
#[test]
fn scripted_examples_match_the_model_and_the_run() {
    use Action::{CloseNotify, Fin, ReadToEnd, Write};
    use CloseOutcome::*;

    let wait = PeerClose::Wait {
        timeout: PEER_WAIT,
        max_bytes: 1000,
    };
    let linger = PeerClose::Linger {
        timeout: PEER_WAIT,
        max_bytes: 1000,
    };
    let hold = (10, Last::Hold);
    let examples = [
        (0, vec![(10, CloseNotify)], hold, wait, PeerCloseNotify, 10),
        (0, vec![(10, Fin)], hold, wait, PeerFin, 10),
        (0, vec![], (10, Last::Drop), wait, PeerFin, 10),
        (
            0,
            vec![(10, Write(100)), (10, Write(1500))],
            hold,
            wait,
            ByteLimit,
            20,
        ),
        (0, vec![], hold, wait, WaitTimedOut, 205),
        (0, vec![(10, Write(100))], hold, linger, Lingered, 205),
        (0, vec![], hold, PeerClose::None, CloseNotifySent, 0),
        (LARGE_RESPONSE, vec![], hold, wait, SendTimedOut, 105),
        (
            LARGE_RESPONSE,
            vec![],
            (50, Last::Drop),
            wait,
            PeerReset,
            50,
        ),
        (
            LARGE_RESPONSE,
            vec![(20, Fin), (30, ReadToEnd)],
            hold,
            wait,
            PeerFin,
            50,
        ),
        (
            LARGE_RESPONSE,
            vec![(20, ReadToEnd), (30, CloseNotify)],
            hold,
            wait,
            PeerCloseNotify,
            50,
        ),
        (
            LARGE_RESPONSE,
            vec![(110, ReadToEnd)],
            hold,
            wait,
            SendTimedOut,
            105,
        ),
    ];

    for (response, steps, last, policy, outcome, at) in examples {
        let script = Script {
            response,
            steps,
            last,
            policy,
        };
        let at = Duration::from_millis(at);
        assert_eq!(expected(&script), (outcome, at), "model: {script:?}");
        let (report, _, clean_end) = run(&script);
        assert_eq!(
            (report.outcome, report.elapsed),
            (outcome, at),
            "run: {script:?}"
        );
        if let Last::Hold = script.last.1 {
            assert_eq!(clean_end, Some(outcome.close_notify_sent()), "{script:?}");
        }
    }
}
