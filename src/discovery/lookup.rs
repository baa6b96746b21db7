//! One lookup of a `resolve = true` entry with hickory's async resolver: the
//! servers it yields now, and how long the answer holds (the smallest TTL of the
//! records used). Never on the request path: only the per-name tasks of
//! `discovery` call this.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig as HickoryConfig,
    ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::config::discovery::{ResolveEntry, ResolveTarget, ResolverConfig};
use crate::config::ServerConfig;

/// What one lookup gave.
#[derive(Debug)]
pub enum Answer {
    /// Servers, and how long the records said they hold.
    Servers(Vec<ServerConfig>, Duration),
    /// The name exists but has no usable record (NOERROR, no data).
    Empty,
    /// The name does not exist.
    NxDomain,
    /// No answer: a timeout, SERVFAIL, a refusal, a network error.
    Failed(String),
}

/// A resolver for `config`: its name servers (UDP, then TCP for truncated
/// answers), or the system's. Answers are not cached — each entry's task keeps its
/// own schedule, and a cached answer would hide a change until its TTL ran out
/// even when `valid` asks to look again sooner.
pub fn resolver(config: &ResolverConfig) -> Result<TokioResolver, ResolveError> {
    let mut opts = ResolverOpts::default();
    opts.timeout = config.timeout;
    // One try per server per lookup: a failed lookup is retried by the task's
    // schedule, which keeps the last good set meanwhile.
    opts.attempts = 1;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.positive_max_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.preserve_intermediates = true;
    let provider = TokioConnectionProvider::default();
    let builder = match &config.servers {
        Some(servers) => {
            let mut group = NameServerConfigGroup::new();
            for &s in servers {
                group.push(NameServerConfig::new(s, Protocol::Udp));
                group.push(NameServerConfig::new(s, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(
                HickoryConfig::from_parts(None, vec![], group),
                provider,
            )
        }
        None => TokioResolver::builder(provider)?,
    };
    let mut builder = builder.with_options(opts);
    // `/etc/resolv.conf`'s own options (ndots, search) come with the system
    // configuration; the timeout is ours.
    builder.options_mut().timeout = config.timeout;
    builder.options_mut().positive_max_ttl = Some(Duration::ZERO);
    builder.options_mut().negative_max_ttl = Some(Duration::ZERO);
    Ok(builder.build())
}

/// Looks `entry` up once.
pub async fn lookup(resolver: &TokioResolver, entry: &ResolveEntry) -> Answer {
    match &entry.target {
        ResolveTarget::Host { host, port } => host_lookup(resolver, entry, fqdn(host), *port).await,
        ResolveTarget::Srv { service } => srv_lookup(resolver, entry, fqdn(service)).await,
    }
}

/// A name as an absolute one: `svc.cluster.local` is not searched in the
/// resolv.conf domains (Kubernetes' ndots:5 would otherwise try five suffixes
/// first). A name written without dots is left to the search list.
fn fqdn(name: &str) -> String {
    if name.contains('.') && !name.ends_with('.') {
        format!("{name}.")
    } else {
        name.to_owned()
    }
}

/// What a failed lookup means: hickory reports every answer without records as
/// `NoRecordsFound`, whatever its response code, so the code tells NXDOMAIN
/// (the name is gone) and NOERROR (it has no such record) from SERVFAIL and
/// REFUSED (no answer at all).
fn failure(e: &ResolveError) -> Answer {
    if let Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) = e.proto().map(|p| p.kind())
    {
        return match *response_code {
            ResponseCode::NXDomain => Answer::NxDomain,
            ResponseCode::NoError => Answer::Empty,
            code => Answer::Failed(format!("the server answered {code}")),
        };
    }
    Answer::Failed(e.to_string())
}

async fn host_lookup(
    resolver: &TokioResolver,
    entry: &ResolveEntry,
    host: String,
    port: u16,
) -> Answer {
    match resolver.lookup_ip(host).await {
        Ok(l) => {
            let ttl = l
                .as_lookup()
                .records()
                .iter()
                .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                .map(|r| Duration::from_secs(u64::from(r.ttl())))
                .min();
            let mut addrs: Vec<IpAddr> = l.iter().collect();
            addrs.sort();
            addrs.dedup();
            match ttl {
                Some(ttl) if !addrs.is_empty() => Answer::Servers(
                    addrs
                        .into_iter()
                        .map(|ip| entry.server_at(SocketAddr::new(ip, port)))
                        .collect(),
                    ttl,
                ),
                _ => Answer::Empty,
            }
        }
        Err(e) => failure(&e),
    }
}

/// SRV: each target's addresses (from the answer's additional section, else
/// looked up), on the record's port; the record's weight (0 read as 1) as the
/// server's; records of any priority but the best one as backups.
async fn srv_lookup(resolver: &TokioResolver, entry: &ResolveEntry, service: String) -> Answer {
    let srv = match resolver.srv_lookup(service).await {
        Ok(s) => s,
        Err(e) => return failure(&e),
    };
    let lookup = srv.as_lookup();
    let mut ttl = lookup
        .records()
        .iter()
        .filter(|r| r.record_type() == RecordType::SRV)
        .map(|r| Duration::from_secs(u64::from(r.ttl())))
        .min();
    // The addresses the answer carries, by name.
    let mut glue: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for r in lookup.records() {
        let ip = match r.data() {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        glue.entry(r.name().to_ascii().to_ascii_lowercase())
            .or_default()
            .push(ip);
    }
    let Some(best) = srv.iter().map(|r| r.priority()).min() else {
        return Answer::Empty;
    };
    let mut servers = Vec::new();
    for r in srv.iter() {
        let target = r.target().to_ascii().to_ascii_lowercase();
        let ips = match glue.get(&target) {
            Some(ips) => ips.clone(),
            None => match resolver.lookup_ip(target.clone()).await {
                Ok(l) => {
                    let t = l
                        .as_lookup()
                        .records()
                        .iter()
                        .map(|r| Duration::from_secs(u64::from(r.ttl())))
                        .min();
                    ttl = match (ttl, t) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    l.iter().collect()
                }
                // A target that does not resolve is left out; the others stand.
                Err(e) => {
                    tracing::debug!(target = %target, error = %e, "SRV target does not resolve");
                    Vec::new()
                }
            },
        };
        for ip in ips {
            let mut s = entry.server_at(SocketAddr::new(ip, r.port()));
            s.weight = u32::from(r.weight()).max(1);
            s.backup = entry.server.backup || r.priority() != best;
            servers.push(s);
        }
    }
    servers.sort_by_key(|s| s.addr);
    servers.dedup_by_key(|s| s.addr);
    match ttl {
        Some(ttl) if !servers.is_empty() => Answer::Servers(servers, ttl),
        _ => Answer::Empty,
    }
}
