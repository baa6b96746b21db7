//! nginx's `random two least_conn`: two distinct servers drawn with probability
//! proportional to weight; the one with fewer in-flight requests per unit of weight
//! wins.

use super::{less_loaded, Balancer, Candidate, PickCtx, DRAWS};
use crate::rng;

#[derive(Debug)]
pub struct RandomTwo {
    /// Running sums of the weights, for weighted draws by binary search.
    cumulative: Box<[u64]>,
}

impl RandomTwo {
    pub fn new(weights: &[u32]) -> Self {
        let mut sum = 0;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        RandomTwo { cumulative }
    }

    fn draw(&self) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let r = ((u128::from(rng::next_u64()) * u128::from(total)) >> 64) as u64;
        Some(self.cumulative.partition_point(|&c| c <= r))
    }
}

impl<S: Candidate> Balancer<S> for RandomTwo {
    /// A slow-starting server's draw is kept with probability equal to its ramp, so
    /// it is drawn in proportion to its live weight.
    fn pick(&self, servers: &[S], ctx: &PickCtx<'_>) -> Option<usize> {
        let mut first: Option<usize> = None;
        for _ in 0..DRAWS * 2 {
            let Some(i) = self.draw() else { break };
            if !ctx.usable(servers, i) || first == Some(i) || !servers[i].ramp_admits() {
                continue;
            }
            match first {
                None => first = Some(i),
                Some(a) => {
                    return Some(if less_loaded(&servers[i], &servers[a]) {
                        i
                    } else {
                        a
                    })
                }
            }
        }
        // One eligible server, or unlucky draws: the least loaded eligible one.
        let mut best: Option<usize> = None;
        for (i, s) in servers.iter().enumerate() {
            if ctx.usable(servers, i)
                && s.weight() > 0
                && best.is_none_or(|b| less_loaded(s, &servers[b]))
            {
                best = Some(i);
            }
        }
        best
    }
}
