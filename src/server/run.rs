//! One raftkv server process, assembled: storage → node runtime → peer
//! transport and client port. `raftkv server` is [`Server::start`], with an
//! [`OnFatal`] that ends the process, plus a wait for Ctrl-C or SIGTERM;
//! tests start servers the same way. When the environment asks for a fault
//! ([`super::faults`]), the storage is wrapped in a [`FaultyStorage`].

use super::client_port::ClientPort;
use super::config::ClusterConfig;
use super::faults::{self, FaultyStorage, Site};
use super::metrics::{MetricsEndpoint, Sources};
use super::node::{NodeFailure, NodeHandle, NodeRuntime, OnFatal, RuntimeConfig, SendToPeer};
use super::peer::{PeerConfig, PeerTransport};
use super::resp::RespLimits;
use super::storage::{self, RaftStorage, StorageError};
use super::tls::NodeTls;
use crate::kv::snapshot::SnapshotError;
use crate::kv::{AdminOp, KvServer};
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
    /// Holds the Raft state ([`storage::open_dir`](super::storage::open_dir));
    /// created if missing.
    pub data_dir: PathBuf,
    /// Start outside the configuration even if `id` is an initial voter
    /// (a replaced disk): `raftkv server --join`.
    pub join: bool,
    /// Dial these peers at these addresses instead of the configured ones
    /// (`raftkv server --route ID=ADDR`): a proxy or a NAT in between. The
    /// peers still listen where the configuration says.
    pub routes: BTreeMap<NodeId, SocketAddr>,
}

/// Why a server did not start. Every message names the node or the file.
#[derive(Debug)]
pub enum StartError {
    NotAMember {
        id: NodeId,
        members: u8,
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
    /// A `--route` names this node or a node the configuration lacks.
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
            StartError::NotAMember { id, members } => {
                write!(f, "node id {id} is not a member of the {members}-node cluster (ids are 0..{members})")
            }
            StartError::Storage(e) => write!(f, "{e}"),
            StartError::Snapshot(e) => write!(f, "the stored snapshot does not load: {e}"),
            StartError::Clients { id, addr, source } => {
                write!(f, "node {id}: cannot listen for clients on {addr}: {source}")
            }
            StartError::Peers(source) => write!(f, "{source}"),
            StartError::Tls(e) => write!(f, "TLS: {e}"),
            StartError::Route { id, route } => {
                write!(f, "node {id}: --route {route}=...: node {route} is not another member of the configuration")
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
}

impl Server {
    /// Opens the data directory, recovers what it holds, and starts serving.
    /// Must run inside a multi-threaded tokio runtime.
    /// `on_fatal` is told when the node stops on its own (a storage error or
    /// a panic); `raftkv server` exits the process there.
    pub async fn start(options: ServerOptions, on_fatal: OnFatal) -> Result<Server, StartError> {
        let ServerOptions { cluster, id, data_dir, join, routes } = options;
        let me = cluster.node(id).ok_or(StartError::NotAMember { id, members: cluster.members() })?.clone();
        if let Some(&route) = routes.keys().find(|&&r| r == id || cluster.node(r).is_none()) {
            return Err(StartError::Route { id, route });
        }
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
        let runtime = RuntimeConfig { tick: Duration::from_millis(cluster.tick_ms), ..RuntimeConfig::default() };

        // The node needs the transport's sender and the transport needs the
        // node's handle: the sender goes through a slot filled just below.
        let sender_slot: Arc<std::sync::OnceLock<super::peer::PeerSender>> = Arc::new(std::sync::OnceLock::new());
        let send: SendToPeer = {
            let slot = sender_slot.clone();
            Arc::new(move |envelope| {
                faults::panic_point(Site::Node); // runs on the node thread
                if let Some(sender) = slot.get() {
                    sender.send(envelope);
                }
            })
        };
        let node = NodeRuntime::start(server, storage, send, runtime, on_fatal);
        let others = cluster.nodes.iter().enumerate().filter(|(i, _)| *i != usize::from(id));
        let dial = |i: NodeId, configured: SocketAddr| routes.get(&i).copied().unwrap_or(configured);
        let mut peer_config =
            PeerConfig::new(id, me.peer, others.map(|(i, n)| (i as NodeId, dial(i as NodeId, n.peer))).collect());
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
            match me.metrics {
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
        Ok(Server { id, node, peers, clients, metrics })
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
        let Server { node, peers, clients, metrics, .. } = self;
        let result = tokio::task::spawn_blocking(move || node.shutdown()).await.unwrap_or(Ok(()));
        if let Some(metrics) = metrics {
            metrics.shutdown().await;
        }
        clients.shutdown().await;
        peers.shutdown().await;
        result
    }
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
