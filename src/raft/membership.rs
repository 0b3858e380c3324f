//! Who is in the cluster: the voters, whose majority elects leaders and
//! commits entries, and the learners, who receive the log but do not vote.
//! Quorums are counted here and nowhere else.

use super::types::{NodeId, MAX_NODE_ID};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A set of node ids (each at most [`MAX_NODE_ID`]), as a bitmask: small,
/// `Copy`, and ordered, as the models need.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NodeSet(u64);

impl NodeSet {
    pub const EMPTY: NodeSet = NodeSet(0);

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
        let five = Membership::initial(5);
        assert_eq!(five.quorum_value(|id| [5, 1, 3, 4, 0][usize::from(id)]), 3, "the majority's minimum");
        assert_eq!(Membership::initial(1).quorum_value(|_| 7), 7);
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
