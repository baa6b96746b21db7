//! `switchyard import haproxy` (issue 17): golden files and equivalence with the
//! real HAProxy.
//!
//! Golden files: each `tests/import/haproxy/NAME.cfg` is imported by the binary,
//! run in a temporary directory holding a copy of it (so the report names it
//! `NAME.cfg`) and a test certificate at `certs/bots.pem` (the path the TLS
//! config names, so the translation loads); stdout must equal `NAME.toml`,
//! stderr `NAME.report`, and the exit status the one `CASES` gives.
//! `UPDATE_GOLDEN=1` rewrites the files instead. Every translation must pass
//! `switchyard check`; every broken config must be refused by `haproxy -c` too,
//! at the same line when HAProxy names one.
//!
//! Equivalence: `haproxy -db` (Debian's /usr/sbin/haproxy) runs a config rewritten
//! to listen on free loopback ports, its servers replaced by sample origins named
//! `BACKEND-SERVER`; Switchyard runs the import of that same rewritten config in
//! front of the same origins. The same requests (hosts, paths, methods, plain and
//! TLS) go to both: same status, same backend (the origin name's prefix), same
//! redirect location, the same `Host`, `X-Forwarded-For` and headers the config
//! sets or removes at the origin, and the response headers it sets.
//! Headers that differ by design: Switchyard also sets `X-Real-IP`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Request-Id`, and
//! `X-Forwarded-For` without `option forwardfor`, which HAProxy sends only when
//! told to (checked here on Switchyard's side).

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tls::{any_cert_client, connect, h1, H1};
use common::{Resp, TempDir, EXCHANGE_LIMIT};
use http::Request;
use http_body_util::Full;

/// Each golden config and the exit status its import must have.
const CASES: &[(&str, u8)] = &[
    ("bot-fleet", 3),
    ("api", 3),
    ("queue", 3),
    ("legacy", 3),
    ("www", 3),
    ("broken-quote", 1),
    ("broken-outside", 1),
    ("broken-section", 1),
    ("broken-backend", 1),
];

const HAPROXY: &str = "/usr/sbin/haproxy";

/// The largest `maxconn` HAProxy can take without root (it needs two file
/// descriptors per connection).
const MAX_CONN_HERE: u32 = 4000;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/haproxy")
}

/// A self-signed certificate and its key in one PEM, as HAProxy's `crt` takes it.
fn combined_pem(names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).expect("certificate");
    format!("{}{}", c.cert.pem(), c.signing_key.serialize_pem())
}

/// Writes the test certificate where the configs expect it.
fn write_certs(dir: &TempDir) -> PathBuf {
    std::fs::create_dir_all(dir.path("certs")).unwrap();
    let pem = dir.path("certs/bots.pem");
    std::fs::write(
        &pem,
        combined_pem(&["tg.bots.example.com", "discord.bots.example.com"]),
    )
    .unwrap();
    pem
}

/// Runs `switchyard ARGS` in `dir`: (stdout, stderr, exit status).
fn run(dir: &Path, args: &[&str]) -> (String, String, u8) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run switchyard");
    (
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
        out.status.code().expect("exit status") as u8,
    )
}

fn compare(path: &Path, actual: &str, mismatches: &mut Vec<String>) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        mismatches.push(format!(
            "{} differs (UPDATE_GOLDEN=1 rewrites it); got:\n{actual}",
            path.display()
        ));
    }
}

#[test]
fn golden_configs_translate_to_their_toml_and_report_and_pass_check() {
    let mut mismatches = Vec::new();
    let mut listed: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
    listed.sort_unstable();
    let mut present: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".cfg").map(str::to_owned)
        })
        .collect();
    present.sort_unstable();
    assert_eq!(present, listed, "every golden config is in CASES");
    for (name, status) in CASES {
        let dir = TempDir::new("import-haproxy");
        write_certs(&dir);
        let cfg = format!("{name}.cfg");
        std::fs::copy(golden_dir().join(&cfg), dir.path(&cfg)).unwrap();
        let (toml, report, code) = run(&dir.0, &["import", "haproxy", &cfg]);
        assert_eq!(code, *status, "{name}: exit status; stderr:\n{report}");
        compare(
            &golden_dir().join(format!("{name}.report")),
            &report,
            &mut mismatches,
        );
        if *status == 1 {
            assert!(toml.is_empty(), "{name}: nothing written on a syntax error");
            assert!(
                report.starts_with(&format!("{cfg}:")),
                "{name}: FILE:LINE: {report}"
            );
            // HAProxy refuses it too, at the same line when it names one.
            let ours = report.split(':').nth(1).unwrap().to_owned();
            let check = Command::new(HAPROXY)
                .args(["-c", "-f", &cfg])
                .current_dir(&dir.0)
                .output()
                .expect("run haproxy -c");
            let said = String::from_utf8_lossy(&check.stderr).into_owned();
            assert!(!check.status.success(), "{name}: haproxy -c accepts it");
            if let Some(at) = said.find(&format!("[{cfg}:")) {
                let line: String = said[at + cfg.len() + 2..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                assert_eq!(line, ours, "{name}: haproxy -c said {said}");
            }
            continue;
        }
        compare(
            &golden_dir().join(format!("{name}.toml")),
            &toml,
            &mut mismatches,
        );
        assert!(
            !report.contains("warning"),
            "{name}: the translation loads:\n{report}"
        );
        std::fs::write(dir.path("switchyard.toml"), &toml).unwrap();
        let (out, err, code) = run(&dir.0, &["check", "-c", "switchyard.toml"]);
        assert_eq!(code, 0, "{name}: switchyard check:\n{out}{err}\n{toml}");
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

/// The lines a translation cites: the `# from NAME.cfg:1-4, 7, …` comments of its
/// blocks and the `NAME.cfg:N:` lines of its report.
fn cited(name: &str, toml: &str, report: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let prefix = format!("# from {name}.cfg:");
    for l in toml.lines() {
        let Some(list) = l.strip_prefix(&prefix) else {
            continue;
        };
        let list = list.split(" (").next().unwrap();
        for part in list.split(", ") {
            match part.split_once('-') {
                Some((a, b)) => lines.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
                None => lines.push(part.parse().unwrap()),
            }
        }
    }
    let prefix = format!("{name}.cfg:");
    for l in report.lines() {
        if let Some(rest) = l.strip_prefix(&prefix) {
            lines.push(rest.split(':').next().unwrap().parse().unwrap());
        }
    }
    lines
}

#[test]
fn every_directive_is_translated_or_reported() {
    for (name, status) in CASES {
        if *status == 1 {
            continue;
        }
        let cfg = std::fs::read_to_string(golden_dir().join(format!("{name}.cfg"))).unwrap();
        let toml = std::fs::read_to_string(golden_dir().join(format!("{name}.toml"))).unwrap();
        let report = std::fs::read_to_string(golden_dir().join(format!("{name}.report"))).unwrap();
        let cited = cited(name, &toml, &report);
        // A note on a section's keyword line covers the whole section.
        let mut section_cited = false;
        for (i, line) in cfg.lines().enumerate() {
            let t = line.trim();
            if !t.is_empty() && !t.starts_with('#') && !line.starts_with([' ', '\t']) {
                section_cited = cited.contains(&(i + 1));
            }
            if section_cited {
                continue;
            }
            // Directives are indented; section keywords, blanks and comments are not directives.
            if t.is_empty() || t.starts_with('#') || !line.starts_with([' ', '\t']) {
                continue;
            }
            assert!(
                cited.contains(&(i + 1)),
                "{name}.cfg:{}: `{t}` is neither cited by a block nor in the report",
                i + 1
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Equivalence with HAProxy
// ---------------------------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The config rewritten to run here: binds on free loopback ports (HAProxy's
/// port for each original bind port), servers on the origins, no lines that need
/// root or system paths.
fn rewrite(cfg: &str, origins: &BTreeMap<String, SocketAddr>) -> (String, BTreeMap<u16, u16>) {
    let mut ports = BTreeMap::new();
    let mut section = String::new();
    let mut out = String::new();
    for line in cfg.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["frontend" | "backend" | "listen", name, ..] => section = (*name).to_owned(),
            ["user" | "group" | "daemon" | "chroot" | "pidfile" | "log", ..] => continue,
            ["stats", "socket", ..] => continue,
            _ => {}
        }
        let line = match words.as_slice() {
            // Unprivileged, HAProxy cannot raise its file limit to twice a large maxconn.
            ["maxconn", n] if n.parse::<u32>().unwrap() > MAX_CONN_HERE => {
                format!("    maxconn {MAX_CONN_HERE}")
            }
            ["bind", addr, rest @ ..] => {
                let orig: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
                let port = free_port();
                ports.insert(orig, port);
                format!("    bind 127.0.0.1:{port} {}", rest.join(" "))
            }
            ["server", name, _, rest @ ..] => {
                let a = origins[&format!("{section}-{name}")];
                format!("    server {name} {a} {}", rest.join(" "))
            }
            _ => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    (out, ports)
}

/// HAProxy in the foreground, stopped when dropped.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_haproxy(dir: &TempDir, cfg: &Path, ports: &BTreeMap<u16, u16>) -> Haproxy {
    let check = Command::new(HAPROXY)
        .args(["-c", "-f"])
        .arg(cfg)
        .current_dir(&dir.0)
        .output()
        .expect("run haproxy -c (Debian package haproxy)");
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(HAPROXY)
        .args(["-db", "-f"])
        .arg(cfg)
        .current_dir(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let h = Haproxy(child);
    let deadline = Instant::now() + EXCHANGE_LIMIT;
    for port in ports.values() {
        while TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(Instant::now() < deadline, "haproxy listens on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    h
}

/// One request: listener (original port), TLS or not, method, host, path.
type Probe = (u16, bool, &'static str, &'static str, &'static str);

/// The client address of most probes.
const CLIENT: [u8; 4] = [127, 0, 0, 1];

/// One exchange on a fresh connection; plain ones from the address `from`.
async fn exchange(
    addr: SocketAddr,
    from: [u8; 4],
    tls: bool,
    method: &str,
    host: &str,
    path: &str,
) -> Resp {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        // A header the api config removes.
        .header("x-debug", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let fut = async {
        let mut tx = if tls {
            h1(connect(addr, "tg.bots.example.com", any_cert_client(H1))
                .await
                .expect("TLS"))
            .await
        } else {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::from((from, 0)))
                .expect("bind the client address");
            let s = socket.connect(addr).await.expect("connect");
            let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                .await
                .expect("h1");
            tokio::spawn(conn);
            tx
        };
        tx.ready().await.expect("ready");
        Resp::read(tx.send_request(req).await.expect("response")).await
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("in time")
}

/// The backend that answered: the origin's name up to its last `-`.
fn pool(r: &Resp) -> String {
    let o = r.origin();
    o.rsplit_once('-').map_or(o, |(b, _)| b).to_owned()
}

async fn equivalent(name: &str, servers: &[&str], probes: &[Probe]) {
    equivalent_from(name, servers, probes, &[CLIENT]).await;
}

/// As `equivalent`, each plain probe sent from each of `sources`.
async fn equivalent_from(name: &str, servers: &[&str], probes: &[Probe], sources: &[[u8; 4]]) {
    let dir = TempDir::new("import-haproxy-eq");
    write_certs(&dir);
    let mut origins = BTreeMap::new();
    for s in servers {
        let (addr, _task) = switchyard::origin::spawn(common::loopback0(), s)
            .await
            .unwrap();
        origins.insert((*s).to_owned(), addr);
    }
    let source = std::fs::read_to_string(golden_dir().join(format!("{name}.cfg"))).unwrap();
    let (cfg, ports) = rewrite(&source, &origins);
    let cfg_path = dir.path(&format!("{name}.cfg"));
    std::fs::write(&cfg_path, &cfg).unwrap();
    let _haproxy = start_haproxy(&dir, &cfg_path, &ports);

    let (toml, report, code) = run(&dir.0, &["import", "haproxy", &format!("{name}.cfg")]);
    assert_ne!(code, 1, "import: {report}");
    // Switchyard's listeners on ports of their own; each mapped back to the
    // original bind port through HAProxy's.
    let mut by_port: BTreeMap<u16, String> = BTreeMap::new();
    let mut toml_here = String::new();
    let mut last_name = String::new();
    for line in toml.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            last_name = n.trim_matches('"').to_owned();
        }
        if let Some(a) = line.strip_prefix("listen = \"127.0.0.1:") {
            let p: u16 = a.trim_end_matches('"').parse().unwrap();
            if let Some((orig, _)) = ports.iter().find(|(_, hp)| **hp == p) {
                by_port.insert(*orig, last_name.clone());
            }
            toml_here.push_str("listen = \"127.0.0.1:0\"\n");
            continue;
        }
        toml_here.push_str(line);
        toml_here.push('\n');
    }
    let config = switchyard::Config::parse(&dir.path("switchyard.toml"), &toml_here)
        .unwrap_or_else(|e| panic!("{e}\n{toml_here}"));
    let running = common::start_config(config, common::WORKERS);

    // No wait for health checks: both count servers as up until checks fail.
    let runs = probes.iter().flat_map(|p| {
        sources
            .iter()
            .filter(move |f| !p.1 || **f == CLIENT)
            .map(move |f| (*p, *f))
    });
    for ((port, tls, method, host, path), from) in runs {
        let h = SocketAddr::from(([127, 0, 0, 1], ports[&port]));
        let s = running.addr(&by_port[&port]).expect("listener");
        let a = exchange(h, from, tls, method, host, path).await;
        let b = exchange(s, from, tls, method, host, path).await;
        let ip = std::net::Ipv4Addr::from(from).to_string();
        let what = format!(
            "{method} {host}{path} on :{port}{} from {ip}",
            if tls { " (TLS)" } else { "" }
        );
        assert_eq!(
            a.status, b.status,
            "{what}: status (HAProxy {a:?}, Switchyard {b:?})"
        );
        assert_eq!(pool(&a), pool(&b), "{what}: backend");
        assert_eq!(
            a.header("location"),
            b.header("location"),
            "{what}: redirect"
        );
        if a.header("x-origin").is_some() {
            assert_eq!(
                a.header("x-content-type-options"),
                b.header("x-content-type-options"),
                "{what}: response header"
            );
        }
        // The sample origin reports what it received (`/ping` answers `pong` alone).
        if a.body.contains("\nrequest: ") {
            for h in ["host", "x-client-ip", "x-api-version", "x-debug"] {
                assert_eq!(a.seen(h), b.seen(h), "{what}: {h} at the origin");
            }
            // X-Forwarded-For: the same where HAProxy sets it (option
            // forwardfor); Switchyard sets it always, by design.
            if !a.seen("x-forwarded-for").is_empty() {
                assert_eq!(
                    a.seen("x-forwarded-for"),
                    b.seen("x-forwarded-for"),
                    "{what}"
                );
            } else {
                assert_eq!(b.seen("x-forwarded-for"), [ip.as_str()], "{what}");
            }
            // By design: Switchyard's own proxy headers.
            assert_eq!(b.seen_one("x-real-ip"), Some(ip.as_str()), "{what}");
            assert_eq!(
                b.seen_one("x-forwarded-proto"),
                Some(if tls { "https" } else { "http" }),
                "{what}"
            );
            assert!(
                a.seen("x-real-ip").is_empty(),
                "{what}: HAProxy was not told to"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_as_haproxy_does() {
    let servers = [
        "api_v1-v1a",
        "api_v1-v1b",
        "api_v1-v1c",
        "api_v2-v2a",
        "api_v2-v2b",
        "dashboard-d1",
        "dashboard-d2",
    ];
    let h = "api.example.com";
    let probes: Vec<Probe> = [
        ("GET", "/v1/users"),
        ("POST", "/v1/users"),
        ("GET", "/v2/items?x=1"),
        ("DELETE", "/v2/items/7"),
        ("GET", "/v2"),
        ("GET", "/v1"),
        ("GET", "/ping"),
        ("GET", "/pingx"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/graphs"),
        ("GET", "/dashboardx"),
        ("PUT", "/"),
        ("GET", "/other/v2/"),
    ]
    .into_iter()
    .map(|(m, p)| (8080, false, m, h, p))
    .collect();
    equivalent("api", &servers, &probes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_fleet_answers_as_haproxy_does() {
    let servers = [
        "telegram-tg1",
        "telegram-tg2",
        "telegram-tg3",
        "discord-dc1",
        "discord-dc2",
        "admin-adm1",
        "static-web1",
        "static-web2",
    ];
    let tg = "tg.bots.example.com";
    let dc = "discord.bots.example.com";
    let other = "x.bots.example.com";
    let www = "www.example.com";
    let mut probes: Vec<Probe> = Vec::new();
    for (m, host, path) in [
        ("POST", tg, "/webhook/abc"),
        ("GET", tg, "/webhook"),
        ("POST", dc, "/webhook/123"),
        ("GET", dc, "/webhooks"),
        ("GET", tg, "/admin/stats"),
        ("GET", other, "/admin"),
        ("GET", other, "/webhook/abc"),
        ("GET", www, "/admin"),
        ("GET", www, "/"),
        ("HEAD", tg, "/index.html"),
    ] {
        probes.push((80, false, m, host, path));
        probes.push((443, true, m, host, path));
    }
    equivalent("bot-fleet", &servers, &probes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn www_redirects_and_503s_as_haproxy_does() {
    let servers = ["site-s1", "site-s2", "api-a1", "api-a2", "blogs-b1"];
    let mut probes: Vec<Probe> = Vec::new();
    for host in [
        "example.com",
        "www.example.com",
        "eng.blog.example.com",
        "blog.example.com",
        "other.example.org",
    ] {
        for (m, path) in [
            ("GET", "/"),
            ("GET", "/api/v1/users?id=3"),
            ("POST", "/api/v1/users"),
            ("GET", "/api"),
            ("GET", "/shop/cart"),
            ("GET", "/shop"),
            ("GET", "/about"),
            ("GET", "/haproxy-health"),
        ] {
            probes.push((8088, false, m, host, path));
        }
    }
    // 127.0.0.2 is outside the frontend's allowed addresses: 403 from both.
    equivalent_from("www", &servers, &probes, &[CLIENT, [127, 0, 0, 2]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_listen_section_answers_as_haproxy_does() {
    let servers = ["reports-r1", "reports-r2", "reports-r3", "reports-spare"];
    let probes: Vec<Probe> = [
        ("GET", "/"),
        ("GET", "/reports/42.pdf?fresh=1"),
        ("POST", "/reports"),
    ]
    .into_iter()
    .map(|(m, p)| (8000, false, m, "reports.internal", p))
    .collect();
    equivalent("queue", &servers, &probes).await;
}
