//! The command line's arguments (clap) and the dispatch to each
//! subcommand's file.

use super::{Reads, Shape};
use clap::{Parser, Subcommand};
use raftkv::kv::directory::Addresses;
use raftkv::kv::Op;
use raftkv::lincheck::Budget;
use raftkv::raft::{InjectedBugs, NodeId};
use raftkv::server::client::Access;
use raftkv::server::config::SnapshotSettings;
use raftkv::server::load::Mix;
use raftkv::server::resp::{ClientCommand, MemberCommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "raftkv", version, about = "A linearizable key/value store replicated with Raft")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The client ports of `raftkv cluster`'s default 3 nodes.
pub const DEFAULT_SERVERS: &str = "127.0.0.1:6379,127.0.0.1:6380,127.0.0.1:6381";

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster of real server processes on 127.0.0.1 and
    /// print how to talk to it (Ctrl-C stops it).
    Cluster {
        /// How many servers.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
        nodes: u8,
        /// Also start this many spare servers outside the configuration,
        /// to add with `raftkv member add` (ids after the nodes').
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=8))]
        spares: u8,
        /// Client (RESP) port of node 0; node i listens on port + i.
        #[arg(long, default_value_t = 6379)]
        port: u16,
        /// Peer port of node 0; node i listens on peer-port + i.
        #[arg(long, default_value_t = 7379)]
        peer_port: u16,
        /// Keep the data here instead of in a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Check that every node serves a write and a read, then stop.
        #[arg(long)]
        smoke: bool,
        /// Leave a node that exits down, instead of restarting it (after
        /// 1 s, doubling to 30 s while it keeps exiting within a minute).
        #[arg(long)]
        no_restart: bool,
        /// Take a snapshot and compact the log after this many applied
        /// entries (0: not by count).
        #[arg(long, default_value_t = SnapshotSettings::default().every_entries)]
        snapshot_entries: u64,
        /// ... or after this many MiB of applied commands (0: not by size).
        #[arg(long, default_value_t = SnapshotSettings::default().every_mib)]
        snapshot_mib: u64,
        /// Entries kept in the log behind a snapshot, for slow followers.
        #[arg(long, default_value_t = SnapshotSettings::default().trailing_entries)]
        snapshot_trailing: u64,
        /// ... and at most this many MiB of commands.
        #[arg(long, default_value_t = SnapshotSettings::default().trailing_mib)]
        snapshot_trailing_mib: u64,
        /// TLS on every port: peers authenticate each other mutually, and
        /// clients need the printed `--cacert` (certificates are issued
        /// into the data directory's `certs/`).
        #[arg(long)]
        tls: bool,
        /// Clients must `AUTH` with this password first (`redis-cli -a`).
        #[arg(long)]
        requirepass: Option<String>,
        /// Serve Prometheus metrics (`GET /metrics`): node i on port + i.
        #[arg(long)]
        metrics_port: Option<u16>,
        /// A leader answers Gets under its lease, with no round of
        /// messages, trusting that no clock drifts more than 5% (see
        /// `lease_reads` in the written cluster.toml).
        #[arg(long)]
        lease_reads: bool,
    },
    /// Issue a certificate authority and a certificate per node for a TLS
    /// cluster (`[tls] dir = "..."` in cluster.toml). Run again with more
    /// nodes to add certificates: an authority already in DIR is reused.
    Certs {
        /// Where to write `ca.pem`, `ca.key`, `node-<id>.pem`, `node-<id>.key`.
        #[arg(long)]
        out: PathBuf,
        /// Issue certificates for nodes 0..N.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..))]
        nodes: u8,
        /// Also name this host (DNS name or IP address) in every node
        /// certificate, for clients that reach the nodes by it (loopback
        /// names are always included). Repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// How many days the node certificates are valid (the authority,
        /// when created, for ten years). Renew by running this again and
        /// restarting each node: certificates are read at start.
        #[arg(long, default_value_t = raftkv::server::tls::NODE_CERT_DAYS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
    },
    /// Run one server of a cluster described by a config file.
    Server {
        /// The cluster's TOML file (see `raftkv cluster`'s cluster.toml).
        #[arg(long)]
        config: PathBuf,
        /// This server's id: its position in the config's `nodes`, from 0.
        #[arg(long)]
        id: NodeId,
        /// Where this server keeps its Raft log and state.
        #[arg(long)]
        data_dir: PathBuf,
        /// Stop when stdin reaches its end (for launchers that hold a pipe
        /// to it, so servers never outlive them).
        #[arg(long)]
        exit_with_parent: bool,
        /// Start outside the configuration even if this id is one of the
        /// config's initial voters: for a new server, or one whose disk was
        /// replaced, which an operator then adds (`raftkv member add`).
        /// Only matters while the data directory holds no configuration.
        /// With ADDR (a member's client address), first fetch the cluster's
        /// address book from it, so this server can answer peers no config
        /// file lists.
        #[arg(long, value_name = "ADDR", num_args = 0..=1)]
        join: Option<Option<SocketAddr>>,
        /// Where this server listens for its peers, when the config file
        /// does not list it (or to move it). Needs --client-addr.
        #[arg(long, value_name = "ADDR", requires = "client_addr")]
        peer_addr: Option<SocketAddr>,
        /// Where this server listens for clients (with --peer-addr).
        #[arg(long, value_name = "ADDR", requires = "peer_addr")]
        client_addr: Option<SocketAddr>,
        /// Dial peer ID at ADDR instead of its configured peer address (a
        /// proxy or NAT in between). Repeatable.
        #[arg(long = "route", value_name = "ID=ADDR", value_parser = parse_route)]
        routes: Vec<(NodeId, SocketAddr)>,
    },
    /// Every server's view: role, term, leader, commit and applied index,
    /// log, snapshot, members, and how far each follower lags.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Show or change the cluster's members, at its leader.
    Member {
        #[command(subcommand)]
        action: MemberAction,
        #[command(flatten)]
        target: Target,
    },
    /// Hand leadership to another voter (it campaigns at once once it has
    /// the leader's whole log).
    TransferLeader {
        /// The voter to lead next.
        id: NodeId,
        #[command(flatten)]
        target: Target,
    },
    /// Put(key, value): replace the value.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Append(key, value): append to the value.
    Append {
        key: String,
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Get(key): print the value ("" if missing).
    Get {
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete(key): remove the key; print 1 if it held a value, else 0.
    Del {
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// PutIfAbsent(key, value): set the value only if the key is missing
    /// (or ""); print 1 if it was set, else 0.
    Setnx {
        key: String,
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Closed-loop clients against a running cluster: throughput, latency
    /// percentiles, fsyncs per operation; optionally record and check the
    /// history.
    Bench {
        /// Concurrent clients, each with one operation outstanding.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// puts, gets, appends (half Appends, half Gets), or all (Gets,
        /// Appends, Puts, DELs and SETNXs).
        #[arg(long, value_enum, default_value_t = BenchMix::Puts)]
        mix: BenchMix,
        /// Keys are drawn at random among this many.
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        #[arg(long, default_value_t = 16)]
        key_size: usize,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Seeds the keys and operations chosen.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the history as JSON (for `raftkv check`).
        #[arg(long)]
        history_out: Option<PathBuf>,
        /// Check the history for linearizability after the run.
        #[arg(long)]
        check: bool,
        /// Draw throughput and latency (p50, p99) over the run as an SVG.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
        /// The servers' client addresses, in node-id order.
        #[arg(long, value_delimiter = ',', default_value = DEFAULT_SERVERS)]
        servers: Vec<SocketAddr>,
        /// Run the same load against etcd instead, for a comparison from
        /// one run (benches/cluster.sh): --servers are the etcd members'
        /// client addresses, and the clients talk to the leader among them
        /// through etcd's gRPC API. Puts or Gets only; needs a raftkv built
        /// with `--features etcd`.
        #[arg(long)]
        etcd: bool,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// What one client's Put cannot go below on this machine, untraced: a
    /// loopback round trip and one Put's log write with its fdatasync, alone
    /// and three at once as a Put's replicas make them (in the temporary
    /// directory, where `raftkv cluster` keeps its data), and issue 17's bar
    /// from them (benches/put_breakdown.sh runs it beside a load).
    Floor {
        /// How long to measure, in seconds.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=super::floor::MAX_SECONDS))]
        seconds: u64,
    },
    /// Real faults for real processes (root, `ip` and `nft`): three
    /// servers, each in its own network namespace, under a seeded random
    /// schedule of partitions, one-way cuts, SIGKILL and SIGSTOP, each
    /// leaving a majority; 8 clients append meanwhile. Checks the history
    /// and reports availability per fault.
    Nemesis {
        /// How long to run the schedule, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seeds the schedule and the clients: the same seed makes the same
        /// faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Concurrent clients, each with one operation outstanding.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Draw throughput and latency (p50, p99) over the run as an SVG.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
        /// Write the history as JSON (for `raftkv check`).
        #[arg(long)]
        history_out: Option<PathBuf>,
        /// Keep the servers' data directories and logs after a run that
        /// passed too (a failed run always keeps them).
        #[arg(long)]
        keep: bool,
        /// TLS on every port, as between machines: the servers
        /// authenticate each other by certificate, and the clients check
        /// the servers' (certificates issued into the data directory).
        #[arg(long)]
        tls: bool,
        /// Gets under the leader lease: a SIGSTOPped leader must not
        /// answer from a lease that ran out while it was stopped.
        #[arg(long)]
        lease_reads: bool,
    },
    /// Run a simulated cluster under faults, print a trace of elections,
    /// commits, faults and client calls, and check the history.
    Sim {
        /// The seed: the same seed replays the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Which fault schedule to run.
        #[arg(long, value_enum, default_value_t = Shape::PersistPartitionUnreliable)]
        shape: Shape,
        /// Serve Gets through ReadIndex (default), through the log, or
        /// under the leader lease.
        #[arg(long, value_enum, default_value_t = Reads::ReadIndex)]
        reads: Reads,
        /// Each server's clock runs fast or slow by up to this many parts
        /// per million (the lease trusts this bound).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..1_000_000))]
        clock_drift_ppm: u64,
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
    /// Check a history (JSON, as written by `sim --history-out` or `bench
    /// --history-out`) for linearizability.
    Check {
        history: PathBuf,
        /// Search steps allowed per key before answering "unknown".
        #[arg(long, default_value_t = Budget::DEFAULT_MAX_STEPS)]
        max_steps: u64,
        /// Also draw the history as a self-contained HTML timeline (per
        /// key, clients as rows, calls as bars; for a violation, the
        /// longest linearizable prefix and the call that cannot follow it).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Subcommand)]
enum MemberAction {
    /// The configuration as the first server answering sees it, and its
    /// leader.
    List,
    /// Add a server: first as a learner, which receives the log (or a
    /// snapshot) but does not vote, then, once it has caught up, as a
    /// voter. With PEER and CLIENT, its addresses are first recorded in the
    /// cluster's replicated address book (so no config file needs to list
    /// it); without, its id must be in the config file or already in the
    /// book.
    Add {
        id: NodeId,
        /// Where the new server listens for its peers (ip:port).
        #[arg(requires = "client")]
        peer: Option<SocketAddr>,
        /// Where it listens for clients (ip:port).
        client: Option<SocketAddr>,
        /// Stop at learner (promote it later with `promote`).
        #[arg(long)]
        learner: bool,
    },
    /// Make a learner a voter, once it has caught up with the log.
    Promote { id: NodeId },
    /// Record new addresses for a server whose machine moved (restart it
    /// there with --peer-addr and --client-addr): every server redials it.
    Move { id: NodeId, peer: SocketAddr, client: SocketAddr },
    /// Remove a voter or a learner (the leader too: it hands over first).
    Remove { id: NodeId },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchMix {
    Puts,
    Gets,
    Appends,
    All,
}

/// Which cluster a client command talks to.
#[derive(clap::Args)]
struct Target {
    /// The servers' client addresses, in node-id order.
    #[arg(long, global = true, value_delimiter = ',', default_value = DEFAULT_SERVERS)]
    servers: Vec<SocketAddr>,
    /// Give up after this many seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    timeout: f64,
    #[command(flatten)]
    access: AccessArgs,
}

/// How to reach the servers' client ports.
#[derive(clap::Args)]
struct AccessArgs {
    /// Speak TLS, trusting the authority in this file (`ca.pem` from
    /// `raftkv certs`; `raftkv cluster --tls` prints its path).
    #[arg(long, global = true)]
    cacert: Option<PathBuf>,
    /// The servers' password (`requirepass`), sent with `AUTH` first on
    /// every connection. Prefer the environment variable: a command line
    /// is visible to other users of the machine.
    #[arg(short = 'a', long = "pass", global = true, env = "RAFTKV_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

impl AccessArgs {
    fn access(&self) -> Result<Access, ExitCode> {
        let access = match &self.cacert {
            Some(file) => Access::tls(file),
            None => Ok(Access::plain()),
        };
        let access = access.map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        })?;
        Ok(match &self.password {
            Some(password) => access.with_password(password.clone()),
            None => access,
        })
    }
}

impl Target {
    fn run(self, op: Op) -> ExitCode {
        let timeout = Duration::try_from_secs_f64(self.timeout).unwrap_or(Duration::from_secs(10));
        match self.access.access() {
            Ok(access) => super::client::run(self.servers, access, op, timeout),
            Err(code) => code,
        }
    }

    fn operate(self, commands: Vec<ClientCommand>) -> ExitCode {
        let timeout = Duration::try_from_secs_f64(self.timeout).unwrap_or(Duration::from_secs(10));
        match self.access.access() {
            Ok(access) => super::member::run(self.servers, access, commands, timeout),
            Err(code) => code,
        }
    }
}

/// `ID=ADDR` of `raftkv server --route`.
fn parse_route(text: &str) -> Result<(NodeId, SocketAddr), String> {
    let (id, addr) = text.split_once('=').ok_or("expected ID=ADDR, e.g. 1=127.0.0.1:7001")?;
    let id = id.parse().map_err(|e| format!("node id {id:?}: {e}"))?;
    let addr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
    Ok((id, addr))
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Cluster {
            nodes,
            spares,
            port,
            peer_port,
            data_dir,
            smoke,
            no_restart,
            snapshot_entries,
            snapshot_mib,
            snapshot_trailing,
            snapshot_trailing_mib,
            tls,
            requirepass,
            metrics_port,
            lease_reads,
        } => super::cluster::run(super::cluster::ClusterArgs {
            nodes,
            spares,
            port,
            peer_port,
            data_dir,
            smoke,
            no_restart,
            snapshots: SnapshotSettings {
                every_entries: snapshot_entries,
                every_mib: snapshot_mib,
                trailing_entries: snapshot_trailing,
                trailing_mib: snapshot_trailing_mib,
            },
            tls,
            requirepass,
            metrics_port,
            lease_reads,
        }),
        Command::Certs { out, nodes, hosts, days } => match raftkv::server::tls::issue(&out, 0..nodes, &hosts, days) {
            Ok(written) => {
                for path in written {
                    println!("wrote {}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Server { config, id, data_dir, exit_with_parent, join, peer_addr, client_addr, routes } => {
            let listen = peer_addr.zip(client_addr).map(|(peer, client)| Addresses { peer, client });
            let options = super::server::Options { join: join.is_some(), join_via: join.flatten(), listen, routes };
            super::server::run(config, id, data_dir, exit_with_parent, options)
        }
        Command::Member { action, target } => {
            let commands = match action {
                MemberAction::List => vec![MemberCommand::List],
                MemberAction::Add { id, peer, client, learner } => {
                    let add = match peer.zip(client) {
                        Some((peer, client)) => MemberCommand::AddAt(id, Addresses { peer, client }),
                        None => MemberCommand::Add(id),
                    };
                    if learner {
                        vec![add]
                    } else {
                        vec![add, MemberCommand::Promote(id)]
                    }
                }
                MemberAction::Promote { id } => vec![MemberCommand::Promote(id)],
                MemberAction::Move { id, peer, client } => vec![MemberCommand::Move(id, Addresses { peer, client })],
                MemberAction::Remove { id } => vec![MemberCommand::Remove(id)],
            };
            target.operate(commands.into_iter().map(ClientCommand::Member).collect())
        }
        Command::Status { target } => {
            let timeout = Duration::try_from_secs_f64(target.timeout).unwrap_or(Duration::from_secs(10));
            match target.access.access() {
                Ok(access) => super::status::run(target.servers, access, timeout),
                Err(code) => code,
            }
        }
        Command::TransferLeader { id, target } => target.operate(vec![ClientCommand::Transfer { to: id }]),
        Command::Put { key, value, target } => target.run(Op::Put { key, value }),
        Command::Append { key, value, target } => target.run(Op::Append { key, value }),
        Command::Get { key, target } => target.run(Op::Get { key }),
        Command::Del { key, target } => target.run(Op::Delete { key }),
        Command::Setnx { key, value, target } => target.run(Op::PutIfAbsent { key, value }),
        Command::Bench {
            clients,
            seconds,
            mix,
            keys,
            key_size,
            value_size,
            seed,
            history_out,
            check,
            plot,
            servers,
            etcd,
            access,
        } => {
            let access = match access.access() {
                Ok(access) => access,
                Err(code) => return code,
            };
            super::bench::run(super::bench::BenchArgs {
                servers,
                access,
                clients,
                duration: Duration::from_secs(seconds),
                mix: match mix {
                    BenchMix::Puts => Mix::Puts,
                    BenchMix::Gets => Mix::Gets,
                    BenchMix::Appends => Mix::Appends,
                    BenchMix::All => Mix::All,
                },
                keys,
                key_bytes: key_size,
                value_bytes: value_size,
                history_out,
                check,
                seed,
                plot,
                etcd,
            })
        }
        Command::Nemesis { seconds, seed, clients, plot, history_out, keep, tls, lease_reads } => {
            super::nemesis::run(super::nemesis::NemesisArgs {
                run_for: Duration::from_secs(seconds),
                seed,
                clients,
                plot,
                history_out,
                keep,
                tls,
                lease_reads,
            })
        }
        Command::Sim { seed, shape, reads, clock_drift_ppm, bug, history_out, quiet } => {
            super::sim::sim(seed, shape, reads, clock_drift_ppm, bug.as_deref(), history_out, quiet)
        }
        Command::Floor { seconds } => super::floor::run(Duration::from_secs(seconds)),
        Command::Check { history, max_steps, html } => super::check::check(&history, max_steps, html.as_deref()),
    }
}
