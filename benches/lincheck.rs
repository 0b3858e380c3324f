//! Benchmarks for the linearizability checker (`cargo bench --bench lincheck`).
//!
//! * `many_keys`: a valid history of 10,000 calls by 16 clients on 100 keys,
//!   45% Get / 45% Append / 10% Put. Target: under 20 ms.
//! * `append_heavy_one_key`: a valid history of 1,000 calls by 8 clients on a
//!   single key, ~90% Append (distinct arguments) / ~10% Get: the case
//!   Porcupine-style memoization alone cannot decide. Target: under 1 s.
//!
//! Histories are generated once, outside the timed loop, from fixed seeds.

use criterion::{criterion_group, criterion_main, Criterion};
use raftkv::lincheck::gen::generate;
use raftkv::lincheck::{check, Budget, History, Verdict};
use std::hint::black_box;

fn bench_history(c: &mut Criterion, name: &str, history: &History) {
    // A benchmark of a checker that fails would measure the wrong thing.
    assert_eq!(check(history, Budget::default()), Verdict::Ok, "{name}");
    c.bench_function(name, |b| b.iter(|| check(black_box(history), Budget::default())));
}

fn many_keys(c: &mut Criterion) {
    let history = generate(1, 10_000, 16, 100, 45, 10);
    bench_history(c, "lincheck/many_keys (10k ops, 16 clients, 100 keys)", &history);
}

fn append_heavy_one_key(c: &mut Criterion) {
    let history = generate(2, 1_000, 8, 1, 90, 0);
    bench_history(c, "lincheck/append_heavy_one_key (1k ops, 8 clients, 90% append)", &history);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = many_keys, append_heavy_one_key
}
criterion_main!(benches);
