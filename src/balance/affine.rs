//! Keyed placement whatever the upstream's own algorithm, for the Telegram mode
//! (reference T5): a key (a chat) always lands on the same server while that
//! server is eligible, and only an ineligible (down, drained, ejected) server's
//! keys move; requests without a key go to the least-loaded server.
//!
//! It is the `hash` algorithm's ketama ring without a load bound — a bound would
//! move a busy chat's updates to another bot, which is what the mode exists to
//! prevent (a slow-starting server still takes its keys back gradually, as on
//! the `hash` ring) — with `least_conn` instead of round-robin for keyless
//! requests: an update whose key could not be read is better off on the bot
//! with the least work.

use super::{Balancer, Candidate, Ketama, LeastConn, PickCtx};

#[derive(Debug)]
pub struct Affine {
    ring: Ketama,
    least: LeastConn,
}

impl Affine {
    pub fn new<S: Candidate>(servers: &[S]) -> Affine {
        let weights: Vec<u32> = servers.iter().map(Candidate::weight).collect();
        Affine {
            ring: Ketama::new(servers, &weights, None),
            least: LeastConn::new(&weights),
        }
    }
}

impl<S: Candidate> Balancer<S> for Affine {
    fn pick(&self, servers: &[S], ctx: &PickCtx<'_>) -> Option<usize> {
        match ctx.key {
            Some(_) => self.ring.pick(servers, ctx),
            None => self.least.pick(servers, ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake;
    use super::super::hash_bytes;
    use super::*;

    fn place(a: &Affine, servers: &[fake::Server], keys: u64) -> Vec<Option<usize>> {
        (0..keys)
            .map(|k| {
                a.pick(
                    servers,
                    &PickCtx::with_key(Some(hash_bytes(&k.to_le_bytes()))),
                )
            })
            .collect()
    }

    #[test]
    fn keys_stay_put_however_loaded_and_only_an_ineligible_servers_move() {
        let mut servers = fake::servers(&[1, 1, 1]);
        let a = Affine::new(&servers);
        let before = place(&a, &servers, 3000);
        // Load does not move a key: no bound.
        servers[0].inflight.set(1000);
        assert_eq!(place(&a, &servers, 3000), before);
        servers[1].eligible = false;
        let after = place(&a, &servers, 3000);
        for (b, a) in before.iter().zip(&after) {
            if *b == Some(1) {
                assert_ne!(*a, Some(1));
            } else {
                assert_eq!(a, b, "a key of a live server moved");
            }
        }
        // Every server has a fair share of keys.
        for s in 0..3 {
            let n = before.iter().filter(|p| **p == Some(s)).count();
            assert!((700..1300).contains(&n), "server {s}: {n} of 3000");
        }
    }

    #[test]
    fn keyless_requests_go_to_the_least_loaded() {
        let servers = fake::servers(&[1, 1, 1]);
        let a = Affine::new(&servers);
        servers[0].inflight.set(3);
        servers[1].inflight.set(1);
        servers[2].inflight.set(2);
        assert_eq!(a.pick(&servers, &PickCtx::default()), Some(1));
    }
}
