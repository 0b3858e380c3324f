//! The MIT 6.824 / 6.5840 KV-Raft lab's test shapes (lab 3A/4A), as
//! simulator runs that end in a verdict.
//!
//! [`Scenario::run`] is the lab's `GenericTest`: clients run for a while per
//! iteration, under an unreliable network, random partitions and crashes of
//! all servers between iterations as the shape asks; then the clients finish,
//! every key is read back, and each client's appends must be present exactly
//! once and in order; finally the whole history must be linearizable.

use super::{Failure, Micros, NetworkConfig, Sim, SimConfig, Stats, Workload};
use crate::kv::{Op, SnapshotPolicy};
use crate::lincheck::{self, Budget, History, OpKind, Operation, Verdict};
use crate::raft::NodeId;
use std::fmt;

/// One shape of the lab's generic test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    pub name: &'static str,
    pub clients: usize,
    pub servers: u8,
    pub unreliable: bool,
    /// Crash and restart every server between iterations.
    pub crash: bool,
    /// Split the servers at random, again and again, while clients run.
    pub partitions: bool,
    /// Clients use random keys (and Puts) instead of appending to their own.
    pub random_keys: bool,
    pub iterations: u32,
    /// How long clients run per iteration, in virtual time.
    pub run_us: Micros,
    /// The lab's `maxraftstate`: with `Some(m)`, servers snapshot once
    /// about `m` bytes of commands were applied since the last snapshot,
    /// keep no trailing entries, and after every iteration each server's
    /// persisted Raft state must be at most 8 × `m` (the lab's 4B bound).
    pub max_raft_state: Option<u64>,
}

impl Scenario {
    pub const fn new(name: &'static str, clients: usize, servers: u8) -> Scenario {
        Scenario {
            name,
            clients,
            servers,
            unreliable: false,
            crash: false,
            partitions: false,
            random_keys: false,
            iterations: 3,
            run_us: 1_500_000,
            max_raft_state: None,
        }
    }
    /// Snapshots with the lab's `maxraftstate` of `bytes` (see the field).
    pub const fn snapshots(mut self, bytes: u64) -> Scenario {
        self.max_raft_state = Some(bytes);
        self
    }
    pub const fn unreliable(mut self) -> Scenario {
        self.unreliable = true;
        self
    }
    pub const fn crash(mut self) -> Scenario {
        self.crash = true;
        self
    }
    pub const fn partitions(mut self) -> Scenario {
        self.partitions = true;
        self
    }
    pub const fn random_keys(mut self) -> Scenario {
        self.random_keys = true;
        self
    }

    /// The simulator configuration this shape runs with for `seed`.
    pub fn sim_config(&self, seed: u64) -> SimConfig {
        let mut config = SimConfig::new(seed, self.servers);
        if self.unreliable {
            config.network = NetworkConfig::unreliable();
        }
        if let Some(bytes) = self.max_raft_state {
            config.snapshots = SnapshotPolicy { every_entries: None, every_bytes: Some(bytes) };
            config.snapshot_trailing_entries = 0;
            // Small chunks, so that an install takes several.
            config.snapshot_chunk_bytes = 256;
        }
        config
    }

    /// Runs the shape with `config` (from [`Scenario::sim_config`], possibly
    /// with bugs switched on).
    pub fn run(&self, config: SimConfig) -> Result<Outcome, ScenarioFailure> {
        let mut sim = Sim::new(config);
        let driven = self.drive(&mut sim);
        conclude(self.name, &sim, driven)
    }

    fn drive(&self, sim: &mut Sim) -> Result<(), String> {
        let workload = if self.random_keys { Workload::random_keys(self.clients as u64) } else { Workload::own_key() };
        for _ in 0..self.clients {
            sim.add_client(workload.clone());
        }
        for iteration in 0..self.iterations {
            if iteration > 0 {
                sim.resume_clients();
            }
            let end = sim.now() + self.run_us;
            if self.partitions {
                partition_until(sim, end).map_err(|f| f.to_string())?;
            } else {
                sim.run_until(end).map_err(|f| f.to_string())?;
            }
            sim.stop_clients();
            sim.heal();
            let deadline = sim.now() + 60_000_000;
            if !sim.run_until_clients_idle(deadline).map_err(|f| f.to_string())? {
                return Err(format!("iteration {iteration}: clients did not finish within 60 s after healing"));
            }
            if self.crash {
                for id in 0..self.servers {
                    sim.crash(id);
                }
                sim.run_for(sim.config().election_us()).map_err(|f| f.to_string())?;
                for id in 0..self.servers {
                    sim.restart(id);
                }
            }
            if !self.random_keys {
                for client in 0..self.clients {
                    let key = Workload::own_key_of(client as u128 + 1);
                    let value = read_back(sim, 0, &key)?;
                    check_appends(sim.operations(), &key, &value)?;
                }
            }
            if let Some(max) = self.max_raft_state {
                check_raft_state(sim, 8 * max).map_err(|e| format!("iteration {iteration}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Turns a finished run into its verdict: the driver's own failure if it
/// had one, else the linearizability of the whole history.
pub(super) fn conclude(
    scenario: &'static str,
    sim: &Sim,
    driven: Result<(), String>,
) -> Result<Outcome, ScenarioFailure> {
    let history = sim.history();
    let fail =
        |reason: String, history: History| ScenarioFailure { scenario, seed: sim.config().seed, reason, history };
    if let Err(reason) = driven {
        return Err(fail(reason, history));
    }
    match lincheck::check(&history, Budget::default()) {
        Verdict::Ok => Ok(Outcome { history, stats: sim.stats().clone(), virtual_us: sim.now() }),
        Verdict::Illegal(v) => {
            Err(fail(format!("history not linearizable on key {:?}; a minimal offending set:\n{v}", v.key), history))
        }
        Verdict::Unknown { key } => {
            Err(fail(format!("linearizability undecided on key {key:?} within the budget"), history))
        }
    }
}

/// The lab's partitioner: every election timeout plus 0–200 ms, split the
/// servers at random into two groups, until `end`.
pub fn partition_until(sim: &mut Sim, end: Micros) -> Result<(), Failure> {
    let servers = sim.config().servers;
    while sim.now() < end {
        let groups = random_split(sim, servers);
        sim.partition(&groups);
        let hold = sim.config().election_us() + sim.choices().range(0, 200_000);
        sim.run_until((sim.now() + hold).min(end))?;
    }
    Ok(())
}

pub(super) fn random_split(sim: &mut Sim, servers: u8) -> Vec<Vec<NodeId>> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for id in 0..servers {
        if sim.choices().chance(1, 2) {
            a.push(id)
        } else {
            b.push(id)
        }
    }
    vec![a, b]
}

/// Reads `key` through client `client` (which must be idle) and returns the
/// value, failing if the cluster cannot answer within a minute.
pub fn read_back(sim: &mut Sim, client: usize, key: &str) -> Result<String, String> {
    run_op(sim, client, Op::Get { key: key.to_string() })
}

/// Runs `op` through client `client` (which must be idle) and returns its
/// output, failing if the cluster cannot answer within a minute.
pub fn run_op(sim: &mut Sim, client: usize, op: Op) -> Result<String, String> {
    let what = format!("{op}");
    let index = sim.start_op(client, op);
    let deadline = sim.now() + 60_000_000;
    if !sim.run_until_clients_idle(deadline).map_err(|f| f.to_string())? {
        return Err(format!("{what} did not complete within 60 s"));
    }
    Ok(sim.operation(index).output.clone())
}

/// Every server's persisted Raft state (hard state and log, as stored) is
/// at most `max` bytes.
pub fn check_raft_state(sim: &Sim, max: u64) -> Result<(), String> {
    for id in 0..sim.config().servers {
        let bytes = sim.storage(id).raft_state_bytes();
        if bytes > max {
            return Err(format!("server {id} persists {bytes} bytes of Raft state, more than {max}"));
        }
    }
    Ok(())
}

/// Every append to `key` that was acknowledged appears in `value` exactly
/// once; one that never returned at most once; and each client's appends
/// appear in the order it made them. (The lab's `checkClntAppends`.)
///
/// Linear in the value's length: append arguments end in `y` and contain no
/// other `y` ([`Workload::append_value`]), so the value splits into them.
pub fn check_appends<'a>(
    history: impl IntoIterator<Item = &'a Operation>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let mut positions: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (position, piece) in value.split_inclusive('y').enumerate() {
        positions.entry(piece).or_default().push(position);
    }
    let mut last_position: std::collections::BTreeMap<u64, usize> = Default::default();
    for op in history.into_iter().filter(|o| o.kind == OpKind::Append && o.key == key) {
        let found = positions.get(op.value.as_str()).map_or(&[][..], |v| v.as_slice());
        match (found.len(), op.ret) {
            (0, Some(_)) => {
                return Err(format!("acknowledged append {:?} to {key:?} is missing (lost write)", op.value))
            }
            (0, None) => continue,
            (1, _) => {}
            (n, _) => return Err(format!("append {:?} to {key:?} is present {n} times", op.value)),
        }
        let previous = last_position.insert(op.client, found[0]);
        if previous.is_some_and(|p| p > found[0]) {
            return Err(format!("client {}'s appends to {key:?} are out of order at {:?}", op.client, op.value));
        }
    }
    Ok(())
}

/// A finished, clean run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub history: History,
    pub stats: Stats,
    pub virtual_us: Micros,
}

/// A run that broke an invariant, lost or duplicated data, or produced a
/// non-linearizable history.
#[derive(Clone, Debug)]
pub struct ScenarioFailure {
    pub scenario: &'static str,
    pub seed: u64,
    pub reason: String,
    pub history: History,
}

impl fmt::Display for ScenarioFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenario {} failed with seed {}: {}", self.scenario, self.seed, self.reason)
    }
}

/// A harsher fault schedule than the lab's, for hunting bugs: while clients
/// run random-key workloads over an unreliable network, every 50–800 ms
/// (around an election timeout, so elections complete inside a fault) one
/// of: a random partition; isolating the current leader (a deposed leader
/// that does not know it yet); a heal; a crash of one random server; a quick
/// reboot of one server (crash, restart 0–100 ms later: it may have voted
/// or acknowledged just before); or a restart of every crashed server. Ends
/// healed and restarted, lets clients finish, and checks the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chaos {
    pub servers: u8,
    pub clients: usize,
    pub keys: u64,
    pub run_us: Micros,
    /// Clients also Delete and PutIfAbsent ([`Workload::all_ops`]) instead
    /// of the lab's Gets, Appends and Puts ([`Workload::random_keys`]).
    pub all_ops: bool,
}

impl Chaos {
    pub fn sim_config(&self, seed: u64) -> SimConfig {
        let mut config = SimConfig::new(seed, self.servers);
        config.network = NetworkConfig::unreliable();
        config
    }

    pub fn run(&self, config: SimConfig) -> Result<Outcome, ScenarioFailure> {
        let mut sim = Sim::new(config);
        let driven = self.drive(&mut sim);
        conclude("chaos", &sim, driven)
    }

    fn drive(&self, sim: &mut Sim) -> Result<(), String> {
        let workload = if self.all_ops { Workload::all_ops(self.keys) } else { Workload::random_keys(self.keys) };
        for _ in 0..self.clients {
            sim.add_client(workload.clone());
        }
        let end = sim.now() + self.run_us;
        while sim.now() < end {
            let pause = sim.choices().range(50_000, 800_000);
            sim.run_until((sim.now() + pause).min(end)).map_err(|f| f.to_string())?;
            let victim = sim.choices().range(0, u64::from(self.servers)) as NodeId;
            let fault = Fault::ALL[sim.choices().range(0, Fault::ALL.len() as u64) as usize];
            fault.strike(sim, victim)?;
        }
        finish(sim)
    }
}

/// One fault of the chaos schedules ([`Chaos`], [`Churn`](super::churn::Churn)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// Split the servers at random into two groups.
    Partition,
    /// Cut the leader off from the other servers (a deposed leader that
    /// does not know it yet).
    IsolateLeader,
    Heal,
    Crash,
    /// Crash, and restart 0–100 ms later: it may have voted or
    /// acknowledged just before.
    Reboot,
    /// Restart every crashed server.
    RestartAll,
}

impl Fault {
    pub(super) const ALL: [Fault; 6] =
        [Fault::Partition, Fault::IsolateLeader, Fault::Heal, Fault::Crash, Fault::Reboot, Fault::RestartAll];

    /// Strikes `sim` (`victim` for a crash or a reboot).
    pub(super) fn strike(self, sim: &mut Sim, victim: NodeId) -> Result<(), String> {
        let servers = sim.config().servers;
        match self {
            Fault::Partition => {
                let groups = random_split(sim, servers);
                sim.partition(&groups);
            }
            Fault::IsolateLeader => {
                if let Some(leader) = sim.leader() {
                    let rest: Vec<NodeId> = (0..servers).filter(|&id| id != leader).collect();
                    sim.partition(&[vec![leader], rest]);
                }
            }
            Fault::Heal => sim.heal(),
            Fault::Crash => sim.crash(victim),
            Fault::Reboot => {
                sim.crash(victim);
                let down = sim.choices().range(0, 100_000);
                sim.run_for(down).map_err(|f| f.to_string())?;
                sim.restart(victim);
            }
            Fault::RestartAll => (0..servers).for_each(|id| sim.restart(id)),
        }
        Ok(())
    }
}

/// The end of a chaos schedule: clients stop starting operations, the
/// network heals, every server restarts, and the clients must finish within
/// a minute.
pub(super) fn finish(sim: &mut Sim) -> Result<(), String> {
    sim.stop_clients();
    sim.heal();
    (0..sim.config().servers).for_each(|id| sim.restart(id));
    let deadline = sim.now() + 60_000_000;
    if !sim.run_until_clients_idle(deadline).map_err(|f| f.to_string())? {
        return Err("clients did not finish within 60 s after healing".into());
    }
    Ok(())
}
