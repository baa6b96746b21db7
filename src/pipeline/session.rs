//! One client connection as the pipeline sees it across its requests: how many it
//! has carried (`keepalive_requests`), how many are open, since when it has been
//! idle, and whether it switched protocols. The service opens a `Turn` per request,
//! held until the response body ends; the connection's timers (`server`) read the
//! rest to tell an idle keep-alive connection (`keepalive_timeout`) from one whose
//! client is sending a head (`client_header_timeout`), and to shut an HTTP/2
//! connection down when it is idle or has carried its requests.
//!
//! Atomics rather than a lock: a worker's tasks share one thread, but the types
//! must be `Send` for hyper, and a request touches the session twice.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::ListenerConfig;

/// The listener's settings a connection is served with, fixed when it is accepted
/// (a reload applies to new connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSettings {
    /// nginx's `client_header_timeout`: a whole request head, from its first byte
    /// (the first request's from the connection's start).
    pub client_header_timeout: Duration,
    /// nginx's `keepalive_timeout`: the wait for the next request; zero: none.
    pub keepalive_timeout: Duration,
    /// nginx's `keepalive_requests`.
    pub keepalive_requests: u32,
    /// Largest request head (`max_header_size`).
    pub max_header_size: usize,
}

impl ConnSettings {
    pub fn of(l: &ListenerConfig) -> Self {
        ConnSettings {
            client_header_timeout: l.client_header_timeout,
            keepalive_timeout: l.limits.keepalive_timeout,
            keepalive_requests: l.limits.keepalive_requests,
            max_header_size: l.limits.max_header_size,
        }
    }
}

/// What is known about one client connection's requests.
#[derive(Debug)]
pub struct Session {
    start: Instant,
    settings: ConnSettings,
    /// Requests begun so far.
    requests: AtomicU32,
    /// Requests whose response has not ended (HTTP/1.1: 0 or 1; HTTP/2: streams).
    open: AtomicU32,
    /// Nanoseconds from `start` to the moment `open` last fell to zero.
    idle_since: AtomicU64,
    /// A protocol switch (WebSocket): the bytes are no longer HTTP/1.1's.
    upgraded: AtomicBool,
    /// The connection speaks HTTP/2.
    h2: AtomicBool,
    /// An idle HTTP/1.1 connection may give up its HTTP state (`server::park`):
    /// set by its socket's reader, taken by its driver.
    park: AtomicBool,
    /// Wakes the connection's HTTP/2 timer: it became idle, or has carried its
    /// `keepalive_requests`, or turned out to be HTTP/2.
    changed: Notify,
}

impl Session {
    pub fn new(settings: ConnSettings) -> Arc<Session> {
        Arc::new(Session {
            start: Instant::now(),
            settings,
            requests: AtomicU32::new(0),
            open: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            park: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    pub fn settings(&self) -> &ConnSettings {
        &self.settings
    }

    /// When the connection was accepted (its TLS handshake done).
    pub fn start(&self) -> Instant {
        self.start
    }

    /// A request begins; its turn ends when its response does.
    pub fn begin(self: &Arc<Self>) -> Turn {
        let n = self
            .requests
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        self.open.fetch_add(1, Ordering::Relaxed);
        let last = n >= self.settings.keepalive_requests;
        if last && self.is_h2() {
            self.changed.notify_one();
        }
        Turn {
            session: Arc::clone(self),
            last,
        }
    }

    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// When the last open request ended.
    pub fn idle_since(&self) -> Instant {
        self.start + Duration::from_nanos(self.idle_since.load(Ordering::Relaxed))
    }

    /// When a connection with no request open has waited too long for one:
    /// `client_header_timeout` after its start while it has had none (a client
    /// that connects and never asks), `keepalive_timeout` after its last
    /// request ended.
    pub fn idle_end(&self) -> Instant {
        match self.requests() {
            0 => self.start + self.settings.client_header_timeout,
            _ => self.idle_since() + self.settings.keepalive_timeout,
        }
    }

    /// The connection has carried its `keepalive_requests`.
    pub fn spent(&self) -> bool {
        self.requests() >= self.settings.keepalive_requests
    }

    pub fn upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Relaxed)
    }

    /// The connection switched protocols: from now on its bytes are a tunnel's.
    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    pub fn mark_h2(&self) {
        if !self.h2.swap(true, Ordering::Relaxed) {
            self.changed.notify_one();
        }
    }

    /// The connection has been idle long enough to be parked (see `server::park`).
    pub fn ask_park(&self) {
        self.park.store(true, Ordering::Relaxed);
    }

    /// Whether parking was asked for since the last call.
    pub fn take_park(&self) -> bool {
        self.park.swap(false, Ordering::Relaxed)
    }

    /// Resolves after a change the HTTP/2 timer must look at (a permit is kept if
    /// nobody waits yet). HTTP/1.1 connections never signal it.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn end(&self) {
        if self.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            let nanos = self.start.elapsed().as_nanos() as u64;
            self.idle_since.store(nanos, Ordering::Relaxed);
            if self.is_h2() {
                self.changed.notify_one();
            }
        }
    }
}

/// One request's turn on its connection, from its head to the end of its response
/// (it lives in the request's `Record`).
#[derive(Debug)]
pub struct Turn {
    session: Arc<Session>,
    /// The request is the connection's last (`keepalive_requests`).
    last: bool,
}

impl Turn {
    pub fn last(&self) -> bool {
        self.last
    }

    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.session.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(requests: u32) -> ConnSettings {
        ConnSettings {
            client_header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            keepalive_requests: requests,
            max_header_size: 64 * 1024,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn turns_count_and_idle() {
        let s = Session::new(settings(2));
        let a = s.begin();
        assert!(!a.last());
        assert_eq!((s.requests(), s.open()), (1, 1));
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(a);
        assert_eq!(s.open(), 0);
        assert_eq!(s.idle_since(), s.start() + Duration::from_secs(3));
        assert!(!s.spent());
        let b = s.begin();
        assert!(b.last() && s.spent());
    }

    #[tokio::test(start_paused = true)]
    async fn h2_changes_wake_the_timer() {
        let s = Session::new(settings(1));
        s.mark_h2();
        s.changed().await;
        let t = s.begin();
        // The last request: a permit is waiting.
        s.changed().await;
        drop(t);
        s.changed().await;
    }
}
