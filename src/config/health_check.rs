//! Health settings: `[upstream.NAME.health_check]` and the per-server passive keys
//! (`max_fails`, `fail_timeout`, `slow_start`). Types, defaults and their
//! validation live together here.

use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use serde::{Serialize, Serializer};

use super::raw::RawHealthCheck;
use super::ser;
use super::tree::bare;
use super::validate::Checker;

/// nginx's `max_fails` default: one failure takes a server out for `fail_timeout`.
pub const DEFAULT_MAX_FAILS: u32 = 1;
/// nginx's `fail_timeout` default is 10 s: both the window failures are counted in
/// and how long an ejected server rests before its trial request.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on `max_fails`: the exact sliding window keeps one timestamp per failure.
pub(super) const MAX_MAX_FAILS: u32 = 1000;
/// Envoy's outlier detection caps ejections at a share of the pool; 50 % keeps half
/// the primaries serving through any blip, while still ejecting one bad server of two.
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;

/// HAProxy's `option httpchk` convention, and what bot frameworks serve.
pub(super) const DEFAULT_CHECK_PATH: &str = "/health";
/// A check every 5 s finds a dead server within `fall` × 5 s: HAProxy's 2 s `inter` is
/// chattier than a fleet of small bots needs, nginx Plus's 5 s is the common choice.
pub(super) const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// A server slower than this to answer its health check is not healthy.
pub(super) const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Spread of each interval (±), so the checks of many proxies and servers do not
/// march in lock-step (HAProxy's `spread-checks`).
pub(super) const DEFAULT_CHECK_JITTER: f64 = 0.10;
/// HAProxy's `rise 2`: one lucky answer does not bring a flapping server back.
pub(super) const DEFAULT_RISE: u32 = 2;
/// HAProxy's `fall 3`: one lost check does not take a healthy server out.
pub(super) const DEFAULT_FALL: u32 = 3;
/// nginx Plus's `match` default: any 2xx or 3xx.
pub(super) const DEFAULT_EXPECT_STATUS: &str = "200-399";
/// Largest jitter accepted: beyond ±50 % the interval stops meaning anything.
const MAX_JITTER: f64 = 0.5;

/// `[upstream.NAME.health_check]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheckConfig {
    #[serde(serialize_with = "bare")]
    pub method: Method,
    /// Path and query of the check request.
    #[serde(serialize_with = "bare")]
    pub path: String,
    /// Host header; `None` sends the server's `ip:port`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_header_value"
    )]
    pub host: Option<HeaderValue>,
    /// Port to check instead of the server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(serialize_with = "ser::duration")]
    pub interval: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub timeout: Duration,
    /// Each interval is drawn from `interval × (1 ± jitter)`.
    #[serde(serialize_with = "ser::percent")]
    pub jitter: f64,
    pub rise: u32,
    pub fall: u32,
    pub expect_status: StatusSet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
}

/// Status codes as inclusive ranges (`"200-399"`, `"200,204"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl Serialize for StatusSet {
    /// `"200-399"`, `"200,204-206"`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        bare(&parts.join(","), s)
    }
}

impl StatusSet {
    pub fn contains(&self, s: StatusCode) -> bool {
        let s = s.as_u16();
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&s))
    }

    fn parse(text: &str) -> Result<Self, String> {
        let code = |t: &str| {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| format!("{:?} is not a status code (100-599)", t.trim()))
        };
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (code(a)?, code(b)?),
                None => (code(part)?, code(part)?),
            };
            if lo > hi {
                return Err(format!("range {:?} is empty", part.trim()));
            }
            ranges.push((lo, hi));
        }
        // Sorted and merged, so that two spellings of one set (`"200,201"`,
        // `"201, 200-201"`) are one value and are written back alike.
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some((_, last)) if lo <= last.saturating_add(1) => *last = (*last).max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Ok(StatusSet(merged))
    }
}

pub(super) fn check_health(
    c: &mut Checker,
    base: &str,
    raw: RawHealthCheck,
) -> Option<HealthCheckConfig> {
    let ok_before = c.problems.len();
    let path = raw.path.unwrap_or_else(|| DEFAULT_CHECK_PATH.to_owned());
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        c.err(
            format!("{base}.path"),
            format!("must start with \"/\" and contain no spaces: {path:?}"),
        );
    }
    let method = match raw.method.as_deref() {
        None => Method::GET,
        Some(m) => Method::from_bytes(m.as_bytes()).unwrap_or_else(|_| {
            c.err(format!("{base}.method"), format!("invalid method {m:?}"));
            Method::GET
        }),
    };
    let host = raw.host.and_then(|h| match HeaderValue::from_str(&h) {
        Ok(v) if !h.is_empty() => Some(v),
        _ => {
            c.err(format!("{base}.host"), format!("invalid Host value {h:?}"));
            None
        }
    });
    if raw.port == Some(0) {
        c.err(format!("{base}.port"), "must be between 1 and 65535");
    }
    let interval = c.duration(
        &format!("{base}.interval"),
        raw.interval.as_deref(),
        DEFAULT_CHECK_INTERVAL,
    );
    let timeout = c.duration(
        &format!("{base}.timeout"),
        raw.timeout.as_deref(),
        DEFAULT_CHECK_TIMEOUT,
    );
    let jitter = match raw.jitter.as_deref() {
        None => DEFAULT_CHECK_JITTER,
        Some(j) => match parse_percent(j) {
            Some(p) if p <= MAX_JITTER => p,
            _ => {
                c.err(
                    format!("{base}.jitter"),
                    format!("expected a percentage from \"0%\" to \"50%\", got {j:?}"),
                );
                DEFAULT_CHECK_JITTER
            }
        },
    };
    let mut count = |key: &str, v: Option<u32>, default: u32| {
        let v = v.unwrap_or(default);
        if !(1..=100).contains(&v) {
            c.err(
                format!("{base}.{key}"),
                format!("must be between 1 and 100, got {v}"),
            );
        }
        v
    };
    let rise = count("rise", raw.rise, DEFAULT_RISE);
    let fall = count("fall", raw.fall, DEFAULT_FALL);
    let expect_status = StatusSet::parse(
        raw.expect_status
            .as_deref()
            .unwrap_or(DEFAULT_EXPECT_STATUS),
    )
    .unwrap_or_else(|m| {
        c.err(
            format!("{base}.expect_status"),
            format!("{m} (expected e.g. \"200-399\" or \"200,204\")"),
        );
        StatusSet(Vec::new())
    });
    (c.problems.len() == ok_before).then_some(HealthCheckConfig {
        method,
        path,
        host,
        port: raw.port,
        interval,
        timeout,
        jitter,
        rise,
        fall,
        expect_status,
        expect_body: raw.expect_body.filter(|b| !b.is_empty()),
    })
}

/// `"10%"` → 0.1.
fn parse_percent(s: &str) -> Option<f64> {
    let v: f64 = s.strip_suffix('%')?.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets() {
        let s = StatusSet::parse("200-299, 304").unwrap();
        assert!(s.contains(StatusCode::OK) && s.contains(StatusCode::NOT_MODIFIED));
        assert!(!s.contains(StatusCode::MOVED_PERMANENTLY));
        assert!(StatusSet::parse("abc").is_err());
        assert!(StatusSet::parse("399-200").is_err());
        assert!(StatusSet::parse("700").is_err());
        assert_eq!(
            StatusSet::parse("204-206, 200, 201, 205-300").unwrap(),
            StatusSet::parse("200-201,204-300").unwrap()
        );
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("10%"), Some(0.1));
        assert_eq!(parse_percent("10"), None);
    }
}
