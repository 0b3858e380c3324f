//! Shrinking a counterexample: a random walk that breaks a property is
//! typically 60 to 140 actions long, most of them irrelevant (heartbeats,
//! stale messages, elections that lead nowhere). [`shrink`] deletes
//! actions while the shortened schedule still replays and still breaks the
//! property (`raftkv::shrink::delta_debug`), and cuts the schedule at the
//! first broken state. The result is 1-minimal, no single action can be
//! removed, though not necessarily the shortest counterexample; only
//! exhaustive search proves that.

use crate::{condition, RaftAction as Action, RaftModel, RaftState};
use raftkv::shrink::{delta_debug, Trial};
use stateright::{Model, Path};

/// The shortest prefix of `actions`, replayed from the initial state, that
/// reaches a state where `broken` holds: its length, or `None` if no state
/// on the way is broken or some action is not possible where it comes.
fn breaks_after(model: &RaftModel, actions: &[Action], broken: &impl Fn(&RaftState) -> bool) -> Option<usize> {
    let mut state = model.init_states().remove(0);
    if broken(&state) {
        return Some(0);
    }
    let mut possible = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        possible.clear();
        model.actions(&state, &mut possible);
        if !possible.contains(action) {
            return None;
        }
        state = model.next_state(&state, action.clone())?;
        if broken(&state) {
            return Some(i + 1);
        }
    }
    None
}

/// A 1-minimal sub-schedule of `actions` that still breaks; `actions`
/// itself (cut at its first broken state) must.
pub fn shrink(model: &RaftModel, actions: &[Action], broken: impl Fn(&RaftState) -> bool) -> Vec<Action> {
    let n = breaks_after(model, actions, &broken).expect("the schedule to shrink must break the property");
    delta_debug(actions[..n].to_vec(), |mut candidate| match breaks_after(model, &candidate, &broken) {
        Some(n) => {
            candidate.truncate(n);
            Trial::Fails(candidate)
        }
        None => Trial::Passes,
    })
}

/// [`shrink`] against the "always" property called `property`, which
/// `actions` must break: the 1-minimal counterexample, and its path.
pub fn shrink_breaking(
    model: &RaftModel,
    actions: &[Action],
    property: &str,
) -> (Vec<Action>, Path<RaftState, Action>) {
    let holds = condition(model, property);
    let small = shrink(model, actions, |s| !holds(model, s));
    let path = Path::from_actions(model, model.init_states().remove(0), &small).expect("a shrunk schedule replays");
    (small, path)
}
