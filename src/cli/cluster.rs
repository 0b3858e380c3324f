//! `raftkv cluster`: a local cluster of real server processes on
//! 127.0.0.1, for trying raftkv out. Each member is a child process running
//! `raftkv server` with its own data directory and log file. A member that
//! exits (kill -9 it to watch Raft carry on) is reported and restarted with
//! backoff ([`Restarts`]), or left down with `--no-restart`; the others
//! keep serving. Ctrl-C or SIGTERM stops everything it started. With
//! `--tls`, it issues a certificate authority and node certificates into
//! the data directory first, and every port speaks TLS.

use raftkv::kv::Op;
use raftkv::server::client::{random_client_id, Access, RemoteClerk};
use raftkv::server::config::{ClusterConfig, SnapshotSettings};
use raftkv::server::tempdir::TempDir;
use raftkv::server::tls;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

pub struct ClusterArgs {
    /// The founding voters.
    pub nodes: u8,
    /// Servers started outside the configuration, for an operator to add.
    pub spares: u8,
    /// Client port of node 0; node i listens on `port + i`.
    pub port: u16,
    /// Peer port of node 0; node i listens on `peer_port + i`.
    pub peer_port: u16,
    /// Keep the nodes' data here (kept after exit) instead of a temporary
    /// directory (removed on exit).
    pub data_dir: Option<PathBuf>,
    /// Start, check that every node serves a write and a read, stop.
    pub smoke: bool,
    /// Leave a node that exits down instead of restarting it.
    pub no_restart: bool,
    /// Written into the cluster's `cluster.toml`.
    pub snapshots: SnapshotSettings,
    /// TLS on both ports, with certificates issued into `<data>/certs`.
    pub tls: bool,
    /// Clients must `AUTH` with it.
    pub requirepass: Option<String>,
    /// Node i serves metrics on this port + i.
    pub metrics_port: Option<u16>,
    /// Gets under the leader lease ([`ClusterConfig::lease_reads`]).
    pub lease_reads: bool,
}

pub fn run(args: ClusterArgs) -> ExitCode {
    let all = args.nodes.saturating_add(args.spares);
    let mut config = ClusterConfig {
        snapshots: args.snapshots,
        initial_voters: (args.spares > 0).then_some(args.nodes),
        requirepass: args.requirepass.clone(),
        lease_reads: args.lease_reads,
        ..ClusterConfig::local(all, args.peer_port, args.port)
    };
    if let Some(base) = args.metrics_port {
        for (i, node) in config.nodes.iter_mut().enumerate() {
            node.metrics = Some(SocketAddr::from(([127, 0, 0, 1], base.saturating_add(i as u16))));
        }
    }
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // A clear message for the most common failure; the servers would say it
    // too, but in their log files.
    for node in &config.nodes {
        for addr in [Some(node.client), Some(node.peer), node.metrics].into_iter().flatten() {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                eprintln!(
                    "error: cannot listen on {addr}: {e}; choose other ports with --port, --peer-port and --metrics-port"
                );
                return ExitCode::from(2);
            }
        }
    }
    let (root, _temp) = match data_root(args.data_dir.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut access = Access::plain();
    if args.tls {
        match super::tls_on_every_port(&mut config, root.join("certs"), 0..all, &[]) {
            Ok(tls) => access = tls,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(password) = &args.requirepass {
        access = access.with_password(password.clone());
    }
    let config_path = root.join("cluster.toml");
    if let Err(e) = std::fs::write(&config_path, config.to_toml()) {
        eprintln!("error: cannot write {}: {e}", config_path.display());
        return ExitCode::from(2);
    }
    let mut children = Children { config: config_path, root: root.clone(), slots: Vec::new() };
    for id in 0..all {
        match spawn_node(&children.config, &root, id, false) {
            Ok(child) => {
                children.slots.push(Slot { child: Some(child), started: Some(Instant::now()), ..Slot::default() })
            }
            Err(e) => {
                eprintln!("error: cannot start node {id}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let clients: Vec<SocketAddr> = config.nodes.iter().map(|n| n.client).collect();
    let tls_note = if args.tls { " (TLS on every port)" } else { "" };
    println!("raftkv: a {}-node cluster on 127.0.0.1{tls_note}, data in {}", args.nodes, root.display());
    for (id, node) in config.nodes.iter().enumerate() {
        let spare = if id >= usize::from(args.nodes) { "  (spare: not a member yet)" } else { "" };
        let metrics = node.metrics.map(|m| format!("  metrics http://{m}/metrics")).unwrap_or_default();
        println!(
            "  node {id}: clients {}  peers {}{metrics}  log {}{spare}",
            node.client,
            node.peer,
            log_path(&root, id as u8).display()
        );
    }
    let runtime = super::runtime();
    if let Err(e) = runtime.block_on(super::wait_until_serving(&clients, &access, || children.exited())) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    println!("A leader is elected and every node answers. Talk to any node, for example:");
    let (cli_tls, our_tls) = match &config.tls {
        Some(tls) => {
            let ca = tls.dir.join(tls::CA_CERT);
            (format!(" --tls --cacert {}", ca.display()), format!(" --cacert {}", ca.display()))
        }
        None => (String::new(), String::new()),
    };
    // Printed as given: whoever typed it can read it on their command line.
    let (cli_tls, our_tls) = match &args.requirepass {
        Some(password) => (format!("{cli_tls} -a {password}"), format!("{our_tls} --pass {password}")),
        None => (cli_tls, our_tls),
    };
    println!("  redis-cli{cli_tls} -c -p {} set greeting hello", args.port);
    println!("  redis-cli{cli_tls} -c -p {} get greeting", args.port + u16::from(args.nodes) - 1);
    let servers: Vec<String> = clients.iter().map(|a| a.to_string()).collect();
    let servers = servers.join(",");
    let servers_arg =
        if servers == super::args::DEFAULT_SERVERS { String::new() } else { format!(" --servers {servers}") };
    println!("  cargo run --release -- get greeting{servers_arg}{our_tls}");
    if args.spares > 0 {
        println!("  cargo run --release -- member add {}{servers_arg}{our_tls}", args.nodes);
    }
    if args.smoke {
        return match runtime.block_on(smoke(&clients, &access)) {
            Ok(()) => {
                println!("smoke check passed: a write through each node was read back through every node");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: smoke check failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.no_restart {
        println!("Ctrl-C stops the cluster; a node that exits stays down (--no-restart).");
    } else {
        println!("Ctrl-C stops the cluster; a node that exits is restarted.");
    }
    match runtime.block_on(wait_for_exit(&mut children, !args.no_restart)) {
        None => ExitCode::SUCCESS,
        Some(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The cluster's data directory: the user's (kept) or a temporary one
/// (removed when the returned guard drops).
fn data_root(dir: Option<&Path>) -> Result<(PathBuf, Option<TempDir>), String> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            Ok((dir.to_owned(), None))
        }
        None => {
            let temp = TempDir::new("cluster").map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            Ok((temp.path().to_owned(), Some(temp)))
        }
    }
}

fn log_path(root: &Path, id: u8) -> PathBuf {
    root.join(format!("node-{id}.log"))
}

/// Starts node `id`; a restart appends to its log, a first start begins it.
fn spawn_node(config: &Path, root: &Path, id: u8, restart: bool) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(restart)
        .truncate(!restart)
        .open(log_path(root, id))?;
    Command::new(std::env::current_exe()?)
        .arg("server")
        .arg("--config")
        .arg(config)
        .arg("--id")
        .arg(id.to_string())
        .arg("--data-dir")
        .arg(root.join(format!("node-{id}")))
        .arg("--exit-with-parent")
        // Never written: the pipe closes when this process dies, however
        // it dies, and the server then stops.
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// The children, stopped (SIGKILL: storage is crash-safe) when dropped.
struct Children {
    config: PathBuf,
    root: PathBuf,
    /// By node id.
    slots: Vec<Slot>,
}

/// One node: its process while it runs, and when to start it again.
#[derive(Default)]
struct Slot {
    child: Option<Child>,
    started: Option<Instant>,
    restarts: Restarts,
    restart_at: Option<Instant>,
}

/// How long to wait before starting a node that exited: 1 s, doubling up
/// to 30 s while it keeps exiting within a minute of its start (a node that
/// cannot start, say its port is taken, is not respawned flat out); one
/// that ran for a minute or more starts over at 1 s.
#[derive(Debug, Default, PartialEq, Eq)]
struct Restarts {
    /// Exits in a row, each within a minute of its start.
    quick_exits: u32,
}

impl Restarts {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);
    const STABLE: Duration = Duration::from_secs(60);

    /// The node exited after running for `ran`: how long to wait.
    fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= Self::STABLE {
            self.quick_exits = 0;
        }
        let wait = Self::FIRST.saturating_mul(1 << self.quick_exits.min(16)).min(Self::MAX);
        self.quick_exits = self.quick_exits.saturating_add(1);
        wait
    }
}

impl Children {
    /// The first child that exited, with how (while starting: any exit is
    /// an error then).
    fn exited(&mut self) -> Option<String> {
        self.slots.iter_mut().enumerate().find_map(|(id, slot)| match slot.child.as_mut()?.try_wait() {
            Ok(Some(status)) => Some(format!("node {id} exited ({status}); see its log")),
            _ => None,
        })
    }

    /// Notices nodes that exited and (with `restart`) starts those whose
    /// wait is over, saying so on stdout. Returns an error when no node is
    /// left running and none will be started again.
    fn supervise(&mut self, restart: bool) -> Result<(), String> {
        let now = Instant::now();
        for (id, slot) in self.slots.iter_mut().enumerate() {
            if let Some(child) = slot.child.as_mut() {
                let Ok(Some(status)) = child.try_wait() else { continue };
                slot.child = None;
                let log = log_path(&self.root, id as u8);
                if !restart {
                    println!("node {id} exited ({status}); leaving it down (--no-restart); log: {}", log.display());
                    continue;
                }
                let ran = slot.started.map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
                let wait = slot.restarts.after_exit(ran);
                slot.restart_at = Some(now + wait);
                println!("node {id} exited ({status}); restarting it in {wait:?}; log: {}", log.display());
            } else if slot.restart_at.is_some_and(|at| at <= now) {
                slot.restart_at = None;
                match spawn_node(&self.config, &self.root, id as u8, true) {
                    Ok(child) => {
                        println!("node {id} restarted (pid {})", child.id());
                        slot.child = Some(child);
                        slot.started = Some(now);
                    }
                    Err(e) => {
                        let wait = slot.restarts.after_exit(Duration::ZERO);
                        slot.restart_at = Some(now + wait);
                        println!("node {id} could not be restarted ({e}); trying again in {wait:?}");
                    }
                }
            }
        }
        if self.slots.iter().all(|s| s.child.is_none() && s.restart_at.is_none()) {
            return Err("every node has exited".into());
        }
        Ok(())
    }

    /// Asks every child to stop (see `raftkv server --exit-with-parent`).
    fn close_stdins(&mut self) {
        for child in self.slots.iter_mut().filter_map(|s| s.child.as_mut()) {
            drop(child.stdin.take());
        }
    }

    /// Gives the children (which got the terminal's Ctrl-C too) time to
    /// shut down cleanly before the drop kills what is left.
    async fn wait_for_all(&mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let mut every = tokio::time::interval(Duration::from_millis(50));
        while tokio::time::Instant::now() < deadline {
            if self.slots.iter_mut().filter_map(|s| s.child.as_mut()).all(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                return;
            }
            every.tick().await;
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in self.slots.iter_mut().filter_map(|s| s.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn smoke(clients: &[SocketAddr], access: &Access) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for first in 0..clients.len() {
        let mut clerk = RemoteClerk::new(random_client_id(), clients.to_vec(), first as u8, Duration::from_secs(1))
            .with_access(access.clone());
        let value = format!("written-via-node-{first}");
        clerk.run(Op::Put { key: "smoke".into(), value: value.clone() }, deadline).await.map_err(|e| e.to_string())?;
        for reader in 0..clients.len() {
            let mut clerk =
                RemoteClerk::new(random_client_id(), clients.to_vec(), reader as u8, Duration::from_secs(1))
                    .with_access(access.clone());
            let got = clerk.run(Op::Get { key: "smoke".into() }, deadline).await.map_err(|e| e.to_string())?;
            if got != value {
                return Err(format!("read {got:?} through node {reader} after writing {value:?}"));
            }
        }
    }
    Ok(())
}

/// Waits for Ctrl-C (which the terminal also sends to the children) or
/// SIGTERM, restarting nodes that exit (with `restart`). Returns an error
/// if every node exited for good.
async fn wait_for_exit(children: &mut Children, restart: bool) -> Option<String> {
    let mut every = tokio::time::interval(Duration::from_millis(200));
    let terminated = super::sigterm();
    tokio::pin!(terminated);
    loop {
        tokio::select! {
            _ = &mut terminated => {
                println!("stopping the cluster");
                children.close_stdins();
                children.wait_for_all(Duration::from_secs(5)).await;
                return None;
            }
            _ = tokio::signal::ctrl_c() => {
                println!("stopping the cluster");
                children.wait_for_all(Duration::from_secs(5)).await;
                return None;
            }
            _ = every.tick() => {
                if let Err(e) = children.supervise(restart) {
                    return Some(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_keeps_exiting_waits_longer_and_a_stable_one_starts_over() {
        let mut restarts = Restarts::default();
        let waits: Vec<u64> = (0..8).map(|_| restarts.after_exit(Duration::from_secs(2)).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(restarts.after_exit(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(restarts.after_exit(Duration::ZERO), Duration::from_secs(2));
    }
}
