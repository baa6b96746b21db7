//! One health check: a request on a fresh connection (so a check also proves the
//! server still accepts connections), made through the server's own transport, so
//! a TLS or HTTP/2 upstream is checked over TLS or HTTP/2 exactly as its traffic
//! goes, and judged by status and body.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::config::{HealthCheckConfig, UpstreamProtocol};
use crate::upstream::transport::Transport;

/// Largest check response body read when looking for `expect_body`; a health page
/// is small, and a check must not be a way to make the proxy buffer megabytes.
const MAX_CHECK_BODY: usize = 64 * 1024;

const USER_AGENT: &str = concat!("switchyard-health-check/", env!("CARGO_PKG_VERSION"));

/// Checks `addr` (or its `port` override) once through `transport`; `Err` says why
/// it failed.
pub(crate) async fn probe(
    config: &HealthCheckConfig,
    addr: SocketAddr,
    transport: &Transport,
) -> Result<(), String> {
    match tokio::time::timeout(config.timeout, attempt(config, addr, transport)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", config.timeout)),
    }
}

async fn attempt(
    config: &HealthCheckConfig,
    mut addr: SocketAddr,
    transport: &Transport,
) -> Result<(), String> {
    if let Some(p) = config.port {
        addr.set_port(p);
    }
    // The whole check is bounded by `config.timeout` already.
    let stream = transport
        .connect(addr, config.timeout)
        .await
        .map_err(|e| e.to_string())?;
    let host = match &config.host {
        Some(h) => h.clone(),
        None => HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?,
    };
    let req = Request::builder()
        .method(config.method.clone())
        .header(header::USER_AGENT, USER_AGENT);
    let (res, driver) = match transport.protocol() {
        UpstreamProtocol::Http1 => {
            let (mut tx, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let driver = tokio::spawn(conn);
            let req = req
                .uri(config.path.as_str())
                .header(header::HOST, host)
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("request: {e}"))?;
            (tx.send_request(req).await, driver)
        }
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => {
            let (mut tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let driver = tokio::spawn(conn);
            // HTTP/2 carries the host as `:authority`, in the absolute target.
            let target = format!(
                "{}://{}{}",
                transport.scheme(),
                host.to_str().unwrap_or_default(),
                config.path
            );
            let req = req
                .uri(target)
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("request: {e}"))?;
            (tx.send_request(req).await, driver)
        }
    };
    let result = judge(config, res.map_err(|e| format!("request: {e}"))).await;
    driver.abort();
    result
}

async fn judge(
    config: &HealthCheckConfig,
    res: Result<Response<Incoming>, String>,
) -> Result<(), String> {
    let res = res?;
    let status = res.status();
    if !config.expect_status.contains(status) {
        return Err(format!("status {}", status.as_u16()));
    }
    if let Some(want) = &config.expect_body {
        let body = Limited::new(res.into_body(), MAX_CHECK_BODY)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if !contains(&body, want.as_bytes()) {
            return Err(format!("body lacks {want:?}"));
        }
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
