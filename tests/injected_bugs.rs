//! A checker that cannot fail proves nothing. Each test here switches on one
//! known Raft bug ([`InjectedBugs`]) and shows that the simulator's safety
//! checks or the linearizability checker catch it within a bounded number
//! of seeds, naming the broken property. The same schedules with the bug
//! off must stay clean (the control tests), so what is caught is the bug.

mod common;

use raftkv::kv::AdminOp;
use raftkv::kv::{Op, SnapshotPolicy};
use raftkv::lincheck::{self, Budget, OpKind};
use raftkv::raft::MembershipChange;
use raftkv::raft::{InjectedBugs, NodeId};
use raftkv::sim::churn::Churn;
use raftkv::sim::scenario::{Chaos, ScenarioFailure};
use raftkv::sim::{Failure, Sim, SimConfig, Workload};

const CHAOS: Chaos = Chaos { servers: 5, clients: 5, keys: 3, run_us: 5_000_000, all_ops: false };

/// Runs the chaos schedule with `bug` on over seeds `0..max_seeds` and
/// returns the first failure.
fn hunt(bug: &str, max_seeds: u64) -> Option<ScenarioFailure> {
    let bugs = InjectedBugs::only(bug).expect("a known bug");
    (0..max_seeds).find_map(|seed| {
        let mut config = CHAOS.sim_config(seed);
        config.bugs = bugs;
        CHAOS.run(config).err()
    })
}

fn assert_caught(bug: &str, max_seeds: u64, expected: &str) {
    match hunt(bug, max_seeds) {
        Some(failure) => {
            assert!(
                failure.reason.contains(expected),
                "bug {bug} was caught, but as something else than {expected}: {failure}"
            );
            println!("bug {bug} caught at seed {}: {}", failure.seed, first_line(&failure.reason));
        }
        None => panic!("bug {bug} was NOT caught in {max_seeds} seeds: the checks are too weak"),
    }
}

fn first_line(s: &str) -> &str {
    &s[..s.len().min(160)]
}

/// The control: the chaos schedule without bugs stays clean.
#[test]
fn chaos_without_bugs_is_clean() {
    for seed in common::seeds(100) {
        if let Err(failure) = CHAOS.run(CHAOS.sim_config(seed)) {
            panic!("{}", common::report(&failure));
        }
    }
}

/// The control for `DEL` and `SETNX`: clients that also Delete and
/// PutIfAbsent (whose replies depend on the value they meet) stay
/// linearizable through the chaos schedule, and the histories do contain
/// both answers of both calls.
#[test]
fn chaos_with_every_operation_is_clean() {
    let chaos = Chaos { all_ops: true, ..CHAOS };
    let mut seen = std::collections::BTreeSet::new();
    for seed in common::seeds(200) {
        let outcome =
            chaos.run(chaos.sim_config(seed)).unwrap_or_else(|failure| panic!("{}", common::report(&failure)));
        for op in outcome.history.ops.iter().filter(|o| o.kind.is_conditional() && o.ret.is_some()) {
            seen.insert((op.kind, op.output.clone()));
        }
    }
    assert_eq!(seen.len(), 4, "not every answer of Delete and PutIfAbsent was seen: {seen:?}");
}

/// (b) Voting without the up-to-date check elects a leader that lacks
/// committed entries.
#[test]
fn vote_without_log_check_is_caught() {
    assert_caught("vote_without_log_check", 100, "LeaderCompleteness");
}

/// (c) A deposed leader that serves reads without confirming its leadership
/// returns stale values: the history is not linearizable. The chaos
/// schedule hits this about once in a thousand seeds (a deposed leader
/// steps down by CheckQuorum about when the others elect a new one), so a
/// schedule built for it gives the bug its chance on every seed: see
/// [`stale_read`].
#[test]
fn read_without_quorum_is_caught() {
    assert_caught_on_schedule("read_without_quorum", "not linearizable", stale_read);
}

#[test]
fn stale_read_schedule_without_the_bug_is_clean() {
    assert_schedule_clean(stale_read);
}

/// Clocks that drift by up to 30% (far more than real ones, so that a
/// lease that leaves drift out is caught in a few seeds), and lease reads.
const LEASE_DRIFT_PPM: u64 = 300_000;

fn lease_config(seed: u64, bugs: InjectedBugs) -> SimConfig {
    let mut config = SimConfig::new(seed, 5);
    config.bugs = bugs;
    config.clock_drift_ppm = LEASE_DRIFT_PPM;
    config.lease_reads = true;
    // The writer gives up on the cut-off leader quickly, so its write
    // completes while that leader's lease may still run.
    config.client_timeout_us = 10_000;
    config
}

/// (s) A lease as long as the election timeout on a true clock: on (c)'s
/// schedule, the cut-off leader's slow clock still shows its lease valid
/// after fast followers elected another leader and took a write, and it
/// answers the old value without asking anyone.
#[test]
fn lease_ignores_drift_is_caught() {
    assert_caught_on_schedule("lease_ignores_drift", "LeaseSafety", |seed, bugs| {
        stale_read_with(lease_config(seed, bugs))
    });
}

/// The control for (s): the same drift and schedule with the lease the
/// bound allows stays linearizable, on every seed that reached the read.
#[test]
fn stale_read_schedule_with_lease_reads_is_clean() {
    assert_schedule_clean(|seed, bugs| stale_read_with(lease_config(seed, bugs)));
}

/// (t) A server that reboots forgets it echoed a leader's round: its vote
/// elects another leader within that leader's lease. See [`lease_reboot`].
#[test]
fn restart_forgets_lease_is_caught() {
    assert_caught_on_schedule("restart_forgets_lease", "LeaseSafety", lease_reboot);
}

#[test]
fn lease_reboot_schedule_without_the_bug_is_clean() {
    assert_schedule_clean(lease_reboot);
}

/// (t)'s schedule, 5 servers, lease reads on, true clocks: L leads and a
/// write of `k` completes everywhere. C and D are cut off from L, E and F,
/// so only E and F echo L's rounds, and C's elections fail for want of
/// votes. Then L is cut off alone and E reboots at once. With the bug, E
/// votes for C at once: C wins with D and E within L's lease, takes a
/// second write of `k`, and L answers a read with the old value. Correct, E
/// stays out of elections for an election timeout and L's lease runs out
/// first.
fn lease_reboot(seed: u64, bugs: InjectedBugs) -> Scheduled {
    let mut config = SimConfig::new(seed, 5);
    config.bugs = bugs;
    config.lease_reads = true;
    config.client_timeout_us = 10_000;
    let mut sim = Sim::new(config);
    let result = lease_reboot_steps(&mut sim);
    judged(&sim, result)
}

/// A read schedule's outcome: a check that fired, or else the history's
/// linearizability once it ran to its end.
fn judged(sim: &Sim, result: Result<Result<(), &'static str>, Failure>) -> Scheduled {
    if let Ok(Ok(())) = result {
        let verdict = lincheck::check(&sim.history(), Budget::steps(Budget::DEFAULT_MAX_STEPS));
        if !verdict.is_ok() {
            return Scheduled::Caught(format!("history not linearizable: {verdict:?}"));
        }
    }
    result.into()
}

fn lease_reboot_steps(sim: &mut Sim) -> Result<Result<(), &'static str>, Failure> {
    let all: Vec<NodeId> = (0..5).collect();
    let writer = sim.add_client(Workload::appends("unused", 0));
    let reader = sim.add_client(Workload::appends("unused", 0));
    if !run_until(sim, 3_000_000, |s| s.settled_leader().is_some())? {
        return Ok(Err("no first leader"));
    }
    let l = sim.settled_leader().expect("leader");
    let l_term = sim.server(l).expect("up").node().term();
    if !complete(sim, writer, Op::Put { key: "k".into(), value: "1".into() })? {
        return Ok(Err("the first write did not complete"));
    }
    let rest: Vec<NodeId> = all.iter().copied().filter(|&id| id != l).collect();
    let (e, f, c, d) = (rest[0], rest[1], rest[2], rest[3]);
    sim.partition(&[vec![l, e, f], vec![c, d]]);
    let election_us = sim.config().election_us();
    sim.run_for(2 * election_us)?;
    sim.partition(&[vec![l], rest.clone()]);
    sim.crash(e);
    sim.restart(e);
    read_at_the_deposed_leader(sim, (l, l_term), (writer, reader))
}

/// Lease reads under chaos (partitions, an isolated leader, crashes, quick
/// reboots, an unreliable network) with drifting clocks stay linearizable,
/// and most reads are answered by the lease, so the runs did test it.
#[test]
fn chaos_with_lease_reads_and_drifting_clocks_is_clean() {
    let (mut leased, mut reads) = (0, 0);
    for seed in common::seeds(50) {
        let mut config = CHAOS.sim_config(seed);
        config.clock_drift_ppm = LEASE_DRIFT_PPM;
        config.lease_reads = true;
        let outcome = CHAOS.run(config).unwrap_or_else(|failure| panic!("{}", common::report(&failure)));
        leased += outcome.stats.reads_by_lease;
        reads += outcome.history.ops.iter().filter(|o| o.kind == OpKind::Get && o.ret.is_some()).count() as u64;
    }
    println!("{leased} reads answered by a lease; {reads} Gets returned");
    assert!(leased * 2 > reads, "fewer than half the reads went by the lease: {leased} of {reads}");
}

/// (d) A new leader serving reads before its no-op commits may not know the
/// latest commit (the RedisRaft stale read).
#[test]
fn read_before_noop_is_caught() {
    assert_caught("read_before_noop", 300, "not linearizable");
}

/// (e) Without the session table a retried append is executed twice.
#[test]
fn skip_session_table_is_caught() {
    assert_caught("skip_session_table", 100, "ExactlyOnce");
}

/// (f) A vote that never reaches the disk is forgotten by a reboot, and the
/// node votes again in the same term: two leaders in one term. As with (c),
/// chaos hits this about once in a thousand seeds; [`double_vote`] builds
/// the reboot between the two elections.
#[test]
fn vote_before_persist_is_caught() {
    assert_caught_on_schedule("vote_before_persist", "ElectionSafety", double_vote);
}

#[test]
fn double_vote_schedule_without_the_bug_is_clean() {
    assert_schedule_clean(double_vote);
}

/// Runs `schedule` with `bug` on over seeds `0..50`: some seed must be
/// caught, each as `expected`; prints how many of those that reached the
/// schedule's shape were.
fn assert_caught_on_schedule(bug: &str, expected: &str, schedule: impl Fn(u64, InjectedBugs) -> Scheduled) {
    let bugs = InjectedBugs::only(bug).expect("a known bug");
    let (mut caught, mut reached) = (0, 0);
    for seed in 0..50 {
        match schedule(seed, bugs) {
            Scheduled::Caught(why) => {
                assert!(why.contains(expected), "seed {seed}: {bug} caught as something else: {why}");
                println!("seed {seed}: {}", first_line(&why));
                (caught, reached) = (caught + 1, reached + 1);
            }
            Scheduled::Clean => reached += 1,
            Scheduled::NotReached(why) => println!("seed {seed}: not reached: {why}"),
        }
    }
    println!("{bug} caught in {caught} of {reached} seeds that reached the schedule");
    assert!(caught > 0, "bug {bug} NOT caught in 50 seeds ({reached} reached the schedule)");
}

/// The control: `schedule` without bugs breaks nothing on any seed, and
/// some seed reaches its end (or the control proves nothing).
fn assert_schedule_clean(schedule: impl Fn(u64, InjectedBugs) -> Scheduled) {
    let mut reached = 0;
    for seed in common::seeds(50) {
        match schedule(seed, InjectedBugs::default()) {
            Scheduled::Caught(why) => panic!("seed {seed}: {why}"),
            Scheduled::Clean => reached += 1,
            Scheduled::NotReached(_) => {}
        }
    }
    assert!(reached > 0, "the schedule never reached its end: the control proves nothing");
}

/// The outcome of a hand-built schedule.
enum Scheduled {
    /// A safety check fired, or the history is not linearizable.
    Caught(String),
    /// The schedule ran to its end and nothing fired.
    Clean,
    /// The timings did not produce the schedule's shape for this seed.
    NotReached(&'static str),
}

impl From<Result<Result<(), &'static str>, Failure>> for Scheduled {
    fn from(result: Result<Result<(), &'static str>, Failure>) -> Scheduled {
        match result {
            Err(failure) => Scheduled::Caught(failure.to_string()),
            Ok(Ok(())) => Scheduled::Clean,
            Ok(Err(why)) => Scheduled::NotReached(why),
        }
    }
}

/// (c)'s schedule, 5 servers: a client writes `k`; the leader L is cut off
/// from the other servers (a second client can still reach it, and only
/// it); the others elect a new leader and the first client overwrites `k`
/// there; then the second client reads `k` at L, which does not know it
/// was deposed. A correct L cannot confirm its leadership and serves
/// nothing until the partition heals; with the bug it answers the old value.
fn stale_read(seed: u64, bugs: InjectedBugs) -> Scheduled {
    let mut config = SimConfig::new(seed, 5);
    config.bugs = bugs;
    stale_read_with(config)
}

fn stale_read_with(mut config: SimConfig) -> Scheduled {
    if std::env::var("STALE_READ_TRACE").is_ok_and(|v| v == config.seed.to_string()) {
        config.trace = Some(raftkv::sim::TraceSink(std::sync::Arc::new(|line: &str| println!("{line}"))));
    }
    let mut sim = Sim::new(config);
    let result = stale_read_steps(&mut sim);
    judged(&sim, result)
}

fn stale_read_steps(sim: &mut Sim) -> Result<Result<(), &'static str>, Failure> {
    let all: Vec<NodeId> = (0..5).collect();
    let writer = sim.add_client(Workload::appends("unused", 0));
    let reader = sim.add_client(Workload::appends("unused", 0));
    if !run_until(sim, 3_000_000, |s| leader_among(s, &all).is_some())? {
        return Ok(Err("no first leader"));
    }
    let mut old = leader_among(sim, &all).expect("leader");
    if sim.config().lease_reads {
        // The slowest clock leads: its lease looks longest to it.
        let slowest = all.iter().copied().max_by_key(|&id| sim.tick_us(id)).expect("servers");
        sim.admin(old, AdminOp::TransferLeadership(slowest));
        let settled = |s: &Sim| s.settled_leader() == Some(slowest);
        if !run_until(sim, 3_000_000, settled)? {
            return Ok(Err("the slowest clock did not take over"));
        }
        old = slowest;
    }
    let old_term = sim.server(old).expect("up").node().term();
    if !complete(sim, writer, Op::Put { key: "k".into(), value: "1".into() })? {
        return Ok(Err("the first write did not complete"));
    }
    let rest: Vec<NodeId> = all.iter().copied().filter(|&id| id != old).collect();
    sim.partition(&[vec![old], rest]);
    read_at_the_deposed_leader(sim, (old, old_term), (writer, reader))
}

/// The end of the stale-read schedules, once `old` (leader of `old_term`)
/// is cut off from the other servers: `writer` may reach only those, and
/// `reader` only `old`. Once the others have elected a newer leader, the
/// writer overwrites `k`; then the reader reads `k` at `old`, if it still
/// believes it leads. Heals and lets both clients finish.
fn read_at_the_deposed_leader(
    sim: &mut Sim,
    (old, old_term): (NodeId, u64),
    (writer, reader): (usize, usize),
) -> Result<Result<(), &'static str>, Failure> {
    let all: Vec<NodeId> = (0..sim.config().servers).collect();
    let rest: Vec<NodeId> = all.iter().copied().filter(|&id| id != old).collect();
    sim.restrict_client(writer, rest.clone());
    sim.restrict_client(reader, vec![old]);
    let newer =
        |s: &Sim| leader_among(s, &rest).is_some_and(|l| s.server(l).is_some_and(|n| n.node().term() > old_term));
    if !run_until(sim, 3_000_000, newer)? {
        return Ok(Err("no new leader among the others"));
    }
    if !complete(sim, writer, Op::Put { key: "k".into(), value: "2".into() })? {
        return Ok(Err("the second write did not complete"));
    }
    // The read must start after the write returned: at the same instant
    // the two would be concurrent, and either order linearizable.
    sim.run_for(50)?;
    if !sim.server(old).is_some_and(|n| n.node().is_leader()) {
        return Ok(Err("the old leader stepped down before the read"));
    }
    sim.start_op(reader, Op::Get { key: "k".into() });
    sim.run_for(100_000)?;
    // Heal, so that a correct reader completes too, and let both finish.
    sim.heal();
    sim.restrict_client(reader, all.clone());
    sim.stop_clients();
    if !sim.run_until_clients_idle(sim.now() + 10_000_000)? {
        return Ok(Err("the clients did not finish after the heal"));
    }
    Ok(Ok(()))
}

/// Starts `op` on idle `client` and runs until it returns (at most 2 s).
fn complete(sim: &mut Sim, client: usize, op: Op) -> Result<bool, Failure> {
    let index = sim.start_op(client, op);
    run_until(sim, 2_000_000, |s| s.operation(index).ret.is_some())
}

/// (f)'s schedule, 5 servers: the first leader Y and one other server B are
/// cut off; the other three elect A in a new term T (both of the others,
/// among them V, vote for A). Then V reboots into the minority with Y and
/// B. With its vote forgotten, V grants a vote in term T again, and a
/// second leader of T is elected on its side.
fn double_vote(seed: u64, bugs: InjectedBugs) -> Scheduled {
    let mut config = SimConfig::new(seed, 5);
    config.bugs = bugs;
    if std::env::var("DOUBLE_VOTE_TRACE").is_ok_and(|v| v == seed.to_string()) {
        config.trace = Some(raftkv::sim::TraceSink(std::sync::Arc::new(|line: &str| println!("{line}"))));
    }
    let mut sim = Sim::new(config);
    double_vote_steps(&mut sim).into()
}

fn double_vote_steps(sim: &mut Sim) -> Result<Result<(), &'static str>, Failure> {
    let all: Vec<NodeId> = (0..5).collect();
    if !run_until(sim, 3_000_000, |s| leader_among(s, &all).is_some())? {
        return Ok(Err("no first leader"));
    }
    sim.run_for(100_000)?;
    let y = leader_among(sim, &all).expect("leader");
    let first_term = sim.server(y).expect("up").node().term();
    let b = (y + 1) % 5;
    let majority: Vec<NodeId> = all.iter().copied().filter(|&id| id != y && id != b).collect();
    sim.partition(&[vec![y, b], majority.clone()]);
    let newer =
        |s: &Sim| leader_among(s, &majority).is_some_and(|l| s.server(l).is_some_and(|n| n.node().term() > first_term));
    if !run_until(sim, 3_000_000, newer)? {
        return Ok(Err("no second leader on the majority side"));
    }
    let a = leader_among(sim, &majority).expect("leader");
    let term = sim.server(a).expect("up").node().term();
    let voted_a = |s: &Sim, id: NodeId| s.server(id).is_some_and(|n| n.node().hard_state().voted_for == Some(a));
    let Some(v) = majority.iter().copied().find(|&id| id != a && voted_a(sim, id)) else {
        return Ok(Err("no other server voted for the second leader"));
    };
    let x = majority.iter().copied().find(|&id| id != a && id != v).expect("three in the majority");
    sim.partition(&[vec![a, x], vec![v, y, b]]);
    // V's term T reaches its disk (the vote too, unless the bug drops it),
    // then V reboots.
    run_until(sim, 5_000, |s| s.storage(v).disk.hard.term >= term)?;
    sim.crash(v);
    sim.restart(v);
    // Y steps down and the three hold elections among themselves.
    sim.run_for(3_000_000)?;
    Ok(Ok(()))
}

// ----- snapshots: (g)-(k) on a chaos schedule that snapshots every 5 entries

/// The chaos schedule with a snapshot every 5 entries, no trailing entries
/// and 64-byte chunks, so that followers often need snapshots.
fn snapshot_chaos(seed: u64, bugs: InjectedBugs) -> SimConfig {
    let mut config = CHAOS.sim_config(seed);
    config.snapshots = SnapshotPolicy { every_entries: Some(5), every_bytes: None };
    config.snapshot_trailing_entries = 0;
    config.snapshot_chunk_bytes = 64;
    config.bugs = bugs;
    config
}

/// How a run with a bug ended: a check failed (its text), or an invariant
/// asserted inside the node panicked (its message).
fn outcome(config: SimConfig) -> Option<String> {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| CHAOS.run(config)));
    match run {
        Ok(Ok(_)) => None,
        Ok(Err(failure)) => Some(failure.reason),
        Err(payload) => Some(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()),
        ),
    }
}

/// Runs the snapshot chaos schedule with `bug` on over `0..max_seeds` and
/// asserts that the first failure names `expected`.
fn assert_snapshot_bug_caught(bug: &str, max_seeds: u64, expected: &[&str]) {
    let bugs = InjectedBugs::only(bug).expect("a known bug");
    match (0..max_seeds).find_map(|seed| outcome(snapshot_chaos(seed, bugs)).map(|why| (seed, why))) {
        Some((seed, why)) => {
            assert!(expected.iter().any(|e| why.contains(e)), "bug {bug} caught at seed {seed}, but as: {why}");
            println!("bug {bug} caught at seed {seed}: {}", first_line(&why));
        }
        None => panic!("bug {bug} was NOT caught in {max_seeds} seeds: the checks are too weak"),
    }
}

/// The control: the same schedule without bugs stays clean.
#[test]
fn snapshot_chaos_without_bugs_is_clean() {
    for seed in common::seeds(100) {
        if let Some(why) = outcome(snapshot_chaos(seed, InjectedBugs::default())) {
            panic!("seed {seed}: {why}");
        }
    }
}

/// (g) A snapshot without the session table: after an install, a retried
/// command that lands in the log again runs a second time on that replica.
#[test]
fn snapshot_without_sessions_is_caught() {
    assert_snapshot_bug_caught("snapshot_without_sessions", 100, &["ExactlyOnce"]);
}

/// (h) A follower installs a snapshot that does not move it forward.
#[test]
fn install_older_snapshot_is_caught() {
    assert_snapshot_bug_caught("install_older_snapshot", 100, &["not past what it had applied"]);
}

/// (i) A follower keeps the entries after a snapshot whose last entry its
/// log disagrees with: caught by the log's own invariant (an entry older
/// than the snapshot after it) or by log matching.
#[test]
fn install_keeps_conflicting_entries_is_caught() {
    assert_snapshot_bug_caught(
        "install_keeps_conflicting_entries",
        100,
        &["an entry older than the compacted base", "LogMatching"],
    );
}

/// (j) Compaction past what the snapshot covers (up to the commit index):
/// committed entries that were not applied are gone; the node's invariant
/// that a snapshot covers the log's base catches it.
#[test]
fn compact_unapplied_is_caught() {
    assert_snapshot_bug_caught(
        "compact_unapplied",
        100,
        &["without a snapshot covering its base", "compacted before they were handed out"],
    );
}

/// (k) The runtime reports a snapshot before it is durable; the log is
/// trimmed, and a crash before the snapshot lands leaves a gap.
#[test]
fn trim_before_snapshot_durable_is_caught() {
    assert_snapshot_bug_caught("trim_before_snapshot_durable", 100, &["restarts with a gap"]);
}

// ----- (l) the bounded session table --------------------------------------

/// The snapshot chaos schedule with room for 2 sessions among 5 clients: the
/// table forgets a session on almost every new command, retries of
/// forgotten sessions are refused, and the snapshots carry what was
/// forgotten.
fn session_chaos(seed: u64, bugs: InjectedBugs) -> SimConfig {
    let mut config = snapshot_chaos(seed, bugs);
    config.max_sessions = 2;
    config
}

/// The control: with sessions forgotten all the time, nothing runs twice
/// and the history (refused calls pending: their outcome is unknown) stays
/// linearizable; and the bound is reached, so the refusals happen.
#[test]
fn forgotten_sessions_without_bugs_are_clean() {
    let mut expired = 0;
    for seed in common::seeds(50) {
        match CHAOS.run(session_chaos(seed, InjectedBugs::default())) {
            Ok(outcome) => expired += outcome.stats.ops_expired,
            Err(failure) => panic!("{}", common::report(&failure)),
        }
    }
    assert!(expired > 0, "no session ever expired: the bound was never reached");
    println!("{expired} calls answered 'session expired' over the seeds");
}

/// (l) A table that opens a session for any client it does not know runs a
/// forgotten session's retry a second time.
#[test]
fn ignore_forgotten_sessions_is_caught() {
    let bugs = InjectedBugs::only("ignore_forgotten_sessions").unwrap();
    match (0..100).find_map(|seed| outcome(session_chaos(seed, bugs)).map(|why| (seed, why))) {
        Some((seed, why)) => {
            assert!(why.contains("ExactlyOnce"), "caught at seed {seed}, but as: {why}");
            println!("bug (l) caught at seed {seed}: {}", first_line(&why));
        }
        None => panic!("bug (l) was NOT caught in 100 seeds"),
    }
}

// ----- (a) Figure 8, built by hand ---------------------------------------

/// (a) Committing an entry of a previous term by counting its replicas
/// (Raft Figure 8). The no-op a new leader appends hides this bug from
/// random schedules almost entirely, so this test builds the figure's
/// schedule step by step (5 servers, one entry per AppendEntries) and lets
/// the seed decide only the timings. With the bug, a later leader lacks the
/// "committed" entry; without it, the same schedule is clean.
#[test]
fn commit_previous_term_is_caught_in_figure_8() {
    let bug = InjectedBugs::only("commit_previous_term").unwrap();
    let mut figures = 0;
    let caught = (0..200).find_map(|seed| match figure_8(seed, bug) {
        Figure8::Caught(f) => Some(f),
        Figure8::Clean => {
            figures += 1;
            None
        }
        Figure8::NotReached(why) => {
            println!("seed {seed}: {why}");
            None
        }
    });
    let failure = caught.unwrap_or_else(|| panic!("Figure 8 not caught in 200 seeds ({figures} reached the figure)"));
    assert!(
        matches!(
            failure.violation.invariant,
            raftkv::sim::Invariant::LeaderCompleteness | raftkv::sim::Invariant::StateMachineSafety
        ),
        "{failure}"
    );
    println!("Figure 8 caught: {failure}");
}

#[test]
fn figure_8_schedule_without_the_bug_is_clean() {
    let mut reached = 0;
    for seed in common::seeds(100) {
        match figure_8(seed, InjectedBugs::default()) {
            Figure8::Caught(f) => panic!("{f}"),
            Figure8::Clean => reached += 1,
            Figure8::NotReached(_) => {}
        }
    }
    assert!(reached > 0, "the schedule never reached the figure's last step: the control proves nothing");
}

enum Figure8 {
    /// A safety check fired.
    Caught(Failure),
    /// The figure's last step ran and nothing fired.
    Clean,
    /// The timings did not produce the figure's shape for this seed.
    NotReached(&'static str),
}

fn figure_8(seed: u64, bugs: InjectedBugs) -> Figure8 {
    let mut config = SimConfig::new(seed, 5);
    config.bugs = bugs;
    config.max_batch_entries = 1;
    if std::env::var("FIG8_TRACE").is_ok_and(|v| v == seed.to_string()) {
        config.trace = Some(raftkv::sim::TraceSink(std::sync::Arc::new(|line: &str| println!("{line}"))));
    }
    let mut sim = Sim::new(config);
    match figure_8_steps(&mut sim) {
        Err(failure) => Figure8::Caught(failure),
        Ok(Ok(())) => Figure8::Clean,
        Ok(Err(why)) => Figure8::NotReached(why),
    }
}

/// Runs event by event until `done` holds (so the test can act between a
/// leader's election and its first AppendEntries) or `limit_us` passes.
fn run_until(sim: &mut Sim, limit_us: u64, done: impl Fn(&Sim) -> bool) -> Result<bool, Failure> {
    let deadline = sim.now() + limit_us;
    sim.run_until_true(deadline, done)
}

fn leader_among(sim: &Sim, nodes: &[NodeId]) -> Option<NodeId> {
    nodes.iter().copied().find(|&id| sim.server(id).is_some_and(|s| s.node().is_leader()))
}

fn figure_8_steps(sim: &mut Sim) -> Result<Result<(), &'static str>, Failure> {
    let all: Vec<NodeId> = (0..5).collect();
    let client = sim.add_client(Workload::appends("unused", 0));
    // (a) S1 leads and replicates an entry to S2 only.
    if !run_until(sim, 3_000_000, |s| leader_among(s, &all).is_some())? {
        return Ok(Err("no first leader"));
    }
    sim.run_for(100_000)?;
    let s1 = leader_among(sim, &all).expect("leader");
    let s2 = (s1 + 1) % 5;
    let rest: Vec<NodeId> = all.iter().copied().filter(|&id| id != s1 && id != s2).collect();
    sim.partition(&[vec![s1, s2], rest.clone()]);
    sim.restrict_client(client, vec![s1]);
    let before = sim.server(s1).expect("up").node().log().last_index();
    sim.start_op(client, Op::Put { key: "k".into(), value: "from S1".into() });
    let appended = run_until(sim, 1_000_000, |s| s.server(s1).is_some_and(|n| n.node().log().last_index() > before))?;
    if !appended || !sim.server(s1).is_some_and(|n| n.node().is_leader()) {
        return Ok(Err("S1 did not append the entry while leading"));
    }
    sim.run_for(5_000)?;
    let index = sim.server(s1).expect("up").node().log().last_index();
    // (b) S1 crashes; S5 is elected by the other three and appends its
    // no-op at the same index — but is cut off before it reaches anyone.
    sim.crash(s1);
    if !run_until(sim, 3_000_000, |s| leader_among(s, &rest).is_some())? {
        return Ok(Err("no leader among the other three"));
    }
    let s5 = leader_among(sim, &rest).expect("leader");
    // Messages already sent outlive a crash, so cut S5 off first and keep
    // it cut off until its no-op can no longer be in flight.
    let without_s5: Vec<NodeId> = all.iter().copied().filter(|&id| id != s5).collect();
    sim.partition(&[vec![s5], without_s5]);
    // Its no-op must reach its own disk before the crash (the disk takes up
    // to a millisecond or so).
    run_until(sim, 5_000, |s| s.storage(s5).disk.log.len() as u64 >= index)?;
    sim.crash(s5);
    sim.run_for(30_000)?;
    if sim.storage(s5).disk.log.len() as u64 != index {
        return Ok(Err("S5's log does not end where S1's entry sits"));
    }
    // (c) S1 restarts and is elected again (it or S2, which hold the entry);
    // it replicates the old entry to a majority and, with the bug, commits it.
    sim.heal();
    sim.restart(s1);
    let holders = [s1, s2];
    if !run_until(sim, 5_000_000, |s| leader_among(s, &holders).is_some())? {
        return Ok(Err("neither S1 nor S2 was elected again"));
    }
    let s3 = leader_among(sim, &holders).expect("leader");
    // Wait until a majority holds the old entry (and, with the bug, S3 has
    // counted it as committed), then cut S3 off before its no-op spreads.
    let holds_old = |s: &Sim, id: NodeId| s.storage(id).disk.log.len() as u64 >= index;
    let on_majority = |s: &Sim| (0..5).filter(|&id| id != s5 && holds_old(s, id)).count() >= 3;
    let decided = |s: &Sim| s.server(s3).is_some_and(|n| n.node().commit_index() >= index) || on_majority(s);
    if !run_until(sim, 1_000_000, decided)? {
        return Ok(Err("the old entry did not reach a majority"));
    }
    // Let the acknowledgements reach S3 (delays are at most 1 ms).
    run_until(sim, 1_500, |s| s.server(s3).is_some_and(|n| n.node().commit_index() >= index))?;
    if sim.server(s3).is_some_and(|n| n.node().committed_in_term()) {
        return Ok(Err("S3's no-op committed already"));
    }
    // (d) S5 returns in a group with two nodes that lack S3's no-op: only S5,
    // whose last term is newest, can win there. Electing it is legal unless
    // the old entry was committed — which only the bug does.
    let lacking: Vec<NodeId> =
        (0..5).filter(|&id| id != s3 && id != s5 && sim.storage(id).disk.log.len() as u64 <= index).take(2).collect();
    if lacking.len() < 2 {
        return Ok(Err("fewer than two nodes lack S3's no-op"));
    }
    let group = vec![s5, lacking[0], lacking[1]];
    let others: Vec<NodeId> = (0..5).filter(|id| !group.contains(id)).collect();
    sim.partition(&[group.clone(), others]);
    sim.run_for(30_000)?;
    sim.restart(s5);
    if !run_until(sim, 5_000_000, |s| leader_among(s, &group).is_some())? {
        return Ok(Err("S5 was not elected"));
    }
    sim.run_for(500_000)?;
    Ok(Ok(()))
}

// ----- membership: (m), (n), (q) under churn and on hand-built schedules

const CHURN: Churn = Churn { slots: 5, founders: 3, clients: 4, keys: 3, run_us: 5_000_000 };

/// The control: the churn schedule (faults, and an operator adding,
/// promoting, removing and handing leadership around) without bugs stays
/// clean, and it does change the configuration.
#[test]
fn churn_without_bugs_is_clean() {
    let mut changes = 0;
    for seed in common::seeds(200) {
        let mut sim = Sim::new(CHURN.sim_config(seed));
        if let Err(failure) = CHURN.run_in(&mut sim) {
            panic!("{}", common::report(&failure));
        }
        changes += Churn::committed_changes(&sim);
    }
    println!("{changes} configuration changes committed");
    assert!(changes >= 200, "only {changes} changes committed: the schedule hardly churns");
}

/// (q) is caught by the churn schedule itself (about once in a hundred
/// seeds): a leader commits with learners that the next election does not
/// ask.
#[test]
fn learner_in_quorum_is_caught_by_churn() {
    let bugs = InjectedBugs::only("learner_in_quorum").unwrap();
    let failure = (0..400).find_map(|seed| {
        let mut config = CHURN.sim_config(seed);
        config.bugs = bugs;
        CHURN.run(config).err().filter(|f| f.reason.contains("LeaderCompleteness"))
    });
    let failure = failure.expect("bug learner_in_quorum NOT caught as LeaderCompleteness in 400 churn seeds");
    println!("caught at seed {}: {}", failure.seed, first_line(&failure.reason));
}

/// A run of a hand-built membership schedule: `schedule` drives a cluster
/// of five slots whose founders are `0..founders`, on a reliable network,
/// with one client writing throughout.
fn membership_schedule(
    seed: u64,
    bugs: InjectedBugs,
    founders: u8,
    schedule: fn(&mut Sim) -> Result<Result<(), &'static str>, Failure>,
) -> Scheduled {
    let mut config = SimConfig::new(seed, 5);
    config.members = founders;
    config.bugs = bugs;
    let mut sim = Sim::new(config);
    sim.add_client(Workload::random_keys(3));
    let result = schedule(&mut sim);
    if let Ok(Ok(())) = result {
        let verdict = lincheck::check(&sim.history(), Budget::steps(Budget::DEFAULT_MAX_STEPS));
        if !verdict.is_ok() {
            return Scheduled::Caught(format!("history not linearizable: {verdict:?}"));
        }
    }
    result.into()
}

/// Runs `schedule` over 30 seeds with `bug` on and then off: with it, some
/// seed must be caught as `expected`; without it, every seed that reaches
/// the schedule's shape must be clean, and some must reach it.
fn assert_schedule_catches(
    bug: &str,
    expected: &str,
    founders: u8,
    schedule: fn(&mut Sim) -> Result<Result<(), &'static str>, Failure>,
) {
    let bugs = InjectedBugs::only(bug).unwrap();
    let mut caught = 0;
    for seed in 0..30 {
        match membership_schedule(seed, bugs, founders, schedule) {
            Scheduled::Caught(why) => {
                assert!(why.contains(expected), "seed {seed}: {bug} caught as something else: {why}");
                caught += 1;
            }
            Scheduled::Clean => {}
            Scheduled::NotReached(why) => println!("seed {seed}: not reached: {why}"),
        }
    }
    println!("{bug} caught in {caught} of 30 seeds");
    assert!(caught > 0, "bug {bug} NOT caught in 30 seeds");
    let mut reached = 0;
    for seed in common::seeds(30) {
        match membership_schedule(seed, InjectedBugs::default(), founders, schedule) {
            Scheduled::Caught(why) => panic!("seed {seed}, no bug: {why}"),
            Scheduled::Clean => reached += 1,
            Scheduled::NotReached(why) => println!("seed {seed}, no bug: not reached: {why}"),
        }
    }
    assert!(reached > 0, "without the bug the schedule never ran to its end: the control proves nothing");
}

/// Runs until a leader has committed an entry of its term; returns it.
fn settled_leader(sim: &mut Sim) -> Result<Option<NodeId>, Failure> {
    run_until(sim, 3_000_000, |s| s.settled_leader().is_some())?;
    Ok(sim.settled_leader())
}

/// Asks `leader` for `change` and runs until it answers; whether it
/// committed.
fn change_and_wait(sim: &mut Sim, leader: NodeId, change: MembershipChange) -> Result<bool, Failure> {
    let id = sim.admin(leader, AdminOp::Change(change));
    run_until(sim, 2_000_000, |s| s.admin_reply(id).is_some())?;
    Ok(sim.admin_reply(id).is_some_and(|r| r.result.is_ok()))
}

/// Learners 3 and 4 join the founders 0, 1, 2 and catch up; returns the
/// leader.
fn with_two_learners(sim: &mut Sim) -> Result<Result<NodeId, &'static str>, Failure> {
    let Some(leader) = settled_leader(sim)? else { return Ok(Err("no settled leader")) };
    for learner in [3, 4] {
        if !change_and_wait(sim, leader, MembershipChange::AddLearner(learner))? {
            return Ok(Err("a learner was not added"));
        }
    }
    sim.run_for(300_000)?;
    if sim.leader() != Some(leader) {
        return Ok(Err("leadership changed while the learners caught up"));
    }
    Ok(Ok(leader))
}

/// (q)'s schedule: voters 0, 1, 2 and learners 3, 4; the leader is cut off
/// from the other two voters with both learners. With the bug it commits
/// the client's writes with the learners' acknowledgements; the other two
/// voters elect a leader without them.
fn learners_outvote(sim: &mut Sim) -> Result<Result<(), &'static str>, Failure> {
    let leader = match with_two_learners(sim)? {
        Ok(leader) => leader,
        Err(why) => return Ok(Err(why)),
    };
    let rest: Vec<NodeId> = (0..3).filter(|&id| id != leader).collect();
    sim.partition(&[vec![leader, 3, 4], rest]);
    sim.run_for(2_000_000)?;
    Ok(Ok(()))
}

#[test]
fn learner_in_quorum_is_caught() {
    assert_schedule_catches("learner_in_quorum", "LeaderCompleteness", 3, learners_outvote);
}

/// (n)'s schedule: voters 0, 1, 2 and learners 3, 4; the leader is asked to
/// promote both at once and is cut off with them at that instant. With the
/// bug both promotions are in force, five voters, and the leader commits
/// with itself and the two new ones; the other two, still with three
/// voters, elect a leader without those entries. A correct leader refuses
/// the second promotion and cannot commit with one of four.
fn promote_two_at_once(sim: &mut Sim) -> Result<Result<(), &'static str>, Failure> {
    let leader = match with_two_learners(sim)? {
        Ok(leader) => leader,
        Err(why) => return Ok(Err(why)),
    };
    sim.admin(leader, AdminOp::Change(MembershipChange::Promote(3)));
    sim.admin(leader, AdminOp::Change(MembershipChange::Promote(4)));
    let rest: Vec<NodeId> = (0..3).filter(|&id| id != leader).collect();
    sim.partition(&[vec![leader, 3, 4], rest]);
    sim.run_for(2_000_000)?;
    Ok(Ok(()))
}

#[test]
fn concurrent_changes_are_caught() {
    assert_schedule_catches("concurrent_changes", "LeaderCompleteness", 3, promote_two_at_once);
}

/// (m)'s schedule, the counterexample of Ongaro's 2015 raft-dev post in
/// learner form: founders 0–3, learner 4. Leader L1 promotes 4 and is cut
/// off with it at once (the change reaches only 4). The other three elect
/// L2; at that instant one of its voters, X, crashes, and L2 is asked to
/// remove X before it has committed anything of its term. With the bug,
/// L2 and the remaining Y commit its no-op and the removal (a majority of
/// the new three voters). Then L2 and Y are cut off, X restarts beside L1
/// and 4, and with L1's five-voter configuration they elect a leader that
/// lacks what L2 committed. A correct L2 refuses the change, and its no-op
/// cannot commit without X or L1.
fn change_before_noop(sim: &mut Sim) -> Result<Result<(), &'static str>, Failure> {
    let Some(l1) = settled_leader(sim)? else { return Ok(Err("no settled leader")) };
    if !change_and_wait(sim, l1, MembershipChange::AddLearner(4))? {
        return Ok(Err("the learner was not added"));
    }
    sim.run_for(300_000)?;
    if sim.leader() != Some(l1) {
        return Ok(Err("leadership changed while the learner caught up"));
    }
    let first_term = sim.server(l1).expect("up").node().term();
    let rest: Vec<NodeId> = (0..4).filter(|&id| id != l1).collect();
    sim.admin(l1, AdminOp::Change(MembershipChange::Promote(4)));
    sim.partition(&[vec![l1, 4], rest.clone()]);
    let newer =
        |s: &Sim| leader_among(s, &rest).is_some_and(|l| s.server(l).is_some_and(|n| n.node().term() > first_term));
    if !run_until(sim, 3_000_000, newer)? {
        return Ok(Err("no leader among the other three"));
    }
    let l2 = leader_among(sim, &rest).expect("leader");
    let others: Vec<NodeId> = rest.iter().copied().filter(|&id| id != l2).collect();
    let (x, y) = (others[0], others[1]);
    sim.crash(x);
    sim.admin(l2, AdminOp::Change(MembershipChange::Remove(x)));
    sim.run_for(200_000)?;
    sim.partition(&[vec![l2, y], vec![l1, 4, x]]);
    sim.restart(x);
    sim.run_for(3_000_000)?;
    Ok(Ok(()))
}

#[test]
fn change_before_term_commit_is_caught() {
    assert_schedule_catches("change_before_term_commit", "LeaderCompleteness", 4, change_before_noop);
}

/// (r)'s schedule: founders 0, 1, 2 promote learners 3 and 4, one change
/// after the other (five voters, the changes committed). The leader, 3
/// and 4 are cut off from the other two founders and commit the client's
/// writes, a majority of five. The two restart: their commit index is not
/// durable, so with the bug each takes the configuration at its snapshot
/// (none: the founders' three) and the two of them are a majority of it;
/// one is elected without what the others committed, and once the
/// partition heals it overwrites it. A correct server takes the latest
/// configuration in its log, five voters, and the two cannot win.
fn restart_into_an_old_configuration(sim: &mut Sim) -> Result<Result<(), &'static str>, Failure> {
    let leader = match with_two_learners(sim)? {
        Ok(leader) => leader,
        Err(why) => return Ok(Err(why)),
    };
    for learner in [3, 4] {
        if !change_and_wait(sim, leader, MembershipChange::Promote(learner))? {
            return Ok(Err("a learner was not promoted"));
        }
    }
    sim.run_for(300_000)?;
    if sim.leader() != Some(leader) {
        return Ok(Err("leadership changed during the promotions"));
    }
    let rest: Vec<NodeId> = (0..3).filter(|&id| id != leader).collect();
    sim.partition(&[vec![leader, 3, 4], rest.clone()]);
    sim.run_for(1_000_000)?;
    for &id in &rest {
        sim.crash(id);
        sim.restart(id);
    }
    sim.run_for(3_000_000)?;
    sim.heal();
    sim.run_for(2_000_000)?;
    Ok(Ok(()))
}

#[test]
fn config_on_commit_is_caught() {
    assert_schedule_catches("config_on_commit", "LeaderCompleteness", 3, restart_into_an_old_configuration);
}

/// (r) is caught by the churn schedule unaided too (seed 110 of 400):
/// a restarted server back in an older configuration is elected in a term
/// that already has a leader.
#[test]
fn config_on_commit_is_caught_by_churn() {
    let bugs = InjectedBugs::only("config_on_commit").unwrap();
    let failure = (0..400).find_map(|seed| {
        let mut config = CHURN.sim_config(seed);
        config.bugs = bugs;
        CHURN.run(config).err()
    });
    let failure = failure.expect("bug config_on_commit NOT caught in 400 churn seeds");
    let reason = first_line(&failure.reason);
    assert!(
        reason.contains("ElectionSafety") || reason.contains("LeaderCompleteness"),
        "seed {}: {reason}",
        failure.seed
    );
    println!("caught at seed {}: {reason}", failure.seed);
}
