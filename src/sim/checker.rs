//! The Raft safety invariants, checked after every simulator step.
//!
//! Every check is incremental: its cost is proportional to what the step
//! changed, never to the length of the logs. The trick is a *chain hash* per
//! log position, `chain[i] = H(chain[i-1], entry[i])`: two logs agree on
//! their whole prefix up to `i` exactly when their chain hashes at `i` are
//! equal, so comparing one number compares two prefixes. The checker keeps
//! one chain per node for its in-memory log, which the checks use, and one
//! for its durable log, which a restart goes back to.

use crate::kv::AppliedEntry;
use crate::kv::{ClientId, Command};
use crate::raft::{Entry, LogIndex, LogWrite, NodeId, Term};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::hash::{Hash, Hasher};

/// One of the properties the simulator enforces (Raft paper, Figure 3, plus
/// the service's exactly-once guarantee).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// At most one leader can be elected in a given term.
    ElectionSafety,
    /// A leader never overwrites or deletes entries in its log; it only
    /// appends new entries.
    LeaderAppendOnly,
    /// If two logs contain an entry with the same index and term, the logs
    /// are identical in all entries up through that index.
    LogMatching,
    /// If an entry is committed in a term, it is present in the logs of all
    /// leaders of higher terms (checked on every election), and no node in
    /// a term at or after that term removes it from its log.
    LeaderCompleteness,
    /// No two servers commit or apply different entries at the same index.
    StateMachineSafety,
    /// No replica executes a `(client, seq)` twice.
    ExactlyOnce,
    /// A leader answers a read under its lease (no round of messages) only
    /// while no leader of a later term has been elected.
    LeaseSafety,
}

/// A broken invariant, with what the checker saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

/// Incremental checker of every [`Invariant`] across all nodes of a run.
#[derive(Debug, Default)]
pub struct SafetyChecker {
    /// Who won each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Per node: chain hash of each entry of its in-memory log.
    chains: Vec<Vec<u64>>,
    /// Per node: the same for its durable log, which a restart goes back to.
    durable_chains: Vec<Vec<u64>>,
    /// Chain hash of every (index, term) ever written anywhere.
    /// (A fixed hasher: nothing in a run may depend on ambient randomness.)
    seen: HashMap<(LogIndex, Term), u64, BuildHasherDefault<DefaultHasher>>,
    /// Chain hash of the committed prefix, by index − 1.
    committed: Vec<u64>,
    /// For each term, the highest index a node in that term had seen
    /// committed. An entry so recorded was committed in that term or
    /// earlier: the commit terms used by the checks are upper bounds, so a
    /// check may miss a violation but never reports a false one. (Leader
    /// Completeness speaks of *higher* terms only: a candidate of a lower
    /// term can still win with votes cast before a later commit.)
    commit_terms: BTreeMap<Term, LogIndex>,
    /// Hash of the entry applied at each index − 1, by anyone.
    applied: Vec<u64>,
    /// Where each `(client, seq)` was executed, by anyone: every replica
    /// executes it at the same index, or it ran twice. (Judged across
    /// replicas, so a replica that skipped the execution by installing a
    /// snapshot is still held to it.)
    executed_at: HashMap<(ClientId, u64), LogIndex, BuildHasherDefault<DefaultHasher>>,
    /// Per node: the index its state machine has applied (a restart starts
    /// it at its snapshot's), which only moves forward, one at a time or
    /// by an install.
    applied_by: Vec<LogIndex>,
}

impl SafetyChecker {
    pub fn new(nodes: usize) -> SafetyChecker {
        SafetyChecker {
            chains: vec![Vec::new(); nodes],
            durable_chains: vec![Vec::new(); nodes],
            applied_by: vec![0; nodes],
            ..Default::default()
        }
    }

    /// Node `node` restarted: its log is what was durable, and its state
    /// machine the snapshot's, up to `snapshot_index`. As the node itself
    /// does (`RaftNode::restart`), a log that does not hold the snapshot's
    /// last entry is dropped for the snapshot: a snapshot of applied
    /// entries may have been saved before the log under it was durable.
    pub fn on_restart(&mut self, node: NodeId, snapshot_index: LogIndex) {
        let node = usize::from(node);
        self.chains[node] = self.durable_chains[node].clone();
        self.follow_snapshot(node, snapshot_index);
        self.applied_by[node] = snapshot_index;
    }

    /// Node `node`'s log was compacted up to `index` on its disk. Past the
    /// log's end (a restarted node dropping the log its snapshot
    /// overtook), the log below `index` is the snapshot's: the committed
    /// prefix. (A compaction within the log changes no entry.)
    pub fn on_durable_compact(&mut self, node: NodeId, index: LogIndex) {
        let node = usize::from(node);
        if (self.durable_chains[node].len() as LogIndex) < index {
            self.durable_chains[node] = self.committed_prefix(index);
        }
    }

    /// Node `node`'s log after a restart with a snapshot up to `index`: it
    /// stays if it holds the snapshot's last entry (the committed one),
    /// else it is the committed prefix up to `index`, what the snapshot
    /// holds.
    fn follow_snapshot(&mut self, node: usize, index: LogIndex) {
        if index > 0 && self.chains[node].get(index as usize - 1) != self.committed.get(index as usize - 1) {
            self.chains[node] = self.committed_prefix(index);
        }
    }

    /// Node `node`'s disk was replaced by an empty one.
    pub fn on_wipe(&mut self, node: NodeId) {
        self.durable_chains[usize::from(node)].clear();
    }

    /// Node `node` installed a snapshot covering up to `index` into its
    /// log (the batch's log write, checked by `on_log_write`, follows):
    /// its log up to `index` is now the committed prefix.
    pub fn on_install_batch(&mut self, node: NodeId, index: LogIndex) {
        self.chains[usize::from(node)] = self.committed_prefix(index);
    }

    /// The same, as it reaches node `node`'s disk.
    pub fn on_durable_install(&mut self, node: NodeId, index: LogIndex) {
        self.durable_chains[usize::from(node)] = self.committed_prefix(index);
    }

    /// Node `node`'s state machine was replaced by a snapshot covering up
    /// to `index`. The entries it covers were applied elsewhere, and what
    /// they executed is held against every replica; but a replica's state
    /// never goes back.
    pub fn on_install(&mut self, node: NodeId, index: LogIndex) -> Result<(), Violation> {
        let applied = &mut self.applied_by[usize::from(node)];
        if index <= *applied {
            return violation(
                Invariant::StateMachineSafety,
                format!("node {node} installed a snapshot up to {index}, not past what it had applied ({applied})"),
            );
        }
        *applied = index;
        Ok(())
    }

    fn committed_prefix(&self, index: LogIndex) -> Vec<u64> {
        assert!(index as usize <= self.committed.len(), "a snapshot covers entries not known committed");
        self.committed[..index as usize].to_vec()
    }

    /// `write` reached node `node`'s disk (no check: the same write was
    /// checked when the node handed it out, [`SafetyChecker::on_log_write`]).
    pub fn on_durable_write(&mut self, node: NodeId, write: &LogWrite<Command>) {
        let chain = &mut self.durable_chains[usize::from(node)];
        chain.truncate((write.from.max(1) - 1) as usize);
        for entry in &write.entries {
            let link = chain_link(chain.last().copied().unwrap_or(0), entry);
            chain.push(link);
        }
    }

    /// Node `node` changed its in-memory log by `write` (handed out for
    /// persisting). `was_leader_in` is the term it led before the step, if
    /// it led.
    pub fn on_log_write(
        &mut self,
        node: NodeId,
        write: &LogWrite<Command>,
        was_leader_in: Option<Term>,
        term_now: Term,
    ) -> Result<(), Violation> {
        let old_len = self.chains[usize::from(node)].len() as LogIndex;
        let from = write.from.max(1);
        // Only a truncating write needs the committed bound.
        let committed_by_now = if from <= old_len { self.committed_before(term_now + 1) } else { 0 };
        let chain = &mut self.chains[usize::from(node)];
        if was_leader_in == Some(term_now) && write.from <= old_len {
            return violation(
                Invariant::LeaderAppendOnly,
                format!("leader {node} of term {term_now} rewrote its log from index {} (last {old_len})", write.from),
            );
        }
        if from <= old_len {
            let i = (from - 1) as usize;
            if from <= committed_by_now && self.committed.get(i) == Some(&chain[i]) {
                return violation(
                    Invariant::LeaderCompleteness,
                    format!("node {node} in term {term_now} removed entry {from}, committed by then, from its log"),
                );
            }
            chain.truncate(i);
        }
        for (offset, entry) in write.entries.iter().enumerate() {
            let index = from + offset as LogIndex;
            let link = chain_link(chain.last().copied().unwrap_or(0), entry);
            chain.push(link);
            match self.seen.insert((index, entry.term), link) {
                Some(earlier) if earlier != link => {
                    return violation(
                        Invariant::LogMatching,
                        format!("node {node} holds an entry of term {} at {index} whose log prefix differs from another node's", entry.term),
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Node `node` became leader of `term`.
    /// `node`, leader of `term`, answered a read under its lease.
    pub fn on_lease_read(&self, node: NodeId, term: Term) -> Result<(), Violation> {
        match self.leaders.range(term + 1..).next() {
            Some((&later, &other)) => violation(
                Invariant::LeaseSafety,
                format!("leader {node} of term {term} answered a read under its lease, but {other} was elected in term {later}"),
            ),
            None => Ok(()),
        }
    }

    pub fn on_elected(&mut self, node: NodeId, term: Term) -> Result<(), Violation> {
        if let Some(&other) = self.leaders.get(&term) {
            if other != node {
                return violation(Invariant::ElectionSafety, format!("nodes {other} and {node} both lead term {term}"));
            }
        }
        self.leaders.insert(term, node);
        let chain = &self.chains[usize::from(node)];
        let committed = self.committed_before(term) as usize;
        if committed > 0 && chain.get(committed - 1) != self.committed.get(committed - 1) {
            return violation(
                Invariant::LeaderCompleteness,
                format!(
                    "leader {node} of term {term} lacks entries up to index {committed}, committed in an earlier term"
                ),
            );
        }
        Ok(())
    }

    /// The highest index known to have been committed in a term before `term`.
    fn committed_before(&self, term: Term) -> LogIndex {
        self.commit_terms.range(..term).map(|(_, &index)| index).max().unwrap_or(0)
    }

    /// Node `node`, in term `term`, has commit index `commit`.
    pub fn on_commit(&mut self, node: NodeId, term: Term, commit: LogIndex) -> Result<(), Violation> {
        if commit == 0 {
            return Ok(());
        }
        let known = self.commit_terms.entry(term).or_insert(0);
        *known = (*known).max(commit);
        let chain = &self.chains[usize::from(node)];
        let i = (commit - 1) as usize;
        let Some(&mine) = chain.get(i) else {
            return violation(Invariant::StateMachineSafety, format!("node {node} committed {commit} beyond its log"));
        };
        match self.committed.get(i) {
            Some(&agreed) if agreed != mine => violation(
                Invariant::StateMachineSafety,
                format!("node {node} committed a different log prefix up to index {commit}"),
            ),
            Some(_) => Ok(()),
            None => {
                // Extend the agreed committed prefix; our chain proves the
                // part already agreed is a prefix of ours.
                if let Some(&agreed_top) = self.committed.last() {
                    if chain[self.committed.len() - 1] != agreed_top {
                        return violation(
                            Invariant::StateMachineSafety,
                            format!(
                                "node {node} committed {commit} on a log diverging below index {}",
                                self.committed.len()
                            ),
                        );
                    }
                }
                let start = self.committed.len();
                self.committed.extend_from_slice(&chain[start..=i]);
                Ok(())
            }
        }
    }

    /// Node `node` applied these entries to its state machine.
    pub fn on_applied(&mut self, node: NodeId, applied: &[AppliedEntry]) -> Result<(), Violation> {
        for a in applied {
            let last = &mut self.applied_by[usize::from(node)];
            if a.index != *last + 1 {
                return violation(
                    Invariant::StateMachineSafety,
                    format!("node {node} applied index {} right after index {last}", a.index),
                );
            }
            *last = a.index;
            let h = hash_of(&a.entry);
            let i = (a.index - 1) as usize;
            match self.applied.get(i) {
                Some(&other) if other != h => {
                    return violation(
                        Invariant::StateMachineSafety,
                        format!("node {node} applied a different command at index {}: {:?}", a.index, a.entry),
                    );
                }
                Some(_) => {}
                None if i == self.applied.len() => self.applied.push(h),
                None => {
                    return violation(
                        Invariant::StateMachineSafety,
                        format!("node {node} applied index {} before index {}", a.index, self.applied.len() + 1),
                    );
                }
            }
            if let (true, crate::raft::Payload::Command(c)) = (a.executed, &a.entry.payload) {
                let first = *self.executed_at.entry((c.client, c.seq)).or_insert(a.index);
                if first != a.index {
                    return violation(
                        Invariant::ExactlyOnce,
                        format!(
                            "node {node} executed client {} seq {} at index {}, already executed at index {first}",
                            c.client, c.seq, a.index
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

fn violation(invariant: Invariant, detail: String) -> Result<(), Violation> {
    Err(Violation { invariant, detail })
}

fn chain_link(previous: u64, entry: &Entry<Command>) -> u64 {
    let mut h = DefaultHasher::new();
    previous.hash(&mut h);
    entry.hash(&mut h);
    h.finish()
}

fn hash_of(entry: &Entry<Command>) -> u64 {
    let mut h = DefaultHasher::new();
    entry.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Payload;

    fn entries(terms: &[Term]) -> Vec<Entry<Command>> {
        terms.iter().map(|&term| Entry { term, payload: Payload::Noop }).collect()
    }

    fn write(from: LogIndex, terms: &[Term]) -> LogWrite<Command> {
        LogWrite { from, entries: entries(terms) }
    }

    /// The false alarm the `cluster` fuzzer once found (its input no longer
    /// builds the schedule since the simulator has a disk): a vote reply held
    /// back elects a leader of term 4 after the leader of term 5 committed
    /// more. Legal: Raft promises committed entries only to leaders of
    /// *later* terms. A leader of term 6 without them is a violation.
    #[test]
    fn leader_completeness_binds_only_later_terms() {
        let mut c = SafetyChecker::new(3);
        // Node 2 holds entries of terms 1..=4 up to index 3 only.
        c.on_log_write(2, &write(1, &[1, 2, 4]), None, 4).unwrap();
        // Node 1 leads term 5 and commits index 5.
        c.on_log_write(1, &write(1, &[1, 2, 4, 5, 5]), None, 5).unwrap();
        c.on_elected(1, 5).unwrap();
        c.on_commit(1, 5, 5).unwrap();
        // A late vote reply elects node 2 leader of term 4: no violation.
        assert_eq!(c.on_elected(2, 4), Ok(()));
        // Node 0 leads term 6 with node 2's log: it lacks what term 5 committed.
        c.on_log_write(0, &write(1, &[1, 2, 4]), None, 6).unwrap();
        let v = c.on_elected(0, 6).unwrap_err();
        assert_eq!(v.invariant, Invariant::LeaderCompleteness, "{}", v.detail);
    }

    /// A node that applied (and snapshotted) an entry before its own write
    /// of it was durable restarts with a log that ends before the
    /// snapshot: it drops that log for the snapshot (`RaftNode::restart`),
    /// and its next entries follow the snapshot's, not the old log's end.
    /// The `cluster` fuzzer found the false alarm the checker raised there
    /// before it followed the node (input kept in the corpus,
    /// `fuzz/corpus/cluster/snapshot-overtakes-log-at-restart`).
    #[test]
    fn a_log_dropped_for_its_snapshot_at_restart_is_followed() {
        let mut c = SafetyChecker::new(3);
        // Nodes 0 and 1 hold entries 1..=3 of term 1, committed.
        for node in [0, 1] {
            c.on_log_write(node, &write(1, &[1, 1, 1]), None, 1).unwrap();
        }
        c.on_elected(1, 1).unwrap();
        c.on_commit(1, 1, 3).unwrap();
        // Only entries 1..=2 reached node 0's disk, then it crashed with
        // a snapshot up to 3 saved; its first batch compacts the disk to 3.
        c.on_durable_write(0, &write(1, &[1, 1]));
        c.on_restart(0, 3);
        c.on_durable_compact(0, 3);
        // Entry 4 follows the snapshot on node 0 as on the leader.
        c.on_log_write(1, &write(4, &[1]), Some(1), 1).unwrap();
        assert_eq!(c.on_log_write(0, &write(4, &[1]), None, 1), Ok(()));
        c.on_durable_write(0, &write(4, &[1]));
        // And again after another restart, from the disk's log.
        c.on_restart(0, 3);
        c.on_log_write(1, &write(5, &[1]), Some(1), 1).unwrap();
        assert_eq!(c.on_log_write(0, &write(5, &[1]), None, 1), Ok(()));
        // A node whose log really differs below the entry is still caught.
        c.on_log_write(2, &write(1, &[1, 1, 2]), None, 2).unwrap();
        let v = c.on_log_write(2, &write(4, &[1]), None, 2).unwrap_err();
        assert_eq!(v.invariant, Invariant::LogMatching, "{}", v.detail);
    }

    /// A node in a term at or after the commit may not remove a committed
    /// entry.
    #[test]
    fn removing_a_committed_entry_is_caught_from_its_term_on() {
        let mut c = SafetyChecker::new(3);
        c.on_log_write(0, &write(1, &[1, 1]), None, 1).unwrap();
        c.on_elected(0, 1).unwrap();
        c.on_commit(0, 1, 2).unwrap();
        c.on_log_write(1, &write(1, &[1, 1]), None, 1).unwrap();
        let v = c.on_log_write(1, &write(2, &[2]), None, 2).unwrap_err();
        assert_eq!(v.invariant, Invariant::LeaderCompleteness, "{}", v.detail);
    }
}
