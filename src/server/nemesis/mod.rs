//! The nemesis: real faults for real server processes, and what they cost.
//! `raftkv nemesis` and `tests/partitions.rs` both run it.
//!
//! - [`netns`]: each server in its own network namespace, and nftables
//!   rules that cut links between servers (never between a client and a
//!   server).
//! - [`availability`]: every server's `INFO` sampled while it runs, and
//!   the report: the longest window without a completed operation, and per
//!   fault the time to a new leader's first commit and until every link
//!   carries traffic again.
//! - here: the random schedule, whose every state leaves a majority of
//!   servers able to talk, and the load it runs under.

pub mod availability;
pub mod netns;

use crate::rng::Rng;
use crate::server::client::Access;
use crate::server::load::{LoadSpec, Mix, System};
use availability::Event;
use netns::{Netns, Way};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Servers in a nemesis run.
pub const SERVERS: u8 = 3;
/// Each fault of the random schedule is held this long, drawn uniformly:
/// a few election timeouts (300-600 ms).
pub const HOLD_MS: std::ops::RangeInclusive<u64> = 1_000..=3_000;

/// One fault of the random schedule. Each leaves a majority of the three
/// servers able to talk to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The server can neither send to nor receive from the others.
    Isolate(u8),
    /// The server receives from the others, but nothing it sends arrives.
    CannotSend(u8),
    /// Two servers cut from each other; the third still talks to both.
    Bridge(u8, u8),
    /// SIGKILL; restarted when the fault ends.
    Kill(u8),
    /// SIGSTOP; continued when the fault ends.
    Pause(u8),
    /// A quiet spell.
    None,
}

impl Fault {
    /// The next fault and how long to hold it. The draws' order is part of
    /// what a seed means: changing it changes every recorded schedule.
    pub fn draw(rng: &mut Rng) -> (Fault, Duration) {
        let victim = rng.range(0, 3) as u8;
        let other = (victim + 1 + rng.range(0, 2) as u8) % SERVERS;
        let hold = Duration::from_millis(rng.range(*HOLD_MS.start(), *HOLD_MS.end() + 1));
        let fault = match rng.range(0, 6) {
            0 => Fault::Isolate(victim),
            1 => Fault::CannotSend(victim),
            2 => Fault::Bridge(victim, other),
            3 => Fault::Kill(victim),
            4 => Fault::Pause(victim),
            _ => Fault::None,
        };
        (fault, hold)
    }

    /// The servers it cuts, kills or pauses.
    pub fn victims(self) -> Vec<u8> {
        match self {
            Fault::Isolate(v) | Fault::CannotSend(v) | Fault::Kill(v) | Fault::Pause(v) => vec![v],
            Fault::Bridge(a, b) => vec![a, b],
            Fault::None => vec![],
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Isolate(v) => write!(f, "{v} isolated"),
            Fault::CannotSend(v) => write!(f, "{v} cannot send"),
            Fault::Bridge(a, b) => write!(f, "bridge: {a} and {b} apart"),
            Fault::Kill(v) => write!(f, "{v} killed"),
            Fault::Pause(v) => write!(f, "{v} paused"),
            Fault::None => write!(f, "no fault"),
        }
    }
}

/// The server processes a schedule kills, restarts and signals.
pub trait Processes {
    /// SIGKILL server `id` and wait for it.
    fn kill9(&mut self, id: u8) -> Result<(), String>;
    /// Start server `id` again on its data.
    fn restart(&mut self, id: u8) -> Result<(), String>;
    /// Send server `id` a signal by name (`-STOP`, `-CONT`).
    fn signal(&self, id: u8, signal: &str) -> Result<(), String>;
}

/// After the last fault, how long the schedule stays quiet, so that the
/// recovery from it is measured too (links take up to a few hundred
/// milliseconds to carry traffic again after a heal).
pub const QUIET_AFTER: Duration = Duration::from_secs(1);

/// Runs faults drawn from `seed` ([`Fault::draw`]) one after another,
/// each made, held and undone, until `run_for` has passed since `epoch`
/// (the last may end later), then stays quiet for [`QUIET_AFTER`]. Returns
/// them as events timed from `epoch`: a fault's cut is when it was in
/// place, its heal when it was undone.
pub async fn random_schedule(
    net: &Netns,
    processes: &mut impl Processes,
    seed: u64,
    run_for: Duration,
    epoch: Instant,
) -> Result<Vec<Event>, String> {
    let mut rng = Rng::new(seed);
    let now_us = || epoch.elapsed().as_micros() as u64;
    let mut events = Vec::new();
    while epoch.elapsed() < run_for {
        let (fault, hold) = Fault::draw(&mut rng);
        match fault {
            Fault::Isolate(v) => net.isolate(v, Way::Both)?,
            Fault::CannotSend(v) => net.isolate(v, Way::CannotSend)?,
            Fault::Bridge(a, b) => {
                net.cut(a, b, Way::Both)?;
                net.cut(b, a, Way::Both)?;
            }
            Fault::Kill(v) => processes.kill9(v)?,
            Fault::Pause(v) => processes.signal(v, "-STOP")?,
            Fault::None => {}
        }
        let cut_us = now_us();
        tracing::info!(%fault, at_ms = cut_us / 1_000, "fault in place");
        tokio::time::sleep(hold).await; // the fault's duration, not a synchronisation
        net.heal()?;
        match fault {
            Fault::Kill(v) => processes.restart(v)?,
            Fault::Pause(v) => processes.signal(v, "-CONT")?,
            _ => {}
        }
        events.push(Event { name: fault.to_string(), cut_us, heal_us: now_us(), victims: fault.victims() });
    }
    tokio::time::sleep(QUIET_AFTER).await; // a window to measure in, not a synchronisation
    Ok(events)
}

/// How many keys the nemesis load's clients pick among at any time.
pub const KEY_WINDOW: u64 = 8;
/// About this many operations per key ([`appends_load`]), so a value holds
/// at most a few hundred bytes of appends.
pub const OPS_PER_KEY: u64 = 100;

/// The load a nemesis runs under: `clients` clients appending (so that
/// every acknowledged append can be looked for in the final values) to a
/// window of [`KEY_WINDOW`] keys that slides on by one key every
/// [`OPS_PER_KEY`] operations. Every Get returns its key's whole value,
/// which grows with every append, and the history holds them all: with 3
/// keys a 10-minute run's history outgrew 24 GB; with two keys per second
/// of the run, a 5-minute run with lease reads (fast Gets) outgrew 23 GB.
/// With the window each key takes about [`OPS_PER_KEY`] operations, so
/// the history grows with the operations, by a few hundred bytes each.
pub fn appends_load(servers: Vec<SocketAddr>, access: Access, clients: usize, seed: u64) -> LoadSpec {
    LoadSpec {
        servers,
        clients,
        mix: Mix::Appends,
        keys: KEY_WINDOW,
        rotate_keys_every: Some(OPS_PER_KEY),
        key_bytes: 8,
        value_bytes: 16,
        seed,
        op_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_millis(500),
        access,
        system: System::Raftkv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_leaves_a_majority_and_holds_for_a_few_election_timeouts() {
        let mut rng = Rng::new(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1_000 {
            let (fault, hold) = Fault::draw(&mut rng);
            let victims = fault.victims();
            assert!(victims.iter().all(|&v| v < SERVERS), "{fault}");
            // A bridge cuts one link, so every server still reaches the third.
            let majority_intact = victims.len() <= 1 || matches!(fault, Fault::Bridge(a, b) if a != b);
            assert!(majority_intact, "{fault}");
            assert!(HOLD_MS.contains(&(hold.as_millis() as u64)), "{hold:?}");
            seen.insert(std::mem::discriminant(&fault));
        }
        assert_eq!(seen.len(), 6, "every kind of fault is drawn");
    }
}
