//! [`KvMachine`]: the deterministic state machine every replica applies the
//! committed log to, with its client session table.

use super::{ClientId, Command, Op, ServiceError, SERVER_ASSIGNED_CLIENT_BIT};
use crate::raft::LogIndex;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

/// How many client sessions the table keeps; the least recently active is
/// forgotten to make room. Part of the replicated state machine's
/// definition, so every replica must use the same value: a constant, not a
/// per-server setting. At about 100 bytes a session (more while a reply is
/// remembered) the table stays near 10 MB.
pub const MAX_SESSIONS: usize = 100_000;

/// The key/value data plus, per client, the latest executed sequence number
/// and its reply, so that a retried command is answered without executing it
/// again — even when the retry lands in the log twice, across leader changes
/// and crashes (the table is rebuilt by replaying the log, and saved in
/// snapshots with the data: [`super::snapshot`]).
///
/// **Cloning is O(1).** The maps are persistent B-trees ([`imbl`]) that share
/// their nodes until one side writes, so the node thread hands a snapshot
/// thread a consistent copy without copying the data; the applier then pays
/// for the few nodes it changes while the snapshot is encoded.
///
/// **The table is bounded** ([`MAX_SESSIONS`]): a new session beyond the
/// bound evicts the one whose last command is oldest, and `forgotten` keeps
/// the highest such index among evicted sessions. A command from a client
/// without a session is executed (opening one) only if its seq is above
/// `forgotten`; otherwise it is refused ([`ServiceError::SessionExpired`]), never
/// executed. That is safe because clerks number their commands above an
/// index they have seen committed (`Clerk::born`), so every command
/// sits in the log at an index at least its seq: a retry of a command whose
/// session was evicted has `seq ≤` its session's last index `≤ forgotten`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KvMachine {
    data: OrdMap<String, String>,
    sessions: OrdMap<ClientId, Session>,
    /// `(session.last, client)` for every session: the eviction order.
    by_age: OrdSet<(LogIndex, ClientId)>,
    /// The highest `last` of any evicted session (0: none evicted).
    forgotten: LogIndex,
    max_sessions: usize,
    applied: LogIndex,
    /// Injected bug (e): ignore the session table.
    skip_sessions: bool,
    /// Injected bug (l): open a session for any unknown client, whatever
    /// was forgotten.
    ignore_forgotten: bool,
}

impl Default for KvMachine {
    fn default() -> KvMachine {
        KvMachine {
            data: OrdMap::new(),
            sessions: OrdMap::new(),
            by_age: OrdSet::new(),
            forgotten: 0,
            max_sessions: MAX_SESSIONS,
            applied: 0,
            skip_sessions: false,
            ignore_forgotten: false,
        }
    }
}

/// What the state machine remembers of one client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session {
    pub seq: u64,
    pub reply: String,
    /// The index of the client's last command (executed or answered).
    pub last: LogIndex,
}

/// The outcome of applying one command.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Applied {
    /// The reply to send (a Get's value; `""` for Put and Append).
    pub reply: String,
    /// False if the command was a duplicate answered from the session table,
    /// or refused.
    pub executed: bool,
    /// Refused, not executed:
    /// - [`ServiceError::SessionExpired`]: the client has no session and
    ///   its seq is not above `forgotten`, so this may be a retry of a
    ///   command of an evicted session. The client may number its next
    ///   commands above `forgotten`.
    /// - [`ServiceError::StaleRequest`]: the session has executed a later
    ///   seq; the client that sent this one has moved on, or shares its id
    ///   with another.
    pub refused: Option<ServiceError>,
}

impl KvMachine {
    pub fn new() -> KvMachine {
        KvMachine::default()
    }

    /// The same machine with a session bound of `max` (tests and the
    /// simulator; the server uses [`MAX_SESSIONS`]). Every replica of one
    /// cluster must use the same bound.
    pub fn with_max_sessions(mut self, max: usize) -> KvMachine {
        assert!(max >= 1, "room for one session at least");
        self.max_sessions = max;
        self.evict_beyond_bound();
        self
    }

    /// The same machine with injected bug (l) on or off.
    pub fn with_forgotten_bug(mut self, ignore_forgotten: bool) -> KvMachine {
        self.ignore_forgotten = ignore_forgotten;
        self
    }

    /// The highest last index of an evicted session (0: none evicted).
    pub fn forgotten(&self) -> LogIndex {
        self.forgotten
    }

    /// A machine that skips the session table (injected bug (e)).
    pub fn with_injected_session_bug(skip_sessions: bool) -> KvMachine {
        KvMachine { skip_sessions, ..KvMachine::default() }
    }

    /// A machine as a snapshot left it (see [`super::snapshot::decode`]),
    /// with the default bound until [`KvMachine::with_max_sessions`].
    pub(super) fn restored(
        applied: LogIndex,
        data: OrdMap<String, String>,
        sessions: OrdMap<ClientId, Session>,
        forgotten: LogIndex,
    ) -> KvMachine {
        let by_age = sessions.iter().map(|(c, s)| (s.last, *c)).collect();
        KvMachine { data, sessions, by_age, forgotten, applied, ..KvMachine::default() }
    }

    /// The same machine, keeping (or dropping) the session table for
    /// injected bug (e) as `skip_sessions` says.
    pub fn with_session_bug(mut self, skip_sessions: bool) -> KvMachine {
        self.skip_sessions = skip_sessions;
        self
    }

    /// Every key and its value, in key order (for snapshots).
    pub fn data(&self) -> &OrdMap<String, String> {
        &self.data
    }

    /// Every client's session, in client order (for snapshots).
    pub fn sessions(&self) -> &OrdMap<ClientId, Session> {
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
        if command.client & SERVER_ASSIGNED_CLIENT_BIT != 0 {
            let reply = self.execute(&command.op);
            return Applied { reply, executed: true, refused: None };
        }
        match self.sessions.get(&command.client) {
            Some(s) if command.seq == s.seq && !self.skip_sessions => {
                // A retry of the latest command executed: its reply again.
                let reply = s.reply.clone();
                self.touch(command.client, index);
                return Applied { reply, executed: false, refused: None };
            }
            Some(s) if command.seq < s.seq && !self.skip_sessions => {
                // Only the latest reply is kept. A retry of an older seq
                // comes from a client that has moved on and ignores the
                // answer; anyone else waiting on it shares the id by mistake
                // and must hear that it was not executed.
                let refused = Some(ServiceError::StaleRequest { latest: s.seq });
                self.touch(command.client, index);
                return Applied { reply: String::new(), executed: false, refused };
            }
            None if command.seq <= self.forgotten && !self.ignore_forgotten && !self.skip_sessions => {
                let refused = Some(ServiceError::SessionExpired { forgotten: self.forgotten });
                return Applied { reply: String::new(), executed: false, refused };
            }
            _ => {}
        }
        let reply = self.execute(&command.op);
        let old = self.sessions.insert(command.client, Session { seq: command.seq, reply: reply.clone(), last: index });
        if let Some(old) = old {
            self.by_age.remove(&(old.last, command.client));
        }
        self.by_age.insert((index, command.client));
        self.evict_beyond_bound();
        Applied { reply, executed: true, refused: None }
    }

    /// Marks `client`'s session as active at `index`.
    fn touch(&mut self, client: ClientId, index: LogIndex) {
        let s = self.sessions.get_mut(&client).expect("touch an existing session");
        self.by_age.remove(&(s.last, client));
        s.last = index;
        self.by_age.insert((index, client));
    }

    /// Forgets the least recently active sessions while there are too many.
    fn evict_beyond_bound(&mut self) {
        while self.sessions.len() > self.max_sessions {
            let (last, client) = self.by_age.remove_min().expect("by_age indexes every session");
            self.sessions.remove(&client);
            self.forgotten = self.forgotten.max(last);
        }
        debug_assert_eq!(self.by_age.len(), self.sessions.len(), "by_age indexes every session");
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
            Op::Delete { key } => {
                let held = self.data.remove(key).is_some_and(|old| !old.is_empty());
                flag(held)
            }
            Op::PutIfAbsent { key, value } => {
                let absent = self.data.get(key).is_none_or(String::is_empty);
                if absent {
                    self.data.insert(key.clone(), value.clone());
                }
                flag(absent)
            }
        }
    }
}

/// The reply of an operation that did or did not take effect: `"1"` or
/// `"0"`, as Redis answers `DEL` of one key and `SETNX`.
fn flag(done: bool) -> String {
    if done { "1" } else { "0" }.to_owned()
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
            let client = SERVER_ASSIGNED_CLIENT_BIT | u128::from(i);
            assert!(m.apply(2 * i + 1, &cmd(client, 1, append("k", "x"))).executed);
            assert_eq!(m.apply(2 * i + 2, &cmd(client, 2, Op::Get { key: "k".into() })).reply.len() as u64, i + 1);
        }
        assert!(m.sessions().is_empty(), "a connection's requests leave no session behind");
        // A clerk's session is remembered as before.
        m.apply(2001, &cmd(7, 1, append("k", "y")));
        assert_eq!(m.sessions().len(), 1);
    }

    #[test]
    fn the_least_recently_active_session_is_forgotten_and_its_retries_refused() {
        let mut m = KvMachine::new().with_max_sessions(2);
        m.apply(1, &cmd(1, 1, append("k", "a")));
        m.apply(2, &cmd(2, 1, append("k", "b")));
        m.apply(3, &cmd(1, 1, append("k", "a"))); // a retry: client 1 is active at 3
        m.apply(4, &cmd(3, 4, append("k", "c"))); // a third session: client 2 (last at 2) goes
        assert_eq!((m.sessions().keys().copied().collect::<Vec<_>>(), m.forgotten()), (vec![1, 3], 2));
        // Client 2's retry cannot be told from a new command: refused, not run.
        let retry = m.apply(5, &cmd(2, 1, append("k", "b")));
        assert_eq!((retry.executed, retry.refused), (false, Some(ServiceError::SessionExpired { forgotten: 2 })));
        assert_eq!(m.get("k"), "abc");
        // Numbered above what was forgotten, client 2 opens a new session.
        assert!(m.apply(6, &cmd(2, 3, append("k", "d"))).executed);
        assert_eq!((m.sessions().len(), m.forgotten()), (2, 3), "client 1 (last at 3) made room");
        // With bug (l), a forgotten session's retry runs again.
        let mut bugged = KvMachine::new().with_max_sessions(1).with_forgotten_bug(true);
        bugged.apply(1, &cmd(1, 1, append("k", "a")));
        bugged.apply(2, &cmd(2, 1, append("k", "b")));
        assert!(bugged.apply(3, &cmd(1, 1, append("k", "a"))).executed);
        assert_eq!(bugged.get("k"), "aba");
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

    /// Two clients that drew the same id (issue 21: the bench once did)
    /// share one session. The one behind must hear that its append was not
    /// executed; before, it was answered `""` like a success and its write
    /// silently vanished.
    #[test]
    fn an_older_seq_of_a_session_is_refused_as_stale_never_answered_as_done() {
        let mut m = KvMachine::new();
        assert!(m.apply(1, &cmd(7, 5, append("k", "ahead"))).executed);
        let behind = m.apply(2, &cmd(7, 3, append("k", "behind")));
        assert_eq!((behind.executed, behind.refused), (false, Some(ServiceError::StaleRequest { latest: 5 })));
        assert_eq!(m.get("k"), "ahead");
        // The session's latest seq is still answered from the table.
        let retry = m.apply(3, &cmd(7, 5, append("k", "ahead")));
        assert_eq!((retry.executed, retry.refused), (false, None));
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
