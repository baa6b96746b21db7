//! A listener's TLS keys: `[listener.tls]` (the default certificate, `min_version`,
//! `session_tickets`), `[[listener.tls.sni]]`, and the HTTPS-related `hsts`,
//! `redirect_https` and `https_port`. Certificate and key files are read here, so
//! a broken file is a configuration problem named with its key and file, and
//! `switchyard check` catches it as `nginx -t` does.

use std::path::Path;

use http::HeaderValue;

use super::cert::{self, Certificate, Which};
use super::raw::RawTls;
use super::validate::Checker;
use super::{
    TlsConfig, TlsVersion, DEFAULT_HTTPS_PORT, DEFAULT_SESSION_TICKETS, DEFAULT_TLS_MIN_VERSION,
};

/// A listener's validated TLS-related settings.
pub(super) struct ListenerTls {
    pub tls: Option<TlsConfig>,
    pub redirect_https: Option<u16>,
    pub hsts: Option<HeaderValue>,
}

/// The raw TLS-related keys of one `[[listener]]`.
pub(super) struct RawListenerTls {
    pub tls: Option<RawTls>,
    pub redirect_https: Option<bool>,
    pub https_port: Option<u16>,
    pub hsts: Option<String>,
}

/// Checks the keys of the listener at `base` (`listener[0]`); relative file names
/// are taken from `dir`, the configuration file's directory.
pub(super) fn check(c: &mut Checker, base: &str, raw: RawListenerTls, dir: &Path) -> ListenerTls {
    let is_tls = raw.tls.is_some();
    let tls = raw
        .tls
        .and_then(|t| check_tls(c, &format!("{base}.tls"), t, dir));

    let redirect = raw.redirect_https.unwrap_or(false);
    if redirect && is_tls {
        c.err(
            format!("{base}.redirect_https"),
            "a TLS listener is already HTTPS; put redirect_https on the plain-HTTP listener",
        );
    }
    if raw.https_port.is_some() && !redirect {
        c.err(
            format!("{base}.https_port"),
            "only used with redirect_https = true",
        );
    }
    let port = raw.https_port.unwrap_or(DEFAULT_HTTPS_PORT);
    if port == 0 {
        c.err(format!("{base}.https_port"), "must be between 1 and 65535");
    }

    let hsts = raw.hsts.and_then(|v| {
        let path = format!("{base}.hsts");
        if !is_tls {
            c.err(
                &path,
                "only used on TLS listeners ([listener.tls]): browsers ignore Strict-Transport-Security over plain HTTP (RFC 6797 §8.1)",
            );
            return None;
        }
        match hsts_value(&v) {
            Ok(h) => Some(h),
            Err(m) => {
                c.err(&path, m);
                None
            }
        }
    });
    ListenerTls {
        tls,
        redirect_https: redirect.then_some(port),
        hsts,
    }
}

fn check_tls(c: &mut Checker, base: &str, t: RawTls, dir: &Path) -> Option<TlsConfig> {
    let min_version = match t.min_version.as_deref() {
        None => DEFAULT_TLS_MIN_VERSION,
        Some("1.2" | "TLSv1.2") => TlsVersion::Tls12,
        Some("1.3" | "TLSv1.3") => TlsVersion::Tls13,
        Some(other) => {
            c.err(
                format!("{base}.min_version"),
                format!("expected \"1.2\" or \"1.3\", got {other:?} (TLS 1.0 and 1.1 are not supported)"),
            );
            DEFAULT_TLS_MIN_VERSION
        }
    };
    let default = pair(c, base, &t.cert, &t.key, dir);
    let mut sni = Vec::new();
    for (j, p) in t.sni.iter().enumerate() {
        let at = format!("{base}.sni[{j}]");
        let Some(cert) = pair(c, &at, &p.cert, &p.key, dir) else {
            continue;
        };
        if cert.names.is_empty() {
            c.err(
                format!("{at}.cert"),
                format!(
                    "{:?} has no DNS names in its subjectAltName, so no client name can choose it (make it the default certificate instead)",
                    cert.cert_path
                ),
            );
            continue;
        }
        sni.push(cert);
    }
    Some(TlsConfig {
        default: default?,
        sni,
        min_version,
        session_tickets: t.session_tickets.unwrap_or(DEFAULT_SESSION_TICKETS),
    })
}

/// Loads one certificate/key pair, reporting a problem at `base.cert` or `base.key`.
fn pair(c: &mut Checker, base: &str, cert: &str, key: &str, dir: &Path) -> Option<Certificate> {
    let mut ok = true;
    for (k, v) in [("cert", cert), ("key", key)] {
        if v.is_empty() {
            c.err(format!("{base}.{k}"), "must not be empty");
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    match cert::load(&dir.join(cert), &dir.join(key)) {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            let k = match e.which() {
                Which::Cert => "cert",
                Which::Key => "key",
            };
            c.err(format!("{base}.{k}"), e.to_string());
            None
        }
    }
}

/// `max-age=…[; includeSubDomains][; preload]` as given, or a duration as its max-age.
fn hsts_value(v: &str) -> Result<HeaderValue, String> {
    let invalid = || {
        format!(
            "invalid hsts {v:?} (expected a duration such as \"365d\" or a header value such as \"max-age=31536000; includeSubDomains\")"
        )
    };
    let lower = v.trim().to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("max-age=") {
        let secs = rest.split(';').next().unwrap_or_default().trim();
        if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        return HeaderValue::from_str(v.trim()).map_err(|_| invalid());
    }
    let d = humantime::parse_duration(v).map_err(|_| invalid())?;
    HeaderValue::from_str(&format!("max-age={}", d.as_secs())).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::hsts_value;

    #[test]
    fn hsts_from_a_header_value_or_a_duration() {
        assert_eq!(hsts_value("max-age=31536000").unwrap(), "max-age=31536000");
        assert_eq!(
            hsts_value("max-age=63072000; includeSubDomains; preload").unwrap(),
            "max-age=63072000; includeSubDomains; preload"
        );
        assert_eq!(hsts_value("365d").unwrap(), "max-age=31536000");
        assert_eq!(hsts_value("1h").unwrap(), "max-age=3600");
        assert!(hsts_value("max-age=").is_err());
        assert!(hsts_value("max-age=1y").is_err());
        assert!(hsts_value("forever").is_err());
    }
}
