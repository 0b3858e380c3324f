//! The key/value state machine: what a snapshot costs the node thread (the
//! copy it hands to the snapshot thread, then the first write after it),
//! what encoding costs the snapshot thread, and how fast commands apply.
//!
//! `copy_then_put` is the whole stall a snapshot adds to the node thread:
//! `KvMachine` is made of persistent maps, so the copy shares every node and
//! the Put that follows copies only the path to its key.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use raftkv::kv::{snapshot, Command, KvMachine, Op};

/// A machine of `keys` keys holding `value_bytes` each, written by 64
/// clients (so the session table is not empty).
fn filled(keys: u64, value_bytes: usize) -> KvMachine {
    let mut m = KvMachine::new();
    for i in 0..keys {
        let op = Op::Put { key: format!("key-{i:012}"), value: "v".repeat(value_bytes) };
        m.apply(i + 1, &Command { client: u128::from(i % 64), seq: i / 64 + 1, op });
    }
    m
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("machine");
    group.sample_size(20);

    // The shape of benches/catchup.sh: 3,200 values of 32,000 bytes (102 MB).
    let big = filled(3_200, 32_000);
    let next = big.applied_index() + 1;
    let put = Command { client: 1, seq: u64::MAX, op: Op::Put { key: "key-000000000007".into(), value: "w".into() } };
    group.bench_function("copy_then_put_100mb", |b| {
        b.iter_batched_ref(
            || big.clone(),
            |m| {
                let copy = m.clone();
                m.apply(next, &put);
                copy
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("encode_100mb", |b| b.iter(|| snapshot::encode(&big, false).len()));

    // The shape of benches/footprint.sh: 1,000 keys of 100 bytes.
    let puts: Vec<Command> = (0..10_000u64)
        .map(|i| Command {
            client: u128::from(i % 64),
            seq: 1_000 + i,
            op: Op::Put { key: format!("key-{:012}", i * 7 % 1_000), value: "x".repeat(100) },
        })
        .collect();
    group.bench_function("apply_10k_puts_1000_keys", |b| {
        b.iter_batched_ref(
            // A machine of its own, not a clone: the persistent maps would
            // charge the timed loop for unsharing the clone's nodes.
            || filled(1_000, 100),
            |m| {
                for (i, cmd) in puts.iter().enumerate() {
                    m.apply(1_001 + i as u64, cmd);
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
