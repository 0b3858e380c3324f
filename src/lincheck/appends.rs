//! Which Append arguments are still available, for the search's lookahead:
//! "can the remaining appends continue the value towards this Get output?"

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Above this many distinct argument lengths, a lookup would cost too much;
/// the index then answers "maybe" to everything (always sound).
const MAX_DISTINCT_LENGTHS: usize = 32;

/// FNV-1a with a final avalanche: fast for the short byte strings used as
/// keys here (std's SipHash is several times slower on them).
#[derive(Default)]
struct BytesHasher(u64);

impl Hasher for BytesHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^ (h >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xCBF2_9CE4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
        self.0 = h;
    }
}

/// Remaining (not yet linearized) Appends grouped by argument, with undo.
pub(super) struct AppendIndex<'a> {
    /// Distinct non-empty arguments → group number.
    group_of: HashMap<&'a [u8], usize, BuildHasherDefault<BytesHasher>>,
    /// Per operation: its group, if it is an Append with a non-empty
    /// argument (an empty append never helps produce anything).
    group_of_op: Vec<Option<usize>>,
    /// Per group: how many of its Appends remain.
    remaining: Vec<u32>,
    /// Distinct argument lengths, ascending; empty when disabled.
    lengths: Vec<usize>,
    enabled: bool,
}

impl<'a> AppendIndex<'a> {
    /// Indexes the Appends among `ops` (`Some(argument)` for an Append).
    pub(super) fn new(ops: impl Iterator<Item = Option<&'a [u8]>>) -> Self {
        let mut group_of: HashMap<&'a [u8], usize, BuildHasherDefault<BytesHasher>> = HashMap::default();
        let mut group_of_op = Vec::new();
        let mut remaining: Vec<u32> = Vec::new();
        let mut lengths = Vec::new();
        for arg in ops {
            let group = match arg {
                Some(arg) if !arg.is_empty() => {
                    let next = group_of.len();
                    let group = *group_of.entry(arg).or_insert(next);
                    if group == remaining.len() {
                        remaining.push(0);
                        lengths.push(arg.len());
                    }
                    remaining[group] += 1;
                    Some(group)
                }
                _ => None,
            };
            group_of_op.push(group);
        }
        lengths.sort_unstable();
        lengths.dedup();
        let enabled = lengths.len() <= MAX_DISTINCT_LENGTHS;
        AppendIndex { group_of, group_of_op, remaining, lengths, enabled }
    }

    /// Marks operation `op` as linearized (no effect if not an Append).
    pub(super) fn remove(&mut self, op: usize) {
        if let Some(g) = self.group_of_op[op] {
            self.remaining[g] -= 1;
        }
    }

    /// Undoes [`AppendIndex::remove`].
    pub(super) fn restore(&mut self, op: usize) {
        if let Some(g) = self.group_of_op[op] {
            self.remaining[g] += 1;
        }
    }

    /// A necessary condition for the remaining Appends, other than `skip`,
    /// to extend a value by exactly `rest`: `rest` is empty, or it starts
    /// with the argument of one of them (the first non-empty one applied).
    /// O(number of distinct argument lengths).
    pub(super) fn may_start(&self, rest: &[u8], skip: usize) -> bool {
        if rest.is_empty() || !self.enabled {
            return true;
        }
        let skipped = self.group_of_op.get(skip).copied().flatten();
        self.lengths.iter().take_while(|&&len| len <= rest.len()).any(|&len| self.available(&rest[..len], skipped))
    }

    /// A stronger necessary condition than [`AppendIndex::may_start`]:
    /// `rest` splits into a sequence of arguments of remaining Appends other
    /// than `skip` (each argument available at least once; multiplicities
    /// are not tracked). A dynamic program over the positions of `rest`;
    /// beyond [`MAX_SPLIT_LEN`] bytes it falls back to `may_start`.
    pub(super) fn may_split(&self, rest: &[u8], skip: usize) -> bool {
        if rest.len() > MAX_SPLIT_LEN {
            return self.may_start(rest, skip);
        }
        if rest.is_empty() || !self.enabled {
            return true;
        }
        let skipped = self.group_of_op.get(skip).copied().flatten();
        // reachable[p]: rest[..p] splits into available arguments.
        let mut reachable = [0u64; (MAX_SPLIT_LEN + 1).div_ceil(64)];
        reachable[0] = 1;
        for pos in 0..rest.len() {
            if reachable[pos / 64] & (1 << (pos % 64)) == 0 {
                continue;
            }
            for &len in self.lengths.iter().take_while(|&&len| len <= rest.len() - pos) {
                if self.available(&rest[pos..pos + len], skipped) {
                    let end = pos + len;
                    if end == rest.len() {
                        return true;
                    }
                    reachable[end / 64] |= 1 << (end % 64);
                }
            }
        }
        false
    }

    /// Whether some remaining Append other than `skipped`'s has argument
    /// `arg`.
    fn available(&self, arg: &[u8], skipped: Option<usize>) -> bool {
        match self.group_of.get(arg) {
            Some(&g) => self.remaining[g] > u32::from(skipped == Some(g)),
            None => false,
        }
    }
}

/// Longest text [`AppendIndex::may_split`] splits: its table lives on the
/// stack, and longer texts (dozens of appends away) rarely decide anything
/// that the first-argument test does not, while costing a lookup per byte.
const MAX_SPLIT_LEN: usize = 255;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_remaining_arguments() {
        let args: [Option<&[u8]>; 5] = [Some(b"ab"), None, Some(b"c"), Some(b"ab"), Some(b"")];
        let mut index = AppendIndex::new(args.into_iter());
        assert!(index.may_start(b"", 0));
        assert!(index.may_start(b"abc", 9));
        assert!(index.may_start(b"cab", 9));
        assert!(!index.may_start(b"xab", 9));
        assert!(!index.may_start(b"a", 9), "too short for \"ab\"");
        assert!(!index.may_start(b"c", 2), "the only \"c\" is skipped");
        index.remove(0);
        assert!(index.may_start(b"ab", 9), "one \"ab\" left");
        assert!(!index.may_start(b"ab", 3));
        index.remove(3);
        assert!(!index.may_start(b"ab", 9));
        index.restore(3);
        index.restore(0);
        assert!(index.may_start(b"ab", 0));
        index.remove(1); // not an append: no effect
        index.remove(4); // an empty append: not indexed
        assert!(index.may_start(b"c", 9));
    }

    #[test]
    fn splits_into_available_arguments() {
        let args: [Option<&[u8]>; 4] = [Some(b"ab"), Some(b"c"), Some(b"abc"), Some(b"d")];
        let mut index = AppendIndex::new(args.into_iter());
        assert!(index.may_split(b"", 9));
        assert!(index.may_split(b"abcd", 9));
        assert!(index.may_split(b"cabd", 9));
        assert!(!index.may_split(b"abx", 9));
        assert!(!index.may_split(b"abca", 9));
        // "abcd" = "abc" + "d" without "c", or "ab" + "c" + "d" without "abc".
        assert!(index.may_split(b"abcd", 1));
        assert!(index.may_split(b"abcd", 2));
        index.remove(3);
        assert!(!index.may_split(b"abcd", 9), "\"d\" is used up");
        assert!(index.may_start(b"abcd", 9), "the weaker test still passes");
        // Multiplicities are not tracked: "c" twice is allowed.
        assert!(index.may_split(b"cc", 9));
        // Too long for the table: falls back to the first-argument test.
        let long = [b"ab".as_slice(), &[b'?'; MAX_SPLIT_LEN]].concat();
        assert!(index.may_split(&long, 9));
    }

    #[test]
    fn too_many_lengths_disable_the_check() {
        let args: Vec<Vec<u8>> = (1..=40).map(|n| vec![b'z'; n]).collect();
        let index = AppendIndex::new(args.iter().map(|a| Some(a.as_slice())));
        assert!(index.may_start(b"nothing like it", 0));
        assert!(index.may_split(b"nothing like it", 0));
    }
}
