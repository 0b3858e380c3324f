//! The in-memory copy of a node's log, with the lookups Raft needs.
//!
//! Indexes are 1-based. The log is a *suffix*: entries `first_index()` to
//! `last_index()` after a *base*, the `(index, term)` of the last entry
//! dropped by compaction (a snapshot covers everything up to it). With
//! nothing compacted the base is `(0, 0)`, a virtual entry of term 0, so
//! that the consistency check of the first AppendEntries needs no special
//! case. Entries at or below the base are gone: `term_at` knows only the
//! base's own term, `get` and `slice` nothing below `first_index()`.

use super::types::{Entry, LogIndex, Term};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RaftLog<C> {
    /// The last compacted entry: `(0, 0)` when nothing is.
    base: (LogIndex, Term),
    /// Entries `base.0 + 1 ..= base.0 + entries.len()`.
    entries: Vec<Entry<C>>,
}

impl<C: Clone> RaftLog<C> {
    /// A log holding `entries` from index 1.
    pub fn new(entries: Vec<Entry<C>>) -> RaftLog<C> {
        RaftLog::with_base((0, 0), entries)
    }

    /// A log whose entries follow the compacted entry `base` (index, term).
    ///
    /// # Panics
    /// If terms decrease (from the base's on): durable state that breaks
    /// this is a programming error of whoever wrote it.
    pub fn with_base(base: (LogIndex, Term), entries: Vec<Entry<C>>) -> RaftLog<C> {
        let log = RaftLog { base, entries };
        log.assert_terms_monotonic();
        log
    }

    /// The last compacted entry, `(index, term)`; `(0, 0)` if none.
    pub fn base(&self) -> (LogIndex, Term) {
        self.base
    }

    /// The first index still held (one past the base).
    pub fn first_index(&self) -> LogIndex {
        self.base.0 + 1
    }

    pub fn last_index(&self) -> LogIndex {
        self.base.0 + self.entries.len() as LogIndex
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.base.1, |e| e.term)
    }

    /// The term at `index`: the base's for the base, `None` below it
    /// (compacted) or past the end.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base.0 {
            return Some(self.base.1);
        }
        self.get(index).map(|e| e.term)
    }

    /// The entry at `index`, if held (not compacted, not past the end).
    pub fn get(&self, index: LogIndex) -> Option<&Entry<C>> {
        let i = usize::try_from(index.checked_sub(self.first_index())?).ok()?;
        self.entries.get(i)
    }

    /// Entries `from..=to`, clamped to what is held, cloned for a message.
    pub fn slice(&self, from: LogIndex, to: LogIndex) -> Vec<Entry<C>> {
        let start = from.max(self.first_index());
        let end = to.min(self.last_index());
        if start > end {
            return Vec::new();
        }
        let offset = self.base.0;
        self.entries[(start - offset - 1) as usize..(end - offset) as usize].to_vec()
    }

    pub fn append(&mut self, entry: Entry<C>) -> LogIndex {
        debug_assert!(entry.term >= self.last_term(), "terms in a log never decrease");
        self.entries.push(entry);
        self.last_index()
    }

    /// Drops every entry at or after `index`.
    ///
    /// # Panics
    /// If `index` is at or below the base: compacted entries were committed
    /// and applied, and are never rewritten.
    pub fn truncate_from(&mut self, index: LogIndex) {
        assert!(index > self.base.0, "truncating at {index}, at or below the compacted base {}", self.base.0);
        self.entries.truncate((index - self.first_index()) as usize);
    }

    /// Drops every entry up to and including `index`, which becomes the
    /// base (a snapshot covers it).
    ///
    /// # Panics
    /// If `index` is below the base or past the end.
    pub fn compact_to(&mut self, index: LogIndex) {
        assert!(index >= self.base.0 && index <= self.last_index(), "compacting to {index} outside the log");
        let term = self.term_at(index).expect("an index within the log has a term");
        self.entries.drain(..(index - self.base.0) as usize);
        self.base = (index, term);
    }

    /// Makes the log follow a snapshot ending at (`index`, `term`) (Raft
    /// Figure 13): if it holds that very entry, the entries after it stay;
    /// otherwise every entry goes, since any of them may conflict. Returns
    /// whether entries stayed.
    pub fn restore(&mut self, index: LogIndex, term: Term) -> bool {
        if index >= self.base.0 && self.term_at(index) == Some(term) {
            self.compact_to(index);
            true
        } else {
            *self = RaftLog::with_base((index, term), Vec::new());
            false
        }
    }

    /// The largest index `<= index` (clamped to the log) whose term is
    /// `<= term`: where a conflicting suffix can start at the earliest.
    /// Never below the base: everything up to it is committed, so it agrees
    /// with any leader's log.
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> LogIndex {
        if index <= self.base.0 {
            return self.base.0;
        }
        let limit = (index.min(self.last_index()) - self.base.0) as usize;
        // Terms are sorted, so a binary search finds the boundary.
        self.base.0 + self.entries[..limit].partition_point(|e| e.term <= term) as LogIndex
    }

    /// True if a log ending at (`last_term`, `last_index`) is at least as
    /// up-to-date as this one (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// The entries held, `first_index()..=last_index()`.
    pub fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }

    fn assert_terms_monotonic(&self) {
        assert!(self.entries.first().is_none_or(|e| e.term >= self.base.1), "an entry older than the compacted base");
        assert!(self.entries.windows(2).all(|w| w[0].term <= w[1].term), "a log's terms never decrease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Payload;

    fn entries(terms: &[Term]) -> Vec<Entry<()>> {
        terms.iter().map(|&term| Entry { term, payload: Payload::Noop }).collect()
    }

    fn log(terms: &[Term]) -> RaftLog<()> {
        RaftLog::new(entries(terms))
    }

    #[test]
    fn lookups() {
        let l = log(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(l.term_at(0), Some(0));
        assert_eq!(l.term_at(6), Some(4));
        assert_eq!(l.term_at(7), None);
        assert_eq!(l.find_conflict_by_term(6, 3), 5);
        assert_eq!(l.find_conflict_by_term(4, 1), 2);
        assert_eq!(l.find_conflict_by_term(9, 9), 6);
        assert_eq!(l.find_conflict_by_term(3, 0), 0);
        assert_eq!(l.slice(2, 3).len(), 2);
        assert_eq!(l.slice(7, 9).len(), 0);
        assert!(l.is_up_to_date(6, 4) && l.is_up_to_date(1, 5));
        assert!(!l.is_up_to_date(5, 4) && !l.is_up_to_date(9, 3), "shorter log or older last term");
    }

    /// The same log as in `lookups`, with indexes 1..=3 compacted into a
    /// base of (3, 2): every lookup above the base answers the same.
    #[test]
    fn lookups_after_a_base() {
        let full = log(&[1, 1, 2, 2, 2, 4]);
        let l = RaftLog::with_base((3, 2), entries(&[2, 2, 4]));
        assert_eq!((l.first_index(), l.last_index(), l.last_term()), (4, 6, 4));
        assert_eq!(l.term_at(3), Some(2), "the base's own term is known");
        assert_eq!((l.term_at(2), l.get(3)), (None, None), "below the base is gone");
        for i in 3..=7 {
            assert_eq!(l.term_at(i), full.term_at(i), "term at {i}");
        }
        assert_eq!(l.find_conflict_by_term(6, 3), 5);
        assert_eq!(l.find_conflict_by_term(9, 9), 6);
        assert_eq!(l.find_conflict_by_term(5, 1), 3, "never below the base");
        assert_eq!(l.find_conflict_by_term(2, 0), 3);
        assert_eq!(l.slice(1, 5).len(), 2, "a slice starts at the first index held");
        assert_eq!(l.slice(4, 6), full.slice(4, 6));
        assert!(l.is_up_to_date(6, 4) && !l.is_up_to_date(5, 4));
        let empty = RaftLog::<()>::with_base((3, 2), Vec::new());
        assert_eq!((empty.last_index(), empty.last_term()), (3, 2), "an empty suffix ends at the base");
    }

    #[test]
    fn truncating_and_appending_after_a_base() {
        let mut l = RaftLog::with_base((3, 2), entries(&[2, 2, 4]));
        l.truncate_from(5);
        assert_eq!(l.last_index(), 4);
        assert_eq!(l.append(Entry { term: 5, payload: Payload::Noop }), 5);
        l.truncate_from(4);
        assert_eq!((l.last_index(), l.last_term()), (3, 2));
    }

    #[test]
    fn compacting_and_restoring_a_snapshot() {
        let mut l = log(&[1, 1, 2, 2, 2, 4]);
        l.compact_to(2);
        assert_eq!((l.base(), l.first_index(), l.entries().len()), ((2, 1), 3, 4));
        l.compact_to(2);
        assert_eq!(l.base(), (2, 1), "compacting to the base changes nothing");
        // A snapshot ending at an entry the log holds keeps what follows.
        assert!(l.restore(4, 2));
        assert_eq!((l.base(), l.last_index()), ((4, 2), 6));
        // One ending at an entry of another term drops everything.
        assert!(!l.restore(5, 3));
        assert_eq!((l.base(), l.last_index(), l.entries().len()), ((5, 3), 5, 0));
        // And one past the end too.
        assert!(!l.restore(9, 4));
        assert_eq!((l.last_index(), l.last_term()), (9, 4));
    }

    #[test]
    #[should_panic(expected = "at or below the compacted base")]
    fn compacted_entries_are_never_truncated() {
        RaftLog::with_base((3, 2), entries(&[2])).truncate_from(3);
    }

    #[test]
    #[should_panic(expected = "older than the compacted base")]
    fn a_suffix_older_than_its_base_is_refused() {
        RaftLog::with_base((3, 2), entries(&[1]));
    }
}
