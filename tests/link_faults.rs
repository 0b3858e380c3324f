//! Slow, lossy, duplicating and cut peer links between real `raftkv
//! server` processes, through the userspace fault proxy
//! (`tests/common/proxy.rs`): no root needed, so it runs everywhere (the
//! real packet-filter partitions of `tests/partitions.rs` need root).
//!
//! Under an appends load, faults are changed by client progress (so many
//! more operations completed), never by sleeping: every link slow, lossy
//! and duplicating; the leader unable to send (one-way: it still
//! receives); healed; the next leader cut off both ways; healed. The
//! history must be linearizable and every acknowledged append present
//! exactly once. `RAFTKV_SEED` picks the links' random streams (printed).

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/proxy.rs"]
mod proxy;

use cluster::{after_more_ops, appends_load, check_history, info_u64, leader, until, TestCluster};
use proxy::{Faults, Proxies};
use raftkv::server::load::{self, Progress};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_lossy_duplicating_and_cut_links_lose_nothing_and_stay_linearizable() {
    let seed = std::env::var("RAFTKV_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    eprintln!("link faults: RAFTKV_SEED={seed}");
    let mut cluster = TestCluster::configure("link-faults", 3);
    let targets: Vec<_> = cluster.config.nodes.iter().map(|n| n.peer).collect();
    let proxies = Proxies::start(&targets, seed).await;
    for id in 0..3 {
        cluster.set_args(id, proxies.route_args(id));
    }
    cluster.start_all();
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(appends_load(cluster.clients(), seed), progress.clone(), epoch));
    after_more_ops(&progress, 100).await;

    let lossy = Faults { delay: Duration::from_millis(3), drop_per_mille: 50, duplicate_per_mille: 50, cut: false };
    proxies.set_all(lossy);
    after_more_ops(&progress, 200).await;

    // The leader can receive but not send: the others elect a new one (so
    // the cut did take effect: the term moves on).
    let first = leader(&cluster).await;
    let term = |id: u8| info_u64(cluster.clients()[usize::from(id)], "raft_term");
    let first_term = term(first).await.unwrap();
    for other in (0..3).filter(|&o| o != first) {
        proxies.set(first, other, Faults { cut: true, ..lossy });
    }
    after_more_ops(&progress, 200).await;
    let other = (first + 1) % 3;
    until("a new term after the leader's one-way cut", || async { term(other).await > Some(first_term) }).await;
    proxies.heal();
    after_more_ops(&progress, 200).await;

    // Whoever leads now, cut off both ways.
    let second = leader(&cluster).await;
    let second_term = term(second).await.unwrap();
    proxies.isolate(second);
    after_more_ops(&progress, 200).await;
    let other = (second + 1) % 3;
    until("a new term after the leader's isolation", || async { term(other).await > Some(second_term) }).await;
    proxies.heal();
    after_more_ops(&progress, 200).await;

    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    let history = check_history(&cluster, &records, epoch, 3).await;
    eprintln!(
        "link faults: {} history entries; leader {first} could not send, then leader {second} was isolated",
        history.ops.len()
    );
}
