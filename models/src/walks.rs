//! Seeded random walks through the model (stateright's simulation checker),
//! for properties and bugs that lie beyond exhaustive bounds.
//!
//! [`MostlyDeliver`] is the chooser. It delivers messages far more often than
//! it fires timers: any set timer may fire at any moment in the model, so a
//! uniform choice spends most steps on timeouts and elections keep
//! interrupting the schedules the deep properties need.
//!
//! It also never picks an action the model ignores (`next_state` is `None`:
//! a message to a crashed server, a timer that does nothing in the current
//! role). Stateright 0.31's simulation checker mishandles those: it drops an
//! ignored action from the candidate list with `swap_remove`, which
//! reorders the list, but records the index for replay against the full
//! list, so rebuilding the walk's path for a discovery picks the wrong
//! action and panics ("Unable to reconstruct a `Path`"). Ignored actions
//! are common once servers may crash. Checking `next_state` here costs one
//! extra step per action and makes every recorded index exact.

use crate::{RaftAction as Action, RaftModel, RaftState};
use raftkv::rng::Rng;
use stateright::actor::{ActorModelAction, Id};
use stateright::{Chooser, Model};
use std::sync::Arc;

/// How much more often a message is delivered than a timer fires (or a
/// server crashes or recovers) when both are possible.
pub const DELIVER_WEIGHT: u64 = 20;

#[derive(Clone)]
pub struct MostlyDeliver {
    model: Arc<RaftModel>,
    partitions: bool,
}

impl MostlyDeliver {
    /// `model` must be built from the same configuration as the checked one.
    pub fn new(model: RaftModel) -> MostlyDeliver {
        MostlyDeliver { model: Arc::new(model), partitions: false }
    }

    /// Also cut links between servers now and then, as a nemesis would:
    /// every few actions each one-way server-to-server link is cut with
    /// probability 1/3. A cut link holds its messages (or, on a lossy
    /// network, drops them) while other actions remain. Schedules like Raft
    /// Figure 8 need a leader's messages held back while other servers
    /// hold elections, which plain walks, delivering eagerly, almost never
    /// do.
    pub fn with_partitions(mut self) -> MostlyDeliver {
        self.partitions = true;
        self
    }

    fn weight(&self, walk: &Walk, action: &Action) -> u64 {
        match action {
            ActorModelAction::Deliver { src, dst, .. } if walk.is_cut(*src, *dst) => 0,
            ActorModelAction::Deliver { .. } => DELIVER_WEIGHT,
            ActorModelAction::Drop(envelope) if walk.is_cut(envelope.src, envelope.dst) => DELIVER_WEIGHT,
            _ => 1,
        }
    }
}

/// One walk's chooser state.
pub struct Walk {
    rng: Rng,
    partitions: bool,
    /// Bit `src * 8 + dst` set: the link from server `src` to `dst` is cut
    /// (servers `0..8`; links to and from clients are never cut).
    cut: u64,
    /// Actions until the cut links are drawn again.
    until_redraw: u64,
}

impl Walk {
    fn is_cut(&self, src: Id, dst: Id) -> bool {
        let (src, dst) = (usize::from(src), usize::from(dst));
        src < 8 && dst < 8 && self.cut & (1 << (src * 8 + dst)) != 0
    }

    fn maybe_redraw(&mut self, servers: usize) {
        if !self.partitions {
            return;
        }
        if self.until_redraw == 0 {
            self.cut = 0;
            for src in 0..servers.min(8) {
                for dst in 0..servers.min(8) {
                    if src != dst && self.rng.range(0, 3) == 0 {
                        self.cut |= 1 << (src * 8 + dst);
                    }
                }
            }
            self.until_redraw = self.rng.range(5, 30);
        }
        self.until_redraw -= 1;
    }
}

impl Chooser<RaftModel> for MostlyDeliver {
    type State = Walk;

    fn new_state(&self, seed: u64) -> Walk {
        Walk { rng: Rng::new(seed), partitions: self.partitions, cut: 0, until_redraw: 0 }
    }

    fn choose_initial_state(&self, _: &mut Walk, _: &[RaftState]) -> usize {
        0
    }

    fn choose_action(&self, walk: &mut Walk, state: &RaftState, actions: &[Action]) -> usize {
        walk.maybe_redraw(usize::from(self.model.cfg.servers));
        let mut candidates: Vec<usize> = (0..actions.len()).collect();
        while !candidates.is_empty() {
            let mut weights: Vec<u64> = candidates.iter().map(|&i| self.weight(walk, &actions[i])).collect();
            if weights.iter().all(|&w| w == 0) {
                weights.fill(1); // only held messages left: deliver them after all
            }
            let slot = weighted_index(&mut walk.rng, &weights);
            let index = candidates[slot];
            if self.model.next_state(state, actions[index].clone()).is_some() {
                return index;
            }
            candidates.swap_remove(slot);
        }
        // Every action is ignored: the checker tries them all and ends the
        // walk; the state does not change, so the replay stays right.
        0
    }
}

/// An index into `weights`, drawn with probability proportional to its
/// weight; the weights must not all be zero.
pub(crate) fn weighted_index(rng: &mut Rng, weights: &[u64]) -> usize {
    let mut pick = rng.range(0, weights.iter().sum());
    weights
        .iter()
        .position(|&w| {
            if pick < w {
                return true;
            }
            pick -= w;
            false
        })
        .expect("pick < total weight")
}
