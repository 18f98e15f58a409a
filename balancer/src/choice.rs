//! Which nodes a fragment's copies go to: random nodes with room, by the
//! power of two random choices.
//!
//! Each copy goes to the less full of two nodes drawn at random among the
//! healthy ones with room: as random as one draw (no node is favoured but
//! for its fill), yet the fullest nodes fill no faster than the rest, and a
//! choice costs two draws however many nodes are registered. When draws
//! keep missing (few nodes have room, or most are down), the remaining
//! candidates are gone through in random order, the healthy ones first and
//! those that failed lately as a last resort.

use std::collections::VecDeque;

use rand::Rng;
use rand::seq::SliceRandom;

/// What placement asks of a node.
pub trait Candidate {
    /// Its id in the index.
    fn id(&self) -> i64;
    /// `None` when it cannot take `len` bytes (full, or not active), else
    /// whether it is up (`false`: it failed lately).
    fn placement_choice(&self, len: u64) -> Option<bool>;
    /// Its fill, as a share of its capacity, once it took `len` bytes more.
    fn fill_after(&self, len: u64) -> f64;
}

impl<T: Candidate> Candidate for std::sync::Arc<T> {
    fn id(&self) -> i64 {
        T::id(self)
    }
    fn placement_choice(&self, len: u64) -> Option<bool> {
        T::placement_choice(self, len)
    }
    fn fill_after(&self, len: u64) -> f64 {
        T::fill_after(self, len)
    }
}

/// Draws tried per copy before going through the candidates in order.
const DRAWS: usize = 8;

/// The nodes to try for copies of `len` bytes, best first; lazily, so that
/// a placement that succeeds at once costs a few draws.
pub struct Choices<'a, C> {
    nodes: &'a [C],
    len: u64,
    /// Nodes not to offer: those that hold the fragment, and those offered.
    taken: Vec<i64>,
    /// Every remaining candidate in order, once the draws gave up.
    rest: Option<VecDeque<usize>>,
}

impl<'a, C: Candidate> Choices<'a, C> {
    /// Choices among `nodes` for a copy of `len` bytes, leaving out the
    /// nodes `exclude` (they hold the fragment already).
    pub fn new(nodes: &'a [C], len: u64, exclude: &[i64]) -> Self {
        Self {
            nodes,
            len,
            taken: exclude.to_vec(),
            rest: None,
        }
    }

    fn healthy(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        !self.taken.contains(&node.id()) && node.placement_choice(self.len) == Some(true)
    }

    /// The less full of two healthy nodes drawn at random, if draws find one.
    fn draw(&self) -> Option<usize> {
        let mut rng = rand::rng();
        let n = self.nodes.len();
        for _ in 0..DRAWS {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            let pick = match (self.healthy(a), a != b && self.healthy(b)) {
                (true, true) => {
                    if self.nodes[b].fill_after(self.len) < self.nodes[a].fill_after(self.len) {
                        b
                    } else {
                        a
                    }
                }
                (true, false) => a,
                (false, true) => b,
                (false, false) => continue,
            };
            return Some(pick);
        }
        None
    }

    /// Every candidate left, healthy ones first, each group shuffled.
    fn ordered(&self) -> VecDeque<usize> {
        let mut rng = rand::rng();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for (i, node) in self.nodes.iter().enumerate() {
            if self.taken.contains(&node.id()) {
                continue;
            }
            match node.placement_choice(self.len) {
                Some(true) => up.push(i),
                Some(false) => down.push(i),
                None => {}
            }
        }
        up.shuffle(&mut rng);
        down.shuffle(&mut rng);
        up.into_iter().chain(down).collect()
    }
}

impl<'a, C: Candidate> Iterator for Choices<'a, C> {
    type Item = &'a C;

    fn next(&mut self) -> Option<&'a C> {
        if self.nodes.is_empty() {
            return None;
        }
        let i = match self.rest {
            None => match self.draw() {
                Some(i) => i,
                None => {
                    let rest = self.ordered();
                    self.rest.insert(rest).pop_front()?
                }
            },
            Some(ref mut rest) => loop {
                let i = rest.pop_front()?;
                if !self.taken.contains(&self.nodes[i].id()) {
                    break i;
                }
            },
        };
        self.taken.push(self.nodes[i].id());
        Some(&self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A simulated node: capacity, bytes used, and whether it is up.
    struct Sim {
        id: i64,
        capacity: u64,
        used: Cell<u64>,
        up: Option<bool>,
    }

    impl Candidate for Sim {
        fn id(&self) -> i64 {
            self.id
        }
        fn placement_choice(&self, len: u64) -> Option<bool> {
            (self.used.get() + len <= self.capacity)
                .then_some(self.up)
                .flatten()
        }
        #[allow(clippy::cast_precision_loss)]
        fn fill_after(&self, len: u64) -> f64 {
            (self.used.get() + len) as f64 / self.capacity as f64
        }
    }

    fn sims(n: usize, capacity: u64) -> Vec<Sim> {
        (0..n)
            .map(|i| Sim {
                id: i64::try_from(i).unwrap() + 1,
                capacity,
                used: Cell::new(0),
                up: Some(true),
            })
            .collect()
    }

    #[test]
    fn copies_go_to_distinct_nodes_never_to_excluded_ones() {
        let nodes = sims(5, 100);
        let ids: Vec<i64> = Choices::new(&nodes, 1, &[2, 4])
            .map(Candidate::id)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 3, 5], "{ids:?}");
    }

    #[test]
    fn full_nodes_are_skipped_and_down_ones_come_last() {
        let mut nodes = sims(6, 100);
        nodes[0].used.set(100);
        nodes[1].up = Some(false);
        nodes[2].up = None;
        let ids: Vec<i64> = Choices::new(&nodes, 10, &[]).map(Candidate::id).collect();
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert_eq!(ids[3], 2, "the node that failed lately comes last: {ids:?}");
        assert!(!ids.contains(&1) && !ids.contains(&3), "{ids:?}");
    }

    #[test]
    fn the_less_full_of_two_is_taken() {
        // Two nodes only: every draw that finds both picks the emptier.
        // (Three times in four: the draws are the same node half the time.)
        let nodes = sims(2, 1000);
        nodes[0].used.set(900);
        let emptier = (0..200)
            .filter_map(|_| Choices::new(&nodes, 1, &[]).next().map(Candidate::id))
            .filter(|&id| id == 2)
            .count();
        assert!(emptier > 120, "{emptier} of 200");
    }

    /// A million fragments, each to three of 10,000 nodes: the fullest
    /// ends within a few percent of the mean.
    #[test]
    fn a_million_placements_fill_ten_thousand_nodes_evenly() {
        let nodes = sims(10_000, 1000);
        for _ in 0..1_000_000 {
            for node in Choices::new(&nodes, 1, &[]).take(3) {
                node.used.set(node.used.get() + 1);
            }
        }
        let max = nodes.iter().map(|n| n.used.get()).max().unwrap();
        #[allow(clippy::cast_precision_loss)]
        let balance = max as f64 / 300.0;
        assert!(balance <= 1.1, "max / mean = {balance:.3}");
    }
}
