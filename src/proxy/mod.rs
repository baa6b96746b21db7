//! The request path: route → pick a server → rewrite headers → forward → stream the
//! response back. One `ArcSwap` load per request; errors become responses in
//! `error.rs` only.

pub mod affinity;
mod attempts;
mod body;
mod forward;
pub mod headers;
mod payload;
mod redirect;
pub mod route;
mod tunnel;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

pub use body::{ClientBody, SendPhase, SendProgress, UpstreamBody};
pub use headers::ClientInfo;

use crate::body::RespBody;
use crate::error::ProxyError;
use crate::observe::{request_id, Observed, Record};
use crate::state::{ListenerId, Shared, Snapshot};
use attempts::Attempts;
use payload::Head;
use route::RouteMatch;

/// The hyper service of one client connection.
#[derive(Debug, Clone)]
pub struct ProxyService {
    shared: Arc<Shared>,
    listener: ListenerId,
    client: Arc<ClientInfo>,
}

impl ProxyService {
    pub fn new(shared: Arc<Shared>, listener: ListenerId, client: ClientInfo) -> Self {
        ProxyService {
            shared,
            listener,
            client: Arc::new(client),
        }
    }

    async fn handle(
        &self,
        snapshot: &Snapshot,
        mut req: Request<Incoming>,
        rec: &mut Record,
    ) -> Result<Response<RespBody>, ProxyError> {
        let listener = snapshot
            .listener(self.listener)
            .ok_or(ProxyError::NoRoute)?;
        let host = match headers::request_host(req.uri(), req.headers()) {
            Ok(Some(h)) => h,
            // HTTP/1.0 may omit Host; it is routed as an unnamed host (but a
            // redirect needs one).
            Ok(None) if req.version() <= Version::HTTP_10 && listener.redirect_https.is_none() => {
                HeaderValue::from_static("")
            }
            Ok(None) => return Err(ProxyError::BadRequest("missing Host")),
            Err(why) => return Err(ProxyError::BadRequest(why)),
        };
        if let Some(port) = listener.redirect_https {
            let host = host.to_str().unwrap_or_default();
            return Ok(redirect::to_https(req.method(), req.uri(), host, port));
        }
        let router = &listener.router;
        let route = match router.find(host.to_str().unwrap_or_default(), req.uri().path()) {
            RouteMatch::Route(i) => &snapshot.routes[i],
            RouteMatch::AddSlash => return Ok(add_slash_redirect(req.uri())),
            RouteMatch::None => return Err(ProxyError::NoRoute),
        };
        rec.route = Some(Arc::clone(&route.metrics));
        if !route.access_log {
            rec.unlog();
        }
        let upstream = &snapshot.upstreams[route.upstream];
        let cookie = upstream
            .sticky
            .as_ref()
            .and_then(|cfg| affinity::cookie(req.headers(), &cfg.cookie));
        let pinned = cookie.and_then(|id| upstream.sticky_server(id));
        let cookie = cookie.map(str::to_owned);
        let key = match pinned {
            Some(_) => None,
            None => upstream
                .hash_key
                .as_ref()
                .and_then(|k| affinity::key_hash(k, &req, self.client.remote.ip())),
        };

        // The target's authority, when there is one (HTTP/2, absolute-form), is the
        // host the request was routed by and replaces any Host header (RFC 9112
        // §3.2.2).
        if let Some(a) = req.uri().authority() {
            if let Ok(h) = HeaderValue::from_str(a.as_str()) {
                req.headers_mut().insert(header::HOST, h);
            }
        }
        forward::origin_form(req.uri_mut());
        let upgrade = tunnel::requested(&mut req);
        let (parts, body) = req.into_parts();
        let head = Head {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
        };
        let attempts = Attempts::new(self, route, upstream, &host, head, body, upgrade).await?;
        let (server, mut res) = attempts.run(pinned, key, rec).await?;
        if let Some(cfg) = &upstream.sticky {
            // A new or stale cookie, or a retry that moved the client: (re)set it.
            if cookie.as_deref() != Some(server.state.sticky_id.as_str()) {
                let c = affinity::sticky_cookie(&cfg.cookie, &server.state.sticky_id, cfg.ttl);
                res.headers_mut().append(header::SET_COOKIE, c);
            }
        }
        Ok(res)
    }
}

/// 301 to the same path with a trailing slash, query kept (nginx's behaviour for a
/// `location /api/` asked for `/api`).
fn add_slash_redirect(uri: &http::Uri) -> Response<RespBody> {
    let mut location = String::with_capacity(uri.path().len() + 1);
    location.push_str(uri.path());
    location.push('/');
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let mut res = crate::error::status_response(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<Observed>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Observed>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        let head_only = req.method() == Method::HEAD;
        Box::pin(async move {
            let snapshot = this.shared.load();
            let id = request_id::take_or_make(req.headers_mut());
            let mut rec = Record::start(&req, id, &this.client, snapshot.access_log.as_ref());
            let mut res = match this.handle(&snapshot, req, &mut rec).await {
                Ok(res) => res,
                Err(e) => {
                    tracing::debug!(error = %e, "request failed");
                    let mut res = e.to_response();
                    if head_only {
                        *res.body_mut() = RespBody::empty();
                    }
                    res
                }
            };
            // Only a TLS connection's responses carry HSTS (RFC 6797 §7.2). The
            // listener's policy replaces any the server sent, on every response,
            // errors included (nginx's `add_header ... always`).
            if this.client.scheme == "https" {
                if let Some(v) = snapshot
                    .listener(this.listener)
                    .and_then(|l| l.hsts.clone())
                {
                    res.headers_mut()
                        .insert(header::STRICT_TRANSPORT_SECURITY, v);
                }
            }
            Ok(rec.respond(res, &snapshot.unrouted))
        })
    }
}
