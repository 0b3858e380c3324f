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
//! Figure 8 bug (`commit_previous_term`) needs.
//!
//! `RAFTKV_FUZZ_BUG=<name>` switches on one injected bug
//! ([`InjectedBugs::NAMES`]) for the whole fuzzing run, to measure how fast
//! the fuzzer finds it (`specs/fuzzing.md`).

use crate::raft::InjectedBugs;
use crate::sim::scenario::Chaos;
use std::sync::OnceLock;

/// Small enough for hundreds of runs per second, big enough for elections,
/// partitions and crashes to interleave with client traffic.
const CHAOS: Chaos = Chaos { servers: 3, clients: 3, keys: 2, run_us: 2_000_000 };

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
}

impl Knobs {
    /// Bits 0–1: batch of 1 (three values in four) or 4; bits 2–3: 1, 2, 3
    /// or 3 clients; bits 4–5: 10, 10, 20 or 30 % loss; bit 6: 1 or 2 keys;
    /// bit 7 unused.
    fn from_byte(byte: u8) -> Option<Knobs> {
        (byte != 0).then(|| Knobs {
            clients: [1, 2, 3, 3][usize::from((byte >> 2) & 3)],
            keys: 1 + u64::from((byte >> 6) & 1),
            max_batch_entries: [1, 1, 1, 4][usize::from(byte & 3)],
            drop_percent: [10, 10, 20, 30][usize::from((byte >> 4) & 3)],
        })
    }
}

/// The injected bug named by `RAFTKV_FUZZ_BUG`, read once.
fn bugs_from_env() -> InjectedBugs {
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
    let (seed, script) = match data {
        [a, b, c, d, e, f, g, h, rest @ ..] => (u64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]), rest),
        _ => (0, data),
    };
    let knobs = Knobs::from_byte(data.get(7).copied().unwrap_or(0));
    let chaos = match knobs {
        Some(k) => Chaos { clients: k.clients, keys: k.keys, ..CHAOS },
        None => CHAOS,
    };
    let mut config = chaos.sim_config(seed);
    if let Some(k) = knobs {
        config.max_batch_entries = k.max_batch_entries;
        config.network.drop_percent = k.drop_percent;
    }
    config.bugs = bugs;
    config.script = script.to_vec();
    chaos.run(config).map(|_| ()).map_err(|failure| failure.to_string())
}
