//! The per-key search: Wing & Gong / Lowe just-in-time linearization with
//! Porcupine-style memoization, plus prefix pruning from later Gets.
//!
//! Input: the operations of ONE key. Output: whether some total order of them
//! (a) respects real time, (b) contains every completed call and any subset
//! of the pending ones, and (c) replays correctly against a single string
//! register with put / append / get.
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
//! re-insert, restore the state, try the next candidate after it). Pending
//! calls have no return entry, so they never force a backtrack and may stay
//! unlinearized forever; the search succeeds once every completed call is
//! linearized.
//!
//! # Memoization
//!
//! The rest of the search depends only on (set of linearized calls, current
//! value), so each such pair is entered at most once. The memo stores a
//! 256-bit fingerprint instead of the pair itself: a 128-bit Zobrist hash of
//! the set (XOR of a random 128-bit word per operation) and two independent
//! 61-bit polynomial hashes of the value, both maintained incrementally. A
//! false hit needs two different pairs with equal fingerprints: either two
//! sets colliding on 128 random bits, or two values of length at most `L`
//! colliding in both polynomial hashes (at most `(L / 2^61)²` per pair). With
//! `E` memo entries that is below `E² · (2^-128 + L² · 2^-122)`, about 2^-42
//! for 50 million entries of 16 KiB values, so it is ignored. (A false hit
//! could only skip a branch, i.e. risk a wrong Illegal, never a wrong Ok.)
//! The payoff is 32 bytes per entry and O(1) hashing of multi-kilobyte
//! values.
//!
//! # Prefix pruning
//!
//! When every remaining Put on the key is called after a remaining completed
//! Get `g` returned, no Put can come between now and `g`, so only appends can
//! change the value before `g`: the current value must be a prefix of
//! `g.output`. A candidate Put/Append whose result fails that test for one of
//! the first [`PREFIX_CHECK_LIMIT`] such Gets (in return-time order) is
//! rejected immediately. This is what makes append-heavy histories, where
//! every order of concurrent appends yields a new value and the memo never
//! hits, tractable. Whether the test passes depends only on (set, value), so
//! it composes soundly with the memo. See `specs/history.md` for the argument.

use super::gen::SplitMix64;
use super::history::{OpKind, Operation};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// How many upcoming Gets (in return-time order) a candidate value is tested
/// against. The first one does nearly all the work in practice; a few more
/// catch conflicts between concurrent Gets earlier. Any value is sound.
const PREFIX_CHECK_LIMIT: usize = 1000;

/// Search-step accounting shared by the search and the minimiser. One step
/// is one visit of a list entry (try a candidate, or backtrack).
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
    fn tick(&mut self) -> bool {
        if self.used >= self.max {
            return false;
        }
        self.used += 1;
        true
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.used >= self.max
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
    Search::new(&live).run(completed, steps)
}

// ---------------------------------------------------------------------------
// Incremental string hashing

/// The Mersenne prime 2^61 - 1: products fit in u128 and reduce with a shift.
const MOD: u64 = (1 << 61) - 1;
/// Two fixed bases, i.e. two independent polynomial hashes.
const BASES: [u64; 2] = [0x0CE6_F5C1_3D0A_9B47, 0x1A3B_8E2D_7C64_F059];

fn mul_mod(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    let s = (p as u64 & MOD) + (p >> 61) as u64;
    // s <= 2 * MOD, so at most two subtractions give the canonical residue.
    let s = if s >= MOD { s - MOD } else { s };
    if s >= MOD {
        s - MOD
    } else {
        s
    }
}

fn add_mod(a: u64, b: u64) -> u64 {
    let s = a + b; // both < 2^61: no overflow
    if s >= MOD {
        s - MOD
    } else {
        s
    }
}

fn pow_mod(mut base: u64, mut exp: u64) -> u64 {
    let mut acc = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul_mod(acc, base);
        }
        base = mul_mod(base, base);
        exp >>= 1;
    }
    acc
}

/// Polynomial hash pair of a byte string: `h = Σ (b_i + 1) · B^(n-1-i)`. The
/// `+1` keeps NUL bytes from vanishing. `h(s ++ t) = h(s)·B^|t| + h(t)`,
/// which is what lets appends update the hash in O(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct StrHash([u64; 2]);

impl StrHash {
    fn of(bytes: &[u8]) -> Self {
        let mut h = [0u64; 2];
        for &b in bytes {
            for (hk, base) in h.iter_mut().zip(BASES) {
                *hk = add_mod(mul_mod(*hk, base), u64::from(b) + 1);
            }
        }
        StrHash(h)
    }

    /// The hash of `self ++ tail`, where `tail_pow` is `B^|tail|`.
    fn extend(self, tail: StrHash, tail_pow: [u64; 2]) -> Self {
        let mut h = [0u64; 2];
        for k in 0..2 {
            h[k] = add_mod(mul_mod(self.0[k], tail_pow[k]), tail.0[k]);
        }
        StrHash(h)
    }
}

// ---------------------------------------------------------------------------
// Memo

/// Fingerprint of (linearized set, value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemoKey {
    set: u128,
    value: StrHash,
}

impl Hash for MemoKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // All parts are already uniformly random; fold them into one word.
        let folded = (self.set as u64)
            ^ ((self.set >> 64) as u64).rotate_left(21)
            ^ self.value.0[0].rotate_left(7)
            ^ self.value.0[1].rotate_left(43);
        state.write_u64(folded);
    }
}

/// Hasher for [`MemoKey`]: its input is already random, so hashing is one
/// multiply to spread the bits (SipHash would dominate the search).
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
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 29;
    }
}

type Memo = HashSet<MemoKey, BuildHasherDefault<FoldHasher>>;

// ---------------------------------------------------------------------------
// Dancing-links lists

/// A circular doubly linked list over nodes `1..=len`, with node 0 as the
/// sentinel. `unlink` leaves the removed node's own links intact, so
/// `relink` can put it back in O(1), provided removals are undone in
/// reverse order (the search's stack discipline guarantees this).
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    fn new(len: usize) -> Self {
        let next = (0..=len).map(|i| if i == len { 0 } else { i + 1 }).collect();
        let prev = (0..=len).map(|i| if i == 0 { len } else { i - 1 }).collect();
        Links { next, prev }
    }

    /// The first live node, or 0 if the list is empty.
    fn first(&self) -> usize {
        self.next[0]
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        self.prev[n] = x;
    }
}

// ---------------------------------------------------------------------------
// The search

/// Precomputed facts about one operation.
struct OpInfo<'a> {
    kind: OpKind,
    /// Put/Append argument, or Get output.
    bytes: &'a [u8],
    /// `StrHash::of(bytes)`.
    hash: StrHash,
    /// `B^|bytes|`, for appends.
    pow: [u64; 2],
    completed: bool,
    /// Zobrist word for the linearized-set fingerprint.
    zobrist: u128,
    /// Node of the call / return entry in `events` (return: 0 if pending).
    call_node: usize,
    ret_node: usize,
    /// Node in `gets` (completed Gets) or `puts` (all Puts), else 0.
    get_node: usize,
    put_node: usize,
}

/// How to undo one linearization step.
enum Undo {
    /// A Get: the value did not change.
    Nothing,
    /// An Append: cut the value back to `len`.
    Truncate { len: usize, hash: StrHash },
    /// A Put: restore the overwritten value.
    Restore { old: Vec<u8>, hash: StrHash },
}

/// One linearized operation on the search stack.
struct Frame {
    /// Its call entry, where the scan resumes after backtracking.
    entry: usize,
    op: usize,
    undo: Undo,
}

struct Search<'a> {
    ops: Vec<OpInfo<'a>>,
    /// Call and return entries in time order.
    events: Links,
    /// Per event node: (operation, is it the call entry). Index 0 unused.
    event: Vec<(usize, bool)>,
    /// Completed Gets by return time, with their return times.
    gets: Links,
    get_op: Vec<(usize, u64)>,
    /// All Puts (pending ones included) by call time, with call times.
    puts: Links,
    put_op: Vec<(usize, u64)>,
}

impl<'a> Search<'a> {
    fn new(live: &[&'a Operation]) -> Self {
        let mut zobrist = SplitMix64::new(0x1D_C0DE_5EED);
        let mut ops: Vec<OpInfo<'a>> = live
            .iter()
            .map(|op| {
                let bytes = match op.kind {
                    OpKind::Get => op.output.as_bytes(),
                    OpKind::Put | OpKind::Append => op.value.as_bytes(),
                };
                let len = bytes.len() as u64;
                OpInfo {
                    kind: op.kind,
                    bytes,
                    hash: StrHash::of(bytes),
                    pow: [pow_mod(BASES[0], len), pow_mod(BASES[1], len)],
                    completed: op.ret.is_some(),
                    zobrist: u128::from(zobrist.next_u64()) << 64
                        | u128::from(zobrist.next_u64()),
                    call_node: 0,
                    ret_node: 0,
                    get_node: 0,
                    put_node: 0,
                }
            })
            .collect();

        // Sort key (time, 0 = call / 1 = return, op): calls before returns
        // at equal times because intervals are closed.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * live.len());
        for (i, op) in live.iter().enumerate() {
            events.push((op.call, 0, i));
            if let Some(ret) = op.ret {
                events.push((ret, 1, i));
            }
        }
        events.sort_unstable();
        let mut event = vec![(0, false); events.len() + 1];
        for (k, &(_, kind, i)) in events.iter().enumerate() {
            let node = k + 1;
            event[node] = (i, kind == 0);
            if kind == 0 {
                ops[i].call_node = node;
            } else {
                ops[i].ret_node = node;
            }
        }

        let mut get_op: Vec<(usize, u64)> = Vec::new();
        let mut put_op: Vec<(usize, u64)> = Vec::new();
        for (i, op) in live.iter().enumerate() {
            match (op.kind, op.ret) {
                (OpKind::Get, Some(ret)) => get_op.push((i, ret)),
                (OpKind::Put, _) => put_op.push((i, op.call)),
                _ => {}
            }
        }
        get_op.sort_unstable_by_key(|&(i, ret)| (ret, i));
        put_op.sort_unstable_by_key(|&(i, call)| (call, i));
        // Node k+1 of each list is entry k; slot 0 is the sentinel's.
        get_op.insert(0, (0, 0));
        put_op.insert(0, (0, 0));
        for (node, &(i, _)) in get_op.iter().enumerate().skip(1) {
            ops[i].get_node = node;
        }
        for (node, &(i, _)) in put_op.iter().enumerate().skip(1) {
            ops[i].put_node = node;
        }

        Search {
            events: Links::new(events.len()),
            event,
            gets: Links::new(get_op.len() - 1),
            get_op,
            puts: Links::new(put_op.len() - 1),
            put_op,
            ops,
        }
    }

    /// Removes a linearized operation from every list.
    fn lift(&mut self, i: usize) {
        let op = &self.ops[i];
        self.events.unlink(op.call_node);
        if op.ret_node != 0 {
            self.events.unlink(op.ret_node);
        }
        if op.get_node != 0 {
            self.gets.unlink(op.get_node);
        }
        if op.put_node != 0 {
            self.puts.unlink(op.put_node);
        }
    }

    /// Exactly reverses [`Search::lift`].
    fn unlift(&mut self, i: usize) {
        let op = &self.ops[i];
        if op.put_node != 0 {
            self.puts.relink(op.put_node);
        }
        if op.get_node != 0 {
            self.gets.relink(op.get_node);
        }
        if op.ret_node != 0 {
            self.events.relink(op.ret_node);
        }
        self.events.relink(op.call_node);
    }

    /// Applies operation `i` to `value`/`hash` if its result is consistent
    /// with the spec, returning how to undo it.
    fn apply(&self, i: usize, value: &mut Vec<u8>, hash: &mut StrHash) -> Option<Undo> {
        let op = &self.ops[i];
        match op.kind {
            OpKind::Get => {
                // Hashes first: a cheap reject; bytes last: exactness.
                let same = op.bytes.len() == value.len() && op.hash == *hash && op.bytes == &value[..];
                same.then_some(Undo::Nothing)
            }
            OpKind::Append => {
                let undo = Undo::Truncate {
                    len: value.len(),
                    hash: *hash,
                };
                value.extend_from_slice(op.bytes);
                *hash = hash.extend(op.hash, op.pow);
                Some(undo)
            }
            OpKind::Put => {
                let old = std::mem::replace(value, op.bytes.to_vec());
                let undo = Undo::Restore { old, hash: *hash };
                *hash = op.hash;
                Some(undo)
            }
        }
    }

    fn revert(value: &mut Vec<u8>, hash: &mut StrHash, undo: Undo) {
        match undo {
            Undo::Nothing => {}
            Undo::Truncate { len, hash: h } => {
                value.truncate(len);
                *hash = h;
            }
            Undo::Restore { old, hash: h } => {
                *value = old;
                *hash = h;
            }
        }
    }

    /// Prefix pruning (see the module docs), for the state after a Put or
    /// Append, with the operation already lifted. Bytes before `unchanged`
    /// were not modified by that operation; the modified tail is compared
    /// first because that is where a wrong candidate almost always differs.
    fn viable(&self, value: &[u8], unchanged: usize) -> bool {
        let mut node = self.gets.first();
        let mut scanned = 0;
        while node != 0 && scanned < PREFIX_CHECK_LIMIT {
            let (g, ret) = self.get_op[node];
            let out = self.ops[g].bytes;
            if !self.a_put_may_lead(out, ret)
                && (out.len() < value.len()
                    || out[unchanged..value.len()] != value[unchanged..]
                    || out[..unchanged] != value[..unchanged])
            {
                return false;
            }
            scanned += 1;
            node = self.gets.next[node];
        }
        true
    }

    /// Whether some remaining Put could be the last Put linearized before a
    /// Get that returns `out` at `ret`: it must be callable by then
    /// (`call <= ret`) and its value must be a prefix of `out`, since only
    /// appends follow it. If none qualifies, no Put at all comes between now
    /// and that Get (there would be a last one), so the current value must be
    /// a prefix of `out`.
    fn a_put_may_lead(&self, out: &[u8], ret: u64) -> bool {
        let mut node = self.puts.first();
        while node != 0 {
            let (p, call) = self.put_op[node];
            if call > ret {
                // The list is in call order: no later Put qualifies either.
                return false;
            }
            if out.starts_with(self.ops[p].bytes) {
                return true;
            }
            node = self.puts.next[node];
        }
        false
    }

    fn run(mut self, completed: usize, steps: &mut Steps) -> KeyOutcome {
        let mut value: Vec<u8> = Vec::new();
        let mut hash = StrHash::of(b"");
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
                Self::revert(&mut value, &mut hash, frame.undo);
                set ^= self.ops[frame.op].zobrist;
                if self.ops[frame.op].completed {
                    done -= 1;
                }
                entry = self.events.next[frame.entry];
                continue;
            }
            let Some(undo) = self.apply(i, &mut value, &mut hash) else {
                entry = self.events.next[entry];
                continue;
            };
            self.lift(i);
            let unchanged = match &undo {
                Undo::Nothing => None,
                Undo::Truncate { len, .. } => Some(*len),
                Undo::Restore { .. } => Some(0),
            };
            let key = MemoKey {
                set: set ^ self.ops[i].zobrist,
                value: hash,
            };
            // Pruned states are not memoized (re-testing them is as cheap as
            // a lookup, and keeps the memo to states actually entered).
            let viable = match unchanged {
                Some(from) => self.viable(&value, from),
                None => true, // a Get leaves the value as it was
            };
            if !viable || !memo.insert(key) {
                self.unlift(i);
                Self::revert(&mut value, &mut hash, undo);
                entry = self.events.next[entry];
                continue;
            }
            set = key.set;
            if self.ops[i].completed {
                done += 1;
                if done == completed {
                    return KeyOutcome::Ok;
                }
            }
            stack.push(Frame { entry, op: i, undo });
            entry = self.events.first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_hash_matches_direct_hash() {
        let parts: [&[u8]; 5] = [b"", b"x 1 2 y", b"\0", b"ab", b"\xff\x00z"];
        let mut acc = Vec::new();
        let mut h = StrHash::of(b"");
        for p in parts {
            let len = p.len() as u64;
            h = h.extend(StrHash::of(p), [pow_mod(BASES[0], len), pow_mod(BASES[1], len)]);
            acc.extend_from_slice(p);
            assert_eq!(h, StrHash::of(&acc));
        }
        assert_ne!(StrHash::of(b""), StrHash::of(b"\0"));
        assert_ne!(StrHash::of(b"\0"), StrHash::of(b"\0\0"));
    }

    #[test]
    fn modular_arithmetic_is_canonical() {
        assert_eq!(mul_mod(MOD - 1, MOD - 1), 1);
        assert_eq!(add_mod(MOD - 1, 1), 0);
        assert_eq!(pow_mod(BASES[0], 0), 1);
        assert_eq!(pow_mod(3, 5), 243);
    }

    #[test]
    fn links_unlink_and_relink_in_reverse_order() {
        let mut l = Links::new(3);
        let walk = |l: &Links| {
            let mut out = Vec::new();
            let mut x = l.first();
            while x != 0 {
                out.push(x);
                x = l.next[x];
            }
            out
        };
        assert_eq!(walk(&l), [1, 2, 3]);
        l.unlink(2);
        l.unlink(1);
        assert_eq!(walk(&l), [3]);
        l.relink(1);
        l.relink(2);
        assert_eq!(walk(&l), [1, 2, 3]);
        assert_eq!(Links::new(0).first(), 0);
    }
}
