//! The real (networked) server's I/O side: the thin runtime around the pure
//! core described in `ARCHITECTURE.md`. Unlike the rest of the crate, code
//! here does I/O.
//!
//! - [`storage`]: durable Raft state (hard state and log) on disk, behind the
//!   [`storage::RaftStorage`] trait.
//! - [`faults`]: faults injected on purpose (a failing disk, a panic in a
//!   chosen thread) when the environment asks, for the tests that show a
//!   server ends loudly and loses nothing.
//! - [`handoff`]: where the server's threads meet: the node thread's inbox,
//!   the bounded channel to the persist thread, and the waiters of client
//!   requests (checked by loom).
//! - [`node`]: the two threads that run a [`crate::kv::KvServer`] and carry
//!   out its outputs under the persistence contract: send and answer at
//!   once, persist in groups (one fsync), report durability back.
//! - [`peer`]: the peer transport: Raft envelopes over TCP as wire frames.
//! - `outbox` (private to it): one peer's outbound queue, and the node
//!   thread's writes at once when it has nothing else to do.
//! - [`link`]: when a peer connection is dead and when to redial, as pure
//!   state machines the transport follows (tested in simulated time).
//! - [`config`]: the cluster configuration file.
//! - [`run`]: one server process assembled: storage, node, peer transport,
//!   client port.
//! - [`client_port`]: the RESP listener that turns commands into requests.
//! - [`load`]: closed-loop clients recording a history (bench, e2e tests).
//! - [`nemesis`]: real faults for real processes (network namespaces,
//!   nftables, signals), a seeded random schedule of them, and the
//!   availability it leaves (`raftkv nemesis`, `tests/partitions.rs`).
//! - [`metrics`]: the Prometheus endpoint (`GET /metrics`), off unless
//!   configured.
//! - [`memory`]: the allocation counter behind `INFO`'s `used_memory`.
//! - [`tls`]: TLS on both ports, peer identity by certificate, and the
//!   certificates `raftkv certs` issues.
//! - [`tempdir`]: self-removing data directories for local clusters and tests.
//! - [`timeline`]: a checked history's HTML picture, written to a file.
//! - [`plot`]: `raftkv bench --plot`'s chart of throughput and latency.
//! - [`resp`]: the client protocol, RESP2, server side: the request codec,
//!   replies and redirects (`specs/client.md`).
//! - [`client`]: the client protocol's client side: `RemoteClerk`, the pure
//!   clerk driven over RESP connections.

// Under `--cfg loom` (the loom tests), tokio compiles without its sockets;
// only the parts loom checks, and what they need, are built then. Without the
// `runtime` feature only `resp` is built (for the `resp` fuzz target).
#[cfg(all(feature = "runtime", not(loom)))]
pub mod client;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod client_port;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(all(feature = "etcd", not(loom)))]
pub mod etcd;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod faults;
#[cfg(feature = "runtime")]
pub mod handoff;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod link;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod load;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod memory;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod metrics;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod nemesis;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod node;
#[cfg(all(feature = "runtime", not(loom)))]
mod outbox;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod peer;
#[cfg(feature = "runtime")]
pub mod plot;
#[cfg(not(loom))]
pub mod resp;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod run;
#[cfg(feature = "runtime")]
pub mod storage;
#[cfg(feature = "runtime")]
pub mod tempdir;
#[cfg(feature = "runtime")]
pub mod timeline;
#[cfg(all(feature = "runtime", not(loom)))]
pub mod tls;
#[cfg(feature = "runtime")]
pub mod wal;
