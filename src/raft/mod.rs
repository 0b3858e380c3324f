//! The Raft consensus algorithm as a pure state machine.
//!
//! [`RaftNode`] is one server. The runtime (the simulator, a Stateright
//! actor, a fuzzer or the real server) owns it and loops:
//!
//! 1. feed it one [`Input`] — a [`Input::Tick`] of logical time, a
//!    [`Message`] from a peer, a client [`Input::Propose`] or [`Input::Read`],
//!    or [`Input::Persisted`] when its disk caught up;
//! 2. carry out the returned [`Ready`]'s messages, committed entries and
//!    reads at once;
//! 3. make its [`Persist`] batch durable, in order, and report it with
//!    [`Input::Persisted`].
//!
//! The node holds back whatever depends on a batch not yet reported, so
//! step 2 never waits for step 3; the contract is spelled out in [`ready`].
//! After a crash, [`RaftNode::restart`] builds the node again from exactly
//! what reached the disk.
//!
//! ```
//! use raftkv::raft::{Config, DurableState, Input, RaftNode, Role};
//! // A one-node cluster elects itself and commits its no-op once the no-op
//! // is on (this toy) disk.
//! let mut node: RaftNode<String> = RaftNode::restart(Config::new(0, 1, 7), DurableState::default());
//! let mut disk = Vec::new();
//! let mut committed = Vec::new();
//! for _ in 0..100 {
//!     let mut ready = node.step(Input::Tick);
//!     while let Some(batch) = ready.persist.take() {
//!         if let Some(w) = &batch.log {
//!             disk.truncate(w.from as usize - 1);
//!             disk.extend(w.entries.iter().cloned());
//!         }
//!         committed.extend(ready.committed);
//!         ready = node.step(Input::Persisted(batch.number));
//!     }
//!     committed.extend(ready.committed);
//!     assert!(ready.messages.is_empty(), "no peers to talk to");
//! }
//! assert_eq!(node.role(), Role::Leader);
//! assert_eq!((node.commit_index(), disk.len(), committed.len()), (1, 1, 1));
//! ```
//!
//! The module is split by concern: [`types`] (entries, messages, hard
//! state), [`config`] (tuning and injected bugs), `log` (the in-memory log),
//! `progress` (what a leader knows of each follower), `durability` (which
//! batches are durable, so how much of the log is stable), [`lease`] (the
//! leader lease for reads without a round), [`ready`]
//! (inputs, outputs and the persistence contract), `node` (the
//! transitions) and [`pacing`] (when a runtime hands a leader's batches to
//! its disk: a policy over the contract's outputs, shared by the server and
//! the simulator).

pub mod config;
mod durability;
pub mod lease;
mod log;
pub mod membership;
mod node;
pub mod pacing;
mod progress;
pub mod ready;
pub mod types;

pub use config::{Config, Fixed, InjectedBugs};
pub use log::RaftLog;
pub use membership::{ChangeError, Membership, MembershipChange, NodeSet};
pub use node::RaftNode;
pub use progress::{Mode, Progress};
pub use ready::{BatchNumber, DurableState, Input, LogWrite, Persist, ReadId, Ready, Refusal};
pub use types::{
    CommandBytes, Entry, Envelope, HardState, LogIndex, Message, NodeId, Payload, RejectHint, Role, Snapshot,
    SnapshotMeta, Term, INDEX_MAX, TERM_MAX,
};
