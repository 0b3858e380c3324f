//! The `raftkv` command line.
//!
//! Until the real server exists, `raftkv sim` runs a simulated cluster with
//! a readable trace, and `raftkv check` checks any recorded history for
//! linearizability.

use clap::{Parser, Subcommand, ValueEnum};
use raftkv::kv::ReadPath;
use raftkv::lincheck::{self, Budget, History, Verdict};
use raftkv::raft::InjectedBugs;
use raftkv::sim::scenario::{Chaos, Scenario};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "raftkv", version, about = "A linearizable key/value store replicated with Raft")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a simulated cluster under faults, print a trace of elections,
    /// commits, faults and client calls, and check the history.
    Sim {
        /// The seed: the same seed replays the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Which fault schedule to run.
        #[arg(long, value_enum, default_value_t = Shape::PersistPartitionUnreliable)]
        shape: Shape,
        /// Serve Gets through ReadIndex (default) or through the log.
        #[arg(long, value_enum, default_value_t = Reads::ReadIndex)]
        reads: Reads,
        /// Switch on a known Raft bug, to watch the checks catch it.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(InjectedBugs::NAMES))]
        bug: Option<String>,
        /// Write the client history as JSON to this file.
        #[arg(long)]
        history_out: Option<PathBuf>,
        /// Print only the summary, not the trace.
        #[arg(long)]
        quiet: bool,
    },
    /// Check a history (JSON, as written by `sim --history-out`) for
    /// linearizability.
    Check {
        history: PathBuf,
        /// Search steps allowed per key before answering "unknown".
        #[arg(long, default_value_t = Budget::DEFAULT_MAX_STEPS)]
        max_steps: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Shape {
    /// 5 clients, 5 servers, reliable network.
    Concurrent,
    /// 5 clients, 5 servers, lossy network, partitions, crashes (lab 3A).
    PersistPartitionUnreliable,
    /// Leader isolation, single-node crashes and reboots, partitions.
    Chaos,
}

#[derive(Clone, Copy, ValueEnum)]
enum Reads {
    ReadIndex,
    Log,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Sim { seed, shape, reads, bug, history_out, quiet } => {
            sim(seed, shape, reads, bug.as_deref(), history_out, quiet)
        }
        Command::Check { history, max_steps } => check(&history, max_steps),
    }
}

fn sim(
    seed: u64,
    shape: Shape,
    reads: Reads,
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
    let chaos = Chaos { servers: 5, clients: 5, keys: 3, run_us: 5_000_000 };
    let mut config = match &scenario {
        Some(s) => s.sim_config(seed),
        None => chaos.sim_config(seed),
    };
    config.trace = !quiet;
    config.read_path = match reads {
        Reads::ReadIndex => ReadPath::ReadIndex,
        Reads::Log => ReadPath::Log,
    };
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
        if let Err(e) = history.write_file(path) {
            eprintln!("error: could not write the history to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("history ({} operations) written to {}", history.ops.len(), path.display());
    }
    match result {
        Ok(outcome) => {
            println!(
                "seed {seed}: OK — {} operations completed in {:.1} s of virtual time ({} steps, {} messages, {} dropped, {} elections) in {:.2} s; every safety invariant held and the history is linearizable",
                outcome.stats.ops_completed,
                outcome.virtual_us as f64 / 1e6,
                outcome.stats.steps,
                outcome.stats.messages_sent,
                outcome.stats.messages_dropped,
                outcome.stats.elections,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("{failure}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &PathBuf, max_steps: u64) -> ExitCode {
    let history = match History::read_file(path) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let verdict = lincheck::check(&history, Budget::steps(max_steps));
    let took = started.elapsed().as_secs_f64() * 1000.0;
    match verdict {
        Verdict::Ok => {
            println!("linearizable ({} operations, {took:.1} ms)", history.ops.len());
            ExitCode::SUCCESS
        }
        Verdict::Illegal(v) => {
            println!("NOT linearizable: key {:?}; a minimal offending set of operations:", v.key);
            for op in &v.ops {
                println!("  {}", serde_json::to_string(op).unwrap_or_default());
            }
            ExitCode::FAILURE
        }
        Verdict::Unknown { key } => {
            println!("unknown: the search budget ran out on key {key:?} (raise --max-steps)");
            ExitCode::from(3)
        }
    }
}
