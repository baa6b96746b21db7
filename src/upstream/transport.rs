//! Connections to one server as its upstream's `protocol` and `tls` say: TCP, then
//! (with `tls`) a rustls handshake offering the protocol by ALPN, then an HTTP/1.1
//! or HTTP/2 client handshake. The pool and the health checks both connect through
//! here, so a check speaks exactly what the traffic speaks.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{ServerConfig, UpstreamProtocol, UpstreamTls};
use crate::error::ProxyError;

/// What decides how connections to a server are made; a server whose transport
/// changes across a reload is a new server (fresh pool, and with health checks it
/// waits for a passing check in the new protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportKey {
    pub protocol: UpstreamProtocol,
    pub tls: Option<UpstreamTls>,
    /// The name sent as SNI and verified; an IP address sends no SNI.
    pub server_name: Option<ServerName<'static>>,
}

/// How to reach one server.
#[derive(Clone)]
pub struct Transport {
    pub key: TransportKey,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key says everything; the connector holds no more than it.
        self.key.fmt(f)
    }
}

impl Transport {
    /// Cleartext HTTP/1.1, the default.
    pub fn plain() -> Self {
        Transport {
            key: TransportKey {
                protocol: UpstreamProtocol::Http1,
                tls: None,
                server_name: None,
            },
            tls: None,
        }
    }

    /// The transport to `server` of an upstream with `protocol` and `tls`; `client`
    /// is the upstream's TLS configuration (`client_config`), shared by its servers.
    pub fn new(
        protocol: UpstreamProtocol,
        tls: Option<&UpstreamTls>,
        client: Option<&Arc<ClientConfig>>,
        server: &ServerConfig,
    ) -> Self {
        let (Some(t), Some(client)) = (tls, client) else {
            return Transport {
                key: TransportKey {
                    protocol,
                    tls: None,
                    server_name: None,
                },
                tls: None,
            };
        };
        let name = server_name(t, server);
        Transport {
            key: TransportKey {
                protocol,
                tls: Some(t.clone()),
                server_name: Some(name.clone()),
            },
            tls: Some((TlsConnector::from(Arc::clone(client)), name)),
        }
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.key.protocol
    }

    /// `https` or `http`, for the `:scheme` of HTTP/2 requests.
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    /// Connects to `addr` and completes the TLS handshake, if any, within `timeout`
    /// (nginx's `proxy_connect_timeout` covers its SSL handshake too).
    pub async fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<Stream, ProxyError> {
        match tokio::time::timeout(timeout, self.connect_now(addr)).await {
            Ok(r) => r,
            Err(_) => Err(ProxyError::ConnectTimeout),
        }
    }

    async fn connect_now(&self, addr: SocketAddr) -> Result<Stream, ProxyError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(ProxyError::Connect)?;
        // Small proxied writes must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(ProxyError::Tls)?;
        if self.key.protocol == UpstreamProtocol::H2
            && tls.get_ref().1.alpn_protocol() != Some(b"h2")
        {
            return Err(ProxyError::Tls(io::Error::other(
                "the server did not agree to HTTP/2 (ALPN h2)",
            )));
        }
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// The SNI and verified name for `server`: `tls.sni`, else the host name written in
/// its `addr`, else (an IP address) the IP, which rustls verifies against the
/// certificate's IP addresses and does not send as SNI.
fn server_name(tls: &UpstreamTls, server: &ServerConfig) -> ServerName<'static> {
    let written = tls.sni.as_deref().or_else(|| {
        let host = server
            .name
            .rsplit_once(':')
            .map_or(&*server.name, |(h, _)| h);
        (server.name.parse::<SocketAddr>().is_err()).then_some(host)
    });
    written
        .and_then(|n| ServerName::try_from(n.to_owned()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(server.addr.ip().into()))
}

/// The crypto provider of every upstream TLS connection (`crypto::provider`).
fn provider() -> Arc<CryptoProvider> {
    Arc::clone(crate::crypto::provider())
}

/// The rustls client configuration of an upstream: its roots (`ca_file`, else the
/// Mozilla roots of webpki-roots), or no verification with `verify = false`, and
/// ALPN offering exactly the configured protocol.
pub fn client_config(tls: &UpstreamTls, protocol: UpstreamProtocol) -> Arc<ClientConfig> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports TLS 1.2 and 1.3");
    let mut config = if tls.verify {
        let mut roots = RootCertStore::empty();
        if tls.ca_certs.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            for c in &tls.ca_certs {
                // Validated when the file was loaded.
                let _ = roots.add(c.clone());
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::H2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Http1 | UpstreamProtocol::H2c => vec![b"http/1.1".to_vec()],
    };
    Arc::new(config)
}

/// `verify = false`: any certificate is accepted (the handshake's signatures are
/// still checked, so the session is encrypted to whoever holds the key; only who
/// that is goes unchecked). Public for test clients, which trust certificates
/// made a moment ago.
#[derive(Debug)]
pub struct NoVerify(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ===== impl Stream =====

/// A connection to a server, cleartext or TLS. An enum rather than a boxed trait
/// object: each read and write is one branch, not an indirect call.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> ServerConfig {
        ServerConfig {
            name: name.to_owned(),
            addr: "10.1.2.3:443".parse().unwrap(),
            weight: 1,
            down: false,
            backup: false,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            slow_start: Duration::ZERO,
            max_conns: 0,
        }
    }

    fn tls(sni: Option<&str>) -> UpstreamTls {
        UpstreamTls {
            sni: sni.map(str::to_owned),
            ca_file: None,
            ca_certs: Vec::new(),
            verify: true,
        }
    }

    #[test]
    fn sni_is_the_written_name_the_setting_or_none_for_an_ip() {
        let dns = |n: &str| ServerName::try_from(n.to_owned()).unwrap();
        assert_eq!(
            server_name(&tls(None), &server("api.internal:443")),
            dns("api.internal")
        );
        assert_eq!(
            server_name(&tls(Some("origin.example")), &server("api.internal:443")),
            dns("origin.example")
        );
        // An IP: verified against the IP, and rustls sends no SNI for it.
        assert_eq!(
            server_name(&tls(None), &server("10.1.2.3:443")),
            ServerName::IpAddress("10.1.2.3".parse::<std::net::IpAddr>().unwrap().into())
        );
    }
}
