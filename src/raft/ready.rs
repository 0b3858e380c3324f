//! What goes into a node ([`Input`]) and what comes out ([`Ready`]), and the
//! persistence contract between the node and whoever runs it.
//!
//! # The persistence contract
//!
//! This is the one contract between the pure node and every runtime (the
//! simulator, the Stateright models, the fuzzers and the real server):
//!
//! 1. Feed the node one [`Input`]; it returns a [`Ready`].
//! 2. Carry out the Ready's `messages`, `committed` entries and `reads` **at
//!    once**. The node has already held back everything that depends on
//!    state not yet durable, so nothing here waits for the disk.
//! 3. Make the Ready's [`Persist`] batch, if any, durable **after every
//!    earlier batch**. Batches are numbered 1, 2, 3, … per node incarnation;
//!    a runtime may merge several into one write and one fsync (group
//!    commit), and may take as long as it likes.
//! 4. When every batch up to number `n` is durable, feed
//!    [`Input::Persisted(n)`](Input::Persisted). Reporting the highest
//!    number of a merged write reports all the batches before it.
//! 5. After a crash, rebuild the node with
//!    [`RaftNode::restart`](super::RaftNode::restart) from exactly what is
//!    durable. A batch written but not yet reported is simply durable.
//!
//! The node keeps its side: it never *acts* on state that is not reported
//! durable. It holds back every message that could tell a peer about such
//! state until the batch it depends on is reported, and releases it in the
//! Ready of that `Persisted` input. Every message speaks for the sender's
//! term and vote, so it waits for the batch that holds them; an
//! AppendEntries acknowledgement and a vote request also speak of the log,
//! so they wait for every batch up to the end of their step. It counts
//! itself towards a commit quorum only with entries reported durable.
//!
//! It hands out for applying every committed entry, whether or not its own
//! write of it is reported yet: committed means durable on a quorum, so no
//! crash of this node can take it back (thesis §10.2.1 makes the same
//! argument for a leader that commits before its own write finishes). A
//! slow fsync of the leader's then holds no reply back once two followers
//! hold the entry. One consequence for the runtime: a snapshot it takes of
//! what it applied may cover entries its log has not made durable yet. It
//! may save that snapshot at once; after a crash,
//! [`RaftNode::restart`](super::RaftNode::restart) finds the log ending
//! before the snapshot and starts the log after it (as after a crash during
//! an install), drops the old log on the disk in its first batch, and takes
//! the snapshot's term if the stored one is older; the node is then no
//! worse off than one that received that snapshot from its leader.
//!
//! So a leader's AppendEntries and heartbeats go out at once: its term and
//! vote were durable before it could win its election, and they do not
//! depend on its own copy of the entries they carry. A leader writes its log
//! **in parallel** with replicating it (Raft thesis §10.2.1): a follower may
//! make an entry durable before the leader does, and the entry commits once
//! a quorum holds it durably, counting the leader only when its own write is
//! reported. Likewise a follower's heartbeat echo (which confirms reads) or
//! rejection does not wait for entries still on their way to its disk.
//!
//! Why the order matters: a vote sent before it is durable can be forgotten
//! by a crash, and the same node may then vote twice in one term; an
//! acknowledgement sent before the entries are durable can make an entry
//! "committed" on fewer than a majority of disks.

use super::membership::{ChangeError, MembershipChange};
use super::types::{Entry, Envelope, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta};

/// Identifies a read request of the runtime's choosing; echoed back when the
/// read may be served.
pub type ReadId = u64;

/// Numbers the [`Persist`] batches of one node incarnation: 1, 2, 3, …
pub type BatchNumber = u64;

/// Everything that can happen to a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input<C> {
    /// One unit of logical time passed.
    Tick,
    /// A message from a peer. Messages not addressed to this node, from
    /// non-members or from itself are ignored.
    Message(Envelope<C>),
    /// A client command to replicate. Refused unless this node leads.
    Propose(C),
    /// A configuration change to replicate (thesis §4.1, one server at a
    /// time). Refused unless this node leads, has committed an entry of its
    /// term, and has no other change uncommitted. Like a proposal, its
    /// outcome is [`Ready::proposed`]; it takes effect as soon as it is in
    /// the log.
    ChangeMembership(MembershipChange),
    /// Promote this learner once it has caught up (thesis §4.2.1): the
    /// leader replicates to it in rounds, each sending what the leader
    /// held when the round began, and proposes the promotion once a round
    /// takes no longer than an election timeout (so the new voter will not
    /// hold up commits for long). Its outcome is [`Ready::proposed`] (the
    /// catch-up began, or why not); the promotion's, later, is
    /// [`Ready::promotions`]. One at a time; given up after
    /// [`Config::catch_up_rounds`](super::Config) rounds or a round ten
    /// election timeouts long.
    PromoteWhenCaughtUp(NodeId),
    /// Hand leadership to this voter (thesis §3.10): bring its log up to
    /// date, then tell it to campaign at once (`TimeoutNow`). Proposals are
    /// refused meanwhile; the attempt is abandoned after an election
    /// timeout. Its outcome is [`Ready::proposed`]: the index the target
    /// must hold before it is told, or why it was refused.
    TransferLeadership(NodeId),
    /// A linearizable read: answered, once leadership is confirmed, with the
    /// index the state machine must have applied before serving it
    /// (ReadIndex, thesis §6.4).
    Read(ReadId),
    /// Every [`Persist`] batch numbered up to this one is durable. A number
    /// at or below one already reported changes nothing; a number the node
    /// never handed out is a runtime bug (the node panics).
    Persisted(BatchNumber),
    /// The runtime took this snapshot of the state machine (at an index the
    /// node handed out for applying) and made it durable. The node keeps it
    /// to send to followers and compacts its log up to it, less
    /// [`Config::snapshot_trailing_entries`](super::Config).
    SnapshotTaken(Snapshot),
    /// The snapshot last handed out in [`Ready::received_snapshot`] checked
    /// out (its bytes are a state the machine can load): install it. A
    /// runtime that finds it unusable just drops it.
    InstallSnapshot(Snapshot),
}

/// Why a node refused a proposal or a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// This node does not lead; `leader` is who it believes does.
    NotLeader { leader: Option<NodeId> },
    /// Too many reads are already waiting for confirmation.
    Busy,
    /// A configuration change before this leader committed an entry of its
    /// term: it may not know the latest committed configuration yet.
    NoCommitInTerm,
    /// A configuration change while the one at this index is uncommitted.
    ChangePending { index: LogIndex },
    /// The change does not apply to the current configuration.
    BadChange(ChangeError),
    /// Leadership is being handed to `to`: try again shortly (probably
    /// there).
    Transferring { to: NodeId },
    /// Leadership can only go to a voter.
    NotAVoter(NodeId),
    /// Another learner is being caught up for its promotion.
    CatchingUp { id: NodeId },
    /// The learner did not catch up: its rounds stayed longer than an
    /// election timeout, or it stopped answering.
    NotCaughtUp { id: NodeId, rounds: u32 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotLeader { leader: Some(l) } => write!(f, "not the leader (node {l} is)"),
            Refusal::NotLeader { leader: None } => write!(f, "not the leader (none known)"),
            Refusal::Busy => write!(f, "busy"),
            Refusal::NoCommitInTerm => write!(f, "the leader has not committed an entry of its term yet"),
            Refusal::ChangePending { index } => write!(f, "the change at index {index} is not committed yet"),
            Refusal::BadChange(e) => write!(f, "{e}"),
            Refusal::Transferring { to } => write!(f, "leadership is being handed to {to}"),
            Refusal::NotAVoter(id) => write!(f, "node {id} is not a voter"),
            Refusal::CatchingUp { id } => write!(f, "node {id} is being caught up for its promotion"),
            Refusal::NotCaughtUp { id, rounds } => {
                write!(f, "node {id} did not catch up with the log in {rounds} rounds (is it reachable?)")
            }
        }
    }
}

/// One numbered batch of state to make durable, after every earlier batch,
/// and then report with [`Input::Persisted`]. Its parts apply in this
/// order: the snapshot, the compaction, the log write, the hard state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Persist<C> {
    /// This batch's number.
    pub number: BatchNumber,
    /// A snapshot received from the leader, to keep (it replaces any
    /// older one).
    pub snapshot: Option<Snapshot>,
    /// Drop every stored entry up to and including this one; the log now
    /// follows it (a snapshot covers it).
    pub compact: Option<SnapshotMeta>,
    /// A change to the log, if any.
    pub log: Option<LogWrite<C>>,
    /// The new term and vote, if they changed.
    pub hard_state: Option<HardState>,
}

/// "The log from index `from` on is now exactly `entries`": drop every
/// stored entry at or after `from`, then append `entries` (which may be
/// empty). A leader only ever writes at `from == last_index + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogWrite<C> {
    pub from: LogIndex,
    pub entries: Vec<Entry<C>>,
}

/// The outcome of one step. See the module docs for the contract.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use = "a Ready holds messages, committed entries and a batch to persist"]
pub struct Ready<C> {
    /// State to make durable after every earlier batch, then report with
    /// [`Input::Persisted`]. The rest of the Ready does not wait for it.
    pub persist: Option<Persist<C>>,
    /// Messages to send now, in order.
    pub messages: Vec<Envelope<C>>,
    /// Newly committed entries, in index order, each exactly once per node
    /// incarnation, each durable on a quorum (not necessarily on this node
    /// yet): apply them.
    pub committed: Vec<(LogIndex, Entry<C>)>,
    /// Reads answered: `Ok(index)` means "serve it once the state machine
    /// has applied `index`".
    pub reads: Vec<(ReadId, Result<LogIndex, Refusal>)>,
    /// For [`Input::Propose`]: the index the command will occupy if it
    /// commits, or why it was refused.
    pub proposed: Option<Result<LogIndex, Refusal>>,
    /// For an earlier [`Input::PromoteWhenCaughtUp`]: the learner caught up
    /// and its promotion was proposed at this index, or it was given up.
    pub promotions: Vec<(NodeId, Result<LogIndex, Refusal>)>,
    /// A snapshot received whole from the leader: check that its bytes
    /// are a state the machine can load, and if so feed it back with
    /// [`Input::InstallSnapshot`].
    pub received_snapshot: Option<Snapshot>,
    /// An installed snapshot, now durable here: load the state machine from
    /// it. It comes before `committed` in the same Ready; later committed
    /// entries follow its index.
    pub install: Option<Snapshot>,
}

impl<C> Default for Ready<C> {
    fn default() -> Self {
        Ready {
            persist: None,
            messages: Vec::new(),
            committed: Vec::new(),
            reads: Vec::new(),
            proposed: None,
            promotions: Vec::new(),
            received_snapshot: None,
            install: None,
        }
    }
}

/// Everything a node made durable: what [`RaftNode::restart`](super::RaftNode::restart)
/// builds it again from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DurableState<C> {
    pub hard: HardState,
    /// The latest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The last compacted entry: `log[0]` is the entry after it.
    pub base: SnapshotMeta,
    pub log: Vec<Entry<C>>,
}

impl<C> Default for DurableState<C> {
    fn default() -> Self {
        DurableState { hard: HardState::default(), snapshot: None, base: SnapshotMeta::default(), log: Vec::new() }
    }
}

impl<C: Clone> DurableState<C> {
    /// Writes one batch the way every storage must, its parts in the
    /// contract's order: a received snapshot (kept only if newer), the
    /// compaction (the log up to it dropped, all of it when an installed
    /// snapshot reaches past its end; never backwards), the log write, the
    /// hard state. The one in-memory disk of the simulator, the models and
    /// the test harnesses; `RedbStorage::write` does the same in one redb
    /// transaction. Panics on a log write that would leave a gap.
    pub fn write(&mut self, p: &Persist<C>) {
        if let Some(s) = &p.snapshot {
            self.keep_snapshot(s.clone());
        }
        if let Some(to) = p.compact {
            if to.index > self.base.index {
                if to.index <= self.last_index() {
                    self.log.drain(..(to.index - self.base.index) as usize);
                } else {
                    self.log.clear(); // an installed snapshot past the end of the log
                }
                self.base = to;
            }
        }
        if let Some(w) = &p.log {
            let last = self.last_index();
            assert!(
                w.from > self.base.index && w.from <= last + 1,
                "a log write from {} leaves a gap after {last} (base {})",
                w.from,
                self.base.index
            );
            self.log.truncate((w.from - self.base.index - 1) as usize);
            self.log.extend(w.entries.iter().cloned());
        }
        if let Some(h) = p.hard_state {
            self.hard = h;
        }
    }

    /// Keeps `snapshot` if it is newer than the one held.
    pub fn keep_snapshot(&mut self, snapshot: Snapshot) {
        if snapshot.meta.index > self.covered() {
            self.snapshot = Some(snapshot);
        }
    }

    /// The index of the last entry stored (the base's when the log is empty).
    pub fn last_index(&self) -> LogIndex {
        self.base.index + self.log.len() as LogIndex
    }

    /// The index the stored snapshot covers (0: none).
    pub fn covered(&self) -> LogIndex {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }
}
