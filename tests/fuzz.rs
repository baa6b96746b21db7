//! Fuzzing on stable Rust, with proptest.
//!
//! * HTTP/1.1: valid requests (single and pipelined, with `Content-Length` and
//!   chunked bodies) are mutated byte by byte — bits flipped, bytes inserted,
//!   deleted and duplicated, CR, LF, NUL, `:`, spaces, huge numbers and extra
//!   `Transfer-Encoding` / `Content-Length` lines spliced in — and written over raw
//!   TCP to the proxy, in front of a recording origin that keeps every byte it
//!   receives and answers each request with a small fixed response numbered by
//!   `x-seq`. Each case asserts that no proxy thread panicked and the proxy still
//!   serves a normal request; that the origin only received well-formed HTTP/1.1
//!   requests (parsed strictly: CRLF line endings, one `Host`, unambiguous framing,
//!   a body exactly as framed; anything left over would have to parse as the next
//!   request); that there were never more upstream requests than request lines
//!   the client sent nor more final responses than those plus one error answer;
//!   that every request the origin answered reached the client, once and in order;
//!   that no 5xx was answered (the origin never fails; a client's malformed body
//!   once got one: `malformed_chunked_body_is_the_clients_fault`); and that the proxy let go of
//!   the connection once the client closed it.
//! * Configuration: random TOML documents (keys and values drawn from
//!   `config/switchyard.toml` and from edge cases), structural edits of that file
//!   (values replaced, keys removed or added, array items duplicated) and byte
//!   mutations of its text never panic `Config::parse`.
//!
//! CI runs about a hundred cases per test (a few seconds each). The number of
//! cases comes from `SWITCHYARD_FUZZ_CASES` (HTTP cases; the configuration tests
//! run 8 times as many, since a case takes well under a millisecond). A long run,
//! which also prints what the cases exercised (requests proxied, statuses,
//! configurations loaded or refused):
//!
//! ```sh
//! SWITCHYARD_FUZZ_CASES=20000 cargo test --test fuzz -- --nocapture   # about 10 minutes
//! ```
//!
//! A failing case is shrunk by proptest and printed with its bytes escaped; keep
//! it as a regular test in the "regressions" section at the end of this file.
//!
//! Only loopback is used: configuration strings that would make `Config::parse`
//! resolve a host name through DNS are left out (rejected cases).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use common::control::eventually;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestError, TestRunner};
use switchyard::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ------------------------------------------------------------------ budget

/// HTTP cases per run when `SWITCHYARD_FUZZ_CASES` is not set: small, so that CI
/// spends a few seconds here; a case takes about 25 ms on average (a few hundred
/// when the proxy is left waiting for a body that never comes).
const DEFAULT_CASES: u32 = 96;

/// Configuration cases per HTTP case: parsing a document takes well under a
/// millisecond, a network case tens of milliseconds.
const CONFIG_CASES_FACTOR: u32 = 8;

fn cases() -> u32 {
    match std::env::var("SWITCHYARD_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SWITCHYARD_FUZZ_CASES must be a number, got {v:?}")),
        Err(_) => DEFAULT_CASES,
    }
}

/// A runner with `cases` cases and no regression files: a failure is kept as a
/// named test below instead, where it documents what broke.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        // Shrinking a network case takes a round trip per step; this is plenty.
        max_shrink_iters: 2048,
        // Configuration cases that would resolve a host name are rejected; a
        // long run must not abort on their number alone.
        max_global_rejects: cases.max(1024),
        ..RunnerConfig::default()
    })
}

/// Runs `test` over `strategy` and panics with proptest's minimal failing input.
fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    match runner(cases).run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => {
            panic!("minimal failing input: {input:#?}\n{why}")
        }
        Err(TestError::Abort(why)) => panic!("fuzzing aborted: {why}"),
    }
}

// ------------------------------------------------------------ panic record

/// Panics seen on the proxy's threads (named `switchyard-…`) and on the origin's
/// runtime: hyper and tokio catch a panicking connection task, so without this a
/// panic would only show as a dropped connection.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Name of the recording origin's runtime threads.
const ORIGIN_THREAD: &str = "fuzz-origin";

fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>");
            if name.starts_with("switchyard-") || name == ORIGIN_THREAD {
                PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("thread {name}: {info}"));
            }
            previous(info);
        }));
    });
}

fn panics() -> Vec<String> {
    PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

// --------------------------------------------------------- strict parsing

/// Largest request head the origin accepts (the proxy's own limit is 64 KiB).
const ORIGIN_MAX_HEAD: usize = 64 * 1024;

/// What the origin makes of the bytes it has so far.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// One whole request of `len` bytes.
    Complete {
        len: usize,
        target: String,
        /// A HEAD request: its response has no body.
        head: bool,
    },
    /// Not a whole request yet, and nothing wrong so far.
    Partial,
    /// Not HTTP/1.1 as a proxy must send it.
    Malformed(String),
}

/// An error if `b` has a CR not followed by LF or an LF not preceded by CR.
fn crlf_only(b: &[u8]) -> Result<(), String> {
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            return Err(format!("bare LF at byte {i}"));
        }
        if c == b'\r' && i + 1 < b.len() && b[i + 1] != b'\n' {
            return Err(format!("bare CR at byte {i}"));
        }
    }
    Ok(())
}

/// Parses the first request in `buf` as strictly as RFC 9112 asks of a sender:
/// CRLF line endings, HTTP/1.1, exactly one `Host`, either one `Content-Length`
/// of digits or `Transfer-Encoding: chunked` alone (never both), and a body
/// exactly as framed.
fn parse_strict(buf: &[u8]) -> Parsed {
    match parse_inner(buf) {
        Ok(Some(p)) => p,
        Ok(None) => Parsed::Partial,
        Err(why) => Parsed::Malformed(why),
    }
}

fn parse_inner(buf: &[u8]) -> Result<Option<Parsed>, String> {
    let Some(head_end) = common::find(buf, b"\r\n\r\n").map(|p| p + 4) else {
        crlf_only(buf)?;
        if buf.contains(&0) {
            return Err("NUL in the head".into());
        }
        if buf.len() > ORIGIN_MAX_HEAD {
            return Err(format!("no end of head in {} bytes", buf.len()));
        }
        return Ok(None);
    };
    let head = &buf[..head_end];
    crlf_only(head)?;
    if head.contains(&0) {
        return Err("NUL in the head".into());
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head_end => {}
        Ok(httparse::Status::Complete(n)) => {
            return Err(format!("head parses to {n} of its {head_end} bytes"))
        }
        Ok(httparse::Status::Partial) => return Err("head parses as partial".into()),
        Err(e) => return Err(format!("head does not parse: {e}")),
    }
    if req.version != Some(1) {
        return Err(format!("version HTTP/1.{:?}, not HTTP/1.1", req.version));
    }
    let method = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default().to_owned();
    let named = |name: &str| -> Vec<&[u8]> {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    };
    let hosts = named("host");
    if hosts.len() != 1 {
        return Err(format!("{} Host headers", hosts.len()));
    }
    let te = named("transfer-encoding");
    let cl = named("content-length");
    let body = &buf[head_end..];
    let body_len = if !te.is_empty() {
        if !cl.is_empty() {
            return Err("both Transfer-Encoding and Content-Length".into());
        }
        if te.len() != 1 || !te[0].eq_ignore_ascii_case(b"chunked") {
            return Err(format!(
                "Transfer-Encoding other than one `chunked`: {:?}",
                te.iter()
                    .map(|v| v.escape_ascii().to_string())
                    .collect::<Vec<_>>()
            ));
        }
        match chunked_len(body)? {
            Some(n) => n,
            None => return Ok(None),
        }
    } else if !cl.is_empty() {
        if cl.len() != 1 {
            return Err(format!("{} Content-Length headers", cl.len()));
        }
        let v = cl[0];
        // Any length a u64 holds is valid, however large.
        let n: Option<u64> = v
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(v).ok()?.parse().ok())
            .flatten();
        let Some(n) = n else {
            return Err(format!("Content-Length {:?}", v.escape_ascii().to_string()));
        };
        if (body.len() as u64) < n {
            return Ok(None);
        }
        n as usize
    } else {
        0
    };
    Ok(Some(Parsed::Complete {
        len: head_end + body_len,
        target,
        head: method == "HEAD",
    }))
}

/// The length of the chunked body at the start of `b`, `None` if incomplete.
fn chunked_len(b: &[u8]) -> Result<Option<usize>, String> {
    let mut pos = 0;
    loop {
        let Some(eol) = common::find(&b[pos..], b"\r\n") else {
            return partial_line(&b[pos..]);
        };
        let line = &b[pos..pos + eol];
        no_line_breaks(line)?;
        let size = match line.iter().position(|&c| c == b';') {
            Some(p) => &line[..p],
            None => line,
        };
        if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("chunk size {:?}", line.escape_ascii().to_string()));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size).unwrap(), 16)
            .map_err(|e| format!("chunk size: {e}"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let Some(eol) = common::find(&b[pos..], b"\r\n") else {
                    return partial_line(&b[pos..]);
                };
                let line = &b[pos..pos + eol];
                pos += eol + 2;
                if line.is_empty() {
                    return Ok(Some(pos));
                }
                no_line_breaks(line)?;
                let mut one = [httparse::EMPTY_HEADER; 1];
                let mut field = line.to_vec();
                field.extend_from_slice(b"\r\n\r\n");
                match httparse::parse_headers(&field, &mut one) {
                    Ok(httparse::Status::Complete(_)) => {}
                    _ => return Err(format!("trailer {:?}", line.escape_ascii().to_string())),
                }
            }
        }
        if size > 1 << 30 {
            return Err(format!("chunk of {size} bytes"));
        }
        if b.len() < pos + size + 2 {
            return Ok(None);
        }
        if &b[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        pos += size + 2;
    }
}

fn no_line_breaks(line: &[u8]) -> Result<(), String> {
    match line.iter().position(|&c| c == b'\r' || c == b'\n') {
        Some(i) => Err(format!(
            "bare CR or LF in line {:?} at {i}",
            line.escape_ascii().to_string()
        )),
        None => Ok(()),
    }
}

/// An unterminated line of a chunked body: fine unless it already went wrong.
fn partial_line(rest: &[u8]) -> Result<Option<usize>, String> {
    let upto = match rest.last() {
        Some(b'\r') => &rest[..rest.len() - 1],
        _ => rest,
    };
    no_line_breaks(upto)?;
    if rest.len() > 4096 {
        return Err("chunk-size or trailer line over 4 KiB".into());
    }
    Ok(None)
}

// ------------------------------------------------------- recording origin

/// Path of the request sent after each case to check that the proxy still serves.
const SANITY_PATH: &str = "/__fuzz_sanity__";

#[derive(Debug, Clone)]
enum Verdict {
    /// A well-formed request, answered with `x-seq: seq`.
    Complete { seq: u64 },
    /// The connection closed before the request was whole (a client that stopped
    /// mid-body, for instance): not an error.
    Incomplete,
    /// Not a well-formed request: the origin closed the connection.
    Malformed(String),
}

#[derive(Debug, Clone)]
struct Record {
    /// Which upstream connection, numbered from 0 in accept order.
    conn: u64,
    target: String,
    bytes: Vec<u8>,
    verdict: Verdict,
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conn {} {:?}: {:?}",
            self.conn,
            self.verdict,
            self.bytes.escape_ascii().to_string()
        )
    }
}

#[derive(Default)]
struct Log {
    records: Vec<Record>,
    next_seq: u64,
}

/// A raw TCP origin that records every request exactly as received.
#[derive(Clone)]
struct RecordingOrigin {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl RecordingOrigin {
    async fn start() -> RecordingOrigin {
        let listener = TcpListener::bind(common::loopback0())
            .await
            .expect("bind origin");
        let origin = RecordingOrigin {
            addr: listener.local_addr().unwrap(),
            log: Arc::default(),
        };
        let log = Arc::clone(&origin.log);
        tokio::spawn(async move {
            let mut conn = 0;
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(s, conn, Arc::clone(&log)));
                conn += 1;
            }
        });
        origin
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many records there are: where the next case's start.
    fn mark(&self) -> usize {
        self.lock().records.len()
    }

    /// The records from `mark` on, without the sanity requests.
    fn since(&self, mark: usize) -> Vec<Record> {
        self.lock().records[mark..]
            .iter()
            .filter(|r| r.target != SANITY_PATH)
            .cloned()
            .collect()
    }

    fn complete_since(&self, mark: usize) -> usize {
        self.since(mark)
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Complete { .. }))
            .count()
    }
}

async fn serve(mut s: TcpStream, conn: u64, log: Arc<Mutex<Log>>) {
    let push = |target: String, bytes: Vec<u8>, verdict: Verdict| {
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        let verdict = match verdict {
            Verdict::Complete { .. } => {
                log.next_seq += 1;
                Verdict::Complete { seq: log.next_seq }
            }
            v => v,
        };
        log.records.push(Record {
            conn,
            target,
            bytes,
            verdict: verdict.clone(),
        });
        verdict
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match parse_strict(&buf) {
            Parsed::Complete { len, target, head } => {
                let bytes: Vec<u8> = buf.drain(..len).collect();
                let Verdict::Complete { seq } = push(target, bytes, Verdict::Complete { seq: 0 })
                else {
                    unreachable!()
                };
                let mut res =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-seq: {seq}\r\n\r\n")
                        .into_bytes();
                if !head {
                    res.extend_from_slice(b"ok");
                }
                if s.write_all(&res).await.is_err() {
                    return;
                }
                continue;
            }
            Parsed::Malformed(why) => {
                push(String::new(), buf, Verdict::Malformed(why));
                return;
            }
            Parsed::Partial => {}
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    push(String::new(), buf, Verdict::Incomplete);
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

// ------------------------------------------------------------ the client

/// How long the client waits for more bytes while fewer final responses than
/// request lines have arrived. On a loopback round trip this is generous; it is
/// also what a case costs when the proxy waits for body bytes that never come.
const QUIET: Duration = Duration::from_millis(250);
/// How long the client waits for an extra response once every request line has
/// been answered.
const GRACE: Duration = Duration::from_millis(40);
/// How long the client keeps waiting while the origin has answered requests whose
/// responses have not reached it yet (a busy machine); past this it is a failure.
const HARD_CAP: Duration = Duration::from_secs(5);
/// How long the proxy may take to end a connection's task once the client closed.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// Request lines in `input`: each request the proxy can read needs its own line
/// with an `HTTP/1.x` version, so this bounds the requests it can find there.
fn request_lines(input: &[u8]) -> usize {
    input
        .split(|&c| c == b'\n')
        .rev()
        .skip(1) // the last piece is not terminated by LF
        .filter(|line| common::find(line, b"HTTP/1.").is_some())
        .count()
}

/// The responses in the bytes the client received.
#[derive(Debug, Default)]
struct Responses {
    statuses: Vec<u16>,
    /// Final (non-1xx) responses.
    finals: usize,
    /// `x-seq` of each response that came from the origin.
    seqs: Vec<u64>,
}

/// Finds status lines: `HTTP/1.x NNN ` anywhere (the bodies here — the origin's
/// `ok`, the proxy's `400 Bad Request` — never contain one).
fn responses(got: &[u8]) -> Responses {
    let mut r = Responses::default();
    let mut from = 0;
    while let Some(p) = common::find(&got[from..], b"HTTP/1.") {
        let at = from + p;
        from = at + 1;
        let line = &got[at..];
        let is_status = line.len() >= 13
            && line[7].is_ascii_digit()
            && line[8] == b' '
            && line[9..12].iter().all(u8::is_ascii_digit)
            && line[12] == b' ';
        if !is_status {
            continue;
        }
        let status: u16 = std::str::from_utf8(&line[9..12]).unwrap().parse().unwrap();
        r.statuses.push(status);
        if status >= 200 {
            r.finals += 1;
        }
        let head_end = common::find(line, b"\r\n\r\n").unwrap_or(line.len());
        let head = String::from_utf8_lossy(&line[..head_end]);
        if let Some(seq) = head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("x-seq")
                .then(|| v.trim().parse().ok())?
        }) {
            r.seqs.push(seq);
        }
    }
    r
}

// -------------------------------------------------------------- harness

/// The proxy in front of a recording origin, shared by every case of a test.
struct Harness {
    rt: tokio::runtime::Runtime,
    proxy: Running,
    addr: SocketAddr,
    origin: RecordingOrigin,
}

impl Harness {
    fn start() -> Harness {
        record_panics();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(ORIGIN_THREAD)
            .enable_all()
            .build()
            .expect("runtime");
        let origin = rt.block_on(RecordingOrigin::start());
        let config = Config::parse(Path::new("<fuzz>"), &common::one_origin_config(origin.addr))
            .expect("fuzz configuration");
        let proxy = common::start_config(config, common::WORKERS);
        let addr = proxy.addr("public").expect("listener public");
        Harness {
            rt,
            proxy,
            addr,
            origin,
        }
    }

    /// Runs one case; `Err` describes what went wrong.
    fn case(&self, input: &[u8]) -> Result<Outcome, String> {
        self.rt.block_on(self.exchange(input))
    }

    async fn exchange(&self, input: &[u8]) -> Result<Outcome, String> {
        let panics_before = panics().len();
        let mark = self.origin.mark();
        let lines = request_lines(input);

        let mut s = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect to the proxy: {e}"))?;
        // The proxy may answer and close before reading everything.
        let _ = s.write_all(input).await;
        let started = Instant::now();
        let mut got = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let eof = loop {
            let wait = if responses(&got).finals >= lines {
                GRACE
            } else {
                QUIET
            };
            match tokio::time::timeout(wait, s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                Err(_) => {
                    let answered = self.origin.complete_since(mark);
                    if answered > responses(&got).finals && started.elapsed() < HARD_CAP {
                        continue;
                    }
                    break false;
                }
            }
        };
        drop(s);
        let seen = responses(&got);
        let closed = self.connections_closed().await;
        let sanity = self.sanity().await;
        let records = self.origin.since(mark);

        let mut problems = Vec::new();
        let new_panics = &panics()[panics_before..];
        if !new_panics.is_empty() {
            problems.push(format!("panics: {new_panics:#?}"));
        }
        if let Err(e) = sanity {
            problems.push(format!("the proxy no longer serves a normal request: {e}"));
        }
        if !closed {
            problems.push(format!(
                "client connections still open {CLOSE_LIMIT:?} after the client closed: {:?}",
                self.proxy.worker_connections()
            ));
        }
        for r in &records {
            if let Verdict::Malformed(why) = &r.verdict {
                problems.push(format!(
                    "desync: the origin received a malformed request ({why})"
                ));
            }
        }
        let complete: Vec<u64> = records
            .iter()
            .filter_map(|r| match r.verdict {
                Verdict::Complete { seq } => Some(seq),
                _ => None,
            })
            .collect();
        if complete.len() > lines {
            problems.push(format!(
                "{} upstream requests for {lines} request lines",
                complete.len()
            ));
        }
        if seen.finals > lines + 1 {
            problems.push(format!(
                "{} responses for {lines} request lines: {:?}",
                seen.finals, seen.statuses
            ));
        }
        if complete.len() > seen.finals {
            problems.push(format!(
                "the origin answered {} requests, the client got {} responses",
                complete.len(),
                seen.finals
            ));
        }
        // The origin never fails, so a 5xx blames it for something else (a
        // client's malformed body once did: `malformed_chunked_body_is_the_clients_fault`).
        // 501 is the proxy refusing what it does not implement (a transfer coding
        // other than chunked, an over-long method): the client's, not a failure.
        let server_errors: Vec<u16> = seen
            .statuses
            .iter()
            .copied()
            .filter(|&s| s >= 500 && s != 501)
            .collect();
        if !server_errors.is_empty() {
            problems.push(format!(
                "answered {server_errors:?} though the origin never fails"
            ));
        }
        if !seen.seqs.windows(2).all(|w| w[0] < w[1])
            || !seen.seqs.iter().all(|s| complete.contains(s))
        {
            problems.push(format!(
                "responses out of order, repeated or not from this case: x-seq {:?}, origin answered {complete:?}",
                seen.seqs
            ));
        }
        let outcome = Outcome {
            lines,
            upstream: complete.len(),
            statuses: seen.statuses,
            eof,
        };
        if problems.is_empty() {
            return Ok(outcome);
        }
        Err(format!(
            "{}\n  input: \"{}\"\n  client received (eof: {eof}): \"{}\"\n  origin records:\n{}",
            problems.join("\n"),
            input.escape_ascii(),
            got.escape_ascii(),
            records
                .iter()
                .map(|r| format!("    {r}\n"))
                .collect::<String>()
        ))
    }

    /// Whether every client connection's task ended within `CLOSE_LIMIT`.
    async fn connections_closed(&self) -> bool {
        let deadline = Instant::now() + CLOSE_LIMIT;
        loop {
            if self.proxy.worker_connections().iter().sum::<usize>() == 0 {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A normal request on a new connection must still be proxied.
    async fn sanity(&self) -> Result<(), String> {
        let req =
            format!("GET {SANITY_PATH} HTTP/1.1\r\nHost: sanity.test\r\nConnection: close\r\n\r\n");
        let fut = async {
            let mut s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
            let r = responses(&got);
            if r.statuses == [200] && r.seqs.len() == 1 {
                Ok(())
            } else {
                Err(format!("got \"{}\"", got.escape_ascii()))
            }
        };
        tokio::time::timeout(common::EXCHANGE_LIMIT, fut)
            .await
            .map_err(|_| "no answer in time".to_owned())?
    }
}

/// What one case saw, when it passed.
#[derive(Debug)]
struct Outcome {
    lines: usize,
    upstream: usize,
    statuses: Vec<u16>,
    eof: bool,
}

// ---------------------------------------------------------- mutations

/// Valid requests the mutations start from. Bodies that look like requests are
/// there so a framing mistake shows up as an extra upstream request.
const SEEDS: &[&[u8]] = &[
    b"GET /fuzz/a?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n",
    b"POST /fuzz/b HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: s\r\n\r\n",
    b"POST /fuzz/c HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n23\r\nGET /smuggled HTTP/1.1\r\nHost: s\r\n\r\n\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"GET /fuzz/d1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /fuzz/d2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcHEAD /fuzz/d3 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PUT /fuzz/e HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"GET http://example.com/fuzz/f HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    b"DELETE /fuzz/g HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
    b"POST /fuzz/h HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /fuzz/h2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /fuzz/i HTTP/1.0\r\nHost: example.com\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n",
];

/// Bytes spliced into requests.
const HTTP_TOKENS: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b"\0",
    b":",
    b" ",
    b"\t",
    b"\r\n\r\n",
    b"\n\n",
    b"\r\n ",
    b"\x7f",
    b"\xff",
    b"\x0b",
    b"%00",
    b";",
    b",",
    b"\"",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: chunked, gzip\r\n",
    b"Transfer-Encoding:  chunked \r\n",
    b"Transfer-Encoding : chunked\r\n",
    b"Transfer-Encoding: \x0bchunked\r\n",
    b" Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 99999999999999999999999\r\n",
    b"Content-Length: 18446744073709551616\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Content-Length: 5, 6\r\n",
    b"Content-Length: 0x10\r\n",
    b"Content-Length: 1 0\r\n",
    b"Host: other.example\r\n",
    b"Host: \r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive, Transfer-Encoding\r\n",
    b"Connection: Content-Length\r\n",
    b"Upgrade: websocket\r\nConnection: upgrade\r\n",
    b"Expect: 100-continue\r\n",
    b"Trailer: Content-Length\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffffffff\r\n",
    b"10000000000000000\r\n",
    b";ext=\"x\"",
    b"GET /smuggled HTTP/1.1\r\nHost: s\r\n\r\n",
    b"HTTP/1.0",
    b"HTTP/1.1\r\n",
    b"HTTP/2.0",
];

/// Numbers that replace a run of digits (a `Content-Length`, a chunk size…).
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"00000000000000000000000001",
    b"99999999999999999999999",
    b"18446744073709551615",
    b"18446744073709551616",
    b"9223372036854775808",
    b"4294967296",
    b"fffffffffffffffff",
    b"-1",
    b"+1",
    b"1_0",
    b"0x1",
    b"",
];

/// A byte string printed escaped, for readable shrunk cases.
#[derive(Clone, Copy)]
struct Token(&'static [u8]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        byte: u8,
    },
    Insert {
        at: Index,
        byte: u8,
    },
    Delete {
        at: Index,
        len: usize,
    },
    /// Repeats `len` bytes right after themselves.
    Duplicate {
        at: Index,
        len: usize,
    },
    Splice {
        at: Index,
        token: Token,
    },
    Overwrite {
        at: Index,
        token: Token,
    },
    /// Repeats a whole line (an extra header, a second `Transfer-Encoding`).
    DuplicateLine {
        line: Index,
    },
    DeleteLine {
        line: Index,
    },
    /// Replaces a run of (hex) digits with `number`.
    Number {
        run: Index,
        number: Token,
    },
}

fn mutation(
    tokens: &'static [&'static [u8]],
    numbers: &'static [&'static [u8]],
) -> impl Strategy<Value = Mutation> {
    let token = || proptest::sample::select(tokens).prop_map(Token);
    prop_oneof![
        1 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        1 => (any::<Index>(), 1usize..5).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => (any::<Index>(), 1usize..17).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        3 => (any::<Index>(), token()).prop_map(|(at, token)| Mutation::Splice { at, token }),
        1 => (any::<Index>(), token()).prop_map(|(at, token)| Mutation::Overwrite { at, token }),
        1 => any::<Index>().prop_map(|line| Mutation::DuplicateLine { line }),
        1 => any::<Index>().prop_map(|line| Mutation::DeleteLine { line }),
        2 => (any::<Index>(), proptest::sample::select(numbers).prop_map(Token))
            .prop_map(|(run, number)| Mutation::Number { run, number }),
    ]
}

/// Start offsets of the lines of `b` (each up to and including its LF).
fn line_spans(b: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            spans.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < b.len() {
        spans.push((start, b.len()));
    }
    spans
}

/// Runs of hex digits in `b`.
fn digit_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_hexdigit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_hexdigit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

impl Mutation {
    fn apply(&self, b: &mut Vec<u8>) {
        let len = b.len();
        let pos = |at: &Index| if len == 0 { 0 } else { at.index(len) };
        match self {
            Mutation::FlipBit { at, bit } if len > 0 => b[pos(at)] ^= 1 << bit,
            Mutation::SetByte { at, byte } if len > 0 => b[pos(at)] = *byte,
            Mutation::Insert { at, byte } => b.insert(at.index(len + 1), *byte),
            Mutation::Delete { at, len: n } if len > 0 => {
                let p = pos(at);
                b.drain(p..(p + n).min(len));
            }
            Mutation::Duplicate { at, len: n } if len > 0 => {
                let p = pos(at);
                let piece = b[p..(p + n).min(len)].to_vec();
                let end = p + piece.len();
                b.splice(end..end, piece);
            }
            Mutation::Splice { at, token } => {
                let p = at.index(len + 1);
                b.splice(p..p, token.0.iter().copied());
            }
            Mutation::Overwrite { at, token } if len > 0 => {
                let p = pos(at);
                let end = (p + token.0.len()).min(len);
                b.splice(p..end, token.0.iter().copied());
            }
            Mutation::DuplicateLine { line } => {
                let spans = line_spans(b);
                if !spans.is_empty() {
                    let (s, e) = spans[line.index(spans.len())];
                    let piece = b[s..e].to_vec();
                    b.splice(e..e, piece);
                }
            }
            Mutation::DeleteLine { line } => {
                let spans = line_spans(b);
                if !spans.is_empty() {
                    let (s, e) = spans[line.index(spans.len())];
                    b.drain(s..e);
                }
            }
            Mutation::Number { run, number } => {
                let runs = digit_runs(b);
                if !runs.is_empty() {
                    let (s, e) = runs[run.index(runs.len())];
                    b.splice(s..e, number.0.iter().copied());
                }
            }
            _ => {}
        }
    }
}

/// One HTTP case: seeds written back to back, then mutated.
#[derive(Clone)]
struct HttpCase {
    seeds: Vec<usize>,
    mutations: Vec<Mutation>,
}

impl HttpCase {
    fn bytes(&self) -> Vec<u8> {
        let mut b: Vec<u8> = self
            .seeds
            .iter()
            .flat_map(|&i| SEEDS[i].iter().copied())
            .collect();
        for m in &self.mutations {
            m.apply(&mut b);
        }
        b
    }
}

impl std::fmt::Debug for HttpCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCase")
            .field("seeds", &self.seeds)
            .field("mutations", &self.mutations)
            .field(
                "bytes",
                &format_args!("\"{}\"", self.bytes().escape_ascii()),
            )
            .finish()
    }
}

fn http_case() -> impl Strategy<Value = HttpCase> {
    (
        proptest::collection::vec(0..SEEDS.len(), 1..=2),
        proptest::collection::vec(mutation(HTTP_TOKENS, NUMBERS), 1..=4),
    )
        .prop_map(|(seeds, mutations)| HttpCase { seeds, mutations })
}

// ------------------------------------------------------------ HTTP tests

/// The harness itself: every seed, unmutated, is proxied one request for one
/// response, and a case that would desync is caught by the origin's parser.
#[test]
fn seeds_are_proxied_one_for_one() {
    // The final statuses of each seed: one per request (bodies that look like
    // requests are not requests). `OPTIONS *` is answered by the proxy itself.
    const FINALS: [&[u16]; 10] = [
        &[200],
        &[200],
        &[200],
        &[200, 200, 200],
        &[200],
        &[200],
        &[200],
        &[200, 200],
        &[200],
        &[200],
    ];
    assert_eq!(FINALS.len(), SEEDS.len());
    let h = Harness::start();
    for (i, seed) in SEEDS.iter().enumerate() {
        let out = h.case(seed).unwrap_or_else(|e| panic!("seed {i}: {e}"));
        let finals: Vec<u16> = out.statuses.iter().copied().filter(|&s| s >= 200).collect();
        assert_eq!(finals, FINALS[i], "seed {i}: {out:?}");
        // Every 200 comes from the origin but `OPTIONS *`'s (seed 9, the proxy's).
        let proxied = FINALS[i].iter().filter(|&&s| s == 200).count() - usize::from(i == 9);
        assert_eq!(out.upstream, proxied, "seed {i}: {out:?}");
        // `Connection: close` (seed 4) and HTTP/1.0 (seed 8) end the connection.
        assert_eq!(out.eof, i == 4 || i == 8, "seed {i}: {out:?}");
    }
    // The strict parser the origin applies.
    let bad: &[&[u8]] = &[
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    ];
    for b in bad {
        assert!(
            matches!(parse_strict(b), Parsed::Malformed(_)),
            "accepted \"{}\"",
            b.escape_ascii()
        );
    }
    assert_eq!(
        parse_strict(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nGET"),
        Parsed::Complete {
            len: 67,
            target: "/".into(),
            head: false
        }
    );
}

#[test]
fn mutated_requests_never_desync_the_proxy() {
    let h = Harness::start();
    let tally = Mutex::new(Tally::default());
    run(cases(), http_case(), |case| {
        let out = h.case(&case.bytes()).map_err(TestCaseError::fail)?;
        tally.lock().unwrap().add(&out);
        Ok(())
    });
    // What the cases exercised (shown with --nocapture): a run in which nothing
    // reached the origin would test little.
    eprintln!("{:?}", tally.lock().unwrap());
}

/// Counts over the cases of a run.
#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    /// Lines with an HTTP/1.x version in the inputs: the most requests they hold.
    request_lines: usize,
    /// Cases with at least one request proxied, and the requests.
    proxied_cases: usize,
    upstream_requests: usize,
    /// Cases that ended with the proxy closing the connection.
    closed_by_proxy: usize,
    statuses: BTreeMap<u16, usize>,
}

impl Tally {
    fn add(&mut self, out: &Outcome) {
        self.cases += 1;
        self.request_lines += out.lines;
        self.proxied_cases += usize::from(out.upstream > 0);
        self.upstream_requests += out.upstream;
        self.closed_by_proxy += usize::from(out.eof);
        for &s in &out.statuses {
            *self.statuses.entry(s).or_default() += 1;
        }
    }
}

// ------------------------------------------------------ configuration tests

const ANNOTATED: &str = include_str!("../config/switchyard.toml");

/// Whether `Config::parse` would resolve `s` through DNS if it were a server's
/// `addr`: a host name (not an IP address, not `localhost`) with a port.
fn would_resolve(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    port.parse::<u16>().is_ok()
        && s.parse::<SocketAddr>().is_err()
        && !host.eq_ignore_ascii_case("localhost")
        && !host.is_empty()
}

/// Whether any string in `v` would be resolved.
fn resolves_names(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => would_resolve(s),
        toml::Value::Array(a) => a.iter().any(resolves_names),
        toml::Value::Table(t) => t.values().any(resolves_names),
        _ => false,
    }
}

/// Parses `text` as a configuration; any result is fine, a panic is not (the
/// runner catches it and shrinks the input).
fn parse_config(text: &str, tally: &Mutex<ConfigTally>) -> Result<(), TestCaseError> {
    let mut tally = tally.lock().unwrap();
    if let Ok(v) = text.parse::<toml::Table>() {
        if resolves_names(&toml::Value::Table(v)) {
            tally.rejected_dns += 1;
            return Err(TestCaseError::reject(
                "a host name to resolve (no DNS here)",
            ));
        }
    }
    match Config::parse(Path::new("fuzz.toml"), text) {
        Ok(_) => tally.loaded += 1,
        Err(e)
            if e.problems
                .iter()
                .any(|p| p.message.starts_with("TOML syntax")) =>
        {
            tally.refused_syntax += 1
        }
        Err(_) => tally.refused_by_validation += 1,
    }
    Ok(())
}

/// What the configuration cases of a run did (shown with --nocapture): cases
/// refused for their TOML syntax reach no validation code.
#[derive(Debug, Default)]
struct ConfigTally {
    loaded: usize,
    refused_by_validation: usize,
    refused_syntax: usize,
    rejected_dns: usize,
}

/// Keys and leaf values of the annotated configuration, commented-out ones
/// included (`# key = value` lines that parse on their own).
struct Vocabulary {
    keys: Vec<String>,
    values: Vec<toml::Value>,
}

fn vocabulary() -> Vocabulary {
    fn walk(v: &toml::Value, keys: &mut Vec<String>, values: &mut Vec<toml::Value>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    keys.push(k.clone());
                    walk(v, keys, values);
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, keys, values)),
            leaf => values.push(leaf.clone()),
        }
    }
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let doc: toml::Table = ANNOTATED
        .parse()
        .expect("the annotated configuration parses");
    walk(&toml::Value::Table(doc), &mut keys, &mut values);
    for line in ANNOTATED.lines() {
        let Some(rest) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        if let Ok(t) = rest.trim().parse::<toml::Table>() {
            walk(&toml::Value::Table(t), &mut keys, &mut values);
        }
    }
    keys.sort();
    keys.dedup();
    values.retain(|v| !resolves_names(v));
    Vocabulary { keys, values }
}

/// Strings at the edges of what the configuration takes.
const EDGE_STRINGS: &[&str] = &[
    "",
    " ",
    "\0",
    "é",
    "\u{202e}",
    "0",
    "0s",
    "0ms",
    "1ns",
    "-1s",
    "1.5s",
    "1e3s",
    "99999999999999999999s",
    "18446744073709551615ms",
    "584942417355y",
    "1h 1m",
    "s",
    "$",
    "${",
    "${}",
    "$host",
    "$request_uri$",
    "$$",
    "${nope}",
    "/",
    "//",
    "/api/",
    "api",
    "*",
    "*.",
    "*.*.example.com",
    "a..b",
    "-",
    "127.0.0.1:0",
    "127.0.0.1:65536",
    "[::1]:0",
    "[::1]",
    "::1",
    "0.0.0.0:80",
    "localhost:0",
    ":80",
    "127.0.0.1",
    "x:y",
    "header:",
    "cookie:",
    "query:",
    "header:X-A",
    "GET",
    "get",
    "CONNECT",
    "h2",
    "h2c",
    "http1",
    "json",
    "combined",
    "stdout",
    "1.3",
    "1.2",
    "1.1",
    "error",
    "timeout",
    "http_502",
    "non_idempotent",
    "u",
    "public",
    "<redacted>",
    "max-age=0",
];

const EDGE_INTS: &[i64] = &[
    0,
    1,
    -1,
    2,
    3,
    100,
    1000,
    1001,
    65535,
    65536,
    4294967295,
    4294967296,
    i64::MAX,
    i64::MIN,
];

fn toml_value(vocab: &Arc<Vocabulary>) -> BoxedStrategy<toml::Value> {
    use toml::Value;
    let leaf = prop_oneof![
        4 => proptest::sample::select(vocab.values.clone()),
        2 => proptest::sample::select(EDGE_STRINGS).prop_map(|s| Value::String(s.into())),
        1 => "[ -~]{0,12}"
            .prop_filter("no host name to resolve", |s| !would_resolve(s))
            .prop_map(Value::String),
        2 => proptest::sample::select(EDGE_INTS).prop_map(Value::Integer),
        1 => any::<i64>().prop_map(Value::Integer),
        1 => any::<f64>().prop_map(Value::Float),
        1 => any::<bool>().prop_map(Value::Boolean),
        1 => Just(Value::Datetime("1979-05-27T07:32:00Z".parse().unwrap())),
    ];
    let keys = key(vocab);
    leaf.prop_recursive(3, 32, 5, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(keys.clone(), inner, 0..5)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn key(vocab: &Arc<Vocabulary>) -> BoxedStrategy<String> {
    prop_oneof![
        8 => proptest::sample::select(vocab.keys.clone()),
        1 => "[a-z_]{1,8}",
        1 => proptest::sample::select(&["", " ", "a.b", "0", "é", "\"", "listener", "route"][..])
            .prop_map(String::from),
    ]
    .boxed()
}

/// A table of up to `n` keys of the vocabulary (or others) with random values.
fn table(vocab: &Arc<Vocabulary>, n: usize) -> BoxedStrategy<toml::Value> {
    proptest::collection::btree_map(key(vocab), toml_value(vocab), 0..n)
        .prop_map(|m| toml::Value::Table(m.into_iter().collect()))
        .boxed()
}

/// A document shaped like a configuration: listeners, routes and upstreams (with
/// servers) whose keys and values are random.
fn config_doc(vocab: &Arc<Vocabulary>) -> BoxedStrategy<String> {
    use toml::Value;
    let upstream = (
        table(vocab, 6),
        proptest::collection::vec(table(vocab, 5), 0..4),
    )
        .prop_map(|(mut u, servers)| {
            if let Value::Table(t) = &mut u {
                t.insert("servers".into(), Value::Array(servers));
            }
            u
        });
    (
        proptest::collection::vec(table(vocab, 5), 0..3),
        proptest::collection::vec(table(vocab, 6), 0..4),
        proptest::collection::btree_map(
            prop_oneof![
                proptest::sample::select(&["u", "v", "api"][..]).prop_map(String::from),
                key(vocab)
            ],
            upstream,
            0..3,
        ),
        proptest::option::of(table(vocab, 4)),
        proptest::collection::btree_map(key(vocab), toml_value(vocab), 0..2),
    )
        .prop_map(|(listeners, routes, upstreams, admin, extra)| {
            let mut doc: toml::Table = extra.into_iter().collect();
            doc.insert("listener".into(), Value::Array(listeners));
            doc.insert("route".into(), Value::Array(routes));
            doc.insert(
                "upstream".into(),
                Value::Table(upstreams.into_iter().collect()),
            );
            if let Some(a) = admin {
                doc.insert("admin".into(), a);
            }
            toml::to_string(&doc).unwrap_or_default()
        })
        .boxed()
}

/// An edit of the annotated configuration's tree: what is edited is the n-th
/// node in a depth-first walk.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, toml::Value),
    /// Removes one entry of a table or array.
    Remove(Index, Index),
    Insert(Index, String, toml::Value),
    /// Appends a copy of one item of an array (a second listener, route or server
    /// like another).
    DuplicateItem(Index, Index),
}

/// How many nodes of `v` (itself included) satisfy `pred`.
fn count_matching(v: &toml::Value, pred: &dyn Fn(&toml::Value) -> bool) -> usize {
    usize::from(pred(v))
        + match v {
            toml::Value::Table(t) => t.values().map(|c| count_matching(c, pred)).sum(),
            toml::Value::Array(a) => a.iter().map(|c| count_matching(c, pred)).sum(),
            _ => 0,
        }
}

/// The `n`-th node of `v` (depth first, `v` first) that satisfies `pred`.
fn nth_matching<'a>(
    v: &'a mut toml::Value,
    pred: &dyn Fn(&toml::Value) -> bool,
    n: &mut usize,
) -> Option<&'a mut toml::Value> {
    if pred(v) {
        if *n == 0 {
            return Some(v);
        }
        *n -= 1;
    }
    match v {
        toml::Value::Table(t) => t.iter_mut().find_map(|(_, c)| nth_matching(c, pred, n)),
        toml::Value::Array(a) => a.iter_mut().find_map(|c| nth_matching(c, pred, n)),
        _ => None,
    }
}

/// The node of `root` that `at` picks among those satisfying `pred`.
fn pick<'a>(
    root: &'a mut toml::Value,
    at: &Index,
    pred: &dyn Fn(&toml::Value) -> bool,
) -> Option<&'a mut toml::Value> {
    let total = count_matching(root, pred);
    if total == 0 {
        return None;
    }
    let mut n = at.index(total);
    nth_matching(root, pred, &mut n)
}

fn is_container(v: &toml::Value) -> bool {
    matches!(v, toml::Value::Table(_) | toml::Value::Array(_))
}

impl Edit {
    fn apply(&self, root: &mut toml::Value) {
        match self {
            Edit::Replace(at, value) => {
                // Any node but the root (the document must stay a table).
                let total = count_matching(root, &|_| true);
                if total > 1 {
                    let mut n = 1 + at.index(total - 1);
                    if let Some(v) = nth_matching(root, &|_| true, &mut n) {
                        *v = value.clone();
                    }
                }
            }
            Edit::Remove(at, which) => match pick(root, at, &is_container) {
                Some(toml::Value::Table(t)) if !t.is_empty() => {
                    let k = t.keys().nth(which.index(t.len())).unwrap().clone();
                    t.remove(&k);
                }
                Some(toml::Value::Array(a)) if !a.is_empty() => {
                    a.remove(which.index(a.len()));
                }
                _ => {}
            },
            Edit::Insert(at, key, value) => match pick(root, at, &is_container) {
                Some(toml::Value::Table(t)) => {
                    t.insert(key.clone(), value.clone());
                }
                Some(toml::Value::Array(a)) => a.push(value.clone()),
                _ => {}
            },
            Edit::DuplicateItem(at, which) => {
                let arrays = |v: &toml::Value| matches!(v, toml::Value::Array(a) if !a.is_empty());
                if let Some(toml::Value::Array(a)) = pick(root, at, &arrays) {
                    let item = a[which.index(a.len())].clone();
                    a.push(item);
                }
            }
        }
    }
}

fn edit(vocab: &Arc<Vocabulary>) -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), toml_value(vocab)).prop_map(|(at, v)| Edit::Replace(at, v)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(at, w)| Edit::Remove(at, w)),
        2 => (any::<Index>(), key(vocab), toml_value(vocab))
            .prop_map(|(at, k, v)| Edit::Insert(at, k, v)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(at, w)| Edit::DuplicateItem(at, w)),
    ]
}

/// The annotated configuration without its comment-only and blank lines, so that
/// byte mutations land on keys and values rather than on prose.
fn annotated_without_comments() -> String {
    ANNOTATED
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#')
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Bytes spliced into the configuration's text.
const TOML_TOKENS: &[&[u8]] = &[
    b"\"",
    b"'",
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"=",
    b"\n",
    b"\r",
    b"#",
    b"{",
    b"}",
    b",",
    b".",
    b"\\",
    b"\\u0000",
    b"\\U0010FFFF",
    b"\0",
    b"0",
    b"-",
    b"+",
    b"_",
    b"\"\"\"",
    b"'''",
    b"nan",
    b"inf",
    b"-inf",
    b"1e400",
    b"true",
    b"[]",
    b"{}",
    b"\n[[route]]\n",
    b"\n[[listener]]\n",
    b"\n[upstream.x]\n",
    b"\n[admin]\n",
    b"servers = []\n",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xae",
];

const TOML_NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"-1",
    b"65536",
    b"99999999999999999999",
    b"9223372036854775808",
    b"1_000",
    b"0x1F",
    b"0o7",
    b"0b1",
    b"1.5",
    b"1e3",
    b"",
];

#[test]
fn random_toml_never_panics_config_parse() {
    let vocab = Arc::new(vocabulary());
    assert!(
        vocab.keys.len() > 50,
        "keys of the annotated file: {:?}",
        vocab.keys
    );
    let tally = Mutex::new(ConfigTally::default());
    run(cases() * CONFIG_CASES_FACTOR, config_doc(&vocab), |text| {
        parse_config(&text, &tally)
    });
    eprintln!("random documents: {:?}", tally.lock().unwrap());
}

#[test]
fn edited_annotated_config_never_panics_config_parse() {
    let vocab = Arc::new(vocabulary());
    let doc: toml::Table = ANNOTATED
        .parse()
        .expect("the annotated configuration parses");
    // The unedited file is valid: edits start from a configuration that loads.
    Config::parse(Path::new("switchyard.toml"), ANNOTATED).expect("the annotated file loads");
    let edits = proptest::collection::vec(edit(&vocab), 1..=3);
    let tally = Mutex::new(ConfigTally::default());
    run(cases() * CONFIG_CASES_FACTOR, edits, |edits| {
        let mut root = toml::Value::Table(doc.clone());
        for e in &edits {
            e.apply(&mut root);
        }
        let toml::Value::Table(t) = root else {
            unreachable!("the root is never replaced")
        };
        match toml::to_string(&t) {
            Ok(text) => parse_config(&text, &tally),
            Err(e) => Err(TestCaseError::reject(format!("not serialisable: {e}"))),
        }
    });
    eprintln!("edited file: {:?}", tally.lock().unwrap());
}

#[test]
fn mutated_annotated_text_never_panics_config_parse() {
    let text = annotated_without_comments();
    Config::parse(Path::new("switchyard.toml"), &text).expect("the file without comments loads");
    let mutations = proptest::collection::vec(mutation(TOML_TOKENS, TOML_NUMBERS), 1..=6);
    let tally = Mutex::new(ConfigTally::default());
    run(cases() * CONFIG_CASES_FACTOR, mutations, |mutations| {
        let mut b = text.clone().into_bytes();
        for m in &mutations {
            m.apply(&mut b);
        }
        parse_config(&String::from_utf8_lossy(&b), &tally)
    });
    eprintln!("mutated text: {:?}", tally.lock().unwrap());
}

// ------------------------------------------------------------ regressions
//
// Minimal failing cases found by the tests above, kept as plain tests.

/// The regressions' upstream: two servers, each ejected by one failure.
const TWO_SERVERS: &str =
    "[[route]]\nupstream = \"u\"\n\n[upstream.u]\nservers = [{ addr = \"@0\" }, { addr = \"@1\" }]\n";

/// (errors, ejected) of each of `servers`.
fn failures(servers: &[switchyard::upstream::UpstreamServer]) -> Vec<(u64, bool)> {
    servers
        .iter()
        .map(|s| (s.state.errors(), s.state.ejected()))
        .collect()
}

/// Found by `mutated_requests_never_desync_the_proxy`: a chunked request body
/// that turns malformed after the head was forwarded (here chunk data longer
/// than its size, so no CRLF where one must be) is the client's fault, yet the
/// proxy answers 502 Bad Gateway and records a failure against the server, which
/// with the default `max_fails = 1` rests a healthy server for `fail_timeout`:
/// any client can eject servers with one bad request each. Expected: 400, no
/// failure counted, the server stays in rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_body_is_the_clients_fault() {
    let p = common::setup(&["a", "b"], TWO_SERVERS).await;
    let res = common::raw_exchange(
        p.addr,
        b"POST /fuzz/h HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabContent-Length: 5, 5\r\nc\r\n0\r\n\r\n",
    )
    .await;
    let snapshot = p.running.shared.load();
    let servers = &snapshot.upstreams[0].servers;
    assert_eq!(
        (res.status, failures(servers)),
        (400, vec![(0, false), (0, false)]),
        "status, then (errors, ejected) of each server; response head: {}",
        res.head
    );
}

/// The same path without a malformed byte: a client that goes away in the
/// middle of its request body (an upload cancelled on a phone) leaves the proxy
/// with a failed upstream exchange, which must not count against the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_abandoning_its_body_does_not_eject_the_server() {
    let p = common::setup(&["a", "b"], TWO_SERVERS).await;
    let snapshot = p.running.shared.load();
    let servers = &snapshot.upstreams[0].servers;
    let inflight = || servers.iter().map(|s| s.state.inflight()).sum::<usize>();
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    // The request is on its way to a server; then the client leaves.
    let limit = common::EXCHANGE_LIMIT;
    assert!(
        eventually(limit, || inflight() > 0).await.is_some(),
        "the request never reached a server"
    );
    drop(s);
    assert!(
        eventually(limit, || inflight() == 0).await.is_some(),
        "the request never ended"
    );
    assert_eq!(
        failures(servers),
        vec![(0, false), (0, false)],
        "(errors, ejected) of each server"
    );
}
