//! Brute-force linearizability checker: the reference for differential
//! testing of [`crate::lincheck::check()`] (unit tests here, and a fuzz target).
//!
//! It shares no code with the fast checker on purpose: it does not split by
//! key, does not drop pending Gets, keeps no memo and prunes nothing. It
//! simply enumerates every sequence of distinct operations that respects real
//! time, treating each pending call as optional (it may have taken effect, or
//! never), and replays each sequence against a sequential key/value map. The
//! history is linearizable iff some sequence contains every completed call
//! and replays with every Get returning what was recorded.
//!
//! This is exponential (up to `8!` orders times the pending subsets), so it
//! refuses histories longer than [`BRUTE_MAX_OPS`].

use super::history::{History, Operation};
use std::collections::BTreeMap;

/// Longest history [`check_brute`] accepts.
pub const BRUTE_MAX_OPS: usize = 8;

/// Whether `history` is linearizable, decided by exhaustive search; `None` if
/// it has more than [`BRUTE_MAX_OPS`] operations.
///
/// A completed operation whose return precedes its call has an empty
/// interval, so no linearization point exists: such a history is reported
/// as not linearizable (matching the fast checker).
pub fn check_brute(history: &History) -> Option<bool> {
    let ops = &history.ops;
    if ops.len() > BRUTE_MAX_OPS {
        return None;
    }
    if ops.iter().any(|o| matches!(o.ret, Some(r) if r < o.call)) {
        return Some(false);
    }
    let mut store = BTreeMap::new();
    Some(search(ops, 0, &mut store))
}

/// Tries every continuation of the sequence whose members are the bits of
/// `used`, with `store` the state after replaying it.
fn search(ops: &[Operation], used: u32, store: &mut BTreeMap<String, String>) -> bool {
    let is_used = |i: usize| used & (1 << i) != 0;
    if (0..ops.len()).all(|i| is_used(i) || ops[i].ret.is_none()) {
        return true;
    }
    for (i, op) in ops.iter().enumerate() {
        if is_used(i) {
            continue;
        }
        // Real time: every unplaced completed call that returned before `op`
        // was called would have to come later, which is not allowed.
        let blocked = ops.iter().enumerate().any(|(j, other)| j != i && !is_used(j) && other.precedes(op));
        if blocked {
            continue;
        }
        let old = store.get(&op.key).cloned();
        let (new, output) = op.step(old.as_deref().unwrap_or(""));
        let ok = op.output_matches(&output);
        store.insert(op.key.clone(), new);
        let found = ok && search(ops, used | (1 << i), store);
        match old {
            Some(v) => store.insert(op.key.clone(), v),
            None => store.remove(&op.key),
        };
        if found {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_long_histories() {
        let ops = (0..=BRUTE_MAX_OPS as u64).map(|t| Operation::get(0, "k", "", t, Some(t))).collect();
        assert_eq!(check_brute(&History::new(ops)), None);
    }

    #[test]
    fn small_cases() {
        let put = |v: &str, c, r| Operation::put(1, "k", v, c, r);
        let get = |v: &str, c, r| Operation::get(2, "k", v, c, r);
        assert_eq!(check_brute(&History::default()), Some(true));
        let ok = History::new(vec![put("a", 0, Some(1)), get("a", 2, Some(3))]);
        assert_eq!(check_brute(&ok), Some(true));
        let stale = History::new(vec![put("a", 0, Some(1)), get("", 2, Some(3))]);
        assert_eq!(check_brute(&stale), Some(false));
        let pending = History::new(vec![put("a", 0, None), get("", 2, Some(3))]);
        assert_eq!(check_brute(&pending), Some(true));
        let pending_get = History::new(vec![get("zz", 0, None)]);
        assert_eq!(check_brute(&pending_get), Some(true));
        let backwards = History::new(vec![get("", 5, Some(4))]);
        assert_eq!(check_brute(&backwards), Some(false));
        let del = |out: &str, c, r| Operation::delete(3, "k", out, c, r);
        let if_absent = |v: &str, out: &str, c, r| Operation::put_if_absent(4, "k", v, out, c, r);
        let deleted = History::new(vec![put("a", 0, Some(1)), del("1", 2, Some(3)), get("", 4, Some(5))]);
        assert_eq!(check_brute(&deleted), Some(true));
        let nothing_to_delete = History::new(vec![put("a", 0, Some(1)), del("0", 2, Some(3))]);
        assert_eq!(check_brute(&nothing_to_delete), Some(false));
        // Both set-if-absent calls overlap: exactly one of them may win.
        let one_wins = History::new(vec![if_absent("a", "1", 0, Some(5)), if_absent("b", "0", 1, Some(4))]);
        assert_eq!(check_brute(&one_wins), Some(true));
        let both_win = History::new(vec![if_absent("a", "1", 0, Some(5)), if_absent("b", "1", 1, Some(4))]);
        assert_eq!(check_brute(&both_win), Some(false));
        // A pending delete's output says nothing, but it may have removed.
        let pending_delete = History::new(vec![put("a", 0, Some(1)), del("", 2, None), get("", 4, Some(5))]);
        assert_eq!(check_brute(&pending_delete), Some(true));
    }
}
