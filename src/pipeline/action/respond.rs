//! The respond action (`respond = { status, body, content_type }`): the route
//! answers by itself, as nginx's `return 200 "ok";` does.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::config::RespondConfig;
use crate::pipeline::reply::RespBody;

/// The answer, ready to copy.
#[derive(Debug)]
pub struct Respond {
    status: StatusCode,
    body: Bytes,
    content_type: HeaderValue,
}

impl Respond {
    pub fn new(c: &RespondConfig) -> Self {
        Respond {
            status: c.status,
            body: Bytes::from(c.body.clone()),
            content_type: c.content_type.clone(),
        }
    }

    pub fn run(&self) -> Response<RespBody> {
        let mut res = Response::new(RespBody::Full(
            Some(self.body.clone()).filter(|b| !b.is_empty()),
        ));
        *res.status_mut() = self.status;
        if !self.body.is_empty() {
            res.headers_mut()
                .insert(header::CONTENT_TYPE, self.content_type.clone());
        }
        res
    }
}
