//! The `cluster` target: the fuzzer's bytes choose a simulated cluster's
//! whole schedule — every message loss, delay and duplicate, every tick
//! phase, and the fault schedule (partitions, leader isolation, crashes,
//! reboots) — through [`Choices`](crate::sim::Choices). After the run every
//! safety invariant must have held after every step, and the client history
//! must be linearizable.
//!
//! The seed's last byte (input byte 7) also picks the cluster's shape: 0
//! keeps the defaults (3 clients, 2 keys, 64-entry batches, 10 % loss),
//! anything else picks one-entry batches most of the time, 1–3 clients, 1–2
//! keys and 10–30 % loss ([`Knobs`]). One-entry batches are what let a batch
//! boundary fall between a new leader's old entries and its no-op, which the
//! Figure 8 bug (`commit_previous_term`) needs. Bit 7 of that byte turns on
//! tiny snapshots ([`Snapshots`], its sizes from input byte 6): a snapshot
//! every 2–9 entries, 0–3 trailing entries and 16–512-byte chunks, so that
//! whole-cluster runs take, send, install and compact snapshots. Bit 7 of
//! byte 6 turns on lease reads, every clock drifting by up to
//! [`LEASE_DRIFT_PPM`] (and the lease as long as that allows), so that the
//! `LeaseSafety` check runs under the fuzzer's schedules too.
//!
//! `RAFTKV_FUZZ_BUG=<name>` switches on one injected bug
//! ([`InjectedBugs::NAMES`]) for the whole fuzzing run, to measure how fast
//! the fuzzer finds it (`specs/fuzzing.md`).

use crate::kv::SnapshotPolicy;
use crate::raft::InjectedBugs;
use crate::sim::scenario::{Chaos, Outcome};
use std::sync::OnceLock;

/// Small enough for hundreds of runs per second, big enough for elections,
/// partitions and crashes to interleave with client traffic.
const CHAOS: Chaos = Chaos { servers: 3, clients: 3, keys: 2, run_us: 2_000_000, all_ops: false };

/// With lease reads on, clocks drift by up to 20%.
pub const LEASE_DRIFT_PPM: u64 = 200_000;

/// The run's shape, from the seed's last byte; 0 (no knobs) keeps [`CHAOS`]
/// and the simulator's defaults, so inputs written before the knobs existed
/// (all of them with that byte 0) keep their shape. (Not their schedule:
/// since the simulator has a disk per server, its delays are choices too,
/// so every input found before then builds another schedule now.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Knobs {
    clients: usize,
    keys: u64,
    max_batch_entries: usize,
    drop_percent: u64,
    snapshots: Option<Snapshots>,
    lease_reads: bool,
}

/// A tiny snapshot policy, so that snapshots are taken, sent in several
/// chunks, installed and compacted within a 2-second run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Snapshots {
    every_entries: u64,
    trailing_entries: u64,
    chunk_bytes: usize,
}

impl Knobs {
    /// Bits 0–1: batch of 1 (three values in four) or 4; bits 2–3: 1, 2, 3
    /// or 3 clients; bits 4–5: 10, 10, 20 or 30 % loss; bit 6: 1 or 2 keys;
    /// bit 7: tiny snapshots, sized by `sizes` (input byte 6: bits 0–2 a
    /// snapshot every 2–9 entries, bits 3–4 0–3 trailing entries, bits 5–6
    /// 16, 64, 128 or 512-byte chunks; bit 7 lease reads under drifting
    /// clocks). Every committed input before bit 7 was used has byte 7
    /// below 0x80, so it keeps its shape.
    fn from_bytes(byte: u8, sizes: u8) -> Option<Knobs> {
        (byte != 0).then(|| Knobs {
            clients: [1, 2, 3, 3][usize::from((byte >> 2) & 3)],
            keys: 1 + u64::from((byte >> 6) & 1),
            max_batch_entries: [1, 1, 1, 4][usize::from(byte & 3)],
            drop_percent: [10, 10, 20, 30][usize::from((byte >> 4) & 3)],
            snapshots: (byte & 0x80 != 0).then(|| Snapshots {
                every_entries: 2 + u64::from(sizes & 7),
                trailing_entries: u64::from((sizes >> 3) & 3),
                chunk_bytes: [16, 64, 128, 512][usize::from((sizes >> 5) & 3)],
            }),
            lease_reads: sizes & 0x80 != 0,
        })
    }
}

/// The injected bug named by `RAFTKV_FUZZ_BUG`, read once.
pub(super) fn bugs_from_env() -> InjectedBugs {
    static BUGS: OnceLock<InjectedBugs> = OnceLock::new();
    *BUGS.get_or_init(|| match std::env::var("RAFTKV_FUZZ_BUG") {
        Ok(name) => InjectedBugs::only(&name)
            .unwrap_or_else(|| panic!("RAFTKV_FUZZ_BUG={name}: not one of {:?}", InjectedBugs::NAMES)),
        Err(_) => InjectedBugs::default(),
    })
}

/// Runs the schedule the bytes describe; panics on any safety violation or
/// non-linearizable history.
pub fn cluster_target(data: &[u8]) {
    if let Err(reason) = cluster_run(data, bugs_from_env()) {
        panic!("{reason}");
    }
}

/// The same, with the bugs given; returns the failure instead of panicking.
pub fn cluster_run(data: &[u8], bugs: InjectedBugs) -> Result<(), String> {
    cluster_outcome(data, bugs).map(|_| ())
}

/// The run itself, with its outcome (its statistics, for the tests).
fn cluster_outcome(data: &[u8], bugs: InjectedBugs) -> Result<Outcome, String> {
    let (seed, script) = match data {
        [a, b, c, d, e, f, g, h, rest @ ..] => (u64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]), rest),
        _ => (0, data),
    };
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let knobs = Knobs::from_bytes(byte(7), byte(6));
    let chaos = match knobs {
        Some(k) => Chaos { clients: k.clients, keys: k.keys, ..CHAOS },
        None => CHAOS,
    };
    let mut config = chaos.sim_config(seed);
    if let Some(k) = knobs {
        config.max_batch_entries = k.max_batch_entries;
        config.network.drop_percent = k.drop_percent;
        if let Some(s) = k.snapshots {
            config.snapshots = SnapshotPolicy { every_entries: Some(s.every_entries), every_bytes: None };
            config.snapshot_trailing_entries = s.trailing_entries;
            config.snapshot_chunk_bytes = s.chunk_bytes;
        }
        if k.lease_reads {
            config.lease_reads = true;
            config.clock_drift_ppm = LEASE_DRIFT_PPM;
        }
    }
    config.bugs = bugs;
    config.script = script.to_vec();
    chaos.run(config).map_err(|failure| failure.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input of the seed `seed` whose bytes 6 and 7 are `sizes` and
    /// `knobs`, and no script (the seed decides every choice).
    fn input(seed: u64, sizes: u8, knobs: u8) -> Vec<u8> {
        let mut bytes = seed.to_le_bytes();
        (bytes[6], bytes[7]) = (sizes, knobs);
        bytes.to_vec()
    }

    #[test]
    fn knob_bit_7_turns_on_tiny_snapshots() {
        assert_eq!(Knobs::from_bytes(0x00, 0xff), None, "byte 7 = 0 keeps the defaults");
        assert_eq!(Knobs::from_bytes(0x4c, 0xff).and_then(|k| k.snapshots), None);
        let tiny = Snapshots { every_entries: 2, trailing_entries: 0, chunk_bytes: 16 };
        assert_eq!(Knobs::from_bytes(0x80, 0x00).and_then(|k| k.snapshots), Some(tiny));
        let big = Snapshots { every_entries: 9, trailing_entries: 3, chunk_bytes: 512 };
        assert_eq!(Knobs::from_bytes(0x80, 0x7f).and_then(|k| k.snapshots), Some(big));
    }

    /// With bit 7, clean runs take snapshots, and some install them; without
    /// it, none do.
    #[test]
    fn tiny_snapshots_are_taken_and_installed_in_clean_runs() {
        let (mut taken, mut installed) = (0, 0);
        for seed in 0..4 {
            let outcome = cluster_outcome(&input(seed, 0x00, 0x8c), InjectedBugs::default()).expect("clean");
            (taken, installed) = (taken + outcome.stats.snapshots, installed + outcome.stats.installs);
            let plain = cluster_outcome(&input(seed, 0x00, 0x0c), InjectedBugs::default()).expect("clean");
            assert_eq!((plain.stats.snapshots, plain.stats.installs), (0, 0), "seed {seed}: snapshots without bit 7");
        }
        assert!(taken > 0 && installed > 0, "{taken} snapshots taken and {installed} installed in 4 runs");
    }

    /// Bit 7 of byte 6 turns on lease reads: clean runs answer reads by
    /// the lease; without it, none do.
    #[test]
    fn lease_reads_are_used_in_clean_runs() {
        let mut leased = 0;
        for seed in 0..4 {
            leased +=
                cluster_outcome(&input(seed, 0x80, 0x0c), InjectedBugs::default()).expect("clean").stats.reads_by_lease;
            let plain = cluster_outcome(&input(seed, 0x00, 0x0c), InjectedBugs::default()).expect("clean");
            assert_eq!(plain.stats.reads_by_lease, 0, "seed {seed}: lease reads without bit 7");
        }
        assert!(leased > 0, "no read answered by a lease in 4 runs");
    }
}
