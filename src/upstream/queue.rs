//! An upstream's queue: HAProxy's backend queue (server `maxconn` with `timeout
//! queue`), nginx Plus's `queue`. While every eligible server holds its
//! `max_conns` requests, new requests wait here and are let through in arrival
//! order as slots free.
//!
//! The line is a small `VecDeque` of tickets under a mutex, touched only by requests
//! that wait and by slots freed while someone waits: a request that finds a free
//! server never locks it, and an upstream without `max_conns` never looks at it.
//! It lives in the `Registry` by upstream name, outside any configuration, so
//! waiting requests survive reloads and membership changes.
//!
//! How a slot reaches the right waiter:
//! - A freed slot (the `InFlight` guard of a capped server dropping) wakes the
//!   first ticket in line. The woken request picks again, from the upstream's
//!   current server set (`current`). With a slot it leaves the queue; without one
//!   (a slot it cannot use, or one a request took just before it joined), it goes
//!   back to its place: tickets are numbered in arrival order and the line is kept
//!   in that order, so it is still ahead of everyone who came later.
//! - Newcomers join the back while anyone waits or has been woken and not yet
//!   settled (`has_waiters`), so a freed slot goes to the first waiter rather than to
//!   whoever arrives at that moment.
//! - A ticket dropped while waiting (its time is up, or its client is gone and the
//!   request's future with it) leaves the line; if it had been woken and had not
//!   acted on it yet, the wake goes to the next ticket, so a freed slot is never
//!   handed to a waiter that is gone, nor lost.
//! - Lost wake-ups: a slot freed between a newcomer's failed pick and its joining
//!   would find nobody to wake. Both sides put a `SeqCst` fence between their write
//!   (the in-flight count; the line's length) and their read of the other's, so at
//!   least one sees the other: the slot wakes the newcomer, or the newcomer, looking
//!   again after joining, sees the room and wakes the first in line (the pipeline's
//!   `claim` does that look).

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Upstream;

/// One upstream's line of waiting requests.
#[derive(Debug, Default)]
pub struct Queue {
    line: Mutex<Line>,
    /// Tickets in the line; read without the lock when a slot frees (zero: nobody
    /// to wake).
    queued: AtomicUsize,
    /// Tickets alive: in the line, or woken and not yet settled (what the status
    /// page shows, and what `size` bounds).
    waiting: AtomicUsize,
    /// The upstream of the current snapshot: woken requests pick from it.
    current: Mutex<Weak<Upstream>>,
}

#[derive(Debug, Default)]
struct Line {
    /// In ticket order, which is arrival order.
    tickets: VecDeque<Place>,
    /// The next ticket's number.
    next: u64,
}

#[derive(Debug)]
struct Place {
    id: u64,
    wake: oneshot::Sender<()>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests waiting (in line, or woken and picking again).
    pub fn len(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tickets in line (not woken).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Joins the back of the line, unless `size` requests wait already.
    pub fn join(&self, size: usize) -> Option<Ticket<'_>> {
        let mut line = self.lock();
        if self.waiting.load(Ordering::Relaxed) >= size {
            return None;
        }
        let (wake, rx) = oneshot::channel();
        let id = line.next;
        line.next += 1;
        line.tickets.push_back(Place { id, wake });
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        drop(line);
        // Pairs with the fence of `slot_freed` (see the module's doc).
        fence(Ordering::SeqCst);
        Some(Ticket {
            queue: self,
            id,
            rx,
            acted: false,
        })
    }

    /// A slot freed on a capped server of the upstream (its in-flight count is
    /// already lower): wakes the first waiter, if any.
    pub fn slot_freed(&self) {
        // Pairs with the fence of `join` and `Ticket::rejoin`.
        fence(Ordering::SeqCst);
        if self.queued.load(Ordering::Relaxed) != 0 {
            self.wake(None);
        }
    }

    /// Wakes the first ticket in line, or with `after`, the first that came after
    /// that one.
    pub fn wake(&self, after: Option<&Ticket<'_>>) {
        let mut line = self.lock();
        self.wake_in(&mut line, after.map(|t| t.id));
    }

    fn wake_in(&self, line: &mut Line, after: Option<u64>) {
        let at = after.map_or(0, |id| line.tickets.partition_point(|p| p.id <= id));
        if let Some(p) = line.tickets.remove(at) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            // The receiver is alive: a ticket takes the lock to leave the line
            // before its receiver goes.
            let _ = p.wake.send(());
        }
    }

    /// Makes `upstream` the one woken requests pick from (a new snapshot went
    /// live), and wakes the first waiter: the new server set may have room.
    pub fn publish(&self, upstream: &Arc<Upstream>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(upstream);
        if self.queued() != 0 {
            self.wake(None);
        }
    }

    /// The upstream of the current snapshot, if one was published and is alive.
    pub fn current(&self) -> Option<Arc<Upstream>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()
    }
}

/// One request's place in a queue, from joining until it is dropped (served,
/// refused, or its client gone).
#[derive(Debug)]
pub struct Ticket<'q> {
    queue: &'q Queue,
    id: u64,
    rx: oneshot::Receiver<()>,
    /// The last wake was received: the request is picking again on it.
    acted: bool,
}

impl Ticket<'_> {
    /// Waits for a wake until `deadline`: `true` when woken (pick again, then
    /// `rejoin` or drop the ticket), `false` when the time is up.
    pub async fn wait(&mut self, deadline: Instant) -> bool {
        // A closed channel cannot happen (the queue outlives its tickets and sends
        // before dropping a place); were it to, picking again is the safe reading.
        let woken = tokio::time::timeout_at(deadline, &mut self.rx)
            .await
            .is_ok();
        self.acted |= woken;
        woken
    }

    /// Back to its place in line after a wake it could not use: ahead of every
    /// ticket that came after it.
    pub fn rejoin(&mut self) {
        let (wake, rx) = oneshot::channel();
        let mut line = self.queue.lock();
        let at = line.tickets.partition_point(|p| p.id < self.id);
        line.tickets.insert(at, Place { id: self.id, wake });
        self.queue.queued.fetch_add(1, Ordering::Relaxed);
        drop(line);
        self.rx = rx;
        self.acted = false;
        fence(Ordering::SeqCst);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let q = self.queue;
        let mut line = q.lock();
        q.waiting.fetch_sub(1, Ordering::Relaxed);
        if let Ok(at) = line.tickets.binary_search_by_key(&self.id, |p| p.id) {
            line.tickets.remove(at);
            q.queued.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        // Woken, and gone before acting on it (its time was up, or its client
        // left, just as the wake came): the freed slot is the next one's.
        if !self.acted {
            q.wake_in(&mut line, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn later(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    /// Whether the ticket has been woken, without waiting; a wake found counts as
    /// acted on, as after `wait`.
    fn woken(t: &mut Ticket<'_>) -> bool {
        let woken = t.rx.try_recv().is_ok();
        t.acted |= woken;
        woken
    }

    #[tokio::test(start_paused = true)]
    async fn slots_go_to_tickets_in_arrival_order() {
        let q = Queue::default();
        let mut a = q.join(10).unwrap();
        let mut b = q.join(10).unwrap();
        let mut c = q.join(10).unwrap();
        assert_eq!((q.len(), q.queued()), (3, 3));
        q.slot_freed();
        assert!(woken(&mut a) && !woken(&mut b) && !woken(&mut c));
        assert_eq!((q.len(), q.queued()), (3, 2));
        q.slot_freed();
        assert!(woken(&mut b) && !woken(&mut c));
        drop((a, b));
        assert_eq!(q.len(), 1);
        assert!(!c.wait(later(0)).await, "nothing freed for c");
    }

    #[tokio::test(start_paused = true)]
    async fn size_bounds_the_waiting_and_zero_lets_none_wait() {
        let q = Queue::default();
        assert!(q.join(0).is_none());
        let a = q.join(2).unwrap();
        let _b = q.join(2).unwrap();
        assert!(q.join(2).is_none(), "full");
        drop(a);
        assert!(q.join(2).is_some(), "a place freed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_woken_ticket_that_rejoins_keeps_its_place() {
        let q = Queue::default();
        let mut a = q.join(10).unwrap();
        let mut b = q.join(10).unwrap();
        q.slot_freed();
        assert!(a.wait(later(1)).await);
        // A newcomer took the slot first: a goes back, ahead of b.
        a.rejoin();
        assert_eq!((q.len(), q.queued()), (2, 2));
        q.slot_freed();
        assert!(woken(&mut a) && !woken(&mut b));
    }

    #[tokio::test(start_paused = true)]
    async fn waking_after_a_ticket_skips_it_and_those_before() {
        let q = Queue::default();
        let mut a = q.join(10).unwrap();
        let mut b = q.join(10).unwrap();
        let mut c = q.join(10).unwrap();
        q.wake(Some(&a));
        assert!(!woken(&mut a) && woken(&mut b) && !woken(&mut c));
        q.wake(Some(&c));
        assert!(!woken(&mut a), "nobody after c");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_that_leaves_unwoken_frees_its_place_and_wakes_nobody() {
        let q = Queue::default();
        let a = q.join(10).unwrap();
        let mut b = q.join(10).unwrap();
        drop(a);
        assert_eq!((q.len(), q.queued()), (1, 1));
        assert!(!woken(&mut b));
        q.slot_freed();
        assert!(woken(&mut b), "b is first now");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_that_finds_its_ticket_gone_passes_to_the_next() {
        let q = Queue::default();
        let a = q.join(10).unwrap();
        let mut b = q.join(10).unwrap();
        q.slot_freed();
        // a's client leaves before a acts on the wake.
        drop(a);
        assert!(woken(&mut b), "the slot went on to b");
        assert_eq!((q.len(), q.queued()), (1, 0));
        drop(b);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_acted_on_is_not_passed_on() {
        let q = Queue::default();
        let mut a = q.join(10).unwrap();
        let mut b = q.join(10).unwrap();
        q.slot_freed();
        assert!(a.wait(later(1)).await);
        drop(a);
        assert!(!woken(&mut b), "a used the slot");
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_at_the_deadline() {
        let q = Queue::default();
        let mut a = q.join(10).unwrap();
        let start = Instant::now();
        assert!(!a.wait(later(2000)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(2000));
        drop(a);
        assert!(q.is_empty());
    }
}
