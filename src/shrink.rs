//! Delta debugging: shrinking a failing input to a small one that still
//! fails, so a report names the handful of steps that matter. One
//! algorithm for the linearizability checker's minimiser (a violating
//! history) and the models' counterexample shrinking (a schedule).

/// What [`delta_debug`]'s caller found when it tried a smaller candidate.
pub enum Trial<T> {
    /// It still fails: keep this instead (the candidate, or a shorter part
    /// of it that also fails).
    Fails(Vec<T>),
    /// It no longer fails, or that could not be told: keep the larger one.
    Passes,
    /// Out of budget: stop with what has been kept so far, untried.
    Stop,
}

/// Tries removing chunks of half of `items`, then quarters, ..., then single
/// items, keeping each removal after which `trial` says the rest still fails;
/// single-item passes repeat until one removes nothing. Removal need not be
/// monotone (dropping one item can make the rest pass, dropping another can
/// make it fail again), hence the repeated final passes. Unless `trial`
/// stops it, the result is 1-minimal: removing any one item makes it pass.
/// The result keeps the input order.
pub fn delta_debug<T: Clone>(items: Vec<T>, mut trial: impl FnMut(Vec<T>) -> Trial<T>) -> Vec<T> {
    let mut current = items;
    let mut chunk = (current.len() / 2).max(1);
    loop {
        let mut removed_any = false;
        let mut start = 0;
        while start < current.len() {
            let end = (start + chunk).min(current.len());
            let candidate = current[..start].iter().chain(&current[end..]).cloned().collect();
            match trial(candidate) {
                // Keep `start`: the next chunk has slid into place.
                Trial::Fails(smaller) => {
                    current = smaller;
                    removed_any = true;
                }
                Trial::Passes => start = end,
                Trial::Stop => return current,
            }
        }
        if chunk > 1 {
            chunk = (chunk / 2).max(1);
        } else if !removed_any {
            return current;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_one_item_that_fails() {
        let items: Vec<u32> = (0..100).collect();
        let small = delta_debug(items, |c| if c.contains(&37) { Trial::Fails(c) } else { Trial::Passes });
        assert_eq!(small, vec![37]);
    }

    #[test]
    fn keeps_a_pair_that_fails_only_together_in_order() {
        let items: Vec<u32> = (0..50).collect();
        let small =
            delta_debug(items, |c| if c.contains(&3) && c.contains(&41) { Trial::Fails(c) } else { Trial::Passes });
        assert_eq!(small, vec![3, 41]);
    }

    #[test]
    fn stop_returns_what_was_kept() {
        let mut trials = 0;
        let small = delta_debug((0..8).collect::<Vec<u32>>(), |c| {
            trials += 1;
            if trials > 1 {
                Trial::Stop
            } else {
                Trial::Fails(c)
            }
        });
        assert_eq!(small, vec![4, 5, 6, 7], "the first half was removed, then it stopped");
    }
}
