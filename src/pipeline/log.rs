//! What one request leaves behind: a `Record` filled in as the request goes (route,
//! server, tries, upstream status and time), closed when the response body ends or
//! is dropped. Closing counts the request in the route's metrics and in the
//! status page's time series (the answering server's, else the upstream's or the
//! proxy's) and writes its access-log line, so all see the whole response: its
//! bytes and its duration.
//!
//! A protocol switch (WebSocket) is counted when its 101 goes out, but its bytes
//! and its log line wait for the tunnel to close (`TunnelEnd`), as nginx's
//! `$bytes_sent` and `$request_time` take in the whole connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::client::ClientInfo;
use super::reply::RespBody;
use super::session::Turn;
use crate::body::{BoxError, SendProgress};
use crate::observe::access_log::{AccessLog, Entry};
use crate::observe::metrics::{class, ClassCounters, RouteMetrics};
use crate::observe::series::{Outcome, Series};

/// Where the request body's size comes from.
#[derive(Debug, Default)]
pub enum BodyIn {
    #[default]
    None,
    /// Held in memory: known.
    Held(u64),
    /// Streamed: counted as it goes.
    Stream(Arc<SendProgress>),
}

impl BodyIn {
    fn bytes(&self) -> u64 {
        match self {
            BodyIn::None => 0,
            BodyIn::Held(n) => *n,
            BodyIn::Stream(p) => p.bytes(),
        }
    }
}

/// The request line and headers a log line shows, kept only when it is logged.
#[derive(Debug)]
struct LogParts {
    log: Arc<AccessLog>,
    client: Arc<ClientInfo>,
    time: SystemTime,
    method: Method,
    uri: Uri,
    version: Version,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
}

#[derive(Debug)]
pub struct Record {
    start: Instant,
    /// The request id (set by the `request_id` filter).
    pub id: HeaderValue,
    /// `None` until the request is routed.
    pub route: Option<Arc<RouteMetrics>>,
    /// The last server tried: its index in the upstream and its address.
    pub server: Option<(usize, std::net::SocketAddr)>,
    pub upstream_status: Option<StatusCode>,
    /// From sending to the last server until its response head.
    pub upstream_time: Option<Duration>,
    /// Time waited in the upstream's queue for a server below its `max_conns`;
    /// `None` when the request never met a full upstream.
    pub queue_time: Option<Duration>,
    pub tries: u32,
    pub body_in: BodyIn,
    /// The request's turn on its connection: ends with the response.
    pub turn: Option<Turn>,
    /// The `limit_conn` slots the request holds, given back when the record
    /// closes (its response body ended or was dropped).
    pub held: crate::limit::Held,
    /// A Telegram webhook's update, for its log line.
    pub update: Option<crate::observe::access_log::UpdateNote>,
    log: Option<LogParts>,
}

impl Record {
    /// Starts the record of `req`; `log` is the access log, when there is one.
    pub fn start<B>(
        req: &http::Request<B>,
        client: &Arc<ClientInfo>,
        log: Option<&Arc<AccessLog>>,
    ) -> Record {
        let header = |n| req.headers().get(n).cloned();
        Record {
            start: Instant::now(),
            id: HeaderValue::from_static(""),
            route: None,
            server: None,
            upstream_status: None,
            upstream_time: None,
            queue_time: None,
            tries: 0,
            body_in: BodyIn::None,
            turn: None,
            held: crate::limit::Held::default(),
            update: None,
            log: log.map(|log| LogParts {
                log: Arc::clone(log),
                client: Arc::clone(client),
                time: SystemTime::now(),
                method: req.method().clone(),
                uri: req.uri().clone(),
                version: req.version(),
                user_agent: header(http::header::USER_AGENT),
                referer: header(http::header::REFERER),
            }),
        }
    }

    /// The route turned this request's logging off.
    pub fn unlog(&mut self) {
        self.log = None;
    }

    /// The response, with a body that closes the record when it ends. `requests`
    /// are the counters the request counts in: the answering server's for its
    /// route, or the route's (or the unrouted) `unsent`; `series` is the time
    /// series it counts in likewise (the server's, the upstream's or the proxy's).
    pub fn respond(
        self,
        res: Response<RespBody>,
        route: &Arc<RouteMetrics>,
        requests: &ClassCounters,
        series: Option<&Arc<Series>>,
    ) -> Response<Observed> {
        let (head, body) = res.into_parts();
        let mut record = self;
        if record.route.is_none() {
            record.route = Some(Arc::clone(route));
        }
        let mut head = head;
        let status = head.status;
        let requests = requests[class(status)].clone();
        let body = Observed {
            body,
            bytes: 0,
            open: Some(Open {
                record,
                status,
                requests,
                series: series.cloned(),
            }),
            tunnel: head.extensions.remove::<TunnelEnd>(),
        };
        Response::from_parts(head, body)
    }

    /// The response body ended: the request counts now (status, duration to here).
    /// Its bytes and log line follow now too, or when `tunnel` closes.
    fn close(
        mut self,
        status: StatusCode,
        requests: &metrics::Counter,
        series: Option<&Series>,
        bytes_out: u64,
        tunnel: Option<TunnelEnd>,
    ) {
        let Some(route) = &self.route else { return };
        requests.increment(1);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        route.record_duration(elapsed);
        if let Some(s) = series {
            s.record(now, Outcome::of(status, self.upstream_status), elapsed);
        }
        match tunnel {
            Some(tunnel) => {
                // What the connection and the limits hold ends with the response
                // as for any request; the tunnel keeps only what its line needs.
                self.turn = None;
                self.held = crate::limit::Held::default();
                tunnel.park(Parked {
                    record: self,
                    status,
                    bytes_out,
                });
            }
            None => self.finish(status, bytes_out, Tunnelled::default()),
        }
    }

    /// Counts the request's bytes (the body's, and the tunnel's) and writes its line.
    fn finish(self, status: StatusCode, body_out: u64, tunnel: Tunnelled) {
        let elapsed = self.start.elapsed();
        let bytes_in = self.body_in.bytes() + tunnel.from_client;
        let bytes_out = body_out + tunnel.to_client;
        let Some(route) = &self.route else { return };
        route.bytes_out.increment(bytes_out);
        route.bytes_in.increment(bytes_in);
        let Some(p) = &self.log else { return };
        let text = |v: &Option<HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (user_agent, referer) = (text(&p.user_agent), text(&p.referer));
        let path = p.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let entry = Entry {
            time: p.time,
            client: p.client.remote,
            method: p.method.as_str(),
            path,
            protocol: version_str(p.version),
            status: status.as_u16(),
            bytes_in,
            bytes_out,
            duration: elapsed,
            route: &route.name,
            upstream: &route.upstream,
            server: self.server.map(|(_, a)| a),
            upstream_status: self.upstream_status.map(|s| s.as_u16()),
            upstream_time: self.upstream_time,
            queue_time: self.queue_time,
            tries: self.tries,
            request_id: self.id.to_str().unwrap_or_default(),
            user_agent: &user_agent,
            referer: &referer,
            update: self.update,
        };
        p.log.write(entry.line(p.log.format()));
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

// ===== tunnels =====

/// Bytes a tunnel carried, each way.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tunnelled {
    pub(crate) from_client: u64,
    pub(crate) to_client: u64,
}

/// The record of a switch's request, waiting for its tunnel: the tunnel's side is
/// `TunnelClose`, the response's a `TunnelEnd` in its extensions. Whichever comes
/// second — the 101's record closing, or the tunnel — finishes the record.
#[derive(Debug, Clone, Default)]
pub(crate) struct TunnelEnd(Arc<Mutex<Handoff>>);

#[derive(Debug, Default)]
enum Handoff {
    /// Neither side is done.
    #[default]
    Open,
    /// The record closed; the tunnel runs.
    Parked(Box<Parked>),
    /// The tunnel closed first.
    Closed(Tunnelled),
    Done,
}

#[derive(Debug)]
struct Parked {
    record: Record,
    status: StatusCode,
    bytes_out: u64,
}

impl TunnelEnd {
    /// A pair: the `TunnelEnd` goes into the 101's extensions, the `TunnelClose`
    /// with the tunnel.
    pub(crate) fn pair() -> (TunnelEnd, TunnelClose) {
        let end = TunnelEnd::default();
        let close = TunnelClose {
            end: end.clone(),
            carried: Tunnelled::default(),
        };
        (end, close)
    }

    fn swap(&self, new: Handoff) -> Handoff {
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *h, new)
    }

    fn park(&self, parked: Parked) {
        match self.swap(Handoff::Done) {
            Handoff::Closed(carried) => {
                parked
                    .record
                    .finish(parked.status, parked.bytes_out, carried)
            }
            Handoff::Open => {
                self.swap(Handoff::Parked(Box::new(parked)));
            }
            Handoff::Parked(_) | Handoff::Done => {}
        }
    }

    fn closed(&self, carried: Tunnelled) {
        match self.swap(Handoff::Done) {
            Handoff::Parked(p) => p.record.finish(p.status, p.bytes_out, carried),
            Handoff::Open => {
                self.swap(Handoff::Closed(carried));
            }
            Handoff::Closed(_) | Handoff::Done => {}
        }
    }
}

/// The tunnel's end of a `TunnelEnd`: `done` with the bytes carried, or dropped
/// (the tunnel failed to open, or its task was dropped) with none, it finishes the
/// request's record.
#[derive(Debug)]
pub(crate) struct TunnelClose {
    end: TunnelEnd,
    carried: Tunnelled,
}

impl TunnelClose {
    /// The tunnel closed having carried `carried`.
    pub(crate) fn done(mut self, carried: Tunnelled) {
        self.carried = carried;
    }
}

impl Drop for TunnelClose {
    fn drop(&mut self) {
        self.end.closed(self.carried);
    }
}

// ===== the response body =====

/// The client's response body: the proxied body, counted, closing the request's
/// record when it ends or is dropped (a client that goes away mid-body).
#[derive(Debug)]
pub struct Observed {
    body: RespBody,
    bytes: u64,
    open: Option<Open>,
    /// A switch's tunnel, which the record's bytes and line wait for.
    tunnel: Option<TunnelEnd>,
}

/// What closing a record needs, held by its response body until then.
#[derive(Debug)]
struct Open {
    record: Record,
    status: StatusCode,
    requests: metrics::Counter,
    series: Option<Arc<Series>>,
}

impl Observed {
    fn close(&mut self) {
        if let Some(o) = self.open.take() {
            o.record.close(
                o.status,
                &o.requests,
                o.series.as_deref(),
                self.bytes,
                self.tunnel.take(),
            );
        }
    }
}

impl Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.body.is_end_stream() {
                    this.close();
                }
            }
            Poll::Ready(None) => this.close(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.close();
    }
}
