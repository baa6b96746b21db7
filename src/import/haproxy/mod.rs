//! `switchyard import haproxy`: an HAProxy configuration (`haproxy.cfg`) as
//! Switchyard's TOML. `parse` reads the sections, `acl` what conditions match,
//! `routes` lays out the routes, `emit` writes the blocks; this module reads
//! every directive:
//! `global` and `defaults` settings, every `frontend` and `listen` into
//! listeners (one per `bind`) and routes (`routes` lays out `redirect`,
//! `use_backend` and `default_backend` so that the most-specific-wins router
//! answers as HAProxy's first-match rules do), every `backend` and `listen` into
//! an upstream. A `defaults` section applies to the proxies after it (or those
//! naming it with `from`), the proxy's own lines overriding it. Every directive
//! is translated exactly or reported; a last sweep reports any line nothing
//! looked at, so nothing is dropped silently.

mod acl;
mod emit;
mod parse;
mod routes;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use acl::{and, criterion};
use parse::{Kind, Line, Section};
use routes::{Conj, HostPat, PathPat};

use super::out::{self, Block};
use super::{Carried, ImportError, Imported, Origin};

/// HAProxy's `retries` when not set.
const DEFAULT_RETRIES: u32 = 3;
/// HAProxy's check interval (`inter`) when not set: 2 s.
const DEFAULT_INTER: &str = "2s";
/// HAProxy's `rise` and `fall` when not set.
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;
/// HAProxy's redirect status when no `code` is given.
const DEFAULT_REDIRECT_CODE: u16 = 302;
/// What HAProxy answers when no backend takes a request (its built-in 503 page).
const NO_BACKEND_BODY: &str = "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n";
/// What HAProxy answers on its `monitor-uri`.
const MONITOR_BODY: &str = "<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n";
/// What `option forwardfor` becomes.
const FORWARDFOR: &str = "the proxy appends the client's address to X-Forwarded-For itself (and sets X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host)";
/// Where the status page lives when nothing says otherwise: the admin
/// listener's default address.
const ADMIN_DEFAULT: &str = "127.0.0.1:9901";

/// Imports the HAProxy configuration at `path`.
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    let text = super::read(path)?;
    let sections = parse::parse(path, &text)?;
    let mut t = Tr {
        file: path.to_owned(),
        sections: &sections,
        out: Imported::default(),
        handled: HashSet::new(),
        global: Global::default(),
        backs: BTreeMap::new(),
        fronts: Vec::new(),
        admin: None,
    };
    t.run()?;
    Ok(t.finish())
}

/// `global` settings other sections use.
#[derive(Default)]
struct Global {
    maxconn: Option<(u32, usize)>,
    crt_base: At<String>,
    min_version: Option<(String, usize)>,
    no_tickets: Option<usize>,
    spread_checks: Option<(u32, usize)>,
    /// Lines whose meaning is only known once listeners exist.
    ssl_options: Vec<usize>,
}

/// Notes about one line, made before it is known which line to put them on.
type Notes = Vec<(Carried, String)>;

/// A value and the line it came from.
type At<T> = Option<(T, usize)>;

/// What a `frontend` or `listen` section says about the traffic side.
#[derive(Default)]
struct Front {
    name: String,
    line: usize,
    binds: Vec<Bind>,
    /// ACL name → its definitions (line, the alternatives it matches or why not).
    acls: BTreeMap<String, Vec<AclDef>>,
    /// `http-request redirect`, then `redirect`, then `use_backend`: HAProxy's order.
    /// `http-request deny [if|unless COND]` on client addresses: (line, condition).
    deny_rules: Vec<(usize, Vec<String>)>,
    /// `monitor-uri`: answered before any rule.
    monitor: Vec<FrontRule>,
    hr_redirects: Vec<FrontRule>,
    redirects: Vec<FrontRule>,
    use_rules: Vec<FrontRule>,
    default_backend: At<String>,
    maxconn: At<u32>,
    timeout_client: At<String>,
    timeout_http_request: At<String>,
    timeout_keep_alive: At<String>,
    /// `stats` lines.
    stats: Vec<usize>,
    /// Its own `mode http` line, if any.
    mode_line: Option<usize>,
    headers: Headers,
    is_listen: bool,
}

struct Bind {
    line: usize,
    addr: String,
    port: u16,
    tls: Option<Tls>,
    accept_proxy: bool,
    maxconn: Option<u32>,
    /// Other lines it depends on (`crt-base`).
    extra_lines: Vec<usize>,
}

struct Tls {
    certs: Vec<String>,
    min_version: Option<String>,
}

#[derive(Clone, PartialEq)]
enum Target {
    Backend(String),
    Redirect {
        status: u16,
        location: String,
    },
    NoBackend,
    /// `monitor-uri`'s answer.
    Monitor,
}

struct FrontRule {
    line: usize,
    target: Target,
    /// `if` or `unless`, then the condition's words (empty: always).
    cond: Vec<String>,
}

/// Headers set (an empty value: removed) on requests to the servers and on
/// responses: (name, value, line).
#[derive(Default, Clone)]
struct Headers {
    request: Vec<(String, String, usize)>,
    response: Vec<(String, String, usize)>,
}

/// Headers the proxy sets itself (README, Headers): rules on them are not
/// translated into set_headers, which would replace the proxy's own value.
const PROXY_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "host",
];

/// `http-request|http-response set-header|add-header|del-header NAME [VALUE]`,
/// unconditional and with a fixed value (or `%[src]` on requests): into
/// `headers`, with the note it needs; `None` when it cannot be translated.
fn header_rule(l: &Line, headers: &mut Headers) -> Option<Option<(Carried, String)>> {
    let request = l.word(0) == "http-request";
    let action = l.word(1);
    let name = l.word(2).to_owned();
    let lower = name.to_ascii_lowercase();
    if request && matches!(action, "set-header" | "add-header") {
        // The proxy's own value, written by hand: nothing to translate.
        let rest: Vec<&str> = l.words[3.min(l.words.len())..]
            .iter()
            .map(String::as_str)
            .collect();
        let own = matches!(
            (lower.as_str(), rest.as_slice()),
            ("x-real-ip", ["%[src]"])
                | (
                    "x-forwarded-host",
                    ["%[req.hdr(host),field(1,:)]" | "%[hdr(host),field(1,:)]"]
                )
                | (
                    "x-forwarded-proto",
                    ["https", "if", "{", "ssl_fc", "}"]
                        | ["http", "if", "!{", "ssl_fc", "}"]
                        | ["http", "unless", "{", "ssl_fc", "}"]
                )
        );
        if own {
            return Some(Some((
                Carried::Info,
                format!("the proxy sets {name} to this value itself (README, Headers)"),
            )));
        }
    }
    // The proxy's headers may be overridden with a fixed value, not removed or
    // computed otherwise (set_headers would replace the proxy's own value).
    if name.is_empty()
        || lower == "host"
        || lower == "x-forwarded-for"
        || (PROXY_HEADERS.contains(&lower.as_str())
            && (action == "del-header" || l.word(3).contains('%')))
    {
        return None;
    }
    let (value, rest) = match action {
        "del-header" => (String::new(), &l.words[3.min(l.words.len())..]),
        "set-header" | "add-header" if l.words.len() >= 4 => {
            let v = l.word(3);
            let v = if request && v == "%[src]" {
                "$remote_addr".to_owned()
            } else if v.contains('%') {
                return None;
            } else {
                literal(v)
            };
            (v, &l.words[4..])
        }
        _ => return None,
    };
    if !rest.is_empty() {
        return None;
    }
    let note = match (action, request) {
        ("add-header", _) => Some((
            Carried::Approximate,
            format!(
                "{name} is set, replacing a value already there, where HAProxy adds a second one"
            ),
        )),
        (_, false) => Some((
            Carried::Info,
            "response_headers: also on the proxy's own answers of these routes (errors)".to_owned(),
        )),
        _ => None,
    };
    let list = if request {
        &mut headers.request
    } else {
        &mut headers.response
    };
    list.retain(|(n, _, _)| !n.eq_ignore_ascii_case(&name));
    list.push((name, value, l.line));
    Some(note)
}

/// One `acl` line: its line number and what it matches, or why it cannot be
/// translated.
type AclDef = (usize, Result<Vec<Alt>, String>);

/// One alternative an ACL matches.
#[derive(Clone, Debug)]
enum Alt {
    Host(Vec<HostPat>),
    Path(Vec<PathPat>),
    Const(bool),
    /// The TLS listener flag (`ssl_fc`).
    Ssl,
    /// The client's address (`src`): addresses and CIDRs.
    Src(Vec<String>),
}

/// What a `backend` or `listen` section says about its servers.
#[derive(Default)]
struct Back {
    name: String,
    line: usize,
    end: usize,
    /// The lines of the defaults in force, for the block comment.
    defaults: Option<(usize, usize)>,
    balance: At<(String, Option<String>)>,
    hash_balance_factor: At<f64>,
    sticky: At<String>,
    servers: Vec<Server>,
    default_server: Vec<String>,
    httpchk: At<(String, String, Option<String>)>,
    expect: At<(&'static str, String)>,
    timeout_connect: At<String>,
    timeout_server: At<String>,
    timeout_queue: At<String>,
    timeout_tunnel: At<String>,
    timeout_check: At<String>,
    retries: At<u32>,
    redispatch: Option<usize>,
    /// `option allbackups`: every backup serves, not only the first.
    allbackups: bool,
    tls: Option<toml::Value>,
    headers: Headers,
    /// A `listen` section: its header rules are its frontend side's.
    is_listen: bool,
}

struct Server {
    line: usize,
    entry: Vec<(&'static str, toml::Value)>,
    check: bool,
    inter: Option<String>,
    rise: Option<u32>,
    fall: Option<u32>,
    port: Option<u16>,
    cookie: Option<String>,
}

struct Tr<'a> {
    file: PathBuf,
    sections: &'a [Section],
    out: Imported,
    handled: HashSet<usize>,
    global: Global,
    backs: BTreeMap<String, Back>,
    fronts: Vec<Front>,
    /// The status page: (admin listen address, the line it came from).
    admin: At<String>,
}

/// The directive's name as a report names it: `option httplog`, `timeout client`.
fn directive(l: &Line) -> String {
    match l.word(0) {
        "option"
        | "no"
        | "timeout"
        | "http-request"
        | "http-response"
        | "stats"
        | "http-check"
        | "tcp-request"
        | "tcp-response"
        | "http-after-response" => {
            format!("{} {}", l.word(0), l.word(1))
        }
        w => w.to_owned(),
    }
}

/// An HAProxy time (`5s`, `500`, `1m`, `100ms`; a bare number is milliseconds)
/// as a Switchyard duration, in the largest unit that keeps it exact.
fn duration(v: &str) -> Option<String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "" | "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        "us" => n.div_ceil(1000),
        _ => return None,
    };
    Some(if ms == 0 {
        "0s".to_owned()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

/// `[::]:80`, `*:80`, `:80`, `10.0.0.1:80`, `ipv4@:80` as (address, port).
fn bind_addr(v: &str) -> Option<(String, u16)> {
    let v = v
        .strip_prefix("ipv4@")
        .or_else(|| v.strip_prefix("ipv6@"))
        .unwrap_or(v);
    let (host, port) = v.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host {
        "" | "*" | "0.0.0.0" => "0.0.0.0".to_owned(),
        "::" | "[::]" | ":" => "[::]".to_owned(),
        h if h.starts_with('[') => h.to_owned(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_owned(),
    };
    Some((host, port))
}

/// A server address as `host:port`; `None` without a port (HAProxy then uses
/// the port the client connected to, which Switchyard cannot).
fn server_addr(v: &str) -> Option<String> {
    let v = v
        .strip_prefix("ipv4@")
        .or_else(|| v.strip_prefix("ipv6@"))
        .unwrap_or(v);
    let (host, port) = v.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// A string for a Switchyard template: `$` written `$$`.
fn literal(v: &str) -> String {
    v.replace('$', "$$")
}

fn lines_of(lines: &[usize]) -> String {
    let mut v: Vec<usize> = lines.to_vec();
    v.sort_unstable();
    v.dedup();
    v.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl<'a> Tr<'a> {
    fn origin(&self, line: usize) -> Origin {
        Origin {
            file: self.file.clone(),
            line,
        }
    }

    fn note(&mut self, l: &Line, carried: Carried, message: impl Into<String>) {
        self.note_at(l.line, directive(l), carried, message);
    }

    fn note_at(
        &mut self,
        line: usize,
        dir: impl Into<String>,
        carried: Carried,
        message: impl Into<String>,
    ) {
        let at = self.origin(line);
        self.handled.insert(line);
        self.out.note(&at, dir, carried, message);
    }

    fn done(&mut self, l: &Line) {
        self.handled.insert(l.line);
    }

    fn file_name(&self) -> String {
        self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    fn run(&mut self) -> Result<(), ImportError> {
        let sections = self.sections;
        for s in sections {
            // An unknown, unindented word is a misspelt section keyword.
            for l in &s.lines {
                if !l.indented && !known(l.word(0)) {
                    return Err(ImportError::Syntax {
                        at: self.origin(l.line),
                        message: format!(
                            "unknown keyword '{}' in '{}' section (a misspelt section keyword?)",
                            l.word(0),
                            s.kind.keyword()
                        ),
                    });
                }
            }
        }
        for s in sections {
            match &s.kind {
                Kind::Global => self.global(s),
                Kind::Defaults => {}
                Kind::Frontend | Kind::Backend | Kind::Listen => self.proxy(s)?,
                Kind::Other(k) => {
                    let msg = match k.as_str() {
                        "resolvers" => "not translated: Switchyard resolves server names with the system's resolver, or a [resolver] table for `resolve = true` servers",
                        "userlist" => "not translated: Switchyard has no HTTP basic authentication",
                        "peers" => "not translated: Switchyard has no stick tables to share",
                        "http-errors" => "not translated: Switchyard's error pages are fixed",
                        "cache" => "not translated: Switchyard does not cache responses",
                        _ => "not translated: Switchyard has no equivalent",
                    };
                    let at = self.origin(s.line);
                    self.out.note(
                        &at,
                        k.clone(),
                        Carried::Dropped,
                        format!(
                            "section `{k} {}`: {msg}",
                            s.name.clone().unwrap_or_default()
                        ),
                    );
                    self.handled.insert(s.line);
                    for l in &s.lines {
                        self.handled.insert(l.line);
                    }
                }
            }
        }
        // Every use_backend/default_backend must name a backend, as haproxy -c says.
        for f in &self.fronts {
            let named = f
                .use_rules
                .iter()
                .filter_map(|r| match &r.target {
                    Target::Backend(b) => Some((r.line, b.clone())),
                    _ => None,
                })
                .chain(f.default_backend.iter().map(|(b, l)| (*l, b.clone())));
            for (line, b) in named {
                if !self.backs.contains_key(&b) {
                    return Err(ImportError::Syntax {
                        at: self.origin(line),
                        message: format!(
                            "proxy '{}': unable to find required backend '{b}'",
                            f.name
                        ),
                    });
                }
            }
        }
        self.emit();
        Ok(())
    }

    fn finish(mut self) -> Imported {
        // The sweep: every line something looked at, or a note saying nothing did.
        let sections = self.sections;
        for s in sections {
            for l in &s.lines {
                if self.handled.contains(&l.line) {
                    continue;
                }
                let used = self.sections.iter().any(|p| {
                    p.defaults
                        .is_some_and(|d| std::ptr::eq(&self.sections[d], s))
                });
                if s.kind == Kind::Defaults && !used {
                    self.note(
                        l,
                        Carried::Dropped,
                        "not translated: no proxy section follows these defaults",
                    );
                } else {
                    self.unsupported(l, &s.kind);
                }
            }
        }
        let mut seen = HashSet::new();
        self.out
            .notes
            .retain(|n| seen.insert((n.at.line, n.directive.clone(), n.message.clone())));
        self.out
    }

    fn global(&mut self, s: &Section) {
        for l in &s.lines {
            let w1 = l.word(1).to_owned();
            match l.word(0) {
                "maxconn" => match w1.parse() {
                    Ok(n) => {
                        self.global.maxconn = Some((n, l.line));
                        self.done(l);
                    }
                    Err(_) => self.note(l, Carried::Dropped, "not a number: not translated"),
                },
                "daemon" | "master-worker" => self.note(l, Carried::Info, "Switchyard runs in the foreground: run it under systemd (deploy/switchyard.service) or a container"),
                "user" | "group" | "uid" | "gid" => self.note(l, Carried::Info, "run the binary as that account (the systemd unit's User=/Group=); Switchyard never changes its user"),
                "chroot" => self.note(l, Carried::Dropped, "no chroot: confine the process with the systemd unit's sandboxing (deploy/switchyard.service)"),
                "pidfile" => self.note(l, Carried::Dropped, "no pid file: systemd or the container runtime tracks the process"),
                "nbthread" | "nbproc" | "cpu-map" | "thread-groups" => self.note(l, Carried::Dropped, "worker threads are set with `switchyard run --workers N` (default: one per CPU)"),
                "log" | "log-send-hostname" | "log-tag" => self.note(l, Carried::Dropped, "no syslog: requests go to [access_log] (a file or stdout), the proxy's own events to stderr"),
                "stats" => self.note(l, Carried::Dropped, "no runtime API socket: the admin API ([admin]: GET /upstreams, drain, weight, reload) does that work over HTTP"),
                "crt-base" => {
                    self.global.crt_base = Some((w1, l.line));
                    self.done(l);
                }
                "ca-base" => self.done(l),
                "spread-checks" => match w1.parse::<u32>() {
                    Ok(n) if n <= 50 => {
                        self.global.spread_checks = Some((n, l.line));
                        self.done(l);
                    }
                    _ => self.note(l, Carried::Dropped, "expected 0 to 50: not translated"),
                },
                "ssl-default-bind-options" => {
                    let mut i = 1;
                    while i < l.words.len() {
                        match l.word(i) {
                            "ssl-min-ver" => {
                                self.global.min_version = Some((l.word(i + 1).to_owned(), l.line));
                                i += 1;
                            }
                            "no-tls-tickets" => self.global.no_tickets = Some(l.line),
                            "no-sslv3" | "no-tlsv10" | "no-tlsv11" => {}
                            other => {
                                let m = format!("option `{other}` not translated (rustls: TLS 1.2 and 1.3, its own cipher suites)");
                                self.note(l, Carried::Dropped, m);
                            }
                        }
                        i += 1;
                    }
                    self.global.ssl_options.push(l.line);
                    self.done(l);
                }
                "ssl-default-bind-ciphers" | "ssl-default-bind-ciphersuites" | "ssl-default-bind-curves" | "ssl-default-server-ciphers" | "ssl-default-server-ciphersuites" | "ssl-default-server-options" => self.note(l, Carried::Dropped, "not translated: rustls offers its own fixed set of modern cipher suites and curves (TLS 1.2 and 1.3 only)"),
                "tune.ssl.default-dh-param" | "ssl-dh-param-file" => self.note(l, Carried::Info, "not needed: rustls has no finite-field Diffie-Hellman"),
                "hard-stop-after" | "grace" => self.note(l, Carried::Dropped, "how long requests may finish at shutdown is `switchyard run --drain-timeout` (default 30s)"),
                "lua-load" | "lua-load-per-thread" | "lua-prepend-path" => self.note(l, Carried::Dropped, "no Lua: Switchyard has no scripting"),
                _ => self.note(l, Carried::Dropped, "not translated: Switchyard has no equivalent"),
            }
        }
    }

    /// A `frontend`, `backend` or `listen` section, with its defaults.
    fn proxy(&mut self, s: &Section) -> Result<(), ImportError> {
        let name = s.name.clone().unwrap_or_default();
        let defaults = s.defaults.map(|i| &self.sections[i]);
        let mut lines: Vec<(&Line, bool)> = defaults
            .map(|d| d.lines.iter().map(|l| (l, true)).collect())
            .unwrap_or_default();
        lines.extend(s.lines.iter().map(|l| (l, false)));
        // HAProxy's default mode is tcp.
        let mode = lines
            .iter()
            .rev()
            .find(|(l, _)| l.word(0) == "mode")
            .map(|(l, _)| (l.word(1).to_owned(), l.line));
        match &mode {
            Some((m, line)) if m == "http" => {
                self.handled.insert(*line);
            }
            _ => {
                let what = match &mode {
                    Some((m, line)) => format!("mode {m} (line {line})"),
                    None => "no `mode http` (HAProxy's default mode is tcp)".to_owned(),
                };
                self.note_at(
                    s.line,
                    format!("{} {name}", s.kind.keyword()),
                    Carried::Dropped,
                    format!("{what}: Switchyard proxies HTTP only; the section is not translated"),
                );
                self.handled.insert(s.line);
                for l in &s.lines {
                    self.handled.insert(l.line);
                }
                return Ok(());
            }
        }
        let mut front = s.kind.is_front().then(|| Front {
            name: name.clone(),
            line: s.line,
            is_listen: s.kind == Kind::Listen,
            mode_line: s.lines.iter().find(|l| l.word(0) == "mode").map(|l| l.line),
            ..Front::default()
        });
        let mut back = s.kind.is_back().then(|| Back {
            name: name.clone(),
            line: s.line,
            end: s.end,
            defaults: defaults
                .filter(|d| !d.lines.is_empty())
                .map(|d| (d.line, d.end)),
            is_listen: s.kind == Kind::Listen,
            ..Back::default()
        });
        for (l, from_defaults) in lines {
            if l.word(0) == "mode" {
                continue;
            }
            let mut took = false;
            if let Some(f) = front.as_mut() {
                took |= self.front_line(f, l, from_defaults)?;
            }
            if let Some(b) = back.as_mut() {
                took |= self.back_line(b, l, from_defaults);
            }
            if !took && !from_defaults {
                self.unsupported(l, &s.kind);
            }
        }
        if let Some(b) = back {
            self.backs.insert(name.clone(), b);
        }
        if let Some(mut f) = front {
            if f.is_listen && f.default_backend.is_none() {
                // A listen section's own servers are its default backend.
                f.default_backend = Some((name, s.line));
            }
            self.fronts.push(f);
        }
        Ok(())
    }

    /// Directives with no translation, each with what to do.
    fn unsupported(&mut self, l: &Line, kind: &Kind) {
        let (carried, msg): (Carried, String) = match (l.word(0), l.word(1)) {
            ("option", "httplog" | "tcplog" | "dontlognull" | "log-separate-errors" | "dontlog-normal" | "log-health-checks") | ("log" | "log-format" | "capture" | "log-tag", _) => {
                (Carried::Dropped, "not translated: Switchyard's access log is [access_log] (path, format = \"json\" or \"combined\"), for every listener".into())
            }
            ("option", "http-keep-alive") => (Carried::Info, "Switchyard keeps client and server connections alive (listener keepalive_timeout, upstream keepalive)".into()),
            ("option", "http-server-close" | "httpclose" | "forceclose") => (Carried::Approximate, "Switchyard keeps server connections alive and reuses them (upstream keepalive, default 32 per server and worker)".into()),
            ("option", "abortonclose") => (Carried::Dropped, "not translated: a queued request whose HTTP/1.1 client left keeps its place (README, Server limits and the queue)".into()),
            ("option", "allbackups") => (Carried::Info, "Switchyard balances over every backup server while no primary is eligible, as with allbackups".into()),
            ("http-request", _) if l.word(2).eq_ignore_ascii_case("x-forwarded-for") => (Carried::Dropped, "not translated: the proxy appends the peer's address to the X-Forwarded-For it received; `trusted_proxies` decides whose entries name the client".into()),
            ("http-request" | "http-response" | "http-after-response", _) => (Carried::Dropped, "not translated: Switchyard has no rule engine; headers: route set_headers and response_headers; access rules: allow/deny; limits: rate_limit and limit_conn".into()),
            ("tcp-request" | "tcp-response", _) => (Carried::Dropped, "not translated: Switchyard has no TCP rules; per-client limits are rate_limit and limit_conn, addresses allow/deny".into()),
            ("stick-table" | "stick" | "track-sc0" | "track-sc1" | "track-sc2", _) => (Carried::Dropped, "not translated: no stick tables; for request rates see rate_limit, for persistence sticky or balance = \"hash\"".into()),
            ("errorfile" | "errorloc" | "errorloc302" | "errorloc303" | "errorfiles" | "http-error", _) => (Carried::Dropped, "not translated: Switchyard's error responses are fixed short bodies".into()),
            ("compression", _) => (Carried::Dropped, "not translated: Switchyard does not compress responses".into()),
            ("http-reuse", _) => (Carried::Info, "Switchyard reuses idle server connections (upstream keepalive)".into()),
            ("server-template", _) => (Carried::Dropped, "not translated: write the servers, or one entry with resolve = true to follow a DNS name's addresses".into()),
            ("description" | "id", _) => (Carried::Dropped, "not translated: informational only".into()),
            (w, _) if !known(w) => (Carried::Dropped, format!("unknown keyword in a {} section: not translated", kind.keyword())),
            _ => (Carried::Dropped, format!("not translated: Switchyard has no equivalent (in a {} section)", kind.keyword())),
        };
        self.note(l, carried, msg);
    }

    /// A `timeout KIND TIME` line's time into `slot`, with the line it came from.
    fn time_into(&mut self, l: &Line, slot: &mut Option<(String, usize)>) {
        if let Some(d) = self.time(l, 2) {
            *slot = Some((d, l.line));
        }
    }

    fn time(&mut self, l: &Line, word: usize) -> Option<String> {
        let d = duration(l.word(word));
        if d.is_some() {
            self.done(l);
        } else {
            self.note(
                l,
                Carried::Dropped,
                format!("`{}` is not an HAProxy time: not translated", l.word(word)),
            );
        }
        d
    }

    /// A line of a frontend or listen section; `true` when it is the traffic
    /// side's.
    fn front_line(
        &mut self,
        f: &mut Front,
        l: &Line,
        from_defaults: bool,
    ) -> Result<bool, ImportError> {
        match (l.word(0), l.word(1)) {
            ("bind", _) => self.bind(f, l),
            ("maxconn", n) => match n.parse() {
                Ok(n) => {
                    f.maxconn = Some((n, l.line));
                    self.done(l);
                }
                Err(_) => self.note(l, Carried::Dropped, "not a number: not translated"),
            },
            ("timeout", "client") => {
                self.time_into(l, &mut f.timeout_client);
            }
            ("timeout", "http-request") => {
                self.time_into(l, &mut f.timeout_http_request);
            }
            ("timeout", "http-keep-alive") => {
                self.time_into(l, &mut f.timeout_keep_alive);
            }
            ("timeout", "client-fin") => self.note(l, Carried::Dropped, "not translated: Switchyard closes a half-closed client connection when its answer is written"),
            ("timeout", "tarpit") => self.note(l, Carried::Dropped, "not translated: no tarpit"),
            ("option", "forwardfor") => {
                if l.words.len() > 2 {
                    self.note(l, Carried::Approximate, "the proxy appends the client's address to X-Forwarded-For for every client, in that header (the `except`/`header`/`if-none` arguments are not translated)");
                } else {
                    self.note(l, Carried::Info, FORWARDFOR);
                }
            }
            ("acl", _) if !from_defaults => self.acl(f, l),
            ("use_backend", _) if !from_defaults => {
                let (target, rest) = (l.word(1).to_owned(), &l.words[2.min(l.words.len())..]);
                if target.contains("%[") {
                    self.note(l, Carried::Dropped, "a backend name computed per request cannot be translated: write one route per backend");
                } else {
                    self.done(l);
                    f.use_rules.push(FrontRule {
                        line: l.line,
                        target: Target::Backend(target),
                        cond: rest.to_vec(),
                    });
                }
            }
            ("default_backend", b) => {
                f.default_backend = Some((b.to_owned(), l.line));
                self.done(l);
            }
            ("redirect", _) => self.redirect(f, l, 1, false),
            ("http-request", "redirect") if !from_defaults => self.redirect(f, l, 2, true),
            ("stats", _) => {
                f.stats.push(l.line);
                self.done(l);
            }
            ("http-request", "deny") if !from_defaults && l.words.len() > 3 => {
                self.done(l);
                f.deny_rules.push((l.line, l.words[2..].to_vec()));
            }
            ("monitor-uri", uri) => {
                self.done(l);
                f.monitor = vec![FrontRule {
                    line: l.line,
                    target: Target::Monitor,
                    cond: ["if", "{", "path", uri, "}"].map(str::to_owned).to_vec(),
                }];
            }
            ("http-request" | "http-response", _) if !from_defaults => {
                match header_rule(l, &mut f.headers) {
                    Some(note) => match note {
                        Some((c, m)) => self.note(l, c, m),
                        None => self.done(l),
                    },
                    None => return Ok(false),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn bind(&mut self, f: &mut Front, l: &Line) {
        let mut tls: Option<Tls> = None;
        let mut accept_proxy = false;
        let mut maxconn = None;
        let mut extra_lines = Vec::new();
        let mut i = 2;
        while i < l.words.len() {
            let arg = l.word(i + 1).to_owned();
            match l.word(i) {
                "ssl" => {
                    tls.get_or_insert(Tls {
                        certs: Vec::new(),
                        min_version: None,
                    });
                }
                "crt" => {
                    let path = match (&self.global.crt_base, arg.starts_with('/')) {
                        (Some((base, line)), false) => {
                            extra_lines.push(*line);
                            format!("{}/{arg}", base.trim_end_matches('/'))
                        }
                        _ => arg,
                    };
                    tls.get_or_insert(Tls {
                        certs: Vec::new(),
                        min_version: None,
                    })
                    .certs
                    .push(path);
                    i += 1;
                }
                "ssl-min-ver" => {
                    tls.get_or_insert(Tls {
                        certs: Vec::new(),
                        min_version: None,
                    })
                    .min_version = Some(arg);
                    i += 1;
                }
                "alpn" => {
                    if !arg.split(',').all(|p| p == "h2" || p == "http/1.1") {
                        self.note(
                            l,
                            Carried::Approximate,
                            format!("alpn {arg}: Switchyard offers h2 and http/1.1"),
                        );
                    }
                    i += 1;
                }
                "accept-proxy" => accept_proxy = true,
                "maxconn" => {
                    maxconn = arg.parse().ok();
                    i += 1;
                }
                "no-sslv3" | "no-tlsv10" | "no-tlsv11" | "v4v6" | "v6only" => {}
                "name" | "process" | "thread" | "id" | "nice" | "backlog" | "mss" | "ciphers"
                | "ciphersuites" | "curves" | "ecdhe" | "ca-file" | "verify" | "crt-list"
                | "interface" | "mode" | "user" | "group" | "npn" | "tcp-ut" => {
                    self.note(
                        l,
                        Carried::Dropped,
                        format!("bind option `{} {arg}` not translated", l.word(i)),
                    );
                    i += 1;
                }
                other => {
                    self.note(
                        l,
                        Carried::Dropped,
                        format!("bind option `{other}` not translated"),
                    );
                }
            }
            i += 1;
        }
        if tls.as_ref().is_some_and(|t| t.certs.is_empty()) {
            // Serving plain HTTP where clients expect TLS would be no translation.
            self.note(l, Carried::Dropped, "ssl without crt (crt-list?): the bind is not translated; write a listener with [listener.tls] cert and key");
            return;
        }
        let mut any = false;
        for a in l.word(1).split(',') {
            match bind_addr(a) {
                Some((addr, port)) => {
                    any = true;
                    f.binds.push(Bind {
                        line: l.line,
                        addr,
                        port,
                        tls: tls.as_ref().map(|t| Tls { certs: t.certs.clone(), min_version: t.min_version.clone() }),
                        accept_proxy,
                        maxconn,
                        extra_lines: extra_lines.clone(),
                    });
                }
                None => self.note(l, Carried::Dropped, format!("address `{a}` not translated (port ranges, unix sockets and named interfaces have no listener equivalent)")),
            }
        }
        if any {
            self.done(l);
        }
    }

    fn acl(&mut self, f: &mut Front, l: &Line) {
        let name = l.word(1).to_owned();
        let alt = criterion(&l.words[2..]).map(|(alt, notes)| {
            for (c, m) in notes {
                self.note(l, c, format!("acl {name}: {m}"));
            }
            alt
        });
        if let Err(why) = &alt {
            self.note(
                l,
                Carried::Dropped,
                format!("acl {name}: {why}; rules using it are not translated"),
            );
        } else {
            self.done(l);
        }
        f.acls
            .entry(name)
            .or_default()
            .push((l.line, alt.map(|a| vec![a])));
    }

    fn redirect(&mut self, f: &mut Front, l: &Line, at: usize, http_request: bool) {
        let how = l.word(at).to_owned();
        let value = l.word(at + 1).to_owned();
        let mut status = DEFAULT_REDIRECT_CODE;
        let mut drop_query = false;
        let mut i = at + 2;
        let mut cond = Vec::new();
        while i < l.words.len() {
            match l.word(i) {
                "code" => {
                    status = l.word(i + 1).parse().unwrap_or(0);
                    i += 1;
                }
                "drop-query" => drop_query = true,
                "if" | "unless" => {
                    cond = l.words[i..].to_vec();
                    break;
                }
                other => {
                    self.note(l, Carried::Dropped, format!("redirect option `{other}` has no equivalent: the redirect is not translated"));
                    return;
                }
            }
            i += 1;
        }
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            self.note(
                l,
                Carried::Dropped,
                "redirect code must be 301, 302, 303, 307 or 308: not translated",
            );
            return;
        }
        let query = if drop_query { "$uri" } else { "$request_uri" };
        let location = match how.as_str() {
            "scheme" => format!("{}://$host{query}", literal(&value)),
            "prefix" if value != "/" => format!("{}{query}", literal(value.trim_end_matches('/'))),
            "location" if !drop_query => literal(&value),
            _ => {
                self.note(
                    l,
                    Carried::Dropped,
                    format!("redirect {how} {value}: not translated"),
                );
                return;
            }
        };
        if how == "scheme" {
            self.note(
                l,
                Carried::Info,
                "the location names the host without the port the client sent (Switchyard's $host)",
            );
        }
        self.done(l);
        let rule = FrontRule {
            line: l.line,
            target: Target::Redirect { status, location },
            cond,
        };
        if http_request {
            f.hr_redirects.push(rule);
        } else {
            f.redirects.push(rule);
        }
    }

    /// A line of a backend or listen section; `true` when it is the server side's.
    fn back_line(&mut self, b: &mut Back, l: &Line, from_defaults: bool) -> bool {
        match (l.word(0), l.word(1)) {
            ("balance", algo) => {
                let (balance, key, note): (&str, Option<String>, Option<(Carried, String)>) = match algo {
                    "roundrobin" => ("round_robin", None, None),
                    "static-rr" => ("round_robin", None, Some((Carried::Info, "as round_robin, whose weights the admin API can change".into()))),
                    "leastconn" => ("least_conn", None, None),
                    "source" => ("hash", Some("client_ip".into()), Some((Carried::Info, "consistent hashing of the client address: each client stays on one server, though not the one HAProxy picked".into()))),
                    "uri" => {
                        let whole = l.words[2..].iter().any(|w| w == "whole");
                        let other = l.words[2..].iter().any(|w| w != "whole");
                        let n = if other { Some((Carried::Approximate, "the len/depth/path-only arguments are not translated: the whole path is hashed".into())) } else { None };
                        ("hash", Some(if whole { "uri".into() } else { "path".into() }), n)
                    }
                    "random" if l.words.len() == 2 || l.word(2) == "2" || l.word(2) == "(2)" => ("random", None, None),
                    a if a.starts_with("random(") && a == "random(2)" => ("random", None, None),
                    a if a.starts_with("hdr(") && a.ends_with(')') => {
                        let h = &a[4..a.len() - 1];
                        let n = if l.words.len() > 2 { Some((Carried::Approximate, "use_domain_only is not translated: the whole header is hashed".into())) } else { None };
                        ("hash", Some(format!("header:{h}")), n)
                    }
                    "url_param" => ("hash", Some(format!("query:{}", l.word(2))), None),
                    _ => {
                        self.note(l, Carried::Dropped, format!("balance {algo} has no equivalent: round_robin is used"));
                        return true;
                    }
                };
                b.balance = Some(((balance.to_owned(), key), l.line));
                match note {
                    Some((c, m)) => self.note(l, c, m),
                    None => self.done(l),
                }
            }
            ("hash-type", kind) => {
                if kind == "consistent" {
                    self.done(l);
                } else {
                    self.note(l, Carried::Info, format!("hash-type {kind}: Switchyard's hash is always consistent (a ketama ring); clients map to other servers than HAProxy's"));
                }
            }
            ("hash-balance-factor", n) => match n.parse::<f64>() {
                Ok(0.0) => self.done(l),
                Ok(v) if v >= 100.0 => {
                    b.hash_balance_factor = Some((v / 100.0, l.line));
                    self.done(l);
                }
                _ => self.note(
                    l,
                    Carried::Dropped,
                    "expected 0 or a percentage of at least 100: not translated",
                ),
            },
            ("cookie", name) => {
                let rest: Vec<&str> = l.words[2..].iter().map(String::as_str).collect();
                if !rest.contains(&"insert") {
                    self.note(l, Carried::Dropped, "only `cookie NAME insert` (the proxy sets the cookie) translates, to sticky; rewrite/prefix modes have no equivalent");
                    return true;
                }
                b.sticky = Some((name.to_owned(), l.line));
                let extra: Vec<&str> = rest
                    .iter()
                    .copied()
                    .filter(|w| !matches!(*w, "insert" | "indirect" | "nocache"))
                    .collect();
                let mut msg = "sticky: the cookie's value is an opaque server id (clients' existing HAProxy cookies are ignored once) and it lives 1h (sticky.ttl), where HAProxy's lasted the browser session".to_owned();
                if !extra.is_empty() {
                    msg.push_str(&format!("; `{}` not translated", extra.join(" ")));
                }
                self.note(l, Carried::Approximate, msg);
            }
            ("server", _) if !from_defaults => self.server(b, l),
            ("default-server", _) => {
                b.default_server = l.words[1..].to_vec();
                self.done(l);
            }
            ("option", "httpchk") => {
                let w = &l.words[2..];
                let (method, path, version) = match w.len() {
                    0 => ("OPTIONS", "/", None),
                    1 => ("OPTIONS", w[0].as_str(), None),
                    2 => (w[0].as_str(), w[1].as_str(), None),
                    _ => (w[0].as_str(), w[1].as_str(), Some(w[2].as_str())),
                };
                let host = version.and_then(|v| {
                    v.split("\r\n")
                        .find_map(|h| h.strip_prefix("Host:").or_else(|| h.strip_prefix("host:")))
                        .map(|h| h.trim().to_owned())
                });
                b.httpchk = Some(((method.to_owned(), path.to_owned(), host), l.line));
                self.done(l);
            }
            ("http-check", "expect") => {
                let w: Vec<&str> = l.words[2..].iter().map(String::as_str).collect();
                match w.as_slice() {
                    ["status", codes] if codes.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '-') => {
                        b.expect = Some((("expect_status", (*codes).to_owned()), l.line));
                        self.done(l);
                    }
                    ["string", s] => {
                        b.expect = Some((("expect_body", (*s).to_owned()), l.line));
                        self.done(l);
                    }
                    _ => self.note(l, Carried::Dropped, "only `expect status CODES` and `expect string TEXT` translate (expect_status, expect_body)"),
                }
            }
            ("http-check", "send") => {
                let mut i = 2;
                let mut chk = b.httpchk.clone().map(|(c, _)| c).unwrap_or((
                    "OPTIONS".into(),
                    "/".into(),
                    None,
                ));
                let mut ok = true;
                while i < l.words.len() {
                    match (l.word(i), l.word(i + 1)) {
                        ("meth", m) => chk.0 = m.to_owned(),
                        ("uri", u) => chk.1 = u.to_owned(),
                        ("ver", _) => {}
                        ("hdr", h) if h.eq_ignore_ascii_case("host") => {
                            chk.2 = Some(l.word(i + 2).to_owned());
                            i += 1;
                        }
                        _ => ok = false,
                    }
                    i += 2;
                }
                if ok {
                    b.httpchk = Some((chk, l.line));
                    self.done(l);
                } else {
                    self.note(l, Carried::Dropped, "only meth, uri, ver and hdr Host translate (health_check method, path, host)");
                }
            }
            ("timeout", "connect") => {
                self.time_into(l, &mut b.timeout_connect);
            }
            ("timeout", "server") => {
                self.time_into(l, &mut b.timeout_server);
            }
            ("timeout", "queue") => {
                self.time_into(l, &mut b.timeout_queue);
            }
            ("timeout", "tunnel") => {
                self.time_into(l, &mut b.timeout_tunnel);
            }
            ("timeout", "check") => {
                self.time_into(l, &mut b.timeout_check);
            }
            ("timeout", "server-fin") => self.note(l, Carried::Dropped, "not translated"),
            ("retries", n) => match n.parse() {
                Ok(n) => b.retries = Some((n, l.line)),
                Err(_) => self.note(l, Carried::Dropped, "not a number: not translated"),
            },
            ("option", "redispatch") => b.redispatch = Some(l.line),
            ("option", "allbackups") => {
                b.allbackups = true;
                self.note(l, Carried::Info, "Switchyard balances over every backup server while no primary is eligible, as with allbackups");
            }
            ("option", "forwardfor") => self.note(l, Carried::Info, FORWARDFOR),
            ("no", "option") if l.word(2) == "redispatch" => self.done(l),
            ("fullconn" | "minconn", _) => self.note(
                l,
                Carried::Dropped,
                "not translated: server limits are fixed (max_conns), not dynamic",
            ),
            ("stats", _) => {}
            ("http-request" | "http-response", _) if !from_defaults && !b.is_listen => {
                match header_rule(l, &mut b.headers) {
                    Some(note) => match note {
                        Some((c, m)) => self.note(l, c, m),
                        None => self.done(l),
                    },
                    None => return false,
                }
            }
            _ => return false,
        }
        true
    }

    fn server(&mut self, b: &mut Back, l: &Line) {
        let Some(addr) = server_addr(l.word(2)) else {
            self.note(l, Carried::Dropped, format!("server {}: address `{}` has no port (or is a socket): not translated, write the server's port", l.word(1), l.word(2)));
            return;
        };
        let mut s = Server {
            line: l.line,
            entry: vec![("addr", addr.into())],
            check: false,
            inter: None,
            rise: None,
            fall: None,
            port: None,
            cookie: None,
        };
        let mut params: Vec<String> = b.default_server.clone();
        params.extend(l.words[3..].iter().cloned());
        let set = |s: &mut Server, k: &'static str, v: toml::Value| {
            s.entry.retain(|(x, _)| *x != k);
            s.entry.push((k, v));
        };
        let mut i = 0;
        let mut dropped = Vec::new();
        let mut approx = Vec::new();
        let mut info: Vec<String> = Vec::new();
        let mut tls: Option<toml::Table> = None;
        while i < params.len() {
            let arg = params.get(i + 1).cloned().unwrap_or_default();
            let mut takes = true;
            match params[i].as_str() {
                "check" => {
                    s.check = true;
                    takes = false;
                }
                "no-check" => {
                    s.check = false;
                    takes = false;
                }
                "backup" => {
                    set(&mut s, "backup", true.into());
                    takes = false;
                }
                "disabled" => {
                    set(&mut s, "down", true.into());
                    takes = false;
                }
                "enabled" => takes = false,
                "weight" => match arg.parse::<u32>() {
                    Ok(0) => {
                        set(&mut s, "down", true.into());
                        approx.push(
                            "weight 0 → down = true (HAProxy still sent it persistent clients)"
                                .to_owned(),
                        );
                    }
                    Ok(w) => set(&mut s, "weight", i64::from(w).into()),
                    Err(_) => dropped.push(format!("weight {arg}")),
                },
                "maxconn" => match arg.parse::<u32>() {
                    Ok(n) => set(&mut s, "max_conns", i64::from(n).into()),
                    Err(_) => dropped.push(format!("maxconn {arg}")),
                },
                "slowstart" => match duration(&arg) {
                    Some(d) => {
                        set(&mut s, "slow_start", d.into());
                        info.push("slow_start ramps from 10 % of the weight (HAProxy's slowstart from nearly none)".to_owned());
                    }
                    None => dropped.push(format!("slowstart {arg}")),
                },
                "inter" => s.inter = duration(&arg),
                "rise" => s.rise = arg.parse().ok(),
                "fall" => s.fall = arg.parse().ok(),
                "port" => s.port = arg.parse().ok(),
                "cookie" => s.cookie = Some(arg),
                "ssl" => {
                    tls.get_or_insert_default();
                    takes = false;
                }
                "verify" => {
                    if arg == "none" {
                        tls.get_or_insert_default()
                            .insert("verify".into(), false.into());
                    }
                }
                "ca-file" => {
                    tls.get_or_insert_default()
                        .insert("ca_file".into(), arg.into());
                }
                "sni" => match arg.strip_prefix("str(").and_then(|a| a.strip_suffix(')')) {
                    Some(name) => {
                        tls.get_or_insert_default()
                            .insert("sni".into(), name.into());
                    }
                    None => dropped.push(format!("sni {arg}")),
                },
                "id" => {}
                "check-ssl" | "send-proxy" | "send-proxy-v2" | "agent-check" | "no-ssl"
                | "no-backup" | "non-stick" | "tfo" | "force-sslv3" | "no-tlsv10" | "no-tlsv11"
                | "check-send-proxy" => {
                    if !matches!(params[i].as_str(), "no-tlsv10" | "no-tlsv11") {
                        dropped.push(params[i].clone());
                    }
                    takes = false;
                }
                other => dropped.push(format!("{other} {arg}")),
            }
            i += if takes { 2 } else { 1 };
        }
        if let Some(t) = tls {
            let v: toml::Value = if t.is_empty() {
                true.into()
            } else {
                toml::Value::Table(t)
            };
            if b.tls.as_ref().is_some_and(|x| *x != v) {
                approx.push(
                    "TLS settings differ between servers: the upstream takes the first server's"
                        .into(),
                );
            } else {
                b.tls = Some(v);
            }
        }
        // HAProxy has no passive ejection unless told (`observe`).
        set(&mut s, "max_fails", 0.into());
        if !dropped.is_empty() {
            self.note(
                l,
                Carried::Dropped,
                format!(
                    "server {}: not translated: {}",
                    l.word(1),
                    dropped.join(", ")
                ),
            );
        }
        if !info.is_empty() {
            self.note(
                l,
                Carried::Info,
                format!("server {}: {}", l.word(1), info.join("; ")),
            );
        }
        if !approx.is_empty() {
            self.note(
                l,
                Carried::Approximate,
                format!("server {}: {}", l.word(1), approx.join("; ")),
            );
        }
        self.done(l);
        b.servers.push(s);
    }
}

/// Keywords HAProxy sections take, for telling a directive this import does
/// not translate from a misspelt section keyword.
fn known(w: &str) -> bool {
    const KNOWN: &[&str] = &[
        "acl",
        "backlog",
        "balance",
        "bind",
        "capture",
        "ca-base",
        "chroot",
        "compression",
        "cookie",
        "cpu-map",
        "crt-base",
        "daemon",
        "declare",
        "default-server",
        "default_backend",
        "description",
        "disabled",
        "dispatch",
        "email-alert",
        "enabled",
        "errorfile",
        "errorfiles",
        "errorloc",
        "errorloc302",
        "errorloc303",
        "external-check",
        "filter",
        "force-persist",
        "fullconn",
        "gid",
        "grace",
        "group",
        "hash-balance-factor",
        "hash-type",
        "hard-stop-after",
        "http-after-response",
        "http-check",
        "http-error",
        "http-request",
        "http-response",
        "http-reuse",
        "http-send-name-header",
        "id",
        "ignore-persist",
        "load-server-state-from-file",
        "log",
        "log-format",
        "log-format-sd",
        "log-send-hostname",
        "log-tag",
        "lua-load",
        "master-worker",
        "max-keep-alive-queue",
        "max-session-srv-conns",
        "maxconn",
        "maxconnrate",
        "maxsessrate",
        "maxsslconn",
        "maxsslrate",
        "maxzlibmem",
        "minconn",
        "mode",
        "monitor",
        "monitor-uri",
        "nbproc",
        "nbthread",
        "no",
        "node",
        "option",
        "persist",
        "pidfile",
        "rate-limit",
        "redirect",
        "retries",
        "retry-on",
        "server",
        "server-state-file",
        "server-state-file-name",
        "server-template",
        "source",
        "spread-checks",
        "ssl-default-bind-ciphers",
        "ssl-default-bind-ciphersuites",
        "ssl-default-bind-options",
        "ssl-default-server-ciphers",
        "ssl-default-server-ciphersuites",
        "ssl-default-server-options",
        "ssl-dh-param-file",
        "ssl-server-verify",
        "stats",
        "stick",
        "stick-table",
        "tcp-check",
        "tcp-request",
        "tcp-response",
        "timeout",
        "uid",
        "ulimit-n",
        "unique-id-format",
        "unique-id-header",
        "use-server",
        "use_backend",
        "user",
        "nameserver",
        "peer",
        "table",
        "mailer",
        "resolve_retries",
        "hold",
        "accepted_payload_size",
        "resolution_pool_size",
        "parse-resolv-conf",
        "localpeer",
        "total-max-size",
        "max-object-size",
        "max-age",
        "process-vary",
        "max-secondary-entries",
        "users",
        "insecure-password",
        "password",
        "command",
        "format",
        "size",
        "ring",
        "thread-groups",
        "setenv",
        "presetenv",
        "resetenv",
        "unsetenv",
        "expose-experimental-directives",
        "quiet",
        "busy-polling",
        "numa-cpu-mapping",
        "insecure-fork-wanted",
        "set-dumpable",
        "strict-limits",
        "localpeer",
        "h1-case-adjust",
        "lua-prepend-path",
        "lua-load-per-thread",
        "tune.ssl.default-dh-param",
    ];
    KNOWN.contains(&w)
        || w.starts_with("tune.")
        || w.starts_with("ssl-")
        || w.starts_with("httpclient.")
}
