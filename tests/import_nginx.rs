//! `switchyard import nginx`: golden files and equivalence with the real nginx.
//!
//! Golden: every `tests/import/nginx/NAME.conf` is imported by the binary (run
//! in that directory, so paths in the report are relative and stable); its
//! stdout must be `NAME.toml`, its stderr and exit status `NAME.report`
//! (`UPDATE_GOLDEN=1` rewrites both), and each translation must pass
//! `switchyard check`. Broken configurations exit 1 with the file and line.
//!
//! Equivalence: `botfleet.conf`, `api.conf`, `multi.conf` (globbed includes)
//! and `limits.conf` (rate and connection limits), rewritten to loopback (free
//! ports, the sample origins in place of the servers, a temporary prefix), are
//! run by Debian's nginx and, imported, by Switchyard (`limits.conf` behind an
//! origin that holds a download until the test releases it, so "in flight" is
//! an awaited event); the same requests go to
//! both, and each answer must have the same status, come from the same pool
//! (the sample origins are named after their upstream), carry the same
//! redirect target or fixed body, and the origin must see the same forwarded
//! headers. Different by design, and not compared: `Connection` (nginx speaks
//! HTTP/1.0 with `close` to upstreams unless told otherwise), `X-Request-Id`
//! and `X-Forwarded-Host` (Switchyard always sends them), `X-Forwarded-For`
//! where nginx rewrote the client with set_real_ip_from (nginx appends the
//! client, Switchyard the peer it heard), error bodies (nginx's HTML pages), and
//! the added-slash redirect's Location (nginx writes it absolute, Switchyard
//! relative: the same target).

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tls::{any_cert_client, connect, h1, H1};
use common::{send, Resp, TempDir, EXCHANGE_LIMIT};
use http::Request;
use http_body_util::Full;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const NGINX: &str = "/usr/sbin/nginx";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/nginx")
}

/// The configurations under test, by name.
fn configs() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".conf").map(str::to_owned))
        .collect();
    v.sort();
    v
}

/// Runs `switchyard import nginx NAME.conf` in `cwd`: (stdout, stderr, status).
fn import(cwd: &Path, name: &str) -> (String, String, i32) {
    let out = Command::new(BIN)
        .current_dir(cwd)
        .args(["import", "nginx", &format!("{name}.conf")])
        .output()
        .expect("run switchyard import");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn golden_files_match_and_translations_pass_check() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let names = configs();
    assert!(names.len() >= 5, "{names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let (toml, report, status) = import(&dir(), name);
        let report = format!("{report}exit: {status}\n");
        let broken = name.starts_with("broken");
        if broken {
            assert_eq!(status, 1, "{name}: a syntax error exits 1\n{report}");
            assert!(toml.is_empty(), "{name}: nothing written on a syntax error");
            assert!(
                report.starts_with(&format!("{name}.conf:")) || report.contains(".conf:"),
                "{name}: the error names the file and line\n{report}"
            );
        } else {
            assert!(
                status == 0 || status == 3,
                "{name}: exit {status}\n{report}"
            );
        }
        let toml_path = dir().join(format!("{name}.toml"));
        let report_path = dir().join(format!("{name}.report"));
        if update {
            if !broken {
                std::fs::write(&toml_path, &toml).unwrap();
            }
            std::fs::write(&report_path, &report).unwrap();
        } else {
            if !broken {
                let want = std::fs::read_to_string(&toml_path).unwrap_or_default();
                if want != toml {
                    failures.push(format!("{name}.toml differs:\n{toml}"));
                }
            }
            let want = std::fs::read_to_string(&report_path).unwrap_or_default();
            if want != report {
                failures.push(format!("{name}.report differs:\n{report}"));
            }
        }
        if !broken {
            let out = Command::new(BIN)
                .current_dir(dir())
                .args(["check", "-c", &format!("{name}.toml")])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}.toml does not pass check:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(
        failures.is_empty(),
        "(UPDATE_GOLDEN=1 rewrites them)\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_noted_line_exists_and_dropped_things_are_reported() {
    let (_, report, status) = import(&dir(), "legacy");
    assert_eq!(status, 3);
    for needle in [
        "legacy.conf:46: proxy_pass: the URI part /v2/ replaces the matched prefix",
        "legacy.conf:54: location: regular-expression location",
        "legacy.conf:79: proxy_connect_timout: unknown directive",
        "legacy.conf:84: reverse_proxy: unknown directive",
        "legacy.conf:67: if:",
        "fastcgi_params:1: fastcgi_param:",
    ] {
        assert!(report.contains(needle), "missing {needle:?} in\n{report}");
    }
    // The rewritten prefix gets no route (never a route that forwards the wrong path).
    let (toml, _, _) = import(&dir(), "legacy");
    assert!(!toml.contains("path = \"/api/\""), "{toml}");
    // Allow/deny rules that cannot be carried close their route.
    assert!(toml.contains("path = \"/private/\""), "{toml}");
    let private = toml.split("path = \"/private/\"").nth(1).unwrap();
    let private = private.split("[[route]]").next().unwrap();
    assert!(
        private.contains("deny = [\"0.0.0.0/0\", \"::/0\"]"),
        "{private}"
    );
}

// ---- equivalence ----

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `text` with every `from` replaced by its `to`, longest first.
fn rewrite(text: &str, map: &[(String, String)]) -> String {
    let mut map = map.to_vec();
    map.sort_by_key(|(f, _)| std::cmp::Reverse(f.len()));
    let mut out = text.to_owned();
    for (f, t) in &map {
        out = out.replace(f.as_str(), t.as_str());
    }
    out
}

/// Copies the directory of the configurations (certificates, included files)
/// to `to`, rewriting every `.conf` file with `map`.
fn copy_tree(from: &Path, to: &Path, map: &[(String, String)]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst, map);
        } else if src.extension().is_some_and(|x| x == "conf") {
            std::fs::write(&dst, rewrite(&std::fs::read_to_string(&src).unwrap(), map)).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// nginx, stopped when dropped.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts nginx on `conf` (its prefix `prefix`) in the foreground and waits
/// until `probe` accepts connections.
fn start_nginx(prefix: &Path, conf: &Path, probe: SocketAddr) -> Nginx {
    let p = prefix.display();
    let test = Command::new(NGINX)
        .args([
            "-t",
            "-q",
            "-p",
            &format!("{p}/"),
            "-c",
            &conf.display().to_string(),
            "-e",
            &format!("{p}/error.log"),
        ])
        .args(["-g", &format!("daemon off; pid {p}/nginx.pid;")])
        .output()
        .expect("run nginx -t");
    assert!(
        test.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let child = Command::new(NGINX)
        .args([
            "-p",
            &format!("{p}/"),
            "-c",
            &conf.display().to_string(),
            "-e",
            &format!("{p}/error.log"),
        ])
        .args(["-g", &format!("daemon off; pid {p}/nginx.pid;")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let n = Nginx(child);
    let t = Instant::now();
    while std::net::TcpStream::connect(probe).is_err() {
        assert!(
            t.elapsed() < EXCHANGE_LIMIT,
            "nginx did not come up on {probe}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    n
}

/// Lines nginx cannot run unprivileged or outside /etc/nginx, and its temp
/// paths moved into the prefix.
fn for_nginx(text: &str, prefix: &Path) -> String {
    let p = prefix.display();
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("user ") || t.starts_with("pid ") || t.starts_with("error_log ") {
            continue;
        }
        if t.starts_with("access_log /") {
            out.push_str(&format!("    access_log {p}/access.log;\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if t.starts_with("http {") {
            for d in [
                "client_body_temp_path",
                "proxy_temp_path",
                "fastcgi_temp_path",
                "uwsgi_temp_path",
                "scgi_temp_path",
            ] {
                out.push_str(&format!("    {d} {p}/{d};\n"));
            }
        }
    }
    out
}

/// The same configuration twice: for nginx and for Switchyard, each on its own
/// ports, with the servers replaced by sample origins.
struct Pair {
    _dirs: (TempDir, TempDir),
    _nginx: Nginx,
    _switchyard: switchyard::Running,
    /// listener port in the source → (nginx's, switchyard's) address.
    ports: BTreeMap<u16, (SocketAddr, SocketAddr)>,
}

async fn pair(
    name: &str,
    listens: &[(&str, u16)],
    servers: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Pair {
    // The origins, named after their pool.
    let mut map: Vec<(String, String)> = Vec::new();
    for (addr, origin) in servers {
        let (a, _task) = switchyard::origin::spawn(common::loopback0(), origin)
            .await
            .unwrap();
        map.push(((*addr).to_owned(), a.to_string()));
    }
    for (f, t) in extra {
        map.push(((*f).to_owned(), (*t).to_owned()));
    }
    let mut ports: BTreeMap<u16, (SocketAddr, SocketAddr)> = BTreeMap::new();
    let mut nmap = map.clone();
    let mut smap = map.clone();
    for (text, port) in listens {
        let (n, s) = *ports.entry(*port).or_insert_with(|| {
            (
                SocketAddr::from(([127, 0, 0, 1], free_port())),
                SocketAddr::from(([127, 0, 0, 1], free_port())),
            )
        });
        nmap.push((
            (*text).to_owned(),
            text.replace(&port.to_string(), &n.to_string()),
        ));
        smap.push((
            (*text).to_owned(),
            text.replace(&port.to_string(), &s.to_string()),
        ));
    }
    let nd = TempDir::new("imnginx-n");
    let sd = TempDir::new("imnginx-s");
    copy_tree(&dir(), &nd.0, &nmap);
    copy_tree(&dir(), &sd.0, &smap);
    // nginx's workers run as another user when it starts as root: let them write
    // their temporary files in the prefix.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&nd.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let nconf = nd.path(&format!("{name}.conf"));
    let text = std::fs::read_to_string(&nconf).unwrap();
    std::fs::write(&nconf, for_nginx(&text, &nd.0)).unwrap();
    let (toml, report, status) = import(&sd.0, name);
    assert!(status == 0 || status == 3, "{report}");
    let at = sd.path("switchyard.toml");
    std::fs::write(&at, &toml).unwrap();
    let config = switchyard::Config::parse(&at, &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let running = common::start_config(config, common::WORKERS);
    let probe = ports.values().next().unwrap().0;
    let nginx = start_nginx(&nd.0, &nconf, probe);
    Pair {
        _dirs: (nd, sd),
        _nginx: nginx,
        _switchyard: running,
        ports,
    }
}

/// One request to send to both.
struct Ask<'a> {
    port: u16,
    /// SNI name for a TLS listener.
    tls: Option<&'a str>,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

async fn ask(addr: SocketAddr, a: &Ask<'_>) -> Resp {
    let mut headers: Vec<(&str, &str)> = vec![("host", a.host)];
    headers.extend_from_slice(a.headers);
    match a.tls {
        None => send(addr, a.method, a.path, &headers, None).await,
        Some(sni) => {
            let s = connect(addr, sni, any_cert_client(H1))
                .await
                .expect("TLS handshake");
            let mut tx = h1(s).await;
            let mut req = Request::builder().method(a.method).uri(a.path);
            for (k, v) in &headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::new(Bytes::new())).unwrap();
            let res = tokio::time::timeout(EXCHANGE_LIMIT, tx.send_request(req))
                .await
                .unwrap()
                .unwrap();
            Resp::read(res).await
        }
    }
}

/// The pool an answer came from: the sample origin's name without its number.
fn pool(r: &Resp) -> String {
    let o = r.origin();
    o.rsplit_once('-').map_or(o, |(p, _)| p).to_owned()
}

/// Sends `a` to both and compares; `headers` are those the origin must see alike.
async fn same(p: &Pair, a: &Ask<'_>, headers: &[&str]) -> (Resp, Resp) {
    let (n, s) = p.ports[&a.port];
    let rn = ask(n, a).await;
    let rs = ask(s, a).await;
    let what = format!("{} {} {} (Host {})", a.method, a.port, a.path, a.host);
    assert_eq!(
        rn.status, rs.status,
        "{what}: status\nnginx: {rn:?}\nswitchyard: {rs:?}"
    );
    assert_eq!(pool(&rn), pool(&rs), "{what}: pool");
    if rn.status.is_redirection() {
        let loc = |r: &Resp| {
            // nginx writes its own port in absolute redirects it makes itself.
            r.header("location")
                .unwrap_or_default()
                .replace(&n.port().to_string(), "PORT")
                .replace(&s.port().to_string(), "PORT")
        };
        let (mut ln, ls) = (loc(&rn), loc(&rs));
        // The added-slash redirect (`/api` → `/api/`): nginx writes it absolute,
        // Switchyard relative; the target is the same.
        if ls.starts_with('/') {
            if let Some(rest) = ln.split_once("://").map(|(_, r)| r) {
                ln = rest
                    .find('/')
                    .map_or("/".to_owned(), |i| rest[i..].to_owned());
            }
        }
        assert_eq!(ln, ls, "{what}: Location");
    }
    if rn.origin() == "<none>" && rn.status.is_success() {
        assert_eq!(rn.body, rs.body, "{what}: fixed body");
        assert_eq!(
            rn.header("content-type"),
            rs.header("content-type"),
            "{what}: Content-Type"
        );
    }
    if rn.origin() != "<none>" {
        let seen = |r: &Resp, h: &str| {
            r.seen(h)
                .into_iter()
                .map(|v| {
                    v.replace(&n.port().to_string(), "PORT")
                        .replace(&s.port().to_string(), "PORT")
                })
                .collect::<Vec<_>>()
        };
        for h in headers {
            assert_eq!(
                seen(&rn, h),
                seen(&rs, h),
                "{what}: header {h} at the origin\nnginx:\n{}\nswitchyard:\n{}",
                rn.body,
                rs.body
            );
        }
        assert_eq!(
            rn.origin_request_line().split(' ').nth(1),
            rs.origin_request_line().split(' ').nth(1),
            "{what}: path at the origin"
        );
    }
    (rn, rs)
}

fn nginx_here() -> bool {
    if Path::new(NGINX).exists() {
        return true;
    }
    // .ci/run installs it; without it the comparison cannot run, and says so.
    eprintln!("{NGINX} is missing: equivalence not checked (install Debian's nginx)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn botfleet_behaves_as_under_nginx() {
    if !nginx_here() {
        return;
    }
    let p = pair(
        "botfleet",
        &[("listen 80 ", 80), ("listen 443 ", 443)],
        &[
            ("10.0.1.11:8000", "bots-1"),
            ("10.0.1.12:8000", "bots-2"),
            ("10.0.1.13:8000", "bots-3"),
            ("10.0.1.19:8000", "bots-4"),
            ("10.0.2.21:9000", "chats-1"),
            ("10.0.2.22:9000", "chats-2"),
            ("10.0.2.23:9000", "chats-3"),
            ("10.0.3.31:8080", "status_api-1"),
        ],
        // One listener per port on loopback: the IPv6 twins go.
        &[
            ("listen [::]:80 default_server;", ""),
            ("listen [::]:443 ssl http2 default_server;", ""),
        ],
    )
    .await;
    let fwd = [
        "host",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-hook",
    ];
    let h = |port, tls, method, host, path| Ask {
        port,
        tls,
        method,
        host,
        path,
        headers: &[],
    };
    // Port 80: everyone to HTTPS, whatever the method.
    for (m, host, path) in [
        ("GET", "bots.example.com", "/a/b?c=d"),
        ("POST", "hooks.example.com", "/tg/x"),
        ("HEAD", "unknown.test", "/"),
    ] {
        same(&p, &h(80, None, m, host, path), &fwd).await;
    }
    // Port 443, bots.example.com and its subdomains, and unknown names (default server).
    for (sni, host, path, want) in [
        ("bots.example.com", "bots.example.com", "/", "bots"),
        (
            "bots.example.com",
            "bots.example.com",
            "/update?x=1",
            "bots",
        ),
        (
            "a.bots.example.com",
            "a.bots.example.com",
            "/chat/42",
            "chats",
        ),
        (
            "bots.example.com",
            "bots.example.com",
            "/status/fleet",
            "status_api",
        ),
        ("bots.example.com", "bots.example.com", "/healthz", "<none>"),
        ("bots.example.com", "other.example.org", "/", "bots"),
        ("hooks.example.com", "hooks.example.com", "/tg/shop", "bots"),
        (
            "hooks.example.com",
            "hooks.example.com",
            "/elsewhere",
            "<none>",
        ),
    ] {
        let (rn, rs) = same(&p, &h(443, Some(sni), "GET", host, path), &fwd).await;
        assert_eq!(pool(&rn), want, "{host}{path}: {rn:?}");
        if host.ends_with("bots.example.com") || host == "other.example.org" {
            assert!(
                rn.header("strict-transport-security").is_some(),
                "{path}: HSTS"
            );
            assert_eq!(
                rn.header("strict-transport-security"),
                rs.header("strict-transport-security"),
                "{path}: HSTS"
            );
        }
        if path == "/tg/shop" {
            assert_eq!(rs.seen("x-hook"), ["telegram"]);
            assert_eq!(rs.seen("x-forwarded-proto"), ["https"]);
        }
    }
    same(
        &p,
        &Ask {
            port: 443,
            tls: Some("bots.example.com"),
            method: "POST",
            host: "bots.example.com",
            path: "/chat/1",
            headers: &[("x-chat-id", "7")],
        },
        &fwd,
    )
    .await;
    same(
        &p,
        &h(
            443,
            Some("bots.example.com"),
            "GET",
            "bots.example.com",
            "/chat",
        ),
        &fwd,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_gateway_behaves_as_under_nginx() {
    if !nginx_here() {
        return;
    }
    let p = pair(
        "api",
        &[("listen 8080;", 8080), ("listen 8080 ", 8080)],
        &[
            ("10.0.4.41:8080", "api_v1-1"),
            ("10.0.4.42:8080", "api_v1-2"),
            ("10.0.5.51:8080", "admin-1"),
            ("10.0.5.52:8080", "admin-2"),
        ],
        // The balancer in front is this test: its address is trusted.
        &[(
            "set_real_ip_from 192.168.0.0/24;",
            "set_real_ip_from 127.0.0.1;",
        )],
    )
    .await;
    let fwd = ["host", "x-real-ip"];
    let host = "api.example.com";
    let a = |method, path, headers| Ask {
        port: 8080,
        tls: None,
        method,
        host,
        path,
        headers,
    };
    for (m, path, hs) in [
        ("GET", "/v1/users?page=2", &[][..]),
        ("POST", "/v1/users", &[("x-api-key", "k1")][..]),
        ("GET", "/v1/upload/x", &[][..]),
        ("GET", "/v1", &[][..]),
        ("GET", "/healthz", &[][..]),
        ("GET", "/robots.txt", &[][..]),
        ("GET", "/nothing-here", &[][..]),
        // The office is allowed, its guest network and everyone else are not.
        ("GET", "/admin/", &[][..]),
        ("GET", "/admin/x", &[("x-forwarded-for", "10.20.1.5")][..]),
        ("GET", "/admin/x", &[("x-forwarded-for", "10.20.99.7")][..]),
        (
            "GET",
            "/admin/x",
            &[("x-forwarded-for", "203.0.113.9, 10.10.3.4")][..],
        ),
        (
            "GET",
            "/admin/x",
            &[("x-forwarded-for", "10.20.1.5, 10.10.3.4")][..],
        ),
    ] {
        let (rn, rs) = same(&p, &a(m, path, hs), &fwd).await;
        let want = match path {
            "/v1" => 301,
            "/healthz" => 200,
            "/robots.txt" | "/nothing-here" => 404,
            "/admin/" => 403,
            "/admin/x" if hs[0].1.starts_with("10.20.1.5") => 200,
            "/admin/x" => 403,
            _ => 200,
        };
        assert_eq!(rn.status.as_u16(), want, "{m} {path} {hs:?}");
        if rn.origin() != "<none>" {
            // nginx sets X-Request-Id from $request_id here; both send one.
            assert_eq!(rn.seen("x-request-id").len(), 1, "{path}");
            assert_eq!(rs.seen("x-request-id").len(), 1, "{path}");
        }
    }
    // A body over client_max_body_size (1m here, 50m under /v1/upload/).
    let big = vec![b'x'; 2 << 20];
    let (n, s) = p.ports[&8080];
    for (path, want) in [("/v1/users", 413), ("/v1/upload/f", 200)] {
        let rn = send(n, "POST", path, &[("host", host)], Some(&big)).await;
        let rs = send(s, "POST", path, &[("host", host)], Some(&big)).await;
        assert_eq!(rn.status.as_u16(), want, "nginx {path}");
        assert_eq!(rs.status.as_u16(), want, "switchyard {path}");
    }
}

/// Each broken configuration is refused at the line `nginx -t` names.
#[test]
fn syntax_errors_are_where_nginx_sees_them() {
    if !nginx_here() {
        return;
    }
    let tmp = TempDir::new("imnginx-t");
    for name in configs().iter().filter(|n| n.starts_with("broken")) {
        let (_, report, status) = import(&dir(), name);
        assert_eq!(status, 1, "{name}");
        let ours = report
            .lines()
            .next()
            .unwrap()
            .split(": ")
            .next()
            .unwrap()
            .to_owned();
        let conf = dir().join(format!("{name}.conf"));
        let out = Command::new(NGINX)
            .current_dir(dir())
            .args([
                "-t",
                "-p",
                &format!("{}/", tmp.0.display()),
                "-c",
                &conf.display().to_string(),
            ])
            .args(["-e", &tmp.path("error.log").display().to_string()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}: nginx -t accepts it");
        let theirs = String::from_utf8_lossy(&out.stderr).into_owned();
        let at = format!("{}/{}", dir().display(), ours);
        assert!(
            theirs.contains(&format!(" in {at}")),
            "{name}: we say {ours}, nginx -t:\n{theirs}"
        );
    }
}

/// A configuration made of included files (globs): the same pools answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn included_sites_behave_as_under_nginx() {
    if !nginx_here() {
        return;
    }
    let p = pair(
        "multi",
        &[("listen 8081;", 8081)],
        &[
            ("10.0.6.61:3000", "shop-1"),
            ("10.0.6.62:3000", "shop-2"),
            ("10.0.7.71:9200", "search-1"),
            ("10.0.7.72:9200", "search-2"),
            ("10.0.7.73:9200", "search-3"),
            ("10.0.8.81:8080", "static-1"),
        ],
        &[],
    )
    .await;
    let fwd = ["host", "x-forwarded-proto"];
    for (method, host, path, want) in [
        ("GET", "shop.example.com", "/", "shop"),
        ("POST", "www.shop.example.com", "/cart", "shop"),
        ("GET", "shop.example.com", "/search/?q=boots", "search"),
        ("GET", "shop.example.com", "/old-cart?id=3", "<none>"),
        ("GET", "static.example.com", "/assets/app.js", "static"),
        ("GET", "cdn.static.example.com", "/assets/app.css", "static"),
        ("GET", "cdn.static.example.com", "/other", "<none>"),
        ("GET", "unknown.example.net", "/search/x", "search"),
    ] {
        let a = Ask {
            port: 8081,
            tls: None,
            method,
            host,
            path,
            headers: &[],
        };
        let (rn, _) = same(&p, &a, &fwd).await;
        assert_eq!(pool(&rn), want, "{host}{path}: {rn:?}");
    }
}

/// Rate and connection limits refuse the same requests as nginx's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_what_nginx_refuses() {
    if !nginx_here() {
        return;
    }
    let (origin, mut held) = holding_origin().await;
    let origin = origin.to_string();
    let p = pair(
        "limits",
        &[("listen 8082;", 8082)],
        &[],
        &[("10.0.10.1:8080", &origin)],
    )
    .await;
    let (n, s) = p.ports[&8082];
    let statuses = |addr: SocketAddr,
                    path: &'static str,
                    key: Option<&'static str>,
                    count: usize| async move {
        let mut v = Vec::new();
        for _ in 0..count {
            let mut h = vec![("host", "auth.example.com")];
            if let Some(k) = key {
                h.push(("x-api-key", k));
            }
            v.push(send(addr, "GET", path, &h, None).await.status.as_u16());
        }
        v
    };
    // burst 2 nodelay: three at once, then refused with limit_req_status.
    let want = vec![200, 200, 200, 429, 429];
    assert_eq!(statuses(n, "/login", None, 5).await, want, "nginx");
    assert_eq!(statuses(s, "/login", None, 5).await, want, "switchyard");
    // Per API key: each key its own budget; no key, no limit.
    for key in [Some("k1"), Some("k2"), None] {
        let want = if key.is_some() {
            vec![200, 200, 429]
        } else {
            vec![200, 200, 200]
        };
        assert_eq!(statuses(n, "/api/x", key, 3).await, want, "nginx {key:?}");
        assert_eq!(
            statuses(s, "/api/x", key, 3).await,
            want,
            "switchyard {key:?}"
        );
    }
    // One download at a time: the second, while the first is in flight, gets 503.
    // The origin holds `/download/big` until the test lets it go, so "in flight"
    // is an event awaited, not a race against a delay.
    let get = |addr: SocketAddr, path: &'static str| async move {
        send(addr, "GET", path, &[("host", "auth.example.com")], None)
            .await
            .status
            .as_u16()
    };
    for (who, addr) in [("nginx", n), ("switchyard", s)] {
        let slow = tokio::spawn(get(addr, "/download/big"));
        let release = tokio::time::timeout(EXCHANGE_LIMIT, held.recv())
            .await
            .unwrap_or_else(|_| panic!("{who}: the first download reaches the origin"))
            .unwrap();
        assert_eq!(
            get(addr, "/download/small").await,
            503,
            "{who}: a second download while one is in flight is refused"
        );
        release.send(()).unwrap();
        assert_eq!(slow.await.unwrap(), 200, "{who}: the download in flight");
        assert_eq!(
            get(addr, "/download/small").await,
            200,
            "{who}: the slot is free again"
        );
    }
}

/// An origin that answers 200 at once, except `/download/big`, which it holds
/// until the test sends on the oneshot it hands over when the request arrives.
async fn holding_origin() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind(common::loopback0())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        if req.uri().path() == "/download/big" {
                            let (go, wait) = tokio::sync::oneshot::channel();
                            let _ = tx.send(go);
                            let _ = wait.await;
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok\n"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}
