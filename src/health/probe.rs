//! One health check: an HTTP/1.1 request on a fresh connection (so a check also
//! proves the server still accepts connections), judged by status and body.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::HealthCheckConfig;

/// Largest check response body read when looking for `expect_body`; a health page
/// is small, and a check must not be a way to make the proxy buffer megabytes.
const MAX_CHECK_BODY: usize = 64 * 1024;

const USER_AGENT: &str = concat!("switchyard-health-check/", env!("CARGO_PKG_VERSION"));

/// Checks `addr` (or its `port` override) once; `Err` says why it failed.
pub async fn probe(config: &HealthCheckConfig, addr: SocketAddr) -> Result<(), String> {
    match tokio::time::timeout(config.timeout, attempt(config, addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", config.timeout)),
    }
}

async fn attempt(config: &HealthCheckConfig, mut addr: SocketAddr) -> Result<(), String> {
    if let Some(p) = config.port {
        addr.set_port(p);
    }
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let host = match &config.host {
        Some(h) => h.clone(),
        None => HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?,
    };
    let req = Request::builder()
        .method(config.method.clone())
        .uri(config.path.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let result = async {
        let res = tx
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
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
    .await;
    driver.abort();
    result
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
