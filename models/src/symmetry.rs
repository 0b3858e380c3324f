//! Symmetry reduction: renumbering the servers of a cluster gives an
//! equivalent cluster (the same configuration, the same timers, no
//! randomness), so a depth-first search need only visit one state of each
//! class. `raftkv-models check --dfs --symmetry` uses it.
//!
//! Which renumberings: without clients, every permutation of the servers
//! (6 for three). With clients, only the **rotations**, `i ↦ i + k (mod
//! n)` (3 for three servers). A clerk tries servers in a fixed order: after
//! a timeout, or a refusal that names no leader, it goes from server `i` to
//! `i + 1 (mod n)`. A rotation σ keeps that order, σ(i) + 1 = σ(i + 1), so
//! a renumbered clerk goes where the renumbered cluster expects; a
//! transposition does not (swap servers 1 and 2: a clerk at server 0 that
//! times out goes to server 1, which in the swapped cluster holds what
//! was server 2), and `models/tests/symmetry.rs` shows the check failing
//! for one. The clerk's first guess (server 0) is not
//! symmetric, and need not be: the reduction needs each step to commute
//! with each renumbering (then the representatives of the successors of a
//! state are those of its representative's successors), not the initial
//! state to be invariant.
//!
//! The representative is the renumbering with the smallest hash, which is
//! the same for every state of a class. The renumbering itself is the
//! core's own ([`raftkv::kv::KvServer::renumbered`],
//! [`raftkv::clerk::Clerk::renumbered`]), so every node id a server or a
//! clerk holds moves with it.

use crate::actors::{ActorState, ClientState, Durable, DurableServer, ModelMsg};
use crate::history::ModelHistory;
use crate::RaftState;
use raftkv::kv::{Response, ServiceError};
use raftkv::raft::{Envelope, NodeId};
use stateright::actor::Id;
use stateright::util::DenseNatMap;
use stateright::{Rewrite, RewritePlan};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// The canonical state of `state`'s class: of every renumbering of the
/// servers the reduction uses ([`renumberings`]), the one with the
/// smallest hash. Canonical, so each class is visited once (up to hash
/// collisions, which stateright's own fingerprints risk too); it costs one
/// renumbering per permutation, 6 for three servers (3 with clients).
pub fn representative(state: &RaftState) -> RaftState {
    renumberings(state)
        .into_iter()
        .map(|new_index| renumber(state, &new_index))
        .min_by_key(|candidate| {
            let mut h = DefaultHasher::new();
            candidate.hash(&mut h);
            h.finish()
        })
        .expect("at least one permutation")
}

/// The renumberings of the servers the reduction uses for `state` (see
/// the module docs): every permutation without clients, the rotations
/// with them. Each maps server `i` to `new_index[i]`.
pub fn renumberings(state: &RaftState) -> Vec<Vec<usize>> {
    let servers = servers(state);
    if servers == state.actor_states.len() {
        permutations(servers)
    } else {
        (0..servers).map(|k| (0..servers).map(|i| (i + k) % servers).collect()).collect()
    }
}

/// The model puts its servers (a failed one included) before its clients.
fn servers(state: &RaftState) -> usize {
    state.actor_states.iter().filter(|a| !matches!(***a, ActorState::Client(_))).count()
}

/// Every permutation of `0..n` (Heap's algorithm).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, items: &mut [usize], out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(items.to_vec());
            return;
        }
        for i in 0..k {
            heap(k - 1, items, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    heap(n, &mut (0..n).collect::<Vec<_>>(), &mut out);
    out
}

/// `state` with server `i` moved to `new_index[i]` (a permutation of the
/// servers; clients stay in place), every server's and clerk's state
/// renumbered to match. Public for the tests of the model's symmetry.
pub fn renumber(state: &RaftState, new_index: &[usize]) -> RaftState {
    let mut all = new_index.to_vec();
    assert_eq!(all.len(), servers(state), "a renumbering of the servers");
    all.extend(all.len()..state.actor_states.len());
    renumber_by(state, &RewritePlan::<Id, _>::from_values_to_sort(&all))
}

fn renumber_by(state: &RaftState, plan: &RewritePlan<Id, DenseNatMap<Id, Id>>) -> RaftState {
    RaftState {
        actor_states: plan.reindex(&state.actor_states),
        network: state.network.rewrite(plan),
        timers_set: plan.reindex(&state.timers_set),
        random_choices: plan.reindex(&state.random_choices),
        crashed: plan.reindex(&state.crashed),
        actor_storages: plan.reindex(&state.actor_storages),
        history: state.history.rewrite(plan),
    }
}

fn node_id<S>(plan: &RewritePlan<Id, S>, id: NodeId) -> NodeId {
    usize::from(plan.rewrite(&Id::from(usize::from(id)))) as NodeId
}

impl Rewrite<Id> for ModelMsg {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        match self {
            ModelMsg::Raft(e) => ModelMsg::Raft(Envelope {
                from: node_id(plan, e.from),
                to: node_id(plan, e.to),
                message: e.message.clone(),
            }),
            ModelMsg::Request(command) => ModelMsg::Request(command.clone()),
            ModelMsg::Response(r) => ModelMsg::Response(Response {
                result: match &r.result {
                    Err(ServiceError::NotLeader { leader }) => {
                        Err(ServiceError::NotLeader { leader: leader.map(|l| node_id(plan, l)) })
                    }
                    other => other.clone(),
                },
                ..r.clone()
            }),
        }
    }
}

impl Rewrite<Id> for DurableServer {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        let mut durable = self.clone();
        durable.disk.hard.voted_for = self.disk.hard.voted_for.map(|v| node_id(plan, v));
        durable
    }
}

impl Rewrite<Id> for ActorState {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        match self {
            ActorState::Server { server, durable, job, unwritten, seen } => ActorState::Server {
                server: server.renumbered(|id| node_id(plan, id)),
                durable: durable.rewrite(plan),
                job: job.clone(),
                unwritten: unwritten.clone(),
                seen: *seen,
            },
            ActorState::Failed { why } => ActorState::Failed { why: why.clone() },
            ActorState::Client(client) => ActorState::Client(client.rewrite(plan)),
        }
    }
}

impl Rewrite<Id> for Durable {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        match self {
            Durable::Server(durable) => Durable::Server(durable.rewrite(plan)),
            Durable::Client(client) => Durable::Client(client.rewrite(plan)),
        }
    }
}

impl Rewrite<Id> for ClientState {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        ClientState { clerk: self.clerk.renumbered(|id| node_id(plan, id)), ..self.clone() }
    }
}

impl Rewrite<Id> for ModelHistory {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        let mut history = self.clone();
        for senders in history.leaders.values_mut() {
            *senders = senders.iter().map(|&id| node_id(plan, id)).collect();
        }
        history
    }
}
