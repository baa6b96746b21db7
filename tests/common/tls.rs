//! TLS test helpers: a private CA made at test time (rcgen) whose leaf
//! certificates and keys are written as PEM files into a temporary directory, and
//! rustls clients (verifying against that CA, or accepting any certificate so that
//! a test can see which one the server chose).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use switchyard::upstream::transport::NoVerify;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::EXCHANGE_LIMIT;

use super::TempDir;

/// Replaces `path` as certbot and editors do: write a temporary file, rename it over.
pub fn replace_file(path: &Path, content: &[u8]) {
    let tmp = path.with_extension("swap");
    std::fs::write(&tmp, content).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// A leaf certificate as written to disk.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    /// PEM of the certificate file (the leaf, then the chain) and of the key.
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA and the directory its leaves are written to.
pub struct Pki {
    pub dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Switchyard test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki {
            dir: TempDir::new(tag),
            ca,
        }
    }

    /// The CA's certificate, for a client's trust store.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// An ECDSA P-256 leaf for `names`, signed by the CA, written as `STEM.crt` and
    /// `STEM.key` (PKCS#8).
    pub fn leaf(&self, stem: &str, names: &[&str]) -> Leaf {
        self.leaf_with_key(stem, names, KeyPair::generate().unwrap())
    }

    /// As `leaf`, with a key of the caller's choosing.
    pub fn leaf_with_key(&self, stem: &str, names: &[&str], key: KeyPair) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let leaf = Leaf {
            cert: self.dir.path(&format!("{stem}.crt")),
            key: self.dir.path(&format!("{stem}.key")),
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(&leaf.cert, &leaf.cert_pem).unwrap();
        std::fs::write(&leaf.key, &leaf.key_pem).unwrap();
        leaf
    }

    /// A leaf signed by an intermediate CA (itself signed by the root); the
    /// certificate file holds the leaf then the intermediate, as a `fullchain.pem`.
    pub fn chained_leaf(&self, stem: &str, names: &[&str], key: KeyPair) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Switchyard test intermediate");
        let inter =
            CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &self.ca).unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &inter).unwrap();
        let leaf = Leaf {
            cert: self.dir.path(&format!("{stem}.crt")),
            key: self.dir.path(&format!("{stem}.key")),
            der: cert.der().clone(),
            cert_pem: format!("{}{}", cert.pem(), inter.pem()),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(&leaf.cert, &leaf.cert_pem).unwrap();
        std::fs::write(&leaf.key, &leaf.key_pem).unwrap();
        leaf
    }

    /// A client that trusts only this CA.
    pub fn client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).unwrap();
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
pub const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
pub const H1: &[&[u8]] = &[b"http/1.1"];

/// A client that accepts any certificate (signatures are still checked), to see
/// which certificate the server picks for names it may not cover.
pub fn any_cert_client(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(BOTH)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// Connects to `addr` and completes a handshake for `name` (a DNS name, or an IP
/// address, for which rustls sends no SNI).
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("TLS handshake finished in time")
}

/// The leaf certificate the server presented.
pub fn peer_leaf(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref()
        .1
        .peer_certificates()
        .expect("server certificates")[0]
        .clone()
}

/// HTTP/1.1 over an established TLS stream.
pub async fn h1(s: TlsStream<TcpStream>) -> http1::SendRequest<Full<Bytes>> {
    let (tx, conn) = http1::handshake(TokioIo::new(s))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    tx
}

/// HTTP/2 over an established TLS stream.
pub async fn h2(s: TlsStream<TcpStream>) -> http2::SendRequest<Full<Bytes>> {
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    tx
}
