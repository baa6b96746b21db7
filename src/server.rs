//! Listeners: bind, accept, serve each connection with hyper-util's auto builder
//! (HTTP/1.1 and HTTP/2 prior knowledge on one port, or TLS with ALPN choosing
//! between them), and drain on shutdown.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::control::Control;
use crate::proxy::{ClientInfo, ProxyService};
use crate::state::{ListenerId, Shared};
use crate::tls::{self, Alpn};

/// nginx's `client_header_timeout`. hyper also applies it while a keep-alive
/// connection waits for its next request, so it doubles as the idle timeout.
pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `http2_max_concurrent_streams`.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// How long in-flight requests may take to finish after a shutdown signal.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pending connections the kernel queues per listening socket (nginx's `backlog`
/// default on Linux is 511; bursts of new bot connections deserve more).
const LISTEN_BACKLOG: i32 = 1024;
/// Pause after a failed accept (out of file descriptors, usually) so the loop does
/// not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Largest request head accepted; bigger ones get 431 from hyper. nginx's
/// `large_client_header_buffers` allows 4 × 8 KiB.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// A started proxy: its listeners accept until `shutdown`. (Between `prepare` and
/// `listen` it is not listening yet, and `/readyz` says so.)
pub struct Running {
    pub shared: Arc<Shared>,
    /// Listener changes and reloads at runtime.
    pub control: Arc<Control>,
    /// The admin API's bound address, when `[admin]` is configured.
    pub admin: Option<SocketAddr>,
    /// `Some(drain)` tells every worker to stop accepting and drain for that long.
    stop: watch::Sender<Option<Duration>>,
    workers: Vec<Worker>,
}

/// One worker: a set of accept loops on one runtime, with its own graceful drain.
struct Worker {
    /// Fires once this worker's accept loops have returned.
    closed: oneshot::Receiver<()>,
    done: WorkerDone,
}

enum WorkerDone {
    Task(JoinHandle<bool>),
    Thread(std::thread::JoinHandle<bool>),
}

/// Binds every listener of `config` and serves on the calling runtime, as one
/// worker. Tests and embedders use this; the binary uses `start_threads`.
pub async fn start(config: Config) -> io::Result<Running> {
    let running = prepare(config).await?;
    running.listen()?;
    Ok(running)
}

/// As `start`, but stops short of binding the listeners: the admin listener and
/// the health checks run, `/readyz` answers 503 until `Running::listen`.
pub async fn prepare(config: Config) -> io::Result<Running> {
    let shared = Shared::try_new(config.clone(), 1)?;
    shared.start_health(tokio::runtime::Handle::current());
    let (stop, stop_rx) = watch::channel(None);
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let control = Control::new(Arc::clone(&shared), vec![cmd_tx], &config);
    let admin = match &config.admin {
        Some(a) => Some(crate::admin::start(
            a.listen,
            Arc::clone(&control),
            stop_rx.clone(),
            &tokio::runtime::Handle::current(),
        )?),
        None => None,
    };
    spawn_upkeep(&shared, &tokio::runtime::Handle::current(), stop_rx.clone());
    let (closed_tx, closed) = oneshot::channel();
    let task = tokio::spawn(worker(
        cmd_rx,
        Arc::clone(&shared),
        None,
        stop_rx,
        closed_tx,
    ));
    Ok(Running {
        shared,
        control,
        admin,
        stop,
        workers: vec![Worker {
            closed,
            done: WorkerDone::Task(task),
        }],
    })
}

/// Binds every listener and runs each worker on its own thread with a
/// single-threaded runtime, as nginx runs worker processes: a request never changes
/// thread, and the upstream connections it uses belong to its worker. The workers
/// share each listening socket, as nginx's do by default: whichever worker is least
/// busy accepts a new connection first. (`SO_REUSEPORT` would hash connections to
/// workers regardless of load; measured here, a lopsided split of 50 keep-alive
/// connections cost up to 30 % of throughput.) Must be called outside a
/// runtime's worker context or from a current-thread runtime.
pub fn start_threads(config: Config, workers: usize) -> io::Result<Running> {
    let workers = workers.max(1);
    let shared = Shared::try_new(config.clone(), workers)?;
    let (stop, stop_rx) = watch::channel(None);
    let background = health_runtime(stop_rx.clone())?;
    shared.start_health(background.clone());
    spawn_upkeep(&shared, &background, stop_rx.clone());
    let (cmd_txs, cmd_rxs): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
    let control = Control::new(Arc::clone(&shared), cmd_txs, &config);
    let admin = match &config.admin {
        Some(a) => Some(crate::admin::start(
            a.listen,
            Arc::clone(&control),
            stop_rx.clone(),
            &background,
        )?),
        None => None,
    };
    let (senders, mut receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
    let handoff = Arc::new(Handoff {
        open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
        inboxes: senders.into(),
    });
    let mut handles = Vec::new();
    for (index, cmds) in cmd_rxs.into_iter().enumerate() {
        let (closed_tx, closed) = oneshot::channel();
        let handoff = Some((Arc::clone(&handoff), index, receivers.remove(0)));
        let shared = Arc::clone(&shared);
        let stop_rx = stop_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("switchyard-worker-{index}"))
            .spawn(move || {
                crate::upstream::set_worker_shard(index);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a worker runtime starts");
                rt.block_on(worker(cmds, shared, handoff, stop_rx, closed_tx))
            })?;
        handles.push(Worker {
            closed,
            done: WorkerDone::Thread(thread),
        });
    }
    let running = Running {
        shared,
        control,
        admin,
        stop,
        workers: handles,
    };
    running.listen()?;
    Ok(running)
}

/// Folds histogram samples into buckets now and then, so an unscraped proxy's
/// metrics stay small.
fn spawn_upkeep(
    shared: &Arc<Shared>,
    runtime: &tokio::runtime::Handle,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    if !shared.metrics.enabled() {
        return;
    }
    let metrics = Arc::clone(&shared.metrics);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(crate::observe::metrics::UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tick.tick() => metrics.upkeep(),
            }
        }
    });
}

/// A thread with its own runtime for the health checkers and the admin API, so
/// checks keep their rhythm whatever the workers' load; it ends when the proxy
/// stops.
fn health_runtime(
    mut stop: watch::Receiver<Option<Duration>>,
) -> io::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("switchyard-health".into())
        .spawn(move || rt.block_on(stopped(&mut stop)))?;
    Ok(handle)
}

pub(crate) fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(s.into())
}

/// Runs one worker: starts accept loops as `Control` asks, until told to stop; then
/// drains its connections.
async fn worker(
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
    handoff: Option<(Arc<Handoff>, usize, mpsc::UnboundedReceiver<Accepted>)>,
    mut stop: watch::Receiver<Option<Duration>>,
    closed: oneshot::Sender<()>,
) -> bool {
    let (handoff, inbox) = match handoff {
        Some((h, me, rx)) => (Some((h, me)), Some(rx)),
        None => (None, None),
    };
    let serve = Serve {
        shared,
        builders: Arc::new(Builders::new()),
        gracefuls: Arc::default(),
        handoff,
    };
    let mut loops = Vec::new();
    if let Some(rx) = inbox {
        loops.push(tokio::spawn(inbox_loop(rx, serve.clone(), stop.clone())));
    }
    let mut open = true;
    let for_loops = stop.clone();
    let drain = loop {
        tokio::select! {
            biased;
            d = stop.wait_for(Option::is_some) => {
                // `Err`: the proxy was dropped without a shutdown: stop at once.
                break d.map(|d| d.unwrap_or_default()).unwrap_or_default();
            }
            cmd = cmds.recv(), if open => match cmd {
                Some(Cmd::Listen { id, generation, socket, retire }) => {
                    match TcpListener::from_std(socket) {
                        Ok(l) => loops.push(tokio::spawn(accept_loop(
                            l,
                            (id, generation),
                            serve.clone(),
                            for_loops.clone(),
                            retire,
                        ))),
                        Err(e) => tracing::error!(error = %e, "worker cannot use a listening socket"),
                    }
                }
                None => open = false,
            },
        }
    };
    for l in loops {
        let _ = l.await;
    }
    let _ = closed.send(());
    let gracefuls: Vec<_> = serve.take_gracefuls();
    drop(serve);
    let all = drain_all(
        gracefuls
            .into_iter()
            .filter_map(|g| Arc::try_unwrap(g).ok()),
    );
    tokio::time::timeout(drain, all).await.is_ok()
}

/// Drains every listener's connections at once.
async fn drain_all(gracefuls: impl Iterator<Item = GracefulShutdown>) {
    let mut set = tokio::task::JoinSet::new();
    for g in gracefuls {
        set.spawn(g.shutdown());
    }
    while set.join_next().await.is_some() {}
}

/// A command from `Control` to every worker.
pub(crate) enum Cmd {
    /// Accept on this socket (a worker's own `dup`) until `retire` turns true.
    Listen {
        id: ListenerId,
        /// Distinguishes a listener's sockets across reloads (an address change
        /// keeps the name, hence the id).
        generation: u64,
        socket: std::net::TcpListener,
        retire: watch::Receiver<bool>,
    },
}

/// A listener as the workers know it: its id and socket generation.
type ListenerTag = (ListenerId, u64);

/// A connection one worker accepted for another, already counted against it.
type Accepted = (std::net::TcpStream, SocketAddr, ListenerTag, OpenGuard);

/// Open client connections per worker, and each worker's inbox. Workers share a
/// listening socket, but a burst of connections (a load balancer or a client pool
/// opening 50 at once) can land mostly on one worker while both are idle, and
/// keep-alive keeps them there: measured, a lopsided split cost up to 30 % of
/// throughput. So a worker that accepts while holding more connections than the
/// least loaded one (+ `HANDOFF_SLACK`) passes the socket over; this costs a channel
/// hop per new connection and nothing per request.
struct Handoff {
    open: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Accepted>]>,
}

/// Imbalance in open connections tolerated before a handoff.
const HANDOFF_SLACK: usize = 1;

impl Handoff {
    /// The worker that should serve a connection worker `me` just accepted.
    fn target(&self, me: usize) -> usize {
        let mine = self.open[me].load(Ordering::Relaxed);
        let (least, fewest) = self
            .open
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Ordering::Relaxed)))
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, mine));
        if mine > fewest + HANDOFF_SLACK {
            least
        } else {
            me
        }
    }
}

/// Counts a connection against its worker while it is open.
struct OpenGuard(Arc<Handoff>, usize);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a worker needs to serve a connection.
#[derive(Clone)]
struct Serve {
    shared: Arc<Shared>,
    builders: Arc<Builders>,
    /// Per listener socket generation: its connections, drained together when the
    /// listener is removed by a reload or the worker stops.
    gracefuls: Arc<Mutex<HashMap<u64, Arc<GracefulShutdown>>>>,
    /// With several workers: the balance and this worker's index.
    handoff: Option<(Arc<Handoff>, usize)>,
}

impl Serve {
    fn graceful(&self, generation: u64) -> Arc<GracefulShutdown> {
        let mut map = self.gracefuls.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(generation).or_default())
    }

    /// A removed listener's connections finish their current request and close.
    fn retire(&self, generation: u64) {
        let g = self
            .gracefuls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&generation);
        if let Some(g) = g.and_then(|g| Arc::try_unwrap(g).ok()) {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(DEFAULT_DRAIN_TIMEOUT, g.shutdown()).await;
            });
        }
    }

    fn take_gracefuls(&self) -> Vec<Arc<GracefulShutdown>> {
        let mut map = self.gracefuls.lock().unwrap_or_else(|e| e.into_inner());
        map.drain().map(|(_, g)| g).collect()
    }

    /// A connection this worker accepted: served here, or handed to a lighter worker.
    fn accepted(&self, stream: TcpStream, remote: SocketAddr, id: ListenerTag) {
        let Some((h, me)) = &self.handoff else {
            return self.serve(stream, remote, id, None);
        };
        let target = h.target(*me);
        h.open[target].fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(Arc::clone(h), target);
        if target == *me {
            return self.serve(stream, remote, id, Some(guard));
        }
        // The guard travels with the socket; if the target is shutting down, the
        // unsent message drops it and the connection closes.
        match stream.into_std() {
            Ok(s) => drop(h.inboxes[target].send((s, remote, id, guard))),
            Err(e) => tracing::debug!(error = %e, "cannot hand a connection over"),
        }
    }

    fn serve(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        (id, generation): ListenerTag,
        guard: Option<OpenGuard>,
    ) {
        let _ = stream.set_nodelay(true);
        let open = self.shared.load().connections(id);
        open.increment(1.0);
        if let Some(config) = self.shared.tls(id) {
            return self.serve_tls(config, stream, remote, (id, generation), guard, open);
        }
        let svc = ProxyService::new(
            Arc::clone(&self.shared),
            id,
            ClientInfo::new(remote, "http"),
        );
        let conn = self
            .builders
            .auto
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = self.graceful(generation).watch(conn);
        let open = GaugeGuard(open);
        tokio::spawn(async move {
            let _guard = guard;
            let _open = open;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %remote, "client connection ended with an error");
            }
        });
    }

    /// The handshake runs in the connection's own task, never in the accept loop,
    /// so a slow or silent client holds only its own slot (for at most
    /// `tls::HANDSHAKE_TIMEOUT`). Like a plain connection that has not sent a
    /// request yet, a connection still in its handshake does not hold up a drain:
    /// it joins its listener's drain group only once the handshake is done, and
    /// is closed then if that group has been drained meanwhile.
    fn serve_tls(
        &self,
        config: Arc<rustls::ServerConfig>,
        stream: TcpStream,
        remote: SocketAddr,
        (id, generation): ListenerTag,
        guard: Option<OpenGuard>,
        open: metrics::Gauge,
    ) {
        // The group exists from now on, so its absence later means it was drained.
        drop(self.graceful(generation));
        let gracefuls = Arc::clone(&self.gracefuls);
        let builders = Arc::clone(&self.builders);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let _guard = guard;
            // Counted from accept to close, handshake included, as plain ones are.
            let _open = GaugeGuard(open);
            let (stream, alpn) = match tls::handshake(config, stream).await {
                Ok(s) => s,
                // Scanners and clients with nothing in common are routine: debug only.
                Err(e) => return tracing::debug!(error = %e, %remote, "TLS handshake failed"),
            };
            // No await from the lookup to `watcher()`: the group's `Arc` is not held
            // while a drain may try to take it.
            let group = gracefuls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&generation)
                .map(|g| g.watcher());
            let Some(watcher) = group else {
                return tracing::debug!(%remote, "listener draining; closing a connection after its handshake");
            };
            let svc = ProxyService::new(shared, id, ClientInfo::new(remote, "https"));
            let io = TokioIo::new(stream);
            let result = match alpn {
                Alpn::H2 => watcher.watch(builders.h2.serve_connection(io, svc)).await,
                // HTTP/1.1, or no ALPN: the first bytes tell 1.x from HTTP/2.
                Alpn::Http11 | Alpn::None => {
                    watcher
                        .watch(builders.auto.serve_connection_with_upgrades(io, svc))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %remote, "client connection ended with an error");
            }
        });
    }
}

/// Decrements an open-connections gauge when the connection's task ends, however
/// it ends.
struct GaugeGuard(metrics::Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

async fn accept_loop(
    listener: TcpListener,
    id: ListenerTag,
    serve: Serve,
    mut stop: watch::Receiver<Option<Duration>>,
    mut retire: watch::Receiver<bool>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            () = retired(&mut retire) => {
                drop(listener);
                serve.retire(id.1);
                return;
            }
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        serve.accepted(stream, remote, id);
    }
}

/// Serves the connections other workers hand to this one.
async fn inbox_loop(
    mut rx: mpsc::UnboundedReceiver<Accepted>,
    serve: Serve,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    loop {
        let (s, remote, id, guard) = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        match TcpStream::from_std(s) {
            Ok(stream) => serve.serve(stream, remote, id, Some(guard)),
            Err(e) => tracing::debug!(error = %e, "cannot take a handed-over connection"),
        }
    }
}

/// Connection builders, made once per worker.
struct Builders {
    /// HTTP/1.1 and HTTP/2 prior knowledge, told apart by the first bytes.
    auto: auto::Builder<TokioExecutor>,
    /// HTTP/2 only, for TLS connections that chose `h2` by ALPN.
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new() -> Self {
        Builders {
            auto: builder(),
            h2: builder().http2_only(),
        }
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        // RFC 8441: WebSocket over HTTP/2 streams (see proxy::tunnel).
        .enable_connect_protocol();
    b
}

/// Resolves once the listener is removed (or its `Control` dropped).
async fn retired(retire: &mut watch::Receiver<bool>) {
    let _ = retire.wait_for(|r| *r).await;
}

/// Resolves once a stop has been requested (or the proxy dropped).
async fn stopped(stop: &mut watch::Receiver<Option<Duration>>) {
    let _ = stop.wait_for(Option::is_some).await;
}

impl Running {
    /// The bound address of the listener named `name` (useful with port 0).
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.control.addr(name)
    }

    /// Every listener's name and bound address, as of now.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.control.addrs()
    }

    /// Binds the listeners of a proxy made by `prepare` (`start` does both).
    pub fn listen(&self) -> io::Result<()> {
        self.control.listen()
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain`, and returns
    /// whether every connection closed in time.
    pub async fn shutdown(self, drain: Duration) -> bool {
        // Readiness goes first, so orchestrators stop sending traffic while the
        // drain runs.
        self.shared.set_ready(false);
        self.shared.stop_health();
        let _ = self.stop.send(Some(drain));
        let mut done = Vec::new();
        for w in self.workers {
            let _ = w.closed.await;
            done.push(w.done);
        }
        tracing::info!("listeners closed; draining connections");
        let mut drained = true;
        for d in done {
            drained &= match d {
                WorkerDone::Task(t) => t.await.unwrap_or(false),
                WorkerDone::Thread(t) => {
                    tokio::task::spawn_blocking(move || t.join().unwrap_or(false))
                        .await
                        .unwrap_or(false)
                }
            };
        }
        if !drained {
            tracing::warn!(?drain, "drain timeout passed with connections still open");
        }
        drained
    }
}
