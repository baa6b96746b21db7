//! An in-process DNS server for the discovery tests (tests/discovery.rs): a real
//! DNS implementation, hickory-server's `ServerFuture`, answering over UDP and TCP
//! on one port of 127.0.0.1 (`[resolver] servers = ["127.0.0.1:PORT"]`), from
//! records the test changes while the proxy resolves them.
//!
//! - Records per name: A and AAAA (one TTL per name and type), SRV (priority,
//!   weight, port, target) with the targets' A and AAAA records in the additional
//!   section, as authoritative servers send them.
//! - What a name gets (`Answer`): its records, SERVFAIL, NXDOMAIN, nothing at all
//!   (the query is dropped: the resolver times out), or an empty NOERROR. A name
//!   the server does not know gets NXDOMAIN, and a known name without records of
//!   the type asked NOERROR with none (NODATA); both carry the zone's SOA, whose
//!   minimum is the negative-caching TTL (RFC 2308), as real servers' do.
//! - Answers rotate: each answer of a name starts one record further on (BIND's
//!   default `rrset-order cyclic`), so that whatever depends on the order of an
//!   answer shows it.
//! - A UDP answer larger than the client's EDNS payload (at most 1232 bytes, the
//!   DNS flag day's size) is truncated, and the resolver asks again over TCP.
//! - Every query is logged (time, name, type, transport), dropped ones too, so
//!   that a test counts the re-resolutions of a name and times them.
//!
//! The server runs on a thread of its own with its own runtime, so that it answers
//! whatever the test's runtime is doing (a test may block it waiting for a child
//! process); it stops when dropped.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Edns, Header, Message, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record};
use hickory_server::proto::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use tokio::sync::{oneshot, watch};

/// The record types a test asks the query log about (`RecordType::A`, …).
pub use hickory_server::proto::rr::RecordType;

/// The negative-caching TTL of the zone's SOA (its `minimum`): one second, so a
/// resolver that caches an NXDOMAIN or NODATA answer asks again soon, as the tests
/// change names every few seconds.
pub const NEGATIVE_TTL: u32 = 1;

/// The largest UDP answer sent to a client that offers more with EDNS: 1232 bytes,
/// the DNS flag day 2020 figure that avoids IP fragmentation; larger answers are
/// truncated and the client retries over TCP.
pub const UDP_PAYLOAD: u16 = 1232;

/// How long an idle TCP connection of a client stays open.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What the server does with the queries for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answer {
    /// Its records (NODATA for a type it has none of).
    #[default]
    Records,
    /// SERVFAIL: the server failed.
    ServFail,
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// No answer at all: the query is dropped and the resolver times out.
    Silent,
    /// NOERROR without a record, whatever the type.
    Empty,
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// A name (served with its A/AAAA records in the additional section when this
    /// server has them).
    pub target: String,
}

impl Srv {
    pub fn new(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.to_owned(),
        }
    }
}

/// One query as the server received it.
#[derive(Debug, Clone)]
pub struct Query {
    pub at: Instant,
    /// Lower case, without the final dot.
    pub name: String,
    pub kind: RecordType,
    pub tcp: bool,
}

/// Records of one type, with their TTL.
#[derive(Debug, Clone)]
struct Set<T> {
    ttl: u32,
    records: Vec<T>,
}

impl<T> Default for Set<T> {
    fn default() -> Self {
        Set {
            ttl: 0,
            records: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    answer: Answer,
    a: Set<Ipv4Addr>,
    aaaa: Set<Ipv6Addr>,
    srv: Set<Srv>,
    /// Answers given so far: where the next rotation starts.
    served: usize,
}

#[derive(Debug, Default)]
struct Zone {
    names: HashMap<String, Entry>,
    log: Vec<Query>,
}

/// The running server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    /// The number of queries logged, to await arrivals.
    seen: watch::Receiver<usize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The key of a name: lower case, without the final dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Binds UDP and TCP on the same port of 127.0.0.1 (the port the kernel gives the
/// UDP socket; another one if that port is taken for TCP).
fn bind_pair() -> (std::net::UdpSocket, std::net::TcpListener) {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind DNS UDP");
        let port = udp.local_addr().expect("UDP address").port();
        if let Ok(tcp) = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

impl DnsServer {
    /// Starts a server that knows no name yet.
    pub fn start() -> DnsServer {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("DNS address");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let (seen_tx, seen) = watch::channel(0);
        let handler = Handler {
            zone: Arc::clone(&zone),
            seen: seen_tx,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("dns-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("DNS runtime");
                rt.block_on(async move {
                    let mut server = ServerFuture::new(handler);
                    server.register_socket_std(udp).expect("register UDP");
                    server
                        .register_listener_std(tcp, TCP_IDLE)
                        .expect("register TCP");
                    let _ = ready_tx.send(());
                    let _ = stopped.await;
                    // Dropping the server (and then the runtime) ends its tasks.
                    drop(server);
                });
            })
            .expect("spawn the DNS thread");
        ready.recv().expect("DNS server started");
        DnsServer {
            addr,
            zone,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address for `[resolver] servers` (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut zone = self.zone.lock().unwrap();
        f(zone.names.entry(key(name)).or_default())
    }

    /// Sets the A records of `name` (none: NODATA for A).
    pub fn set_a(&self, name: &str, ttl: u32, addrs: &[Ipv4Addr]) {
        self.with(name, |e| {
            e.a = Set {
                ttl,
                records: addrs.to_vec(),
            }
        });
    }

    /// Sets the AAAA records of `name`.
    pub fn set_aaaa(&self, name: &str, ttl: u32, addrs: &[Ipv6Addr]) {
        self.with(name, |e| {
            e.aaaa = Set {
                ttl,
                records: addrs.to_vec(),
            }
        });
    }

    /// Sets the SRV records of `name` (e.g. `_http._tcp.bots.test`).
    pub fn set_srv(&self, name: &str, ttl: u32, records: &[Srv]) {
        self.with(name, |e| {
            e.srv = Set {
                ttl,
                records: records.to_vec(),
            }
        });
    }

    /// Sets how the queries for `name` are answered from now on.
    pub fn set_answer(&self, name: &str, answer: Answer) {
        self.with(name, |e| e.answer = answer);
    }

    /// Forgets `name`: NXDOMAIN from now on, as for a name never set.
    pub fn remove(&self, name: &str) {
        self.zone.lock().unwrap().names.remove(&key(name));
    }

    /// Every query received so far, in order of arrival.
    pub fn log(&self) -> Vec<Query> {
        self.zone.lock().unwrap().log.clone()
    }

    /// Queries of any type for `name` so far (dropped ones included).
    pub fn queries(&self, name: &str) -> usize {
        let k = key(name);
        self.zone
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|q| q.name == k)
            .count()
    }

    /// The arrival times of the queries of type `kind` for `name`.
    pub fn query_times(&self, name: &str, kind: RecordType) -> Vec<Instant> {
        let k = key(name);
        self.zone
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|q| q.name == k && q.kind == kind)
            .map(|q| q.at)
            .collect()
    }

    /// Queries of any type for `name` that arrived after `since`.
    pub fn queries_since(&self, name: &str, since: Instant) -> usize {
        let k = key(name);
        self.zone
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|q| q.name == k && q.at > since)
            .count()
    }

    /// Waits until `name` has been asked about `n` times in all (any type); panics
    /// after `limit`.
    pub async fn wait_queries(&self, name: &str, n: usize, limit: Duration) {
        let mut rx = self.seen.clone();
        let fut = async {
            while self.queries(name) < n {
                rx.changed().await.expect("DNS server alive");
            }
        };
        tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            panic!(
                "DNS: {} queries for {name} after {limit:?}, expected {n}",
                self.queries(name)
            )
        })
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A name as a fully qualified `Name`.
fn fqdn(name: &str) -> Name {
    let mut n = Name::from_ascii(name).unwrap_or_else(|e| panic!("DNS name {name:?}: {e}"));
    n.set_fqdn(true);
    n
}

/// The SOA of the zone holding `name` (its last label: every test name is under
/// `.test`), whose minimum is the negative-caching TTL.
fn soa(name: &str) -> Record {
    let zone = key(name).rsplit('.').next().unwrap_or("test").to_owned();
    let origin = fqdn(&zone);
    let rdata = SOA::new(
        fqdn(&format!("ns.{zone}")),
        fqdn(&format!("hostmaster.{zone}")),
        1,
        3600,
        600,
        86400,
        NEGATIVE_TTL,
    );
    Record::from_rdata(origin, NEGATIVE_TTL, RData::SOA(rdata))
}

/// `v` rotated left by `by`.
fn rotated<T: Clone>(v: &[T], by: usize) -> Vec<T> {
    let mut out = v.to_vec();
    if !out.is_empty() {
        let n = by % out.len();
        out.rotate_left(n);
    }
    out
}

/// What to send for one query.
enum Reply {
    Drop,
    Error(ResponseCode),
    Message {
        code: ResponseCode,
        answers: Vec<Record>,
        authority: Vec<Record>,
        additional: Vec<Record>,
    },
}

impl Zone {
    /// The address records of `name` for the additional section of an SRV answer.
    fn glue(&self, target: &str) -> Vec<Record> {
        let Some(e) = self.names.get(&key(target)) else {
            return Vec::new();
        };
        if e.answer != Answer::Records {
            return Vec::new();
        }
        let owner = fqdn(target);
        let a =
            e.a.records
                .iter()
                .map(|ip| Record::from_rdata(owner.clone(), e.a.ttl, RData::A(A(*ip))));
        let aaaa = e
            .aaaa
            .records
            .iter()
            .map(|ip| Record::from_rdata(owner.clone(), e.aaaa.ttl, RData::AAAA(AAAA(*ip))));
        a.chain(aaaa).collect()
    }

    fn reply(&mut self, name: &str, owner: &Name, kind: RecordType) -> Reply {
        let nodata = |name: &str| Reply::Message {
            code: ResponseCode::NoError,
            answers: Vec::new(),
            authority: vec![soa(name)],
            additional: Vec::new(),
        };
        let nxdomain = |name: &str| Reply::Message {
            code: ResponseCode::NXDomain,
            answers: Vec::new(),
            authority: vec![soa(name)],
            additional: Vec::new(),
        };
        let Some(e) = self.names.get_mut(name) else {
            return nxdomain(name);
        };
        match e.answer {
            Answer::Silent => return Reply::Drop,
            Answer::ServFail => return Reply::Error(ResponseCode::ServFail),
            Answer::NxDomain => return nxdomain(name),
            Answer::Empty => return nodata(name),
            Answer::Records => {}
        }
        let turn = e.served;
        let (answers, targets): (Vec<Record>, Vec<String>) = match kind {
            RecordType::A => (
                rotated(&e.a.records, turn)
                    .into_iter()
                    .map(|ip| Record::from_rdata(owner.clone(), e.a.ttl, RData::A(A(ip))))
                    .collect(),
                Vec::new(),
            ),
            RecordType::AAAA => (
                rotated(&e.aaaa.records, turn)
                    .into_iter()
                    .map(|ip| Record::from_rdata(owner.clone(), e.aaaa.ttl, RData::AAAA(AAAA(ip))))
                    .collect(),
                Vec::new(),
            ),
            RecordType::SRV => {
                let records = rotated(&e.srv.records, turn);
                let targets = records.iter().map(|s| s.target.clone()).collect();
                let answers = records
                    .into_iter()
                    .map(|s| {
                        let rdata = SRV::new(s.priority, s.weight, s.port, fqdn(&s.target));
                        Record::from_rdata(owner.clone(), e.srv.ttl, RData::SRV(rdata))
                    })
                    .collect();
                (answers, targets)
            }
            _ => (Vec::new(), Vec::new()),
        };
        if answers.is_empty() {
            return nodata(name);
        }
        e.served += 1;
        let mut additional = Vec::new();
        let mut glued: Vec<String> = Vec::new();
        for t in targets {
            let k = key(&t);
            if !glued.contains(&k) {
                additional.extend(self.glue(&t));
                glued.push(k);
            }
        }
        Reply::Message {
            code: ResponseCode::NoError,
            answers,
            authority: Vec::new(),
            additional,
        }
    }
}

struct Handler {
    zone: Arc<Mutex<Zone>>,
    seen: watch::Sender<usize>,
}

impl Handler {
    async fn answer<R: ResponseHandler>(&self, request: &Request, mut out: R) -> ResponseInfo {
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        // RFC 1035's 512 bytes, or what the client offers with EDNS up to UDP_PAYLOAD.
        let mut udp_limit = 512;
        if let Some(edns) = request.edns() {
            udp_limit = edns.max_payload().clamp(512, UDP_PAYLOAD);
            let mut e = Edns::new();
            e.set_max_payload(udp_limit);
            builder.edns(e);
        }
        let (reply, tcp) = match request.request_info() {
            Err(_) => (Reply::Error(ResponseCode::FormErr), false),
            Ok(info) => {
                let name = key(&info.query.name().to_string());
                let kind = info.query.query_type();
                let tcp = info.protocol == Protocol::Tcp;
                let mut zone = self.zone.lock().unwrap();
                zone.log.push(Query {
                    at: Instant::now(),
                    name: name.clone(),
                    kind,
                    tcp,
                });
                self.seen.send_replace(zone.log.len());
                (zone.reply(&name, info.query.original().name(), kind), tcp)
            }
        };
        let sent = match reply {
            Reply::Drop => return ResponseInfo::from(header),
            Reply::Error(code) => {
                out.send_response(builder.error_msg(request.header(), code))
                    .await
            }
            Reply::Message {
                code,
                mut answers,
                mut authority,
                mut additional,
            } => {
                header.set_response_code(code);
                // hickory-server's own truncation can cut a record in half; an
                // answer too large for UDP goes out empty with TC set, as many
                // servers send it, and the client asks again over TCP.
                if !tcp
                    && wire_len(request, &header, &answers, &authority, &additional)
                        > udp_limit.into()
                {
                    header.set_truncated(true);
                    answers.clear();
                    authority.clear();
                    additional.clear();
                }
                let none: Vec<Record> = Vec::new();
                let response = builder.build(
                    header,
                    answers.iter(),
                    none.iter(),
                    authority.iter(),
                    additional.iter(),
                );
                out.send_response(response).await
            }
        };
        sent.unwrap_or_else(|_| {
            let mut h = Header::response_from_request(request.header());
            h.set_response_code(ResponseCode::ServFail);
            ResponseInfo::from(h)
        })
    }
}

/// The size of a response on the wire, counting an OPT record (EDNS) whether or
/// not the answer has one.
fn wire_len(
    request: &Request,
    header: &Header,
    answers: &[Record],
    authority: &[Record],
    additional: &[Record],
) -> usize {
    let mut m = Message::new();
    m.set_header(*header);
    for q in request.queries() {
        m.add_query(q.original().clone());
    }
    m.add_answers(answers.iter().cloned());
    m.add_name_servers(authority.iter().cloned());
    m.add_additionals(additional.iter().cloned());
    // 11 bytes: the OPT record of an EDNS answer.
    m.to_vec().map_or(usize::MAX, |v| v.len() + 11)
}

// `RequestHandler` is declared with `#[async_trait]`; this is the signature that
// macro gives it, written out so the tests need no `async-trait` of their own.
impl RequestHandler for Handler {
    fn handle_request<'life0, 'life1, 'async_trait, R>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.answer(request, response_handle))
    }
}
