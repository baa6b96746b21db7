//! Wiring: the one way a proxy is started, by the binary and by the tests alike.
//! From a validated `Config`: the shared state, the worker threads, the background
//! runtime (health checks, the admin API, metrics upkeep, discovery), the reload
//! control; then the listeners are bound. `Running::shutdown` stops in order:
//! readiness first, then accepting, then the drain, and the admin listener last,
//! so probes see 503 from `/readyz` while the drain runs rather than a refused
//! connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::control::Control;
use crate::membership::discover::Discover;
use crate::server::{stopped, Stop, Workers};
use crate::state::Shared;

/// A started proxy: its listeners accept until `shutdown`. (Between `prepare` and
/// `listen` it is not listening yet, and `/readyz` says so.)
pub struct Running {
    pub shared: Arc<Shared>,
    /// Listener changes and reloads at runtime.
    pub control: Arc<Control>,
    /// The admin API's bound address, when `[admin]` is configured.
    pub admin: Option<SocketAddr>,
    /// The runtime of the health checks, the admin API and discovery.
    pub background: tokio::runtime::Handle,
    /// `Some(drain)` tells every worker and background task to stop.
    stop: watch::Sender<Option<Duration>>,
    /// Sent once the drain is over: the admin listener and the background
    /// runtime end then.
    end: watch::Sender<Option<Duration>>,
    workers: Workers,
}

/// Starts a proxy for `config` with `workers` worker threads (at least one) and
/// binds its listeners. Call it outside a runtime's worker threads (from `main`, a
/// current-thread runtime, or a test).
pub fn start(config: Config, workers: usize) -> io::Result<Running> {
    let running = prepare(config, workers)?;
    running.listen()?;
    Ok(running)
}

/// As `start`, but stops short of binding the listeners: the admin listener and
/// the health checks run, `/readyz` answers 503 until `Running::listen`.
pub fn prepare(config: Config, workers: usize) -> io::Result<Running> {
    let shared = Shared::new(config.clone(), workers)?;
    let (stop, stop_rx) = watch::channel(None);
    let (end, end_rx) = watch::channel(None);
    let background = background_runtime(end_rx.clone())?;
    shared.start_health(background.clone());
    shared.start_dns(&background);
    spawn_limit_sweep(&shared, &background, stop_rx.clone());
    spawn_series_tick(&shared, &background, end_rx.clone());
    let workers = Workers::spawn(workers, shared.current(), &stop_rx)?;
    let control = Control::new(Arc::clone(&shared), workers.commands(), &config);
    let admin = match &config.admin {
        Some(a) => Some(crate::admin::start(
            a.listen,
            Arc::clone(&control),
            end_rx,
            &background,
        )?),
        None => None,
    };
    Ok(Running {
        shared,
        control,
        admin,
        background,
        stop,
        end,
        workers,
    })
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

    /// Open client connections per worker (empty with a single worker).
    pub fn worker_connections(&self) -> Vec<usize> {
        self.workers.connections()
    }

    /// Runs discovery source `d` on the background runtime.
    pub fn discover(&self, d: Box<dyn Discover>) {
        self.shared.start_discovery(d, &self.background);
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain`, and
    /// returns whether every connection closed in time.
    pub async fn shutdown(self, drain: Duration) -> bool {
        // Readiness goes first, so orchestrators stop sending traffic while the
        // drain runs.
        self.shared.set_ready(false);
        self.shared.stop_health();
        let _ = self.stop.send(Some(drain));
        let drained = self.workers.join().await;
        if !drained {
            tracing::warn!(?drain, "drain timeout passed with connections still open");
        }
        let _ = self.end.send(Some(drain));
        drained
    }
}

/// A thread with its own runtime for the health checkers, the admin API and
/// discovery, so checks keep their rhythm whatever the workers' load; it ends when
/// the proxy has stopped (`end`: after the drain, so the admin API answers during
/// it). Tasks that must stop with the listeners watch `stop` themselves.
fn background_runtime(mut stop: Stop) -> io::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("switchyard-background".into())
        .spawn(move || rt.block_on(stopped(&mut stop)))?;
    Ok(handle)
}

/// Sweeps the rate limiters' expired keys every `SWEEP_INTERVAL`, so that keys
/// with no traffic cost no memory after their window, whether their shard sees
/// requests or not. One shard's lock is held at a time.
fn spawn_limit_sweep(shared: &Arc<Shared>, runtime: &tokio::runtime::Handle, stop: Stop) {
    spawn_every(
        shared,
        runtime,
        stop,
        tokio::time::Instant::now,
        crate::limit::table::SWEEP_INTERVAL,
        |shared| {
            shared.limits().sweep(crate::limit::now());
        },
    );
}

/// Folds each second into the status page's time series (`observe::series`),
/// just after the second ends; only when there is a board (an admin listener to
/// show it). It runs until the admin listener closes (`end`), so the page keeps
/// moving through a drain.
fn spawn_series_tick(shared: &Arc<Shared>, runtime: &tokio::runtime::Handle, end: Stop) {
    if shared.metrics.board().is_none() {
        return;
    }
    spawn_every(
        shared,
        runtime,
        end,
        next_second,
        Duration::from_secs(1),
        |shared| {
            if let Some(board) = shared.metrics.board() {
                let now = tokio::time::Instant::now();
                crate::upstream::series::fold(board, now, &shared.load().upstreams);
            }
        },
    );
}

/// Runs `job` on `runtime` at `first()` (read on that runtime's clock), then
/// every `period` (a late turn delays the next ones rather than bunching them),
/// until `stop` or until the proxy (`shared`) is gone.
fn spawn_every(
    shared: &Arc<Shared>,
    runtime: &tokio::runtime::Handle,
    mut stop: Stop,
    first: fn() -> tokio::time::Instant,
    period: Duration,
    job: impl Fn(&Shared) + Send + 'static,
) {
    let weak = Arc::downgrade(shared);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval_at(first(), period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tick.tick() => match weak.upgrade() {
                    Some(shared) => job(&shared),
                    None => return,
                },
            }
        }
    });
}

/// A little after the next whole second of the series' clock: what finished in
/// the second before is counted by then (a request's end races the turn of the
/// second by nanoseconds, not milliseconds).
fn next_second() -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let into = crate::clock::nanos(now) % 1_000_000_000;
    now + Duration::from_nanos(1_000_000_000 - into) + SERIES_TICK_MARGIN
}

/// How long after a second's end it is folded: enough for a worker thread that
/// read the clock just before the turn to finish its three additions.
const SERIES_TICK_MARGIN: Duration = Duration::from_millis(20);
