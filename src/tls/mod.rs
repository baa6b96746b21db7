//! TLS termination with rustls: the SNI certificate resolver (`sni`), the `ServerConfig` of a listener, and the
//! handshake of one accepted connection.
//!
//! Certificates are read and checked with the configuration (`config::cert`). TLS 1.2
//! and 1.3 only; ALPN offers `h2` and `http/1.1`. Session resumption is on, as in
//! nginx: stateless tickets whose keys rotate (every 6 h, rustls's rotator) and a
//! small in-memory session cache for TLS 1.2 clients without ticket support. Both
//! belong to the listener, not to one configuration, so reloads keep them and
//! clients keep resuming across reloads.

mod sni;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub(crate) use sni::SniResolver;

pub(crate) use crate::crypto::provider;

use crate::config::{TlsConfig, TlsVersion};

/// How long a client may take to complete its handshake after connecting. A real
/// handshake needs two round trips and a few milliseconds of CPU; 10 s covers a
/// slow mobile link many times over, and frees the slot of a client that connects
/// and says nothing six times sooner than nginx's 60 s `ssl_handshake_timeout`.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS 1.2 sessions remembered per listener for clients that resume by session ID
/// (most use tickets, which need no memory here). A session is a few hundred
/// bytes, so this costs about 1 MiB at most; nginx's `ssl_session_cache shared:SSL:1m`
/// holds about 4000.
pub(crate) const SESSION_CACHE_SIZE: usize = 4096;

/// ALPN protocols offered, in the server's order of preference: HTTP/2 first, as
/// nginx with `http2 on` and HAProxy with `alpn h2,http/1.1`.
pub(crate) const ALPN_H2: &[u8] = b"h2";
pub(crate) const ALPN_HTTP11: &[u8] = b"http/1.1";

/// What a listener keeps across reloads so that clients can resume sessions.
#[derive(Debug)]
pub(crate) struct Sessions {
    /// `None` if the ticket keys could not be made (no randomness); clients then
    /// resume through the cache only.
    ticketer: Option<Arc<dyn ProducesTickets>>,
    cache: Arc<dyn StoresServerSessions>,
}

impl Sessions {
    pub(crate) fn new() -> Self {
        let ticketer = match rustls::crypto::aws_lc_rs::Ticketer::new() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make TLS session ticket keys; tickets are off");
                None
            }
        };
        Sessions {
            ticketer,
            cache: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
        }
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new()
    }
}

/// The rustls configuration of a listener: its certificates behind the SNI
/// resolver, its protocol versions, ALPN and session resumption.
pub(crate) fn server_config(tls: &TlsConfig, sessions: &Sessions) -> Arc<ServerConfig> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider()))
        .with_protocol_versions(versions)
        .expect("aws-lc-rs has cipher suites for TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(&tls.default, &tls.sni)));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    config.session_storage = Arc::clone(&sessions.cache);
    // Without the ticketer (nginx's `ssl_session_tickets off`), rustls's TLS 1.3
    // tickets are only IDs into the cache: resumption stays, stateful.
    if tls.session_tickets {
        if let Some(t) = &sessions.ticketer {
            config.ticketer = Arc::clone(t);
        }
    }
    Arc::new(config)
}

/// The HTTP version the client chose by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    H2,
    Http11,
    /// No ALPN: the connection's first bytes tell (HTTP/2 prior knowledge or 1.x).
    None,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("TLS handshake not completed within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] io::Error),
}

/// Completes the server side of a handshake within `HANDSHAKE_TIMEOUT`.
pub(crate) async fn handshake(
    config: Arc<ServerConfig>,
    stream: TcpStream,
) -> Result<(TlsStream<TcpStream>, Alpn), HandshakeError> {
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept)
        .await
        .map_err(|_| HandshakeError::Timeout(HANDSHAKE_TIMEOUT))?
        .map_err(HandshakeError::Failed)?;
    let alpn = match stream.get_ref().1.alpn_protocol() {
        Some(ALPN_H2) => Alpn::H2,
        Some(_) => Alpn::Http11,
        None => Alpn::None,
    };
    Ok((stream, alpn))
}
