//! The real (networked) server's I/O side: the thin runtime around the pure
//! core described in `ARCHITECTURE.md`. Unlike the rest of the crate, code
//! here does I/O.
//!
//! - [`storage`]: durable Raft state (hard state and log) on disk, behind the
//!   [`storage::RaftStorage`] trait.

pub mod apply;
pub mod storage;
