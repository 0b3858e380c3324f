//! What a node knows about its own disk: which batches it handed out, which
//! the runtime reported durable, and so how much of its log is safe to
//! count in a quorum and to apply (the node's side of the contract in
//! [`super::ready`]).

use super::ready::BatchNumber;
use super::types::LogIndex;
use std::collections::VecDeque;

/// Bookkeeping of the numbered batches of one node incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Durability {
    /// The number of the last batch handed out; 0 before the first.
    last_batch: BatchNumber,
    /// The highest batch reported durable.
    durable_batch: BatchNumber,
    /// The batch that carries the current term and vote (0: they were
    /// durable when the node started).
    hard_state_batch: BatchNumber,
    /// Log writes handed out and not reported yet, oldest first:
    /// `(batch, from, last index after the write)`.
    unreported_writes: VecDeque<(BatchNumber, LogIndex, LogIndex)>,
    /// The longest log prefix that is durable *and* equal to the in-memory
    /// log: what the node may count as its own in a commit quorum and apply.
    stable: LogIndex,
}

impl Durability {
    /// A node restarted from its disk: all it holds is durable.
    pub fn restarted(last_index: LogIndex) -> Durability {
        Durability {
            last_batch: 0,
            durable_batch: 0,
            hard_state_batch: 0,
            unreported_writes: VecDeque::new(),
            stable: last_index,
        }
    }

    pub fn last_batch(&self) -> BatchNumber {
        self.last_batch
    }
    pub fn durable_batch(&self) -> BatchNumber {
        self.durable_batch
    }
    pub fn hard_state_batch(&self) -> BatchNumber {
        self.hard_state_batch
    }
    pub fn stable(&self) -> LogIndex {
        self.stable
    }

    /// Numbers the next batch. `log_write`: `(from, last index after)` when
    /// it changes the log. Entries at or after `from` differ from what the
    /// disk holds until this batch is durable, so they leave the stable
    /// prefix at once.
    pub fn hand_out(&mut self, hard_state: bool, log_write: Option<(LogIndex, LogIndex)>) -> BatchNumber {
        self.last_batch += 1;
        let number = self.last_batch;
        if hard_state {
            self.hard_state_batch = number;
        }
        if let Some((from, last)) = log_write {
            debug_assert!(from >= 1 && last + 1 >= from, "a write from {from} cannot end at {last}");
            self.stable = self.stable.min(from - 1);
            self.unreported_writes.push_back((number, from, last));
        }
        number
    }

    /// No more than `index` counts as stable until the next report (an
    /// installed snapshot replaces the log: the disk holds the old one until
    /// the install's batch is durable).
    pub fn cap_stable(&mut self, index: LogIndex) {
        self.stable = self.stable.min(index);
    }

    /// The runtime reported every batch up to `number` durable. Returns
    /// false if that was already known.
    ///
    /// # Panics
    /// If `number` was never handed out: the runtime broke the contract.
    pub fn persisted(&mut self, number: BatchNumber) -> bool {
        assert!(
            number <= self.last_batch,
            "batch {number} reported durable, but only {} were handed out",
            self.last_batch
        );
        if number <= self.durable_batch {
            return false;
        }
        self.durable_batch = number;
        // After a write, the disk equals the in-memory log up to the
        // write's last index, except where a later write (still
        // unreported) has changed the log since.
        let mut written_to = None;
        while let Some(&(batch, _, last)) = self.unreported_writes.front() {
            if batch > number {
                break;
            }
            written_to = Some(last);
            self.unreported_writes.pop_front();
        }
        if let Some(last) = written_to {
            let changed_since = self.unreported_writes.iter().map(|&(_, from, _)| from - 1).min();
            self.stable = changed_since.map_or(last, |bound| last.min(bound));
        }
        true
    }

    /// Assertions that hold between steps; `last_index` is the in-memory
    /// log's.
    pub fn check(&self, last_index: LogIndex) {
        assert!(self.durable_batch <= self.last_batch, "durable beyond the batches handed out");
        assert!(self.hard_state_batch <= self.last_batch, "hard state in a batch never handed out");
        assert!(self.stable <= last_index, "stable prefix {} beyond the log {last_index}", self.stable);
        debug_assert!(
            self.unreported_writes.iter().all(|&(b, _, _)| b > self.durable_batch),
            "a reported write is still listed"
        );
        debug_assert!(
            self.unreported_writes.iter().zip(self.unreported_writes.iter().skip(1)).all(|(a, b)| a.0 < b.0),
            "unreported writes out of order"
        );
        debug_assert!(
            self.unreported_writes.iter().all(|&(_, from, _)| self.stable < from),
            "a pending write starts inside the stable prefix"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_follows_reports_and_truncations() {
        let mut d = Durability::restarted(3);
        assert_eq!(d.stable(), 3);
        let b1 = d.hand_out(true, Some((4, 6)));
        assert_eq!((b1, d.stable(), d.hard_state_batch()), (1, 3, 1));
        // A follower truncates from 5 before batch 1 is durable.
        let b2 = d.hand_out(false, Some((5, 5)));
        assert_eq!(d.stable(), 3);
        assert!(d.persisted(b1));
        assert_eq!(d.stable(), 4, "batch 2 rewrote index 5: only 4 is stable");
        assert!(!d.persisted(b1), "a repeated report changes nothing");
        assert!(d.persisted(b2));
        assert_eq!(d.stable(), 5);
        assert_eq!(d.durable_batch(), d.last_batch());
        // A batch with only a hard state moves nothing in the log.
        let b3 = d.hand_out(true, None);
        assert!(d.persisted(b3));
        assert_eq!((d.stable(), d.hard_state_batch()), (5, 3));
        d.check(5);
    }

    #[test]
    fn merged_reports_cover_every_earlier_batch() {
        let mut d = Durability::restarted(0);
        for i in 1..=4 {
            d.hand_out(false, Some((i, i)));
        }
        assert!(d.persisted(3));
        assert_eq!(d.stable(), 3);
        assert!(d.persisted(4));
        assert_eq!(d.stable(), 4);
    }

    #[test]
    #[should_panic(expected = "only 1 were handed out")]
    fn reporting_a_batch_never_handed_out_is_a_runtime_bug() {
        let mut d = Durability::restarted(0);
        d.hand_out(true, None);
        d.persisted(2);
    }
}
