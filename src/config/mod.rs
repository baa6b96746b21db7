//! Validated configuration. `Config::load` reads a TOML file, checks every key and
//! value, resolves server names, and returns either a `Config` whose fields are
//! typed (socket addresses, durations, header names) or a `ConfigError` listing
//! every problem as `FILE: key.path: what is wrong`.

mod raw;
mod template;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

pub use template::{HeaderTemplate, Segment, Variable};

/// nginx's `proxy_connect_timeout` default: operators moving from nginx keep its feel.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `proxy_read_timeout` default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `proxy_send_timeout` default.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle upstream connections kept per server when `keepalive` is not set: nginx's
/// commonly recommended `keepalive 32`, enough for a bot instance's concurrency
/// without holding many sockets open on small origins.
pub const DEFAULT_KEEPALIVE: usize = 32;
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
    pub listeners: Vec<ListenerConfig>,
    pub routes: Vec<RouteConfig>,
    /// Sorted by name.
    pub upstreams: Vec<UpstreamConfig>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `None` serves the route on every listener.
    pub listener: Option<String>,
    pub host: Option<HostPattern>,
    /// A path prefix, always starting with `/`.
    pub path: String,
    pub upstream: String,
    pub timeouts: Timeouts,
    pub set_headers: Vec<(HeaderName, HeaderTemplate)>,
}

/// Host patterns as nginx's `server_name`: exact names win over wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Lower-cased host name, without port.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`.
    Wildcard(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Time to the response head, and between two reads of the response body.
    pub read: Duration,
    /// Time between two writes of the request body to the upstream.
    pub send: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            read: DEFAULT_READ_TIMEOUT,
            send: DEFAULT_SEND_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub balance: BalanceKind,
    pub keepalive: usize,
    pub servers: Vec<ServerConfig>,
}

/// The selection algorithms. The balancing issue adds the load-aware ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceKind {
    RoundRobin,
}

impl BalanceKind {
    pub const NAMES: &'static [&'static str] = &["round_robin"];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "round_robin" => Some(BalanceKind::RoundRobin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address as written (`bot-1.internal:8080`); a name that resolves to
    /// several addresses yields one server per address, as in nginx.
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// nginx's `down`: kept in the configuration (and its state kept) but never picked.
    pub down: bool,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem::new("", format!("cannot read file: {e}"))],
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (used by `demo` and tests).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        validate::validate(text)
            .map(|mut c| {
                c.source = path.to_owned();
                c
            })
            .map_err(|problems| ConfigError {
                file: path.to_owned(),
                problems,
            })
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
