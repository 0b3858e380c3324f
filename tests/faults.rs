//! A server that cannot go on ends loudly, and loses nothing it
//! acknowledged: real `raftkv server` processes with faults injected on
//! purpose (`src/server/faults.rs`: `RAFTKV_FAULT` says what, the file
//! `RAFTKV_FAULT_TRIGGER` says when).
//!
//! - A storage error (EIO, ENOSPC) on a one-node cluster: the server exits
//!   with 74 and a line naming the error; restarted from its data directory
//!   it has every write it acknowledged, exactly once.
//! - A panic in each kind of thread or task (node, persist, peer
//!   connection, client connection) of one member of three: the server
//!   exits with 70 and the panic report names the thread and the message;
//!   the other two keep serving; the restarted member catches up.
//!
//! Both end with the whole history checked: linearizable, and every
//! acknowledged append in the final value exactly once.

#[path = "common/cluster.rs"]
mod cluster;

use cluster::{after_more_ops, info_field, leader, until, TestCluster};
use raftkv::server::client::{info, Access};
use raftkv::server::load::{self, LoadSpec, Mix, Progress, System};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: u64 = 2;

fn spec(cluster: &TestCluster, seed: u64) -> LoadSpec {
    LoadSpec {
        servers: cluster.clients(),
        clients: 3,
        mix: Mix::Appends,
        keys: KEYS,
        rotate_keys_every: None,
        key_bytes: 8,
        value_bytes: 16,
        seed,
        op_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_millis(300),
        access: Access::plain(),
        system: System::Raftkv,
    }
}

/// Arms `fault` for node `id`'s next start, with a trigger file of its own.
fn arm(cluster: &mut TestCluster, id: u8, fault: &str) -> PathBuf {
    let trigger = cluster.root.path().join(format!("trigger-{fault}"));
    let _ = std::fs::remove_file(&trigger);
    cluster.set_env(id, &[("RAFTKV_FAULT", fault), ("RAFTKV_FAULT_TRIGGER", trigger.to_str().unwrap())]);
    trigger
}

/// Pulls the trigger and waits for node `id` to exit; returns its exit code
/// and its log.
fn fire(cluster: &mut TestCluster, id: u8, trigger: &PathBuf) -> (Option<i32>, String) {
    std::fs::write(trigger, b"fire").unwrap();
    let status = cluster.wait_exit(id);
    std::fs::remove_file(trigger).unwrap();
    (status.code(), cluster.log_of(id))
}

/// Reads every key back and checks the whole history (the shared
/// `cluster::check_history`); returns how many operations completed.
async fn check_history(cluster: &TestCluster, records: Vec<load::ClientRecord>, epoch: Instant) -> usize {
    cluster::check_history(cluster, &records, epoch, KEYS as usize).await;
    records.iter().map(|r| r.latencies_us.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_ends_the_server_and_a_restart_recovers_every_acknowledged_write() {
    let mut cluster = TestCluster::configure("storage-fault", 1);
    let mut trigger = arm(&mut cluster, 0, "storage-eio");
    cluster.start_all();
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(spec(&cluster, 11), progress.clone(), epoch));

    for (fault, error) in [("storage-eio", "Input/output error"), ("storage-enospc", "No space left on device")] {
        if fault != "storage-eio" {
            trigger = arm(&mut cluster, 0, fault);
            cluster.restart(0);
        }
        after_more_ops(&progress, 100).await;
        let (code, log) = fire(&mut cluster, 0, &trigger);
        assert_eq!(code, Some(74), "{fault}: exit code; log:\n{log}");
        assert!(log.contains("storage failed") && log.contains(error), "{fault}: no line naming the error:\n{log}");
    }
    // Restarted without faults, from what the disk holds.
    cluster.set_env(0, &[]);
    cluster.restart(0);
    after_more_ops(&progress, 100).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    let completed = check_history(&cluster, records, epoch).await;
    eprintln!("storage faults: {completed} operations completed around two injected storage errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_any_thread_ends_the_server_and_the_others_keep_serving() {
    let mut cluster = TestCluster::configure("panic-fault", 3);
    // The disk write runs on the persist thread, or on the node thread of a
    // follower whose persist thread is idle.
    let sites = [
        ("panic-node", &["raftkv-node-0"][..]),
        ("panic-persist", &["raftkv-persist-0", "raftkv-node-0"][..]),
        ("panic-peer", &["raftkv-io"][..]),
        ("panic-client", &["raftkv-io"][..]),
    ];
    let mut trigger = arm(&mut cluster, 0, sites[0].0);
    cluster.start_all();
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(spec(&cluster, 12), progress.clone(), epoch));
    let node0 = cluster.clients()[0];

    for (i, (fault, threads)) in sites.iter().enumerate() {
        if i > 0 {
            trigger = arm(&mut cluster, 0, fault);
            cluster.restart(0);
        }
        after_more_ops(&progress, 100).await;
        std::fs::write(&trigger, b"fire").unwrap();
        if *fault == "panic-client" {
            // A command on one of node 0's client connections.
            let _ = info(node0, &Access::plain(), Duration::from_millis(500)).await;
        }
        let status = cluster.wait_exit(0);
        std::fs::remove_file(&trigger).unwrap();
        let log = cluster.log_of(0);
        assert_eq!(status.code(), Some(70), "{fault}: exit code; log:\n{log}");
        // The standard report: "thread 'NAME' (TID) panicked at FILE: MESSAGE".
        let named = log.lines().any(|l| {
            threads.iter().any(|thread| l.starts_with(&format!("thread '{thread}'"))) && l.contains("panicked")
        });
        assert!(named && log.contains("injected fault"), "{fault}: no panic report naming {threads:?}:\n{log}");
        // The other two still make a majority.
        after_more_ops(&progress, 50).await;
    }
    cluster.set_env(0, &[]);
    cluster.restart(0);
    after_more_ops(&progress, 100).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    let completed = check_history(&cluster, records, epoch).await;

    // The restarted member catches up with everything committed.
    let addrs = cluster.clients();
    let leader_now = leader(&cluster).await;
    let commit: u64 = info_field(addrs[usize::from(leader_now)], "raft_commit_index").await.unwrap().parse().unwrap();
    until("node 0 to apply everything committed", || async {
        let applied = info_field(addrs[0], "raft_applied_index").await;
        applied.and_then(|a| a.parse::<u64>().ok()).is_some_and(|a| a >= commit)
    })
    .await;
    eprintln!("panics: {completed} operations completed around four injected panics");
}
