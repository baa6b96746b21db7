//! A proxy process for tests that need several (replicas sharing a store, two
//! processes placing keys alike): `switchyard run --config FILE --workers N`,
//! its stderr kept (the listeners' addresses are read from it), killed when
//! dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a started process may take to log its listeners.
const START_LIMIT: Duration = Duration::from_secs(20);

pub struct Replica {
    pub child: Child,
    /// The `public` listener's address.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Its stderr, line by line.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    /// Starts it and waits (blocking) for its listeners.
    pub fn start(config: &Path, workers: usize) -> Replica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(["--workers", &workers.to_string()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard run");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut r = Replica {
            child,
            addr: ([0, 0, 0, 0], 0).into(),
            admin: ([0, 0, 0, 0], 0).into(),
            lines,
        };
        r.admin = r.addr_logged("admin API listening");
        r.addr = r.addr_logged("listener=public");
        r
    }

    /// The `addr=` of the first stderr line containing `needle`.
    pub fn addr_logged(&mut self, needle: &str) -> SocketAddr {
        let start = Instant::now();
        loop {
            let found = self.lines.lock().unwrap().iter().find_map(|l| {
                l.contains(needle)
                    .then(|| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
                    .flatten()
                    .map(|a| a.parse().expect("an address"))
            });
            if let Some(a) = found {
                return a;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("switchyard exited ({status}):\n{}", self.log());
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "no {needle:?} line:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// How many stderr lines contain `needle`.
    pub fn logged(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
