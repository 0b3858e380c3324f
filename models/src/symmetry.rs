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
//! The representative is, of the renumberings that order the servers by
//! how they look without their numbers (`candidates`), the one with the
//! smallest hash, which is the same for every state of a class. A search
//! that also uses sleep sets names actions as the representative does
//! ([`canonical`], [`rename_action`]). The renumbering itself is the
//! core's own ([`raftkv::kv::KvServer::renumbered`],
//! [`raftkv::clerk::Clerk::renumbered`]), so every node id a server or a
//! clerk holds moves with it.

use crate::actors::{ActorState, ClientState, Durable, DurableServer, ModelMsg};
use crate::history::ModelHistory;
use crate::search::{fingerprint, Symmetry};
use crate::{server_count, RaftAction, RaftModel, RaftState};
use raftkv::kv::{Response, ServiceError};
use raftkv::raft::{Envelope, NodeId};
use stateright::actor::ActorModelAction;
use stateright::actor::Id;
use stateright::util::DenseNatMap;
use stateright::{Rewrite, RewritePlan};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// The canonical state of `state`'s class: of the renumberings of the
/// servers the reduction uses ([`renumberings`]) that order the servers
/// by how they look (`candidates`: usually one), the one with the
/// smallest hash. Canonical, so each class is visited once (up to hash
/// collisions, which stateright's own fingerprints risk too); it costs a
/// whole renumbered copy of the state per candidate.
pub fn representative(state: &RaftState) -> RaftState {
    canonical(state).0
}

/// [`representative`], with the renumbering that takes `state` there
/// (server `i` becomes `new_index[i]`), so that a search can name
/// `state`'s actions as the representative would ([`rename_action`]).
pub fn canonical(state: &RaftState) -> (RaftState, Vec<usize>) {
    canonical_by(state, looks)
}

fn canonical_by(state: &RaftState, looks: fn(&RaftState, usize) -> u64) -> (RaftState, Vec<usize>) {
    candidates(state, looks)
        .into_iter()
        .map(|new_index| (renumber(state, &new_index), new_index))
        .min_by_key(|(candidate, _)| fingerprint(candidate))
        .expect("at least one permutation")
}

/// Symmetry reduction for [`crate::search`]: [`canonical_fingerprint`]
/// and [`rename_action`].
pub fn reduction() -> Symmetry<RaftModel> {
    Symmetry { canonical: canonical_fingerprint, rename: rename_action }
}

/// What a search needs of [`canonical`]: the representative's fingerprint
/// ([`crate::search::fingerprint`], the hash [`canonical`] minimizes) and
/// the renumbering, without the representative itself, and without a
/// renumbered copy of `state` when the renumbering is the identity.
pub fn canonical_fingerprint(state: &RaftState) -> (u64, Vec<usize>) {
    let identity = |n: &[usize]| n.iter().enumerate().all(|(i, &to)| i == to);
    candidates(state, looks)
        .into_iter()
        .map(|n| (if identity(&n) { fingerprint(state) } else { fingerprint(&renumber(state, &n)) }, n))
        .min_by_key(|(fp, _)| *fp)
        .expect("at least one permutation")
}

/// `action` renumbered as [`renumber`] renumbers a state: if `action`
/// takes `state` to `next`, `rename_action(action)` takes
/// `renumber(state)` to `renumber(next)`. Clients keep their ids.
pub fn rename_action(action: &RaftAction, new_index: &[usize]) -> RaftAction {
    let plan = plan(new_index, new_index.len() + MAX_CLIENTS);
    let id = |id: &Id| plan.rewrite(id);
    match action {
        ActorModelAction::Deliver { src, dst, msg } => {
            ActorModelAction::Deliver { src: id(src), dst: id(dst), msg: msg.rewrite(&plan) }
        }
        ActorModelAction::Drop(envelope) => ActorModelAction::Drop(envelope.rewrite(&plan)),
        ActorModelAction::Timeout(actor, timer) => ActorModelAction::Timeout(id(actor), timer.clone()),
        ActorModelAction::Crash(actor) => ActorModelAction::Crash(id(actor)),
        ActorModelAction::Recover(actor) => ActorModelAction::Recover(id(actor)),
        ActorModelAction::SelectRandom { actor, key, random } => {
            ActorModelAction::SelectRandom { actor: id(actor), key: key.clone(), random: *random }
        }
    }
}

/// More clients than any model has: [`rename_action`] sees no state, so
/// it plans for this many actors after the servers (each keeps its id).
const MAX_CLIENTS: usize = 64;

/// The plan that moves server `i` to `new_index[i]` among `actors` actors
/// (the clients, after the servers, stay in place).
fn plan(new_index: &[usize], actors: usize) -> RewritePlan<Id, DenseNatMap<Id, Id>> {
    // Built directly: stateright's `from_values_to_sort` would reach the
    // same map by sorting the values twice, which profiling showed to be
    // a seventh of a symmetric search's time (a plan per renamed action).
    let to: Vec<Id> = new_index.iter().copied().chain(new_index.len()..actors).map(Id::from).collect();
    RewritePlan::new(DenseNatMap::from(to), |id, to| *to.get(*id).expect("a plan covers every actor"))
}

/// The renumberings of the servers the reduction uses for `state` (see
/// the module docs): every permutation without clients, the rotations
/// with them. Each maps server `i` to `new_index[i]`.
pub fn renumberings(state: &RaftState) -> Vec<Vec<usize>> {
    let servers = server_count(state);
    if servers == state.actor_states.len() {
        permutations(servers)
    } else {
        (0..servers).map(|k| (0..servers).map(|i| (i + k) % servers).collect()).collect()
    }
}

/// The renumberings worth trying for the representative: of
/// [`renumberings`], those that put the servers in order of how they look
/// without anyone's number ([`looks`]): ascending (every permutation), or
/// the smallest rotation of the sequence (rotations). Usually one; all
/// of them when the servers look alike. This is canonical too: renumbering
/// `state` by σ renumbers the candidates by σ as well (what a server looks
/// like moves with it), so every member of a class has the same candidate
/// states, and the same smallest hash among them; and it costs one
/// renumbering of the state, not six.
fn candidates(state: &RaftState, looks: fn(&RaftState, usize) -> u64) -> Vec<Vec<usize>> {
    let looks: Vec<u64> = (0..server_count(state)).map(|i| looks(state, i)).collect();
    // The servers' looks in their new order under a renumbering.
    let arranged = |new_index: &Vec<usize>| {
        let mut seq = vec![0; new_index.len()];
        for (i, &to) in new_index.iter().enumerate() {
            seq[to] = looks[i];
        }
        seq
    };
    let all = renumberings(state);
    let Some(best) = all.iter().map(arranged).min() else { return all };
    all.into_iter().filter(|n| arranged(n) == best).collect()
}

/// How server `i` looks without its own number or any other: a hash of
/// what no renumbering changes (its role, term, log's end, commit index,
/// timers, whether it is crashed, and how many messages are in flight to
/// it and from it). It must not see a node id anywhere, or
/// [`candidates`] would not be canonical.
fn looks(state: &RaftState, i: usize) -> u64 {
    let mut h = DefaultHasher::new();
    state.crashed[i].hash(&mut h);
    state.timers_set[i].hash(&mut h);
    match &*state.actor_states[i] {
        ActorState::Server { server, .. } => {
            let node = server.node();
            (node.role(), node.term(), node.log().last_index(), node.log().last_term(), node.commit_index())
                .hash(&mut h);
        }
        ActorState::Failed { .. } => "failed".hash(&mut h),
        ActorState::Client(_) => "client".hash(&mut h),
    }
    let id = Id::from(i);
    let (to, from) = state
        .network
        .iter_all()
        .fold((0usize, 0usize), |(to, from), e| (to + usize::from(e.dst == id), from + usize::from(e.src == id)));
    (to, from).hash(&mut h);
    h.finish()
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
    assert_eq!(new_index.len(), server_count(state), "a renumbering of the servers");
    renumber_by(state, &plan(new_index, state.actor_states.len()))
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
            ActorState::Server { server, durable, job, unwritten, queued, seen } => ActorState::Server {
                server: server.renumbered(|id| node_id(plan, id)),
                durable: durable.rewrite(plan),
                job: job.clone(),
                unwritten: unwritten.clone(),
                // (As on the disk, the vote is the only node id a batch
                // holds: symmetry is refused with reconfiguration, whose
                // configuration entries would name servers too.)
                queued: queued
                    .iter()
                    .map(|p| {
                        let mut p = p.clone();
                        if let Some(h) = &mut p.hard_state {
                            h.voted_for = h.voted_for.map(|v| node_id(plan, v));
                        }
                        p
                    })
                    .collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model, ModelConfig};
    use stateright::Model;

    /// [`plan`] builds the map stateright's `from_values_to_sort` reaches
    /// by sorting (server `i` to `new_index[i]`, the rest in place).
    #[test]
    fn a_plan_maps_as_stateright_sorts() {
        for servers in 1..=4 {
            for new_index in permutations(servers) {
                let mut all = new_index.clone();
                all.extend(servers..servers + 3);
                let sorted = RewritePlan::<Id, DenseNatMap<Id, Id>>::from_values_to_sort(&all);
                let direct = plan(&new_index, servers + 3);
                for id in (0..servers + 3).map(Id::from) {
                    assert_eq!(direct.rewrite(&id), sorted.rewrite(&id), "{new_index:?}, {id:?}");
                }
            }
        }
    }

    /// The canonical check of `models/tests/symmetry.rs` (every renumbering
    /// of a state has the state's representative), here on the states
    /// within 6 actions of a model without clients, holds for [`looks`]
    /// and fails for one that sees each server's own number: `candidates`
    /// must be fed only what no renumbering changes.
    #[test]
    fn a_look_that_sees_a_servers_number_breaks_the_representative() {
        fn sees_number(state: &RaftState, i: usize) -> u64 {
            looks(state, i) ^ i as u64
        }
        let m = model(ModelConfig { clients: 0, ..ModelConfig::ci() });
        let mut states = m.init_states();
        let mut seen: std::collections::HashSet<RaftState> = states.iter().cloned().collect();
        let mut layer = states.clone();
        for _ in 0..6 {
            layer = layer.iter().flat_map(|s| m.next_states(s)).filter(|s| seen.insert(s.clone())).collect();
            states.extend(layer.iter().cloned());
        }
        let not_canonical = |looks: fn(&RaftState, usize) -> u64| {
            states.iter().any(|s| {
                let rep = canonical_by(s, looks).0;
                permutations(3).iter().any(|perm| canonical_by(&renumber(s, perm), looks).0 != rep)
            })
        };
        assert!(!not_canonical(looks), "the representative differs within a class");
        // What the search uses is the representative's fingerprint, got
        // without renumbering when the renumbering is the identity (which
        // must then change nothing).
        for s in &states {
            assert!(renumber(s, &[0, 1, 2]) == *s, "renumbering by the identity changed a state");
            assert_eq!(canonical_fingerprint(s), (fingerprint(&canonical(s).0), canonical(s).1));
        }
        assert!(not_canonical(sees_number), "a look that sees the server's number went unnoticed");
    }
}
