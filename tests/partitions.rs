//! Real network partitions of real `raftkv server` processes (issue 21,
//! item 4): each server in its own network namespace behind a bridge,
//! clients in the test's namespace, cuts made by nftables rules that match
//! only server-to-server traffic, so a cut-off leader stays reachable by
//! clients (`tests/common/netns.rs`).
//!
//! The nemesis cycles through the schedules of issue 21 under an appending
//! load: the leader isolated; the leader able to receive but not send; a
//! bridge (two servers cut from each other, the third sees both); no
//! majority at all. After each it heals and waits for the load to make
//! progress again. The history must be linearizable and every
//! acknowledged append present exactly once. Availability (the longest
//! window with no completed operation, per event) is printed, not asserted:
//! figures go in benchmarks, never in timed tests.
//!
//! Needs root, `ip` and `nft`; skipped with a message otherwise, unless
//! `RAFTKV_REQUIRE_NETNS=1` (CI sets it where it runs as root), which
//! turns the skip into a failure.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/netns.rs"]
mod netns;

use cluster::{after_more_ops, appends_load, check_history, leader, TestCluster};
use netns::{Netns, Way};
use raftkv::server::load::{self, ClientRecord, Progress};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long each partition is held: several election timeouts.
const HOLD: Duration = Duration::from_secs(2);

fn netns_or_skip(n: u8) -> Option<Netns> {
    match Netns::create(n) {
        Ok(net) => Some(net),
        Err(why) if std::env::var("RAFTKV_REQUIRE_NETNS").is_ok_and(|v| v == "1") => {
            panic!("RAFTKV_REQUIRE_NETNS=1 but network namespaces are not available: {why}")
        }
        Err(why) => {
            eprintln!("skipped: real partitions need network namespaces: {why}");
            None
        }
    }
}

/// One fault of the schedule: when it was made and healed, in microseconds
/// since the epoch.
struct Event {
    name: String,
    cut_us: u64,
    heal_us: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_real_processes_lose_nothing_and_stay_linearizable() {
    let Some(net) = netns_or_skip(3) else { return };
    let mut cluster = TestCluster::configure("partitions", 3);
    for id in 0..3 {
        cluster.place(id, net.addr(id), net.exec_prefix(id));
    }
    cluster.start_all();
    let mut spec = appends_load(cluster.clients(), 21);
    spec.clients = 8;
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));
    after_more_ops(&progress, 200).await;

    let now_us = || epoch.elapsed().as_micros() as u64;
    let mut events = Vec::new();
    for schedule in ["leader isolated", "leader cannot send", "bridge", "no majority"] {
        let l = leader(&cluster).await;
        let (a, b) = ((l + 1) % 3, (l + 2) % 3);
        let cut_us = now_us();
        match schedule {
            "leader isolated" => net.isolate(l, Way::Both),
            "leader cannot send" => net.isolate(l, Way::CannotSend),
            "bridge" => net.cut(a, b, Way::Both),
            _ => (0..3).for_each(|i| net.isolate(i, Way::Both)),
        }
        tokio::time::sleep(HOLD).await; // the fault's duration, not a synchronisation
        net.heal();
        let heal_us = now_us();
        events.push(Event { name: format!("{schedule} (leader was {l})"), cut_us, heal_us });
        after_more_ops(&progress, 200).await;
    }
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    report_availability(&records, &events);
    check_history(&cluster, &records, epoch, 3).await;
}

/// Prints, per event: the longest window without a completed operation
/// between the cut and 2 s after the heal, how long after the cut the first
/// operation completed, and how long after the heal.
fn report_availability(records: &[ClientRecord], events: &[Event]) {
    let mut done: Vec<u64> = records.iter().flat_map(|r| r.history.iter().filter_map(|op| op.ret)).collect();
    done.sort_unstable();
    let longest_op = records.iter().flat_map(|r| r.latencies_us.iter().map(|(_, us)| *us)).max().unwrap_or_default();
    eprintln!("{} operations completed; the longest took {:.0} ms", done.len(), longest_op as f64 / 1e3);
    eprintln!("{:<36} {:>12} {:>16} {:>16}", "event", "longest gap", "first op after", "first after heal");
    for e in events {
        let window_end = e.heal_us + 2_000_000;
        let mut last = e.cut_us;
        let mut gap = 0;
        for &t in done.iter().filter(|&&t| t > e.cut_us && t <= window_end) {
            gap = gap.max(t - last);
            last = t;
        }
        let first_after = |from: u64| {
            done.iter()
                .find(|&&t| t > from)
                .map_or("none".to_string(), |t| format!("{:.0} ms", (t - from) as f64 / 1e3))
        };
        eprintln!(
            "{:<36} {:>9.0} ms {:>16} {:>16}",
            e.name,
            gap as f64 / 1e3,
            first_after(e.cut_us),
            first_after(e.heal_us)
        );
    }
}
