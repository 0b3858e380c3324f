//! The MIT 6.824 lab's KV-Raft tests (3A), one per test, each over many
//! seeds in the deterministic simulator. Every run checks the Raft safety
//! invariants after each step, each client's appends (exactly once, in
//! order, none lost) after each iteration, and linearizability of the whole
//! history at the end.

mod common;

use raftkv::kv::Op;
use raftkv::sim::scenario::{check_appends, read_back, Scenario};
use raftkv::sim::{NetworkConfig, Sim, SimConfig, Workload};

/// Seeds per scenario in CI; `RAFTKV_SEEDS` overrides.
const SEEDS: u64 = 20;

fn run_seeds(scenario: Scenario) {
    for seed in common::seeds(SEEDS) {
        if let Err(failure) = scenario.run(scenario.sim_config(seed)) {
            panic!("{}", common::report(&failure));
        }
    }
}

#[test]
fn basic() {
    run_seeds(Scenario::new("basic", 1, 5));
}

#[test]
fn concurrent() {
    run_seeds(Scenario::new("concurrent", 5, 5));
}

#[test]
fn unreliable() {
    run_seeds(Scenario::new("unreliable", 5, 5).unreliable());
}

#[test]
fn many_partitions_one_client() {
    run_seeds(Scenario::new("many_partitions_one_client", 1, 5).partitions());
}

#[test]
fn many_partitions_many_clients() {
    run_seeds(Scenario::new("many_partitions_many_clients", 5, 5).partitions());
}

#[test]
fn persist_one_client() {
    run_seeds(Scenario::new("persist_one_client", 1, 5).crash());
}

#[test]
fn persist_concurrent() {
    run_seeds(Scenario::new("persist_concurrent", 5, 5).crash());
}

#[test]
fn persist_concurrent_unreliable() {
    run_seeds(Scenario::new("persist_concurrent_unreliable", 5, 5).unreliable().crash());
}

#[test]
fn persist_partition() {
    run_seeds(Scenario::new("persist_partition", 5, 5).crash().partitions());
}

#[test]
fn persist_partition_unreliable() {
    run_seeds(Scenario::new("persist_partition_unreliable", 5, 5).unreliable().crash().partitions());
}

#[test]
fn persist_partition_unreliable_linearizable() {
    run_seeds(
        Scenario::new("persist_partition_unreliable_linearizable", 15, 7)
            .unreliable()
            .crash()
            .partitions()
            .random_keys(),
    );
}

/// 3 servers, 5 clients each appending 10 times to one key over an
/// unreliable network: every append present exactly once, in each client's
/// order, and the history linearizable.
#[test]
fn unreliable_one_key() {
    const NAME: &str = "unreliable_one_key";
    for seed in common::seeds(SEEDS) {
        let mut config = SimConfig::new(seed, 3);
        config.network = NetworkConfig::unreliable();
        let mut sim = Sim::new(config);
        for _ in 0..5 {
            sim.add_client(Workload::appends("k", 10));
        }
        let idle = sim.run_until_clients_idle(120_000_000).unwrap_or_else(|f| common::fail(NAME, seed, &sim, f));
        common::ensure(idle, NAME, seed, &sim, || "appends did not finish in 120 s of virtual time".into());
        let value = read_back(&mut sim, 0, "k").unwrap_or_else(|e| common::fail(NAME, seed, &sim, e));
        check_appends(sim.operations(), "k", &value).unwrap_or_else(|e| common::fail(NAME, seed, &sim, e));
        common::ensure(value.matches("x ").count() == 50, NAME, seed, &sim, || format!("final value {value:?}"));
        let verdict = raftkv::lincheck::check(&sim.history(), Default::default());
        common::ensure(verdict.is_ok(), NAME, seed, &sim, || format!("{verdict:?}"));
    }
}

/// 5 servers split 3/2 with the leader on the majority side: the majority
/// makes progress; a Put and a Get from a client that reaches only the
/// minority do not complete; both complete once the partition heals.
#[test]
fn one_partition() {
    const NAME: &str = "one_partition";
    for seed in common::seeds(SEEDS) {
        let mut sim = Sim::new(SimConfig::new(seed, 5));
        let majority_client = sim.add_client(Workload::appends("unused", 0));
        let minority_client = sim.add_client(Workload::appends("unused", 0));
        let run = |sim: &mut Sim, us| sim.run_for(us).unwrap_or_else(|f| common::fail(NAME, seed, sim, f));
        run(&mut sim, 2_000_000);
        let Some(leader) = (0..5).find(|&id| sim.server(id).is_some_and(|s| s.node().is_leader())) else {
            common::fail(NAME, seed, &sim, "no leader after 2 s")
        };
        let mut majority: Vec<u8> = vec![leader];
        majority.extend((0..5).filter(|&id| id != leader).take(2));
        let minority: Vec<u8> = (0..5).filter(|id| !majority.contains(id)).collect();
        let split = |sim: &mut Sim| {
            sim.partition(&[majority.clone(), minority.clone()]);
            sim.restrict_client(majority_client, majority.clone());
            sim.restrict_client(minority_client, minority.clone());
        };
        let heal_and_finish = |sim: &mut Sim, what: &str| {
            sim.heal();
            let deadline = sim.now() + 3_000_000;
            let idle = sim.run_until_clients_idle(deadline).unwrap_or_else(|f| common::fail(NAME, seed, sim, f));
            common::ensure(idle, NAME, seed, sim, || {
                format!("the minority {what} did not complete within 3 s of healing")
            });
        };

        split(&mut sim);
        let put = sim.start_op(majority_client, Op::Put { key: "1".into(), value: "13".into() });
        run(&mut sim, 1_000_000);
        common::ensure(sim.operation(put).ret.is_some(), NAME, seed, &sim, || "the majority made no progress".into());

        let minority_put = sim.start_op(minority_client, Op::Put { key: "1".into(), value: "15".into() });
        run(&mut sim, 1_000_000);
        let stuck = sim.operation(minority_put).ret.is_none();
        common::ensure(stuck, NAME, seed, &sim, || "a Put completed on the minority side".into());
        heal_and_finish(&mut sim, "Put");

        split(&mut sim);
        let get = sim.start_op(minority_client, Op::Get { key: "1".into() });
        run(&mut sim, 1_000_000);
        let stuck = sim.operation(get).ret.is_none();
        common::ensure(stuck, NAME, seed, &sim, || "a Get completed on the minority side".into());
        heal_and_finish(&mut sim, "Get");
        let output = sim.operation(get).output.clone();
        common::ensure(output == "15", NAME, seed, &sim, || format!("the Get returned {output:?}, not \"15\""));
        let verdict = raftkv::lincheck::check(&sim.history(), Default::default());
        common::ensure(verdict.is_ok(), NAME, seed, &sim, || format!("{verdict:?}"));
    }
}

/// 1,000 sequential appends by one client complete in less than
/// 1,000 × heartbeat interval / 3 of virtual time (3 servers, as the lab).
#[test]
fn speed() {
    const NAME: &str = "speed";
    for seed in common::seeds(SEEDS) {
        let config = SimConfig::new(seed, 3);
        let bound = 1_000 * config.heartbeat_us() / 3;
        let mut sim = Sim::new(config);
        // Elect a leader first, as the lab's first Put does.
        sim.run_for(2_000_000).unwrap_or_else(|f| common::fail(NAME, seed, &sim, f));
        let start = sim.now();
        sim.add_client(Workload::appends("k", 1_000));
        let done = sim.run_until_clients_idle(start + bound).unwrap_or_else(|f| common::fail(NAME, seed, &sim, f));
        let took = sim.now() - start;
        common::ensure(done && took < bound, NAME, seed, &sim, || {
            format!("1,000 appends took {} ms of virtual time, bound {} ms", took / 1000, bound / 1000)
        });
        let value = read_back(&mut sim, 0, "k").unwrap_or_else(|e| common::fail(NAME, seed, &sim, e));
        check_appends(sim.operations(), "k", &value).unwrap_or_else(|e| common::fail(NAME, seed, &sim, e));
    }
}
