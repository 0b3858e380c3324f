//! The nouns of Raft: identifiers, log entries, durable state and messages.
//!
//! Every type here is `Clone + Debug + Eq + Hash` and uses only ordered
//! containers, because the Stateright models hash and clone them by the
//! million and the simulator must replay a seed bit for bit.

use super::membership::Membership;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A server's identity: its index in the cluster's member list.
pub type NodeId = u8;
/// A Raft term. Terms start at 0 (no election yet) and only grow.
pub type Term = u64;
/// A 1-based position in the log; 0 means "before the first entry".
pub type LogIndex = u64;

/// The highest term a node accepts or campaigns in. No correct cluster gets
/// near it (one election per nanosecond would take 292 years); a message
/// claiming more is forged or corrupt, and refusing it keeps `term + 1`
/// from overflowing.
pub const TERM_MAX: Term = u64::MAX / 2;

/// The highest log index a node accepts in a snapshot, for the same reason:
/// no correct cluster gets near it, and refusing more keeps `index + 1`
/// from overflowing.
pub const INDEX_MAX: LogIndex = u64::MAX / 2;

/// Largest cluster the node accepts (bounds per-peer state and messages).
pub const MAX_NODES: usize = 9;
/// The highest node id: sets of ids are `u64` bitmasks
/// ([`super::membership::NodeSet`]).
pub const MAX_NODE_ID: NodeId = 63;
const _: () = assert!(MAX_NODES <= MAX_NODE_ID as usize + 1);

/// What a command weighs in bytes: the node bounds in bytes what it keeps of
/// the log behind a snapshot ([`crate::raft::Config::snapshot_trailing_bytes`]).
/// An estimate of the command's size in the log is enough.
pub trait CommandBytes {
    fn bytes(&self) -> u64;
}

/// The interaction scripts' commands: plain strings.
impl CommandBytes for String {
    fn bytes(&self) -> u64 {
        self.len() as u64
    }
}

impl<C: CommandBytes> Payload<C> {
    /// The command's weight; a no-op or a configuration weighs nothing.
    pub fn bytes(&self) -> u64 {
        match self {
            Payload::Noop | Payload::Config(_) => 0,
            Payload::Command(c) => c.bytes(),
        }
    }
}

/// One slot of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Entry<C> {
    pub term: Term,
    pub payload: Payload<C>,
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Payload<C> {
    /// Appended by every new leader at once: committing it commits every
    /// earlier entry (Raft §5.4.2) and proves the leader may serve reads
    /// (thesis §6.4).
    Noop,
    /// A command for the state machine.
    Command(C),
    /// The cluster's new configuration (thesis §4.1: one server added,
    /// removed, or promoted from learner at a time). Every server uses the
    /// latest one in its log, committed or not.
    Config(Membership),
}

/// The part of a node's state that must survive a crash, besides the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HardState {
    pub term: Term,
    /// Who this node voted for in `term`, if anyone.
    pub voted_for: Option<NodeId>,
}

/// Why a follower refused an AppendEntries, so that the leader can skip a
/// whole conflicting term in one round trip instead of one entry at a time
/// (Raft §5.3; the form etcd's raft uses).
///
/// The follower's log holds an entry of `term` at `index`, where `index` is
/// the largest index `<= prev_index` whose term is `<= prev_term` (or its
/// last index if its log is shorter). Every entry after `index` may differ
/// from the leader's, so the leader can retry from its own largest index
/// `<= index` whose term is `<= term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RejectHint {
    pub index: LogIndex,
    pub term: Term,
}

/// What a snapshot covers: every entry up to `index`, the last of which was
/// of `term`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
}

/// A snapshot: what it covers, the configuration as of its last entry, and
/// the state machine's bytes, opaque to Raft (the key/value layer writes
/// and reads them, `kv::snapshot`). Shared, so that holding it, sending it
/// in chunks and cloning a node cost no copies.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    /// Empty (no voters) only in a snapshot stored before configurations
    /// were: the node reads that as its initial configuration.
    pub membership: Membership,
    pub data: std::sync::Arc<[u8]>,
}

impl fmt::Debug for Snapshot {
    /// The bytes are not shown, only their length.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Snapshot {{ index: {}, term: {}, {:?}, {} bytes }}",
            self.meta.index,
            self.meta.term,
            self.membership,
            self.data.len()
        )
    }
}

/// A message between two Raft nodes. Every message carries the sender's term.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Message<C> {
    /// "Would you vote for me in `term`?" — asked before disturbing anyone
    /// (thesis §9.6). `term` is the term the candidate *would* use; the
    /// sender's own term is not increased.
    PreVote {
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    PreVoteReply {
        term: Term,
        granted: bool,
    },
    /// RequestVote (Raft Figure 2). `transfer`: the candidate campaigns
    /// because its leader handed over (TimeoutNow), so voters grant it even
    /// within their leader lease (thesis §3.10).
    Vote {
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
        transfer: bool,
    },
    VoteReply {
        term: Term,
        granted: bool,
    },
    /// AppendEntries (Raft Figure 2). `read_round` echoes back in the reply so
    /// that the leader can confirm its leadership for ReadIndex reads.
    Append {
        term: Term,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry<C>>,
        commit: LogIndex,
        read_round: u64,
    },
    /// `Ok(match_index)`: the follower's log now matches the leader's up to
    /// `match_index`. `Err(hint)`: the consistency check failed.
    AppendReply {
        term: Term,
        result: Result<LogIndex, RejectHint>,
        read_round: u64,
    },
    /// An empty AppendEntries that does not check the log: it asserts
    /// leadership, carries a commit index the follower is known to hold
    /// (`min(match, commit)`), and a `read_round` to echo.
    Heartbeat {
        term: Term,
        commit: LogIndex,
        read_round: u64,
    },
    HeartbeatReply {
        term: Term,
        read_round: u64,
    },
    /// InstallSnapshot (Raft Figure 13, thesis §5), one chunk: the bytes
    /// `offset..offset + data.len()` of the snapshot `meta`, `total` bytes
    /// in all. Sent when the follower needs entries the leader has
    /// compacted.
    Snapshot {
        term: Term,
        meta: SnapshotMeta,
        /// The configuration as of the snapshot's last entry.
        membership: Membership,
        total: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// The follower holds the first `received` bytes of the snapshot up to
    /// `index` (the leader resumes from there); `matched: Some(m)` once its
    /// log matches the leader's up to `m` (`m >= index`: it installed the
    /// snapshot, or already had everything it covers).
    SnapshotReply {
        term: Term,
        index: LogIndex,
        received: u64,
        matched: Option<LogIndex>,
    },
    /// Leadership transfer (thesis §3.10): "your log is as long as mine;
    /// campaign now", from the leader of `term` to the server it hands over
    /// to.
    TimeoutNow {
        term: Term,
    },
}

impl<C> Message<C> {
    /// The sender's term (for PreVote: the term it would campaign in).
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteReply { term, .. }
            | Message::Vote { term, .. }
            | Message::VoteReply { term, .. }
            | Message::Append { term, .. }
            | Message::AppendReply { term, .. }
            | Message::Heartbeat { term, .. }
            | Message::HeartbeatReply { term, .. }
            | Message::Snapshot { term, .. }
            | Message::SnapshotReply { term, .. }
            | Message::TimeoutNow { term } => *term,
        }
    }

    /// Whether this message, sent after `earlier` on the same channel,
    /// makes `earlier` worthless, so that a transport still holding
    /// `earlier` may send this one in its place. Raft tolerates any message
    /// lost, so dropping one is always safe; this says when it costs
    /// nothing either: a heartbeat of the same term whose commit index and
    /// read round are no lower does everything the earlier one would (its
    /// receiver follows the same leader, commits as far, and its echo
    /// confirms every read round up to its own), and likewise an echo of a
    /// round no lower. Under read load a leader starts a round per read, so
    /// a slow link would otherwise carry a heartbeat per read.
    pub fn supersedes(&self, earlier: &Message<C>) -> bool {
        match (self, earlier) {
            (
                Message::Heartbeat { term, commit, read_round },
                Message::Heartbeat { term: t0, commit: c0, read_round: r0 },
            ) => term == t0 && commit >= c0 && read_round >= r0,
            (Message::HeartbeatReply { term, read_round }, Message::HeartbeatReply { term: t0, read_round: r0 }) => {
                term == t0 && read_round >= r0
            }
            _ => false,
        }
    }

    /// A short name for traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PreVote { .. } => "PreVote",
            Message::PreVoteReply { .. } => "PreVoteReply",
            Message::Vote { .. } => "Vote",
            Message::VoteReply { .. } => "VoteReply",
            Message::Append { .. } => "Append",
            Message::AppendReply { .. } => "AppendReply",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::HeartbeatReply { .. } => "HeartbeatReply",
            Message::Snapshot { .. } => "Snapshot",
            Message::SnapshotReply { .. } => "SnapshotReply",
            Message::TimeoutNow { .. } => "TimeoutNow",
        }
    }
}

/// A message with its addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Envelope<C> {
    pub from: NodeId,
    pub to: NodeId,
    pub message: Message<C>,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Role {
    Follower,
    /// Collecting PreVotes; its term has not been increased yet.
    PreCandidate,
    Candidate,
    Leader,
}

// ----- compact text ------------------------------------------------------
//
// One line per message, as the interaction scripts (`tests/testdata/raft/`)
// print and parse them and as traces show them. `i/t` is the entry at index
// `i` of term `t`; `round` is the read round.

impl<C: fmt::Display> fmt::Display for Payload<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Noop => f.write_str("noop"),
            Payload::Config(m) => write!(f, "config {m}"),
            Payload::Command(c) => write!(f, "{c}"),
        }
    }
}

impl<C: fmt::Display> fmt::Display for Message<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = |granted: bool| if granted { "granted" } else { "refused" };
        match self {
            Message::PreVote { term, last_log_index, last_log_term } => {
                write!(f, "PreVote t={term} last={last_log_index}/{last_log_term}")
            }
            Message::PreVoteReply { term, granted } => write!(f, "PreVoteReply t={term} {}", verdict(*granted)),
            Message::Vote { term, last_log_index, last_log_term, transfer } => {
                write!(f, "Vote t={term} last={last_log_index}/{last_log_term}")?;
                if *transfer {
                    f.write_str(" transfer")?;
                }
                Ok(())
            }
            Message::VoteReply { term, granted } => write!(f, "VoteReply t={term} {}", verdict(*granted)),
            Message::Append { term, prev_index, prev_term, entries, commit, read_round } => {
                write!(f, "Append t={term} prev={prev_index}/{prev_term} commit={commit} round={read_round} [")?;
                for (offset, entry) in entries.iter().enumerate() {
                    let sep = if offset == 0 { "" } else { ", " };
                    let index = prev_index.saturating_add(1 + offset as LogIndex);
                    write!(f, "{sep}{index}/{} {}", entry.term, entry.payload)?;
                }
                f.write_str("]")
            }
            Message::AppendReply { term, result: Ok(matched), read_round } => {
                write!(f, "AppendReply t={term} ok={matched} round={read_round}")
            }
            Message::AppendReply { term, result: Err(hint), read_round } => {
                write!(f, "AppendReply t={term} reject hint={}/{} round={read_round}", hint.index, hint.term)
            }
            Message::Heartbeat { term, commit, read_round } => {
                write!(f, "Heartbeat t={term} commit={commit} round={read_round}")
            }
            Message::HeartbeatReply { term, read_round } => write!(f, "HeartbeatReply t={term} round={read_round}"),
            Message::Snapshot { term, meta, membership, total, offset, data } => write!(
                f,
                "Snapshot t={term} covers={}/{} {membership} bytes={offset}..{} of={total}",
                meta.index,
                meta.term,
                offset.saturating_add(data.len() as u64)
            ),
            Message::SnapshotReply { term, index, received, matched } => {
                write!(f, "SnapshotReply t={term} index={index} received={received}")?;
                match matched {
                    Some(m) => write!(f, " matched={m}"),
                    None => Ok(()),
                }
            }
            Message::TimeoutNow { term } => write!(f, "TimeoutNow t={term}"),
        }
    }
}

impl<C: fmt::Display> fmt::Display for Envelope<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} {}", self.from, self.to, self.message)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
