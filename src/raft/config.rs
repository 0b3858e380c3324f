//! How a node is tuned, and which known bugs a test has switched on.

use super::types::{NodeId, MAX_NODES, MAX_NODE_ID};
use serde::{Deserialize, Serialize};

/// Static configuration of one Raft node. All durations are in ticks: the
/// runtime decides how long a tick is (the simulator uses 10 ms of virtual
/// time, the real server a wall-clock interval).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Config {
    /// This node's id; `< members` for a founding member, at most
    /// [`MAX_NODE_ID`] for one that joins later.
    pub id: NodeId,
    /// The initial configuration: voters `0..members`, until the log or a
    /// snapshot says otherwise. 0 for a server joining a running cluster:
    /// it has no configuration (and never campaigns) until a leader sends
    /// it one.
    pub members: u8,
    /// A follower that hears from no leader for a random number of ticks in
    /// `[election_ticks, 2 * election_ticks)` starts a (pre-)election.
    pub election_ticks: u32,
    /// Draw each election timeout at random from `[election_ticks, 2 *
    /// election_ticks)` (Raft §5.2). A model checker, whose timers may fire
    /// at any moment anyway, turns this off: the timeout is then exactly
    /// `election_ticks` and the RNG never advances, so equal states stay equal.
    pub election_jitter: bool,
    /// A leader sends heartbeats every `heartbeat_ticks`.
    pub heartbeat_ticks: u32,
    /// Seeds the node's own RNG (election timeouts); only randomness it uses.
    pub seed: u64,
    /// At most this many AppendEntries may be unacknowledged per follower
    /// (pipelining window). Only full batches (`max_batch_entries`) are
    /// pipelined: a partial one waits for the acknowledgement of the one in
    /// flight, so that under load a round trip carries one batch.
    pub max_inflight: usize,
    /// At most this many entries ride in one AppendEntries (batching).
    pub max_batch_entries: usize,
    /// At most this many reads may wait for leadership confirmation; more
    /// are refused at once rather than queued without bound.
    pub max_pending_reads: usize,
    /// A learner being caught up for its promotion
    /// ([`Input::PromoteWhenCaughtUp`](super::Input)) gets this many rounds.
    pub catch_up_rounds: u32,
    /// At most this many messages wait for their batch to be reported
    /// durable (a slow disk under a flood of AppendEntries); beyond it the
    /// oldest is dropped, as a lossy network would.
    pub max_held_messages: usize,
    /// A snapshot travels in chunks of at most this many bytes.
    pub snapshot_chunk_bytes: usize,
    /// At most this many snapshot chunks are unacknowledged per follower.
    pub snapshot_chunks_in_flight: usize,
    /// A follower refuses a snapshot larger than this (it buffers a
    /// snapshot whole before installing it).
    pub max_snapshot_bytes: u64,
    /// After a snapshot, keep this many entries before it in the log, so
    /// that a follower only a little behind still catches up from the log
    /// rather than by a snapshot.
    pub snapshot_trailing_entries: u64,
    /// ... and at most this many bytes of commands ([`CommandBytes`]), so
    /// that large values do not make the trailing window hundreds of MiB.
    ///
    /// [`CommandBytes`]: super::types::CommandBytes
    pub snapshot_trailing_bytes: u64,
    /// Serve reads under a leader lease (thesis §6.4.1, [`super::lease`])
    /// for this many of the leader's ticks after a quorum echoed a round;
    /// 0 (the default) for ReadIndex rounds only. At most
    /// [`lease_ticks_for`]`(election_ticks, drift)` for the clocks' drift
    /// bound: every server of a cluster must agree on it, since with it on
    /// followers also ignore more of what could unseat their leader.
    ///
    /// [`lease_ticks_for`]: super::lease::lease_ticks_for
    #[serde(default)]
    pub lease_ticks: u32,
    /// Known bugs to switch on, for tests that show the checks catch them.
    pub bugs: InjectedBugs,
}

impl Config {
    /// [`Config::new`] for node `id` of a cluster founded by voters
    /// `0..founders`: a founder, or (any other id) a server that starts
    /// outside the configuration and joins when an operator adds it.
    pub fn founded_by(id: NodeId, founders: u8, seed: u64) -> Config {
        Config::new(id, if id < founders { founders } else { 0 }, seed)
    }

    /// Sensible defaults for a node of a `members`-node cluster.
    pub fn new(id: NodeId, members: u8, seed: u64) -> Config {
        Config {
            id,
            members,
            election_ticks: 30,
            election_jitter: true,
            heartbeat_ticks: 5,
            seed,
            max_inflight: 8,
            max_batch_entries: 64,
            max_pending_reads: 1024,
            catch_up_rounds: 10,
            max_held_messages: 4096,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_chunks_in_flight: 4,
            max_snapshot_bytes: 1 << 30,
            snapshot_trailing_entries: 10_240,
            snapshot_trailing_bytes: 64 << 20,
            lease_ticks: 0,
            bugs: InjectedBugs::default(),
        }
    }

    /// Turns lease reads on for clocks that run at most `drift` (a
    /// fraction) fast or slow: [`Config::lease_ticks`] as long as that
    /// allows (with bug (s), as long as true clocks would allow).
    pub fn with_lease_reads(mut self, drift: f64) -> Config {
        let assumed = if self.bugs.lease_ignores_drift { 0.0 } else { drift };
        self.lease_ticks = super::lease::lease_ticks_for(self.election_ticks, assumed);
        self
    }

    /// Checks the relations the node relies on; a runtime calls this before
    /// building a node from user-supplied settings.
    pub fn validate(&self) -> Result<(), String> {
        let n = usize::from(self.members);
        if n > MAX_NODES {
            return Err(format!("members must be 0..={MAX_NODES}, got {n}"));
        }
        if n > 0 && self.id >= self.members {
            return Err(format!("id {} is not a member of 0..{}", self.id, self.members));
        }
        if self.id > MAX_NODE_ID {
            return Err(format!("id {} is above {MAX_NODE_ID}", self.id));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= 2 * self.heartbeat_ticks {
            return Err("need 0 < 2 * heartbeat_ticks < election_ticks".into());
        }
        if self.lease_ticks >= self.election_ticks {
            return Err("lease_ticks must be below election_ticks (see lease_ticks_for)".into());
        }
        if self.max_inflight == 0
            || self.max_batch_entries == 0
            || self.max_pending_reads == 0
            || self.max_held_messages == 0
            || self.snapshot_chunk_bytes == 0
            || self.snapshot_chunks_in_flight == 0
            || self.max_snapshot_bytes == 0
        {
            return Err("max_inflight, max_batch_entries, max_pending_reads, max_held_messages and the snapshot \
                        chunk size, chunks in flight and size bound must be positive"
                .into());
        }
        Ok(())
    }
}

/// Known Raft bugs that tests, fuzzers and models can switch on, to show that
/// the checks catch them. All off by default; never switch one on in a real
/// deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InjectedBugs {
    /// (a) Commit by counting replicas of an entry of a *previous* term
    /// (the scenario of Raft Figure 8).
    pub commit_previous_term: bool,
    /// (b) Grant votes without the "candidate's log is at least as
    /// up-to-date" check (Raft §5.4.1).
    pub vote_without_log_check: bool,
    /// (c) Serve reads without confirming leadership with a quorum: a
    /// deposed leader answers from stale state.
    pub read_without_quorum: bool,
    /// (d) Serve reads before the new leader's no-op has committed (the stale
    /// read Jepsen found in RedisRaft).
    pub read_before_noop: bool,
    /// (e) Skip the session table: a retried command is applied again.
    /// (Honoured by the KV state machine, carried here so one switch set
    /// describes a run.)
    pub skip_session_table: bool,
    /// (g) A state machine snapshot leaves out the session table: after an
    /// install, a retried command that lands in the log again is executed
    /// again. (Honoured by the KV layer, like (e).)
    pub snapshot_without_sessions: bool,
    /// (h) A follower installs a snapshot that is not newer than its commit
    /// index: its state machine goes back.
    pub install_older_snapshot: bool,
    /// (i) A follower whose log holds another entry at the snapshot's last
    /// index keeps the entries after it on install, though any of them may
    /// conflict with the leader's.
    pub install_keeps_conflicting_entries: bool,
    /// (j) Compaction drops the log up to the commit index, not up to the
    /// snapshot: committed entries not yet applied are lost.
    pub compact_unapplied: bool,
    /// (k) The runtime reports a snapshot taken before it is durable, so the
    /// log can be trimmed first: a crash in between leaves a gap. (Honoured
    /// by the simulator's runtime.)
    pub trim_before_snapshot_durable: bool,
    /// (l) The bounded session table opens a session for any client it does
    /// not know, though the command may retry one executed before its
    /// session was evicted: executed twice. (Honoured by the KV layer.)
    pub ignore_forgotten_sessions: bool,
    /// (f) Reply to a vote before `voted_for` is durable: the reply goes out
    /// at once and the vote is never persisted, so after a crash the node
    /// may vote twice in one term.
    pub vote_before_persist: bool,
    /// (m) A leader proposes a configuration change before it has committed
    /// an entry of its own term: the bug in single-server changes as first
    /// published (Ongaro, raft-dev, 2015).
    pub change_before_term_commit: bool,
    /// (n) A leader proposes a configuration change while another is not
    /// yet committed: two changes in flight can move the configuration by
    /// two voters, and two majorities need not overlap.
    pub concurrent_changes: bool,
    /// (q) Learners count in the majorities that commit, confirm reads and
    /// keep a leader in office (CheckQuorum), while elections count voters
    /// only: a majority of the members need not overlap a majority of the
    /// voters.
    pub learner_in_quorum: bool,
    /// (p) Elections skip PreVote, and a voter heeds vote requests within
    /// its leader lease: a server that missed its own removal keeps timing
    /// out and, with ever higher terms, deposes the cluster's leader again
    /// and again (thesis §4.2.3). A liveness bug: no safety check fires;
    /// counting the elections does.
    pub without_prevote: bool,
    /// (r) A server takes a configuration into force once it knows the
    /// entry committed, not once it is in its log (thesis §4.1 says why
    /// not): the commit index is not durable, so a server that restarts
    /// falls back to the configuration at its snapshot, older than what its
    /// log holds; two changes later, its majority and the cluster's need
    /// not overlap.
    pub config_on_commit: bool,
    /// (s) The leader lease is as long as the followers' election timeout
    /// on a true clock: it leaves out that clocks drift, so a slow leader
    /// serves reads after fast followers have elected another.
    pub lease_ignores_drift: bool,
    /// (t) With lease reads on, a server that restarts votes at once, as
    /// one that never heard from a leader: before its crash it may have
    /// echoed the round a leader's lease counts on, so a new leader can be
    /// elected within that lease.
    pub restart_forgets_lease: bool,
}

impl InjectedBugs {
    pub fn any(&self) -> bool {
        *self != InjectedBugs::default()
    }

    /// Every bug by name, for test tables and the CLI.
    pub const NAMES: [&'static str; 19] = [
        "commit_previous_term",
        "vote_without_log_check",
        "read_without_quorum",
        "read_before_noop",
        "skip_session_table",
        "vote_before_persist",
        "snapshot_without_sessions",
        "install_older_snapshot",
        "install_keeps_conflicting_entries",
        "compact_unapplied",
        "trim_before_snapshot_durable",
        "ignore_forgotten_sessions",
        "change_before_term_commit",
        "concurrent_changes",
        "learner_in_quorum",
        "without_prevote",
        "config_on_commit",
        "lease_ignores_drift",
        "restart_forgets_lease",
    ];

    /// The set with only the named bug on.
    pub fn only(name: &str) -> Option<InjectedBugs> {
        let mut b = InjectedBugs::default();
        b.switch_on(name).then_some(b)
    }

    /// Switches on the named bug as well; `false` for a name not in
    /// [`Self::NAMES`].
    pub fn switch_on(&mut self, name: &str) -> bool {
        let b = self;
        match name {
            "commit_previous_term" => b.commit_previous_term = true,
            "vote_without_log_check" => b.vote_without_log_check = true,
            "read_without_quorum" => b.read_without_quorum = true,
            "read_before_noop" => b.read_before_noop = true,
            "skip_session_table" => b.skip_session_table = true,
            "vote_before_persist" => b.vote_before_persist = true,
            "snapshot_without_sessions" => b.snapshot_without_sessions = true,
            "install_older_snapshot" => b.install_older_snapshot = true,
            "install_keeps_conflicting_entries" => b.install_keeps_conflicting_entries = true,
            "compact_unapplied" => b.compact_unapplied = true,
            "trim_before_snapshot_durable" => b.trim_before_snapshot_durable = true,
            "ignore_forgotten_sessions" => b.ignore_forgotten_sessions = true,
            "change_before_term_commit" => b.change_before_term_commit = true,
            "concurrent_changes" => b.concurrent_changes = true,
            "learner_in_quorum" => b.learner_in_quorum = true,
            "without_prevote" => b.without_prevote = true,
            "config_on_commit" => b.config_on_commit = true,
            "lease_ignores_drift" => b.lease_ignores_drift = true,
            "restart_forgets_lease" => b.restart_forgets_lease = true,
            _ => return false,
        }
        true
    }
}

/// A configuration as a node (or a server around it) holds it: fixed for
/// the holder's life, and so left out of the holder's hash, which the model
/// checkers fingerprint every state by. No two states of one run differ in
/// it: a server's configuration is set when it starts and only its id ever
/// changes, in a renumbering that also moves the server to the position
/// of its new id (`models/src/symmetry.rs`). Hashing it cost 5.6% of a
/// model search (two copies per server, each with every tunable).
/// Equality still compares it, and it prints as the value it holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Fixed<T>(pub T);

impl<T: std::fmt::Debug> std::fmt::Debug for Fixed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> std::hash::Hash for Fixed<T> {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl<T> std::ops::Deref for Fixed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Fixed<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

    /// Two nodes' configurations hash alike inside `Fixed` (so a state's
    /// fingerprint skips them) and still tell the states apart by equality.
    #[test]
    fn a_fixed_value_is_left_out_of_the_hash_not_out_of_equality() {
        let hash = |v: &(u8, Fixed<Config>)| BuildHasherDefault::<DefaultHasher>::default().hash_one(v);
        let (a, b) = ((7, Fixed(Config::new(0, 3, 1))), (7, Fixed(Config::new(1, 3, 2))));
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(a, b);
        assert_ne!(hash(&a), hash(&(8, Fixed(Config::new(0, 3, 1)))), "the rest is hashed");
        assert_eq!(format!("{:?}", a.1), format!("{:?}", Config::new(0, 3, 1)), "prints as what it holds");
    }
}
