//! How the proxy talks to an upstream's servers: `protocol` (HTTP/1.1, HTTP/2 over
//! TLS, cleartext HTTP/2) and `tls` (https to the origins). Types, defaults and
//! their validation live together here; connections are made in
//! `upstream::transport`.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::raw::RawUpstreamTls;
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
        Some(toml::Value::Boolean(true)) => Some(RawUpstreamTls::default()),
        Some(v @ toml::Value::Table(_)) => c.de::<RawUpstreamTls>(&path, v),
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

fn check_tls(c: &mut Checker, path: &str, dir: &Path, t: RawUpstreamTls) -> UpstreamTls {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::validate::validate;
    use super::*;

    fn upstream(keys: &str) -> String {
        format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n\n\
             [[route]]\nupstream = \"api\"\n\n\
             [upstream.api]\n{keys}\nservers = [{{ addr = \"127.0.0.1:9001\" }}]\n"
        )
    }

    fn problems(text: &str, dir: &Path) -> Vec<(String, String)> {
        validate(text, &dir.join("t.toml"))
            .expect_err("expected problems")
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn defaults_are_cleartext_http1_and_tls_true_verifies_with_builtin_roots() {
        let c = validate(&upstream(""), Path::new("t.toml")).unwrap();
        assert_eq!(c.upstreams[0].protocol, UpstreamProtocol::Http1);
        assert_eq!(c.upstreams[0].tls, None);
        let c = validate(&upstream("tls = true"), Path::new("t.toml")).unwrap();
        let tls = c.upstreams[0].tls.as_ref().unwrap();
        assert!(tls.verify && tls.sni.is_none() && tls.ca_certs.is_empty());
        let c = validate(
            &upstream("tls = false\nprotocol = \"h2c\""),
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.upstreams[0].tls, None);
        assert_eq!(c.upstreams[0].protocol, UpstreamProtocol::H2c);
    }

    #[test]
    fn every_transport_problem_is_reported_with_its_key() {
        let dir = Path::new("/nonexistent-switchyard-dir");
        let p = problems(
            &format!(
                "{}\n[upstream.b]\nprotocol = \"h2c\"\ntls = {{ verify = false, ca_file = \"ca.pem\" }}\n\
                 servers = [{{ addr = \"127.0.0.1:9002\" }}]\n\
                 [upstream.c]\nprotocol = \"http3\"\ntls = \"yes\"\nservers = [{{ addr = \"127.0.0.1:9003\" }}]\n\
                 [upstream.d]\ntls = {{ sni = \"bad name!\" }}\nservers = [{{ addr = \"127.0.0.1:9004\" }}]\n\
                 [upstream.e]\ntls = {{ pin = 1 }}\nservers = [{{ addr = \"127.0.0.1:9005\" }}]\n",
                upstream("protocol = \"h2\"")
            ),
            dir,
        );
        let has = |path: &str, part: &str| {
            assert!(
                p.iter().any(|(k, m)| k == path && m.contains(part)),
                "no {path}: …{part}… in {p:#?}"
            )
        };
        has("upstream.api.protocol", "needs `tls`");
        has("upstream.b.protocol", "cleartext HTTP/2");
        has("upstream.b.tls.ca_file", "no effect with verify = false");
        has(
            "upstream.b.tls.ca_file",
            "cannot read /nonexistent-switchyard-dir/ca.pem",
        );
        has("upstream.c.protocol", "unknown protocol \"http3\"");
        has("upstream.c.tls", "expected true, false or a table");
        has(
            "upstream.d.tls.sni",
            "\"bad name!\" is not a valid DNS name or IP address",
        );
        has("upstream.e.tls.pin", "unknown field `pin`");
        assert_eq!(p.len(), 8, "{p:#?}");
    }

    #[test]
    fn ca_file_is_read_relative_to_the_file_and_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("switchyard-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("empty.pem"), "no certificates here\n").unwrap();

        let c = validate(
            &upstream("tls = { ca_file = \"ca.pem\", sni = \"origin.example\" }"),
            &dir.join("t.toml"),
        )
        .unwrap();
        let tls = c.upstreams[0].tls.as_ref().unwrap();
        assert_eq!(tls.ca_certs, vec![ca.der().clone()]);
        assert_eq!(tls.ca_file.as_deref(), Some(dir.join("ca.pem").as_path()));
        assert_eq!(tls.sni.as_deref(), Some("origin.example"));

        let p = problems(&upstream("tls = { ca_file = \"empty.pem\" }"), &dir);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "upstream.api.tls.ca_file");
        assert!(p[0].1.ends_with("holds no PEM certificate"), "{p:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
