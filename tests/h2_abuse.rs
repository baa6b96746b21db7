//! HTTP/2 abuse: one attack per test, from one client connection that writes its
//! frames by hand (the preface, SETTINGS, HPACK-encoded HEADERS, RST_STREAM,
//! CONTINUATION, PING) over a plain TCP socket, as an attacker's tool would, while a
//! well-behaved hyper HTTP/2 client sends requests through another connection.
//!
//! Each test checks that
//! - the abusive connection is closed (GOAWAY or TCP close) or throttled (the proxy
//!   stops reading it, so the attacker's writes stall) within a bounded volume,
//! - the proxy's CPU time over the attack stays bounded: user + system time of the
//!   proxy's worker threads, read from `/proc/self/task/*/stat`, the only threads
//!   that serve client connections (the origin and both clients run on the test's
//!   runtime threads and are not counted),
//! - the process's memory stays bounded: growth of VmRSS (`/proc/self/status`),
//! - the well-behaved client gets every answer.
//!
//! The tests take turns (`SERIAL`): CPU and RSS are read for the whole process, and
//! another test's proxy or attack running alongside would be counted in.
//!
//! The bounds are generous on purpose (the machine is shared and its load varies);
//! each says what it would catch. Each test prints what it measured, for
//! `cargo test --test h2_abuse -- --nocapture`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::control::Origin;
use common::{one_origin_config, start_proxy, EXCHANGE_LIMIT};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::Running;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// One test at a time: CPU time and RSS are measured for the whole process.
static SERIAL: Mutex<()> = Mutex::const_new(());

// ---------------------------------------------------------------------------
// Frames by hand (RFC 9113 §4.1: a 9-byte header, then the payload).

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// RFC 9113 §7 error codes.
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// SETTINGS identifiers (RFC 9113 §6.5.2).
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Appends one frame to `buf`.
fn frame(buf: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frame length");
    assert!(len < 1 << 24, "frame payload too long");
    buf.extend_from_slice(&len.to_be_bytes()[1..]);
    buf.push(kind);
    buf.push(flags);
    buf.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    buf.extend_from_slice(payload);
}

/// An HPACK integer (RFC 7541 §5.1) with an `n`-bit prefix, `high` holding the
/// bits above the prefix in the first byte.
fn hpack_int(buf: &mut Vec<u8>, n: u32, high: u8, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        buf.push(high | value as u8);
        return;
    }
    buf.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        buf.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    buf.push(rest as u8);
}

/// A header field as an HPACK "literal header field without indexing — new name"
/// (RFC 7541 §6.2.2): no dynamic table, no Huffman coding; enough for a client
/// whose point is not compression.
fn hpack_literal(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.push(0x00);
    hpack_int(buf, 7, 0, name.len());
    buf.extend_from_slice(name.as_bytes());
    hpack_int(buf, 7, 0, value.len());
    buf.extend_from_slice(value.as_bytes());
}

/// The header block of `GET path` to `authority`.
fn request_block(authority: &str, path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    hpack_literal(&mut b, ":method", "GET");
    hpack_literal(&mut b, ":scheme", "http");
    hpack_literal(&mut b, ":path", path);
    hpack_literal(&mut b, ":authority", authority);
    b
}

fn settings_payload(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, value) in settings {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&value.to_be_bytes());
    }
    p
}

/// A frame as read from the proxy.
struct Frame {
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

/// Reads one frame; `None` at the end of the stream (or a reset connection).
async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Option<Frame> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    r.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        payload,
    })
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(p[at..at + 4].try_into().expect("4 bytes"))
}

/// A raw HTTP/2 connection past its handshake: the preface and an empty SETTINGS
/// sent, the proxy's SETTINGS read and acknowledged.
struct Raw {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    /// The SETTINGS the proxy announced.
    settings: Vec<(u16, u32)>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (mut read, mut write) = stream.into_split();
        let mut hello = PREFACE.to_vec();
        frame(&mut hello, SETTINGS, 0, 0, &[]);
        write.write_all(&hello).await.expect("preface");
        let settings = tokio::time::timeout(EXCHANGE_LIMIT, async {
            loop {
                let f = read_frame(&mut read).await.expect("the proxy's SETTINGS");
                if f.kind == SETTINGS && f.flags & ACK == 0 {
                    return f.payload;
                }
            }
        })
        .await
        .expect("SETTINGS in time");
        let settings = settings
            .chunks_exact(6)
            .map(|s| (u16::from_be_bytes([s[0], s[1]]), u32_at(s, 2)))
            .collect();
        let mut ack = Vec::new();
        frame(&mut ack, SETTINGS, ACK, 0, &[]);
        write.write_all(&ack).await.expect("SETTINGS ACK");
        Raw {
            read,
            write,
            settings,
        }
    }

    /// The value the proxy announced for a setting.
    fn setting(&self, id: u16) -> Option<u32> {
        self.settings
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// Reads everything the proxy sends from now on, in a task, until it closes.
    fn watch(self) -> (OwnedWriteHalf, Watch) {
        let ended = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ended);
        let mut read = self.read;
        let task = tokio::spawn(async move {
            let mut seen = Seen::default();
            while let Some(f) = read_frame(&mut read).await {
                seen.frames += 1;
                match f.kind {
                    RST_STREAM if f.payload.len() == 4 => {
                        seen.resets += 1;
                        if u32_at(&f.payload, 0) == REFUSED_STREAM {
                            seen.refused += 1;
                        }
                    }
                    GOAWAY if f.payload.len() >= 8 => {
                        seen.last_stream = u32_at(&f.payload, 0) & 0x7fff_ffff;
                        seen.goaway = Some(u32_at(&f.payload, 4));
                        flag.store(true, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            seen.closed_at = Some(Instant::now());
            flag.store(true, Ordering::Relaxed);
            seen
        });
        (self.write, Watch { ended, task })
    }
}

/// What the proxy sent on an abusive connection.
#[derive(Debug, Default)]
struct Seen {
    frames: usize,
    resets: usize,
    refused: usize,
    /// The error code of its GOAWAY, if it sent one.
    goaway: Option<u32>,
    /// The GOAWAY's last stream id: the highest stream the proxy had taken up.
    last_stream: u32,
    /// When the connection reached its end (EOF or reset).
    closed_at: Option<Instant>,
}

struct Watch {
    /// Set on a GOAWAY or the end of the connection.
    ended: Arc<AtomicBool>,
    task: JoinHandle<Seen>,
}

impl Watch {
    fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// What was seen, once the proxy has closed the connection.
    async fn closed(self) -> Seen {
        tokio::time::timeout(EXCHANGE_LIMIT, self.task)
            .await
            .expect("the proxy closes the abusive connection")
            .expect("reader task")
    }
}

/// How a flood ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The proxy sent GOAWAY or closed the connection.
    Closed,
    /// The proxy stopped reading: a write made no progress for `STALL`.
    Throttled,
    /// The attacker wrote its whole budget before either happened.
    BudgetSpent,
}

/// A write that makes no progress for this long means the proxy stopped reading
/// the connection (on loopback a write of a batch otherwise takes microseconds).
const STALL: Duration = Duration::from_millis(500);

/// What one flood did.
#[derive(Debug)]
struct Flood {
    outcome: Outcome,
    /// Batches written whole.
    batches: usize,
    bytes: usize,
    started: Instant,
    /// When the outcome was known (for `Throttled`, `STALL` after the stall began).
    ended: Instant,
}

impl Flood {
    /// From the first byte to the GOAWAY, the close or the stall.
    fn took(&self) -> Duration {
        let t = self.ended - self.started;
        match self.outcome {
            Outcome::Throttled => t.saturating_sub(STALL),
            Outcome::Closed | Outcome::BudgetSpent => t,
        }
    }
}

/// Writes `batch(i)` for i = 0, 1, … as fast as the socket takes them, until the
/// proxy ends the connection (`ended`, or a failed write), stops reading it (a
/// write stalls for `STALL`), or `max_batches` were written.
async fn flood(
    w: &mut OwnedWriteHalf,
    ended: impl Fn() -> bool,
    max_batches: usize,
    mut batch: impl FnMut(usize) -> Vec<u8>,
) -> Flood {
    let started = Instant::now();
    let mut bytes = 0;
    let mut outcome = Outcome::BudgetSpent;
    let mut batches = 0;
    while batches < max_batches {
        if ended() {
            outcome = Outcome::Closed;
            break;
        }
        let b = batch(batches);
        match tokio::time::timeout(STALL, w.write_all(&b)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                outcome = Outcome::Closed;
                break;
            }
            Err(_) => {
                outcome = Outcome::Throttled;
                break;
            }
        }
        bytes += b.len();
        batches += 1;
    }
    if outcome == Outcome::BudgetSpent && ended() {
        outcome = Outcome::Closed;
    }
    Flood {
        outcome,
        batches,
        bytes,
        started,
        ended: Instant::now(),
    }
}

/// Prints what an attack did and cost, for `-- --nocapture`.
fn report(attack: &str, f: &Flood, seen: Option<&Seen>, cost: &Cost, good: &Good) {
    let mut line = format!(
        "{attack}: {:?} after {:?}, {} batches ({} B) written",
        f.outcome,
        f.took(),
        f.batches,
        f.bytes
    );
    if let Some(s) = seen {
        let closed = s.closed_at.map(|t| t.saturating_duration_since(f.started));
        line += &format!(
            "; the proxy sent {} frames, {} RST_STREAM ({} REFUSED_STREAM), GOAWAY {:?} \
             (last stream {}), closed after {closed:?}",
            s.frames, s.resets, s.refused, s.goaway, s.last_stream
        );
    }
    line += &format!(
        "; proxy CPU {:?}, RSS {:+} KiB; good client: {} answers, slowest {:?}",
        cost.cpu, cost.rss_growth_kib, good.answered, good.slowest
    );
    println!("{line}");
}

// ---------------------------------------------------------------------------
// Measuring the proxy.

/// `comm` of the proxy's worker threads ("switchyard-worker-N" cut to 15 bytes).
const WORKER_COMM: &str = "switchyard-work";

/// Linux reports `stat`'s utime and stime in ticks of `USER_HZ`, 100 on every
/// architecture Linux runs on (`sysconf(_SC_CLK_TCK)`).
const NANOS_PER_TICK: u64 = 1_000_000_000 / 100;

/// CPU time (user + system) so far of each proxy worker thread of this process,
/// in nanoseconds: `schedstat`'s first field (the same time, without `stat`'s
/// 10 ms granularity, which would round a short attack's cost to nothing), or
/// utime + stime from `stat` where the kernel has no `schedstat`.
fn worker_cpu() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != WORKER_COMM {
            continue;
        }
        let nanos = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .or_else(|| {
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                // After the parenthesised name: state is field 3, utime 14, stime 15.
                let rest = stat.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
                Some((ticks(14)? + ticks(15)?) * NANOS_PER_TICK)
            });
        if let Some(nanos) = nanos {
            out.push((t.file_name().to_string_lossy().into_owned(), nanos));
        }
    }
    out
}

/// The process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// CPU and memory at the start of an attack.
struct Meter {
    cpu: Vec<(String, u64)>,
    rss: u64,
}

/// What an attack cost the proxy.
#[derive(Debug)]
struct Cost {
    cpu: Duration,
    rss_growth_kib: i64,
}

impl Meter {
    fn start() -> Meter {
        Meter {
            cpu: worker_cpu(),
            rss: rss_kib(),
        }
    }

    /// CPU time the workers present at the start have used since, and RSS growth.
    fn cost(&self) -> Cost {
        let now = worker_cpu();
        let nanos: u64 = self
            .cpu
            .iter()
            .filter_map(|(tid, before)| {
                let after = now.iter().find(|(t, _)| t == tid)?.1;
                Some(after.saturating_sub(*before))
            })
            .sum();
        Cost {
            cpu: Duration::from_nanos(nanos),
            rss_growth_kib: rss_kib() as i64 - self.rss as i64,
        }
    }
}

// ---------------------------------------------------------------------------
// The proxy, the origin and the well-behaved client.

/// The path the attacks request, told apart at the origin from the good client's.
const ABUSE: &str = "/abuse";
const GOOD: &str = "/good";

struct Bench {
    _running: Running,
    addr: SocketAddr,
    origin: Origin,
}

async fn bench() -> Bench {
    let origin = Origin::start("o").await;
    let running = start_proxy(&one_origin_config(origin.addr())).await;
    let addr = running.addr("public").expect("listener public");
    Bench {
        _running: running,
        addr,
        origin,
    }
}

/// Requests the well-behaved client sends during each attack, one after another.
const GOOD_REQUESTS: usize = 20;

/// What the well-behaved client saw.
#[derive(Debug)]
struct Good {
    answered: usize,
    slowest: Duration,
}

/// A hyper HTTP/2 client connection.
async fn h2_client(addr: SocketAddr) -> http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    tx
}

/// `GET path` with `headers` on `tx`; the response's status, once read whole.
async fn h2_get(
    tx: &mut http2::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> StatusCode {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{addr}{path}"))
        .version(Version::HTTP_2);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let fut = async {
        tx.ready().await.expect("h2 ready");
        let res = tx.send_request(req).await.expect("h2 response");
        let status = res.status();
        res.into_body().collect().await.expect("body");
        status
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("answered in time")
}

/// A hyper HTTP/2 client on its own connection: `GOOD_REQUESTS` requests in a row,
/// each of which must be answered 200 (within `EXCHANGE_LIMIT`).
fn good_client(addr: SocketAddr) -> JoinHandle<Good> {
    tokio::spawn(async move {
        let mut tx = h2_client(addr).await;
        let mut slowest = Duration::ZERO;
        for i in 0..GOOD_REQUESTS {
            let t = Instant::now();
            let status = h2_get(&mut tx, addr, &format!("{GOOD}?i={i}"), &[]).await;
            assert_eq!(status, StatusCode::OK, "good request {i}");
            slowest = slowest.max(t.elapsed());
        }
        Good {
            answered: GOOD_REQUESTS,
            slowest,
        }
    })
}

async fn good_done(good: JoinHandle<Good>) -> Good {
    let g = good.await.expect("the good client never failed");
    assert_eq!(g.answered, GOOD_REQUESTS);
    g
}

/// CPU the proxy may spend on an attack it cuts short with GOAWAY. Measured: well
/// under a millisecond for rapid reset and CONTINUATION, about 10 ms for 2 000
/// streams (128 of them proxied); an attack the proxy did not cut short would go
/// on for its whole flood (100 000 reset streams, 100 MB of CONTINUATION) and
/// cost seconds.
const CLOSED_CPU_BOUND: Duration = Duration::from_millis(250);

/// CPU the proxy may spend on a flood it throttles. It processes frames until the
/// ACKs it owes fill the socket buffers (the kernel's, a few MiB), then stops
/// reading: measured 0.1 s (PING) to 0.2 s (SETTINGS) in a debug build. A proxy
/// that kept reading would take the flood's whole 170–270 MB.
const FLOOD_CPU_BOUND: Duration = Duration::from_millis(1500);

/// RSS growth allowed over one attack. The limits keep an abusive connection to
/// a few MiB (measured: under 1 MiB, 5 MiB for 2 000 streams with 128 proxied);
/// a proxy queueing what the floods ask for would hold tens of MiB of ACKs.
const RSS_BOUND_KIB: i64 = 32 * 1024;

/// CPU the workers may use in `IDLE_WINDOW` once a flood is throttled: almost
/// nothing, as a stalled connection is not polled until its socket moves.
const IDLE_CPU_BOUND: Duration = Duration::from_millis(30);
const IDLE_WINDOW: Duration = Duration::from_millis(300);

fn check_cost(attack: &str, cost: &Cost, cpu_bound: Duration) {
    assert!(
        cost.cpu <= cpu_bound,
        "{attack}: the proxy spent {:?} of CPU",
        cost.cpu
    );
    assert!(
        cost.rss_growth_kib <= RSS_BOUND_KIB,
        "{attack}: RSS grew by {} KiB",
        cost.rss_growth_kib
    );
}

/// Once a flood is throttled, the proxy does no more work for it: the workers
/// stay (almost) idle over a window, the attacker's connection still open and its
/// unread bytes still queued.
async fn check_idle_while_throttled(attack: &str) -> Duration {
    let meter = Meter::start();
    // A measurement window, not a wait for an event: nothing should happen in it.
    tokio::time::sleep(IDLE_WINDOW).await;
    let cpu = meter.cost().cpu;
    assert!(
        cpu <= IDLE_CPU_BOUND,
        "{attack}: the workers used {cpu:?} in {IDLE_WINDOW:?} while the flood was throttled"
    );
    cpu
}

// ---------------------------------------------------------------------------
// The attacks.

/// Rapid reset (CVE-2023-44487): HEADERS then RST_STREAM(CANCEL) for stream after
/// stream, as fast as the socket takes them, so that the server starts work for
/// streams the client has already abandoned and the stream limit never applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_closed() {
    let _serial = SERIAL.lock().await;
    let b = bench().await;
    let raw = Raw::connect(b.addr).await;
    let (mut w, watch) = raw.watch();
    let block = request_block(&b.addr.to_string(), ABUSE);
    let good = good_client(b.addr);
    let meter = Meter::start();
    /// Streams opened and reset per write.
    const PER_BATCH: usize = 50;
    /// The attacker's budget: 100 000 streams.
    const BATCHES: usize = 2_000;
    let f = flood(
        &mut w,
        || watch.ended(),
        BATCHES,
        |i| {
            let mut buf = Vec::new();
            for k in 0..PER_BATCH {
                let id = 2 * (i * PER_BATCH + k) as u32 + 1;
                frame(&mut buf, HEADERS, END_STREAM | END_HEADERS, id, &block);
                frame(&mut buf, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
            }
            buf
        },
    )
    .await;
    let seen = watch.closed().await;
    let cost = meter.cost();
    let good = good_done(good).await;
    report("rapid reset", &f, Some(&seen), &cost, &good);
    assert_eq!(f.outcome, Outcome::Closed);
    assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "{seen:?}");
    // The proxy gave up after the 20 pending resets its limit allows (measured:
    // 21 streams taken up), not the attacker's 100 000; the bound leaves room for
    // streams the workers take up between two reads.
    let taken_up = (seen.last_stream as usize).div_ceil(2);
    assert!(taken_up <= 200, "GOAWAY only after {taken_up} streams");
    check_cost("rapid reset", &cost, CLOSED_CPU_BOUND);
}

/// CONTINUATION flood: a HEADERS without END_HEADERS, then CONTINUATION frames
/// (each a kibibyte of header fields, none with END_HEADERS) for ever, so that a
/// server that waits for the end of the header block buffers and decodes without
/// end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_closed() {
    let _serial = SERIAL.lock().await;
    let b = bench().await;
    let raw = Raw::connect(b.addr).await;
    let (mut w, watch) = raw.watch();
    let block = request_block(&b.addr.to_string(), ABUSE);
    let mut filler = Vec::new();
    for k in 0..16 {
        hpack_literal(&mut filler, &format!("x-filler-{k:02}"), &"f".repeat(48));
    }
    let good = good_client(b.addr);
    let meter = Meter::start();
    // The attacker's budget: 100 000 frames, 100 MB.
    let f = flood(
        &mut w,
        || watch.ended(),
        100_000,
        |i| {
            let mut buf = Vec::new();
            if i == 0 {
                frame(&mut buf, HEADERS, END_STREAM, 1, &block);
            }
            frame(&mut buf, CONTINUATION, 0, 1, &filler);
            buf
        },
    )
    .await;
    let seen = watch.closed().await;
    let cost = meter.cost();
    let good = good_done(good).await;
    report("CONTINUATION flood", &f, Some(&seen), &cost, &good);
    assert_eq!(f.outcome, Outcome::Closed);
    assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "{seen:?}");
    assert_eq!(
        b.origin.count(&Method::GET, ABUSE),
        0,
        "no request came of it"
    );
    check_cost("CONTINUATION flood", &cost, CLOSED_CPU_BOUND);
}

/// SETTINGS flood (CVE-2019-9515): SETTINGS frames without end, never reading the
/// ACKs the server owes for each, so that a server that queues them grows its
/// output without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_throttled() {
    let _serial = SERIAL.lock().await;
    let b = bench().await;
    let mut raw = Raw::connect(b.addr).await;
    let payload = settings_payload(&[
        (SETTINGS_ENABLE_PUSH, 0),
        (SETTINGS_INITIAL_WINDOW_SIZE, 65_535),
        (SETTINGS_MAX_HEADER_LIST_SIZE, 16_384),
    ]);
    let mut batch = Vec::new();
    for _ in 0..1_000 {
        frame(&mut batch, SETTINGS, 0, 0, &payload);
    }
    // Nothing reads the connection: the ACKs it is owed pile up on the proxy's
    // side. The attacker's budget: 10 million frames, 270 MB.
    check_throttled_flood("SETTINGS flood", b.addr, &mut raw, &batch).await;
}

/// PING flood (CVE-2019-9512): PINGs without end, never reading the ACKs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_throttled() {
    let _serial = SERIAL.lock().await;
    let b = bench().await;
    let mut raw = Raw::connect(b.addr).await;
    let mut batch = Vec::new();
    for k in 0..1_000u64 {
        frame(&mut batch, PING, 0, 0, &k.to_be_bytes());
    }
    // The attacker's budget: 10 million frames, 170 MB.
    check_throttled_flood("PING flood", b.addr, &mut raw, &batch).await;
}

/// Sends `batch` 10 000 times on `raw` without reading a byte, while a good
/// client runs beside it: the proxy stops reading (throttled, not closed), the
/// flood costs it less than `FLOOD_CPU_BOUND`, and a throttled connection then
/// costs next to nothing (`check_idle_while_throttled`).
async fn check_throttled_flood(attack: &str, addr: SocketAddr, raw: &mut Raw, batch: &[u8]) {
    let good = good_client(addr);
    let meter = Meter::start();
    let f = flood(&mut raw.write, || false, 10_000, |_| batch.to_vec()).await;
    let cost = meter.cost();
    let good = good_done(good).await;
    report(attack, &f, None, &cost, &good);
    assert_eq!(f.outcome, Outcome::Throttled);
    check_cost(attack, &cost, FLOOD_CPU_BOUND);
    let idle = check_idle_while_throttled(attack).await;
    println!("{attack}: then {idle:?} of CPU in {IDLE_WINDOW:?}");
}

/// 2 000 concurrent streams, far past the SETTINGS_MAX_CONCURRENT_STREAMS the
/// proxy announced: the client first fills the limit with requests that wait at
/// the origin, then opens the rest. Those are refused (RST_STREAM REFUSED_STREAM)
/// without reaching the origin, and a client that keeps opening them is told to
/// go away (GOAWAY ENHANCE_YOUR_CALM) long before it has sent them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_are_refused() {
    let _serial = SERIAL.lock().await;
    let b = bench().await;
    let raw = Raw::connect(b.addr).await;
    let limit = raw
        .setting(SETTINGS_MAX_CONCURRENT_STREAMS)
        .expect("the proxy announces a stream limit") as usize;
    assert_eq!(
        limit,
        switchyard::server::H2_MAX_CONCURRENT_STREAMS as usize
    );
    let (mut w, watch) = raw.watch();
    // Each request waits at the origin, so its stream stays open.
    let block = request_block(&b.addr.to_string(), &format!("{ABUSE}?delay=5s"));
    const STREAMS: usize = 2_000;
    const PER_BATCH: usize = 16;
    let headers = |first: usize, count: usize| {
        let mut buf = Vec::new();
        for n in first..first + count {
            let id = 2 * n as u32 + 1;
            frame(&mut buf, HEADERS, END_STREAM | END_HEADERS, id, &block);
        }
        buf
    };
    let good = good_client(b.addr);
    let meter = Meter::start();
    w.write_all(&headers(0, limit))
        .await
        .expect("the first streams");
    let deadline = Instant::now() + EXCHANGE_LIMIT;
    while b.origin.count(&Method::GET, ABUSE) < limit {
        assert!(
            Instant::now() < deadline,
            "the first {limit} streams reach the origin"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let f = flood(
        &mut w,
        || watch.ended(),
        (STREAMS - limit) / PER_BATCH,
        |i| headers(limit + i * PER_BATCH, PER_BATCH),
    )
    .await;
    let seen = watch.closed().await;
    let cost = meter.cost();
    let good = good_done(good).await;
    report("2 000 streams", &f, Some(&seen), &cost, &good);
    let reached = b.origin.count(&Method::GET, ABUSE);
    assert_eq!(
        reached, limit,
        "only the streams within the limit reach the origin"
    );
    assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "{seen:?}");
    // Refused streams are capped at twice the stream limit (h2_limits.rs).
    assert!(
        seen.refused > 0 && seen.refused <= 2 * limit,
        "{} streams refused before the GOAWAY",
        seen.refused
    );
    check_cost("2 000 streams", &cost, CLOSED_CPU_BOUND);
}

/// Oversized request heads: a head past the SETTINGS_MAX_HEADER_LIST_SIZE the
/// proxy announced (hyper's client sends it anyway, in HEADERS and CONTINUATION
/// frames) is answered 431 without reaching the origin, and the connection goes
/// on serving; a head of 40 KiB, past hyper's 16 KiB default but within the limit,
/// as HTTP/1.1 accepts it, is proxied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_past_the_header_list_size_are_refused() {
    let _serial = SERIAL.lock().await;
    let b = bench().await;
    let raw = Raw::connect(b.addr).await;
    let max = raw
        .setting(SETTINGS_MAX_HEADER_LIST_SIZE)
        .expect("the proxy announces a header list size") as usize;
    assert_eq!(max, 64 * 1024);
    let mut tx = h2_client(b.addr).await;
    let big = "b".repeat(max);
    let status = h2_get(&mut tx, b.addr, "/big", &[("x-big", &big)]).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(b.origin.count(&Method::GET, "/big"), 0);
    let fits = "f".repeat(40 * 1024);
    let status = h2_get(&mut tx, b.addr, "/fits", &[("x-big", &fits)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b.origin.count(&Method::GET, "/fits"), 1);
}
