//! Properties of the peer wire format (`raftkv::wire`): quickcheck round
//! trips over every `Message` variant, truncation, version refusal, garbage;
//! the pinned bytes of every variant; and the heap behaviour of postcard and
//! of our decoder, measured with a per-thread counting allocator.

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use raftkv::kv::{Command, Op};
use raftkv::raft::{Config, Entry, Envelope, Membership, Message, NodeSet, Payload, RejectHint, SnapshotMeta};
use raftkv::wire::{
    decode, decode_all, encode, encode_into, DecodeError, LimitExceeded, Limits, HEADER_LEN, KIND_PEER, MAGIC, VERSION,
};

// ----- a per-thread counting allocator --------------------------------------

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{peak_heap, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ----- quickcheck generators ------------------------------------------------

/// Any `Envelope<Command>` within the default limits, every `Message`
/// variant equally likely.
#[derive(Clone, Debug)]
struct Env(Envelope<Command>);

/// Numbers that exercise every varint length: small, at the group
/// boundaries, and anything.
fn num(g: &mut Gen) -> u64 {
    const EDGES: [u64; 9] = [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, 1 << 63, u64::MAX];
    match u8::arbitrary(g) % 4 {
        0 => u64::arbitrary(g) % 300,
        1 => *g.choose(&EDGES).unwrap(),
        2 => u64::arbitrary(g) >> (u8::arbitrary(g) % 64),
        _ => u64::arbitrary(g),
    }
}

/// A string of any chars, cut to at most `max` UTF-8 bytes.
fn text(g: &mut Gen, max: usize) -> String {
    let mut out = String::new();
    for c in String::arbitrary(g).chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn op(g: &mut Gen) -> Op {
    let limits = Limits::default();
    let key = text(g, limits.key_bytes_max);
    match u8::arbitrary(g) % 5 {
        0 => Op::Put { key, value: text(g, limits.value_bytes_max) },
        1 => Op::Append { key, value: text(g, limits.value_bytes_max) },
        2 => Op::Delete { key },
        3 => Op::PutIfAbsent { key, value: text(g, limits.value_bytes_max) },
        _ => Op::Get { key },
    }
}

/// A well-formed configuration: voters (at least one) and learners apart.
fn membership(g: &mut Gen) -> Membership {
    let voters = NodeSet::from_bits(u64::arbitrary(g) | 1);
    let learners = NodeSet::from_bits(u64::arbitrary(g) & !voters.bits());
    Membership { voters, learners }
}

fn entry(g: &mut Gen) -> Entry<Command> {
    let payload = match u8::arbitrary(g) % 5 {
        0 | 1 => Payload::Noop,
        2 => Payload::Config(membership(g)),
        _ => {
            Payload::Command(Command { client: u128::from(num(g)) << (u8::arbitrary(g) % 65), seq: num(g), op: op(g) })
        }
    };
    Entry { term: num(g), payload }
}

fn message(g: &mut Gen) -> Message<Command> {
    match u8::arbitrary(g) % 11 {
        0 => Message::PreVote { term: num(g), last_log_index: num(g), last_log_term: num(g) },
        1 => Message::PreVoteReply { term: num(g), granted: bool::arbitrary(g) },
        2 => {
            Message::Vote { term: num(g), last_log_index: num(g), last_log_term: num(g), transfer: bool::arbitrary(g) }
        }
        3 => Message::VoteReply { term: num(g), granted: bool::arbitrary(g) },
        4 => {
            let count = usize::arbitrary(g) % 12;
            let entries = (0..count).map(|_| entry(g)).collect();
            let (term, prev_index, prev_term) = (num(g), num(g), num(g));
            Message::Append { term, prev_index, prev_term, entries, commit: num(g), read_round: num(g) }
        }
        5 => {
            let result = if bool::arbitrary(g) { Ok(num(g)) } else { Err(RejectHint { index: num(g), term: num(g) }) };
            Message::AppendReply { term: num(g), result, read_round: num(g) }
        }
        6 => Message::Heartbeat { term: num(g), commit: num(g), read_round: num(g) },
        7 => Message::HeartbeatReply { term: num(g), read_round: num(g) },
        8 => {
            let meta = SnapshotMeta { index: num(g), term: num(g) };
            let data = (0..usize::arbitrary(g) % 40).map(|_| u8::arbitrary(g)).collect();
            let membership = membership(g);
            Message::Snapshot { term: num(g), meta, membership, total: num(g), offset: num(g), data }
        }
        10 => Message::TimeoutNow { term: num(g) },
        _ => {
            let matched = if bool::arbitrary(g) { Some(num(g)) } else { None };
            Message::SnapshotReply { term: num(g), index: num(g), received: num(g), matched }
        }
    }
}

impl Arbitrary for Env {
    fn arbitrary(g: &mut Gen) -> Self {
        Env(Envelope { from: u8::arbitrary(g), to: u8::arbitrary(g), message: message(g) })
    }

    /// Shrinks an Append's entries (fewer, then simpler), and the ids.
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let mut smaller = Vec::new();
        if let Message::Append { entries, .. } = &self.0.message {
            for skip in 0..entries.len() {
                let mut env = self.0.clone();
                if let Message::Append { entries, .. } = &mut env.message {
                    entries.remove(skip);
                }
                smaller.push(Env(env));
            }
        }
        if self.0.from != 0 || self.0.to != 0 {
            smaller.push(Env(Envelope { from: 0, to: 0, message: self.0.message.clone() }));
        }
        Box::new(smaller.into_iter())
    }
}

fn frame_of(env: &Envelope<Command>) -> Vec<u8> {
    encode(env, &Limits::default()).expect("generated messages are within the default limits")
}

fn qc() -> QuickCheck {
    QuickCheck::new().tests(1_000)
}

// ----- properties -----------------------------------------------------------

#[test]
fn decode_inverts_encode() {
    fn prop(env: Env) -> bool {
        let limits = Limits::default();
        let frame = frame_of(&env.0);
        let (decoded, peak) = peak_heap(|| decode(&frame, &limits));
        let postcard = postcard::from_bytes::<Envelope<Command>>(&frame[HEADER_LEN..]);
        decoded == Ok((env.0.clone(), frame.len()))
            && postcard == Ok(env.0)
            && peak <= limits.decode_heap_bytes_max(frame.len())
    }
    qc().quickcheck(prop as fn(Env) -> bool);
}

#[test]
fn decoding_any_bytes_never_panics() {
    fn prop(bytes: Vec<u8>, framed: bool) -> bool {
        // Half the inputs get a valid header, so the payload reader is hit.
        let data = if framed {
            let mut data = vec![MAGIC, VERSION, KIND_PEER];
            data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            data.extend_from_slice(&bytes);
            data
        } else {
            bytes
        };
        let limits = Limits::default();
        let (_, peak) = peak_heap(|| decode(&data, &limits));
        raftkv::fuzzing::decode_target(&data);
        peak <= limits.decode_heap_bytes_max(data.len())
    }
    qc().quickcheck(prop as fn(Vec<u8>, bool) -> bool);
}

#[test]
fn every_truncation_is_incomplete() {
    fn prop(env: Env) -> bool {
        let frame = frame_of(&env.0);
        (0..frame.len()).all(|cut| {
            let needed = if cut < HEADER_LEN { HEADER_LEN - cut } else { frame.len() - cut };
            decode(&frame[..cut], &Limits::default()) == Err(DecodeError::Incomplete { needed })
        })
    }
    qc().tests(300).quickcheck(prop as fn(Env) -> bool);
}

#[test]
fn another_version_is_refused() {
    fn prop(env: Env, flip: u8) -> TestResult {
        if flip == 0 {
            return TestResult::discard();
        }
        let mut frame = frame_of(&env.0);
        frame[1] ^= flip;
        let found = frame[1];
        TestResult::from_bool(decode(&frame, &Limits::default()) == Err(DecodeError::UnsupportedVersion { found }))
    }
    qc().quickcheck(prop as fn(Env, u8) -> TestResult);
}

#[test]
fn corrupting_a_byte_never_misreads_silently() {
    // No checksum: a flipped payload byte may still be a valid frame, but
    // then it is the canonical frame of what it decodes to (checked by the
    // decode target's oracle), and never a panic.
    fn prop(env: Env, at: usize, flip: u8) -> TestResult {
        let mut frame = frame_of(&env.0);
        if flip == 0 {
            return TestResult::discard();
        }
        let at = at % frame.len();
        frame[at] ^= flip;
        raftkv::fuzzing::decode_target(&frame);
        TestResult::passed()
    }
    qc().quickcheck(prop as fn(Env, usize, u8) -> TestResult);
}

#[test]
fn a_stream_of_frames_decodes_in_order() {
    fn prop(envs: Vec<Env>, tail: Env, cut: usize) -> bool {
        let limits = Limits::default();
        let mut buf = Vec::new();
        for env in &envs {
            encode_into(&env.0, &limits, &mut buf).expect("within limits");
        }
        let complete = buf.len();
        let partial = frame_of(&tail.0);
        buf.extend_from_slice(&partial[..cut % partial.len()]);
        let expected: Vec<_> = envs.into_iter().map(|e| e.0).collect();
        decode_all(&buf, &limits) == Ok((expected, complete))
    }
    qc().tests(200).quickcheck(prop as fn(Vec<Env>, Env, usize) -> bool);
}

// ----- pinned bytes ---------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn command(seq: u64, op: Op) -> Entry<Command> {
    Entry { term: 5, payload: Payload::Command(Command { client: 9, seq, op }) }
}

/// The exact bytes of every variant, written out by hand from
/// `specs/wire.md`. A change here is a wire format change: it needs a new
/// `VERSION` (or a deliberate decision that no deployed peer is affected).
#[test]
fn every_variant_has_pinned_bytes() {
    let put = Op::Put { key: "k".into(), value: "v".into() };
    let append = Op::Append { key: "k".into(), value: "w".into() };
    let get = Op::Get { key: "k".into() };
    let entries = vec![Entry { term: 5, payload: Payload::Noop }, command(1, put), command(2, append), command(3, get)];
    let cases: Vec<(Message<Command>, &str)> = vec![
        (Message::PreVote { term: 5, last_log_index: 3, last_log_term: 2 }, "00 05 03 02"),
        (Message::PreVoteReply { term: 5, granted: true }, "01 05 01"),
        (Message::Vote { term: 300, last_log_index: 3, last_log_term: 2, transfer: false }, "02 ac 02 03 02 00"),
        (Message::Vote { term: 5, last_log_index: 3, last_log_term: 2, transfer: true }, "02 05 03 02 01"),
        (Message::TimeoutNow { term: 5 }, "0a 05"),
        (Message::VoteReply { term: 5, granted: false }, "03 05 00"),
        (
            Message::Append { term: 5, prev_index: 3, prev_term: 2, entries, commit: 2, read_round: 7 },
            "04 05 03 02 04 05 00 05 01 09 01 00 01 6b 01 76 05 01 09 02 01 01 6b 01 77 05 01 09 03 02 01 6b 02 07",
        ),
        (
            Message::Append {
                term: 5,
                prev_index: 3,
                prev_term: 2,
                entries: vec![
                    command(4, Op::Delete { key: "k".into() }),
                    command(5, Op::PutIfAbsent { key: "k".into(), value: "x".into() }),
                ],
                commit: 2,
                read_round: 7,
            },
            "04 05 03 02 02 05 01 09 04 03 01 6b 05 01 09 05 04 01 6b 01 78 02 07",
        ),
        (Message::AppendReply { term: 5, result: Ok(7), read_round: 4 }, "05 05 00 07 04"),
        (
            Message::AppendReply { term: 5, result: Err(RejectHint { index: 3, term: 2 }), read_round: 4 },
            "05 05 01 03 02 04",
        ),
        (Message::Heartbeat { term: 5, commit: 2, read_round: 4 }, "06 05 02 04"),
        (Message::HeartbeatReply { term: u64::MAX, read_round: 0 }, "07 ff ff ff ff ff ff ff ff ff 01 00"),
        (
            Message::Snapshot {
                term: 5,
                meta: SnapshotMeta { index: 40, term: 3 },
                membership: Membership { voters: NodeSet::first(3), learners: NodeSet::from_bits(8) },
                total: 300,
                offset: 256,
                data: vec![0xaa, 0xbb],
            },
            "08 05 28 03 07 08 ac 02 80 02 02 aa bb",
        ),
        (
            Message::Append {
                term: 5,
                prev_index: 3,
                prev_term: 2,
                entries: vec![Entry { term: 5, payload: Payload::Config(Membership::initial(3)) }],
                commit: 2,
                read_round: 7,
            },
            "04 05 03 02 01 05 02 07 00 02 07",
        ),
        (Message::SnapshotReply { term: 5, index: 40, received: 256, matched: None }, "09 05 28 80 02 00"),
        (Message::SnapshotReply { term: 5, index: 40, received: 300, matched: Some(40) }, "09 05 28 ac 02 01 28"),
    ];
    for (message, body) in cases {
        let env = Envelope { from: 1, to: 2, message };
        let payload_len = 2 + body.split(' ').count();
        let expected = format!("d5 02 01 {payload_len:02x} 00 00 00 01 02 {body}");
        let frame = frame_of(&env);
        assert_eq!(hex(&frame), expected, "{env:?}");
        assert_eq!(decode(&frame, &Limits::default()), Ok((env, frame.len())));
    }
}

// ----- limits ---------------------------------------------------------------

/// The largest command the default limits allow, with every number at its
/// longest varint.
fn largest_entry(limits: &Limits) -> Entry<Command> {
    let op = Op::Put { key: "k".repeat(limits.key_bytes_max), value: "v".repeat(limits.value_bytes_max) };
    Entry { term: u64::MAX, payload: Payload::Command(Command { client: u128::MAX, seq: u64::MAX, op }) }
}

#[test]
fn a_full_default_batch_of_the_largest_commands_fits_a_default_frame() {
    let limits = Limits::default();
    let batch = Config::new(0, 3, 0).max_batch_entries;
    assert!(batch <= limits.entries_per_append_max);
    let message = Message::Append {
        term: u64::MAX,
        prev_index: u64::MAX,
        prev_term: u64::MAX,
        entries: vec![largest_entry(&limits); batch],
        commit: u64::MAX,
        read_round: u64::MAX,
    };
    let frame = encode(&Envelope { from: 0, to: 1, message }, &limits).expect("fits");
    assert!(frame.len() <= limits.frame_bytes_max);
}

#[test]
fn over_limit_messages_are_refused_both_ways() {
    let limits = Limits { entries_per_append_max: 2, ..Limits::default() };
    let mut big = largest_entry(&limits);
    if let Payload::Command(Command { op: Op::Put { key, .. }, .. }) = &mut big.payload {
        key.push('!');
    }
    let message =
        Message::Append { term: 1, prev_index: 0, prev_term: 0, entries: vec![big], commit: 0, read_round: 0 };
    let env = Envelope { from: 0, to: 1, message };
    let over = LimitExceeded::KeyBytes { bytes: limits.key_bytes_max as u64 + 1, max: limits.key_bytes_max };
    assert_eq!(encode(&env, &limits), Err(raftkv::wire::EncodeError::OverLimit(over)));
    let loose = Limits { key_bytes_max: usize::MAX, ..limits };
    let frame = encode(&env, &loose).expect("fits the loose limits");
    assert_eq!(decode(&frame, &limits), Err(DecodeError::OverLimit(over)));
}

// ----- heap use: postcard's claim, its limit, and our bound -----------------

/// A varint, as postcard writes lengths.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

#[test]
fn postcard_never_preallocates_past_the_remaining_input() {
    for declared in [u64::MAX >> 1, u64::from(u32::MAX), 1 << 40] {
        let mut input = varint(declared);
        input.extend_from_slice(&[0; 6]);
        let (entries, peak) = peak_heap(|| postcard::from_bytes::<Vec<Entry<Command>>>(&input));
        assert!(entries.is_err());
        assert!(peak < 1024, "Vec<Entry>: declared {declared}, allocated {peak}");
        let (string, peak) = peak_heap(|| postcard::from_bytes::<String>(&input));
        assert!(string.is_err());
        assert!(peak < 1024, "String: declared {declared}, allocated {peak}");
        let (bytes, peak) = peak_heap(|| postcard::from_bytes::<Vec<u8>>(&input));
        assert!(bytes.is_err());
        assert!(peak < 1024, "Vec<u8>: declared {declared}, allocated {peak}");
    }
}

/// Why `wire::decode` is hand-written: postcard checks a declared count
/// against the remaining *bytes*, then serde pre-allocates that many
/// *elements*. A count equal to the remaining bytes makes it allocate about
/// 72 bytes per input byte before failing; our decoder refuses the same
/// count (more than the bytes can hold) before allocating anything.
#[test]
fn postcard_preallocates_per_element_and_our_decoder_does_not() {
    let count = 1000;
    let mut entries = varint(count);
    entries.extend(std::iter::repeat_n(0u8, count as usize));
    let (result, peak) = peak_heap(|| postcard::from_bytes::<Vec<Entry<Command>>>(&entries));
    assert!(result.is_err(), "500 Noop entries, then the input ends");
    let entry = std::mem::size_of::<Entry<Command>>();
    assert!(peak >= count as usize * entry, "postcard allocated {peak} for {} input bytes", entries.len());

    let mut payload = vec![0, 1, 4, 1, 0, 0];
    payload.extend_from_slice(&entries);
    let mut frame = vec![MAGIC, VERSION, KIND_PEER];
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    let (result, peak) = peak_heap(|| decode(&frame, &Limits::default()));
    assert!(matches!(result, Err(DecodeError::Malformed { .. })), "{result:?}");
    assert_eq!(peak, 0);
}

/// The worst case for our decoder: as many 2-byte Noop entries as the entry
/// limit allows. The bound is reached within one `Entry` per entry.
#[test]
fn the_decoder_heap_bound_is_tight_for_noop_floods() {
    let limits = Limits::default();
    let count = limits.entries_per_append_max;
    let entries = vec![Entry { term: 0, payload: Payload::Noop }; count];
    let message = Message::Append { term: 0, prev_index: 0, prev_term: 0, entries, commit: 0, read_round: 0 };
    let frame = frame_of(&Envelope { from: 0, to: 0, message });
    let (result, peak) = peak_heap(|| decode(&frame, &limits));
    assert!(result.is_ok());
    let entry = std::mem::size_of::<Entry<Command>>();
    assert_eq!(peak, count * entry, "one exact allocation for the entries");
    assert!(peak <= limits.decode_heap_bytes_max(frame.len()));
    assert!(peak > 30 * frame.len(), "about 36 heap bytes per input byte: {peak} for {}", frame.len());
}
