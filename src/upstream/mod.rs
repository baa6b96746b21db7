//! Upstream pools. The per-server state (`ServerState`: in-flight count, counters,
//! idle connections) lives outside the swapped configuration, in a `Registry` keyed
//! by server identity, so a reload that keeps a server keeps its state.

mod inflight;
mod latency;
mod pool;
mod server;

use std::ops::Range;
use std::sync::Arc;

pub use inflight::{InFlight, Measure};
pub use latency::{
    average_update, decay_weight, peak_projection, peak_update, stamp, Latency, FAILURE_PENALTY,
};
pub use pool::{set_worker_shard, Pool, PooledConn, DEFAULT_IDLE_TIMEOUT};
pub use server::{Registry, ServerKey, ServerState};

use crate::balance::{Balancer, PickCtx};
use crate::config::{HashKey, StickyConfig};

/// One upstream as the current configuration sees it.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    /// Primaries first, then backups.
    pub servers: Vec<UpstreamServer>,
    /// The primaries, then (if any) the backups, each with its own balancer: a tier
    /// is asked only when every tier before it has no eligible server.
    pub tiers: Vec<Tier>,
    pub hash_key: Option<HashKey>,
    pub sticky: Option<StickyConfig>,
    /// What finished requests record for the balancer.
    pub measure: Measure,
}

#[derive(Debug)]
pub struct Tier {
    pub range: Range<usize>,
    pub balancer: Box<dyn Balancer>,
}

/// A server of an upstream: its configured weight and its long-lived state.
#[derive(Debug, Clone)]
pub struct UpstreamServer {
    pub weight: u32,
    /// Marked `down` in the configuration: never eligible.
    pub down: bool,
    pub backup: bool,
    pub state: Arc<ServerState>,
}

impl UpstreamServer {
    /// The one eligibility view every algorithm consults: not marked down in the
    /// file, and up as far as health checking knows.
    pub fn eligible(&self) -> bool {
        !self.down && self.state.is_up()
    }
}

impl Upstream {
    /// Chooses a server for a request, or `None` when no server is usable.
    pub fn pick(&self, ctx: &PickCtx) -> Option<&UpstreamServer> {
        self.tiers.iter().find_map(|t| {
            let servers = &self.servers[t.range.clone()];
            t.balancer.pick(servers, ctx).map(|i| &servers[i])
        })
    }

    /// The server a sticky cookie names, while it is eligible, and, for a backup,
    /// only while no primary is (clients pinned to a backup come back).
    pub fn sticky_server(&self, id: &str) -> Option<&UpstreamServer> {
        let s = self.servers.iter().find(|s| s.state.sticky_id == id)?;
        let primary_up = || self.servers.iter().any(|p| !p.backup && p.eligible());
        (s.eligible() && !(s.backup && primary_up())).then_some(s)
    }
}

/// Servers with the given weights and fresh state, for balancer unit tests.
#[cfg(test)]
pub(crate) fn test_servers(weights: &[u32]) -> Vec<UpstreamServer> {
    let registry = Registry::default();
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| UpstreamServer {
            weight,
            down: false,
            backup: false,
            state: registry.server(
                ServerKey {
                    upstream: Arc::from("test"),
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 10000 + i as u16)),
                },
                1,
                std::time::Duration::from_millis(30),
            ),
        })
        .collect()
}
