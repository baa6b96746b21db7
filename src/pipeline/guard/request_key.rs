//! A limit's key, read from the request without copying it.

use http::Request;

use crate::config::LimitKey;
use crate::limit::KeyRef;
use crate::pipeline::ctx::Ctx;
use crate::pipeline::filter::sticky::cookie;

/// The request's key for a limit counting by `key`; `None` when the request has
/// none (no such header or cookie, or an empty one), which that limit then does
/// not count, as nginx does not account a request whose key is empty.
pub(super) fn key_of<'r, B>(
    key: &LimitKey,
    ctx: &Ctx<'_>,
    req: &'r Request<B>,
) -> Option<KeyRef<'r>> {
    let bytes = |b: &'r [u8]| (!b.is_empty()).then_some(KeyRef::Bytes(b));
    match key {
        LimitKey::ClientIp => Some(KeyRef::Ip(ctx.client.remote.ip())),
        LimitKey::Header(name) => req.headers().get(name).and_then(|v| bytes(v.as_bytes())),
        LimitKey::Cookie(name) => cookie(req.headers(), name).and_then(|v| bytes(v.as_bytes())),
        LimitKey::Route => Some(KeyRef::Whole),
    }
}
