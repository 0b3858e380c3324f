//! Loom models of the node → apply hand-off (`src/server/apply.rs`).
//!
//! Run with:
//! `CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" cargo test --release --test loom_apply`
//!
//! Each model has at most 4 threads (loom allows 5): the node thread, the
//! apply thread and two request handlers (one of them is the model's main
//! thread). The channel has capacity 1, so the node thread really blocks on
//! a full channel. Loom reports a deadlock (every live thread blocked, which
//! is also how a lost wake-up shows) as a panic.
//!
//! Every model is also run with each [`Flaw`] it must catch (in a child
//! process, see [`check_catches`]), and the test asserts that loom then
//! fails, so the models are shown to see the bugs they are meant to rule
//! out.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use raftkv::server::apply::{Flaw, Handoff, WaitError};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc as StdArc;
use std::time::Instant;

type H = Handoff<u64, u64>;

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
        "SendHoldsWaiterLock" => Flaw::SendHoldsWaiterLock,
        "CloseForgetsReceiver" => Flaw::CloseForgetsReceiver,
        other => panic!("unknown flaw {other}"),
    };
    let model: fn(Flaw) = match name.as_str() {
        "happy_path" => happy_path,
        "leadership_loss" => leadership_loss,
        "shutdown" => shutdown,
        other => panic!("unknown model {other}"),
    };
    eprintln!("running flawed {name} with {flaw:?}");
    explore(flaw, model);
}

/// Apply thread: applies entries strictly in order 1, 2, ... exactly once;
/// the reply for index i is 10 * i. Returns the last index applied.
fn spawn_apply(h: &Arc<H>) -> thread::JoinHandle<u64> {
    let h = h.clone();
    thread::spawn(move || {
        let mut applied = 0;
        // Groups of up to 2: with a channel of capacity 1 a group is one
        // entry, but the grouping path (`recv_many`) is the one modelled.
        let done: Result<(), ()> = h.run_apply(2, |group| {
            Ok(group
                .into_iter()
                .map(|i| {
                    assert_eq!(i, applied + 1, "entries applied out of order or twice");
                    applied = i;
                    (i, 10 * i)
                })
                .collect())
        });
        done.unwrap();
        applied
    })
}

/// Node thread delivers 1..=3 then closes; waiters at 1 and 3 each get their
/// reply exactly once.
fn happy_path(flaw: Flaw) {
    let h = Arc::new(H::with_flaw(1, flaw));
    let t1 = h.register(1);
    let t3 = h.register(3);
    let node = {
        let h = h.clone();
        thread::spawn(move || {
            for i in 1..=3 {
                h.deliver(i).unwrap();
            }
            h.entries().close();
        })
    };
    let apply = spawn_apply(&h);
    let w1 = thread::spawn(move || t1.wait());
    assert_eq!(t3.wait(), Ok(30));
    assert_eq!(w1.join().unwrap(), Ok(10));
    node.join().unwrap();
    assert_eq!(apply.join().unwrap(), 3, "every entry applied");
    assert_eq!((h.waiters().pending(), h.waiters().unclaimed()), (0, 0));
}

/// The node thread delivers 1, loses leadership while waiters at 2 and 3
/// wait, then delivers entry 2 (committed by the new leader) and stops.
/// Both waiters get NotLeader exactly once, even though 2 is applied after.
fn leadership_loss(flaw: Flaw) {
    let h = Arc::new(H::with_flaw(1, flaw));
    let t2 = h.register(2);
    let t3 = h.register(3);
    let node = {
        let h = h.clone();
        thread::spawn(move || {
            h.deliver(1).unwrap();
            h.lose_leadership();
            h.deliver(2).unwrap();
            h.entries().close();
        })
    };
    let apply = spawn_apply(&h);
    let w2 = thread::spawn(move || t2.wait());
    assert_eq!(t3.wait(), Err(WaitError::NotLeader));
    assert_eq!(w2.join().unwrap(), Err(WaitError::NotLeader));
    node.join().unwrap();
    assert_eq!(apply.join().unwrap(), 2);
    assert_eq!((h.waiters().pending(), h.waiters().unclaimed()), (0, 0));
}

/// The node thread tries to deliver 1..=3 while the main thread (also a
/// request handler) shuts the server down: the node thread is woken from a
/// full channel, the apply thread drains and returns, both waiters are
/// answered exactly once (their reply if applied in time, ShutDown if not).
fn shutdown(flaw: Flaw) {
    let h = Arc::new(H::with_flaw(1, flaw));
    let t1 = h.register(1);
    let t3 = h.register(3);
    let node = {
        let h = h.clone();
        thread::spawn(move || {
            let mut delivered = 0;
            for i in 1..=3 {
                if h.deliver(i).is_err() {
                    break;
                }
                delivered = i;
            }
            delivered
        })
    };
    let apply = spawn_apply(&h);
    let w1 = thread::spawn(move || t1.wait());
    h.shutdown();
    let r3 = t3.wait();
    assert!(matches!(r3, Ok(30) | Err(WaitError::ShutDown)), "{r3:?}");
    let r1 = w1.join().unwrap();
    assert!(matches!(r1, Ok(10) | Err(WaitError::ShutDown)), "{r1:?}");
    let delivered = node.join().unwrap();
    assert_eq!(apply.join().unwrap(), delivered, "everything delivered is applied");
    assert_eq!((h.waiters().pending(), h.waiters().unclaimed()), (0, 0));
}

#[test]
fn loom_happy_path() {
    check("happy_path", happy_path);
}

#[test]
fn loom_happy_path_catches_notify_before_update() {
    check_catches("happy_path", Flaw::NotifyBeforeUpdate);
}

#[test]
fn loom_happy_path_catches_send_holding_waiter_lock() {
    check_catches("happy_path", Flaw::SendHoldsWaiterLock);
}

#[test]
fn loom_leadership_loss() {
    check("leadership_loss", leadership_loss);
}

#[test]
fn loom_leadership_loss_catches_notify_before_update() {
    check_catches("leadership_loss", Flaw::NotifyBeforeUpdate);
}

#[test]
fn loom_shutdown() {
    check("shutdown", shutdown);
}

#[test]
fn loom_shutdown_catches_notify_before_update() {
    check_catches("shutdown", Flaw::NotifyBeforeUpdate);
}

#[test]
fn loom_shutdown_catches_close_forgetting_receiver() {
    check_catches("shutdown", Flaw::CloseForgetsReceiver);
}
