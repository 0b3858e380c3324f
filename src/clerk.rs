//! [`Clerk`]: a client's retry logic, as a pure state machine.
//!
//! One operation is outstanding at a time. The clerk picks a server (its
//! guess of the leader), follows leader hints on refusals, rotates to the
//! next server when a request times out, and retries with the same
//! `(client, seq)` until some server answers, so the session table can make
//! every retry safe. The runtime delivers responses and timeouts and sends
//! what the clerk asks; it arms a fresh timeout for every [`Send`].
//!
//! [`Send`]: ClerkAction::Send

use crate::kv::{ClientId, Command, Op, Response, ServiceError};
use crate::raft::{LogIndex, NodeId};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Clerk {
    client: ClientId,
    servers: u8,
    /// The server believed to lead.
    leader: NodeId,
    /// Sequence number of the latest operation (0 before the first).
    seq: u64,
    pending: Option<Op>,
    /// Bumped on every send, so a timeout armed for an older attempt is
    /// recognised and ignored.
    attempt: u64,
    /// The last refusal named no leader: wait for the timeout before trying
    /// the next server, rather than spinning through them.
    backing_off: bool,
}

/// What the clerk asks its runtime to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClerkAction {
    /// Send `request` to server `to`, and arm a timeout tagged `attempt`.
    Send { to: NodeId, request: Command, attempt: u64 },
    /// The outstanding operation completed with this result (a Get's value,
    /// `""` for writes).
    Done { seq: u64, output: String },
    /// The outstanding operation's session expired
    /// ([`ServiceError::SessionExpired`]): it may or may not have taken
    /// effect (once), and it is not retried. The next operation opens a
    /// new session, numbered above what the cluster forgot.
    Expired { seq: u64 },
    /// The outstanding operation was refused as stale
    /// ([`ServiceError::StaleRequest`]): not executed, and never will be.
    /// This clerk's session has executed seq `latest`, above its own, so
    /// another client is using the same id; the clerk's next commands
    /// would be refused too. Start a clerk with a fresh id.
    Stale { seq: u64, latest: u64 },
}

impl Clerk {
    /// A clerk for client `client` of a cluster of `servers` servers; it
    /// first tries server `first_guess`.
    pub fn new(client: ClientId, servers: u8, first_guess: NodeId) -> Clerk {
        Clerk::born(client, servers, first_guess, 0)
    }

    /// A clerk whose commands are numbered from `born + 1`, where `born` is
    /// an index the clerk has seen committed (or 0). Every command then
    /// lands in the log at an index at least its seq, which is what lets
    /// the bounded session table tell a retry of a forgotten session from a
    /// new one ([`crate::kv::KvMachine`]); a clerk born at a recent index
    /// is not mistaken for an old one.
    pub fn born(client: ClientId, servers: u8, first_guess: NodeId, born: LogIndex) -> Clerk {
        assert!(servers > 0 && first_guess < servers);
        Clerk { client, servers, leader: first_guess, seq: born, pending: None, attempt: 0, backing_off: false }
    }

    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The tag of the latest send (what its timeout must pass back).
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// The operation in progress, if any.
    pub fn pending(&self) -> Option<&Op> {
        self.pending.as_ref()
    }

    /// The same clerk in a cluster whose servers are numbered differently
    /// (for the models' symmetry reduction, beside
    /// [`crate::kv::KvServer::renumbered`]): only its guess of the leader
    /// names a server. Its choices are symmetric only under renumberings
    /// that keep its try order, `i` then `i + 1 (mod servers)`: rotations.
    pub fn renumbered(&self, new_id: impl Fn(NodeId) -> NodeId) -> Clerk {
        Clerk { leader: new_id(self.leader), ..self.clone() }
    }

    /// Starts a new operation. Panics if one is outstanding: the caller
    /// waits for `Done` first (one outstanding request per client is what
    /// makes the session table's single remembered reply enough).
    pub fn start(&mut self, op: Op) -> ClerkAction {
        assert!(self.pending.is_none(), "one outstanding operation per clerk");
        self.seq += 1;
        self.pending = Some(op);
        self.send()
    }

    /// A server the clerk did not know of (a redirect named its address):
    /// it gets the next number, `servers` before the call. `None` when 255
    /// are known already. Numbers stay as they were, so nothing pending
    /// changes meaning.
    pub fn add_server(&mut self) -> Option<NodeId> {
        let id = self.servers;
        self.servers = self.servers.checked_add(1)?;
        Some(id)
    }

    /// A server answered. Returns what to do, or `None` when the response is
    /// stale (an earlier operation's or a duplicate) or the clerk now waits
    /// for its timeout.
    pub fn on_response(&mut self, from: NodeId, response: Response) -> Option<ClerkAction> {
        if response.client != self.client || response.seq != self.seq || self.pending.is_none() {
            return None;
        }
        match response.result {
            Ok(output) => {
                self.pending = None;
                self.leader = from;
                Some(ClerkAction::Done { seq: self.seq, output })
            }
            Err(ServiceError::NotLeader { leader: Some(hint) }) if hint != from && hint < self.servers => {
                self.leader = hint;
                Some(self.send())
            }
            Err(ServiceError::Busy) => {
                // The leader is overloaded, not wrong: ask it again after the timeout.
                self.leader = from;
                self.backing_off = true;
                None
            }
            Err(ServiceError::NotLeader { .. }) => {
                self.leader = (from + 1) % self.servers;
                self.backing_off = true;
                None
            }
            Err(ServiceError::SessionExpired { forgotten }) => {
                let seq = self.seq;
                self.pending = None;
                self.leader = from;
                // Above every seq the table may be confusing us with; the
                // next command lands at an index above `forgotten` too.
                self.seq = self.seq.max(forgotten);
                Some(ClerkAction::Expired { seq })
            }
            Err(ServiceError::StaleRequest { latest }) => {
                self.pending = None;
                Some(ClerkAction::Stale { seq: self.seq, latest })
            }
        }
    }

    /// The timeout armed for `attempt` fired.
    pub fn on_timeout(&mut self, attempt: u64) -> Option<ClerkAction> {
        if attempt != self.attempt || self.pending.is_none() {
            return None;
        }
        if !std::mem::take(&mut self.backing_off) {
            self.leader = (self.leader + 1) % self.servers;
        }
        Some(self.send())
    }

    fn send(&mut self) -> ClerkAction {
        let op = self.pending.clone().expect("send only with an operation outstanding");
        self.attempt += 1;
        ClerkAction::Send {
            to: self.leader,
            request: Command { client: self.client, seq: self.seq, op },
            attempt: self.attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get() -> Op {
        Op::Get { key: "k".into() }
    }
    fn reply(seq: u64, result: Result<String, ServiceError>) -> Response {
        Response { client: 9, seq, result }
    }

    #[test]
    fn an_expired_session_ends_the_operation_and_renumbers_the_next() {
        let mut c = Clerk::born(9, 3, 0, 40);
        let ClerkAction::Send { request, .. } = c.start(get()) else { panic!() };
        assert_eq!(request.seq, 41, "numbered above the index it was born at");
        let expired = c.on_response(0, reply(41, Err(ServiceError::SessionExpired { forgotten: 70 })));
        assert_eq!(expired, Some(ClerkAction::Expired { seq: 41 }));
        assert_eq!(c.pending(), None, "not retried: its outcome is unknown");
        let ClerkAction::Send { request, .. } = c.start(get()) else { panic!() };
        assert_eq!(request.seq, 71, "above what the cluster forgot");
    }

    #[test]
    fn follows_hints_and_retries_with_the_same_seq() {
        let mut c = Clerk::new(9, 3, 0);
        let ClerkAction::Send { to: 0, request, .. } = c.start(get()) else { panic!() };
        assert_eq!(request.seq, 1);
        let hint = c.on_response(0, reply(1, Err(ServiceError::NotLeader { leader: Some(2) })));
        let Some(ClerkAction::Send { to: 2, request, attempt }) = hint else { panic!("{hint:?}") };
        assert_eq!(request.seq, 1, "a retry keeps its seq");
        let Some(ClerkAction::Send { to: 0, .. }) = c.on_timeout(attempt) else { panic!() };
        assert_eq!(c.on_timeout(attempt), None, "a stale timeout is ignored");
        let done = c.on_response(0, reply(1, Ok("v".into())));
        assert_eq!(done, Some(ClerkAction::Done { seq: 1, output: "v".into() }));
        assert_eq!(c.on_response(0, reply(1, Ok("v".into()))), None, "duplicate reply ignored");
        let ClerkAction::Send { to: 0, request, .. } = c.start(get()) else { panic!() };
        assert_eq!(request.seq, 2);
    }

    #[test]
    fn no_leader_known_waits_for_the_timeout() {
        let mut c = Clerk::new(9, 3, 1);
        let ClerkAction::Send { attempt, .. } = c.start(get()) else { panic!() };
        assert_eq!(c.on_response(1, reply(1, Err(ServiceError::NotLeader { leader: None }))), None);
        let Some(ClerkAction::Send { to: 2, .. }) = c.on_timeout(attempt) else { panic!() };
    }
}
