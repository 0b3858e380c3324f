//! The real server's durable storage (`raftkv::server::storage`): round trips,
//! reopening, group commit, and a crash (SIGKILL) of a writing process, each
//! against both implementations of the contract, [`RedbStorage`] and
//! [`WalStorage`] (the latter with segments small enough that every test
//! rolls and deletes them).
//!
//! Corruption of stored bytes is tested by the unit tests in
//! `src/server/storage.rs` and `src/server/wal.rs`, which can reach the raw
//! tables and files.

use raftkv::kv::{Command, Op};
use raftkv::raft::{
    Config, Entry, HardState, Input, LogWrite, Membership, Payload, Persist, RaftNode, Snapshot, SnapshotMeta,
};
use raftkv::server::storage::{Durable, RaftStorage, RedbStorage, StorageError};
use raftkv::server::tempdir::TempDir;
use raftkv::server::wal::{WalOptions, WalStorage};
use raftkv::sim::MemStorage;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// What these tests need of a storage besides the contract.
trait Disk: RaftStorage + Sized + std::fmt::Debug {
    /// The value of [`WRITER_KIND_ENV`] that makes the crash writer use it.
    const KIND: &'static str;
    fn open(dir: &Path) -> Result<Self, StorageError>;
    fn last(&self) -> u64;
}

impl Disk for RedbStorage {
    const KIND: &'static str = "redb";
    fn open(dir: &Path) -> Result<Self, StorageError> {
        RedbStorage::open(dir)
    }
    fn last(&self) -> u64 {
        self.last_index()
    }
}

impl Disk for WalStorage {
    const KIND: &'static str = "wal";
    fn open(dir: &Path) -> Result<Self, StorageError> {
        WalStorage::open_with(dir, WalOptions { segment_bytes: 1024 })
    }
    fn last(&self) -> u64 {
        self.last_index()
    }
}

/// Each named generic test, once per storage.
macro_rules! for_both {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(#[test] fn $name() { super::$name::<super::RedbStorage>() })*
        }
        mod wal {
            $(#[test] fn $name() { super::$name::<super::WalStorage>() })*
        }
    };
}

for_both!(
    an_empty_directory_starts_empty,
    round_trip_matches_the_simulators_model_and_survives_reopen,
    a_long_randomised_history_matches_the_model_across_reopens,
    errors_name_the_path,
    a_snapshot_saved_past_the_logs_end_is_followed_after_a_restart,
    a_killed_writer_keeps_everything_it_reported_durable,
    write_latency,
);
use std::process::{Command as Process, Stdio};
use std::time::Instant;

fn command(i: u64, value: &str) -> Command {
    Command {
        client: u128::from(i % 7),
        seq: i,
        op: Op::Append { key: format!("key-{}", i % 13), value: value.to_string() },
    }
}

fn entry(term: u64, i: u64) -> Entry<Command> {
    if i.is_multiple_of(5) {
        Entry { term, payload: Payload::Noop }
    } else {
        Entry { term, payload: Payload::Command(command(i, &format!("v{i}"))) }
    }
}

fn hard(term: u64, voted_for: Option<u8>) -> Option<HardState> {
    Some(HardState { term, voted_for })
}

fn log_write(from: u64, entries: Vec<Entry<Command>>) -> Option<LogWrite<Command>> {
    Some(LogWrite { from, entries })
}

/// Applies `batch` to both storages and checks that they agree.
fn write_both<S: Disk>(disk: &mut S, model: &mut MemStorage, batch: &[Persist<Command>]) {
    disk.write(&batch.iter().collect::<Vec<_>>()).unwrap();
    for p in batch {
        model.write(p);
    }
    assert_eq!(disk.load().unwrap(), model.durable());
}

fn an_empty_directory_starts_empty<S: Disk>() {
    let dir = TempDir::new("storage-empty").unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let s = S::open(dir.path()).unwrap();
    assert_eq!(s.load().unwrap(), Durable::default());
    assert_eq!(s.last(), 0);
    drop(s);
    // A directory that does not exist yet is created.
    let nested = dir.path().join("a/b");
    let s = S::open(&nested).unwrap();
    assert_eq!(s.load().unwrap(), Durable::default());
}

fn round_trip_matches_the_simulators_model_and_survives_reopen<S: Disk>() {
    let dir = TempDir::new("storage-roundtrip").unwrap();
    let mut disk = S::open(dir.path()).unwrap();
    let mut model = MemStorage::default();

    // A vote alone, then the hard state with entries, then entries alone.
    write_both(
        &mut disk,
        &mut model,
        &[Persist { number: 0, snapshot: None, compact: None, hard_state: hard(1, Some(2)), log: None }],
    );
    write_both(
        &mut disk,
        &mut model,
        &[Persist {
            number: 0,
            snapshot: None,
            compact: None,
            hard_state: hard(2, None),
            log: log_write(1, (1..=4).map(|i| entry(1, i)).collect()),
        }],
    );
    write_both(
        &mut disk,
        &mut model,
        &[Persist {
            number: 0,
            snapshot: None,
            compact: None,
            hard_state: None,
            log: log_write(5, (5..=9).map(|i| entry(2, i)).collect()),
        }],
    );
    // A conflicting suffix: drop 7.. and write two entries of term 3.
    write_both(
        &mut disk,
        &mut model,
        &[Persist {
            number: 0,
            snapshot: None,
            compact: None,
            hard_state: hard(3, Some(1)),
            log: log_write(7, vec![entry(3, 7), entry(3, 8)]),
        }],
    );
    assert_eq!(disk.last(), 8);
    // Truncation with nothing appended.
    write_both(
        &mut disk,
        &mut model,
        &[Persist { number: 0, snapshot: None, compact: None, hard_state: None, log: log_write(6, vec![]) }],
    );
    assert_eq!(disk.last(), 5);
    // Group commit: several steps' writes, including a truncation of what an
    // earlier step of the same batch appended, in one transaction.
    write_both(
        &mut disk,
        &mut model,
        &[
            Persist {
                number: 0,
                snapshot: None,
                compact: None,
                hard_state: hard(4, None),
                log: log_write(6, (6..=10).map(|i| entry(4, i)).collect()),
            },
            Persist { number: 0, snapshot: None, compact: None, hard_state: hard(4, Some(0)), log: None },
            Persist {
                number: 0,
                snapshot: None,
                compact: None,
                hard_state: None,
                log: log_write(9, vec![entry(4, 90)]),
            },
            Persist { number: 0, snapshot: None, compact: None, hard_state: None, log: None },
            Persist {
                number: 0,
                snapshot: None,
                compact: None,
                hard_state: hard(5, None),
                log: log_write(10, vec![entry(5, 10), entry(5, 11)]),
            },
        ],
    );
    assert_eq!(disk.last(), 11);
    // An empty batch and a batch of empty Persists change nothing.
    write_both(&mut disk, &mut model, &[]);
    write_both(
        &mut disk,
        &mut model,
        &[Persist { number: 0, snapshot: None, compact: None, hard_state: None, log: None }],
    );

    let expected = disk.load().unwrap();
    assert_eq!(expected.hard, HardState { term: 5, voted_for: None });
    assert_eq!(expected.log.len(), 11);
    drop(disk);
    let reopened = S::open(dir.path()).unwrap();
    assert_eq!(reopened.load().unwrap(), expected);
    assert_eq!(reopened.last(), 11);
}

/// A node applies committed entries before its own write of them is
/// durable (`raft::ready`), so the runtime may save a snapshot of them
/// while the log under it is still on its way: a crash then leaves a
/// snapshot past the end of the stored log. The restarted node starts its
/// log after the snapshot, and its first batch drops the old log on the
/// disk too, so that its next write (from the snapshot on) leaves no gap.
/// Without that batch, both storages refuse the write with `Gap`.
fn a_snapshot_saved_past_the_logs_end_is_followed_after_a_restart<S: Disk>() {
    let dir = TempDir::new("storage-snapshot-past-end").unwrap();
    let mut disk = S::open(dir.path()).unwrap();
    let first = Persist {
        number: 1,
        snapshot: None,
        compact: None,
        log: log_write(1, vec![entry(1, 1), entry(1, 2)]),
        hard_state: hard(1, Some(0)),
    };
    disk.write(&[&first]).unwrap();
    disk.save_snapshot(&snapshot(4, 1)).unwrap();
    drop(disk);

    let mut disk = S::open(dir.path()).unwrap();
    let mut node = RaftNode::restart(Config::new(1, 3, 7), disk.load().unwrap());
    assert_eq!((node.log().base(), node.log().last_index()), ((4, 1), 4));
    let ready = node.step(Input::Tick);
    let batch = ready.persist.expect("the first batch drops the old log");
    assert_eq!((batch.compact, &batch.log), (Some(SnapshotMeta { index: 4, term: 1 }), &log_write(5, vec![])));
    disk.write(&[&batch]).unwrap();
    let next =
        Persist { number: 2, snapshot: None, compact: None, log: log_write(5, vec![entry(1, 5)]), hard_state: None };
    disk.write(&[&next]).unwrap();
    drop(disk);

    let durable = S::open(dir.path()).unwrap().load().unwrap();
    assert_eq!((durable.base, durable.log), (SnapshotMeta { index: 4, term: 1 }, vec![entry(1, 5)]));
}

/// A snapshot whose bytes name what it covers (storage never looks inside).
fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta { index, term },
        membership: Membership::initial(3),
        data: format!("state up to {index}").into_bytes().into(),
    }
}

/// One random snapshot step against the model's current state: the runtime
/// saving a snapshot it took, a compaction to what the stored snapshot
/// covers, or an installed snapshot (with its compaction, and dropping the
/// log's conflicting rest), sometimes past the end of the log.
fn random_snapshot_step<S: Disk>(
    rng: &mut raftkv::rng::Rng,
    disk: &mut S,
    model: &mut MemStorage,
    term: u64,
) -> Option<&'static str> {
    let (base, last) = (model.disk.base.index, model.last_index());
    let term_at = |model: &MemStorage, i: u64| {
        if i == model.disk.base.index {
            model.disk.base.term
        } else {
            model.disk.log[(i - model.disk.base.index - 1) as usize].term
        }
    };
    match rng.range(0, 3) {
        0 if last > base => {
            // The runtime took a snapshot of what it applied.
            let at = rng.range(base + 1, last + 1);
            let s = snapshot(at, term_at(model, at));
            disk.save_snapshot(&s).unwrap();
            model.disk.keep_snapshot(s);
            Some("saved")
        }
        1 if model.disk.snapshot.as_ref().is_some_and(|s| s.meta.index > base) => {
            let covered = model.disk.snapshot.as_ref().unwrap().meta;
            let compact = Some(covered);
            write_both(disk, model, &[Persist { number: 0, snapshot: None, compact, hard_state: None, log: None }]);
            Some("compacted")
        }
        _ if term > 0 => {
            // Installed from a leader: within the log (keeping the rest) or
            // past its end (dropping all of it).
            let at = rng.range(base + 1, last + 4);
            let meta = if at <= last {
                SnapshotMeta { index: at, term: term_at(model, at) }
            } else {
                SnapshotMeta { index: at, term }
            };
            let log = (at > last).then(|| LogWrite { from: at + 1, entries: vec![] });
            let s = Snapshot { meta, ..snapshot(at, meta.term) };
            write_both(
                disk,
                model,
                &[Persist { number: 0, snapshot: Some(s), compact: Some(meta), hard_state: None, log }],
            );
            Some(if at > last { "installed past the end" } else { "installed within" })
        }
        _ => None,
    }
}

fn a_long_randomised_history_matches_the_model_across_reopens<S: Disk>() {
    let dir = TempDir::new("storage-random").unwrap();
    let mut disk = S::open(dir.path()).unwrap();
    let mut model = MemStorage::default();
    let mut rng = raftkv::rng::Rng::new(7);
    let mut term = 0;
    let mut steps = std::collections::BTreeMap::new();
    for round in 0..120 {
        if rng.range(0, 4) == 0 {
            if let Some(kind) = random_snapshot_step(&mut rng, &mut disk, &mut model, term) {
                *steps.entry(kind).or_insert(0) += 1;
            }
            assert_eq!(disk.load().unwrap(), model.durable(), "round {round}");
            assert_eq!(disk.last(), model.last_index(), "round {round}");
            continue;
        }
        let mut batch = Vec::new();
        let mut last = model.last_index();
        for _ in 0..rng.range(1, 4) {
            let hard_state = if rng.range(0, 3) == 0 {
                term += 1;
                hard(term, Some(rng.range(0, 3) as u8))
            } else {
                None
            };
            let log = if rng.range(0, 4) != 0 && term > 0 {
                let from = rng.range(last.saturating_sub(3).max(model.disk.base.index + 1), last + 2);
                let n = rng.range(0, 4);
                last = from - 1 + n;
                log_write(from, (from..from + n).map(|i| entry(term, i)).collect())
            } else {
                None
            };
            batch.push(Persist { number: 0, snapshot: None, compact: None, hard_state, log });
        }
        write_both(&mut disk, &mut model, &batch);
        assert_eq!(disk.last(), model.last_index(), "round {round}");
        if round % 10 == 9 {
            drop(disk);
            disk = S::open(dir.path()).unwrap();
            assert_eq!(disk.load().unwrap(), model.durable());
        }
    }
    // The history is fixed by its seed; make sure it covers every kind.
    assert_eq!(steps.len(), 4, "snapshot steps taken: {steps:?}");
}

fn errors_name_the_path<S: Disk>() {
    // A regular file where the directory should be.
    let dir = TempDir::new("storage-notadir").unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = S::open(&file).unwrap_err();
    assert!(matches!(e, StorageError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
}

/// Environment variable that turns [`crash_writer_child`] into the writer.
const WRITER_ENV: &str = "RAFTKV_STORAGE_CRASH_WRITER_DIR";
/// Which storage the writer uses: a [`Disk::KIND`].
const WRITER_KIND_ENV: &str = "RAFTKV_STORAGE_CRASH_WRITER_KIND";

/// The writer's deterministic history: write `i` appends entry `i` (term
/// `i / 10 + 1`), with the hard state moving to that term in the same write.
fn writer_persist(i: u64) -> Persist<Command> {
    let term = i / 10 + 1;
    Persist {
        number: i,
        snapshot: None,
        compact: None,
        hard_state: if i == 1 || i.is_multiple_of(10) { hard(term, Some((term % 3) as u8)) } else { None },
        log: log_write(i, vec![writer_entry(i)]),
    }
}

fn writer_entry(i: u64) -> Entry<Command> {
    Entry {
        term: i / 10 + 1,
        payload: Payload::Command(command(i, &format!("value-{i}-{}", "x".repeat((i % 50) as usize)))),
    }
}

fn writer_hard(last: u64) -> HardState {
    let mut h = HardState::default();
    for i in 1..=last {
        if let Some(hs) = writer_persist(i).hard_state {
            h = hs;
        }
    }
    h
}

/// The writer compacts its log every this many entries, keeping the last
/// [`WRITER_TRAILING`] of them, as a server taking snapshots would.
const WRITER_COMPACT_EVERY: u64 = 40;
const WRITER_TRAILING: u64 = 15;

/// Not a test on its own: with [`WRITER_ENV`] set, the crash test's child.
/// It appends entries forever, printing each index once its write returned
/// (and so is durable), until the parent kills it. Every
/// [`WRITER_COMPACT_EVERY`] entries it saves a snapshot and then compacts
/// the log to it, so that kills also land in and around those.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(WRITER_ENV) else { return };
    match std::env::var(WRITER_KIND_ENV).as_deref() {
        Ok(RedbStorage::KIND) => crash_writer::<RedbStorage>(PathBuf::from(dir)),
        Ok(WalStorage::KIND) => crash_writer::<WalStorage>(PathBuf::from(dir)),
        other => panic!("{WRITER_KIND_ENV} is {other:?}"),
    }
}

fn crash_writer<S: Disk>(dir: PathBuf) {
    let mut s = S::open(&dir).unwrap();
    let mut i = s.last() + 1;
    loop {
        // Every third write is a group commit of two steps.
        let before = i;
        if i.is_multiple_of(3) {
            s.write(&[&writer_persist(i), &writer_persist(i + 1)]).unwrap();
            println!("durable {i}");
            println!("durable {}", i + 1);
            i += 2;
        } else {
            s.write(&[&writer_persist(i)]).unwrap();
            println!("durable {i}");
            i += 1;
        }
        // A multiple of WRITER_COMPACT_EVERY was among the indexes just written.
        if (before - 1) / WRITER_COMPACT_EVERY != (i - 1) / WRITER_COMPACT_EVERY {
            let at = i - 1 - WRITER_TRAILING;
            let meta = SnapshotMeta { index: at, term: writer_entry(at).term };
            s.save_snapshot(&Snapshot { meta, ..snapshot(at, meta.term) }).unwrap();
            s.write(&[&Persist { number: 0, snapshot: None, compact: Some(meta), hard_state: None, log: None }])
                .unwrap();
        }
    }
}

fn a_killed_writer_keeps_everything_it_reported_durable<S: Disk>() {
    let dir = TempDir::new("storage-crash").unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut reported = 0;
    // Kill it twice, restarting in between, so that recovery after a kill
    // is itself followed by writes and another kill.
    for (round, lines) in [(0, 150u64), (1, 150)] {
        let mut child = Process::new(&exe)
            .args(["--exact", "crash_writer_child", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, dir.path())
            .env(WRITER_KIND_ENV, S::KIND)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut seen = 0;
        let mut line = String::new();
        while seen < lines {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("round {round}: the writer stopped early ({status}): {err}");
            }
            if let Some(i) = line.trim().strip_prefix("durable ") {
                let i: u64 = i.parse().unwrap();
                assert!(i > reported, "round {round}: index {i} reported after {reported}");
                reported = i;
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix: no destructors, no flush.
        child.wait().unwrap();

        let s = S::open(dir.path()).unwrap();
        let d = s.load().unwrap();
        let n = d.base.index + d.log.len() as u64;
        assert!(n >= reported, "round {round}: {reported} reported durable, {n} recovered");
        assert!(d.base.index > 0, "round {round}: the writer compacted, the log must start after a base");
        assert_eq!(d.base.term, writer_entry(d.base.index).term, "round {round}: the base's term");
        let covered = d.snapshot.as_ref().map(|s| s.meta);
        assert!(covered.is_some_and(|m| m.index >= d.base.index), "round {round}: {covered:?} vs base {:?}", d.base);
        assert_eq!(s.last(), n, "round {round}");
        for (k, e) in d.log.iter().enumerate() {
            let i = d.base.index + k as u64 + 1;
            assert_eq!(*e, writer_entry(i), "round {round}: entry {i}");
        }
        assert_eq!(d.hard, writer_hard(n), "round {round}");
        eprintln!("round {round}: {reported} reported durable, {n} recovered, the log starts after {}", d.base.index);
        reported = n;
    }
}

fn write_latency<S: Disk>() {
    let dir = TempDir::new("storage-latency").unwrap();
    let mut s = S::open(dir.path()).unwrap();
    s.write(&[&Persist { number: 0, snapshot: None, compact: None, hard_state: hard(1, Some(0)), log: None }]).unwrap();
    let runs = 200;
    let mut times = Vec::with_capacity(runs);
    for i in 1..=runs as u64 {
        let p = Persist {
            number: 0,
            snapshot: None,
            compact: None,
            hard_state: None,
            log: log_write(i, vec![entry(1, i)]),
        };
        let start = Instant::now();
        s.write(&[&p]).unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    eprintln!(
        "{}: write of one small entry: median {:?}, p90 {:?}, max {:?} ({runs} writes, in {})",
        S::KIND,
        times[runs / 2],
        times[runs * 9 / 10],
        times[runs - 1],
        std::env::temp_dir().display()
    );
    assert_eq!(s.load().unwrap().log.len(), runs);
}
