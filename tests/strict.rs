//! Strict request parsing, from an attacker's probe run against Switchyard, nginx and
//! HAProxy: ambiguous framing (`Transfer-Encoding`, `Content-Length`) and over-long
//! methods. Raw TCP where the exact bytes matter; a recording origin says what got
//! through.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::control::Origin;
use common::{raw_exchange, read_response, RawResp, EXCHANGE_LIMIT};
use switchyard::pipeline::filter::method::MAX_METHOD_LEN;
use switchyard::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy with a `/public/` route and a catch-all to a recording origin, and an
/// `/admin/` route that answers 403 itself (the access rule a path trick would
/// have to get around).
struct Site {
    _running: Running,
    addr: SocketAddr,
    origin: Origin,
}

async fn site() -> Site {
    let origin = Origin::start("app").await;
    let toml = format!(
        "{}[[route]]\npath = \"/public/\"\nupstream = \"app\"\n\n\
         [[route]]\npath = \"/admin/\"\nrespond = {{ status = 403 }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n\n{}",
        common::listeners(&["public"]),
        common::upstream("app", &[(origin.addr(), 1)]),
    );
    let running = common::start_proxy(&toml).await;
    let addr = running.addr("public").expect("listener public");
    Site {
        _running: running,
        addr,
        origin,
    }
}

/// How long a test waits for the proxy to close a connection it must close.
const CLOSE_LIMIT: Duration = Duration::from_secs(3);

/// Writes `request`, reads one response, then waits for the proxy to close the
/// connection: the response and whether it did (end of stream within
/// `CLOSE_LIMIT`, with nothing more sent).
async fn exchange_then_close(addr: SocketAddr, request: &[u8]) -> (RawResp, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write request");
    let res = tokio::time::timeout(EXCHANGE_LIMIT, read_response(&mut s))
        .await
        .expect("response in time");
    let mut rest = [0u8; 256];
    let closed = matches!(
        tokio::time::timeout(CLOSE_LIMIT, s.read(&mut rest)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    (res, closed)
}

/// The value of header `name` in a raw response head.
fn header<'a>(res: &'a RawResp, name: &str) -> Option<&'a str> {
    res.head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

// ----- 1. framing -----

/// A chunked body of three bytes.
const CHUNKED_BODY: &str = "3\r\nabc\r\n0\r\n\r\n";

/// Transfer-Encoding values other than a single final `chunked` that hyper's parser
/// lets through (it checks only that the last coding is `chunked`), and one it
/// refuses itself: each is refused, and the connection closed, before routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_other_than_one_chunked_is_refused_and_closes() {
    let site = site().await;
    let cases: &[(&str, &str, u16)] = &[
        // An unknown coding before `chunked`: 501 (nginx 501, HAProxy 422).
        (
            "identity then chunked",
            "Transfer-Encoding: identity, chunked\r\n",
            501,
        ),
        (
            "gzip then chunked",
            "Transfer-Encoding: gzip, chunked\r\n",
            501,
        ),
        // Two field lines: 400 (nginx and HAProxy 400).
        (
            "two lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        (
            "chunked twice",
            "Transfer-Encoding: chunked, chunked\r\n",
            400,
        ),
        ("empty member", "Transfer-Encoding: , chunked\r\n", 400),
        // Refused by hyper already (the last coding is not chunked).
        ("gzip alone", "Transfer-Encoding: gzip\r\n", 400),
    ];
    for (what, te, status) in cases {
        let req = format!("POST /public/x HTTP/1.1\r\nHost: h\r\n{te}\r\n{CHUNKED_BODY}");
        let (res, closed) = exchange_then_close(site.addr, req.as_bytes()).await;
        assert_eq!(res.status, *status, "{what}: {}", res.head);
        assert!(
            closed,
            "{what}: the connection stays open after the refusal"
        );
    }
    assert!(
        site.origin.hits().is_empty(),
        "refused requests reached the origin: {:?}",
        site.origin.hits()
    );
}

/// The one accepted form, in any case, still goes through with its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_chunked_coding_goes_through() {
    let site = site().await;
    for te in ["chunked", "CHUNKED", " chunked "] {
        let req = format!(
            "POST /public/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:{te}\r\n\r\n{CHUNKED_BODY}"
        );
        let res = raw_exchange(site.addr, req.as_bytes()).await;
        assert_eq!(res.status, 200, "{te:?}: {}", res.head);
        assert_eq!(String::from_utf8_lossy(&res.body), "app received 3 bytes\n");
    }
}

/// Content-Length and Transfer-Encoding together. hyper's parser drops the
/// Content-Length before the proxy sees the request (the request reaches the
/// service as a plain chunked one), so a 400 cannot be given; what matters is
/// kept: the body is read as chunked (RFC 9112 §6.3), and the connection closes
/// after the answer, so bytes after the chunked body are never read as a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_closes_the_connection() {
    let site = site().await;
    let smuggled = "GET /public/smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    for order in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let req = format!("POST /public/x HTTP/1.1\r\nHost: h\r\n{order}\r\n0\r\n\r\n{smuggled}");
        let (res, closed) = exchange_then_close(site.addr, req.as_bytes()).await;
        assert_eq!(res.status, 200, "{order:?}: {}", res.head);
        assert_eq!(header(&res, "connection"), Some("close"), "{}", res.head);
        assert!(closed, "{order:?}: the connection stays open");
    }
    let paths: Vec<String> = site.origin.hits().into_iter().map(|h| h.path).collect();
    assert_eq!(paths, ["/public/x", "/public/x"], "something was smuggled");
}

// ----- 2. methods -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_method_is_refused() {
    let site = site().await;
    for len in [MAX_METHOD_LEN + 1, 8192] {
        let req = format!("{} /public/x HTTP/1.1\r\nHost: h\r\n\r\n", "A".repeat(len));
        let res = raw_exchange(site.addr, req.as_bytes()).await;
        assert_eq!(res.status, 501, "method of {len} bytes: {}", res.head);
    }
    assert!(site.origin.hits().is_empty(), "{:?}", site.origin.hits());
    // The longest allowed one is forwarded, as any extension method is.
    let method = "A".repeat(MAX_METHOD_LEN);
    let req = format!("{method} /public/x HTTP/1.1\r\nHost: h\r\n\r\n");
    let res = raw_exchange(site.addr, req.as_bytes()).await;
    assert_eq!(res.status, 200, "{}", res.head);
    assert_eq!(site.origin.hits()[0].method.as_str(), method);
}
