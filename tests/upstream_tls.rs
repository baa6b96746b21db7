//! HTTPS to origins: certificates from a test CA made at test time (rcgen), trusted
//! through `tls.ca_file`; SNI from the server's written name, from `tls.sni`, or none
//! for an IP; failures as 502 retried to the next server; `verify = false`; the
//! built-in roots by default; HTTP/2 over TLS by ALPN; health checks over the same
//! transport as the traffic.

mod common;

use std::time::Duration;

use common::upstream::{proto_origin, start_file, OriginSpec, ProtoOrigin, TestCa};
use common::TempDir;
use common::EXCHANGE_LIMIT;
use http::{StatusCode, Version};

/// A TLS origin speaking HTTP/1.1, with a certificate of `ca` for `names`.
async fn https_origin(ca: &TestCa, names: &[&str]) -> ProtoOrigin {
    proto_origin(OriginSpec::tls(&ca.leaf(names), &[b"http/1.1"])).await
}

/// A file with one listener, a catch-all route and upstream `u` made of `servers`
/// (as written in `addr`) and the upstream keys `extra`; the CA is written next to
/// it as `ca.pem`, so `ca_file = "ca.pem"` is relative to the file.
fn write_config(dir: &TempDir, ca: &TestCa, servers: &[String], extra: &str) -> std::path::PathBuf {
    dir.write("ca.pem", &ca.pem());
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ addr = \"{s}\" }}"))
        .collect();
    let text = format!(
        "{}[[route]]\nupstream = \"u\"\n\n[upstream.u]\n{extra}\nservers = [{}]\n",
        common::listeners(&["public"]),
        list.join(", ")
    );
    dir.write("config.toml", &text)
}

#[tokio::test]
async fn origin_verified_with_ca_file_gets_sni_from_the_written_name() {
    let ca = TestCa::new("ca file test");
    let origin = https_origin(&ca, &["localhost"]).await;
    let dir = TempDir::new("tls-name");
    // "localhost" may also resolve to ::1, where nothing listens: a refused connect
    // moves on to the next address, so every answer still comes from the origin.
    let port = origin.addr.port();
    let file = write_config(
        &dir,
        &ca,
        &[format!("localhost:{port}")],
        "tls = { ca_file = \"ca.pem\" }",
    );
    let running = start_file(&file).await;
    let addr = running.addr("public").unwrap();
    let r = common::get_host(addr, "app.example", "/x").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "HTTP/1.1 /x\n");
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].sni.as_deref(), Some("localhost"));
    // The client's Host is passed on, not the TLS name.
    assert_eq!(seen[0].host.as_deref(), Some("app.example"));
}

#[tokio::test]
async fn an_ip_address_sends_no_sni_and_is_verified_against_the_ip() {
    let ca = TestCa::new("ip test");
    let origin = https_origin(&ca, &["127.0.0.1"]).await;
    let dir = TempDir::new("tls-ip");
    let file = write_config(
        &dir,
        &ca,
        &[origin.addr.to_string()],
        "tls = { ca_file = \"ca.pem\" }",
    );
    let running = start_file(&file).await;
    let r = common::get(running.addr("public").unwrap(), "/ip").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(origin.seen()[0].sni, None);
}

#[tokio::test]
async fn explicit_sni_is_sent_and_the_certificate_must_match_it() {
    let ca = TestCa::new("sni test");
    let good = https_origin(&ca, &["origin.test"]).await;
    let other = https_origin(&ca, &["other.test"]).await;
    let extra = "tls = { sni = \"origin.test\", ca_file = \"ca.pem\" }";

    let dir = TempDir::new("tls-sni");
    let file = write_config(&dir, &ca, &[good.addr.to_string()], extra);
    let running = start_file(&file).await;
    let r = common::get(running.addr("public").unwrap(), "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(good.seen()[0].sni.as_deref(), Some("origin.test"));

    // A certificate for another name is refused: 502, and the origin never sees
    // the request.
    let dir = TempDir::new("tls-sni-mismatch");
    let file = write_config(&dir, &ca, &[other.addr.to_string()], extra);
    let running = start_file(&file).await;
    let r = common::get(running.addr("public").unwrap(), "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(other.seen().is_empty());
}

#[tokio::test]
async fn an_untrusted_origin_is_a_502_and_the_next_server_answers() {
    let ca = TestCa::new("trusted");
    let rogue_ca = TestCa::new("rogue");
    let good = https_origin(&ca, &["127.0.0.1"]).await;
    let rogue = https_origin(&rogue_ca, &["127.0.0.1"]).await;

    // Alone, the untrusted server gives 502.
    let dir = TempDir::new("tls-rogue");
    let extra = "tls = { ca_file = \"ca.pem\" }\nbalance = \"round_robin\"";
    let file = write_config(&dir, &ca, &[rogue.addr.to_string()], extra);
    let running = start_file(&file).await;
    let r = common::get(running.addr("public").unwrap(), "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);

    // Beside a good one, the TLS failure is a connect-phase failure: retried on the
    // good server, so no client sees it.
    let dir = TempDir::new("tls-rogue-pair");
    let file = write_config(
        &dir,
        &ca,
        &[rogue.addr.to_string(), good.addr.to_string()],
        extra,
    );
    let running = start_file(&file).await;
    let addr = running.addr("public").unwrap();
    for i in 0..6 {
        let r = common::get(addr, &format!("/{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.body);
    }
    assert_eq!(good.seen().len(), 6);
    assert!(rogue.seen().is_empty());
}

#[tokio::test]
async fn verify_false_accepts_any_certificate() {
    let rogue_ca = TestCa::new("unknown");
    let origin = https_origin(&rogue_ca, &["somewhere.else"]).await;
    let ca = TestCa::new("unused");
    let dir = TempDir::new("tls-noverify");
    let file = write_config(
        &dir,
        &ca,
        &[origin.addr.to_string()],
        "tls = { verify = false }",
    );
    let running = start_file(&file).await;
    let r = common::get(running.addr("public").unwrap(), "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn tls_true_trusts_the_built_in_roots_only() {
    let ca = TestCa::new("private");
    let origin = https_origin(&ca, &["127.0.0.1"]).await;
    let dir = TempDir::new("tls-default-roots");
    let file = write_config(&dir, &ca, &[origin.addr.to_string()], "tls = true");
    let running = start_file(&file).await;
    let r = common::get(running.addr("public").unwrap(), "/").await;
    // A private CA is not among the Mozilla roots.
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn h2_over_tls_is_negotiated_by_alpn() {
    let ca = TestCa::new("h2 tls");
    let origin = proto_origin(OriginSpec::tls(&ca.leaf(&["127.0.0.1"]), &[b"h2"])).await;
    let dir = TempDir::new("tls-h2");
    let file = write_config(
        &dir,
        &ca,
        &[origin.addr.to_string()],
        "protocol = \"h2\"\ntls = { ca_file = \"ca.pem\" }",
    );
    let running = start_file(&file).await;
    let addr = running.addr("public").unwrap();
    let r = common::send(
        addr,
        "POST",
        "/up?q=1",
        &[("host", "app.example")],
        Some(b"data"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "HTTP/2.0 /up\ndata");
    let seen = origin.seen();
    assert_eq!(seen[0].version, Version::HTTP_2);
    // The client's Host travels as :authority.
    assert_eq!(seen[0].host.as_deref(), Some("app.example"));

    // An origin that only speaks HTTP/1.1 over TLS fails ALPN: 502.
    let h1 = proto_origin(OriginSpec::tls(&ca.leaf(&["127.0.0.1"]), &[b"http/1.1"])).await;
    let dir = TempDir::new("tls-h2-refused");
    let file = write_config(
        &dir,
        &ca,
        &[h1.addr.to_string()],
        "protocol = \"h2\"\ntls = { ca_file = \"ca.pem\" }",
    );
    let running = start_file(&file).await;
    let r = common::get(running.addr("public").unwrap(), "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(h1.seen().is_empty());
}

/// Health checks speak what the traffic speaks: an HTTP/2-over-TLS upstream is
/// checked over HTTP/2 with TLS (and its SNI), and a server whose certificate is
/// not trusted fails its checks.
#[tokio::test]
async fn health_checks_use_the_upstream_tls_and_protocol() {
    let ca = TestCa::new("checks");
    let rogue_ca = TestCa::new("rogue checks");
    let good = proto_origin(OriginSpec::tls(&ca.leaf(&["localhost"]), &[b"h2"])).await;
    let rogue = proto_origin(OriginSpec::tls(&rogue_ca.leaf(&["localhost"]), &[b"h2"])).await;
    let dir = TempDir::new("tls-checks");
    let extra = "protocol = \"h2\"\ntls = { sni = \"localhost\", ca_file = \"ca.pem\" }\n\
        health_check = { interval = \"50ms\", timeout = \"1s\", fall = 1, rise = 1 }";
    let file = write_config(
        &dir,
        &ca,
        &[good.addr.to_string(), rogue.addr.to_string()],
        extra,
    );
    let running = start_file(&file).await;
    let snapshot = running.shared.load();
    let servers = &snapshot.upstreams[0].servers;
    let state = |i: usize| &servers[i].state;
    let deadline = tokio::time::Instant::now() + EXCHANGE_LIMIT;
    while state(1).is_up() || good.seen().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "checks did not take the untrusted server down ({} checks seen by the good one)",
            good.seen().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(state(0).is_up());
    let check = &good.seen()[0];
    assert_eq!(check.path, "/health");
    assert_eq!(check.version, Version::HTTP_2);
    assert_eq!(check.sni.as_deref(), Some("localhost"));
    assert!(
        rogue.seen().is_empty(),
        "no check got past the TLS handshake"
    );
}
