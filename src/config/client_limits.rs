//! A listener's limits on each client connection and its requests, under nginx's
//! names: `keepalive_timeout`, `keepalive_requests`, `max_header_size` (nginx's
//! `large_client_header_buffers`, as one total) and `max_body_size` (nginx's
//! `client_max_body_size`, which a route may set too and then overrides the
//! listener's). Types, defaults and their checks live together here; the request
//! path applies them in `server` (the connection) and `pipeline::guard::body_size`.

use std::time::Duration;

use serde::ser::SerializeStruct;

use super::retry::parse_size;
use super::ser;
use super::validate::Checker;

/// nginx's `keepalive_timeout` default: how long an idle keep-alive connection waits
/// for the client's next request before it is closed. Longer than the 60 s most
/// clients keep an idle connection (browsers, Go's and Python's pools idle out
/// sooner), so the client, not the proxy, usually closes first, and a request is
/// never sent on a connection the proxy is closing at that moment.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// nginx's `keepalive_requests` default (since 1.19.10; 100 before): requests one
/// connection carries before the proxy closes it. Closing now and then spreads
/// long-lived clients over the workers and frees what a connection accumulated;
/// at 1000 the cost (one handshake per thousand requests) does not show.
pub const DEFAULT_KEEPALIVE_REQUESTS: u32 = 1000;
/// The largest request head accepted (request line and headers together; on
/// HTTP/2 the decoded header list as RFC 9113 counts it); a larger one gets 431
/// and the connection closes. What the proxy took before the key existed: above
/// nginx's 32 KiB (`large_client_header_buffers 4 8k`), so no head nginx accepts
/// is refused here, with room for large cookies and tokens; HAProxy's whole
/// buffer is 16 KiB. It is also the most the connection buffers for a head.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 64 * 1024;
/// Bounds of `max_header_size`. hyper's smallest read buffer is 8 KiB, and the
/// limit is enforced through that buffer, so less cannot be honoured; above 1 MiB
/// one connection could make the proxy hold more for a head than any client needs.
pub const MIN_MAX_HEADER_SIZE: usize = 8 * 1024;
pub const MAX_MAX_HEADER_SIZE: usize = 1024 * 1024;
/// `max_body_size` when neither the route nor its listener sets one: nginx's
/// `client_max_body_size` default, 1 MiB. The proxy streams bodies, so memory is
/// not the reason for a limit; the expectations of an operator moving from nginx
/// are. Such a configuration is carried over by writing the directives it set:
/// whoever raised `client_max_body_size` for uploads writes `max_body_size` the
/// same, and whoever never set it was protected by 1 MiB without writing a word
/// and keeps that protection. A default of no limit would drop it silently and let
/// any client stream gigabytes into origins that never expected them; a refused
/// upload is loud instead (413, counted as `body_size` in
/// `switchyard_requests_limited_total`) and fixed with one key. HAProxy's users
/// (no limit) meet that 413; `max_body_size = 0` on the listener restores
/// HAProxy's behaviour.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1024 * 1024;

/// The limits a listener puts on its client connections and their requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// How long an idle keep-alive connection waits for its next request; zero:
    /// no keep-alive (one request per connection).
    pub keepalive_timeout: Duration,
    /// Requests one connection carries; the last response says `Connection:
    /// close` (HTTP/1.1) or the connection gets GOAWAY (HTTP/2).
    pub keepalive_requests: u32,
    /// Largest request head, in bytes.
    pub max_header_size: usize,
    /// Largest request body, for the routes that set none; 0: no limit.
    pub max_body_size: u64,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            keepalive_requests: DEFAULT_KEEPALIVE_REQUESTS,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
        }
    }
}

/// The raw keys, as `RawListener` has them.
pub(super) struct RawLimits<'a> {
    pub keepalive_timeout: Option<&'a str>,
    pub keepalive_requests: Option<u32>,
    pub max_header_size: Option<&'a toml::Value>,
    pub max_body_size: Option<&'a toml::Value>,
}

/// Checks a listener's limit keys; each problem at `base.KEY`.
pub(super) fn check_listener(c: &mut Checker, base: &str, raw: RawLimits<'_>) -> ListenerLimits {
    let d = ListenerLimits::default();
    let keepalive_timeout = c.duration_or_zero(
        &format!("{base}.keepalive_timeout"),
        raw.keepalive_timeout,
        d.keepalive_timeout,
    );
    let keepalive_requests = match raw.keepalive_requests {
        None => d.keepalive_requests,
        Some(0) => {
            c.err(
                format!("{base}.keepalive_requests"),
                "must be at least 1 (keepalive_timeout = \"0s\" turns keep-alive off)",
            );
            d.keepalive_requests
        }
        Some(n) => n,
    };
    let max_header_size = match raw.max_header_size {
        None => d.max_header_size,
        Some(v) => match parse_size(v).map(usize::try_from) {
            Some(Ok(n)) if (MIN_MAX_HEADER_SIZE..=MAX_MAX_HEADER_SIZE).contains(&n) => n,
            _ => {
                c.err(
                    format!("{base}.max_header_size"),
                    format!("expected a size from 8KiB to 1MiB such as \"64KiB\", got {v}"),
                );
                d.max_header_size
            }
        },
    };
    let max_body_size = raw.max_body_size.map_or(d.max_body_size, |v| {
        body_size(c, &format!("{base}.max_body_size"), v).unwrap_or(d.max_body_size)
    });
    ListenerLimits {
        keepalive_timeout,
        keepalive_requests,
        max_header_size,
        max_body_size,
    }
}

/// `max_body_size`: a size as `"10MiB"`, `"1g"` or a byte count; 0 is no limit.
pub(super) fn body_size(c: &mut Checker, path: &str, v: &toml::Value) -> Option<u64> {
    let n = parse_size(v);
    if n.is_none() {
        c.err(
            path,
            format!(
                "expected a size such as \"10MiB\", \"1g\" or a byte count (0: no limit), got {v}"
            ),
        );
    }
    n
}

impl ListenerLimits {
    /// Writes the keys into the listener's table (`ListenerConfig`'s serialiser).
    pub(super) fn serialize_into<M: SerializeStruct>(&self, m: &mut M) -> Result<(), M::Error> {
        m.serialize_field("keepalive_timeout", &ser::Dur(self.keepalive_timeout))?;
        m.serialize_field("keepalive_requests", &self.keepalive_requests)?;
        m.serialize_field("max_header_size", &ser::Size(self.max_header_size as u64))?;
        m.serialize_field("max_body_size", &ser::Size(self.max_body_size))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::validate::validate;
    use super::*;

    fn listener(keys: &str) -> String {
        format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n{keys}\n\
             [[route]]\nupstream = \"api\"\n\
             [upstream.api]\nservers = [{{ addr = \"127.0.0.1:9001\" }}]\n"
        )
    }

    #[test]
    fn defaults_are_nginx_s() {
        let c = validate(&listener(""), Path::new("t.toml")).unwrap();
        let l = c.listeners[0].limits;
        assert_eq!(l, ListenerLimits::default());
        assert_eq!(l.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(l.keepalive_requests, 1000);
        assert_eq!(l.max_body_size, 1 << 20);
        assert_eq!(c.routes[0].max_body_size, None);
    }

    #[test]
    fn values_and_zero() {
        let c = validate(
            &listener(
                "keepalive_timeout = \"0s\"\nkeepalive_requests = 1\n\
                 max_header_size = \"16KiB\"\nmax_body_size = \"1g\"\n",
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        let l = c.listeners[0].limits;
        assert_eq!(l.keepalive_timeout, Duration::ZERO);
        assert_eq!(l.keepalive_requests, 1);
        assert_eq!(l.max_header_size, 16 * 1024);
        assert_eq!(l.max_body_size, 1 << 30);
    }

    #[test]
    fn every_problem_has_its_key() {
        let text = listener(
            "keepalive_timeout = \"soon\"\nkeepalive_requests = 0\n\
             max_header_size = \"1k\"\nmax_body_size = \"lots\"\n",
        )
        .replace(
            "upstream = \"api\"\n",
            "upstream = \"api\"\nmax_body_size = -1\n",
        );
        let p = validate(&text, Path::new("t.toml")).expect_err("problems");
        let has = |key: &str, part: &str| {
            assert!(
                p.iter().any(|x| x.path == key && x.message.contains(part)),
                "no {key}: …{part}… in {p:#?}"
            )
        };
        has("listener[0].keepalive_timeout", "invalid duration");
        has("listener[0].keepalive_requests", "at least 1");
        has("listener[0].max_header_size", "from 8KiB to 1MiB");
        has("listener[0].max_body_size", "(0: no limit)");
        has("route[0].max_body_size", "(0: no limit)");
        assert_eq!(p.len(), 5, "{p:#?}");
    }

    #[test]
    fn a_reload_diff_names_the_keys() {
        let parse = |t: &str| validate(t, Path::new("t.toml")).unwrap();
        let old = parse(&listener(""));
        let new = parse(
            &listener("keepalive_timeout = \"30s\"\nmax_body_size = \"10MiB\"\n").replace(
                "upstream = \"api\"\n",
                "upstream = \"api\"\nmax_body_size = 0\n",
            ),
        );
        let changes: Vec<String> = super::super::diff(&old, &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            [
                "changed listener public: keepalive_timeout 1m 15s → 30s",
                "changed listener public: max_body_size 1MiB → 10MiB",
                "changed route[0] (path /): max_body_size the listener's → 0",
            ]
        );
    }
}
