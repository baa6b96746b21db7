//! Plain HTTP/1.1 connections that cost almost nothing while idle.
//!
//! hyper keeps a connection's state for its whole life: an 8 KiB read buffer it
//! refills before every wait, an 8 KiB buffer for response heads, the cached
//! header map of the last request, and its dispatcher. Most of a proxy's client
//! connections are idle keep-alive ones (a bot fleet's clients, browsers), so that
//! is what they cost: about 23 KB each, where nginx, which frees its buffers when a
//! connection goes idle, needs about 1.3 KB.
//!
//! Here a connection that has waited `PARK_AFTER` for its next request, with
//! nothing half-read or half-written, is taken back from hyper (`into_parts`) and
//! waits for readability on the bare socket: no buffer, no hyper state, a small
//! task. When bytes come, a new hyper connection picks up the same socket, service
//! and session (keep-alive count, timers), and any bytes hyper had read but not
//! used are handed back first. Under load a connection is never idle that long, so
//! requests take the usual path; the cost of a park and a resume (two buffers
//! freed and made again) is paid only by connections that were idle anyway.
//!
//! Only plain HTTP/1.1 parks: HTTP/2 (prior knowledge, told by the first bytes) and
//! TLS connections take the usual path.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use metrics::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::client_io::ClientIo;
use crate::body::BoxError;
use crate::pipeline::{ProxyService, Session};

/// How long an HTTP/1.1 connection waits for its next request before it gives its
/// HTTP state back. Long enough that a connection under load (a request every few
/// milliseconds) never parks, so the busy path pays nothing; short enough that a
/// crowd of idle connections costs what their sockets cost within a blink.
pub(super) const PARK_AFTER: Duration = Duration::from_millis(100);

/// What an HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a connection starts, told by its first bytes.
pub(super) enum Start {
    /// HTTP/1.x: served by `serve`.
    Http1,
    /// The HTTP/2 preface (or a prefix of it so far): for the usual builder.
    Other,
    /// The connection ended (closed, timed out, or drained) before a byte came.
    Ended,
}

/// Waits, without a buffer, for the connection's first bytes (under its first
/// request's deadline and the drain) and tells what they start.
pub(super) async fn start(
    stream: &TcpStream,
    session: &Session,
    drain: &mut watch::Receiver<()>,
) -> io::Result<Start> {
    let mut first = [0u8; H2_PREFACE.len()];
    // `peek` waits for readability itself (and again after a spurious one).
    let n = tokio::select! {
        biased;
        _ = drain.changed() => return Ok(Start::Ended),
        n = stream.peek(&mut first) => n?,
        () = tokio::time::sleep_until(session.idle_end()) => return Ok(Start::Ended),
    };
    Ok(match n {
        0 => Start::Ended,
        n if first[..n] == H2_PREFACE[..n] => Start::Other,
        _ => Start::Http1,
    })
}

/// A plain HTTP/1.1 connection to serve.
pub(super) struct Conn {
    pub stream: TcpStream,
    pub svc: ProxyService,
    /// Changes (or closes) when the connection's listener group drains.
    pub drain: watch::Receiver<()>,
    pub session: Arc<Session>,
    /// The listener's count of parked connections.
    pub parked: Gauge,
}

/// Serves HTTP/1.1 on the connection until it ends, parking it whenever it idles
/// (see the module's doc).
pub(super) async fn serve(builder: &http1::Builder, conn: Conn) -> Result<(), BoxError> {
    let Conn {
        stream,
        mut svc,
        mut drain,
        session,
        parked,
    } = conn;
    let mut io = Prefixed::new(stream, Bytes::new());
    loop {
        let client = ClientIo::new(io, Arc::clone(&session), false).parking(PARK_AFTER);
        let conn = builder
            .serve_connection(TokioIo::new(client), svc)
            .with_upgrades();
        // Boxed: the connection's task holds only a pointer while parked, not
        // hyper's state, which is freed.
        let mut conn = Box::pin(conn);
        let idle = std::future::poll_fn(|cx| match conn.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending if session.take_park() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        let ended = tokio::select! {
            biased;
            ended = idle => ended,
            // A dropped group (its sender gone) drains too.
            _ = drain.changed() => {
                conn.as_mut().graceful_shutdown();
                Some(conn.as_mut().await)
            }
        };
        if let Some(out) = ended {
            return out.map_err(Into::into);
        }
        let Some(parts) = Pin::into_inner(conn).into_parts() else {
            // Upgraded meanwhile: the tunnel has the socket.
            return Ok(());
        };
        svc = parts.service;
        io = parts.io.into_inner().into_inner();
        io.push_back(parts.read_buf);
        if io.prefix.is_empty() {
            let _parked = ParkedGuard::new(&parked);
            if !readable(io.get_ref(), &session, &mut drain).await? {
                return Ok(());
            }
        }
    }
}

/// Counts a connection in its listener's parked gauge while it lives.
struct ParkedGuard<'a>(&'a Gauge);

impl<'a> ParkedGuard<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.increment(1.0);
        ParkedGuard(gauge)
    }
}

impl Drop for ParkedGuard<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Waits for `stream` to be readable: `true` when it is, `false` when the
/// connection is to close instead (its idle deadline passed, quietly as hyper
/// closes an idle connection, or its group drains).
async fn readable(
    stream: &TcpStream,
    session: &Session,
    drain: &mut watch::Receiver<()>,
) -> io::Result<bool> {
    tokio::select! {
        biased;
        _ = drain.changed() => Ok(false),
        r = stream.readable() => r.map(|()| true),
        () = tokio::time::sleep_until(session.idle_end()) => Ok(false),
    }
}

/// A socket with bytes read from it earlier in front: what hyper had read and
/// not used when the connection was parked.
#[derive(Debug)]
pub(super) struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl Prefixed {
    fn new(inner: TcpStream, prefix: Bytes) -> Self {
        Prefixed { prefix, inner }
    }

    fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// `more` was read after what is left of the prefix.
    fn push_back(&mut self, more: Bytes) {
        if more.is_empty() {
            return;
        }
        if self.prefix.is_empty() {
            self.prefix = more;
        } else {
            let mut both = BytesMut::with_capacity(self.prefix.len() + more.len());
            both.extend_from_slice(&self.prefix);
            both.extend_from_slice(&more);
            self.prefix = both.freeze();
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
