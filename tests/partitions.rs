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
//! window with no completed operation, the time to a new leader's first
//! commit and until every link carries traffic again, per event:
//! `common/availability.rs`) is printed, not asserted: figures go in
//! benchmarks, never in timed tests.
//!
//! Needs root, `ip` and `nft`; skipped with a message otherwise, unless
//! `RAFTKV_REQUIRE_NETNS=1` (CI sets it where it runs as root), which
//! turns the skip into a failure.

#[path = "common/availability.rs"]
mod availability;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/netns.rs"]
mod netns;

use availability::{Event, Sampler};
use cluster::{after_more_ops, appends_load, check_history, leader, TestCluster};
use netns::{Netns, Way};
use raftkv::rng::Rng;
use raftkv::server::load::{self, LoadSpec, Progress};
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

/// Three servers, one per namespace of `net`, started; and the load: 8
/// clients appending to `keys` keys.
fn start(net: &Netns, tag: &str, seed: u64, keys: u64) -> (TestCluster, LoadSpec) {
    let mut cluster = TestCluster::configure(tag, 3);
    for id in 0..3 {
        cluster.place(id, net.addr(id), net.exec_prefix(id));
    }
    cluster.start_all();
    let mut spec = appends_load(cluster.clients(), seed);
    spec.clients = 8;
    spec.keys = keys;
    (cluster, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_real_processes_lose_nothing_and_stay_linearizable() {
    let Some(net) = netns_or_skip(3) else { return };
    let (cluster, spec) = start(&net, "partitions", 21, 3);
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let sampler = Sampler::start(&cluster.clients(), &cluster.access, epoch);
    let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));
    after_more_ops(&progress, 200).await;

    let now_us = || epoch.elapsed().as_micros() as u64;
    let mut events = Vec::new();
    for schedule in ["leader isolated", "leader cannot send", "bridge", "no majority"] {
        let l = leader(&cluster).await;
        let (a, b) = ((l + 1) % 3, (l + 2) % 3);
        match schedule {
            "leader isolated" => net.isolate(l, Way::Both),
            "leader cannot send" => net.isolate(l, Way::CannotSend),
            "bridge" => net.cut(a, b, Way::Both),
            _ => (0..3).for_each(|i| net.isolate(i, Way::Both)),
        }
        let cut_us = now_us(); // the rules are in place
        tokio::time::sleep(HOLD).await; // the fault's duration, not a synchronisation
        net.heal();
        let heal_us = now_us();
        let victims = match schedule {
            "leader isolated" | "leader cannot send" => vec![l],
            "bridge" => vec![a, b],
            _ => vec![0, 1, 2],
        };
        events.push(Event { name: format!("{schedule} (leader was {l})"), cut_us, heal_us, victims });
        after_more_ops(&progress, 200).await;
    }
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    availability::report(&records, &events, &sampler.finish().await, 3);
    check_history(&cluster, &records, epoch, 3).await;
}

/// A random schedule of faults, each leaving a majority able to talk: one
/// server isolated (both ways, or unable to send), a bridge (two servers
/// cut from each other), one server killed with SIGKILL (restarted when
/// the fault ends) or paused with SIGSTOP (continued), or no fault; each
/// held 1-3 s. `RAFTKV_SEED` picks the schedule (default 1),
/// `RAFTKV_NEMESIS_SECONDS` its length (default 12; the long form is 600:
/// `RAFTKV_NEMESIS_SECONDS=600 cargo test --release --test partitions
/// random -- --nocapture`). Linearizable, nothing acknowledged lost; the
/// longest window without a completed operation (every state has a
/// majority, so the target is at most 1 s) and the longest operation are
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_schedule_of_faults_that_each_leave_a_majority_keeps_serving() {
    let Some(net) = netns_or_skip(3) else { return };
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (seed, seconds) = (env("RAFTKV_SEED", 1), env("RAFTKV_NEMESIS_SECONDS", 12));
    eprintln!("nemesis seed {seed} for {seconds} s; replay: RAFTKV_SEED={seed} RAFTKV_NEMESIS_SECONDS={seconds} cargo test --test partitions random -- --nocapture");
    // Every Get returns its key's whole value, which grows with every
    // append: keys in proportion to the run's length keep values (and the
    // history, which holds every Get's value) bounded. With 3 keys a
    // 10-minute run's history outgrew 24 GB.
    let keys = (2 * seconds).max(3);
    let (mut cluster, spec) = start(&net, "nemesis", seed, keys);
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let sampler = Sampler::start(&cluster.clients(), &cluster.access, epoch);
    let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));
    after_more_ops(&progress, 200).await;

    let mut rng = Rng::new(seed);
    let now_us = || epoch.elapsed().as_micros() as u64;
    let mut events = Vec::new();
    while epoch.elapsed() < Duration::from_secs(seconds) {
        let victim = rng.range(0, 3) as u8;
        let other = (victim + 1 + rng.range(0, 2) as u8) % 3;
        let hold = Duration::from_millis(rng.range(1_000, 3_001));
        let mut victims = vec![victim];
        let name = match rng.range(0, 6) {
            0 => {
                net.isolate(victim, Way::Both);
                format!("{victim} isolated")
            }
            1 => {
                net.isolate(victim, Way::CannotSend);
                format!("{victim} cannot send")
            }
            2 => {
                net.cut(victim, other, Way::Both);
                net.cut(other, victim, Way::Both);
                victims.push(other);
                format!("bridge: {victim} and {other} apart")
            }
            3 => {
                cluster.kill9(victim);
                format!("{victim} killed")
            }
            4 => {
                cluster.signal(victim, "-STOP");
                format!("{victim} paused")
            }
            _ => {
                victims.clear();
                "no fault".to_string()
            }
        };
        let cut_us = now_us(); // the fault is in place
        tokio::time::sleep(hold).await; // the fault's duration, not a synchronisation
        net.heal();
        if name.ends_with("killed") {
            cluster.restart(victim);
        } else if name.ends_with("paused") {
            cluster.signal(victim, "-CONT");
        }
        events.push(Event { name, cut_us, heal_us: now_us(), victims });
    }
    after_more_ops(&progress, 200).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    availability::report(&records, &events, &sampler.finish().await, 3);
    check_history(&cluster, &records, epoch, keys as usize).await;
}
