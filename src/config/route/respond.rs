//! `respond = { status = 200, body = "ok\n", content_type = "text/plain" }`: the
//! route answers by itself (nginx's `return 200 "ok";`, HAProxy's
//! `http-request return`), for health endpoints, robots.txt and the like.

use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::super::validate::Checker;

/// nginx's `return` needs a code; a route that answers is most often a health
/// endpoint, which wants 200.
pub const DEFAULT_RESPOND_STATUS: StatusCode = StatusCode::OK;
/// What a body is labelled when `content_type` is not given: nginx's `return 200
/// "text"` is served as its `default_type`, which is usually text/plain.
pub const DEFAULT_RESPOND_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Largest body a route may answer with: it is held in memory by every
/// configuration that has it, and larger content belongs on an origin.
const MAX_RESPOND_BODY: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawRespond {
    status: Option<u16>,
    body: Option<String>,
    content_type: Option<String>,
}

/// A validated fixed answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RespondConfig {
    #[serde(serialize_with = "super::super::ser::status")]
    pub status: StatusCode,
    pub body: String,
    #[serde(serialize_with = "super::super::ser::header_value")]
    pub content_type: HeaderValue,
}

pub(in crate::config) fn check(
    c: &mut Checker,
    base: &str,
    raw: &RawRespond,
) -> Option<RespondConfig> {
    let before = c.problems.len();
    let status = match raw.status {
        None => DEFAULT_RESPOND_STATUS,
        // 1xx are interim and 101 would switch protocols: not a final answer.
        Some(s) if (200..=599).contains(&s) => StatusCode::from_u16(s).expect("in range"),
        Some(s) => {
            c.err(
                format!("{base}.status"),
                format!("expected a status from 200 to 599, got {s}"),
            );
            DEFAULT_RESPOND_STATUS
        }
    };
    let body = raw.body.clone().unwrap_or_default();
    if body.len() > MAX_RESPOND_BODY {
        c.err(
            format!("{base}.body"),
            format!(
                "{} bytes is over the {} KiB a route may answer with; serve it from an origin",
                body.len(),
                MAX_RESPOND_BODY / 1024
            ),
        );
    }
    let content_type = raw
        .content_type
        .as_deref()
        .unwrap_or(DEFAULT_RESPOND_CONTENT_TYPE);
    let content_type = match HeaderValue::from_str(content_type) {
        Ok(v) if !content_type.is_empty() => v,
        _ => {
            c.err(
                format!("{base}.content_type"),
                format!("{content_type:?} is not a valid header value"),
            );
            HeaderValue::from_static(DEFAULT_RESPOND_CONTENT_TYPE)
        }
    };
    (c.problems.len() == before).then_some(RespondConfig {
        status,
        body,
        content_type,
    })
}
