//! One worker's connection to a store's Redis, and its redials.
//!
//! A worker is a thread with its own single-threaded runtime. Its link's
//! connection is dialled by a task of that runtime, so the connection's driver
//! (the task that writes pipelined commands and reads the replies, spawned by
//! redis-rs where the connection is made) runs there too: a decision never wakes
//! another thread, and one busy or stopped worker cannot stall the others' Redis
//! traffic. The decisions of one worker share its connection, pipelined.
//!
//! A dial runs in its own task, so a decision never waits for one past its
//! deadline and a slow connect still completes for the decisions after it. Only
//! the dial of a link that has no reason to think Redis down (the first one, or
//! after a connection closed) is waited for; after a failed dial, decisions fall
//! back at once while redials are retried in the background, backing off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client};
use tokio::sync::Notify;
use tokio::time::{timeout, timeout_at, Instant};

use super::health::Health;
use super::{script, StoreError, RECONNECT_MAX, RECONNECT_MIN, STALE_AFTER};
use crate::clock;

/// What a link needs to dial, shared by the store's links.
#[derive(Debug)]
pub(crate) struct Dialer {
    pub(crate) client: Client,
    pub(crate) config: AsyncConnectionConfig,
    pub(crate) connect_timeout: Duration,
    pub(crate) health: Arc<Health>,
}

impl Dialer {
    /// A new connection, with the script loaded: Redis forgets its scripts when
    /// it restarts, and a connection made after a restart then needs no
    /// `NOSCRIPT` round for its first decision.
    async fn connect(&self) -> Result<MultiplexedConnection, StoreError> {
        let connect = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?;
            let _: ::redis::Value = script::GCRA.load().query_async(&mut conn).await?;
            Ok::<_, ::redis::RedisError>(conn)
        };
        match timeout(self.connect_timeout, connect).await {
            Ok(r) => r.map_err(StoreError::Redis),
            Err(_) => Err(StoreError::ConnectTimeout(self.connect_timeout)),
        }
    }
}

/// One worker's connection (see the module doc).
#[derive(Debug)]
pub(crate) struct Link {
    inner: Mutex<Inner>,
    /// Wakes the decisions waiting for a dial.
    dialed: Notify,
    /// When a decision last had its answer in time on the current connection
    /// (`clock::nanos`).
    last_answer: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Numbers the connections, so that a failure seen on one does not drop its
    /// successor.
    generation: u64,
}

#[derive(Debug)]
enum State {
    /// No connection and no reason to think Redis down: the next decision dials
    /// and waits for it, until its deadline.
    Idle,
    /// A dial is under way; `wait`: whether decisions wait for it.
    Dialing { wait: bool },
    Up {
        conn: MultiplexedConnection,
        generation: u64,
    },
    /// The last dial failed, or Redis stopped answering: decisions fall back at
    /// once; the first after `retry` starts a redial (and falls back too).
    Down { retry: Instant, backoff: Duration },
    /// The store was dropped: its connections are closed.
    Closed,
}

impl Link {
    pub(crate) fn new() -> Link {
        Link {
            inner: Mutex::new(Inner {
                state: State::Idle,
                generation: 0,
            }),
            dialed: Notify::new(),
            last_answer: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under the lock can panic half-way; a poisoned lock holds a
        // consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection to send a decision on, and its generation; dials when
    /// there is none (see the module doc for when that is waited for).
    pub(crate) async fn connection(
        self: &Arc<Self>,
        dialer: &Arc<Dialer>,
        deadline: Instant,
    ) -> Result<(MultiplexedConnection, u64), StoreError> {
        let dialed = {
            let mut inner = self.lock();
            match inner.state {
                State::Up {
                    ref conn,
                    generation,
                } => return Ok((conn.clone(), generation)),
                State::Closed | State::Dialing { wait: false } => {
                    return Err(StoreError::Unavailable)
                }
                State::Dialing { wait: true } => {}
                State::Idle => {
                    inner.state = State::Dialing { wait: true };
                    self.spawn_dial(dialer, RECONNECT_MIN);
                }
                State::Down { retry, backoff } => {
                    if Instant::now() >= retry {
                        inner.state = State::Dialing { wait: false };
                        self.spawn_dial(dialer, backoff);
                    }
                    return Err(StoreError::Unavailable);
                }
            }
            // Made under the lock, before the dial can finish: `notify_waiters`
            // reaches a `Notified` from its creation on.
            self.dialed.notified()
        };
        if timeout_at(deadline, dialed).await.is_err() {
            return Err(StoreError::Timeout);
        }
        match self.lock().state {
            State::Up {
                ref conn,
                generation,
            } => Ok((conn.clone(), generation)),
            _ => Err(StoreError::Unavailable),
        }
    }

    /// Dials in a task of the current runtime; on failure, the next dial waits
    /// `backoff`.
    fn spawn_dial(self: &Arc<Self>, dialer: &Arc<Dialer>, backoff: Duration) {
        let link = Arc::clone(self);
        let dialer = Arc::clone(dialer);
        tokio::spawn(async move {
            let mut unfinished = Unfinished(Some(Arc::clone(&link)));
            let result = dialer.connect().await;
            unfinished.0 = None;
            let now = Instant::now();
            {
                let mut inner = link.lock();
                if matches!(inner.state, State::Closed) {
                    return;
                }
                match result {
                    Ok(conn) => {
                        inner.generation += 1;
                        inner.state = State::Up {
                            conn,
                            generation: inner.generation,
                        };
                        link.last_answer.store(clock::nanos(now), Ordering::Relaxed);
                        dialer.health.reached();
                    }
                    Err(e) => {
                        inner.state = State::Down {
                            retry: now + backoff,
                            backoff: (backoff * 2).min(RECONNECT_MAX),
                        };
                        dialer.health.lost(&e);
                    }
                }
            }
            link.dialed.notify_waiters();
        });
    }

    /// A decision had its answer in time at `now` (`clock::nanos`).
    pub(crate) fn answered(&self, now: u64) {
        self.last_answer.store(now, Ordering::Relaxed);
    }

    /// Connection `generation` failed (closed, reset, unusable): the next
    /// decision dials a new one.
    pub(crate) fn broken(&self, generation: u64) {
        let mut inner = self.lock();
        if matches!(inner.state, State::Up { generation: g, .. } if g == generation) {
            inner.state = State::Idle;
        }
    }

    /// A decision on connection `generation` had no answer in time. A slow
    /// answer now and then is Redis being busy; no answer at all for
    /// `STALE_AFTER` is a connection that died without closing (a host gone,
    /// a network cut) or a Redis that hangs: it is dropped and Redis counted
    /// down, so that decisions fall back at once instead of each waiting out its
    /// timeout. Returns whether it was dropped.
    pub(crate) fn timed_out(&self, generation: u64) -> bool {
        let now = Instant::now();
        let silent = clock::nanos(now).saturating_sub(self.last_answer.load(Ordering::Relaxed));
        if silent < STALE_AFTER.as_nanos() as u64 {
            return false;
        }
        let mut inner = self.lock();
        if !matches!(inner.state, State::Up { generation: g, .. } if g == generation) {
            return false;
        }
        inner.state = State::Down {
            retry: now,
            backoff: RECONNECT_MIN,
        };
        true
    }

    /// The store is gone: drop the connection (its driver task ends with it).
    pub(crate) fn close(&self) {
        self.lock().state = State::Closed;
    }
}

/// Armed while a dial task runs: if the task is dropped unfinished (its runtime
/// shut down), the link goes back to `Idle`, so that a decision on another
/// runtime of the thread dials again instead of waiting on a dial that will never
/// end.
struct Unfinished(Option<Arc<Link>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(link) = self.0.take() {
            {
                let mut inner = link.lock();
                if matches!(inner.state, State::Dialing { .. }) {
                    inner.state = State::Idle;
                }
            }
            link.dialed.notify_waiters();
        }
    }
}
