//! Picks the certificate for a handshake from the client's SNI name, by the names
//! the certificates themselves carry (nginx makes you repeat them in
//! `server_name`; here the certificate is the single source).
//!
//! Lookup order, as nginx orders `server_name`s: an exact name, then a wildcard
//! (`*.example.com` covers exactly one more label, RFC 6125 §6.4.3), then the
//! listener's default certificate, which also answers clients that send no SNI.
//! When several certificates cover a name (an RSA and an ECDSA one, say), the
//! first in the file whose key can sign with a scheme the client offers wins.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use crate::config::Certificate;

#[derive(Debug)]
pub(crate) struct SniResolver {
    exact: HashMap<Box<str>, Vec<Arc<CertifiedKey>>>,
    /// `*.example.com` is kept under `example.com`.
    wildcard: HashMap<Box<str>, Vec<Arc<CertifiedKey>>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// `default` first, then `sni` in file order: the order ties are broken in.
    pub(crate) fn new(default: &Certificate, sni: &[Certificate]) -> Self {
        let mut exact: HashMap<Box<str>, Vec<Arc<CertifiedKey>>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Vec<Arc<CertifiedKey>>> = HashMap::new();
        for c in std::iter::once(default).chain(sni) {
            for name in &c.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent),
                    None => (&mut exact, name.as_str()),
                };
                let list = map.entry(key.into()).or_default();
                // A certificate that lists a name twice is one candidate.
                if !list.iter().any(|k| Arc::ptr_eq(k, &c.key)) {
                    list.push(Arc::clone(&c.key));
                }
            }
        }
        SniResolver {
            exact,
            wildcard,
            default: Arc::clone(&default.key),
        }
    }

    /// The certificate for a client asking for `name` and able to verify `schemes`.
    pub(crate) fn pick(
        &self,
        name: Option<&str>,
        schemes: &[SignatureScheme],
    ) -> Arc<CertifiedKey> {
        // rustls lower-cases the name (DNS names compare without case), as the
        // certificates' names are lower-cased at load.
        let Some(name) = name else {
            return Arc::clone(&self.default);
        };
        let found = self.exact.get(name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        });
        match found {
            Some(list) => Arc::clone(choose(list, schemes)),
            None => Arc::clone(&self.default),
        }
    }
}

/// The first candidate the client can verify, else the first (whose handshake then
/// fails with a clear alert). A lone candidate is not asked: `choose_scheme`
/// allocates, and rustls asks it again anyway.
fn choose<'a>(list: &'a [Arc<CertifiedKey>], schemes: &[SignatureScheme]) -> &'a Arc<CertifiedKey> {
    if list.len() > 1 {
        if let Some(k) = list.iter().find(|k| k.key.choose_scheme(schemes).is_some()) {
            return k;
        }
    }
    &list[0]
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name(), hello.signature_schemes()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rustls::pki_types::PrivateKeyDer;

    use super::*;
    use crate::tls::provider;

    /// A self-signed ECDSA P-256 certificate for `names` (no files: the resolver
    /// only needs the loaded key and the names).
    fn cert(names: &[&str]) -> Certificate {
        cert_with(names, rcgen::KeyPair::generate().unwrap())
    }

    fn cert_with(names: &[&str], key: rcgen::KeyPair) -> Certificate {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        let signing = provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .unwrap();
        Certificate {
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
            key: Arc::new(CertifiedKey::new(vec![der], signing)),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    const SCHEMES: &[SignatureScheme] = &[SignatureScheme::ECDSA_NISTP256_SHA256];

    fn is(picked: Arc<CertifiedKey>, c: &Certificate) -> bool {
        Arc::ptr_eq(&picked, &c.key)
    }

    #[test]
    fn exact_beats_wildcard_which_covers_one_label_else_default() {
        let default = cert(&["default.test"]);
        let exact = cert(&["api.example.test"]);
        let wild = cert(&["*.example.test"]);
        let r = SniResolver::new(&default, &[wild.clone(), exact.clone()]);
        assert!(is(r.pick(Some("api.example.test"), SCHEMES), &exact));
        assert!(is(r.pick(Some("www.example.test"), SCHEMES), &wild));
        assert!(is(r.pick(Some("a.b.example.test"), SCHEMES), &default));
        assert!(is(r.pick(Some("example.test"), SCHEMES), &default));
        assert!(is(r.pick(Some("other.test"), SCHEMES), &default));
        assert!(is(r.pick(None, SCHEMES), &default));
    }

    #[test]
    fn ties_go_to_the_first_certificate_the_client_can_verify() {
        let default = cert(&["default.test"]);
        let ecdsa = cert(&["both.test"]);
        let rsa_key =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        let rsa = cert_with(&["both.test"], rsa_key);
        let r = SniResolver::new(&default, &[ecdsa.clone(), rsa.clone()]);
        assert!(is(r.pick(Some("both.test"), SCHEMES), &ecdsa));
        let rsa_only = &[SignatureScheme::RSA_PSS_SHA256];
        assert!(is(r.pick(Some("both.test"), rsa_only), &rsa));
        // A client that can verify neither still gets the first (its handshake
        // then fails with an alert rather than for want of a certificate).
        let ed25519_only = &[SignatureScheme::ED25519];
        assert!(is(r.pick(Some("both.test"), ed25519_only), &ecdsa));
        // The default's own names count too, before the sni list.
        let r = SniResolver::new(&ecdsa, std::slice::from_ref(&default));
        assert!(is(r.pick(Some("default.test"), SCHEMES), &default));
    }
}
