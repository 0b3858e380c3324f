//! Coverage-guided search, for schedules too deep for exhaustive search and
//! too unlikely for plain random walks, such as Raft Figure 8 (bug (a)).
//!
//! Exhaustive search keeps every state it meets; a random walk keeps none.
//! This search keeps one state per *cell*: the servers' Raft state (role,
//! term, vote, the terms of the log entries, commit and apply indexes,
//! whether crashed) and the clients' progress, with the network left out.
//! It picks a kept state, walks a few random actions from it, and keeps
//! every state of the walk whose cell is new. A deep schedule is a chain of
//! new cells (a leader of term 1 with an uncommitted entry, then another
//! leader of term 2, ...); each link is a short walk from the last, so the
//! search climbs the chain without having to guess it in one walk. This is
//! the idea of coverage-guided fuzzing (the simulator's `cluster` target
//! finds bug (a) the same way) and of Go-Explore, with the model's own
//! actions and properties.
//!
//! Every state comes from real model steps, so a violation is a real
//! counterexample; its path is the kept state's path plus the walk. The
//! search is seeded and single-threaded: the same seed gives the same run.

use crate::actors::ActorState;
use crate::walks::weighted_index;
use crate::{RaftAction as Action, RaftModel, RaftState};
use raftkv::rng::Rng;
use stateright::actor::ActorModelAction;
use stateright::{Expectation, Model, Property};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

/// The search's knobs.
#[derive(Clone, Copy, Debug)]
pub struct Guided {
    pub seed: u64,
    /// Stop after this many steps (states visited).
    pub max_states: u64,
    /// Actions per walk from a kept state.
    pub walk_length: usize,
    /// At most this many kept states (each holds a whole model state, a
    /// few kilobytes); past it, new cells are counted but not kept.
    pub max_kept: usize,
    /// How much more often a message is delivered than a timer fires (or
    /// an actor crashes or recovers) when both are possible.
    pub deliver_weight: u64,
}

impl Default for Guided {
    fn default() -> Guided {
        Guided { seed: 1, max_states: 10_000_000, walk_length: 12, deliver_weight: 3, max_kept: 500_000 }
    }
}

/// What a search found.
#[derive(Debug)]
pub struct Report {
    /// States visited (one per step).
    pub states: u64,
    /// Distinct cells seen (one state kept for each, up to `max_kept`).
    pub cells: usize,
    /// The first "always" property broken, with the actions from the
    /// initial state to the first state that breaks it.
    pub violation: Option<(&'static str, Vec<Action>)>,
    /// The "sometimes" properties seen to hold in some visited state.
    pub reached: Vec<&'static str>,
}

struct Kept {
    /// The kept state this one was reached from, and the actions since.
    parent: Option<usize>,
    steps: Vec<Action>,
    state: RaftState,
    /// Times a walk started here: less explored states are picked first.
    picked: u32,
}

impl Guided {
    /// Searches until the first violation or `max_states`; calls
    /// `progress(states, cells)` every million states.
    pub fn run(&self, model: &RaftModel, mut progress: impl FnMut(u64, usize)) -> Report {
        let properties = model.properties();
        let mut rng = Rng::new(self.seed);
        let init = model.init_states().remove(0);
        let mut cells = HashSet::from([cell(&init)]);
        let mut kept = vec![Kept { parent: None, steps: Vec::new(), state: init, picked: 0 }];
        let mut reached = vec![false; properties.len()];
        if let Some(broken) = judge(model, &properties, &kept[0].state, &mut reached) {
            return Report {
                states: 0,
                cells: 1,
                violation: Some((broken, Vec::new())),
                reached: names(&properties, &reached),
            };
        }
        let mut states = 0u64;
        let mut actions = Vec::new();
        while states < self.max_states {
            let from = pick(&mut rng, &kept);
            kept[from].picked += 1;
            let (mut parent, mut state) = (from, kept[from].state.clone());
            let mut steps = Vec::new();
            for _ in 0..self.walk_length {
                if states == self.max_states {
                    break;
                }
                actions.clear();
                model.actions(&state, &mut actions);
                let Some((action, next)) = self.step(model, &mut rng, &state, &mut actions) else { break };
                states += 1;
                if states.is_multiple_of(1_000_000) {
                    progress(states, cells.len());
                }
                steps.push(action);
                state = next;
                if let Some(broken) = judge(model, &properties, &state, &mut reached) {
                    let mut path = path_to(&kept, parent);
                    path.extend(steps);
                    return Report {
                        states,
                        cells: cells.len(),
                        violation: Some((broken, path)),
                        reached: names(&properties, &reached),
                    };
                }
                if cells.insert(cell(&state)) && kept.len() < self.max_kept {
                    kept.push(Kept {
                        parent: Some(parent),
                        steps: std::mem::take(&mut steps),
                        state: state.clone(),
                        picked: 0,
                    });
                    parent = kept.len() - 1;
                }
            }
        }
        Report { states, cells: cells.len(), violation: None, reached: names(&properties, &reached) }
    }

    /// A random possible action and its next state within the bounds, or
    /// `None` when every action is ignored or leaves the bounds.
    fn step(
        &self,
        model: &RaftModel,
        rng: &mut Rng,
        state: &RaftState,
        actions: &mut Vec<Action>,
    ) -> Option<(Action, RaftState)> {
        while !actions.is_empty() {
            let weights: Vec<u64> = actions.iter().map(|a| self.weight(a)).collect();
            let action = actions.swap_remove(weighted_index(rng, &weights));
            if let Some(next) = model.next_state(state, action.clone()) {
                if model.within_boundary(&next) {
                    return Some((action, next));
                }
            }
        }
        None
    }

    fn weight(&self, action: &Action) -> u64 {
        match action {
            ActorModelAction::Deliver { .. } => self.deliver_weight,
            _ => 1,
        }
    }
}

/// Of two kept states drawn at random, the one walked from less often.
fn pick(rng: &mut Rng, kept: &[Kept]) -> usize {
    let a = rng.range(0, kept.len() as u64) as usize;
    let b = rng.range(0, kept.len() as u64) as usize;
    if kept[b].picked < kept[a].picked {
        b
    } else {
        a
    }
}

fn path_to(kept: &[Kept], mut at: usize) -> Vec<Action> {
    let mut chunks = Vec::new();
    loop {
        chunks.push(&kept[at].steps);
        match kept[at].parent {
            Some(parent) => at = parent,
            None => break,
        }
    }
    chunks.into_iter().rev().flatten().cloned().collect()
}

/// The first "always" property `state` breaks, if any; marks the
/// "sometimes" properties it satisfies in `reached`.
fn judge(
    model: &RaftModel,
    properties: &[Property<RaftModel>],
    state: &RaftState,
    reached: &mut [bool],
) -> Option<&'static str> {
    for (i, p) in properties.iter().enumerate() {
        let holds = (p.condition)(model, state);
        match p.expectation {
            Expectation::Always if !holds => return Some(p.name),
            Expectation::Sometimes if holds => reached[i] = true,
            _ => {}
        }
    }
    None
}

fn names(properties: &[Property<RaftModel>], reached: &[bool]) -> Vec<&'static str> {
    properties.iter().zip(reached).filter(|(_, &r)| r).map(|(p, _)| p.name).collect()
}

/// A state's cell: everything but the network, hashed. (Two cells that
/// collide only cost coverage: the second is not kept.)
fn cell(state: &RaftState) -> u64 {
    let mut h = DefaultHasher::new();
    for (actor, crashed) in state.actor_states.iter().zip(&state.crashed) {
        crashed.hash(&mut h);
        match &**actor {
            ActorState::Server { server, .. } => {
                let node = server.node();
                (node.role(), node.hard_state(), node.commit_index(), server.kv().applied_index()).hash(&mut h);
                node.log().base().hash(&mut h);
                for entry in node.log().entries() {
                    entry.term.hash(&mut h);
                }
            }
            ActorState::Failed { why } => why.hash(&mut h),
            ActorState::Client(client) => (client.next, client.clerk.pending().is_some()).hash(&mut h),
        }
    }
    for op in &state.history.ops {
        (op.ret.is_some(), &op.output).hash(&mut h);
    }
    h.finish()
}
