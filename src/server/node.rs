//! The node runtime: two threads that carry out what the pure [`KvServer`]
//! returns, in the order the persistence contract demands.
//!
//! ```text
//!  peers, clients ──Event──► node thread ──Batch──► persist thread ──► peers (messages)
//!    (bounded queue,          steps KvServer,        (bounded channel) one fsync per group,  └─► waiters (answers)
//!     try_send)               ticks from the clock                     then send and answer
//! ```
//!
//! - The **node thread** owns the [`KvServer`]. It waits for events until the
//!   next tick is due, then steps the server with the tick and with every
//!   event that queued up (at most [`RuntimeConfig::max_events_per_batch`]),
//!   and hands the whole batch's outputs — the `Persist`s to make durable,
//!   the messages to send, the answers — to the persist thread. It never does
//!   I/O and never acts on an output itself.
//! - The **persist thread** takes every batch queued while it was busy,
//!   writes all their `Persist`s with one [`RaftStorage::write`] (one fsync:
//!   group commit), and only then sends the messages and answers the waiting
//!   requests, batch by batch, in order.
//!
//! This is the contract of [`crate::raft::ready`] with batching: the node
//! thread may run ahead of the disk (its memory holds state that is not yet
//! durable), but nothing it decided leaves the process before the batch it
//! belongs to, and every batch before it, is durable. A crash loses the
//! undurable batches and everything they would have said, which is the same
//! as crashing before those steps.
//!
//! The hand-off between the threads is [`Handoff`], whose bounded channel
//! pushes back on the node thread when the disk falls behind, and whose
//! waiters are answered without ever blocking the persist thread; its rules
//! against deadlock are in [`super::apply`] and checked by loom.
//!
//! Requests are matched to answers by `(client, seq)`: [`NodeHandle::submit`]
//! registers a ticket under a fresh key first, then queues the request; the
//! node thread remembers which keys wait for which `(client, seq)` and puts
//! `(key, response)` pairs into the batch. The pure server answers every
//! accepted request eventually (committed, refused, or failed when its
//! leader loses the term), so the map drains.

use super::apply::{Handoff, Ticket};
use super::storage::{RaftStorage, StorageError};
use crate::kv::{ClientId, Command, KvServer, Request, Response, ServerInput};
use crate::raft::{Envelope, LogIndex, NodeId, Persist, Role, Term};
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{Arc, Mutex};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

/// How the runtime around one node is sized.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Wall-clock length of one Raft tick.
    pub tick: Duration,
    /// Events (peer messages, requests) waiting for the node thread; more
    /// are dropped (peer messages: Raft tolerates loss) or refused
    /// (requests: the client is told to retry).
    pub event_queue: usize,
    /// At most this many events are stepped into one batch.
    pub max_events_per_batch: usize,
    /// Batches waiting for the disk; when full the node thread waits.
    pub batch_queue: usize,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig { tick: Duration::from_millis(10), event_queue: 8192, max_events_per_batch: 512, batch_queue: 64 }
    }
}

/// Sends a message to a peer without blocking (the transport drops it when
/// it cannot keep up).
pub type SendToPeer = Arc<dyn Fn(Envelope<Command>) + Send + Sync>;

/// What the node thread is fed.
enum Event {
    Peer(Envelope<Command>),
    Client { request: Request, key: u64 },
    Stop,
}

/// One node-thread step's outputs, held until its writes are durable.
#[derive(Default)]
struct Batch {
    persists: Vec<Persist<Command>>,
    messages: Vec<Envelope<Command>>,
    answers: Vec<(u64, Response)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.persists.is_empty() && self.messages.is_empty() && self.answers.is_empty()
    }
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
}

/// Counters of the runtime, for `INFO` and the benchmark's fsyncs per op.
#[derive(Debug, Default)]
pub struct Counters {
    /// Storage writes that had something to write (each is one fsync).
    pub fsyncs: AtomicU64,
    /// Batches handed to the persist thread.
    pub batches: AtomicU64,
    /// Log entries applied to the (in-memory) state machine, no-ops
    /// included.
    pub applied: AtomicU64,
    /// Peer messages dropped because the event queue was full.
    pub dropped_peer_messages: AtomicU64,
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
    Storage(StorageError),
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeFailure::Storage(e) => write!(f, "storage failed, node stopped: {e}"),
        }
    }
}

/// The handle through which the network side talks to a running node.
/// Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    events: SyncSender<Event>,
    handoff: Arc<Handoff<Batch, Response>>,
    next_key: Arc<AtomicU64>,
    status: Arc<Mutex<Status>>,
    counters: Arc<Counters>,
    stopped: Arc<AtomicBool>,
}

impl NodeHandle {
    /// Queues a client request; the ticket is answered once the request is
    /// committed and applied (or refused). Register-then-queue, so the
    /// answer cannot overtake the ticket.
    pub fn submit(&self, request: Request) -> Result<Ticket<Response>, SubmitError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let ticket = self.handoff.register(key);
        match self.events.try_send(Event::Client { request, key }) {
            Ok(()) => Ok(ticket),
            Err(TrySendError::Full(_)) => Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// Hands a peer's message to the node; drops it if the node is behind.
    pub fn deliver(&self, envelope: Envelope<Command>) {
        if let Err(TrySendError::Full(_)) = self.events.try_send(Event::Peer(envelope)) {
            self.counters.dropped_peer_messages.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn status(&self) -> Status {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// True once the node stopped (shut down or failed).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// A running node: its two threads and the handle to reach them.
pub struct NodeRuntime {
    handle: NodeHandle,
    node_thread: Option<std::thread::JoinHandle<()>>,
    persist_thread: Option<std::thread::JoinHandle<Result<(), NodeFailure>>>,
}

impl NodeRuntime {
    /// Starts the threads. `server` must have been restarted from what
    /// `storage` holds.
    pub fn start(
        server: KvServer,
        storage: Box<dyn RaftStorage + Send>,
        send: SendToPeer,
        config: RuntimeConfig,
    ) -> NodeRuntime {
        let (events, inbox) = mpsc::sync_channel(config.event_queue);
        let handoff = Arc::new(Handoff::new(config.batch_queue));
        let status = Arc::new(Mutex::new(status_of(&server)));
        let handle = NodeHandle {
            events,
            handoff: handoff.clone(),
            next_key: Arc::new(AtomicU64::new(0)),
            status: status.clone(),
            counters: Arc::new(Counters::default()),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let id = server.node().id();
        let node_thread = {
            let (handoff, counters) = (handoff.clone(), handle.counters.clone());
            std::thread::Builder::new()
                .name(format!("raftkv-node-{id}"))
                .spawn(move || node_loop(server, inbox, &handoff, &status, &counters, &config))
                .expect("spawning the node thread")
        };
        let persist_thread = {
            let (handoff, counters, stopped) = (handoff, handle.counters.clone(), handle.stopped.clone());
            std::thread::Builder::new()
                .name(format!("raftkv-persist-{id}"))
                .spawn(move || {
                    let result = persist_loop(storage, &handoff, &send, &counters);
                    if let Err(e) = &result {
                        tracing::error!(node = id, "{e}");
                    }
                    // Either way, nothing more may be acted on: refuse new
                    // work, wake the node thread and every waiter.
                    stopped.store(true, Ordering::Release);
                    handoff.shutdown();
                    result
                })
                .expect("spawning the persist thread")
        };
        NodeRuntime { handle, node_thread: Some(node_thread), persist_thread: Some(persist_thread) }
    }

    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// Stops both threads: batches already handed over are still made
    /// durable and acted on (their answers may race the shutdown); waiting
    /// requests are answered `ShutDown`. Returns the persist thread's
    /// failure, if it had one.
    pub fn shutdown(mut self) -> Result<(), NodeFailure> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), NodeFailure> {
        self.handle.stopped.store(true, Ordering::Release);
        // The queue may be full: a blocking send is fine, the node thread
        // drains it (or has already exited and dropped the receiver).
        let _ = self.handle.events.send(Event::Stop);
        if let Some(t) = self.node_thread.take() {
            let _ = t.join();
        }
        match self.persist_thread.take() {
            Some(t) => t.join().unwrap_or(Ok(())),
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
    }
}

fn node_loop(
    mut server: KvServer,
    inbox: mpsc::Receiver<Event>,
    handoff: &Handoff<Batch, Response>,
    status: &Mutex<Status>,
    counters: &Counters,
    config: &RuntimeConfig,
) {
    // Which ticket keys wait for which request. Bounded: each entry is an
    // accepted request, and the server answers every one (or refuses it at
    // once when more than `max_waiting` wait).
    let mut waiting: HashMap<(ClientId, u64), Vec<u64>> = HashMap::new();
    let mut next_tick = Instant::now() + config.tick;
    let mut events = Vec::with_capacity(config.max_events_per_batch);
    loop {
        let mut stop = false;
        let now = Instant::now();
        if now < next_tick {
            match inbox.recv_timeout(next_tick - now) {
                Ok(e) => events.push(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
        }
        while !stop && events.len() < config.max_events_per_batch {
            match inbox.try_recv() {
                Ok(e) => events.push(e),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => stop = true,
            }
        }

        let mut batch = Batch::default();
        let mut inputs = Vec::with_capacity(events.len() + 1);
        if Instant::now() >= next_tick {
            inputs.push(ServerInput::Tick);
            // Missed ticks are not replayed in a burst: a stalled node's
            // timers just run late, which only delays elections.
            next_tick = (next_tick + config.tick).max(Instant::now());
        }
        for event in events.drain(..) {
            match event {
                Event::Peer(envelope) => inputs.push(ServerInput::Peer(envelope)),
                Event::Client { request, key } => {
                    waiting.entry((request.client, request.seq)).or_default().push(key);
                    inputs.push(ServerInput::Client(request));
                }
                Event::Stop => stop = true,
            }
        }
        for input in inputs {
            // Recording the write is all this step does with it: the batch
            // holds the step's outputs until the persist thread made it
            // durable (see the module docs).
            let out = server
                .step(input, |persist| {
                    if !persist.is_empty() {
                        batch.persists.push(persist.clone());
                    }
                    Ok::<(), Infallible>(())
                })
                .unwrap_or_else(|never| match never {});
            batch.messages.extend(out.messages);
            counters.applied.fetch_add(out.applied.len() as u64, Ordering::Relaxed);
            for response in out.responses {
                for key in waiting.remove(&(response.client, response.seq)).unwrap_or_default() {
                    batch.answers.push((key, response.clone()));
                }
            }
        }
        *status.lock().unwrap_or_else(|e| e.into_inner()) = status_of(&server);
        if !batch.is_empty() {
            counters.batches.fetch_add(1, Ordering::Relaxed);
            if handoff.deliver(batch).is_err() {
                return; // the persist thread stopped
            }
        }
        if stop {
            handoff.entries().close();
            return;
        }
    }
}

fn persist_loop(
    mut storage: Box<dyn RaftStorage + Send>,
    handoff: &Handoff<Batch, Response>,
    send: &SendToPeer,
    counters: &Counters,
) -> Result<(), NodeFailure> {
    handoff.run_apply(usize::MAX, |group: Vec<Batch>| {
        let writes: Vec<&Persist<Command>> = group.iter().flat_map(|b| b.persists.iter()).collect();
        if !writes.is_empty() {
            storage.write(&writes).map_err(NodeFailure::Storage)?;
            counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        let mut answers = Vec::new();
        for batch in group {
            for envelope in batch.messages {
                send(envelope);
            }
            answers.extend(batch.answers);
        }
        Ok(answers)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Op, ServerConfig, ServiceError};
    use crate::raft::{Config, HardState};
    use crate::server::apply::WaitError;
    use crate::server::storage::RedbStorage;
    use crate::server::tempdir::TempDir;

    /// Three nodes in one process, on real disks and real threads, wired by
    /// closures instead of sockets.
    struct Cluster {
        nodes: Vec<Option<NodeRuntime>>,
        _dirs: Vec<TempDir>,
        wire: Arc<Mutex<Vec<Option<NodeHandle>>>>,
    }

    fn runtime_config() -> RuntimeConfig {
        RuntimeConfig { tick: Duration::from_millis(2), ..RuntimeConfig::default() }
    }

    fn start_node(id: NodeId, dir: &TempDir, wire: &Arc<Mutex<Vec<Option<NodeHandle>>>>) -> NodeRuntime {
        let storage = RedbStorage::open(dir.path()).unwrap();
        let durable = storage.load().unwrap();
        let server = KvServer::restart(ServerConfig::new(Config::new(id, 3, u64::from(id))), durable.hard, durable.log);
        let send: SendToPeer = {
            let wire = wire.clone();
            Arc::new(move |envelope: Envelope<Command>| {
                let to = usize::from(envelope.to);
                if let Some(Some(handle)) = wire.lock().unwrap().get(to) {
                    handle.deliver(envelope);
                }
            })
        };
        let node = NodeRuntime::start(server, Box::new(storage), send, runtime_config());
        wire.lock().unwrap()[usize::from(id)] = Some(node.handle().clone());
        node
    }

    impl Cluster {
        fn start(tag: &str) -> Cluster {
            let dirs: Vec<_> = (0..3).map(|i| TempDir::new(&format!("node-{tag}-{i}")).unwrap()).collect();
            let wire = Arc::new(Mutex::new(vec![None, None, None]));
            let nodes = (0..3).map(|id| Some(start_node(id, &dirs[usize::from(id)], &wire))).collect();
            Cluster { nodes, _dirs: dirs, wire }
        }

        fn handle(&self, id: NodeId) -> NodeHandle {
            self.nodes[usize::from(id)].as_ref().unwrap().handle().clone()
        }

        fn stop(&mut self, id: NodeId) {
            self.wire.lock().unwrap()[usize::from(id)] = None;
            self.nodes[usize::from(id)].take().unwrap().shutdown().unwrap();
        }

        fn restart(&mut self, id: NodeId) {
            let node = start_node(id, &self._dirs[usize::from(id)], &self.wire);
            self.nodes[usize::from(id)] = Some(node);
        }

        /// Runs one request to completion the way a clerk would: follow
        /// leader hints, retry with the same `(client, seq)` until answered.
        /// Gives up after 30 s of wall-clock time (a failed test, not a
        /// timing assumption: elections take well under a second).
        fn run(&self, client: u64, seq: u64, op: Op) -> String {
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
        let mut cluster = Cluster::start("basic");
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

    #[test]
    fn stopped_node_refuses_and_wakes_waiters() {
        let dir = TempDir::new("node-stop").unwrap();
        let storage = RedbStorage::open(dir.path()).unwrap();
        // A lone member of a 3-node cluster: it never leads, so a request
        // would be refused; stop it with a ticket outstanding instead.
        let server = KvServer::restart(ServerConfig::new(Config::new(0, 3, 0)), HardState::default(), vec![]);
        let node = NodeRuntime::start(server, Box::new(storage), Arc::new(|_| {}), runtime_config());
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
}
