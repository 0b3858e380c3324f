//! The cluster's address book, replicated: where each server listens for
//! its peers and for clients, for every server an operator added with its
//! addresses (`RAFTKV.MEMBER ADD id peer client`, `specs/client.md`).
//!
//! It lives in the key/value data itself, under keys no client may write
//! ([`RESERVED`]), the way FoundationDB keeps its configuration in its own
//! `\xff` keyspace: an address is then written through the log like any
//! write (exactly once, committed before it is acknowledged), travels in
//! snapshots with the data, and needs no new log entry, wire or snapshot
//! format. Raft itself knows servers by id only (as etcd raft does; etcd
//! keeps member addresses in its store too): the runtime reads the
//! directory after each step that touched it and redials ([`touched`],
//! [`read`]).
//!
//! Addresses are not safety-relevant: a wrong or stale one only makes
//! messages miss until the right one is applied. That is why a server may
//! also take them from its log before they commit ([`read_with_log`]).

use super::machine::KvMachine;
use super::{Command, Op, ServerOutput};
use crate::raft::types::MAX_NODES;
use crate::raft::{Entry, NodeId, Payload};
use std::collections::BTreeMap;
// From `core`: an address is a value here; nothing in the pure core dials it.
use core::net::SocketAddr;

/// Keys that start so belong to the cluster, not to clients: the client
/// port refuses writes to them (reads are allowed: they show the book).
pub const RESERVED: &str = "\0raftkv/";
/// The directory's keys: this, then the node id in decimal.
pub const PREFIX: &str = "\0raftkv/node/";

/// Where one server listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Addresses {
    /// Raft traffic between servers.
    pub peer: SocketAddr,
    /// Clients, in RESP.
    pub client: SocketAddr,
}

/// Every server with replicated addresses, by id.
pub type Directory = BTreeMap<NodeId, Addresses>;

/// True for a key clients may not write.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED)
}

/// The key holding `id`'s addresses.
pub fn key(id: NodeId) -> String {
    format!("{PREFIX}{id}")
}

/// The value stored for `addresses`: `peer=ADDR client=ADDR`.
pub fn value(addresses: &Addresses) -> String {
    format!("peer={} client={}", addresses.peer, addresses.client)
}

/// The write that records `id`'s addresses (under the given session).
pub fn put(id: NodeId, addresses: &Addresses) -> Op {
    Op::Put { key: key(id), value: value(addresses) }
}

/// The node a directory key names, if it is one (a decimal id below
/// [`MAX_NODES`], nothing else).
pub fn node_of(key: &str) -> Option<NodeId> {
    let digits = key.strip_prefix(PREFIX)?;
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: usize = digits.parse().ok()?;
    (id < MAX_NODES).then_some(id as NodeId)
}

/// Reads a stored value; `None` for `""` (the entry was deleted) and for
/// anything that is not `peer=ADDR client=ADDR`.
pub fn parse(value: &str) -> Option<Addresses> {
    let mut words = value.split(' ');
    let peer = words.next()?.strip_prefix("peer=")?.parse().ok()?;
    let client = words.next()?.strip_prefix("client=")?.parse().ok()?;
    words.next().is_none().then_some(Addresses { peer, client })
}

/// The directory as the state machine holds it. An entry that does not
/// parse is left out: only this module writes them, so one would be a bug
/// or a hand-made key, and a missing address is harmless (see the module
/// docs).
pub fn read(machine: &KvMachine) -> Directory {
    let mut directory = Directory::new();
    for (key, value) in machine.data().range(PREFIX.to_string()..) {
        if !key.starts_with(PREFIX) {
            break;
        }
        if let (Some(id), Some(addresses)) = (node_of(key), parse(value)) {
            directory.insert(id, addresses);
        }
    }
    directory
}

/// [`read`], then every directory write in `log` (entries past what the
/// machine applied, in log order) on top: what a restarted server uses
/// before its log commits again, so that it can answer a leader whose
/// address only its log holds.
pub fn read_with_log<'a>(machine: &KvMachine, log: impl IntoIterator<Item = &'a Entry<Command>>) -> Directory {
    let mut directory = read(machine);
    for entry in log {
        let Payload::Command(Command { op, .. }) = &entry.payload else { continue };
        let Some(id) = node_of(op.key()) else { continue };
        match op {
            Op::Put { value, .. } => match parse(value) {
                Some(addresses) => directory.insert(id, addresses),
                None => directory.remove(&id),
            },
            Op::Delete { .. } => directory.remove(&id),
            // Never written to directory keys (the client port refuses them).
            Op::Append { .. } | Op::PutIfAbsent { .. } | Op::Get { .. } => None,
        };
    }
    directory
}

/// True when the step whose output this is may have changed the
/// directory: it applied a write to a directory key, or installed a
/// snapshot.
pub fn touched(out: &ServerOutput) -> bool {
    out.installed.is_some()
        || out.applied.iter().any(|applied| match &applied.entry.payload {
            Payload::Command(command) => applied.executed && !command.op.is_read() && is_reserved(command.op.key()),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(port: u16) -> Addresses {
        Addresses { peer: ([127, 0, 0, 1], port).into(), client: ([127, 0, 0, 2], port + 1).into() }
    }

    fn put_at(machine: &mut KvMachine, index: u64, op: Op) {
        let command = Command { client: 1, seq: index, op };
        machine.apply(index, &command);
    }

    #[test]
    fn a_written_address_reads_back_and_a_later_one_replaces_it() {
        let mut machine = KvMachine::new();
        put_at(&mut machine, 1, put(3, &addresses(7000)));
        put_at(&mut machine, 2, Op::Put { key: "\0raftkv/nodes".into(), value: "x".into() });
        put_at(&mut machine, 3, put(8, &addresses(7100)));
        put_at(&mut machine, 4, Op::Put { key: "user".into(), value: "peer=1.2.3.4:5 client=1.2.3.4:6".into() });
        assert_eq!(read(&machine), Directory::from([(3, addresses(7000)), (8, addresses(7100))]));
        put_at(&mut machine, 5, put(3, &addresses(7200)));
        assert_eq!(read(&machine)[&3], addresses(7200));
    }

    #[test]
    fn malformed_keys_and_values_are_left_out_without_panicking() {
        for key in ["\0raftkv/node/", "\0raftkv/node/9", "\0raftkv/node/1000", "\0raftkv/node/-1", "\0raftkv/node/1 "] {
            assert_eq!(node_of(key), None, "{key:?}");
        }
        assert_eq!(node_of("\0raftkv/node/08"), Some(8));
        for value in [
            "",
            "peer=1.2.3.4:5",
            "peer=x client=1.2.3.4:6",
            "client=1.2.3.4:6 peer=1.2.3.4:5",
            "peer=1.2.3.4:5 client=1.2.3.4:6 extra",
        ] {
            assert_eq!(parse(value), None, "{value:?}");
        }
        let mut machine = KvMachine::new();
        put_at(&mut machine, 1, Op::Put { key: key(2), value: "garbage".into() });
        assert!(read(&machine).is_empty());
    }

    #[test]
    fn the_log_overrides_the_machine_in_log_order_and_a_delete_removes() {
        let entry = |op: Op| Entry { term: 1, payload: Payload::Command(Command { client: 1, seq: 9, op }) };
        let mut machine = KvMachine::new();
        put_at(&mut machine, 1, put(1, &addresses(7000)));
        put_at(&mut machine, 2, put(2, &addresses(7100)));
        let log = [
            entry(put(1, &addresses(7300))),
            entry(Op::Delete { key: key(2) }),
            Entry { term: 1, payload: Payload::Noop },
        ];
        assert_eq!(read_with_log(&machine, &log), Directory::from([(1, addresses(7300))]));
        let emptied = [entry(Op::Put { key: key(1), value: String::new() })];
        assert_eq!(read_with_log(&machine, &emptied), Directory::from([(2, addresses(7100))]));
    }

    /// Every address round-trips, IPv6 too; any key or value is read
    /// without a panic, and only the exact forms are taken.
    #[test]
    fn values_round_trip_and_arbitrary_text_never_panics() {
        use quickcheck::{QuickCheck, TestResult};
        fn round_trip(peer: SocketAddr, client: SocketAddr, id: u8) -> TestResult {
            let at = Addresses { peer, client };
            let id = id % MAX_NODES as u8;
            TestResult::from_bool(parse(&value(&at)) == Some(at) && node_of(&key(id)) == Some(id))
        }
        fn anything(key: String, value: String) -> bool {
            let (node, at) = (node_of(&key), parse(&value));
            node.is_none_or(|id| usize::from(id) < MAX_NODES) && at.is_none_or(|a| parse(&super::value(&a)) == Some(a))
        }
        QuickCheck::new().tests(2000).quickcheck(round_trip as fn(SocketAddr, SocketAddr, u8) -> TestResult);
        QuickCheck::new().tests(2000).quickcheck(anything as fn(String, String) -> bool);
    }

    #[test]
    fn reserved_keys_are_the_clusters() {
        assert!(is_reserved(&key(0)));
        assert!(is_reserved("\0raftkv/anything"));
        assert!(!is_reserved("raftkv/node/0"));
        assert!(!is_reserved("\0other"));
    }
}
