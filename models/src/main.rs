//! `cargo run --release -p raftkv-models -- check …` model-checks raftkv;
//! `… -- explore` serves the Stateright Explorer on the same model.

use clap::{Parser, Subcommand, ValueEnum};
use raftkv::kv::ReadPath;
use raftkv::raft::InjectedBugs;
use raftkv_models::{model, ModelConfig, RaftModel};
use stateright::report::WriteReporter;
use stateright::{Checker, Model};
use std::time::Instant;

#[derive(Parser)]
#[command(name = "raftkv-models", about = "Model-check raftkv's real Raft and KV code with Stateright")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Explore every interleaving up to the bounds and report each property.
    Check {
        #[command(flatten)]
        model: ModelArgs,
        /// Check every state reached by at most this many actions (no limit
        /// by default). Stateright's own depth counts the initial state and
        /// skips states at the target depth, so it is given depth + 2.
        #[arg(long)]
        depth: Option<usize>,
        /// Stop at the first violated "always" property.
        #[arg(long)]
        first_failure: bool,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Depth-first instead of breadth-first (less memory, longer paths).
        #[arg(long)]
        dfs: bool,
    },
    /// Serve the Stateright Explorer web UI on the model.
    Explore {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: String,
    },
}

#[derive(clap::Args)]
struct ModelArgs {
    #[arg(long, default_value_t = 3)]
    servers: u8,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 0)]
    crashes: usize,
    #[arg(long, value_enum, default_value_t = Reads::Readindex)]
    read_path: Reads,
    /// Let the network lose messages.
    #[arg(long)]
    lossy: bool,
    /// Deliver each channel in order (like TCP): far fewer interleavings.
    #[arg(long)]
    ordered: bool,
    #[arg(long, default_value_t = 2)]
    max_term: u64,
    #[arg(long, default_value_t = 3)]
    max_log: usize,
    #[arg(long, default_value_t = 6)]
    max_in_flight: usize,
    /// Switch on a known Raft bug.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(InjectedBugs::NAMES))]
    bug: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Reads {
    Readindex,
    Log,
}

impl ModelArgs {
    fn config(&self) -> ModelConfig {
        ModelConfig {
            servers: self.servers,
            clients: self.clients,
            max_crashes: self.crashes,
            read_path: match self.read_path {
                Reads::Readindex => ReadPath::ReadIndex,
                Reads::Log => ReadPath::Log,
            },
            lossy: self.lossy,
            ordered: self.ordered,
            max_term: self.max_term,
            max_log: self.max_log,
            max_in_flight: self.max_in_flight,
            bugs: self.bug.as_deref().and_then(InjectedBugs::only).unwrap_or_default(),
        }
    }
}

fn main() {
    match Cli::parse().command {
        Command::Check { model: args, depth, threads, dfs, first_failure } => {
            let config = args.config();
            println!("checking {config:?}");
            let mut builder = model(config).checker().threads(threads);
            if let Some(d) = depth {
                builder = builder.target_max_depth(raftkv_models::stateright_depth(d));
            }
            if first_failure {
                builder = builder.finish_when(stateright::HasDiscoveries::AnyFailures);
            }
            let started = Instant::now();
            let mut stdout = std::io::stdout();
            let mut reporter = WriteReporter::new(&mut stdout);
            if dfs {
                summarize(builder.spawn_dfs().join_and_report(&mut reporter), started);
            } else {
                summarize(builder.spawn_bfs().join_and_report(&mut reporter), started);
            }
        }
        Command::Explore { model: args, addr } => {
            println!("Stateright Explorer on http://{addr}");
            model(args.config()).checker().threads(1).serve(addr.as_str());
        }
    }
}

fn summarize(checker: impl Checker<RaftModel>, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "done: {} states, {} unique, max depth {}, {:.1} s, {:.0} states/s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        secs,
        checker.state_count() as f64 / secs.max(1e-9)
    );
    for p in checker.model().properties() {
        let found = checker.discovery(p.name).is_some();
        let sometimes = matches!(p.expectation, stateright::Expectation::Sometimes);
        let verdict = match (sometimes, found) {
            (true, true) => "sometimes: example found",
            (true, false) => "sometimes: NOT FOUND",
            (false, true) => "always: VIOLATED (counterexample above)",
            (false, false) => "always: holds",
        };
        println!("  {:<36} {verdict}", p.name);
    }
}
