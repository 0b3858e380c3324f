//! Loom models of where the server's threads meet (`src/server/handoff.rs`):
//! the node thread, the persist thread and request handlers.
//!
//! Run with:
//! `CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" cargo test --release --test loom_handoff`
//!
//! Each model has at most 4 threads (loom allows 5): the node thread, the
//! persist thread and one or two request handlers (one of them is the
//! model's main thread). The batch channel has capacity 1, so the node
//! thread really blocks on a full channel. Loom reports a deadlock (every
//! live thread blocked, which is also how a lost wake-up shows) as a panic.
//!
//! Every model is also run with each [`Flaw`] it must catch (in a child
//! process, see [`check_catches`]), and the test asserts that loom then
//! fails, so the models are shown to see the bugs they are meant to rule
//! out.
#![cfg(loom)]

use loom::sync::{Arc, Mutex};
use loom::thread;
use raftkv::server::handoff::{BoundedChannel, Flaw, Inbox, WaitError, Waiters};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc as StdArc;
use std::time::Instant;

/// Runs `model` under loom (preemption bound 2) and returns the number of
/// interleavings explored.
fn explore(flaw: Flaw, model: fn(Flaw)) -> usize {
    // A plain std counter: it is outside the model, like a log.
    let runs = StdArc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        model(flaw)
    });
    runs.load(Ordering::Relaxed)
}

fn check(name: &str, model: fn(Flaw)) {
    let start = Instant::now();
    let n = explore(Flaw::None, model);
    eprintln!("{name}: passed, {n} interleavings in {:.2?}", start.elapsed());
}

/// Asserts that loom fails the model when `flaw` is switched on.
///
/// A loom failure (deadlock or assertion) unwinds through loom objects whose
/// destructors panic again, which aborts the process, so `catch_unwind` cannot
/// contain it. The flawed model therefore runs in a child process (this test
/// binary, running only [`flawed_model`]), and the child must fail with a
/// loom deadlock or one of the model's assertions.
fn check_catches(name: &str, flaw: Flaw) {
    let start = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "flawed_model", "--nocapture", "--test-threads=1"])
        .env(MODEL_VAR, name)
        .env(FLAW_VAR, format!("{flaw:?}"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("running flawed {name} with {flaw:?}")), "child did not run the model:\n{stderr}");
    assert!(!out.status.success(), "{name}: loom did not catch {flaw:?}:\n{stderr}");
    let why = if stderr.contains("deadlock; threads") { "deadlock" } else { "panic" };
    assert!(stderr.contains("panicked"), "{name} with {flaw:?} failed without a loom report:\n{stderr}");
    eprintln!("{name}: caught {flaw:?} ({why}) in {:.2?}", start.elapsed());
}

const MODEL_VAR: &str = "RAFTKV_LOOM_FLAWED_MODEL";
const FLAW_VAR: &str = "RAFTKV_LOOM_FLAW";

/// The child side of [`check_catches`]; does nothing unless its environment
/// names a model and a flaw.
#[test]
fn flawed_model() {
    let (Ok(name), Ok(flaw)) = (std::env::var(MODEL_VAR), std::env::var(FLAW_VAR)) else {
        return;
    };
    let flaw = match flaw.as_str() {
        "NotifyBeforeUpdate" => Flaw::NotifyBeforeUpdate,
        "ReportWithoutWake" => Flaw::ReportWithoutWake,
        "CloseForgetsReceiver" => Flaw::CloseForgetsReceiver,
        "StepOrForget" => Flaw::StepOrForget,
        other => panic!("unknown flaw {other}"),
    };
    let model: fn(Flaw) = match name.as_str() {
        "durability_round_trip" => durability_round_trip,
        "answers" => answers,
        "answers_awaited" => answers_awaited,
        "storage_failure" => storage_failure,
        "step_on_arrival" => step_on_arrival,
        other => panic!("unknown model {other}"),
    };
    eprintln!("running flawed {name} with {flaw:?}");
    explore(flaw, model);
}

/// The persist thread: takes groups of batches (each batch a number), checks
/// they come in order, "writes" them and reports the last one durable.
/// Returns the last batch it wrote.
fn spawn_persist(batches: &Arc<BoundedChannel<u64>>, inbox: &Arc<Inbox<()>>) -> thread::JoinHandle<u64> {
    let (batches, inbox) = (batches.clone(), inbox.clone());
    thread::spawn(move || {
        let mut written = 0;
        while let Ok(group) = batches.recv_many(2) {
            for batch in group {
                assert_eq!(batch, written + 1, "batches written out of order or twice");
                written = batch;
            }
            inbox.persisted(written);
        }
        written
    })
}

/// Rule 1 and 2 for durability: the node thread hands batches 1..=3 to the
/// persist thread (blocking on the full channel) and waits on its inbox
/// until batch 3 is reported durable; then it closes the channel and the
/// persist thread ends. A report that does not wake the node thread, or a
/// close that does not wake the persist thread, is a deadlock.
fn durability_round_trip(flaw: Flaw) {
    let batches = Arc::new(BoundedChannel::with_flaw(1, flaw));
    let inbox = Arc::new(Inbox::with_flaw(1, flaw));
    let persist = spawn_persist(&batches, &inbox);
    for batch in 1..=3 {
        batches.send(batch).unwrap();
    }
    let mut durable = 0;
    while durable < 3 {
        let got = inbox.wait(1, None);
        assert!(got.durable >= durable, "durability went back");
        durable = got.durable;
    }
    batches.close();
    assert_eq!(persist.join().unwrap(), 3, "every batch written");
}

/// Rule 2 for answers: the node thread answers two waiting requests (after
/// their batch is durable, which this model leaves out); each request
/// handler gets its own answer exactly once.
fn answers(flaw: Flaw) {
    two_answers(flaw, false);
}

/// Rule 2 for answers awaited by tasks (`Ticket::answer`, what the client
/// port's connections use): one handler awaits its answer as a future, the
/// other blocks; each gets its own answer exactly once, and no waker is
/// left registered.
fn answers_awaited(flaw: Flaw) {
    two_answers(flaw, true);
}

fn two_answers(flaw: Flaw, awaited: bool) {
    let waiters = Waiters::with_flaw(flaw);
    let t1 = waiters.register(1);
    let t2 = waiters.register(2);
    let node = {
        let waiters = waiters.clone();
        thread::spawn(move || {
            waiters.complete(2, 20);
            waiters.complete(1, 10);
        })
    };
    let handler = thread::spawn(move || if awaited { loom::future::block_on(t1.answer()) } else { t1.wait() });
    assert_eq!(t2.wait(), Ok(20));
    assert_eq!(handler.join().unwrap(), Ok(10));
    node.join().unwrap();
    assert_eq!((waiters.pending(), waiters.unclaimed(), waiters.awaiting_tasks()), (0, 0, 0));
}

/// Rule 5: two tasks push events while the node thread sleeps; each steps
/// them itself if it can take the node's lock at once, and otherwise wakes
/// the node thread. Every event is stepped exactly once, one task's in the
/// order it pushed them, and once both tasks have returned no event waits
/// behind a node thread that nobody woke (which, in the server, would wait
/// for the next tick).
fn step_on_arrival(flaw: Flaw) {
    let inbox = Arc::new(Inbox::<u64>::with_flaw(4, flaw));
    let stepped = Arc::new(Mutex::new(Vec::new()));
    let node = {
        let (inbox, stepped) = (inbox.clone(), stepped.clone());
        thread::spawn(move || loop {
            inbox.wait_ready(None);
            let mut stepped = stepped.lock().unwrap();
            let got = inbox.take(4);
            stepped.extend(got.events);
            if got.closed {
                break;
            }
        })
    };
    let pusher = |events: Vec<u64>| {
        let (inbox, stepped) = (inbox.clone(), stepped.clone());
        thread::spawn(move || {
            for event in events {
                let step = |stepped: &mut Vec<u64>, got: raftkv::server::handoff::Inboxed<u64>| {
                    stepped.extend(got.events);
                    // A round takes other locks (the status, the waiters)
                    // before it lets go of the node: a point where loom may
                    // run another thread.
                    thread::yield_now();
                };
                inbox.push_or_step(event, &stepped, 4, |_| true, step).unwrap();
            }
        })
    };
    let (a, b) = (pusher(vec![1, 2]), pusher(vec![3]));
    a.join().unwrap();
    b.join().unwrap();
    assert!(!inbox.stranded(), "an event waits and nobody woke the node thread");
    inbox.close();
    node.join().unwrap();
    let stepped = stepped.lock().unwrap().clone();
    let mut sorted = stepped.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2, 3], "each event stepped exactly once");
    let at = |e| stepped.iter().position(|&x| x == e);
    assert!(at(1) < at(2), "one task's events stepped in the order pushed: {stepped:?}");
}

/// Rule 4: the persist thread fails on its first write (a storage error)
/// while the node thread is blocked handing over more batches and a request
/// waits. The failure stops everything: the node thread wakes from the full
/// channel with an error, its inbox reports closed, and the request is
/// answered `ShutDown` exactly once.
fn storage_failure(flaw: Flaw) {
    let batches = Arc::new(BoundedChannel::<u64>::with_flaw(1, flaw));
    let inbox = Arc::new(Inbox::<()>::with_flaw(1, flaw));
    let waiters = Waiters::<u64>::with_flaw(flaw);
    let ticket = waiters.register(7);
    let persist = {
        let (batches, inbox, waiters) = (batches.clone(), inbox.clone(), waiters.clone());
        thread::spawn(move || {
            let first = batches.recv_many(2);
            assert!(first.is_ok(), "the node thread sends before anything closes");
            // The write failed: stop everything (`Shared::stop`).
            batches.close();
            inbox.close();
            waiters.shutdown();
        })
    };
    let node = {
        let (batches, inbox) = (batches.clone(), inbox.clone());
        thread::spawn(move || {
            let mut sent = 0;
            for batch in 1..=3 {
                if batches.send(batch).is_err() {
                    break;
                }
                sent = batch;
            }
            assert!(inbox.wait(1, None).closed, "a failed node's inbox is closed");
            sent
        })
    };
    assert_eq!(ticket.wait(), Err(WaitError::ShutDown));
    persist.join().unwrap();
    assert!((1..=2).contains(&node.join().unwrap()), "the node thread got unblocked");
    assert_eq!((waiters.pending(), waiters.unclaimed()), (0, 0));
}

#[test]
fn loom_durability_round_trip() {
    check("durability_round_trip", durability_round_trip);
}

#[test]
fn loom_durability_round_trip_catches_a_report_without_wake() {
    check_catches("durability_round_trip", Flaw::ReportWithoutWake);
}

#[test]
fn loom_durability_round_trip_catches_close_forgetting_receiver() {
    check_catches("durability_round_trip", Flaw::CloseForgetsReceiver);
}

#[test]
fn loom_step_on_arrival() {
    check("step_on_arrival", step_on_arrival);
}

#[test]
fn loom_step_on_arrival_catches_a_pusher_that_neither_steps_nor_wakes() {
    check_catches("step_on_arrival", Flaw::StepOrForget);
}

#[test]
fn loom_answers() {
    check("answers", answers);
}

#[test]
fn loom_answers_catches_notify_before_update() {
    check_catches("answers", Flaw::NotifyBeforeUpdate);
}

#[test]
fn loom_answers_awaited() {
    check("answers_awaited", answers_awaited);
}

#[test]
fn loom_answers_awaited_catches_notify_before_update() {
    check_catches("answers_awaited", Flaw::NotifyBeforeUpdate);
}

#[test]
fn loom_storage_failure() {
    check("storage_failure", storage_failure);
}

#[test]
fn loom_storage_failure_catches_notify_before_update() {
    check_catches("storage_failure", Flaw::NotifyBeforeUpdate);
}
