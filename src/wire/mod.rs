//! The peer wire format: how an `Envelope<Command>` travels between two
//! raftkv servers as bytes. The full specification, for implementers in
//! other languages, is `specs/wire.md`.
//!
//! A stream is a sequence of frames:
//!
//! ```text
//! [magic u8 = 0xD5][version u8 = 1][kind u8][payload_len u32 LE][payload]
//! ```
//!
//! Kind [`KIND_PEER`] carries one `Envelope<Command>` (every Raft
//! `Message`); [`KIND_INSTALL_SNAPSHOT`] is reserved. [`encode`] builds a
//! frame, [`decode`] reads the first frame of a buffer and says how many
//! bytes it used, and [`decode_all`] / [`Frames`] read every complete frame
//! of a buffer, leaving a partial one for later. [`Limits`] holds the hard
//! bounds; both directions enforce them.
//!
//! # Why postcard to encode but a hand-written decoder
//!
//! The payload is postcard 1.x's encoding of the serde-derived types, and
//! [`encode`] calls postcard. postcard's *decoder* is safe against huge
//! declared lengths (it pre-allocates a `Vec` only when the declared length
//! fits in the remaining input, `tests/wire.rs` checks it), but it cannot
//! meet our bounds: the check is per *byte*, and serde then pre-allocates
//! per *element*. A 2-byte `Noop` entry is a 72-byte `Entry<Command>`, so a
//! declared count equal to the remaining bytes makes postcard allocate up to
//! 36 times the input (capped at 1 MiB per vector) before the first entry
//! is read, and growing the vector costs more. The entry count limit could
//! only be checked after all that. So [`decode`] is a hand-written reader of
//! exactly postcard's bytes (under 300 lines with docs, in `payload.rs` and
//! `reader.rs`) that checks every count and length against [`Limits`] and
//! against the remaining input *before* allocating, allocates each vector
//! and string once at its exact size, and refuses non-canonical varints, so
//! every message has exactly one encoding. The tests and the `decode` fuzz
//! target check it against postcard's own decoder.
//!
//! The decoder's heap use is bounded by
//! [`Limits::decode_heap_bytes_max`]: at most the input length plus one
//! `Entry<Command>` per two input bytes, capped by the entry limit.
//!
//! ```
//! use raftkv::raft::{Envelope, Message};
//! use raftkv::wire::{decode, encode, DecodeError, Limits};
//! let limits = Limits::default();
//! let sent = Envelope { from: 0, to: 1, message: Message::HeartbeatReply { term: 3, read_round: 9 } };
//! let frame = encode(&sent, &limits).unwrap();
//! assert_eq!(decode(&frame, &limits), Ok((sent, frame.len())));
//! assert_eq!(decode(&frame[..4], &limits), Err(DecodeError::Incomplete { needed: 3 }));
//! ```

mod error;
mod limits;
mod payload;
mod reader;
#[cfg(test)]
mod tests;

pub use error::{DecodeError, EncodeError, Malformed};
pub use limits::{LimitExceeded, Limits, ENTRY_WIRE_BYTES_MIN};

use crate::kv::Command;
use crate::raft::Envelope;
use reader::Reader;

/// First byte of every frame.
pub const MAGIC: u8 = 0xD5;
/// The wire version this code speaks. See `specs/wire.md` for when it changes.
pub const VERSION: u8 = 2;
/// Frame kind: one peer message, an `Envelope<Command>`.
pub const KIND_PEER: u8 = 1;
/// Frame kind reserved for InstallSnapshot chunks; refused until defined.
pub const KIND_INSTALL_SNAPSHOT: u8 = 2;
/// Bytes before the payload: magic, version, kind and the `u32` length.
pub const HEADER_LEN: usize = 7;

/// Encodes `envelope` as one frame.
///
/// Refuses a message that breaks a bound of `limits`, since the peer would
/// refuse it anyway.
pub fn encode(envelope: &Envelope<Command>, limits: &Limits) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(envelope, limits, &mut out)?;
    Ok(out)
}

/// Appends one frame for `envelope` to `out` (to batch several frames in
/// one buffer). On error `out` is left as it was.
pub fn encode_into(envelope: &Envelope<Command>, limits: &Limits, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    limits::check_message(&envelope.message, limits).map_err(EncodeError::OverLimit)?;
    let start = out.len();
    out.extend_from_slice(&[MAGIC, VERSION, KIND_PEER, 0, 0, 0, 0]);
    if let Err(e) = payload::encode_envelope(envelope, out) {
        out.truncate(start);
        return Err(e);
    }
    let frame_bytes = out.len() - start;
    match u32::try_from(frame_bytes - HEADER_LEN) {
        Ok(payload_len) if frame_bytes <= limits.frame_bytes_max => {
            out[start + 3..start + HEADER_LEN].copy_from_slice(&payload_len.to_le_bytes());
            Ok(())
        }
        _ => {
            out.truncate(start);
            let max = limits.frame_bytes_max;
            Err(EncodeError::OverLimit(LimitExceeded::FrameBytes { bytes: frame_bytes as u64, max }))
        }
    }
}

/// Decodes the frame at the start of `buf`: the message and how many bytes
/// of `buf` the frame used. Bytes after the frame are not looked at.
///
/// The header is checked byte by byte as far as it has arrived, so a
/// garbage stream is refused at its first byte rather than reported
/// [`Incomplete`](DecodeError::Incomplete), and a too-large frame is refused
/// from its header alone. Never panics.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<(Envelope<Command>, usize), DecodeError> {
    let payload_len = decode_header(buf, limits)?;
    let frame_bytes = HEADER_LEN + payload_len;
    let Some(payload) = buf.get(HEADER_LEN..frame_bytes) else {
        return Err(DecodeError::Incomplete { needed: frame_bytes - buf.len() });
    };
    let envelope = payload::decode_envelope(&mut Reader::new(payload, HEADER_LEN), limits)?;
    Ok((envelope, frame_bytes))
}

/// Checks the header at the start of `buf` and returns the payload length,
/// which is known to fit in `limits.frame_bytes_max`.
fn decode_header(buf: &[u8], limits: &Limits) -> Result<usize, DecodeError> {
    let incomplete = || DecodeError::Incomplete { needed: HEADER_LEN - buf.len() };
    match buf.first() {
        None => return Err(incomplete()),
        Some(&MAGIC) => {}
        Some(&found) => return Err(DecodeError::BadMagic { found }),
    }
    match buf.get(1) {
        None => return Err(incomplete()),
        Some(&VERSION) => {}
        Some(&found) => return Err(DecodeError::UnsupportedVersion { found }),
    }
    match buf.get(2) {
        None => return Err(incomplete()),
        Some(&KIND_PEER) => {}
        Some(&tag) => return Err(DecodeError::UnknownKind { tag }),
    }
    let Some(&[b0, b1, b2, b3]) = buf.get(3..HEADER_LEN) else {
        return Err(incomplete());
    };
    let payload_len = u32::from_le_bytes([b0, b1, b2, b3]);
    let frame_bytes = HEADER_LEN as u64 + u64::from(payload_len);
    if frame_bytes > limits.frame_bytes_max as u64 {
        return Err(DecodeError::OverLimit(LimitExceeded::FrameBytes {
            bytes: frame_bytes,
            max: limits.frame_bytes_max,
        }));
    }
    // It is at most frame_bytes_max, a usize.
    Ok(payload_len as usize)
}

/// Decodes every complete frame at the start of `buf`. Returns the messages
/// and the number of bytes they used; the rest of `buf` is a prefix of the
/// next frame (keep it and append what arrives next). The first invalid
/// frame fails the whole call: the connection it came from is broken and
/// should be closed (dropping the messages before it is safe in Raft).
pub fn decode_all(buf: &[u8], limits: &Limits) -> Result<(Vec<Envelope<Command>>, usize), DecodeError> {
    let mut frames = Frames::new(buf, limits);
    let messages = frames.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((messages, frames.consumed()))
}

/// An iterator over the complete frames at the start of a buffer.
///
/// Yields `Ok(message)` per frame; stops at the first incomplete frame
/// (not an error: see [`Frames::consumed`]) or after yielding the first
/// error.
#[derive(Debug)]
pub struct Frames<'a> {
    buf: &'a [u8],
    limits: &'a Limits,
    consumed: usize,
    done: bool,
}

impl<'a> Frames<'a> {
    /// Frames of `buf`, checked against `limits`.
    pub fn new(buf: &'a [u8], limits: &'a Limits) -> Self {
        Frames { buf, limits, consumed: 0, done: false }
    }

    /// Bytes used by the frames yielded so far.
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}

impl Iterator for Frames<'_> {
    type Item = Result<Envelope<Command>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.buf.get(self.consumed..).unwrap_or_default();
        match decode(rest, self.limits) {
            Ok((envelope, used)) => {
                self.consumed += used;
                Some(Ok(envelope))
            }
            Err(DecodeError::Incomplete { .. }) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
