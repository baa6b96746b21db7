//! A real `redis-server` for the tests (Debian's package): started on a Unix socket
//! in a temporary directory of its own, with no TCP port unless asked and no
//! persistence, so that a restart comes back empty; paused, killed and restarted on
//! the same socket as a test needs; killed when dropped. Uses std only, so that
//! benches can include it too (`#[path]`).
//!
//! A missing `redis-server` fails the test with what to install: nothing is
//! skipped silently.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `redis-server` package puts the binary.
const DEBIAN_BINARY: &str = "/usr/bin/redis-server";

/// How long a starting server may take to answer `PING` (it takes milliseconds;
/// this is for a machine loaded by parallel builds).
const READY_LIMIT: Duration = Duration::from_secs(20);

pub struct RedisServer {
    dir: PathBuf,
    /// The TCP port it also listens on, if any.
    port: Option<u16>,
    child: Option<Child>,
}

/// The `redis-server` binary, or a panic saying how to get it.
pub fn binary() -> PathBuf {
    if Path::new(DEBIAN_BINARY).exists() {
        return PathBuf::from(DEBIAN_BINARY);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("redis-server"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "redis-server is not installed, and the Redis store tests need a real one: \
                 install it (`apt-get install -y redis-server`; .ci/run does this as root)"
            )
        })
}

impl RedisServer {
    /// A server on a Unix socket only.
    pub fn start() -> RedisServer {
        RedisServer::launch(None)
    }

    /// A server on a Unix socket and on a free TCP port of 127.0.0.1.
    pub fn start_with_tcp() -> RedisServer {
        // The port is free when asked; another process could take it before Redis
        // binds it, which fails the start loudly rather than silently.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        RedisServer::launch(Some(port))
    }

    fn launch(port: Option<u16>) -> RedisServer {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Short: a Unix socket path may not exceed 107 bytes.
        let dir = std::env::temp_dir().join(format!(
            "sy-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut server = RedisServer {
            dir,
            port,
            child: None,
        };
        server.spawn();
        server
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// `redis+unix:///…/redis.sock`, the configuration's form.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// `redis://127.0.0.1:PORT/db`, for a server started with TCP.
    pub fn tcp_url(&self, db: u32) -> String {
        let port = self.port.expect("the server was started with TCP");
        format!("redis://127.0.0.1:{port}/{db}")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("create the log");
        let port = self.port.unwrap_or(0).to_string();
        let child = Command::new(binary())
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .arg("--unixsocket")
            .arg(self.socket())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server answers `PING` on its socket.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if self.ping() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server exited ({status}); its log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < READY_LIMIT,
                "redis-server did not answer within {READY_LIMIT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// SIGKILL: connections are reset at once and the socket file stays behind,
    /// refusing connections, as after a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same socket (and port), empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: connections stay open and nothing answers, as with a hung server
    /// or a network that drops packets.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid} failed");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused server too.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
