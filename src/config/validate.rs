//! Raw TOML → `Config`. Each listener, route and upstream is deserialised on its own
//! so that one bad element does not hide the problems of the others; then values are
//! checked and cross-references resolved. Every problem carries its key path.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::discovery::{self, RawResolver};
use super::health_check::{
    self, DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_EJECTED_PERCENT, DEFAULT_MAX_FAILS, MAX_MAX_FAILS,
};
use super::raw::{RawAccessLog, RawAdmin, RawListener, RawServer, RawUpstream};
use super::route::RawRoute;
use super::tls::RawListenerTls;
use super::upstream_transport;
use super::{
    AccessLogConfig, AdminConfig, BalanceKind, Config, HashKey, LeastTimeMode, ListenerConfig,
    LogFormat, LogTarget, Problem, QueueConfig, ServerConfig, StickyConfig, UpstreamConfig,
    ALGORITHM_KEYS, DEFAULT_EWMA_DECAY, DEFAULT_EWMA_SEED, DEFAULT_KEEPALIVE,
    DEFAULT_MAX_RESPONSE_HEADER_SIZE, DEFAULT_QUEUE_SIZE, DEFAULT_STICKY_TTL, DEFAULT_WEIGHT,
    MAX_MAX_RESPONSE_HEADER_SIZE, MAX_WEIGHT, MIN_EWMA_SEED, MIN_MAX_RESPONSE_HEADER_SIZE,
};

const TOP_LEVEL_KEYS: &[&str] = &[
    "access_log",
    "admin",
    "listener",
    "resolver",
    "route",
    "upstream",
];

#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

/// The directory relative paths in a file (`tls.ca_file`) are read from: the file's
/// own, as a Kubernetes ConfigMap mounts a configuration next to its certificates.
pub(super) fn base_dir(source: &Path) -> &Path {
    source.parent().unwrap_or(Path::new(""))
}

impl Checker {
    pub(super) fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.problems.push(Problem::new(path, msg));
    }

    /// Deserialises one element, reporting a failure at `base` + serde's inner path.
    pub(super) fn de<T: DeserializeOwned>(&mut self, base: &str, value: toml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let path = match inner.as_str() {
                    "." => base.to_owned(),
                    p if p.starts_with('[') => format!("{base}{p}"),
                    p => format!("{base}.{p}"),
                };
                let msg = e.into_inner().to_string();
                // toml's messages can span lines (with a caret excerpt); keep the first.
                let msg = msg.lines().next().unwrap_or_default().to_owned();
                self.err(path, msg);
                None
            }
        }
    }

    fn socket_addr(&mut self, path: &str, s: &str) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("invalid socket address {s:?} (expected ip:port)"),
                );
                None
            }
        }
    }

    pub(super) fn duration(&mut self, path: &str, s: Option<&str>, default: Duration) -> Duration {
        match self.duration_or_zero(path, s, default) {
            d if d.is_zero() => {
                self.err(path, "must be greater than zero");
                default
            }
            d => d,
        }
    }

    /// A duration where "0s" means "off".
    pub(super) fn duration_or_zero(
        &mut self,
        path: &str,
        s: Option<&str>,
        default: Duration,
    ) -> Duration {
        let Some(s) = s else { return default };
        match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(_) => {
                self.err(
                    path,
                    format!("invalid duration {s:?} (expected e.g. \"250ms\", \"5s\", \"1m\")"),
                );
                default
            }
        }
    }
}

/// Validates `text`, read from the file `source`; relative file names in it are
/// taken from its directory.
pub(super) fn validate(text: &str, source: &Path) -> Result<Config, Vec<Problem>> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let msg = e.message().to_owned();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    let col = s.start - text[..s.start].rfind('\n').map_or(0, |p| p + 1) + 1;
                    format!("line {line}, column {col}")
                })
                .unwrap_or_default();
            return Err(vec![Problem::new(at, format!("TOML syntax error: {msg}"))]);
        }
    };

    let mut c = Checker::default();
    let mut admin = None;
    let mut access_log = None;
    let mut raw_listeners = Vec::new();
    let mut raw_routes = Vec::new();
    let mut raw_upstreams = BTreeMap::new();
    let mut raw_resolver = None;
    // Names declared in the file, even by elements that failed to parse, so that a
    // broken upstream or listener is not also reported as missing by the routes.
    let mut declared = Declared::default();

    for (key, value) in table {
        match key.as_str() {
            "admin" => admin = c.de::<RawAdmin>("admin", value),
            "access_log" => access_log = c.de::<RawAccessLog>("access_log", value),
            "listener" => {
                declared.listeners = declared_names(&value);
                raw_listeners = elements(&mut c, "listener", value)
            }
            "route" => raw_routes = elements::<RawRoute>(&mut c, "route", value),
            "resolver" => raw_resolver = c.de::<RawResolver>("resolver", value),
            "upstream" => match value {
                toml::Value::Table(t) => {
                    for (name, v) in t {
                        declared.upstreams.insert(name.clone());
                        let path = format!("upstream.{name}");
                        if let Some(u) = c.de::<RawUpstream>(&path, v) {
                            raw_upstreams.insert(name, u);
                        }
                    }
                }
                _ => c.err(
                    "upstream",
                    "expected a table of upstreams ([upstream.NAME])",
                ),
            },
            other => c.err(
                other,
                format!(
                    "unknown key (expected one of: {})",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            ),
        }
    }

    let admin = admin.and_then(|a: RawAdmin| {
        let listen = a.listen.as_deref().unwrap_or(super::DEFAULT_ADMIN_LISTEN);
        if a.token.as_deref() == Some("") {
            c.err(
                "admin.token",
                "must not be empty (leave it out to turn authentication off)",
            );
        }
        // A dump used as a file would otherwise guard the admin API with a token
        // printed in every dump.
        if a.token.as_deref() == Some(super::REDACTED_TOKEN) {
            c.err(
                "admin.token",
                format!(
                    "{:?} is the placeholder `switchyard config dump` prints for the token, not a token; write the real one (`config dump --show-secrets` prints it)",
                    super::REDACTED_TOKEN
                ),
            );
        }
        c.socket_addr("admin.listen", listen)
            .map(|listen| AdminConfig {
                listen,
                token: a.token,
            })
    });
    let access_log = access_log.and_then(|a| check_access_log(&mut c, a));
    let listeners = check_listeners(&mut c, raw_listeners, base_dir(source));
    let upstreams = check_upstreams(&mut c, raw_upstreams, base_dir(source));
    let routes = super::route::check_routes(&mut c, raw_routes, &declared, base_dir(source));
    let resolver = raw_resolver
        .map(|r| discovery::check_resolver(&mut c, r))
        .unwrap_or_default();

    if c.problems.is_empty() {
        Ok(Config {
            source: Default::default(),
            admin,
            access_log,
            listeners,
            routes,
            upstreams,
            resolver,
        })
    } else {
        Err(c.problems)
    }
}

fn check_access_log(c: &mut Checker, a: RawAccessLog) -> Option<AccessLogConfig> {
    let format = match a.format.as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("combined") => LogFormat::Combined,
        Some(other) => {
            c.err(
                "access_log.format",
                format!("expected \"json\" or \"combined\", got {other:?}"),
            );
            return None;
        }
    };
    let target = match a.path.as_str() {
        "stdout" => LogTarget::Stdout,
        "" => {
            c.err(
                "access_log.path",
                "must be a file path or \"stdout\" (leave [access_log] out to log nothing)",
            );
            return None;
        }
        p => LogTarget::File(p.into()),
    };
    Some(AccessLogConfig { target, format })
}

/// Names declared in the file, parsed or not.
#[derive(Default)]
pub(super) struct Declared {
    pub(super) listeners: HashSet<String>,
    pub(super) upstreams: HashSet<String>,
}

/// The `name` of every table in a `[[listener]]` array, parsed or not.
fn declared_names(value: &toml::Value) -> HashSet<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name")?.as_str().map(str::to_owned))
        .collect()
}

/// `[[listener]]` and `[[route]]` are arrays of tables; deserialise each on its own.
fn elements<T: DeserializeOwned>(
    c: &mut Checker,
    key: &str,
    value: toml::Value,
) -> Vec<(usize, T)> {
    match value {
        toml::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| c.de::<T>(&format!("{key}[{i}]"), v).map(|t| (i, t)))
            .collect(),
        _ => {
            c.err(key, format!("expected an array of tables ([[{key}]])"));
            Vec::new()
        }
    }
}

fn check_listeners(
    c: &mut Checker,
    raw: Vec<(usize, RawListener)>,
    dir: &Path,
) -> Vec<ListenerConfig> {
    if raw.is_empty() && c.problems.iter().all(|p| !p.path.starts_with("listener")) {
        c.err("listener", "at least one [[listener]] is required");
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in raw {
        let base = format!("listener[{i}]");
        if l.name.is_empty() {
            c.err(format!("{base}.name"), "must not be empty");
        } else if !names.insert(l.name.clone()) {
            c.err(
                format!("{base}.name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        let https = super::tls::check(
            c,
            &base,
            RawListenerTls {
                tls: l.tls,
                redirect_https: l.redirect_https,
                https_port: l.https_port,
                hsts: l.hsts,
            },
            dir,
        );
        if let Some(listen) = c.socket_addr(&format!("{base}.listen"), &l.listen) {
            if listen.port() != 0 && !addrs.insert(listen) {
                c.err(
                    format!("{base}.listen"),
                    format!("address {listen} is used by another listener"),
                );
            }
            out.push(ListenerConfig {
                name: l.name,
                listen,
                tls: https.tls,
                redirect_https: https.redirect_https,
                hsts: https.hsts,
                client_header_timeout: c.duration(
                    &format!("{base}.client_header_timeout"),
                    l.client_header_timeout.as_deref(),
                    super::DEFAULT_CLIENT_HEADER_TIMEOUT,
                ),
                client_body_timeout: c.duration(
                    &format!("{base}.client_body_timeout"),
                    l.client_body_timeout.as_deref(),
                    super::DEFAULT_CLIENT_BODY_TIMEOUT,
                ),
                limits: super::client_limits::check_listener(
                    c,
                    &base,
                    super::client_limits::RawLimits {
                        keepalive_timeout: l.keepalive_timeout.as_deref(),
                        keepalive_requests: l.keepalive_requests,
                        max_header_size: l.max_header_size.as_ref(),
                        max_body_size: l.max_body_size.as_ref(),
                    },
                ),
                clients: super::access::check_listener(
                    c,
                    &base,
                    super::access::RawListenerClients {
                        proxy_protocol: l.proxy_protocol,
                        trusted_proxies: l.trusted_proxies,
                        max_connections: l.max_connections,
                        allow: l.allow,
                        deny: l.deny,
                    },
                ),
                rate_limit: super::limits::check_rate_limits(
                    c,
                    &format!("{base}.rate_limit"),
                    l.rate_limit,
                ),
                limit_conn: super::limits::check_limit_conns(
                    c,
                    &format!("{base}.limit_conn"),
                    l.limit_conn,
                ),
            });
        }
    }
    out
}

fn check_upstreams(
    c: &mut Checker,
    raw: BTreeMap<String, RawUpstream>,
    dir: &Path,
) -> Vec<UpstreamConfig> {
    let mut out = Vec::new();
    for (name, u) in raw {
        let base = format!("upstream.{name}");
        let balance = match u.balance.as_deref() {
            None => BalanceKind::RoundRobin,
            Some(b) => BalanceKind::parse(b).unwrap_or_else(|| {
                c.err(
                    format!("{base}.balance"),
                    format!(
                        "unknown algorithm {b:?} (expected one of: {})",
                        BalanceKind::NAMES.join(", ")
                    ),
                );
                BalanceKind::RoundRobin
            }),
        };
        if u.servers.is_empty() {
            c.err(
                format!("{base}.servers"),
                "an upstream needs at least one server",
            );
        }
        let mut servers = Vec::new();
        let mut resolve: Vec<discovery::ResolveEntry> = Vec::new();
        let mut seen = HashSet::new();
        for (i, s) in u.servers.into_iter().enumerate() {
            let path = format!("{base}.servers[{i}]");
            let Some(s) = c.de::<RawServer>(&path, s) else {
                continue;
            };
            if s.resolve == Some(true) {
                if let Some(e) = check_resolve_entry(c, &path, s) {
                    if resolve.iter().any(|r| r.target == e.target) {
                        c.err(
                            &path,
                            format!("{} is listed twice in this upstream", e.target.written()),
                        );
                    } else {
                        resolve.push(e);
                    }
                }
                continue;
            }
            if s.service.is_some() {
                c.err(
                    format!("{path}.service"),
                    "an SRV name is looked up in the background: add resolve = true",
                );
                continue;
            }
            for server in check_server(c, &path, s) {
                if !seen.insert(server.addr) {
                    c.err(
                        format!("{path}.addr"),
                        format!("{} is listed twice in this upstream", server.addr),
                    );
                } else {
                    servers.push(server);
                }
            }
        }
        if !servers.is_empty() && resolve.is_empty() && servers.iter().all(|s| s.backup) {
            c.err(
                format!("{base}.servers"),
                "every server is a backup; at least one must be a primary",
            );
        }
        for (key, kinds) in ALGORITHM_KEYS {
            let set = match *key {
                "least_time" => u.least_time.is_some(),
                "ewma_decay" => u.ewma_decay.is_some(),
                "ewma_seed" => u.ewma_seed.is_some(),
                "hash_key" => u.hash_key.is_some(),
                "hash_balance_factor" => u.hash_balance_factor.is_some(),
                other => unreachable!("ALGORITHM_KEYS lists {other:?}, which RawUpstream lacks"),
            };
            if set && !balance.uses(key) {
                let names: Vec<String> =
                    kinds.iter().map(|k| format!("{:?}", k.as_str())).collect();
                c.err(
                    format!("{base}.{key}"),
                    format!("only used with balance = {}", names.join(" or ")),
                );
            }
        }
        let least_time = match u.least_time.as_deref() {
            None | Some("header") => LeastTimeMode::Header,
            Some("last_byte") => LeastTimeMode::LastByte,
            Some(other) => {
                c.err(
                    format!("{base}.least_time"),
                    format!("expected \"header\" or \"last_byte\", got {other:?}"),
                );
                LeastTimeMode::Header
            }
        };
        let ewma_decay = c.duration(
            &format!("{base}.ewma_decay"),
            u.ewma_decay.as_deref(),
            DEFAULT_EWMA_DECAY,
        );
        let ewma_seed = c.duration(
            &format!("{base}.ewma_seed"),
            u.ewma_seed.as_deref(),
            DEFAULT_EWMA_SEED,
        );
        if ewma_seed < MIN_EWMA_SEED {
            c.err(format!("{base}.ewma_seed"), format!("must be at least {MIN_EWMA_SEED:?}: a smaller seed makes a new server look free"));
        }
        let hash_key = match (balance, u.hash_key.as_deref()) {
            (BalanceKind::Hash, None) => Some(HashKey::ClientIp),
            (_, None) => None,
            (_, Some(k)) => match HashKey::parse(k) {
                Ok(k) => Some(k),
                Err(m) => {
                    c.err(format!("{base}.hash_key"), m);
                    None
                }
            },
        };
        if let Some(f) = u.hash_balance_factor {
            if !(f > 1.0 && f.is_finite()) {
                c.err(
                    format!("{base}.hash_balance_factor"),
                    format!("must be greater than 1.0, got {f}"),
                );
            }
        }
        let sticky = u.sticky.and_then(|s| {
            let valid = !s.cookie.is_empty()
                && s.cookie
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                c.err(
                    format!("{base}.sticky.cookie"),
                    format!("{:?} is not a valid cookie name", s.cookie),
                );
                return None;
            }
            let ttl = c.duration(
                &format!("{base}.sticky.ttl"),
                s.ttl.as_deref(),
                DEFAULT_STICKY_TTL,
            );
            Some(StickyConfig {
                cookie: s.cookie,
                ttl,
            })
        });
        let health_check = u
            .health_check
            .and_then(|h| health_check::check_health(c, &format!("{base}.health_check"), h));
        let (protocol, tls) =
            upstream_transport::check_transport(c, &base, dir, u.protocol.as_deref(), u.tls);
        let max_response_header_size = match &u.max_response_header_size {
            None => DEFAULT_MAX_RESPONSE_HEADER_SIZE,
            Some(v) => match super::retry::parse_size(v).map(usize::try_from) {
                Some(Ok(n))
                    if (MIN_MAX_RESPONSE_HEADER_SIZE..=MAX_MAX_RESPONSE_HEADER_SIZE)
                        .contains(&n) =>
                {
                    n
                }
                _ => {
                    c.err(
                        format!("{base}.max_response_header_size"),
                        format!("expected a size from 1KiB to 256KiB such as \"32KiB\" or a byte count, got {v}"),
                    );
                    DEFAULT_MAX_RESPONSE_HEADER_SIZE
                }
            },
        };
        let max_ejected_percent = u.max_ejected_percent.unwrap_or(DEFAULT_MAX_EJECTED_PERCENT);
        if max_ejected_percent > 100 {
            c.err(
                format!("{base}.max_ejected_percent"),
                format!("must be between 0 and 100, got {max_ejected_percent}"),
            );
        }
        let queue = u
            .queue
            .map(|q| QueueConfig {
                size: q.size.unwrap_or(DEFAULT_QUEUE_SIZE),
                timeout: q.timeout.map(|t| {
                    c.duration(&format!("{base}.queue.timeout"), Some(&t), Duration::ZERO)
                }),
            })
            .unwrap_or_default();
        out.push(UpstreamConfig {
            name,
            balance,
            keepalive: u.keepalive.map_or(DEFAULT_KEEPALIVE, |k| k as usize),
            max_response_header_size,
            least_time,
            ewma_decay,
            ewma_seed,
            hash_key,
            hash_balance_factor: u.hash_balance_factor,
            sticky,
            health_check,
            max_ejected_percent,
            queue,
            protocol,
            tls,
            servers,
            resolve,
            max_servers: match u.max_servers {
                Some(0) => {
                    c.err(
                        format!("{base}.max_servers"),
                        "must be at least 1 (leave out resolve = true entries to discover none)",
                    );
                    discovery::DEFAULT_MAX_SERVERS
                }
                Some(n) => n,
                None => discovery::DEFAULT_MAX_SERVERS,
            },
        });
    }
    out
}

/// One server entry given as JSON (the admin API): see `Config::server_entry`.
pub(super) fn server_entry(value: serde_json::Value) -> Result<Vec<ServerConfig>, Vec<Problem>> {
    let mut c = Checker::default();
    let raw = match serde_path_to_error::deserialize::<_, RawServer>(value) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            return Err(vec![Problem::new(path, e.into_inner().to_string())]);
        }
    };
    let servers = check_server(&mut c, "", raw);
    let problems: Vec<Problem> = c
        .problems
        .into_iter()
        .map(|p| Problem::new(p.path.trim_start_matches('.'), p.message))
        .collect();
    if problems.is_empty() {
        Ok(servers)
    } else {
        Err(problems)
    }
}

/// A `resolve = true` entry: its name checked, its settings those of a server.
fn check_resolve_entry(
    c: &mut Checker,
    path: &str,
    s: RawServer,
) -> Option<discovery::ResolveEntry> {
    let target = discovery::check_target(c, path, s.addr.as_deref(), s.service.as_deref())?;
    let placeholder = discovery::placeholder(&target);
    let written = target.written();
    let mut servers = check_server(
        c,
        path,
        RawServer {
            addr: Some(placeholder.to_string()),
            ..s
        },
    );
    let mut server = servers.pop()?;
    server.name = written;
    Some(discovery::ResolveEntry { target, server })
}

fn check_server(c: &mut Checker, path: &str, s: RawServer) -> Vec<ServerConfig> {
    let Some(addr) = s.addr.clone() else {
        c.err(path, "a server needs `addr`");
        return Vec::new();
    };
    let weight = s.weight.unwrap_or(DEFAULT_WEIGHT);
    if weight == 0 || weight > MAX_WEIGHT {
        c.err(
            format!("{path}.weight"),
            format!("must be between 1 and {MAX_WEIGHT}, got {weight}"),
        );
    }
    let max_fails = s.max_fails.unwrap_or(DEFAULT_MAX_FAILS);
    if max_fails > MAX_MAX_FAILS {
        c.err(
            format!("{path}.max_fails"),
            format!("must be at most {MAX_MAX_FAILS} (0 turns ejection off), got {max_fails}"),
        );
    }
    let fail_timeout = c.duration(
        &format!("{path}.fail_timeout"),
        s.fail_timeout.as_deref(),
        DEFAULT_FAIL_TIMEOUT,
    );
    let slow_start = c.duration_or_zero(
        &format!("{path}.slow_start"),
        s.slow_start.as_deref(),
        Duration::ZERO,
    );
    let addrs: Vec<SocketAddr> = match addr.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => match split_host_port(&addr) {
            None => {
                c.err(
                    format!("{path}.addr"),
                    format!("invalid socket address {addr:?} (expected ip:port or hostname:port)"),
                );
                return Vec::new();
            }
            Some(_) => match addr.to_socket_addrs() {
                Ok(a) => a.collect(),
                Err(e) => {
                    c.err(
                        format!("{path}.addr"),
                        format!(
                            "cannot resolve {addr:?}: {e} (add resolve = true to look it up in the background and keep it up to date)"
                        ),
                    );
                    return Vec::new();
                }
            },
        },
    };
    addrs
        .into_iter()
        .map(|a| ServerConfig {
            name: addr.clone(),
            addr: a,
            weight,
            down: s.down.unwrap_or(false),
            backup: s.backup.unwrap_or(false),
            max_fails,
            fail_timeout,
            slow_start,
            max_conns: s.max_conns.unwrap_or(0),
        })
        .collect()
}

/// Accepts `hostname:port` with a plausible DNS name and a numeric port.
pub(super) fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    ok.then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::super::Timeouts;
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        validate(text, Path::new("t.toml")).expect_err("expected problems")
    }

    const BASE: &str = r#"
[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
upstream = "api"

[upstream.api]
servers = [{ addr = "127.0.0.1:9001" }]
"#;

    #[test]
    fn minimal_config_is_valid_with_nginx_defaults() {
        let c = validate(BASE, Path::new("t.toml")).unwrap();
        assert_eq!(
            c.routes[0].path,
            super::super::PathMatch::Prefix("/".into())
        );
        let super::super::RouteAction::Proxy(p) = &c.routes[0].action else {
            panic!("a proxying route")
        };
        assert_eq!(p.timeouts, Timeouts::default());
        assert_eq!(c.upstreams[0].keepalive, DEFAULT_KEEPALIVE);
        assert_eq!(c.upstreams[0].servers[0].weight, 1);
    }

    #[test]
    fn tunnel_timeout_defaults_to_an_hour_and_parses() {
        let c = validate(BASE, Path::new("t.toml")).unwrap();
        let tunnel = |c: &Config| match &c.routes[0].action {
            super::super::RouteAction::Proxy(p) => p.timeouts.tunnel,
            _ => panic!("a proxying route"),
        };
        assert_eq!(tunnel(&c), super::super::DEFAULT_TUNNEL_TIMEOUT);
        let text = BASE.replace(
            "upstream = \"api\"",
            "upstream = \"api\"\ntunnel_timeout = \"90s\"",
        );
        let c = validate(&text, Path::new("t.toml")).unwrap();
        assert_eq!(tunnel(&c), Duration::from_secs(90));
        let p = problems(&BASE.replace(
            "upstream = \"api\"",
            "upstream = \"api\"\ntunnel_timeout = \"0s\"",
        ));
        assert_eq!(p[0].path, "route[0].tunnel_timeout", "{p:?}");
    }

    #[test]
    fn max_response_header_size_is_a_bounded_size() {
        let c = validate(BASE, Path::new("t.toml")).unwrap();
        assert_eq!(
            c.upstreams[0].max_response_header_size,
            DEFAULT_MAX_RESPONSE_HEADER_SIZE
        );
        let with = |v: &str| {
            BASE.replace(
                "[upstream.api]\n",
                &format!("[upstream.api]\nmax_response_header_size = {v}\n"),
            )
        };
        for (v, n) in [("\"8KiB\"", 8192), ("\"64k\"", 65536), ("4096", 4096)] {
            let c = validate(&with(v), Path::new("t.toml")).unwrap();
            assert_eq!(c.upstreams[0].max_response_header_size, n, "{v}");
        }
        for v in ["\"512\"", "\"1MiB\"", "\"32 GB\"", "-1", "true"] {
            let p = problems(&with(v));
            assert_eq!(
                p[0].path, "upstream.api.max_response_header_size",
                "{v}: {p:?}"
            );
            assert!(p[0].message.contains("1KiB to 256KiB"), "{v}: {p:?}");
        }
    }

    #[test]
    fn max_conns_and_queue_have_haproxy_defaults_and_report_their_keys() {
        let c = validate(BASE, Path::new("t.toml")).unwrap();
        assert_eq!(c.upstreams[0].servers[0].max_conns, 0, "no limit");
        assert_eq!(
            c.upstreams[0].queue,
            QueueConfig {
                size: DEFAULT_QUEUE_SIZE,
                timeout: None
            },
            "a queue exists; its timeout is the route's connect_timeout"
        );
        let text = BASE
            .replace(
                "{ addr = \"127.0.0.1:9001\" }",
                "{ addr = \"127.0.0.1:9001\", max_conns = 50 }",
            )
            .replace(
                "[upstream.api]\n",
                "[upstream.api]\nqueue = { size = 0, timeout = \"2s\" }\n",
            );
        let c = validate(&text, Path::new("t.toml")).unwrap();
        assert_eq!(c.upstreams[0].servers[0].max_conns, 50);
        assert_eq!(c.upstreams[0].queue.size, 0);
        assert_eq!(c.upstreams[0].queue.timeout, Some(Duration::from_secs(2)));
        let bad = [
            ("max_conns = -1", "upstream.api.servers[0].max_conns"),
            ("max_conns = \"50\"", "upstream.api.servers[0].max_conns"),
        ];
        for (entry, path) in bad {
            let p = problems(&BASE.replace(
                "{ addr = \"127.0.0.1:9001\" }",
                &format!("{{ addr = \"127.0.0.1:9001\", {entry} }}"),
            ));
            assert_eq!(p[0].path, path, "{entry}: {p:?}");
        }
        for (queue, path, message) in [
            (
                "{ timeout = \"0s\" }",
                "upstream.api.queue.timeout",
                "greater than zero",
            ),
            (
                "{ timeout = \"soon\" }",
                "upstream.api.queue.timeout",
                "invalid duration",
            ),
            ("{ size = -5 }", "upstream.api.queue.size", ""),
            (
                "{ length = 5 }",
                "upstream.api.queue.length",
                "unknown field",
            ),
        ] {
            let p = problems(&BASE.replace(
                "[upstream.api]\n",
                &format!("[upstream.api]\nqueue = {queue}\n"),
            ));
            assert_eq!(p[0].path, path, "{queue}: {p:?}");
            assert!(p[0].message.contains(message), "{queue}: {p:?}");
        }
        // The admin API's server entries take it too.
        let s = server_entry(serde_json::json!({"addr": "127.0.0.1:9", "max_conns": 7})).unwrap();
        assert_eq!(s[0].max_conns, 7);
        let p =
            server_entry(serde_json::json!({"addr": "127.0.0.1:9", "max_conns": -7})).unwrap_err();
        assert_eq!(p[0].path, "max_conns", "{p:?}");
    }

    #[test]
    fn type_error_points_inside_the_element() {
        let p = problems(&BASE.replace(
            "{ addr = \"127.0.0.1:9001\" }",
            "{ addr = \"127.0.0.1:9001\", weight = \"x\" }",
        ));
        assert_eq!(p[0].path, "upstream.api.servers[0].weight", "{p:?}");
    }

    #[test]
    fn syntax_error_gives_line() {
        let p = problems("[[listener]\nname=1");
        assert!(p[0].path.starts_with("line 1"), "{p:?}");
    }
}
