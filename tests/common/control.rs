//! A controllable origin and a load generator, for the health tests.
//!
//! `Origin` is an HTTP/1.1 server on 127.0.0.1 that a test steers while the proxy is
//! using it: it can be stopped (listener closed and every open connection dropped,
//! so that connecting refuses) and restarted on the same port, made to answer with a
//! given status, to be slow, to hang up after reading a request or to never answer,
//! separately for `/health` and for everything else; a request with `?delay=D` is
//! answered after D whatever the mode. It logs every request it
//! receives (time, method, path and the `x-req` header), so a test can count what
//! reached it and when.
//!
//! A stopped origin keeps its port reserved: a socket stays bound to it (with
//! `SO_REUSEPORT`, as the listener is) without listening. The kernel refuses
//! connections to a bound port nobody listens on, and does not hand a bound port
//! to another socket binding port 0 or connecting out, so a concurrently running
//! test cannot take the port while it is meant to refuse. That is why these tests
//! need no `PORTS` lock (as in tests/shutdown.rs): the port never becomes free.
//!
//! In `Mode::Hold` an origin holds every request it reads until the test lets it go
//! (`release`), in the order they arrived, and keeps count of how many it holds at
//! once (`held`, `max_held`): what the queue tests need to fill a server to its
//! `max_conns` and to free its slots one at a time.
//!
//! `Client` is a keep-alive HTTP/1.1 client that reports failures instead of
//! panicking, and `Load` runs several of them in a loop, recording each answer.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Upper bound on any one exchange, so that a hang fails a test instead of stalling it.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// How an origin answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200; `/health` answers `ok`, other paths the origin's name.
    Normal,
    /// This status (after reading the whole request body).
    Status(u16),
    /// As `Normal`, after this delay before the response head.
    Slow(Duration),
    /// Reads the request and its body, then closes the connection without a word.
    Reset,
    /// Reads the request and never answers (until the connection is dropped).
    Stall,
    /// Reads the request and holds it until `Origin::release` lets it go, in the
    /// order of arrival; then answers as `Normal`.
    Hold,
}

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// When its head arrived.
    pub at: Instant,
    pub method: Method,
    pub path: String,
    /// The `x-req` header, if any.
    pub req: Option<String>,
}

impl Hit {
    pub fn is_health(&self) -> bool {
        self.path == HEALTH_PATH
    }
}

pub const HEALTH_PATH: &str = "/health";

struct Behaviour {
    requests: Mode,
    health: Mode,
}

struct Inner {
    name: String,
    behaviour: Mutex<Behaviour>,
    hits: Mutex<Vec<Hit>>,
    /// Number of hits so far, to await arrivals.
    hit_count: watch::Sender<usize>,
    /// `Mode::Hold`'s gate: one permit per request let go. The semaphore serves
    /// waiters first come, first served.
    gate: tokio::sync::Semaphore,
    /// Requests being handled now (held ones included), and the most at once.
    busy: watch::Sender<usize>,
    max_busy: std::sync::atomic::AtomicUsize,
}

/// Counts a request as being handled until dropped (however the handling ends).
struct Busy(Arc<Inner>);

impl Busy {
    fn new(inner: &Arc<Inner>) -> Busy {
        inner.busy.send_modify(|n| *n += 1);
        let now = *inner.busy.borrow();
        inner
            .max_busy
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        Busy(Arc::clone(inner))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.send_modify(|n| *n -= 1);
    }
}

pub struct Origin {
    port: Port,
    inner: Arc<Inner>,
}

/// A socket bound with the options every socket of a test server's port uses.
pub fn port_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    Ok(s)
}

/// While serving: the accept loop and the connection tasks. While closed: the
/// socket that keeps the port.
enum Run {
    Serving {
        accept: JoinHandle<()>,
        conns: Arc<Mutex<JoinSet<()>>>,
    },
    Closed {
        _parked: TcpSocket,
    },
}

/// What serves a test server's port: HTTP/1.1 with its handler (`serve_http1`).
type Serve = Box<dyn Fn(TcpSocket) -> io::Result<Run> + Send + Sync>;

/// A test server's port on 127.0.0.1: served until `close`, which stops accepting
/// and drops every open connection while keeping the port reserved (both sockets
/// use SO_REUSEPORT), so nothing else takes it and `reopen` gets it back. The
/// origins here and the Telegram tests' bots both stand on one.
pub struct Port {
    addr: SocketAddr,
    run: tokio::sync::Mutex<Run>,
    serve: Serve,
}

impl Port {
    /// Binds a port of the kernel's choosing and serves it with `handle`.
    pub fn open<F, Fut, E>(handle: F) -> Port
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let socket = port_socket(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind a port");
        let addr = socket.local_addr().expect("the port's address");
        let serve: Serve = Box::new(move |socket| serve_http1(socket, handle.clone()));
        let run = serve(socket).expect("listen");
        Port {
            addr,
            run: tokio::sync::Mutex::new(run),
            serve,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and drops every open connection (running handlers are
    /// cut short); returns once the port refuses connections, `false` if it was
    /// closed already.
    pub async fn close(&self) -> bool {
        let mut run = self.run.lock().await;
        let Run::Serving { accept, conns } = &mut *run else {
            return false;
        };
        // Reserve the port before the listener goes.
        let parked = port_socket(self.addr).expect("reserve the port");
        accept.abort();
        let _ = accept.await;
        let mut set = std::mem::take(&mut *conns.lock().unwrap());
        set.abort_all();
        while set.join_next().await.is_some() {}
        *run = Run::Closed { _parked: parked };
        true
    }

    /// Listens again on the same port; `false` if it was not closed.
    pub async fn reopen(&self) -> bool {
        let mut run = self.run.lock().await;
        if !matches!(*run, Run::Closed { .. }) {
            return false;
        }
        let socket = port_socket(self.addr).expect("rebind the port");
        // Replacing the parked socket releases it, after the new one is listening.
        *run = (self.serve)(socket).expect("listen again");
        true
    }
}

/// Serves HTTP/1.1 on `socket` with `handle` until aborted.
fn serve_http1<F, Fut, E>(socket: TcpSocket, handle: F) -> io::Result<Run>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let listener = socket.listen(1024)?;
    let conns = Arc::new(Mutex::new(JoinSet::new()));
    let conns2 = Arc::clone(&conns);
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            let mut set = conns2.lock().unwrap();
            // Reap finished connections so the set does not grow without bound.
            while set.try_join_next().is_some() {}
            set.spawn(async move {
                let svc = hyper::service::service_fn(handle);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Run::Serving { accept, conns })
}

impl Origin {
    /// Starts origin `name` on 127.0.0.1 and a port of the kernel's choosing.
    pub async fn start(name: &str) -> Origin {
        let (hit_count, _) = watch::channel(0);
        let (busy, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            behaviour: Mutex::new(Behaviour {
                requests: Mode::Normal,
                health: Mode::Normal,
            }),
            hits: Mutex::new(Vec::new()),
            hit_count,
            gate: tokio::sync::Semaphore::new(0),
            busy,
            max_busy: std::sync::atomic::AtomicUsize::new(0),
        });
        let handler = Arc::clone(&inner);
        let port = Port::open(move |req| handle(Arc::clone(&handler), req));
        Origin { port, inner }
    }

    pub fn addr(&self) -> SocketAddr {
        self.port.addr()
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Sets how every request, `/health` included, is answered.
    pub fn set(&self, mode: Mode) {
        let mut b = self.inner.behaviour.lock().unwrap();
        b.requests = mode;
        b.health = mode;
    }

    /// Sets how requests other than `/health` are answered.
    pub fn set_requests(&self, mode: Mode) {
        self.inner.behaviour.lock().unwrap().requests = mode;
    }

    /// Sets how `/health` is answered.
    pub fn set_health(&self, mode: Mode) {
        self.inner.behaviour.lock().unwrap().health = mode;
    }

    /// Closes the listener and drops every open connection; returns once the port
    /// refuses connections. The port stays reserved for `restart`.
    pub async fn stop(&self) {
        assert!(
            self.port.close().await,
            "origin {} is already stopped",
            self.name()
        );
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        assert!(
            self.port.reopen().await,
            "origin {} is not stopped",
            self.name()
        );
    }

    /// Every request received so far, in order of arrival.
    pub fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().unwrap().clone()
    }

    /// Requests other than `/health` received so far.
    pub fn requests(&self) -> usize {
        self.request_times().len()
    }

    /// `/health` requests received so far.
    pub fn health_checks(&self) -> usize {
        self.count(&Method::GET, HEALTH_PATH)
    }

    /// Requests with this method and path received so far.
    pub fn count(&self, method: &Method, path: &str) -> usize {
        self.inner
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.method == method && h.path == path)
            .count()
    }

    /// Requests per (method, path).
    pub fn counts(&self) -> HashMap<(Method, String), usize> {
        let mut m = HashMap::new();
        for h in self.inner.hits.lock().unwrap().iter() {
            *m.entry((h.method.clone(), h.path.clone())).or_default() += 1;
        }
        m
    }

    /// The `x-req` values of the requests received, in order of arrival.
    pub fn req_ids(&self) -> Vec<String> {
        self.inner
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter_map(|h| h.req.clone())
            .collect()
    }

    /// Arrival times of the requests other than `/health`.
    pub fn request_times(&self) -> Vec<Instant> {
        self.inner
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| !h.is_health())
            .map(|h| h.at)
            .collect()
    }

    /// Lets `n` held requests (`Mode::Hold`) go, the first arrived first; permits
    /// not used yet let the next ones through at once.
    pub fn release(&self, n: usize) {
        self.inner.gate.add_permits(n);
    }

    /// Requests being handled now (read and not yet answered: held ones, slow ones).
    pub fn busy(&self) -> usize {
        *self.inner.busy.borrow()
    }

    /// The most requests it was handling at once so far.
    pub fn max_busy(&self) -> usize {
        self.inner
            .max_busy
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until it has received `n` requests other than `/health`; panics after
    /// `limit`.
    pub async fn wait_requests(&self, n: usize, limit: Duration) {
        let mut rx = self.inner.hit_count.subscribe();
        let fut = async {
            while self.requests() < n {
                rx.changed().await.expect("origin alive");
            }
        };
        tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            panic!(
                "origin {}: {} requests after {limit:?}, expected {n}",
                self.name(),
                self.requests()
            )
        })
    }

    /// Waits until it is handling exactly `n` requests; panics after `limit`.
    pub async fn wait_busy(&self, n: usize, limit: Duration) {
        let mut rx = self.inner.busy.subscribe();
        let fut = async {
            while *rx.borrow_and_update() != n {
                rx.changed().await.expect("origin alive");
            }
        };
        tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            panic!(
                "origin {}: handling {} requests after {limit:?}, expected {n}",
                self.name(),
                self.busy()
            )
        })
    }

    /// Waits until a hit satisfying `pred` has been logged; returns it. Panics after
    /// `limit`.
    pub async fn wait_hit(&self, limit: Duration, pred: impl Fn(&Hit) -> bool) -> Hit {
        let mut rx = self.inner.hit_count.subscribe();
        let fut = async {
            loop {
                if let Some(h) = self.inner.hits.lock().unwrap().iter().find(|h| pred(h)) {
                    return h.clone();
                }
                rx.changed().await.expect("origin alive");
            }
        };
        tokio::time::timeout(limit, fut)
            .await
            .unwrap_or_else(|_| panic!("origin {}: expected request within {limit:?}", self.name()))
    }
}

/// The service returning an error makes hyper close the connection without answering.
#[derive(Debug)]
struct HangUp;

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hanging up on purpose")
    }
}

impl std::error::Error for HangUp {}

async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, HangUp> {
    let path = req.uri().path().to_owned();
    let health = path == HEALTH_PATH;
    // `?delay=250ms`, as the sample origin (src/origin.rs) takes it: this request
    // alone is slow, while the origin's mode stays what the others get.
    let delay = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("delay="))
            .and_then(|d| humantime::parse_duration(d).ok())
    });
    let hit = Hit {
        at: Instant::now(),
        method: req.method().clone(),
        path,
        req: req
            .headers()
            .get("x-req")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let _busy = Busy::new(&inner);
    {
        let mut hits = inner.hits.lock().unwrap();
        hits.push(hit);
        let n = hits.len();
        inner.hit_count.send_replace(n);
    }
    let mode = {
        let b = inner.behaviour.lock().unwrap();
        if health {
            b.health
        } else {
            b.requests
        }
    };
    // Read the whole request body first, as a real application would.
    let received = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => return Err(HangUp),
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let status = match mode {
        Mode::Normal => StatusCode::OK,
        Mode::Status(s) => StatusCode::from_u16(s).expect("valid status"),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK
        }
        Mode::Reset => return Err(HangUp),
        Mode::Stall => std::future::pending().await,
        Mode::Hold => {
            inner.gate.acquire().await.expect("gate open").forget();
            StatusCode::OK
        }
    };
    let body = if health {
        "ok\n".to_owned()
    } else if received > 0 {
        format!("{} received {received} bytes\n", inner.name)
    } else {
        format!("{}\n", inner.name)
    };
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        "x-origin",
        http::HeaderValue::from_str(&inner.name).expect("ascii origin name"),
    );
    Ok(res)
}

/// A port that refuses connections for as long as the returned socket lives: bound,
/// never listening (so no other socket can be given it meanwhile).
pub fn refusing_port() -> (SocketAddr, TcpSocket) {
    let s = port_socket(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    (s.local_addr().expect("local address"), s)
}

// ---------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------

/// An answer as the client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The `x-origin` header: which origin answered (`None` for the proxy's own answers).
    pub fn origin(&self) -> Option<&str> {
        self.headers.get("x-origin").and_then(|v| v.to_str().ok())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Whether a response's headers say `Connection: close`: the connection's last
/// response, after which a client opens a new one.
pub fn says_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// A keep-alive HTTP/1.1 client of one address; reconnects after a failure or a
/// `Connection: close`.
pub struct Client {
    addr: SocketAddr,
    tx: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, tx: None }
    }

    /// Sends one request and reads the whole answer; `Err` describes a failure to
    /// get one (the connection is then dropped).
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, String> {
        let res = tokio::time::timeout(EXCHANGE_LIMIT, self.exchange(method, path, headers, body))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {EXCHANGE_LIMIT:?}")));
        if res.is_err() {
            self.tx = None;
        }
        res
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, String> {
        self.send("GET", path, &[], None).await
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, String> {
        if self.tx.as_ref().is_none_or(|tx| tx.is_closed()) {
            self.tx = Some(connect(self.addr).await?);
        }
        let tx = self.tx.as_mut().expect("connected");
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path)
            .header("host", self.addr.to_string());
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let req = b
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .expect("request");
        tx.ready().await.map_err(|e| format!("ready: {e}"))?;
        let res = tx
            .send_request(req)
            .await
            .map_err(|e| format!("response head: {e}"))?;
        let (parts, body) = res.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| format!("response body: {e}"))?
            .to_bytes();
        // The proxy said this was the connection's last response (as after
        // `keepalive_requests`): the next request opens a new one, as clients do,
        // rather than racing the close.
        if says_close(&parts.headers) {
            self.tx = None;
        }
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// Opens an HTTP/1.1 client connection to `addr` (its driver runs in a task of its
/// own); `Err` says which step failed.
pub async fn connect(addr: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// One request of a load run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent and when its answer (or failure) came.
    pub sent: Instant,
    pub done: Instant,
    pub result: Result<(StatusCode, Option<String>), String>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        matches!(self.result, Ok((s, _)) if s == StatusCode::OK)
    }

    /// The origin that answered, if one did.
    pub fn origin(&self) -> Option<&str> {
        match &self.result {
            Ok((_, o)) => o.as_deref(),
            Err(_) => None,
        }
    }
}

/// `clients` clients each sending `GET path` in a loop, `pace` apart, until `finish`.
pub struct Load {
    pub started: Instant,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize, path: &str, pace: Duration) -> Load {
        let (stop, stop_rx) = watch::channel(false);
        let tasks = (0..clients)
            .map(|_| {
                let stop_rx = stop_rx.clone();
                let path = path.to_owned();
                tokio::spawn(async move {
                    let mut client = Client::new(addr);
                    let mut samples = Vec::new();
                    while !*stop_rx.borrow() {
                        let sent = Instant::now();
                        let result = client
                            .get(&path)
                            .await
                            .map(|r| (r.status, r.origin().map(str::to_owned)));
                        samples.push(Sample {
                            sent,
                            done: Instant::now(),
                            result,
                        });
                        if !pace.is_zero() {
                            tokio::time::sleep(pace).await;
                        }
                    }
                    samples
                })
            })
            .collect();
        Load {
            started: Instant::now(),
            stop,
            tasks,
        }
    }

    /// Stops the clients and returns every sample, ordered by completion time.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.send_replace(true);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.expect("load client"));
        }
        all.sort_by_key(|s| s.done);
        all
    }
}

/// Polls `cond` every few milliseconds until it holds; returns how long that took,
/// or `None` after `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
