//! Upstream pools. The per-server state (`ServerState`: in-flight count, counters,
//! idle connections) lives outside the swapped configuration, in a `Registry` keyed
//! by server identity, so a reload that keeps a server keeps its state.

mod inflight;
mod pool;
mod server;

use std::sync::Arc;

pub use inflight::InFlight;
pub use pool::{set_worker_shard, Pool, PooledConn, DEFAULT_IDLE_TIMEOUT};
pub use server::{Registry, ServerKey, ServerState};

use crate::balance::Balancer;

/// One upstream as the current configuration sees it.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub servers: Vec<UpstreamServer>,
    pub balancer: Box<dyn Balancer>,
}

/// A server of an upstream: its configured weight and its long-lived state.
#[derive(Debug, Clone)]
pub struct UpstreamServer {
    pub weight: u32,
    /// Marked `down` in the configuration: never eligible.
    pub down: bool,
    pub state: Arc<ServerState>,
}

impl Upstream {
    /// Chooses a server for a request, or `None` when no server is usable.
    pub fn pick(&self) -> Option<&UpstreamServer> {
        self.balancer.pick(&self.servers).map(|i| &self.servers[i])
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
            state: registry.server(
                ServerKey {
                    upstream: Arc::from("test"),
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 10000 + i as u16)),
                },
                1,
            ),
        })
        .collect()
}
