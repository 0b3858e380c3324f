//! When a leader hands its own log to the disk: in step with one follower's
//! rounds of AppendEntries, not whenever its persist thread is idle.
//!
//! A leader's write runs in parallel with replication (Raft thesis
//! §10.2.1); an entry commits once a majority, the leader counted only with
//! what it made durable, has it. Written whenever the persist thread was
//! idle, the leader's log went to the disk about twice per round trip under
//! load: the clients answered by one follower's acknowledgement send their
//! next requests at once, and those of the other follower's half a round
//! later, and each burst found the persist thread idle. A follower writes
//! once per round trip of its own (what arrives during its fsync waits for
//! the next), so the leader made half of the cluster's fsyncs.
//!
//! [`LeaderWrites`] holds the leader's batches until an AppendEntries
//! carrying entries leaves for one follower, the *pacer*, and then releases
//! every batch held: one write per round trip of the pacer, and each entry
//! on its way to the disk no later than it is on its way to the pacer. An
//! entry sent to the other follower first commits when that follower
//! answers, about a round trip after it was proposed, by which time the
//! pacer's next AppendEntries (half a round later, in the steady state) has
//! released it and its fsync is most likely done.
//!
//! Holding a batch only delays it: batches still reach the disk in order and
//! each is reported durable only once written, so the persistence contract
//! ([`crate::raft::ready`]) is the same. Everything is released at once
//! when the node is not a leader, has no follower, or a batch carries more
//! than log entries (a term and vote, a snapshot, a compaction); when the
//! pacer falls silent (more than two AppendEntries with entries for each
//! other follower, with none for it), the follower that got the last one
//! becomes the pacer and the batches go; after a tick with batches held (a
//! bound on the delay when no entries are being sent at all); and beyond
//! [`MAX_HELD_BATCHES`].
//!
//! Both runtimes use it: the server's node thread after each wake-up's
//! steps (`server::node`), the simulator after each step (`sim`).

use super::types::{Envelope, Message, NodeId, Role};
use super::{CommandBytes, NodeSet, Persist, RaftNode};

/// At most this many batches wait for the pacer; more go to the disk at
/// once.
pub const MAX_HELD_BATCHES: usize = 1024;

/// What a runtime knows after a pass of steps: the server's node thread
/// steps every event of one wake-up, the simulator one event.
pub struct Pass<'a, C> {
    /// The node leads its term.
    pub leading: bool,
    /// The voters other than this node: the followers whose copies count
    /// towards commit (a learner never paces).
    pub followers: NodeSet,
    /// A tick was stepped in this pass.
    pub ticked: bool,
    /// The followers that AppendEntries with entries left for, in order.
    pub appends_to: &'a [NodeId],
    /// The pass's batches, in order.
    pub batches: Vec<Persist<C>>,
}

impl<'a, C: Clone + CommandBytes> Pass<'a, C> {
    /// The pass that brought `node` where it is now: its role and voters
    /// after the steps, whether a tick was among them, where AppendEntries
    /// with entries went and the batches to persist.
    pub fn after(node: &RaftNode<C>, ticked: bool, appends_to: &'a [NodeId], batches: Vec<Persist<C>>) -> Self {
        let mut followers = node.membership().voters;
        followers.remove(node.id());
        Pass { leading: node.role() == Role::Leader, followers, ticked, appends_to, batches }
    }
}

/// How many times a leader's writes went to the disk, by why: whether the
/// pacing works (almost all `pacer`) or its batches wait for ticks. Only a
/// leader's writes are counted (anyone else's go at once, always).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Releases {
    /// An AppendEntries with entries left for the pacer (or for the
    /// follower that took a silent pacer's place).
    pub pacer: u64,
    /// A batch carried more than log entries: a term and vote, a
    /// snapshot, a compaction.
    pub not_only_entries: u64,
    /// A tick passed with batches held and no pacer's AppendEntries.
    pub tick: u64,
    /// More than [`MAX_HELD_BATCHES`] were held.
    pub bound: u64,
    /// No other voter to pace by.
    pub alone: u64,
}

impl Releases {
    /// Each reason with its count, named as the metrics name them.
    pub fn by_reason(&self) -> [(&'static str, u64); 5] {
        [
            ("pacer", self.pacer),
            ("not_only_entries", self.not_only_entries),
            ("tick", self.tick),
            ("bound", self.bound),
            ("alone", self.alone),
        ]
    }
}

/// The leader's batches waiting for the pacer, and who the pacer is.
#[derive(Debug)]
pub struct LeaderWrites<C> {
    releases: Releases,
    held: Vec<Persist<C>>,
    pacer: Option<NodeId>,
    /// AppendEntries with entries to followers other than the pacer since
    /// its last one.
    to_others: usize,
    /// Batches were held when the last tick came.
    held_over_a_tick: bool,
}

impl<C> Default for LeaderWrites<C> {
    fn default() -> Self {
        LeaderWrites {
            releases: Releases::default(),
            held: Vec::new(),
            pacer: None,
            to_others: 0,
            held_over_a_tick: false,
        }
    }
}

impl<C> LeaderWrites<C> {
    /// Takes a pass's batches and returns those to write now, in order
    /// (every held batch, then the pass's, or none).
    pub fn pass(&mut self, pass: Pass<'_, C>) -> Vec<Persist<C>> {
        let mut paced = false;
        let followers = pass.followers.len();
        for &to in pass.appends_to.iter().filter(|&&to| pass.followers.contains(to)) {
            match self.pacer {
                Some(pacer) if pacer != to => {
                    self.to_others += 1;
                    // Between two of the pacer's, each other follower may
                    // be sent entries twice (once in the pass that sends
                    // to the pacer, once between): more is silence.
                    if self.to_others > 2 * followers.saturating_sub(1) {
                        // The pacer fell silent (partitioned, slow, or
                        // catching up): follow the one that is being sent
                        // entries.
                        self.pacer = Some(to);
                        self.to_others = 0;
                        paced = true;
                    }
                }
                _ => {
                    self.pacer = Some(to);
                    self.to_others = 0;
                    paced = true;
                }
            }
        }
        let more_than_entries =
            pass.batches.iter().any(|b| b.hard_state.is_some() || b.snapshot.is_some() || b.compact.is_some());
        let timed_out = pass.ticked && std::mem::replace(&mut self.held_over_a_tick, false);
        let over_bound = self.held.len() + pass.batches.len() > MAX_HELD_BATCHES;
        let release = paced || timed_out || more_than_entries || !pass.leading || followers == 0 || over_bound;
        if release && pass.leading && !(self.held.is_empty() && pass.batches.is_empty()) {
            let r = &mut self.releases;
            let count = if paced {
                &mut r.pacer
            } else if more_than_entries {
                &mut r.not_only_entries
            } else if timed_out {
                &mut r.tick
            } else if over_bound {
                &mut r.bound
            } else {
                &mut r.alone
            };
            *count += 1;
        }
        if !pass.leading {
            self.pacer = None;
            self.to_others = 0;
        }
        if release {
            self.held_over_a_tick = false;
            if self.held.is_empty() {
                return pass.batches; // nothing held: no copy (a follower's every step)
            }
            self.held.extend(pass.batches);
            return std::mem::take(&mut self.held);
        }
        self.held.extend(pass.batches);
        if pass.ticked && !self.held.is_empty() {
            self.held_over_a_tick = true;
        }
        Vec::new()
    }

    /// How many times a leader's batches went to the disk, by why.
    pub fn releases(&self) -> Releases {
        self.releases
    }

    /// Every batch held, for a node that stops.
    pub fn drain(&mut self) -> Vec<Persist<C>> {
        std::mem::take(&mut self.held)
    }
}

/// The followers a step's AppendEntries with entries go to.
pub fn appends_with_entries<C>(messages: &[Envelope<C>]) -> impl Iterator<Item = NodeId> + '_ {
    messages.iter().filter_map(|e| match &e.message {
        Message::Append { entries, .. } if !entries.is_empty() => Some(e.to),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::HardState;
    use crate::raft::LogWrite;

    fn batch(number: u64) -> Persist<u8> {
        Persist {
            number,
            snapshot: None,
            compact: None,
            log: Some(LogWrite { from: number, entries: Vec::new() }),
            hard_state: None,
        }
    }

    fn pass<'a>(appends_to: &'a [NodeId], batches: &[u64]) -> Pass<'a, u8> {
        Pass {
            leading: true,
            followers: NodeSet::from_bits(0b110),
            ticked: false,
            appends_to,
            batches: batches.iter().map(|&n| batch(n)).collect(),
        }
    }

    fn numbers(batches: Vec<Persist<u8>>) -> Vec<u64> {
        batches.into_iter().map(|b| b.number).collect()
    }

    #[test]
    fn a_leader_writes_once_per_round_of_its_pacer() {
        let mut writes = LeaderWrites::default();
        // Both followers idle: the first proposal leaves for both at once,
        // and the first one it leaves for paces.
        assert_eq!(numbers(writes.pass(pass(&[1, 2], &[1]))), [1]);
        // Proposals while both Appends are in flight wait.
        assert_eq!(numbers(writes.pass(pass(&[], &[2]))), [] as [u64; 0]);
        assert_eq!(numbers(writes.pass(pass(&[], &[3]))), [] as [u64; 0]);
        // Follower 2 answers first and is sent them: still held.
        assert_eq!(numbers(writes.pass(pass(&[2], &[4]))), [] as [u64; 0]);
        // The pacer answers and is sent them: every held batch goes, in order.
        assert_eq!(numbers(writes.pass(pass(&[1], &[5]))), [2, 3, 4, 5]);
        assert_eq!(numbers(writes.pass(pass(&[2], &[6]))), [] as [u64; 0]);
        assert_eq!(numbers(writes.pass(pass(&[1], &[]))), [6]);
        assert_eq!(writes.releases(), Releases { pacer: 3, ..Releases::default() });
    }

    #[test]
    fn a_silent_pacer_is_replaced_by_the_follower_being_sent_entries() {
        let mut writes = LeaderWrites::default();
        assert_eq!(numbers(writes.pass(pass(&[1, 2], &[1]))), [1]);
        // Follower 1 went quiet; follower 2 goes on answering.
        assert_eq!(numbers(writes.pass(pass(&[2], &[2]))), [] as [u64; 0]);
        // The broadcast, then twice more: silence.
        assert_eq!(numbers(writes.pass(pass(&[2], &[3]))), [2, 3]);
        assert_eq!(writes.pacer, Some(2));
        assert_eq!(numbers(writes.pass(pass(&[], &[4]))), [] as [u64; 0]);
        assert_eq!(numbers(writes.pass(pass(&[2], &[]))), [4]);
    }

    #[test]
    fn nothing_waits_longer_than_a_tick() {
        let mut writes = LeaderWrites::default();
        assert_eq!(numbers(writes.pass(pass(&[1], &[1]))), [1]);
        assert_eq!(numbers(writes.pass(pass(&[], &[2]))), [] as [u64; 0]);
        // The first tick finds batch 2 held; the next releases it.
        assert_eq!(numbers(writes.pass(Pass { ticked: true, ..pass(&[], &[3]) })), [] as [u64; 0]);
        assert_eq!(numbers(writes.pass(Pass { ticked: true, ..pass(&[], &[]) })), [2, 3]);
        // A tick with nothing held arms nothing.
        assert_eq!(numbers(writes.pass(Pass { ticked: true, ..pass(&[], &[]) })), [] as [u64; 0]);
        assert_eq!(numbers(writes.pass(pass(&[], &[4]))), [] as [u64; 0]);
        assert_eq!(numbers(writes.pass(Pass { ticked: true, ..pass(&[], &[]) })), [] as [u64; 0]);
        assert_eq!(numbers(writes.pass(Pass { ticked: true, ..pass(&[], &[]) })), [4]);
        assert_eq!(writes.releases(), Releases { pacer: 1, tick: 2, ..Releases::default() });
    }

    #[test]
    fn a_follower_a_lone_node_and_a_term_change_hold_nothing() {
        let mut writes = LeaderWrites::default();
        assert_eq!(numbers(writes.pass(pass(&[1], &[1]))), [1]);
        assert_eq!(numbers(writes.pass(pass(&[], &[2]))), [] as [u64; 0]);
        // Deposed: what was held goes with the follower's first batch.
        assert_eq!(numbers(writes.pass(Pass { leading: false, ..pass(&[], &[3]) })), [2, 3]);
        assert_eq!(writes.pacer, None);
        assert_eq!(numbers(writes.pass(Pass { followers: NodeSet::EMPTY, ..pass(&[], &[4]) })), [4]);
        let mut vote = batch(5);
        vote.hard_state = Some(HardState::default());
        assert_eq!(numbers(writes.pass(pass(&[], &[]))), [] as [u64; 0]);
        assert_eq!(numbers(writes.pass(Pass { batches: vec![vote], ..pass(&[], &[]) })), [5]);
        // A deposed leader's release is a follower's: not counted.
        assert_eq!(writes.releases(), Releases { pacer: 1, alone: 1, not_only_entries: 1, ..Releases::default() });
    }

    #[test]
    fn a_learner_never_paces() {
        let mut writes = LeaderWrites::default();
        assert_eq!(numbers(writes.pass(pass(&[3], &[1]))), [] as [u64; 0]);
        assert_eq!(numbers(writes.pass(pass(&[3, 3, 3, 3], &[2]))), [] as [u64; 0]);
        assert_eq!(numbers(writes.pass(pass(&[2], &[]))), [1, 2]);
    }

    #[test]
    fn no_more_than_the_bound_is_held() {
        let mut writes = LeaderWrites::default();
        assert_eq!(numbers(writes.pass(pass(&[1], &[0]))), [0]);
        for n in 1..=MAX_HELD_BATCHES as u64 {
            assert!(writes.pass(pass(&[], &[n])).is_empty());
        }
        assert_eq!(writes.pass(pass(&[], &[MAX_HELD_BATCHES as u64 + 1])).len(), MAX_HELD_BATCHES + 1);
        assert!(writes.drain().is_empty());
        assert_eq!(writes.releases(), Releases { pacer: 1, bound: 1, ..Releases::default() });
    }
}
