//! Where the server's threads meet: the node thread, the persist thread,
//! the network tasks that feed the node, and the request handlers waiting
//! for answers (see [`super::node`] for the threads themselves).
//!
//! - [`Inbox`]: what the node thread waits on. Peer messages and client
//!   requests are pushed without blocking (a full inbox refuses them), and
//!   the persist thread reports the highest batch it made durable
//!   ([`Inbox::persisted`]), also without blocking. The node thread's one
//!   blocking wait is [`Inbox::wait`], which any of these ends.
//! - [`BoundedChannel`]: batches from the node thread to the persist
//!   thread. Bounded, so a slow disk pushes back on the node thread instead
//!   of growing memory; [`BoundedChannel::recv_many`] takes everything
//!   queued, so one fsync covers all of it (group commit).
//! - [`Waiters`]: request handlers wait on a [`Ticket`] until the node
//!   thread answers it, or the server shuts down: a thread blocks
//!   ([`Ticket::wait`]), an async task awaits ([`Ticket::answer`]) without
//!   holding a thread.
//!
//! The rules that rule out deadlock and lost wake-ups, each checked by
//! `tests/loom_handoff.rs` under every interleaving:
//!
//! 1. The persist thread never waits for the node thread: reporting
//!    durability only sets a number and notifies. So the node thread may
//!    block on a full channel, and the persist thread will drain it.
//! 2. State is changed *before* the matching notify, under the lock the
//!    waiter re-checks, so a wake-up cannot be lost (inbox and waiters).
//! 3. Nobody waits while holding another's lock: a waiter holds only the
//!    lock it waits on, and releases it inside `Condvar::wait`.
//! 4. Closing wakes everyone: a closed channel wakes blocked senders and
//!    receivers, a closed inbox its waiter, a shut-down registry every
//!    ticket, so shutdown (or a failure) ends every thread.
//! 5. Events are stepped once each, in the order pushed: whoever steps the
//!    node takes them out of the inbox only while holding the node's lock.
//!    A pusher that finds the node thread asleep ([`Inbox::push_or_step`])
//!    steps them itself if it can take that lock at once; if it cannot, it
//!    wakes the node thread. It never waits for the lock, so a network
//!    task never blocks behind the node.
//!
//! Every primitive comes from [`crate::sync`], so loom sees all of it.
//!
//! [`Flaw`] re-introduces one broken rule at a time, on the same code paths,
//! so the loom tests can show they would catch it.

use crate::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::task::{Poll, Waker};

/// A deliberately broken variant, for showing that the loom tests catch it.
/// Never set outside tests.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flaw {
    #[default]
    None,
    /// [`Waiters`] wakes a waiter before recording its answer (breaks rule 2).
    NotifyBeforeUpdate,
    /// [`Inbox::persisted`] records the number without waking the node
    /// thread (breaks rule 2: the wake-up is lost).
    ReportWithoutWake,
    /// [`BoundedChannel::close`] wakes blocked senders but not a blocked
    /// receiver (breaks rule 4).
    CloseForgetsReceiver,
    /// [`Inbox::push_or_step`] leaves its event for the sleeping node
    /// thread without waking it when it cannot take the node (breaks
    /// rule 5: the event waits for the next tick).
    StepOrForget,
}

/// Locks, ignoring poison: no code in this module panics while holding a
/// lock, and a panicking handler elsewhere must not take the others down.
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
    /// Threads in `Condvar::wait` on each side: a notification is a system
    /// call even when nobody waits, so a side is notified only when it has
    /// a sleeper (under load the persist thread rarely sleeps, and a sender
    /// almost never does).
    receivers_sleeping: usize,
    senders_sleeping: usize,
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
            state: Mutex::new(ChanState {
                queue: VecDeque::with_capacity(capacity),
                closed: false,
                receivers_sleeping: 0,
                senders_sleeping: 0,
            }),
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
            s.senders_sleeping += 1;
            s = wait(&self.not_full, s);
            s.senders_sleeping -= 1;
        }
        s.queue.push_back(item);
        let sleeper = s.receivers_sleeping > 0;
        drop(s);
        // One item in: one receiver can make progress.
        if sleeper {
            self.not_empty.notify_one();
        }
        Ok(())
    }

    /// Blocks while the channel is empty and open. After a close it still
    /// yields what was sent before, so no committed entry is lost on the way
    /// to the state machine; then it fails.
    pub fn recv(&self) -> Result<T, RecvError> {
        let mut s = lock(&self.state);
        loop {
            if let Some(item) = s.queue.pop_front() {
                let sleeper = s.senders_sleeping > 0;
                drop(s);
                // One slot freed: one sender can make progress.
                if sleeper {
                    self.not_full.notify_one();
                }
                return Ok(item);
            }
            if s.closed {
                return Err(RecvError);
            }
            s.receivers_sleeping += 1;
            s = wait(&self.not_empty, s);
            s.receivers_sleeping -= 1;
        }
    }

    /// Like [`recv`](BoundedChannel::recv), but takes up to `max` items at
    /// once (at least one), so a slow consumer catches up in one go: the
    /// persist thread turns everything queued during one fsync into the next
    /// single fsync (group commit).
    pub fn recv_many(&self, max: usize) -> Result<Vec<T>, RecvError> {
        let mut s = lock(&self.state);
        loop {
            if !s.queue.is_empty() {
                let take = s.queue.len().min(max.max(1));
                let items: Vec<T> = s.queue.drain(..take).collect();
                let sleepers = s.senders_sleeping > 0;
                drop(s);
                // `take` slots freed: every blocked sender may proceed.
                if sleepers {
                    self.not_full.notify_all();
                }
                return Ok(items);
            }
            if s.closed {
                return Err(RecvError);
            }
            s.receivers_sleeping += 1;
            s = wait(&self.not_empty, s);
            s.receivers_sleeping -= 1;
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

    /// A send would block now.
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity
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
    /// The server is shutting down (or stopped on a failure).
    ShutDown,
    /// Another request was registered under the same key.
    Superseded,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::ShutDown => "server shutting down",
            WaitError::Superseded => "superseded by another request",
        })
    }
}

impl std::error::Error for WaitError {}

/// Request waiters keyed by any `u64` the caller chooses (the node runtime
/// numbers its requests).
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
    /// Ticket id → the task awaiting it ([`Ticket::answer`]), woken with
    /// its condition variable.
    tasks: BTreeMap<u64, Waker>,
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
                tasks: BTreeMap::new(),
                next_ticket: 0,
                shut_down: false,
            }),
            flaw,
        });
        Waiters { shared }
    }

    /// Registers a waiter for `key`. Must happen before the answer for `key`
    /// can be given (the runtime registers before it queues the request),
    /// or the answer is missed. A waiter already at `key` gets
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
            to_wake = Some((old.wake, s.tasks.remove(&old.ticket)));
        }
        drop(s);
        if let Some(wake) = to_wake {
            notify(wake);
        }
        Ticket { waiters: self.clone(), key, ticket, wake }
    }

    /// Answers the waiter at `key`, if any (it may have given up). Never
    /// blocks on a waiter: the lock is held only by threads that are not
    /// waiting.
    pub fn complete(&self, key: u64, reply: R) {
        self.answer(|s| match s.pending.remove(&key) {
            Some(p) => vec![(p, Ok(reply))],
            None => Vec::new(),
        });
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

    /// Tasks registered to be woken ([`Ticket::answer`]) whose tickets are
    /// still held (a test checks this drains to 0 too).
    pub fn awaiting_tasks(&self) -> usize {
        lock(&self.shared.state).tasks.len()
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
            let wakes: Vec<_> = done.iter().map(|(p, _)| (p.wake.clone(), s.tasks.remove(&p.ticket))).collect();
            drop(s);
            for wake in wakes {
                notify(wake);
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
            wakes.push((p.wake, s.tasks.remove(&p.ticket)));
        }
        drop(s);
        for wake in wakes {
            notify(wake);
        }
    }
}

/// Wakes a ticket's holder: a thread blocked in [`Ticket::wait`] through
/// its condition variable, a task in [`Ticket::answer`] through its waker.
/// A ticket has one holder, so only one of the two can be waiting: a
/// futex wake for a task would be a wasted system call per answer.
fn notify((cv, task): (Arc<Condvar>, Option<Waker>)) {
    match task {
        Some(task) => task.wake(),
        None => cv.notify_one(),
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

/// One request's claim on the answer for its key. `wait` and `answer`
/// consume it, so an answer is taken at most once; dropping it unanswered
/// (a task that stopped awaiting it, too) unregisters it.
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

    /// Awaits the answer without holding a thread: what the client port's
    /// tasks use (a blocking [`Ticket::wait`] would need a thread of its own
    /// per request in flight, and a hand-off to it and back per answer).
    pub async fn answer(self) -> Result<R, WaitError> {
        std::future::poll_fn(|cx| {
            let mut s = lock(&self.waiters.shared.state);
            if let Some(answer) = s.answered.remove(&self.ticket) {
                // Its waker, if any, goes when the ticket drops, at once.
                return Poll::Ready(answer);
            }
            // Under the lock `answer()` records answers under (rule 2):
            // either the answer was there above, or it will find this waker.
            match s.tasks.get_mut(&self.ticket) {
                Some(task) if task.will_wake(cx.waker()) => {}
                Some(task) => task.clone_from(cx.waker()),
                None => {
                    s.tasks.insert(self.ticket, cx.waker().clone());
                }
            }
            Poll::Pending
        })
        .await
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
        s.tasks.remove(&self.ticket);
    }
}

impl<R> fmt::Debug for Ticket<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").field("key", &self.key).field("ticket", &self.ticket).finish()
    }
}

// ---------------------------------------------------------------------------
// Inbox

/// Why an event was not queued; hands it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError<E> {
    /// The inbox holds its capacity: the node thread is behind.
    Full(E),
    /// The inbox was closed: the node stopped.
    Closed(E),
}

/// What one [`Inbox::wait`] returns.
#[derive(Debug, PartialEq, Eq)]
pub struct Inboxed<E> {
    /// Events in the order they were pushed.
    pub events: Vec<E>,
    /// The highest batch reported durable so far (0 before any).
    pub durable: u64,
    /// The inbox was closed: no more events will come.
    pub closed: bool,
    /// The node thread found nothing waiting and slept until this came.
    pub slept: bool,
}

/// The node thread's inbox: a bounded queue of events plus the highest
/// batch number the persist thread reported durable. Nobody but the node
/// thread ever waits on it.
pub struct Inbox<E> {
    state: Mutex<InboxState<E>>,
    wake: Condvar,
    capacity: usize,
    flaw: Flaw,
}

struct InboxState<E> {
    events: VecDeque<E>,
    durable: u64,
    /// `durable` as the node thread last took it.
    durable_taken: u64,
    closed: bool,
    /// The node thread is in `Condvar::wait` and nobody has woken it yet:
    /// only then does a push need to wake it. A notification is a system
    /// call even when nobody waits; the first push after the node thread
    /// went to sleep clears this as it notifies, so the pushes that follow
    /// before the node thread runs again (one per client request, under
    /// load) make none. A push that steps its event itself
    /// ([`Inbox::push_or_step`]) leaves it set: the node thread sleeps on.
    sleeping: bool,
}

impl<E> InboxState<E> {
    /// Queues `event` unless the inbox is closed or holds `capacity`.
    fn admit(&mut self, event: E, capacity: usize) -> Result<(), PushError<E>> {
        if self.closed {
            return Err(PushError::Closed(event));
        }
        if self.events.len() >= capacity {
            return Err(PushError::Full(event));
        }
        self.events.push_back(event);
        Ok(())
    }
}

impl<E> Inbox<E> {
    /// # Panics
    /// If `capacity` is 0.
    pub fn new(capacity: usize) -> Inbox<E> {
        Inbox::with_flaw(capacity, Flaw::None)
    }

    #[doc(hidden)]
    pub fn with_flaw(capacity: usize, flaw: Flaw) -> Inbox<E> {
        assert!(capacity > 0, "an Inbox needs a capacity of at least 1");
        Inbox {
            state: Mutex::new(InboxState {
                events: VecDeque::new(),
                durable: 0,
                durable_taken: 0,
                closed: false,
                sleeping: false,
            }),
            wake: Condvar::new(),
            capacity,
            flaw,
        }
    }

    /// Queues an event without blocking.
    pub fn push(&self, event: E) -> Result<(), PushError<E>> {
        self.enqueue(event, self.capacity)
    }

    /// Queues a report from the runtime's own threads (a snapshot taken)
    /// without blocking, past the capacity: such reports are bounded by
    /// design (at most one snapshot is outstanding), and dropping one would
    /// lose it for good. Fails only once the inbox is closed.
    pub fn push_report(&self, event: E) -> Result<(), PushError<E>> {
        self.enqueue(event, usize::MAX)
    }

    /// Queues `event` unless the inbox is closed or holds `capacity`
    /// events, waking the node thread if it sleeps.
    fn enqueue(&self, event: E, capacity: usize) -> Result<(), PushError<E>> {
        let mut s = lock(&self.state);
        s.admit(event, capacity)?;
        let sleeping = std::mem::take(&mut s.sleeping);
        drop(s);
        if sleeping {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Persist thread: every batch up to `number` is durable. Never blocks
    /// for longer than the lock (rule 1); a lower number than one already
    /// reported changes nothing.
    pub fn persisted(&self, number: u64) {
        let mut s = lock(&self.state);
        s.durable = s.durable.max(number);
        let sleeping = std::mem::take(&mut s.sleeping);
        drop(s);
        if sleeping && self.flaw != Flaw::ReportWithoutWake {
            self.wake.notify_one();
        }
    }

    /// No more events: wakes the node thread, which sees `closed`.
    /// Idempotent.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }

    /// Queues `event` like [`push`](Inbox::push), but if the node thread
    /// sleeps, does not wake it: takes the node's lock `node` at once if
    /// it is free and, if `may_step` agrees, hands `step` the node and what
    /// waits in the inbox (the event included, at most `max` events), on
    /// this thread. If the lock is held (by another pusher stepping, or the
    /// node thread just woken by its timer) or `may_step` refuses, wakes
    /// the node thread instead, which takes the event after the holder is
    /// done (rule 5). So when the node is idle, an event is stepped without
    /// a thread hand-off.
    pub fn push_or_step<N>(
        &self,
        event: E,
        node: &Mutex<N>,
        max: usize,
        may_step: impl FnOnce(&N) -> bool,
        step: impl FnOnce(&mut N, Inboxed<E>),
    ) -> Result<(), PushError<E>> {
        let mut s = lock(&self.state);
        s.admit(event, self.capacity)?;
        if !s.sleeping {
            return Ok(()); // awake: it looks at the inbox before it sleeps
        }
        drop(s);
        match node.try_lock() {
            Ok(mut node) if may_step(&node) => {
                let taken = self.take(max);
                step(&mut node, taken);
            }
            Ok(_) => self.wake(),
            // Held, or poisoned by a panic while stepping (the node thread
            // then stops): either way the node thread must look.
            Err(_) if self.flaw == Flaw::StepOrForget => {}
            Err(_) => self.wake(),
        }
        Ok(())
    }

    /// Wakes the node thread if it sleeps.
    fn wake(&self) {
        let sleeping = std::mem::take(&mut lock(&self.state).sleeping);
        if sleeping {
            self.wake.notify_one();
        }
    }

    /// Waits until there are events, a new durability report, or the inbox
    /// is closed — or `timeout` passes (`None`: no timeout) — and takes up
    /// to `max` events and the report: [`wait_ready`](Inbox::wait_ready)
    /// then [`take`](Inbox::take), for a waiter that steps no shared node
    /// (the tests and loom models; the node thread takes the node's lock
    /// between the two).
    pub fn wait(&self, max: usize, timeout: Option<std::time::Duration>) -> Inboxed<E> {
        let slept = self.wait_ready(timeout);
        Inboxed { slept, ..self.take(max) }
    }

    /// Node thread: waits like [`wait`](Inbox::wait) but takes nothing, so
    /// that the node thread can take the node's lock first and then
    /// [`take`](Inbox::take) (rule 5). True if it slept.
    pub fn wait_ready(&self, timeout: Option<std::time::Duration>) -> bool {
        let mut s = lock(&self.state);
        let ready = |s: &InboxState<E>| !s.events.is_empty() || s.durable > s.durable_taken || s.closed;
        let slept = !ready(&s);
        if slept {
            match timeout {
                None => {
                    while !ready(&s) {
                        s.sleeping = true;
                        s = wait(&self.wake, s);
                    }
                    s.sleeping = false;
                }
                Some(timeout) => {
                    // One timed wait: a spurious wake-up just ends it early
                    // (the node thread loops anyway).
                    s.sleeping = true;
                    s = self.wake.wait_timeout(s, timeout).map_or_else(|e| e.into_inner().0, |(g, _)| g);
                    s.sleeping = false;
                }
            }
        }
        slept
    }

    /// Takes up to `max` events and the latest durability report without
    /// waiting (`slept` is false). Whoever calls it holds the node's lock
    /// (rule 5).
    pub fn take(&self, max: usize) -> Inboxed<E> {
        let mut s = lock(&self.state);
        let take = s.events.len().min(max.max(1));
        let events = s.events.drain(..take).collect();
        s.durable_taken = s.durable;
        Inboxed { events, durable: s.durable, closed: s.closed, slept: false }
    }

    /// Events wait while the node thread sleeps and nobody woke it: after
    /// every pusher returned, that is a lost wake-up (the loom model of
    /// rule 5 checks it never happens).
    #[doc(hidden)]
    pub fn stranded(&self) -> bool {
        let s = lock(&self.state);
        s.sleeping && !s.events.is_empty()
    }

    /// Events queued and not taken yet.
    pub fn len(&self) -> usize {
        lock(&self.state).events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<E> fmt::Debug for Inbox<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("Inbox")
            .field("events", &s.events.len())
            .field("durable", &s.durable)
            .field("closed", &s.closed)
            .finish()
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
    fn supersede_and_shutdown() {
        let w = Waiters::<u32>::new();
        let old = w.register(5);
        let new = w.register(5);
        assert_eq!(old.wait(), Err(WaitError::Superseded));
        let waiting = w.register(7);
        let h = thread::spawn(move || waiting.wait());
        w.shutdown();
        assert_eq!(h.join().unwrap(), Err(WaitError::ShutDown));
        assert_eq!(new.wait(), Err(WaitError::ShutDown));
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
    fn inbox_bounds_events_and_reports_the_highest_durable_batch() {
        let inbox = Inbox::new(2);
        inbox.push(1).unwrap();
        inbox.push(2).unwrap();
        assert_eq!(inbox.push(3), Err(PushError::Full(3)));
        inbox.persisted(4);
        inbox.persisted(2); // a late, lower report changes nothing
                            // A report goes in past the capacity, behind the events.
        inbox.push_report(9).unwrap();
        assert_eq!(inbox.len(), 3);
        let got = inbox.wait(1, None);
        assert_eq!(got, Inboxed { events: vec![1], durable: 4, closed: false, slept: false });
        assert_eq!(inbox.wait(8, None).events, vec![2, 9]);
        // Nothing new: a timed wait returns empty.
        let got = inbox.wait(8, Some(Duration::from_millis(1)));
        assert!(got.events.is_empty() && got.durable == 4 && !got.closed);
        inbox.close();
        assert_eq!(inbox.push(5), Err(PushError::Closed(5)));
        assert_eq!(inbox.push_report(6), Err(PushError::Closed(6)));
        assert!(inbox.wait(8, None).closed);
    }

    #[test]
    fn a_report_wakes_the_waiting_node_thread() {
        let inbox = Arc::new(Inbox::<u8>::new(4));
        let node = {
            let inbox = inbox.clone();
            thread::spawn(move || {
                let mut durable = 0;
                while durable < 3 {
                    durable = inbox.wait(4, None).durable;
                }
                durable
            })
        };
        for n in 1..=3 {
            inbox.persisted(n);
        }
        assert_eq!(node.join().unwrap(), 3);
    }
}
