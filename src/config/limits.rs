//! `rate_limit` and `limit_conn`, on a `[[route]]` or a `[[listener]]`: their raw
//! form, their checks (each problem at its key path) and their validated types.
//! Either key takes one table or an array of them; every limit listed must let a
//! request through.

use std::fmt;

use http::{HeaderName, StatusCode};
use serde::{Deserialize, Serialize, Serializer};

use super::ser;
use super::tree::bare;
use super::validate::Checker;

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
/// Whether this build has a shared (Redis) store. Until it does, a Redis `store`
/// is refused when the file is loaded rather than silently limited per process.
pub const REDIS_STORE_AVAILABLE: bool = false;

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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitStore::Local => f.write_str("local"),
            LimitStore::Redis(u) => f.write_str(&u.url),
        }
    }
}

impl Serialize for LimitStore {
    /// `"local"` as a word, a URL as text.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LimitStore::Local => bare("local", s),
            LimitStore::Redis(u) => s.serialize_str(&u.url),
        }
    }
}

/// A Redis server's URL, `redis://[[user]:password@]host[:port][/db]` or
/// `redis+unix:///path/redis.sock[?db=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// As written.
    pub url: String,
    pub addr: RedisAddr,
    pub db: u32,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddr {
    /// A host name or IP address (IPv6 without its brackets) and port.
    Tcp { host: String, port: u16 },
    /// A Unix socket's absolute path.
    Unix(std::path::PathBuf),
}

/// Redis's port when the URL gives none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

impl RedisUrl {
    fn parse(url: &str) -> Result<RedisUrl, String> {
        let form =
            "expected \"local\", \"redis://host:port/db\" or \"redis+unix:///path/redis.sock\"";
        if let Some(rest) = url.strip_prefix("redis+unix://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if !path.starts_with('/') || path.len() < 2 {
                return Err(format!(
                    "{url:?}: the socket's path must be absolute (three slashes: \"redis+unix:///path/redis.sock\")"
                ));
            }
            let db = match query {
                "" => 0,
                q => match q.strip_prefix("db=").and_then(|d| d.parse().ok()) {
                    Some(d) => d,
                    None => return Err(format!("{url:?}: the query may only be \"db=N\"")),
                },
            };
            return Ok(RedisUrl {
                url: url.to_owned(),
                addr: RedisAddr::Unix(path.into()),
                db,
                username: None,
                password: None,
            });
        }
        let Some(rest) = url.strip_prefix("redis://") else {
            return Err(format!("{url:?}: {form}"));
        };
        let (authority, db) = match rest.split_once('/') {
            None => (rest, 0),
            Some((a, "")) => (a, 0),
            Some((a, d)) => match d.parse() {
                Ok(d) => (a, d),
                Err(_) => return Err(format!("{url:?}: the database must be a number, got {d:?}")),
            },
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            None => (None, None),
            Some((u, p)) => (
                (!u.is_empty()).then(|| u.to_owned()),
                (!p.is_empty()).then(|| p.to_owned()),
            ),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(format!("{url:?}: unclosed \"[\" in the host"));
            };
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
        if !valid_host {
            return Err(format!("{url:?}: missing or invalid host ({form})"));
        }
        let port = match port {
            None => DEFAULT_REDIS_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("{url:?}: invalid port {p:?}")),
            },
        };
        Ok(RedisUrl {
            url: url.to_owned(),
            addr: RedisAddr::Tcp {
                host: host.to_owned(),
                port,
            },
            db,
            username,
            password,
        })
    }
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
                Ok(u) if REDIS_STORE_AVAILABLE => LimitStore::Redis(u),
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
            "rate_limit = [{ rate = \"0/s\" }, { rate = \"5/s\", burst = 2, delay = 3, key = \"ip\", status = 302 }, { rate = \"5/s\", delay = \"some\", store = \"memcached://x\" }, { rate = \"5/s\", store = \"redis://127.0.0.1:6379/0\" }, { rate = \"5/s\", burst = -1 }, { rate = \"5/s\", key = \"header:bad name\" }]\n\
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
            "the redis store is not available in this build",
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
    fn redis_urls_are_checked_for_form() {
        let ok = |u: &str| RedisUrl::parse(u).unwrap_or_else(|e| panic!("{e}"));
        let u = ok("redis://10.0.0.5:6380/2");
        assert_eq!(
            (u.addr, u.db),
            (
                RedisAddr::Tcp {
                    host: "10.0.0.5".into(),
                    port: 6380
                },
                2
            )
        );
        let u = ok("redis://:s3cret@redis.internal");
        assert_eq!(
            (u.addr, u.db, u.password.as_deref()),
            (
                RedisAddr::Tcp {
                    host: "redis.internal".into(),
                    port: DEFAULT_REDIS_PORT
                },
                0,
                Some("s3cret")
            )
        );
        let u = ok("redis://[::1]:7000/");
        assert_eq!(
            u.addr,
            RedisAddr::Tcp {
                host: "::1".into(),
                port: 7000
            }
        );
        let u = ok("redis+unix:///run/redis/redis.sock?db=3");
        assert_eq!(
            (u.addr, u.db),
            (RedisAddr::Unix("/run/redis/redis.sock".into()), 3)
        );
        for bad in [
            "redis://",
            "redis://host:0",
            "redis://host:x",
            "redis://host/db",
            "redis+unix://relative.sock",
            "redis+unix:///a.sock?timeout=1",
            "http://host",
            "redis://[::1",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
