//! `raftkv sim`: a simulated cluster under faults, with a readable trace.

use super::{Reads, Shape};
use raftkv::kv::ReadPath;
use raftkv::raft::InjectedBugs;
use raftkv::sim::scenario::{Chaos, Scenario};
use raftkv::sim::TraceSink;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn sim(
    seed: u64,
    shape: Shape,
    reads: Reads,
    clock_drift_ppm: u64,
    bug: Option<&str>,
    history_out: Option<PathBuf>,
    quiet: bool,
) -> ExitCode {
    let scenario = match shape {
        Shape::Concurrent => Some(Scenario::new("concurrent", 5, 5)),
        Shape::PersistPartitionUnreliable => {
            Some(Scenario::new("persist_partition_unreliable", 5, 5).unreliable().crash().partitions())
        }
        Shape::Chaos => None,
    };
    let chaos = Chaos { servers: 5, clients: 5, keys: 3, run_us: 5_000_000, all_ops: false };
    let mut config = match &scenario {
        Some(s) => s.sim_config(seed),
        None => chaos.sim_config(seed),
    };
    if !quiet {
        config.trace = Some(print_trace());
    }
    config.read_path = match reads {
        Reads::ReadIndex | Reads::Lease => ReadPath::ReadIndex,
        Reads::Log => ReadPath::Log,
    };
    config.lease_reads = matches!(reads, Reads::Lease);
    config.clock_drift_ppm = clock_drift_ppm;
    if let Some(name) = bug {
        config.bugs = InjectedBugs::only(name).expect("clap checked the name");
    }
    let started = std::time::Instant::now();
    let result = match &scenario {
        Some(s) => s.run(config),
        None => chaos.run(config),
    };
    let history = match &result {
        Ok(outcome) => &outcome.history,
        Err(failure) => &failure.history,
    };
    if let Some(path) = &history_out {
        if let Err(e) = std::fs::write(path, history.to_json()) {
            eprintln!("error: could not write the history to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("history ({} operations) written to {}", history.ops.len(), path.display());
    }
    match result {
        Ok(outcome) => {
            println!(
                "seed {seed}: OK — {} operations completed in {:.1} s of virtual time ({} steps, {} messages, {} dropped, {} elections, {} reads by lease) in {:.2} s; every safety invariant held and the history is linearizable",
                outcome.stats.ops_completed,
                outcome.virtual_us as f64 / 1e6,
                outcome.stats.steps,
                outcome.stats.messages_sent,
                outcome.stats.messages_dropped,
                outcome.stats.elections,
                outcome.stats.reads_by_lease,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("{failure}");
            // The picture of the failing run (which may have broken an
            // invariant rather than linearizability: check it again).
            let verdict = raftkv::lincheck::check(&failure.history, raftkv::lincheck::Budget::default());
            let temp_name = format!("raftkv-sim-seed-{seed}");
            super::draw_failure(
                &failure.history,
                &verdict,
                history_out.as_deref(),
                &temp_name,
                Some(&format!("seed {seed}")),
            );
            ExitCode::FAILURE
        }
    }
}

/// Prints each trace line on stdout; a closed pipe (`raftkv sim | head`)
/// must not panic the run.
fn print_trace() -> TraceSink {
    TraceSink(std::sync::Arc::new(|line: &str| {
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }))
}
