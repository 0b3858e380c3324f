//! Which actions of the Raft model commute: the independence relation the
//! sleep-set search ([`crate::search`]) prunes by, with its argument.
//!
//! Every action happens at one actor: a delivery at its receiver, a
//! timeout at the timer's owner, a crash or recovery at the one that
//! crashes, a loss (lossy network) at the lost message's receiver. What an
//! action reads and writes:
//!
//! - its actor's state, timers and storage, and its `crashed` flag;
//! - the network: a delivery consumes one message addressed to its actor
//!   (the head of one channel, on the ordered network; nothing, on the
//!   duplicating one) and every action may add messages *from* its actor.
//!   Removing one message and adding others commute, in a multiset, a set
//!   or a FIFO channel alike (a channel's head stays its head when
//!   another message joins its tail);
//! - the recorded history, which the properties judge (through stateright's
//!   `record_msg_out`/`record_msg_in`, [`crate::history`]):
//!   - a client's first send of a request and its first successful
//!     response write a call or a return *with the next logical time*:
//!     two of them in either order give other times, so other real-time
//!     order. Only actions at clients write these;
//!   - a server's AppendEntries, heartbeat or snapshot chunk adds the
//!     sender to the set of leaders of its term: a set union, which
//!     commutes with any other;
//!   - a server's answer to a Get may set `read_by_later_leader`, judged
//!     from the server's own entries among the leaders (which only its
//!     own actions add) and from the call's kind (recorded before the
//!     request could reach it): a flag only ever set, from facts no other
//!     actor changes;
//! - the number of crashed actors, which enables or disables every crash
//!   (`max_crashes`);
//! - on the duplicating network, the last message delivered, which
//!   stateright keeps in the state (so that a redelivery that changes
//!   nothing still reaches a new state) and every delivery overwrites.
//!   The commutation test found this one: the first relation forgot it.
//!
//! So two actions are independent when they are at different actors, not
//! both crashes or recoveries, not both at clients, and not both
//! deliveries on the duplicating network. Neither can
//! disable the other: whether an action is enabled depends on its actor's
//! state, timers and `crashed` flag and on a message to it, which only
//! its own actor's actions (and its crash) consume or change. Without the
//! bounds on messages in flight, the model's boundary is a condition on
//! each server alone (term, log length) and on each client's `crashed`
//! flag, so it cannot make one disable the other either (see
//! [`crate::search`], which also says why the network bounds are unsound
//! under the reduction even where each pair commutes).
//!
//! The relation looks only at whether two actors are the same and
//! whether each is a client or a server, so renumbering the servers keeps
//! it: two actions commute iff their renumbered selves do, which the
//! search needs to combine sleep sets with symmetry reduction
//! ([`crate::search`]).
//!
//! [`commutation_failures`] checks the argument on every state of small
//! bounds and on states of random walks; tests show it catching relations
//! that forget the history or the duplicating network's last delivery.

use crate::actors::{ActorState, ModelMsg};
use crate::{Delivery, RaftAction, RaftModel, RaftState};
use stateright::actor::{ActorModelAction, Id};
use stateright::Model;

/// The relation the sleep-set search uses for the Raft model.
pub fn independent(model: &RaftModel, a: &RaftAction, b: &RaftAction) -> bool {
    let (x, y) = (actor(a), actor(b));
    let servers = usize::from(model.cfg.servers);
    let at_client = |id: Id| usize::from(id) >= servers;
    let both_deliveries = matches!((a, b), (ActorModelAction::Deliver { .. }, ActorModelAction::Deliver { .. }));
    x != y
        && !(crash_or_recover(a) && crash_or_recover(b))
        && !(at_client(x) && at_client(y))
        && !(both_deliveries && model.cfg.network == Delivery::Duplicating)
}

/// Where an action happens.
pub fn actor(action: &RaftAction) -> Id {
    match action {
        ActorModelAction::Deliver { dst, .. } => *dst,
        ActorModelAction::Drop(envelope) => envelope.dst,
        ActorModelAction::Timeout(id, _) | ActorModelAction::Crash(id) | ActorModelAction::Recover(id) => *id,
        ActorModelAction::SelectRandom { actor, .. } => *actor,
    }
}

/// A crash or a recovery: these write the shared count of crashed actors.
pub fn crash_or_recover(action: &RaftAction) -> bool {
    matches!(action, ActorModelAction::Crash(_) | ActorModelAction::Recover(_))
}

/// What [`commutation_failures`] found in one state.
#[derive(Debug, Default)]
pub struct Commutation {
    /// Pairs of enabled actions the relation calls independent.
    pub pairs: usize,
    /// A line for each of them that does not commute.
    pub failures: Vec<String>,
}

/// For each pair of actions enabled in `state` that `relation` calls
/// independent: that taking them in either order reaches the same state,
/// and that neither disables the other (by the model's own rules or by
/// its boundary: the pair must fit inside it together when each fits
/// alone).
pub fn commutation_failures(
    model: &RaftModel,
    relation: fn(&RaftModel, &RaftAction, &RaftAction) -> bool,
    state: &RaftState,
) -> Commutation {
    let mut actions = Vec::new();
    model.actions(state, &mut actions);
    let enabled: Vec<(RaftAction, RaftState)> =
        actions.into_iter().filter_map(|a| model.next_state(state, a.clone()).map(|next| (a, next))).collect();
    let mut result = Commutation::default();
    for (i, (a, after_a)) in enabled.iter().enumerate() {
        for (b, after_b) in &enabled[i + 1..] {
            if !relation(model, a, b) {
                continue;
            }
            result.pairs += 1;
            let ab = model.next_state(after_a, b.clone());
            let ba = model.next_state(after_b, a.clone());
            let inside = |s: &RaftState| model.within_boundary(s);
            let why = match (&ab, &ba) {
                (None, _) => Some("the first disables the second"),
                (_, None) => Some("the second disables the first"),
                (Some(ab), Some(ba)) if ab != ba => Some("the two orders reach different states"),
                (Some(ab), Some(_)) if inside(after_a) && inside(after_b) && !inside(ab) => {
                    Some("each fits inside the boundary alone, not together")
                }
                _ => None,
            };
            if let Some(why) = why {
                result.failures.push(format!("{a:?} and {b:?}: {why}"));
            }
        }
    }
    result
}

/// The persistent-set rule ([`crate::search::Persistent`]) for the Raft
/// model: **a refusal on its way to a client that waits for nothing
/// else** is taken alone. The action `t` delivers a response whose result
/// is an error (not leader, and the like) to client `c`, where:
///
/// 1. it is the only message in flight to or from `c`, and no server
///    holds a request of `c` accepted and unanswered
///    ([`raftkv::kv::KvServer::waits_for`]);
/// 2. every other action at `c` the model lists has no successor inside
///    the boundary (no retry left; no crash of a client, or only servers
///    crash, and a client's crash leaves the boundary whatever the state;
///    no loss on a lossy network);
/// 3. taking it changes no part of the recorded history, and the state it
///    reaches is inside the boundary; the network does not duplicate.
///
/// C1: an action that does not commute with `t` is at `c` (the
/// relation above: actions at other actors commute with `t`, a client
/// action, unless both are at clients; and two client actions commute
/// when one of them, `t`, writes no history: an error records no return,
/// and the request the clerk sends again is the same `(client, seq)`, whose
/// call is already recorded, now and in every later state, since the
/// history only grows). An action at `c` needs a message to `c` (servers
/// send to a client only when one of its requests reaches them or when
/// they answer one they hold, and by 1 there is neither but `t`'s) or a
/// timer, a crash or a loss at `c`, which by 2 cannot happen until `c`
/// acts. C2: no property reads a client's state or the network, and by 3
/// `t` changes nothing else they read. C3: each such step consumes the
/// one message to its client and leaves one from it, so the rule cannot
/// pick that client again before a server acts: a run of picked steps is
/// at most one per client long, and no cycle is made of them alone.
///
/// The same holds for every renumbering of the servers (it looks at
/// clients, and at servers only all together), so it combines with
/// symmetry reduction. `models/tests/search.rs` compares what a search with
/// it reaches with what a search without it reaches.
pub fn lone_refusal(model: &RaftModel, state: &RaftState, actions: &[RaftAction]) -> Option<usize> {
    lone_response(model, state, actions, false)
}

/// [`lone_refusal`] made unsound on purpose, for the test that shows the
/// comparison catching it: it takes any response alone, an answer too,
/// whose return in the history is ordered against the other client's
/// calls and returns (C1 and C2 broken).
#[doc(hidden)]
pub fn careless_lone_response(model: &RaftModel, state: &RaftState, actions: &[RaftAction]) -> Option<usize> {
    lone_response(model, state, actions, true)
}

fn lone_response(model: &RaftModel, state: &RaftState, actions: &[RaftAction], careless: bool) -> Option<usize> {
    if model.cfg.network == Delivery::Duplicating {
        return None;
    }
    let servers = usize::from(model.cfg.servers);
    let refusal = |t: &RaftAction| match t {
        ActorModelAction::Deliver { dst, msg: ModelMsg::Response(response), .. }
            if usize::from(*dst) >= servers && (careless || response.result.is_err()) =>
        {
            Some((*dst, response.client))
        }
        _ => None,
    };
    actions.iter().enumerate().position(|(i, t)| {
        let Some((client, client_id)) = refusal(t) else { return false };
        let alone = state.network.iter_all().filter(|e| e.src == client || e.dst == client).count() == 1;
        let waited_on = state.actor_states.iter().any(|s| match &**s {
            ActorState::Server { server, .. } => server.waits_for(client_id),
            _ => false,
        });
        if !alone || waited_on {
            return false;
        }
        // Another action of the client is idle if it is disabled or leaves
        // the boundary, as its crash does where only servers crash (a
        // condition on the client's own flag, so from every state).
        let idle = |a: &RaftAction| model.next_state(state, a.clone()).is_none_or(|next| !model.within_boundary(&next));
        let others_idle = actions.iter().enumerate().all(|(j, a)| j == i || actor(a) != client || idle(a));
        others_idle
            && model
                .next_state(state, t.clone())
                .is_some_and(|next| (careless || next.history == state.history) && model.within_boundary(&next))
    })
}
