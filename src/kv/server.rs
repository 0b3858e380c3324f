//! [`KvServer`]: one replica of the key/value service, as a pure state
//! machine. It owns a Raft node and a [`KvMachine`], turns client requests
//! into proposals or ReadIndex reads, applies what Raft commits, and answers
//! each request only once its effect is committed and applied.

use super::{ClientId, Command, KvMachine, Op, Request, Response, ServiceError};
use crate::raft::{
    BatchNumber, Config, Entry, Envelope, HardState, Input, LogIndex, NodeId, Payload, Persist, RaftNode, ReadId,
    Ready, Refusal, Term,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a `Get` is made linearizable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadPath {
    /// ReadIndex (thesis §6.4): no log entry; the leader confirms its
    /// leadership with a quorum, then serves once it has applied the read
    /// index.
    #[default]
    ReadIndex,
    /// Append the Get to the log like a write and answer when applied.
    Log,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerConfig {
    pub raft: Config,
    pub read_path: ReadPath,
    /// At most this many requests wait for commit or read confirmation;
    /// more are answered `Busy`.
    pub max_waiting: usize,
}

impl ServerConfig {
    pub fn new(raft: Config) -> ServerConfig {
        ServerConfig { raft, read_path: ReadPath::ReadIndex, max_waiting: 4096 }
    }
}

/// Everything that can happen to a replica.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerInput {
    Tick,
    Peer(Envelope<Command>),
    Client(Request),
    /// Every batch up to this number is durable ([`Input::Persisted`]).
    Persisted(BatchNumber),
}

/// What a replica asks its runtime to do after one step, under the Raft
/// node's persistence contract ([`crate::raft::ready`]): `persist` is made
/// durable after every earlier batch and then reported with
/// [`ServerInput::Persisted`]; everything else is carried out at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[must_use]
pub struct ServerOutput {
    /// A batch of Raft state to make durable, then report.
    pub persist: Option<Persist<Command>>,
    pub messages: Vec<Envelope<Command>>,
    pub responses: Vec<Response>,
    /// Every log entry applied in this step, for checkers.
    pub applied: Vec<AppliedEntry>,
}

/// A record of one applied entry, for the simulator's safety checks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppliedEntry {
    pub index: LogIndex,
    pub entry: Entry<Command>,
    /// False for a no-op, or a duplicate answered from the session table.
    pub executed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Waiter {
    client: ClientId,
    seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KvServer {
    config: ServerConfig,
    node: RaftNode<Command>,
    kv: KvMachine,
    /// Proposed writes (and logged Gets) by log index, with the leader term
    /// they were proposed in.
    waiting_writes: BTreeMap<LogIndex, (Waiter, Term)>,
    /// Reads waiting for the leader to confirm them.
    waiting_reads: BTreeMap<ReadId, (Waiter, String)>,
    /// Confirmed reads waiting for the machine to apply their read index.
    confirmed_reads: Vec<(LogIndex, Waiter, String)>,
    next_read_id: ReadId,
}

impl KvServer {
    /// A replica starting from its durable Raft state (empty when new). The
    /// state machine is rebuilt by re-applying the log as it commits.
    pub fn restart(config: ServerConfig, hard: HardState, log: Vec<Entry<Command>>) -> KvServer {
        let kv = KvMachine::with_injected_session_bug(config.raft.bugs.skip_session_table);
        let node = RaftNode::restart(config.raft.clone(), hard, log);
        KvServer {
            config,
            node,
            kv,
            waiting_writes: BTreeMap::new(),
            waiting_reads: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            next_read_id: 0,
        }
    }

    /// The same replica in a cluster whose servers are numbered
    /// differently (see [`RaftNode::renumbered`]); its waiting clients are
    /// not servers and keep their ids.
    pub fn renumbered(&self, new_id: impl Fn(NodeId) -> NodeId) -> KvServer {
        let mut server = self.clone();
        server.config.raft.id = new_id(self.config.raft.id);
        server.node = self.node.renumbered(new_id);
        server
    }

    pub fn node(&self) -> &RaftNode<Command> {
        &self.node
    }

    pub fn kv(&self) -> &KvMachine {
        &self.kv
    }

    /// Requests accepted but not answered yet.
    pub fn waiting(&self) -> usize {
        self.waiting_writes.len() + self.waiting_reads.len() + self.confirmed_reads.len()
    }

    /// Feeds one input; the output is carried out under the contract of
    /// [`ServerOutput`]. Every response in it is for an effect that is
    /// committed, durable here and applied (or a refusal).
    pub fn step(&mut self, input: ServerInput) -> ServerOutput {
        let mut out = ServerOutput::default();
        let ready = match input {
            ServerInput::Tick => Some(self.node.step(Input::Tick)),
            ServerInput::Peer(envelope) => Some(self.node.step(Input::Message(envelope))),
            ServerInput::Client(request) => self.accept(request, &mut out),
            ServerInput::Persisted(number) => Some(self.node.step(Input::Persisted(number))),
        };
        if let Some(ready) = ready {
            out.persist = ready.persist;
            out.messages = ready.messages;
            for (id, result) in ready.reads {
                self.on_read_outcome(id, result, &mut out);
            }
            for (index, entry) in ready.committed {
                self.apply(index, entry, &mut out);
            }
            self.serve_confirmed_reads(&mut out);
        }
        self.fail_orphaned_writes(&mut out);
        self.check_invariants(&out);
        out
    }

    /// What holds after every step (debug and test builds: the node's
    /// own checks run in every build).
    fn check_invariants(&self, out: &ServerOutput) {
        if !cfg!(debug_assertions) {
            return;
        }
        let applied = self.kv.applied_index();
        assert!(applied <= self.node.stable_index(), "applied an entry not durable here");
        assert!(applied <= self.node.commit_index(), "applied an uncommitted entry");
        assert!(self.waiting() <= self.config.max_waiting, "more requests waiting than max_waiting");
        assert!(self.node.is_leader() || self.waiting_reads.is_empty(), "a non-leader holds unconfirmed reads");
        assert!(
            self.waiting_writes.is_empty() || self.node.is_leader(),
            "a non-leader still holds proposals (they are failed when it loses the term)"
        );
        assert!(self.waiting_writes.keys().all(|&index| index > applied), "a waiter for an applied entry");
        assert!(self.waiting_writes.values().all(|(_, term)| *term == self.node.term()), "a waiter from another term");
        assert!(self.confirmed_reads.iter().all(|(index, ..)| *index > applied), "a servable read left waiting");
        assert!(
            self.confirmed_reads.iter().all(|(index, ..)| *index <= self.node.commit_index()),
            "a read confirmed beyond the commit index"
        );
        let mut indexes: Vec<LogIndex> = out.applied.iter().map(|a| a.index).collect();
        indexes.dedup();
        assert!(indexes.windows(2).all(|w| w[1] == w[0] + 1), "entries applied out of order");
        assert!(out.applied.last().is_none_or(|a| a.index == applied), "the last entry applied is the applied index");
    }

    fn accept(&mut self, request: Request, out: &mut ServerOutput) -> Option<Ready<Command>> {
        let waiter = Waiter { client: request.client, seq: request.seq };
        if self.waiting() >= self.config.max_waiting {
            respond(out, &waiter, Err(ServiceError::Busy));
            return None;
        }
        match request.op {
            Op::Get { key } if self.config.read_path == ReadPath::ReadIndex => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                self.waiting_reads.insert(id, (waiter, key));
                Some(self.node.step(Input::Read(id)))
            }
            _ => {
                let ready = self.node.step(Input::Propose(request));
                match ready.proposed {
                    Some(Ok(index)) => {
                        let displaced = self.waiting_writes.insert(index, (waiter, self.node.term()));
                        debug_assert!(displaced.is_none(), "a leader proposes each index once");
                    }
                    Some(Err(refusal)) => respond(out, &waiter, Err(refusal.into())),
                    None => unreachable!("a proposal always gets an outcome"),
                }
                Some(ready)
            }
        }
    }

    fn on_read_outcome(&mut self, id: ReadId, result: Result<LogIndex, Refusal>, out: &mut ServerOutput) {
        let Some((waiter, key)) = self.waiting_reads.remove(&id) else { return };
        match result {
            Ok(index) => self.confirmed_reads.push((index, waiter, key)),
            Err(refusal) => respond(out, &waiter, Err(refusal.into())),
        }
    }

    fn apply(&mut self, index: LogIndex, entry: Entry<Command>, out: &mut ServerOutput) {
        let waiter = self.waiting_writes.remove(&index);
        let executed = match &entry.payload {
            Payload::Noop => {
                self.kv.apply_noop(index);
                if let Some((w, _)) = waiter {
                    respond(out, &w, Err(self.not_leader()));
                }
                false
            }
            Payload::Command(command) => {
                let applied = self.kv.apply(index, command);
                if let Some((w, _)) = waiter {
                    // Another command in our slot means our proposal was
                    // overwritten by a newer leader: the client must retry.
                    let ours = w.client == command.client && w.seq == command.seq;
                    respond(out, &w, if ours { Ok(applied.reply.clone()) } else { Err(self.not_leader()) });
                }
                applied.executed
            }
        };
        out.applied.push(AppliedEntry { index, entry, executed });
    }

    fn serve_confirmed_reads(&mut self, out: &mut ServerOutput) {
        let applied = self.kv.applied_index();
        let kv = &self.kv;
        self.confirmed_reads.retain(|(index, waiter, key)| {
            if *index > applied {
                return true;
            }
            respond(out, waiter, Ok(kv.get(key)));
            false
        });
    }

    /// Writes proposed by a leader that has since lost its term can no longer
    /// be answered by us: tell their clients to retry elsewhere (the session
    /// table makes the retry safe if the write commits after all).
    fn fail_orphaned_writes(&mut self, out: &mut ServerOutput) {
        if self.waiting_writes.is_empty() {
            return;
        }
        let (leading, term) = (self.node.is_leader(), self.node.term());
        let error = self.not_leader();
        self.waiting_writes.retain(|_, (waiter, proposed_in)| {
            let alive = leading && *proposed_in == term;
            if !alive {
                respond(out, waiter, Err(error));
            }
            alive
        });
    }

    fn not_leader(&self) -> ServiceError {
        ServiceError::NotLeader { leader: self.node.leader() }
    }
}

fn respond(out: &mut ServerOutput, waiter: &Waiter, result: Result<String, ServiceError>) {
    out.responses.push(Response { client: waiter.client, seq: waiter.seq, result });
}

impl From<Refusal> for ServiceError {
    fn from(refusal: Refusal) -> ServiceError {
        match refusal {
            Refusal::NotLeader { leader } => ServiceError::NotLeader { leader },
            Refusal::Busy => ServiceError::Busy,
        }
    }
}
