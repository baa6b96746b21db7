//! The client's request body on its way upstream: passed on frame by frame as it
//! comes (backpressure flows through), with a record of who the transfer is
//! waiting on, which the request path turns into `send_timeout` or the client body
//! timeout, and of whether the client's stream failed (malformed framing, the
//! client gone), which makes a failed exchange the client's fault, not the
//! server's.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::BoxError;

/// What the client's body may do: pause for `timeout` between two reads (the
/// listener's `client_body_timeout`), and carry `max_size` bytes at most
/// (`max_body_size`; `None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub timeout: Duration,
    pub max_size: Option<u64>,
}

/// The error a body past `max_body_size` ends with (hyper aborts the upstream
/// request on it; `SendProgress::over_limit` tells the request path why).
#[derive(Debug)]
pub struct OverLimit(pub u64);

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body is larger than {} bytes", self.0)
    }
}

impl std::error::Error for OverLimit {}

/// Who the request body is waiting on, and since when. Shared between the body (which
/// hyper polls as the upstream accepts data) and the task awaiting the response head,
/// which turns a stall into `send_timeout` or the client body timeout.
#[derive(Debug)]
pub struct SendProgress {
    start: Instant,
    /// Nanoseconds since `start` of the last change, shifted left by 2; the low bits
    /// hold the phase (`SendPhase` as 0 to 3).
    word: AtomicU64,
    /// Signalled when the body is done, which can bring the deadline forward
    /// (`read_timeout` may be shorter than the send-side timeouts).
    done: tokio::sync::Notify,
    /// Body bytes passed on so far (the access log's `bytes_in`).
    bytes: AtomicU64,
    /// How long the client may pause between two reads of its body (the
    /// listener's `client_body_timeout`), and how large it may grow.
    limits: BodyLimits,
    /// The body failed by growing past `limits.max_size`.
    over: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPhase {
    /// A chunk was handed to hyper; waiting for the upstream to take it.
    Upstream,
    /// Waiting for the client to send more of the body.
    Client,
    /// The whole body has been sent.
    Done,
    /// The client's body stream failed: malformed (bad chunked framing, a chunk
    /// extension over hyper's limit), cut short (the client closed its connection
    /// or reset its stream) or otherwise unreadable. Final: nothing is polled
    /// after an error.
    Failed,
}

impl SendProgress {
    /// The progress of a body under `limits`.
    pub fn new(limits: BodyLimits) -> Self {
        SendProgress {
            start: Instant::now(),
            word: AtomicU64::new(0),
            done: tokio::sync::Notify::new(),
            bytes: AtomicU64::new(0),
            limits,
            over: AtomicBool::new(false),
        }
    }

    /// How long the client may pause between two reads of its body.
    pub fn client_timeout(&self) -> Duration {
        self.limits.timeout
    }

    /// `Some(max_body_size)` when the body failed by growing past it: the
    /// client's fault, answered 413.
    pub fn over_limit(&self) -> Option<u64> {
        self.limits
            .max_size
            .filter(|_| self.over.load(Ordering::SeqCst))
    }

    /// Whether `n` more bytes would take the body past its limit; if so, the body
    /// has failed (marked before the error reaches hyper, as `client_failed` needs).
    fn refuse(&self, n: usize) -> Option<OverLimit> {
        let max = self.limits.max_size?;
        if self.bytes().saturating_add(n as u64) <= max {
            return None;
        }
        self.over.store(true, Ordering::SeqCst);
        self.mark(SendPhase::Failed);
        Some(OverLimit(max))
    }

    fn mark(&self, phase: SendPhase) {
        let nanos = self.start.elapsed().as_nanos() as u64;
        let tag = match phase {
            SendPhase::Upstream => 0,
            SendPhase::Client => 1,
            SendPhase::Done => 2,
            SendPhase::Failed => 3,
        };
        let old = self.word.swap((nanos << 2) | tag, Ordering::Relaxed);
        if tag == 2 && old & 3 != 2 {
            self.done.notify_one();
        }
    }

    /// Resolves once the whole body has been sent (a permit is kept if nobody
    /// waits yet).
    pub async fn done(&self) {
        self.done.notified().await
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn count(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The current phase and when it began.
    pub fn get(&self) -> (SendPhase, Instant) {
        let w = self.word.load(Ordering::Relaxed);
        let phase = match w & 3 {
            0 => SendPhase::Upstream,
            1 => SendPhase::Client,
            2 => SendPhase::Done,
            _ => SendPhase::Failed,
        };
        (phase, self.start + Duration::from_nanos(w >> 2))
    }

    /// Whether the client's body stream failed. It is marked before the error is
    /// handed to hyper, and hyper fails the exchange (the response future, or the
    /// response body when the head had come) only after it got that error, so a
    /// failure seen after this is `true` followed from the client's.
    pub fn client_failed(&self) -> bool {
        self.get().0 == SendPhase::Failed
    }
}

/// The client's request body on its way upstream.
#[derive(Debug)]
pub struct ClientBody {
    /// What was read ahead while trying to hold the body for retries.
    prefix: Option<Bytes>,
    inner: Incoming,
    progress: Arc<SendProgress>,
}

impl ClientBody {
    pub fn new(inner: Incoming, progress: Arc<SendProgress>) -> Self {
        ClientBody {
            prefix: None,
            inner,
            progress,
        }
    }

    /// The body with `prefix` (already read from `inner`) sent first.
    pub fn with_prefix(prefix: Bytes, inner: Incoming, progress: Arc<SendProgress>) -> Self {
        ClientBody {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            inner,
            progress,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(p) = self.prefix.take() {
            self.progress.mark(SendPhase::Upstream);
            self.progress.count(p.len());
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &polled {
            if let Some(d) = f.data_ref() {
                // The chunk that would cross `max_body_size` is not passed on:
                // the origin never gets more than the limit, nor a complete body.
                if let Some(e) = self.progress.refuse(d.len()) {
                    return Poll::Ready(Some(Err(e.into())));
                }
                self.progress.count(d.len());
            }
        }
        let phase = match &polled {
            Poll::Pending => SendPhase::Client,
            Poll::Ready(Some(Ok(_))) if !self.inner.is_end_stream() => SendPhase::Upstream,
            Poll::Ready(Some(Err(_))) => SendPhase::Failed,
            Poll::Ready(_) => SendPhase::Done,
        };
        self.progress.mark(phase);
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut h = self.inner.size_hint();
        if let Some(p) = &self.prefix {
            let n = p.len() as u64;
            let lower = h.lower() + n;
            if let Some(u) = h.upper() {
                h.set_upper(u + n);
            }
            h.set_lower(lower);
        }
        h
    }
}
