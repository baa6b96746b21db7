//! NGINX Plus's `least_time`: the lowest time-decayed average response time ×
//! (in-flight + 1) ÷ weight. The average is read as stored (no decay on read), so a
//! scan costs one atomic load and a multiply per server. Ties go round-robin as in
//! `least_conn`. What is timed (`header` or `last_byte`) is decided by the request's
//! `InFlight` guard.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, PickCtx};
use crate::upstream::UpstreamServer;

#[derive(Debug, Default)]
pub struct LeastTime {
    cursor: AtomicUsize,
}

impl LeastTime {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Expected time a new request would take on `s`, per unit of weight.
pub(super) fn cost(s: &UpstreamServer) -> f64 {
    s.state.latency.average_ns() * (s.state.inflight() as f64 + 1.0) / f64::from(s.weight.max(1))
}

impl Balancer for LeastTime {
    fn pick(&self, servers: &[UpstreamServer], _: &PickCtx) -> Option<usize> {
        let n = servers.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !servers[i].eligible() {
                continue;
            }
            let c = cost(&servers[i]);
            if best.is_none_or(|(_, bc)| c < bc) {
                best = Some((i, c));
            }
        }
        best.map(|(i, _)| i)
    }
}
