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

use super::claim::{take_pinned, Up, Waiting};
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

/// What the attempts give: a response with the index of the server that gave it
/// in the request's upstream, or the error that answers the request.
type Answer = Result<(Option<usize>, Response<RespBody>), ProxyError>;

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
    /// index of the server that gave it in the request's upstream (`None` for a
    /// server only a newer configuration has: one the request found after waiting
    /// in the queue).
    pub(super) async fn run(
        mut self,
        mut pinned: Option<usize>,
        key: Option<u64>,
        rec: &mut Record,
    ) -> Answer {
        if let Some(n) = self.payload.held_len() {
            rec.body_in = BodyIn::Held(n);
        }
        let policy = self.proxy.retry;
        let own = self.upstream;
        let max_tries = match policy.tries {
            0 => own.servers.len(),
            n => n as usize,
        };
        let deadline = policy.timeout.map(|t| Instant::now() + t);
        // Servers to skip; filled only when a retry follows, so a request that
        // succeeds at once allocates nothing here.
        let mut tried: Vec<usize> = Vec::new();
        let mut attempts = 0;
        let mut last: Option<Answer> = None;
        let timeouts = self.proxy.timeouts;
        let mut up = Up::Snapshot(own);
        let mut waiting = Waiting::new(own, timeouts.connect);
        loop {
            let pinned_slot = pinned
                .take()
                .and_then(|idx| take_pinned(own, idx, &mut tried));
            let claimed = match pinned_slot {
                Some(c) => Some(c),
                None => {
                    // A retry waits for a slot no longer than retries may go on.
                    let until = deadline.filter(|_| attempts > 0);
                    let claimed = waiting
                        .claim(&mut up, key, self.proxy.affine, &mut tried, until)
                        .await;
                    rec.queue_time = waiting.waited();
                    match claimed {
                        Ok(c) => c,
                        // A retry refused by the queue: the failure before it answers.
                        Err(e) => return last.unwrap_or(Err(e)),
                    }
                }
            };
            let Some((idx, mut guard)) = claimed else {
                return last.unwrap_or_else(|| Err(ProxyError::NoServer(up.get().retry_after())));
            };
            let upstream = up.get();
            let server = &upstream.servers[idx];
            // Where the server is in the request's own upstream, which the log and
            // the per-route counts index.
            let own_idx = if up.is_snapshot() {
                Some(idx)
            } else {
                own.position(server.state.addr())
            };
            attempts += 1;
            if attempts > 1 {
                upstream.metrics.retries.increment(1);
            }
            rec.tries = attempts as u32;
            rec.server = Some((own_idx.unwrap_or(usize::MAX), server.state.addr()));
            rec.upstream_status = None;
            rec.upstream_time = None;
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
                    upstream.record_failure(idx, &mut guard, &e.to_string());
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
            let Some((req, progress)) = self.request(upstream, server) else {
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
                || self.copy(upstream, server),
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
                        self.succeeded(upstream, idx, &mut guard);
                        drop(conn);
                        let res = super::tunnel::relay(res, upgrade, guard, timeouts.tunnel);
                        return Ok((own_idx, res));
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
                        self.succeeded(upstream, idx, &mut guard);
                        let res = forward::respond(conn, res, guard, timeouts, blame);
                        return Ok((own_idx, res));
                    }
                    let reason = format!("status {}", status.as_u16());
                    upstream.record_failure(idx, &mut guard, &reason);
                    let res = forward::respond(conn, res, guard, timeouts, blame);
                    if more && self.after_send && self.budget(upstream) {
                        tracing::debug!(server = %server.state.addr(), %status, "retrying on the next server");
                        // Kept, unread, in case no other server can answer.
                        tried.push(idx);
                        last = Some(Ok((own_idx, res)));
                        continue;
                    }
                    return Ok((own_idx, res));
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
                        self.succeeded(upstream, idx, &mut guard);
                        return Err(e);
                    }
                    upstream.record_failure(idx, &mut guard, &e.to_string());
                    drop(guard);
                    if more && self.after_send && self.budget(upstream) {
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

    /// The request for an attempt on `server` of `upstream`, with its body.
    fn request(
        &mut self,
        upstream: &Upstream,
        server: &UpstreamServer,
    ) -> Option<(Request<ReqBody>, Option<Arc<SendProgress>>)> {
        let (body, progress) = self.payload.take()?;
        let head = if self.keep {
            self.head.as_ref()?.copy()
        } else {
            self.head.take()?
        };
        Some((self.finish(upstream, head, server, body), progress))
    }

    /// Another copy of a held request, for replay on a fresh connection.
    fn copy(&self, upstream: &Upstream, server: &UpstreamServer) -> Option<Request<ReqBody>> {
        if !self.keep {
            return None;
        }
        let body = self.payload.copy()?;
        Some(self.finish(upstream, self.head.as_ref()?.copy(), server, body))
    }

    /// The server-dependent part of the head: proxy headers and `set_headers`, and
    /// the form the upstream's protocol wants.
    fn finish(
        &self,
        upstream: &Upstream,
        mut head: Head,
        server: &UpstreamServer,
        body: ReqBody,
    ) -> Request<ReqBody> {
        // An HTTP/1.0 request without a Host goes with the server's.
        if head.version <= Version::HTTP_10 && !head.headers.contains_key(header::HOST) {
            head.headers
                .insert(header::HOST, server.state.addr_header.clone());
        }
        let h2 = upstream.protocol.is_h2();
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

    fn budget(&self, upstream: &Upstream) -> bool {
        let ok = upstream
            .budget
            .withdraw(Instant::now(), upstream.requests());
        if !ok {
            tracing::debug!(upstream = %upstream.name, "retry budget exhausted");
        }
        ok
    }

    fn succeeded(&self, upstream: &Upstream, idx: usize, guard: &mut InFlight) {
        let s = &upstream.servers[idx];
        s.state
            .record_success(guard.take_admission(), s.passive.slow_start);
    }
}
