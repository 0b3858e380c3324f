//! Synthetic histories for tests, benchmarks and the simulator's own tests.
//!
//! [`generate_with`] produces histories that are linearizable *by
//! construction*: it simulates clients that each keep at most one call
//! outstanding, gives every call a random closed interval `[call, ret]`, picks
//! a random instant inside it as the moment the call "takes effect", and then
//! replays all effects in that order against a sequential map to learn what
//! every Get returned. Because each effect lies inside its own interval, the
//! effect order is a legal linearization. [`mutate`] then breaks such a
//! history in ways that usually (not always) make it illegal, which is what
//! the differential test against [`crate::lincheck::brute`] feeds on.
//!
//! Randomness comes from the crate's seeded [`Rng`], so every history is
//! reproducible from its seed.

use super::history::{History, OpKind, Operation};
use crate::rng::Rng;
use std::collections::BTreeMap;

/// How Put/Append arguments are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueStyle {
    /// Every argument is unique, e.g. `"x 3 17 y"` (client 3, op 17): the
    /// realistic case, and the one where Porcupine-style memoization never
    /// hits.
    Distinct,
    /// Arguments drawn from `"", "a", "b", "ab"`: duplicates, empty appends
    /// and ambiguous concatenations, to stress soundness of the pruning.
    Tiny,
}

/// Shape of a generated history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenParams {
    /// Number of operations.
    pub ops: usize,
    /// Number of clients (each has at most one call outstanding).
    pub clients: usize,
    /// Number of keys, named `k0`, `k1`, ...
    pub keys: usize,
    /// Percentage of Appends.
    pub append_pct: u32,
    /// Percentage of Puts.
    pub put_pct: u32,
    /// Percentage of conditional calls, Deletes and PutIfAbsents half and
    /// half; the remainder are Gets.
    pub conditional_pct: u32,
    /// Percentage of calls that never return (the client gives up after its
    /// timeout and moves on). Half of them take effect at some instant after
    /// their call, half never do.
    pub pending_pct: u32,
    /// A call lasts `0..=max_duration` time units.
    pub max_duration: u64,
    /// A client waits `0..=max_gap` time units before its next call; `0`
    /// makes a call start at the very instant the previous one returned.
    pub max_gap: u64,
    /// How arguments are chosen.
    pub values: ValueStyle,
}

impl GenParams {
    /// Distinct values, no pending calls, durations up to 10, gaps up to 3.
    pub fn new(ops: usize, clients: usize, keys: usize, append_pct: u32, put_pct: u32) -> Self {
        GenParams {
            ops,
            clients,
            keys,
            append_pct,
            put_pct,
            conditional_pct: 0,
            pending_pct: 0,
            max_duration: 10,
            max_gap: 3,
            values: ValueStyle::Distinct,
        }
    }
}

/// A valid history of `ops` calls by `clients` clients on `keys` keys, with
/// `append_pct`% Appends, `put_pct`% Puts and the rest Gets; distinct
/// arguments and no pending calls. See [`generate_with`] for more knobs.
pub fn generate(seed: u64, ops: usize, clients: usize, keys: usize, append_pct: u32, put_pct: u32) -> History {
    generate_with(seed, &GenParams::new(ops, clients, keys, append_pct, put_pct))
}

/// A linearizable history shaped by `params` (see the module docs for how).
pub fn generate_with(seed: u64, params: &GenParams) -> History {
    let mut rng = Rng::new(seed);
    let clients = params.clients.max(1);
    let keys = params.keys.max(1) as u64;
    // When each client may issue its next call.
    let mut free_at = vec![0u64; clients];
    let mut ops = Vec::with_capacity(params.ops);
    // (effect instant, op index) for every call that takes effect.
    let mut effects = Vec::with_capacity(params.ops);

    for i in 0..params.ops {
        // The client that is free earliest goes next (lowest id on ties), so
        // the clients' calls interleave like concurrent threads.
        let client = (0..clients).min_by_key(|&c| (free_at[c], c)).unwrap_or(0);
        let call = free_at[client] + rng.range(0, params.max_gap + 1);
        let duration = rng.range(0, params.max_duration + 1);
        let roll = rng.range(0, 100) as u32;
        let kind = if roll < params.append_pct {
            OpKind::Append
        } else if roll < params.append_pct.saturating_add(params.put_pct) {
            OpKind::Put
        } else if roll < params.append_pct.saturating_add(params.put_pct).saturating_add(params.conditional_pct) {
            if rng.chance(50, 100) {
                OpKind::Delete
            } else {
                OpKind::PutIfAbsent
            }
        } else {
            OpKind::Get
        };
        let key = format!("k{}", rng.range(0, keys));
        let value = match (kind, params.values) {
            (OpKind::Get | OpKind::Delete, _) => String::new(),
            (OpKind::Append, ValueStyle::Distinct) => format!("x {client} {i} y"),
            (OpKind::Put | OpKind::PutIfAbsent, ValueStyle::Distinct) => format!("p {client} {i} "),
            (_, ValueStyle::Tiny) => ["", "a", "b", "ab"][rng.range(0, 4) as usize].to_owned(),
        };
        let pending = rng.chance(u64::from(params.pending_pct), 100);
        let ret = if pending { None } else { Some(call + duration) };
        if pending {
            // Taken effect at some instant after the call, possibly long
            // after the client gave up, or never.
            if rng.chance(50, 100) {
                effects.push((call + rng.range(0, 3 * params.max_duration + 4), i));
            }
        } else {
            effects.push((rng.range(call, call + duration + 1), i));
        }
        free_at[client] = call + duration;
        ops.push(Operation { client: client as u64, kind, key, value, output: String::new(), call, ret });
    }

    // Replay the effects in time order. Ties keep index order, which is
    // consistent with real time: if A.ret < B.call then A's effect is
    // strictly earlier than B's.
    effects.sort_unstable();
    let mut store: BTreeMap<String, String> = BTreeMap::new();
    for &(_, i) in &effects {
        let op = &mut ops[i];
        let value = store.entry(op.key.clone()).or_default();
        let (after, output) = op.step(value);
        *value = after;
        if op.ret.is_some() && op.kind.has_output() {
            op.output = output;
        }
    }
    History::new(ops)
}

/// A copy of `history` with one random corruption: a Get output altered, a
/// Put/Append dropped, an interval shrunk (making it precede more calls), or
/// two Get outputs swapped. The result is *usually* not linearizable; the
/// caller must not assume it is illegal.
pub fn mutate(seed: u64, history: &History) -> History {
    let mut rng = Rng::new(seed);
    let mut ops = history.ops.clone();
    if ops.is_empty() {
        return History::new(ops);
    }
    let gets: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].kind.has_output() && ops[i].ret.is_some()).collect();
    let writes: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].kind != OpKind::Get).collect();
    let pick = |rng: &mut Rng, from: &[usize]| from[rng.range(0, from.len() as u64) as usize];
    match rng.range(0, 4) {
        0 if !gets.is_empty() => {
            let g = pick(&mut rng, &gets);
            let out = &mut ops[g].output;
            match rng.range(0, 3) {
                0 if !out.is_empty() => {
                    out.pop();
                }
                1 => out.push('a'),
                _ => *out = ["", "a", "b", "ab", "ba", "zz"][rng.range(0, 6) as usize].to_owned(),
            }
        }
        1 if !writes.is_empty() => {
            let w = pick(&mut rng, &writes);
            ops.remove(w);
        }
        3 if gets.len() >= 2 => {
            let a = pick(&mut rng, &gets);
            let b = pick(&mut rng, &gets);
            let tmp = std::mem::take(&mut ops[a].output);
            ops[a].output = std::mem::replace(&mut ops[b].output, tmp);
        }
        _ => {
            let i = rng.range(0, ops.len() as u64) as usize;
            let op = &mut ops[i];
            match op.ret {
                Some(ret) if rng.chance(50, 100) => op.call = ret,
                Some(_) => op.ret = Some(op.call),
                None => op.ret = Some(op.call + rng.range(0, 3)),
            }
        }
    }
    History::new(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_is_deterministic() {
        assert_eq!(generate(7, 300, 5, 3, 45, 10), generate(7, 300, 5, 3, 45, 10));
        assert_ne!(generate(7, 300, 5, 3, 45, 10), generate(8, 300, 5, 3, 45, 10));
    }

    #[test]
    fn generated_histories_are_well_formed() {
        let h = generate_with(3, &GenParams { pending_pct: 10, ..GenParams::new(2_000, 8, 4, 45, 10) });
        assert_eq!(h.ops.len(), 2_000);
        assert!(h.validate().is_ok());
        assert!(h.ops.iter().any(|o| o.ret.is_none()));
        for kind in [OpKind::Put, OpKind::Append, OpKind::Get] {
            assert!(h.ops.iter().any(|o| o.kind == kind), "{kind:?} missing");
        }
        // Distinct arguments.
        let mut args: Vec<&str> = h.ops.iter().filter(|o| o.kind != OpKind::Get).map(|o| o.value.as_str()).collect();
        let n = args.len();
        args.sort_unstable();
        args.dedup();
        assert_eq!(args.len(), n);
        // Each client has at most one call outstanding: its calls, in
        // issue order, do not overlap (a call may start the instant the
        // previous one returned or timed out).
        let mut last_end: BTreeMap<u64, u64> = BTreeMap::new();
        for op in &h.ops {
            if let Some(&end) = last_end.get(&op.client) {
                assert!(op.call >= end);
            }
            last_end.insert(op.client, op.ret.unwrap_or(op.call));
        }
    }
}
