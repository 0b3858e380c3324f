//! The per-key search: Wing & Gong / Lowe just-in-time linearization with
//! Porcupine-style memoization, plus pruning that exploits what the later
//! Gets returned. `specs/history.md` gives the same account with the
//! soundness arguments spelled out.
//!
//! Input: the operations of ONE key. Output: whether some total order of them
//! (a) respects real time, (b) contains every completed call and any subset
//! of the pending ones, and (c) replays correctly against a single string
//! register with put / append / get. A key with a Delete or PutIfAbsent
//! goes to the general search ([`super::general`]) instead: the pruning
//! here assumes no write depends on the value it meets.
//!
//! # Shape of the search
//!
//! All call and return instants go into a doubly linked list sorted by time
//! (at equal times calls come first: intervals are closed, so an operation
//! called at the instant another returns is concurrent with it and may be
//! ordered before it). Walking the list from its head, every *call* entry met
//! before the first *return* entry belongs to an operation all of whose
//! real-time predecessors are already linearized, so it is a candidate for
//! the next linearization point. The search tries the candidates in list
//! order; linearizing one removes ("lifts") its two entries from the list,
//! pushes a frame, and restarts from the head. Meeting a return entry means
//! that operation should already have been linearized: backtrack (pop,
//! re-insert, restore the value, try the next candidate after it). Pending
//! calls have no return entry, so they never force a backtrack and may stay
//! unlinearized forever; the search succeeds once every completed call is
//! linearized.
//!
//! # Values without their bytes
//!
//! Sort the outputs of all completed Gets once. The values that matter are
//! prefixes of some output (a Get can only ever match such a value), and the
//! outputs having a given prefix form a contiguous range of that sorted
//! array. So the current value is kept as `(len, lo..hi)`: its length and the
//! range of outputs it is a prefix of. An Append narrows the range by binary
//! search on the bytes after `len`; a Put jumps to a precomputed range; a Get
//! matches iff its output lies in the range and has length `len`. When the
//! range is non-empty, `(len, lo)` identifies the value exactly (it is the
//! first `len` bytes of output `lo`); when it is empty the value is a prefix
//! of no output, so no Get can observe it before the next Put, and its bytes
//! never matter again. Multi-kilobyte values thus cost O(1) to store, undo,
//! compare and memoize.
//!
//! # Memoization
//!
//! The rest of the search depends only on (set of linearized calls, current
//! value), so each such pair is entered at most once. The memo stores a
//! 128-bit Zobrist fingerprint of the set (XOR of a random 128-bit word per
//! operation; two different sets collide with probability 2^-128, so with
//! `E` entries a false hit has probability below `E² / 2^129`: negligible)
//! and the exact value identity `(len, lo)`, or the marker *dead*.
//!
//! # Pruning
//!
//! All of these only ever discard branches that cannot lead to a
//! linearization (`specs/history.md` argues each one):
//!
//! * **Prefix pruning, with lookahead.** A remaining completed Get `g` will
//!   see `base ++ (remaining appends)`, where `base` is the current value if
//!   no Put comes before `g`, or else the value of the last Put before `g`,
//!   which must be a remaining Put called by `g`'s return whose value is a
//!   prefix of `g`'s output. So after each Put/Append, each of the first
//!   [`PREFIX_CHECK_LIMIT`] remaining Gets in return order must have such a
//!   base, and the rest of its output must be made of remaining append
//!   arguments (see [`AppendIndex`]). With no Put around this is exactly
//!   "the value must be a prefix of every upcoming Get's output", which
//!   decides append-heavy keys, where every order of concurrent appends
//!   gives a new value and the memo never hits; the lookahead catches an
//!   append that was consumed too early, e.g. before a Put erased it.
//! * **Dead values.** A value is *dead* when no remaining Get can be
//!   linearized before the next Put: each Get in its range was called after
//!   some remaining completed Put returned (so that Put must come first).
//!   Then only appends happen until a Put erases them, so all dead values
//!   have the same futures and the memo merges them: the order in which
//!   doomed appends ran stops mattering.
//! * **Useless pending calls.** A pending call need never take effect, so
//!   linearizing one is skipped when it cannot help: when the value it leaves
//!   is dead, or equal to the value before. Pending calls that could never
//!   help (their argument appears in no Get output) are dropped up front.
//! * **No Put left.** A dead value with Gets remaining but no Put to revive
//!   it is a dead end.
//!
//! The state-based tests depend only on (set, value), and the transition
//! tests only discard a step that some other branch makes redundant, so
//! pruning and memoization compose soundly. The differential tests against
//! [`super::brute`] guard all of it.

use super::appends::AppendIndex;
use super::history::{OpKind, Operation};
use super::lists::{time_ordered_entries, zobrist_keys, Links, MinTree, TimeList};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// How many upcoming Gets (in return-time order) prefix pruning consults.
/// The first one does nearly all the work; a few more catch conflicts
/// between concurrent Gets earlier. Any value is sound.
const PREFIX_CHECK_LIMIT: usize = 8;

/// Search-step accounting shared by the search and the minimiser. One step
/// is one visit of a list entry (try a candidate, or backtrack); setting up
/// a search costs one step per operation, so that the minimiser's many small
/// searches are bounded by the same budget.
#[derive(Debug)]
pub(crate) struct Steps {
    used: u64,
    max: u64,
}

impl Steps {
    pub(crate) fn new(max: u64) -> Self {
        Steps { used: 0, max }
    }

    /// Consumes one step; false once the budget is spent.
    pub(super) fn tick(&mut self) -> bool {
        self.charge(1)
    }

    /// Consumes `n` steps at once (or what is left); false once the budget
    /// is spent.
    fn charge(&mut self, n: u64) -> bool {
        if self.used >= self.max {
            return false;
        }
        self.used = self.used.saturating_add(n).min(self.max);
        true
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.used >= self.max
    }

    /// Steps left.
    pub(crate) fn remaining(&self) -> u64 {
        self.max - self.used
    }

    /// Consumes what `other` (a budget carved out of this one) used.
    pub(crate) fn charge_used(&mut self, other: &Steps) {
        self.charge(other.used);
    }
}

/// Verdict for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyOutcome {
    Ok,
    Illegal,
    Unknown,
}

/// Decides whether `ops` (all on one key) are linearizable, spending at most
/// the remaining `steps`.
pub(crate) fn check_key(ops: &[&Operation], steps: &mut Steps) -> KeyOutcome {
    if !steps.charge(ops.len() as u64) {
        return KeyOutcome::Unknown;
    }
    if ops.iter().any(|o| o.kind.is_conditional()) {
        // The pruning below assumes no write looks at the value.
        return super::general::check_key(ops, steps);
    }
    let mut live = Vec::with_capacity(ops.len());
    for &op in ops {
        match op.ret {
            // An empty interval has no instant at which to take effect.
            Some(ret) if ret < op.call => return KeyOutcome::Illegal,
            // A Get that never returned told nobody anything.
            None if op.kind == OpKind::Get => {}
            _ => live.push(op),
        }
    }
    let completed = live.iter().filter(|o| o.ret.is_some()).count();
    if completed == 0 {
        return KeyOutcome::Ok;
    }
    drop_invisible_pending(&mut live);
    Search::new(&live).run(completed, steps)
}

/// Bound on the window hashes [`drop_invisible_pending`] computes (one per
/// output byte per distinct pending-Append argument length, tens of
/// milliseconds at most); pending Appends of lengths it cannot afford to
/// look for are simply kept.
const INVISIBLE_SCAN_WINDOWS: usize = 1 << 25;

/// Removes pending Puts and Appends that no Get can have observed: a pending
/// Put whose value starts no Get output, a pending Append whose argument is
/// empty or occurs in no Get output. Linearizing one of them would leave a
/// value that is a prefix of no output (or unchanged), which the search
/// prunes as useless every time (see "Useless pending calls"), so dropping
/// them up front changes no verdict; it only saves rescanning them at every
/// step, which dominates when many calls time out.
fn drop_invisible_pending(live: &mut Vec<&Operation>) {
    if live.iter().all(|o| o.ret.is_some()) {
        return;
    }
    let mut outputs: Vec<&[u8]> = live.iter().filter(|o| o.kind == OpKind::Get).map(|o| o.output.as_bytes()).collect();
    outputs.sort_unstable();
    outputs.dedup();
    // Every substring of an output is a substring of a maximal output (one
    // that prefixes no other); in sorted order, a string that prefixes any
    // other prefixes its successor.
    let maximal: Vec<&[u8]> = outputs
        .iter()
        .enumerate()
        .filter(|&(k, o)| outputs.get(k + 1).is_none_or(|next| !next.starts_with(o)))
        .map(|(_, o)| *o)
        .collect();
    let maximal_bytes: usize = maximal.iter().map(|o| o.len()).sum();

    // Look for the pending Append arguments in the outputs by fingerprint,
    // one pass per distinct length. A fingerprint collision can only keep
    // an Append that could have been dropped, which is harmless.
    type FingerprintSet = HashSet<(usize, u64), BuildHasherDefault<FoldHasher>>;
    let mut wanted = FingerprintSet::default();
    for op in live.iter().filter(|o| o.ret.is_none() && o.kind == OpKind::Append && !o.value.is_empty()) {
        wanted.insert((op.value.len(), RollingHash::of(op.value.as_bytes())));
    }
    let mut lengths: Vec<usize> = wanted.iter().map(|&(len, _)| len).collect();
    lengths.sort_unstable();
    lengths.dedup();
    lengths.truncate(INVISIBLE_SCAN_WINDOWS / maximal_bytes.max(1));
    let mut found = FingerprintSet::default();
    for &len in &lengths {
        for out in &maximal {
            for window in RollingHash::windows(out, len) {
                if wanted.contains(&(len, window)) {
                    found.insert((len, window));
                }
            }
        }
    }

    live.retain(|op| {
        let arg = op.value.as_bytes();
        match (op.ret, op.kind) {
            (Some(_), _) | (None, OpKind::Get) => true,
            (None, OpKind::Put) => {
                let first_not_below = outputs.partition_point(|o| *o < arg);
                outputs.get(first_not_below).is_some_and(|o| o.starts_with(arg))
            }
            (None, OpKind::Delete | OpKind::PutIfAbsent) => unreachable!("checked by the general search"),
            (None, OpKind::Append) => {
                if arg.is_empty() {
                    false
                } else if lengths.binary_search(&arg.len()).is_err() {
                    true // not looked for: keep
                } else {
                    found.contains(&(arg.len(), RollingHash::of(arg)))
                }
            }
        }
    });
}

/// Polynomial hash modulo 2^64 of byte strings, with O(1) sliding.
struct RollingHash;

impl RollingHash {
    const BASE: u64 = 0x100_0000_01B3;

    fn of(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0u64, |h, &b| h.wrapping_mul(Self::BASE).wrapping_add(u64::from(b) + 1))
    }

    /// The hashes of all `len`-byte windows of `bytes`, left to right.
    fn windows(bytes: &[u8], len: usize) -> impl Iterator<Item = u64> + '_ {
        let top = (1..len).fold(1u64, |p, _| p.wrapping_mul(Self::BASE));
        let mut h = Self::of(bytes.get(..len).unwrap_or_default());
        (len..=bytes.len()).filter(move |_| len > 0).map(move |end| {
            let current = h;
            if end < bytes.len() {
                let out = u64::from(bytes[end - len]) + 1;
                let inn = u64::from(bytes[end]) + 1;
                h = h.wrapping_sub(out.wrapping_mul(top)).wrapping_mul(Self::BASE).wrapping_add(inn);
            }
            current
        })
    }
}

/// The current value: its length, and the range `lo..hi` of positions in the
/// sorted Get outputs that it is a prefix of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Value {
    len: usize,
    lo: usize,
    hi: usize,
}

/// Fingerprint of (linearized set, value) for the memo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemoKey {
    set: u128,
    /// `(len, lo)` of a live value, or [`DEAD_KEY`].
    value: (u64, u64),
}

/// The memo's stand-in for every dead value; no live value has this length.
const DEAD_KEY: (u64, u64) = (u64::MAX, u64::MAX);

impl Hash for MemoKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The set part is already uniformly random; fold everything into one
        // word and let the hasher spread it.
        let folded = (self.set as u64)
            ^ ((self.set >> 64) as u64).rotate_left(21)
            ^ self.value.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ self.value.1.rotate_left(43);
        state.write_u64(folded);
    }
}

/// Hasher for [`MemoKey`]: one multiply-xorshift instead of SipHash, which
/// would otherwise dominate the search.
#[derive(Default)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by MemoKey; a simple FNV-style fallback for completeness.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }

    fn write_u64(&mut self, x: u64) {
        let h = (self.0 ^ x).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        self.0 = h ^ (h >> 31);
    }
}

type Memo = HashSet<MemoKey, BuildHasherDefault<FoldHasher>>;

/// Precomputed facts about one operation.
struct OpInfo<'a> {
    kind: OpKind,
    /// Put/Append argument, or Get output.
    bytes: &'a [u8],
    call: u64,
    completed: bool,
    /// Zobrist word for the linearized-set fingerprint.
    zobrist: u128,
    /// Node of the call / return entry in `events` (return: 0 if pending).
    call_node: usize,
    ret_node: usize,
    /// A Get's position in the sorted outputs.
    pos: usize,
    /// A Put's resulting value.
    put_value: Value,
}

/// One linearized operation on the search stack.
struct Frame {
    /// Its call entry, where the scan resumes after backtracking.
    entry: usize,
    op: usize,
    /// The value before it.
    before: Value,
}

struct Search<'a> {
    ops: Vec<OpInfo<'a>>,
    /// Call and return entries in time order.
    events: Links,
    /// Per event node: (operation, is it the call entry). Index 0 unused.
    event: Vec<(usize, bool)>,
    /// Outputs of all completed Gets, sorted bytewise.
    outputs: Vec<&'a [u8]>,
    /// Call times of the remaining completed Gets by output position
    /// (emptied once linearized).
    get_calls: MinTree,
    /// Remaining completed Gets by return time.
    gets_by_ret: TimeList,
    /// Remaining Puts, pending ones included, by call time.
    puts_by_call: TimeList,
    /// Remaining completed Puts by return time.
    puts_by_ret: TimeList,
    /// Remaining Appends by argument.
    appends: AppendIndex<'a>,
}

impl<'a> Search<'a> {
    fn new(live: &[&'a Operation]) -> Self {
        let n = live.len();
        let (event, nodes) = time_ordered_entries(live.iter().map(|op| (op.call, op.ret)));
        let mut ops: Vec<OpInfo<'a>> = live
            .iter()
            .zip(zobrist_keys(n))
            .zip(&nodes)
            .map(|((op, zobrist), &(call_node, ret_node))| OpInfo {
                kind: op.kind,
                bytes: match op.kind {
                    OpKind::Get => op.output.as_bytes(),
                    OpKind::Put | OpKind::Append => op.value.as_bytes(),
                    OpKind::Delete | OpKind::PutIfAbsent => unreachable!("checked by the general search"),
                },
                call: op.call,
                completed: op.ret.is_some(),
                zobrist,
                call_node,
                ret_node,
                pos: 0,
                put_value: Value { len: 0, lo: 0, hi: 0 },
            })
            .collect();

        // Gets (all completed: pending ones were dropped) sorted by output.
        let mut gets: Vec<usize> = (0..n).filter(|&i| ops[i].kind == OpKind::Get).collect();
        gets.sort_unstable_by(|&a, &b| ops[a].bytes.cmp(ops[b].bytes).then(a.cmp(&b)));
        let outputs: Vec<&[u8]> = gets.iter().map(|&g| ops[g].bytes).collect();
        let mut calls = Vec::with_capacity(gets.len());
        for (pos, &g) in gets.iter().enumerate() {
            ops[g].pos = pos;
            calls.push(ops[g].call);
        }
        let all = Value { len: 0, lo: 0, hi: outputs.len() };
        for op in ops.iter_mut().filter(|o| o.kind == OpKind::Put) {
            op.put_value = narrow(&outputs, all, op.bytes);
        }

        let mut gets_by_ret = Vec::new();
        let (mut puts_by_call, mut puts_by_ret) = (Vec::new(), Vec::new());
        for (i, op) in live.iter().enumerate() {
            match (op.kind, op.ret) {
                (OpKind::Get, Some(ret)) => gets_by_ret.push((i, ret)),
                (OpKind::Put, ret) => {
                    puts_by_call.push((i, op.call));
                    if let Some(ret) = ret {
                        puts_by_ret.push((i, ret));
                    }
                }
                _ => {}
            }
        }
        let appends = AppendIndex::new(ops.iter().map(|o| (o.kind == OpKind::Append).then_some(o.bytes)));
        Search {
            appends,
            ops,
            events: Links::new(event.len() - 1),
            event,
            get_calls: MinTree::new(&calls),
            outputs,
            gets_by_ret: TimeList::new(n, gets_by_ret),
            puts_by_call: TimeList::new(n, puts_by_call),
            puts_by_ret: TimeList::new(n, puts_by_ret),
        }
    }

    /// Removes a linearized operation from every index.
    fn lift(&mut self, i: usize) {
        let op = &self.ops[i];
        self.events.unlink(op.call_node);
        if op.ret_node != 0 {
            self.events.unlink(op.ret_node);
        }
        if op.kind == OpKind::Get {
            self.get_calls.set(op.pos, None);
        }
        self.gets_by_ret.remove(i);
        self.puts_by_call.remove(i);
        self.puts_by_ret.remove(i);
        self.appends.remove(i);
    }

    /// Exactly reverses [`Search::lift`].
    fn unlift(&mut self, i: usize) {
        self.appends.restore(i);
        self.puts_by_ret.restore(i);
        self.puts_by_call.restore(i);
        self.gets_by_ret.restore(i);
        let op = &self.ops[i];
        if op.kind == OpKind::Get {
            self.get_calls.set(op.pos, Some(op.call));
        }
        if op.ret_node != 0 {
            self.events.relink(op.ret_node);
        }
        self.events.relink(op.call_node);
    }

    /// The value after operation `i`, or `None` if `i` is a Get that would
    /// return something else than it did.
    fn apply(&self, i: usize, value: Value) -> Option<Value> {
        let op = &self.ops[i];
        match op.kind {
            OpKind::Get => {
                let same = (value.lo..value.hi).contains(&op.pos) && op.bytes.len() == value.len;
                same.then_some(value)
            }
            OpKind::Append => Some(narrow(&self.outputs, value, op.bytes)),
            OpKind::Put => Some(op.put_value),
            OpKind::Delete | OpKind::PutIfAbsent => unreachable!("checked by the general search"),
        }
    }

    /// Prefix pruning with lookahead (see the module docs), for `value`, just
    /// produced by Put or Append `i`. Runs before `i` is lifted (most
    /// candidates fail here, and lifting them would be wasted work), so `i`
    /// is skipped among the remaining operations.
    ///
    /// Each of the first few remaining Gets must stay explainable: its output
    /// is `base ++ appends`, where `base` is the current value (no Put comes
    /// before the Get) or the value of a remaining Put that may come before
    /// it (the last Put before it), and the appends are remaining ones. The
    /// split into remaining arguments is checked in full where a lost append
    /// is likely to show (after a Put base, and for the very next Get), and
    /// only its first argument elsewhere, which is cheaper.
    fn explainable(&self, value: Value, i: usize) -> bool {
        self.gets_by_ret.iter().take(PREFIX_CHECK_LIMIT).enumerate().all(|(nth, (g, ret))| {
            let (pos, out) = (self.ops[g].pos, self.ops[g].bytes);
            let continues = |base: Value, thorough: bool| {
                if !(base.lo..base.hi).contains(&pos) {
                    return false;
                }
                let rest = &out[base.len..];
                if thorough {
                    self.appends.may_split(rest, i)
                } else {
                    self.appends.may_start(rest, i)
                }
            };
            continues(value, nth == 0)
                || self
                    .puts_by_call
                    .iter()
                    .take_while(|&(_, call)| call <= ret)
                    .any(|(p, _)| p != i && continues(self.ops[p].put_value, true))
        })
    }

    /// Whether no remaining Get can be linearized before the next Put: a Get
    /// needs the value to be a prefix of its output (only appends come
    /// first), and must not have been called after a remaining completed Put
    /// returned (that Put would have to come first).
    fn is_dead(&self, value: Value) -> bool {
        let Some(earliest_call) = self.get_calls.min(value.lo, value.hi) else {
            return true; // no remaining Get has this prefix
        };
        match self.puts_by_ret.iter().next() {
            Some((_, horizon)) => earliest_call > horizon,
            None => false,
        }
    }

    /// Decides whether to continue from the state just reached by applying
    /// operation `i` (already lifted and past prefix pruning): false if
    /// pruned or already explored.
    ///
    /// Pruned states are not memoized: re-testing is about as cheap as a
    /// lookup, and the memo stays limited to states entered.
    fn enter(&self, i: usize, before: Value, after: Value, set: u128, memo: &mut Memo) -> bool {
        let op = &self.ops[i];
        let dead = self.is_dead(after);
        if !op.completed && (dead || after == before) {
            // A pending call need not take effect, and here it cannot help.
            return false;
        }
        if dead && self.puts_by_call.is_empty() && !self.gets_by_ret.is_empty() {
            // A Get remains, and no Put is left to revive the value for it.
            return false;
        }
        let value = if dead { DEAD_KEY } else { (after.len as u64, after.lo as u64) };
        memo.insert(MemoKey { set, value })
    }

    fn run(mut self, completed: usize, steps: &mut Steps) -> KeyOutcome {
        let mut value = Value { len: 0, lo: 0, hi: self.outputs.len() };
        let mut set: u128 = 0;
        let mut done = 0;
        let mut memo = Memo::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut entry = self.events.first();
        loop {
            if !steps.tick() {
                return KeyOutcome::Unknown;
            }
            let (i, is_call) = self.event[entry];
            if entry == 0 || !is_call {
                // The end of the list, or the return of a call that is not
                // linearized yet although everything now left must follow
                // it: this branch is dead.
                let Some(frame) = stack.pop() else {
                    return KeyOutcome::Illegal;
                };
                self.unlift(frame.op);
                value = frame.before;
                set ^= self.ops[frame.op].zobrist;
                if self.ops[frame.op].completed {
                    done -= 1;
                }
                entry = self.events.next[frame.entry];
                continue;
            }
            let Some(after) = self.apply(i, value) else {
                entry = self.events.next[entry];
                continue;
            };
            if self.ops[i].completed && done + 1 == completed {
                return KeyOutcome::Ok;
            }
            if self.ops[i].kind != OpKind::Get && !self.explainable(after, i) {
                entry = self.events.next[entry];
                continue;
            }
            self.lift(i);
            let new_set = set ^ self.ops[i].zobrist;
            if !self.enter(i, value, after, new_set, &mut memo) {
                self.unlift(i);
                entry = self.events.next[entry];
                continue;
            }
            stack.push(Frame { entry, op: i, before: value });
            value = after;
            set = new_set;
            if self.ops[i].completed {
                done += 1;
            }
            entry = self.events.first();
        }
    }
}

/// The value `value ++ tail`: the outputs in `value`'s range all start with
/// the same `value.len` bytes and are sorted, so their remainders are sorted
/// too, and the ones starting with `tail` form a sub-range found by two
/// binary searches.
fn narrow(outputs: &[&[u8]], value: Value, tail: &[u8]) -> Value {
    fn rest(output: &[u8], len: usize) -> &[u8] {
        output.get(len..).unwrap_or_default()
    }
    let range = &outputs[value.lo..value.hi];
    let lo = range.partition_point(|o| rest(o, value.len) < tail);
    let hi = range.partition_point(|o| {
        let r = rest(o, value.len);
        r < tail || r.starts_with(tail)
    });
    Value { len: value.len + tail.len(), lo: value.lo + lo, hi: value.lo + hi }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_hash_windows_match_direct_hashes() {
        let bytes = b"x 1 2 yx 3 4 y\0\xff";
        for len in 1..=bytes.len() + 1 {
            let direct: Vec<u64> = bytes.windows(len).map(RollingHash::of).collect();
            let rolled: Vec<u64> = RollingHash::windows(bytes, len).collect();
            assert_eq!(rolled, direct, "len {len}");
        }
    }

    #[test]
    fn invisible_pending_calls_are_dropped() {
        let ops = [
            Operation::put(1, "k", "p1 ", 0, None),         // seen: kept
            Operation::put(1, "k", "p2 ", 0, None),         // unseen: dropped
            Operation::append(2, "k", "x 1 y", 0, None),    // seen: kept
            Operation::append(2, "k", "x 2 y", 0, None),    // unseen: dropped
            Operation::append(2, "k", "", 0, None),         // empty: dropped
            Operation::append(3, "k", "x 9 y", 0, Some(1)), // completed: kept
            Operation::get(4, "k", "p1 x 1 y", 2, Some(3)),
            Operation::get(4, "k", "p1 ", 1, Some(2)),
        ];
        let mut live: Vec<&Operation> = ops.iter().collect();
        drop_invisible_pending(&mut live);
        let kept: Vec<usize> =
            live.iter().map(|o| ops.iter().position(|p| std::ptr::eq(p, *o)).unwrap_or(99)).collect();
        assert_eq!(kept, [0, 2, 5, 6, 7]);
    }

    #[test]
    fn narrow_tracks_the_prefix_range() {
        let outputs: Vec<&[u8]> = vec![b"", b"a", b"ab", b"abc", b"abd", b"b", b"ba"];
        let all = Value { len: 0, lo: 0, hi: outputs.len() };
        let a = narrow(&outputs, all, b"a");
        assert_eq!(a, Value { len: 1, lo: 1, hi: 5 });
        let ab = narrow(&outputs, a, b"b");
        assert_eq!(ab, Value { len: 2, lo: 2, hi: 5 });
        assert_eq!(narrow(&outputs, ab, b""), ab);
        assert_eq!(narrow(&outputs, ab, b"c"), Value { len: 3, lo: 3, hi: 4 });
        let abx = narrow(&outputs, ab, b"x");
        assert_eq!(abx.lo, abx.hi);
        // Once empty, the range stays empty whatever is appended.
        let more = narrow(&outputs, abx, b"yz");
        assert_eq!((more.len, more.lo == more.hi), (5, true));
        assert_eq!(narrow(&outputs, all, b"ba"), Value { len: 2, lo: 6, hi: 7 });
        assert_eq!(narrow(&outputs, all, b""), all);
        assert_eq!(narrow(&[], Value { len: 0, lo: 0, hi: 0 }, b"q").hi, 0);
    }
}
