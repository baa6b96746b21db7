//! This process's memory of a route's updates: for each `update_id`, its stored
//! 2xx reply (once a bot gave one) and how many deliveries failed. A bounded LRU:
//! at most `MAX_ENTRIES` updates and `MAX_BYTES` of stored reply bodies per route,
//! the least recently used dropped first, and entries older than the route's
//! `dedup_ttl` treated as absent (and dropped when met).
//!
//! The bound in numbers: an entry is about 80 bytes in the map's table, its
//! reply shared with the previous update's when equal (bots mostly answer `{}`)
//! and otherwise a copy of at most 64 KiB; so a route's table stays under
//! 100 000 × 80 B + 32 MiB ≈ 40 MiB however many updates arrive, and in practice
//! the 100 000 entries — about an hour of 28 updates/s — bound it. Measured under
//! `benches/compare/telegram.sh` (45 000 updates/s, the table full): the proxy's
//! RSS 13 MiB above its plain-proxying figure, against 140 MiB with a boxed node
//! and a reply copy per entry.

use std::sync::Arc;
use std::time::Duration;

use schnellru::{ByLength, LruMap};
use tokio::time::Instant;

use super::Reply;

/// Updates remembered per route. Telegram re-sends within minutes, so the ones
/// that matter are the last few minutes' worth even for a busy bot.
pub const MAX_ENTRIES: usize = 100_000;

/// Reply bytes kept per route: with replies up to 64 KiB, 512 of the largest.
pub const MAX_BYTES: usize = 32 << 20;

/// How many failure reasons an update keeps for its dead letter (the first ones,
/// which say how it started failing, and the count says the rest).
const MAX_REASONS: usize = 10;

#[derive(Debug)]
struct Entry {
    /// When it was last written: it expires `ttl` after.
    at: Instant,
    done: Option<Arc<Reply>>,
    failures: u32,
    reasons: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Memory {
    /// Entries live in the map's own table: no allocation per update, which at
    /// 100 000 small allocations spread among each request's buffers kept whole
    /// pages of the heap alive (measured: 2.4 KB of RSS per entry with one boxed
    /// node each).
    entries: LruMap<i64, Entry, ByLength>,
    cap: usize,
    bytes: usize,
    ttl: Duration,
    /// The last reply stored: most bots answer every update alike (`{}`), so an
    /// equal reply shares it instead of holding a copy per update.
    last: Option<Arc<Reply>>,
}

impl Memory {
    pub(crate) fn new(ttl: Duration) -> Memory {
        Memory::with_capacity(ttl, MAX_ENTRIES)
    }

    pub(crate) fn with_capacity(ttl: Duration, entries: usize) -> Memory {
        Memory {
            // The limit is enforced here (`entry`), so that what leaves is known.
            entries: LruMap::new(ByLength::new(u32::MAX)),
            cap: entries.max(1),
            bytes: 0,
            ttl,
            last: None,
        }
    }

    /// The live entry of `id`, an expired one dropped.
    fn live(&mut self, id: i64, now: Instant) -> Option<&mut Entry> {
        let expired = self
            .entries
            .peek(&id)
            .is_some_and(|e| now.duration_since(e.at) >= self.ttl);
        if expired {
            self.remove(id);
            return None;
        }
        self.entries.get(&id)
    }

    fn remove(&mut self, id: i64) {
        if let Some(e) = self.entries.remove(&id) {
            self.bytes -= e.done.map_or(0, |r| r.body.len());
        }
    }

    /// Drops the least recently used entry.
    fn pop_oldest(&mut self) -> bool {
        match self.entries.pop_oldest() {
            Some((_, e)) => {
                self.bytes -= e.done.map_or(0, |r| r.body.len());
                true
            }
            None => false,
        }
    }

    /// What is known of `id` in one lookup: its stored reply and its failures.
    pub(crate) fn state(&mut self, id: i64) -> (Option<Arc<Reply>>, u32) {
        self.live(id, Instant::now())
            .map_or((None, 0), |e| (e.done.clone(), e.failures))
    }

    /// The stored reply of `id`, if a bot answered it with a 2xx.
    #[cfg(test)]
    pub(crate) fn done(&mut self, id: i64) -> Option<Arc<Reply>> {
        self.live(id, Instant::now())?.done.clone()
    }

    /// Deliveries of `id` that failed so far.
    #[cfg(test)]
    pub(crate) fn failures(&mut self, id: i64) -> u32 {
        self.live(id, Instant::now()).map_or(0, |e| e.failures)
    }

    /// The reasons the deliveries of `id` failed, the first ones.
    pub(crate) fn reasons(&mut self, id: i64) -> Vec<String> {
        self.live(id, Instant::now())
            .map_or_else(Vec::new, |e| e.reasons.clone())
    }

    fn entry(&mut self, id: i64) -> &mut Entry {
        let now = Instant::now();
        if self.live(id, now).is_none() {
            while self.entries.len() >= self.cap && self.pop_oldest() {}
            self.entries.insert(
                id,
                Entry {
                    at: now,
                    done: None,
                    failures: 0,
                    reasons: Vec::new(),
                },
            );
        }
        let e = self.entries.get(&id).expect("just made");
        e.at = now;
        e
    }

    /// A bot answered `id` with a 2xx: remember `reply`.
    pub(crate) fn set_done(&mut self, id: i64, reply: Arc<Reply>) {
        let reply = match &self.last {
            Some(last) if **last == *reply => Arc::clone(last),
            _ => {
                self.last = Some(Arc::clone(&reply));
                reply
            }
        };
        let len = reply.body.len();
        let e = self.entry(id);
        let old = e.done.replace(reply).map_or(0, |r| r.body.len());
        self.bytes = self.bytes + len - old;
        while self.bytes > MAX_BYTES && self.pop_oldest() {}
    }

    /// A delivery of `id` reached a bot and failed for `reason`: the failure count
    /// now.
    pub(crate) fn add_failure(&mut self, id: i64, reason: &str) -> u32 {
        let e = self.entry(id);
        e.failures += 1;
        if e.reasons.len() < MAX_REASONS {
            e.reasons.push(reason.to_owned());
        }
        e.failures
    }

    /// Raises the failure count of `id` to `n` (what the shared store counted
    /// across replicas), so that a fallback to memory goes on from there.
    pub(crate) fn note_failures(&mut self, id: i64, n: u32) {
        let e = self.entry(id);
        e.failures = e.failures.max(n);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::StatusCode;

    use super::*;

    fn reply(body: &'static [u8]) -> Arc<Reply> {
        Arc::new(Reply {
            status: StatusCode::OK,
            content_type: None,
            body: Bytes::from_static(body),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let mut m = Memory::new(Duration::from_secs(60));
        m.set_done(1, reply(b"{}"));
        assert_eq!(m.add_failure(2, "status 500"), 1);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(m.done(1).is_some());
        assert_eq!(m.failures(2), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(m.done(1).is_none());
        assert_eq!(m.failures(2), 0);
        assert_eq!(m.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_least_recently_used_out_first() {
        let mut m = Memory::with_capacity(Duration::from_secs(60), 3);
        for id in 0..3 {
            m.set_done(id, reply(b"{}"));
        }
        // Reading 0 makes 1 the least recently used.
        assert!(m.done(0).is_some());
        m.set_done(3, reply(b"{}"));
        assert_eq!(m.len(), 3);
        assert!(m.done(1).is_none());
        assert!(m.done(0).is_some() && m.done(3).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn stored_bytes_are_bounded() {
        let mut m = Memory::new(Duration::from_secs(60));
        static BIG: [u8; 64 * 1024] = [b'x'; 64 * 1024];
        let n = MAX_BYTES / BIG.len() + 10;
        for id in 0..n as i64 {
            m.set_done(id, reply(&BIG));
        }
        assert!(m.bytes <= MAX_BYTES);
        assert!(m.done(0).is_none(), "the oldest went first");
        assert!(m.done(n as i64 - 1).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_count_and_keep_their_first_reasons() {
        let mut m = Memory::new(Duration::from_secs(60));
        for i in 0..12 {
            assert_eq!(m.add_failure(7, &format!("status {i}")), i + 1);
        }
        let r = m.reasons(7);
        assert_eq!(r.len(), MAX_REASONS);
        assert_eq!(r[0], "status 0");
        m.note_failures(8, 4);
        m.note_failures(8, 2);
        assert_eq!(m.failures(8), 4);
    }
}
