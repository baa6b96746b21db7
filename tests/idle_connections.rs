//! Idle HTTP/1.1 client connections give their HTTP state back (`server::park`):
//! parked after a short idle spell, counted in
//! `switchyard_client_connections_parked`, and resumed on the same socket when the
//! next request comes (whole, split across writes, or pipelined), with
//! `keepalive_timeout` still closing them and a closing client still noticed.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::control::Client;
use common::{read_response, sample};
use switchyard::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough for a loaded CI machine; conditions are polled, not waited out.
const LIMIT: Duration = Duration::from_secs(10);

async fn start(listener_settings: &str) -> (Running, SocketAddr) {
    let origin = common::start_origins(&["a"]).await[0];
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n{listener_settings}\n\
         [[route]]\nupstream = \"u\"\n\n\
         [upstream.u]\nservers = [{{ addr = \"{origin}\" }}]\n"
    );
    let running = common::start_proxy(&text).await;
    let addr = running.addr("public").unwrap();
    (running, addr)
}

/// The public listener's parked connections, from `/metrics`.
async fn parked(running: &Running) -> f64 {
    let r = Client::new(running.admin.expect("admin listener"))
        .send("GET", "/metrics", &[], None)
        .await
        .expect("scrape");
    let name = "switchyard_client_connections_parked";
    sample(&r.body, name, &[("listener", "public")]).unwrap_or(0.0)
}

/// Polls until the public listener has `n` parked connections.
async fn until_parked(running: &Running, n: f64) {
    let start = Instant::now();
    loop {
        let now = parked(running).await;
        if now == n {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{now} connections parked, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn says(body: &[u8], request_line: &str) -> bool {
    String::from_utf8_lossy(body).contains(&format!("request: {request_line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_parks_and_resumes_on_the_same_socket() {
    let (running, addr) = start("").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(says(&r.body, "GET /one HTTP/1.1"));
    until_parked(&running, 1.0).await;

    // A request in two writes: the first wakes the parked connection with half a
    // head, which the resumed connection completes.
    s.write_all(b"GET /two HTTP/1.1\r\nho").await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(b"st: x\r\n\r\n").await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(says(&r.body, "GET /two HTTP/1.1"));
    until_parked(&running, 1.0).await;

    // Two pipelined requests in one write, answered in order.
    s.write_all(b"GET /three HTTP/1.1\r\nhost: x\r\n\r\nGET /four HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 8192];
    let start = Instant::now();
    while !(says(&all, "GET /three HTTP/1.1") && says(&all, "GET /four HTTP/1.1")) {
        assert!(start.elapsed() < LIMIT, "two answers in time");
        let n = tokio::time::timeout(LIMIT, s.read(&mut chunk))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(n > 0, "closed before both answers");
        all.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&all);
    assert!(text.find("GET /three").unwrap() < text.find("GET /four").unwrap());
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    until_parked(&running, 1.0).await;

    // The client leaves: the parked connection notices and is gone.
    drop(s);
    until_parked(&running, 0.0).await;
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_still_closes_at_keepalive_timeout() {
    let keepalive = Duration::from_millis(800);
    let (running, addr) = start("keepalive_timeout = \"800ms\"\n").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    let answered = Instant::now();
    until_parked(&running, 1.0).await;
    // Closed quietly (an end of stream, no bytes), as an idle connection is.
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(LIMIT, s.read(&mut byte))
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(n, 0, "no bytes on an idle close");
    assert!(
        answered.elapsed() >= keepalive - Duration::from_millis(50),
        "closed after {:?}, before keepalive_timeout",
        answered.elapsed()
    );
    until_parked(&running, 0.0).await;
    running.shutdown(Duration::from_secs(1)).await;
}
