//! Which node of a service a call goes to.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use crate::registry::Node;

/// Picks one of a service's nodes for a call. Implement it to plug in your own strategy.
pub trait Selector: Send + Sync + 'static {
    /// The index into `nodes` (never empty) to call.
    fn select(&self, service: &str, nodes: &[Node]) -> usize;
}

/// A uniformly random node per call (go-micro's default).
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl Selector for Random {
    fn select(&self, _service: &str, nodes: &[Node]) -> usize {
        // Every RandomState is freshly keyed, so hashing nothing yields a new random number.
        (RandomState::new().hash_one(()) % nodes.len() as u64) as usize
    }
}

/// Each service's nodes in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: Mutex<HashMap<String, usize>>,
}

impl Selector for RoundRobin {
    fn select(&self, service: &str, nodes: &[Node]) -> usize {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let counter = match next.get_mut(service) {
            Some(c) => c,
            None => next.entry(service.to_string()).or_insert(0),
        };
        let index = *counter % nodes.len();
        *counter = counter.wrapping_add(1);
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| Node {
                id: i.to_string(),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn round_robin_alternates() {
        let rr = RoundRobin::default();
        let picks: Vec<usize> = (0..6).map(|_| rr.select("s", &nodes(3))).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_spreads() {
        let mut counts = [0; 4];
        for _ in 0..4000 {
            counts[Random.select("s", &nodes(4))] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
    }
}
