//! Filters: the steps around a request's action, one small file each. A filter
//! implements the phases it takes part in (the trait's methods all default to
//! doing nothing):
//!
//! 1. `request_head`: the head as received, before routing for a listener's
//!    filters, after it for a route's; may answer the request itself.
//! 2. `request_body`: the body, held in memory (up to `body_limit`), for filters
//!    that must see it before the action (a hash key from a JSON field, say).
//! 3. `upstream_request`: the head going to one server, once per attempt.
//! 4. `response_head`: the response, whatever produced it (the route's filters
//!    first, then the listener's).
//!
//! The connection phase (on accept) is `ConnFilter`'s.
//!
//! Filters are built once per configuration, as the enum `Step` so that each call
//! is a match, not an indirect call; a request runs only the filters of its
//! listener and route.

mod access_log;
mod framing;
mod host;
mod hsts;
pub mod method;
pub mod path;
pub mod request_id;
mod response_headers;
pub mod set_headers;
pub mod sticky;
mod telegram;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;

use super::ctx::Ctx;
use super::reply::RespBody;
use super::vars::Vars;
use crate::config::{ListenerConfig, RouteAction, RouteConfig, UpstreamConfig};
use crate::error::ProxyError;

pub use access_log::NoAccessLog;
pub use framing::Framing;
pub use host::{request_host, Host};
pub use hsts::Hsts;
pub use method::MethodCheck;
pub use path::NormalisePath;
pub use request_id::RequestId;
pub use response_headers::ResponseHeaders;
pub use set_headers::{HeaderAction, SetHeaders};
pub use sticky::Sticky;
pub use telegram::TelegramHeaders;

/// Why a filter ends a request early.
#[derive(Debug)]
pub enum Stop {
    /// Answered with the error's status (`reply::error`).
    Error(ProxyError),
    /// Answered with this response (boxed: answering early is the rare case).
    Answer(Box<Response<RespBody>>),
}

impl From<ProxyError> for Stop {
    fn from(e: ProxyError) -> Self {
        Stop::Error(e)
    }
}

/// One filter's part in each phase.
pub trait Filter {
    /// The request head; `Err` answers the request without going further.
    fn request_head(&self, _ctx: &mut Ctx<'_>, _req: &mut Request<Incoming>) -> Result<(), Stop> {
        Ok(())
    }

    /// How much of the body this filter must see before the action; `None`: it
    /// does not look at the body. A larger body is refused with 413.
    fn body_limit(&self) -> Option<u64> {
        None
    }

    /// The whole body, when `body_limit` asked for it.
    fn request_body(&self, _ctx: &mut Ctx<'_>, _body: &Bytes) -> Result<(), Stop> {
        Ok(())
    }

    /// How many headers `upstream_request` may add (room is made once).
    fn upstream_headers(&self) -> usize {
        0
    }

    /// The head of one attempt's request to a server, after the proxy headers.
    fn upstream_request(&self, _vars: &Vars<'_>, _headers: &mut HeaderMap) {}

    /// The response about to go to the client.
    fn response_head(&self, _ctx: &Ctx<'_>, _res: &mut Response<RespBody>) {}
}

/// A built filter.
#[derive(Debug)]
pub enum Step {
    RequestId(RequestId),
    Framing(Framing),
    Host(Host),
    MethodCheck(MethodCheck),
    NormalisePath(NormalisePath),
    Hsts(Hsts),
    NoAccessLog(NoAccessLog),
    SetHeaders(SetHeaders),
    Sticky(Sticky),
    ResponseHeaders(ResponseHeaders),
    TelegramHeaders(TelegramHeaders),
}

/// Calls the method on whichever filter `self` holds.
macro_rules! each {
    ($self:ident, $f:ident => $call:expr) => {
        match $self {
            Step::RequestId($f) => $call,
            Step::Framing($f) => $call,
            Step::Host($f) => $call,
            Step::MethodCheck($f) => $call,
            Step::NormalisePath($f) => $call,
            Step::Hsts($f) => $call,
            Step::NoAccessLog($f) => $call,
            Step::SetHeaders($f) => $call,
            Step::Sticky($f) => $call,
            Step::ResponseHeaders($f) => $call,
            Step::TelegramHeaders($f) => $call,
        }
    };
}

impl Filter for Step {
    fn request_head(&self, ctx: &mut Ctx<'_>, req: &mut Request<Incoming>) -> Result<(), Stop> {
        each!(self, f => f.request_head(ctx, req))
    }

    fn body_limit(&self) -> Option<u64> {
        each!(self, f => f.body_limit())
    }

    fn request_body(&self, ctx: &mut Ctx<'_>, body: &Bytes) -> Result<(), Stop> {
        each!(self, f => f.request_body(ctx, body))
    }

    fn upstream_headers(&self) -> usize {
        each!(self, f => f.upstream_headers())
    }

    fn upstream_request(&self, vars: &Vars<'_>, headers: &mut HeaderMap) {
        each!(self, f => f.upstream_request(vars, headers))
    }

    fn response_head(&self, ctx: &Ctx<'_>, res: &mut Response<RespBody>) {
        each!(self, f => f.response_head(ctx, res))
    }
}

/// A listener's filters: the request id first (so even a refused request has
/// one), the framing check (whose refusals close the connection, so it goes
/// before any other refusal), the host check, the method check, the path's
/// normal form (which the router and the origin see), and HSTS on TLS listeners.
pub fn for_listener(l: &ListenerConfig) -> Box<[Step]> {
    let mut steps = vec![
        Step::RequestId(RequestId),
        Step::Framing(Framing),
        Step::Host(Host {
            http10_without_host: l.redirect_https.is_none(),
        }),
        Step::MethodCheck(MethodCheck),
        Step::NormalisePath(NormalisePath),
    ];
    if let Some(v) = &l.hsts {
        steps.push(Step::Hsts(Hsts(v.clone())));
    }
    steps.into()
}

/// A route's filters, from its settings and those of the upstream it proxies to.
pub fn for_route(r: &RouteConfig, upstream: Option<&UpstreamConfig>) -> Box<[Step]> {
    let mut steps = Vec::new();
    if !r.access_log {
        steps.push(Step::NoAccessLog(NoAccessLog));
    }
    if matches!(r.action, RouteAction::Proxy(_)) && !r.set_headers.is_empty() {
        steps.push(Step::SetHeaders(SetHeaders::new(&r.set_headers)));
    }
    if let Some(t) = r.telegram() {
        // After `set_headers`, so that its headers are the ones the bots get.
        steps.push(Step::TelegramHeaders(TelegramHeaders::new(t)));
    } else if let Some(s) = upstream.and_then(|u| u.sticky.as_ref()) {
        // (Telegram keeps no cookies: a webhook places by chat instead.)
        steps.push(Step::Sticky(Sticky(s.clone())));
    }
    if !r.response_headers.is_empty() {
        steps.push(Step::ResponseHeaders(ResponseHeaders::new(
            &r.response_headers,
        )));
    }
    steps.into()
}

/// The connection phase: filters that judge a client connection on accept,
/// before any byte is read. None exist yet; this is where address rules and
/// connection limits go.
#[derive(Debug)]
pub enum ConnFilter {}

impl ConnFilter {
    /// Whether a connection from `remote` may proceed.
    pub fn admit(&self, _remote: std::net::SocketAddr) -> bool {
        match *self {}
    }
}
