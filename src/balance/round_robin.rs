//! nginx's smooth weighted round-robin (weights 5,1,1 → a a b a c a a), without a
//! lock: one cycle of the sequence is computed when the configuration is built, and
//! a pick is one atomic increment into it. Concurrent picks therefore keep exact
//! proportions over every cycle, which a locked per-pick SWRR also does but at the
//! price of a critical section per request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{Balancer, PickCtx};
use crate::upstream::UpstreamServer;

/// Work allowed for precomputing a cycle (sequence length × servers). Beyond it —
/// hundreds of servers with large, coprime weights — picks fall back to nginx's
/// per-pick SWRR under a per-upstream lock, still exact, just slower.
const TABLE_BUILD_BUDGET: u64 = 1 << 24;

#[derive(Debug)]
pub struct RoundRobin {
    cursor: AtomicUsize,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// One cycle of server indices.
    Table(Box<[u32]>),
    /// nginx's `current_weight` per server.
    Live {
        weights: Box<[i64]>,
        current: Mutex<Vec<i64>>,
    },
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> Self {
        let g = weights.iter().copied().fold(0, gcd).max(1);
        let reduced: Vec<i64> = weights.iter().map(|&w| i64::from(w / g)).collect();
        let cycle: i64 = reduced.iter().sum();
        let mode = if (cycle as u64).saturating_mul(weights.len() as u64) <= TABLE_BUILD_BUDGET {
            let mut current = vec![0i64; reduced.len()];
            let table = (0..cycle)
                .map(|_| swrr_step(&reduced, &mut current) as u32)
                .collect();
            Mode::Table(table)
        } else {
            Mode::Live {
                current: Mutex::new(vec![0; reduced.len()]),
                weights: reduced.into(),
            }
        };
        RoundRobin {
            cursor: AtomicUsize::new(0),
            mode,
        }
    }
}

/// One step of nginx's smooth weighted round-robin: every server gains its weight,
/// the largest wins and pays back the total.
fn swrr_step(weights: &[i64], current: &mut [i64]) -> usize {
    let total: i64 = weights.iter().sum();
    let mut best = 0;
    for i in 0..weights.len() {
        current[i] += weights[i];
        if current[i] > current[best] {
            best = i;
        }
    }
    current[best] -= total;
    best
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl RoundRobin {
    /// The next server of the cycle, eligible or not.
    pub(super) fn next(&self) -> Option<usize> {
        match &self.mode {
            Mode::Table(table) if !table.is_empty() => {
                let i = self.cursor.fetch_add(1, Ordering::Relaxed);
                Some(table[i % table.len()] as usize)
            }
            Mode::Table(_) => None,
            Mode::Live { weights, current } => {
                let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
                Some(swrr_step(weights, &mut current))
            }
        }
    }

    pub(super) fn cycle_len(&self) -> usize {
        match &self.mode {
            Mode::Table(t) => t.len(),
            Mode::Live { weights, .. } => weights.iter().sum::<i64>() as usize,
        }
    }
}

impl Balancer for RoundRobin {
    /// Skipping unusable servers keeps the others' proportions exact: their
    /// entries in the cycle are untouched. A slow-starting server keeps each of its
    /// turns with probability equal to its ramp, so its share follows the ramp.
    fn pick(&self, servers: &[UpstreamServer], ctx: &PickCtx<'_>) -> Option<usize> {
        let mut passed = None;
        for _ in 0..self.cycle_len() {
            let i = self.next()?;
            if i < servers.len() && ctx.usable(servers, i) {
                if servers[i].ramp_admits() {
                    return Some(i);
                }
                passed.get_or_insert(i);
            }
        }
        // Concurrent picks share the cursor, so this one may have seen only
        // unusable turns while a usable server exists: never a false "none".
        passed.or_else(|| {
            (0..servers.len()).find(|&i| servers[i].weight > 0 && ctx.usable(servers, i))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(weights: &[u32], n: usize) -> String {
        let mut rr = RoundRobin::new(weights);
        let servers = crate::upstream::test_servers(weights);
        let mut s = String::new();
        for _ in 0..n {
            s.push((b'a' + rr.pick(&servers, &PickCtx::default()).unwrap() as u8) as char);
        }
        // The live mode must produce the same sequence as the table.
        rr.mode = Mode::Live {
            weights: weights.iter().map(|&w| i64::from(w)).collect(),
            current: Mutex::new(vec![0; weights.len()]),
        };
        let live: String = (0..n)
            .map(|_| (b'a' + rr.pick(&servers, &PickCtx::default()).unwrap() as u8) as char)
            .collect();
        assert_eq!(s, live);
        s
    }

    #[test]
    fn nginx_smooth_sequence() {
        assert_eq!(sequence(&[5, 1, 1], 14), "aabacaaaabacaa");
        assert_eq!(sequence(&[1, 1, 1], 6), "abcabc");
        assert_eq!(sequence(&[2, 1], 6), "abaaba");
    }

    #[test]
    fn zero_weight_servers_are_never_picked() {
        assert_eq!(sequence(&[2, 0, 1], 6), "acaaca");
        let rr = RoundRobin::new(&[0, 0]);
        assert_eq!(
            rr.pick(&crate::upstream::test_servers(&[0, 0]), &PickCtx::default()),
            None
        );
    }

    #[test]
    fn gcd_reduces_the_cycle() {
        let rr = RoundRobin::new(&[500, 100, 100]);
        let Mode::Table(t) = &rr.mode else { panic!() };
        assert_eq!(t.len(), 7);
    }
}
