//! Simulator throughput: committed client operations per wall-clock second,
//! 5 servers and 5 clients under the lab's faults (lossy network,
//! partitions, crashes), every safety invariant checked after every step.
//!
//! Two run lengths: if the per-step checks cost grew with the log, the
//! longer run would show fewer ops per second. Each run's operation count is
//! fixed by its seed, so criterion's throughput (elements/s) is committed
//! ops per wall-second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raftkv::sim::scenario::Scenario;

fn faulty(run_us: u64) -> Scenario {
    let mut s = Scenario::new("bench", 5, 5).unreliable().crash().partitions();
    s.iterations = 1;
    s.run_us = run_us;
    s
}

fn reliable(run_us: u64) -> Scenario {
    let mut s = Scenario::new("bench", 5, 5);
    s.iterations = 1;
    s.run_us = run_us;
    s
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim");
    group.sample_size(10);
    for (name, scenario) in [
        ("faults_5s", faulty(5_000_000)),
        ("faults_50s", faulty(50_000_000)),
        ("reliable_5s", reliable(5_000_000)),
        ("reliable_50s", reliable(50_000_000)),
    ] {
        let ops = scenario.run(scenario.sim_config(1)).expect("a clean run").stats.ops_completed;
        group.throughput(Throughput::Elements(ops));
        group.bench_function(name, |b| b.iter(|| scenario.run(scenario.sim_config(1)).expect("a clean run")));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
