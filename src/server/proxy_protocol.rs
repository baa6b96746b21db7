//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in front
//! opens each connection with a header naming the client it carries. On a
//! `proxy_protocol` listener the header is read first, before TLS and HTTP, and its
//! source address becomes the client's.
//!
//! The header is read exactly, never a byte past it, so what follows (a TLS
//! ClientHello, an HTTP request) is left in the socket for whoever reads next and
//! no buffered surplus has to be handed on: each round peeks at what has arrived,
//! finds where the header ends (`frame`: the CRLF of a v1 line, the length field of
//! v2), and consumes only header bytes. Each round consumes at least one byte, so a
//! client that sends its header slowly costs a wake-up per segment, never a spin.
//!
//! Parsing and checking the complete header is left to the `ppp` crate (both
//! versions, v2's commands, families and TLVs, which are skipped). Framing is done
//! here because `ppp` judges some incomplete v1 lines (cut right after a space)
//! invalid, and a header may arrive in several segments.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature: the first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v2's fixed part: the signature, version and command, family, and length.
const V2_FIXED: usize = 16;
/// The v1 line starts so.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The longest v2 header taken. Addresses take at most 216 bytes; the rest are
/// TLVs, which load balancers use for a few small values (AWS's endpoint id,
/// Azure's link id, the TLS details HAProxy adds: tens to hundreds of bytes).
/// The specification allows 64 KiB; holding that much per connection before its
/// client is even known is not worth it.
pub(super) const V2_MAX: usize = 4096;
/// Bytes looked at per round: a whole v1 line or a typical v2 header at once.
const PEEK: usize = 512;

#[derive(Debug, thiserror::Error)]
pub(super) enum HeaderError {
    #[error("no PROXY protocol header: {0}")]
    Invalid(String),
    #[error("the connection closed before the end of its PROXY protocol header")]
    Closed,
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// How far `buf`, the start of a connection, is from a whole header.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// The header is the first `n` bytes.
    Complete(usize),
    /// Every byte so far belongs to the header, which goes on.
    Incomplete,
    Invalid(&'static str),
}

fn frame(buf: &[u8]) -> Frame {
    let Some(&first) = buf.first() else {
        return Frame::Incomplete;
    };
    if first == V2_SIGNATURE[0] {
        let seen = buf.len().min(V2_SIGNATURE.len());
        if buf[..seen] != V2_SIGNATURE[..seen] {
            return Frame::Invalid("not a v2 signature");
        }
        if buf.len() < V2_FIXED {
            return Frame::Incomplete;
        }
        let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        return match len {
            l if l > V2_MAX => Frame::Invalid("v2 header longer than 4 KiB"),
            l if buf.len() >= l => Frame::Complete(l),
            _ => Frame::Incomplete,
        };
    }
    let seen = buf.len().min(V1_PREFIX.len());
    if buf[..seen] != V1_PREFIX[..seen] {
        return Frame::Invalid("neither \"PROXY \" nor the v2 signature");
    }
    // The line ends at its first CR, which must be followed by LF.
    match buf.iter().take(V1_MAX).position(|&b| b == b'\r') {
        Some(cr) => match buf.get(cr + 1) {
            Some(b'\n') => Frame::Complete(cr + 2),
            Some(_) => Frame::Invalid("v1 line with a CR not followed by LF"),
            None if cr + 1 >= V1_MAX => Frame::Invalid("v1 line longer than 107 bytes"),
            None => Frame::Incomplete,
        },
        None if buf.len() >= V1_MAX => Frame::Invalid("v1 line longer than 107 bytes"),
        None => Frame::Incomplete,
    }
}

/// The client a complete header names; `None` when it names none (v2 `LOCAL`, a
/// load balancer's own health check; v1 `UNKNOWN`; v2 `UNSPEC` or a Unix socket):
/// the connection's peer is then the client, as the specification says.
fn parse(header: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    let invalid = |e: &dyn std::fmt::Display| HeaderError::Invalid(e.to_string());
    if header.first() == Some(&V2_SIGNATURE[0]) {
        use ppp::v2::{Addresses, Command, Header};
        let h = Header::try_from(header).map_err(|e| invalid(&e))?;
        if h.command == Command::Local {
            return Ok(None);
        }
        return Ok(match h.addresses {
            Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            Addresses::Unspecified | Addresses::Unix(_) => None,
        });
    }
    use ppp::v1::{Addresses, Header};
    let h = Header::try_from(header).map_err(|e| invalid(&e))?;
    Ok(match h.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unknown => None,
    })
}

/// Reads the header at the start of `stream` within `timeout`, consuming it and
/// nothing more; the client it names, if any.
pub(super) async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, HeaderError> {
    tokio::time::timeout(timeout, read(stream))
        .await
        .map_err(|_| HeaderError::Timeout(timeout))?
}

async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    // The header's bytes consumed so far, then those peeked at this round.
    let mut header: Vec<u8> = Vec::with_capacity(PEEK);
    let mut peeked = [0u8; PEEK];
    loop {
        let room = (V2_MAX - header.len()).min(PEEK);
        let n = stream.peek(&mut peeked[..room]).await?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        let consumed = header.len();
        header.extend_from_slice(&peeked[..n]);
        // What was peeked is there: each read returns at once.
        match frame(&header) {
            Frame::Complete(len) => {
                stream.read_exact(&mut peeked[..len - consumed]).await?;
                return parse(&header[..len]);
            }
            // `frame` bounds both versions below `V2_MAX`, so there is room left.
            Frame::Incomplete => {
                stream.read_exact(&mut peeked[..n]).await?;
            }
            Frame::Invalid(why) => return Err(HeaderError::Invalid(why.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn v2_tcp4(src: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = src.to_vec();
        a.extend_from_slice(&[192, 0, 2, 1]);
        a.extend_from_slice(&port.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        v2(1, 0x11, &a, &[])
    }

    #[test]
    fn frames_v1_lines() {
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 4711 80\r\nGET /";
        assert_eq!(frame(line), Frame::Complete(42));
        for cut in 0..42 {
            assert_eq!(frame(&line[..cut]), Frame::Incomplete, "{cut}");
        }
        assert!(matches!(frame(b"GET / HTTP/1.1\r\n"), Frame::Invalid(_)));
        assert!(matches!(frame(b"PROXY TCP4 1.2.3.4\rX"), Frame::Invalid(_)));
        let long = [b"PROXY ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(frame(&long), Frame::Invalid(_)));
    }

    #[test]
    fn frames_v2_headers_by_their_length() {
        let h = v2_tcp4([203, 0, 113, 7], 4711);
        assert_eq!(h.len(), 28);
        let mut with_more = h.clone();
        with_more.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(frame(&with_more), Frame::Complete(28));
        for cut in 0..28 {
            assert_eq!(frame(&h[..cut]), Frame::Incomplete, "{cut}");
        }
        let mut bad = h.clone();
        bad[5] = b'x';
        assert!(matches!(frame(&bad), Frame::Invalid(_)));
        let mut huge = h;
        huge[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert!(matches!(frame(&huge), Frame::Invalid(_)));
    }

    #[test]
    fn parses_the_source_address() {
        let p = |h: &[u8]| parse(h).unwrap().map(|a| a.to_string());
        assert_eq!(
            p(b"PROXY TCP4 203.0.113.7 192.0.2.1 4711 80\r\n").unwrap(),
            "203.0.113.7:4711"
        );
        assert_eq!(
            p(b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 80\r\n").unwrap(),
            "[2001:db8::7]:4711"
        );
        assert_eq!(p(b"PROXY UNKNOWN\r\n"), None);
        assert_eq!(
            p(&v2_tcp4([203, 0, 113, 7], 4711)).unwrap(),
            "203.0.113.7:4711"
        );
        let mut a6 = vec![0x20, 0x01, 0x0d, 0xb8];
        a6.extend_from_slice(&[0; 11]);
        a6.push(7);
        a6.extend_from_slice(&[0; 16]);
        a6.extend_from_slice(&[0x12, 0x67, 0x01, 0xbb]);
        assert_eq!(p(&v2(1, 0x21, &a6, &[])).unwrap(), "[2001:db8::7]:4711");
        // TLVs are skipped.
        let tlvs = [0x04, 0x00, 0x03, b'a', b'b', b'c', 0xea, 0x00, 0x01, 0x01];
        let mut a4 = vec![203, 0, 113, 7, 192, 0, 2, 1, 0x12, 0x67, 0x01, 0xbb];
        assert_eq!(p(&v2(1, 0x11, &a4, &tlvs)).unwrap(), "203.0.113.7:4711");
        // LOCAL: the balancer's own connection; its addresses are ignored.
        assert_eq!(p(&v2(0, 0x11, &a4, &[])), None);
        assert_eq!(p(&v2(0, 0x00, &[], &[])), None);
        // Invalid: version 1 in a v2 header, an unknown command, too short an
        // address block, a v1 port with a leading zero.
        let mut wrong_version = v2(1, 0x11, &a4, &[]);
        wrong_version[12] = 0x11;
        a4.truncate(8);
        for bad in [
            wrong_version,
            v2(3, 0x11, &a4, &[]),
            v2(1, 0x11, &a4, &[]),
            b"PROXY TCP4 203.0.113.7 192.0.2.1 04711 80\r\n".to_vec(),
            b"PROXY TCP4 2001:db8::7 192.0.2.1 4711 80\r\n".to_vec(),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }

    /// A socket pair on loopback: the client's end and the server's.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn reads_exactly_the_header_when_it_comes_in_pieces() {
        let (mut c, mut s) = pair().await;
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 4711 80\r\nGET / HTTP/1.1\r\n";
        let reader = tokio::spawn(async move {
            let a = read_header(&mut s, Duration::from_secs(10)).await;
            let mut rest = [0u8; 16];
            s.read_exact(&mut rest).await.unwrap();
            (a.unwrap(), rest)
        });
        // Cut right after a space, where a parser of partial input might judge it.
        for piece in [&line[..5], &line[5..34], &line[34..41], &line[41..]] {
            c.write_all(piece).await.unwrap();
            c.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (addr, rest) = reader.await.unwrap();
        assert_eq!(addr.unwrap().to_string(), "203.0.113.7:4711");
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn reads_a_v2_header_and_leaves_what_follows() {
        let (mut c, mut s) = pair().await;
        let mut bytes = v2_tcp4([198, 51, 100, 9], 1234);
        bytes.extend_from_slice(b"\x16\x03\x01 hello");
        c.write_all(&bytes).await.unwrap();
        let a = read_header(&mut s, Duration::from_secs(10)).await.unwrap();
        assert_eq!(a.unwrap().to_string(), "198.51.100.9:1234");
        let mut rest = [0u8; 9];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"\x16\x03\x01 hello");
    }

    #[tokio::test]
    async fn garbage_a_close_and_silence_fail() {
        let (mut c, mut s) = pair().await;
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let e = read_header(&mut s, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(e, HeaderError::Invalid(_)), "{e}");

        let (mut c, mut s) = pair().await;
        c.write_all(b"PROXY TCP4 1.2").await.unwrap();
        drop(c);
        let e = read_header(&mut s, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(e, HeaderError::Closed), "{e}");

        let (_c, mut s) = pair().await;
        let e = read_header(&mut s, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(e, HeaderError::Timeout(_)), "{e}");
    }
}
