//! The actors: each server wraps the production [`KvServer`] (and so the
//! real Raft node and KV state machine); each client wraps the production
//! [`Clerk`] with a short script of operations.

use raftkv::clerk::{Clerk, ClerkAction};
use raftkv::kv::{AdminOp, AdminRequest, Command, KvServer, Op, Response, ServerConfig, ServerInput, SnapshotJob};
use raftkv::raft::{
    DurableState, Entry, Envelope, LogIndex, Membership, MembershipChange, NodeId, Persist, Role, Snapshot,
};
use stateright::actor::{model_timeout, Actor, Id, Out};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Once};

/// Everything that travels between actors.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelMsg {
    Raft(Envelope<Command>),
    Request(Command),
    Response(Response),
}

/// One short line, as the Explorer lists actions and the counterexamples
/// print them: `0->1 PreVote t=1 last=0/0` (the interaction scripts' text
/// for Raft messages), `request c1#1 Append("k", "1")`, `response c1#1
/// Ok("")`.
impl std::fmt::Debug for ModelMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelMsg::Raft(envelope) => write!(f, "{envelope}"),
            ModelMsg::Request(command) => write!(f, "request {command}"),
            ModelMsg::Response(r) => write!(f, "response c{}#{} {:?}", r.client, r.seq, r.result),
        }
    }
}

/// Timers have no duration in the checker: any set timer may fire at any
/// moment, which covers every interleaving of timeouts and messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelTimer {
    /// A follower's or candidate's election timeout elapses.
    Election,
    /// A leader's heartbeat interval elapses.
    Heartbeat,
    /// A client's request timed out: retry elsewhere.
    Retry,
    /// A server's snapshot job is written (and reported; with bug (k),
    /// reported already): the disk of the snapshot, slower than the log's,
    /// so other actions may come between the job and its end.
    Snapshot,
    /// The operator asks this server, if it leads, for the next
    /// configuration change of [`Runtime::reconfigure`].
    Reconfigure,
    /// A server's oldest queued log batch is written and reported
    /// ([`Runtime::slow_log`] only), so that other actions, a crash among
    /// them, come between a batch and its write.
    Log,
}

/// Exactly what a server makes durable: its hard state, its latest
/// snapshot, the log's base (the last compacted entry) and the log after
/// it. A crash keeps only this; a recovered server restarts from it. (For a
/// client, its whole state, so that a client "crash" is only a pause.)
///
/// Behind an `Arc`: stateright clones every storage with every state it
/// queues, and most steps leave it unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Durable {
    Server(Arc<DurableServer>),
    Client(Arc<ClientState>),
}

#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct DurableServer {
    /// The hard state, the latest snapshot written (taken here or
    /// installed), the log's base and the log after it, written batch by
    /// batch by [`DurableState::write`], as the simulator's disk is.
    pub disk: DurableState<Command>,
    /// Not the server's: the model's budget of this server's election and
    /// heartbeat timeouts over a whole run
    /// ([`crate::ModelConfig::max_timeouts`]), written at its first start.
    /// Kept in its state rather than by its actor, so that servers with
    /// different budgets stay interchangeable for the symmetry reduction:
    /// a renumbering moves the budget with the server.
    pub max_timeouts: Option<u8>,
    /// The model's count of those timeouts (only under a budget, else 0),
    /// kept here so that a crash does not reset it.
    pub timeouts: u8,
    /// Of those, the heartbeats (only under [`Runtime::max_heartbeats`]).
    pub heartbeats: u8,
}

/// One line: `term 1, vote Some(0), snapshot 2, log ["3/1 noop"]`.
impl std::fmt::Debug for DurableServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let disk = &self.disk;
        let log = entries(disk.base.index, &disk.log);
        write!(f, "term {}, vote {:?}, snapshot {}, log {log:?}", disk.hard.term, disk.hard.voted_for, disk.covered())?;
        // The model's budgets, when counted.
        if let Some(max) = self.max_timeouts {
            write!(f, "; timed out {} of {max} times ({} heartbeats)", self.timeouts, self.heartbeats)?;
        } else if self.heartbeats > 0 {
            write!(f, "; {} heartbeats", self.heartbeats)?;
        }
        Ok(())
    }
}

impl DurableServer {
    /// `Err` if a restart from this would lose entries: the log starts
    /// after what the snapshot covers (the gap of bug (k)).
    pub fn check_whole(&self) -> Result<(), String> {
        if self.disk.base.index > self.disk.covered() {
            return Err(format!(
                "the durable log starts after index {} but the durable snapshot covers only up to {}: a crash now \
                 loses the entries between",
                self.disk.base.index,
                self.disk.covered()
            ));
        }
        Ok(())
    }

    /// Everything a restart reads.
    pub fn durable_state(&self) -> DurableState<Command> {
        self.disk.clone()
    }
}

// Stateright keeps each actor state behind an `Arc`; the size gap between a
// server and a client costs nothing there.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ActorState {
    /// The replica, plus what it has made durable (shared with its
    /// storage; kept here because an actor reads its storage only when it
    /// starts).
    Server {
        server: KvServer,
        durable: Arc<DurableServer>,
        /// The snapshot job the replica handed out, not yet written and
        /// reported (the [`ModelTimer::Snapshot`] timer finishes it).
        job: Option<SnapshotJob>,
        /// Bug (k) only: a snapshot reported taken but not yet written.
        unwritten: Option<Snapshot>,
        /// Log batches handed out and not yet written, oldest first
        /// ([`Runtime::slow_log`] only; the [`ModelTimer::Log`] timer
        /// writes them). A crash loses them.
        queued: Vec<Persist<Command>>,
        /// What happened to this incarnation, for the "sometimes"
        /// properties.
        seen: Seen,
    },
    /// A server that failed a check (the core's assertions or the
    /// runtime's own), with what it said. It does nothing more, like a
    /// real server that stops loudly; "no server fails a check" judges it.
    Failed {
        why: String,
    },
    Client(ClientState),
}

/// Events of one server incarnation that the "sometimes" properties look
/// for. Flags only ever set, so they add few states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Seen {
    /// It installed a snapshot received from a leader.
    pub installed: bool,
    /// It restarted from a durable snapshot.
    pub restarted_from_snapshot: bool,
}

/// A summary line per server first (role, term, commit, applied, snapshot
/// index, log range), then the whole state: the Explorer shows states
/// with `{:#?}`.
impl std::fmt::Debug for ActorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // What a person stepping through the Explorer came to see, a
            // line each: role and indexes, vote, the log as `index/term
            // entry`, the data and sessions, what is durable. Not the
            // configuration or the injected-bug flags: they are the same in
            // every state of a run (the Explorer's title and `check`'s
            // first line print them once).
            ActorState::Server { server, durable, job, unwritten, queued, seen } => {
                let node = server.node();
                let (base, base_term) = node.log().base();
                let log = entries(base, node.log().entries());
                let kv = server.kv();
                f.debug_struct("Server")
                    .field("summary", &format_args!("{}", summary(server)))
                    .field("vote", &format_args!("{:?} in term {}", node.hard_state().voted_for, node.term()))
                    .field("leader", &format_args!("{:?}", node.leader()))
                    .field("snapshot_index", &node.snapshot().map_or(0, |s| s.meta.index))
                    .field("log_base", &format_args!("{base} (term {base_term})"))
                    .field("log", &log)
                    .field("data", kv.data())
                    .field(
                        "sessions",
                        &format_args!("{:?}", kv.sessions().iter().map(|(c, s)| (c, s.seq)).collect::<Vec<_>>()),
                    )
                    .field("durable", &format_args!("{durable:?}"))
                    .field("snapshot_job", &job.as_ref().map(|j| j.meta))
                    .field("unwritten_snapshot", &unwritten.as_ref().map(|s| s.meta))
                    .field("queued_batches", &queued.iter().map(|p| p.number).collect::<Vec<_>>())
                    .field("seen", seen)
                    .finish()
            }
            ActorState::Failed { why } => f.debug_struct("Failed").field("why", why).finish(),
            ActorState::Client(client) => f.debug_tuple("Client").field(client).finish(),
        }
    }
}

/// The entries after `base`, each as `index/term payload` (`3/2 c1#1
/// Put("k", "1")`, `4/2 noop`).
fn entries(base: LogIndex, log: &[Entry<Command>]) -> Vec<String> {
    log.iter().enumerate().map(|(i, e)| format!("{}/{} {}", base + 1 + i as LogIndex, e.term, e.payload)).collect()
}

/// One line: `Leader term 1, commit 2, applied 2, snapshot 2, log 3..=3`.
pub fn summary(server: &KvServer) -> String {
    let node = server.node();
    let log = node.log();
    format!(
        "{:?} term {}, commit {}, applied {}, snapshot {}, log {}..={}",
        node.role(),
        node.term(),
        node.commit_index(),
        server.kv().applied_index(),
        node.snapshot().map_or(0, |s| s.meta.index),
        log.first_index(),
        log.last_index()
    )
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    pub clerk: Clerk,
    /// Index of the next script operation to start.
    pub next: usize,
    /// Its retry timer fired this many times (counted only under
    /// [`ModelActor::Client`]'s `max_retries`, else 0).
    pub retries: u8,
}

/// How a server actor's runtime behaves.
#[derive(Clone, Copy, Debug)]
pub struct Runtime {
    /// Cluster size (clients' actor ids follow the servers').
    pub servers: u8,
    /// Snapshot jobs end by their own timer action (see
    /// [`crate::ModelConfig::slow_snapshots`]).
    pub slow_snapshots: bool,
    /// Log batches are written by their own timer action (see
    /// [`crate::ModelConfig::slow_log`]).
    pub slow_log: bool,
    /// An operator changes the configuration: see [`Reconfigure`].
    pub reconfigure: Option<Reconfigure>,
    /// Of each server's budgeted timeouts ([`DurableServer::max_timeouts`]),
    /// at most this many heartbeats ([`crate::ModelConfig::max_heartbeats`]);
    /// a timer past a budget stays set and never fires (the model ignores
    /// it).
    pub max_heartbeats: Option<u8>,
}

impl Runtime {
    /// One of the server's budgeted timers fired: counted where a crash
    /// keeps it.
    fn count_timeout(&self, state: &mut Cow<ActorState>, timer: &ModelTimer, o: &mut Out<ModelActor>) {
        let heartbeat = *timer == ModelTimer::Heartbeat && self.max_heartbeats.is_some();
        let ActorState::Server { durable, .. } = state.as_ref() else { return };
        let budgeted = durable.max_timeouts.is_some();
        if !budgeted && !heartbeat {
            return;
        }
        if let ActorState::Server { durable, .. } = state.to_mut() {
            let counts = Arc::make_mut(durable);
            if budgeted {
                counts.timeouts += 1;
            }
            if heartbeat {
                counts.heartbeats += 1;
            }
            o.save(Durable::Server(durable.clone()));
        }
    }

    /// The server's budget for `timer` is spent.
    fn spent(&self, durable: &DurableServer, timer: &ModelTimer) -> bool {
        let spent = |max: Option<u8>, used: u8| max.is_some_and(|max| used >= max);
        match timer {
            ModelTimer::Election => spent(durable.max_timeouts, durable.timeouts),
            ModelTimer::Heartbeat => {
                spent(durable.max_timeouts, durable.timeouts) || spent(self.max_heartbeats, durable.heartbeats)
            }
            _ => false,
        }
    }
}

/// The operator's plan: servers `join..=last_join` (started outside the
/// configuration) are added as learners, then promoted, in order, then
/// founder `leave` is removed, one change at a time, each asked of whoever
/// leads when the [`ModelTimer::Reconfigure`] timer fires. Which change
/// comes next is read off the leader's configuration, so a change lost
/// with a leader is asked again of the next. With two joiners, two
/// learners are members at once (what bug (q) needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reconfigure {
    pub join: NodeId,
    pub last_join: NodeId,
    pub leave: NodeId,
}

impl Reconfigure {
    /// The next change after `m`, if any is left.
    pub fn next(&self, m: &Membership) -> Option<MembershipChange> {
        let joiners = self.join..=self.last_join;
        if let Some(id) = joiners.clone().find(|&id| !m.contains(id)) {
            Some(MembershipChange::AddLearner(id))
        } else if let Some(id) = joiners.clone().find(|&id| !m.is_voter(id)) {
            Some(MembershipChange::Promote(id))
        } else if m.contains(self.leave) {
            Some(MembershipChange::Remove(self.leave))
        } else {
            None
        }
    }
}

#[derive(Clone, Debug)]
pub enum ModelActor {
    /// `max_timeouts`: its budget, which its first start writes into its
    /// durable record ([`DurableServer::max_timeouts`]).
    Server { config: ServerConfig, runtime: Runtime, max_timeouts: Option<u8> },
    /// `max_retries`: its retry timer fires at most this many times in
    /// all ([`crate::ModelConfig::max_retries`]).
    Client { client: u64, servers: u8, script: Vec<Op>, max_retries: Option<u8> },
}

impl Actor for ModelActor {
    type Msg = ModelMsg;
    type Timer = ModelTimer;
    type State = ActorState;
    type Storage = Durable;
    type Random = ();

    fn on_start(&self, _id: Id, storage: &Option<Durable>, o: &mut Out<Self>) -> ActorState {
        match self {
            ModelActor::Server { config, max_timeouts, .. } => {
                let durable = match storage {
                    Some(Durable::Server(durable)) => durable.clone(),
                    _ => {
                        let durable = Arc::new(DurableServer { max_timeouts: *max_timeouts, ..Default::default() });
                        // Saved at once, so that a restart finds the budget
                        // in the record and never asks the actor again.
                        if max_timeouts.is_some() {
                            o.save(Durable::Server(durable.clone()));
                        }
                        durable
                    }
                };
                // The simulator refuses such a restart too (`Sim::restart`);
                // the write that left it failed its check already.
                if let Err(why) = durable.check_whole() {
                    return ActorState::Failed { why: format!("cannot restart: {why}") };
                }
                let restart = || KvServer::restart(config.clone(), durable.durable_state());
                let server = match checked(restart) {
                    Ok(Ok(server)) => server,
                    Ok(Err(e)) => return ActorState::Failed { why: format!("cannot restart: snapshot: {e:?}") },
                    Err(why) => return ActorState::Failed { why: format!("cannot restart: {why}") },
                };
                o.set_timer(ModelTimer::Election, model_timeout());
                o.set_timer(ModelTimer::Heartbeat, model_timeout());
                if let ModelActor::Server { runtime: Runtime { reconfigure: Some(_), .. }, .. } = self {
                    o.set_timer(ModelTimer::Reconfigure, model_timeout());
                }
                let seen = Seen { restarted_from_snapshot: durable.disk.snapshot.is_some(), ..Seen::default() };
                ActorState::Server { server, durable, job: None, unwritten: None, queued: Vec::new(), seen }
            }
            ModelActor::Client { client, servers, .. } => {
                if let Some(Durable::Client(state)) = storage {
                    if state.clerk.pending().is_some() {
                        o.set_timer(ModelTimer::Retry, model_timeout());
                    }
                    return ActorState::Client((**state).clone());
                }
                let mut state =
                    ClientState { clerk: Clerk::new(u128::from(*client), *servers, 0), next: 0, retries: 0 };
                self.start_next(&mut state, o);
                ActorState::Client(state)
            }
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<ActorState>, src: Id, msg: ModelMsg, o: &mut Out<Self>) {
        match (self, msg) {
            (ModelActor::Server { runtime, .. }, ModelMsg::Raft(envelope)) => {
                server_step(*runtime, state, ServerInput::Peer(envelope), o);
            }
            (ModelActor::Server { runtime, .. }, ModelMsg::Request(request)) => {
                server_step(*runtime, state, ServerInput::Client(request), o);
            }
            (ModelActor::Client { .. }, ModelMsg::Response(response)) => {
                let ActorState::Client(client) = state.as_ref() else { return };
                let mut client = client.clone();
                let action = client.clerk.on_response(usize::from(src) as NodeId, response);
                if action.is_some() {
                    self.carry_out(&mut client, action, o);
                    *state.to_mut() = ActorState::Client(client);
                }
            }
            _ => {}
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<ActorState>, timer: &ModelTimer, o: &mut Out<Self>) {
        if self.budget_spent(state, timer) {
            // Set again and nothing else: stateright ignores the action (a
            // timer that fires and is dropped would be a state of its own).
            o.set_timer(timer.clone(), model_timeout());
            return;
        }
        match (self, timer) {
            (ModelActor::Server { runtime, .. }, ModelTimer::Election) if is_follower(state) => {
                // Tick until the timeout elapses: the node starts a (pre-)election.
                runtime.count_timeout(state, timer, o);
                let before = role(state);
                server_ticks(*runtime, state, o, move |s| s.node().role() != before);
                o.set_timer(ModelTimer::Election, model_timeout());
            }
            (ModelActor::Server { runtime, .. }, ModelTimer::Heartbeat) if is_leader(state) => {
                // Tick until the leader sends its heartbeats (or steps down).
                runtime.count_timeout(state, timer, o);
                server_ticks(*runtime, state, o, |s| !s.node().is_leader());
                o.set_timer(ModelTimer::Heartbeat, model_timeout());
            }
            (ModelActor::Server { runtime, .. }, ModelTimer::Snapshot) => snapshot_written(*runtime, state, o),
            (ModelActor::Server { runtime, .. }, ModelTimer::Log) => log_written(*runtime, state, o),
            (ModelActor::Server { runtime, .. }, ModelTimer::Reconfigure) => {
                let (Some(plan), ActorState::Server { server, .. }) = (runtime.reconfigure, state.as_ref()) else {
                    return;
                };
                match plan.next(server.node().membership()) {
                    // Only a leader takes it; a follower's refusal would
                    // change nothing, so it is not asked.
                    Some(change) if server.node().is_leader() => {
                        let request = AdminRequest { id: 0, op: AdminOp::Change(change) };
                        server_step(*runtime, state, ServerInput::Admin(request), o);
                        o.set_timer(ModelTimer::Reconfigure, model_timeout());
                    }
                    Some(_) => o.set_timer(ModelTimer::Reconfigure, model_timeout()),
                    None => {} // the plan is done, as far as this server knows
                }
            }
            (ModelActor::Client { max_retries, .. }, ModelTimer::Retry) => {
                let ActorState::Client(client) = state.as_ref() else { return };
                let mut client = client.clone();
                if max_retries.is_some() {
                    client.retries += 1;
                }
                let attempt = client.clerk.attempt();
                let action = client.clerk.on_timeout(attempt);
                self.carry_out(&mut client, action, o);
                *state.to_mut() = ActorState::Client(client);
            }
            _ => {}
        }
    }
}

impl ModelActor {
    /// `timer` is budgeted for this actor and the budget is spent
    /// ([`DurableServer::max_timeouts`], [`Runtime::max_heartbeats`],
    /// `max_retries`).
    fn budget_spent(&self, state: &ActorState, timer: &ModelTimer) -> bool {
        match (self, timer, state) {
            (ModelActor::Server { runtime, .. }, _, ActorState::Server { durable, .. }) => {
                runtime.spent(durable, timer)
            }
            (ModelActor::Client { max_retries, .. }, ModelTimer::Retry, ActorState::Client(client)) => {
                max_retries.is_some_and(|max| client.retries >= max)
            }
            _ => false,
        }
    }

    fn start_next(&self, state: &mut ClientState, o: &mut Out<Self>) {
        let ModelActor::Client { script, .. } = self else { return };
        if let Some(op) = script.get(state.next) {
            state.next += 1;
            let action = state.clerk.start(op.clone());
            self.carry_out(state, Some(action), o);
        }
    }

    fn carry_out(&self, state: &mut ClientState, action: Option<ClerkAction>, o: &mut Out<Self>) {
        match action {
            Some(ClerkAction::Send { to, request, .. }) => {
                o.send(Id::from(usize::from(to)), ModelMsg::Request(request));
                o.set_timer(ModelTimer::Retry, model_timeout());
            }
            // An expired session (never, below the models' session bound of
            // `MAX_SESSIONS`) leaves the call pending: its outcome is unknown.
            // So does a stale refusal (never: the models' clients have
            // distinct ids); it was not executed.
            Some(ClerkAction::Done { .. } | ClerkAction::Expired { .. } | ClerkAction::Stale { .. }) => {
                o.cancel_timer(ModelTimer::Retry);
                self.start_next(state, o);
            }
            None => {}
        }
        o.save(Durable::Client(Arc::new(state.clone())));
    }
}

fn is_leader(state: &ActorState) -> bool {
    matches!(state, ActorState::Server { server, .. } if server.node().is_leader())
}

/// A live server that does not lead (a failed one does nothing).
fn is_follower(state: &ActorState) -> bool {
    matches!(state, ActorState::Server { server, .. } if !server.node().is_leader())
}

fn role(state: &ActorState) -> Role {
    match state {
        ActorState::Server { server, .. } => server.node().role(),
        _ => Role::Follower,
    }
}

/// Feeds ticks until `done` holds for the server (at most a generous bound).
fn server_ticks(rt: Runtime, state: &mut Cow<ActorState>, o: &mut Out<ModelActor>, done: impl Fn(&KvServer) -> bool) {
    const MAX_TICKS: usize = 1_000;
    for _ in 0..MAX_TICKS {
        let sent = server_step(rt, state, ServerInput::Tick, o);
        let ActorState::Server { server, .. } = state.as_ref() else { return };
        if sent || done(server) {
            return;
        }
    }
}

/// Runs `f`, turning a panic (a failed check of the core or of this
/// runtime) into its message. The default panic hook is silenced for it:
/// a model with an injected bug may fail in many states.
fn checked<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

thread_local! {
    /// Inside [`checked`]: the panic hook stays quiet.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// What one action of a server asks of the model, collected before any of
/// it is carried out (a failed check sends nothing).
#[derive(Default)]
struct Effects {
    messages: Vec<Envelope<Command>>,
    responses: Vec<Response>,
    /// The durable state changed: save it.
    saved: bool,
    /// A snapshot job is out: arm its timer.
    snapshot_timer: bool,
    /// Log batches are queued: arm their timer.
    log_timer: bool,
}

/// Steps the real replica with `input` and carries out its output under
/// the persistence contract, with a disk that is fast and reliable for the
/// log: a batch is written and reported durable within the same action (a
/// crash comes between actions, so it loses nothing the node handed out),
/// unless [`Runtime::slow_log`] queues it for its own action
/// ([`log_written`]), as the simulator's and the `node` fuzz target's
/// slow and late disks do.
/// A snapshot job is slower: it is written and reported by its own timer
/// ([`snapshot_written`]), so commits, installs and crashes may come
/// between. Then sends what the steps released. Returns whether any
/// message was sent. A failed check (a panic of the core, or of this
/// runtime's checks below) turns the server into [`ActorState::Failed`].
fn server_step(rt: Runtime, state: &mut Cow<ActorState>, input: ServerInput, o: &mut Out<ModelActor>) -> bool {
    if !matches!(**state, ActorState::Server { .. }) {
        return false;
    }
    let result = {
        let ActorState::Server { server, durable, job, unwritten, queued, seen } = state.to_mut() else {
            unreachable!()
        };
        checked(|| run(rt, server, durable, job, unwritten, queued, seen, input))
    };
    carry_out(rt.servers, state, result, o)
}

/// The snapshot job's timer: the snapshot is written, then reported (with
/// bug (k), reported when the job came out, and only written now).
fn snapshot_written(rt: Runtime, state: &mut Cow<ActorState>, o: &mut Out<ModelActor>) {
    let pending =
        |s: &ActorState| matches!(s, ActorState::Server { job, unwritten, .. } if job.is_some() || unwritten.is_some());
    if !pending(state) {
        return; // nothing to write (or a failed server): the timer is ignored
    }
    let result = {
        let ActorState::Server { server, durable, job, unwritten, queued, seen } = state.to_mut() else { return };
        if let Some(snapshot) = unwritten.take() {
            Arc::make_mut(durable).disk.keep_snapshot(snapshot);
            Ok(Effects { saved: true, ..Effects::default() })
        } else if let Some(j) = job.take() {
            let snapshot = j.encode();
            Arc::make_mut(durable).disk.keep_snapshot(snapshot.clone());
            checked(|| {
                let input = ServerInput::SnapshotTaken(snapshot);
                let mut effects = run(rt, server, durable, job, unwritten, queued, seen, input);
                effects.saved = true;
                effects
            })
        } else {
            return;
        }
    };
    carry_out(rt.servers, state, result, o);
}

/// The log timer ([`Runtime::slow_log`]): the oldest queued batch is
/// written, then reported; the timer stays armed while more are queued.
/// (One batch per action: a group commit of several is the same writes
/// with fewer reports between them.)
fn log_written(rt: Runtime, state: &mut Cow<ActorState>, o: &mut Out<ModelActor>) {
    if !matches!(state.as_ref(), ActorState::Server { queued, .. } if !queued.is_empty()) {
        return; // nothing queued (or a failed server): the timer is ignored
    }
    let result = {
        let ActorState::Server { server, durable, job, unwritten, queued, seen } = state.to_mut() else { return };
        let batch = queued.remove(0);
        checked(|| {
            // (Inside the check: a write that would leave a gap panics.)
            Arc::make_mut(durable).disk.write(&batch);
            let input = ServerInput::Persisted(batch.number);
            let mut effects = run(rt, server, durable, job, unwritten, queued, seen, input);
            effects.saved = true;
            effects.log_timer |= !queued.is_empty();
            effects
        })
    };
    carry_out(rt.servers, state, result, o);
}

fn carry_out(
    servers: u8,
    state: &mut Cow<ActorState>,
    result: Result<Effects, String>,
    o: &mut Out<ModelActor>,
) -> bool {
    let effects = match result {
        Ok(effects) => effects,
        Err(why) => {
            *state.to_mut() = ActorState::Failed { why };
            return false;
        }
    };
    let ActorState::Server { durable, .. } = state.as_ref() else { unreachable!() };
    if effects.saved {
        o.save(Durable::Server(durable.clone()));
    }
    if effects.snapshot_timer {
        o.set_timer(ModelTimer::Snapshot, model_timeout());
    }
    if effects.log_timer {
        o.set_timer(ModelTimer::Log, model_timeout());
    }
    let sent = !effects.messages.is_empty();
    for envelope in effects.messages {
        let to = Id::from(usize::from(envelope.to));
        o.send(to, ModelMsg::Raft(envelope));
    }
    for response in effects.responses {
        let client = Id::from(usize::from(servers) + (response.client - 1) as usize);
        o.send(client, ModelMsg::Response(response));
    }
    sent
}

/// Feeds `input`, then every input its outputs call for (`Persisted` for
/// each batch written, `SnapshotTaken` at once under bug (k)), until none
/// is left. The runtime's own checks: an installed snapshot moves the
/// replica forward (the simulator's `SafetyChecker::on_install`), and what
/// is durable is always a whole state a restart can use (no gap between
/// the snapshot and the log).
// The parts of `ActorState::Server`, borrowed apart so that the steps can
// change each; a struct of them would be the variant again.
#[allow(clippy::too_many_arguments)]
fn run(
    rt: Runtime,
    server: &mut KvServer,
    durable: &mut Arc<DurableServer>,
    job: &mut Option<SnapshotJob>,
    unwritten: &mut Option<Snapshot>,
    queued: &mut Vec<Persist<Command>>,
    seen: &mut Seen,
    input: ServerInput,
) -> Effects {
    const MAX_STEPS: usize = 64;
    let mut effects = Effects::default();
    let mut inputs = VecDeque::from([input]);
    let mut steps = 0;
    while let Some(input) = inputs.pop_front() {
        steps += 1;
        assert!(steps <= MAX_STEPS, "the replica keeps asking for more steps");
        let applied = server.kv().applied_index();
        let out = server.step(input);
        if let Some(meta) = out.installed {
            assert!(
                meta.index > applied,
                "an install must move the replica forward: installed a snapshot up to {} after applying {applied}",
                meta.index
            );
            seen.installed = true;
        }
        if let Some(batch) = out.persist {
            if rt.slow_log {
                queued.push(batch);
                effects.log_timer = true;
            } else {
                Arc::make_mut(durable).disk.write(&batch);
                effects.saved = true;
                inputs.push_back(ServerInput::Persisted(batch.number));
            }
        }
        if let Some(new_job) = out.snapshot {
            assert!(job.is_none() && unwritten.is_none(), "two snapshot jobs out at once");
            if !rt.slow_snapshots {
                // Written and reported within this action.
                let snapshot = new_job.encode();
                Arc::make_mut(durable).disk.keep_snapshot(snapshot.clone());
                effects.saved = true;
                inputs.push_back(ServerInput::SnapshotTaken(snapshot));
            } else if server.node().config().bugs.trim_before_snapshot_durable {
                // Bug (k): reported at once, written when the timer fires.
                let snapshot = new_job.encode();
                *unwritten = Some(snapshot.clone());
                inputs.push_back(ServerInput::SnapshotTaken(snapshot));
                effects.snapshot_timer = true;
            } else {
                *job = Some(new_job);
                effects.snapshot_timer = true;
            }
        }
        effects.messages.extend(out.messages);
        effects.responses.extend(out.responses);
    }
    if let Err(why) = durable.check_whole() {
        panic!("{why}");
    }
    effects
}
