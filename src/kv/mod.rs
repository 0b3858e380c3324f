//! The replicated key/value service, purely: the state machine
//! ([`KvMachine`]) and a replica that glues it to a Raft node ([`KvServer`]).
//!
//! A client command travels: clerk → [`Request`] → `KvServer` → Raft log →
//! committed → `KvMachine::apply` → [`Response`] back to the clerk. Gets
//! take the ReadIndex path unless [`ReadPath::Log`] sends them through the
//! log too.

mod admin;
pub mod directory;
mod machine;
mod server;
pub mod snapshot;

pub use admin::{AdminDone, AdminError, AdminId, AdminOp, AdminReply, AdminRequest};
pub use machine::{Applied, KvMachine, Session, MAX_SESSIONS};
pub use server::{
    AppliedEntry, KvServer, ReadPath, ServerConfig, ServerInput, ServerOutput, SnapshotJob, SnapshotPolicy,
};

use crate::raft::{LogIndex, NodeId};
use serde::{Deserialize, Serialize};

/// Identifies a client session; chosen by the client, unique per client.
///
/// 128 bits so that ids drawn at random from the operating system cannot
/// collide in practice (`server::client::random_client_id`, 127 random
/// bits: among a billion sessions the chance that any two share an id is
/// about 10^-20). Two clients sharing an id would share a session, and the
/// one that lags would have its commands refused as
/// [`ServiceError::StaleRequest`]. Random rather than assigned by the
/// cluster through the log (the thesis's RegisterClient, §6.3) because a
/// clerk can then start without a round trip to a leader, and the session
/// table stays bounded by evicting idle sessions ([`MAX_SESSIONS`]) rather
/// than by expiring registrations.
pub type ClientId = u128;

/// Client ids with this bit set are assigned by a server to one connection
/// of a plain Redis client (one that never sent `RAFTKV.SESSION`). Its
/// server proposes each of its commands once and never retries it, and
/// the client cannot retry under the same id elsewhere, so there is nothing
/// to deduplicate: the state machine executes them without remembering a
/// session, and a million short connections leave the session table as
/// it was.
pub const SERVER_ASSIGNED_CLIENT_BIT: ClientId = 1 << 127;

/// A key/value operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Replace the value of `key`.
    Put { key: String, value: String },
    /// Append `value` to the value of `key` (a missing key counts as `""`).
    Append { key: String, value: String },
    /// Read the value of `key` (`""` if missing).
    Get { key: String },
    /// Remove `key` (Redis `DEL`). Replies `"1"` if it held a value and
    /// `"0"` if it was missing; a key holding `""` counts as missing, since
    /// it reads exactly like one.
    Delete { key: String },
    /// Set `key` to `value` only if it is missing or `""` (Redis `SETNX`,
    /// `SET key value NX`). Replies `"1"` if it set the value, `"0"` if the
    /// key already held one (then nothing changes).
    PutIfAbsent { key: String, value: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. }
            | Op::Append { key, .. }
            | Op::Get { key }
            | Op::Delete { key }
            | Op::PutIfAbsent { key, .. } => key,
        }
    }

    /// The value this operation writes, if it carries one.
    pub fn value(&self) -> Option<&str> {
        match self {
            Op::Put { value, .. } | Op::Append { value, .. } | Op::PutIfAbsent { value, .. } => Some(value),
            Op::Get { .. } | Op::Delete { .. } => None,
        }
    }

    /// True for a read, which changes nothing (the only operation that may
    /// take the ReadIndex path).
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }
}

/// A client's request, and the command stored in the Raft log. `(client,
/// seq)` identifies it across retries: the state machine executes each pair
/// at most once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Command {
    pub client: ClientId,
    /// Starts at 1 and grows by one per operation of this client.
    pub seq: u64,
    pub op: Op,
}

impl crate::raft::CommandBytes for Command {
    /// Roughly what the command costs in the log: its key and value, and
    /// about 16 bytes of term, client, sequence number and tags.
    fn bytes(&self) -> u64 {
        const ENTRY_OVERHEAD_BYTES: u64 = 16;
        ENTRY_OVERHEAD_BYTES + (self.op.key().len() + self.op.value().map_or(0, str::len)) as u64
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put { key, value } => write!(f, "Put({key:?}, {value:?})"),
            Op::Append { key, value } => write!(f, "Append({key:?}, {value:?})"),
            Op::Get { key } => write!(f, "Get({key:?})"),
            Op::Delete { key } => write!(f, "Delete({key:?})"),
            Op::PutIfAbsent { key, value } => write!(f, "PutIfAbsent({key:?}, {value:?})"),
        }
    }
}

impl std::fmt::Display for Command {
    /// `c1#2 Put("k", "v")`: client 1's second operation.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}#{} {}", self.client, self.seq, self.op)
    }
}

/// A client request is the command it wants executed.
pub type Request = Command;

/// A server's answer to the request `(client, seq)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Response {
    pub client: ClientId,
    pub seq: u64,
    pub result: Result<String, ServiceError>,
}

/// Why a request was not executed (yet). The clerk retries all of them with
/// the same `(client, seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ServiceError {
    /// Ask `leader` instead (or someone else, if `None`).
    NotLeader { leader: Option<NodeId> },
    /// Not executed, and never will be under this `(client, seq)`: the
    /// client has no session (it was evicted, [`MAX_SESSIONS`]) and its seq
    /// is not above `forgotten`, so this may retry a command that was
    /// executed before the eviction. Whether it was is unknown; a clerk
    /// reports it and numbers its next command above `forgotten`.
    SessionExpired { forgotten: LogIndex },
    /// Too many requests are waiting; try again later.
    Busy,
    /// Not executed, and never will be: this client's session has already
    /// executed the later seq `latest`. A well-behaved clerk never sees it
    /// for the command it is waiting on (it sends seqs in order and moves
    /// on only after an answer); it means two clients share one id, or a
    /// client reused a seq. Answering it with success would tell the
    /// lagging client that a write it made was applied when it was not.
    StaleRequest { latest: u64 },
}
