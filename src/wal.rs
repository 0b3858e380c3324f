//! The write-ahead log's bytes, and replaying them: a segment's header, the
//! frame of a record, the changes a record holds, and the rules that
//! rebuild a node's durable state from a run of segments. The layout, the
//! crash rules and why they hold are in
//! [`server::wal`](crate::server::wal)'s module docs; the files are there
//! too. This module is pure (it reads through [`ReadAt`]), so the `wal` fuzz
//! target replays bytes held in memory through exactly the code a server
//! runs on its files.
//!
//! Everything read is untrusted: a frame's length is checked against the
//! bytes left before anything is allocated, a record must decode exactly,
//! and every rule a replay relies on is checked, so damage is a
//! [`ReplayError`] naming the segment and offset, never a panic.

use crate::kv::Command;
use crate::raft::{Entry, HardState, LogIndex, Membership, Snapshot, SnapshotMeta};
use serde::{Deserialize, Serialize};

/// The snapshot file starts with this (see [`encode_snapshot_file`]).
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"RKVSNP01";
/// The snapshot file's header: the magic, the payload's length, its CRC.
pub const SNAPSHOT_HEADER_BYTES: u64 = 20;
/// A segment starts with this, then its number (8 bytes little-endian).
pub const SEGMENT_MAGIC: &[u8; 8] = b"RKVWAL01";
/// A segment's header: the magic and the number.
pub const HEADER_BYTES: u64 = 16;
/// A record's frame: `len: u32 LE`, `crc: u32 LE`, before the payload.
pub const FRAME_BYTES: u64 = 8;
/// Bytes compared per read while checking that a tail is all zeros.
const SCAN_CHUNK: usize = 1 << 16;
/// No index in a record may exceed this (2^62): far beyond any real log,
/// and far enough below `u64::MAX` that index arithmetic cannot overflow.
pub const MAX_INDEX: LogIndex = 1 << 62;

/// Random access to a segment's bytes: a file in the server, a slice in the
/// fuzz target and the tests.
pub trait ReadAt {
    /// The length in bytes.
    fn size(&self) -> std::io::Result<u64>;
    /// Fills `buf` from offset `at` (an error if that runs past the end).
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()>;
}

impl ReadAt for [u8] {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()> {
        let start = usize::try_from(at).unwrap_or(usize::MAX);
        match start.checked_add(buf.len()).and_then(|end| self.get(start..end)) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// One change inside a record, as written (borrowing the batch's entries).
/// Must stay variant for variant the same as [`Op`] (a unit test holds it).
#[derive(Serialize, Debug)]
pub enum OpRef<'a> {
    Checkpoint { hard: HardState, base: SnapshotMeta },
    Compact(SnapshotMeta),
    Log { from: LogIndex, entries: &'a [Entry<Command>] },
    Hard(HardState),
}

/// One change inside a record, as read back.
#[derive(Deserialize, Debug, PartialEq, Eq)]
pub enum Op {
    /// The state as a segment starts (its first record, and only there).
    Checkpoint { hard: HardState, base: SnapshotMeta },
    /// The log now starts after this entry.
    Compact(SnapshotMeta),
    /// A [`LogWrite`](crate::raft::LogWrite): the log from `from` on is
    /// `entries`.
    Log { from: LogIndex, entries: Vec<Entry<Command>> },
    /// The new term and vote.
    Hard(HardState),
}

/// Segment `seq`'s header.
pub fn segment_header(seq: u64) -> [u8; HEADER_BYTES as usize] {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..].copy_from_slice(&seq.to_le_bytes());
    header
}

/// Appends one record holding `ops` to `buf`.
pub fn frame(buf: &mut Vec<u8>, ops: &[OpRef<'_>]) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_BYTES as usize]);
    // Encoding to a Vec fails only on a serde error, which these derived
    // types do not produce.
    let encoded = postcard::to_extend(ops, std::mem::take(buf)).expect("a record encodes");
    *buf = encoded;
    let len = u32::try_from(buf.len() - start - FRAME_BYTES as usize).expect("a record under 4 GiB");
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = record_crc(len, &buf[start + FRAME_BYTES as usize..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record's checksum: CRC-32 of its length's 4 bytes and its payload.
pub fn record_crc(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Decodes a record's payload completely (no trailing bytes).
pub fn decode_record(payload: &[u8]) -> Result<Vec<Op>, String> {
    match postcard::take_from_bytes::<Vec<Op>>(payload) {
        Ok((ops, [])) if !ops.is_empty() => Ok(ops),
        Ok((_, [])) => Err("a record with no change in it".into()),
        Ok((_, rest)) => Err(format!("{} trailing bytes after the record", rest.len())),
        Err(e) => Err(format!("a record that does not decode: {e}")),
    }
}

/// A segment: its number and the largest index of an entry written into it
/// (what decides when it can go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub seq: u64,
    pub max_index: LogIndex,
}

/// Why a replay stopped.
#[derive(Debug)]
pub enum ReplayError {
    /// Reading failed.
    Io(std::io::Error),
    /// Segment `seq` is damaged at `offset`, or (`seq` is `None`) the
    /// segments as a whole are inconsistent.
    Corrupt { seq: Option<u64>, offset: u64, reason: String },
    /// The replayed log breaks a rule of Raft logs at `index`.
    Entry { index: LogIndex, reason: String },
}

impl From<std::io::Error> for ReplayError {
    fn from(e: std::io::Error) -> ReplayError {
        ReplayError::Io(e)
    }
}

/// What a replay rebuilt.
#[derive(Debug)]
pub struct Replayed {
    pub hard: HardState,
    pub base: SnapshotMeta,
    pub log: Vec<Entry<Command>>,
    pub segments: Vec<Segment>,
    /// Where the next record goes in the last segment.
    pub end: u64,
    /// Where the last segment's checkpoint ends (its records start).
    pub checkpoint_end: u64,
    /// A torn record, or stray bytes, lie after `end` (to be zeroed before
    /// anything is written there).
    pub dirty_tail: bool,
}

/// A replay in progress: feed it the segments in order with
/// [`segment`](Replay::segment), then [`finish`](Replay::finish) it.
#[derive(Debug)]
pub struct Replay {
    hard: HardState,
    base: SnapshotMeta,
    log: Vec<Entry<Command>>,
    /// The replay started at a segment whose predecessors were deleted and
    /// has not met a log write yet: the first one may continue an entry
    /// that was in them (a hole).
    may_hole: bool,
    /// The log starts after such a hole: `base.index` is the entry before
    /// it and `base.term` unknown, until a compaction record covers it.
    after_hole: bool,
    segments: Vec<Segment>,
    end: u64,
    checkpoint_end: u64,
    dirty_tail: bool,
}

impl Default for Replay {
    fn default() -> Replay {
        Replay {
            hard: HardState::default(),
            base: SnapshotMeta::default(),
            log: Vec::new(),
            may_hole: false,
            after_hole: false,
            segments: Vec::new(),
            end: HEADER_BYTES,
            checkpoint_end: HEADER_BYTES,
            dirty_tail: false,
        }
    }
}

impl Replay {
    fn last_index(&self) -> LogIndex {
        self.base.index + self.log.len() as u64
    }

    /// Replays segment `seq`, whose bytes `file` holds; `last`: no segment
    /// follows it (only there may a torn record end the records).
    pub fn segment<R: ReadAt + ?Sized>(&mut self, seq: u64, file: &R, last: bool) -> Result<(), ReplayError> {
        let corrupt = |offset: u64, reason: String| ReplayError::Corrupt { seq: Some(seq), offset, reason };
        if let Some(prev) = self.segments.last() {
            if prev.seq.checked_add(1) != Some(seq) {
                let reason =
                    format!("segment {:016x} is missing (it follows {:016x})", prev.seq.saturating_add(1), prev.seq);
                return Err(corrupt(0, reason));
            }
        }
        let first_segment = self.segments.is_empty();
        let len = file.size()?;
        let mut header = [0u8; HEADER_BYTES as usize];
        if len < HEADER_BYTES {
            return Err(corrupt(0, "shorter than a segment header".into()));
        }
        file.read_exact_at(&mut header, 0)?;
        if header != segment_header(seq) {
            return Err(corrupt(0, format!("not the header of segment {seq:016x}: {header:02x?}")));
        }
        let mut segment = Segment { seq, max_index: 0 };
        let mut at = HEADER_BYTES;
        let mut first = true;
        loop {
            let payload = match read_frame(file, at, len)? {
                Frame::End => break,
                Frame::Record(payload) => payload,
                Frame::Bad { reason, declared_end } => {
                    if !(last && nothing_after(file, declared_end, len)?) {
                        return Err(corrupt(at, reason));
                    }
                    // The torn last write: it was never reported durable.
                    self.dirty_tail = true;
                    break;
                }
            };
            let ops = decode_record(&payload).map_err(|reason| corrupt(at, reason))?;
            let opens = first;
            for op in ops {
                let max = self.apply(op, first, first_segment.then_some(seq)).map_err(|reason| corrupt(at, reason))?;
                segment.max_index = segment.max_index.max(max);
                first = false;
            }
            at += FRAME_BYTES + payload.len() as u64;
            if opens {
                self.checkpoint_end = at;
            }
        }
        if first {
            // A segment is named only once its checkpoint is in it.
            return Err(corrupt(HEADER_BYTES, "a segment without its checkpoint".into()));
        }
        if last {
            self.end = at;
            self.dirty_tail |= !nothing_after(file, at, len)?;
        }
        self.segments.push(segment);
        Ok(())
    }

    /// Applies one change ([`DurableState::write`](crate::raft::DurableState::write)'s
    /// rules, checked); `Err` says why the record is corrupt. Returns the
    /// largest index it wrote (0: none).
    ///
    /// `first_in_segment`: the op opens a segment; `first_segment`: the
    /// segment is the first one replayed, numbered so.
    fn apply(&mut self, op: Op, first_in_segment: bool, first_segment: Option<u64>) -> Result<LogIndex, String> {
        let mut max_index = 0;
        match op {
            Op::Checkpoint { base, .. } | Op::Compact(base) if base.index > MAX_INDEX => {
                return Err(format!("index {} is beyond any log", base.index));
            }
            Op::Checkpoint { hard, base } => {
                if !first_in_segment {
                    return Err("a checkpoint that is not a segment's first record".into());
                }
                if let Some(seq) = first_segment {
                    (self.hard, self.base) = (hard, base);
                    self.may_hole = seq > 1;
                } else if hard != self.hard || (!self.after_hole && base != self.base) {
                    return Err(format!(
                        "the checkpoint ({hard:?}, log after {base:?}) disagrees with the records before it \
                         ({:?}, log after {:?})",
                        self.hard, self.base
                    ));
                }
            }
            _ if first_in_segment => return Err("a segment whose first record is not a checkpoint".into()),
            Op::Compact(to) => {
                if to.index > self.base.index || (self.after_hole && to.index == self.base.index) {
                    let drop = (to.index - self.base.index).min(self.log.len() as u64);
                    self.log.drain(..drop as usize);
                    (self.base, self.after_hole) = (to, false);
                }
            }
            Op::Log { from, entries } => {
                if from == 0 {
                    return Err("a log write at index 0".into());
                }
                let last = (from - 1).saturating_add(entries.len() as u64);
                if last > MAX_INDEX || from > MAX_INDEX {
                    return Err(format!("a log write at index {from} runs beyond any log"));
                }
                if !entries.is_empty() {
                    max_index = last;
                }
                let hole = from > self.last_index() + 1;
                // A write into the unknown part before a hole moves the hole.
                if hole || (self.after_hole && from <= self.base.index) {
                    if !(self.may_hole || self.after_hole) {
                        return Err(format!(
                            "a log write at index {from} after last index {} leaves a hole",
                            self.last_index()
                        ));
                    }
                    self.log.clear();
                    (self.base, self.after_hole) = (SnapshotMeta { index: from - 1, term: 0 }, true);
                    self.log.extend(entries);
                } else {
                    let skip = (self.base.index + 1).saturating_sub(from).min(entries.len() as u64);
                    let from = from.max(self.base.index + 1);
                    self.log.truncate((from - self.base.index - 1) as usize);
                    self.log.extend(entries.into_iter().skip(skip as usize));
                }
                self.may_hole = false;
            }
            Op::Hard(h) => self.hard = h,
        }
        Ok(max_index)
    }

    /// Checks what the segments rebuilt as a whole and returns it.
    pub fn finish(self) -> Result<Replayed, ReplayError> {
        let Replay { hard, base, log, after_hole, segments, end, checkpoint_end, dirty_tail, .. } = self;
        if after_hole {
            let reason = format!("the log starts after index {} and no compaction record covers it", base.index);
            return Err(ReplayError::Corrupt { seq: None, offset: 0, reason });
        }
        let mut prev_term = base.term;
        for (k, entry) in log.iter().enumerate() {
            let index = base.index + k as u64 + 1;
            if entry.term < prev_term {
                let reason = format!("term {} is lower than the previous entry's term {prev_term}", entry.term);
                return Err(ReplayError::Entry { index, reason });
            }
            if entry.term > hard.term {
                let reason = format!("term {} is higher than the stored current term {}", entry.term, hard.term);
                return Err(ReplayError::Entry { index, reason });
            }
            prev_term = entry.term;
        }
        Ok(Replayed { hard, base, log, segments, end, checkpoint_end, dirty_tail })
    }
}

/// One frame read at `at` of a segment of `len` bytes.
enum Frame {
    /// Zeros (or the segment's end): no more records.
    End,
    Record(Vec<u8>),
    /// A frame that does not check out; its length says it ends at
    /// `declared_end` (at most the segment's end).
    Bad {
        reason: String,
        declared_end: u64,
    },
}

fn read_frame<R: ReadAt + ?Sized>(file: &R, at: u64, len: u64) -> std::io::Result<Frame> {
    if at + FRAME_BYTES > len {
        let rest = len.saturating_sub(at);
        if rest == 0 || nothing_after(file, at, len)? {
            return Ok(Frame::End);
        }
        return Ok(Frame::Bad { reason: format!("a frame cut short after {rest} bytes"), declared_end: len });
    }
    let mut head = [0u8; FRAME_BYTES as usize];
    file.read_exact_at(&mut head, at)?;
    let size = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if size == 0 && crc == 0 {
        return Ok(Frame::End);
    }
    let declared_end = at + FRAME_BYTES + u64::from(size);
    if size == 0 || declared_end > len {
        let reason = format!("a record of {size} bytes where {} remain", len - at - FRAME_BYTES);
        return Ok(Frame::Bad { reason, declared_end: len });
    }
    // Bounded by the segment's own size, checked just above.
    let mut payload = vec![0u8; size as usize];
    file.read_exact_at(&mut payload, at + FRAME_BYTES)?;
    if record_crc(size, &payload) != crc {
        return Ok(Frame::Bad { reason: format!("a record of {size} bytes fails its checksum"), declared_end });
    }
    Ok(Frame::Record(payload))
}

/// Whether every byte from `from` to `len` is zero.
pub fn nothing_after<R: ReadAt + ?Sized>(file: &R, from: u64, len: u64) -> std::io::Result<bool> {
    let mut chunk = vec![0u8; SCAN_CHUNK];
    let mut at = from;
    while at < len {
        let n = (len - at).min(SCAN_CHUNK as u64) as usize;
        file.read_exact_at(&mut chunk[..n], at)?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// The snapshot file's bytes: a header (the magic, the payload's length as
/// a u64 and its CRC-32, both little-endian), then the payload,
/// postcard's `(meta, membership, data)`.
pub fn encode_snapshot_file(snapshot: &Snapshot) -> Result<Vec<u8>, postcard::Error> {
    let payload = postcard::to_allocvec(&(snapshot.meta, &snapshot.membership, &*snapshot.data))?;
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_BYTES as usize + payload.len());
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// A snapshot file's bytes, as [`encode_snapshot_file`] lays them out, or
/// why they are not one. The bytes come from the disk and are trusted for
/// nothing: every defect is an error, never a panic, and nothing is
/// allocated beyond the snapshot's data (no larger than the bytes). The
/// fuzz target `snapshot` (`raftkv::fuzzing::snapshot_target`) holds it
/// to that. The files are [`server::wal`](crate::server::wal)'s.
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<Snapshot, String> {
    let len = bytes.len() as u64;
    let Some((header, payload)) = bytes.split_at_checked(SNAPSHOT_HEADER_BYTES as usize) else {
        return Err(format!("{len} bytes, shorter than its header"));
    };
    if &header[..8] != SNAPSHOT_MAGIC {
        return Err(format!("not a snapshot file: it starts {:02x?}", &header[..8]));
    }
    let size = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(header[16..].try_into().expect("4 bytes"));
    if size != payload.len() as u64 {
        return Err(format!("says {size} bytes follow its header, {} do", payload.len()));
    }
    if crc32fast::hash(payload) != crc {
        return Err("it fails its checksum".into());
    }
    let (meta, membership, data) = match postcard::take_from_bytes::<(SnapshotMeta, Membership, &[u8])>(payload) {
        Ok((value, [])) => value,
        Ok((_, rest)) => return Err(format!("{} trailing bytes", rest.len())),
        Err(e) => return Err(format!("does not decode: {e}")),
    };
    if !membership.is_well_formed() {
        return Err(format!("its configuration {membership:?} names a voter twice"));
    }
    Ok(Snapshot { meta, membership, data: data.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op as KvOp;
    use crate::raft::Payload;

    fn entry(term: u64, i: u64) -> Entry<Command> {
        let op = KvOp::Put { key: format!("k{i}"), value: format!("v{i}") };
        Entry { term, payload: Payload::Command(Command { client: 1, seq: i, op }) }
    }

    #[test]
    fn the_ops_written_and_read_are_the_same_enum() {
        let entries = vec![entry(1, 1), entry(2, 2)];
        let (hard, base) = (HardState { term: 2, voted_for: None }, SnapshotMeta { index: 3, term: 1 });
        let written = [
            OpRef::Checkpoint { hard, base },
            OpRef::Compact(SnapshotMeta { index: 4, term: 2 }),
            OpRef::Log { from: 5, entries: &entries },
            OpRef::Hard(HardState { term: 3, voted_for: Some(2) }),
        ];
        let mut buf = Vec::new();
        frame(&mut buf, &written);
        let read = decode_record(&buf[FRAME_BYTES as usize..]).unwrap();
        let expected = vec![
            Op::Checkpoint { hard, base },
            Op::Compact(SnapshotMeta { index: 4, term: 2 }),
            Op::Log { from: 5, entries },
            Op::Hard(HardState { term: 3, voted_for: Some(2) }),
        ];
        assert_eq!(read, expected);
    }

    #[test]
    fn a_segment_in_memory_replays_and_a_cut_is_a_torn_tail_only_at_the_end() {
        let mut seg = segment_header(1).to_vec();
        frame(&mut seg, &[OpRef::Checkpoint { hard: HardState::default(), base: SnapshotMeta::default() }]);
        let hard = HardState { term: 1, voted_for: Some(0) };
        let entries = vec![entry(1, 1), entry(1, 2)];
        frame(&mut seg, &[OpRef::Log { from: 1, entries: &entries }, OpRef::Hard(hard)]);
        let whole = seg.len();
        seg.resize(whole + 64, 0);
        let mut replay = Replay::default();
        replay.segment(1, &seg[..], true).unwrap();
        let r = replay.finish().unwrap();
        assert_eq!((r.hard, r.log.len(), r.end, r.dirty_tail), (hard, 2, whole as u64, false));
        // The last record cut short: dropped as torn in the last segment,
        // corrupt in any other.
        let cut = &seg[..whole - 3];
        let mut replay = Replay::default();
        replay.segment(1, cut, true).unwrap();
        assert!(replay.finish().unwrap().log.is_empty());
        let mut replay = Replay::default();
        assert!(matches!(replay.segment(1, cut, false), Err(ReplayError::Corrupt { seq: Some(1), .. })));
    }
}
