//! TLS termination: handshakes (1.2, 1.3; 1.1 refused), SNI certificate choice,
//! ALPN (h2, http/1.1), HTTP/2 streams over TLS, proxy headers and HSTS, the
//! redirect listener, certificate and key files (formats, chains, errors),
//! WebSocket-style upgrades over TLS, and certificates rotated on disk. Every
//! certificate is made at test time by a private CA (tests/common/tls.rs).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::tls::{
    any_cert_client, connect, h1, h2, peer_leaf, replace_file, Leaf, Pki, BOTH, H1, H2_H1,
};
use common::{start_origins, Resp, EXCHANGE_LIMIT};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use rustls::version::{TLS12, TLS13};
use switchyard::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TOML string for a path.
fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A "public" TLS listener with `leaf` as its default certificate, `tls_extra`
/// added to `[listener.tls]` and `listener_extra` to the listener, one catch-all
/// route to a single origin, and whatever `more` adds (other listeners, `sni`
/// tables after the listener).
fn tls_config(
    leaf: &Leaf,
    listener_extra: &str,
    tls_extra: &str,
    more: &str,
    origin: SocketAddr,
) -> String {
    format!(
        r#"
[[listener]]
name = "public"
listen = "127.0.0.1:0"
{listener_extra}

[listener.tls]
cert = {cert}
key = {key}
{tls_extra}

{more}

[[route]]
upstream = "origin"

[upstream.origin]
servers = [{{ addr = "{origin}" }}]
"#,
        cert = q(&leaf.cert),
        key = q(&leaf.key),
    )
}

async fn start(toml: &str) -> (Running, SocketAddr) {
    let running = common::start_proxy(toml).await;
    let addr = running.addr("public").expect("listener public");
    (running, addr)
}

/// `GET path` with `Host: host` over an HTTP/1.1 connection.
async fn get1(tx: &mut http1::SendRequest<Full<Bytes>>, host: &str, path: &str) -> Resp {
    let req = Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let fut = async {
        tx.ready().await.expect("connection ready");
        Resp::read(tx.send_request(req).await.expect("response")).await
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("exchange in time")
}

/// `GET https://host/path` over an HTTP/2 connection; the response's version too.
async fn get2(tx: &mut http2::SendRequest<Full<Bytes>>, host: &str, path: &str) -> (Version, Resp) {
    let req = Request::builder()
        .uri(format!("https://{host}{path}"))
        .version(Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let fut = async {
        tx.ready().await.expect("h2 ready");
        let res = tx.send_request(req).await.expect("h2 response");
        (res.version(), Resp::read(res).await)
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("h2 exchange in time")
}

// ---------------------------------------------------------------------------------
// Handshakes and versions
// ---------------------------------------------------------------------------------

/// TLS 1.2 and 1.3 clients (each allowing only that version) complete a verified
/// handshake, and the origin is told the request came over https.
#[tokio::test]
async fn tls12_and_tls13_handshakes_and_forwarded_proto_https() {
    let pki = Pki::new("versions");
    let leaf = pki.leaf("site", &["site.test"]);
    let o = start_origins(&["o"]).await;
    let (_p, addr) = start(&tls_config(&leaf, "", "", "", o[0])).await;
    for (version, expect) in [
        (&TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let s = connect(addr, "site.test", pki.client(&[version], H1))
            .await
            .unwrap_or_else(|e| panic!("{expect:?} handshake: {e}"));
        assert_eq!(s.get_ref().1.protocol_version(), Some(expect));
        let mut tx = h1(s).await;
        let r = get1(&mut tx, "site.test", "/x").await;
        assert_eq!(r.status, StatusCode::OK, "{expect:?}");
        assert_eq!(r.seen_one("x-forwarded-proto"), Some("https"), "{expect:?}");
        assert_eq!(r.seen_one("x-forwarded-host"), Some("site.test"));
    }
}

/// `min_version = "1.3"` refuses a client that speaks only TLS 1.2.
#[tokio::test]
async fn min_version_13_refuses_tls12_clients() {
    let pki = Pki::new("min13");
    let leaf = pki.leaf("site", &["site.test"]);
    let o = start_origins(&["o"]).await;
    let (_p, addr) = start(&tls_config(&leaf, "", "min_version = \"1.3\"", "", o[0])).await;
    let err = connect(addr, "site.test", pki.client(&[&TLS12], H1))
        .await
        .expect_err("a TLS 1.2-only client must be refused");
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");
    let s = connect(addr, "site.test", pki.client(&[&TLS13], H1))
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

/// A ClientHello as a TLS 1.1 client sends it: record and `client_version` 0x0302
/// and cipher suites of that era. With `modern`, it also carries the two TLS 1.2-era
/// extensions that tell a version (`signature_algorithms`, and `supported_versions`
/// listing only 1.1 and 1.0), like a newer client configured for 1.1 at most.
fn tls11_client_hello(modern: bool) -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
                  // ECDHE-ECDSA-AES128-SHA, ECDHE-RSA-AES128-SHA, AES128-SHA, AES256-SHA
    body.extend_from_slice(&[0x00, 0x08, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x2f, 0x00, 0x35]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut ext = Vec::new();
    let name = b"site.test";
    ext.extend_from_slice(&[0x00, 0x00]); // server_name
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0); // host_name
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]); // groups: P-256
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // point formats
    if modern {
        // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pkcs1_sha256
        ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01]);
        // supported_versions: TLS 1.1, TLS 1.0
        ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x02, 0x03, 0x01]);
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0x00]; // client_hello, 24-bit length
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x02]; // handshake record, TLS 1.1
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// A TLS 1.1 client is refused. What is asserted: the server's whole answer (read
/// until it closes the connection) is exactly one TLS record, a fatal alert, so
/// no ServerHello was sent. Its description is what rustls sends: for the hello
/// of a real TLS 1.1 client, which has no `signature_algorithms` (a TLS 1.2
/// extension rustls checks first), `handshake_failure` (40); for a hello that
/// lists its versions in `supported_versions`, `protocol_version` (70).
#[tokio::test]
async fn tls11_client_hello_is_refused_with_an_alert_and_no_server_hello() {
    let pki = Pki::new("tls11");
    let leaf = pki.leaf("site", &["site.test"]);
    let o = start_origins(&["o"]).await;
    let (_p, addr) = start(&tls_config(&leaf, "", "", "", o[0])).await;
    for (modern, alert) in [(false, 40u8), (true, 70)] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&tls11_client_hello(modern)).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(EXCHANGE_LIMIT, s.read_to_end(&mut answer))
            .await
            .expect("the server answers and closes in time")
            .expect("read the answer");
        // type 21 (alert), a version, length 2, level 2 (fatal), description.
        assert_eq!(answer.len(), 7, "modern={modern}: {answer:02x?}");
        assert_eq!(
            answer[0], 0x15,
            "modern={modern}: not an alert: {answer:02x?}"
        );
        assert_eq!(
            &answer[3..],
            &[0x00, 0x02, 0x02, alert],
            "modern={modern}: {answer:02x?}"
        );
    }
}

/// A client that connects and says nothing does not hold up other clients'
/// handshakes: the handshake runs in the connection's task, not the accept loop.
#[tokio::test]
async fn silent_client_does_not_block_other_handshakes() {
    let pki = Pki::new("silent");
    let leaf = pki.leaf("site", &["site.test"]);
    let o = start_origins(&["o"]).await;
    let (_p, addr) = start(&tls_config(&leaf, "", "", "", o[0])).await;
    let _silent: Vec<TcpStream> = silent_connections(addr, 3).await;
    let s = tokio::time::timeout(
        Duration::from_secs(3),
        connect(addr, "site.test", pki.client(BOTH, H1)),
    )
    .await
    .expect("a handshake behind silent clients completes at once")
    .unwrap();
    let mut tx = h1(s).await;
    assert_eq!(get1(&mut tx, "site.test", "/").await.status, StatusCode::OK);
}

/// `n` TCP connections that send nothing.
async fn silent_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TcpStream::connect(addr).await.unwrap());
    }
    v
}

// ---------------------------------------------------------------------------------
// SNI
// ---------------------------------------------------------------------------------

/// The certificate is picked by the names it carries: exact, then a wildcard (one
/// label only), else the default, which also answers clients without SNI.
#[tokio::test]
async fn sni_picks_certificate_by_its_names_and_unknown_gets_default() {
    let pki = Pki::new("sni");
    let default = pki.leaf("default", &["default.test"]);
    let a = pki.leaf("a", &["a.test", "www.a.test"]);
    let wild = pki.leaf("wild", &["*.wild.test"]);
    let more = format!(
        "[[listener.tls.sni]]\ncert = {}\nkey = {}\n\n[[listener.tls.sni]]\ncert = {}\nkey = {}\n",
        q(&a.cert),
        q(&a.key),
        q(&wild.cert),
        q(&wild.key)
    );
    let o = start_origins(&["o"]).await;
    let (_p, addr) = start(&tls_config(&default, "", "", &more, o[0])).await;
    let cases: &[(&str, &Leaf)] = &[
        ("a.test", &a),
        ("WWW.A.test", &a),
        ("x.wild.test", &wild),
        ("deep.x.wild.test", &default),
        ("wild.test", &default),
        ("unknown.test", &default),
        ("default.test", &default),
        // An IP address: rustls sends no SNI.
        ("127.0.0.1", &default),
    ];
    for (name, want) in cases {
        let s = connect(addr, name, any_cert_client(H1)).await.unwrap();
        assert!(peer_leaf(&s) == want.der, "{name}: wrong certificate");
    }
    // The chosen certificates verify for their names against the CA.
    for name in ["a.test", "www.a.test", "x.wild.test", "default.test"] {
        let s = connect(addr, name, pki.client(BOTH, H1))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut tx = h1(s).await;
        assert_eq!(get1(&mut tx, name, "/").await.status, StatusCode::OK);
    }
}

// ---------------------------------------------------------------------------------
// ALPN and HTTP/2
// ---------------------------------------------------------------------------------

/// ALPN picks h2 when the client offers it, http/1.1 when that is all it offers;
/// without ALPN the connection's first bytes decide (HTTP/1.1 or HTTP/2).
#[tokio::test]
async fn alpn_negotiates_h2_and_http11() {
    let pki = Pki::new("alpn");
    let leaf = pki.leaf("site", &["site.test"]);
    let o = start_origins(&["o"]).await;
    let (_p, addr) = start(&tls_config(&leaf, "", "", "", o[0])).await;

    let s = connect(addr, "site.test", pki.client(BOTH, H2_H1))
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut tx = h2(s).await;
    let (v, r) = get2(&mut tx, "site.test", "/h2?q=1").await;
    assert_eq!((v, r.status), (Version::HTTP_2, StatusCode::OK));
    assert_eq!(r.origin_request_line(), "GET /h2?q=1 HTTP/1.1");
    assert_eq!(r.seen_one("x-forwarded-proto"), Some("https"));

    let s = connect(addr, "site.test", pki.client(BOTH, H1))
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut tx = h1(s).await;
    let r = get1(&mut tx, "site.test", "/h1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.origin_request_line(), "GET /h1 HTTP/1.1");

    let s = connect(addr, "site.test", pki.client(BOTH, &[]))
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    let mut tx = h1(s).await;
    assert_eq!(get1(&mut tx, "site.test", "/").await.status, StatusCode::OK);
    let s = connect(addr, "site.test", pki.client(BOTH, &[]))
        .await
        .unwrap();
    let mut tx = h2(s).await;
    let (v, r) = get2(&mut tx, "site.test", "/").await;
    assert_eq!((v, r.status), (Version::HTTP_2, StatusCode::OK));
}

/// Many concurrent HTTP/2 streams on one TLS connection, each forwarded to the
/// HTTP/1.1 origin and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_carries_many_streams_on_one_connection() {
    let pki = Pki::new("streams");
    let leaf = pki.leaf("site", &["site.test"]);
    let o = start_origins(&["o"]).await;
    let (_p, addr) = start(&tls_config(&leaf, "", "", "", o[0])).await;
    let s = connect(addr, "site.test", pki.client(BOTH, H2_H1))
        .await
        .unwrap();
    let tx = h2(s).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..64 {
        let mut tx = tx.clone();
        // Each origin response is delayed so that the streams overlap.
        set.spawn(async move {
            (
                i,
                get2(&mut tx, "site.test", &format!("/s{i}?delay=20ms")).await,
            )
        });
    }
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        let (i, (v, r)) = r.unwrap();
        assert_eq!(
            (v, r.status),
            (Version::HTTP_2, StatusCode::OK),
            "stream {i}"
        );
        assert_eq!(
            r.origin_request_line(),
            format!("GET /s{i}?delay=20ms HTTP/1.1")
        );
        done += 1;
    }
    assert_eq!(done, 64);
}

// ---------------------------------------------------------------------------------
// HSTS and the redirect listener
// ---------------------------------------------------------------------------------

/// `hsts` adds Strict-Transport-Security to every response of the TLS listener,
/// the proxy's own errors included, and a plain listener never sends it.
#[tokio::test]
async fn hsts_on_tls_listener_responses_only() {
    let pki = Pki::new("hsts");
    let leaf = pki.leaf("site", &["site.test"]);
    let o = start_origins(&["o"]).await;
    let more = "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\n";
    let toml = tls_config(&leaf, "hsts = \"365d\"", "", more, o[0]).replace(
        "[[route]]\nupstream = \"origin\"",
        "[[route]]\npath = \"/ok\"\nupstream = \"origin\"",
    );
    let (p, addr) = start(&toml).await;
    let s = connect(addr, "site.test", pki.client(BOTH, H1))
        .await
        .unwrap();
    let mut tx = h1(s).await;
    let ok = get1(&mut tx, "site.test", "/ok").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let missing = get1(&mut tx, "site.test", "/nothing-here").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let plain = common::get(p.addr("plain").unwrap(), "/ok").await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.header("strict-transport-security"), None);
    assert_eq!(plain.seen_one("x-forwarded-proto"), Some("http"));
}

/// `redirect_https` answers every request with a redirect to the same path and
/// query over https: 301 for GET and HEAD, 308 for other methods; the host comes
/// from the request without its port; `https_port` 443 is left out of the URL.
#[tokio::test]
async fn redirect_https_keeps_path_and_query() {
    let o = start_origins(&["o"]).await;
    let toml = format!(
        r#"
[[listener]]
name = "public"
listen = "127.0.0.1:0"
redirect_https = true
https_port = 8443

[[listener]]
name = "default_port"
listen = "127.0.0.1:0"
redirect_https = true

[[route]]
upstream = "origin"

[upstream.origin]
servers = [{{ addr = "{}" }}]
"#,
        o[0]
    );
    let (p, addr) = start(&toml).await;
    let host = [("host", "Example.com:8080")];
    let mut c = common::Conn::open(addr).await;
    let r = c.send("GET", "/a/b?x=1&y=%20", &host, None).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.header("location"),
        Some("https://example.com:8443/a/b?x=1&y=%20")
    );
    assert_eq!(r.origin(), "<none>", "the origin must not be asked");
    let r = c.send("HEAD", "/h", &host, None).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), Some("https://example.com:8443/h"));
    assert!(r.body.is_empty());
    let r = c.send("POST", "/form?id=7", &host, Some(b"a=1")).await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.header("location"),
        Some("https://example.com:8443/form?id=7")
    );
    let r = common::send(
        p.addr("default_port").unwrap(),
        "PUT",
        "/",
        &[("host", "example.com")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header("location"), Some("https://example.com/"));
    let r = common::get_host(p.addr("default_port").unwrap(), "[::1]:80", "/v6").await;
    assert_eq!(r.header("location"), Some("https://[::1]/v6"));
}

// ---------------------------------------------------------------------------------
// Certificate files
// ---------------------------------------------------------------------------------

/// Chains (leaf + intermediate in one file) and the three key encodings load, and
/// a client that trusts only the root verifies the chain the server sends.
#[tokio::test]
async fn chains_and_pkcs8_rsa_and_ec_keys_load_and_verify() {
    let pki = Pki::new("formats");
    let o = start_origins(&["o"]).await;
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cases = [
        (
            "pkcs8",
            pki.chained_leaf("pkcs8", &["site.test"], rcgen::KeyPair::generate().unwrap()),
            None,
        ),
        (
            "rsa",
            pki.chained_leaf("rsa", &["site.test"], rsa),
            Some("RSA PRIVATE KEY"),
        ),
        (
            "ec",
            pki.chained_leaf("ec", &["site.test"], rcgen::KeyPair::generate().unwrap()),
            Some("EC PRIVATE KEY"),
        ),
    ];
    for (what, leaf, label) in cases {
        if let Some(label) = label {
            // The PKCS#8 wrapper's inner key is the PKCS#1 / SEC1 encoding.
            std::fs::write(&leaf.key, inner_key_pem(&leaf.key_pem, label)).unwrap();
        }
        let key = std::fs::read_to_string(&leaf.key).unwrap();
        assert!(
            key.starts_with(&format!(
                "-----BEGIN {}-----",
                label.unwrap_or("PRIVATE KEY")
            )),
            "{what}"
        );
        let (_p, addr) = start(&tls_config(&leaf, "", "", "", o[0])).await;
        let s = connect(addr, "site.test", pki.client(BOTH, H1))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            s.get_ref().1.peer_certificates().unwrap().len(),
            2,
            "{what}: leaf and intermediate"
        );
        let mut tx = h1(s).await;
        assert_eq!(
            get1(&mut tx, "site.test", "/").await.status,
            StatusCode::OK,
            "{what}"
        );
    }
}

/// The key inside a PKCS#8 PEM (`PrivateKeyInfo.privateKey`), re-labelled: for RSA
/// that is PKCS#1 `RSAPrivateKey`, for EC the SEC1 `ECPrivateKey`.
fn inner_key_pem(pkcs8_pem: &str, label: &str) -> String {
    let der = pem_decode(pkcs8_pem);
    // SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey, ... }
    let (_, seq) = der_item(&der);
    let (rest, _) = der_split(seq); // version
    let (rest, _) = der_split(rest); // algorithm
    let (_, key) = der_item(rest);
    let b64 = base64(key);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// (tag, contents) of the DER item at the start of `d`.
fn der_item(d: &[u8]) -> (u8, &[u8]) {
    let (len, hdr) = der_len(&d[1..]);
    (d[0], &d[1 + hdr..1 + hdr + len])
}

/// (what follows the first item, the first item's contents).
fn der_split(d: &[u8]) -> (&[u8], &[u8]) {
    let (len, hdr) = der_len(&d[1..]);
    (&d[1 + hdr + len..], &d[1 + hdr..1 + hdr + len])
}

fn der_len(d: &[u8]) -> (usize, usize) {
    if d[0] < 0x80 {
        return (d[0] as usize, 1);
    }
    let n = (d[0] & 0x7f) as usize;
    (
        d[1..=n].iter().fold(0, |a, b| (a << 8) | *b as usize),
        1 + n,
    )
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn pem_decode(pem: &str) -> Vec<u8> {
    let b64: Vec<u8> = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.trim().bytes())
        .filter(|&b| b != b'=')
        .collect();
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for b in b64 {
        acc = (acc << 6) | B64.iter().position(|&c| c == b).expect("base64") as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn base64(d: &[u8]) -> String {
    let mut out = String::new();
    for chunk in d.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, b)| a | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Broken certificate and key files are configuration errors at their key path,
/// each naming its file, all reported at once.
#[test]
fn bad_files_are_config_errors_naming_the_file() {
    let pki = Pki::new("bad");
    let good = pki.leaf("good", &["good.test"]);
    let other = pki.leaf("other", &["other.test"]);
    let nonames = pki.leaf("nonames", &[]);
    let garbage = pki.dir.path("garbage.key");
    std::fs::write(&garbage, "this is not a key\n").unwrap();
    let missing = pki.dir.path("missing.crt");
    let broken_pem = pki.dir.path("broken.crt");
    std::fs::write(
        &broken_pem,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let encrypted = pki.dir.path("enc.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let listener = |i: usize, cert: &Path, key: &Path, extra: &str| {
        format!("[[listener]]\nname = \"l{i}\"\nlisten = \"127.0.0.1:0\"\n[listener.tls]\ncert = {}\nkey = {}\n{extra}\n", q(cert), q(key))
    };
    let text = [
        listener(0, &good.cert, &garbage, ""),
        listener(1, &missing, &good.key, ""),
        listener(2, &good.cert, &other.key, ""),
        listener(3, &broken_pem, &good.key, ""),
        listener(4, &good.cert, &encrypted, "min_version = \"1.1\""),
        listener(5, &good.cert, &good.key, "")
            + &format!(
                "[[listener.tls.sni]]\ncert = {}\nkey = {}\n",
                q(&nonames.cert),
                q(&nonames.key)
            ),
        "[[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n"
            .into(),
    ]
    .concat();
    let err = Config::parse(Path::new("x.toml"), &text).expect_err("must be rejected");
    let lines: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
    let want = [
        format!("x.toml: listener[0].tls.key: no private key found in {garbage:?}"),
        format!("x.toml: listener[1].tls.cert: cannot read {missing:?}: No such file or directory"),
        format!("x.toml: listener[2].tls.key: the private key in {:?} does not match the certificate in {:?}", other.key, good.cert),
        format!("x.toml: listener[3].tls.cert: invalid PEM in {broken_pem:?}"),
        "x.toml: listener[4].tls.min_version: expected \"1.2\" or \"1.3\", got \"1.1\"".into(),
        format!("x.toml: listener[4].tls.key: the private key in {encrypted:?} is encrypted"),
        format!("x.toml: listener[5].tls.sni[0].cert: {:?} has no DNS names", nonames.cert),
    ];
    for w in &want {
        assert!(
            lines.iter().any(|l| l.starts_with(w.as_str())),
            "missing {w:?} in:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(lines.len(), want.len(), "{}", lines.join("\n"));
}

/// `hsts`, `redirect_https` and `https_port` where they make no sense are errors.
#[test]
fn https_keys_out_of_place_are_config_errors() {
    let pki = Pki::new("keys");
    let leaf = pki.leaf("site", &["site.test"]);
    let text = format!(
        r#"
[[listener]]
name = "plain"
listen = "127.0.0.1:0"
hsts = "365d"
https_port = 8443

[[listener]]
name = "secure"
listen = "127.0.0.1:0"
redirect_https = true
hsts = "forever"
[listener.tls]
cert = {}
key = {}

[[route]]
upstream = "u"
[upstream.u]
servers = [{{ addr = "127.0.0.1:1" }}]
"#,
        q(&leaf.cert),
        q(&leaf.key)
    );
    let err = Config::parse(Path::new("x.toml"), &text).expect_err("must be rejected");
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "listener[0].https_port",
            "listener[0].hsts",
            "listener[1].redirect_https",
            "listener[1].hsts"
        ],
        "{err}"
    );
}

/// Relative certificate paths are taken from the configuration file's directory,
/// and `switchyard check` reports a bad key as the configuration error it is.
#[test]
fn check_resolves_relative_paths_and_reports_a_bad_key() {
    let pki = Pki::new("check");
    let leaf = pki.leaf("site", &["site.test"]);
    let file = pki.dir.path("switchyard.toml");
    let text = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"site.crt\"\nkey = \"site.key\"\n\n\
                [[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    std::fs::write(&file, text).unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&leaf.key, "garbage").unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!("{}: listener[0].tls.key: no private key found in {:?} (expected PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")", file.display(), leaf.key)
    );
}

// ---------------------------------------------------------------------------------
// Upgrades over TLS
// ---------------------------------------------------------------------------------

/// An origin that answers a WebSocket upgrade with 101 and then echoes every byte;
/// the request must say it came over https.
async fn echo_origin() -> SocketAddr {
    common::upgrade_echo_origin(
        "websocket",
        &[
            "\r\nupgrade: websocket\r\n",
            "connection: upgrade",
            "x-forwarded-proto: https",
        ],
    )
    .await
}

/// A WebSocket upgrade over TLS: the origin sees the upgrade (and
/// `X-Forwarded-Proto: https`), the client gets 101, and frames echo both ways.
#[tokio::test]
async fn websocket_echo_over_tls() {
    let pki = Pki::new("ws");
    let leaf = pki.leaf("site", &["site.test"]);
    let origin = echo_origin().await;
    let (_p, addr) = start(&tls_config(&leaf, "", "", "", origin)).await;
    let mut s = connect(addr, "site.test", pki.client(BOTH, H1))
        .await
        .unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nhost: site.test\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
          sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(EXCHANGE_LIMIT, s.read(&mut byte))
            .await
            .expect("101 in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed inside the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // A masked text frame "hello", as a browser sends it; the origin echoes bytes.
    let frame = [
        0x81,
        0x85,
        1,
        2,
        3,
        4,
        b'h' ^ 1,
        b'e' ^ 2,
        b'l' ^ 3,
        b'l' ^ 4,
        b'o' ^ 1,
    ];
    for _ in 0..3 {
        s.write_all(&frame).await.unwrap();
        let mut back = [0u8; 11];
        tokio::time::timeout(EXCHANGE_LIMIT, s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(back, frame);
    }
}

// ---------------------------------------------------------------------------------
// Rotation and reloads
// ---------------------------------------------------------------------------------

/// Writes `toml` to a file in a directory of its own under `pki`'s (so that the
/// certificates' directory is not watched for the configuration's sake) and
/// starts the proxy from it.
async fn start_file(pki: &Pki, toml: &str) -> (Running, SocketAddr) {
    let dir = pki.dir.path("conf");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchyard.toml");
    std::fs::write(&file, toml).unwrap();
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let running = switchyard::start(config, crate::common::WORKERS).expect("proxy starts");
    let addr = running.addr("public").unwrap();
    (running, addr)
}

/// Puts `new`'s certificate and key in `old`'s files, key first (a new key with
/// the old certificate is a mismatch the watch may see; it must then recover).
fn rotate(old: &Leaf, new: &Leaf) {
    replace_file(&old.key, new.key_pem.as_bytes());
    replace_file(&old.cert, new.cert_pem.as_bytes());
}

/// The leaf a fresh connection to `addr` gets.
async fn served(
    addr: SocketAddr,
    client: &std::sync::Arc<rustls::ClientConfig>,
) -> rustls::pki_types::CertificateDer<'static> {
    peer_leaf(&connect(addr, "site.test", client.clone()).await.unwrap())
}

/// A certificate rotated on disk is served to new connections without a restart
/// (the file watch reloads it); a connection opened before keeps working; a
/// broken key written later is a rejected reload (counted) and the certificate
/// in service stays.
#[tokio::test]
async fn rotated_certificate_is_served_without_restart() {
    let pki = Pki::new("rotate");
    let first = pki.leaf("site", &["site.test"]);
    let second = pki.leaf("second", &["site.test"]);
    let o = start_origins(&["o"]).await;
    let (p, addr) = start_file(&pki, &tls_config(&first, "", "", "", o[0])).await;
    let _watch =
        switchyard::watch::watch(p.control.clone(), &tokio::runtime::Handle::current()).unwrap();
    let client = pki.client(BOTH, H1);
    assert!(served(addr, &client).await == first.der);
    let mut old = h1(connect(addr, "site.test", client.clone()).await.unwrap()).await;
    assert_eq!(
        get1(&mut old, "site.test", "/").await.status,
        StatusCode::OK
    );

    rotate(&first, &second);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served(addr, &client).await != second.der {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get1(&mut old, "site.test", "/").await.status,
        StatusCode::OK,
        "old connection kept"
    );

    let failed = p.control.stats.failed.load(Ordering::Relaxed);
    replace_file(&first.key, b"not a key");
    let seen = common::control::eventually(Duration::from_secs(10), || {
        p.control.stats.failed.load(Ordering::Relaxed) > failed
    })
    .await;
    assert!(seen.is_some(), "the broken key was never noticed");
    let error = p
        .control
        .stats
        .last_error
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_default();
    assert!(
        error.contains("listener[0].tls.key: no private key found"),
        "{error}"
    );
    assert!(
        served(addr, &client).await == second.der,
        "the working certificate stays"
    );
}

/// A reload (SIGHUP or the admin API) reads the certificate files again, reports
/// the rotation, and keeps session resumption: a session from before the reload
/// resumes after it.
#[tokio::test]
async fn reload_rereads_certificates_and_sessions_resume_across_it() {
    let pki = Pki::new("reload");
    let first = pki.leaf("site", &["site.test"]);
    let second = pki.leaf("second", &["site.test"]);
    let o = start_origins(&["o"]).await;
    let (p, addr) = start_file(&pki, &tls_config(&first, "", "", "", o[0])).await;
    let client = pki.client(&[&TLS13], H1);
    let s = connect(addr, "site.test", client.clone()).await.unwrap();
    assert_eq!(
        s.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    // TLS 1.3 tickets arrive after the handshake: read a response to take them in.
    let mut tx = h1(s).await;
    assert_eq!(get1(&mut tx, "site.test", "/").await.status, StatusCode::OK);
    let again = connect(addr, "site.test", client.clone()).await.unwrap();
    assert_eq!(
        again.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );

    // Unchanged files: a reload changes nothing, and sessions still resume.
    assert!(p.control.reload().expect("reload").is_empty());
    let resumed = connect(addr, "site.test", client.clone()).await.unwrap();
    assert_eq!(
        resumed.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );

    rotate(&first, &second);
    let changes = p.control.reload().expect("reload");
    let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [format!(
            "changed listener public: certificate {:?} reloaded (new content)",
            first.cert
        )]
    );
    let fresh = pki.client(&[&TLS13], H1);
    assert!(served(addr, &fresh).await == second.der);
}

/// `check --diff-against` and reloads report TLS changes by key.
#[test]
fn diff_reports_tls_changes() {
    let pki = Pki::new("diff");
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test"]);
    let origin: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let old = tls_config(&a, "", "", "", origin);
    let sni = format!(
        "[[listener.tls.sni]]\ncert = {}\nkey = {}\n",
        q(&b.cert),
        q(&b.key)
    );
    let new = tls_config(
        &a,
        "hsts = \"max-age=60\"",
        "min_version = \"1.3\"\nsession_tickets = false",
        &sni,
        origin,
    )
        + "[[listener]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\nredirect_https = true\n";
    let parse = |t: &str| Config::parse(Path::new("x.toml"), t).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<String> = switchyard::config::diff(&parse(&old), &parse(&new))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "added listener http (127.0.0.1:0, redirect_https to port 443)".to_owned(),
            "changed listener public: hsts off → \"max-age=60\"".into(),
            "changed listener public: tls.min_version 1.2 → 1.3".into(),
            "changed listener public: tls.session_tickets true → false".into(),
            format!("changed listener public: tls.sni [] → [{:?}]", b.cert),
        ]
    );
    let plain = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"origin\"\n\n\
         [upstream.origin]\nservers = [{{ addr = \"{origin}\" }}]\n"
    );
    let lines: Vec<String> = switchyard::config::diff(&parse(&plain), &parse(&old))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [format!(
            "added listener public tls (cert {:?}, min_version 1.2)",
            a.cert
        )]
    );
}

/// The commented TLS example in config/switchyard.toml, uncommented and pointed at
/// real files, is a valid configuration: the documented keys stay in step with
/// the code.
#[test]
fn repository_config_tls_example_is_valid() {
    let pki = Pki::new("example");
    let leaf = pki.leaf("site", &["example.com"]);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/switchyard.toml"
    ))
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .windows(2)
        .position(|w| w == ["# [[listener]]", "# name = \"https\""])
        .expect("the TLS example in config/switchyard.toml");
    let mut toml = String::new();
    for l in lines[start..].iter().take_while(|l| l.starts_with('#')) {
        let l = l
            .strip_prefix("# ")
            .or_else(|| l.strip_prefix('#'))
            .unwrap();
        if l.starts_with("cert =") {
            toml += &format!("cert = {}\n", q(&leaf.cert));
        } else if l.starts_with("key =") {
            toml += &format!("key = {}\n", q(&leaf.key));
        } else {
            toml += l;
            toml.push('\n');
        }
    }
    toml += "[[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    let c = Config::parse(Path::new("example.toml"), &toml)
        .unwrap_or_else(|e| panic!("{e}\n---\n{toml}"));
    let https = &c.listeners[0];
    let tls = https
        .tls
        .as_ref()
        .expect("the example's first listener is TLS");
    assert_eq!(tls.sni.len(), 1);
    assert_eq!(https.hsts.as_ref().unwrap(), "max-age=31536000");
    assert_eq!(c.listeners[1].redirect_https, Some(8443));
}

// ---------------------------------------------------------------------------------
// Drain and listener changes
// ---------------------------------------------------------------------------------

/// On shutdown a request in flight over TLS completes, while a client that
/// connected and never sent its ClientHello does not hold the drain up (as a
/// silent plain connection does not): shutdown returns well before that client's
/// handshake would time out.
#[tokio::test]
async fn drain_finishes_tls_requests_and_does_not_wait_for_handshakes() {
    use common::control::{Mode, Origin};
    let pki = Pki::new("drain");
    let leaf = pki.leaf("site", &["site.test"]);
    let origin = Origin::start("slow").await;
    origin.set(Mode::Slow(Duration::from_millis(300)));
    let (p, addr) = start(&tls_config(&leaf, "", "", "", origin.addr())).await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    // Connections are accepted in order: once this one is served, the silent one
    // is in its handshake.
    let mut tx = h1(connect(addr, "site.test", pki.client(BOTH, H1))
        .await
        .unwrap())
    .await;
    let request = tokio::spawn(async move { get1(&mut tx, "site.test", "/slow").await });
    origin.wait_hit(EXCHANGE_LIMIT, |h| h.path == "/slow").await;
    let started = std::time::Instant::now();
    let drained = tokio::time::timeout(EXCHANGE_LIMIT, p.shutdown(Duration::from_secs(8)))
        .await
        .expect("shutdown returns");
    assert!(drained, "every connection closed within the drain timeout");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "shutdown took {took:?}: it waited for a handshake"
    );
    let r = request.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "slow\n");
}

/// A reload that adds `[listener.tls]` to a listener keeps its socket and makes
/// its new connections TLS; removing it turns it back to plain HTTP.
#[tokio::test]
async fn reload_switches_a_listener_between_plain_and_tls_on_the_same_socket() {
    let pki = Pki::new("switch");
    let leaf = pki.leaf("site", &["site.test"]);
    let o = start_origins(&["o"]).await;
    let tls = tls_config(&leaf, "", "", "", o[0]);
    let plain = tls.replace(
        &format!(
            "[listener.tls]\ncert = {}\nkey = {}\n",
            q(&leaf.cert),
            q(&leaf.key)
        ),
        "",
    );
    assert!(!plain.contains("[listener.tls]"));
    let (p, addr) = start_file(&pki, &plain).await;
    let file = pki.dir.path("conf").join("switchyard.toml");
    assert_eq!(
        common::get(addr, "/").await.seen_one("x-forwarded-proto"),
        Some("http")
    );

    replace_file(&file, tls.as_bytes());
    let changes: Vec<String> = p
        .control
        .reload()
        .expect("reload")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        changes,
        [format!(
            "added listener public tls (cert {:?}, min_version 1.2)",
            leaf.cert
        )]
    );
    assert_eq!(p.addr("public"), Some(addr), "the socket is kept");
    let mut tx = h1(connect(addr, "site.test", pki.client(BOTH, H1))
        .await
        .unwrap())
    .await;
    assert_eq!(
        get1(&mut tx, "site.test", "/")
            .await
            .seen_one("x-forwarded-proto"),
        Some("https")
    );

    replace_file(&file, plain.as_bytes());
    p.control.reload().expect("reload");
    assert_eq!(
        common::get(addr, "/").await.seen_one("x-forwarded-proto"),
        Some("http")
    );
    // The TLS connection opened before keeps working until it closes.
    assert_eq!(get1(&mut tx, "site.test", "/").await.status, StatusCode::OK);
}
