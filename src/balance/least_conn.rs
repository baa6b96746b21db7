//! nginx's `least_conn`: fewest in-flight requests per unit of weight. Ties go to
//! weighted round-robin, as in nginx: the scan starts at the server the smooth
//! weighted cycle names next, and only a strictly lighter server displaces it, so an
//! idle pool is served in exact weight proportions.

use super::{less_loaded, Balancer, PickCtx, RoundRobin};
use crate::upstream::UpstreamServer;

#[derive(Debug)]
pub struct LeastConn {
    ties: RoundRobin,
}

impl LeastConn {
    pub fn new(weights: &[u32]) -> Self {
        LeastConn {
            ties: RoundRobin::new(weights),
        }
    }
}

impl Balancer for LeastConn {
    fn pick(&self, servers: &[UpstreamServer], _: &PickCtx) -> Option<usize> {
        let n = servers.len();
        let start = self.ties.next()?;
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let s = &servers[i];
            if !s.eligible() {
                continue;
            }
            if best.is_none_or(|b| less_loaded(s, &servers[b])) {
                best = Some(i);
            }
        }
        best
    }
}
