//! NGINX Plus's `least_time`: the lowest time-decayed average response time ×
//! (in-flight + 1) ÷ weight. Ties go to weighted round-robin among the tied servers,
//! as in `least_conn`. What is timed (`header` or `last_byte`) is decided by the
//! request's `InFlight` guard.
//!
//! The average decays toward zero while a server gets no samples (read-only, as
//! `ewma` reads its estimate), so a server avoided for being slow is tried again
//! after a few τ and a recovered one regains traffic; without that it would never be
//! sampled again.

use std::time::Duration;

use tokio::time::Instant;

use super::{Balancer, PickCtx, RoundRobin};
use crate::upstream::{stamp, UpstreamServer};

#[derive(Debug)]
pub struct LeastTime {
    ties: RoundRobin,
    tau_ms: f64,
}

impl LeastTime {
    pub fn new(weights: &[u32], tau: Duration) -> Self {
        LeastTime {
            ties: RoundRobin::new(weights),
            tau_ms: tau.as_secs_f64() * 1e3,
        }
    }

    /// Expected time a new request would take on `s`, per unit of weight.
    fn cost(&self, s: &UpstreamServer, now: u32) -> f64 {
        s.state.latency.average_ns_at(now, self.tau_ms) * (s.state.inflight() as f64 + 1.0)
            / s.live_weight() as f64
    }
}

impl Balancer for LeastTime {
    /// The cost in seconds: the average × (in-flight + 1) per unit of weight.
    fn load(&self, s: &UpstreamServer) -> f64 {
        self.cost(s, stamp(Instant::now())) * f64::from(1u32 << crate::upstream::WEIGHT_SCALE) / 1e9
    }

    fn pick(&self, servers: &[UpstreamServer], ctx: &PickCtx<'_>) -> Option<usize> {
        let now = stamp(Instant::now());
        let mut best: Option<(usize, f64)> = None;
        let mut tied = 0;
        for (i, s) in servers.iter().enumerate() {
            if !ctx.usable(servers, i) {
                continue;
            }
            let c = self.cost(s, now);
            match best {
                Some((_, bc)) if c >= bc => tied += usize::from(c == bc),
                _ => {
                    best = Some((i, c));
                    tied = 1;
                }
            }
        }
        let (b, bc) = best?;
        if tied > 1 {
            for _ in 0..self.ties.cycle_len() {
                let i = self.ties.next()?;
                if ctx.usable(servers, i)
                    && self.cost(&servers[i], now) == bc
                    && servers[i].ramp_admits()
                {
                    return Some(i);
                }
            }
        }
        Some(b)
    }
}
