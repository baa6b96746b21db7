//! How the proxy talks to an upstream's servers: `protocol` (HTTP/1.1, HTTP/2 over
//! TLS, cleartext HTTP/2) and `tls` (https to the origins). Types, defaults and
//! their validation live together here; connections are made in
//! `upstream::transport`.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::raw::RawTls;
use super::validate::Checker;

/// The wire protocol to an upstream's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with a keep-alive pool (the default, as nginx's `proxy_pass`).
    Http1,
    /// HTTP/2 over TLS, negotiated with ALPN `h2` (gRPC origins, `grpcs://`).
    H2,
    /// HTTP/2 over cleartext TCP with prior knowledge (`grpc://`, h2c).
    H2c,
}

impl UpstreamProtocol {
    pub const NAMES: &'static [&'static str] = &["http1", "h2", "h2c"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "http1" => UpstreamProtocol::Http1,
            "h2" => UpstreamProtocol::H2,
            "h2c" => UpstreamProtocol::H2c,
            _ => return None,
        })
    }

    pub fn is_h2(self) -> bool {
        self != UpstreamProtocol::Http1
    }
}

/// `tls = { sni, ca_file, verify }` (or `tls = true`): HTTPS to the servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent as SNI and verified in the certificate (nginx's
    /// `proxy_ssl_name`). `None`: each server's host name as written in `addr`, or,
    /// for an address written as an IP, no SNI and verification against the IP.
    pub sni: Option<String>,
    /// Where `ca_certs` came from, for messages and the reload diff.
    pub ca_file: Option<PathBuf>,
    /// Trusted roots read from `ca_file` when the file was loaded; empty: the
    /// Mozilla roots compiled in (webpki-roots), so no system store is needed.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// nginx's `proxy_ssl_verify`, but on by default: an unverified origin is a
    /// man-in-the-middle waiting to happen, and turning it off must be explicit.
    pub verify: bool,
}

/// Certificates are verified unless `verify = false` says otherwise (nginx does not
/// verify by default; HAProxy's `ssl-server-verify` defaults to `required`, which is
/// what anyone turning TLS on expects).
pub const DEFAULT_TLS_VERIFY: bool = true;

/// Checks `protocol` and `tls` of upstream `base`. `dir` is the configuration file's
/// directory, against which a relative `ca_file` is read.
pub(super) fn check_transport(
    c: &mut Checker,
    base: &str,
    dir: &Path,
    protocol: Option<&str>,
    tls: Option<toml::Value>,
) -> (UpstreamProtocol, Option<UpstreamTls>) {
    let protocol = match protocol {
        None => UpstreamProtocol::Http1,
        Some(p) => UpstreamProtocol::parse(p).unwrap_or_else(|| {
            c.err(
                format!("{base}.protocol"),
                format!(
                    "unknown protocol {p:?} (expected one of: {})",
                    UpstreamProtocol::NAMES.join(", ")
                ),
            );
            UpstreamProtocol::Http1
        }),
    };
    let path = format!("{base}.tls");
    let raw = match tls {
        None | Some(toml::Value::Boolean(false)) => None,
        Some(toml::Value::Boolean(true)) => Some(RawTls::default()),
        Some(v @ toml::Value::Table(_)) => c.de::<RawTls>(&path, v),
        Some(_) => {
            c.err(
                &path,
                "expected true, false or a table such as { sni = \"origin.example\" }",
            );
            None
        }
    };
    let tls = raw.map(|t| check_tls(c, &path, dir, t));
    match (protocol, &tls) {
        (UpstreamProtocol::H2, None) => c.err(
            format!("{base}.protocol"),
            "\"h2\" is HTTP/2 over TLS and needs `tls`; cleartext HTTP/2 is \"h2c\"",
        ),
        (UpstreamProtocol::H2c, Some(_)) => c.err(
            format!("{base}.protocol"),
            "\"h2c\" is cleartext HTTP/2; with `tls` use \"h2\"",
        ),
        _ => {}
    }
    (protocol, tls)
}

fn check_tls(c: &mut Checker, path: &str, dir: &Path, t: RawTls) -> UpstreamTls {
    if let Some(sni) = &t.sni {
        if ServerName::try_from(sni.as_str()).is_err() {
            c.err(
                format!("{path}.sni"),
                format!("{sni:?} is not a valid DNS name or IP address"),
            );
        }
    }
    let verify = t.verify.unwrap_or(DEFAULT_TLS_VERIFY);
    if !verify && t.ca_file.is_some() {
        c.err(
            format!("{path}.ca_file"),
            "has no effect with verify = false (remove one of them)",
        );
    }
    let ca_file = t.ca_file.map(|f| dir.join(f));
    let ca_certs = match &ca_file {
        Some(f) => read_ca_file(c, &format!("{path}.ca_file"), f),
        None => Vec::new(),
    };
    UpstreamTls {
        sni: t.sni,
        ca_file,
        ca_certs,
        verify,
    }
}

/// Reads every certificate of a PEM file, reporting an unreadable file, a PEM error,
/// a file without certificates, or a certificate unusable as a trust anchor.
fn read_ca_file(c: &mut Checker, key: &str, file: &Path) -> Vec<CertificateDer<'static>> {
    let shown = file.display();
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            c.err(key, format!("cannot read {shown}: {e}"));
            return Vec::new();
        }
    };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = match certs {
        Ok(certs) if certs.is_empty() => {
            c.err(key, format!("{shown} holds no PEM certificate"));
            return Vec::new();
        }
        Ok(certs) => certs,
        Err(e) => {
            c.err(key, format!("{shown} is not valid PEM: {e}"));
            return Vec::new();
        }
    };
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        if let Err(e) = store.add(cert.clone()) {
            c.err(
                key,
                format!("certificate {} of {shown} is not a usable CA: {e}", i + 1),
            );
        }
    }
    certs
}
