//! A deterministic simulator of a whole raftkv cluster.
//!
//! [`Sim`] runs N [`KvServer`] replicas and M clients (each a [`Clerk`]
//! driven by a [`Workload`]) in virtual time, over a network that delays,
//! drops, duplicates and reorders messages and can be partitioned
//! ([`network`]). Each server has a disk that takes a while: the batches a
//! server hands out queue up (a leader's once its pacer is sent entries, as
//! in the server's runtime: [`pacing`]), one simulated fsync writes all of
//! them (group commit), and the report of it ([`ServerInput::Persisted`])
//! arrives a little later, so a crash can fall before a batch is written or
//! after it is written but before the server knows. Servers restart from
//! exactly what reached the disk ([`MemStorage`]), as after a power cut.
//! All randomness comes from one seed (after the choices of
//! [`SimConfig::script`], if any: the `cluster` fuzz target's bytes), so a
//! seed replays a run step for step. The simulator does no I/O: a readable
//! trace of the run goes to the [`TraceSink`] in [`SimConfig::trace`], if
//! any (`raftkv sim` prints it).
//!
//! After every step the [`checker::SafetyChecker`] checks the Raft safety
//! invariants; the first violation stops the run with the seed and step that
//! reproduce it. Every client call and return is recorded as a
//! [`History`] for the linearizability checker. [`scenario`] builds the
//! MIT 6.824 lab's test shapes on top.

pub mod checker;
pub mod churn;
pub mod network;
pub mod scenario;
mod workload;

pub use checker::{Invariant, SafetyChecker, Violation};
pub use network::{NetworkConfig, Topology};
pub use workload::Workload;

use crate::clerk::{Clerk, ClerkAction};
use crate::kv::{AdminId, AdminOp, AdminReply, AdminRequest};
use crate::kv::{Command, KvServer, Op, ReadPath, Response, ServerConfig, ServerInput, ServerOutput};
use crate::kv::{SnapshotJob, SnapshotPolicy};
use crate::lincheck::{History, OpKind, Operation};
use crate::raft::pacing::{self, LeaderWrites, Pass};
use crate::raft::{BatchNumber, Config, DurableState, Envelope, InjectedBugs, NodeId, Persist, Role, Snapshot};
use crate::rng::Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

/// Virtual time in microseconds.
pub type Micros = u64;

/// Where every choice of a run comes from: message losses, delays and
/// duplicates, tick phases, and the scenario's fault schedule. Normally the
/// seed; for the `cluster` fuzz target, the fuzzer's bytes first (two per
/// choice), then the seed once they run out. Either way a run replays
/// exactly from its inputs.
#[derive(Clone, Debug)]
pub struct Choices {
    rng: Rng,
    script: Vec<u8>,
    position: usize,
}

impl Choices {
    pub fn new(seed: u64, script: Vec<u8>) -> Choices {
        Choices { rng: Rng::new(seed), script, position: 0 }
    }

    /// A value in `[low, high)`; `low` when the range is empty.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        match self.script.get(self.position..self.position + 2) {
            Some(&[a, b]) => {
                self.position += 2;
                low + u64::from(u16::from_le_bytes([a, b])) % (high - low)
            }
            _ => self.rng.range(low, high),
        }
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.range(0, denominator) < numerator
    }

    /// An independent seeded generator (for a client's workload).
    fn fork(&mut self) -> Rng {
        self.rng.fork()
    }
}

/// Receives each line of a run's trace (`raftkv sim` prints them).
#[derive(Clone)]
pub struct TraceSink(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl fmt::Debug for TraceSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TraceSink")
    }
}

/// Everything that shapes a run besides the fault schedule.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Server slots, ids `0..servers`; clients know them all.
    pub servers: u8,
    /// The founding voters are `0..members`; the other slots start as
    /// servers that are not members yet (they join when an operator adds
    /// them: [`Sim::admin`]).
    pub members: u8,
    pub network: NetworkConfig,
    /// Virtual length of one Raft tick, on a true clock.
    pub tick_us: Micros,
    /// Each server's clock runs fast or slow by up to this many parts per
    /// million: its tick lasts `tick_us · (1 ± drift)`, drawn afresh at
    /// each (re)start. 0 (the default): all clocks are true.
    pub clock_drift_ppm: u64,
    /// Reads under a leader lease as long as the clocks' drift allows
    /// ([`Config::with_lease_reads`]); off by default (ReadIndex rounds).
    pub lease_reads: bool,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    /// A clerk retries elsewhere when a request is unanswered this long.
    pub client_timeout_us: Micros,
    pub read_path: ReadPath,
    /// Raft's per-message batch bound ([`Config::max_batch_entries`]).
    pub max_batch_entries: usize,
    /// One simulated fsync takes between these (it writes every batch
    /// queued when it completes).
    pub disk_us: (Micros, Micros),
    /// The report that a write is durable reaches the node within this.
    pub disk_report_us: Micros,
    /// When servers snapshot their state machine (never, by default).
    pub snapshots: SnapshotPolicy,
    /// Entries kept before a snapshot ([`Config::snapshot_trailing_entries`]).
    pub snapshot_trailing_entries: u64,
    /// Bytes per snapshot chunk ([`Config::snapshot_chunk_bytes`]).
    pub snapshot_chunk_bytes: usize,
    /// The session table's bound ([`ServerConfig::max_sessions`]).
    pub max_sessions: usize,
    pub bugs: InjectedBugs,
    /// Where a readable trace of elections, commits, faults and client calls
    /// goes, if anywhere (the simulator itself does no I/O).
    pub trace: Option<TraceSink>,
    /// Choices to make before falling back on the seed (see [`Choices`]).
    pub script: Vec<u8>,
}

impl SimConfig {
    pub fn new(seed: u64, servers: u8) -> SimConfig {
        SimConfig {
            seed,
            servers,
            members: servers,
            network: NetworkConfig::reliable(),
            tick_us: 10_000,
            clock_drift_ppm: 0,
            lease_reads: false,
            election_ticks: 30,
            heartbeat_ticks: 5,
            client_timeout_us: 100_000,
            read_path: ReadPath::ReadIndex,
            max_batch_entries: 64,
            disk_us: (100, 1_000),
            disk_report_us: 200,
            snapshots: SnapshotPolicy::NEVER,
            snapshot_trailing_entries: 10_240,
            snapshot_chunk_bytes: 1 << 20,
            max_sessions: crate::kv::MAX_SESSIONS,
            bugs: InjectedBugs::default(),
            trace: None,
            script: Vec::new(),
        }
    }

    /// The heartbeat interval in virtual time.
    pub fn heartbeat_us(&self) -> Micros {
        self.tick_us * u64::from(self.heartbeat_ticks)
    }

    /// The minimum election timeout in virtual time.
    pub fn election_us(&self) -> Micros {
        self.tick_us * u64::from(self.election_ticks)
    }
}

/// What reached a server's disk; all that survives its crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStorage {
    /// The hard state, the latest snapshot (taken here or installed), the
    /// log's base and the log after it.
    pub disk: DurableState<Command>,
    /// How many durable writes (fsyncs) were made.
    pub writes: u64,
}

impl MemStorage {
    /// Applies one batch ([`DurableState::write`]; the caller counts the
    /// fsyncs in `writes`).
    pub fn write(&mut self, p: &Persist<Command>) {
        self.disk.write(p);
    }

    /// Everything a restart reads.
    pub fn durable(&self) -> DurableState<Command> {
        self.disk.clone()
    }

    /// The index of the last entry stored (or the base's).
    pub fn last_index(&self) -> u64 {
        self.disk.last_index()
    }

    /// The persisted Raft state's size: the hard state and the log as
    /// postcard encodes them (the wire's and the disk's encoding). The
    /// snapshot is the state machine's, not counted.
    pub fn raft_state_bytes(&self) -> u64 {
        fn size<T: serde::Serialize>(value: &T) -> u64 {
            postcard::to_allocvec(value).map_or(0, |bytes| bytes.len() as u64)
        }
        size(&self.disk.hard) + size(&self.disk.base) + self.disk.log.iter().map(size).sum::<u64>()
    }
}

/// A run stopped by a broken invariant.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub time_us: Micros,
    pub violation: Violation,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} violated at step {} (t={} ms), seed {}: {}. Replay with RAFTKV_SEED={}",
            self.violation.invariant,
            self.step,
            self.time_us / 1000,
            self.seed,
            self.violation.detail,
            self.seed
        )
    }
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub steps: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub ops_completed: u64,
    /// Operations answered "session expired" (outcome unknown).
    pub ops_expired: u64,
    pub elections: u64,
    /// Snapshots taken (written and reported).
    pub snapshots: u64,
    /// Snapshots installed from a leader (durable and loaded).
    pub installs: u64,
    /// Reads a leader answered under its lease, without a round.
    pub reads_by_lease: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Addr {
    Server(NodeId),
    Client(usize),
}

#[derive(Clone, Debug)]
enum Packet {
    Raft(Envelope<Command>),
    Request(Command),
    Response(Response),
}

#[derive(Clone, Debug)]
enum Event {
    Tick {
        node: NodeId,
        incarnation: u32,
    },
    /// The server's fsync completes: every queued batch is durable.
    DiskSync {
        node: NodeId,
        incarnation: u32,
    },
    /// The server learns that batches up to `number` are durable.
    DiskReport {
        node: NodeId,
        incarnation: u32,
        number: BatchNumber,
    },
    /// The server's snapshot job is written: durable, and reported.
    SnapshotWritten {
        node: NodeId,
        incarnation: u32,
        snapshot: Snapshot,
    },
    Deliver {
        from: Addr,
        to: Addr,
        packet: Packet,
    },
    ClientTimeout {
        client: usize,
        attempt: u64,
    },
    ClientStart {
        client: usize,
    },
}

struct Scheduled {
    at: Micros,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct SimServer {
    /// `None` while crashed.
    server: Option<KvServer>,
    storage: MemStorage,
    /// Batches handed out and not written yet, in order; lost in a crash.
    unsynced: Vec<Persist<Command>>,
    /// A leader's batches waiting for its pacer's AppendEntries before they
    /// join `unsynced`, as in the server's runtime ([`pacing`]); lost in a
    /// crash.
    leader_writes: LeaderWrites<Command>,
    /// Scratch: the followers a step's AppendEntries with entries go to.
    appends_to: Vec<NodeId>,
    /// A `DiskSync` is scheduled for this incarnation.
    syncing: bool,
    incarnation: u32,
    /// How long its ticks last this incarnation (its clock's drift).
    tick_us: Micros,
    /// Restarts as a server that is not a member yet (a founding member
    /// whose disk was wiped is a new server, not a founder again).
    joining: bool,
}

/// How a client's call of `op` is recorded in a history: the simulator's
/// and the real load generator's (`server::load`) one mapping from the
/// service's operations to the checker's. `output` is the reply (`""` while
/// the call is outstanding).
pub fn recorded(client: u64, op: &Op, output: &str, call: u64, ret: Option<u64>) -> Operation {
    let kind = match op {
        Op::Put { .. } => OpKind::Put,
        Op::Append { .. } => OpKind::Append,
        Op::Get { .. } => OpKind::Get,
        Op::Delete { .. } => OpKind::Delete,
        Op::PutIfAbsent { .. } => OpKind::PutIfAbsent,
    };
    let output = if kind.has_output() { output } else { "" };
    Operation::new(client, kind, op.key(), op.value().unwrap_or_default(), output, call, ret)
}

struct SimClient {
    clerk: Clerk,
    workload: Workload,
    /// Index into the history of the operation in progress.
    in_progress: Option<usize>,
    /// No new operations are started while stopped.
    stopped: bool,
    rng: Rng,
}

/// A simulated cluster. See the module docs.
pub struct Sim {
    config: SimConfig,
    choices: Choices,
    now: Micros,
    next_seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    servers: Vec<SimServer>,
    clients: Vec<SimClient>,
    topology: Topology,
    checker: SafetyChecker,
    history: Vec<Operation>,
    /// Every reply to an operator's request, with who sent it and when.
    admin_replies: Vec<(Micros, NodeId, AdminReply)>,
    next_admin_id: AdminId,
    failure: Option<Failure>,
    stats: Stats,
}

impl Sim {
    /// A cluster of `config.servers` fresh servers and no clients.
    pub fn new(config: SimConfig) -> Sim {
        assert!(config.clock_drift_ppm < 1_000_000, "a clock drifting by 100% or more has stopped");
        let n = config.servers;
        let mut sim = Sim {
            choices: Choices::new(config.seed, config.script.clone()),
            now: 0,
            next_seq: 0,
            queue: BinaryHeap::new(),
            servers: (0..n)
                .map(|_| SimServer {
                    server: None,
                    storage: MemStorage::default(),
                    unsynced: Vec::new(),
                    leader_writes: LeaderWrites::default(),
                    appends_to: Vec::new(),
                    syncing: false,
                    incarnation: 0,
                    tick_us: config.tick_us,
                    joining: false,
                })
                .collect(),
            clients: Vec::new(),
            topology: Topology::new(n, 0),
            checker: SafetyChecker::new(usize::from(n)),
            history: Vec::new(),
            admin_replies: Vec::new(),
            next_admin_id: 1,
            failure: None,
            stats: Stats::default(),
            config,
        };
        for id in 0..n {
            sim.restart(id);
        }
        sim
    }

    /// Adds a client running `workload`; it starts at once. Returns its index.
    pub fn add_client(&mut self, workload: Workload) -> usize {
        let index = self.clients.len();
        let first_guess = self.choices.range(0, u64::from(self.config.servers)) as NodeId;
        let clerk = Clerk::new(index as u128 + 1, self.config.servers, first_guess);
        let rng = self.choices.fork();
        self.clients.push(SimClient { clerk, workload, in_progress: None, stopped: false, rng });
        self.topology.grow_clients(self.clients.len());
        self.schedule(0, Event::ClientStart { client: index });
        index
    }

    pub fn now(&self) -> Micros {
        self.now
    }
    pub fn config(&self) -> &SimConfig {
        &self.config
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }
    /// How long server `id`'s ticks last this incarnation (its clock's
    /// drift, [`SimConfig::clock_drift_ppm`]).
    pub fn tick_us(&self, id: NodeId) -> Micros {
        self.servers[usize::from(id)].tick_us
    }

    /// The replica `id`, unless crashed.
    pub fn server(&self, id: NodeId) -> Option<&KvServer> {
        self.servers[usize::from(id)].server.as_ref()
    }
    pub fn storage(&self, id: NodeId) -> &MemStorage {
        &self.servers[usize::from(id)].storage
    }
    /// The recorded client history so far.
    pub fn history(&self) -> History {
        History { ops: self.history.clone() }
    }

    /// The recorded operations so far, without copying them.
    pub fn operations(&self) -> &[Operation] {
        &self.history
    }

    /// The source of choices scenario drivers use for fault schedules.
    pub fn choices(&mut self) -> &mut Choices {
        &mut self.choices
    }

    /// Runs until virtual time `until`, or the first safety violation.
    pub fn run_until(&mut self, until: Micros) -> Result<(), Failure> {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > until || self.failure.is_some() {
                break;
            }
            self.process_next();
        }
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// Runs event by event until `condition` holds (checked before each
    /// event), at most until virtual time `deadline`. Returns whether it
    /// holds: for schedules that must act at an exact moment, such as the
    /// instant a leader is elected, before its first message is delivered.
    pub fn run_until_true(
        &mut self,
        deadline: Micros,
        mut condition: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, Failure> {
        loop {
            if condition(self) {
                return Ok(true);
            }
            let next = self.queue.peek().map(|Reverse(s)| s.at);
            match next {
                Some(at) if at <= deadline && self.failure.is_none() => self.process_next(),
                _ => {
                    self.run_until(deadline)?;
                    return Ok(condition(self));
                }
            }
        }
    }

    /// Processes the next event in the queue, if any.
    fn process_next(&mut self) {
        if let Some(Reverse(Scheduled { at, event, .. })) = self.queue.pop() {
            self.now = at;
            self.stats.steps += 1;
            self.process(event);
        }
    }

    /// Runs for `duration` more virtual time.
    pub fn run_for(&mut self, duration: Micros) -> Result<(), Failure> {
        self.run_until(self.now + duration)
    }

    /// Runs until every client is idle — no operation in progress and none
    /// to start (stopped, or its script is done) — or until `deadline`.
    /// Returns whether all clients are idle.
    pub fn run_until_clients_idle(&mut self, deadline: Micros) -> Result<bool, Failure> {
        let idle =
            |sim: &Sim| sim.clients.iter().all(|c| c.in_progress.is_none() && (c.stopped || c.workload.is_done()));
        while self.now < deadline {
            if idle(self) {
                return Ok(true);
            }
            let step = self.config.tick_us.min(deadline - self.now);
            self.run_for(step)?;
        }
        Ok(idle(self))
    }

    // ----- faults --------------------------------------------------------

    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.topology.partition(groups);
        self.trace(|| format!("partition {:?}", groups));
    }

    pub fn heal(&mut self) {
        self.topology.heal();
        self.trace(|| "heal: everyone connected".into());
    }

    /// Lets client `client` reach only `servers`.
    pub fn restrict_client(&mut self, client: usize, servers: Vec<NodeId>) {
        self.topology.restrict_client(client, servers);
    }

    /// Power cut: the server loses everything that had not reached its disk.
    pub fn crash(&mut self, id: NodeId) {
        let s = &mut self.servers[usize::from(id)];
        s.syncing = false;
        let lost = std::mem::take(&mut s.unsynced).len() + std::mem::take(&mut s.leader_writes).drain().len();
        if s.server.take().is_some() {
            self.trace(|| format!("crash server {id} ({lost} batches not yet on disk are lost)"));
        }
    }

    /// Replaces server `id`'s disk with an empty one (crashing it first):
    /// it restarts as a new server that is not a member, and may join again
    /// as a learner. Wiping a voter is the operator's mistake, not a fault
    /// Raft tolerates: it loses its vote and its log.
    pub fn wipe(&mut self, id: NodeId) {
        self.crash(id);
        let s = &mut self.servers[usize::from(id)];
        s.storage = MemStorage::default();
        s.joining = true;
        self.checker.on_wipe(id);
        self.trace(|| format!("wipe server {id}'s disk"));
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.servers[usize::from(id)].server.is_some()
    }

    /// Starts server `id` again from its durable state (no-op if it is up).
    /// A durable state with a gap — a log that starts after what the
    /// snapshot covers — is a failure: what lies between is lost.
    pub fn restart(&mut self, id: NodeId) {
        let (config, seed) = (&self.config, self.config.seed);
        let s = &mut self.servers[usize::from(id)];
        if s.server.is_some() {
            return;
        }
        let covered = s.storage.disk.covered();
        if s.storage.disk.base.index > covered {
            let detail = format!(
                "server {id} restarts with a gap: its log starts after index {}, its snapshot covers up to {covered}",
                s.storage.disk.base.index
            );
            return self.fail(Violation { invariant: Invariant::StateMachineSafety, detail });
        }
        s.incarnation += 1;
        let founders = if s.joining { 0 } else { config.members };
        let mut raft = Config::founded_by(id, founders, seed ^ (u64::from(s.incarnation) << 32));
        raft.election_ticks = config.election_ticks;
        raft.heartbeat_ticks = config.heartbeat_ticks;
        raft.max_batch_entries = config.max_batch_entries;
        raft.bugs = config.bugs;
        raft.snapshot_trailing_entries = config.snapshot_trailing_entries;
        raft.snapshot_chunk_bytes = config.snapshot_chunk_bytes;
        if config.lease_reads {
            raft = raft.with_lease_reads(config.clock_drift_ppm as f64 / 1e6);
        }
        let mut server_config = ServerConfig::new(raft);
        server_config.read_path = config.read_path;
        server_config.snapshots = config.snapshots;
        server_config.max_sessions = config.max_sessions;
        let server = KvServer::restart(server_config, s.storage.durable()).expect("the simulator's snapshots load");
        s.server = Some(server);
        let incarnation = s.incarnation;
        self.checker.on_restart(id, covered);
        let spread = self.config.tick_us * self.config.clock_drift_ppm / 1_000_000;
        if spread > 0 {
            let tick_us = self.config.tick_us - spread + self.choices.range(0, 2 * spread + 1);
            self.servers[usize::from(id)].tick_us = tick_us;
            self.trace(|| format!("server {id}'s clock: a tick lasts {tick_us} µs"));
        }
        let phase = self.choices.range(0, self.config.tick_us);
        self.schedule(phase, Event::Tick { node: id, incarnation });
        if incarnation > 1 {
            self.trace(|| {
                format!(
                    "restart server {id} (term {}, {} entries durable after index {})",
                    self.storage(id).disk.hard.term,
                    self.storage(id).disk.log.len(),
                    self.storage(id).disk.base.index
                )
            });
        }
    }

    // ----- operators -----------------------------------------------------

    /// An operator's request, handed straight to server `to` (which refuses
    /// it unless it leads); its reply is recorded in [`Sim::admin_replies`].
    pub fn admin(&mut self, to: NodeId, op: AdminOp) -> AdminId {
        let id = self.next_admin_id;
        self.next_admin_id += 1;
        self.trace(|| format!("operator asks server {to}: {op:?} (request {id})"));
        self.step_server(to, ServerInput::Admin(AdminRequest { id, op }));
        id
    }

    /// Every reply to an operator's request so far: when, from whom.
    pub fn admin_replies(&self) -> &[(Micros, NodeId, AdminReply)] {
        &self.admin_replies
    }

    /// The reply to operator request `id`, once there is one.
    pub fn admin_reply(&self, id: AdminId) -> Option<&AdminReply> {
        self.admin_replies.iter().map(|(_, _, reply)| reply).find(|reply| reply.id == id)
    }

    /// [`Sim::leader`], once it has committed an entry of its term: then it
    /// takes configuration changes.
    pub fn settled_leader(&self) -> Option<NodeId> {
        self.leader().filter(|&l| self.server(l).is_some_and(|s| s.node().committed_in_term()))
    }

    /// The server that believes it leads in the highest term, if any is up.
    pub fn leader(&self) -> Option<NodeId> {
        (0..self.config.servers)
            .filter_map(|id| self.server(id).filter(|s| s.node().is_leader()).map(|s| (s.node().term(), id)))
            .max()
            .map(|(_, id)| id)
    }

    // ----- clients -------------------------------------------------------

    /// Stops every client from starting new operations (the current one
    /// still runs to completion).
    pub fn stop_clients(&mut self) {
        self.clients.iter_mut().for_each(|c| c.stopped = true);
    }

    /// Lets every client start operations again.
    pub fn resume_clients(&mut self) {
        for client in 0..self.clients.len() {
            self.clients[client].stopped = false;
            if self.clients[client].in_progress.is_none() {
                self.schedule(0, Event::ClientStart { client });
            }
        }
    }

    /// Starts `op` on idle client `client`, outside its workload (e.g. the
    /// final reads of a scenario). Returns the history index of the call.
    pub fn start_op(&mut self, client: usize, op: Op) -> usize {
        assert!(self.clients[client].in_progress.is_none(), "client {client} is busy");
        self.begin(client, op)
    }

    /// The recorded operation at `index`.
    pub fn operation(&self, index: usize) -> &Operation {
        &self.history[index]
    }

    // ----- the event loop ------------------------------------------------

    fn process(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                if self.servers[usize::from(node)].server.is_some()
                    && self.servers[usize::from(node)].incarnation == incarnation
                {
                    self.step_server(node, ServerInput::Tick);
                    let tick_us = self.servers[usize::from(node)].tick_us;
                    self.schedule(tick_us, Event::Tick { node, incarnation });
                }
            }
            Event::DiskSync { node, incarnation } => self.disk_sync(node, incarnation),
            Event::SnapshotWritten { node, incarnation, snapshot } => {
                let s = &mut self.servers[usize::from(node)];
                if s.incarnation == incarnation && s.server.is_some() {
                    s.storage.disk.keep_snapshot(snapshot.clone());
                    if self.config.bugs.trim_before_snapshot_durable {
                        return; // reported already (bug (k))
                    }
                    self.stats.snapshots += 1;
                    self.trace(|| format!("server {node} took a snapshot up to index {}", snapshot.meta.index));
                    self.step_server(node, ServerInput::SnapshotTaken(snapshot));
                }
            }
            Event::DiskReport { node, incarnation, number } => {
                if self.servers[usize::from(node)].incarnation == incarnation {
                    self.step_server(node, ServerInput::Persisted(number));
                }
            }
            Event::Deliver { from, to, packet } => {
                if !self.connected(from, to) {
                    self.stats.messages_dropped += 1;
                    return;
                }
                match (to, packet) {
                    (Addr::Server(id), Packet::Raft(envelope)) => self.step_server(id, ServerInput::Peer(envelope)),
                    (Addr::Server(id), Packet::Request(request)) => self.step_server(id, ServerInput::Client(request)),
                    (Addr::Client(c), Packet::Response(response)) => {
                        let Addr::Server(server) = from else { return };
                        let action = self.clients[c].clerk.on_response(server, response);
                        self.carry_out(c, action);
                    }
                    _ => {}
                }
            }
            Event::ClientTimeout { client, attempt } => {
                let action = self.clients[client].clerk.on_timeout(attempt);
                self.carry_out(client, action);
            }
            Event::ClientStart { client } => {
                let c = &mut self.clients[client];
                if c.stopped || c.in_progress.is_some() {
                    return;
                }
                let Some(op) = c.workload.next_op(c.clerk.client(), &mut c.rng) else { return };
                self.begin(client, op);
            }
        }
    }

    fn begin(&mut self, client: usize, op: Op) -> usize {
        let index = self.history.len();
        let id = u64::try_from(self.clients[client].clerk.client()).expect("simulated client ids are small");
        self.history.push(recorded(id, &op, "", self.now, None));
        self.clients[client].in_progress = Some(index);
        self.trace(|| format!("client {} calls {:?}", client + 1, op));
        let action = self.clients[client].clerk.start(op);
        self.carry_out(client, Some(action));
        index
    }

    fn carry_out(&mut self, client: usize, action: Option<ClerkAction>) {
        match action {
            None => {}
            Some(ClerkAction::Send { to, request, attempt }) => {
                self.send(Addr::Client(client), Addr::Server(to), Packet::Request(request));
                self.schedule(self.config.client_timeout_us, Event::ClientTimeout { client, attempt });
            }
            Some(ClerkAction::Done { output, .. }) => {
                let index = self.clients[client].in_progress.take().expect("done implies an operation in progress");
                let op = &mut self.history[index];
                op.ret = Some(self.now);
                if op.kind.has_output() {
                    op.output = output;
                }
                self.stats.ops_completed += 1;
                self.trace(|| format!("client {} returns {:?}", client + 1, self.history[index].output));
                self.schedule(0, Event::ClientStart { client });
            }
            Some(ClerkAction::Expired { .. }) => {
                // The outcome is unknown: the call stays pending forever
                // (`ret: None`), as if the client gave up on it.
                let index = self.clients[client].in_progress.take().expect("expired implies an operation in progress");
                self.stats.ops_expired += 1;
                self.trace(|| {
                    format!("client {} gives up {:?}: session expired", client + 1, self.history[index].kind)
                });
                self.schedule(0, Event::ClientStart { client });
            }
            Some(ClerkAction::Stale { seq, latest }) => {
                // Simulated clients have distinct ids and send their seqs in
                // order, so their session can never be ahead of them.
                panic!("client {} was told its seq {seq} is stale (its session is at {latest})", client + 1)
            }
        }
    }

    fn step_server(&mut self, id: NodeId, input: ServerInput) {
        let Sim { servers, checker, .. } = self;
        let s = &mut servers[usize::from(id)];
        let Some(server) = s.server.as_mut() else { return };
        let (role_before, term_before) = (server.node().role(), server.node().term());
        let commit_before = server.node().commit_index();
        let led = (role_before == Role::Leader).then_some(term_before);
        let leased_before = server.node().reads_by_lease();
        let ticked = matches!(input, ServerInput::Tick);
        let out: ServerOutput = server.step(input);
        let node = server.node();
        let leased = node.reads_by_lease() - leased_before;
        self.stats.reads_by_lease += leased;
        let (role, term, commit) = (node.role(), node.term(), node.commit_index());
        let mut result = Ok(());
        if leased > 0 {
            result = checker.on_lease_read(id, term);
        }
        if let Some(meta) = out.installed {
            result = checker.on_install(id, meta.index);
            self.stats.installs += 1;
        }
        let job = out.snapshot;
        let mut batches = Vec::new();
        if let Some(batch) = out.persist {
            if let Some(s) = &batch.snapshot {
                checker.on_install_batch(id, s.meta.index);
            }
            if let (Some(w), true) = (&batch.log, result.is_ok()) {
                // The in-memory log changed now; the disk catches up later.
                let term_now = batch.hard_state.map_or(term_before, |h| h.term);
                result = checker.on_log_write(id, w, led, term_now);
            }
            batches.push(batch);
        }
        s.appends_to.clear();
        s.appends_to.extend(pacing::appends_with_entries(&out.messages));
        let release = s.leader_writes.pass(Pass::after(node, ticked, &s.appends_to, batches));
        s.unsynced.extend(release);
        let sync_needed = !s.unsynced.is_empty() && !s.syncing;
        if result.is_ok() && role == Role::Leader && led != Some(term) {
            result = checker.on_elected(id, term);
            self.stats.elections += 1;
        }
        if result.is_ok() && commit != commit_before {
            result = checker.on_commit(id, term, commit);
        }
        if result.is_ok() {
            result = checker.on_applied(id, &out.applied);
        }
        if role != role_before || term != term_before {
            self.trace(|| format!("server {id}: {role_before:?} of term {term_before} -> {role:?} of term {term}"));
        }
        if role == Role::Leader && commit > commit_before {
            self.trace(|| format!("server {id} (leader, term {term}) commits up to index {commit}"));
        }
        if let Err(violation) = result {
            self.fail(violation);
            return;
        }
        if let Some(job) = job {
            self.snapshot_job(id, job);
        }
        if sync_needed {
            let s = &mut self.servers[usize::from(id)];
            s.syncing = true;
            let incarnation = s.incarnation;
            let delay = self.choices.range(self.config.disk_us.0, self.config.disk_us.1 + 1);
            self.schedule(delay, Event::DiskSync { node: id, incarnation });
        }
        for envelope in out.messages {
            let to = envelope.to;
            self.send(Addr::Server(id), Addr::Server(to), Packet::Raft(envelope));
        }
        for response in out.responses {
            let client = (response.client - 1) as usize;
            self.send(Addr::Server(id), Addr::Client(client), Packet::Response(response));
        }
        for reply in out.admin_replies {
            self.trace(|| format!("server {id} answers operator request {}: {:?}", reply.id, reply.result));
            self.admin_replies.push((self.now, id, reply));
        }
    }

    /// Takes a snapshot for server `id`: encodes it now (the simulator has
    /// no other thread) and writes it after a disk delay.
    fn snapshot_job(&mut self, id: NodeId, job: SnapshotJob) {
        let snapshot = job.encode();
        let incarnation = self.servers[usize::from(id)].incarnation;
        let delay = self.choices.range(self.config.disk_us.0, self.config.disk_us.1 + 1);
        if self.config.bugs.trim_before_snapshot_durable {
            // Bug (k): reported now, written later (a large snapshot takes a
            // while); the node compacts at once.
            let slow = self.choices.range(10 * delay, 500 * delay + 1);
            self.schedule(slow, Event::SnapshotWritten { node: id, incarnation, snapshot: snapshot.clone() });
            self.stats.snapshots += 1;
            return self.step_server(id, ServerInput::SnapshotTaken(snapshot));
        }
        self.schedule(delay, Event::SnapshotWritten { node: id, incarnation, snapshot });
    }

    /// One fsync of server `id` completes: every batch queued so far reaches
    /// the disk in order (one write, as a runtime's group commit does), and
    /// the report that they are durable is on its way to the node.
    fn disk_sync(&mut self, id: NodeId, incarnation: u32) {
        let s = &mut self.servers[usize::from(id)];
        if s.incarnation != incarnation || s.server.is_none() {
            return;
        }
        s.syncing = false;
        let Some(last) = s.unsynced.last().map(|b| b.number) else { return };
        for batch in std::mem::take(&mut s.unsynced) {
            if let Some(snapshot) = &batch.snapshot {
                self.checker.on_durable_install(id, snapshot.meta.index);
            }
            if let Some(to) = batch.compact {
                self.checker.on_durable_compact(id, to.index);
            }
            if let Some(w) = &batch.log {
                self.checker.on_durable_write(id, w);
            }
            s.storage.write(&batch);
        }
        s.storage.writes += 1;
        let delay = self.choices.range(0, self.config.disk_report_us + 1);
        self.schedule(delay, Event::DiskReport { node: id, incarnation, number: last });
    }

    fn fail(&mut self, violation: Violation) {
        let failure = Failure { seed: self.config.seed, step: self.stats.steps, time_us: self.now, violation };
        self.trace(|| format!("SAFETY VIOLATION: {failure}"));
        self.failure = Some(failure);
    }

    // ----- the network ---------------------------------------------------

    fn connected(&self, a: Addr, b: Addr) -> bool {
        match (a, b) {
            (Addr::Server(x), Addr::Server(y)) => self.topology.servers_connected(x, y),
            (Addr::Client(c), Addr::Server(s)) | (Addr::Server(s), Addr::Client(c)) => {
                self.topology.client_connected(c, s)
            }
            (Addr::Client(_), Addr::Client(_)) => false,
        }
    }

    /// Hands a message to the network: checked for connectivity now and
    /// again on delivery, possibly dropped, delayed, held back or doubled.
    fn send(&mut self, from: Addr, to: Addr, packet: Packet) {
        self.stats.messages_sent += 1;
        let net = &self.config.network;
        if !self.connected(from, to) || self.choices.chance(net.drop_percent, 100) {
            self.stats.messages_dropped += 1;
            return;
        }
        let copies = if self.choices.chance(net.duplicate_percent, 100) { 2 } else { 1 };
        let is_reply = matches!(&packet, Packet::Response(_))
            || matches!(&packet, Packet::Raft(e) if e.message.kind().ends_with("Reply"));
        for _ in 0..copies {
            let net = &self.config.network;
            let mut delay = self.choices.range(net.min_delay_us, net.max_delay_us);
            if is_reply && self.choices.chance(net.long_delay_percent, 100) {
                let long = net.long_delay_us;
                delay += self.choices.range(long, 2 * long + 1);
            }
            self.schedule(delay, Event::Deliver { from, to, packet: packet.clone() });
        }
    }

    fn schedule(&mut self, delay: Micros, event: Event) {
        self.next_seq += 1;
        self.queue.push(Reverse(Scheduled { at: self.now + delay, seq: self.next_seq, event }));
    }

    fn trace(&self, line: impl FnOnce() -> String) {
        if let Some(sink) = &self.config.trace {
            (sink.0)(&format!("{:>9.3} ms  {}", self.now as f64 / 1000.0, line()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvMachine;

    /// Under load, a leader's batches wait for its pacer's AppendEntries
    /// ([`pacing`]), so it writes about once per round trip, as each
    /// follower does, and not once per burst of proposals (about twice, a
    /// burst per follower's acknowledgement, without the pacing). Counted
    /// in simulated fsyncs on a reliable network, 16 clients, 2 s.
    #[test]
    fn under_load_a_leader_writes_no_more_often_than_its_followers() {
        for seed in 1..=3 {
            let mut sim = Sim::new(SimConfig::new(seed, 3));
            for _ in 0..16 {
                sim.add_client(Workload::random_keys(100));
            }
            sim.run_for(2_000_000).unwrap_or_else(|f| panic!("seed {seed}: {f}"));
            let leader = sim.leader().unwrap_or_else(|| panic!("seed {seed}: no leader"));
            let writes: Vec<u64> = (0..3).map(|id| sim.storage(id).writes).collect();
            let followers = (0..3).filter(|&id| id != leader).map(|id| writes[usize::from(id)]);
            let most = followers.max().expect("two followers");
            let ops = sim.history().ops.len();
            assert!(ops > 1_000, "seed {seed}: only {ops} operations: not a load");
            assert!(
                writes[usize::from(leader)] * 10 <= most * 11,
                "seed {seed}: leader {leader} made {} fsyncs, its followers at most {most} ({writes:?}, {ops} operations)",
                writes[usize::from(leader)],
            );
            println!("seed {seed}: fsyncs per server {writes:?} (leader {leader}), {ops} operations");
        }
    }

    /// The service's state machine and the checker's sequential spec
    /// ([`Operation::step`]) are two implementations of one set of rules;
    /// on random operations over few keys and tiny values (so that keys are
    /// often empty, missing or `""`), they must give the same replies.
    #[test]
    fn state_machine_agrees_with_the_checkers_spec() {
        let mut rng = Rng::new(0x5EC);
        let mut machine = KvMachine::new();
        let mut spec: std::collections::BTreeMap<String, String> = Default::default();
        for index in 1..=20_000u64 {
            let key = format!("k{}", rng.range(0, 3));
            let value = ["", "a", "b"][rng.range(0, 3) as usize].to_owned();
            let op = match rng.range(0, 5) {
                0 => Op::Get { key },
                1 => Op::Put { key, value },
                2 => Op::Append { key, value },
                3 => Op::Delete { key },
                _ => Op::PutIfAbsent { key, value },
            };
            let reply = machine.apply(index, &Command { client: 1, seq: index, op: op.clone() }).reply;
            let call = recorded(1, &op, "", index, Some(index));
            let before = spec.entry(op.key().to_owned()).or_default();
            let (after, output) = call.step(before);
            *before = after;
            assert_eq!(reply, output, "{op} at step {index}");
            assert_eq!(machine.get(op.key()), spec[op.key()], "{op} at step {index}");
        }
    }
}
