//! DNS discovery's configuration (issue 16): `[resolver]` and the server entries
//! with `resolve = true`, which are not resolved when the file is loaded but
//! re-resolved in the background for as long as the proxy runs (`discovery`).
//!
//! `{ addr = "bots.default.svc.cluster.local:8000", resolve = true }` yields one
//! server per A/AAAA address, on the entry's port; `{ service =
//! "_http._tcp.bots.default.svc.cluster.local", resolve = true }` one per SRV
//! target, on the record's port, the record's weight as its weight and the
//! records of any priority but the best as backups (nginx's `service=` rule).
//! The entry's other keys (weight, max_fails, slow_start…) apply to every server
//! it yields.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use super::validate::Checker;
use super::{ser, ServerConfig};

/// Per query, as nginx's `resolver_timeout` (30 s there; 2 s here, as kube-dns
/// answers in milliseconds and a stuck query only delays a background refresh).
pub const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(2);

/// Re-resolve at least this often, whatever the TTL says: nginx's `valid=`, with
/// Kubernetes' own 30 s record TTL as the default, so a scaled Deployment is seen
/// within half a minute even behind a cache that stretches TTLs.
pub const DEFAULT_VALID: Duration = Duration::from_secs(30);

/// A TTL below this is raised to it: a zero or one-second TTL would have every
/// replica query several times a second for nothing.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);

/// A TTL above this is lowered to it (and then to `valid`).
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);

/// Servers one upstream may discover: a runaway record set (a misconfigured
/// wildcard, a Service selecting every pod) must not build a pool of thousands.
pub const DEFAULT_MAX_SERVERS: u32 = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResolver {
    servers: Option<Vec<String>>,
    timeout: Option<String>,
    valid: Option<String>,
    min_ttl: Option<String>,
    max_ttl: Option<String>,
}

/// `[resolver]`: where and how `resolve = true` names are looked up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolverConfig {
    /// Name servers (`ip:port`, queried over UDP, TCP when truncated); `None`:
    /// the system's (`/etc/resolv.conf`), as in a Kubernetes pod.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "servers")]
    pub servers: Option<Vec<SocketAddr>>,
    #[serde(serialize_with = "ser::duration")]
    pub timeout: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub valid: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub min_ttl: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub max_ttl: Duration,
}

fn servers<S: Serializer>(v: &Option<Vec<SocketAddr>>, s: S) -> Result<S::Ok, S::Error> {
    let list: Vec<String> = v.iter().flatten().map(|a| a.to_string()).collect();
    list.serialize(s)
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            servers: None,
            timeout: DEFAULT_RESOLVER_TIMEOUT,
            valid: DEFAULT_VALID,
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

impl ResolverConfig {
    /// How long an answer with `ttl` is used before the name is asked again:
    /// the TTL within `[min_ttl, max_ttl]`, and never longer than `valid`.
    pub fn refresh_after(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min_ttl, self.max_ttl.max(self.min_ttl))
            .min(self.valid)
    }
}

pub(super) fn check_resolver(c: &mut Checker, raw: RawResolver) -> ResolverConfig {
    let servers = raw.servers.map(|list| {
        if list.is_empty() {
            c.err(
                "resolver.servers",
                "an empty list leaves nothing to ask; leave it out to use /etc/resolv.conf",
            );
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| {
                // A bare address means port 53, as in resolv.conf.
                let parsed = s
                    .parse::<SocketAddr>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
                if parsed.is_none() {
                    c.err(
                        format!("resolver.servers[{i}]"),
                        format!("expected an address such as \"10.96.0.10:53\", got {s:?}"),
                    );
                }
                parsed
            })
            .collect()
    });
    let d = |c: &mut Checker, key: &str, v: &Option<String>, default| {
        c.duration(&format!("resolver.{key}"), v.as_deref(), default)
    };
    let timeout = d(c, "timeout", &raw.timeout, DEFAULT_RESOLVER_TIMEOUT);
    let valid = d(c, "valid", &raw.valid, DEFAULT_VALID);
    let min_ttl = d(c, "min_ttl", &raw.min_ttl, DEFAULT_MIN_TTL);
    let max_ttl = d(c, "max_ttl", &raw.max_ttl, DEFAULT_MAX_TTL);
    if min_ttl > max_ttl {
        c.err(
            "resolver.min_ttl",
            format!(
                "{} is longer than max_ttl ({})",
                humantime::format_duration(min_ttl),
                humantime::format_duration(max_ttl)
            ),
        );
    }
    ResolverConfig {
        servers,
        timeout,
        valid,
        min_ttl,
        max_ttl,
    }
}

/// What a `resolve = true` entry names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResolveTarget {
    /// `addr = "name:port"`: the name's A and AAAA records, on `port`.
    Host { host: String, port: u16 },
    /// `service = "_http._tcp.name"`: its SRV records.
    Srv { service: String },
}

impl ResolveTarget {
    /// The name as the file writes it (`bots.default.svc:8000`, or the service).
    pub fn written(&self) -> String {
        match self {
            ResolveTarget::Host { host, port } => format!("{host}:{port}"),
            ResolveTarget::Srv { service } => service.clone(),
        }
    }

    /// `"a"` or `"srv"`, for the status page.
    pub fn kind(&self) -> &'static str {
        match self {
            ResolveTarget::Host { .. } => "a",
            ResolveTarget::Srv { .. } => "srv",
        }
    }
}

/// A `resolve = true` server entry of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveEntry {
    pub target: ResolveTarget,
    /// The settings every server it yields gets. Its `name` is the entry as
    /// written; its `addr` is a placeholder (the unspecified address on the
    /// entry's port), replaced by each answer's.
    pub server: ServerConfig,
}

impl ResolveEntry {
    /// The server for one answer: `addr`, with the entry's settings.
    pub fn server_at(&self, addr: SocketAddr) -> ServerConfig {
        ServerConfig {
            addr,
            ..self.server.clone()
        }
    }
}

impl Serialize for ResolveEntry {
    /// As the file writes it: `addr` or `service`, `resolve = true`, the settings.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = &self.server;
        let mut m = s.serialize_struct("ResolveEntry", 9)?;
        match &self.target {
            ResolveTarget::Host { .. } => {
                m.serialize_field("addr", &ser::Bare(self.target.written()))?
            }
            ResolveTarget::Srv { service } => m.serialize_field("service", &ser::Bare(service))?,
        }
        m.serialize_field("resolve", &true)?;
        m.serialize_field("weight", &v.weight)?;
        m.serialize_field("down", &v.down)?;
        m.serialize_field("backup", &v.backup)?;
        m.serialize_field("max_fails", &v.max_fails)?;
        m.serialize_field("fail_timeout", &ser::Dur(v.fail_timeout))?;
        m.serialize_field("slow_start", &ser::Dur(v.slow_start))?;
        m.serialize_field("max_conns", &v.max_conns)?;
        m.end()
    }
}

/// The target of a `resolve = true` entry at `path` (its `addr` or `service`).
pub(super) fn check_target(
    c: &mut Checker,
    path: &str,
    addr: Option<&str>,
    service: Option<&str>,
) -> Option<ResolveTarget> {
    match (addr, service) {
        (Some(_), Some(_)) => {
            c.err(
                format!("{path}.service"),
                "a server has `addr` (a name's addresses) or `service` (its SRV records), not both",
            );
            None
        }
        (None, None) => {
            c.err(
                path,
                "a server needs `addr` (or, with resolve = true, `service`)",
            );
            None
        }
        (Some(a), None) => match super::validate::split_host_port(a) {
            Some((host, port)) if host.parse::<IpAddr>().is_err() => Some(ResolveTarget::Host {
                host: host.to_ascii_lowercase(),
                port,
            }),
            _ => {
                c.err(
                    format!("{path}.addr"),
                    format!(
                        "resolve = true needs a host name and a port (\"bots.default.svc.cluster.local:8000\"), got {a:?}"
                    ),
                );
                None
            }
        },
        (None, Some(svc)) => {
            let labels_ok = svc.split('.').count() >= 3
                && svc.starts_with('_')
                && svc.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                });
            if !labels_ok {
                c.err(
                    format!("{path}.service"),
                    format!(
                        "expected an SRV name such as \"_http._tcp.bots.default.svc.cluster.local\", got {svc:?}"
                    ),
                );
                return None;
            }
            Some(ResolveTarget::Srv {
                service: svc.to_ascii_lowercase(),
            })
        }
    }
}

/// The placeholder address of an entry's template server.
pub(super) fn placeholder(target: &ResolveTarget) -> SocketAddr {
    let port = match target {
        ResolveTarget::Host { port, .. } => *port,
        ResolveTarget::Srv { .. } => 0,
    };
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_clamped_then_capped_at_valid() {
        let r = ResolverConfig {
            min_ttl: Duration::from_secs(2),
            max_ttl: Duration::from_secs(60),
            valid: Duration::from_secs(30),
            ..ResolverConfig::default()
        };
        assert_eq!(
            r.refresh_after(Duration::from_secs(1)),
            Duration::from_secs(2)
        );
        assert_eq!(
            r.refresh_after(Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        assert_eq!(
            r.refresh_after(Duration::from_secs(45)),
            Duration::from_secs(30)
        );
        assert_eq!(
            r.refresh_after(Duration::from_secs(600)),
            Duration::from_secs(30)
        );
    }
}

#[cfg(test)]
mod file_tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(upstream: &str, resolver: &str) -> Result<Config, Vec<(String, String)>> {
        let text = format!(
            "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"bots\"\n\
             {resolver}\n[upstream.bots]\n{upstream}\n"
        );
        Config::parse(Path::new("/tmp/t.toml"), &text).map_err(|e| {
            e.problems
                .into_iter()
                .map(|p| (p.path, p.message))
                .collect()
        })
    }

    #[test]
    fn entries_are_kept_apart_from_the_file_servers_and_read_back_from_a_dump() {
        let c = parse(
            "servers = [\n  { addr = \"Bots.Test:8000\", resolve = true, weight = 2, slow_start = \"5s\" },\n  \
             { service = \"_http._tcp.bots.test\", resolve = true, backup = true },\n  \
             { addr = \"127.0.0.1:9001\" },\n]\nmax_servers = 50\n",
            "[resolver]\nservers = [\"127.0.0.1:5353\", \"10.0.0.1\"]\nvalid = \"10s\"\n",
        )
        .unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.servers.len(), 1);
        assert_eq!(u.max_servers, 50);
        assert_eq!(
            u.resolve[0].target,
            ResolveTarget::Host {
                host: "bots.test".into(),
                port: 8000
            }
        );
        assert_eq!(u.resolve[0].server.weight, 2);
        assert_eq!(u.resolve[0].server.slow_start, Duration::from_secs(5));
        assert_eq!(u.resolve[0].server.name, "bots.test:8000");
        assert!(u.resolve[1].server.backup);
        assert_eq!(
            c.resolver.servers,
            Some(vec![
                "127.0.0.1:5353".parse().unwrap(),
                "10.0.0.1:53".parse().unwrap()
            ])
        );
        assert_eq!(c.resolver.valid, Duration::from_secs(10));
        let text = toml::to_string(&c).unwrap();
        let again = Config::parse(Path::new("/tmp/t.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again.upstreams[0].resolve, u.resolve);
        assert_eq!(again.resolver, c.resolver);
        assert!(crate::config::diff(&c, &again).is_empty());
        // A name added by a reload is a change the diff names.
        let fewer = parse("servers = [{ addr = \"127.0.0.1:9001\" }]\n", "").unwrap();
        let changes: Vec<String> = crate::config::diff(&fewer, &c)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert!(
            changes
                .iter()
                .any(|c| c.contains("server dns bots.test:8000")),
            "{changes:#?}"
        );
    }

    #[test]
    fn an_upstream_may_have_only_names_to_discover() {
        let c = parse(
            "servers = [{ addr = \"bots.test:8000\", resolve = true }]\n",
            "",
        )
        .unwrap();
        assert!(c.upstreams[0].servers.is_empty());
        assert_eq!(c.upstreams[0].max_servers, DEFAULT_MAX_SERVERS);
        assert_eq!(c.resolver, ResolverConfig::default());
    }

    #[test]
    fn every_mistake_is_named_at_its_key() {
        let p = parse(
            "servers = [\n  { addr = \"10.0.0.1:80\", resolve = true },\n  \
             { service = \"_http._tcp.bots.test\" },\n  \
             { addr = \"a.test:1\", service = \"_x._tcp.a.test\", resolve = true },\n  \
             { service = \"bots.test\", resolve = true },\n  \
             { addr = \"b.test\", resolve = true },\n  \
             { addr = \"c.test:80\", resolve = true },\n  \
             { addr = \"c.test:80\", resolve = true },\n]\nmax_servers = 0\n",
            "[resolver]\nservers = [\"dns.example\"]\nmin_ttl = \"10m\"\n",
        )
        .unwrap_err();
        let has = |key: &str, part: &str| {
            assert!(
                p.iter().any(|(k, m)| k == key && m.contains(part)),
                "no {key}: …{part}… in {p:#?}"
            )
        };
        has(
            "upstream.bots.servers[0].addr",
            "needs a host name and a port",
        );
        has("upstream.bots.servers[1].service", "add resolve = true");
        has("upstream.bots.servers[2].service", "not both");
        has("upstream.bots.servers[3].service", "expected an SRV name");
        has(
            "upstream.bots.servers[4].addr",
            "needs a host name and a port",
        );
        has("upstream.bots.servers[6]", "listed twice");
        has("upstream.bots.max_servers", "at least 1");
        has("resolver.servers[0]", "expected an address");
        has("resolver.min_ttl", "longer than max_ttl");
    }
}
