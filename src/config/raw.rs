//! Serde mirror of the TOML file. Every struct denies unknown keys; values whose
//! syntax needs checking (addresses, durations, names) stay strings here so that
//! `validate` can report all of them at once, each with its key path.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccessLog {
    pub path: String,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub name: String,
    pub listen: String,
    pub redirect_https: Option<bool>,
    pub https_port: Option<u16>,
    /// A `Strict-Transport-Security` value or a duration (its max-age).
    pub hsts: Option<String>,
    pub tls: Option<RawTls>,
    pub client_header_timeout: Option<String>,
    pub client_body_timeout: Option<String>,
    // Connection and body limits (`limits`): nginx's names.
    pub keepalive_timeout: Option<String>,
    pub keepalive_requests: Option<u32>,
    /// Sizes: a byte count or a string such as `"64KiB"`.
    pub max_header_size: Option<toml::Value>,
    pub max_body_size: Option<toml::Value>,
    // Checked in `access`.
    pub proxy_protocol: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_connections: Option<u32>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    /// Tables or arrays of tables (`config::limits`).
    pub rate_limit: Option<toml::Value>,
    pub limit_conn: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: String,
    pub key: String,
    pub min_version: Option<String>,
    pub session_tickets: Option<bool>,
    #[serde(default)]
    pub sni: Vec<RawCertPair>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertPair {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSticky {
    pub cookie: String,
    pub ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub balance: Option<String>,
    pub least_time: Option<String>,
    pub ewma_decay: Option<String>,
    pub ewma_seed: Option<String>,
    pub hash_key: Option<String>,
    pub hash_balance_factor: Option<f64>,
    pub sticky: Option<RawSticky>,
    pub keepalive: Option<u32>,
    /// A size: a byte count or a string such as `"32KiB"`.
    pub max_response_header_size: Option<toml::Value>,
    pub max_ejected_percent: Option<u32>,
    pub health_check: Option<RawHealthCheck>,
    /// Where requests wait while every server is at its `max_conns`.
    pub queue: Option<RawQueue>,
    pub protocol: Option<String>,
    /// `true`, `false` or a table (`RawUpstreamTls`).
    pub tls: Option<toml::Value>,
    /// Deserialised one by one, so one bad server does not hide another's problem.
    #[serde(default)]
    pub servers: Vec<toml::Value>,
    /// Cap on the servers `resolve = true` entries may add.
    pub max_servers: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub sni: Option<String>,
    pub ca_file: Option<String>,
    pub verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    /// `ip:port` or `name:port`; absent for an SRV entry (`service`).
    pub addr: Option<String>,
    /// `true`: the name is re-resolved in the background (`config::discovery`).
    pub resolve: Option<bool>,
    /// An SRV name (`_http._tcp.bots.example`), with `resolve = true`.
    pub service: Option<String>,
    pub weight: Option<u32>,
    pub down: Option<bool>,
    pub backup: Option<bool>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<String>,
    pub slow_start: Option<String>,
    pub max_conns: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    pub size: Option<u32>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub path: Option<String>,
    pub method: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub jitter: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub expect_status: Option<String>,
    pub expect_body: Option<String>,
}
