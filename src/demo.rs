//! `switchyard demo`: three sample origins on loopback and the proxy in front of
//! them, from the embedded `config/demo.toml`.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::Config;

/// The demo's configuration, with `ORIGIN_n` placeholders for the origins' addresses.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// Starts the origins on ephemeral loopback ports and returns the demo configuration
/// pointing at them, with the public listener on `listen`.
pub async fn prepare(listen: SocketAddr) -> std::io::Result<(Config, Vec<SocketAddr>)> {
    let mut text = DEMO_CONFIG.replace("127.0.0.1:8080", &listen.to_string());
    let mut origins = Vec::new();
    for i in 1..=3 {
        let (addr, _task) = crate::origin::spawn(
            "127.0.0.1:0".parse().expect("valid"),
            &format!("origin-{i}"),
        )
        .await?;
        text = text.replace(&format!("ORIGIN_{i}"), &addr.to_string());
        origins.push(addr);
    }
    let config = Config::parse(Path::new("<demo>"), &text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok((config, origins))
}

/// What the demo prints so a newcomer knows what to try.
pub fn banner(proxy: SocketAddr, admin: Option<SocketAddr>, origins: &[SocketAddr]) -> String {
    let list: Vec<String> = origins.iter().map(|a| a.to_string()).collect();
    let admin = admin.map_or_else(String::new, |a| {
        format!(
            "\n  curl http://{a}/metrics | grep requests_total   # Prometheus metrics\n  \
             open http://{a}/status                           # the status page (or /status.json)"
        )
    });
    format!(
        "switchyard demo: proxy on http://{proxy}, origins on {}\n\
         try:\n  \
         curl http://{proxy}/                 # round-robin: run it three times\n  \
         curl http://{proxy}/api/users        # weighted 5:1:1 towards origin-1\n  \
         curl http://{proxy}/api              # 301 to /api/, as nginx\n  \
         for i in $(seq 20); do curl -s -o /dev/null -w '%{{http_code}} ' http://{proxy}/api/; done   # 429 past 5/s, burst 10\n  \
         curl 'http://{proxy}/?chunks=5&interval=300ms'   # streamed as it comes\n  \
         curl 'http://{proxy}/api/slow?delay=3s'          # 504 after read_timeout 2s\n  \
         curl http://{proxy}/health           # answered by the proxy itself\n  \
         curl -X POST http://{proxy}/webhook -d '{{}}'     # POST only: a GET gets 405\n  \
         curl --http2-prior-knowledge http://{proxy}/     # HTTP/2 to an HTTP/1.1 origin{admin}\n\
         Requests are logged below. Ctrl-C stops it.",
        list.join(", ")
    )
}
