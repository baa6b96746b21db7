//! Connections to one server, kept per worker. HTTP/1.1 connections carry one
//! request at a time, so idle ones wait in a keep-alive pool; HTTP/2 connections
//! are shared: each carries as many requests at once as the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` allows, and another is opened only when every
//! one is full. The lock is per server and worker, held for a push or a pop only.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;

use super::transport::{Stream, Transport};
use super::wire::{Metered, Wire};
use super::ServerState;
use crate::body::ReqBody;
use crate::clock::stamp;
use crate::config::UpstreamProtocol;
use crate::error::ProxyError;

/// How long an idle upstream connection is kept: nginx's upstream `keepalive_timeout`
/// default. Origins usually close sooner (Node's default is 5 s); a connection the
/// origin closed is noticed and discarded at checkout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a returned connection may take to become ready for its next request
/// before it is closed instead of pooled. Readiness normally follows within
/// microseconds of the response's end; anything slower is a misbehaving origin.
const READY_WAIT: Duration = Duration::from_secs(1);

/// Interval of HTTP/2 PINGs while requests are open on a connection, and how long
/// an answer may take: a connection that died without a FIN (a NAT or load
/// balancer dropping it) fails its requests within this instead of holding each
/// until `read_timeout`. 20 s is hyper's and grpc-go's keep-alive timeout.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);

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
    transport: Transport,
    shards: Box<[Mutex<Shard>]>,
    max_idle: AtomicUsize,
    /// `max_response_header_size`, for HTTP/1.1 connections opened from now on.
    max_head: AtomicUsize,
}

/// One worker's connections to the server.
#[derive(Debug, Default)]
struct Shard {
    /// HTTP/1.1 connections waiting for a request, most recently used last.
    idle: Vec<Idle>,
    /// HTTP/2 connections, in the order they were opened.
    h2: Vec<H2Conn>,
    /// An HTTP/2 connection being opened, which requests arriving meanwhile wait
    /// for instead of each opening their own (a burst at start-up would otherwise
    /// open one connection per request).
    dialing: Option<watch::Receiver<Option<Dialed>>>,
}

/// How an awaited HTTP/2 connect ended, for the requests that waited on it.
#[derive(Debug, Clone)]
enum Dialed {
    Open,
    TimedOut,
    Failed(String),
}

#[derive(Debug)]
struct Idle {
    conn: H1Conn,
    since: Instant,
}

/// An HTTP/1.1 connection's sending half, and what its I/O saw of the current
/// exchange.
#[derive(Debug)]
pub struct H1Conn {
    pub tx: http1::SendRequest<ReqBody>,
    pub wire: Arc<Wire>,
}

/// The sending half of a connection, for one request.
#[derive(Debug)]
pub enum Sender {
    H1(H1Conn),
    /// A stream on a shared connection; dropping it frees the stream's slot.
    H2(H2Lease),
}

/// A connection checked out for one request.
#[derive(Debug)]
pub struct PooledConn {
    pub tx: Sender,
    /// Whether it was used before; a reused connection may have been closed by the
    /// origin in the meantime, which makes a failure on it safe to retry in some cases.
    pub reused: bool,
}

impl Pool {
    pub fn new(addr: SocketAddr, max_idle: usize, shards: usize, transport: Transport) -> Self {
        Pool {
            addr,
            transport,
            shards: (0..shards.max(1))
                .map(|_| {
                    // The idle list grows on first use: a server never connected
                    // to (most of a large discovered pool, on a given worker)
                    // costs nothing for it, where 64 slots made up front cost
                    // about 3 KB per server.
                    Mutex::new(Shard::default())
                })
                .collect(),
            max_idle: AtomicUsize::new(max_idle),
            max_head: AtomicUsize::new(crate::config::DEFAULT_MAX_RESPONSE_HEADER_SIZE),
        }
    }

    pub fn set_max_idle(&self, n: usize) {
        self.max_idle.store(n, Ordering::Relaxed);
    }

    /// Sets `max_response_header_size` for the connections opened from now on (a
    /// reload does not close the open ones).
    pub fn set_max_head(&self, n: usize) {
        self.max_head.store(n, Ordering::Relaxed);
    }

    /// How connections to the server are made.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Idle connections over all workers: pooled HTTP/1.1 ones, and HTTP/2 ones
    /// carrying no request.
    pub fn idle_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                let h2 = s.h2.iter().filter(|c| c.state.active() == 0).count();
                s.idle.len() + h2
            })
            .sum()
    }

    /// This worker's connections. The lock is uncontended in practice: only the
    /// worker's own thread takes it.
    fn lock(&self) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[SHARD.get() % self.shards.len()];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection for one request: for HTTP/1.1 the most recently returned live
    /// one (LIFO keeps few connections warm and lets the rest expire), for HTTP/2
    /// the first with a free stream; else a new one.
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<PooledConn, ProxyError> {
        if self.transport.protocol().is_h2() {
            if let Some(lease) = take_h2(&mut self.lock()) {
                return Ok(PooledConn {
                    tx: Sender::H2(lease),
                    reused: true,
                });
            }
            // Boxed, as a new connection below (see `ProxyService::call`).
            return Box::pin(self.checkout_h2(connect_timeout)).await;
        }
        if let Some(conn) = self.take_idle() {
            return Ok(PooledConn {
                tx: Sender::H1(conn),
                reused: true,
            });
        }
        Box::pin(self.connect(connect_timeout))
            .await
            .map(|tx| PooledConn { tx, reused: false })
    }

    /// A stream on a shared connection with room; when there is none, the
    /// connection being opened by another request (then a look again), or a new one.
    async fn checkout_h2(&self, connect_timeout: Duration) -> Result<PooledConn, ProxyError> {
        loop {
            let waiting = {
                let mut shard = self.lock();
                if let Some(lease) = take_h2(&mut shard) {
                    return Ok(PooledConn {
                        tx: Sender::H2(lease),
                        reused: true,
                    });
                }
                match &shard.dialing {
                    Some(rx) => Ok(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        shard.dialing = Some(rx);
                        Err(tx)
                    }
                }
            };
            let mut dialing = match waiting {
                Ok(rx) => rx,
                // Nobody is opening one: this request does.
                Err(tx) => {
                    let dial = Dial {
                        pool: self,
                        rx: tx.subscribe(),
                        tx,
                        outcome: None,
                    };
                    let lease = dial.run(connect_timeout).await?;
                    return Ok(PooledConn {
                        tx: Sender::H2(lease),
                        reused: false,
                    });
                }
            };
            // The dialer dropped (its request was cancelled): look again.
            let Ok(outcome) = dialing.wait_for(Option::is_some).await else {
                continue;
            };
            match outcome.clone() {
                Some(Dialed::TimedOut) => return Err(ProxyError::ConnectTimeout),
                Some(Dialed::Failed(why)) => {
                    return Err(ProxyError::Connect(std::io::Error::other(why)))
                }
                Some(Dialed::Open) | None => {}
            }
        }
    }

    fn take_idle(&self) -> Option<H1Conn> {
        let now = Instant::now();
        let mut shard = self.lock();
        while let Some(c) = shard.idle.pop() {
            if c.conn.tx.is_ready() && now.saturating_duration_since(c.since) < DEFAULT_IDLE_TIMEOUT
            {
                return Some(c.conn);
            }
        }
        None
    }

    /// A new connection (for HTTP/2, also offered to the requests that follow).
    pub async fn connect(&self, timeout: Duration) -> Result<Sender, ProxyError> {
        match self.transport.protocol() {
            UpstreamProtocol::Http1 => {
                let stream = self.transport.connect(self.addr, timeout).await?;
                let max_head = self.max_head.load(Ordering::Relaxed);
                handshake_h1(stream, max_head).await.map(Sender::H1)
            }
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => {
                self.open_h2(timeout).await.map(Sender::H2)
            }
        }
    }

    /// Opens an HTTP/2 connection, adds it to this worker's, and leases a stream.
    async fn open_h2(&self, timeout: Duration) -> Result<H2Lease, ProxyError> {
        let stream = self.transport.connect(self.addr, timeout).await?;
        let conn = handshake_h2(stream).await?;
        let lease = conn.lease();
        self.lock().h2.push(conn);
        Ok(lease)
    }

    fn push(&self, conn: H1Conn) {
        let max = self.max_idle.load(Ordering::Relaxed);
        let mut shard = self.lock();
        if shard.idle.len() < max {
            shard.idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// An HTTP/1.1 client connection on `stream`, driven by its own task (which also
/// carries protocol switches), its reads recorded on a `Wire`. A response head
/// over `max_head` bytes, 1xx interim responses included, fails the exchange
/// (`Metered`'s count; hyper's `max_header_size` checks each head too, and
/// bounds chunked trailers).
async fn handshake_h1(stream: Stream, max_head: usize) -> Result<H1Conn, ProxyError> {
    let wire = Arc::new(Wire::default());
    let io = Metered::new(stream, Arc::clone(&wire), max_head);
    let (tx, conn) = http1::Builder::new()
        .max_header_size(max_head)
        .handshake(TokioIo::new(io))
        .await
        .map_err(ProxyError::Upstream)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(H1Conn { tx, wire })
}

/// An HTTP/2 client connection on `stream`, driven by its own task, which keeps the
/// server's current stream limit where checkouts can see it.
async fn handshake_h2(stream: Stream) -> Result<H2Conn, ProxyError> {
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_INTERVAL)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ProxyError::Upstream)?;
    let state = Arc::new(H2State {
        active: AtomicUsize::new(0),
        max: AtomicUsize::new(conn.current_max_send_streams()),
        broken: AtomicBool::new(false),
        idle_since: AtomicU32::new(stamp(Instant::now())),
    });
    let shared = Arc::clone(&state);
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        let ended = std::future::poll_fn(|cx| {
            let polled = conn.as_mut().poll(cx);
            // SETTINGS may lower or raise the limit at any time.
            let max = conn.as_ref().get_ref().current_max_send_streams();
            shared.max.store(max, Ordering::Relaxed);
            polled
        })
        .await;
        shared.broken.store(true, Ordering::Relaxed);
        if let Err(e) = ended {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(H2Conn { tx, state })
}

// ===== HTTP/2 sharing =====

/// A stream on this worker's first HTTP/2 connection with room. Connections that
/// closed, failed, or sat idle past `DEFAULT_IDLE_TIMEOUT` are let go here.
fn take_h2(shard: &mut Shard) -> Option<H2Lease> {
    let now = stamp(Instant::now());
    shard.h2.retain(|c| c.alive(now));
    shard
        .h2
        .iter()
        .find(|c| c.state.has_room())
        .map(H2Conn::lease)
}

/// The one HTTP/2 connect in progress on a shard. However it ends (done, failed,
/// or dropped with its cancelled request), the shard stops pointing at it first,
/// then the requests waiting on it wake and look again.
struct Dial<'a> {
    pool: &'a Pool,
    tx: watch::Sender<Option<Dialed>>,
    /// Identifies this dial in the shard.
    rx: watch::Receiver<Option<Dialed>>,
    outcome: Option<Dialed>,
}

impl Dial<'_> {
    async fn run(mut self, timeout: Duration) -> Result<H2Lease, ProxyError> {
        let opened = self.pool.open_h2(timeout).await;
        self.outcome = Some(match &opened {
            Ok(_) => Dialed::Open,
            Err(ProxyError::ConnectTimeout) => Dialed::TimedOut,
            Err(e) => Dialed::Failed(e.to_string()),
        });
        opened
    }
}

impl Drop for Dial<'_> {
    fn drop(&mut self) {
        {
            let mut shard = self.pool.lock();
            if shard
                .dialing
                .as_ref()
                .is_some_and(|rx| rx.same_channel(&self.rx))
            {
                shard.dialing = None;
            }
        }
        // Without an outcome (cancelled), dropping `tx` wakes the waiters instead.
        if let Some(o) = self.outcome.take() {
            self.tx.send_replace(Some(o));
        }
    }
}

#[derive(Debug)]
struct H2Conn {
    tx: http2::SendRequest<ReqBody>,
    state: Arc<H2State>,
}

/// What the requests sharing one HTTP/2 connection know about it.
#[derive(Debug)]
struct H2State {
    /// Requests on it now (streams leased and not yet released).
    active: AtomicUsize,
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS`, as last seen.
    max: AtomicUsize,
    /// Ended, or a request on it failed in a way that condemns the connection
    /// (GOAWAY, I/O error): no new requests go to it.
    broken: AtomicBool,
    /// `stamp` of when `active` last fell to zero.
    idle_since: AtomicU32,
}

impl H2State {
    fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Opening another stream now would not queue behind the server's limit. When
    /// every connection is full, a new one is opened rather than queueing: a queued
    /// request would wait on other requests' durations (a long gRPC stream holds its
    /// slot for minutes), which is what Envoy and grpc-go avoid the same way.
    fn has_room(&self) -> bool {
        self.active() < self.max.load(Ordering::Relaxed)
    }
}

impl H2Conn {
    fn alive(&self, now: u32) -> bool {
        if self.tx.is_closed() || self.state.broken.load(Ordering::Relaxed) {
            return false;
        }
        let idle_ms = now.wrapping_sub(self.state.idle_since.load(Ordering::Relaxed));
        self.state.active() > 0 || u128::from(idle_ms) < DEFAULT_IDLE_TIMEOUT.as_millis()
    }

    fn lease(&self) -> H2Lease {
        self.state.active.fetch_add(1, Ordering::Relaxed);
        H2Lease {
            tx: self.tx.clone(),
            state: Arc::clone(&self.state),
        }
    }
}

/// One request's share of an HTTP/2 connection.
#[derive(Debug)]
pub struct H2Lease {
    pub tx: http2::SendRequest<ReqBody>,
    state: Arc<H2State>,
}

impl H2Lease {
    /// Takes the connection out of rotation: requests already on it finish, new
    /// ones open another.
    pub fn condemn(&self) {
        self.state.broken.store(true, Ordering::Relaxed);
    }
}

impl Drop for H2Lease {
    fn drop(&mut self) {
        if self.state.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.state
                .idle_since
                .store(stamp(Instant::now()), Ordering::Relaxed);
        }
    }
}

impl ServerState {
    /// Returns a connection whose response has ended. hyper marks an HTTP/1.1
    /// connection ready once its connection task has seen the end of the exchange,
    /// which may lag the body's end by a scheduling round; such a connection is
    /// pooled by a short-lived task. An HTTP/2 stream just frees its slot.
    pub fn release(self: &Arc<Self>, tx: Sender) {
        let Sender::H1(mut conn) = tx else { return };
        if conn.tx.is_ready() {
            self.pool.push(conn);
        } else if !conn.tx.is_closed() {
            let server = Arc::clone(self);
            tokio::spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, conn.tx.ready()).await {
                    server.pool.push(conn);
                }
            });
        }
    }
}
