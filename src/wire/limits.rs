//! [`Limits`]: the hard bounds every frame is checked against, and
//! [`LimitExceeded`], the error both directions report when one is broken.

use crate::kv::Command;
use crate::raft::Entry;
use std::fmt;

/// The smallest number of payload bytes one log entry can occupy: a one-byte
/// term varint and the one-byte `Payload::Noop` tag. The decoder refuses an
/// entry count that the rest of the payload could not possibly hold, which is
/// what keeps its one up-front allocation proportional to the input.
pub const ENTRY_WIRE_BYTES_MIN: usize = 2;

/// Hard bounds on what one frame may carry. Both [`encode`](super::encode)
/// and [`decode`](super::decode) enforce them; the decoder checks each one
/// as soon as the length it bounds has been read, before allocating for it.
///
/// Units are bytes of the encoded form (a key's bytes are its UTF-8 bytes)
/// and counts of entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Largest frame, header included. A header announcing more is refused
    /// before any of the payload is awaited, so a transport never buffers
    /// more than this per connection.
    pub frame_bytes_max: usize,
    /// Most entries in one `Message::Append`. Must be at least the senders'
    /// `Config::max_batch_entries`.
    pub entries_per_append_max: usize,
    /// Longest key of a command carried in an entry.
    pub key_bytes_max: usize,
    /// Longest value of a `Put` or (KV) `Append` command carried in an entry.
    pub value_bytes_max: usize,
    /// Most bytes of snapshot in one `Message::Snapshot` chunk. Must be at
    /// least the senders' `Config::snapshot_chunk_bytes`.
    pub snapshot_chunk_bytes_max: usize,
}

impl Limits {
    /// 4 MiB.
    pub const FRAME_BYTES_MAX_DEFAULT: usize = 4 << 20;
    /// 16 times the default `Config::max_batch_entries` (64).
    pub const ENTRIES_PER_APPEND_MAX_DEFAULT: usize = 1024;
    /// 1 KiB.
    pub const KEY_BYTES_MAX_DEFAULT: usize = 1 << 10;
    /// 32 KiB: a full default batch (64 entries) of the largest commands
    /// still fits in one default frame (`tests/wire.rs` checks it).
    pub const VALUE_BYTES_MAX_DEFAULT: usize = 32 << 10;
    /// 1 MiB: the default `Config::snapshot_chunk_bytes`, well inside a
    /// default frame.
    pub const SNAPSHOT_CHUNK_BYTES_MAX_DEFAULT: usize = 1 << 20;

    /// The most heap bytes one call of [`decode`](super::decode) allocates
    /// on an input of `input_len` bytes, counting the returned message.
    ///
    /// Why it holds: the decoder looks at one frame, at most
    /// `L = min(input_len, frame_bytes_max)` bytes, and allocates only
    /// 1. each key and value, and a snapshot chunk's bytes, exactly its
    ///    length, and the lengths are bytes of the payload, so together at
    ///    most `L`;
    /// 2. the entry vector, once, with exactly the declared count as
    ///    capacity, after checking the count against
    ///    `entries_per_append_max` and against the remaining payload bytes
    ///    divided by [`ENTRY_WIRE_BYTES_MIN`]; it never grows.
    ///
    /// The entry term dominates: a `Noop` entry is 2 bytes on the wire and
    /// `size_of::<Entry<Command>>()` (72 on 64-bit targets) in memory, so
    /// the bound is about `37 × L` for small inputs and `L + 72 KiB` once the
    /// default entry limit caps the count. The `decode` fuzz target asserts
    /// this bound on every input.
    pub fn decode_heap_bytes_max(&self, input_len: usize) -> usize {
        let frame_bytes = input_len.min(self.frame_bytes_max);
        let entries = self.entries_per_append_max.min(frame_bytes / ENTRY_WIRE_BYTES_MIN);
        frame_bytes.saturating_add(entries.saturating_mul(std::mem::size_of::<Entry<Command>>()))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_bytes_max: Limits::FRAME_BYTES_MAX_DEFAULT,
            entries_per_append_max: Limits::ENTRIES_PER_APPEND_MAX_DEFAULT,
            key_bytes_max: Limits::KEY_BYTES_MAX_DEFAULT,
            value_bytes_max: Limits::VALUE_BYTES_MAX_DEFAULT,
            snapshot_chunk_bytes_max: Limits::SNAPSHOT_CHUNK_BYTES_MAX_DEFAULT,
        }
    }
}

/// Which bound of [`Limits`] a frame broke, with the offending size.
///
/// Sizes are `u64` because a decoder reports what the input *declared*,
/// which may not fit in memory, let alone in the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitExceeded {
    /// The whole frame, header included, is `bytes` long.
    FrameBytes { bytes: u64, max: usize },
    /// An `Append` carries `count` entries.
    EntriesPerAppend { count: u64, max: usize },
    /// A command's key is `bytes` long.
    KeyBytes { bytes: u64, max: usize },
    /// A command's value is `bytes` long.
    ValueBytes { bytes: u64, max: usize },
    /// A snapshot chunk carries `bytes` bytes.
    SnapshotChunkBytes { bytes: u64, max: usize },
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitExceeded::FrameBytes { bytes, max } => write!(f, "frame of {bytes} bytes exceeds {max}"),
            LimitExceeded::EntriesPerAppend { count, max } => write!(f, "{count} entries in one Append exceed {max}"),
            LimitExceeded::KeyBytes { bytes, max } => write!(f, "key of {bytes} bytes exceeds {max}"),
            LimitExceeded::ValueBytes { bytes, max } => write!(f, "value of {bytes} bytes exceeds {max}"),
            LimitExceeded::SnapshotChunkBytes { bytes, max } => {
                write!(f, "snapshot chunk of {bytes} bytes exceeds {max}")
            }
        }
    }
}

/// Checks the count and size bounds of a message about to be encoded (the
/// frame size is checked once the payload is encoded).
pub(super) fn check_message(message: &crate::raft::Message<Command>, limits: &Limits) -> Result<(), LimitExceeded> {
    use crate::raft::{Message, Payload};
    if let Message::Snapshot { data, .. } = message {
        if data.len() > limits.snapshot_chunk_bytes_max {
            let (bytes, max) = (data.len() as u64, limits.snapshot_chunk_bytes_max);
            return Err(LimitExceeded::SnapshotChunkBytes { bytes, max });
        }
    }
    let Message::Append { entries, .. } = message else {
        return Ok(());
    };
    if entries.len() > limits.entries_per_append_max {
        return Err(LimitExceeded::EntriesPerAppend {
            count: entries.len() as u64,
            max: limits.entries_per_append_max,
        });
    }
    for entry in entries {
        let Payload::Command(command) = &entry.payload else { continue };
        let key = command.op.key();
        if key.len() > limits.key_bytes_max {
            return Err(LimitExceeded::KeyBytes { bytes: key.len() as u64, max: limits.key_bytes_max });
        }
        if let Some(value) = command.op.value() {
            if value.len() > limits.value_bytes_max {
                return Err(LimitExceeded::ValueBytes { bytes: value.len() as u64, max: limits.value_bytes_max });
            }
        }
    }
    Ok(())
}
