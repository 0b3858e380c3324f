//! A tiny seeded random number generator for the pure core and the simulator.
//!
//! Hand-written rather than taken from `rand` because the state must be
//! `Clone + Eq + Hash` (the Stateright models hash node states by the
//! million) and its output must never change across dependency upgrades: a
//! printed seed has to replay the same run next year. SplitMix64 (Steele,
//! Lea, Flood 2014) passes BigCrush and is one add, two multiplies and three
//! shifts per draw.

/// SplitMix64. Same seed, same sequence, on every platform and version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[low, high)`; `low` when the range is empty.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        // Lemire's multiply-shift: unbiased enough for simulation, no division.
        let span = high - low;
        low + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.range(0, denominator) < numerator
    }

    /// A fresh generator whose sequence does not overlap this one's in practice.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_ranges_hold() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.range(10, 20);
            assert_eq!(x, b.range(10, 20));
            assert!((10..20).contains(&x));
        }
        assert_eq!(Rng::new(3).range(5, 5), 5);
    }

    #[test]
    fn known_first_value_never_changes() {
        // Pinned so that a printed seed replays the same run after any refactor.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }
}
