//! The proxy action (`upstream = "NAME"`): pick a server of the upstream, rewrite
//! the head for it, forward, and stream the response back, with nginx's
//! `proxy_next_upstream` retries on other servers (`attempts`).

mod affinity;
mod attempts;
mod claim;
mod forward;
mod head;
pub mod headers;
mod tunnel;

use std::sync::Arc;

use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response};

use crate::config::{RetryPolicy, Timeouts};
use crate::error::ProxyError;
use crate::pipeline::ctx::Ctx;
use crate::pipeline::filter::Step;
use crate::pipeline::payload::Payload;
use crate::pipeline::reply::RespBody;
use crate::upstream::Upstream;
use attempts::{Attempts, ReqInfo};
use head::Head;

pub use forward::{is_idempotent, origin_form};

/// A proxying route's action.
#[derive(Debug)]
pub struct Proxy {
    /// Index of its upstream in the snapshot.
    pub upstream: usize,
    /// Its slot among the upstream's routes (each server counts requests per route).
    pub slot: usize,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// Place requests by their key on a consistent-hash ring whatever the
    /// upstream's algorithm (`balance::Affine`): the Telegram mode's chats.
    pub affine: bool,
}

impl Proxy {
    /// How much of a request body to hold in memory so that it can be sent again:
    /// `Some(limit)` for requests that may be resent. Idempotent bodies are held
    /// even without retries listed, so a stale pooled connection can be replayed.
    pub fn hold(&self, method: &Method) -> Option<u64> {
        let on = self.retry.on;
        let idempotent = is_idempotent(method);
        let may_resend = idempotent || on.non_idempotent;
        let hold = may_resend && (idempotent || (on.after_send() && self.retry.tries != 1));
        hold.then_some(self.retry.body_limit)
    }

    /// Sends the request to a server of `upstream` and returns its response; the
    /// server is left in `ctx.server`.
    pub async fn run<'s>(
        &'s self,
        ctx: &mut Ctx<'s>,
        upstream: &'s Arc<Upstream>,
        filters: &'s [Step],
        parts: Parts,
        payload: Payload,
    ) -> Result<Response<RespBody>, ProxyError> {
        let mut req = Request::from_parts(parts, ());
        let pinned = ctx
            .sticky
            .as_deref()
            .and_then(|id| upstream.sticky_server(id))
            .map(|(i, _)| i);
        let key = match pinned {
            Some(_) => None,
            // An affine route's requests without a key of their own go to the
            // least-loaded server, not by the upstream's `hash_key`.
            None if self.affine => ctx.affinity,
            None => ctx.affinity.or_else(|| {
                let k = upstream.hash_key.as_ref()?;
                affinity::key_hash(k, &req, ctx.client.remote.ip())
            }),
        };
        // The target's authority, when there is one (HTTP/2, absolute-form), is the
        // host the request was routed by and replaces any Host header (RFC 9112
        // §3.2.2).
        if let Some(a) = req.uri().authority() {
            if let Ok(h) = HeaderValue::from_str(a.as_str()) {
                req.headers_mut().insert(header::HOST, h);
            }
        }
        origin_form(req.uri_mut());
        let upgrade = tunnel::requested(&mut req);
        let (parts, ()) = req.into_parts();
        let head = Head {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
        };
        let info = ReqInfo {
            client: ctx.client,
            host: &ctx.host,
            request_id: &ctx.request_id,
            filters,
        };
        let attempts = Attempts::new(info, self, upstream, head, payload, upgrade)?;
        let (server, res) = attempts.run(pinned, key, &mut ctx.rec).await?;
        ctx.server = server.map(|i| &upstream.servers[i]);
        Ok(res)
    }
}
