use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::HeaderValue;

use super::budget::RetryBudget;
use super::health::{Active, Health};
use super::pool::Pool;
use super::queue::Queue;
use super::transport::Transport;
use crate::balance::Latency;
use crate::weak_map::{shared, WeakMap};

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
    pub(super) health: Health,
    /// Operator's drain (maintenance): no new requests.
    drained: AtomicBool,
    /// Operator's weight, replacing the configured one while the server exists.
    weight_override: AtomicU32,
    pub(super) inflight: AtomicUsize,
    /// Its `max_conns` in the configuration built last (0: no limit). Kept here,
    /// not in a snapshot, so that a freed slot wakes the queue whenever the server
    /// has a cap now, whichever snapshot its request started on.
    max_conns: AtomicUsize,
    /// The queue of its upstream, woken when a capped slot frees.
    pub(super) queue: Arc<Queue>,
    pub(super) requests: AtomicU64,
    /// Requests that failed on this server (5xx, broken or timed-out exchanges).
    pub(super) errors: AtomicU64,
}

impl ServerState {
    fn new(
        key: ServerKey,
        keepalive: usize,
        workers: usize,
        seed: std::time::Duration,
        transport: Transport,
        queue: Arc<Queue>,
    ) -> Self {
        let id = crate::balance::hash_bytes(format!("{}\0{}", key.upstream, key.addr).as_bytes());
        ServerState {
            latency: Latency::new(seed),
            sticky_id: format!("{id:016x}"),
            health: Health::new(Active::Up),
            drained: AtomicBool::new(false),
            weight_override: AtomicU32::new(0),
            addr_header: HeaderValue::from_str(&key.addr.to_string())
                .expect("a socket address is a valid header value"),
            pool: Pool::new(key.addr, keepalive, workers, transport),
            key,
            inflight: AtomicUsize::new(0),
            max_conns: AtomicUsize::new(0),
            queue,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.key.addr
    }

    /// Requests currently between pick and the end (or drop) of their response body.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Its `max_conns` (0: no limit).
    pub fn max_conns(&self) -> usize {
        self.max_conns.load(Ordering::Relaxed)
    }

    /// Sets its `max_conns` (0: no limit), as the configuration built last says;
    /// new requests respect it at once.
    pub fn set_max_conns(&self, max: usize) {
        self.max_conns.store(max, Ordering::Relaxed);
    }

    /// Counts one more request in flight, unless that would pass its `max_conns`
    /// (then `InFlight::taken` makes the guard that gives it back).
    #[inline]
    pub fn take_slot(&self) -> bool {
        match self.max_conns() {
            0 => {
                self.inflight.fetch_add(1, Ordering::Relaxed);
                true
            }
            max => self.take_capped_slot(max),
        }
    }

    /// The compare-and-swap loop of a server with a cap, kept out of line so that
    /// the uncapped path stays as small as it was (measured: inlined, it made the
    /// uncapped pick and release spill to the stack).
    #[inline(never)]
    fn take_capped_slot(&self, max: usize) -> bool {
        self.inflight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// At its `max_conns`: no new request may be sent to it now.
    pub fn full(&self) -> bool {
        match self.max_conns() {
            0 => false,
            max => self.inflight() >= max,
        }
    }

    /// Whether the active checks consider the server up.
    pub fn is_up(&self) -> bool {
        self.active() == Active::Up
    }

    /// Marks the server up or down by hand (tests, the admin API), without a ramp.
    pub fn set_up(&self, up: bool) {
        let to = if up { Active::Up } else { Active::Down };
        self.set_active(to, "set by hand", std::time::Duration::ZERO);
    }

    pub fn drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Drains the server (no new requests; in-flight ones finish) or lets it back.
    pub fn set_drained(&self, drained: bool) {
        if self.drained.swap(drained, Ordering::Relaxed) != drained {
            let state = if drained { "drained" } else { "undrained" };
            self.note(state, "by the operator");
            tracing::info!(upstream = %self.key.upstream, server = %self.key.addr, state, "server state changed by the operator");
        }
    }

    /// The operator's weight, if set.
    pub fn weight_override(&self) -> Option<u32> {
        match self.weight_override.load(Ordering::Relaxed) {
            0 => None,
            w => Some(w),
        }
    }

    /// Sets (`Some`) or clears the operator's weight; the snapshot must be rebuilt
    /// for balancers to see it.
    pub fn set_weight_override(&self, weight: Option<u32>) {
        self.weight_override
            .store(weight.unwrap_or(0), Ordering::Relaxed);
    }

    /// Requests sent to this server since it first appeared in a configuration.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Of those, the ones that failed (5xx, or no usable response).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Hands out the same `ServerState` for the same identity for as long as any
/// configuration still references it.
#[derive(Debug)]
pub struct Registry {
    servers: Mutex<WeakMap<ServerKey, ServerState>>,
    budgets: Mutex<WeakMap<Arc<str>, RetryBudget>>,
    queues: Mutex<WeakMap<Arc<str>, Queue>>,
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
            servers: Mutex::default(),
            budgets: Mutex::default(),
            queues: Mutex::default(),
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
        self.server_or_new(
            key,
            keepalive,
            crate::config::DEFAULT_MAX_RESPONSE_HEADER_SIZE,
            seed,
            Transport::plain(),
            |_| {},
        )
    }

    /// As `server`, for a server reached through `transport`, whose responses may
    /// have heads of up to `max_head` bytes (applied to new connections); `fresh`
    /// prepares a newly created state (warming, slow start) before anyone else sees
    /// it. A server whose transport changed (protocol, TLS settings) gets a new
    /// state: its connections and its health verdict were about the old one.
    pub fn server_or_new(
        &self,
        key: ServerKey,
        keepalive: usize,
        max_head: usize,
        seed: std::time::Duration,
        transport: Transport,
        fresh: impl FnOnce(&ServerState),
    ) -> Arc<ServerState> {
        let mut map = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&key) {
            if s.pool.transport().key == transport.key {
                s.pool.set_max_idle(keepalive);
                s.pool.set_max_head(max_head);
                return s;
            }
        }
        let queue = self.queue(&key.upstream);
        let s = ServerState::new(key.clone(), keepalive, self.workers, seed, transport, queue);
        s.pool.set_max_head(max_head);
        fresh(&s);
        let s = Arc::new(s);
        map.insert(key, &s);
        s
    }

    /// The retry budget of upstream `name`, shared across reloads like server state.
    pub fn budget(&self, name: &Arc<str>) -> Arc<RetryBudget> {
        shared(&self.budgets, Arc::clone(name))
    }

    /// The queue of upstream `name`, shared by its servers and every snapshot that
    /// has it, so that waiting requests outlive reloads.
    pub fn queue(&self, name: &Arc<str>) -> Arc<Queue> {
        shared(&self.queues, Arc::clone(name))
    }
}
