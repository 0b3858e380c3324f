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
//! reported again), and a crash drops whatever was not written.
//!
//! In inputs whose first byte is 0xF0 or more ([`SNAPSHOTS_FROM`]; older
//! inputs replay as they were found), it also plays a leader sending the
//! node snapshots (InstallSnapshot, Raft Figure 13): up to two at a time,
//! their chunks interleaved, partial, repeated, at wrong offsets, past
//! their declared size, with sizes past
//! [`Config::max_snapshot_bytes`], covering less than the node committed or
//! more than it holds, agreeing with its log or not, in stale and future
//! terms. And it plays the application and its runtime: it checks a
//! snapshot the node received (installs it, refuses it, or feeds back
//! another one), takes snapshots of what the node handed out for applying,
//! makes them durable and reports them, so that the node compacts, and a
//! leader node sends them in chunks to followers whose replies the fuzzer
//! writes. A snapshot's bytes are a function of its meta and size
//! ([`snapshot_byte`]), so any chunk can be checked.
//!
//! Nothing may panic. Besides the node's own invariant checks after every
//! step, the harness checks the persistence contract of
//! [`crate::raft::ready`] against what it *reported* durable:
//! - batches come numbered 1, 2, 3, … and each log write starts within the
//!   durable log (no gap); a compaction moves the base forward and never
//!   past a snapshot that is (or is about to be) on the disk; the disk can
//!   be restarted from after every write (its snapshot covers its base);
//! - the node's stable prefix equals the reported durable log;
//! - no message speaks of an unreported term, a granted vote is reported
//!   durable, and an acknowledgement (an Append's, or a snapshot reply's
//!   `matched`) covers no more entries than the log held after some
//!   reported batch;
//! - committed entries come out in index order, once per incarnation, equal
//!   to the node's log and not beyond the commit index (not necessarily
//!   reported durable yet: committed means durable on a quorum); the commit index
//!   and the applied index never go back; a proposal's index holds that
//!   command; a read index is not beyond the commit index;
//! - a snapshot handed out for checking is newer than the commit index and
//!   is exactly the bytes the leader sent; an install happens only for the
//!   snapshot handed out, only if it is newer than the commit index, keeps
//!   the entries after the snapshot if the log holds its last entry and
//!   drops the whole log otherwise; the state machine gets it only once its
//!   batch is reported, and it moves the machine forward;
//! - a chunk the node sends carries its snapshot's bytes at its offset;
//! - after a restart the node holds exactly the durable state: term and
//!   vote (the snapshot's term and no vote if that is later: a snapshot of
//!   applied entries may be saved before the term is durable), snapshot,
//!   log (dropped if it does not hold the snapshot's last entry), and
//!   commit and applied indexes at the snapshot's.
//!
//! `RAFTKV_FUZZ_BUG=<name>` switches on an injected bug, as in the
//! `cluster` target. The harness honours `trim_before_snapshot_durable`
//! itself, as the simulator's runtime does: it reports a snapshot before it
//! is written.

use super::cluster::bugs_from_env;
use crate::kv::{Command, Op};
use crate::raft::types::MAX_NODE_ID;
use crate::raft::{
    BatchNumber, Config, DurableState, Entry, Envelope, HardState, InjectedBugs, Input, LogIndex, Membership,
    MembershipChange, Message, NodeId, NodeSet, Payload, Persist, RaftNode, ReadId, Ready, RejectHint, Snapshot,
    SnapshotMeta, Term,
};
use arbitrary::Unstructured;
use std::collections::VecDeque;

/// Most actions one input drives (each takes at least a byte anyway).
const ACTIONS_MAX: usize = 2_000;
/// How many of the node's latest messages a `Reply` can answer.
const SENT_KEPT: usize = 32;
/// An input whose first byte is at least this has snapshot traffic: its
/// actions are chosen among the snapshot actions too. Below it, the actions
/// are those the target had before snapshots, read exactly as they were, so
/// that the inputs found before (the committed regressions, whose first
/// bytes are lower) replay as they were found. (The first byte also picks
/// the cluster size, `3 + byte % 3`, which this leaves alone.)
const SNAPSHOTS_FROM: u8 = 0xF0;
/// Bytes in one chunk the fuzzer sends, at most (a bound on allocation; the
/// node's own bound is on the whole snapshot).
const CHUNK_MAX: u64 = 64;

/// Drives one node with the actions encoded in `data` (see the module
/// docs), with the bug named by `RAFTKV_FUZZ_BUG`, if any.
pub fn node_target(data: &[u8]) {
    node_run(data, bugs_from_env());
}

/// The same with the bugs given; returns how far the run got (how many
/// snapshots it received, installed, …), for tests and for picking seeds.
pub fn node_run(data: &[u8], bugs: InjectedBugs) -> NodeReached {
    let snapshots = data.first().is_some_and(|&byte| byte >= SNAPSHOTS_FROM);
    let mut u = Unstructured::new(data);
    let Ok(mut harness) = Harness::new(&mut u, bugs, snapshots) else { return NodeReached::default() };
    for _ in 0..ACTIONS_MAX {
        if u.is_empty() || harness.act(&mut u).is_err() {
            break;
        }
    }
    harness.reached
}

/// Byte `i` of any snapshot of `meta` that is `total` bytes long, both the
/// harness's own and the fuzzer's: so a chunk can be checked wherever it
/// goes, and mixing chunks of two snapshots alike in meta and size is
/// harmless.
fn snapshot_byte(meta: SnapshotMeta, total: u64, i: u64) -> u8 {
    let x = meta.index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ meta.term.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ total.rotate_left(29)
        ^ i.wrapping_mul(0x1656_67B1_9E37_79F9);
    (x >> 56) as u8 ^ x as u8
}

/// Bytes `from..to` of a snapshot of `meta` that is `total` bytes long.
fn snapshot_bytes(meta: SnapshotMeta, total: u64, from: u64, to: u64) -> Vec<u8> {
    (from..to).map(|i| snapshot_byte(meta, total, i)).collect()
}

/// What is on the disk, as the real storage keeps it: a term and vote, the
/// latest snapshot, the last compacted entry (the base) and the log after
/// it, written by [`DurableState::write`] once this harness checked the
/// batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Disk(DurableState<Command>);

impl std::ops::Deref for Disk {
    type Target = DurableState<Command>;
    fn deref(&self) -> &DurableState<Command> {
        &self.0
    }
}

impl std::ops::DerefMut for Disk {
    fn deref_mut(&mut self) -> &mut DurableState<Command> {
        &mut self.0
    }
}

impl Disk {
    /// The entry at `index`, if stored (after the base, not past the end).
    fn entry(&self, index: LogIndex) -> Option<&Entry<Command>> {
        let i = index.checked_sub(self.base.index + 1)?;
        self.log.get(usize::try_from(i).ok()?)
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// Checks that the batch's compaction moves the base forward and that
    /// its log write leaves no gap, writes it, then checks that the disk
    /// can be restarted from.
    fn write(&mut self, persist: &Persist<Command>) {
        let number = persist.number;
        if let Some(to) = persist.compact {
            assert!(
                to.index > self.base.index,
                "batch {number}: a compaction to {to:?} behind the base {:?}",
                self.base
            );
        }
        if let Some(w) = &persist.log {
            // Against the base and end the compaction leaves.
            let base = persist.compact.map_or(self.base.index, |to| to.index);
            let last = persist.compact.map_or(self.last_index(), |to| to.index.max(self.last_index()));
            assert!(
                w.from > base && w.from <= last + 1,
                "batch {number}: log write at {} leaves a gap after {last} (base {base})",
                w.from,
            );
        }
        self.0.write(persist);
        self.check_loadable(&format!("after batch {number}"));
    }

    /// A power cut may come at any moment, so what is stored must always
    /// be a state to restart from: the snapshot covers the log's base (the
    /// entries in between would be lost; `RedbStorage::load` refuses such
    /// a disk and `Sim::restart` reports it as a gap).
    fn check_loadable(&self, when: &str) {
        assert!(
            self.base.index <= self.covered(),
            "{when}: the disk's log starts after index {}, past what its snapshot covers ({}): a gap",
            self.base.index,
            self.covered()
        );
    }

    /// The base and log a node restarted from this disk must hold (Raft
    /// Figure 13, as `RaftNode::restart` documents it): the stored ones,
    /// unless the snapshot is past the base and the log does not hold its
    /// last entry, in which case the log is dropped.
    fn restarted_log(&self) -> (SnapshotMeta, &[Entry<Command>]) {
        match &self.snapshot {
            Some(s) if s.meta.index > self.base.index && self.term_at(s.meta.index) != Some(s.meta.term) => {
                (s.meta, &[])
            }
            _ => (self.base, &self.log),
        }
    }
}

/// What the application has applied: the index and term of the last
/// entry (or of the snapshot it loaded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct App {
    applied: LogIndex,
    term: Term,
}

impl App {
    /// A snapshot of the application as it stands: between 4 and 16 bytes.
    fn snapshot(self, membership: Membership) -> Snapshot {
        let meta = SnapshotMeta { index: self.applied, term: self.term };
        let total = 4 + self.applied % 13;
        Snapshot { meta, membership, data: snapshot_bytes(meta, total, 0, total).into() }
    }
}

/// A snapshot the fuzzer, as a leader, is sending the node in chunks; its
/// bytes are [`snapshot_byte`]s.
#[derive(Clone, Copy, Debug)]
struct Sending {
    from: NodeId,
    term: Term,
    meta: SnapshotMeta,
    total: u64,
    /// The offset of the next chunk in order.
    next: u64,
}

/// How far a [`node_run`] got: counts of the snapshot events it reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeReached {
    /// Snapshots handed out for checking (received whole).
    pub received: u64,
    /// Installs handed out in a batch.
    pub installed: u64,
    /// Installed snapshots loaded by the application.
    pub loaded: u64,
    /// Compactions handed out (installs aside).
    pub compacted: u64,
    /// Snapshot chunks the node sent.
    pub chunks_sent: u64,
    /// Restarts from a disk holding a snapshot.
    pub restarts_with_snapshot: u64,
    /// Restarts from a disk whose snapshot covers entries its log does not
    /// hold: saved before the log under it was durable.
    pub restarts_past_the_log: u64,
}

impl NodeReached {
    /// Each snapshot path with how often it was reached, named as the
    /// fields are: one list for the tests that sum or pick by path.
    pub fn paths(&self) -> [(&'static str, u64); 7] {
        [
            ("received", self.received),
            ("installed", self.installed),
            ("loaded", self.loaded),
            ("compacted", self.compacted),
            ("chunks_sent", self.chunks_sent),
            ("restarts_with_snapshot", self.restarts_with_snapshot),
            ("restarts_past_the_log", self.restarts_past_the_log),
        ]
    }
}

/// The node, its disk, and what the checks need to remember.
struct Harness {
    /// Whether the input has snapshot actions ([`SNAPSHOTS_FROM`]).
    snapshots: bool,
    config: Config,
    node: RaftNode<Command>,
    /// Everything written, reported or not: what a crash keeps.
    disk: Disk,
    /// The disk as of the last report: what the node may act on.
    reported: Disk,
    /// The log's last index after each batch handed out and not reported.
    lengths: VecDeque<(BatchNumber, LogIndex)>,
    /// The highest last index of the log after any reported batch of this
    /// incarnation (or at its start).
    reported_last: LogIndex,
    /// Batches handed out and not written yet, in order.
    unwritten: VecDeque<Persist<Command>>,
    /// The number of the last batch written, and of the last handed out.
    written: BatchNumber,
    handed_out: BatchNumber,
    /// The node's latest messages, for `Reply`.
    sent: VecDeque<Envelope<Command>>,
    /// What the application applied (per incarnation).
    app: App,
    next_read: ReadId,
    /// A snapshot of the application being taken (at most one).
    job: Option<Snapshot>,
    /// Bug (k): a snapshot reported to the node but not written yet.
    late_snapshot: Option<Snapshot>,
    /// The fuzzer's snapshots on their way to the node.
    sending: Vec<Sending>,
    /// The snapshot the node last handed out for checking, not answered.
    offered: Option<Snapshot>,
    /// An install handed out in a batch, not yet loaded.
    installing: Option<(BatchNumber, Snapshot)>,
    reached: NodeReached,
}

impl Harness {
    fn new(u: &mut Unstructured<'_>, bugs: InjectedBugs, snapshots: bool) -> arbitrary::Result<Harness> {
        let members: u8 = u.int_in_range(3..=5)?;
        let id = u.int_in_range(0..=members - 1)?;
        let mut config = Config::new(id, members, u.arbitrary()?);
        config.election_ticks = u.int_in_range(3..=20)?;
        config.heartbeat_ticks = u.int_in_range(1..=(config.election_ticks - 1) / 2)?;
        config.max_inflight = u.int_in_range(1..=4)?;
        config.max_batch_entries = u.int_in_range(1..=4)?;
        config.max_pending_reads = u.int_in_range(1..=3)?;
        config.max_held_messages = u.int_in_range(1..=8)?;
        // The snapshot bounds come from the seed's top bits rather than
        // from more bytes, so that inputs found before keep their meaning.
        let bits = config.seed >> 48;
        config.snapshot_chunk_bytes = 1 + (bits & 7) as usize;
        config.snapshot_chunks_in_flight = 1 + ((bits >> 3) & 3) as usize;
        config.max_snapshot_bytes = 8 + ((bits >> 5) & 31);
        config.snapshot_trailing_entries = (bits >> 10) & 3;
        config.bugs = bugs;
        Ok(Harness { snapshots, ..Harness::with_config(config) })
    }

    fn with_config(config: Config) -> Harness {
        let node = RaftNode::restart(config.clone(), DurableState::default());
        Harness {
            snapshots: true,
            config,
            node,
            disk: Disk::default(),
            reported: Disk::default(),
            lengths: VecDeque::new(),
            reported_last: 0,
            unwritten: VecDeque::new(),
            written: 0,
            handed_out: 0,
            sent: VecDeque::new(),
            app: App::default(),
            next_read: 0,
            job: None,
            late_snapshot: None,
            sending: Vec::new(),
            offered: None,
            installing: None,
            reached: NodeReached::default(),
        }
    }

    /// Reads one action from `u` and carries it out.
    fn act(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        let action = if self.snapshots { u.int_in_range(0..=19u8)? } else { u.int_in_range(0..=12u8)? };
        if action >= 13 {
            return self.snapshot_action(action - 13, u);
        }
        match action {
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
            6 => match u.int_in_range(0..=7u8)? {
                // Configuration changes and leadership transfers, to ids in
                // and around the cluster.
                0 => {
                    let id = u.int_in_range(0..=self.config.members.saturating_add(1))?;
                    let change = match u.int_in_range(0..=2u8)? {
                        0 => MembershipChange::AddLearner(id),
                        1 => MembershipChange::Promote(id),
                        _ => MembershipChange::Remove(id),
                    };
                    self.step(Input::ChangeMembership(change));
                }
                1 => {
                    let to = u.int_in_range(0..=self.config.members)?;
                    self.step(Input::TransferLeadership(to));
                }
                2 => {
                    let id = u.int_in_range(0..=self.config.members.saturating_add(1))?;
                    self.step(Input::PromoteWhenCaughtUp(id));
                }
                _ => {
                    let command = command(u)?;
                    self.step(Input::Propose(command));
                }
            },
            7 => {
                self.next_read += 1;
                self.step(Input::Read(self.next_read));
            }
            8 | 9 => {
                // The disk catches up with some or all pending batches, and
                // (usually) the runtime reports it.
                if !self.unwritten.is_empty() {
                    let count = u.int_in_range(1..=self.unwritten.len())?;
                    self.write(count);
                }
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
            _ => self.restart(u.arbitrary()?),
        }
        Ok(())
    }

    /// One of the snapshot actions, `0..=6`.
    fn snapshot_action(&mut self, action: u8, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        match action {
            0..=2 => {
                let envelope = self.chunk(u)?;
                self.step(Input::Message(envelope));
            }
            3 => self.answer_offered(u)?,
            4 => self.snapshot_job(),
            5 => {
                let envelope = self.forged_snapshot_message(u)?;
                self.step(Input::Message(envelope));
            }
            _ => match self.late_snapshot.take() {
                Some(late) => self.write_snapshot(&late),
                None => {
                    let envelope = self.chunk(u)?;
                    self.step(Input::Message(envelope));
                }
            },
        }
        Ok(())
    }

    /// Writes the next `count` pending batches, in order, unreported.
    fn write(&mut self, count: usize) {
        for _ in 0..count.min(self.unwritten.len()) {
            let batch = self.unwritten.pop_front().expect("not empty");
            assert_eq!(batch.number, self.written + 1, "batches numbered in order");
            self.disk.write(&batch);
            self.written = batch.number;
        }
    }

    /// Reports every batch written so far.
    fn report(&mut self) {
        if self.written > self.node.batches().0 {
            self.reported = self.disk.clone();
            while self.lengths.front().is_some_and(|&(batch, _)| batch <= self.written) {
                let (_, last) = self.lengths.pop_front().expect("not empty");
                self.reported_last = self.reported_last.max(last);
            }
            self.step(Input::Persisted(self.written));
        }
    }

    /// Makes a snapshot the application took durable (it is reported too:
    /// the node is told at once).
    fn write_snapshot(&mut self, snapshot: &Snapshot) {
        self.disk.keep_snapshot(snapshot.clone());
        self.reported.keep_snapshot(snapshot.clone());
    }

    /// Starts a snapshot of the application, or finishes the one under
    /// way: it is made durable and reported to the node, which compacts.
    fn snapshot_job(&mut self) {
        match self.job.take() {
            None if self.app.applied > 0 => {
                self.job = Some(self.app.snapshot(self.node.membership_at(self.app.applied).1))
            }
            None => {}
            Some(snapshot) => {
                if self.config.bugs.trim_before_snapshot_durable {
                    // Bug (k), as the simulator's runtime has it: reported
                    // now, written later (or never, if the power goes first).
                    if self.late_snapshot.as_ref().is_none_or(|late| late.meta.index < snapshot.meta.index) {
                        self.late_snapshot = Some(snapshot.clone());
                    }
                } else {
                    self.write_snapshot(&snapshot);
                }
                self.step(Input::SnapshotTaken(snapshot));
            }
        }
    }

    /// The runtime answers the snapshot the node received: usually it loads
    /// and is fed back; sometimes another one is fed back (which the node
    /// must ignore), the answer waits, or the snapshot is refused.
    fn answer_offered(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        let Some(offered) = self.offered.clone() else { return Ok(()) };
        match u.int_in_range(0..=7u8)? {
            0..=4 => self.install(offered),
            5 => {
                let mut meta = offered.meta;
                if u.arbitrary()? {
                    meta.index = meta.index.saturating_add(1);
                } else {
                    meta.term = meta.term.saturating_add(1);
                }
                let total = offered.data.len() as u64;
                let membership = offered.membership;
                self.install(Snapshot { meta, membership, data: snapshot_bytes(meta, total, 0, total).into() });
            }
            6 => {}                   // later
            _ => self.offered = None, // it does not load: dropped
        }
        Ok(())
    }

    /// Feeds `snapshot` back as checked, and checks what the node made of
    /// it.
    fn install(&mut self, snapshot: Snapshot) {
        let offered = self.offered.take().map(|s| s.meta);
        let commit = self.node.commit_index();
        let (base, entries) = (self.node.log().base(), self.node.log().entries().to_vec());
        let ready = self.node.step(Input::InstallSnapshot(snapshot.clone()));
        let Some(batch) = ready.persist.as_ref().filter(|p| p.snapshot.is_some()) else {
            assert!(
                self.node.log().base() == base && self.node.log().entries() == entries,
                "an install of {snapshot:?} that was refused changed the log"
            );
            return self.check_ready(commit, ready);
        };
        let meta = snapshot.meta;
        assert_eq!(batch.snapshot.as_ref(), Some(&snapshot), "installed another snapshot than the one fed back");
        assert_eq!(offered, Some(meta), "installed {snapshot:?}, which it did not hand out for checking");
        assert!(meta.index > commit, "installed {snapshot:?}, not newer than the commit index {commit}");
        // Figure 13: the entries after the snapshot stay if the log holds
        // its last entry; otherwise the whole log goes.
        let term_before = if meta.index == base.0 {
            Some(base.1)
        } else {
            meta.index.checked_sub(base.0 + 1).and_then(|i| entries.get(usize::try_from(i).ok()?)).map(|e| e.term)
        };
        let holds = meta.index >= base.0 && term_before == Some(meta.term);
        let kept = if holds { &entries[(meta.index - base.0) as usize..] } else { &[] };
        assert_eq!(self.node.log().base(), (meta.index, meta.term), "the log does not follow the installed snapshot");
        assert!(
            self.node.log().entries() == kept,
            "installing {snapshot:?} kept {} entries; it must keep {} (the log {} its last entry)",
            self.node.log().entries().len(),
            kept.len(),
            if holds { "holds" } else { "does not hold" }
        );
        assert_eq!(batch.compact, Some(meta), "an install's batch compacts the log up to it");
        let write = batch.log.as_ref().expect("an install's batch rewrites the log after it");
        assert!(
            write.from == meta.index + 1 && write.entries == kept,
            "an install's log write is not the kept entries"
        );
        assert_eq!(self.node.snapshot(), Some(&snapshot), "the node does not hold the snapshot it installed");
        self.check_ready(commit, ready);
    }

    /// A power cut: whatever was not written is lost; the node restarts
    /// with a new seed from exactly what is on the disk.
    fn restart(&mut self, seed: u64) {
        self.disk.check_loadable("at a restart");
        self.config.seed = seed;
        self.node = RaftNode::restart(self.config.clone(), self.disk.0.clone());
        let (base, log) = self.disk.restarted_log();
        let hard = match &self.disk.snapshot {
            Some(s) if s.meta.term > self.disk.hard.term => HardState { term: s.meta.term, voted_for: None },
            _ => self.disk.hard,
        };
        assert_eq!(hard, self.node.hard_state(), "restarted with another term or vote");
        assert_eq!(self.node.snapshot(), self.disk.snapshot.as_ref(), "restarted with another snapshot");
        assert_eq!(self.node.log().base(), (base.index, base.term), "restarted with another log base");
        assert!(log == self.node.log().entries(), "restarted with another log");
        let covered = self.disk.covered();
        assert_eq!(self.node.commit_index(), covered, "restarted with a commit index not at the snapshot's");
        assert_eq!(self.node.handed_out(), covered, "restarted with an applied index not at the snapshot's");
        self.app = App { applied: covered, term: self.disk.snapshot.as_ref().map_or(0, |s| s.meta.term) };
        if covered > 0 {
            self.reached.restarts_with_snapshot += 1;
        }
        if covered > self.disk.last_index() {
            self.reached.restarts_past_the_log += 1;
        }
        self.reported = self.disk.clone();
        self.reported_last = self.node.log().last_index();
        self.lengths.clear();
        self.unwritten.clear();
        (self.written, self.handed_out) = (0, 0);
        (self.job, self.late_snapshot, self.offered, self.installing) = (None, None, None, None);
    }

    /// Steps the node, queues its batch for the disk, and checks the outputs.
    fn step(&mut self, input: Input<Command>) {
        let proposal = match &input {
            Input::Propose(command) => Some(command.clone()),
            _ => None,
        };
        let commit = self.node.commit_index();
        let ready = self.node.step(input);
        if let (Some(Ok(index)), Some(command)) = (ready.proposed, proposal) {
            let expected = Entry { term: self.node.term(), payload: Payload::Command(command) };
            assert_eq!(self.node.log().get(index), Some(&expected), "proposal not at its index {index}");
        }
        self.check_ready(commit, ready);
    }

    /// Checks one step's outputs (`commit` is the commit index before it).
    fn check_ready(&mut self, commit: LogIndex, ready: Ready<Command>) {
        let new_commit = self.node.commit_index();
        assert!(new_commit >= commit, "the commit index went back from {commit} to {new_commit}");
        if let Some(batch) = ready.persist {
            assert_eq!(batch.number, self.handed_out + 1, "batches numbered 1, 2, 3, ...");
            self.handed_out = batch.number;
            if let Some(w) = &batch.log {
                self.lengths.push_back((batch.number, w.from - 1 + w.entries.len() as LogIndex));
            }
            self.check_compaction(&batch);
            if let Some(s) = &batch.snapshot {
                self.installing = Some((batch.number, s.clone()));
                self.reached.installed += 1;
            }
            self.unwritten.push_back(batch);
        }
        self.check_stable();
        if let Some(snapshot) = ready.install {
            let (batch, installing) = self.installing.take().expect("a snapshot loaded that was never installed");
            assert_eq!(snapshot, installing, "the snapshot loaded is not the one installed");
            let durable = self.node.batches().0;
            assert!(batch <= durable, "an install loaded before its batch {batch} was reported (only {durable} were)");
            assert!(self.reported.covered() >= snapshot.meta.index, "an install loaded that the disk does not hold");
            assert!(
                snapshot.meta.index > self.app.applied,
                "the applied index went back: {snapshot:?} loaded after applying up to {}",
                self.app.applied
            );
            self.app = App { applied: snapshot.meta.index, term: snapshot.meta.term };
            self.reached.loaded += 1;
        }
        for (index, entry) in &ready.committed {
            assert_eq!(*index, self.app.applied + 1, "committed entries out of order");
            assert!(*index <= new_commit, "entry {index} handed out beyond the commit index {new_commit}");
            // (Not necessarily the reported one: committed means durable on
            // a quorum, and the node's own write may still be on its way.)
            assert_eq!(self.node.log().get(*index), Some(entry), "committed entry {index} is not the log's");
            self.app = App { applied: *index, term: entry.term };
        }
        assert_eq!(self.app.applied, self.node.handed_out(), "the node's applied index is not what it handed out");
        for (_, read) in &ready.reads {
            if let Ok(index) = read {
                assert!(*index <= new_commit, "read index {index} beyond the commit index {new_commit}");
            }
        }
        if let Some(snapshot) = ready.received_snapshot {
            let (meta, total) = (snapshot.meta, snapshot.data.len() as u64);
            assert!(meta.index > new_commit, "handed out {snapshot:?} for checking, not newer than the commit index");
            assert!(total <= self.config.max_snapshot_bytes, "received {snapshot:?}, larger than the bound");
            assert!(
                *snapshot.data == *snapshot_bytes(meta, total, 0, total),
                "received {snapshot:?}, whose bytes are not the ones sent: chunks of other snapshots or offsets"
            );
            self.offered = Some(snapshot);
            self.reached.received += 1;
        }
        for message in ready.messages {
            assert_eq!(message.from, self.config.id, "message not from the node: {message:?}");
            // (A reply may go to a sender outside the configuration.)
            assert!(message.to != message.from && message.to <= MAX_NODE_ID, "bad recipient: {message:?}");
            self.check_durable_before_sent(&message);
            self.check_chunk(&message);
            if self.sent.len() == SENT_KEPT {
                self.sent.pop_front();
            }
            self.sent.push_back(message);
        }
    }

    /// A compaction moves the base forward, only over entries the
    /// application applied (or an installed snapshot covers), and never
    /// past the snapshot the disk holds when the batch is written.
    fn check_compaction(&mut self, batch: &Persist<Command>) {
        let Some(to) = batch.compact else { return };
        let installed = batch.snapshot.as_ref().map_or(0, |s| s.meta.index);
        if installed == 0 {
            self.reached.compacted += 1;
        }
        assert!(
            to.index <= self.app.applied.max(installed),
            "compacted up to {} but applied only up to {}",
            to.index,
            self.app.applied
        );
        let on_disk = self.unwritten.iter().filter_map(|p| p.snapshot.as_ref()).map(|s| s.meta.index).max();
        let covered = self.disk.covered().max(on_disk.unwrap_or(0)).max(installed);
        assert!(
            to.index <= covered,
            "compacted up to {} but the disk holds a snapshot only up to {covered} when the batch is written",
            to.index
        );
    }

    /// The node's stable prefix is the reported durable log, where both
    /// hold entries.
    fn check_stable(&self) {
        let stable = self.node.stable_index();
        let log = self.node.log();
        let from = log.base().0.max(self.reported.base.index) + 1;
        if from > stable {
            return;
        }
        let node = &log.entries()[(from - log.first_index()) as usize..=(stable - log.first_index()) as usize];
        let first = (from - self.reported.base.index - 1) as usize;
        let disk = self.reported.log.get(first..=(stable - self.reported.base.index - 1) as usize);
        assert!(disk == Some(node), "the node's stable prefix (up to {stable}) is not the reported durable log");
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
            Message::AppendReply { result: Ok(matched), .. }
            | Message::SnapshotReply { matched: Some(matched), .. } => assert!(
                *matched <= self.reported_last,
                "acknowledged {matched} entries, but no reported batch left more than {} in the log",
                self.reported_last
            ),
            _ => {}
        }
    }

    /// A snapshot chunk the node sends is a piece of a snapshot it holds
    /// (or held), within the chunk size, and carries that snapshot's bytes.
    fn check_chunk(&mut self, envelope: &Envelope<Command>) {
        let Message::Snapshot { meta, total, offset, data, .. } = &envelope.message else { return };
        self.reached.chunks_sent += 1;
        let held = self.node.snapshot().map_or(0, |s| s.meta.index);
        assert!(meta.index <= held, "sent a chunk of a snapshot up to {} while holding one up to {held}", meta.index);
        let len = data.len() as u64;
        assert!(
            len > 0 && len <= self.config.snapshot_chunk_bytes as u64 && offset + len <= *total,
            "a chunk of {len} bytes at {offset} of {total} (chunks are at most {})",
            self.config.snapshot_chunk_bytes
        );
        assert!(
            *data == snapshot_bytes(*meta, *total, *offset, offset + len),
            "a chunk that is not its snapshot's bytes"
        );
    }

    /// The next chunk of one of the fuzzer's snapshots (a new one a
    /// quarter of the time): usually in order and within its size,
    /// sometimes at another offset, past the declared size, or empty.
    fn chunk(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<Envelope<Command>> {
        let fresh = self.sending.is_empty() || u.ratio(1, 4)?;
        let at = if fresh {
            if self.sending.len() == 2 {
                self.sending.remove(0);
            }
            let sending = self.new_sending(u)?;
            self.sending.push(sending);
            self.sending.len() - 1
        } else {
            u.choose_index(self.sending.len())?
        };
        let Sending { from, term, meta, total, next } = self.sending[at];
        let offset = match u.int_in_range(0..=9u8)? {
            0..=6 => next,
            7 => 0,
            8 => {
                if u.arbitrary()? {
                    next.saturating_sub(1)
                } else {
                    next.saturating_add(1)
                }
            }
            _ => u.int_in_range(0..=total.saturating_add(2))?,
        };
        let remaining = total.saturating_sub(offset);
        let len = match u.int_in_range(0..=7u8)? {
            0..=4 => u.int_in_range(1..=remaining.clamp(1, 2 * self.config.snapshot_chunk_bytes as u64))?,
            5 => remaining,                   // the rest at once, whatever the chunk size
            6 => remaining.saturating_add(1), // past the declared size
            _ => 0,
        }
        .min(CHUNK_MAX);
        let data = snapshot_bytes(meta, total, offset, offset.saturating_add(len));
        if offset == next {
            self.sending[at].next = next.saturating_add(data.len() as u64);
        }
        let to = if u.ratio(1, 32)? { u.int_in_range(0..=self.config.members)? } else { self.config.id };
        let membership = Membership::initial(self.config.members);
        Ok(Envelope { from, to, message: Message::Snapshot { term, meta, membership, total, offset, data } })
    }

    /// A snapshot for the fuzzer to send: usually from the leader the node
    /// knows, in a term near its own, covering more than it committed and
    /// agreeing with its log at its last entry; sometimes older than the
    /// commit index, past the log, disagreeing, or larger than the bound.
    fn new_sending(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<Sending> {
        let members = self.config.members;
        let from = match self.node.leader() {
            Some(leader) if u.ratio(3, 4)? => leader,
            _ => u.int_in_range(0..=members - 1)?,
        };
        let term = self.term(u)?;
        let (commit, last) = (self.node.commit_index(), self.node.log().last_index());
        let index = match u.int_in_range(0..=9u8)? {
            0..=3 => u.int_in_range(commit.saturating_add(1)..=last.max(commit).saturating_add(3))?,
            4 => last,
            5 => commit,
            6 => u.int_in_range(0..=commit)?,
            7 => self.node.log().base().0,
            8 => last.saturating_add(u.int_in_range(1..=8)?),
            _ => u.arbitrary()?,
        };
        let at_index = self.node.log().term_at(index);
        let meta_term = match u.int_in_range(0..=5u8)? {
            0..=2 => at_index.unwrap_or(term), // agrees with the log: what follows stays
            3 => at_index.map_or(term, |t| t.saturating_add(1)).min(term), // disagrees, if it can
            4 => term,
            _ => self.term(u)?,
        };
        let max = self.config.max_snapshot_bytes;
        let total = match u.int_in_range(0..=7u8)? {
            0..=5 => u.int_in_range(1..=max)?,
            6 => max + u.int_in_range(1..=4)?, // past the bound
            _ => u.arbitrary()?,
        };
        Ok(Sending { from, term, meta: SnapshotMeta { index, term: meta_term }, total, next: 0 })
    }

    /// A snapshot reply the node (as leader) did not ask for, or a snapshot
    /// chunk with arbitrary fields.
    fn forged_snapshot_message(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<Envelope<Command>> {
        let from = u.int_in_range(0..=self.config.members - 1)?;
        let term = self.term(u)?;
        let message = if u.arbitrary()? {
            let (index, total) = self.node.snapshot().map_or((0, 0), |s| (s.meta.index, s.data.len() as u64));
            let index = if u.ratio(3, 4)? { index } else { self.index(u)? };
            let matched = if u.arbitrary()? { Some(self.index(u)?) } else { None };
            Message::SnapshotReply { term, index, received: u.int_in_range(0..=total.saturating_add(1))?, matched }
        } else {
            let meta = SnapshotMeta { index: self.index(u)?, term: self.term(u)? };
            let len = u.int_in_range(0..=16)?;
            let data = u.bytes(len)?.to_vec();
            let (voters, learners) = (NodeSet::from_bits(u.arbitrary()?), NodeSet::from_bits(u.arbitrary()?));
            let membership = Membership { voters, learners };
            Message::Snapshot { term, meta, membership, total: u.arbitrary()?, offset: u.arbitrary()?, data }
        };
        Ok(Envelope { from, to: self.config.id, message })
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
            2 => {
                let (last_log_index, last_log_term) = (self.index(u)?, self.term(u)?);
                Message::Vote { term, last_log_index, last_log_term, transfer: u.arbitrary()? }
            }
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
            // A chunk arrived (or, without `yes`, was lost); after the last
            // one the follower may say its log now matches.
            Message::Snapshot { term, meta, total, offset, data, .. } => {
                let end = offset + data.len() as u64;
                let received = if yes { end } else { u.int_in_range(0..=*offset)? };
                let matched = (yes && end == *total && u.ratio(3, 4)?).then_some(meta.index);
                Message::SnapshotReply { term: term.saturating_add(bump), index: meta.index, received, matched }
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
        let payload = match u.int_in_range(0..=11u8)? {
            0..=2 => Payload::Noop,
            // A configuration of the cluster's ids, sometimes with a
            // learner, sometimes malformed (no voter, or one twice).
            3 => {
                let (voters, learners) = (u.int_in_range(0..=7u64)?, u.int_in_range(0..=24u64)?);
                Payload::Config(Membership {
                    voters: NodeSet::from_bits(voters),
                    learners: NodeSet::from_bits(learners),
                })
            }
            _ => Payload::Command(command(u)?),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Node 0 of 3, which node 1 leads in the scenarios below: 4-byte
    /// chunks, snapshots of at most 32 bytes, no trailing entries.
    fn harness(bugs: InjectedBugs) -> Harness {
        let mut config = Config::new(0, 3, 7);
        config.election_ticks = 10;
        config.heartbeat_ticks = 2;
        config.snapshot_chunk_bytes = 4;
        config.max_snapshot_bytes = 32;
        config.snapshot_trailing_entries = 0;
        config.bugs = bugs;
        Harness::with_config(config)
    }

    fn from_leader(h: &mut Harness, message: Message<Command>) {
        h.step(Input::Message(Envelope { from: 1, to: 0, message }));
    }

    /// An Append of no-ops of the given terms.
    fn append(h: &mut Harness, term: Term, prev: (LogIndex, Term), terms: &[Term], commit: LogIndex) {
        let entries = terms.iter().map(|&term| Entry { term, payload: Payload::Noop }).collect();
        let (prev_index, prev_term) = prev;
        from_leader(h, Message::Append { term, prev_index, prev_term, entries, commit, read_round: 0 });
    }

    fn heartbeat(h: &mut Harness, term: Term, commit: LogIndex) {
        from_leader(h, Message::Heartbeat { term, commit, read_round: 0 });
    }

    /// Bytes `from..to` of the snapshot `meta` of `total` bytes, as a chunk.
    fn chunk(h: &mut Harness, term: Term, meta: SnapshotMeta, total: u64, from: u64, to: u64) {
        let data = snapshot_bytes(meta, total, from, to);
        let membership = Membership::initial(3);
        from_leader(h, Message::Snapshot { term, meta, membership, total, offset: from, data });
    }

    /// The whole snapshot, in order, in 4-byte chunks.
    fn send_snapshot(h: &mut Harness, term: Term, meta: SnapshotMeta, total: u64) {
        for from in (0..total).step_by(4) {
            chunk(h, term, meta, total, from, (from + 4).min(total));
        }
    }

    /// Writes and reports every pending batch.
    fn durable(h: &mut Harness) {
        h.write(usize::MAX);
        h.report();
    }

    /// Feeds back the snapshot the node handed out for checking.
    fn install_offered(h: &mut Harness) {
        let offered = h.offered.clone().expect("a snapshot received whole");
        h.install(offered);
    }

    fn meta(index: LogIndex, term: Term) -> SnapshotMeta {
        SnapshotMeta { index, term }
    }

    /// Runs `scenario` on a fresh harness with `bug` on (or none) and
    /// returns the message of the check that failed, if one did.
    fn failure(bug: Option<&str>, scenario: fn(&mut Harness)) -> Option<String> {
        let bugs = bug.map_or(InjectedBugs::default(), |b| InjectedBugs::only(b).expect("a known bug"));
        let outcome = std::panic::catch_unwind(|| scenario(&mut harness(bugs)));
        outcome.err().map(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    }

    /// `scenario` passes every check without bugs, and with `bug` on a check
    /// fails saying `expected`.
    fn assert_caught(bug: &str, scenario: fn(&mut Harness), expected: &str) {
        if let Some(why) = failure(None, scenario) {
            panic!("without bugs the scenario fails: {why}");
        }
        let why = failure(Some(bug), scenario).unwrap_or_else(|| panic!("{bug} is not caught"));
        assert!(why.contains(expected), "{bug} caught, but as: {why}");
    }

    /// Three entries of term 1, committed, durable and applied.
    fn three_applied(h: &mut Harness) {
        append(h, 1, (0, 0), &[1, 1, 1], 0);
        durable(h);
        heartbeat(h, 1, 3);
        assert_eq!((h.node.commit_index(), h.app.applied), (3, 3));
    }

    /// (h) A snapshot not newer than the commit index must be answered at
    /// once, not handed out for checking.
    fn older_snapshot_received(h: &mut Harness) {
        three_applied(h);
        send_snapshot(h, 1, meta(2, 1), 8);
        assert!(h.offered.is_none(), "an older snapshot is not handed out");
        let answered = h.sent.iter().any(|e| matches!(e.message, Message::SnapshotReply { matched: Some(3), .. }));
        assert!(answered, "answered with the commit index");
    }

    #[test]
    fn install_older_snapshot_is_caught_when_received() {
        assert_caught("install_older_snapshot", older_snapshot_received, "not newer than the commit index");
    }

    /// (h) A snapshot newer than the commit index when received, older once
    /// it is fed back (the commit index moved meanwhile): it must be refused.
    fn older_snapshot_installed(h: &mut Harness) {
        append(h, 1, (0, 0), &[1, 1, 1], 1);
        durable(h);
        send_snapshot(h, 1, meta(3, 1), 8);
        heartbeat(h, 1, 3);
        install_offered(h);
        assert!(h.installing.is_none(), "refused");
        assert_eq!((h.node.log().base(), h.node.log().last_index()), ((0, 0), 3));
    }

    #[test]
    fn install_older_snapshot_is_caught_when_installed() {
        assert_caught("install_older_snapshot", older_snapshot_installed, "not newer than the commit index 3");
    }

    /// (i) The log holds another term at the snapshot's last index: every
    /// entry goes, though the ones after it are of a newer term.
    fn conflicting_install(h: &mut Harness) {
        append(h, 3, (0, 0), &[1, 1, 3, 3], 0);
        durable(h);
        send_snapshot(h, 3, meta(2, 2), 8);
        install_offered(h);
        assert_eq!((h.node.log().base(), h.node.log().last_index()), ((2, 2), 2));
        durable(h);
        assert_eq!(h.app, App { applied: 2, term: 2 }, "the application loaded the snapshot");
    }

    #[test]
    fn install_keeps_conflicting_entries_is_caught() {
        assert_caught("install_keeps_conflicting_entries", conflicting_install, "does not hold its last entry");
    }

    /// The log holds the snapshot's last entry: the entries after it stay.
    #[test]
    fn matching_install_keeps_the_entries_after_it() {
        let mut h = harness(InjectedBugs::default());
        append(&mut h, 3, (0, 0), &[1, 1, 3, 3], 0);
        durable(&mut h);
        send_snapshot(&mut h, 3, meta(2, 1), 8);
        install_offered(&mut h);
        assert_eq!((h.node.log().base(), h.node.log().last_index()), ((2, 1), 4));
        durable(&mut h);
        assert_eq!((h.app.applied, h.reported.base, h.reported.log.len()), (2, meta(2, 1), 2));
    }

    /// (j) A snapshot job taken at 3 is reported once entries up to 5 are
    /// committed (and applied, though not yet durable here): only up to 3
    /// may go.
    fn compaction_with_unapplied_entries(h: &mut Harness) {
        three_applied(h);
        h.snapshot_job();
        append(h, 1, (3, 1), &[1, 1], 5);
        assert_eq!((h.node.commit_index(), h.app.applied), (5, 5));
        h.snapshot_job();
        assert_eq!(h.node.log().base(), (3, 1));
        durable(h);
        assert_eq!((h.app.applied, h.reported.base.index, h.reported.log.len()), (5, 3, 2));
    }

    #[test]
    fn compact_unapplied_is_caught() {
        // By the node's own invariants, in the step that compacts.
        assert_caught("compact_unapplied", compaction_with_unapplied_entries, "a compacted log without a snapshot");
    }

    /// (k) A snapshot taken and reported: the node compacts, the disk
    /// follows, and a restart comes back from the snapshot.
    fn snapshot_then_restart(h: &mut Harness) {
        three_applied(h);
        h.snapshot_job();
        h.snapshot_job();
        assert_eq!(h.node.log().base(), (3, 1));
        durable(h);
        h.restart(1);
        assert_eq!((h.node.log().base(), h.node.commit_index(), h.app.applied), ((3, 1), 3, 3));
    }

    #[test]
    fn trim_before_snapshot_durable_is_caught() {
        assert_caught("trim_before_snapshot_durable", snapshot_then_restart, "the disk holds a snapshot only up to 0");
    }

    /// The disk check behind the one above: a disk whose log starts past
    /// its snapshot cannot be restarted from.
    #[test]
    #[should_panic(expected = "past what its snapshot covers (0): a gap")]
    fn a_disk_compacted_past_its_snapshot_is_refused() {
        let mut disk = Disk::default();
        let entries = vec![Entry { term: 1, payload: Payload::Noop }; 3];
        let write = crate::raft::LogWrite { from: 1, entries };
        let batch = |number, compact, log| Persist { number, snapshot: None, compact, log, hard_state: None };
        disk.write(&batch(1, None, Some(write)));
        disk.write(&batch(2, Some(meta(2, 1)), None));
    }

    /// A crash loses an install whose batch was not written, and keeps one
    /// written but not reported; either way the node restarts from exactly
    /// the disk (the restart's own checks).
    #[test]
    fn restarts_come_back_from_what_was_written() {
        let mut h = harness(InjectedBugs::default());
        append(&mut h, 1, (0, 0), &[1, 1], 0);
        durable(&mut h);
        send_snapshot(&mut h, 1, meta(5, 1), 8);
        install_offered(&mut h);
        assert_eq!(h.node.commit_index(), 5);
        h.restart(2);
        assert_eq!((h.node.snapshot(), h.node.log().last_index(), h.node.commit_index()), (None, 2, 0));
        send_snapshot(&mut h, 1, meta(5, 1), 8);
        install_offered(&mut h);
        h.write(usize::MAX);
        h.restart(3);
        assert_eq!((h.node.log().base(), h.node.log().last_index(), h.app.applied), ((5, 1), 5, 5));
        assert_eq!(h.reached.restarts_with_snapshot, 1);
    }

    /// Chunks of two snapshots interleaved, at wrong offsets, past their
    /// size or past the bound: only the one sent whole, in order, comes out,
    /// with exactly its bytes (checked in `check_ready`).
    #[test]
    fn interleaved_and_wrong_chunks_assemble_nothing_else() {
        let mut h = harness(InjectedBugs::default());
        append(&mut h, 1, (0, 0), &[1], 0);
        durable(&mut h);
        let (a, b) = (meta(4, 1), meta(6, 1));
        chunk(&mut h, 1, a, 12, 0, 4);
        chunk(&mut h, 1, b, 10, 0, 4); // b replaces a
        chunk(&mut h, 1, a, 12, 4, 8); // not the one being received
        chunk(&mut h, 1, b, 10, 6, 10); // past what is held
        chunk(&mut h, 1, b, 10, 8, 12); // past its declared size
        chunk(&mut h, 1, b, 33, 0, 4); // past the bound of 32 bytes
        assert!(h.offered.is_none());
        chunk(&mut h, 1, b, 10, 4, 8);
        chunk(&mut h, 1, b, 10, 4, 8); // a duplicate
        chunk(&mut h, 1, b, 10, 8, 10);
        assert_eq!(h.offered.as_ref().map(|s| (s.meta, s.data.len())), Some((b, 10)));
        assert_eq!(h.reached.received, 1);
    }

    /// A leader node compacts after a snapshot and sends it, in chunks
    /// checked against its bytes, to a follower that needs compacted
    /// entries; the follower's last reply returns it to replication.
    #[test]
    fn leader_sends_its_snapshot_in_chunks() {
        let mut h = harness(InjectedBugs::default());
        let to_leader = |h: &mut Harness, from, message| h.step(Input::Message(Envelope { from, to: 0, message }));
        while h.node.votes().0.is_empty() {
            h.step(Input::Tick);
        }
        to_leader(&mut h, 1, Message::PreVoteReply { term: 1, granted: true });
        durable(&mut h);
        to_leader(&mut h, 1, Message::VoteReply { term: 1, granted: true });
        assert!(h.node.is_leader());
        for seq in 1..=2 {
            h.step(Input::Propose(Command { client: 1, seq, op: Op::Get { key: "a".into() } }));
        }
        durable(&mut h);
        to_leader(&mut h, 1, Message::AppendReply { term: 1, result: Ok(3), read_round: 0 });
        assert_eq!((h.node.commit_index(), h.app.applied), (3, 3));
        h.snapshot_job();
        h.snapshot_job();
        durable(&mut h);
        assert_eq!(h.node.log().base(), (3, 1));
        let reject = Err(RejectHint { index: 0, term: 0 });
        to_leader(&mut h, 2, Message::AppendReply { term: 1, result: reject, read_round: 0 });
        let total = h.node.snapshot().expect("taken").data.len() as u64;
        let chunks = h.reached.chunks_sent;
        assert!(chunks > 0 && chunks <= h.config.snapshot_chunks_in_flight as u64, "{chunks} chunks in flight");
        for received in (4..total).step_by(4) {
            to_leader(&mut h, 2, Message::SnapshotReply { term: 1, index: 3, received, matched: None });
        }
        to_leader(&mut h, 2, Message::SnapshotReply { term: 1, index: 3, received: total, matched: Some(3) });
        assert_eq!(h.reached.chunks_sent, total.div_ceil(4), "every chunk sent once");
        assert_eq!(h.node.progress()[&2].match_index, 3);
    }

    /// Found by this target (`fuzz/corpus/node/
    /// install-snapshot-of-a-future-term`): a snapshot whose last entry is
    /// of a term newer than its message's was received and installed, and
    /// the node's own invariant ("an entry of a future term") panicked. A
    /// correct leader never sends one, but a forged or corrupt message must
    /// not bring a node down: `RaftNode::on_snapshot` ignores it, as
    /// `on_append` ignores entries newer than their message.
    #[test]
    fn a_snapshot_of_a_future_term_is_not_installed() {
        let mut h = harness(InjectedBugs::default());
        append(&mut h, 1, (0, 0), &[1], 0);
        durable(&mut h);
        send_snapshot(&mut h, 1, meta(3, 5), 8);
        if h.offered.is_some() {
            install_offered(&mut h);
        }
        assert!(h.node.log().last_term() <= h.node.term(), "the log ends in an entry of a future term");
    }

    /// Found by this target (`fuzz/corpus/node/snapshot-at-index-u64-max`):
    /// a snapshot claiming to cover index
    /// `u64::MAX` was installed, and the next index overflowed. Ignored
    /// now, like any snapshot past `INDEX_MAX`.
    #[test]
    fn a_snapshot_past_index_max_is_not_installed() {
        let mut h = harness(InjectedBugs::default());
        append(&mut h, 1, (0, 0), &[1], 0);
        durable(&mut h);
        send_snapshot(&mut h, 1, meta(u64::MAX, 1), 8);
        assert!(h.offered.is_none(), "a snapshot past INDEX_MAX was received whole");
        assert_eq!(h.node.log().last_index(), 1);
    }

    /// Chunks from a stale term are answered with the node's term; a future
    /// term makes the sender the leader.
    #[test]
    fn chunks_from_stale_and_future_terms() {
        let mut h = harness(InjectedBugs::default());
        append(&mut h, 2, (0, 0), &[1, 2], 0);
        durable(&mut h);
        send_snapshot(&mut h, 1, meta(4, 1), 8);
        assert!(h.offered.is_none(), "a stale leader's snapshot is not taken");
        send_snapshot(&mut h, 3, meta(4, 3), 8);
        durable(&mut h);
        assert_eq!((h.node.term(), h.node.leader()), (3, Some(1)));
        install_offered(&mut h);
        assert_eq!(h.node.log().base(), (4, 3));
    }
}
