//! [`RaftNode`]: one Raft server as a pure state machine.

use super::config::{Config, Fixed};
use super::durability::Durability;
use super::lease::LeaderLease;
use super::log::RaftLog;
use super::membership::{ChangeError, Membership, MembershipChange, NodeSet};
use super::progress::{Mode, Progress};
use super::ready::{BatchNumber, DurableState, Input, LogWrite, Persist, ReadId, Ready, Refusal};
use super::types::{
    CommandBytes, Entry, Envelope, HardState, LogIndex, Message, NodeId, Payload, RejectHint, Role, Snapshot,
    SnapshotMeta, Term, INDEX_MAX, MAX_NODE_ID, TERM_MAX,
};
use crate::rng::Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

/// One Raft server: PreVote, CheckQuorum, pipelined and batched replication,
/// fast log backtracking, a no-op on election and ReadIndex reads.
///
/// Methods come in three kinds:
/// - the constructor [`RaftNode::restart`], from durable state;
/// - one input method, [`RaftNode::step`], which returns a [`Ready`] that
///   the runtime carries out under the persistence contract of
///   [`super::ready`] (durability comes back as [`Input::Persisted`]);
/// - getters (`term`, `role`, `leader`, `commit_index`, `log`, …).
///
/// The node never blocks, never reads a clock (time is [`Input::Tick`]) and
/// draws randomness only from the RNG seeded by [`Config::seed`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RaftNode<C> {
    config: Fixed<Config>,
    rng: Rng,
    hard: HardState,
    /// The hard state last handed out in a batch.
    handed_out_hard: HardState,
    log: RaftLog<C>,
    /// Which batches are durable, and so how much of the log is stable.
    durability: Durability,
    /// Messages waiting for the batch they depend on to be reported
    /// durable: `(batch, message)`, in the order they were sent. At most
    /// [`Config::max_held_messages`].
    held: VecDeque<(BatchNumber, Envelope<C>)>,
    /// Held messages dropped because the bound was reached (Raft tolerates
    /// the loss; a count for the runtime's metrics).
    held_dropped: u64,
    role: Role,
    leader: Option<NodeId>,
    commit: LogIndex,
    /// Highest index handed to the runtime for applying: never above the
    /// commit index nor the stable (durable) prefix.
    handed_out: LogIndex,
    /// Ticks since the last election reset (for a leader: since the last
    /// CheckQuorum period began).
    election_elapsed: u32,
    /// This term's randomized election timeout.
    election_timeout: u32,
    heartbeat_elapsed: u32,
    /// Who voters and learners are: the latest configuration in the log
    /// (committed or not, thesis §4.1), else the snapshot's, else the
    /// initial one ([`Config::members`]).
    membership: Membership,
    /// The index of the entry that set `membership` (the snapshot's index,
    /// or 0 for the initial configuration).
    membership_index: LogIndex,
    /// Who granted its (pre-)vote this (pre-)election.
    granted: NodeSet,
    /// Who refused.
    refused: NodeSet,
    /// Per-member replication state (the leader's own entry included);
    /// empty unless leader.
    progress: BTreeMap<NodeId, Progress>,
    /// Leader: handing leadership over (thesis §3.10).
    transfer: Option<Transfer>,
    /// Leader: a learner caught up for its promotion (thesis §4.2.1).
    catch_up: Option<CatchUp>,
    /// Leader: the latest read round sent with heartbeats and appends.
    read_round: u64,
    /// Leader: reads waiting for a quorum to acknowledge `round`, in order.
    pending_reads: VecDeque<(ReadId, u64)>,
    /// Leader, with lease reads on ([`Config::lease_ticks`]): how long reads
    /// may be served without a round.
    lease: LeaderLease,
    /// Reads answered under the lease, without a round (for metrics).
    reads_by_lease: u64,
    /// With lease reads on, a server just restarted refuses elections for
    /// an election timeout, as one that hears from a leader does: before
    /// the crash it may have echoed a round that a leader's lease counts on.
    quiet_after_restart: bool,
    /// The latest snapshot this node holds (taken here or installed): what
    /// a leader sends a follower that needs compacted entries. The log's
    /// base never passes it.
    snapshot: Option<Snapshot>,
    /// Follower: the snapshot being received, chunk by chunk (at most
    /// [`Config::max_snapshot_bytes`]).
    incoming: Option<Incoming>,
    /// Follower: a snapshot received whole and handed out for checking,
    /// with who sent it; waits for [`Input::InstallSnapshot`].
    received: Option<(NodeId, SnapshotMeta)>,
    /// An installed snapshot whose batch is not yet reported durable: it is
    /// handed to the state machine, and committed entries after it, once it
    /// is.
    installing: Option<(BatchNumber, Snapshot)>,
    /// Per-step output, always empty between steps.
    out: Outbox<C>,
}

/// A leadership transfer in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Transfer {
    to: NodeId,
    /// Ticks since it began; abandoned after an election timeout.
    ticks: u32,
    /// `TimeoutNow` was sent.
    told: bool,
}

/// A catch-up round that lasts this many election timeouts without the
/// learner finishing it is given up: the learner is unreachable or far too
/// slow.
const CATCH_UP_ROUND_MAX_ELECTIONS: u32 = 10;

/// A learner being caught up before its promotion (thesis §4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CatchUp {
    id: NodeId,
    /// The round ends when the learner holds this index: the leader's last
    /// when the round began.
    round_end: LogIndex,
    /// Ticks since the round began.
    ticks: u32,
    /// Rounds begun so far.
    rounds: u32,
}

/// A snapshot arriving in chunks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Incoming {
    from: NodeId,
    term: Term,
    meta: SnapshotMeta,
    membership: Membership,
    total: u64,
    data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Outbox<C> {
    messages: Vec<(After, Envelope<C>)>,
    reads: Vec<(ReadId, Result<LogIndex, Refusal>)>,
    promotions: Vec<(NodeId, Result<LogIndex, Refusal>)>,
    /// Lowest log index changed in this step.
    dirty_from: Option<LogIndex>,
    /// The log was compacted to here in this step.
    compacted: Option<SnapshotMeta>,
    /// A snapshot installed in this step, to make durable.
    installed: Option<Snapshot>,
    /// A snapshot received whole, for the runtime to check.
    received: Option<Snapshot>,
    /// A durable installed snapshot, for the state machine.
    install: Option<Snapshot>,
}

/// What a message sent during a step must wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum After {
    /// A batch already numbered (the one holding the term and vote), or 0.
    Batch(BatchNumber),
    /// Every batch handed out up to the end of this step, this step's own
    /// included: the message may tell of anything the node now holds.
    ThisStep,
}

impl<C> Default for Outbox<C> {
    fn default() -> Self {
        Outbox {
            messages: Vec::new(),
            reads: Vec::new(),
            promotions: Vec::new(),
            dirty_from: None,
            compacted: None,
            installed: None,
            received: None,
            install: None,
        }
    }
}

impl<C: Clone + CommandBytes> RaftNode<C> {
    /// A node starting from what it had made durable (all empty for a
    /// brand-new node). Volatile state — role, leader — starts afresh, as
    /// after a power cut; the commit and applied indexes start at the
    /// snapshot's, whose state the runtime loads itself.
    ///
    /// The log must follow the snapshot as Raft Figure 13 has it: if it
    /// holds the snapshot's last entry, the entries after it stay, else the
    /// log is dropped, and the first step's batch drops it on the disk too.
    /// A snapshot of a later term than the stored one raises the term to
    /// its own (no vote), which the first batch stores.
    /// (A crash can fall between writing an installed snapshot and
    /// rewriting the log; and a snapshot of applied entries may be saved
    /// before the log under it is durable: see [`crate::raft::ready`].)
    ///
    /// Panics if `config` is invalid ([`Config::validate`]), or if the
    /// snapshot is older than the log's base: those are programming errors
    /// of the caller, not input errors.
    pub fn restart(config: Config, durable: DurableState<C>) -> RaftNode<C> {
        if let Err(e) = config.validate() {
            panic!("invalid raft config: {e}");
        }
        let mut rng = node_rng(&config);
        let election_timeout = election_timeout(&mut rng, &config);
        let DurableState { hard: durable_hard, snapshot, base, log } = durable;
        // A snapshot of applied entries may be of a term whose hard state
        // was not durable yet: the node is in that term at least, with no
        // vote (a vote it cast there was held until the crash, never sent),
        // and its first batch says so.
        let hard = match &snapshot {
            Some(s) if s.meta.term > durable_hard.term => HardState { term: s.meta.term, voted_for: None },
            _ => durable_hard,
        };
        let mut log = RaftLog::with_base((base.index, base.term), log);
        let covered = snapshot.as_ref().map_or(0, |s| s.meta.index);
        let mut dropped = None;
        if let Some(s) = &snapshot {
            assert!(s.meta.index >= base.index, "a snapshot older than the log's base");
            if s.meta.index > base.index {
                // Keeps the log's entries before the snapshot (the trailing
                // window) when they agree with it.
                if log.term_at(s.meta.index) != Some(s.meta.term) {
                    log.restore(s.meta.index, s.meta.term);
                    dropped = Some(s.meta);
                }
            }
        }
        let mut node = RaftNode {
            rng,
            hard,
            handed_out_hard: durable_hard,
            durability: Durability::restarted(log.last_index()),
            log,
            held: VecDeque::new(),
            held_dropped: 0,
            role: Role::Follower,
            leader: None,
            commit: covered,
            handed_out: covered,
            election_elapsed: 0,
            election_timeout,
            heartbeat_elapsed: 0,
            membership: Membership::initial(config.members),
            membership_index: 0,
            granted: NodeSet::EMPTY,
            refused: NodeSet::EMPTY,
            progress: BTreeMap::new(),
            transfer: None,
            catch_up: None,
            read_round: 0,
            pending_reads: VecDeque::new(),
            lease: LeaderLease::default(),
            reads_by_lease: 0,
            // (A server that never entered a term never echoed a round.)
            quiet_after_restart: config.lease_ticks > 0 && hard.term > 0 && !config.bugs.restart_forgets_lease,
            snapshot,
            incoming: None,
            received: None,
            installing: None,
            out: Outbox::default(),
            config: Fixed(config),
        };
        if let Some(meta) = dropped {
            // The disk still holds the dropped log. The first batch drops
            // it there too, before any write after the snapshot: else that
            // write would leave a gap after the log's old end, or follow
            // entries of another history.
            node.out.compacted = Some(meta);
            node.mark_dirty(meta.index + 1);
        }
        node.reread_membership();
        node
    }

    /// Feeds one input and returns what the runtime must do about it.
    pub fn step(&mut self, input: Input<C>) -> Ready<C> {
        let before = (self.hard, self.commit, self.handed_out, self.durability.durable_batch());
        let mut proposed = None;
        match input {
            Input::Tick => self.tick(),
            Input::Message(envelope) => self.receive(envelope),
            Input::Propose(command) => proposed = Some(self.propose(command)),
            Input::ChangeMembership(change) => proposed = Some(self.change_membership(change)),
            Input::TransferLeadership(to) => proposed = Some(self.transfer_leadership(to)),
            Input::PromoteWhenCaughtUp(id) => proposed = Some(self.promote_when_caught_up(id)),
            Input::Read(id) => self.read(id),
            Input::Persisted(number) => self.persisted(number),
            Input::SnapshotTaken(snapshot) => self.snapshot_taken(snapshot),
            Input::InstallSnapshot(snapshot) => self.install_snapshot(snapshot),
        }
        let ready = self.take_ready(proposed);
        self.check_invariants();
        self.check_step(before, &ready);
        ready
    }

    /// The same node in a cluster whose servers are numbered differently:
    /// every node id it holds (its own, its vote, its leader, its per-peer
    /// progress and vote tallies, its unsent messages) goes through
    /// `new_id`, which must be a permutation of `0..members`. Renumbering
    /// every server of a cluster alike gives an equivalent cluster, which
    /// is what a model checker's symmetry reduction needs; nothing else
    /// calls it. Only without election jitter: the id seeds the RNG, so with
    /// jitter, servers differ by more than their numbers.
    pub fn renumbered(&self, new_id: impl Fn(NodeId) -> NodeId) -> RaftNode<C> {
        assert!(!self.config.election_jitter, "renumbering needs election_jitter off");
        let members = self.membership.members();
        debug_assert!(members.map(&new_id) == members, "not a permutation of the members");
        let mut node = self.clone();
        node.config.id = new_id(self.config.id);
        node.rng = node_rng(&node.config); // never drawn from without jitter
        node.hard.voted_for = self.hard.voted_for.map(&new_id);
        node.handed_out_hard.voted_for = self.handed_out_hard.voted_for.map(&new_id);
        node.leader = self.leader.map(&new_id);
        node.membership.voters = self.membership.voters.map(&new_id);
        node.membership.learners = self.membership.learners.map(&new_id);
        node.granted = self.granted.map(&new_id);
        node.refused = self.refused.map(&new_id);
        node.progress = self.progress.iter().map(|(id, progress)| (new_id(*id), progress.clone())).collect();
        let held = node.held.iter_mut().map(|(_, e)| e);
        for envelope in node.out.messages.iter_mut().map(|(_, e)| e).chain(held) {
            envelope.from = new_id(envelope.from);
            envelope.to = new_id(envelope.to);
        }
        if let Some(incoming) = &mut node.incoming {
            incoming.from = new_id(incoming.from);
        }
        if let Some(t) = &mut node.transfer {
            t.to = new_id(t.to);
        }
        if let Some(c) = &mut node.catch_up {
            c.id = new_id(c.id);
        }
        if let Some((from, _)) = &mut node.received {
            *from = new_id(*from);
        }
        for (_, result) in &mut node.out.reads {
            if let Err(Refusal::NotLeader { leader }) = result {
                *leader = leader.map(&new_id);
            }
        }
        node
    }

    // ----- getters -------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.config.id
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn term(&self) -> Term {
        self.hard.term
    }
    pub fn hard_state(&self) -> HardState {
        self.hard
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
    /// Who this node believes leads its current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }
    pub fn log(&self) -> &RaftLog<C> {
        &self.log
    }
    /// The latest snapshot this node holds, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }
    /// The highest index handed out for applying (or installed).
    pub fn handed_out(&self) -> LogIndex {
        self.handed_out
    }
    /// The longest prefix of the log that is durable (reported through
    /// [`Input::Persisted`]) and equal to the in-memory log.
    pub fn stable_index(&self) -> LogIndex {
        self.durability.stable()
    }
    /// The highest batch number reported durable, and the last handed out.
    pub fn batches(&self) -> (BatchNumber, BatchNumber) {
        (self.durability.durable_batch(), self.durability.last_batch())
    }
    /// Messages waiting for their batch to become durable.
    pub fn held_messages(&self) -> usize {
        self.held.len()
    }
    /// In a (pre-)election: who granted and who refused, so far.
    pub fn votes(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        (self.granted.iter().collect(), self.refused.iter().collect())
    }
    /// A leader's view of each member (its own entry included); empty
    /// unless leader.
    pub fn progress(&self) -> &BTreeMap<NodeId, Progress> {
        &self.progress
    }
    /// The cluster's configuration as this node knows it.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// The configuration in force once the entry at `index` (at or after
    /// the snapshot's last, if any) is applied, and the index of the entry
    /// that set it: the latest `Config` entry up to `index`, else the
    /// snapshot's configuration, else the initial one (index 0).
    pub fn membership_at(&self, index: LogIndex) -> (LogIndex, Membership) {
        let covered = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let floor = covered.max(self.log.base().0);
        match (self.latest_config_entry(floor + 1, index), &self.snapshot) {
            (Some(found), _) => found,
            // (An empty one was stored before snapshots held configurations.)
            (None, Some(s)) if !s.membership.voters.is_empty() => (s.meta.index, s.membership),
            (None, _) => (0, Membership::initial(self.config.members)),
        }
    }
    /// The held messages, oldest first, each with the batch it waits for.
    pub fn held(&self) -> impl Iterator<Item = (BatchNumber, &Envelope<C>)> {
        self.held.iter().map(|(batch, envelope)| (*batch, envelope))
    }
    /// Held messages dropped because [`Config::max_held_messages`] was reached.
    pub fn held_dropped(&self) -> u64 {
        self.held_dropped
    }
    /// How many reads this node answered under its leader lease, without
    /// a round of messages (since it started).
    pub fn reads_by_lease(&self) -> u64 {
        self.reads_by_lease
    }

    /// True once this leader has committed an entry of its own term, and so
    /// knows every entry committed before it (thesis §6.4).
    pub fn committed_in_term(&self) -> bool {
        self.log.term_at(self.commit) == Some(self.hard.term)
    }

    // ----- time ----------------------------------------------------------

    fn tick(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.quiet_after_restart = false;
        }
        if self.role == Role::Leader {
            self.heartbeat_elapsed += 1;
            if self.lease_reads() {
                self.lease.tick(self.config.lease_ticks);
            }
            if let Some(t) = &mut self.transfer {
                t.ticks += 1;
                if t.ticks >= self.config.election_ticks {
                    self.transfer = None; // the target did not take over: lead on
                }
            }
            if let Some(c) = &mut self.catch_up {
                c.ticks += 1;
            }
            self.advance_catch_up();
            if self.election_elapsed >= self.config.election_ticks {
                self.election_elapsed = 0;
                if !self.check_quorum() {
                    return;
                }
            }
            if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
                self.heartbeat_elapsed = 0;
                self.heartbeat();
            }
        } else if self.election_elapsed >= self.election_timeout {
            if self.membership.is_voter(self.config.id) {
                self.start_pre_election();
            } else {
                self.reset_election_timer(); // a learner (or a removed server) never campaigns
            }
        }
    }

    /// CheckQuorum: a leader that has not heard from a majority during the
    /// last election period steps down, so that a partitioned leader stops
    /// accepting requests it cannot commit and stops answering reads.
    /// Returns whether it is still leader.
    fn check_quorum(&mut self) -> bool {
        debug_assert_eq!(self.role, Role::Leader, "only a leader checks its quorum");
        let me = self.config.id;
        let active: NodeSet =
            self.progress.iter().filter(|&(&id, p)| id == me || p.recently_active).map(|(&id, _)| id).collect();
        for p in self.progress.values_mut() {
            p.recently_active = false;
        }
        if !self.counted().is_quorum(active) {
            self.become_follower(self.hard.term, None);
            return false;
        }
        true
    }

    /// Whether this node heard from a live leader within the minimum
    /// election timeout. Such a node ignores (pre-)vote requests: together
    /// with PreVote this keeps a rejoining node from deposing a healthy leader.
    fn in_leader_lease(&self) -> bool {
        (self.leader.is_some() || self.quiet_after_restart) && self.election_elapsed < self.config.election_ticks
    }

    /// Whether reads may be served under a leader lease ([`super::lease`]).
    pub fn lease_reads(&self) -> bool {
        self.config.lease_ticks > 0
    }

    // ----- elections -----------------------------------------------------

    fn start_pre_election(&mut self) {
        self.reset_election_timer();
        if self.hard.term >= TERM_MAX {
            return; // unreachable by a correct cluster; never overflow the term
        }
        self.leader = None;
        self.role = Role::PreCandidate;
        self.granted = NodeSet::EMPTY;
        self.refused = NodeSet::EMPTY;
        self.record_vote(self.config.id, true);
        debug_assert_eq!(self.granted.len(), 1, "a pre-election starts with our own grant only");
        if self.tally() == Some(true) || self.config.bugs.without_prevote {
            return self.campaign(false);
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let term = self.hard.term + 1; // proposed, not taken: a PreVote raises no term
        self.broadcast_to(self.membership.voters, |_| Message::PreVote { term, last_log_index, last_log_term });
    }

    /// Starts an election. `transfer`: our leader told us to (TimeoutNow),
    /// so there is no pre-election, and voters in their leader lease grant
    /// the vote all the same.
    fn campaign(&mut self, transfer: bool) {
        debug_assert!(
            self.role == Role::PreCandidate || transfer,
            "a campaign follows a won pre-election or a TimeoutNow"
        );
        debug_assert!(self.hard.term < TERM_MAX, "start_pre_election stops below TERM_MAX");
        self.reset_election_timer();
        self.hard.term += 1;
        self.hard.voted_for = Some(self.config.id);
        self.leader = None;
        // A snapshot half received from an old leader is of no more use.
        self.incoming = None;
        self.received = None;
        self.role = Role::Candidate;
        self.granted = NodeSet::EMPTY;
        self.refused = NodeSet::EMPTY;
        self.record_vote(self.config.id, true);
        if self.tally() == Some(true) {
            return self.become_leader();
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let term = self.hard.term;
        self.broadcast_to(self.membership.voters, |_| Message::Vote { term, last_log_index, last_log_term, transfer });
    }

    /// Counts `from`'s answer; only its first answer in an election counts
    /// (later ones are duplicates or stragglers from an earlier round).
    fn record_vote(&mut self, from: NodeId, granted: bool) {
        debug_assert!(matches!(self.role, Role::PreCandidate | Role::Candidate), "votes count only in an election");
        if self.granted.union(self.refused).contains(from) {
            return;
        }
        if granted {
            self.granted.insert(from);
        } else {
            self.refused.insert(from);
        }
    }

    /// `Some(true)`: won; `Some(false)`: lost; `None`: undecided. Only
    /// voters' answers count (also with bug (q), which is about what
    /// replicates).
    fn tally(&self) -> Option<bool> {
        if self.membership.is_quorum(self.granted) {
            Some(true)
        } else if self.membership.is_quorum(self.refused) {
            Some(false)
        } else {
            None
        }
    }

    /// Would this node vote for a candidate whose log ends at
    /// (`last_log_index`, `last_log_term`)? (Raft §5.4.1)
    fn log_ok(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        self.config.bugs.vote_without_log_check || self.log.is_up_to_date(last_log_index, last_log_term)
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        debug_assert!(term >= self.hard.term);
        if term > self.hard.term {
            self.hard.term = term;
            self.hard.voted_for = None;
            // A snapshot half received from an old leader is of no more use,
            // and its buffer may hold up to `max_snapshot_bytes`.
            self.incoming = None;
        }
        if self.role == Role::Leader {
            let refusal = Refusal::NotLeader { leader };
            for (id, _) in std::mem::take(&mut self.pending_reads) {
                self.out.reads.push((id, Err(refusal)));
            }
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.transfer = None;
        self.catch_up = None;
        self.reset_election_timer();
        debug_assert!(self.pending_reads.is_empty(), "a follower answers no reads itself");
        debug_assert!(leader != Some(self.config.id), "a follower of itself");
    }

    fn become_leader(&mut self) {
        assert_eq!(self.hard.voted_for, Some(self.config.id), "a leader voted for itself");
        assert_eq!(self.role, Role::Candidate, "only a candidate wins an election");
        debug_assert!(
            self.membership.voters.len() == 1 || self.durability.hard_state_batch() <= self.durability.durable_batch(),
            "won with votes for a term and vote not yet durable: its Vote requests waited for them"
        );
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.lease = LeaderLease::default();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let last = self.log.last_index();
        let me = self.config.id;
        self.progress = self.peers().chain([me]).map(|id| (id, Progress::new(last))).collect();
        // The leader counts itself in a quorum only with what is durable.
        self.progress.get_mut(&me).expect("the leader's own progress").match_index = self.durability.stable();
        // The no-op: committing an entry of our own term commits all earlier
        // ones, and until then we may not serve reads.
        self.append_local(Entry { term: self.hard.term, payload: Payload::Noop });
        if self.lease_reads() {
            self.begin_read_round(); // the no-op's acknowledgements start the lease
        }
        self.replicate_to_all();
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout = election_timeout(&mut self.rng, &self.config);
    }

    // ----- messages ------------------------------------------------------

    fn receive(&mut self, envelope: Envelope<C>) {
        let Envelope { from, to, message } = envelope;
        if to != self.config.id || from == self.config.id || from > MAX_NODE_ID {
            return; // misaddressed: not ours to answer
        }
        // Messages are taken from servers outside our configuration too
        // (thesis §4.1): a new voter must be able to elect a leader before
        // it has heard of its own promotion, and a lagging follower from a
        // leader it does not know joined. A removed server cannot disrupt:
        // PreVote and the leader lease below keep its elections from
        // raising anyone's term (thesis §4.2.3).
        if message.term() > TERM_MAX {
            return; // forged or corrupt: see TERM_MAX
        }
        let term = message.term();
        if term > self.hard.term {
            if self.lease_reads() && self.role == Role::Follower && self.in_leader_lease() {
                // A leader may be serving reads on the strength of our echo
                // (see super::lease): nothing but a newer leader's word or
                // a transfer its predecessor asked for may move our term,
                // or a stale reply could free us to vote within the lease.
                let unseats = matches!(
                    message,
                    Message::Append { .. }
                        | Message::Heartbeat { .. }
                        | Message::Snapshot { .. }
                        | Message::Vote { transfer: true, .. }
                );
                if !unseats {
                    return;
                }
            }
            match &message {
                // A node in a leader's lease ignores even higher-term
                // elections, so a rejoining node cannot depose the leader.
                // (A transfer's vote is the leader's own wish.)
                Message::PreVote { .. } | Message::Vote { transfer: false, .. }
                    if self.in_leader_lease() && !self.config.bugs.without_prevote =>
                {
                    return
                }
                // A PreVote (and a granted reply) carries a term the
                // candidate has not entered yet: it must not raise ours.
                Message::PreVote { .. } | Message::PreVoteReply { granted: true, .. } => {}
                Message::Append { .. } | Message::Heartbeat { .. } | Message::Snapshot { .. } => {
                    self.become_follower(term, Some(from))
                }
                _ => self.become_follower(term, None),
            }
        } else if term < self.hard.term {
            return self.answer_stale(from, &message);
        }
        match message {
            Message::PreVote { term, last_log_index, last_log_term } => {
                let granted = !self.in_leader_lease()
                    && (term > self.hard.term || self.can_vote_for(from))
                    && self.log_ok(last_log_index, last_log_term);
                let term = if granted { term } else { self.hard.term };
                self.send(from, Message::PreVoteReply { term, granted });
            }
            Message::Vote { last_log_index, last_log_term, .. } => {
                let granted = self.can_vote_for(from) && self.log_ok(last_log_index, last_log_term);
                if granted {
                    self.hard.voted_for = Some(from);
                    self.reset_election_timer();
                }
                self.send(from, Message::VoteReply { term: self.hard.term, granted });
            }
            Message::PreVoteReply { term, granted } => {
                // A grant names the term we would campaign in; a refusal
                // names the refuser's (not newer than ours, or we would have
                // stepped down above).
                if !granted || term == self.hard.term + 1 {
                    self.on_vote_reply(Role::PreCandidate, from, granted);
                }
            }
            Message::VoteReply { granted, .. } => self.on_vote_reply(Role::Candidate, from, granted),
            Message::Append { prev_index, prev_term, entries, commit, read_round, .. } => {
                if self.accept_leader(from) {
                    self.on_append(from, prev_index, prev_term, entries, commit, read_round);
                }
            }
            Message::Heartbeat { commit, read_round, .. } => {
                if self.accept_leader(from) {
                    let last = self.log.last_index();
                    self.advance_commit_to(commit.min(last));
                    if commit > last {
                        // The leader carries a commit index we acknowledged
                        // holding, and we do not: our disk was replaced
                        // (wiped, or a new machine under an old id). Say
                        // where our log ends, or an idle leader, which only
                        // sends heartbeats, would never send what we lack.
                        let hint = RejectHint { index: last, term: self.log.last_term() };
                        let reply = Message::AppendReply { term: self.hard.term, result: Err(hint), read_round };
                        return self.send(from, reply);
                    }
                    self.send(from, Message::HeartbeatReply { term: self.hard.term, read_round });
                }
            }
            // (Replies count only from members: one from a server removed
            // since is stale.)
            Message::AppendReply { result, read_round, .. } => {
                if self.role == Role::Leader && self.progress.contains_key(&from) {
                    self.on_append_reply(from, result, read_round);
                }
            }
            Message::HeartbeatReply { read_round, .. } => {
                if self.role == Role::Leader && self.progress.contains_key(&from) {
                    self.on_heartbeat_reply(from, read_round);
                }
            }
            Message::Snapshot { meta, membership, total, offset, data, .. } => {
                if self.accept_leader(from) {
                    self.on_snapshot(from, (meta, membership), total, offset, data);
                }
            }
            Message::SnapshotReply { index, received, matched, .. } => {
                if self.role == Role::Leader && self.progress.contains_key(&from) {
                    self.on_snapshot_reply(from, index, received, matched);
                }
            }
            Message::TimeoutNow { .. } => {
                // Only from the leader of our term, and only to a voter.
                let me = self.config.id;
                if self.role == Role::Follower && self.leader == Some(from) && self.membership.is_voter(me) {
                    self.campaign(true);
                }
            }
        }
    }

    /// A message from an older term: tell the sender our term where that
    /// helps it catch up, ignore it otherwise.
    fn answer_stale(&mut self, from: NodeId, message: &Message<C>) {
        let term = self.hard.term;
        match message {
            Message::Append { .. } | Message::Heartbeat { .. } | Message::Snapshot { .. } => {
                self.send(from, Message::HeartbeatReply { term, read_round: 0 })
            }
            Message::PreVote { .. } => self.send(from, Message::PreVoteReply { term, granted: false }),
            Message::Vote { .. } => self.send(from, Message::VoteReply { term, granted: false }),
            _ => {}
        }
    }

    fn can_vote_for(&self, candidate: NodeId) -> bool {
        self.hard.voted_for == Some(candidate) || (self.hard.voted_for.is_none() && self.leader.is_none())
    }

    fn on_vote_reply(&mut self, phase: Role, from: NodeId, granted: bool) {
        if self.role != phase {
            return;
        }
        if phase == Role::Candidate && self.durability.hard_state_batch() > self.durability.durable_batch() {
            // Our Vote requests wait for this term and vote to be durable, so
            // no genuine reply can have come back yet: forged or corrupt.
            return;
        }
        self.record_vote(from, granted);
        match (self.tally(), phase) {
            (Some(true), Role::PreCandidate) => self.campaign(false),
            (Some(true), _) => self.become_leader(),
            (Some(false), _) => self.become_follower(self.hard.term, None),
            (None, _) => {}
        }
    }

    /// An AppendEntries or heartbeat of our term arrived from `from`: it is
    /// the leader. Returns false if the message cannot be genuine (we lead
    /// this term ourselves) and must be ignored.
    fn accept_leader(&mut self, from: NodeId) -> bool {
        if self.role == Role::Leader {
            return false; // two leaders in one term: only a forged message does this
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.hard.term, Some(from));
        }
        self.election_elapsed = 0;
        self.quiet_after_restart = false; // a leader's lease takes over
        debug_assert_eq!((self.role, self.leader), (Role::Follower, Some(from)));
        true
    }

    fn on_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry<C>>,
        commit: LogIndex,
        read_round: u64,
    ) {
        let term = self.hard.term;
        let well_formed = entries.iter().all(|e| e.term <= term && well_formed_payload(&e.payload))
            && entries.windows(2).all(|w| w[0].term <= w[1].term)
            && entries.first().is_none_or(|e| e.term >= prev_term)
            && prev_index.checked_add(entries.len() as u64).is_some();
        if !well_formed {
            return;
        }
        let (prev_index, prev_term, entries) = self.skip_compacted(prev_index, prev_term, entries);
        if entries.first().is_some_and(|e| e.term < prev_term) {
            return; // older than our committed base: not from a correct leader
        }
        if self.log.term_at(prev_index) != Some(prev_term) {
            let index = self.log.find_conflict_by_term(prev_index, prev_term);
            let hint = RejectHint { index, term: self.log.term_at(index).unwrap_or(0) };
            return self.send(from, Message::AppendReply { term, result: Err(hint), read_round });
        }
        let match_index = prev_index + entries.len() as u64;
        debug_assert!(prev_index <= self.log.last_index(), "the consistency check found prev_index in the log");
        for (offset, entry) in entries.into_iter().enumerate() {
            let index = prev_index + 1 + offset as u64;
            match self.log.term_at(index) {
                Some(t) if t == entry.term => continue, // already have it (a duplicate or reordered message)
                Some(_) if index <= self.commit => {
                    // A correct leader never contradicts a committed entry;
                    // refuse rather than lose committed data.
                    return;
                }
                Some(_) => {
                    self.log.truncate_from(index);
                    self.mark_dirty(index);
                    self.append_local(entry);
                }
                None => {
                    self.append_local(entry);
                }
            }
        }
        debug_assert!(match_index <= self.log.last_index(), "acknowledging entries we do not hold");
        debug_assert!(
            self.log.term_at(match_index).is_some_and(|t| t <= term),
            "the acknowledged prefix ends in an entry of this term or older"
        );
        self.advance_commit_to(commit.min(match_index));
        self.send(from, Message::AppendReply { term, result: Ok(match_index), read_round });
    }

    /// Entries at or below the log's base are compacted here: committed,
    /// so equal to the leader's. Drops them from an Append, which then
    /// checks from the base.
    fn skip_compacted(
        &self,
        prev_index: LogIndex,
        prev_term: Term,
        mut entries: Vec<Entry<C>>,
    ) -> (LogIndex, Term, Vec<Entry<C>>) {
        let (base, base_term) = self.log.base();
        if prev_index >= base {
            return (prev_index, prev_term, entries);
        }
        let skip = ((base - prev_index) as usize).min(entries.len());
        entries.drain(..skip);
        (base, base_term, entries)
    }

    fn advance_commit_to(&mut self, index: LogIndex) {
        debug_assert_ne!(self.role, Role::Leader, "a leader commits by counting, in maybe_commit");
        if index > self.commit {
            debug_assert!(index <= self.log.last_index(), "committing beyond the log");
            self.commit = index;
            if self.config.bugs.config_on_commit {
                self.membership_on_commit();
            }
        }
    }

    // ----- snapshots -----------------------------------------------------

    /// A chunk of the leader's snapshot (Raft Figure 13). A snapshot that
    /// covers nothing newer than our commit index is answered at once with
    /// that index (our committed prefix is the leader's); one too large
    /// for [`Config::max_snapshot_bytes`], or a chunk that does not fit its
    /// declared size, is ignored. Chunks are taken in order; anything else
    /// is answered with what we hold, so the leader resumes there. A
    /// snapshot received whole is handed out for checking; the reply waits
    /// for the install.
    fn on_snapshot(
        &mut self,
        from: NodeId,
        (meta, membership): (SnapshotMeta, Membership),
        total: u64,
        offset: u64,
        data: Vec<u8>,
    ) {
        let term = self.hard.term;
        let reply = |received, matched| Message::SnapshotReply { term, index: meta.index, received, matched };
        if meta.index <= self.commit && !self.config.bugs.install_older_snapshot {
            return self.send(from, reply(total, Some(self.commit)));
        }
        if meta.term > term || meta.index > INDEX_MAX {
            // A correct leader's snapshot covers only entries of its term or
            // older (as `on_append` ignores entries newer than their
            // message); installing it would leave a log ending in the future.
            // And no correct cluster gets near INDEX_MAX: forged or corrupt.
            return;
        }
        let len = data.len() as u64;
        let fits = total > 0
            && total <= self.config.max_snapshot_bytes
            && offset.checked_add(len).is_some_and(|end| end <= total);
        if !fits || !membership.can_lead_a_cluster() {
            return;
        }
        match &mut self.incoming {
            Some(i) if (i.from, i.term, i.meta, i.membership, i.total) == (from, term, meta, membership, total) => {
                if offset == i.data.len() as u64 {
                    i.data.extend_from_slice(&data);
                }
            }
            _ if offset == 0 => self.incoming = Some(Incoming { from, term, meta, membership, total, data }),
            _ => return self.send(from, reply(0, None)),
        }
        let received = self.incoming.as_ref().map_or(0, |i| i.data.len() as u64);
        debug_assert!(received <= total, "a snapshot buffer past its declared size");
        if received < total {
            return self.send(from, reply(received, None));
        }
        let whole = self.incoming.take().expect("just filled");
        self.received = Some((from, whole.meta));
        let membership = whole.membership;
        self.out.received = Some(Snapshot { meta: whole.meta, membership, data: whole.data.into() });
    }

    /// The runtime checked the snapshot last received and found it good:
    /// install it. The log keeps the entries after the snapshot if it holds
    /// its last entry, and loses them all otherwise; the commit index moves
    /// up to the snapshot; the snapshot, the log and the reply go through
    /// one batch, and the state machine gets the snapshot once that batch
    /// is durable.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let Some((from, meta)) = self.received.take() else { return };
        if snapshot.meta != meta || self.role != Role::Follower || self.leader != Some(from) {
            return; // not the one we received, or no longer from our leader
        }
        let (term, total) = (self.hard.term, snapshot.data.len() as u64);
        let bugs = self.config.bugs;
        if meta.index <= self.commit && !bugs.install_older_snapshot {
            let matched = Some(self.commit);
            return self.send(from, Message::SnapshotReply { term, index: meta.index, received: total, matched });
        }
        if bugs.install_keeps_conflicting_entries && self.log.term_at(meta.index) != Some(meta.term) {
            // Bug (i): keep what follows though the log disagrees at the
            // snapshot's last entry. (RaftLog refuses entries older than
            // the snapshot's term after it: that assertion, or the
            // simulator's log matching, catches this.)
            let kept: Vec<Entry<C>> = self.log.slice(meta.index + 1, self.log.last_index());
            self.log = RaftLog::with_base((meta.index, meta.term), kept);
        } else {
            self.log.restore(meta.index, meta.term);
        }
        self.commit = self.commit.max(meta.index);
        self.snapshot = Some(snapshot.clone());
        self.out.installed = Some(snapshot);
        self.out.compacted = Some(meta);
        self.mark_dirty(meta.index + 1);
        self.reread_membership();
        debug_assert_eq!(self.log.base(), (meta.index, meta.term));
        let matched = Some(meta.index);
        self.send(from, Message::SnapshotReply { term, index: meta.index, received: total, matched });
    }

    /// The runtime made a snapshot of the state machine durable: keep it
    /// to send, and compact the log up to it less the trailing window.
    /// Followers being sent an older snapshot start over with this one.
    fn snapshot_taken(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        assert!(!snapshot.data.is_empty(), "a snapshot has bytes");
        assert!(meta.index <= self.handed_out, "a snapshot of entries not handed out for applying");
        if self.snapshot.as_ref().is_some_and(|s| s.meta.index >= meta.index) {
            return; // not newer than what we hold
        }
        assert_eq!(self.log.term_at(meta.index), Some(meta.term), "a snapshot of another log");
        self.snapshot = Some(snapshot);
        let mut to = self.trailing_start(meta.index);
        if self.config.bugs.compact_unapplied {
            to = self.commit.max(to); // bug (j): past what the snapshot covers
        }
        if to > self.log.base().0 {
            self.log.compact_to(to);
            let (index, term) = self.log.base();
            self.out.compacted = Some(SnapshotMeta { index, term });
        }
        for pr in self.progress.values_mut() {
            if matches!(pr.mode, Mode::Snapshot { index, .. } if index < meta.index) {
                pr.become_snapshot(meta.index);
            }
        }
    }

    /// Where to compact to after a snapshot at `index`: the log keeps at
    /// most `snapshot_trailing_entries` entries and `snapshot_trailing_bytes`
    /// bytes of commands before it (whichever bound comes first).
    fn trailing_start(&self, index: LogIndex) -> LogIndex {
        let floor = index.saturating_sub(self.config.snapshot_trailing_entries).max(self.log.base().0);
        let (mut start, mut bytes) = (index, 0u64);
        while start > floor {
            let entry = self.log.get(start).expect("entries after the base are held");
            bytes = bytes.saturating_add(entry.payload.bytes());
            if bytes > self.config.snapshot_trailing_bytes {
                break;
            }
            start -= 1;
        }
        start
    }

    // ----- leader --------------------------------------------------------

    fn propose(&mut self, command: C) -> Result<LogIndex, Refusal> {
        if self.role != Role::Leader {
            return Err(Refusal::NotLeader { leader: self.leader });
        }
        if let Some(t) = self.transfer {
            return Err(Refusal::Transferring { to: t.to });
        }
        let index = self.append_local(Entry { term: self.hard.term, payload: Payload::Command(command) });
        debug_assert_eq!(index, self.log.last_index(), "a proposal goes at the end of the log");
        self.replicate_to_all();
        Ok(index)
    }

    /// Proposes a configuration change (thesis §4.1–4.3): one server at a
    /// time, only once this leader has committed an entry of its term (so
    /// its log holds the latest committed configuration: the fix to the
    /// single-server algorithm as first published), and never while another
    /// change is uncommitted. The new configuration is used from the moment
    /// it is appended.
    fn change_membership(&mut self, change: MembershipChange) -> Result<LogIndex, Refusal> {
        if self.role != Role::Leader {
            return Err(Refusal::NotLeader { leader: self.leader });
        }
        if let Some(t) = self.transfer {
            return Err(Refusal::Transferring { to: t.to });
        }
        if !self.committed_in_term() && !self.config.bugs.change_before_term_commit {
            return Err(Refusal::NoCommitInTerm);
        }
        if self.membership_index > self.commit && !self.config.bugs.concurrent_changes {
            return Err(Refusal::ChangePending { index: self.membership_index });
        }
        if self.config.bugs.config_on_commit && !self.config.bugs.concurrent_changes {
            // Bug (r) keeps only the one-at-a-time rule as it was: a change
            // in the log but not yet committed is pending.
            let last = self.log.last_index();
            if let Some((index, _)) = self.latest_config_entry(self.commit + 1, last) {
                return Err(Refusal::ChangePending { index });
            }
        }
        let membership = change.apply(&self.membership).map_err(Refusal::BadChange)?;
        let index = self.append_local(Entry { term: self.hard.term, payload: Payload::Config(membership) });
        debug_assert!(
            (self.membership_index, self.membership) == (index, membership) || self.config.bugs.config_on_commit,
            "in force once appended"
        );
        self.replicate_to_all();
        // The new majority may already hold what the old one did not.
        self.maybe_commit();
        Ok(index)
    }

    /// Starts catching learner `id` up for its promotion (see
    /// [`Input::PromoteWhenCaughtUp`]); the first round ends when it holds
    /// our last entry.
    fn promote_when_caught_up(&mut self, id: NodeId) -> Result<LogIndex, Refusal> {
        if self.role != Role::Leader {
            return Err(Refusal::NotLeader { leader: self.leader });
        }
        if let Some(t) = self.transfer {
            return Err(Refusal::Transferring { to: t.to });
        }
        if !self.membership.contains(id) {
            return Err(Refusal::BadChange(ChangeError::NotMember(id)));
        }
        if self.membership.is_voter(id) {
            return Err(Refusal::BadChange(ChangeError::NotLearner(id)));
        }
        match self.catch_up {
            Some(c) if c.id != id => return Err(Refusal::CatchingUp { id: c.id }),
            Some(_) => {} // already under way: goes on
            None => {
                let last = self.log.last_index();
                self.catch_up = Some(CatchUp { id, round_end: last, ticks: 0, rounds: 1 });
            }
        }
        self.advance_catch_up();
        Ok(self.log.last_index())
    }

    /// Ends the catch-up's round if the learner holds its last entry: a
    /// round no longer than an election timeout means the learner is caught
    /// up, and its promotion is proposed (as soon as a change may be);
    /// otherwise the next round begins, up to [`Config::catch_up_rounds`].
    /// A round [`CATCH_UP_ROUND_MAX_ELECTIONS`] election timeouts long is
    /// given up.
    fn advance_catch_up(&mut self) {
        let Some(c) = self.catch_up else { return };
        let election = self.config.election_ticks;
        let matched = self.progress.get(&c.id).map_or(0, |p| p.match_index);
        let not_caught_up = Err(Refusal::NotCaughtUp { id: c.id, rounds: c.rounds });
        if matched < c.round_end {
            if c.ticks > CATCH_UP_ROUND_MAX_ELECTIONS * election {
                self.end_catch_up(not_caught_up);
            }
            return;
        }
        if c.ticks > election {
            if c.rounds >= self.config.catch_up_rounds {
                return self.end_catch_up(not_caught_up);
            }
            let last = self.log.last_index();
            self.catch_up = Some(CatchUp { round_end: last, ticks: 0, rounds: c.rounds + 1, ..c });
            // The learner may hold all of it already: a round of no time.
            return self.advance_catch_up();
        }
        match self.change_membership(MembershipChange::Promote(c.id)) {
            // A moment later it may: try again on the next tick.
            Err(Refusal::NoCommitInTerm | Refusal::ChangePending { .. }) => {}
            outcome => self.end_catch_up(outcome),
        }
    }

    /// The catch-up is over: its promotion was proposed at an index, or it
    /// was given up ([`Ready::promotions`]).
    fn end_catch_up(&mut self, outcome: Result<LogIndex, Refusal>) {
        let c = self.catch_up.take().expect("a catch-up under way");
        self.out.promotions.push((c.id, outcome));
    }

    /// The voter best placed to lead next, for a leader about to stop: the
    /// one whose log matches the most of ours (ties: the lowest id). `None`
    /// unless this node leads and another voter exists.
    pub fn successor(&self) -> Option<NodeId> {
        if self.role != Role::Leader {
            return None;
        }
        let others = self.membership.voters.iter().filter(|&id| id != self.config.id);
        others.max_by_key(|&id| (self.progress.get(&id).map_or(0, |p| p.match_index), Reverse(id)))
    }

    /// Hands leadership to `to` (thesis §3.10): stop taking proposals, bring
    /// its log up to ours, then tell it to campaign at once.
    fn transfer_leadership(&mut self, to: NodeId) -> Result<LogIndex, Refusal> {
        if self.role != Role::Leader {
            return Err(Refusal::NotLeader { leader: self.leader });
        }
        if !self.membership.is_voter(to) {
            return Err(Refusal::NotAVoter(to));
        }
        let last = self.log.last_index();
        if to == self.config.id {
            return Ok(last); // already there
        }
        if self.transfer.is_none_or(|t| t.to != to) {
            self.transfer = Some(Transfer { to, ticks: 0, told: false });
        }
        self.fill_window(to);
        self.maybe_hand_over();
        Ok(last)
    }

    /// Tells the transfer's target to campaign once its log matches ours.
    fn maybe_hand_over(&mut self) {
        let Some(t) = self.transfer else { return };
        let caught_up = self.progress.get(&t.to).is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up && !t.told {
            self.transfer = Some(Transfer { told: true, ..t });
            self.send_timeout_now(t.to);
        }
    }

    /// Appends to the in-memory log. The entry counts towards a commit
    /// quorum (a leader's own `match_index`) only once its batch is
    /// reported durable ([`RaftNode::persisted`]): the leader writes its
    /// log in parallel with sending it (thesis §10.2.1).
    fn append_local(&mut self, entry: Entry<C>) -> LogIndex {
        debug_assert!(entry.term <= self.hard.term, "an entry from a future term");
        let index = self.log.append(entry);
        self.mark_dirty(index);
        if self.role == Role::Leader {
            let own = self.progress.get_mut(&self.config.id).expect("the leader's own progress");
            own.next_index = index + 1;
            debug_assert!(own.match_index <= self.durability.stable());
        }
        index
    }

    // ----- durability ----------------------------------------------------

    /// The runtime made every batch up to `number` durable: count the
    /// stable entries in the commit quorum and release the messages that
    /// waited for them.
    fn persisted(&mut self, number: BatchNumber) {
        if !self.durability.persisted(number) {
            return;
        }
        if self.installing.as_ref().is_some_and(|(batch, _)| *batch <= number) {
            // The installed snapshot is durable: the state machine may load it.
            let (_, snapshot) = self.installing.take().expect("checked");
            debug_assert!(
                snapshot.meta.index > self.handed_out || self.config.bugs.install_older_snapshot,
                "an install moves the state machine forward"
            );
            self.handed_out = snapshot.meta.index;
            self.out.install = Some(snapshot);
        }
        if self.role == Role::Leader {
            let stable = self.durability.stable();
            let own = self.progress.get_mut(&self.config.id).expect("the leader's own progress");
            debug_assert!(stable >= own.match_index, "a leader's durable prefix never shrinks");
            own.match_index = stable;
            self.maybe_commit();
        }
        // Held messages wait for different batches (an acknowledgement for
        // its step's last, a heartbeat echo only for the term's), so any of
        // them may be due, not only the oldest; they leave in the order
        // they were sent.
        let durable = self.durability.durable_batch();
        let (due, waiting): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.held).into_iter().partition(|&(batch, _)| batch <= durable);
        self.held = waiting;
        for (_, envelope) in due {
            self.out.messages.push((After::Batch(0), envelope));
        }
    }

    fn replicate_to_all(&mut self) {
        for peer in self.peers() {
            self.fill_window(peer);
        }
    }

    /// Sends the next AppendEntries to `peer` if its window allows: in probe
    /// mode one (possibly empty) message, in replicate mode the next batch.
    /// Returns whether it sent one.
    fn send_append(&mut self, peer: NodeId) -> bool {
        if let Mode::Snapshot { .. } = self.progress[&peer].mode {
            return self.send_snapshot_chunk(peer);
        }
        let last = self.log.last_index();
        let max_batch = self.config.max_batch_entries as u64;
        let pr = self.progress.get_mut(&peer).expect("a member's progress");
        if pr.is_paused(self.config.max_inflight) {
            return false;
        }
        let next = pr.next_index.min(last + 1);
        if next <= self.log.base().0 {
            // The entries it needs are compacted: send the snapshot instead.
            let snapshot = self.snapshot.as_ref().expect("a compacted log has a snapshot");
            pr.become_snapshot(snapshot.meta.index);
            return self.send_snapshot_chunk(peer);
        }
        let batch_end = last.min(next + max_batch - 1);
        // A partial batch waits while an AppendEntries is in flight: its
        // acknowledgement sends everything proposed meanwhile in one
        // message (one fsync at the follower instead of one per proposal's
        // step), and a follower catching up still gets full batches,
        // `max_inflight` deep.
        let partial = batch_end + 1 - next < max_batch;
        if pr.mode == Mode::Replicate && partial && !pr.inflight.is_empty() {
            return false;
        }
        let entries = self.log.slice(next, batch_end);
        match pr.mode {
            Mode::Replicate if entries.is_empty() => return false,
            Mode::Replicate => {
                pr.next_index = batch_end + 1;
                pr.inflight.push_back(batch_end);
            }
            Mode::Probe { .. } => pr.mode = Mode::Probe { sent: true },
            Mode::Snapshot { .. } => unreachable!("handled above"),
        }
        let prev_index = next - 1;
        let prev_term = self.log.term_at(prev_index).expect("next_index <= last + 1");
        let message = Message::Append {
            term: self.hard.term,
            prev_index,
            prev_term,
            entries,
            commit: self.commit,
            read_round: self.read_round,
        };
        self.send(peer, message);
        true
    }

    /// Sends `peer` the next chunk of the snapshot it is being sent, if
    /// the chunk window allows. Returns whether it sent one.
    fn send_snapshot_chunk(&mut self, peer: NodeId) -> bool {
        let Some(snapshot) = self.snapshot.clone() else { return false };
        let (chunk_bytes, window) = (self.config.snapshot_chunk_bytes as u64, self.config.snapshot_chunks_in_flight);
        let pr = self.progress.get_mut(&peer).expect("a member's progress");
        if let Mode::Snapshot { index, .. } = pr.mode {
            if index != snapshot.meta.index {
                // A newer snapshot replaced the one being sent: start over.
                pr.become_snapshot(snapshot.meta.index);
            }
        }
        let Mode::Snapshot { sent, in_flight, .. } = &mut pr.mode else { return false };
        let total = snapshot.data.len() as u64;
        if *in_flight >= window || *sent >= total {
            return false;
        }
        let offset = *sent;
        let end = total.min(offset + chunk_bytes);
        *sent = end;
        *in_flight += 1;
        let data = snapshot.data[offset as usize..end as usize].to_vec();
        let (term, meta, membership) = (self.hard.term, snapshot.meta, snapshot.membership);
        let message = Message::Snapshot { term, meta, membership, total, offset, data };
        self.send(peer, message);
        true
    }

    /// Sends `peer` as many Appends as its window allows: one probe, or in
    /// replicate mode batches until the window is full or nothing is left
    /// (a partial batch only with nothing in flight), so a follower far
    /// behind catches up at the pipeline's pace rather than one batch per
    /// round trip (in snapshot mode: chunks, up to their own window).
    fn fill_window(&mut self, peer: NodeId) {
        if !self.progress.contains_key(&peer) {
            return; // no longer leader (a committed removal of ourselves), or it left
        }
        let mut sent = 0;
        while self.send_append(peer) {
            sent += 1;
            debug_assert!(
                sent <= self.config.max_inflight.max(self.config.snapshot_chunks_in_flight),
                "the window is bounded"
            );
        }
    }

    fn heartbeat(&mut self) {
        for peer in self.peers() {
            let pr = self.progress.get_mut(&peer).expect("a member's progress");
            // Entries outstanding but no progress for a whole heartbeat
            // interval: a message was lost, so probe again.
            if pr.mode == Mode::Replicate && !pr.inflight.is_empty() && pr.match_index == pr.match_at_heartbeat {
                let next = pr.match_index + 1;
                pr.become_probe(next);
            }
            pr.match_at_heartbeat = pr.match_index;
            // Snapshot chunks outstanding and nothing acknowledged since the
            // last heartbeat: one was lost; resend from what it holds.
            if let Mode::Snapshot { sent, acked, in_flight, acked_at_heartbeat, .. } = &mut pr.mode {
                if *in_flight > 0 && *acked == *acked_at_heartbeat {
                    (*sent, *in_flight) = (*acked, 0);
                }
                *acked_at_heartbeat = *acked;
            }
        }
        // The current round, not a new one: an echo of a round proves we
        // still led after it began, however late the echo was sent. So the
        // round only moves when a read arrives, and an idle leader's state
        // stays finite (a model checker relies on that). With lease reads
        // on, each heartbeat begins a round, whose echoes renew the lease.
        if self.lease_reads() {
            self.begin_read_round();
        }
        self.broadcast_read_round();
    }

    /// Sends the current read round to every peer: a quorum of echoes
    /// proves we still led after the round began.
    fn broadcast_read_round(&mut self) {
        let (term, round) = (self.hard.term, self.read_round);
        let commits: BTreeMap<NodeId, LogIndex> =
            self.progress.iter().map(|(&id, p)| (id, p.match_index.min(self.commit))).collect();
        self.broadcast(|peer| Message::Heartbeat { term, commit: commits[&peer], read_round: round });
    }

    fn on_append_reply(&mut self, from: NodeId, result: Result<LogIndex, RejectHint>, read_round: u64) {
        let last = self.log.last_index();
        if matches!(result, Ok(match_index) if match_index > last) {
            return; // claims entries we never sent: forged, and no proof of life either
        }
        self.note_alive(from, read_round);
        let base = self.log.base().0;
        let pr = self.progress.get_mut(&from).expect("a member's progress");
        match result {
            // While a snapshot is on its way, only an acknowledgement that
            // reaches what the log still holds changes course (a stale one
            // would only send it back to the snapshot's first byte).
            Ok(match_index) if matches!(pr.mode, Mode::Snapshot { .. }) && match_index < base => {
                pr.match_index = pr.match_index.max(match_index);
            }
            Err(_) if matches!(pr.mode, Mode::Snapshot { .. }) => {}
            Ok(match_index) => {
                if pr.acknowledge(match_index) {
                    self.maybe_commit();
                }
            }
            Err(hint) => {
                // Retry from our largest index <= hint.index with a term <=
                // hint.term: everything after may conflict. If its log ends
                // below our base, retry from there: what it needs is
                // compacted, so `send_append` sends the snapshot (the search
                // would stop at the base and probe from it forever).
                let next = if hint.index < base {
                    hint.index + 1
                } else {
                    self.log.find_conflict_by_term(hint.index, hint.term) + 1
                };
                if hint.index < pr.match_index {
                    // Its log ends before entries it acknowledged: its disk
                    // was replaced (Raft assumes it never is), or this is a
                    // rejection overtaken by later acknowledgements. Probing
                    // from its end is right for the first and only resends
                    // entries in the second.
                    pr.forget_match(hint.index);
                }
                pr.become_probe(next.min(pr.next_index));
            }
        }
        self.fill_window(from);
        self.maybe_hand_over();
        self.advance_catch_up();
        self.release_reads();
    }

    fn on_heartbeat_reply(&mut self, from: NodeId, read_round: u64) {
        self.note_alive(from, read_round);
        let pr = self.progress.get_mut(&from).expect("a member's progress");
        if let Mode::Probe { .. } = pr.mode {
            pr.mode = Mode::Probe { sent: false }; // the probe may have been lost
        }
        if pr.match_index < self.log.last_index() {
            self.fill_window(from);
        }
        self.release_reads();
    }

    /// The follower's answer to a snapshot chunk: how much it holds, or
    /// that its log now matches ours up to `matched`.
    fn on_snapshot_reply(&mut self, from: NodeId, index: LogIndex, received: u64, matched: Option<LogIndex>) {
        if matched.is_some_and(|m| m > self.log.last_index()) {
            return; // claims entries we never had: forged
        }
        self.note_alive(from, 0);
        let pr = self.progress.get_mut(&from).expect("a member's progress");
        match matched {
            Some(m) => {
                if pr.acknowledge(m) {
                    self.maybe_commit();
                }
            }
            None => {
                if let Mode::Snapshot { index: sending, sent, acked, in_flight, .. } = &mut pr.mode {
                    if *sending == index {
                        *in_flight = in_flight.saturating_sub(1);
                        *acked = received.min(*sent);
                        if *in_flight == 0 && received < *sent {
                            *sent = received; // a chunk was lost: resume where it stopped
                        }
                    }
                }
            }
        }
        self.fill_window(from);
        self.maybe_hand_over();
        self.advance_catch_up();
        self.release_reads();
    }

    fn note_alive(&mut self, from: NodeId, read_round: u64) {
        debug_assert_ne!(from, self.config.id, "a leader hears from others, not itself");
        let pr = self.progress.get_mut(&from).expect("a member's progress");
        pr.recently_active = true;
        pr.read_round_acked = pr.read_round_acked.max(read_round.min(self.read_round));
    }

    /// Commits the highest index a quorum holds — but only if it is of the
    /// current term (Raft §5.4.2, Figure 8): an older entry is committed
    /// only indirectly, by committing one of ours after it.
    fn maybe_commit(&mut self) {
        debug_assert_eq!(self.role, Role::Leader);
        let index = self.counted().quorum_value(|id| self.progress.get(&id).map_or(0, |p| p.match_index));
        debug_assert!(index <= self.log.last_index(), "a quorum holds entries the leader lacks");
        if index > self.commit
            && (self.log.term_at(index) == Some(self.hard.term) || self.config.bugs.commit_previous_term)
        {
            debug_assert!(
                self.config.bugs.commit_previous_term || self.log.term_at(index) == Some(self.hard.term),
                "committing by counting replicas of an older term's entry (Figure 8)"
            );
            self.commit = index;
            if self.config.bugs.config_on_commit {
                self.membership_on_commit();
            }
            self.release_reads();
            if !self.membership.is_voter(self.config.id) && self.membership_index <= self.commit {
                self.step_down_removed();
            }
        }
    }

    /// Our removal is committed (thesis §4.2.2): tell the others the commit
    /// index, hand over to the voter whose log is longest if it holds all
    /// of ours (a leadership transfer, so no one waits out an election
    /// timeout), and step down. Not a voter, we never campaign again.
    fn step_down_removed(&mut self) {
        self.broadcast_read_round();
        let last = self.log.last_index();
        let successor = self
            .progress
            .iter()
            .filter(|&(&id, p)| self.membership.is_voter(id) && p.match_index == last)
            .map(|(&id, _)| id)
            .next();
        if let Some(to) = successor {
            self.send_timeout_now(to);
        }
        self.become_follower(self.hard.term, None);
    }

    /// Tells `to` to campaign at once. Its election ignores the followers'
    /// leases, so ours ends here for the rest of the term.
    fn send_timeout_now(&mut self, to: NodeId) {
        self.lease.forfeit();
        self.send(to, Message::TimeoutNow { term: self.hard.term });
    }

    /// Who counts in the majorities that commit, confirm reads and keep a
    /// leader in office: the voters (with bug (q), the learners too).
    fn counted(&self) -> Membership {
        match self.config.bugs.learner_in_quorum {
            true => Membership { voters: self.membership.members(), learners: NodeSet::EMPTY },
            false => self.membership,
        }
    }

    // ----- reads ---------------------------------------------------------

    fn read(&mut self, id: ReadId) {
        if self.role != Role::Leader {
            let refusal = Refusal::NotLeader { leader: self.leader };
            return self.out.reads.push((id, Err(refusal)));
        }
        if self.pending_reads.len() >= self.config.max_pending_reads {
            return self.out.reads.push((id, Err(Refusal::Busy)));
        }
        if self.lease.holds() && self.committed_in_term() {
            debug_assert!(self.lease_reads(), "a lease without lease reads");
            self.reads_by_lease += 1;
            return self.out.reads.push((id, Ok(self.commit)));
        }
        if self.config.bugs.read_without_quorum {
            self.pending_reads.push_back((id, 0));
        } else {
            // Any message sent from now on carries the new round; a quorum
            // echoing it proves no newer leader existed when the read arrived.
            self.begin_read_round();
            self.broadcast_read_round();
            self.pending_reads.push_back((id, self.read_round));
        }
        debug_assert!(self.pending_reads.len() <= self.config.max_pending_reads, "reads beyond their bound");
        self.release_reads();
    }

    fn begin_read_round(&mut self) {
        self.read_round += 1;
        if self.lease_reads() {
            self.lease.round_started(self.read_round);
        }
    }

    /// The latest read round a quorum has echoed.
    fn confirmed_round(&self) -> u64 {
        let me = self.config.id;
        let confirmed = self.counted().quorum_value(|id| match self.progress.get(&id) {
            _ if id == me => self.read_round,
            Some(p) => p.read_round_acked,
            None => 0,
        });
        debug_assert!(confirmed <= self.read_round, "a quorum confirmed a round not yet started");
        confirmed
    }

    /// Answers every pending read whose round a quorum has acknowledged,
    /// once this leader has committed an entry of its term; renews the
    /// lease, if any, on the way.
    fn release_reads(&mut self) {
        let renew = self.lease_reads() && self.role == Role::Leader;
        let answer = !self.pending_reads.is_empty() && (self.committed_in_term() || self.config.bugs.read_before_noop);
        if !renew && !answer {
            return;
        }
        let confirmed = self.confirmed_round();
        if renew {
            self.lease.confirmed(confirmed, self.config.lease_ticks);
        }
        if !answer {
            return;
        }
        debug_assert!(self.commit <= self.log.last_index());
        while let Some(&(id, round)) = self.pending_reads.front() {
            if round > confirmed {
                break;
            }
            self.pending_reads.pop_front();
            self.out.reads.push((id, Ok(self.commit)));
        }
    }

    // ----- plumbing ------------------------------------------------------

    fn peers(&self) -> impl Iterator<Item = NodeId> {
        let me = self.config.id;
        self.membership.members().iter().filter(move |&p| p != me)
    }

    /// Queues a message, noting what it must wait for (see
    /// [`super::ready`]). Every message speaks for the sender's term and
    /// vote, so it waits for the batch that holds them. Two kinds speak of
    /// its log as well and wait for every batch up to the end of this step:
    /// an acknowledgement (`AppendReply` ok: "I hold these entries") and a
    /// vote request (its `last` index and term win or lose the election).
    /// (A snapshot reply that says the log now matches counts as an
    /// acknowledgement.) Everything else — a leader's Appends, heartbeats
    /// and snapshot chunks, grants and refusals, rejection hints, heartbeat
    /// echoes, chunk receipts — leaves as soon as the term and vote are
    /// durable, whatever entries are still on their way to the disk.
    fn send(&mut self, to: NodeId, message: Message<C>) {
        debug_assert_ne!(to, self.config.id, "a node never messages itself");
        debug_assert!(to <= MAX_NODE_ID, "a message to an impossible id");
        let speaks_of_log = matches!(
            message,
            Message::AppendReply { result: Ok(_), .. }
                | Message::SnapshotReply { matched: Some(_), .. }
                | Message::Vote { .. }
                | Message::PreVote { .. }
        );
        let after = if self.config.bugs.vote_before_persist && matches!(message, Message::VoteReply { .. }) {
            After::Batch(0) // bug (f): the vote goes out before it is durable
        } else if speaks_of_log || self.hard != self.handed_out_hard {
            After::ThisStep // (a changed term or vote is in this step's batch)
        } else {
            After::Batch(self.durability.hard_state_batch())
        };
        self.out.messages.push((after, Envelope { from: self.config.id, to, message }));
    }

    fn broadcast(&mut self, message: impl FnMut(NodeId) -> Message<C>) {
        self.broadcast_to(self.membership.members(), message)
    }

    /// Sends `message(peer)` to every peer in `to`.
    fn broadcast_to(&mut self, to: NodeSet, mut message: impl FnMut(NodeId) -> Message<C>) {
        let me = self.config.id;
        for peer in to.iter().filter(|&p| p != me) {
            let m = message(peer);
            self.send(peer, m);
        }
    }

    fn mark_dirty(&mut self, index: LogIndex) {
        self.out.dirty_from = Some(self.out.dirty_from.map_or(index, |d| d.min(index)));
        self.log_changed(index);
    }

    /// The log changed from `from` on: a `Config` entry there is the new
    /// configuration; if the entry that set the current one was cut off,
    /// the latest before it is.
    fn log_changed(&mut self, from: LogIndex) {
        if self.config.bugs.config_on_commit {
            return self.membership_on_commit();
        }
        match self.latest_config_entry(from, self.log.last_index()) {
            Some((index, membership)) => self.set_membership(index, membership),
            None if self.membership_index >= from => self.reread_membership(),
            None => {}
        }
    }

    /// The last `Config` entry the log holds in `from..=to`, and its index.
    fn latest_config_entry(&self, from: LogIndex, to: LogIndex) -> Option<(LogIndex, Membership)> {
        (from..=to.min(self.log.last_index())).rev().find_map(|i| match &self.log.get(i)?.payload {
            Payload::Config(m) => Some((i, *m)),
            _ => None,
        })
    }

    /// Takes the configuration from the log and snapshot afresh (after a
    /// restart or an install).
    fn reread_membership(&mut self) {
        if self.config.bugs.config_on_commit {
            return self.membership_on_commit();
        }
        let (index, membership) = self.membership_at(self.log.last_index());
        self.set_membership(index, membership);
    }

    /// Bug (r): the configuration in force is the one at the commit index,
    /// which a restart sets back to the snapshot's.
    fn membership_on_commit(&mut self) {
        let (index, membership) = self.membership_at(self.commit.min(self.log.last_index()));
        self.set_membership(index, membership);
    }

    fn set_membership(&mut self, index: LogIndex, membership: Membership) {
        self.membership_index = index;
        if membership == self.membership {
            return;
        }
        self.membership = membership;
        if self.role == Role::Leader {
            // Only a quorum of the new configuration may confirm a lease.
            self.lease.restart();
            // Replicate to whoever joined; forget whoever left.
            let (me, last) = (self.config.id, self.log.last_index());
            self.progress.retain(|&id, _| id == me || membership.contains(id));
            for id in membership.members().iter() {
                self.progress.entry(id).or_insert_with(|| Progress::new(last));
            }
        }
    }

    /// Ends a step: numbers this step's batch (if it changed anything
    /// durable), sends what may go now and holds the rest, and hands out
    /// the committed entries.
    fn take_ready(&mut self, proposed: Option<Result<LogIndex, Refusal>>) -> Ready<C> {
        let out = std::mem::take(&mut self.out);
        let mut hard_state = None;
        if self.hard != self.handed_out_hard {
            let mut durable = self.hard;
            if self.config.bugs.vote_before_persist {
                // Bug (f): the vote never reaches the disk.
                durable.voted_for =
                    if durable.term == self.handed_out_hard.term { self.handed_out_hard.voted_for } else { None };
            }
            hard_state = Some(durable);
            self.handed_out_hard = self.hard;
        }
        let log = out.dirty_from.map(|from| LogWrite { from, entries: self.log.slice(from, self.log.last_index()) });
        let (snapshot, compact) = (out.installed, out.compacted);
        if snapshot.is_some() {
            // Until the install is durable the disk holds the old log and
            // snapshot: nothing past what is already applied counts as stable.
            self.durability.cap_stable(self.handed_out);
        }
        let changed = hard_state.is_some() || log.is_some() || snapshot.is_some() || compact.is_some();
        let persist = changed.then(|| {
            let range = log.as_ref().map(|w| (w.from, w.from + w.entries.len() as LogIndex - 1));
            let number = self.durability.hand_out(hard_state.is_some(), range);
            if let Some(s) = &snapshot {
                self.installing = Some((number, s.clone()));
            }
            Persist { number, snapshot, compact, log, hard_state }
        });
        let (durable, last) = (self.durability.durable_batch(), self.durability.last_batch());
        let mut messages = Vec::with_capacity(out.messages.len());
        for (after, envelope) in out.messages {
            let batch = match after {
                After::Batch(batch) => batch,
                After::ThisStep => last,
            };
            if batch <= durable {
                messages.push(envelope);
            } else {
                if self.held.len() >= self.config.max_held_messages {
                    self.held.pop_front(); // the oldest: Raft tolerates a lost message
                    self.held_dropped += 1;
                }
                self.held.push_back((batch, envelope));
            }
        }
        let mut committed = Vec::new();
        // While an install waits for its batch, the entries it covers are
        // not in the log, and those after it wait for it.
        // Committed means durable on a quorum, so an entry may be applied
        // before this node's own write of it is reported (thesis §10.2.1).
        let applicable = if self.installing.is_some() { self.handed_out } else { self.commit };
        if applicable > self.handed_out {
            let entries = self.log.slice(self.handed_out + 1, applicable);
            committed = (self.handed_out + 1..).zip(entries).collect();
            self.handed_out = applicable;
        }
        Ready {
            persist,
            messages,
            committed,
            reads: out.reads,
            proposed,
            promotions: out.promotions,
            received_snapshot: out.received,
            install: out.install,
        }
    }

    /// Assertions that hold between steps, whatever the inputs were. The
    /// cheap ones run in every build; the rest in debug, test and fuzz
    /// builds ([`CHECK_ALL`]).
    fn check_invariants(&self) {
        let last = self.log.last_index();
        assert!(self.commit <= last, "commit {} beyond the log {last}", self.commit);
        assert!(self.handed_out <= self.commit, "handed out an uncommitted entry");
        assert!(self.hard.term <= TERM_MAX, "term beyond TERM_MAX");
        assert!(self.log.last_term() <= self.hard.term, "an entry of a future term");
        assert_eq!(self.hard, self.handed_out_hard, "a term or vote change not handed out for persisting");
        assert!(self.granted.intersection(self.refused).is_empty(), "a node both granted and refused");
        assert!(self.held.len() <= self.config.max_held_messages, "held messages beyond their bound");
        assert!(self.out.messages.is_empty() && self.out.reads.is_empty() && self.out.dirty_from.is_none());
        self.durability.check(last);
        self.check_snapshots();
        assert!(self.membership.is_well_formed(), "a server both voter and learner: {:?}", self.membership);
        if CHECK_ALL {
            // (The index may differ: a snapshot taken since may now stand
            // for the entry that set it.)
            let (index, latest) = self.membership_at(self.log.last_index());
            let (_, committed) = self.membership_at(self.commit);
            let in_force = if self.config.bugs.config_on_commit { committed } else { latest };
            assert_eq!(self.membership, in_force, "not the latest configuration in the log");
            assert!(index <= self.log.last_index() && self.membership_index <= self.log.last_index());
        }
        if let Some(vote) = self.hard.voted_for {
            assert!(vote <= MAX_NODE_ID, "voted for an impossible id");
        }
        match self.role {
            Role::Leader => self.check_leader(),
            _ => {
                assert!(
                    self.progress.is_empty()
                        && self.pending_reads.is_empty()
                        && self.transfer.is_none()
                        && self.catch_up.is_none()
                );
                assert_ne!(self.leader, Some(self.config.id), "a non-leader names itself leader");
                assert!(self.election_elapsed < self.election_timeout, "an election timeout that did not fire");
            }
        }
        if matches!(self.role, Role::Candidate) {
            assert_eq!(self.hard.voted_for, Some(self.config.id), "a candidate votes for itself");
        }
        if CHECK_ALL {
            let (low, high) = (self.config.election_ticks, 2 * self.config.election_ticks);
            assert!(
                (!self.config.election_jitter && self.election_timeout == low)
                    || (low..high).contains(&self.election_timeout),
                "election timeout {} outside its range",
                self.election_timeout
            );
            let durable = self.durability.durable_batch();
            assert!(self.held.iter().all(|&(batch, _)| batch > durable), "a held message whose batch is durable");
            let last = self.durability.last_batch();
            assert!(self.held.iter().all(|&(batch, _)| batch <= last), "a message held for a batch never handed out");
            assert!(self.held.iter().all(|(_, e)| e.from == self.config.id && e.to != self.config.id));
            if self.role == Role::PreCandidate || self.role == Role::Candidate {
                assert!(self.granted.contains(self.config.id), "a (pre-)candidate counts its own vote");
                assert!(self.leader.is_none(), "a (pre-)candidate knows no leader");
            }
        }
    }

    /// The snapshot, the log's base and the applied index agree.
    fn check_snapshots(&self) {
        let (base, _) = self.log.base();
        assert!(base <= self.commit, "compacted entries that are not committed");
        if base > 0 {
            let covered = self.snapshot.as_ref().map(|s| s.meta.index);
            assert!(covered.is_some_and(|c| c >= base), "a compacted log without a snapshot covering its base");
        }
        match &self.installing {
            Some((batch, s)) => {
                assert!(*batch > self.durability.durable_batch(), "an install still pending after its batch");
                let forward = s.meta.index > self.handed_out || self.config.bugs.install_older_snapshot;
                assert!(forward, "an install that would move the machine back");
            }
            None => assert!(self.handed_out >= base, "entries compacted before they were handed out"),
        }
        if let Some(i) = &self.incoming {
            assert!(
                (i.data.len() as u64) < i.total && i.total <= self.config.max_snapshot_bytes,
                "an oversized buffer"
            );
        }
        if CHECK_ALL {
            if let Some(s) = &self.snapshot {
                assert!(!s.data.is_empty(), "a snapshot without bytes");
                assert!(s.meta.index <= self.commit, "a snapshot of uncommitted entries");
            }
            for pr in self.progress.values() {
                if let Mode::Snapshot { index, sent, acked, in_flight, .. } = pr.mode {
                    let snapshot = self.snapshot.as_ref().expect("sending a snapshot we hold");
                    let total = snapshot.data.len() as u64;
                    assert!(index <= snapshot.meta.index, "sending a snapshot newer than ours");
                    assert!(acked <= sent && sent <= total, "snapshot progress past its size");
                    assert!(in_flight <= self.config.snapshot_chunks_in_flight, "snapshot chunk window overrun");
                }
            }
        }
    }

    fn check_leader(&self) {
        let (me, last) = (self.config.id, self.log.last_index());
        assert_eq!(self.leader, Some(self.config.id));
        assert_eq!(self.hard.voted_for, Some(self.config.id), "a leader voted for itself");
        let tracked: NodeSet = self.progress.keys().copied().collect();
        assert_eq!(tracked, self.membership.members().union([me].into_iter().collect()), "progress for each member");
        assert!(self.pending_reads.len() <= self.config.max_pending_reads);
        self.lease.check(self.config.lease_ticks);
        assert_eq!(self.progress[&me].match_index, self.durability.stable(), "a leader counts exactly its stable log");
        assert!(self.election_elapsed < self.config.election_ticks, "a leader's CheckQuorum period overran");
        assert!(self.heartbeat_elapsed < self.config.heartbeat_ticks, "a heartbeat that was not sent");
        assert!(
            self.membership.voters.len() == 1 || self.durability.hard_state_batch() <= self.durability.durable_batch(),
            "a leader whose term and vote are not durable"
        );
        if CHECK_ALL {
            for (id, pr) in self.progress.iter().filter(|&(&id, _)| id != me) {
                assert!(pr.match_index <= last, "follower {id} matched beyond the leader's log");
                if let Mode::Snapshot { .. } = pr.mode {
                    continue; // next_index is not used until the snapshot is in
                }
                assert!(pr.match_index < pr.next_index, "follower {id}: next {} <= match", pr.next_index);
                assert!(pr.next_index <= last + 1, "follower {id}: next {} beyond the log {last}", pr.next_index);
                assert!(pr.inflight.len() <= self.config.max_inflight, "follower {id}: window overrun");
                assert!(pr.inflight.iter().all(|&i| pr.match_index < i && i <= last), "follower {id}: inflight");
                assert!(pr.read_round_acked <= self.read_round, "follower {id} echoed a future read round");
                if let Mode::Probe { .. } = pr.mode {
                    assert!(pr.inflight.is_empty(), "follower {id}: a window while probing");
                }
            }
            assert!(
                self.pending_reads.iter().all(|&(_, round)| round <= self.read_round),
                "a read waiting on a future round"
            );
            assert!(
                self.pending_reads.iter().zip(self.pending_reads.iter().skip(1)).all(|(a, b)| a.1 <= b.1),
                "pending reads out of round order"
            );
        }
    }

    /// What one step may change, given the state before it: terms, commit
    /// and durability only grow, a vote is never changed within a term, a
    /// leader only appends, and every output is well formed.
    fn check_step(&self, before: (HardState, LogIndex, LogIndex, BatchNumber), ready: &Ready<C>) {
        let (hard, commit, handed_out, durable) = before;
        assert!(self.hard.term >= hard.term, "term went back from {} to {}", hard.term, self.hard.term);
        if self.hard.term == hard.term && hard.voted_for.is_some() && !self.config.bugs.vote_before_persist {
            assert_eq!(self.hard.voted_for, hard.voted_for, "two votes in term {}", hard.term);
        }
        assert!(self.commit >= commit, "commit went back from {commit} to {}", self.commit);
        assert!(self.handed_out >= handed_out || self.config.bugs.install_older_snapshot, "applied went back");
        assert!(self.durability.durable_batch() >= durable, "durability went back");
        if let Some(p) = &ready.persist {
            assert_eq!(p.number, self.durability.last_batch(), "the batch is numbered last");
            let empty = p.hard_state.is_none() && p.log.is_none() && p.snapshot.is_none() && p.compact.is_none();
            assert!(!empty, "an empty batch");
            if let Some(w) = &p.log {
                let installed = p.snapshot.as_ref().map_or(0, |s| s.meta.index);
                assert!(
                    w.from > commit || w.from > installed,
                    "a write from {} rewrites committed entries (commit {commit})",
                    w.from
                );
                assert_eq!(w.from + w.entries.len() as LogIndex, self.log.last_index() + 1, "a write ends the log");
            }
            if let Some(c) = p.compact {
                assert!(c.index <= self.commit, "compacting uncommitted entries");
            }
        }
        let first = ready.install.as_ref().map_or(handed_out, |s| s.meta.index) + 1;
        for (next, (index, entry)) in (first..).zip(&ready.committed) {
            assert_eq!(*index, next, "committed entries out of order");
            assert!(*index <= self.commit, "handed out an uncommitted entry");
            if CHECK_ALL {
                assert_eq!(self.log.term_at(*index), Some(entry.term), "a committed entry differs from the log");
            }
        }
        for envelope in &ready.messages {
            assert_eq!(envelope.from, self.config.id, "a message not from this node");
            assert!(envelope.to != self.config.id && envelope.to <= MAX_NODE_ID, "a message to {}", envelope.to);
            // (A PreVote names the term it would campaign in, a granted
            // PreVoteReply the requester's: neither is the sender's term.)
            if !matches!(envelope.message, Message::PreVote { .. } | Message::PreVoteReply { granted: true, .. }) {
                assert!(envelope.message.term() <= self.hard.term, "a message from a future term");
            }
        }
        for (_, read) in &ready.reads {
            if let Ok(index) = read {
                assert!(*index <= self.commit, "a read index beyond the commit index");
            }
        }
        if let Some(Ok(index)) = ready.proposed {
            assert_eq!(self.log.term_at(index), Some(self.hard.term), "a proposal not in this term's slot");
        }
    }
}

/// A configuration entry from the network names at least one voter, and
/// no server as both voter and learner (the wire decoder refuses the
/// second; other runtimes may not).
fn well_formed_payload<C>(payload: &Payload<C>) -> bool {
    match payload {
        Payload::Config(m) => m.can_lead_a_cluster(),
        _ => true,
    }
}

/// Run the invariant checks that cost more than a few comparisons: in debug
/// and test builds, and under cargo-fuzz (which builds with `--cfg
/// fuzzing`, in release mode).
const CHECK_ALL: bool = cfg!(any(debug_assertions, fuzzing));

/// The node's own RNG, seeded from the config's seed and its id, so that
/// nodes of one cluster draw different timeouts.
fn node_rng(config: &Config) -> Rng {
    Rng::new(config.seed ^ u64::from(config.id).wrapping_mul(0x9E37_79B9))
}

fn election_timeout(rng: &mut Rng, config: &Config) -> u32 {
    if !config.election_jitter {
        return config.election_ticks;
    }
    rng.range(u64::from(config.election_ticks), 2 * u64::from(config.election_ticks)) as u32
}
