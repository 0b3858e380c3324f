//! The server side of the client protocol: RESP2, the protocol of Redis, so
//! that `redis-cli`, `redis-benchmark` and every Redis client library can
//! talk to raftkv. Specified in `specs/client.md`.
//!
//! - [`ServerCodec`] turns the bytes of one client connection into typed
//!   requests ([`ClientCommand`]) and encodes [`Reply`]s. It is a
//!   `tokio_util` codec, so the runtime wraps a socket in
//!   `Framed<TcpStream, ServerCodec>`.
//! - [`Reply::from_result`] turns the outcome of a KV operation into the
//!   reply, including the redirects (`MOVED`, `CLUSTERDOWN`, `TRYAGAIN`).
//! - [`ClientCommand::local_reply`] answers the commands that never reach
//!   the cluster (`PING`, `CONFIG GET`, `COMMAND`, ...).
//! - [`encode_request`] writes a request the way a client sends it.
//!
//! # Bounds
//!
//! Parsing is done by the `redis-protocol` crate, but only on frames a
//! scanner here has checked first. The crate's decoder has no bounds of its
//! own: a bulk string declaring a 1 GB length is merely "incomplete" (a naive
//! reader buffers forever), it preallocates up to 64 KiB for every array
//! header, and it recurses into nested arrays without a depth limit. The
//! scanner reads only the length headers (it jumps over bulk data) and
//! refuses, before any of it is buffered, a request that would exceed
//! [`RespLimits::request_bytes_max`]. Requests are arrays of bulk strings
//! only (what clients send; Redis refuses anything else too), so nesting
//! never reaches the crate.

use crate::kv::directory::{self, Addresses};
use crate::kv::{ClientId, Op, ServiceError};
use crate::raft::NodeId;
use crate::wire::Limits;
use bytes::{Buf, Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame;
use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use tokio_util::codec::{Decoder, Encoder};

/// Bounds on what one client request may make the server buffer or
/// allocate. A request over `request_bytes_max`, or one that is not RESP, is
/// a [`RespError`] (the connection is closed); a well-formed request that
/// breaks another bound is a [`CommandError`] (answered with `-ERR`, and the
/// connection goes on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RespLimits {
    /// Largest request, framing included. The codec never buffers more than
    /// this plus one read of the socket.
    pub request_bytes_max: usize,
    /// Most arguments in one request, the command name included.
    pub args_max: usize,
    /// Longest key of `GET`, `SET` and `APPEND` (bytes of UTF-8).
    pub key_bytes_max: usize,
    /// Longest value of `SET` and `APPEND` (bytes of UTF-8).
    pub value_bytes_max: usize,
}

impl RespLimits {
    /// 64 KiB: the largest `SET` (1 KiB key, 32 KiB value, 45 bytes of
    /// framing) fits with room to spare.
    pub const REQUEST_BYTES_MAX_DEFAULT: usize = 64 << 10;
    /// 8: the longest supported command is `CLIENT SETINFO LIB-NAME x` (4).
    pub const ARGS_MAX_DEFAULT: usize = 8;

    /// The most heap bytes decoding `input_len` bytes of requests can hold at
    /// once, if each decoded command is dropped before the next is decoded,
    /// counting the buffer holding the input.
    ///
    /// Why it holds: the buffer is `input_len`. One request is at most
    /// `request_bytes_max` bytes, and decoding it allocates its keys and
    /// values (at most its length), an inline request's unescaped arguments
    /// (at most its length again), and per argument a few fixed-size slots
    /// (the crate's range and frame vectors, `Bytes` handles): under 256
    /// bytes each, `args_max + 1` of them. The `resp` fuzz target asserts
    /// this bound on every input.
    pub fn decode_heap_bytes_max(&self, input_len: usize) -> usize {
        input_len
            .saturating_add(self.request_bytes_max.saturating_mul(2))
            .saturating_add(self.args_max.saturating_add(1).saturating_mul(256))
            .saturating_add(1024)
    }
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits {
            request_bytes_max: RespLimits::REQUEST_BYTES_MAX_DEFAULT,
            args_max: RespLimits::ARGS_MAX_DEFAULT,
            key_bytes_max: Limits::KEY_BYTES_MAX_DEFAULT,
            value_bytes_max: Limits::VALUE_BYTES_MAX_DEFAULT,
        }
    }
}

/// `RAFTKV.SESSION` refuses ids with this bit, so a clerk's chosen id never
/// collides with a connection's.
pub use crate::kv::SERVER_ASSIGNED_CLIENT_BIT;

/// A client request, typed. Names are case-insensitive on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientCommand {
    /// `GET key`.
    Get { key: String },
    /// `SET key value` (no options).
    Set { key: String, value: String },
    /// `APPEND key value`.
    Append { key: String, value: String },
    /// `STRLEN key`: the length of `GET key`'s value, in bytes.
    Strlen { key: String },
    /// `MGET key [key ...]`: `GET` of each key, one after another (not
    /// atomic across keys: each is linearizable on its own).
    MGet { keys: Vec<String> },
    /// `EXISTS key [key ...]`: how many of the keys hold a non-empty value
    /// (a missing key reads as `""`, so `""` counts as missing).
    Exists { keys: Vec<String> },
    /// `DEL key [key ...]`: removes the keys, one after another (each
    /// removal linearizable and exactly-once on its own; not atomic across
    /// keys), and answers how many held a value.
    Del { keys: Vec<String> },
    /// `SETNX key value`, or `SET key value NX` (`reply` says which): set
    /// the key only if it is missing (or `""`).
    SetIfAbsent { key: String, value: String, reply: IfAbsentReply },
    /// `RAFTKV.SESSION <client_id> <seq>`: the next `GET`/`SET`/`APPEND` on
    /// this connection carries this `(client_id, seq)` instead of the
    /// connection's own session. This is how the project's clerk gets
    /// exactly-once across retries and reconnections. `client` is below
    /// [`SERVER_ASSIGNED_CLIENT_BIT`] and `seq` is at least 1.
    Session { client: ClientId, seq: u64 },
    /// `PING [message]`.
    Ping { message: Option<Bytes> },
    /// `ECHO message`: the message (`redis-cli --pipe` ends its input with
    /// one to know when every reply has arrived).
    Echo { message: Bytes },
    /// `QUIT` (arguments ignored): `+OK`, then the server closes.
    Quit,
    /// `INFO [section ...]` (arguments ignored): the server's status.
    Info,
    /// `CONFIG GET pattern`.
    ConfigGet { pattern: String },
    /// `COMMAND [...]` (arguments ignored): an empty array, so `redis-cli`
    /// falls back to its built-in command hints.
    Command,
    /// `SELECT db`: only database 0 exists.
    Select { db: u64 },
    /// `CLIENT subcommand [...]` (`SETNAME`, `SETINFO`, ...; arguments
    /// ignored): `+OK`.
    ClientSubcommand,
    /// `HELLO [...]`: always refused with `-NOPROTO`, so clients stay on
    /// RESP2.
    Hello,
    /// `RAFTKV.MEMBER LIST|ADD id [peer client]|MOVE id peer
    /// client|PROMOTE id|REMOVE id`: show or change the cluster's
    /// configuration and address book (`specs/client.md`).
    Member(MemberCommand),
    /// `RAFTKV.TRANSFER id`: hand leadership to voter `id`.
    Transfer { to: NodeId },
    /// `AUTH [username] password`: the runtime checks it against the
    /// configured `requirepass` (the only user is `default`).
    Auth { username: Option<String>, password: Password },
}

/// A password as it arrived: never printed (its `Debug` is redacted), so
/// a logged command cannot leak it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Password(pub Bytes);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// Compares with `expected` in time independent of where they differ
    /// (the length may show; the content does not).
    pub fn matches(&self, expected: &[u8]) -> bool {
        self.0.len() == expected.len() && self.0.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// How a conditional set answers: `SETNX` with `:1`/`:0`, `SET ... NX`
/// with `+OK` or a nil reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IfAbsentReply {
    SetNx,
    SetOption,
}

/// The operator's membership commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberCommand {
    /// This server's view: the configuration in force here, and the leader.
    List,
    /// Add as a learner; its addresses must already be known (in the
    /// config file or the replicated directory).
    Add(NodeId),
    /// Record its addresses in the replicated directory, then add it as a
    /// learner: a server no config file lists.
    AddAt(NodeId, Addresses),
    /// Record new addresses for a server (its machine moved): every peer
    /// redials it there.
    Move(NodeId, Addresses),
    Promote(NodeId),
    Remove(NodeId),
}

impl ClientCommand {
    /// Moves out the KV operation of a command that is exactly one (`GET`,
    /// `SET`, `APPEND`, `SETNX`, `SET ... NX` and `DEL` of one key; `SET`
    /// is `Op::Put`), or gives the command back.
    pub fn into_op(self) -> Result<Op, ClientCommand> {
        match self {
            ClientCommand::Get { key } => Ok(Op::Get { key }),
            ClientCommand::Set { key, value } => Ok(Op::Put { key, value }),
            ClientCommand::Append { key, value } => Ok(Op::Append { key, value }),
            ClientCommand::SetIfAbsent { key, value, .. } => Ok(Op::PutIfAbsent { key, value }),
            ClientCommand::Del { mut keys } if keys.len() == 1 => {
                Ok(Op::Delete { key: keys.pop().unwrap_or_default() })
            }
            other => Err(other),
        }
    }

    /// The command a clerk sends to run `op`.
    pub fn of_op(op: &Op) -> ClientCommand {
        match op.clone() {
            Op::Get { key } => ClientCommand::Get { key },
            Op::Put { key, value } => ClientCommand::Set { key, value },
            Op::Append { key, value } => ClientCommand::Append { key, value },
            Op::Delete { key } => ClientCommand::Del { keys: vec![key] },
            Op::PutIfAbsent { key, value } => ClientCommand::SetIfAbsent { key, value, reply: IfAbsentReply::SetNx },
        }
    }

    /// The reply to a command the server answers by itself, without the
    /// cluster; `None` for `GET`, `SET`, `APPEND` (see
    /// [`Reply::from_result`]), `RAFTKV.SESSION` (the runtime binds the
    /// session, then answers `+OK`) and `INFO` (the runtime's status). After
    /// `QUIT`'s reply the server closes the connection.
    pub fn local_reply(&self) -> Option<Reply> {
        Some(match self {
            ClientCommand::Get { .. }
            | ClientCommand::Set { .. }
            | ClientCommand::Append { .. }
            | ClientCommand::Strlen { .. }
            | ClientCommand::MGet { .. }
            | ClientCommand::Exists { .. }
            | ClientCommand::Del { .. }
            | ClientCommand::SetIfAbsent { .. }
            | ClientCommand::Session { .. }
            | ClientCommand::Info
            | ClientCommand::Auth { .. }
            | ClientCommand::Member(_)
            | ClientCommand::Transfer { .. } => return None,
            ClientCommand::Ping { message: None } => Reply::Pong,
            ClientCommand::Ping { message: Some(message) } | ClientCommand::Echo { message } => {
                Reply::Bulk(message.clone())
            }
            ClientCommand::Quit | ClientCommand::ClientSubcommand | ClientCommand::Select { db: 0 } => Reply::Ok,
            ClientCommand::ConfigGet { pattern } => Reply::Array(
                CONFIG
                    .iter()
                    .filter(|(name, _)| glob_match(pattern.as_bytes(), name.as_bytes()))
                    .flat_map(|(name, value)| [bulk_static(name), bulk_static(value)])
                    .collect(),
            ),
            ClientCommand::Command => Reply::Array(Vec::new()),
            ClientCommand::Select { .. } => Reply::Error("ERR DB index is out of range".into()),
            ClientCommand::Hello => {
                Reply::Error("NOPROTO sorry, this protocol version is not supported: raftkv speaks RESP2 only".into())
            }
        })
    }

    /// The arguments of the request as a client sends it (name first),
    /// borrowed where they can be. Variants that drop their arguments send
    /// the fewest that decode back to them (`CLIENT SETNAME` for
    /// `ClientSubcommand`).
    fn args(&self) -> Vec<Cow<'_, [u8]>> {
        fn s(s: &str) -> Cow<'_, [u8]> {
            Cow::Borrowed(s.as_bytes())
        }
        fn n(n: impl ToString) -> Cow<'static, [u8]> {
            Cow::Owned(n.to_string().into_bytes())
        }
        fn name(name: &'static str) -> Cow<'static, [u8]> {
            Cow::Borrowed(name.as_bytes())
        }
        match self {
            ClientCommand::Get { key } => vec![name("GET"), s(key)],
            ClientCommand::Set { key, value } => vec![name("SET"), s(key), s(value)],
            ClientCommand::Append { key, value } => vec![name("APPEND"), s(key), s(value)],
            ClientCommand::Strlen { key } => vec![name("STRLEN"), s(key)],
            ClientCommand::MGet { keys } => std::iter::once(name("MGET")).chain(keys.iter().map(|k| s(k))).collect(),
            ClientCommand::Exists { keys } => {
                std::iter::once(name("EXISTS")).chain(keys.iter().map(|k| s(k))).collect()
            }
            ClientCommand::Del { keys } => std::iter::once(name("DEL")).chain(keys.iter().map(|k| s(k))).collect(),
            ClientCommand::SetIfAbsent { key, value, reply: IfAbsentReply::SetNx } => {
                vec![name("SETNX"), s(key), s(value)]
            }
            ClientCommand::SetIfAbsent { key, value, reply: IfAbsentReply::SetOption } => {
                vec![name("SET"), s(key), s(value), name("NX")]
            }
            ClientCommand::Session { client, seq } => vec![name("RAFTKV.SESSION"), n(*client), n(*seq)],
            ClientCommand::Ping { message: None } => vec![name("PING")],
            ClientCommand::Ping { message: Some(message) } => vec![name("PING"), Cow::Borrowed(&message[..])],
            ClientCommand::Echo { message } => vec![name("ECHO"), Cow::Borrowed(&message[..])],
            ClientCommand::Quit => vec![name("QUIT")],
            ClientCommand::Info => vec![name("INFO")],
            ClientCommand::ConfigGet { pattern } => vec![name("CONFIG"), name("GET"), s(pattern)],
            ClientCommand::Command => vec![name("COMMAND")],
            ClientCommand::Select { db } => vec![name("SELECT"), n(*db)],
            ClientCommand::ClientSubcommand => vec![name("CLIENT"), name("SETNAME")],
            ClientCommand::Hello => vec![name("HELLO")],
            ClientCommand::Auth { username: None, password } => vec![name("AUTH"), Cow::Borrowed(&password.0[..])],
            ClientCommand::Auth { username: Some(user), password } => {
                vec![name("AUTH"), s(user), Cow::Borrowed(&password.0[..])]
            }
            ClientCommand::Member(member) => {
                let (sub, id) = match member {
                    MemberCommand::List => return vec![name("RAFTKV.MEMBER"), name("LIST")],
                    MemberCommand::AddAt(id, at) | MemberCommand::Move(id, at) => {
                        let sub = if matches!(member, MemberCommand::Move(..)) { "MOVE" } else { "ADD" };
                        let (peer, client) = (at.peer.to_string(), at.client.to_string());
                        let addr = |a: String| Cow::Owned(a.into_bytes());
                        return vec![name("RAFTKV.MEMBER"), name(sub), n(u64::from(*id)), addr(peer), addr(client)];
                    }
                    MemberCommand::Add(id) => ("ADD", id),
                    MemberCommand::Promote(id) => ("PROMOTE", id),
                    MemberCommand::Remove(id) => ("REMOVE", id),
                };
                vec![name("RAFTKV.MEMBER"), name(sub), n(u64::from(*id))]
            }
            ClientCommand::Transfer { to } => vec![name("RAFTKV.TRANSFER"), n(u64::from(*to))],
        }
    }
}

/// What `CONFIG GET` answers (`redis-benchmark` asks for `save` and
/// `appendonly` before it starts).
const CONFIG: [(&str, &str); 3] = [("save", ""), ("appendonly", "no"), ("databases", "1")];

fn bulk_static(s: &'static str) -> Reply {
    Reply::Bulk(Bytes::from_static(s.as_bytes()))
}

/// Case-insensitive glob with `*` and `?` (what `CONFIG GET` takes).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    // Iterative matching with one backtrack point: linear in practice,
    // O(pattern × name) at worst, and the names are a few bytes.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&name[n]) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// A request that is well-formed RESP but not a command this server runs.
/// Answered with `-ERR <Display>`; the connection goes on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CommandError {
    /// The command name, made printable and cut to 32 characters.
    Unknown {
        name: String,
    },
    /// Wrong number of arguments for this command (its name, lower case).
    WrongArity {
        command: &'static str,
    },
    /// More arguments than [`RespLimits::args_max`].
    TooManyArgs {
        max: usize,
    },
    /// This argument (`"key"`, `"value"`, ...) must be UTF-8.
    NotUtf8 {
        what: &'static str,
    },
    KeyTooLong {
        bytes: usize,
        max: usize,
    },
    ValueTooLong {
        bytes: usize,
        max: usize,
    },
    /// This argument must be a decimal integer in range.
    BadInteger {
        what: &'static str,
    },
    /// A `RAFTKV.SESSION` whose client id is server-assigned or whose seq is 0.
    BadSession {
        reason: &'static str,
    },
    /// A write to a key of the cluster's own ([`directory::RESERVED`]).
    ReservedKey,
    /// This argument must be an `ip:port` address.
    BadAddress {
        what: &'static str,
    },
    /// Recognised but not supported (e.g. `SET` options, `CONFIG SET`).
    Unsupported {
        what: String,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown { name } => write!(f, "unknown command '{name}'"),
            CommandError::WrongArity { command } => write!(f, "wrong number of arguments for '{command}' command"),
            CommandError::TooManyArgs { max } => write!(f, "too many arguments (at most {max})"),
            CommandError::NotUtf8 { what } => write!(f, "the {what} must be valid UTF-8"),
            CommandError::KeyTooLong { bytes, max } => write!(f, "key of {bytes} bytes exceeds the limit of {max}"),
            CommandError::ValueTooLong { bytes, max } => {
                write!(f, "value of {bytes} bytes exceeds the limit of {max}")
            }
            CommandError::BadInteger { what } => write!(f, "{what} is not an integer or out of range"),
            CommandError::BadSession { reason } => write!(f, "bad session: {reason}"),
            CommandError::ReservedKey => {
                write!(
                    f,
                    "keys starting with {:?} belong to the cluster's address book; clients cannot write them",
                    directory::RESERVED
                )
            }
            CommandError::BadAddress { what } => write!(f, "the {what} address is not of the form ip:port"),
            CommandError::Unsupported { what } => write!(f, "{what} is not supported"),
        }
    }
}

impl std::error::Error for CommandError {}

impl From<CommandError> for Reply {
    fn from(error: CommandError) -> Reply {
        Reply::Error(format!("ERR {error}"))
    }
}

/// A fault that ends the connection: the server logs it, sends
/// [`RespError::reply`] if there is one, and closes.
#[derive(Debug)]
pub enum RespError {
    /// A request of at least `bytes` bytes (buffered without a complete
    /// frame, or announced by a length header) exceeds `max`
    /// ([`RespLimits::request_bytes_max`]).
    TooLarge {
        bytes: u64,
        max: usize,
    },
    /// Not RESP, or RESP a client does not send (e.g. nested arrays).
    Protocol(String),
    Io(std::io::Error),
}

impl RespError {
    /// The last words to the client before closing, Redis-style.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            RespError::Io(_) => None,
            other => Some(Reply::Error(format!("ERR Protocol error: {other}"))),
        }
    }
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::TooLarge { bytes, max } => write!(f, "request of {bytes} bytes exceeds the limit of {max}"),
            RespError::Protocol(what) => f.write_str(what),
            RespError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for RespError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RespError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for RespError {
    fn from(e: std::io::Error) -> Self {
        RespError::Io(e)
    }
}

fn protocol(what: impl Into<String>) -> RespError {
    RespError::Protocol(what.into())
}

/// What the server answers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// `+OK`
    Ok,
    /// `+PONG`
    Pong,
    /// `+<line>` (`\r` and `\n` are sent as spaces).
    Simple(String),
    /// `$<len>\r\n<bytes>`
    Bulk(Bytes),
    /// `:<n>`
    Integer(i64),
    /// `$-1`
    Null,
    /// `*<len>` and the elements.
    Array(Vec<Reply>),
    /// The full line after `-`, e.g. `"MOVED 3999 127.0.0.1:7001"`,
    /// `"ERR ..."` (`\r` and `\n` are sent as spaces).
    Error(String),
}

impl Reply {
    /// The reply to a KV result. A `GET` gets a bulk string (`""` for a
    /// missing key, never nil); `SET` and `APPEND` get `+OK` (`APPEND` does
    /// not return the new length: the state machine's reply to a write is
    /// empty); `DEL` of one key and `SETNX` get `:1` or `:0` (the state
    /// machine's `"1"` or `"0"`). `SET ... NX` is answered by the caller,
    /// which knows how it was asked.
    ///
    /// Refusals become redirects: `NotLeader` naming a leader whose client
    /// address `leader_addr` knows is `MOVED <slot> <addr>`, with the key's
    /// Redis Cluster hash slot, so that `redis-cli -c` and cluster-aware
    /// clients follow it; `NotLeader` without one (or with an unknown
    /// address) is `CLUSTERDOWN`; `Busy` is `TRYAGAIN`; `SessionExpired` is
    /// `ERR session expired (forgotten up to index N: ...)`; `StaleRequest`
    /// is `ERR stale request (this session has executed seq N: ...)`.
    pub fn from_result(
        op: &Op,
        result: Result<String, ServiceError>,
        leader_addr: impl Fn(NodeId) -> Option<String>,
    ) -> Reply {
        match result {
            Ok(value) => match op {
                Op::Get { .. } => Reply::Bulk(Bytes::from(value)),
                Op::Put { .. } | Op::Append { .. } => Reply::Ok,
                Op::Delete { .. } | Op::PutIfAbsent { .. } => Reply::Integer(i64::from(value == "1")),
            },
            Err(ServiceError::NotLeader { leader: Some(id) }) => match leader_addr(id) {
                Some(addr) => {
                    Reply::Error(format!("MOVED {} {addr}", redis_protocol::redis_keyslot(op.key().as_bytes())))
                }
                None => Reply::Error(CLUSTERDOWN.into()),
            },
            Err(ServiceError::NotLeader { leader: None }) => Reply::Error(CLUSTERDOWN.into()),
            Err(ServiceError::Busy) => Reply::Error(TRYAGAIN.into()),
            Err(ServiceError::SessionExpired { forgotten }) => {
                Reply::Error(format!("{SESSION_EXPIRED} {forgotten}: this command may repeat one executed before)"))
            }
            Err(ServiceError::StaleRequest { latest }) => Reply::Error(format!(
                "{STALE_REQUEST} {latest}: not executed; is another client using this client id?)"
            )),
        }
    }

    fn to_frame(&self) -> BytesFrame {
        match self {
            Reply::Ok => BytesFrame::SimpleString(Bytes::from_static(b"OK")),
            Reply::Pong => BytesFrame::SimpleString(Bytes::from_static(b"PONG")),
            Reply::Simple(line) => BytesFrame::SimpleString(Bytes::from(one_line(line))),
            Reply::Bulk(bytes) => BytesFrame::BulkString(bytes.clone()),
            Reply::Integer(n) => BytesFrame::Integer(*n),
            Reply::Null => BytesFrame::Null,
            Reply::Array(items) => BytesFrame::Array(items.iter().map(Reply::to_frame).collect()),
            Reply::Error(line) => BytesFrame::Error(one_line(line).into()),
        }
    }
}

/// The reply to a command before `AUTH`, when a password is required.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// The reply to `AUTH` with a wrong password or a user other than `default`.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// The reply to `AUTH` when no password is configured (Redis's words).
pub const AUTH_NOT_CONFIGURED: &str =
    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// The reply when no leader is known.
pub const CLUSTERDOWN: &str = "CLUSTERDOWN no leader is known yet; retry";
/// The reply when the leader refused a request for load.
pub const TRYAGAIN: &str = "TRYAGAIN the leader is busy; retry";
/// How the reply to a command of an expired session starts; the index the
/// cluster forgot sessions up to follows.
pub const SESSION_EXPIRED: &str = "ERR session expired (forgotten up to index";
/// How the reply to a command older than its session's latest starts; the
/// session's latest seq follows.
pub const STALE_REQUEST: &str = "ERR stale request (this session has executed seq";

/// A simple string or error line: CR and LF would end it early.
fn one_line(line: &str) -> String {
    line.replace(['\r', '\n'], " ")
}

/// Encodes `frame` at the end of `out` with the crate's encoder.
fn encode_frame(frame: &BytesFrame, out: &mut BytesMut) -> Result<(), RespError> {
    redis_protocol::resp2::encode::extend_encode(out, frame, false)
        .map(drop)
        .map_err(|e| protocol(format!("cannot encode a reply: {e:?}")))
}

/// Encodes a request the way a client sends it: an array of bulk strings.
/// Used by `RemoteClerk`, tests and the fuzz target's round trip.
///
/// Written directly rather than through the crate's frame types, which
/// would copy every key and value into a `Bytes` first; it cannot fail.
pub fn encode_request(cmd: &ClientCommand, out: &mut BytesMut) {
    use std::fmt::Write as _;
    let args = cmd.args();
    let len: usize = args.iter().map(|a| a.len() + 16).sum::<usize>() + 16;
    out.reserve(len);
    // Writing to a BytesMut cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(&arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Longest `*<count>` or `$<len>` header line, CRLF included.
const HEADER_LINE_MAX: usize = 32;
/// The shortest argument on the wire: `$0\r\n\r\n`.
const ARG_BYTES_MIN: usize = 6;

/// The decoder's progress through the request at the front of the buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Partial {
    #[default]
    Start,
    /// An inline request: `searched` bytes hold no `\n`.
    Inline { searched: usize },
    /// A multibulk request of `declared` arguments, of which `seen` are
    /// complete, ending at `pos`.
    Multibulk { declared: usize, seen: usize, pos: usize },
}

/// What one look at the front of the buffer found.
enum Scan {
    /// The request is incomplete.
    Need,
    /// `n` bytes that hold no request (an empty line, `*0`).
    Skip(usize),
    /// A request of `n` bytes, typed.
    Request(usize, Result<ClientCommand, CommandError>),
    /// A complete, checked array of bulk strings of `n` bytes, for the
    /// crate's parser.
    Multibulk(usize),
}

/// The server's codec: requests in ([`Decoder`]), replies out
/// ([`Encoder<Reply>`]).
///
/// It yields one `Result<ClientCommand, CommandError>` per request: a
/// `CommandError` is answered with `-ERR` and the connection goes on. A
/// [`RespError`] ends the connection. Two kinds of request are read:
///
/// - arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), what
///   clients send;
/// - inline commands (`PING\r\n`, `set k "a b"\n`), what `telnet` and
///   `redis-benchmark`'s inline tests send: any line not starting with `*`,
///   split at spaces, with Redis's double and single quotes.
///
/// It never buffers more than [`RespLimits::request_bytes_max`] plus one
/// read, never panics, and allocates within
/// [`RespLimits::decode_heap_bytes_max`]. Scanning is resumable: a request
/// arriving a byte at a time costs time linear in its length.
#[derive(Clone, Debug, Default)]
pub struct ServerCodec {
    limits: RespLimits,
    partial: Partial,
}

impl ServerCodec {
    pub fn new(limits: RespLimits) -> ServerCodec {
        ServerCodec { limits, partial: Partial::Start }
    }

    pub fn limits(&self) -> &RespLimits {
        &self.limits
    }

    /// Looks at the request at the front of `buf` (not empty), from where
    /// the previous look stopped.
    fn scan(&mut self, buf: &[u8]) -> Result<Scan, RespError> {
        match self.partial {
            Partial::Inline { searched } => self.scan_inline(buf, searched),
            Partial::Multibulk { .. } => self.scan_multibulk(buf),
            Partial::Start if buf[0] == b'*' => self.scan_multibulk(buf),
            Partial::Start => self.scan_inline(buf, 0),
        }
    }

    fn scan_inline(&mut self, buf: &[u8], searched: usize) -> Result<Scan, RespError> {
        let max = self.limits.request_bytes_max;
        let window = &buf[searched.min(buf.len())..buf.len().min(max)];
        let Some(at) = window.iter().position(|&b| b == b'\n') else {
            if buf.len() >= max {
                // The newline, if any, comes after the first `max` bytes.
                return Err(RespError::TooLarge { bytes: (max as u64).saturating_add(1), max });
            }
            self.partial = Partial::Inline { searched: buf.len() };
            return Ok(Scan::Need);
        };
        let end = searched + at;
        let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
        Ok(match split_inline(line, self.limits.args_max)? {
            None => Scan::Request(end + 1, Err(CommandError::TooManyArgs { max: self.limits.args_max })),
            Some(args) if args.is_empty() => Scan::Skip(end + 1),
            Some(args) => Scan::Request(end + 1, parse_command(args, &self.limits)),
        })
    }

    fn scan_multibulk(&mut self, buf: &[u8]) -> Result<Scan, RespError> {
        let max = self.limits.request_bytes_max;
        let (declared, mut seen, mut pos) = match self.partial {
            Partial::Multibulk { declared, seen, pos } => (declared, seen, pos),
            _ => {
                let Some(line_end) = find_line(buf, 0, max)? else { return Ok(Scan::Need) };
                let count = &buf[1..line_end - 2];
                if count == b"0" || count == b"-1" {
                    return Ok(Scan::Skip(line_end));
                }
                let Some(declared) = parse_decimal(count) else {
                    return Err(protocol("invalid multibulk length"));
                };
                // Each argument takes at least ARG_BYTES_MIN bytes.
                let least = (line_end as u64).saturating_add(declared.saturating_mul(ARG_BYTES_MIN as u64));
                if least > max as u64 {
                    return Err(RespError::TooLarge { bytes: least, max });
                }
                (declared as usize, 0, line_end)
            }
        };
        while seen < declared {
            self.partial = Partial::Multibulk { declared, seen, pos };
            match buf.get(pos) {
                None => return Ok(Scan::Need),
                Some(b'$') => {}
                Some(&other) => return Err(protocol(format!("expected '$', got '{}'", printable(&[other])))),
            }
            let Some(line_end) = find_line(buf, pos, max)? else { return Ok(Scan::Need) };
            let Some(len) = parse_decimal(&buf[pos + 1..line_end - 2]) else {
                return Err(protocol("invalid bulk length"));
            };
            let end = (line_end as u64).saturating_add(len).saturating_add(2);
            if end > max as u64 {
                return Err(RespError::TooLarge { bytes: end, max });
            }
            let end = end as usize;
            if buf.len() < end {
                return Ok(Scan::Need);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(protocol("bulk string not followed by CRLF"));
            }
            pos = end;
            seen += 1;
        }
        if declared > self.limits.args_max {
            return Ok(Scan::Request(pos, Err(CommandError::TooManyArgs { max: self.limits.args_max })));
        }
        Ok(Scan::Multibulk(pos))
    }
}

/// Parses a request the scanner checked (an array of bulk strings, complete,
/// within the limits) with the crate's decoder. `frame` holds exactly it.
fn parse_checked(mut frame: BytesMut, limits: &RespLimits) -> Result<Result<ClientCommand, CommandError>, RespError> {
    let len = frame.len();
    let differently = || protocol("the RESP parser read a checked request differently");
    let decoded = redis_protocol::resp2::decode::decode_bytes_mut(&mut frame)
        .map_err(|e| protocol(format!("the RESP parser refused a checked request: {e:?}")))?;
    let Some((BytesFrame::Array(items), used, _)) = decoded else { return Err(differently()) };
    if used != len || items.is_empty() {
        return Err(differently());
    }
    let mut args = Vec::with_capacity(items.len());
    for item in items {
        match item {
            BytesFrame::BulkString(bytes) => args.push(bytes),
            _ => return Err(differently()),
        }
    }
    Ok(parse_command(args, limits))
}

/// Finds the CRLF ending the header line starting at `pos` (which holds at
/// least one byte). Returns the index after the CRLF, `None` if more bytes
/// are needed, or an error if the line would be longer than
/// [`HEADER_LINE_MAX`] or end past the request bound `max`.
fn find_line(buf: &[u8], pos: usize, max: usize) -> Result<Option<usize>, RespError> {
    let window_end = (pos + HEADER_LINE_MAX).min(max);
    let window = &buf[pos..buf.len().min(window_end)];
    if let Some(at) = window.windows(2).position(|w| w == b"\r\n") {
        return Ok(Some(pos + at + 2));
    }
    if buf.len() < window_end {
        return Ok(None);
    }
    if window_end == max {
        return Err(RespError::TooLarge { bytes: (max as u64).saturating_add(1), max });
    }
    Err(protocol("header line too long"))
}

/// `0` or a decimal without sign or leading zeros that fits a `u64`.
/// A node id argument: a decimal up to [`MAX_NODE_ID`](crate::raft::types::MAX_NODE_ID).
fn node_id(digits: &[u8]) -> Result<NodeId, CommandError> {
    parse_decimal(digits)
        .filter(|&id| id <= u64::from(crate::raft::types::MAX_NODE_ID))
        .map(|id| id as NodeId)
        .ok_or(CommandError::BadInteger { what: "node id" })
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    parse_client_id(digits)?.try_into().ok()
}

/// A `u128` in canonical decimal (no sign, no leading zero).
fn parse_client_id(digits: &[u8]) -> Option<u128> {
    if digits.is_empty() || digits.len() > 39 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Splits an inline request as Redis does: at spaces and tabs, with `"..."`
/// (escapes `\n \r \t \b \a \\ \" \xHH`) and `'...'` (escape `\'`) quoting.
/// `None` when there are more than `args_max` arguments (it stops there, so
/// it never holds more than `args_max + 1`).
fn split_inline(line: &[u8], args_max: usize) -> Result<Option<Vec<Bytes>>, RespError> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c');
    // A closing quote at `i` must end the line or be followed by a space.
    let past_closing_quote = |i: usize| match line.get(i + 1) {
        Some(&b) if !is_space(b) => Err(protocol("unbalanced quotes in request")),
        _ => Ok(i + 1),
    };
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(Some(args));
        }
        if args.len() == args_max {
            return Ok(None);
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(protocol("unbalanced quotes in request")),
                        Some(b'"') => break,
                        Some(b'\\') if i + 3 < line.len() && line[i + 1] == b'x' => {
                            let hex = |c: u8| (c as char).to_digit(16);
                            match (hex(line[i + 2]), hex(line[i + 3])) {
                                (Some(h), Some(l)) => {
                                    arg.push((h * 16 + l) as u8);
                                    i += 4;
                                    continue;
                                }
                                _ => {
                                    arg.push(b'x');
                                    i += 2;
                                    continue;
                                }
                            }
                        }
                        Some(b'\\') if i + 1 < line.len() => {
                            arg.push(match line[i + 1] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => b'\x08',
                                b'a' => b'\x07',
                                other => other,
                            });
                            i += 2;
                            continue;
                        }
                        Some(&c) => arg.push(c),
                    }
                    i += 1;
                }
                i = past_closing_quote(i)?;
            }
            b'\'' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(protocol("unbalanced quotes in request")),
                        Some(b'\'') => break,
                        Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 2;
                            continue;
                        }
                        Some(&c) => arg.push(c),
                    }
                    i += 1;
                }
                i = past_closing_quote(i)?;
            }
            _ => {
                while i < line.len() && !is_space(line[i]) {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
}

/// At most 32 characters of `bytes`, lossily decoded, with control
/// characters and quotes escaped: safe to put in an error line.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(32)]);
    text.chars().flat_map(char::escape_debug).collect()
}

fn utf8(bytes: Bytes, what: &'static str) -> Result<String, CommandError> {
    String::from_utf8(Vec::from(bytes)).map_err(|_| CommandError::NotUtf8 { what })
}

fn key(bytes: Bytes, limits: &RespLimits) -> Result<String, CommandError> {
    if bytes.len() > limits.key_bytes_max {
        return Err(CommandError::KeyTooLong { bytes: bytes.len(), max: limits.key_bytes_max });
    }
    utf8(bytes, "key")
}

/// A key a client writes: [`key`], and not one of the cluster's own.
fn write_key(bytes: Bytes, limits: &RespLimits) -> Result<String, CommandError> {
    let key = key(bytes, limits)?;
    if directory::is_reserved(&key) {
        return Err(CommandError::ReservedKey);
    }
    Ok(key)
}

fn address(bytes: &[u8], what: &'static str) -> Result<SocketAddr, CommandError> {
    std::str::from_utf8(bytes).ok().and_then(|text| text.parse().ok()).ok_or(CommandError::BadAddress { what })
}

fn value(bytes: Bytes, limits: &RespLimits) -> Result<String, CommandError> {
    if bytes.len() > limits.value_bytes_max {
        return Err(CommandError::ValueTooLong { bytes: bytes.len(), max: limits.value_bytes_max });
    }
    utf8(bytes, "value")
}

/// Types the arguments (at least one, at most `args_max`) of one request.
fn parse_command(args: Vec<Bytes>, limits: &RespLimits) -> Result<ClientCommand, CommandError> {
    let mut args = args.into_iter();
    let Some(name) = args.next() else { return Err(CommandError::Unknown { name: String::new() }) };
    let rest: Vec<Bytes> = args.collect();
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let arity = |command: &'static str, ok: bool| if ok { Ok(()) } else { Err(CommandError::WrongArity { command }) };
    let mut rest = rest.into_iter();
    let n = rest.len();
    let mut next = || rest.next().unwrap_or_default();
    if is("GET") {
        arity("get", n == 1)?;
        Ok(ClientCommand::Get { key: key(next(), limits)? })
    } else if is("SET") {
        arity("set", n >= 2)?;
        let (key, value) = (write_key(next(), limits)?, value(next(), limits)?);
        match rest.as_slice() {
            [] => Ok(ClientCommand::Set { key, value }),
            [nx] if nx.eq_ignore_ascii_case(b"NX") => {
                Ok(ClientCommand::SetIfAbsent { key, value, reply: IfAbsentReply::SetOption })
            }
            _ => Err(CommandError::Unsupported { what: "SET with options other than NX".into() }),
        }
    } else if is("SETNX") {
        arity("setnx", n == 2)?;
        let (key, value) = (write_key(next(), limits)?, value(next(), limits)?);
        Ok(ClientCommand::SetIfAbsent { key, value, reply: IfAbsentReply::SetNx })
    } else if is("APPEND") {
        arity("append", n == 2)?;
        Ok(ClientCommand::Append { key: write_key(next(), limits)?, value: value(next(), limits)? })
    } else if is("STRLEN") {
        arity("strlen", n == 1)?;
        Ok(ClientCommand::Strlen { key: key(next(), limits)? })
    } else if is("MGET") || is("EXISTS") || is("DEL") {
        let (command, build): (_, fn(Vec<String>) -> ClientCommand) = if is("MGET") {
            ("mget", |keys| ClientCommand::MGet { keys })
        } else if is("EXISTS") {
            ("exists", |keys| ClientCommand::Exists { keys })
        } else {
            ("del", |keys| ClientCommand::Del { keys })
        };
        arity(command, n >= 1)?;
        let check: fn(Bytes, &RespLimits) -> Result<String, CommandError> = if is("DEL") { write_key } else { key };
        Ok(build(rest.map(|k| check(k, limits)).collect::<Result<Vec<_>, _>>()?))
    } else if is("RAFTKV.SESSION") {
        arity("raftkv.session", n == 2)?;
        let client = parse_client_id(&next()).ok_or(CommandError::BadInteger { what: "client id" })?;
        let seq = parse_decimal(&next()).ok_or(CommandError::BadInteger { what: "seq" })?;
        if client & SERVER_ASSIGNED_CLIENT_BIT != 0 {
            return Err(CommandError::BadSession { reason: "client ids of 2^127 and above are server-assigned" });
        }
        if seq == 0 {
            return Err(CommandError::BadSession { reason: "seq starts at 1" });
        }
        Ok(ClientCommand::Session { client, seq })
    } else if is("PING") {
        arity("ping", n <= 1)?;
        Ok(ClientCommand::Ping { message: rest.next() })
    } else if is("ECHO") {
        arity("echo", n == 1)?;
        Ok(ClientCommand::Echo { message: next() })
    } else if is("QUIT") {
        Ok(ClientCommand::Quit)
    } else if is("INFO") {
        Ok(ClientCommand::Info)
    } else if is("CONFIG") {
        arity("config", n >= 1)?;
        let sub = next();
        if !sub.eq_ignore_ascii_case(b"GET") {
            return Err(CommandError::Unsupported { what: format!("CONFIG {}", printable(&sub).to_uppercase()) });
        }
        arity("config|get", n == 2)?;
        Ok(ClientCommand::ConfigGet { pattern: utf8(next(), "pattern")? })
    } else if is("COMMAND") {
        Ok(ClientCommand::Command)
    } else if is("SELECT") {
        arity("select", n == 1)?;
        Ok(ClientCommand::Select { db: parse_decimal(&next()).ok_or(CommandError::BadInteger { what: "db" })? })
    } else if is("CLIENT") {
        arity("client", n >= 1)?;
        Ok(ClientCommand::ClientSubcommand)
    } else if is("HELLO") {
        Ok(ClientCommand::Hello)
    } else if is("AUTH") {
        arity("auth", n == 1 || n == 2)?;
        let username = if n == 2 { Some(utf8(next(), "username")?) } else { None };
        Ok(ClientCommand::Auth { username, password: Password(next()) })
    } else if is("RAFTKV.MEMBER") {
        arity("raftkv.member", n >= 1)?;
        let sub = next();
        let sub_is = |s: &str| sub.eq_ignore_ascii_case(s.as_bytes());
        if sub_is("LIST") {
            arity("raftkv.member|list", n == 1)?;
            return Ok(ClientCommand::Member(MemberCommand::List));
        }
        if (sub_is("ADD") && n == 4) || sub_is("MOVE") {
            arity("raftkv.member|move", n == 4)?;
            let id = node_id(&next())?;
            let peer = address(&next(), "peer")?;
            let client = address(&next(), "client")?;
            let at = Addresses { peer, client };
            let member = if sub_is("MOVE") { MemberCommand::Move(id, at) } else { MemberCommand::AddAt(id, at) };
            return Ok(ClientCommand::Member(member));
        }
        let change: fn(NodeId) -> MemberCommand = if sub_is("ADD") {
            MemberCommand::Add
        } else if sub_is("PROMOTE") {
            MemberCommand::Promote
        } else if sub_is("REMOVE") {
            MemberCommand::Remove
        } else {
            return Err(CommandError::Unsupported {
                what: format!("RAFTKV.MEMBER {}", printable(&sub).to_uppercase()),
            });
        };
        arity("raftkv.member", n == 2)?;
        Ok(ClientCommand::Member(change(node_id(&next())?)))
    } else if is("RAFTKV.TRANSFER") {
        arity("raftkv.transfer", n == 1)?;
        Ok(ClientCommand::Transfer { to: node_id(&next())? })
    } else {
        Err(CommandError::Unknown { name: printable(&name) })
    }
}

impl Decoder for ServerCodec {
    type Item = Result<ClientCommand, CommandError>;
    type Error = RespError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, RespError> {
        loop {
            if src.is_empty() {
                self.partial = Partial::Start;
                return Ok(None);
            }
            let scan = self.scan(src);
            if !matches!(scan, Ok(Scan::Need)) {
                self.partial = Partial::Start;
            }
            match scan? {
                Scan::Need => {
                    let max = self.limits.request_bytes_max;
                    if src.len() > max {
                        // Unreachable: every scan refuses a request before
                        // it grows past the bound. Kept as the last line.
                        self.partial = Partial::Start;
                        return Err(RespError::TooLarge { bytes: src.len() as u64, max });
                    }
                    return Ok(None);
                }
                Scan::Skip(n) => src.advance(n),
                Scan::Request(n, request) => {
                    src.advance(n);
                    return Ok(Some(request));
                }
                Scan::Multibulk(n) => return parse_checked(src.split_to(n), &self.limits).map(Some),
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, RespError> {
        match self.decode(src)? {
            Some(request) => Ok(Some(request)),
            None if src.is_empty() => Ok(None),
            None => Err(protocol(format!("the connection closed inside a request ({} bytes)", src.len()))),
        }
    }
}

impl Encoder<Reply> for ServerCodec {
    type Error = RespError;

    fn encode(&mut self, reply: Reply, dst: &mut BytesMut) -> Result<(), RespError> {
        encode_frame(&reply.to_frame(), dst)
    }
}

impl Encoder<&Reply> for ServerCodec {
    type Error = RespError;

    fn encode(&mut self, reply: &Reply, dst: &mut BytesMut) -> Result<(), RespError> {
        encode_frame(&reply.to_frame(), dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    fn encoded(cmd: &ClientCommand) -> BytesMut {
        let mut out = BytesMut::new();
        encode_request(cmd, &mut out);
        out
    }

    /// Decodes everything in `bytes` at once: the requests, and how it ended.
    fn decode_all(bytes: &[u8], limits: RespLimits) -> (Vec<Result<ClientCommand, CommandError>>, Option<RespError>) {
        let mut codec = ServerCodec::new(limits);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(request)) => out.push(request),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn one(bytes: &[u8]) -> Result<ClientCommand, CommandError> {
        let (mut out, error) = decode_all(bytes, RespLimits::default());
        assert!(error.is_none(), "{error:?}");
        assert_eq!(out.len(), 1, "{out:?}");
        out.pop().unwrap()
    }

    fn s(s: &str) -> String {
        s.to_string()
    }

    #[derive(Clone, Debug)]
    struct AnyCommand(ClientCommand);

    fn bytes(g: &mut Gen) -> Bytes {
        Bytes::from(Vec::<u8>::arbitrary(g))
    }

    fn short(g: &mut Gen, max: usize) -> String {
        let mut s = String::arbitrary(g);
        while s.len() > max {
            s.pop();
        }
        s
    }

    impl Arbitrary for AnyCommand {
        fn arbitrary(g: &mut Gen) -> Self {
            let k = RespLimits::default().key_bytes_max;
            let v = RespLimits::default().value_bytes_max;
            let id = u8::arbitrary(g) % (crate::raft::types::MAX_NODE_ID + 1);
            let keys = |g: &mut Gen| (0..1 + usize::arbitrary(g) % 6).map(|_| short(g, k)).collect();
            let addr = |g: &mut Gen| SocketAddr::from((u32::arbitrary(g).to_be_bytes(), u16::arbitrary(g)));
            AnyCommand(match u8::arbitrary(g) % 27 {
                0 => ClientCommand::Get { key: short(g, k) },
                1 => ClientCommand::Set { key: short(g, k), value: short(g, v) },
                2 => ClientCommand::Append { key: short(g, k), value: short(g, v) },
                3 => ClientCommand::Session { client: u128::arbitrary(g) >> 1, seq: u64::arbitrary(g).max(1) },
                4 => ClientCommand::Ping { message: bool::arbitrary(g).then(|| bytes(g)) },
                5 => ClientCommand::Quit,
                6 => ClientCommand::Info,
                7 => ClientCommand::ConfigGet { pattern: String::arbitrary(g) },
                8 => ClientCommand::Command,
                9 => ClientCommand::Select { db: u64::arbitrary(g) },
                10 => ClientCommand::ClientSubcommand,
                11 => ClientCommand::Echo { message: bytes(g) },
                13 => ClientCommand::Member(MemberCommand::List),
                14 => ClientCommand::Member(MemberCommand::Add(id)),
                15 => ClientCommand::Member(MemberCommand::Promote(id)),
                16 => ClientCommand::Member(MemberCommand::Remove(id)),
                17 => ClientCommand::Transfer { to: id },
                18 => ClientCommand::Auth { username: None, password: Password(bytes(g)) },
                19 => ClientCommand::Auth { username: Some(short(g, 64)), password: Password(bytes(g)) },
                20 => ClientCommand::Strlen { key: short(g, k) },
                21 => ClientCommand::MGet { keys: keys(g) },
                22 => ClientCommand::Exists { keys: keys(g) },
                23 => ClientCommand::Del { keys: keys(g) },
                24 => ClientCommand::SetIfAbsent { key: short(g, k), value: short(g, v), reply: IfAbsentReply::SetNx },
                25 => {
                    ClientCommand::SetIfAbsent { key: short(g, k), value: short(g, v), reply: IfAbsentReply::SetOption }
                }
                26 => ClientCommand::Member(MemberCommand::AddAt(id, Addresses { peer: addr(g), client: addr(g) })),
                12 => ClientCommand::Member(MemberCommand::Move(id, Addresses { peer: addr(g), client: addr(g) })),
                _ => ClientCommand::Hello,
            })
        }
    }

    #[test]
    fn every_command_round_trips() {
        fn prop(cmds: Vec<AnyCommand>) -> bool {
            let mut buf = BytesMut::new();
            for AnyCommand(cmd) in &cmds {
                encode_request(cmd, &mut buf);
            }
            let (out, error) = decode_all(&buf, RespLimits::default());
            assert!(error.is_none(), "{error:?}");
            let want: Vec<_> = cmds.into_iter().map(|AnyCommand(c)| Ok(c)).collect();
            assert_eq!(out, want);
            true
        }
        QuickCheck::new().tests(500).quickcheck(prop as fn(Vec<AnyCommand>) -> bool);
    }

    #[test]
    fn every_truncation_needs_more_bytes() {
        fn prop(cmd: AnyCommand) -> bool {
            let full = encoded(&cmd.0);
            let mut codec = ServerCodec::default();
            for cut in 0..full.len() {
                // A fresh codec per cut, and one fed byte by byte: both wait.
                let mut prefix = BytesMut::from(&full[..cut]);
                assert!(matches!(ServerCodec::default().decode(&mut prefix), Ok(None)), "cut {cut}");
                assert_eq!(prefix.len(), cut, "nothing consumed");
            }
            let mut buf = BytesMut::new();
            for (i, &b) in full.iter().enumerate() {
                buf.extend_from_slice(&[b]);
                let got = codec.decode(&mut buf).expect("valid");
                if i + 1 < full.len() {
                    assert!(got.is_none(), "a request decoded after {} of {} bytes", i + 1, full.len());
                } else {
                    assert_eq!(got, Some(Ok(cmd.0.clone())));
                }
            }
            true
        }
        QuickCheck::new().tests(200).quickcheck(prop as fn(AnyCommand) -> bool);
    }

    /// Feeds `bytes` in chunks ending at `cuts`; the outcome must equal the
    /// all-at-once decode, and the buffer must stay within the bound.
    fn chunked_agrees(bytes: &[u8], cuts: &[usize], limits: RespLimits) {
        let (whole, whole_error) = decode_all(bytes, limits);
        let mut codec = ServerCodec::new(limits);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut error = None;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort();
        let mut from = 0;
        'feed: for cut in cuts {
            buf.extend_from_slice(&bytes[from..cut]);
            from = cut;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(request)) => out.push(request),
                    Ok(None) => {
                        assert!(buf.len() <= limits.request_bytes_max);
                        break;
                    }
                    Err(e) => {
                        error = Some(e);
                        break 'feed;
                    }
                }
            }
        }
        assert_eq!(out, whole);
        assert_eq!(
            error.as_ref().map(std::mem::discriminant),
            whole_error.as_ref().map(std::mem::discriminant),
            "{error:?} vs {whole_error:?}"
        );
    }

    const TIGHT: RespLimits = RespLimits { request_bytes_max: 64, args_max: 4, key_bytes_max: 8, value_bytes_max: 16 };

    #[test]
    fn any_bytes_never_panic_and_chunking_does_not_matter() {
        fn prop(bytes: Vec<u8>, cuts: Vec<usize>) -> bool {
            chunked_agrees(&bytes, &cuts, RespLimits::default());
            chunked_agrees(&bytes, &cuts, TIGHT);
            true
        }
        QuickCheck::new().tests(2000).quickcheck(prop as fn(Vec<u8>, Vec<usize>) -> bool);
    }

    #[test]
    fn mutated_requests_never_panic_and_chunking_does_not_matter() {
        fn prop(cmds: Vec<AnyCommand>, flips: Vec<(usize, u8)>, cuts: Vec<usize>) -> bool {
            let mut buf = BytesMut::new();
            for AnyCommand(cmd) in &cmds {
                encode_request(cmd, &mut buf);
            }
            if !buf.is_empty() {
                let n = buf.len();
                for (at, b) in flips {
                    buf[at % n] = b;
                }
            }
            chunked_agrees(&buf, &cuts, RespLimits::default());
            chunked_agrees(&buf, &cuts, TIGHT);
            true
        }
        QuickCheck::new().tests(1000).quickcheck(prop as fn(Vec<AnyCommand>, Vec<(usize, u8)>, Vec<usize>) -> bool);
    }

    #[test]
    fn a_huge_declared_bulk_is_refused_at_its_header() {
        let mut codec = ServerCodec::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1000000000\r\n"[..]);
        let error = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(error, RespError::TooLarge { bytes, .. } if bytes > 1_000_000_000), "{error}");
        // And an array declaring more arguments than could fit.
        let (_, error) = decode_all(b"*100000000\r\n", RespLimits::default());
        assert!(matches!(error, Some(RespError::TooLarge { .. })), "{error:?}");
    }

    #[test]
    fn buffering_stops_at_the_bound() {
        // An inline line that never ends.
        let limits = RespLimits::default();
        let mut codec = ServerCodec::new(limits);
        let mut buf = BytesMut::new();
        let chunk = [b'a'; 4096];
        let error = loop {
            buf.extend_from_slice(&chunk);
            match codec.decode(&mut buf) {
                Ok(None) => assert!(buf.len() < limits.request_bytes_max),
                Ok(Some(r)) => panic!("{r:?}"),
                Err(e) => break e,
            }
        };
        assert!(matches!(error, RespError::TooLarge { .. }), "{error}");
        assert!(buf.len() <= limits.request_bytes_max + chunk.len());
        // A header line that never ends.
        let (_, error) = decode_all(&[b"*2\r\n$".as_slice(), &[b'1'; 40]].concat(), limits);
        assert!(matches!(error, Some(RespError::Protocol(_))), "{error:?}");
    }

    #[test]
    fn the_largest_set_fits_the_default_bound() {
        let limits = RespLimits::default();
        let cmd =
            ClientCommand::Set { key: "k".repeat(limits.key_bytes_max), value: "v".repeat(limits.value_bytes_max) };
        assert!(encoded(&cmd).len() <= limits.request_bytes_max);
        assert_eq!(one(&encoded(&cmd)), Ok(cmd));
    }

    /// Client ids are 127 bits: past 2^64 they are a client's own, from
    /// 2^127 on they are server-assigned, past 2^128 they are no number.
    #[test]
    fn session_client_ids_span_127_bits() {
        let session = |id: &str| one(format!("RAFTKV.SESSION {id} 1\r\n").as_bytes());
        assert_eq!(session("18446744073709551616"), Ok(ClientCommand::Session { client: 1 << 64, seq: 1 }));
        let top = (SERVER_ASSIGNED_CLIENT_BIT - 1).to_string();
        assert_eq!(session(&top), Ok(ClientCommand::Session { client: SERVER_ASSIGNED_CLIENT_BIT - 1, seq: 1 }));
        let assigned = CommandError::BadSession { reason: "client ids of 2^127 and above are server-assigned" };
        assert_eq!(session(&SERVER_ASSIGNED_CLIENT_BIT.to_string()), Err(assigned));
        let too_big = CommandError::BadInteger { what: "client id" };
        assert_eq!(session("340282366920938463463374607431768211456"), Err(too_big));
    }

    #[test]
    fn multi_key_reads_take_at_least_one_key() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n");
        buf.extend_from_slice(b"*1\r\n$6\r\nexists\r\n");
        buf.extend_from_slice(b"*3\r\n$6\r\nSTRLEN\r\n$1\r\na\r\n$1\r\nb\r\n");
        let (out, error) = decode_all(&buf, RespLimits::default());
        assert!(error.is_none(), "{error:?}");
        assert_eq!(
            out,
            vec![
                Ok(ClientCommand::MGet { keys: vec![s("a"), s("b")] }),
                Err(CommandError::WrongArity { command: "exists" }),
                Err(CommandError::WrongArity { command: "strlen" }),
            ]
        );
    }

    #[test]
    fn auth_takes_a_password_or_a_user_and_a_password_and_never_prints_it() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n");
        buf.extend_from_slice(b"*3\r\n$4\r\nauth\r\n$7\r\ndefault\r\n$6\r\nsecret\r\n");
        buf.extend_from_slice(b"*1\r\n$4\r\nAUTH\r\n");
        let (out, error) = decode_all(&buf, RespLimits::default());
        assert!(error.is_none(), "{error:?}");
        let password = Password(Bytes::from_static(b"secret"));
        assert_eq!(
            out,
            vec![
                Ok(ClientCommand::Auth { username: None, password: password.clone() }),
                Ok(ClientCommand::Auth { username: Some(s("default")), password: password.clone() }),
                Err(CommandError::WrongArity { command: "auth" }),
            ]
        );
        assert!(!format!("{:?}", out[0]).contains("secret"), "{:?}", out[0]);
        assert!(password.matches(b"secret"));
        assert!(!password.matches(b"secreT") && !password.matches(b"secret!") && !password.matches(b""));
    }

    #[test]
    fn command_errors_are_answered_and_the_connection_goes_on() {
        let limits = TIGHT;
        let mut buf = BytesMut::new();
        encode_request(&ClientCommand::Get { key: "k".repeat(9) }, &mut buf);
        encode_request(&ClientCommand::Set { key: s("k"), value: "v".repeat(17) }, &mut buf);
        buf.extend_from_slice(b"*5\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n");
        buf.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$2\r\n\xff\xfe\r\n");
        buf.extend_from_slice(b"*1\r\n$8\r\nFLUSHALL\r\n");
        buf.extend_from_slice(b"*3\r\n$3\r\nget\r\n$1\r\na\r\n$1\r\nb\r\n");
        buf.extend_from_slice(b"*3\r\n$14\r\nraftkv.session\r\n$1\r\n1\r\n$1\r\n0\r\n");
        buf.extend_from_slice(b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n");
        let (out, error) = decode_all(&buf, limits);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(
            out,
            vec![
                Err(CommandError::KeyTooLong { bytes: 9, max: 8 }),
                Err(CommandError::ValueTooLong { bytes: 17, max: 16 }),
                Err(CommandError::TooManyArgs { max: 4 }),
                Err(CommandError::NotUtf8 { what: "key" }),
                Err(CommandError::Unknown { name: s("FLUSHALL") }),
                Err(CommandError::WrongArity { command: "get" }),
                Err(CommandError::BadSession { reason: "seq starts at 1" }),
                Ok(ClientCommand::Ping { message: Some(Bytes::from_static(b"hi")) }),
            ]
        );
        assert_eq!(
            Reply::from(CommandError::WrongArity { command: "get" }),
            Reply::Error(s("ERR wrong number of arguments for 'get' command"))
        );
    }

    #[test]
    fn fatal_protocol_errors() {
        for bad in [
            &b"*1\r\n*1\r\n$4\r\nPING\r\n"[..], // nested array
            b"*1\r\n:5\r\n",                    // not a bulk string
            b"*1\r\n$-1\r\n",                   // null bulk
            b"*1\r\n$04\r\nPING\r\n",           // non-canonical length
            b"*x\r\n",
            b"*1\r\n$4\r\nPINGxx",     // no CRLF after the data
            b"SET k \"unbalanced\r\n", // inline, open quote
            b"SET k \"a\"b\r\n",       // inline, text after the closing quote
        ] {
            let (out, error) = decode_all(bad, RespLimits::default());
            assert!(out.is_empty(), "{out:?}");
            assert!(matches!(error, Some(RespError::Protocol(_))), "{:?}: {error:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn echo_answers_its_message_and_needs_exactly_one() {
        let (out, error) = decode_all(b"*2\r\n$4\r\necho\r\n$2\r\nhi\r\nECHO\r\nECHO a b\r\n", RespLimits::default());
        assert!(error.is_none(), "{error:?}");
        let echo = ClientCommand::Echo { message: Bytes::from_static(b"hi") };
        assert_eq!(echo.local_reply(), Some(Reply::Bulk(Bytes::from_static(b"hi"))));
        assert_eq!(out[0], Ok(echo));
        assert!(out[1..].iter().all(|r| matches!(r, Err(CommandError::WrongArity { .. }))), "{out:?}");
    }

    #[test]
    fn inline_commands() {
        let (out, error) = decode_all(
            b"PING\r\n\r\n  \nset k \"a b\\x41\\n\"\nGET 'it\\'s'\r\nping \"\"\r\n*0\r\nquit\n",
            RespLimits::default(),
        );
        assert!(error.is_none(), "{error:?}");
        assert_eq!(
            out,
            vec![
                Ok(ClientCommand::Ping { message: None }),
                Ok(ClientCommand::Set { key: s("k"), value: s("a bA\n") }),
                Ok(ClientCommand::Get { key: s("it's") }),
                Ok(ClientCommand::Ping { message: Some(Bytes::new()) }),
                Ok(ClientCommand::Quit),
            ]
        );
        let (out, _) = decode_all(b"a b c d e f g h i j\n", RespLimits::default());
        assert_eq!(out, vec![Err(CommandError::TooManyArgs { max: 8 })]);
    }

    #[test]
    fn names_are_case_insensitive_and_tooling_commands_parse() {
        assert_eq!(one(b"*2\r\n$3\r\ngEt\r\n$1\r\nk\r\n"), Ok(ClientCommand::Get { key: s("k") }));
        assert_eq!(one(b"CONFIG GET save\r\n"), Ok(ClientCommand::ConfigGet { pattern: s("save") }));
        assert_eq!(one(b"command docs\r\n"), Ok(ClientCommand::Command));
        assert_eq!(one(b"info replication\r\n"), Ok(ClientCommand::Info));
        assert_eq!(one(b"select 0\r\n"), Ok(ClientCommand::Select { db: 0 }));
        assert_eq!(one(b"HELLO 3\r\n"), Ok(ClientCommand::Hello));
        assert_eq!(one(b"client setinfo lib-name x\r\n"), Ok(ClientCommand::ClientSubcommand));
        assert_eq!(one(b"CLIENT\r\n"), Err(CommandError::WrongArity { command: "client" }));
        assert_eq!(one(b"raftkv.session 7 3\r\n"), Ok(ClientCommand::Session { client: 7, seq: 3 }));
        assert_eq!(
            one(b"SET k v EX 10\r\n"),
            Err(CommandError::Unsupported { what: s("SET with options other than NX") })
        );
        assert_eq!(
            one(b"SET k v XX\r\n"),
            Err(CommandError::Unsupported { what: s("SET with options other than NX") })
        );
        assert_eq!(
            one(b"set k v nx\r\n"),
            Ok(ClientCommand::SetIfAbsent { key: s("k"), value: s("v"), reply: IfAbsentReply::SetOption })
        );
        assert_eq!(one(b"DEL\r\n"), Err(CommandError::WrongArity { command: "del" }));
        assert_eq!(one(b"SETNX k\r\n"), Err(CommandError::WrongArity { command: "setnx" }));
        assert_eq!(one(b"CONFIG SET a b\r\n"), Err(CommandError::Unsupported { what: s("CONFIG SET") }));
        assert_eq!(one(b"SELECT -1\r\n"), Err(CommandError::BadInteger { what: "db" }));
        assert_eq!(one(b"raftkv.session 7 0\r\n"), Err(CommandError::BadSession { reason: "seq starts at 1" }));
        assert_eq!(one(b"\x01\r\n"), Err(CommandError::Unknown { name: s("\\u{1}") }));
    }

    #[test]
    fn operator_commands_parse_and_refuse_bad_ids() {
        assert_eq!(one(b"raftkv.member list\r\n"), Ok(ClientCommand::Member(MemberCommand::List)));
        assert_eq!(one(b"RAFTKV.MEMBER add 3\r\n"), Ok(ClientCommand::Member(MemberCommand::Add(3))));
        assert_eq!(one(b"RAFTKV.MEMBER PROMOTE 63\r\n"), Ok(ClientCommand::Member(MemberCommand::Promote(63))));
        assert_eq!(one(b"RAFTKV.MEMBER remove 0\r\n"), Ok(ClientCommand::Member(MemberCommand::Remove(0))));
        assert_eq!(one(b"raftkv.transfer 2\r\n"), Ok(ClientCommand::Transfer { to: 2 }));
        assert_eq!(one(b"RAFTKV.MEMBER ADD 64\r\n"), Err(CommandError::BadInteger { what: "node id" }));
        assert_eq!(one(b"RAFTKV.MEMBER ADD -1\r\n"), Err(CommandError::BadInteger { what: "node id" }));
        assert_eq!(one(b"RAFTKV.MEMBER ADD\r\n"), Err(CommandError::WrongArity { command: "raftkv.member" }));
        assert_eq!(one(b"RAFTKV.MEMBER\r\n"), Err(CommandError::WrongArity { command: "raftkv.member" }));
        assert_eq!(one(b"RAFTKV.MEMBER LIST 1\r\n"), Err(CommandError::WrongArity { command: "raftkv.member|list" }));
        assert_eq!(one(b"RAFTKV.MEMBER swap 1\r\n"), Err(CommandError::Unsupported { what: s("RAFTKV.MEMBER SWAP") }));
        assert_eq!(one(b"raftkv.transfer 1 2\r\n"), Err(CommandError::WrongArity { command: "raftkv.transfer" }));
        assert_eq!(one(b"RAFTKV.MEMBER ADD 3\r\n").unwrap().local_reply(), None, "the node answers");
    }

    #[test]
    fn an_add_with_addresses_parses_and_bad_addresses_are_named() {
        let at = Addresses { peer: "10.0.0.5:7100".parse().unwrap(), client: "[::1]:6379".parse().unwrap() };
        let add = one(b"RAFTKV.MEMBER ADD 5 10.0.0.5:7100 [::1]:6379\r\n");
        assert_eq!(add, Ok(ClientCommand::Member(MemberCommand::AddAt(5, at))));
        let bad_peer = one(b"RAFTKV.MEMBER ADD 5 10.0.0.5 10.0.0.5:6379\r\n");
        assert_eq!(bad_peer, Err(CommandError::BadAddress { what: "peer" }));
        let bad_client = one(b"RAFTKV.MEMBER ADD 5 10.0.0.5:7100 host:6379\r\n");
        assert_eq!(bad_client, Err(CommandError::BadAddress { what: "client" }));
        let three = one(b"RAFTKV.MEMBER ADD 5 10.0.0.5:7100\r\n");
        assert_eq!(three, Err(CommandError::WrongArity { command: "raftkv.member" }));
        let moved = one(b"raftkv.member move 2 10.0.0.5:7100 10.0.0.5:6379\r\n");
        let at = Addresses { peer: "10.0.0.5:7100".parse().unwrap(), client: "10.0.0.5:6379".parse().unwrap() };
        assert_eq!(moved, Ok(ClientCommand::Member(MemberCommand::Move(2, at))));
        let short = one(b"RAFTKV.MEMBER MOVE 2 10.0.0.5:7100\r\n");
        assert_eq!(short, Err(CommandError::WrongArity { command: "raftkv.member|move" }));
        let promote = one(b"RAFTKV.MEMBER PROMOTE 5 10.0.0.5:7100 10.0.0.5:6379\r\n");
        assert_eq!(promote, Err(CommandError::WrongArity { command: "raftkv.member" }));
    }

    #[test]
    fn clients_cannot_write_the_address_books_keys_but_can_read_them() {
        for write in [&b"SET"[..], b"APPEND", b"SETNX"] {
            let mut request = write.to_vec();
            request.extend_from_slice(b" \"\\x00raftkv/node/1\" x\r\n");
            assert_eq!(one(&request), Err(CommandError::ReservedKey), "{}", String::from_utf8_lossy(write));
        }
        assert_eq!(one(b"DEL k \"\\x00raftkv/x\"\r\n"), Err(CommandError::ReservedKey));
        assert_eq!(one(b"GET \"\\x00raftkv/node/1\"\r\n"), Ok(ClientCommand::Get { key: "\0raftkv/node/1".into() }));
        assert_eq!(
            one(b"SET \"raftkv/node/1\" x\r\n"),
            Ok(ClientCommand::Set { key: "raftkv/node/1".into(), value: "x".into() })
        );
        let refusal = CommandError::ReservedKey.to_string();
        assert!(refusal.contains("address book"), "{refusal}");
    }

    fn reply_bytes(reply: Reply) -> Vec<u8> {
        let mut out = BytesMut::new();
        ServerCodec::default().encode(reply, &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn replies_encode_as_redis_does() {
        assert_eq!(reply_bytes(Reply::Ok), b"+OK\r\n");
        assert_eq!(reply_bytes(Reply::Pong), b"+PONG\r\n");
        assert_eq!(reply_bytes(Reply::Bulk(Bytes::from_static(b"v"))), b"$1\r\nv\r\n");
        assert_eq!(reply_bytes(Reply::Bulk(Bytes::new())), b"$0\r\n\r\n");
        assert_eq!(reply_bytes(Reply::Null), b"$-1\r\n");
        assert_eq!(reply_bytes(Reply::Integer(-3)), b":-3\r\n");
        assert_eq!(reply_bytes(Reply::Array(vec![Reply::Ok, Reply::Integer(1)])), b"*2\r\n+OK\r\n:1\r\n");
        assert_eq!(reply_bytes(Reply::Error(s("ERR a\r\nb"))), b"-ERR a  b\r\n");
        assert_eq!(reply_bytes(Reply::Simple(s("x\ny"))), b"+x y\r\n");
    }

    #[test]
    fn kv_results_and_redirects() {
        let get = Op::Get { key: s("foo") };
        let put = Op::Put { key: s("foo"), value: s("v") };
        let addr = |id: NodeId| (id == 2).then(|| s("127.0.0.1:7002"));
        assert_eq!(Reply::from_result(&get, Ok(String::new()), addr), Reply::Bulk(Bytes::new()));
        assert_eq!(Reply::from_result(&get, Ok(s("v")), addr), Reply::Bulk(Bytes::from_static(b"v")));
        assert_eq!(Reply::from_result(&put, Ok(String::new()), addr), Reply::Ok);
        let moved = Reply::from_result(&put, Err(ServiceError::NotLeader { leader: Some(2) }), addr);
        // 12182 is Redis Cluster's slot of "foo".
        assert_eq!(moved, Reply::Error(s("MOVED 12182 127.0.0.1:7002")));
        let unknown = Reply::from_result(&put, Err(ServiceError::NotLeader { leader: Some(1) }), addr);
        assert_eq!(unknown, Reply::Error(CLUSTERDOWN.into()));
        let none = Reply::from_result(&put, Err(ServiceError::NotLeader { leader: None }), addr);
        assert_eq!(none, Reply::Error(CLUSTERDOWN.into()));
        assert_eq!(Reply::from_result(&put, Err(ServiceError::Busy), addr), Reply::Error(TRYAGAIN.into()));
        let Reply::Error(expired) = Reply::from_result(&put, Err(ServiceError::SessionExpired { forgotten: 9 }), addr)
        else {
            panic!("an error reply")
        };
        assert!(expired.starts_with("ERR session expired") && expired.contains(" 9: "), "{expired}");
    }

    #[test]
    fn local_replies() {
        let local = |line: &[u8]| one(line).unwrap().local_reply();
        assert_eq!(local(b"PING\r\n"), Some(Reply::Pong));
        assert_eq!(local(b"PING x\r\n"), Some(Reply::Bulk(Bytes::from_static(b"x"))));
        assert_eq!(local(b"GET k\r\n"), None);
        assert_eq!(local(b"RAFTKV.SESSION 1 1\r\n"), None);
        let pairs = |p: &[(&'static str, &'static str)]| {
            Some(Reply::Array(p.iter().flat_map(|(n, v)| [bulk_static(n), bulk_static(v)]).collect()))
        };
        assert_eq!(local(b"CONFIG GET save\r\n"), pairs(&[("save", "")]));
        assert_eq!(local(b"CONFIG GET APPEND*\r\n"), pairs(&[("appendonly", "no")]));
        assert_eq!(local(b"CONFIG GET *\r\n"), pairs(&CONFIG));
        assert_eq!(local(b"CONFIG GET nothing\r\n"), Some(Reply::Array(vec![])));
        assert_eq!(local(b"COMMAND DOCS\r\n"), Some(Reply::Array(vec![])));
        assert_eq!(local(b"SELECT 1\r\n"), Some(Reply::Error(s("ERR DB index is out of range"))));
        assert!(matches!(local(b"HELLO 3\r\n"), Some(Reply::Error(e)) if e.starts_with("NOPROTO ")));
        assert_eq!(local(b"INFO\r\n"), None);
        assert_eq!(local(b"CLIENT SETNAME x\r\n"), Some(Reply::Ok));
        assert!(glob_match(b"a*b?c", b"AxxbYc") && !glob_match(b"a*b", b"ac") && glob_match(b"**", b""));
    }
}
