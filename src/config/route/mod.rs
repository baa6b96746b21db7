//! `[[route]]`: what a request is matched by (listener, host, path, methods), what
//! the route does with it (its action: proxy to an upstream, redirect, or answer
//! itself) and the per-route settings of the request pipeline's filters. Each
//! action keeps its own keys and checks in a file of its own here; the request path
//! builds the running form from these types in `pipeline`.

mod redirect;
mod respond;
pub mod telegram;

use std::collections::{BTreeMap, HashMap, HashSet};

use http::{HeaderName, Method};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::limits::{self, LimitConnConfig, RateLimitConfig};
use super::retry::{self, RetryPolicy};
use super::ser;
use super::validate::{Checker, Declared};
use super::{AccessRules, HeaderTemplate, Segment, Timeouts};

pub use redirect::{RedirectConfig, DEFAULT_REDIRECT_STATUS};
pub use respond::{RespondConfig, DEFAULT_RESPOND_CONTENT_TYPE, DEFAULT_RESPOND_STATUS};
pub use telegram::{DedupStore, ForwardSecret, TelegramConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    name: Option<String>,
    access_log: Option<bool>,
    listener: Option<String>,
    host: Option<String>,
    path: Option<String>,
    path_exact: Option<String>,
    methods: Option<Vec<String>>,
    // The actions: exactly one.
    upstream: Option<String>,
    redirect: Option<redirect::RawRedirect>,
    respond: Option<respond::RawRespond>,
    // Proxy settings.
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    send_timeout: Option<String>,
    tunnel_timeout: Option<String>,
    #[serde(default)]
    set_headers: BTreeMap<String, String>,
    #[serde(default)]
    response_headers: BTreeMap<String, String>,
    next_upstream: Option<Vec<String>>,
    next_upstream_tries: Option<u32>,
    next_upstream_timeout: Option<String>,
    /// A byte count or a string such as "64KiB".
    retry_body_limit: Option<toml::Value>,
    // Limits (any action).
    /// nginx's `client_max_body_size`: a size; overrides the listener's.
    max_body_size: Option<toml::Value>,
    // Checked in `access`.
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    // Guards (`config::limits`): a table or an array of tables each.
    rate_limit: Option<toml::Value>,
    limit_conn: Option<toml::Value>,
    /// `[route.telegram]`: the route is a Telegram bot's webhook.
    telegram: Option<telegram::RawTelegram>,
}

/// The keys that choose a route's action; a route has exactly one.
pub(in crate::config) const ACTION_KEYS: &[&str] = &["upstream", "redirect", "respond"];

/// The keys only a proxying route uses.
pub(in crate::config) const PROXY_KEYS: &[&str] = &[
    "connect_timeout",
    "read_timeout",
    "send_timeout",
    "tunnel_timeout",
    "set_headers",
    "next_upstream",
    "next_upstream_tries",
    "next_upstream_timeout",
    "retry_body_limit",
];

/// A validated route. It serialises as its `[[route]]` table (`config dump`, the
/// reload diff) by derive: a key added here needs no serialising code.
#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    /// The route's label in metrics, logs and the status page: `name` from the
    /// file, or `host` + `path` (bounded by the configuration, never a request's).
    #[serde(skip)]
    pub name: String,
    /// The name as the file gives it. A derived name is not written back: it need
    /// not be unique (two routes at one path on two listeners), written ones must.
    #[serde(rename = "name", skip_serializing_if = "Option::is_none")]
    pub written_name: Option<String>,
    /// Whether its requests are written to the access log.
    pub access_log: bool,
    /// `None` serves the route on every listener.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_bare"
    )]
    pub listener: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<HostPattern>,
    #[serde(flatten)]
    pub path: PathMatch,
    /// The methods the route takes; `None`: every method. GET implies HEAD.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::methods"
    )]
    pub methods: Option<Vec<Method>>,
    /// `upstream` with the proxy settings at route level, or `redirect = { … }`,
    /// or `respond = { … }`.
    #[serde(flatten)]
    pub action: RouteAction,
    /// Request headers set on the way upstream (proxying routes only).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser::headers")]
    pub set_headers: Vec<(HeaderName, HeaderTemplate)>,
    /// Response headers set on every answer of the route, whatever gives it
    /// (nginx's `add_header … always`); an empty value removes the header.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser::headers")]
    pub response_headers: Vec<(HeaderName, HeaderTemplate)>,
    /// nginx's `client_max_body_size` for this route, whatever its action; `None`:
    /// its listener's. `Some(0)`: no limit.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_size"
    )]
    pub max_body_size: Option<u64>,
    /// `allow` and `deny`.
    #[serde(flatten)]
    pub access: AccessRules,
    /// Rate limits every request of the route must pass (after the listener's).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "limits::one_or_many"
    )]
    pub rate_limit: Vec<RateLimitConfig>,
    /// Limits on the route's requests in flight.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "limits::one_or_many"
    )]
    pub limit_conn: Vec<LimitConnConfig>,
}

impl RouteConfig {
    /// The upstream a proxying route sends to.
    pub fn upstream(&self) -> Option<&str> {
        match &self.action {
            RouteAction::Proxy(p) => Some(&p.upstream),
            _ => None,
        }
    }

    /// A webhook route's `[route.telegram]`.
    pub fn telegram(&self) -> Option<&TelegramConfig> {
        match &self.action {
            RouteAction::Proxy(p) => p.telegram.as_deref(),
            _ => None,
        }
    }

    /// The name of a route the file gives none: its host and path
    /// (`api.example.com/api/`), or its path.
    pub fn default_name(&self) -> String {
        match &self.host {
            Some(h) => format!("{h}{}", self.path.as_str()),
            None => self.path.as_str().to_owned(),
        }
    }

    /// Whether the route takes `method` (a route for GET takes HEAD too, as nginx's
    /// `limit_except GET` does).
    pub fn takes(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(list) => {
                list.contains(method) || (*method == Method::HEAD && list.contains(&Method::GET))
            }
        }
    }
}

/// How a route's path matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// `path`: a prefix, the longest winning (nginx's `location /api/`).
    Prefix(String),
    /// `path_exact`: this path only, winning over every prefix (nginx's
    /// `location = /health`).
    Exact(String),
}

impl PathMatch {
    pub fn as_str(&self) -> &str {
        match self {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p,
        }
    }

    /// The key that sets it in the file.
    pub fn key(&self) -> &'static str {
        match self {
            PathMatch::Prefix(_) => "path",
            PathMatch::Exact(_) => "path_exact",
        }
    }
}

/// What a route does with the requests it matches.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// `upstream = "NAME"`: proxy to one of its servers.
    Proxy(ProxyConfig),
    /// `redirect = { … }`.
    Redirect(RedirectConfig),
    /// `respond = { … }`.
    Respond(RespondConfig),
}

impl RouteAction {
    /// The key that chooses the action in the file.
    pub fn key(&self) -> &'static str {
        match self {
            RouteAction::Proxy(_) => "upstream",
            RouteAction::Redirect(_) => "redirect",
            RouteAction::Respond(_) => "respond",
        }
    }
}

/// A proxying route's settings, serialised at route level.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub upstream: String,
    pub timeouts: Timeouts,
    /// A webhook's is fixed by the mode (connect failures only, every bot).
    pub retry: RetryPolicy,
    /// `[route.telegram]`: the Telegram webhook mode.
    pub telegram: Option<Box<TelegramConfig>>,
}

/// The keys of a proxying route as the file writes them.
#[derive(Serialize)]
struct ProxyKeys<'a> {
    #[serde(serialize_with = "super::tree::bare")]
    upstream: &'a String,
    #[serde(flatten)]
    timeouts: &'a Timeouts,
    #[serde(flatten)]
    retry: Option<&'a RetryPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    telegram: Option<&'a TelegramConfig>,
}

impl Serialize for ProxyConfig {
    /// A webhook's retry keys are the mode's, which the file may not set: left out.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ProxyKeys {
            upstream: &self.upstream,
            timeouts: &self.timeouts,
            retry: self.telegram.is_none().then_some(&self.retry),
            telegram: self.telegram.as_deref(),
        }
        .serialize(s)
    }
}

impl Serialize for RouteAction {
    /// As the route's keys: the proxy settings themselves, or one `redirect` or
    /// `respond` table.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = match self {
            RouteAction::Proxy(p) => return p.serialize(s),
            _ => s.serialize_map(Some(1))?,
        };
        match self {
            RouteAction::Redirect(r) => m.serialize_entry(self.key(), r)?,
            RouteAction::Respond(r) => m.serialize_entry(self.key(), r)?,
            RouteAction::Proxy(_) => unreachable!("serialised above"),
        }
        m.end()
    }
}

impl Serialize for PathMatch {
    /// `path = "/api/"` or `path_exact = "/health"`, at route level.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(self.key(), &ser::Bare(self.as_str()))?;
        m.end()
    }
}

/// Host patterns as nginx's `server_name`: exact names win over wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Lower-cased host name, without port.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`.
    Wildcard(String),
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// What makes two routes the same place: the listener, host and path they match.
type Place = (Option<String>, Option<HostPattern>, PathMatch);

pub(super) fn check_routes(
    c: &mut Checker,
    raw: Vec<(usize, RawRoute)>,
    declared: &Declared,
    dir: &std::path::Path,
) -> Vec<RouteConfig> {
    // Per place: the methods claimed so far (`None`: a route for every method).
    // Hashed: a search of the places seen was quadratic in the routes.
    let mut places: HashMap<Place, Vec<Option<Vec<Method>>>> = HashMap::new();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, r) in raw {
        let base = format!("route[{i}]");
        if let Some(n) = &r.name {
            if n.is_empty() || n.chars().any(char::is_control) {
                c.err(
                    format!("{base}.name"),
                    "must be non-empty text without control characters",
                );
            } else if !names.insert(n.clone()) {
                c.err(
                    format!("{base}.name"),
                    format!("another route is already named {n:?}"),
                );
            }
        }
        if let Some(l) = &r.listener {
            if !declared.listeners.contains(l) {
                c.err(
                    format!("{base}.listener"),
                    format!("no listener named {l:?}"),
                );
            }
        }
        let mut place_ok = true;
        let host = r.host.as_deref().and_then(|h| match parse_host(h) {
            Ok(p) => Some(p),
            Err(m) => {
                c.err(format!("{base}.host"), m);
                place_ok = false;
                None
            }
        });
        let path = match (r.path.clone(), r.path_exact.clone()) {
            (Some(_), Some(_)) => {
                c.err(
                    format!("{base}.path_exact"),
                    "a route has either `path` (a prefix) or `path_exact`, not both",
                );
                place_ok = false;
                PathMatch::Prefix("/".to_owned())
            }
            (None, Some(p)) => PathMatch::Exact(p),
            // A webhook's path is matched exactly (telegraf and python-telegram-bot
            // check it so; a prefix would hand `/tg/shop/x` to the bots too).
            (Some(p), None) if r.telegram.is_some() => PathMatch::Exact(p),
            (p, None) => PathMatch::Prefix(p.unwrap_or_else(|| "/".to_owned())),
        };
        place_ok &= check_path(c, &format!("{base}.{}", path.key()), path.as_str());
        let mut methods = r
            .methods
            .clone()
            .and_then(|m| check_methods(c, &format!("{base}.methods"), m));
        if r.telegram.is_some() {
            methods = telegram_methods(c, &base, methods);
        }
        if place_ok {
            let place = (r.listener.clone(), host.clone(), path.clone());
            let claimed = places.entry(place).or_default();
            if let Some(clash) = claimed.iter().find_map(|m| overlap(m, &methods)) {
                c.err(&base, clash);
            }
            claimed.push(methods.clone());
        }
        let action = check_action(c, &base, &r, declared);
        let set_headers = check_headers(c, &format!("{base}.set_headers"), &r.set_headers, false);
        // Checked whenever the route names an upstream, known or not, so that every
        // problem of the route shows at once.
        let telegram = r.telegram.as_ref().and_then(|t| {
            telegram_route(c, &base, &r);
            telegram::check(c, &format!("{base}.telegram"), t, dir).map(Box::new)
        });
        let proxy = r.upstream.as_ref().map(|u| ProxyConfig {
            upstream: u.clone(),
            timeouts: check_timeouts(c, &base, &r),
            retry: match &telegram {
                // Connect failures move an update to the next bot, any number of
                // times; nothing after sending does (`attempts`: a POST is not
                // resent).
                Some(_) => RetryPolicy {
                    tries: 0,
                    ..RetryPolicy::default()
                },
                None => retry::check_retry(
                    c,
                    &base,
                    r.next_upstream.clone(),
                    r.next_upstream_tries,
                    r.next_upstream_timeout.clone(),
                    r.retry_body_limit.clone(),
                ),
            },
            telegram: telegram.clone(),
        });
        let response_headers = check_headers(
            c,
            &format!("{base}.response_headers"),
            &r.response_headers,
            true,
        );
        let max_body_size = r
            .max_body_size
            .as_ref()
            .and_then(|v| super::client_limits::body_size(c, &format!("{base}.max_body_size"), v));
        let access = super::access::check_rules(c, &base, r.allow.clone(), r.deny.clone());
        let rate_limit =
            limits::check_rate_limits(c, &format!("{base}.rate_limit"), r.rate_limit.clone());
        let limit_conn =
            limits::check_limit_conns(c, &format!("{base}.limit_conn"), r.limit_conn.clone());
        let action = match (action, proxy) {
            (Some(Checked::Proxy), Some(p)) => RouteAction::Proxy(p),
            (Some(Checked::Other(a)), _) => a,
            _ => continue,
        };
        let mut route = RouteConfig {
            written_name: r.name.clone(),
            name: String::new(),
            access_log: r.access_log.unwrap_or(true),
            listener: r.listener,
            host,
            path,
            methods,
            action,
            set_headers,
            response_headers,
            max_body_size,
            access,
            rate_limit,
            limit_conn,
        };
        route.name = r.name.unwrap_or_else(|| route.default_name());
        out.push(route);
    }
    out
}

/// The route's one action, with the proxy keys refused on a route that does not
/// proxy.
/// The outcome of checking a route's action keys.
enum Checked {
    /// A valid `upstream`; its settings are checked by the caller.
    Proxy,
    Other(RouteAction),
}

fn check_action(c: &mut Checker, base: &str, r: &RawRoute, declared: &Declared) -> Option<Checked> {
    let given: Vec<&str> = ACTION_KEYS
        .iter()
        .copied()
        .filter(|key| match *key {
            "upstream" => r.upstream.is_some(),
            "redirect" => r.redirect.is_some(),
            _ => r.respond.is_some(),
        })
        .collect();
    match given.as_slice() {
        [] => {
            c.err(
                base,
                "a route needs an action: `upstream = \"NAME\"`, `redirect = { … }` or `respond = { … }`",
            );
            return None;
        }
        [_] => {}
        [first, rest @ ..] => {
            c.err(
                format!("{base}.{}", rest[0]),
                format!("a route has one action; this one already has `{first}`"),
            );
            return None;
        }
    }
    if r.upstream.is_none() {
        for key in PROXY_KEYS {
            let set = match *key {
                "connect_timeout" => r.connect_timeout.is_some(),
                "read_timeout" => r.read_timeout.is_some(),
                "send_timeout" => r.send_timeout.is_some(),
                "tunnel_timeout" => r.tunnel_timeout.is_some(),
                "set_headers" => !r.set_headers.is_empty(),
                "next_upstream" => r.next_upstream.is_some(),
                "next_upstream_tries" => r.next_upstream_tries.is_some(),
                "next_upstream_timeout" => r.next_upstream_timeout.is_some(),
                _ => r.retry_body_limit.is_some(),
            };
            if set {
                c.err(
                    format!("{base}.{key}"),
                    format!(
                        "only used on a route with `upstream`; this one has `{}`",
                        given[0]
                    ),
                );
            }
        }
    }
    if let Some(u) = &r.upstream {
        if !declared.upstreams.contains(u) {
            c.err(
                format!("{base}.upstream"),
                format!("no upstream named {u:?}"),
            );
            return None;
        }
        return Some(Checked::Proxy);
    }
    if let Some(raw) = &r.redirect {
        return redirect::check(c, &format!("{base}.redirect"), raw)
            .map(|a| Checked::Other(RouteAction::Redirect(a)));
    }
    let raw = r.respond.as_ref()?;
    respond::check(c, &format!("{base}.respond"), raw)
        .map(|a| Checked::Other(RouteAction::Respond(a)))
}

fn check_timeouts(c: &mut Checker, base: &str, r: &RawRoute) -> Timeouts {
    let (connect, read) = match r.telegram {
        Some(_) => (
            telegram::DEFAULT_TELEGRAM_CONNECT_TIMEOUT,
            telegram::DEFAULT_TELEGRAM_READ_TIMEOUT,
        ),
        None => (super::DEFAULT_CONNECT_TIMEOUT, super::DEFAULT_READ_TIMEOUT),
    };
    let mut d = |key: &str, v: &Option<String>, default| {
        c.duration(&format!("{base}.{key}"), v.as_deref(), default)
    };
    Timeouts {
        connect: d("connect_timeout", &r.connect_timeout, connect),
        read: d("read_timeout", &r.read_timeout, read),
        send: d("send_timeout", &r.send_timeout, super::DEFAULT_SEND_TIMEOUT),
        tunnel: d(
            "tunnel_timeout",
            &r.tunnel_timeout,
            super::DEFAULT_TUNNEL_TIMEOUT,
        ),
    }
}

/// A webhook takes POST alone (Telegram sends nothing else); `methods` may say so
/// but no more.
fn telegram_methods(
    c: &mut Checker,
    base: &str,
    methods: Option<Vec<Method>>,
) -> Option<Vec<Method>> {
    if let Some(m) = &methods {
        if m.as_slice() != [Method::POST] {
            c.err(
                format!("{base}.methods"),
                "a telegram route takes POST alone (leave `methods` out)",
            );
        }
    }
    Some(vec![Method::POST])
}

/// The route keys a webhook cannot have: it proxies (to its bots), and moves an
/// update to another bot only when connecting fails, since an update is not
/// idempotent (reference T6).
fn telegram_route(c: &mut Checker, base: &str, r: &RawRoute) {
    if r.upstream.is_none() {
        c.err(
            format!("{base}.telegram"),
            "a telegram route sends the updates to its bots: it needs `upstream = \"NAME\"`",
        );
    }
    let retry_keys = [
        ("next_upstream", r.next_upstream.is_some()),
        ("next_upstream_tries", r.next_upstream_tries.is_some()),
        ("next_upstream_timeout", r.next_upstream_timeout.is_some()),
        ("retry_body_limit", r.retry_body_limit.is_some()),
    ];
    for (key, set) in retry_keys {
        if set {
            c.err(
                format!("{base}.{key}"),
                "a telegram route moves an update to another bot only when the connect fails (an update is not idempotent); leave it out",
            );
        }
    }
    if r.max_body_size.is_some() {
        c.err(
            format!("{base}.max_body_size"),
            "a telegram route's bodies are bounded by `telegram.max_body`",
        );
    }
}

fn check_path(c: &mut Checker, key: &str, path: &str) -> bool {
    if !path.starts_with('/') {
        c.err(key, format!("must start with \"/\", got {path:?}"));
        return false;
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        c.err(
            key,
            format!("must not contain spaces or control characters: {path:?}"),
        );
        return false;
    }
    if path.contains('?') {
        c.err(
            key,
            format!("matches the path only; drop the query: {path:?}"),
        );
        return false;
    }
    // Requests are routed on their normalised path, so a route written otherwise
    // would never match.
    match crate::uri_path::normalise(path) {
        Ok(std::borrow::Cow::Borrowed(_)) => true,
        Ok(std::borrow::Cow::Owned(normal)) => {
            c.err(
                key,
                format!(
                    "requests are matched on their normalised path, so this never matches; write {normal:?}"
                ),
            );
            false
        }
        Err(e) => {
            c.err(
                key,
                format!("{path:?}: {}; such requests are refused", e.reason()),
            );
            false
        }
    }
}

/// `set_headers` or `response_headers` (at `key`): header names and templates, each
/// problem at `key."Name"`. `fixed`: the values may not use variables (response
/// headers: the variables describe the request, not its answer).
fn check_headers(
    c: &mut Checker,
    key: &str,
    headers: &BTreeMap<String, String>,
    fixed: bool,
) -> Vec<(HeaderName, HeaderTemplate)> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let path = format!("{key}.{name:?}");
        let Ok(hn) = HeaderName::from_bytes(name.as_bytes()) else {
            c.err(path, "not a valid header name");
            continue;
        };
        match HeaderTemplate::parse(value) {
            Ok(t) if fixed && t.segments.iter().any(|s| matches!(s, Segment::Var(_))) => c.err(
                path,
                format!(
                    "{value:?}: response headers take fixed values (\"$$\" writes a dollar sign)"
                ),
            ),
            Ok(t) => out.push((hn, t)),
            Err(m) => c.err(path, m),
        }
    }
    out
}

/// `["GET", "POST"]`: HTTP method tokens, upper case as clients send them
/// (methods are case-sensitive, RFC 9110 §9.1).
fn check_methods(c: &mut Checker, key: &str, names: Vec<String>) -> Option<Vec<Method>> {
    if names.is_empty() {
        c.err(
            key,
            "must list at least one method (leave it out for every method)",
        );
        return None;
    }
    let mut out: Vec<Method> = Vec::new();
    let mut ok = true;
    for (j, n) in names.iter().enumerate() {
        let valid = !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_".contains(&b));
        match Method::from_bytes(n.as_bytes()) {
            Ok(m) if valid => {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
            _ => {
                let hint = if n.bytes().any(|b| b.is_ascii_lowercase()) {
                    format!(" (methods are upper case: {:?})", n.to_ascii_uppercase())
                } else {
                    String::new()
                };
                c.err(
                    format!("{key}[{j}]"),
                    format!("{n:?} is not an HTTP method{hint}"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Why two routes at one place cannot both exist: both for every method, or a
/// method both list.
fn overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> Option<String> {
    match (a, b) {
        (None, None) => Some("another route has the same listener, host and path".to_owned()),
        (Some(a), Some(b)) => a.iter().find(|m| b.contains(m)).map(|m| {
            format!("another route at the same listener, host and path already takes {m}")
        }),
        _ => None,
    }
}

pub(super) fn parse_host(h: &str) -> Result<HostPattern, String> {
    let lower = h.to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!(
            "invalid host {h:?} (expected a name like \"api.example.com\" or \"*.example.com\", without port)"
        ));
    }
    Ok(if wild {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::validate::validate;
    use super::*;

    fn with_routes(routes: &str) -> String {
        format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n\n{routes}\n\
             [upstream.api]\nservers = [{{ addr = \"127.0.0.1:9001\" }}]\n"
        )
    }

    fn problems(routes: &str) -> Vec<(String, String)> {
        validate(&with_routes(routes), Path::new("t.toml"))
            .expect_err("expected problems")
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            parse_host("API.example.com").unwrap(),
            HostPattern::Exact("api.example.com".into())
        );
        assert_eq!(
            parse_host("*.example.com").unwrap(),
            HostPattern::Wildcard(".example.com".into())
        );
        assert!(parse_host("a*.example.com").is_err());
        assert!(parse_host("example.com:80").is_err());
    }

    #[test]
    fn actions_and_their_defaults() {
        let c = validate(
            &with_routes(
                "[[route]]\npath_exact = \"/health\"\nrespond = { body = \"ok\\n\" }\n\
                 [[route]]\npath = \"/old/\"\nredirect = { location = \"https://$host$request_uri\" }\n\
                 [[route]]\nmethods = [\"POST\"]\nupstream = \"api\"\n",
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        let RouteAction::Respond(r) = &c.routes[0].action else {
            panic!("{:?}", c.routes[0].action)
        };
        assert_eq!((r.status, r.body.as_str()), (http::StatusCode::OK, "ok\n"));
        assert_eq!(r.content_type, DEFAULT_RESPOND_CONTENT_TYPE);
        assert_eq!(c.routes[0].path, PathMatch::Exact("/health".into()));
        let RouteAction::Redirect(r) = &c.routes[1].action else {
            panic!()
        };
        assert_eq!(r.status, DEFAULT_REDIRECT_STATUS);
        assert_eq!(r.location.source(), "https://$host$request_uri");
        assert_eq!(c.routes[2].methods, Some(vec![Method::POST]));
        assert_eq!(c.routes[2].upstream(), Some("api"));
        assert!(c.routes[2].takes(&Method::POST) && !c.routes[2].takes(&Method::GET));
    }

    #[test]
    fn every_route_problem_has_its_key() {
        let p = problems(
            "[[route]]\npath = \"/a/\"\n\
             [[route]]\npath = \"/1\"\nupstream = \"api\"\nrespond = {}\n\
             [[route]]\npath = \"/2\"\nrespond = { status = 99, content_type = \"a\\nb\" }\nread_timeout = \"1s\"\n\
             [[route]]\npath = \"/3\"\nredirect = { status = 200, location = \"/x\" }\n\
             [[route]]\npath = \"/4\"\nredirect = { location = \"$upstream_addr/\" }\n\
             [[route]]\npath = \"/b/\"\npath_exact = \"/b\"\nupstream = \"api\"\n\
             [[route]]\npath_exact = \"/c?x\"\nmethods = [\"get\", \"POST\"]\nupstream = \"api\"\n\
             [[route]]\npath = \"/m/\"\nmethods = []\nupstream = \"api\"\n",
        );
        let has = |key: &str, part: &str| {
            assert!(
                p.iter().any(|(k, m)| k == key && m.contains(part)),
                "no {key}: …{part}… in {p:#?}"
            )
        };
        has("route[0]", "a route needs an action");
        has(
            "route[1].respond",
            "a route has one action; this one already has `upstream`",
        );
        has("route[2].respond.status", "from 200 to 599, got 99");
        has("route[2].respond.content_type", "not a valid header value");
        has(
            "route[2].read_timeout",
            "only used on a route with `upstream`",
        );
        has(
            "route[3].redirect.status",
            "301, 302, 303, 307, 308, got 200",
        );
        has("route[4].redirect.location", "$upstream_addr is only known");
        has(
            "route[5].path_exact",
            "either `path` (a prefix) or `path_exact`",
        );
        has("route[6].path_exact", "drop the query");
        has("route[6].methods[0]", "(methods are upper case: \"GET\")");
        has("route[7].methods", "at least one method");
        assert_eq!(p.len(), 11, "{p:#?}");
    }

    #[test]
    fn a_path_is_written_in_normal_form() {
        let p = problems(
            "[[route]]\npath = \"/a/../b/\"\nupstream = \"api\"\n\
             [[route]]\npath_exact = \"/%7Ebob\"\nupstream = \"api\"\n\
             [[route]]\npath = \"/../\"\nupstream = \"api\"\n\
             [[route]]\npath = \"/files/a%2Fb/\"\nupstream = \"api\"\n",
        );
        let has = |key: &str, part: &str| {
            assert!(
                p.iter().any(|(k, m)| k == key && m.contains(part)),
                "no {key}: …{part}… in {p:#?}"
            )
        };
        has("route[0].path", "never matches; write \"/b/\"");
        has("route[1].path_exact", "write \"/~bob\"");
        has("route[2].path", "climbs above the root");
        assert_eq!(p.len(), 3, "{p:#?}");
    }

    #[test]
    fn response_headers_take_fixed_values() {
        let c = validate(
            &with_routes(
                "[[route]]\nupstream = \"api\"\n\
                 response_headers = { \"Cache-Control\" = \"no-store\", \"Server\" = \"\", \"X-Price\" = \"5$$\" }\n",
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        let set: Vec<(String, String)> = c.routes[0]
            .response_headers
            .iter()
            .map(|(n, t)| (n.to_string(), t.source()))
            .collect();
        assert_eq!(
            set,
            [
                ("cache-control".to_owned(), "no-store".to_owned()),
                ("server".to_owned(), String::new()),
                ("x-price".to_owned(), "5$$".to_owned()),
            ]
        );
        let p = problems(
            "[[route]]\nupstream = \"api\"\n\
             response_headers = { \"X-Id\" = \"$request_id\", \"Bad Name\" = \"x\" }\n",
        );
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].0 == "route[0].response_headers.\"Bad Name\"", "{p:#?}");
        assert!(
            p[1].1.contains("response headers take fixed values"),
            "{p:#?}"
        );
    }

    #[test]
    fn methods_share_a_place_without_overlapping() {
        let ok = with_routes(
            "[[route]]\npath = \"/hook\"\nmethods = [\"POST\"]\nupstream = \"api\"\n\
             [[route]]\npath = \"/hook\"\nmethods = [\"GET\", \"PUT\"]\nupstream = \"api\"\n\
             [[route]]\npath = \"/hook\"\nupstream = \"api\"\n\
             [[route]]\npath_exact = \"/hook\"\nupstream = \"api\"\n",
        );
        assert!(validate(&ok, Path::new("t.toml")).is_ok());
        let p = problems(
            "[[route]]\npath = \"/hook\"\nmethods = [\"POST\"]\nupstream = \"api\"\n\
             [[route]]\npath = \"/hook\"\nmethods = [\"PUT\", \"POST\"]\nupstream = \"api\"\n\
             [[route]]\npath = \"/x\"\nupstream = \"api\"\n\
             [[route]]\npath = \"/x\"\nupstream = \"api\"\n",
        );
        assert_eq!(
            p,
            [
                (
                    "route[1]".to_owned(),
                    "another route at the same listener, host and path already takes POST"
                        .to_owned()
                ),
                (
                    "route[3]".to_owned(),
                    "another route has the same listener, host and path".to_owned()
                ),
            ]
        );
    }
}
