//! Membership churn under faults: the chaos schedule of
//! [`Chaos`](super::scenario::Chaos), with an operator who adds, promotes
//! and removes servers and hands leadership around while clients run.
//!
//! The cluster has more server slots than founding voters; the others start
//! as servers that are not members. Every 50–600 ms one thing happens: a
//! fault (a random partition, the leader isolated, a heal, a crash, a quick
//! reboot, every crashed server restarted) or an operator's request to the
//! server that leads: add a non-member as a learner (wiping its disk first,
//! sometimes, as a replaced machine; only when that cannot cost the cluster
//! a vote), promote a learner (at once, or once it has caught up), remove a
//! voter or a learner (the leader itself included), or hand leadership to
//! another voter. A third of the changes are followed at once by a second
//! one, as a script would send them: a correct leader refuses it while the
//! first is uncommitted.
//! The verdict is the simulator's safety checks after every step and the
//! linearizability of the whole history.

use super::scenario::{conclude, finish, Fault, Outcome, ScenarioFailure};
use super::{Micros, NetworkConfig, Sim, SimConfig, Workload};
use crate::kv::{AdminDone, AdminOp};
use crate::raft::{MembershipChange, NodeId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Churn {
    /// Server slots, ids `0..slots`.
    pub slots: u8,
    /// Founding voters, ids `0..founders`.
    pub founders: u8,
    pub clients: usize,
    pub keys: u64,
    pub run_us: Micros,
}

impl Churn {
    pub fn sim_config(&self, seed: u64) -> SimConfig {
        let mut config = SimConfig::new(seed, self.slots);
        config.members = self.founders;
        config.network = NetworkConfig::unreliable();
        config
    }

    pub fn run(&self, config: SimConfig) -> Result<Outcome, ScenarioFailure> {
        let mut sim = Sim::new(config);
        self.run_in(&mut sim)
    }

    /// Runs the schedule in `sim` (made from [`Churn::sim_config`]), which
    /// keeps the state of the run for a look afterwards.
    pub fn run_in(&self, sim: &mut Sim) -> Result<Outcome, ScenarioFailure> {
        let driven = self.drive(sim);
        conclude("churn", sim, driven)
    }

    /// How many changes were committed in a run (from its replies).
    pub fn committed_changes(sim: &Sim) -> usize {
        sim.admin_replies().iter().filter(|(_, _, r)| matches!(r.result, Ok(AdminDone::Changed { .. }))).count()
    }

    fn drive(&self, sim: &mut Sim) -> Result<(), String> {
        for _ in 0..self.clients {
            sim.add_client(Workload::random_keys(self.keys));
        }
        let end = sim.now() + self.run_us;
        while sim.now() < end {
            let pause = sim.choices().range(50_000, 600_000);
            sim.run_until((sim.now() + pause).min(end)).map_err(|f| f.to_string())?;
            let victim = sim.choices().range(0, u64::from(self.slots)) as NodeId;
            match sim.choices().range(0, 12) {
                // The chaos faults, restarts twice as likely.
                n @ 0..=4 => Fault::ALL[n as usize].strike(sim, victim)?,
                5 | 6 => Fault::RestartAll.strike(sim, victim)?,
                7..=10 => {
                    self.change(sim);
                    if sim.choices().chance(1, 3) {
                        self.change(sim);
                    }
                }
                _ => self.transfer(sim),
            }
        }
        finish(sim)
    }

    /// Asks the leader for one random change that applies to its
    /// configuration.
    fn change(&self, sim: &mut Sim) {
        let Some(leader) = sim.leader() else { return };
        let node = sim.server(leader).expect("a leader is up").node();
        let latest = *node.membership();
        let committed = node.membership_at(node.commit_index()).1;
        let mut options = Vec::new();
        let change = |c| AdminOp::Change(c);
        for id in 0..self.slots {
            if !latest.contains(id) {
                options.push(change(MembershipChange::AddLearner(id)));
            } else if !latest.is_voter(id) {
                options.push(change(MembershipChange::Promote(id)));
                options.push(AdminOp::PromoteWhenCaughtUp(id));
                options.push(change(MembershipChange::Remove(id)));
            } else if latest.voters.len() > 2 {
                // Down to two voters at least: a cluster of one has no
                // majorities to get wrong.
                options.push(change(MembershipChange::Remove(id)));
            }
        }
        let op = options[sim.choices().range(0, options.len() as u64) as usize];
        if let AdminOp::Change(MembershipChange::AddLearner(id)) = op {
            // A replaced machine. Only a server that is a voter in neither
            // configuration, and whose votes no candidate can count any
            // more (`votes_are_spent`).
            let votes = latest.is_voter(id) || committed.is_voter(id);
            if !votes && id != leader && votes_are_spent(sim, self.slots, id) && sim.choices().chance(1, 2) {
                sim.wipe(id);
                sim.restart(id);
            }
        }
        sim.admin(leader, op);
    }

    /// Asks the leader to hand leadership to another voter.
    fn transfer(&self, sim: &mut Sim) {
        let Some(leader) = sim.leader() else { return };
        let voters: Vec<NodeId> =
            sim.server(leader).expect("a leader is up").node().membership().voters.iter().collect();
        let to = voters[sim.choices().range(0, voters.len() as u64) as usize];
        sim.admin(leader, AdminOp::TransferLeadership(to));
    }
}

/// Whether wiping server `id` now leaves no vote of its old disk that a
/// candidate could still count. Being removed is not enough: a server cut
/// off since before the removal still counts `id` as a voter, and the empty
/// log of a wiped `id` grants it any vote, in a term `id` may already have
/// voted in (the churn schedule found two leaders of one term that way,
/// seed 8, once the timing of replication changed). Every server's durable
/// term at least `id`'s, and above it unless `id` voted for no one in its
/// term, means every campaign still to come is in a term `id` never voted
/// in, and every older candidate has moved past its term and ignores
/// replies to it. An operator cannot see this; hence the README's advice
/// to rejoin a replaced disk under a new id.
fn votes_are_spent(sim: &Sim, slots: u8, id: NodeId) -> bool {
    let hard = sim.storage(id).disk.hard;
    (0..slots).filter(|&s| s != id).all(|s| {
        let term = sim.storage(s).disk.hard.term;
        term > hard.term || (term == hard.term && hard.voted_for.is_none())
    })
}
