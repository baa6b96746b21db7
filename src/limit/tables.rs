//! The limiters' tables, kept outside the configuration snapshots (like the
//! per-server state) so that a reload does not hand every client a fresh budget.
//!
//! A table is found by an id naming where its limit is declared and the settings
//! its state depends on (`RateLimitConfig::state_id`): a reload that keeps a
//! limit's place and settings keeps its table, one that changes them starts a
//! fresh one, and the tables of limits gone from the configuration are dropped
//! once the snapshots that use them are. `limit_conn` tables depend on no setting
//! (the counts are facts, whatever `max` is now), so they carry over by place.
//!
//! The Redis stores are kept here too, one per URL: opened (without I/O) when a
//! configuration first names the URL, shared by every limit naming it and by
//! the snapshots that follow, and let go like a table once no limit of the
//! current configuration names it (its connections close when the last snapshot
//! using it is gone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::conn::ConnTable;
use super::redis::RedisStore;
use super::table::RateTable;

/// Every limiter table of one proxy.
#[derive(Debug, Default)]
pub struct Tables {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by `begin`: a table not asked for since is not in the configuration
    /// being built.
    generation: u64,
    rate: HashMap<String, (Arc<RateTable>, u64)>,
    conn: HashMap<String, (Arc<ConnTable>, u64)>,
    /// By URL as written.
    redis: HashMap<String, (Arc<RedisStore>, u64)>,
}

impl Tables {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts building a configuration's snapshot: the tables it asks for until
    /// `finish` are kept, the others let go then.
    pub fn begin(&self) {
        self.lock().generation += 1;
    }

    /// Lets go of the tables the configuration just built did not ask for (the
    /// old snapshot keeps its own until its last request ends).
    pub fn finish(&self) {
        let mut inner = self.lock();
        let g = inner.generation;
        inner.rate.retain(|_, (_, used)| *used == g);
        inner.conn.retain(|_, (_, used)| *used == g);
        inner.redis.retain(|_, (_, used)| *used == g);
    }

    /// The rate table with id `id`, the existing one if any.
    pub fn rate(&self, id: String) -> Arc<RateTable> {
        let inner = &mut *self.lock();
        keep(&mut inner.rate, id, inner.generation, Arc::default)
    }

    /// The `limit_conn` table with id `id`, the existing one if any.
    pub fn conn(&self, id: String) -> Arc<ConnTable> {
        let inner = &mut *self.lock();
        keep(&mut inner.conn, id, inner.generation, Arc::default)
    }

    /// The Redis store at `url` (checked by the configuration: `check_url`), the
    /// existing one if any.
    pub fn redis(&self, url: &str) -> Arc<RedisStore> {
        let inner = &mut *self.lock();
        keep(&mut inner.redis, url.to_owned(), inner.generation, || {
            RedisStore::open(url)
                .unwrap_or_else(|e| panic!("the configuration let through a bad store URL: {e}"))
        })
    }

    /// Every Redis store kept, for the metrics and the status page.
    pub fn redis_stores(&self) -> Vec<Arc<RedisStore>> {
        self.lock()
            .redis
            .values()
            .map(|(s, _)| Arc::clone(s))
            .collect()
    }

    /// Drops the expired keys of every rate table (`RateTable::sweep`), returning
    /// how many. The registry's lock is held only to list the tables.
    pub fn sweep(&self, now: u64) -> usize {
        self.rate_tables().iter().map(|t| t.sweep(now)).sum()
    }

    /// Keys held by every rate table (live ones, and expired ones not swept yet).
    pub fn rate_keys(&self) -> usize {
        self.rate_tables().iter().map(|t| t.len()).sum()
    }

    /// Every rate table, listed under the registry's lock and used after it.
    fn rate_tables(&self) -> Vec<Arc<RateTable>> {
        self.lock()
            .rate
            .values()
            .map(|(t, _)| Arc::clone(t))
            .collect()
    }

    /// How many rate and `limit_conn` tables are kept.
    pub fn count(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.rate.len(), inner.conn.len())
    }
}

/// The entry `id` of `map` (made by `make` if there is none), marked as asked
/// for in generation `g`, so that `Tables::finish` keeps it.
fn keep<T>(
    map: &mut HashMap<String, (Arc<T>, u64)>,
    id: String,
    g: u64,
    make: impl FnOnce() -> Arc<T>,
) -> Arc<T> {
    let (t, used) = map.entry(id).or_insert_with(|| (make(), g));
    *used = g;
    Arc::clone(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_asked_for_again_is_the_same_and_one_left_out_goes() {
        let t = Tables::default();
        t.begin();
        let a = t.rate("route /a/#0 10/s".into());
        let b = t.rate("route /b/#0 10/s".into());
        let c = t.conn("route /a/#0".into());
        t.finish();
        assert_eq!(t.count(), (2, 1));
        t.begin();
        let a2 = t.rate("route /a/#0 10/s".into());
        let b2 = t.rate("route /b/#0 20/s".into());
        t.finish();
        assert!(Arc::ptr_eq(&a, &a2), "same place and settings: kept");
        assert!(!Arc::ptr_eq(&b, &b2), "new settings: a fresh table");
        assert_eq!(
            t.count(),
            (2, 0),
            "the old /b/ table and the conn table went"
        );
        drop(c);
    }

    #[test]
    fn a_store_is_opened_once_per_url_and_let_go_when_no_limit_names_it() {
        let t = Tables::default();
        let url = "redis+unix:///run/redis.sock";
        t.begin();
        let a = t.redis(url);
        let b = t.redis(url);
        let other = t.redis("redis://127.0.0.1:6379/1");
        t.finish();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(t.redis_stores().len(), 2);
        t.begin();
        let a2 = t.redis(url);
        t.finish();
        assert!(Arc::ptr_eq(&a, &a2), "kept across a reload that names it");
        assert_eq!(t.redis_stores().len(), 1, "the other one went");
        t.begin();
        t.finish();
        assert!(t.redis_stores().is_empty());
        // The snapshots still holding it keep it until they go.
        assert_eq!(a.address(), url);
    }
}
