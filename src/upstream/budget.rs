//! Retry budget per upstream, as Finagle and linkerd define it: retries may add at
//! most `RETRY_RATIO` of the upstream's requests over the last `WINDOW`, plus a
//! reserve of `MIN_RETRIES_PER_SEC`, so a failing fleet is not hammered by retries
//! on top of its normal load.
//!
//! tower's `TpsBudget` does this too, but deposits on every request under a mutex.
//! Here the request path pays nothing: the requests in the window come from the
//! servers' existing request counters, read only when a retry asks for budget, and
//! the window's slots rotate then.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::stamp;

/// Finagle's default budget: retries may add 20 % to the load.
pub(super) const RETRY_RATIO: f64 = 0.2;
/// Finagle's minimum: a quiet upstream can still retry a few requests a second.
pub(super) const MIN_RETRIES_PER_SEC: u64 = 3;
/// Finagle's and linkerd's window.
pub(super) const WINDOW: Duration = Duration::from_secs(10);
const SLOTS: usize = 10;
const SLOT_MS: u32 = (WINDOW.as_millis() / SLOTS as u128) as u32;

#[derive(Debug)]
pub struct RetryBudget {
    created: Instant,
    window: Mutex<Window>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            created: Instant::now(),
            window: Mutex::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    /// Slot number (stamp / SLOT_MS) of `slots[head]`; 0 before the first use.
    head_slot: u32,
    head: usize,
    /// Per slot: the upstream's request total when the slot began, and the retries
    /// taken during it.
    slots: [(u64, u64); SLOTS],
}

impl RetryBudget {
    /// Takes one retry from the budget if there is room. `requests` is the
    /// upstream's request total so far (every attempt, retries included).
    pub fn withdraw(&self, now: Instant, requests: u64) -> bool {
        let slot = stamp(now) / SLOT_MS + 1;
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.head_slot == 0 {
            // First retry: assume the requests so far came at an even rate, so a
            // busy upstream has its share of budget from the start.
            let age = now.saturating_duration_since(self.created);
            let recent = if age <= WINDOW {
                requests
            } else {
                (requests as f64 * WINDOW.as_secs_f64() / age.as_secs_f64()) as u64
            };
            w.slots = [(requests - recent, 0); SLOTS];
            w.head_slot = slot;
        }
        // Slots that began since the last call start with today's total: requests
        // before a quiet spell are then not counted, which errs on the strict side.
        let steps = slot.wrapping_sub(w.head_slot).min(SLOTS as u32);
        for _ in 0..steps {
            w.head = (w.head + 1) % SLOTS;
            let h = w.head;
            w.slots[h] = (requests, 0);
        }
        w.head_slot = slot;
        let oldest = w.slots[(w.head + 1) % SLOTS].0;
        let retries: u64 = w.slots.iter().map(|s| s.1).sum();
        let first_tries = requests.saturating_sub(oldest).saturating_sub(retries);
        let reserve = MIN_RETRIES_PER_SEC * WINDOW.as_secs();
        let allowed = (first_tries as f64 * RETRY_RATIO) as u64 + reserve;
        if retries >= allowed {
            return false;
        }
        let h = w.head;
        w.slots[h].1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_capped_at_a_fifth_of_requests_plus_a_reserve() {
        let b = RetryBudget::default();
        let now = Instant::now();
        // A quiet upstream: the reserve (3/s over 10 s) and no more.
        let taken = (0..100).filter(|_| b.withdraw(now, 0)).count();
        assert_eq!(taken, 30);

        // 1 000 requests a second for 10 s: 20 % of them may be retried.
        let b = RetryBudget::default();
        let mut total = 0;
        let mut taken = 0;
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            total += 1000;
            while b.withdraw(Instant::now(), total + taken) {
                taken += 1;
            }
        }
        assert_eq!(taken, 30 + 2000, "{taken}");

        // Ten quiet seconds later only the reserve is left.
        tokio::time::advance(Duration::from_secs(11)).await;
        let t = Instant::now();
        let more = (0..100).filter(|_| b.withdraw(t, total + taken)).count();
        assert_eq!(more, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_upstream_has_budget_at_its_first_retry() {
        // 100 000 requests over 100 s at an even rate: 10 000 in the window.
        let b = RetryBudget::default();
        tokio::time::advance(Duration::from_secs(100)).await;
        let now = Instant::now();
        let mut taken = 0;
        // Each retry taken is also a request the servers count.
        while b.withdraw(now, 100_000 + taken) {
            taken += 1;
        }
        assert_eq!(taken, 30 + 2000, "{taken}");
    }
}
