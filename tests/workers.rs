//! The binary's thread-per-core mode (`switchyard::start` with several workers): several workers share one
//! port, one round-robin cursor and one set of per-server counters, while each keeps
//! its own upstream connections.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use switchyard::Config;

const WORKERS: usize = 2;

/// Held by each test: one checks that the closed port refuses connections, which the
/// other could break by being handed that ephemeral port for a new listener.
static PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(body: &str) -> Config {
    let toml = format!("{}{body}", common::listeners(&["public"]));
    Config::parse(Path::new("<test>"), &toml).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_round_robin_cycle_and_drain_on_shutdown() {
    let _ports = PORTS.lock().await;
    let o = common::start_origins(&["a", "b", "c"]).await;
    let running = switchyard::start(
        config(&format!(
            "[[route]]\nupstream = \"u\"\n\n[upstream.u]\nservers = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n",
            o[0], o[1], o[2]
        )),
        WORKERS,
    )
    .unwrap();
    let proxy = running.addr("public").unwrap();
    // Fresh connections land on either worker (shared socket); the cycle is shared, so
    // 90 concurrent requests split exactly 30/30/30.
    let reqs: Vec<_> = (0..90)
        .map(|_| tokio::spawn(common::get(proxy, "/")))
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in reqs {
        let r = r.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        *counts.entry(r.origin().to_owned()).or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![30, 30, 30],
        "{counts:?}"
    );
    let served: u64 = running.shared.load().upstreams[0]
        .servers
        .iter()
        .map(|s| s.state.requests())
        .sum();
    assert_eq!(served, 90);

    // A slow request in flight when shutdown starts still completes.
    let slow = tokio::spawn(common::get(proxy, "/?delay=300ms"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while running.shared.load().upstreams[0]
        .servers
        .iter()
        .map(|s| s.state.inflight())
        .sum::<usize>()
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow request never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(running.shutdown(Duration::from_secs(5)).await);
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    assert!(tokio::net::TcpStream::connect(proxy).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_keeps_its_own_upstream_connections() {
    let _ports = PORTS.lock().await;
    let (origin, accepted) = common::counting_origin(None).await;
    let running = switchyard::start(
        config(&format!(
            "[[route]]\nupstream = \"u\"\n\n[upstream.u]\nservers = [{{ addr = \"{origin}\" }}]\n"
        )),
        WORKERS,
    )
    .unwrap();
    let proxy = running.addr("public").unwrap();
    let pool = |r: &switchyard::Running| {
        r.shared.load().upstreams[0].servers[0]
            .state
            .pool
            .idle_count()
    };
    for _ in 0..40 {
        assert_eq!(common::get(proxy, "/").await.status, StatusCode::OK);
        // Sequential requests: wait until the connection is back in its worker's pool.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while pool(&running) == 0 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // At most one connection per worker, however the 40 client connections spread.
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=WORKERS).contains(&n),
        "{n} upstream connections for {WORKERS} workers"
    );
    assert!(running.shutdown(Duration::from_secs(5)).await);
}
