//! Observability: Prometheus metrics, the access log, request ids, and the status
//! page's model of the running proxy.

pub mod access_log;
pub mod metrics;
mod record;
pub mod request_id;
pub mod status;

pub use access_log::AccessLog;
pub use metrics::{Metrics, RouteMetrics, UpstreamMetrics};
pub use record::{BodyIn, Observed, Record};
pub mod status_page;
