//! What goes into a node ([`Input`]) and what comes out ([`Ready`]), and the
//! persistence contract between the node and whoever runs it.
//!
//! # The persistence contract
//!
//! Every call to [`RaftNode::step`](super::RaftNode::step) returns a
//! [`Ready`]. Its [`Persist`] part must be durable (written and fsynced)
//! **before any of its [`Actions`] are carried out**: before a message
//! leaves, before a committed entry is applied, before a read is served.
//! A vote or an AppendEntries acknowledgement sent before the vote or the
//! entries are durable can be forgotten by a crash, and then the same node
//! votes twice in one term or a "committed" entry exists on fewer than a
//! majority of disks.
//!
//! The types enforce the order: the actions are private to `Ready` and the
//! only way to reach them is [`Ready::persist_then`], which hands the
//! `Persist` to the caller's write function first and yields the actions only
//! if that write succeeded.
//!
//! A runtime may batch: it may step the node several times, make all their
//! `Persist`s durable with one fsync (in order), and then carry out all their
//! actions in order. What it must never do is act on a step's output before
//! that step's writes (and all earlier ones) are durable.

use super::types::{Entry, Envelope, HardState, LogIndex, NodeId};

/// Identifies a read request of the runtime's choosing; echoed back when the
/// read may be served.
pub type ReadId = u64;

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
    /// A linearizable read: answered, once leadership is confirmed, with the
    /// index the state machine must have applied before serving it
    /// (ReadIndex, thesis §6.4).
    Read(ReadId),
}

/// Why a node refused a proposal or a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// This node does not lead; `leader` is who it believes does.
    NotLeader { leader: Option<NodeId> },
    /// Too many reads are already waiting for confirmation.
    Busy,
}

/// State to make durable before acting on the rest of a [`Ready`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Persist<C> {
    /// The new term and vote, if they changed.
    pub hard_state: Option<HardState>,
    /// A change to the log, if any.
    pub log: Option<LogWrite<C>>,
}

impl<C> Persist<C> {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none() && self.log.is_none()
    }
}

/// "The log from index `from` on is now exactly `entries`": drop every
/// stored entry at or after `from`, then append `entries` (which may be
/// empty). A leader only ever writes at `from == last_index + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogWrite<C> {
    pub from: LogIndex,
    pub entries: Vec<Entry<C>>,
}

/// What the runtime carries out once the step's [`Persist`] is durable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub struct Actions<C> {
    /// Messages to send, in order.
    pub messages: Vec<Envelope<C>>,
    /// Newly committed entries, in index order, each exactly once per node
    /// incarnation: apply them to the state machine.
    pub committed: Vec<(LogIndex, Entry<C>)>,
    /// Reads answered: `Ok(index)` means "serve it once the state machine
    /// has applied `index`".
    pub reads: Vec<(ReadId, Result<LogIndex, Refusal>)>,
}

impl<C> Default for Actions<C> {
    fn default() -> Self {
        Actions { messages: Vec::new(), committed: Vec::new(), reads: Vec::new() }
    }
}

/// The outcome of one step. See the module docs for the contract.
#[derive(Debug)]
#[must_use = "a Ready holds messages and committed entries that must be carried out"]
pub struct Ready<C> {
    persist: Persist<C>,
    actions: Actions<C>,
    /// For [`Input::Propose`]: the index the command will occupy if it
    /// commits, or why it was refused. Safe to act on at once (it only tells
    /// the runtime where to wait).
    pub proposed: Option<Result<LogIndex, Refusal>>,
}

impl<C> Ready<C> {
    pub(super) fn new(
        persist: Persist<C>,
        actions: Actions<C>,
        proposed: Option<Result<LogIndex, Refusal>>,
    ) -> Ready<C> {
        Ready { persist, actions, proposed }
    }

    /// What must be made durable; inspect it without consuming the Ready.
    pub fn persist(&self) -> &Persist<C> {
        &self.persist
    }

    /// Makes the step's state durable with `write` (skipped when there is
    /// nothing to write), then hands over the actions. If `write` fails the
    /// actions are dropped: nothing may be sent or applied on top of a write
    /// that did not happen.
    pub fn persist_then<E>(self, write: impl FnOnce(&Persist<C>) -> Result<(), E>) -> Result<Actions<C>, E> {
        if !self.persist.is_empty() {
            write(&self.persist)?;
        }
        Ok(self.actions)
    }
}
