//! `switchyard import ingress`: golden files. Each `tests/import/ingress/NAME.yaml`
//! (with `NAME.svc.yaml`, the Services, when present) is imported by the binary,
//! run from that directory so the report's paths are stable; the TOML written and
//! the report on stderr must equal `NAME.toml` and `NAME.report`
//! (`UPDATE_GOLDEN=1` rewrites them), the exit status must be the one listed, and
//! every translation must pass `switchyard check`. The TLS Secrets it names are
//! made (rcgen) where the translation expects them mounted, beside the file.
//!
//! No equivalence test against ingress-nginx: that needs a cluster (the
//! controller reads the API server and Services' endpoints), which this machine
//! does not have.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/ingress")
}

/// The `secretName`s of an input, to make their files.
fn secrets(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("secretName:"))
        .map(|s| s.trim().trim_matches('"').to_owned())
        .collect()
}

fn write_secret(root: &Path, name: &str) {
    let d = root.join("tls").join(name);
    std::fs::create_dir_all(&d).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![format!("{name}.example")])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(d.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(d.join("tls.key"), key.serialize_pem()).unwrap();
}

/// Imports `name`, compares with the golden files, checks the result.
fn golden(name: &str, status: i32) {
    let dir = dir();
    let tmp = TempDir::new(&format!("import-ingress-{name}"));
    let input = format!("{name}.yaml");
    let text = std::fs::read_to_string(dir.join(&input)).unwrap();
    for s in secrets(&text) {
        write_secret(&tmp.0, &s);
    }
    let mut args = vec![input];
    if dir.join(format!("{name}.svc.yaml")).exists() {
        args.push(format!("{name}.svc.yaml"));
    }
    let out_file = tmp.path(&format!("{name}.toml"));
    let run = Command::new(BIN)
        .current_dir(&dir)
        .arg("import")
        .arg("ingress")
        .args(&args)
        .arg("-o")
        .arg(&out_file)
        .output()
        .unwrap();
    let report = String::from_utf8(run.stderr).unwrap();
    let toml = std::fs::read_to_string(&out_file).unwrap_or_default();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let report_file = dir.join(format!("{name}.report"));
    let toml_file = dir.join(format!("{name}.toml"));
    if update {
        std::fs::write(&report_file, &report).unwrap();
        if status != 1 {
            std::fs::write(&toml_file, &toml).unwrap();
        }
    }
    assert_eq!(
        run.status.code(),
        Some(status),
        "{name}: exit status; report:\n{report}"
    );
    let want = std::fs::read_to_string(&report_file).unwrap();
    assert_eq!(
        report, want,
        "{name}: the report differs (UPDATE_GOLDEN=1 rewrites)"
    );
    if status == 1 {
        assert!(
            !out_file.exists(),
            "{name}: nothing is written for invalid input"
        );
        return;
    }
    let want = std::fs::read_to_string(&toml_file).unwrap();
    assert_eq!(
        toml, want,
        "{name}: the TOML differs (UPDATE_GOLDEN=1 rewrites)"
    );
    assert!(
        !report.contains("does not load"),
        "{name}: the translation must load:\n{report}"
    );
    // resolve = true names are looked up by check and only warned about.
    let check = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{name}: check failed:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn bot_fleet_with_two_tls_hosts() {
    golden("bots", 3);
}

#[test]
fn api_with_rate_limits_and_an_allowlist() {
    golden("api", 3);
}

#[test]
fn legacy_list_with_many_unsupported_annotations() {
    golden("legacy", 3);
}

#[test]
fn service_manifests_name_ports_and_session_affinity() {
    golden("shop", 3);
}

#[test]
fn broken_yaml_is_a_syntax_error_with_its_line() {
    golden("broken", 1);
    let report = std::fs::read_to_string(dir().join("broken.report")).unwrap();
    assert!(report.starts_with("broken.yaml:"), "{report}");
}

#[test]
fn exact_translation_exits_zero() {
    golden("exact", 0);
}

#[test]
fn every_annotation_is_reported_or_translated() {
    // Each annotation line of the legacy export appears in its report.
    let dir = dir();
    let text = std::fs::read_to_string(dir.join("legacy.yaml")).unwrap();
    let report = std::fs::read_to_string(dir.join("legacy.report")).unwrap();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start();
        let key = t.split(':').next().unwrap_or("");
        if key.contains('/') && t.contains(": ") || t.ends_with(": |") && key.contains('/') {
            let at = format!("legacy.yaml:{}: {key}", i + 1);
            assert!(
                report.contains(&at) || key == "kubernetes.io/ingress.class",
                "{at} not in the report:\n{report}"
            );
        }
    }
}

/// A golden TOML as a table (it equals the binary's output: `golden` checks).
fn golden_toml(name: &str) -> toml::Table {
    std::fs::read_to_string(dir().join(format!("{name}.toml")))
        .unwrap()
        .parse()
        .unwrap()
}

fn routes(t: &toml::Table) -> &Vec<toml::Value> {
    t["route"].as_array().unwrap()
}

#[test]
fn prefix_paths_match_the_path_and_below_it_only() {
    // ingress-nginx's Prefix /telegram: /telegram and /telegram/…, not /telegramx.
    let t = golden_toml("bots");
    let on_https: Vec<_> = routes(&t)
        .iter()
        .filter(|r| r.get("listener").and_then(|l| l.as_str()) == Some("https"))
        .filter(|r| r["host"].as_str() == Some("hooks.example.com"))
        .collect();
    let exact: Vec<_> = on_https
        .iter()
        .filter_map(|r| r.get("path_exact"))
        .collect();
    let prefix: Vec<_> = on_https.iter().filter_map(|r| r.get("path")).collect();
    assert!(exact.iter().any(|p| p.as_str() == Some("/telegram")));
    assert!(prefix.iter().any(|p| p.as_str() == Some("/telegram/")));
    assert!(!prefix.iter().any(|p| p.as_str() == Some("/telegram")));
    // Exact stays exact; the TLS hosts redirect HTTP with 308.
    assert!(exact
        .iter()
        .any(|p| p.as_str() == Some("/discord/interactions")));
    let redirects = routes(&t)
        .iter()
        .filter(|r| r.get("listener").and_then(|l| l.as_str()) == Some("http"))
        .all(|r| r["redirect"]["status"].as_integer() == Some(308) && r.get("upstream").is_none());
    assert!(redirects);
    // upstream-hash-by wins over load-balance.
    let up = &t["upstream"]["bots-telegram-bot-8080"];
    assert_eq!(up["balance"].as_str(), Some("hash"));
    assert_eq!(up["hash_key"].as_str(), Some("header:x-chat-id"));
    assert_eq!(
        up["servers"][0]["addr"].as_str(),
        Some("telegram-bot.bots.svc.cluster.local:8080")
    );
    assert_eq!(up["servers"][0]["resolve"].as_bool(), Some(true));
}

#[test]
fn rate_limits_follow_ingress_nginx() {
    let t = golden_toml("api");
    let r = routes(&t)
        .iter()
        .find(|r| r.get("path").and_then(|p| p.as_str()) == Some("/v1/"))
        .unwrap();
    // rps and rpm: two limits, burst = rate × multiplier (3), 503.
    let limits = r["rate_limit"].as_array().unwrap();
    assert_eq!(limits[0]["rate"].as_str(), Some("20/s"));
    assert_eq!(limits[0]["burst"].as_integer(), Some(60));
    assert_eq!(limits[1]["rate"].as_str(), Some("600/m"));
    assert_eq!(limits[1]["burst"].as_integer(), Some(1800));
    assert!(limits.iter().all(|l| l["status"].as_integer() == Some(503)));
    assert_eq!(r["limit_conn"]["max"].as_integer(), Some(10));
    assert_eq!(r["connect_timeout"].as_str(), Some("3s"));
    // ssl-redirect "false": on every listener, no redirect.
    assert!(r.get("listener").is_none());
    // The allowlist, on the admin routes only.
    let admin: Vec<_> = routes(&t)
        .iter()
        .filter(|r| r.get("upstream").and_then(|u| u.as_str()) == Some("prod-api-admin-8080"))
        .collect();
    assert_eq!(admin.len(), 2);
    for r in admin {
        let allow: Vec<_> = r["allow"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(allow, ["203.0.113.0/24", "198.51.100.7"]);
    }
}

#[test]
fn services_give_ports_and_affinity() {
    let t = golden_toml("shop");
    let up = &t["upstream"];
    // Headless: the pods' targetPort; a named targetPort: the port's SRV record.
    assert_eq!(
        up["shop-cart-http"]["servers"][0]["addr"].as_str(),
        Some("cart.shop.svc.cluster.local:8080")
    );
    assert_eq!(
        up["shop-cart-http"]["sticky"]["cookie"].as_str(),
        Some("cart")
    );
    assert_eq!(
        up["shop-cart-http"]["sticky"]["ttl"].as_str(),
        Some("172800s")
    );
    assert_eq!(
        up["shop-storefront-80"]["servers"][0]["service"].as_str(),
        Some("_http._tcp.storefront.shop.svc.cluster.local")
    );
    // A named port through the manifest, and ClientIP affinity as a hash.
    let cat = &up["shop-catalogue-web"];
    assert_eq!(
        cat["servers"][0]["addr"].as_str(),
        Some("catalogue.shop.svc.cluster.local:8000")
    );
    assert_eq!(cat["balance"].as_str(), Some("hash"));
    assert_eq!(cat["hash_key"].as_str(), Some("client_ip"));
    // The defaultBackend takes the host's other paths and the unnamed hosts.
    let catch_all = routes(&t)
        .iter()
        .filter(|r| r.get("upstream").and_then(|u| u.as_str()) == Some("shop-storefront-80"))
        .count();
    assert_eq!(catch_all, 2);
}
