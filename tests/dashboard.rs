//! The live dashboard (issue 19): `/status/series.json` counts exactly the traffic
//! sent, by upstream, server and error class, with state changes; and `/status`,
//! loaded in headless Chromium from a proxy under traffic with one server
//! failing, draws its charts with data points both by its script and, with
//! JavaScript off, as served. Screenshots are kept under `target/dashboard/`.
//!
//! Chromium is required (`.ci/run` installs the Debian package `chromium`): the
//! browser tests fail, rather than skip, without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::control::{Client, Mode, Origin};
use serde_json::Value;
use switchyard::{Config, Running};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Long enough for a loaded CI machine; conditions are polled, not waited out.
const LIMIT: Duration = Duration::from_secs(15);

async fn start(text: &str) -> Running {
    let config = Config::parse(Path::new("dashboard.toml"), text)
        .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}\n---\n{text}"));
    switchyard::start(config, common::WORKERS).expect("proxy starts")
}

async fn admin(running: &Running, method: &str, path: &str) -> (u16, String) {
    let r = Client::new(running.admin.expect("admin listener"))
        .send(method, path, &[], None)
        .await
        .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"));
    (r.status.as_u16(), r.body)
}

async fn series(running: &Running, query: &str) -> Value {
    let (status, body) = admin(running, "GET", &format!("/status/series.json{query}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("series.json is JSON")
}

fn total(lines: &Value, field: &str) -> u64 {
    lines[field]
        .as_array()
        .unwrap_or_else(|| panic!("no column {field} in {lines}"))
        .iter()
        .map(|v| v.as_u64().unwrap_or(0))
        .sum()
}

fn upstream<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name}"))
}

/// Polls series.json until `done` holds, or fails with the last answer.
async fn until(running: &Running, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let d = series(running, "").await;
        if done(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{what} never came:\n{d:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn series_json_counts_known_traffic_by_upstream_server_and_class() {
    let good = Origin::start("good").await;
    let bad = Origin::start("bad").await;
    bad.set_requests(Mode::Status(500));
    let gone = common::closed_port().await;
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}\
         [[route]]\npath_exact = \"/ok\"\nupstream = \"good\"\n\n\
         [[route]]\npath_exact = \"/bad\"\nupstream = \"bad\"\n\n\
         [[route]]\npath_exact = \"/gone\"\nupstream = \"gone\"\n\n\
         [upstream.good]\nservers = [{{ addr = \"{}\" }}]\n\n\
         [upstream.bad]\nservers = [{{ addr = \"{}\" }}]\n\n\
         [upstream.gone]\nservers = [{{ addr = \"{gone}\" }}]\n",
        common::listeners(&["public"]),
        good.addr(),
        bad.addr()
    );
    let running = start(&text).await;
    let mut c = Client::new(running.addr("public").unwrap());
    for (path, n, status) in [
        ("/ok", 10, 200),
        ("/bad", 4, 500),
        ("/gone", 3, 502),
        ("/nowhere", 2, 404),
    ] {
        for _ in 0..n {
            let r = c.get(path).await.expect("an answer");
            assert_eq!(r.status.as_u16(), status, "{path}");
        }
    }
    let d = until(&running, "all 19 requests in the series", |d| {
        total(&d["total"], "requests") == 19
    })
    .await;
    assert_eq!(d["span"], 900);
    assert_eq!(d["total"]["requests"].as_array().unwrap().len(), 900);
    assert_eq!(total(&d["total"], "client_errors"), 2, "the 404s");
    assert_eq!(
        total(&d["total"], "upstream_errors"),
        4,
        "the origin's 500s"
    );
    assert_eq!(total(&d["total"], "proxy_errors"), 3, "the 502s");

    let g = upstream(&d, "good");
    assert_eq!(total(&g["lines"], "requests"), 10);
    assert_eq!(total(&g["lines"], "upstream_errors"), 0);
    let server = &g["servers"][0];
    assert_eq!(server["addr"], good.addr().to_string());
    assert_eq!(server["state"], "up");
    assert_eq!(total(&server["lines"], "requests"), 10);
    assert!(
        total(&server["lines"], "p99_us") > 0,
        "latencies recorded: {server}"
    );
    let b = upstream(&d, "bad");
    assert_eq!(total(&b["lines"], "requests"), 4);
    assert_eq!(total(&b["servers"][0]["lines"], "upstream_errors"), 4);
    let x = upstream(&d, "gone");
    assert_eq!(total(&x["lines"], "proxy_errors"), 3);
    assert_eq!(total(&x["servers"][0]["lines"], "proxy_errors"), 3);

    // The summary sees them too; everything is up, nothing reloaded.
    assert_eq!(d["summary"]["servers"], 3);
    assert_eq!(d["summary"]["not_up"].as_array().unwrap().len(), 0);
    assert_eq!(d["summary"]["last_reload_ok"], Value::Null);
    assert!(d["summary_html"]
        .as_str()
        .unwrap()
        .starts_with("<div id=\"summary\">"));

    // `since` sends the newer seconds only, starting right after it.
    let newest = d["newest"].as_u64().unwrap();
    let later = series(&running, &format!("?since={newest}")).await;
    assert_eq!(later["from"].as_u64().unwrap(), newest + 1);
    assert!(later["total"]["requests"].as_array().unwrap().len() < 900);

    // A drain is a state change, with its reason, on the server's time line,
    // and the summary lists the server as not up.
    let path = format!("/upstreams/good/servers/{}/drain", good.addr());
    assert_eq!(admin(&running, "POST", &path).await.0, 200);
    let d = series(&running, "").await;
    let server = &upstream(&d, "good")["servers"][0];
    assert_eq!(server["state"], "draining");
    let events = server["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["what"] == "drained" && e["detail"] == "by the operator"),
        "{events:?}"
    );
    let not_up = d["summary"]["not_up"].as_array().unwrap();
    assert_eq!(not_up.len(), 1);
    assert!(not_up[0].as_str().unwrap().ends_with("draining"));
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn servers_added_and_removed_are_marked_on_the_upstream_time_line() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}[[route]]\npath = \"/\"\nupstream = \"u\"\n\n\
         [upstream.u]\nservers = [{{ addr = \"{}\" }}]\n",
        common::listeners(&["public"]),
        a.addr()
    );
    let running = start(&text).await;
    let mut c = Client::new(running.admin.unwrap());
    let body = format!("{{\"addr\": \"{}\"}}", b.addr());
    let r = c
        .send(
            "POST",
            "/upstreams/u/servers",
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let path = format!("/upstreams/u/servers/{}", b.addr());
    assert_eq!(admin(&running, "DELETE", &path).await.0, 200);
    let d = series(&running, "").await;
    let events: Vec<(String, String)> = upstream(&d, "u")["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["what"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let b = b.addr().to_string();
    assert!(
        events
            .iter()
            .any(|(w, d)| w == "added" && d.starts_with(&b) && d.contains("admin API")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(w, d)| w == "removed" && d.starts_with(&b)),
        "{events:?}"
    );
    running.shutdown(Duration::from_secs(1)).await;
}

/// The Gregorian date `days` days after 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u8, d as u8)
}

#[tokio::test]
async fn a_certificate_expiring_within_two_weeks_is_flagged_in_the_summary() {
    let o = Origin::start("o").await;
    let dir = common::TempDir::new("dashboard-cert");
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    let (y, m, d) = civil(today + 6);
    let mut params = rcgen::CertificateParams::new(vec!["soon.test".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.write("soon.crt", &cert.pem());
    let key_path = dir.write("soon.key", &key.serialize_pem());
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [listener.tls]\ncert = {:?}\nkey = {:?}\n\n[[route]]\nupstream = \"u\"\n\n\
         [upstream.u]\nservers = [{{ addr = \"{}\" }}]\n",
        cert_path.display().to_string(),
        key_path.display().to_string(),
        o.addr()
    );
    let running = start(&text).await;
    let v = series(&running, "").await;
    let certs = v["summary"]["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{certs:?}");
    assert_eq!(certs[0]["listener"], "public");
    assert_eq!(certs[0]["names"], "soon.test");
    assert_eq!(
        certs[0]["not_after"],
        format!("{y:04}-{m:02}-{d:02}").as_str()
    );
    let left = certs[0]["days_left"].as_i64().unwrap();
    assert!((5..=6).contains(&left), "{left}");
    assert_eq!(certs[0]["warn"], true);
    let (_, page) = admin(&running, "GET", "/status").await;
    assert!(page.contains("WARNING"), "the page flags it");
    running.shutdown(Duration::from_secs(1)).await;
}

// ===== in a browser =====

/// Where the screenshots go: `target/dashboard/`, next to the build.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard");
    std::fs::create_dir_all(&dir).expect("artifact directory");
    dir
}

/// Runs headless Chromium on `url` with `args` off the runtime's threads (the
/// origins run on them); its standard output.
async fn chromium(url: &str, args: &[&str]) -> String {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || chromium_blocking(&url, &args))
        .await
        .expect("chromium's thread")
}

fn chromium_blocking(url: &str, args: &[String]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install the Debian package `chromium` (.ci/run does)"
    );
    let profile = common::TempDir::new("dashboard-chromium");
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // Lets the page's first poll and redraw run before the dump.
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `points` of every polyline of the chart `chart` in the row `key`.
fn polylines(dom: &str, key: &str, chart: &str) -> Vec<Vec<(f64, f64)>> {
    let row = dom
        .find(&format!("data-key=\"{key}\""))
        .unwrap_or_else(|| panic!("no row {key}"));
    let fig = row
        + dom[row..]
            .find(&format!("data-chart=\"{chart}\""))
            .unwrap_or_else(|| panic!("no {chart} chart in {key}"));
    let end = fig + dom[fig..].find("</figure>").unwrap();
    dom[fig..end]
        .split("points=\"")
        .skip(1)
        .map(|p| {
            p[..p.find('"').unwrap()]
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(|xy| {
                    let (x, y) = xy.split_once(',').expect("x,y");
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

/// A line that rises off the baseline: data drawn, not an empty chart.
fn has_data(line: &[(f64, f64)]) -> bool {
    line.len() >= 3 && line.iter().any(|&(_, y)| y < 57.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_draws_its_charts_in_chromium_with_and_without_javascript() {
    let good = Origin::start("good").await;
    let also = Origin::start("also").await;
    let failing = Origin::start("failing").await;
    failing.set_requests(Mode::Status(503));
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}[[route]]\npath = \"/\"\nupstream = \"bots\"\n\n\
         [upstream.bots]\nservers = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n",
        common::listeners(&["public"]),
        good.addr(),
        also.addr(),
        failing.addr()
    );
    let running = start(&text).await;
    // Traffic over a few seconds, so the charts have several points; the third
    // server fails its share.
    let public = running.addr("public").unwrap();
    let mut c = Client::new(public);
    let until = Instant::now() + Duration::from_secs(4);
    let mut sent = 0;
    while Instant::now() < until {
        c.get("/").await.expect("an answer");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The failing server goes down by hand too: a state change on the time line.
    let path = format!("/upstreams/bots/servers/{}/drain", failing.addr());
    assert_eq!(admin(&running, "POST", &path).await.0, 200);
    let d = until_total(&running, sent).await;
    assert!(total(&upstream(&d, "bots")["lines"], "upstream_errors") > 0);

    let url = format!("http://{}/status", running.admin.unwrap());
    let failing_key = format!("s:bots/{}", failing.addr());
    let keys = ["total", "u:bots", failing_key.as_str()];
    let dir = artifacts();
    let check = |dom: &str, how: &str| {
        for key in keys {
            let traffic = polylines(dom, key, "traffic");
            assert_eq!(traffic.len(), 3, "{how}: three lines in {key}");
            assert!(
                has_data(&traffic[0]),
                "{how}: requests drawn in {key}: {:?}",
                traffic[0]
            );
            let latency = polylines(dom, key, "latency");
            assert!(has_data(&latency[0]), "{how}: p99 drawn in {key}");
            assert_eq!(polylines(dom, key, "load").len(), 2);
        }
        assert!(
            has_data(&polylines(dom, &failing_key, "traffic")[1]),
            "{how}: the failing server's 5xx drawn"
        );
        assert!(
            dom.contains("class=\"m bad\""),
            "{how}: the drain is marked"
        );
        assert!(dom.contains("draining"), "{how}: state in text");
        assert!(dom.contains("Attention"), "{how}: the summary says so");
    };

    // JavaScript on: the script fetched series.json and redrew (`data-live`).
    let dom = chromium(&url, &["--dump-dom"]).await;
    std::fs::write(dir.join("status-js.html"), &dom).expect("the DOM saved");
    assert!(dom.contains("data-live=\""), "the script ran:\n{dom}");
    check(&dom, "with JavaScript");
    let shot = dir.join("status.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,1500",
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let phone = dir.join("status-phone.png");
    chromium(
        &url,
        &[
            &format!("--screenshot={}", phone.display()),
            "--window-size=390,1400",
        ],
    )
    .await;
    assert!(std::fs::metadata(&phone).expect("a phone screenshot").len() > 0);

    // JavaScript off: the same charts, as the server drew them. The page comes
    // through a front that adds `Content-Security-Policy: script-src 'none'`, so
    // the browser runs no script of it (Chromium's own switch to turn scripts
    // off also stops `--dump-dom`, which evaluates one).
    let url = format!("http://{}/status", no_scripts(running.admin.unwrap()).await);
    let dom = chromium(&url, &["--dump-dom"]).await;
    std::fs::write(dir.join("status-nojs.html"), &dom).expect("the DOM saved");
    assert!(!dom.contains("data-live=\""), "no script ran");
    check(&dom, "without JavaScript");
    let shot = dir.join("status-nojs.png");
    chromium(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,1500",
        ],
    )
    .await;
    assert!(std::fs::metadata(&shot).expect("a screenshot").len() > 0);
    running.shutdown(Duration::from_secs(1)).await;
}

/// A front for the admin listener at `admin` whose answers forbid scripts.
async fn no_scripts(admin: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind(common::loopback0())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().to_string();
                        let r = Client::new(admin).get(&path).await;
                        let body = r.map(|r| r.body).unwrap_or_default();
                        let mut res = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        ));
                        res.headers_mut().insert(
                            "content-security-policy",
                            http::HeaderValue::from_static("script-src 'none'"),
                        );
                        res.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("text/html; charset=utf-8"),
                        );
                        Ok::<_, std::convert::Infallible>(res)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Waits until the series hold all `sent` requests.
async fn until_total(running: &Running, sent: u64) -> Value {
    until(running, "every request in the series", |d| {
        total(&d["total"], "requests") == sent
    })
    .await
}
