//! The request id filter (every listener has it, first): the id is kept from the
//! client's `X-Request-Id` when it is a sane token, otherwise made here (32 hex
//! digits, the shape of nginx's `$request_id`). It goes upstream, back to the
//! client (on the proxy's own answers too), and into the access log, so one request
//! can be followed through every hop.

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::{Filter, Stop};
use crate::pipeline::ctx::Ctx;
use crate::pipeline::reply::RespBody;

/// The filter.
#[derive(Debug)]
pub struct RequestId;

impl Filter for RequestId {
    fn request_head(&self, ctx: &mut Ctx<'_>, req: &mut Request<Incoming>) -> Result<(), Stop> {
        let id = take_or_make(req.headers_mut());
        ctx.rec.id = id.clone();
        ctx.request_id = id;
        Ok(())
    }

    fn response_head(&self, ctx: &Ctx<'_>, res: &mut Response<RespBody>) {
        res.headers_mut()
            .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    }
}

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming id kept. Ids are tokens (UUIDs are 36 characters); anything
/// longer is more likely abuse of a header that gets logged on every line.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's id: the client's (the first, if it sent several) when valid,
/// else a new one; either way the request carries exactly that one afterwards.
pub fn take_or_make(headers: &mut HeaderMap) -> HeaderValue {
    let mut given = headers.get_all(&X_REQUEST_ID).iter();
    let kept = match (given.next(), given.next()) {
        (Some(v), None) if valid(v) => return v.clone(),
        (Some(v), Some(_)) if valid(v) => v.clone(),
        _ => generate(),
    };
    headers.insert(X_REQUEST_ID.clone(), kept.clone());
    kept
}

/// Visible ASCII only: no spaces, quotes or control characters that could break a
/// log line or a header downstream.
fn valid(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_REQUEST_ID_LEN
        && b.iter()
            .all(|&c| (0x21..=0x7e).contains(&c) && c != b'"' && c != b'\\')
}

/// 128 random bits as 32 lower-case hex digits.
pub fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    let words = [crate::rng::next_u64(), crate::rng::next_u64()];
    for (i, byte) in words.iter().flat_map(|w| w.to_be_bytes()).enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&out).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_id_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(take_or_make(&mut h), "abc-123");
        assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
    }

    #[test]
    fn a_missing_or_bad_id_is_replaced() {
        for bad in [
            "",
            "has space",
            "quote\"",
            &"x".repeat(MAX_REQUEST_ID_LEN + 1),
        ] {
            let mut h = HeaderMap::new();
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = take_or_make(&mut h);
            assert_eq!(id.len(), 32, "{bad:?}");
            assert_eq!(h.get(&X_REQUEST_ID), Some(&id));
        }
        let mut h = HeaderMap::new();
        let a = take_or_make(&mut h);
        let b = take_or_make(&mut HeaderMap::new());
        assert_ne!(a, b);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn of_several_ids_the_first_is_kept_alone() {
        let mut h = HeaderMap::new();
        h.append(&X_REQUEST_ID, HeaderValue::from_static("first"));
        h.append(&X_REQUEST_ID, HeaderValue::from_static("second"));
        assert_eq!(take_or_make(&mut h), "first");
        assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
    }
}
