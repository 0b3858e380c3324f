//! Hand-written schedules: a short text that names each action, replayed
//! through the model step by step. For schedules too deep for exhaustive
//! search on this machine, such as Raft Figure 8 (39 actions, see
//! [`FIGURE_8`]; the guided search finds longer ones), and for stepping
//! through an interleaving by hand (`raftkv-models replay --schedule "…"`).
//!
//! Each word is one action:
//!
//! | word | action |
//! |---|---|
//! | `T3` | server 3's election timer fires |
//! | `H3` | server 3's heartbeat timer fires |
//! | `D31` | a message from actor 3 to actor 1 is delivered (on an ordered network, the oldest; otherwise the first the model offers) |
//! | `C3` / `R3` | actor 3 crashes / recovers |
//!
//! Actor ids: servers are `0..servers`, clients follow.

use crate::actors::ModelTimer;
use crate::{Delivery, ModelConfig, RaftAction as Action, RaftModel, RaftState};
use raftkv::raft::InjectedBugs;
use stateright::actor::{ActorModelAction, Id};
use stateright::{Model, Path};

/// Raft Figure 8 on three servers, for bug (a) `commit_previous_term`
/// (run it with `max_batch = 1`, no clients, an ordered network and at
/// least 11 messages in flight):
///
/// 1. server 0 wins term 1 and appends its no-op at index 1, but its
///    AppendEntries stay in flight;
/// 2. server 1 wins term 2 with server 2's vote and appends its own no-op at
///    index 1, which does not reach anyone either;
/// 3. server 0 learns of term 2 from a refusal, wins term 3 with server 2's
///    vote and replicates its term-1 entry (alone: one entry per message)
///    to server 2. Counting two copies of a term-1 entry, the buggy leader
///    commits index 1;
/// 4. server 1, whose last entry (term 2) is newer than server 2's (term
///    1), wins term 4 with server 2's vote: a leader without a committed
///    entry. "Leader completeness" fails; once it commits its own no-op,
///    index 1 is overwritten on a majority.
///
/// With the bug off, step 3 commits nothing, and the rest is harmless.
pub const FIGURE_8: &str = "T0 D01 D10 D01 D10 \
     T1 D12 D21 D12 D21 \
     D02 D20 T0 D02 D02 D02 D20 D20 D20 D02 D20 D02 D20 D02 D20 \
     D01 D01 D01 D01 T1 T2 D12 D12 D21 D21 D21 D12 D12 D21";

/// A snapshot sent to a lagging follower, installed, and restarted from,
/// on [`crate::ModelConfig::ci_snapshots`] (a snapshot every 2 entries,
/// none kept in the log, an ordered network, one crash):
///
/// 1. server 0 wins term 1 with server 1's vote (actions 1–5); the client's
///    Append reaches it (6) and commits with server 1 at index 2, after the
///    no-op (7–10): server 0 applies it, snapshots at 2 and compacts its
///    whole log;
/// 2. server 2 only now gets the pre-vote, vote and first AppendEntries
///    (11–13), and its replies reach the leader (14–16): it holds index 1,
///    which the leader has compacted, so the leader sends the snapshot;
/// 3. server 2 installs it (17), crashes (18) and restarts from it (19).
pub const SNAPSHOT_INSTALL: &str = "T0 D01 D10 D01 D10 D30 D01 D10 D01 D10 \
     D02 D02 D02 D20 D20 D20 D02 C2 R2";

/// The bounds [`FIGURE_8`] needs: three servers, no clients, one entry per
/// AppendEntries, an ordered network with room for 11 messages in flight,
/// four terms and two log entries.
pub fn figure_8_config(bugs: InjectedBugs) -> ModelConfig {
    ModelConfig {
        clients: 0,
        network: Delivery::Ordered,
        max_batch: 1,
        max_in_flight: 12,
        max_term: 4,
        max_log: 2,
        bugs,
        ..ModelConfig::ci()
    }
}

/// Replays `schedule` from the model's initial state. On success, the path
/// of every state and action; otherwise which word could not be taken, and
/// the path up to it.
pub fn replay(model: &RaftModel, schedule: &str) -> Result<Path<RaftState, Action>, (String, Path<RaftState, Action>)> {
    let init = model.init_states().remove(0);
    let mut state = init.clone();
    let mut actions = Vec::new();
    for word in schedule.split_whitespace() {
        let Some(want) = parse(word) else {
            return Err((format!("{word:?} is not an action"), path(model, init, &actions)));
        };
        let mut possible = Vec::new();
        model.actions(&state, &mut possible);
        // The first matching action the model does not ignore (on an
        // unordered network, several messages may match `D<a><b>`).
        let next = possible.into_iter().filter(|a| want.matches(a)).find_map(|a| {
            let next = model.next_state(&state, a.clone())?;
            Some((a, next))
        });
        let Some((action, next)) = next else {
            return Err((
                format!("{word:?} cannot be taken after {} actions", actions.len()),
                path(model, init, &actions),
            ));
        };
        actions.push(action);
        state = next;
    }
    Ok(path(model, init, &actions))
}

/// The Explorer's address of the state `schedule` reaches: the index of
/// each action among those the model offers (stateright's
/// `/.states/<init>/<action>/…` path).
pub fn action_indices(model: &RaftModel, schedule: &str) -> Result<Vec<usize>, String> {
    let path = replay(model, schedule).map_err(|(why, _)| why)?;
    let states = path.clone().into_states();
    let actions = path.into_actions();
    let mut indices = vec![0];
    for (state, action) in states.iter().zip(&actions) {
        let mut possible = Vec::new();
        model.actions(state, &mut possible);
        indices.push(possible.iter().position(|a| a == action).ok_or("an action the model does not offer")?);
    }
    Ok(indices)
}

fn path(model: &RaftModel, init: RaftState, actions: &[Action]) -> Path<RaftState, Action> {
    Path::from_actions(model, init, actions).expect("the actions were taken from this model")
}

enum Word {
    Election(usize),
    Heartbeat(usize),
    Deliver(usize, usize),
    Crash(usize),
    Recover(usize),
}

fn parse(word: &str) -> Option<Word> {
    let mut chars = word.chars();
    let kind = chars.next()?;
    let digits: Vec<usize> = chars.map(|c| c.to_digit(10).map(|d| d as usize)).collect::<Option<_>>()?;
    Some(match (kind, digits.as_slice()) {
        ('T', [a]) => Word::Election(*a),
        ('H', [a]) => Word::Heartbeat(*a),
        ('D', [a, b]) => Word::Deliver(*a, *b),
        ('C', [a]) => Word::Crash(*a),
        ('R', [a]) => Word::Recover(*a),
        _ => return None,
    })
}

impl Word {
    fn matches(&self, action: &Action) -> bool {
        match (self, action) {
            (Word::Election(a), ActorModelAction::Timeout(id, ModelTimer::Election))
            | (Word::Heartbeat(a), ActorModelAction::Timeout(id, ModelTimer::Heartbeat))
            | (Word::Crash(a), ActorModelAction::Crash(id))
            | (Word::Recover(a), ActorModelAction::Recover(id)) => *id == Id::from(*a),
            (Word::Deliver(a, b), ActorModelAction::Deliver { src, dst, .. }) => {
                (*src, *dst) == (Id::from(*a), Id::from(*b))
            }
            _ => false,
        }
    }
}
