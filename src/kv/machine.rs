//! [`KvMachine`]: the deterministic state machine every replica applies the
//! committed log to, with its client session table.

use super::{ClientId, Command, Op, SERVER_ASSIGNED_CLIENT_BIT};
use crate::raft::LogIndex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The key/value data plus, per client, the latest executed sequence number
/// and its reply, so that a retried command is answered without executing it
/// again — even when the retry lands in the log twice, across leader changes
/// and crashes (the table is rebuilt by replaying the log, and saved in
/// snapshots with the data: [`super::snapshot`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvMachine {
    data: BTreeMap<String, String>,
    sessions: BTreeMap<ClientId, Session>,
    applied: LogIndex,
    /// Injected bug (e): ignore the session table.
    skip_sessions: bool,
}

/// What the state machine remembers of one client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session {
    pub seq: u64,
    pub reply: String,
}

/// The outcome of applying one command.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Applied {
    /// The reply to send (a Get's value; `""` for Put and Append).
    pub reply: String,
    /// False if the command was a duplicate answered from the session table.
    pub executed: bool,
}

impl KvMachine {
    pub fn new() -> KvMachine {
        KvMachine::default()
    }

    /// A machine that skips the session table (injected bug (e)).
    pub fn with_injected_session_bug(skip_sessions: bool) -> KvMachine {
        KvMachine { skip_sessions, ..KvMachine::default() }
    }

    /// A machine as a snapshot left it (see [`super::snapshot::decode`]).
    pub(super) fn restored(
        applied: LogIndex,
        data: BTreeMap<String, String>,
        sessions: BTreeMap<ClientId, Session>,
    ) -> KvMachine {
        KvMachine { data, sessions, applied, skip_sessions: false }
    }

    /// The same machine, keeping (or dropping) the session table for
    /// injected bug (e) as `skip_sessions` says.
    pub fn with_session_bug(mut self, skip_sessions: bool) -> KvMachine {
        self.skip_sessions = skip_sessions;
        self
    }

    /// Every key and its value, in key order (for snapshots).
    pub fn data(&self) -> &BTreeMap<String, String> {
        &self.data
    }

    /// Every client's session, in client order (for snapshots).
    pub fn sessions(&self) -> &BTreeMap<ClientId, Session> {
        &self.sessions
    }

    /// Index of the last applied log entry.
    pub fn applied_index(&self) -> LogIndex {
        self.applied
    }

    /// Records that the entry at `index` (a no-op) was applied.
    pub fn apply_noop(&mut self, index: LogIndex) {
        self.advance(index);
    }

    /// Applies the committed command at `index`. Indexes must arrive in
    /// order, each once.
    pub fn apply(&mut self, index: LogIndex, command: &Command) -> Applied {
        self.advance(index);
        let session = self.sessions.get(&command.client);
        if let Some(s) = session.filter(|s| command.seq <= s.seq && !self.skip_sessions) {
            // A retry of something already executed. Only the latest reply
            // is kept; an older seq's client has moved on and ignores it.
            let reply = if command.seq == s.seq { s.reply.clone() } else { String::new() };
            return Applied { reply, executed: false };
        }
        let reply = self.execute(&command.op);
        if command.client & SERVER_ASSIGNED_CLIENT_BIT == 0 {
            self.sessions.insert(command.client, Session { seq: command.seq, reply: reply.clone() });
        }
        Applied { reply, executed: true }
    }

    /// The current value of `key` (`""` if missing), for ReadIndex reads.
    pub fn get(&self, key: &str) -> String {
        self.data.get(key).cloned().unwrap_or_default()
    }

    pub fn session(&self, client: ClientId) -> Option<&Session> {
        self.sessions.get(&client)
    }

    fn advance(&mut self, index: LogIndex) {
        assert_eq!(index, self.applied + 1, "entries are applied in order, each once");
        self.applied = index;
    }

    fn execute(&mut self, op: &Op) -> String {
        match op {
            Op::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                String::new()
            }
            Op::Append { key, value } => {
                self.data.entry(key.clone()).or_default().push_str(value);
                String::new()
            }
            Op::Get { key } => self.get(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(client: ClientId, seq: u64, op: Op) -> Command {
        Command { client, seq, op }
    }
    fn append(key: &str, value: &str) -> Op {
        Op::Append { key: key.into(), value: value.into() }
    }

    #[test]
    fn put_append_get_and_missing_key() {
        let mut m = KvMachine::new();
        assert_eq!(m.apply(1, &cmd(1, 1, Op::Get { key: "k".into() })).reply, "");
        m.apply(2, &cmd(1, 2, Op::Put { key: "k".into(), value: "a".into() }));
        m.apply(3, &cmd(1, 3, append("k", "b")));
        assert_eq!(m.apply(4, &cmd(1, 4, Op::Get { key: "k".into() })).reply, "ab");
        assert_eq!(m.get("k"), "ab");
    }

    #[test]
    fn connection_sessions_are_executed_and_not_remembered() {
        let mut m = KvMachine::new();
        for i in 0..1000 {
            let client = SERVER_ASSIGNED_CLIENT_BIT | i;
            assert!(m.apply(2 * i + 1, &cmd(client, 1, append("k", "x"))).executed);
            assert_eq!(m.apply(2 * i + 2, &cmd(client, 2, Op::Get { key: "k".into() })).reply.len() as u64, i + 1);
        }
        assert!(m.sessions().is_empty(), "a connection's requests leave no session behind");
        // A clerk's session is remembered as before.
        m.apply(2001, &cmd(7, 1, append("k", "y")));
        assert_eq!(m.sessions().len(), 1);
    }

    #[test]
    fn a_retry_is_answered_not_executed() {
        let mut m = KvMachine::new();
        assert!(m.apply(1, &cmd(7, 1, append("k", "x"))).executed);
        let again = m.apply(2, &cmd(7, 1, append("k", "x")));
        assert!(!again.executed);
        assert_eq!(m.get("k"), "x");
        // Another client's same seq is its own.
        assert!(m.apply(3, &cmd(8, 1, append("k", "y"))).executed);
        assert_eq!(m.get("k"), "xy");
    }

    #[test]
    fn injected_bug_applies_a_retry_twice() {
        let mut m = KvMachine::with_injected_session_bug(true);
        m.apply(1, &cmd(7, 1, append("k", "x")));
        m.apply(2, &cmd(7, 1, append("k", "x")));
        assert_eq!(m.get("k"), "xx");
    }

    #[test]
    #[should_panic(expected = "in order")]
    fn out_of_order_apply_is_a_programming_error() {
        KvMachine::new().apply(2, &cmd(1, 1, append("k", "x")));
    }
}
