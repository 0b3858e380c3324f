//! The replicated key/value service, purely: the state machine
//! ([`KvMachine`]) and a replica that glues it to a Raft node ([`KvServer`]).
//!
//! A client command travels: clerk → [`Request`] → `KvServer` → Raft log →
//! committed → `KvMachine::apply` → [`Response`] back to the clerk. Gets
//! take the ReadIndex path unless [`ReadPath::Log`] sends them through the
//! log too.

mod admin;
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
pub type ClientId = u64;

/// Client ids with this bit set are assigned by a server to one connection
/// of a plain Redis client (one that never sent `RAFTKV.SESSION`). Its
/// server proposes each of its commands once and never retries it, and
/// the client cannot retry under the same id elsewhere, so there is nothing
/// to deduplicate: the state machine executes them without remembering a
/// session, and a million short connections leave the session table as
/// it was.
pub const SERVER_ASSIGNED_CLIENT_BIT: ClientId = 1 << 63;

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
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Append { key, .. } | Op::Get { key } => key,
        }
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
        ENTRY_OVERHEAD_BYTES
            + match &self.op {
                Op::Put { key, value } | Op::Append { key, value } => (key.len() + value.len()) as u64,
                Op::Get { key } => key.len() as u64,
            }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put { key, value } => write!(f, "Put({key:?}, {value:?})"),
            Op::Append { key, value } => write!(f, "Append({key:?}, {value:?})"),
            Op::Get { key } => write!(f, "Get({key:?})"),
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
}
