use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use http::HeaderValue;

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
    pub(super) inflight: AtomicUsize,
    pub(super) requests: AtomicU64,
}

impl ServerState {
    fn new(key: ServerKey, keepalive: usize, workers: usize) -> Self {
        ServerState {
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
    pub fn server(&self, key: ServerKey, keepalive: usize) -> Arc<ServerState> {
        let mut map = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            s.pool.set_max_idle(keepalive);
            return s;
        }
        let s = Arc::new(ServerState::new(key.clone(), keepalive, self.workers));
        map.insert(key, Arc::downgrade(&s));
        s
    }
}
