//! The general per-key search: Wing & Gong / Lowe just-in-time
//! linearization with Porcupine's memo of (linearized set, value), and
//! nothing else. It keeps values whole and replays every call through the
//! sequential spec ([`Operation::step`]), so it is correct for every kind
//! of call, including the *conditional* ones (Delete and PutIfAbsent,
//! whose effect and output depend on whether the value is empty).
//!
//! [`super::check`]'s search is much faster on append-heavy keys, but its
//! pruning assumes the only writes are Put (which resets the value) and
//! Append (which extends it) and that only Gets observe the value; a
//! conditional call breaks both assumptions (two dead values, one empty
//! and one not, no longer have the same futures). So a key with any
//! conditional call is checked here instead. The search skeleton is the
//! same (see `check.rs` and `specs/history.md`): a time-ordered list of
//! call and return entries, the candidates being the calls met before the
//! first return; the only pruning is the memo and the skipping of a
//! pending call that leaves the value as it was (it need not take effect,
//! and taking effect changes nothing).

use super::check::{KeyOutcome, Steps};
use super::history::{OpKind, Operation};
use super::lists::{time_ordered_entries, zobrist_keys, Links};
use std::collections::{BTreeMap, BTreeSet};

/// One linearized call on the search stack.
struct Frame {
    /// Its call entry, where the scan resumes after backtracking.
    entry: usize,
    op: usize,
    /// The value before it (an id in [`Values`]).
    before: usize,
}

/// Every value the search has met, each stored once: the memo and the
/// stack name values by id, so an entry costs a few words however long
/// the value.
#[derive(Default)]
struct Values {
    ids: BTreeMap<String, usize>,
    all: Vec<String>,
}

impl Values {
    fn id(&mut self, value: String) -> usize {
        if let Some(&id) = self.ids.get(&value) {
            return id;
        }
        self.all.push(value.clone());
        self.ids.insert(value, self.all.len() - 1);
        self.all.len() - 1
    }
}

/// Decides whether `ops` (all on one key) are linearizable, spending at most
/// the remaining `steps`.
pub(crate) fn check_key(ops: &[&Operation], steps: &mut Steps) -> KeyOutcome {
    search(ops, steps, None)
}

/// How far a search got: the longest sequence of calls it linearized (as
/// positions in the searched slice, each with the value after it), and the
/// call it then could not place (whose return came before it could take
/// effect), if it was one.
#[derive(Debug, Default)]
pub(crate) struct Deepest {
    pub(crate) order: Vec<(usize, String)>,
    pub(crate) blocked: Option<usize>,
}

/// [`check_key`], also recording the deepest point the search reached
/// (Porcupine's "longest linearizable prefix"), for pictures of illegal
/// keys.
pub(crate) fn deepest(ops: &[&Operation], steps: &mut Steps) -> (KeyOutcome, Deepest) {
    let mut deepest = Deepest::default();
    let outcome = search(ops, steps, Some(&mut deepest));
    (outcome, deepest)
}

fn search(ops: &[&Operation], steps: &mut Steps, mut track: Option<&mut Deepest>) -> KeyOutcome {
    // Positions in `ops` of the calls searched.
    let mut positions: Vec<usize> = Vec::with_capacity(ops.len());
    for (position, &op) in ops.iter().enumerate() {
        match op.ret {
            Some(ret) if ret < op.call => return KeyOutcome::Illegal,
            // A Get that never returned told nobody anything, and changed
            // nothing.
            None if op.kind == OpKind::Get => {}
            _ => positions.push(position),
        }
    }
    let live: Vec<&Operation> = positions.iter().map(|&p| ops[p]).collect();
    let completed = live.iter().filter(|o| o.ret.is_some()).count();
    if completed == 0 {
        return KeyOutcome::Ok;
    }

    let (event, nodes) = time_ordered_entries(live.iter().map(|op| (op.call, op.ret)));
    let zobrist = zobrist_keys(live.len());
    let mut events = Links::new(event.len() - 1);
    let lift = |events: &mut Links, i: usize| {
        events.unlink(nodes[i].0);
        if nodes[i].1 != 0 {
            events.unlink(nodes[i].1);
        }
    };
    let unlift = |events: &mut Links, i: usize| {
        if nodes[i].1 != 0 {
            events.relink(nodes[i].1);
        }
        events.relink(nodes[i].0);
    };

    let mut values = Values::default();
    let mut value = values.id(String::new());
    let (mut set, mut done) = (0u128, 0);
    let mut memo: BTreeSet<(u128, usize)> = BTreeSet::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut entry = events.first();
    // The depth of the deepest state whose dead end is already recorded.
    let mut blocked_depth = None;
    loop {
        if !steps.tick() {
            return KeyOutcome::Unknown;
        }
        let (i, is_call) = event[entry];
        if entry == 0 || !is_call {
            // The end of the list, or the return of a call not yet
            // linearized although everything left must follow it.
            if let Some(deepest) = track.as_deref_mut() {
                if deepest.order.len() == stack.len() && blocked_depth != Some(stack.len()) {
                    blocked_depth = Some(stack.len());
                    deepest.blocked = (entry != 0).then(|| positions[i]);
                }
            }
            let Some(frame) = stack.pop() else {
                return KeyOutcome::Illegal;
            };
            unlift(&mut events, frame.op);
            value = frame.before;
            set ^= zobrist[frame.op];
            if live[frame.op].ret.is_some() {
                done -= 1;
            }
            entry = events.next[frame.entry];
            continue;
        }
        let op = live[i];
        let (after, output) = op.step(&values.all[value]);
        if !op.output_matches(&output) {
            entry = events.next[entry];
            continue;
        }
        if op.ret.is_some() && done + 1 == completed {
            return KeyOutcome::Ok;
        }
        let after = values.id(after);
        let new_set = set ^ zobrist[i];
        if (op.ret.is_none() && after == value) || !memo.insert((new_set, after)) {
            entry = events.next[entry];
            continue;
        }
        lift(&mut events, i);
        stack.push(Frame { entry, op: i, before: value });
        if let Some(deepest) = track.as_deref_mut() {
            if stack.len() > deepest.order.len() {
                let values_after = stack.iter().skip(1).map(|f| f.before).chain([after]);
                deepest.order =
                    stack.iter().zip(values_after).map(|(f, v)| (positions[f.op], values.all[v].clone())).collect();
                deepest.blocked = None;
            }
        }
        value = after;
        set = new_set;
        if op.ret.is_some() {
            done += 1;
        }
        entry = events.first();
    }
}
