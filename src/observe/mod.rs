//! Observability below the request path: Prometheus handles (`metrics`) and the
//! series behind them (`store`), the dashboard's time series (`series`), the
//! access log's writer. What a request records is
//! in `pipeline::log`; what the admin listener serves (scrapes of live state, the
//! status page) is in `admin`.

pub mod access_log;
pub mod metrics;
pub mod series;
pub mod store;

pub use access_log::AccessLog;
pub use metrics::{ClassCounters, Metrics, RouteMetrics, UpstreamMetrics, NONE};
