//! Backend selection. One trait, one file per algorithm. A balancer is built from a
//! configuration snapshot and never mutated by a reload; the load it may look at
//! (in-flight counts, later latency estimates and health) lives in `ServerState`.

mod round_robin;

use std::fmt::Debug;

pub use round_robin::RoundRobin;

use crate::config::BalanceKind;
use crate::upstream::UpstreamServer;

/// Chooses a server of an upstream for one request.
pub trait Balancer: Send + Sync + Debug {
    /// Index into `servers` of the chosen server, or `None` when none is usable.
    /// `servers` is the same slice the balancer was built for.
    fn pick(&self, servers: &[UpstreamServer]) -> Option<usize>;
}

/// Static weights with servers marked `down` at zero, so they never enter a cycle.
fn effective_weights(servers: &[UpstreamServer]) -> Vec<u32> {
    servers
        .iter()
        .map(|s| if s.down { 0 } else { s.weight })
        .collect()
}

/// Builds the balancer a configuration asks for.
pub fn build(kind: BalanceKind, servers: &[UpstreamServer]) -> Box<dyn Balancer> {
    match kind {
        BalanceKind::RoundRobin => Box::new(RoundRobin::new(&effective_weights(servers))),
    }
}
