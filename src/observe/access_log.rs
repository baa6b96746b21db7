//! The access log. Request tasks format their line and hand it to a bounded
//! channel; one writer thread owns the file. A full channel drops the line (and
//! counts it) rather than slow a request down: the log must never become the
//! proxy's bottleneck. SIGUSR1 reopens the file, as nginx's does, for logrotate.
//!
//! The writer wakes every `FLUSH_INTERVAL` and writes whatever queued up in one go,
//! instead of blocking on the channel: a blocked receiver would make every request
//! pay a wake-up (a futex call and a context switch), and every line its own write.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use crate::config::{AccessLogConfig, LogFormat, LogTarget};

/// Lines queued for the writer before new ones are dropped: about a second of a
/// busy proxy's traffic, a few MiB at most, enough to ride out a slow disk.
pub const LOG_QUEUE: usize = 16 * 1024;

/// Bytes buffered before a write; the buffer is also flushed after each round, so
/// no line waits longer than `FLUSH_INTERVAL`.
const WRITE_BUFFER: usize = 64 * 1024;

/// How often the writer collects queued lines: nginx's `flush=` granularity is
/// seconds; a twentieth of one keeps `tail -f` live while batching thousands of
/// lines per write on a busy proxy (well under `LOG_QUEUE` between two rounds).
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

enum Msg {
    Line(String),
    Reopen,
}

/// A running access log: its format and the writer's queue.
#[derive(Debug)]
pub struct AccessLog {
    pub config: AccessLogConfig,
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Opens the log (creating the file if needed) and starts its writer thread,
    /// which ends once every handle to the log is gone.
    pub fn open(config: &AccessLogConfig) -> io::Result<AccessLog> {
        let out = Output::open(&config.target)?;
        let (tx, rx) = sync_channel(LOG_QUEUE);
        std::thread::Builder::new()
            .name("switchyard-log".into())
            .spawn(move || write_loop(out, rx))?;
        Ok(AccessLog {
            config: config.clone(),
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn format(&self) -> LogFormat {
        self.config.format
    }

    /// Queues a line; returns `false` when it was dropped.
    pub fn write(&self, line: String) -> bool {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer to reopen the file (after logrotate moved it).
    pub fn reopen(&self) {
        // Blocking is fine: this runs on the signal task, not a request.
        let _ = self.tx.send(Msg::Reopen);
    }
}

enum Output {
    Stdout(io::Stdout),
    File {
        path: PathBuf,
        file: io::BufWriter<File>,
    },
}

impl Output {
    fn open(target: &LogTarget) -> io::Result<Output> {
        Ok(match target {
            LogTarget::Stdout => Output::Stdout(io::stdout()),
            LogTarget::File(path) => Output::File {
                file: io::BufWriter::with_capacity(WRITE_BUFFER, open_file(path)?),
                path: path.clone(),
            },
        })
    }

    fn write(&mut self, line: &str) -> io::Result<()> {
        match self {
            Output::Stdout(s) => s.lock().write_all(line.as_bytes()),
            Output::File { file, .. } => file.write_all(line.as_bytes()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(s) => s.flush(),
            Output::File { file, .. } => file.flush(),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Output::File { path, file } = self {
            file.flush()?;
            *file = io::BufWriter::with_capacity(WRITE_BUFFER, open_file(path)?);
        }
        Ok(())
    }
}

fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

fn write_loop(mut out: Output, rx: Receiver<Msg>) {
    let handle = |out: &mut Output, m: Msg| {
        let r = match m {
            Msg::Line(l) => out.write(&l),
            Msg::Reopen => out.reopen(),
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "access log write failed");
        }
    };
    loop {
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(m) => {
                    handle(&mut out, m);
                    wrote = true;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote {
            if let Err(e) = out.flush() {
                tracing::error!(error = %e, "access log flush failed");
            }
        }
        std::thread::sleep(FLUSH_INTERVAL);
    }
}

/// One request, as the log line shows it.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub client: std::net::SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub route: &'a str,
    pub upstream: &'a str,
    pub server: Option<std::net::SocketAddr>,
    pub upstream_status: Option<u16>,
    pub upstream_time: Option<Duration>,
    /// Time waited in the upstream's queue (HAProxy's `Tw`); `None`: it never
    /// met a full upstream.
    pub queue_time: Option<Duration>,
    pub tries: u32,
    pub request_id: &'a str,
    pub user_agent: &'a str,
    pub referer: &'a str,
    /// A Telegram webhook request's update, as far as it was read.
    pub update: Option<UpdateNote>,
}

/// What a Telegram webhook's log line says of its update: its id, type and the
/// hash of its affinity key — never its body or the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UpdateNote {
    pub update_id: Option<i64>,
    #[serde(rename = "update_type")]
    pub kind: &'static str,
    /// The affinity key's hash, as 16 hex digits.
    #[serde(serialize_with = "hex_key")]
    pub key: Option<u64>,
}

fn hex_key<S: serde::Serializer>(k: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match k {
        Some(k) => s.collect_str(&format_args!("{k:016x}")),
        None => s.serialize_none(),
    }
}

impl Entry<'_> {
    pub fn line(&self, format: LogFormat) -> String {
        match format {
            LogFormat::Json => self.json(),
            LogFormat::Combined => self.combined(),
        }
    }

    fn json(&self) -> String {
        let secs = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e6;
        let line = JsonLine {
            time: humantime::format_rfc3339_millis(self.time),
            client: self.client,
            method: self.method,
            path: self.path,
            protocol: self.protocol,
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration: secs(self.duration),
            route: self.route,
            upstream: self.upstream,
            server: self.server,
            upstream_status: self.upstream_status,
            upstream_time: self.upstream_time.map(secs),
            queue_time: self.queue_time.map(secs),
            tries: self.tries,
            request_id: self.request_id,
            user_agent: Some(self.user_agent).filter(|u| !u.is_empty()),
            update: self.update,
        };
        let mut out = Vec::with_capacity(384);
        // Serialising plain fields into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &line);
        out.push(b'\n');
        String::from_utf8(out).unwrap_or_default()
    }

    /// nginx's `combined`, plus the request id and times in seconds, which nginx
    /// users commonly append (`qt=`: the time waited in the upstream's queue).
    fn combined(&self) -> String {
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.replace('"', "\\\"")
            }
        };
        let update = match &self.update {
            None => String::new(),
            Some(u) => format!(
                " tg={}/{}/{}",
                u.update_id
                    .map_or_else(|| "-".to_owned(), |i| i.to_string()),
                u.kind,
                u.key
                    .map_or_else(|| "-".to_owned(), |k| format!("{k:016x}"))
            ),
        };
        format!(
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" rt={:.3} uct={} qt={} id={}{update}\n",
            self.client.ip(),
            clf_time(self.time),
            self.method,
            self.path,
            self.protocol,
            self.status,
            self.bytes_out,
            dash(self.referer),
            dash(self.user_agent),
            self.duration.as_secs_f64(),
            seconds_or_dash(self.upstream_time),
            seconds_or_dash(self.queue_time),
            self.request_id,
        )
    }
}

/// `0.250`, or `-` for a time that does not apply.
fn seconds_or_dash(t: Option<Duration>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| format!("{:.3}", t.as_secs_f64()))
}

/// The JSON line's shape; serialised straight from borrowed fields.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    #[serde(serialize_with = "display")]
    time: humantime::Rfc3339Timestamp,
    #[serde(serialize_with = "display")]
    client: std::net::SocketAddr,
    method: &'a str,
    path: &'a str,
    protocol: &'a str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration: f64,
    route: &'a str,
    upstream: &'a str,
    server: Option<std::net::SocketAddr>,
    upstream_status: Option<u16>,
    upstream_time: Option<f64>,
    queue_time: Option<f64>,
    tries: u32,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    update: Option<UpdateNote>,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// `10/Oct/2000:13:55:36 +0000`, the Common Log Format's time, in UTC.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // humantime gives `YYYY-MM-DDTHH:MM:SSZ`; rearrange rather than redo the calendar.
    let s = humantime::format_rfc3339_seconds(t).to_string();
    let month = s[5..7].parse::<usize>().unwrap_or(1).clamp(1, 12);
    format!(
        "{}/{}/{}:{} +0000",
        &s[8..10],
        MONTHS[month - 1],
        &s[0..4],
        &s[11..19]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(971_186_136),
            client: "10.1.2.3:5555".parse().unwrap(),
            method: "GET",
            path: "/a?b=1",
            protocol: "HTTP/1.1",
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration: Duration::from_millis(3),
            route: "/",
            upstream: "bots",
            server: Some("127.0.0.1:9000".parse().unwrap()),
            upstream_status: Some(200),
            upstream_time: Some(Duration::from_millis(2)),
            queue_time: Some(Duration::from_millis(250)),
            tries: 1,
            request_id: "abc",
            user_agent: "curl/8",
            referer: "",
            update: None,
        }
    }

    #[test]
    fn a_webhook_line_names_its_update_and_nothing_of_its_body() {
        let e = Entry {
            update: Some(UpdateNote {
                update_id: Some(815_000_001),
                kind: "message",
                key: Some(0xab),
            }),
            ..entry()
        };
        let v: serde_json::Value = serde_json::from_str(&e.line(LogFormat::Json)).unwrap();
        assert_eq!(v["update_id"], 815_000_001);
        assert_eq!(v["update_type"], "message");
        assert_eq!(v["key"], "00000000000000ab");
        let line = e.line(LogFormat::Combined);
        assert!(
            line.ends_with(" id=abc tg=815000001/message/00000000000000ab\n"),
            "{line}"
        );
        let plain = entry().line(LogFormat::Json);
        assert!(!plain.contains("update_id"), "{plain}");
    }

    #[test]
    fn combined_matches_nginx() {
        assert_eq!(clf_time(entry().time), "10/Oct/2000:13:55:36 +0000");
        let line = entry().line(LogFormat::Combined);
        assert!(
            line.starts_with(
                "10.1.2.3 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=1 HTTP/1.1\" 200 12 \"-\" \"curl/8\""
            ),
            "{line}"
        );
        assert!(
            line.ends_with(" rt=0.003 uct=0.002 qt=0.250 id=abc\n"),
            "{line}"
        );
    }

    #[test]
    fn json_has_every_field() {
        let line = entry().line(LogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2000-10-10T13:55:36.000Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["server"], "127.0.0.1:9000");
        assert_eq!(v["upstream_time"], 0.002);
        assert_eq!(v["queue_time"], 0.25);
        assert_eq!(v["request_id"], "abc");
    }
}
