//! `rate_limit` and `limit_conn`, on a `[[route]]` or a `[[listener]]`: their raw
//! form, their checks (each problem at its key path) and their validated types.
//! Either key takes one table or an array of them; every limit listed must let a
//! request through.

use std::fmt;
use std::ops::Range;

use http::{HeaderName, StatusCode};
use serde::{Deserialize, Serialize, Serializer};

use super::ser::{self, REDACTED_TOKEN};
use super::tree::bare;
use super::validate::Checker;
use crate::limit::redis::UrlError;

/// `burst` when not given: none beyond the rate (nginx's `limit_req` default and
/// the issue's).
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 0;
/// `delay` when not given: no request waits, the excess within `burst` goes at
/// once (nginx's `nodelay`, which ingress-nginx's `limit-rps` uses).
pub const DEFAULT_RATE_LIMIT_DELAY: Delay = Delay::Count(0);
/// `key` when not given: each client address has its own budget (nginx's
/// `$binary_remote_addr`, the usual zone key).
pub const DEFAULT_LIMIT_KEY: LimitKey = LimitKey::ClientIp;
/// `status` when not given: 429 Too Many Requests (RFC 6585), which clients and
/// SDKs retry with backoff; nginx's 503 predates it (ingress users may set 503).
pub const DEFAULT_LIMIT_STATUS: StatusCode = StatusCode::TOO_MANY_REQUESTS;
/// Largest `N` of a rate: one request per nanosecond, the clock's resolution.
pub const MAX_RATE: u64 = 1_000_000_000;
/// Whether this build has a shared (Redis) store (`limit::redis`). Without one, a
/// Redis `store` would be refused when the file is loaded rather than silently
/// limited per process.
pub const REDIS_STORE_AVAILABLE: bool = true;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    rate: String,
    burst: Option<u32>,
    key: Option<String>,
    /// A count or `"all"`.
    delay: Option<toml::Value>,
    status: Option<u16>,
    store: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimitConn {
    max: u32,
    key: Option<String>,
    status: Option<u16>,
}

/// One `rate_limit`: nginx's `limit_req` (GCRA: at `rate` with `burst`, `burst + 1`
/// requests at once pass, then one every `1 / rate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimitConfig {
    #[serde(serialize_with = "bare")]
    pub rate: Rate,
    pub burst: u32,
    pub key: LimitKey,
    pub delay: Delay,
    #[serde(serialize_with = "ser::status")]
    pub status: StatusCode,
    pub store: LimitStore,
}

impl RateLimitConfig {
    /// What the limit's state depends on: a reload that keeps these (and the
    /// limit's place) keeps its table. `delay` and `status` change what is done
    /// with a verdict, not the state, so they are left out.
    pub fn state_id(&self) -> String {
        format!(
            "{} burst {} key {} store {}",
            self.rate, self.burst, self.key, self.store
        )
    }
}

/// One `limit_conn`: nginx's `limit_conn`, requests in flight per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitConnConfig {
    pub max: u32,
    pub key: LimitKey,
    #[serde(serialize_with = "ser::status")]
    pub status: StatusCode,
}

/// `"N/s"` or `"N/m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub per: Per,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
}

impl Per {
    /// Its length in nanoseconds.
    pub fn nanos(self) -> u64 {
        match self {
            Per::Second => 1_000_000_000,
            Per::Minute => 60_000_000_000,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per {
            Per::Second => "s",
            Per::Minute => "m",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// nginx's `delay=`: how many of the excess requests within `burst` go at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// The first N go at once, the rest of the burst wait their turn; 0: none
    /// waits (nginx's `nodelay`).
    Count(u32),
    /// `"all"`: every excess request waits its turn (nginx's `limit_req` with
    /// neither `nodelay` nor `delay`).
    All,
}

impl Delay {
    /// As `Gcra::new` takes it: how many excess requests go without waiting,
    /// `None` for all of them.
    pub fn free(self) -> Option<u64> {
        match self {
            Delay::Count(0) => None,
            Delay::Count(n) => Some(n.into()),
            Delay::All => Some(0),
        }
    }
}

impl Serialize for Delay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Delay::Count(n) => s.serialize_u32(*n),
            Delay::All => bare("all", s),
        }
    }
}

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's address.
    ClientIp,
    /// A request header's value; a request without it is not counted.
    Header(HeaderName),
    /// One budget for the route (on a listener: for the listener).
    Route,
    /// A cookie's value; a request without it is not counted.
    Cookie(String),
}

impl LimitKey {
    fn parse(s: &str) -> Result<LimitKey, String> {
        let expected = "(expected \"client_ip\", \"header:NAME\", \"cookie:NAME\" or \"route\")";
        Ok(match s.split_once(':') {
            None if s == "client_ip" => LimitKey::ClientIp,
            None if s == "route" => LimitKey::Route,
            Some(("header", name)) => LimitKey::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("invalid header name {name:?} in {s:?}"))?,
            ),
            Some(("cookie", name)) if is_cookie_name(name) => LimitKey::Cookie(name.to_owned()),
            Some(("cookie", name)) => return Err(format!("invalid cookie name {name:?} in {s:?}")),
            _ => return Err(format!("unknown key {s:?} {expected}")),
        })
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKey::ClientIp => f.write_str("client_ip"),
            LimitKey::Header(h) => write!(f, "header:{h}"),
            LimitKey::Route => f.write_str("route"),
            LimitKey::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

impl Serialize for LimitKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bare(self, s)
    }
}

/// A cookie name is an HTTP token (RFC 6265 §4.1.1).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Where a rate limit's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitStore {
    /// This process: each replica has its own budget.
    Local,
    /// A Redis server every replica shares.
    Redis(RedisUrl),
}

impl fmt::Display for LimitStore {
    /// A URL without its secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitStore::Local => f.write_str("local"),
            LimitStore::Redis(u) => f.write_str(&u.redacted()),
        }
    }
}

impl Serialize for LimitStore {
    /// `"local"` as a word, a URL as text, secrets and all (`config::ser` hides
    /// them where it must, with `hide_secrets`).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LimitStore::Local => bare("local", s),
            LimitStore::Redis(u) => s.serialize_str(&u.url),
        }
    }
}

/// A Redis server's URL: `redis://[[user]:password@]host[:port][/db]`, or a Unix
/// socket as `redis+unix:///path/redis.sock[?db=N]` or `unix:///…`. Checked by
/// the store's own parser (`limit::redis::check_url`), so that what the
/// configuration accepts is what the store opens. It knows where its secrets lie
/// (the password, and a socket URL's `pass=`), so that `config dump` and the
/// reload diff can write it without them; its `Debug` and `Display` never show
/// them.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// As written.
    pub url: String,
    /// The byte ranges of `url` that are secrets.
    secrets: Vec<Range<usize>>,
}

impl RedisUrl {
    pub(in crate::config) fn parse(url: &str) -> Result<RedisUrl, String> {
        if let Err(e) = crate::limit::redis::check_url(url) {
            return Err(match e {
                // Its message would repeat the URL, password and all.
                UrlError::Scheme(_) => format!(
                    "expected \"local\", \"redis://host:port/db\" or \"redis+unix:///path/redis.sock\", \
                     got a URL with scheme {:?}",
                    url.split_once("://").map_or("", |(s, _)| s)
                ),
                e => e.to_string(),
            });
        }
        let secrets = secret_spans(url);
        if secrets
            .iter()
            .any(|r| percent_decoded(&url[r.clone()]) == REDACTED_TOKEN)
        {
            return Err(format!(
                "the password is {REDACTED_TOKEN:?}, which `config dump` writes instead of \
                 the real one without --show-secrets: put the real password back"
            ));
        }
        Ok(RedisUrl {
            url: url.to_owned(),
            secrets,
        })
    }

    /// Whether the URL holds a secret.
    pub fn has_secret(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// The URL with each secret replaced by `hide(secret)`.
    pub fn hiding(&self, hide: &dyn Fn(&str) -> String) -> RedisUrl {
        let mut url = String::with_capacity(self.url.len());
        let mut at = 0;
        for r in &self.secrets {
            url.push_str(&self.url[at..r.start]);
            url.push_str(&hide(&self.url[r.clone()]));
            at = r.end;
        }
        url.push_str(&self.url[at..]);
        RedisUrl {
            url,
            secrets: Vec::new(),
        }
    }

    /// The URL with its secrets written as [`REDACTED_TOKEN`].
    pub fn redacted(&self) -> String {
        self.hiding(&|_| REDACTED_TOKEN.to_owned()).url
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({:?})", self.redacted())
    }
}

/// The byte ranges of a Redis URL's secrets, found as the URL parser redis-rs
/// uses (the `url` crate) finds them: the password of the userinfo, which runs
/// from after `://` to the last `@` before the first `/`, `?` or `#`; and the
/// value of a `pass` query pair (a socket URL's password). Empty ones hide
/// nothing and are left out.
fn secret_spans(url: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return out;
    };
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if let Some(at) = authority.rfind('@') {
        if let Some(colon) = authority[..at].find(':') {
            out.push(start + colon + 1..start + at);
        }
    }
    if let Some(q) = url.find('?') {
        let end = url[q..].find('#').map_or(url.len(), |i| q + i);
        let mut pos = q + 1;
        for pair in url[q + 1..end].split('&') {
            if let Some((name, _)) = pair.split_once('=') {
                if percent_decoded(name) == "pass" {
                    out.push(pos + name.len() + 1..pos + pair.len());
                }
            }
            pos += pair.len() + 1;
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// `s` with its `%XX` escapes decoded (and `+` as a space, as in a query), as
/// the URL parser reads a password or a query pair's name.
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |i: usize| {
        let digit = |c: u8| (c as char).to_digit(16);
        Some(digit(*b.get(i)?)? * 16 + digit(*b.get(i + 1)?)?)
    };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], hex(i + 1)) {
            (b'%', Some(v)) => {
                out.push(v as u8);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `list` with the secrets of its stores' URLs replaced by `hide(secret)`; `None`
/// when it has none (what `config dump` and the reload diff write).
pub(super) fn hide_secrets(
    list: &[RateLimitConfig],
    hide: &dyn Fn(&str) -> String,
) -> Option<Vec<RateLimitConfig>> {
    let secret = |l: &RateLimitConfig| matches!(&l.store, LimitStore::Redis(u) if u.has_secret());
    if !list.iter().any(secret) {
        return None;
    }
    let hidden = list
        .iter()
        .map(|l| match &l.store {
            LimitStore::Redis(u) => RateLimitConfig {
                store: LimitStore::Redis(u.hiding(hide)),
                ..l.clone()
            },
            LimitStore::Local => l.clone(),
        })
        .collect();
    Some(hidden)
}

/// `rate_limit = { … }` or `[{ … }, …]`, one table or each; as the file writes
/// it back, one table alone as a table.
pub(super) fn one_or_many<T: Serialize, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    match v {
        [one] => one.serialize(s),
        many => s.collect_seq(many),
    }
}

/// The elements of a `rate_limit` or `limit_conn` value, each deserialised at its
/// own path (`…rate_limit` for a table, `…rate_limit[i]` in an array).
fn elements<T: serde::de::DeserializeOwned>(
    c: &mut Checker,
    path: &str,
    value: toml::Value,
) -> Vec<(String, T)> {
    let items = match value {
        toml::Value::Table(_) => vec![(path.to_owned(), value)],
        toml::Value::Array(items) => {
            if items.len() > crate::limit::MAX_LIMITS {
                c.err(
                    path,
                    format!(
                        "at most {} limits, got {}",
                        crate::limit::MAX_LIMITS,
                        items.len()
                    ),
                );
                return Vec::new();
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect()
        }
        other => {
            c.err(
                path,
                format!(
                    "expected a table ({{ … }}) or an array of tables, got {}",
                    other.type_str()
                ),
            );
            return Vec::new();
        }
    };
    items
        .into_iter()
        .filter_map(|(p, v)| c.de::<T>(&p, v).map(|t| (p, t)))
        .collect()
}

/// A limit's `status`: an error status, 400 to 599.
fn check_status(c: &mut Checker, path: &str, status: Option<u16>) -> StatusCode {
    let Some(code) = status else {
        return DEFAULT_LIMIT_STATUS;
    };
    match StatusCode::from_u16(code) {
        Ok(s) if (400..=599).contains(&code) => s,
        _ => {
            c.err(
                format!("{path}.status"),
                format!("must be from 400 to 599, got {code}"),
            );
            DEFAULT_LIMIT_STATUS
        }
    }
}

fn check_key(c: &mut Checker, path: &str, key: Option<&str>) -> LimitKey {
    match key.map(LimitKey::parse) {
        None => DEFAULT_LIMIT_KEY,
        Some(Ok(k)) => k,
        Some(Err(m)) => {
            c.err(format!("{path}.key"), m);
            DEFAULT_LIMIT_KEY
        }
    }
}

/// `rate = "N/s"` or `"N/m"`.
fn parse_rate(s: &str) -> Result<Rate, String> {
    let (n, unit) = s
        .split_once('/')
        .ok_or_else(|| format!("expected \"N/s\" or \"N/m\" (e.g. \"1000/s\"), got {s:?}"))?;
    let per = match unit {
        "s" => Per::Second,
        "m" => Per::Minute,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?} (expected \"/s\" or \"/m\")"
            ))
        }
    };
    match n.parse::<u64>() {
        Ok(count) if (1..=MAX_RATE).contains(&count) => Ok(Rate { count, per }),
        _ => Err(format!(
            "the number of requests must be a whole number from 1 to {MAX_RATE}, got {n:?}"
        )),
    }
}

/// `rate_limit` at `path` (`route[2].rate_limit`, `listener[0].rate_limit`).
pub(super) fn check_rate_limits(
    c: &mut Checker,
    path: &str,
    value: Option<toml::Value>,
) -> Vec<RateLimitConfig> {
    let Some(value) = value else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (p, raw) in elements::<RawRateLimit>(c, path, value) {
        let rate = match parse_rate(&raw.rate) {
            Ok(r) => r,
            Err(m) => {
                c.err(format!("{p}.rate"), m);
                continue;
            }
        };
        let burst = raw.burst.unwrap_or(DEFAULT_RATE_LIMIT_BURST);
        let delay = match &raw.delay {
            None => DEFAULT_RATE_LIMIT_DELAY,
            Some(toml::Value::String(s)) if s == "all" => Delay::All,
            Some(toml::Value::Integer(n)) if (0..=i64::from(burst)).contains(n) => {
                Delay::Count(*n as u32)
            }
            Some(toml::Value::Integer(n)) => {
                c.err(
                    format!("{p}.delay"),
                    format!("must be from 0 (no request waits) to burst ({burst}), got {n}"),
                );
                DEFAULT_RATE_LIMIT_DELAY
            }
            Some(v) => {
                c.err(
                    format!("{p}.delay"),
                    format!("expected a number of requests or \"all\", got {v}"),
                );
                DEFAULT_RATE_LIMIT_DELAY
            }
        };
        let key = check_key(c, &p, raw.key.as_deref());
        let status = check_status(c, &p, raw.status);
        let store = match raw.store.as_deref() {
            None | Some("local") => LimitStore::Local,
            Some(url) => match RedisUrl::parse(url) {
                Ok(u) if REDIS_STORE_AVAILABLE => {
                    // One round trip decides a list's shared limits, all or
                    // nothing: that takes one store.
                    let other = out.iter().find_map(|l: &RateLimitConfig| match &l.store {
                        LimitStore::Redis(o) if o.url != u.url => Some(o.redacted()),
                        _ => None,
                    });
                    if let Some(other) = other {
                        c.err(
                            format!("{p}.store"),
                            format!(
                                "the shared limits of one list must use one store (another \
                                 limit here uses {other:?}): a request's shared limits are \
                                 decided in one round trip"
                            ),
                        );
                        continue;
                    }
                    LimitStore::Redis(u)
                }
                Ok(_) => {
                    c.err(
                        format!("{p}.store"),
                        "the redis store is not available in this build (use \"local\")",
                    );
                    continue;
                }
                Err(m) => {
                    c.err(format!("{p}.store"), m);
                    continue;
                }
            },
        };
        out.push(RateLimitConfig {
            rate,
            burst,
            key,
            delay,
            status,
            store,
        });
    }
    out
}

/// `limit_conn` at `path`.
pub(super) fn check_limit_conns(
    c: &mut Checker,
    path: &str,
    value: Option<toml::Value>,
) -> Vec<LimitConnConfig> {
    let Some(value) = value else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (p, raw) in elements::<RawLimitConn>(c, path, value) {
        if raw.max == 0 {
            c.err(
                format!("{p}.max"),
                "must be at least 1 (leave limit_conn out for no limit)",
            );
            continue;
        }
        out.push(LimitConnConfig {
            max: raw.max,
            key: check_key(c, &p, raw.key.as_deref()),
            status: check_status(c, &p, raw.status),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::validate::validate;
    use super::super::Config;
    use super::*;

    fn config(listener_extra: &str, route_extra: &str) -> String {
        format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n{listener_extra}\n\n\
             [[route]]\nupstream = \"api\"\n{route_extra}\n\n\
             [upstream.api]\nservers = [{{ addr = \"127.0.0.1:9001\" }}]\n"
        )
    }

    fn load(listener_extra: &str, route_extra: &str) -> Config {
        validate(&config(listener_extra, route_extra), Path::new("t.toml"))
            .unwrap_or_else(|p| panic!("{p:#?}"))
    }

    fn problems(listener_extra: &str, route_extra: &str) -> Vec<(String, String)> {
        validate(&config(listener_extra, route_extra), Path::new("t.toml"))
            .expect_err("expected problems")
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn defaults_and_both_forms() {
        let c = load(
            "rate_limit = { rate = \"100/s\" }\nlimit_conn = { max = 10 }",
            "rate_limit = [{ rate = \"1000/s\", burst = 5000, key = \"header:X-Chat-Id\", delay = 20, status = 503, store = \"local\" }, { rate = \"60000/m\", delay = \"all\", key = \"route\" }]\n\
             limit_conn = [{ max = 100, key = \"cookie:sid\", status = 503 }]",
        );
        let l = &c.listeners[0];
        assert_eq!(
            l.rate_limit,
            [RateLimitConfig {
                rate: Rate {
                    count: 100,
                    per: Per::Second
                },
                burst: 0,
                key: LimitKey::ClientIp,
                delay: Delay::Count(0),
                status: StatusCode::TOO_MANY_REQUESTS,
                store: LimitStore::Local,
            }]
        );
        assert_eq!(
            l.limit_conn,
            [LimitConnConfig {
                max: 10,
                key: LimitKey::ClientIp,
                status: StatusCode::TOO_MANY_REQUESTS
            }]
        );
        let r = &c.routes[0].rate_limit;
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].key,
            LimitKey::Header(HeaderName::from_static("x-chat-id"))
        );
        assert_eq!(
            (r[0].burst, r[0].delay, r[0].status.as_u16()),
            (5000, Delay::Count(20), 503)
        );
        assert_eq!(r[1].rate.to_string(), "60000/m");
        assert_eq!(
            (r[1].key.clone(), r[1].delay),
            (LimitKey::Route, Delay::All)
        );
        assert_eq!(
            c.routes[0].limit_conn[0].key,
            LimitKey::Cookie("sid".into())
        );
        // nodelay, delay=N and "all" as the arithmetic takes them.
        assert_eq!(Delay::Count(0).free(), None);
        assert_eq!(Delay::Count(3).free(), Some(3));
        assert_eq!(Delay::All.free(), Some(0));
    }

    #[test]
    fn every_problem_has_its_key_path() {
        let p = problems(
            "rate_limit = { rate = \"10/h\" }\nlimit_conn = { max = 0 }",
            "rate_limit = [{ rate = \"0/s\" }, { rate = \"5/s\", burst = 2, delay = 3, key = \"ip\", status = 302 }, { rate = \"5/s\", delay = \"some\", store = \"memcached://x\" }, { rate = \"5/s\", store = \"rediss://127.0.0.1:6379/0\" }, { rate = \"5/s\", burst = -1 }, { rate = \"5/s\", key = \"header:bad name\" }]\n\
             limit_conn = { max = 1, key = \"cookie:\", extra = 1 }",
        );
        let has = |key: &str, part: &str| {
            assert!(
                p.iter().any(|(k, m)| k == key && m.contains(part)),
                "no {key}: …{part}… in {p:#?}"
            )
        };
        has("listener[0].rate_limit.rate", "unknown unit \"h\"");
        has("listener[0].limit_conn.max", "at least 1");
        has("route[0].rate_limit[0].rate", "from 1 to 1000000000");
        has(
            "route[0].rate_limit[1].delay",
            "from 0 (no request waits) to burst (2), got 3",
        );
        has("route[0].rate_limit[1].key", "unknown key \"ip\"");
        has("route[0].rate_limit[1].status", "from 400 to 599, got 302");
        has(
            "route[0].rate_limit[2].delay",
            "a number of requests or \"all\"",
        );
        has(
            "route[0].rate_limit[2].store",
            "expected \"local\", \"redis://host:port/db\"",
        );
        has(
            "route[0].rate_limit[3].store",
            "TLS to Redis) is not supported",
        );
        has("route[0].rate_limit[4].burst", "");
        has("route[0].rate_limit[5].key", "invalid header name");
        has("route[0].limit_conn.extra", "unknown field");
        assert_eq!(p.len(), 12, "{p:#?}");
        let p = problems(
            "",
            "limit_conn = { max = 1, key = \"cookie:\" }\nrate_limit = 5",
        );
        assert_eq!(
            p,
            [
                (
                    "route[0].rate_limit".to_owned(),
                    "expected a table ({ … }) or an array of tables, got integer".to_owned()
                ),
                (
                    "route[0].limit_conn.key".to_owned(),
                    "invalid cookie name \"\" in \"cookie:\"".to_owned()
                ),
            ]
        );
        let many = ["{ rate = \"1/s\" }"; 9].join(", ");
        let p = problems("", &format!("rate_limit = [{many}]"));
        assert_eq!(p[0].0, "route[0].rate_limit");
        assert!(p[0].1.contains("at most 8 limits"), "{p:?}");
    }

    #[test]
    fn a_reload_diff_names_the_limit_keys_that_change() {
        let old = load(
            "rate_limit = { rate = \"10/s\" }",
            "rate_limit = { rate = \"5/s\", burst = 2 }",
        );
        let new = load(
            "rate_limit = { rate = \"10/s\", status = 503 }\nlimit_conn = { max = 3 }",
            "rate_limit = { rate = \"5/s\", burst = 3 }",
        );
        let lines: Vec<String> = super::super::diff(&old, &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "changed listener public: rate_limit.status 429 → 503",
                "added listener public limit_conn (max 3, key client_ip, status 429)",
                "changed route[0] (path /): rate_limit.burst 2 → 3",
            ]
        );
        // The state id leaves out what does not change the state.
        assert_eq!(
            old.listeners[0].rate_limit[0].state_id(),
            new.listeners[0].rate_limit[0].state_id()
        );
        assert_ne!(
            old.routes[0].rate_limit[0].state_id(),
            new.routes[0].rate_limit[0].state_id()
        );
    }

    #[test]
    fn redis_urls_are_checked_by_the_stores_parser() {
        let ok = |u: &str| RedisUrl::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"));
        for url in [
            "redis://10.0.0.5:6380/2",
            "redis://redis.internal",
            "redis://[::1]:7000/",
            "redis+unix:///run/redis/redis.sock?db=3",
            "unix:///run/redis/redis.sock",
        ] {
            assert_eq!(ok(url).url, url);
            assert!(!ok(url).has_secret(), "{url}");
        }
        for bad in [
            "redis://",
            "redis://host:x",
            "redis://host/db",
            "redis+unix://relative.sock",
            "http://host",
            "redis://[::1",
            "rediss://host:6379/0",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
        // A refused scheme is named without repeating the URL and its password.
        let e = RedisUrl::parse("redsi://:hunter2@host").unwrap_err();
        assert!(
            e.contains("scheme \"redsi\"") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn passwords_are_found_where_the_url_parser_finds_them_and_hidden() {
        let hidden = |u: &str| ok_url(u).redacted();
        assert_eq!(
            hidden("redis://:s3cret@redis.internal:6379/0"),
            "redis://:<redacted>@redis.internal:6379/0"
        );
        // The userinfo ends at the last @ of the authority: an @ in a password.
        assert_eq!(
            hidden("redis://app:p@ss:w0rd@10.0.0.5/1"),
            "redis://app:<redacted>@10.0.0.5/1"
        );
        // A user alone is no secret.
        assert_eq!(hidden("redis://app@h/0"), "redis://app@h/0");
        // A socket's password is a query pair, its name maybe escaped.
        assert_eq!(
            hidden("redis+unix:///run/r.sock?db=2&pass=s3cret"),
            "redis+unix:///run/r.sock?db=2&pass=<redacted>"
        );
        assert_eq!(
            hidden("unix:///run/r.sock?pa%73s=s3cret&db=1"),
            "unix:///run/r.sock?pa%73s=<redacted>&db=1"
        );
        let u = ok_url("redis://:s3cret@h/0");
        assert!(!format!("{u:?} {}", LimitStore::Redis(u.clone())).contains("s3cret"));
        // What `config dump` writes instead is refused as a password, escaped or not.
        for placeholder in [
            "redis://:<redacted>@h/0",
            "redis://:%3Credacted%3E@h/0",
            "unix:///r.sock?pass=%3Credacted%3E",
        ] {
            let e = RedisUrl::parse(placeholder).unwrap_err();
            assert!(
                e.contains("put the real password back"),
                "{placeholder}: {e}"
            );
        }
    }

    fn ok_url(u: &str) -> RedisUrl {
        RedisUrl::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"))
    }

    #[test]
    fn a_lists_shared_limits_take_one_store() {
        let c = load(
            "",
            "rate_limit = [{ rate = \"5/s\", store = \"redis://h:6379/0\" }, { rate = \"100/m\", store = \"redis://h:6379/0\" }, { rate = \"9/s\" }]",
        );
        assert_eq!(c.routes[0].rate_limit.len(), 3);
        let p = problems(
            "",
            "rate_limit = [{ rate = \"5/s\", store = \"redis://:pw@h:6379/0\" }, { rate = \"100/m\", store = \"redis://h:6379/1\" }]",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "route[0].rate_limit[1].store");
        assert!(
            p[0].1.contains("must use one store")
                && p[0].1.contains("redis://:<redacted>@h:6379/0"),
            "{p:?}"
        );
    }

    #[test]
    fn a_password_is_shown_by_dump_only_when_asked_and_never_by_the_diff() {
        use super::super::Secrets;
        let with = |pw: &str| {
            load(
                &format!("rate_limit = {{ rate = \"10/s\", store = \"redis://:{pw}@h:6379/0\" }}"),
                &format!(
                    "rate_limit = {{ rate = \"5/s\", store = \"redis+unix:///r.sock?pass={pw}\" }}"
                ),
            )
        };
        let old = with("0ld-s3cret");
        let dump = old.dump(Secrets::Redacted).unwrap();
        assert!(!dump.contains("0ld-s3cret"), "{dump}");
        assert!(dump.contains("redis://:<redacted>@h:6379/0"), "{dump}");
        assert!(
            dump.contains("redis+unix:///r.sock?pass=<redacted>"),
            "{dump}"
        );
        // The dump loads back only once the password is put back.
        assert!(validate(&dump, Path::new("t.toml")).is_err());
        let shown = old.dump(Secrets::Shown).unwrap();
        let back = validate(&shown, Path::new("t.toml")).unwrap();
        assert_eq!(back.listeners[0].rate_limit, old.listeners[0].rate_limit);
        assert_eq!(back.routes[0].rate_limit, old.routes[0].rate_limit);
        // A new password is a change, shown without either password.
        let new = with("n3w-s3cret");
        let lines: Vec<String> = super::super::diff(&old, &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        for l in &lines {
            assert!(
                l.contains("rate_limit.store") && l.contains("<redacted:"),
                "{l}"
            );
            assert!(!l.contains("s3cret"), "{l}");
        }
        assert!(super::super::diff(&old, &with("0ld-s3cret")).is_empty());
    }
}
