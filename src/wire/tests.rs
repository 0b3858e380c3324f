//! Unit tests of the frame header, the payload reader and every bound.
//! Property tests (round trip, truncation, garbage) are in `tests/wire.rs`.

use super::*;
use crate::kv::Op;
use crate::raft::{Entry, Message, Payload};

fn put(key: &str, value: &str) -> Entry<Command> {
    Entry {
        term: 1,
        payload: Payload::Command(Command { client: 7, seq: 1, op: Op::Put { key: key.into(), value: value.into() } }),
    }
}

fn append_of(entries: Vec<Entry<Command>>) -> Envelope<Command> {
    let message = Message::Append { term: 2, prev_index: 0, prev_term: 0, entries, commit: 0, read_round: 0 };
    Envelope { from: 0, to: 1, message }
}

fn heartbeat() -> Envelope<Command> {
    Envelope { from: 2, to: 0, message: Message::Heartbeat { term: 1, commit: 300, read_round: 5 } }
}

/// A frame around a hand-made payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![MAGIC, VERSION, KIND_PEER];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn malformed(buf: &[u8]) -> Malformed {
    match decode(buf, &Limits::default()) {
        Err(DecodeError::Malformed { reason, .. }) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn heartbeat_bytes_are_postcard() {
    let bytes = encode(&heartbeat(), &Limits::default()).unwrap();
    // from, to, tag 6, term 1, commit 300 = ac 02, read_round 5.
    assert_eq!(bytes, frame(&[2, 0, 6, 1, 0xac, 0x02, 5]));
    assert_eq!(&bytes[HEADER_LEN..], postcard::to_allocvec(&heartbeat()).unwrap());
}

#[test]
fn header_is_checked_byte_by_byte() {
    let limits = Limits::default();
    assert_eq!(decode(&[], &limits), Err(DecodeError::Incomplete { needed: 7 }));
    assert_eq!(decode(&[0x00], &limits), Err(DecodeError::BadMagic { found: 0 }));
    assert_eq!(decode(&[MAGIC], &limits), Err(DecodeError::Incomplete { needed: 6 }));
    assert_eq!(decode(&[MAGIC, 3], &limits), Err(DecodeError::UnsupportedVersion { found: 3 }));
    assert_eq!(
        decode(&[MAGIC, 1], &limits),
        Err(DecodeError::UnsupportedVersion { found: 1 }),
        "before configurations"
    );
    assert_eq!(decode(&[MAGIC, 0], &limits), Err(DecodeError::UnsupportedVersion { found: 0 }));
    assert_eq!(decode(&[MAGIC, VERSION, 0], &limits), Err(DecodeError::UnknownKind { tag: 0 }));
    let snapshot = [MAGIC, VERSION, KIND_INSTALL_SNAPSHOT, 0, 0, 0, 0];
    assert_eq!(decode(&snapshot, &limits), Err(DecodeError::UnknownKind { tag: KIND_INSTALL_SNAPSHOT }));
    assert_eq!(decode(&[MAGIC, VERSION, KIND_PEER, 9], &limits), Err(DecodeError::Incomplete { needed: 3 }));
    let header_only = [MAGIC, VERSION, KIND_PEER, 10, 0, 0, 0];
    assert_eq!(decode(&header_only, &limits), Err(DecodeError::Incomplete { needed: 10 }));
}

#[test]
fn a_configuration_without_voters_or_with_a_server_twice_is_refused() {
    // 1->2 Snapshot t=5 covers=40/3, then voters and learners, total 300,
    // offset 256, two bytes.
    let chunk =
        |voters: u8, learners: u8| frame(&[1, 2, 8, 5, 40, 3, voters, learners, 0xac, 2, 0x80, 2, 2, 0xaa, 0xbb]);
    assert!(decode(&chunk(7, 8), &Limits::default()).is_ok(), "voters {{0,1,2}}, learner 3");
    assert_eq!(malformed(&chunk(3, 1)), Malformed::BadMembership { voters: 3, learners: 1 }, "0 is both");
    assert_eq!(malformed(&chunk(0, 8)), Malformed::BadMembership { voters: 0, learners: 8 }, "no voter");
    // The same check for a configuration entry: 1->2 Append t=5 prev=3/2
    // [5/5 config], commit 2, round 7.
    let append = |voters: u8| frame(&[1, 2, 4, 5, 3, 2, 1, 5, 2, voters, 0, 2, 7]);
    assert!(decode(&append(7), &Limits::default()).is_ok());
    assert_eq!(malformed(&append(0)), Malformed::BadMembership { voters: 0, learners: 0 });
}

#[test]
fn frame_bound_is_checked_from_the_header_alone() {
    let limits = Limits::default();
    let huge = [MAGIC, VERSION, KIND_PEER, 0xff, 0xff, 0xff, 0xff];
    let over = LimitExceeded::FrameBytes { bytes: 7 + u64::from(u32::MAX), max: limits.frame_bytes_max };
    assert_eq!(decode(&huge, &limits), Err(DecodeError::OverLimit(over)));
    // Exactly at the limit: accepted as a header, so the rest is awaited.
    let at = ((limits.frame_bytes_max - HEADER_LEN) as u32).to_le_bytes();
    let header = [MAGIC, VERSION, KIND_PEER, at[0], at[1], at[2], at[3]];
    assert_eq!(decode(&header, &limits), Err(DecodeError::Incomplete { needed: limits.frame_bytes_max - 7 }));
}

#[test]
fn frame_bound_on_encode() {
    let frame_len = encode(&heartbeat(), &Limits::default()).unwrap().len();
    let exact = Limits { frame_bytes_max: frame_len, ..Limits::default() };
    let bytes = encode(&heartbeat(), &exact).unwrap();
    assert_eq!(decode(&bytes, &exact), Ok((heartbeat(), frame_len)));
    let tight = Limits { frame_bytes_max: frame_len - 1, ..Limits::default() };
    let over = LimitExceeded::FrameBytes { bytes: frame_len as u64, max: frame_len - 1 };
    assert_eq!(encode(&heartbeat(), &tight), Err(EncodeError::OverLimit(over)));
    assert_eq!(decode(&bytes, &tight), Err(DecodeError::OverLimit(over)));
    // A refused encode leaves the buffer as it was.
    let mut out = vec![1, 2, 3];
    assert!(encode_into(&heartbeat(), &tight, &mut out).is_err());
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn entry_count_bound() {
    let limits = Limits { entries_per_append_max: 3, ..Limits::default() };
    let three = append_of(vec![put("k", "v"); 3]);
    let bytes = encode(&three, &limits).unwrap();
    assert_eq!(decode(&bytes, &limits), Ok((three, bytes.len())));
    let four = append_of(vec![put("k", "v"); 4]);
    let over = LimitExceeded::EntriesPerAppend { count: 4, max: 3 };
    assert_eq!(encode(&four, &limits), Err(EncodeError::OverLimit(over)));
    let bytes = encode(&four, &Limits::default()).unwrap();
    assert_eq!(decode(&bytes, &limits), Err(DecodeError::OverLimit(over)));
}

#[test]
fn key_and_value_bounds() {
    let limits = Limits { key_bytes_max: 2, value_bytes_max: 3, ..Limits::default() };
    let fits = append_of(vec![put("ab", "abc")]);
    let bytes = encode(&fits, &limits).unwrap();
    assert_eq!(decode(&bytes, &limits), Ok((fits, bytes.len())));

    let long_key = append_of(vec![put("abc", "")]);
    let over = LimitExceeded::KeyBytes { bytes: 3, max: 2 };
    assert_eq!(encode(&long_key, &limits), Err(EncodeError::OverLimit(over)));
    let bytes = encode(&long_key, &Limits::default()).unwrap();
    assert_eq!(decode(&bytes, &limits), Err(DecodeError::OverLimit(over)));

    let long_value = append_of(vec![put("", "abcd")]);
    let over = LimitExceeded::ValueBytes { bytes: 4, max: 3 };
    assert_eq!(encode(&long_value, &limits), Err(EncodeError::OverLimit(over)));
    let bytes = encode(&long_value, &Limits::default()).unwrap();
    assert_eq!(decode(&bytes, &limits), Err(DecodeError::OverLimit(over)));

    // A Get's key is bounded too; it has no value.
    let get = Command { client: 1, seq: 1, op: Op::Get { key: "abc".into() } };
    let long_get = append_of(vec![Entry { term: 1, payload: Payload::Command(get) }]);
    let over = LimitExceeded::KeyBytes { bytes: 3, max: 2 };
    assert_eq!(encode(&long_get, &limits), Err(EncodeError::OverLimit(over)));
}

#[test]
fn huge_declared_lengths_are_refused_before_allocating() {
    // Append with a declared entry count of u64::MAX, then nothing.
    let mut payload = vec![0, 1, 4, 1, 0, 0];
    payload.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    let over = LimitExceeded::EntriesPerAppend { count: u64::MAX, max: Limits::ENTRIES_PER_APPEND_MAX_DEFAULT };
    assert_eq!(decode(&frame(&payload), &Limits::default()), Err(DecodeError::OverLimit(over)));
    // Within the limit but more than the remaining bytes can hold.
    let payload = [0, 1, 4, 1, 0, 0, 100, 0, 0];
    assert_eq!(malformed(&frame(&payload)), Malformed::LengthPastEnd { declared: 100 });
    // A key within its limit but past the end of the payload.
    let payload = [0, 1, 4, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0xe8, 0x07];
    assert_eq!(malformed(&frame(&payload)), Malformed::LengthPastEnd { declared: 1000 });
}

#[test]
fn varints_must_be_canonical_and_in_range() {
    // HeartbeatReply { term, read_round } with various term encodings.
    let reply = |term: &[u8]| {
        let mut payload = vec![0, 1, 7];
        payload.extend_from_slice(term);
        payload.push(0);
        frame(&payload)
    };
    assert!(decode(&reply(&[0x7f]), &Limits::default()).is_ok());
    assert_eq!(malformed(&reply(&[0x80, 0x00])), Malformed::NonCanonicalVarint);
    assert_eq!(malformed(&reply(&[0xff, 0x80, 0x00])), Malformed::NonCanonicalVarint);
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let (envelope, _) = decode(&reply(&max), &Limits::default()).unwrap();
    assert_eq!(envelope.message.term(), u64::MAX);
    let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    assert_eq!(malformed(&reply(&too_big)), Malformed::BadVarint);
    let too_long = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00];
    assert_eq!(malformed(&reply(&too_long)), Malformed::BadVarint);
    // A variant index is a u32 varint: five groups at most, 4 bits in the last.
    let tag = frame(&[0, 1, 0xff, 0xff, 0xff, 0xff, 0x1f]);
    assert_eq!(malformed(&tag), Malformed::BadVarint);
    let tag = frame(&[0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert_eq!(malformed(&tag), Malformed::UnknownVariant { of: "Message", index: u32::MAX });
}

#[test]
fn other_malformed_payloads() {
    assert_eq!(malformed(&frame(&[0, 1, 1, 5, 2])), Malformed::BadBool { found: 2 });
    assert_eq!(malformed(&frame(&[0, 1, 11])), Malformed::UnknownVariant { of: "Message", index: 11 });
    assert_eq!(malformed(&frame(&[0, 1, 9, 5, 1, 1, 2])), Malformed::UnknownVariant { of: "Option", index: 2 });
    // A snapshot chunk declaring more bytes than the payload holds.
    assert_eq!(malformed(&frame(&[0, 1, 8, 5, 1, 1, 7, 0, 9, 0, 5, 1])), Malformed::LengthPastEnd { declared: 5 });
    assert_eq!(malformed(&frame(&[0, 1, 5, 1, 2, 0, 0])), Malformed::UnknownVariant { of: "Result", index: 2 });
    let append = |entry: &[u8]| {
        let mut payload = vec![0, 1, 4, 1, 0, 0, 1];
        payload.extend_from_slice(entry);
        payload.extend_from_slice(&[0, 0]);
        frame(&payload)
    };
    assert!(decode(&append(&[1, 0]), &Limits::default()).is_ok());
    assert_eq!(malformed(&append(&[1, 3])), Malformed::UnknownVariant { of: "Payload", index: 3 });
    assert_eq!(malformed(&append(&[1, 1, 0, 0, 5])), Malformed::UnknownVariant { of: "Op", index: 5 });
    assert_eq!(malformed(&append(&[1, 1, 0, 0, 2, 1, 0xff])), Malformed::BadUtf8);
    assert_eq!(malformed(&frame(&[0, 1, 7, 1])), Malformed::UnexpectedEnd);
    assert_eq!(malformed(&frame(&[0, 1, 7, 1, 0, 0])), Malformed::TrailingBytes { count: 1 });
    assert_eq!(
        decode(&frame(&[0, 1, 7, 1, 0, 0]), &Limits::default()).unwrap_err().to_string(),
        "malformed payload at byte 12: TrailingBytes { count: 1 }"
    );
}

#[test]
fn frames_stop_at_a_partial_tail_and_after_an_error() {
    let limits = Limits::default();
    let mut buf = encode(&heartbeat(), &limits).unwrap();
    encode_into(&append_of(vec![put("k", "v")]), &limits, &mut buf).unwrap();
    let two = buf.len();
    let third = encode(&heartbeat(), &limits).unwrap();
    buf.extend_from_slice(&third[..5]);
    let (messages, used) = decode_all(&buf, &limits).unwrap();
    assert_eq!(messages, [heartbeat(), append_of(vec![put("k", "v")])]);
    assert_eq!(used, two);

    buf.truncate(two);
    buf.push(0x00);
    assert_eq!(decode_all(&buf, &limits), Err(DecodeError::BadMagic { found: 0 }));
    let mut frames = Frames::new(&buf, &limits);
    assert!(matches!(frames.next(), Some(Ok(_))));
    assert!(matches!(frames.next(), Some(Ok(_))));
    assert_eq!(frames.next(), Some(Err(DecodeError::BadMagic { found: 0 })));
    assert_eq!(frames.next(), None);
    assert_eq!(frames.consumed(), two);
}

#[test]
fn heap_bound_grows_with_input_and_is_capped_by_the_entry_limit() {
    let limits = Limits::default();
    let entry = std::mem::size_of::<Entry<Command>>();
    assert_eq!(limits.decode_heap_bytes_max(0), 0);
    assert_eq!(limits.decode_heap_bytes_max(100), 100 + 50 * entry);
    let big = 1 << 20;
    assert_eq!(limits.decode_heap_bytes_max(big), big + limits.entries_per_append_max * entry);
    let huge = usize::MAX;
    assert_eq!(limits.decode_heap_bytes_max(huge), limits.frame_bytes_max + limits.entries_per_append_max * entry);
}
