//! What an HTTP/1.1 upstream connection has received in its current exchange, seen
//! from its I/O, below hyper: whether any response byte arrived since the request
//! was sent. A request on a reused connection that failed may go again on a fresh
//! one only if none did (RFC 9112 §9.3.1: the connection was closed before the
//! origin answered, so it most likely never read the request); any byte, even an
//! invalid status line or half a head, proves the origin read it, and it is not
//! sent twice. hyper reports a close after half a head as the same "incomplete
//! message" as a close before any byte, hence this count of its own.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between a connection's I/O (in its hyper task) and the request using it.
#[derive(Debug, Default)]
pub struct Wire {
    /// Bumped as each request starts; the I/O side starts afresh when it sees a
    /// new value.
    exchange: AtomicU32,
    /// A response byte arrived since the current request started.
    received: AtomicBool,
}

impl Wire {
    /// A request is about to be sent on the connection. The previous response has
    /// been read to its end (a connection is reused only then), so every byte
    /// read from here on answers this request.
    pub fn start(&self) {
        self.received.store(false, Ordering::Relaxed);
        // Release: the I/O side, which learns of the request through hyper's
        // channel, sees the reset before it reads the answer.
        self.exchange.fetch_add(1, Ordering::Release);
    }

    /// Whether any byte of an answer arrived since `start`.
    pub fn received(&self) -> bool {
        self.received.load(Ordering::Relaxed)
    }
}

/// A connection's stream as hyper reads it, recording on the `Wire` what arrives.
/// Per read, one atomic load (and a store on the first read of an exchange).
#[derive(Debug)]
pub(super) struct Metered<S> {
    inner: S,
    wire: Arc<Wire>,
    /// The exchange the reads below belong to.
    exchange: u32,
    /// Whether `received` was set for it.
    noted: bool,
}

impl<S> Metered<S> {
    pub(super) fn new(inner: S, wire: Arc<Wire>) -> Self {
        Metered {
            inner,
            wire,
            exchange: 0,
            noted: false,
        }
    }

    /// `n` bytes arrived.
    fn arrived(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let exchange = self.wire.exchange.load(Ordering::Acquire);
        if exchange != self.exchange {
            self.exchange = exchange;
            self.noted = false;
        }
        if !self.noted {
            self.noted = true;
            self.wire.received.store(true, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.arrived(buf.filled().len() - before);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn received_counts_from_the_start_of_each_exchange() {
        let (a, mut b) = tokio::io::duplex(64);
        let wire = Arc::new(Wire::default());
        let mut m = Metered::new(a, Arc::clone(&wire));
        let mut buf = [0u8; 16];

        wire.start();
        assert!(!wire.received());
        b.write_all(b"HTTP/1.1 200").await.unwrap();
        let _ = m.read(&mut buf).await.unwrap();
        assert!(wire.received());

        // The next request: nothing arrived for it yet.
        wire.start();
        assert!(!wire.received());
        // An end of stream is not an answer.
        drop(b);
        assert_eq!(m.read(&mut buf).await.unwrap(), 0);
        assert!(!wire.received());
    }
}
