//! `redirect = { status = 301, location = "https://$host$request_uri" }`: the route
//! answers with a redirect instead of proxying (nginx's `return 301 URL;`,
//! HAProxy's `http-request redirect location`).

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::super::validate::Checker;
use super::super::{HeaderTemplate, Variable};

/// nginx's `return URL` without a code, and HAProxy's `redirect` default: a
/// temporary redirect, so a mistake is not cached by browsers for good.
pub const DEFAULT_REDIRECT_STATUS: StatusCode = StatusCode::FOUND;

/// The statuses a redirect may use (RFC 9110 §15.4, without 300 and 304, which
/// are not redirects to one place).
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawRedirect {
    status: Option<u16>,
    location: String,
}

/// A validated redirect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedirectConfig {
    #[serde(serialize_with = "super::super::ser::status")]
    pub status: StatusCode,
    /// For a method other than GET and HEAD, this status instead (`redirect_https`
    /// sends 308 there, so a POST stays a POST); `None`: `status` for every method.
    /// Not a key of the file: only `redirect_https` sets it, after loading.
    #[serde(skip)]
    pub other_methods: Option<StatusCode>,
    /// `Location`, with nginx-style variables (`$host`, `$request_uri`, …).
    pub location: HeaderTemplate,
}

pub(in crate::config) fn check(
    c: &mut Checker,
    base: &str,
    raw: &RawRedirect,
) -> Option<RedirectConfig> {
    let status = match raw.status {
        None => DEFAULT_REDIRECT_STATUS,
        Some(s) if REDIRECT_STATUSES.contains(&s) => {
            StatusCode::from_u16(s).expect("listed statuses are valid")
        }
        Some(s) => {
            c.err(
                format!("{base}.status"),
                format!("expected one of 301, 302, 303, 307, 308, got {s}"),
            );
            return None;
        }
    };
    let path = format!("{base}.location");
    if raw.location.is_empty() {
        c.err(path, "must not be empty");
        return None;
    }
    let location = match HeaderTemplate::parse(&raw.location) {
        Ok(t) => t,
        Err(m) => {
            c.err(path, m);
            return None;
        }
    };
    if location.uses(Variable::UpstreamAddr) {
        c.err(
            path,
            "$upstream_addr is only known when a route proxies to an upstream",
        );
        return None;
    }
    Some(RedirectConfig {
        status,
        other_methods: None,
        location,
    })
}
