//! The bodies of the cargo-fuzz targets in `fuzz/`, as plain functions of
//! the input bytes.
//!
//! Each target in `fuzz/fuzz_targets/` but `roundtrip` calls one function
//! here (`decode` and `resp` also measure its heap use with a counting
//! allocator), so that the stable test `tests/fuzz_corpus.rs` replays every
//! corpus file through exactly the code the fuzzer ran, on every
//! `cargo test`. A
//! function returns normally on any input it considers fine and panics when
//! it finds a bug; inputs it cannot use (too short, out of data) are fine.
//!
//! - [`decode_target`]: bytes → [`wire::decode`](crate::wire::decode);
//!   a decoded message must re-encode to the same bytes and agree with
//!   postcard's decoder, and every refusal must be justified.
//! - [`node_target`]: bytes → a sequence of inputs to one
//!   [`RaftNode`](crate::raft::RaftNode), its disk's late writes and
//!   reports, and restarts, and snapshot traffic (a leader's chunks, the
//!   application's checks of what it received, snapshots it takes and
//!   reports); the node's own invariant checks run after every step, and
//!   the harness checks the persistence contract against what it reported
//!   durable (with a disk holding a snapshot and a compacted log, as the
//!   real storage does), the shape of every output, and the snapshot rules
//!   (what is installed, what the log keeps, what is compacted);
//!   [`node_run`] is the same with the bugs given, and says how far it got
//!   ([`NodeReached`]).
//! - [`cluster_target`]: bytes → the whole schedule of a simulated cluster
//!   (losses, delays, disk delays, partitions, crashes), and for some
//!   inputs a tiny snapshot policy; every safety invariant and
//!   linearizability must hold.
//! - [`lincheck_target`]: bytes → a history of at most 8 operations;
//!   [`lincheck::check`](crate::lincheck::check) must agree with the brute
//!   force reference, and a reported violation must be minimal.
//! - [`resp_target`]: bytes → the client port's RESP decoder
//!   ([`ServerCodec`](crate::server::resp::ServerCodec)), in arbitrary
//!   pieces; the same requests must come out however the bytes are cut, the
//!   buffer must stay within its bound, and every decoded command must
//!   re-encode to itself.
//! - [`wal_target`]: bytes → up to three write-ahead log segments replayed
//!   by [`wal::Replay`](crate::wal::Replay); an error or a state, never a
//!   panic, and a state written again replays to itself.
//! - [`snapshot_target`]: bytes → the storage's snapshot file
//!   ([`wal::decode_snapshot_file`](crate::wal::decode_snapshot_file)) and
//!   the key/value machine's snapshot inside it
//!   ([`kv::snapshot::decode`](crate::kv::snapshot::decode)); an error or a
//!   value, never a panic, and a value written again decodes to itself.
//!
//! The inputs are read with [`arbitrary::Unstructured`] by hand-written
//! generators rather than derived `Arbitrary` impls: they steer terms and
//! indexes towards the node's own, which is where the interesting cases are,
//! and they do not depend on the `arbitrary` feature, so the corpus replays
//! the same way in a plain `cargo test`.
//!
//! What this module uses: `raft`, `kv` and `wire` (the `decode` and `node`
//! targets), `wal` (`wal`, `snapshot`), `lincheck` with its `brute` reference (`lincheck`), `sim` and
//! its `Chaos` schedule (`cluster` only), and `server::resp` (`resp` only,
//! built with the `resp` feature, which brings in `redis-protocol`,
//! `tokio-util` and `bytes`); outside the crate, `arbitrary`'s
//! `Unstructured`. Nothing else in the crate uses this module.

mod cluster;
mod decode;
mod lincheck;
mod node;
#[cfg(all(feature = "resp", not(loom)))]
mod resp;
mod snapshot;
mod wal;

pub use cluster::{cluster_run, cluster_target};
pub use decode::{decode_target, TIGHT_LIMITS};
pub use lincheck::lincheck_target;
pub use node::{node_run, node_target, NodeReached};
#[cfg(all(feature = "resp", not(loom)))]
pub use resp::{resp_decode_all, resp_target, TIGHT_RESP_LIMITS};
pub use snapshot::{snapshot_decodes, snapshot_target};
pub use wal::{wal_replays, wal_target};
