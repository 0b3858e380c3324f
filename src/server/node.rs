//! The node runtime: two threads that carry out what the pure [`KvServer`]
//! returns, under the one persistence contract of [`crate::raft::ready`].
//!
//! ```text
//!  peers, clients ──push──► Inbox ──► node thread ──Persist batches──► persist thread
//!                  (bounded, never     steps KvServer,  (bounded channel)   one write + fsync
//!                   blocks)            ticks from the clock      ▲          per group of batches
//!                                        │   ▲   │               │               │
//!               peers ◄── messages ──────┤   │   └─► snapshot ───┘ encoded       │
//!               waiters ◄── answers ─────┘   │       thread        snapshot      │
//!                                            └── Inbox::persisted(n), ◄──────────┘
//!                                                SnapshotTaken
//! ```
//!
//! - The **node thread** steps the [`KvServer`]. It waits on the [`Inbox`]
//!   until the next tick is due, then steps the server with a
//!   [`ServerInput::Persisted`] if the persist thread reported progress,
//!   the tick, and every event that queued up (at most
//!   [`RuntimeConfig::max_events_per_batch`]). It carries out each output
//!   **at once**: sends the messages, answers the requests. That is safe
//!   because the node itself holds back anything that depends on state not
//!   yet durable. The batches to persist it hands to the persist thread,
//!   except on a follower whose persist thread is idle: there it writes
//!   them itself and steps [`ServerInput::Persisted`] at once
//!   ([`RuntimeConfig::followers_write_inline`]). A leader's batches wait
//!   for the next AppendEntries with entries to one follower, so that the
//!   leader writes once per round trip ([`crate::raft::pacing`]).
//! - The **persist thread** takes every batch queued while it was busy,
//!   writes them all with one [`RaftStorage::write`] (one fsync: group
//!   commit), and reports the last batch's number to the inbox. It never
//!   waits for the node thread.
//!
//! - The **snapshot thread** encodes the state machine a [`SnapshotJob`]
//!   carries (a copy the node made when its policy said so), off the node
//!   thread's path, and hands the bytes to the persist thread, which saves
//!   them ([`RaftStorage::save_snapshot`]) in order with the batches and
//!   then reports [`ServerInput::SnapshotTaken`] through the inbox. Only
//!   then does the node compact its log (in a later batch), so a crash
//!   never finds a compacted log without the snapshot that covers it. At
//!   most one job is outstanding.
//!
//! - **Stepping on arrival.** When a leader's node thread sleeps, a write
//!   that arrives with no other request waiting, or a peer message with at
//!   most one, is stepped by the task it arrived on, which takes the
//!   node's lock at once or else wakes the node thread
//!   ([`Inbox::push_or_step`];
//!   [`RuntimeConfig::leaders_step_on_arrival`]). One client's Put then
//!   crosses no thread on the way in, and its reply is woken from the task
//!   that read the acknowledgement that committed it (a Get under the
//!   leader lease is answered by the client's own task). Under load, and
//!   for Gets that need a read round, the node thread's rounds batch
//!   instead (`Stepper::push` says why). Only a leader's: a follower's
//!   step ends in an fsync, which belongs on its node thread, not on a
//!   network task.
//!
//! So a leader's AppendEntries leave while its own write is on its way to
//! the disk (Raft thesis §10.2.1), and it goes on stepping meanwhile; a
//! follower's acknowledgement leaves as soon as its fsync returns, from the
//! thread that stepped the AppendEntries, with no hand-off in between. What
//! reaches a follower during its fsync waits in the inbox and is written by
//! the next one (group commit without a timer).
//!
//! **Failures end the node loudly.** A storage error or a panic in either
//! thread marks the node stopped, closes the hand-off (so nothing blocks and
//! every waiting request is answered), and calls the [`OnFatal`] the runtime
//! was started with; the server binary logs it and exits 74 (storage) or 70
//! (panic). The node never goes on with state it could not make durable.
//!
//! Requests are matched to answers by `(client, seq)`: [`NodeHandle::submit`]
//! registers a ticket under a fresh key first, then queues the request; the
//! node thread remembers which keys wait for which `(client, seq)` and
//! answers them. The pure server answers every accepted request eventually
//! (committed, refused, or failed when its leader loses the term), so the
//! map drains. An operator's request ([`NodeHandle::admin`]) goes the same
//! way, its ticket key serving as its [`AdminId`].

use super::handoff::{BoundedChannel, Inbox, Inboxed, PushError, Ticket, Waiters};
use super::storage::{RaftStorage, StorageError};
use crate::kv::directory::{self, Directory};
use crate::kv::{AdminId, AdminOp, AdminReply, AdminRequest};
use crate::kv::{ClientId, Command, KvServer, Op, Request, Response, ServerInput, ServerOutput, SnapshotJob};
use crate::raft::pacing::{self, LeaderWrites, Pass, Releases};
use crate::raft::types::MAX_NODES;
use crate::raft::{Envelope, LogIndex, Membership, NodeId, Persist, Role, Snapshot, Term};
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{Arc, Mutex};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How the runtime around one node is sized.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Wall-clock length of one Raft tick.
    pub tick: Duration,
    /// Events (peer messages, requests) waiting for the node thread; more
    /// are dropped (peer messages: Raft tolerates loss) or refused
    /// (requests: the client is told to retry).
    pub event_queue: usize,
    /// At most this many events are stepped before the node thread hands
    /// its batches to the persist thread.
    pub max_events_per_batch: usize,
    /// Groups of batches waiting for the disk; when full the node thread
    /// waits.
    pub batch_queue: usize,
    /// A follower (or candidate) whose persist thread is idle writes its
    /// batches on the node thread, saving two thread hand-offs per
    /// acknowledgement; a leader always hands them over.
    pub followers_write_inline: bool,
    /// A leader's events that find the node thread asleep are stepped by
    /// the thread that pushed them, saving a thread hand-off each (see the
    /// module docs).
    pub leaders_step_on_arrival: bool,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            tick: Duration::from_millis(10),
            event_queue: 8192,
            max_events_per_batch: 512,
            batch_queue: 64,
            followers_write_inline: true,
            leaders_step_on_arrival: true,
        }
    }
}

/// Sends a message to a peer without blocking (the transport drops it when
/// it cannot keep up).
pub type SendToPeer = Arc<dyn Fn(Envelope<Command>, Sending) + Send + Sync>;

/// How the node thread wants a message sent: the transport may take either
/// as `Queued` (the peer transport does, on a TLS connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sending {
    /// Handed to the transport's writer, batched with whatever else waits:
    /// under load, one write per batch instead of one per message.
    Queued,
    /// Written by the stepping thread itself if the connection is idle:
    /// when that thread has nothing else to do, this saves the message a
    /// thread hand-off (see `server::outbox`).
    AtOnce,
}

/// Told once when the node stops on its own, after it stopped. The server
/// binary exits there; tests record it.
pub type OnFatal = Arc<dyn Fn(&NodeFailure) + Send + Sync>;

/// What the node thread is fed.
enum Event {
    Peer(Envelope<Command>),
    Client {
        request: Request,
        key: u64,
    },
    Admin(AdminRequest),
    /// The persist thread saved the snapshot of a [`SnapshotJob`].
    SnapshotTaken(Snapshot),
}

/// What the persist thread is handed, in the order it must reach the disk.
enum ToDisk {
    /// One batch of the node per step of a group.
    Batches(Vec<Persist<Command>>),
    /// An encoded snapshot of a [`SnapshotJob`], to save and report.
    Snapshot(Snapshot),
}

/// A snapshot of the node, refreshed after every batch (for `INFO`, logs and
/// tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Option<Role>,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub last_index: LogIndex,
    pub applied_index: LogIndex,
    /// The first index the log holds: everything before it was compacted
    /// into a snapshot.
    pub first_index: LogIndex,
    /// The configuration in force here: the latest in the log, committed
    /// or not.
    pub membership: Membership,
    /// The last index the node's snapshot covers (0: none).
    pub snapshot_index: LogIndex,
    /// A leader's view of how far each other member's log matches its own
    /// (all `None` unless leader): what `raftkv status` shows as lag.
    pub matched: [Option<(NodeId, LogIndex)>; MAX_NODES],
}

/// Counters of the runtime, for `INFO`, the metrics endpoint and the
/// benchmark's fsyncs per op.
#[derive(Debug)]
pub struct Counters {
    /// Client requests handed to the node (reads and writes, retries
    /// included).
    pub requests: AtomicU64,
    /// Elections this node started (it became a candidate).
    pub elections: AtomicU64,
    /// Times this node learned of a new leader (itself included).
    pub leader_changes: AtomicU64,
    /// How long each storage write (one fsync) took, in seconds.
    pub fsync_seconds: Histogram,
    /// Log entries per storage write.
    pub entries_per_fsync: Histogram,
    /// Storage writes that had something to write (each is one fsync).
    pub fsyncs: AtomicU64,
    /// Batches handed to the persist thread.
    pub batches: AtomicU64,
    /// Rounds of steps (each takes what waits in the inbox), and how many
    /// of them were stepped on arrival, by the task that pushed the event.
    pub rounds: AtomicU64,
    pub rounds_on_arrival: AtomicU64,
    /// Log entries applied to the (in-memory) state machine, no-ops
    /// included.
    pub applied: AtomicU64,
    /// Peer messages dropped because the event queue was full.
    pub dropped_peer_messages: AtomicU64,
    /// Gets answered under the leader lease, with no round of messages.
    pub reads_by_lease: AtomicU64,
    /// Snapshots this node took (and saved).
    pub snapshots_taken: AtomicU64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: AtomicU64,
    /// The size in bytes of the last snapshot taken.
    pub last_snapshot_bytes: AtomicU64,
    /// How many times this node's writes as a leader went to the disk, by
    /// why (`raft::pacing`).
    pub leader_writes: Mutex<Releases>,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            requests: AtomicU64::default(),
            elections: AtomicU64::default(),
            leader_changes: AtomicU64::default(),
            // 50 µs to about 1.6 s: a page-cache write to a stalled disk.
            fsync_seconds: Histogram::new(exponential_buckets(50e-6, 2.0, 16)),
            // 1 to 32,768 entries.
            entries_per_fsync: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            fsyncs: AtomicU64::default(),
            batches: AtomicU64::default(),
            rounds: AtomicU64::default(),
            rounds_on_arrival: AtomicU64::default(),
            applied: AtomicU64::default(),
            dropped_peer_messages: AtomicU64::default(),
            reads_by_lease: AtomicU64::default(),
            snapshots_taken: AtomicU64::default(),
            snapshots_installed: AtomicU64::default(),
            last_snapshot_bytes: AtomicU64::default(),
            leader_writes: Mutex::new(Releases::default()),
        }
    }
}

/// Why a request was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The node's event queue is full: retry later.
    Busy,
    /// The node stopped.
    Stopped,
}

/// Why the node stopped on its own.
#[derive(Debug)]
pub enum NodeFailure {
    /// The disk refused a write (or its fsync failed): nothing of the batch
    /// may be acted on, so the node stops.
    Storage(StorageError),
    /// A thread of the node panicked.
    Panic { thread: String, message: String },
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeFailure::Storage(e) => write!(f, "storage failed, node stopped: {e}"),
            NodeFailure::Panic { thread, message } => write!(f, "thread '{thread}' panicked, node stopped: {message}"),
        }
    }
}

/// The handle through which the network side talks to a running node.
/// Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    stepper: Arc<Stepper>,
    waiters: Waiters<Response>,
    admin_waiters: Waiters<AdminReply>,
    next_key: Arc<AtomicU64>,
    status: Arc<Mutex<Status>>,
    counters: Arc<Counters>,
    stopped: Arc<AtomicBool>,
    /// The replicated address book, republished by the node thread after
    /// every step that touched it ([`directory::touched`]).
    directory: watch::Receiver<Directory>,
}

impl NodeHandle {
    /// Queues a client request (an idle leader steps a write on this
    /// thread); the ticket is answered once the request is committed and
    /// applied (or refused). Register-then-queue, so the
    /// answer cannot overtake the ticket.
    pub fn submit(&self, request: Request) -> Result<Ticket<Response>, SubmitError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let ticket = self.waiters.register(key);
        match self.stepper.push(Event::Client { request, key }) {
            Ok(()) => Ok(ticket),
            Err(PushError::Full(_)) => Err(SubmitError::Busy),
            Err(PushError::Closed(_)) => Err(SubmitError::Stopped),
        }
    }

    /// Queues an operator's request; the ticket is answered as
    /// [`AdminReply`] says (a change once committed and applied here).
    pub fn admin(&self, op: AdminOp) -> Result<Ticket<AdminReply>, SubmitError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let id: AdminId = self.next_key.fetch_add(1, Ordering::Relaxed);
        let ticket = self.admin_waiters.register(id);
        match self.stepper.shared.inbox.push(Event::Admin(AdminRequest { id, op })) {
            Ok(()) => Ok(ticket),
            Err(PushError::Full(_)) => Err(SubmitError::Busy),
            Err(PushError::Closed(_)) => Err(SubmitError::Stopped),
        }
    }

    /// Hands a peer's message to the node (an idle leader steps it on
    /// this thread); drops it if the node is behind.
    pub fn deliver(&self, envelope: Envelope<Command>) {
        if let Err(PushError::Full(_)) = self.stepper.push(Event::Peer(envelope)) {
            self.counters.dropped_peer_messages.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn status(&self) -> Status {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The replicated address book as this node knows it now.
    pub fn directory(&self) -> Directory {
        self.directory.borrow().clone()
    }

    /// Follows the replicated address book: changes as the node applies
    /// (or installs) new addresses.
    pub fn watch_directory(&self) -> watch::Receiver<Directory> {
        self.directory.clone()
    }

    /// True once the node stopped (shut down or failed).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// Everything the two threads share, and how to stop them.
struct Shared {
    inbox: Arc<Inbox<Event>>,
    batches: BoundedChannel<ToDisk>,
    /// The persist thread's, and the node thread's while it writes a
    /// follower's batches itself.
    /// Released once both threads that use it ended
    /// ([`NodeRuntime::shutdown`]), so that it can be opened again even
    /// while handles to the stopped node live on.
    storage: Mutex<Option<Box<dyn RaftStorage + Send>>>,
    /// Snapshots to encode (at most one outstanding).
    jobs: BoundedChannel<SnapshotJob>,
    waiters: Waiters<Response>,
    admin_waiters: Waiters<AdminReply>,
    stopped: Arc<AtomicBool>,
    /// Set by the first failure.
    failed: AtomicBool,
    failure: Mutex<Option<NodeFailure>>,
    on_fatal: OnFatal,
    id: NodeId,
}

impl Shared {
    /// Runs `write` on the storage.
    fn with_storage<T>(&self, write: impl FnOnce(&mut dyn RaftStorage) -> T) -> T {
        // Poisoned only by a panic while writing, which ends the node.
        let mut storage = self.storage.lock().unwrap_or_else(|e| e.into_inner());
        write(&mut **storage.as_mut().expect("the storage is released only after its users stopped"))
    }

    /// Stops everything: no more events or batches, every waiter answered,
    /// both threads woken. Idempotent.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.inbox.close();
        self.batches.close();
        self.jobs.close();
        self.waiters.shutdown();
        self.admin_waiters.shutdown();
    }

    /// A failure: logged, everything stopped, then (for the first failure
    /// only) `on_fatal` told, which sees the node stopped, and the failure
    /// kept for `shutdown` to return.
    fn fail(&self, failure: NodeFailure) {
        tracing::error!(node = self.id, "{failure}");
        self.stop();
        if !self.failed.swap(true, Ordering::AcqRel) {
            (self.on_fatal)(&failure);
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(failure);
        }
    }

    /// Runs one thread's body; a panic in it is a failure of the node
    /// (`None`).
    fn guard<T>(&self, thread: &str, body: impl FnOnce() -> T) -> Option<T> {
        match std::panic::catch_unwind(AssertUnwindSafe(body)) {
            Ok(done) => Some(done),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(a non-string panic payload)".to_string());
                self.fail(NodeFailure::Panic { thread: thread.to_string(), message });
                None
            }
        }
    }
}

/// A running node: its two threads and the handle to reach them.
pub struct NodeRuntime {
    handle: NodeHandle,
    shared: Arc<Shared>,
    node_thread: Option<std::thread::JoinHandle<()>>,
    persist_thread: Option<std::thread::JoinHandle<()>>,
    snapshot_thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeRuntime {
    /// Starts the threads. `server` must have been restarted from what
    /// `storage` holds.
    pub fn start(
        server: KvServer,
        storage: Box<dyn RaftStorage + Send>,
        send: SendToPeer,
        config: RuntimeConfig,
        on_fatal: OnFatal,
    ) -> NodeRuntime {
        let id = server.node().id();
        let shared = Arc::new(Shared {
            inbox: Arc::new(Inbox::new(config.event_queue)),
            batches: BoundedChannel::new(config.batch_queue),
            storage: Mutex::new(Some(storage)),
            jobs: BoundedChannel::new(1),
            waiters: Waiters::new(),
            admin_waiters: Waiters::new(),
            stopped: Arc::new(AtomicBool::new(false)),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            on_fatal,
            id,
        });
        let status = Arc::new(Mutex::new(status_of(&server)));
        let counters = Arc::new(Counters::default());
        let (directory, directory_rx) = watch::channel(server.directory());
        let stepper = Arc::new(Stepper {
            leading: AtomicBool::new(server.node().role() == Role::Leader),
            lease_reads: server.node().lease_reads(),
            core: Mutex::new(NodeCore::new(server, config.tick, directory)),
            shared: shared.clone(),
            status: status.clone(),
            counters: counters.clone(),
            config,
            send,
            on_arrival: format!("raftkv-node-{id} (stepped on arrival)"),
        });
        let handle = NodeHandle {
            stepper: stepper.clone(),
            waiters: shared.waiters.clone(),
            admin_waiters: shared.admin_waiters.clone(),
            next_key: Arc::new(AtomicU64::new(0)),
            status,
            counters,
            stopped: shared.stopped.clone(),
            directory: directory_rx,
        };
        let node_thread = {
            let name = format!("raftkv-node-{id}");
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    stepper.shared.guard(&name, || node_loop(&stepper));
                    // However it ended, nothing more will be stepped.
                    stepper.core.lock().unwrap_or_else(|e| e.into_inner()).finish();
                    stepper.shared.stop();
                })
                .expect("spawning the node thread")
        };
        let persist_thread = {
            let (shared, counters) = (shared.clone(), handle.counters.clone());
            let name = format!("raftkv-persist-{id}");
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    shared.guard(&name, || {
                        if let Err(e) = persist_loop(&shared, &counters) {
                            shared.fail(NodeFailure::Storage(e));
                        }
                    });
                    shared.stop();
                })
                .expect("spawning the persist thread")
        };
        let snapshot_thread = {
            let shared = shared.clone();
            let name = format!("raftkv-snapshot-{id}");
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    shared.guard(&name, || snapshot_loop(&shared));
                    shared.jobs.close();
                })
                .expect("spawning the snapshot thread")
        };
        NodeRuntime {
            handle,
            shared,
            node_thread: Some(node_thread),
            persist_thread: Some(persist_thread),
            snapshot_thread: Some(snapshot_thread),
        }
    }

    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// Stops both threads: batches already handed over are still made
    /// durable; waiting requests are answered `ShutDown`. Returns the
    /// node's failure, if it had one.
    pub fn shutdown(mut self) -> Result<(), NodeFailure> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), NodeFailure> {
        // The node thread sees the closed inbox, closes the batch channel
        // behind its last batch, and the persist thread drains it.
        self.handle.stopped.store(true, Ordering::Release);
        self.shared.inbox.close();
        if let Some(t) = self.node_thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.persist_thread.take() {
            let _ = t.join();
        }
        drop(self.shared.storage.lock().unwrap_or_else(|e| e.into_inner()).take());
        self.shared.stop();
        if let Some(t) = self.snapshot_thread.take() {
            let _ = t.join();
        }
        match self.shared.failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

impl Drop for NodeRuntime {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn status_of(server: &KvServer) -> Status {
    let node = server.node();
    Status {
        id: node.id(),
        role: Some(node.role()),
        term: node.term(),
        leader: node.leader(),
        commit_index: node.commit_index(),
        last_index: node.log().last_index(),
        applied_index: server.kv().applied_index(),
        first_index: node.log().first_index(),
        membership: *node.membership(),
        snapshot_index: node.snapshot().map_or(0, |s| s.meta.index),
        matched: {
            let mut matched = [None; MAX_NODES];
            let others = node.progress().iter().filter(|(&id, _)| id != node.id());
            for (slot, (&id, progress)) in matched.iter_mut().zip(others) {
                *slot = Some((id, progress.match_index));
            }
            matched
        },
    }
}

/// The node and the runtime's bookkeeping around it, stepped by whoever
/// holds its lock: the node thread, or a task that pushed an event while
/// the node thread slept ([`Inbox::push_or_step`]).
struct NodeCore {
    server: KvServer,
    /// Which ticket keys wait for which request. Bounded: each entry is an
    /// accepted request, and the server answers every one (or refuses it at
    /// once when more than `max_waiting` wait).
    waiting: HashMap<(ClientId, u64), Vec<u64>>,
    clock: TickClock,
    /// The last batch reported durable, and the last handed to the persist
    /// thread.
    reported: u64,
    handed: u64,
    leader_writes: LeaderWrites<Command>,
    /// Publishes the replicated address book; dropped when the node stops,
    /// which ends whoever follows it.
    directory: Option<watch::Sender<Directory>>,
    /// The node stopped: nothing more is stepped.
    finished: bool,
}

impl NodeCore {
    fn new(server: KvServer, tick: Duration, directory: watch::Sender<Directory>) -> NodeCore {
        let replay = if server.node().lease_reads() { server.node().config().election_ticks } else { 1 };
        NodeCore {
            server,
            waiting: HashMap::new(),
            clock: TickClock { next: Instant::now() + tick, period: tick, replay },
            reported: 0,
            handed: 0,
            leader_writes: LeaderWrites::default(),
            directory: Some(directory),
            finished: false,
        }
    }

    /// Nothing more will be stepped.
    fn finish(&mut self) {
        self.finished = true;
        self.directory = None;
    }
}

/// A leader's peer message is stepped on arrival only while at most this
/// many requests wait for answers: one client's Put or Get (its
/// acknowledgements arrive with one waiting). Under load the node thread
/// batches instead.
const STEP_ON_ARRIVAL_MAX_WAITING: usize = 1;

/// Who steps a round: what it may do besides stepping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stepping {
    /// The node thread: may write a follower's batches itself.
    NodeThread,
    /// A task that pushed an event: never writes to the disk (that would
    /// hold a network thread for an fsync).
    Pusher,
}

/// Everything a round of steps needs, shared by the node thread and the
/// handles whose pushes may step the node.
struct Stepper {
    core: Mutex<NodeCore>,
    shared: Arc<Shared>,
    status: Arc<Mutex<Status>>,
    counters: Arc<Counters>,
    config: RuntimeConfig,
    send: SendToPeer,
    /// The node led after its last round: only then may a pusher step it.
    leading: AtomicBool,
    /// Gets may be answered under the leader's lease (the configuration's).
    lease_reads: bool,
    /// Names a failure while stepping on arrival.
    on_arrival: String,
}

/// The node thread: waits for events or the next tick and steps them.
fn node_loop(stepper: &Stepper) {
    loop {
        let timeout = {
            let Some(core) = stepper.lock_core() else { return };
            core.clock.next.saturating_duration_since(Instant::now())
        };
        let slept = stepper.shared.inbox.wait_ready(Some(timeout));
        let Some(mut core) = stepper.lock_core() else { return };
        let inboxed = Inboxed { slept, ..stepper.shared.inbox.take(stepper.config.max_events_per_batch) };
        if stepper.round(&mut core, inboxed, Stepping::NodeThread).is_break() {
            core.finish();
            return;
        }
    }
}

impl Stepper {
    /// The node, unless it stopped (or a panic while stepping it poisoned
    /// the lock: the node failed then, and is not stepped again).
    fn lock_core(&self) -> Option<crate::sync::MutexGuard<'_, NodeCore>> {
        self.core.lock().ok().filter(|core| !core.finished)
    }

    /// Queues an event for the node; a leader's is stepped right here when
    /// the node thread sleeps (see the module docs).
    fn push(&self, event: Event) -> Result<(), PushError<Event>> {
        let inbox = &self.shared.inbox;
        if !(self.config.leaders_step_on_arrival && self.leading.load(Ordering::Acquire)) {
            return inbox.push(event);
        }
        let max_waiting = match &event {
            // A Get stepped at once begins its own read round, so Gets
            // arriving just after it need another: at the node thread they
            // share one (16 clients of Gets lost 8% when each stepped on
            // arrival, specs/performance.md). Under a lease no round is
            // needed.
            Event::Client { request, .. } if matches!(request.op, Op::Get { .. }) && !self.lease_reads => {
                return inbox.push(event)
            }
            // A write (or a Get under the lease) with no other request
            // waiting: one client's.
            Event::Client { .. } => 0,
            // An acknowledgement or a read echo, for that Put or one Get.
            _ => STEP_ON_ARRIVAL_MAX_WAITING,
        };
        // With more requests in flight, the node thread's rounds batch
        // them (one round's messages written together, one status update),
        // which is worth more than the hand-off saved here.
        //
        // A full batch channel would block this thread until the disk
        // catches up: the node thread waits for that, not a network task.
        // A round sends one group at most, and only the snapshot thread
        // sends without the lock (one snapshot): should it fill the last
        // slot meanwhile, this waits for the persist thread's current write
        // at most.
        let may_step =
            |core: &NodeCore| !core.finished && core.waiting.len() <= max_waiting && !self.shared.batches.is_full();
        inbox.push_or_step(event, &self.core, self.config.max_events_per_batch, may_step, |core, inboxed| {
            match self.shared.guard(&self.on_arrival, || self.round(core, inboxed, Stepping::Pusher)) {
                Some(ControlFlow::Continue(())) => {}
                // Stopped, or panicked half-way through a step: the node
                // thread must not step it again.
                Some(ControlFlow::Break(())) | None => {
                    core.finish();
                    self.shared.stop();
                }
            }
        })
    }

    /// Steps what was taken from the inbox (and any due tick) and carries
    /// out the outputs. Break: the node stopped (the inbox was closed, or
    /// a thread of the node stopped).
    fn round(&self, core: &mut NodeCore, inboxed: Inboxed<Event>, by: Stepping) -> ControlFlow<()> {
        let (shared, counters, config) = (&*self.shared, &*self.counters, &self.config);
        counters.rounds.fetch_add(1, Ordering::Relaxed);
        if by == Stepping::Pusher {
            counters.rounds_on_arrival.fetch_add(1, Ordering::Relaxed);
        }
        let mut inputs = Vec::with_capacity(inboxed.events.len() + 2);
        if inboxed.durable > core.reported {
            core.reported = inboxed.durable;
            inputs.push(ServerInput::Persisted(core.reported));
        }
        inputs.extend((0..core.clock.due()).map(|_| ServerInput::Tick));
        let woken_by = inboxed.events.len();
        for event in inboxed.events {
            match event {
                Event::Peer(envelope) => inputs.push(ServerInput::Peer(envelope)),
                Event::Client { request, key } => {
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    core.waiting.entry((request.client, request.seq)).or_default().push(key);
                    inputs.push(ServerInput::Client(request));
                }
                Event::Admin(request) => {
                    tracing::info!(node = shared.id, "operator asks: {:?}", request.op);
                    inputs.push(ServerInput::Admin(request));
                }
                Event::SnapshotTaken(snapshot) => {
                    counters.snapshots_taken.fetch_add(1, Ordering::Relaxed);
                    counters.last_snapshot_bytes.store(snapshot.data.len() as u64, Ordering::Relaxed);
                    tracing::info!(
                        node = shared.id,
                        index = snapshot.meta.index,
                        bytes = snapshot.data.len(),
                        "snapshot taken; compacting the log"
                    );
                    inputs.push(ServerInput::SnapshotTaken(snapshot));
                }
            }
        }
        let ticked = inputs.iter().any(|i| matches!(i, ServerInput::Tick));
        // Woken from sleep by one event (or stepping the one it pushed),
        // the stepping thread has nothing else to do: it writes this
        // round's messages to idle connections itself (`server::outbox`),
        // after its own batches have gone to the disk. Busier, it hands
        // them to the transport's writers, which batch.
        let quiet = woken_by <= 1 && (inboxed.slept || by == Stepping::Pusher);
        let NodeCore { server, waiting, clock, reported, handed, leader_writes, directory, .. } = core;
        let mut outputs = Outputs {
            shared,
            counters,
            send: &self.send,
            sending: if quiet { Sending::AtOnce } else { Sending::Queued },
            held: Vec::new(),
            waiting,
            persists: Vec::new(),
            appends_to: Vec::new(),
            directory_touched: false,
        };
        for input in inputs {
            if self.lease_reads && matches!(input, ServerInput::Client(_)) {
                // A Get may be answered under the lease: count every tick
                // that passed while this batch was being stepped.
                for _ in 0..clock.due() {
                    outputs.carry_out(server.step(ServerInput::Tick))?;
                }
            }
            outputs.carry_out(server.step(input))?;
        }
        // A leader's batches wait for its pacer's AppendEntries (see
        // `pacing`); anyone else's go on at once.
        let batches = std::mem::take(&mut outputs.persists);
        outputs.persists = leader_writes.pass(Pass::after(server.node(), ticked, &outputs.appends_to, batches));
        if !outputs.persists.is_empty() && server.node().role() == Role::Leader {
            *counters.leader_writes.lock().unwrap_or_else(|e| e.into_inner()) = leader_writes.releases();
        }
        // The step's batches. A follower whose persist thread is idle
        // writes them itself and steps on at once: its acknowledgement
        // leaves without two thread hand-offs (to the persist thread and
        // back), and what arrives meanwhile waits in the inbox for the next
        // write (group commit). A leader hands them over, so that it goes on
        // stepping (replicating, committing, answering) during its fsync.
        // The leader holds back nothing else: batches reach the disk in
        // order whenever they go.
        while !outputs.persists.is_empty() {
            let persists = std::mem::take(&mut outputs.persists);
            let last = persists.last().map_or(0, |p| p.number);
            let idle = config.followers_write_inline
                && by == Stepping::NodeThread
                && server.node().role() != Role::Leader
                && *handed <= *reported;
            // Every earlier batch is durable (`handed <= reported`), so this
            // write keeps the order; the lock is busy only while the persist
            // thread saves a snapshot, which needs no order with batches.
            let mut free = idle.then(|| shared.storage.try_lock().ok()).flatten();
            let Some(storage) = free.as_mut().and_then(|s| s.as_mut()) else {
                counters.batches.fetch_add(1, Ordering::Relaxed);
                if shared.batches.send(ToDisk::Batches(persists)).is_err() {
                    return ControlFlow::Break(()); // the persist thread stopped
                }
                *handed = last;
                break;
            };
            let written = write_batches(&mut **storage, &persists.iter().collect::<Vec<_>>(), counters);
            drop(free);
            if let Err(e) = written {
                shared.fail(NodeFailure::Storage(e));
                return ControlFlow::Break(());
            }
            *reported = last;
            outputs.carry_out(server.step(ServerInput::Persisted(last)))?;
        }
        for envelope in outputs.held.drain(..) {
            (self.send)(envelope, Sending::AtOnce);
        }
        counters.reads_by_lease.store(server.node().reads_by_lease(), Ordering::Relaxed);
        if let Some(directory) = directory.as_ref().filter(|_| outputs.directory_touched) {
            directory.send_if_modified(|known| {
                let now = server.directory();
                let changed = now != *known;
                if changed {
                    tracing::info!(node = shared.id, directory = ?now, "the replicated address book changed");
                    *known = now;
                }
                changed
            });
        }
        self.leading.store(server.node().role() == Role::Leader, Ordering::Release);
        let now = status_of(server);
        let mut known = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if now.role == Some(Role::Candidate) && (known.role != Some(Role::Candidate) || known.term != now.term) {
            counters.elections.fetch_add(1, Ordering::Relaxed);
        }
        if now.leader.is_some() && (now.leader, now.term) != (known.leader, known.term) {
            counters.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        *known = now;
        drop(known);
        if inboxed.closed {
            // Let the persist thread drain what was handed over, then stop.
            let held = leader_writes.drain();
            if !held.is_empty() && shared.batches.send(ToDisk::Batches(held)).is_err() {
                return ControlFlow::Break(());
            }
            shared.batches.close();
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Carries out a step's outputs on the stepping thread, gathering its
/// batches to persist.
struct Outputs<'a> {
    shared: &'a Shared,
    counters: &'a Counters,
    send: &'a SendToPeer,
    /// How this round's messages go out: `AtOnce` ones wait in `held`
    /// until the round's batches are on their way to the disk.
    sending: Sending,
    held: Vec<Envelope<Command>>,
    waiting: &'a mut HashMap<(ClientId, u64), Vec<u64>>,
    persists: Vec<Persist<Command>>,
    /// The followers AppendEntries with entries left for, in order.
    appends_to: Vec<NodeId>,
    directory_touched: bool,
}

impl Outputs<'_> {
    /// Everything but the batches is carried out at once: the node holds
    /// back what depends on the disk (see the module docs). Break: a
    /// thread of the node stopped.
    fn carry_out(&mut self, out: ServerOutput) -> ControlFlow<()> {
        self.directory_touched |= directory::touched(&out);
        self.persists.extend(out.persist);
        self.appends_to.extend(pacing::appends_with_entries(&out.messages));
        match self.sending {
            Sending::Queued => out.messages.into_iter().for_each(|envelope| (self.send)(envelope, Sending::Queued)),
            Sending::AtOnce => self.held.extend(out.messages),
        }
        self.counters.applied.fetch_add(out.applied.len() as u64, Ordering::Relaxed);
        if let Some(job) = out.snapshot {
            // Never blocks: the one outstanding job's slot is free (the
            // snapshot thread took the last one before reporting it).
            if self.shared.jobs.send(job).is_err() {
                return ControlFlow::Break(()); // the snapshot thread stopped
            }
        }
        if let Some((meta, error)) = out.refused_snapshot {
            tracing::warn!(
                node = self.shared.id,
                index = meta.index,
                term = meta.term,
                "refused a snapshot from the leader (it will send it again): {error}"
            );
        }
        if let Some(meta) = out.installed {
            self.counters.snapshots_installed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(node = self.shared.id, index = meta.index, "installed a snapshot from the leader");
        }
        for response in out.responses {
            for key in self.waiting.remove(&(response.client, response.seq)).unwrap_or_default() {
                self.shared.waiters.complete(key, response.clone());
            }
        }
        for reply in out.admin_replies {
            match &reply.result {
                Ok(done) => tracing::info!(node = self.shared.id, "operator's request: {done}"),
                Err(e) => tracing::info!(node = self.shared.id, "operator's request not done: {e}"),
            }
            self.shared.admin_waiters.complete(reply.id, reply);
        }
        ControlFlow::Continue(())
    }
}

/// When the node thread's next tick is due.
struct TickClock {
    next: Instant,
    period: Duration,
    /// At most this many missed ticks are replayed at once.
    replay: u32,
}

impl TickClock {
    /// How many ticks are due now. Without lease reads, one at most: a
    /// stalled node's timers just run late, which only delays elections.
    /// With them, every missed tick up to an election timeout's worth: the
    /// lease is counted in the leader's ticks, and a stalled leader that
    /// undercounted them would think its lease longer than it is (more
    /// than an election timeout ends any lease, so replaying more would
    /// only send needless heartbeats).
    fn due(&mut self) -> u32 {
        self.due_at(Instant::now())
    }

    fn due_at(&mut self, now: Instant) -> u32 {
        if now < self.next {
            return 0;
        }
        let behind = ((now - self.next).as_nanos() / self.period.as_nanos().max(1)).saturating_add(1);
        let due = behind.min(u128::from(self.replay)) as u32;
        self.next = (self.next + self.period * due).max(now);
        due
    }
}

/// Writes every group of batches with one commit, then reports the last
/// batch's number; saves a snapshot where it comes in the order, then
/// reports it. Returns when the channel is closed and drained, or on the
/// first storage error.
fn persist_loop(shared: &Shared, counters: &Counters) -> Result<(), StorageError> {
    while let Ok(group) = shared.batches.recv_many(usize::MAX) {
        let mut writes: Vec<&Persist<Command>> = Vec::new();
        let mut snapshots = Vec::new();
        for item in &group {
            match item {
                ToDisk::Batches(batches) => writes.extend(batches),
                ToDisk::Snapshot(snapshot) => snapshots.push(snapshot),
            }
        }
        // The batches first: saving a snapshot is independent of them (it
        // covers applied entries only), so it may wait behind them.
        if let Some(last) = writes.last().map(|p| p.number) {
            shared.with_storage(|storage| write_batches(storage, &writes, counters))?;
            shared.inbox.persisted(last);
        }
        for snapshot in snapshots {
            shared.with_storage(|storage| storage.save_snapshot(snapshot))?;
            // Closed: the node stopped, and nobody needs the report.
            let _ = shared.inbox.push_report(Event::SnapshotTaken(snapshot.clone()));
        }
    }
    Ok(())
}

/// Writes a group of batches with one [`RaftStorage::write`] (one fsync)
/// and counts it.
fn write_batches(
    storage: &mut dyn RaftStorage,
    writes: &[&Persist<Command>],
    counters: &Counters,
) -> Result<(), StorageError> {
    let started = Instant::now();
    storage.write(writes)?;
    counters.fsync_seconds.observe(started.elapsed().as_secs_f64());
    let entries = writes.iter().filter_map(|p| p.log.as_ref()).map(|w| w.entries.len()).sum::<usize>();
    counters.entries_per_fsync.observe(entries as f64);
    counters.fsyncs.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Encodes each snapshot job and hands the bytes to the persist thread.
/// Returns when either channel closes.
fn snapshot_loop(shared: &Shared) {
    while let Ok(job) = shared.jobs.recv() {
        let snapshot = job.encode();
        if shared.batches.send(ToDisk::Snapshot(snapshot)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Op, ServerConfig, ServiceError};
    use crate::raft::{Config, DurableState, Message};
    use crate::server::handoff::WaitError;
    use crate::server::storage::RedbStorage;
    use crate::server::tempdir::TempDir;

    /// Three nodes in one process, on real disks and real threads, wired by
    /// closures instead of sockets.
    struct Cluster {
        nodes: Vec<Option<NodeRuntime>>,
        _dirs: Vec<TempDir>,
        wire: Arc<Mutex<Vec<Option<NodeHandle>>>>,
        /// Snapshot every this many entries (None: the default policy).
        snapshot_every: Option<u64>,
    }

    #[test]
    fn missed_ticks_are_replayed_only_up_to_the_bound() {
        let (start, ms) = (Instant::now(), Duration::from_millis(1));
        let now = start + 10 * ms + ms / 2; // ten ticks and a half late
        let mut lease = TickClock { next: start, period: ms, replay: 3 };
        assert_eq!(lease.due_at(now), 3, "eleven due, three replayed");
        assert_eq!(lease.due_at(now), 1, "the rest are dropped; the next is due at once");
        assert_eq!(lease.due_at(now), 0);
        assert_eq!(lease.due_at(now + ms), 1, "then one per period again");
        let mut plain = TickClock { next: start, period: ms, replay: 1 };
        assert_eq!(plain.due_at(now), 1, "without lease reads, one: timers run late");
        let mut in_step = TickClock { next: start, period: ms, replay: 30 };
        assert_eq!(in_step.due_at(now), 11, "all eleven, within the bound");
        assert_eq!(in_step.due_at(now), 0, "and the next on the old cadence");
        assert_eq!(in_step.due_at(start + 11 * ms), 1);
        assert_eq!(in_step.due_at(start), 0, "before it is due: none");
    }

    fn runtime_config() -> RuntimeConfig {
        RuntimeConfig { tick: Duration::from_millis(2), ..RuntimeConfig::default() }
    }

    fn start_node(
        id: NodeId,
        dir: &TempDir,
        wire: &Arc<Mutex<Vec<Option<NodeHandle>>>>,
        snapshot_every: Option<u64>,
    ) -> NodeRuntime {
        let storage = RedbStorage::open(dir.path()).unwrap();
        let durable = storage.load().unwrap();
        let mut config = ServerConfig::new(Config::new(id, 3, u64::from(id)));
        if let Some(n) = snapshot_every {
            config.snapshots = crate::kv::SnapshotPolicy { every_entries: Some(n), every_bytes: None };
            config.raft.snapshot_trailing_entries = 2;
        }
        let server = KvServer::restart(config, durable).unwrap();
        let send: SendToPeer = {
            let wire = wire.clone();
            Arc::new(move |envelope: Envelope<Command>, _| {
                // Not under the wire's lock: delivering to a leader may step
                // it on this thread, and its sends come back here.
                let to = wire.lock().unwrap().get(usize::from(envelope.to)).cloned().flatten();
                if let Some(handle) = to {
                    handle.deliver(envelope);
                }
            })
        };
        let node = NodeRuntime::start(server, Box::new(storage), send, runtime_config(), Arc::new(|_| {}));
        wire.lock().unwrap()[usize::from(id)] = Some(node.handle().clone());
        node
    }

    impl Cluster {
        fn start(tag: &str, snapshot_every: Option<u64>) -> Cluster {
            let dirs: Vec<_> = (0..3).map(|i| TempDir::new(&format!("node-{tag}-{i}")).unwrap()).collect();
            let wire = Arc::new(Mutex::new(vec![None, None, None]));
            let nodes = (0..3).map(|id| Some(start_node(id, &dirs[usize::from(id)], &wire, snapshot_every))).collect();
            Cluster { nodes, _dirs: dirs, wire, snapshot_every }
        }

        fn handle(&self, id: NodeId) -> NodeHandle {
            self.nodes[usize::from(id)].as_ref().unwrap().handle().clone()
        }

        fn stop(&mut self, id: NodeId) {
            self.wire.lock().unwrap()[usize::from(id)] = None;
            self.nodes[usize::from(id)].take().unwrap().shutdown().unwrap();
        }

        fn restart(&mut self, id: NodeId) {
            let node = start_node(id, &self._dirs[usize::from(id)], &self.wire, self.snapshot_every);
            self.nodes[usize::from(id)] = Some(node);
        }

        /// Runs one request to completion the way a clerk would: follow
        /// leader hints, retry with the same `(client, seq)` until answered.
        /// Gives up after 30 s of wall-clock time (a failed test, not a
        /// timing assumption: elections take well under a second).
        fn run(&self, client: ClientId, seq: u64, op: Op) -> String {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut target = 0;
            while Instant::now() < deadline {
                let Some(node) = self.nodes[usize::from(target)].as_ref() else {
                    target = (target + 1) % 3;
                    continue;
                };
                let request = Command { client, seq, op: op.clone() };
                let answer = node.handle().submit(request).map(|t| t.wait());
                match answer {
                    Ok(Ok(Response { result: Ok(value), .. })) => return value,
                    Ok(Ok(Response { result: Err(ServiceError::NotLeader { leader: Some(l) }), .. })) => target = l,
                    _ => {
                        target = (target + 1) % 3;
                        // No leader yet: give the election a moment
                        // (retry pacing, as a client backs off).
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            panic!("request ({client}, {seq}) not answered in 30 s");
        }
    }

    #[test]
    fn three_nodes_elect_replicate_and_survive_a_restart() {
        let mut cluster = Cluster::start("basic", None);
        cluster.run(1, 1, Op::Put { key: "k".into(), value: "a".into() });
        cluster.run(1, 2, Op::Append { key: "k".into(), value: "b".into() });
        // A retry of an applied write is answered, not executed again.
        cluster.run(1, 2, Op::Append { key: "k".into(), value: "b".into() });
        assert_eq!(cluster.run(2, 1, Op::Get { key: "k".into() }), "ab");
        assert_eq!(cluster.run(2, 2, Op::Get { key: "missing".into() }), "");

        let leader = cluster.handle(0).status().leader.unwrap();
        cluster.stop(leader);
        cluster.run(1, 3, Op::Append { key: "k".into(), value: "c".into() });
        cluster.restart(leader);
        assert_eq!(cluster.run(2, 3, Op::Get { key: "k".into() }), "abc");
    }

    /// Polls `done` until it holds; gives up after 30 s (a failed test, not
    /// a timing assumption).
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "not within 30 s: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn snapshots_compact_the_log_and_a_wiped_follower_catches_up_by_installing_one() {
        let mut cluster = Cluster::start("snapshots", Some(5));
        for seq in 1..=20 {
            cluster.run(1, seq, Op::Append { key: format!("k{}", seq % 3), value: format!("{seq},") });
        }
        let leader = cluster.handle(0).status().leader.unwrap();
        let handle = cluster.handle(leader);
        eventually("the leader compacts its log", || handle.status().first_index > 10);
        assert!(handle.counters().snapshots_taken.load(Ordering::Relaxed) >= 2);
        assert!(handle.counters().last_snapshot_bytes.load(Ordering::Relaxed) > 0);

        // A follower loses its disk; the log it would need is gone, so it
        // can only catch up from a snapshot.
        let follower = (leader + 1) % 3;
        cluster.stop(follower);
        let dir = &mut cluster._dirs[usize::from(follower)];
        *dir = TempDir::new(&format!("node-snapshots-{follower}-wiped")).unwrap();
        for seq in 21..=30 {
            cluster.run(1, seq, Op::Append { key: format!("k{}", seq % 3), value: format!("{seq},") });
        }
        cluster.restart(follower);
        let wiped = cluster.handle(follower);
        eventually("the wiped follower installs a snapshot and catches up", || {
            wiped.counters().snapshots_installed.load(Ordering::Relaxed) >= 1
                && wiped.status().applied_index >= handle.status().commit_index
        });

        // And it restarts from what it installed; the leader then leaves,
        // so the wiped follower is half of every majority from here on.
        cluster.stop(follower);
        cluster.restart(follower);
        cluster.stop(leader);
        let expected = |k: u64| (1..=30).filter(|s| s % 3 == k).map(|s| format!("{s},")).collect::<String>();
        for k in 0..3 {
            assert_eq!(cluster.run(2, k + 1, Op::Get { key: format!("k{k}") }), expected(k), "k{k}");
        }
        let last = cluster.run(2, 10, Op::Append { key: "k0".into(), value: "after".into() });
        assert_eq!(last, "");
    }

    #[test]
    fn stopped_node_refuses_and_wakes_waiters() {
        let dir = TempDir::new("node-stop").unwrap();
        let storage = RedbStorage::open(dir.path()).unwrap();
        // A lone member of a 3-node cluster: it never leads, so a request
        // would be refused; stop it with a ticket outstanding instead.
        let server = KvServer::restart(ServerConfig::new(Config::new(0, 3, 0)), DurableState::default()).unwrap();
        let node =
            NodeRuntime::start(server, Box::new(storage), Arc::new(|_, _| {}), runtime_config(), Arc::new(|_| {}));
        let handle = node.handle().clone();
        let ticket = handle.submit(Command { client: 1, seq: 1, op: Op::Get { key: "k".into() } }).unwrap();
        node.shutdown().unwrap();
        // Either the refusal made it out before the stop, or the shutdown
        // answered the ticket: exactly one answer, never a hang.
        match ticket.wait() {
            Ok(r) => assert!(matches!(r.result, Err(ServiceError::NotLeader { .. })), "{r:?}"),
            Err(e) => assert_eq!(e, WaitError::ShutDown),
        }
        assert!(handle.is_stopped());
        assert_eq!(
            handle.submit(Command { client: 1, seq: 2, op: Op::Get { key: "k".into() } }).err(),
            Some(SubmitError::Stopped)
        );
    }

    /// An idle leader steps a Put on the thread that submits it (here the
    /// test's own), and answers it; with `leaders_step_on_arrival` off,
    /// the node thread steps everything.
    #[test]
    fn an_idle_leader_steps_a_put_on_arrival_unless_told_not_to() {
        for on in [true, false] {
            let dir = TempDir::new("node-arrival").unwrap();
            let storage = RedbStorage::open(dir.path()).unwrap();
            let server = KvServer::restart(ServerConfig::new(Config::new(0, 1, 0)), DurableState::default()).unwrap();
            let config = RuntimeConfig { leaders_step_on_arrival: on, ..runtime_config() };
            let node = NodeRuntime::start(server, Box::new(storage), Arc::new(|_, _| {}), config, Arc::new(|_| {}));
            let handle = node.handle().clone();
            eventually("the lone member leads", || handle.status().role == Some(Role::Leader));
            // The node thread wakes for every tick and every durability
            // report, so a Put may find it awake; one of a hundred finds it
            // asleep (each waits for its answer first).
            for seq in 1..=100 {
                let put = Op::Put { key: "k".into(), value: seq.to_string() };
                let answer = handle.submit(Command { client: 1, seq, op: put }).unwrap().wait().unwrap();
                assert_eq!(answer.result, Ok(String::new()), "Put {seq} answered");
                if handle.counters().rounds_on_arrival.load(Ordering::Relaxed) > 0 {
                    break;
                }
            }
            let on_arrival = handle.counters().rounds_on_arrival.load(Ordering::Relaxed);
            assert_eq!(on_arrival > 0, on, "rounds stepped on arrival: {on_arrival}");
            node.shutdown().unwrap();
        }
    }

    /// A disk that fails, or panics, on its first write.
    struct BrokenDisk {
        panic: bool,
    }

    impl RaftStorage for BrokenDisk {
        fn load(&self) -> Result<crate::server::storage::Durable, StorageError> {
            Ok(Default::default())
        }
        fn write(&mut self, _: &[&Persist<Command>]) -> Result<(), StorageError> {
            if self.panic {
                panic!("the disk caught fire");
            }
            Err(StorageError::Io {
                path: "broken-disk".into(),
                op: "writing",
                source: std::io::Error::from_raw_os_error(5),
            })
        }
        fn save_snapshot(&mut self, _: &Snapshot) -> Result<(), StorageError> {
            self.write(&[])
        }
    }

    /// A disk that keeps nothing and never fails.
    struct NullDisk;

    impl RaftStorage for NullDisk {
        fn load(&self) -> Result<crate::server::storage::Durable, StorageError> {
            Ok(Default::default())
        }
        fn write(&mut self, _: &[&Persist<Command>]) -> Result<(), StorageError> {
            Ok(())
        }
        fn save_snapshot(&mut self, _: &Snapshot) -> Result<(), StorageError> {
            Ok(())
        }
    }

    /// Starts node 0 of a `members`-node cluster alone (it campaigns on its
    /// election timeout, which makes it write and send), and returns it
    /// with the receiving end of its `OnFatal` reports.
    fn lone_node(
        members: u8,
        storage: Box<dyn RaftStorage + Send>,
        send: SendToPeer,
    ) -> (NodeRuntime, std::sync::mpsc::Receiver<String>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let on_fatal: OnFatal = Arc::new(move |failure: &NodeFailure| {
            let _ = tx.lock().unwrap().send(failure.to_string());
        });
        let server = KvServer::restart(ServerConfig::new(Config::new(0, members, 0)), DurableState::default()).unwrap();
        (NodeRuntime::start(server, storage, send, runtime_config(), on_fatal), rx)
    }

    /// Waits for the node's failure report (a bound for a failed test, not
    /// a timing assumption: the first write comes within a second).
    fn fatal(rx: &std::sync::mpsc::Receiver<String>) -> String {
        rx.recv_timeout(Duration::from_secs(30)).expect("the node reported its failure")
    }

    fn assert_stopped(node: NodeRuntime) -> NodeFailure {
        let handle = node.handle().clone();
        assert!(handle.is_stopped());
        let request = Command { client: 1, seq: 1, op: Op::Get { key: "k".into() } };
        assert_eq!(handle.submit(request).err(), Some(SubmitError::Stopped));
        node.shutdown().expect_err("shutdown returns the failure")
    }

    #[test]
    fn a_storage_error_stops_the_node_loudly() {
        let (node, rx) = lone_node(1, Box::new(BrokenDisk { panic: false }), Arc::new(|_, _| {}));
        let report = fatal(&rx);
        assert!(report.contains("storage failed") && report.contains("broken-disk"), "{report}");
        assert!(matches!(assert_stopped(node), NodeFailure::Storage(_)));
        assert!(rx.try_recv().is_err(), "reported once");
    }

    #[test]
    fn a_panic_in_the_persist_thread_stops_the_node_loudly() {
        let (node, rx) = lone_node(1, Box::new(BrokenDisk { panic: true }), Arc::new(|_, _| {}));
        let report = fatal(&rx);
        assert!(report.contains("raftkv-persist-0") && report.contains("the disk caught fire"), "{report}");
        match assert_stopped(node) {
            NodeFailure::Panic { thread, message } => {
                assert_eq!((thread.as_str(), message.as_str()), ("raftkv-persist-0", "the disk caught fire"))
            }
            other => panic!("{other}"),
        }
    }

    /// A follower writes its batches on the node thread (while its persist
    /// thread is idle), unless told not to; either way a failed write ends
    /// the node loudly, naming the thread that wrote.
    #[test]
    fn a_follower_writes_on_its_node_thread_and_a_failure_there_stops_it_loudly() {
        for (inline, writer) in [(true, "raftkv-node-0"), (false, "raftkv-persist-0")] {
            for panic in [false, true] {
                let (tx, rx) = std::sync::mpsc::channel();
                let tx = Mutex::new(tx);
                let on_fatal: OnFatal = Arc::new(move |failure: &NodeFailure| {
                    let _ = tx.lock().unwrap().send(failure.to_string());
                });
                let server =
                    KvServer::restart(ServerConfig::new(Config::new(0, 3, 0)), DurableState::default()).unwrap();
                let config = RuntimeConfig { followers_write_inline: inline, ..runtime_config() };
                let node =
                    NodeRuntime::start(server, Box::new(BrokenDisk { panic }), Arc::new(|_, _| {}), config, on_fatal);
                // A leader of term 1: the follower must make the term durable.
                let append =
                    Message::Append { term: 1, prev_index: 0, prev_term: 0, entries: vec![], commit: 0, read_round: 0 };
                node.handle().deliver(Envelope { from: 1, to: 0, message: append });
                let report = fatal(&rx);
                match assert_stopped(node) {
                    NodeFailure::Panic { thread, .. } => assert!(panic && thread == writer, "{report}"),
                    NodeFailure::Storage(_) => assert!(!panic && report.contains("broken-disk"), "{report}"),
                }
            }
        }
    }

    #[test]
    fn a_panic_in_the_node_thread_stops_the_node_loudly() {
        // Node 0 of three, alone: its first message (a PreVote) panics.
        let send: SendToPeer = Arc::new(|_, _| panic!("the network caught fire"));
        let (node, rx) = lone_node(3, Box::new(NullDisk), send);
        let report = fatal(&rx);
        assert!(report.contains("raftkv-node-0") && report.contains("the network caught fire"), "{report}");
        assert!(matches!(assert_stopped(node), NodeFailure::Panic { .. }));
    }
}
