//! The subcommands of the `raftkv` binary (this module belongs to the
//! binary, not the library): `args.rs` holds the argument definitions and
//! each other file is one command.

pub mod args;
pub mod bench;
pub mod check;
pub mod client;
pub mod cluster;
pub mod floor;
pub mod member;
pub mod nemesis;
pub mod server;
pub mod sim;
pub mod status;

use clap::ValueEnum;

#[derive(Clone, Copy, ValueEnum)]
pub enum Shape {
    /// 5 clients, 5 servers, reliable network.
    Concurrent,
    /// 5 clients, 5 servers, lossy network, partitions, crashes (lab 3A).
    PersistPartitionUnreliable,
    /// Leader isolation, single-node crashes and reboots, partitions.
    Chaos,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Reads {
    ReadIndex,
    Log,
    /// ReadIndex, answered under the leader lease when it holds.
    Lease,
}

/// Logs to stderr; `RUST_LOG` overrides the default level (info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

/// Resolves when the process receives SIGTERM (never, if the handler could
/// not be installed).
pub async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => drop(term.recv().await),
        Err(_) => std::future::pending().await,
    }
}

/// Draws a history that did not check Ok as the HTML timeline: beside the
/// history file the user asked for, or else beside a copy written to the
/// temporary directory as `<temp_name>.history.json`; says where. The page
/// is titled `title`, or else by the history's path. `raftkv bench
/// --check` and `raftkv sim` call it on failure.
pub fn draw_failure(
    history: &raftkv::lincheck::History,
    verdict: &raftkv::lincheck::Verdict,
    history_out: Option<&std::path::Path>,
    temp_name: &str,
    title: Option<&str>,
) {
    let history_path = history_out.map(std::path::Path::to_path_buf).unwrap_or_else(|| {
        let path = std::env::temp_dir().join(format!("{temp_name}.history.json"));
        match std::fs::write(&path, history.to_json()) {
            Ok(()) => println!("history written to {}", path.display()),
            Err(e) => eprintln!("error: cannot write {}: {e}", path.display()),
        }
        path
    });
    let html = raftkv::server::timeline::beside(&history_path);
    let title = title.map_or_else(|| history_path.display().to_string(), str::to_owned);
    match raftkv::server::timeline::write(&html, &title, history, verdict) {
        Ok(()) => println!("timeline written to {}", html.display()),
        Err(e) => eprintln!("error: cannot write {}: {e}", html.display()),
    }
}

/// How long [`wait_until_serving`] gives a freshly started cluster.
pub const SERVING_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until a read goes through (a leader is elected and has committed),
/// asking the servers at `clients` in turn (the clerk follows redirects),
/// or until `exited` names a server that died, or [`SERVING_PATIENCE`]
/// passes. `raftkv cluster` and `raftkv nemesis` wait so after starting
/// their servers.
pub async fn wait_until_serving(
    clients: &[std::net::SocketAddr],
    access: &raftkv::server::client::Access,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<(), String> {
    use raftkv::server::client::{random_client_id, RemoteClerk};
    use tokio::time::Instant;
    let deadline = Instant::now() + SERVING_PATIENCE;
    let mut clerk = RemoteClerk::new(random_client_id(), clients.to_vec(), 0, std::time::Duration::from_millis(500))
        .with_access(access.clone());
    loop {
        if let Some(exit) = exited() {
            return Err(exit);
        }
        let attempt = (Instant::now() + std::time::Duration::from_secs(1)).min(deadline);
        match clerk.run(raftkv::kv::Op::Get { key: "raftkv-ready".into() }, attempt).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("no server served a read in {} s: {e}", SERVING_PATIENCE.as_secs()))
            }
            Err(_) => {}
        }
    }
}

/// TLS on every port of a cluster a command starts itself: issues an
/// authority and certificates for `nodes` (also naming `hosts`) into `dir`,
/// points `config` at them, and returns how clients reach the servers.
/// `raftkv cluster --tls` and `raftkv nemesis --tls` both start so.
pub fn tls_on_every_port(
    config: &mut raftkv::server::config::ClusterConfig,
    dir: std::path::PathBuf,
    nodes: std::ops::Range<raftkv::raft::NodeId>,
    hosts: &[String],
) -> Result<raftkv::server::client::Access, raftkv::server::tls::TlsError> {
    use raftkv::server::tls;
    tls::issue(&dir, nodes, hosts, tls::NODE_CERT_DAYS_DEFAULT)?;
    let access = raftkv::server::client::Access::tls(&dir.join(tls::CA_CERT))?;
    config.tls = Some(raftkv::server::config::TlsSettings { dir, clients: true });
    Ok(access)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("raftkv-io")
        .enable_all()
        .build()
        .expect("starting the tokio runtime")
}

/// Exit code of a server whose thread panicked (sysexits' EX_SOFTWARE).
pub const EXIT_PANIC: u8 = 70;
/// Exit code of a server whose storage failed (sysexits' EX_IOERR).
pub const EXIT_STORAGE: u8 = 74;

/// Makes any panic, in any thread or task of the process, end it: the
/// default report (which names the thread and the message) and a log line,
/// then exit with [`EXIT_PANIC`]. A server must never linger half-alive
/// with one of its threads dead (tokio would otherwise catch a task's panic
/// and carry on without it).
pub fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!(thread = %thread, "a thread panicked; exiting: {info}");
        std::process::exit(i32::from(EXIT_PANIC));
    }));
}
