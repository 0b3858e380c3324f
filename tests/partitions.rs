//! Real network partitions of real `raftkv server` processes (issue 21,
//! item 4): each server in its own network namespace behind a bridge,
//! clients in the test's namespace, cuts made by nftables rules that match
//! only server-to-server traffic, so a cut-off leader stays reachable by
//! clients (`server::nemesis::netns`).
//!
//! The nemesis cycles through the schedules of issue 21 under an appending
//! load: the leader isolated; the leader able to receive but not send; a
//! bridge (two servers cut from each other, the third sees both); no
//! majority at all. After each it heals and waits for the load to make
//! progress again. The history must be linearizable and every
//! acknowledged append present exactly once. Availability (the longest
//! window with no completed operation, the time to a new leader's first
//! commit and until every link carries traffic again, per event:
//! `server::nemesis::availability`) is printed, not asserted: figures go in
//! benchmarks, never in timed tests.
//!
//! Needs root, `ip` and `nft`; skipped with a message otherwise, unless
//! `RAFTKV_REQUIRE_NETNS=1` (CI sets it where it runs as root), which
//! turns the skip into a failure.

#[path = "common/cluster.rs"]
mod cluster;

use cluster::{after_more_ops, appends_load, check_history, leader, TestCluster};
use raftkv::server::load::{self, LoadSpec, Progress};
use raftkv::server::nemesis::availability::{self, Event, Sampler};
use raftkv::server::nemesis::netns::{Netns, Way};
use raftkv::server::nemesis::{self, random_schedule};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long each partition is held: several election timeouts.
const HOLD: Duration = Duration::from_secs(2);

fn netns_or_skip(n: u8) -> Option<Netns> {
    match Netns::create(n) {
        Ok(net) => Some(net),
        Err(why) => skip(why),
    }
}

fn skip<T>(why: String) -> Option<T> {
    if std::env::var("RAFTKV_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("RAFTKV_REQUIRE_NETNS=1 but network namespaces are not available: {why}")
    }
    eprintln!("skipped: real partitions need network namespaces: {why}");
    None
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
            _ => (0..3).try_for_each(|i| net.isolate(i, Way::Both)),
        }
        .unwrap();
        let cut_us = now_us(); // the rules are in place
        tokio::time::sleep(HOLD).await; // the fault's duration, not a synchronisation
        net.heal().unwrap();
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
    eprint!("{}", availability::report(&records, &events, &sampler.finish().await, 3));
    check_history(&cluster, &records, epoch, 3).await;
}

/// A random schedule of faults, each leaving a majority able to talk
/// (`nemesis::Fault`): one server isolated (both ways, or unable to send),
/// a bridge (two servers cut from each other), one server killed with
/// SIGKILL (restarted when the fault ends) or paused with SIGSTOP
/// (continued), or no fault; each held 1-3 s. `RAFTKV_SEED` picks the
/// schedule (default 1), `RAFTKV_NEMESIS_SECONDS` its length (default 12;
/// `raftkv nemesis` runs the same schedule as a command). Linearizable,
/// nothing acknowledged lost; the longest window without a completed
/// operation (every state has a majority, so the target is at most 1 s),
/// the longest operation and the per-fault figures are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_schedule_of_faults_that_each_leave_a_majority_keeps_serving() {
    let Some(net) = netns_or_skip(3) else { return };
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (seed, seconds) = (env("RAFTKV_SEED", 1), env("RAFTKV_NEMESIS_SECONDS", 12));
    eprintln!("nemesis seed {seed} for {seconds} s; replay: RAFTKV_SEED={seed} RAFTKV_NEMESIS_SECONDS={seconds} cargo test --test partitions random -- --nocapture");
    let run_for = Duration::from_secs(seconds);
    let mut cluster = TestCluster::configure("nemesis", nemesis::SERVERS);
    for id in 0..nemesis::SERVERS {
        cluster.place(id, net.addr(id), net.exec_prefix(id));
    }
    cluster.start_all();
    let spec = nemesis::appends_load(cluster.clients(), cluster.access.clone(), 8, seed);
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let sampler = Sampler::start(&cluster.clients(), &cluster.access, epoch);
    let clients = tokio::spawn(load::run(spec.clone(), progress.clone(), epoch));
    after_more_ops(&progress, 200).await;
    let events = random_schedule(&net, &mut cluster, seed, run_for, epoch).await.unwrap();
    after_more_ops(&progress, 200).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    eprint!("{}", availability::report(&records, &events, &sampler.finish().await, nemesis::SERVERS));
    check_history(&cluster, &records, epoch, spec.keys as usize).await;
}

/// `raftkv nemesis`, the real binary: a short random schedule runs,
/// checks and reports; every namespace it made is gone when it exits; and
/// without root it refuses with exit 2 and says why.
#[test]
fn the_nemesis_command_runs_a_checked_schedule_and_leaves_nothing_behind() {
    if let Err(why) = Netns::available() {
        return skip(why).unwrap_or(());
    }
    let chart = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nemesis.svg");
    let _ = std::fs::remove_file(&chart);
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["nemesis", "--seconds", "4", "--seed", "3", "--plot"])
        .arg(&chart)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "raftkv nemesis failed ({}):\n{stdout}\n{stderr}", run.status);
    assert!(stdout.contains("new leader commit"), "no per-fault report:\n{stdout}");
    assert!(stdout.contains("linearizable, and every acknowledged append"), "{stdout}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "not a chart: {chart:?}");
    let left = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let (data_dir, pid) = data_dir_and_pid(&stdout);
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&format!("rkv-{pid}-")), "namespaces left behind");
    assert!(!data_dir.exists(), "{data_dir:?} left behind");

    // As nobody, from a copy nobody may run (the build may be in a
    // directory only root can enter).
    let copy = std::env::temp_dir().join(format!("raftkv-nemesis-test-{}", std::process::id()));
    std::fs::copy(env!("CARGO_BIN_EXE_raftkv"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let refused = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .arg("nemesis")
        .current_dir(std::env::temp_dir())
        .output();
    std::fs::remove_file(&copy).unwrap();
    let refused = refused.unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs root"), "{refused:?}");
}

/// `raftkv nemesis --tls`: the same run with TLS on every port. The
/// clients speak only TLS, so a server left in plain text (or a certificate
/// not naming its namespace address) fails the run.
#[test]
fn the_nemesis_command_runs_with_tls_between_the_servers() {
    if let Err(why) = Netns::available() {
        return skip(why).unwrap_or(());
    }
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["nemesis", "--seconds", "4", "--seed", "5", "--tls"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "raftkv nemesis --tls failed ({}):\n{stdout}\n{stderr}", run.status);
    assert!(stdout.contains("(TLS on every port)"), "{stdout}");
    assert!(stdout.contains("linearizable, and every acknowledged append"), "{stdout}");
    assert!(!data_dir_and_pid(&stdout).0.exists(), "data directory left behind");
}

/// The data directory `raftkv nemesis` printed (`.../raftkv-nemesis-<pid>-<n>`),
/// and the process id in its name, which its namespaces' names carry too.
fn data_dir_and_pid(stdout: &str) -> (std::path::PathBuf, String) {
    let dir =
        stdout.split("logs in ").nth(1).and_then(|rest| rest.lines().next()).expect("the data directory is printed");
    let pid = dir.rsplit("raftkv-nemesis-").next().unwrap().split('-').next().unwrap();
    (dir.into(), pid.to_string())
}
