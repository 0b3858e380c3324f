//! `cargo run --release -p raftkv-models -- check …` model-checks raftkv;
//! `… -- walk` takes seeded random walks through it, `… -- guided` runs a
//! coverage-guided search, `… -- replay` steps through a hand-written
//! schedule, and `… -- explore` serves the Stateright Explorer on the same
//! model.

use clap::{Parser, Subcommand, ValueEnum};
use raftkv::kv::ReadPath;
use raftkv::raft::InjectedBugs;
use raftkv_models::explorer::Explorer;
use raftkv_models::guided::Guided;
use raftkv_models::schedule::{replay, FIGURE_8, SNAPSHOT_INSTALL};
use raftkv_models::shrink::shrink_breaking;
use raftkv_models::walks::MostlyDeliver;
use raftkv_models::{model, Delivery, ModelConfig, RaftModel};
use stateright::report::{ReportData, ReportDiscovery, Reporter, WriteReporter};
use stateright::{Checker, Expectation, Model};
use std::collections::BTreeMap;
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
        /// Threads that search at once (stateright's checkers, and our own
        /// search with --reduce, whose threads share its visited set).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Depth-first instead of breadth-first (less memory, longer paths).
        #[arg(long)]
        dfs: bool,
        /// Visit one state per renumbering of the servers: every permutation
        /// without clients, the rotations with them (a clerk's try order is
        /// kept only by those). With --dfs, or with --reduce (sleep sets or off).
        #[arg(long)]
        symmetry: bool,
        /// Our own depth-first search instead of stateright's: fingerprints
        /// for the visited states (about 40 bytes each instead of a whole
        /// state) and, with `sleep` (the default), sleep sets over the
        /// model's independence relation; `off` for the same search
        /// unreduced; `persistent` for sleep sets and, where a refusal is
        /// on its way to a client that waits for nothing else, that
        /// delivery alone (a persistent set: fewer states, the same
        /// verdicts; no --depth). Needs --depth, or --max-timeouts (and
        /// --max-retries with clients), which leave finitely many states to
        /// visit them all; lifts the network bound.
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "sleep")]
        reduce: Option<Reduce>,
        /// With --reduce: iterative deepening (every state within 1 action,
        /// then 2, … up to --depth), so that each counterexample and example
        /// found is a shortest one. Stops at the first bound where every
        /// property has its discovery (or, with --first-failure, a violation).
        #[arg(long, requires = "reduce")]
        iterative: bool,
        /// Stop cleanly, printing what was checked, once this process's
        /// resident memory passes this many GB (default: 3/4 of the
        /// machine's memory).
        #[arg(long)]
        max_memory: Option<f64>,
        /// Dynamic partial-order reduction instead (models/src/dpor.rs): a
        /// stateless search over whole runs, one interleaving per class of
        /// equivalent ones, memory by depth only. Bounded by --max-term,
        /// --max-log and the timeouts each actor may take (--timeouts,
        /// --client-timeouts), not by --depth (a cap, 128 at most).
        #[arg(long, conflicts_with_all = ["reduce", "dfs", "symmetry", "iterative"])]
        dpor: bool,
        /// With --dpor: timeouts each server may take along a run; a list
        /// gives each server its own (`2,0,0`: only server 0 times out,
        /// twice; the last entry stands for the servers after it).
        #[arg(long, default_value = "1", value_delimiter = ',', requires = "dpor")]
        timeouts: Vec<u32>,
        /// With --dpor: timeouts (retries) each client may take along a
        /// run; a list as for --timeouts (`1,0`: only the first client).
        #[arg(long, default_value = "1", value_delimiter = ',', requires = "dpor")]
        client_timeouts: Vec<u32>,
        /// With --dpor: every interleaving instead (the same search
        /// unreduced, to compare with).
        #[arg(long, requires = "dpor")]
        unreduced: bool,
        /// With --dpor: without the inert-delivery rule (a delivery that
        /// changes nothing at its server commutes with that server's
        /// events it stays inert across), to compare with.
        #[arg(long, requires = "dpor")]
        no_inert_rule: bool,
        /// With --dpor: search in rounds, round k taking at most k actions
        /// other than each state's first choice along a run, until a round
        /// leaves nothing out (that round is the whole search). Finds bugs
        /// that need few deviations early; costs the repeated rounds.
        #[arg(long, requires = "dpor", conflicts_with = "unreduced")]
        rounds: bool,
        /// With --dpor: the depth-first search and the search in rounds
        /// side by side, a thread each; the first to end decides (each is
        /// exhaustive alone; bugs differ in which finds them sooner).
        #[arg(long, requires = "dpor", conflicts_with_all = ["unreduced", "rounds"])]
        portfolio: bool,
    },
    /// Seeded random walks through the model (stateright's simulation
    /// checker), for depths exhaustive search cannot reach. A violated
    /// property's walk is shrunk to a 1-minimal counterexample.
    Walk {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Stop after visiting this many states.
        #[arg(long, default_value_t = 1_000_000)]
        states: usize,
        /// Longest walk, in actions.
        #[arg(long, default_value_t = 150)]
        max_actions: usize,
        /// Cut links between servers now and then, as a nemesis would.
        #[arg(long)]
        partitions: bool,
        /// More than one thread makes runs irreproducible.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Coverage-guided search: keeps one state per distinct Raft state of
    /// the servers (network left out) and walks a few random actions from
    /// the least explored ones. Reaches schedules too deep for `check` and
    /// too unlikely for `walk`, such as Raft Figure 8 (`--bug
    /// commit_previous_term --clients 0 --ordered --max-batch 1
    /// --max-in-flight 12 --max-term 4 --max-log 2`). A violation is shrunk
    /// to a 1-minimal counterexample.
    Guided {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stop after visiting this many states.
        #[arg(long, default_value_t = 10_000_000)]
        states: u64,
        /// Actions per walk from a kept state.
        #[arg(long, default_value_t = Guided::default().walk_length)]
        walk_length: usize,
    },
    /// Replay a hand-written schedule and report every property at its end.
    /// Words: `T<n>` election timeout, `H<n>` heartbeat, `D<from><to>`
    /// deliver, `C<n>` crash, `R<n>` recover. `figure-8` is the built-in
    /// Raft Figure 8 schedule (needs `--clients 0 --ordered --max-batch 1
    /// --max-in-flight 12 --max-term 4 --max-log 2`); `snapshot-install`
    /// a follower installing the leader's snapshot and restarting from it
    /// (needs `--ordered --crashes 1 --servers-crash-only --max-term 1
    /// --max-log 2 --max-in-flight 5 --snapshot-every 2`).
    Replay {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        schedule: String,
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
    /// Let the network deliver a message any number of times.
    #[arg(long, conflicts_with = "ordered")]
    duplicating: bool,
    #[arg(long, default_value_t = 2)]
    max_term: u64,
    #[arg(long, default_value_t = 3)]
    max_log: usize,
    /// At most this many messages in flight (6 by default; unbounded with
    /// `--reduce`, whose soundness needs a boundary on single actors).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// At most this many messages in flight from any one actor (no bound
    /// by default; refused by `--reduce sleep`, like `--max-in-flight`).
    #[arg(long)]
    max_in_flight_per_sender: Option<usize>,
    /// Entries per AppendEntries (1 reaches Raft Figure 8's schedule).
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Take a snapshot every this many applied entries (never by default).
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// Entries a snapshot leaves in the log before it (0: a lagging
    /// follower is sent the snapshot).
    #[arg(long, default_value_t = 0)]
    snapshot_trailing: u64,
    /// Write and report each snapshot in an action of its own (bugs (j)
    /// and (k) need the gap).
    #[arg(long)]
    slow_snapshots: bool,
    /// Write and report each log batch in an action of its own, so that a
    /// crash can fall between a node applying an entry and its own write
    /// of it.
    #[arg(long)]
    slow_log: bool,
    /// Each server's election and heartbeat timers fire at most this many
    /// times in a run; a list gives each server its own (`2,2,0`: server 2
    /// never times out; the last entry stands for the servers after it).
    /// A bound on each server alone, kept in its state, so sleep sets and
    /// symmetry stay sound. With --max-retries (or no clients), the states
    /// are finitely many: a search to any depth finishes.
    #[arg(long, value_delimiter = ',')]
    max_timeouts: Vec<u8>,
    /// Of those, each server's heartbeat timer fires at most this many
    /// times in a run (0: a leader sends only what its election, clients
    /// and followers make it send; Raft Figure 8 needs no heartbeat).
    #[arg(long)]
    max_heartbeats: Option<u8>,
    /// Each client's retry timer fires at most this many times in a run.
    #[arg(long)]
    max_retries: Option<u8>,
    /// Only servers crash (a client's crash is only a pause).
    #[arg(long)]
    servers_crash_only: bool,
    /// Membership change: the last server starts outside the
    /// configuration; an operator adds it as a learner, promotes it, then
    /// removes server 0 (3 → 4 → 3 voters with `--servers 4`).
    #[arg(long)]
    reconfigure: bool,
    /// With `--reconfigure`: this many of the last servers start outside
    /// the configuration, and are all added as learners before any is
    /// promoted (two learners at once: what bug (q) needs).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    joiners: u8,
    /// Switch on a known Raft bug (repeat it for several at once: e.g.
    /// `without_prevote`, a liveness bug no safety property sees, shortens
    /// every election another bug's counterexample needs).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(InjectedBugs::NAMES))]
    bug: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Reduce {
    Sleep,
    Persistent,
    Off,
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
            network: match (self.ordered, self.duplicating) {
                (true, _) => Delivery::Ordered,
                (false, true) => Delivery::Duplicating,
                (false, false) => Delivery::Unordered,
            },
            max_term: self.max_term,
            max_log: self.max_log,
            max_in_flight: self.max_in_flight.unwrap_or(6),
            max_in_flight_per_sender: self.max_in_flight_per_sender.unwrap_or(usize::MAX),
            max_batch: self.max_batch,
            snapshot_every: self.snapshot_every,
            snapshot_trailing: self.snapshot_trailing,
            slow_snapshots: self.slow_snapshots,
            slow_log: self.slow_log,
            max_timeouts: self.max_timeouts.clone(),
            max_heartbeats: self.max_heartbeats,
            max_retries: self.max_retries,
            clients_crash: !self.servers_crash_only,
            founders: self.reconfigure.then(|| self.servers.saturating_sub(self.joiners).max(1)),
            reconfigure: self.reconfigure,
            bugs: self.bug.iter().fold(InjectedBugs::default(), |mut bugs, name| {
                assert!(bugs.switch_on(name), "clap checked the name");
                bugs
            }),
        }
    }
}

fn main() {
    match Cli::parse().command {
        Command::Check {
            model: args,
            depth,
            threads,
            dfs,
            first_failure,
            symmetry,
            reduce,
            iterative,
            max_memory,
            dpor,
            timeouts,
            client_timeouts,
            unreduced,
            no_inert_rule,
            rounds,
            portfolio,
        } => {
            let budget = memory_budget(max_memory);
            if dpor {
                if args.max_in_flight.is_some() || args.max_in_flight_per_sender.is_some() {
                    eprintln!(
                        "error: --dpor needs a boundary made of conditions on single actors: drop --max-in-flight \
                         and --max-in-flight-per-sender (models/src/dpor.rs)"
                    );
                    std::process::exit(2);
                }
                let mut config = args.config();
                config.max_in_flight = usize::MAX;
                let mut options = raftkv_models::dpor::Options::new(0, 0);
                options.server_timeouts = timeouts;
                options.client_timeouts = client_timeouts;
                options.max_depth = depth.unwrap_or(raftkv_models::dpor::MAX_DEPTH);
                options.first_failure = first_failure;
                options.max_memory = Some(budget);
                options.reduce = !unreduced;
                options.inert_rule = !no_inert_rule;
                options.rounds = rounds;
                exit_if(dpor_search(config, options, portfolio));
                return;
            }
            if let Some(reduce) = reduce {
                let finite = args.config().has_finitely_many_states();
                let depth = depth.or(finite.then_some(raftkv_models::search::UNBOUNDED));
                let usage = match depth {
                    None => Some(
                        "--reduce needs --depth, or budgets that leave finitely many states (--max-timeouts, and \
                         --max-retries with clients)"
                            .to_owned(),
                    ),
                    Some(_) if dfs => Some("--reduce is its own depth-first search: drop --dfs".into()),
                    Some(depth)
                        if reduce == Reduce::Persistent && (depth != raftkv_models::search::UNBOUNDED || iterative) =>
                    {
                        Some(
                            "--reduce persistent skips states, so a path it keeps can be longer than the one it \
                             stands for: it needs a search without a depth bound (budgets, no --depth, no \
                             --iterative)"
                                .into(),
                        )
                    }
                    Some(_) if symmetry && args.reconfigure => {
                        Some("--symmetry does not go with --reconfigure (its servers are not interchangeable)".into())
                    }
                    Some(_)
                        if reduce != Reduce::Off
                            && (args.max_in_flight.is_some() || args.max_in_flight_per_sender.is_some()) =>
                    {
                        Some(
                            "--reduce sleep needs a boundary made of conditions on single actors: a bound on \
                             messages in flight (--max-in-flight, --max-in-flight-per-sender) lets the reduction \
                             miss states (models/src/search.rs); the depth bound alone keeps the search finite"
                                .into(),
                        )
                    }
                    _ => None,
                };
                if let Some(usage) = usage {
                    eprintln!("error: {usage}");
                    std::process::exit(2);
                }
                let mut config = args.config();
                if args.max_in_flight.is_none() {
                    config.max_in_flight = usize::MAX;
                }
                let how = OwnSearch { first_failure, iterative, symmetry, threads };
                let violated = own_search(config, depth.unwrap_or_default(), reduce, how, budget);
                exit_if(violated);
                return;
            }
            watch_memory(budget);
            let config = args.config();
            if symmetry && (!dfs || config.reconfigure) {
                eprintln!(
                    "error: --symmetry needs --dfs (stateright reduces symmetry only there) or --reduce, and not \
                     --reconfigure (its servers are not interchangeable)"
                );
                std::process::exit(2);
            }
            println!("checking {config:?}");
            let mut builder = model(config).checker().threads(threads);
            if symmetry {
                builder = builder.symmetry_fn(raftkv_models::symmetry::representative);
            }
            if let Some(d) = depth {
                builder = builder.target_max_depth(raftkv_models::stateright_depth(d));
            }
            if first_failure {
                builder = builder.finish_when(stateright::HasDiscoveries::AnyFailures);
            }
            let started = Instant::now();
            let mut reporter = Progress::default();
            let violated = if dfs {
                summarize(&builder.spawn_dfs().join_and_report(&mut reporter), started)
            } else {
                summarize(&builder.spawn_bfs().join_and_report(&mut reporter), started)
            };
            exit_if(violated);
        }
        Command::Walk { model: args, seed, states, max_actions, partitions, threads } => {
            let config = args.config();
            println!("walking {config:?}");
            let mut chooser = MostlyDeliver::new(model(config.clone()));
            if partitions {
                chooser = chooser.with_partitions();
            }
            let started = Instant::now();
            let checker = model(config)
                .checker()
                .threads(threads)
                .target_max_depth(raftkv_models::stateright_depth(max_actions))
                .target_state_count(states)
                .finish_when(stateright::HasDiscoveries::AnyFailures)
                .spawn_simulation(seed, chooser);
            let checker = checker.join_and_report(&mut Progress::default());
            let violated = summarize(&checker, started);
            let m = checker.model();
            for p in m.properties() {
                if matches!(p.expectation, Expectation::Always) {
                    if let Some(walk) = checker.discovery(p.name) {
                        let (small, path) = shrink_breaking(m, &walk.into_actions(), p.name);
                        println!("{} counterexample shrunk to {} actions:\n{path}", p.name, small.len());
                        draw_history(p.name, path.last_state());
                    }
                }
            }
            exit_if(violated);
        }
        Command::Guided { model: args, seed, states, walk_length } => {
            let config = args.config();
            println!("searching {config:?}");
            let m = model(config);
            let started = Instant::now();
            let search = Guided { seed, max_states: states, walk_length, ..Guided::default() };
            let report = search.run(&m, |states, cells| {
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "{secs:>6.0} s: {states} states, {cells} cells, {:.0} states/s, {}",
                    states as f64 / secs.max(1e-9),
                    memory("VmRSS", "RSS")
                );
            });
            let secs = started.elapsed().as_secs_f64();
            println!(
                "done: {} states, {} cells, {secs:.1} s, {:.0} states/s, {}",
                report.states,
                report.cells,
                report.states as f64 / secs.max(1e-9),
                memory("VmHWM", "peak RSS")
            );
            for p in m.properties() {
                let verdict = match (p.expectation, &report.violation) {
                    (Expectation::Always, Some((name, _))) if *name == p.name => "always: VIOLATED (below)",
                    (Expectation::Always, Some(_)) => "always: not judged past the first violation",
                    (Expectation::Always, None) => "always: holds in every visited state",
                    (_, _) if report.reached.contains(&p.name) => "sometimes: example found",
                    (_, _) => "sometimes: NOT FOUND",
                };
                println!("  {:<36} {verdict}", p.name);
            }
            if let Some((name, actions)) = &report.violation {
                let (small, path) = shrink_breaking(&m, actions, name);
                println!("{name} broken after {} actions, shrunk to {}:\n{path}", actions.len(), small.len());
                draw_history(name, path.last_state());
            }
            exit_if(report.violation.is_some());
        }
        Command::Replay { model: args, schedule } => {
            let m = model(args.config());
            let text = match schedule.as_str() {
                "figure-8" => FIGURE_8,
                "snapshot-install" => SNAPSHOT_INSTALL,
                other => other,
            };
            let path = match replay(&m, text) {
                Ok(path) => path,
                Err((why, path)) => {
                    println!("{path}");
                    eprintln!("error: {why}");
                    std::process::exit(2);
                }
            };
            let states = path.clone().into_states();
            println!("{path}");
            let mut violated = false;
            for p in m.properties() {
                let always = matches!(p.expectation, Expectation::Always);
                // Where an "always" property first fails, or a "sometimes" one first holds.
                let at = states.iter().position(|s| (p.condition)(&m, s) != always);
                let verdict = match (always, at) {
                    (true, Some(i)) => format!("always: VIOLATED after {i} actions"),
                    (true, None) => "always: holds".into(),
                    (false, Some(i)) => format!("sometimes: holds after {i} actions"),
                    (false, None) => "sometimes: not reached".into(),
                };
                violated |= always && at.is_some();
                println!("  {:<36} {verdict}", p.name);
                if let (true, Some(i)) = (always, at) {
                    draw_history(p.name, &states[i]);
                }
            }
            exit_if(violated);
        }
        Command::Explore { model: args, addr } => {
            println!("Stateright Explorer on http://{addr}");
            Explorer::new(model(args.config())).checker().threads(1).serve(addr.as_str());
        }
    }
}

/// `check --reduce`: our own depth-first search ([`raftkv_models::search`]),
/// with progress lines, a verdict per property and each violated
/// property's counterexample shrunk; with `iterative`, by iterative
/// deepening, so that each discovery is a shortest one. Whether an
/// "always" property failed.
fn own_search(config: ModelConfig, depth: usize, reduce: Reduce, search: OwnSearch, budget: u64) -> bool {
    use raftkv_models::search::{deepen, Counts, Options, Search, Stopped};
    let interrupted = interrupt_flag();
    println!("checking {config:?}");
    let reduction = match (reduce, search.symmetry) {
        (Reduce::Sleep, true) => "sleep sets and symmetry",
        (Reduce::Sleep, false) => "sleep sets",
        (Reduce::Persistent, true) => "sleep sets, lone refusals (persistent sets) and symmetry",
        (Reduce::Persistent, false) => "sleep sets and lone refusals (persistent sets)",
        (Reduce::Off, true) => "symmetry",
        (Reduce::Off, false) => "none",
    };
    let kind = if search.iterative { "iterative deepening" } else { "depth-first search" };
    let finite =
        if depth == raftkv_models::search::UNBOUNDED { " (the budgets leave finitely many states)" } else { "" };
    println!(
        "own {kind} to {}{finite}, reduction: {reduction}, {} thread(s), memory budget {:.1} GB",
        to_depth(depth),
        search.threads,
        budget as f64 / 1e9
    );
    if search.symmetry && config.clients > 0 {
        println!(
            "note: with clients, symmetry uses the rotations of the servers only, and a clerk's first guess \
             (server 0) is not symmetric: few states have a reachable twin, so expect about as many states, \
             each renumbered (specs/models.md, \"With clients, only rotations\")"
        );
    }
    let m = model(config);
    let mut options = Options::new(depth);
    options.independent = (reduce != Reduce::Off).then_some(raftkv_models::independence::independent as _);
    options.persistent = (reduce == Reduce::Persistent).then_some(raftkv_models::independence::lone_refusal as _);
    options.max_memory = Some(budget);
    options.first_failure = search.first_failure;
    options.symmetry = search.symmetry.then(raftkv_models::symmetry::reduction);
    options.threads = search.threads;
    let started = Instant::now();
    let mut last_print = Instant::now();
    let mut progress = |bound: usize, c: &Counts| {
        if last_print.elapsed().as_secs() >= 10 {
            last_print = Instant::now();
            println!(
                "{:>6.0} s: to {}: {} generated, {} unique, {} slept, {}",
                started.elapsed().as_secs_f64(),
                to_depth(bound),
                c.generated,
                c.unique,
                c.slept,
                memory("VmRSS", "RSS"),
            );
        }
    };
    // What either kind of search leaves: every state within `completed`
    // actions visited; the counts (all searches added up, when deepening)
    // and the last search's unique states (for the collision estimate).
    let (completed, counts, unique, stopped, discoveries) = if search.iterative {
        let d = deepen(&m, options, Some(interrupted), &mut progress);
        (d.completed, d.total, d.last.unique, d.stopped, d.discoveries)
    } else {
        let mut s = Search::new(&m, options).interrupt_on(interrupted);
        s.run(|c| progress(depth, c));
        let completed = if s.stopped().is_none() { depth } else { 0 };
        (completed, s.counts(), s.counts().unique, s.stopped(), s.discoveries())
    };
    let c = counts;
    let secs = started.elapsed().as_secs_f64();
    let summed = if search.iterative { " (the searches to each bound added up)" } else { "" };
    println!(
        "done{summed}: {} generated, {} unique, {} expanded, {} slept, {} pruned, {} actions deep, {secs:.1} s, \
         {:.0} states/s, {}, fingerprint collision probability {:.1e}",
        c.generated,
        c.unique,
        c.expanded,
        c.slept,
        c.pruned,
        c.max_depth,
        c.generated as f64 / secs.max(1e-9),
        memory("VmHWM", "peak RSS"),
        raftkv_models::search::collision_probability(unique),
    );
    let not_exhaustive = match completed {
        0 => "NOT exhaustive".to_owned(),
        d => format!("NOT exhaustive beyond {d} actions"),
    };
    let visited = |d: usize| match d {
        raftkv_models::search::UNBOUNDED => "every reachable state visited".to_owned(),
        d => format!("every state within {d} actions visited"),
    };
    match stopped {
        None => println!("{}", visited(completed)),
        Some(Stopped::AllDiscovered) => match completed {
            0 => println!("stopped: every property has its discovery"),
            d => println!("stopped: every property has its discovery ({})", visited(d)),
        },
        Some(Stopped::FirstFailure) => println!("stopped at the first violation ({not_exhaustive})"),
        Some(Stopped::MemoryBudget { rss_bytes }) => println!(
            "STOPPED: resident memory {:.2} GB passed the budget: {not_exhaustive}; the verdicts are for the \
             states visited",
            rss_bytes as f64 / 1e9
        ),
        Some(Stopped::Interrupted) => {
            println!("STOPPED by Ctrl-C or SIGTERM: {not_exhaustive}; the verdicts are for the states visited")
        }
        Some(Stopped::Outrun) => println!("stopped: another search ended first ({not_exhaustive})"),
    }
    let shortest = if search.iterative { ", a shortest" } else { "" };
    report_discoveries(&m, &discoveries, shortest)
}

/// "7 actions", or "every depth" for a search without a depth bound.
fn to_depth(depth: usize) -> String {
    match depth {
        raftkv_models::search::UNBOUNDED => "every depth".into(),
        d => format!("{d} actions"),
    }
}

/// Each property's verdict from what a search discovered, then each
/// violated property's counterexample shrunk (`shortest` qualifies the
/// lengths). Whether an "always" property failed.
fn report_discoveries(
    m: &raftkv_models::RaftModel,
    discoveries: &std::collections::BTreeMap<&'static str, Vec<raftkv_models::RaftAction>>,
    shortest: &str,
) -> bool {
    let mut violated = false;
    for p in m.properties() {
        let found = discoveries.get(p.name);
        let sometimes = matches!(p.expectation, Expectation::Sometimes);
        violated |= !sometimes && found.is_some();
        let verdict = match (sometimes, found) {
            (true, Some(path)) => format!("sometimes: example found ({} actions{shortest})", path.len()),
            (true, None) => "sometimes: NOT FOUND".into(),
            (false, Some(path)) => format!("always: VIOLATED after {} actions{shortest} (below)", path.len()),
            (false, None) => "always: holds".into(),
        };
        println!("  {:<36} {verdict}", p.name);
    }
    for p in m.properties() {
        if let (Expectation::Always, Some(actions)) = (p.expectation, discoveries.get(p.name)) {
            let (small, path) = shrink_breaking(m, actions, p.name);
            println!("{} counterexample ({} actions) shrunk to {}:\n{path}", p.name, actions.len(), small.len());
            draw_history(p.name, path.last_state());
        }
    }
    violated
}

/// `check --dpor` ([`raftkv_models::dpor`]), reported as `own_search`
/// reports: one search, or with `portfolio` two side by side
/// ([`raftkv_models::dpor::portfolio`]). Whether an "always" property
/// failed.
fn dpor_search(config: ModelConfig, options: raftkv_models::dpor::Options, portfolio: bool) -> bool {
    use raftkv_models::dpor::{Counts, Dpor, Outcome};
    use raftkv_models::search::Stopped;
    let interrupted = interrupt_flag();
    println!("checking {config:?}");
    let how = match (options.reduce, options.rounds, portfolio) {
        (false, ..) => "every interleaving (DPOR off)",
        (true, _, true) => "DPOR (source sets and sleep sets), depth-first and in rounds side by side, a thread each",
        (true, true, false) => "DPOR (source sets and sleep sets) in rounds of increasing deviations",
        (true, false, false) => "DPOR (source sets and sleep sets)",
    };
    println!(
        "{how}: timeouts per server {:?}, per client {:?}, runs of at most {} actions",
        options.server_timeouts, options.client_timeouts, options.max_depth
    );
    let m = model(config);
    let started = Instant::now();
    // When the last line was printed, and each search's latest counts
    // (depth-first, in rounds), so that a line shows both of a portfolio.
    let latest = std::sync::Mutex::new((Instant::now(), [None, None]));
    let name = |rounds: bool, c: &Counts| {
        if rounds {
            format!("in rounds (round {}, ≤ {} deviations)", c.rounds, c.rounds.saturating_sub(1))
        } else {
            "depth-first".to_owned()
        }
    };
    let progress = |c: &Counts, rounds: bool| {
        let mut latest = latest.lock().unwrap_or_else(|e| e.into_inner());
        let (last_print, counts) = &mut *latest;
        counts[usize::from(rounds)] = Some(*c);
        if last_print.elapsed().as_secs() >= 10 {
            *last_print = Instant::now();
            let searches: Vec<String> = [false, true]
                .into_iter()
                .filter_map(|r| counts[usize::from(r)].map(|c| (r, c)))
                .map(|(r, c)| {
                    format!(
                        "{}: {} states, {} maximal runs, {} sleep-blocked, {} backtracks",
                        name(r, &c),
                        c.states,
                        c.maximal,
                        c.sleep_blocked,
                        c.backtracks
                    )
                })
                .collect();
            println!("{:>6.0} s: {}; {}", started.elapsed().as_secs_f64(), searches.join("; "), memory("VmRSS", "RSS"));
        }
    };
    let searched: Result<Vec<Outcome>, String> = if portfolio {
        raftkv_models::dpor::portfolio(&m, &options, interrupted, &progress).map(Vec::from)
    } else {
        let rounds = options.rounds;
        Dpor::new(&m, options).map(|search| {
            let mut search = search.interrupt_on(interrupted);
            search.run(|c| progress(c, rounds));
            vec![search.into_outcome()]
        })
    };
    let outcomes = searched.unwrap_or_else(|why| {
        eprintln!("error: {why}");
        std::process::exit(2)
    });
    let secs = started.elapsed().as_secs_f64();
    for (i, o) in outcomes.iter().enumerate() {
        let c = &o.counts;
        let which = if portfolio { format!("{}: ", name(o.rounds, c)) } else { String::new() };
        println!(
            "{}{which}{} states, {} maximal runs, {} sleep-blocked, {} backtracks, {} pairs of concurrent server \
             states, {} actions deep, {:.0} states/s",
            if i == 0 { "done: " } else { "  the other, stopped then: " },
            c.states,
            c.maximal,
            c.sleep_blocked,
            c.backtracks,
            c.pairs,
            c.max_depth,
            c.states as f64 / secs.max(1e-9),
        );
        if o.rounds {
            println!(
                "  {} rounds (the last took at most {} deviations per run and deferred {} backtrack points)",
                c.rounds,
                c.rounds.saturating_sub(1),
                c.deferred
            );
        }
    }
    println!("{secs:.1} s, {}", memory("VmHWM", "peak RSS"));
    let first = &outcomes[0];
    match (first.stopped, first.counts.capped) {
        (None, 0) => println!("every run within the bounds explored (one interleaving per class)"),
        (None, capped) => println!("NOT exhaustive: {capped} runs reached the cap on their length"),
        (Some(Stopped::AllDiscovered), _) => println!("stopped: every property has its discovery"),
        (Some(Stopped::FirstFailure), _) => println!("stopped at the first violation (NOT exhaustive)"),
        (Some(Stopped::MemoryBudget { rss_bytes }), _) => println!(
            "STOPPED: resident memory {:.2} GB passed the budget: NOT exhaustive; the verdicts are for the runs \
             explored",
            rss_bytes as f64 / 1e9
        ),
        (Some(Stopped::Interrupted), _) => {
            println!("STOPPED by Ctrl-C or SIGTERM: NOT exhaustive; the verdicts are for the runs explored")
        }
        (Some(Stopped::Outrun), _) => println!("stopped: the other search ended first (NOT exhaustive)"),
    }
    // Every discovery is a real run, whichever search made it.
    let mut discoveries = first.discoveries.clone();
    for o in &outcomes[1..] {
        for (name, path) in &o.discoveries {
            discoveries.entry(name).or_insert_with(|| path.clone());
        }
    }
    report_discoveries(&m, &discoveries, "")
}

/// The flag our searches stop on (`interrupt_on`), set by Ctrl-C or
/// SIGTERM once this installs the handler.
fn interrupt_flag() -> &'static std::sync::atomic::AtomicBool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static INTERRUPTED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed)) {
        eprintln!("warning: Ctrl-C and SIGTERM will not stop the search cleanly: {e}");
    }
    &INTERRUPTED
}

/// How `check --reduce` searches.
#[derive(Clone, Copy)]
struct OwnSearch {
    first_failure: bool,
    iterative: bool,
    symmetry: bool,
    threads: usize,
}

/// `--max-memory` in bytes, or 3/4 of the machine's memory.
fn memory_budget(gb: Option<f64>) -> u64 {
    if let Some(gb) = gb {
        return (gb * 1e9) as u64;
    }
    proc_kb("/proc/meminfo", "MemTotal").unwrap_or(8_000_000) * 1024 / 4 * 3
}

/// For stateright's searches, which cannot be stopped from outside: a
/// thread that ends the process (exit code 3) with a line saying why once
/// its resident memory passes `budget`, and on Ctrl-C or SIGTERM, instead of an OOM
/// kill. The last progress line says what was checked.
fn watch_memory(budget: u64) {
    let stop = |why: String| {
        println!("STOPPED: {why}: NOT exhaustive; the last progress line above is what was checked");
        std::process::exit(3);
    };
    if let Err(e) = ctrlc::set_handler(move || stop("interrupted (Ctrl-C or SIGTERM)".into())) {
        eprintln!("warning: Ctrl-C and SIGTERM will not stop the search cleanly: {e}");
    }
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        if let Some(rss) = raftkv_models::search::resident_bytes().filter(|&rss| rss > budget) {
            stop(format!(
                "resident memory {:.2} GB passed the budget of {:.2} GB",
                rss as f64 / 1e9,
                budget as f64 / 1e9
            ));
        }
    });
}

/// Progress lines with the rate and memory, and stateright's own report
/// of the discoveries.
#[derive(Default)]
struct Progress {
    last: Option<(Instant, usize)>,
}

impl Reporter<RaftModel> for Progress {
    fn report_checking(&mut self, data: ReportData) {
        if data.done {
            return; // `summarize` prints the totals
        }
        let now = Instant::now();
        let rate = match self.last {
            Some((at, states)) => (data.total_states - states) as f64 / now.duration_since(at).as_secs_f64().max(1e-9),
            None => data.total_states as f64 / data.duration.as_secs_f64().max(1e-9),
        };
        self.last = Some((now, data.total_states));
        println!(
            "{:>6.0} s: {} states, {} unique, {} actions deep, {:.0} states/s, {}",
            data.duration.as_secs_f64(),
            data.total_states,
            data.unique_states,
            data.max_depth.saturating_sub(1),
            rate,
            memory("VmRSS", "RSS"),
        );
    }

    fn report_discoveries(
        &mut self,
        model: &RaftModel,
        discoveries: BTreeMap<&'static str, ReportDiscovery<RaftModel>>,
    ) {
        WriteReporter::new(&mut std::io::stdout()).report_discoveries(model, discoveries);
    }
}

/// This process's memory from `/proc/self/status` (`VmRSS` now, `VmHWM`
/// peak), for the progress lines and the summary; Linux only.
fn memory(field: &str, label: &str) -> String {
    match proc_kb("/proc/self/status", field) {
        Some(kb) => format!("{label} {:.2} GB", kb as f64 / 1e6),
        None => format!("{label} unknown"),
    }
}

/// The `field: N kB` line of a `/proc` file such as `/proc/meminfo`.
fn proc_kb(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix(" kB")?.parse().ok())
}

/// Exit code 1 when an "always" property was violated, as a failed test
/// would; 0 otherwise (2 is for usage errors).
/// For a broken `linearizable`, draws the client history of the state that
/// breaks it as raftkv's HTML timeline (`raftkv check --html`: the longest
/// linearizable prefix, the call that cannot follow, the offending set) in
/// the temporary directory, and prints where.
fn draw_history(property: &str, state: &raftkv_models::RaftState) {
    use raftkv::lincheck::{self, Budget, History};
    if property != "linearizable" {
        return;
    }
    let history = History::new(state.history.ops.clone());
    let verdict = lincheck::check(&history, Budget::steps(1_000_000));
    let explanation = match &verdict {
        lincheck::Verdict::Illegal(v) => Some(lincheck::explain(&history, &v.key, Budget::steps(1_000_000))),
        _ => None,
    };
    let page = lincheck::html::render("model counterexample", &history, &verdict, explanation.as_ref());
    let path = std::env::temp_dir().join(format!("raftkv-models-{}.html", std::process::id()));
    match std::fs::write(&path, page) {
        Ok(()) => println!("the history as a timeline: {}", path.display()),
        Err(e) => eprintln!("error: cannot write {}: {e}", path.display()),
    }
}

fn exit_if(violated: bool) {
    if violated {
        std::process::exit(1);
    }
}

/// Prints the totals and each property's verdict; whether an "always"
/// property was violated.
fn summarize(checker: &impl Checker<RaftModel>, started: Instant) -> bool {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "done: {} states, {} unique, {} actions deep, {:.1} s, {:.0} states/s, {}",
        checker.state_count(),
        checker.unique_state_count(),
        // Stateright counts the initial state as depth 1. A depth-bounded
        // check generates states one action beyond --depth without checking
        // them (see `stateright_depth`).
        checker.max_depth().saturating_sub(1),
        secs,
        checker.state_count() as f64 / secs.max(1e-9),
        memory("VmHWM", "peak RSS"),
    );
    let mut violated = false;
    for p in checker.model().properties() {
        let found = checker.discovery(p.name).is_some();
        let sometimes = matches!(p.expectation, Expectation::Sometimes);
        violated |= !sometimes && found;
        let verdict = match (sometimes, found) {
            (true, true) => "sometimes: example found",
            (true, false) => "sometimes: NOT FOUND",
            (false, true) => "always: VIOLATED (counterexample above)",
            (false, false) => "always: holds",
        };
        println!("  {:<36} {verdict}", p.name);
    }
    violated
}
