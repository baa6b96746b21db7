//! What a reload from one configuration to another changes, as a list of readable
//! lines: `switchyard check --diff-against` prints it (a dry run), reloads log it and
//! the admin API returns it.
//!
//! Elements are matched by identity, not position: listeners and upstreams by name,
//! servers by address within their upstream, routes by (listener, host, path), so
//! reordering a file changes nothing. Order of the result: admin, listeners (by
//! name), routes (removed ones in old order, then added and changed ones in new
//! order), upstreams (by name), each upstream's settings before its servers (by
//! address).

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;

use super::{
    AccessLogConfig, AdminConfig, BalanceKind, Config, HashKey, HeaderTemplate, HealthCheckConfig,
    HostPattern, LeastTimeMode, ListenerConfig, LogFormat, LogTarget, NextUpstream, RetryPolicy,
    RouteConfig, ServerConfig, StatusSet, StickyConfig, TlsConfig, UpstreamConfig,
    UpstreamProtocol, UpstreamTls, DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_FAILS,
};

/// One difference between two configurations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub action: Action,
    /// The element: `listener public`, `route[2] (host api.example.com, path /api/)`,
    /// `upstream bots`, `upstream bots, server 127.0.0.1:9001`, `admin`.
    pub what: String,
    /// For added and removed elements, a summary of the element; for changed ones,
    /// `key old → new`. May be empty.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Added,
    Removed,
    Changed,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Added => "added",
            Action::Removed => "removed",
            Action::Changed => "changed",
        })
    }
}

impl fmt::Display for Change {
    /// `changed upstream bots, server 127.0.0.1:9001: weight 1 → 2`,
    /// `added route[2] (host api.example.com, path /api/, upstream api)`,
    /// `removed listener internal (127.0.0.1:8081)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.what)?;
        if self.detail.is_empty() {
            Ok(())
        } else if self.action == Action::Changed {
            write!(f, ": {}", self.detail)
        } else {
            write!(f, " ({})", self.detail)
        }
    }
}

/// Everything that differs from `old` to `new`, in a deterministic order (see the
/// module documentation). Secrets (the admin token) are never printed.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut d = Diff::default();
    d.admin(old.admin.as_ref(), new.admin.as_ref());
    d.access_log(old.access_log.as_ref(), new.access_log.as_ref());
    d.listeners(&old.listeners, &new.listeners);
    d.routes(&old.routes, &new.routes);
    d.upstreams(&old.upstreams, &new.upstreams);
    d.out
}

#[derive(Default)]
struct Diff {
    out: Vec<Change>,
}

impl Diff {
    fn push(&mut self, action: Action, what: impl Into<String>, detail: impl Into<String>) {
        self.out.push(Change {
            action,
            what: what.into(),
            detail: detail.into(),
        });
    }

    /// Records `key old → new` against `what` when the values differ.
    fn field<T: PartialEq + ?Sized>(
        &mut self,
        what: &str,
        key: &str,
        old: &T,
        new: &T,
        show: impl Fn(&T) -> String,
    ) {
        if old != new {
            self.push(
                Action::Changed,
                what,
                format!("{key} {} → {}", show(old), show(new)),
            );
        }
    }

    fn admin(&mut self, old: Option<&AdminConfig>, new: Option<&AdminConfig>) {
        let summary = |a: &AdminConfig| {
            let auth = if a.token.is_some() {
                ", token required"
            } else {
                ""
            };
            format!("{}{auth}", a.listen)
        };
        match (old, new) {
            (None, None) => {}
            (None, Some(n)) => self.push(Action::Added, "admin", summary(n)),
            (Some(o), None) => self.push(Action::Removed, "admin", summary(o)),
            (Some(o), Some(n)) => {
                self.field("admin", "listen", &o.listen, &n.listen, show);
                // Never the token itself: the diff is logged and served by the API.
                match (&o.token, &n.token) {
                    (None, Some(_)) => self.push(Action::Added, "admin token", ""),
                    (Some(_), None) => self.push(Action::Removed, "admin token", ""),
                    (Some(a), Some(b)) if a != b => self.push(Action::Changed, "admin token", ""),
                    _ => {}
                }
            }
        }
    }

    fn access_log(&mut self, old: Option<&AccessLogConfig>, new: Option<&AccessLogConfig>) {
        let summary = |a: &AccessLogConfig| {
            let target = match &a.target {
                LogTarget::Stdout => "stdout".to_owned(),
                LogTarget::File(p) => p.display().to_string(),
            };
            let format = match a.format {
                LogFormat::Json => "json",
                LogFormat::Combined => "combined",
            };
            format!("{target}, {format}")
        };
        match (old, new) {
            (None, None) => {}
            (None, Some(n)) => self.push(Action::Added, "access_log", summary(n)),
            (Some(o), None) => self.push(Action::Removed, "access_log", summary(o)),
            (Some(o), Some(n)) if o != n => self.push(
                Action::Changed,
                "access_log",
                format!("{} → {}", summary(o), summary(n)),
            ),
            (Some(_), Some(_)) => {}
        }
    }

    fn listeners(&mut self, old: &[ListenerConfig], new: &[ListenerConfig]) {
        let pairs = by_key(
            old.iter().map(|l| (l.name.as_str(), l)),
            new.iter().map(|l| (l.name.as_str(), l)),
        );
        for (name, pair) in pairs {
            let what = format!("listener {name}");
            match pair {
                (None, Some(n)) => self.push(Action::Added, what, listener_summary(n)),
                (Some(o), None) => self.push(Action::Removed, what, listener_summary(o)),
                (Some(o), Some(n)) => {
                    self.field(&what, "listen", &o.listen, &n.listen, show);
                    self.field(
                        &what,
                        "redirect_https",
                        &o.redirect_https,
                        &n.redirect_https,
                        |p| p.map_or("off".into(), |p| format!("port {p}")),
                    );
                    self.field(&what, "hsts", &o.hsts, &n.hsts, |h| {
                        h.as_ref()
                            .map_or("off".into(), |h| format!("{:?}", h.to_str().unwrap_or("")))
                    });
                    self.tls(&what, o.tls.as_ref(), n.tls.as_ref());
                }
                (None, None) => unreachable!(),
            }
        }
    }

    /// A listener's TLS settings, and whether a certificate file now holds another
    /// certificate (a rotation: same path, new content).
    fn tls(&mut self, what: &str, old: Option<&TlsConfig>, new: Option<&TlsConfig>) {
        let (o, n) = match (old, new) {
            (None, None) => return,
            (None, Some(n)) => {
                return self.push(Action::Added, format!("{what} tls"), tls_summary(n))
            }
            (Some(o), None) => {
                return self.push(Action::Removed, format!("{what} tls"), tls_summary(o))
            }
            (Some(o), Some(n)) => (o, n),
        };
        let path = |p: &std::path::PathBuf| format!("{p:?}");
        self.field(
            what,
            "tls.cert",
            &o.default.cert_path,
            &n.default.cert_path,
            path,
        );
        self.field(
            what,
            "tls.key",
            &o.default.key_path,
            &n.default.key_path,
            path,
        );
        self.field(
            what,
            "tls.min_version",
            &o.min_version,
            &n.min_version,
            |v| v.as_str().to_owned(),
        );
        self.field(
            what,
            "tls.session_tickets",
            &o.session_tickets,
            &n.session_tickets,
            show,
        );
        let sni = |t: &TlsConfig| -> Vec<std::path::PathBuf> {
            t.sni.iter().map(|c| c.cert_path.clone()).collect()
        };
        self.field(what, "tls.sni", &sni(o), &sni(n), |v| format!("{v:?}"));
        // Rotations: a file that stayed in the configuration with new content.
        for c in n.certificates() {
            let rotated = o
                .certificates()
                .find(|p| p.cert_path == c.cert_path && p.key_path == c.key_path)
                .is_some_and(|p| !p.same_chain(c));
            if rotated {
                self.push(
                    Action::Changed,
                    what,
                    format!("certificate {:?} reloaded (new content)", c.cert_path),
                );
            }
        }
    }

    fn routes(&mut self, old: &[RouteConfig], new: &[RouteConfig]) {
        type Key<'a> = (
            Option<&'a str>,
            Option<&'a HostPattern>,
            &'a super::PathMatch,
            Option<&'a [http::Method]>,
        );
        fn key(r: &RouteConfig) -> Key<'_> {
            (
                r.listener.as_deref(),
                r.host.as_ref(),
                &r.path,
                r.methods.as_deref(),
            )
        }
        let old_keys: HashMap<Key<'_>, &RouteConfig> = old.iter().map(|r| (key(r), r)).collect();
        let new_keys: HashMap<Key<'_>, &RouteConfig> = new.iter().map(|r| (key(r), r)).collect();
        for (i, r) in old.iter().enumerate() {
            if !new_keys.contains_key(&key(r)) {
                self.push(Action::Removed, format!("route[{i}]"), route_summary(r));
            }
        }
        for (i, n) in new.iter().enumerate() {
            match old_keys.get(&key(n)) {
                None => self.push(Action::Added, format!("route[{i}]"), route_summary(n)),
                Some(o) => self.route(&format!("route[{i}] ({})", route_ident(n)), o, n),
            }
        }
    }

    fn route(&mut self, what: &str, o: &RouteConfig, n: &RouteConfig) {
        self.field(what, "name", &o.name, &n.name, |s| format!("{s:?}"));
        self.field(what, "access_log", &o.access_log, &n.access_log, show);
        let (Some(op), Some(np)) = (proxy(o), proxy(n)) else {
            let (a, b) = (o.action.key(), n.action.key());
            if a != b {
                self.push(Action::Changed, what, format!("action {a} → {b}"));
            }
            return;
        };
        self.field(what, "upstream", &op.upstream, &np.upstream, String::clone);
        let (ot, nt) = (&op.timeouts, &np.timeouts);
        self.field(what, "connect_timeout", &ot.connect, &nt.connect, dur);
        self.field(what, "read_timeout", &ot.read, &nt.read, dur);
        self.field(what, "send_timeout", &ot.send, &nt.send, dur);
        self.field(what, "tunnel_timeout", &ot.tunnel, &nt.tunnel, dur);
        let headers = by_key(
            o.set_headers.iter().map(|(h, t)| (h.as_str(), t)),
            n.set_headers.iter().map(|(h, t)| (h.as_str(), t)),
        );
        for (name, (ot, nt)) in headers {
            self.field(what, &format!("set_headers {name}"), &ot, &nt, |t| {
                t.map_or_else(|| "unset".to_owned(), |t| format!("{:?}", template_text(t)))
            });
        }
        self.retry(what, &op.retry, &np.retry);
    }

    fn retry(&mut self, what: &str, o: &RetryPolicy, n: &RetryPolicy) {
        self.field(what, "next_upstream", &o.on, &n.on, next_upstream_text);
        self.field(what, "next_upstream_tries", &o.tries, &n.tries, show);
        self.field(what, "next_upstream_timeout", &o.timeout, &n.timeout, |t| {
            t.as_ref().map_or_else(|| "none".to_owned(), dur)
        });
        self.field(
            what,
            "retry_body_limit",
            &o.body_limit,
            &n.body_limit,
            |b| size(*b),
        );
    }

    fn upstreams(&mut self, old: &[UpstreamConfig], new: &[UpstreamConfig]) {
        let pairs = by_key(
            old.iter().map(|u| (u.name.as_str(), u)),
            new.iter().map(|u| (u.name.as_str(), u)),
        );
        for (name, pair) in pairs {
            let what = format!("upstream {name}");
            match pair {
                (None, Some(n)) => self.push(Action::Added, what, upstream_summary(n)),
                (Some(o), None) => self.push(Action::Removed, what, upstream_summary(o)),
                (Some(o), Some(n)) => self.upstream(&what, o, n),
                (None, None) => unreachable!(),
            }
        }
    }

    fn upstream(&mut self, what: &str, o: &UpstreamConfig, n: &UpstreamConfig) {
        self.field(what, "balance", &o.balance, &n.balance, |b| {
            b.as_str().to_owned()
        });
        self.field(what, "keepalive", &o.keepalive, &n.keepalive, show);
        self.field(what, "protocol", &o.protocol, &n.protocol, |p| {
            p.name().to_owned()
        });
        match (&o.tls, &n.tls) {
            (Some(ot), Some(nt)) => self.upstream_tls(what, ot, nt),
            (ot, nt) => self.field(what, "tls", ot, nt, |t| {
                t.as_ref()
                    .map_or_else(|| "off".to_owned(), upstream_tls_summary)
            }),
        }
        // Settings of one algorithm only matter while the new file uses it: when
        // `balance` changes, the old algorithm's settings going back to their
        // defaults is not news.
        let uses = |kinds: &[BalanceKind]| kinds.contains(&n.balance);
        if uses(&[BalanceKind::LeastTime]) {
            self.field(what, "least_time", &o.least_time, &n.least_time, |m| {
                match m {
                    LeastTimeMode::Header => "header",
                    LeastTimeMode::LastByte => "last_byte",
                }
                .to_owned()
            });
        }
        if uses(&[BalanceKind::Ewma, BalanceKind::LeastTime]) {
            self.field(what, "ewma_decay", &o.ewma_decay, &n.ewma_decay, dur);
            self.field(what, "ewma_seed", &o.ewma_seed, &n.ewma_seed, dur);
        }
        if uses(&[BalanceKind::Hash]) {
            self.field(what, "hash_key", &o.hash_key, &n.hash_key, |k| {
                k.as_ref().map_or_else(|| "none".to_owned(), hash_key_text)
            });
            self.field(
                what,
                "hash_balance_factor",
                &o.hash_balance_factor,
                &n.hash_balance_factor,
                |f| f.map_or_else(|| "none".to_owned(), |f| f.to_string()),
            );
        }
        match (&o.sticky, &n.sticky) {
            (Some(os), Some(ns)) => {
                self.field(what, "sticky.cookie", &os.cookie, &ns.cookie, String::clone);
                self.field(what, "sticky.ttl", &os.ttl, &ns.ttl, dur);
            }
            (os, ns) => self.field(what, "sticky", os, ns, |s| {
                s.as_ref().map_or_else(|| "none".to_owned(), sticky_text)
            }),
        }
        match (&o.health_check, &n.health_check) {
            (Some(oh), Some(nh)) => self.health_check(what, oh, nh),
            (oh, nh) => self.field(what, "health_check", oh, nh, |h| {
                h.as_ref().map_or_else(|| "none".to_owned(), health_summary)
            }),
        }
        self.field(
            what,
            "max_ejected_percent",
            &o.max_ejected_percent,
            &n.max_ejected_percent,
            |p| format!("{p}%"),
        );
        self.servers(&o.name, &o.servers, &n.servers);
    }

    fn upstream_tls(&mut self, what: &str, o: &UpstreamTls, n: &UpstreamTls) {
        self.field(what, "tls.sni", &o.sni, &n.sni, |s| {
            s.as_ref()
                .map_or_else(|| "the server's name".to_owned(), |s| format!("{s:?}"))
        });
        self.field(what, "tls.verify", &o.verify, &n.verify, show);
        self.field(what, "tls.ca_file", &o.ca_file, &n.ca_file, |f| {
            f.as_ref()
                .map_or_else(|| "built-in roots".to_owned(), |f| f.display().to_string())
        });
        // Same file, new contents: a CA rotated in place.
        if o.ca_file == n.ca_file && o.ca_certs != n.ca_certs {
            self.push(Action::Changed, what, "tls.ca_file contents");
        }
    }

    fn health_check(&mut self, what: &str, o: &HealthCheckConfig, n: &HealthCheckConfig) {
        let k = |key: &str| format!("health_check.{key}");
        self.field(what, &k("method"), &o.method, &n.method, show);
        self.field(what, &k("path"), &o.path, &n.path, String::clone);
        self.field(what, &k("host"), &o.host, &n.host, |h| match h {
            None => "the server's address".to_owned(),
            Some(v) => format!("{:?}", String::from_utf8_lossy(v.as_bytes())),
        });
        self.field(what, &k("port"), &o.port, &n.port, |p| {
            p.map_or_else(|| "the server's".to_owned(), |p| p.to_string())
        });
        self.field(what, &k("interval"), &o.interval, &n.interval, dur);
        self.field(what, &k("timeout"), &o.timeout, &n.timeout, dur);
        self.field(what, &k("jitter"), &o.jitter, &n.jitter, |j| percent(*j));
        self.field(what, &k("rise"), &o.rise, &n.rise, show);
        self.field(what, &k("fall"), &o.fall, &n.fall, show);
        self.field(
            what,
            &k("expect_status"),
            &o.expect_status,
            &n.expect_status,
            status_set_text,
        );
        self.field(
            what,
            &k("expect_body"),
            &o.expect_body,
            &n.expect_body,
            |b| {
                b.as_ref()
                    .map_or_else(|| "none".to_owned(), |b| format!("{b:?}"))
            },
        );
    }

    fn servers(&mut self, upstream: &str, old: &[ServerConfig], new: &[ServerConfig]) {
        let pairs = by_key(
            old.iter().map(|s| (s.addr, s)),
            new.iter().map(|s| (s.addr, s)),
        );
        for (addr, pair) in pairs {
            let what = format!("upstream {upstream}, server {addr}");
            match pair {
                (None, Some(n)) => self.push(Action::Added, what, server_summary(n)),
                (Some(o), None) => self.push(Action::Removed, what, server_summary(o)),
                (Some(o), Some(n)) => {
                    self.field(&what, "name", &o.name, &n.name, |s| format!("{s:?}"));
                    self.field(&what, "weight", &o.weight, &n.weight, show);
                    self.field(&what, "down", &o.down, &n.down, show);
                    self.field(&what, "backup", &o.backup, &n.backup, show);
                    self.field(&what, "max_fails", &o.max_fails, &n.max_fails, show);
                    self.field(&what, "fail_timeout", &o.fail_timeout, &n.fail_timeout, dur);
                    self.field(&what, "slow_start", &o.slow_start, &n.slow_start, dur);
                }
                (None, None) => unreachable!(),
            }
        }
    }
}

fn proxy(r: &RouteConfig) -> Option<&super::ProxyConfig> {
    match &r.action {
        super::RouteAction::Proxy(p) => Some(p),
        _ => None,
    }
}

/// Pairs the elements of `old` and `new` by key, sorted by key.
fn by_key<K: Ord, T>(
    old: impl Iterator<Item = (K, T)>,
    new: impl Iterator<Item = (K, T)>,
) -> BTreeMap<K, (Option<T>, Option<T>)> {
    let mut map: BTreeMap<K, (Option<T>, Option<T>)> = BTreeMap::new();
    for (k, v) in old {
        map.entry(k).or_insert((None, None)).0 = Some(v);
    }
    for (k, v) in new {
        map.entry(k).or_insert((None, None)).1 = Some(v);
    }
    map
}

/// `127.0.0.1:8443, tls` or `0.0.0.0:80, redirect_https to port 443`.
fn listener_summary(l: &ListenerConfig) -> String {
    let mut s = l.listen.to_string();
    if l.tls.is_some() {
        s.push_str(", tls");
    }
    if let Some(p) = l.redirect_https {
        let _ = write!(s, ", redirect_https to port {p}");
    }
    s
}

/// `cert "/etc/x.pem", 2 sni certificates, min_version 1.2`.
fn tls_summary(t: &TlsConfig) -> String {
    let mut s = format!("cert {:?}", t.default.cert_path);
    if !t.sni.is_empty() {
        let _ = write!(s, ", {} sni certificates", t.sni.len());
    }
    let _ = write!(s, ", min_version {}", t.min_version.as_str());
    s
}

fn show<T: fmt::Display>(v: &T) -> String {
    v.to_string()
}

fn dur(d: &Duration) -> String {
    humantime::format_duration(*d).to_string()
}

/// `65536` → `64KiB`, as the file would say it.
fn size(b: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    match b {
        0 => "0".to_owned(),
        b if b % MIB == 0 => format!("{}MiB", b / MIB),
        b if b % KIB == 0 => format!("{}KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}

/// `0.1` → `10%`.
fn percent(f: f64) -> String {
    format!("{}%", (f * 100_000.0).round() / 1000.0)
}

/// `listener internal, host *.example.com, path /`.
fn route_ident(r: &RouteConfig) -> String {
    let mut s = String::new();
    if let Some(l) = &r.listener {
        let _ = write!(s, "listener {l}, ");
    }
    match &r.host {
        Some(HostPattern::Exact(h)) => {
            let _ = write!(s, "host {h}, ");
        }
        Some(HostPattern::Wildcard(suffix)) => {
            let _ = write!(s, "host *{suffix}, ");
        }
        None => {}
    }
    let _ = write!(s, "{} {}", r.path.key(), r.path.as_str());
    s
}

fn route_summary(r: &RouteConfig) -> String {
    match r.upstream() {
        Some(u) => format!("{}, upstream {u}", route_ident(r)),
        None => format!("{}, {}", route_ident(r), r.action.key()),
    }
}

fn upstream_summary(u: &UpstreamConfig) -> String {
    let servers: Vec<String> = u.servers.iter().map(|s| s.addr.to_string()).collect();
    let plural = if servers.len() == 1 { "" } else { "s" };
    let mut transport = String::new();
    if u.protocol != UpstreamProtocol::Http1 {
        let _ = write!(transport, ", protocol {}", u.protocol.name());
    }
    if let Some(t) = &u.tls {
        let _ = write!(transport, ", tls ({})", upstream_tls_summary(t));
    }
    format!(
        "balance {}{transport}, server{plural} {}",
        u.balance.as_str(),
        servers.join(", ")
    )
}

/// `sni origin.example, ca_file /etc/ca.pem` or `verify off`.
fn upstream_tls_summary(t: &UpstreamTls) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &t.sni {
        parts.push(format!("sni {s}"));
    }
    if let Some(f) = &t.ca_file {
        parts.push(format!("ca_file {}", f.display()));
    }
    if !t.verify {
        parts.push("verify off".to_owned());
    }
    if parts.is_empty() {
        "on".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The server's settings, those at their defaults left out but the weight.
fn server_summary(s: &ServerConfig) -> String {
    let mut parts = vec![format!("weight {}", s.weight)];
    if s.down {
        parts.push("down".to_owned());
    }
    if s.backup {
        parts.push("backup".to_owned());
    }
    if s.max_fails != DEFAULT_MAX_FAILS {
        parts.push(format!("max_fails {}", s.max_fails));
    }
    if s.fail_timeout != DEFAULT_FAIL_TIMEOUT {
        parts.push(format!("fail_timeout {}", dur(&s.fail_timeout)));
    }
    if !s.slow_start.is_zero() {
        parts.push(format!("slow_start {}", dur(&s.slow_start)));
    }
    if s.name != s.addr.to_string() {
        parts.push(format!("from {:?}", s.name));
    }
    parts.join(", ")
}

fn sticky_text(s: &StickyConfig) -> String {
    format!("cookie {}, ttl {}", s.cookie, dur(&s.ttl))
}

fn health_summary(h: &HealthCheckConfig) -> String {
    format!("{} {} every {}", h.method, h.path, dur(&h.interval))
}

fn hash_key_text(k: &HashKey) -> String {
    match k {
        HashKey::ClientIp => "client_ip".to_owned(),
        HashKey::Header(h) => format!("header:{h}"),
        HashKey::Cookie(c) => format!("cookie:{c}"),
        HashKey::Query(q) => format!("query:{q}"),
        HashKey::Path => "path".to_owned(),
        HashKey::Uri => "uri".to_owned(),
    }
}

/// `[error, timeout, http_502]`, in the order of `NextUpstream::NAMES`.
fn next_upstream_text(n: &NextUpstream) -> String {
    let names: Vec<&str> = NextUpstream::NAMES
        .iter()
        .copied()
        .filter(|name| match *name {
            "error" => n.error,
            "timeout" => n.timeout,
            "non_idempotent" => n.non_idempotent,
            other => other
                .strip_prefix("http_")
                .and_then(|c| c.parse().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .is_some_and(|s| n.status(s)),
        })
        .collect();
    format!("[{}]", names.join(", "))
}

/// `200-399`, `200,204`: the set as ranges, whatever the file's spelling.
fn status_set_text(s: &StatusSet) -> String {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for code in 100..=599u16 {
        let Ok(status) = StatusCode::from_u16(code) else {
            continue;
        };
        if !s.contains(status) {
            continue;
        }
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == code => *hi = code,
            _ => ranges.push((code, code)),
        }
    }
    if ranges.is_empty() {
        return "none".to_owned();
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    parts.join(",")
}

fn template_text(t: &HeaderTemplate) -> String {
    t.source()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[admin]
listen = "127.0.0.1:9901"

[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[listener]]
name = "internal"
listen = "127.0.0.1:8081"

[[route]]
host = "api.example.com"
path = "/api/"
upstream = "api"
read_timeout = "30s"

[[route]]
listener = "internal"
host = "*.example.com"
upstream = "bots"

[[route]]
path = "/"
upstream = "bots"

[upstream.bots]
servers = [
  { addr = "127.0.0.1:9002" },
  { addr = "127.0.0.1:9001" },
]

[upstream.api]
servers = [{ addr = "127.0.0.1:9011" }]
"#;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("a.toml"), text)
            .unwrap_or_else(|e| panic!("invalid test config:\n{e}\n---\n{text}"))
    }

    /// `BASE` with `from` replaced by `to` (which must occur).
    fn edit(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from:?} is not in BASE");
        BASE.replacen(from, to, 1)
    }

    /// The changes from `BASE` to `new`, as display lines.
    fn lines(new: &str) -> Vec<String> {
        lines_between(BASE, new)
    }

    fn lines_between(old: &str, new: &str) -> Vec<String> {
        diff(&parse(old), &parse(new))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn identical_configs_have_no_changes() {
        assert_eq!(lines(BASE), Vec::<String>::new());
    }

    #[test]
    fn reordering_elements_is_not_a_change() {
        let reordered = r#"
[[listener]]
name = "internal"
listen = "127.0.0.1:8081"

[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
path = "/"
upstream = "bots"

[[route]]
host = "API.example.com"
path = "/api/"
upstream = "api"
read_timeout = "30000ms"

[[route]]
listener = "internal"
host = "*.example.com"
path = "/"
upstream = "bots"

[upstream.api]
servers = [{ addr = "127.0.0.1:9011", weight = 1 }]

[upstream.bots]
servers = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002" }]

[admin]
"#;
        assert_eq!(lines(reordered), Vec::<String>::new());
    }

    #[test]
    fn server_weight_and_settings() {
        let new = edit(
            r#"{ addr = "127.0.0.1:9001" }"#,
            r#"{ addr = "127.0.0.1:9001", weight = 2, down = true, backup = true, max_fails = 3, fail_timeout = "30s", slow_start = "1m" }"#,
        );
        assert_eq!(
            lines(&new),
            [
                "changed upstream bots, server 127.0.0.1:9001: weight 1 → 2",
                "changed upstream bots, server 127.0.0.1:9001: down false → true",
                "changed upstream bots, server 127.0.0.1:9001: backup false → true",
                "changed upstream bots, server 127.0.0.1:9001: max_fails 1 → 3",
                "changed upstream bots, server 127.0.0.1:9001: fail_timeout 10s → 30s",
                "changed upstream bots, server 127.0.0.1:9001: slow_start 0s → 1m",
            ]
        );
    }

    #[test]
    fn servers_added_and_removed_by_address_in_address_order() {
        let new = edit(
            r#"  { addr = "127.0.0.1:9002" },"#,
            r#"  { addr = "127.0.0.1:9004", weight = 3, slow_start = "30s" },
  { addr = "127.0.0.1:9003", backup = true },"#,
        );
        assert_eq!(
            lines(&new),
            [
                "removed upstream bots, server 127.0.0.1:9002 (weight 1)",
                "added upstream bots, server 127.0.0.1:9003 (weight 1, backup)",
                "added upstream bots, server 127.0.0.1:9004 (weight 3, slow_start 30s)",
            ]
        );
    }

    #[test]
    fn server_given_by_name_shows_it() {
        let new = edit(
            r#"{ addr = "127.0.0.1:9011" }"#,
            r#"{ addr = "localhost:9012" }"#,
        );
        let out = lines(&new);
        assert_eq!(
            out[0],
            "removed upstream api, server 127.0.0.1:9011 (weight 1)"
        );
        assert!(
            out.iter()
                .any(|l| l.starts_with("added upstream api, server ")
                    && l.ends_with("(weight 1, from \"localhost:9012\")")),
            "{out:?}"
        );
    }

    #[test]
    fn listeners_by_name() {
        let new = edit(
            "name = \"internal\"\nlisten = \"127.0.0.1:8081\"",
            "name = \"metrics\"\nlisten = \"127.0.0.1:8081\"",
        )
        .replacen("127.0.0.1:8080", "0.0.0.0:8080", 1)
        .replacen("listener = \"internal\"\n", "", 1);
        assert_eq!(
            lines(&new),
            [
                "removed listener internal (127.0.0.1:8081)",
                "added listener metrics (127.0.0.1:8081)",
                "changed listener public: listen 127.0.0.1:8080 → 0.0.0.0:8080",
                "removed route[1] (listener internal, host *.example.com, path /, upstream bots)",
                "added route[1] (host *.example.com, path /, upstream bots)",
            ]
        );
    }

    #[test]
    fn routes_added_removed_and_changed() {
        let new = edit("[[route]]\npath = \"/\"\nupstream = \"bots\"\n", "").replacen(
            "upstream = \"api\"\nread_timeout = \"30s\"",
            "upstream = \"bots\"",
            1,
        )
            + "\n[[route]]\nhost = \"chat.example.com\"\npath = \"/ws/\"\nupstream = \"api\"\n";
        assert_eq!(
            lines(&new),
            [
                "removed route[2] (path /, upstream bots)",
                "changed route[0] (host api.example.com, path /api/): upstream api → bots",
                "changed route[0] (host api.example.com, path /api/): read_timeout 30s → 1m",
                "added route[2] (host chat.example.com, path /ws/, upstream api)",
            ]
        );
    }

    #[test]
    fn route_timeouts_headers_and_retry() {
        let new = edit(
            "read_timeout = \"30s\"",
            r#"read_timeout = "30s"
connect_timeout = "250ms"
send_timeout = "1m 30s"
set_headers = { "X-Instance-ID" = "$upstream_addr", "X-Via" = "sy ${host}x $$5" }
next_upstream = ["error", "http_502", "http_429"]
next_upstream_tries = 5
next_upstream_timeout = "10s"
retry_body_limit = "1MiB""#,
        );
        let old = edit(
            "read_timeout = \"30s\"",
            "read_timeout = \"30s\"\nset_headers = { \"X-Via\" = \"old\", \"X-Drop\" = \"\" }",
        );
        let what = "changed route[0] (host api.example.com, path /api/)";
        let expected: Vec<String> = [
            "connect_timeout 1m → 250ms",
            "send_timeout 1m → 1m 30s",
            "set_headers x-drop \"\" → unset",
            "set_headers x-instance-id unset → \"$upstream_addr\"",
            "set_headers x-via \"old\" → \"sy ${host}x $$5\"",
            "next_upstream [error, timeout] → [error, http_502, http_429]",
            "next_upstream_tries 3 → 5",
            "next_upstream_timeout none → 10s",
            "retry_body_limit 64KiB → 1MiB",
        ]
        .iter()
        .map(|d| format!("{what}: {d}"))
        .collect();
        assert_eq!(lines_between(&old, &new), expected);
    }

    #[test]
    fn upstreams_added_and_removed() {
        let new = edit(
            "[upstream.api]\nservers = [{ addr = \"127.0.0.1:9011\" }]",
            "[upstream.chats]\nbalance = \"hash\"\nservers = [{ addr = \"127.0.0.1:9021\" }, { addr = \"127.0.0.1:9022\" }]",
        )
        .replace("upstream = \"api\"", "upstream = \"chats\"");
        assert_eq!(
            lines(&new),
            [
                "changed route[0] (host api.example.com, path /api/): upstream api → chats",
                "removed upstream api (balance round_robin, server 127.0.0.1:9011)",
                "added upstream chats (balance hash, servers 127.0.0.1:9021, 127.0.0.1:9022)",
            ]
        );
    }

    #[test]
    fn upstream_protocol_tls_and_tunnel_timeout() {
        let new = edit(
            "[upstream.api]\nservers",
            "[upstream.api]\nprotocol = \"h2\"\ntls = { sni = \"api.internal\" }\nservers",
        )
        .replacen(
            "read_timeout = \"30s\"",
            "read_timeout = \"30s\"\ntunnel_timeout = \"5m\"",
            1,
        );
        assert_eq!(
            lines(&new),
            [
                "changed route[0] (host api.example.com, path /api/): tunnel_timeout 1h → 5m",
                "changed upstream api: protocol http1 → h2",
                "changed upstream api: tls off → sni api.internal",
            ]
        );
        let newer = new.replacen(
            "tls = { sni = \"api.internal\" }",
            "tls = { verify = false }",
            1,
        );
        assert_eq!(
            lines_between(&new, &newer),
            [
                "changed upstream api: tls.sni \"api.internal\" → the server's name",
                "changed upstream api: tls.verify true → false",
            ]
        );
        let added = format!(
            "{new}\n[upstream.grpc]\nprotocol = \"h2c\"\nservers = [{{ addr = \"127.0.0.1:9050\" }}]\n"
        );
        assert_eq!(
            lines_between(&new, &added),
            ["added upstream grpc (balance round_robin, protocol h2c, server 127.0.0.1:9050)"]
        );
    }

    #[test]
    fn upstream_settings() {
        let old = edit(
            "[upstream.bots]\n",
            "[upstream.bots]\nbalance = \"least_time\"\nsticky = { cookie = \"SWY\" }\n",
        );
        let new = edit(
            "[upstream.bots]\n",
            r#"[upstream.bots]
balance = "least_time"
least_time = "last_byte"
ewma_decay = "5s"
ewma_seed = "10ms"
keepalive = 8
max_ejected_percent = 100
sticky = { cookie = "SID", ttl = "10m" }
health_check = { path = "/ready" }
"#,
        );
        let what = "changed upstream bots";
        let expected: Vec<String> = [
            "keepalive 32 → 8",
            "least_time header → last_byte",
            "ewma_decay 10s → 5s",
            "ewma_seed 30ms → 10ms",
            "sticky.cookie SWY → SID",
            "sticky.ttl 1h → 10m",
            "health_check none → GET /ready every 5s",
            "max_ejected_percent 50% → 100%",
        ]
        .iter()
        .map(|d| format!("{what}: {d}"))
        .collect();
        assert_eq!(lines_between(&old, &new), expected);
        // And back: sticky and health checks turned off.
        assert_eq!(
            lines_between(&new, &old)[5..7],
            [
                "changed upstream bots: sticky.ttl 10m → 1h",
                "changed upstream bots: health_check GET /ready every 5s → none",
            ]
        );
        assert_eq!(
            lines(&old),
            [
                "changed upstream bots: balance round_robin → least_time",
                "changed upstream bots: sticky none → cookie SWY, ttl 1h",
            ]
        );
    }

    #[test]
    fn settings_of_an_algorithm_no_longer_used_are_not_reported() {
        let old = edit(
            "[upstream.bots]\n",
            "[upstream.bots]\nbalance = \"hash\"\nhash_key = \"header:X-Chat-Id\"\nhash_balance_factor = 1.25\n",
        );
        assert_eq!(
            lines_between(&old, BASE),
            ["changed upstream bots: balance hash → round_robin"]
        );
        let new = old
            .replace("header:X-Chat-Id", "cookie:sid")
            .replace("1.25", "1.5");
        assert_eq!(
            lines_between(&old, &new),
            [
                "changed upstream bots: hash_key header:x-chat-id → cookie:sid",
                "changed upstream bots: hash_balance_factor 1.25 → 1.5",
            ]
        );
    }

    #[test]
    fn health_check_settings() {
        let old = edit("[upstream.bots]\n", "[upstream.bots]\nhealth_check = {}\n");
        let new = edit(
            "[upstream.bots]\n",
            r#"[upstream.bots]
health_check = { method = "HEAD", path = "/ready", host = "bots.internal", port = 9100, interval = "2s", timeout = "1s", jitter = "25%", rise = 1, fall = 5, expect_status = "200,204-206", expect_body = "ok" }
"#,
        );
        let what = "changed upstream bots";
        let expected: Vec<String> = [
            "health_check.method GET → HEAD",
            "health_check.path /health → /ready",
            "health_check.host the server's address → \"bots.internal\"",
            "health_check.port the server's → 9100",
            "health_check.interval 5s → 2s",
            "health_check.timeout 2s → 1s",
            "health_check.jitter 10% → 25%",
            "health_check.rise 2 → 1",
            "health_check.fall 3 → 5",
            "health_check.expect_status 200-399 → 200,204-206",
            "health_check.expect_body none → \"ok\"",
        ]
        .iter()
        .map(|d| format!("{what}: {d}"))
        .collect();
        assert_eq!(lines_between(&old, &new), expected);
    }

    #[test]
    fn admin_section_and_token_never_shown() {
        let no_admin = edit("[admin]\nlisten = \"127.0.0.1:9901\"\n", "");
        assert_eq!(lines(&no_admin), ["removed admin (127.0.0.1:9901)"]);
        let with_token = edit(
            "listen = \"127.0.0.1:9901\"",
            "listen = \"127.0.0.1:9902\"\ntoken = \"s3cret-one\"",
        );
        assert_eq!(
            lines_between(&no_admin, &with_token),
            ["added admin (127.0.0.1:9902, token required)"]
        );
        assert_eq!(
            lines(&with_token),
            [
                "changed admin: listen 127.0.0.1:9901 → 127.0.0.1:9902",
                "added admin token",
            ]
        );
        let other_token = with_token.replace("s3cret-one", "s3cret-two");
        let changed = diff(&parse(&with_token), &parse(&other_token));
        assert_eq!(
            changed,
            [Change {
                action: Action::Changed,
                what: "admin token".into(),
                detail: String::new(),
            }]
        );
        assert_eq!(changed[0].to_string(), "changed admin token");
        let back = lines_between(&with_token, BASE);
        assert_eq!(back[1], "removed admin token");
        let all = format!("{:?}", [back, lines_between(&with_token, &other_token)]);
        assert!(!all.contains("s3cret"), "{all}");
    }

    #[test]
    fn order_is_admin_listeners_routes_upstreams() {
        let new = BASE
            .replace("127.0.0.1:9901", "127.0.0.1:9909")
            .replace("127.0.0.1:8081", "127.0.0.1:8089")
            .replace("read_timeout = \"30s\"", "read_timeout = \"5s\"")
            .replace("127.0.0.1:9011", "127.0.0.1:9019")
            .replace(
                "{ addr = \"127.0.0.1:9001\" }",
                "{ addr = \"127.0.0.1:9001\", weight = 4 }",
            );
        assert_eq!(
            lines(&new),
            [
                "changed admin: listen 127.0.0.1:9901 → 127.0.0.1:9909",
                "changed listener internal: listen 127.0.0.1:8081 → 127.0.0.1:8089",
                "changed route[0] (host api.example.com, path /api/): read_timeout 30s → 5s",
                "removed upstream api, server 127.0.0.1:9011 (weight 1)",
                "added upstream api, server 127.0.0.1:9019 (weight 1)",
                "changed upstream bots, server 127.0.0.1:9001: weight 1 → 4",
            ]
        );
    }

    #[test]
    fn serialises_for_the_admin_api() {
        let c = Change {
            action: Action::Removed,
            what: "listener internal".into(),
            detail: "127.0.0.1:8081".into(),
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({
                "action": "removed",
                "what": "listener internal",
                "detail": "127.0.0.1:8081",
            })
        );
    }

    #[test]
    fn value_formats() {
        assert_eq!(size(65536), "64KiB");
        assert_eq!(size(3 << 20), "3MiB");
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(percent(0.1), "10%");
        assert_eq!(percent(0.125), "12.5%");
        let t = HeaderTemplate::parse("a$host-${scheme}x$$").unwrap();
        assert_eq!(template_text(&t), "a$host-${scheme}x$$");
    }
}
