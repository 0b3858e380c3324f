//! `raftkv nemesis`: three real servers, each in its own network namespace,
//! under the seeded random schedule of `server::nemesis` while clients
//! append; then every key is read back, the history checked, and
//! availability reported per fault. The same run as `tests/partitions.rs`'s
//! random schedule, as a command. Needs root, `ip` and `nft`. With `--tls`,
//! every port speaks TLS as between machines (peers authenticated by their
//! certificates, clients checking the servers').

use indicatif::{ProgressBar, ProgressStyle};
use raftkv::server::client::Access;
use raftkv::server::config::ClusterConfig;
use raftkv::server::load::{self, LoadSpec, Progress};
use raftkv::server::nemesis::availability::{self, Sampler};
use raftkv::server::nemesis::netns::Netns;
use raftkv::server::nemesis::{self, Processes, SERVERS};
use raftkv::server::tempdir::TempDir;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct NemesisArgs {
    pub run_for: Duration,
    pub seed: u64,
    pub clients: usize,
    pub plot: Option<PathBuf>,
    pub history_out: Option<PathBuf>,
    pub keep: bool,
    pub tls: bool,
    pub lease_reads: bool,
}

/// Ports inside each server's own namespace (so never taken by anyone else).
const PEER_PORT: u16 = 7000;
const CLIENT_PORT: u16 = 6379;
/// Bound on each wait that is not a fault's hold or the first leader
/// ([`super::SERVING_PATIENCE`]): the load's first and last operations,
/// each final read.
const PATIENCE: Duration = Duration::from_secs(30);
/// Operations the load completes before the first fault and after the
/// last, so that every run starts and ends serving.
const SETTLE_OPS: u64 = 200;

pub fn run(args: NemesisArgs) -> ExitCode {
    // The clients' attempts, with `RUST_LOG=raftkv::server::client=debug`.
    super::init_logging();
    // Declared before the servers, so dropped after them: namespaces go
    // once the processes in them are gone.
    let net = match Netns::create(SERVERS) {
        Ok(net) => net,
        Err(why) => {
            eprintln!("error: raftkv nemesis needs network namespaces: {why}");
            return ExitCode::from(2);
        }
    };
    let mut root = match TempDir::new("nemesis") {
        Ok(root) => root,
        Err(e) => {
            eprintln!("error: cannot create a data directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = ClusterConfig::local(SERVERS, 0, 0);
    config.lease_reads = args.lease_reads;
    for (id, node) in config.nodes.iter_mut().enumerate() {
        node.peer = SocketAddr::new(net.addr(id as u8), PEER_PORT);
        node.client = SocketAddr::new(net.addr(id as u8), CLIENT_PORT);
    }
    let clients: Vec<SocketAddr> = config.nodes.iter().map(|n| n.client).collect();
    let mut access = Access::plain();
    if args.tls {
        // Certificates naming each server's namespace address, which is
        // what the clients dial and check.
        let hosts: Vec<String> = clients.iter().map(|a| a.ip().to_string()).collect();
        match super::tls_on_every_port(&mut config, root.path().join("certs"), 0..SERVERS, &hosts) {
            Ok(tls) => access = tls,
            Err(e) => {
                eprintln!("error: cannot issue certificates: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let config_path = root.path().join("cluster.toml");
    if let Err(e) = std::fs::write(&config_path, config.to_toml()) {
        eprintln!("error: cannot write {}: {e}", config_path.display());
        return ExitCode::FAILURE;
    }
    let mut servers = Servers {
        config: config_path,
        root: root.path().to_path_buf(),
        prefixes: (0..SERVERS).map(|id| net.exec_prefix(id)).collect(),
        children: (0..SERVERS).map(|_| None).collect(),
    };
    println!(
        "nemesis seed {} for {} s: {SERVERS} servers at {}{}, logs in {}",
        args.seed,
        args.run_for.as_secs(),
        clients.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        match (args.tls, args.lease_reads) {
            (true, true) => " (TLS on every port, lease reads)",
            (true, false) => " (TLS on every port)",
            (false, true) => " (lease reads)",
            (false, false) => "",
        },
        root.path().display()
    );
    let spec = nemesis::appends_load(clients, access, args.clients, args.seed);
    let outcome = super::runtime().block_on(run_schedule(&net, &mut servers, &spec, &args));
    drop(servers);
    match outcome {
        Ok(()) if args.keep => {
            root.keep();
            println!("the servers' data and logs are kept in {}", root.path().display());
            ExitCode::SUCCESS
        }
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            root.keep();
            eprintln!("error: {why}\nthe servers' data and logs are kept in {}", root.path().display());
            ExitCode::FAILURE
        }
    }
}

async fn run_schedule(net: &Netns, servers: &mut Servers, spec: &LoadSpec, args: &NemesisArgs) -> Result<(), String> {
    for id in 0..SERVERS {
        servers.restart(id)?;
    }
    super::wait_until_serving(&spec.servers, &spec.access, || servers.exited()).await?;
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let sampler = Sampler::start(&spec.servers, &spec.access, epoch);
    let clients = tokio::spawn(load::run(spec.clone(), progress.clone(), epoch));
    let bar = progress_bar(args.run_for, progress.clone(), epoch);
    let faults = async {
        after_more_ops(&progress, SETTLE_OPS, "before the first fault").await?;
        let events = nemesis::random_schedule(net, servers, args.seed, args.run_for, epoch).await?;
        after_more_ops(&progress, SETTLE_OPS, "after the last fault").await?;
        Ok::<_, String>(events)
    };
    let events = tokio::select! {
        events = faults => events,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
    };
    progress.stop.store(true, Ordering::Relaxed);
    bar.abort();
    let records = clients.await.map_err(|e| format!("the load clients failed: {e}"))?;
    let samples = sampler.finish().await;
    let events = events?;
    if let Some(exit) = servers.exited() {
        return Err(exit);
    }
    print!("{}", availability::report(&records, &events, &samples, SERVERS));

    let ops = records.into_iter().flat_map(|r| r.history).collect();
    let started = Instant::now();
    let checked = load::read_back_and_check(spec, ops, epoch, PATIENCE).await;
    // (How many keys: the "history checked" line just above says.)
    println!("read back every key and checked the history in {:.1} s", started.elapsed().as_secs_f64());
    let history = match &checked {
        Ok(history) => history,
        Err(failure) => &failure.history,
    };
    if let Some(path) = &args.history_out {
        match std::fs::write(path, history.to_json()) {
            Ok(()) => println!("history ({} operations) written to {}", history.ops.len(), path.display()),
            Err(e) => eprintln!("error: cannot write {}: {e}", path.display()),
        }
    }
    if let Some(path) = &args.plot {
        use raftkv::server::plot;
        let end_us = epoch.elapsed().as_micros() as u64;
        let title = format!("raftkv nemesis: seed {}, {} clients appending; faults shaded", args.seed, spec.clients);
        let faults: Vec<plot::Span> = events
            .iter()
            .filter(|e| !e.victims.is_empty())
            .map(|e| plot::Span {
                start_s: e.cut_us as f64 / 1e6,
                end_s: e.heal_us as f64 / 1e6,
                label: e.name.clone(),
            })
            .collect();
        // Operations completed per 100 ms: a stall of a few hundred
        // milliseconds shows.
        let chart = plot::svg(&title, &plot::intervals(&history.ops, end_us, 100_000), &faults);
        match std::fs::write(path, chart) {
            Ok(()) => println!("chart written to {}", path.display()),
            Err(e) => eprintln!("error: cannot write {}: {e}", path.display()),
        }
    }
    match checked {
        Ok(_) => {
            println!("linearizable, and every acknowledged append is in its key's final value exactly once");
            Ok(())
        }
        Err(failure) => {
            let path = servers.root.join("history.json");
            let saved = match std::fs::write(&path, failure.history.to_json()) {
                Ok(()) => format!("the history is in {} (raftkv check --html)", path.display()),
                Err(e) => format!("the history could not be written to {}: {e}", path.display()),
            };
            Err(format!("{}\n{saved}", failure.message))
        }
    }
}

/// Until the load has completed `more` operations, at most [`PATIENCE`].
async fn after_more_ops(progress: &Progress, more: u64, when: &str) -> Result<(), String> {
    let target = progress.completed.load(Ordering::Relaxed) + more;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut every = tokio::time::interval(Duration::from_millis(10));
    while progress.completed.load(Ordering::Relaxed) < target {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the clients did not complete {more} operations {when} within {PATIENCE:?}"));
        }
        every.tick().await;
    }
    Ok(())
}

/// Seconds run and operations completed, redrawn four times a second.
fn progress_bar(run_for: Duration, progress: Arc<Progress>, epoch: Instant) -> tokio::task::JoinHandle<()> {
    let bar = ProgressBar::new(run_for.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            let done = progress.completed.load(Ordering::Relaxed);
            bar.set_position(epoch.elapsed().as_secs().min(run_for.as_secs()));
            bar.set_message(format!("{done} ops"));
            if progress.stop.load(Ordering::Relaxed) {
                bar.finish_and_clear();
                return;
            }
        }
    })
}

/// The three server processes, each run in its namespace; every one still
/// running is killed (SIGKILL) when dropped. Each also ends with this
/// process however it ends (`--exit-with-parent`).
struct Servers {
    config: PathBuf,
    root: PathBuf,
    /// The command prefix that enters each server's namespace.
    prefixes: Vec<Vec<String>>,
    children: Vec<Option<Child>>,
}

impl Servers {
    fn log(&self, id: u8) -> PathBuf {
        self.root.join(format!("node-{id}.log"))
    }

    fn spawn(&self, id: u8) -> std::io::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(id))?;
        let (program, prefix_args) = self.prefixes[usize::from(id)].split_first().expect("a non-empty prefix");
        Command::new(program)
            .args(prefix_args)
            .arg(std::env::current_exe()?)
            .args(["server", "--id", &id.to_string(), "--config"])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(data_dir(&self.root, id))
            .arg("--exit-with-parent")
            // Never written: the pipe closes when this process dies.
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    }

    /// A server that exited on its own (none of this schedule's faults
    /// end one without this process knowing), as a message.
    fn exited(&mut self) -> Option<String> {
        for id in 0..SERVERS {
            let Some(child) = self.children[usize::from(id)].as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                return Some(format!("server {id} exited on its own ({status}); its log: {}", self.log(id).display()));
            }
        }
        None
    }
}

fn data_dir(root: &Path, id: u8) -> PathBuf {
    root.join(format!("node-{id}"))
}

impl Processes for Servers {
    fn kill9(&mut self, id: u8) -> Result<(), String> {
        let mut child = self.children[usize::from(id)].take().ok_or(format!("server {id} is not running"))?;
        child.kill().and_then(|()| child.wait()).map_err(|e| format!("killing server {id}: {e}"))?;
        Ok(())
    }

    fn restart(&mut self, id: u8) -> Result<(), String> {
        let child = self.spawn(id).map_err(|e| format!("starting server {id}: {e}"))?;
        self.children[usize::from(id)] = Some(child);
        Ok(())
    }

    fn signal(&self, id: u8, signal: &str) -> Result<(), String> {
        let pid = self.children[usize::from(id)].as_ref().ok_or(format!("server {id} is not running"))?.id();
        let status = Command::new("kill").args([signal, &pid.to_string()]).status();
        match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("kill {signal} {pid}: {status}")),
            Err(e) => Err(format!("kill {signal} {pid}: {e}")),
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
