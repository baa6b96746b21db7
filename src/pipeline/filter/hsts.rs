//! `hsts` (TLS listeners): `Strict-Transport-Security` on every response, errors
//! included, replacing one the server sent (nginx's `add_header ... always`). Only
//! a TLS connection's responses carry it (RFC 6797 §7.2).

use http::{header, HeaderValue, Response};

use super::Filter;
use crate::pipeline::ctx::Ctx;
use crate::pipeline::reply::RespBody;

/// The filter, with the listener's header value.
#[derive(Debug)]
pub struct Hsts(pub HeaderValue);

impl Filter for Hsts {
    fn response_head(&self, ctx: &Ctx<'_>, res: &mut Response<RespBody>) {
        if ctx.client.scheme == "https" {
            res.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, self.0.clone());
        }
    }
}
