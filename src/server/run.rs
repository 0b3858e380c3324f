//! One raftkv server process, assembled: storage → node runtime → peer
//! transport and client port. `raftkv server` is [`Server::start`], with an
//! [`OnFatal`] that ends the process, plus a wait for Ctrl-C or SIGTERM;
//! tests start servers the same way. When the environment asks for a fault
//! ([`super::faults`]), the storage is wrapped in a [`FaultyStorage`].

use super::client::{operator, Access};
use super::client_port::ClientPort;
use super::config::ClusterConfig;
use super::faults::{self, FaultyStorage, Site};
use super::metrics::{MetricsEndpoint, Sources};
use super::node::{NodeFailure, NodeHandle, NodeRuntime, OnFatal, RuntimeConfig, SendToPeer};
use super::peer::{PeerConfig, PeerTransport};
use super::resp::RespLimits;
use super::resp::{ClientCommand, MemberCommand};
use super::storage::{self, RaftStorage, StorageError};
use super::tls::NodeTls;
use crate::kv::directory::{Addresses, Directory};
use crate::kv::snapshot::SnapshotError;
use crate::kv::{AdminOp, KvServer};
use crate::raft::types::MAX_NODES;
use crate::raft::NodeId;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What `raftkv server` needs to know.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub cluster: ClusterConfig,
    pub id: NodeId,
    /// Holds the Raft state ([`super::storage::open_dir`]);
    /// created if missing.
    pub data_dir: PathBuf,
    /// Start outside the configuration even if `id` is an initial voter
    /// (a new server, or a replaced disk): `raftkv server --join`.
    pub join: bool,
    /// Before starting, fetch the members' addresses from this member's
    /// client port (`raftkv server --join ADDR`): a server no config file
    /// lists must reach a leader that may be listed nowhere either.
    pub join_via: Option<SocketAddr>,
    /// Where this server listens, when the config file does not say (or
    /// says something else): `--peer-addr`, `--client-addr`.
    pub listen: Option<Addresses>,
    /// Dial these peers at these addresses instead of the configured ones
    /// (`raftkv server --route ID=ADDR`): a proxy or a NAT in between. The
    /// peers still listen where the configuration says.
    pub routes: BTreeMap<NodeId, SocketAddr>,
}

/// Why a server did not start. Every message names the node or the file.
#[derive(Debug)]
pub enum StartError {
    /// Neither the options, the data directory nor the config file say
    /// where this server listens.
    NoAddress {
        id: NodeId,
        members: u8,
    },
    /// `--join ADDR` could not fetch the address book.
    Join {
        via: SocketAddr,
        why: String,
    },
    Storage(StorageError),
    /// The stored snapshot does not load.
    Snapshot(SnapshotError),
    /// The client port could not listen.
    Clients {
        id: NodeId,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The peer transport could not start (its error names the address).
    Peers(std::io::Error),
    /// The TLS files do not load (the error names the file).
    Tls(super::tls::TlsError),
    /// A `--route` names this node or an id no server can have.
    Route {
        id: NodeId,
        route: NodeId,
    },
    /// The metrics endpoint could not listen.
    Metrics {
        id: NodeId,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NoAddress { id, members } => write!(
                f,
                "node {id} has no addresses: the config file lists ids 0..{members} and its data directory \
                 records none; give --peer-addr and --client-addr"
            ),
            StartError::Join { via, why } => write!(f, "--join {via}: cannot fetch the cluster's address book: {why}"),
            StartError::Storage(e) => write!(f, "{e}"),
            StartError::Snapshot(e) => write!(f, "the stored snapshot does not load: {e}"),
            StartError::Clients { id, addr, source } => {
                write!(f, "node {id}: cannot listen for clients on {addr}: {source}")
            }
            StartError::Peers(source) => write!(f, "{source}"),
            StartError::Tls(e) => write!(f, "TLS: {e}"),
            StartError::Route { id, route } => {
                write!(f, "node {id}: --route {route}=...: node {route} is this node, or not a node id")
            }
            StartError::Metrics { id, addr, source } => {
                write!(f, "node {id}: cannot listen for metrics scrapes on {addr}: {source}")
            }
        }
    }
}

impl std::error::Error for StartError {}

/// A running server.
pub struct Server {
    id: NodeId,
    node: NodeRuntime,
    peers: PeerTransport,
    clients: ClientPort,
    metrics: Option<MetricsEndpoint>,
    /// Hands every change of the replicated address book to the transport.
    follow_book: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the data directory, recovers what it holds, and starts serving.
    /// Must run inside a multi-threaded tokio runtime.
    /// `on_fatal` is told when the node stops on its own (a storage error or
    /// a panic); `raftkv server` exits the process there.
    pub async fn start(options: ServerOptions, on_fatal: OnFatal) -> Result<Server, StartError> {
        let ServerOptions { cluster, id, data_dir, join, join_via, listen, routes } = options;
        if let Some(&route) = routes.keys().find(|&&r| r == id || usize::from(r) >= MAX_NODES) {
            return Err(StartError::Route { id, route });
        }
        let fetched = match join_via {
            Some(via) => fetch_address_book(&cluster, via).await?,
            None => Directory::new(),
        };
        // Before the data directory: a server that cannot authenticate
        // must not start at all.
        let tls = match &cluster.tls {
            Some(settings) => Some(Arc::new(NodeTls::load(&settings.dir, id).map_err(StartError::Tls)?)),
            None => None,
        };
        let (storage, engine) = storage::open_dir(&data_dir).map_err(StartError::Storage)?;
        let durable = storage.load().map_err(StartError::Storage)?;
        let storage: Box<dyn RaftStorage + Send> =
            if faults::installed() { Box::new(FaultyStorage::new(storage, data_dir.clone())) } else { storage };
        tracing::info!(
            node = id,
            storage = engine,
            term = durable.hard.term,
            entries = durable.log.len(),
            dir = %data_dir.display(),
            "recovered durable state"
        );
        // The seed only spreads election timeouts; the id keeps members apart.
        let seed = seed_from_clock() ^ u64::from(id);
        let mut config = cluster.server_config(id, seed);
        if join {
            config.raft.members = 0;
        }
        let server = KvServer::restart(config, durable).map_err(StartError::Snapshot)?;
        // The options first, then what this server's log records (it may
        // have been added at addresses no file lists), then the file.
        let mut known = fetched;
        known.extend(server.directory());
        let me = listen
            .or_else(|| cluster.addresses(id, &known))
            .ok_or(StartError::NoAddress { id, members: cluster.members() })?;
        let metrics_addr = cluster.node(id).and_then(|n| n.metrics);
        let runtime = RuntimeConfig {
            tick: Duration::from_millis(cluster.tick_ms),
            followers_write_inline: cluster.followers_write_inline,
            leaders_step_on_arrival: cluster.leaders_step_on_arrival,
            ..RuntimeConfig::default()
        };

        // The node needs the transport's sender and the transport needs the
        // node's handle: the sender goes through a slot filled just below.
        let sender_slot: Arc<std::sync::OnceLock<super::peer::PeerSender>> = Arc::new(std::sync::OnceLock::new());
        let send: SendToPeer = {
            let slot = sender_slot.clone();
            Arc::new(move |envelope, sending| {
                faults::panic_point(Site::Node); // runs on the thread stepping the node
                if let Some(sender) = slot.get() {
                    sender.send(envelope, sending);
                }
            })
        };
        let node = NodeRuntime::start(server, storage, send, runtime, on_fatal);
        // Whom to dial where: the file, under what was fetched and what the
        // log held at start, under the book as it is now; `--route` last.
        let dial_book = {
            let (cluster, routes) = (cluster.clone(), routes.clone());
            move |replicated: &Directory| -> BTreeMap<NodeId, SocketAddr> {
                let mut seen = known.clone();
                seen.extend(replicated);
                let book = cluster.address_book(&seen);
                let dial = |(&other, a): (&NodeId, &Addresses)| (other, routes.get(&other).copied().unwrap_or(a.peer));
                book.iter().filter(|(&other, _)| other != id).map(dial).collect()
            }
        };
        let mut directory = node.handle().watch_directory();
        let mut peer_config = PeerConfig::new(id, me.peer, dial_book(&directory.borrow_and_update()));
        peer_config.silence_max = cluster.peer_silence();
        // A dead link is redialled at least as often as a leader heartbeats.
        peer_config.backoff_max = cluster.heartbeat_interval().max(peer_config.backoff_min);
        peer_config.tls = tls.clone();
        let deliver = {
            let handle = node.handle().clone();
            Arc::new(move |envelope| {
                faults::panic_point(Site::Peer); // runs in a peer connection's task
                handle.deliver(envelope)
            })
        };
        let peers = PeerTransport::start(peer_config, deliver).await.map_err(StartError::Peers)?;
        let _ = sender_slot.set(peers.sender());
        let follow_book = {
            let book = peers.book();
            tokio::spawn(async move {
                // Ends when the node thread does (it holds the sender).
                while directory.changed().await.is_ok() {
                    book.set(dial_book(&directory.borrow_and_update()));
                }
            })
        };
        let client_tls = tls.filter(|_| cluster.tls.as_ref().is_some_and(|t| t.clients));
        let clients = ClientPort::start(
            me.client,
            node.handle().clone(),
            peers.stats_handle(),
            cluster.clone(),
            RespLimits::default(),
            client_tls,
        )
        .await
        .map_err(|source| StartError::Clients { id, addr: me.client, source })?;
        let metrics =
            match metrics_addr {
                Some(addr) => {
                    let sources = Sources { node: node.handle().clone(), peers: peers.stats_handle() };
                    let endpoint = MetricsEndpoint::start(addr, sources)
                        .await
                        .map_err(|source| StartError::Metrics { id, addr, source })?;
                    Some(endpoint)
                }
                None => None,
            };
        tracing::info!(
            node = id,
            peers = %peers.local_addr(),
            clients = %clients.local_addr(),
            metrics = ?metrics.as_ref().map(MetricsEndpoint::local_addr),
            "serving"
        );
        Ok(Server { id, node, peers, clients, metrics, follow_book })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn handle(&self) -> &NodeHandle {
        self.node.handle()
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.clients.local_addr()
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peers.local_addr()
    }

    /// If this server leads, hands leadership to the voter best placed to
    /// take it and waits, at most `patience`, until another server leads:
    /// a graceful stop costs the cluster no election timeout (thesis
    /// §3.10). Returns who leads now, if another; `Ok(None)` if this
    /// server did not lead. The server keeps serving meanwhile.
    pub async fn hand_over(&self, patience: Duration) -> Result<Option<NodeId>, String> {
        let handle = self.node.handle();
        if handle.status().role != Some(crate::raft::Role::Leader) {
            return Ok(None);
        }
        let ticket = handle.admin(AdminOp::HandOver).map_err(|e| format!("{e:?}"))?;
        let reply = ticket.answer().await.map_err(|e| e.to_string())?;
        reply.result.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + patience;
        let mut every = tokio::time::interval(Duration::from_millis(5));
        loop {
            let status = handle.status();
            if status.role != Some(crate::raft::Role::Leader) && status.leader.is_some_and(|l| l != self.id) {
                return Ok(status.leader);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("no other server leads after {patience:?}"));
            }
            every.tick().await;
        }
    }

    /// Stops the node first (every waiting request is answered), then the
    /// sockets. Returns the node's failure if it stopped on its own.
    pub async fn shutdown(self) -> Result<(), NodeFailure> {
        let Server { node, peers, clients, metrics, follow_book, .. } = self;
        follow_book.abort();
        let result = tokio::task::spawn_blocking(move || node.shutdown()).await.unwrap_or(Ok(()));
        if let Some(metrics) = metrics {
            metrics.shutdown().await;
        }
        clients.shutdown().await;
        peers.shutdown().await;
        result
    }
}

/// `RAFTKV.MEMBER LIST` at `via`: each member's line is `id role client
/// peer=ADDR` (`specs/client.md`). Only the addresses are taken; the
/// configuration itself comes from the leader, through the log.
async fn fetch_address_book(cluster: &ClusterConfig, via: SocketAddr) -> Result<Directory, StartError> {
    let failed = |why: String| StartError::Join { via, why };
    let mut access = match &cluster.tls {
        Some(tls) if tls.clients => {
            Access::tls(&tls.dir.join(super::tls::CA_CERT)).map_err(|e| failed(e.to_string()))?
        }
        _ => Access::plain(),
    };
    if let Some(password) = &cluster.requirepass {
        access = access.with_password(password.clone());
    }
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let list = ClientCommand::Member(MemberCommand::List);
    let text = operator(&[via], &access, &list, deadline).await.map_err(|e| failed(e.to_string()))?;
    let book = parse_member_list(&text);
    tracing::info!(%via, book = ?book, "fetched the cluster's address book");
    Ok(book)
}

/// How long `--join ADDR` tries to reach that member.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses in a `RAFTKV.MEMBER LIST` answer (lines `id role client
/// peer=ADDR`); lines that are not such are skipped.
fn parse_member_list(text: &str) -> Directory {
    let line = |line: &str| -> Option<(NodeId, Addresses)> {
        let mut words = line.split(' ');
        let id: NodeId = words.next()?.parse().ok()?;
        let _role = words.next()?;
        let client = words.next()?.parse().ok()?;
        let peer = words.next()?.strip_prefix("peer=")?.parse().ok()?;
        (usize::from(id) < MAX_NODES).then_some((id, Addresses { peer, client }))
    };
    text.lines().filter_map(line).collect()
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_list_yields_each_members_addresses() {
        let text = "voters=0.1.5\nleader: 5\n0 voter 127.0.0.1:6379 peer=127.0.0.1:7100\n\
                    5 learner 127.0.0.5:6379 peer=127.0.0.5:7100\n\
                    7 voter (not in the address book)\n9 voter 127.0.0.1:1 peer=127.0.0.1:2\n";
        let book = parse_member_list(text);
        let at = |peer: &str, client: &str| Addresses { peer: peer.parse().unwrap(), client: client.parse().unwrap() };
        assert_eq!(
            book,
            Directory::from([(0, at("127.0.0.1:7100", "127.0.0.1:6379")), (5, at("127.0.0.5:7100", "127.0.0.5:6379"))])
        );
    }
}
