//! The metrics endpoint: `GET /metrics` over plain HTTP, in the Prometheus
//! text format (OpenMetrics, encoded by the `prometheus-client` crate). Off
//! unless a node's `metrics` address is set in `cluster.toml` (`raftkv
//! cluster --metrics-port P`).
//!
//! Each scrape reads the node's status and counters and the peer
//! transport's counters as they are at that moment into a fresh registry;
//! only the two histograms (fsync latency, entries per fsync) live across
//! scrapes, in the node's [`Counters`](super::node::Counters).
//!
//! Bounds: a request is read up to [`REQUEST_BYTES_MAX`] within
//! [`REQUEST_TIMEOUT`]; at most [`CONNECTIONS_MAX`] scrapes are served at
//! once (more are closed on accept); each connection answers one request.

use super::node::NodeHandle;
use super::peer::PeerStatsHandle;
use crate::raft::Role;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The longest request accepted (a scraper's GET with its headers).
pub const REQUEST_BYTES_MAX: usize = 8 << 10;
/// How long a scraper has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once.
pub const CONNECTIONS_MAX: usize = 16;

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    pub node: NodeHandle,
    pub peers: PeerStatsHandle,
}

/// The text of one scrape.
pub fn render(sources: &Sources) -> String {
    let mut registry = Registry::with_prefix("raftkv");
    let status = sources.node.status();
    let c = sources.node.counters();
    let load = |a: &crate::sync::atomic::AtomicU64| a.load(crate::sync::atomic::Ordering::Relaxed);

    let counters = [
        ("requests", "Client requests handed to the node (reads and writes, retries included)", load(&c.requests)),
        ("applied_entries", "Log entries applied to the state machine (no-ops included)", load(&c.applied)),
        ("fsyncs", "Storage writes, each one fsync", load(&c.fsyncs)),
        ("rounds", "Rounds of steps of the node", load(&c.rounds)),
        (
            "rounds_on_arrival",
            "Rounds stepped by the task an event arrived on, not the node thread",
            load(&c.rounds_on_arrival),
        ),
        ("reads_by_lease", "Gets answered under the leader lease, with no round of messages", load(&c.reads_by_lease)),
        ("elections", "Elections this node started", load(&c.elections)),
        ("leader_changes", "Times this node learned of a new leader", load(&c.leader_changes)),
        ("snapshots_taken", "Snapshots this node took", load(&c.snapshots_taken)),
        ("snapshots_installed", "Snapshots installed from a leader", load(&c.snapshots_installed)),
        (
            "dropped_peer_messages",
            "Peer messages dropped because the node's queue was full",
            load(&c.dropped_peer_messages),
        ),
    ];
    for (name, help, value) in counters {
        registry.register(name, help, ConstCounter::new(value));
    }
    let gauges = [
        ("term", "Current term", status.term),
        ("commit_index", "Highest log index known committed", status.commit_index),
        ("applied_index", "Highest log index applied", status.applied_index),
        ("first_index", "First index the log holds", status.first_index),
        ("last_index", "Last index the log holds", status.last_index),
        ("snapshot_index", "Last index the latest snapshot covers", status.snapshot_index),
        ("last_snapshot_bytes", "Size of the last snapshot taken", load(&c.last_snapshot_bytes)),
    ];
    for (name, help, value) in gauges {
        registry.register(name, help, ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)));
    }
    registry.register(
        "is_leader",
        "1 if this node leads",
        ConstGauge::new(i64::from(status.role == Some(Role::Leader))),
    );
    registry.register("fsync_seconds", "How long each storage write took", c.fsync_seconds.clone());
    registry.register("entries_per_fsync", "Log entries per storage write", c.entries_per_fsync.clone());

    // Per peer: what the links carried, and (on a leader) how far behind
    // each follower's log is.
    type Labels = Vec<(&'static str, String)>;
    let peer = |id: u8| vec![("peer", id.to_string())];
    let sent = Family::<Labels, Gauge>::default();
    let dropped = Family::<Labels, Gauge>::default();
    let received = Family::<Labels, Gauge>::default();
    for (id, link) in sources.peers.links() {
        let set = |family: &Family<Labels, Gauge>, v: u64| {
            family.get_or_create(&peer(id)).set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&sent, link.sent);
        set(&dropped, link.dropped);
        set(&received, link.received);
    }
    // Gauges holding counts since start (a `Family` of `Counter`s only
    // counts up from zero, and these are read, not counted, here).
    registry.register("peer_messages_sent", "Messages written to each peer since start", sent);
    registry.register("peer_messages_dropped", "Messages for each peer dropped since start", dropped);
    registry.register("peer_messages_received", "Messages delivered from each peer since start", received);
    let lag = Family::<Labels, Gauge>::default();
    for (id, matched) in status.matched.iter().flatten() {
        lag.get_or_create(&peer(*id))
            .set(i64::try_from(status.last_index.saturating_sub(*matched)).unwrap_or(i64::MAX));
    }
    registry.register("follower_lag_entries", "On a leader: entries each follower's log lacks", lag);
    let transport = sources.peers.stats();
    registry.register(
        "peer_handshake_failures",
        "TLS handshakes with peers that failed, both directions",
        ConstCounter::new(transport.handshake_failures),
    );
    registry.register(
        "peer_connections_silent",
        "Peer connections dropped because nothing was acknowledged",
        ConstCounter::new(transport.connections_silent),
    );
    registry.register(
        "peer_messages_superseded",
        "Heartbeats and their echoes that took the place of a queued one they supersede, which was never sent",
        ConstCounter::new(transport.superseded),
    );
    registry.register(
        "peer_messages_written_at_once",
        "Messages the node thread wrote to an idle peer connection itself, not through the connection's writer",
        ConstCounter::new(transport.written_at_once),
    );

    let releases = Family::<Labels, Gauge>::default();
    let leader_writes = *c.leader_writes.lock().unwrap_or_else(|e| e.into_inner());
    for (reason, count) in leader_writes.by_reason() {
        releases.get_or_create(&vec![("reason", reason.to_string())]).set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register(
        "leader_writes",
        "Times this node's log went to the disk while it led, by why: the pacer's AppendEntries, a batch of more than entries, a tick, the bound on held batches, no follower",
        releases,
    );

    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

/// A running endpoint; [`MetricsEndpoint::shutdown`] (or dropping it)
/// stops it.
pub struct MetricsEndpoint {
    local_addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Binds `listen` and serves scrapes on the current tokio runtime.
    pub async fn start(listen: SocketAddr, sources: Sources) -> std::io::Result<MetricsEndpoint> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, sources, stop.clone()));
        Ok(MetricsEndpoint { local_addr, stop, task: Some(task) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, sources: Sources, stop: CancellationToken) {
    let mut scrapes = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    while scrapes.try_join_next().is_some() {}
                    if scrapes.len() >= CONNECTIONS_MAX {
                        tracing::warn!(%peer, "too many metrics scrapes at once; closing the new one");
                        continue;
                    }
                    scrapes.spawn(serve(stream, sources.clone()));
                }
                Err(e) => {
                    tracing::warn!("accepting a metrics connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    scrapes.shutdown().await;
}

/// One request, one response, then the connection closes.
async fn serve(mut stream: TcpStream, sources: Sources) {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await;
    let (status, content_type, body) = match request {
        Ok(Some(head)) if is_metrics_request(&head) => {
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", render(&sources))
        }
        Ok(Some(_)) => ("404 Not Found", "text/plain; charset=utf-8", "only GET /metrics is served\n".into()),
        Ok(None) | Err(_) => ("400 Bad Request", "text/plain; charset=utf-8", "no complete request\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads until the end of the request's headers; `None` if the stream
/// ends first or the head exceeds [`REQUEST_BYTES_MAX`].
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || head.len() + n > REQUEST_BYTES_MAX {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Some(head)
}

/// `GET /metrics` (with or without a query string), any HTTP/1.x.
fn is_metrics_request(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    method == Some(b"GET") && target.is_some_and(|t| t == b"/metrics" || t.starts_with(b"/metrics?"))
}
