//! Routes that answer by themselves (`respond`, `redirect`), `methods` and
//! `path_exact` through a running proxy: what the client gets on the wire, which
//! origin (if any) saw the request, and how the answers show in the metrics and
//! the status JSON.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::control::{Client, Origin};
use common::{get, send, setup, Conn, EXCHANGE_LIMIT};
use http::{Method, Request, StatusCode, Version};
use http_body_util::Full;
use serde_json::Value;
use switchyard::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n";

/// Three upstreams `a`, `b`, `c`, one sample origin each (origins named the same).
fn abc() -> String {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| format!("[upstream.{n}]\nservers = [{{ addr = \"@{i}\" }}]\n\n"))
        .collect()
}

/// A "public" listener and `body`, started as the binary does; returns the proxy
/// and the listener's address.
async fn start(body: &str) -> (Running, SocketAddr) {
    let toml = format!("{}{body}", common::listeners(&["public"]));
    let running = common::start_proxy(&toml).await;
    let addr = running.addr("public").expect("listener public");
    (running, addr)
}

/// Writes `request` (which must ask for `Connection: close` in its last request)
/// and reads everything the proxy sends until it closes: the bytes on the wire,
/// with nothing parsed away, so that a body where none belongs shows.
async fn wire(addr: SocketAddr, request: &str) -> String {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read to close");
        String::from_utf8(out).expect("text answer")
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("the proxy answered and closed in time")
}

/// The value of header `name` in a response head as sent (names are matched
/// without regard to case).
fn head_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The `Allow` header as a set of methods.
fn allow(r: &common::Resp) -> BTreeSet<String> {
    r.header("allow")
        .unwrap_or_else(|| panic!("405 without Allow: {:?}", r.headers))
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect()
}

fn set(methods: &[&str]) -> BTreeSet<String> {
    methods.iter().map(|m| (*m).to_owned()).collect()
}

// ---------------------------------------------------------------------------
// respond

const TEAPOT: &str = "short and stout\n";

/// A catch-all to the counting origin and three routes that answer themselves.
fn respond_routes(origin: SocketAddr) -> String {
    format!(
        "[[route]]\nupstream = \"o\"\n\n\
         [[route]]\nname = \"teapot\"\npath = \"/tea/\"\n\
         respond = {{ status = 418, body = \"short and stout\\n\", content_type = \"text/x-teapot\" }}\n\n\
         [[route]]\npath_exact = \"/ok\"\nrespond = {{ body = \"ok\\n\" }}\n\n\
         [[route]]\npath_exact = \"/empty\"\nrespond = {{}}\n\n\
         [[route]]\npath_exact = \"/none\"\nrespond = {{ status = 204 }}\n\n\
         [upstream.o]\nservers = [{{ addr = \"{origin}\" }}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_answers_with_its_status_body_and_type_without_the_upstream() {
    let o = Origin::start("o").await;
    let (_p, addr) = start(&respond_routes(o.addr())).await;
    let mut c = Conn::open(addr).await;

    let r = c.send("GET", "/tea/pot?x=1", &[], None).await;
    assert_eq!(r.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(r.body, TEAPOT);
    assert_eq!(r.header("content-type"), Some("text/x-teapot"));
    assert_eq!(
        r.header("content-length"),
        Some(TEAPOT.len().to_string().as_str())
    );
    // Any method: a respond route without `methods` answers them all alike.
    let r = c.send("POST", "/tea/", &[], Some(b"a=1")).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::IM_A_TEAPOT, TEAPOT)
    );

    // The defaults: 200 and text/plain in UTF-8.
    let r = c.send("GET", "/ok", &[], None).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok\n"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("3"));
    // No body at all: an empty 200, framed by its length.
    let r = c.send("GET", "/empty", &[], None).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, ""));
    assert_eq!(r.header("content-length"), Some("0"));

    assert!(
        o.hits().is_empty(),
        "the origin was contacted: {:?}",
        o.hits()
    );
    // The origin is reachable: its silence above is the routes', not a dead link.
    let r = c.send("GET", "/teas", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(o.count(&Method::GET, "/teas"), 1);
    assert_eq!(o.hits().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_to_a_respond_route_gets_the_get_head_and_no_body() {
    let o = Origin::start("o").await;
    let (_p, addr) = start(&respond_routes(o.addr())).await;
    // HEAD, then GET on the same connection: the GET's status line must follow
    // the HEAD's head directly, so any body byte after the HEAD's head shows.
    let text = wire(
        addr,
        "HEAD /tea/pot HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, rest) = text.split_once("\r\n\r\n").expect("a HEAD response head");
    assert!(head.starts_with("HTTP/1.1 418 "), "{head}");
    assert_eq!(head_value(head, "content-type"), Some("text/x-teapot"));
    // As nginx does for `return 418 "text"`: the length the GET would have.
    assert_eq!(
        head_value(head, "content-length"),
        Some(TEAPOT.len().to_string().as_str()),
        "{head}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200 "),
        "bytes after the HEAD response head: {rest:?}"
    );
    assert!(rest.ends_with("\r\n\r\nok\n"), "{rest:?}");

    // An empty body is announced as such; a 204 has no length, for GET or HEAD.
    let text = wire(
        addr,
        "HEAD /empty HTTP/1.1\r\nHost: t\r\n\r\n\
         HEAD /none HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /none HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let heads: Vec<&str> = text.split("\r\n\r\n").collect();
    assert_eq!(heads.len(), 4, "three heads and nothing after: {text:?}");
    assert!(heads[0].starts_with("HTTP/1.1 200 "), "{}", heads[0]);
    assert_eq!(head_value(heads[0], "content-length"), Some("0"));
    for h in &heads[1..3] {
        assert!(h.starts_with("HTTP/1.1 204 "), "{h}");
        assert_eq!(head_value(h, "content-length"), None, "{h}");
    }
    assert_eq!(heads[3], "");

    // The same over HTTP/2, where a response's length is a header of its own.
    let r = h2_send(addr, Method::HEAD, "/tea/pot").await;
    assert_eq!(r.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(
        r.header("content-length"),
        Some(TEAPOT.len().to_string().as_str())
    );
    assert_eq!(r.body, "");
    assert!(o.hits().is_empty(), "{:?}", o.hits());
}

/// One request over an HTTP/2 prior-knowledge connection, read whole.
async fn h2_send(addr: SocketAddr, method: Method, path: &str) -> common::Resp {
    use hyper::client::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .version(Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let res = tx.send_request(req).await.expect("h2 response");
        common::Resp::read(res).await
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("h2 exchange finished in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_health_answers_itself_next_to_a_proxied_root() {
    // nginx's `location = /health { return 200 "ok"; }` beside `location / { proxy_pass … }`.
    let o = Origin::start("o").await;
    let body = format!(
        "[[route]]\npath_exact = \"/health\"\nrespond = {{ body = \"ok\\n\" }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"o\"\n\n\
         [upstream.o]\nservers = [{{ addr = \"{}\" }}]\n",
        o.addr()
    );
    let (_p, addr) = start(&body).await;
    let mut c = Conn::open(addr).await;
    for target in ["/health", "/health?probe=1"] {
        let r = c.send("GET", target, &[], None).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (StatusCode::OK, "ok\n"),
            "{target}"
        );
    }
    assert!(o.hits().is_empty(), "{:?}", o.hits());
    // Everything else, the near misses included, is proxied.
    for path in ["/", "/health/", "/healthz", "/health/deep"] {
        let r = c.send("GET", path, &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(o.count(&Method::GET, path), 1, "{path} reached the origin");
    }
    assert_eq!(o.hits().len(), 4);
}

// ---------------------------------------------------------------------------
// redirect

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_fills_in_the_location_variables() {
    let o = Origin::start("o").await;
    let body = format!(
        "[[route]]\npath = \"/old/\"\n\
         redirect = {{ status = 301, location = \"https://$host$request_uri\" }}\n\n\
         [[route]]\npath = \"/moved/\"\nredirect = {{ location = \"/new$uri$is_args$args\" }}\n\n\
         [[route]]\npath_exact = \"/who\"\n\
         redirect = {{ status = 303, location = \"$scheme://$host/x?from=$remote_addr&id=$request_id\" }}\n\n\
         [[route]]\nupstream = \"o\"\n\n\
         [upstream.o]\nservers = [{{ addr = \"{}\" }}]\n",
        o.addr()
    );
    let (_p, addr) = start(&body).await;
    let mut c = Conn::open(addr).await;

    // $host: lower case, no port; $request_uri: path and query as sent.
    let r = c
        .send(
            "GET",
            "/old/a/b?x=1&y=%20",
            &[("host", "WWW.Example.COM:8080")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.header("location"),
        Some("https://www.example.com/old/a/b?x=1&y=%20")
    );

    // No status: 302. `$is_args$args` adds "?query" only when there is one.
    let r = c.send("GET", "/moved/p?q=1&r", &[], None).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some("/new/moved/p?q=1&r"));
    let r = c.send("GET", "/moved/p", &[], None).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some("/new/moved/p"));

    let r = c
        .send("GET", "/who", &[("x-request-id", "rid-7")], None)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.header("location"),
        Some("http://127.0.0.1/x?from=127.0.0.1&id=rid-7")
    );
    assert_eq!(r.header("x-request-id"), Some("rid-7"));

    assert!(
        o.hits().is_empty(),
        "a redirect contacted the origin: {:?}",
        o.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_to_a_redirect_gets_location_and_no_body() {
    let body = "[[route]]\npath = \"/old/\"\n\
                redirect = { status = 301, location = \"https://$host$request_uri\" }\n";
    let (_p, addr) = start(body).await;
    let got = get(addr, "/old/x").await;
    let get_length = got.header("content-length").expect("GET length").to_owned();
    let text = wire(
        addr,
        "HEAD /old/x?y=1 HTTP/1.1\r\nHost: Example.com\r\n\r\n\
         GET /old/z HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, rest) = text.split_once("\r\n\r\n").expect("a HEAD response head");
    assert!(head.starts_with("HTTP/1.1 301 "), "{head}");
    assert_eq!(
        head_value(head, "location"),
        Some("https://example.com/old/x?y=1")
    );
    assert_eq!(
        head_value(head, "content-length"),
        Some(get_length.as_str()),
        "HEAD announces the length GET sends: {head}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 301 "),
        "bytes after the HEAD response head: {rest:?}"
    );
    assert_eq!(
        head_value(rest, "location"),
        Some("https://example.com/old/z")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_to_307_and_308_redirects_keeps_the_status_for_every_method() {
    let o = Origin::start("o").await;
    let body = format!(
        "[[route]]\npath = \"/tmp/\"\nredirect = {{ status = 307, location = \"/t$request_uri\" }}\n\n\
         [[route]]\npath = \"/perm/\"\nredirect = {{ status = 308, location = \"/p$request_uri\" }}\n\n\
         [[route]]\npath = \"/gone/\"\nredirect = {{ status = 301, location = \"/g$request_uri\" }}\n\n\
         [[route]]\nupstream = \"o\"\n\n\
         [upstream.o]\nservers = [{{ addr = \"{}\" }}]\n",
        o.addr()
    );
    let (_p, addr) = start(&body).await;
    let mut c = Conn::open(addr).await;
    let r = c
        .send("POST", "/tmp/form?id=7", &[], Some(b"a=1&b=2"))
        .await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.header("location"), Some("/t/tmp/form?id=7"));
    let r = c.send("PUT", "/perm/doc", &[], Some(b"{}")).await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header("location"), Some("/p/perm/doc"));
    // A route's redirect keeps its status for a POST (unlike `redirect_https`,
    // which turns to 308 for methods other than GET and HEAD).
    let r = c.send("POST", "/gone/x", &[], Some(b"z")).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    // The connection served all three, the unread bodies notwithstanding.
    let r = c.send("GET", "/tmp/again", &[], None).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert!(o.hits().is_empty(), "{:?}", o.hits());
}

// ---------------------------------------------------------------------------
// methods

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_choose_among_routes_at_one_place() {
    let body = format!(
        "[[route]]\npath = \"/hook\"\nmethods = [\"POST\"]\nupstream = \"b\"\n\n\
         [[route]]\npath = \"/hook\"\nmethods = [\"GET\"]\nupstream = \"a\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"c\"\n\n\
         [[route]]\npath = \"/mixed/\"\nmethods = [\"DELETE\"]\nupstream = \"a\"\n\n\
         [[route]]\npath = \"/mixed/\"\nupstream = \"b\"\n\n{}",
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    let mut c = Conn::open(p.addr).await;
    let r = c.send("GET", "/hook", &[], None).await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "a"));
    let r = c.send("POST", "/hook/x", &[], Some(b"{}")).await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "b"));
    // A route for GET takes HEAD, sent upstream as HEAD.
    let r = c.send("HEAD", "/hook", &[], None).await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "a"));

    // No route for DELETE at /hook: 405, not the catch-all at "/".
    for path in ["/hook", "/hook/deeper"] {
        let r = c.send("DELETE", path, &[], None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(r.origin(), "<none>", "{path}: answered by an origin");
        assert_eq!(allow(&r), set(&["GET", "HEAD", "POST"]), "{path}");
        assert_eq!(r.body, "405 Method Not Allowed\n");
        let id = r
            .header("x-request-id")
            .expect("the 405 carries a request id");
        assert_eq!(id.len(), 32, "{id}");
    }
    // The catch-all still serves its own paths for every method.
    let r = c.send("DELETE", "/other", &[], None).await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "c"));

    // A route without `methods` takes the methods the others do not list.
    let r = c.send("DELETE", "/mixed/x", &[], None).await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "a"));
    for m in ["GET", "PUT", "POST", "HEAD", "PATCH"] {
        let r = c.send(m, "/mixed/x", &[], None).await;
        assert_eq!((r.status, r.origin()), (StatusCode::OK, "b"), "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_refusal_does_not_fall_back_to_another_host_group() {
    let body = format!(
        "[[route]]\nhost = \"api.test\"\npath = \"/hook\"\nmethods = [\"POST\"]\nupstream = \"a\"\n\n\
         [[route]]\npath = \"/hook\"\nupstream = \"b\"\n\n{}",
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    let host = [("host", "api.test")];
    let r = send(p.addr, "POST", "/hook", &host, Some(b"x")).await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "a"));
    let r = send(p.addr, "GET", "/hook", &host, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.origin(), "<none>");
    assert_eq!(allow(&r), set(&["POST"]), "no GET implied: none listed");
    // Another host reaches the hostless route.
    let r = send(p.addr, "GET", "/hook", &[("host", "www.test")], None).await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "b"));
}

// ---------------------------------------------------------------------------
// path_exact

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_exact_wins_over_every_prefix_and_only_matches_itself() {
    let body = format!(
        "[[route]]\npath = \"/docs/\"\nupstream = \"b\"\n\n\
         [[route]]\npath_exact = \"/docs/v1\"\nupstream = \"a\"\n\n\
         [[route]]\npath = \"/docs/v1\"\nupstream = \"c\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"b\"\n\n{}",
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    for (path, want) in [
        // The exact path: over the shorter "/docs/" and the equally long
        // (longest matching) "/docs/v1" prefix.
        ("/docs/v1", "a"),
        ("/docs/v1?x=1", "a"),
        // Not its subpaths, nor a longer name: the longest prefix takes those.
        ("/docs/v1/", "c"),
        ("/docs/v1/x", "c"),
        ("/docs/v10", "c"),
        ("/docs/v", "b"),
    ] {
        let r = get(p.addr, path).await;
        assert_eq!((r.status, r.origin()), (StatusCode::OK, want), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_bare_path_suppresses_the_add_slash_redirect() {
    let body = format!(
        "[[route]]\npath = \"/api/\"\nupstream = \"a\"\n\n\
         [[route]]\npath_exact = \"/api\"\nupstream = \"b\"\n\n\
         [[route]]\npath = \"/app/\"\nupstream = \"a\"\n\n{}",
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    let r = get(p.addr, "/api?q=1").await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "b"));
    assert_eq!(r.origin_request_line(), "GET /api?q=1 HTTP/1.1");
    assert_eq!(get(p.addr, "/api/").await.origin(), "a");
    // Without an exact route, the bare form is still redirected.
    let r = get(p.addr, "/app").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), Some("/app/"));
}

// ---------------------------------------------------------------------------
// metrics and the status JSON

async fn admin_get(running: &Running, path: &str) -> String {
    let r = Client::new(running.admin.expect("admin listener"))
        .send("GET", path, &[], None)
        .await
        .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
    assert_eq!(r.status, StatusCode::OK, "admin GET {path}");
    r.body
}

/// The `switchyard_requests_total` sample with exactly these labels, or 0.
fn requests(metrics: &str, route: &str, upstream: &str, server: &str, class: &str) -> f64 {
    let series = format!(
        "switchyard_requests_total{{route=\"{route}\",upstream=\"{upstream}\",server=\"{server}\",code_class=\"{class}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0.0, |v| v.trim().parse().expect("sample value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_own_answers_are_counted_in_their_series() {
    let body = format!(
        "{ADMIN}\
         [[route]]\nname = \"health\"\npath_exact = \"/health\"\nrespond = {{ body = \"ok\\n\" }}\n\n\
         [[route]]\nname = \"gone\"\npath = \"/gone/\"\nrespond = {{ status = 410 }}\n\n\
         [[route]]\nname = \"moved\"\npath = \"/moved/\"\nredirect = {{ location = \"/x\" }}\n\n\
         [[route]]\nname = \"hook\"\npath = \"/hook\"\nmethods = [\"POST\"]\nupstream = \"a\"\n\n{}",
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    let mut c = Conn::open(p.addr).await;
    for (method, path, want) in [
        ("GET", "/health", 200),
        ("HEAD", "/health", 200),
        ("GET", "/gone/x", 410),
        ("GET", "/moved/y", 302),
        ("POST", "/hook", 200),
        ("GET", "/nowhere", 404),
        ("DELETE", "/hook", 405),
    ] {
        let r = c.send(method, path, &[], None).await;
        assert_eq!(r.status.as_u16(), want, "{method} {path}");
    }
    // Each request is counted when its body has been handed to the connection,
    // which is before the client has read it: no wait is needed.
    let m = admin_get(&p.running, "/metrics").await;
    let none = "none";
    // No route answered the 404 nor the 405: both count as unrouted.
    assert_eq!(requests(&m, none, none, none, "4xx"), 2.0, "{m}");
    assert_eq!(requests(&m, "health", none, none, "2xx"), 2.0, "{m}");
    assert_eq!(requests(&m, "gone", none, none, "4xx"), 1.0, "{m}");
    assert_eq!(requests(&m, "moved", none, none, "3xx"), 1.0, "{m}");
    let a = p.origins[0].to_string();
    assert_eq!(requests(&m, "hook", "a", &a, "2xx"), 1.0, "{m}");
    // And nowhere else: seven requests in all.
    let total: f64 = m
        .lines()
        .filter(|l| l.starts_with("switchyard_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 7.0, "{m}");
    p.running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_lists_each_routes_action_methods_and_exactness() {
    let body = format!(
        "{ADMIN}\
         [[route]]\nname = \"health\"\npath_exact = \"/health\"\nrespond = {{}}\n\n\
         [[route]]\nname = \"old\"\npath = \"/old/\"\nredirect = {{ location = \"/new/\" }}\n\n\
         [[route]]\nname = \"hook\"\npath = \"/hook\"\nmethods = [\"POST\", \"PUT\"]\nupstream = \"a\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"b\"\n\n{}",
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    let v: Value = serde_json::from_str(&admin_get(&p.running, "/status.json").await)
        .expect("status.json is JSON");
    let routes = v["routes"].as_array().expect("a list of routes");
    let summary: Vec<(String, String, String, Value, Value, String)> = routes
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["path"].as_str().unwrap().to_owned(),
                r["action"].as_str().unwrap().to_owned(),
                r["methods"].clone(),
                r["exact"].clone(),
                r["upstream"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |name: &str, path: &str, action: &str, methods: Value, exact: bool, up: &str| {
        (
            name.to_owned(),
            path.to_owned(),
            action.to_owned(),
            methods,
            Value::Bool(exact),
            up.to_owned(),
        )
    };
    assert_eq!(
        summary,
        vec![
            row("health", "/health", "respond", Value::Null, true, ""),
            row("old", "/old/", "redirect", Value::Null, false, ""),
            row(
                "hook",
                "/hook",
                "upstream",
                serde_json::json!(["POST", "PUT"]),
                false,
                "a"
            ),
            row("/", "/", "upstream", Value::Null, false, "b"),
        ],
        "{v}"
    );
    p.running.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------
// response_headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_are_set_on_every_answer_of_the_route() {
    // nginx's `add_header … always`: on the upstream's answer (replacing or
    // removing its own headers), on a fixed answer, and on the proxy's own error.
    let o = Origin::start("o").await;
    let dead = common::closed_port().await;
    let body = format!(
        "[[route]]\npath = \"/\"\nupstream = \"o\"\n\
         response_headers = {{ \"Cache-Control\" = \"no-store\", \"X-Origin\" = \"\", \"X-Price\" = \"5$$\" }}\n\n\
         [[route]]\npath_exact = \"/ping\"\nrespond = {{ body = \"pong\" }}\n\
         response_headers = {{ \"Cache-Control\" = \"max-age=60\" }}\n\n\
         [[route]]\npath = \"/dead/\"\nupstream = \"dead\"\n\
         response_headers = {{ \"X-Frame-Options\" = \"DENY\" }}\n\n\
         [upstream.o]\nservers = [{{ addr = \"{}\" }}]\n\n\
         [upstream.dead]\nservers = [{{ addr = \"{dead}\" }}]\n",
        o.addr()
    );
    let (_p, addr) = start(&body).await;
    let r = get(addr, "/x").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(o.count(&Method::GET, "/x"), 1, "the origin answered");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-price"), Some("5$"), "$$ is a dollar sign");
    assert_eq!(
        r.header("x-origin"),
        None,
        "the origin's own header is removed"
    );
    let r = get(addr, "/ping").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "pong"));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    let r = get(addr, "/dead/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    // One route's headers stay on that route: /dead/'s are not on "/"'s answers.
    let r = get(addr, "/x?status=204").await;
    assert!(r.header("x-frame-options").is_none());
}
