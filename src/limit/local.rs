//! The local store's decision over all of a request's limits at once: every
//! limit must pass, and a request refused by one is charged to none.
//!
//! The shards of every key involved are locked together, in address order (so
//! two requests can never wait on each other's locks), the verdicts computed, and
//! the new TATs stored only if every limit passed. Holding the locks from the
//! first read to the last store makes each decision atomic: two workers deciding
//! for one key at once cannot both take the last unit of its burst.
//!
//! With shared limits in the list (`shared`), the local ones are decided here
//! first, each charge recorded (`Charged`) so that `refund` can take it back if
//! the shared store then refuses the request.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::gcra::{Gcra, Verdict};
use super::table::{self, RateTable, Shard};
use super::{Decision, KeyRef, Limiter, Store, MAX_LIMITS};

/// The decision for `keys[i]` under `limiters[i]`, each in a local store; a `None`
/// key is not counted by its limit (the request lacks the header or cookie it
/// counts by, as nginx does not account a request with an empty key). Limits past
/// `MAX_LIMITS` are ignored (the configuration refuses them).
pub fn check(limiters: &[Limiter], keys: &[Option<KeyRef<'_>>], now: u64) -> Decision {
    let n = limiters.len().min(keys.len()).min(MAX_LIMITS);
    if n == 1 {
        if let Store::Local(t) = &limiters[0].store {
            return one(t, &limiters[0].gcra, keys[0], now);
        }
    }
    decide(n, |i| local_part(&limiters[i]), keys, now, None)
}

/// A limiter's table and arithmetic if its state is local.
pub(super) fn local_part(l: &Limiter) -> Option<(&RateTable, Gcra)> {
    match &l.store {
        Store::Local(t) => Some((t, l.gcra)),
        Store::Redis(_) => None,
    }
}

/// What a decision charged, to take it back (`refund`) when another store
/// refuses the request after all.
#[derive(Debug, Default)]
pub(super) struct Charged {
    n: usize,
    /// Limit index, key hash, the TAT before and the TAT stored.
    entries: [(usize, u64, u64, u64); MAX_LIMITS],
}

/// The all-or-nothing decision over the first `n` limits whose `part(i)` is a
/// local table (the others are left to their store) for `keys[i]`. Records what
/// it charged in `charged` if given.
pub(super) fn decide<'t>(
    n: usize,
    part: impl Fn(usize) -> Option<(&'t RateTable, Gcra)>,
    keys: &[Option<KeyRef<'_>>],
    now: u64,
    mut charged: Option<&mut Charged>,
) -> Decision {
    let n = n.min(keys.len()).min(MAX_LIMITS);
    // The charged limits' tables, their keys' hashes and order of locking.
    let mut tables: [Option<&RateTable>; MAX_LIMITS] = [None; MAX_LIMITS];
    let mut hashes = [0u64; MAX_LIMITS];
    let mut order = [0usize; MAX_LIMITS];
    let mut m = 0;
    for (i, k) in keys[..n].iter().enumerate() {
        let (Some(k), Some((t, _))) = (k, part(i)) else {
            continue;
        };
        tables[i] = Some(t);
        // Limits of a list often count by the same key: hash it once.
        hashes[i] = match order[..m].iter().find(|&&j| keys[j] == Some(*k)) {
            Some(&j) => hashes[j],
            None => k.hash(),
        };
        order[m] = i;
        m += 1;
    }
    let table = |i: usize| tables[i].unwrap_or_else(|| unreachable!("only charged limits"));
    let shard = |i: usize| table(i).shard(hashes[i]);
    let charged_now = &mut order[..m];
    charged_now.sort_unstable_by_key(|&i| shard(i) as *const Mutex<Shard> as usize);
    // guards[holder[i]] is limit i's locked shard (two limits may share one).
    let mut guards: [Option<MutexGuard<'_, Shard>>; MAX_LIMITS] = Default::default();
    let mut holder = [0usize; MAX_LIMITS];
    let mut previous: Option<(usize, &Mutex<Shard>)> = None;
    for &i in charged_now.iter() {
        let s = shard(i);
        holder[i] = match previous {
            Some((h, p)) if std::ptr::eq(p, s) => h,
            _ => {
                guards[i] = Some(table::lock(s));
                i
            }
        };
        previous = Some((holder[i], s));
    }
    charged_now.sort_unstable();
    let mut verdicts = [Verdict::Refuse { retry_after: 0 }; MAX_LIMITS];
    let mut before = [0u64; MAX_LIMITS];
    let mut refused: Option<(usize, u64)> = None;
    for &i in charged_now.iter() {
        before[i] = guards[holder[i]].as_ref().map_or(0, |g| g.tat(hashes[i]));
        let gcra = part(i).map_or_else(|| unreachable!("only charged limits"), |p| p.1);
        verdicts[i] = gcra.check(before[i], now);
        if let Verdict::Refuse { retry_after } = verdicts[i] {
            // The first refusing limit names the refusal; the client may come back
            // when the last of them would let it through.
            refused = Some(match refused {
                None => (i, retry_after),
                Some((first, r)) => (first, r.max(retry_after)),
            });
        }
    }
    if let Some((index, retry_after)) = refused {
        return Decision::Refuse {
            index,
            retry_after: Duration::from_nanos(retry_after),
        };
    }
    let mut wait = 0;
    for &i in charged_now.iter() {
        if let (Verdict::Pass { tat, wait: w }, Some(g)) = (verdicts[i], &mut guards[holder[i]]) {
            table(i).store(g, hashes[i], tat, now);
            wait = wait.max(w);
            if let Some(c) = charged.as_deref_mut() {
                c.entries[c.n] = (i, hashes[i], before[i], tat);
                c.n += 1;
            }
        }
    }
    Decision::Pass {
        wait: Duration::from_nanos(wait),
    }
}

/// Takes back what a decision `charged` under `part`'s tables: a key nobody
/// charged since gets its TAT from before; one charged since by other requests
/// (which each added their interval on top of this one's) is moved back one
/// emission interval. A key swept or evicted in between is left as it is.
pub(super) fn refund<'t>(part: impl Fn(usize) -> Option<(&'t RateTable, Gcra)>, charged: &Charged) {
    for &(i, hash, before, stored) in &charged.entries[..charged.n] {
        let Some((table, gcra)) = part(i) else {
            continue;
        };
        let mut shard = table.lock(hash);
        let current = shard.tat(hash);
        if current == stored {
            shard.set(hash, before);
        } else if current > stored {
            shard.set(hash, current - gcra.emission);
        }
    }
}

/// The decision for a single limit (the usual case): one shard, one lock.
fn one(table: &RateTable, gcra: &Gcra, key: Option<KeyRef<'_>>, now: u64) -> Decision {
    let Some(key) = key else {
        return Decision::Pass {
            wait: Duration::ZERO,
        };
    };
    let h = key.hash();
    let mut shard = table.lock(h);
    match gcra.check(shard.tat(h), now) {
        Verdict::Pass { tat, wait } => {
            table.store(&mut shard, h, tat, now);
            Decision::Pass {
                wait: Duration::from_nanos(wait),
            }
        }
        Verdict::Refuse { retry_after } => Decision::Refuse {
            index: 0,
            retry_after: Duration::from_nanos(retry_after),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn limiter(per: u64, per_nanos: u64, burst: u64, delay: Option<u64>) -> Limiter {
        Limiter {
            gcra: Gcra::new(per, per_nanos, burst, delay),
            store: Store::Local(Arc::new(RateTable::default())),
        }
    }

    fn passes(d: Decision) -> bool {
        matches!(d, Decision::Pass { .. })
    }

    #[test]
    fn a_request_refused_by_one_limit_is_charged_to_none() {
        // 10/s burst 4 and 6/m burst 2: the per-minute one refuses the 4th.
        let limits = [limiter(10, SEC, 4, None), limiter(6, 60 * SEC, 2, None)];
        let key = Some(KeyRef::Ip("192.0.2.1".parse().unwrap()));
        let now = 10 * SEC;
        let passed = (0..10)
            .filter(|_| passes(check(&limits, &[key, key], now)))
            .count();
        assert_eq!(passed, 3);
        match check(&limits, &[key, key], now) {
            Decision::Refuse { index, retry_after } => {
                assert_eq!(index, 1);
                assert_eq!(retry_after, Duration::from_secs(10));
            }
            d => panic!("{d:?}"),
        }
        // The per-second limit was charged 3 times, not 10: 2 more fit its burst.
        let alone = &limits[..1];
        assert!(passes(check(alone, &[key], now)));
        assert!(passes(check(alone, &[key], now)));
        assert!(!passes(check(alone, &[key], now)));
    }

    #[test]
    fn a_refund_takes_a_charge_back_even_under_later_ones() {
        // 10/s burst 2: three pass at once.
        let limits = [limiter(10, SEC, 2, None), limiter(100, SEC, 0, None)];
        let key = Some(KeyRef::Whole);
        let part = |i: usize| local_part(&limits[i]);
        let now = 10 * SEC;
        let mut charged = Charged::default();
        assert!(passes(decide(
            2,
            part,
            &[key, None],
            now,
            Some(&mut charged)
        )));
        assert_eq!(charged.n, 1, "only the limit with a key was charged");
        // Nobody charged since: back to nothing at all.
        refund(part, &charged);
        let mut charged = Charged::default();
        assert!(passes(decide(1, part, &[key], now, Some(&mut charged))));
        // Charged twice more since by others: one interval is taken off.
        assert!(passes(decide(1, part, &[key], now, None)));
        assert!(passes(decide(1, part, &[key], now, None)));
        assert!(!passes(decide(1, part, &[key], now, None)));
        refund(part, &charged);
        assert!(passes(decide(1, part, &[key], now, None)));
        assert!(!passes(decide(1, part, &[key], now, None)));
    }

    #[test]
    fn a_missing_key_is_not_counted_and_keys_are_kept_apart() {
        let limits = [limiter(1, SEC, 0, None)];
        let now = 10 * SEC;
        for _ in 0..5 {
            assert!(passes(check(&limits, &[None], now)));
        }
        let (a, b) = (Some(KeyRef::Bytes(b"a")), Some(KeyRef::Bytes(b"b")));
        assert!(passes(check(&limits, &[a], now)));
        assert!(passes(check(&limits, &[b], now)));
        assert!(!passes(check(&limits, &[a], now)));
    }

    #[test]
    fn two_limits_in_one_shard_lock_it_once() {
        // One table for both (the configuration never does this, but a decision
        // must not deadlock on it): the same key is charged twice per request.
        let t = Arc::new(RateTable::default());
        let l = |burst| Limiter {
            gcra: Gcra::new(1, SEC, burst, None),
            store: Store::Local(Arc::clone(&t)),
        };
        let limits = [l(3), l(3)];
        let key = Some(KeyRef::Whole);
        assert!(passes(check(&limits, &[key, key], SEC)));
    }

    #[test]
    fn the_wait_is_the_longest_any_limit_asks() {
        // 10/s burst 2 delay 0 (all wait) with 100/s burst 10, no wait.
        let limits = [limiter(10, SEC, 2, Some(0)), limiter(100, SEC, 10, None)];
        let key = Some(KeyRef::Whole);
        let waits: Vec<Duration> = (0..3)
            .map(|_| match check(&limits, &[key, key], SEC) {
                Decision::Pass { wait } => wait,
                d => panic!("{d:?}"),
            })
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(waits, [ms(0), ms(100), ms(200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_paused_clock_drives_a_steady_rate() {
        // 5/s, burst 0, one request every 50 ms for 2 s of paused time: exactly
        // one in four passes (one per 200 ms), 10 in all.
        use tokio::time::{advance, Instant};
        let limits = [limiter(5, SEC, 0, None)];
        let key = Some(KeyRef::Whole);
        let mut passed = 0;
        for _ in 0..40 {
            let now = crate::clock::nanos(Instant::now());
            passed += usize::from(passes(check(&limits, &[key], now)));
            advance(Duration::from_millis(50)).await;
        }
        assert_eq!(passed, 10);
    }
}
