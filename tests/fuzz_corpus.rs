//! Replays every committed fuzz seed (`fuzz/corpus/<target>/*`) through the
//! same function the cargo-fuzz target calls (`raftkv::fuzzing`), on the
//! stable toolchain, as part of `cargo test`. A fixed bug whose input was
//! added to the corpus stays fixed.
//!
//! `node/term-overflow-at-u64-max` is such an input: a peer claiming term
//! `u64::MAX` made the node's next campaign overflow (fixed by `TERM_MAX`).

use std::path::{Path, PathBuf};

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> =
        entries.map(|entry| entry.expect("a readable directory entry").path()).filter(|path| path.is_file()).collect();
    files.sort();
    files
}

/// A target's body, as in `raftkv::fuzzing`.
type Body = fn(&[u8]);

/// Runs `body` on every file of `target`'s corpus, naming the file that
/// panics.
fn replay(target: &str, body: Body) {
    let files = corpus_files(target);
    assert!(!files.is_empty(), "no seeds for the {target} target");
    for path in files {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(
            outcome.is_ok(),
            "fuzz/corpus/{target}/{} fails",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
    }
}

#[test]
fn decode_corpus() {
    replay("decode", raftkv::fuzzing::decode_target);
}

#[test]
fn node_corpus() {
    replay("node", raftkv::fuzzing::node_target);
}

/// Together the node seeds drive every snapshot path: a snapshot received
/// whole, installed and loaded, a compaction after a snapshot taken, chunks
/// sent by a leader node, and a restart from a snapshot. (A change to the
/// target's input format that loses them shows here.)
#[test]
fn node_corpus_reaches_snapshots() {
    let mut total = raftkv::fuzzing::NodeReached::default().paths();
    for path in corpus_files("node") {
        let data = std::fs::read(&path).expect("a readable seed");
        let r = raftkv::fuzzing::node_run(&data, raftkv::raft::InjectedBugs::default());
        for ((_, sum), (_, n)) in total.iter_mut().zip(r.paths()) {
            *sum += n;
        }
    }
    assert!(total.iter().all(|&(_, n)| n > 0), "the node seeds miss a snapshot path: {total:?}");
}

/// Prints, for each snapshot path, the smallest input of a directory that
/// reaches it: how the node seeds were picked from a fuzzing run. Run with
/// `RAFTKV_PICK_DIR=fuzz/work/node cargo test --test fuzz_corpus -- --ignored pick_node_seeds --nocapture`.
#[test]
#[ignore = "reads a fuzzing run's corpus; run by hand"]
fn pick_node_seeds() {
    let dir = std::env::var("RAFTKV_PICK_DIR").expect("RAFTKV_PICK_DIR names a corpus directory");
    let mut best: [Option<(usize, PathBuf)>; 7] = Default::default();
    for entry in std::fs::read_dir(&dir).expect("a readable directory") {
        let path = entry.expect("a readable directory entry").path();
        let data = std::fs::read(&path).expect("a readable input");
        let outcome =
            std::panic::catch_unwind(|| raftkv::fuzzing::node_run(&data, raftkv::raft::InjectedBugs::default()));
        let Ok(r) = outcome else { continue };
        for (slot, (_, count)) in best.iter_mut().zip(r.paths()) {
            if count > 0 && slot.as_ref().is_none_or(|(len, _)| data.len() < *len) {
                *slot = Some((data.len(), path.clone()));
            }
        }
    }
    let names = raftkv::fuzzing::NodeReached::default().paths().map(|(name, _)| name);
    for (name, slot) in names.iter().zip(best) {
        println!("{name}: {slot:?}");
    }
}

#[test]
fn cluster_corpus() {
    replay("cluster", raftkv::fuzzing::cluster_target);
}

#[test]
fn lincheck_corpus() {
    replay("lincheck", raftkv::fuzzing::lincheck_target);
}

#[test]
fn wal_corpus() {
    replay("wal", raftkv::fuzzing::wal_target);
    // The hand-made seeds are real histories: each replays to a state.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wal");
    for name in ["seed-short", "seed-rolled", "seed-compacted", "seed-torn"] {
        let data = std::fs::read(dir.join(name)).expect("a committed seed");
        assert!(raftkv::fuzzing::wal_replays(&data), "{name} does not replay");
    }
}

#[test]
fn snapshot_corpus() {
    replay("snapshot", raftkv::fuzzing::snapshot_target);
    // The hand-made seeds are real snapshots: each decodes to a machine.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/snapshot");
    for name in SNAPSHOT_SEEDS {
        let data = std::fs::read(dir.join(name)).expect("a committed seed");
        assert!(raftkv::fuzzing::snapshot_decodes(&data), "{name} does not decode");
    }
}

/// The snapshot target's seeds (flags byte first, see
/// `raftkv::fuzzing::snapshot_target`): a snapshot file of a machine with
/// data and sessions, with its checks recomputed and kept as they are; the
/// machine's snapshot alone; an empty machine's.
const SNAPSHOT_SEEDS: [&str; 4] = ["seed-file", "seed-file-kept", "seed-machine", "seed-machine-empty"];

/// Writes [`SNAPSHOT_SEEDS`]. Run once with
/// `cargo test --test fuzz_corpus -- --ignored write_snapshot_seeds`.
#[test]
#[ignore = "writes files into fuzz/corpus; run by hand"]
fn write_snapshot_seeds() {
    use raftkv::kv::{snapshot, Command, KvMachine, Op};
    use raftkv::raft::{Membership, Snapshot, SnapshotMeta};

    let mut machine = KvMachine::default();
    let ops = [
        Op::Put { key: "a".into(), value: "1".into() },
        Op::Append { key: "a".into(), value: "2".into() },
        Op::Put { key: "b".into(), value: "x".into() },
        Op::Get { key: "a".into() },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        let index = i as u64 + 1;
        machine.apply(index, &Command { client: 7 + index as u128 % 2, seq: index, op });
    }
    let data = snapshot::encode(&machine, false);
    let file = Snapshot {
        meta: SnapshotMeta { index: 4, term: 2 },
        membership: Membership::initial(3),
        data: data.clone().into(),
    };
    let file = raftkv::wal::encode_snapshot_file(&file).expect("encodes");
    let seeds: [(&str, u8, Vec<u8>); 4] = [
        ("seed-file", 1, file.clone()),
        ("seed-file-kept", 3, file),
        ("seed-machine", 0, data),
        ("seed-machine-empty", 0, snapshot::encode(&KvMachine::default(), false)),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/snapshot");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, flags, bytes) in seeds {
        let mut data = vec![flags];
        data.extend_from_slice(&bytes);
        std::fs::write(dir.join(name), &data).expect("write a seed");
        assert!(raftkv::fuzzing::snapshot_decodes(&data), "{name} does not decode");
    }
}

#[cfg(feature = "resp")]
#[test]
fn resp_corpus() {
    replay("resp", raftkv::fuzzing::resp_target);
}

/// Every corpus directory has a test above, so a new target cannot be
/// forgotten.
#[test]
fn every_corpus_is_replayed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .expect("fuzz/corpus exists")
        .map(|entry| entry.expect("a readable directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    assert_eq!(targets, ["cluster", "decode", "lincheck", "node", "resp", "snapshot", "wal"]);
}

/// Writes the wal target's seeds: the segments of real `WalStorage`
/// histories (small segments, so they roll and compacted ones go), laid
/// out as `fuzzing::wal_target` reads them. Run once with
/// `cargo test --test fuzz_corpus -- --ignored write_wal_seeds`.
#[test]
#[ignore = "writes files into fuzz/corpus; run by hand"]
fn write_wal_seeds() {
    use raftkv::kv::{Command, Op};
    use raftkv::raft::{Entry, HardState, LogWrite, Membership, Payload, Persist, Snapshot, SnapshotMeta};
    use raftkv::server::storage::RaftStorage;
    use raftkv::server::tempdir::TempDir;
    use raftkv::server::wal::{WalOptions, WalStorage, WAL_DIR};

    let entry = |term, i: u64| {
        let op = if i.is_multiple_of(3) {
            Op::Append { key: "k".into(), value: format!("{i}") }
        } else {
            Op::Get { key: "k".into() }
        };
        Entry {
            term,
            payload: if i.is_multiple_of(5) {
                Payload::Noop
            } else {
                Payload::Command(Command { client: 1, seq: i, op })
            },
        }
    };
    let persist = |hard: Option<HardState>, log: Option<LogWrite<Command>>, compact: Option<SnapshotMeta>| Persist {
        number: 0,
        snapshot: None,
        compact,
        log,
        hard_state: hard,
    };
    // (name, entries, compact at, whether to tear the last record)
    let histories: [(&str, u64, Option<u64>, bool); 4] = [
        ("short", 6, None, false),
        ("rolled", 30, None, false),
        ("compacted", 40, Some(28), false),
        ("torn", 8, None, true),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wal");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, n, compact, tear) in histories {
        let tmp = TempDir::new("wal-seeds").expect("a temporary directory");
        {
            let options = WalOptions { segment_bytes: 400 };
            let mut s = WalStorage::open_with(tmp.path(), options).expect("open");
            s.write(&[&persist(Some(HardState { term: 1, voted_for: Some(0) }), None, None)]).expect("write");
            for i in 1..=n {
                let term = 1 + i / 10;
                let hard = (i % 10 == 0).then_some(HardState { term, voted_for: None });
                s.write(&[&persist(hard, Some(LogWrite { from: i, entries: vec![entry(term, i)] }), None)])
                    .expect("write");
                if i == 4 {
                    // A conflicting suffix: index 4 again, of the same term.
                    s.write(&[&persist(None, Some(LogWrite { from: 4, entries: vec![entry(term, 4)] }), None)])
                        .expect("write");
                }
            }
            if let Some(at) = compact {
                let meta = SnapshotMeta { index: at, term: 1 + at / 10 };
                s.save_snapshot(&Snapshot { meta, membership: Membership::initial(3), data: vec![1].into() })
                    .expect("save");
                s.write(&[&persist(None, None, Some(meta))]).expect("write");
            }
        }
        let wal = tmp.path().join(WAL_DIR);
        let mut names: Vec<String> = std::fs::read_dir(&wal)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wal"))
            .collect();
        names.sort();
        let names = &names[names.len().saturating_sub(3)..];
        let first: u64 = u64::from_str_radix(names[0].trim_end_matches(".wal"), 16).expect("a number");
        assert!((1..=4).contains(&first), "{name}: first segment {first}");
        let flags = (names.len() as u8 - 1) | 4 | (((first - 1) as u8) << 3);
        let mut input = vec![flags];
        for (k, n) in names.iter().enumerate() {
            let mut bytes = std::fs::read(wal.join(n)).expect("read");
            // Only the written part and a little of the zeros after it.
            let used = bytes.iter().rposition(|&b| b != 0).map_or(bytes.len(), |p| p + 1);
            bytes.truncate((used + 16).min(bytes.len()));
            if tear && k + 1 == names.len() {
                bytes.truncate(used - 3);
            }
            input.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            input.extend_from_slice(&bytes);
        }
        std::fs::write(dir.join(format!("seed-{name}")), input).expect("write a seed");
    }
}

/// Writes the decode target's hand-made seeds: one valid frame per message
/// variant and a multi-frame stream. Run once with
/// `cargo test --test fuzz_corpus -- --ignored write_decode_seeds`; the
/// other targets' seeds are small inputs picked from fuzzing runs.
#[test]
#[ignore = "writes files into fuzz/corpus; run by hand"]
fn write_decode_seeds() {
    use raftkv::kv::{Command, Op};
    use raftkv::raft::{Entry, Envelope, Membership, Message, Payload, RejectHint, SnapshotMeta};
    use raftkv::wire::{encode, encode_into, Limits};

    let command = |seq, op| Entry { term: 2, payload: Payload::Command(Command { client: 1, seq, op }) };
    let entries = vec![
        Entry { term: 2, payload: Payload::Noop },
        command(1, Op::Put { key: "k".into(), value: "v".into() }),
        command(2, Op::Append { key: "k".into(), value: "w".into() }),
        command(3, Op::Get { key: "k".into() }),
    ];
    let messages = [
        ("prevote", Message::PreVote { term: 3, last_log_index: 4, last_log_term: 2 }),
        ("prevote-reply", Message::PreVoteReply { term: 3, granted: true }),
        ("vote", Message::Vote { term: 3, last_log_index: 4, last_log_term: 2, transfer: false }),
        ("timeout-now", Message::TimeoutNow { term: 3 }),
        ("vote-reply", Message::VoteReply { term: 3, granted: false }),
        ("append", Message::Append { term: 2, prev_index: 0, prev_term: 0, entries, commit: 1, read_round: 5 }),
        ("append-reply-ok", Message::AppendReply { term: 2, result: Ok(4), read_round: 5 }),
        (
            "append-reply-reject",
            Message::AppendReply { term: 2, result: Err(RejectHint { index: 1, term: 1 }), read_round: 5 },
        ),
        ("heartbeat", Message::Heartbeat { term: 2, commit: 300, read_round: 6 }),
        ("heartbeat-reply", Message::HeartbeatReply { term: u64::MAX, read_round: 6 }),
        (
            "snapshot",
            Message::Snapshot {
                term: 2,
                meta: SnapshotMeta { index: 40, term: 2 },
                membership: Membership::initial(3),
                total: 300,
                offset: 256,
                data: vec![1, 2, 3],
            },
        ),
        ("snapshot-reply", Message::SnapshotReply { term: 2, index: 40, received: 300, matched: Some(40) }),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    let limits = Limits::default();
    let mut stream = Vec::new();
    for (name, message) in messages {
        let envelope = Envelope { from: 0, to: 1, message };
        let frame = encode(&envelope, &limits).expect("within limits");
        std::fs::write(dir.join(format!("seed-{name}")), frame).expect("write a seed");
        encode_into(&envelope, &limits, &mut stream).expect("within limits");
    }
    std::fs::write(dir.join("seed-stream"), stream).expect("write a seed");
}
