//! Symmetry reduction for models without clients: renumbering the servers
//! of a cluster gives an equivalent cluster (the same configuration, the
//! same timers, no randomness), so a depth-first search need only visit one
//! state of each class. `raftkv-models check --dfs --symmetry` uses it.
//!
//! Clients break the symmetry: a clerk tries servers in a fixed order, so
//! renumbering the servers changes where it goes next. [`representative`]
//! therefore refuses states with clients.
//!
//! The representative is the renumbering with the smallest hash, which is
//! the same for every state of a class. The renumbering itself is the
//! core's own ([`raftkv::kv::KvServer::renumbered`]), so every node id in
//! a server's state moves with it.

use crate::actors::{ActorState, Durable, DurableServer, ModelMsg};
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
/// servers, the one with the smallest hash. Canonical, so each class is
/// visited once (up to hash collisions, which stateright's own
/// fingerprints risk too); it costs one renumbering per permutation, 6 for
/// three servers. Panics if the model has clients (see the module docs).
pub fn representative(state: &RaftState) -> RaftState {
    let servers = state.actor_states.len();
    assert!(
        state.actor_states.iter().all(|a| !matches!(**a, ActorState::Client(_))),
        "symmetry reduction needs a model without clients"
    );
    permutations(servers)
        .into_iter()
        .map(|new_index| renumber(state, &new_index))
        .min_by_key(|candidate| {
            let mut h = DefaultHasher::new();
            candidate.hash(&mut h);
            h.finish()
        })
        .expect("at least one permutation")
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

/// `state` with actor `i` moved to `new_index[i]`, every server's state
/// renumbered to match (`new_index` must be a permutation of the servers
/// that leaves clients in place). For tests of the model's symmetry.
pub fn renumber(state: &RaftState, new_index: &[usize]) -> RaftState {
    renumber_by(state, &RewritePlan::<Id, _>::from_values_to_sort(new_index))
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
            ActorState::Client(_) => panic!("symmetry reduction needs a model without clients"),
        }
    }
}

impl Rewrite<Id> for Durable {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        match self {
            Durable::Server(durable) => Durable::Server(durable.rewrite(plan)),
            Durable::Client(_) => panic!("symmetry reduction needs a model without clients"),
        }
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
