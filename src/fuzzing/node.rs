//! The `node` target: one pure [`RaftNode`] fed an adversarial sequence of
//! inputs, an adversarial disk, and restarts from the state it made durable.
//!
//! The fuzzer plays the network and the other members, and it may lie: ids
//! out of range or equal to the node's own, stale and future terms, indexes
//! beyond the log, entries whose terms go backwards or exceed the message's,
//! replies to messages never sent. Most messages are steered near the node's
//! own term and last index, and a `Reply` action answers one of the node's
//! recent messages plausibly, so that the node can win elections, lead and
//! commit. It also plays the disk: batches are written in order but late
//! (any prefix of the pending ones at a time), reported later still (or
//! reported again), and a crash drops whatever was not written. Nothing may
//! panic. Besides the node's own invariant checks after every step, the
//! harness checks the persistence contract of [`crate::raft::ready`]
//! against what it *reported* durable:
//! - batches come numbered 1, 2, 3, … and each log write starts within the
//!   durable log (no gap);
//! - the node's stable prefix equals the reported durable log;
//! - no message speaks of an unreported term, a granted vote is reported
//!   durable, and an acknowledgement covers no more entries than the log
//!   held after some reported batch;
//! - committed entries come out in index order, once per incarnation, equal
//!   to the reported log and not beyond the commit index; a proposal's
//!   index holds that command; a read index is not beyond the commit index;
//! - after a restart the node holds exactly the durable state.

use crate::kv::{Command, Op};
use crate::raft::{
    BatchNumber, Config, DurableState, Entry, Envelope, HardState, Input, LogIndex, Message, Payload, Persist,
    RaftNode, ReadId, Ready, RejectHint, Term,
};
use arbitrary::Unstructured;
use std::collections::VecDeque;

/// Most actions one input drives (each takes at least a byte anyway).
const ACTIONS_MAX: usize = 2_000;
/// How many of the node's latest messages a `Reply` can answer.
const SENT_KEPT: usize = 32;

/// Drives one node with the actions encoded in `data` (see the module docs).
pub fn node_target(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mut harness) = Harness::new(&mut u) else { return };
    for _ in 0..ACTIONS_MAX {
        if u.is_empty() || harness.act(&mut u).is_err() {
            break;
        }
    }
}

/// What is on the disk: a term and vote, and a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Disk {
    hard: HardState,
    log: Vec<Entry<Command>>,
}

impl Disk {
    /// Applies one batch, as `sim::MemStorage` does, after checking that the
    /// log write leaves no gap.
    fn write(&mut self, persist: &Persist<Command>) {
        // This harness takes no snapshots and sends none, so the node never
        // compacts or installs.
        assert!(persist.snapshot.is_none() && persist.compact.is_none(), "a snapshot batch without snapshots");
        if let Some(h) = persist.hard_state {
            self.hard = h;
        }
        if let Some(w) = &persist.log {
            let len = self.log.len() as u64;
            assert!(w.from >= 1 && w.from <= len + 1, "log write at {} leaves a gap after {len}", w.from);
            self.log.truncate(w.from as usize - 1);
            self.log.extend(w.entries.iter().cloned());
        }
    }
}

/// The node, its disk, and what the checks need to remember.
struct Harness {
    config: Config,
    node: RaftNode<Command>,
    /// Everything written, reported or not: what a crash keeps.
    disk: Disk,
    /// The disk as of the last report: what the node may act on.
    reported: Disk,
    /// The log's length after each batch handed out and not reported.
    lengths: VecDeque<(BatchNumber, usize)>,
    /// The longest the log was after any reported batch of this
    /// incarnation (or at its start).
    reported_longest: usize,
    /// Batches handed out and not written yet, in order.
    unwritten: VecDeque<Persist<Command>>,
    /// The number of the last batch written, and of the last handed out.
    written: BatchNumber,
    handed_out: BatchNumber,
    /// The node's latest messages, for `Reply`.
    sent: VecDeque<Envelope<Command>>,
    /// The index the next committed entry must have (per incarnation).
    next_committed: LogIndex,
    next_read: ReadId,
}

impl Harness {
    fn new(u: &mut Unstructured<'_>) -> arbitrary::Result<Harness> {
        let members: u8 = u.int_in_range(3..=5)?;
        let id = u.int_in_range(0..=members - 1)?;
        let mut config = Config::new(id, members, u.arbitrary()?);
        config.election_ticks = u.int_in_range(3..=20)?;
        config.heartbeat_ticks = u.int_in_range(1..=(config.election_ticks - 1) / 2)?;
        config.max_inflight = u.int_in_range(1..=4)?;
        config.max_batch_entries = u.int_in_range(1..=4)?;
        config.max_pending_reads = u.int_in_range(1..=3)?;
        config.max_held_messages = u.int_in_range(1..=8)?;
        let node = RaftNode::restart(config.clone(), DurableState::default());
        Ok(Harness {
            config,
            node,
            disk: Disk::default(),
            reported: Disk::default(),
            lengths: VecDeque::new(),
            reported_longest: 0,
            unwritten: VecDeque::new(),
            written: 0,
            handed_out: 0,
            sent: VecDeque::new(),
            next_committed: 1,
            next_read: 0,
        })
    }

    /// Reads one action from `u` and carries it out.
    fn act(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        match u.int_in_range(0..=12u8)? {
            0 | 1 => {
                for _ in 0..u.int_in_range(1..=2 * self.config.election_ticks)? {
                    self.step(Input::Tick);
                }
            }
            2..=4 => {
                let envelope = self.reply(u)?;
                self.step(Input::Message(envelope));
            }
            5 => {
                let envelope = self.envelope(u)?;
                self.step(Input::Message(envelope));
            }
            6 => {
                let command = command(u)?;
                self.step(Input::Propose(command));
            }
            7 => {
                self.next_read += 1;
                self.step(Input::Read(self.next_read));
            }
            8 | 9 => {
                // The disk catches up with some or all pending batches, and
                // (usually) the runtime reports it.
                self.write(u)?;
                if u.ratio(3, 4)? {
                    self.report();
                }
            }
            10 => {
                // A report of a batch already reported changes nothing.
                let (durable, _) = self.node.batches();
                let stale = u.int_in_range(0..=durable)?;
                self.step(Input::Persisted(stale));
            }
            11 => self.report(),
            _ => self.restart(u)?,
        }
        Ok(())
    }

    /// Writes the next `1..=all` pending batches, in order, unreported.
    fn write(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        for _ in 0..u.int_in_range(1..=self.unwritten.len())? {
            let batch = self.unwritten.pop_front().expect("not empty");
            assert_eq!(batch.number, self.written + 1, "batches numbered in order");
            self.disk.write(&batch);
            self.written = batch.number;
        }
        Ok(())
    }

    /// Reports every batch written so far.
    fn report(&mut self) {
        if self.written > self.node.batches().0 {
            self.reported = self.disk.clone();
            while self.lengths.front().is_some_and(|&(batch, _)| batch <= self.written) {
                let (_, length) = self.lengths.pop_front().expect("not empty");
                self.reported_longest = self.reported_longest.max(length);
            }
            self.step(Input::Persisted(self.written));
        }
    }

    /// A power cut: whatever was not written is lost.
    fn restart(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        self.config.seed = u.arbitrary()?;
        let durable = DurableState { hard: self.disk.hard, log: self.disk.log.clone(), ..DurableState::default() };
        self.node = RaftNode::restart(self.config.clone(), durable);
        self.reported = self.disk.clone();
        self.reported_longest = self.reported.log.len();
        self.lengths.clear();
        self.unwritten.clear();
        (self.written, self.handed_out, self.next_committed) = (0, 0, 1);
        assert_eq!(self.disk.hard, self.node.hard_state(), "restarted with another term or vote");
        assert!(self.disk.log == self.node.log().entries(), "restarted with another log");
        Ok(())
    }

    /// Steps the node, queues its batch for the disk, and checks the outputs.
    fn step(&mut self, input: Input<Command>) {
        let proposal = match &input {
            Input::Propose(command) => Some(command.clone()),
            _ => None,
        };
        let ready = self.node.step(input);
        if let (Some(Ok(index)), Some(command)) = (ready.proposed, proposal) {
            let expected = Entry { term: self.node.term(), payload: Payload::Command(command) };
            assert_eq!(self.node.log().get(index), Some(&expected), "proposal not at its index {index}");
        }
        self.check_ready(ready);
    }

    fn check_ready(&mut self, ready: Ready<Command>) {
        if let Some(batch) = ready.persist {
            assert_eq!(batch.number, self.handed_out + 1, "batches numbered 1, 2, 3, ...");
            self.handed_out = batch.number;
            if let Some(w) = &batch.log {
                self.lengths.push_back((batch.number, (w.from - 1) as usize + w.entries.len()));
            }
            self.unwritten.push_back(batch);
        }
        let stable = self.node.stable_index() as usize;
        assert!(
            stable <= self.reported.log.len() && self.reported.log[..stable] == self.node.log().entries()[..stable],
            "the node's stable prefix ({stable}) is not the reported durable log"
        );
        let commit = self.node.commit_index();
        for (index, entry) in &ready.committed {
            assert_eq!(*index, self.next_committed, "committed entries out of order");
            assert!(*index <= commit, "entry {index} handed out beyond the commit index {commit}");
            assert_eq!(
                self.reported.log.get(*index as usize - 1),
                Some(entry),
                "committed entry {index} is not the reported durable one"
            );
            self.next_committed += 1;
        }
        for (_, read) in &ready.reads {
            if let Ok(index) = read {
                assert!(*index <= commit, "read index {index} beyond the commit index {commit}");
            }
        }
        for message in ready.messages {
            assert_eq!(message.from, self.config.id, "message not from the node: {message:?}");
            assert!(message.to != message.from && message.to < self.config.members, "bad recipient: {message:?}");
            self.check_durable_before_sent(&message);
            if self.sent.len() == SENT_KEPT {
                self.sent.pop_front();
            }
            self.sent.push_back(message);
        }
    }

    /// A message leaving the node speaks only of reported durable state.
    fn check_durable_before_sent(&self, envelope: &Envelope<Command>) {
        let durable = self.reported.hard;
        let term = envelope.message.term();
        match &envelope.message {
            // A PreVote names the term it would campaign in, a granted
            // PreVoteReply the requester's: neither is the sender's term.
            Message::PreVote { .. } | Message::PreVoteReply { granted: true, .. } => {}
            message => assert!(term <= durable.term, "{message:?} sent in a term the disk has not seen ({durable:?})"),
        }
        match &envelope.message {
            Message::VoteReply { term, granted: true } => assert!(
                durable.term > *term || durable == HardState { term: *term, voted_for: Some(envelope.to) },
                "a vote for {} in term {term} sent before it was durable ({durable:?})",
                envelope.to
            ),
            // An acknowledgement speaks of the log as it was durable in its
            // term: a newer leader may have truncated it since (that is
            // safe, Raft §5.4.3), so the bound is the longest log after
            // any reported batch.
            Message::AppendReply { result: Ok(matched), .. } => assert!(
                *matched as usize <= self.reported_longest,
                "acknowledged {matched} entries, but no reported batch left more than {} in the log",
                self.reported_longest
            ),
            _ => {}
        }
    }

    /// A message from another member (usually) to the node (usually), with
    /// terms and indexes near the node's own.
    fn envelope(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<Envelope<Command>> {
        let members = self.config.members;
        let from = if u.ratio(1, 16)? { u.int_in_range(0..=members + 1)? } else { u.int_in_range(0..=members - 1)? };
        let to = if u.ratio(1, 16)? { u.int_in_range(0..=members + 1)? } else { self.config.id };
        let term = self.term(u)?;
        let message = match u.int_in_range(0..=7u8)? {
            0 => Message::PreVote { term, last_log_index: self.index(u)?, last_log_term: self.term(u)? },
            1 => Message::PreVoteReply { term, granted: u.arbitrary()? },
            2 => Message::Vote { term, last_log_index: self.index(u)?, last_log_term: self.term(u)? },
            3 => Message::VoteReply { term, granted: u.arbitrary()? },
            4 => {
                let (prev_index, prev_term) = (self.index(u)?, self.term(u)?);
                let entries = entries(u, prev_term, term)?;
                Message::Append {
                    term,
                    prev_index,
                    prev_term,
                    entries,
                    commit: self.index(u)?,
                    read_round: u.arbitrary()?,
                }
            }
            5 => {
                let result = if u.arbitrary()? {
                    Ok(self.index(u)?)
                } else {
                    Err(RejectHint { index: self.index(u)?, term: self.term(u)? })
                };
                Message::AppendReply { term, result, read_round: u.int_in_range(0..=8)? }
            }
            6 => Message::Heartbeat { term, commit: self.index(u)?, read_round: u.arbitrary()? },
            _ => Message::HeartbeatReply { term, read_round: u.int_in_range(0..=8)? },
        };
        Ok(Envelope { from, to, message })
    }

    /// A plausible answer, from its recipient, to one of the node's recent
    /// messages: usually a grant or an acknowledgement, sometimes a refusal,
    /// a rejection or a newer term. Without any, an arbitrary message.
    fn reply(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<Envelope<Command>> {
        if self.sent.is_empty() {
            return self.envelope(u);
        }
        let sent = &self.sent[u.choose_index(self.sent.len())?];
        let bump = if u.ratio(1, 8)? { 1 } else { 0 };
        let yes = u.ratio(3, 4)?;
        let message = match &sent.message {
            Message::PreVote { term, .. } => {
                let term = if yes { *term } else { self.node.term().saturating_add(bump) };
                Message::PreVoteReply { term, granted: yes }
            }
            Message::Vote { term, .. } => Message::VoteReply { term: term.saturating_add(bump), granted: yes },
            Message::Append { term, prev_index, prev_term, entries, read_round, .. } => {
                let result = if yes {
                    Ok(prev_index.saturating_add(entries.len() as u64))
                } else {
                    Err(RejectHint { index: u.int_in_range(0..=*prev_index)?, term: u.int_in_range(0..=*prev_term)? })
                };
                Message::AppendReply { term: term.saturating_add(bump), result, read_round: *read_round }
            }
            Message::Heartbeat { term, read_round, .. } => {
                Message::HeartbeatReply { term: term.saturating_add(bump), read_round: *read_round }
            }
            _ => return self.envelope(u),
        };
        Ok(Envelope { from: sent.to, to: sent.from, message })
    }

    /// A term near the node's: mostly equal or one above, sometimes below,
    /// rarely anything at all.
    fn term(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<Term> {
        let term = self.node.term();
        Ok(match u.int_in_range(0..=15u8)? {
            0..=1 => term.saturating_sub(1),
            2..=8 => term,
            9..=12 => term.saturating_add(1),
            13 => term.saturating_add(2),
            14 => 0,
            _ => u.arbitrary()?,
        })
    }

    /// An index near the node's log: its end, just past or before it, the
    /// commit index, zero, or anything.
    fn index(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<LogIndex> {
        let last = self.node.log().last_index();
        Ok(match u.int_in_range(0..=15u8)? {
            0..=5 => last,
            6..=7 => last.saturating_sub(1),
            8..=9 => last.saturating_add(1),
            10..=11 => self.node.commit_index(),
            12 => 0,
            13 => u.int_in_range(0..=last.saturating_add(3))?,
            _ => u.arbitrary()?,
        })
    }
}

/// Up to three entries after `prev_term`, usually well formed (terms not
/// decreasing and at most `term`), sometimes not.
fn entries(u: &mut Unstructured<'_>, prev_term: Term, term: Term) -> arbitrary::Result<Vec<Entry<Command>>> {
    let count = u.int_in_range(0..=3)?;
    let mut entries = Vec::with_capacity(count);
    let mut entry_term = prev_term;
    for _ in 0..count {
        entry_term = match u.int_in_range(0..=7u8)? {
            0..=3 => entry_term,
            4 => entry_term.saturating_add(1).min(term),
            5 => term,
            _ => u.int_in_range(0..=term.saturating_add(1))?,
        };
        let payload = if u.ratio(1, 4)? { Payload::Noop } else { Payload::Command(command(u)?) };
        entries.push(Entry { term: entry_term, payload });
    }
    Ok(entries)
}

/// A small command: few clients, keys and values.
fn command(u: &mut Unstructured<'_>) -> arbitrary::Result<Command> {
    let (client, seq) = (u.int_in_range(1..=3)?, u.int_in_range(1..=4)?);
    let key = (*u.choose(&["a", "b"])?).to_owned();
    let op = match u.int_in_range(0..=2u8)? {
        0 => Op::Put { key, value: "x".to_owned() },
        1 => Op::Append { key, value: "y".to_owned() },
        _ => Op::Get { key },
    };
    Ok(Command { client, seq, op })
}
