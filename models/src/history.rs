//! What the model records as it runs, for the properties to judge: the
//! client history (for linearizability), and which servers acted as leader
//! in which term (for election safety across crashes).

use crate::actors::ModelMsg;
use crate::ModelConfig;
use raftkv::kv::{ClientId, Op};
use raftkv::lincheck::{OpKind, Operation};
use raftkv::raft::{Message, NodeId, Term};
use stateright::actor::Envelope;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ModelHistory {
    /// Logical time: bumped at every recorded call and return.
    pub clock: u64,
    /// Client operations; `call`/`ret` are logical times.
    pub ops: Vec<Operation>,
    /// The request seq of each operation in `ops`, to match retries and
    /// responses to their call.
    pub seqs: Vec<u64>,
    /// Every server seen sending AppendEntries, heartbeats or snapshot
    /// chunks (what only a leader sends), by term: a
    /// message-level record, so it survives the sender's crash.
    pub leaders: BTreeMap<Term, BTreeSet<NodeId>>,
    /// Some Get was answered by a server that led a term after the first.
    pub read_by_later_leader: bool,
}

/// A client sent a request: record the call the first time this
/// `(client, seq)` is sent (later sends are retries of the same call).
pub fn record_out(_cfg: &ModelConfig, h: &ModelHistory, env: Envelope<&ModelMsg>) -> Option<ModelHistory> {
    match env.msg {
        ModelMsg::Request(cmd) => {
            if h.find(cmd.client, cmd.seq).is_some() {
                return None;
            }
            let mut h = h.clone();
            let client = u64::try_from(cmd.client).expect("the models' client ids are small");
            // As `raftkv::sim::recorded` maps them (the models may not use
            // the simulator).
            let kind = match &cmd.op {
                Op::Put { .. } => OpKind::Put,
                Op::Append { .. } => OpKind::Append,
                Op::Get { .. } => OpKind::Get,
                Op::Delete { .. } => OpKind::Delete,
                Op::PutIfAbsent { .. } => OpKind::PutIfAbsent,
            };
            let value = cmd.op.value().unwrap_or_default();
            h.ops.push(Operation::new(client, kind, cmd.op.key(), value, "", h.clock, None));
            h.seqs.push(cmd.seq);
            h.clock += 1;
            Some(h)
        }
        ModelMsg::Raft(e) => match e.message {
            Message::Append { term, .. } | Message::Heartbeat { term, .. } | Message::Snapshot { term, .. } => {
                if h.leaders.get(&term).is_some_and(|s| s.contains(&e.from)) {
                    return None;
                }
                let mut h = h.clone();
                h.leaders.entry(term).or_default().insert(e.from);
                Some(h)
            }
            _ => None,
        },
        ModelMsg::Response(r) if r.result.is_ok() && !h.read_by_later_leader => {
            let server = usize::from(env.src) as NodeId;
            let led_later = h.leaders.iter().any(|(&t, s)| t >= 2 && s.contains(&server));
            let is_get = h.find(r.client, r.seq).is_some_and(|i| h.ops[i].kind == OpKind::Get);
            if led_later && is_get {
                let mut h = h.clone();
                h.read_by_later_leader = true;
                return Some(h);
            }
            None
        }
        _ => None,
    }
}

/// A client received a successful response: the first one for its
/// outstanding call is the return (the clerk ignores the rest).
pub fn record_in(_cfg: &ModelConfig, h: &ModelHistory, env: Envelope<&ModelMsg>) -> Option<ModelHistory> {
    let ModelMsg::Response(r) = env.msg else { return None };
    let Ok(value) = &r.result else { return None };
    let i = h.find(r.client, r.seq).filter(|&i| h.ops[i].ret.is_none())?;
    let mut h = h.clone();
    let op = &mut h.ops[i];
    op.ret = Some(h.clock);
    op.output = if op.kind.has_output() { value.clone() } else { String::new() };
    h.clock += 1;
    Some(h)
}

/// A call per line, `c1#2 get("k") → "1" [2, 3]` (`[call, return]`;
/// `[2, …]` while outstanding), and the leaders seen per term.
impl std::fmt::Debug for ModelHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let calls: Vec<String> = self
            .ops
            .iter()
            .zip(&self.seqs)
            .map(|(o, seq)| {
                let kind = format!("{:?}", o.kind).to_lowercase();
                let args =
                    if o.value.is_empty() { format!("{:?}", o.key) } else { format!("{:?}, {:?}", o.key, o.value) };
                let output =
                    if o.ret.is_some() && o.kind.has_output() { format!(" → {:?}", o.output) } else { String::new() };
                let ret = o.ret.map_or("…".to_owned(), |r| r.to_string());
                format!("c{}#{seq} {kind}({args}){output} [{}, {ret}]", o.client, o.call)
            })
            .collect();
        f.debug_struct("ModelHistory")
            .field("calls", &calls)
            .field("leaders", &format_args!("{:?}", self.leaders))
            .field("read_by_later_leader", &self.read_by_later_leader)
            .finish()
    }
}

impl ModelHistory {
    /// The operation `(client, seq)`, if called.
    pub fn find(&self, client: ClientId, seq: u64) -> Option<usize> {
        (0..self.ops.len()).find(|&i| u128::from(self.ops[i].client) == client && self.seqs[i] == seq)
    }
}
