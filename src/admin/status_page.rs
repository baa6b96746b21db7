//! `/status` as a page a person reads at a glance, in the spirit of HAProxy's stats
//! page: one table per upstream, a row per server coloured by state, the reason for
//! the last change next to it. Self-contained (no scripts, fonts or images) and
//! refreshing itself.

use std::fmt::Write as _;

use super::status::{EventStatus, ServerStatus, Status};

/// How often the page reloads itself: fresh enough to watch a failover, slow
/// enough not to be load.
pub(crate) const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:20px}h2{font-size:16px;margin:1.4em 0 .4em}\
table{border-collapse:collapse;margin-bottom:.5em}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.up{background:#d8f5d0}.slow_start,.warming{background:#fff3c4}\
.ejected,.draining{background:#ffe0b8}.down{background:#f8c8c8}\
.marked_down{background:#ddd}.muted{color:#777}";

pub(crate) fn render(s: &Status) -> String {
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>Switchyard status</title><style>{STYLE}</style></head><body>\
         <h1>Switchyard {}</h1><p>up {}, {} · configuration {} (generation {}, reloads: {} ok, {} failed)",
        esc(s.version),
        uptime(s.uptime_seconds),
        if s.ready { "ready" } else { "<b>not ready</b>" },
        esc(&s.config.file),
        s.config.generation,
        s.config.reloads_succeeded,
        s.config.reloads_failed,
    );
    if let Some(e) = &s.config.last_error {
        let _ = write!(h, "<br><b>last reload error:</b> {}", esc(e));
    }
    h.push_str("</p>");

    for u in &s.upstreams {
        let _ = write!(
            h,
            "<h2>upstream {} <span class=\"muted\">· {} · {}/{} up · {}{}</span></h2>",
            esc(&u.name),
            u.balance,
            u.servers_up,
            u.servers.len(),
            u.health_check
                .as_deref()
                .map_or_else(|| "no active checks".to_owned(), esc),
            if u.servers.iter().any(|s| s.max_conns.is_some()) {
                format!(" · {}/{} queued", u.queue_length, u.queue_size)
            } else {
                String::new()
            },
        );
        h.push_str(
            "<table><tr><th>server</th><th>state</th><th>weight</th><th>in flight</th>\
             <th>requests</th><th>errors</th><th>load</th><th>latency</th>\
             <th>ejections</th><th>last check</th><th>last change</th></tr>",
        );
        for srv in &u.servers {
            server_row(&mut h, srv);
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>routes</h2><table><tr><th>name</th><th>listener</th><th>host</th><th>path</th><th>methods</th><th>action</th><th>logged</th></tr>");
    for r in &s.routes {
        let path = if r.exact {
            format!("= {}", r.path)
        } else {
            r.path.clone()
        };
        let action = if r.upstream.is_empty() {
            r.action.to_owned()
        } else {
            format!("upstream {}", r.upstream)
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.name),
            esc(r.listener.as_deref().unwrap_or("all")),
            esc(r.host.as_deref().unwrap_or("any")),
            esc(&path),
            esc(&r.methods.as_ref().map_or("all".to_owned(), |m| m.join(", "))),
            esc(&action),
            if r.access_log { "yes" } else { "no" },
        );
    }
    h.push_str("</table><h2>listeners</h2><table><tr><th>name</th><th>address</th></tr>");
    for l in &s.listeners {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&l.name),
            esc(&l.addr)
        );
    }
    h.push_str("</table>");
    if !s.discovery.is_empty() {
        h.push_str("<h2>discovery</h2><table><tr><th>upstream</th><th>name</th><th>kind</th><th>servers</th><th>last good answer</th><th>last error</th></tr>");
        for d in &s.discovery {
            let good = d.last_good.map_or_else(
                || "never".to_owned(),
                |t| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
                    )
                    .to_string()
                },
            );
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.upstream),
                esc(&d.name),
                d.kind,
                d.servers,
                good,
                d.last_error.as_deref().map_or_else(|| "-".to_owned(), esc),
            );
        }
        h.push_str("</table>");
    }
    for r in &s.rate_limit_stores {
        let _ = write!(
            h,
            "<p>rate-limit store {}: {}, {} replica(s) seen, {} fallback decision(s)</p>",
            esc(&r.address),
            if r.available {
                "answering"
            } else {
                "<b>not answering</b> (limits at this replica's share)"
            },
            r.replicas_seen,
            r.fallbacks
        );
    }
    if let Some(l) = &s.access_log {
        let _ = write!(
            h,
            "<p class=\"muted\">access log: {} ({}), {} line(s) dropped</p>",
            esc(&l.target),
            l.format,
            l.dropped
        );
    }
    h.push_str(
        "<p class=\"muted\">also: /status.json · /metrics · /healthz · /readyz</p></body></html>\n",
    );
    h
}

fn server_row(h: &mut String, s: &ServerStatus) {
    let state = match s.slow_start_percent {
        Some(p) => format!("{} {p}%", s.state),
        None => s.state.to_owned(),
    };
    let backup = if s.backup { " (backup)" } else { "" };
    let latency = s
        .latency_ms
        .map_or_else(|| "–".to_owned(), |ms| format!("{ms:.1} ms"));
    let inflight = match s.max_conns {
        Some(max) => format!("{}/{max}", s.inflight),
        None => s.inflight.to_string(),
    };
    let _ = write!(
        h,
        "<tr class=\"{}\"><td>{}{backup}</td><td>{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{:.3}</td><td class=\"n\">{latency}</td><td class=\"n\">{}</td>\
         <td>{}</td><td>{}</td></tr>",
        s.state,
        esc(&s.addr),
        esc(&state),
        s.weight,
        inflight,
        s.requests,
        s.errors,
        s.load_estimate,
        s.ejections,
        event(s.last_check.as_ref()),
        event(s.last_change.as_ref()),
    );
}

fn event(e: Option<&EventStatus>) -> String {
    match e {
        None => "<span class=\"muted\">–</span>".to_owned(),
        Some(e) if e.detail.is_empty() => format!("{} {} ago", e.what, ago(e.seconds_ago)),
        Some(e) => format!("{} {} ago: {}", e.what, ago(e.seconds_ago), esc(&e.detail)),
    }
}

fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

fn uptime(secs: u64) -> String {
    format!("{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(600), "10m");
        assert_eq!(uptime(3725), "1h02m05s");
    }
}
