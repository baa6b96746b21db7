//! A list's decision when some of its limits live in Redis.
//!
//! The local limits go first, decided and charged at once (`local::decide`), so
//! a request they refuse costs no round trip. Then every shared limit the
//! request has a key for, in one `RedisStore::check` (the configuration puts a
//! list's shared limits in one store): Redis charges them if all pass. If Redis
//! refuses, the local charges are taken back (`local::refund`): a request refused
//! by one limit is charged to none. If Redis does not answer, the shared limits
//! are decided by this replica's fallback tables at its share of each limit
//! (`RedisStore::fallback`: rate ÷ replicas seen): a request is never failed
//! because of Redis.
//!
//! Why the local limits are charged before the round trip rather than checked,
//! then charged after it: requests on the same key decided during the round trip
//! would all pass an uncharged check, and a local limit would let through more
//! than its burst. Charged at once, it holds exactly; the price of a refund is
//! that a request decided meanwhile may see a budget smaller, for a round trip,
//! than it turns out to be.

use std::sync::Arc;

use super::key::IP_TEXT_MAX;
use super::local::{self, Charged};
use super::redis::{self, Limit, RedisStore, Space};
use super::{Decision, KeyRef, Limiter, RateTable, Store, MAX_LIMITS};

/// A rate limit whose budget every replica shares through a Redis store.
#[derive(Debug)]
pub struct SharedLimit {
    /// The store: one per URL per process (`Tables::redis`).
    pub store: Arc<RedisStore>,
    /// The limit's keys in Redis, named alike on every replica.
    pub space: Space,
    /// This replica's table for its share of the limit while the store does not
    /// answer.
    pub fallback: Arc<RateTable>,
}

/// `limit::check` for a list with shared limits.
pub(super) async fn check(limiters: &[Limiter], keys: &[Option<KeyRef<'_>>], now: u64) -> Decision {
    let n = limiters.len().min(keys.len()).min(MAX_LIMITS);
    let local = |i: usize| local::local_part(&limiters[i]);
    let mut charged = Charged::default();
    let wait = match local::decide(n, local, keys, now, Some(&mut charged)) {
        Decision::Pass { wait } => wait,
        refused => return refused,
    };
    // The shared limits the request has a key for, and their places in the list.
    let mut texts = [[0u8; IP_TEXT_MAX]; MAX_LIMITS];
    let mut limits = Vec::with_capacity(n);
    let mut index = [0usize; MAX_LIMITS];
    let mut store = None;
    for ((i, l), text) in limiters[..n].iter().enumerate().zip(texts.iter_mut()) {
        let (Store::Redis(s), Some(k)) = (&l.store, keys[i]) else {
            continue;
        };
        let first = store.get_or_insert(&s.store);
        debug_assert!(
            Arc::ptr_eq(first, &s.store),
            "the configuration puts a list's shared limits in one store"
        );
        index[limits.len()] = i;
        limits.push(Limit {
            space: &s.space,
            key: k.shared(text),
            gcra: l.gcra,
        });
    }
    let Some(store) = store else {
        return Decision::Pass { wait };
    };
    let shared = match store.check(&limits).await {
        Ok(redis::Decision::Pass { wait }) => Decision::Pass { wait },
        Ok(redis::Decision::Refuse {
            index: j,
            retry_after,
        }) => Decision::Refuse {
            index: index[j],
            retry_after,
        },
        // Counted in `fallbacks()` and logged (once per outage) by the store.
        Err(_) => local::decide(n, |i| fallback_part(&limiters[i]), keys, super::now(), None),
    };
    match shared {
        Decision::Pass { wait: w } => Decision::Pass { wait: wait.max(w) },
        refused => {
            local::refund(local, &charged);
            refused
        }
    }
}

/// A shared limiter's fallback table, at this replica's share of its limit.
fn fallback_part(l: &Limiter) -> Option<(&RateTable, super::Gcra)> {
    match &l.store {
        Store::Redis(s) => Some((&s.fallback, s.store.fallback(l.gcra))),
        Store::Local(_) => None,
    }
}
