//! nginx's `least_conn`: fewest in-flight requests per unit of weight. Ties go
//! round-robin: the scan starts one server further on each pick, and only a strictly
//! lighter server displaces the first one found.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{less_loaded, Balancer, PickCtx};
use crate::upstream::UpstreamServer;

#[derive(Debug, Default)]
pub struct LeastConn {
    cursor: AtomicUsize,
}

impl LeastConn {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for LeastConn {
    fn pick(&self, servers: &[UpstreamServer], _: &PickCtx) -> Option<usize> {
        let n = servers.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
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
