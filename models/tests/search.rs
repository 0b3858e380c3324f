//! Our own depth-first search with sleep sets ([`raftkv_models::search`])
//! and the independence relation it prunes by
//! ([`raftkv_models::independence`]): the relation checked in every state
//! of small bounds, the reduced search checked against the unreduced one
//! (the same states, the same verdicts), the unreduced one against
//! stateright's, and each check shown failing on a deliberately unsound
//! relation or boundary.

use raftkv::rng::Rng;
use raftkv_models::actors::{ActorState, ModelTimer};
use raftkv_models::independence::{actor, commutation_failures, crash_or_recover, independent};
use raftkv_models::schedule::replay;
use raftkv_models::search::{deepen, fingerprint, Independence, Options, Search, Stopped, UNBOUNDED};
use raftkv_models::walks::MostlyDeliver;
use raftkv_models::{model, stateright_depth, Delivery, ModelConfig, RaftAction, RaftModel, RaftState};
use stateright::actor::ActorModelAction;
use stateright::{Checker, Chooser, Expectation, Model, Property};
use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;

/// `config` without its bound on messages in flight, which sleep sets
/// cannot use (see `raftkv_models::search`): only the depth bounds the
/// search.
fn unbounded(config: ModelConfig) -> ModelConfig {
    ModelConfig { max_in_flight: usize::MAX, max_in_flight_per_sender: usize::MAX, ..config }
}

/// Small bounds of every kind the models check: unordered, ordered,
/// duplicating and lossy networks; two clients and a crash; snapshots
/// written by their own action; membership change; batches written by
/// their own action (a slow log).
fn configs() -> Vec<(&'static str, ModelConfig)> {
    let ci = ModelConfig::ci;
    vec![
        ("ci", unbounded(ci())),
        (
            "2 clients, crash, ordered",
            unbounded(ModelConfig { clients: 2, max_crashes: 1, network: Delivery::Ordered, ..ci() }),
        ),
        ("duplicating", unbounded(ModelConfig { network: Delivery::Duplicating, ..ci() })),
        ("lossy", unbounded(ModelConfig { lossy: true, ..ci() })),
        ("slow snapshots", unbounded(ModelConfig { slow_snapshots: true, ..ModelConfig::ci_snapshots() })),
        ("membership", unbounded(ModelConfig::ci_membership())),
        ("slow log", unbounded(ModelConfig { slow_log: true, slow_snapshots: true, ..ModelConfig::ci_snapshots() })),
    ]
}

/// [`configs`], each with the depth to which the tests search it whole.
fn configs_to_search() -> Vec<(&'static str, ModelConfig, usize)> {
    let depths = [8, 6, 7, 6, 7, 7, 7];
    let configs = configs();
    assert_eq!(configs.len(), depths.len(), "a configuration without its depth");
    configs.into_iter().zip(depths).map(|((name, config), depth)| (name, config, depth)).collect()
}

/// Every state reached within `depth` actions (breadth-first, whole
/// states: small bounds only).
fn states_within(m: &RaftModel, depth: usize) -> Vec<RaftState> {
    layers_within(m, depth).into_iter().flatten().collect()
}

/// The states within `depth` actions by the fewest actions that reach
/// them: layer `d` holds those first reached after `d` (breadth-first).
fn layers_within(m: &RaftModel, depth: usize) -> Vec<Vec<RaftState>> {
    let mut seen = HashSet::new();
    let mut layers = Vec::new();
    let mut frontier: Vec<RaftState> = m.init_states();
    for _ in 0..=depth {
        let mut next = Vec::new();
        let mut layer = Vec::new();
        for state in frontier {
            if !m.within_boundary(&state) || !seen.insert(fingerprint(&state)) {
                continue;
            }
            let mut actions = Vec::new();
            m.actions(&state, &mut actions);
            next.extend(actions.into_iter().filter_map(|a| m.next_state(&state, a)));
            layer.push(state);
        }
        layers.push(layer);
        frontier = next;
    }
    layers
}

/// The states of `walks` seeded random walks of `length` actions (the
/// walks' chooser: mostly deliveries, so that they go deep), each walk
/// seeded from one stream drawn from `seed`.
fn walked_states(m: &RaftModel, walks: usize, length: usize, seed: u64) -> Vec<RaftState> {
    let chooser = MostlyDeliver::new(m.clone());
    let mut seeds = Rng::new(seed);
    let mut states = Vec::new();
    for _ in 0..walks {
        let mut walk = chooser.new_state(seeds.next_u64());
        let mut state = m.init_states().remove(0);
        for _ in 0..length {
            let mut actions = Vec::new();
            m.actions(&state, &mut actions);
            if actions.is_empty() {
                break;
            }
            let action = actions.swap_remove(chooser.choose_action(&mut walk, &state, &actions));
            match m.next_state(&state, action) {
                Some(next) if m.within_boundary(&next) => state = next,
                _ => break,
            }
            states.push(state.clone());
        }
    }
    states
}

/// Where the relation is checked: every state within `depth` actions, and
/// the states of 100 random walks of 40 actions (seeded by `seed`), which
/// reach what no small depth does (two clients answered, a leader
/// replaced).
fn sampled_states(m: &RaftModel, depth: usize, seed: u64) -> Vec<RaftState> {
    let mut states = states_within(m, depth);
    states.extend(walked_states(m, 100, 40, seed));
    states
}

/// Pairs the relation calls independent, and the failures, over `states`.
fn commutation(
    m: &RaftModel,
    relation: fn(&RaftModel, &RaftAction, &RaftAction) -> bool,
    states: Vec<RaftState>,
) -> (usize, Vec<String>) {
    let mut pairs = 0;
    let mut failures = Vec::new();
    for state in states {
        let c = commutation_failures(m, relation, &state);
        pairs += c.pairs;
        failures.extend(c.failures);
    }
    (pairs, failures)
}

#[test]
fn independent_actions_commute_in_every_state_of_small_bounds() {
    for (i, (name, config)) in configs().into_iter().enumerate() {
        let m = model(config);
        let seed = 20 + i as u64;
        let (pairs, failures) = commutation(&m, independent, sampled_states(&m, 4, seed));
        println!("{name}: {pairs} independent pairs checked");
        assert!(pairs > 1_000, "{name}: only {pairs} pairs: the check is vacuous");
        assert!(
            failures.is_empty(),
            "{name} (walk seed {seed}): {} pairs do not commute, e.g. {}",
            failures.len(),
            failures[0]
        );
    }
}

/// The relation without its rule on clients: two clients' calls and
/// returns write the history with the next logical time, so their order
/// is part of the state (which call happened before which return).
fn forgets_the_history(m: &RaftModel, a: &RaftAction, b: &RaftAction) -> bool {
    independent(m, a, b) || (actor(a) != actor(b) && !crash_or_recover(a) && !crash_or_recover(b))
}

/// The relation without its rule on the duplicating network, where every
/// delivery overwrites the network's last delivered message (the first
/// version of the relation had this bug; the commutation check found it).
fn forgets_the_last_delivery(m: &RaftModel, a: &RaftAction, b: &RaftAction) -> bool {
    independent(m, a, b)
        || (actor(a) != actor(b)
            && matches!((a, b), (ActorModelAction::Deliver { .. }, ActorModelAction::Deliver { .. })))
}

fn two_clients() -> ModelConfig {
    unbounded(ModelConfig { clients: 2, ..ModelConfig::ci() })
}

fn duplicating() -> ModelConfig {
    unbounded(ModelConfig { network: Delivery::Duplicating, ..ModelConfig::ci() })
}

#[test]
fn the_commutation_check_catches_a_relation_that_forgets_the_history() {
    let m = model(two_clients());
    let (_, failures) = commutation(&m, forgets_the_history, sampled_states(&m, 2, 7));
    let clients = |f: &&String| f.contains("dst: Id(3)") && f.contains("dst: Id(4)");
    assert!(
        failures.iter().filter(clients).any(|f| f.contains("different states")),
        "no two clients' actions found not to commute: {} failures, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}

#[test]
fn the_commutation_check_catches_a_relation_that_forgets_the_last_delivery() {
    let m = model(duplicating());
    let (_, failures) = commutation(&m, forgets_the_last_delivery, states_within(&m, 2));
    assert!(!failures.is_empty(), "no two deliveries found not to commute");
}

#[test]
fn the_commutation_check_catches_a_bound_on_the_whole_network() {
    let m = model(ModelConfig { max_in_flight: 4, ..ModelConfig::ci() });
    let (_, failures) = commutation(&m, independent, states_within(&m, 4));
    assert!(
        failures.iter().any(|f| f.contains("not together")),
        "no two actions that fit the network bound alone and not together"
    );
}

/// Runs our search on `m` to `depth`, reduced by `relation` if given.
fn search(
    m: &RaftModel,
    depth: usize,
    relation: Option<fn(&RaftModel, &RaftAction, &RaftAction) -> bool>,
) -> Search<'_, RaftModel> {
    let mut options = Options::new(depth);
    options.independent = relation;
    let mut search = Search::new(m, options);
    search.run(|_| {});
    assert!(search.stopped().is_none(), "the search stopped early: {:?}", search.stopped());
    search
}

/// How many of the states the full search of `m` visits within `depth`
/// actions the search reduced by `relation` misses, and of how many.
fn missed_states<M: Model + Sync>(m: &M, depth: usize, relation: Independence<M>) -> (usize, usize)
where
    M::State: Hash + Send,
    M::Action: Hash + Clone + PartialEq + Send,
{
    let fingerprints = |relation| {
        let mut search = Search::new(m, Options { independent: relation, ..Options::new(depth) });
        search.run(|_| {});
        assert!(search.stopped().is_none(), "the search stopped early: {:?}", search.stopped());
        search.fingerprints()
    };
    let full = fingerprints(None);
    let reached: HashSet<u64> = fingerprints(Some(relation)).into_iter().collect();
    (full.iter().filter(|f| !reached.contains(f)).count(), full.len())
}

/// The reduced search misses states when its relation is unsound.
fn misses_states(config: ModelConfig, relation: Independence<RaftModel>, depth: usize) {
    let (missed, all) = missed_states(&model(config), depth, relation);
    println!("{missed} of {all} states missed");
    assert!(missed > 0, "an unsound relation missed no state at depth {depth}");
}

/// The Raft model started from a given state (no properties: for
/// comparing the states two searches reach).
struct StartingAt {
    model: RaftModel,
    start: RaftState,
}

impl Model for StartingAt {
    type State = RaftState;
    type Action = RaftAction;
    fn init_states(&self) -> Vec<RaftState> {
        vec![self.start.clone()]
    }
    fn actions(&self, state: &RaftState, actions: &mut Vec<RaftAction>) {
        Model::actions(&self.model, state, actions)
    }
    fn next_state(&self, state: &RaftState, action: RaftAction) -> Option<RaftState> {
        Model::next_state(&self.model, state, action)
    }
    fn within_boundary(&self, state: &RaftState) -> bool {
        Model::within_boundary(&self.model, state)
    }
    /// One property that always holds: a search with none has discovered
    /// all there is to discover at once and stops.
    fn properties(&self) -> Vec<Property<Self>> {
        vec![Property::always("any state", |_, _| true)]
    }
}

/// Two clients' answers race only deep in a schedule (an election, both
/// requests, their replication): the search starts from the first walked
/// state where they do.
#[test]
fn sleep_sets_miss_states_with_a_relation_that_forgets_the_history() {
    let m = model(two_clients());
    let seed = 7;
    let racing = walked_states(&m, 100, 40, seed)
        .into_iter()
        .find(|state| !commutation(&m, forgets_the_history, vec![state.clone()]).1.is_empty())
        .unwrap_or_else(|| panic!("no walk (seed {seed}) reaches two clients' actions racing"));
    let from = StartingAt { model: m, start: racing };
    fn sound(from: &StartingAt, a: &RaftAction, b: &RaftAction) -> bool {
        independent(&from.model, a, b)
    }
    fn forgets(from: &StartingAt, a: &RaftAction, b: &RaftAction) -> bool {
        forgets_the_history(&from.model, a, b)
    }
    assert_eq!(missed_states(&from, 3, sound).0, 0, "the sound relation missed states");
    let (missed, all) = missed_states(&from, 3, forgets);
    println!("{missed} of {all} states missed");
    assert!(missed > 0, "a relation that forgets the history missed no state");
}

#[test]
fn sleep_sets_miss_states_with_a_relation_that_forgets_the_last_delivery() {
    misses_states(duplicating(), forgets_the_last_delivery, 5);
}

/// That two searches (the first without the reduction under test) visited
/// the same states, by fingerprint, and discovered the same properties.
fn assert_same_visits(name: &str, without: &Search<'_, RaftModel>, with: &Search<'_, RaftModel>) {
    let (a, b) = (without.counts().unique, with.counts().unique);
    assert!(without.fingerprints() == with.fingerprints(), "{name}: {a} states without, {b} with");
    let found = |s: &Search<'_, RaftModel>| s.discoveries().keys().copied().collect::<Vec<_>>();
    assert_eq!(found(without), found(with), "{name}: other verdicts");
}

/// Sleep sets prune transitions, never states: the reduced search visits
/// exactly the states of the full one (by fingerprint) and reaches the
/// same verdict for every property, with fewer states generated
/// (`specs/models.md` has the figures at larger bounds).
#[test]
fn sleep_sets_visit_every_state_the_full_search_visits() {
    for (name, config, depth) in configs_to_search() {
        let m = model(config);
        let full = search(&m, depth, None);
        let reduced = search(&m, depth, Some(independent));
        let (f, r) = (full.counts(), reduced.counts());
        println!(
            "{name}, {depth} actions: {} unique; generated {} full, {} reduced",
            f.unique, f.generated, r.generated
        );
        assert!(f.unique > 1_000, "{name}: only {} states", f.unique);
        assert_same_visits(name, &full, &reduced);
        assert!(r.slept > 0, "{name}: nothing put to sleep");
        assert!(r.generated < f.generated, "{name}: nothing pruned");
    }
}

/// The same configurations without clients (symmetry reduction's best
/// case: every renumbering of the servers, not only the rotations), and
/// without the membership model (its servers are not interchangeable).
fn symmetric_configs() -> Vec<(&'static str, ModelConfig, usize)> {
    let servers_only = |config: ModelConfig| ModelConfig { clients: 0, ..config };
    vec![
        ("ci, no clients", servers_only(unbounded(ModelConfig::ci())), 8),
        ("no clients, crash, ordered, term ≤ 1, log ≤ 1", unbounded(ModelConfig::crash_elections()), 9),
        (
            "duplicating, no clients",
            servers_only(unbounded(ModelConfig { network: Delivery::Duplicating, ..ModelConfig::ci() })),
            7,
        ),
        ("lossy, no clients", servers_only(unbounded(ModelConfig { lossy: true, ..ModelConfig::ci() })), 7),
        (
            "2 clients, crash, ordered",
            unbounded(ModelConfig { clients: 2, max_crashes: 1, network: Delivery::Ordered, ..ModelConfig::ci() }),
            6,
        ),
    ]
}

/// Our search with symmetry reduction, and sleep sets if `relation`.
fn symmetric_search(m: &RaftModel, depth: usize, relation: Option<Independence<RaftModel>>) -> Search<'_, RaftModel> {
    let mut options = Options::new(depth);
    options.independent = relation;
    options.symmetry = Some(raftkv_models::symmetry::reduction());
    let mut search = Search::new(m, options);
    search.run(|_| {});
    assert!(search.stopped().is_none(), "the search stopped early: {:?}", search.stopped());
    search
}

/// Sleep sets combine with symmetry reduction when the visited set
/// remembers a state's sleep set in its representative's names (a state
/// of the class reached again compares its own sleep set, renamed the
/// same way): the combined search visits exactly the classes symmetry
/// alone visits (by their representatives' fingerprints), with the same
/// verdicts, on five configurations with and without clients.
///
/// What this cannot show: that the renaming matters. Remembering the sleep
/// sets unrenamed, or naming every action of a renamed state alike (so
/// that revisits look covered far more often than they are), missed no
/// class at these bounds, nor at 11 actions of the second configuration
/// (736,955 classes); without symmetry, ignoring the sleep sets of
/// revisits altogether missed no state of
/// `sleep_sets_visit_every_state_the_full_search_visits` either. The
/// revisit rule is what the argument needs (Godefroid 1996, ch. 5); at
/// these bounds the states it guards are reached by other paths too.
#[test]
fn sleep_sets_with_symmetry_visit_every_class_symmetry_alone_visits() {
    for (name, config, depth) in symmetric_configs() {
        let m = model(config);
        let alone = symmetric_search(&m, depth, None);
        let both = symmetric_search(&m, depth, Some(independent));
        let (a, b) = (alone.counts(), both.counts());
        println!(
            "{name}, {depth} actions: {} classes; generated {} by symmetry alone, {} with sleep sets",
            a.unique, a.generated, b.generated
        );
        assert!(a.unique > 1_000, "{name}: only {} classes", a.unique);
        assert_same_visits(name, &alone, &both);
    }
}

/// Our search on two threads (`Options::threads`, which share the visited
/// set after the search has gone alone to a depth with enough states to
/// hand out) visits exactly the states one thread visits, with the same
/// verdicts: with sleep sets on the seven configurations, without them on
/// one, and with symmetry and sleep sets on one. Iterative deepening on
/// two threads finds the same shortest lengths.
#[test]
fn two_threads_visit_what_one_thread_visits() {
    let run = |m: &RaftModel, depth: usize, options: Options<RaftModel>| {
        let mut search = Search::new(m, Options { max_depth: depth, ..options });
        search.run(|_| {});
        assert!(search.stopped().is_none(), "the search stopped early: {:?}", search.stopped());
        let found: Vec<&str> = search.discoveries().keys().copied().collect();
        (search.fingerprints(), found, search.handed_out())
    };
    let mut cases: Vec<(String, ModelConfig, usize, Options<RaftModel>)> = Vec::new();
    for (name, config, depth) in configs_to_search() {
        let options = Options { independent: Some(independent), ..Options::new(0) };
        cases.push((format!("{name}, sleep sets"), config, depth, options));
    }
    cases.push(("ci, unreduced".into(), unbounded(ModelConfig::ci()), 7, Options::new(0)));
    let (name, config, depth) = symmetric_configs().swap_remove(1);
    let options = Options {
        independent: Some(independent),
        symmetry: Some(raftkv_models::symmetry::reduction()),
        ..Options::new(0)
    };
    cases.push((format!("{name}, sleep sets and symmetry"), config, depth, options));
    for (name, config, depth, options) in cases {
        let m = model(config);
        let one = run(&m, depth, Options { threads: 1, ..options.clone() });
        let two = run(&m, depth, Options { threads: 2, ..options });
        println!("{name}, {depth} actions: {} states, {} handed to the threads", one.0.len(), two.2);
        assert!(two.2 > 0, "{name}: the threads got nothing to do");
        assert!(one.0 == two.0, "{name}: {} states on one thread, {} on two", one.0.len(), two.0.len());
        assert_eq!(one.1, two.1, "{name}: other verdicts");
    }
    let m = model(two_clients());
    let lengths = |threads| {
        let options = Options { independent: Some(independent), threads, ..Options::new(7) };
        let d = deepen(&m, options, None, |_, _| {});
        d.discoveries.iter().map(|(p, path)| (*p, path.len())).collect::<BTreeMap<_, _>>()
    };
    assert_eq!(lengths(1), lengths(2), "deepening on two threads found other lengths");
}

/// Our unreduced search visits the states stateright's breadth-first
/// search does at the same bounds (stateright also generates the states
/// one action beyond the depth, without checking them).
#[test]
fn the_full_search_visits_what_stateright_visits() {
    let config = ModelConfig::ci();
    let depth = 8;
    let m = model(config.clone());
    let ours = search(&m, depth + 1, None);
    let checker = model(config).checker().target_max_depth(stateright_depth(depth)).spawn_bfs().join();
    println!("to {} actions: stateright {}, ours {}", depth + 1, checker.unique_state_count(), ours.counts().unique);
    assert_eq!(ours.counts().unique as usize, checker.unique_state_count());
}

/// Two states that differ only in which actor's timer set holds the
/// heartbeat timer: published stateright 0.31 hashed them alike (a set's
/// elements without its length, so adjacent actors' timer sets ran
/// together: `[{Heartbeat}, {Election}]` like `[{}, {Heartbeat,
/// Election}]`), and every search kept one of the two, missing what only
/// the other leads to (here: a crash). Our patched copy
/// (`models/vendor/stateright`) tells them apart; this fails if the
/// published crate comes back.
#[test]
fn stateright_tells_apart_states_that_differ_only_in_whose_timer_is_set() {
    let m = model(unbounded(ModelConfig::crash_elections()));
    let end = |schedule: &str| replay(&m, schedule).unwrap().into_vec().pop().unwrap().0;
    let a = end("T0 D01 D10 D01 D10 D01 D10 T0 H1 H2");
    let b = end("T0 D01 D10 D01 H0 D10 D01 D10 T0 H2");
    assert!(a != b);
    let crash = ActorModelAction::Crash(1.into());
    let (after_a, after_b) = (m.next_state(&a, crash.clone()).unwrap(), m.next_state(&b, crash).unwrap());
    assert_ne!(fingerprint(&after_a), fingerprint(&after_b));
    assert_ne!(fingerprint(&a), fingerprint(&b), "distinct states merged: is stateright unpatched?");
}

/// The per-sender bound counts messages with stateright's
/// `Network::iter_all`, which our patched copy makes end on an ordered
/// network (published 0.31 returned a channel's first message for ever).
#[test]
fn iter_all_lists_each_message_of_an_ordered_network_once() {
    let m = model(ModelConfig { network: Delivery::Ordered, ..ModelConfig::ci() });
    let state = replay(&m, "T0 D01 D10 D01 D10").unwrap().into_vec().pop().unwrap().0;
    let listed = state.network.iter_all().take(1_000).count();
    assert!(state.network.len() > 1);
    assert_eq!(listed, state.network.len());
}

/// For each property of `m`, the fewest actions to its discovery (a state
/// that breaks an "always" property or satisfies a "sometimes" one), by
/// breadth-first search to `depth` actions over whole states.
fn shortest_discoveries(m: &RaftModel, depth: usize) -> BTreeMap<&'static str, usize> {
    let properties = m.properties();
    let mut found = BTreeMap::new();
    for (layer, states) in layers_within(m, depth).iter().enumerate() {
        for state in states {
            for p in &properties {
                let holds = (p.condition)(m, state);
                let discovered = if matches!(p.expectation, Expectation::Always) { !holds } else { holds };
                if discovered {
                    found.entry(p.name).or_insert(layer);
                }
            }
        }
    }
    found
}

/// Some live server leads: a property that a model without bugs breaks on
/// purpose, for an "always" violation that small bounds reach.
fn no_leader(_: &RaftModel, state: &RaftState) -> bool {
    !state.actor_states.iter().enumerate().any(|(i, s)| {
        !state.crashed[i] && matches!(&**s, ActorState::Server { server, .. } if server.node().is_leader())
    })
}

/// Some server has reached term 2: a "sometimes" property deeper than the
/// first election.
fn second_term(_: &RaftModel, state: &RaftState) -> bool {
    state.actor_states.iter().any(|s| matches!(&**s, ActorState::Server { server, .. } if server.node().term() >= 2))
}

/// Iterative deepening with sleep sets finds, for every property, a path
/// exactly as long as breadth-first search's (so a shortest one), and
/// each path replays to a state that discovers its property. An "always"
/// property broken on purpose (`no_leader`) stops it at the first
/// violation, with a shortest counterexample. The plain depth-first
/// search's paths are printed beside: within the same bound, longer.
#[test]
fn iterative_deepening_finds_paths_as_short_as_breadth_first_search() {
    let cases = [
        ("ci", unbounded(ModelConfig::ci()), 7),
        (
            "2 clients, crash, ordered",
            unbounded(ModelConfig { clients: 2, max_crashes: 1, network: Delivery::Ordered, ..ModelConfig::ci() }),
            7,
        ),
    ];
    for (name, config, depth) in cases {
        let m = model(config).property(Expectation::Always, "no leader", no_leader).property(
            Expectation::Sometimes,
            "second term",
            second_term,
        );
        let shortest = shortest_discoveries(&m, depth);
        let reached = ["no leader", "leader elected", "second term"].iter().all(|p| shortest.contains_key(p));
        assert!(reached, "{name}: {shortest:?}");
        for first_failure in [false, true] {
            let mut options = Options::new(depth);
            options.independent = Some(independent as Independence<RaftModel>);
            options.first_failure = first_failure;
            let deepening = deepen(&m, options.clone(), None, |_, _| {});
            let lengths: BTreeMap<&str, usize> =
                deepening.discoveries.iter().map(|(p, path)| (*p, path.len())).collect();
            let mut dfs = Search::new(&m, options);
            dfs.run(|_| {});
            let dfs_lengths: BTreeMap<&str, usize> =
                dfs.discoveries().iter().map(|(p, path)| (*p, path.len())).collect();
            println!("{name}, first failure {first_failure}: breadth-first {shortest:?}, deepening {lengths:?}, depth-first {dfs_lengths:?}");
            if first_failure {
                assert_eq!(deepening.stopped, Some(Stopped::FirstFailure), "{name}");
                assert_eq!(lengths.get("no leader"), shortest.get("no leader"), "{name}: the first violation");
                assert!(lengths.iter().all(|(p, n)| shortest.get(p) == Some(n)), "{name}: {lengths:?}");
            } else {
                assert_eq!(deepening.completed, depth, "{name}");
                assert_eq!(lengths, shortest, "{name}");
            }
            for (property, path) in &deepening.discoveries {
                let mut state = m.init_states().remove(0);
                for action in path {
                    state = m.next_state(&state, action.clone()).expect("the path replays");
                }
                let p = m.properties().into_iter().find(|p| p.name == *property).unwrap();
                let holds = (p.condition)(&m, &state);
                assert_eq!(holds, matches!(p.expectation, Expectation::Sometimes), "{name}: {property}'s path");
            }
        }
    }
}

/// Small bounds with budgets of timeouts and retries, and a crash: the
/// states are finitely many though runs are not (a server may crash and
/// recover again and again).
fn budgeted() -> ModelConfig {
    ModelConfig {
        servers: 2,
        clients: 1,
        max_crashes: 1,
        clients_crash: false,
        network: Delivery::Ordered,
        max_term: 1,
        max_log: 2,
        max_timeouts: vec![1],
        max_retries: Some(1),
        ..unbounded(ModelConfig::ci())
    }
}

/// Budgets of timeouts and retries (`ModelConfig::max_timeouts`,
/// `max_retries`) leave finitely many states, so our search runs without
/// a depth bound (`search::UNBOUNDED`), and then does not explore a state
/// again for being reached by a shorter path (no visit was cut short).
/// Without a bound, with and without sleep sets, it visits exactly the
/// states a depth-bounded search visits within the deepest run it took
/// (every state it visited lies within that many actions, and the bounded
/// search is the one the other tests hold to stateright's): every
/// reachable state, crash-and-recover cycles included.
#[test]
fn with_budgets_a_search_without_a_depth_bound_visits_every_reachable_state() {
    assert!(budgeted().has_finitely_many_states());
    let m = model(budgeted());
    let full = search(&m, UNBOUNDED, None);
    let reduced = search(&m, UNBOUNDED, Some(independent));
    let deepest = full.counts().max_depth;
    let bounded = search(&m, deepest, Some(independent));
    let (f, r, b) = (full.counts(), reduced.counts(), bounded.counts());
    println!(
        "no depth bound: {} states, runs up to {deepest} actions; generated {} full, {} with sleep sets; {} by the \
         search bounded at {deepest}",
        f.unique, f.generated, r.generated, b.generated
    );
    assert!(f.unique > 1_000, "only {} states", f.unique);
    assert_same_visits("unbounded, with sleep sets", &full, &reduced);
    assert_same_visits("bounded at the deepest run", &bounded, &full);
    assert!(r.generated < f.generated, "nothing pruned");
}

/// The budgets hold: along walks of the budgeted model (and of one with
/// two timeouts a server, none of them a heartbeat, and of one whose
/// second server never times out) no server's election and heartbeat
/// timers fire more often than its budget in `max_timeouts`, nor its
/// heartbeats more than `max_heartbeats`, no client retries more than
/// `max_retries`, and a spent timer stays set and is ignored (the model
/// offers no successor for it).
#[test]
fn a_spent_budget_leaves_the_timer_set_and_ignored() {
    let no_heartbeats = ModelConfig { max_timeouts: vec![2], max_heartbeats: Some(0), ..budgeted() };
    let uneven = ModelConfig { max_timeouts: vec![2, 0], ..budgeted() };
    for config in [budgeted(), no_heartbeats, uneven] {
        let m = model(config.clone());
        let max = |budget: Option<u8>| budget.unwrap_or(u8::MAX);
        let (mut spent_servers, mut spent_clients) = (0, 0);
        for state in walked_states(&m, 200, 60, 5) {
            for (i, actor) in state.actor_states.iter().enumerate() {
                let spent: Vec<ModelTimer> = match &**actor {
                    ActorState::Server { durable, .. } => {
                        let budget = config.max_timeouts_of(i as u8);
                        assert_eq!(durable.max_timeouts, budget, "server {i}'s budget");
                        assert!(durable.timeouts <= max(budget), "server {i}: {durable:?}");
                        assert!(durable.heartbeats <= max(config.max_heartbeats), "server {i}: {durable:?}");
                        let all_spent = durable.timeouts == max(budget);
                        let heartbeats_spent = all_spent || durable.heartbeats == max(config.max_heartbeats);
                        let mut spent = Vec::new();
                        spent.extend(all_spent.then_some(ModelTimer::Election));
                        spent.extend(heartbeats_spent.then_some(ModelTimer::Heartbeat));
                        spent
                    }
                    ActorState::Client(client) => {
                        assert!(client.retries <= max(config.max_retries), "client {i} retried {}", client.retries);
                        (client.retries == max(config.max_retries)).then_some(ModelTimer::Retry).into_iter().collect()
                    }
                    ActorState::Failed { why } => panic!("server {i} failed: {why}"),
                };
                for timer in spent.iter().filter(|t| state.timers_set[i].iter().any(|set| set == *t)) {
                    let action = ActorModelAction::Timeout(i.into(), timer.clone());
                    assert!(m.next_state(&state, action).is_none(), "actor {i}'s spent {timer:?} fired");
                    if i < usize::from(config.servers) {
                        spent_servers += 1;
                    } else {
                        spent_clients += 1;
                    }
                }
            }
        }
        assert!(spent_servers > 0 && spent_clients > 0, "no spent timer met ({spent_servers}, {spent_clients})");
    }
}

/// What the properties read of a state: each server's state and whether
/// it is down, and the recorded history (calls, returns, leaders).
fn what_properties_read(state: &RaftState) -> u64 {
    let servers = raftkv_models::server_count(state);
    fingerprint(&(&state.actor_states[..servers], &state.crashed[..servers], &state.history))
}

/// Bounds where the search without a depth bound finishes with and without
/// the persistent-set rule: two clients and a server crash (clients'
/// refusals abound), on both networks; with a retry, so that the rule
/// must see a client's timer.
fn persistent_configs() -> Vec<(&'static str, ModelConfig)> {
    let two_clients = ModelConfig { clients: 2, max_retries: Some(0), ..budgeted() };
    vec![
        ("2 servers, 2 clients, a crash, ordered", two_clients.clone()),
        ("the same, unordered", ModelConfig { network: Delivery::Unordered, ..two_clients.clone() }),
        (
            "the same, ordered, one retry each, one timeout (server 0)",
            ModelConfig { max_retries: Some(1), max_timeouts: vec![1, 0], ..two_clients.clone() },
        ),
        (
            "3 servers, 2 clients, a crash, ordered, term ≤ 1, log ≤ 1, one timeout (server 0)",
            ModelConfig { servers: 3, max_log: 1, max_timeouts: vec![1, 0], ..two_clients },
        ),
    ]
}

/// The persistent-set rule (`independence::lone_refusal`: a refusal on
/// its way to a client that waits for nothing else is delivered alone)
/// skips states, so the check is on what the properties read: the set of
/// (servers, their crashed flags, history) over the visited states is the
/// same with and without it, and so is every property's verdict, while
/// fewer states are visited. With symmetry reduction too, the same
/// verdicts. A rule that takes any response alone (an answer too, whose
/// return is ordered against the other client's events) misses some of
/// what the properties read, and the comparison says so.
#[test]
fn lone_refusals_reach_everything_the_properties_read() {
    fn run(
        m: &RaftModel,
        persistent: Option<raftkv_models::search::Persistent<RaftModel>>,
        symmetry: bool,
    ) -> Search<'_, RaftModel> {
        let options = Options {
            independent: Some(independent),
            persistent,
            project: Some(what_properties_read),
            symmetry: symmetry.then(raftkv_models::symmetry::reduction),
            ..Options::new(UNBOUNDED)
        };
        let mut search = Search::new(m, options);
        search.run(|_| {});
        assert!(search.stopped().is_none(), "the search stopped early: {:?}", search.stopped());
        search
    }
    let found = |s: &Search<'_, RaftModel>| s.discoveries().keys().copied().collect::<Vec<_>>();
    let mut careless_caught = 0;
    let configs = persistent_configs();
    for (name, config) in &configs {
        assert!(config.has_finitely_many_states(), "{name}");
        let m = model(config.clone());
        let full = run(&m, None, false);
        let reduced = run(&m, Some(raftkv_models::independence::lone_refusal), false);
        let (f, r) = (full.counts(), reduced.counts());
        println!("{name}: {} states, {} with lone refusals ({} actions pruned)", f.unique, r.unique, r.pruned);
        assert!(f.unique > 1_000, "{name}: only {} states", f.unique);
        assert!(r.pruned > 0 && r.unique < f.unique, "{name}: nothing pruned");
        assert_eq!(found(&full), found(&reduced), "{name}: other verdicts");
        let (fp, rp) = (full.projections(), reduced.projections());
        assert!(
            fp == rp,
            "{name}: {} of {} projections missed, {} new",
            fp.difference(&rp).count(),
            fp.len(),
            rp.difference(&fp).count()
        );
        let symmetric = run(&m, Some(raftkv_models::independence::lone_refusal), true);
        assert_eq!(found(&full), found(&symmetric), "{name}, with symmetry: other verdicts");

        let careless = run(&m, Some(raftkv_models::independence::careless_lone_response), false);
        let missed = fp.difference(&careless.projections()).count();
        println!("{name}: a rule that takes any response alone misses {missed} of {} projections", fp.len());
        careless_caught += usize::from(missed > 0 || found(&careless) != found(&full));
    }
    assert!(
        careless_caught > 0,
        "a rule that takes answers alone went unnoticed on all {} configurations",
        configs.len()
    );
}
