//! End-to-end tests: real `raftkv server` processes on 127.0.0.1, real
//! disks, real sockets; faults are real signals (SIGKILL, SIGSTOP/SIGCONT).
//!
//! Clients record a history while faults happen; afterwards the history
//! must be linearizable, every acknowledged append must be in the final
//! value exactly once, and a restarted node must catch up. Faults are
//! sequenced by client progress (so many operations completed), never by
//! sleeping. Every process a test starts is killed when its `TestCluster`
//! (`tests/common/cluster.rs`) drops, also when the test fails.

#[path = "common/cluster.rs"]
mod cluster;

use cluster::{
    after_more_ops, appends_load, check_history, free_ports, info_field, info_u64, kill9_leader_and_restart, leader,
    until, TestCluster, PATIENCE,
};
use raftkv::kv::Op;
use raftkv::server::client::{operator, Access, RemoteClerk};
use raftkv::server::config::ClusterConfig;
use raftkv::server::load::{self, Progress};
use raftkv::server::resp::{ClientCommand, MemberCommand};
use raftkv::server::tempdir::TempDir;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_restart_and_pause_lose_nothing_and_stay_linearizable() {
    let mut cluster = TestCluster::start("faults", 3);
    let spec = appends_load(cluster.clients(), 7);
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));

    after_more_ops(&progress, 200).await;
    let first = kill9_leader_and_restart(&mut cluster, &progress, 200).await;

    // A Jepsen-style pause of whoever leads now: the others must elect a
    // new leader; when it wakes it must not serve anything stale.
    let paused = leader(&cluster).await;
    cluster.signal(paused, "-STOP");
    after_more_ops(&progress, 200).await;
    cluster.signal(paused, "-CONT");
    after_more_ops(&progress, 200).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();

    let history = check_history(&cluster, &records, epoch, 3).await;
    let completed: usize = records.iter().map(|r| r.latencies_us.len()).sum();
    assert!(completed >= 1000, "{completed} operations completed");

    // The restarted node caught up with everything committed.
    let leader_now = leader(&cluster).await;
    let addrs = cluster.clients();
    let commit: u64 = info_field(addrs[usize::from(leader_now)], "raft_commit_index").await.unwrap().parse().unwrap();
    until("the restarted node to apply everything committed", || async {
        let applied = info_field(addrs[usize::from(first)], "raft_applied_index").await;
        applied.and_then(|a| a.parse::<u64>().ok()).is_some_and(|a| a >= commit)
    })
    .await;
    eprintln!(
        "e2e: {completed} operations, {} abandoned, {} history entries; killed node {first}, paused node {paused}",
        records.iter().map(|r| r.abandoned).sum::<u64>(),
        history.ops.len()
    );
}

/// Membership change on real processes, under load: a fourth server joins
/// as a learner (catching up by snapshot) and is promoted once caught up; a founder is
/// killed, removed, its disk replaced, and added back with `--join`; the
/// leader is removed (it hands over first) and added back; leadership is
/// handed to the newcomer. Nothing acknowledged is lost, the history stays
/// linearizable, and every server ends with the same configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_replaced_and_removed_while_serving() {
    // Nodes 3 and 4 start outside the configuration.
    let mut cluster = TestCluster::configure_with("members", 5, |config| {
        config.initial_voters = Some(3);
        config.snapshots.every_entries = 100;
        config.snapshots.trailing_entries = 10;
    });
    cluster.start_all();
    let addrs = cluster.clients();
    let spec = appends_load(addrs.clone(), 11);
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));
    let operate = |command| operate(addrs.clone(), Access::plain(), command);
    let voters = |id: u8| {
        let addr = addrs[usize::from(id)];
        async move { info_field(addr, "raft_voters").await.unwrap_or_default() }
    };

    // A new server joins: a learner first, caught up (by snapshot: the
    // leader has compacted past its start), then a voter.
    after_more_ops(&progress, 300).await;
    assert_eq!(voters(3).await, "", "node 3 starts outside the configuration");
    let added = operate(ClientCommand::Member(MemberCommand::Add(3))).await;
    assert!(added.contains("learners=3"), "{added}");
    // The leader promotes it once it has caught up.
    let promoted = operate(ClientCommand::Member(MemberCommand::Promote(3))).await;
    let applied = info_u64(addrs[3], "raft_applied_index").await.unwrap_or(0);
    assert!(applied > 0, "node 3 promoted before it caught up (applied {applied})");
    assert!(promoted.contains("voters=0.1.2.3"), "{promoted}");

    // A founder's machine dies: removed, and replaced by a new machine
    // under a new id (an old id on a wiped disk could vote twice in a term:
    // README, "Changing the members").
    after_more_ops(&progress, 200).await;
    let dead = leader(&cluster).await;
    cluster.kill9(dead);
    let removed = operate(ClientCommand::Member(MemberCommand::Remove(dead))).await;
    assert!(!voters_in(&removed).contains(&dead) && voters_in(&removed).len() == 3, "{removed}");
    operate(ClientCommand::Member(MemberCommand::Add(4))).await;
    let promoted = operate(ClientCommand::Member(MemberCommand::Promote(4))).await;
    assert_eq!(voters_in(&promoted).len(), 4, "{promoted}");

    // The leader is removed (it hands over, then steps down), and added
    // back; then leadership goes to node 3.
    after_more_ops(&progress, 200).await;
    let old_leader = leader(&cluster).await;
    operate(ClientCommand::Member(MemberCommand::Remove(old_leader))).await;
    until("another leader", || async { leader(&cluster).await != old_leader }).await;
    operate(ClientCommand::Member(MemberCommand::Add(old_leader))).await;
    operate(ClientCommand::Member(MemberCommand::Promote(old_leader))).await;
    after_more_ops(&progress, 200).await;
    operate(ClientCommand::Transfer { to: 3 }).await;
    until("node 3 to lead", || async { leader(&cluster).await == 3 }).await;
    after_more_ops(&progress, 200).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    check_history(&cluster, &records, epoch, 3).await;

    // Every server ends with the same four voters, and says so through the
    // command line too.
    let live: Vec<u8> = (0..5).filter(|&id| id != dead).collect();
    let names = |sep: &str| live.iter().map(u8::to_string).collect::<Vec<_>>().join(sep);
    for &id in &live {
        until(&format!("node {id} to hold the final configuration"), || async { voters(id).await == names(",") }).await;
    }
    let servers = addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let raftkv = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).args(args).args(["--servers", &servers]).output().unwrap();
        assert!(out.status.success(), "raftkv {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let text = raftkv(&["member", "list"]);
    assert!(text.contains(&format!("voters={}", names("."))) && text.contains("leader: 3"), "{text}");
    // The single-operation commands, through the clerk, on the grown cluster.
    assert_eq!(raftkv(&["setnx", "cli-key", "first"]), "1");
    assert_eq!(raftkv(&["setnx", "cli-key", "second"]), "0");
    assert_eq!(raftkv(&["append", "cli-key", "+"]), "OK");
    assert_eq!(raftkv(&["get", "cli-key"]), "first+");
    assert_eq!(raftkv(&["del", "cli-key"]), "1");
    assert_eq!(raftkv(&["del", "cli-key"]), "0");
    assert_eq!(raftkv(&["get", "cli-key"]), "");
}

/// A leader asked to stop (SIGTERM) hands leadership over first: it exits
/// cleanly, says to whom it handed over, the others go on without waiting
/// out an election timeout, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_asked_to_stop_hands_over_first() {
    let mut cluster = TestCluster::start("handover", 3);
    let spec = appends_load(cluster.clients(), 13);
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));
    after_more_ops(&progress, 200).await;
    let first = leader(&cluster).await;
    cluster.signal(first, "-TERM");
    let status = cluster.wait_exit(first);
    assert!(status.success(), "node {first} exited with {status}");
    let log = cluster.log_of(first);
    assert!(log.contains("handed leadership to"), "node {first} did not hand over:\n{log}");
    after_more_ops(&progress, 200).await;
    cluster.restart(first);
    after_more_ops(&progress, 200).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    check_history(&cluster, &records, epoch, 3).await;
    let longest = records.iter().flat_map(|r| r.latencies_us.iter().map(|(_, us)| *us)).max().unwrap_or(0);
    let line = log.lines().find(|l| l.contains("handed leadership to")).unwrap_or("");
    eprintln!("e2e: node {first} stopped gracefully; {line}; the longest operation took {longest} µs");
}

/// A server no config file lists joins a running cluster under load: it
/// starts with its own addresses and fetches the others' from a member
/// (`--join ADDR`); the operator adds it with its addresses (`RAFTKV.MEMBER
/// ADD id peer client`, recorded in the replicated address book), it is
/// promoted and made leader, so that every redirect and every peer link
/// to the leader goes to an address only the book holds. A founder is
/// killed and restarted (its file does not list the leader: it finds it in
/// its log), another founder moves to new ports (`raftkv member move`),
/// then the newcomer itself is killed and restarted with no address flags
/// (its data directory has them). Bad requests are refused
/// with reasons, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_no_config_file_lists_joins_leads_and_restarts() {
    let mut cluster = TestCluster::configure_with("unlisted", 3, |config| {
        config.snapshots.every_entries = 100;
        config.snapshots.trailing_entries = 10;
    });
    let (new, peer, client) = cluster.add_unlisted(cluster.config.nodes[0].client);
    for id in 0..3 {
        cluster.restart(id);
    }
    let addrs = cluster.clients();
    let spec = appends_load(addrs.clone(), 17);
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));
    let founders = addrs[..3].to_vec();
    let operate = |command| try_operate(founders.clone(), Access::plain(), command);
    let at = |peer, client| raftkv::kv::directory::Addresses { peer, client };

    after_more_ops(&progress, 300).await;
    cluster.restart(new);
    let refused = operate(ClientCommand::Member(MemberCommand::Add(new))).await.unwrap_err();
    assert!(
        refused.contains("not in the cluster's address book") && refused.contains("RAFTKV.MEMBER ADD"),
        "{refused}"
    );
    let added = operate(ClientCommand::Member(MemberCommand::AddAt(new, at(peer, client)))).await.unwrap();
    assert!(added.contains(&format!("learners={new}")), "{added}");
    let promoted = operate(ClientCommand::Member(MemberCommand::Promote(new))).await.unwrap();
    assert!(voters_in(&promoted).contains(&new), "{promoted}");

    // What the book refuses: a member again, another's address, a client
    // write to the book's keys.
    let again = operate(ClientCommand::Member(MemberCommand::AddAt(new, at(peer, client)))).await.unwrap_err();
    assert!(again.contains("already a member"), "{again}");
    let taken = operate(ClientCommand::Member(MemberCommand::AddAt(new + 1, at(peer, "127.0.0.1:1".parse().unwrap()))))
        .await
        .unwrap_err();
    assert!(taken.contains(&format!("is node {new}'s")), "{taken}");
    let forged =
        ClientCommand::Set { key: "\0raftkv/node/1".into(), value: "peer=127.0.0.1:1 client=127.0.0.1:2".into() };
    let forged = operate(forged).await.unwrap_err();
    assert!(forged.contains("address book"), "{forged}");

    // The newcomer leads: redirects and peer links go to book-only addresses.
    after_more_ops(&progress, 200).await;
    operate(ClientCommand::Transfer { to: new }).await.unwrap();
    until("the newcomer to lead", || async { leader(&cluster).await == new }).await;
    let listed = operate(ClientCommand::Member(MemberCommand::List)).await.unwrap();
    assert!(listed.contains(&format!("{new} voter {client} peer={peer}")), "{listed}");

    // A founder restarts while the newcomer leads: it must find the
    // leader's address in its own log to answer it.
    after_more_ops(&progress, 200).await;
    let founder = (new + 1) % 3;
    cluster.kill9(founder);
    after_more_ops(&progress, 200).await;
    cluster.restart(founder);
    let caught_up = || async {
        let commit = info_u64(addrs[usize::from(new)], "raft_commit_index").await.unwrap_or(u64::MAX);
        info_u64(addrs[usize::from(founder)], "raft_applied_index").await.is_some_and(|a| a >= commit)
    };
    after_more_ops(&progress, 200).await;
    until(&format!("node {founder} to catch up with the newcomer"), caught_up).await;

    // A founder's machine moves: it restarts at new ports, the operator
    // records them (`raftkv member move`), and it catches up there.
    let mover = (new + 2) % 3;
    cluster.kill9(mover);
    let ports = free_ports(2);
    let (moved_peer, moved_client) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let servers = founders.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["member", "move", &mover.to_string(), &moved_peer, &moved_client, "--servers", &servers])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains(&format!("node {mover} is now at {moved_client}")), "{text}");
    cluster.set_args(mover, vec!["--peer-addr".into(), moved_peer, "--client-addr".into(), moved_client.clone()]);
    cluster.restart(mover);
    let moved_client: std::net::SocketAddr = moved_client.parse().unwrap();
    let caught_up = || async {
        let commit = info_u64(addrs[usize::from(new)], "raft_commit_index").await.unwrap_or(u64::MAX);
        info_u64(moved_client, "raft_applied_index").await.is_some_and(|a| a >= commit)
    };
    after_more_ops(&progress, 200).await;
    until(&format!("node {mover} to catch up at its new address"), caught_up).await;

    // The newcomer restarts with no address flags: its data directory has them.
    cluster.kill9(new);
    cluster.set_args(new, Vec::new());
    after_more_ops(&progress, 200).await;
    cluster.restart(new);
    // The founders where they are now (node `mover` at its new address).
    let mut founders_now = founders.clone();
    founders_now[usize::from(mover)] = moved_client;
    let rejoined = || async {
        let leader_commit = match leader_among_founders(&founders_now).await {
            Some(l) => info_u64(founders_now[usize::from(l)], "raft_commit_index").await.unwrap_or(u64::MAX),
            None => u64::MAX,
        };
        info_u64(client, "raft_applied_index").await.is_some_and(|a| a >= leader_commit)
    };
    after_more_ops(&progress, 200).await;
    until("the newcomer to rejoin from its own data directory", rejoined).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    check_history(&cluster, &records, epoch, 3).await;
}

/// Every server of a running cluster is replaced, one at a time and under
/// load, by a server at an address no config file lists (issue 15's
/// end-to-end check, with the addresses new): each joins by fetching the
/// book from a live member, is added with its addresses, promoted, and the
/// server it replaces is removed (the leader among them hands over first)
/// and stopped; one newcomer is kill -9'd in the middle of its
/// replacement, between being added and promoted. Then the whole new
/// cluster is kill -9'd and restarted with no address flags: every server
/// finds its own and its peers' addresses in its data directory. Nothing
/// acknowledged is lost and the history is linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_is_replaced_by_one_no_config_file_lists() {
    let mut cluster = TestCluster::configure_with("replace-all", 3, |config| {
        config.snapshots.every_entries = 100;
        config.snapshots.trailing_entries = 10;
    });
    cluster.start_all();
    // Client addresses of the newcomers are known up front, so the load
    // reaches them once they serve; before, connecting fails and the
    // clerk tries the next server.
    let mut via = cluster.config.nodes[0].client;
    let newcomers: Vec<_> = (0..3)
        .map(|_| {
            let newcomer = cluster.add_unlisted(via);
            via = newcomer.2;
            newcomer
        })
        .collect();
    let addrs = cluster.clients();
    let spec = appends_load(addrs.clone(), 19);
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));
    let operate = |command| operate(addrs.clone(), Access::plain(), command);
    for (old, &(new, peer, client)) in newcomers.iter().enumerate() {
        let old = old as u8;
        after_more_ops(&progress, 200).await;
        cluster.restart(new);
        let at = raftkv::kv::directory::Addresses { peer, client };
        let added = operate(ClientCommand::Member(MemberCommand::AddAt(new, at))).await;
        assert!(added.contains(&format!("learners={new}")), "{added}");
        if old == 1 {
            // Killed between being added and promoted: it comes back with
            // its flags and its data directory, and catches up.
            after_more_ops(&progress, 100).await;
            cluster.kill9(new);
            after_more_ops(&progress, 100).await;
            cluster.restart(new);
        }
        let promoted = operate(ClientCommand::Member(MemberCommand::Promote(new))).await;
        assert!(voters_in(&promoted).contains(&new), "{promoted}");
        let removed = operate(ClientCommand::Member(MemberCommand::Remove(old))).await;
        assert!(!voters_in(&removed).contains(&old) && voters_in(&removed).len() == 3, "{removed}");
        cluster.kill9(old);
    }
    let text = operate(ClientCommand::Member(MemberCommand::List)).await;
    for &(new, peer, client) in &newcomers {
        assert!(text.contains(&format!("{new} voter {client} peer={peer}")), "{text}");
    }
    // A removed server's addresses are free again (a new machine may take
    // a dead one's); a member's are not.
    let founder = cluster.config.nodes[0].clone();
    let reuse = raftkv::kv::directory::Addresses { peer: founder.peer, client: founder.client };
    let reused = operate(ClientCommand::Member(MemberCommand::AddAt(6, reuse))).await;
    assert!(reused.contains("learners=6"), "{reused}");
    operate(ClientCommand::Member(MemberCommand::Remove(6))).await;
    let (_, peer_of_3, _) = newcomers[0];
    let taken = raftkv::kv::directory::Addresses { peer: peer_of_3, client: founder.client };
    let add = ClientCommand::Member(MemberCommand::AddAt(7, taken));
    let refused = try_operate(addrs.clone(), Access::plain(), add).await.unwrap_err();
    assert!(refused.contains("is node 3's"), "{refused}");

    // The whole new cluster dies at once and restarts from its disks.
    after_more_ops(&progress, 200).await;
    for &(new, ..) in &newcomers {
        cluster.kill9(new);
        cluster.set_args(new, Vec::new());
    }
    for &(new, ..) in &newcomers {
        cluster.restart(new);
    }
    after_more_ops(&progress, 300).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    check_history(&cluster, &records, epoch, 3).await;
}

/// The same join on a cluster with TLS on both ports and a password: the
/// newcomer fetches the address book over TLS with the password, its
/// certificate (issued afterwards from the cluster's authority) is
/// accepted by peers that learned its id from the book, and it leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_server_joins_a_tls_cluster_with_a_password() {
    const PASSWORD: &str = "correct horse";
    let mut cluster = TestCluster::configure_with("unlisted-tls", 3, |c| c.requirepass = Some(PASSWORD.into()));
    cluster.enable_tls();
    cluster.access = cluster.access.clone().with_password(PASSWORD);
    let (new, peer, client) = cluster.add_unlisted(cluster.config.nodes[0].client);
    let certs = cluster.root.path().join("certs");
    let days = raftkv::server::tls::NODE_CERT_DAYS_DEFAULT;
    raftkv::server::tls::issue(&certs, [new], &[], days).unwrap();
    cluster.start_all();
    let mut spec = appends_load(cluster.clients(), 23);
    spec.access = cluster.access.clone();
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let load = tokio::spawn(load::run(spec, progress.clone(), epoch));
    let founders = cluster.clients()[..3].to_vec();
    let access = cluster.access.clone();
    let operate = |command| operate(founders.clone(), access.clone(), command);
    after_more_ops(&progress, 200).await;
    let at = raftkv::kv::directory::Addresses { peer, client };
    operate(ClientCommand::Member(MemberCommand::AddAt(new, at))).await;
    let promoted = operate(ClientCommand::Member(MemberCommand::Promote(new))).await;
    assert!(voters_in(&promoted).contains(&new), "{promoted}");
    operate(ClientCommand::Transfer { to: new }).await;
    until("the newcomer to lead", || async { leader(&cluster).await == new }).await;
    after_more_ops(&progress, 200).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = load.await.unwrap();
    check_history(&cluster, &records, epoch, 3).await;
    assert!(cluster.log_of(new).contains("fetched the cluster's address book"), "{}", cluster.log_of(new));
}

/// An operator's command through `servers` (to the leader, following
/// redirects), within [`PATIENCE`]: its answer, or why not as text.
async fn try_operate(
    servers: Vec<std::net::SocketAddr>,
    access: Access,
    command: ClientCommand,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    operator(&servers, &access, &command, deadline).await.map_err(|e| e.to_string())
}

/// [`try_operate`], which must succeed.
async fn operate(servers: Vec<std::net::SocketAddr>, access: Access, command: ClientCommand) -> String {
    match try_operate(servers, access, command.clone()).await {
        Ok(text) => text,
        Err(e) => panic!("{command:?}: {e}"),
    }
}

/// Which founder says it leads, if one does now.
async fn leader_among_founders(founders: &[std::net::SocketAddr]) -> Option<u8> {
    for (id, &addr) in founders.iter().enumerate() {
        if info_field(addr, "raft_role").await.as_deref() == Some("Leader") {
            return Some(id as u8);
        }
    }
    None
}

/// The voters in a `... voters=0.1.2 learners=3` text.
fn voters_in(text: &str) -> Vec<u8> {
    let field = text.split_whitespace().find_map(|w| w.strip_prefix("voters=")).unwrap_or("");
    field.split('.').filter_map(|id| id.parse().ok()).collect()
}

/// Snapshots on real processes: with a small threshold every node compacts
/// its log again and again while appends run. A node whose disk is wiped,
/// and a node paused until the leader compacted past everything it holds,
/// can only catch up by installing the leader's snapshot; a killed leader
/// restarts from its own snapshot plus the log after it. Nothing
/// acknowledged is lost, the history stays linearizable, and no log holds
/// more than a threshold's worth of entries beyond what it keeps trailing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_compact_and_wiped_or_paused_nodes_catch_up_by_installing_one() {
    const EVERY: u64 = 150;
    const TRAILING: u64 = 40;
    let mut cluster = TestCluster::configure_with("snapshots", 3, |config| {
        config.snapshots.every_entries = EVERY;
        config.snapshots.trailing_entries = TRAILING;
    });
    cluster.start_all();
    let addrs = cluster.clients();
    // Big values first, so every snapshot is larger than one chunk (1 MiB)
    // and each install takes several.
    let big = |i: usize| format!("{i:04}-").repeat(6000); // 30,000 bytes
    const BIG_KEYS: usize = 80;
    let mut clerk = RemoteClerk::new((1 << 40) + 1, addrs.clone(), 0, Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for i in 0..BIG_KEYS {
        clerk.run(Op::Put { key: format!("big-{i}"), value: big(i) }, deadline).await.expect("a big put");
    }
    let spec = appends_load(addrs.clone(), 11);
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));
    let counter = |id: u8, field: &'static str| {
        let addr = addrs[usize::from(id)];
        async move { info_u64(addr, field).await.unwrap_or(0) }
    };

    after_more_ops(&progress, 4 * EVERY).await;
    let first_leader = leader(&cluster).await;
    assert!(counter(first_leader, "raft_last_snapshot_bytes").await > 0);
    for id in 0..3 {
        until(&format!("node {id} to compact its log"), || async {
            counter(id, "raft_first_index").await > 1 && counter(id, "raft_snapshots_taken").await >= 1
        })
        .await;
    }

    // A replaced disk: the node comes back empty, and what it misses was
    // compacted away on the leader.
    let wiped = (first_leader + 1) % 3;
    cluster.kill9(wiped);
    cluster.wipe(wiped);
    after_more_ops(&progress, 2 * EVERY).await;
    cluster.restart(wiped);
    until("the wiped node to install a snapshot", || async { counter(wiped, "raft_snapshots_installed").await >= 1 })
        .await;

    // A follower paused long enough for the leader to compact past all it
    // holds (its last index read just before the pause, plus a margin for
    // what reached it in between).
    let l = leader(&cluster).await;
    let paused = (0..3).filter(|&i| i != l).find(|&i| i != wiped).unwrap();
    let paused_last = counter(paused, "raft_last_index").await;
    cluster.signal(paused, "-STOP");
    until("the leader to compact past the paused node", || async {
        counter(leader(&cluster).await, "raft_first_index").await > paused_last + EVERY
    })
    .await;
    let installed_before = counter(paused, "raft_snapshots_installed").await;
    cluster.signal(paused, "-CONT");
    until("the paused node to install a snapshot", || async {
        counter(paused, "raft_snapshots_installed").await > installed_before
    })
    .await;

    // The leader killed: it restarts from its snapshot and the log after it.
    let killed = leader(&cluster).await;
    cluster.kill9(killed);
    after_more_ops(&progress, EVERY).await;
    cluster.restart(killed);
    after_more_ops(&progress, EVERY).await;
    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    let history = check_history(&cluster, &records, epoch, 3).await;

    let deadline = tokio::time::Instant::now() + PATIENCE;
    for i in 0..BIG_KEYS {
        let value = clerk.run(Op::Get { key: format!("big-{i}") }, deadline).await.expect("a big get");
        assert!(value == big(i), "big-{i}: {} bytes, starting {:?}", value.len(), &value[..value.len().min(20)]);
    }
    let l = leader(&cluster).await;
    let commit = counter(l, "raft_commit_index").await;
    assert!(counter(l, "raft_last_snapshot_bytes").await > 2 << 20, "snapshots span several chunks");
    for id in 0..3 {
        until(&format!("node {id} to apply everything committed"), || async {
            counter(id, "raft_applied_index").await >= commit
        })
        .await;
        // Compaction keeps up: once the load stops, the log holds what came
        // since the last snapshot (fewer than EVERY, or another is taken)
        // plus the trailing entries. (While it runs, a snapshot in flight
        // lets the log grow by whatever arrives while it is written, which
        // depends on how busy the machine is.)
        until(&format!("node {id} to compact its log to {} entries", EVERY + TRAILING), || async {
            let (first, last) = (counter(id, "raft_first_index").await, counter(id, "raft_last_index").await);
            last + 1 - first <= EVERY + TRAILING
        })
        .await;
        // INFO's used_memory counts the live heap (the binary's counting
        // allocator): every replica holds at least the big values.
        let (used, rss) = (counter(id, "used_memory").await, counter(id, "used_memory_rss").await);
        assert!(used >= (BIG_KEYS * big(0).len()) as u64, "node {id}: used_memory {used} below its data");
        assert!(rss > 0, "node {id}: used_memory_rss unknown");
    }
    let completed: usize = records.iter().map(|r| r.latencies_us.len()).sum();
    eprintln!(
        "e2e snapshots: {completed} operations, {} history entries; wiped node {wiped}, paused node {paused}, \
         killed leader {killed}; snapshots taken {:?}, installed {:?}",
        history.ops.len(),
        [
            counter(0, "raft_snapshots_taken").await,
            counter(1, "raft_snapshots_taken").await,
            counter(2, "raft_snapshots_taken").await
        ],
        [
            counter(0, "raft_snapshots_installed").await,
            counter(1, "raft_snapshots_installed").await,
            counter(2, "raft_snapshots_installed").await
        ],
    );
}

/// A follower whose disk is replaced while the cluster is idle: the leader
/// sends it nothing but heartbeats, and still believes it holds what it
/// acknowledged (past the leader's compacted base, so no snapshot would be
/// sent). The follower's answer to a heartbeat says where its log ends, and
/// it catches up by installing the leader's snapshot with no write to wake
/// the leader (before that answer existed it waited forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_follower_of_an_idle_cluster_catches_up() {
    const EVERY: u64 = 20;
    let mut cluster = TestCluster::configure_with("wiped-idle", 3, |config| {
        config.snapshots.every_entries = EVERY;
        config.snapshots.trailing_entries = 5;
    });
    cluster.start_all();
    let addrs = cluster.clients();
    let mut clerk = RemoteClerk::new((1 << 40) + 2, addrs.clone(), 0, Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for i in 0..3 * EVERY {
        clerk.run(Op::Put { key: format!("k{}", i % 7), value: format!("v{i}") }, deadline).await.expect("a put");
    }
    let l = leader(&cluster).await;
    let commit = info_u64(addrs[usize::from(l)], "raft_commit_index").await.unwrap();
    let follower = (l + 1) % 3;
    until("every node to compact", || async {
        let mut all = true;
        for &addr in &addrs {
            all &= info_u64(addr, "raft_applied_index").await.unwrap_or(0) >= commit
                && info_u64(addr, "raft_first_index").await.unwrap_or(0) > 1;
        }
        all
    })
    .await;
    cluster.kill9(follower);
    cluster.wipe(follower);
    cluster.restart(follower);
    let addr = addrs[usize::from(follower)];
    until("the wiped follower to apply what was committed", || async {
        info_u64(addr, "raft_applied_index").await.unwrap_or(0) >= commit
    })
    .await;
    assert!(info_u64(addr, "raft_snapshots_installed").await.unwrap() >= 1, "it caught up by a snapshot");
    let value = clerk.run(Op::Get { key: "k0".into() }, tokio::time::Instant::now() + PATIENCE).await.unwrap();
    assert_eq!(value, format!("v{}", 3 * EVERY - 4), "the last Put to k0 survives");
}

/// `raftkv bench --mix all --check` against a real cluster: Gets, Appends,
/// Puts, DELs and SETNXs from 4 clients on 3 keys for 2 s, the history
/// recorded and found linearizable by the checker, and the run drawn
/// (`--plot`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_checks_every_operation() {
    let cluster = TestCluster::start("bench-all", 3);
    leader(&cluster).await;
    let servers = cluster.clients().iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let history = cluster.root.path().join("bench-all.json");
    let chart = cluster.root.path().join("bench-all.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["bench", "--mix", "all", "--clients", "4", "--keys", "3", "--seconds", "2", "--check"])
        .args(["--servers", &servers, "--history-out"])
        .arg(&history)
        .arg("--plot")
        .arg(&chart)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("linearizable (checked"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recorded = raftkv::lincheck::History::from_json(&std::fs::read_to_string(&history).unwrap()).unwrap();
    for kind in [raftkv::lincheck::OpKind::Delete, raftkv::lincheck::OpKind::PutIfAbsent] {
        let completed = recorded.ops.iter().filter(|o| o.kind == kind && o.ret.is_some());
        let answers: std::collections::BTreeSet<&str> = completed.map(|o| o.output.as_str()).collect();
        assert_eq!(answers, ["0", "1"].into(), "{kind:?} answered both ways");
    }
    let chart = std::fs::read_to_string(&chart).unwrap();
    assert!(chart.starts_with("<svg") && chart.matches("<polyline").count() == 3, "{chart}");
}

/// `raftkv bench --etcd` in the default build (without the `etcd`
/// feature) says how to get a build that has it, and loads nothing.
#[cfg(not(feature = "etcd"))]
#[test]
fn bench_against_etcd_names_the_feature_it_needs() {
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["bench", "--etcd", "--servers", "127.0.0.1:1", "--seconds", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--features etcd") && err.contains("protoc"), "{err}");
}

/// `raftkv floor` measures each term of issue 17's bar: a log write with
/// its fdatasync (alone, and three at once as a Put's replicas make them)
/// and loopback round trips, with a median each, and the bar from them.
#[test]
fn floor_measures_each_term_of_the_bar() {
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).args(["floor", "--seconds", "1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // "p50 N us": each measured term's median, which no real write or
    // round trip makes 0.
    let medians = |line: &str| -> Vec<u64> {
        line.split("p50 ").skip(1).filter_map(|rest| rest.split(' ').next()?.parse().ok()).collect()
    };
    let write = text.lines().find(|l| l.contains("log write + fdatasync")).expect("a write line");
    assert!(medians(write).first().is_some_and(|&us| us > 0), "{text}");
    // Three logs at once: each write's median and the second durable's.
    let replicas = text.lines().find(|l| l.contains("three logs written at once")).expect("a three-log line");
    assert!(medians(replicas).len() == 2 && medians(replicas).iter().all(|&us| us > 0), "{text}");
    let one_core = text.lines().find(|l| l.contains("round trip, both ends on one core")).expect("a round-trip line");
    assert!(medians(one_core).first().is_some_and(|&us| us > 0) && one_core.contains("bar"), "{text}");
}

/// `redis-cli` (Debian's redis-tools) against the cluster: a write through
/// one node, redirected to the leader with -MOVED, read back through
/// another. `.ci/run` installs redis-tools and sets
/// `RAFTKV_REQUIRE_REDIS_TOOLS=1`, so on CI a missing redis-cli fails the
/// test instead of skipping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_follows_moved_and_reads_back() {
    if !redis_cli_available() {
        return;
    }
    let cluster = TestCluster::start("redis-cli", 3);
    let l = leader(&cluster).await;
    let follower = (l + 1) % 3;
    let other = (l + 2) % 3;
    let port = |id: u8| cluster.config.nodes[usize::from(id)].client.port().to_string();
    let cli = |id: u8, args: &[&str]| {
        let out =
            Command::new("redis-cli").args(["-c", "-h", "127.0.0.1", "-p", &port(id)]).args(args).output().unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // A plain client without -c sees the redirect itself.
    let leader_addr = cluster.config.nodes[usize::from(l)].client.to_string();
    let plain_at_follower = |args: &[&str]| {
        let out = Command::new("redis-cli").args(["-p", &port(follower)]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let raw = plain_at_follower(&["set", "k", "v"]);
    assert!(raw.contains("MOVED") && raw.contains(&leader_addr), "{raw}");
    // So does an operator's request naming a server: only the leader's
    // address book decides (a follower's may not have applied the entry
    // the leader just wrote), so a follower redirects before it looks.
    let raw = plain_at_follower(&["RAFTKV.MEMBER", "PROMOTE", "5"]);
    assert!(raw.contains("MOVED") && raw.contains(&leader_addr), "{raw}");
    assert!(cli(follower, &["RAFTKV.MEMBER", "PROMOTE", "5"]).contains("not in the cluster's address book"));
    assert_eq!(cli(follower, &["set", "greeting", "hello"]), "OK");
    assert_eq!(cli(other, &["append", "greeting", " world"]), "OK");
    assert_eq!(cli(other, &["get", "greeting"]), "hello world");
    assert_eq!(cli(follower, &["strlen", "greeting"]), "11");
    assert_eq!(cli(follower, &["mget", "greeting", "missing", "greeting"]), "hello world\n\nhello world");
    assert_eq!(cli(other, &["exists", "greeting", "missing", "greeting"]), "2");
    assert_eq!(cli(follower, &["setnx", "lock", "a"]), "1");
    assert_eq!(cli(other, &["setnx", "lock", "b"]), "0");
    assert_eq!(cli(other, &["set", "lock", "c", "nx"]), "", "SET NX on a held key is a nil reply");
    assert_eq!(cli(follower, &["set", "fresh", "c", "NX"]), "OK");
    assert_eq!(cli(other, &["get", "lock"]), "a", "only the first SETNX took effect");
    assert_eq!(cli(follower, &["del", "lock", "missing", "fresh"]), "2");
    assert_eq!(cli(other, &["exists", "lock", "fresh"]), "0");
    assert_eq!(cli(other, &["del", "lock"]), "0");
    assert_eq!(cli(follower, &["get", "missing"]), "", "a missing key reads as the empty string");
    assert_eq!(cli(l, &["ping"]), "PONG");

    // redis-benchmark runs its SET test through the leader.
    let bench = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port(l), "-n", "200", "-c", "4", "-t", "set", "-q"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&bench.stdout).to_string() + &String::from_utf8_lossy(&bench.stderr);
    assert!(bench.status.success() && text.contains("SET"), "redis-benchmark: {text}");
}

/// Whether `redis-cli` is installed; a test that needs it and finds none
/// fails under `RAFTKV_REQUIRE_REDIS_TOOLS` and is skipped otherwise.
fn redis_cli_available() -> bool {
    let available = Command::new("redis-cli").arg("--version").output().is_ok_and(|o| o.status.success());
    if !available {
        assert!(std::env::var_os("RAFTKV_REQUIRE_REDIS_TOOLS").is_none(), "redis-cli is required but missing");
        eprintln!("SKIPPED: redis-cli is not installed (apt-get install redis-tools)");
    }
    available
}

/// Bad setups end the server at once with exit code 2 and a message that
/// names the problem: no panic, no half-started server.
#[test]
fn bad_setups_fail_with_clear_errors() {
    let root = TempDir::new("e2e-bad-setups").unwrap();
    let run = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_raftkv"));
        command.arg("server").args(args).stdin(Stdio::null());
        let out = command.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let data = root.path().join("data");
    let data = data.to_str().unwrap();

    let missing = root.path().join("missing.toml");
    let (code, err) = run(&["--config", missing.to_str().unwrap(), "--id", "0", "--data-dir", data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot read") && err.contains("missing.toml"), "{err}");

    let garbled = root.path().join("garbled.toml");
    std::fs::write(&garbled, "nodes = 3\n").unwrap();
    let (code, err) = run(&["--config", garbled.to_str().unwrap(), "--id", "0", "--data-dir", data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a valid cluster config"), "{err}");

    // A config whose client port is taken by another listener.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = free_ports(1);
    let mut config = ClusterConfig::local(1, ports[0], 0);
    config.nodes[0].client = taken.local_addr().unwrap();
    let path = root.path().join("taken.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let (code, err) = run(&["--config", path.to_str().unwrap(), "--id", "0", "--data-dir", data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot listen") && err.contains(&taken.local_addr().unwrap().to_string()), "{err}");

    let (code, err) = run(&["--config", path.to_str().unwrap(), "--id", "5", "--data-dir", data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("node 5 has no addresses") && err.contains("--peer-addr"), "{err}");

    // The data directory is a file.
    let file = root.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, err) = run(&["--config", path.to_str().unwrap(), "--id", "0", "--data-dir", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("a-file"), "{err}");

    // TLS asked for, without certificates: the file is named.
    let mut tls = ClusterConfig::local(1, ports[0], free_ports(1)[0]);
    tls.tls = Some(raftkv::server::config::TlsSettings { dir: root.path().join("no-certs"), clients: false });
    let path = root.path().join("tls.toml");
    std::fs::write(&path, tls.to_toml()).unwrap();
    let (code, err) = run(&["--config", path.to_str().unwrap(), "--id", "0", "--data-dir", data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("TLS") && err.contains("node-0.pem"), "{err}");

    // A route to this node, one to an id no server can have, and one that
    // is not ID=ADDR.
    let one = root.path().join("one.toml");
    std::fs::write(&one, ClusterConfig::local(1, ports[0], free_ports(1)[0]).to_toml()).unwrap();
    let one = one.to_str().unwrap();
    let (code, err) = run(&["--config", one, "--id", "0", "--data-dir", data, "--route", "0=127.0.0.1:1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--route 0"), "{err}");
    let (code, err) = run(&["--config", one, "--id", "0", "--data-dir", data, "--route", "9=127.0.0.1:1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--route 9"), "{err}");
    let (code, err) = run(&["--config", one, "--id", "0", "--data-dir", data, "--route", "4"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("ID=ADDR"), "{err}");
}

/// `raftkv cluster --tls --requirepass ... --smoke`: the launcher issues
/// the certificates, every node serves a write and a read over TLS with
/// the password, and the printed hints carry `--tls --cacert` and `-a`.
#[test]
fn the_launcher_starts_a_tls_cluster_with_a_password() {
    let (port, peer_port) = (cluster::free_port_run(3), cluster::free_port_run(3));
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["cluster", "--tls", "--requirepass", "s3cret", "--smoke"])
        .args(["--port", &port.to_string(), "--peer-port", &peer_port.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("TLS on every port") && text.contains("smoke check passed"), "{text}");
    assert!(text.contains("redis-cli --tls --cacert ") && text.contains(" -a s3cret"), "{text}");
}

/// `raftkv cluster` itself (issue 16): a node killed with SIGKILL is
/// reported and restarted, the others keep serving meanwhile, and SIGTERM
/// stops everything with success. Before, the launcher stopped the whole
/// cluster when one node died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_restarts_a_node_that_dies_while_the_others_serve() {
    /// Kills the launcher (and so its nodes) if the test fails.
    struct Launcher(std::process::Child);
    impl Drop for Launcher {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (port, peer_port) = (cluster::free_port_run(3), cluster::free_port_run(3));
    let dir = TempDir::new("launcher").unwrap();
    let out = dir.path().join("launcher.out");
    let mut launcher = Launcher(
        Command::new(env!("CARGO_BIN_EXE_raftkv"))
            .args(["cluster", "--port", &port.to_string(), "--peer-port", &peer_port.to_string(), "--data-dir"])
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let clients: Vec<std::net::SocketAddr> = (0..3).map(|i| ([127, 0, 0, 1], port + i).into()).collect();
    let pid_of = |id: usize| info_u64(clients[id], "process_id");
    until("node 1 answers", || async { pid_of(1).await.is_some() }).await;
    let victim = pid_of(1).await.unwrap();
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());

    // Served without node 1, through node 0 or 2 (whichever leads).
    let mut clerk = RemoteClerk::new(1 << 41, clients.clone(), 0, Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let put = clerk.run(Op::Put { key: "k".into(), value: "while node 1 was down".into() }, deadline).await;
    if let Err(e) = put {
        let log = std::fs::read_to_string(&out).unwrap_or_default();
        panic!("the Put while node 1 was down failed: {e:?}; the launcher's output:\n{log}");
    }
    until("node 1 runs again, as a new process", || async { pid_of(1).await.is_some_and(|p| p != victim) }).await;
    // Node 1 catches up: its own applied index reaches the leader's commit.
    let leader_commit =
        info_u64(clients[usize::from(cluster::leader_among(&clients, &Access::plain()).await)], "raft_commit_index")
            .await
            .unwrap();
    until("node 1 caught up", || async {
        info_u64(clients[1], "raft_applied_index").await.is_some_and(|a| a >= leader_commit)
    })
    .await;

    assert!(Command::new("kill").args(["-TERM", &launcher.0.id().to_string()]).status().unwrap().success());
    let exited = Instant::now();
    let status = loop {
        if let Some(status) = launcher.0.try_wait().unwrap() {
            break status;
        }
        assert!(exited.elapsed() < PATIENCE, "the launcher did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await; // polling a child process, not synchronising
    };
    let said = std::fs::read_to_string(&out).unwrap();
    assert!(status.success(), "{status}; it said:\n{said}");
    assert!(said.contains("node 1 exited") && said.contains("node 1 restarted"), "{said}");
}

/// A TLS cluster (`[tls]` with clients on) that requires a password: the
/// load runs over TLS with `AUTH` through a leader's kill -9 and restart
/// (the restarted node authenticates to its peers again) and stays
/// linearizable with nothing lost; a plain-text client gets no answer, a
/// client without the password gets `NOAUTH` and one with a wrong one
/// `WRONGPASS`; a plain-text peer connection is refused with a log line
/// saying why; `redis-cli --tls -a` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_a_password_serves_its_clients_through_a_crash_and_refuses_others() {
    const PASSWORD: &str = "correct horse";
    let mut cluster = TestCluster::configure_with("tls", 3, |c| c.requirepass = Some(PASSWORD.into()));
    cluster.enable_tls();
    let tls_only = cluster.access.clone();
    cluster.access = tls_only.clone().with_password(PASSWORD);
    cluster.start_all();
    let mut spec = appends_load(cluster.clients(), 11);
    spec.access = cluster.access.clone();
    let progress = Arc::new(Progress::default());
    let epoch = Instant::now();
    let clients = tokio::spawn(load::run(spec, progress.clone(), epoch));

    after_more_ops(&progress, 200).await;
    let first = kill9_leader_and_restart(&mut cluster, &progress, 200).await;

    let addr = cluster.clients()[0];
    let ask = |access: Access| async move {
        raftkv::server::client::info(addr, &access, Duration::from_secs(5)).await.map_err(|e| e.to_string())
    };
    let plain = ask(Access::plain()).await;
    assert!(plain.is_err(), "a plain-text client was answered: {plain:?}");
    let no_password = ask(tls_only.clone()).await.unwrap_err();
    assert!(no_password.contains("NOAUTH"), "{no_password}");
    let wrong = ask(tls_only.clone().with_password("wrong")).await.unwrap_err();
    assert!(wrong.contains("WRONGPASS"), "{wrong}");
    assert!(ask(cluster.access.clone()).await.unwrap().contains("raft_role:"));
    until("node 0 to log the wrong password", || async {
        cluster.log_of(0).contains("client refused: wrong password")
    })
    .await;
    let mut forged = tokio::net::TcpStream::connect(cluster.config.nodes[0].peer).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut forged, b"\x52\x4b\x01\x00\x00\x00\x00\x04abcd").await.unwrap();
    until("node 0 to log the refused plain-text peer", || async {
        cluster.log_of(0).contains("refused peer connection: TLS handshake failed")
    })
    .await;

    if redis_cli_available() {
        // redis-cli --tls follows MOVED to the leader, over TLS.
        let ca = cluster.root.path().join("certs/ca.pem");
        let cli = |id: usize, args: &[&str]| {
            let port = cluster.config.nodes[id].client.port().to_string();
            let out = Command::new("redis-cli")
                .args(["--tls", "--cacert", ca.to_str().unwrap(), "-c", "-h", "127.0.0.1", "-p", &port])
                .args(["-a", PASSWORD, "--no-auth-warning"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(cli(1, &["set", "over-tls", "yes"]), "OK");
        assert_eq!(cli(2, &["get", "over-tls"]), "yes");
    }

    // `raftkv status` over TLS with the password: a row per node, one
    // leader, and a lag for each follower.
    let servers: Vec<String> = cluster.clients().iter().map(|a| a.to_string()).collect();
    let ca = cluster.root.path().join("certs/ca.pem");
    let status = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["status", "--servers", &servers.join(","), "--cacert", ca.to_str().unwrap()])
        .env("RAFTKV_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.status.success(), "{text}{}", String::from_utf8_lossy(&status.stderr));
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(rows.iter().filter(|r| r.ends_with("leader")).count(), 1, "{text}");
    for row in rows.iter().filter(|r| !r.ends_with("leader")) {
        let lag = row.split_whitespace().last().unwrap();
        assert!(lag.parse::<u64>().is_ok(), "a follower's lag: {text}");
    }

    progress.stop.store(true, Ordering::Relaxed);
    let records = clients.await.unwrap();
    let history = check_history(&cluster, &records, epoch, 3).await;
    eprintln!("e2e tls: {} history entries; killed and restarted node {first}", history.ops.len());
}

/// The metrics endpoint (`metrics` in `cluster.toml`): after some writes,
/// the leader's scrape shows its requests, fsync latencies, messages per
/// peer and each follower's lag, in the Prometheus text format; anything
/// but `GET /metrics` gets 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_shows_the_leader_at_work() {
    let ports = free_ports(3);
    let mut cluster = TestCluster::configure_with("metrics", 3, |c| {
        for (node, port) in c.nodes.iter_mut().zip(&ports) {
            node.metrics = Some(std::net::SocketAddr::from(([127, 0, 0, 1], *port)));
        }
    });
    cluster.start_all();
    let mut clerk = RemoteClerk::new(1 << 41, cluster.clients(), 0, Duration::from_millis(500));
    for i in 0..20 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        clerk.run(raftkv::kv::Op::Put { key: format!("k{i}"), value: "v".into() }, deadline).await.unwrap();
    }
    let l = leader(&cluster).await;
    let get = |port: u16, path: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response).await.unwrap();
        response
    };
    let scrape = get(ports[usize::from(l)], "/metrics").await;
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    let value = |name: &str| -> f64 {
        let line = scrape.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("no {name}: {scrape}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("raftkv_is_leader "), 1.0);
    assert!(value("raftkv_requests_total ") >= 20.0, "{scrape}");
    assert!(value("raftkv_fsync_seconds_count ") >= 1.0, "{scrape}");
    assert!(value("raftkv_applied_entries_total ") >= 20.0, "{scrape}");
    // How many heartbeats were superseded depends on timing; the count is there.
    assert!(scrape.contains("\nraftkv_peer_messages_superseded_total "), "{scrape}");
    // An idle leader's node thread writes its heartbeats itself.
    assert!(value("raftkv_peer_messages_written_at_once_total ") >= 1.0, "{scrape}");
    // Its Puts' entries went to its disk with its pacer's AppendEntries.
    assert!(value("raftkv_leader_writes{reason=\"pacer\"} ") >= 1.0, "{scrape}");
    for follower in (0..3u8).filter(|&id| id != l) {
        assert!(value(&format!("raftkv_peer_messages_sent{{peer=\"{follower}\"}} ")) >= 20.0, "{scrape}");
        assert!(scrape.contains(&format!("raftkv_follower_lag_entries{{peer=\"{follower}\"}}")), "{scrape}");
    }
    assert!(get(ports[0], "/").await.starts_with("HTTP/1.1 404"));
}
