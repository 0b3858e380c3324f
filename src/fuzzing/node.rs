//! The `node` target: one pure [`RaftNode`] fed an adversarial sequence of
//! inputs, with restarts from the state it made durable.
//!
//! The fuzzer plays the network and the other members, and it may lie: ids
//! out of range or equal to the node's own, stale and future terms, indexes
//! beyond the log, entries whose terms go backwards or exceed the message's,
//! replies to messages never sent. Most messages are steered near the node's
//! own term and last index, and a `Reply` action answers one of the node's
//! recent messages plausibly, so that the node can win elections, lead and
//! commit. Nothing may panic. Besides the node's own `check_invariants`
//! after every step, the harness checks:
//! - the persistence contract: after each step's `Persist` is written, the
//!   durable term, vote and log equal the node's (a change the node did not
//!   hand out for writing would be lost by a crash), and each `LogWrite`
//!   starts within the durable log;
//! - the outputs: messages come from the node and go to another member;
//!   committed entries come out in index order, once per incarnation, equal
//!   to the durable log and not beyond the commit index; a proposal's index
//!   holds that command; a read index is not beyond the commit index.

use crate::kv::{Command, Op};
use crate::raft::{
    Actions, Config, Entry, Envelope, HardState, Input, LogIndex, Message, Payload, Persist, RaftNode, ReadId,
    RejectHint, Term,
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

/// The node, what it made durable, and what the checks need to remember.
struct Harness {
    config: Config,
    node: RaftNode<Command>,
    hard: HardState,
    log: Vec<Entry<Command>>,
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
        let node = RaftNode::restart(config.clone(), HardState::default(), Vec::new());
        let (hard, log, sent) = (HardState::default(), Vec::new(), VecDeque::new());
        Ok(Harness { config, node, hard, log, sent, next_committed: 1, next_read: 0 })
    }

    /// Reads one action from `u` and carries it out.
    fn act(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        match u.int_in_range(0..=9u8)? {
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
            8 => self.restart(u)?,
            _ => {
                // A crash after the step but before its Persist is durable:
                // the Ready is dropped unwritten and nothing of it happens.
                let input = if u.ratio(1, 2)? { Input::Tick } else { Input::Message(self.reply(u)?) };
                drop(self.node.step(input));
                self.restart(u)?;
            }
        }
        Ok(())
    }

    fn restart(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        self.config.seed = u.arbitrary()?;
        self.node = RaftNode::restart(self.config.clone(), self.hard, self.log.clone());
        self.next_committed = 1;
        self.check_durable();
        Ok(())
    }

    /// Steps the node, makes its Persist durable, and checks the outputs.
    fn step(&mut self, input: Input<Command>) {
        let proposal = match &input {
            Input::Propose(command) => Some(command.clone()),
            _ => None,
        };
        let ready = self.node.step(input);
        let proposed = ready.proposed;
        let (hard, log) = (&mut self.hard, &mut self.log);
        let actions = match ready.persist_then(|p| write(hard, log, p)) {
            Ok(actions) => actions,
            Err(never) => match never {},
        };
        self.check_durable();
        if let (Some(Ok(index)), Some(command)) = (proposed, proposal) {
            let expected = Entry { term: self.node.term(), payload: Payload::Command(command) };
            assert_eq!(self.node.log().get(index), Some(&expected), "proposal not at its index {index}");
        }
        self.check_actions(actions);
    }

    fn check_durable(&self) {
        assert_eq!(self.hard, self.node.hard_state(), "term or vote changed without being persisted");
        assert!(self.log == self.node.log().entries(), "log changed without being persisted");
    }

    fn check_actions(&mut self, actions: Actions<Command>) {
        let commit = self.node.commit_index();
        for (index, entry) in &actions.committed {
            assert_eq!(*index, self.next_committed, "committed entries out of order");
            assert!(*index <= commit, "entry {index} handed out beyond the commit index {commit}");
            assert_eq!(
                self.log.get(*index as usize - 1),
                Some(entry),
                "committed entry {index} is not the durable one"
            );
            self.next_committed += 1;
        }
        for (_, read) in &actions.reads {
            if let Ok(index) = read {
                assert!(*index <= commit, "read index {index} beyond the commit index {commit}");
            }
        }
        for message in actions.messages {
            assert_eq!(message.from, self.config.id, "message not from the node: {message:?}");
            assert!(message.to != message.from && message.to < self.config.members, "bad recipient: {message:?}");
            if self.sent.len() == SENT_KEPT {
                self.sent.pop_front();
            }
            self.sent.push_back(message);
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

/// Applies a step's `Persist` to the durable state, as `sim::MemStorage`
/// does, after checking that the log write leaves no gap.
fn write(
    hard: &mut HardState,
    log: &mut Vec<Entry<Command>>,
    persist: &Persist<Command>,
) -> Result<(), std::convert::Infallible> {
    if let Some(h) = persist.hard_state {
        *hard = h;
    }
    if let Some(w) = &persist.log {
        assert!(
            w.from >= 1 && w.from <= log.len() as u64 + 1,
            "log write at {} leaves a gap after {}",
            w.from,
            log.len()
        );
        log.truncate(w.from as usize - 1);
        log.extend(w.entries.iter().cloned());
    }
    Ok(())
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
