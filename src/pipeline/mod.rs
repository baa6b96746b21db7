//! The request pipeline: everything between a client's request head and the
//! response it gets, in one walk (`ProxyService::serve`):
//!
//! 1. connection phase, on accept: the listener's `ConnFilter`s (`server`);
//! 2. the listener's filters on the head: request id, framing check, host check,
//!    method check, the path normalised (what routing and the origin see);
//! 3. a `redirect_https` listener answers here; otherwise the router picks a
//!    route by host, path and method (`route`);
//! 4. the listener's guards (`guard`: access rules and limits, which may refuse
//!    or delay the request), then the router's answer when no route takes the
//!    request: 301 (add a slash), 404 or 405;
//! 5. the route's filters on the head (access log off, sticky cookie), then its
//!    guards;
//! 6. the body phase: the body is held in memory, bounded, when a filter must see
//!    it or a retry may have to send it again (`payload`);
//! 7. the route's action: proxy to an upstream, redirect, or respond (`action`);
//! 8. the route's filters, then the listener's, on the response (sticky cookie,
//!    request id, HSTS);
//! 9. the log: metrics and the access-log line when the body ends (`log`).
//!
//! One `ArcSwap` load per request (`Current`); errors become responses in
//! `reply::error` only.

pub mod action;
mod client;
mod ctx;
pub mod filter;
pub mod guard;
mod log;
mod payload;
pub mod real_ip;
pub mod reply;
pub mod route;
mod session;
mod snapshot;
pub mod vars;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

pub use client::ClientInfo;
pub use log::{BodyIn, Observed, Record};
pub use payload::Payload;
pub use reply::RespBody;
pub use session::{ConnSettings, Session, Turn};
pub use snapshot::{route_slots, Current, Listener, ListenerId, Parts, Route, Snapshot};

use crate::config::DEFAULT_CLIENT_BODY_TIMEOUT;
use crate::error::{ProxyError, Reason};
use action::Action;
use ctx::Ctx;
use filter::{Filter, Stop};
use route::RouteMatch;
use vars::Vars;

/// The hyper service of one client connection.
#[derive(Debug, Clone)]
pub struct ProxyService {
    current: Arc<Current>,
    listener: ListenerId,
    client: Arc<ClientInfo>,
    /// The connection's requests (`keepalive_requests`, the idle timers).
    session: Option<Arc<Session>>,
}

impl ProxyService {
    pub fn new(current: Arc<Current>, listener: ListenerId, client: ClientInfo) -> Self {
        ProxyService {
            current,
            listener,
            client: Arc::new(client),
            session: None,
        }
    }

    /// The service with its connection's session, which counts its requests.
    pub fn with_session(mut self, session: Arc<Session>) -> Self {
        self.session = Some(session);
        self
    }

    /// One request, start to finish.
    async fn serve(&self, req: Request<Incoming>) -> Response<Observed> {
        let snapshot = self.current.load();
        let head_only = req.method() == Method::HEAD;
        let version = req.version();
        let listener = snapshot.listener(self.listener);
        // The client every later step sees: the connection's, unless a trusted
        // proxy's `X-Forwarded-For` names another (only then is one allocated).
        let forwarded = listener
            .and_then(|l| l.real_ip.as_ref())
            .and_then(|r| r.client(&self.client, req.headers()))
            .map(Arc::new);
        let client = forwarded.as_ref().unwrap_or(&self.client);
        let rec = Record::start(&req, client, snapshot.access_log.as_ref());
        let body_timeout = listener.map_or(DEFAULT_CLIENT_BODY_TIMEOUT, |l| l.client_body_timeout);
        let mut ctx = Ctx::new(client, rec, body_timeout);
        ctx.max_body_size = listener.and_then(|l| l.max_body_size);
        ctx.rec.turn = self.session.as_ref().map(Session::begin);
        let (route, outcome) = match listener {
            Some(l) => walk(&snapshot, l, &mut ctx, req).await,
            // The listener left the configuration while this connection lives on.
            None => (None, Err(Stop::Error(ProxyError::NoRoute))),
        };
        let mut res = match outcome {
            Ok(res) => res,
            Err(Stop::Answer(res)) => *res,
            Err(Stop::Error(e)) => {
                tracing::debug!(error = %e, "request failed");
                if let Some(reason) = e.limited() {
                    count_limited(&snapshot, route, reason);
                }
                reply::error(&e)
            }
        };
        if head_only {
            if let RespBody::Full(b) = res.body_mut() {
                // Without a body hyper sends no length for HEAD; announce the one a
                // GET gets, as nginx does (RFC 9110 §9.3.2), except where GET sends
                // none either.
                let len = b.take().map_or(0, |b| b.len() as u64);
                let status = res.status();
                let no_length = status.is_informational()
                    || status == StatusCode::NO_CONTENT
                    || status == StatusCode::NOT_MODIFIED;
                if !no_length {
                    res.headers_mut()
                        .entry(header::CONTENT_LENGTH)
                        .or_insert_with(|| HeaderValue::from(len));
                }
            }
        }
        if let Some(r) = route {
            for f in r.filters.iter() {
                f.response_head(&ctx, &mut res);
            }
        }
        for f in listener.iter().flat_map(|l| l.filters.iter()) {
            f.response_head(&ctx, &mut res);
        }
        if let Some(turn) = &ctx.rec.turn {
            keep_alive(turn, version, &mut res);
        }
        let rec = ctx.rec;
        // The request counts against the last server it was sent to, if any.
        let (metrics, requests, series) = match route {
            Some(r) => {
                let tried = match (r.action.proxy(), rec.server) {
                    (Some(p), Some((i, _))) => snapshot.upstreams[p.upstream]
                        .servers
                        .get(i)
                        .and_then(|s| Some((s.requests.get(p.slot)?, &s.series))),
                    _ => None,
                };
                match tried {
                    Some((requests, series)) => (&r.metrics, requests, series),
                    None => (&r.metrics, &r.metrics.unsent, &r.metrics.series),
                }
            }
            None => (
                &snapshot.unrouted,
                &snapshot.unrouted.unsent,
                &snapshot.unrouted.series,
            ),
        };
        rec.respond(res, metrics, requests, series.as_ref())
    }
}

/// Counts a refused request in `requests_limited_total`. A queue's refusals are
/// counted by the upstream, whose handles exist once some server has a cap,
/// however it joined (see `Upstream::queue_refused`).
fn count_limited(snapshot: &Snapshot, route: Option<&Route>, reason: Reason) {
    if let Some(Action::Telegram(t)) = route.map(|r| &r.action) {
        t.refused(reason);
    }
    match (reason, route.and_then(|r| r.action.proxy())) {
        (Reason::Queue, Some(p)) => snapshot.upstreams[p.upstream].queue_refused(p.slot),
        _ => route
            .map_or(&snapshot.unrouted, |r| &r.metrics)
            .limited(reason),
    }
}

/// Phases 2 to 7: the route chosen (if any) and what answers the request.
async fn walk<'s>(
    snapshot: &'s Arc<Snapshot>,
    listener: &'s Listener,
    ctx: &mut Ctx<'s>,
    mut req: Request<Incoming>,
) -> (Option<&'s Route>, Result<Response<RespBody>, Stop>) {
    for f in listener.filters.iter() {
        if let Err(stop) = f.request_head(ctx, &mut req) {
            return (None, Err(stop));
        }
    }
    if let (Some(r), false) = (&listener.redirect, listener.webhooks) {
        return (None, Ok(r.run(req.method(), &vars(ctx, &req))));
    }
    let host = ctx.host.to_str().unwrap_or_default();
    let path = ctx.route_path.as_deref().unwrap_or(req.uri().path());
    let found = listener.router.find(host, path, req.method());
    let routed = match found {
        RouteMatch::Route(i) => Some(&snapshot.routes[i]),
        _ => None,
    };
    if let Some(r) = &listener.redirect {
        // Telegram follows no redirect: a webhook is served where it is asked.
        if !routed.is_some_and(|r| matches!(r.action, Action::Telegram(_))) {
            return (None, Ok(r.run(req.method(), &vars(ctx, &req))));
        }
    }
    if let Some(r) = routed {
        ctx.rec.route = Some(Arc::clone(&r.metrics));
    }
    for g in listener.guards.iter() {
        if let Err(stop) = g.admit(ctx, &req).await {
            return (routed, Err(stop));
        }
    }
    let route = match found {
        RouteMatch::Route(i) => &snapshot.routes[i],
        RouteMatch::AddSlash => {
            return (
                None,
                Ok(snapshot.add_slash.run(req.method(), &vars(ctx, &req))),
            )
        }
        RouteMatch::MethodNotAllowed(allow) => return (None, Ok(method_not_allowed(allow))),
        RouteMatch::None => return (None, Err(Stop::Error(ProxyError::NoRoute))),
    };
    for f in route.filters.iter() {
        if let Err(stop) = f.request_head(ctx, &mut req) {
            return (Some(route), Err(stop));
        }
    }
    for g in route.guards.iter() {
        if let Err(stop) = g.admit(ctx, &req).await {
            return (Some(route), Err(stop));
        }
    }
    (Some(route), act(snapshot, route, ctx, req).await)
}

/// Phases 6 and 7: the body, then the action.
async fn act<'s>(
    snapshot: &'s Arc<Snapshot>,
    route: &'s Route,
    ctx: &mut Ctx<'s>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Stop> {
    let (parts, body) = req.into_parts();
    let proxy = match &route.action {
        Action::Proxy(p) => p,
        // Boxed: see `ProxyService::call`.
        Action::Telegram(t) => return Ok(Box::pin(t.run(snapshot, ctx, parts, body)).await?),
        Action::Redirect(_) | Action::Respond(_) => {
            // The answer does not need the body; filters may still look at it.
            if route.body_limit.is_some() {
                body_phase(route, ctx, body, None).await?;
            }
            let req = Request::from_parts(parts, ());
            return Ok(match &route.action {
                Action::Redirect(r) => r.run(req.method(), &vars(ctx, &req)),
                Action::Respond(r) => r.run(),
                Action::Proxy(_) | Action::Telegram(_) => unreachable!("matched above"),
            });
        }
    };
    let hold = proxy.hold(&parts.method);
    let payload = body_phase(route, ctx, body, hold).await?;
    let upstream = &snapshot.upstreams[proxy.upstream];
    Ok(proxy
        .run(ctx, upstream, &route.filters, parts, payload)
        .await?)
}

/// Phase 6: reads the body into memory when the route's filters must see it
/// (refusing a larger one with 413) or the action may resend it (up to `hold`;
/// a larger one streams), and runs the filters' body phase.
async fn body_phase(
    route: &Route,
    ctx: &mut Ctx<'_>,
    body: Incoming,
    hold: Option<u64>,
) -> Result<Payload, Stop> {
    let limit = match (route.body_limit, hold) {
        (None, None) => return Ok(Payload::stream(body, ctx.body_limits())),
        (a, b) => a.max(b).unwrap_or_default(),
    };
    let payload = Payload::read(body, limit, ctx.body_limits()).await?;
    if let Some(need) = route.body_limit {
        let Some(data) = payload.held().cloned() else {
            return Err(Stop::Error(ProxyError::BodyTooLarge(need)));
        };
        if data.len() as u64 > need {
            return Err(Stop::Error(ProxyError::BodyTooLarge(need)));
        }
        for f in route.filters.iter() {
            f.request_body(ctx, &data)?;
        }
    }
    Ok(payload)
}

/// The template variables of a request that is not proxied.
fn vars<'a, B>(ctx: &'a Ctx<'_>, req: &'a Request<B>) -> Vars<'a> {
    Vars {
        client: ctx.client,
        host: &ctx.host,
        upstream_addr: None,
        request_id: &ctx.request_id,
        uri: req.uri(),
    }
}

/// The connection's side of a response: a protocol switch ends HTTP/1.1 on it;
/// the last response `keepalive_requests` allows closes it (`Connection: close`,
/// which hyper honours by closing once the response is written; HTTP/2 gets a
/// GOAWAY from the connection's driver instead).
fn keep_alive(turn: &Turn, version: http::Version, res: &mut Response<RespBody>) {
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        turn.session().mark_upgraded();
    } else if turn.last() && version <= http::Version::HTTP_11 {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// 405 with the methods the place takes.
fn method_not_allowed(allow: &[Method]) -> Response<RespBody> {
    let mut res = reply::status(StatusCode::METHOD_NOT_ALLOWED);
    let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
        res.headers_mut().insert(header::ALLOW, v);
    }
    res
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<Observed>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Observed>, Infallible>> + Send>>;

    /// The returned future is every request's: its size is allocated and copied
    /// per request (8 544 bytes before the rare paths were boxed, 7 864 after),
    /// so paths most requests do not take (a Redis-backed limit, the Telegram
    /// mode, reading a body to hold it, a new upstream connection, a retry on a
    /// fresh one, a queue wait) await a boxed future of their own where they
    /// begin, rather than growing this one.
    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.serve(req).await) })
    }
}
