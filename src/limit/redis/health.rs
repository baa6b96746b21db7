//! What one store knows of its Redis across every worker: reachable or not (said
//! in the log once per change, not per request), how many decisions fell back,
//! how many replicas share the budget, when this replica next announces itself,
//! and what the store serves (rate limits, the Telegram mode's dedup), so that
//! the log says what falls back. Atomics only: every decision reads it, from
//! every worker.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock;

/// Nothing answered or failed yet.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// What a store serves (bits of `Health::uses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    RateLimits = 1,
    Dedup = 2,
}

/// The log's words for a store's changes, by what it serves.
struct Wording {
    connected: &'static str,
    lost: &'static str,
    back: &'static str,
}

const RATE_LIMITS: Wording = Wording {
    connected: "rate-limit store connected",
    lost: "rate-limit store unavailable: limits fall back to this replica's share \
           until it answers again",
    back: "rate-limit store reachable again: shared limits are back",
};

const DEDUP: Wording = Wording {
    connected: "Telegram dedup store connected",
    lost: "Telegram dedup store unavailable: deduplication falls back to this \
           replica's memory until it answers again",
    back: "Telegram dedup store reachable again: shared deduplication is back",
};

const BOTH: Wording = Wording {
    connected: "rate-limit store connected (Telegram dedup uses it too)",
    lost: "rate-limit store unavailable: limits fall back to this replica's share, \
           and Telegram dedup to this replica's memory, until it answers again",
    back: "rate-limit store reachable again: shared limits and Telegram dedup are back",
};

#[derive(Debug)]
pub(crate) struct Health {
    /// The store's address, for the log.
    shown: String,
    state: AtomicU8,
    fallbacks: AtomicU64,
    /// Replicas seen in the last announcement window, this one included.
    replicas: AtomicUsize,
    /// When the next decision announces this replica (`clock::nanos`).
    next_announce: AtomicU64,
    /// The `Use`s seen, as bits.
    uses: AtomicU8,
}

impl Health {
    pub(crate) fn new(shown: String) -> Health {
        Health {
            shown,
            state: AtomicU8::new(UNKNOWN),
            fallbacks: AtomicU64::new(0),
            replicas: AtomicUsize::new(1),
            next_announce: AtomicU64::new(0),
            uses: AtomicU8::new(0),
        }
    }

    /// The store serves `what` (a load first: every decision says so).
    pub(crate) fn used_for(&self, what: Use) {
        let bit = what as u8;
        if self.uses.load(Ordering::Relaxed) & bit == 0 {
            self.uses.fetch_or(bit, Ordering::Relaxed);
        }
    }

    fn wording(&self) -> &'static Wording {
        match self.uses.load(Ordering::Relaxed) {
            u if u == Use::Dedup as u8 => &DEDUP,
            u if u == Use::Dedup as u8 | Use::RateLimits as u8 => &BOTH,
            // A store nothing has used yet is the rate limiter's, as it always was.
            _ => &RATE_LIMITS,
        }
    }

    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// Redis answered. A load first, so that a healthy store's decisions do not
    /// all write one shared cache line.
    pub(crate) fn reached(&self) {
        if self.state.load(Ordering::Relaxed) != UP {
            match self.state.swap(UP, Ordering::Relaxed) {
                DOWN => tracing::info!(
                    redis = %self.shown,
                    fallbacks = self.fallbacks(),
                    "{}",
                    self.wording().back
                ),
                UNKNOWN => tracing::info!(redis = %self.shown, "{}", self.wording().connected),
                _ => {}
            }
        }
    }

    /// Redis cannot be used: decisions fall back until it answers again.
    pub(crate) fn lost(&self, why: &dyn Display) {
        if self.state.load(Ordering::Relaxed) != DOWN
            && self.state.swap(DOWN, Ordering::Relaxed) != DOWN
        {
            tracing::warn!(redis = %self.shown, error = %why, "{}", self.wording().lost);
        }
    }

    /// Whether the last word from Redis was an answer.
    pub(crate) fn up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    pub(crate) fn fell_back(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    pub(crate) fn replicas(&self) -> usize {
        self.replicas.load(Ordering::Relaxed)
    }

    /// Redis counted `n` replicas (this one among them, having just announced).
    pub(crate) fn saw_replicas(&self, n: usize) {
        self.replicas.store(n.max(1), Ordering::Relaxed);
    }

    /// Whether the decision made at `now` should announce this replica: the first
    /// one after each `every` does (one worker wins the turn).
    pub(crate) fn announce_due(&self, now: Instant, every: Duration) -> bool {
        let at = clock::nanos(now);
        let next = self.next_announce.load(Ordering::Relaxed);
        at >= next
            && self
                .next_announce
                .compare_exchange(
                    next,
                    at.saturating_add(every.as_nanos() as u64),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}
