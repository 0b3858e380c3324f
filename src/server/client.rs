//! The client side of the client protocol: [`RemoteClerk`], the project's
//! pure [`Clerk`] driven over RESP connections to the servers, and
//! [`ReplyCodec`], a bounded decoder of the servers' replies.
//!
//! Each operation is sent as two pipelined requests in one write,
//! `RAFTKV.SESSION <client> <seq>` and then the command, so that every
//! retry, on whatever connection and server, carries the same `(client,
//! seq)` and the servers' session table executes it at most once (see
//! `specs/client.md`).

use crate::clerk::{Clerk, ClerkAction};
use crate::kv::{ClientId, Command, Op, Response, ServiceError};
use crate::raft::NodeId;
use crate::server::resp::{encode_request, ClientCommand, Password, Reply, RespError};
use crate::server::tls::{self, BoxStream, TlsError};
use crate::wire::Limits;
use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{Decoder, Encoder};

/// Why [`RemoteClerk::run`] gave up.
#[derive(Debug)]
pub enum ClientError {
    /// The deadline passed after `attempts` sends. The operation may still
    /// take effect, once, later; the clerk has moved on to the next seq.
    Deadline { attempts: u64 },
    /// A server refused the request itself with an `-ERR` (e.g. a key over
    /// the limit); retrying would not help.
    Refused(String),
    /// A server answered something that is not a reply to this request.
    Protocol(String),
    /// The server could not be reached ([`info`] only: `run` retries).
    Io(std::io::Error),
    /// The cluster forgot this client's session (it was the least recently
    /// active of too many): the operation may have taken effect, once, or
    /// not, and is not retried. The next `run` opens a new session.
    SessionExpired,
    /// The cluster refused the operation as older than this client id's
    /// latest (`-ERR stale request`): it was not executed. Another client
    /// is using the same id; a fresh [`RemoteClerk`] draws a new one.
    StaleRequest { latest: u64 },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Deadline { attempts } => write!(f, "deadline passed after {attempts} attempts"),
            ClientError::Refused(error) => write!(f, "the server refused the request: {error}"),
            ClientError::Protocol(what) => write!(f, "protocol error: {what}"),
            ClientError::Io(e) => write!(f, "I/O error: {e}"),
            ClientError::SessionExpired => f.write_str(
                "session expired: the cluster forgot this client; the operation may or may not have taken effect",
            ),
            ClientError::StaleRequest { latest } => write!(
                f,
                "stale request: this client id's session has executed seq {latest}, so another client uses the same id; not executed"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

/// How a client reaches the servers' client ports: plain TCP, or TLS that
/// checks each server's certificate against the cluster's authority (the
/// certificate must name the address dialled, as `raftkv certs` issues
/// them: loopback addresses and `--host`s); and the password, if the
/// servers require one (`AUTH` goes first on every new connection, in the
/// same write as the first request).
#[derive(Clone, Default)]
pub struct Access {
    tls: Option<TlsConnector>,
    password: Option<Bytes>,
}

impl Access {
    /// Plain TCP.
    pub fn plain() -> Access {
        Access::default()
    }

    /// TLS, trusting the authority whose certificate is in `ca_file`
    /// (`ca.pem` from `raftkv certs`).
    pub fn tls(ca_file: &std::path::Path) -> Result<Access, TlsError> {
        Ok(Access { tls: Some(tls::client_connector(ca_file)?), password: None })
    }

    /// Authenticates every connection with `password` (`AUTH password`).
    pub fn with_password(mut self, password: impl Into<String>) -> Access {
        self.password = Some(Bytes::from(password.into()));
        self
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = self.password.as_ref().map(|_| "..");
        f.debug_struct("Access").field("tls", &self.tls.is_some()).field("password", &password).finish()
    }
}

/// Asks the server at `addr` for its `INFO` text (`field:value` lines under
/// `# Section` headers), waiting at most `timeout`.
pub async fn info(addr: SocketAddr, access: &Access, timeout: Duration) -> Result<String, ClientError> {
    let ask = async {
        let mut conn = Connection::open(addr, access).await?;
        let mut out = BytesMut::new();
        conn.begin(&mut out);
        encode_request(&ClientCommand::Info, &mut out);
        conn.send(&out).await?;
        if let Some(refusal) = conn.auth_refusal().await? {
            return Ok(Reply::Error(refusal));
        }
        conn.next_reply().await
    };
    match tokio::time::timeout(timeout, ask).await {
        Err(_elapsed) => Err(ClientError::Deadline { attempts: 1 }),
        Ok(Err(RespError::Io(e))) => Err(ClientError::Io(e)),
        Ok(Err(e)) => Err(ClientError::Protocol(e.to_string())),
        Ok(Ok(Reply::Bulk(text))) => {
            String::from_utf8(Vec::from(text)).map_err(|_| ClientError::Protocol("INFO text is not UTF-8".into()))
        }
        Ok(Ok(Reply::Error(e))) => Err(ClientError::Refused(e)),
        Ok(Ok(other)) => Err(ClientError::Protocol(format!("{other:?} in answer to INFO"))),
    }
}

/// The value of field `name` in `INFO` text (`name:value` lines), trimmed.
pub fn info_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// How long a client ([`RemoteClerk`], [`operator`]) pauses after a
/// refusal (`TRYAGAIN`, `CLUSTERDOWN`) or a server it cannot reach before
/// it asks again.
pub const REFUSAL_BACKOFF: Duration = Duration::from_millis(25);

/// How long [`RemoteClerk`] waits for an answer before it asks the other
/// servers, every [`PROBE_EVERY`], whether another leads now. A leader that
/// is paused, or cut off from its peers, answers nothing; waiting out the
/// whole attempt timeout (0.5-1 s) before trying elsewhere was most of the
/// unavailability when a leader was paused (issue 21).
pub const PROBE_AFTER: Duration = Duration::from_millis(100);
/// How often the probe asks, while the answer is still outstanding.
pub const PROBE_EVERY: Duration = Duration::from_millis(50);

/// Asks every server but `waiting_on` for its `INFO` after
/// [`PROBE_AFTER`], then every [`PROBE_EVERY`], until one says it leads in
/// the newest term any of them reports (a leader cut off from its peers
/// may still think it leads, in an older term); returns its id. Never
/// returns if none does: the caller races it against the answer it waits
/// for. One server at a time, each given `PROBE_EVERY` to answer.
async fn leader_elsewhere(addrs: Arc<[SocketAddr]>, access: Access, waiting_on: NodeId) -> NodeId {
    tokio::time::sleep(PROBE_AFTER).await;
    let mut every = tokio::time::interval(PROBE_EVERY);
    loop {
        every.tick().await;
        let mut newest: Option<(u64, Option<NodeId>)> = None;
        for (id, &addr) in addrs.iter().enumerate().filter(|&(id, _)| id != usize::from(waiting_on)) {
            let Ok(text) = info(addr, &access, PROBE_EVERY).await else { continue };
            let field = |name: &str| info_field(&text, name);
            let Some(term) = field("raft_term").and_then(|t| t.parse::<u64>().ok()) else { continue };
            let leads = (field("raft_role") == Some("Leader")).then_some(id as NodeId);
            match newest {
                Some((t, _)) if t > term => {}
                Some((t, known)) if t == term => newest = Some((t, known.or(leads))),
                _ => newest = Some((term, leads)),
            }
        }
        if let Some((_, Some(leader))) = newest {
            return leader;
        }
    }
}

/// Runs an operator's command (`RAFTKV.MEMBER`, `RAFTKV.TRANSFER`) at the
/// leader: starts at `servers[0]`, follows `MOVED`, and tries the next
/// server after `CLUSTERDOWN`, `TRYAGAIN` or a server it cannot reach, until
/// `deadline`. Returns the server's text. Never sends the command twice
/// where it may have taken effect: a connection lost after sending is an
/// error, as are `ERR` and `UNKNOWN` replies.
pub async fn operator(
    servers: &[SocketAddr],
    access: &Access,
    command: &ClientCommand,
    deadline: Instant,
) -> Result<String, ClientError> {
    let mut to = *servers.first().ok_or_else(|| ClientError::Protocol("no servers given".into()))?;
    let mut attempts = 0;
    let mut last_refusal = None;
    while Instant::now() < deadline {
        attempts += 1;
        let Ok(Ok(mut conn)) = tokio::time::timeout_at(deadline, Connection::open(to, access)).await else {
            to = next_server(servers, to);
            tokio::time::sleep(REFUSAL_BACKOFF).await;
            continue;
        };
        let mut out = BytesMut::new();
        conn.begin(&mut out);
        encode_request(command, &mut out);
        conn.send(&out).await.map_err(ClientError::Io)?;
        let replies = async {
            match conn.auth_refusal().await? {
                Some(refusal) => Ok(Reply::Error(refusal)),
                None => conn.next_reply().await,
            }
        };
        let reply = match tokio::time::timeout_at(deadline, replies).await {
            Err(_elapsed) => return Err(ClientError::Deadline { attempts }),
            Ok(Err(RespError::Io(e))) => return Err(ClientError::Io(e)),
            Ok(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
            Ok(Ok(reply)) => reply,
        };
        let error = match reply {
            Reply::Bulk(text) => {
                return String::from_utf8(Vec::from(text))
                    .map_err(|_| ClientError::Protocol("text is not UTF-8".into()))
            }
            Reply::Error(error) => error,
            other => return Err(ClientError::Protocol(format!("{other:?} in answer to {command:?}"))),
        };
        let (code, rest) = error.split_once(' ').unwrap_or((&error, ""));
        match code {
            "MOVED" => match rest.split_once(' ').and_then(|(_slot, addr)| addr.parse().ok()) {
                Some(leader) => to = leader,
                None => return Err(ClientError::Protocol(format!("a redirect without an address: {error}"))),
            },
            "CLUSTERDOWN" | "TRYAGAIN" => {
                last_refusal = Some(error.clone());
                if code == "CLUSTERDOWN" {
                    to = next_server(servers, to);
                }
                tokio::time::sleep(REFUSAL_BACKOFF).await;
            }
            _ => return Err(ClientError::Refused(error)),
        }
    }
    match last_refusal {
        Some(error) => Err(ClientError::Refused(format!("{error} (gave up after {attempts} attempts)"))),
        None => Err(ClientError::Deadline { attempts }),
    }
}

/// The server after `to` in `servers` (the first if `to` is not listed).
fn next_server(servers: &[SocketAddr], to: SocketAddr) -> SocketAddr {
    servers[servers.iter().position(|&a| a == to).map_or(0, |i| (i + 1) % servers.len())]
}

/// Decodes the replies a server sends (and encodes requests, for use with
/// `Framed`). Bounded like the server's codec: a reply over
/// `reply_bytes_max`, nested deeper than [`ReplyCodec::DEPTH_MAX`] or with
/// more than [`ReplyCodec::ELEMENTS_MAX`] elements is an error before it is
/// buffered or parsed, whatever it declares.
///
/// Decoded replies are normalised: `+OK` is [`Reply::Ok`] and `+PONG`
/// [`Reply::Pong`].
#[derive(Clone, Debug)]
pub struct ReplyCodec {
    reply_bytes_max: usize,
}

impl ReplyCodec {
    /// 1 MiB plus the largest value.
    pub const REPLY_BYTES_MAX_DEFAULT: usize = (1 << 20) + Limits::VALUE_BYTES_MAX_DEFAULT;
    /// Nesting of arrays in one reply.
    pub const DEPTH_MAX: usize = 8;
    /// Elements of all the arrays of one reply together.
    pub const ELEMENTS_MAX: u64 = 4096;
    /// Longest `$`, `*` or `:` header line, CRLF included.
    const HEADER_LINE_MAX: usize = 32;

    pub fn new(reply_bytes_max: usize) -> ReplyCodec {
        ReplyCodec { reply_bytes_max }
    }
}

impl Default for ReplyCodec {
    fn default() -> Self {
        ReplyCodec::new(ReplyCodec::REPLY_BYTES_MAX_DEFAULT)
    }
}

/// Scans the reply starting at `pos`: `Ok(Some(end))` when complete,
/// `Ok(None)` when more bytes are needed. Reads only headers and lines; jumps
/// over bulk data.
fn scan_reply(buf: &[u8], pos: usize, depth: usize, elements: &mut u64, max: usize) -> Result<Option<usize>, String> {
    let Some(&kind) = buf.get(pos) else { return Ok(None) };
    let line = |line_max: usize| -> Result<Option<usize>, String> {
        let window_end = pos.saturating_add(line_max).min(max);
        let window = &buf[pos..buf.len().min(window_end)];
        match window.windows(2).position(|w| w == b"\r\n") {
            Some(at) => Ok(Some(pos + at + 2)),
            None if buf.len() < window_end => Ok(None),
            None => Err(format!("a reply line longer than {} bytes", window_end - pos)),
        }
    };
    match kind {
        b'+' | b'-' => line(max),
        b':' => line(ReplyCodec::HEADER_LINE_MAX),
        b'$' | b'*' => {
            let Some(line_end) = line(ReplyCodec::HEADER_LINE_MAX)? else { return Ok(None) };
            let digits = &buf[pos + 1..line_end - 2];
            if digits == b"-1" {
                return Ok(Some(line_end));
            }
            let n = std::str::from_utf8(digits)
                .ok()
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()) && !d.is_empty())
                .and_then(|d| d.parse::<u64>().ok())
                .ok_or_else(|| "an invalid length in a reply".to_string())?;
            if kind == b'$' {
                let end = (line_end as u64).saturating_add(n).saturating_add(2);
                if end > max as u64 {
                    return Err(format!("a reply of at least {end} bytes exceeds {max}"));
                }
                let end = end as usize;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err("a bulk string not followed by CRLF".into());
                }
                return Ok(Some(end));
            }
            if depth >= ReplyCodec::DEPTH_MAX {
                return Err(format!("a reply nested deeper than {}", ReplyCodec::DEPTH_MAX));
            }
            *elements = elements.saturating_add(n);
            if *elements > ReplyCodec::ELEMENTS_MAX {
                return Err(format!("a reply of more than {} elements", ReplyCodec::ELEMENTS_MAX));
            }
            let mut at = line_end;
            for _ in 0..n {
                match scan_reply(buf, at, depth + 1, elements, max)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        other => Err(format!("a reply starting with byte {other:#04x}")),
    }
}

fn to_reply(frame: BytesFrame) -> Result<Reply, RespError> {
    let text = |bytes: Bytes| {
        String::from_utf8(Vec::from(bytes)).map_err(|_| RespError::Protocol("a simple string that is not UTF-8".into()))
    };
    Ok(match frame {
        BytesFrame::SimpleString(s) if &s[..] == b"OK" => Reply::Ok,
        BytesFrame::SimpleString(s) if &s[..] == b"PONG" => Reply::Pong,
        BytesFrame::SimpleString(s) => Reply::Simple(text(s)?),
        BytesFrame::Error(e) => Reply::Error(e.to_string()),
        BytesFrame::Integer(n) => Reply::Integer(n),
        BytesFrame::BulkString(b) => Reply::Bulk(b),
        BytesFrame::Null => Reply::Null,
        BytesFrame::Array(items) => Reply::Array(items.into_iter().map(to_reply).collect::<Result<_, _>>()?),
    })
}

impl Decoder for ReplyCodec {
    type Item = Reply;
    type Error = RespError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, RespError> {
        let max = self.reply_bytes_max;
        let Some(len) = scan_reply(src, 0, 0, &mut 0, max).map_err(RespError::Protocol)? else {
            if src.len() > max {
                return Err(RespError::TooLarge { bytes: src.len() as u64, max });
            }
            return Ok(None);
        };
        // Checked: complete, within the bounds. The crate parses it.
        let mut frame = src.split_to(len);
        let decoded = redis_protocol::resp2::decode::decode_bytes_mut(&mut frame)
            .map_err(|e| RespError::Protocol(format!("the RESP parser refused a checked reply: {e:?}")))?;
        match decoded {
            Some((frame, used, _)) if used == len => to_reply(frame).map(Some),
            _ => Err(RespError::Protocol("the RESP parser read a checked reply differently".into())),
        }
    }
}

impl Encoder<&ClientCommand> for ReplyCodec {
    type Error = RespError;

    fn encode(&mut self, cmd: &ClientCommand, dst: &mut BytesMut) -> Result<(), RespError> {
        encode_request(cmd, dst);
        Ok(())
    }
}

/// One connection to a server: the socket and its read buffer.
///
/// (A `Framed` would do the same, but reading from it needs the `futures`
/// `Stream` trait, which is not a dependency.)
struct Connection {
    stream: BoxStream,
    read: BytesMut,
    codec: ReplyCodec,
    /// The password, until `AUTH` has been sent.
    unsent_auth: Option<Bytes>,
    /// `AUTH` was sent and its reply not read yet.
    auth_due: bool,
}

impl Connection {
    async fn open(addr: SocketAddr, access: &Access) -> Result<Connection, RespError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream: BoxStream = match &access.tls {
            None => Box::new(tcp),
            Some(connector) => Box::new(connector.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?),
        };
        Ok(Connection {
            stream,
            read: BytesMut::with_capacity(4096),
            codec: ReplyCodec::default(),
            unsent_auth: access.password.clone(),
            auth_due: false,
        })
    }

    /// Starts the next write: on a new connection that must authenticate,
    /// `AUTH` goes first.
    fn begin(&mut self, out: &mut BytesMut) {
        if let Some(password) = self.unsent_auth.take() {
            encode_request(&ClientCommand::Auth { username: None, password: Password(password) }, out);
            self.auth_due = true;
        }
    }

    /// Reads the reply to `AUTH` if one is due: `Some(error)` if the server
    /// refused it (then this connection is of no further use).
    async fn auth_refusal(&mut self) -> Result<Option<String>, RespError> {
        if !std::mem::take(&mut self.auth_due) {
            return Ok(None);
        }
        match self.next_reply().await? {
            Reply::Ok => Ok(None),
            Reply::Error(error) => Ok(Some(error)),
            other => Err(RespError::Protocol(format!("{other:?} in answer to AUTH"))),
        }
    }

    /// Writes and flushes (TLS holds the last record until flushed).
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    async fn next_reply(&mut self) -> Result<Reply, RespError> {
        loop {
            if let Some(reply) = self.codec.decode(&mut self.read)? {
                return Ok(reply);
            }
            if self.stream.read_buf(&mut self.read).await? == 0 {
                let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection");
                return Err(RespError::Io(e));
            }
        }
    }
}

/// What one exchange with a server came to.
enum Outcome {
    /// The server answered the request.
    Answered(Result<String, ServiceError>),
    /// The server refused the request itself.
    Refused(String),
}

/// How many servers a [`RemoteClerk`] learns from redirects, beyond the
/// addresses it was given: enough for every member of a cluster to move
/// a few times over its life, and a bound on what a lying server can make
/// a client hold.
pub const LEARNED_SERVERS_MAX: usize = 16;

/// A client of a raftkv cluster over the network: the pure [`Clerk`] (retry
/// logic, leader tracking, `(client, seq)`), driven over RESP connections.
///
/// One operation at a time. Connections are opened lazily, one per server,
/// and dropped after any timeout or I/O error, so a late reply on them can
/// never be taken for the reply to a later request. A redirect to an
/// address it was not given adds that server (`RemoteClerk::learn`).
pub struct RemoteClerk {
    clerk: Clerk,
    /// Client address of server `i` at index `i`.
    addrs: Arc<[SocketAddr]>,
    conns: Vec<Option<Connection>>,
    attempt_timeout: Duration,
    /// How many addresses `new` was given; those past them were learned
    /// from redirects ([`RemoteClerk::learn`]).
    given: usize,
    /// Sends in a row that failed with an I/O error: once every server has
    /// failed so, the next failure waits for the attempt's timeout rather
    /// than spinning through a cluster that is down.
    io_failures: usize,
    /// Attempts that ended by waiting out the attempt timeout.
    waits: u64,
    access: Access,
}

impl RemoteClerk {
    /// A clerk for client `client` (below 2^127: higher ids are
    /// server-assigned) of the servers at `addrs` (their client ports,
    /// index = server id), trying `first_guess` first and waiting
    /// `attempt_timeout` for each answer.
    ///
    /// Panics if `addrs` is empty or longer than 255, or `first_guess` is
    /// not an index of it.
    pub fn new(
        client: ClientId,
        addrs: Vec<SocketAddr>,
        first_guess: NodeId,
        attempt_timeout: Duration,
    ) -> RemoteClerk {
        let servers = u8::try_from(addrs.len()).expect("at most 255 servers");
        let conns = addrs.iter().map(|_| None).collect();
        RemoteClerk {
            clerk: Clerk::new(client, servers, first_guess),
            given: addrs.len(),
            addrs: addrs.into(),
            conns,
            attempt_timeout,
            io_failures: 0,
            waits: 0,
            access: Access::plain(),
        }
    }

    /// A redirect named a server at an address the clerk was not given (a
    /// server added or moved since: `RAFTKV.MEMBER ADD id peer client`,
    /// `MOVE`): it becomes the next server, tried like the others. At most
    /// [`LEARNED_SERVERS_MAX`] are learned; past that a redirect to an
    /// unknown address counts as `CLUSTERDOWN`, as it always did.
    fn learn(&mut self, addr: SocketAddr) -> Option<NodeId> {
        if self.addrs.len() >= self.given + LEARNED_SERVERS_MAX {
            return None;
        }
        let id = self.clerk.add_server()?;
        tracing::debug!(%addr, id, "learned a server from a redirect");
        self.addrs = self.addrs.iter().copied().chain([addr]).collect();
        self.conns.push(None);
        Some(id)
    }

    /// Reaches the servers as `access` says (plain TCP by default).
    pub fn with_access(mut self, access: Access) -> RemoteClerk {
        self.access = access;
        self
    }

    pub fn client(&self) -> ClientId {
        self.clerk.client()
    }

    /// How many attempts so far ended by waiting out the attempt timeout:
    /// no answer in time, a back-off (the cluster was busy or leaderless),
    /// or an I/O error from every server in turn. A redirect or a single
    /// server's I/O error moves on at once and does not count.
    pub fn waits(&self) -> u64 {
        self.waits
    }

    /// Runs one operation to completion, following the pure clerk: sends
    /// `RAFTKV.SESSION client seq` and the command in one write, reads both
    /// replies, and turns the second into a [`Response`]: `MOVED <slot>
    /// <addr>` is `NotLeader` naming the server with that address,
    /// `CLUSTERDOWN` is `NotLeader` naming none, `TRYAGAIN` is `Busy`; a
    /// timeout or an I/O error is the clerk's timeout. Retries until done,
    /// or until `deadline` passes.
    ///
    /// Returns a `GET`'s value (`""` for a missing key) or `""` for a write.
    /// After an error the operation's outcome is unknown (it may still take
    /// effect, once); the next `run` uses the next seq.
    pub async fn run(&mut self, op: Op, deadline: Instant) -> Result<String, ClientError> {
        let mut action = self.clerk.start(op.clone());
        let mut attempts = 0;
        // Sends of the current seq. One send over TCP is proposed at most
        // once, so a "session expired" answering the only send means the
        // command did not run: it is safe to run it again under a seq above
        // what the cluster forgot (a new clerk, numbered from 0, meets this
        // once the cluster has forgotten any session).
        let mut sends_of_seq = 0;
        loop {
            let (to, request, attempt) = match action {
                ClerkAction::Done { output, .. } => return Ok(output),
                ClerkAction::Expired { .. } if sends_of_seq == 1 => {
                    sends_of_seq = 0;
                    action = self.clerk.start(op.clone());
                    continue;
                }
                ClerkAction::Expired { .. } => return Err(ClientError::SessionExpired),
                ClerkAction::Stale { latest, .. } => return Err(ClientError::StaleRequest { latest }),
                ClerkAction::Send { to, request, attempt } => (to, request, attempt),
            };
            sends_of_seq += 1;
            if Instant::now() >= deadline {
                self.abandon(to, &request);
                return Err(ClientError::Deadline { attempts });
            }
            attempts += 1;
            let sent = Instant::now();
            let attempt_deadline = (sent + self.attempt_timeout).min(deadline);
            // A connection kept from an earlier exchange may have died
            // since, unseen (its server restarted): failing on it says
            // nothing about the server now.
            let reused = self.conns[to as usize].is_some();
            let probe = leader_elsewhere(self.addrs.clone(), self.access.clone(), to);
            let exchange = tokio::select! {
                biased;
                exchange = tokio::time::timeout_at(attempt_deadline, self.exchange(to, &request)) => exchange,
                leader = probe => {
                    // Another server leads now: what `to` would have
                    // answered had it been able to. Its connection is
                    // mid-exchange: drop it.
                    tracing::debug!(client = %self.client(), seq = request.seq, to, leader, "the probe found a leader elsewhere");
                    self.conns[to as usize] = None;
                    Ok(Ok(Outcome::Answered(Err(ServiceError::NotLeader { leader: Some(leader) }))))
                }
            };
            let next = match exchange {
                Ok(Ok(Outcome::Answered(result))) => {
                    tracing::debug!(client = %self.client(), seq = request.seq, to, ?result, "answered");
                    self.io_failures = 0;
                    let response = Response { client: request.client, seq: request.seq, result };
                    match self.clerk.on_response(to, response) {
                        Some(next) => Some(next),
                        None => {
                            // Refused (busy, or no leader known): the clerk
                            // backs off until its timeout, which here is a
                            // short pause, not the attempt's whole timeout:
                            // a leader handing over refuses writes for a few
                            // milliseconds, an election lasts a fraction of
                            // a second, and a client waiting out a whole
                            // second after each was most of the unavailability
                            // measured (specs/performance.md, "Leader
                            // hand-over").
                            self.waits += 1;
                            tokio::time::sleep_until((Instant::now() + REFUSAL_BACKOFF).min(attempt_deadline)).await;
                            self.clerk.on_timeout(attempt)
                        }
                    }
                }
                Ok(Ok(Outcome::Refused(error))) => {
                    self.abandon(to, &request);
                    return Err(ClientError::Refused(error));
                }
                Ok(Err(RespError::Io(error))) if reused => {
                    // Ask the same server again at once, on a new
                    // connection (the session makes the resend safe).
                    tracing::debug!(client = %self.client(), seq = request.seq, to, %error, "a kept connection had died");
                    self.conns[to as usize] = None;
                    Some(ClerkAction::Send { to, request, attempt })
                }
                Ok(Err(RespError::Io(error))) => {
                    tracing::debug!(client = %self.client(), seq = request.seq, to, %error, "I/O error");
                    self.conns[to as usize] = None;
                    self.io_failures += 1;
                    if self.io_failures >= self.addrs.len() {
                        // Every server refused or dropped a new connection
                        // in turn: pause before the next round, briefly
                        // (a refused connection is a quick, definite
                        // answer, and a restarted server listens again
                        // within milliseconds). Waiting out the attempt
                        // timeout here, and again after every failure that
                        // followed, kept clients away from a new leader
                        // for a second after a leader was killed beside a
                        // restarting server (issue 21).
                        tracing::debug!(client = %self.client(), "no server reachable: pausing");
                        self.waits += 1;
                        self.io_failures = 0;
                        tokio::time::sleep_until((Instant::now() + REFUSAL_BACKOFF).min(attempt_deadline)).await;
                    }
                    self.clerk.on_timeout(attempt)
                }
                Ok(Err(error)) => {
                    self.conns[to as usize] = None;
                    self.abandon(to, &request);
                    return Err(ClientError::Protocol(format!("server {to}: {error}")));
                }
                Err(_elapsed) => {
                    tracing::debug!(client = %self.client(), seq = request.seq, to, waited_ms = sent.elapsed().as_millis() as u64, "no answer in time");
                    self.conns[to as usize] = None;
                    self.waits += 1;
                    self.clerk.on_timeout(attempt)
                }
            };
            action = next.expect("the clerk always resends after the timeout of its latest attempt");
        }
    }

    /// Gives up the outstanding operation: the clerk is told it completed,
    /// so the next operation takes the next seq. The session table then
    /// never executes the abandoned one after the next one (a lower seq is
    /// never executed once a higher one has been), so it takes effect at most
    /// once, and if it does, before the next operation.
    fn abandon(&mut self, to: NodeId, request: &Command) {
        let done = Response { client: request.client, seq: request.seq, result: Ok(String::new()) };
        let action = self.clerk.on_response(to, done);
        debug_assert!(matches!(action, Some(ClerkAction::Done { .. })), "{action:?}");
        debug_assert!(self.clerk.pending().is_none());
    }

    /// Sends `request` to server `to` and reads its answer.
    async fn exchange(&mut self, to: NodeId, request: &Command) -> Result<Outcome, RespError> {
        let slot = &mut self.conns[to as usize];
        if slot.is_none() {
            *slot = Some(Connection::open(self.addrs[to as usize], &self.access).await?);
        }
        let Some(conn) = slot.as_mut() else { unreachable!("opened above") };
        let mut out = BytesMut::new();
        conn.begin(&mut out);
        encode_request(&ClientCommand::Session { client: request.client, seq: request.seq }, &mut out);
        encode_request(&ClientCommand::of_op(&request.op), &mut out);
        conn.send(&out).await?;
        if let Some(refusal) = conn.auth_refusal().await? {
            self.conns[to as usize] = None;
            return Ok(Outcome::Refused(refusal));
        }
        match conn.next_reply().await? {
            Reply::Ok => {}
            Reply::Error(error) => {
                // The second reply is still due; this connection is done.
                self.conns[to as usize] = None;
                return Ok(Outcome::Refused(error));
            }
            other => return Err(RespError::Protocol(format!("{other:?} in answer to RAFTKV.SESSION"))),
        }
        let reply = conn.next_reply().await?;
        self.outcome(&request.op, reply)
    }

    /// What a reply to `op` says.
    fn outcome(&mut self, op: &Op, reply: Reply) -> Result<Outcome, RespError> {
        let unexpected = |reply: Reply| RespError::Protocol(format!("{reply:?} in answer to {op:?}"));
        match (op, reply) {
            (Op::Get { .. }, Reply::Bulk(value)) => String::from_utf8(Vec::from(value))
                .map(|v| Outcome::Answered(Ok(v)))
                .map_err(|_| RespError::Protocol("a value that is not UTF-8".into())),
            (Op::Get { .. }, Reply::Null) => Ok(Outcome::Answered(Ok(String::new()))),
            (Op::Put { .. } | Op::Append { .. }, Reply::Ok) => Ok(Outcome::Answered(Ok(String::new()))),
            (Op::Delete { .. } | Op::PutIfAbsent { .. }, Reply::Integer(n @ (0 | 1))) => {
                Ok(Outcome::Answered(Ok(n.to_string())))
            }
            (_, Reply::Error(error)) => {
                Ok(self.redirect(&error).map(Outcome::Answered).unwrap_or(Outcome::Refused(error)))
            }
            (_, other) => Err(unexpected(other)),
        }
    }

    /// The refusal an error line stands for, if it is a redirect or an
    /// expired session.
    fn redirect(&mut self, error: &str) -> Option<Result<String, ServiceError>> {
        if let Some(rest) = error.strip_prefix(crate::server::resp::SESSION_EXPIRED) {
            let forgotten = rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
            return Some(Err(ServiceError::SessionExpired { forgotten }));
        }
        if let Some(rest) = error.strip_prefix(crate::server::resp::STALE_REQUEST) {
            let latest = rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
            return Some(Err(ServiceError::StaleRequest { latest }));
        }
        let (code, rest) = error.split_once(' ').unwrap_or((error, ""));
        match code {
            "MOVED" => {
                let addr = rest.split_once(' ').map_or("", |(_slot, addr)| addr);
                let leader = self
                    .addrs
                    .iter()
                    .position(|a| addr.parse::<SocketAddr>().is_ok_and(|p| p == *a) || a.to_string() == addr)
                    .and_then(|i| NodeId::try_from(i).ok())
                    .or_else(|| self.learn(addr.parse().ok()?));
                Some(Err(ServiceError::NotLeader { leader }))
            }
            "CLUSTERDOWN" => Some(Err(ServiceError::NotLeader { leader: None })),
            "TRYAGAIN" => Some(Err(ServiceError::Busy)),
            _ => None,
        }
    }
}

impl fmt::Debug for RemoteClerk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteClerk")
            .field("clerk", &self.clerk)
            .field("addrs", &self.addrs)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

/// A fresh random client id for a clerk session: 127 bits from the
/// operating system's random source, below
/// [`SERVER_ASSIGNED_CLIENT_BIT`](super::resp::SERVER_ASSIGNED_CLIENT_BIT)
/// (servers set that bit on the ids they assign to plain connections).
/// Drawn afresh for every session, never derived from a seed, so that
/// sessions of different clients, processes and runs cannot collide in
/// practice (see [`ClientId`] for the odds).
///
/// Panics if the operating system has no randomness to give: a clerk
/// without a unique id could corrupt another client's session.
pub fn random_client_id() -> ClientId {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    u128::from_le_bytes(bytes) >> 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::resp::ServerCodec;
    use std::sync::{Arc, Mutex};
    use tokio::net::TcpListener;
    use tokio::task::JoinSet;

    /// What a fake server does with one request.
    enum Act {
        Reply(Reply),
        /// Read on, answer nothing.
        Silent,
        /// Close the connection.
        Close,
    }

    type Log = Arc<Mutex<Vec<ClientCommand>>>;

    /// A fake server: every request it reads is logged and given to its
    /// script. Dropping it stops its accept loop and every connection task.
    struct Fake {
        log: Log,
        tasks: JoinSet<()>,
    }

    impl Fake {
        /// Stops it, as a restart would, and returns once its port is free
        /// (its connections close as their tasks are dropped).
        async fn stop(mut self) {
            self.tasks.shutdown().await;
        }
    }

    async fn bind() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        (listener, addr)
    }

    fn fake(listener: TcpListener, script: impl Fn(&ClientCommand) -> Act + Send + Sync + 'static) -> Fake {
        let log: Log = Arc::default();
        let script = Arc::new(script);
        let mut tasks = JoinSet::new();
        let accept_log = log.clone();
        tasks.spawn(async move {
            // Connection tasks live in this set, dropped (and aborted) with
            // the accept task.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (log, script) = (accept_log.clone(), script.clone());
                conns.spawn(async move { serve(stream, log, move |c| script(c)).await });
            }
        });
        Fake { log, tasks }
    }

    async fn serve(mut stream: TcpStream, log: Log, script: impl Fn(&ClientCommand) -> Act) {
        let mut codec = ServerCodec::default();
        let mut buf = BytesMut::new();
        loop {
            while let Some(request) = codec.decode(&mut buf).expect("the clerk sends valid RESP") {
                let cmd = request.expect("the clerk sends valid commands");
                log.lock().unwrap().push(cmd.clone());
                match script(&cmd) {
                    Act::Reply(reply) => {
                        let mut out = BytesMut::new();
                        codec.encode(reply, &mut out).expect("encodable");
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                    Act::Silent => {}
                    Act::Close => return,
                }
            }
            if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
        }
    }

    fn session(client: ClientId, seq: u64) -> ClientCommand {
        ClientCommand::Session { client, seq }
    }

    fn set(key: &str, value: &str) -> ClientCommand {
        ClientCommand::Set { key: key.into(), value: value.into() }
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put { key: key.into(), value: value.into() }
    }

    /// The usual answers: `+OK` to the session and writes, `v` to reads.
    fn healthy(cmd: &ClientCommand) -> Act {
        match cmd {
            ClientCommand::Get { .. } => Act::Reply(Reply::Bulk(Bytes::from_static(b"v"))),
            _ => Act::Reply(Reply::Ok),
        }
    }

    fn soon(seconds: u64) -> Instant {
        Instant::now() + Duration::from_secs(seconds)
    }

    /// Server `a` redirects every command to `b`, which serves.
    async fn a_redirects_to_b() -> (SocketAddr, Fake, SocketAddr, Fake) {
        let (a_listener, a) = bind().await;
        let (b_listener, b) = bind().await;
        let moved = format!("MOVED 12182 {b}");
        let server_a = fake(a_listener, move |cmd| match cmd {
            ClientCommand::Session { .. } => Act::Reply(Reply::Ok),
            _ => Act::Reply(Reply::Error(moved.clone())),
        });
        (a, server_a, b, fake(b_listener, healthy))
    }

    #[tokio::test]
    async fn follows_moved_then_remembers_the_leader() {
        let (a, server_a, b, server_b) = a_redirects_to_b().await;
        let mut clerk = RemoteClerk::new(7, vec![a, b], 0, Duration::from_secs(10));

        assert_eq!(clerk.run(put("foo", "x"), soon(20)).await.expect("done"), "");
        assert_eq!(clerk.waits(), 0, "a redirect is followed at once, not waited out");
        assert_eq!(*server_a.log.lock().unwrap(), [session(7, 1), set("foo", "x")]);
        assert_eq!(*server_b.log.lock().unwrap(), [session(7, 1), set("foo", "x")], "the retry keeps its seq");

        let got = clerk.run(Op::Get { key: "foo".into() }, soon(20)).await.expect("done");
        assert_eq!(got, "v");
        assert_eq!(server_a.log.lock().unwrap().len(), 2, "the leader was remembered");
        assert_eq!(server_b.log.lock().unwrap()[2..], [session(7, 2), ClientCommand::Get { key: "foo".into() }]);
    }

    /// A redirect to an address the clerk was not given (a server added or
    /// moved since it started) is followed: the server is learned, and
    /// remembered as the leader.
    #[tokio::test]
    async fn follows_moved_to_a_server_it_was_not_given() {
        let (a, server_a, _, server_b) = a_redirects_to_b().await;
        let mut clerk = RemoteClerk::new(7, vec![a], 0, Duration::from_secs(10));

        assert_eq!(clerk.run(put("foo", "x"), soon(20)).await.expect("done"), "");
        assert_eq!(clerk.waits(), 0, "a redirect is followed at once, not waited out");
        assert_eq!(*server_b.log.lock().unwrap(), [session(7, 1), set("foo", "x")], "the retry keeps its seq");
        assert_eq!(clerk.run(Op::Get { key: "foo".into() }, soon(20)).await.expect("done"), "v");
        assert_eq!(server_a.log.lock().unwrap().len(), 2, "the learned leader was remembered");
    }

    /// What a client learns from redirects is bounded: past
    /// `LEARNED_SERVERS_MAX` new addresses, a redirect to yet another one
    /// counts as no leader known.
    #[test]
    fn servers_learned_from_redirects_are_bounded() {
        let given: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut clerk = RemoteClerk::new(7, vec![given], 0, Duration::from_secs(1));
        for port in 0..LEARNED_SERVERS_MAX as u16 {
            let redirect = clerk.redirect(&format!("MOVED 1 127.0.0.2:{}", 1000 + port));
            assert_eq!(redirect, Some(Err(ServiceError::NotLeader { leader: Some(1 + port as NodeId) })));
        }
        let again = clerk.redirect("MOVED 1 127.0.0.2:1000");
        assert_eq!(
            again,
            Some(Err(ServiceError::NotLeader { leader: Some(1) })),
            "a known address is not learned twice"
        );
        let past = clerk.redirect("MOVED 1 127.0.0.3:1");
        assert_eq!(past, Some(Err(ServiceError::NotLeader { leader: None })));
        assert_eq!(clerk.redirect("MOVED 1 not-an-address"), Some(Err(ServiceError::NotLeader { leader: None })));
        assert_eq!(clerk.addrs.len(), 1 + LEARNED_SERVERS_MAX);
        assert_eq!(clerk.conns.len(), 1 + LEARNED_SERVERS_MAX);
    }

    /// A cluster that forgot sessions up to index 5: a new clerk's first
    /// command (seq 1) is refused on its only send, so it did not run, and
    /// the clerk runs it again as seq 6. A refusal after more than one send
    /// may answer a retry of a command that ran: that is reported.
    #[tokio::test]
    async fn an_expired_session_is_renumbered_only_when_the_command_surely_did_not_run() {
        let (listener, addr) = bind().await;
        let expired = Reply::Error(format!("{} 5: ...)", crate::server::resp::SESSION_EXPIRED));
        let bound = Arc::new(std::sync::Mutex::new(0));
        let seen = bound.clone();
        let server = fake(listener, move |cmd| match cmd {
            ClientCommand::Session { seq, .. } => {
                *seen.lock().unwrap() = *seq;
                Act::Reply(Reply::Ok)
            }
            _ if *seen.lock().unwrap() <= 5 => Act::Reply(expired.clone()),
            _ => Act::Reply(Reply::Ok),
        });
        let mut clerk = RemoteClerk::new(7, vec![addr], 0, Duration::from_secs(10));
        assert_eq!(clerk.run(put("k", "x"), soon(20)).await.expect("done"), "");
        assert_eq!(*server.log.lock().unwrap(), [session(7, 1), set("k", "x"), session(7, 6), set("k", "x")]);
        assert_eq!(*bound.lock().unwrap(), 6);

        // The same refusal after two sends of one seq: reported, not rerun.
        let (listener, addr) = bind().await;
        let sends = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = sends.clone();
        let expired = Reply::Error(format!("{} 5: ...)", crate::server::resp::SESSION_EXPIRED));
        let _server = fake(listener, move |cmd| match cmd {
            ClientCommand::Session { .. } => Act::Reply(Reply::Ok),
            _ if counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 => {
                Act::Reply(Reply::Error(crate::server::resp::TRYAGAIN.into()))
            }
            _ => Act::Reply(expired.clone()),
        });
        let mut clerk = RemoteClerk::new(8, vec![addr], 0, Duration::from_millis(50));
        assert!(matches!(clerk.run(put("k", "x"), soon(20)).await, Err(ClientError::SessionExpired)));
        assert_eq!(sends.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    /// The server's refusal of a seq older than the session's latest
    /// (`Reply::from_result` of `StaleRequest`) reaches the caller as an
    /// error, after one send: never retried, never reported as done.
    #[tokio::test]
    async fn a_stale_refusal_is_reported_not_retried() {
        let (listener, addr) = bind().await;
        let stale = Reply::from_result(&put("k", "x"), Err(ServiceError::StaleRequest { latest: 12 }), |_| None);
        let server = fake(listener, move |cmd| match cmd {
            ClientCommand::Session { .. } => Act::Reply(Reply::Ok),
            _ => Act::Reply(stale.clone()),
        });
        let mut clerk = RemoteClerk::new(7, vec![addr], 0, Duration::from_secs(10));
        let result = clerk.run(put("k", "x"), soon(20)).await;
        assert!(matches!(result, Err(ClientError::StaleRequest { latest: 12 })), "{result:?}");
        assert_eq!(*server.log.lock().unwrap(), [session(7, 1), set("k", "x")]);
    }

    /// A leader that answers nothing (paused, or cut off from its peers):
    /// the clerk asks the others and moves to the one that leads in the
    /// newest term, long before its 10 s attempt timeout. Server 1 still
    /// claims to lead in an older term (a deposed leader that has not
    /// noticed); server 2 leads in the newest. Without the probe the
    /// operation would wait out the attempt timeout, past the deadline.
    #[tokio::test]
    async fn a_silent_leader_is_left_for_the_one_the_others_report() {
        let info = |role: &'static str, term: u64| {
            Act::Reply(Reply::Bulk(Bytes::from(format!("# Raft\r\nraft_role:{role}\r\nraft_term:{term}\r\n"))))
        };
        let (silent, a) = bind().await;
        let (stale, b) = bind().await;
        let (fresh, c) = bind().await;
        let _silent = fake(silent, |_| Act::Silent);
        let _stale = fake(stale, move |cmd| match cmd {
            ClientCommand::Info => info("Leader", 3),
            _ => Act::Silent,
        });
        let leader = fake(fresh, move |cmd| match cmd {
            ClientCommand::Info => info("Leader", 4),
            other => healthy(other),
        });
        let mut clerk = RemoteClerk::new(7, vec![a, b, c], 0, Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(clerk.run(put("k", "x"), deadline).await.expect("done before the deadline"), "");
        assert!(leader.log.lock().unwrap().contains(&set("k", "x")));
        assert_eq!(clerk.waits(), 0, "no attempt timeout was waited out");
    }

    /// A connection kept from an earlier operation whose server restarted
    /// since fails on first use: the clerk asks the same server again on a
    /// new one rather than counting it as that server's failure. (Before,
    /// it moved on to the next server, and with every kept connection
    /// stale, waited out the attempt timeout: issue 21.)
    #[tokio::test]
    async fn a_kept_connection_that_died_is_replaced_not_counted() {
        let (a_listener, a) = bind().await;
        let (b_listener, b) = bind().await;
        let first = fake(a_listener, healthy);
        let other = fake(b_listener, healthy);
        let mut clerk = RemoteClerk::new(7, vec![a, b], 0, Duration::from_secs(10));
        assert_eq!(clerk.run(put("k", "1"), soon(20)).await.expect("done"), "");
        // Server 0 restarts: its connections close, and it listens again.
        first.stop().await;
        let restarted = fake(TcpListener::bind(a).await.expect("the same port again"), healthy);
        assert_eq!(clerk.run(put("k", "2"), soon(20)).await.expect("done"), "");
        assert_eq!(*restarted.log.lock().unwrap(), [session(7, 2), set("k", "2")]);
        assert!(other.log.lock().unwrap().is_empty(), "server 1 was not asked");
        assert_eq!(clerk.waits(), 0);
    }

    /// When no server takes a connection (each refuses: all restarting),
    /// the clerk pauses briefly and tries again, rather than waiting out
    /// its attempt timeout (here longer than the deadline).
    #[tokio::test]
    async fn when_no_server_listens_the_clerk_tries_again_soon() {
        let (a_listener, a) = bind().await;
        let (b_listener, b) = bind().await;
        drop((a_listener, b_listener));
        let back = tokio::spawn(async move {
            // Server 1 comes back a moment later: a restart, not a sync.
            tokio::time::sleep(Duration::from_millis(200)).await;
            fake(TcpListener::bind(b).await.expect("the same port again"), healthy)
        });
        let mut clerk = RemoteClerk::new(7, vec![a, b], 0, Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(clerk.run(put("k", "x"), deadline).await.expect("done before the deadline"), "");
        let server = back.await.unwrap();
        assert_eq!(*server.log.lock().unwrap(), [session(7, 1), set("k", "x")]);
    }

    #[tokio::test]
    async fn a_closed_connection_moves_on_to_the_next_server() {
        let (a_listener, a) = bind().await;
        let (b_listener, b) = bind().await;
        let _server_a = fake(a_listener, |_| Act::Close);
        let server_b = fake(b_listener, healthy);
        let mut clerk = RemoteClerk::new(7, vec![a, b], 0, Duration::from_secs(10));
        assert_eq!(clerk.run(put("k", "x"), soon(20)).await.expect("done"), "");
        assert_eq!(clerk.waits(), 0, "one server's I/O error is not waited out");
        assert_eq!(*server_b.log.lock().unwrap(), [session(7, 1), set("k", "x")]);
    }

    #[tokio::test]
    async fn redirects_name_the_right_refusal() {
        // Both listeners stay bound, so the two addresses differ.
        let (_a_listener, a) = bind().await;
        let (_b_listener, b) = bind().await;
        let mut clerk = RemoteClerk::new(7, vec![a, b], 0, Duration::from_secs(1));
        let mut moved = |addr: String| clerk.redirect(&format!("MOVED 3999 {addr}"));
        assert_eq!(moved(b.to_string()), Some(Err(ServiceError::NotLeader { leader: Some(1) })));
        assert_eq!(moved(a.to_string()), Some(Err(ServiceError::NotLeader { leader: Some(0) })));
        // An address it was not given: learned as the next server.
        assert_eq!(moved("10.9.9.9:1".into()), Some(Err(ServiceError::NotLeader { leader: Some(2) })));
        assert_eq!(moved("nowhere".into()), Some(Err(ServiceError::NotLeader { leader: None })));
        assert_eq!(
            clerk.redirect(crate::server::resp::CLUSTERDOWN),
            Some(Err(ServiceError::NotLeader { leader: None }))
        );
        assert_eq!(clerk.redirect(crate::server::resp::TRYAGAIN), Some(Err(ServiceError::Busy)));
        assert_eq!(clerk.redirect("ERR key of 2000 bytes exceeds the limit of 1024"), None);
    }

    #[tokio::test]
    async fn a_late_reply_on_a_timed_out_connection_is_never_taken() {
        let (listener, addr) = bind().await;
        let log: Log = Arc::default();
        let server_log = log.clone();
        let mut server = JoinSet::new();
        server.spawn(async move {
            let mut codec = ServerCodec::default();
            // First connection: read both requests, answer nothing yet.
            let (mut first, _) = listener.accept().await.expect("accept");
            let mut buf = BytesMut::new();
            let mut got = 0;
            while got < 2 {
                match codec.decode(&mut buf).expect("valid") {
                    Some(request) => {
                        server_log.lock().unwrap().push(request.expect("valid"));
                        got += 1;
                    }
                    None => assert!(first.read_buf(&mut buf).await.expect("read") > 0),
                }
            }
            // The clerk timed out and reconnected: answer the first
            // connection now (too late), then serve the second.
            let (second, _) = listener.accept().await.expect("accept");
            let mut stale = BytesMut::new();
            codec.encode(Reply::Ok, &mut stale).expect("encode");
            codec.encode(Reply::Bulk(Bytes::from_static(b"stale")), &mut stale).expect("encode");
            let _ = first.write_all(&stale).await;
            serve(second, server_log, |cmd| match cmd {
                ClientCommand::Get { .. } => Act::Reply(Reply::Bulk(Bytes::from_static(b"fresh"))),
                _ => Act::Reply(Reply::Ok),
            })
            .await;
        });
        let mut clerk = RemoteClerk::new(7, vec![addr], 0, Duration::from_millis(200));
        let got = clerk.run(Op::Get { key: "k".into() }, soon(20)).await.expect("done");
        assert_eq!(got, "fresh");
        let get = ClientCommand::Get { key: "k".into() };
        assert_eq!(*log.lock().unwrap(), [session(7, 1), get.clone(), session(7, 1), get]);
    }

    #[tokio::test]
    async fn after_a_missed_deadline_the_next_operation_takes_the_next_seq() {
        let (listener, addr) = bind().await;
        let answering = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = answering.clone();
        let server =
            fake(
                listener,
                move |cmd| {
                    if flag.load(std::sync::atomic::Ordering::SeqCst) {
                        healthy(cmd)
                    } else {
                        Act::Silent
                    }
                },
            );
        let mut clerk = RemoteClerk::new(7, vec![addr], 0, Duration::from_millis(50));
        let error = clerk.run(put("k", "x"), Instant::now() + Duration::from_millis(300)).await.unwrap_err();
        let ClientError::Deadline { attempts } = error else { panic!("{error}") };
        assert!(attempts >= 1, "{attempts}");
        assert_eq!(clerk.waits(), attempts, "every attempt at a silent server is waited out");

        answering.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(clerk.run(Op::Get { key: "k".into() }, soon(20)).await.expect("done"), "v");
        // (A silent connection's task may log its requests late: count, do
        // not rely on the order.)
        let log = server.log.lock().unwrap();
        let sessions: Vec<_> = log.iter().filter(|c| matches!(c, ClientCommand::Session { .. })).collect();
        assert!(sessions.iter().all(|s| **s == session(7, 1) || **s == session(7, 2)), "{sessions:?}");
        assert_eq!(sessions.iter().filter(|s| ***s == session(7, 1)).count() as u64, attempts);
        assert_eq!(sessions.iter().filter(|s| ***s == session(7, 2)).count(), 1);
    }

    #[tokio::test]
    async fn a_refused_request_is_an_error_and_the_clerk_goes_on() {
        let (listener, addr) = bind().await;
        let server = fake(listener, |cmd| match cmd {
            ClientCommand::Set { .. } => {
                Act::Reply(Reply::Error("ERR key of 2000 bytes exceeds the limit of 1024".into()))
            }
            other => healthy(other),
        });
        let mut clerk = RemoteClerk::new(7, vec![addr], 0, Duration::from_secs(10));
        let error = clerk.run(put("k", "x"), soon(20)).await.unwrap_err();
        assert!(matches!(&error, ClientError::Refused(e) if e.starts_with("ERR key")), "{error}");
        assert_eq!(clerk.run(Op::Get { key: "k".into() }, soon(20)).await.expect("done"), "v");
        assert_eq!(server.log.lock().unwrap()[2], session(7, 2));
    }

    #[tokio::test]
    async fn info_reads_the_status_text() {
        let (listener, addr) = bind().await;
        let _server = fake(listener, |cmd| match cmd {
            ClientCommand::Info => Act::Reply(Reply::Bulk(Bytes::from_static(b"# Raft\r\nraft_role:Leader\r\n"))),
            _ => Act::Close,
        });
        let text = info(addr, &Access::plain(), Duration::from_secs(10)).await.expect("answered");
        assert!(text.lines().any(|l| l == "raft_role:Leader"), "{text:?}");
        let (closed, closed_addr) = bind().await;
        drop(closed);
        assert!(matches!(info(closed_addr, &Access::plain(), Duration::from_secs(10)).await, Err(ClientError::Io(_))));
    }

    fn decode_replies(bytes: &[u8]) -> Result<Vec<Reply>, RespError> {
        let mut codec = ReplyCodec::default();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(reply) = codec.decode(&mut buf)? {
            out.push(reply);
        }
        Ok(out)
    }

    #[test]
    fn replies_round_trip_through_the_reply_codec() {
        let replies = vec![
            Reply::Ok,
            Reply::Pong,
            Reply::Simple("hi".into()),
            Reply::Bulk(Bytes::from_static(b"a\r\nb")),
            Reply::Bulk(Bytes::new()),
            Reply::Integer(-42),
            Reply::Null,
            Reply::Array(vec![Reply::Integer(1), Reply::Array(vec![Reply::Null]), Reply::Error("ERR x".into())]),
            Reply::Error("MOVED 1 127.0.0.1:7001".into()),
        ];
        let mut bytes = BytesMut::new();
        for reply in &replies {
            ServerCodec::default().encode(reply, &mut bytes).expect("encode");
        }
        assert_eq!(decode_replies(&bytes).expect("valid"), replies);
        for cut in 0..bytes.len() {
            let decoded = decode_replies(&bytes[..cut]).expect("a prefix is incomplete, not wrong");
            assert_eq!(decoded[..], replies[..decoded.len()]);
        }
    }

    #[test]
    fn the_reply_codec_is_bounded() {
        let mut codec = ReplyCodec::new(1024);
        let mut buf = BytesMut::from(&b"$1000000000\r\n"[..]);
        assert!(matches!(codec.decode(&mut buf), Err(RespError::Protocol(_))), "a huge bulk is refused at once");
        let deep = "*1\r\n".repeat(ReplyCodec::DEPTH_MAX + 1) + ":1\r\n";
        assert!(decode_replies(deep.as_bytes()).is_err());
        let shallow = "*1\r\n".repeat(ReplyCodec::DEPTH_MAX) + ":1\r\n";
        assert_eq!(decode_replies(shallow.as_bytes()).expect("within the depth").len(), 1);
        assert!(decode_replies(b"*5000\r\n").is_err(), "too many elements");
        let long_line = [b"+".as_slice(), &[b'a'; 2000]].concat();
        let mut buf = BytesMut::from(&long_line[..]);
        assert!(codec.decode(&mut buf).is_err(), "a simple string longer than the bound");
        assert!(decode_replies(b"!x\r\n").is_err());
    }
}
