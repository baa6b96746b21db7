//! Header handling through a running proxy: the standard proxy headers, hop-by-hop
//! removal in both directions, and `set_headers` templates. What the origin received
//! is read from the sample origin's echo of its request headers.

mod common;

use std::net::SocketAddr;

use common::{send, setup, start_proxy, Resp};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ONE_ROUTE: &str =
    "[[route]]\nupstream = \"a\"\n\n[upstream.a]\nservers = [{ addr = \"@0\" }]\n";

async fn one(headers: &[(&str, &str)]) -> Resp {
    let p = setup(&["a"], ONE_ROUTE).await;
    let r = send(p.addr, "GET", "/h", headers, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_appended_to() {
    let r = one(&[("x-forwarded-for", "1.2.3.4")]).await;
    assert_eq!(r.seen("x-forwarded-for"), ["1.2.3.4, 127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_lines_are_joined_then_appended_to() {
    let r = one(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-for", "5.6.7.8, 9.9.9.9"),
    ])
    .await;
    assert_eq!(
        r.seen("x-forwarded-for"),
        ["1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_set_when_absent() {
    let r = one(&[]).await;
    assert_eq!(r.seen("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_ip_proto_and_forwarded_host_are_set() {
    // Client-sent values are replaced, not passed through or duplicated.
    let r = one(&[
        ("host", "example.com:8080"),
        ("x-real-ip", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ])
    .await;
    assert_eq!(r.seen("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(r.seen("x-forwarded-proto"), ["http"]);
    // nginx's `$host`: the host without its port.
    assert_eq!(r.seen("x-forwarded-host"), ["example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_host_header_is_kept_unchanged() {
    let r = one(&[("host", "Example.COM:8080")]).await;
    assert_eq!(r.seen("host"), ["Example.COM:8080"]);
    // And the request line is origin-form, HTTP/1.1.
    assert_eq!(r.origin_request_line(), "GET /h HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_do_not_reach_the_origin() {
    let r = one(&[
        ("connection", "X-Secret, keep-alive"),
        ("x-secret", "1"),
        ("keep-alive", "5"),
        ("te", "trailers"),
        ("proxy-connection", "keep-alive"),
        ("trailer", "X-Sum"),
        ("upgrade", "websocket"),
        ("x-kept", "yes"),
    ])
    .await;
    for h in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(r.seen(h).is_empty(), "origin saw {h}:\n{}", r.body);
    }
    assert_eq!(r.seen("x-kept"), ["yes"]);
}

/// A one-shot origin written in the test, answering every request on every
/// connection with `response` as is.
async fn fake_origin(response: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind(common::loopback0()).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Requests here have no body: the head is the whole request.
                    while common::find(&buf, b"\r\n\r\n").is_none() {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = common::find(&buf, b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if s.write_all(response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let origin = fake_origin(
        b"HTTP/1.1 200 OK\r\n\
          Content-Length: 2\r\n\
          Connection: close, X-Hop\r\n\
          X-Hop: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          Trailer: X-Checksum\r\n\
          X-Kept: yes\r\n\
          Cache-Control: no-store\r\n\
          \r\n\
          ok",
    )
    .await;
    let running = start_proxy(&format!(
        "{}[[route]]\nupstream = \"fake\"\n\n{}",
        common::listeners(&["public"]),
        common::upstream("fake", &[(origin, 1)])
    ))
    .await;
    let addr = running.addr("public").unwrap();
    // Two requests on one client connection: the origin's `Connection: close` is
    // about the upstream hop and must not close the client's connection either.
    let mut conn = common::Conn::open(addr).await;
    for _ in 0..2 {
        let r = conn.send("GET", "/", &[], None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "ok");
        for h in [
            "connection",
            "x-hop",
            "keep-alive",
            "proxy-connection",
            "trailer",
        ] {
            assert!(
                r.headers.get(h).is_none(),
                "client got {h}: {:?}",
                r.headers
            );
        }
        assert_eq!(r.header("x-kept"), Some("yes"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
}

const SET_HEADERS: &str = r#"[[route]]
upstream = "a"
[route.set_headers]
"X-Upstream" = "$upstream_addr"
"X-Client" = "$remote_addr"
"X-Host" = "$host"
"X-Scheme" = "$scheme"
"X-Literal" = "fixed value"
"X-Mixed" = "id-$upstream_addr/${host}x$$ ($scheme)"
"X-Remove-Me" = ""
"X-Real-IP" = "overridden"

[upstream.a]
servers = [{ addr = "@0" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_headers_variables_literals_templates_and_removal() {
    let p = setup(&["a"], SET_HEADERS).await;
    let origin = p.origins[0].to_string();
    let r = send(
        p.addr,
        "GET",
        "/",
        &[
            ("host", "example.com:8080"),
            ("x-remove-me", "secret"),
            ("x-literal", "from client"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen("x-upstream"), [origin.as_str()]);
    assert_eq!(r.seen("x-client"), ["127.0.0.1"]);
    assert_eq!(r.seen("x-host"), ["example.com"]);
    assert_eq!(r.seen("x-scheme"), ["http"]);
    // A set header replaces the client's value.
    assert_eq!(r.seen("x-literal"), ["fixed value"]);
    assert_eq!(
        r.seen("x-mixed"),
        [format!("id-{origin}/example.comx$ (http)").as_str()]
    );
    assert!(r.seen("x-remove-me").is_empty(), "{}", r.body);
    // set_headers apply after the standard proxy headers, so they win.
    assert_eq!(r.seen("x-real-ip"), ["overridden"]);
    // The rest is untouched.
    assert_eq!(r.seen("host"), ["example.com:8080"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_addr_names_the_server_actually_used() {
    let body = SET_HEADERS.replace(
        "servers = [{ addr = \"@0\" }]",
        "servers = [{ addr = \"@0\" }, { addr = \"@1\" }]",
    );
    let p = setup(&["a", "b"], &body).await;
    for _ in 0..4 {
        let r = common::get(p.addr, "/").await;
        let want = match r.origin() {
            "a" => p.origins[0],
            "b" => p.origins[1],
            o => panic!("unexpected origin {o}"),
        };
        assert_eq!(r.seen("x-upstream"), [want.to_string().as_str()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_variable_is_lower_cased() {
    let p = setup(&["a"], SET_HEADERS).await;
    let r = send(p.addr, "GET", "/", &[("host", "Example.COM:8080")], None).await;
    assert_eq!(r.seen("x-host"), ["example.com"]);
    assert_eq!(r.seen("x-forwarded-host"), ["example.com"]);
}

// RFC 9112 §3.2: an HTTP/1.1 request MUST carry Host. A client listing `Host` in
// `Connection` must not make the proxy send one without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_naming_host_does_not_remove_host() {
    let r = one(&[("host", "example.com"), ("connection", "Host")]).await;
    assert_eq!(r.seen("host"), ["example.com"], "{}", r.body);
}

// RFC 9112 §3.2.2: a proxy receiving an absolute-form target MUST replace Host with
// the target's authority. The proxy routes by the authority (right) but forwards the
// client's other Host, so the origin is told a different host than the one routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_replaces_host() {
    let body = "[[route]]\nhost = \"a.example\"\nupstream = \"a\"\n\n\
                [[route]]\nhost = \"b.example\"\nupstream = \"b\"\n\n\
                [upstream.a]\nservers = [{ addr = \"@0\" }]\n\n\
                [upstream.b]\nservers = [{ addr = \"@1\" }]\n";
    let p = setup(&["a", "b"], body).await;
    let r = common::raw_exchange(
        p.addr,
        b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(
        r.head.contains("x-origin: a\r\n"),
        "routed by the target: {}",
        r.head
    );
    assert!(text.contains("request: GET /x HTTP/1.1\n"), "{text}");
    assert!(
        text.contains("\nhost: a.example\n"),
        "origin a was sent another Host:\n{text}"
    );
    assert!(!text.contains("b.example"), "{text}");
}
