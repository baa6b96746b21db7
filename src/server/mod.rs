//! Listeners and workers. Each worker is a thread with its own single-threaded
//! runtime, as nginx runs worker processes: a request never changes thread, and
//! the upstream connections it uses belong to its worker. The workers share each
//! listening socket, as nginx's do by default: whichever worker is least busy
//! accepts a new connection first (`SO_REUSEPORT` would hash connections to workers
//! regardless of load; measured here, a lopsided split of 50 keep-alive connections
//! cost up to 30 % of throughput), and a worker far ahead hands new connections
//! over (`handoff`). Each connection is served by `conn`; removed listeners and
//! shutdown drain them.

mod client_io;
mod conn;
mod conn_limit;
mod drain;
mod h2_limits;
mod handoff;
mod park;
mod proxy_protocol;

pub use conn_limit::{ConnLimit, ConnSlot};
pub use h2_limits::H2_MAX_CONCURRENT_STREAMS;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::pipeline::{Current, ListenerId};
use conn::Serve;
use handoff::{Accepted, Handoff};

/// How long in-flight requests may take to finish after a shutdown signal.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pending connections the kernel queues per listening socket (nginx's `backlog`
/// default on Linux is 511; bursts of new bot connections deserve more).
const LISTEN_BACKLOG: i32 = 1024;
/// Pause after a failed accept (out of file descriptors, usually) so the loop does
/// not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// `Some(drain)` tells every worker to stop accepting and drain for that long.
pub type Stop = watch::Receiver<Option<Duration>>;

/// The running workers.
pub struct Workers {
    commands: Vec<mpsc::UnboundedSender<Cmd>>,
    workers: Vec<Worker>,
    handoff: Option<Arc<Handoff>>,
}

/// One worker: a set of accept loops on one runtime, with its own graceful drain.
struct Worker {
    /// Fires once this worker's accept loops have returned.
    closed: oneshot::Receiver<()>,
    thread: std::thread::JoinHandle<bool>,
}

/// A command to every worker.
pub enum Cmd {
    /// Accept on this socket (a worker's own `dup`) until `retire` turns true.
    Listen {
        id: ListenerId,
        /// Distinguishes a listener's sockets across reloads (an address change
        /// keeps the name, hence the id).
        generation: u64,
        socket: std::net::TcpListener,
        retire: watch::Receiver<bool>,
        /// The listener's `max_connections`, shared by every worker's accept loop
        /// and kept across reloads.
        limit: Arc<ConnLimit>,
    },
}

/// A listener as the workers know it: its id and socket generation.
type ListenerTag = (ListenerId, u64);

impl Workers {
    /// Starts `count` workers (at least one) serving requests from `current`, until
    /// `stop`. They accept nothing until given sockets (`send`).
    pub fn spawn(count: usize, current: &Arc<Current>, stop: &Stop) -> io::Result<Workers> {
        let count = count.max(1);
        let (commands, cmd_rxs): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let (inboxes, mut receivers): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let handoff = (count > 1).then(|| Arc::new(Handoff::new(inboxes)));
        let mut workers = Vec::new();
        for (index, cmds) in cmd_rxs.into_iter().enumerate() {
            let (closed_tx, closed) = oneshot::channel();
            let inbox = receivers.remove(0);
            let handoff = handoff.as_ref().map(|h| (Arc::clone(h), index, inbox));
            let current = Arc::clone(current);
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("switchyard-worker-{index}"))
                .spawn(move || {
                    crate::upstream::set_worker_shard(index);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a worker runtime starts");
                    rt.block_on(worker(cmds, current, handoff, stop, closed_tx))
                })?;
            workers.push(Worker { closed, thread });
        }
        Ok(Workers {
            commands,
            workers,
            handoff,
        })
    }

    /// A channel to each worker.
    pub fn commands(&self) -> Vec<mpsc::UnboundedSender<Cmd>> {
        self.commands.clone()
    }

    /// Open client connections per worker (with one worker: none counted).
    pub fn connections(&self) -> Vec<usize> {
        self.handoff.as_ref().map_or_else(Vec::new, |h| h.counts())
    }

    /// Waits until every worker has stopped accepting (after `stop` said so) and
    /// then drained; whether every connection closed in time.
    pub async fn join(self) -> bool {
        let mut threads = Vec::new();
        for w in self.workers {
            let _ = w.closed.await;
            threads.push(w.thread);
        }
        tracing::info!("listeners closed; draining connections");
        let mut drained = true;
        for t in threads {
            drained &= tokio::task::spawn_blocking(move || t.join().unwrap_or(false))
                .await
                .unwrap_or(false);
        }
        drained
    }
}

/// A listening socket for `addr`, non-blocking, with the proxy's backlog.
pub fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(s.into())
}

/// Runs one worker: starts accept loops as the commands ask, until told to stop;
/// then drains its connections.
async fn worker(
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    current: Arc<Current>,
    handoff: Option<(Arc<Handoff>, usize, mpsc::UnboundedReceiver<Accepted>)>,
    mut stop: Stop,
    closed: oneshot::Sender<()>,
) -> bool {
    let (handoff, inbox) = match handoff {
        Some((h, me, rx)) => (Some((h, me)), Some(rx)),
        None => (None, None),
    };
    let serve = Serve {
        current,
        builders: Arc::default(),
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
                Some(Cmd::Listen { id, generation, socket, retire, limit }) => {
                    match TcpListener::from_std(socket) {
                        Ok(l) => loops.push(tokio::spawn(accept_loop(
                            l,
                            (id, generation),
                            serve.clone(),
                            for_loops.clone(),
                            retire,
                            limit,
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
async fn drain_all(gracefuls: impl Iterator<Item = drain::Drain>) {
    let mut set = tokio::task::JoinSet::new();
    for g in gracefuls {
        set.spawn(g.shutdown());
    }
    while set.join_next().await.is_some() {}
}

/// Accepts connections while a slot of the listener's `max_connections` is free:
/// the slot is taken first, so with none free nothing is accepted and the kernel's
/// backlog holds new connections.
async fn accept_loop(
    listener: TcpListener,
    id: ListenerTag,
    serve: Serve,
    mut stop: Stop,
    mut retire: watch::Receiver<bool>,
    limit: Arc<ConnLimit>,
) {
    // A slot kept through a failed accept.
    let mut held = None;
    loop {
        let slot = held.take();
        let next = async {
            let slot = match slot {
                Some(s) => s,
                None => limit.take().await,
            };
            (slot, listener.accept().await)
        };
        let (slot, accepted) = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            () = retired(&mut retire) => {
                drop(listener);
                serve.retire(id.1);
                return;
            }
            n = next => n,
        };
        match accepted {
            Ok((stream, remote)) => serve.accepted(stream, remote, id, slot),
            Err(e) => {
                held = Some(slot);
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Serves the connections other workers hand to this one.
async fn inbox_loop(mut rx: mpsc::UnboundedReceiver<Accepted>, serve: Serve, mut stop: Stop) {
    loop {
        let (s, remote, id, guard, slot) = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        match TcpStream::from_std(s) {
            Ok(stream) => serve.serve(stream, remote, id, Some(guard), slot),
            Err(e) => tracing::debug!(error = %e, "cannot take a handed-over connection"),
        }
    }
}

/// Resolves once the listener is removed (or its `Control` dropped).
async fn retired(retire: &mut watch::Receiver<bool>) {
    let _ = retire.wait_for(|r| *r).await;
}

/// Resolves once a stop has been requested (or the proxy dropped).
pub async fn stopped(stop: &mut Stop) {
    let _ = stop.wait_for(Option::is_some).await;
}
