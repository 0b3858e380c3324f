//! The CI-sized model checks: breadth-first over every interleaving of the
//! real Raft and KV code up to a depth that fits a CI run, on both read
//! paths. Larger bounds: `cargo run --release -p raftkv-models -- check`.

use raftkv::kv::ReadPath;
use raftkv_models::{model, stateright_depth, ModelConfig, RaftModel, RaftState};
use stateright::actor::ActorModelAction;
use stateright::{Checker, Model};

/// Actions explored in CI: a leader is elected and client requests reach
/// it; every "always" property is checked in every state up to here.
const CI_DEPTH: usize = 10;

/// The "always" properties of `raftkv_models::model`.
const ALWAYS: [&str; 6] =
    ["election safety", "log matching", "leader completeness", "state machine safety", "exactly once", "linearizable"];

/// Panics with the counterexample if any "always" property was violated.
fn assert_no_violation(checker: &impl Checker<RaftModel>) {
    for name in ALWAYS {
        if let Some(path) = checker.discovery(name) {
            panic!("{name} violated:\n{path}");
        }
    }
}

fn check_clean(config: ModelConfig) {
    let checker =
        model(config.clone()).checker().threads(2).target_max_depth(stateright_depth(CI_DEPTH)).spawn_bfs().join();
    println!("{config:?}: {} states, {} unique", checker.state_count(), checker.unique_state_count());
    assert_no_violation(&checker);
    assert!(checker.discovery("leader elected").is_some(), "no leader in {CI_DEPTH} steps: the model is vacuous");
    assert!(checker.unique_state_count() > 10_000, "suspiciously few states");
}

#[test]
fn readindex_model_is_clean_to_ci_depth() {
    check_clean(ModelConfig::ci());
}

#[test]
fn log_read_model_is_clean_to_ci_depth() {
    check_clean(ModelConfig { read_path: ReadPath::Log, ..ModelConfig::ci() });
}

#[test]
fn every_property_is_registered_once() {
    let m = model(ModelConfig::ci());
    let names: Vec<&str> = m.properties().iter().map(|p| p.name).collect();
    assert_eq!(names.len(), 10, "{names:?}");
}

/// Injected bug (f), votes never made durable: after a crash a node votes
/// again in the same term and two leaders are elected. The shortest
/// counterexample takes 12 actions (two pre-elections, a crash and a
/// recovery), so this checks every state up to 12 actions, with no clients
/// and a per-channel FIFO network to keep that within a few minutes.
/// Without the bug the same bounds are clean (`specs/models.md`).
#[test]
fn vote_before_persist_breaks_election_safety() {
    let config = ModelConfig {
        clients: 0,
        max_crashes: 1,
        ordered: true,
        max_in_flight: 9,
        max_term: 1,
        max_log: 1,
        bugs: raftkv::raft::InjectedBugs::only("vote_before_persist").unwrap(),
        ..ModelConfig::ci()
    };
    let checker = model(config)
        .checker()
        .threads(2)
        .target_max_depth(stateright_depth(12))
        .finish_when(stateright::HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    let path = checker.discovery("election safety").expect("the model must catch bug (f): two leaders in one term");
    println!("bug (f) counterexample, {} states explored:\n{path}", checker.state_count());
    for name in ["log matching", "leader completeness", "state machine safety"] {
        assert!(checker.discovery(name).is_none(), "bug (f) was caught as {name}, not election safety");
    }
}

/// Random walks that deliver messages far more often than they fire
/// timers: a uniform choice spends most steps on timeouts (any set timer may
/// fire at any moment in the model), and elections keep interrupting the
/// client requests the deep properties need.
#[derive(Clone)]
struct MostlyDeliver;

impl stateright::Chooser<RaftModel> for MostlyDeliver {
    type State = raftkv::rng::Rng;

    fn new_state(&self, seed: u64) -> raftkv::rng::Rng {
        raftkv::rng::Rng::new(seed)
    }

    fn choose_initial_state(&self, _: &mut raftkv::rng::Rng, _: &[RaftState]) -> usize {
        0
    }

    fn choose_action(
        &self,
        rng: &mut raftkv::rng::Rng,
        _: &RaftState,
        actions: &[<RaftModel as Model>::Action],
    ) -> usize {
        let weight = |a: &<RaftModel as Model>::Action| match a {
            ActorModelAction::Deliver { .. } => 20,
            _ => 1,
        };
        let mut pick = rng.range(0, actions.iter().map(weight).sum());
        for (i, a) in actions.iter().enumerate() {
            if pick < weight(a) {
                return i;
            }
            pick -= weight(a);
        }
        actions.len() - 1
    }
}

/// The sometimes-properties that lie beyond the exhaustive CI depth (a Get
/// that sees another client's write, a deposed leader's successor serving
/// a read) are reached by stateright's simulation checker: seeded random
/// walks of up to 150 actions through the same model (2 clients, a FIFO
/// network, up to term 4 and 6 log entries), with every property, "always"
/// ones included, checked in each of the first million states visited. One
/// thread and a fixed seed, so a run is reproducible.
#[test]
fn random_walks_reach_every_sometimes_property() {
    let config = ModelConfig { clients: 2, ordered: true, max_term: 4, max_log: 6, ..ModelConfig::ci() };
    let sometimes =
        ["leader elected", "write acknowledged", "read sees another client's write", "new leader serves a read"];
    let m = model(config.clone());
    let checker = model(config)
        .checker()
        .threads(1)
        .target_max_depth(stateright_depth(150))
        .target_state_count(1_000_000)
        .spawn_simulation(7, MostlyDeliver)
        .join();
    println!("simulation: {} states visited", checker.state_count());
    assert_no_violation(&checker);
    for name in sometimes {
        let path = checker.discovery(name).unwrap_or_else(|| panic!("random walks never reached {name:?}"));
        // The checker keeps the last walk in which the property held; say
        // where it first held in that walk.
        let holds = m.properties().into_iter().find(|p| p.name == name).expect("registered").condition;
        let first = path.into_states().iter().position(|s| holds(&m, s)).expect("it held in this walk");
        println!("{name}: first holds after {first} actions of a walk");
    }
}

/// Injected bugs (b)–(e) need more actions than exhaustive search reaches
/// in CI, but the seeded random walks above find each one, as the property
/// it breaks. (Bug (a), Figure 8, needs a schedule the walks do not find in
/// 5 million states; the simulator's hand-built Figure 8 test catches it.)
/// The reported path is the walk that broke the property, not a shortest
/// one.
#[test]
fn random_walks_catch_injected_bugs() {
    let cases = [
        ("vote_without_log_check", "leader completeness"),
        ("read_without_quorum", "linearizable"),
        ("read_before_noop", "linearizable"),
        ("skip_session_table", "exactly once"),
    ];
    for (bug, property) in cases {
        let config = ModelConfig {
            clients: 2,
            ordered: true,
            max_term: 4,
            max_log: 6,
            bugs: raftkv::raft::InjectedBugs::only(bug).unwrap(),
            ..ModelConfig::ci()
        };
        let started = std::time::Instant::now();
        let checker = model(config)
            .checker()
            .threads(1)
            .target_max_depth(stateright_depth(150))
            .target_state_count(5_000_000)
            .finish_when(stateright::HasDiscoveries::AnyFailures)
            .spawn_simulation(7, MostlyDeliver)
            .join();
        let path = checker.discovery(property).unwrap_or_else(|| {
            panic!("random walks did not catch {bug} as {property} in {} states", checker.state_count())
        });
        println!(
            "{bug}: {property} broken after {} states ({:.1?}), in a walk of {} actions",
            checker.state_count(),
            started.elapsed(),
            path.into_actions().len()
        );
    }
}
