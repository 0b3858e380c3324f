//! The errors of [`decode`](super::decode) and [`encode`](super::encode).
//!
//! Every way untrusted bytes can be wrong is a value here; the decoder never
//! panics. A transport needs to tell three groups apart:
//! - [`DecodeError::Incomplete`]: not an error yet, read more bytes;
//! - [`DecodeError::UnsupportedVersion`] and [`DecodeError::UnknownKind`]:
//!   the peer speaks something newer, so log it distinctly and close;
//! - everything else: the peer is broken or hostile, close the connection.

use super::limits::LimitExceeded;
use std::fmt;

/// Why a buffer does not start with a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer holds a valid-so-far prefix of a frame. At least `needed`
    /// more bytes must arrive before decoding can succeed: the exact rest of
    /// the frame once its header is complete, the rest of the header before.
    Incomplete { needed: usize },
    /// The first byte is not [`MAGIC`](super::MAGIC): not a raftkv stream.
    BadMagic { found: u8 },
    /// A version this decoder does not speak. Nothing after the version
    /// byte is interpreted.
    UnsupportedVersion { found: u8 },
    /// A frame kind this version does not define (or reserves for later,
    /// like [`KIND_INSTALL_SNAPSHOT`](super::KIND_INSTALL_SNAPSHOT)).
    UnknownKind { tag: u8 },
    /// A bound of [`Limits`](super::Limits) is broken; checked as soon as
    /// the offending length is read, before anything is allocated for it.
    OverLimit(LimitExceeded),
    /// The payload is not a valid encoding of an `Envelope<Command>`.
    /// `offset` is where the reader stood, counted from the frame's first
    /// byte: at the offending value, or just after an unknown enum tag.
    Malformed { offset: usize, reason: Malformed },
}

/// What exactly is wrong in a [`DecodeError::Malformed`] payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// The payload ended in the middle of a value.
    UnexpectedEnd,
    /// A varint is too long or too big for its type.
    BadVarint,
    /// A varint has superfluous trailing zero groups (e.g. `80 00` for 0).
    /// Refused so that every message has exactly one encoding.
    NonCanonicalVarint,
    /// A bool byte other than 0 or 1.
    BadBool { found: u8 },
    /// An enum tag out of range for the enum named `of`.
    UnknownVariant { of: &'static str, index: u32 },
    /// A key or value is not UTF-8.
    BadUtf8,
    /// A declared length (of a string, or an entry count times the smallest
    /// entry) is more than what is left of the payload.
    LengthPastEnd { declared: u64 },
    /// The message ended `count` bytes before the payload did.
    TrailingBytes { count: usize },
    /// A configuration without voters, or naming a server both voter and
    /// learner (the bitmasks of each).
    BadMembership { voters: u64, learners: u64 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete { needed } => write!(f, "incomplete frame: {needed} more bytes needed"),
            DecodeError::BadMagic { found } => write!(f, "bad magic byte {found:#04x}"),
            DecodeError::UnsupportedVersion { found } => write!(f, "unsupported wire version {found}"),
            DecodeError::UnknownKind { tag } => write!(f, "unknown frame kind {tag}"),
            DecodeError::OverLimit(limit) => write!(f, "{limit}"),
            DecodeError::Malformed { offset, reason } => write!(f, "malformed payload at byte {offset}: {reason:?}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The message breaks a bound of [`Limits`](super::Limits); a peer
    /// would refuse it, so it is not sent.
    OverLimit(LimitExceeded),
    /// The serializer failed. postcard writing into a `Vec` has no failure
    /// mode for these types; kept as a value rather than a panic.
    Serialize(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::OverLimit(limit) => write!(f, "{limit}"),
            EncodeError::Serialize(message) => write!(f, "serialization failed: {message}"),
        }
    }
}

impl std::error::Error for EncodeError {}
