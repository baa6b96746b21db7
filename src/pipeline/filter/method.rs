//! The method filter (every listener has it): the request method, and the forms
//! of request target that belong to particular methods (RFC 9112 §3.2), before
//! routing, which knows only paths.
//!
//! - A method longer than `MAX_METHOD_LEN` is refused with 501. hyper takes a
//!   method of any length up to the header-block limit, and an extension method
//!   is otherwise passed on as it is.
//! - `CONNECT host:port` asks for a tunnel: Switchyard is no forward proxy, so
//!   405 with `Allow`, and the connection is closed (a client that sends its
//!   tunnel's first bytes without waiting would have them read as a request).
//!   HTTP/2's extended CONNECT (RFC 8441, with `:protocol`) is not a tunnel to a
//!   host but a WebSocket on a path: it goes on to routing (`proxy::tunnel`).
//! - `OPTIONS *` asks about the server itself: the proxy answers 200 with
//!   `Allow`, no route involved.
//! - The asterisk form with any other method, and a target without a path (the
//!   authority form) with any method but CONNECT, are malformed: 400.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Filter, Stop};
use crate::error::ProxyError;
use crate::pipeline::ctx::Ctx;
use crate::pipeline::reply::{self, RespBody};

/// The longest method forwarded, in bytes. The longest registered method
/// (IANA's HTTP Method Registry) is `UPDATEREDIRECTREF`, 17 bytes; twice that
/// leaves room for private extension methods, while a longer one is not a method
/// any origin implements but a probe for buffers and logs. nginx has no such
/// limit: an 8 KiB method overflows its request-line buffer and gets 414, a status
/// about the URI. Switchyard answers 501 (RFC 9110 §9.1: a method the server does
/// not implement), a client-fault error that counts against no server.
pub const MAX_METHOD_LEN: usize = 32;

/// The `Allow` of the proxy's own answers about itself (`OPTIONS *`, a refused
/// CONNECT): the methods of RFC 9110 and PATCH, which it carries to any route
/// that takes them. Extension methods are carried too, but cannot be listed;
/// CONNECT is what it does not do.
pub const SERVER_ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH";

/// The filter.
#[derive(Debug)]
pub struct MethodCheck;

impl Filter for MethodCheck {
    fn request_head(&self, _ctx: &mut Ctx<'_>, req: &mut Request<Incoming>) -> Result<(), Stop> {
        let method = req.method();
        if method.as_str().len() > MAX_METHOD_LEN {
            return Err(ProxyError::MethodTooLong.into());
        }
        if *method == Method::CONNECT {
            if req.extensions().get::<hyper::ext::Protocol>().is_some() {
                return Ok(());
            }
            let mut res = with_allow(reply::status(StatusCode::METHOD_NOT_ALLOWED));
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(Stop::Answer(Box::new(res)));
        }
        match req.uri().path() {
            "*" if *method == Method::OPTIONS => Err(Stop::Answer(Box::new(with_allow(
                Response::new(RespBody::empty()),
            )))),
            "*" => Err(ProxyError::BadRequest("asterisk-form target without OPTIONS").into()),
            // The authority form (hyper leaves the path empty): CONNECT's alone.
            "" => Err(ProxyError::BadRequest("authority-form target without CONNECT").into()),
            _ => Ok(()),
        }
    }
}

fn with_allow(mut res: Response<RespBody>) -> Response<RespBody> {
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(SERVER_ALLOW));
    res
}
