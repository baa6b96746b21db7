//! Discovery: sources that report servers for upstreams (DNS first; registries and
//! Kubernetes later). A source runs on the background runtime and reports, whenever
//! it learns something new, the complete current list of an upstream's servers it
//! knows; Switchyard merges that list with the file's servers and the admin API's
//! changes (`Membership`) and rebuilds that upstream alone. A source never sees the
//! configuration snapshot and needs no lock of the proxy's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::ServerConfig;

/// A source of servers.
pub trait Discover: Send + 'static {
    /// What the status page and the admin API show as the servers' source
    /// (`"dns"`, `"kubernetes"`).
    fn name(&self) -> &str;

    /// Runs the source until the proxy stops (the task is then dropped), reporting
    /// through `report`.
    fn run(self: Box<Self>, report: Report) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What applies a list to the running proxy: `(upstream, source, servers)`.
pub type Sink = Arc<dyn Fn(&str, &Arc<str>, Vec<ServerConfig>) + Send + Sync>;

/// Where a source reports: applies each list to the running proxy.
#[derive(Clone)]
pub struct Report {
    source: Arc<str>,
    sink: Sink,
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Report {
    /// A report for `source` that hands each list to `sink(upstream, source,
    /// servers)`.
    pub fn new(source: &str, sink: Sink) -> Self {
        Report {
            source: Arc::from(source),
            sink,
        }
    }

    /// The complete list of `upstream`'s servers this source knows now (an empty
    /// list withdraws them all). An upstream the configuration lacks is ignored;
    /// the list is kept for when it appears.
    pub fn servers(&self, upstream: &str, servers: Vec<ServerConfig>) {
        (self.sink)(upstream, &self.source, servers);
    }
}
