//! `raftkv server`: one member of a cluster, until Ctrl-C or SIGTERM.

use raftkv::kv::directory::Addresses;
use raftkv::raft::NodeId;
use raftkv::server::config::ClusterConfig;
use raftkv::server::node::{NodeFailure, OnFatal};
use raftkv::server::run::{Server, ServerOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How this server finds its place: see `raftkv server --help`.
pub struct Options {
    pub join: bool,
    pub join_via: Option<SocketAddr>,
    pub listen: Option<Addresses>,
    pub routes: Vec<(NodeId, SocketAddr)>,
}

pub fn run(config: PathBuf, id: NodeId, data_dir: PathBuf, exit_with_parent: bool, options: Options) -> ExitCode {
    let Options { join, join_via, listen, routes } = options;
    super::init_logging();
    super::exit_on_panic();
    match raftkv::server::faults::FaultPlan::from_env() {
        Ok(Some(plan)) => plan.install(),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let cluster = match ClusterConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (election_ticks, tick_ms) = (cluster.election_ticks, cluster.tick_ms);
    let runtime = super::runtime();
    let code = runtime.block_on(async move {
        // The node stopped on its own: nothing it has not made durable may be
        // acted on, so the process ends here, loudly.
        let on_fatal: OnFatal = std::sync::Arc::new(move |failure: &NodeFailure| {
            eprintln!("error: node {id}: {failure}");
            std::process::exit(i32::from(match failure {
                NodeFailure::Storage(_) => super::EXIT_STORAGE,
                NodeFailure::Panic { .. } => super::EXIT_PANIC,
            }));
        });
        let routes = routes.into_iter().collect();
        let options = ServerOptions { cluster, id, data_dir, join, join_via, listen, routes };
        let server = match Server::start(options, on_fatal).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let reason = wait_for_stop(&server, exit_with_parent).await;
        tracing::info!(node = id, "stopping: {reason}");
        if matches!(reason, Stop::Asked) {
            // Two election timeouts at most: past that, an election would
            // have been quicker.
            let patience = Duration::from_millis(2 * 2 * u64::from(election_ticks) * tick_ms);
            let started = std::time::Instant::now();
            match server.hand_over(patience).await {
                Ok(Some(leader)) => {
                    tracing::info!(node = id, "handed leadership to {leader} in {:?}", started.elapsed())
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(node = id, "stopping without handing leadership over: {e}"),
            }
        }
        match server.shutdown().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: node {id}: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // Not a plain drop: it would wait for the blocking thread still reading
    // stdin for `--exit-with-parent`, which never returns while the
    // launcher lives (a SIGTERM'd server then never exited). Everything
    // that matters was shut down above.
    runtime.shutdown_background();
    code
}

/// Why the server stops.
enum Stop {
    /// Ctrl-C or SIGTERM: a graceful stop, leadership handed over first.
    Asked,
    /// The launcher is gone (with the rest of its cluster, probably).
    Orphaned,
    /// The node stopped on its own and has logged why.
    Failed,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Asked => "asked to (Ctrl-C or SIGTERM)",
            Stop::Orphaned => "the launching process is gone",
            Stop::Failed => "the node stopped",
        })
    }
}

/// Waits for Ctrl-C, SIGTERM, the node stopping on its own (a storage
/// failure: it has already logged why), or, with `exit_with_parent`, the
/// end of stdin: a launcher that holds our stdin's pipe (`raftkv cluster`,
/// the end-to-end tests) closes it by dying, however it dies, so no server
/// outlives it.
async fn wait_for_stop(server: &Server, exit_with_parent: bool) -> Stop {
    let failed = async {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        while !server.handle().is_stopped() {
            every.tick().await;
        }
    };
    let orphaned = async {
        if !exit_with_parent {
            return std::future::pending::<()>().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Stop::Asked,
        _ = orphaned => Stop::Orphaned,
        _ = super::sigterm() => Stop::Asked,
        _ = failed => Stop::Failed,
    }
}
