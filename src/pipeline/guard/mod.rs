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

use http::Request;
use hyper::body::Incoming;

use super::ctx::Ctx;
use super::filter::Stop;
use crate::config::{ListenerConfig, RouteConfig};

/// A built guard.
#[derive(Debug)]
pub enum Guard {}

impl Guard {
    /// Lets the request on, after a wait if the guard says so, or refuses it.
    pub async fn admit(&self, _ctx: &mut Ctx<'_>, _req: &Request<Incoming>) -> Result<(), Stop> {
        match *self {}
    }
}

/// A listener's guards, in the order they run.
pub fn for_listener(_l: &ListenerConfig) -> Box<[Guard]> {
    Box::new([])
}

/// A route's guards, in the order they run.
pub fn for_route(_r: &RouteConfig) -> Box<[Guard]> {
    Box::new([])
}
