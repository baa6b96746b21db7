//! Guards: the checks that may refuse a request, or hold it back, before its
//! action — access rules, rate limits, concurrency limits, body size. One small
//! file each, like the filters, but a guard's check may wait (a delayed request
//! under `rate_limit`, a round trip to a shared store), so the phase is async.
//!
//! Where they run (`pipeline::walk`): after the listener's head filters (so the
//! client address is the real one and the host and path are normal) and the
//! router, the listener's guards, for routed and unrouted requests alike (a
//! scanner's 404s count against its budget too); then, after the route's head
//! filters, the route's. A guard refuses with `ProxyError::Refused`, which
//! `reply::error` answers and the route's `requests_limited_total` counts. What a
//! guard must hold until the response ends (a `limit_conn` slot) goes into the
//! request's `Record`, which lives as long as the response body.
//!
//! Within a listener or a route, `rate_limit` runs before `limit_conn`, as
//! nginx's `limit_req` runs before its `limit_conn`: a request waiting out its
//! delay holds no concurrency slot. A request a route's guard refuses has been
//! counted by its listener's limits already (they ran first).

mod limit_conn;
mod rate_limit;
mod request_key;

mod access;
mod body_size;
mod telegram;

use http::Request;
use hyper::body::Incoming;

use super::ctx::Ctx;
use super::filter::Stop;
use crate::config::{ListenerConfig, RouteConfig};
use crate::limit::Tables;

pub use limit_conn::LimitConn;
pub use rate_limit::RateLimit;

pub use access::Access;
pub use body_size::BodySize;
pub use telegram::{TelegramGate, SECRET_HEADER};

/// A built guard.
#[derive(Debug)]
pub enum Guard {
    /// `allow` / `deny`.
    Access(Access),
    /// `max_body_size`.
    BodySize(BodySize),
    /// `rate_limit`.
    RateLimit(RateLimit),
    /// `limit_conn`.
    LimitConn(LimitConn),
    /// A Telegram webhook's source and secret.
    Telegram(TelegramGate),
}

impl Guard {
    /// Lets the request on, after a wait if the guard says so, or refuses it.
    pub async fn admit(&self, ctx: &mut Ctx<'_>, req: &Request<Incoming>) -> Result<(), Stop> {
        match self {
            Guard::Access(g) => g.admit(ctx),
            Guard::BodySize(g) => g.admit(ctx, req),
            Guard::RateLimit(g) => g.admit(ctx, req).await,
            Guard::LimitConn(g) => g.admit(ctx, req),
            Guard::Telegram(g) => g.admit(ctx, req),
        }
    }
}

/// A listener's guards, in the order they run: access rules first, so a refused
/// address costs no limit's budget, then its limits, whose state comes from
/// `tables` (kept across reloads by the listener's name).
pub fn for_listener(l: &ListenerConfig, tables: &Tables) -> Box<[Guard]> {
    let mut guards = Vec::new();
    if let Some(a) = Access::new(&l.clients.access) {
        guards.push(Guard::Access(a));
    }
    let place = format!("listener {:?}", l.name);
    limits(&mut guards, &place, &l.rate_limit, &l.limit_conn, tables);
    guards.into()
}

/// A route's guards, in the order they run: access rules first (a refused
/// address spends nothing), then the body size (it costs nothing, and a request
/// it refuses should not spend a rate limit's budget), then its limits, whose
/// state comes from `tables` (kept across reloads by what makes the route the
/// same one to the reload diff: its listener, host, path and methods).
pub fn for_route(r: &RouteConfig, tables: &Tables) -> Box<[Guard]> {
    let mut guards = Vec::new();
    let telegram = r.telegram();
    // A webhook's gate first: an update from elsewhere, or without the secret,
    // spends nothing and learns nothing.
    if let Some(t) = telegram {
        guards.push(Guard::Telegram(TelegramGate::new(t)));
    }
    if let Some(a) = Access::new(&r.access) {
        guards.push(Guard::Access(a));
    }
    // Always present: a route without its own limit applies its listener's. A
    // webhook's action refuses a large body itself, and dead-letters it.
    if telegram.is_none() {
        guards.push(Guard::BodySize(BodySize::new(r.max_body_size)));
    }
    limits(
        &mut guards,
        &route_place(r),
        &r.rate_limit,
        &r.limit_conn,
        tables,
    );
    guards.into()
}

/// A route's place, naming its limits' state (local tables, and the key spaces
/// of shared limits in Redis, which every replica must name alike): what makes
/// the route the same one to the reload diff, so that a reload that keeps it
/// keeps its limits' state. `route "public" "api.example.com" path "/api/"
/// GET,POST`, `*` for a part left out (quoted parts cannot be confused with it).
pub(crate) fn route_place(r: &RouteConfig) -> String {
    let quoted = |s: Option<String>| s.map_or_else(|| "*".to_owned(), |s| format!("{s:?}"));
    let methods = r.methods.as_ref().map_or_else(
        || "*".to_owned(),
        |m| {
            // Sorted: the same set of methods in another order is the same route.
            let mut m: Vec<&str> = m.iter().map(http::Method::as_str).collect();
            m.sort_unstable();
            m.join(",")
        },
    );
    format!(
        "route {} {} {} {:?} {methods}",
        quoted(r.listener.clone()),
        quoted(r.host.as_ref().map(ToString::to_string)),
        r.path.key(),
        r.path.as_str(),
    )
}

/// The rate limits, then the concurrency limits (nginx's order: a request
/// refused by its rate takes no slot).
fn limits(
    guards: &mut Vec<Guard>,
    place: &str,
    rate: &[crate::config::RateLimitConfig],
    conn: &[crate::config::LimitConnConfig],
    tables: &Tables,
) {
    if !rate.is_empty() {
        guards.push(Guard::RateLimit(RateLimit::new(place, rate, tables)));
    }
    if !conn.is_empty() {
        guards.push(Guard::LimitConn(LimitConn::new(place, conn, tables)));
    }
}
