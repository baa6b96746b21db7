//! A listener's `max_connections` (HAProxy's frontend `maxconn`): at most that many
//! client connections open at once across every worker. An accept loop takes a
//! slot *before* it accepts, so once every slot is taken no worker accepts, and new
//! connections wait in the kernel's backlog (their TCP handshake done, their bytes
//! unread) until a connection closes and its slot is handed on. The slot lives as
//! long as the connection's task: through a handoff to another worker, the PROXY
//! header, the TLS handshake and every request, released however the connection
//! ends (RAII).
//!
//! One `ConnLimit` per listener name lives as long as the name (`control` keeps
//! it): a reload that keeps the listener keeps its count of open connections, and
//! one that changes the number sets the new maximum in place. A higher one frees
//! waiting accept loops at once; a lower one closes nothing, but no connection is
//! accepted until the open ones are fewer than it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Open connections of one listener and their maximum.
#[derive(Debug)]
pub struct ConnLimit {
    /// Slots taken: open connections, plus at most one per accept loop waiting
    /// in `accept` with its slot.
    taken: AtomicUsize,
    /// `usize::MAX`: no limit.
    max: AtomicUsize,
    /// A slot freed, or the maximum raised.
    freed: Notify,
}

/// One connection's slot; freed when dropped.
#[derive(Debug)]
pub struct ConnSlot(Arc<ConnLimit>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
        // One freed slot lets one waiter in (a waiter dropped before it ran
        // passes the wake-up on).
        self.0.freed.notify_one();
    }
}

fn max_of(max: Option<u32>) -> usize {
    max.map_or(usize::MAX, |m| m as usize)
}

impl ConnLimit {
    /// A limit of `max` connections (`None`: none).
    pub fn new(max: Option<u32>) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            taken: AtomicUsize::new(0),
            max: AtomicUsize::new(max_of(max)),
            freed: Notify::new(),
        })
    }

    /// A reload's new maximum.
    pub fn set_max(&self, max: Option<u32>) {
        let old = self.max.swap(max_of(max), Ordering::AcqRel);
        if max_of(max) > old {
            self.freed.notify_waiters();
        }
    }

    /// Slots taken now.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    fn try_take(self: &Arc<Self>) -> Option<ConnSlot> {
        let max = self.max.load(Ordering::Acquire);
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnSlot(Arc::clone(self)))
    }

    /// A slot, once one is free.
    pub async fn take(self: &Arc<Self>) -> ConnSlot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a slot freed in between wakes us.
            freed.as_mut().enable();
            if let Some(slot) = self.try_take() {
                return slot;
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether `take` finishes within a short wait (a bounded check for "not yet").
    async fn takes_now(l: &Arc<ConnLimit>) -> Option<ConnSlot> {
        tokio::time::timeout(Duration::from_millis(50), l.take())
            .await
            .ok()
    }

    #[tokio::test]
    async fn slots_up_to_the_maximum_then_wait_for_one_to_free() {
        let l = ConnLimit::new(Some(2));
        let a = l.take().await;
        let _b = l.take().await;
        assert_eq!(l.taken(), 2);
        assert!(takes_now(&l).await.is_none());
        let waiter = tokio::spawn({
            let l = Arc::clone(&l);
            async move { l.take().await }
        });
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("a freed slot lets the waiter in")
            .unwrap();
        assert_eq!(l.taken(), 2);
        drop(c);
        assert_eq!(l.taken(), 1);
    }

    #[tokio::test]
    async fn no_limit_and_changes_of_the_maximum() {
        let l = ConnLimit::new(None);
        let many: Vec<ConnSlot> = (0..1000).filter_map(|_| l.try_take()).collect();
        assert_eq!(many.len(), 1000);
        // Lowered below what is open: nothing closes, nothing more comes in.
        l.set_max(Some(10));
        assert!(takes_now(&l).await.is_none());
        let waiter = tokio::spawn({
            let l = Arc::clone(&l);
            async move { l.take().await }
        });
        // Raised: the waiting accept loop goes on at once.
        l.set_max(Some(2000));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("a raised maximum lets the waiter in")
            .unwrap();
        drop(many);
        assert_eq!(l.taken(), 0);
    }
}
