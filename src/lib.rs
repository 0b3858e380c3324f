//! raftkv: a linearizable key/value store replicated with Raft.
//!
//! The crate's heart is pure: [`raft::RaftNode`], [`kv::KvMachine`] and
//! [`clerk::Clerk`] are transition functions (input + state → new state +
//! outputs) that do no I/O, read no clock, spawn no thread and draw no
//! randomness they were not seeded with. [`kv::KvServer`] glues a Raft node
//! to a KV machine, still purely. The same code runs in the deterministic
//! simulator ([`sim`]), the fuzzers, the Stateright models and the real
//! server ([`server`]).
//!
//! The real server and `sync` are built only with the `runtime` cargo
//! feature (on by default); with `resp` alone, only the client codec
//! `server::resp` is. `models/` and `fuzz/` build the crate without them:
//! the pure core, with no tokio and no redb.
//!
//! [`lincheck`] decides whether a recorded client history is linearizable
//! against the sequential key/value specification.
//!
//! See `ARCHITECTURE.md` for where each concern lives and `specs/` for the
//! protocol and every invariant with the check that enforces it.

pub mod clerk;
pub mod fuzzing;
pub mod kv;
pub mod lincheck;
pub mod raft;
pub mod rng;
// The runtime: everything that does I/O. Behind the `runtime` feature (on by
// default), except the client protocol's codec, which the `resp` fuzz target
// builds alone.
#[cfg(any(feature = "runtime", feature = "resp"))]
pub mod server;
pub mod shrink;
pub mod sim;
#[cfg(feature = "runtime")]
pub mod sync;
pub mod wal;
pub mod wire;
