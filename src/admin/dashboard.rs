//! The dashboard's model: the time series of the proxy, each upstream and each
//! server (`observe::series`) as columns, their state changes as marks on the
//! time line, and the summary at the top of the page ("is anything wrong?").
//! Served as `/status/series.json` (`?since=SECOND` sends only the seconds after
//! the one the page has) and drawn into `/status` (`status_page`, `charts`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::status::Status;
use crate::control::Control;
use crate::observe::series::{Point, Series, SPAN};
use crate::upstream::Event;

/// The seconds the summary looks back over: long enough that one slow request
/// does not make the p99, short enough to be "now".
pub(crate) const SUMMARY_WINDOW: usize = 10;

/// Certificates expiring sooner than this are flagged: two weeks leaves time for
/// a failed automatic renewal to be noticed and done by hand.
pub(crate) const CERT_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

#[derive(Debug, Serialize)]
pub(crate) struct Dashboard {
    /// The series clock's newest second (pass it back as `since`).
    pub newest: u64,
    /// The first second of the columns below (`newest` − their length + 1).
    pub from: u64,
    /// Unix time of `newest`, for clock labels.
    pub unix: u64,
    /// Seconds the page shows.
    pub span: usize,
    pub summary: Summary,
    /// `summary` as the page shows it, for the page's script to swap in.
    pub summary_html: String,
    pub total: Lines,
    pub upstreams: Vec<UpstreamView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct UpstreamView {
    pub name: String,
    pub servers_up: usize,
    pub lines: Lines,
    /// Membership changes and every server's state changes, oldest first.
    pub events: Vec<Mark>,
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ServerView {
    pub addr: String,
    /// As in `/status.json`: `up`, `down`, `ejected`, `draining`, …
    pub state: &'static str,
    pub lines: Lines,
    pub events: Vec<Mark>,
}

/// A series as columns, one value a second, oldest first.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Lines {
    pub requests: Vec<u32>,
    pub client_errors: Vec<u32>,
    pub upstream_errors: Vec<u32>,
    pub proxy_errors: Vec<u32>,
    pub p50_us: Vec<u32>,
    pub p99_us: Vec<u32>,
    pub inflight: Vec<u32>,
    pub load: Vec<f32>,
}

impl Lines {
    fn of(points: &[Point]) -> Lines {
        let col = |f: fn(&Point) -> u32| points.iter().map(f).collect();
        Lines {
            requests: col(|p| p.requests),
            client_errors: col(|p| p.client_errors),
            upstream_errors: col(|p| p.upstream_errors),
            proxy_errors: col(|p| p.proxy_errors),
            p50_us: col(|p| p.p50_us),
            p99_us: col(|p| p.p99_us),
            inflight: col(|p| p.inflight),
            load: points.iter().map(|p| p.load).collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.requests.len()
    }
}

/// A state change on the time line.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Mark {
    /// Seconds before `newest`'s end.
    pub ago: u64,
    /// UTC, to the second.
    pub at: String,
    pub what: &'static str,
    pub detail: String,
    /// The server it is about, for an upstream's list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// What the top of the page answers: is anything wrong?
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// Requests a second over the last `SUMMARY_WINDOW` seconds.
    pub rate: f64,
    /// Of those, the share answered with a 5xx, in percent.
    pub server_error_percent: f64,
    /// And with a 4xx.
    pub client_error_percent: f64,
    /// The worst second's p99 in that window, in milliseconds.
    pub p99_ms: f64,
    /// Servers not taking traffic: `upstream/addr state`.
    pub not_up: Vec<String>,
    pub servers: usize,
    /// `None`: no reload yet.
    pub last_reload_ok: Option<bool>,
    /// The first line of the last reload's error, when it failed.
    pub reload_error: Option<String>,
    pub certificates: Vec<CertView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CertView {
    pub listener: String,
    pub names: String,
    /// UTC date; `None` when the certificate could not be read.
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    /// Expires within `CERT_WARNING` (or has).
    pub warn: bool,
}

impl Dashboard {
    /// The dashboard of `control`'s proxy; `status` is its status of now,
    /// `since` the newest second the caller has (0: none). `None` without a
    /// board (no metrics, which cannot happen with an admin listener).
    pub(crate) fn collect(control: &Control, status: &Status, since: u64) -> Option<Dashboard> {
        let board = control.shared.metrics.board()?;
        let newest = board.newest();
        let snapshot = control.shared.load();
        let lines = |s: &Series| Lines::of(&s.points(since, newest));
        let now = SystemTime::now();
        let unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mark = |e: &Event, server: Option<String>| Mark {
            ago: now.duration_since(e.at).unwrap_or_default().as_secs(),
            at: humantime::format_rfc3339_seconds(e.at).to_string(),
            what: e.what,
            detail: e.detail.clone(),
            server,
        };
        let mut upstreams = Vec::new();
        for (u, st) in snapshot.upstreams.iter().zip(&status.upstreams) {
            let Some(series) = &u.series else { continue };
            let mut events: Vec<Mark> = series.events().iter().map(|e| mark(e, None)).collect();
            let mut servers = Vec::new();
            for (s, ss) in u.servers.iter().zip(&st.servers) {
                let history = s.state.history();
                let marks: Vec<Mark> = history.iter().map(|e| mark(e, None)).collect();
                events.extend(
                    history
                        .iter()
                        .map(|e| mark(e, Some(s.state.addr().to_string()))),
                );
                servers.push(ServerView {
                    addr: ss.addr.clone(),
                    state: ss.state,
                    lines: s.series.as_deref().map(lines).unwrap_or_default(),
                    events: marks,
                });
            }
            events.sort_by_key(|m| std::cmp::Reverse(m.ago));
            upstreams.push(UpstreamView {
                name: st.name.clone(),
                servers_up: st.servers_up,
                lines: lines(series),
                events,
                servers,
            });
        }
        let total = Lines::of(&board.total().points(since, newest));
        let from = newest + 1 - total.len() as u64;
        let summary = summary(control, status, board.total());
        Some(Dashboard {
            newest,
            from,
            unix,
            span: SPAN,
            summary_html: super::status_page::summary(&summary),
            summary,
            total,
            upstreams,
        })
    }
}

fn summary(control: &Control, status: &Status, total: &Series) -> Summary {
    let newest = control.shared.metrics.board().map_or(0, |b| b.newest());
    let recent = total.points(newest.saturating_sub(SUMMARY_WINDOW as u64), newest);
    let sum = |f: fn(&Point) -> u32| recent.iter().map(|p| u64::from(f(p))).sum::<u64>();
    let requests = sum(|p| p.requests);
    let percent = |n: u64| {
        if requests == 0 {
            0.0
        } else {
            n as f64 * 100.0 / requests as f64
        }
    };
    let not_up: Vec<String> = status
        .upstreams
        .iter()
        .flat_map(|u| {
            u.servers
                .iter()
                .filter(|s| s.state != "up")
                .map(move |s| format!("{}/{} {}", u.name, s.addr, s.state))
        })
        .collect();
    let c = &status.config;
    let last_reload_ok = match (c.reloads_succeeded + c.reloads_failed, &c.last_error) {
        (0, _) => None,
        (_, Some(_)) => Some(false),
        (_, None) => Some(true),
    };
    Summary {
        rate: requests as f64 / SUMMARY_WINDOW as f64,
        server_error_percent: percent(sum(|p| p.upstream_errors + p.proxy_errors)),
        client_error_percent: percent(sum(|p| p.client_errors)),
        p99_ms: f64::from(recent.iter().map(|p| p.p99_us).max().unwrap_or(0)) / 1e3,
        servers: status.upstreams.iter().map(|u| u.servers.len()).sum(),
        not_up,
        last_reload_ok,
        reload_error: c
            .last_error
            .as_deref()
            .and_then(|e| e.lines().next())
            .map(str::to_owned),
        certificates: certificates(control),
    }
}

/// Every listener certificate's expiry.
fn certificates(control: &Control) -> Vec<CertView> {
    let config = control.shared.config();
    let now = SystemTime::now();
    let mut out = Vec::new();
    for l in &config.listeners {
        let Some(tls) = &l.tls else { continue };
        for c in tls.certificates() {
            let end = c.key.cert.first().and_then(|d| not_after(d));
            let left = end.map(|t| match t.duration_since(now) {
                Ok(d) => (d.as_secs() / 86_400) as i64,
                Err(e) => -((e.duration().as_secs() / 86_400) as i64) - 1,
            });
            out.push(CertView {
                listener: l.name.clone(),
                names: c.names.join(", "),
                not_after: end.map(|t| {
                    let s = humantime::format_rfc3339_seconds(t).to_string();
                    s[..10].to_owned()
                }),
                days_left: left,
                warn: end.is_some_and(|t| t < now + CERT_WARNING),
            });
        }
    }
    out
}

// ===== notAfter, read out of the DER =====

/// A certificate's notAfter: the second time of its validity (RFC 5280 §4.1),
/// read by walking the DER without a parser dependency. `None` if malformed.
pub(crate) fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (cert, _) = tlv(der, 0x30)?;
    let (mut tbs, _) = tlv(cert, 0x30)?;
    // [0] version, optional.
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs, 0xa0)?.1;
    }
    let rest = tlv(tbs, 0x02)?.1; // serialNumber
    let rest = tlv(rest, 0x30)?.1; // signature
    let rest = tlv(rest, 0x30)?.1; // issuer
    let (validity, _) = tlv(rest, 0x30)?;
    let after = any_tlv(validity)?.1; // notBefore
    let tag = *after.first()?;
    let (time, _) = tlv(after, tag)?;
    let text = std::str::from_utf8(time).ok()?;
    let text = match tag {
        // UTCTime: YYMMDDHHMMSSZ, years 1950–2049.
        0x17 => {
            let yy: u32 = text.get(..2)?.parse().ok()?;
            format!("{}{text}", if yy < 50 { "20" } else { "19" })
        }
        0x18 => text.to_owned(),
        _ => return None,
    };
    let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (h, mi, s) = (n(8..10)?, n(10..12)?, n(12..14)?);
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The content of the element at the start of `b` if its tag is `tag`, and what
/// follows it.
fn tlv(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *b.first()? != tag {
        return None;
    }
    any_tlv(b)
}

fn any_tlv(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = b
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |a, &x| (a << 8) | usize::from(x));
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((b.get(head..end)?, b.get(end..)?))
}

/// Days since 1970-01-01 of a Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 12, 2), 20_789);
    }

    #[test]
    fn not_after_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let t = not_after(cert.der()).expect("a notAfter");
        assert_eq!(
            humantime::format_rfc3339_seconds(t).to_string(),
            "2031-05-17T00:00:00Z"
        );
        assert_eq!(not_after(b"\x30\x03\x02\x01"), None);
    }
}
