//! The state behind the rate and concurrency limits, kept outside the
//! configuration snapshots so that a reload does not hand every client a fresh
//! budget. The guards of the request pipeline (`pipeline::guard`) consult it.
//!
//! - `gcra`: the arithmetic (nginx's `limit_req`), one timestamp per key.
//! - `key`: what a limit counts by, and its keyed hash.
//! - `table`: the local store of one rate limit (sharded, swept, bounded);
//!   `local`: the all-or-nothing decision over several.
//! - `conn`: `limit_conn`'s counts and the slot a request holds.
//! - `tables`: every table of a proxy, and its Redis stores, found again across
//!   reloads.
//! - `redis`: the same arithmetic run in Redis, for limits that several replicas
//!   share; `shared`: a list's decision when some of its limits live there.
//!
//! A request's rate limits are decided in one call, `check`: every limit passes
//! (and the request may have to wait) or the first that refuses is named, and
//! then none is charged. Where a limit's state lives is its `Store`: this
//! process (`Local`) or, for a budget shared by several proxies, a Redis server
//! they all reach (`Redis`).

pub mod conn;
pub mod gcra;
pub mod key;
mod local;
pub mod redis;
mod shared;
pub mod table;
mod tables;

use std::sync::Arc;
use std::time::Duration;

pub use conn::{ConnTable, Held, Slot};
pub use gcra::Gcra;
pub use key::KeyRef;
pub use local::check as check_local;
pub use redis::{RedisStore, Space};
pub use shared::SharedLimit;
pub use table::RateTable;
pub use tables::Tables;

/// Most limits of one kind a route or listener may list: a decision locks all of
/// theirs at once and keeps its state on the stack. ingress-nginx sets two (per
/// second and per minute); eight leaves room without inviting long chains.
pub const MAX_LIMITS: usize = 8;

/// Where a rate limit's state lives.
///
/// A shared store (Redis) decides its limits with the same arithmetic (`Gcra`)
/// on its own clock, all of a request's limits in that store in one round trip,
/// all or nothing, keyed by the request's key as such (`KeyRef::shared`; the
/// local hash is keyed per process). `check` composes the stores of a list (see
/// `shared`): the local limits are decided and charged first, then the shared
/// ones in one round trip (charged by the store if they pass); if the store
/// refuses, the local charges are taken back, so a request refused by one limit
/// is charged to none.
#[derive(Debug)]
pub enum Store {
    /// This process's table for the limit.
    Local(Arc<RateTable>),
    /// A budget every replica shares, in Redis.
    Redis(SharedLimit),
}
/// One rate limit, ready to decide.
#[derive(Debug)]
pub struct Limiter {
    pub gcra: Gcra,
    pub store: Store,
}

/// What the limits say of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every limit lets it through; it goes after `wait` (zero unless a limit
    /// delays its excess).
    Pass { wait: Duration },
    /// `limiters[index]` (the first that refused) turns it away; a request
    /// `retry_after` from now would pass every limit that refused this one.
    Refuse { index: usize, retry_after: Duration },
}

/// The decision on a request whose key for `limiters[i]` is `keys[i]` (`None`:
/// it has no such key, and that limit does not count it), at `now` (nanoseconds
/// on the proxy's clock, `clock::nanos`).
pub async fn check(limiters: &[Limiter], keys: &[Option<KeyRef<'_>>], now: u64) -> Decision {
    if limiters.iter().all(|l| matches!(l.store, Store::Local(_))) {
        // The usual case: one synchronous decision.
        return local::check(limiters, keys, now);
    }
    // Boxed: a Redis round trip's future is large, and inline it would grow
    // every request's future (the proxy's whole pipeline is one), allocated and
    // copied per request, whether its route has a shared limit or not.
    Box::pin(shared::check(limiters, keys, now)).await
}

/// The proxy's clock for the limiters, now: nanoseconds since a process-wide
/// epoch, read through `tokio::time` (a paused test clock drives it).
pub fn now() -> u64 {
    crate::clock::nanos(tokio::time::Instant::now())
}
