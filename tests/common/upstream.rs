//! Origins for the upstream-protocol tests: a test CA and certificates made with
//! rcgen at test time, an origin that serves HTTP/1.1 or HTTP/2 over TLS (ALPN) or
//! cleartext HTTP/2, reporting what it saw (version, SNI, headers), a gRPC-style
//! handler that answers with a body and trailers, a WebSocket echo origin, an HTTP/2
//! client to the proxy, and a temporary directory for configuration files.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

use super::loopback0;

// ===== certificates =====

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, ready for a rustls server.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test origin");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

// ===== origins =====

/// What an origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: http::Version,
    /// The SNI of the TLS connection it came on (`None`: none sent, or cleartext).
    pub sni: Option<String>,
    /// The request's authority (`:authority` in HTTP/2), else its Host header.
    pub host: Option<String>,
    pub headers: HeaderMap,
    pub path: String,
}

/// An origin under test: its address, the requests it saw and the connections it
/// accepted.
#[derive(Clone)]
pub struct ProtoOrigin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl ProtoOrigin {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// How an origin serves.
#[derive(Clone)]
pub struct OriginSpec {
    /// `Some`: TLS with this certificate, offering `alpn`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Serve HTTP/2 (prior knowledge when cleartext); else HTTP/1.1.
    pub h2: bool,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_streams: Option<u32>,
    /// Requests wait here before answering (so a known number are open at once).
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl OriginSpec {
    pub fn h2c() -> Self {
        OriginSpec {
            tls: None,
            h2: true,
            max_streams: None,
            gate: None,
        }
    }

    /// TLS with `leaf`, offering `alpn` (e.g. `[b"h2"]` or `[b"http/1.1"]`); HTTP/2
    /// is served when `alpn` offers only h2.
    pub fn tls(leaf: &Leaf, alpn: &[&[u8]]) -> Self {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
        .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        OriginSpec {
            tls: Some(Arc::new(config)),
            h2: alpn == [b"h2"],
            max_streams: None,
            gate: None,
        }
    }
}

/// Starts an origin as `spec` says. Each request gets 200 with a body naming its
/// version (`HTTP/2.0 /path`), echoing the request body after it, and, when the
/// request carries `content-type: application/grpc`, the trailers `grpc-status: 0`
/// and `grpc-message: ok`, as a gRPC server ends a call.
pub async fn proto_origin(spec: OriginSpec) -> ProtoOrigin {
    let l = TcpListener::bind(loopback0()).await.expect("bind origin");
    let origin = ProtoOrigin {
        addr: l.local_addr().expect("origin address"),
        seen: Arc::default(),
        connections: Arc::default(),
    };
    let o = origin.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            o.connections.fetch_add(1, Ordering::SeqCst);
            let (o, spec) = (o.clone(), spec.clone());
            tokio::spawn(async move {
                match &spec.tls {
                    None => serve(TokioIo::new(tcp), None, &spec, o).await,
                    Some(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let sni = tls.get_ref().1.server_name().map(str::to_owned);
                        serve(TokioIo::new(tls), sni, &spec, o).await
                    }
                }
            });
        }
    });
    origin
}

async fn serve<I>(io: I, sni: Option<String>, spec: &OriginSpec, o: ProtoOrigin)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let gate = spec.gate.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (o, sni, gate) = (o.clone(), sni.clone(), gate.clone());
        async move {
            let host = req.uri().authority().map(|a| a.to_string()).or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .map(|h| h.to_str().unwrap().to_owned())
            });
            o.seen.lock().unwrap().push(Seen {
                version: req.version(),
                sni,
                host,
                headers: req.headers().clone(),
                path: req.uri().path().to_owned(),
            });
            if let Some(g) = gate {
                let _permit = g.acquire().await.expect("gate open");
            }
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            let head = format!("{:?} {}\n", req.version(), req.uri().path());
            let body = req.into_body().collect().await.expect("request body");
            let mut out = head.into_bytes();
            out.extend_from_slice(&body.to_bytes());
            let body = Full::new(Bytes::from(out));
            let res = if grpc {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                trailers.insert("grpc-message", HeaderValue::from_static("ok"));
                let body = body
                    .with_trailers(async move { Some(Ok(trailers)) })
                    .boxed();
                let mut r = Response::new(body);
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                r
            } else {
                Response::new(body.boxed())
            };
            Ok::<_, Infallible>(res)
        }
    });
    if spec.h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        if let Some(n) = spec.max_streams {
            b.max_concurrent_streams(n);
        }
        let _ = b.serve_connection(io, svc).await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    }
}

/// A WebSocket origin: echoes every text and binary message back. Returns its
/// address and how many connections it accepted.
pub async fn websocket_echo_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind(loopback0()).await.expect("bind origin");
    let addr = l.local_addr().expect("origin address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

// ===== clients =====

/// An HTTP/2 prior-knowledge connection to the proxy at `addr`.
pub async fn h2_client<B>(addr: SocketAddr) -> http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    tx
}

// ===== files =====

/// Loads the configuration file at `path` and starts the proxy from it.
pub async fn start_file(path: &Path) -> switchyard::Running {
    let config = switchyard::Config::load(path)
        .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}"));
    switchyard::start(config, crate::common::WORKERS).expect("proxy starts")
}
