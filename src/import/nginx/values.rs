//! nginx values as Switchyard keys: headers, retry conditions, limit and hash
//! keys, addresses, listener names.

use ipnet::IpNet;
use std::net::IpAddr;

use super::parse::Directive;
use super::units::template;

/// What a `proxy_set_header` becomes.
pub(super) enum HeaderOut {
    Set(String),
    Builtin(String),
    Drop(String),
}

pub(super) fn header(name: &str, value: &str, server_name: &str, proxy_host: &str) -> HeaderOut {
    let lower = name.to_ascii_lowercase();
    let v = value.trim();
    let builtin = |m: &str| HeaderOut::Builtin(m.to_owned());
    match (lower.as_str(), v) {
        ("x-real-ip", "$remote_addr") => return builtin("the proxy sets X-Real-IP to the client address itself"),
        ("x-forwarded-for", "$proxy_add_x_forwarded_for") => {
            return builtin("the proxy appends the peer's address to X-Forwarded-For itself (nginx appends $remote_addr, which differs only with set_real_ip_from)")
        }
        ("x-forwarded-proto", "$scheme") => return builtin("the proxy sets X-Forwarded-Proto itself"),
        ("x-forwarded-host", "$host") => return builtin("the proxy sets X-Forwarded-Host ($host) itself"),
        ("host", "$http_host") => return builtin("the client's Host is passed on unchanged"),
        ("connection", "") => return builtin("connections to upstreams are kept alive"),
        ("connection", "$connection_upgrade") | ("connection", "upgrade") | ("connection", "Upgrade") | ("upgrade", "$http_upgrade") => {
            return builtin("protocol switches (WebSocket) are passed through by themselves")
        }
        _ => {}
    }
    if let Some(h) = v.strip_prefix("$http_") {
        if h.replace('_', "-").eq_ignore_ascii_case(name) {
            return builtin("the client's header is passed on unchanged");
        }
    }
    if matches!(
        lower.as_str(),
        "connection" | "upgrade" | "te" | "keep-alive" | "transfer-encoding"
    ) {
        return HeaderOut::Drop(format!(
            "{name} is a hop-by-hop header the proxy manages; not carried over"
        ));
    }
    match template(value, &[("server_name", server_name), ("proxy_host", proxy_host)]) {
        Ok(t) => HeaderOut::Set(t),
        Err(vars) => HeaderOut::Drop(format!(
            "set_headers may use $remote_addr, $host, $scheme, $request_uri, $uri, $args, $is_args, $request_id, not {}; not carried over",
            vars.join(", ")
        )),
    }
}

/// proxy_next_upstream's list: (Switchyard's names, nginx's it has not).
pub(super) fn next_upstream(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for a in args {
        match a.as_str() {
            "error" | "timeout" | "http_500" | "http_502" | "http_503" | "http_504"
            | "http_429" | "non_idempotent" => ok.push(a.clone()),
            "off" => bad.push("off (even failed connects are retried here)".to_owned()),
            other => bad.push(other.to_owned()),
        }
    }
    (ok, bad)
}

/// The zone a limit_req/limit_conn names.
pub(super) fn zone_of(d: &Directive) -> Option<String> {
    match d.name.as_str() {
        "limit_req" => d
            .args
            .iter()
            .find_map(|a| a.strip_prefix("zone="))
            .map(str::to_owned),
        _ => d.args.first().cloned(),
    }
}

/// A limit's key from nginx's.
pub(super) fn limit_key(k: &str) -> Option<String> {
    match k {
        "$binary_remote_addr" | "$remote_addr" => Some("client_ip".into()),
        _ => {
            if let Some(h) = k.strip_prefix("$http_") {
                Some(format!("header:{}", header_name(h)))
            } else {
                k.strip_prefix("$cookie_").map(|c| format!("cookie:{c}"))
            }
        }
    }
}

/// `hash KEY`'s key.
pub(super) fn hash_key(k: &str) -> Option<String> {
    match k {
        "$remote_addr" | "$binary_remote_addr" => Some("client_ip".into()),
        "$request_uri" => Some("uri".into()),
        "$uri" => Some("path".into()),
        _ => {
            if let Some(h) = k.strip_prefix("$http_") {
                Some(format!("header:{}", header_name(h)))
            } else if let Some(c) = k.strip_prefix("$cookie_") {
                Some(format!("cookie:{c}"))
            } else {
                k.strip_prefix("$arg_").map(|a| format!("query:{a}"))
            }
        }
    }
}

/// `x_api_key` → `X-Api-Key`.
pub(super) fn header_name(h: &str) -> String {
    h.split('_')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// `host` → `host:port` when it has none.
pub(super) fn with_port(a: &str, port: u16) -> String {
    if a.starts_with('[') {
        if a.contains("]:") {
            a.to_owned()
        } else {
            format!("{a}:{port}")
        }
    } else if a.contains(':') {
        a.to_owned()
    } else {
        format!("{a}:{port}")
    }
}

/// An address block as nginx writes it (bits past the length are dropped, as
/// nginx does with a warning).
pub(super) fn parse_net(a: &str) -> Option<IpNet> {
    if let Ok(n) = a.parse::<IpNet>() {
        return Some(n.trunc());
    }
    a.parse::<IpAddr>().ok().map(IpNet::from)
}

pub(super) fn show_net(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Listener names: "http" for :80, "https" for :443, else "port_N" (with the
/// address when a port is used twice).
pub(super) fn listener_names(addrs: &[String]) -> Vec<String> {
    let port = |a: &String| a.rsplit_once(':').map_or("", |(_, p)| p).to_owned();
    addrs
        .iter()
        .map(|a| {
            let p = port(a);
            let shared = addrs.iter().filter(|b| port(b) == p).count() > 1;
            let base = match p.as_str() {
                "80" => "http".to_owned(),
                "443" => "https".to_owned(),
                p => format!("port_{p}"),
            };
            if shared {
                let host: String = a
                    .rsplit_once(':')
                    .map_or("", |(h, _)| h)
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                format!("{base}_{}", host.trim_matches('_'))
            } else {
                base
            }
        })
        .collect()
}
