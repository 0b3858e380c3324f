//! The `wal` target: bytes → up to three write-ahead log segments →
//! [`wal::Replay`](crate::wal::Replay), the code a server runs on its files
//! at every start.
//!
//! The input is laid out by hand so that seeds are easy to write (real
//! segments, `tests/fuzz_corpus.rs` `write_wal_seeds`): one flags byte
//! (bits 0–1: how many segments, 1 to 3; bit 2: leave the records' checksums
//! as they are, otherwise recompute each so that mutations reach the record
//! decoder and the replay rules behind the CRC; bits 3–4: the first segment's
//! number, 1 to 4), then per segment a 2-byte little-endian length and that
//! many bytes (header included).
//!
//! A replay must return an error or a state, never panic. A state must
//! survive a round trip: written as one fresh segment (its checkpoint and one
//! log write) and replayed, it comes back the same.

use crate::wal::{frame, record_crc, segment_header, OpRef, Replay, FRAME_BYTES, HEADER_BYTES};

/// See the module docs.
pub fn wal_target(data: &[u8]) {
    wal_replays(data);
}

/// [`wal_target`], saying whether the bytes replayed to a state (rather
/// than an error), so that the corpus test can tell that its seeds reach
/// past the checks.
pub fn wal_replays(data: &[u8]) -> bool {
    let Some((&flags, mut rest)) = data.split_first() else { return false };
    let count = 1 + usize::from(flags & 3).min(2);
    let keep_crcs = flags & 4 != 0;
    let first_seq = 1 + u64::from((flags >> 3) & 3);
    let mut segments = Vec::new();
    for k in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else { break };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        let mut segment = bytes.to_vec();
        if !keep_crcs {
            fix_crcs(&mut segment);
        }
        segments.push((first_seq + k as u64, segment));
        rest = tail;
    }
    let mut replay = Replay::default();
    for (k, (seq, segment)) in segments.iter().enumerate() {
        if replay.segment(*seq, &segment[..], k + 1 == segments.len()).is_err() {
            return false;
        }
    }
    let Ok(r) = replay.finish() else { return false };
    let last_len = segments.last().map_or(0, |(_, s)| s.len() as u64);
    assert!(r.end <= last_len.max(HEADER_BYTES), "the next record goes at {} of a {last_len}-byte segment", r.end);
    let mut again = segment_header(1).to_vec();
    frame(&mut again, &[OpRef::Checkpoint { hard: r.hard, base: r.base }]);
    if !r.log.is_empty() {
        frame(&mut again, &[OpRef::Log { from: r.base.index + 1, entries: &r.log }]);
    }
    let mut replay = Replay::default();
    replay.segment(1, &again[..], true).expect("a rebuilt state written again replays");
    let back = replay.finish().expect("a rebuilt state written again is consistent");
    assert_eq!((back.hard, back.base, &back.log), (r.hard, r.base, &r.log), "the round trip changed the state");
    true
}

/// Recomputes the checksum of every frame laid out after the header, as
/// the lengths say, so that a mutated payload is read rather than refused.
fn fix_crcs(segment: &mut [u8]) {
    let mut at = HEADER_BYTES as usize;
    while let Some(head) = segment.get(at..at + FRAME_BYTES as usize) {
        let size = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let start = at + FRAME_BYTES as usize;
        let Some(payload) = segment.get(start..start.saturating_add(size)) else { return };
        if size == 0 {
            return;
        }
        let crc = record_crc(size as u32, payload);
        segment[at + 4..start].copy_from_slice(&crc.to_le_bytes());
        at = start + size;
    }
}
