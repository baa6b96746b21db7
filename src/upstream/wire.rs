//! What an HTTP/1.1 upstream connection has received in its current exchange, seen
//! from its I/O, below hyper:
//!
//! - whether any response byte arrived since the request was sent. A request on a
//!   reused connection that failed may go again on a fresh one only if none did
//!   (RFC 9112 §9.3.1: the connection was closed before the origin answered, so it
//!   most likely never read the request); any byte, even an invalid status line or
//!   half a head, proves the origin read it, and it is not sent twice. hyper
//!   reports a close after half a head as the same "incomplete message" as a close
//!   before any byte, hence this record of its own.
//! - the size of the response head with the 1xx interim responses before it.
//!   hyper skips interim responses, each checked against `max_header_size` on its
//!   own, so an origin could send them without end; here they count towards
//!   `max_response_header_size` together with the final head, and only
//!   `MAX_INTERIM_RESPONSES` are taken. Past either limit the read fails, which
//!   hyper reports as an I/O error: the server's failure, answered 502.
//!
//! The scan stops at the end of the final head: body bytes are not looked at.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most 1xx interim responses taken before the final response. Servers send
/// `100 Continue` once, `103 Early Hints` a time or two and `102 Processing` now
/// and then during a long request; hundreds are a broken or hostile origin making
/// the proxy parse heads without end, which `read_timeout` alone would let go on
/// for a minute.
pub(crate) const MAX_INTERIM_RESPONSES: u32 = 32;

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

/// A connection's stream as hyper reads it, recording on the `Wire` what arrives
/// and scanning the response heads. Per read, one atomic load (and a store on the
/// first read of an exchange); head bytes are looked at once each.
#[derive(Debug)]
pub(super) struct Metered<S> {
    inner: S,
    wire: Arc<Wire>,
    /// `max_response_header_size`.
    limit: usize,
    /// The exchange the reads below belong to.
    exchange: u32,
    /// Whether `received` was set for it.
    noted: bool,
    scan: HeadScan,
}

impl<S> Metered<S> {
    pub(super) fn new(inner: S, wire: Arc<Wire>, limit: usize) -> Self {
        Metered {
            inner,
            wire,
            limit,
            exchange: 0,
            noted: false,
            scan: HeadScan::default(),
        }
    }

    /// `data` arrived.
    fn arrived(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let exchange = self.wire.exchange.load(Ordering::Acquire);
        if exchange != self.exchange {
            self.exchange = exchange;
            self.noted = false;
            self.scan = HeadScan::default();
        }
        if !self.noted {
            self.noted = true;
            self.wire.received.store(true, Ordering::Relaxed);
        }
        self.scan
            .feed(data, self.limit)
            .map_err(|what| io::Error::new(io::ErrorKind::InvalidData, what))
    }
}

/// Where the response heads of one exchange stand: the interim (1xx) ones and the
/// final one, as a parser delimits them (httparse's rules: blank lines before a
/// status line are skipped, a line ends with LF or CRLF, an empty line ends the
/// head).
#[derive(Debug, Default)]
struct HeadScan {
    /// Bytes of heads so far, blank lines before a status line included.
    bytes: usize,
    interim: u32,
    /// Bytes into the current head from its status line's first byte; 0 before it.
    pos: usize,
    /// Its status code, from the three digits after `HTTP/1.1 ` (garbage makes a
    /// code that is no 1xx; hyper rejects such a head anyway).
    code: u32,
    /// End-of-line state: 0 inside a line, 1 just after LF, 2 after LF then CR.
    eol: u8,
    /// The final head has ended: what follows is body.
    done: bool,
}

impl HeadScan {
    /// Scans `data`, which follows what came before; `Err` says which limit the
    /// heads went over.
    fn feed(&mut self, data: &[u8], limit: usize) -> Result<(), &'static str> {
        if self.done {
            return Ok(());
        }
        for &b in data {
            self.bytes += 1;
            if self.pos == 0 && (b == b'\r' || b == b'\n') {
                continue;
            }
            if (9..12).contains(&self.pos) {
                let digit = u32::from(b.wrapping_sub(b'0'));
                self.code = self.code.saturating_mul(10).saturating_add(digit);
            }
            self.pos += 1;
            // The status code is known: a final head (no 1xx, or 101, which
            // switches protocols) with no interim one before it needs no more
            // scanning, as hyper's own `max_header_size` bounds it alone. So a plain
            // response costs a dozen bytes here, not its whole head; heads after
            // interim ones are walked to their end, to count them together.
            if self.pos == 12 && self.interim == 0 && is_final(self.code) {
                self.done = true;
                break;
            }
            let ended = b == b'\n' && self.eol != 0;
            self.eol = match b {
                b'\n' => 1,
                b'\r' if self.eol == 1 => 2,
                _ => 0,
            };
            if !ended {
                continue;
            }
            if is_final(self.code) {
                self.done = true;
                break;
            }
            self.interim += 1;
            if self.interim > MAX_INTERIM_RESPONSES {
                return Err("more interim (1xx) responses than the proxy takes");
            }
            self.pos = 0;
            self.code = 0;
            self.eol = 0;
        }
        if self.bytes > limit {
            return Err("response head over max_response_header_size");
        }
        Ok(())
    }
}

/// Whether a head with status `code` is the final one: no 1xx, or 101, which
/// switches protocols.
fn is_final(code: u32) -> bool {
    !(100..200).contains(&code) || code == 101
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
            if let Err(e) = this.arrived(&buf.filled()[before..]) {
                return Poll::Ready(Err(e));
            }
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
        let mut m = Metered::new(a, Arc::clone(&wire), 1024);
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

    /// Feeds `parts` one after another to a fresh scan.
    fn scan(parts: &[&[u8]], limit: usize) -> (HeadScan, Result<(), &'static str>) {
        let mut s = HeadScan::default();
        for p in parts {
            if let Err(e) = s.feed(p, limit) {
                return (s, Err(e));
            }
        }
        (s, Ok(()))
    }

    #[test]
    fn the_scan_ends_with_the_final_head_however_it_is_split() {
        let response: &[u8] =
            b"\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\nlink: </a>\n\n\
              HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody";
        // Interim heads came first: the final one is counted with them, to its end.
        let head = response.len() - 4;
        for split in 0..response.len() {
            let (s, r) = scan(&[&response[..split], &response[split..]], 1024);
            assert_eq!(r, Ok(()), "split at {split}");
            assert!(s.done, "split at {split}");
            assert_eq!(s.interim, 2, "split at {split}");
            // The body is not counted as head (it may have been read with it).
            assert_eq!(s.bytes, head, "split at {split}");
        }
    }

    #[test]
    fn a_switch_is_a_final_head() {
        let (s, r) = scan(
            &[b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\nraw"],
            1024,
        );
        assert_eq!(r, Ok(()));
        assert!(s.done && s.interim == 0);
    }

    #[test]
    fn heads_over_the_limit_fail_interim_ones_included() {
        let hint: &[u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n";
        let final_head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        // Each head alone fits in 100 bytes; two hints and the final one do not.
        assert!(scan(&[hint, final_head], 100).1.is_ok());
        assert!(scan(&[hint, hint, final_head], 100).1.is_err());
        // One head without an end, past the limit, after an interim one.
        let endless = [b'x'; 200];
        assert!(scan(&[hint, b"HTTP/1.1 200 OK\r\nx-a: ", &endless], 100)
            .1
            .is_err());
        // A lone final head is left to hyper's `max_header_size` once its status
        // code is read: the scan stops there.
        let (s, r) = scan(&[b"HTTP/1.1 200 OK\r\nx-a: ", &endless], 100);
        assert!(r.is_ok() && s.done && s.bytes == 12);
        // A storm of small interim responses fails by number.
        let storm: Vec<&[u8]> =
            std::iter::repeat_n(&b"HTTP/1.1 100 Continue\r\n\r\n"[..], 40).collect();
        let (s, r) = scan(&storm, 1 << 20);
        assert!(r.is_err());
        assert_eq!(s.interim, MAX_INTERIM_RESPONSES + 1);
        let few: Vec<&[u8]> = std::iter::repeat_n(&b"HTTP/1.1 100 Continue\r\n\r\n"[..], 32)
            .chain([final_head])
            .collect();
        assert_eq!(scan(&few, 1 << 20).1, Ok(()));
    }
}
