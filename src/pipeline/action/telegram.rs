//! The Telegram webhook action (`[route.telegram]`, reference part 2): the proxy
//! action under the rules that make Telegram's deliveries arrive once, in order,
//! and never lost.
//!
//! One update's way, after the gate (`guard::telegram`: source, then secret):
//! 1. the body is read whole, up to `max_body` (larger: 413, dead-lettered);
//! 2. a lazy scan reads its `update_id`, type and affinity key
//!    (`telegram::update`), which places it on a consistent-hash ring over the
//!    eligible bots (`balance::Affine`): a chat stays on one bot while that bot
//!    is up; no key → the least-loaded bot;
//! 3. deduplication (`telegram::dedup`): a re-send of a delivered update is
//!    answered from memory (or the shared store), one of an update being
//!    delivered waits for that delivery, and only a new one goes on;
//! 4. the delivery runs in a task of its own, which outlives the request: when
//!    `deadline` passes first, Telegram gets 503 with `Retry-After` and the bot's
//!    request goes on, so the re-send collects the bot's answer instead of
//!    running the handler twice;
//! 5. the bot's answer (status, `Content-Type`, body) goes back unchanged. Only
//!    connect failures move an update to another bot; a delivery that reached a
//!    bot and failed counts toward `max_attempts`, after which the update is
//!    answered `200 {}` and dead-lettered, so its chat's queue moves on.
//!
//! The mode's own answers are 503 + `Retry-After` (nothing could take the update,
//! or the deadline passed) and the poison guard's `200 {}`: never 2xx for an
//! update no bot accepted, never 410, never 3xx.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts as HeadParts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::proxy::Proxy;
use crate::body::BodyLimits;
use crate::config::telegram::Affinity;
use crate::config::{RouteConfig, TelegramConfig, DEFAULT_CLIENT_BODY_TIMEOUT};
use crate::error::{ProxyError, Reason};
use crate::observe::access_log::UpdateNote;
use crate::pipeline::action::Action;
use crate::pipeline::client::ClientInfo;
use crate::pipeline::ctx::Ctx;
use crate::pipeline::log::{BodyIn, Record};
use crate::pipeline::payload::Payload;
use crate::pipeline::reply::RespBody;
use crate::pipeline::snapshot::{Parts, Snapshot};
use crate::telegram::dead_letter::Letter;
use crate::telegram::dedup::{self, Dedup, Join, Outcome, Reply, Ticket};
use crate::telegram::update::{self, Scan};
use crate::telegram::DeadLetters;

/// Beyond a delivery's own bounds (connect, then the bot's answer), how long a
/// shared claim on an update outlives its replica: long enough that a slow bot's
/// claim never lapses under it, short enough that a crashed replica's updates are
/// delivered again within Telegram's next few re-sends.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// A webhook route's action.
#[derive(Debug)]
pub struct Telegram {
    pub proxy: Proxy,
    /// The route's index in its snapshot: the delivery task, which outlives the
    /// request, finds the route (its filters, this action) there.
    route: usize,
    affinity: Affinity,
    deadline: Duration,
    max_body: u64,
    max_attempts: u32,
    retry_after: Duration,
    dedup: Arc<Dedup>,
    dead: DeadLetters,
    results: Results,
}

/// `switchyard_telegram_updates_total{route, result}`.
#[derive(Debug)]
struct Results {
    delivered: metrics::Counter,
    deduplicated: metrics::Counter,
    coalesced: metrics::Counter,
    rejected_secret: metrics::Counter,
    rejected_source: metrics::Counter,
    dead_lettered: metrics::Counter,
    affinity_fallback: metrics::Counter,
    failed: metrics::Counter,
    too_large: metrics::Counter,
}

/// What a delivery came to.
enum Delivered {
    /// The bot's answer, whole.
    Answer(Reply),
    /// No answer: `reached` says whether the update got to a bot (and so may
    /// have been processed) before it failed.
    Failed { reached: bool, reason: String },
}

/// Where a delivery's outcome goes.
enum Publish {
    /// The update's ticket: every request waiting for it.
    Ticket(Ticket),
    /// A body without an `update_id`: only the request that brought it.
    Once(oneshot::Sender<Outcome>),
}

/// What the leading request's log takes from its delivery.
struct Served {
    server: Option<(usize, std::net::SocketAddr)>,
    tries: u32,
    upstream_status: Option<StatusCode>,
    upstream_time: Option<Duration>,
}

impl Telegram {
    pub fn new(
        route: &RouteConfig,
        index: usize,
        mut proxy: Proxy,
        t: &TelegramConfig,
        parts: &Parts<'_>,
    ) -> Telegram {
        // Keyed updates go round the ring, the rest to the least loaded, whatever
        // the upstream's own algorithm.
        proxy.affine = true;
        let name = route.name.as_str();
        let m = parts.metrics;
        let place = crate::pipeline::guard::route_place(route);
        let store = match &t.dedup_store {
            crate::config::DedupStore::Memory => "memory".to_owned(),
            crate::config::DedupStore::Redis(u) => u.url.clone(),
        };
        let id = format!("{place} ttl={:?} store={store}", t.dedup_ttl);
        let dedup = parts.dedups.get(id, || {
            let shared = match &t.dedup_store {
                crate::config::DedupStore::Redis(u) => {
                    Some(crate::telegram::dedup::redis::RedisDedup::new(
                        parts.limits.redis(&u.url),
                        &place,
                    ))
                }
                crate::config::DedupStore::Memory => None,
            };
            Dedup::new(t.dedup_ttl, shared, m.telegram_dedup_fallbacks(name))
        });
        if let crate::config::DedupStore::Redis(u) = &t.dedup_store {
            // Asked again so the store is kept with this configuration even when the
            // `Dedup` holding it was kept from the last one.
            parts.limits.redis(&u.url);
        }
        let c = |result| m.telegram_updates(name, result);
        Telegram {
            proxy,
            route: index,
            affinity: t.affinity,
            deadline: t.deadline,
            max_body: t.max_body,
            max_attempts: t.max_attempts,
            retry_after: t.retry_after,
            dedup,
            dead: DeadLetters::new(name, t.dead_letter.clone()),
            results: Results {
                delivered: c("delivered"),
                deduplicated: c("deduplicated"),
                coalesced: c("coalesced"),
                rejected_secret: c("rejected_secret"),
                rejected_source: c("rejected_source"),
                dead_lettered: c("dead_lettered"),
                affinity_fallback: c("affinity_fallback"),
                failed: c("failed"),
                too_large: c("too_large"),
            },
        }
    }

    /// Counts a request the route's gate refused.
    pub fn refused(&self, reason: Reason) {
        match reason {
            Reason::Secret => self.results.rejected_secret.increment(1),
            Reason::Source => self.results.rejected_source.increment(1),
            _ => {}
        }
    }

    /// How long a shared claim holds: the longest a delivery can run.
    fn lease(&self) -> Duration {
        self.proxy.timeouts.connect * 2 + self.proxy.timeouts.read + LEASE_MARGIN
    }

    /// One webhook request, from its body to its answer.
    pub async fn run(
        &self,
        snapshot: &Arc<Snapshot>,
        ctx: &mut Ctx<'_>,
        head: HeadParts,
        body: Incoming,
    ) -> Result<Response<RespBody>, ProxyError> {
        let until = Instant::now() + self.deadline;
        let limits = BodyLimits {
            timeout: ctx.body_timeout,
            max_size: Some(self.max_body),
        };
        let data = match Payload::read(body, self.max_body, limits).await {
            Ok(p) => p.held().cloned().unwrap_or_default(),
            Err(ProxyError::BodyTooLarge(max)) => {
                self.results.too_large.increment(1);
                self.results.dead_lettered.increment(1);
                self.dead.send(Letter {
                    update_id: None,
                    kind: None,
                    attempts: 0,
                    reasons: vec![format!("the body is larger than max_body ({max} bytes)")],
                    body: None,
                });
                return Err(ProxyError::BodyTooLarge(max));
            }
            Err(e) => return Err(e),
        };
        ctx.rec.body_in = BodyIn::Held(data.len() as u64);
        let scan = update::scan(&data, self.affinity);
        if scan.key.is_none() && self.affinity != Affinity::None {
            self.results.affinity_fallback.increment(1);
        }
        ctx.rec.update = Some(UpdateNote {
            update_id: scan.update_id,
            kind: scan.kind.map_or("unknown", |k| k.as_str()),
            key: scan.key,
        });
        let (served_tx, mut served_rx) = oneshot::channel();
        let delivery = Delivery {
            snapshot: Arc::clone(snapshot),
            client: Arc::clone(ctx.client),
            host: ctx.host.clone(),
            request_id: ctx.request_id.clone(),
            head,
            data: data.clone(),
            scan,
            served: served_tx,
        };
        // A body that turned out malformed before the scan stopped is not an
        // update, whatever id it began with: nothing to deduplicate it by.
        let outcome = match scan.update_id.filter(|_| scan.object) {
            None => {
                // Not an update (or not one we can read): no deduplication, one
                // delivery to the least-loaded bot, dead-lettered if it refuses.
                let (tx, rx) = oneshot::channel();
                tokio::spawn(delivery.run(self.route, Publish::Once(tx)));
                match tokio::time::timeout_at(until, rx).await {
                    Ok(Ok(o)) => o,
                    _ => Outcome::Unavailable,
                }
            }
            Some(id) => match self.dedup.join(id, self.lease()).await {
                Join::Done(r) => {
                    self.results.deduplicated.increment(1);
                    Outcome::Reply(r)
                }
                Join::Wait(rx) => {
                    self.results.coalesced.increment(1);
                    dedup::wait(rx, until).await
                }
                Join::Elsewhere(ticket) => {
                    self.results.coalesced.increment(1);
                    ticket.await_elsewhere(until).await
                }
                Join::Lead(ticket) if ticket.failures >= self.max_attempts => {
                    // Other replicas (or deliveries before a restart of this
                    // one's memory) used up its attempts.
                    let reasons = self.dedup.reasons(id);
                    self.give_up(&scan, ticket.failures, reasons, &data);
                    Outcome::Reply(ticket.poisoned().await)
                }
                Join::Lead(ticket) => {
                    let rx = ticket.subscribe();
                    tokio::spawn(delivery.run(self.route, Publish::Ticket(ticket)));
                    dedup::wait(rx, until).await
                }
            },
        };
        // Only once the delivery ended (not when the deadline cut the wait short).
        if let Ok(s) = served_rx.try_recv() {
            ctx.rec.server = s.server;
            ctx.rec.tries = s.tries;
            ctx.rec.upstream_status = s.upstream_status;
            ctx.rec.upstream_time = s.upstream_time;
        }
        match outcome {
            Outcome::Reply(r) => Ok(answer(&r)),
            Outcome::Unavailable => Err(ProxyError::Undelivered(self.retry_after)),
        }
    }

    /// Dead-letters the update `scan` read from `body`.
    fn give_up(&self, scan: &Scan, attempts: u32, reasons: Vec<String>, body: &[u8]) {
        self.results.dead_lettered.increment(1);
        self.dead.send(Letter {
            update_id: scan.update_id,
            kind: scan.kind.map(|k| k.as_str()),
            attempts,
            reasons,
            body: Some(body),
        });
    }

    /// Hands a delivery's outcome to its waiters, counting and judging it.
    async fn settle(&self, delivered: Delivered, publish: Publish, scan: &Scan, body: &[u8]) {
        let (failure, outcome) = match delivered {
            Delivered::Answer(r) if r.status.is_success() => {
                self.results.delivered.increment(1);
                let r = Arc::new(r);
                match publish {
                    Publish::Ticket(t) => t.delivered(r).await,
                    Publish::Once(tx) => drop(tx.send(Outcome::Reply(r))),
                }
                return;
            }
            Delivered::Answer(r) => (
                format!("status {}", r.status.as_u16()),
                Outcome::Reply(Arc::new(r)),
            ),
            Delivered::Failed {
                reached: true,
                reason,
            } => (reason, Outcome::Unavailable),
            Delivered::Failed {
                reached: false,
                reason,
            } => {
                // Nothing reached a bot: not the update's fault, nothing counted
                // against it; Telegram sends it again after `Retry-After`.
                tracing::debug!(reason = %reason, "telegram update not delivered");
                self.results.failed.increment(1);
                match publish {
                    Publish::Ticket(t) => t.pass_on(Outcome::Unavailable).await,
                    Publish::Once(tx) => drop(tx.send(Outcome::Unavailable)),
                }
                return;
            }
        };
        self.results.failed.increment(1);
        match publish {
            Publish::Ticket(mut t) => {
                let attempts = t.failed(&failure).await;
                if attempts >= self.max_attempts {
                    let reasons = self.dedup.reasons(t.update_id());
                    self.give_up(scan, attempts, reasons, body);
                    t.poisoned().await;
                } else {
                    t.pass_on(outcome).await;
                }
            }
            Publish::Once(tx) => {
                // Without an `update_id` there is nothing to count attempts by, and
                // the bot refused it once: given up on at once.
                self.give_up(scan, 1, vec![failure], body);
                let _ = tx.send(Outcome::Reply(Arc::new(Reply::empty_ok())));
            }
        }
    }
}

/// One delivery, owning what it needs to outlive the request that started it.
struct Delivery {
    snapshot: Arc<Snapshot>,
    client: Arc<ClientInfo>,
    host: HeaderValue,
    request_id: HeaderValue,
    head: HeadParts,
    data: Bytes,
    scan: Scan,
    served: oneshot::Sender<Served>,
}

impl Delivery {
    async fn run(self, route: usize, publish: Publish) {
        let Delivery {
            snapshot,
            client,
            host,
            request_id,
            head,
            data,
            scan,
            served,
        } = self;
        let route = &snapshot.routes[route];
        let Action::Telegram(t) = &route.action else {
            unreachable!("the route of a telegram delivery is a telegram route")
        };
        let upstream = &snapshot.upstreams[t.proxy.upstream];
        // The request's own record is the one logged; this one only gathers what
        // the attempts do, for it.
        let rec = Record::start(&Request::new(()), &client, None);
        let mut ctx = Ctx::new(&client, rec, DEFAULT_CLIENT_BODY_TIMEOUT);
        ctx.host = host;
        ctx.request_id = request_id;
        ctx.affinity = scan.key;
        let payload = if data.is_empty() {
            Payload::Empty
        } else {
            Payload::Held {
                data: data.clone(),
                trailers: None,
            }
        };
        let sent = t
            .proxy
            .run(&mut ctx, upstream, &route.filters, head, payload)
            .await;
        let delivered = match sent {
            Ok(res) => collect(res, t.max_body).await,
            Err(e) => Delivered::Failed {
                reached: reached_bot(&e),
                reason: e.to_string(),
            },
        };
        let _ = served.send(Served {
            server: ctx.rec.server,
            tries: ctx.rec.tries,
            upstream_status: ctx.rec.upstream_status,
            upstream_time: ctx.rec.upstream_time,
        });
        t.settle(delivered, publish, &scan, &data).await;
    }
}

/// Whether a failed delivery got to a bot, which may then have processed the
/// update: everything but failing to connect (or finding no bot at all).
fn reached_bot(e: &ProxyError) -> bool {
    matches!(
        e,
        ProxyError::Upstream(_) | ProxyError::ReadTimeout | ProxyError::SendTimeout
    )
}

/// Reads the bot's whole answer (up to `max` bytes).
async fn collect(res: Response<RespBody>, max: u64) -> Delivered {
    let (head, body) = res.into_parts();
    let limited = http_body_util::Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
    match limited.collect().await {
        // Copied out: the body and the header are slices of hyper's read buffer
        // for the connection (about 8 KiB), which a reply kept in the dedup table
        // for an hour would otherwise keep alive, one buffer per update.
        Ok(b) => Delivered::Answer(Reply {
            status: head.status,
            content_type: head
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()),
            body: Bytes::copy_from_slice(&b.to_bytes()),
        }),
        Err(e) => Delivered::Failed {
            reached: true,
            reason: format!("the answer's body: {e}"),
        },
    }
}

/// The response carrying `r` to Telegram: its status, `Content-Type` and body.
fn answer(r: &Reply) -> Response<RespBody> {
    let mut res = Response::new(RespBody::Full(
        Some(r.body.clone()).filter(|b| !b.is_empty()),
    ));
    *res.status_mut() = r.status;
    if let Some(ct) = &r.content_type {
        res.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    res
}
