//! `allow` and `deny`: refuses with 403 a client whose address the rules refuse.
//! The address is the real client's (`ctx.client`: after the PROXY protocol and a
//! trusted `X-Forwarded-For`). The rules were folded into one set of refused
//! addresses when the snapshot was built, so a request costs one binary search.

use crate::cidr::CidrSet;
use crate::config::AccessRules;
use crate::error::{ProxyError, Reason, Refusal};
use crate::pipeline::ctx::Ctx;
use crate::pipeline::filter::Stop;

/// nginx's answer to a denied address.
const DENIED: Refusal = Refusal {
    reason: Reason::Denied,
    status: http::StatusCode::FORBIDDEN,
    retry_after: None,
};

#[derive(Debug)]
pub struct Access {
    refused: CidrSet,
}

impl Access {
    /// The guard of `rules`; `None` when they refuse no one.
    pub fn new(rules: &AccessRules) -> Option<Access> {
        let refused = rules.refused();
        (!refused.is_empty()).then_some(Access { refused })
    }

    pub fn admit(&self, ctx: &Ctx<'_>) -> Result<(), Stop> {
        if self.refused.contains(ctx.client.remote.ip()) {
            return Err(Stop::Error(ProxyError::Refused(DENIED)));
        }
        Ok(())
    }
}
