//! Helpers shared by the integration tests: sample origins and the proxy started
//! in-process on 127.0.0.1:0, a small HTTP/1.1 client and a raw-TCP exchange helper.
#![allow(dead_code)]
// Shared by every test crate: its items are `pub` for the crates that include it.
#![allow(unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use switchyard::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for any single exchange in these tests, so a hang fails instead of
/// stalling the suite.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// A proxy started from a configuration, with the origins it points at.
pub struct Proxy {
    pub running: Running,
    /// Address of the listener named "public".
    pub addr: SocketAddr,
    pub origins: Vec<SocketAddr>,
}

impl Proxy {
    /// Address of the listener `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.running
            .addr(name)
            .unwrap_or_else(|| panic!("no listener named {name:?}"))
    }
}

/// Starts one sample origin per name on 127.0.0.1:0 and returns their addresses, in
/// order. The origins live until the test's runtime ends.
pub async fn start_origins(names: &[&str]) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for name in names {
        let (addr, _task) = switchyard::origin::spawn(loopback0(), name)
            .await
            .expect("origin binds");
        addrs.push(addr);
    }
    addrs
}

pub fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `[[listener]]` blocks on 127.0.0.1:0 for each name.
pub fn listeners(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("[[listener]]\nname = \"{n}\"\nlisten = \"127.0.0.1:0\"\n\n"))
        .collect()
}

/// An `[upstream.NAME]` table with the given (address, weight) servers.
pub fn upstream(name: &str, servers: &[(SocketAddr, u32)]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}"))
        .collect();
    format!("[upstream.{name}]\nservers = [{}]\n\n", list.join(", "))
}

/// Worker threads of the proxies the tests start: more than one, so that every
/// suite runs the binary's multi-worker path (shared listening sockets, the
/// handoff, one connection pool per worker).
pub const WORKERS: usize = 2;

/// Validates `toml` and starts the proxy with `WORKERS` workers, as the binary does.
pub async fn start_proxy(toml: &str) -> Running {
    start_proxy_workers(toml, WORKERS).await
}

/// As `start_proxy`, with `workers` worker threads.
pub async fn start_proxy_workers(toml: &str, workers: usize) -> Running {
    let config = Config::parse(Path::new("<test>"), toml)
        .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}\n---\n{toml}"));
    start_config(config, workers)
}

/// Starts the proxy for a validated configuration, as the binary does.
pub fn start_config(config: Config, workers: usize) -> Running {
    switchyard::start(config, workers).expect("proxy starts")
}

/// A "public" listener on 127.0.0.1:0 and one catch-all route to an upstream of the
/// single server `origin`.
pub fn one_origin_config(origin: SocketAddr) -> String {
    format!(
        r#"
[[listener]]
name = "public"
listen = "127.0.0.1:0"

[[route]]
path = "/"
upstream = "origin"

[upstream.origin]
servers = [{{ addr = "{origin}" }}]
"#
    )
}

/// Starts the proxy with `one_origin_config(origin)`; returns it and the address of
/// its "public" listener.
pub async fn start_proxy_to(origin: SocketAddr) -> (Running, SocketAddr) {
    let running = start_proxy(&one_origin_config(origin)).await;
    let addr = running.addr("public").expect("listener public exists");
    (running, addr)
}

/// Starts one origin per name, then the proxy with a "public" listener and the
/// configuration `body`, in which `@0`, `@1`, … stand for the origins' addresses.
pub async fn setup(origin_names: &[&str], body: &str) -> Proxy {
    setup_listeners(origin_names, &["public"], body).await
}

/// As `setup`, with the given listener names (the first one's address is `addr`).
pub async fn setup_listeners(origin_names: &[&str], listener_names: &[&str], body: &str) -> Proxy {
    let origins = start_origins(origin_names).await;
    let mut text = body.to_owned();
    // Highest index first so "@1" does not eat the start of "@10".
    for (i, a) in origins.iter().enumerate().rev() {
        text = text.replace(&format!("@{i}"), &a.to_string());
    }
    let toml = format!("{}{text}", listeners(listener_names));
    let running = start_proxy(&toml).await;
    let addr = running.addr(listener_names[0]).expect("listener bound");
    Proxy {
        running,
        addr,
        origins,
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    /// Reads the whole of `res`.
    pub async fn read(res: http::Response<hyper::body::Incoming>) -> Resp {
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.expect("response body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// The `x-origin` header: which sample origin answered.
    pub fn origin(&self) -> &str {
        self.headers
            .get("x-origin")
            .map(|v| v.to_str().expect("ascii x-origin"))
            .unwrap_or("<none>")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// The request line the sample origin reports (`GET /x?y HTTP/1.1`).
    pub fn origin_request_line(&self) -> &str {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix("request: "))
            .unwrap_or_else(|| panic!("no request line in body:\n{}", self.body))
    }

    /// Every value of header `name` (lower case) the sample origin reports it received.
    pub fn seen(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{name}: ");
        self.body
            .lines()
            .skip_while(|l| !l.starts_with("request: "))
            .skip(1)
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect()
    }

    /// The single value of header `name` the origin received, or `None`.
    pub fn seen_one(&self, name: &str) -> Option<&str> {
        let v = self.seen(name);
        assert!(v.len() <= 1, "origin saw {name} {} times: {v:?}", v.len());
        v.first().copied()
    }
}

/// One HTTP/1.1 client connection to the proxy, for several requests in a row.
/// Like a browser or a pool, it opens a new connection when the proxy said the
/// last response was the connection's last (`Connection: close`, as after
/// `keepalive_requests` responses); any other close fails the next request.
pub struct Conn {
    tx: http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    /// The last response said `Connection: close`.
    closing: bool,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let tx = control::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connection to proxy: {e}"));
        Conn {
            tx,
            addr,
            closing: false,
        }
    }

    /// Sends `method path` with `headers` (a `Host` of the proxy's address is added
    /// unless given) and an optional body, and reads the whole response.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path);
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            b = b.header("host", self.addr.to_string());
        }
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let body = Full::new(Bytes::copy_from_slice(body.unwrap_or_default()));
        let req = b.body(body).expect("request");
        if self.closing {
            *self = Conn::open(self.addr).await;
        }
        let fut = async {
            self.tx.ready().await.expect("connection ready");
            let res = self.tx.send_request(req).await.expect("response head");
            Resp::read(res).await
        };
        let res = tokio::time::timeout(EXCHANGE_LIMIT, fut)
            .await
            .expect("exchange finished in time");
        self.closing = control::says_close(&res.headers);
        res
    }
}

/// One request on a fresh connection.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    Conn::open(addr)
        .await
        .send(method, path, headers, body)
        .await
}

/// `GET path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    send(addr, "GET", path, &[], None).await
}

/// `GET path` with a `Host` header, on a fresh connection.
pub async fn get_host(addr: SocketAddr, host: &str, path: &str) -> Resp {
    send(addr, "GET", path, &[("host", host)], None).await
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResp {
    pub status: u16,
    /// The head, status line included, as sent.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResp {
    /// Whether the head says `Connection: close`.
    pub fn says_close(&self) -> bool {
        self.head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("connection: close"))
    }
}

/// The value of the first Prometheus sample of `name` in `text` whose labels
/// include all of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_part, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let has = |k: &str, v: &str| label_part.contains(&format!("{k}=\"{v}\""));
        labels
            .iter()
            .all(|(k, v)| has(k, v))
            .then(|| value.trim().parse().expect("sample value"))
    })
}

/// Writes `request` as is and reads one response: the head, then a body of its
/// `Content-Length` (or up to EOF without one).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResp {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // The server may answer (and close) before reading everything, as with an
        // oversized head; what matters is the answer.
        let _ = s.write_all(request).await;
        read_response(&mut s).await
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("raw exchange finished in time")
}

/// Reads one HTTP/1.1 response from `s`.
pub async fn read_response(s: &mut TcpStream) -> RawResp {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await.expect("read response head");
        assert!(
            n > 0,
            "connection closed before a full response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let length = head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().expect("numeric content-length"))
    });
    let mut body = buf[head_end..].to_vec();
    match length {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut chunk).await.expect("read response body");
                assert!(n > 0, "connection closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        },
    }
    RawResp { status, head, body }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An address on which nothing listens: bound, then released.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind(loopback0()).await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    drop(l);
    addr
}

/// An origin that counts the connections it accepted. When `barrier` is set, each
/// request waits on it, so that a known number of requests are in flight at once.
#[allow(dead_code)]
pub async fn counting_origin(
    barrier: Option<std::sync::Arc<tokio::sync::Barrier>>,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind(loopback0()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let barrier = barrier.clone();
                    async move {
                        if let Some(b) = barrier {
                            b.wait().await;
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}
pub mod control;
pub mod dns;
pub mod redis_server;
pub mod replica;
pub mod telegram;
pub mod tls;
pub mod upstream;

/// A directory under the system's temp dir, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "switchyard-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    /// The directory's configuration file.
    pub fn file(&self) -> std::path::PathBuf {
        self.path("config.toml")
    }

    /// Writes `text` to `name` in the directory (write, then rename over, as editors
    /// do) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.path(name);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write file");
        std::fs::rename(&tmp, &path).expect("rename file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An origin that answers a protocol switch to `token` with 101 and then echoes
/// every byte, but only when the lower-cased request head contains every string of
/// `required`; anything else gets 400.
pub async fn upgrade_echo_origin(
    token: &'static str,
    required: &'static [&'static str],
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while find(&buf, b"\r\n\r\n").is_none() {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                if !required.iter().all(|r| head.contains(r)) {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let switch = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {token}\r\n\r\n"
                );
                let _ = s.write_all(switch.as_bytes()).await;
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&chunk[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}
