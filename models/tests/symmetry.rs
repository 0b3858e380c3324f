//! Symmetry reduction (`raftkv_models::symmetry`) is sound only if the
//! model is symmetric: renumbering the servers of a state and then taking
//! a step must give the same states as taking the step and then
//! renumbering. These tests check that on thousands of reachable states,
//! show that the check catches a renumbering that misses part of the state,
//! and compare a reduced search with a full one.

use raftkv_models::actors::{ActorState, Durable, DurableServer};
use raftkv_models::search::{fingerprint, Options, Search};
use raftkv_models::symmetry::{renumber, representative};
use raftkv_models::{model, Delivery, ModelConfig, RaftModel, RaftState};
use stateright::{Checker, Model};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// The six renumberings of three servers.
const PERMUTATIONS: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

/// The three of them that keep a clerk's try order (0, 1, 2, 0, …).
const ROTATIONS: [[usize; 3]; 3] = [[0, 1, 2], [1, 2, 0], [2, 0, 1]];

/// Server `i`'s budget of timeouts, as its durable record holds it.
fn budget(state: &RaftState, i: usize) -> Option<u8> {
    match &*state.actor_states[i] {
        ActorState::Server { durable, .. } => durable.max_timeouts,
        _ => None,
    }
}

/// Gives server `i` the budget `max_timeouts`, in its state and its storage.
fn set_budget(state: &mut RaftState, i: usize, max_timeouts: Option<u8>) {
    let with_budget = |d: &Arc<DurableServer>| Arc::new(DurableServer { max_timeouts, ..(**d).clone() });
    let mut server = (*state.actor_states[i]).clone();
    if let ActorState::Server { durable, .. } = &mut server {
        *durable = with_budget(durable);
        state.actor_states[i] = Arc::new(server);
    }
    if let Some(Durable::Server(d)) = &state.actor_storages[i] {
        state.actor_storages[i] = Some(Durable::Server(with_budget(d)));
    }
}

/// Up to `limit` distinct states within `depth` actions of the start.
fn reachable(m: &RaftModel, depth: usize, limit: usize) -> Vec<RaftState> {
    let mut seen = HashSet::new();
    let mut queue: VecDeque<(RaftState, usize)> = m.init_states().into_iter().map(|s| (s, 0)).collect();
    let mut out = Vec::new();
    while let Some((state, d)) = queue.pop_front() {
        if out.len() >= limit {
            break;
        }
        if !seen.insert(state.clone()) {
            continue;
        }
        if d < depth {
            for next in m.next_states(&state) {
                if m.within_boundary(&next) {
                    queue.push_back((next, d + 1));
                }
            }
        }
        out.push(state);
    }
    out
}

/// The first state and renumbering at which `renumbered` does not commute
/// with the model's steps or changes a property's verdict, if any.
fn asymmetry(
    m: &RaftModel,
    states: &[RaftState],
    renumberings: &[[usize; 3]],
    renumbered: impl Fn(&RaftState, &[usize]) -> RaftState,
) -> Option<String> {
    for (i, state) in states.iter().enumerate() {
        let next: Vec<RaftState> = m.next_states(state);
        for &perm in renumberings {
            let moved = renumbered(state, &perm);
            for p in m.properties() {
                if (p.condition)(m, state) != (p.condition)(m, &moved) {
                    return Some(format!("state {i}, renumbering {perm:?}: {} differs", p.name));
                }
            }
            let step_then_move: HashSet<RaftState> = next.iter().map(|n| renumbered(n, &perm)).collect();
            let move_then_step: HashSet<RaftState> = m.next_states(&moved).into_iter().collect();
            if step_then_move != move_then_step {
                return Some(format!("state {i}, renumbering {perm:?}: successors differ"));
            }
        }
    }
    None
}

#[test]
fn renumbering_servers_commutes_with_every_step() {
    // The last two with budgets of timeouts, kept and counted in each
    // server's durable record (which renumbering moves with the server):
    // one each, and budgets that differ (server 2 never times out).
    let networks = [
        (Delivery::Unordered, vec![]),
        (Delivery::Ordered, vec![]),
        (Delivery::Duplicating, vec![]),
        (Delivery::Ordered, vec![1]),
        (Delivery::Ordered, vec![2, 1, 0]),
    ];
    for (network, max_timeouts) in networks {
        let uneven = max_timeouts.windows(2).any(|w| w[0] != w[1]);
        let config =
            ModelConfig { clients: 0, max_crashes: 1, lossy: true, network, max_timeouts, ..ModelConfig::ci() };
        let m = model(config.clone());
        let states = reachable(&m, 7, 3_000);
        assert!(states.len() > 1_000, "too few states to mean anything: {}", states.len());
        if let Some(why) = asymmetry(&m, &states, &PERMUTATIONS, renumber) {
            panic!("{config:?}: the model is not symmetric under renumbering: {why}");
        }
        // The check must be able to fail: a renumbering that forgets the
        // messages in flight is caught.
        let forgets_network =
            |s: &RaftState, perm: &[usize]| RaftState { network: s.network.clone(), ..renumber(s, perm) };
        assert!(
            asymmetry(&m, &states, &PERMUTATIONS, forgets_network).is_some(),
            "a broken renumbering went unnoticed"
        );
        // Budgets that differ are symmetric only because each travels with
        // its server: a renumbering that leaves them where they were (as a
        // budget kept by the actor, not the state, would) is caught.
        if uneven {
            let budget_stays = |s: &RaftState, perm: &[usize]| {
                let mut moved = renumber(s, perm);
                for i in 0..3 {
                    set_budget(&mut moved, i, budget(s, i));
                }
                moved
            };
            let why = asymmetry(&m, &states, &PERMUTATIONS, budget_stays);
            assert!(why.is_some(), "budgets left in place went unnoticed");
            println!("budgets left in place: {}", why.unwrap());
        }
        // And the representative is the same for a whole class.
        for s in &states[..200] {
            for perm in PERMUTATIONS {
                assert!(representative(&renumber(s, &perm)) == representative(s), "representative is not canonical");
            }
        }
    }
}

/// With clients, the model is symmetric under the rotations of the servers
/// (which keep a clerk's try order) and not under the other renumberings:
/// swapping two servers sends a clerk that times out somewhere else than
/// the swapped cluster expects. The check finds that, which is why
/// `representative` uses only rotations when there are clients. Two
/// clients that may crash, a server crash, a lossy network, each kind.
#[test]
fn with_clients_rotating_the_servers_commutes_with_every_step_and_swapping_two_does_not() {
    for network in [Delivery::Unordered, Delivery::Ordered, Delivery::Duplicating] {
        let config = ModelConfig { clients: 2, max_crashes: 1, lossy: true, network, ..ModelConfig::ci() };
        let m = model(config.clone());
        let states = reachable(&m, 7, 3_000);
        assert!(states.len() > 1_000, "too few states to mean anything: {}", states.len());
        if let Some(why) = asymmetry(&m, &states, &ROTATIONS, renumber) {
            panic!("{config:?}: the model is not symmetric under rotation: {why}");
        }
        let swap = asymmetry(&m, &states, &[[0, 2, 1]], renumber);
        assert!(swap.is_some(), "{network:?}: swapping two servers looked symmetric with clients");
        println!("{network:?}, swapping servers 1 and 2: {}", swap.unwrap());
        for s in &states[..200] {
            for perm in ROTATIONS {
                assert!(representative(&renumber(s, &perm)) == representative(s), "representative is not canonical");
            }
        }
    }
}

/// A complete depth-first search with and without the reduction: the same
/// verdicts, about six times fewer states (3! renumberings of 3 servers).
#[test]
fn symmetry_reduction_finds_the_same_with_a_sixth_of_the_states() {
    let config = ModelConfig {
        clients: 0,
        network: Delivery::Ordered,
        max_term: 1,
        max_log: 1,
        max_in_flight: 3,
        ..ModelConfig::ci()
    };
    let full = model(config.clone()).checker().threads(2).spawn_dfs().join();
    let reduced = model(config).checker().threads(2).symmetry_fn(representative).spawn_dfs().join();
    println!("full: {} unique states; reduced: {}", full.unique_state_count(), reduced.unique_state_count());
    for p in full.model().properties() {
        assert_eq!(full.discovery(p.name).is_some(), reduced.discovery(p.name).is_some(), "{} differs", p.name);
    }
    assert!(full.discovery("leader elected").is_some());
    assert!(full.discovery("election safety").is_none());
    assert!(reduced.unique_state_count() * 5 < full.unique_state_count());
}

/// Our own exhaustive search (`raftkv_models::search`, `check --reduce off
/// --symmetry`) with symmetry reduction visits exactly one state of each
/// class of the states within its depth: the set of representatives of
/// every state a breadth-first search over whole states reaches. Without
/// clients that is about a sixth of them; with a client, almost all of
/// them, though the rotations are a symmetry: the clerk's first guess
/// (server 0) is not symmetric, so few reachable states have a rotated
/// twin that is reachable too.
#[test]
fn our_search_with_symmetry_visits_one_state_of_each_class() {
    let cases = [
        ("no clients, a crash, ordered", ModelConfig::crash_elections(), 7),
        ("one client, unordered", ModelConfig::ci(), 6),
    ];
    for (name, config, depth) in cases {
        let config = ModelConfig { max_in_flight: usize::MAX, ..config };
        let m = model(config.clone());
        let all = reachable(&m, depth, usize::MAX);
        let classes: HashSet<u64> = all.iter().map(|s| fingerprint(&representative(s))).collect();
        let mut options = Options::new(depth);
        options.symmetry = Some(raftkv_models::symmetry::reduction());
        let mut reduced = Search::new(&m, options);
        reduced.run(|_| {});
        let mut full = Search::new(&m, Options::new(depth));
        full.run(|_| {});
        println!(
            "{name}, {depth} actions: {} states, {} classes, {} visited",
            all.len(),
            classes.len(),
            reduced.counts().unique
        );
        assert_eq!(reduced.fingerprints().into_iter().collect::<HashSet<u64>>(), classes, "{name}");
        assert_eq!(full.counts().unique as usize, all.len(), "{name}: the full search");
        let found = |s: &Search<RaftModel>| s.discoveries().keys().copied().collect::<Vec<_>>();
        assert_eq!(found(&reduced), found(&full), "{name}: verdicts");
        if config.clients == 0 {
            assert!(classes.len() * 5 < all.len(), "{name}: expected about 6 states per class");
        }
    }
}
