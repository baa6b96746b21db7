//! The shared rate-limit store: GCRA in Redis, so that several proxy replicas
//! hold one budget.
//!
//! A decision is one round trip: `EVALSHA` of a Lua script (`gcra.lua`) that takes
//! every limit of one request atomically, with the arithmetic of `limit::gcra` on
//! Redis's own clock (`TIME`), so replicas' clocks do not matter. All limits pass
//! and each is charged, or the first that refuses is named and none is charged. A
//! key's value is its TAT (nanoseconds since the Unix epoch, as digits) and it
//! expires at its TAT: an idle key costs Redis nothing, a live one about 150
//! bytes (measured on Redis 7.0 with a 40-byte name: entry, value and expiry).
//! Keys are `switchyard:rl:{limit}:{key}` (`Space`).
//!
//! Redis must never fail a request: a decision that has no answer within
//! `Options::timeout` (or finds Redis unreachable) is an error, counted in
//! `fallbacks()`, and the caller decides locally at `rate ÷ replicas_seen()`.
//! Reachability changes are logged once each, not per request; connections are
//! redialled in the background (`link`).
//!
//! Each worker thread has its own connection, made and driven on its own
//! runtime (`link` says why); the decisions of one worker are pipelined on it.
//! `Options::replica_window` bounds how long a replica that stopped deciding is
//! still counted: each replica announces itself in the decision script at most
//! once per `Options::announce_every` (a `ZADD` of its id at Redis time), and
//! the script answers how many announced within the window.
//!
//! The store serves the Telegram mode's dedup too (`telegram::dedup::redis`),
//! with a script of its own run through the same links (`RedisStore::run`).
//!
//! Redis Cluster is not supported (a request's keys may live in different
//! slots): use one Redis, or a primary behind Sentinel or a virtual address.

mod health;
mod link;
mod script;
mod url;

pub(crate) use script::Script;
pub use script::{Space, KEY_PREFIX, MAX_SPAN_NANOS, REPLICAS_KEY};
pub use url::UrlError;

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use ::redis::{AsyncConnectionConfig, Cmd, ErrorKind, RedisError, ServerErrorKind, Value};
use tokio::time::{timeout_at, Instant};

use crate::limit::gcra::Gcra;
use health::{Health, Use};
use link::{Dialer, Link};

/// How long a decision may take, connect wait included, before the caller falls
/// back to its local limit. A healthy Redis answers in 0.05–0.1 ms over loopback
/// and well under 1 ms on a LAN; 5 ms covers that with room for a busy worker and
/// tokio's 1 ms timer granularity, while a sick Redis adds at most this much to
/// a request (and only until the link drops it as stale, `STALE_AFTER`).
pub const DECISION_TIMEOUT: Duration = Duration::from_millis(5);

/// How long a dial (connect, handshake, `SCRIPT LOAD`) may take. Dials run in the
/// background, so this bounds no request; redis-rs's own default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Wait before redialling after the first failed dial; each further failure
/// doubles it, up to `RECONNECT_MAX`. Short, because a Redis restart takes well
/// under a second and its replicas' limits are loose until it is back.
pub const RECONNECT_MIN: Duration = Duration::from_millis(50);

/// The longest wait between redials while Redis is down: a Redis that comes back
/// is in use within about this long, at the cost of one failing connect per
/// worker per interval.
pub const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// A connection on which no decision has had its answer in time for this long,
/// while decisions keep timing out, is dropped and Redis counted down (a host or
/// network that vanished without closing the connection, or a hung Redis): from
/// then on decisions fall back at once rather than each waiting its timeout.
pub const STALE_AFTER: Duration = Duration::from_secs(1);

/// How often a replica announces itself (at most; only while it decides). Each
/// announcement costs the decision carrying it three more commands in the
/// script; once a second is nothing next to the decisions themselves.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// How long an announcement counts: a replica that stopped deciding (gone, or
/// idle) drops out of `replicas_seen` after this. Ten announcement intervals, so
/// that a replica with sparse traffic is not dropped between two of its requests.
pub const REPLICA_WINDOW: Duration = Duration::from_secs(10);

/// A store's tunables; `Default` gives the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `DECISION_TIMEOUT`.
    pub timeout: Duration,
    /// `CONNECT_TIMEOUT`.
    pub connect_timeout: Duration,
    /// `ANNOUNCE_EVERY`.
    pub announce_every: Duration,
    /// `REPLICA_WINDOW`.
    pub replica_window: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            timeout: DECISION_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            announce_every: ANNOUNCE_EVERY,
            replica_window: REPLICA_WINDOW,
        }
    }
}

/// One limit of a request: its key space, the key (client address, header value,
/// … as bytes) and its arithmetic.
#[derive(Debug, Clone, Copy)]
pub struct Limit<'a> {
    pub space: &'a Space,
    pub key: &'a [u8],
    pub gcra: Gcra,
}

/// What the store says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every limit lets it through and was charged; hold it back `wait` first
    /// (the longest any delaying limit asks; zero without `delay`).
    Pass { wait: Duration },
    /// `limits[index]` is the first that refuses it; nothing was charged. It
    /// would pass every refusing limit `retry_after` from now (the longest of
    /// their waits: answering the first's alone would send the client back too
    /// early).
    Refuse { index: usize, retry_after: Duration },
}

/// Why a decision was not made. Every one of them is a fallback: the caller
/// decides locally instead.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no answer from Redis in time")]
    Timeout,
    /// No connection now; one is being made in the background.
    #[error("Redis is unreachable (reconnecting in the background)")]
    Unavailable,
    #[error("connecting to Redis took longer than {0:?}")]
    ConnectTimeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] RedisError),
    /// A script answered something its reader does not understand.
    #[error("unexpected answer from a Redis script: {0}")]
    Reply(String),
}

/// The shared store: one per Redis URL per process, kept across reloads (see
/// the module doc).
#[derive(Debug)]
pub struct RedisStore {
    options: Options,
    dialer: Arc<Dialer>,
    health: Arc<Health>,
    /// This replica's id in the replicas set: process id and a random part (a
    /// restarted replica is a new one; the old id ages out of the window).
    replica: String,
    /// Every worker's link, to close them when the store goes.
    links: Mutex<Vec<Weak<Link>>>,
}

thread_local! {
    /// This thread's link to each store it has decided with.
    static LINKS: RefCell<Vec<(Weak<RedisStore>, Arc<Link>)>> = const { RefCell::new(Vec::new()) };
}

/// Checks a store URL without connecting (for the configuration check).
pub fn check_url(url: &str) -> Result<(), UrlError> {
    url::parse(url).map(|_| ())
}

impl RedisStore {
    /// A store for `url` (`redis://host:port/db`, `redis+unix:///path/redis.sock`
    /// or `unix:///path/redis.sock`, `?db=N` for a socket's database), with the
    /// default options. Does no I/O: each worker connects on its first decision.
    pub fn open(url: &str) -> Result<Arc<RedisStore>, UrlError> {
        RedisStore::open_with(url, Options::default())
    }

    pub fn open_with(url: &str, options: Options) -> Result<Arc<RedisStore>, UrlError> {
        let location = url::parse(url)?;
        let health = Arc::new(Health::new(location.shown));
        // Each decision has its own deadline (`options.timeout`), so redis-rs's
        // per-command timeout stays off.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(None);
        Ok(Arc::new(RedisStore {
            options,
            dialer: Arc::new(Dialer {
                client: location.client,
                config,
                connect_timeout: options.connect_timeout,
                health: Arc::clone(&health),
            }),
            health,
            replica: format!("{}-{:016x}", std::process::id(), crate::rng::next_u64()),
            links: Mutex::new(Vec::new()),
        }))
    }

    /// The verdict on one request under `limits`, all taken atomically (see
    /// `Decision`). No limits: it passes, without asking Redis. An error means the
    /// caller falls back to its local limits; it is already counted in
    /// `fallbacks()`. Never takes much longer than `Options::timeout`.
    pub async fn check(self: &Arc<Self>, limits: &[Limit<'_>]) -> Result<Decision, StoreError> {
        if limits.is_empty() {
            return Ok(Decision::Pass {
                wait: Duration::ZERO,
            });
        }
        self.health.used_for(Use::RateLimits);
        let result = self.decide(limits).await;
        if result.is_err() {
            self.health.fell_back();
        }
        result
    }

    async fn decide(self: &Arc<Self>, limits: &[Limit<'_>]) -> Result<Decision, StoreError> {
        let deadline = Instant::now() + self.options.timeout;
        let command = || {
            let announce = self
                .health
                .announce_due(Instant::now(), self.options.announce_every)
                .then_some(script::Announce {
                    replica: &self.replica,
                    window: self.options.replica_window,
                });
            script::command(limits, announce)
        };
        let read = |value| script::read(value, limits.len());
        let (decision, replicas) = self.run(&script::GCRA, command, deadline, read).await?;
        if let Some(n) = replicas {
            self.health.saw_replicas(n);
        }
        Ok(decision)
    }

    /// Sends the command `command` makes, an `EVALSHA` of `script`, on this
    /// worker's link and reads its answer with `read`, all by `deadline`: the one
    /// round trip of every use of the store (the rate limiter's decisions, the
    /// Telegram mode's dedup). The command is made once there is a connection to
    /// send it on, so that a call that cannot be sent spends nothing (a
    /// decision's announcement turn). When Redis does not have the script
    /// (`NOSCRIPT`), it is loaded and run in one more round trip, within the same
    /// deadline. An answer marks Redis reachable; no answer, a broken connection
    /// or an answer `read` refuses marks it lost (said in the log once per
    /// change, see `health`), and a connection silent for `STALE_AFTER` is
    /// dropped. Nothing is counted in `fallbacks()`: each user counts its own.
    pub(crate) async fn run<T>(
        self: &Arc<Self>,
        script: &script::Script,
        command: impl FnOnce() -> Cmd,
        deadline: Instant,
        read: impl FnOnce(Value) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let link = self.link();
        let (mut conn, generation) = link.connection(&self.dialer, deadline).await?;
        let cmd = command();
        // A server's error reply comes back as a value: made an error here.
        let mut reply = timeout_at(deadline, conn.send_packed_command(&cmd))
            .await
            .map(|r| r.and_then(Value::extract_error));
        if matches!(&reply, Ok(Err(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
        {
            // Redis lost its scripts (`SCRIPT FLUSH`, or a restart that this
            // connection survived behind a proxy), or this script was never
            // loaded on this connection: load and run, one round trip.
            let pipe = script.load_and_run(cmd);
            reply = timeout_at(deadline, conn.send_packed_commands(&pipe, 1, 1))
                .await
                .map(|r| r.and_then(|mut v| v.pop().unwrap_or_default().extract_error()));
        }
        let outcome = match reply {
            Err(_elapsed) => Err(StoreError::Timeout),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Ok(Ok(value)) => read(value),
        };
        match outcome {
            Ok(answer) => {
                link.answered(crate::clock::nanos(Instant::now()));
                self.health.reached();
                Ok(answer)
            }
            Err(StoreError::Timeout) => {
                if link.timed_out(generation) {
                    self.health
                        .lost(&format_args!("no answer for {STALE_AFTER:?}"));
                }
                Err(StoreError::Timeout)
            }
            Err(e) => {
                if let StoreError::Redis(r) = &e {
                    if connection_lost(r) {
                        link.broken(generation);
                    }
                }
                self.health.lost(&e);
                Err(e)
            }
        }
    }

    /// This thread's link to the store, made on its first decision here.
    fn link(self: &Arc<Self>) -> Arc<Link> {
        LINKS.with_borrow_mut(|links| {
            let me = Arc::as_ptr(self);
            // A `Weak` keeps its allocation, so no other store can be at `me`
            // while an entry points there.
            if let Some((_, link)) = links.iter().find(|(s, _)| s.as_ptr() == me) {
                return Arc::clone(link);
            }
            links.retain(|(s, _)| s.strong_count() > 0);
            let link = Arc::new(Link::new());
            links.push((Arc::downgrade(self), Arc::clone(&link)));
            let mut all = self.links.lock().unwrap_or_else(PoisonError::into_inner);
            all.retain(|l| l.strong_count() > 0);
            all.push(Arc::downgrade(&link));
            link
        })
    }

    /// Replicas that decided within `Options::replica_window`, as Redis last
    /// said, this one included (1 before Redis ever answered). The fallback runs
    /// at `rate ÷ replicas_seen()`; while Redis is down, this is the count from
    /// before.
    pub fn replicas_seen(&self) -> usize {
        self.health.replicas()
    }

    /// This replica's share of `gcra` while the store does not answer (`share`
    /// with `replicas_seen()`): what the local fallback enforces.
    pub fn fallback(&self, gcra: Gcra) -> Gcra {
        share(gcra, self.replicas_seen())
    }

    /// Decisions that fell back (each `check` that returned an error), since the
    /// store was opened: `switchyard_rate_limit_fallback_total`.
    pub fn fallbacks(&self) -> u64 {
        self.health.fallbacks()
    }

    /// Whether the last word from Redis was an answer (false before the first).
    pub fn available(&self) -> bool {
        self.health.up()
    }

    /// The Telegram mode's dedup uses this store (the log then says so when Redis
    /// goes or comes back).
    pub(crate) fn used_for_dedup(&self) {
        self.health.used_for(Use::Dedup);
    }

    /// This replica's id in `REPLICAS_KEY`.
    pub fn replica_id(&self) -> &str {
        &self.replica
    }

    /// The store's address without credentials, for logs and the admin API.
    pub fn address(&self) -> &str {
        self.health.shown()
    }

    pub fn options(&self) -> &Options {
        &self.options
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        let links = self.links.get_mut().unwrap_or_else(PoisonError::into_inner);
        for link in links.drain(..).filter_map(|l| l.upgrade()) {
            link.close();
        }
    }
}

/// One replica's share of `gcra` while the store is unavailable, with `replicas`
/// falling back together: `rate ÷ replicas` and `burst ÷ replicas` (and `delay`
/// likewise), so that together they let through about what the shared limit
/// would. Stretching the emission interval does all three: the tolerances stay
/// the same spans of time, which at the slower rate hold that many fewer requests.
pub fn share(gcra: Gcra, replicas: usize) -> Gcra {
    Gcra {
        emission: gcra
            .emission
            .saturating_mul(replicas.max(1) as u64)
            .min(MAX_SPAN_NANOS),
        ..gcra
    }
}

/// Whether `e` leaves the connection unusable, so that a new one must be dialled
/// (rather than Redis refusing one command on a good connection).
fn connection_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        // A primary demoted to a replica (failover): the address now leads
        // elsewhere only on a new connection.
        || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::gcra::Verdict;

    const SEC: u64 = 1_000_000_000;

    /// Requests passing at `now` and then one per `step` for `steps` steps.
    fn passed(g: &Gcra, steps: u64, step: u64) -> usize {
        let mut tat = 0;
        let mut n = 0;
        for i in 0..=steps {
            let now = SEC + i * step;
            while let Verdict::Pass { tat: t, .. } = g.check(tat, now) {
                tat = t;
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_replicas_share_divides_rate_and_burst() {
        // 100/s, burst 50, four replicas: each 25/s with a burst of 12.
        let g = Gcra::new(100, SEC, 50, Some(10));
        let s = share(g, 4);
        assert_eq!(
            s,
            Gcra {
                emission: 4 * g.emission,
                ..g
            }
        );
        assert_eq!(passed(&g, 0, 0), 51);
        assert_eq!(passed(&s, 0, 0), 13);
        // Over ten seconds after the burst: 250 more, a quarter of 1000.
        assert_eq!(passed(&s, 1000, SEC / 100) - 13, 250);
        // One replica, or none seen: the whole limit.
        assert_eq!(share(g, 1), g);
        assert_eq!(share(g, 0), g);
    }
}
