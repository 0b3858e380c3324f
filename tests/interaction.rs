//! Interaction scripts for the pure Raft node, in the style of etcd raft's
//! `testdata/*.txt`: each file in `tests/testdata/raft/` drives a few
//! `RaftNode`s step by step — ticks, deliveries, drops, proposals, reads,
//! the disk catching up, crashes and restarts — and shows what each node
//! does in return. These scripts are where a reader learns what the node
//! does; `tests/testdata/README.md` explains the notation.
//!
//! `cargo test --test interaction` checks every script; `REWRITE=1 cargo
//! test --test interaction` rewrites the expected output (read the diff
//! before you commit it); `RUN=name.txt` runs one file.
//!
//! The harness plays the network (messages wait in flight until delivered
//! or dropped), each node's disk (batches wait until `persist`, which
//! writes them and reports them durable; the disk keeps the hard state, the
//! latest snapshot, the log's compacted base and the entries after it, as
//! the simulator's `MemStorage` does) and each node's application (a state
//! machine that is the list of commands applied, which `snapshot` saves and
//! which loads the snapshots the node installs). Nothing happens unless a
//! line of the script asks for it.

use raftkv::raft::{
    BatchNumber, Config, Entry, Envelope, HardState, InjectedBugs, Input, LogIndex, Membership, MembershipChange,
    Message, NodeId, NodeSet, Payload, Persist, RaftNode, Ready, RejectHint, Role, Snapshot, SnapshotMeta,
};
use raftkv::raft::{DurableState, Mode};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;

#[test]
fn interaction_scripts() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/raft");
    let mut files = 0;
    datadriven::walk(dir, |file| {
        files += 1;
        let mut env = Env::default();
        file.run(|case| env.run(&case.directive, &case.args, &case.input));
    });
    if std::env::var_os("RUN").is_none() {
        assert!(files >= 30, "only {files} interaction scripts");
    }
}

/// A node's durable state, written batch by batch by
/// [`DurableState::write`], as the simulator's disk is.
type Disk = DurableState<String>;

/// `snapshot 4/1 [x,y], log after 2/1 [3/1 x, ...]`, or the log alone.
fn describe(disk: &Disk) -> String {
    let log = log(&disk.log, (disk.base.index, disk.base.term));
    match &disk.snapshot {
        Some(s) => format!("snapshot {}, log {log}", snapshot(s)),
        None => format!("log {log}"),
    }
}

/// A node's application: the commands applied, in order (noops change
/// nothing). A snapshot of it at index `i` is its commands up to `i`,
/// written `[x,y,z]`; loading one replaces it.
#[derive(Clone, Debug, Default)]
struct Machine {
    /// The snapshot it was loaded from covers up to here (0: none).
    loaded: LogIndex,
    applied: LogIndex,
    /// Each command with the index it was applied at (those loaded from a
    /// snapshot at the snapshot's index).
    commands: Vec<(LogIndex, String)>,
}

impl Machine {
    fn apply(&mut self, index: LogIndex, entry: &Entry<String>) {
        assert_eq!(index, self.applied + 1, "entries handed out for applying out of order");
        self.applied = index;
        if let Payload::Command(c) = &entry.payload {
            self.commands.push((index, c.clone()));
        }
    }

    /// The snapshot's bytes at `index` (at or below what is applied, and
    /// not below a snapshot loaded).
    fn encode(&self, index: LogIndex) -> Vec<u8> {
        assert!(index <= self.applied, "a snapshot at {index}: only {} applied", self.applied);
        assert!(index >= self.loaded, "a snapshot at {index}: the machine was loaded at {}", self.loaded);
        let upto: Vec<&str> = self.commands.iter().filter(|(i, _)| *i <= index).map(|(_, c)| c.as_str()).collect();
        format!("[{}]", upto.join(",")).into_bytes()
    }

    /// The machine a snapshot holds, or `None` if its bytes do not load.
    fn decode(s: &Snapshot) -> Option<Machine> {
        let text = std::str::from_utf8(&s.data).ok()?;
        let inner = text.strip_prefix('[')?.strip_suffix(']')?;
        let commands = inner.split(',').filter(|c| !c.is_empty()).map(|c| (s.meta.index, c.to_string())).collect();
        Some(Machine { loaded: s.meta.index, applied: s.meta.index, commands })
    }
}

struct Node {
    raft: RaftNode<String>,
    /// Batches handed out and not written, in order.
    unwritten: VecDeque<Persist<String>>,
    /// The last batch written to the disk (reported or not).
    written: BatchNumber,
    machine: Machine,
    /// Check and install a snapshot received whole at once (as `KvServer`
    /// does), or keep it here until `install-snapshot`.
    hold_received: bool,
    received: Option<Snapshot>,
}

#[derive(Default)]
struct Env {
    configs: Vec<Config>,
    nodes: Vec<Option<Node>>,
    disks: Vec<Disk>,
    /// Messages in flight, oldest first.
    network: VecDeque<Envelope<String>>,
    /// Links that drop everything: `(from, to)`.
    cut: BTreeSet<(NodeId, NodeId)>,
    out: String,
}

type Args = HashMap<String, Vec<String>>;

impl Env {
    fn run(&mut self, directive: &str, args: &Args, input: &str) -> String {
        self.out.clear();
        let ids = ids(args);
        match directive {
            "add-nodes" => self.add_nodes(args),
            "tick" => {
                let n = number(args, "n").unwrap_or(1);
                for id in ids {
                    for _ in 0..n {
                        self.step(id, Input::Tick, "tick");
                    }
                }
            }
            "campaign" => {
                for id in ids {
                    self.campaign(id);
                }
            }
            "progress" => {
                for id in ids {
                    self.progress(id);
                }
            }
            "receive" => {
                // Hands the messages to the node directly, whatever their
                // `to` says (to show what it does with misaddressed ones).
                let id = ids.first().copied().expect("receive ID");
                for line in input.lines().filter(|l| !l.trim().is_empty()) {
                    let envelope = parse_envelope(line).unwrap_or_else(|e| panic!("{line}: {e}"));
                    self.step(id, Input::Message(envelope.clone()), &format!("receives {envelope}"));
                }
            }
            "change" => {
                let (what, target) = ["add-learner", "promote", "remove"]
                    .iter()
                    .find_map(|k| Some((*k, number(args, k)? as NodeId)))
                    .expect("change ID add-learner=N|promote=N|remove=N");
                let change = match what {
                    "add-learner" => MembershipChange::AddLearner(target),
                    "promote" => MembershipChange::Promote(target),
                    _ => MembershipChange::Remove(target),
                };
                for id in ids {
                    self.step(id, Input::ChangeMembership(change), &format!("change {change:?}"));
                }
            }
            "promote-when-caught-up" => {
                let learner = number(args, "learner").expect("promote-when-caught-up ID learner=N") as NodeId;
                for id in ids {
                    let what = format!("promote {learner} once caught up");
                    self.step(id, Input::PromoteWhenCaughtUp(learner), &what);
                }
            }
            "transfer" => {
                let to = number(args, "to").expect("transfer ID to=N") as NodeId;
                for id in ids {
                    self.step(id, Input::TransferLeadership(to), &format!("transfer leadership to {to}"));
                }
            }
            "join" => {
                // A new server: empty disk, no configuration until a leader
                // sends it one (Config::members = 0).
                for id in ids {
                    let mut config = self.configs[0].clone();
                    (config.id, config.members) = (id, 0);
                    let at = usize::from(id);
                    if self.configs.len() <= at {
                        self.configs.resize_with(at + 1, || config.clone());
                        self.disks.resize_with(at + 1, Disk::default);
                        self.nodes.resize_with(at + 1, || None);
                    }
                    self.configs[at] = config;
                    self.start(id, None);
                    self.say(format!("{id} joins with an empty disk and no configuration"));
                }
            }
            "propose" => {
                let data = word(args).expect("propose ID DATA");
                for id in ids {
                    self.step(id, Input::Propose(data.clone()), &format!("propose {data}"));
                }
            }
            "read" => {
                let rid = number(args, "id").unwrap_or(1);
                for id in ids {
                    self.step(id, Input::Read(rid), &format!("read {rid}"));
                }
            }
            "deliver" => self.deliver(args),
            "drop" => {
                let (from, to) = (number(args, "from"), number(args, "to"));
                let mut limit = number(args, "n").unwrap_or(u64::MAX);
                let (dropped, kept) = self.network.drain(..).partition(|e| {
                    let drop = limit > 0 && matches(e, from, to);
                    limit -= u64::from(drop);
                    drop
                });
                self.network = kept;
                for e in dropped {
                    self.say(format!("dropped {e}"));
                }
            }
            "persist" => {
                let upto = number(args, "upto");
                let report = !args.contains_key("no-report");
                for id in ids {
                    self.persist(id, upto, report);
                }
            }
            "report" => {
                for id in ids {
                    let node = self.node(id);
                    let n = number(args, "n").unwrap_or(node.written);
                    self.step(id, Input::Persisted(n), &format!("persisted #{n}"));
                }
            }
            "stabilize" => self.stabilize(if ids.is_empty() { self.all() } else { ids }),
            "crash" => {
                for id in ids {
                    let node = self.nodes[usize::from(id)].take().expect("crash a running node");
                    let lost: Vec<String> = node.unwritten.iter().map(|b| format!("#{}", b.number)).collect();
                    let lost = if lost.is_empty() { "nothing".to_string() } else { lost.join(" ") };
                    self.say(format!("{id} crashed; unwritten batches lost: {lost}"));
                }
            }
            "restart" => {
                for id in ids {
                    assert!(self.nodes[usize::from(id)].is_none(), "restart a crashed node");
                    self.start(id, number(args, "seed"));
                    let disk = &self.disks[usize::from(id)];
                    self.say(format!("{id} restarted from its disk: {}, {}", hard(disk.hard), describe(disk)));
                    let applied = self.node(id).machine.applied;
                    if applied > 0 {
                        self.say(format!("  its state machine loads the snapshot: applied {applied}"));
                    }
                }
            }
            "wipe-disk" => {
                // Before `restart`: the disk is replaced by an empty one.
                for id in ids {
                    self.disks[usize::from(id)] = Disk::default();
                }
            }
            "set-disk" => {
                // Before `restart`: what a crashed node's disk holds.
                for id in ids {
                    let disk = &mut self.disks[usize::from(id)];
                    if let Some(t) = number(args, "term") {
                        disk.hard.term = t;
                    }
                    if let Some(v) = args.get("vote") {
                        disk.hard.voted_for = v.first().and_then(|v| v.parse().ok());
                    }
                    if let Some(terms) = args.get("log") {
                        assert_eq!(disk.base.index, 0, "set-disk log=... on a compacted disk");
                        disk.log = terms
                            .iter()
                            .enumerate()
                            .map(|(i, t)| Entry {
                                term: t.parse().expect("log=(TERM,...)"),
                                payload: Payload::Command(format!("e{}", i + 1)),
                            })
                            .collect();
                    }
                }
            }
            "isolate" => {
                for id in ids {
                    for other in self.all() {
                        if other != id {
                            self.cut.insert((id, other));
                            self.cut.insert((other, id));
                        }
                    }
                }
            }
            "cut" => {
                let (from, to) = (number(args, "from").expect("from"), number(args, "to").expect("to"));
                self.cut.insert((from as NodeId, to as NodeId));
                if !args.contains_key("one-way") {
                    self.cut.insert((to as NodeId, from as NodeId));
                }
            }
            "heal" => self.cut.clear(),
            "send" => {
                for line in input.lines().filter(|l| !l.trim().is_empty()) {
                    let envelope = parse_envelope(line).unwrap_or_else(|e| panic!("{line}: {e}"));
                    self.network.push_back(envelope);
                }
            }
            "status" => {
                for id in if ids.is_empty() { self.all() } else { ids } {
                    self.status(id);
                }
            }
            "log" => {
                for id in ids {
                    let d = &self.disks[usize::from(id)];
                    let disk =
                        if d.snapshot.is_some() { describe(d) } else { log(&d.log, (d.base.index, d.base.term)) };
                    match &self.nodes[usize::from(id)] {
                        Some(n) => {
                            let memory = log(n.raft.log().entries(), n.raft.log().base());
                            self.say(format!("{id} memory: {memory}"));
                            self.say(format!("{id} disk:   {disk}"));
                        }
                        None => self.say(format!("{id} (crashed) disk: {disk}")),
                    }
                }
            }
            "snapshot" => {
                for id in ids {
                    self.take_snapshot(id, number(args, "index"));
                }
            }
            "snapshot-checks" => {
                // `hold`: a snapshot received whole waits for
                // `install-snapshot`; `auto`: checked and installed at once.
                let hold = match word(args).as_deref() {
                    Some("hold") => true,
                    Some("auto") => false,
                    other => panic!("snapshot-checks ID... hold|auto, not {other:?}"),
                };
                for id in ids {
                    self.nodes[usize::from(id)].as_mut().expect("a running node").hold_received = hold;
                }
            }
            "install-snapshot" => {
                for id in ids {
                    let node = self.nodes[usize::from(id)].as_mut().expect("a running node");
                    let snapshot = node.received.take().unwrap_or_else(|| panic!("{id} holds no received snapshot"));
                    self.check_and_install(id, snapshot);
                }
            }
            other => panic!("unknown directive {other}"),
        }
        if self.out.is_empty() {
            "ok\n".to_string()
        } else {
            std::mem::take(&mut self.out)
        }
    }

    fn say(&mut self, line: String) {
        self.out.push_str(&line);
        self.out.push('\n');
    }

    fn all(&self) -> Vec<NodeId> {
        (0..self.nodes.len() as NodeId).collect()
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes[usize::from(id)].as_ref().unwrap_or_else(|| panic!("node {id} is crashed"))
    }

    fn add_nodes(&mut self, args: &Args) {
        let n = ids(args).first().copied().expect("add-nodes N");
        let bugs = args.get("bug").map_or(InjectedBugs::default(), |b| {
            InjectedBugs::only(&b[0]).unwrap_or_else(|| panic!("unknown bug {}", b[0]))
        });
        for id in 0..n {
            let mut config = Config::new(id, n, 0);
            config.election_jitter = false;
            config.election_ticks = number(args, "election").unwrap_or(10) as u32;
            config.heartbeat_ticks = number(args, "heartbeat").unwrap_or(3) as u32;
            config.max_inflight = number(args, "inflight").map_or(config.max_inflight, |v| v as usize);
            config.max_batch_entries = number(args, "batch").map_or(config.max_batch_entries, |v| v as usize);
            config.max_pending_reads = number(args, "reads").map_or(config.max_pending_reads, |v| v as usize);
            config.max_held_messages = number(args, "held").map_or(config.max_held_messages, |v| v as usize);
            config.snapshot_chunk_bytes = number(args, "chunk").map_or(config.snapshot_chunk_bytes, |v| v as usize);
            config.snapshot_chunks_in_flight =
                number(args, "chunks").map_or(config.snapshot_chunks_in_flight, |v| v as usize);
            config.snapshot_trailing_entries = number(args, "trailing").unwrap_or(config.snapshot_trailing_entries);
            config.snapshot_trailing_bytes = number(args, "trailing_bytes").unwrap_or(config.snapshot_trailing_bytes);
            config.lease_ticks = number(args, "lease").map_or(0, |v| v as u32);
            config.bugs = bugs;
            self.configs.push(config);
            self.disks.push(Disk::default());
            self.nodes.push(None);
            self.start(id, None);
        }
        let c = self.configs[0].clone();
        self.say(format!(
            "{n} nodes (0..{n}): election after {} ticks, heartbeat every {}, inflight {}, batch {}",
            c.election_ticks, c.heartbeat_ticks, c.max_inflight, c.max_batch_entries
        ));
        if c.lease_ticks > 0 {
            self.say(format!("lease reads: a lease lasts {} ticks from the round a quorum echoed", c.lease_ticks));
        }
        if ["chunk", "chunks", "trailing", "trailing_bytes"].iter().any(|k| args.contains_key(*k)) {
            self.say(format!(
                "snapshots: sent in chunks of {} bytes, {} in flight; at most {} entries and {} bytes kept behind one",
                c.snapshot_chunk_bytes,
                c.snapshot_chunks_in_flight,
                c.snapshot_trailing_entries,
                c.snapshot_trailing_bytes
            ));
        }
    }

    /// The application takes a snapshot of what it applied (up to `index`,
    /// by default all of it), writes it to its disk and reports it to the
    /// node, which compacts its log.
    fn take_snapshot(&mut self, id: NodeId, index: Option<LogIndex>) {
        let node = self.node(id);
        let index = index.unwrap_or(node.machine.applied);
        assert!(index > 0, "{id} has applied nothing to take a snapshot of");
        let term = node.raft.log().term_at(index).unwrap_or_else(|| panic!("{id} no longer holds entry {index}"));
        let data = node.machine.encode(index);
        let membership = node.raft.membership_at(index).1;
        let snapshot = Snapshot { meta: SnapshotMeta { index, term }, membership, data: data.into() };
        self.disks[usize::from(id)].keep_snapshot(snapshot.clone());
        self.say(format!("{id} took snapshot {} and wrote it to its disk", self::snapshot(&snapshot)));
        self.step(id, Input::SnapshotTaken(snapshot), &format!("snapshot {index}/{term} taken"));
    }

    /// What `KvServer` does with a snapshot received whole: check that it
    /// loads, and if so have the node install it.
    fn check_and_install(&mut self, id: NodeId, snapshot: Snapshot) {
        let what = format!("snapshot {}/{}", snapshot.meta.index, snapshot.meta.term);
        if Machine::decode(&snapshot).is_none() {
            return self.say(format!("{id} refuses {what}: its bytes do not load"));
        }
        self.step(id, Input::InstallSnapshot(snapshot), &format!("install {what} (its bytes load)"));
    }

    fn start(&mut self, id: NodeId, seed: Option<u64>) {
        let mut config = self.configs[usize::from(id)].clone();
        config.seed = seed.unwrap_or(0);
        let disk = &self.disks[usize::from(id)];
        let raft = RaftNode::restart(config, disk.clone());
        let machine = disk.snapshot.as_ref().map_or_else(Machine::default, |s| Machine::decode(s).expect("it loaded"));
        assert_eq!(machine.applied, raft.handed_out(), "the node hands out entries after the snapshot");
        let hold_received = false;
        let node = Node { raft, unwritten: VecDeque::new(), written: 0, machine, hold_received, received: None };
        self.nodes[usize::from(id)] = Some(node);
    }

    /// Ticks `id` until its role changes (a follower's or candidate's
    /// election timeout; a leader's CheckQuorum).
    fn campaign(&mut self, id: NodeId) {
        let limit = 2 * self.configs[usize::from(id)].election_ticks;
        let role = self.node(id).raft.role();
        let mut ticks = 0;
        while self.node(id).raft.role() == role && ticks < limit {
            let quiet = self.step_quietly(id, Input::Tick);
            ticks += 1;
            if let Some(ready) = quiet {
                self.say(format!("> {id} ticks {ticks} times"));
                self.show(id, ready);
            }
        }
    }

    /// Steps `id`, printing what it did (a tick that does nothing prints
    /// nothing; any other input says so).
    fn step(&mut self, id: NodeId, input: Input<String>, what: &str) {
        let tick = input == Input::Tick;
        match self.step_quietly(id, input) {
            Some(ready) => {
                self.say(format!("> {id} {what}"));
                self.show(id, ready);
            }
            None if !tick => self.say(format!("> {id} {what}: no effect")),
            None => {}
        }
    }

    /// Steps `id`; returns what to print (the Ready and any change of role,
    /// term or leader, and newly held messages), or `None` if nothing
    /// happened.
    fn step_quietly(&mut self, id: NodeId, input: Input<String>) -> Option<Shown> {
        let node = self.nodes[usize::from(id)].as_mut().unwrap_or_else(|| panic!("node {id} is crashed"));
        let before = (node.raft.role(), node.raft.term(), node.raft.leader());
        let commit_before = node.raft.commit_index();
        let held_before = node.raft.held_messages();
        let dropped_before = node.raft.held_dropped();
        let ready = node.raft.step(input);
        let dropped = node.raft.held_dropped() - dropped_before;
        let after = (node.raft.role(), node.raft.term(), node.raft.leader());
        let commit = (node.raft.commit_index() > commit_before).then_some(node.raft.commit_index());
        let held_now = node.raft.held_messages();
        // Newly held messages are the last ones (a dropped one was the oldest).
        let new = (held_now + dropped as usize).saturating_sub(held_before);
        let mut held: Vec<String> = node
            .raft
            .held()
            .skip(held_now.saturating_sub(new))
            .map(|(b, e)| format!("hold {e} (until #{b})"))
            .collect();
        if dropped > 0 {
            let bound = self.configs[usize::from(id)].max_held_messages;
            held.push(format!("dropped the {dropped} oldest held message(s): at most {bound} are held"));
        }
        let changed = (before != after).then_some(after);
        let quiet = ready == Ready::default() && changed.is_none() && held.is_empty() && commit.is_none();
        if let Some(batch) = &ready.persist {
            node.unwritten.push_back(batch.clone());
        }
        if let Some(s) = &ready.install {
            node.machine = Machine::decode(s).expect("an installed snapshot was checked when received");
        }
        for (index, entry) in &ready.committed {
            node.machine.apply(*index, entry);
        }
        self.network.extend(ready.messages.iter().cloned());
        (!quiet).then_some(Shown { ready, changed, commit, held })
    }

    fn show(&mut self, id: NodeId, shown: Shown) {
        let Shown { ready, changed, commit, held } = shown;
        if let Some((role, term, leader)) = changed {
            let leader = leader.map_or("none".to_string(), |l| l.to_string());
            self.say(format!("  {id} is {role} in term {term}, leader {leader}"));
        }
        if let Some(commit) = commit {
            self.say(format!("  commit index {commit}"));
        }
        if let Some(b) = &ready.persist {
            let mut line = format!("  persist #{}:", b.number);
            if let Some(s) = &b.snapshot {
                write!(line, " snapshot {}", snapshot(s)).unwrap();
            }
            if let Some(c) = b.compact {
                write!(line, " compact up to {}/{}", c.index, c.term).unwrap();
            }
            if let Some(h) = b.hard_state {
                write!(line, " {}", hard(h)).unwrap();
            }
            if let Some(w) = &b.log {
                write!(line, " log from {}: {}", w.from, entries_from(&w.entries, w.from)).unwrap();
            }
            self.say(line);
        }
        for e in &ready.messages {
            self.say(format!("  send {e}"));
        }
        for h in held {
            self.say(format!("  {h}"));
        }
        if let Some(s) = &ready.install {
            self.say(format!("  apply snapshot {}", snapshot(s)));
        }
        for (index, entry) in &ready.committed {
            self.say(format!("  apply {index}/{} {}", entry.term, entry.payload));
        }
        for (rid, result) in &ready.reads {
            match result {
                Ok(index) => self.say(format!("  read {rid}: serve at applied index {index}")),
                Err(refusal) => self.say(format!("  read {rid}: refused, {refusal:?}")),
            }
        }
        match ready.proposed {
            Some(Ok(index)) => self.say(format!("  proposed at index {index}")),
            Some(Err(refusal)) => self.say(format!("  proposal refused, {refusal:?}")),
            None => {}
        }
        for (learner, result) in &ready.promotions {
            match result {
                Ok(index) => self.say(format!("  {learner} caught up: its promotion proposed at index {index}")),
                Err(refusal) => self.say(format!("  {learner} not promoted, {refusal:?}")),
            }
        }
        if let Some(s) = ready.received_snapshot {
            self.say(format!("  received snapshot {} whole", snapshot(&s)));
            let node = self.nodes[usize::from(id)].as_mut().expect("it just stepped");
            if node.hold_received {
                node.received = Some(s);
            } else {
                self.check_and_install(id, s);
            }
        }
    }

    /// Delivers the messages in flight that match (only those in flight
    /// when it starts: replies stay in flight), each stepping its receiver.
    fn deliver(&mut self, args: &Args) {
        let (from, to) = (number(args, "from"), number(args, "to"));
        let limit = number(args, "n").map_or(usize::MAX, |n| n as usize);
        let (matching, mut kept): (VecDeque<_>, VecDeque<_>) =
            self.network.drain(..).partition(|e| matches(e, from, to));
        let mut delivered = 0;
        for envelope in matching {
            if delivered == limit {
                kept.push_back(envelope);
                continue;
            }
            delivered += 1;
            self.network = std::mem::take(&mut kept);
            self.receive(envelope);
            kept = std::mem::take(&mut self.network);
        }
        self.network = kept;
    }

    fn receive(&mut self, envelope: Envelope<String>) {
        let to = envelope.to;
        if self.cut.contains(&(envelope.from, to)) {
            return self.say(format!("dropped {envelope} (link cut)"));
        }
        if usize::from(to) >= self.nodes.len() || self.nodes[usize::from(to)].is_none() {
            return self.say(format!("dropped {envelope} (no such running node)"));
        }
        let what = format!("receives {envelope}");
        if let Some(ready) = self.step_quietly(to, Input::Message(envelope)) {
            self.say(format!("> {to} {what}"));
            self.show(to, ready);
        } else {
            self.say(format!("> {to} {what}: no effect"));
        }
    }

    /// Writes `id`'s unwritten batches (up to number `upto`) to its disk,
    /// then (if `report`) reports them durable.
    fn persist(&mut self, id: NodeId, upto: Option<u64>, report: bool) {
        let node = self.nodes[usize::from(id)].as_mut().unwrap_or_else(|| panic!("node {id} is crashed"));
        let disk = &mut self.disks[usize::from(id)];
        let mut wrote = Vec::new();
        while node.unwritten.front().is_some_and(|b| upto.is_none_or(|u| b.number <= u)) {
            let batch = node.unwritten.pop_front().expect("checked");
            disk.write(&batch);
            node.written = batch.number;
            wrote.push(format!("#{}", batch.number));
        }
        let (written, durable) = (node.written, node.raft.batches().0);
        if !wrote.is_empty() {
            self.say(format!("{id} wrote {}", wrote.join(" ")));
        }
        if report && written > durable {
            self.step(id, Input::Persisted(written), &format!("persisted #{written}"));
        }
    }

    /// Persists and delivers until nothing is left to do.
    fn stabilize(&mut self, ids: Vec<NodeId>) {
        for _ in 0..1000 {
            let pending: Vec<NodeId> = ids
                .iter()
                .copied()
                .filter(|&id| {
                    self.nodes[usize::from(id)]
                        .as_ref()
                        .is_some_and(|n| !n.unwritten.is_empty() || n.written > n.raft.batches().0)
                })
                .collect();
            for id in &pending {
                self.persist(*id, None, true);
            }
            let in_flight = self.network.iter().any(|e| ids.contains(&e.to) && ids.contains(&e.from));
            if in_flight {
                let (mine, others): (VecDeque<_>, VecDeque<_>) =
                    self.network.drain(..).partition(|e| ids.contains(&e.to) && ids.contains(&e.from));
                self.network = others;
                for envelope in mine {
                    self.receive(envelope);
                }
            }
            if pending.is_empty() && !in_flight {
                return;
            }
        }
        panic!("stabilize did not settle in 1000 rounds");
    }

    fn status(&mut self, id: NodeId) {
        let Some(node) = &self.nodes[usize::from(id)] else {
            return self.say(format!("{id}: crashed"));
        };
        let r = &node.raft;
        let leader = r.leader().map_or("none".to_string(), |l| l.to_string());
        let (durable, last) = r.batches();
        let mut line = format!(
            "{id}: {} term {} vote {} leader {leader} commit {} stable {} batches {durable}/{last} held {}",
            r.role(),
            r.term(),
            r.hard_state().voted_for.map_or("none".to_string(), |v| v.to_string()),
            r.commit_index(),
            r.stable_index(),
            r.held_messages(),
        );
        if r.held_dropped() > 0 {
            write!(line, " (dropped {})", r.held_dropped()).unwrap();
        }
        if matches!(r.role(), Role::PreCandidate | Role::Candidate) {
            let (granted, refused) = r.votes();
            write!(line, " votes granted {granted:?} refused {refused:?}").unwrap();
        }
        if let Some(s) = r.snapshot() {
            write!(line, " snapshot {}/{} applied {}", s.meta.index, s.meta.term, r.handed_out()).unwrap();
        }
        if *r.membership() != Membership::initial(r.config().members) {
            write!(line, " config {}", r.membership()).unwrap();
        }
        write!(line, " log {}", log(r.log().entries(), r.log().base())).unwrap();
        self.say(line);
    }

    /// A leader's view of each follower.
    fn progress(&mut self, id: NodeId) {
        let lines: Vec<String> = self
            .node(id)
            .raft
            .progress()
            .iter()
            .filter(|&(&peer, _)| peer != id)
            .map(|(peer, p)| {
                let mode = match p.mode {
                    Mode::Probe { sent: true } => "probe (waiting for a reply)".to_string(),
                    Mode::Probe { sent: false } => "probe".to_string(),
                    Mode::Replicate => format!("replicate, in flight up to {:?}", p.inflight),
                    Mode::Snapshot { index, sent, acked, in_flight, .. } => {
                        let chunks = if in_flight == 1 { "chunk" } else { "chunks" };
                        format!("snapshot up to {index}: {sent} bytes sent, {acked} acknowledged, {in_flight} {chunks} in flight")
                    }
                };
                format!("{id}'s view of {peer}: match {} next {} {mode}", p.match_index, p.next_index)
            })
            .collect();
        if lines.is_empty() {
            self.say(format!("{id} does not lead"));
        }
        for line in lines {
            self.say(line);
        }
    }
}

struct Shown {
    ready: Ready<String>,
    changed: Option<(Role, u64, Option<NodeId>)>,
    commit: Option<LogIndex>,
    held: Vec<String>,
}

/// The positional numeric arguments (node ids), ascending.
fn ids(args: &Args) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = args.iter().filter(|(_, v)| v.is_empty()).filter_map(|(k, _)| k.parse().ok()).collect();
    ids.sort_unstable();
    ids
}

/// The one positional argument that is not a number (a proposal's data).
fn word(args: &Args) -> Option<String> {
    let mut words = args.iter().filter(|(k, v)| v.is_empty() && k.parse::<u64>().is_err() && *k != "no-report");
    words.next().map(|(k, _)| k.clone())
}

fn number(args: &Args, key: &str) -> Option<u64> {
    args.get(key).map(|v| v[0].parse().unwrap_or_else(|_| panic!("{key}={} is not a number", v[0])))
}

fn matches(e: &Envelope<String>, from: Option<u64>, to: Option<u64>) -> bool {
    from.is_none_or(|f| u64::from(e.from) == f) && to.is_none_or(|t| u64::from(e.to) == t)
}

fn hard(h: HardState) -> String {
    format!("term={} vote={}", h.term, h.voted_for.map_or("none".to_string(), |v| v.to_string()))
}

/// `[1/1 noop, 2/1 x]`: entries from index `from` on.
fn entries_from(entries: &[Entry<String>], from: LogIndex) -> String {
    let items: Vec<String> =
        entries.iter().enumerate().map(|(i, e)| format!("{}/{} {}", from + i as u64, e.term, e.payload)).collect();
    format!("[{}]", items.join(", "))
}

/// A log after its compacted base: `[1/1 noop, 2/1 x]` when nothing is
/// compacted, `after 4/1 [5/1 y]` when entries up to 4 (of term 1) are
/// (the first index held is then 5).
fn log(entries: &[Entry<String>], base: (LogIndex, u64)) -> String {
    let list = entries_from(entries, base.0 + 1);
    if base.0 == 0 {
        list
    } else {
        format!("after {}/{} {list}", base.0, base.1)
    }
}

/// `4/1 [x,y]`: what a snapshot covers and its bytes (the commands applied
/// up to it).
fn snapshot(s: &Snapshot) -> String {
    format!("{}/{} {}", s.meta.index, s.meta.term, String::from_utf8_lossy(&s.data))
}

/// Parses what `Display for Membership` prints: `voters=0.1.2
/// learners=3` (the learners optional).
fn parse_membership(text: &str) -> Result<Membership, String> {
    let mut m = Membership::default();
    for field in text.split_whitespace() {
        let set = |ids: &str| NodeSet::parse(ids).ok_or(format!("bad ids in {field}"));
        match field.split_once('=') {
            Some(("voters", ids)) => m.voters = set(ids)?,
            Some(("learners", ids)) => m.learners = set(ids)?,
            _ => return Err(format!("expected voters=IDS or learners=IDS, not {field}")),
        }
    }
    Ok(m)
}

/// Parses the form `Envelope`'s `Display` prints: `1->0 Append t=2 prev=1/1
/// commit=1 round=0 [2/2 noop, 3/2 x]`.
fn parse_envelope(line: &str) -> Result<Envelope<String>, String> {
    let (head, list) = match line.split_once(" [") {
        Some((head, rest)) => (head, Some(rest.trim_end().strip_suffix(']').ok_or("missing ]")?)),
        None => (line, None),
    };
    let mut words = head.split_whitespace();
    let addresses = words.next().ok_or("empty line")?;
    let (from, to) = addresses.split_once("->").ok_or("expected FROM->TO")?;
    let (from, to) = (from.parse().map_err(|_| "bad FROM")?, to.parse().map_err(|_| "bad TO")?);
    let kind = words.next().ok_or("no message kind")?;
    let mut fields: HashMap<&str, &str> = HashMap::new();
    let mut flags = BTreeSet::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) => {
                fields.insert(k, v);
            }
            None => {
                flags.insert(w);
            }
        }
    }
    let num = |k: &str| -> Result<u64, String> {
        fields.get(k).ok_or(format!("missing {k}="))?.parse().map_err(|_| format!("{k} is not a number"))
    };
    let pair = |k: &str| -> Result<(u64, u64), String> {
        let (i, t) = fields.get(k).ok_or(format!("missing {k}="))?.split_once('/').ok_or(format!("{k}=I/T"))?;
        Ok((i.parse().map_err(|_| "bad index")?, t.parse().map_err(|_| "bad term")?))
    };
    let term = num("t")?;
    let granted = flags.contains("granted");
    let message = match kind {
        "PreVote" => {
            let (last_log_index, last_log_term) = pair("last")?;
            Message::PreVote { term, last_log_index, last_log_term }
        }
        "PreVoteReply" => Message::PreVoteReply { term, granted },
        "Vote" => {
            let (last_log_index, last_log_term) = pair("last")?;
            Message::Vote { term, last_log_index, last_log_term, transfer: flags.contains("transfer") }
        }
        "VoteReply" => Message::VoteReply { term, granted },
        "Append" => {
            let (prev_index, prev_term) = pair("prev")?;
            let mut entries = Vec::new();
            for item in list.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (it, payload) = item.split_once(' ').ok_or("an entry is I/T PAYLOAD")?;
                let (_, t) = it.split_once('/').ok_or("an entry is I/T PAYLOAD")?;
                let payload = match payload.strip_prefix("config ") {
                    _ if payload == "noop" => Payload::Noop,
                    Some(sets) => Payload::Config(parse_membership(sets)?),
                    None => Payload::Command(payload.to_string()),
                };
                entries.push(Entry { term: t.parse().map_err(|_| "bad entry term")?, payload });
            }
            Message::Append { term, prev_index, prev_term, entries, commit: num("commit")?, read_round: num("round")? }
        }
        "AppendReply" => {
            let result = if flags.contains("reject") {
                let (index, term) = pair("hint")?;
                Err(RejectHint { index, term })
            } else {
                Ok(num("ok")?)
            };
            Message::AppendReply { term, result, read_round: num("round")? }
        }
        "Heartbeat" => Message::Heartbeat { term, commit: num("commit")?, read_round: num("round")? },
        "HeartbeatReply" => Message::HeartbeatReply { term, read_round: num("round")? },
        "Snapshot" => {
            let (index, term_of) = pair("covers")?;
            let (start, end) = fields.get("bytes").and_then(|b| b.split_once("..")).ok_or("bytes=START..END")?;
            let (start, end): (u64, u64) =
                (start.parse().map_err(|_| "bad START")?, end.parse().map_err(|_| "bad END")?);
            let total = num("of")?;
            if start > end || end > total {
                return Err("bytes=START..END within of=TOTAL".into());
            }
            // The whole snapshot's bytes, if given (`data=[x,y]`); else filler
            // bytes that do not load.
            let data = match fields.get("data") {
                Some(d) if d.len() as u64 == total => d.as_bytes()[start as usize..end as usize].to_vec(),
                Some(_) => return Err("data= must be of=TOTAL bytes long".into()),
                None => vec![b'?'; (end - start) as usize],
            };
            let sets: Vec<String> =
                ["voters", "learners"].iter().filter_map(|k| Some(format!("{k}={}", fields.get(k)?))).collect();
            let membership = parse_membership(&sets.join(" "))?;
            let meta = SnapshotMeta { index, term: term_of };
            Message::Snapshot { term, meta, membership, total, offset: start, data }
        }
        "TimeoutNow" => Message::TimeoutNow { term },
        "SnapshotReply" => {
            let matched = fields.contains_key("matched").then(|| num("matched")).transpose()?;
            Message::SnapshotReply { term, index: num("index")?, received: num("received")?, matched }
        }
        other => return Err(format!("unknown message {other}")),
    };
    Ok(Envelope { from, to, message })
}

#[test]
fn the_printed_form_parses_back() {
    let samples = [
        "1->0 PreVote t=2 last=3/1",
        "0->1 PreVoteReply t=2 granted",
        "0->2 VoteReply t=2 refused",
        "2->0 Vote t=3 last=4/2 transfer",
        "1->2 TimeoutNow t=2",
        "1->0 Append t=2 prev=1/1 commit=1 round=4 [2/2 noop, 3/2 x]",
        "1->0 Append t=2 prev=1/1 commit=1 round=0 []",
        "0->1 AppendReply t=2 reject hint=1/1 round=0",
        "0->1 AppendReply t=2 ok=3 round=1",
        "1->2 Heartbeat t=2 commit=3 round=1",
        "2->1 HeartbeatReply t=2 round=1",
        "0->2 Snapshot t=1 covers=6/1 voters=0.1.2 bytes=0..4 of=9",
        "0->2 Snapshot t=1 covers=6/1 voters=0.2 learners=1 bytes=8..9 of=9",
        "1->0 Append t=2 prev=1/1 commit=1 round=4 [2/2 config voters=0.1 learners=2, 3/2 x]",
        "0->2 Snapshot t=1 covers=6/1 voters=0.1.2 bytes=8..9 of=9",
        "2->0 SnapshotReply t=1 index=6 received=4",
        "2->0 SnapshotReply t=1 index=6 received=9 matched=6",
    ];
    for s in samples {
        assert_eq!(parse_envelope(s).map(|e| e.to_string()).as_deref(), Ok(s));
    }
}

#[test]
fn a_hand_written_chunk_carries_its_share_of_the_data() {
    let e = parse_envelope("0->2 Snapshot t=1 covers=3/1 voters=0.1.2 bytes=2..5 of=5 data=[a,b]").expect("parses");
    let Message::Snapshot { meta, total, offset, data, .. } = &e.message else { panic!("not a chunk: {e}") };
    assert_eq!((meta.index, meta.term, *total, *offset, data.as_slice()), (3, 1, 5, 2, &b",b]"[..]));
    assert_eq!(e.to_string(), "0->2 Snapshot t=1 covers=3/1 voters=0.1.2 bytes=2..5 of=5");
    let filler = parse_envelope("0->2 Snapshot t=1 covers=3/1 voters=0.1.2 bytes=0..2 of=5").expect("parses");
    assert!(matches!(filler.message, Message::Snapshot { ref data, .. } if data == b"??"));
    assert!(
        parse_envelope("0->2 Snapshot t=1 covers=3/1 voters=0.1.2 bytes=0..2 of=5 data=[a]").is_err(),
        "data of=5 bytes long"
    );
    assert!(parse_envelope("0->2 Snapshot t=1 covers=3/1 bytes=4..6 of=5").is_err(), "a chunk past the end");
}
