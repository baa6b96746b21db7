//! nginx's `least_conn`: fewest in-flight requests per unit of weight. Ties go to
//! weighted round-robin among the tied servers, as in nginx: the smooth weighted
//! cycle is walked to the next tied server, which keeps the tied servers' weight
//! proportions (an idle pool is served exactly as by `round_robin`).

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
        let mut best: Option<usize> = None;
        let mut tied = 0;
        for (i, s) in servers.iter().enumerate().filter(|(_, s)| s.eligible()) {
            match best {
                Some(b) if !less_loaded(s, &servers[b]) => {
                    // Not lighter than the best; equal when the best is not lighter either.
                    tied += usize::from(!less_loaded(&servers[b], s));
                }
                _ => {
                    best = Some(i);
                    tied = 1;
                }
            }
        }
        let b = best?;
        if tied > 1 {
            for _ in 0..self.ties.cycle_len() {
                let i = self.ties.next()?;
                if servers[i].eligible() && !less_loaded(&servers[b], &servers[i]) {
                    return Some(i);
                }
            }
        }
        Some(b)
    }
}
