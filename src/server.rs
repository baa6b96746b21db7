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
use tokio::sync::watch;
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
    stop: watch::Sender<bool>,
    accept_tasks: Vec<JoinHandle<()>>,
    /// Shared with the accept loops, which register each connection with it.
    graceful: Arc<GracefulShutdown>,
}

/// Binds every listener of `config` and starts serving.
pub async fn start(config: Config) -> io::Result<Running> {
    let mut bound = Vec::new();
    for l in &config.listeners {
        let listener = TcpListener::bind(l.listen).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listener {:?}: cannot listen on {}: {e}", l.name, l.listen),
            )
        })?;
        bound.push((l.name.clone(), listener));
    }
    let shared = Shared::new(config);
    let (stop, stop_rx) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let builder = builder();
    let mut addrs = Vec::new();
    let mut accept_tasks = Vec::new();
    for (name, listener) in bound {
        let addr = listener.local_addr()?;
        tracing::info!(listener = %name, %addr, "listening");
        let id = shared.listener_id(&name);
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            id,
            Arc::clone(&shared),
            builder.clone(),
            Arc::clone(&graceful),
            stop_rx.clone(),
        )));
        addrs.push((name, addr));
    }
    Ok(Running {
        shared,
        addrs,
        stop,
        accept_tasks,
        graceful,
    })
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
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            _ = stop.changed() => return,
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
        let _ = self.stop.send(true);
        for t in self.accept_tasks {
            let _ = t.await;
        }
        tracing::info!("listeners closed; draining connections");
        // The accept loops have returned, so this is the last reference.
        let Ok(graceful) = Arc::try_unwrap(self.graceful) else {
            return false;
        };
        let drained = tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(?drain, "drain timeout passed with connections still open");
        }
        drained
    }
}
