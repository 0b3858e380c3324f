//! The in-memory copy of a node's log, with the lookups Raft needs.
//!
//! Indexes are 1-based; index 0 is a virtual entry of term 0 so that the
//! consistency check of the first AppendEntries needs no special case.

use super::types::{Entry, LogIndex, Term};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RaftLog<C> {
    entries: Vec<Entry<C>>,
}

impl<C: Clone> RaftLog<C> {
    pub fn new(entries: Vec<Entry<C>>) -> RaftLog<C> {
        let log = RaftLog { entries };
        log.assert_terms_monotonic();
        log
    }

    pub fn last_index(&self) -> LogIndex {
        self.entries.len() as LogIndex
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(0, |e| e.term)
    }

    /// The term at `index`, `Some(0)` for index 0, `None` past the end.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.get(index).map(|e| e.term)
    }

    pub fn get(&self, index: LogIndex) -> Option<&Entry<C>> {
        let i = usize::try_from(index.checked_sub(1)?).ok()?;
        self.entries.get(i)
    }

    /// Entries `from..=to` (clamped to the log), cloned for a message.
    pub fn slice(&self, from: LogIndex, to: LogIndex) -> Vec<Entry<C>> {
        let start = from.max(1);
        let end = to.min(self.last_index());
        if start > end {
            return Vec::new();
        }
        self.entries[(start - 1) as usize..end as usize].to_vec()
    }

    pub fn append(&mut self, entry: Entry<C>) -> LogIndex {
        debug_assert!(entry.term >= self.last_term(), "terms in a log never decrease");
        self.entries.push(entry);
        self.last_index()
    }

    /// Drops every entry at or after `index`.
    pub fn truncate_from(&mut self, index: LogIndex) {
        assert!(index >= 1, "index 0 is not an entry");
        self.entries.truncate((index - 1) as usize);
    }

    /// The largest index `<= index` (clamped to the log) whose term is
    /// `<= term`: where a conflicting suffix can start at the earliest.
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> LogIndex {
        let limit = index.min(self.last_index()) as usize;
        // Terms are sorted, so a binary search finds the boundary.
        self.entries[..limit].partition_point(|e| e.term <= term) as LogIndex
    }

    /// True if a log ending at (`last_term`, `last_index`) is at least as
    /// up-to-date as this one (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    pub fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }

    fn assert_terms_monotonic(&self) {
        assert!(self.entries.windows(2).all(|w| w[0].term <= w[1].term), "a log's terms never decrease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Payload;

    fn log(terms: &[Term]) -> RaftLog<()> {
        RaftLog::new(terms.iter().map(|&term| Entry { term, payload: Payload::Noop }).collect())
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
}
