//! The leader lease (Raft thesis §6.4.1): reads served without a round of
//! messages, for as long as no other leader can have been elected.
//!
//! **Why it holds.** A follower that hears from its leader ignores every
//! election for the next `election_ticks` of its own clock (the *leader
//! lease* of thesis §4.2.3, which [`super::RaftNode`] keeps anyway against
//! disruptive servers; with lease reads on it also ignores every other
//! message of a higher term, and a server just restarted behaves as if it
//! had heard from a leader). So once a quorum has echoed a read round that
//! began at the leader's tick `t`, no other leader can be elected until each
//! of them has counted `election_ticks - 1` ticks after `t` (the first tick
//! may come at once). If clocks run at most a factor `1 ± ρ` from the
//! truth, `lease_ticks ≤ (election_ticks - 1)(1 - ρ)/(1 + ρ)` of the
//! leader's ticks pass no later: until then it may serve reads from its
//! commit index. [`lease_ticks_for`] computes the bound, less one tick for
//! the runtime's lateness in delivering ticks.
//!
//! **What ends it early.** A leadership transfer (TimeoutNow makes the
//! target's election ignore leases: no lease for the rest of the term) and
//! a change of configuration (only rounds begun after it count, so the
//! quorum that confirms is a quorum of the configuration in force).
//!
//! This is all the state it needs: the leader's own tick count, the tick
//! each recent round began, and how far the lease reaches.

use std::collections::VecDeque;

/// The longest lease, in the leader's ticks, that stays within what the
/// followers grant when no clock runs more than `drift` (a fraction, e.g.
/// 0.05) fast or slow, and the runtime delivers ticks at most one late.
/// 0 (no lease reads) when nothing is left.
pub fn lease_ticks_for(election_ticks: u32, drift: f64) -> u32 {
    if !(0.0..1.0).contains(&drift) || election_ticks < 2 {
        return 0;
    }
    let granted = f64::from(election_ticks - 1) * (1.0 - drift) / (1.0 + drift);
    // Floor, then one tick for a late tick on the leader's side.
    (granted.floor() as u32).saturating_sub(1)
}

/// The leader's side of the lease; reset whenever it takes office.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeaderLease {
    /// Ticks counted since taking office.
    clock: u64,
    /// Reads may be served while `clock < until`.
    until: u64,
    /// `(round, tick)`: the first read round begun at each recent tick, in
    /// order. Rounds older than the lease is long are of no more use, so
    /// this holds at most `lease_ticks + 1` entries.
    rounds: VecDeque<(u64, u64)>,
    /// A TimeoutNow went out this term: never again.
    forfeited: bool,
}

impl LeaderLease {
    pub fn tick(&mut self, lease_ticks: u32) {
        self.clock += 1;
        let horizon = self.clock.saturating_sub(u64::from(lease_ticks));
        while self.rounds.front().is_some_and(|&(_, at)| at < horizon) {
            self.rounds.pop_front();
        }
        debug_assert!(self.rounds.len() <= lease_ticks as usize + 1, "lease rounds beyond their bound");
    }

    /// Round `round` begins now (the leader sends it with its next messages).
    pub fn round_started(&mut self, round: u64) {
        debug_assert!(self.rounds.back().is_none_or(|&(r, _)| r < round), "rounds begin in order");
        if self.rounds.back().is_none_or(|&(_, at)| at < self.clock) {
            self.rounds.push_back((round, self.clock));
        }
    }

    /// A quorum has echoed every round up to `confirmed`: the lease reaches
    /// `lease_ticks` past the tick the latest of them began (or a tick
    /// before it, which only shortens the lease).
    pub fn confirmed(&mut self, confirmed: u64, lease_ticks: u32) {
        let mut began = None;
        while let Some(&(round, at)) = self.rounds.front() {
            if round > confirmed {
                break;
            }
            began = Some(at);
            self.rounds.pop_front();
        }
        if let Some(at) = began.filter(|_| !self.forfeited) {
            self.until = self.until.max(at + u64::from(lease_ticks));
        }
    }

    /// Whether reads may be served now without a round.
    pub fn holds(&self) -> bool {
        !self.forfeited && self.clock < self.until
    }

    /// Only rounds begun from now on count (the configuration changed).
    pub fn restart(&mut self) {
        self.until = 0;
        self.rounds.clear();
    }

    /// Its invariants; the node checks them after every step.
    pub fn check(&self, lease_ticks: u32) {
        assert!(self.until <= self.clock + u64::from(lease_ticks), "a lease reaching past lease_ticks from now");
        assert!(self.rounds.len() <= lease_ticks as usize + 1, "lease rounds beyond their bound");
        assert!(self.rounds.iter().all(|&(_, at)| at <= self.clock), "a round begun in the future");
        assert!(lease_ticks > 0 || (self.until == 0 && self.rounds.is_empty()), "a lease without lease reads");
        assert!(!self.forfeited || self.until == 0, "a forfeited lease that still reaches ahead");
    }

    /// The lease ends now and for the rest of the term (a TimeoutNow went
    /// out: its target's election ignores the followers' leases).
    pub fn forfeit(&mut self) {
        self.restart();
        self.forfeited = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_leaves_room_for_drift_and_a_late_tick() {
        // 29 ticks granted; at 5% drift 29 · 0.95 / 1.05 = 26.2; less one.
        assert_eq!(lease_ticks_for(30, 0.05), 25);
        assert_eq!(lease_ticks_for(30, 0.0), 28);
        assert_eq!(lease_ticks_for(10, 0.5), 2); // 9 · 0.5 / 1.5 = 3, less one
        assert_eq!(lease_ticks_for(3, 0.5), 0);
        assert_eq!(lease_ticks_for(30, 1.0), 0, "no bound on drift, no lease");
        assert_eq!(lease_ticks_for(30, f64::NAN), 0);
    }

    #[test]
    fn a_lease_runs_from_the_tick_its_round_began() {
        let mut lease = LeaderLease::default();
        lease.tick(10);
        lease.round_started(1); // at tick 1
        lease.tick(10);
        lease.tick(10);
        lease.round_started(2); // at tick 3
        assert!(!lease.holds(), "nothing confirmed yet");
        lease.confirmed(1, 10);
        assert!(lease.holds());
        assert_eq!(lease.until, 11, "from round 1's tick, not from when the echo came");
        lease.confirmed(2, 10);
        assert_eq!(lease.until, 13);
        for _ in 3..13 {
            lease.tick(10);
        }
        assert!(!lease.holds(), "expired at tick 13");
    }

    #[test]
    fn a_round_begun_within_a_tick_counts_from_the_ticks_first_round() {
        let mut lease = LeaderLease::default();
        lease.tick(10);
        lease.round_started(5);
        lease.round_started(6);
        lease.round_started(7);
        assert_eq!(lease.rounds.len(), 1, "one entry per tick");
        lease.confirmed(6, 10);
        assert_eq!(lease.until, 11);
    }

    #[test]
    fn old_rounds_are_forgotten_and_a_forfeited_lease_never_returns() {
        let mut lease = LeaderLease::default();
        for round in 1..=100 {
            lease.round_started(round);
            lease.tick(4);
        }
        assert!(lease.rounds.len() <= 5);
        lease.confirmed(100, 4);
        assert!(lease.holds());
        lease.forfeit();
        assert!(!lease.holds());
        lease.round_started(101);
        lease.confirmed(101, 4);
        assert!(!lease.holds(), "forfeited for the rest of the term");
    }

    #[test]
    fn a_restart_discards_rounds_begun_before_it() {
        let mut lease = LeaderLease::default();
        lease.tick(10);
        lease.round_started(1);
        lease.restart();
        lease.confirmed(1, 10);
        assert!(!lease.holds());
        lease.tick(10);
        lease.round_started(2);
        lease.confirmed(2, 10);
        assert!(lease.holds());
    }
}
