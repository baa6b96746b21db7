//! The route's retry policy: `next_upstream`, `next_upstream_tries`,
//! `next_upstream_timeout` and `retry_body_limit` (nginx's `proxy_next_upstream`
//! family). Types, defaults and their validation live together here.

use std::time::Duration;

use http::StatusCode;
use serde::{Serialize, Serializer};

use super::tree::bare;
use super::validate::Checker;

/// Attempts per request, the first included: HAProxy's `retries 3` counts retries,
/// nginx counts tries; three tries ride out one dead server and one stale connection.
pub(super) const DEFAULT_NEXT_UPSTREAM_TRIES: u32 = 3;
/// Request bodies up to this size are held so that a retry can send them again;
/// larger ones stream and are sent once (nginx buffers whole bodies, which costs
/// memory per request and delays the upload).
pub(super) const DEFAULT_RETRY_BODY_LIMIT: u64 = 64 * 1024;
/// Upper bound on `retry_body_limit`: a retry buffer per in-flight request.
const MAX_RETRY_BODY_LIMIT: u64 = 16 * 1024 * 1024;

/// What `next_upstream` lists: the outcomes that count as a server's failure and
/// that may be retried on another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextUpstream {
    pub error: bool,
    pub timeout: bool,
    /// Statuses listed as `http_XXX`, as a bit per entry of `RETRY_STATUSES`.
    statuses: u8,
    pub non_idempotent: bool,
}

/// The statuses `next_upstream` may name (nginx's set).
const RETRY_STATUSES: [u16; 5] = [500, 502, 503, 504, 429];

impl Default for NextUpstream {
    /// nginx's `proxy_next_upstream error timeout`.
    fn default() -> Self {
        NextUpstream {
            error: true,
            timeout: true,
            statuses: 0,
            non_idempotent: false,
        }
    }
}

impl Serialize for NextUpstream {
    /// The list of names, in the order of `NAMES`: `["error", "timeout", "http_502"]`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names().into_iter().map(Word))
    }
}

/// A name written as a bare word.
struct Word(&'static str);

impl Serialize for Word {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bare(self.0, s)
    }
}

impl NextUpstream {
    /// The names that set it, in the order of `NAMES`.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.error {
            out.push("error");
        }
        if self.timeout {
            out.push("timeout");
        }
        for (i, code) in RETRY_STATUSES.iter().enumerate() {
            if self.statuses & (1 << i) != 0 {
                let name = Self::NAMES
                    .iter()
                    .find(|n| n.strip_prefix("http_") == Some(code.to_string().as_str()));
                out.extend(name.copied());
            }
        }
        if self.non_idempotent {
            out.push("non_idempotent");
        }
        out
    }

    pub const NAMES: &'static [&'static str] = &[
        "error",
        "timeout",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "http_429",
        "non_idempotent",
    ];

    /// Whether a response with this status is a failure to retry.
    pub fn status(&self, s: StatusCode) -> bool {
        self.statuses != 0
            && RETRY_STATUSES
                .iter()
                .enumerate()
                .any(|(i, &c)| self.statuses & (1 << i) != 0 && s.as_u16() == c)
    }

    /// Whether anything may be retried once the request has been sent.
    pub fn after_send(&self) -> bool {
        self.error || self.timeout || self.statuses != 0
    }

    fn parse(names: &[String]) -> Result<Self, String> {
        let mut n = NextUpstream {
            error: false,
            timeout: false,
            statuses: 0,
            non_idempotent: false,
        };
        for name in names {
            match name.as_str() {
                "error" => n.error = true,
                "timeout" => n.timeout = true,
                "non_idempotent" => n.non_idempotent = true,
                other => {
                    let i = other
                        .strip_prefix("http_")
                        .and_then(|c| c.parse::<u16>().ok())
                        .and_then(|c| RETRY_STATUSES.iter().position(|&s| s == c))
                        .ok_or_else(|| {
                            format!(
                                "unknown condition {other:?} (expected any of: {})",
                                Self::NAMES.join(", ")
                            )
                        })?;
                    n.statuses |= 1 << i;
                }
            }
        }
        Ok(n)
    }
}

/// A route's retry policy, serialised as the route's `next_upstream*` and
/// `retry_body_limit` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    #[serde(rename = "next_upstream")]
    pub on: NextUpstream,
    /// Attempts in all, the first included; 0 = each server once.
    #[serde(rename = "next_upstream_tries")]
    pub tries: u32,
    /// No new attempt once this long has passed since the first; `None`: no limit
    /// (written "0s", as the file says it).
    #[serde(rename = "next_upstream_timeout", serialize_with = "no_limit")]
    pub timeout: Option<Duration>,
    #[serde(rename = "retry_body_limit", serialize_with = "super::ser::size")]
    pub body_limit: u64,
}

fn no_limit<S: Serializer>(t: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    super::ser::duration(&t.unwrap_or_default(), s)
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            on: NextUpstream::default(),
            tries: DEFAULT_NEXT_UPSTREAM_TRIES,
            timeout: None,
            body_limit: DEFAULT_RETRY_BODY_LIMIT,
        }
    }
}

/// Checks the route's retry keys.
pub(super) fn check_retry(
    c: &mut Checker,
    base: &str,
    next_upstream: Option<Vec<String>>,
    tries: Option<u32>,
    timeout: Option<String>,
    body_limit: Option<toml::Value>,
) -> RetryPolicy {
    let mut p = RetryPolicy::default();
    if let Some(names) = next_upstream {
        match NextUpstream::parse(&names) {
            Ok(n) => p.on = n,
            Err(m) => c.err(format!("{base}.next_upstream"), m),
        }
    }
    if let Some(t) = tries {
        if t > 100 {
            c.err(
                format!("{base}.next_upstream_tries"),
                format!("must be at most 100 (0: each server once), got {t}"),
            );
        }
        p.tries = t;
    }
    let t = c.duration_or_zero(
        &format!("{base}.next_upstream_timeout"),
        timeout.as_deref(),
        Duration::ZERO,
    );
    p.timeout = (!t.is_zero()).then_some(t);
    if let Some(v) = body_limit {
        match parse_size(&v) {
            Some(n) if n <= MAX_RETRY_BODY_LIMIT => p.body_limit = n,
            _ => c.err(
                format!("{base}.retry_body_limit"),
                format!("expected a size up to 16MiB such as \"64KiB\" or a byte count, got {v}"),
            ),
        }
    }
    p
}

/// A byte count, or a string with nginx's or IEC suffixes: `"512"`, `"64k"`,
/// `"64KiB"`, `"1m"`, `"1MiB"`, `"1g"`, `"1GiB"` (all binary, as nginx's sizes are).
pub(super) fn parse_size(v: &toml::Value) -> Option<u64> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => {
            let s = s.trim();
            let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let n: u64 = s[..digits].parse().ok()?;
            let unit = match s[digits..].trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                _ => return None,
            };
            n.checked_mul(unit)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let s = |t: &str| parse_size(&toml::Value::String(t.into()));
        assert_eq!(s("64KiB"), Some(65536));
        assert_eq!(s("64k"), Some(65536));
        assert_eq!(s("1MiB"), Some(1 << 20));
        assert_eq!(s("2g"), Some(2 << 30));
        assert_eq!(s("12"), Some(12));
        assert_eq!(s("1 GB"), Some(1 << 30));
        assert_eq!(s("1 TB"), None);
        assert_eq!(parse_size(&toml::Value::Integer(100)), Some(100));
    }

    #[test]
    fn next_upstream_names() {
        let n = NextUpstream::parse(&["http_502".into(), "non_idempotent".into()]).unwrap();
        assert!(n.status(StatusCode::BAD_GATEWAY) && !n.status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!n.error && !n.timeout && n.non_idempotent && n.after_send());
        assert!(NextUpstream::parse(&["http_418".into()]).is_err());
        assert!(!NextUpstream::parse(&[]).unwrap().after_send());
    }
}
