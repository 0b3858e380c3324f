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

use super::check::{check_key, KeyOutcome, Steps};
use super::history::{OpKind, Operation};
use crate::shrink::{delta_debug, Trial};

/// Shrinks `ops` (one key, already known to be Illegal) within `max_steps`
/// search steps in total. The result keeps the input order.
pub(crate) fn minimise<'a>(ops: &[&'a Operation], max_steps: u64) -> Vec<&'a Operation> {
    let mut steps = Steps::new(max_steps);
    // Pending Gets are ignored by the checker, so they never matter.
    let relevant = ops.iter().copied().filter(|o| !(o.kind == OpKind::Get && o.ret.is_none())).collect();
    delta_debug(relevant, |candidate| {
        if steps.exhausted() {
            return Trial::Stop;
        }
        match check_key(&candidate, &mut steps) {
            KeyOutcome::Illegal => Trial::Fails(candidate),
            KeyOutcome::Ok | KeyOutcome::Unknown => Trial::Passes,
        }
    })
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
