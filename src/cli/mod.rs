//! The subcommands of the `raftkv` binary (this module belongs to the
//! binary, not the library): `args.rs` holds the argument definitions and
//! each other file is one command.

pub mod args;
pub mod bench;
pub mod check;
pub mod client;
pub mod cluster;
pub mod member;
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
