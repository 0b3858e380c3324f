//! The Raft consensus algorithm as a pure state machine.
//!
//! [`RaftNode`] is one server. The runtime (the simulator, a Stateright
//! actor, a fuzzer or the real server) owns it and loops:
//!
//! 1. feed it one [`Input`] — a [`Input::Tick`] of logical time, a
//!    [`Message`] from a peer, a client [`Input::Propose`] or [`Input::Read`];
//! 2. take the returned [`Ready`] and make its [`Persist`] durable;
//! 3. only then carry out its [`Actions`]: send the messages, apply the
//!    committed entries, serve the reads that are now safe.
//!
//! [`Ready::persist_then`] enforces the order of steps 2 and 3; the contract
//! is spelled out in [`ready`]. After a crash, [`RaftNode::restart`] builds
//! the node again from exactly what was made durable.
//!
//! ```
//! use raftkv::raft::{Config, HardState, Input, RaftNode, Role};
//! // A one-node cluster elects itself and commits its no-op.
//! let mut node: RaftNode<String> = RaftNode::restart(Config::new(0, 1, 7), HardState::default(), vec![]);
//! let mut durable_log = Vec::new();
//! for _ in 0..100 {
//!     let ready = node.step(Input::Tick);
//!     let actions = ready
//!         .persist_then(|p| {
//!             if let Some(w) = &p.log {
//!                 durable_log.truncate(w.from as usize - 1);
//!                 durable_log.extend(w.entries.iter().cloned());
//!             }
//!             Ok::<(), std::io::Error>(())
//!         })
//!         .unwrap();
//!     assert!(actions.messages.is_empty(), "no peers to talk to");
//! }
//! assert_eq!(node.role(), Role::Leader);
//! assert_eq!(node.commit_index(), 1);
//! assert_eq!(durable_log.len(), 1);
//! ```
//!
//! The module is split by concern: [`types`] (entries, messages, hard
//! state), [`config`] (tuning and injected bugs), `log` (the in-memory log),
//! `progress` (what a leader knows of each follower), [`ready`] (inputs,
//! outputs and the persistence contract) and `node` (the transitions).

pub mod config;
mod log;
mod node;
mod progress;
pub mod ready;
pub mod types;

pub use config::{Config, InjectedBugs};
pub use log::RaftLog;
pub use node::RaftNode;
pub use ready::{Actions, Input, LogWrite, Persist, ReadId, Ready, Refusal};
pub use types::{Entry, Envelope, HardState, LogIndex, Message, NodeId, Payload, RejectHint, Role, Term, TERM_MAX};
