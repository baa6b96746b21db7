//! The real client address and who may come in (issue 14): the PROXY protocol
//! (v1 and v2, TCP4 and TCP6, LOCAL, TLVs, on plain and TLS listeners; garbage, a
//! missing header and silence close the connection with nothing forwarded), a
//! trusted `X-Forwarded-For` (right-most untrusted hop; an untrusted peer cannot
//! spoof), `allow` / `deny` for IPv4 and IPv6 (counted as `denied`), and a
//! listener's `max_connections` at its edge and across a reload.
//!
//! The PROXY protocol is also how these tests present many client addresses over
//! loopback; real sources (127.0.0.x, ::1) are used where the socket's own address
//! is what is judged.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::tls::{any_cert_client, Pki, H1};
use common::{read_response, TempDir, EXCHANGE_LIMIT};
use http::HeaderMap;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use switchyard::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

// ----- an origin that records what reaches it -----

/// The request heads the origin received, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<HeaderMap>>>);

impl Seen {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Header `name` of the last request.
    fn last(&self, name: &str) -> Option<String> {
        let all = self.0.lock().unwrap();
        let h = all.last().expect("a request reached the origin");
        h.get(name).map(|v| v.to_str().unwrap().to_owned())
    }
}

/// An HTTP/1.1 origin answering `ok` and recording every request's headers.
async fn recording_origin() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    record.0.lock().unwrap().push(req.headers().clone());
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

// ----- the proxy -----

/// A proxy with a "public" listener (plus `listener` keys), one route named
/// "guarded" to the recording origin (plus `route` keys), a JSON access log and
/// the admin API.
struct Site {
    running: Running,
    addr: SocketAddr,
    seen: Seen,
    log: PathBuf,
    _dir: TempDir,
}

fn config_text(log: &std::path::Path, origin: SocketAddr, listener: &str, route: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[access_log]
path = "{log}"

[[listener]]
name = "public"
listen = "127.0.0.1:0"
{listener}

[[route]]
name = "guarded"
path = "/"
upstream = "origin"
{route}

[upstream.origin]
servers = [{{ addr = "{origin}" }}]
"#,
        log = log.display()
    )
}

async fn site(listener: &str, route: &str) -> Site {
    let dir = TempDir::new("client-address");
    let log = dir.path("access.log");
    let (origin, seen) = recording_origin().await;
    let running = common::start_proxy(&config_text(&log, origin, listener, route)).await;
    let addr = running.addr("public").unwrap();
    Site {
        running,
        addr,
        seen,
        log,
        _dir: dir,
    }
}

impl Site {
    /// The access log's lines once it has `n`.
    async fn log_lines(&self, n: usize) -> Vec<String> {
        let path = self.log.clone();
        let mut lines = Vec::new();
        let found = common::control::eventually(EXCHANGE_LIMIT, || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            lines = text.lines().map(str::to_owned).collect();
            lines.len() >= n
        })
        .await;
        assert!(found.is_some(), "{n} log lines never came: {lines:?}");
        lines
    }

    /// `switchyard_requests_limited_total{route="guarded",reason="denied"}`.
    async fn denied(&self) -> f64 {
        self.metric(
            "switchyard_requests_limited_total{",
            &["route=\"guarded\"", "reason=\"denied\""],
        )
        .await
    }

    /// The value of the series of `prefix` whose labels contain all of `labels`.
    async fn metric(&self, prefix: &str, labels: &[&str]) -> f64 {
        let mut admin = common::control::Client::new(self.running.admin.unwrap());
        let body = admin.get("/metrics").await.expect("metrics").body;
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }
}

// ----- PROXY protocol headers -----

const DEST4: &str = "192.0.2.1:443";
const DEST6: &str = "[2001:db8::1]:443";

fn v1(src: &str) -> Vec<u8> {
    let src: SocketAddr = src.parse().unwrap();
    let (family, dst) = match src {
        SocketAddr::V4(_) => ("TCP4", DEST4.parse::<SocketAddr>().unwrap()),
        SocketAddr::V6(_) => ("TCP6", DEST6.parse::<SocketAddr>().unwrap()),
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: `command` 0 (LOCAL) or 1 (PROXY), the family byte, the address
/// block and TLVs.
fn v2_raw(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
    h.extend_from_slice(addresses);
    h.extend_from_slice(tlvs);
    h
}

/// A v2 PROXY header for a TCP client `src`, with `tlvs`.
fn v2(src: &str, tlvs: &[u8]) -> Vec<u8> {
    let src: SocketAddr = src.parse().unwrap();
    let mut a = Vec::new();
    let family = match src {
        SocketAddr::V4(s) => {
            a.extend_from_slice(&s.ip().octets());
            a.extend_from_slice(&[192, 0, 2, 1]);
            0x11
        }
        SocketAddr::V6(s) => {
            a.extend_from_slice(&s.ip().octets());
            a.extend_from_slice(
                &"2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
            0x21
        }
    };
    a.extend_from_slice(&src.port().to_be_bytes());
    a.extend_from_slice(&443u16.to_be_bytes());
    v2_raw(1, family, &a, tlvs)
}

/// A request that closes its connection, with `headers`.
fn request(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = String::from("GET /x HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Sends `preface` and a request on a new connection (from `from`, when given)
/// and reads until the proxy closes: the response's status, or `None` when it
/// closed without a byte.
async fn ask_from(
    from: Option<SocketAddr>,
    addr: SocketAddr,
    preface: &[u8],
    headers: &[(&str, &str)],
) -> Option<u16> {
    let fut = async {
        let mut s = match from {
            None => TcpStream::connect(addr).await.unwrap(),
            Some(from) => {
                let sock = match from {
                    SocketAddr::V4(_) => TcpSocket::new_v4(),
                    SocketAddr::V6(_) => TcpSocket::new_v6(),
                }
                .unwrap();
                sock.bind(from).unwrap();
                sock.connect(addr).await.unwrap()
            }
        };
        // The proxy may close before taking everything.
        let _ = s.write_all(&[preface, &request(headers)].concat()).await;
        let mut buf = Vec::new();
        // A close with unread bytes is a reset: what was read before it stays.
        let _ = s.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("the proxy answered or closed in time");
    if buf.is_empty() {
        return None;
    }
    let head = String::from_utf8_lossy(&buf);
    Some(
        head.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a response: {head:?}")),
    )
}

async fn ask(addr: SocketAddr, preface: &[u8], headers: &[(&str, &str)]) -> Option<u16> {
    ask_from(None, addr, preface, headers).await
}

// ----- PROXY protocol -----

#[tokio::test]
async fn proxy_v1_names_the_client_for_the_origin_and_the_log() {
    let s = site("proxy_protocol = true", "").await;
    for (src, ip, logged) in [
        ("203.0.113.7:4711", "203.0.113.7", "203.0.113.7:4711"),
        ("[2001:db8::7]:4712", "2001:db8::7", "[2001:db8::7]:4712"),
    ] {
        assert_eq!(ask(s.addr, &v1(src), &[]).await, Some(200), "{src}");
        assert_eq!(s.seen.last("x-real-ip").as_deref(), Some(ip));
        assert_eq!(s.seen.last("x-forwarded-for").as_deref(), Some(ip));
        let lines = s.log_lines(s.seen.count()).await;
        let line = lines.last().unwrap();
        assert!(line.contains(&format!("\"client\":\"{logged}\"")), "{line}");
    }
    // UNKNOWN: the balancer's own connection; the peer is the client.
    assert_eq!(ask(s.addr, b"PROXY UNKNOWN\r\n", &[]).await, Some(200));
    assert_eq!(s.seen.last("x-real-ip").as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn proxy_v2_tcp4_tcp6_with_tlvs_and_local() {
    let s = site("proxy_protocol = true", "").await;
    // An AWS-style VPC endpoint TLV and an authority TLV, skipped.
    let tlvs = [
        &[0xea, 0x00, 0x05, 0x01][..],
        b"vpce",
        &[0x02, 0x00, 0x04],
        b"test",
    ]
    .concat();
    for (header, ip) in [
        (v2("198.51.100.9:1234", &[]), "198.51.100.9"),
        (v2("198.51.100.10:1234", &tlvs), "198.51.100.10"),
        (v2("[2001:db8:5::9]:1234", &tlvs), "2001:db8:5::9"),
    ] {
        assert_eq!(ask(s.addr, &header, &[]).await, Some(200), "{ip}");
        assert_eq!(s.seen.last("x-real-ip").as_deref(), Some(ip));
    }
    let lines = s.log_lines(3).await;
    assert!(
        lines[2].contains("\"client\":\"[2001:db8:5::9]:1234\""),
        "{}",
        lines[2]
    );
    // LOCAL (a health check of the balancer), with or without addresses: the
    // connection's peer is the client.
    let addresses = [10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2];
    for local in [v2_raw(0, 0x00, &[], &[]), v2_raw(0, 0x11, &addresses, &[])] {
        assert_eq!(ask(s.addr, &local, &[]).await, Some(200));
        assert_eq!(s.seen.last("x-real-ip").as_deref(), Some("127.0.0.1"));
    }
}

#[tokio::test]
async fn garbage_a_missing_header_or_silence_closes_the_connection_and_nothing_is_forwarded() {
    let s = site("proxy_protocol = true\nclient_header_timeout = \"1s\"", "").await;
    let mut broken_v2 = v2("198.51.100.9:1234", &[]);
    broken_v2[12] = 0x31; // version 3
    let cases: [(&str, Vec<u8>); 5] = [
        ("a plain request, no header", Vec::new()),
        ("garbage", b"\x16\x03\x01\x02\x00garbage\r\n".to_vec()),
        (
            "a broken v1 line",
            b"PROXY TCP4 203.0.113.7 nonsense 1 2\r\n".to_vec(),
        ),
        (
            "a v1 line over 107 bytes",
            [b"PROXY TCP4 ".as_slice(), &[b'7'; 120], b"\r\n"].concat(),
        ),
        ("a v2 header of another version", broken_v2),
    ];
    for (what, preface) in cases {
        assert_eq!(ask(s.addr, &preface, &[]).await, None, "{what}");
    }
    // A client that says nothing is closed after client_header_timeout.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(EXCHANGE_LIMIT, silent.read(&mut buf))
        .await
        .expect("a silent connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    // None of them reached the origin; a good one does, and is the first.
    assert_eq!(s.seen.count(), 0);
    assert_eq!(ask(s.addr, &v1("203.0.113.7:1"), &[]).await, Some(200));
    assert_eq!(s.seen.count(), 1);
    // Each closed connection was counted (a balancer not sending the header
    // shows in the metrics, not only in debug logs); the good one was not.
    let errors = s
        .metric("switchyard_proxy_protocol_errors_total{", &[])
        .await;
    assert_eq!(errors, 6.0, "5 broken prefaces and the silent client");
}

#[tokio::test]
async fn proxy_protocol_comes_before_tls() {
    let pki = Pki::new("proxy-tls");
    let leaf = pki.leaf("site", &["site.test"]);
    let listener = format!(
        "proxy_protocol = true\n[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        leaf.cert.display(),
        leaf.key.display()
    );
    let s = site(&listener, "").await;
    let fut = async {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(&v2("203.0.113.44:5555", &[])).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(any_cert_client(H1))
            .connect(ServerName::try_from("site.test").unwrap(), tcp)
            .await
            .expect("TLS handshake after the PROXY header");
        let mut tx = common::tls::h1(tls).await;
        let req = http::Request::get("/x")
            .header("host", "site.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        tx.send_request(req).await.expect("response").status()
    };
    let status = tokio::time::timeout(EXCHANGE_LIMIT, fut).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(s.seen.last("x-real-ip").as_deref(), Some("203.0.113.44"));
    assert_eq!(s.seen.last("x-forwarded-proto").as_deref(), Some("https"));
    // Without the header the ClientHello is garbage: closed, nothing forwarded.
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let handshake = tokio_rustls::TlsConnector::from(any_cert_client(H1))
        .connect(ServerName::try_from("site.test").unwrap(), tcp);
    let r = tokio::time::timeout(EXCHANGE_LIMIT, handshake)
        .await
        .unwrap();
    assert!(r.is_err(), "a handshake without the header fails");
    assert_eq!(s.seen.count(), 1);
}

// ----- X-Forwarded-For -----

#[tokio::test]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    // Loopback is not trusted here; without trusted_proxies nothing is.
    for listener in ["trusted_proxies = [\"10.0.0.0/8\"]", ""] {
        let s = site(
            listener,
            "set_headers = { \"X-Client\" = \"$remote_addr\" }",
        )
        .await;
        let spoof = [
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Real-IP", "203.0.113.9"),
        ];
        assert_eq!(ask(s.addr, b"", &spoof).await, Some(200));
        assert_eq!(s.seen.last("x-real-ip").as_deref(), Some("127.0.0.1"));
        assert_eq!(s.seen.last("x-client").as_deref(), Some("127.0.0.1"));
        // The client's header is passed on, with the peer appended.
        assert_eq!(
            s.seen.last("x-forwarded-for").as_deref(),
            Some("203.0.113.9, 127.0.0.1")
        );
        let lines = s.log_lines(1).await;
        assert!(lines[0].contains("\"client\":\"127.0.0.1:"), "{}", lines[0]);
    }
}

#[tokio::test]
async fn a_trusted_peer_names_the_right_most_untrusted_hop() {
    let s = site(
        "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]",
        "set_headers = { \"X-Client\" = \"$remote_addr\" }",
    )
    .await;
    let xff = [("X-Forwarded-For", "198.51.100.1, 203.0.113.5, 10.1.1.1")];
    assert_eq!(ask(s.addr, b"", &xff).await, Some(200));
    assert_eq!(s.seen.last("x-real-ip").as_deref(), Some("203.0.113.5"));
    assert_eq!(s.seen.last("x-client").as_deref(), Some("203.0.113.5"));
    // HAProxy's forwardfor: the hop this proxy heard from is appended.
    assert_eq!(
        s.seen.last("x-forwarded-for").as_deref(),
        Some("198.51.100.1, 203.0.113.5, 10.1.1.1, 127.0.0.1")
    );
    let lines = s.log_lines(1).await;
    assert!(
        lines[0].contains("\"client\":\"203.0.113.5:0\""),
        "{}",
        lines[0]
    );
    // Every hop trusted: the left-most; an unreadable entry: the last trusted one.
    for (header, client) in [
        ("10.0.0.7, 10.0.0.8", "10.0.0.7"),
        ("203.0.113.5, unknown, 10.0.0.9", "10.0.0.9"),
    ] {
        assert_eq!(
            ask(s.addr, b"", &[("X-Forwarded-For", header)]).await,
            Some(200)
        );
        assert_eq!(
            s.seen.last("x-real-ip").as_deref(),
            Some(client),
            "{header}"
        );
    }
}

#[tokio::test]
async fn the_peer_that_proxy_protocol_names_is_the_one_trusted_or_not() {
    let s = site(
        "proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]",
        "",
    )
    .await;
    let xff = [("X-Forwarded-For", "203.0.113.5")];
    // The balancer says the request came from a trusted proxy: its header counts.
    assert_eq!(ask(s.addr, &v1("10.0.0.2:999"), &xff).await, Some(200));
    assert_eq!(s.seen.last("x-real-ip").as_deref(), Some("203.0.113.5"));
    assert_eq!(
        s.seen.last("x-forwarded-for").as_deref(),
        Some("203.0.113.5, 10.0.0.2")
    );
    // From anyone else (the loopback socket itself included), it does not.
    assert_eq!(ask(s.addr, &v1("192.0.2.9:999"), &xff).await, Some(200));
    assert_eq!(s.seen.last("x-real-ip").as_deref(), Some("192.0.2.9"));
}

// ----- allow / deny -----

#[tokio::test]
async fn allow_and_deny_for_ipv4_and_ipv6_deny_winning_and_counted() {
    let s = site(
        "proxy_protocol = true",
        "allow = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n\
         deny = [\"10.1.2.0/24\", \"2001:db8:bad::/48\"]",
    )
    .await;
    let cases = [
        ("10.9.9.9:1", 200),
        ("10.1.2.3:1", 403),
        ("10.1.3.1:1", 200),
        ("192.0.2.7:1", 200),
        ("192.0.2.8:1", 403),
        ("[2001:db8::1]:1", 200),
        ("[2001:db8:bad::1]:1", 403),
        ("[2001:db9::1]:1", 403),
        // An IPv4-mapped IPv6 client matches the IPv4 rules.
        ("[::ffff:10.9.9.9]:1", 200),
        ("[::ffff:10.1.2.3]:1", 403),
    ];
    let mut refused = 0;
    for (src, status) in cases {
        assert_eq!(ask(s.addr, &v1(src), &[]).await, Some(status), "{src}");
        assert_eq!(
            ask(s.addr, &v2(src, &[]), &[]).await,
            Some(status),
            "{src} (v2)"
        );
        if status == 403 {
            refused += 2;
        }
    }
    // Refused requests never reach the origin, and are counted.
    assert_eq!(s.seen.count(), 2 * cases.len() - refused);
    assert_eq!(s.denied().await, refused as f64);
    // And logged like other requests.
    let lines = s.log_lines(2 * cases.len()).await;
    assert!(lines
        .iter()
        .any(|l| l.contains("\"client\":\"10.1.2.3:1\"") && l.contains("\"status\":403")));
}

#[tokio::test]
async fn listener_rules_judge_real_loopback_sources_routed_or_not() {
    let s = site("deny = [\"127.0.0.3\", \"::1\"]", "").await;
    let from = |a: &str| Some(a.parse::<SocketAddr>().unwrap());
    assert_eq!(
        ask_from(from("127.0.0.2:0"), s.addr, b"", &[]).await,
        Some(200)
    );
    assert_eq!(
        ask_from(from("127.0.0.3:0"), s.addr, b"", &[]).await,
        Some(403)
    );
    assert_eq!(s.seen.count(), 1);
    assert_eq!(s.seen.last("x-real-ip").as_deref(), Some("127.0.0.2"));

    // IPv6 loopback, on a listener of its own, with an unrouted path: a listener's
    // rules come before the 404.
    let (origin, seen) = recording_origin().await;
    let text = format!(
        "[[listener]]\nname = \"v6\"\nlisten = \"[::1]:0\"\nallow = [\"::1\"]\n\n\
         [[listener]]\nname = \"v6-denied\"\nlisten = \"[::1]:0\"\ndeny = [\"::/0\"]\n\n\
         [[route]]\npath = \"/x\"\nupstream = \"o\"\n\n[upstream.o]\nservers = [{{ addr = \"{origin}\" }}]\n"
    );
    let running = common::start_proxy(&text).await;
    let (v6, denied) = (
        running.addr("v6").unwrap(),
        running.addr("v6-denied").unwrap(),
    );
    assert_eq!(ask(v6, b"", &[]).await, Some(200));
    assert_eq!(seen.last("x-real-ip").as_deref(), Some("::1"));
    assert_eq!(ask(denied, b"", &[]).await, Some(403));
    let mut s404 = TcpStream::connect(denied).await.unwrap();
    s404.write_all(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s404).await.status, 403);
    assert_eq!(seen.count(), 1);
}

// ----- max_connections -----

/// A keep-alive connection that has been served once.
async fn served(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let r = tokio::time::timeout(EXCHANGE_LIMIT, read_response(&mut s))
        .await
        .expect("served in time");
    assert_eq!(r.status, 200);
    s
}

/// A connection that has sent a request and waits for its answer.
async fn waiting(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("the kernel's backlog takes it");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    s
}

/// Whether `s` gets a byte within a short, bounded wait (for "not answered yet").
async fn answered_soon(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(300), s.peek(&mut b)).await {
        Ok(Ok(n)) => n > 0,
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

async fn answer_of(mut s: TcpStream) -> TcpStream {
    let r = tokio::time::timeout(EXCHANGE_LIMIT, read_response(&mut s))
        .await
        .expect("answered once a slot freed");
    assert_eq!(r.status, 200);
    s
}

#[tokio::test]
async fn max_connections_holds_the_next_connection_until_one_closes_and_reloads_in_place() {
    let s = site("max_connections = 2", "").await;
    let first = served(s.addr).await;
    let second = served(s.addr).await;
    let mut third = waiting(s.addr).await;
    assert!(
        !answered_soon(&mut third).await,
        "the third connection waits"
    );
    assert_eq!(s.seen.count(), 2, "and its request is not read");
    drop(first);
    let third = answer_of(third).await;
    assert_eq!(s.seen.count(), 3);

    // A reload raising the limit lets the next one in without a close; the open
    // ones are still counted (the count belongs to the listener, not the file).
    let mut fourth = waiting(s.addr).await;
    assert!(!answered_soon(&mut fourth).await);
    let cfg = |max: u32| {
        let origin = s.running.shared.config().upstreams[0].servers[0].addr;
        Config::parse(
            std::path::Path::new("<test>"),
            &config_text(&s.log, origin, &format!("max_connections = {max}"), ""),
        )
        .unwrap()
    };
    s.running.control.apply(cfg(3)).expect("reload");
    let fourth = answer_of(fourth).await;
    let mut fifth = waiting(s.addr).await;
    assert!(
        !answered_soon(&mut fifth).await,
        "three are open: the fifth waits"
    );
    // Lowered below what is open: nothing is closed, nothing more comes in.
    s.running.control.apply(cfg(1)).expect("reload");
    drop(second);
    assert!(
        !answered_soon(&mut fifth).await,
        "two still open, one allowed"
    );
    drop(third);
    assert!(
        !answered_soon(&mut fifth).await,
        "one still open, one allowed"
    );
    drop(fourth);
    answer_of(fifth).await;
}
