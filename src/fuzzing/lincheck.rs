//! The `lincheck` target: differential testing of the linearizability
//! checker against the brute-force reference on tiny histories.

use crate::lincheck::brute::{check_brute, BRUTE_MAX_OPS};
use crate::lincheck::{check, Budget, History, Operation, Verdict};
use arbitrary::Unstructured;

/// Search steps per key: far more than any history of
/// [`BRUTE_MAX_OPS`] operations needs, so `Unknown` is a finding.
pub const LINCHECK_BUDGET_STEPS: u64 = 1_000_000;

const KEYS: [&str; 3] = ["a", "a", "b"];
const VALUES: [&str; 4] = ["x", "y", "z", "xy"];
const TIME_MAX: u64 = 12;

/// Builds a history of at most [`BRUTE_MAX_OPS`] operations from `data`
/// and checks that [`check`] and [`check_brute`] agree: `Ok` iff brute
/// says linearizable, `Illegal` iff not, never `Unknown`. An `Illegal`
/// verdict's operations must themselves be illegal, and dropping any one of
/// them must make them legal or, if their values fit together in some
/// order (a violation of order), leave values that fit in no order (a read
/// nothing left can explain): `specs/history.md`, section 7.
pub fn lincheck_target(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(history) = small_history(&mut u) else { return };
    let Some(linearizable) = check_brute(&history) else {
        panic!("brute refused a history of {} operations", history.ops.len());
    };
    let verdict = check(&history, Budget::steps(LINCHECK_BUDGET_STEPS));
    match (&verdict, linearizable) {
        (Verdict::Ok, true) => {}
        (Verdict::Illegal(violation), false) => check_violation(&history, &violation.key, &violation.ops),
        _ => panic!("check says {verdict:?} but brute says linearizable = {linearizable} for {history:?}"),
    }
}

fn check_violation(history: &History, key: &str, ops: &[Operation]) {
    assert!(!ops.is_empty(), "an empty violation");
    for op in ops {
        assert_eq!(op.key, key, "a violation mixes keys");
        assert!(history.ops.contains(op), "a violation names an operation not in the history: {op:?}");
    }
    assert_eq!(check_brute(&History::new(ops.to_vec())), Some(false), "the violation is linearizable: {ops:?}");
    // Every call overlapping every other: only the values must fit.
    let timeless = |ops: &[Operation]| History::new(ops.iter().map(Operation::timeless).collect());
    let order_violation = check_brute(&timeless(ops)) == Some(true);
    for skip in 0..ops.len() {
        let mut fewer = ops.to_vec();
        fewer.remove(skip);
        let explained = check_brute(&History::new(fewer.clone())) == Some(true)
            || (order_violation && check_brute(&timeless(&fewer)) == Some(false));
        assert!(explained, "the violation is not minimal (call {skip} is redundant): {ops:?}");
    }
}

/// A few clients on two keys with short values, in a short window of time
/// so that calls overlap; some calls never return and a few return before
/// they were called.
fn small_history(u: &mut Unstructured<'_>) -> arbitrary::Result<History> {
    let count = u.int_in_range(0..=BRUTE_MAX_OPS)?;
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        let client = u.int_in_range(0..=3)?;
        let key = *u.choose(&KEYS)?;
        let call = u.int_in_range(0..=TIME_MAX)?;
        let ret = match u.int_in_range(0..=15u8)? {
            0 | 1 => None,
            2 => Some(call.saturating_sub(1)),
            _ => Some(call + u.int_in_range(0..=TIME_MAX / 2)?),
        };
        let op = match u.int_in_range(0..=2u8)? {
            0 => Operation::put(client, key, u.choose(&VALUES)?, call, ret),
            1 => Operation::append(client, key, u.choose(&VALUES)?, call, ret),
            _ => Operation::get(client, key, &plausible_output(u)?, call, ret),
        };
        ops.push(op);
    }
    Ok(History::new(ops))
}

/// What a Get might have returned: a concatenation of up to three values.
fn plausible_output(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let parts = u.int_in_range(0..=3)?;
    let mut output = String::new();
    for _ in 0..parts {
        output.push_str(u.choose(&VALUES)?);
    }
    Ok(output)
}
