//! The key/value state machine's snapshot: its data **and its session
//! table** (without the table, a retried append that lands in the log again
//! after an install would be executed twice), in a versioned, checksummed
//! envelope. The bytes come from the disk or from another server, so
//! [`decode`] trusts nothing: every defect is a [`SnapshotError`], never a
//! panic, and it allocates nothing before the length and checksum are
//! checked against a bound the caller gives.
//!
//! ```text
//!  0..4    magic  b"RKVS"
//!  4       version (2; 1 is still read)
//!  5..13   body length, u64 little-endian
//!  13..17  CRC-32 (IEEE) of the body, little-endian
//!  17..    body: postcard(applied index, data, sessions, forgotten)
//! ```
//!
//! The body is postcard's encoding (the peer wire format's too, see
//! `specs/wire.md`): `applied` as a varint, then the data as a sequence of
//! `(key, value)` string pairs in key order, then the sessions as a sequence
//! of `(client, seq, reply, last)` in client order, then the session
//! table's `forgotten` index (see [`KvMachine`]). Version 1 had neither
//! `last` nor `forgotten`: its sessions count as active at its applied
//! index, and nothing as forgotten. postcard never allocates past the
//! remaining input, so a body of `n` bytes decodes into `O(n)` memory.

use super::machine::{KvMachine, Session};
use super::ClientId;
use crate::raft::LogIndex;
use serde::{Deserialize, Serialize};
use std::fmt;

const MAGIC: &[u8; 4] = b"RKVS";
/// The version this code writes (it reads this and [`VERSION_1`]).
pub const VERSION: u8 = 2;
/// Before the session table was bounded.
pub const VERSION_1: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 17;

/// Why snapshot bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SnapshotError {
    /// Fewer bytes than the header or the declared body.
    Truncated { needed: u64, got: u64 },
    /// More bytes than the header declares.
    TrailingBytes { extra: u64 },
    /// Not a raftkv snapshot.
    BadMagic,
    /// Written by a newer (or unknown) version of raftkv.
    UnsupportedVersion { found: u8 },
    /// The body is longer than the caller allows.
    TooLarge { len: u64, max: u64 },
    /// The body does not match its checksum: corrupt in transit or on disk.
    BadChecksum { expected: u32, found: u32 },
    /// The body passed its checksum but does not decode (or breaks an
    /// invariant, such as keys out of order): written by a bug.
    Malformed(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Truncated { needed, got } => write!(f, "snapshot truncated: {got} of {needed} bytes"),
            SnapshotError::TrailingBytes { extra } => write!(f, "snapshot has {extra} bytes past its body"),
            SnapshotError::BadMagic => f.write_str("not a raftkv snapshot (bad magic)"),
            SnapshotError::UnsupportedVersion { found } => {
                write!(f, "snapshot version {found} is not supported (this build reads {VERSION})")
            }
            SnapshotError::TooLarge { len, max } => {
                write!(f, "snapshot body of {len} bytes exceeds the limit of {max}")
            }
            SnapshotError::BadChecksum { expected, found } => {
                write!(f, "snapshot checksum mismatch (header {expected:08x}, body {found:08x}): corrupt")
            }
            SnapshotError::Malformed(why) => write!(f, "snapshot body malformed: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// What the body holds, in the order it is written (as [`BodyRef`]; the
/// tests write a `Body` to forge snapshots).
#[derive(Serialize, Deserialize)]
struct Body {
    applied: LogIndex,
    data: Vec<(String, String)>,
    sessions: Vec<(ClientId, u64, String, LogIndex)>,
    forgotten: LogIndex,
}

/// [`Body`] borrowed from a machine, so encoding copies no key or value.
/// The same bytes: postcard writes a borrowed pair as it writes an owned
/// one.
#[derive(Serialize)]
struct BodyRef<'a> {
    applied: LogIndex,
    data: InKeyOrder<'a, String, String>,
    sessions: Vec<(ClientId, u64, &'a str, LogIndex)>,
    forgotten: LogIndex,
}

/// A map written as the sequence of its `(key, value)` pairs, in key order.
struct InKeyOrder<'a, K, V>(&'a imbl::OrdMap<K, V>);

impl<K: Serialize + Ord, V: Serialize> Serialize for InKeyOrder<'_, K, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for pair in self.0.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

/// Version 1's body.
#[derive(Deserialize)]
struct BodyV1 {
    applied: LogIndex,
    data: Vec<(String, String)>,
    sessions: Vec<(ClientId, u64, String)>,
}

/// The snapshot of `machine`. With `omit_sessions` (injected bug (a) of the
/// snapshot issue) the session table is left out.
pub fn encode(machine: &KvMachine, omit_sessions: bool) -> Vec<u8> {
    let body = BodyRef {
        applied: machine.applied_index(),
        data: InKeyOrder(machine.data()),
        sessions: if omit_sessions {
            Vec::new()
        } else {
            machine.sessions().iter().map(|(c, s)| (*c, s.seq, s.reply.as_str(), s.last)).collect()
        },
        forgotten: machine.forgotten(),
    };
    // Encoding to a Vec fails only on a serde error, which this plain data
    // does not produce.
    let body = postcard::to_allocvec(&body).expect("a snapshot body always encodes");
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The machine a snapshot holds, or why the bytes cannot be one. Bodies
/// longer than `max_body_bytes` are refused before anything is read.
pub fn decode(bytes: &[u8], max_body_bytes: u64) -> Result<KvMachine, SnapshotError> {
    let got = bytes.len() as u64;
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Truncated { needed: HEADER_LEN as u64, got });
    }
    if &bytes[0..4] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = bytes[4];
    if version != VERSION && version != VERSION_1 {
        return Err(SnapshotError::UnsupportedVersion { found: version });
    }
    let len = u64::from_le_bytes(bytes[5..13].try_into().expect("8 bytes"));
    if len > max_body_bytes {
        return Err(SnapshotError::TooLarge { len, max: max_body_bytes });
    }
    let needed = (HEADER_LEN as u64).saturating_add(len);
    if got < needed {
        return Err(SnapshotError::Truncated { needed, got });
    }
    if got > needed {
        return Err(SnapshotError::TrailingBytes { extra: got - needed });
    }
    let body = &bytes[HEADER_LEN..];
    let expected = u32::from_le_bytes(bytes[13..17].try_into().expect("4 bytes"));
    let found = crc32fast::hash(body);
    if found != expected {
        return Err(SnapshotError::BadChecksum { expected, found });
    }
    let malformed = |e: postcard::Error| SnapshotError::Malformed(e.to_string());
    let (body, rest): (Body, &[u8]) = if version == VERSION_1 {
        let (v1, rest): (BodyV1, &[u8]) = postcard::take_from_bytes(body).map_err(malformed)?;
        let sessions = v1.sessions.into_iter().map(|(c, seq, reply)| (c, seq, reply, v1.applied)).collect();
        (Body { applied: v1.applied, data: v1.data, sessions, forgotten: 0 }, rest)
    } else {
        postcard::take_from_bytes(body).map_err(malformed)?
    };
    if !rest.is_empty() {
        return Err(SnapshotError::Malformed(format!("{} bytes after the body's fields", rest.len())));
    }
    // The encoder writes maps in order; anything else was not written by it.
    if !body.data.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(SnapshotError::Malformed("keys not in strictly increasing order".into()));
    }
    if !body.sessions.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(SnapshotError::Malformed("clients not in strictly increasing order".into()));
    }
    if body.forgotten > body.applied {
        return Err(SnapshotError::Malformed("sessions forgotten after the applied index".into()));
    }
    if let Some((c, ..)) = body.sessions.iter().find(|s| s.3 > body.applied) {
        return Err(SnapshotError::Malformed(format!("client {c}'s session is active after the applied index")));
    }
    let sessions = body.sessions.into_iter().map(|(c, seq, reply, last)| (c, Session { seq, reply, last })).collect();
    Ok(KvMachine::restored(body.applied, body.data.into_iter().collect(), sessions, body.forgotten))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, Op};

    const MAX: u64 = 1 << 20;

    fn machine() -> KvMachine {
        let mut m = KvMachine::new();
        let ops = [
            (7, 1, Op::Put { key: "a".into(), value: "1".into() }),
            (7, 2, Op::Append { key: "b".into(), value: "x".into() }),
            (9, 1, Op::Get { key: "a".into() }),
            (9, 2, Op::Append { key: "b".into(), value: "y".into() }),
        ];
        for (i, (client, seq, op)) in ops.into_iter().enumerate() {
            m.apply(i as u64 + 1, &Command { client, seq, op });
        }
        m.apply_noop(5);
        m
    }

    #[test]
    fn the_borrowed_body_writes_the_owned_bodys_bytes() {
        let m = machine();
        let owned = Body {
            applied: m.applied_index(),
            data: m.data().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            sessions: m.sessions().iter().map(|(c, s)| (*c, s.seq, s.reply.clone(), s.last)).collect(),
            forgotten: m.forgotten(),
        };
        assert_eq!(encode(&m, false), forged(VERSION, &owned));
    }

    #[test]
    fn a_snapshot_holds_data_sessions_and_applied_index() {
        let m = machine();
        let back = decode(&encode(&m, false), MAX).unwrap();
        assert_eq!(back, m);
        assert_eq!((back.applied_index(), back.get("b").as_str()), (5, "xy"));
        assert_eq!(back.session(9).map(|s| (s.seq, s.reply.as_str())), Some((2, "")));
        assert_eq!(back.session(7).map(|s| s.seq), Some(2));
    }

    #[test]
    fn a_retry_after_restoring_is_still_answered_not_executed() {
        let mut back = decode(&encode(&machine(), false), MAX).unwrap();
        let retry = Command { client: 9, seq: 2, op: Op::Append { key: "b".into(), value: "y".into() } };
        assert!(!back.apply(6, &retry).executed);
        assert_eq!(back.get("b"), "xy");
        // Without the table (bug (a)) the retry runs again.
        let mut bugged = decode(&encode(&machine(), true), MAX).unwrap();
        assert!(bugged.apply(6, &retry).executed);
        assert_eq!(bugged.get("b"), "xyy");
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = encode(&machine(), false);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], MAX).is_err(), "a snapshot cut at {len} bytes was accepted");
        }
        for i in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut corrupt = bytes.clone();
                corrupt[i] ^= bit;
                assert!(decode(&corrupt, MAX).is_err(), "flipping bit {bit:#x} of byte {i} was not noticed");
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer, MAX), Err(SnapshotError::TrailingBytes { extra: 1 }));
    }

    #[test]
    fn versions_bounds_and_bugs_give_their_own_errors() {
        let bytes = encode(&machine(), false);
        let mut future = bytes.clone();
        future[4] = VERSION + 1;
        assert_eq!(decode(&future, MAX), Err(SnapshotError::UnsupportedVersion { found: VERSION + 1 }));
        let body = (bytes.len() - HEADER_LEN) as u64;
        assert_eq!(decode(&bytes, body - 1), Err(SnapshotError::TooLarge { len: body, max: body - 1 }));
        let mut huge = bytes.clone();
        huge[5..13].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&huge, u64::MAX), Err(SnapshotError::Truncated { .. })), "no allocation for it");
        // Bodies that pass their checksum but break an invariant.
        let unordered = vec![("b".into(), "".into()), ("a".into(), "".into())];
        let bad = Body { applied: 1, data: unordered, sessions: vec![], forgotten: 0 };
        assert!(matches!(decode(&forged(VERSION, &bad), MAX), Err(SnapshotError::Malformed(_))));
        let late = Body { applied: 1, data: vec![], sessions: vec![(7, 1, String::new(), 2)], forgotten: 0 };
        assert!(matches!(decode(&forged(VERSION, &late), MAX), Err(SnapshotError::Malformed(_))));
        let forgot = Body { applied: 1, data: vec![], sessions: vec![], forgotten: 2 };
        assert!(matches!(decode(&forged(VERSION, &forgot), MAX), Err(SnapshotError::Malformed(_))));
    }

    /// Header and checksum around a serialized body.
    fn forged(version: u8, body: &impl Serialize) -> Vec<u8> {
        let body = postcard::to_allocvec(body).unwrap();
        let mut bytes = Vec::from(&MAGIC[..]);
        bytes.push(version);
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    #[test]
    fn the_session_bound_survives_a_snapshot_and_version_1_still_loads() {
        let mut m = machine().with_max_sessions(1); // keeps client 9, forgets 7 (last active at 2)
        assert_eq!((m.sessions().len(), m.forgotten()), (1, 2));
        let mut back = decode(&encode(&m, false), MAX).unwrap().with_max_sessions(1);
        assert_eq!(back, m);
        let retry = Command { client: 7, seq: 2, op: Op::Append { key: "b".into(), value: "x".into() } };
        let expired = Some(crate::kv::ServiceError::SessionExpired { forgotten: 2 });
        assert_eq!(back.apply(6, &retry).refused, expired);
        assert_eq!(m.apply(6, &retry).refused, expired);
        // Version 1 had no `last` and no `forgotten`.
        #[derive(Serialize)]
        struct V1 {
            applied: LogIndex,
            data: Vec<(String, String)>,
            sessions: Vec<(ClientId, u64, String)>,
        }
        let v1 = V1 { applied: 5, data: vec![("a".into(), "1".into())], sessions: vec![(7, 2, String::new())] };
        let old = decode(&forged(VERSION_1, &v1), MAX).unwrap();
        assert_eq!((old.applied_index(), old.get("a").as_str(), old.forgotten()), (5, "1", 0));
        assert_eq!(old.session(7).map(|s| (s.seq, s.last)), Some((2, 5)), "active at the snapshot's index");
    }

    quickcheck::quickcheck! {
        fn any_bytes_decode_without_panicking(bytes: Vec<u8>) -> bool {
            let _ = decode(&bytes, MAX);
            true
        }

        fn any_bytes_after_a_valid_header_are_checked(body: Vec<u8>) -> bool {
            let mut bytes = Vec::from(&MAGIC[..]);
            bytes.push(VERSION);
            bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            bytes.extend_from_slice(&body);
            // Either a machine that encodes back to these very bytes, or an error.
            match decode(&bytes, MAX) {
                Ok(m) => encode(&m, false) == bytes,
                Err(_) => true,
            }
        }
    }
}
