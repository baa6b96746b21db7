//! An upstream's response body on its way to the client, frame by frame as it
//! comes: it holds the request's in-flight guard and its connection, gives the
//! connection back to the pool when the body ends, and charges the server when the
//! body breaks.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::{InFlight, Sender, Upstream};
use crate::body::{BoxError, SendPhase, SendProgress};
use crate::config::NextUpstream;
use crate::error::ProxyError;

/// Whom a response body that breaks (reset, truncated, stalled past
/// `read_timeout`) is charged to: its server, one failure as `next_upstream`
/// counts them (an error or a timeout), unless the client's request body broke
/// first (the exchange then broke because of it) or, for a stall, the exchange
/// was waiting on the client's body.
#[derive(Debug)]
pub struct Blame {
    pub upstream: Arc<Upstream>,
    /// The server's index in `upstream.servers`.
    pub server: usize,
    pub on: NextUpstream,
    /// The request body's progress, when it streams from the client.
    pub progress: Option<Arc<SendProgress>>,
}

/// An upstream response body on its way to the client. It holds the request's
/// in-flight guard and its upstream connection until the body ends (the connection
/// then goes back to the pool) or is dropped (the connection is closed; an HTTP/2
/// stream is reset). Trailers (gRPC's status) pass through as frames like data.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    conn: Option<Sender>,
    guard: InFlight,
    read_timeout: Duration,
    last_read: Instant,
    /// Armed only when a read has to wait, so quick responses never touch the timer.
    timer: Option<Pin<Box<Sleep>>>,
    blame: Blame,
}

impl UpstreamBody {
    pub fn new(
        inner: Incoming,
        conn: Sender,
        guard: InFlight,
        read_timeout: Duration,
        blame: Blame,
    ) -> Self {
        UpstreamBody {
            inner,
            conn: Some(conn),
            guard,
            read_timeout,
            last_read: Instant::now(),
            timer: None,
            blame,
        }
    }

    /// The body broke (`timeout`: stalled past `read_timeout`): the connection is
    /// dropped, never pooled, and the server charged once (see `Blame`).
    fn broke(&mut self, timeout: bool, why: &dyn Display) {
        self.conn = None;
        let b = &self.blame;
        if let Some(p) = &b.progress {
            let (phase, _) = p.get();
            if phase == SendPhase::Failed || (timeout && phase == SendPhase::Client) {
                return;
            }
        }
        self.guard.fail();
        let listed = if timeout { b.on.timeout } else { b.on.error };
        if listed {
            b.upstream
                .record_failure(b.server, &mut self.guard, &format!("response body: {why}"));
        }
    }

    fn release(&mut self) {
        if let Some(tx) = self.conn.take() {
            self.guard.server().release(tx);
        }
    }

    /// Polls the idle timer; `true` when `read_timeout` has passed since the last read.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.last_read + self.read_timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.release();
                } else if this.timer.is_some() {
                    this.last_read = Instant::now();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.broke(false, &e);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                if this.timer.is_none() {
                    // First wait of this body: measure from now, not from the head.
                    this.last_read = Instant::now();
                }
                if this.timed_out(cx) {
                    let e = ProxyError::ReadTimeout;
                    this.broke(true, &e);
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Bodiless responses (HEAD, 204, 304) are never polled; their connection is
        // still good for the next request.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
