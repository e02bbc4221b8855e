//! Which node a request goes to: nodes that could not be reached are avoided for a while, and
//! services that had nodes once are told apart from unknown ones.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use http::StatusCode;
use rmicro_runtime::registry::Node;

/// How long an unreachable node is avoided.
const QUARANTINE: Duration = Duration::from_secs(5);

/// Nodes that could not be reached, each avoided for [`QUARANTINE`] (the `http` and `rpc`
/// handlers each keep one).
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    /// Unreachable nodes and until when they are avoided.
    failed: Mutex<HashMap<String, Instant>>,
    /// Whether `failed` may hold anything, so the common case skips its lock.
    any_failed: AtomicBool,
}

impl Quarantine {
    /// The address of the node to send to: `select`'s pick (an index into the slice it is given)
    /// among the nodes that are neither quarantined nor in `avoid`; when none is left, among
    /// those not in `avoid` (a quarantined node may be back; the one just tried refused), and
    /// among all of them when every node is in `avoid`. `nodes` must not be empty.
    pub(crate) fn pick<'n>(
        &self,
        nodes: &'n [Node],
        avoid: &[String],
        select: impl Fn(&[Node]) -> usize,
    ) -> &'n str {
        let select = |candidates: &[Node]| select(candidates).min(candidates.len() - 1);
        if avoid.is_empty() && !self.any_failed.load(Ordering::Relaxed) {
            return &nodes[select(nodes)].address;
        }
        let now = Instant::now();
        let healthy: Vec<Node> = {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.retain(|_, until| *until > now);
            if failed.is_empty() {
                self.any_failed.store(false, Ordering::Relaxed);
            }
            nodes
                .iter()
                .filter(|n| !failed.contains_key(&n.address) && !avoid.contains(&n.address))
                .cloned()
                .collect()
        };
        if healthy.is_empty() {
            let untried: Vec<Node> = nodes
                .iter()
                .filter(|n| !avoid.contains(&n.address))
                .cloned()
                .collect();
            if untried.is_empty() || untried.len() == nodes.len() {
                return &nodes[select(nodes)].address;
            }
            let address = &untried[select(&untried)].address;
            return nodes
                .iter()
                .find(|n| n.address == *address)
                .map_or(&nodes[0].address, |n| &n.address);
        }
        let address = &healthy[select(&healthy)].address;
        nodes
            .iter()
            .find(|n| n.address == *address)
            .map_or(&nodes[0].address, |n| &n.address)
    }

    /// Avoids the node at `address` for the next [`QUARANTINE`].
    pub(crate) fn mark(&self, address: &str) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.to_string(), Instant::now() + QUARANTINE);
        self.any_failed.store(true, Ordering::Relaxed);
    }
}

/// Services that had nodes once, so that an empty lookup can tell its answer: "no nodes" (503)
/// for those, "not found" (404) for any other (the `http` and `rpc` handlers each keep one).
#[derive(Debug, Default)]
pub(crate) struct Seen(RwLock<HashSet<String, foldhash::fast::RandomState>>);

impl Seen {
    /// Records that `service` has nodes (read-locked when already known).
    pub(crate) fn saw(&self, service: &str) {
        let known = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(service);
        if !known {
            self.0
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(service.to_string());
        }
    }

    /// The status and detail for a lookup of `service` that found no nodes.
    pub(crate) fn no_nodes(&self, service: &str) -> (StatusCode, String) {
        let seen = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(service);
        if seen {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("service `{service}` has no nodes"),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                format!("service `{service}` not found"),
            )
        }
    }
}
