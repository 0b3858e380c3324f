//! The peer transport: how Raft messages travel between the servers of a
//! cluster, as frames of the wire format ([`crate::wire`], `specs/wire.md`,
//! section "Peer transport").
//!
//! Raft tolerates lost, duplicated and reordered messages, so the transport
//! is best effort: it never retries a message, and drops one rather than
//! block or grow a buffer.
//!
//! - **Outbound**: one TCP connection per peer, owned by a writer task. The
//!   node thread (a plain std thread) hands envelopes to a [`PeerSender`],
//!   which puts them on that peer's bounded queue without blocking; a full
//!   queue drops its oldest envelope. The writer connects when it has
//!   something to send (redialling with backoff), then encodes as many
//!   queued envelopes as are ready into one buffer per write.
//! - **Inbound**: a listener task accepts connections, and a reader task per
//!   connection decodes frames into a bounded buffer and hands each valid
//!   envelope to the `deliver` callback. Anything wrong on a connection
//!   (bytes that do not decode, or an envelope whose addresses do not fit
//!   the current peer book, see [`Refused`]) is logged and closes that
//!   connection; the transport keeps serving the others.
//! - **Authentication** ([`super::tls`]), when the cluster has TLS on:
//!   both ends of every connection present a certificate from the
//!   cluster's authority; the dialler checks it reached the peer it meant,
//!   and the acceptor refuses any frame whose `from` is not the node its
//!   certificate names. Without TLS, a connection is whoever its first
//!   frame says it is (fine on loopback, not across machines).
//! - **Liveness** ([`super::link`]): the reader acks what arrives, one byte
//!   at a time, paced; a writer whose bytes go unacknowledged for
//!   `silence_max` drops the connection and redials. A blackholed
//!   connection is thus replaced within a fraction of an election timeout,
//!   not when the kernel's retransmissions give up.
//! - **The peer book** ([`PeerBook`]): who the peers are, and where to dial
//!   each, may change while the transport runs (the cluster's replicated
//!   address book adds a server no config file lists, or moves a member).
//!   `PeerConfig::peers` is only the first book; [`PeerBook::set`] replaces
//!   it. A new peer gets a queue and a writer; a moved one has its writer
//!   drop its connection and dial the new address; a removed one is no
//!   longer sent to, and its frames are refused.
//!
//! Every task belongs to the [`PeerTransport`]: [`PeerTransport::shutdown`]
//! ends them all and waits for them, and dropping it aborts them.

use super::link::{AckPacer, Liveness, Redial, ACK};
use super::node::Sending;
use super::outbox::{PeerQueue, Pushed, Work};
use super::tls::{self, BoxStream, NodeTls};
use crate::kv::Command;
use crate::raft::{Envelope, NodeId};
use crate::wire::{self, DecodeError, Limits};
use bytes::BufMut;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Called with every valid inbound envelope, on a reader task. It must not
/// block (the node runtime's input queue is bounded and drops when full).
pub type Deliver = Arc<dyn Fn(Envelope<Command>) + Send + Sync>;

/// A writer stops adding envelopes to a batch once its buffer holds this
/// many bytes, so the write buffer never exceeds this plus one frame.
pub const WRITE_BATCH_BYTES: usize = 64 << 10;
/// A reader asks the socket for at least this many bytes at a time (less
/// only when its buffer bound leaves less room).
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// At most this many inbound connections per cluster member are open at
/// once (each may hold a read buffer of up to one frame); more are closed
/// as soon as they are accepted.
pub const INBOUND_PER_MEMBER: usize = 4;

/// Where this node listens, who its peers are, and the transport's bounds.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// This node's id.
    pub id: NodeId,
    /// This node's peer address (port 0 picks a free port; see
    /// [`PeerTransport::local_addr`]).
    pub listen: SocketAddr,
    /// Every *other* member of the cluster and its peer address: the
    /// initial book, which [`PeerBook::set`] replaces while the transport
    /// runs.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The wire bounds, for both directions.
    pub limits: Limits,
    /// Envelopes waiting per peer; a full queue drops its oldest.
    pub queue_capacity: usize,
    /// The first pause after a failed connection attempt; it doubles after
    /// each further failure ([`Redial`]).
    pub backoff_min: Duration,
    /// The longest pause between connection attempts.
    pub backoff_max: Duration,
    /// A connection whose written bytes go unacknowledged this long is
    /// dropped and redialled ([`Liveness`]); readers ack every quarter of
    /// it, and a connection attempt may take half of it.
    pub silence_max: Duration,
    /// Mutual TLS on every connection, or plain TCP when `None`.
    pub tls: Option<Arc<NodeTls>>,
}

impl PeerConfig {
    pub const QUEUE_CAPACITY_DEFAULT: usize = 1024;
    pub const BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(20);
    /// The default heartbeat interval: a dead link is redialled at least
    /// as often as a leader heartbeats.
    pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_millis(50);
    /// Half the default minimum election timeout (300 ms).
    pub const SILENCE_MAX_DEFAULT: Duration = Duration::from_millis(150);
    /// The shortest `silence_max` accepted: acks every millisecond.
    pub const SILENCE_MAX_MIN: Duration = Duration::from_millis(4);

    /// A config with the default limits, queue capacity and backoff.
    pub fn new(id: NodeId, listen: SocketAddr, peers: BTreeMap<NodeId, SocketAddr>) -> Self {
        PeerConfig {
            id,
            listen,
            peers,
            limits: Limits::default(),
            queue_capacity: Self::QUEUE_CAPACITY_DEFAULT,
            backoff_min: Self::BACKOFF_MIN_DEFAULT,
            backoff_max: Self::BACKOFF_MAX_DEFAULT,
            silence_max: Self::SILENCE_MAX_DEFAULT,
            tls: None,
        }
    }

    /// How long a connection attempt may take before it counts as failed
    /// (a partitioned peer would otherwise hold a writer in the kernel's
    /// SYN retries, 1 s then 3 s, ...): a fresh SYN soon after a heal.
    pub fn connect_timeout(&self) -> Duration {
        self.silence_max / 2
    }

    /// How long a TLS handshake may take, on either side: one round trip
    /// and a signature each way, well within a silence (a peer that cannot
    /// finish one in that time could not keep a connection alive either);
    /// it also bounds how long a connection that never speaks holds a slot.
    pub fn handshake_timeout(&self) -> Duration {
        self.silence_max
    }

    /// How often a reader acks while bytes arrive.
    pub fn ack_interval(&self) -> Duration {
        self.silence_max / 4
    }

    /// Checks what [`PeerTransport::start`] needs: `peers` does not name
    /// this node, the queue holds at least one envelope, and
    /// `0 < backoff_min <= backoff_max`, and `silence_max` is at least
    /// [`PeerConfig::SILENCE_MAX_MIN`].
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if self.peers.contains_key(&self.id) {
            return invalid(format!("peer config of node {}: `peers` must list only the other members", self.id));
        }
        if self.queue_capacity == 0 {
            return invalid(format!("peer config of node {}: queue_capacity must be at least 1", self.id));
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return invalid(format!(
                "peer config of node {}: need 0 < backoff_min ({:?}) <= backoff_max ({:?})",
                self.id, self.backoff_min, self.backoff_max
            ));
        }
        if self.silence_max < Self::SILENCE_MAX_MIN {
            return invalid(format!(
                "peer config of node {}: silence_max ({:?}) must be at least {:?}",
                self.id,
                self.silence_max,
                Self::SILENCE_MAX_MIN
            ));
        }
        Ok(())
    }
}

/// Counters of what the transport did since it started. Every count is of
/// envelopes (frames) unless it says connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerStats {
    /// Accepted onto a peer's queue by [`PeerSender::send`].
    pub queued: u64,
    /// Of those, how many took the place of a queued envelope they
    /// supersede (`Message::supersedes`), which was never sent.
    pub superseded: u64,
    /// Written to a connection (handed to the kernel: a connection that
    /// breaks afterwards may still lose them).
    pub sent: u64,
    /// Of those, how many the sending thread wrote itself, the connection
    /// being idle ([`Sending::AtOnce`]); counted in `queued` too.
    pub written_at_once: u64,
    /// Dropped from a full queue, oldest first, to make room for a newer
    /// envelope (Raft's newer messages supersede older ones).
    pub dropped_full: u64,
    /// Dropped by `send` because `to` is not a peer in the current book
    /// (or is this node), or `from` is not this node.
    pub dropped_misaddressed: u64,
    /// Dropped by `send` because the transport has stopped.
    pub dropped_closed: u64,
    /// Dropped by a writer because the envelope breaks the wire limits.
    pub dropped_encode: u64,
    /// Lost in a write that failed, or that was under way when its
    /// connection went silent.
    pub dropped_write: u64,
    /// Valid inbound envelopes handed to `deliver`.
    pub frames_in: u64,
    /// Inbound frames refused (each closed its connection).
    pub refused_frames: u64,
    /// Outbound connections established.
    pub connections_out: u64,
    /// Outbound connection attempts that failed or timed out.
    pub connect_failures: u64,
    /// Inbound connections accepted.
    pub connections_in: u64,
    /// Inbound connections closed at once because too many were open.
    pub connections_refused: u64,
    /// TLS handshakes that failed or timed out: inbound (a plain-text
    /// connection, a certificate from another authority or naming no
    /// member) and outbound (the peer's certificate does not name it).
    pub handshake_failures: u64,
    /// Outbound connections dropped because what was written on them went
    /// unacknowledged for `silence_max`.
    pub connections_silent: u64,
    /// Acks received on outbound connections.
    pub acks_in: u64,
    /// Acks written on inbound connections.
    pub acks_out: u64,
}

/// One link's share of the counts (the metrics endpoint shows them per peer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Envelopes written to the peer.
    pub sent: u64,
    /// Envelopes for the peer dropped: from a full queue or in a failed write.
    pub dropped: u64,
    /// Valid envelopes from the peer delivered.
    pub received: u64,
}

#[derive(Debug, Default)]
struct LinkCounters {
    sent: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
}

impl LinkCounters {
    fn stats(&self) -> LinkStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats { sent: get(&self.sent), dropped: get(&self.dropped), received: get(&self.received) }
    }
}

/// The totals. The per-link counts live with each peer in [`Peers`] (the
/// set of links changes with the book); `sent` and `frames_in` are their
/// sums over every peer ever known (a removed one's counts stay in them),
/// taken when read, so the hot paths bump one counter, not two.
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    written_at_once: AtomicU64,
    superseded: AtomicU64,
    dropped_full: AtomicU64,
    dropped_misaddressed: AtomicU64,
    dropped_closed: AtomicU64,
    dropped_encode: AtomicU64,
    dropped_write: AtomicU64,
    refused_frames: AtomicU64,
    connections_out: AtomicU64,
    connect_failures: AtomicU64,
    connections_in: AtomicU64,
    connections_refused: AtomicU64,
    handshake_failures: AtomicU64,
    connections_silent: AtomicU64,
    acks_in: AtomicU64,
    acks_out: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// An envelope the wire cannot carry (past the limits): dropped,
    /// counted and logged, whether the writer or a write at once found it.
    fn unencodable(&self, me: NodeId, peer: NodeId, kind: &'static str, error: &wire::EncodeError) {
        bump(&self.dropped_encode, 1);
        warn!(node = me, peer, kind, %error, "dropping an envelope the wire cannot carry");
    }

    fn snapshot(&self, peers: &Peers) -> PeerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (sent, frames_in) = peers.totals();
        PeerStats {
            queued: get(&self.queued),
            written_at_once: get(&self.written_at_once),
            superseded: get(&self.superseded),
            sent,
            dropped_full: get(&self.dropped_full),
            dropped_misaddressed: get(&self.dropped_misaddressed),
            dropped_closed: get(&self.dropped_closed),
            dropped_encode: get(&self.dropped_encode),
            dropped_write: get(&self.dropped_write),
            frames_in,
            refused_frames: get(&self.refused_frames),
            connections_out: get(&self.connections_out),
            connect_failures: get(&self.connect_failures),
            connections_in: get(&self.connections_in),
            connections_refused: get(&self.connections_refused),
            handshake_failures: get(&self.handshake_failures),
            connections_silent: get(&self.connections_silent),
            acks_in: get(&self.acks_in),
            acks_out: get(&self.acks_out),
        }
    }
}

/// Why an inbound connection was closed by this node. Each is logged with
/// the remote address and counted in [`PeerStats::refused_frames`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The bytes are not a valid frame (including a header declaring more
    /// than `frame_bytes_max`, refused before its payload is awaited).
    Decode(DecodeError),
    /// `from` is this node's own id.
    FromSelf { from: NodeId },
    /// `from` is not a peer in the current book (never was, or was removed).
    UnknownSender { from: NodeId },
    /// `to` is not this node.
    WrongRecipient { to: NodeId, this: NodeId },
    /// `from` differs from the first frame's `from` on this connection.
    SenderChanged { first: NodeId, from: NodeId },
    /// `from` is not the node the connection's TLS certificate names.
    NotCertified { from: NodeId, certified: NodeId },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Decode(e) => write!(f, "undecodable frame: {e}"),
            Refused::FromSelf { from } => write!(f, "envelope claims to come from this node ({from})"),
            Refused::UnknownSender { from } => write!(f, "envelope from {from}, not a member"),
            Refused::WrongRecipient { to, this } => write!(f, "envelope for node {to} arrived at node {this}"),
            Refused::SenderChanged { first, from } => {
                write!(f, "envelope from {from} on a connection whose first envelope came from {first}")
            }
            Refused::NotCertified { from, certified } => {
                write!(f, "envelope from {from} on a connection whose certificate names node {certified}")
            }
        }
    }
}

impl std::error::Error for Refused {}

/// Locks, ignoring poison: nothing here (or in `outbox`) panics while
/// holding a lock.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// The peer book

/// Who the peers are now, and what the transport keeps for every peer it
/// has known. Written by [`PeerBook::set`] (and once by `start`); read by
/// [`PeerSender::send`], by the listener's admission checks and by the
/// metrics. One table under one lock, so that a `set` is seen whole: a
/// peer is sent to exactly while its frames are admitted.
///
/// A std `RwLock`, not an async one: `send` runs on the node thread, a
/// plain std thread, and must stay cheap (a read lock, no allocation); no
/// guard is held across an `.await`.
struct Peers {
    me: NodeId,
    queue_capacity: usize,
    table: RwLock<Table>,
    /// Wakes the writer manager ([`manage_writers`]) when `set` adds a
    /// peer. A notification while it is busy is kept (one permit), so
    /// none is missed.
    added: Notify,
}

#[derive(Default)]
struct Table {
    /// Every peer the transport has known, by id. A removed member keeps
    /// its entry, marked not a `member`: its writer runs on (a writer ends
    /// only with the transport, which keeps the ownership of tasks simple),
    /// its counts stay in the totals, and if it comes back it finds them.
    /// Entries are never removed, so there are at most as many as there
    /// are node ids (a `u8`): the queues and writers stay bounded however
    /// often the book changes.
    peers: BTreeMap<NodeId, Peer>,
    /// Set when the transport stops: a later `set` changes nothing, so no
    /// queue is opened that no writer would ever drain.
    closed: bool,
}

struct Peer {
    /// Listed by the current book: sent to, and its frames admitted.
    /// Shared with its inbound connections, which check it at every frame
    /// without taking the table's lock.
    member: Arc<AtomicBool>,
    queue: Arc<PeerQueue>,
    link: Arc<LinkCounters>,
    /// Where to dial it. Its writer reads this at every dial, and while
    /// connected checks it before each batch it sends, to redial at the
    /// new address (see `Writer::serve`).
    addr: watch::Sender<SocketAddr>,
}

impl Peer {
    fn is_member(&self) -> bool {
        self.member.load(Ordering::Relaxed)
    }
}

/// A new peer for the manager: its queue, counters and address to watch.
type NewPeer = (NodeId, Arc<PeerQueue>, Arc<LinkCounters>, watch::Receiver<SocketAddr>);

impl Peers {
    fn new(me: NodeId, queue_capacity: usize) -> Peers {
        Peers { me, queue_capacity, table: RwLock::default(), added: Notify::new() }
    }

    /// Reads, ignoring poison: nothing here panics while holding the lock.
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`PeerBook::set`].
    fn set(&self, book: BTreeMap<NodeId, SocketAddr>) {
        let me = self.me;
        let mut added = false;
        {
            let mut table = self.write();
            if table.closed {
                debug!(node = me, "peer transport stopped; ignoring a new peer book");
                return;
            }
            for (&peer, entry) in table.peers.iter_mut() {
                if entry.is_member() && !book.contains_key(&peer) {
                    // What is already queued for it still goes out: it was
                    // addressed to a member, and the last messages (say,
                    // the commit of its own removal) are worth delivering.
                    entry.member.store(false, Ordering::Relaxed);
                    info!(node = me, peer, "peer left the book: no longer sent to, its frames refused");
                }
            }
            for (peer, addr) in book {
                if peer == me {
                    debug!(node = me, %addr, "the peer book lists this node itself; ignoring that entry");
                    continue;
                }
                match table.peers.get_mut(&peer) {
                    Some(entry) => {
                        if !entry.is_member() {
                            entry.member.store(true, Ordering::Relaxed);
                            info!(node = me, peer, %addr, "peer is back in the book");
                        }
                        // Only a real change wakes the writer: an unchanged
                        // address must not cost a reconnection.
                        let moved = entry.addr.send_if_modified(|old| {
                            let moved = *old != addr;
                            *old = addr;
                            moved
                        });
                        if moved {
                            info!(node = me, peer, %addr, "peer moved; redialling it at its new address");
                        }
                    }
                    None => {
                        let entry = Peer {
                            member: Arc::new(AtomicBool::new(true)),
                            queue: Arc::new(PeerQueue::new(self.queue_capacity)),
                            link: Arc::default(),
                            addr: watch::Sender::new(addr),
                        };
                        table.peers.insert(peer, entry);
                        added = true;
                        info!(node = me, peer, %addr, "peer added to the book");
                    }
                }
            }
        }
        if added {
            self.added.notify_one();
        }
    }

    /// Stops for good: every queue refuses later pushes, and later `set`s
    /// change nothing.
    fn close(&self) {
        let mut table = self.write();
        table.closed = true;
        table.peers.values().for_each(|peer| peer.queue.close());
    }

    /// The peers the manager has not spawned a writer for yet.
    fn unspawned(&self, spawned: &BTreeSet<NodeId>) -> Vec<NewPeer> {
        let table = self.read();
        let new = table.peers.iter().filter(|(id, _)| !spawned.contains(id));
        new.map(|(&id, p)| (id, p.queue.clone(), p.link.clone(), p.addr.subscribe())).collect()
    }

    fn is_member(&self, peer: NodeId) -> bool {
        self.read().peers.get(&peer).is_some_and(|p| p.is_member())
    }

    /// A member's link counters and its membership flag.
    fn link(&self, peer: NodeId) -> Option<(Arc<LinkCounters>, Arc<AtomicBool>)> {
        let table = self.read();
        let peer = table.peers.get(&peer).filter(|p| p.is_member())?;
        Some((peer.link.clone(), peer.member.clone()))
    }

    /// Envelopes sent to and received from every peer ever known.
    fn totals(&self) -> (u64, u64) {
        let table = self.read();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        table
            .peers
            .values()
            .fold((0, 0), |(sent, received), p| (sent + get(&p.link.sent), received + get(&p.link.received)))
    }

    fn members(&self) -> Vec<NodeId> {
        self.read().peers.iter().filter(|(_, p)| p.is_member()).map(|(&id, _)| id).collect()
    }

    fn member_count(&self) -> usize {
        self.read().peers.values().filter(|p| p.is_member()).count()
    }

    /// The links of the current members (what the metrics show).
    fn links(&self) -> Vec<(NodeId, LinkStats)> {
        self.read().peers.iter().filter(|(_, p)| p.is_member()).map(|(&id, p)| (id, p.link.stats())).collect()
    }
}

impl fmt::Debug for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.read();
        let members = table.peers.iter().filter(|(_, p)| p.is_member()).map(|(id, p)| (id, *p.addr.borrow()));
        f.debug_map().entries(members).finish()
    }
}

/// A handle that replaces the transport's peers and their addresses, from
/// any thread (cheap to clone); see [`PeerTransport::book`].
#[derive(Clone, Debug)]
pub struct PeerBook(Arc<Peers>);

impl PeerBook {
    /// Every *other* member and the address to dial it at. An id not seen
    /// before gets a queue, link counters and a writer; a changed address
    /// makes that peer's writer drop its connection (if any) and dial the
    /// new address; an id no longer listed keeps its writer but `send` to
    /// it is dropped as misaddressed and inbound frames from it are refused
    /// as [`Refused::UnknownSender`] (a removed member). An entry naming
    /// this node itself is ignored (logged at debug).
    ///
    /// It takes effect when it returns: a `send` to a new peer queues (its
    /// writer, spawned on the transport's runtime, dials soon after), and
    /// its frames are admitted. After the transport stops it does nothing.
    pub fn set(&self, peers: BTreeMap<NodeId, SocketAddr>) {
        self.0.set(peers);
    }
}

// ---------------------------------------------------------------------------
// Sending

/// The node thread's handle for sending: cheap to clone, `Send + Sync`, and
/// usable outside tokio. [`send`](PeerSender::send) never blocks.
#[derive(Clone)]
pub struct PeerSender {
    peers: Arc<Peers>,
    counters: Arc<Counters>,
}

impl fmt::Debug for PeerSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerSender").field("id", &self.peers.me).field("peers", &self.peers).finish()
    }
}

impl PeerSender {
    /// Closes every queue: later sends count as `dropped_closed`.
    fn close(&self) {
        self.peers.close();
    }

    /// Queues `envelope` for `envelope.to` (dropping that queue's oldest
    /// envelope when it is full), or with [`Sending::AtOnce`] writes it on
    /// this thread if the connection is idle (see `server::outbox`), or
    /// drops it when the peer is not in the current book or the transport
    /// has stopped; every drop is counted in [`PeerStats`].
    ///
    /// Sending to this node itself, or with a `from` other than this node,
    /// is a bug in the caller: it fails a `debug_assert` and is dropped.
    pub fn send(&self, envelope: Envelope<Command>, sending: Sending) {
        let me = self.peers.me;
        debug_assert_ne!(envelope.to, me, "node {me} sent a message to itself");
        debug_assert_eq!(envelope.from, me, "node {me} sent a message as node {}", envelope.from);
        // The push happens under the read lock: it only takes the queue's
        // own short lock (and at most one non-blocking write), and a `set`
        // waits for it at most that long.
        let peer_id = envelope.to;
        let table = self.peers.read();
        let peer = match table.peers.get(&envelope.to) {
            Some(peer) if peer.is_member() && envelope.from == me => peer,
            _ => {
                debug!(node = me, from = envelope.from, to = envelope.to, "dropping a misaddressed envelope");
                return bump(&self.counters.dropped_misaddressed, 1);
            }
        };
        match peer.queue.push(envelope, sending) {
            Pushed::Queued => bump(&self.counters.queued, 1),
            Pushed::Written => {
                bump(&self.counters.queued, 1);
                bump(&self.counters.written_at_once, 1);
                bump(&peer.link.sent, 1);
            }
            Pushed::Unencodable(kind, error) => {
                // Accepted like any other, then dropped as the writer
                // drops one it cannot encode: `queued` counts both, so
                // every queued envelope is sent, superseded or dropped.
                bump(&self.counters.queued, 1);
                self.counters.unencodable(me, peer_id, kind, &error);
            }
            Pushed::Superseded => {
                bump(&self.counters.queued, 1);
                bump(&self.counters.superseded, 1);
            }
            Pushed::DroppedOldest => {
                bump(&self.counters.queued, 1);
                bump(&self.counters.dropped_full, 1);
                bump(&peer.link.dropped, 1);
            }
            Pushed::Closed => bump(&self.counters.dropped_closed, 1),
        }
    }
}

// ---------------------------------------------------------------------------
// The transport

/// A running transport. Dropping it or [`shutdown`](PeerTransport::shutdown)
/// stops every task it started (listener, per-peer writers, per-connection
/// readers).
pub struct PeerTransport {
    local_addr: SocketAddr,
    sender: PeerSender,
    counters: Arc<Counters>,
    stop: CancellationToken,
    listener: Option<JoinHandle<()>>,
    /// The writer manager ([`manage_writers`]), which owns every writer.
    writers: Option<JoinHandle<()>>,
}

impl fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTransport").field("local_addr", &self.local_addr).field("sender", &self.sender).finish()
    }
}

impl PeerTransport {
    /// Binds the listener and spawns the tasks on the current tokio runtime.
    /// Every valid inbound envelope is handed to `deliver`, which must not
    /// block.
    ///
    /// Fails, naming the address, when the listener cannot be bound (for
    /// instance, the port is taken), and with `InvalidInput` when
    /// [`PeerConfig::validate`] does.
    pub async fn start(config: PeerConfig, deliver: Deliver) -> io::Result<PeerTransport> {
        config.validate()?;
        let listen = config.listen;
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            io::Error::new(e.kind(), format!("node {}: cannot bind the peer listener on {listen}: {e}", config.id))
        })?;
        let local_addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let peers = Arc::new(Peers::new(config.id, config.queue_capacity));
        peers.set(config.peers.clone());

        // Writers are spawned by a task rather than by `PeerBook::set`
        // itself: `set` may run on any thread, outside the runtime, and one
        // task owning every writer keeps `shutdown` (end them, await them)
        // and Drop (abort them) as simple as with a fixed set.
        let writer = {
            let (config, counters) = (config.clone(), counters.clone());
            move |peer, link| Writer {
                me: config.id,
                peer,
                link,
                limits: config.limits,
                backoff_min: config.backoff_min,
                backoff_max: config.backoff_max,
                silence_max: config.silence_max,
                connect_timeout: config.connect_timeout(),
                handshake_timeout: config.handshake_timeout(),
                tls: config.tls.clone(),
                counters: counters.clone(),
            }
        };
        let writers = tokio::spawn(manage_writers(peers.clone(), writer, stop.clone()));

        let inbound = Arc::new(Inbound {
            id: config.id,
            peers: peers.clone(),
            limits: config.limits,
            deliver,
            counters: counters.clone(),
            current: Mutex::new(BTreeMap::new()),
            accept_pause: config.backoff_min,
            ack_interval: config.ack_interval(),
            tls: config.tls.clone(),
            handshake_timeout: config.handshake_timeout(),
        });
        let listener = tokio::spawn(listen_loop(listener, inbound, stop.clone()));
        info!(node = config.id, %local_addr, peers = config.peers.len(), tls = config.tls.is_some(), "peer transport started");

        let sender = PeerSender { peers, counters: counters.clone() };
        Ok(PeerTransport { local_addr, sender, counters, stop, listener: Some(listener), writers: Some(writers) })
    }

    /// A handle that replaces the peers and their addresses while the
    /// transport runs, usable from any thread.
    pub fn book(&self) -> PeerBook {
        PeerBook(self.sender.peers.clone())
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for sending, usable from any thread.
    pub fn sender(&self) -> PeerSender {
        self.sender.clone()
    }

    /// What the transport did so far.
    pub fn stats(&self) -> PeerStats {
        self.counters.snapshot(&self.sender.peers)
    }

    /// A handle that reads the counters from anywhere, for as long as it
    /// is kept (the metrics endpoint).
    pub fn stats_handle(&self) -> PeerStatsHandle {
        PeerStatsHandle { counters: self.counters.clone(), peers: self.sender.peers.clone() }
    }

    /// Stops every task and waits until they have ended: when this returns,
    /// every socket of the transport is closed. Envelopes still queued are
    /// dropped; later [`PeerSender::send`]s count as `dropped_closed`.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        self.sender.close();
        if let Some(writers) = self.writers.take() {
            // It ends by itself once it has ended and awaited every writer.
            if let Err(e) = writers.await {
                warn!(error = %e, "peer writer manager task failed");
            }
        }
        if let Some(listener) = self.listener.take() {
            // It ends by itself once it has closed its readers.
            if let Err(e) = listener.await {
                warn!(error = %e, "peer listener task failed");
            }
        }
    }
}

/// Reads a transport's counters (see [`PeerTransport::stats_handle`]).
#[derive(Clone, Debug)]
pub struct PeerStatsHandle {
    counters: Arc<Counters>,
    peers: Arc<Peers>,
}

impl PeerStatsHandle {
    pub fn stats(&self) -> PeerStats {
        self.counters.snapshot(&self.peers)
    }

    /// Each current peer's link, by id (a peer removed from the book is no
    /// longer listed; its counts stay in the totals).
    pub fn links(&self) -> Vec<(NodeId, LinkStats)> {
        self.peers.links()
    }
}

impl Drop for PeerTransport {
    fn drop(&mut self) {
        self.stop.cancel();
        self.sender.close();
        if let Some(listener) = self.listener.take() {
            // Aborting drops its reader set, which aborts every reader.
            listener.abort();
        }
        if let Some(writers) = self.writers.take() {
            // Likewise its writer set, which aborts every writer.
            writers.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// Outbound

/// Spawns a writer for every peer of the book, at start and whenever
/// [`PeerBook::set`] adds one, and owns them all: when the transport stops
/// it ends them and waits for them; aborting it (dropping the transport)
/// drops its set, which aborts them.
async fn manage_writers(
    peers: Arc<Peers>,
    writer: impl Fn(NodeId, Arc<LinkCounters>) -> Writer,
    stop: CancellationToken,
) {
    let mut writers = JoinSet::new();
    // Writers never end by themselves, so this names exactly the running
    // ones; at most one per node id.
    let mut spawned = BTreeSet::new();
    loop {
        for (peer, queue, link, addr) in peers.unspawned(&spawned) {
            spawned.insert(peer);
            writers.spawn(writer(peer, link).run(queue, addr));
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = peers.added.notified() => {}
        }
    }
    writers.shutdown().await;
}

struct Writer {
    me: NodeId,
    peer: NodeId,
    link: Arc<LinkCounters>,
    limits: Limits,
    backoff_min: Duration,
    backoff_max: Duration,
    silence_max: Duration,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    tls: Option<Arc<NodeTls>>,
    counters: Arc<Counters>,
}

/// How a connection's life ended, as far as the writer is concerned.
enum Dropped {
    /// Broken or closed by the peer: redial at once if it had been healthy.
    Broken,
    /// What was written went unacknowledged for `silence_max`.
    Silent,
    /// The book gave the peer a new address; this envelope, taken from
    /// the queue before the move was seen, goes first on the new
    /// connection.
    Moved(Option<Envelope<Command>>),
}

/// Waits until the peer's address changes (forever if it no longer can:
/// the book is gone with the transport).
async fn moved(addr: &mut watch::Receiver<SocketAddr>) {
    if addr.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Writer {
    /// Owns the connection to one peer, for as long as the transport runs,
    /// dialling it wherever `addr` says at the time.
    async fn run(self, queue: Arc<PeerQueue>, mut addr: watch::Receiver<SocketAddr>) {
        let mut buf = Vec::new();
        let mut redial = Redial::new(self.backoff_min, self.backoff_max);
        let mut carried = None;
        loop {
            // Connect only when there is something to send (unconnected,
            // nothing is written at once, so the work is a queued envelope).
            let first = match carried.take() {
                Some(envelope) => envelope,
                None => match queue.next(false).await.first {
                    Some(envelope) => envelope,
                    None => continue,
                },
            };
            let (stream, direct) = self.connect(&mut redial, &mut addr).await;
            queue.connected(direct, self.limits);
            let dropped = self.serve(stream, first, &queue, &mut buf, &mut redial, &mut addr).await;
            if queue.disconnected() {
                self.dropped(1); // the unwritten end of a frame written at once
            }
            match dropped {
                Dropped::Broken => {}
                Dropped::Silent => {
                    bump(&self.counters.connections_silent, 1);
                    // Once per outage at warn: a paused peer accepts every
                    // redial in its kernel and leaves each one silent.
                    if redial.pause().is_zero() {
                        warn!(node = self.me, peer = self.peer, silence = ?self.silence_max, "no ack from peer; reconnecting");
                    } else {
                        debug!(node = self.me, peer = self.peer, "no ack from peer again; reconnecting");
                    }
                    redial.failed();
                }
                Dropped::Moved(envelope) => {
                    debug!(node = self.me, peer = self.peer, "peer moved; dropped the connection to its old address");
                    // The backoff was earned by the old address.
                    redial.healthy();
                    carried = envelope;
                }
            }
        }
    }

    /// Connects (and with TLS, completes the handshake) to the peer's
    /// current address, pausing before each attempt as [`Redial`] says.
    /// Without TLS, also returns a duplicate of the socket for the node
    /// thread's writes at once (`server::outbox`).
    async fn connect(
        &self,
        redial: &mut Redial,
        to: &mut watch::Receiver<SocketAddr>,
    ) -> (BoxStream, Option<std::net::TcpStream>) {
        loop {
            let pause = redial.pause();
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    // A new address is worth a dial at once: the pause
                    // was earned by the old one.
                    () = moved(to) => redial.healthy(),
                }
            }
            // Marks this address seen: a change from now on, even during
            // this attempt, wakes `serve`, which redials.
            let addr = *to.borrow_and_update();
            let error = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    set_backstops(&stream, self.silence_max);
                    let direct = if self.tls.is_none() { duplicate(&stream) } else { None };
                    let stream = match self.handshake(stream).await {
                        Ok(stream) => stream,
                        Err(error) => {
                            bump(&self.counters.handshake_failures, 1);
                            // Once per outage at warn, like the connects.
                            if redial.pause().is_zero() {
                                warn!(node = self.me, peer = self.peer, addr = %addr, %error, "TLS handshake with peer failed");
                            } else {
                                debug!(node = self.me, peer = self.peer, addr = %addr, %error, "TLS handshake with peer failed again");
                            }
                            redial.failed();
                            continue;
                        }
                    };
                    bump(&self.counters.connections_out, 1);
                    // At info once per outage: a paused peer accepts a
                    // redial every few hundred milliseconds.
                    if redial.pause().is_zero() {
                        info!(node = self.me, peer = self.peer, addr = %addr, "connected to peer");
                    } else {
                        debug!(node = self.me, peer = self.peer, addr = %addr, "connected to peer again");
                    }
                    return (stream, direct);
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", self.connect_timeout),
            };
            bump(&self.counters.connect_failures, 1);
            redial.failed();
            debug!(node = self.me, peer = self.peer, addr = %addr, %error, retry_in = ?redial.pause(), "cannot connect to peer");
        }
    }

    /// With TLS, the handshake as this peer's client: it must show the
    /// certificate of the node it was meant to be.
    async fn handshake(&self, stream: TcpStream) -> Result<BoxStream, String> {
        let Some(tls) = &self.tls else { return Ok(Box::new(stream)) };
        match tokio::time::timeout(self.handshake_timeout, tls.connect_peer(self.peer, stream)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no handshake within {:?}", self.handshake_timeout)),
        }
    }

    /// Writes queued envelopes to `stream`, `first` first, until the
    /// connection breaks or goes silent, or the peer moves (`to` changes).
    ///
    /// A move is noticed when there is something to send (a cheap check of
    /// the watch's version per batch), not by waiting on the watch beside
    /// the queue: that wait, set up and torn down for every batch, cost
    /// the hot path measurably, and a connection idle at the old address
    /// sends nothing that could be lost. A write stalled on a dead old
    /// host ends at the silence bound and redials at the new address.
    async fn serve(
        &self,
        stream: BoxStream,
        first: Envelope<Command>,
        queue: &PeerQueue,
        buf: &mut Vec<u8>,
        redial: &mut Redial,
        to: &mut watch::Receiver<SocketAddr>,
    ) -> Dropped {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut live = Liveness::new(self.silence_max);
        let mut acks = [0u8; 64];
        let mut next = Some(Work { leftover: Vec::new(), first: Some(first), wrote: None });
        loop {
            let work = match next.take() {
                Some(work) => work,
                None => tokio::select! {
                    biased;
                    read = rd.read(&mut acks) => {
                        if !self.on_read(read, &acks, &mut live, false, redial) {
                            return Dropped::Broken;
                        }
                        continue;
                    }
                    () = until(live.deadline()) => return Dropped::Silent,
                    work = queue.next(live.deadline().is_some()) => work,
                },
            };
            if let Some(at) = work.wrote {
                // The node thread wrote at once: count the silence from then.
                live.wrote(at);
            }
            if work.leftover.is_empty() && work.first.is_none() {
                continue;
            }
            if to.has_changed().unwrap_or(false) {
                if !work.leftover.is_empty() {
                    self.dropped(1); // the end of a frame for the old connection
                }
                return Dropped::Moved(work.first);
            }

            // One batch: the end of a frame written at once, then
            // everything already queued, up to WRITE_BATCH_BYTES (plus the
            // last frame).
            buf.clear();
            buf.extend_from_slice(&work.leftover);
            let leftover = !work.leftover.is_empty();
            let mut batch = 0u64;
            let mut envelope = work.first;
            while let Some(e) = envelope.take() {
                match wire::encode_into(&e, &self.limits, buf) {
                    Ok(()) => batch += 1,
                    Err(error) => self.counters.unencodable(self.me, self.peer, e.message.kind(), &error),
                }
                if buf.len() < WRITE_BATCH_BYTES {
                    envelope = queue.pop();
                }
            }
            if batch == 0 && !leftover {
                continue;
            }
            live.wrote(Instant::now());
            // Acks keep arriving while a large write is under way: read
            // them beside it, or a slow but live link would look silent.
            let ended = {
                let write = wr.write_all(buf);
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        biased;
                        written = &mut write => break written.map_err(Some),
                        read = rd.read(&mut acks) => {
                            if !self.on_read(read, &acks, &mut live, true, redial) {
                                break Err(None);
                            }
                        }
                        () = until(live.deadline()) => {
                            self.dropped(batch + u64::from(leftover));
                            return Dropped::Silent;
                        }
                    }
                }
            };
            if buf.capacity() > 2 * WRITE_BATCH_BYTES {
                *buf = Vec::new();
            }
            match ended {
                Ok(()) => {
                    bump(&self.link.sent, batch);
                }
                Err(error) => {
                    self.dropped(batch + u64::from(leftover));
                    if let Some(e) = error {
                        warn!(node = self.me, peer = self.peer, error = %e, lost = batch, "write to peer failed; reconnecting");
                    }
                    return Dropped::Broken;
                }
            }
        }
    }

    /// Counts `batch` envelopes lost in a write.
    fn dropped(&self, batch: u64) {
        bump(&self.counters.dropped_write, batch);
        bump(&self.link.dropped, batch);
    }

    /// What the peer wrote back: acks keep the connection alive (returns
    /// true); the end of the stream, an error, or any byte but [`ACK`] end
    /// it.
    fn on_read(
        &self,
        read: io::Result<usize>,
        bytes: &[u8],
        live: &mut Liveness,
        writing: bool,
        redial: &mut Redial,
    ) -> bool {
        match read {
            Ok(0) => debug!(node = self.me, peer = self.peer, "peer closed the connection"),
            Ok(n) if bytes[..n].iter().all(|&b| b == ACK) => {
                bump(&self.counters.acks_in, n as u64);
                live.acked(Instant::now(), writing);
                if !redial.pause().is_zero() {
                    info!(node = self.me, peer = self.peer, "peer acknowledges again");
                }
                redial.healthy();
                return true;
            }
            Ok(n) => warn!(
                node = self.me,
                peer = self.peer,
                bytes = n,
                "peer wrote something other than acks on our outbound connection; closing it"
            ),
            Err(e) => debug!(node = self.me, peer = self.peer, error = %e, "connection to peer broke"),
        }
        false
    }
}

/// A duplicate of a plain TCP connection's socket, for writes at once from
/// the node thread: same connection, non-blocking like tokio's. `None` if
/// the descriptor cannot be duplicated (then everything is queued).
fn duplicate(stream: &TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    let socket = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned().ok()?);
    socket.set_nonblocking(true).ok()?;
    Some(socket)
}

/// Sleeps until `deadline`, or forever if there is none.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Socket options of a peer connection: no Nagle delay for small Raft
/// messages, and the kernel's own bounds as a backstop behind the acks
/// ([`Liveness`]): unacknowledged data fails the connection after
/// `TCP_USER_TIMEOUT`, and keepalive probes find a dead idle one. Each
/// failure is logged and ignored: the acks still bound the silence.
fn set_backstops(stream: &TcpStream, silence_max: Duration) {
    let socket = socket2::SockRef::from(stream);
    let backstop = (4 * silence_max).max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new().with_time(backstop).with_interval(backstop).with_retries(3);
    let results = [
        ("TCP_NODELAY", stream.set_nodelay(true)),
        ("TCP_USER_TIMEOUT", socket.set_tcp_user_timeout(Some(backstop))),
        ("SO_KEEPALIVE", socket.set_tcp_keepalive(&keepalive)),
    ];
    for (option, result) in results {
        if let Err(e) = result {
            debug!(option, error = %e, "cannot set a peer socket option");
        }
    }
}

// ---------------------------------------------------------------------------
// Inbound

struct Inbound {
    id: NodeId,
    /// The book: who may connect, read afresh at every check so that a
    /// `set` applies to connections already open.
    peers: Arc<Peers>,
    limits: Limits,
    deliver: Deliver,
    counters: Arc<Counters>,
    /// The live identified connection of each peer: its number and the
    /// token that closes it when a newer one from the same peer arrives.
    current: Mutex<BTreeMap<NodeId, (u64, CancellationToken)>>,
    accept_pause: Duration,
    /// How often a reader acks while bytes arrive ([`AckPacer`]).
    ack_interval: Duration,
    tls: Option<Arc<NodeTls>>,
    handshake_timeout: Duration,
}

impl Inbound {
    /// How many inbound connections may be open at once: a few per member
    /// of the cluster as the current book has it (its peers and this node).
    fn max_connections(&self) -> usize {
        INBOUND_PER_MEMBER * (self.peers.member_count() + 1)
    }
}

async fn listen_loop(listener: TcpListener, inbound: Arc<Inbound>, stop: CancellationToken) {
    let mut readers = JoinSet::new();
    let mut next_connection = 0u64;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                while readers.try_join_next().is_some() {}
                let max = inbound.max_connections();
                if readers.len() >= max {
                    bump(&inbound.counters.connections_refused, 1);
                    warn!(node = inbound.id, %remote, max, "too many inbound peer connections; closing the new one");
                    continue;
                }
                bump(&inbound.counters.connections_in, 1);
                next_connection += 1;
                let connection = Connection {
                    number: next_connection,
                    remote,
                    inbound: inbound.clone(),
                    close: stop.child_token(),
                    from: None,
                    link: None,
                    member: None,
                    certified: None,
                };
                readers.spawn(connection.run(stream));
            }
            Err(e) => {
                // Such as running out of file descriptors: pause rather than spin.
                warn!(node = inbound.id, error = %e, "accepting a peer connection failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(inbound.accept_pause) => {}
                }
            }
        }
    }
    readers.shutdown().await;
}

/// One inbound connection, read by its own task.
struct Connection {
    number: u64,
    remote: SocketAddr,
    inbound: Arc<Inbound>,
    /// Cancelled when the transport stops or a newer connection from the
    /// same peer replaces this one.
    close: CancellationToken,
    /// The `from` of the first envelope.
    from: Option<NodeId>,
    /// Its link counters and membership flag, looked up once with the
    /// first envelope.
    link: Option<Arc<LinkCounters>>,
    member: Option<Arc<AtomicBool>>,
    /// With TLS, the node its certificate names: every envelope must come
    /// from it.
    certified: Option<NodeId>,
}

enum Ended {
    Eof,
    Closed,
    Io(io::Error),
    Refused(Refused),
    /// The TLS handshake failed, or named no member.
    Handshake(String),
    /// Not a byte within `handshake_timeout` of the connection's start
    /// (after the TLS handshake, if any).
    Mute,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let close = self.close.clone();
        let ended = tokio::select! {
            () = close.cancelled() => Ended::Closed,
            ended = async {
                match self.handshake(stream).await {
                    Ok(mut stream) => self.read_frames(&mut stream).await,
                    Err(why) => Ended::Handshake(why),
                }
            } => ended,
        };
        let (node, remote) = (self.inbound.id, self.remote);
        match ended {
            Ended::Eof => debug!(node, %remote, from = ?self.from, "peer closed its connection"),
            Ended::Closed => debug!(node, %remote, from = ?self.from, "closing peer connection"),
            Ended::Io(e) => debug!(node, %remote, from = ?self.from, error = %e, "peer connection broke"),
            Ended::Refused(error) => {
                bump(&self.inbound.counters.refused_frames, 1);
                warn!(node, %remote, from = ?self.from, error = ?error, "refused peer connection: {error}");
            }
            Ended::Mute => {
                bump(&self.inbound.counters.refused_frames, 1);
                warn!(node, %remote, "refused peer connection: nothing sent within {:?}", self.inbound.handshake_timeout);
            }
            Ended::Handshake(why) => {
                bump(&self.inbound.counters.handshake_failures, 1);
                warn!(node, %remote, "refused peer connection: {why}");
            }
        }
        if let Some(from) = self.from {
            let mut current = lock(&self.inbound.current);
            if current.get(&from).is_some_and(|(number, _)| *number == self.number) {
                current.remove(&from);
            }
        }
    }

    /// With TLS, the handshake as the server, which requires a certificate
    /// from the cluster's authority and learns which member it names.
    async fn handshake(&mut self, stream: TcpStream) -> Result<BoxStream, String> {
        let Some(tls) = &self.inbound.tls else { return Ok(Box::new(stream)) };
        let timeout = self.inbound.handshake_timeout;
        // Only a member of the current book may identify itself.
        let members = self.inbound.peers.members();
        match tokio::time::timeout(timeout, tls.accept_peer(stream, members)).await {
            Ok(Ok((id, stream))) => {
                self.certified = Some(id);
                Ok(stream)
            }
            Ok(Err(why)) => Err(why),
            Err(_) => Err(format!("no TLS handshake within {timeout:?}")),
        }
    }

    /// Reads and delivers frames until the stream ends or one is refused,
    /// acking what arrives as [`AckPacer`] says (an ack that does not fit
    /// the send buffer is skipped: the next bytes owe another).
    ///
    /// The buffer holds at most `frame_bytes_max + HEADER_LEN` bytes: after
    /// every decoded frame is taken out, what remains is a proper prefix of
    /// one frame, which is shorter than `frame_bytes_max` (its header was
    /// checked) or than a header.
    async fn read_frames(&mut self, stream: &mut BoxStream) -> Ended {
        let limits = self.inbound.limits;
        let max = limits.frame_bytes_max.saturating_add(wire::HEADER_LEN);
        let mut buf: Vec<u8> = Vec::new();
        let mut needed = 0;
        let mut pacer = AckPacer::new(self.inbound.ack_interval);
        let speak_deadline = Instant::now() + self.inbound.handshake_timeout;
        let mut spoke = false;
        loop {
            let room = max.saturating_sub(buf.len());
            let chunk = needed.max(READ_CHUNK_BYTES).min(room);
            if buf.capacity() - buf.len() < chunk {
                buf.reserve_exact(chunk);
            }
            let mut into = (&mut buf).limit(chunk);
            // A connection must start talking soon: a writer dials only
            // when it has something to send. One that never does (half
            // open, or idle on purpose) would hold one of the few inbound
            // slots. (A whole first frame may take longer: it can be a
            // large batch on a slow link.)
            let speak_by = (!spoke).then_some(speak_deadline);
            let read = tokio::select! {
                read = stream.read_buf(&mut into) => Some(read),
                () = until(pacer.due()) => None,
                () = until(speak_by) => return Ended::Mute,
            };
            let arrived = match read {
                Some(Ok(0)) => return Ended::Eof,
                Some(Ok(_)) => true,
                Some(Err(e)) => return Ended::Io(e),
                None => false,
            };
            let now = Instant::now();
            if arrived {
                pacer.received(now);
                spoke = true;
            }
            if pacer.should_send(now) {
                match tls::try_write(stream, &[ACK]) {
                    Ok(n) => bump(&self.inbound.counters.acks_out, n as u64),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Ended::Io(e),
                }
                pacer.sent(now);
            }
            if !arrived {
                continue;
            }
            let mut at = 0;
            loop {
                let rest = buf.get(at..).unwrap_or_default();
                match wire::decode(rest, &limits) {
                    Ok((envelope, used)) => {
                        at += used;
                        if let Err(refused) = self.admit(&envelope) {
                            return Ended::Refused(refused);
                        }
                        if let Some(link) = &self.link {
                            bump(&link.received, 1);
                        }
                        (self.inbound.deliver)(envelope);
                    }
                    Err(DecodeError::Incomplete { needed: n }) => {
                        needed = n;
                        break;
                    }
                    Err(e) => return Ended::Refused(Refused::Decode(e)),
                }
            }
            buf.drain(..at);
            if buf.capacity() > READ_CHUNK_BYTES && buf.len() <= READ_CHUNK_BYTES {
                buf.shrink_to(READ_CHUNK_BYTES);
            }
        }
    }

    /// Checks the addresses of an inbound envelope; the first one identifies
    /// the connection, replacing an older connection from the same peer.
    fn admit(&mut self, envelope: &Envelope<Command>) -> Result<(), Refused> {
        let (id, from, to) = (self.inbound.id, envelope.from, envelope.to);
        if from == id {
            return Err(Refused::FromSelf { from });
        }
        // Every frame, not just the first: a peer removed from the book
        // has its open connection refused at its next frame. Once the
        // connection is identified, its peer's flag is at hand (no lock).
        let member = match (&self.member, self.from) {
            (Some(flag), Some(first)) if first == from => flag.load(Ordering::Relaxed),
            _ => self.inbound.peers.is_member(from),
        };
        if !member {
            return Err(Refused::UnknownSender { from });
        }
        if to != id {
            return Err(Refused::WrongRecipient { to, this: id });
        }
        if let Some(certified) = self.certified.filter(|&c| c != from) {
            return Err(Refused::NotCertified { from, certified });
        }
        match self.from {
            Some(first) if first != from => Err(Refused::SenderChanged { first, from }),
            Some(_) => Ok(()),
            None => {
                self.from = Some(from);
                if let Some((link, member)) = self.inbound.peers.link(from) {
                    self.link = Some(link);
                    self.member = Some(member);
                }
                let older = lock(&self.inbound.current).insert(from, (self.number, self.close.clone()));
                if let Some((_, older)) = older {
                    info!(node = id, from, remote = %self.remote, "new connection from peer replaces its older one");
                    older.cancel();
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op;
    use crate::raft::{Entry, Message, Payload};
    use tokio::io::AsyncRead;
    use tokio::sync::mpsc;

    /// Generous: only a broken transport gets near it.
    const WAIT: Duration = Duration::from_secs(10);

    fn heartbeat(from: NodeId, to: NodeId, term: u64) -> Envelope<Command> {
        Envelope { from, to, message: Message::Heartbeat { term, commit: 0, read_round: term } }
    }

    fn append(from: NodeId, to: NodeId, entries: usize, key: &str, value_bytes: usize) -> Envelope<Command> {
        let command = Command { client: 1, seq: 1, op: Op::Put { key: key.into(), value: "v".repeat(value_bytes) } };
        let entries = vec![Entry { term: 1, payload: Payload::Command(command) }; entries];
        Envelope {
            from,
            to,
            message: Message::Append { term: 1, prev_index: 0, prev_term: 0, entries, commit: 0, read_round: 0 },
        }
    }

    fn config(id: NodeId, listen: SocketAddr, peers: &[(NodeId, SocketAddr)]) -> PeerConfig {
        PeerConfig::new(id, listen, peers.iter().copied().collect())
    }

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// An address nothing listens on, to start a transport on later.
    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    fn collector() -> (Deliver, mpsc::UnboundedReceiver<Envelope<Command>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(move |envelope: Envelope<Command>| drop(tx.send(envelope))), rx)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Envelope<Command>>) -> Envelope<Command> {
        tokio::time::timeout(WAIT, rx.recv()).await.expect("no envelope arrived in time").expect("channel closed")
    }

    /// Waits for a condition on counters, checking every millisecond.
    async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Reads until the other side closes; panics on data or on a timeout.
    /// Reads until the connection closes; acks may come first, nothing else.
    async fn assert_closed(stream: &mut (impl AsyncRead + Unpin)) {
        let mut byte = [0u8; 1];
        loop {
            match tokio::time::timeout(WAIT, stream.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) if byte[0] == ACK => {}
                Ok(Ok(_)) => panic!("expected the connection to be closed, got {byte:?}"),
                Err(_) => panic!("the connection was not closed in time"),
            }
        }
    }

    /// Reads one frame from a raw peer connection.
    async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Envelope<Command> {
        let limits = Limits::default();
        loop {
            match wire::decode(buf, &limits) {
                Ok((envelope, used)) => {
                    buf.drain(..used);
                    return envelope;
                }
                Err(DecodeError::Incomplete { .. }) => {}
                Err(e) => panic!("the transport wrote a bad frame: {e}"),
            }
            let n = tokio::time::timeout(WAIT, stream.read_buf(buf)).await.expect("no frame in time").unwrap();
            assert_ne!(n, 0, "connection closed before a whole frame");
        }
    }

    /// A listener whose connections have a 4 KiB receive buffer: while the
    /// test reads nothing from them, a writer's socket fills after a few
    /// frames.
    fn small_buffered_listener() -> TcpListener {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind(any_port()).unwrap();
        socket.listen(1).unwrap()
    }

    async fn connect_raw(addr: SocketAddr) -> TcpStream {
        tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.unwrap().unwrap()
    }

    fn frames(envelopes: &[Envelope<Command>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in envelopes {
            wire::encode_into(e, &Limits::default(), &mut out).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn two_transports_exchange_messages_both_ways() {
        let a_addr = free_addr();
        let (deliver_b, mut at_b) = collector();
        let b = PeerTransport::start(config(1, any_port(), &[(0, a_addr)]), deliver_b).await.unwrap();
        let (deliver_a, mut at_a) = collector();
        let a = PeerTransport::start(config(0, a_addr, &[(1, b.local_addr())]), deliver_a).await.unwrap();
        assert_eq!(a.local_addr(), a_addr);

        let (to_b, to_a) = (a.sender(), b.sender());
        for term in 1..=20 {
            to_b.send(heartbeat(0, 1, term), Sending::Queued);
            to_a.send(heartbeat(1, 0, 100 + term), Sending::Queued);
        }
        to_b.send(append(0, 1, 3, "k", 10), Sending::Queued);
        // One connection per direction: each side sees its peer's order.
        for term in 1..=20 {
            assert_eq!(next(&mut at_b).await, heartbeat(0, 1, term));
            assert_eq!(next(&mut at_a).await, heartbeat(1, 0, 100 + term));
        }
        assert_eq!(next(&mut at_b).await, append(0, 1, 3, "k", 10));

        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!((sa.queued, sa.sent, sa.frames_in, sa.connections_out, sa.connections_in), (21, 21, 20, 1, 1));
        assert_eq!((sb.queued, sb.sent, sb.frames_in, sb.connections_out, sb.connections_in), (20, 20, 21, 1, 1));
        assert_eq!(sa.refused_frames + sb.refused_frames + sa.dropped_full + sb.dropped_full, 0);
        a.shutdown().await;
        b.shutdown().await;
    }

    /// A TCP relay in front of `to` whose forwarding can be paused: while
    /// `paused` holds true it reads nothing, in either direction, on any
    /// connection, old or new, so bytes stall as on a blackholed link
    /// (and resume, none lost, when it is set back to false).
    async fn pausable_relay(to: SocketAddr, paused: tokio::sync::watch::Receiver<bool>) -> (SocketAddr, JoinSet<()>) {
        async fn pump(
            mut from: tokio::net::tcp::OwnedReadHalf,
            mut into: tokio::net::tcp::OwnedWriteHalf,
            mut paused: tokio::sync::watch::Receiver<bool>,
        ) {
            let mut buf = [0u8; 4096];
            loop {
                if paused.wait_for(|p| !p).await.is_err() {
                    return;
                }
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if paused.wait_for(|p| !p).await.is_err() || into.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let listener = TcpListener::bind(any_port()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pumps = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(to).await else { continue };
                let ((cr, cw), (sr, sw)) = (client.into_split(), server.into_split());
                pumps.spawn(pump(cr, sw, paused.clone()));
                pumps.spawn(pump(sr, cw, paused.clone()));
            }
        });
        (addr, tasks)
    }

    /// Issue 21: a connection that stops carrying bytes (without any error:
    /// the relay just stops reading) is dropped within `silence_max` and
    /// redialled, and the link carries messages again once bytes flow. The
    /// transport before acks kept writing into the stalled connection
    /// until a write had stalled for 5 s.
    #[tokio::test]
    async fn a_connection_that_goes_silent_is_dropped_and_redialled() {
        a_silent_connection_is_redialled(Sending::Queued).await;
    }

    /// Also when nothing but the node thread's writes at once went on it
    /// (the writer never wrote a batch there to start its silence clock).
    #[tokio::test]
    async fn a_connection_written_only_at_once_that_goes_silent_is_dropped_and_redialled() {
        a_silent_connection_is_redialled(Sending::AtOnce).await;
    }

    async fn a_silent_connection_is_redialled(sending: Sending) {
        let (deliver_b, mut at_b) = collector();
        let b = PeerTransport::start(config(1, any_port(), &[(0, free_addr())]), deliver_b).await.unwrap();
        let (pause, paused) = tokio::sync::watch::channel(false);
        let (relay, _relay) = pausable_relay(b.local_addr(), paused).await;
        let (deliver_a, _at_a) = collector();
        let a = PeerTransport::start(config(0, any_port(), &[(1, relay)]), deliver_a).await.unwrap();
        let to_b = a.sender();
        to_b.send(heartbeat(0, 1, 1), Sending::Queued);
        assert_eq!(next(&mut at_b).await, heartbeat(0, 1, 1));
        wait_until("the first ack arrived", || a.stats().acks_in > 0).await;

        if sending == Sending::AtOnce {
            let mut term = 100;
            wait_until("a heartbeat was written at once", || {
                term += 1;
                to_b.send(heartbeat(0, 1, term), sending);
                a.stats().written_at_once > 0
            })
            .await;
        }

        pause.send(true).unwrap();
        let mut term = 1;
        wait_until("the writer gave up on the silent connection and redialled", || {
            term += 1;
            to_b.send(heartbeat(0, 1, term), sending); // as a leader heartbeats
            let stats = a.stats();
            stats.connections_silent >= 1 && stats.connections_out >= 2
        })
        .await;

        pause.send(false).unwrap();
        let after = term + 1_000;
        let mut heard = false;
        wait_until("a heartbeat sent after the relay resumed arrived", || {
            to_b.send(heartbeat(0, 1, after), sending);
            while let Ok(envelope) = at_b.try_recv() {
                heard |= envelope == heartbeat(0, 1, after);
            }
            heard
        })
        .await;
        a.shutdown().await;
        b.shutdown().await;
    }

    #[tokio::test]
    async fn a_message_sent_before_the_peer_is_up_arrives_after_it_starts() {
        let b_addr = free_addr();
        let (deliver_a, mut at_a) = collector();
        let mut cfg = config(0, any_port(), &[(1, b_addr)]);
        cfg.backoff_min = Duration::from_millis(5);
        cfg.backoff_max = Duration::from_millis(40);
        let a = PeerTransport::start(cfg, deliver_a).await.unwrap();
        a.sender().send(heartbeat(0, 1, 7), Sending::Queued);
        wait_until("node 0 failed to connect twice", || a.stats().connect_failures >= 2).await;
        assert_eq!(a.stats().sent, 0);

        let (deliver_b, mut at_b) = collector();
        let b = PeerTransport::start(config(1, b_addr, &[(0, a.local_addr())]), deliver_b).await.unwrap();
        assert_eq!(next(&mut at_b).await, heartbeat(0, 1, 7));
        assert_eq!(a.stats().connections_out, 1);
        b.sender().send(heartbeat(1, 0, 8), Sending::Queued);
        assert_eq!(next(&mut at_a).await, heartbeat(1, 0, 8));

        // The peer restarts: the writer notices, reconnects and sends again.
        b.shutdown().await;
        let (deliver_b, mut at_b) = collector();
        let b = PeerTransport::start(config(1, b_addr, &[(0, a.local_addr())]), deliver_b).await.unwrap();
        let sender = a.sender();
        let mut term = 9;
        // A send may be lost in a connection the writer has not yet seen
        // closed; Raft would resend, and so does the test.
        let got = loop {
            sender.send(heartbeat(0, 1, term), Sending::Queued);
            if let Ok(got) = tokio::time::timeout(Duration::from_millis(200), at_b.recv()).await {
                break got.unwrap();
            }
            term += 1;
            assert!(term < 60, "node 0 never reconnected");
        };
        assert_eq!(got.from, 0);
        assert_eq!(a.stats().connections_out, 2);
        a.shutdown().await;
        b.shutdown().await;
    }

    #[tokio::test]
    async fn writer_batches_in_order_and_drops_what_the_wire_cannot_carry() {
        let peer = TcpListener::bind(any_port()).await.unwrap();
        let (deliver, _rx) = collector();
        let mut cfg = config(0, any_port(), &[(1, peer.local_addr().unwrap())]);
        cfg.limits.key_bytes_max = 4;
        let a = PeerTransport::start(cfg, deliver).await.unwrap();
        let sender = a.sender();
        sender.send(append(0, 1, 1, "too long", 1), Sending::Queued);
        for term in 1..=200 {
            sender.send(heartbeat(0, 1, term), Sending::Queued);
        }
        let (mut stream, _) = tokio::time::timeout(WAIT, peer.accept()).await.unwrap().unwrap();
        let mut buf = Vec::new();
        for term in 1..=200 {
            assert_eq!(read_frame(&mut stream, &mut buf).await, heartbeat(0, 1, term));
        }
        let stats = a.stats();
        assert_eq!((stats.queued, stats.sent, stats.dropped_encode), (201, 200, 1));
        // The connection is idle now: a write at once finds the envelope
        // unencodable instead of the writer, and counts it the same way.
        sender.send(append(0, 1, 1, "too long", 1), Sending::AtOnce);
        sender.send(heartbeat(0, 1, 201), Sending::AtOnce);
        assert_eq!(read_frame(&mut stream, &mut buf).await, heartbeat(0, 1, 201));
        let stats = a.stats();
        assert_eq!((stats.queued, stats.sent, stats.dropped_encode), (203, 201, 2));

        // Unknown peers are dropped and counted.
        sender.send(heartbeat(0, 9, 1), Sending::Queued);
        assert_eq!(a.stats().dropped_misaddressed, 1);
        a.shutdown().await;
        assert_closed(&mut stream).await;
    }

    /// What a bad connection sends, and the envelope delivered before it is closed.
    type BadCase = (&'static str, Vec<u8>, Option<Envelope<Command>>);

    #[tokio::test]
    async fn bad_connections_are_closed_and_good_ones_still_served() {
        let (deliver, mut rx) = collector();
        let a =
            PeerTransport::start(config(0, any_port(), &[(1, free_addr()), (2, free_addr())]), deliver).await.unwrap();
        let addr = a.local_addr();
        let oversized = [wire::MAGIC, wire::VERSION, wire::KIND_PEER, 0xff, 0xff, 0xff, 0xff];
        let mut bad: Vec<BadCase> = vec![
            ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec(), None),
            ("oversized header", oversized.to_vec(), None),
            ("unknown from", frames(&[heartbeat(7, 0, 1)]), None),
            ("from itself", frames(&[heartbeat(0, 0, 1)]), None),
            ("wrong to", frames(&[heartbeat(1, 2, 1)]), None),
            ("from change", frames(&[heartbeat(1, 0, 5), heartbeat(2, 0, 6)]), Some(heartbeat(1, 0, 5))),
        ];
        // A valid frame then garbage: the frame is delivered, then the connection closed.
        let mut then_garbage = frames(&[heartbeat(2, 0, 9)]);
        then_garbage.extend_from_slice(&[0, 0, 0]);
        bad.push(("frame then garbage", then_garbage, Some(heartbeat(2, 0, 9))));

        for (round, (what, bytes, delivered)) in bad.iter().enumerate() {
            let mut stream = connect_raw(addr).await;
            stream.write_all(bytes).await.unwrap();
            assert_closed(&mut stream).await;
            if let Some(envelope) = delivered {
                assert_eq!(&next(&mut rx).await, envelope, "{what}");
            }
            // The transport still serves a good connection.
            let mut good = connect_raw(addr).await;
            let term = 100 + round as u64;
            good.write_all(&frames(&[heartbeat(1, 0, term)])).await.unwrap();
            assert_eq!(next(&mut rx).await, heartbeat(1, 0, term), "after {what}");
        }
        let stats = a.stats();
        assert_eq!(stats.refused_frames, bad.len() as u64);
        assert_eq!(stats.frames_in, bad.len() as u64 + 2);
        assert!(rx.try_recv().is_err(), "nothing else was delivered");
        a.shutdown().await;
    }

    #[tokio::test]
    async fn a_connection_that_never_sends_is_closed() {
        let (deliver, _rx) = collector();
        let mut cfg = config(0, any_port(), &[(1, free_addr())]);
        cfg.silence_max = Duration::from_millis(40);
        let a = PeerTransport::start(cfg, deliver).await.unwrap();
        let mut mute = connect_raw(a.local_addr()).await;
        assert_closed(&mut mute).await;
        assert_eq!(a.stats().refused_frames, 1);
        a.shutdown().await;
    }

    #[tokio::test]
    async fn a_frame_split_across_reads_is_delivered() {
        let (deliver, mut rx) = collector();
        let a = PeerTransport::start(config(0, any_port(), &[(1, free_addr())]), deliver).await.unwrap();
        let mut stream = connect_raw(a.local_addr()).await;
        stream.set_nodelay(true).unwrap();
        let big = append(1, 0, 64, "key", 32 << 10);
        let bytes = frames(&[big.clone(), heartbeat(1, 0, 2)]);
        let (head, tail) = bytes.split_at(5);
        stream.write_all(head).await.unwrap();
        stream.flush().await.unwrap();
        stream.write_all(tail).await.unwrap();
        assert_eq!(next(&mut rx).await, big);
        assert_eq!(next(&mut rx).await, heartbeat(1, 0, 2));
        a.shutdown().await;
        assert_closed(&mut stream).await;
    }

    #[tokio::test]
    async fn a_newer_connection_from_a_peer_replaces_the_older() {
        let (deliver, mut rx) = collector();
        let a = PeerTransport::start(config(0, any_port(), &[(1, free_addr())]), deliver).await.unwrap();
        let mut old = connect_raw(a.local_addr()).await;
        old.write_all(&frames(&[heartbeat(1, 0, 1)])).await.unwrap();
        assert_eq!(next(&mut rx).await, heartbeat(1, 0, 1));
        let mut new = connect_raw(a.local_addr()).await;
        new.write_all(&frames(&[heartbeat(1, 0, 2)])).await.unwrap();
        assert_eq!(next(&mut rx).await, heartbeat(1, 0, 2));
        assert_closed(&mut old).await;
        new.write_all(&frames(&[heartbeat(1, 0, 3)])).await.unwrap();
        assert_eq!(next(&mut rx).await, heartbeat(1, 0, 3));
        assert_eq!(a.stats().refused_frames, 0);
        a.shutdown().await;
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_blocking() {
        // A peer that accepts (in the kernel's backlog) but never reads.
        let stuck = small_buffered_listener();
        let (deliver, _rx) = collector();
        let mut cfg = config(0, any_port(), &[(1, stuck.local_addr().unwrap())]);
        cfg.queue_capacity = 8;
        let a = PeerTransport::start(cfg, deliver).await.unwrap();

        // About 256 KiB per envelope: 400 of them are far more than the
        // socket buffers, one batch and the queue can hold.
        let big = append(0, 1, 8, "key", 32 << 10);
        let sender = a.sender();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // The node thread is a plain std thread, outside tokio.
        let thread = std::thread::spawn(move || {
            for _ in 0..400 {
                sender.send(big.clone(), Sending::Queued);
            }
            let _ = done_tx.send(());
        });
        tokio::time::timeout(WAIT, done_rx).await.expect("send blocked").unwrap();
        thread.join().unwrap();

        let stats = a.stats();
        assert_eq!(stats.queued, 400);
        assert!(stats.dropped_full >= 300, "{stats:?}");
        // Shutdown does not wait for the stuck write.
        tokio::time::timeout(WAIT, a.shutdown()).await.expect("shutdown hung on a stuck writer");
        drop(stuck);
    }

    /// The node thread's writes at once and the writer's batches share one
    /// connection: a frame the socket took only the start of is finished
    /// by the writer before anything queued, so the peer reads every frame
    /// whole and in the order sent, however the two alternate.
    #[tokio::test]
    async fn frames_written_at_once_and_queued_arrive_whole_and_in_order() {
        let listener = small_buffered_listener();
        let (deliver, _rx) = collector();
        let mut cfg = config(0, any_port(), &[(1, listener.local_addr().unwrap())]);
        // This peer never acks: the connection must outlive the test.
        cfg.silence_max = 3 * WAIT;
        let a = PeerTransport::start(cfg, deliver).await.unwrap();
        let sender = a.sender();
        // The first message makes the writer connect (nothing is written at
        // once before there is a connection).
        sender.send(heartbeat(0, 1, 1), Sending::Queued);
        let (mut peer, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_frame(&mut peer, &mut buf).await, heartbeat(0, 1, 1));
        // Twice: the first write at once wakes the writer (to start its
        // silence clock); the second finds it waiting and leaves it so.
        let mut term = 1;
        while a.stats().written_at_once < 2 {
            term += 1;
            sender.send(heartbeat(0, 1, term), Sending::AtOnce);
            assert_eq!(read_frame(&mut peer, &mut buf).await, heartbeat(0, 1, term));
            assert!(term < 10_000, "never written at once: {:?}", a.stats());
        }

        // Then, while the peer reads nothing, appends alternately at once
        // and queued, numbered by their commit index: the first (3 MiB) is
        // more than the socket takes, so the writer finishes it, and the
        // rest (32 to 320 KiB) queue behind it or go at once in turn.
        let numbered = |i: u64| {
            let entries = if i == 0 { 96 } else { 1 + (i as usize * 7) % 10 };
            let mut e = append(0, 1, entries, "k", 32 << 10);
            if let Message::Append { commit, .. } = &mut e.message {
                *commit = i;
            }
            e
        };
        let count = 200;
        let thread = std::thread::spawn(move || {
            for i in 0..count {
                let sending = if i % 2 == 0 { Sending::AtOnce } else { Sending::Queued };
                sender.send(numbered(i), sending);
            }
        });
        tokio::task::spawn_blocking(move || thread.join().unwrap()).await.unwrap();
        let number = |e: &Envelope<Command>| match &e.message {
            Message::Append { commit, .. } => *commit,
            _ => u64::MAX,
        };
        for i in 0..count {
            let got = read_frame(&mut peer, &mut buf).await;
            assert!(got == numbered(i), "frame {i}: got the frame numbered {}; {:?}", number(&got), a.stats());
        }
        let stats = a.stats();
        assert_eq!((stats.dropped_full, stats.dropped_write), (0, 0), "{stats:?}");
        assert!(stats.written_at_once > 1, "{stats:?}");
        a.shutdown().await;
    }

    #[tokio::test]
    async fn binding_an_occupied_port_returns_an_error_naming_it() {
        let taken = TcpListener::bind(any_port()).await.unwrap();
        let addr = taken.local_addr().unwrap();
        let (deliver, _rx) = collector();
        let error = PeerTransport::start(config(0, addr, &[(1, free_addr())]), deliver).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }

    #[tokio::test]
    async fn invalid_configs_are_refused() {
        let (deliver, _rx) = collector();
        let mut cfg = config(0, any_port(), &[(0, free_addr())]);
        let error = PeerTransport::start(cfg.clone(), deliver.clone()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        cfg.peers = [(1, free_addr())].into();
        cfg.queue_capacity = 0;
        assert!(PeerTransport::start(cfg.clone(), deliver.clone()).await.is_err());
        cfg.queue_capacity = 1;
        cfg.backoff_min = Duration::ZERO;
        assert!(PeerTransport::start(cfg, deliver).await.is_err());
    }

    /// Sends heartbeats `from` → `to` (terms from 1000 up) until one of
    /// them is delivered to `rx`: the first may be lost in a connection the
    /// writer has not yet seen closed, or one the receiver refused before
    /// it knew the sender; Raft would resend, and so do the tests.
    async fn resend_until_delivered(
        what: &str,
        sender: &PeerSender,
        (from, to): (NodeId, NodeId),
        rx: &mut mpsc::UnboundedReceiver<Envelope<Command>>,
    ) {
        let mut term = 1000;
        let mut heard = false;
        wait_until(what, || {
            term += 1;
            sender.send(heartbeat(from, to, term), Sending::Queued);
            while let Ok(envelope) = rx.try_recv() {
                let resent = matches!(envelope.message, Message::Heartbeat { term, .. } if term > 1000);
                heard |= resent && (envelope.from, envelope.to) == (from, to);
            }
            heard
        })
        .await;
    }

    fn link_ids(transport: &PeerTransport) -> Vec<NodeId> {
        transport.stats_handle().links().into_iter().map(|(id, _)| id).collect()
    }

    #[tokio::test]
    async fn a_peer_added_while_running_is_dialled_and_admitted() {
        let (deliver_a, mut at_a) = collector();
        let other = free_addr();
        // Node 0 knows only node 2 (which never starts), not node 1.
        let a = PeerTransport::start(config(0, any_port(), &[(2, other)]), deliver_a).await.unwrap();
        let (deliver_b, mut at_b) = collector();
        let b = PeerTransport::start(config(1, any_port(), &[(0, a.local_addr())]), deliver_b).await.unwrap();
        assert_eq!(link_ids(&a), [2]);

        // Unknown to node 0: node 1's frames are refused, and node 0
        // cannot send to it.
        b.sender().send(heartbeat(1, 0, 1), Sending::Queued);
        wait_until("node 0 refused node 1's frame", || a.stats().refused_frames >= 1).await;
        assert!(at_a.try_recv().is_err(), "a frame from an unknown sender was delivered");
        a.sender().send(heartbeat(0, 1, 2), Sending::Queued);
        assert_eq!((a.stats().dropped_misaddressed, a.stats().queued), (1, 0));

        // The entry naming node 0 itself is ignored.
        a.book().set([(0, a.local_addr()), (1, b.local_addr()), (2, other)].into());
        assert_eq!(link_ids(&a), [1, 2]);
        a.sender().send(heartbeat(0, 1, 3), Sending::Queued);
        assert_eq!(next(&mut at_b).await, heartbeat(0, 1, 3));
        resend_until_delivered("node 0 admits node 1", &b.sender(), (1, 0), &mut at_a).await;

        let stats = a.stats();
        assert_eq!((stats.dropped_misaddressed, stats.connections_out), (1, 1));
        let link = a.stats_handle().links().into_iter().find(|&(id, _)| id == 1).unwrap().1;
        assert_eq!(link.sent, 1);
        assert!(link.received >= 1, "{link:?}");
        a.shutdown().await;
        b.shutdown().await;
    }

    #[tokio::test]
    async fn a_peer_that_moves_is_redialled_at_its_new_address() {
        let (deliver_b, mut at_b) = collector();
        let b = PeerTransport::start(config(1, any_port(), &[(0, free_addr())]), deliver_b).await.unwrap();
        let addr1 = b.local_addr();
        let (deliver_a, _at_a) = collector();
        let a = PeerTransport::start(config(0, any_port(), &[(1, addr1)]), deliver_a).await.unwrap();
        let sender = a.sender();
        sender.send(heartbeat(0, 1, 1), Sending::Queued);
        assert_eq!(next(&mut at_b).await, heartbeat(0, 1, 1));

        // Node 1 stops, and comes back at another address.
        b.shutdown().await;
        let (deliver_b, mut at_b) = collector();
        let b = PeerTransport::start(config(1, any_port(), &[(0, free_addr())]), deliver_b).await.unwrap();
        let addr2 = b.local_addr();
        assert_ne!(addr1, addr2);
        a.book().set([(1, addr2)].into());
        resend_until_delivered("node 0 reached node 1 at its new address", &sender, (0, 1), &mut at_b).await;
        assert_eq!(a.stats().connections_out, 2);

        // It moves again while node 0 is connected to it and the old
        // address still answers: the live, healthy connection is dropped
        // at once (nothing else would end it: not a break, not a silence)
        // for one to the new address.
        sender.send(heartbeat(0, 1, 2), Sending::Queued);
        // After the resends still on their way, which the same connection
        // delivers first.
        while next(&mut at_b).await != heartbeat(0, 1, 2) {}
        let (deliver_c, mut at_c) = collector();
        let c = PeerTransport::start(config(1, any_port(), &[(0, free_addr())]), deliver_c).await.unwrap();
        a.book().set([(1, c.local_addr())].into());
        resend_until_delivered("node 0 reached node 1 at its third address", &sender, (0, 1), &mut at_c).await;
        let stats = a.stats();
        assert_eq!((stats.connections_out, stats.connections_silent), (3, 0));
        assert_eq!(link_ids(&a), [1]);
        a.shutdown().await;
        b.shutdown().await;
        c.shutdown().await;
    }

    #[tokio::test]
    async fn a_peer_removed_from_the_book_is_refused_and_not_sent_to() {
        let a_addr = free_addr();
        let (deliver_b, mut at_b) = collector();
        let b = PeerTransport::start(config(1, any_port(), &[(0, a_addr)]), deliver_b).await.unwrap();
        let (deliver_a, mut at_a) = collector();
        let a = PeerTransport::start(config(0, a_addr, &[(1, b.local_addr())]), deliver_a).await.unwrap();
        a.sender().send(heartbeat(0, 1, 1), Sending::Queued);
        b.sender().send(heartbeat(1, 0, 2), Sending::Queued);
        assert_eq!(next(&mut at_b).await, heartbeat(0, 1, 1));
        assert_eq!(next(&mut at_a).await, heartbeat(1, 0, 2));

        a.book().set(BTreeMap::new());
        assert_eq!(link_ids(&a), [] as [NodeId; 0]);
        a.sender().send(heartbeat(0, 1, 3), Sending::Queued);
        let stats = a.stats();
        assert_eq!((stats.dropped_misaddressed, stats.queued, stats.sent), (1, 1, 1));
        // Its connection, open before the removal, is refused at its next frame.
        b.sender().send(heartbeat(1, 0, 4), Sending::Queued);
        wait_until("node 0 refused the removed node's frame", || a.stats().refused_frames >= 1).await;
        assert!(at_a.try_recv().is_err(), "a frame from a removed member was delivered");
        assert!(at_b.try_recv().is_err(), "an envelope reached a removed member");

        // Back in the book, it is sent to and admitted again.
        a.book().set([(1, b.local_addr())].into());
        assert_eq!(link_ids(&a), [1]);
        resend_until_delivered("node 0 sends to node 1 again", &a.sender(), (0, 1), &mut at_b).await;
        resend_until_delivered("node 0 admits node 1 again", &b.sender(), (1, 0), &mut at_a).await;
        a.shutdown().await;
        b.shutdown().await;
    }

    #[test]
    fn the_book_can_be_shared_with_any_thread() {
        fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        send_sync_clone::<PeerBook>();
    }

    /// Starts node 0 with one inbound connection (from node 1, identified)
    /// and one outbound connection (to a raw listener), both in use.
    async fn busy_transport() -> (PeerTransport, TcpStream, TcpStream, mpsc::UnboundedReceiver<Envelope<Command>>) {
        let peer = TcpListener::bind(any_port()).await.unwrap();
        let (deliver, mut rx) = collector();
        let a = PeerTransport::start(config(0, any_port(), &[(1, peer.local_addr().unwrap())]), deliver).await.unwrap();
        let mut inbound = connect_raw(a.local_addr()).await;
        inbound.write_all(&frames(&[heartbeat(1, 0, 1)])).await.unwrap();
        assert_eq!(next(&mut rx).await, heartbeat(1, 0, 1));
        a.sender().send(heartbeat(0, 1, 2), Sending::Queued);
        let (mut outbound, _) = tokio::time::timeout(WAIT, peer.accept()).await.unwrap().unwrap();
        assert_eq!(read_frame(&mut outbound, &mut Vec::new()).await, heartbeat(0, 1, 2));
        (a, inbound, outbound, rx)
    }

    #[tokio::test]
    async fn shutdown_ends_every_task() {
        let (a, mut inbound, mut outbound, mut rx) = busy_transport().await;
        let addr = a.local_addr();
        let sender = a.sender();
        tokio::time::timeout(WAIT, a.shutdown()).await.expect("shutdown hung");
        // Listener, reader and writer are gone with their sockets.
        TcpListener::bind(addr).await.expect("the listener port is still bound");
        assert_closed(&mut inbound).await;
        assert_closed(&mut outbound).await;
        // The deliver callback (held by the readers) is gone too.
        assert!(tokio::time::timeout(WAIT, rx.recv()).await.unwrap().is_none());
        sender.send(heartbeat(0, 1, 3), Sending::Queued);
        assert_eq!(sender.counters.snapshot(&sender.peers).dropped_closed, 1);
    }

    #[tokio::test]
    async fn dropping_the_transport_ends_every_task() {
        let (a, mut inbound, mut outbound, mut rx) = busy_transport().await;
        let addr = a.local_addr();
        drop(a);
        assert_closed(&mut inbound).await;
        assert_closed(&mut outbound).await;
        assert!(tokio::time::timeout(WAIT, rx.recv()).await.unwrap().is_none());
        // Aborted tasks end on the runtime's next turn; the listener with them.
        let deadline = tokio::time::Instant::now() + WAIT;
        while TcpListener::bind(addr).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the listener port stayed bound");
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn the_sender_can_be_shared_with_the_node_thread() {
        fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        send_sync_clone::<PeerSender>();
    }

    fn bare_sender(id: NodeId) -> PeerSender {
        let peers = Peers::new(id, 1);
        peers.set([(1, free_addr())].into());
        PeerSender { peers: Arc::new(peers), counters: Arc::default() }
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "sent a message to itself"))]
    fn sending_to_itself_is_a_bug() {
        let sender = bare_sender(0);
        sender.send(heartbeat(0, 0, 1), Sending::Queued);
        assert_eq!(sender.counters.snapshot(&sender.peers).dropped_misaddressed, 1);
    }

    #[test]
    fn sending_to_an_unknown_peer_or_after_stop_drops() {
        let sender = bare_sender(0);
        sender.send(heartbeat(0, 5, 1), Sending::Queued);
        sender.close(); // as a shutdown does
        sender.send(heartbeat(0, 1, 1), Sending::Queued);
        let stats = sender.counters.snapshot(&sender.peers);
        assert_eq!((stats.dropped_misaddressed, stats.dropped_closed, stats.queued), (1, 1, 0));
    }
}
