//! One peer's outbound envelopes, between the thread stepping the node
//! (the node thread, or a task stepping a leader's event on arrival: see
//! `server::node`) that sends them and the writer task that owns the
//! peer's connection ([`super::peer`]).
//!
//! Normally the node thread pushes an envelope onto the bounded queue and
//! the writer wakes, encodes everything queued into one buffer and writes
//! it: batching under load, at the price of one thread hand-off per
//! message (a futex wake-up of a sleeping tokio worker, tens of
//! microseconds on a small VM, on every hop of a Put's path).
//!
//! **Writing at once.** When the node thread has nothing else to do (it was
//! asleep, one event woke it: see `server::node`), it asks for
//! [`Sending::AtOnce`]: if the writer is waiting with nothing queued on a
//! plain TCP connection, the node thread encodes the envelope and writes it
//! itself, non-blocking, on a duplicate of the connection's socket. What a
//! full socket buffer leaves unwritten becomes the writer's *leftover*,
//! which it writes before anything queued, so frames never interleave or
//! reorder. Under load the node thread sends [`Sending::Queued`], since
//! there a system call per envelope on the busiest thread costs more than
//! a writer that wakes once per batch (stop 41 measured that: Gets at 64
//! clients lost 40% when every send was written at once).
//!
//! The writer still watches the connection: the first write at once while
//! it expects no ack wakes it to start the silence clock (`link`), later
//! ones do not.

use super::node::Sending;
use super::peer::{lock, WRITE_BATCH_BYTES};
use crate::kv::Command;
use crate::raft::Envelope;
use crate::wire::{self, Limits};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::Notify;

/// One peer's outbound envelopes: bounded, and a full queue drops its
/// *oldest* envelope. After a link has been down, what is worth sending is
/// the newest: a later heartbeat carries a later commit index, a later
/// append or vote request supersedes an earlier one.
pub(super) struct PeerQueue {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the writer; a notification with no writer waiting is kept.
    ready: Notify,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    items: VecDeque<Envelope<Command>>,
    /// The writer's current connection, when it may be written at once.
    direct: Option<Direct>,
    /// Bytes a write at once left unwritten: the rest of one frame, which
    /// the writer sends before anything queued.
    leftover: Vec<u8>,
    /// When the first write at once the writer has not yet seen was made,
    /// if it was told (it expected no ack then).
    unseen_write: Option<Instant>,
}

/// A plain TCP connection's socket, duplicated for writes at once.
struct Direct {
    socket: std::net::TcpStream,
    limits: Limits,
    /// The writer waits with nothing to write: the node thread may write.
    idle: bool,
    /// The writer's silence clock runs (it expects an ack): a write at
    /// once need not wake it.
    watched: bool,
    buf: Vec<u8>,
}

pub(super) enum Pushed {
    Queued,
    /// Took the place of the queued envelope it supersedes.
    Superseded,
    /// Queued, and the oldest envelope dropped to make room.
    DroppedOldest,
    /// Written to the connection at once (all of it, or the start of it
    /// with the rest left to the writer).
    Written,
    /// Not written at once because the wire cannot carry it (its kind,
    /// and why).
    Unencodable(&'static str, wire::EncodeError),
    Closed,
}

/// What the writer is to do next.
pub(super) struct Work {
    /// The end of a frame written at once: goes first.
    pub leftover: Vec<u8>,
    /// The first queued envelope, if any.
    pub first: Option<Envelope<Command>>,
    /// A write at once the silence clock should count from.
    pub wrote: Option<Instant>,
}

impl PeerQueue {
    pub(super) fn new(capacity: usize) -> PeerQueue {
        PeerQueue { state: Mutex::default(), capacity, ready: Notify::new(), closed: AtomicBool::new(false) }
    }

    pub(super) fn push(&self, envelope: Envelope<Command>, sending: Sending) -> Pushed {
        if self.closed.load(Ordering::Relaxed) {
            return Pushed::Closed;
        }
        let mut state = lock(&self.state);
        let envelope = match sending {
            Sending::AtOnce => match state.write_at_once(envelope) {
                Ok(woke) => {
                    drop(state);
                    if woke {
                        self.ready.notify_one();
                    }
                    return Pushed::Written;
                }
                Err(AtOnceRefused::Busy(envelope)) => envelope,
                Err(AtOnceRefused::Unencodable(kind, error)) => return Pushed::Unencodable(kind, error),
            },
            Sending::Queued => envelope,
        };
        if let Some(last) = state.items.back_mut().filter(|last| envelope.message.supersedes(&last.message)) {
            // Not written yet, and worth nothing beside the new one
            // (`Message::supersedes`): a heartbeat per read otherwise.
            *last = envelope;
            return Pushed::Superseded;
        }
        let dropped = state.items.len() >= self.capacity && state.items.pop_front().is_some();
        state.items.push_back(envelope);
        drop(state);
        self.ready.notify_one();
        if dropped {
            Pushed::DroppedOldest
        } else {
            Pushed::Queued
        }
    }

    pub(super) fn pop(&self) -> Option<Envelope<Command>> {
        lock(&self.state).items.pop_front()
    }

    /// The writer's next work, waiting for some. While it waits, the node
    /// thread may write to the connection at once (`watched`: the writer's
    /// silence clock runs, so a write at once need not wake it).
    pub(super) async fn next(&self, watched: bool) -> Work {
        loop {
            {
                let mut state = lock(&self.state);
                let work = Work {
                    leftover: std::mem::take(&mut state.leftover),
                    first: state.items.pop_front(),
                    wrote: state.unseen_write.take(),
                };
                let busy = !work.leftover.is_empty() || work.first.is_some();
                if let Some(direct) = &mut state.direct {
                    direct.idle = !busy;
                    direct.watched = watched || work.wrote.is_some();
                }
                if busy || work.wrote.is_some() {
                    return work;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The writer has a new connection; `socket` is a duplicate of it when
    /// it may be written at once (plain TCP). Nothing is written at once
    /// until the writer next waits ([`next`](Self::next)).
    pub(super) fn connected(&self, socket: Option<std::net::TcpStream>, limits: Limits) {
        let mut state = lock(&self.state);
        // Checked under the lock `close` clears it with: a closed queue
        // never keeps a duplicate (and with it the connection) open.
        if !self.closed.load(Ordering::Relaxed) {
            state.direct = socket.map(|socket| Direct { socket, limits, idle: false, watched: false, buf: Vec::new() });
        }
    }

    /// The writer's connection is gone: nothing more is written at once,
    /// and an unsent leftover is dropped with it. Returns whether there
    /// was one (a frame lost).
    pub(super) fn disconnected(&self) -> bool {
        let mut state = lock(&self.state);
        state.direct = None;
        state.unseen_write = None;
        let lost = !state.leftover.is_empty();
        state.leftover = Vec::new();
        lost
    }

    /// Refuses every later push and drops what is queued.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let mut state = lock(&self.state);
        state.items.clear();
        state.direct = None;
    }
}

enum AtOnceRefused {
    /// The connection is not idle: queue the envelope.
    Busy(Envelope<Command>),
    Unencodable(&'static str, wire::EncodeError),
}

impl State {
    /// Writes `envelope` at once if the connection is idle: `Ok` when
    /// written (or started, with the rest left over), saying whether the
    /// writer must be told (it has a leftover, or a silence clock to start).
    fn write_at_once(&mut self, envelope: Envelope<Command>) -> Result<bool, AtOnceRefused> {
        let idle = self.items.is_empty() && self.leftover.is_empty();
        let Some(direct) = self.direct.as_mut().filter(|d| idle && d.idle) else {
            return Err(AtOnceRefused::Busy(envelope));
        };
        direct.buf.clear();
        if let Err(error) = wire::encode_into(&envelope, &direct.limits, &mut direct.buf) {
            return Err(AtOnceRefused::Unencodable(envelope.message.kind(), error));
        }
        let written = match write_some(&mut direct.socket, &direct.buf) {
            Ok(n) => n,
            Err(_) => {
                // Broken: the writer finds out on its own read; until then
                // everything goes through it.
                self.direct = None;
                return Err(AtOnceRefused::Busy(envelope));
            }
        };
        if written == 0 {
            // A full socket buffer: the writer will wait for room.
            direct.idle = false;
            return Err(AtOnceRefused::Busy(envelope));
        }
        let mut woke = false;
        if written < direct.buf.len() {
            self.leftover = direct.buf[written..].to_vec();
            direct.idle = false;
            woke = true;
        }
        if !direct.watched {
            direct.watched = true;
            self.unseen_write = Some(Instant::now());
            woke = true;
        }
        if direct.buf.capacity() > 2 * WRITE_BATCH_BYTES {
            direct.buf = Vec::new(); // kept no larger than the writer's
        }
        Ok(woke)
    }
}

/// One non-blocking write: 0 when the socket buffer is full.
fn write_some(socket: &mut std::net::TcpStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match socket.write(bytes) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op;
    use crate::raft::{Entry, Message, Payload};

    fn append(entries: usize) -> Envelope<Command> {
        let command = Command { client: 1, seq: 1, op: Op::Put { key: "k".into(), value: "v".into() } };
        let entries = vec![Entry { term: 1, payload: Payload::Command(command) }; entries];
        Envelope {
            from: 0,
            to: 1,
            message: Message::Append { term: 1, prev_index: 0, prev_term: 0, entries, commit: 0, read_round: 0 },
        }
    }

    /// A writer that connects as the transport stops must not leave its
    /// duplicate in the queue, where it would hold the connection open.
    #[test]
    fn a_closed_queue_keeps_no_duplicate_of_a_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = || std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let queue = PeerQueue::new(8);
        queue.connected(Some(socket()), Limits::default());
        assert!(lock(&queue.state).direct.is_some());
        queue.close();
        assert!(lock(&queue.state).direct.is_none());
        queue.connected(Some(socket()), Limits::default());
        assert!(lock(&queue.state).direct.is_none());
        assert!(matches!(queue.push(append(1), Sending::AtOnce), Pushed::Closed));
    }

    #[test]
    fn a_queued_heartbeat_or_echo_is_replaced_by_one_that_supersedes_it() {
        let beat = |term, commit, read_round| Envelope {
            from: 0,
            to: 1,
            message: Message::<Command>::Heartbeat { term, commit, read_round },
        };
        let echo =
            |term, read_round| Envelope { from: 0, to: 1, message: Message::HeartbeatReply { term, read_round } };
        let queue = PeerQueue::new(8);
        let pushed: Vec<Pushed> = [
            beat(2, 5, 1),
            beat(2, 5, 2), // a later round: replaces it
            beat(2, 6, 3), // a later commit too: replaces it
            beat(2, 5, 4), // a lower commit: a heartbeat of its own
            beat(3, 6, 5), // another term: likewise
            append(1),
            beat(3, 6, 6), // not behind the append's back: queued
            echo(3, 6),    // another kind
            echo(3, 7),
            echo(3, 6), // an older round: queued
        ]
        .into_iter()
        .map(|e| queue.push(e, Sending::Queued))
        .collect();
        let superseded = pushed.iter().filter(|p| matches!(p, Pushed::Superseded)).count();
        assert_eq!(superseded, 3);
        let left: Vec<Envelope<Command>> = std::iter::from_fn(|| queue.pop()).collect();
        let expected = [beat(2, 6, 3), beat(2, 5, 4), beat(3, 6, 5), append(1), beat(3, 6, 6), echo(3, 7), echo(3, 6)];
        assert_eq!(left, expected);
    }
}
