//! The simulated network: what each message suffers on its way, and who can
//! reach whom.

use crate::raft::NodeId;

/// How the network treats every message; one set of probabilities, so a
/// fault mix is a value that can be printed and replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Every message is delayed uniformly in `[min_delay_us, max_delay_us)`.
    pub min_delay_us: u64,
    pub max_delay_us: u64,
    /// Percent of messages lost.
    pub drop_percent: u64,
    /// Percent of messages delivered twice (with independent delays).
    pub duplicate_percent: u64,
    /// Percent of replies held back for long: `long_delay_us` plus up to as
    /// much again, so they arrive after later traffic (reordering).
    pub long_delay_percent: u64,
    pub long_delay_us: u64,
}

impl NetworkConfig {
    /// Prompt, lossless, in-order enough.
    pub fn reliable() -> NetworkConfig {
        NetworkConfig {
            min_delay_us: 100,
            max_delay_us: 1_000,
            drop_percent: 0,
            duplicate_percent: 0,
            long_delay_percent: 0,
            long_delay_us: 0,
        }
    }

    /// The lab's unreliable network: 0–26 ms delays, 10% of messages lost,
    /// some replies held back for 200 ms – 2.2 s; plus 2% duplicates.
    pub fn unreliable() -> NetworkConfig {
        NetworkConfig {
            min_delay_us: 0,
            max_delay_us: 26_000,
            drop_percent: 10,
            duplicate_percent: 2,
            long_delay_percent: 3,
            long_delay_us: 200_000,
        }
    }
}

/// Who can talk to whom. Servers are split into groups; a client reaches a
/// set of servers (all, unless restricted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    group_of: Vec<u8>,
    client_reach: Vec<Option<Vec<NodeId>>>,
}

impl Topology {
    pub fn new(servers: u8, clients: usize) -> Topology {
        Topology { group_of: vec![0; usize::from(servers)], client_reach: vec![None; clients] }
    }

    /// Servers in the same group reach each other; the rest do not.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        for g in &mut self.group_of {
            *g = u8::MAX; // unlisted servers are isolated from everyone
        }
        for (gi, members) in groups.iter().enumerate() {
            for &m in members {
                self.group_of[usize::from(m)] = gi as u8;
            }
        }
        // Isolated servers each form a group of their own.
        let mut next = groups.len() as u8;
        for g in &mut self.group_of {
            if *g == u8::MAX {
                *g = next;
                next += 1;
            }
        }
    }

    pub fn heal(&mut self) {
        self.group_of.iter_mut().for_each(|g| *g = 0);
        self.client_reach.iter_mut().for_each(|r| *r = None);
    }

    /// Makes room for `clients` clients (new ones reach every server).
    pub fn grow_clients(&mut self, clients: usize) {
        self.client_reach.resize(clients, None);
    }

    /// Restricts a client to the given servers.
    pub fn restrict_client(&mut self, client: usize, servers: Vec<NodeId>) {
        self.client_reach[client] = Some(servers);
    }

    pub fn servers_connected(&self, a: NodeId, b: NodeId) -> bool {
        self.group_of[usize::from(a)] == self.group_of[usize::from(b)]
    }

    pub fn client_connected(&self, client: usize, server: NodeId) -> bool {
        self.client_reach[client].as_ref().is_none_or(|r| r.contains(&server))
    }

    /// The current server groups, for traces.
    pub fn groups(&self) -> Vec<Vec<NodeId>> {
        let mut groups: Vec<Vec<NodeId>> = Vec::new();
        let max = self.group_of.iter().copied().max().unwrap_or(0);
        for g in 0..=max {
            let members: Vec<NodeId> =
                (0..self.group_of.len() as NodeId).filter(|&s| self.group_of[usize::from(s)] == g).collect();
            if !members.is_empty() {
                groups.push(members);
            }
        }
        groups
    }
}
