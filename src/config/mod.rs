//! Validated configuration. `Config::load` reads a TOML file, checks every key and
//! value, resolves server names, and returns either a `Config` whose fields are
//! typed (socket addresses, durations, header names) or a `ConfigError` listing
//! every problem as `FILE: key.path: what is wrong`.

mod access;
mod cert;
mod client_limits;
mod diff;
pub mod discovery;
mod health_check;
mod limits;
mod raw;
mod retry;
mod route;
mod ser;
mod template;
mod tls;
mod tree;
mod upstream_transport;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Serialize;

pub use access::{cidr_set, AccessRules, Cidr, ListenerClients, DEFAULT_PROXY_PROTOCOL};
pub use client_limits::{
    ListenerLimits, DEFAULT_KEEPALIVE_REQUESTS, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEADER_SIZE, MAX_MAX_HEADER_SIZE, MIN_MAX_HEADER_SIZE,
};
pub use diff::{diff, Action, Change};
pub use health_check::{
    HealthCheckConfig, StatusSet, DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_EJECTED_PERCENT,
    DEFAULT_MAX_FAILS,
};
pub use limits::{
    Delay, LimitConnConfig, LimitKey, LimitStore, Per, Rate, RateLimitConfig, RedisUrl,
    DEFAULT_LIMIT_KEY, DEFAULT_LIMIT_STATUS, DEFAULT_RATE_LIMIT_BURST, DEFAULT_RATE_LIMIT_DELAY,
    MAX_RATE, REDIS_STORE_AVAILABLE,
};
pub use retry::{NextUpstream, RetryPolicy};
pub use route::telegram;
pub use route::{
    DedupStore, ForwardSecret, HostPattern, PathMatch, ProxyConfig, RedirectConfig, RespondConfig,
    RouteAction, RouteConfig, TelegramConfig, DEFAULT_REDIRECT_STATUS,
    DEFAULT_RESPOND_CONTENT_TYPE, DEFAULT_RESPOND_STATUS,
};
pub use ser::{Secrets, REDACTED_TOKEN};
pub use template::{HeaderTemplate, Segment, Variable};
pub use upstream_transport::{UpstreamProtocol, UpstreamTls, DEFAULT_TLS_VERIFY};

pub use cert::{load as load_certificate, CertError, Certificate, Which};

/// nginx's `proxy_connect_timeout` default: operators moving from nginx keep its feel.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `proxy_read_timeout` default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `proxy_send_timeout` default.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an upgraded connection (WebSocket) may carry no byte either way before
/// it is closed: HAProxy's commonly configured `timeout tunnel 1h`. nginx applies
/// its 60 s `proxy_read_timeout` here, and "my WebSocket drops after a minute" is
/// the classic result, fixed by raising it to an hour; chat clients that ping every
/// 30–60 s never notice either value, while one hour still reclaims the in-flight
/// slot of a tunnel whose peer vanished without a FIN.
pub const DEFAULT_TUNNEL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Idle upstream connections kept per server when `keepalive` is not set: nginx's
/// commonly recommended `keepalive 32`, enough for a bot instance's concurrency
/// without holding many sockets open on small origins.
pub const DEFAULT_KEEPALIVE: usize = 32;
/// Largest upstream response head taken when `max_response_header_size` is not
/// set: the status line and headers of the final response together with any 1xx
/// interim responses before it. An origin rarely sends more than a few KiB; nginx
/// fails a head that does not fit its proxy buffer (4 or 8 KiB) and HAProxy one
/// over its 16 KiB `tune.bufsize`, both with 502. 32 KiB leaves room for large
/// cookies and tokens while keeping what one request can make the proxy hold small.
pub const DEFAULT_MAX_RESPONSE_HEADER_SIZE: usize = 32 * 1024;
/// Bounds of `max_response_header_size`: below 1 KiB ordinary heads fail; above
/// 256 KiB hyper's read buffer (about 400 KiB) would refuse the head first.
pub const MIN_MAX_RESPONSE_HEADER_SIZE: usize = 1024;
pub const MAX_MAX_RESPONSE_HEADER_SIZE: usize = 256 * 1024;
/// nginx's default server weight.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Upper bound on a server's weight. Round-robin precomputes one cycle of picks,
/// whose length is the sum of the weights divided by their gcd; this bound keeps
/// that table small (nginx accepts any weight, but nobody needs more than this).
pub const MAX_WEIGHT: u32 = 1000;

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, for messages.
    pub source: PathBuf,
    pub admin: Option<AdminConfig>,
    /// `None`: no access log (nginx logs by default; a sidecar's stdout is often
    /// collected already, so logging is asked for, not assumed).
    pub access_log: Option<AccessLogConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub routes: Vec<RouteConfig>,
    /// Sorted by name.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[resolver]`: how `resolve = true` servers are looked up.
    pub resolver: discovery::ResolverConfig,
}

#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    #[serde(serialize_with = "tree::bare")]
    pub listen: SocketAddr,
    /// Bearer token every admin request must carry; `None`: no authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Where the admin API listens when `[admin]` gives no `listen`: loopback only, so
/// that turning it on never exposes it (Envoy's admin port).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";

/// Where and how requests are logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLogConfig {
    #[serde(rename = "path")]
    pub target: LogTarget,
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    /// Appended to; reopened on SIGUSR1 for logrotate.
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line: every field, machine-readable.
    Json,
    /// nginx's and Apache's `combined`, for existing log tooling.
    Combined,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// `Some`: the listener terminates TLS.
    pub tls: Option<TlsConfig>,
    /// `Some(port)`: every request is answered with a redirect to `https://` on this
    /// port (nginx's `return 301 https://$host$request_uri;`).
    pub redirect_https: Option<u16>,
    /// `Strict-Transport-Security` added to every response (TLS listeners only).
    pub hsts: Option<HeaderValue>,
    /// nginx's `client_header_timeout`: how long a client may take to send a whole
    /// request head (from its first byte; the first request's from the
    /// connection's start).
    pub client_header_timeout: Duration,
    /// nginx's `client_body_timeout`: how long a client may pause between two reads
    /// of its request body (a slow but steady upload is not cut).
    pub client_body_timeout: Duration,
    /// `keepalive_timeout`, `keepalive_requests`, `max_header_size`,
    /// `max_body_size`.
    pub limits: ListenerLimits,
    /// Who its clients are and which may come in: `proxy_protocol`,
    /// `trusted_proxies`, `max_connections`, `allow`, `deny`.
    pub clients: ListenerClients,
    /// Rate limits every request of the listener must pass, routed or not.
    pub rate_limit: Vec<RateLimitConfig>,
    /// Limits on the listener's requests in flight.
    pub limit_conn: Vec<LimitConnConfig>,
}

/// nginx's `client_header_timeout` default: a client that has not sent its whole
/// request head in a minute is a slowloris or gone; the connection closes.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `client_body_timeout` default: a client that stalls its request body for
/// a minute gets 408.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// A TLS listener's certificates and protocol settings. The files are read and
/// checked at validation, so a configuration that validates can be served.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Served when no `sni` certificate covers the client's name, or it sent none.
    pub default: Certificate,
    /// Chosen by the names in each certificate.
    pub sni: Vec<Certificate>,
    pub min_version: TlsVersion,
    /// Stateless session tickets (nginx's `ssl_session_tickets`).
    pub session_tickets: bool,
}

impl TlsConfig {
    /// Every certificate, the default first.
    pub fn certificates(&self) -> impl Iterator<Item = &Certificate> {
        std::iter::once(&self.default).chain(&self.sni)
    }
}

/// The oldest protocol version a TLS listener accepts; TLS 1.0 and 1.1 are never
/// offered (RFC 8996).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// nginx's default `ssl_protocols` minus the obsolete 1.0 and 1.1: every client of
/// the last decade speaks 1.2.
pub const DEFAULT_TLS_MIN_VERSION: TlsVersion = TlsVersion::Tls12;
/// Session tickets are on unless turned off, as in nginx (`ssl_session_tickets on`):
/// a returning client skips the key exchange and signature, at no memory cost here.
pub const DEFAULT_SESSION_TICKETS: bool = true;
/// The port `redirect_https` sends clients to unless `https_port` says otherwise;
/// being the default, it is left out of the redirect URL.
pub const DEFAULT_HTTPS_PORT: u16 = 443;

/// A proxying route's timeouts, serialised as the route's `*_timeout` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    #[serde(rename = "connect_timeout", serialize_with = "ser::duration")]
    pub connect: Duration,
    /// Time to the response head, and between two reads of the response body.
    #[serde(rename = "read_timeout", serialize_with = "ser::duration")]
    pub read: Duration,
    /// Time between two writes of the request body to the upstream.
    #[serde(rename = "send_timeout", serialize_with = "ser::duration")]
    pub send: Duration,
    /// Idle limit of an upgraded connection: no byte either way for this long.
    #[serde(rename = "tunnel_timeout", serialize_with = "ser::duration")]
    pub tunnel: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            read: DEFAULT_READ_TIMEOUT,
            send: DEFAULT_SEND_TIMEOUT,
            tunnel: DEFAULT_TUNNEL_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub balance: BalanceKind,
    pub keepalive: usize,
    /// Largest response head a server may send, 1xx interim responses included;
    /// more is its failure, answered 502.
    pub max_response_header_size: usize,
    /// What `least_time` times.
    pub least_time: LeastTimeMode,
    /// τ of the latency estimates (`ewma` and `least_time`).
    pub ewma_decay: Duration,
    /// Estimate of a server with no samples yet.
    pub ewma_seed: Duration,
    /// The request property `hash` balances on; `None` for other algorithms.
    pub hash_key: Option<HashKey>,
    /// HAProxy's `hash-balance-factor`: no server takes more than this × the mean
    /// in-flight load (`None`: unbounded).
    pub hash_balance_factor: Option<f64>,
    pub sticky: Option<StickyConfig>,
    /// Active health checks; `None`: servers are judged by their traffic only.
    pub health_check: Option<HealthCheckConfig>,
    /// Envoy's cap: passive ejection leaves at least the rest of the primaries.
    pub max_ejected_percent: u32,
    /// Where requests wait while every eligible server is at its `max_conns`.
    pub queue: QueueConfig,
    /// The wire protocol to the servers.
    pub protocol: UpstreamProtocol,
    /// HTTPS to the servers; `None`: cleartext.
    pub tls: Option<UpstreamTls>,
    pub servers: Vec<ServerConfig>,
    /// The `resolve = true` entries, whose servers discovery finds.
    pub resolve: Vec<discovery::ResolveEntry>,
    /// Cap on the servers `resolve` entries add.
    pub max_servers: u32,
}

/// τ of the latency estimates: Finagle's and linkerd's default. Long enough that one
/// slow response does not swing traffic, short enough that a recovered server is
/// trusted again within a minute.
pub const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(10);
/// Estimate of an unmeasured server: linkerd's default RTT. A new server neither
/// looks free (and gets flooded) nor prohibitive (and never gets tried).
pub const DEFAULT_EWMA_SEED: Duration = Duration::from_millis(30);
/// Floor of the seed: below 1 ms a fresh server looks free (linkerd's `MIN_DEFAULT_RTT`).
pub const MIN_EWMA_SEED: Duration = Duration::from_millis(1);
/// Cookie lifetime when `sticky.ttl` is not given.
pub const DEFAULT_STICKY_TTL: Duration = Duration::from_secs(3600);

/// An upstream's queue (HAProxy's backend queue with `timeout queue`, nginx Plus's
/// `queue`): while every eligible server holds its `max_conns` requests, new ones
/// wait here in arrival order and are sent as slots free. It exists whether or not
/// the file writes it; it is used only when some server has a `max_conns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueConfig {
    /// Requests that may wait at once; more get 503 at once. 0: none wait, a
    /// request that finds every server full gets 503 at once.
    pub size: u32,
    /// The longest wait, then 503. `None`: the route's `connect_timeout`, as
    /// HAProxy's `timeout queue` defaults to `timeout connect`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::opt_duration"
    )]
    pub timeout: Option<Duration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            size: DEFAULT_QUEUE_SIZE,
            timeout: None,
        }
    }
}

/// Requests an upstream lets wait when `queue.size` is not given. HAProxy's backend
/// queue has no bound of its own (the frontend's `maxconn`, often 2000, bounds it);
/// nginx Plus asks for a number. A thousand rides out a burst of several seconds
/// at the caps of a fleet serving a few hundred requests a second, while bounding
/// what waiting clients hold (a connection each); past that, an immediate 503 serves
/// a client better than a wait that would most likely time out.
pub const DEFAULT_QUEUE_SIZE: u32 = 1000;

/// The selection algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceKind {
    RoundRobin,
    LeastConn,
    LeastTime,
    Ewma,
    Hash,
    Random,
}

impl BalanceKind {
    pub const NAMES: &'static [&'static str] = &[
        "round_robin",
        "least_conn",
        "least_time",
        "ewma",
        "hash",
        "random",
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether an upstream with this algorithm takes `key` (see `ALGORITHM_KEYS`).
    pub fn uses(self, key: &str) -> bool {
        ALGORITHM_KEYS
            .iter()
            .all(|(k, kinds)| *k != key || kinds.contains(&self))
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "round_robin" => BalanceKind::RoundRobin,
            "least_conn" => BalanceKind::LeastConn,
            "least_time" => BalanceKind::LeastTime,
            "ewma" => BalanceKind::Ewma,
            "hash" => BalanceKind::Hash,
            "random" => BalanceKind::Random,
            _ => return None,
        })
    }
}

/// The keys of `[upstream.NAME]` that only some algorithms use, with those
/// algorithms. One table for three readers: the loader refuses such a key under
/// another `balance`, the serialiser leaves it out there, and the diff does not
/// report it coming or going with a change of `balance`.
pub const ALGORITHM_KEYS: &[(&str, &[BalanceKind])] = &[
    ("least_time", &[BalanceKind::LeastTime]),
    ("ewma_decay", &[BalanceKind::Ewma, BalanceKind::LeastTime]),
    ("ewma_seed", &[BalanceKind::Ewma, BalanceKind::LeastTime]),
    ("hash_key", &[BalanceKind::Hash]),
    ("hash_balance_factor", &[BalanceKind::Hash]),
];

/// NGINX's `least_time header | last_byte`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeastTimeMode {
    Header,
    LastByte,
}

/// Where `hash` finds the key of a request. New sources (the Telegram mode's JSON
/// field) are new variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(HeaderName),
    Cookie(String),
    Query(String),
    Path,
    Uri,
}

impl HashKey {
    fn parse(s: &str) -> Result<Self, String> {
        let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
        let need_arg = |a: &str| {
            if a.is_empty() {
                Err(format!("{kind:?} needs a name, as in \"{kind}:NAME\""))
            } else {
                Ok(a.to_owned())
            }
        };
        Ok(match kind {
            "client_ip" if arg.is_empty() => HashKey::ClientIp,
            "path" if arg.is_empty() => HashKey::Path,
            "uri" if arg.is_empty() => HashKey::Uri,
            "header" => HashKey::Header(
                HeaderName::from_bytes(need_arg(arg)?.as_bytes()).map_err(|_| format!("invalid header name {arg:?}"))?,
            ),
            "cookie" => HashKey::Cookie(need_arg(arg)?),
            "query" => HashKey::Query(need_arg(arg)?),
            _ => {
                return Err(format!(
                    "unknown hash key {s:?} (expected \"client_ip\", \"header:NAME\", \"cookie:NAME\", \"query:NAME\", \"path\" or \"uri\")"
                ))
            }
        })
    }
}

/// Cookie-based session persistence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StickyConfig {
    #[serde(serialize_with = "tree::bare")]
    pub cookie: String,
    #[serde(serialize_with = "ser::duration")]
    pub ttl: Duration,
}

/// Serialised as the file's `{ addr = …, weight = …, … }`, `addr` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerConfig {
    /// The address as written (`bot-1.internal:8080`); a name that resolves to
    /// several addresses yields one server per address, as in nginx.
    #[serde(rename = "addr", serialize_with = "tree::bare")]
    pub name: String,
    #[serde(skip)]
    pub addr: SocketAddr,
    pub weight: u32,
    /// nginx's `down`: kept in the configuration (and its state kept) but never picked.
    pub down: bool,
    /// Picked only while no primary server is eligible.
    pub backup: bool,
    /// nginx's `max_fails`: failures within `fail_timeout` that eject the server
    /// (0: never ejected by its traffic).
    pub max_fails: u32,
    #[serde(serialize_with = "ser::duration")]
    pub fail_timeout: std::time::Duration,
    /// Ramp of the effective weight from 10 % to 100 % after the server recovers or
    /// is added (zero: no ramp).
    #[serde(serialize_with = "ser::duration")]
    pub slow_start: std::time::Duration,
    /// HAProxy's server `maxconn`, nginx's `max_conns`: requests it may have in
    /// flight at once (tunnels included); past it, requests wait in the upstream's
    /// `queue` (0: no limit).
    pub max_conns: u32,
}

impl Config {
    /// What is valid but probably not meant, one line each with its key path
    /// (`switchyard check` prints them; the proxy logs them when it loads the file).
    pub fn warnings(&self) -> Vec<String> {
        route::telegram::warnings(self)
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem::new("", format!("cannot read file: {e}"))],
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (used by `demo` and tests).
    /// Relative certificate paths are taken from the directory of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        validate::validate(text, path)
            .map(|mut c| {
                c.source = path.to_owned();
                c
            })
            .map_err(|problems| ConfigError {
                file: path.to_owned(),
                problems,
            })
    }

    /// Every certificate and key file the listeners use, each once: what the file
    /// watch watches besides the configuration file.
    pub fn tls_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = Vec::new();
        for c in self
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(TlsConfig::certificates)
        {
            for f in [&c.cert_path, &c.key_path] {
                if !files.contains(f) {
                    files.push(f.clone());
                }
            }
        }
        files
    }

    /// A server entry as the file writes one (`{ addr = "…", weight = 2 }`), given
    /// as JSON by the admin API: the server (several for a name that resolves to
    /// several addresses), or every problem with its key. Blocks while a name
    /// resolves.
    pub fn server_entry(value: serde_json::Value) -> Result<Vec<ServerConfig>, Vec<Problem>> {
        validate::server_entry(value)
    }

    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams
            .binary_search_by(|u| u.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.upstreams[i])
    }
}

/// One thing wrong with a file, at a key path such as `upstream.api.servers[2].addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Everything wrong with a configuration file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.path.is_empty() {
                write!(f, "{}: {}", self.file.display(), p.message)?;
            } else {
                write!(f, "{}: {}: {}", self.file.display(), p.path, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
