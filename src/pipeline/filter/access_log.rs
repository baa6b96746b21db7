//! `access_log = false` on a route: its requests are not written to the access log
//! (health checks of a load balancer in front, say). They still count in the
//! metrics.

use http::Request;
use hyper::body::Incoming;

use super::{Filter, Stop};
use crate::pipeline::ctx::Ctx;

/// The filter.
#[derive(Debug)]
pub struct NoAccessLog;

impl Filter for NoAccessLog {
    fn request_head(&self, ctx: &mut Ctx<'_>, _req: &mut Request<Incoming>) -> Result<(), Stop> {
        ctx.rec.unlog();
        Ok(())
    }
}
