//! Keep-alive pool of HTTP/1.1 connections to one server. The lock is per server and
//! held for a push or a pop only; there is no pool-wide lock.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ServerState;
use crate::body::ReqBody;
use crate::error::ProxyError;

/// How long an idle upstream connection is kept: nginx's upstream `keepalive_timeout`
/// default. Origins usually close sooner (Node's default is 5 s); a connection the
/// origin closed is noticed and discarded at checkout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a returned connection may take to become ready for its next request
/// before it is closed instead of pooled. Readiness normally follows within
/// microseconds of the response's end; anything slower is a misbehaving origin.
const READY_WAIT: Duration = Duration::from_secs(1);

thread_local! {
    /// The worker this thread serves; selects the pool shard.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread use pool shard `index`. Each worker thread has its own
/// shard, so a pooled connection is only used by the thread whose runtime drives it
/// (no cross-thread wake-ups per request), and `keepalive` counts per worker, as
/// nginx's `keepalive` does.
pub fn set_worker_shard(index: usize) {
    SHARD.set(index);
}

#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    shards: Box<[Mutex<Vec<Idle>>]>,
    max_idle: AtomicUsize,
}

#[derive(Debug)]
struct Idle {
    tx: SendRequest<ReqBody>,
    since: Instant,
}

/// A connection checked out for one request.
#[derive(Debug)]
pub struct PooledConn {
    pub tx: SendRequest<ReqBody>,
    /// Whether it came from the pool; a reused connection may have been closed by the
    /// origin in the meantime, which makes a failure on it safe to retry in some cases.
    pub reused: bool,
}

impl Pool {
    pub fn new(addr: SocketAddr, max_idle: usize, shards: usize) -> Self {
        Pool {
            addr,
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Vec::with_capacity(max_idle.min(64))))
                .collect(),
            max_idle: AtomicUsize::new(max_idle),
        }
    }

    pub fn set_max_idle(&self, n: usize) {
        self.max_idle.store(n, Ordering::Relaxed);
    }

    /// Idle connections over all workers.
    pub fn idle_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// This worker's idle connections. The lock is uncontended in practice: only
    /// the worker's own thread takes it.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        let shard = &self.shards[SHARD.get() % self.shards.len()];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently returned live connection (LIFO keeps few connections warm
    /// and lets the rest expire), or a new one.
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<PooledConn, ProxyError> {
        if let Some(tx) = self.take_idle() {
            return Ok(PooledConn { tx, reused: true });
        }
        self.connect(connect_timeout)
            .await
            .map(|tx| PooledConn { tx, reused: false })
    }

    fn take_idle(&self) -> Option<SendRequest<ReqBody>> {
        let now = Instant::now();
        let mut idle = self.lock();
        while let Some(c) = idle.pop() {
            if c.tx.is_ready() && now.saturating_duration_since(c.since) < DEFAULT_IDLE_TIMEOUT {
                return Some(c.tx);
            }
        }
        None
    }

    pub async fn connect(&self, timeout: Duration) -> Result<SendRequest<ReqBody>, ProxyError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ProxyError::Connect(e)),
            Err(_) => return Err(ProxyError::ConnectTimeout),
        };
        // Small proxied writes must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::Upstream)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }

    fn push(&self, tx: SendRequest<ReqBody>) {
        let max = self.max_idle.load(Ordering::Relaxed);
        let mut idle = self.lock();
        if idle.len() < max {
            idle.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }
}

impl ServerState {
    /// Returns a connection whose response has ended. hyper marks it ready once its
    /// connection task has seen the end of the exchange, which may lag the body's end
    /// by a scheduling round; such a connection is pooled by a short-lived task.
    pub fn release(self: &Arc<Self>, mut tx: SendRequest<ReqBody>) {
        if tx.is_ready() {
            self.pool.push(tx);
        } else if !tx.is_closed() {
            let server = Arc::clone(self);
            tokio::spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, tx.ready()).await {
                    server.pool.push(tx);
                }
            });
        }
    }
}
