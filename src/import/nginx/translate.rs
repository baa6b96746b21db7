//! The directives, level by level (main → http → upstream / server → location),
//! with nginx's inheritance: a setting reaches the levels below unless they set
//! it themselves; the array-like ones (`proxy_set_header`, `add_header`,
//! `allow`/`deny`, `limit_req`, `limit_conn`, `set_real_ip_from`,
//! `ssl_certificate`) are replaced as a whole by a level that has any of its own.
//!
//! Model: every distinct `listen` address becomes a `[[listener]]`; every
//! location of a server becomes a route per server name (per listener when there
//! are several), and the listener's default server (`default_server`, else the
//! first) gets routes without a host, which is how nginx serves unknown names
//! (its own names get routes of their own only where another server's wildcard
//! could take them). Of two servers naming the same host on one address the
//! first keeps it, as in nginx. A server whose name matches but has no
//! `location /` would answer
//! other paths from its root (404 for a proxy): a `respond 404` route keeps them
//! from falling to another server's routes, as they never do in nginx.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ipnet::IpNet;

use super::known::{find, DROPPED, DROPPED_BLOCKS, INFO, KNOWN_ELSEWHERE};
use super::parse::Directive;
use super::units::{duration, size, size_text, template, time_ms};
use super::values::{
    hash_key, header, limit_key, listener_names, next_upstream, parse_net, show_net, with_port,
    zone_of, HeaderOut,
};
use crate::import::out::{table, Block};
use crate::import::{Carried, ImportError, Imported, Origin};

use Carried::{Approximate, Dropped, Info};

/// nginx's `limit_req_status` and `limit_conn_status` default (Switchyard's is 429).
const NGINX_LIMIT_STATUS: i64 = 503;
/// nginx's `default_type` when none is set.
const NGINX_DEFAULT_TYPE: &str = "text/plain";

pub(crate) fn translate(main: &Path, tree: &[Directive]) -> Result<Imported, ImportError> {
    let mut t = Tr {
        out: Imported::default(),
        upstreams: Vec::new(),
        req_zones: HashMap::new(),
        conn_zones: HashMap::new(),
        zone_use: BTreeMap::new(),
        servers: Vec::new(),
        access_log: None,
        main: main.to_owned(),
    };
    for d in tree {
        t.main_level(d);
    }
    t.finish();
    Ok(t.out)
}

/// Settings a level passes down.
#[derive(Debug, Clone, Default)]
struct Scope {
    headers: Option<Vec<Directive>>,
    add_headers: Option<Vec<Directive>>,
    access: Option<Vec<Directive>>,
    limit_req: Option<Vec<Directive>>,
    limit_conn: Option<Vec<Directive>>,
    real_ip_from: Option<Vec<Directive>>,
    certs: Option<Vec<Directive>>,
    keys: Option<Vec<Directive>>,
    one: BTreeMap<&'static str, Directive>,
}

/// Settings a listener takes from its default server: Switchyard has them
/// per listener, nginx per server (some per location).
const PER_LISTENER: &[&str] = &[
    "keepalive_timeout",
    "keepalive_requests",
    "client_header_timeout",
    "client_body_timeout",
    "ssl_protocols",
    "ssl_session_tickets",
    "real_ip_header",
    "real_ip_recursive",
];

/// Where a level keeps one of its array-like settings.
type ArrayField = fn(&mut Scope) -> &mut Option<Vec<Directive>>;

/// Settings that one directive sets (the last one at a level wins).
const SCALARS: &[&str] = &[
    "proxy_connect_timeout",
    "proxy_read_timeout",
    "proxy_send_timeout",
    "proxy_next_upstream",
    "proxy_next_upstream_tries",
    "proxy_next_upstream_timeout",
    "client_max_body_size",
    "access_log",
    "limit_req_status",
    "limit_conn_status",
    "default_type",
    "ssl_protocols",
    "ssl_session_tickets",
    "real_ip_header",
    "real_ip_recursive",
    "keepalive_timeout",
    "keepalive_requests",
    "client_header_timeout",
    "client_body_timeout",
    "proxy_ssl_verify",
    "proxy_ssl_trusted_certificate",
];

impl Scope {
    fn get(&self, name: &str) -> Option<&Directive> {
        self.one.get(name)
    }

    /// Sets `key` in `b` to the time of the nginx directive `nginx`, when this
    /// level has one that reads as a time.
    fn set_time(&self, b: &mut Block, nginx: &str, key: &str) {
        if let Some(ms) = self
            .get(nginx)
            .and_then(|d| d.args.first())
            .and_then(|a| time_ms(a))
        {
            b.set(key, duration(ms));
        }
    }
}

#[derive(Debug)]
struct ReqZone {
    key: Option<String>,
    rate: String,
}

#[derive(Debug)]
struct Upstream {
    name: String,
    block: Block,
}

/// One `listen`.
#[derive(Debug, Clone)]
struct Listen {
    addr: String,
    ssl: bool,
    default: bool,
    proxy_protocol: bool,
    at: Origin,
}

/// What a route does.
#[derive(Debug, Clone)]
enum Action {
    Upstream { name: String, host: String },
    Redirect { status: i64, location: String },
    Respond { status: i64, body: Option<String> },
}

#[derive(Debug, Clone)]
struct Route {
    exact: bool,
    path: String,
    action: Action,
    scope: Scope,
    at: Origin,
    end: usize,
}

#[derive(Debug)]
struct Server {
    names: Vec<String>,
    listens: Vec<Listen>,
    routes: Vec<Route>,
    scope: Scope,
    at: Origin,
    end: usize,
}

struct Tr {
    out: Imported,
    upstreams: Vec<Upstream>,
    req_zones: HashMap<String, ReqZone>,
    conn_zones: HashMap<String, Option<String>>,
    /// Zone name → (first limit_req/limit_conn using it, routes that use it).
    zone_use: BTreeMap<String, (Origin, usize)>,
    servers: Vec<Server>,
    access_log: Option<Block>,
    main: std::path::PathBuf,
}

fn range(at: &Origin, end: usize) -> String {
    if end > at.line {
        format!("from {}:{}-{}", at.file.display(), at.line, end)
    } else {
        format!("from {}:{}", at.file.display(), at.line)
    }
}

fn s(v: &str) -> toml::Value {
    toml::Value::String(v.to_owned())
}

impl Tr {
    fn note(&mut self, d: &Directive, carried: Carried, msg: impl Into<String>) {
        self.out.note(&d.at, &d.name, carried, msg);
    }

    fn unknown(&mut self, d: &Directive, context: &str) {
        if let Some(m) = find(DROPPED_BLOCKS, &d.name).filter(|_| d.block.is_some()) {
            let m = format!("{m} (lines {}-{} not carried over)", d.at.line, d.end);
            self.note(d, Dropped, m);
        } else if let Some(m) = find(INFO, &d.name) {
            if m == "not needed" {
                self.note(d, Info, "not needed here");
            } else {
                self.note(d, Info, format!("not needed here: {m}"));
            }
        } else if let Some(m) = find(DROPPED, &d.name) {
            self.note(d, Dropped, format!("not carried over: {m}"));
        } else if SCALARS.contains(&d.name.as_str()) || KNOWN_ELSEWHERE.contains(&d.name.as_str()) {
            self.note(
                d,
                Dropped,
                format!("not allowed in {context} (nginx -t would refuse it); not carried over"),
            );
        } else {
            self.note(
                d,
                Dropped,
                "unknown directive: not one of nginx's (a typo, or another server's syntax?); nginx -t would refuse it; not carried over",
            );
        }
    }

    // ---- main ----

    fn main_level(&mut self, d: &Directive) {
        match (d.name.as_str(), &d.block) {
            ("events", Some(inner)) => {
                self.note(
                    d,
                    Info,
                    "not needed here: connection handling has its own settings",
                );
                for i in inner {
                    self.unknown(i, "events");
                }
            }
            ("http", Some(inner)) => {
                let inner = inner.clone();
                self.http(&inner);
            }
            _ if d.block.is_none() && find(INFO, &d.name).is_some() => self.unknown(d, "main"),
            _ => self.unknown(d, "the main context"),
        }
    }

    // ---- http ----

    fn http(&mut self, list: &[Directive]) {
        // Zones and upstreams first: nginx allows them after their use.
        for d in list {
            match d.name.as_str() {
                "limit_req_zone" => self.limit_req_zone(d),
                "limit_conn_zone" => self.limit_conn_zone(d),
                "upstream" if d.block.is_some() => self.upstream(d),
                _ => {}
            }
        }
        let mut scope = Scope::default();
        let rest: Vec<&Directive> = list
            .iter()
            .filter(|d| {
                !matches!(
                    d.name.as_str(),
                    "limit_req_zone" | "limit_conn_zone" | "upstream" | "server"
                )
            })
            .collect();
        self.level(&mut scope, &rest, "http");
        for d in list.iter().filter(|d| d.name == "server") {
            match &d.block {
                Some(_) => self.server(d, &scope),
                None => self.unknown(d, "http"),
            }
        }
    }

    /// The inheritable settings of one level into `scope`; what is not one of
    /// them, and not handled by the caller, is reported.
    fn level(&mut self, scope: &mut Scope, list: &[&Directive], context: &str) {
        let arrays: [(&str, ArrayField); 8] = [
            ("proxy_set_header", |s| &mut s.headers),
            ("add_header", |s| &mut s.add_headers),
            ("allow", |s| &mut s.access),
            ("limit_req", |s| &mut s.limit_req),
            ("limit_conn", |s| &mut s.limit_conn),
            ("set_real_ip_from", |s| &mut s.real_ip_from),
            ("ssl_certificate", |s| &mut s.certs),
            ("ssl_certificate_key", |s| &mut s.keys),
        ];
        for (name, field) in arrays {
            let here: Vec<Directive> = list
                .iter()
                .filter(|d| d.name == name || (name == "allow" && d.name == "deny"))
                .map(|d| (*d).clone())
                .collect();
            if !here.is_empty() {
                *field(scope) = Some(here);
            }
        }
        let server_name = String::new();
        for d in list {
            let name = d.name.as_str();
            if let Some(&k) = SCALARS.iter().find(|k| **k == name) {
                scope.one.insert(k, (*d).clone());
                self.scalar_note(d, context);
                if context == "location" && PER_LISTENER.contains(&name) {
                    self.note(d, Approximate, "set per listener here (from its default server), not per location: not carried over for this location");
                }
                continue;
            }
            if context == "location" && name == "set_real_ip_from" {
                self.note(d, Approximate, "trusted_proxies is set per listener here (from its default server), not per location: not carried over for this location");
            }
            match name {
                "proxy_set_header" => self.header_note(d, &server_name),
                "add_header" => self.add_header_note(d),
                "allow" | "deny" => {}
                "limit_req" | "limit_conn" => self.limit_check(d),
                "set_real_ip_from" => {
                    if d.args.len() != 1 || parse_net(&d.args[0]).is_none() {
                        self.note(d, Dropped, "not an address block switchyard reads (unix: is not supported); not carried over");
                    }
                }
                "ssl_certificate" | "ssl_certificate_key" => {
                    if d.args.first().is_some_and(|a| {
                        a.contains('$') || a.starts_with("data:") || a.starts_with("engine:")
                    }) {
                        self.note(d, Dropped, "certificates named by variables, data: or engine: are not read; name the PEM file");
                    }
                }
                _ if d.block.is_none() && find(INFO, name).is_some() => self.unknown(d, context),
                _ => self.unknown(d, context),
            }
        }
        if let Some(a) = &scope.access {
            if list.iter().any(|d| d.name == "allow" || d.name == "deny") {
                let a = a.clone();
                let _ = self.access(&a, true);
            }
        }
    }

    /// The note a one-value setting gets where it is written.
    fn scalar_note(&mut self, d: &Directive, context: &str) {
        let arg = d.args.first().map(String::as_str).unwrap_or("");
        let bad_time = |s: &str| time_ms(s).is_none();
        match d.name.as_str() {
            "proxy_connect_timeout"
            | "proxy_read_timeout"
            | "proxy_send_timeout"
            | "proxy_next_upstream_timeout"
            | "keepalive_timeout"
            | "client_header_timeout"
            | "client_body_timeout" => {
                if bad_time(arg) {
                    self.note(
                        d,
                        Dropped,
                        format!("\"{arg}\" is not a time nginx reads; not carried over"),
                    );
                } else if d.name == "keepalive_timeout" && d.args.len() > 1 {
                    self.note(
                        d,
                        Approximate,
                        "the second value (Keep-Alive: timeout= header) is not sent",
                    );
                }
            }
            "client_max_body_size" if size(arg).is_none() => {
                self.note(
                    d,
                    Dropped,
                    format!("\"{arg}\" is not a size; not carried over"),
                );
            }
            "proxy_next_upstream" => {
                let (_, bad) = next_upstream(&d.args);
                if !bad.is_empty() {
                    self.note(
                        d,
                        Approximate,
                        format!(
                            "{} not retried here (switchyard retries error, timeout, http_500, http_502, http_503, http_504, http_429, non_idempotent)",
                            bad.join(", ")
                        ),
                    );
                }
            }
            "proxy_next_upstream_tries" if arg == "0" => {
                self.note(
                    d,
                    Approximate,
                    "0 (no limit) becomes next_upstream_tries = 0: each server once",
                );
            }
            "access_log" if arg != "off" => {
                if context == "http" && self.access_log.is_none() {
                    let format = d.args.get(1).map(String::as_str).unwrap_or("combined");
                    let mut b = Block::new("[access_log]", range(&d.at, d.end));
                    b.set("path", arg);
                    b.set("format", "combined");
                    self.access_log = Some(b);
                    if format != "combined" || d.args.len() > 2 {
                        self.note(d, Approximate, format!("written in the \"combined\" format, not \"{format}\" (switchyard writes \"json\" or \"combined\")"));
                    }
                } else {
                    self.note(d, Approximate, "switchyard has one access log ([access_log]) for every listener; this one is not opened, but the requests are logged there");
                }
            }
            "ssl_protocols" => {
                let old: Vec<&String> = d
                    .args
                    .iter()
                    .filter(|p| !matches!(p.as_str(), "TLSv1.2" | "TLSv1.3"))
                    .collect();
                if !old.is_empty() {
                    self.note(
                        d,
                        Approximate,
                        format!(
                            "{} not offered: switchyard speaks TLS 1.2 and 1.3 only",
                            old.iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
            "real_ip_header"
                if !matches!(arg, "X-Forwarded-For" | "proxy_protocol")
                    && !arg.eq_ignore_ascii_case("x-forwarded-for") =>
            {
                self.note(
                        d,
                        Dropped,
                        format!("switchyard reads the client from X-Forwarded-For (trusted_proxies) or the PROXY protocol only, not from {arg}; not carried over"),
                    );
            }
            "real_ip_recursive" => {}
            "default_type" => {}
            "keepalive_requests"
            | "limit_req_status"
            | "limit_conn_status"
            | "ssl_session_tickets" => {}
            _ => {}
        }
    }

    // ---- zones ----

    fn limit_req_zone(&mut self, d: &Directive) {
        let mut zone = None;
        let mut rate = None;
        for a in &d.args[1.min(d.args.len())..] {
            if let Some(z) = a.strip_prefix("zone=") {
                zone = z.split(':').next().map(str::to_owned);
            } else if let Some(r) = a.strip_prefix("rate=") {
                rate = r
                    .strip_suffix("r/s")
                    .map(|n| format!("{n}/s"))
                    .or_else(|| r.strip_suffix("r/m").map(|n| format!("{n}/m")));
            }
        }
        let (Some(zone), Some(rate)) = (zone, rate) else {
            self.note(
                d,
                Dropped,
                "needs zone=NAME:SIZE and rate=Nr/s or Nr/m; not carried over",
            );
            return;
        };
        let key = limit_key(d.args.first().map(String::as_str).unwrap_or(""));
        if key.is_none() {
            self.note(
                d,
                Dropped,
                format!(
                    "switchyard counts by client address, a header, a cookie or the route, not by \"{}\"; the limits using zone {zone} are not carried over",
                    d.args.first().map_or("", String::as_str)
                ),
            );
        }
        self.req_zones.insert(zone, ReqZone { key, rate });
    }

    fn limit_conn_zone(&mut self, d: &Directive) {
        let zone = d
            .args
            .get(1)
            .and_then(|a| a.strip_prefix("zone="))
            .and_then(|z| z.split(':').next());
        let Some(zone) = zone else {
            self.note(d, Dropped, "needs KEY zone=NAME:SIZE; not carried over");
            return;
        };
        let key = limit_key(&d.args[0]);
        if key.is_none() {
            self.note(
                d,
                Dropped,
                format!("switchyard counts by client address, a header, a cookie or the route, not by \"{}\"; the limits using zone {zone} are not carried over", d.args[0]),
            );
        }
        self.conn_zones.insert(zone.to_owned(), key);
    }

    /// A `limit_req`/`limit_conn` naming a zone that does not exist.
    fn limit_check(&mut self, d: &Directive) {
        let zone = zone_of(d);
        let known = match d.name.as_str() {
            "limit_req" => zone
                .as_deref()
                .is_some_and(|z| self.req_zones.contains_key(z)),
            _ => zone
                .as_deref()
                .is_some_and(|z| self.conn_zones.contains_key(z)),
        };
        if !known {
            self.note(d, Dropped, "names no zone declared by limit_req_zone/limit_conn_zone (nginx -t would refuse it); not carried over");
        } else if d.name == "limit_req" {
            for a in &d.args[1..] {
                if !(a.starts_with("burst=") || a == "nodelay" || a.starts_with("delay=")) {
                    self.note(
                        d,
                        Dropped,
                        format!("unknown parameter {a}; the limit is not carried over"),
                    );
                }
            }
        }
    }

    // ---- upstream ----

    fn upstream(&mut self, d: &Directive) {
        let name = d.args.first().cloned().unwrap_or_default();
        let mut b = Block::new(
            format!("[upstream.{}]", crate::import::out::key(&name)),
            range(&d.at, d.end),
        );
        let mut servers = Vec::new();
        for i in d.block.as_deref().unwrap_or_default() {
            match i.name.as_str() {
                "server" => {
                    if let Some(srv) = self.upstream_server(i) {
                        servers.push(srv);
                    }
                }
                "least_conn" => {
                    b.set("balance", "least_conn");
                }
                "ip_hash" => {
                    b.set("balance", "hash");
                    b.set("hash_key", "client_ip");
                    self.note(i, Approximate, "balance = \"hash\" on the client address: each client keeps to one server, but nginx hashes an IPv4 client's first three octets (a /24 together) and places them differently");
                }
                "hash" => {
                    let key = i.args.first().map(String::as_str).unwrap_or("");
                    match hash_key(key) {
                        Some(k) => {
                            b.set("balance", "hash");
                            b.set("hash_key", k);
                            if i.args.get(1).map(String::as_str) != Some("consistent") {
                                self.note(i, Approximate, "hashed on a consistent (ketama) ring: the keys map to other servers than nginx's, and fewer move when servers change");
                            }
                        }
                        None => self.note(i, Dropped, format!("switchyard hashes the client address, a header, a cookie, a query parameter, the path or the URI, not \"{key}\"; balanced round-robin")),
                    }
                }
                "random" => {
                    b.set("balance", "random");
                    let two = i.args.first().map(String::as_str) == Some("two");
                    let method = i.args.get(1).map(String::as_str).unwrap_or("least_conn");
                    if !two {
                        self.note(i, Approximate, "balance = \"random\" picks the less busy of two random servers; nginx's `random` takes one");
                    } else if method != "least_conn" {
                        self.note(i, Approximate, format!("the less busy of the two is chosen by in-flight requests, not by {method}"));
                    }
                }
                "least_time" => {
                    b.set("balance", "least_time");
                    match i.args.first().map(String::as_str) {
                        Some("header") => {
                            b.set("least_time", "header");
                        }
                        Some(a) if a.starts_with("last_byte") => {
                            b.set("least_time", "last_byte");
                        }
                        _ => {}
                    }
                    self.note(i, Info, "least_time weighs a time-decayed average by in-flight requests, as nginx Plus does; the details differ");
                }
                "keepalive" => match i.args.first().and_then(|a| a.parse::<u32>().ok()) {
                    Some(n) => {
                        b.set("keepalive", n);
                        self.note(i, Info, "idle connections kept per server and worker (nginx: per worker for the whole group); connections are kept alive without proxy_http_version 1.1 too");
                    }
                    None => self.note(i, Dropped, "not a number; not carried over"),
                },
                "keepalive_timeout" | "keepalive_requests" | "keepalive_time" => {
                    self.note(i, Info, "not needed here: pooled connections follow switchyard's own idle policy (a connection the origin closed is detected before use)");
                }
                "zone" => self.note(i, Info, "not needed here: servers' state is shared by every worker"),
                "sticky" => {
                    if i.args.first().map(String::as_str) == Some("cookie") && i.args.len() >= 2 {
                        let mut pairs = vec![("cookie", s(&i.args[1]))];
                        let mut rest = Vec::new();
                        for a in &i.args[2..] {
                            match a.strip_prefix("expires=").and_then(time_ms) {
                                Some(ms) => pairs.push(("ttl", s(&duration(ms)))),
                                None => rest.push(a.as_str()),
                            }
                        }
                        b.set("sticky", table(pairs));
                        if !rest.is_empty() {
                            self.note(i, Approximate, format!("{} not carried over (the cookie is set with Path=/ and HttpOnly)", rest.join(" ")));
                        }
                    } else {
                        self.note(i, Dropped, "only `sticky cookie NAME [expires=T]` is carried over (as sticky = { cookie, ttl })");
                    }
                }
                "queue" => {
                    let n = i.args.first().and_then(|a| a.parse::<u32>().ok());
                    let t = i.args.get(1).and_then(|a| a.strip_prefix("timeout=")).and_then(time_ms);
                    match n {
                        Some(n) => {
                            let mut pairs = vec![("size", toml::Value::Integer(n.into()))];
                            pairs.push(("timeout", s(&duration(t.unwrap_or(60_000)))));
                            b.set("queue", table(pairs));
                        }
                        None => self.note(i, Dropped, "not a number; not carried over"),
                    }
                }
                "health_check" | "ntlm" | "state" | "resolver" | "resolver_timeout" => {
                    self.note(i, Dropped, "not carried over: write the upstream's health_check table / [resolver] instead")
                }
                _ => self.unknown(i, "upstream"),
            }
        }
        b.set("servers", toml::Value::Array(servers));
        self.upstreams.push(Upstream { name, block: b });
    }

    fn upstream_server(&mut self, i: &Directive) -> Option<toml::Value> {
        let Some(addr) = i.args.first() else {
            self.note(i, Dropped, "no address; not carried over");
            return None;
        };
        if addr.starts_with("unix:") {
            self.note(i, Dropped, "UNIX sockets are not supported as servers: listen on a loopback port; not carried over");
            return None;
        }
        let addr = with_port(addr, 80);
        let mut pairs: Vec<(&str, toml::Value)> = Vec::new();
        let mut service = None;
        let mut resolve = false;
        for p in &i.args[1..] {
            let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
            let int = || v.parse::<i64>().ok();
            match k {
                "weight" if int().is_some() => pairs.push(("weight", int().unwrap().into())),
                "max_fails" if int().is_some() => pairs.push(("max_fails", int().unwrap().into())),
                "max_conns" if int().is_some() => pairs.push(("max_conns", int().unwrap().into())),
                "fail_timeout" | "slow_start" if time_ms(v).is_some() => pairs.push((
                    if k == "fail_timeout" {
                        "fail_timeout"
                    } else {
                        "slow_start"
                    },
                    s(&duration(time_ms(v).unwrap())),
                )),
                "backup" => pairs.push(("backup", true.into())),
                "down" => pairs.push(("down", true.into())),
                "resolve" => resolve = true,
                "service" => service = Some(v.to_owned()),
                _ => self.note(i, Dropped, format!("server parameter {p} not carried over")),
            }
        }
        if let Some(svc) = service {
            let host = addr
                .rsplit_once(':')
                .map_or(addr.as_str(), |(h, _)| h)
                .to_owned();
            let name = if svc.contains('.') {
                format!("{svc}.{host}")
            } else {
                format!("_{svc}._tcp.{host}")
            };
            pairs.insert(0, ("service", s(&name)));
        } else {
            pairs.insert(0, ("addr", s(&addr)));
        }
        if resolve {
            pairs.push(("resolve", true.into()));
        }
        Some(table(pairs))
    }

    // ---- server ----

    fn server(&mut self, d: &Directive, http: &Scope) {
        let list: Vec<&Directive> = d.block.as_deref().unwrap_or_default().iter().collect();
        let mut scope = http.clone();
        let mut names = Vec::new();
        let mut listens = Vec::new();
        let mut ssl_on = false;
        let mut server_return = None;
        let mut rest = Vec::new();
        for i in &list {
            match i.name.as_str() {
                "listen" => {
                    if let Some(l) = self.listen(i) {
                        listens.push(l);
                    }
                }
                "server_name" => {
                    for n in &i.args {
                        let n = n.to_ascii_lowercase();
                        if n.starts_with('~') {
                            self.note(i, Dropped, format!("regular-expression name {n} not carried over: routes match exact names and *.wildcards"));
                        } else if n.ends_with(".*") {
                            self.note(i, Dropped, format!("name {n} (wildcard at the end) not carried over: write each full name"));
                        } else if let Some(base) = n.strip_prefix('.') {
                            names.push(base.to_owned());
                            names.push(format!("*.{base}"));
                        } else if n == "_" || n.is_empty() {
                            // A name no request has: the server is reached as the default only.
                        } else if n.contains('*') && !n.starts_with("*.") {
                            self.note(
                                i,
                                Dropped,
                                format!("name {n} not carried over: wildcards are only *.domain"),
                            );
                        } else {
                            names.push(n);
                        }
                    }
                }
                "ssl" => {
                    ssl_on = i.args.first().map(String::as_str) == Some("on");
                    self.note(
                        i,
                        Info,
                        "`ssl on` (before nginx 1.15): the server's listeners are TLS",
                    );
                }
                "return" => server_return = Some((*i).clone()),
                "location" => {}
                _ => rest.push(*i),
            }
        }
        if listens.is_empty() {
            listens.push(Listen {
                addr: "0.0.0.0:80".into(),
                ssl: false,
                default: false,
                proxy_protocol: false,
                at: d.at.clone(),
            });
        }
        if ssl_on {
            for l in &mut listens {
                l.ssl = true;
            }
        }
        self.level(&mut scope, &rest, "server");
        let first_name = names.first().cloned().unwrap_or_default();
        let mut routes = Vec::new();
        if let Some(r) = &server_return {
            let locs: Vec<&&Directive> = list.iter().filter(|i| i.name == "location").collect();
            if let Some(action) = self.return_action(r, &first_name, &scope) {
                routes.push(Route {
                    exact: false,
                    path: "/".into(),
                    action,
                    scope: scope.clone(),
                    at: r.at.clone(),
                    end: r.end,
                });
            }
            for l in locs {
                self.note(l, Info, "never reached: the server's `return` answers first (nginx runs it before choosing a location)");
            }
        } else {
            for i in list.iter().filter(|i| i.name == "location") {
                self.location(i, &scope, &first_name, &mut routes, None);
            }
        }
        self.servers.push(Server {
            names,
            listens,
            routes,
            scope,
            at: d.at.clone(),
            end: d.end,
        });
    }

    fn listen(&mut self, i: &Directive) -> Option<Listen> {
        let Some(a) = i.args.first() else {
            self.note(i, Dropped, "no address; not carried over");
            return None;
        };
        if a.starts_with("unix:") {
            self.note(
                i,
                Dropped,
                "UNIX sockets are not listened on; not carried over",
            );
            return None;
        }
        let addr = if let Ok(port) = a.parse::<u16>() {
            format!("0.0.0.0:{port}")
        } else if a.starts_with('[') {
            if a.contains("]:") {
                a.clone()
            } else {
                format!("{a}:80")
            }
        } else if let Some(h) = a.strip_prefix("*:") {
            format!("0.0.0.0:{h}")
        } else if a.contains(':') {
            a.clone()
        } else {
            format!("{a}:80")
        };
        let mut l = Listen {
            addr,
            ssl: false,
            default: false,
            proxy_protocol: false,
            at: i.at.clone(),
        };
        let mut info = Vec::new();
        for p in &i.args[1..] {
            match p.as_str() {
                "ssl" => l.ssl = true,
                "default_server" | "default" => l.default = true,
                "proxy_protocol" => l.proxy_protocol = true,
                "http2" => info.push("http2: HTTP/2 is always offered"),
                "reuseport" => info.push("reuseport: every worker has its own socket already"),
                p if p.starts_with("backlog=")
                    || p.starts_with("ipv6only=")
                    || p == "deferred"
                    || p.starts_with("so_keepalive=")
                    || p.starts_with("rcvbuf=")
                    || p.starts_with("sndbuf=") =>
                {
                    info.push("socket options are switchyard's own")
                }
                p => self.note(i, Dropped, format!("listen parameter {p} not carried over")),
            }
        }
        info.dedup();
        if !info.is_empty() {
            self.note(i, Info, info.join("; "));
        }
        Some(l)
    }

    /// `return` as an action.
    fn return_action(&mut self, r: &Directive, server_name: &str, scope: &Scope) -> Option<Action> {
        let fixed = [("server_name", server_name)];
        let (code, text) = match r.args.as_slice() {
            [url]
                if url.starts_with("http://")
                    || url.starts_with("https://")
                    || url.starts_with('$') =>
            {
                (302, Some(url.clone()))
            }
            [code] => (code.parse::<i64>().unwrap_or(-1), None),
            [code, text] => (code.parse::<i64>().unwrap_or(-1), Some(text.clone())),
            _ => (-1, None),
        };
        if code == 444 {
            self.note(
                r,
                Dropped,
                "444 (close without an answer) is not done; not carried over",
            );
            return None;
        }
        if matches!(code, 301 | 302 | 303 | 307 | 308) {
            let Some(url) = text else {
                self.note(r, Dropped, "a redirect without a URL; not carried over");
                return None;
            };
            return match template(&url, &fixed) {
                Ok(loc) => {
                    if !(loc.starts_with("http://")
                        || loc.starts_with("https://")
                        || loc.starts_with("$scheme://"))
                    {
                        self.note(r, Approximate, "a relative Location is sent as written; nginx makes it absolute (absolute_redirect on)");
                    }
                    Some(Action::Redirect {
                        status: code,
                        location: loc,
                    })
                }
                Err(vars) => {
                    self.note(r, Dropped, format!("redirects may use $host, $request_uri, $uri, $args, $is_args, $scheme, $remote_addr, $request_id, not {}; not carried over", vars.join(", ")));
                    None
                }
            };
        }
        if !(200..=599).contains(&code) {
            self.note(
                r,
                Dropped,
                "status not carried over (200-599 and redirects only)",
            );
            return None;
        }
        if let Some(t) = &text {
            if t.contains('$') {
                self.note(
                    r,
                    Dropped,
                    "a body with variables is not carried over (respond's body is fixed)",
                );
                return None;
            }
        }
        if text.is_none() && code >= 400 {
            self.note(
                r,
                Info,
                "answered with an empty body (nginx sends its HTML error page)",
            );
        }
        let _ = scope;
        Some(Action::Respond {
            status: code,
            body: text,
        })
    }

    // ---- location ----

    fn location(
        &mut self,
        d: &Directive,
        parent: &Scope,
        server_name: &str,
        routes: &mut Vec<Route>,
        outer: Option<&str>,
    ) {
        let (exact, path) = match d.args.as_slice() {
            [m, p] if m == "=" => (true, p.clone()),
            [m, p] if m == "^~" => (false, p.clone()),
            [m, _] if m == "~" || m == "~*" => {
                self.note(d, Dropped, format!("regular-expression location not carried over (lines {}-{}): routes match exact paths and prefixes; requests it would take go to the longest matching prefix here", d.at.line, d.end));
                return;
            }
            [p] if p.starts_with('@') => {
                self.note(
                    d,
                    Dropped,
                    format!(
                        "named location not carried over (lines {}-{}): no internal redirects",
                        d.at.line, d.end
                    ),
                );
                return;
            }
            [p] => (false, p.clone()),
            _ => {
                self.note(d, Dropped, "location not understood; not carried over");
                return;
            }
        };
        if !path.starts_with('/') {
            self.note(
                d,
                Dropped,
                format!("location {path} does not start with \"/\"; not carried over"),
            );
            return;
        }
        if let Some(o) = outer {
            if !path.starts_with(o) {
                self.note(d, Dropped, format!("location {path} is outside the enclosing location {o} (nginx -t would refuse it); not carried over"));
                return;
            }
        }
        let list: Vec<&Directive> = d.block.as_deref().unwrap_or_default().iter().collect();
        let mut scope = parent.clone();
        let mut pass = None;
        let mut ret = None;
        let mut rest = Vec::new();
        for i in &list {
            match i.name.as_str() {
                "proxy_pass" => pass = Some((*i).clone()),
                "return" => ret = Some((*i).clone()),
                "location" => {}
                _ => rest.push(*i),
            }
        }
        self.level(&mut scope, &rest, "location");
        let action = if let Some(r) = &ret {
            if let Some(p) = &pass {
                self.note(
                    p,
                    Info,
                    "never reached: the location's `return` answers first",
                );
            }
            self.return_action(r, server_name, &scope)
        } else if let Some(p) = &pass {
            let action = self.proxy_pass(p, exact, &path, &scope);
            if let Some(Action::Upstream { host, .. }) = &action {
                let sets_host = scope.headers.iter().flatten().any(|d| {
                    d.args
                        .first()
                        .is_some_and(|n| n.eq_ignore_ascii_case("host"))
                });
                if !sets_host {
                    self.note(p, Info, format!("nginx sends Host: {host} (its $proxy_host) when no proxy_set_header Host is set: kept as set_headers.Host; leave it out to pass the client's Host"));
                }
            }
            action
        } else {
            if list.iter().all(|i| i.name == "location") && !list.is_empty() {
                None
            } else {
                let other = list
                    .iter()
                    .find(|i| i.name.ends_with("_pass"))
                    .map(|i| i.name.clone());
                let what = match other {
                    Some(o) => {
                        format!("location {path} has no proxy_pass (its {o} is not carried over)")
                    }
                    None => format!("location {path} serves files (no proxy_pass or return)"),
                };
                self.note(
                    d,
                    Dropped,
                    format!("{what}; no route: its requests go to the longest other prefix here"),
                );
                None
            }
        };
        if let Some(action) = action {
            routes.push(Route {
                exact,
                path: path.clone(),
                action,
                scope: scope.clone(),
                at: d.at.clone(),
                end: d.end,
            });
        }
        for i in list.iter().filter(|i| i.name == "location") {
            self.location(i, &scope, server_name, routes, Some(&path));
        }
    }

    fn proxy_pass(
        &mut self,
        p: &Directive,
        exact: bool,
        path: &str,
        scope: &Scope,
    ) -> Option<Action> {
        let Some(url) = p.args.first() else {
            self.note(p, Dropped, "no URL; not carried over");
            return None;
        };
        if url.contains('$') {
            self.note(
                p,
                Dropped,
                "a URL with variables is not carried over: name the upstream",
            );
            return None;
        }
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            self.note(
                p,
                Dropped,
                "only http:// and https:// URLs are carried over",
            );
            return None;
        };
        if rest.starts_with("unix:") {
            self.note(
                p,
                Dropped,
                "UNIX sockets are not supported as upstreams; not carried over",
            );
            return None;
        }
        let (hostport, uri) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        if let Some(uri) = uri {
            if uri != path {
                let what = if exact {
                    "replaces the whole path"
                } else {
                    "replaces the matched prefix"
                };
                self.note(
                    p,
                    Dropped,
                    format!("the URI part {uri} {what} {path} → {uri}, and switchyard forwards the path unchanged (it has no prefix rewrite); no route for {path}: rewrite at the origin (serve it under {path}) and route to it"),
                );
                return None;
            }
        }
        // nginx verifies an HTTPS upstream only with proxy_ssl_verify on.
        let verify = scope
            .get("proxy_ssl_verify")
            .and_then(|d| d.args.first())
            .is_some_and(|a| a == "on");
        let ca = scope
            .get("proxy_ssl_trusted_certificate")
            .and_then(|d| d.args.first())
            .cloned();
        let tls_value = || {
            if !verify {
                table([("verify", false.into())])
            } else if let Some(ca) = &ca {
                table([("ca_file", s(ca))])
            } else {
                toml::Value::Boolean(true)
            }
        };
        let tls_comment = if verify {
            "nginx's proxy_ssl_verify on"
        } else {
            "nginx's proxy_ssl_verify off (its default)"
        };
        let name = if let Some(u) = self.upstreams.iter_mut().find(|u| u.name == hostport) {
            let name = u.name.clone();
            if tls {
                match u.block.get("tls").cloned() {
                    None => {
                        u.block.set_commented("tls", tls_value(), tls_comment);
                    }
                    Some(v) if v == tls_value() => {}
                    Some(_) => {
                        self.note(p, Dropped, format!("https:// to upstream {name} with other certificate checks than another location's: not carried over (an upstream has one tls setting)"));
                        return None;
                    }
                }
                if !verify {
                    self.note(p, Info, "upstream certificates are not verified, as nginx does by default: set tls.verify = true where you can");
                }
            } else if u.block.get("tls").is_some() {
                self.note(p, Dropped, format!("http:// to upstream {name}, which another location reaches over https://: not carried over (an upstream has one tls setting)"));
                return None;
            }
            name
        } else {
            // An address, not an upstream block: an upstream of its own.
            let addr = with_port(hostport, if tls { 443 } else { 80 });
            let name: String = hostport
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let name = if tls { format!("{name}_tls") } else { name };
            if !self.upstreams.iter().any(|u| u.name == name) {
                let mut b = Block::new(format!("[upstream.{name}]"), range(&p.at, p.end));
                if tls {
                    b.set_commented("tls", tls_value(), tls_comment);
                }
                b.set(
                    "servers",
                    toml::Value::Array(vec![table([("addr", s(&addr))])]),
                );
                self.upstreams.push(Upstream {
                    name: name.clone(),
                    block: b,
                });
            }
            if tls && !verify {
                self.note(p, Info, "upstream certificates are not verified, as nginx does by default: set tls.verify = true where you can");
            }
            name
        };
        // nginx's Host when none is set: $proxy_host, the URL's host (its port
        // when not the scheme's).
        let default_port = if tls { ":443" } else { ":80" };
        let host = hostport
            .strip_suffix(default_port)
            .unwrap_or(hostport)
            .to_owned();
        Some(Action::Upstream { name, host })
    }

    // ---- notes made where a setting is written ----

    fn header_note(&mut self, d: &Directive, server_name: &str) {
        let [name, value] = d.args.as_slice() else {
            self.note(d, Dropped, "needs a name and a value; not carried over");
            return;
        };
        match header(name, value, server_name, "") {
            HeaderOut::Set(_) => {}
            HeaderOut::Builtin(m) => self.note(d, Info, m),
            HeaderOut::Drop(m) => self.note(d, Dropped, m),
        }
    }

    fn add_header_note(&mut self, d: &Directive) {
        let (name, value, always) = match d.args.as_slice() {
            [n, v] => (n, v, false),
            [n, v, a] if a == "always" => (n, v, true),
            _ => {
                self.note(d, Dropped, "needs a name and a value; not carried over");
                return;
            }
        };
        if value.contains('$') {
            self.note(d, Dropped, format!("{name}: values with variables are not carried over (response_headers are fixed)"));
        } else if !always {
            self.note(d, Approximate, format!("{name} is set on every response here (response_headers, nginx's `always`), not only on 2xx and 3xx"));
        }
    }

    // ---- allow / deny ----

    /// nginx's first-match rules as Switchyard's allow and deny lists (deny
    /// wins, whatever the order), or `None` when that is not the same.
    fn access(&mut self, rules: &[Directive], say: bool) -> Option<(Vec<String>, Vec<String>)> {
        let mut allow: Vec<IpNet> = Vec::new();
        let mut deny: Vec<IpNet> = Vec::new();
        let mut closed = false; // `deny all` reached
        let mut opened = false; // `allow all` reached
        let mut problem = None;
        for r in rules {
            let Some(a) = r.args.first() else { continue };
            if closed || opened {
                if say {
                    self.note(
                        r,
                        Info,
                        "never reached: an earlier `all` rule decides first",
                    );
                }
                continue;
            }
            if a == "all" {
                if r.name == "deny" {
                    closed = true;
                } else {
                    opened = true;
                }
                continue;
            }
            let Some(net) = parse_net(a) else {
                problem = Some((
                    r.clone(),
                    format!("{a} is not an address block switchyard reads"),
                ));
                break;
            };
            if r.name == "allow" {
                allow.push(net);
            } else {
                // A deny after an allow that covers part of it: nginx lets the
                // overlap in, switchyard (deny wins) would not.
                if allow
                    .iter()
                    .any(|x| x.contains(&net.network()) || net.contains(&x.network()))
                {
                    problem = Some((r.clone(), format!("deny {a} comes after an allow that overlaps it: nginx lets the overlap in (first match), switchyard's deny always wins")));
                    break;
                }
                deny.push(net);
            }
        }
        if let Some((r, why)) = problem {
            if say {
                self.note(&r, Dropped, format!("{why}; these allow/deny rules are not carried over and the routes they cover are closed to everyone (deny = [\"0.0.0.0/0\", \"::/0\"]) until you reorder them so every deny comes before the allows"));
            }
            return None;
        }
        if !closed {
            // Without a final `deny all` the allows change nothing.
            allow.clear();
        } else if allow.is_empty() {
            deny = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        }
        let show = |v: &[IpNet]| {
            v.iter()
                .map(|n| {
                    if n.prefix_len() == n.max_prefix_len() {
                        n.addr().to_string()
                    } else {
                        n.to_string()
                    }
                })
                .collect()
        };
        Some((show(&allow), show(&deny)))
    }

    // ---- the output ----

    fn finish(&mut self) {
        // Listeners: one per address, in order of appearance.
        let mut addrs: Vec<String> = Vec::new();
        for srv in &self.servers {
            for l in &srv.listens {
                if !addrs.contains(&l.addr) {
                    addrs.push(l.addr.clone());
                }
            }
        }
        // `[::]:P` next to `0.0.0.0:P`: one listener.
        let mut skip_v6 = Vec::new();
        for a in &addrs {
            if let Some(port) = a.strip_prefix("[::]:") {
                if addrs.iter().any(|b| b == &format!("0.0.0.0:{port}")) {
                    skip_v6.push(a.clone());
                }
            }
        }
        let mut noted_v6 = Vec::new();
        for srv in &self.servers {
            for l in &srv.listens {
                if skip_v6.contains(&l.addr) && !noted_v6.contains(&l.at) {
                    noted_v6.push(l.at.clone());
                }
            }
        }
        for at in noted_v6 {
            let port = at.line;
            let _ = port;
            self.out.note(&at, "listen", Approximate, "IPv6 is not listened on separately next to 0.0.0.0 of the same port: only IPv4 is taken here; make the listener \"[::]:PORT\" to take both (dual-stack)");
        }
        addrs.retain(|a| !skip_v6.contains(a));
        let names = listener_names(&addrs);
        // The default server of each listener.
        let defaults: Vec<usize> = addrs
            .iter()
            .map(|a| {
                let on: Vec<usize> = (0..self.servers.len())
                    .filter(|&i| self.servers[i].listens.iter().any(|l| &l.addr == a))
                    .collect();
                on.iter()
                    .copied()
                    .find(|&i| {
                        self.servers[i]
                            .listens
                            .iter()
                            .any(|l| &l.addr == a && l.default)
                    })
                    .unwrap_or(on[0])
            })
            .collect();
        let mut blocks = Vec::new();
        for (li, addr) in addrs.iter().enumerate() {
            blocks.push(self.listener(addr, &names[li], defaults[li]));
        }
        // Routes.
        let several = addrs.len() > 1;
        let mut route_blocks = Vec::new();
        let mut zone_counts: BTreeMap<String, usize> = BTreeMap::new();
        // Which server each name belongs to, per address: the first, as nginx
        // ("conflicting server name ... ignored").
        let mut claimed: HashMap<(String, String), usize> = HashMap::new();
        for (si, srv) in self.servers.iter().enumerate() {
            for l in &srv.listens {
                for n in &srv.names {
                    let owner = *claimed.entry((l.addr.clone(), n.clone())).or_insert(si);
                    if owner != si {
                        self.out.note(&srv.at, "server_name", Dropped, format!("conflicting server name {n} on {}: nginx ignores it here (the first server with it takes it), so does this translation", l.addr));
                    }
                }
            }
        }
        for si in 0..self.servers.len() {
            for (li, addr) in addrs.iter().enumerate() {
                if !self.servers[si].listens.iter().any(|l| &l.addr == addr) {
                    continue;
                }
                let mut hosts: Vec<Option<String>> = self.servers[si]
                    .names
                    .iter()
                    .filter(|n| claimed.get(&(addr.clone(), (*n).clone())) == Some(&si))
                    .cloned()
                    .map(Some)
                    .collect();
                if defaults[li] == si {
                    // The default server's routes without a host serve its own
                    // names too, unless another server here could claim one.
                    let others: Vec<&String> = claimed
                        .iter()
                        .filter(|((a, _), &o)| a == addr && o != si)
                        .map(|((_, n), _)| n)
                        .collect();
                    hosts.retain(|h| {
                        h.as_ref().is_some_and(|h| {
                            others
                                .iter()
                                .any(|o| *o == h || (o.starts_with("*.") && h.ends_with(&o[1..])))
                        })
                    });
                    hosts.push(None);
                } else if hosts.is_empty() {
                    let at = self.servers[si].at.clone();
                    self.out.note(&at, "server", Dropped, format!("no name of this server reaches it on {addr}, and it is not the default server there: no routes"));
                }
                let listener = several.then(|| names[li].clone());
                let ssl = self.servers[si]
                    .listens
                    .iter()
                    .any(|l| &l.addr == addr && l.ssl);
                for h in &hosts {
                    let routes = self.servers[si].routes.clone();
                    let has_root = routes.iter().any(|r| !r.exact && r.path == "/");
                    for r in &routes {
                        let b =
                            self.route(r, listener.as_deref(), h.as_deref(), ssl, &mut zone_counts);
                        route_blocks.push(b);
                    }
                    if !has_root && h.is_some() {
                        let srv = &self.servers[si];
                        let mut b = Block::new(
                            "[[route]]",
                            format!(
                                "{}: nginx answers paths no location takes from its root: 404 here",
                                range(&srv.at, srv.end)
                            ),
                        );
                        if let Some(l) = &listener {
                            b.set("listener", l.as_str());
                        }
                        b.set("host", h.as_deref().unwrap_or_default());
                        b.set("respond", table([("status", 404.into())]));
                        route_blocks.push(b);
                    }
                }
            }
        }
        for (zone, n) in zone_counts {
            if n > 1 {
                if let Some((at, _)) = self.zone_use.get(&zone).cloned() {
                    let (directive, name, what) = match zone.strip_prefix("conn:") {
                        Some(z) => ("limit_conn", z, "count of requests in flight"),
                        None => ("limit_req", zone.as_str(), "budget"),
                    };
                    self.out.note(&at, directive, Approximate, format!("zone {name} is used by {n} routes here, and each route counts on its own: nginx shares one {what} per key across them"));
                }
            }
        }
        for b in blocks {
            self.out.doc.push(b);
        }
        for b in route_blocks {
            self.out.doc.push(b);
        }
        for u in std::mem::take(&mut self.upstreams) {
            self.out.doc.push(u.block);
        }
        if let Some(b) = self.access_log.take() {
            self.out.doc.blocks_mut().insert(0, b);
        }
        let _ = &self.main;
    }

    fn listener(&mut self, addr: &str, name: &str, default: usize) -> Block {
        let on: Vec<usize> = (0..self.servers.len())
            .filter(|&i| self.servers[i].listens.iter().any(|l| l.addr == addr))
            .collect();
        let lines: Vec<String> = on
            .iter()
            .flat_map(|&i| {
                self.servers[i]
                    .listens
                    .iter()
                    .filter(|l| l.addr == addr)
                    .map(|l| format!("{}:{}", l.at.file.display(), l.at.line))
            })
            .collect();
        let mut b = Block::new(
            "[[listener]]",
            format!("from listen at {}", lines.join(", ")),
        );
        b.set("name", name);
        b.set("listen", addr);
        let srv = &self.servers[default];
        let sc = srv.scope.clone();
        // Other servers here with their own values: the default server's win.
        let mut differ = Vec::new();
        for &i in on.iter().filter(|&&i| i != default) {
            let other = &self.servers[i].scope;
            for key in PER_LISTENER {
                if let Some(d) = other.get(key) {
                    if sc.get(key).map(|x| &x.args) != Some(&d.args) {
                        differ.push(d.clone());
                    }
                }
            }
            let ips = |s: &Scope| {
                s.real_ip_from
                    .as_ref()
                    .map(|v| v.iter().map(|d| d.args.clone()).collect::<Vec<_>>())
            };
            if ips(other) != ips(&sc) {
                if let Some(d) = other.real_ip_from.as_ref().and_then(|v| v.first()) {
                    differ.push(d.clone());
                }
            }
        }
        differ.sort_by(|a, b| a.at.cmp(&b.at));
        differ.dedup_by(|a, b| a.at == b.at);
        for d in differ {
            self.out.note(&d.at, &d.name, Approximate, format!("set per listener here: {addr} takes its default server's value, not this server's"));
        }
        let ssl = on.iter().any(|&i| {
            self.servers[i]
                .listens
                .iter()
                .any(|l| l.addr == addr && l.ssl)
        });
        let pp = on.iter().any(|&i| {
            self.servers[i]
                .listens
                .iter()
                .any(|l| l.addr == addr && l.proxy_protocol)
        });
        let pp_at = on.iter().find_map(|&i| {
            self.servers[i]
                .listens
                .iter()
                .find(|l| l.addr == addr && l.proxy_protocol)
                .map(|l| l.at.clone())
        });
        // Connection-level settings: the default server's, as nginx takes them.
        for (nginx, key) in [
            ("client_header_timeout", "client_header_timeout"),
            ("client_body_timeout", "client_body_timeout"),
            ("keepalive_timeout", "keepalive_timeout"),
        ] {
            sc.set_time(&mut b, nginx, key);
        }
        if let Some(n) = sc
            .get("keepalive_requests")
            .and_then(|d| d.args.first())
            .and_then(|a| a.parse::<u32>().ok())
        {
            b.set("keepalive_requests", n);
        }
        if pp {
            b.set("proxy_protocol", true);
            let from_pp = sc
                .get("real_ip_header")
                .and_then(|d| d.args.first())
                .is_some_and(|a| a == "proxy_protocol");
            if !from_pp {
                if let Some(at) = pp_at {
                    self.out.note(&at, "listen", Approximate, "proxy_protocol: the PROXY header's address is the client everywhere here ($remote_addr, allow/deny, limits); nginx keeps the balancer's unless real_ip_header proxy_protocol");
                }
            }
        }
        // trusted_proxies: set_real_ip_from with real_ip_header X-Forwarded-For.
        if let Some(from) = &sc.real_ip_from {
            let header = sc
                .get("real_ip_header")
                .and_then(|d| d.args.first())
                .map(|a| a.to_ascii_lowercase());
            match header.as_deref() {
                Some("x-forwarded-for") => {
                    let nets: Vec<toml::Value> = from
                        .iter()
                        .filter_map(|d| d.args.first())
                        .filter_map(|a| parse_net(a))
                        .map(|n| s(&show_net(&n)))
                        .collect();
                    b.set("trusted_proxies", toml::Value::Array(nets));
                    let recursive = sc
                        .get("real_ip_recursive")
                        .and_then(|d| d.args.first())
                        .is_some_and(|a| a == "on");
                    if !recursive {
                        let at = sc.get("real_ip_header").map(|d| d.at.clone()).unwrap();
                        self.out.note(&at, "real_ip_header", Approximate, "the client is the right-most address of X-Forwarded-For that is not trusted (nginx's real_ip_recursive on); with recursive off nginx takes the right-most whatever it is");
                    }
                }
                Some("proxy_protocol") => {}
                None => {
                    let at = from[0].at.clone();
                    self.out.note(&at, "set_real_ip_from", Dropped, "nginx reads X-Real-IP by default (no real_ip_header); switchyard reads X-Forwarded-For only: not carried over, write trusted_proxies if the proxies send X-Forwarded-For");
                }
                Some(_) => {}
            }
        }
        if ssl {
            let mut tls = Vec::new();
            let mut seen = Vec::new();
            let mut order = vec![default];
            order.extend(on.iter().copied().filter(|&i| i != default));
            for i in order {
                let srv = &self.servers[i];
                if !srv.listens.iter().any(|l| l.addr == addr && l.ssl) {
                    continue;
                }
                let certs = srv.scope.certs.clone().unwrap_or_default();
                let keys = srv.scope.keys.clone().unwrap_or_default();
                if certs.is_empty() {
                    let at = srv
                        .listens
                        .iter()
                        .find(|l| l.addr == addr)
                        .map(|l| l.at.clone())
                        .unwrap();
                    self.out.note(&at, "listen", Dropped, "ssl without ssl_certificate in this server: nginx -t would refuse it; no certificate");
                }
                for (c, k) in certs.iter().zip(keys.iter()) {
                    let (Some(c), Some(k)) = (c.args.first(), k.args.first()) else {
                        continue;
                    };
                    if c.contains('$') || !seen.iter().all(|x: &String| x != c) {
                        continue;
                    }
                    seen.push(c.clone());
                    tls.push((c.clone(), k.clone()));
                }
            }
            let sc_srv = &self.servers[default].scope;
            let min13 = sc_srv
                .get("ssl_protocols")
                .is_some_and(|d| d.args.iter().all(|p| p == "TLSv1.3"));
            let tickets_off = sc_srv
                .get("ssl_session_tickets")
                .and_then(|d| d.args.first())
                .is_some_and(|a| a == "off");
            if let Some(((c, k), more)) = tls.split_first() {
                let mut pairs = vec![("cert", s(c)), ("key", s(k))];
                if min13 {
                    pairs.push(("min_version", s("1.3")));
                }
                if tickets_off {
                    pairs.push(("session_tickets", false.into()));
                }
                if !more.is_empty() {
                    pairs.push((
                        "sni",
                        toml::Value::Array(
                            more.iter()
                                .map(|(c, k)| table([("cert", s(c)), ("key", s(k))]))
                                .collect(),
                        ),
                    ));
                }
                b.set("tls", table(pairs));
                if !more.is_empty() {
                    let at = self.servers[default].at.clone();
                    self.out.note(&at, "ssl_certificate", Info, format!("{} certificates on {addr}: the default server's is the default, the others are chosen by the names in them (SNI), not by server_name", tls.len()));
                }
            }
        }
        b
    }

    fn route(
        &mut self,
        r: &Route,
        listener: Option<&str>,
        host: Option<&str>,
        ssl: bool,
        zones: &mut BTreeMap<String, usize>,
    ) -> Block {
        let from = range(&r.at, r.end);
        let comment = match host {
            Some(_) => from,
            None => format!("{from} (the default server: any Host no other server names)"),
        };
        let mut b = Block::new("[[route]]", comment);
        if let Some(l) = listener {
            b.set("listener", l);
        }
        if let Some(h) = host {
            b.set("host", h);
        }
        if r.exact {
            b.set("path_exact", r.path.as_str());
        } else if r.path != "/" {
            b.set("path", r.path.as_str());
        }
        let sc = &r.scope;
        let server_name = host.unwrap_or_default();
        match &r.action {
            Action::Upstream {
                name,
                host: proxy_host,
            } => {
                b.set("upstream", name.as_str());
                for (nginx, key) in [
                    ("proxy_connect_timeout", "connect_timeout"),
                    ("proxy_read_timeout", "read_timeout"),
                    ("proxy_send_timeout", "send_timeout"),
                ] {
                    sc.set_time(&mut b, nginx, key);
                }
                // Headers: nginx sends Host: $proxy_host unless told otherwise.
                let mut headers = toml::map::Map::new();
                let list = sc.headers.clone().unwrap_or_default();
                if !list.iter().any(|d| {
                    d.args
                        .first()
                        .is_some_and(|n| n.eq_ignore_ascii_case("host"))
                }) {
                    headers.insert("Host".into(), s(proxy_host));
                }
                for d in &list {
                    if let [n, v] = d.args.as_slice() {
                        if let HeaderOut::Set(t) = header(n, v, server_name, proxy_host) {
                            headers.insert(n.clone(), s(&t));
                        }
                    }
                }
                if !headers.is_empty() {
                    b.set("set_headers", toml::Value::Table(headers));
                }
                if let Some(d) = sc.get("proxy_next_upstream") {
                    b.set(
                        "next_upstream",
                        toml::Value::Array(
                            next_upstream(&d.args)
                                .0
                                .into_iter()
                                .map(|x| s(&x))
                                .collect(),
                        ),
                    );
                }
                if let Some(n) = sc
                    .get("proxy_next_upstream_tries")
                    .and_then(|d| d.args.first())
                    .and_then(|a| a.parse::<u32>().ok())
                {
                    b.set("next_upstream_tries", n);
                }
                sc.set_time(
                    &mut b,
                    "proxy_next_upstream_timeout",
                    "next_upstream_timeout",
                );
            }
            Action::Redirect { status, location } => {
                b.set(
                    "redirect",
                    table([("status", (*status).into()), ("location", s(location))]),
                );
            }
            Action::Respond { status, body } => {
                let mut pairs = vec![("status", toml::Value::from(*status))];
                if let Some(t) = body {
                    pairs.push(("body", s(t)));
                    let ct = sc
                        .get("default_type")
                        .and_then(|d| d.args.first())
                        .cloned()
                        .unwrap_or_else(|| NGINX_DEFAULT_TYPE.to_owned());
                    pairs.push(("content_type", s(&ct)));
                }
                b.set("respond", table(pairs));
            }
        }
        // Response headers (add_header): fixed values only.
        let mut resp = toml::map::Map::new();
        for d in sc.add_headers.clone().unwrap_or_default() {
            if let [n, v, ..] = d.args.as_slice() {
                if !v.contains('$') {
                    resp.insert(n.clone(), s(v));
                }
            }
        }
        let _ = ssl;
        if !resp.is_empty() {
            b.set("response_headers", toml::Value::Table(resp));
        }
        if let Some(n) = sc
            .get("client_max_body_size")
            .and_then(|d| d.args.first())
            .and_then(|a| size(a))
        {
            b.set("max_body_size", size_text(n));
        }
        if sc
            .get("access_log")
            .and_then(|d| d.args.first())
            .is_some_and(|a| a == "off")
        {
            b.set("access_log", false);
        }
        if let Some(rules) = sc.access.clone() {
            let (allow, deny) = self.access(&rules, false).unwrap_or_else(|| {
                // Rules that cannot be carried close the route rather than open it.
                (Vec::new(), vec!["0.0.0.0/0".to_owned(), "::/0".to_owned()])
            });
            {
                if !allow.is_empty() {
                    b.set(
                        "allow",
                        toml::Value::Array(allow.iter().map(|x| s(x)).collect()),
                    );
                }
                if !deny.is_empty() {
                    b.set(
                        "deny",
                        toml::Value::Array(deny.iter().map(|x| s(x)).collect()),
                    );
                }
            }
        }
        // Limits.
        let req_status = sc
            .get("limit_req_status")
            .and_then(|d| d.args.first())
            .and_then(|a| a.parse::<i64>().ok())
            .unwrap_or(NGINX_LIMIT_STATUS);
        let mut limits = Vec::new();
        for d in sc.limit_req.clone().unwrap_or_default() {
            let Some(z) = zone_of(&d) else { continue };
            let Some(zone) = self.req_zones.get(&z) else {
                continue;
            };
            let Some(key) = zone.key.clone() else {
                continue;
            };
            if d.args[1..]
                .iter()
                .any(|a| !(a.starts_with("burst=") || a == "nodelay" || a.starts_with("delay=")))
            {
                continue;
            }
            let mut pairs = vec![("rate", s(&zone.rate))];
            let burst = d
                .args
                .iter()
                .find_map(|a| a.strip_prefix("burst="))
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0);
            if burst > 0 {
                pairs.push(("burst", burst.into()));
            }
            if key != "client_ip" {
                pairs.push(("key", s(&key)));
            }
            if d.args.iter().any(|a| a == "nodelay") {
            } else if let Some(n) = d
                .args
                .iter()
                .find_map(|a| a.strip_prefix("delay="))
                .and_then(|n| n.parse::<i64>().ok())
            {
                if n > 0 {
                    pairs.push(("delay", n.into()));
                }
            } else {
                pairs.push(("delay", s("all")));
            }
            pairs.push(("status", req_status.into()));
            limits.push(table(pairs));
            *zones.entry(z.clone()).or_default() += 1;
            self.zone_use.entry(z).or_insert((d.at.clone(), 0)).1 += 1;
        }
        match limits.len() {
            0 => {}
            1 => {
                b.set("rate_limit", limits.pop().unwrap());
            }
            _ => {
                b.set("rate_limit", toml::Value::Array(limits));
            }
        }
        let conn_status = sc
            .get("limit_conn_status")
            .and_then(|d| d.args.first())
            .and_then(|a| a.parse::<i64>().ok())
            .unwrap_or(NGINX_LIMIT_STATUS);
        let mut conns = Vec::new();
        for d in sc.limit_conn.clone().unwrap_or_default() {
            let Some(z) = zone_of(&d) else { continue };
            let Some(Some(key)) = self.conn_zones.get(&z).cloned() else {
                continue;
            };
            let Some(max) = d.args.get(1).and_then(|a| a.parse::<i64>().ok()) else {
                continue;
            };
            let mut pairs = vec![("max", toml::Value::from(max))];
            if key != "client_ip" {
                pairs.push(("key", s(&key)));
            }
            pairs.push(("status", conn_status.into()));
            conns.push(table(pairs));
            let e = zones.entry(format!("conn:{z}")).or_default();
            *e += 1;
            self.zone_use
                .entry(format!("conn:{z}"))
                .or_insert((d.at.clone(), 0))
                .1 += 1;
        }
        match conns.len() {
            0 => {}
            1 => {
                b.set("limit_conn", conns.pop().unwrap());
            }
            _ => {
                b.set("limit_conn", toml::Value::Array(conns));
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr() -> Tr {
        Tr {
            out: Imported::default(),
            upstreams: Vec::new(),
            req_zones: HashMap::new(),
            conn_zones: HashMap::new(),
            zone_use: BTreeMap::new(),
            servers: Vec::new(),
            access_log: None,
            main: "t.conf".into(),
        }
    }

    fn rules(text: &str) -> Vec<Directive> {
        text.split(';')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, l)| {
                let (name, arg) = l.split_once(' ').unwrap();
                Directive {
                    name: name.into(),
                    args: vec![arg.into()],
                    at: Origin {
                        file: "t.conf".into(),
                        line: i + 1,
                    },
                    end: i + 1,
                    block: None,
                }
            })
            .collect()
    }

    fn access(text: &str) -> Option<(Vec<String>, Vec<String>)> {
        tr().access(&rules(text), true)
    }

    #[test]
    fn first_match_rules_become_allow_and_deny_only_when_they_mean_the_same() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // Denies first, then allows, then deny all: the same under "deny wins".
        assert_eq!(
            access("deny 10.1.2.0/24; allow 10.0.0.0/8; allow 2001:db8::/32; deny all;"),
            Some((v(&["10.0.0.0/8", "2001:db8::/32"]), v(&["10.1.2.0/24"])))
        );
        // Without a final deny all, allows change nothing.
        assert_eq!(
            access("deny 192.0.2.7; allow 10.0.0.0/8;"),
            Some((v(&[]), v(&["192.0.2.7"])))
        );
        // deny all alone shuts everyone out.
        assert_eq!(
            access("deny all;"),
            Some((v(&[]), v(&["0.0.0.0/0", "::/0"])))
        );
        // An allow before an overlapping deny lets the overlap in under nginx.
        assert_eq!(
            access("allow 10.0.0.0/8; deny 10.1.0.0/16; deny all;"),
            None
        );
        // Not overlapping: order does not matter.
        assert_eq!(
            access("allow 10.0.0.0/8; deny 192.168.0.0/16; deny all;"),
            Some((v(&["10.0.0.0/8"]), v(&["192.168.0.0/16"])))
        );
        // Low bits past the length are dropped, as nginx does.
        assert_eq!(
            access("allow 10.1.2.3/8; deny all;"),
            Some((v(&["10.0.0.0/8"]), v(&[])))
        );
        // Rules after an `all` are never reached.
        assert_eq!(
            access("allow all; deny 10.0.0.0/8;"),
            Some((v(&[]), v(&[])))
        );
    }

    #[test]
    fn header_values_are_carried_or_said() {
        assert!(matches!(
            header("X-Real-IP", "$remote_addr", "", ""),
            HeaderOut::Builtin(_)
        ));
        assert!(matches!(
            header("X-Forwarded-For", "$proxy_add_x_forwarded_for", "", ""),
            HeaderOut::Builtin(_)
        ));
        assert!(matches!(
            header("X-Foo", "$http_x_foo", "", ""),
            HeaderOut::Builtin(_)
        ));
        assert!(matches!(
            header("X-Foo", "$http_x_bar", "", ""),
            HeaderOut::Drop(_)
        ));
        match header("X-Site", "$server_name:$host", "a.example", "") {
            HeaderOut::Set(t) => assert_eq!(t, "a.example:$host"),
            _ => panic!(),
        }
        match header("X-Price", "5$", "", "") {
            HeaderOut::Set(t) => assert_eq!(t, "5$$"),
            _ => panic!(),
        }
    }

    #[test]
    fn keys_and_addresses() {
        assert_eq!(
            limit_key("$binary_remote_addr").as_deref(),
            Some("client_ip")
        );
        assert_eq!(
            limit_key("$http_x_api_key").as_deref(),
            Some("header:X-Api-Key")
        );
        assert_eq!(limit_key("$server_name"), None);
        assert_eq!(hash_key("$arg_user").as_deref(), Some("query:user"));
        assert_eq!(with_port("backend", 80), "backend:80");
        assert_eq!(with_port("[::1]", 80), "[::1]:80");
        assert_eq!(
            listener_names(&[
                "0.0.0.0:80".into(),
                "10.0.0.1:8080".into(),
                "10.0.0.2:8080".into()
            ]),
            ["http", "port_8080_10_0_0_1", "port_8080_10_0_0_2"]
        );
    }
}
