//! An operator's requests to a replica: change the cluster's membership,
//! hand leadership to another voter. They travel beside client requests
//! ([`ServerInput::Admin`](super::ServerInput)) but are not commands of the
//! state machine: a change is a configuration entry of the Raft log, and
//! its reply comes once that entry is committed and applied here, like a
//! write's.

use crate::raft::{LogIndex, Membership, MembershipChange, NodeId, Refusal};
use std::fmt;

/// Numbers an operator's request so its reply can be matched to it.
pub type AdminId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdminOp {
    /// One server joins as a learner, is promoted, or leaves.
    Change(MembershipChange),
    /// Promote this learner once it has caught up with the log
    /// ([`Input::PromoteWhenCaughtUp`](crate::raft::Input)); answered once
    /// the promotion is committed, like a change.
    PromoteWhenCaughtUp(NodeId),
    /// Hand leadership to this voter.
    TransferLeadership(NodeId),
    /// Hand leadership to the voter best placed to take it
    /// ([`RaftNode::successor`](crate::raft::RaftNode::successor)): what a
    /// leader does before it stops.
    HandOver,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdminRequest {
    pub id: AdminId,
    pub op: AdminOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdminReply {
    pub id: AdminId,
    pub result: Result<AdminDone, AdminError>,
}

/// What an operator's request achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdminDone {
    /// The change is committed at `index` and in force: the cluster's
    /// configuration is `membership`.
    Changed { index: LogIndex, membership: Membership },
    /// The leader is bringing `to` up to date and will then tell it to
    /// campaign; whether it wins shows in who leads next.
    TransferStarted { to: NodeId },
}

/// Why an operator's request did not (or may not) take effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdminError {
    /// Not started (for a change: nothing was written); see [`Refusal`].
    Refused(Refusal),
    /// The change was proposed, but this server lost its leadership before
    /// it committed: a later leader may still commit it, or drop it. The
    /// operator must look at the configuration before trying again.
    OutcomeUnknown { leader: Option<NodeId> },
    /// A hand-over with no other voter to take over.
    NoSuccessor,
}

impl fmt::Display for AdminDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminDone::Changed { index, membership } => write!(f, "committed at index {index}: {membership}"),
            AdminDone::TransferStarted { to } => write!(f, "handing leadership to {to}"),
        }
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Refused(refusal) => write!(f, "refused: {refusal}"),
            AdminError::OutcomeUnknown { leader } => {
                write!(f, "leadership was lost before the change committed; it may or may not take effect")?;
                match leader {
                    Some(l) => write!(f, " (leader now {l})"),
                    None => Ok(()),
                }
            }
            AdminError::NoSuccessor => write!(f, "no other voter to hand leadership to"),
        }
    }
}
