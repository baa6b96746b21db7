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

mod body_size;

use http::Request;
use hyper::body::Incoming;

use super::ctx::Ctx;
use super::filter::Stop;
use crate::config::{ListenerConfig, RouteConfig};

pub use body_size::BodySize;

/// A built guard.
#[derive(Debug)]
pub enum Guard {
    /// `max_body_size`.
    BodySize(BodySize),
}

impl Guard {
    /// Lets the request on, after a wait if the guard says so, or refuses it.
    pub async fn admit(&self, ctx: &mut Ctx<'_>, req: &Request<Incoming>) -> Result<(), Stop> {
        match self {
            Guard::BodySize(g) => g.admit(ctx, req),
        }
    }
}

/// A listener's guards, in the order they run.
pub fn for_listener(_l: &ListenerConfig) -> Box<[Guard]> {
    Box::new([])
}

/// A route's guards, in the order they run. The body size first: it costs
/// nothing and a request it refuses should not spend a rate limit's budget.
pub fn for_route(r: &RouteConfig) -> Box<[Guard]> {
    // Always present: a route without its own limit applies its listener's.
    let guards = vec![Guard::BodySize(BodySize::new(r.max_body_size))];
    guards.into_boxed_slice()
}
