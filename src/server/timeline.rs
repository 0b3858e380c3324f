//! Writes a checked history's picture ([`crate::lincheck::html`]) to a
//! file: what `raftkv check --html`, `raftkv bench --check` and the tests'
//! failure reports share.

use crate::lincheck::{self, Budget, History, Verdict};
use std::path::{Path, PathBuf};

/// Steps the explanation's search may take (the general search, which
/// keeps whole values): enough for the keys of a failing test; a key that
/// needs more is drawn with the prefix found so far, marked incomplete.
pub const EXPLAIN_STEPS: u64 = 5_000_000;

/// Writes the page for `history` and its `verdict` to `path`, with the
/// longest linearizable prefix of the illegal key when there is one.
pub fn write(path: &Path, title: &str, history: &History, verdict: &Verdict) -> std::io::Result<()> {
    let explanation = match verdict {
        Verdict::Illegal(v) => Some(lincheck::explain(history, &v.key, Budget::steps(EXPLAIN_STEPS))),
        _ => None,
    };
    std::fs::write(path, lincheck::html::render(title, history, verdict, explanation.as_ref()))
}

/// The page's path beside a history file: `h.json` → `h.html`.
pub fn beside(history_path: &Path) -> PathBuf {
    history_path.with_extension("html")
}
