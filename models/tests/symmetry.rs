//! Symmetry reduction (`raftkv_models::symmetry`) is sound only if the
//! model is symmetric: renumbering the servers of a state and then taking
//! a step must give the same states as taking the step and then
//! renumbering. These tests check that on thousands of reachable states,
//! show that the check catches a renumbering that misses part of the state,
//! and compare a reduced search with a full one.

use raftkv_models::symmetry::{renumber, representative};
use raftkv_models::{model, Delivery, ModelConfig, RaftModel, RaftState};
use stateright::{Checker, Model};
use std::collections::{HashSet, VecDeque};

/// The six renumberings of three servers.
const PERMUTATIONS: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

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
    renumbered: impl Fn(&RaftState, &[usize]) -> RaftState,
) -> Option<String> {
    for (i, state) in states.iter().enumerate() {
        let next: Vec<RaftState> = m.next_states(state);
        for perm in PERMUTATIONS {
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
    for network in [Delivery::Unordered, Delivery::Ordered, Delivery::Duplicating] {
        let config = ModelConfig { clients: 0, max_crashes: 1, lossy: true, network, ..ModelConfig::ci() };
        let m = model(config.clone());
        let states = reachable(&m, 7, 3_000);
        assert!(states.len() > 1_000, "too few states to mean anything: {}", states.len());
        if let Some(why) = asymmetry(&m, &states, renumber) {
            panic!("{config:?}: the model is not symmetric under renumbering: {why}");
        }
        // The check must be able to fail: a renumbering that forgets the
        // messages in flight is caught.
        let forgets_network =
            |s: &RaftState, perm: &[usize]| RaftState { network: s.network.clone(), ..renumber(s, perm) };
        assert!(asymmetry(&m, &states, forgets_network).is_some(), "a broken renumbering went unnoticed");
        // And the representative is the same for a whole class.
        for s in &states[..200] {
            for perm in PERMUTATIONS {
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
