//! The admin API's upstream endpoints: each upstream's servers with their state,
//! and the operator's levers — drain, weight, and adding or removing servers. The
//! server list changes through `Shared`, which rebuilds that upstream alone; the
//! levers on one server live in its long-lived state. Both outlast file reloads
//! (see `membership`).

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use serde_json::{json, Value};

use crate::config::{Config, MAX_WEIGHT};
use crate::membership::MemberError;
use crate::state::Shared;
use crate::upstream::{Upstream, UpstreamServer};

/// An answer: status and JSON body.
pub(super) type Reply = (StatusCode, Value);

pub(super) fn list(shared: &Shared) -> Reply {
    let snapshot = shared.load();
    let all: Vec<Value> = snapshot
        .upstreams
        .iter()
        .map(|u| upstream_json(u))
        .collect();
    (StatusCode::OK, json!({ "upstreams": all }))
}

pub(super) fn one(shared: &Shared, name: &str) -> Reply {
    match shared.load().upstream(name) {
        Some((_, u)) => (StatusCode::OK, upstream_json(u)),
        None => not_found("no such upstream"),
    }
}

/// `POST …/servers/ADDR/drain|undrain`.
pub(super) fn drain(shared: &Shared, name: &str, addr: &str, drain: bool) -> Reply {
    let snapshot = shared.load();
    let Some(s) = find_server(&snapshot.upstreams, name, addr) else {
        return not_found("no such server");
    };
    s.state.set_drained(drain);
    (StatusCode::OK, server_json(s))
}

/// `PUT …/servers/ADDR/weight` with `{"weight": N}` or `{"weight": null}`.
pub(super) fn weight(shared: &Shared, name: &str, addr: &str, body: &Value) -> Reply {
    let weight = match body.get("weight").unwrap_or(&Value::Null) {
        Value::Null => None,
        Value::Number(n) => match n.as_u64() {
            Some(w) if (1..=u64::from(MAX_WEIGHT)).contains(&w) => Some(w as u32),
            _ => {
                return bad(format!(
                    "weight must be between 1 and {MAX_WEIGHT}, or null"
                ))
            }
        },
        _ => return bad("expected {\"weight\": N} or {\"weight\": null}".to_owned()),
    };
    {
        let snapshot = shared.load();
        let Some(s) = find_server(&snapshot.upstreams, name, addr) else {
            return not_found("no such server");
        };
        s.state.set_weight_override(weight);
    }
    // Balancers precompute from weights: rebuild the upstream.
    match shared.reweigh(name) {
        Ok(u) => match find_server(std::slice::from_ref(&u), name, addr) {
            Some(s) => (StatusCode::OK, server_json(s)),
            None => not_found("no such server"),
        },
        Err(e) => member_error(&e),
    }
}

/// `POST /upstreams/NAME/servers` with a server entry as the file writes one
/// (`{"addr": "10.0.0.5:8080", "weight": 2}`): the upstream's new list. The entry
/// is checked (and a name resolved) on a blocking thread.
pub(super) async fn add(shared: &Arc<Shared>, name: &str, body: Value) -> Reply {
    if shared.load().upstream(name).is_none() {
        return not_found("no such upstream");
    }
    let servers = match tokio::task::spawn_blocking(move || Config::server_entry(body)).await {
        Ok(Ok(s)) => s,
        Ok(Err(problems)) => {
            let errors: Vec<String> = problems
                .iter()
                .map(|p| {
                    if p.path.is_empty() {
                        p.message.clone()
                    } else {
                        format!("{}: {}", p.path, p.message)
                    }
                })
                .collect();
            return (StatusCode::BAD_REQUEST, json!({ "errors": errors }));
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            )
        }
    };
    let mut last = None;
    for s in servers {
        match shared.add_server(name, s) {
            Ok(u) => last = Some(u),
            Err(e) => return member_error(&e),
        }
    }
    match last {
        Some(u) => (StatusCode::OK, upstream_json(&u)),
        None => bad("the entry names no server".to_owned()),
    }
}

/// `DELETE /upstreams/NAME/servers/ADDR`: the upstream's new list.
pub(super) fn remove(shared: &Shared, name: &str, addr: &str) -> Reply {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return bad(format!("{addr:?} is not an ip:port address"));
    };
    match shared.remove_server(name, addr) {
        Ok(u) => (StatusCode::OK, upstream_json(&u)),
        Err(e) => member_error(&e),
    }
}

fn member_error(e: &MemberError) -> Reply {
    let status = match e {
        MemberError::NoUpstream(_) | MemberError::NoServer(_) => StatusCode::NOT_FOUND,
        MemberError::Exists(_) => StatusCode::CONFLICT,
    };
    (status, json!({ "error": e.to_string() }))
}

fn bad(msg: String) -> Reply {
    (StatusCode::BAD_REQUEST, json!({ "error": msg }))
}

fn not_found(what: &str) -> Reply {
    (StatusCode::NOT_FOUND, json!({ "error": what }))
}

fn find_server<'a>(
    upstreams: &'a [Arc<Upstream>],
    name: &str,
    addr: &str,
) -> Option<&'a UpstreamServer> {
    upstreams
        .iter()
        .find(|u| &*u.name == name)?
        .servers
        .iter()
        .find(|s| s.state.addr().to_string() == addr)
}

fn upstream_json(u: &Upstream) -> Value {
    json!({
        "name": &*u.name,
        "queue_length": u.queue.len(),
        "servers": u.servers.iter().map(server_json).collect::<Vec<_>>(),
    })
}

fn server_json(s: &UpstreamServer) -> Value {
    let h = s.state.health_view();
    json!({
        "addr": s.state.addr().to_string(),
        "source": s.source.as_str(),
        "weight": s.weight,
        "weight_override": s.state.weight_override(),
        "backup": s.backup,
        "down": s.down,
        "drained": s.state.drained(),
        "eligible": s.eligible(),
        "active": h.active.as_str(),
        "ejected": h.ejected,
        "ramping": h.ramping,
        "inflight": s.state.inflight(),
        "max_conns": Some(s.state.max_conns()).filter(|&m| m != 0),
        "requests": s.state.requests(),
        "transitions": h.transitions,
    })
}
