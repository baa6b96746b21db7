//! Certificates and keys read from PEM files, as nginx's `ssl_certificate` and
//! `ssl_certificate_key` take them: the certificate file holds the leaf first and then
//! its chain; the key file one private key in PKCS#8 (`PRIVATE KEY`), PKCS#1
//! (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) form. Everything that can be wrong
//! with the pair is found here, at load time, and named with the file it is in.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::crypto::provider;

/// A certificate chain and its key, loaded and checked, with the names SNI can
/// pick it by.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The files as configured (relative ones resolved against the configuration
    /// file's directory), for messages, the file watch and `check --diff-against`.
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub key: Arc<CertifiedKey>,
    /// The leaf's subjectAltName DNS names, lower-cased, wildcards as
    /// `*.example.com`. The subject's common name is ignored, as browsers ignore it.
    pub names: Vec<String>,
}

impl Certificate {
    /// Whether two loads hold the same chain (a rotated file gives a new one).
    pub fn same_chain(&self, other: &Certificate) -> bool {
        self.key.cert == other.key.cert
    }
}

/// Which of the pair's two files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Cert,
    Key,
}

/// Why a certificate/key pair cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        which: Which,
        source: io::Error,
    },
    #[error("invalid PEM in {path:?}: {reason}")]
    Pem {
        path: PathBuf,
        which: Which,
        reason: String,
    },
    #[error("no certificate found in {0:?} (expected PEM \"BEGIN CERTIFICATE\" blocks, the server's first)")]
    NoCertificate(PathBuf),
    #[error("the first certificate in {path:?} cannot be parsed: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("no private key found in {0:?} (expected PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")")]
    NoKey(PathBuf),
    #[error("the private key in {0:?} is encrypted; Switchyard needs it unencrypted (as nginx does without ssl_password_file)")]
    EncryptedKey(PathBuf),
    #[error("unsupported private key in {path:?}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the private key in {key:?} does not match the certificate in {cert:?}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl CertError {
    /// The file the problem is in, so that validation can report it at the right key.
    pub fn which(&self) -> Which {
        match self {
            CertError::Read { which, .. } | CertError::Pem { which, .. } => *which,
            CertError::NoCertificate(_) | CertError::BadCertificate { .. } => Which::Cert,
            CertError::NoKey(_)
            | CertError::EncryptedKey(_)
            | CertError::BadKey { .. }
            | CertError::Mismatch { .. } => Which::Key,
        }
    }
}

/// Reads and checks the pair: the chain parses, the key is one the crypto provider
/// can sign with, and it belongs to the leaf certificate.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Certificate, CertError> {
    let read = |path: &Path, which| {
        std::fs::read(path).map_err(|source| CertError::Read {
            path: path.to_owned(),
            which,
            source,
        })
    };
    let cert_pem = read(cert_path, Which::Cert)?;
    let key_pem = read(key_path, Which::Key)?;

    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: cert_path.to_owned(),
            which: Which::Cert,
            reason: e.to_string(),
        })?;
    let leaf = chain
        .first()
        .ok_or_else(|| CertError::NoCertificate(cert_path.to_owned()))?;
    let names = dns_names(leaf).map_err(|reason| CertError::BadCertificate {
        path: cert_path.to_owned(),
        reason,
    })?;

    let key_der = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        // rustls reads no encrypted keys; say so rather than "no key found".
        Err(pem::Error::NoItemsFound) if contains(&key_pem, b"ENCRYPTED PRIVATE KEY") => {
            return Err(CertError::EncryptedKey(key_path.to_owned()))
        }
        Err(pem::Error::NoItemsFound) => return Err(CertError::NoKey(key_path.to_owned())),
        Err(e) => {
            return Err(CertError::Pem {
                path: key_path.to_owned(),
                which: Which::Key,
                reason: e.to_string(),
            })
        }
    };
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| CertError::BadKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
    let key = CertifiedKey::new(chain, signing);
    // A key of another pair would fail every handshake; refuse it here instead.
    if key.keys_match().is_err() {
        return Err(CertError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        });
    }
    Ok(Certificate {
        cert_path: cert_path.to_owned(),
        key_path: key_path.to_owned(),
        key: Arc::new(key),
        names,
    })
}

/// The leaf's DNS names, lower-cased (webpki has parsed and checked their syntax).
fn dns_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("{e:?}"))?;
    let mut names: Vec<String> = cert
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect();
    names.dedup();
    Ok(names)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
