//! What a leader knows about each follower, and the quorum arithmetic.

use super::types::LogIndex;
use std::collections::VecDeque;

/// Replication state of one follower, kept by the leader.
///
/// A follower is either *probed* (one AppendEntries at a time, until the
/// leader finds where their logs agree) or *replicated* (AppendEntries are
/// pipelined: up to `max_inflight` are sent without waiting for replies).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Progress {
    /// Highest index known to be replicated on the follower.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    pub mode: Mode,
    /// Last index of each unacknowledged AppendEntries (replicate mode).
    pub inflight: VecDeque<LogIndex>,
    /// `match_index` at the previous heartbeat: if it has not moved while
    /// entries are outstanding, a message was lost and the leader re-probes.
    pub match_at_heartbeat: LogIndex,
    /// Heard from in the current CheckQuorum period.
    pub recently_active: bool,
    /// Highest read round the follower has acknowledged in this term.
    pub read_round_acked: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `sent`: a probe is outstanding; send nothing more until a reply or a
    /// heartbeat reply.
    Probe {
        sent: bool,
    },
    Replicate,
    /// The follower needs entries the leader has compacted: it is sent the
    /// snapshot up to `index` in chunks. `sent` bytes have gone out,
    /// `acked` the follower reported holding, `in_flight` chunks are
    /// unacknowledged; `acked_at_heartbeat` is `acked` at the previous
    /// heartbeat (unmoved with chunks in flight: one was lost, resend from
    /// `acked`).
    Snapshot {
        index: u64,
        sent: u64,
        acked: u64,
        in_flight: usize,
        acked_at_heartbeat: u64,
    },
}

impl Progress {
    pub fn new(last_index: LogIndex) -> Progress {
        Progress {
            match_index: 0,
            next_index: last_index + 1,
            mode: Mode::Probe { sent: false },
            inflight: VecDeque::new(),
            match_at_heartbeat: 0,
            recently_active: false,
            read_round_acked: 0,
        }
    }

    /// Back to probing from just after what the follower is known to hold.
    pub fn become_probe(&mut self, next_index: LogIndex) {
        self.next_index = next_index.max(self.match_index + 1);
        self.mode = Mode::Probe { sent: false };
        self.inflight.clear();
    }

    /// The follower holds nothing after `index` after all (it lost its log):
    /// `match_index` goes back to it. The commit index does not: what is
    /// committed is on a majority whatever this follower lost.
    pub fn forget_match(&mut self, index: LogIndex) {
        self.match_index = self.match_index.min(index);
        self.match_at_heartbeat = self.match_at_heartbeat.min(index);
    }

    /// True if no more Appends may be sent to this follower now (in
    /// snapshot mode the chunks have their own window).
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.mode {
            Mode::Probe { sent } => sent,
            Mode::Replicate => self.inflight.len() >= max_inflight,
            Mode::Snapshot { .. } => true,
        }
    }

    /// Starts sending the snapshot up to `index` from its first byte.
    pub fn become_snapshot(&mut self, index: u64) {
        self.mode = Mode::Snapshot { index, sent: 0, acked: 0, in_flight: 0, acked_at_heartbeat: 0 };
        self.inflight.clear();
    }

    /// Records a successful reply. Returns true if it moved `match_index`.
    pub fn acknowledge(&mut self, match_index: LogIndex) -> bool {
        while self.inflight.front().is_some_and(|&last| last <= match_index) {
            self.inflight.pop_front();
        }
        let advanced = match_index > self.match_index;
        if advanced {
            self.match_index = match_index;
        }
        if let Mode::Probe { .. } | Mode::Snapshot { .. } = self.mode {
            // The logs agree up to `match_index`: start pipelining after it.
            self.mode = Mode::Replicate;
            self.next_index = self.match_index + 1;
            self.inflight.clear();
        }
        self.next_index = self.next_index.max(self.match_index + 1);
        advanced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_then_pipeline() {
        let mut p = Progress::new(10);
        assert!(!p.is_paused(2));
        p.mode = Mode::Probe { sent: true };
        assert!(p.is_paused(2));
        assert!(p.acknowledge(4));
        assert_eq!((p.mode, p.next_index), (Mode::Replicate, 5));
        p.inflight.extend([6, 8]);
        assert!(p.is_paused(2));
        assert!(p.acknowledge(6));
        assert_eq!(p.inflight.len(), 1);
        p.become_probe(2);
        assert_eq!(p.next_index, 7, "never probe below what is known to match");
    }
}
