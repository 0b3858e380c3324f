//! Linearizability checker for key/value histories.
//!
//! A *history* records, for every client call, what was asked
//! ([`OpKind::Put`], [`OpKind::Append`], [`OpKind::Get`],
//! [`OpKind::Delete`] or [`OpKind::PutIfAbsent`] on a key), what a Get,
//! Delete or PutIfAbsent returned, and the virtual-time interval `[call, return]` during which
//! it was outstanding. The history is *linearizable* if each call can be
//! given a single instant inside its interval such that replaying the calls
//! in the order of those instants against a plain sequential map reproduces
//! every recorded Get output. Calls that never returned may take effect at
//! any instant after their call, or not at all.
//!
//! [`check()`] answers [`Verdict::Ok`], [`Verdict::Illegal`] (with a small
//! offending set of calls) or, when the search budget runs out,
//! [`Verdict::Unknown`]. It never reads a clock: work is bounded by counting
//! search steps, so a verdict is reproducible on any machine.
//!
//! How (the full story, with soundness arguments, is in `specs/history.md`):
//! 1. The spec treats keys independently, so the history is split by key
//!    (P-compositionality) and each key is checked on its own, in byte order.
//! 2. Per key (`check.rs`): Wing & Gong / Lowe's just-in-time linearization
//!    with Porcupine's memo of (linearized set, value), plus pruning from
//!    what later Gets returned (*prefix pruning*, which keeps append-heavy
//!    keys tractable, with a lookahead over the remaining append arguments),
//!    merging of values no Get can observe, and skipping of pending calls
//!    that cannot matter. Values are represented by their position among the
//!    sorted Get outputs, never copied. A key with a Delete or
//!    PutIfAbsent, whose effect depends on the value it meets, is checked
//!    by the general search (`general.rs`: the same skeleton and memo,
//!    whole values, no pruning).
//! 3. An Illegal key is shrunk to a 1-minimal illegal subset (`minimise.rs`).
//!
//! Module map: `history.rs` (types, JSON, the sequential spec
//! [`Operation::step`]), `check.rs` (the search), `general.rs`,
//! `lists.rs` and `appends.rs` (its indexes), `minimise.rs`, [`brute`] (the
//! exhaustive reference checker for differential tests), [`gen`] (valid and
//! corrupted histories for tests and benches).
//!
//! Dependencies: in the crate, only [`crate::shrink`] (the minimiser's
//! delta-debugging loop) and [`crate::rng`] (the fixed Zobrist keys of the
//! search's memo, and [`gen`]); outside it, `serde` and `serde_json` for the
//! JSON form. It sees only histories, never Raft or the simulator, and does
//! no I/O: [`History::from_json`] and [`History::to_json`] convert text, and
//! reading or writing a file is the caller's (the CLI, the tests).
//! `tests/architecture.rs` checks the crate-internal dependencies and the
//! absence of I/O.

mod appends;
pub mod brute;
mod check;
pub mod gen;
mod general;
mod history;
pub mod html;
mod lists;
mod minimise;
#[cfg(test)]
mod tests;

pub use history::{History, HistoryError, OpKind, Operation};

use std::collections::BTreeMap;

/// Bound on checking work, in search steps: one step is one visit of a call
/// or return entry during the search (one attempted linearization or one
/// backtrack), and setting up a key's search costs one step per operation.
/// No clock is read, so verdicts do not depend on machine speed.
///
/// The budget applies **per key**: each key's search may use `max_steps`,
/// and shrinking the reported Illegal key may use another `max_steps` in
/// total. An Unknown key therefore never hides an Illegal one later in the
/// order. Memory is bounded by the same number: the memo gains at most one
/// 32-byte entry per step and is freed after each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Search steps allowed per key (and for the minimisation).
    pub max_steps: u64,
}

impl Budget {
    /// 50 million steps. Ordinary keys need a handful of steps per
    /// operation; a pathological key that exhausts the budget takes roughly
    /// 10 to 30 s (0.2 to 0.6 µs per step) and at most ~2 GB of memo
    /// (observed: ~400 MB).
    pub const DEFAULT_MAX_STEPS: u64 = 50_000_000;

    /// A budget of `max_steps` steps per key.
    pub fn steps(max_steps: u64) -> Self {
        Budget { max_steps }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::steps(Budget::DEFAULT_MAX_STEPS)
    }
}

/// The outcome of [`check()`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's sub-history is linearizable, hence so is the history.
    Ok,
    /// The first key (in byte order) whose sub-history is not linearizable,
    /// with a minimal offending subset of its calls.
    Illegal(Violation),
    /// No key is Illegal, but the budget ran out on this key (the first such
    /// key in byte order), so linearizability is undecided.
    Unknown {
        /// The undecided key.
        key: String,
    },
}

impl Verdict {
    /// True for [`Verdict::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok)
    }

    /// True for [`Verdict::Illegal`].
    pub fn is_illegal(&self) -> bool {
        matches!(self, Verdict::Illegal(_))
    }
}

/// Evidence that a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key whose sub-history is not linearizable.
    pub key: String,
    /// Calls on `key`, in history order, that are by themselves not
    /// linearizable, and such that dropping any single one of them makes
    /// them linearizable (1-minimal), unless the budget ran out while
    /// shrinking. Dropping a call can leave a Get with no explanation; that
    /// is fine: the set is minimal for "not linearizable", not a story.
    pub ops: Vec<Operation>,
}

/// The longest value a [`Violation`]'s table shows whole; longer ones keep
/// their head and tail (an append-heavy key's value grows long, and what
/// differs is usually at its end).
pub const TABLE_VALUE_CHARS_MAX: usize = 48;

impl std::fmt::Display for Violation {
    /// The offending calls as a table, one call per line, in history order:
    ///
    /// ```text
    /// client  call                 result  invoke  return
    ///      1  Put("x", "1")                     0       1
    ///      2  Get("x")             ""           2       3
    /// ```
    ///
    /// Keys and values are quoted and escaped (`{:?}`), so no byte of them
    /// can move the cursor or change the terminal's colours.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: Vec<[String; 5]> = self.ops.iter().map(table_row).collect();
        let header = ["client", "call", "result", "invoke", "return"].map(String::from);
        let widths: Vec<usize> =
            (0..5).map(|c| rows.iter().chain([&header]).map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for (n, row) in [&header].into_iter().chain(&rows).enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            // Numbers right-aligned, text left-aligned; no trailing blanks.
            let line = format!(
                "{:>w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4]
            );
            f.write_str(line.trim_end())?;
        }
        Ok(())
    }
}

fn table_row(op: &Operation) -> [String; 5] {
    let key = shown(&op.key);
    let call = match op.kind {
        OpKind::Put => format!("Put({key}, {})", shown(&op.value)),
        OpKind::Append => format!("Append({key}, {})", shown(&op.value)),
        OpKind::Get => format!("Get({key})"),
        OpKind::Delete => format!("Delete({key})"),
        OpKind::PutIfAbsent => format!("PutIfAbsent({key}, {})", shown(&op.value)),
    };
    let result = match (op.ret, op.kind) {
        (None, _) => "(no reply)".to_owned(),
        (Some(_), OpKind::Get) => shown(&op.output),
        (Some(_), OpKind::Delete | OpKind::PutIfAbsent) => op.output.clone(),
        (Some(_), OpKind::Put | OpKind::Append) => String::new(),
    };
    let ret = op.ret.map_or_else(|| "-".to_owned(), |r| r.to_string());
    [op.client.to_string(), call, result, op.call.to_string(), ret]
}

/// `value` quoted and escaped, its middle elided past
/// [`TABLE_VALUE_CHARS_MAX`] characters.
fn shown(value: &str) -> String {
    let chars = value.chars().count();
    if chars <= TABLE_VALUE_CHARS_MAX {
        return format!("{value:?}");
    }
    let keep = TABLE_VALUE_CHARS_MAX / 2;
    let head: String = value.chars().take(keep).collect();
    let tail: String = value.chars().skip(chars - keep).collect();
    format!("{head:?}…({} chars)…{tail:?}", chars - 2 * keep)
}

/// Decides whether `history` is linearizable with respect to the sequential
/// key/value spec, within `budget`.
///
/// Keys are checked in byte order; the first Illegal key is reported. The
/// history need not be [validated](History::validate): a completed call
/// whose return precedes its call has no instant to take effect in, so it
/// makes its key Illegal (a one-call violation). Never panics.
pub fn check(history: &History, budget: Budget) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut first_unknown: Option<&str> = None;
    for (&key, ops) in &by_key {
        let mut steps = check::Steps::new(budget.max_steps);
        match check::check_key(ops, &mut steps) {
            check::KeyOutcome::Ok => {}
            check::KeyOutcome::Unknown => {
                first_unknown.get_or_insert(key);
            }
            check::KeyOutcome::Illegal => {
                let ops = minimise::minimise(ops, budget.max_steps);
                return Verdict::Illegal(Violation { key: key.to_owned(), ops: ops.into_iter().cloned().collect() });
            }
        }
    }
    match first_unknown {
        Some(key) => Verdict::Unknown { key: key.to_owned() },
        None => Verdict::Ok,
    }
}

/// How far the checker could get on one key: what a picture of an illegal
/// key shows (Porcupine's "longest linearizable prefix").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The key explained.
    pub key: String,
    /// The longest sequence of the key's calls found to replay correctly in
    /// an order that respects real time, as positions in the history's
    /// `ops`, each with the key's value after it.
    pub prefix: Vec<(usize, String)>,
    /// The call that could not be placed after them (its return came
    /// before it could take effect), as a position in `ops`, if the search
    /// ended on one.
    pub blocked: Option<usize>,
    /// False if the budget ran out first: a longer prefix may exist.
    pub complete: bool,
}

impl Explanation {
    /// The key's value before the blocked call (after the prefix).
    pub fn value_before_blocked(&self) -> &str {
        self.prefix.last().map_or("", |(_, value)| value.as_str())
    }
}

/// Searches `key`'s calls again, with the general per-key search (whole
/// values, no pruning), recording the deepest point reached. For pictures
/// and reports of an illegal key, at most `budget` steps.
pub fn explain(history: &History, key: &str, budget: Budget) -> Explanation {
    let positions: Vec<usize> = (0..history.ops.len()).filter(|&i| history.ops[i].key == key).collect();
    let ops: Vec<&Operation> = positions.iter().map(|&i| &history.ops[i]).collect();
    let mut steps = check::Steps::new(budget.max_steps);
    let (outcome, deepest) = general::deepest(&ops, &mut steps);
    Explanation {
        key: key.to_owned(),
        prefix: deepest.order.into_iter().map(|(p, value)| (positions[p], value)).collect(),
        blocked: deepest.blocked.map(|p| positions[p]),
        complete: outcome != check::KeyOutcome::Unknown,
    }
}
