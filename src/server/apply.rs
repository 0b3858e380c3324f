//! How the node thread hands committed entries to the apply side, and how
//! request handlers learn that their entry was applied.
//!
//! Three kinds of thread meet here:
//!
//! - the **node thread** drives the Raft node and pushes each committed entry
//!   into a [`BoundedChannel`] (bounded so a slow state machine pushes back on
//!   Raft instead of growing memory without limit);
//! - the **apply thread** pops entries in order, applies them and calls
//!   [`Waiters::complete`] for each index;
//! - **request handlers** hold a [`Ticket`] and block in [`Ticket::wait`]
//!   until their index is applied, leadership is lost
//!   ([`WaitError::NotLeader`]) or the server shuts down.
//!
//! The seed warns of deadlock between the kv server and its Raft library.
//! The rules that rule it out, each checked by `tests/loom_apply.rs`:
//!
//! 1. The apply side never waits on a waiter: a waiter only ever holds the
//!    registry lock for a few instructions (it releases it inside
//!    `Condvar::wait`), and the apply side never blocks while holding it.
//! 2. State is changed *before* the matching notify, under the lock the
//!    waiter re-checks, so a wake-up cannot be lost.
//! 3. The node thread never blocks in a send while holding the waiter lock:
//!    the apply thread needs that lock to make room in the channel.
//! 4. Closing the channel wakes both sides, so shutdown ends every thread.
//!
//! Every primitive comes from [`crate::sync`], so loom sees all of it.
//!
//! [`Flaw`] re-introduces one broken rule at a time, on the same code paths,
//! so the loom tests can show they would catch it.

use crate::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// A deliberately broken variant, for showing that the loom tests catch it.
/// Never set outside tests.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flaw {
    #[default]
    None,
    /// [`Waiters`] wakes a waiter before recording its answer (breaks rule 2).
    NotifyBeforeUpdate,
    /// [`Handoff::deliver`] sends while holding the waiter lock (breaks
    /// rule 3).
    SendHoldsWaiterLock,
    /// [`BoundedChannel::close`] wakes blocked senders but not a blocked
    /// receiver (breaks rule 4).
    CloseForgetsReceiver,
}

/// Locks, ignoring poison: no code in this module panics while holding a
/// lock, and a panicking handler elsewhere must not take the apply side down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// BoundedChannel

/// The channel was closed; a refused send hands its item back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// The channel was closed and everything sent before was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvError;

/// A blocking FIFO with a fixed capacity, on the facade's `Mutex` and
/// `Condvar` (loom models no `sync_channel`, so `std`'s cannot be checked).
pub struct BoundedChannel<T> {
    state: Mutex<ChanState<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
    flaw: Flaw,
}

struct ChanState<T> {
    queue: VecDeque<T>,
    closed: bool,
}

impl<T> BoundedChannel<T> {
    /// # Panics
    /// If `capacity` is 0: a rendezvous channel would need a different
    /// hand-shake and nothing here needs one.
    pub fn new(capacity: usize) -> BoundedChannel<T> {
        BoundedChannel::with_flaw(capacity, Flaw::None)
    }

    #[doc(hidden)]
    pub fn with_flaw(capacity: usize, flaw: Flaw) -> BoundedChannel<T> {
        assert!(capacity > 0, "BoundedChannel needs a capacity of at least 1");
        BoundedChannel {
            state: Mutex::new(ChanState { queue: VecDeque::with_capacity(capacity), closed: false }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity,
            flaw,
        }
    }

    /// Blocks while the channel is full. Fails, returning the item, once the
    /// channel is closed (even if there is room: nobody will read it).
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let mut s = lock(&self.state);
        loop {
            if s.closed {
                return Err(SendError(item));
            }
            if s.queue.len() < self.capacity {
                break;
            }
            s = wait(&self.not_full, s);
        }
        s.queue.push_back(item);
        drop(s);
        // One item in: one receiver can make progress.
        self.not_empty.notify_one();
        Ok(())
    }

    /// Blocks while the channel is empty and open. After a close it still
    /// yields what was sent before, so no committed entry is lost on the way
    /// to the state machine; then it fails.
    pub fn recv(&self) -> Result<T, RecvError> {
        let mut s = lock(&self.state);
        loop {
            if let Some(item) = s.queue.pop_front() {
                drop(s);
                // One slot freed: one sender can make progress.
                self.not_full.notify_one();
                return Ok(item);
            }
            if s.closed {
                return Err(RecvError);
            }
            s = wait(&self.not_empty, s);
        }
    }

    /// Like [`recv`](BoundedChannel::recv), but takes up to `max` items at
    /// once (at least one), so a slow consumer catches up in one go: the
    /// persist side turns everything queued during one fsync into the next
    /// single fsync (group commit).
    pub fn recv_many(&self, max: usize) -> Result<Vec<T>, RecvError> {
        let mut s = lock(&self.state);
        loop {
            if !s.queue.is_empty() {
                let take = s.queue.len().min(max.max(1));
                let items: Vec<T> = s.queue.drain(..take).collect();
                drop(s);
                // `take` slots freed: every blocked sender may proceed.
                self.not_full.notify_all();
                return Ok(items);
            }
            if s.closed {
                return Err(RecvError);
            }
            s = wait(&self.not_empty, s);
        }
    }

    /// Refuses further sends and wakes every blocked sender and receiver.
    /// Idempotent.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        if self.flaw != Flaw::CloseForgetsReceiver {
            self.not_empty.notify_all();
        }
        self.not_full.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Items sent and not yet received.
    pub fn len(&self) -> usize {
        lock(&self.state).queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> fmt::Debug for BoundedChannel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("BoundedChannel")
            .field("len", &s.queue.len())
            .field("capacity", &self.capacity)
            .field("closed", &s.closed)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Waiters

/// Why a waiter got no reply. The request may or may not take effect later;
/// the client retries and the session table keeps a retried write from
/// taking effect twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitError {
    /// This server lost leadership while the request waited.
    NotLeader,
    /// The server is shutting down.
    ShutDown,
    /// Another request was registered at the same index: the entry this
    /// waiter proposed was overwritten by a later leader's.
    Superseded,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::NotLeader => "not leader",
            WaitError::ShutDown => "server shutting down",
            WaitError::Superseded => "entry superseded",
        })
    }
}

impl std::error::Error for WaitError {}

/// Request waiters keyed by log index (or read id: any `u64` the caller
/// completes in order of its choosing).
///
/// Each ticket has its own `Condvar` so completing one index wakes one
/// thread, not every waiting handler. All of them share the registry lock,
/// which is what makes "check, then sleep" atomic against "answer, then
/// notify".
pub struct Waiters<R> {
    shared: Arc<WaitShared<R>>,
}

struct WaitShared<R> {
    state: Mutex<WaitState<R>>,
    flaw: Flaw,
}

impl<R> Clone for Waiters<R> {
    /// Another handle on the same registry.
    fn clone(&self) -> Waiters<R> {
        Waiters { shared: self.shared.clone() }
    }
}

struct WaitState<R> {
    /// Key → the ticket still waiting there. At most one per key.
    pending: BTreeMap<u64, Pending>,
    /// Ticket id → its answer, until the ticket takes it.
    answered: BTreeMap<u64, Result<R, WaitError>>,
    next_ticket: u64,
    shut_down: bool,
}

struct Pending {
    ticket: u64,
    wake: Arc<Condvar>,
}

impl<R> Waiters<R> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Waiters<R> {
        Waiters::with_flaw(Flaw::None)
    }

    #[doc(hidden)]
    pub fn with_flaw(flaw: Flaw) -> Waiters<R> {
        let shared = Arc::new(WaitShared {
            state: Mutex::new(WaitState {
                pending: BTreeMap::new(),
                answered: BTreeMap::new(),
                next_ticket: 0,
                shut_down: false,
            }),
            flaw,
        });
        Waiters { shared }
    }

    /// Registers a waiter for `key`. Must happen before the entry at `key`
    /// can be applied (the node thread registers as it proposes), or the
    /// answer is missed. A waiter already at `key` gets
    /// [`WaitError::Superseded`]; after [`Waiters::shutdown`] the ticket is
    /// answered [`WaitError::ShutDown`] at once.
    pub fn register(&self, key: u64) -> Ticket<R> {
        let wake = Arc::new(Condvar::new());
        let mut s = lock(&self.shared.state);
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        let mut to_wake = None;
        if s.shut_down {
            s.answered.insert(ticket, Err(WaitError::ShutDown));
        } else if let Some(old) = s.pending.insert(key, Pending { ticket, wake: wake.clone() }) {
            s.answered.insert(old.ticket, Err(WaitError::Superseded));
            to_wake = Some(old.wake);
        }
        drop(s);
        if let Some(cv) = to_wake {
            cv.notify_one();
        }
        Ticket { waiters: self.clone(), key, ticket, wake }
    }

    /// Answers the waiter at `key`, if any (a follower, or an entry proposed
    /// by another server, has none). Never blocks on a waiter: the lock is
    /// held only by threads that are not waiting.
    pub fn complete(&self, key: u64, reply: R) {
        self.answer(|s| match s.pending.remove(&key) {
            Some(p) => vec![(p, Ok(reply))],
            None => Vec::new(),
        });
    }

    /// Answers every waiter with `error` (leadership loss: a new leader may
    /// overwrite any uncommitted entry, so no waiter can be promised a
    /// result).
    pub fn fail_all(&self, error: WaitError) {
        self.answer(|s| std::mem::take(&mut s.pending).into_values().map(|p| (p, Err(error))).collect());
    }

    /// Answers every waiter [`WaitError::ShutDown`], and every later one too.
    pub fn shutdown(&self) {
        self.answer(|s| {
            s.shut_down = true;
            std::mem::take(&mut s.pending).into_values().map(|p| (p, Err(WaitError::ShutDown))).collect()
        });
    }

    /// Waiters not answered yet.
    pub fn pending(&self) -> usize {
        lock(&self.shared.state).pending.len()
    }

    /// Answers nobody has collected yet (a test checks this drains to 0: no
    /// waiter answered twice or left behind).
    pub fn unclaimed(&self) -> usize {
        lock(&self.shared.state).answered.len()
    }

    /// Takes out the waiters `pick` chooses and records their answers, then
    /// wakes them after unlocking (so a woken waiter does not immediately
    /// block on the lock we hold).
    fn answer(&self, pick: impl FnOnce(&mut WaitState<R>) -> Vec<(Pending, Result<R, WaitError>)>) {
        let mut s = lock(&self.shared.state);
        let done = pick(&mut s);
        if self.shared.flaw == Flaw::NotifyBeforeUpdate {
            // Broken on purpose: the waiter can wake, see no answer, and go
            // back to sleep before the answer lands; nobody wakes it again.
            let wakes: Vec<_> = done.iter().map(|(p, _)| p.wake.clone()).collect();
            drop(s);
            for cv in &wakes {
                cv.notify_one();
            }
            s = lock(&self.shared.state);
            for (p, r) in done {
                s.answered.insert(p.ticket, r);
            }
            return;
        }
        let mut wakes = Vec::with_capacity(done.len());
        for (p, r) in done {
            s.answered.insert(p.ticket, r);
            wakes.push(p.wake);
        }
        drop(s);
        for cv in wakes {
            cv.notify_one();
        }
    }
}

impl<R> fmt::Debug for Waiters<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.shared.state);
        f.debug_struct("Waiters")
            .field("pending", &s.pending.len())
            .field("unclaimed", &s.answered.len())
            .field("shut_down", &s.shut_down)
            .finish()
    }
}

/// One request's claim on the answer for its key. `wait` consumes it, so an
/// answer is taken at most once; dropping it unanswered unregisters it.
pub struct Ticket<R> {
    waiters: Waiters<R>,
    key: u64,
    ticket: u64,
    wake: Arc<Condvar>,
}

impl<R> Ticket<R> {
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Blocks until this ticket is answered.
    pub fn wait(self) -> Result<R, WaitError> {
        let mut s = lock(&self.waiters.shared.state);
        loop {
            if let Some(answer) = s.answered.remove(&self.ticket) {
                return answer;
            }
            s = wait(&self.wake, s);
        }
    }

    /// The answer if there is one already; never blocks on a condition.
    pub fn try_wait(self) -> Result<Result<R, WaitError>, Ticket<R>> {
        let answer = lock(&self.waiters.shared.state).answered.remove(&self.ticket);
        answer.ok_or(self)
    }
}

impl<R> Drop for Ticket<R> {
    fn drop(&mut self) {
        // A handler that gave up (client gone) must not leave its slot or its
        // answer behind.
        let mut s = lock(&self.waiters.shared.state);
        if s.pending.get(&self.key).is_some_and(|p| p.ticket == self.ticket) {
            s.pending.remove(&self.key);
        }
        s.answered.remove(&self.ticket);
    }
}

impl<R> fmt::Debug for Ticket<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").field("key", &self.key).field("ticket", &self.ticket).finish()
    }
}

// ---------------------------------------------------------------------------
// Handoff

/// The node → apply hand-off: the entry channel plus the waiters the apply
/// side answers. Shared by `Arc` between the node thread, the apply thread
/// and the request handlers.
pub struct Handoff<T, R> {
    entries: BoundedChannel<T>,
    waiters: Waiters<R>,
    flaw: Flaw,
}

impl<T, R> Handoff<T, R> {
    pub fn new(capacity: usize) -> Handoff<T, R> {
        Handoff::with_flaw(capacity, Flaw::None)
    }

    #[doc(hidden)]
    pub fn with_flaw(capacity: usize, flaw: Flaw) -> Handoff<T, R> {
        Handoff { entries: BoundedChannel::with_flaw(capacity, flaw), waiters: Waiters::with_flaw(flaw), flaw }
    }

    pub fn waiters(&self) -> &Waiters<R> {
        &self.waiters
    }

    pub fn entries(&self) -> &BoundedChannel<T> {
        &self.entries
    }

    /// See [`Waiters::register`].
    pub fn register(&self, key: u64) -> Ticket<R> {
        self.waiters.register(key)
    }

    /// Node thread: hands one committed entry (in commit order) to the apply
    /// side; blocks while the channel is full. Fails once shut down.
    pub fn deliver(&self, entry: T) -> Result<(), SendError<T>> {
        if self.flaw == Flaw::SendHoldsWaiterLock {
            // Broken on purpose: the apply thread needs this lock to answer
            // a waiter before it receives again, so a full channel never
            // drains.
            let _held = lock(&self.waiters.shared.state);
            return self.entries.send(entry);
        }
        self.entries.send(entry)
    }

    /// Node thread: this server stopped leading; every waiter gets
    /// [`WaitError::NotLeader`]. Entries already committed are still
    /// delivered and applied, just answered to nobody.
    pub fn lose_leadership(&self) {
        self.waiters.fail_all(WaitError::NotLeader);
    }

    /// Apply thread: receives entries in order, in groups of at most
    /// `max_group` (everything queued, so one slow step such as an fsync
    /// covers all that arrived meanwhile), until the hand-off is shut down
    /// and drained. `apply` handles one group and returns the keys it
    /// answers with their replies, which go to the waiters at those keys if
    /// there still are any. An error from `apply` stops the loop and is
    /// returned; the caller then shuts the hand-off down.
    pub fn run_apply<E>(
        &self,
        max_group: usize,
        mut apply: impl FnMut(Vec<T>) -> Result<Vec<(u64, R)>, E>,
    ) -> Result<(), E> {
        while let Ok(group) = self.entries.recv_many(max_group) {
            for (key, reply) in apply(group)? {
                self.waiters.complete(key, reply);
            }
        }
        Ok(())
    }

    /// Stops the hand-off: further deliveries fail, the apply side drains
    /// what was delivered and returns, every waiter is answered
    /// [`WaitError::ShutDown`] (unless answered first).
    pub fn shutdown(&self) {
        self.entries.close();
        self.waiters.shutdown();
    }
}

impl<T, R> fmt::Debug for Handoff<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handoff").field("entries", &self.entries).field("waiters", &self.waiters).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::thread;
    use std::time::Duration;

    #[test]
    fn channel_is_fifo_and_blocks_when_full() {
        let ch = Arc::new(BoundedChannel::new(1));
        let tx = ch.clone();
        let sender = thread::spawn(move || {
            for i in 0..100 {
                tx.send(i).unwrap();
            }
            tx.close();
        });
        let mut got = Vec::new();
        while let Ok(i) = ch.recv() {
            assert!(ch.len() <= 1);
            got.push(i);
        }
        sender.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn close_drains_then_fails_and_refuses_sends() {
        let ch = BoundedChannel::new(2);
        ch.send(1).unwrap();
        ch.close();
        assert_eq!(ch.send(2), Err(SendError(2)));
        assert_eq!(ch.recv(), Ok(1));
        assert_eq!(ch.recv(), Err(RecvError));
        assert!(ch.is_closed());
    }

    #[test]
    fn close_wakes_blocked_sender_and_receiver() {
        let full = Arc::new(BoundedChannel::new(1));
        full.send(0).unwrap();
        let f = full.clone();
        let sender = thread::spawn(move || f.send(1));
        let empty = Arc::new(BoundedChannel::<u32>::new(1));
        let e = empty.clone();
        let receiver = thread::spawn(move || e.recv());
        thread::sleep(Duration::from_millis(20));
        full.close();
        empty.close();
        assert_eq!(sender.join().unwrap(), Err(SendError(1)));
        assert_eq!(receiver.join().unwrap(), Err(RecvError));
    }

    #[test]
    #[should_panic(expected = "capacity of at least 1")]
    fn zero_capacity_is_refused() {
        let _ = BoundedChannel::<u8>::new(0);
    }

    #[test]
    fn waiters_get_their_own_reply() {
        let w = Waiters::new();
        let t1 = w.register(1);
        let t2 = w.register(2);
        let h = thread::spawn(move || t2.wait());
        w.complete(3, "nobody");
        w.complete(2, "two");
        w.complete(1, "one");
        assert_eq!(h.join().unwrap(), Ok("two"));
        assert_eq!(t1.wait(), Ok("one"));
        assert_eq!((w.pending(), w.unclaimed()), (0, 0));
    }

    #[test]
    fn leadership_loss_and_supersede_and_shutdown() {
        let w = Waiters::<u32>::new();
        let old = w.register(5);
        let new = w.register(5);
        assert_eq!(old.wait(), Err(WaitError::Superseded));
        let other = w.register(6);
        w.fail_all(WaitError::NotLeader);
        w.complete(5, 50); // applied after the loss: answered to nobody
        assert_eq!(new.wait(), Err(WaitError::NotLeader));
        assert_eq!(other.wait(), Err(WaitError::NotLeader));
        let waiting = w.register(7);
        let h = thread::spawn(move || waiting.wait());
        thread::sleep(Duration::from_millis(20));
        w.shutdown();
        assert_eq!(h.join().unwrap(), Err(WaitError::ShutDown));
        assert_eq!(w.register(8).wait(), Err(WaitError::ShutDown));
        assert_eq!((w.pending(), w.unclaimed()), (0, 0));
    }

    #[test]
    fn dropped_ticket_leaves_nothing_behind() {
        let w = Waiters::<u32>::new();
        drop(w.register(1));
        let t = w.register(2);
        w.complete(2, 20);
        assert_eq!(w.unclaimed(), 1);
        drop(t);
        assert_eq!((w.pending(), w.unclaimed()), (0, 0));
        let t = w.register(3);
        assert!(t.try_wait().is_err());
    }

    #[test]
    fn handoff_applies_in_order_and_answers() {
        let h = Arc::new(Handoff::<u64, u64>::new(1));
        let tickets: Vec<_> = (1..=50).step_by(7).map(|i| h.register(i)).collect();
        let node = {
            let h = h.clone();
            thread::spawn(move || {
                for i in 1..=50 {
                    h.deliver(i).unwrap();
                }
                h.shutdown();
            })
        };
        let apply = {
            let h = h.clone();
            thread::spawn(move || {
                let mut next = 1;
                let done: Result<(), ()> = h.run_apply(4, |group| {
                    assert!((1..=4).contains(&group.len()));
                    Ok(group
                        .into_iter()
                        .map(|i| {
                            assert_eq!(i, next);
                            next += 1;
                            (i, i * 10)
                        })
                        .collect())
                });
                done.unwrap();
                next - 1
            })
        };
        for t in tickets {
            let key = t.key();
            // Shutdown may overtake the last completions; either is one answer.
            match t.wait() {
                Ok(r) => assert_eq!(r, key * 10),
                Err(e) => assert_eq!(e, WaitError::ShutDown),
            }
        }
        node.join().unwrap();
        assert_eq!(apply.join().unwrap(), 50);
    }
}
