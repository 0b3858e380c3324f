//! Shrinking an illegal key's operations to a small set that is still
//! illegal, so a violation report names the handful of calls that matter
//! rather than the thousands that happened around them.
//!
//! The method is delta debugging ([`crate::shrink::delta_debug`]), keeping
//! each removal after which the rest is still Illegal. Removal is not
//! monotone (dropping an Append can make a Get unexplainable, dropping a Get
//! can make the rest legal). The result is 1-minimal: removing any one
//! operation yields a history the checker does not call Illegal, unless the
//! budget ran out first, in which case it is merely smaller. It is always
//! Illegal: every accepted candidate was checked to be.
//!
//! **An explanation that explains.** Dropping the writes a Get read from
//! leaves that Get alone with a value nobody wrote: Illegal, 1-minimal, and
//! useless (it hides the real conflict, an order that real time forbids).
//! So when the key's calls would be linearizable *without* their times
//! (every call concurrent with every other: only the values must fit), the
//! violation is one of order, and a candidate is kept only if it too fits
//! without times: the set keeps the writes that produced what its reads
//! saw. Then removing any one call either makes the set linearizable or
//! leaves a read of a value the remaining calls cannot produce in any
//! order. Only when the values cannot fit in any order (a read of a value
//! never written) is a lone read the right answer, and it is what remains.

use super::check::{check_key, KeyOutcome, Steps};
use super::history::{OpKind, Operation};
use crate::shrink::{delta_debug, Trial};

/// Shrinks `ops` (one key, already known to be Illegal) within `max_steps`
/// search steps in total. The result keeps the input order.
pub(crate) fn minimise<'a>(ops: &[&'a Operation], max_steps: u64) -> Vec<&'a Operation> {
    let mut steps = Steps::new(max_steps);
    // Pending Gets are ignored by the checker, so they never matter.
    let relevant: Vec<&Operation> =
        ops.iter().copied().filter(|o| !(o.kind == OpKind::Get && o.ret.is_none())).collect();
    let mut timeless_steps = Steps::new(max_steps.min(TIMELESS_STEPS_MAX));
    let order_violation = fits_in_some_order(&relevant, &mut timeless_steps) == Some(true);
    delta_debug(relevant, |candidate| {
        if steps.exhausted() || (order_violation && timeless_steps.exhausted()) {
            return Trial::Stop;
        }
        match check_key(&candidate, &mut steps) {
            KeyOutcome::Illegal if !order_violation => Trial::Fails(candidate),
            KeyOutcome::Illegal => match fits_in_some_order(&candidate, &mut timeless_steps) {
                Some(true) => Trial::Fails(candidate),
                Some(false) => Trial::Passes,
                // Undecided: keep what the candidate would drop.
                None => Trial::Passes,
            },
            KeyOutcome::Ok | KeyOutcome::Unknown => Trial::Passes,
        }
    })
}

/// What the "fits in some order" tests may spend, in all and each: every
/// call overlapping every other is the search's worst case (nothing
/// orders the calls), so it gets a budget of its own, and the minimiser
/// stops (with a set that is Illegal, merely less small) once it is spent.
const TIMELESS_STEPS_MAX: u64 = 10_000_000;
const TIMELESS_STEPS_PER_TEST: u64 = 200_000;

/// Whether `ops` would be linearizable if every call overlapped every
/// other (all called at 0 and, if they returned, returning at 0): whether
/// their values fit together in some order, whatever real time says.
/// `None` if undecided within [`TIMELESS_STEPS_PER_TEST`] steps.
fn fits_in_some_order(ops: &[&Operation], steps: &mut Steps) -> Option<bool> {
    let timeless: Vec<Operation> = ops.iter().map(|o| o.timeless()).collect();
    let refs: Vec<&Operation> = timeless.iter().collect();
    let mut this_test = Steps::new(TIMELESS_STEPS_PER_TEST.min(steps.remaining()));
    let outcome = check_key(&refs, &mut this_test);
    steps.charge_used(&this_test);
    match outcome {
        KeyOutcome::Ok => Some(true),
        KeyOutcome::Illegal => Some(false),
        KeyOutcome::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_conflicting_pair() {
        // The stale read: "a" was put, completed, then "" was read...
        let mut ops = vec![
            Operation::put(1, "k", "a", 0, Some(1)),
            Operation::get(2, "k", "", 2, Some(3)),
            Operation::get(4, "k", "", 0, None),
        ];
        // ...followed by noise that is irrelevant to it.
        for t in 0..20 {
            ops.push(Operation::append(3, "k", "z", 10 * t + 5, Some(10 * t + 6)));
        }
        let refs: Vec<&Operation> = ops.iter().collect();
        let small = minimise(&refs, 1_000_000);
        assert_eq!(small, vec![&ops[0], &ops[1]]);
    }

    /// Porcupine's kind of failing history: a read that misses one append
    /// that had completed before it started. The set keeps the appends the
    /// read did see, so it reads as the story it is, not as a lone read of
    /// a value from nowhere.
    #[test]
    fn keeps_the_writes_a_stale_read_saw() {
        let mut ops = Vec::new();
        let mut seen = String::new();
        for i in 0..6u64 {
            let arg = format!("x{i} ");
            ops.push(Operation::append(1 + i % 2, "k", &arg, 2 * i, Some(2 * i + 3)));
            if i < 5 {
                seen.push_str(&arg);
            }
        }
        // Noise: reads that agree with everything.
        ops.push(Operation::get(3, "k", "x0 ", 2, Some(4)));
        ops.push(Operation::get(3, "k", "", 0, Some(1)));
        ops.push(Operation::get(4, "k", &seen, 20, Some(21)));
        let refs: Vec<&Operation> = ops.iter().collect();
        let small = minimise(&refs, 1_000_000);
        let appends: Vec<&&Operation> = small.iter().filter(|o| o.kind == OpKind::Append).collect();
        assert_eq!(appends.len(), 6, "every append the read saw, and the one it missed: {small:?}");
        assert_eq!(small.last(), Some(&&ops[8]));
        assert_eq!(small.len(), 7, "{small:?}");
    }

    #[test]
    fn a_backwards_interval_is_its_own_violation() {
        let ops = [
            Operation::append(1, "k", "a", 0, Some(1)),
            Operation::get(2, "k", "", 7, Some(3)),
            Operation::get(2, "k", "", 0, Some(0)),
        ];
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(minimise(&refs, 1_000), vec![&ops[1]]);
    }

    #[test]
    fn stops_when_the_budget_is_spent() {
        let ops = [Operation::put(1, "k", "a", 0, Some(1)), Operation::get(2, "k", "", 2, Some(3))];
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(minimise(&refs, 0).len(), 2);
    }
}
