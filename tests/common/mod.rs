//! Seed handling shared by the simulator test suites.
//!
//! `RAFTKV_SEED=S` replays exactly one seed; `RAFTKV_SEEDS=N` runs N seeds
//! (default: each suite's own count). A failing seed is printed, and the
//! history of the failing run is written as JSON beside it.

#![allow(dead_code)]

use raftkv::sim::scenario::ScenarioFailure;
use raftkv::sim::Sim;
use std::path::PathBuf;

/// The seeds to run: the replayed one, or `0..count`.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("RAFTKV_SEED") {
        return vec![seed];
    }
    (0..env_u64("RAFTKV_SEEDS").unwrap_or(default_count)).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, got {value:?}")))
}

/// Writes the failing run's history next to the target directory and
/// returns a message naming the seed and the file.
pub fn report(failure: &ScenarioFailure) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("failures");
    let path = dir.join(format!("{}-seed-{}.history.json", failure.scenario, failure.seed));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, failure.history.to_json()))
        .map(|_| format!("history written to {}", path.display()))
        .unwrap_or_else(|e| format!("could not write the history: {e}"));
    let drawn = draw(&path, &failure.history);
    format!(
        "{failure}\n{saved}\n{drawn}\nreplay: RAFTKV_SEED={} cargo test --test scenarios {}",
        failure.seed, failure.scenario
    )
}

/// Checks `history` again and draws it beside `history_path` (the HTML
/// timeline, `raftkv check --html`); says where, or why not.
pub fn draw(history_path: &std::path::Path, history: &raftkv::lincheck::History) -> String {
    use raftkv::lincheck::{check, Budget};
    use raftkv::server::timeline;
    let verdict = check(history, Budget::default());
    let html = timeline::beside(history_path);
    match timeline::write(&html, &history_path.display().to_string(), history, &verdict) {
        Ok(()) => format!("timeline written to {}", html.display()),
        Err(e) => format!("could not draw the history: {e}"),
    }
}

/// Fails a hand-driven scenario: writes `sim`'s history beside the seed and
/// panics with both.
pub fn fail(scenario: &'static str, seed: u64, sim: &Sim, reason: impl std::fmt::Display) -> ! {
    let failure = ScenarioFailure { scenario, seed, reason: reason.to_string(), history: sim.history() };
    panic!("{}", report(&failure))
}

/// `fail`s unless `condition` holds.
pub fn ensure(condition: bool, scenario: &'static str, seed: u64, sim: &Sim, reason: impl FnOnce() -> String) {
    if !condition {
        fail(scenario, seed, sim, reason());
    }
}
