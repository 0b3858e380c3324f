//! The MIT 6.824 lab's snapshot tests (3D for Raft, 4B for the key/value
//! service), ported to the deterministic simulator, each over many seeds.
//! Every run checks the Raft safety invariants after each step (the
//! checker follows compactions and installs), each client's appends, and
//! linearizability of the whole history; the 4B shapes also bound each
//! server's persisted Raft state by 8 × `maxraftstate` after every
//! iteration. Each test also asserts that what it is about happened: that
//! snapshots were taken, and where a follower falls behind, installed.

mod common;

use raftkv::kv::{Op, SnapshotPolicy};
use raftkv::raft::NodeId;
use raftkv::sim::scenario::{check_appends, check_raft_state, run_op, Scenario};
use raftkv::sim::{NetworkConfig, Sim, SimConfig, Stats, Workload};

/// Seeds per test in CI; `RAFTKV_SEEDS` overrides.
const SEEDS: u64 = 20;
/// The lab's `maxraftstate` in 4B.
const MAX_RAFT_STATE: u64 = 1000;

/// Runs `scenario` over the seeds and returns the summed counters.
fn run_seeds(scenario: Scenario) -> Stats {
    let mut total = Stats::default();
    for seed in common::seeds(SEEDS) {
        match scenario.run(scenario.sim_config(seed)) {
            Ok(outcome) => {
                total.snapshots += outcome.stats.snapshots;
                total.installs += outcome.stats.installs;
                total.ops_completed += outcome.stats.ops_completed;
            }
            Err(failure) => panic!("{}", common::report(&failure)),
        }
    }
    println!(
        "{}: {} operations, {} snapshots, {} installs",
        scenario.name, total.ops_completed, total.snapshots, total.installs
    );
    assert!(total.snapshots > 0, "{}: no snapshot was taken", scenario.name);
    total
}

// ----- 4B: the generic test with maxraftstate ------------------------------

#[test]
fn snapshot_recover() {
    run_seeds(Scenario::new("snapshot_recover", 1, 5).crash().snapshots(MAX_RAFT_STATE));
}

#[test]
fn snapshot_recover_many_clients() {
    run_seeds(Scenario::new("snapshot_recover_many_clients", 20, 5).crash().snapshots(MAX_RAFT_STATE));
}

#[test]
fn snapshot_unreliable() {
    run_seeds(Scenario::new("snapshot_unreliable", 5, 5).unreliable().snapshots(MAX_RAFT_STATE));
}

#[test]
fn snapshot_unreliable_recover() {
    run_seeds(Scenario::new("snapshot_unreliable_recover", 5, 5).unreliable().crash().snapshots(MAX_RAFT_STATE));
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition() {
    let stats = run_seeds(
        Scenario::new("snapshot_unreliable_recover_concurrent_partition", 5, 5)
            .unreliable()
            .crash()
            .partitions()
            .snapshots(MAX_RAFT_STATE),
    );
    assert!(stats.installs > 0, "partitioned followers never needed a snapshot");
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition_linearizable() {
    let stats = run_seeds(
        Scenario::new("snapshot_unreliable_recover_concurrent_partition_linearizable", 15, 7)
            .unreliable()
            .crash()
            .partitions()
            .random_keys()
            .snapshots(MAX_RAFT_STATE),
    );
    assert!(stats.installs > 0, "partitioned followers never needed a snapshot");
}

// ----- hand-driven shapes --------------------------------------------------

/// A simulator of `servers` with a snapshot every `every` entries and no
/// trailing entries, and one client per `clients`.
fn cluster(seed: u64, servers: u8, every: u64, unreliable: bool) -> Sim {
    let mut config = SimConfig::new(seed, servers);
    config.snapshots = SnapshotPolicy { every_entries: Some(every), every_bytes: None };
    config.snapshot_trailing_entries = 0;
    config.snapshot_chunk_bytes = 64;
    if unreliable {
        config.network = NetworkConfig::unreliable();
    }
    if std::env::var("RAFTKV_TRACE").is_ok_and(|v| v == seed.to_string()) {
        config.trace = Some(raftkv::sim::TraceSink(std::sync::Arc::new(|line: &str| println!("{line}"))));
    }
    Sim::new(config)
}

/// Runs `count` appends to `key` through `client`, one after another.
fn appends(sim: &mut Sim, client: usize, key: &str, count: u64) -> Result<(), String> {
    let id = client as u64 + 1;
    let done = sim.operations().iter().filter(|o| o.client == id && o.key == key).count() as u64;
    for n in done..done + count {
        run_op(sim, client, Op::Append { key: key.into(), value: Workload::append_value(u128::from(id), n) })?;
    }
    Ok(())
}

/// The end of every hand-driven run: every append present once and in
/// order, the history linearizable, and `servers` all holding a snapshot.
fn conclude(sim: &mut Sim, key: &str) -> Result<(), String> {
    sim.heal();
    for id in 0..sim.config().servers {
        sim.restart(id);
    }
    let value = run_op(sim, 0, Op::Get { key: key.into() })?;
    check_appends(sim.operations(), key, &value)?;
    let verdict = raftkv::lincheck::check(&sim.history(), raftkv::lincheck::Budget::default());
    if !verdict.is_ok() {
        return Err(format!("history not linearizable: {verdict:?}"));
    }
    Ok(())
}

fn each_seed(name: &str, mut run: impl FnMut(u64) -> Result<Stats, String>) -> Stats {
    let mut total = Stats::default();
    for seed in common::seeds(SEEDS) {
        match run(seed) {
            Ok(stats) => {
                total.snapshots += stats.snapshots;
                total.installs += stats.installs;
            }
            Err(e) => panic!("{name} failed with seed {seed}: {e}. Replay with RAFTKV_SEED={seed}"),
        }
    }
    println!("{name}: {} snapshots, {} installs", total.snapshots, total.installs);
    assert!(total.snapshots > 0, "{name}: no snapshot was taken");
    total
}

/// 3D SnapshotBasic: under steady appends every server snapshots every 10
/// entries, and no server's log grows past what one snapshot interval and
/// the commands in flight leave.
#[test]
fn snapshot_basic() {
    each_seed("snapshot_basic", |seed| {
        let mut sim = cluster(seed, 3, 10, false);
        let client = sim.add_client(Workload::appends("unused", 0));
        for _ in 0..10 {
            appends(&mut sim, client, "k", 10)?;
            for id in 0..3 {
                let log = sim.storage(id).disk.log.len();
                if log > 30 {
                    return Err(format!("server {id} keeps {log} entries after snapshots every 10"));
                }
            }
        }
        if (0..3).any(|id| sim.storage(id).disk.snapshot.is_none()) {
            return Err("a server never took a snapshot".into());
        }
        let stats = sim.stats().clone();
        conclude(&mut sim, "k")?;
        Ok(stats)
    });
}

/// 3D SnapshotInstall (and its unreliable, crash and unreliable-crash
/// variants): a follower is cut off (or crashed) while the others go on and
/// compact past everything it holds; back, it can only catch up by
/// InstallSnapshot.
fn install_after_falling_behind(name: &str, unreliable: bool, crash: bool) {
    let stats = each_seed(name, |seed| {
        let mut sim = cluster(seed, 3, 10, unreliable);
        let client = sim.add_client(Workload::appends("unused", 0));
        appends(&mut sim, client, "k", 5)?;
        for round in 0..4u8 {
            let victim: NodeId = round % 3;
            let others: Vec<NodeId> = (0..3).filter(|&id| id != victim).collect();
            if crash {
                sim.crash(victim);
            } else {
                sim.partition(&[vec![victim], others.clone()]);
            }
            sim.restrict_client(client, others);
            appends(&mut sim, client, "k", 25)?;
            sim.heal();
            sim.restart(victim);
            sim.restrict_client(client, vec![0, 1, 2]);
            appends(&mut sim, client, "k", 5)?;
        }
        let stats = sim.stats().clone();
        conclude(&mut sim, "k")?;
        Ok(stats)
    });
    assert!(stats.installs > 0, "{name}: no follower installed a snapshot");
}

#[test]
fn snapshot_install() {
    install_after_falling_behind("snapshot_install", false, false);
}

#[test]
fn snapshot_install_unreliable() {
    install_after_falling_behind("snapshot_install_unreliable", true, false);
}

#[test]
fn snapshot_install_crash() {
    install_after_falling_behind("snapshot_install_crash", false, true);
}

#[test]
fn snapshot_install_uncrash() {
    install_after_falling_behind("snapshot_install_uncrash", true, true);
}

/// 3D SnapshotAllCrash: every server crashes and restarts, again and
/// again; each time the cluster comes back from its snapshots and logs and
/// goes on.
#[test]
fn snapshot_all_crash() {
    each_seed("snapshot_all_crash", |seed| {
        let mut sim = cluster(seed, 3, 10, false);
        let client = sim.add_client(Workload::appends("unused", 0));
        for _ in 0..5 {
            appends(&mut sim, client, "k", 12)?;
            for id in 0..3 {
                sim.crash(id);
            }
            sim.run_for(sim.config().election_us()).map_err(|f| f.to_string())?;
            for id in 0..3 {
                sim.restart(id);
            }
        }
        let stats = sim.stats().clone();
        conclude(&mut sim, "k")?;
        Ok(stats)
    });
}

/// 3D SnapshotInit: a server restarted from its snapshot serves what the
/// snapshot holds at once, and a second restart after one more write still
/// does (the snapshot is read back on every start, not only after a crash
/// during load).
#[test]
fn snapshot_init() {
    each_seed("snapshot_init", |seed| {
        let mut sim = cluster(seed, 3, 10, false);
        let client = sim.add_client(Workload::appends("unused", 0));
        appends(&mut sim, client, "k", 25)?;
        for _ in 0..2 {
            for id in 0..3 {
                sim.crash(id);
            }
            for id in 0..3 {
                if sim.storage(id).disk.snapshot.is_none() {
                    return Err(format!("server {id} has no snapshot to start from"));
                }
                sim.restart(id);
            }
            appends(&mut sim, client, "k", 1)?;
        }
        let stats = sim.stats().clone();
        conclude(&mut sim, "k")?;
        Ok(stats)
    });
}

/// 4B SnapshotRPC: a minority server misses 50 writes while the majority
/// compacts; in a new majority with it, it catches up by InstallSnapshot;
/// the Raft state stays within 8 × maxraftstate throughout.
#[test]
fn snapshot_rpc() {
    let stats = each_seed("snapshot_rpc", |seed| {
        let mut config = SimConfig::new(seed, 3);
        config.snapshots = SnapshotPolicy { every_entries: None, every_bytes: Some(MAX_RAFT_STATE) };
        config.snapshot_trailing_entries = 0;
        config.snapshot_chunk_bytes = 128;
        let mut sim = Sim::new(config);
        let client = sim.add_client(Workload::appends("unused", 0));
        let put = |sim: &mut Sim, key: &str, value: &str| {
            run_op(sim, client, Op::Put { key: key.into(), value: value.into() }).map(|_| ())
        };
        put(&mut sim, "a", "A")?;
        sim.partition(&[vec![0, 1], vec![2]]);
        sim.restrict_client(client, vec![0, 1]);
        appends(&mut sim, client, "x", 50)?;
        check_raft_state(&sim, 8 * MAX_RAFT_STATE)?;
        // Server 2 and server 0 make a majority: 2 must install a snapshot.
        sim.partition(&[vec![0, 2], vec![1]]);
        sim.restrict_client(client, vec![0, 2]);
        put(&mut sim, "c", "C")?;
        put(&mut sim, "d", "D")?;
        for (key, want) in [("a", "A"), ("c", "C"), ("d", "D")] {
            let got = run_op(&mut sim, client, Op::Get { key: key.into() })?;
            if got != want {
                return Err(format!("Get({key}) = {got:?}, want {want:?}"));
            }
        }
        sim.heal();
        sim.restrict_client(client, vec![0, 1, 2]);
        put(&mut sim, "e", "E")?;
        put(&mut sim, "f", "F")?;
        check_raft_state(&sim, 8 * MAX_RAFT_STATE)?;
        let stats = sim.stats().clone();
        conclude(&mut sim, "x")?;
        Ok(stats)
    });
    assert!(stats.installs > 0, "server 2 never installed a snapshot");
}

/// 4B SnapshotSize: 400 Puts to one key keep the Raft state within 8 ×
/// maxraftstate and every snapshot small (at most 500 bytes): a snapshot
/// holds the state, not its history.
#[test]
fn snapshot_size() {
    each_seed("snapshot_size", |seed| {
        let mut config = SimConfig::new(seed, 3);
        config.snapshots = SnapshotPolicy { every_entries: None, every_bytes: Some(MAX_RAFT_STATE) };
        config.snapshot_trailing_entries = 0;
        let mut sim = Sim::new(config);
        let client = sim.add_client(Workload::appends("unused", 0));
        for i in 0..200 {
            for value in ["0", "1"] {
                run_op(&mut sim, client, Op::Put { key: "x".into(), value: value.into() })?;
            }
            if i % 50 == 0 {
                check_raft_state(&sim, 8 * MAX_RAFT_STATE)?;
            }
        }
        let got = run_op(&mut sim, client, Op::Get { key: "x".into() })?;
        if got != "1" {
            return Err(format!("Get(x) = {got:?} after 400 Puts ending in \"1\""));
        }
        check_raft_state(&sim, 8 * MAX_RAFT_STATE)?;
        for id in 0..3 {
            if let Some(s) = &sim.storage(id).disk.snapshot {
                if s.data.len() > 500 {
                    return Err(format!("server {id}'s snapshot is {} bytes", s.data.len()));
                }
            }
        }
        Ok(sim.stats().clone())
    });
}
