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
        if nodes.len() <= 1 {
            return 0;
        }
        (next_random() % nodes.len() as u64) as usize
    }
}

/// A per-thread xorshift64* generator, seeded from the standard library's random hash keys:
/// good enough to spread calls, and a few instructions per call instead of a SipHash.
fn next_random() -> u64 {
    thread_local! {
        // Every RandomState is freshly keyed, so hashing nothing yields a random seed; `| 1`
        // keeps it off xorshift's one fixed point, zero.
        static STATE: std::cell::Cell<u64> =
            std::cell::Cell::new(RandomState::new().hash_one(()) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Each service's nodes in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: Mutex<HashMap<String, usize, foldhash::fast::RandomState>>,
}

impl Selector for RoundRobin {
    fn select(&self, service: &str, nodes: &[Node]) -> usize {
        // One node (most services, most of the time): nothing to turn, and no lock that every
        // call on every thread would take.
        if nodes.len() <= 1 {
            return 0;
        }
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
