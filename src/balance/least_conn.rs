//! nginx's `least_conn`: fewest in-flight requests per unit of weight. Ties go to
//! weighted round-robin among the tied servers, as in nginx: the smooth weighted
//! cycle is walked to the next tied server, which keeps the tied servers' weight
//! proportions (an idle pool is served exactly as by `round_robin`).
//!
//! Exact up to `EXACT_SCAN` servers; above, two choices (`two_choices`): the
//! cycle's next turn against a random server, fewer in-flight per weight winning.
//! An idle pool is still served in weighted round-robin order, but under load the
//! least loaded server is no longer guaranteed to win.

use super::{less_loaded, two_choices, Balancer, Candidate, PickCtx, RoundRobin, EXACT_SCAN};

#[derive(Debug)]
pub struct LeastConn {
    ties: RoundRobin,
}

impl LeastConn {
    pub fn new(weights: &[u32]) -> Self {
        Self::with_ties(RoundRobin::new(weights))
    }

    /// Ties broken by `ties`, the tier's weighted round-robin cycle.
    pub fn with_ties(ties: RoundRobin) -> Self {
        LeastConn { ties }
    }
}

impl<S: Candidate> Balancer<S> for LeastConn {
    fn cycle(&self) -> Option<&RoundRobin> {
        Some(&self.ties)
    }

    fn pick(&self, servers: &[S], ctx: &PickCtx<'_>) -> Option<usize> {
        if servers.len() > EXACT_SCAN {
            let sampled = two_choices(&self.ties, servers, ctx, |b, a| {
                less_loaded(&servers[b], &servers[a])
            });
            if sampled.is_some() {
                return sampled;
            }
        }
        // The best so far as (index, in-flight, weight): one atomic load per server,
        // loads compared per weight by cross-multiplication.
        let mut best: Option<(usize, u64, u64)> = None;
        let mut tied = 0;
        for (i, s) in servers.iter().enumerate() {
            if !ctx.usable(servers, i) {
                continue;
            }
            let (load, w) = (s.inflight() as u64, s.live_weight());
            match best {
                Some((_, bl, bw)) if load * bw >= bl * w => {
                    tied += usize::from(load * bw == bl * w)
                }
                _ => {
                    best = Some((i, load, w));
                    tied = 1;
                }
            }
        }
        let (b, bl, bw) = best?;
        if tied > 1 {
            for _ in 0..self.ties.cycle_len() {
                let i = self.ties.next()?;
                let s = &servers[i];
                if ctx.usable(servers, i)
                    && s.inflight() as u64 * bw == bl * s.live_weight()
                    && s.ramp_admits()
                {
                    return Some(i);
                }
            }
        }
        Some(b)
    }
}
