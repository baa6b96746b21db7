//! Serving one client connection: plain (HTTP/1.1 and HTTP/2 prior knowledge on one
//! port, told apart by the first bytes) or TLS (ALPN choosing), with hyper-util's
//! auto builder, each connection in its own task and in its listener's drain group,
//! its socket in `ClientIo` (HTTP/1.1's head and idle timers) and driven by
//! `drain::drive` (the drain, HTTP/2's keep-alive limits).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::client_io::ClientIo;
use super::drain::{self, Drain};
use super::h2_limits as h2;
use super::handoff::{Handoff, OpenGuard};
use super::park;
use super::proxy_protocol;
use super::ConnSlot;
use super::{ListenerTag, DEFAULT_DRAIN_TIMEOUT, H2_MAX_CONCURRENT_STREAMS};
use crate::body::BoxError;
use crate::pipeline::{ClientInfo, ConnSettings, Current, ProxyService, Session};
use crate::tls::{self, Alpn};

/// What a worker needs to serve a connection.
#[derive(Clone)]
pub(super) struct Serve {
    pub(super) current: Arc<Current>,
    /// Connection builders by the settings they apply: one for each set the
    /// listeners use (usually just the defaults), made on first use.
    pub(super) builders: Arc<Mutex<BuildersBySettings>>,
    /// Per listener socket generation: its connections, drained together when the
    /// listener is removed by a reload or the worker stops.
    pub(super) gracefuls: Arc<Gracefuls>,
    /// With several workers: the balance and this worker's index.
    pub(super) handoff: Option<(Arc<Handoff>, usize)>,
}

impl Serve {
    fn graceful(&self, generation: u64) -> Arc<Drain> {
        let mut map = self.gracefuls.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(generation).or_default())
    }

    /// A removed listener's connections finish their current request and close.
    pub(super) fn retire(&self, generation: u64) {
        let g = self
            .gracefuls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&generation);
        if let Some(g) = g.and_then(|g| Arc::try_unwrap(g).ok()) {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(DEFAULT_DRAIN_TIMEOUT, g.shutdown()).await;
            });
        }
    }

    pub(super) fn take_gracefuls(&self) -> Vec<Arc<Drain>> {
        let mut map = self.gracefuls.lock().unwrap_or_else(|e| e.into_inner());
        map.drain().map(|(_, g)| g).collect()
    }

    /// A connection this worker accepted: served here, or handed to a lighter worker.
    pub(super) fn accepted(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        id: ListenerTag,
        slot: ConnSlot,
    ) {
        let Some((h, me)) = &self.handoff else {
            return self.serve(stream, remote, id, None, slot);
        };
        let target = h.target(*me);
        h.open[target].fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(Arc::clone(h), target);
        if target == *me {
            return self.serve(stream, remote, id, Some(guard), slot);
        }
        // The guard and the slot travel with the socket; if the target is shutting
        // down, the unsent message drops them and the connection closes.
        match stream.into_std() {
            Ok(s) => drop(h.inboxes[target].send((s, remote, id, guard, slot))),
            Err(e) => tracing::debug!(error = %e, "cannot hand a connection over"),
        }
    }

    pub(super) fn serve(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        (id, generation): ListenerTag,
        guard: Option<OpenGuard>,
        slot: ConnSlot,
    ) {
        let (open, first, settings) = {
            let snapshot = self.current.peek();
            let Some(listener) = snapshot.listener(id) else {
                return;
            };
            // The connection phase: refused connections close before a byte is read.
            if !listener.admit(remote) {
                return;
            }
            let first = First {
                proxy_protocol: listener.proxy_protocol.clone(),
                tls: listener.tls.clone(),
                parked: listener.parked.clone(),
            };
            (listener.connections.clone(), first, listener.conn)
        };
        let _ = stream.set_nodelay(true);
        open.increment(1.0);
        // Held by the connection's task until it ends, however it ends: counted
        // from accept to close, handshakes included.
        let held = Held {
            _handoff: guard,
            _slot: slot,
            _open: GaugeGuard(open),
        };
        let builders = self.builders(settings);
        if first.proxy_protocol.is_some() || first.tls.is_some() {
            return self.serve_later(
                first,
                (builders, settings),
                stream,
                remote,
                (id, generation),
                held,
            );
        }
        let session = Session::new(settings);
        let parked = first.parked;
        let svc = ProxyService::new(
            Arc::clone(&self.current),
            id,
            ClientInfo::new(remote, "http"),
        );
        let watcher = self.graceful(generation).watcher();
        tokio::spawn(async move {
            let _held = held;
            let result = plain(&builders, stream, svc, watcher, session, parked).await;
            if let Err(e) = result {
                tracing::debug!(error = %e, %remote, "client connection ended with an error");
            }
        });
    }

    /// A connection that must read something before HTTP: its PROXY protocol
    /// header (within the listener's `client_header_timeout`; a missing or broken
    /// one closes the connection, nothing read past it), then its TLS handshake.
    /// Both run in the connection's own task, never in the accept loop, so a slow
    /// or silent client holds only its own slot (for at most the header timeout,
    /// then `tls::HANDSHAKE_TIMEOUT`). Like a plain connection that has not sent
    /// a request yet, such a connection does not hold up a drain: it joins its
    /// listener's drain group only once ready for HTTP, and is closed then if that
    /// group has been drained meanwhile.
    fn serve_later(
        &self,
        first: First,
        (builders, settings): (Arc<Builders>, ConnSettings),
        mut stream: TcpStream,
        peer: SocketAddr,
        (id, generation): ListenerTag,
        held: Held,
    ) {
        // The group exists from now on, so its absence later means it was drained.
        drop(self.graceful(generation));
        let gracefuls = Arc::clone(&self.gracefuls);
        let current = Arc::clone(&self.current);
        tokio::spawn(async move {
            let _held = held;
            let remote = match &first.proxy_protocol {
                Some(errors) => {
                    match proxy_protocol::read_header(&mut stream, settings.client_header_timeout)
                        .await
                    {
                        // A header that names no client (a balancer's health
                        // check): the balancer is the client.
                        Ok(named) => named.unwrap_or(peer),
                        // Nothing was forwarded and nothing will be: close. Counted,
                        // so that a balancer not sending the header shows.
                        Err(e) => {
                            errors.increment(1);
                            return tracing::debug!(error = %e, %peer, "connection closed");
                        }
                    }
                }
                None => peer,
            };
            let joined = |gracefuls: &Gracefuls| {
                // No await from the lookup to `watcher()`: the group's `Arc` is
                // not held while a drain may try to take it.
                let group = gracefuls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&generation)
                    .map(|g| g.watcher());
                if group.is_none() {
                    tracing::debug!(%remote, "listener draining; closing a connection before its first request");
                }
                group
            };
            // The session's clock (the first request's head timeout) starts once
            // the connection is ready for HTTP: after its TLS handshake, which has
            // its own timeout, as before the PROXY protocol came in.
            let result = match first.tls {
                None => {
                    let Some(watcher) = joined(&gracefuls) else {
                        return;
                    };
                    let svc = ProxyService::new(current, id, ClientInfo::new(remote, "http"));
                    let session = Session::new(settings);
                    plain(&builders, stream, svc, watcher, session, first.parked).await
                }
                Some(config) => {
                    let (stream, alpn) = match tls::handshake(config, stream).await {
                        Ok(s) => s,
                        // Scanners and clients with nothing in common are routine: debug only.
                        Err(e) => {
                            return tracing::debug!(error = %e, %remote, "TLS handshake failed")
                        }
                    };
                    let Some(watcher) = joined(&gracefuls) else {
                        return;
                    };
                    let svc = ProxyService::new(current, id, ClientInfo::new(remote, "https"));
                    let session = Session::new(settings);
                    http(&builders, stream, alpn == Alpn::H2, svc, watcher, session).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %remote, "client connection ended with an error");
            }
        });
    }
}

/// Serves a plain connection: HTTP/1.1 parks while idle (`park`); HTTP/2 prior
/// knowledge, told by its preface, goes to `http`.
async fn plain(
    builders: &Builders,
    stream: TcpStream,
    svc: ProxyService,
    mut watcher: watch::Receiver<()>,
    session: Arc<Session>,
    parked: metrics::Gauge,
) -> Result<(), BoxError> {
    match park::start(&stream, &session, &mut watcher).await? {
        park::Start::Ended => Ok(()),
        park::Start::Http1 => {
            let svc = svc.with_session(Arc::clone(&session));
            let conn = park::Conn {
                stream,
                svc,
                drain: watcher,
                session,
                parked,
            };
            park::serve(&builders.h1, conn).await
        }
        // Boxed: the usual path's future (hyper's auto connection) is large, and
        // inline it would size every plain connection's task, parked ones too.
        park::Start::Other => Box::pin(http(builders, stream, false, svc, watcher, session)).await,
    }
}

/// Serves HTTP on a connection ready for it (its PROXY header and TLS handshake
/// done) until it ends: HTTP/2 when ALPN chose it (`h2`), else HTTP/1.1 or HTTP/2
/// prior knowledge, told apart by the first bytes. Its socket goes in `ClientIo`,
/// and `drain::drive` runs it under its drain group (`watcher`) and `session`.
async fn http<I>(
    builders: &Builders,
    stream: I,
    h2: bool,
    svc: ProxyService,
    watcher: watch::Receiver<()>,
    session: Arc<Session>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = svc.with_session(Arc::clone(&session));
    let io = TokioIo::new(ClientIo::new(stream, Arc::clone(&session), h2));
    if h2 {
        let conn = builders.h2.serve_connection(io, svc);
        let shut = |c: Pin<&mut _>| auto::Connection::graceful_shutdown(c);
        drain::drive(conn, shut, watcher, &session).await
    } else {
        let conn = builders.auto.serve_connection_with_upgrades(io, svc);
        let shut = |c: Pin<&mut _>| auto::UpgradeableConnection::graceful_shutdown(c);
        drain::drive(conn, shut, watcher, &session).await
    }
}

/// What a connection reads before HTTP.
struct First {
    /// `Some`: a PROXY protocol header first, its failures counted here.
    proxy_protocol: Option<metrics::Counter>,
    /// `Some`: a TLS handshake.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The listener's parked-connections gauge.
    parked: metrics::Gauge,
}

/// What a connection holds until it closes: its place in the workers' balance,
/// its `max_connections` slot, and its count in the open-connections gauge.
struct Held {
    _handoff: Option<OpenGuard>,
    _slot: ConnSlot,
    _open: GaugeGuard,
}

type Gracefuls = Mutex<HashMap<u64, Arc<Drain>>>;

/// Decrements an open-connections gauge when the connection's task ends, however
/// it ends.
struct GaugeGuard(metrics::Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Serve {
    /// The builders for connections served with `settings`.
    fn builders(&self, settings: ConnSettings) -> Arc<Builders> {
        let key = BuilderKey::of(&settings);
        let mut all = self.builders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = all.iter().find(|(k, _)| *k == key) {
            return Arc::clone(b);
        }
        let b = Arc::new(Builders::new(key));
        all.push((key, Arc::clone(&b)));
        b
    }
}

/// A worker's builders, by the settings they apply.
pub(super) type BuildersBySettings = Vec<(BuilderKey, Arc<Builders>)>;

/// What a builder applies of a listener's `ConnSettings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BuilderKey {
    /// hyper's `header_read_timeout`: a backstop only. It runs from the moment a
    /// connection goes idle, so it would cut a keep-alive wait at the head's
    /// limit; `ClientIo` times the wait (`keepalive_timeout`) and the head
    /// (`client_header_timeout`) apart, and this is their sum, which it never
    /// reaches first.
    backstop: Duration,
    /// `keepalive_timeout` is not zero.
    keep_alive: bool,
    /// `max_header_size`.
    max_header_size: usize,
}

impl BuilderKey {
    fn of(s: &ConnSettings) -> Self {
        BuilderKey {
            backstop: s.client_header_timeout + s.keepalive_timeout,
            keep_alive: !s.keepalive_timeout.is_zero(),
            max_header_size: s.max_header_size,
        }
    }
}

/// Connection builders, made per worker for each set of settings in use.
pub(super) struct Builders {
    /// HTTP/1.1 on plain connections, which park while idle (`park`).
    h1: http1::Builder,
    /// HTTP/1.1 and HTTP/2 prior knowledge, told apart by the first bytes: TLS
    /// connections without ALPN `h2`, and plain ones that start with HTTP/2's
    /// preface.
    auto: auto::Builder<TokioExecutor>,
    /// HTTP/2 only, for TLS connections that chose `h2` by ALPN.
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(key: BuilderKey) -> Self {
        Builders {
            h1: h1_builder(key),
            auto: builder(key),
            h2: builder(key).http2_only(),
        }
    }
}

/// hyper's smallest read buffer (`max_buf_size` panics below it).
const MIN_BUF_SIZE: usize = 8 * 1024;

/// HTTP/1.1 as `builder` serves it, for the plain connections that park.
fn h1_builder(key: BuilderKey) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(key.backstop)
        .keep_alive(key.keep_alive)
        .max_buf_size(key.max_header_size.max(MIN_BUF_SIZE))
        // Here hyper's own limit is reachable, and exact: the buffer alone lets
        // a head through when one read takes it past `max_buf_size` at once.
        .max_header_size(key.max_header_size)
        .half_close(true);
    b
}

/// The HTTP/1.1 settings here are `h1_builder`'s too (one list, explained here).
fn builder(key: BuilderKey) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(key.backstop)
        // `keepalive_timeout = 0`: one request per connection; hyper says
        // `Connection: close` on the response.
        .keep_alive(key.keep_alive)
        // A head that does not fit the read buffer gets 431 and the connection
        // closes: the buffer is `max_header_size` (hyper-util's auto builder
        // does not reach hyper's own `max_header_size`). It also bounds what is
        // read and buffered at once while a body streams.
        .max_buf_size(key.max_header_size.max(MIN_BUF_SIZE))
        // A client may shut down its write side once its request is sent
        // (`shutdown(SHUT_WR)`, `nc -N`, some health checkers) and still wait for
        // the answer; hyper's default takes that FIN for a client gone and drops
        // the request, answered or not. HAProxy answers these (its default,
        // without `option abortonclose`). The price: a client that really left
        // while its request waits on the origin is noticed only when the answer
        // is written, so that request runs to its end.
        .half_close(true);
    // Every limit that bounds what one client connection can cost, explicitly:
    // each constant's doc (server/h2_limits.rs) says what it bounds and why.
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(h2::H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(h2::H2_MAX_LOCAL_ERROR_RESET_STREAMS)
        // `max_header_size`, as SETTINGS_MAX_HEADER_LIST_SIZE (see h2_limits).
        .max_header_list_size(u32::try_from(key.max_header_size).unwrap_or(u32::MAX))
        .max_frame_size(h2::H2_MAX_FRAME_SIZE)
        .initial_stream_window_size(h2::H2_INITIAL_STREAM_WINDOW)
        .initial_connection_window_size(h2::H2_INITIAL_CONNECTION_WINDOW)
        .max_send_buf_size(h2::H2_MAX_SEND_BUF_SIZE)
        .keep_alive_interval(h2::H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(h2::H2_KEEP_ALIVE_TIMEOUT)
        // RFC 8441: WebSocket over HTTP/2 streams (see proxy::tunnel).
        .enable_connect_protocol();
    b
}
