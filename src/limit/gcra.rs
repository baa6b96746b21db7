//! The Generic Cell Rate Algorithm: nginx's `limit_req` leaky bucket, kept as one
//! timestamp per key instead of a level and a time.
//!
//! A key's state is its theoretical arrival time (TAT): when its bucket would be
//! empty again. Each accepted request moves it one emission interval `T` (= 1 /
//! rate) further. A request arriving at `now` finds `TAT − now` of earlier
//! requests still in the bucket (nginx's `excess`, in time instead of in
//! requests); more than `burst × T` and it is refused. So at rate `r` with burst
//! `b`, `b + 1` requests at once pass and the next is refused, as with nginx's
//! `limit_req … burst=b nodelay`; after that, one more passes every `T`.
//!
//! A key whose TAT is in the past is indistinguishable from one never seen:
//! its state may be dropped, so idle keys cost no memory.
//!
//! All times are nanoseconds on one monotonic clock (the local table) or on the
//! shared store's clock (Redis, which runs the same arithmetic in its script).

/// One limit's arithmetic: its emission interval, burst tolerance and delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// `T`: nanoseconds between two requests at the limit's rate.
    pub emission: u64,
    /// `burst × T`: how far ahead of `now` the TAT may be for a request to pass.
    pub tolerance: u64,
    /// How far ahead the TAT may be for a request to pass without waiting:
    /// `tolerance` with no delay (nginx's `nodelay`), `delay × T` otherwise.
    pub free: u64,
}

/// What a limit says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It passes: store `tat` as the key's new state, and hold the request back
    /// `wait` nanoseconds first (zero unless the limit delays).
    Pass { tat: u64, wait: u64 },
    /// It is refused and the state is unchanged; a request `retry_after`
    /// nanoseconds from now would pass.
    Refuse { retry_after: u64 },
}

impl Gcra {
    /// A limit of `per` / `per_nanos` (e.g. 1000 per 1e9 ns), letting `burst`
    /// requests beyond the rate through at once, the first `delay` of them
    /// without waiting (`None`: none waits).
    pub fn new(per: u64, per_nanos: u64, burst: u64, delay: Option<u64>) -> Gcra {
        let emission = (per_nanos / per.max(1)).max(1);
        let tolerance = emission.saturating_mul(burst);
        let free = match delay {
            None => tolerance,
            Some(d) => emission.saturating_mul(d).min(tolerance),
        };
        Gcra {
            emission,
            tolerance,
            free,
        }
    }

    /// The verdict on a request at `now` for a key whose stored TAT is `tat`
    /// (0 for a key with no state).
    pub fn check(&self, tat: u64, now: u64) -> Verdict {
        let tat = tat.max(now);
        let excess = tat - now;
        if excess > self.tolerance {
            Verdict::Refuse {
                retry_after: excess - self.tolerance,
            }
        } else {
            Verdict::Pass {
                tat: tat + self.emission,
                wait: excess.saturating_sub(self.free),
            }
        }
    }

    /// Whether a key whose TAT is `tat` holds anything at `now` (if not, its
    /// state may be dropped).
    pub fn live(tat: u64, now: u64) -> bool {
        tat > now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// Runs `n` requests at `now` against one key, returning how many passed.
    fn burst(g: &Gcra, tat: &mut u64, now: u64, n: usize) -> usize {
        let mut passed = 0;
        for _ in 0..n {
            if let Verdict::Pass { tat: t, .. } = g.check(*tat, now) {
                *tat = t;
                passed += 1;
            }
        }
        passed
    }

    #[test]
    fn a_burst_of_burst_plus_one_passes_and_the_next_is_refused() {
        for b in [0, 1, 5, 100] {
            let g = Gcra::new(10, SEC, b, None);
            let mut tat = 0;
            let now = 5 * SEC;
            assert_eq!(burst(&g, &mut tat, now, b as usize + 1), b as usize + 1);
            assert!(matches!(g.check(tat, now), Verdict::Refuse { .. }));
        }
    }

    #[test]
    fn after_the_burst_one_request_passes_per_interval() {
        let g = Gcra::new(10, SEC, 2, None);
        let mut tat = 0;
        let now = SEC;
        assert_eq!(burst(&g, &mut tat, now, 10), 3);
        // 100 ms later exactly one more fits; 99 ms later none does.
        assert_eq!(burst(&g, &mut tat.clone(), now + SEC / 10 - 1, 1), 0);
        assert_eq!(burst(&g, &mut tat, now + SEC / 10, 5), 1);
        // A steady 10/s over 10 s after the burst: 100 more.
        let mut passed = 0;
        for i in 1..=1000u64 {
            passed += burst(&g, &mut tat, now + SEC / 10 + i * SEC / 100, 1);
        }
        assert_eq!(passed, 100);
    }

    #[test]
    fn retry_after_is_when_the_next_request_would_pass() {
        let g = Gcra::new(1, SEC, 0, None);
        let mut tat = 0;
        assert_eq!(burst(&g, &mut tat, SEC, 1), 1);
        let Verdict::Refuse { retry_after } = g.check(tat, SEC + SEC / 4) else {
            panic!("a second request within the second is refused")
        };
        assert_eq!(retry_after, 3 * SEC / 4);
        assert!(matches!(
            g.check(tat, SEC + SEC / 4 + retry_after),
            Verdict::Pass { wait: 0, .. }
        ));
    }

    #[test]
    fn delay_holds_back_the_requests_past_it() {
        // 10/s, burst 5, delay 2: the first 3 go at once, the next 3 wait
        // 100, 200 and 300 ms (nginx's `delay=2`), the 7th is refused.
        let g = Gcra::new(10, SEC, 5, Some(2));
        let mut tat = 0;
        let waits: Vec<Option<u64>> = (0..7)
            .map(|_| match g.check(tat, SEC) {
                Verdict::Pass { tat: t, wait } => {
                    tat = t;
                    Some(wait / (SEC / 1000))
                }
                Verdict::Refuse { .. } => None,
            })
            .collect();
        assert_eq!(
            waits,
            [
                Some(0),
                Some(0),
                Some(0),
                Some(100),
                Some(200),
                Some(300),
                None
            ]
        );
    }

    #[test]
    fn an_idle_key_holds_nothing() {
        let g = Gcra::new(10, SEC, 0, None);
        let Verdict::Pass { tat, .. } = g.check(0, SEC) else {
            panic!()
        };
        assert!(Gcra::live(tat, SEC));
        assert!(!Gcra::live(tat, SEC + SEC / 10));
    }
}
