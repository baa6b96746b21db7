//! The admin API: a small JSON API on its own listener (loopback by default).
//!
//! - `GET  /metrics`                                      Prometheus text exposition
//! - `GET  /healthz`, `GET /livez`                        200 while the process runs
//! - `GET  /readyz`                                       200 once listening, 503 before and while draining
//! - `GET  /status`, `GET /status.json`                   the status page, as HTML or JSON
//! - `GET  /status/series.json?since=SECOND`              the dashboard's last 15 minutes
//! - `GET  /upstreams`                                    every upstream and server with its state
//! - `GET  /upstreams/NAME`                               one upstream
//! - `POST /upstreams/NAME/servers/ADDR/drain|undrain`    maintenance: no new requests / back
//! - `PUT  /upstreams/NAME/servers/ADDR/weight`           `{"weight": 5}`, or `{"weight": null}` to clear
//! - `POST /upstreams/NAME/servers`                       `{"addr": "ip:port", "weight": 1}`: add a server
//! - `DELETE /upstreams/NAME/servers/ADDR`                remove a server
//! - `POST /config/reload`                                200 with the changes, or 400 with the errors
//! - `GET  /config/reload`                                reload counters and the last error
//!
//! Overrides (weight, drain) live in the server's long-lived state, so they
//! survive reloads for as long as the server stays in the configuration; servers
//! added or removed here stay so across reloads (`membership`). Answers are JSON.
//! With `admin.token` set, every request but the probes needs
//! `Authorization: Bearer TOKEN`.
//!
//! The listener outlives the listeners of traffic: it serves through a graceful
//! shutdown's drain (`/readyz` 503, the liveness probes 200, `/metrics` as usual)
//! and closes when the drain is over.

mod charts;
mod dashboard;
mod metrics;
pub(crate) mod status;
pub(crate) mod status_page;
mod upstreams;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::control::Control;
use dashboard::Dashboard;
use status::Status;

/// Largest admin request body read; the API takes tiny JSON documents.
const MAX_ADMIN_BODY: usize = 16 * 1024;

/// Binds the admin listener and serves it on `runtime` until `stop` (sent after
/// the drain).
pub(crate) fn start(
    addr: SocketAddr,
    control: Arc<Control>,
    mut stop: tokio::sync::watch::Receiver<Option<std::time::Duration>>,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(e.kind(), format!("admin: cannot listen on {addr}: {e}"))
    })?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let token_set = control
        .shared
        .config()
        .admin
        .as_ref()
        .is_some_and(|a| a.token.is_some());
    if !bound.ip().is_loopback() && !token_set {
        tracing::warn!(%bound, "admin API on a non-loopback address without admin.token: anyone who can reach it can change the proxy");
    }
    tracing::info!(addr = %bound, "admin API listening");
    runtime.spawn(async move {
        let listener = match TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => return tracing::error!(error = %e, "admin API cannot listen"),
        };
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.wait_for(Option::is_some) => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(_) => continue,
                },
            };
            let control = Arc::clone(&control);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let control = Arc::clone(&control);
                    async move { Ok::<_, Infallible>(handle(&control, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

/// Probes that need no token: Kubernetes' HTTP probes cannot send one, and they
/// reveal nothing. (Prometheus can: `authorization` in its scrape config.)
fn public(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET && matches!(req.uri().path(), "/healthz" | "/livez" | "/readyz")
}

async fn handle(control: &Arc<Control>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if !public(&req) && !authorized(control, &req) {
        let mut res = reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or wrong bearer token"}),
        );
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return res;
    }
    let method = req.method().clone();
    let path: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match (&method, path.as_slice()) {
        (&Method::GET, ["healthz" | "livez"]) => text(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, ["readyz"]) => {
            if control.shared.ready() {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready\n".into(),
                )
            }
        }
        (&Method::GET, ["metrics"]) => {
            let stores = control.shared.limits().redis_stores();
            let body = metrics::render(
                &control.shared.metrics,
                &control.shared,
                control.stats.counts(),
                &stores,
            )
            .unwrap_or_default();
            text(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        (&Method::GET, ["status.json"]) => {
            let status = Status::collect(control);
            reply(
                StatusCode::OK,
                serde_json::to_value(&status).unwrap_or(Value::Null),
            )
        }
        (&Method::GET, ["status"]) => {
            let status = Status::collect(control);
            let board = Dashboard::collect(control, &status, 0);
            let page = status_page::render(&status, board.as_ref());
            text(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        (&Method::GET, ["status", "series.json"]) => {
            let since = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("since="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let status = Status::collect(control);
            match Dashboard::collect(control, &status, since) {
                // Compact: 15 minutes of columns, polled every few seconds.
                Some(d) => text(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string(&d).unwrap_or_default(),
                ),
                None => not_found("no time series (metrics are off)"),
            }
        }
        (&Method::GET, ["upstreams"]) => json_reply(upstreams::list(&control.shared)),
        (&Method::GET, ["upstreams", name]) => json_reply(upstreams::one(&control.shared, name)),
        (&Method::POST, ["upstreams", name, "servers", addr, action @ ("drain" | "undrain")]) => {
            json_reply(upstreams::drain(
                &control.shared,
                name,
                addr,
                *action == "drain",
            ))
        }
        (&Method::PUT | &Method::POST, ["upstreams", name, "servers", addr, "weight"]) => {
            match read_json(req).await {
                Ok(v) => json_reply(upstreams::weight(&control.shared, name, addr, &v)),
                Err(e) => reply(StatusCode::BAD_REQUEST, json!({ "error": e })),
            }
        }
        (&Method::POST, ["upstreams", name, "servers"]) => match read_json(req).await {
            Ok(v) => json_reply(upstreams::add(&control.shared, name, v).await),
            Err(e) => reply(StatusCode::BAD_REQUEST, json!({ "error": e })),
        },
        (&Method::DELETE, ["upstreams", name, "servers", addr]) => {
            json_reply(upstreams::remove(&control.shared, name, addr))
        }
        (&Method::POST, ["config", "reload"]) => match control.reload_async().await {
            Ok(changes) => reply(
                StatusCode::OK,
                json!({
                    "reloaded": true,
                    "changes": changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
            ),
            Err(e) => reply(
                StatusCode::BAD_REQUEST,
                json!({ "reloaded": false, "errors": e.lines() }),
            ),
        },
        (&Method::GET, ["config", "reload"]) => {
            let s = &control.stats;
            let last = s.last_error();
            reply(
                StatusCode::OK,
                json!({
                    "file": control.source().display().to_string(),
                    "succeeded": s.succeeded.load(Ordering::Relaxed),
                    "failed": s.failed.load(Ordering::Relaxed),
                    "last_error": last,
                }),
            )
        }
        (_, ["upstreams", ..] | ["config", "reload"]) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "error": "method not allowed here" }),
        ),
        _ => not_found("no such endpoint"),
    }
}

fn authorized(control: &Control, req: &Request<Incoming>) -> bool {
    let config = control.shared.config();
    let Some(token) = config.admin.as_ref().and_then(|a| a.token.as_deref()) else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compared without an early exit, so timing does not reveal the prefix.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn read_json(req: Request<Incoming>) -> Result<Value, String> {
    let body = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("invalid JSON: {e}"))
}

fn json_reply((status, body): upstreams::Reply) -> Response<Full<Bytes>> {
    reply(status, body)
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    let mut res = Response::new(Full::new(Bytes::from(text)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn not_found(what: &str) -> Response<Full<Bytes>> {
    reply(StatusCode::NOT_FOUND, json!({ "error": what }))
}

/// `%3A` → `:` and the like, for addresses in paths.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
