//! Listeners: bind, accept, serve each connection with hyper-util's auto builder
//! (HTTP/1.1 and HTTP/2 prior knowledge on one port), and drain on shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::proxy::{ClientInfo, ProxyService};
use crate::state::{ListenerId, Shared};

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

/// A started proxy: its listeners accept until `shutdown`.
pub struct Running {
    pub shared: Arc<Shared>,
    addrs: Vec<(String, SocketAddr)>,
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
    let bound = bind_all(&config, 1)?;
    let shared = Shared::new(config, 1);
    let (stop, stop_rx) = watch::channel(None);
    let (closed_tx, closed) = oneshot::channel();
    let listeners = tokio_listeners(
        &shared,
        bound.sockets.into_iter().next().unwrap_or_default(),
    )?;
    let task = tokio::spawn(worker(listeners, Arc::clone(&shared), stop_rx, closed_tx));
    Ok(Running {
        shared,
        addrs: bound.addrs,
        stop,
        workers: vec![Worker {
            closed,
            done: WorkerDone::Task(task),
        }],
    })
}

/// Binds every listener once per worker (`SO_REUSEPORT`, so the kernel spreads
/// connections) and runs each worker on its own thread with a single-threaded
/// runtime, as nginx runs worker processes: a request never changes thread, and the
/// upstream connections it uses belong to its worker. Must be called outside a
/// runtime's worker context or from a current-thread runtime.
pub fn start_threads(config: Config, workers: usize) -> io::Result<Running> {
    let workers = workers.max(1);
    let bound = bind_all(&config, workers)?;
    let shared = Shared::new(config, workers);
    let (stop, stop_rx) = watch::channel(None);
    let mut handles = Vec::new();
    for (index, sockets) in bound.sockets.into_iter().enumerate() {
        let (closed_tx, closed) = oneshot::channel();
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
                rt.block_on(async move {
                    match tokio_listeners(&shared, sockets) {
                        Ok(listeners) => worker(listeners, shared, stop_rx, closed_tx).await,
                        Err(e) => {
                            tracing::error!(error = %e, "worker cannot use its sockets");
                            false
                        }
                    }
                })
            })?;
        handles.push(Worker {
            closed,
            done: WorkerDone::Thread(thread),
        });
    }
    Ok(Running {
        shared,
        addrs: bound.addrs,
        stop,
        workers: handles,
    })
}

struct Bound {
    addrs: Vec<(String, SocketAddr)>,
    /// Per worker, one socket per listener (name, socket).
    sockets: Vec<Vec<(String, std::net::TcpListener)>>,
}

/// Binds `copies` sockets per listener; a port 0 is resolved by the first bind and
/// reused for the others so all workers share one port.
fn bind_all(config: &Config, copies: usize) -> io::Result<Bound> {
    let mut addrs = Vec::new();
    let mut sockets: Vec<Vec<_>> = (0..copies).map(|_| Vec::new()).collect();
    for l in &config.listeners {
        let fail = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("listener {:?}: cannot listen on {}: {e}", l.name, l.listen),
            )
        };
        let first = bind_one(l.listen, copies > 1).map_err(fail)?;
        let addr = first.local_addr()?;
        tracing::info!(listener = %l.name, %addr, "listening");
        sockets[0].push((l.name.clone(), first));
        for copy in sockets.iter_mut().skip(1) {
            copy.push((l.name.clone(), bind_one(addr, true).map_err(fail)?));
        }
        addrs.push((l.name.clone(), addr));
    }
    Ok(Bound { addrs, sockets })
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(s.into())
}

fn tokio_listeners(
    shared: &Shared,
    sockets: Vec<(String, std::net::TcpListener)>,
) -> io::Result<Vec<(ListenerId, TcpListener)>> {
    sockets
        .into_iter()
        .map(|(name, s)| Ok((shared.listener_id(&name), TcpListener::from_std(s)?)))
        .collect()
}

/// Runs one worker's accept loops until told to stop, then drains its connections.
async fn worker(
    listeners: Vec<(ListenerId, TcpListener)>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Option<Duration>>,
    closed: oneshot::Sender<()>,
) -> bool {
    let graceful = Arc::new(GracefulShutdown::new());
    let builder = builder();
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|(id, l)| {
            tokio::spawn(accept_loop(
                l,
                id,
                Arc::clone(&shared),
                builder.clone(),
                Arc::clone(&graceful),
                stop.clone(),
            ))
        })
        .collect();
    let drain = match stop.wait_for(Option::is_some).await {
        Ok(d) => d.unwrap_or_default(),
        // The proxy was dropped without a shutdown: stop at once.
        Err(_) => Duration::ZERO,
    };
    for l in loops {
        let _ = l.await;
    }
    let _ = closed.send(());
    // The accept loops have returned, so this is the last reference.
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        return false;
    };
    tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_ok()
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    b
}

async fn accept_loop(
    listener: TcpListener,
    id: ListenerId,
    shared: Arc<Shared>,
    builder: auto::Builder<TokioExecutor>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = ProxyService::new(Arc::clone(&shared), id, ClientInfo::new(remote, "http"));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %remote, "client connection ended with an error");
            }
        });
    }
}

/// Resolves once a stop has been requested (or the proxy dropped).
async fn stopped(stop: &mut watch::Receiver<Option<Duration>>) {
    let _ = stop.wait_for(Option::is_some).await;
}

impl Running {
    /// The bound address of the listener named `name` (useful with port 0).
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain`, and returns
    /// whether every connection closed in time.
    pub async fn shutdown(self, drain: Duration) -> bool {
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
