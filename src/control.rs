//! Runtime changes: reloading the configuration file and the listener set that
//! goes with it. Everything is read, validated and built off the request path; the
//! request path sees one atomic snapshot swap. An invalid file changes nothing.
//!
//! Listeners are keyed by name. One whose address is unchanged keeps its socket
//! (its connections are untouched); an added one is bound before anything else
//! changes (a bind failure fails the whole reload); a removed or re-addressed one
//! stops accepting, and its connections finish their current request and close.
//! A listener's `max_connections` count belongs to its name: it carries over a
//! reload (an address change too), and a new maximum applies in place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use crate::config::{diff, Change, Config, ConfigError};
use crate::server::{bind_one, Cmd, ConnLimit};
use crate::state::Shared;

pub struct Control {
    pub shared: Arc<Shared>,
    workers: Vec<mpsc::UnboundedSender<Cmd>>,
    /// Held for a whole reload, so reloads from the signal, the file watch and the
    /// admin API never interleave.
    listeners: Mutex<Vec<Listening>>,
    next_generation: AtomicU64,
    /// The file reloads read.
    source: PathBuf,
    pub stats: ReloadStats,
}

struct Listening {
    name: String,
    /// As configured (port 0 stays 0), to tell whether a reload changed it.
    configured: SocketAddr,
    bound: SocketAddr,
    retire: watch::Sender<bool>,
    /// Its `max_connections`, shared by the accept loops of its socket.
    limit: Arc<ConnLimit>,
}

/// A socket bound for a listener, not yet handed to the workers.
struct Bound {
    name: String,
    configured: SocketAddr,
    socket: std::net::TcpListener,
    max_connections: Option<u32>,
}

/// Counters for the status page and metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl ReloadStats {
    /// `(succeeded, failed)`.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Why the last reload failed, if it did (a later success clears it).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Listen(std::io::Error),
    #[error("{0}")]
    AccessLog(std::io::Error),
}

impl ReloadError {
    /// One line per problem, `file: key.path: problem`.
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_owned).collect()
    }
}

impl Control {
    /// Control over `workers`, with nothing bound yet (see `listen`).
    pub fn new(
        shared: Arc<Shared>,
        workers: Vec<mpsc::UnboundedSender<Cmd>>,
        config: &Config,
    ) -> Arc<Control> {
        Arc::new(Control {
            shared,
            workers,
            listeners: Mutex::new(Vec::new()),
            next_generation: AtomicU64::new(1),
            source: config.source.clone(),
            stats: ReloadStats::default(),
        })
    }

    /// Binds the current configuration's listeners and has every worker accept on
    /// them; the proxy is ready from then on.
    pub fn listen(&self) -> std::io::Result<()> {
        let config = self.shared.config();
        let mut table = self.lock();
        let bound = self.bind_new(&table, &config)?;
        self.start(&mut table, bound)?;
        self.shared.set_ready(true);
        Ok(())
    }

    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.lock().iter().find(|l| l.name == name).map(|l| l.bound)
    }

    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.lock()
            .iter()
            .map(|l| (l.name.clone(), l.bound))
            .collect()
    }

    /// The file reloads read.
    pub fn source(&self) -> &std::path::Path {
        &self.source
    }

    /// Reads the configuration file again and applies it off the async runtimes
    /// (the file read, name resolution and certificate parsing block); returns what
    /// changed.
    pub async fn reload_async(self: &Arc<Self>) -> Result<Vec<Change>, ReloadError> {
        let this = Arc::clone(self);
        match tokio::task::spawn_blocking(move || this.reload()).await {
            Ok(r) => r,
            Err(e) => Err(ReloadError::Listen(std::io::Error::other(e))),
        }
    }

    /// Reads the configuration file again and applies it; returns what changed.
    /// Blocks: call it from a thread of its own or `reload_async`.
    pub fn reload(&self) -> Result<Vec<Change>, ReloadError> {
        let result = Config::load(&self.source)
            .map_err(ReloadError::from)
            .and_then(|c| self.apply(c));
        match &result {
            Ok(changes) => {
                self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                *self
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(changes = changes.len(), "configuration reloaded");
                for c in changes {
                    tracing::info!("reload: {c}");
                }
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                *self
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                for line in e.lines() {
                    tracing::error!("reload rejected, old configuration kept: {line}");
                }
            }
        }
        result
    }

    /// Makes `config` current: listeners first bound, then the snapshot swapped,
    /// then removed listeners retired. Returns what changed.
    pub fn apply(&self, config: Config) -> Result<Vec<Change>, ReloadError> {
        let mut table = self.lock();
        let changes = diff(&self.shared.config(), &config);
        let bound = self
            .bind_new(&table, &config)
            .map_err(ReloadError::Listen)?;
        let keep: Vec<(String, SocketAddr, Option<u32>)> = config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.listen, l.clients.max_connections))
            .collect();
        self.shared.apply(config).map_err(ReloadError::AccessLog)?;
        self.start(&mut table, bound).map_err(ReloadError::Listen)?;
        table.retain(|l| {
            let kept = keep.iter().find(|(n, a, _)| *n == l.name && *a == l.configured);
            match kept {
                // The accept loops of a kept socket see the new maximum at once.
                Some((_, _, max)) => l.limit.set_max(*max),
                None => {
                    tracing::info!(listener = %l.name, addr = %l.bound, "listener removed; draining its connections");
                    let _ = l.retire.send(true);
                }
            }
            kept.is_some()
        });
        Ok(changes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Listening>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds the listeners of `config` that are not already listening as
    /// configured.
    fn bind_new(&self, table: &[Listening], config: &Config) -> std::io::Result<Vec<Bound>> {
        let mut out = Vec::new();
        for l in &config.listeners {
            if table
                .iter()
                .any(|t| t.name == l.name && t.configured == l.listen)
            {
                continue;
            }
            let socket = bind_one(l.listen).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("listener {:?}: cannot listen on {}: {e}", l.name, l.listen),
                )
            })?;
            out.push(Bound {
                name: l.name.clone(),
                configured: l.listen,
                socket,
                max_connections: l.clients.max_connections,
            });
        }
        Ok(out)
    }

    /// Hands each bound socket to every worker (each gets its own `dup`).
    fn start(&self, table: &mut Vec<Listening>, bound: Vec<Bound>) -> std::io::Result<()> {
        for Bound {
            name,
            configured,
            socket,
            max_connections,
        } in bound
        {
            let addr = socket.local_addr()?;
            let id = self.shared.listener_id(&name);
            let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
            let (retire, retire_rx) = watch::channel(false);
            // A moved listener keeps counting the connections of its old socket,
            // which stay open until they finish.
            let limit = match table.iter().find(|old| old.name == name) {
                Some(old) => {
                    old.limit.set_max(max_connections);
                    Arc::clone(&old.limit)
                }
                None => ConnLimit::new(max_connections),
            };
            for w in &self.workers {
                let _ = w.send(Cmd::Listen {
                    id,
                    generation,
                    socket: socket.try_clone()?,
                    retire: retire_rx.clone(),
                    limit: Arc::clone(&limit),
                });
            }
            tracing::info!(listener = %name, %addr, "listening");
            // An older socket of the same name (its address changed) retires.
            table.retain(|old| {
                if old.name != name {
                    return true;
                }
                tracing::info!(listener = %old.name, addr = %old.bound, "listener moved; draining its old socket");
                let _ = old.retire.send(true);
                false
            });
            table.push(Listening {
                name,
                configured,
                bound: addr,
                retire,
                limit,
            });
        }
        Ok(())
    }
}
