//! DPOR ([`raftkv_models::dpor`]) against the search over every
//! interleaving (the same explorer, unreduced), at bounds where that
//! finishes: two servers, with clients, crashes, both networks.

use raftkv_models::dpor::{portfolio, Dpor, Options, Order};
use raftkv_models::search::Stopped;
use raftkv_models::{model, Delivery, ModelConfig, RaftModel};
use stateright::{Expectation, Model};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicBool;

/// What a search saw: states at the ends of maximal runs, each actor's
/// states, the properties discovered, and its counts.
struct Seen {
    maximal: HashMap<u64, Vec<raftkv_models::RaftAction>>,
    local: Vec<HashSet<u64>>,
    discovered: BTreeSet<&'static str>,
    counts: raftkv_models::dpor::Counts,
}

fn search(m: &RaftModel, options: Options) -> Seen {
    let mut search = Dpor::new(m, Options { record: true, ..options }).expect("bounds DPOR takes");
    search.run(|_| {});
    assert_eq!(search.stopped(), None, "the search ran to its end");
    assert_eq!(search.counts().capped, 0, "no run reached the cap");
    Seen {
        discovered: search.discoveries().keys().copied().collect(),
        counts: search.counts(),
        maximal: std::mem::take(&mut search.maximal),
        local: std::mem::take(&mut search.local),
    }
}

/// Small bounds where every interleaving can be explored (about 6 M states
/// in all, a minute or so): two servers; no client, one or two; a crash
/// or none; both networks; one term or two. Three servers, only server 0
/// timing out, with a client or a crash (where the inert rule reduces
/// most). And two servers, two clients and a crash that may hit a client
/// (where a race can be impossible to reverse for want of a recovery).
fn configs() -> Vec<(ModelConfig, Options)> {
    let two = |clients, crashes, network, term, log| ModelConfig {
        servers: 2,
        clients,
        max_crashes: crashes,
        clients_crash: false,
        network,
        max_term: term,
        max_log: log,
        max_in_flight: usize::MAX,
        ..ModelConfig::ci()
    };
    let three = |clients, crashes| ModelConfig {
        servers: 3,
        max_term: 1,
        max_log: 1,
        ..two(clients, crashes, Delivery::Ordered, 1, 1)
    };
    let timeouts = |server, client| Options::new(server, client);
    let only_server_0 = Options { server_timeouts: vec![1, 0], ..Options::new(0, 0) };
    vec![
        (two(0, 1, Delivery::Ordered, 1, 1), timeouts(1, 0)),
        (two(1, 0, Delivery::Unordered, 1, 3), timeouts(1, 0)),
        (two(1, 0, Delivery::Ordered, 1, 3), timeouts(1, 0)),
        (two(1, 1, Delivery::Ordered, 1, 1), timeouts(1, 0)),
        (two(2, 0, Delivery::Ordered, 1, 2), timeouts(1, 0)),
        (two(0, 0, Delivery::Ordered, 2, 2), timeouts(2, 0)),
        (three(0, 1), only_server_0.clone()),
        (three(1, 0), only_server_0.clone()),
        (ModelConfig { clients_crash: true, ..two(2, 1, Delivery::Ordered, 1, 1) }, only_server_0),
    ]
}

/// DPOR explores one run of each class of equivalent runs, so it must
/// end in every state where the unreduced search ends a maximal run, see
/// every state of every actor, and find every property the unreduced
/// search finds (and no other), with far fewer states. A race check that
/// forgets that a message's send happens before its delivery (so finds
/// races that are not there, and picks the wrong runs to reverse) must
/// fail that comparison, or the search's own assertion that every
/// action it backtracks to is enabled. So must an inert-delivery rule
/// that does not check that the delivery stays inert after the other
/// event (`careless_inert`), and a race check that judges whether a race
/// can be reversed only when both events are at one actor
/// (`careless_reversal`), and a quiet-delivery rule that lets an answer
/// commute with an event sending on the same channel (`careless_quiet`).
/// In rounds of increasing deviations the union of the rounds must match
/// too, and rounds that miscount what they deferred (`careless_rounds`)
/// must miss runs. The reduced search runs in both orders
/// ([`Order`]): it must be exhaustive whichever run it takes first.
#[test]
fn dpor_reaches_what_every_interleaving_reaches_and_the_check_catches_a_broken_race_check() {
    let (mut reduced_total, mut full_total, mut caught, mut careless_caught) = (0, 0, 0, 0);
    let (mut careless_reversal_caught, mut careless_quiet_caught, mut careless_rounds_caught) = (0, 0, 0);
    for (config, options) in configs() {
        let m = model(config.clone());
        let full = search(&m, Options { reduce: false, ..options.clone() });
        let reduced = search(&m, options.clone());
        for order in [Order::Model, Order::ServersFirst] {
            let at =
                format!("{config:?}, timeouts {:?}/{:?}, {order:?}", options.server_timeouts, options.client_timeouts);
            let reduced =
                if order == options.order { &reduced } else { &search(&m, Options { order, ..options.clone() }) };
            for (fp, run) in &full.maximal {
                assert!(reduced.maximal.contains_key(fp), "a maximal run DPOR has no equivalent of, {at}:\n{run:#?}");
            }
            assert_eq!(reduced.maximal.len(), full.maximal.len(), "states at the ends of maximal runs, {at}");
            assert_eq!(reduced.local, full.local, "states of each actor, {at}");
            assert_eq!(reduced.discovered, full.discovered, "properties discovered, {at}");
            assert!(full.discovered.contains("leader elected"), "a leader is elected, {at}");
            println!("{at}: {:?} against {:?}", reduced.counts, full.counts);
        }
        // In rounds of increasing deviations: the last round is the whole
        // search, so the union of the rounds reaches what every
        // interleaving reaches.
        let at = format!("{config:?}, timeouts {:?}/{:?}, in rounds", options.server_timeouts, options.client_timeouts);
        let rounds = search(&m, Options { rounds: true, ..options.clone() });
        assert_eq!(rounds.counts.deferred, 0, "the last round deferred nothing, {at}");
        assert!(rounds.counts.rounds > 1, "the first round (no deviation) is not the whole search, {at}");
        for (fp, run) in &full.maximal {
            assert!(rounds.maximal.contains_key(fp), "a maximal run the rounds have no equivalent of, {at}:\n{run:#?}");
        }
        assert_eq!(rounds.maximal.len(), full.maximal.len(), "states at the ends of maximal runs, {at}");
        assert_eq!(rounds.local, full.local, "states of each actor, {at}");
        assert_eq!(rounds.discovered, full.discovered, "properties discovered, {at}");
        println!("{at}: {:?}", rounds.counts);
        // Rounds that miscount what they deferred, and so end early: the
        // comparison with every interleaving must notice the runs never
        // explored.
        let careless = search(&m, Options { rounds: true, careless_rounds: true, ..options.clone() });
        let missed = full.maximal.keys().filter(|fp| !careless.maximal.contains_key(fp)).count();
        println!(
            "{at}, miscounting the deferred: {missed} of {} maximal states missed in {} rounds",
            full.maximal.len(),
            careless.counts.rounds
        );
        careless_rounds_caught += usize::from(missed > 0 || careless.local != full.local);
        reduced_total += reduced.counts.states;
        full_total += full.counts.states;
        // 1 if an unsound variant trips the search's assertion or the
        // comparison with every interleaving.
        let catches =
            |unsound: Options| match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| search(&m, unsound))) {
                Err(_) => 1,
                Ok(s) => usize::from(s.maximal.len() != full.maximal.len() || s.local != full.local),
            };
        caught += catches(Options { forget_sends: true, ..options.clone() });
        careless_caught += catches(Options { careless_inert: true, ..options.clone() });
        careless_reversal_caught += catches(Options { careless_reversal: true, ..options.clone() });
        careless_quiet_caught += catches(Options { careless_quiet: true, ..options.clone() });
    }
    assert!(reduced_total * 20 < full_total, "a reduction of 20 times at least: {reduced_total} of {full_total}");
    assert!(caught > 0, "forgetting sends went unnoticed on every configuration");
    println!("forgetting sends caught on {caught} of {} configurations", configs().len());
    println!("a careless inert rule caught on {careless_caught} of {} configurations", configs().len());
    assert!(careless_caught > 0, "an inert rule that does not look after the other event went unnoticed");
    println!("a careless reversal check caught on {careless_reversal_caught} of {} configurations", configs().len());
    assert!(careless_reversal_caught > 0, "judging reversibility only at the same actor went unnoticed");
    println!("a careless quiet rule caught on {careless_quiet_caught} of {} configurations", configs().len());
    assert!(careless_quiet_caught > 0, "a quiet delivery commuting with sends on its channels went unnoticed");
    println!(
        "rounds that miscount the deferred caught on {careless_rounds_caught} of {} configurations",
        configs().len()
    );
    assert!(careless_rounds_caught > 0, "rounds that end before the search does went unnoticed");
}

/// `cargo test`'s exhaustive check that reaches a read served by the
/// leader of a later term (the property "new leader serves a read", where
/// stale reads live): three servers, a client (an Append, then a Get), the
/// ordered network, terms ≤ 2, logs ≤ 2, server 0 alone timing out (twice
/// along a run, heartbeats included), the client never. DPOR explores one
/// run of every class within those bounds (52,000 states) with every
/// "always" property holding; the read is reached, as are an election and
/// an acknowledged write.
#[test]
fn dpor_exhaustively_reaches_a_read_served_by_a_new_leader() {
    let config = ModelConfig {
        clients: 1,
        network: Delivery::Ordered,
        max_term: 2,
        max_log: 2,
        max_in_flight: usize::MAX,
        ..ModelConfig::ci()
    };
    let m = model(config.clone());
    let options = Options { server_timeouts: vec![2, 0], ..Options::new(0, 0) };
    let started = std::time::Instant::now();
    let mut search = Dpor::new(&m, options).expect("bounds DPOR takes");
    search.run(|_| {});
    println!("{config:?}: {:?} in {:.1?}", search.counts(), started.elapsed());
    assert_eq!(search.stopped(), None, "the search ran to its end");
    assert_eq!(search.counts().capped, 0, "no run reached the cap");
    let found: BTreeSet<&str> = search.discoveries().keys().copied().collect();
    for p in m.properties().iter().filter(|p| p.expectation == Expectation::Always) {
        assert!(!found.contains(p.name), "{} violated", p.name);
    }
    for name in ["leader elected", "write acknowledged", "new leader serves a read"] {
        assert!(found.contains(name), "{name:?} not reached");
    }
}

/// Bug (e) `skip_session_table` by DPOR, exhaustively, at two servers: a
/// retry the leader takes again after committing the original breaks
/// exactly once, within a few thousand states.
#[test]
fn dpor_catches_a_retry_applied_twice() {
    let mut config = ModelConfig {
        servers: 2,
        clients: 1,
        network: Delivery::Ordered,
        max_term: 1,
        max_log: 3,
        max_in_flight: usize::MAX,
        ..ModelConfig::ci()
    };
    config.bugs.skip_session_table = true;
    let m = model(config);
    let mut search = Dpor::new(&m, Options { first_failure: true, ..Options::new(1, 1) }).expect("bounds DPOR takes");
    search.run(|_| {});
    let found: Vec<&str> = search.discoveries().keys().copied().collect();
    assert!(search.discoveries().contains_key("exactly once"), "bug (e) not caught: {found:?}, {:?}", search.counts());
    println!("bug (e) after {:?}", search.counts());
}

/// The issue's configuration (3 servers, 2 clients, one crash that only
/// a server takes, the ordered network) with `bugs`, terms up to `term`
/// and logs up to `log` entries.
fn at_issue_configuration(bugs: fn(&mut raftkv::raft::InjectedBugs), term: u64, log: usize) -> RaftModel {
    let mut config = issue_configuration(term, log);
    bugs(&mut config.bugs);
    model(config)
}

fn issue_configuration(term: u64, log: usize) -> ModelConfig {
    ModelConfig {
        clients: 2,
        max_crashes: 1,
        clients_crash: false,
        network: Delivery::Ordered,
        max_term: term,
        max_log: log,
        max_in_flight: usize::MAX,
        ..ModelConfig::ci()
    }
}

/// Bugs (b) and (f) by DPOR at the issue's configuration: 3 servers, 2
/// clients, a server crash (ordered network, one timeout per server, no
/// client retry). (f) `vote_before_persist`: a server that votes, crashes
/// before its vote is durable and votes again in the same term lets two
/// leaders win term 1, and election safety breaks. (b)
/// `vote_without_log_check`: a follower's crash ends its leader lease,
/// so it grants a pre-vote and a vote, without looking at logs, to the
/// server that missed the committed no-op, which then leads term 2
/// without it: leader completeness breaks.
#[test]
fn dpor_catches_bugs_b_and_f_with_two_clients_and_a_crash() {
    let caught = |bugs: fn(&mut raftkv::raft::InjectedBugs), term, property| {
        let m = at_issue_configuration(bugs, term, 1);
        let mut search =
            Dpor::new(&m, Options { first_failure: true, ..Options::new(1, 0) }).expect("bounds DPOR takes");
        search.run(|_| {});
        let found: Vec<&str> = search.discoveries().keys().copied().collect();
        assert!(search.discoveries().contains_key(property), "{property} not broken: {found:?}, {:?}", search.counts());
        println!("{property} broken after {:?}", search.counts());
    };
    caught(|b| b.vote_before_persist = true, 1, "election safety");
    caught(|b| b.vote_without_log_check = true, 2, "leader completeness");
}

/// Bugs (c), (d) and (e) by the two DPOR searches side by side
/// ([`portfolio`]: depth-first and in rounds of increasing deviations) at
/// the issue's configuration: 3 servers, 2 clients, a server crash, the
/// ordered network. (c) `read_without_quorum`: a leader answers reads
/// without confirming with a quorum that it still leads, so a deposed
/// one answers from stale state. (d) `read_before_noop`: a new leader
/// answers a read before its no-op commits. (e) `skip_session_table`: the
/// leader appends a client's retry a second time, and both copies apply.
/// Depth-first finds (d) within
/// seconds and neither (c) nor (e) in 10 minutes; the rounds find (c) and
/// (e) within a minute and (d) in 9 (specs/models.md). Which search wins
/// depends on the threads' timing; that the bug is found does not.
#[test]
fn dpor_portfolio_catches_bugs_c_d_and_e_with_two_clients_and_a_crash() {
    let caught = |bugs: fn(&mut raftkv::raft::InjectedBugs), (term, log), timeouts: (Vec<u32>, Vec<u32>), property| {
        let m = at_issue_configuration(bugs, term, log);
        let (server_timeouts, client_timeouts) = timeouts;
        let options = Options { first_failure: true, server_timeouts, client_timeouts, ..Options::new(0, 0) };
        let never = AtomicBool::new(false);
        let [first, other] = portfolio(&m, &options, &never, &|_, _| {}).expect("bounds DPOR takes");
        assert_eq!(first.stopped, Some(Stopped::FirstFailure), "{property}: {first:?}");
        assert!(first.discoveries.contains_key(property), "{property} not broken: {first:?}");
        // The other was stopped by the first's end, unless it broke the
        // property too before it looked.
        assert!(matches!(other.stopped, Some(Stopped::Outrun | Stopped::FirstFailure)), "{:?}", other.stopped);
        let winner = if first.rounds { "in rounds" } else { "depth-first" };
        println!("{property} broken {winner} after {:?} (the other stopped after {:?})", first.counts, other.counts);
    };
    caught(|b| b.read_without_quorum = true, (2, 4), (vec![1, 1, 0], vec![1, 0]), "linearizable");
    caught(|b| b.read_before_noop = true, (2, 3), (vec![1, 1, 0], vec![0]), "linearizable");
    caught(|b| b.skip_session_table = true, (1, 3), (vec![1, 0], vec![1, 0]), "exactly once");
}

/// Bug (a) `commit_previous_term`, Raft Figure 8, by DPOR in rounds of
/// increasing deviations at the issue's configuration (3 servers, 2
/// clients, a server crash, the ordered network) with Figure 8's bounds:
/// terms up to 4, logs up to 2 entries, one entry per AppendEntries;
/// two timeouts for servers 0 and 1, none for server 2, no heartbeat, no
/// client retry. A leader of term 3 counts its replicated term-1 entry as
/// committed; a server that never held it wins term 4: leader
/// completeness breaks. PreVote is off (bug (p), a liveness bug no safety
/// property sees), which spares each election its pre-vote round: with
/// it on (timeouts 2, 2, 1), the command line finds (a) too
/// (specs/models.md). The counterexample needs no client event, and the
/// clients' requests wait in flight; the rounds reach it early because it
/// deviates from the model's first choices only four times. The control:
/// without (a), the same search over as many states breaks nothing (it
/// does not end there: these bounds hold too many runs to finish).
#[test]
fn dpor_in_rounds_catches_bug_a_with_two_clients_and_a_crash() {
    let mut config = ModelConfig { max_batch: 1, max_heartbeats: Some(0), ..issue_configuration(4, 2) };
    config.bugs.without_prevote = true;
    let options = Options { first_failure: true, rounds: true, server_timeouts: vec![2, 2, 0], ..Options::new(0, 0) };
    let buggy = model(ModelConfig {
        bugs: raftkv::raft::InjectedBugs { commit_previous_term: true, ..config.bugs },
        ..config.clone()
    });
    let mut search = Dpor::new(&buggy, options.clone()).expect("bounds DPOR takes");
    search.run(|_| {});
    let found: Vec<&str> = search.discoveries().keys().copied().collect();
    assert_eq!(search.stopped(), Some(Stopped::FirstFailure), "{found:?}, {:?}", search.counts());
    assert!(search.discoveries().contains_key("leader completeness"), "not broken: {found:?}, {:?}", search.counts());
    println!("leader completeness broken after {:?}", search.counts());

    let states = search.counts().states;
    let clean = model(config);
    let enough = AtomicBool::new(false);
    let mut control = Dpor::new(&clean, options).expect("bounds DPOR takes").interrupt_on(&enough);
    control.run(|counts| {
        if counts.states >= states {
            enough.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // With `first_failure`, any "always" property broken would have
    // stopped it first.
    assert_eq!(control.stopped(), Some(Stopped::Interrupted), "without (a): {:?}", control.discoveries().keys());
    println!("without (a), clean after {:?}", control.counts());
}
