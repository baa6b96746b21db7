//! Deduplication and coalescing by `update_id` (reference T9), per route.
//!
//! An update is in flight while a bot has it and done once a bot answered it
//! with a 2xx. Three layers, asked in this order:
//! - this process's deliveries in flight (`local`): a re-send that arrives while
//!   the first delivery runs here waits for that delivery's outcome, whatever it
//!   is, and reaches no bot;
//! - this process's memory (`memory::Memory`, a bounded LRU): stored 2xx replies
//!   and failure counts;
//! - with `dedup_store = "redis://…"`, the store every replica shares
//!   (`redis::RedisDedup`): claimed with an expiring in-flight mark, so a re-send
//!   that lands on another replica waits for (polls) the result there.
//!
//! Redis must never fail an update: an error falls back to this process's memory
//! and is counted (`switchyard_telegram_dedup_fallback_total`); replies are
//! written to memory too, so they survive a Redis outage here.
//!
//! A delivery's outcome goes out on a `watch` channel held by its `Ticket`, which
//! the delivery task owns: the request that started it is only the first waiter,
//! and may give up at its deadline while the delivery goes on.

mod memory;
pub mod redis;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;

use memory::Memory;
pub use memory::{MAX_BYTES, MAX_ENTRIES};
use redis::RedisDedup;

/// How often a re-send polls the shared store while another replica delivers its
/// update: re-sends are rare (Telegram's own backoff spaces them), and a tenth of a
/// second is nothing next to the bot's handler it waits for.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Largest reply body kept for replaying to a re-send (the 64 KiB):
/// webhook replies are `{}` or one Bot API call, a few hundred bytes; a larger
/// 2xx is remembered as delivered and replayed as `200 {}`.
pub const MAX_STORED_BODY: usize = 64 * 1024;

/// A bot's answer as a re-send gets it again: status, `Content-Type` (with its
/// multipart boundary) and body, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// What a shared store knows of one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// Nobody holds it: the caller now does (`claim`), or it is free (`peek`).
    /// `failures`: deliveries that reached a bot and failed so far.
    Free { failures: u32 },
    /// Some replica is delivering it now.
    Busy,
    /// A bot answered it with a 2xx.
    Done(Arc<Reply>),
}

impl Reply {
    /// The poison guard's answer, and the replay of a 2xx whose body was too large
    /// to keep: `200 {}`, which Telegram takes as delivered.
    pub fn empty_ok() -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from_static(b"{}"),
        }
    }
}

/// What the waiters of one delivery get.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// This answer: a bot's, or the poison guard's `200 {}`.
    Reply(Arc<Reply>),
    /// No bot took the update, or one failed without an answer: 503 with
    /// `Retry-After`, and Telegram sends it again.
    Unavailable,
}

/// What a request carrying an `update_id` does (`Dedup::join`).
#[derive(Debug)]
pub enum Join {
    /// Deliver it: nobody has it. The ticket says how many deliveries failed so far.
    Lead(Ticket),
    /// This process delivers it now: wait for the outcome.
    Wait(watch::Receiver<Option<Outcome>>),
    /// A bot answered it with a 2xx before: answer this.
    Done(Arc<Reply>),
    /// Another replica delivers it now: poll the shared store
    /// (`Ticket::await_elsewhere`).
    Elsewhere(Ticket),
}

/// One route's deduplication state, kept across reloads.
#[derive(Debug)]
pub struct Dedup {
    ttl: Duration,
    local: Mutex<HashMap<i64, watch::Sender<Option<Outcome>>>>,
    memory: Mutex<Memory>,
    shared: Option<RedisDedup>,
    fallbacks: metrics::Counter,
}

impl Dedup {
    /// A route's state: replies kept `ttl`, shared through `shared` when set;
    /// `fallbacks` counts the store's failures.
    pub fn new(ttl: Duration, shared: Option<RedisDedup>, fallbacks: metrics::Counter) -> Dedup {
        Dedup {
            ttl,
            local: Mutex::default(),
            memory: Mutex::new(Memory::new(ttl)),
            shared,
            fallbacks,
        }
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn local(&self) -> MutexGuard<'_, HashMap<i64, watch::Sender<Option<Outcome>>>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fell_back(&self, e: &dyn std::fmt::Display) {
        tracing::debug!(error = %e, "telegram dedup store failed; deciding in memory");
        self.fallbacks.increment(1);
    }

    /// Updates remembered in this process's memory.
    pub fn remembered(&self) -> usize {
        self.memory().len()
    }

    /// The reasons the deliveries of `id` failed here (for its dead letter).
    pub fn reasons(&self, id: i64) -> Vec<String> {
        self.memory().reasons(id)
    }

    /// What a request for update `id` does. `lease`: how long a shared claim
    /// holds if this process dies before it ends (the longest a delivery runs).
    pub async fn join(self: &Arc<Self>, id: i64, lease: Duration) -> Join {
        let tx = {
            let mut local = self.local();
            if let Some(tx) = local.get(&id) {
                return Join::Wait(tx.subscribe());
            }
            let (tx, _) = watch::channel(None);
            local.insert(id, tx.clone());
            tx
        };
        let mut ticket = Ticket {
            dedup: Arc::clone(self),
            id,
            tx,
            failures: 0,
            claimed: false,
            finished: false,
        };
        let (done, local_failures) = self.memory().state(id);
        if let Some(r) = done {
            ticket.publish(Outcome::Reply(Arc::clone(&r)));
            return Join::Done(r);
        }
        ticket.failures = local_failures;
        let Some(shared) = &self.shared else {
            return Join::Lead(ticket);
        };
        match shared.claim(id, lease).await {
            Ok(Shared::Free { failures }) => {
                ticket.claimed = true;
                ticket.failures = failures.max(local_failures);
                Join::Lead(ticket)
            }
            Ok(Shared::Done(r)) => {
                self.memory().set_done(id, Arc::clone(&r));
                ticket.publish(Outcome::Reply(Arc::clone(&r)));
                Join::Done(r)
            }
            Ok(Shared::Busy) => Join::Elsewhere(ticket),
            Err(e) => {
                self.fell_back(&e);
                Join::Lead(ticket)
            }
        }
    }
}

/// Waits on `rx` for a delivery's outcome until `until`; `Unavailable` when the
/// time runs out first.
pub async fn wait(mut rx: watch::Receiver<Option<Outcome>>, until: Instant) -> Outcome {
    loop {
        if let Some(o) = rx.borrow_and_update().clone() {
            return o;
        }
        match tokio::time::timeout_at(until, rx.changed()).await {
            Ok(Ok(())) => continue,
            // The ticket went without an outcome (it publishes one on drop, so
            // this is only the race with that).
            Ok(Err(_)) | Err(_) => return Outcome::Unavailable,
        }
    }
}

/// The right to deliver one update, and the duty to say how it ended: every
/// request waiting for the update gets what the ticket publishes. Dropped
/// without an outcome, it publishes `Unavailable` and lets its shared claim go.
#[derive(Debug)]
pub struct Ticket {
    dedup: Arc<Dedup>,
    id: i64,
    tx: watch::Sender<Option<Outcome>>,
    /// Deliveries of the update that reached a bot and failed, before this one.
    pub failures: u32,
    /// It holds the shared store's in-flight mark.
    claimed: bool,
    finished: bool,
}

impl Ticket {
    /// A receiver of the outcome (the leading request waits on one).
    pub fn subscribe(&self) -> watch::Receiver<Option<Outcome>> {
        self.tx.subscribe()
    }

    pub fn update_id(&self) -> i64 {
        self.id
    }

    fn publish(&mut self, outcome: Outcome) {
        self.finished = true;
        self.tx.send_replace(Some(outcome));
        let mut local = self.dedup.local();
        if local
            .get(&self.id)
            .is_some_and(|tx| tx.same_channel(&self.tx))
        {
            local.remove(&self.id);
        }
    }

    /// A bot answered with a 2xx: remember it (a body over `MAX_STORED_BODY`
    /// as `200 {}`) and hand every waiter the answer itself.
    pub async fn delivered(mut self, reply: Arc<Reply>) {
        let kept = if reply.body.len() <= MAX_STORED_BODY {
            Arc::clone(&reply)
        } else {
            Arc::new(Reply::empty_ok())
        };
        self.remember(kept).await;
        self.publish(Outcome::Reply(reply));
    }

    /// The poison guard gave up on the update: it is answered `200 {}` now and on
    /// every re-send.
    pub async fn poisoned(mut self) -> Arc<Reply> {
        let reply = Arc::new(Reply::empty_ok());
        self.remember(Arc::clone(&reply)).await;
        self.publish(Outcome::Reply(Arc::clone(&reply)));
        reply
    }

    async fn remember(&mut self, reply: Arc<Reply>) {
        let d = Arc::clone(&self.dedup);
        d.memory().set_done(self.id, Arc::clone(&reply));
        if let Some(s) = &d.shared {
            if let Err(e) = s.done(self.id, &reply, d.ttl).await {
                d.fell_back(&e);
            }
        }
        self.claimed = false;
    }

    /// A delivery reached a bot and failed for `reason`: counted, and the count
    /// across every replica returned. The in-flight mark is let go; the outcome is
    /// still the caller's to publish (`pass_on`, or `poisoned`).
    pub async fn failed(&mut self, reason: &str) -> u32 {
        let d = Arc::clone(&self.dedup);
        let local = d.memory().add_failure(self.id, reason);
        let mut n = local.max(self.failures + 1);
        if let Some(s) = &d.shared {
            match s.failed(self.id, d.ttl).await {
                Ok(shared) => {
                    n = n.max(shared);
                    d.memory().note_failures(self.id, n);
                }
                Err(e) => d.fell_back(&e),
            }
        }
        self.claimed = false;
        self.failures = n;
        n
    }

    /// Ends the delivery with `outcome` and nothing remembered (a bot's non-2xx
    /// after `failed`, or no bot reached at all).
    pub async fn pass_on(mut self, outcome: Outcome) {
        self.release().await;
        self.publish(outcome);
    }

    /// Lets the shared in-flight mark go, if this ticket still holds it.
    async fn release(&mut self) {
        if !std::mem::take(&mut self.claimed) {
            return;
        }
        if let Some(s) = &self.dedup.shared {
            if let Err(e) = s.release(self.id).await {
                self.dedup.fell_back(&e);
            }
        }
    }

    /// Another replica delivers the update: poll the shared store until it says
    /// how that ended or `until`, and hand the outcome to this process's waiters
    /// too. A delivery that ended without a 2xx leaves nothing to replay: the
    /// answer is `Unavailable`, and Telegram's next re-send delivers afresh.
    pub async fn await_elsewhere(mut self, until: Instant) -> Outcome {
        let d = Arc::clone(&self.dedup);
        let outcome = loop {
            let next = Instant::now() + POLL_EVERY;
            if next >= until {
                break Outcome::Unavailable;
            }
            tokio::time::sleep_until(next).await;
            let Some(s) = &d.shared else {
                break Outcome::Unavailable;
            };
            match s.peek(self.id).await {
                Ok(Shared::Busy) => continue,
                Ok(Shared::Done(r)) => {
                    d.memory().set_done(self.id, Arc::clone(&r));
                    break Outcome::Reply(r);
                }
                Ok(Shared::Free { .. }) => break Outcome::Unavailable,
                Err(e) => {
                    d.fell_back(&e);
                    break Outcome::Unavailable;
                }
            }
        };
        self.publish(outcome.clone());
        outcome
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.publish(Outcome::Unavailable);
        if self.claimed {
            // A delivery task that panicked or a request cancelled mid-claim: let
            // the mark go now rather than at its lease's end, when a runtime is
            // there to do it.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let d = Arc::clone(&self.dedup);
                let id = self.id;
                rt.spawn(async move {
                    if let Some(s) = &d.shared {
                        let _ = s.release(id).await;
                    }
                });
            }
        }
    }
}

/// Every telegram route's `Dedup`, kept across reloads like the limiters'
/// tables: found by the route's place and the settings its state depends on
/// (`dedup_ttl`, `dedup_store`), so a reload that keeps them keeps what was
/// delivered, and one that changes them starts afresh. Those no configuration
/// asks for any more go once the snapshots using them are gone.
#[derive(Debug, Default)]
pub struct Dedups {
    inner: Mutex<Kept>,
}

/// The generation being built, and each `Dedup` with the last generation that
/// asked for it.
type Kept = (u64, HashMap<String, (Arc<Dedup>, u64)>);

impl Dedups {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts building a configuration: what it asks for until `finish` is kept.
    pub fn begin(&self) {
        self.lock().0 += 1;
    }

    /// Lets go of what the configuration just built did not ask for.
    pub fn finish(&self) {
        let mut inner = self.lock();
        let g = inner.0;
        inner.1.retain(|_, (_, used)| *used == g);
    }

    /// The `Dedup` with id `id`, the existing one if any, else `make()`'s.
    pub fn get(&self, id: String, make: impl FnOnce() -> Dedup) -> Arc<Dedup> {
        let inner = &mut *self.lock();
        let g = inner.0;
        let (d, used) = inner.1.entry(id).or_insert_with(|| (Arc::new(make()), g));
        *used = g;
        Arc::clone(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dedup() -> Arc<Dedup> {
        Arc::new(Dedup::new(
            Duration::from_secs(3600),
            None,
            metrics::Counter::noop(),
        ))
    }

    fn reply(body: &'static [u8]) -> Arc<Reply> {
        Arc::new(Reply {
            status: StatusCode::OK,
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from_static(body),
        })
    }

    const LEASE: Duration = Duration::from_secs(60);

    async fn lead(d: &Arc<Dedup>, id: i64) -> Ticket {
        match d.join(id, LEASE).await {
            Join::Lead(t) => t,
            other => panic!("expected to lead, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_resend_in_flight_waits_for_the_first_delivery_then_one_after_gets_its_reply() {
        let d = dedup();
        let t = lead(&d, 7).await;
        let Join::Wait(rx) = d.join(7, LEASE).await else {
            panic!("a re-send in flight must wait")
        };
        let waiter = tokio::spawn(wait(rx, Instant::now() + Duration::from_secs(50)));
        tokio::time::sleep(Duration::from_secs(30)).await;
        t.delivered(reply(b"{\"method\":\"x\"}")).await;
        let Outcome::Reply(r) = waiter.await.unwrap() else {
            panic!("the waiter gets the delivery's reply")
        };
        assert_eq!(&r.body[..], b"{\"method\":\"x\"}");
        let Join::Done(r) = d.join(7, LEASE).await else {
            panic!("a re-send after the reply is answered from memory")
        };
        assert_eq!(&r.body[..], b"{\"method\":\"x\"}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_at_its_own_deadline_while_the_delivery_goes_on() {
        let d = dedup();
        let t = lead(&d, 1).await;
        let Join::Wait(rx) = d.join(1, LEASE).await else {
            panic!()
        };
        let until = Instant::now() + Duration::from_secs(50);
        assert!(matches!(wait(rx, until).await, Outcome::Unavailable));
        assert_eq!(Instant::now(), until);
        // Still in flight: the next re-send waits on the same delivery.
        assert!(matches!(d.join(1, LEASE).await, Join::Wait(_)));
        t.delivered(reply(b"{}")).await;
        assert!(matches!(d.join(1, LEASE).await, Join::Done(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_counted_and_nothing_is_remembered_but_the_count() {
        let d = dedup();
        for n in 1..=3 {
            let mut t = lead(&d, 9).await;
            assert_eq!(t.failures, n - 1);
            assert_eq!(t.failed(&format!("status 50{n}")).await, n);
            let rx = t.subscribe();
            t.pass_on(Outcome::Unavailable).await;
            assert!(matches!(*rx.borrow(), Some(Outcome::Unavailable)));
        }
        assert_eq!(d.reasons(9), ["status 501", "status 502", "status 503"]);
        let t = lead(&d, 9).await;
        let r = t.poisoned().await;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"{}"[..]));
        assert!(matches!(d.join(9, LEASE).await, Join::Done(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_dropped_without_an_outcome_frees_its_waiters_and_the_update() {
        let d = dedup();
        let t = lead(&d, 3).await;
        let Join::Wait(rx) = d.join(3, LEASE).await else {
            panic!()
        };
        drop(t);
        let far = Instant::now() + Duration::from_secs(50);
        assert!(matches!(wait(rx, far).await, Outcome::Unavailable));
        assert_eq!(Instant::now(), far - Duration::from_secs(50), "at once");
        // Not remembered, not counted: the next re-send delivers afresh.
        assert_eq!(lead(&d, 3).await.failures, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_reply_is_passed_on_whole_and_replayed_as_empty_ok() {
        let d = dedup();
        static BIG: [u8; MAX_STORED_BODY + 1] = [b'x'; MAX_STORED_BODY + 1];
        let t = lead(&d, 5).await;
        let rx = t.subscribe();
        t.delivered(reply(&BIG)).await;
        let Some(Outcome::Reply(first)) = rx.borrow().clone() else {
            panic!()
        };
        assert_eq!(first.body.len(), BIG.len());
        let Join::Done(again) = d.join(5, LEASE).await else {
            panic!()
        };
        assert_eq!(*again, Reply::empty_ok());
    }
}
