//! [`KvServer`]: one replica of the key/value service, as a pure state
//! machine. It owns a Raft node and a [`KvMachine`], turns client requests
//! into proposals or ReadIndex reads, applies what Raft commits, and answers
//! each request only once its effect is committed and applied.

use super::admin::{AdminDone, AdminError, AdminId, AdminOp, AdminReply, AdminRequest};
use super::directory;
use super::snapshot::{self, SnapshotError};
use super::{ClientId, Command, KvMachine, Op, Request, Response, ServiceError};
use crate::raft::{
    BatchNumber, CommandBytes, Config, DurableState, Entry, Envelope, Fixed, Input, LogIndex, Membership, NodeId,
    Payload, Persist, RaftNode, ReadId, Ready, Refusal, Snapshot, SnapshotMeta, Term,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a `Get` is made linearizable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadPath {
    /// ReadIndex (thesis §6.4): no log entry; the leader confirms its
    /// leadership with a quorum, then serves once it has applied the read
    /// index.
    #[default]
    ReadIndex,
    /// Append the Get to the log like a write and answer when applied.
    Log,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerConfig {
    pub raft: Config,
    pub read_path: ReadPath,
    /// At most this many requests wait for commit or read confirmation;
    /// more are answered `Busy`.
    pub max_waiting: usize,
    /// When to snapshot the state machine (and so let Raft compact its log).
    pub snapshots: SnapshotPolicy,
    /// The session table's bound ([`MAX_SESSIONS`](super::MAX_SESSIONS)).
    /// Part of the state machine: every replica of a cluster must use the
    /// same value.
    pub max_sessions: usize,
}

/// Take a snapshot once this many entries, or this many bytes of commands
/// (keys, values and about 16 bytes per entry), were applied since the last
/// one (whichever comes first); `None` for never (the log then grows
/// without bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotPolicy {
    pub every_entries: Option<u64>,
    pub every_bytes: Option<u64>,
}

impl SnapshotPolicy {
    /// Never snapshot.
    pub const NEVER: SnapshotPolicy = SnapshotPolicy { every_entries: None, every_bytes: None };
}

impl Default for SnapshotPolicy {
    /// Near etcd's 10,000 entries, and 64 MiB of commands.
    fn default() -> SnapshotPolicy {
        SnapshotPolicy { every_entries: Some(10_000), every_bytes: Some(64 << 20) }
    }
}

impl ServerConfig {
    pub fn new(raft: Config) -> ServerConfig {
        ServerConfig {
            raft,
            read_path: ReadPath::ReadIndex,
            max_waiting: 4096,
            snapshots: SnapshotPolicy::default(),
            max_sessions: super::MAX_SESSIONS,
        }
    }
}

/// Everything that can happen to a replica.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerInput {
    Tick,
    Peer(Envelope<Command>),
    Client(Request),
    /// Every batch up to this number is durable ([`Input::Persisted`]).
    Persisted(BatchNumber),
    /// The snapshot a [`SnapshotJob`] asked for is written and durable.
    SnapshotTaken(Snapshot),
    /// An operator's request: a membership change or a leadership
    /// transfer.
    Admin(AdminRequest),
}

/// A snapshot to take: the state machine as it stood after applying
/// `meta.index`. The runtime encodes it ([`snapshot::encode`], off the
/// node's path: it may be large), makes it durable, and reports
/// [`ServerInput::SnapshotTaken`]. At most one is outstanding. `machine`
/// is a copy that shares its maps with the live one (O(1) to make; see
/// [`KvMachine`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotJob {
    pub meta: SnapshotMeta,
    /// The cluster's configuration as of `meta.index`.
    pub membership: Membership,
    pub machine: KvMachine,
    /// Injected bug (g): leave the session table out.
    pub omit_sessions: bool,
}

impl SnapshotJob {
    /// The snapshot's bytes.
    pub fn encode(&self) -> Snapshot {
        let data = snapshot::encode(&self.machine, self.omit_sessions).into();
        Snapshot { meta: self.meta, membership: self.membership, data }
    }
}

/// What a replica asks its runtime to do after one step, under the Raft
/// node's persistence contract ([`crate::raft::ready`]): `persist` is made
/// durable after every earlier batch and then reported with
/// [`ServerInput::Persisted`]; everything else is carried out at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[must_use]
pub struct ServerOutput {
    /// A batch of Raft state to make durable, then report.
    pub persist: Option<Persist<Command>>,
    /// A snapshot to take.
    pub snapshot: Option<SnapshotJob>,
    /// A snapshot received from the leader that does not load: refused,
    /// with why (the runtime logs it; the leader will send it again).
    pub refused_snapshot: Option<(SnapshotMeta, SnapshotError)>,
    pub messages: Vec<Envelope<Command>>,
    pub responses: Vec<Response>,
    /// Replies to operators' requests.
    pub admin_replies: Vec<AdminReply>,
    /// Every log entry applied in this step, for checkers.
    pub applied: Vec<AppliedEntry>,
    /// The state machine was replaced by an installed snapshot covering up
    /// to here (before `applied`), for checkers.
    pub installed: Option<SnapshotMeta>,
}

/// A record of one applied entry, for the simulator's safety checks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppliedEntry {
    pub index: LogIndex,
    pub entry: Entry<Command>,
    /// False for a no-op, or a duplicate answered from the session table.
    pub executed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Waiter {
    client: ClientId,
    seq: u64,
}

/// An operator waiting for a configuration entry to commit and apply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ChangeWaiter {
    id: AdminId,
    /// The leader term it was proposed in.
    term: Term,
    /// The configuration the entry holds.
    membership: Membership,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KvServer {
    config: Fixed<ServerConfig>,
    node: RaftNode<Command>,
    kv: KvMachine,
    /// Proposed writes (and logged Gets) by log index, with the leader term
    /// they were proposed in.
    waiting_writes: BTreeMap<LogIndex, (Waiter, Term)>,
    /// Proposed membership changes by log index (at most one, unless bug
    /// (n) is on).
    waiting_changes: BTreeMap<LogIndex, ChangeWaiter>,
    /// Operators waiting for a learner to catch up and its promotion to
    /// be proposed, by learner, with the leader term they asked in (one per
    /// learner: a second is refused).
    waiting_promotions: BTreeMap<NodeId, (AdminId, Term)>,
    /// Reads waiting for the leader to confirm them.
    waiting_reads: BTreeMap<ReadId, (Waiter, String)>,
    /// Confirmed reads waiting for the machine to apply their read index.
    confirmed_reads: Vec<(LogIndex, Waiter, String)>,
    next_read_id: ReadId,
    /// The index of the latest snapshot (taken or installed), and what was
    /// applied since: the policy's counters.
    snapshot_index: LogIndex,
    bytes_since_snapshot: u64,
    /// A snapshot job is out.
    snapshotting: bool,
    /// A received snapshot that loaded, waiting for its install to be
    /// durable (so it is decoded once).
    loaded: Option<(SnapshotMeta, KvMachine)>,
}

impl KvServer {
    /// A replica starting from its durable state (empty when new): the
    /// state machine from the snapshot, if any, then the log re-applied as
    /// it commits. Fails if the snapshot does not load (corrupt on disk).
    pub fn restart(config: ServerConfig, durable: DurableState<Command>) -> Result<KvServer, SnapshotError> {
        let (kv, snapshot_index) = match &durable.snapshot {
            Some(s) => (configured(&config, load(s, config.raft.max_snapshot_bytes)?), s.meta.index),
            None => (configured(&config, KvMachine::new()), 0),
        };
        let node = RaftNode::restart(config.raft.clone(), durable);
        Ok(KvServer {
            config: Fixed(config),
            node,
            kv,
            waiting_writes: BTreeMap::new(),
            waiting_changes: BTreeMap::new(),
            waiting_promotions: BTreeMap::new(),
            waiting_reads: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            next_read_id: 0,
            snapshot_index,
            bytes_since_snapshot: 0,
            snapshotting: false,
            loaded: None,
        })
    }

    /// The same replica in a cluster whose servers are numbered
    /// differently (see [`RaftNode::renumbered`]); its waiting clients are
    /// not servers and keep their ids.
    pub fn renumbered(&self, new_id: impl Fn(NodeId) -> NodeId) -> KvServer {
        let mut server = self.clone();
        server.config.raft.id = new_id(self.config.raft.id);
        server.node = self.node.renumbered(new_id);
        server
    }

    pub fn node(&self) -> &RaftNode<Command> {
        &self.node
    }

    pub fn kv(&self) -> &KvMachine {
        &self.kv
    }

    /// The replicated address book as this replica knows it: what its
    /// machine applied, then what its log holds past that
    /// ([`directory::read_with_log`]).
    pub fn directory(&self) -> directory::Directory {
        let log = self.node.log();
        let unapplied = (self.kv.applied_index() + 1).saturating_sub(log.first_index());
        directory::read_with_log(&self.kv, log.entries().iter().skip(unapplied as usize))
    }

    /// Requests accepted but not answered yet.
    pub fn waiting(&self) -> usize {
        self.waiting_writes.len()
            + self.waiting_changes.len()
            + self.waiting_promotions.len()
            + self.waiting_reads.len()
            + self.confirmed_reads.len()
    }

    /// Whether a request of `client` is accepted here and not answered yet:
    /// an answer to it may still leave this server (a model checker's
    /// reduction needs to know that nothing else will).
    pub fn waits_for(&self, client: ClientId) -> bool {
        self.waiting_writes.values().any(|(waiter, _)| waiter.client == client)
            || self.waiting_reads.values().any(|(waiter, _)| waiter.client == client)
            || self.confirmed_reads.iter().any(|(_, waiter, _)| waiter.client == client)
    }

    /// Feeds one input; the output is carried out under the contract of
    /// [`ServerOutput`]. Every response in it is for an effect that is
    /// committed (durable on a quorum) and applied (or a refusal).
    pub fn step(&mut self, input: ServerInput) -> ServerOutput {
        let mut out = ServerOutput::default();
        let ready = match input {
            ServerInput::Tick => Some(self.node.step(Input::Tick)),
            ServerInput::Peer(envelope) => Some(self.node.step(Input::Message(envelope))),
            ServerInput::Client(request) => self.accept(request, &mut out),
            ServerInput::Persisted(number) => Some(self.node.step(Input::Persisted(number))),
            ServerInput::SnapshotTaken(snapshot) => {
                self.snapshotting = false;
                self.snapshot_index = self.snapshot_index.max(snapshot.meta.index);
                Some(self.node.step(Input::SnapshotTaken(snapshot)))
            }
            ServerInput::Admin(request) => self.admin(request, &mut out),
        };
        if let Some(ready) = ready {
            self.carry_out(ready, &mut out);
        }
        self.fail_orphaned_waiters(&mut out);
        self.maybe_snapshot(&mut out);
        self.check_invariants(&out);
        out
    }

    /// Carries out one Ready of the node (and, if it received a snapshot
    /// that loads, the Ready of installing it).
    fn carry_out(&mut self, ready: Ready<Command>, out: &mut ServerOutput) {
        debug_assert!(out.persist.is_none() || ready.persist.is_none(), "one batch per step");
        out.persist = out.persist.take().or(ready.persist);
        out.messages.extend(ready.messages);
        for (id, result) in ready.reads {
            self.on_read_outcome(id, result, out);
        }
        for (learner, result) in ready.promotions {
            self.on_promotion(learner, result, out);
        }
        if let Some(snapshot) = ready.install {
            self.install(snapshot, out);
        }
        for (index, entry) in ready.committed {
            self.apply(index, entry, out);
        }
        self.serve_confirmed_reads(out);
        if let Some(snapshot) = ready.received_snapshot {
            match load(&snapshot, self.config.raft.max_snapshot_bytes) {
                Ok(machine) => {
                    self.loaded = Some((snapshot.meta, machine));
                    let ready = self.node.step(Input::InstallSnapshot(snapshot));
                    self.carry_out(ready, out);
                }
                Err(e) => out.refused_snapshot = Some((snapshot.meta, e)),
            }
        }
    }

    /// The node's installed snapshot is durable: the state machine becomes
    /// it. Nothing waits on the entries it covers (only a leader has
    /// waiters, and a leader installs no snapshot), but for a change that
    /// removed its leader: committed, so in force.
    fn install(&mut self, snapshot: Snapshot, out: &mut ServerOutput) {
        let machine = match self.loaded.take() {
            Some((meta, machine)) if meta == snapshot.meta => machine,
            // Loaded once already, so it loads.
            _ => load(&snapshot, u64::MAX).expect("an installed snapshot was checked when received"),
        };
        debug_assert!(self.waiting_writes.is_empty() && self.confirmed_reads.is_empty(), "a follower has no waiters");
        let later = self.waiting_changes.split_off(&(snapshot.meta.index + 1));
        for (index, waiter) in std::mem::replace(&mut self.waiting_changes, later) {
            let done = AdminDone::Changed { index, membership: waiter.membership };
            out.admin_replies.push(AdminReply { id: waiter.id, result: Ok(done) });
        }
        self.kv = configured(&self.config, machine);
        self.snapshot_index = snapshot.meta.index;
        self.bytes_since_snapshot = 0;
        out.installed = Some(snapshot.meta);
    }

    /// Asks for a snapshot when the policy says so.
    fn maybe_snapshot(&mut self, out: &mut ServerOutput) {
        let applied = self.kv.applied_index();
        let SnapshotPolicy { every_entries, every_bytes } = self.config.snapshots;
        let due = every_entries.is_some_and(|n| applied >= self.snapshot_index + n)
            || every_bytes.is_some_and(|n| self.bytes_since_snapshot >= n);
        if !due || self.snapshotting || applied <= self.snapshot_index {
            return;
        }
        // An applied entry is held, or is the base (unless bug (j) compacted
        // past it: then no snapshot can say what it covers).
        let Some(term) = self.node.log().term_at(applied) else { return };
        self.snapshotting = true;
        self.bytes_since_snapshot = 0;
        out.snapshot = Some(SnapshotJob {
            meta: SnapshotMeta { index: applied, term },
            membership: self.node.membership_at(applied).1,
            machine: self.kv.clone(),
            omit_sessions: self.config.raft.bugs.snapshot_without_sessions,
        });
    }

    /// What holds after every step (debug and test builds: the node's
    /// own checks run in every build).
    fn check_invariants(&self, out: &ServerOutput) {
        if !cfg!(debug_assertions) {
            return;
        }
        let applied = self.kv.applied_index();
        assert!(applied <= self.node.commit_index(), "applied an uncommitted entry");
        assert!(self.waiting() <= self.config.max_waiting, "more requests waiting than max_waiting");
        assert!(self.node.is_leader() || self.waiting_reads.is_empty(), "a non-leader holds unconfirmed reads");
        assert!(
            self.waiting_writes.is_empty() || self.node.is_leader(),
            "a non-leader still holds proposals (they are failed when it loses the term)"
        );
        assert!(self.waiting_writes.keys().all(|&index| index > applied), "a waiter for an applied entry");
        assert!(self.waiting_writes.values().all(|(_, term)| *term == self.node.term()), "a waiter from another term");
        assert!(
            self.waiting_changes.iter().all(|(&index, w)| index > applied
                && ((self.node.is_leader() && w.term == self.node.term())
                    || committed_here(&self.node, index, w.term))),
            "a change waiter for an applied entry, or one that can no longer be answered"
        );
        assert!(
            self.waiting_promotions.values().all(|(_, term)| self.node.is_leader() && *term == self.node.term()),
            "a promotion waiter from another term"
        );
        assert!(self.confirmed_reads.iter().all(|(index, ..)| *index > applied), "a servable read left waiting");
        assert!(
            self.confirmed_reads.iter().all(|(index, ..)| *index <= self.node.commit_index()),
            "a read confirmed beyond the commit index"
        );
        let mut indexes: Vec<LogIndex> = out.applied.iter().map(|a| a.index).collect();
        indexes.dedup();
        assert!(indexes.windows(2).all(|w| w[1] == w[0] + 1), "entries applied out of order");
        assert!(out.applied.last().is_none_or(|a| a.index == applied), "the last entry applied is the applied index");
    }

    fn accept(&mut self, request: Request, out: &mut ServerOutput) -> Option<Ready<Command>> {
        let waiter = Waiter { client: request.client, seq: request.seq };
        if self.waiting() >= self.config.max_waiting {
            respond(out, &waiter, Err(ServiceError::Busy));
            return None;
        }
        match request.op {
            Op::Get { key } if self.config.read_path == ReadPath::ReadIndex => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                self.waiting_reads.insert(id, (waiter, key));
                Some(self.node.step(Input::Read(id)))
            }
            _ => {
                let ready = self.node.step(Input::Propose(request));
                match ready.proposed {
                    Some(Ok(index)) => {
                        let displaced = self.waiting_writes.insert(index, (waiter, self.node.term()));
                        debug_assert!(displaced.is_none(), "a leader proposes each index once");
                    }
                    Some(Err(refusal)) => respond(out, &waiter, Err(refusal.into())),
                    None => unreachable!("a proposal always gets an outcome"),
                }
                Some(ready)
            }
        }
    }

    /// An operator's request: a change waits for its entry to commit and
    /// apply; a transfer is answered once started.
    fn admin(&mut self, request: AdminRequest, out: &mut ServerOutput) -> Option<Ready<Command>> {
        let reply = |result| AdminReply { id: request.id, result };
        if self.waiting() >= self.config.max_waiting {
            out.admin_replies.push(reply(Err(AdminError::Refused(Refusal::Busy))));
            return None;
        }
        // A hand-over is a transfer to the best-placed voter (or, when not
        // leading, one the node refuses as such).
        let op = match request.op {
            AdminOp::HandOver => match (self.node.successor(), self.node.is_leader()) {
                (Some(to), _) => AdminOp::TransferLeadership(to),
                (None, true) => {
                    out.admin_replies.push(reply(Err(AdminError::NoSuccessor)));
                    return None;
                }
                (None, false) => AdminOp::TransferLeadership(self.node.id()),
            },
            AdminOp::PromoteWhenCaughtUp(id) if self.waiting_promotions.contains_key(&id) => {
                out.admin_replies.push(reply(Err(AdminError::Refused(Refusal::CatchingUp { id }))));
                return None;
            }
            op => op,
        };
        let ready = self.node.step(match op {
            AdminOp::Change(change) => Input::ChangeMembership(change),
            AdminOp::TransferLeadership(to) => Input::TransferLeadership(to),
            AdminOp::PromoteWhenCaughtUp(id) => Input::PromoteWhenCaughtUp(id),
            AdminOp::HandOver => unreachable!("resolved above"),
        });
        match (ready.proposed, op) {
            (Some(Ok(index)), AdminOp::Change(_)) => self.wait_for_change(index, request.id),
            (Some(Ok(_)), AdminOp::PromoteWhenCaughtUp(id)) => {
                self.waiting_promotions.insert(id, (request.id, self.node.term()));
            }
            (Some(Ok(_)), AdminOp::TransferLeadership(to)) => {
                out.admin_replies.push(reply(Ok(AdminDone::TransferStarted { to })));
            }
            (Some(Err(refusal)), _) => out.admin_replies.push(reply(Err(AdminError::Refused(refusal)))),
            (Some(Ok(_)), AdminOp::HandOver) | (None, _) => {
                unreachable!("a change or transfer always gets an outcome")
            }
        }
        Some(ready)
    }

    /// Operator `id` waits for the configuration entry this leader just
    /// proposed at `index` (its configuration now) to commit and apply.
    fn wait_for_change(&mut self, index: LogIndex, id: AdminId) {
        let waiter = ChangeWaiter { id, term: self.node.term(), membership: *self.node.membership() };
        let displaced = self.waiting_changes.insert(index, waiter);
        debug_assert!(displaced.is_none(), "a leader proposes each index once");
    }

    /// A learner caught up and its promotion was proposed (its operators
    /// now wait for that entry), or the catch-up was given up.
    fn on_promotion(&mut self, learner: NodeId, result: Result<LogIndex, Refusal>, out: &mut ServerOutput) {
        let Some((id, _)) = self.waiting_promotions.remove(&learner) else { return };
        match result {
            Ok(index) => self.wait_for_change(index, id),
            Err(refusal) => out.admin_replies.push(AdminReply { id, result: Err(AdminError::Refused(refusal)) }),
        }
    }

    fn on_read_outcome(&mut self, id: ReadId, result: Result<LogIndex, Refusal>, out: &mut ServerOutput) {
        let Some((waiter, key)) = self.waiting_reads.remove(&id) else { return };
        match result {
            Ok(index) => self.confirmed_reads.push((index, waiter, key)),
            Err(refusal) => respond(out, &waiter, Err(refusal.into())),
        }
    }

    fn apply(&mut self, index: LogIndex, entry: Entry<Command>, out: &mut ServerOutput) {
        let waiter = self.waiting_writes.remove(&index);
        if let Some(ChangeWaiter { id, term, .. }) = self.waiting_changes.remove(&index) {
            let result = match &entry.payload {
                Payload::Config(membership) if entry.term == term => {
                    Ok(AdminDone::Changed { index, membership: *membership })
                }
                // A newer leader's entry took the slot: ours never applies.
                _ => Err(AdminError::Refused(Refusal::NotLeader { leader: self.node.leader() })),
            };
            out.admin_replies.push(AdminReply { id, result });
        }
        if let Payload::Command(c) = &entry.payload {
            // What the byte bound of the snapshot policy counts.
            self.bytes_since_snapshot += c.bytes();
        }
        let executed = match &entry.payload {
            // A configuration is the Raft node's business; the state machine
            // only counts its index.
            Payload::Noop | Payload::Config(_) => {
                self.kv.apply_noop(index);
                if let Some((w, _)) = waiter {
                    respond(out, &w, Err(self.not_leader()));
                }
                false
            }
            Payload::Command(command) => {
                let applied = self.kv.apply(index, command);
                if let Some((w, _)) = waiter {
                    // Another command in our slot means our proposal was
                    // overwritten by a newer leader: the client must retry.
                    let ours = w.client == command.client && w.seq == command.seq;
                    let result = match applied.refused {
                        _ if !ours => Err(self.not_leader()),
                        Some(refused) => Err(refused),
                        None => Ok(applied.reply.clone()),
                    };
                    respond(out, &w, result);
                }
                applied.executed
            }
        };
        out.applied.push(AppliedEntry { index, entry, executed });
    }

    fn serve_confirmed_reads(&mut self, out: &mut ServerOutput) {
        let applied = self.kv.applied_index();
        let kv = &self.kv;
        self.confirmed_reads.retain(|(index, waiter, key)| {
            if *index > applied {
                return true;
            }
            respond(out, waiter, Ok(kv.get(key)));
            false
        });
    }

    /// Writes proposed by a leader that has since lost its term can no longer
    /// be answered by us: tell their clients to retry elsewhere (the session
    /// table makes the retry safe if the write commits after all). The same
    /// for operators: a promotion not yet proposed is refused, a change not
    /// known committed has an unknown outcome.
    fn fail_orphaned_waiters(&mut self, out: &mut ServerOutput) {
        if self.waiting_writes.is_empty() && self.waiting_changes.is_empty() && self.waiting_promotions.is_empty() {
            return;
        }
        let (leading, term) = (self.node.is_leader(), self.node.term());
        let leader = self.node.leader();
        let node = &self.node;
        self.waiting_promotions.retain(|_, (id, asked_in)| {
            let alive = leading && *asked_in == term;
            if !alive {
                let result = Err(AdminError::Refused(Refusal::NotLeader { leader }));
                out.admin_replies.push(AdminReply { id: *id, result });
            }
            alive
        });
        self.waiting_changes.retain(|&index, waiter| {
            // A leader that removed itself steps down as its change commits,
            // possibly before applying it: committed, it will be applied.
            let alive = (leading && waiter.term == term) || committed_here(node, index, waiter.term);
            if !alive {
                let result = Err(AdminError::OutcomeUnknown { leader });
                out.admin_replies.push(AdminReply { id: waiter.id, result });
            }
            alive
        });
        let error = self.not_leader();
        self.waiting_writes.retain(|_, (waiter, proposed_in)| {
            let alive = leading && *proposed_in == term;
            if !alive {
                respond(out, waiter, Err(error));
            }
            alive
        });
    }

    fn not_leader(&self) -> ServiceError {
        ServiceError::NotLeader { leader: self.node.leader() }
    }
}

/// The entry at `index`, of term `term`, is committed and held here.
fn committed_here(node: &RaftNode<Command>, index: LogIndex, term: Term) -> bool {
    index <= node.commit_index() && node.log().term_at(index) == Some(term)
}

/// The machine a snapshot holds, checked against what it says it covers.
fn load(snapshot: &Snapshot, max_bytes: u64) -> Result<KvMachine, SnapshotError> {
    let machine = snapshot::decode(&snapshot.data, max_bytes)?;
    if machine.applied_index() != snapshot.meta.index {
        let why = format!("it holds index {}, but says it covers {}", machine.applied_index(), snapshot.meta.index);
        return Err(SnapshotError::Malformed(why));
    }
    Ok(machine)
}

fn respond(out: &mut ServerOutput, waiter: &Waiter, result: Result<String, ServiceError>) {
    out.responses.push(Response { client: waiter.client, seq: waiter.seq, result });
}

impl From<Refusal> for ServiceError {
    fn from(refusal: Refusal) -> ServiceError {
        match refusal {
            Refusal::NotLeader { leader } => ServiceError::NotLeader { leader },
            // Only a configuration change is refused these ways, and a
            // retry later may succeed.
            Refusal::Busy | Refusal::NoCommitInTerm | Refusal::ChangePending { .. } | Refusal::Transferring { .. } => {
                ServiceError::Busy
            }
            Refusal::BadChange(_)
            | Refusal::NotAVoter(_)
            | Refusal::CatchingUp { .. }
            | Refusal::NotCaughtUp { .. } => {
                unreachable!("a client request was refused as an operator's ({refusal})")
            }
        }
    }
}

/// `machine` with this replica's session bound and injected session bugs.
fn configured(config: &ServerConfig, machine: KvMachine) -> KvMachine {
    let bugs = &config.raft.bugs;
    machine
        .with_max_sessions(config.max_sessions)
        .with_session_bug(bugs.skip_session_table)
        .with_forgotten_bug(bugs.ignore_forgotten_sessions)
}
