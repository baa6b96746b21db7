//! The method filter (every listener has it): the request method, before routing.
//!
//! A method longer than `MAX_METHOD_LEN` is refused with 501. hyper takes a
//! method of any length up to the header-block limit (an 8 KiB one was forwarded),
//! and an extension method is otherwise passed on as it is.

use http::Request;
use hyper::body::Incoming;

use super::{Filter, Stop};
use crate::error::ProxyError;
use crate::pipeline::ctx::Ctx;

/// The longest method forwarded, in bytes. The longest registered method
/// (IANA's HTTP Method Registry) is `UPDATEREDIRECTREF`, 17 bytes; twice that
/// leaves room for private extension methods, while a longer one is not a method
/// any origin implements but a probe for buffers and logs. nginx has no such
/// limit: an 8 KiB method overflows its request-line buffer and gets 414, a status
/// about the URI. Switchyard answers 501 (RFC 9110 §9.1: a method the server does
/// not implement), a client-fault error that counts against no server.
pub const MAX_METHOD_LEN: usize = 32;

/// The filter.
#[derive(Debug)]
pub struct MethodCheck;

impl Filter for MethodCheck {
    fn request_head(&self, _ctx: &mut Ctx<'_>, req: &mut Request<Incoming>) -> Result<(), Stop> {
        if req.method().as_str().len() > MAX_METHOD_LEN {
            return Err(ProxyError::MethodTooLong.into());
        }
        Ok(())
    }
}
