//! The payload of a peer frame: an `Envelope<Command>` in postcard's
//! encoding. Encoding is postcard itself (serde derive); decoding is this
//! hand-written reader of the same bytes, which enforces [`Limits`] before
//! it allocates (see the module docs of [`wire`](super) for why).
//!
//! The enum tags below are postcard's variant indexes, i.e. declaration
//! order in `src/raft/types.rs` and `src/kv/mod.rs`. `tests/wire.rs` pins
//! the bytes of every variant, so a reordering there fails a test instead of
//! silently changing the wire.

use super::error::{DecodeError, EncodeError, Malformed};
use super::limits::{LimitExceeded, Limits, ENTRY_WIRE_BYTES_MIN};
use super::reader::Reader;
use crate::kv::{Command, Op};
use crate::raft::{Entry, Envelope, Membership, Message, NodeSet, Payload, RejectHint, SnapshotMeta};

/// Appends the postcard encoding of `envelope` to `out`. On error, `out`
/// may hold part of it; the caller truncates.
pub(super) fn encode_envelope(envelope: &Envelope<Command>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    postcard::to_extend(envelope, Append(out)).map(|_| ()).map_err(|e| EncodeError::Serialize(e.to_string()))
}

/// Lets postcard's `to_extend` write into a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Reads one `Envelope<Command>` that must fill the reader exactly.
pub(super) fn decode_envelope(r: &mut Reader<'_>, limits: &Limits) -> Result<Envelope<Command>, DecodeError> {
    let from = r.u8()?;
    let to = r.u8()?;
    let message = decode_message(r, limits)?;
    r.finish()?;
    Ok(Envelope { from, to, message })
}

fn decode_message(r: &mut Reader<'_>, limits: &Limits) -> Result<Message<Command>, DecodeError> {
    let message = match r.variant()? {
        0 => {
            let (term, last_log_index, last_log_term) = (r.u64()?, r.u64()?, r.u64()?);
            Message::PreVote { term, last_log_index, last_log_term }
        }
        1 => {
            let (term, granted) = (r.u64()?, r.bool()?);
            Message::PreVoteReply { term, granted }
        }
        2 => {
            let (term, last_log_index, last_log_term, transfer) = (r.u64()?, r.u64()?, r.u64()?, r.bool()?);
            Message::Vote { term, last_log_index, last_log_term, transfer }
        }
        3 => {
            let (term, granted) = (r.u64()?, r.bool()?);
            Message::VoteReply { term, granted }
        }
        4 => {
            let (term, prev_index, prev_term) = (r.u64()?, r.u64()?, r.u64()?);
            let entries = decode_entries(r, limits)?;
            let (commit, read_round) = (r.u64()?, r.u64()?);
            Message::Append { term, prev_index, prev_term, entries, commit, read_round }
        }
        5 => {
            let term = r.u64()?;
            let result = match r.variant()? {
                0 => Ok(r.u64()?),
                1 => {
                    let (index, term) = (r.u64()?, r.u64()?);
                    Err(RejectHint { index, term })
                }
                index => return Err(unknown(r, "Result", index)),
            };
            let read_round = r.u64()?;
            Message::AppendReply { term, result, read_round }
        }
        6 => {
            let (term, commit, read_round) = (r.u64()?, r.u64()?, r.u64()?);
            Message::Heartbeat { term, commit, read_round }
        }
        7 => {
            let (term, read_round) = (r.u64()?, r.u64()?);
            Message::HeartbeatReply { term, read_round }
        }
        8 => {
            let term = r.u64()?;
            let meta = SnapshotMeta { index: r.u64()?, term: r.u64()? };
            let membership = decode_membership(r)?;
            let (total, offset) = (r.u64()?, r.u64()?);
            let max = limits.snapshot_chunk_bytes_max;
            let data = r.bytes(max, |bytes| LimitExceeded::SnapshotChunkBytes { bytes, max })?;
            Message::Snapshot { term, meta, membership, total, offset, data }
        }
        9 => {
            let (term, index, received) = (r.u64()?, r.u64()?, r.u64()?);
            let matched = r.option_u64()?;
            Message::SnapshotReply { term, index, received, matched }
        }
        10 => Message::TimeoutNow { term: r.u64()? },
        index => return Err(unknown(r, "Message", index)),
    };
    Ok(message)
}

/// The entry vector: the count is checked against the limit and against
/// what the rest of the payload can hold, then allocated once, exactly.
fn decode_entries(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<Entry<Command>>, DecodeError> {
    let declared = r.len()?;
    let max = limits.entries_per_append_max;
    if declared > max as u64 {
        return Err(DecodeError::OverLimit(LimitExceeded::EntriesPerAppend { count: declared, max }));
    }
    if declared > (r.remaining() / ENTRY_WIRE_BYTES_MIN) as u64 {
        return Err(r.malformed(Malformed::LengthPastEnd { declared }));
    }
    let count = declared as usize;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(decode_entry(r, limits)?);
    }
    Ok(entries)
}

fn decode_entry(r: &mut Reader<'_>, limits: &Limits) -> Result<Entry<Command>, DecodeError> {
    let term = r.u64()?;
    let payload = match r.variant()? {
        0 => Payload::Noop,
        1 => Payload::Command(decode_command(r, limits)?),
        2 => Payload::Config(decode_membership(r)?),
        index => return Err(unknown(r, "Payload", index)),
    };
    Ok(Entry { term, payload })
}

/// Voters then learners, each a `u64` bitmask of node ids; disjoint, with
/// at least one voter.
fn decode_membership(r: &mut Reader<'_>) -> Result<Membership, DecodeError> {
    let (voters, learners) = (NodeSet::from_bits(r.u64()?), NodeSet::from_bits(r.u64()?));
    let membership = Membership { voters, learners };
    if !membership.can_lead_a_cluster() {
        return Err(r.malformed(Malformed::BadMembership { voters: voters.bits(), learners: learners.bits() }));
    }
    Ok(membership)
}

fn decode_command(r: &mut Reader<'_>, limits: &Limits) -> Result<Command, DecodeError> {
    let (client, seq) = (r.u128()?, r.u64()?);
    let key_max = limits.key_bytes_max;
    let value_max = limits.value_bytes_max;
    let key = |r: &mut Reader<'_>| r.string(key_max, |bytes| LimitExceeded::KeyBytes { bytes, max: key_max });
    let value = |r: &mut Reader<'_>| r.string(value_max, |bytes| LimitExceeded::ValueBytes { bytes, max: value_max });
    let op = match r.variant()? {
        0 => {
            let key = key(r)?;
            Op::Put { key, value: value(r)? }
        }
        1 => {
            let key = key(r)?;
            Op::Append { key, value: value(r)? }
        }
        2 => Op::Get { key: key(r)? },
        3 => Op::Delete { key: key(r)? },
        4 => {
            let key = key(r)?;
            Op::PutIfAbsent { key, value: value(r)? }
        }
        index => return Err(unknown(r, "Op", index)),
    };
    Ok(Command { client, seq, op })
}

fn unknown(r: &Reader<'_>, of: &'static str, index: u32) -> DecodeError {
    r.malformed(Malformed::UnknownVariant { of, index })
}
