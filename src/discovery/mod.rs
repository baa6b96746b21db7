//! DNS discovery (issue 16): the `resolve = true` entries of every upstream,
//! each re-resolved by a task of its own on the background runtime, reported as
//! source `"dns"` into the membership layer, which merges them with the file's
//! servers and the admin API's and rebuilds the upstream alone (per-server state
//! is kept by address, so a re-resolution that keeps an address keeps its
//! health, counters and connections).
//!
//! Each entry's task (`NameTask::run`):
//! - resolves, then sleeps for the answer's TTL clamped into `[min_ttl,
//!   max_ttl]` and capped at `valid` (`ResolverConfig::refresh_after`);
//! - keeps the last good set through a failed answer (timeout, SERVFAIL) or an
//!   empty one, retrying after `min_ttl` (at least `RETRY_MIN`), so a resolver
//!   outage never empties a pool; NXDOMAIN after a success is treated alike
//!   until `valid` × 3 has passed since that success, then the name's servers go;
//! - caps the servers at `max_servers` per upstream (the lowest addresses kept).
//!
//! `Dns::configure` runs with every applied configuration (start and reloads):
//! it keeps the tasks of entries that did not change, stops those of removed or
//! changed entries (their servers go, finishing their in-flight requests), and
//! starts the new ones. A change of `[resolver]` restarts every task.

mod lookup;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use hickory_resolver::TokioResolver;
use serde::Serialize;
use tokio::task::AbortHandle;

use crate::config::discovery::{ResolveEntry, ResolveTarget, ResolverConfig};
use crate::config::{Config, ServerConfig};
use crate::membership::discover::Report;
use crate::observe::Metrics;
pub use lookup::{lookup, resolver, Answer};

/// The source name discovered servers carry (admin API, status page).
pub const SOURCE: &str = "dns";

/// The shortest wait before a failed lookup is tried again: a resolver that is
/// down is asked once a second per name, not in a loop.
pub const RETRY_MIN: Duration = Duration::from_secs(1);

/// How many `valid` periods an NXDOMAIN after a success is ignored: a DNS blip
/// (a restarting CoreDNS serving an empty zone) must not take out a fleet.
pub const NXDOMAIN_GRACE: u32 = 3;

/// Every discovered name of the proxy, and their tasks.
#[derive(Default)]
pub struct Dns {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    runtime: Option<tokio::runtime::Handle>,
    report: Option<Report>,
    metrics: Option<Arc<Metrics>>,
    resolver_config: Option<ResolverConfig>,
    resolver: Option<Arc<TokioResolver>>,
    tasks: HashMap<TaskKey, (AbortHandle, Arc<NameStatus>)>,
    /// What each entry yields now, by upstream; shared with the tasks.
    found: Arc<Mutex<Found>>,
}

/// By upstream: its cap, and each entry's servers.
#[derive(Default)]
struct Found {
    upstreams: HashMap<String, (usize, BTreeMap<ResolveTarget, Vec<ServerConfig>>)>,
}

/// What makes a task the same one across configurations: its upstream and its
/// entry as written, settings included (a changed weight restarts it, so its
/// servers carry the new one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TaskKey {
    upstream: String,
    target: ResolveTarget,
    settings: String,
}

/// One name's state, for the status page.
#[derive(Debug)]
pub struct NameStatus {
    pub upstream: String,
    pub target: ResolveTarget,
    state: Mutex<NameState>,
}

#[derive(Debug, Default, Clone)]
struct NameState {
    servers: usize,
    last_good: Option<SystemTime>,
    last_error: Option<String>,
}

/// A name's line in `/status.json`'s `discovery`.
#[derive(Debug, Clone, Serialize)]
pub struct NameView {
    pub upstream: String,
    pub name: String,
    pub kind: &'static str,
    pub servers: usize,
    /// Unix seconds of the last good answer.
    pub last_good: Option<u64>,
    pub last_error: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = lock(&self.inner);
        f.debug_struct("Dns")
            .field("names", &inner.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// Starts resolving on `runtime`, reporting through `report`; then
    /// `configure` with the configuration in force.
    pub fn start(
        &self,
        runtime: tokio::runtime::Handle,
        report: Report,
        metrics: Arc<Metrics>,
        config: &Config,
    ) {
        {
            let mut inner = lock(&self.inner);
            inner.runtime = Some(runtime);
            inner.report = Some(report);
            inner.metrics = Some(metrics);
        }
        self.configure(config);
    }

    /// Aligns the tasks with `config`'s `resolve = true` entries (see the module
    /// documentation). Before `start`, does nothing.
    pub fn configure(&self, config: &Config) {
        let mut inner = lock(&self.inner);
        let (Some(runtime), Some(report), Some(metrics)) = (
            inner.runtime.clone(),
            inner.report.clone(),
            inner.metrics.clone(),
        ) else {
            return;
        };
        if inner.resolver_config.as_ref() != Some(&config.resolver) {
            for (_, (task, _)) in inner.tasks.drain() {
                task.abort();
            }
            inner.resolver = match lookup::resolver(&config.resolver) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up the DNS resolver; resolve = true servers are not discovered");
                    None
                }
            };
            inner.resolver_config = Some(config.resolver.clone());
        }
        let wanted: HashMap<TaskKey, (&ResolveEntry, usize)> = config
            .upstreams
            .iter()
            .flat_map(|u| {
                u.resolve.iter().map(move |e| {
                    let key = TaskKey {
                        upstream: u.name.clone(),
                        target: e.target.clone(),
                        settings: format!("{:?}", e.server),
                    };
                    (key, (e, u.max_servers as usize))
                })
            })
            .collect();
        let mut touched: Vec<String> = Vec::new();
        inner.tasks.retain(|key, (task, _)| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
                touched.push(key.upstream.clone());
            }
            keep
        });
        {
            let mut found = lock(&inner.found);
            for key in &touched {
                if let Some((_, names)) = found.upstreams.get_mut(key) {
                    names
                        .retain(|t, _| wanted.keys().any(|k| &k.upstream == key && &k.target == t));
                }
            }
            for u in &config.upstreams {
                if let Some((cap, _)) = found.upstreams.get_mut(&u.name) {
                    *cap = u.max_servers as usize;
                }
            }
            found.upstreams.retain(|name, _| {
                config
                    .upstreams
                    .iter()
                    .any(|u| &u.name == name && !u.resolve.is_empty())
            });
        }
        let Some(resolver) = inner.resolver.clone() else {
            return;
        };
        for (key, (entry, cap)) in wanted {
            if inner.tasks.contains_key(&key) {
                continue;
            }
            let status = Arc::new(NameStatus {
                upstream: key.upstream.clone(),
                target: entry.target.clone(),
                state: Mutex::default(),
            });
            let name = entry.target.written();
            let task = NameTask {
                entry: entry.clone(),
                upstream: key.upstream.clone(),
                cap,
                config: config.resolver.clone(),
                resolver: Arc::clone(&resolver),
                found: Arc::clone(&inner.found),
                report: report.clone(),
                status: Arc::clone(&status),
                results: [
                    metrics.dns_resolutions(&key.upstream, &name, "ok"),
                    metrics.dns_resolutions(&key.upstream, &name, "error"),
                    metrics.dns_resolutions(&key.upstream, &name, "empty"),
                    metrics.dns_resolutions(&key.upstream, &name, "nxdomain"),
                ],
                servers_gauge: metrics.dns_servers(&key.upstream, &name),
                last_success: metrics.dns_last_success(&key.upstream, &name),
            };
            let handle = runtime.spawn(task.run());
            inner.tasks.insert(key, (handle.abort_handle(), status));
        }
        drop(inner);
        for upstream in touched {
            self.report_now(&upstream);
        }
    }

    /// Reports `upstream`'s discovered servers as they stand. Under the `found`
    /// lock, as the tasks report: two lists of one upstream are never applied in
    /// the other order than they were made.
    fn report_now(&self, upstream: &str) {
        let inner = lock(&self.inner);
        if let Some(report) = &inner.report {
            let found = lock(&inner.found);
            report.servers(upstream, union(&found, upstream));
        }
    }

    /// Stops every task (the proxy is shutting down).
    pub fn stop(&self) {
        for (_, (task, _)) in lock(&self.inner).tasks.drain() {
            task.abort();
        }
    }

    /// Every discovered name's state, for the status page.
    pub fn status(&self) -> Vec<NameView> {
        let inner = lock(&self.inner);
        let mut out: Vec<NameView> = inner
            .tasks
            .values()
            .map(|(_, s)| {
                let st = lock(&s.state).clone();
                NameView {
                    upstream: s.upstream.clone(),
                    name: s.target.written(),
                    kind: s.target.kind(),
                    servers: st.servers,
                    last_good: st.last_good.and_then(|t| {
                        t.duration_since(SystemTime::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_secs())
                    }),
                    last_error: st.last_error,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.upstream, &a.name).cmp(&(&b.upstream, &b.name)));
        out
    }
}

/// Looks every `resolve = true` name of `config` up once (`switchyard check`):
/// one warning per name that gives no server now. Warnings, not errors: a name
/// may resolve only where the proxy runs (a cluster's service names).
pub async fn check(config: &Config) -> Vec<String> {
    let entries: Vec<(&str, &ResolveEntry)> = config
        .upstreams
        .iter()
        .flat_map(|u| u.resolve.iter().map(move |e| (u.name.as_str(), e)))
        .collect();
    if entries.is_empty() {
        return Vec::new();
    }
    let resolver = match lookup::resolver(&config.resolver) {
        Ok(r) => r,
        Err(e) => return vec![format!("resolver: cannot be set up: {e}")],
    };
    let mut out = Vec::new();
    for (upstream, e) in entries {
        let problem = match lookup(&resolver, e).await {
            Answer::Servers(..) => continue,
            Answer::Empty => "has no records".to_owned(),
            Answer::NxDomain => "does not exist (NXDOMAIN)".to_owned(),
            Answer::Failed(why) => format!("could not be looked up: {why}"),
        };
        out.push(format!(
            "upstream.{upstream}: {} {problem}; it gets no servers until it resolves",
            e.target.written()
        ));
    }
    out
}

/// `upstream`'s discovered servers: every entry's, each address once, at most
/// its cap (the lowest addresses, so every replica keeps the same ones).
fn union(found: &Found, upstream: &str) -> Vec<ServerConfig> {
    let Some((cap, names)) = found.upstreams.get(upstream) else {
        return Vec::new();
    };
    let mut all: Vec<ServerConfig> = names.values().flatten().cloned().collect();
    all.sort_by_key(|s| s.addr);
    all.dedup_by_key(|s| s.addr);
    if all.len() > *cap {
        tracing::warn!(
            upstream,
            found = all.len(),
            max_servers = cap,
            "more discovered servers than max_servers; the rest are left out"
        );
        all.truncate(*cap);
    }
    all
}

/// One entry's resolution loop.
struct NameTask {
    entry: ResolveEntry,
    upstream: String,
    cap: usize,
    config: ResolverConfig,
    resolver: Arc<TokioResolver>,
    found: Arc<Mutex<Found>>,
    report: Report,
    status: Arc<NameStatus>,
    /// ok, error, empty, nxdomain.
    results: [metrics::Counter; 4],
    servers_gauge: metrics::Gauge,
    last_success: metrics::Gauge,
}

impl NameTask {
    async fn run(self) {
        let name = self.entry.target.written();
        let mut last_good: Option<tokio::time::Instant> = None;
        let mut down_logged = false;
        loop {
            let answer = lookup(&self.resolver, &self.entry).await;
            let retry = self.config.min_ttl.max(RETRY_MIN).min(self.config.valid);
            let wait = match answer {
                Answer::Servers(servers, ttl) => {
                    self.results[0].increment(1);
                    last_good = Some(tokio::time::Instant::now());
                    if down_logged {
                        tracing::info!(upstream = %self.upstream, name = %name, servers = servers.len(), "DNS answers again");
                        down_logged = false;
                    }
                    let now = SystemTime::now();
                    if let Ok(d) = now.duration_since(SystemTime::UNIX_EPOCH) {
                        self.last_success.set(d.as_secs_f64());
                    }
                    {
                        let mut st = lock(&self.status.state);
                        st.last_good = Some(now);
                        st.last_error = None;
                    }
                    self.set(Some(servers));
                    self.config.refresh_after(ttl)
                }
                Answer::NxDomain => {
                    self.results[3].increment(1);
                    let grace = self.config.valid * NXDOMAIN_GRACE;
                    let expired = last_good.is_none_or(|t| t.elapsed() >= grace);
                    self.note_error(&name, "NXDOMAIN", &mut down_logged);
                    if expired {
                        self.set(None);
                    }
                    retry
                }
                Answer::Empty => {
                    self.results[2].increment(1);
                    self.note_error(&name, "no records", &mut down_logged);
                    retry
                }
                Answer::Failed(e) => {
                    self.results[1].increment(1);
                    self.note_error(&name, &e, &mut down_logged);
                    retry
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// A bad answer: logged once until the next good one, shown on the status page.
    fn note_error(&self, name: &str, error: &str, logged: &mut bool) {
        lock(&self.status.state).last_error = Some(error.to_owned());
        if !*logged {
            let kept = lock(&self.status.state).servers;
            tracing::warn!(upstream = %self.upstream, name, error, kept, "DNS lookup failed; keeping the last good servers");
            *logged = true;
        }
    }

    /// Records this entry's servers (`None`: it has none any more) and reports
    /// the upstream's list when it changed.
    fn set(&self, servers: Option<Vec<ServerConfig>>) {
        // Reported under the lock (see `Dns::report_now`).
        let mut found = lock(&self.found);
        {
            let (cap, names) = found
                .upstreams
                .entry(self.upstream.clone())
                .or_insert_with(|| (self.cap, BTreeMap::new()));
            *cap = self.cap;
            let new = servers.unwrap_or_default();
            let n = new.len();
            if new.is_empty() {
                self.servers_gauge.set(0.0);
            }
            let changed = names
                .get(&self.entry.target)
                .map_or(!new.is_empty(), |old| *old != new);
            if new.is_empty() {
                names.remove(&self.entry.target);
            } else {
                names.insert(self.entry.target.clone(), new);
            }
            if !changed {
                lock(&self.status.state).servers = n.min(self.cap);
                return;
            }
        }
        let list = union(&found, &self.upstream);
        // What this name adds to the upstream, the cap applied.
        let mine = found
            .upstreams
            .get(&self.upstream)
            .and_then(|(_, names)| names.get(&self.entry.target));
        let used = mine.map_or(0, |m| {
            list.iter()
                .filter(|s| m.iter().any(|x| x.addr == s.addr))
                .count()
        });
        lock(&self.status.state).servers = used;
        self.servers_gauge.set(used as f64);
        self.report.servers(&self.upstream, list);
    }
}
