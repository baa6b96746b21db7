//! An Ingress's annotations: the ingress-nginx ones Switchyard has keys for become
//! `Settings` (applied to every route and upstream the Ingress makes, as
//! ingress-nginx applies them to every location of the Ingress); every other one
//! is noted with its line. ingress-nginx's defaults where Switchyard's differ are
//! written out (`DEFAULT_CONNECT_TIMEOUT`, the 503 of its limits).

use std::collections::BTreeMap;
use std::path::Path;

use ipnet::IpNet;

use super::super::{out, Carried, Imported, Origin};
use super::yaml::{self, Node};

/// ingress-nginx's annotation prefix (its `--annotations-prefix` default).
pub(crate) const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// ingress-nginx's `proxy-connect-timeout` default (5 s); Switchyard's is nginx's
/// 60 s, so every route says 5 s unless the annotation says otherwise.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: &str = "5s";

/// ingress-nginx's `limit-req-status-code` and `limit-conn-status-code` default:
/// a refused request gets 503, not Switchyard's 429.
const LIMIT_STATUS: i64 = 503;

/// ingress-nginx's `limit-burst-multiplier` default.
const DEFAULT_BURST_MULTIPLIER: i64 = 5;

/// ingress-nginx's `session-cookie-name` default.
const DEFAULT_COOKIE: &str = "INGRESSCOOKIE";

/// What an Ingress's annotations ask for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// `balance` and `hash_key` of its upstreams.
    pub(crate) balance: Option<(String, Option<String>)>,
    pub(crate) sticky: Option<toml::Value>,
    /// `protocol` and `tls` of its upstreams (backend-protocol).
    pub(crate) protocol: Option<&'static str>,
    pub(crate) upstream_tls: bool,
    /// service-upstream: ingress-nginx itself sends to the ClusterIP.
    pub(crate) service_upstream: bool,
    /// Route keys, in order.
    pub(crate) route: Vec<(String, toml::Value, Option<String>)>,
    /// ssl-redirect (default true: only where the host has TLS).
    pub(crate) ssl_redirect: bool,
    pub(crate) force_ssl_redirect: bool,
    /// Where the rate or connection limits were written: they count per route
    /// here, per Ingress in ingress-nginx.
    pub(crate) limits_at: Option<Origin>,
    /// Whether any upstream-side balancing was asked for (makes a ClusterIP
    /// Service's single address matter).
    pub(crate) balances: bool,
    /// `canary: "true"`: the Ingress only takes a share of another's traffic.
    pub(crate) canary: bool,
    /// use-regex or rewrite-target: ingress-nginx makes every path of the
    /// Ingress a case-insensitive regular expression location.
    pub(crate) regex: bool,
}

impl Settings {
    /// The part that makes two upstreams of one Service differ.
    pub(crate) fn upstream_key(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{}",
            self.balance, self.sticky, self.protocol, self.upstream_tls
        )
    }
}

/// One annotation as written.
struct Ann {
    value: String,
    at: Origin,
    used: bool,
}

/// Reads the annotations of `meta` (an Ingress's metadata), noting what is not
/// carried.
pub(crate) fn read(out: &mut Imported, file: &Path, meta: Option<&Node>) -> Settings {
    let mut anns: BTreeMap<String, Ann> = BTreeMap::new();
    let mut order = Vec::new();
    for (k, kn, v) in yaml::entries(meta.and_then(|m| yaml::get(m, "annotations"))) {
        // The class is checked with the IngressClasses (mod.rs).
        if k == "kubernetes.io/ingress.class" {
            continue;
        }
        let at = Origin {
            file: file.to_owned(),
            line: yaml::line(kn),
        };
        order.push(k.clone());
        anns.insert(
            k,
            Ann {
                value: yaml::text(v).unwrap_or_default(),
                at,
                used: false,
            },
        );
    }
    let mut r = Reader {
        out,
        anns,
        s: Settings {
            ssl_redirect: true,
            ..Settings::default()
        },
    };
    r.balancing();
    r.timeouts();
    r.body_size();
    r.access();
    r.limits();
    r.redirects();
    r.protocol();
    r.s.canary = r
        .anns
        .get(&format!("{PREFIX}canary"))
        .is_some_and(|a| a.value.trim() == "true");
    r.s.regex = r
        .anns
        .get(&format!("{PREFIX}use-regex"))
        .is_some_and(|a| a.value.trim() == "true")
        || r.anns.contains_key(&format!("{PREFIX}rewrite-target"));
    for k in order {
        let a = &r.anns[&k];
        if !a.used {
            let (carried, msg) = other(&k);
            let at = a.at.clone();
            r.out.note(&at, k, carried, msg);
        }
    }
    r.s
}

struct Reader<'a> {
    out: &'a mut Imported,
    anns: BTreeMap<String, Ann>,
    s: Settings,
}

impl Reader<'_> {
    /// The value and place of `nginx.ingress.kubernetes.io/NAME`, marked read.
    fn take(&mut self, name: &str) -> Option<(String, Origin)> {
        let a = self.anns.get_mut(&format!("{PREFIX}{name}"))?;
        a.used = true;
        Some((a.value.trim().to_owned(), a.at.clone()))
    }

    fn note(&mut self, at: &Origin, name: &str, carried: Carried, msg: impl Into<String>) {
        self.out.note(at, format!("{PREFIX}{name}"), carried, msg);
    }

    /// An integer annotation; a bad one is noted and ignored, as ingress-nginx
    /// ignores it (its default applies).
    fn int(&mut self, name: &str) -> Option<(i64, Origin)> {
        let (v, at) = self.take(name)?;
        match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some((n, at)),
            _ => {
                self.note(
                    &at,
                    name,
                    Carried::Dropped,
                    format!("{v:?} is not a whole number: ingress-nginx ignores it (its default applies), and so does the import"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) -> Option<(bool, Origin)> {
        let (v, at) = self.take(name)?;
        match v.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some((true, at)),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some((false, at)),
            _ => {
                self.note(
                    &at,
                    name,
                    Carried::Dropped,
                    format!("{v:?} is not true or false: ingress-nginx ignores it, and so does the import"),
                );
                None
            }
        }
    }

    fn route_key(&mut self, key: &str, v: impl Into<toml::Value>, comment: String) {
        self.s.route.push((key.to_owned(), v.into(), Some(comment)));
    }

    /// affinity, then upstream-hash-by, then load-balance: ingress-nginx's Lua
    /// balancer takes the first of them that is set.
    fn balancing(&mut self) {
        let affinity = self.take("affinity");
        let hash = self.take("upstream-hash-by");
        let lb = self.take("load-balance");
        let cookie_name = self.take("session-cookie-name");
        let max_age = self.int("session-cookie-max-age");
        let expires = self.int("session-cookie-expires");
        let mode = self.take("affinity-mode");
        if let Some((a, at)) = &affinity {
            if a == "cookie" {
                let cookie = cookie_name
                    .as_ref()
                    .map_or(DEFAULT_COOKIE.to_owned(), |(n, _)| n.clone());
                let ttl = max_age.as_ref().or(expires.as_ref()).map(|(n, _)| *n);
                let mut pairs = vec![("cookie", toml::Value::from(cookie))];
                if let Some(ttl) = ttl {
                    pairs.push(("ttl", toml::Value::from(format!("{ttl}s"))));
                } else {
                    self.note(at, "affinity", Carried::Approximate,
                        "sticky cookie with Switchyard's 1h lifetime: ingress-nginx sets a session cookie (no session-cookie-max-age or -expires), which Switchyard has no form of; set sticky.ttl to what fits");
                }
                self.s.sticky = Some(out::table(pairs));
                self.s.balances = true;
                self.note(at, "affinity", Carried::Approximate,
                    "cookie affinity → sticky: requests with the cookie go to its server while it is eligible, as in ingress-nginx; a new session's server is picked round-robin (ingress-nginx's sticky balancer picks it by a hash of a random id)");
                if let Some((_, at)) = &hash {
                    self.note(at, "upstream-hash-by", Carried::Dropped,
                        "not used: affinity=cookie takes precedence over upstream-hash-by in ingress-nginx (affinity, then upstream-hash-by, then load-balance)");
                }
                if let Some((_, at)) = &lb {
                    self.note(at, "load-balance", Carried::Dropped,
                        "not used: affinity=cookie takes precedence over load-balance in ingress-nginx");
                }
                if let Some((m, at)) = &mode {
                    if m != "balanced" {
                        self.note(at, "affinity-mode", Carried::Approximate, format!(
                            "{m:?}: Switchyard keeps a cookie's server while it is eligible and re-picks when it is not (ingress-nginx's \"balanced\" mode); sessions are not pinned through scaling"));
                    }
                }
                if let Some((_, at)) = cookie_name {
                    self.note(&at, "session-cookie-name", Carried::Info, "→ sticky.cookie");
                }
                for (n, at) in [
                    ("session-cookie-max-age", max_age),
                    ("session-cookie-expires", expires),
                ]
                .into_iter()
                .filter_map(|(n, v)| v.map(|(_, at)| (n, at)))
                {
                    self.note(&at, n, Carried::Info, "→ sticky.ttl (Switchyard's cookie carries Max-Age; with both, max-age is used, as browsers do)");
                }
                return;
            }
            self.note(
                at,
                "affinity",
                Carried::Dropped,
                format!("{a:?}: ingress-nginx knows only \"cookie\" and ignores this"),
            );
        }
        for (name, v) in [
            ("session-cookie-name", cookie_name),
            (
                "session-cookie-max-age",
                max_age.map(|(n, at)| (n.to_string(), at)),
            ),
            (
                "session-cookie-expires",
                expires.map(|(n, at)| (n.to_string(), at)),
            ),
            ("affinity-mode", mode),
        ] {
            if let Some((_, at)) = v {
                self.note(
                    &at,
                    name,
                    Carried::Dropped,
                    "without affinity: cookie, ingress-nginx ignores it; so does the import",
                );
            }
        }
        if let Some((h, at)) = hash {
            match hash_key(&h) {
                Some(key) => {
                    self.s.balance = Some(("hash".to_owned(), Some(key.clone())));
                    self.s.balances = true;
                    self.note(&at, "upstream-hash-by", Carried::Info, format!(
                        "→ balance = \"hash\", hash_key = \"{key}\" (consistent hashing as ingress-nginx's chash; a request without the key is balanced round-robin)"));
                    if let Some((_, lat)) = &lb {
                        self.note(lat, "load-balance", Carried::Dropped,
                            "not used: upstream-hash-by takes precedence over load-balance in ingress-nginx, and here");
                    }
                    return;
                }
                None => self.note(&at, "upstream-hash-by", Carried::Dropped, format!(
                    "{h:?}: Switchyard hashes one of $remote_addr, $binary_remote_addr, $request_uri, $uri, $http_NAME, $cookie_NAME, $arg_NAME; not carried (balanced round-robin), pick the closest hash_key by hand")),
            }
        }
        if let Some((v, at)) = lb {
            match v.as_str() {
                "round_robin" => {
                    self.note(&at, "load-balance", Carried::Info, "round_robin is Switchyard's default (weighted round-robin)");
                }
                "ewma" => {
                    self.s.balance = Some(("ewma".to_owned(), None));
                    self.s.balances = true;
                    self.note(&at, "load-balance", Carried::Info, "→ balance = \"ewma\" (Peak-EWMA with two random choices, as ingress-nginx's)");
                }
                other => self.note(&at, "load-balance", Carried::Dropped, format!(
                    "{other:?}: ingress-nginx knows round_robin and ewma; not carried (round-robin)")),
            }
        }
    }

    fn timeouts(&mut self) {
        let connect = self.int("proxy-connect-timeout");
        let (v, c) = match &connect {
            Some((n, _)) => (format!("{n}s"), "proxy-connect-timeout".to_owned()),
            None => (
                DEFAULT_CONNECT_TIMEOUT.to_owned(),
                "ingress-nginx's default proxy-connect-timeout (Switchyard's is 60s)".to_owned(),
            ),
        };
        self.route_key("connect_timeout", v, c);
        for (name, key) in [
            ("proxy-send-timeout", "send_timeout"),
            ("proxy-read-timeout", "read_timeout"),
        ] {
            if let Some((n, _)) = self.int(name) {
                self.route_key(key, format!("{n}s"), name.to_owned());
            }
        }
        if let Some((n, _)) = self.int("proxy-next-upstream-tries") {
            self.route_key(
                "next_upstream_tries",
                n,
                "proxy-next-upstream-tries".to_owned(),
            );
        }
        if let Some((n, _)) = self.int("proxy-next-upstream-timeout") {
            self.route_key(
                "next_upstream_timeout",
                format!("{n}s"),
                "proxy-next-upstream-timeout".to_owned(),
            );
        }
        if let Some((v, at)) = self.take("proxy-next-upstream") {
            let mut names = Vec::new();
            let mut bad = Vec::new();
            for w in v.split_whitespace() {
                match w {
                    "error" | "timeout" | "http_500" | "http_502" | "http_503" | "http_504"
                    | "http_429" | "non_idempotent" => names.push(toml::Value::from(w)),
                    "off" => names.clear(),
                    other => bad.push(other.to_owned()),
                }
            }
            if bad.is_empty() {
                self.route_key(
                    "next_upstream",
                    toml::Value::Array(names),
                    "proxy-next-upstream".to_owned(),
                );
            } else {
                self.note(&at, "proxy-next-upstream", Carried::Dropped, format!(
                    "{} not in Switchyard's next_upstream (error, timeout, http_500, http_502, http_503, http_504, http_429, non_idempotent); not carried (default: error timeout, as ingress-nginx's)", bad.join(", ")));
            }
        }
    }

    fn body_size(&mut self) {
        if let Some((v, at)) = self.take("proxy-body-size") {
            if nginx_size(&v) {
                self.route_key("max_body_size", v, "proxy-body-size".to_owned());
            } else {
                self.note(&at, "proxy-body-size", Carried::Dropped, format!(
                    "{v:?} is not an nginx size (N, Nk, Nm, Ng); not carried (1m, as ingress-nginx's default)"));
            }
        }
    }

    fn access(&mut self) {
        // allowlist-source-range is the newer name; ingress-nginx reads it first.
        let allow = self.take("allowlist-source-range");
        let white = self.take("whitelist-source-range");
        let chosen = match (allow, white) {
            (Some(a), Some((_, wat))) => {
                self.note(&wat, "whitelist-source-range", Carried::Dropped,
                    "not used: allowlist-source-range is set too and takes precedence (ingress-nginx reads it first)");
                Some(("allowlist-source-range", a))
            }
            (Some(a), None) => Some(("allowlist-source-range", a)),
            (None, Some(w)) => Some(("whitelist-source-range", w)),
            (None, None) => None,
        };
        if let Some((name, (v, at))) = chosen {
            self.cidrs(name, "allow", &v, &at);
        }
        if let Some((v, at)) = self.take("denylist-source-range") {
            self.cidrs("denylist-source-range", "deny", &v, &at);
        }
    }

    fn cidrs(&mut self, name: &str, key: &str, v: &str, at: &Origin) {
        let list: Vec<String> = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let bad: Vec<&String> = list
            .iter()
            .filter(|s| s.parse::<IpNet>().is_err() && s.parse::<std::net::IpAddr>().is_err())
            .collect();
        if !bad.is_empty() || list.is_empty() {
            self.note(at, name, Carried::Dropped, format!(
                "{bad:?} not CIDRs or addresses: ingress-nginx rejects the annotation; nothing carried"));
            return;
        }
        self.route_key(
            key,
            toml::Value::Array(list.into_iter().map(toml::Value::from).collect()),
            format!("{name}: others get 403, as in ingress-nginx"),
        );
    }

    /// limit-rps and limit-rpm (both: two limits that must both pass), burst =
    /// rate × limit-burst-multiplier, nodelay, keyed by client address, 503.
    fn limits(&mut self) {
        let rps = self.int("limit-rps");
        let rpm = self.int("limit-rpm");
        let mult = self.int("limit-burst-multiplier");
        let conn = self.int("limit-connections");
        let m = mult.as_ref().map_or(DEFAULT_BURST_MULTIPLIER, |(n, _)| *n);
        let mut limits = Vec::new();
        for (v, unit) in [(&rps, "s"), (&rpm, "m")] {
            if let Some((n, at)) = v {
                if *n == 0 {
                    continue;
                }
                limits.push(out::table([
                    ("rate", toml::Value::from(format!("{n}/{unit}"))),
                    ("burst", toml::Value::from(n * m)),
                    ("status", toml::Value::from(LIMIT_STATUS)),
                ]));
                self.s.limits_at.get_or_insert(at.clone());
            }
        }
        let rate_written = !limits.is_empty();
        if rate_written {
            let v = if limits.len() == 1 {
                limits.remove(0)
            } else {
                toml::Value::Array(limits)
            };
            self.route_key("rate_limit", v, format!(
                "limit-rps/limit-rpm: per client address, burst = rate x {m} (limit-burst-multiplier), nodelay, 503 (ingress-nginx's limit-req-status-code)"));
        }
        if let Some((_, at)) = &mult {
            if !rate_written {
                self.note(
                    at,
                    "limit-burst-multiplier",
                    Carried::Dropped,
                    "without limit-rps or limit-rpm it does nothing in ingress-nginx either",
                );
            }
        }
        if let Some((n, at)) = &conn {
            if *n > 0 {
                self.route_key("limit_conn", out::table([
                    ("max", toml::Value::from(*n)),
                    ("status", toml::Value::from(LIMIT_STATUS)),
                ]), "limit-connections: requests in flight per client address, 503 (limit-conn-status-code)".to_owned());
                self.s.limits_at.get_or_insert(at.clone());
            }
        }
        for name in ["limit-whitelist", "limit-allowlist"] {
            if let Some((_, at)) = self.take(name) {
                self.note(&at, name, Carried::Dropped,
                    "Switchyard cannot exempt addresses from a route's limits: these addresses are limited too; give them their own listener without limits if they must not be");
            }
        }
        for name in ["limit-rate", "limit-rate-after"] {
            if let Some((_, at)) = self.take(name) {
                self.note(&at, name, Carried::Dropped, "bandwidth limits per connection are not supported by Switchyard; responses are sent at full speed");
            }
        }
    }

    fn redirects(&mut self) {
        if let Some((b, _)) = self.boolean("ssl-redirect") {
            self.s.ssl_redirect = b;
        }
        if let Some((b, _)) = self.boolean("force-ssl-redirect") {
            self.s.force_ssl_redirect = b;
        }
    }

    fn protocol(&mut self) {
        if let Some((v, at)) = self.take("backend-protocol") {
            match v.to_ascii_uppercase().as_str() {
                "HTTP" => {}
                "HTTPS" => self.s.upstream_tls = true,
                "GRPC" => self.s.protocol = Some("h2c"),
                "GRPCS" => {
                    self.s.protocol = Some("h2");
                    self.s.upstream_tls = true;
                }
                _ => self.note(&at, "backend-protocol", Carried::Dropped, format!(
                    "{v:?}: Switchyard speaks HTTP, HTTPS and gRPC (h2c, h2) to upstreams; not carried (HTTP)")),
            }
        }
        if let Some((b, at)) = self.boolean("service-upstream") {
            self.s.service_upstream = b;
            self.note(&at, "service-upstream", Carried::Info,
                "the Service name resolves to its ClusterIP as here: kube-proxy picks the pod in both");
        }
    }
}

/// An nginx size: digits with an optional k, m or g (any case).
fn nginx_size(v: &str) -> bool {
    let digits = v.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && v.len() - digits.len() <= 1
}

/// `upstream-hash-by` as a Switchyard `hash_key`, when it is one variable that has one.
fn hash_key(v: &str) -> Option<String> {
    let v = v.trim();
    let name = v.strip_prefix('$')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !ok(name) {
        return None;
    }
    match name {
        "remote_addr" | "binary_remote_addr" => Some("client_ip".to_owned()),
        "request_uri" => Some("uri".to_owned()),
        "uri" | "document_uri" => Some("path".to_owned()),
        _ => {
            if let Some(h) = name.strip_prefix("http_") {
                Some(format!("header:{}", h.replace('_', "-")))
            } else if let Some(c) = name.strip_prefix("cookie_") {
                Some(format!("cookie:{c}"))
            } else {
                name.strip_prefix("arg_").map(|a| format!("query:{a}"))
            }
        }
    }
}

/// What to say about an annotation no translation read.
fn other(key: &str) -> (Carried, String) {
    if let Some(name) = key.strip_prefix(PREFIX) {
        let hint = match name {
            "rewrite-target" | "use-regex" | "app-root" | "x-forwarded-prefix" => {
                "Switchyard forwards the path as received and matches prefixes, not regular expressions: rewrite in the application, or route each rewritten path by hand"
            }
            "configuration-snippet" | "server-snippet" | "stream-snippet" | "auth-snippet" => {
                "raw nginx configuration: review it by hand; `switchyard import nginx` can translate a file of such directives"
            }
            "enable-cors" | "cors-allow-origin" | "cors-allow-methods" | "cors-allow-headers"
            | "cors-allow-credentials" | "cors-max-age" | "cors-expose-headers" => {
                "CORS answers are not generated: set the headers with the route's response_headers, and answer OPTIONS in the application"
            }
            "canary" | "canary-weight" | "canary-by-header" | "canary-by-header-value"
            | "canary-by-cookie" | "canary-weight-total" | "canary-by-header-pattern" => {
                "canary releases are not translated: this canary Ingress is not routed, all its share stays with the main Ingress's backend; for a split, add its servers to the main upstream with weights"
            }
            "auth-url" | "auth-signin" | "auth-type" | "auth-secret" | "auth-realm"
            | "auth-tls-secret" | "auth-tls-verify-client" | "auth-response-headers"
            | "auth-secret-type" | "auth-tls-verify-depth" | "auth-method" => {
                "authentication is not done by Switchyard: the route is open; protect it with allow, or in the application"
            }
            "proxy-buffering" | "proxy-buffer-size" | "proxy-buffers-number"
            | "proxy-request-buffering" | "proxy-max-temp-file-size" | "client-body-buffer-size" => {
                "Switchyard streams bodies both ways (no buffering to disk); nothing to set"
            }
            "upstream-keepalive-connections" | "upstream-keepalive-timeout"
            | "upstream-keepalive-requests" | "upstream-keepalive-time" => {
                "not an ingress-nginx annotation but a key of its ConfigMap: ingress-nginx ignores it on an Ingress. Switchyard keeps `keepalive` idle connections per server and worker (default 32): set it on the upstream if that was the intent"
            }
            "ssl-passthrough" => "TLS passthrough is not supported: Switchyard terminates TLS",
            "upstream-vhost" => "add set_headers = { Host = \"…\" } to the route by hand if the upstream needs that Host",
            "proxy-ssl-secret" | "proxy-ssl-verify" | "proxy-ssl-name" | "proxy-ssl-server-name" => {
                "TLS to the upstream: set the upstream's tls = { sni, ca_file, verify } by hand"
            }
            "enable-access-log" => "set access_log = false on the route by hand if it was \"false\"",
            "ssl-ciphers" | "ssl-prefer-server-ciphers" => "Switchyard offers rustls's cipher suites only",
            "custom-http-errors" | "default-backend" => "error pages from another backend are not supported",
            "mirror-target" | "mirror-uri" | "mirror-request-body" | "mirror-host" => "request mirroring is not supported",
            "satisfy" | "global-rate-limit" | "global-rate-limit-window" | "global-rate-limit-key" => {
                "not supported; for one budget shared by replicas, a rate_limit with store = \"redis://…\" does it"
            }
            "proxy-http-version" => "Switchyard speaks HTTP/1.1 to http1 upstreams",
            _ => "Switchyard has no equivalent; what it did is lost",
        };
        if name.starts_with("upstream-keepalive-") {
            return (Carried::Dropped, hint.to_owned());
        }
        return (
            Carried::Dropped,
            format!("ingress-nginx annotation not carried: {hint}"),
        );
    }
    const TOOLS: [(&str, &str); 5] = [
        ("kubectl.kubernetes.io/", "kubectl's bookkeeping"),
        ("meta.helm.sh/", "Helm's bookkeeping"),
        (
            "cert-manager.io/",
            "cert-manager still writes the TLS Secret; mount it as the TLS note says",
        ),
        (
            "acme.cert-manager.io/",
            "cert-manager still writes the TLS Secret; mount it as the TLS note says",
        ),
        ("argocd.argoproj.io/", "Argo CD's bookkeeping"),
    ];
    for (p, what) in TOOLS {
        if key.starts_with(p) {
            return (
                Carried::Info,
                format!("not for the proxy ({what}): nothing to carry"),
            );
        }
    }
    const CONTROLLERS: [&str; 9] = [
        "traefik.",
        "alb.ingress.kubernetes.io/",
        "haproxy.",
        "nginx.org/",
        "nginx.com/",
        "konghq.com/",
        "projectcontour.io/",
        "appgw.ingress.kubernetes.io/",
        "ingress.kubernetes.io/",
    ];
    if CONTROLLERS.iter().any(|p| key.starts_with(p)) {
        return (Carried::Dropped, "an annotation of another Ingress controller: only ingress-nginx's are understood; not carried".to_owned());
    }
    (
        Carried::Info,
        "not an ingress-nginx annotation: ingress-nginx ignores it, and so does the import"
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_and_sizes() {
        assert_eq!(hash_key("$remote_addr").as_deref(), Some("client_ip"));
        assert_eq!(
            hash_key("$http_x_chat_id").as_deref(),
            Some("header:x-chat-id")
        );
        assert_eq!(hash_key("$cookie_sid").as_deref(), Some("cookie:sid"));
        assert_eq!(hash_key("$arg_chat").as_deref(), Some("query:chat"));
        assert_eq!(hash_key("$request_uri").as_deref(), Some("uri"));
        assert_eq!(hash_key("$host$request_uri"), None);
        assert_eq!(hash_key("$server_name"), None);
        assert!(nginx_size("8m") && nginx_size("0") && nginx_size("100K"));
        assert!(!nginx_size("8mb") && !nginx_size("m") && !nginx_size("1.5m"));
    }
}
