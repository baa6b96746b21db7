//! nginx's smooth weighted round-robin (weights 5,1,1 → a a b a c a a), without a
//! lock: one cycle of the sequence is computed when the configuration is built, and
//! a pick is one atomic increment into it. Concurrent picks therefore keep exact
//! proportions over every cycle, which a locked per-pick SWRR also does but at the
//! price of a critical section per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{Balancer, Candidate, PickCtx};

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

    /// Moves the cursor of this (new, unused) cycle to just after the server that
    /// `old`, the cycle it replaces, picked last; `old_addrs` and `new_addrs` are the
    /// servers of each, by index. If that server is gone, the one picked before it
    /// is used, and so on. Where the server occurs several times (weights), the
    /// occurrence nearest the same point of the cycle is taken. So a membership
    /// change neither restarts the cycle, which would favour the first servers
    /// every time, nor skips or repeats a server that stays: with equal weights the
    /// servers that stay keep alternating exactly through any number of changes.
    pub fn resume_after(
        &self,
        old: &RoundRobin,
        old_addrs: &[SocketAddr],
        new_addrs: &[SocketAddr],
    ) {
        let (Mode::Table(old_t), Mode::Table(new_t)) = (&old.mode, &self.mode) else {
            return;
        };
        let next = old.cursor.load(Ordering::Relaxed);
        if old_t.is_empty() || new_t.is_empty() || next == 0 {
            return;
        }
        let (old_len, new_len) = (old_t.len(), new_t.len());
        for back in 1..=old_len {
            let pos = next.wrapping_sub(back) % old_len;
            let Some(addr) = old_addrs.get(old_t[pos] as usize) else {
                continue;
            };
            let Some(j) = new_addrs.iter().position(|a| a == addr) else {
                continue;
            };
            let target = (pos as f64 + 0.5) / old_len as f64 * new_len as f64;
            let distance = |i: usize| {
                let d = ((i as f64 + 0.5) - target).abs();
                d.min(new_len as f64 - d)
            };
            let at = (0..new_len)
                .filter(|&i| new_t[i] as usize == j)
                .min_by(|&a, &b| distance(a).total_cmp(&distance(b)));
            if let Some(at) = at {
                self.cursor.store(at + 1, Ordering::Relaxed);
            }
            return;
        }
    }

    pub(super) fn cycle_len(&self) -> usize {
        match &self.mode {
            Mode::Table(t) => t.len(),
            Mode::Live { weights, .. } => weights.iter().sum::<i64>() as usize,
        }
    }
}

impl<S: Candidate> Balancer<S> for RoundRobin {
    fn cycle(&self) -> Option<&RoundRobin> {
        Some(self)
    }

    /// Skipping unusable servers keeps the others' proportions exact: their
    /// entries in the cycle are untouched. A slow-starting server keeps each of its
    /// turns with probability equal to its ramp, so its share follows the ramp.
    fn pick(&self, servers: &[S], ctx: &PickCtx<'_>) -> Option<usize> {
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
            (0..servers.len()).find(|&i| servers[i].weight() > 0 && ctx.usable(servers, i))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::balance::fake;

    fn sequence(weights: &[u32], n: usize) -> String {
        let mut rr = RoundRobin::new(weights);
        let servers = fake::servers(weights);
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
        assert_eq!(rr.pick(&fake::servers(&[0, 0]), &PickCtx::default()), None);
    }

    #[test]
    fn gcd_reduces_the_cycle() {
        let rr = RoundRobin::new(&[500, 100, 100]);
        let Mode::Table(t) = &rr.mode else { panic!() };
        assert_eq!(t.len(), 7);
    }

    /// Picks `n` times from `rr` over `servers`, as letters by address: 'a' for
    /// port 10000, 'b' for 10001…
    fn walk(rr: &RoundRobin, servers: &[fake::Server], n: usize) -> String {
        (0..n)
            .map(|_| {
                let i = rr.pick(servers, &PickCtx::default()).unwrap();
                (b'a' + (servers[i].addr.port() - 10000) as u8) as char
            })
            .collect()
    }

    fn addrs(servers: &[fake::Server]) -> Vec<SocketAddr> {
        servers.iter().map(|s| s.addr).collect()
    }

    #[test]
    fn a_new_cycle_carries_on_after_the_last_server_picked() {
        let abc = fake::servers(&[1, 1, 1]);
        let ab: Vec<fake::Server> = fake::servers(&[1, 1]);
        let old = RoundRobin::new(&[1, 1, 1]);
        assert_eq!(walk(&old, &abc, 4), "abca");
        // c leaves: the cycle goes on with b, not from a again.
        let new = RoundRobin::new(&[1, 1]);
        new.resume_after(&old, &addrs(&abc), &addrs(&ab));
        assert_eq!(walk(&new, &ab, 3), "bab");
        // c comes back after a b: the next is c, then a.
        let back = RoundRobin::new(&[1, 1, 1]);
        back.resume_after(&new, &addrs(&ab), &addrs(&abc));
        assert_eq!(walk(&back, &abc, 4), "cabc");
        // The last one picked (c) leaves: carry on after the one before it (b).
        let again = RoundRobin::new(&[1, 1]);
        again.resume_after(&back, &addrs(&abc), &addrs(&ab));
        assert_eq!(walk(&again, &ab, 2), "ab");
        // A cycle nothing was picked from yet starts at the beginning.
        let fresh = RoundRobin::new(&[1, 1]);
        fresh.resume_after(&RoundRobin::new(&[1, 1, 1]), &addrs(&abc), &addrs(&ab));
        assert_eq!(walk(&fresh, &ab, 1), "a");
    }

    #[test]
    fn servers_that_stay_alternate_exactly_through_many_changes() {
        let abc = fake::servers(&[1, 1, 1]);
        let ab = fake::servers(&[1, 1]);
        let mut current = RoundRobin::new(&[1, 1]);
        let mut with_c = false;
        let mut counts = [0usize; 3];
        for round in 0..1000 {
            let servers = if with_c { &abc } else { &ab };
            for ch in walk(&current, servers, 1 + round % 4).bytes() {
                counts[usize::from(ch - b'a')] += 1;
            }
            let (from, to) = if with_c { (&abc, &ab) } else { (&ab, &abc) };
            let next = RoundRobin::new(&vec![1; to.len()]);
            next.resume_after(&current, &addrs(from), &addrs(to));
            current = next;
            with_c = !with_c;
        }
        assert!(counts[0].abs_diff(counts[1]) <= 1, "{counts:?}");
    }
}
