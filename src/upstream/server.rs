use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use http::HeaderValue;

use super::latency::Latency;
use super::pool::Pool;

/// A server's identity across reloads: the upstream it belongs to and its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub upstream: Arc<str>,
    pub addr: SocketAddr,
}

/// Long-lived, lock-free state of one server.
#[derive(Debug)]
pub struct ServerState {
    pub key: ServerKey,
    /// `ip:port`, ready to go into `$upstream_addr` headers without formatting.
    pub addr_header: HeaderValue,
    pub pool: Pool,
    pub latency: Latency,
    /// Opaque id of this server in sticky cookies (not its address).
    pub sticky_id: String,
    /// Health as the health checks see it; until they arrive, always up.
    up: AtomicBool,
    pub(super) inflight: AtomicUsize,
    pub(super) requests: AtomicU64,
}

impl ServerState {
    fn new(key: ServerKey, keepalive: usize, workers: usize, seed: std::time::Duration) -> Self {
        let id = crate::balance::hash_bytes(format!("{}\0{}", key.upstream, key.addr).as_bytes());
        ServerState {
            latency: Latency::new(seed),
            sticky_id: format!("{id:016x}"),
            up: AtomicBool::new(true),
            addr_header: HeaderValue::from_str(&key.addr.to_string())
                .expect("a socket address is a valid header value"),
            pool: Pool::new(key.addr, keepalive, workers),
            key,
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.key.addr
    }

    /// Requests currently between pick and the end (or drop) of their response body.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Whether health checking lets the server take traffic.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Marks the server up or down (the health checks' lever; tests use it too).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Requests sent to this server since it first appeared in a configuration.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Hands out the same `ServerState` for the same identity for as long as any
/// configuration still references it.
#[derive(Debug)]
pub struct Registry {
    servers: Mutex<HashMap<ServerKey, Weak<ServerState>>>,
    /// Worker threads, hence connection-pool shards per server.
    workers: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(1)
    }
}

impl Registry {
    pub fn new(workers: usize) -> Self {
        Registry {
            servers: Mutex::new(HashMap::new()),
            workers: workers.max(1),
        }
    }

    /// Returns the state for `key`, creating it if no live configuration has it, and
    /// applies the configuration's pool size to it.
    pub fn server(
        &self,
        key: ServerKey,
        keepalive: usize,
        seed: std::time::Duration,
    ) -> Arc<ServerState> {
        let mut map = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            s.pool.set_max_idle(keepalive);
            return s;
        }
        let s = Arc::new(ServerState::new(key.clone(), keepalive, self.workers, seed));
        map.insert(key, Arc::downgrade(&s));
        s
    }
}
