//! Small index structures the search updates on every step, each with an
//! exact undo so that backtracking costs O(1) or O(log n).

/// The call and return entries of calls with intervals `[call, ret]`
/// (`ret` `None`: never returned, no return entry), in time order: at equal
/// times calls come first, because intervals are closed (a call at the
/// instant another returns may be ordered before it). Returns, per list
/// node `1..=len` (index 0 unused), `(call index, is it the call entry)`,
/// and per call its `(call node, return node)` (return node 0 if none):
/// what both per-key searches walk with [`Links`].
pub(super) fn time_ordered_entries(intervals: impl ExactSizeIterator<Item = (u64, Option<u64>)>) -> TimeOrdered {
    let mut sorted: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * intervals.len());
    let mut nodes = vec![(0, 0); intervals.len()];
    for (i, (call, ret)) in intervals.enumerate() {
        sorted.push((call, 0, i));
        if let Some(ret) = ret {
            sorted.push((ret, 1, i));
        }
    }
    sorted.sort_unstable();
    let mut event = vec![(0, false); sorted.len() + 1];
    for (k, &(_, kind, i)) in sorted.iter().enumerate() {
        let node = k + 1;
        event[node] = (i, kind == 0);
        if kind == 0 {
            nodes[i].0 = node;
        } else {
            nodes[i].1 = node;
        }
    }
    (event, nodes)
}

/// [`time_ordered_entries`]: per node, `(call, is call entry)`; per call,
/// `(call node, return node)`.
pub(super) type TimeOrdered = (Vec<(usize, bool)>, Vec<(usize, usize)>);

/// A 128-bit random word per call, from a fixed seed, for the searches'
/// fingerprints of linearized sets (XOR of the words of the set's calls).
pub(super) fn zobrist_keys(count: usize) -> Vec<u128> {
    let mut rng = crate::rng::Rng::new(0x1D_C0DE_5EED);
    (0..count).map(|_| u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())).collect()
}

/// A circular doubly linked list over nodes `1..=len`, with node 0 as the
/// sentinel ("dancing links"). `unlink` leaves the removed node's own links
/// intact so `relink` can put it back in O(1), provided removals are undone
/// in reverse order (the search's stack discipline guarantees this).
pub(super) struct Links {
    pub(super) next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    pub(super) fn new(len: usize) -> Self {
        let next = (0..=len).map(|i| if i == len { 0 } else { i + 1 }).collect();
        let prev = (0..=len).map(|i| if i == 0 { len } else { i - 1 }).collect();
        Links { next, prev }
    }

    /// The first live node, or 0 if the list is empty.
    pub(super) fn first(&self) -> usize {
        self.next[0]
    }

    pub(super) fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    pub(super) fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        self.prev[n] = x;
    }
}

/// A subset of the operations sorted by one of their times, as a
/// dancing-links list from which linearized operations are lifted.
pub(super) struct TimeList {
    links: Links,
    /// Per node: (operation, its time). Node 0 is the sentinel's.
    items: Vec<(usize, u64)>,
    /// Per operation: its node, or 0 if it is not in this list.
    node_of: Vec<usize>,
}

impl TimeList {
    /// Sorts `members` (operation, time) by time, ties by operation.
    pub(super) fn new(op_count: usize, mut members: Vec<(usize, u64)>) -> Self {
        members.sort_unstable_by_key(|&(op, time)| (time, op));
        let mut items = Vec::with_capacity(members.len() + 1);
        items.push((0, 0));
        items.extend(members);
        let mut node_of = vec![0; op_count];
        for (node, &(op, _)) in items.iter().enumerate().skip(1) {
            node_of[op] = node;
        }
        TimeList { links: Links::new(items.len() - 1), items, node_of }
    }

    /// Lifts `op` out if it is a member.
    pub(super) fn remove(&mut self, op: usize) {
        match self.node_of[op] {
            0 => {}
            node => self.links.unlink(node),
        }
    }

    /// Undoes the matching [`TimeList::remove`].
    pub(super) fn restore(&mut self, op: usize) {
        match self.node_of[op] {
            0 => {}
            node => self.links.relink(node),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.links.first() == 0
    }

    /// The (operation, time) pairs still in the list, in time order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let first = self.links.first();
        std::iter::successors((first != 0).then_some(first), move |&node| {
            let next = self.links.next[node];
            (next != 0).then_some(next)
        })
        .map(move |node| self.items[node])
    }
}

/// Range-minimum over a fixed array with point updates (an iterative
/// segment tree), both O(log n). Values are `u128` so that [`MinTree::NONE`]
/// lies above every `u64` time, including `u64::MAX`.
pub(super) struct MinTree {
    size: usize,
    tree: Vec<u128>,
}

impl MinTree {
    /// Marks an empty slot; also the minimum of an empty range.
    pub(super) const NONE: u128 = u128::MAX;

    pub(super) fn new(values: &[u64]) -> Self {
        let size = values.len();
        let mut tree = vec![Self::NONE; 2 * size];
        for (slot, &v) in tree[size..].iter_mut().zip(values) {
            *slot = u128::from(v);
        }
        for i in (1..size).rev() {
            tree[i] = tree[2 * i].min(tree[2 * i + 1]);
        }
        MinTree { size, tree }
    }

    /// Sets position `pos` to `value`, or empties it if `None`.
    pub(super) fn set(&mut self, pos: usize, value: Option<u64>) {
        let mut i = pos + self.size;
        self.tree[i] = value.map_or(Self::NONE, u128::from);
        while i > 1 {
            i /= 2;
            self.tree[i] = self.tree[2 * i].min(self.tree[2 * i + 1]);
        }
    }

    /// The minimum over positions `lo..hi`, or `None` if they are all empty.
    pub(super) fn min(&self, lo: usize, hi: usize) -> Option<u64> {
        let (mut l, mut r) = (lo + self.size, hi + self.size);
        let mut m = Self::NONE;
        while l < r {
            if l & 1 == 1 {
                m = m.min(self.tree[l]);
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                m = m.min(self.tree[r]);
            }
            l /= 2;
            r /= 2;
        }
        u64::try_from(m).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_unlink_and_relink_in_reverse_order() {
        let mut l = Links::new(3);
        let walk = |l: &Links| {
            let mut out = Vec::new();
            let mut x = l.first();
            while x != 0 {
                out.push(x);
                x = l.next[x];
            }
            out
        };
        assert_eq!(walk(&l), [1, 2, 3]);
        l.unlink(2);
        l.unlink(1);
        assert_eq!(walk(&l), [3]);
        l.relink(1);
        l.relink(2);
        assert_eq!(walk(&l), [1, 2, 3]);
        assert_eq!(Links::new(0).first(), 0);
    }

    #[test]
    fn time_list_sorts_and_lifts() {
        let mut t = TimeList::new(5, vec![(4, 9), (1, 3), (2, 3)]);
        assert_eq!(t.iter().collect::<Vec<_>>(), [(1, 3), (2, 3), (4, 9)]);
        t.remove(2);
        t.remove(0); // not a member: no effect
        assert_eq!(t.iter().collect::<Vec<_>>(), [(1, 3), (4, 9)]);
        t.restore(0);
        t.restore(2);
        assert_eq!(t.iter().count(), 3);
        assert!(TimeList::new(2, vec![]).is_empty());
    }

    #[test]
    fn min_tree_matches_naive_minimum() {
        let mut values: Vec<Option<u64>> = [5, 3, 8, 1, 9, 2, u64::MAX].map(Some).to_vec();
        let plain: Vec<u64> = values.iter().flatten().copied().collect();
        let mut tree = MinTree::new(&plain);
        let check = |tree: &MinTree, values: &[Option<u64>]| {
            for lo in 0..=values.len() {
                for hi in lo..=values.len() {
                    let naive = values[lo..hi].iter().flatten().copied().min();
                    assert_eq!(tree.min(lo, hi), naive, "{lo}..{hi}");
                }
            }
        };
        check(&tree, &values);
        for (pos, value) in [(3, None), (6, Some(0)), (0, None), (6, None), (3, Some(4))] {
            tree.set(pos, value);
            values[pos] = value;
            check(&tree, &values);
        }
        assert_eq!(MinTree::new(&[]).min(0, 0), None);
        assert_eq!(MinTree::new(&[u64::MAX]).min(0, 1), Some(u64::MAX));
    }
}
