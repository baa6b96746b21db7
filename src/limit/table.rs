//! The local store of one rate limit: key hash → TAT (the GCRA state, `gcra`), in
//! a table shared by every worker thread of the process.
//!
//! - **Sharded**: `SHARDS` maps, each behind its own mutex, the shard chosen by
//!   bits of the key's hash that the maps themselves do not use. A decision locks
//!   one shard for a lookup and a store (tens of nanoseconds), so two workers
//!   meet on a lock only when their keys share a shard, and then briefly.
//! - **Memory**: an entry is 16 bytes (hash and TAT) plus a control byte in a
//!   hashbrown map kept 44 to 88 % full: 20 to 40 bytes per live key.
//! - **Idle keys cost nothing**: a key whose TAT has passed is the same as one
//!   never seen (`Gcra::live`). `sweep` drops them, one shard at a time (at most
//!   `SHARD_CAP` entries visited per lock), and gives the memory back; the proxy
//!   runs it every `SWEEP_INTERVAL` (`Tables::sweep`).
//! - **Bounded**: at most `MAX_KEYS` live keys per limit (`SHARD_CAP` per shard),
//!   about 20 to 40 MiB at the very worst. A new key finding its shard full first
//!   drops that shard's expired entries (at most once per
//!   `FULL_SHARD_SWEEP_GAP`); if none has expired, it takes the place
//!   of the entry nearest to expiring among `EVICT_SAMPLE` the shard holds (its
//!   key starts again with a fresh budget, having lost the least: that entry was
//!   the closest to free anyway). nginx instead answers 503 once its zone is full
//!   and nothing can be expired; here every request is still decided, and a flood
//!   of new keys (an IPv6 /64, forged header values) costs the flooders' own,
//!   youngest entries first.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Shards per table: enough that the worker threads of a large machine rarely
/// meet on one lock, few enough that an idle table is a few kilobytes.
pub const SHARDS: usize = 64;

/// Live keys a limit tracks at most: ten times what nginx's usual 10 MB zone
/// holds (about 160 000 keys), enough for a million distinct clients within one
/// limit's window, while bounding what a key flood can make the proxy hold.
pub const MAX_KEYS: usize = 1 << 20;

/// Live keys per shard at most.
pub const SHARD_CAP: usize = MAX_KEYS / SHARDS;

/// Entries a full shard compares to choose the one a new key replaces: enough to
/// find a young entry (a flooder's) among them almost always, few enough to stay
/// within a cache line or two of work.
pub const EVICT_SAMPLE: usize = 8;

/// How often the proxy sweeps expired keys out of every table: a key costs memory
/// for at most its window plus this.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How long a full shard waits before looking for expired keys again: a pass
/// over `SHARD_CAP` entries takes tens of microseconds under the shard's lock,
/// which a flood of new keys must not make every request pay; in between, a new
/// key evicts at once.
pub const FULL_SHARD_SWEEP_GAP: Duration = Duration::from_millis(10);

/// A swept shard whose map has more than this many times the capacity its live
/// keys need gives the rest back.
const SHRINK_RATIO: usize = 4;

/// Below this capacity a shard keeps its map as is (a few hundred bytes).
const SHRINK_FLOOR: usize = 64;

/// One limit's table.
#[derive(Debug)]
pub struct RateTable {
    shards: Box<[Mutex<Shard>]>,
    /// Live keys replaced because their shard was full.
    evicted: AtomicU64,
    /// Whether the first eviction was logged (once per table: a flood would
    /// otherwise flood the log too).
    warned: AtomicBool,
}

/// One shard: key hash → TAT (nanoseconds on `clock::nanos`).
#[derive(Debug, Default)]
pub struct Shard {
    map: HashMap<u64, u64, BuildHasherDefault<Prehashed>>,
    /// When a full shard may next look for expired keys to make room.
    next_full_sweep: u64,
}

impl Default for RateTable {
    fn default() -> Self {
        RateTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            evicted: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }
}

impl RateTable {
    /// The shard holding `key`: bits 32 to 37 of its hash. hashbrown places an
    /// entry by the low bits and tags it with the top seven, so keys that share a
    /// shard still spread over its map.
    pub fn shard(&self, key: u64) -> &Mutex<Shard> {
        &self.shards[shard_index(key)]
    }

    /// Locks `key`'s shard (a poisoned lock is taken over: a shard is a plain map,
    /// consistent between any two statements).
    pub fn lock(&self, key: u64) -> MutexGuard<'_, Shard> {
        lock(self.shard(key))
    }

    /// Live and expired-but-unswept keys held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live keys replaced so far because their shard was full.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Drops the keys whose TAT is not after `now`, one shard at a time, and
    /// shrinks maps that emptied. Returns how many were dropped.
    pub fn sweep(&self, now: u64) -> usize {
        self.shards.iter().map(|s| lock(s).sweep(now)).sum()
    }

    /// Stores `tat` for `key` in `shard` (locked by the caller, from
    /// `self.shard(key)`), making room if the shard is full.
    pub fn store(&self, shard: &mut Shard, key: u64, tat: u64, now: u64) {
        if let Some(t) = shard.map.get_mut(&key) {
            *t = tat;
            return;
        }
        if shard.map.len() >= SHARD_CAP && shard.make_room(now) == 0 {
            shard.evict_one();
            self.evicted.fetch_add(1, Ordering::Relaxed);
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_keys = MAX_KEYS,
                    "a rate limit's table is full of live keys: new keys now replace the entries nearest to expiring"
                );
            }
        }
        shard.map.insert(key, tat);
    }
}

impl Shard {
    /// The TAT stored for `key` (0: none, which `Gcra::check` reads as a key
    /// with nothing in its bucket).
    pub fn tat(&self, key: u64) -> u64 {
        self.map.get(&key).copied().unwrap_or(0)
    }

    /// Replaces the TAT of a key the shard holds (0 drops it): how a refund
    /// takes a charge back. Never adds a key, so never needs room.
    pub fn set(&mut self, key: u64, tat: u64) {
        if tat == 0 {
            self.map.remove(&key);
        } else if let Some(t) = self.map.get_mut(&key) {
            *t = tat;
        }
    }

    /// A full shard's sweep, at most once per `FULL_SHARD_SWEEP_GAP`; how many
    /// keys it dropped.
    fn make_room(&mut self, now: u64) -> usize {
        if now < self.next_full_sweep {
            return 0;
        }
        self.next_full_sweep = now + FULL_SHARD_SWEEP_GAP.as_nanos() as u64;
        self.sweep(now)
    }

    fn sweep(&mut self, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, tat| super::gcra::Gcra::live(*tat, now));
        let live = self.map.len();
        if self.map.capacity() > SHRINK_FLOOR && self.map.capacity() > live * SHRINK_RATIO {
            self.map.shrink_to(live * 2);
        }
        before - live
    }

    /// Removes the entry nearest to expiring among the first `EVICT_SAMPLE` the
    /// map yields. Its order is that of the keyed hash, which clients cannot
    /// predict.
    fn evict_one(&mut self) {
        let victim = self
            .map
            .iter()
            .take(EVICT_SAMPLE)
            .min_by_key(|(_, tat)| **tat)
            .map(|(k, _)| *k);
        if let Some(k) = victim {
            self.map.remove(&k);
        }
    }
}

/// The shard of a table (rate or `limit_conn`) holding the key hash `key`: bits
/// 32 to 37 (`RateTable::shard` says why those).
pub(super) fn shard_index(key: u64) -> usize {
    (key >> 32) as usize % SHARDS
}

/// Locks a shard; a poisoned lock is taken over (a shard is a plain map,
/// consistent between any two statements).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The identity hasher of a map whose keys are hashes already.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::key::KeyRef;

    const SEC: u64 = 1_000_000_000;

    fn key(i: u64) -> u64 {
        KeyRef::Bytes(&i.to_le_bytes()).hash()
    }

    fn put(t: &RateTable, k: u64, tat: u64, now: u64) {
        let mut s = t.lock(k);
        t.store(&mut s, k, tat, now);
    }

    #[test]
    fn a_sweep_drops_expired_keys_only_and_gives_memory_back() {
        let t = RateTable::default();
        for i in 0..10_000 {
            // Half expire at 2 s, half at 20 s.
            let tat = if i % 2 == 0 { 2 * SEC } else { 20 * SEC };
            put(&t, key(i), tat, SEC);
        }
        assert_eq!(t.len(), 10_000);
        assert_eq!(t.sweep(SEC), 0, "nothing has expired at 1 s");
        assert_eq!(t.sweep(2 * SEC), 5_000, "a TAT of now is expired");
        assert_eq!(t.len(), 5_000);
        for i in (1..10_000).step_by(2) {
            assert_eq!(t.lock(key(i)).tat(key(i)), 20 * SEC);
        }
        let capacity =
            |t: &RateTable| -> usize { t.shards.iter().map(|s| lock(s).map.capacity()).sum() };
        assert!(capacity(&t) >= 5_000);
        assert_eq!(t.sweep(30 * SEC), 5_000);
        assert!(t.is_empty());
        // Every shard is back to at most its floor.
        assert!(
            capacity(&t) <= SHARDS * SHRINK_FLOOR * 2,
            "{}",
            capacity(&t)
        );
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let t = RateTable::default();
        for i in 0..64_000 {
            put(&t, key(i), 10 * SEC, SEC);
        }
        for s in t.shards.iter() {
            let n = lock(s).map.len();
            // 1 000 expected per shard; a keyed hash keeps them within ±20 %.
            assert!((800..=1_200).contains(&n), "{n}");
        }
    }

    #[test]
    fn a_full_shard_drops_expired_keys_first_then_the_nearest_to_expiring() {
        let t = RateTable::default();
        // Fill one shard: keys whose shard index is 0.
        let mut keys = (0u64..).map(key).filter(|&k| shard_index(k) == 0);
        let first: Vec<u64> = keys.by_ref().take(SHARD_CAP).collect();
        for (i, &k) in first.iter().enumerate() {
            // One expired key among them; the others live until 100 s + i ns.
            let tat = if i == 7 { SEC } else { 100 * SEC + i as u64 };
            put(&t, k, tat, SEC);
        }
        assert_eq!(lock(&t.shards[0]).map.len(), SHARD_CAP);
        // A new key at 2 s: the expired one goes, no live key is evicted.
        let a = keys.next().unwrap();
        put(&t, a, 50 * SEC, 2 * SEC);
        assert_eq!(t.evicted(), 0);
        assert_eq!(lock(&t.shards[0]).map.len(), SHARD_CAP);
        assert_eq!(t.lock(first[7]).tat(first[7]), 0);
        // Another, 1 ms later: no sweep so soon (it would find nothing), a live
        // entry makes room at once: the nearest to expiring of a sample.
        let b = keys.next().unwrap();
        put(&t, b, 200 * SEC, 2 * SEC + 1_000_000);
        assert_eq!(t.evicted(), 1);
        assert_eq!(lock(&t.shards[0]).map.len(), SHARD_CAP);
        assert_eq!(t.lock(b).tat(b), 200 * SEC, "the new key is stored");
        // The other shards were not touched.
        assert_eq!(t.len(), SHARD_CAP);
        // Updating a key of a full shard evicts nothing.
        put(&t, b, 300 * SEC, 2 * SEC);
        assert_eq!(t.evicted(), 1);
        // Once the gap has passed, a full shard sweeps again before evicting:
        // at 150 s every key but `b` has expired, and they make the room.
        let c = keys.next().unwrap();
        put(&t, c, 200 * SEC, 150 * SEC);
        assert_eq!(t.evicted(), 1, "expired keys made room");
        assert_eq!(lock(&t.shards[0]).map.len(), 2);
        assert_eq!(t.lock(a).tat(a), 0);
    }
}
