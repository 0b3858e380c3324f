//! The client port: a TCP listener speaking RESP2 (`specs/client.md`), so
//! `redis-cli`, `redis-benchmark` and any Redis client library can talk to a
//! raftkv server.
//!
//! Each connection is one task that reads requests, answers them in order
//! (pipelined requests are executed one after another) and never holds more
//! than [`RespLimits::request_bytes_max`] of unparsed input. A `GET`, `SET`
//! or `APPEND` becomes a [`Request`](crate::kv::Request) for the node; the reply is written only
//! once the node answers, that is once the request is committed and applied
//! (or refused: then the reply is a redirect, see [`Reply::from_result`]).
//!
//! Sessions: the request's `(client, seq)` is the one bound by a preceding
//! `RAFTKV.SESSION` (the project's clerk, whose retries are deduplicated),
//! or else the connection's own session: a random client id chosen at
//! accept time and a counter. Random, not counted from 0, because a
//! restarted server must never hand out a client id whose old session's
//! replies the state machine still remembers.

use super::client::random_client_id;
use super::config::ClusterConfig;
use super::node::{NodeHandle, Status, SubmitError};
use super::peer::PeerStatsHandle;
use super::resp::{
    ClientCommand, IfAbsentReply, MemberCommand, Reply, RespLimits, ServerCodec, SERVER_ASSIGNED_CLIENT_BIT,
};
use super::resp::{AUTH_NOT_CONFIGURED, CLUSTERDOWN, NOAUTH, TRYAGAIN, WRONGPASS};
use super::tls::{BoxStream, NodeTls};
use crate::kv::directory::{self, Addresses};
use crate::kv::{AdminError, AdminOp, AdminReply, ClientId, Command, Op, Response, ServiceError};
use crate::raft::{MembershipChange, NodeId, Refusal};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::codec::{Decoder, Encoder};

/// A running client port.
pub struct ClientPort {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    node: NodeHandle,
    /// What each peer link carried, for `INFO`.
    peers: PeerStatsHandle,
    cluster: ClusterConfig,
    limits: RespLimits,
    /// TLS on this port, server side only.
    tls: Option<Arc<NodeTls>>,
}

impl Shared {
    /// Where server `id` listens, as this server knows it now: the
    /// replicated directory, else the config file.
    fn addresses(&self, id: NodeId) -> Option<Addresses> {
        self.cluster.addresses(id, &self.node.directory())
    }

    /// The client address to redirect to for `id`.
    fn client_addr(&self, id: NodeId) -> Option<String> {
        self.addresses(id).map(|a| a.client.to_string())
    }

    /// This server's status if it leads; otherwise the redirect
    /// ([`Shared::to_leader`]).
    fn leader_status(&self) -> Result<Status, Reply> {
        let status = self.node.status();
        if status.role != Some(crate::raft::Role::Leader) {
            return Err(self.to_leader(status.leader));
        }
        Ok(status)
    }

    /// The reply to an operator's request that only the leader runs:
    /// `MOVED 0 <leader>` (slot 0: a keyless command), or `CLUSTERDOWN`
    /// when no leader is known.
    fn to_leader(&self, leader: Option<NodeId>) -> Reply {
        match leader.and_then(|id| self.client_addr(id)) {
            Some(addr) => Reply::Error(format!("MOVED 0 {addr}")),
            None => Reply::Error(CLUSTERDOWN.into()),
        }
    }
}

/// Client connections open at once (Redis's `maxclients` default); one
/// more is told `-ERR max number of clients reached` and closed. With
/// [`RespLimits`] bounding each connection's buffers, this bounds what
/// idle or slow connections can hold.
pub const CONNECTIONS_MAX: usize = 10_000;

/// How long a client has to complete its TLS handshake: a connection that
/// never does is closed, not kept.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl ClientPort {
    /// Binds `listen` and serves clients on the current tokio runtime.
    pub async fn start(
        listen: SocketAddr,
        node: NodeHandle,
        peers: PeerStatsHandle,
        cluster: ClusterConfig,
        limits: RespLimits,
        tls: Option<Arc<NodeTls>>,
    ) -> std::io::Result<ClientPort> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared { node, peers, cluster, limits, tls });
        let task = tokio::spawn(accept_loop(listener, shared, stopped));
        Ok(ClientPort { local_addr, stop, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= CONNECTIONS_MAX {
                        tracing::warn!(%peer, max = CONNECTIONS_MAX, "too many client connections; closing the new one");
                        if shared.tls.is_none() {
                            let _ = stream.try_write(b"-ERR max number of clients reached\r\n");
                        }
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    connections.spawn(handshake_and_serve(stream, peer, shared.clone()));
                }
                // Out of file descriptors and the like: log, pause (the
                // error would repeat at once), keep serving.
                Err(e) => {
                    tracing::warn!("accepting a client connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// With TLS on the port, the handshake first (bounded by
/// [`TLS_HANDSHAKE_TIMEOUT`]); a client that fails it is logged and closed.
async fn handshake_and_serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let stream: BoxStream = match &shared.tls {
        None => Box::new(stream),
        Some(tls) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept_client(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!(%peer, "refused client connection: TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "refused client connection: no TLS handshake within {TLS_HANDSHAKE_TIMEOUT:?}");
                return;
            }
        },
    };
    serve(stream, peer, shared).await
}

/// One client connection, until it closes, misbehaves or the port stops.
async fn serve(mut stream: BoxStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut codec = ServerCodec::new(shared.limits);
    let mut input = BytesMut::with_capacity(4096);
    let mut output = BytesMut::with_capacity(4096);
    let mut session = Session::new(shared.cluster.requirepass.is_none());
    loop {
        // Answer every complete request in the buffer, then flush once.
        loop {
            match codec.decode(&mut input) {
                Ok(Some(Ok(command))) => {
                    let (reply, close) = match authenticate(&command, &mut session, &shared) {
                        Some(refused) => {
                            if refused == WRONGPASS {
                                tracing::warn!(%peer, "client refused: wrong password");
                            } else {
                                tracing::debug!(%peer, "client refused: {refused}");
                            }
                            (Reply::Error(refused.into()), false)
                        }
                        None => execute(command, &mut session, &shared).await,
                    };
                    encode(&mut codec, reply, &mut output);
                    if close {
                        let _ = write_out(&mut stream, &output).await;
                        return;
                    }
                }
                Ok(Some(Err(refused))) => encode(&mut codec, refused.into(), &mut output),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, "closing client connection: {e}");
                    if let Some(reply) = e.reply() {
                        encode(&mut codec, reply, &mut output);
                    }
                    let _ = write_out(&mut stream, &output).await;
                    return;
                }
            }
        }
        if !output.is_empty() {
            if write_out(&mut stream, &output).await.is_err() {
                return;
            }
            output.clear();
        }
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Writes and flushes (a TLS stream holds the last record until flushed).
async fn write_out(stream: &mut BoxStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

fn encode(codec: &mut ServerCodec, reply: Reply, output: &mut BytesMut) {
    if let Err(e) = codec.encode(reply, output) {
        // Only a reply larger than the encoder allows; say so instead.
        tracing::warn!("reply not encodable: {e}");
        let _ = codec.encode(Reply::Error("ERR reply too large".into()), output);
    }
}

/// The `(client, seq)` the next request on this connection carries, and
/// whether the connection has authenticated.
struct Session {
    /// Set by `RAFTKV.SESSION`, used by the next request only.
    bound: Option<(ClientId, u64)>,
    own_client: ClientId,
    own_seq: u64,
    /// True from the start when no password is required.
    authenticated: bool,
}

impl Session {
    fn new(authenticated: bool) -> Session {
        // A fresh random id per connection; the top bit marks it as
        // server-assigned.
        Session { bound: None, own_client: SERVER_ASSIGNED_CLIENT_BIT | random_client_id(), own_seq: 0, authenticated }
    }

    fn next(&mut self) -> (ClientId, u64) {
        self.bound.take().unwrap_or_else(|| {
            self.own_seq += 1;
            (self.own_client, self.own_seq)
        })
    }
}

/// The password gate, Redis's way: with `requirepass` set, a connection
/// gets [`NOAUTH`] for everything but `AUTH`, `PING`, `HELLO` and `QUIT`
/// until an `AUTH` succeeds. Returns the refusal of `command`, if any
/// (an `AUTH` is answered here: `+OK` is `None`, after which
/// [`execute`] answers it).
fn authenticate(command: &ClientCommand, session: &mut Session, shared: &Shared) -> Option<&'static str> {
    let required = shared.cluster.requirepass.as_deref();
    match command {
        ClientCommand::Auth { username, password } => {
            let Some(required) = required else { return Some(AUTH_NOT_CONFIGURED) };
            let user_ok = username.as_deref().is_none_or(|u| u == "default");
            // Both compared whatever the user, so a wrong user takes as long.
            let password_ok = password.matches(required.as_bytes());
            // A failed AUTH leaves an authenticated connection as it was
            // (as in Redis).
            if user_ok && password_ok {
                session.authenticated = true;
                return None;
            }
            Some(WRONGPASS)
        }
        ClientCommand::Ping { .. } | ClientCommand::Hello | ClientCommand::Quit => None,
        _ if session.authenticated => None,
        _ => Some(NOAUTH),
    }
}

/// Runs one command; returns the reply and whether to close afterwards.
async fn execute(command: ClientCommand, session: &mut Session, shared: &Shared) -> (Reply, bool) {
    super::faults::panic_point(super::faults::Site::Client);
    if let Some(reply) = command.local_reply() {
        return (reply, command == ClientCommand::Quit);
    }
    // `SET ... NX` answers `+OK` or nil where `SETNX` answers `:1` or `:0`.
    let set_option = matches!(command, ClientCommand::SetIfAbsent { reply: IfAbsentReply::SetOption, .. });
    let op = match command.into_op() {
        Ok(op) => op,
        Err(ClientCommand::Session { client, seq }) => {
            session.bound = Some((client, seq));
            return (Reply::Ok, false);
        }
        Err(ClientCommand::Info) => return (Reply::Bulk(info(shared).into()), false),
        // Checked by `authenticate` before it got here.
        Err(ClientCommand::Auth { .. }) => return (Reply::Ok, false),
        Err(ClientCommand::Member(member)) => {
            let op = match member {
                MemberCommand::List => return (Reply::Bulk(members(shared).into()), false),
                MemberCommand::AddAt(id, at) => return (add_at(shared, id, at).await, false),
                MemberCommand::Move(id, at) => return (move_to(shared, id, at).await, false),
                MemberCommand::Add(id) => AdminOp::Change(MembershipChange::AddLearner(id)),
                MemberCommand::Promote(id) => AdminOp::PromoteWhenCaughtUp(id),
                MemberCommand::Remove(id) => AdminOp::Change(MembershipChange::Remove(id)),
            };
            return (addressed_admin(shared, op).await, false);
        }
        Err(ClientCommand::Transfer { to }) => {
            return (addressed_admin(shared, AdminOp::TransferLeadership(to)).await, false)
        }
        Err(ClientCommand::Strlen { key }) => {
            let reply = get(key, session, shared).await.map(|v| Reply::Integer(v.len() as i64));
            return (reply.unwrap_or_else(|refused| refused), false);
        }
        Err(ClientCommand::MGet { keys }) => {
            let values = get_each(keys, session, shared).await;
            let reply = values.map(|values| Reply::Array(values.into_iter().map(|v| Reply::Bulk(v.into())).collect()));
            return (reply.unwrap_or_else(|refused| refused), false);
        }
        Err(ClientCommand::Exists { keys }) => {
            let values = get_each(keys, session, shared).await;
            let reply = values.map(|values| Reply::Integer(values.iter().filter(|v| !v.is_empty()).count() as i64));
            return (reply.unwrap_or_else(|refused| refused), false);
        }
        Err(ClientCommand::Del { keys }) => return (delete_each(keys, session, shared).await, false),
        Err(other) => unreachable!("{other:?} has a local reply"),
    };
    if set_option {
        let reply = run(op, session, shared).await.map(|set| if set == "1" { Reply::Ok } else { Reply::Null });
        return (reply.unwrap_or_else(|refused| refused), false);
    }
    let (client, seq) = session.next();
    let request = Command { client, seq, op };
    let result = submit(&shared.node, request.clone()).await;
    (Reply::from_result(&request.op, result, |id| shared.client_addr(id)), false)
}

/// Runs `op` under this connection's session: the state machine's reply,
/// or the reply that refuses it (a redirect, `TRYAGAIN`, ...).
async fn run(op: Op, session: &mut Session, shared: &Shared) -> Result<String, Reply> {
    let (client, seq) = session.next();
    let request = Command { client, seq, op };
    let leader_addr = |id| shared.client_addr(id);
    submit(&shared.node, request.clone()).await.map_err(|e| Reply::from_result(&request.op, Err(e), leader_addr))
}

/// A linearizable `GET` of `key`. The multi-key reads are one such `GET`
/// per key, one after another.
async fn get(key: String, session: &mut Session, shared: &Shared) -> Result<String, Reply> {
    run(Op::Get { key }, session, shared).await
}

/// `DEL` of several keys: one deletion per key, one after another, each
/// exactly-once under its own sequence number; the first refusal ends it
/// (the keys before it stay deleted, as after a partial failure of any
/// non-atomic command). A `RAFTKV.SESSION` binds one sequence number, so
/// it cannot cover several deletions: refused.
async fn delete_each(keys: Vec<String>, session: &mut Session, shared: &Shared) -> Reply {
    if session.bound.is_some() {
        session.bound = None;
        return Reply::Error(BOUND_MULTI_KEY.into());
    }
    let mut deleted = 0;
    for key in keys {
        match run(Op::Delete { key }, session, shared).await {
            Ok(held) => deleted += i64::from(held == "1"),
            Err(refused) => return refused,
        }
    }
    Reply::Integer(deleted)
}

/// The refusal of a multi-key write after `RAFTKV.SESSION`.
const BOUND_MULTI_KEY: &str = "ERR RAFTKV.SESSION covers one single-key command; DEL of several keys cannot be bound";

/// [`get`] of each key, one after another; the first refusal ends it.
async fn get_each(keys: Vec<String>, session: &mut Session, shared: &Shared) -> Result<Vec<String>, Reply> {
    let mut values = Vec::with_capacity(keys.len());
    for key in keys {
        values.push(get(key, session, shared).await?);
    }
    Ok(values)
}

/// Hands the request to the node and waits (on a blocking thread: tickets
/// block) for its answer.
async fn submit(node: &NodeHandle, request: Command) -> Result<String, ServiceError> {
    // A stopping server names the leader it knows last (after a hand-over,
    // the one it handed to), so that its clients go there at once instead
    // of waiting out a CLUSTERDOWN.
    let status = node.status();
    let not_leader = ServiceError::NotLeader { leader: status.leader.filter(|&l| l != status.id) };
    let ticket = match node.submit(request) {
        Ok(ticket) => ticket,
        Err(SubmitError::Busy) => return Err(ServiceError::Busy),
        Err(SubmitError::Stopped) => return Err(not_leader),
    };
    match ticket.answer().await {
        Ok(Response { result, .. }) => result,
        // Shut down, or superseded: the client retries elsewhere; its
        // session makes the retry safe.
        Err(_) => Err(not_leader),
    }
}

/// [`admin`], for a request that names a server its peers must reach:
/// refused unless the address book knows where it listens. The leader's
/// book decides: a follower redirects first, since it may not yet have
/// applied an address the leader just wrote (and answered).
async fn addressed_admin(shared: &Shared, op: AdminOp) -> Reply {
    let named = match op {
        AdminOp::Change(MembershipChange::AddLearner(id) | MembershipChange::Promote(id)) => Some(id),
        AdminOp::TransferLeadership(id) | AdminOp::PromoteWhenCaughtUp(id) => Some(id),
        AdminOp::Change(MembershipChange::Remove(_)) | AdminOp::HandOver => None,
    };
    if let Some(id) = named {
        if let Err(redirect) = shared.leader_status() {
            return redirect;
        }
        if shared.addresses(id).is_none() {
            // Its peers would not know where to reach it.
            return Reply::Error(format!(
                "ERR node {id} is not in the cluster's address book; add it with its addresses: RAFTKV.MEMBER ADD {id} <peer ip:port> <client ip:port>"
            ));
        }
    }
    admin(shared, op).await
}

/// `RAFTKV.MEMBER ADD id peer client`: records where `id` listens in the
/// replicated directory, then adds it as a learner. Refused, with nothing
/// written, at a follower (a redirect), for a member, and for an address
/// another member has.
async fn add_at(shared: &Shared, id: NodeId, at: Addresses) -> Reply {
    let status = match shared.leader_status() {
        Ok(status) => status,
        Err(redirect) => return redirect,
    };
    if status.membership.contains(id) {
        return Reply::Error(format!("ERR node {id} is already a member"));
    }
    match record_addresses(shared, &status, id, at).await {
        Ok(()) => admin(shared, AdminOp::Change(MembershipChange::AddLearner(id))).await,
        Err(refused) => refused,
    }
}

/// `RAFTKV.MEMBER MOVE id peer client`: records new addresses for `id`
/// (a server whose machine moved); every server redials it there once the
/// write applies.
async fn move_to(shared: &Shared, id: NodeId, at: Addresses) -> Reply {
    let status = match shared.leader_status() {
        Ok(status) => status,
        Err(redirect) => return redirect,
    };
    match record_addresses(shared, &status, id, at).await {
        Ok(()) => Reply::Bulk(format!("node {id} is now at {} peer={}", at.client, at.peer).into()),
        Err(refused) => refused,
    }
}

/// Writes `id`'s addresses to the replicated directory: a write through
/// the log, answered once committed and applied here. `status` is the
/// leader's, as the caller checked it; an address another member has is
/// refused with nothing written (a removed server's may be reused: a new
/// machine at a dead one's address).
async fn record_addresses(shared: &Shared, status: &Status, id: NodeId, at: Addresses) -> Result<(), Reply> {
    let book = shared.cluster.address_book(&shared.node.directory());
    let taken = book.iter().find(|(&other, a)| {
        other != id && status.membership.contains(other) && (a.peer == at.peer || a.client == at.client)
    });
    if let Some((other, a)) = taken {
        let addr = if a.peer == at.peer { at.peer } else { at.client };
        return Err(Reply::Error(format!("ERR address {addr} is node {other}'s")));
    }
    // A session of its own, never reused: the write is executed once and
    // leaves nothing in the session table (a server-assigned client).
    let request =
        Command { client: SERVER_ASSIGNED_CLIENT_BIT | random_client_id(), seq: 1, op: directory::put(id, &at) };
    match submit(&shared.node, request.clone()).await {
        Ok(_) => Ok(()),
        Err(refused) => Err(Reply::from_result(&request.op, Err(refused), |id| shared.client_addr(id))),
    }
}

/// Runs an operator's request at the node and turns its outcome into the
/// reply: the result as text, or the redirect or error a client expects
/// (`specs/client.md`, "Membership").
async fn admin(shared: &Shared, op: AdminOp) -> Reply {
    let ticket = match shared.node.admin(op) {
        Ok(ticket) => ticket,
        Err(SubmitError::Busy) => return Reply::Error(TRYAGAIN.into()),
        Err(SubmitError::Stopped) => return Reply::Error(CLUSTERDOWN.into()),
    };
    let result = match ticket.answer().await {
        Ok(AdminReply { result, .. }) => result,
        // Stopping: a change may have been proposed already.
        Err(_) => Err(AdminError::OutcomeUnknown { leader: None }),
    };
    match result {
        Ok(done) => Reply::Bulk(done.to_string().into()),
        Err(AdminError::Refused(Refusal::NotLeader { leader })) => shared.to_leader(leader),
        Err(AdminError::Refused(
            refusal @ (Refusal::Busy
            | Refusal::NoCommitInTerm
            | Refusal::ChangePending { .. }
            | Refusal::Transferring { .. }
            | Refusal::CatchingUp { .. }),
        )) => Reply::Error(format!("TRYAGAIN {refusal}")),
        Err(AdminError::Refused(
            refusal @ (Refusal::BadChange(_) | Refusal::NotAVoter(_) | Refusal::NotCaughtUp { .. }),
        )) => Reply::Error(format!("ERR {refusal}")),
        Err(unknown @ AdminError::OutcomeUnknown { .. }) => Reply::Error(format!("UNKNOWN {unknown}")),
        Err(none @ AdminError::NoSuccessor) => Reply::Error(format!("ERR {none}")),
    }
}

/// Node ids separated by commas (nothing for none), for `INFO`.
fn ids(set: crate::raft::NodeSet) -> String {
    set.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(",")
}

/// `RAFTKV.MEMBER LIST`: the configuration in force at this server, its
/// leader, and who is who.
fn members(shared: &Shared) -> String {
    let s = shared.node.status();
    let leader = s.leader.map_or("none".to_string(), |l| l.to_string());
    let mut text = format!("{}\nleader: {leader}\n", s.membership);
    for id in s.membership.members().iter() {
        let role = if s.membership.is_voter(id) { "voter" } else { "learner" };
        let at = match shared.addresses(id) {
            Some(a) => format!("{} peer={}", a.client, a.peer),
            None => "(not in the address book)".to_string(),
        };
        text.push_str(&format!("{id} {role} {at}\n"));
    }
    text
}

fn info(shared: &Shared) -> String {
    let s = shared.node.status();
    let c = shared.node.counters();
    let load = |a: &crate::sync::atomic::AtomicU64| a.load(crate::sync::atomic::Ordering::Relaxed);
    let role = match s.role {
        Some(crate::raft::Role::Leader) => "master",
        _ => "slave",
    };
    let leader = s.leader.map_or("none".to_string(), |l| l.to_string());
    format!(
        "# Server\r\nredis_version:7.0.0\r\nraftkv_version:{}\r\nprocess_id:{}\r\n\r\n# Replication\r\nrole:{role}\r\n\r\n\
         # Raft\r\nraft_id:{}\r\nraft_role:{:?}\r\nraft_term:{}\r\nraft_leader:{leader}\r\n\
         raft_commit_index:{}\r\nraft_last_index:{}\r\nraft_applied_index:{}\r\nraft_first_index:{}\r\n\
         raft_fsyncs:{}\r\nraft_batches:{}\r\nraft_applied_entries:{}\r\nraft_dropped_peer_messages:{}\r\n\
         raft_rounds:{}\r\nraft_rounds_on_arrival:{}\r\n\
         raft_snapshots_taken:{}\r\nraft_snapshots_installed:{}\r\nraft_last_snapshot_bytes:{}\r\n\
         raft_snapshot_index:{}\r\nraft_voters:{}\r\nraft_learners:{}\r\nraft_matched:{}\r\n\
         raft_peer_received:{}\r\nraft_lease_reads:{}\r\nraft_reads_by_lease:{}\r\n\r\n\
         # Memory\r\nused_memory:{}\r\nused_memory_rss:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        s.id,
        s.role.unwrap_or(crate::raft::Role::Follower),
        s.term,
        s.commit_index,
        s.last_index,
        s.applied_index,
        s.first_index,
        load(&c.fsyncs),
        load(&c.batches),
        load(&c.applied),
        load(&c.dropped_peer_messages),
        load(&c.rounds),
        load(&c.rounds_on_arrival),
        load(&c.snapshots_taken),
        load(&c.snapshots_installed),
        load(&c.last_snapshot_bytes),
        s.snapshot_index,
        ids(s.membership.voters),
        ids(s.membership.learners),
        // `id=index,...`: a leader's view of each other member's log.
        s.matched.iter().flatten().map(|(id, index)| format!("{id}={index}")).collect::<Vec<_>>().join(","),
        // `id=count,...`: envelopes delivered from each peer since start
        // (a link that carries traffic again after a partition counts up).
        shared.peers.links().iter().map(|(id, link)| format!("{id}={}", link.received)).collect::<Vec<_>>().join(","),
        // Whether this cluster answers Gets under the leader lease, and how
        // many this node answered so.
        if shared.cluster.lease_reads { "on" } else { "off" },
        load(&c.reads_by_lease),
        // 0 where nothing was counted (not the raftkv binary) or unknown.
        super::memory::used_bytes().unwrap_or(0),
        super::memory::rss_bytes().unwrap_or(0),
    )
}
