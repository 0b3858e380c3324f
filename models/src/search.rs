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
//! combination sound); seen again at a smaller depth, in full (unless
//! the search has no depth bound, [`UNBOUNDED`], where no visit was cut
//! short by it).
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
//! **Persistent sets.** With [`Options::persistent`], where the model's
//! rule picks an action (one that alone is a persistent set, invisible
//! to the properties, and never picked all round a cycle: [`Persistent`])
//! the search takes only it, still under the sleep set. Unlike sleep sets
//! this skips states, so only with no depth bound ([`UNBOUNDED`]); every
//! property keeps its verdict.
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
//! **Threads.** With [`Options::threads`], the search goes alone to a
//! shallow depth, keeps the states it reaches there, and the threads take
//! them one at a time and search below each, sharing the visited set
//! (sharded, each shard under its own lock). [`Search::run`] says why the
//! reductions above stay sound; a test compares the states visited with
//! those of one thread.
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
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Whether two actions commute where both are enabled: either order
/// reaches the same state and neither disables the other.
pub type Independence<M> = fn(&M, &<M as Model>::Action, &<M as Model>::Action) -> bool;

/// Of a state's enabled actions (as the model lists them), one that alone
/// is a **persistent set**: the search takes it and nothing else there.
/// The rule must promise, for every state where it picks an action `t`:
/// no sequence of actions from the state that leaves `t` out contains an
/// action that does not commute with `t` (C1); `t` changes nothing any
/// property reads (C2, visibility); and no cycle of states is made only
/// of states where it picks an action (C3, the cycle proviso). Then every
/// property gets the same verdict as without it (the reduced graph is
/// stutter-equivalent for what the properties read: Peled 1994, Clarke,
/// Grumberg and Peled, *Model Checking*, ch. 10), though states are
/// skipped: only with [`UNBOUNDED`] depth, since a path the rule stands
/// for can be an action longer.
pub type Persistent<M> = fn(&M, &<M as Model>::State, &[<M as Model>::Action]) -> Option<usize>;

/// A renumbering of a model's actors (server `i` becomes `new_index[i]`).
pub type Renumbering = Vec<usize>;

/// What symmetry reduction needs of a model.
pub struct Symmetry<M: Model> {
    /// The fingerprint ([`fingerprint`]) of the representative of a
    /// state's symmetry class (the same state for every member of the
    /// class), and the renumbering that takes the state there.
    pub canonical: fn(&M::State) -> (u64, Renumbering),
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

/// [`Options::max_depth`] for a search with no depth bound: it explores
/// every reachable state, so the model's own boundary must leave finitely
/// many (for the Raft model, budgets of timeouts and retries,
/// [`crate::ModelConfig::max_timeouts`]), or it never ends.
pub const UNBOUNDED: usize = usize::MAX;

/// What to search and when to stop.
pub struct Options<M: Model> {
    /// Explore every state reached by at most this many actions
    /// ([`UNBOUNDED`]: every reachable state).
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
    /// Threads that search at once (1: this one alone). They share the
    /// visited set; see [`Search::run`].
    pub threads: usize,
    /// `Some`: where this rule picks an action, take only it
    /// ([`Persistent`]; [`crate::independence::lone_refusal`] for the
    /// Raft model). Needs [`UNBOUNDED`] depth.
    pub persistent: Option<Persistent<M>>,
    /// `Some`: record this projection of every visited state
    /// ([`Search::projections`]), for tests that compare what two
    /// searches reach where one skips states.
    pub project: Option<fn(&M::State) -> u64>,
}

// By hand: a derive would ask `M: Clone` of the model.
impl<M: Model> Clone for Options<M> {
    fn clone(&self) -> Self {
        Options { ..*self }
    }
}

impl<M: Model> Options<M> {
    pub fn new(max_depth: usize) -> Options<M> {
        Options {
            max_depth,
            independent: None,
            max_memory: None,
            first_failure: false,
            symmetry: None,
            threads: 1,
            persistent: None,
            project: None,
        }
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
    /// The flag of [`Search::interrupt_on`] was set (Ctrl-C).
    Interrupted,
    /// The other search of a DPOR portfolio ended first
    /// ([`crate::dpor::portfolio`]).
    Outrun,
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
    /// Actions left out where the persistent-set rule picked one.
    pub pruned: u64,
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
        self.pruned += other.pruned;
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
    /// The visited set, in shards (by a fingerprint's top bits) so that
    /// threads seldom wait for each other.
    visited: Vec<Mutex<HashMap<u64, Visit, BuildHasherDefault<PassThrough>>>>,
    counts: AtomicCounts,
    /// Per property (by name): the actions of the first path found to a
    /// state that violates it ("always") or satisfies it ("sometimes").
    discoveries: Mutex<BTreeMap<&'static str, Vec<M::Action>>>,
    stopped: Mutex<Option<Stopped>>,
    /// Set with `stopped`: read in every loop without the lock.
    stopping: AtomicBool,
    interrupt: Option<&'a AtomicBool>,
    /// States the lone phase handed to the threads (0 on one thread).
    handed_out: usize,
    /// [`Options::project`] of every visited state.
    projections: Mutex<HashSet<u64>>,
}

/// How often (in states generated) the memory and the interrupt flag are
/// looked at and the progress callback is called.
const CHECK_EVERY: u64 = 1 << 16;

/// Shards of the visited set (a power of two).
const SHARDS: usize = 64;

/// With more than one thread, the search first goes alone to the depth at
/// which there are at least this many states per thread to hand out.
const STATES_PER_THREAD: usize = 256;

/// [`Counts`], shared by the threads.
#[derive(Default)]
struct AtomicCounts {
    unique: AtomicU64,
    generated: AtomicU64,
    expanded: AtomicU64,
    slept: AtomicU64,
    pruned: AtomicU64,
    max_depth: AtomicUsize,
}

/// A state the first, lone phase of a search with threads reached at the
/// depth where it hands the work out: what it would have pushed.
struct Start<M: Model> {
    state: M::State,
    path: Vec<M::Action>,
    sleep: Vec<(M::Action, u64)>,
    only: Option<(Vec<u64>, Option<Renumbering>)>,
}

/// Where a depth-first loop stops going down: at the depth bound, or (the
/// lone phase of a search with threads) at a depth where it keeps the
/// states it reaches for the threads.
struct Floor<'s, M: Model> {
    depth: usize,
    starts: Option<&'s mut Vec<Start<M>>>,
}

impl<'a, M: Model + Sync> Search<'a, M>
where
    M::State: Hash + Send,
    M::Action: Hash + Clone + PartialEq + Send,
{
    pub fn new(model: &'a M, options: Options<M>) -> Search<'a, M> {
        assert!(
            options.persistent.is_none() || options.max_depth == UNBOUNDED,
            "a persistent-set rule needs a search without a depth bound"
        );
        Search {
            model,
            options,
            visited: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
            counts: AtomicCounts::default(),
            discoveries: Mutex::new(BTreeMap::new()),
            stopped: Mutex::new(None),
            stopping: AtomicBool::new(false),
            interrupt: None,
            handed_out: 0,
            projections: Mutex::new(HashSet::new()),
        }
    }

    /// Stop cleanly once `flag` is set (from a signal handler).
    pub fn interrupt_on(mut self, flag: &'a AtomicBool) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// Runs the search to its end (or a stop); `progress` is called now
    /// and then with the counts so far.
    ///
    /// With [`Options::threads`] above 1, this thread first searches alone
    /// down to the first depth with `STATES_PER_THREAD` states per
    /// thread, keeping those states instead of going below them; then the
    /// threads take them one at a time and search below each, sharing the
    /// visited set. Nothing of the argument for sleep sets depends on the
    /// order the states are explored in: a state found in the visited set
    /// is one whose exploration some thread has begun and will finish (a
    /// sibling asleep on an action stands for that action's subtree, which
    /// some thread explores in full), and each visit's record is read and
    /// updated under its shard's lock. Which path reaches a discovery
    /// first may differ from run to run; with [`deepen`] its length does
    /// not.
    pub fn run(&mut self, mut progress: impl FnMut(&Counts)) {
        let threads = self.options.threads.max(1);
        let floor = if threads > 1 { self.split_depth(threads * STATES_PER_THREAD) } else { self.options.max_depth };
        let mut starts = Vec::new();
        let this: &Search<'a, M> = self;
        for init in this.model.init_states() {
            if this.is_stopped() {
                break;
            }
            if !this.model.within_boundary(&init) {
                continue;
            }
            let (fp, _) = this.fingerprint(&init);
            {
                let mut shard = this.shard(fp);
                if shard.contains_key(&fp) {
                    continue;
                }
                shard.insert(fp, Visit { depth: 0, sleep: Box::new([]) });
            }
            this.counts.unique.fetch_add(1, Ordering::Relaxed);
            this.judge(&init, &[]);
            let mut stack = Vec::new();
            this.push(&mut stack, init, None, Vec::new(), None);
            let floor = Floor { depth: floor, starts: (floor < this.options.max_depth).then_some(&mut starts) };
            this.descend(&mut stack, &[], floor, Some(&mut progress));
        }
        self.handed_out = starts.len();
        let this: &Search<'a, M> = self;
        if !starts.is_empty() {
            let queue = Mutex::new(VecDeque::from(starts));
            std::thread::scope(|scope| {
                for _ in 1..threads {
                    scope.spawn(|| this.work(&queue, None));
                }
                this.work(&queue, Some(&mut progress));
            });
        }
        progress(&self.counts());
    }

    /// A thread's share of a search with threads: the kept states, one at
    /// a time, each searched below.
    fn work<'p>(&self, queue: &Mutex<VecDeque<Start<M>>>, mut progress: Option<&mut (dyn FnMut(&Counts) + 'p)>) {
        loop {
            // In the order the lone phase reached them: the first have the
            // smallest sleep sets and the most below them, so they start
            // first and the threads end close together.
            let Some(start) = lock(queue).pop_front() else { return };
            if self.is_stopped() {
                return;
            }
            let mut stack = Vec::new();
            let floor = Floor { depth: self.options.max_depth, starts: None };
            self.push(&mut stack, start.state, None, start.sleep, start.only);
            self.descend(&mut stack, &start.path, floor, progress.as_deref_mut());
        }
    }

    /// The shallowest depth below the bound with at least `wanted` states
    /// (counting paths, not distinct states: a cheap estimate for
    /// [`Self::run`]), or the bound. One pass, layer by layer, stopping as
    /// soon as a layer has `wanted`.
    fn split_depth(&self, wanted: usize) -> usize {
        let mut layer: Vec<M::State> = self.model.init_states();
        for depth in 1..self.options.max_depth {
            let mut next = Vec::new();
            for state in &layer {
                let mut actions = Vec::new();
                self.model.actions(state, &mut actions);
                next.extend(actions.into_iter().filter_map(|a| self.model.next_state(state, a)));
                if next.len() >= wanted {
                    return depth;
                }
            }
            if next.is_empty() {
                break; // every run ends sooner
            }
            layer = next;
        }
        self.options.max_depth
    }

    pub fn counts(&self) -> Counts {
        let c = &self.counts;
        Counts {
            unique: c.unique.load(Ordering::Relaxed),
            generated: c.generated.load(Ordering::Relaxed),
            expanded: c.expanded.load(Ordering::Relaxed),
            slept: c.slept.load(Ordering::Relaxed),
            pruned: c.pruned.load(Ordering::Relaxed),
            max_depth: c.max_depth.load(Ordering::Relaxed),
        }
    }

    /// How many states the search went alone to before the threads took
    /// over below them (0 on one thread, or when the space is too small).
    pub fn handed_out(&self) -> usize {
        self.handed_out
    }

    /// `None` if the search explored everything within its depth.
    pub fn stopped(&self) -> Option<Stopped> {
        *lock(&self.stopped)
    }

    fn is_stopped(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Stops the search (the first reason given stays).
    fn stop(&self, why: Stopped) {
        lock(&self.stopped).get_or_insert(why);
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The first path found to each property's discovery.
    pub fn discoveries(&self) -> BTreeMap<&'static str, Vec<M::Action>> {
        lock(&self.discoveries).clone()
    }

    /// [`Options::project`] of every visited state.
    pub fn projections(&self) -> HashSet<u64> {
        lock(&self.projections).clone()
    }

    /// Every visited state's fingerprint, sorted.
    pub fn fingerprints(&self) -> Vec<u64> {
        let mut all: Vec<u64> =
            self.visited.iter().flat_map(|shard| lock(shard).keys().copied().collect::<Vec<_>>()).collect();
        all.sort_unstable();
        all
    }

    /// The chance that two of the visited states share a fingerprint (see
    /// [`collision_probability`]).
    pub fn collision_probability(&self) -> f64 {
        collision_probability(self.counts().unique)
    }

    fn shard(&self, fp: u64) -> MutexGuard<'_, HashMap<u64, Visit, BuildHasherDefault<PassThrough>>> {
        lock(&self.visited[(fp >> 58) as usize % SHARDS])
    }

    /// What the visited set knows `state` by: its fingerprint, or its
    /// class representative's under symmetry reduction, with the
    /// renumbering that takes `state` to the representative.
    fn fingerprint(&self, state: &M::State) -> (u64, Option<Renumbering>) {
        match self.options.symmetry {
            Some(symmetry) => {
                let (fingerprint, renumbering) = (symmetry.canonical)(state);
                (fingerprint, Some(renumbering))
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

    /// The depth-first loop over `stack`, whose bottom state `base` leads
    /// to from an initial state.
    fn descend<'p>(
        &self,
        stack: &mut Vec<Frame<M>>,
        base: &[M::Action],
        mut floor: Floor<'_, M>,
        mut progress: Option<&mut (dyn FnMut(&Counts) + 'p)>,
    ) {
        while let Some(top) = stack.last_mut() {
            if self.is_stopped() {
                return;
            }
            let Some(action) = top.todo.get(top.next).cloned() else {
                stack.pop();
                continue;
            };
            top.next += 1;
            let Some(child) = self.model.next_state(&top.state, action.clone()) else { continue };
            let generated = self.counts.generated.fetch_add(1, Ordering::Relaxed) + 1;
            if generated.is_multiple_of(CHECK_EVERY) {
                self.check_limits();
                if let Some(progress) = progress.as_deref_mut() {
                    progress(&self.counts());
                }
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
            let depth = base.len() + stack.len(); // the child's, in actions
            self.counts.max_depth.fetch_max(depth, Ordering::Relaxed);
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
            let mut shard = self.shard(fp);
            match shard.get_mut(&fp) {
                None => {
                    shard.insert(fp, Visit { depth: depth as u32, sleep: sleep.into_boxed_slice() });
                    drop(shard);
                    self.counts.unique.fetch_add(1, Ordering::Relaxed);
                    let mut path: Vec<M::Action> = base.to_vec();
                    path.extend(stack.iter().filter_map(|f| f.via.clone()));
                    path.push(action.clone());
                    self.judge(&child, &path);
                }
                Some(seen) => {
                    // Without a depth bound, no visit was cut short: the
                    // depth it was seen at does not matter.
                    let unbounded = self.options.max_depth == UNBOUNDED;
                    let deep_enough = unbounded || seen.depth as usize <= depth;
                    let covered = deep_enough && is_subset(&seen.sleep, &sleep);
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
                    if deep_enough {
                        only = Some(seen.sleep.iter().copied().filter(|f| sleep.binary_search(f).is_err()).collect());
                        sleep.retain(|f| seen.sleep.binary_search(f).is_ok());
                    }
                    let depth = if unbounded { seen.depth } else { depth as u32 };
                    *seen = Visit { depth, sleep: sleep.into_boxed_slice() };
                }
            }
            let only = only.map(|fps| (fps, renumbering));
            if depth < floor.depth {
                self.push(stack, child, Some(action), child_sleep, only);
            } else if let Some(starts) = floor.starts.as_deref_mut() {
                let mut path: Vec<M::Action> = base.to_vec();
                path.extend(stack.iter().filter_map(|f| f.via.clone()));
                path.push(action);
                starts.push(Start { state: child, path, sleep: child_sleep, only });
            }
        }
    }

    /// Pushes `state` with every action the model lists for it outside
    /// `sleep` (and, if `only`, among those: fingerprints of actions as
    /// named after the renumbering that goes with them).
    fn push(
        &self,
        stack: &mut Vec<Frame<M>>,
        state: M::State,
        via: Option<M::Action>,
        sleep: Vec<(M::Action, u64)>,
        only: Option<(Vec<u64>, Option<Renumbering>)>,
    ) {
        let mut todo = Vec::new();
        self.model.actions(&state, &mut todo);
        if let Some(i) = self.options.persistent.and_then(|rule| rule(self.model, &state, &todo)) {
            self.counts.pruned.fetch_add(todo.len() as u64 - 1, Ordering::Relaxed);
            todo = vec![todo.swap_remove(i)];
        }
        let before = todo.len();
        todo.retain(|a| !sleep.iter().any(|(b, _)| b == a));
        if let Some((only, renumbering)) = only {
            todo.retain(|a| only.contains(&self.action_fingerprint(a, None, renumbering.as_ref())));
        }
        self.counts.slept.fetch_add((before - todo.len()) as u64, Ordering::Relaxed);
        self.counts.expanded.fetch_add(1, Ordering::Relaxed);
        stack.push(Frame { state, via, todo, next: 0, sleep });
    }

    /// Records the properties `state` (reached by `path`) discovers: an
    /// "always" property it breaks, a "sometimes" property it satisfies.
    /// The conditions are evaluated outside the lock (the linearizability
    /// check is the costliest step of a state).
    fn judge(&self, state: &M::State, path: &[M::Action]) {
        if let Some(project) = self.options.project {
            lock(&self.projections).insert(project(state));
        }
        let properties = self.model.properties();
        let open: Vec<bool> = {
            let found = lock(&self.discoveries);
            properties.iter().map(|p| !found.contains_key(p.name)).collect()
        };
        let mut discovered = Vec::new();
        for (p, _) in properties.iter().zip(&open).filter(|(_, open)| **open) {
            if discovers(&p.expectation, (p.condition)(self.model, state)) {
                discovered.push(p);
            }
        }
        if discovered.is_empty() {
            return;
        }
        let mut found = lock(&self.discoveries);
        for p in discovered {
            found.entry(p.name).or_insert_with(|| path.to_vec());
            if self.options.first_failure && matches!(p.expectation, Expectation::Always) {
                self.stop(Stopped::FirstFailure);
            }
        }
        let judged = properties.iter().filter(|p| !matches!(p.expectation, Expectation::Eventually)).count();
        if found.len() == judged {
            self.stop(Stopped::AllDiscovered);
        }
    }

    fn check_limits(&self) {
        if self.interrupt.is_some_and(|f| f.load(Ordering::Relaxed)) {
            self.stop(Stopped::Interrupted);
        }
        if let (Some(budget), Some(rss)) = (self.options.max_memory, resident_bytes()) {
            if rss > budget {
                self.stop(Stopped::MemoryBudget { rss_bytes: rss });
            }
        }
    }
}

/// Whether a state where a property's condition `holds` (or not) is that
/// property's discovery: a violation of an "always" property, an example
/// of a "sometimes" one. Liveness ("eventually") is not judged by these
/// searches.
pub fn discovers(expectation: &Expectation, holds: bool) -> bool {
    match expectation {
        Expectation::Always => !holds,
        Expectation::Sometimes => holds,
        Expectation::Eventually => false,
    }
}

/// A lock whose holder cannot have panicked mid-update (the search's own
/// threads only), or whose data is still whole if it did.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 64-bit fingerprint: aHash with fixed keys, so the same state has the
/// same fingerprint in every run of one build (aHash promises no more:
/// its output may change with its version or the platform, and nothing
/// keeps a fingerprint beyond a run). aHash rather than the standard
/// library's SipHash-1-3: a fingerprint digests a whole state in many
/// small writes, where aHash's folded multiply beats SipHash's rounds (a
/// symmetric search 24% faster, measured); it passes SMHasher, which is
/// what the collision estimate ([`collision_probability`]) assumes.
pub fn fingerprint<T: Hash + ?Sized>(value: &T) -> u64 {
    FINGERPRINT_KEYS.hash_one(value)
}

/// [`fingerprint`]'s fixed keys (any will do; fixed, so runs repeat).
const FINGERPRINT_KEYS: ahash::RandomState = ahash::RandomState::with_seeds(
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

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
pub fn deepen<M: Model + Sync>(
    model: &M,
    options: Options<M>,
    interrupt: Option<&AtomicBool>,
    mut progress: impl FnMut(usize, &Counts),
) -> Deepening<M>
where
    M::State: Hash + Send,
    M::Action: Hash + Clone + PartialEq + Send,
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
            result.discoveries.entry(name).or_insert(path);
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
