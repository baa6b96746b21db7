//! One client request's attempts: pick a server not tried yet, connect, send, and
//! judge the outcome for passive health and for a retry on the next server
//! (nginx's `proxy_next_upstream`, HAProxy's `retries` + `redispatch`).
//!
//! What may be retried:
//! - a failed connect, always: nothing was sent;
//! - after sending, the outcomes `next_upstream` lists, only for idempotent methods
//!   (or with `non_idempotent`), only with a body held in memory, and only within
//!   the upstream's retry budget; the response has not reached the client yet, as
//!   it is returned only once judged.

use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, Version};
use tokio::time::Instant;

use super::head::Head;
use super::{forward, headers, Proxy};
use crate::body::{ReqBody, SendProgress};
use crate::error::{Fault, ProxyError};
use crate::pipeline::client::ClientInfo;
use crate::pipeline::filter::{Filter, Step};
use crate::pipeline::log::{BodyIn, Record};
use crate::pipeline::payload::Payload;
use crate::pipeline::reply::RespBody;
use crate::pipeline::vars::Vars;
use crate::upstream::{Blame, InFlight, Upstream, UpstreamServer};

/// What the request brings to every attempt besides its head and body.
pub(super) struct ReqInfo<'a> {
    pub client: &'a ClientInfo,
    /// The request's host (`$host`).
    pub host: &'a HeaderValue,
    pub request_id: &'a HeaderValue,
    /// The route's filters: their `upstream_request` phase runs on every attempt.
    pub filters: &'a [Step],
}

pub(super) struct Attempts<'a> {
    req: ReqInfo<'a>,
    proxy: &'a Proxy,
    upstream: &'a Arc<Upstream>,
    /// `None` once moved into the only attempt that may send it.
    head: Option<Head>,
    payload: Payload,
    /// Each attempt sends a copy: the request may have to be sent again.
    keep: bool,
    /// Failures after sending may move to another server.
    after_send: bool,
    /// The client asked to switch protocols (WebSocket and the like).
    upgrade: Option<super::tunnel::Upgrade>,
}

/// Whether a failure was a timeout, in `next_upstream` terms (else an error).
fn is_timeout(e: &ProxyError) -> bool {
    matches!(
        e,
        ProxyError::ConnectTimeout | ProxyError::ReadTimeout | ProxyError::SendTimeout
    )
}

impl<'a> Attempts<'a> {
    /// Prepares the attempts of one request.
    pub(super) fn new(
        req: ReqInfo<'a>,
        proxy: &'a Proxy,
        upstream: &'a Arc<Upstream>,
        head: Head,
        payload: Payload,
        upgrade: Option<super::tunnel::Upgrade>,
    ) -> Result<Attempts<'a>, ProxyError> {
        let on = proxy.retry.on;
        let may_resend = forward::is_idempotent(&head.method) || on.non_idempotent;
        let keep = may_resend && payload.resendable();
        let upgrade = match upgrade {
            // The server side of a switch is HTTP/1.1's `Upgrade`, which HTTP/2 lacks.
            // An HTTP/1.1 client's offer may be ignored (RFC 9110 §7.8: it goes on
            // as a plain request); an HTTP/2 client's CONNECT cannot.
            Some(u) if upstream.protocol.is_h2() => {
                if u.extended() {
                    return Err(ProxyError::Unsupported(
                        "extended CONNECT to an HTTP/2 upstream",
                    ));
                }
                None
            }
            u => u,
        };
        Ok(Attempts {
            req,
            proxy,
            upstream,
            head: Some(head),
            after_send: keep && on.after_send(),
            keep,
            payload,
            upgrade,
        })
    }

    /// Runs attempts until one gives a response to return, and returns it with the
    /// index of the server that gave it.
    pub(super) async fn run(
        mut self,
        mut pinned: Option<(usize, &'a UpstreamServer)>,
        key: Option<u64>,
        rec: &mut Record,
    ) -> Result<(usize, Response<RespBody>), ProxyError> {
        if let Some(n) = self.payload.held_len() {
            rec.body_in = BodyIn::Held(n);
        }
        let policy = self.proxy.retry;
        let upstream = self.upstream;
        let max_tries = match policy.tries {
            0 => upstream.servers.len(),
            n => n as usize,
        };
        let deadline = policy.timeout.map(|t| Instant::now() + t);
        // Servers to skip; filled only when a retry follows, so a request that
        // succeeds at once allocates nothing here.
        let mut tried: Vec<usize> = Vec::new();
        let mut attempts = 0;
        let mut last: Option<Result<(usize, Response<RespBody>), ProxyError>> = None;
        let timeouts = self.proxy.timeouts;
        loop {
            let chosen = pinned.take().or_else(|| {
                upstream.pick(&crate::balance::PickCtx {
                    key,
                    skip: &tried,
                    base: 0,
                })
            });
            let Some((idx, server)) = chosen else {
                return last.unwrap_or_else(|| Err(ProxyError::NoServer(upstream.retry_after())));
            };
            // Lost the race for a resting server's one trial request: pick again.
            let Some(admission) = server.state.admit() else {
                tried.push(idx);
                continue;
            };
            attempts += 1;
            if attempts > 1 {
                upstream.metrics.retries.increment(1);
            }
            rec.tries = attempts as u32;
            rec.server = Some((idx, server.state.addr()));
            rec.upstream_status = None;
            rec.upstream_time = None;
            let mut guard = InFlight::new(Arc::clone(&server.state), upstream.measure);
            guard.set_admission(admission);
            let start = Instant::now();
            let more = attempts < max_tries && deadline.is_none_or(|d| start < d);

            let conn = match server.state.pool.checkout(timeouts.connect).await {
                Ok(c) => {
                    if !c.reused {
                        upstream
                            .metrics
                            .connect
                            .record(start.elapsed().as_secs_f64());
                    }
                    c
                }
                Err(e) => {
                    guard.fail();
                    self.failed(idx, &mut guard, &e.to_string());
                    drop(guard);
                    if more {
                        tracing::debug!(server = %server.state.addr(), error = %e, "connect failed; trying the next server");
                        tried.push(idx);
                        last = Some(Err(e));
                        continue;
                    }
                    return Err(e);
                }
            };
            let Some((req, progress)) = self.request(server) else {
                // Unreachable: without `keep`, the one request is only taken after a
                // successful connect, and nothing retries after it was sent.
                return last.unwrap_or(Err(ProxyError::NoServer(upstream.retry_after())));
            };
            if let Some(p) = &progress {
                rec.body_in = BodyIn::Stream(Arc::clone(p));
            }
            let sent_at = Instant::now();
            let sent = forward::exchange(
                conn,
                req,
                progress.as_deref(),
                &server.state.pool,
                timeouts,
                || self.copy(server),
            )
            .await;
            match sent {
                Ok((conn, res)) => {
                    let status = res.status();
                    let took = sent_at.elapsed();
                    upstream.metrics.header.record(took.as_secs_f64());
                    rec.upstream_status = Some(status);
                    rec.upstream_time = Some(took);
                    guard.on_head(status);
                    if status == http::StatusCode::SWITCHING_PROTOCOLS {
                        let Some(upgrade) = self.upgrade.take() else {
                            // A switch nobody asked for cannot be relayed.
                            guard.fail();
                            return Err(ProxyError::Connect(std::io::Error::other(
                                "unrequested 101 Switching Protocols",
                            )));
                        };
                        self.succeeded(idx, &mut guard);
                        drop(conn);
                        let res = super::tunnel::relay(res, upgrade, guard, timeouts.tunnel);
                        return Ok((idx, res));
                    }
                    // The server answers for its body too, unless the client's
                    // request body breaks it.
                    let blame = Blame {
                        upstream: Arc::clone(upstream),
                        server: idx,
                        on: policy.on,
                        progress,
                    };
                    if !policy.on.status(status) {
                        self.succeeded(idx, &mut guard);
                        let res = forward::respond(conn, res, guard, timeouts, blame);
                        return Ok((idx, res));
                    }
                    self.failed(idx, &mut guard, &format!("status {}", status.as_u16()));
                    let res = forward::respond(conn, res, guard, timeouts, blame);
                    if more && self.after_send && self.budget() {
                        tracing::debug!(server = %server.state.addr(), %status, "retrying on the next server");
                        // Kept, unread, in case no other server can answer.
                        tried.push(idx);
                        last = Some(Ok((idx, res)));
                        continue;
                    }
                    return Ok((idx, res));
                }
                Err(e) => {
                    // The client's side failed (its body malformed, cut short or
                    // stalled): nothing against the server (no failure, no latency
                    // sample, no retry or budget), and the client gets a 4xx.
                    if e.fault() == Fault::Client {
                        guard.discard();
                        return Err(e);
                    }
                    guard.fail();
                    let listed = if is_timeout(&e) {
                        policy.on.timeout
                    } else {
                        policy.on.error
                    };
                    if !listed {
                        self.succeeded(idx, &mut guard);
                        return Err(e);
                    }
                    self.failed(idx, &mut guard, &e.to_string());
                    drop(guard);
                    if more && self.after_send && self.budget() {
                        tracing::debug!(server = %server.state.addr(), error = %e, "retrying on the next server");
                        tried.push(idx);
                        last = Some(Err(e));
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The request for an attempt on `server`, with its body.
    fn request(
        &mut self,
        server: &UpstreamServer,
    ) -> Option<(Request<ReqBody>, Option<Arc<SendProgress>>)> {
        let (body, progress) = self.payload.take()?;
        let head = if self.keep {
            self.head.as_ref()?.copy()
        } else {
            self.head.take()?
        };
        Some((self.finish(head, server, body), progress))
    }

    /// Another copy of a held request, for replay on a fresh connection.
    fn copy(&self, server: &UpstreamServer) -> Option<Request<ReqBody>> {
        if !self.keep {
            return None;
        }
        let body = self.payload.copy()?;
        Some(self.finish(self.head.as_ref()?.copy(), server, body))
    }

    /// The server-dependent part of the head: proxy headers and `set_headers`, and
    /// the form the upstream's protocol wants.
    fn finish(&self, mut head: Head, server: &UpstreamServer, body: ReqBody) -> Request<ReqBody> {
        // An HTTP/1.0 request without a Host goes with the server's.
        if head.version <= Version::HTTP_10 && !head.headers.contains_key(header::HOST) {
            head.headers
                .insert(header::HOST, server.state.addr_header.clone());
        }
        let h2 = self.upstream.protocol.is_h2();
        // `TE` is hop-by-hop, but gRPC servers insist on `te: trailers` (it tells
        // them every hop passes trailers, which holds over HTTP/2).
        let te_trailers = h2 && headers::accepts_trailers(&head.headers);
        let vars = Vars {
            client: self.req.client,
            host: self.req.host,
            upstream_addr: Some(&server.state.addr_header),
            request_id: self.req.request_id,
            uri: &head.uri,
        };
        let filters = self.req.filters;
        let extra = filters.iter().map(Filter::upstream_headers).sum();
        let mut headers = std::mem::take(&mut head.headers);
        headers::forward(&mut headers, &vars, extra);
        for f in filters {
            f.upstream_request(&vars, &mut headers);
        }
        head.headers = headers;
        if let Some(u) = &self.upgrade {
            // Hop-by-hop, hence stripped above; an upgrade carries them on purpose.
            u.restore(&mut head.headers);
        }
        if h2 {
            if te_trailers {
                head.headers
                    .insert(header::TE, HeaderValue::from_static("trailers"));
            }
            let scheme = server.state.pool.transport().scheme();
            head.make_h2(scheme, &server.state.addr_header);
        } else {
            head.version = Version::HTTP_11;
        }
        head.into_request(body)
    }

    fn budget(&self) -> bool {
        let ok = self
            .upstream
            .budget
            .withdraw(Instant::now(), self.upstream.requests());
        if !ok {
            tracing::debug!(upstream = %self.upstream.name, "retry budget exhausted");
        }
        ok
    }

    fn failed(&self, idx: usize, guard: &mut InFlight, reason: &str) {
        self.upstream.record_failure(idx, guard, reason);
    }

    fn succeeded(&self, idx: usize, guard: &mut InFlight) {
        let s = &self.upstream.servers[idx];
        s.state
            .record_success(guard.take_admission(), s.passive.slow_start);
    }
}
