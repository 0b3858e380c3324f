//! The real server's storages, redb's and the write-ahead log's, in the
//! same run: how long one group-committed write takes, and how long a node
//! with a 100,000-entry log takes to recover (open the storage, read and
//! check every entry, rebuild the node).
//!
//! Beside them, the disk's own floor: 4 KiB appended to a file and
//! `fdatasync`ed, and 4 KiB written into a file preallocated with zeros and
//! `fdatasync`ed (no block allocation, so no metadata to flush), which is
//! what the write-ahead log does.
//!
//! Recovery replays nothing into the state machine here: the log is
//! re-applied as the leader tells the node the commit index, which is a
//! memory-speed loop (see the `sim` bench).

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use raftkv::kv::{Command, KvServer, Op, ServerConfig};
use raftkv::raft::{Config, Entry, HardState, LogWrite, Payload, Persist};
use raftkv::server::storage::{RaftStorage, RedbStorage};
use raftkv::server::tempdir::TempDir;
use raftkv::server::wal::WalStorage;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn entry(i: u64) -> Entry<Command> {
    let op = Op::Put { key: format!("key-{:012}", i % 1000), value: "v".repeat(100) };
    Entry { term: 1, payload: Payload::Command(Command { client: u128::from(i % 64), seq: i, op }) }
}

/// The two storages of `raftkv::server::storage::open_dir`, by name.
trait Disk: RaftStorage + Sized {
    const NAME: &'static str;
    fn open(dir: &Path) -> Self;
}

impl Disk for RedbStorage {
    const NAME: &'static str = "redb";
    fn open(dir: &Path) -> Self {
        RedbStorage::open(dir).unwrap()
    }
}

impl Disk for WalStorage {
    const NAME: &'static str = "wal";
    fn open(dir: &Path) -> Self {
        WalStorage::open(dir).unwrap()
    }
}

fn filled<S: Disk>(entries: u64) -> (TempDir, S) {
    let dir = TempDir::new("bench-storage").unwrap();
    let mut s = S::open(dir.path());
    s.write(&[&Persist {
        number: 0,
        snapshot: None,
        compact: None,
        hard_state: Some(HardState { term: 1, voted_for: Some(0) }),
        log: None,
    }])
    .unwrap();
    for from in (1..=entries).step_by(1000) {
        let batch = (from..from + 1000).map(entry).collect();
        s.write(&[&Persist {
            number: 0,
            snapshot: None,
            compact: None,
            hard_state: None,
            log: Some(LogWrite { from, entries: batch }),
        }])
        .unwrap();
    }
    (dir, s)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage");
    group.sample_size(10);
    storage::<RedbStorage>(&mut group);
    storage::<WalStorage>(&mut group);
    floor(&mut group);
    group.finish();
}

fn storage<S: Disk>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (dir, storage) = filled::<S>(100_000);
    drop(storage);
    group.bench_function(format!("{}/recover_100k_entries", S::NAME), |b| {
        b.iter(|| {
            let s = S::open(dir.path());
            let durable = s.load().unwrap();
            assert_eq!(durable.log.len(), 100_000);
            KvServer::restart(ServerConfig::new(Config::new(0, 3, 0)), durable).unwrap()
        })
    });

    for batch in [1u64, 64] {
        let (_dir, mut s) = filled::<S>(0);
        let mut next = 1;
        group.bench_function(format!("{}/write_{batch}_entries_one_fsync", S::NAME), |b| {
            b.iter(|| {
                let entries = (next..next + batch).map(entry).collect();
                s.write(&[&Persist {
                    number: 0,
                    snapshot: None,
                    compact: None,
                    hard_state: None,
                    log: Some(LogWrite { from: next, entries }),
                }])
                .unwrap();
                next += batch;
            })
        });
    }
}

/// The floor: one 4 KiB record and fdatasync, appended or in place.
fn floor(group: &mut BenchmarkGroup<'_, WallTime>) {
    let dir = TempDir::new("bench-storage-raw").unwrap();
    let record = [0x5au8; 4096];
    {
        let mut file = std::fs::File::create(dir.path().join("append")).unwrap();
        group.bench_function("append_4k_fdatasync", |b| {
            b.iter(|| {
                file.write_all(&record).unwrap();
                file.sync_data().unwrap();
            })
        });
    }
    {
        const PREALLOCATED: u64 = 16 << 20;
        let mut file = std::fs::File::create(dir.path().join("preallocated")).unwrap();
        for _ in 0..PREALLOCATED / 4096 {
            file.write_all(&[0u8; 4096]).unwrap();
        }
        file.sync_all().unwrap();
        let mut at = 0;
        group.bench_function("preallocated_4k_fdatasync", |b| {
            b.iter(|| {
                file.write_all_at(&record, at).unwrap();
                file.sync_data().unwrap();
                at = (at + 4096) % PREALLOCATED;
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
