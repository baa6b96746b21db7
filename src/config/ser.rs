//! The validated configuration written back in the file's shape: the keys and
//! nesting of `config/switchyard.toml`, every default filled in, values as the file
//! writes them (durations `"30s"`, sizes `"64KiB"`, header templates as their
//! source). `switchyard config dump` prints it as TOML, and `diff` compares two
//! configurations through it, so a key added to the schema needs no diff code.
//!
//! Plain types derive `Serialize` next to their definitions; the types whose file
//! shape differs from their fields (an enum flattened into a route, one written
//! server that resolved to several, keys that exist only for some algorithms) are
//! written by hand here. Parsing the output with `Config::parse` from the same path
//! gives the same configuration: the round-trip tests below check it.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use super::discovery::{ResolveEntry, ResolverConfig};
use super::limits::hide_secrets;
use super::tree::bare;
use super::{
    AdminConfig, BalanceKind, Certificate, Config, HashKey, HeaderTemplate, HostPattern,
    ListenerConfig, LogTarget, ProxyConfig, RouteAction, RouteConfig, ServerConfig, TlsConfig,
    TlsVersion, UpstreamConfig, UpstreamProtocol, UpstreamTls, DEFAULT_TLS_VERIFY,
};

/// What `config dump` prints instead of the admin token. It is not a token: the
/// loader refuses it, so a dump used as a configuration file fails loudly instead
/// of protecting the admin API with a value everyone can read here.
pub const REDACTED_TOKEN: &str = "<redacted>";

// ----- `serialize_with` helpers: values as the file writes them -----

/// `"30s"`, `"1m 30s"`, `"250ms"`: what `humantime` prints and parses back.
pub(super) fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    bare(&humantime::format_duration(*d), s)
}

/// As `duration`, for a key left out when `None` (`skip_serializing_if`).
pub(super) fn opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration(d, s),
        None => s.serialize_none(),
    }
}

/// A status code as the number the file writes.
pub(super) fn status<S: Serializer>(c: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(c.as_u16())
}

/// A header value as text (the values here were read from the file as text).
pub(super) fn header_value<S: Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v.as_bytes()))
}

/// As `header_value`, for a key left out when `None` (`skip_serializing_if`).
pub(super) fn opt_header_value<S: Serializer>(
    v: &Option<HeaderValue>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => header_value(v, s),
        None => s.serialize_none(),
    }
}

/// `0.1` → `"10%"`, as `jitter` is written (to a thousandth of a percent, which
/// reads back as the same fraction).
pub(super) fn percent<S: Serializer>(f: &f64, s: S) -> Result<S::Ok, S::Error> {
    bare(&format!("{}%", (f * 100_000.0).round() / 1000.0), s)
}

/// `65536` → `"64KiB"`, `3 << 20` → `"3MiB"`, `1 << 30` → `"1GiB"`, else the byte
/// count (`"1000"`): the forms `retry_body_limit` reads.
fn size_text(b: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match b {
        0 => "0".to_owned(),
        b if b % GIB == 0 => format!("{}GiB", b / GIB),
        b if b % MIB == 0 => format!("{}MiB", b / MIB),
        b if b % KIB == 0 => format!("{}KiB", b / KIB),
        b => b.to_string(),
    }
}

/// A file path as text. Paths are written lossily if not UTF-8 (TOML strings are
/// UTF-8; such a path could not have been read from the file either).
fn path_text(p: &Path) -> Cow<'_, str> {
    p.to_string_lossy()
}

/// `value` as a bare word (a `Display`able value inside a hand-written impl).
pub(super) struct Bare<T>(pub(super) T);

impl<T: std::fmt::Display> Serialize for Bare<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bare(&self.0, s)
    }
}

pub(super) struct Dur(pub(super) Duration);

/// A size, written as `size_text` writes it.
pub(super) struct Size(pub(super) u64);

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        size(&self.0, s)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        duration(&self.0, s)
    }
}

// ----- names: one word each -----

impl Serialize for BalanceKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bare(self.as_str(), s)
    }
}

impl Serialize for UpstreamProtocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bare(self.name(), s)
    }
}

impl Serialize for TlsVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bare(self.as_str(), s)
    }
}

impl Serialize for HostPattern {
    /// As written, lower-cased: `api.example.com`, `*.example.com`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bare(self, s)
    }
}

impl Serialize for HashKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = match self {
            HashKey::ClientIp => Cow::Borrowed("client_ip"),
            HashKey::Header(h) => Cow::Owned(format!("header:{h}")),
            HashKey::Cookie(c) => Cow::Owned(format!("cookie:{c}")),
            HashKey::Query(q) => Cow::Owned(format!("query:{q}")),
            HashKey::Path => Cow::Borrowed("path"),
            HashKey::Uri => Cow::Borrowed("uri"),
        };
        bare(&text, s)
    }
}

impl Serialize for LogTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LogTarget::Stdout => s.serialize_str("stdout"),
            LogTarget::File(p) => s.serialize_str(&path_text(p)),
        }
    }
}

impl Serialize for HeaderTemplate {
    /// The source text (`$$` for a dollar sign), which parses back to the same
    /// template.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source())
    }
}

/// `methods = ["GET", "POST"]` (`None` is skipped by the field).
pub(super) fn methods<S: Serializer>(m: &Option<Vec<Method>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.iter().flatten().map(Bare))
}

/// `set_headers = { "x-via" = "…" }`: a map, its keys the (lower-case) names.
pub(super) fn headers<S: Serializer>(
    h: &[(HeaderName, HeaderTemplate)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(h.iter().map(|(n, t)| (n.as_str(), t)))
}

/// A name or address written bare (`None` is skipped by the field).
pub(super) fn opt_bare<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => bare(v, s),
        None => s.serialize_none(),
    }
}

/// A size as `retry_body_limit` reads it (`size_text`).
pub(super) fn size<S: Serializer>(b: &u64, s: S) -> Result<S::Ok, S::Error> {
    bare(&size_text(*b), s)
}

/// As `size`, for a key left out when `None` (`skip_serializing_if`).
pub(super) fn opt_size<S: Serializer>(b: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => size(b, s),
        None => s.serialize_none(),
    }
}

// ----- the tables -----

impl Serialize for Config {
    /// The file's shape, certificate and CA paths relative to the file's directory
    /// as they were written, so that the text parses back from the same path.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.file_shape(Paths::RelativeToSource, Secrets::Shown)
            .serialize(s)
    }
}

/// How file paths are written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Paths {
    /// Relative to the configuration file's directory where they are inside it, as
    /// the file writes them: what parses back from the same path.
    RelativeToSource,
    /// As loaded (resolved against that directory): what the diff compares, since
    /// the same relative name in files in two directories is two files.
    Resolved,
}

/// Whether secrets are written: the admin token, and the password in a rate
/// limit's Redis URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Shown,
    /// Replaced by [`REDACTED_TOKEN`].
    Redacted,
    /// What the reload diff compares: a store URL's password replaced by a tag
    /// that differs when the password does (a hash under a key drawn once per
    /// process, so it tells nothing of the password), so that a new password
    /// shows as a change without showing either. The admin token is written: the
    /// diff hides it by its key (`diff::SECRETS`).
    Tagged,
}

impl Secrets {
    /// What is written for `secret`.
    fn hide(self, secret: &str) -> String {
        match self {
            Secrets::Shown => secret.to_owned(),
            Secrets::Redacted => REDACTED_TOKEN.to_owned(),
            Secrets::Tagged => format!("<redacted:{:08x}>", tag(secret)),
        }
    }
}

/// A 32-bit tag of `secret`, keyed per process (`Secrets::Tagged`).
fn tag(secret: &str) -> u32 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(std::hash::RandomState::new)
        .hash_one(secret) as u32
}

/// A configuration with the choices of how to write it.
pub(super) struct FileShape<'a> {
    config: &'a Config,
    paths: Paths,
    secrets: Secrets,
}

impl Config {
    pub(super) fn file_shape(&self, paths: Paths, secrets: Secrets) -> FileShape<'_> {
        FileShape {
            config: self,
            paths,
            secrets,
        }
    }

    /// The effective configuration as TOML (`switchyard config dump`): every key
    /// with its value, defaults filled in, after a one-line comment naming the
    /// source file. With `Secrets::Redacted` the admin token is written as
    /// [`REDACTED_TOKEN`], which the loader refuses.
    pub fn dump(&self, secrets: Secrets) -> Result<String, toml::ser::Error> {
        let body = toml::to_string(&self.file_shape(Paths::RelativeToSource, secrets))?;
        Ok(format!(
            "# The effective configuration of {}, every default filled in (switchyard config dump).\n{body}",
            self.source.display()
        ))
    }
}

impl Serialize for FileShape<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.config;
        let dir = match self.paths {
            Paths::RelativeToSource => Some(super::validate::base_dir(&c.source)),
            Paths::Resolved => None,
        };
        let mut m = s.serialize_struct("Config", 5)?;
        if let Some(a) = &c.admin {
            if self.secrets == Secrets::Redacted && a.token.is_some() {
                let redacted = AdminConfig {
                    listen: a.listen,
                    token: Some(REDACTED_TOKEN.to_owned()),
                };
                m.serialize_field("admin", &redacted)?;
            } else {
                m.serialize_field("admin", a)?;
            }
        }
        if let Some(l) = &c.access_log {
            m.serialize_field("access_log", l)?;
        }
        let hide = |secret: &str| self.secrets.hide(secret);
        let listeners: Vec<Cow<'_, ListenerConfig>> = c
            .listeners
            .iter()
            .map(|l| relative_listener(l, dir))
            .map(|l| match hide_secrets(&l.rate_limit, &hide) {
                Some(rate_limit) => Cow::Owned(ListenerConfig {
                    rate_limit,
                    ..l.into_owned()
                }),
                None => l,
            })
            .collect();
        m.serialize_field("listener", &listeners)?;
        let routes: Vec<Cow<'_, RouteConfig>> = c
            .routes
            .iter()
            .map(|r| {
                let mut out = Cow::Borrowed(r);
                if let Some(rate_limit) = hide_secrets(&r.rate_limit, &hide) {
                    out.to_mut().rate_limit = rate_limit;
                }
                if let RouteAction::Proxy(ProxyConfig {
                    telegram: Some(t), ..
                }) = &r.action
                {
                    // Its tokens and store password are secrets; its dead-letter
                    // file is written as the file names it.
                    let mut t = t.hiding(&hide);
                    if let (Some(dir), Some(f)) = (dir, &t.dead_letter) {
                        t.dead_letter = Some(relative(f, dir));
                    }
                    if let RouteAction::Proxy(p) = &mut out.to_mut().action {
                        p.telegram = Some(Box::new(t));
                    }
                }
                out
            })
            .collect();
        m.serialize_field("route", &routes)?;
        let upstreams: Vec<Cow<'_, UpstreamConfig>> = c
            .upstreams
            .iter()
            .map(|u| relative_upstream(u, dir))
            .collect();
        m.serialize_field("upstream", &Upstreams(&upstreams))?;
        if c.resolver != ResolverConfig::default()
            || c.upstreams.iter().any(|u| !u.resolve.is_empty())
        {
            m.serialize_field("resolver", &c.resolver)?;
        }
        m.end()
    }
}

/// `p` relative to `dir` when it lies inside it (`config/tls/a.pem` from `config`
/// → `tls/a.pem`), else as is: joining `dir` again, the loader gets `p` back.
fn relative(p: &Path, dir: &Path) -> PathBuf {
    match p.strip_prefix(dir) {
        Ok(r) if !r.as_os_str().is_empty() => r.to_owned(),
        _ => p.to_owned(),
    }
}

fn relative_listener<'a>(l: &'a ListenerConfig, dir: Option<&Path>) -> Cow<'a, ListenerConfig> {
    let (Some(dir), Some(_)) = (dir, &l.tls) else {
        return Cow::Borrowed(l);
    };
    let mut l = l.clone();
    if let Some(tls) = &mut l.tls {
        for c in std::iter::once(&mut tls.default).chain(&mut tls.sni) {
            c.cert_path = relative(&c.cert_path, dir);
            c.key_path = relative(&c.key_path, dir);
        }
    }
    Cow::Owned(l)
}

fn relative_upstream<'a>(u: &'a UpstreamConfig, dir: Option<&Path>) -> Cow<'a, UpstreamConfig> {
    let (
        Some(dir),
        Some(UpstreamTls {
            ca_file: Some(ca), ..
        }),
    ) = (dir, &u.tls)
    else {
        return Cow::Borrowed(u);
    };
    let ca = relative(ca, dir);
    let mut u = u.clone();
    if let Some(tls) = &mut u.tls {
        tls.ca_file = Some(ca);
    }
    Cow::Owned(u)
}

/// `[upstream.NAME]`: a table keyed by name (the name is not repeated inside).
struct Upstreams<'a>(&'a [Cow<'a, UpstreamConfig>]);

impl Serialize for Upstreams<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|u| (u.name.as_str(), u.as_ref())))
    }
}

impl Serialize for ListenerConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("ListenerConfig", 13)?;
        m.serialize_field("name", &self.name)?;
        m.serialize_field("listen", &Bare(self.listen))?;
        // `redirect_https = true` with its port; `https_port` alone is refused.
        m.serialize_field("redirect_https", &self.redirect_https.is_some())?;
        if let Some(port) = self.redirect_https {
            m.serialize_field("https_port", &port)?;
        }
        if let Some(h) = &self.hsts {
            m.serialize_field("hsts", &String::from_utf8_lossy(h.as_bytes()))?;
        }
        m.serialize_field("client_header_timeout", &Dur(self.client_header_timeout))?;
        m.serialize_field("client_body_timeout", &Dur(self.client_body_timeout))?;
        self.limits.serialize_into(&mut m)?;
        self.clients.write(&mut m)?;
        if let Some(tls) = &self.tls {
            m.serialize_field("tls", tls)?;
        }
        if !self.rate_limit.is_empty() {
            m.serialize_field("rate_limit", &OneOrMany(&self.rate_limit))?;
        }
        if !self.limit_conn.is_empty() {
            m.serialize_field("limit_conn", &OneOrMany(&self.limit_conn))?;
        }
        m.end()
    }
}

impl Serialize for TlsConfig {
    /// `[listener.tls]`: the default certificate's files, then the settings, then
    /// `[[listener.tls.sni]]`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("TlsConfig", 5)?;
        m.serialize_field("cert", &path_text(&self.default.cert_path))?;
        m.serialize_field("key", &path_text(&self.default.key_path))?;
        m.serialize_field("min_version", &self.min_version)?;
        m.serialize_field("session_tickets", &self.session_tickets)?;
        m.serialize_field("sni", &self.sni)?;
        m.end()
    }
}

impl Serialize for Certificate {
    /// Its files; their content is not configuration (a rotation shows in the
    /// diff as a special case).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Certificate", 2)?;
        m.serialize_field("cert", &path_text(&self.cert_path))?;
        m.serialize_field("key", &path_text(&self.key_path))?;
        m.end()
    }
}

impl Serialize for UpstreamConfig {
    /// `[upstream.NAME]` without the name. The settings of other algorithms than
    /// `balance` are left out: the loader refuses them.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let uses = |key| self.balance.uses(key);
        let mut m = s.serialize_struct("UpstreamConfig", 16)?;
        m.serialize_field("balance", &self.balance)?;
        m.serialize_field("keepalive", &self.keepalive)?;
        if uses("least_time") {
            m.serialize_field("least_time", &self.least_time)?;
        }
        if uses("ewma_decay") {
            m.serialize_field("ewma_decay", &Dur(self.ewma_decay))?;
        }
        if uses("ewma_seed") {
            m.serialize_field("ewma_seed", &Dur(self.ewma_seed))?;
        }
        if let Some(k) = self.hash_key.as_ref().filter(|_| uses("hash_key")) {
            m.serialize_field("hash_key", k)?;
        }
        if let Some(f) = self
            .hash_balance_factor
            .filter(|_| uses("hash_balance_factor"))
        {
            m.serialize_field("hash_balance_factor", &f)?;
        }
        if let Some(sticky) = &self.sticky {
            m.serialize_field("sticky", sticky)?;
        }
        if let Some(h) = &self.health_check {
            m.serialize_field("health_check", h)?;
        }
        m.serialize_field("max_ejected_percent", &self.max_ejected_percent)?;
        m.serialize_field(
            "max_response_header_size",
            &Size(self.max_response_header_size as u64),
        )?;
        m.serialize_field("protocol", &self.protocol)?;
        m.serialize_field("tls", &TlsSetting(self.tls.as_ref()))?;
        m.serialize_field("queue", &self.queue)?;
        m.serialize_field("servers", &WrittenServers(&self.servers, &self.resolve))?;
        if !self.resolve.is_empty() {
            m.serialize_field("max_servers", &self.max_servers)?;
        }
        m.end()
    }
}

/// A list of limits as the file writes it (`limits::one_or_many`).
struct OneOrMany<'a, T>(&'a [T]);

impl<T: Serialize> Serialize for OneOrMany<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        super::limits::one_or_many(self.0, s)
    }
}

/// An upstream's `tls`: `false`, `true` (every default), or its table.
struct TlsSetting<'a>(Option<&'a UpstreamTls>);

impl Serialize for TlsSetting<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_bool(false),
            Some(t) if t.sni.is_none() && t.ca_file.is_none() && t.verify == DEFAULT_TLS_VERIFY => {
                s.serialize_bool(true)
            }
            Some(t) => t.serialize(s),
        }
    }
}

impl Serialize for UpstreamTls {
    /// The keys of `tls = { … }`; the CA certificates are the file's content,
    /// read again on load.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("UpstreamTls", 3)?;
        if let Some(sni) = &self.sni {
            m.serialize_field("sni", sni)?;
        }
        if let Some(ca) = &self.ca_file {
            m.serialize_field("ca_file", &path_text(ca))?;
        }
        m.serialize_field("verify", &self.verify)?;
        m.end()
    }
}

/// The servers as written: a host name that resolved to several addresses is one
/// server in the file (its addresses are consecutive, with the same settings).
/// The `resolve = true` entries follow, as written.
struct WrittenServers<'a>(&'a [ServerConfig], &'a [ResolveEntry]);

/// One element of an upstream's `servers` list.
#[derive(Serialize)]
#[serde(untagged)]
enum Written<'a> {
    Static(&'a ServerConfig),
    Resolve(&'a ResolveEntry),
}

impl Serialize for WrittenServers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Each name at its first address; a set rather than a look back over the
        // list, which was quadratic in an upstream's servers.
        let mut seen = std::collections::HashSet::with_capacity(self.0.len());
        s.collect_seq(
            self.0
                .iter()
                .filter(|srv| seen.insert(srv.name.as_str()))
                .map(Written::Static)
                .chain(self.1.iter().map(Written::Resolve)),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    /// Serialises `c`, parses the text back from the same path and checks that the
    /// result is the same configuration (no changes between them, and equal field
    /// by field) and serialises to the same text.
    fn round_trip(c: &Config) -> String {
        let text = toml::to_string(c).expect("serialises");
        let again = Config::parse(&c.source, &text)
            .unwrap_or_else(|e| panic!("the dump does not parse back:\n{e}\n---\n{text}"));
        let changes = super::super::diff(c, &again);
        assert!(changes.is_empty(), "{changes:#?}\n{text}");
        // Debug shows every field, including those the file does not write
        // (resolved addresses, loaded certificates).
        assert_eq!(format!("{again:?}"), format!("{c:?}"), "{text}");
        assert_eq!(toml::to_string(&again).expect("serialises"), text);
        text
    }

    fn load(text: &str, source: &Path) -> Config {
        Config::parse(source, text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn repository_file(name: &str) -> (std::path::PathBuf, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        let text = std::fs::read_to_string(&path).expect("read the repository's config");
        (path, text)
    }

    /// The demo's file with its `ORIGIN_n` placeholders on loopback.
    fn demo() -> Config {
        let (path, mut text) = repository_file("demo.toml");
        for i in 1..=3 {
            text = text.replace(&format!("ORIGIN_{i}"), &format!("127.0.0.1:{}", 9100 + i));
        }
        load(&text, &path)
    }

    #[test]
    fn annotated_example_round_trips() {
        let (path, text) = repository_file("switchyard.toml");
        round_trip(&load(&text, &path));
    }

    #[test]
    fn demo_round_trips() {
        round_trip(&demo());
    }

    /// `config/telegram.toml`, the README's worked example of two Telegram bots,
    /// loads and round-trips once its certificate and dead-letter directory exist
    /// (here in `dir`), and the README shows it as it is.
    #[test]
    fn telegram_example_round_trips_and_is_the_readmes() {
        let dir = TempDir::new("telegram");
        certificate(&dir.0, "bots", &["bots.example.com"]);
        let (path, text) = repository_file("telegram.toml");
        let live = "/etc/letsencrypt/live/bots.example.com/";
        let d = dir.0.display();
        let local = text
            .replace(&format!("{live}fullchain.pem"), &format!("{d}/bots.crt"))
            .replace(&format!("{live}privkey.pem"), &format!("{d}/bots.key"))
            .replace("/var/log/switchyard/", &format!("{d}/"));
        let c = load(&local, &path);
        assert_eq!(
            c.routes.iter().filter(|r| r.telegram().is_some()).count(),
            2
        );
        round_trip(&c);
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .expect("read README.md");
        assert!(
            readme.contains(&text),
            "README.md's worked example is not config/telegram.toml as it is"
        );
    }

    /// Every key the annotated example writes is in its dump (with the value it
    /// has there, or its default): a key the serialiser forgot fails here.
    #[test]
    fn every_key_of_the_annotated_example_is_in_its_dump() {
        fn paths(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        // Header names are written back lower-case.
                        let k = k.to_ascii_lowercase();
                        let p = if prefix.is_empty() {
                            k
                        } else {
                            format!("{prefix}.{k}")
                        };
                        out.insert(p.clone());
                        paths(&p, v, out);
                    }
                }
                toml::Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        paths(&format!("{prefix}[{i}]"), v, out);
                    }
                }
                _ => {}
            }
        }
        let (path, text) = repository_file("switchyard.toml");
        let dump = toml::to_string(&load(&text, &path)).unwrap();
        let document = |t: &str| toml::Value::Table(t.parse::<toml::Table>().unwrap());
        let (mut written, mut dumped) = (BTreeSet::new(), BTreeSet::new());
        paths("", &document(&text), &mut written);
        paths("", &document(&dump), &mut dumped);
        let missing: Vec<&String> = written.difference(&dumped).collect();
        assert!(missing.is_empty(), "not in the dump: {missing:?}\n{dump}");
        // And defaults are filled in: the minimal `[upstream.grpc]` got them all.
        for key in ["balance", "keepalive", "max_ejected_percent", "tls"] {
            assert!(dumped.contains(&format!("upstream.grpc.{key}")), "{key}");
        }
    }

    #[test]
    fn demo_dump_writes_defaults_and_the_files_shape() {
        let text = toml::to_string(&demo()).unwrap();
        for line in [
            "[[route]]\naccess_log = true\npath = \"/\"\nupstream = \"bots\"\n",
            "connect_timeout = \"1m\"\n",
            "tunnel_timeout = \"1h\"\n",
            "next_upstream = [\"error\", \"timeout\"]\n",
            "next_upstream_timeout = \"0s\"\n",
            "retry_body_limit = \"64KiB\"\n",
            "[upstream.bots.health_check]\nmethod = \"GET\"\npath = \"/health\"\ninterval = \"2s\"\n",
            "jitter = \"10%\"\n",
            "expect_status = \"200-399\"\n",
            "tls = false\n",
            "[[upstream.api.servers]]\naddr = \"127.0.0.1:9101\"\nweight = 5\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        // Keys of other algorithms than round_robin are not written: the loader
        // would refuse them.
        assert!(!text.contains("ewma") && !text.contains("hash"), "{text}");
    }

    /// Writes a self-signed certificate for `names` and its key into `dir`.
    fn certificate(dir: &Path, stem: &str, names: &[&str]) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join(format!("{stem}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    }

    /// Every route action, methods, `path_exact`, host names, a TLS listener with
    /// an SNI certificate, a redirecting listener, upstream TLS with a CA file,
    /// health checks, sticky sessions, hash keys and every algorithm.
    fn everything(dir: &Path) -> String {
        certificate(dir, "site", &["site.test"]);
        certificate(dir, "other", &["other.test", "*.other.test"]);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(dir.join("ca.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
        r#"
[admin]
listen = "127.0.0.1:9901"
token = "s3cret"

[access_log]
path = "stdout"
format = "combined"

[[listener]]
name = "https"
listen = "127.0.0.1:8443"
hsts = "max-age=63072000; includeSubDomains"

[listener.tls]
cert = "site.crt"
key = "site.key"
min_version = "1.3"
session_tickets = false

[[listener.tls.sni]]
cert = "other.crt"
key = "other.key"

[[listener]]
name = "http"
listen = "127.0.0.1:8080"
redirect_https = true
https_port = 8443

[[listener]]
name = "plain"
listen = "127.0.0.1:8081"
rate_limit = [{ rate = "100/s" }, { rate = "6000/m", key = "cookie:sid", store = "local" }]

[[route]]
name = "health"
listener = "plain"
path_exact = "/health"
respond = { status = 204, body = "", content_type = "text/plain" }

[[route]]
listener = "plain"
path = "/robots.txt"
respond = { body = "User-agent: *\nDisallow: /\n" }

[[route]]
host = "Old.Example.com"
redirect = { status = 308, location = "https://new.example.com$request_uri" }

[[route]]
host = "*.Example.com"
path = "/hook"
methods = ["POST", "PUT"]
upstream = "chats"
access_log = false
connect_timeout = "250ms"
read_timeout = "1m 30s"
send_timeout = "5s"
tunnel_timeout = "2h"
set_headers = { "X-Instance-ID" = "$upstream_addr", "X-Via" = "sy ${host}x $$5", "X-Drop" = "" }
next_upstream = ["non_idempotent", "http_429", "error", "http_502"]
next_upstream_tries = 0
next_upstream_timeout = "10s"
retry_body_limit = 1000
rate_limit = { rate = "10/s", burst = 5, key = "header:X-Chat-Id", delay = "all", status = 503 }
limit_conn = [{ max = 5 }, { max = 50, key = "route", status = 503 }]

[[route]]
host = "*.example.com"
path = "/hook"
methods = ["GET"]
upstream = "secure"
next_upstream = []
retry_body_limit = "2m"

[[route]]
path = "/"
upstream = "fleet"

[[route]]
path = "/grpc/"
upstream = "grpc"

[[route]]
path = "/any/"
upstream = "any"

[[route]]
path = "/few/"
upstream = "few"

[upstream.chats]
balance = "hash"
hash_key = "header:X-Chat-Id"
hash_balance_factor = 1.25
keepalive = 8
queue = { size = 20, timeout = "2s" }
servers = [
  { addr = "localhost:9012", weight = 3, max_fails = 0, fail_timeout = "30s", slow_start = "1m", max_conns = 50 },
  { addr = "127.0.0.1:9022", backup = true },
]

[upstream.fleet]
balance = "least_time"
least_time = "last_byte"
ewma_decay = "5s"
ewma_seed = "10ms"
max_ejected_percent = 100
sticky = { cookie = "SWY", ttl = "10m" }
health_check = { method = "HEAD", path = "/ready?full=1", host = "bots.internal", port = 9100, interval = "2s", timeout = "1s", jitter = "12.5%", rise = 1, fall = 5, expect_status = "204-206, 200", expect_body = "ok" }
servers = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002", down = true }]

[upstream.secure]
protocol = "h2"
tls = { sni = "origin.example", ca_file = "ca.pem" }
servers = [{ addr = "127.0.0.1:9443" }]

[upstream.grpc]
balance = "ewma"
protocol = "h2c"
health_check = {}
servers = [{ addr = "127.0.0.1:50051" }]

[upstream.any]
balance = "random"
tls = true
sticky = { cookie = "pick" }
servers = [{ addr = "127.0.0.1:9443" }]

[upstream.few]
balance = "least_conn"
tls = { verify = false }
servers = [{ addr = "127.0.0.1:9444" }]
"#
        .to_owned()
    }

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("switchyard-ser-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn every_feature_round_trips() {
        let dir = TempDir::new("all");
        let source = dir.0.join("switchyard.toml");
        let c = load(&everything(&dir.0), &source);
        let text = round_trip(&c);
        for line in [
            // Paths as written, relative to the file's directory.
            "cert = \"site.crt\"\nkey = \"site.key\"\nmin_version = \"1.3\"\nsession_tickets = false\n",
            "[[listener.tls.sni]]\ncert = \"other.crt\"\nkey = \"other.key\"\n",
            "protocol = \"h2\"\n\n[upstream.secure.tls]\nsni = \"origin.example\"\nca_file = \"ca.pem\"\nverify = true\n",
            "redirect_https = true\nhttps_port = 8443\n",
            "access_log = true\nhost = \"old.example.com\"\npath = \"/\"\n\n[route.redirect]\nstatus = 308\nlocation = \"https://new.example.com$request_uri\"\n",
            "name = \"health\"\naccess_log = true\nlistener = \"plain\"\npath_exact = \"/health\"\n\n[route.respond]\nstatus = 204\nbody = \"\"\ncontent_type = \"text/plain\"\n",
            "status = 200\nbody = \"\"\"\nUser-agent: *\nDisallow: /\n\"\"\"\ncontent_type = \"text/plain; charset=utf-8\"\n",
            "access_log = false\nhost = \"*.example.com\"\npath = \"/hook\"\nmethods = [\"POST\", \"PUT\"]\nupstream = \"chats\"\n",
            "read_timeout = \"1m 30s\"\n",
            "next_upstream = [\"error\", \"http_502\", \"http_429\", \"non_idempotent\"]\n",
            "next_upstream = []\n",
            "retry_body_limit = \"1000\"\n",
            "retry_body_limit = \"2MiB\"\n",
            "[route.set_headers]\nx-drop = \"\"\nx-instance-id = \"$upstream_addr\"\nx-via = \"sy ${host}x $$5\"\n",
            // One server per written name, however many addresses it resolved to.
            "[[upstream.chats.servers]]\naddr = \"localhost:9012\"\nweight = 3\n",
            "hash_key = \"header:x-chat-id\"\nhash_balance_factor = 1.25\n",
            "least_time = \"last_byte\"\newma_decay = \"5s\"\newma_seed = \"10ms\"\n",
            "jitter = \"12.5%\"\n",
            "expect_status = \"200,204-206\"\n",
            "host = \"bots.internal\"\nport = 9100\n",
            "tls = true\n",
            "[upstream.few.tls]\nverify = false\n",
            "[upstream.any.sticky]\ncookie = \"pick\"\nttl = \"1h\"\n",
            "[upstream.chats.queue]\nsize = 20\ntimeout = \"2s\"\n",
            // Without a timeout of its own, none is written (the route's
            // connect_timeout applies).
            "[upstream.any.queue]\nsize = 1000\n\n",
            "slow_start = \"1m\"\nmax_conns = 50\n",
            "token = \"s3cret\"\n",
            // Limits: one as a table, several as an array, defaults filled in.
            "[[listener.rate_limit]]\nrate = \"100/s\"\nburst = 0\nkey = \"client_ip\"\ndelay = 0\nstatus = 429\nstore = \"local\"\n",
            "[[listener.rate_limit]]\nrate = \"6000/m\"\nburst = 0\nkey = \"cookie:sid\"\n",
            "[route.rate_limit]\nrate = \"10/s\"\nburst = 5\nkey = \"header:x-chat-id\"\ndelay = \"all\"\nstatus = 503\nstore = \"local\"\n",
            "[[route.limit_conn]]\nmax = 5\nkey = \"client_ip\"\nstatus = 429\n\n[[route.limit_conn]]\nmax = 50\nkey = \"route\"\nstatus = 503\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert_eq!(text.matches("localhost:9012").count(), 1, "{text}");
        assert!(!text.contains("other_methods"), "{text}");
    }

    #[test]
    fn dump_names_its_source_and_redacts_the_token_unless_asked() {
        let dir = TempDir::new("dump");
        let source = dir.0.join("switchyard.toml");
        let c = load(&everything(&dir.0), &source);
        let dump = c.dump(Secrets::Redacted).unwrap();
        let first = dump.lines().next().unwrap();
        assert!(
            first.starts_with('#') && first.contains(&source.display().to_string()),
            "{first}"
        );
        assert!(!dump.contains("s3cret"), "{dump}");
        assert!(dump.contains("token = \"<redacted>\""), "{dump}");
        // The placeholder is not a usable token: the loader says so.
        let e = Config::parse(&source, &dump).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].path, "admin.token");
        assert!(e.problems[0].message.contains("--show-secrets"), "{e}");
        let shown = c.dump(Secrets::Shown).unwrap();
        assert!(shown.contains("token = \"s3cret\""), "{shown}");
        assert!(Config::parse(&source, &shown).is_ok());
    }

    #[test]
    fn paths_are_written_relative_to_the_files_directory_when_inside_it() {
        let rel = |p: &str, dir: &str| relative(Path::new(p), Path::new(dir));
        assert_eq!(rel("config/tls/a.pem", "config"), Path::new("tls/a.pem"));
        assert_eq!(rel("config/../a.pem", "config"), Path::new("../a.pem"));
        assert_eq!(rel("/etc/tls/a.pem", "config"), Path::new("/etc/tls/a.pem"));
        assert_eq!(rel("/etc/tls/a.pem", "/etc"), Path::new("tls/a.pem"));
        assert_eq!(rel("a.pem", ""), Path::new("a.pem"));
    }

    #[test]
    fn sizes() {
        assert_eq!(size_text(65536), "64KiB");
        assert_eq!(size_text(3 << 20), "3MiB");
        assert_eq!(size_text(2 << 30), "2GiB");
        assert_eq!(size_text(1000), "1000");
        assert_eq!(size_text(0), "0");
    }
}
