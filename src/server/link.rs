//! When a peer connection is dead, and when to dial again: the rules the
//! peer transport ([`super::peer`]) follows, as small state machines fed
//! with what happened and when, so they are tested in simulated time.
//!
//! **Why acks.** A TCP connection whose packets are blackholed (a
//! partition, a firewall rule, a pulled cable) reports nothing: writes land
//! in the kernel's send buffer, the retransmission timer backs off to
//! seconds, and a heartbeat every 50 ms rarely fills the buffer, so a write
//! never fails either. Issue 21 measured servers stuck for 1–3 s after a
//! partition healed, on connections that were silently dead. So the
//! receiving end of every peer connection writes back one byte ([`ACK`]),
//! at most every `ack_interval` while bytes arrive ([`AckPacer`]), and the
//! writer counts its connection dead when bytes it wrote have gone
//! unacknowledged for `silence_max` ([`Liveness`]). The ack travels on the
//! same connection, so it proves the connection carries bytes both ways,
//! whatever Raft happens to send in the other direction. An idle
//! connection (nothing written) owes nothing and is never declared dead.
//!
//! **Bounds.** `ack_interval = silence_max / 4`, so a live connection acks
//! within `RTT + silence_max / 4`; `silence_max` defaults to half the
//! minimum election timeout (150 ms with the defaults: 300–600 ms
//! elections, 50 ms heartbeats), so a dead link is redialled well before a
//! follower would start an election over it.
//!
//! **Redial** ([`Redial`]): the first attempt after a connection that had
//! been acknowledged breaks is immediate; each failure after that (a
//! connect that fails or times out, a connection that dies silent) doubles
//! the pause from `backoff_min` up to `backoff_max` (default: the heartbeat
//! interval). Only an ack resets it: a peer that is paused (SIGSTOP)
//! accepts connections in its kernel without ever reading them, and must
//! not be redialled flat out.

use std::time::{Duration, Instant};

/// The byte a reader writes back on a peer connection to say "bytes
/// arrived". Nothing else ever travels from reader to writer.
pub const ACK: u8 = 0x06;

/// The writer's view of one outbound connection: is anything it wrote
/// overdue for an ack?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Liveness {
    silence_max: Duration,
    /// Since when bytes have been outstanding without an ack (the first
    /// write after the last ack, or the ack itself if a write was still in
    /// progress then); `None` when nothing is outstanding.
    outstanding_since: Option<Instant>,
}

impl Liveness {
    pub fn new(silence_max: Duration) -> Liveness {
        Liveness { silence_max, outstanding_since: None }
    }

    /// A write starts at `now`.
    pub fn wrote(&mut self, now: Instant) {
        self.outstanding_since.get_or_insert(now);
    }

    /// An ack arrived at `now`. `writing`: a write is still in progress,
    /// so its bytes stay outstanding from now on.
    pub fn acked(&mut self, now: Instant, writing: bool) {
        self.outstanding_since = writing.then_some(now);
    }

    /// When the connection counts as dead unless an ack arrives first.
    pub fn deadline(&self) -> Option<Instant> {
        self.outstanding_since.map(|since| since + self.silence_max)
    }

    pub fn is_dead(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| now >= deadline)
    }
}

/// The reader's side: one ack at most every `interval` while bytes arrive,
/// and one owed ack sent when the interval has passed even if nothing more
/// arrives (else the writer's last bytes would go unacknowledged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckPacer {
    interval: Duration,
    last_sent: Option<Instant>,
    /// When bytes first arrived since the last ack.
    owed_since: Option<Instant>,
}

impl AckPacer {
    pub fn new(interval: Duration) -> AckPacer {
        AckPacer { interval, last_sent: None, owed_since: None }
    }

    /// Bytes arrived at `now`.
    pub fn received(&mut self, now: Instant) {
        self.owed_since.get_or_insert(now);
    }

    /// When the owed ack is due, if one is owed.
    pub fn due(&self) -> Option<Instant> {
        let owed = self.owed_since?;
        Some(match self.last_sent {
            Some(last) => owed.max(last + self.interval),
            None => owed,
        })
    }

    /// Whether to write an ack at `now`; if so, call [`AckPacer::sent`].
    pub fn should_send(&self, now: Instant) -> bool {
        self.due().is_some_and(|due| now >= due)
    }

    /// An ack was written at `now` (or could not be, and is skipped: the
    /// next bytes owe another).
    pub fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.owed_since = None;
    }
}

/// The pause before the next connection attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redial {
    backoff_min: Duration,
    backoff_max: Duration,
    /// Failures since the last ack.
    failures: u32,
}

impl Redial {
    pub fn new(backoff_min: Duration, backoff_max: Duration) -> Redial {
        Redial { backoff_min, backoff_max, failures: 0 }
    }

    /// How long to wait before the next attempt: nothing after a healthy
    /// connection broke, then `backoff_min`, doubling up to `backoff_max`.
    pub fn pause(&self) -> Duration {
        match self.failures {
            0 => Duration::ZERO,
            n => self.backoff_min.saturating_mul(1 << (n - 1).min(20)).min(self.backoff_max),
        }
    }

    /// A connection attempt failed, or a connection died unacknowledged.
    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// An ack arrived: the link works.
    pub fn healthy(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const SILENCE: Duration = Duration::from_millis(150);
    const INTERVAL: Duration = Duration::from_millis(150 / 4);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_blackholed_connection_is_dead_silence_max_after_its_first_unacked_write() {
        let t0 = Instant::now();
        let mut live = Liveness::new(SILENCE);
        assert_eq!(live.deadline(), None, "nothing written, nothing owed");
        live.wrote(t0);
        live.wrote(t0 + ms(50)); // later writes do not move the deadline
        assert_eq!(live.deadline(), Some(t0 + SILENCE));
        assert!(!live.is_dead(t0 + ms(149)));
        assert!(live.is_dead(t0 + ms(150)));
        // An ack, even late, clears it; a write in progress restarts the clock.
        live.acked(t0 + ms(160), true);
        assert_eq!(live.deadline(), Some(t0 + ms(160) + SILENCE));
        live.acked(t0 + ms(170), false);
        assert_eq!(live.deadline(), None);
    }

    #[test]
    fn the_reader_acks_at_once_then_at_most_every_interval_and_pays_what_it_owes() {
        let t0 = Instant::now();
        let mut pacer = AckPacer::new(INTERVAL);
        assert_eq!(pacer.due(), None);
        pacer.received(t0);
        assert!(pacer.should_send(t0), "the first bytes are acked at once");
        pacer.sent(t0);
        pacer.received(t0 + ms(1));
        assert_eq!(pacer.due(), Some(t0 + INTERVAL));
        assert!(!pacer.should_send(t0 + ms(10)));
        // Nothing more arrives: the owed ack still goes out on time.
        assert!(pacer.should_send(t0 + INTERVAL));
        pacer.sent(t0 + INTERVAL);
        assert_eq!(pacer.due(), None);
        // After a quiet spell, bytes are acked at once again.
        pacer.received(t0 + ms(500));
        assert_eq!(pacer.due(), Some(t0 + ms(500)));
    }

    #[test]
    fn redial_pauses_double_to_the_cap_and_reset_on_an_ack() {
        let mut redial = Redial::new(ms(20), ms(50));
        assert_eq!(redial.pause(), Duration::ZERO);
        let mut pauses = Vec::new();
        for _ in 0..40 {
            redial.failed();
            pauses.push(redial.pause().as_millis());
        }
        assert_eq!(pauses[..4], [20, 40, 50, 50]);
        assert!(pauses.iter().all(|&p| p <= 50), "capped: {pauses:?}");
        redial.healthy();
        assert_eq!(redial.pause(), Duration::ZERO);
    }

    /// A simulated connection: the writer writes at random moments, each
    /// write's bytes reach the reader after `one_way`, the reader acks as
    /// its pacer says, and each ack reaches the writer after `one_way`.
    /// Returns when the writer first counted the connection dead, if ever.
    fn simulate(seed: u64, one_way: Duration, blackhole_at: Option<Duration>, run: Duration) -> Option<Duration> {
        let mut rng = Rng::new(seed);
        let t0 = Instant::now();
        let step = ms(1);
        let (mut live, mut pacer) = (Liveness::new(SILENCE), AckPacer::new(INTERVAL));
        let (mut to_reader, mut to_writer): (Vec<Instant>, Vec<Instant>) = (Vec::new(), Vec::new());
        let mut now = t0;
        while now < t0 + run {
            let cut = blackhole_at.is_some_and(|at| now >= t0 + at);
            // Bursts of writes with quiet spells between them, as Raft sends.
            if rng.chance(1, 20) {
                live.wrote(now);
                if !cut {
                    to_reader.push(now + one_way);
                }
            }
            if to_reader.first().is_some_and(|&at| at <= now) {
                to_reader.retain(|&at| at > now);
                pacer.received(now);
            }
            if pacer.should_send(now) {
                pacer.sent(now);
                if !cut {
                    to_writer.push(now + one_way);
                }
            }
            if to_writer.first().is_some_and(|&at| at <= now) {
                to_writer.retain(|&at| at > now);
                live.acked(now, false);
            }
            if live.is_dead(now) {
                return Some(now - t0);
            }
            now += step;
        }
        None
    }

    /// The bound a live connection must meet: an ack within
    /// `2 · one_way + interval` of any write, comfortably under
    /// `silence_max` for a round trip up to half of it.
    #[test]
    fn a_live_connection_is_never_declared_dead_and_a_cut_one_always_is() {
        for seed in 0..200 {
            for one_way in [ms(0), ms(5), ms(25), ms(50)] {
                let dead = simulate(seed, one_way, None, Duration::from_secs(10));
                assert_eq!(dead, None, "seed {seed}, one-way delay {one_way:?}: a live connection was declared dead");
                let cut = ms(3_000);
                let dead = simulate(seed, one_way, Some(cut), Duration::from_secs(10))
                    .unwrap_or_else(|| panic!("seed {seed}: a blackholed connection was never declared dead"));
                // Within silence_max of the first write after the cut (writes
                // come every 20 ms on average; allow a long gap).
                assert!(dead >= cut && dead <= cut + SILENCE + ms(400), "seed {seed}: dead at {dead:?}");
            }
        }
    }
}
