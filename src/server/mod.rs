//! The real (networked) server's I/O side: the thin runtime around the pure
//! core described in `ARCHITECTURE.md`. Unlike the rest of the crate, code
//! here does I/O.
//!
//! - [`storage`]: durable Raft state (hard state and log) on disk, behind the
//!   [`storage::RaftStorage`] trait.
//! - [`apply`]: the bounded hand-off between the node thread and the persist
//!   side, and the waiters of client requests (checked by loom).
//! - [`node`]: the two threads that run a [`crate::kv::KvServer`] and carry
//!   out its outputs: persist (group commit), then send, then answer.
//! - [`config`]: the cluster configuration file.
//! - [`tempdir`]: self-removing data directories for local clusters and tests.

pub mod apply;
pub mod config;
pub mod node;
pub mod storage;
pub mod tempdir;
