//! Strict request parsing, from an attacker's probe run against Switchyard, nginx and
//! HAProxy: ambiguous framing (`Transfer-Encoding`, `Content-Length`), over-long
//! methods, `CONNECT` and `OPTIONS *`, clients that half-close, and paths that are
//! routed one way and served another (dot segments, `%2e`, `//`, `%2F`). Raw TCP
//! where the exact bytes matter; a recording origin says what got through.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::control::Origin;
use common::upstream::h2_client;
use common::{raw_exchange, read_response, RawResp, EXCHANGE_LIMIT};
use http::{Method, Request, StatusCode, Version};
use http_body_util::Empty;
use switchyard::pipeline::filter::method::MAX_METHOD_LEN;
use switchyard::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `req` on the HTTP/2 connection `tx` and awaits its response head, for
/// no longer than `EXCHANGE_LIMIT`; `what` names the answer expected.
async fn h2_send(
    tx: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
    what: &str,
) -> http::Response<hyper::body::Incoming> {
    tx.ready().await.unwrap();
    tokio::time::timeout(EXCHANGE_LIMIT, tx.send_request(req))
        .await
        .expect("answer in time")
        .expect(what)
}

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

fn allow_list(allow: &str) -> Vec<&str> {
    allow.split(',').map(str::trim).collect()
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

// ----- 3. CONNECT and OPTIONS * -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_405_with_allow_and_closes() {
    let site = site().await;
    let req = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    let (res, closed) = exchange_then_close(site.addr, req.as_bytes()).await;
    assert_eq!(res.status, 405, "{}", res.head);
    let allow = allow_list(header(&res, "allow").expect("Allow"));
    assert!(
        allow.contains(&"GET") && !allow.contains(&"CONNECT"),
        "{allow:?}"
    );
    assert!(header(&res, "location").is_none(), "{}", res.head);
    assert!(
        closed,
        "bytes after a refused CONNECT are tunnel data, not requests"
    );
    assert!(site.origin.hits().is_empty());
}

/// A plain HTTP/2 CONNECT (no `:protocol`) is refused the same way, while an
/// extended CONNECT (RFC 8441) is not: tests/websocket.rs opens WebSockets with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connect_is_405_but_extended_connect_is_routed() {
    let site = site().await;
    let mut tx = h2_client::<Empty<Bytes>>(site.addr).await;
    // A plain request first, so the proxy's SETTINGS (extended CONNECT) are in.
    let warm = Request::get(format!("http://{}/public/warm", site.addr))
        .version(Version::HTTP_2)
        .body(Empty::new())
        .unwrap();
    tx.ready().await.unwrap();
    let warm = tx.send_request(warm).await.expect("plain request");
    assert_eq!(warm.status(), StatusCode::OK);

    let connect = Request::builder()
        .method(Method::CONNECT)
        .uri("example.com:443")
        .version(Version::HTTP_2)
        .body(Empty::new())
        .unwrap();
    let res = h2_send(&mut tx, connect, "CONNECT answered").await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(res.headers().contains_key("allow"));

    // Extended CONNECT to the 403 route: routed (the route answers), not refused.
    let mut ext = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{}/admin/ws", site.addr))
        .version(Version::HTTP_2)
        .body(Empty::new())
        .unwrap();
    ext.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let res = h2_send(&mut tx, ext, "extended CONNECT answered").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let paths: Vec<String> = site.origin.hits().into_iter().map(|h| h.path).collect();
    assert_eq!(paths, ["/public/warm"]);
}

/// `OPTIONS *` asks about the server itself: the proxy answers 200 with `Allow`,
/// and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_asterisk_is_answered_by_the_proxy() {
    let site = site().await;
    let mut s = TcpStream::connect(site.addr).await.unwrap();
    s.write_all(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let res = tokio::time::timeout(EXCHANGE_LIMIT, read_response(&mut s))
        .await
        .expect("answer in time");
    assert_eq!(res.status, 200, "{}", res.head);
    let allow = allow_list(header(&res, "allow").expect("Allow"));
    assert!(
        allow.contains(&"OPTIONS") && allow.contains(&"GET"),
        "{allow:?}"
    );
    assert!(!allow.contains(&"CONNECT"), "{allow:?}");
    assert_eq!(header(&res, "content-length"), Some("0"));
    s.write_all(b"GET /public/next HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let next = tokio::time::timeout(EXCHANGE_LIMIT, read_response(&mut s))
        .await
        .expect("answer in time");
    assert_eq!(next.status, 200, "{}", next.head);
    let paths: Vec<String> = site.origin.hits().into_iter().map(|h| h.path).collect();
    assert_eq!(paths, ["/public/next"]);
}

/// The asterisk form belongs to OPTIONS alone, and a target without a path (the
/// authority form) to CONNECT alone (RFC 9112 §3.2.3, §3.2.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_form_with_another_method_is_400() {
    let site = site().await;
    for req in [
        "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET example.com:80 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    ] {
        let res = raw_exchange(site.addr, req.as_bytes()).await;
        assert_eq!(res.status, 400, "{req:?}: {}", res.head);
    }
    assert!(site.origin.hits().is_empty());
}

// ----- 4. half-close -----

/// A client that sends its request and shuts down its write side still gets the
/// answer (HAProxy answers all of these; hyper's default drops them), and then
/// the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_gets_its_answer() {
    let site = site().await;
    const ROUNDS: usize = 5;
    let mut answered = 0;
    for i in 0..ROUNDS {
        let mut s = TcpStream::connect(site.addr).await.unwrap();
        // A short origin delay: the request is surely in flight when the FIN lands.
        let req = format!("GET /public/half/{i}?delay=20ms HTTP/1.1\r\nHost: h\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        s.shutdown().await.expect("shut down the write side");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(EXCHANGE_LIMIT, s.read_to_end(&mut buf)).await;
        if buf.starts_with(b"HTTP/1.1 200 ") {
            answered += 1;
            // Nothing more can come from this client: the proxy closes its side.
            assert!(read.is_ok(), "the connection stays open after the answer");
        }
    }
    assert_eq!(
        answered, ROUNDS,
        "half-closed clients left without an answer"
    );
    assert_eq!(site.origin.requests(), ROUNDS);
}

// ----- 6. paths -----

/// What a probe must get: refused, the 403 of the `/admin/` route, or the origin
/// with this exact path.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Refused,
    Forbidden,
    Origin(&'static str),
}

const PATH_PROBES: &[(&str, Expect)] = &[
    ("/public/../admin/x", Expect::Forbidden),
    ("/public/%2e%2e/admin/x", Expect::Forbidden),
    ("/public/%2E%2E/admin/x", Expect::Forbidden),
    ("/public/.%2e/admin/x", Expect::Forbidden),
    ("/public/x/../../admin/x", Expect::Forbidden),
    ("//admin/x", Expect::Forbidden),
    ("/./admin/x", Expect::Forbidden),
    ("/%2e/admin/x", Expect::Forbidden),
    ("/public//..//admin/x", Expect::Forbidden),
    // Percent-encoded unreserved characters are the characters themselves.
    ("/%61dmin/x", Expect::Forbidden),
    // `%2F` is routed as a slash (an origin that decodes it serves `/admin/x`),
    // so this meets the `/admin/` route; a path that routes elsewhere keeps its
    // `%2F` on the way to the origin (below).
    ("/admin%2fx", Expect::Forbidden),
    ("/public/a%2fb", Expect::Origin("/public/a%2Fb")),
    // A dot segment hidden behind `%2F` would climb at an origin that decodes it:
    // refused rather than guessed.
    ("/public/..%2fadmin/x", Expect::Refused),
    ("/public/%2e%2e%2fadmin/x", Expect::Refused),
    // Tomcat reads `..;x` as `..`.
    ("/public/..;/admin/x", Expect::Refused),
    // Above the root: nginx answers 400 too.
    ("/../admin/x", Expect::Refused),
    ("/public/../../admin/x", Expect::Refused),
    // A broken escape.
    ("/public/%zz", Expect::Refused),
    // Clean paths are left alone.
    (
        "/public/a.b/.well-known/x",
        Expect::Origin("/public/a.b/.well-known/x"),
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_neither_reach_the_origin_as_admin_nor_bypass_the_403() {
    let site = site().await;
    for &(path, expect) in PATH_PROBES {
        let before = site.origin.hits().len();
        let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
        let res = raw_exchange(site.addr, req.as_bytes()).await;
        let hits = site.origin.hits();
        let reached: Vec<&str> = hits[before..].iter().map(|h| h.path.as_str()).collect();
        match expect {
            Expect::Refused => assert_eq!(res.status, 400, "{path}: {}", res.head),
            Expect::Forbidden => assert_eq!(res.status, 403, "{path}: {}", res.head),
            Expect::Origin(p) => {
                assert_eq!(res.status, 200, "{path}: {}", res.head);
                assert_eq!(reached, [p], "{path}");
            }
        }
        if !matches!(expect, Expect::Origin(_)) {
            assert!(
                reached.is_empty(),
                "{path} reached the origin as {reached:?}"
            );
        }
    }
    for h in site.origin.hits() {
        assert!(
            !h.path.starts_with("/admin/"),
            "{:?} reached the origin",
            h.path
        );
    }
}

/// The same over HTTP/2 (`:path`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_paths_are_normalised_too() {
    let site = site().await;
    let mut tx = h2_client::<Empty<Bytes>>(site.addr).await;
    for (path, status) in [
        ("/public/%2e%2e/admin/x", StatusCode::FORBIDDEN),
        ("/public/..%2Fadmin/x", StatusCode::BAD_REQUEST),
        ("/public/a/./b/../c", StatusCode::OK),
    ] {
        let req = Request::get(format!("http://{}{path}", site.addr))
            .version(Version::HTTP_2)
            .body(Empty::new())
            .unwrap();
        let res = h2_send(&mut tx, req, "answered").await;
        assert_eq!(res.status(), status, "{path}");
    }
    let paths: Vec<String> = site.origin.hits().into_iter().map(|h| h.path).collect();
    assert_eq!(paths, ["/public/a/c"]);
}

/// The origin gets the path the route matched, and the query as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_sees_the_normalised_path_and_the_query_as_sent() {
    let proxy = common::setup(
        &["a"],
        "[[route]]\npath = \"/api/\"\nupstream = \"a\"\n\n[upstream.a]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let req =
        "GET /api/v1/./users//%7Ebob/../%41lice?next=/../x&y=%2e%2e HTTP/1.1\r\nHost: h\r\n\r\n";
    let res = raw_exchange(proxy.addr, req.as_bytes()).await;
    assert_eq!(res.status, 200, "{}", res.head);
    let body = String::from_utf8_lossy(&res.body);
    let line = body
        .lines()
        .find_map(|l| l.strip_prefix("request: "))
        .unwrap_or_else(|| panic!("no request line in {body}"));
    assert_eq!(line, "GET /api/v1/users/Alice?next=/../x&y=%2e%2e HTTP/1.1");
}
