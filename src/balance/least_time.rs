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

use super::{Balancer, Candidate, PickCtx, RoundRobin};
use crate::clock::stamp;

#[derive(Debug)]
pub struct LeastTime {
    ties: RoundRobin,
    tau_ms: f64,
}

impl LeastTime {
    pub fn new(weights: &[u32], tau: Duration) -> Self {
        Self::with_ties(RoundRobin::new(weights), tau)
    }

    /// Ties broken by `ties`, the tier's weighted round-robin cycle.
    pub fn with_ties(ties: RoundRobin, tau: Duration) -> Self {
        LeastTime {
            ties,
            tau_ms: tau.as_secs_f64() * 1e3,
        }
    }

    /// Expected time a new request would take on `s`, per unit of weight.
    fn cost<S: Candidate>(&self, s: &S, now: u32) -> f64 {
        s.latency().average_ns_at(now, self.tau_ms) * (s.inflight() as f64 + 1.0)
            / s.live_weight() as f64
    }
}

impl<S: Candidate> Balancer<S> for LeastTime {
    /// The cost in seconds: the average × (in-flight + 1) per unit of weight.
    fn load(&self, s: &S) -> f64 {
        self.cost(s, stamp(Instant::now())) * f64::from(1u32 << super::WEIGHT_SCALE) / 1e9
    }

    fn cycle(&self) -> Option<&RoundRobin> {
        Some(&self.ties)
    }

    fn pick(&self, servers: &[S], ctx: &PickCtx<'_>) -> Option<usize> {
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
