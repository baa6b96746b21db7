//! `/status` as a page a person reads at a glance. At the top, whether anything
//! is wrong (`summary`): traffic, errors and p99 of the last seconds, servers not
//! up, the last reload, certificates near expiry. Then per upstream and server the
//! last 15 minutes as charts (`charts`) with state changes marked on the time
//! line and listed with their reasons, and the tables of HAProxy's stats page:
//! one per upstream, a row per server coloured by state, the reason for the last
//! change next to it.
//!
//! Self-contained: no fonts, images or external scripts. A small inline script
//! polls `/status/series.json` and redraws the charts in place; without it the
//! charts show the values as served and the page reloads itself instead. State is
//! always written out, so the page reads without colour, and its blocks stack
//! in a phone-width window.

use std::fmt::Write as _;

use super::charts;
use super::dashboard::{Dashboard, Mark, Summary};
use super::status::{EventStatus, ServerStatus, Status};

/// How often the page refreshes: fresh enough to watch a failover, slow enough
/// not to be load (the script asks for the new seconds only).
pub(crate) const REFRESH_SECONDS: u32 = 5;

/// State changes listed in text under an upstream's charts (all are marked).
const EVENTS_LISTED: usize = 12;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1em;color:#222;max-width:1400px}\
h1{font-size:20px;margin:.2em 0}h2{font-size:16px;margin:1.4em 0 .4em}h3{font-size:14px;margin:.8em 0 .2em}\
table{border-collapse:collapse;margin-bottom:.5em}.scroll{overflow-x:auto}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.up{background:#d8f5d0}.slow_start,.warming{background:#fff3c4}\
.ejected,.draining{background:#ffe0b8}.down{background:#f8c8c8}\
.marked_down{background:#ddd}.muted{color:#666}\
.sum{display:flex;flex-wrap:wrap;gap:.5em}.kpi{border:1px solid #ccc;border-radius:4px;padding:.3em .7em;min-width:7em}\
.kpi span{display:block;font-size:12px;color:#555}.kpi b{font-size:18px}.kpi.bad{border:2px solid #c00;background:#fde8e8}\
.verdict{font-size:16px;margin:.5em 0}.bad-t{color:#a00;font-weight:bold}\
.row{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:.6em}\
figure{margin:0;border:1px solid #ddd;border-radius:4px;padding:.2em .4em}figcaption{font-size:12px}\
svg{display:block;width:100%;height:64px;background:#fafafa}\
polyline{fill:none;stroke-width:1.5}.l0{stroke:#1f5fbf}.l1{stroke:#c0392b;stroke-dasharray:5 3}.l2{stroke:#8e6c00;stroke-dasharray:1 3}\
span.l0,span.l1,span.l2{border-bottom:2px solid;padding:0 2px}span.l1{border-bottom-style:dashed}span.l2{border-bottom-style:dotted}\
line.m{stroke-width:1;stroke:#888}line.bad{stroke:#c00}line.good{stroke:#2a2}\
.srv{border-left:3px solid #ccc;padding-left:.6em;margin:.6em 0}.st{padding:0 .4em;border:1px solid #999;border-radius:3px}\
ul.ev{margin:.3em 0;padding-left:1.2em;font-size:13px}\
.ax{display:flex;justify-content:space-between;font-size:10px;color:#666}";

/// Polls `/status/series.json?since=N`, appends the new seconds and redraws every
/// chart as `charts` drew it; updates the summary, server states and marks.
/// Ignores failures (the next poll tries again).
const SCRIPT: &str = r#"(function(){
var W=300,H=60,data=null,keys=null,every=REFRESH*1000;
function add(a,b){return a.map(function(x,i){return x+b[i]})}
function ms(a){return a.map(function(x){return x/1e3})}
var SPEC={traffic:[[function(l){return l.requests},0,0],[function(l){return add(l.upstream_errors,l.proxy_errors)},0,0],[function(l){return l.client_errors},0,0]],
latency:[[function(l){return ms(l.p99_us)},1,0],[function(l){return ms(l.p50_us)},0,0]],
load:[[function(l){return l.inflight},1,0],[function(l){return l.load},0,1]]};
function num(v){return v>=100||v==0?v.toFixed(0):v>=10?v.toFixed(1):v.toFixed(2)}
function esc(s){return String(s).replace(/[&<>"']/g,function(c){return '&#'+c.charCodeAt(0)+';'})}
function cols(v,max,span){var per=Math.max(1,Math.floor(span/W)),pad=span-v.length,out=[];
for(var c=0;c<W;c++){var a=0;for(var s=c*per;s<(c+1)*per;s++){var i=s-pad;if(i<0||i>=v.length)continue;a=max?Math.max(a,v[i]):a+v[i]}out.push(max?a:a/per)}return out}
function pts(c,max){var ys=c.map(function(v){v=max>0?v/max:0;return Math.round((H-2-v*(H-4))*10)/10}),out=[];
for(var x=0;x<ys.length;x++){if(x>0&&x+1<ys.length&&ys[x-1]==ys[x]&&ys[x+1]==ys[x])continue;out.push(x+','+ys[x])}return out.join(' ')}
function marks(ms,span){var per=Math.max(1,Math.floor(span/W));return ms.filter(function(m){return m.ago<span}).map(function(m){var x=W-Math.floor(m.ago/per);
return '<line class="m '+cls(m.what)+'" x1="'+x+'" x2="'+x+'" y1="0" y2="'+H+'" vector-effect="non-scaling-stroke"><title>'+esc(m.at+' '+m.what+': '+m.detail)+'</title></line>'}).join('')}
function cls(w){return /^(down|ejected|removed|drained)$/.test(w)?'bad':/^(up|restored|ramped|added|discovered|undrained)$/.test(w)?'good':'other'}
function index(d){var m={total:{lines:d.total,marks:[]}};d.upstreams.forEach(function(u){m['u:'+u.name]={lines:u.lines,marks:u.events};
u.servers.forEach(function(s){m['s:'+u.name+'/'+s.addr]={lines:s.lines,marks:s.events,state:s.state}})});return m}
function merge(d){var m=index(d),ks=Object.keys(m).sort().join('|');
if(data&&ks==keys&&d.from==data.newest+1){for(var k in m){var o=data.m[k].lines,n=m[k].lines;for(var f in n){o[f]=o[f].concat(n[f]).slice(-d.span)}
data.m[k].marks=m[k].marks;data.m[k].state=m[k].state}data.newest=d.newest}else{data={m:m,newest:d.newest};keys=ks}data.span=d.span}
function draw(){document.querySelectorAll('.row[data-key]').forEach(function(row){var e=data.m[row.getAttribute('data-key')];if(!e)return;
row.querySelectorAll('figure[data-chart]').forEach(function(fig){var spec=SPEC[fig.getAttribute('data-chart')],vals=spec.map(function(s){return s[0](e.lines)}),
cs=vals.map(function(v,i){return cols(v,spec[i][1],data.span)}),top=[0,0];cs.forEach(function(c,i){c.forEach(function(v){top[spec[i][2]]=Math.max(top[spec[i][2]],v)})});
var lines=fig.querySelectorAll('polyline');cs.forEach(function(c,i){lines[i].setAttribute('points',pts(c,top[spec[i][2]]));
var v=vals[i],t=fig.querySelector('.v'+i);if(t)t.textContent=num(v.length?v[v.length-1]:0)});
fig.querySelector('.top').textContent=num(top[0]);fig.querySelector('g.marks').innerHTML=marks(e.marks,data.span)});
var st=row.parentNode.querySelector('.st');if(st&&e.state){st.textContent=e.state;st.className='st '+e.state}})}
function poll(){var since=data?data.newest:0;fetch('/status/series.json'+(since?'?since='+since:''),{cache:'no-store'}).then(function(r){return r.json()}).then(function(d){
var before=keys;merge(d);if(before&&keys!=before&&!document.querySelector('[data-key="'+Object.keys(index(d)).pop()+'"]')){location.reload();return}
draw();var s=document.getElementById('summary');if(s&&d.summary_html)s.outerHTML=d.summary_html;
document.documentElement.setAttribute('data-live',String(d.newest))}).catch(function(){}).then(function(){setTimeout(poll,every)})}
poll()})();"#;

pub(crate) fn render(s: &Status, d: Option<&Dashboard>) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\"></noscript>\
         <title>Switchyard status</title><style>{STYLE}</style></head><body>\
         <h1>Switchyard {}</h1><p class=\"muted\">up {}, {} · configuration {} (generation {}, reloads: {} ok, {} failed)</p>",
        esc(s.version),
        uptime(s.uptime_seconds),
        if s.ready { "ready" } else { "<b>not ready</b>" },
        esc(&s.config.file),
        s.config.generation,
        s.config.reloads_succeeded,
        s.config.reloads_failed,
    );
    if let Some(d) = d {
        h.push_str(&summary(&d.summary));
        h.push_str("<h2>all traffic</h2>");
        charts::row(&mut h, "total", &d.total, &[], d.span);
    } else if let Some(e) = &s.config.last_error {
        let _ = write!(h, "<p><b>last reload error:</b> {}</p>", esc(e));
    }

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
        let view = d.and_then(|d| {
            d.upstreams
                .iter()
                .find(|v| v.name == u.name)
                .map(|v| (d, v))
        });
        if let Some((d, v)) = view {
            charts::row(
                &mut h,
                &format!("u:{}", u.name),
                &v.lines,
                &v.events,
                d.span,
            );
            events(&mut h, &v.events);
            for sv in &v.servers {
                let _ = write!(
                    h,
                    "<div class=\"srv\"><h3>{} <span class=\"st {}\">{}</span></h3>",
                    esc(&sv.addr),
                    sv.state,
                    sv.state
                );
                charts::row(
                    &mut h,
                    &format!("s:{}/{}", u.name, sv.addr),
                    &sv.lines,
                    &sv.events,
                    d.span,
                );
                h.push_str("</div>");
            }
        }
        h.push_str(
            "<div class=\"scroll\"><table><tr><th>server</th><th>state</th><th>weight</th><th>in flight</th>\
             <th>requests</th><th>errors</th><th>load</th><th>latency</th>\
             <th>ejections</th><th>last check</th><th>last change</th></tr>",
        );
        for srv in &u.servers {
            server_row(&mut h, srv);
        }
        h.push_str("</table></div>");
    }

    h.push_str("<h2>routes</h2><div class=\"scroll\"><table><tr><th>name</th><th>listener</th><th>host</th><th>path</th><th>methods</th><th>action</th><th>logged</th></tr>");
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
    h.push_str("</table></div><h2>listeners</h2><table><tr><th>name</th><th>address</th></tr>");
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
        "<p class=\"muted\">also: /status.json · /status/series.json · /metrics · /healthz · /readyz</p>",
    );
    if d.is_some() {
        let _ = write!(h, "<script>var REFRESH={REFRESH_SECONDS};{SCRIPT}</script>");
    }
    h.push_str("</body></html>\n");
    h
}

/// The block at the top: one line of verdict, the figures behind it, and what
/// needs a look (servers not up, a failed reload, certificates near expiry).
/// Also sent in `/status/series.json` (`summary_html`) for the script to swap in.
pub(crate) fn summary(s: &Summary) -> String {
    let mut h = String::with_capacity(2048);
    let up = s.servers - s.not_up.len();
    let failed_reload = s.last_reload_ok == Some(false);
    let expiring = s.certificates.iter().filter(|c| c.warn).count();
    let wrong =
        !s.not_up.is_empty() || s.server_error_percent > 0.0 || failed_reload || expiring > 0;
    let _ = write!(
        h,
        "<div id=\"summary\"><p class=\"verdict\">{}</p><div class=\"sum\">",
        if wrong {
            "<span class=\"bad-t\">⚠ Attention:</span> something below needs a look."
        } else {
            "✓ All well: every server up, no 5xx in the last 10 s."
        }
    );
    let kpi = |h: &mut String, bad: bool, label: &str, value: String| {
        let _ = write!(
            h,
            "<div class=\"kpi{}\"><span>{label}</span><b>{value}</b></div>",
            if bad { " bad" } else { "" }
        );
    };
    kpi(&mut h, false, "requests/s (10 s)", charts::num(s.rate));
    kpi(
        &mut h,
        s.server_error_percent > 0.0,
        "5xx",
        format!("{} %", charts::num(s.server_error_percent)),
    );
    kpi(
        &mut h,
        false,
        "4xx",
        format!("{} %", charts::num(s.client_error_percent)),
    );
    kpi(
        &mut h,
        false,
        "p99 (worst second)",
        format!("{} ms", charts::num(s.p99_ms)),
    );
    kpi(
        &mut h,
        !s.not_up.is_empty(),
        "servers up",
        format!("{up} of {}", s.servers),
    );
    kpi(
        &mut h,
        failed_reload,
        "last reload",
        match s.last_reload_ok {
            None => "none yet".to_owned(),
            Some(true) => "ok".to_owned(),
            Some(false) => "FAILED".to_owned(),
        },
    );
    h.push_str("</div>");
    if !s.not_up.is_empty() {
        let _ = write!(h, "<p><b>not up:</b> {}</p>", esc(&s.not_up.join(" · ")));
    }
    if let Some(e) = &s.reload_error {
        let _ = write!(h, "<p><b>last reload failed:</b> {}</p>", esc(e));
    }
    for c in &s.certificates {
        let when = match (&c.not_after, c.days_left) {
            (Some(at), Some(days)) if days < 0 => format!("EXPIRED on {at}"),
            (Some(at), Some(days)) => format!("expires {at} (in {days} days)"),
            _ => "expiry unknown".to_owned(),
        };
        let _ = write!(
            h,
            "<p>{}certificate of listener {} ({}): {}</p>",
            if c.warn {
                "<b class=\"bad-t\">⚠ WARNING</b> "
            } else {
                ""
            },
            esc(&c.listener),
            esc(&c.names),
            when
        );
    }
    h.push_str("</div>");
    h
}

/// An upstream's latest state changes in text, newest first.
fn events(h: &mut String, marks: &[Mark]) {
    if marks.is_empty() {
        return;
    }
    h.push_str("<ul class=\"ev\">");
    for m in marks.iter().rev().take(EVENTS_LISTED) {
        let _ = write!(
            h,
            "<li>{} ago ({}) · {}{} · {}</li>",
            ago(m.ago),
            esc(&m.at),
            m.server
                .as_deref()
                .map(|s| format!("{} ", esc(s)))
                .unwrap_or_default(),
            m.what,
            esc(&m.detail)
        );
    }
    h.push_str("</ul>");
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
pub(crate) fn esc(s: &str) -> String {
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
    fn the_summary_says_what_is_wrong_in_words() {
        use super::super::dashboard::CertView;
        let mut s = Summary {
            rate: 12.5,
            server_error_percent: 0.0,
            client_error_percent: 0.0,
            p99_ms: 3.0,
            not_up: vec![],
            servers: 2,
            last_reload_ok: Some(true),
            reload_error: None,
            certificates: vec![CertView {
                listener: "public".into(),
                names: "a.test".into(),
                not_after: Some("2027-06-01".into()),
                days_left: Some(180),
                warn: false,
            }],
        };
        let h = summary(&s);
        assert!(h.contains("All well"), "{h}");
        assert!(h.contains("expires 2027-06-01 (in 180 days)"), "{h}");
        assert!(!h.contains("WARNING"));
        s.not_up = vec!["u/127.0.0.1:1 down".into()];
        s.last_reload_ok = Some(false);
        s.reload_error = Some("t.toml:3: unknown key".into());
        s.certificates[0].days_left = Some(5);
        s.certificates[0].warn = true;
        let h = summary(&s);
        assert!(h.contains("Attention"), "{h}");
        assert!(h.contains("1 of 2"));
        assert!(h.contains("u/127.0.0.1:1 down"));
        assert!(h.contains("FAILED") && h.contains("t.toml:3: unknown key"));
        assert!(h.contains("WARNING") && h.contains("in 5 days"), "{h}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(600), "10m");
        assert_eq!(uptime(3725), "1h02m05s");
    }
}
