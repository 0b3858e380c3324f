//! [`Reader`]: a cursor over one frame's payload that reads postcard's
//! primitives (bytes, LEB128 varints, bools, length-prefixed strings) and
//! turns every defect into a [`DecodeError`] carrying the frame offset.
//!
//! It never allocates except in [`Reader::string`], and only after the
//! length has passed the caller's limit and fits in the remaining input.

use super::error::{DecodeError, Malformed};
use super::limits::LimitExceeded;

/// Reads a payload front to back. `base` is the payload's offset in the
/// frame, so that errors point at the frame byte.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8], base: usize) -> Self {
        Reader { bytes, pos: 0, base }
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// A `Malformed` error at the current position.
    pub(super) fn malformed(&self, reason: Malformed) -> DecodeError {
        DecodeError::Malformed { offset: self.base + self.pos, reason }
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.bytes.get(self.pos).ok_or_else(|| self.malformed(Malformed::UnexpectedEnd))?;
        self.pos += 1;
        Ok(byte)
    }

    /// A bool: exactly 0 or 1.
    pub(super) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            found => {
                self.pos -= 1;
                Err(self.malformed(Malformed::BadBool { found }))
            }
        }
    }

    /// An unsigned LEB128 varint of at most `bits` bits, in canonical form
    /// (no trailing zero groups), as postcard writes them.
    fn varint(&mut self, bits: u32) -> Result<u128, DecodeError> {
        debug_assert!(bits <= 128);
        let start = self.pos;
        let groups_max = bits.div_ceil(7);
        let mut value: u128 = 0;
        for group in 0..groups_max {
            let byte = self.u8()?;
            let payload = u128::from(byte & 0x7f);
            let shift = 7 * group;
            // The last group may only use the bits that are left.
            if group == groups_max - 1 && payload >> (bits - shift) != 0 {
                self.pos = start;
                return Err(self.malformed(Malformed::BadVarint));
            }
            value |= payload << shift;
            if byte & 0x80 == 0 {
                if group > 0 && payload == 0 {
                    self.pos = start;
                    return Err(self.malformed(Malformed::NonCanonicalVarint));
                }
                return Ok(value);
            }
        }
        self.pos = start;
        Err(self.malformed(Malformed::BadVarint))
    }

    /// A `u64` (terms, indexes, ids, sequence numbers, read rounds).
    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.varint(64).map(|v| v as u64)
    }

    /// A `u128` (client ids).
    pub(super) fn u128(&mut self) -> Result<u128, DecodeError> {
        self.varint(128)
    }

    /// An enum variant index (postcard writes it as a `u32` varint).
    pub(super) fn variant(&mut self) -> Result<u32, DecodeError> {
        // A 32-bit varint always fits.
        self.varint(32).map(|v| v as u32)
    }

    /// A sequence or string length (a `usize` varint; 64-bit everywhere on
    /// the wire, so 32-bit hosts see oversized lengths as over the limit).
    pub(super) fn len(&mut self) -> Result<u64, DecodeError> {
        self.varint(64).map(|v| v as u64)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes. `over` builds
    /// the limit error (key or value) from the declared length.
    pub(super) fn string(
        &mut self,
        max: usize,
        over: impl FnOnce(u64) -> LimitExceeded,
    ) -> Result<String, DecodeError> {
        let bytes = self.bounded(max, over)?;
        let text = std::str::from_utf8(bytes).map_err(|_| self.malformed(Malformed::BadUtf8))?;
        self.pos += bytes.len();
        Ok(text.to_owned())
    }

    /// A length-prefixed byte string of at most `max` bytes (checked, like
    /// the length against the remaining input, before allocating).
    pub(super) fn bytes(
        &mut self,
        max: usize,
        over: impl FnOnce(u64) -> LimitExceeded,
    ) -> Result<Vec<u8>, DecodeError> {
        let bytes = self.bounded(max, over)?;
        self.pos += bytes.len();
        Ok(bytes.to_vec())
    }

    /// Reads a length prefix and returns the field it announces, not yet
    /// consumed: at most `max` bytes (`over` builds the limit error from the
    /// declared length) and within the input, both checked before anything
    /// is allocated.
    fn bounded(&mut self, max: usize, over: impl FnOnce(u64) -> LimitExceeded) -> Result<&'a [u8], DecodeError> {
        let declared = self.len()?;
        if declared > max as u64 {
            return Err(DecodeError::OverLimit(over(declared)));
        }
        if declared > self.remaining() as u64 {
            return Err(self.malformed(Malformed::LengthPastEnd { declared }));
        }
        // Both checks passed, so the length fits in usize and in the input.
        Ok(&self.bytes[self.pos..self.pos + declared as usize])
    }

    /// An `Option<u64>`: postcard's tag byte (0 or 1), then the value.
    pub(super) fn option_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            index => {
                self.pos -= 1;
                Err(self.malformed(Malformed::UnknownVariant { of: "Option", index: u32::from(index) }))
            }
        }
    }

    /// Fails unless every payload byte was read.
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.malformed(Malformed::TrailingBytes { count })),
        }
    }
}
