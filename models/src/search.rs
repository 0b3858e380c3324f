//! Our own exhaustive search, beside stateright's: depth-first, bounded by
//! the number of actions, remembering each visited state only by a 64-bit
//! fingerprint, and optionally reduced by **sleep sets** (Godefroid 1996,
//! ch. 5) over an independence relation the model supplies
//! ([`crate::independence`] for the Raft model).
//!
//! Why our own: stateright's breadth-first search keeps every frontier
//! state whole (about 1.7 KB each for the Raft model, so 12.9 GB at 7.5 M
//! unique states), its depth-first search keeps whole states in its
//! visited set too, and neither can skip an interleaving of two actions
//! that commute. Its public [`Model`] trait is all this needs, so the
//! same model (the same production code) runs under both.
//!
//! **Sleep sets.** After the search has explored action `t` from state
//! `s`, every later sibling `u` that commutes with `t` passes `t` on, in
//! its sleep set, to `s.u`: the search does not take `t` from `s.u` (nor
//! from states after more actions that commute with `t`), because `s.u.t`
//! is `s.t.u`, reached under `t`. Sleep sets alone prune *transitions*,
//! not states: every state reachable within the depth bound is still
//! visited (so every property is judged in every reachable state, and no
//! visibility condition is needed), with far fewer calls to the model.
//! With a visited set, a state seen again with a sleep set that is not a
//! superset of the one it was explored with is explored again for the
//! actions the old set slept and the new one has awake, and remembered
//! with the intersection (Godefroid's condition, which keeps the
//! combination sound); seen again at a smaller depth, in full.
//! [`Search::fingerprints`] lets a test compare the states reached with
//! and without the reduction.
//!
//! **Assumption on the boundary.** A state outside the model's boundary is
//! not explored. A sleeping action `t` at `s.u` stands for the path
//! `s.t.u…`, which takes the same actions with `t` moved earlier; each
//! state on that path must be inside the boundary whenever the path the
//! search is on stays inside. That holds for a boundary made only of
//! conditions on each actor's own state (a server's term and log length, a
//! client's `crashed` flag) when independent actions are at different
//! actors: each actor goes through the same states in either order. It
//! can fail for any bound on messages in flight, which depends on a
//! sender and a receiver at once. On the whole network (the Raft model's
//! `max_in_flight`) two commuting actions that each fit may not fit
//! together; per sender (`max_in_flight_per_sender`) each pair fits, but
//! moving a send earlier, before the deliveries that consumed that
//! sender's older messages, can leave the bound on the way. (No example
//! is known: the one that seemed to show it, 5 states missed of 147,953
//! at 10 actions, was stateright's hash merging distinct states, fixed in
//! our copy of it, `models/vendor/stateright/RAFTKV.md`; with the fix
//! nothing is missed there.) So `--reduce sleep` refuses both network
//! bounds, on the argument; the depth bound alone keeps the search finite.
//!
//! **Symmetry.** With [`Options::symmetry`], a state is remembered by
//! its class representative's fingerprint, so one state of each class is
//! explored (states of a class have the same futures, renumbered). With
//! sleep sets too (Emerson, Jha and Peled 1997 combine the two): the
//! search goes on from the state it reached, in that state's names, but
//! the visited set remembers the sleep set in the representative's
//! names ([`Symmetry::rename`] by the renumbering that takes the state to
//! its representative), so that another member of the class, reached with
//! its own sleep set, is compared in the same names, and Godefroid's rule
//! above applies to the class as it did to the state. This needs the
//! independence relation to be symmetric too (two actions commute iff
//! their renamed selves do), which holds for one that looks only at
//! whether actors are equal and what kind each is
//! ([`crate::independence`]). Where a state equals some renumbering of
//! itself, the renumbering to its representative is not unique; any will
//! do, since exploring a state with a sleep set covers, up to symmetry,
//! what exploring it with the renamed sleep set would.
//!
//! **Fingerprints** are only as good as the `Hash` they digest: it must
//! tell apart the states the model tells apart (published stateright
//! 0.31's did not, see `specs/models.md`).
//!
//! Memory grows with the number of states (about 40 bytes each plus the
//! sleep sets) and with the depth (the stack of states), not with the
//! size of a state; a budget on the process's resident memory stops the
//! search cleanly, with what it checked so far.

use stateright::{Expectation, Model};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

/// Whether two actions commute where both are enabled: either order
/// reaches the same state and neither disables the other.
pub type Independence<M> = fn(&M, &<M as Model>::Action, &<M as Model>::Action) -> bool;

/// A renumbering of a model's actors (server `i` becomes `new_index[i]`).
pub type Renumbering = Vec<usize>;

/// What symmetry reduction needs of a model.
pub struct Symmetry<M: Model> {
    /// The representative of a state's symmetry class (the same state for
    /// every member of the class), and the renumbering that takes the
    /// state there.
    pub canonical: fn(&M::State) -> (M::State, Renumbering),
    /// An action of a state as that state renumbered names it: with sleep
    /// sets, the visited set remembers a state's sleep set in its
    /// representative's names.
    pub rename: fn(&M::Action, &[usize]) -> M::Action,
}

// By hand: a derive would ask `M: Clone + Copy` of the model.
impl<M: Model> Clone for Symmetry<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M: Model> Copy for Symmetry<M> {}

/// What to search and when to stop.
pub struct Options<M: Model> {
    /// Explore every state reached by at most this many actions.
    pub max_depth: usize,
    /// `Some`: reduce by sleep sets over this relation.
    pub independent: Option<Independence<M>>,
    /// Stop (cleanly, with what was checked) once the process's resident
    /// memory exceeds this many bytes.
    pub max_memory: Option<u64>,
    /// Stop at the first violated "always" property.
    pub first_failure: bool,
    /// `Some`: remember each state by its class's representative (symmetry
    /// reduction, [`crate::symmetry::canonical`] for the Raft model), so
    /// that one state of each class is explored; with sleep sets too (see
    /// the module docs).
    pub symmetry: Option<Symmetry<M>>,
}

// By hand: a derive would ask `M: Clone` of the model.
impl<M: Model> Clone for Options<M> {
    fn clone(&self) -> Self {
        Options { ..*self }
    }
}

impl<M: Model> Options<M> {
    pub fn new(max_depth: usize) -> Options<M> {
        Options { max_depth, independent: None, max_memory: None, first_failure: false, symmetry: None }
    }
}

/// Why a search stopped before exploring everything within its depth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stopped {
    /// Every property has its discovery: nothing left to learn.
    AllDiscovered,
    /// An "always" property failed and `first_failure` was asked.
    FirstFailure,
    /// The resident memory passed the budget.
    MemoryBudget { rss_bytes: u64 },
    /// [`Search::interrupt`] was called (Ctrl-C).
    Interrupted,
}

/// Counters, for the progress lines, the report and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Distinct fingerprints visited (within the boundary).
    pub unique: u64,
    /// States generated: every successful `next_state`.
    pub generated: u64,
    /// Times a state's successors were listed (re-explorations included).
    pub expanded: u64,
    /// Actions the sleep sets kept the search from taking.
    pub slept: u64,
    /// Deepest state visited, in actions.
    pub max_depth: usize,
}

impl Counts {
    /// Adds another search's counts (the deepest state: the larger).
    fn add(&mut self, other: &Counts) {
        self.unique += other.unique;
        self.generated += other.generated;
        self.expanded += other.expanded;
        self.slept += other.slept;
        self.max_depth = self.max_depth.max(other.max_depth);
    }
}

/// Each visited state: the smallest depth and the sleep set it was last
/// explored with (sorted action fingerprints; empty without a reduction,
/// and then not allocated).
struct Visit {
    depth: u32,
    sleep: Box<[u64]>,
}

/// A state on the depth-first stack.
struct Frame<M: Model> {
    state: M::State,
    /// The action that led here (`None` for an initial state).
    via: Option<M::Action>,
    /// The actions to take from here: enabled by the model's list, minus
    /// the sleep set.
    todo: Vec<M::Action>,
    next: usize,
    /// The sleep set this state was entered with, then each action
    /// explored from it (which later siblings sleep on if they commute).
    sleep: Vec<(M::Action, u64)>,
}

pub struct Search<'a, M: Model> {
    model: &'a M,
    options: Options<M>,
    visited: HashMap<u64, Visit, BuildHasherDefault<PassThrough>>,
    counts: Counts,
    /// Per property (by name): the actions of the first path found to a
    /// state that violates it ("always") or satisfies it ("sometimes").
    discoveries: BTreeMap<&'static str, Vec<M::Action>>,
    stopped: Option<Stopped>,
    interrupt: Option<&'a std::sync::atomic::AtomicBool>,
}

/// How often (in states generated) the memory and the interrupt flag are
/// looked at and the progress callback is called.
const CHECK_EVERY: u64 = 1 << 16;

impl<'a, M: Model> Search<'a, M>
where
    M::State: Hash,
    M::Action: Hash + Clone + PartialEq,
{
    pub fn new(model: &'a M, options: Options<M>) -> Search<'a, M> {
        Search {
            model,
            options,
            visited: HashMap::default(),
            counts: Counts::default(),
            discoveries: BTreeMap::new(),
            stopped: None,
            interrupt: None,
        }
    }

    /// Stop cleanly once `flag` is set (from a signal handler).
    pub fn interrupt_on(mut self, flag: &'a std::sync::atomic::AtomicBool) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// Runs the search to its end (or a stop); `progress` is called now
    /// and then with the counts so far.
    pub fn run(&mut self, mut progress: impl FnMut(&Counts)) {
        for init in self.model.init_states() {
            if self.stopped.is_some() {
                break;
            }
            if !self.model.within_boundary(&init) {
                continue;
            }
            let (fp, _) = self.fingerprint(&init);
            if self.visited.contains_key(&fp) {
                continue;
            }
            self.visited.insert(fp, Visit { depth: 0, sleep: Box::new([]) });
            self.counts.unique += 1;
            self.judge(&init, &[]);
            let mut stack = Vec::new();
            self.push(&mut stack, init, None, Vec::new(), None);
            self.descend(&mut stack, &mut progress);
        }
        progress(&self.counts);
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// `None` if the search explored everything within its depth.
    pub fn stopped(&self) -> Option<Stopped> {
        self.stopped
    }

    /// The first path found to each property's discovery.
    pub fn discoveries(&self) -> &BTreeMap<&'static str, Vec<M::Action>> {
        &self.discoveries
    }

    /// Every visited state's fingerprint, sorted.
    pub fn fingerprints(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self.visited.keys().copied().collect();
        all.sort_unstable();
        all
    }

    /// The chance that two of the visited states share a fingerprint (see
    /// [`collision_probability`]).
    pub fn collision_probability(&self) -> f64 {
        collision_probability(self.counts.unique)
    }

    /// What the visited set knows `state` by: its fingerprint, or its
    /// class representative's under symmetry reduction, with the
    /// renumbering that takes `state` to the representative.
    fn fingerprint(&self, state: &M::State) -> (u64, Option<Renumbering>) {
        match self.options.symmetry {
            Some(symmetry) => {
                let (representative, renumbering) = (symmetry.canonical)(state);
                (fingerprint(&representative), Some(renumbering))
            }
            None => (fingerprint(state), None),
        }
    }

    /// What the visited set knows `action` of a state by: its fingerprint
    /// (`own`, when known) or, under symmetry reduction, that of the action
    /// as the state's representative names it (`renumbering`, from
    /// [`Self::fingerprint`]).
    fn action_fingerprint(&self, action: &M::Action, own: Option<u64>, renumbering: Option<&Renumbering>) -> u64 {
        let identity = |r: &Renumbering| r.iter().enumerate().all(|(i, &to)| i == to);
        match (self.options.symmetry, renumbering) {
            (Some(symmetry), Some(r)) if !identity(r) => fingerprint(&(symmetry.rename)(action, r)),
            _ => own.unwrap_or_else(|| fingerprint(action)),
        }
    }

    /// The depth-first loop over `stack`.
    fn descend(&mut self, stack: &mut Vec<Frame<M>>, progress: &mut impl FnMut(&Counts)) {
        while let Some(top) = stack.last_mut() {
            if self.stopped.is_some() {
                return;
            }
            let Some(action) = top.todo.get(top.next).cloned() else {
                stack.pop();
                continue;
            };
            top.next += 1;
            let Some(child) = self.model.next_state(&top.state, action.clone()) else { continue };
            self.counts.generated += 1;
            if self.counts.generated.is_multiple_of(CHECK_EVERY) {
                self.check_limits();
                progress(&self.counts);
            }
            // Outside the boundary: not a state of the search, and not
            // put to sleep (nothing was explored under it).
            if !self.model.within_boundary(&child) {
                continue;
            }
            let mut child_sleep = Vec::new();
            if let Some(independent) = self.options.independent {
                child_sleep = top.sleep.iter().filter(|(b, _)| independent(self.model, &action, b)).cloned().collect();
                let action_fp = fingerprint(&action);
                top.sleep.push((action.clone(), action_fp));
            }
            let depth = stack.len(); // the child's, in actions
            self.counts.max_depth = self.counts.max_depth.max(depth);
            let (fp, renumbering) = self.fingerprint(&child);
            // The sleep set as the visited set remembers it: in the names
            // of the child's representative under symmetry reduction, so
            // that a state of the same class, reached again, compares its
            // own sleep set with it.
            let mut sleep: Vec<u64> =
                child_sleep.iter().map(|(a, f)| self.action_fingerprint(a, Some(*f), renumbering.as_ref())).collect();
            sleep.sort_unstable();
            sleep.dedup();
            // `Some`: take only these actions from the child (by fingerprint).
            let mut only: Option<Vec<u64>> = None;
            match self.visited.get_mut(&fp) {
                None => {
                    self.visited.insert(fp, Visit { depth: depth as u32, sleep: sleep.into_boxed_slice() });
                    self.counts.unique += 1;
                    let mut path: Vec<M::Action> = stack.iter().filter_map(|f| f.via.clone()).collect();
                    path.push(action.clone());
                    self.judge(&child, &path);
                }
                Some(seen) => {
                    let covered = seen.depth as usize <= depth && is_subset(&seen.sleep, &sleep);
                    if covered {
                        continue;
                    }
                    // Explore again, from here. Seen before with at least
                    // this much depth left, every action outside the old
                    // sleep set was explored from here then, with more
                    // budget: take only the old sleep set's actions that
                    // this visit has awake, and remember the intersection
                    // of the two sleep sets (Godefroid 1996, fig. 5.2).
                    // Seen only deeper: in full, under this visit's sleep
                    // set. (An earlier version took everything again
                    // outside the intersection, because this lost 2 of
                    // 114,128 states at 8 actions; that was stateright's
                    // hash merging distinct states, since fixed.)
                    if (depth as u32) >= seen.depth {
                        only = Some(seen.sleep.iter().copied().filter(|f| sleep.binary_search(f).is_err()).collect());
                        sleep.retain(|f| seen.sleep.binary_search(f).is_ok());
                    }
                    *seen = Visit { depth: depth as u32, sleep: sleep.into_boxed_slice() };
                }
            }
            if depth < self.options.max_depth {
                let only = only.map(|fps| (fps, renumbering));
                self.push(stack, child, Some(action), child_sleep, only);
            }
        }
    }

    /// Pushes `state` with every action the model lists for it outside
    /// `sleep` (and, if `only`, among those: fingerprints of actions as
    /// named after the renumbering that goes with them).
    fn push(
        &mut self,
        stack: &mut Vec<Frame<M>>,
        state: M::State,
        via: Option<M::Action>,
        sleep: Vec<(M::Action, u64)>,
        only: Option<(Vec<u64>, Option<Renumbering>)>,
    ) {
        let mut todo = Vec::new();
        self.model.actions(&state, &mut todo);
        let before = todo.len();
        todo.retain(|a| !sleep.iter().any(|(b, _)| b == a));
        if let Some((only, renumbering)) = only {
            todo.retain(|a| only.contains(&self.action_fingerprint(a, None, renumbering.as_ref())));
        }
        self.counts.slept += (before - todo.len()) as u64;
        self.counts.expanded += 1;
        stack.push(Frame { state, via, todo, next: 0, sleep });
    }

    /// Records the properties `state` (reached by `path`) discovers: an
    /// "always" property it breaks, a "sometimes" property it satisfies.
    fn judge(&mut self, state: &M::State, path: &[M::Action]) {
        let properties = self.model.properties();
        for p in &properties {
            if self.discoveries.contains_key(p.name) {
                continue;
            }
            let holds = (p.condition)(self.model, state);
            let discovered = match p.expectation {
                Expectation::Always => !holds,
                Expectation::Sometimes => holds,
                // Liveness is not judged by this search.
                Expectation::Eventually => false,
            };
            if discovered {
                self.discoveries.insert(p.name, path.to_vec());
                if self.options.first_failure && matches!(p.expectation, Expectation::Always) {
                    self.stopped = Some(Stopped::FirstFailure);
                }
            }
        }
        let judged = properties.iter().filter(|p| !matches!(p.expectation, Expectation::Eventually)).count();
        if self.stopped.is_none() && self.discoveries.len() == judged {
            self.stopped = Some(Stopped::AllDiscovered);
        }
    }

    fn check_limits(&mut self) {
        if self.interrupt.is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed)) {
            self.stopped = Some(Stopped::Interrupted);
        }
        if let (Some(budget), Some(rss)) = (self.options.max_memory, resident_bytes()) {
            if rss > budget {
                self.stopped = Some(Stopped::MemoryBudget { rss_bytes: rss });
            }
        }
    }
}

/// A 64-bit fingerprint: SipHash with fixed keys, so the same state has
/// the same fingerprint in every run.
pub fn fingerprint<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The chance that two of `unique` states share a fingerprint (so that
/// one was skipped), estimated as TLC does: n²/2⁶⁵ for n states.
pub fn collision_probability(unique: u64) -> f64 {
    let n = unique as f64;
    n * n / 2f64.powi(65)
}

/// Both slices sorted.
fn is_subset(small: &[u64], big: &[u64]) -> bool {
    small.iter().all(|x| big.binary_search(x).is_ok())
}

/// The visited table's keys are fingerprints already: hash them no further.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// This process's resident memory (Linux: `/proc/self/statm`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// What [`deepen`] found.
pub struct Deepening<M: Model> {
    /// The deepest bound searched to its end: every state within this many
    /// actions was visited.
    pub completed: usize,
    /// A shortest path to each property's discovery (see [`deepen`]).
    pub discoveries: BTreeMap<&'static str, Vec<M::Action>>,
    /// Why the last search stopped early, if it did.
    pub stopped: Option<Stopped>,
    /// The counts of every search, added up (so states visited again by a
    /// deeper search count again).
    pub total: Counts,
    /// The last search's counts alone.
    pub last: Counts,
}

/// **Iterative deepening** over [`Search`]: every state within 1 action,
/// then within 2, …, up to `options.max_depth`, each a search of its own.
/// A property first discovered by the search to `d` actions has no
/// discovery within `d - 1` (that search visited every state there), so
/// the path found is a **shortest** one: `d` actions. A depth-first
/// search alone finds some path within its bound, often much longer, which
/// the shrinker then has to cut down without the guarantee. The cost: the
/// states within `d - 1` are visited again at each step, which with a
/// branching factor of about 2–4 per action adds a third to a half to
/// the last search's work; memory stays that of one search.
///
/// Stops after the bound at which every property (not "eventually") has
/// its discovery, at the first violation if `options.first_failure`, when
/// a search stops early (its discoveries are kept: they are shortest
/// too, by the argument above), or once a bound adds no state (the whole
/// space lies within it).
pub fn deepen<M: Model>(
    model: &M,
    options: Options<M>,
    interrupt: Option<&std::sync::atomic::AtomicBool>,
    mut progress: impl FnMut(usize, &Counts),
) -> Deepening<M>
where
    M::State: Hash,
    M::Action: Hash + Clone + PartialEq,
{
    let judged = model.properties().iter().filter(|p| !matches!(p.expectation, Expectation::Eventually)).count();
    let mut result = Deepening {
        completed: 0,
        discoveries: BTreeMap::new(),
        stopped: None,
        total: Counts::default(),
        last: Counts::default(),
    };
    for depth in 1..=options.max_depth {
        let mut search = Search::new(model, Options { max_depth: depth, ..options.clone() });
        if let Some(flag) = interrupt {
            search = search.interrupt_on(flag);
        }
        search.run(|c| progress(depth, c));
        result.last = search.counts();
        result.total.add(&search.counts());
        for (name, path) in search.discoveries() {
            result.discoveries.entry(name).or_insert_with(|| path.clone());
        }
        result.stopped = search.stopped();
        match search.stopped() {
            None => result.completed = depth,
            // Every property has its discovery (the check below ends the
            // loop): this bound was not searched to its end.
            Some(Stopped::AllDiscovered) => {}
            Some(_) => break,
        }
        if result.discoveries.len() == judged {
            result.stopped = Some(Stopped::AllDiscovered);
            break;
        }
        if search.counts().max_depth < depth {
            // No state needs `depth` actions: deeper bounds add nothing.
            result.completed = options.max_depth;
            break;
        }
    }
    result
}
