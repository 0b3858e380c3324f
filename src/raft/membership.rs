//! Who is in the cluster: the voters, whose majority elects leaders and
//! commits entries, and the learners, who receive the log but do not vote.
//! Quorums are counted here and nowhere else.

use super::types::{NodeId, MAX_NODES, MAX_NODE_ID};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A set of node ids (each at most [`MAX_NODE_ID`]), as a bitmask: small,
/// `Copy`, and ordered, as the models need.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NodeSet(u64);

impl NodeSet {
    pub const EMPTY: NodeSet = NodeSet(0);

    /// The set whose bit `i` is id `i` (every `u64` is a valid set).
    pub fn from_bits(bits: u64) -> NodeSet {
        NodeSet(bits)
    }

    pub fn bits(self) -> u64 {
        self.0
    }

    /// `0..n`.
    pub fn first(n: u8) -> NodeSet {
        assert!(u32::from(n) <= u32::from(MAX_NODE_ID) + 1, "ids above MAX_NODE_ID");
        NodeSet(if n == 64 { u64::MAX } else { (1u64 << n) - 1 })
    }

    pub fn contains(self, id: NodeId) -> bool {
        id <= MAX_NODE_ID && self.0 & (1 << id) != 0
    }

    pub fn insert(&mut self, id: NodeId) {
        assert!(id <= MAX_NODE_ID, "node id {id} above {MAX_NODE_ID}");
        self.0 |= 1 << id;
    }

    pub fn remove(&mut self, id: NodeId) {
        if id <= MAX_NODE_ID {
            self.0 &= !(1 << id);
        }
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: NodeSet) -> NodeSet {
        NodeSet(self.0 | other.0)
    }

    pub fn intersection(self, other: NodeSet) -> NodeSet {
        NodeSet(self.0 & other.0)
    }

    /// The ids, in increasing order.
    pub fn iter(self) -> impl Iterator<Item = NodeId> {
        (0..=MAX_NODE_ID).filter(move |&id| self.contains(id))
    }

    /// The same set with every id passed through `f` (renumbering).
    pub fn map(self, f: impl Fn(NodeId) -> NodeId) -> NodeSet {
        self.iter().map(f).collect()
    }
}

impl FromIterator<NodeId> for NodeSet {
    fn from_iter<I: IntoIterator<Item = NodeId>>(ids: I) -> NodeSet {
        let mut set = NodeSet::EMPTY;
        for id in ids {
            set.insert(id);
        }
        set
    }
}

impl fmt::Debug for NodeSet {
    /// `{0,1,2}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, id) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}")?;
        }
        f.write_str("}")
    }
}

/// A cluster configuration: the voters and the learners (disjoint).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Membership {
    pub voters: NodeSet,
    pub learners: NodeSet,
}

impl Membership {
    /// The configuration a cluster starts with: voters `0..n`, no learners.
    pub fn initial(n: u8) -> Membership {
        Membership { voters: NodeSet::first(n), learners: NodeSet::EMPTY }
    }

    /// Voters and learners are disjoint. (A configuration from the network
    /// is checked by the wire decoder; one built here keeps it.)
    pub fn is_well_formed(&self) -> bool {
        self.voters.intersection(self.learners).is_empty()
    }

    /// Well formed and with a voter: what a configuration from the log, a
    /// snapshot or the network must be (only a joining server, before it
    /// hears of one, and a store from before configurations have none).
    pub fn can_lead_a_cluster(&self) -> bool {
        self.is_well_formed() && !self.voters.is_empty()
    }

    /// Votes needed to win an election or commit an entry.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(id)
    }

    /// A voter or a learner: someone the leader sends the log.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(id) || self.learners.contains(id)
    }

    /// Voters and learners.
    pub fn members(&self) -> NodeSet {
        self.voters.union(self.learners)
    }

    /// Whether the voters among `ids` make a majority of the voters.
    pub fn is_quorum(&self, ids: NodeSet) -> bool {
        !self.voters.is_empty() && ids.intersection(self.voters).len() >= self.quorum()
    }

    /// The highest value a majority of the voters hold: the index a
    /// majority has replicated when `value` is each voter's match index, or
    /// the read round a majority has acknowledged. 0 without voters.
    pub fn quorum_value(&self, value: impl Fn(NodeId) -> u64) -> u64 {
        let mut values: Vec<u64> = self.voters.iter().map(value).collect();
        if values.is_empty() {
            return 0;
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        values[self.quorum() - 1]
    }
}

impl fmt::Debug for Membership {
    /// `voters {0,1,2}` or `voters {0,1,2} learners {3}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "voters {:?}", self.voters)?;
        if !self.learners.is_empty() {
            write!(f, " learners {:?}", self.learners)?;
        }
        Ok(())
    }
}

/// One single-server change (thesis §4.1): each moves the configuration by
/// at most one voter, so any majority of the old voters and any majority
/// of the new ones overlap, and no two leaders can be elected in one term
/// across the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum MembershipChange {
    /// A new server joins as a learner: it receives the log (or a
    /// snapshot) but neither votes nor counts in any majority.
    AddLearner(NodeId),
    /// A learner becomes a voter (once it has caught up).
    Promote(NodeId),
    /// A voter or a learner leaves.
    Remove(NodeId),
}

/// Why a change does not apply to a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeError {
    /// Adding a server already in the configuration.
    AlreadyMember(NodeId),
    /// Promoting or removing a server not in it.
    NotMember(NodeId),
    /// Promoting a server that already votes.
    NotLearner(NodeId),
    /// Removing the only voter would leave no one to elect a leader.
    LastVoter(NodeId),
    /// More than [`MAX_NODES`] voters and learners.
    TooManyMembers,
    /// An id above [`MAX_NODE_ID`].
    IdOutOfRange(NodeId),
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeError::AlreadyMember(id) => write!(f, "node {id} is already a member"),
            ChangeError::NotMember(id) => write!(f, "node {id} is not a member"),
            ChangeError::NotLearner(id) => write!(f, "node {id} is not a learner (already a voter)"),
            ChangeError::LastVoter(id) => write!(f, "node {id} is the last voter"),
            ChangeError::TooManyMembers => write!(f, "a cluster has at most {MAX_NODES} members"),
            ChangeError::IdOutOfRange(id) => write!(f, "node id {id} is above {MAX_NODE_ID}"),
        }
    }
}

impl MembershipChange {
    /// The configuration after this change, or why it does not apply.
    pub fn apply(self, m: &Membership) -> Result<Membership, ChangeError> {
        let mut next = *m;
        match self {
            MembershipChange::AddLearner(id) => {
                if id > MAX_NODE_ID {
                    return Err(ChangeError::IdOutOfRange(id));
                }
                if m.contains(id) {
                    return Err(ChangeError::AlreadyMember(id));
                }
                if m.members().len() >= MAX_NODES {
                    return Err(ChangeError::TooManyMembers);
                }
                next.learners.insert(id);
            }
            MembershipChange::Promote(id) => {
                if m.is_voter(id) {
                    return Err(ChangeError::NotLearner(id));
                }
                if !m.contains(id) {
                    return Err(ChangeError::NotMember(id));
                }
                next.learners.remove(id);
                next.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if !m.contains(id) {
                    return Err(ChangeError::NotMember(id));
                }
                if m.voters.len() == 1 && m.is_voter(id) {
                    return Err(ChangeError::LastVoter(id));
                }
                next.voters.remove(id);
                next.learners.remove(id);
            }
        }
        debug_assert!(next.can_lead_a_cluster());
        Ok(next)
    }
}

impl fmt::Display for Membership {
    /// `voters=0.1.2` or `voters=0.1.2 learners=3` (`-` for none): one
    /// whitespace-separated field per set, as the interaction scripts print
    /// and parse messages and entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = |set: NodeSet| {
            let ids: Vec<String> = set.iter().map(|id| id.to_string()).collect();
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(".")
            }
        };
        write!(f, "voters={}", ids(self.voters))?;
        if !self.learners.is_empty() {
            write!(f, " learners={}", ids(self.learners))?;
        }
        Ok(())
    }
}

impl NodeSet {
    /// Reads what `Display for Membership` writes of one set (`0.1.2`, `-`).
    pub fn parse(text: &str) -> Option<NodeSet> {
        if text == "-" {
            return Some(NodeSet::EMPTY);
        }
        text.split('.').map(|id| id.parse().ok().filter(|&id| id <= MAX_NODE_ID)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_count_voters_only() {
        let mut m = Membership::initial(3);
        m.learners.insert(5);
        assert_eq!(m.quorum(), 2);
        assert!(m.is_quorum([0, 2].into_iter().collect()));
        assert!(!m.is_quorum([0, 5].into_iter().collect()), "a learner is not counted");
        let matched = |id: NodeId| [7, 5, 3, 0, 0, 9][usize::from(id)];
        assert_eq!(m.quorum_value(matched), 5, "the learner's 9 does not count");
        assert_eq!(Membership::default().quorum_value(matched), 0);
        assert!(!Membership::default().is_quorum(NodeSet::first(3)));
        assert_eq!(format!("{m:?}"), "voters {0,1,2} learners {5}");
        assert_eq!(format!("{m}"), "voters=0.1.2 learners=5");
        assert_eq!(NodeSet::parse("0.1.2"), Some(m.voters));
        assert_eq!((NodeSet::parse("-"), NodeSet::parse("64"), NodeSet::parse("")), (Some(NodeSet::EMPTY), None, None));
        let five = Membership::initial(5);
        assert_eq!(five.quorum_value(|id| [5, 1, 3, 4, 0][usize::from(id)]), 3, "the majority's minimum");
        assert_eq!(Membership::initial(1).quorum_value(|_| 7), 7);
    }

    #[test]
    fn changes_move_one_server_at_a_time() {
        use MembershipChange::*;
        let three = Membership::initial(3);
        let with_learner = AddLearner(3).apply(&three).unwrap();
        assert_eq!(format!("{with_learner}"), "voters=0.1.2 learners=3");
        assert_eq!(format!("{}", Promote(3).apply(&with_learner).unwrap()), "voters=0.1.2.3");
        assert_eq!(format!("{}", Remove(0).apply(&three).unwrap()), "voters=1.2");
        assert_eq!(format!("{}", Remove(3).apply(&with_learner).unwrap()), "voters=0.1.2");
        assert_eq!(AddLearner(1).apply(&three), Err(ChangeError::AlreadyMember(1)));
        assert_eq!(AddLearner(64).apply(&three), Err(ChangeError::IdOutOfRange(64)));
        assert_eq!(Promote(1).apply(&three), Err(ChangeError::NotLearner(1)));
        assert_eq!(Promote(5).apply(&three), Err(ChangeError::NotMember(5)));
        assert_eq!(Remove(5).apply(&three), Err(ChangeError::NotMember(5)));
        assert_eq!(Remove(0).apply(&Membership::initial(1)), Err(ChangeError::LastVoter(0)));
        let full = Membership::initial(MAX_NODES as u8);
        assert_eq!(AddLearner(20).apply(&full), Err(ChangeError::TooManyMembers));
    }

    #[test]
    fn node_sets_hold_every_id() {
        let all = NodeSet::first(64);
        assert_eq!((all.len(), all.contains(MAX_NODE_ID), all.contains(MAX_NODE_ID + 1)), (64, true, false));
        let mut s = NodeSet::EMPTY;
        s.insert(63);
        s.insert(0);
        s.remove(200);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 63]);
        assert_eq!(s.map(|id| 63 - id), s);
    }
}
