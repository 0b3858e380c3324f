//! The `cluster` target: the fuzzer's bytes choose a simulated cluster's
//! whole schedule — every message loss, delay and duplicate, every tick
//! phase, and the fault schedule (partitions, leader isolation, crashes,
//! reboots) — through [`Choices`](crate::sim::Choices). After the run every
//! safety invariant must have held after every step, and the client history
//! must be linearizable.
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
    let mut config = CHAOS.sim_config(seed);
    config.bugs = bugs;
    config.script = script.to_vec();
    CHAOS.run(config).map(|_| ()).map_err(|failure| failure.to_string())
}
