//! Stateright models of raftkv: the production Raft node, KV state machine
//! and clerk, wrapped as actors, with every interleaving of messages,
//! timeouts, losses and crashes explored up to a bound.
//!
//! - [`actors`]: servers wrap [`raftkv::kv::KvServer`] (so the real
//!   [`raftkv::raft::RaftNode`] and [`raftkv::kv::KvMachine`]); their
//!   stateright `Storage` is exactly what the node persists, so a crash
//!   keeps only that. Clients wrap [`raftkv::clerk::Clerk`] with a script.
//! - [`history`]: what the run records for the properties.
//! - [`model`] builds the [`ActorModel`] with its properties (below).
//! - Beyond exhaustive bounds: [`walks`] (seeded random walks), [`guided`]
//!   (coverage-guided search), [`schedule`] (hand-written schedules) and
//!   [`shrink`] (1-minimal counterexamples); [`symmetry`] reduces DFS.
//! - [`explorer`]: the model as the Stateright Explorer shows it, each
//!   action one short line.
//!
//! Properties ("always" must hold in every reachable state; "sometimes"
//! must hold in some, so that no model is vacuous):
//!
//! | property | kind | statement |
//! |---|---|---|
//! | election safety | always | at most one leader per term (Raft Fig. 3) |
//! | log matching | always | same index and term ⇒ identical prefixes (Fig. 3) |
//! | leader completeness | always | a committed entry is in every later leader's log (Fig. 3) |
//! | state machine safety | always | no two servers apply different entries at one index (Fig. 3) |
//! | exactly once | always | no append is executed twice by any replica |
//! | linearizable | always | the client history is linearizable (raftkv's checker) |
//! | no server fails a check | always | the core's assertions and the runtime's checks (an install moves forward; the durable state has no gap) |
//! | leader elected | sometimes | |
//! | write acknowledged | sometimes | |
//! | read sees another client's write | sometimes | |
//! | new leader serves a read | sometimes | |
//! | a snapshot is taken | sometimes | a log compacted |
//! | a follower installs a snapshot | sometimes | InstallSnapshot, received whole and installed |
//! | a server restarts from a snapshot | sometimes | a recovery reads a durable snapshot |
//! | four voters | sometimes | membership model: the joiner promoted |
//! | a founder removed while serving | sometimes | membership model: 3 → 4 → 3 committed |
//! | applied ahead of the disk | sometimes | `slow_log` only: a server applied an entry its own disk does not hold yet |
//!
//! Where a property compares logs, entries covered by a snapshot are known
//! only by the log's base, `(last_included_index, last_included_term)`:
//! logs are compared where both hold an entry, by term at a base, and
//! state machines at equal applied indexes stand for what both compacted
//! (see `agree`).

pub mod actors;
pub mod dpor;
pub mod explorer;
pub mod guided;
pub mod history;
pub mod independence;
pub mod schedule;
pub mod search;
pub mod shrink;
pub mod symmetry;
pub mod walks;

/// The searches allocate and free a state's pieces at every step: by
/// `perf`, a third of a DPOR search's time went to the system allocator.
/// mimalloc, the widely used allocator built for such small, short-lived
/// blocks, makes DPOR 1.4× and the breadth-first search 1.5× faster at
/// the same peak memory (`specs/models.md`). Set here, in the library
/// only this crate's binary and tests link, so the tests gain too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use actors::{ActorState, ModelActor, Runtime};
use history::ModelHistory;
use raftkv::kv::{KvServer, Op, ReadPath, ServerConfig, SnapshotPolicy};
use raftkv::lincheck::{self, Budget, History, OpKind, Verdict};
use raftkv::raft::{Config, InjectedBugs, LogIndex, RaftLog};
use stateright::actor::{ActorModel, ActorModelState, LossyNetwork, Network};
use stateright::{Expectation, Model};

/// The bounds and options of one model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelConfig {
    pub servers: u8,
    /// 0: servers only (for election properties). 1: `Append(k, "1")` then
    /// `Get(k)` (an append, so that "exactly once" has something to check).
    /// 2: also a second client that runs `Put(k, "2")` then `Get(k)`.
    pub clients: usize,
    pub max_crashes: usize,
    pub read_path: ReadPath,
    /// Whether the network may lose messages.
    pub lossy: bool,
    /// Whether it reorders or duplicates them.
    pub network: Delivery,
    /// States beyond these bounds are not explored.
    pub max_term: u64,
    pub max_log: usize,
    /// States with more messages in flight are not explored (a leader's
    /// heartbeat timer could otherwise fill the network without end).
    pub max_in_flight: usize,
    /// States where some actor has more messages in flight than this are
    /// not explored either: a smaller space than `max_in_flight` gives at
    /// equal depth. Like it, refused by sleep sets (see [`search`]).
    pub max_in_flight_per_sender: usize,
    /// At most this many entries per AppendEntries. 1 lets a leader
    /// replicate an old entry without the new ones after it, which is the
    /// schedule of Raft Figure 8 (bug (a)).
    pub max_batch: usize,
    /// Take a snapshot every this many applied entries (`None`: never).
    pub snapshot_every: Option<u64>,
    /// Entries a snapshot leaves in the log before it
    /// (`Config::snapshot_trailing_entries`); 0 compacts everything it
    /// covers, so a follower that lags at all needs InstallSnapshot.
    pub snapshot_trailing: u64,
    /// Whether a snapshot job is written and reported by an action of its
    /// own (the `Snapshot` timer), so that other actions (commits, a
    /// crash) come between the job and its end; otherwise within the
    /// action that asked for it, which keeps schedules shorter. Bugs (j)
    /// and (k) live in that gap.
    pub slow_snapshots: bool,
    /// Whether each log batch is written and reported by an action of its
    /// own (the `Log` timer), so that a crash can fall between a node
    /// applying a committed entry and its own write of it (which
    /// `raft::ready` allows) or between a term change and its write;
    /// otherwise within the action that produced it.
    pub slow_log: bool,
    /// Each server's election and heartbeat timers fire at most this many
    /// times in a run, crashes or not (empty: without end; the depth or
    /// the network bound then keeps the search finite). One entry per
    /// server, the last standing for the servers after it (`[2, 2, 0]`:
    /// server 2 never times out; `[1]`: one timeout each). A bound on each
    /// server alone, kept and counted in its own (durable) state, so sleep
    /// sets and symmetry stay sound under it, even with budgets that
    /// differ (a renumbering moves a budget with its server; a timer past
    /// it is ignored, like any timer that would change nothing).
    pub max_timeouts: Vec<u8>,
    /// Of those, each server's heartbeat timer fires at most this many
    /// times in a run (`None`: as `max_timeouts` allows). 0 leaves a
    /// leader only the AppendEntries its election, its clients and its
    /// followers' answers make it send: the schedule of Raft Figure 8
    /// needs no heartbeat.
    pub max_heartbeats: Option<u8>,
    /// Each client's retry timer fires at most this many times in a run
    /// (`None`: without end). With both budgets, the term bound and the
    /// log bound, the reachable states are finitely many (messages are
    /// sent only by timeouts, by the clients' scripts and in answer to a
    /// delivery): an exhaustive search needs neither a depth bound nor a
    /// network bound.
    pub max_retries: Option<u8>,
    /// Whether clients may crash too (only a pause for them: the clerk's
    /// state is its storage). `false` leaves `max_crashes` to servers.
    pub clients_crash: bool,
    /// The founding voters are `0..founders` (all servers if `None`); the
    /// others start outside the configuration. With `reconfigure`, an
    /// operator adds them all as learners, promotes them, and removes
    /// server 0 ([`actors::Reconfigure`]).
    pub founders: Option<u8>,
    pub reconfigure: bool,
    pub bugs: InjectedBugs,
}

impl ModelConfig {
    /// The budgets leave finitely many reachable states (see
    /// [`max_retries`](ModelConfig::max_retries)): a search needs no depth
    /// bound.
    pub fn has_finitely_many_states(&self) -> bool {
        !self.max_timeouts.is_empty() && (self.clients == 0 || self.max_retries.is_some())
    }

    /// Server `id`'s budget of timeouts
    /// ([`max_timeouts`](ModelConfig::max_timeouts)).
    pub fn max_timeouts_of(&self, id: u8) -> Option<u8> {
        per_actor(&self.max_timeouts, usize::from(id))
    }

    /// The configuration `cargo test` checks to completion.
    pub fn ci() -> ModelConfig {
        ModelConfig {
            servers: 3,
            clients: 1,
            max_crashes: 0,
            read_path: ReadPath::ReadIndex,
            lossy: false,
            network: Delivery::Unordered,
            max_term: 2,
            max_log: 3,
            max_in_flight: 6,
            max_in_flight_per_sender: usize::MAX,
            max_batch: 64,
            snapshot_every: None,
            snapshot_trailing: 0,
            slow_snapshots: false,
            slow_log: false,
            max_timeouts: Vec::new(),
            max_heartbeats: None,
            max_retries: None,
            clients_crash: true,
            founders: None,
            reconfigure: false,
            bugs: InjectedBugs::default(),
        }
    }

    /// The CI configuration of membership change, 3 → 4 → 3 voters: server
    /// 3 starts outside the configuration; an operator adds it as a
    /// learner, promotes it, then removes server 0 (thesis §4.1). No
    /// clients (the configuration entries are the log's traffic), two
    /// terms, a log of five entries (no-ops and the three changes), an
    /// ordered network.
    pub fn ci_membership() -> ModelConfig {
        ModelConfig {
            servers: 4,
            founders: Some(3),
            reconfigure: true,
            clients: 0,
            network: Delivery::Ordered,
            max_term: 2,
            max_log: 5,
            max_in_flight: 6,
            ..ModelConfig::ci()
        }
    }

    /// The CI configuration with snapshots: one every 2 entries (the
    /// no-op and the client's Append), none kept in the log, so a follower
    /// that missed an entry is sent the snapshot; one crash (of a server:
    /// a client's is only a pause); a per-channel FIFO network, one term
    /// and two entries, at most 5 messages in flight, to keep the deeper
    /// schedules of snapshots small.
    /// A snapshot is taken within 10 actions; a follower installs one in
    /// 17 ([`schedule::SNAPSHOT_INSTALL`]).
    pub fn ci_snapshots() -> ModelConfig {
        ModelConfig {
            network: Delivery::Ordered,
            max_crashes: 1,
            clients_crash: false,
            max_term: 1,
            max_log: 2,
            max_in_flight: 5,
            snapshot_every: Some(2),
            snapshot_trailing: 0,
            ..ModelConfig::ci()
        }
    }

    /// Elections around a crash: servers only, one of them may crash, a
    /// per-channel FIFO network, one term, a log of one entry (the no-op).
    /// The bound of bug (f), `vote_before_persist` (a vote forgotten in a
    /// crash), and the one where symmetry reduction does the most (every
    /// renumbering of the servers).
    pub fn crash_elections() -> ModelConfig {
        ModelConfig {
            clients: 0,
            max_crashes: 1,
            network: Delivery::Ordered,
            max_term: 1,
            max_log: 1,
            ..ModelConfig::ci()
        }
    }

    /// How many servers found the cluster.
    pub fn founders(&self) -> u8 {
        self.founders.unwrap_or(self.servers).min(self.servers)
    }

    /// The client scripts.
    pub fn scripts(&self) -> Vec<Vec<Op>> {
        let key = || "k".to_string();
        let mut scripts = vec![vec![Op::Append { key: key(), value: "1".into() }, Op::Get { key: key() }]];
        if self.clients >= 2 {
            scripts.push(vec![Op::Put { key: key(), value: "2".into() }, Op::Get { key: key() }]);
        }
        scripts.truncate(self.clients);
        scripts
    }

    fn server_config(&self, id: u8) -> ServerConfig {
        let mut raft = Config::founded_by(id, self.founders(), 0);
        // Timers are jumps in the model: short tick counts keep states small.
        raft.election_ticks = 3;
        raft.heartbeat_ticks = 1;
        raft.election_jitter = false;
        raft.max_batch_entries = self.max_batch;
        raft.snapshot_trailing_entries = self.snapshot_trailing;
        raft.bugs = self.bugs;
        let mut config = ServerConfig::new(raft);
        config.read_path = self.read_path;
        config.snapshots = SnapshotPolicy { every_entries: self.snapshot_every, every_bytes: None };
        config
    }
}

/// How the model's network delivers messages (stateright's three networks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Any message in flight may be delivered next, once.
    Unordered,
    /// Each sender→receiver channel in order, once (like TCP). Far fewer
    /// interleavings than an unordered network, so deeper bounds fit.
    Ordered,
    /// Any message sent may be delivered any number of times, in any order
    /// (a retransmitting network): a delivered message stays in flight, so
    /// `max_in_flight` bounds the distinct messages sent.
    Duplicating,
}

/// Stateright's `target_max_depth` for "every state reached by at most
/// `actions` actions": its depth counts the initial state as 1 and it skips
/// states at the target depth before checking their properties.
pub fn stateright_depth(actions: usize) -> usize {
    actions + 2
}

pub type RaftModel = ActorModel<ModelActor, ModelConfig, ModelHistory>;
pub type RaftState = ActorModelState<ModelActor, ModelHistory>;
pub type RaftAction = <RaftModel as stateright::Model>::Action;

/// Entry `i` of a per-actor list whose last entry stands for every actor
/// after it (`[2, 2, 0]`, `[1]`), as `--max-timeouts` and DPOR's
/// `--timeouts` read them; `None` for an empty list.
pub fn per_actor<T: Copy>(list: &[T], i: usize) -> Option<T> {
    list.get(i).or(list.last()).copied()
}

/// The model for `config`, with all its properties.
pub fn model(config: ModelConfig) -> RaftModel {
    let servers = config.servers;
    let reconfigure = config.reconfigure.then(|| actors::Reconfigure {
        join: config.founders(),
        last_join: config.servers.saturating_sub(1).max(config.founders()),
        leave: 0,
    });
    let runtime = Runtime {
        servers,
        slow_snapshots: config.slow_snapshots,
        slow_log: config.slow_log,
        reconfigure,
        max_heartbeats: config.max_heartbeats,
    };
    let server_actors = (0..servers).map(|id| ModelActor::Server {
        config: config.server_config(id),
        runtime,
        max_timeouts: config.max_timeouts_of(id),
    });
    let client_actors = config.scripts().into_iter().enumerate().map(|(i, script)| ModelActor::Client {
        client: i as u64 + 1,
        servers,
        script,
        max_retries: config.max_retries,
    });
    let lossy = if config.lossy { LossyNetwork::Yes } else { LossyNetwork::No };
    let slow_log = config.slow_log;
    let model = ActorModel::new(config.clone(), ModelHistory::default())
        .actors(server_actors)
        .actors(client_actors)
        .init_network(match config.network {
            Delivery::Unordered => Network::new_unordered_nonduplicating([]),
            Delivery::Ordered => Network::new_ordered([]),
            Delivery::Duplicating => Network::new_unordered_duplicating([]),
        })
        .lossy_network(lossy)
        .max_crashes(config.max_crashes)
        .record_msg_out(history::record_out)
        .record_msg_in(history::record_in)
        .within_boundary(within_boundary)
        .property(Expectation::Always, "election safety", election_safety)
        .property(Expectation::Always, "log matching", log_matching)
        .property(Expectation::Always, "leader completeness", leader_completeness)
        .property(Expectation::Always, "state machine safety", state_machine_safety)
        .property(Expectation::Always, "exactly once", exactly_once)
        .property(Expectation::Always, "linearizable", linearizable)
        .property(Expectation::Always, "no server fails a check", no_server_fails)
        .property(Expectation::Sometimes, "leader elected", leader_elected)
        .property(Expectation::Sometimes, "write acknowledged", write_acknowledged)
        .property(Expectation::Sometimes, "read sees another client's write", read_sees_other_write)
        .property(Expectation::Sometimes, "new leader serves a read", new_leader_serves_read)
        .property(Expectation::Sometimes, "a snapshot is taken", snapshot_taken)
        .property(Expectation::Sometimes, "a follower installs a snapshot", follower_installs_snapshot)
        .property(Expectation::Sometimes, "a server restarts from a snapshot", restarts_from_snapshot)
        .property(Expectation::Sometimes, "four voters", four_voters)
        .property(Expectation::Sometimes, "a founder removed while serving", founder_removed);
    if slow_log {
        model.property(Expectation::Sometimes, "applied ahead of the disk", applied_ahead_of_disk)
    } else {
        model
    }
}

/// A server applied a committed entry that its own disk does not hold yet
/// (only with [`ModelConfig::slow_log`]; `raft::ready` allows it: the
/// entry is durable on a quorum).
fn applied_ahead_of_disk(_: &RaftModel, state: &RaftState) -> bool {
    state.actor_states.iter().any(|s| match &**s {
        ActorState::Server { server, durable, .. } => {
            server.kv().applied_index() > durable.disk.last_index().max(durable.disk.covered())
        }
        _ => false,
    })
}

/// The names of the "always" properties, in the order `model` adds them.
pub const ALWAYS: [&str; 7] = [
    "election safety",
    "log matching",
    "leader completeness",
    "state machine safety",
    "exactly once",
    "linearizable",
    "no server fails a check",
];

/// The condition of the property called `name`; panics if the model has none.
pub fn condition(model: &RaftModel, name: &str) -> fn(&RaftModel, &RaftState) -> bool {
    let property = model.properties().into_iter().find(|p| p.name == name);
    property.unwrap_or_else(|| panic!("no property {name:?}")).condition
}

/// How many of the state's actors are servers: the model puts its servers
/// (a failed one included) before its clients.
pub fn server_count(state: &RaftState) -> usize {
    state.actor_states.iter().filter(|a| !matches!(***a, ActorState::Client(_))).count()
}

/// The servers' states with their indexes, skipping crashed ones when
/// `live_only` (a crashed actor's state is stale: only its storage counts).
fn servers<'a>(state: &'a RaftState, live_only: bool) -> impl Iterator<Item = (usize, &'a KvServer)> + 'a {
    state.actor_states.iter().enumerate().filter_map(move |(i, s)| match &**s {
        ActorState::Server { server, .. } if !(live_only && state.crashed[i]) => Some((i, server)),
        _ => None,
    })
}

fn within_boundary(config: &ModelConfig, state: &RaftState) -> bool {
    state.network.len() <= config.max_in_flight
        && (config.max_in_flight_per_sender == usize::MAX
            || per_sender_in_flight(state) <= config.max_in_flight_per_sender)
        && (config.clients_crash || !state.crashed[usize::from(config.servers)..].contains(&true))
        && servers(state, false)
            .all(|(_, s)| s.node().term() <= config.max_term && s.node().log().last_index() as usize <= config.max_log)
}

/// The most messages in flight from any one actor.
fn per_sender_in_flight(state: &RaftState) -> usize {
    let mut from = vec![0; state.actor_states.len()];
    for envelope in state.network.iter_all() {
        from[usize::from(envelope.src)] += 1;
    }
    from.into_iter().max().unwrap_or(0)
}

/// Raft Fig. 3, Election Safety: at most one leader can be elected in a
/// given term. Judged from messages: only a leader sends AppendEntries or
/// heartbeats, and the record survives the sender's crash.
fn election_safety(_: &RaftModel, state: &RaftState) -> bool {
    state.history.leaders.values().all(|senders| senders.len() <= 1)
}

/// What two logs say alike about every index in `from..=to` that both
/// know: the same entry where both hold it, the same term where one (or
/// both) knows only the term, because the index is its compacted base (a
/// snapshot's last entry, `(last_included_index, last_included_term)`).
/// Entries below a log's base are covered by its snapshot: that log knows
/// nothing of them, so they are compared only through the state machines
/// (see [`state_machine_safety`]). Both logs must reach `to`.
fn agree(a: &RaftLog<raftkv::kv::Command>, b: &RaftLog<raftkv::kv::Command>, from: LogIndex, to: LogIndex) -> bool {
    if a.last_index() < to || b.last_index() < to {
        return false;
    }
    (from.max(1)..=to).all(|i| match (a.get(i), b.get(i)) {
        (Some(x), Some(y)) => x == y,
        _ => match (a.term_at(i), b.term_at(i)) {
            (Some(x), Some(y)) => x == y,
            _ => true, // compacted on one side, below its base
        },
    })
}

/// Raft Fig. 3, Log Matching: if two logs contain an entry with the same
/// index and term, the logs are identical in all entries up through it.
/// Over snapshot + suffix: an index counts as "contained" where the log
/// holds the entry or has it as its base (snapshot's last entry: index
/// and term known), and "identical" is [`agree`]: the same entry where
/// both hold it, the same term where one knows only the base.
fn log_matching(_: &RaftModel, state: &RaftState) -> bool {
    let all: Vec<&KvServer> = servers(state, false).map(|(_, s)| s).collect();
    all.iter().enumerate().all(|(i, a)| all[i + 1..].iter().all(|b| logs_match(a, b)))
}

/// [`log_matching`] for two servers.
fn logs_match(a: &KvServer, b: &KvServer) -> bool {
    let (la, lb) = (a.node().log(), b.node().log());
    let shared = la.last_index().min(lb.last_index());
    let same_term = (1..=shared).rev().find(|&x| la.term_at(x).is_some() && la.term_at(x) == lb.term_at(x));
    same_term.is_none_or(|x| agree(la, lb, 1, x))
}

/// Raft Fig. 3, Leader Completeness: if an entry is committed, it is in the
/// log of every leader of a later term. A server in term `t` that knows an
/// entry is committed learned it in a term `<= t`, so every leader of a term
/// `>= t` must hold its committed prefix: its log reaches the commit index
/// and [`agree`]s with the server's up to it (entries compacted on either
/// side are known by their base's index and term only, and are committed
/// on both: the rest is state machine safety's).
fn leader_completeness(_: &RaftModel, state: &RaftState) -> bool {
    servers(state, true).all(|(_, leader)| servers(state, false).all(|(_, s)| leads_completely(leader, s)))
}

/// [`leader_completeness`] for a live server and another: if the first
/// leads, it holds the second's committed prefix (or is of an older term).
fn leads_completely(leader: &KvServer, s: &KvServer) -> bool {
    !leader.node().is_leader()
        || leader.node().term() < s.node().term()
        || agree(leader.node().log(), s.node().log(), 1, s.node().commit_index())
}

/// Raft Fig. 3, State Machine Safety: if a server has applied a log entry at
/// a given index, no other server ever applies a different entry there.
/// Over snapshot + suffix, for two servers that applied up to `na` and
/// `nb`: their logs [`agree`] up to `min(na, nb)` (the same entry where
/// both hold it, the same term at a base); and two servers that applied
/// the same index hold the same state machine (data and session table),
/// which covers the entries both compacted: the machine is the only
/// record of them. (Applied entries are in the log or below its base:
/// `applied <= commit <= last_index`.)
fn state_machine_safety(_: &RaftModel, state: &RaftState) -> bool {
    let all: Vec<&KvServer> = servers(state, false).map(|(_, s)| s).collect();
    all.iter().enumerate().all(|(i, a)| all[i + 1..].iter().all(|b| apply_alike(a, b)))
}

/// [`state_machine_safety`] for two servers.
fn apply_alike(a: &KvServer, b: &KvServer) -> bool {
    let (ka, kb) = (a.kv(), b.kv());
    let (na, nb): (LogIndex, LogIndex) = (ka.applied_index(), kb.applied_index());
    agree(a.node().log(), b.node().log(), 1, na.min(nb))
        && (na != nb || (ka.data() == kb.data() && ka.sessions() == kb.sessions()))
}

/// The "always" properties that compare two servers, each a conjunction
/// over pairs: [`pair_violation`] judges one pair. (What DPOR checks on
/// pairs of concurrent states, [`dpor`].)
pub const PAIR_PROPERTIES: [&str; 3] = ["log matching", "leader completeness", "state machine safety"];

/// Whether two servers' states, each with whether it is live (not
/// crashed), break the pair property `name` (one of [`PAIR_PROPERTIES`]):
/// the same judgement the whole-state property makes of that pair.
pub fn pair_violation(name: &str, (a, a_live): (&KvServer, bool), (b, b_live): (&KvServer, bool)) -> bool {
    match name {
        "log matching" => !logs_match(a, b),
        "leader completeness" => (a_live && !leads_completely(a, b)) || (b_live && !leads_completely(b, a)),
        "state machine safety" => !apply_alike(a, b),
        _ => panic!("{name:?} is not a pair property"),
    }
}

/// Exactly-once: no replica's state holds an append's argument twice (each
/// script's append argument is unique). Judged on the state machine, so
/// the same whether it was built by applying entries or loaded from a
/// snapshot.
fn exactly_once(model: &RaftModel, state: &RaftState) -> bool {
    let appends: Vec<String> = model
        .cfg
        .scripts()
        .into_iter()
        .flatten()
        .filter_map(|op| match op {
            Op::Append { value, .. } => Some(value),
            _ => None,
        })
        .collect();
    servers(state, false).all(|(_, s)| appends.iter().all(|a| s.kv().get("k").matches(a.as_str()).count() <= 1))
}

/// Every completed client call took effect at one instant between its call
/// and its return (raftkv's own checker, which the simulator also uses).
/// An undecided verdict counts as a failure: with a handful of operations
/// the budget is never the limit, so it would mean a checker bug.
fn linearizable(_: &RaftModel, state: &RaftState) -> bool {
    let history = History { ops: state.history.ops.clone() };
    matches!(lincheck::check(&history, Budget::steps(1_000_000)), Verdict::Ok)
}

fn leader_elected(_: &RaftModel, state: &RaftState) -> bool {
    servers(state, true).any(|(_, s)| s.node().is_leader())
}

fn write_acknowledged(_: &RaftModel, state: &RaftState) -> bool {
    state.history.ops.iter().any(|o| o.kind != OpKind::Get && o.ret.is_some())
}

fn read_sees_other_write(_: &RaftModel, state: &RaftState) -> bool {
    let ops = &state.history.ops;
    ops.iter().filter(|g| g.kind == OpKind::Get && g.ret.is_some()).any(|g| {
        ops.iter().any(|w| w.kind != OpKind::Get && w.client != g.client && g.output.contains(w.value.as_str()))
    })
}

fn new_leader_serves_read(_: &RaftModel, state: &RaftState) -> bool {
    state.history.read_by_later_leader
}

/// Every server passes its checks: the core's own assertions (the node's
/// `check_invariants` and `check_step`, the replica's, the log's) and the
/// model runtime's (an installed snapshot moves the replica forward; what
/// is durable is a whole state, with no gap between the snapshot and the
/// log). A failed check leaves the server [`ActorState::Failed`].
fn no_server_fails(_: &RaftModel, state: &RaftState) -> bool {
    !state.actor_states.iter().any(|s| matches!(**s, ActorState::Failed { .. }))
}

/// What each failed server said (see [`ActorState::Failed`]).
pub fn failures(state: &RaftState) -> Vec<&str> {
    state
        .actor_states
        .iter()
        .filter_map(|s| match &**s {
            ActorState::Failed { why } => Some(why.as_str()),
            _ => None,
        })
        .collect()
}

/// Some server holds a snapshot and has compacted its log.
fn snapshot_taken(_: &RaftModel, state: &RaftState) -> bool {
    servers(state, false).any(|(_, s)| s.node().log().base().0 > 0)
}

fn follower_installs_snapshot(_: &RaftModel, state: &RaftState) -> bool {
    state.actor_states.iter().any(|s| matches!(&**s, ActorState::Server { seen, .. } if seen.installed))
}

/// Some server holds a configuration of four voters, the joiner among them.
fn four_voters(model: &RaftModel, state: &RaftState) -> bool {
    let join = model.cfg.founders();
    servers(state, false).any(|(_, s)| s.node().membership().voters.len() == 4 && s.node().membership().is_voter(join))
}

/// A leader commits a configuration without server 0 that has the joiner
/// as a voter: the whole plan, 3 → 4 → 3.
fn founder_removed(model: &RaftModel, state: &RaftState) -> bool {
    let join = model.cfg.founders();
    servers(state, true).any(|(_, s)| {
        let (_, committed) = s.node().membership_at(s.node().commit_index());
        s.node().is_leader() && committed.is_voter(join) && !committed.contains(0)
    })
}

fn restarts_from_snapshot(_: &RaftModel, state: &RaftState) -> bool {
    state.actor_states.iter().any(|s| matches!(&**s, ActorState::Server { seen, .. } if seen.restarted_from_snapshot))
}

#[cfg(test)]
mod tests {
    use super::agree;
    use raftkv::kv::{Command, Op};
    use raftkv::raft::{Entry, Payload, RaftLog, Term};

    fn entry(term: Term, value: &str) -> Entry<Command> {
        let op = Op::Append { key: "k".into(), value: value.into() };
        Entry { term, payload: Payload::Command(Command { client: 1, seq: 1, op }) }
    }

    /// Over snapshot + suffix: held entries are compared whole, a base by
    /// its term, and what lies below a base is not compared (nor panics).
    #[test]
    fn agree_compares_held_entries_and_bases_only() {
        let full = RaftLog::new(vec![entry(1, "a"), entry(1, "b"), entry(2, "c")]);
        let compacted = RaftLog::with_base((2, 1), vec![entry(2, "c")]);
        assert!(agree(&full, &compacted, 1, 3), "the same log, one side compacted");
        let other_base = RaftLog::with_base((2, 2), vec![entry(2, "c")]);
        assert!(!agree(&full, &other_base, 1, 3), "a base of another term disagrees");
        let other_entry = RaftLog::with_base((2, 1), vec![entry(2, "x")]);
        assert!(!agree(&full, &other_entry, 1, 3), "a held entry of the same term but another command disagrees");
        let both_compacted = RaftLog::with_base((3, 2), Vec::new());
        assert!(agree(&compacted, &both_compacted, 1, 3), "compacted on both sides up to the same base");
        assert!(!agree(&compacted, &RaftLog::new(Vec::new()), 1, 1), "a log that does not reach the index");
    }
}
