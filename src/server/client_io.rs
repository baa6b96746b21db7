//! A client connection's socket (plain or TLS) with the HTTP/1.1 timers nginx
//! has and hyper lacks. hyper's `header_read_timeout` starts when the connection
//! goes idle, so one timer covers both the wait for the next request and the
//! reading of its head. nginx separates them, and so does this wrapper, by
//! watching the bytes that arrive while no request is open:
//!
//! - no byte yet since the last response ended: the connection is idle, and is
//!   closed after `keepalive_timeout` (quietly: an end of stream to hyper, which
//!   closes an idle connection without a word, as nginx does);
//! - a first byte came: a head is on its way, and must be complete
//!   `client_header_timeout` after that byte; if not, the client gets 408 and the
//!   connection closes (nginx closes without answering; HAProxy answers 408, which
//!   tells a slow client, or a reused connection's client, what happened);
//! - the connection's first request: `client_header_timeout` from its start (408
//!   if bytes came, quietly if none did).
//!
//! While a request is open nothing is timed here (the body and upstream timeouts
//! apply), nor after a protocol switch (a WebSocket's bytes) or on HTTP/2, whose
//! first bytes are its preface: there the connection's driver (`drain`) closes an
//! idle connection with GOAWAY. What is open and since when is the `Session`,
//! which the service keeps.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::pipeline::Session;

/// What an HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The answer to a head that did not come in time: the proxy's usual short text,
/// written straight to the socket (hyper has no request to answer).
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
    content-type: text/plain; charset=utf-8\r\n\
    content-length: 20\r\n\
    connection: close\r\n\r\n\
    408 Request Timeout\n";

/// What the timer that runs out means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// For the next request on a kept-alive connection.
    Idle,
    /// For the first request, no byte of it yet.
    First,
    /// For the rest of a head.
    Head,
}

/// Is the client speaking HTTP/2 (its preface) or HTTP/1.x?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// This many bytes of the preface matched so far.
    Sniffing(usize),
    Http1,
    Http2,
}

/// The socket of one client connection, with its HTTP/1.1 timers.
#[derive(Debug)]
pub(super) struct ClientIo<I> {
    inner: I,
    session: Arc<Session>,
    protocol: Protocol,
    /// The first byte of a head came at this time, while the session had carried
    /// this many requests (a head of an older idle period is over).
    head: Option<(u32, Instant)>,
    /// Made the first time a read has to wait with a deadline.
    timer: Option<Pin<Box<Sleep>>>,
    /// `Some`: the connection may be parked (`server::park`) once it has been
    /// idle this long, which this reader tells the session.
    park_after: Option<Duration>,
    /// The last write or flush had to wait: bytes of a response may still sit in
    /// hyper's buffer, so the connection is not idle yet.
    writing: bool,
}

impl<I> ClientIo<I> {
    /// `h2`: the connection is HTTP/2 already (TLS with ALPN `h2`).
    pub(super) fn new(inner: I, session: Arc<Session>, h2: bool) -> Self {
        if h2 {
            session.mark_h2();
        }
        ClientIo {
            inner,
            session,
            protocol: if h2 {
                Protocol::Http2
            } else {
                Protocol::Sniffing(0)
            },
            head: None,
            timer: None,
            park_after: None,
            writing: false,
        }
    }

    /// Lets the connection be parked after `after` of idleness: a read that
    /// waits that long with no request open, no head begun and nothing left to
    /// write asks the session to park it (see `server::park`).
    pub(super) fn parking(mut self, after: Duration) -> Self {
        self.park_after = Some(after);
        self
    }

    /// The socket back, for a parked connection.
    pub(super) fn into_inner(self) -> I {
        self.inner
    }

    /// When an idle wait should end in parking rather than in `deadline`.
    fn park_at(&self, wait: Wait, deadline: Instant) -> Option<Instant> {
        let after = self.park_after?;
        if wait == Wait::Head || self.writing {
            return None;
        }
        let at = self.session.idle_since() + after;
        (at < deadline).then_some(at)
    }

    /// Bytes came from the client.
    fn saw(&mut self, bytes: &[u8]) {
        if let Protocol::Sniffing(n) = self.protocol {
            let want = &H2_PREFACE[n..];
            let k = want.len().min(bytes.len());
            self.protocol = if bytes[..k] != want[..k] {
                Protocol::Http1
            } else if n + k == H2_PREFACE.len() {
                self.session.mark_h2();
                Protocol::Http2
            } else {
                Protocol::Sniffing(n + k)
            };
        }
        let n = self.session.requests();
        if self.session.open() == 0 && self.head.is_none_or(|(at, _)| at != n) {
            self.head = Some((n, Instant::now()));
        }
    }

    /// The deadline a read that waits is under now, if any.
    fn deadline(&self) -> Option<(Instant, Wait)> {
        let s = &self.session;
        if self.protocol == Protocol::Http2 || s.upgraded() || s.open() > 0 {
            return None;
        }
        let n = s.requests();
        match self.head {
            Some((at, since)) if at == n && n > 0 => {
                Some((since + s.settings().client_header_timeout, Wait::Head))
            }
            // The first request's head is timed from the connection's start.
            Some(_) if n == 0 => Some((s.idle_end(), Wait::Head)),
            None if n == 0 => Some((s.idle_end(), Wait::First)),
            _ => Some((s.idle_end(), Wait::Idle)),
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> ClientIo<I> {
    /// The timer ran out: what the read returns.
    fn expire(&mut self, wait: Wait, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match wait {
            // End of stream: hyper closes an idle connection quietly.
            Wait::Idle => Poll::Ready(Ok(())),
            Wait::First => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            Wait::Head => {
                // Best effort: the socket's buffer is empty between requests, so
                // the short answer goes out in one write, or not at all.
                let inner = Pin::new(&mut self.inner);
                if let Poll::Ready(Ok(_)) = inner.poll_write(cx, REQUEST_TIMEOUT) {
                    let _ = Pin::new(&mut self.inner).poll_flush(cx);
                }
                tracing::debug!("client_header_timeout: 408 and close");
                Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() && this.protocol != Protocol::Http2 {
                    this.saw(new);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some((deadline, wait)) = this.deadline() else {
            return Poll::Pending;
        };
        let park = this.park_at(wait, deadline);
        let at = park.unwrap_or(deadline);
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        if timer.as_mut().poll(cx).is_ready() {
            if park.is_some() {
                // The driver, which polled this read, parks the connection as
                // soon as hyper returns: no wake-up is needed.
                this.session.ask_park();
                return Poll::Pending;
            }
            return this.expire(wait, cx);
        }
        Poll::Pending
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ClientIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.writing = polled.is_pending();
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.writing = polled.is_pending();
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.writing = polled.is_pending();
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::pipeline::ConnSettings;

    const HEADER: Duration = Duration::from_secs(10);
    const KEEPALIVE: Duration = Duration::from_secs(30);

    fn session() -> Arc<Session> {
        Session::new(ConnSettings {
            client_header_timeout: HEADER,
            keepalive_timeout: KEEPALIVE,
            keepalive_requests: 100,
            max_header_size: 64 * 1024,
        })
    }

    /// A socket pair: the wrapped server side and the client's.
    fn pair(s: &Arc<Session>) -> (ClientIo<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(4096);
        (ClientIo::new(a, Arc::clone(s), false), b)
    }

    /// Reads until the wrapper ends the stream: `Ok(n)` bytes read, or its error.
    async fn read_all(io: &mut ClientIo<tokio::io::DuplexStream>) -> io::Result<usize> {
        let mut total = 0;
        let mut buf = [0u8; 256];
        loop {
            match io.read(&mut buf).await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_ends_after_the_header_timeout() {
        let s = session();
        let (mut io, _client) = pair(&s);
        let start = Instant::now();
        let e = read_all(&mut io).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_head_gets_408_after_the_header_timeout_from_its_first_byte() {
        let s = session();
        let (mut io, mut client) = pair(&s);
        // One request served and over: idle from now.
        drop(s.begin());
        tokio::time::advance(KEEPALIVE - Duration::from_secs(5)).await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let head_start = Instant::now();
        let e = read_all(&mut io).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // Not the idle limit (5 s on), the head's (10 s from its first byte).
        assert_eq!(head_start.elapsed(), HEADER);
        let mut answer = Vec::new();
        drop(io);
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 408 "), "{answer:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_ends_quietly_after_the_keepalive_timeout() {
        let s = session();
        let (mut io, mut client) = pair(&s);
        drop(s.begin());
        let idle = Instant::now();
        assert_eq!(read_all(&mut io).await.unwrap(), 0);
        assert_eq!(idle.elapsed(), KEEPALIVE);
        drop(io);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_timed_while_a_request_is_open_or_after_an_upgrade() {
        let s = session();
        let (mut io, _client) = pair(&s);
        let turn = s.begin();
        let mut buf = [0u8; 16];
        let waited = tokio::time::timeout(KEEPALIVE * 4, io.read(&mut buf)).await;
        assert!(waited.is_err(), "a read during a request timed out");
        s.mark_upgraded();
        drop(turn);
        let waited = tokio::time::timeout(KEEPALIVE * 4, io.read(&mut buf)).await;
        assert!(waited.is_err(), "a tunnel's read timed out");
    }

    #[tokio::test(start_paused = true)]
    async fn the_http2_preface_turns_the_timers_off() {
        let s = session();
        let (mut io, mut client) = pair(&s);
        client.write_all(H2_PREFACE).await.unwrap();
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < H2_PREFACE.len() {
            got += io.read(&mut buf).await.unwrap();
        }
        assert!(s.is_h2());
        let waited = tokio::time::timeout(HEADER * 4, io.read(&mut buf)).await;
        assert!(
            waited.is_err(),
            "an HTTP/2 connection was timed as HTTP/1.1"
        );
    }
}
