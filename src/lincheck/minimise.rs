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
//!
//! When the whole key is too large to tell (hundreds of calls with Puts:
//! the search without times has nothing to prune with), a candidate is
//! kept only if each of its reads is made by some of its writes
//! ([`reads_supported`], cheap and sound where it says no); the small set
//! that remains is then judged as above (`specs/history.md`, section 7).

use super::check::{check_key, KeyOutcome, Steps};
use super::history::{OpKind, Operation};
use crate::shrink::{delta_debug, Trial};

/// Shrinks `ops` (one key, already known to be Illegal) within `max_steps`
/// search steps in total. The result keeps the input order.
pub(crate) fn minimise<'a>(ops: &[&'a Operation], max_steps: u64) -> Vec<&'a Operation> {
    // Pending Gets are ignored by the checker, so they never matter.
    let relevant: Vec<&Operation> =
        ops.iter().copied().filter(|o| !(o.kind == OpKind::Get && o.ret.is_none())).collect();
    let mut fitting = Steps::new(max_steps.min(FITTING_STEPS_MAX));
    let whole_key_fits = fits_in_some_order(&relevant, &mut fitting);
    minimise_given(relevant, whole_key_fits, Steps::new(max_steps), fitting)
}

/// [`minimise`] once it is known whether the key's calls fit in some order
/// (`None`: undecided, as on a key of hundreds of calls with Puts, where
/// the search without times has nothing to prune with).
pub(super) fn minimise_given(
    relevant: Vec<&Operation>,
    whole_key_fits: Option<bool>,
    mut steps: Steps,
    mut fitting: Steps,
) -> Vec<&Operation> {
    match whole_key_fits {
        // A violation of order: keep sets whose values fit.
        Some(true) => shrink(relevant, &mut steps, |c| fit(fits_in_some_order(c, &mut fitting), &fitting)),
        // A read of a value no order of the writes produces.
        Some(false) => shrink(relevant, &mut steps, |_| Fit::Keep),
        // Undecided: keep sets in which every read's value is made by some
        // of the set's writes (a test far cheaper than a whole order), then
        // see whether the values of the small set fit together. If not,
        // its violation is one of values, shrunk as such.
        None => {
            let supported = shrink(relevant, &mut steps, |c| fit(reads_supported(c, &mut fitting), &fitting));
            match fits_in_some_order(&supported, &mut fitting) {
                Some(true) => supported,
                Some(false) | None => shrink(supported, &mut steps, |_| Fit::Keep),
            }
        }
    }
}

/// What the shrinker's constraint says of a smaller candidate that is
/// still Illegal.
enum Fit {
    Keep,
    /// It fails the constraint, or the test was undecided: keep what it
    /// would drop.
    Reject,
    /// The constraint's budget is spent.
    Stop,
}

fn fit(decided: Option<bool>, budget: &Steps) -> Fit {
    match decided {
        Some(true) => Fit::Keep,
        _ if budget.exhausted() => Fit::Stop,
        _ => Fit::Reject,
    }
}

/// Delta debugging of `ops`, keeping each removal after which the rest is
/// still Illegal and `constraint` keeps it.
fn shrink<'a>(
    ops: Vec<&'a Operation>,
    steps: &mut Steps,
    mut constraint: impl FnMut(&[&Operation]) -> Fit,
) -> Vec<&'a Operation> {
    delta_debug(ops, |candidate| {
        if steps.exhausted() {
            return Trial::Stop;
        }
        match check_key(&candidate, steps) {
            KeyOutcome::Illegal => match constraint(&candidate) {
                Fit::Keep => Trial::Fails(candidate),
                Fit::Reject => Trial::Passes,
                Fit::Stop => Trial::Stop,
            },
            KeyOutcome::Ok | KeyOutcome::Unknown => Trial::Passes,
        }
    })
}

/// What the tests of values without times may spend, in all and each:
/// every call overlapping every other is the search's worst case (nothing
/// orders the calls), so they get a budget of their own, and the minimiser
/// stops (with a set that is Illegal, merely less small) once it is spent.
const FITTING_STEPS_MAX: u64 = 10_000_000;
const FITTING_STEPS_PER_TEST: u64 = 200_000;

/// Whether `ops` would be linearizable if every call overlapped every
/// other (all called at 0 and, if they returned, returning at 0): whether
/// their values fit together in some order, whatever real time says.
/// `None` if undecided within [`FITTING_STEPS_PER_TEST`] steps.
fn fits_in_some_order(ops: &[&Operation], steps: &mut Steps) -> Option<bool> {
    let timeless: Vec<Operation> = ops.iter().map(|o| o.timeless()).collect();
    let refs: Vec<&Operation> = timeless.iter().collect();
    let mut this_test = Steps::new(FITTING_STEPS_PER_TEST.min(steps.remaining()));
    let outcome = check_key(&refs, &mut this_test);
    steps.charge_used(&this_test);
    match outcome {
        KeyOutcome::Ok => Some(true),
        KeyOutcome::Illegal => Some(false),
        KeyOutcome::Unknown => None,
    }
}

/// Whether the value each completed Get of `ops` returned is made by some
/// of `ops`' writes, each used at most once, in some order: a starting
/// value (`""`, as at the start or after a Delete, or a Put's or
/// PutIfAbsent's value) followed by Append arguments. Each read is asked
/// alone, so this is weaker than [`fits_in_some_order`] (two reads may be
/// made by orders that exclude each other), but sound where it says no: a
/// read it cannot make has no linearization, with or without times.
/// `None` if undecided within [`FITTING_STEPS_PER_TEST`] steps.
fn reads_supported(ops: &[&Operation], steps: &mut Steps) -> Option<bool> {
    let mut this_test = Steps::new(FITTING_STEPS_PER_TEST.min(steps.remaining()));
    let starts: Vec<&str> = std::iter::once("")
        .chain(ops.iter().filter(|o| matches!(o.kind, OpKind::Put | OpKind::PutIfAbsent)).map(|o| o.value.as_str()))
        .collect();
    let mut appends: Vec<&str> =
        ops.iter().filter(|o| o.kind == OpKind::Append && !o.value.is_empty()).map(|o| o.value.as_str()).collect();
    // Equal arguments side by side: the search tries one of each.
    appends.sort_unstable();
    let mut all = Some(true);
    for read in ops.iter().filter(|o| o.kind == OpKind::Get && o.ret.is_some()) {
        let target = read.output.as_str();
        let mut made = Some(false);
        for start in starts.iter().filter(|s| target.starts_with(**s)) {
            match concatenates(&target[start.len()..], &appends, &mut this_test) {
                Some(true) => {
                    made = Some(true);
                    break;
                }
                Some(false) => {}
                None => made = None,
            }
        }
        match made {
            Some(true) => {}
            Some(false) => {
                all = Some(false);
                break;
            }
            None => all = None,
        }
    }
    steps.charge_used(&this_test);
    all
}

/// Whether `target` is a concatenation of some of the (sorted) `appends`,
/// each used at most once; `None` if undecided within `steps`. A search
/// with its own stack: a value read from an append-heavy key can be made
/// of thousands of appends.
fn concatenates(target: &str, appends: &[&str], steps: &mut Steps) -> Option<bool> {
    let mut used = vec![false; appends.len()];
    // Per level: the position reached in `target` and the next append to
    // try there; `chosen` holds the append that led to each level.
    let mut levels: Vec<(usize, usize)> = vec![(0, 0)];
    let mut chosen: Vec<usize> = Vec::new();
    while let Some((position, next)) = levels.last_mut() {
        if *position == target.len() {
            return Some(true);
        }
        if !steps.tick() {
            return None;
        }
        let rest = &target[*position..];
        // Of equal arguments, only the first unused one.
        let found = (*next..appends.len()).find(|&i| {
            !used[i] && rest.starts_with(appends[i]) && !(i > 0 && appends[i - 1] == appends[i] && !used[i - 1])
        });
        match found {
            Some(i) => {
                *next = i + 1;
                let reached = *position + appends[i].len();
                used[i] = true;
                chosen.push(i);
                levels.push((reached, 0));
            }
            None => {
                levels.pop();
                if let Some(i) = chosen.pop() {
                    used[i] = false;
                }
            }
        }
    }
    Some(false)
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
