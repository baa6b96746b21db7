//! Taking a server for one attempt: the balancer's pick, then one of the server's
//! `max_conns` slots; and when every server that may take the request is full,
//! the upstream's queue (HAProxy's server `maxconn` and `timeout queue`).
//!
//! Where the cap is checked: the balancers pass full servers over (`PickCtx::usable`,
//! only for upstreams with a cap), and the slot is then taken by one
//! compare-and-swap on the server's in-flight count (`ServerState::take_slot`), so two
//! requests racing for a server's last slot never both get it: the loser picks
//! again. An upstream without caps asks nothing more than before the pick, and
//! never touches its queue.
//!
//! Waiting (`upstream::queue` has the mechanics): a request that finds every
//! server full, or others already waiting, joins the queue; when woken by a freed
//! slot it picks again, from the server set of the configuration live now (the
//! queue knows it): a reload or a membership change while it waits is what it
//! sees, servers added included and removed ones excluded, and its tries so far
//! are carried over by address. A full queue, or a wait past `queue.timeout` (the
//! route's `connect_timeout` by default), is refused with 503. Requests that
//! waited record the time in the upstream's queue histogram and their log line.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use crate::balance::PickCtx;
use crate::error::{ProxyError, Reason, Refusal};
use crate::upstream::{Admission, InFlight, Queue, Room, Ticket, Upstream};

/// `Retry-After` of a 503 from the queue: the queue's waits are short, and the
/// smallest value the header can say (HAProxy sends none; a client that retries
/// at once would only join the same full queue).
pub(super) const QUEUE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The upstream a request's attempts pick from: its snapshot's, until it waited
/// in the queue while a newer configuration went live.
pub(super) enum Up<'a> {
    Snapshot(&'a Arc<Upstream>),
    Current(Arc<Upstream>),
}

impl Up<'_> {
    pub(super) fn get(&self) -> &Arc<Upstream> {
        match self {
            Up::Snapshot(u) => u,
            Up::Current(u) => u,
        }
    }

    pub(super) fn is_snapshot(&self) -> bool {
        matches!(self, Up::Snapshot(_))
    }
}

/// What taking one server gave.
enum Take {
    Got(InFlight),
    /// The server rests after passive ejection and another request holds its one
    /// trial.
    TrialTaken,
    /// Its last slot went to another request since the pick.
    Full,
}

/// Takes `u.servers[idx]` for a request: its trial if it rests, and a slot.
fn take(u: &Upstream, idx: usize) -> Take {
    let server = &u.servers[idx];
    let Some(admission) = server.state.admit() else {
        return Take::TrialTaken;
    };
    if !server.state.take_slot() {
        if admission == Admission::Trial {
            server.state.trial_abandoned();
        }
        return Take::Full;
    }
    let mut guard = InFlight::taken(Arc::clone(&server.state), u.measure);
    guard.set_admission(admission);
    Take::Got(guard)
}

/// A server the sticky cookie names, taken if it may be, with its index: `None`
/// sends the request to the balancer (a lost trial adds it to `tried`).
pub(super) fn take_pinned(
    u: &Upstream,
    idx: usize,
    tried: &mut Vec<usize>,
) -> Option<(usize, InFlight)> {
    match take(u, idx) {
        Take::Got(guard) => Some((idx, guard)),
        Take::TrialTaken => {
            tried.push(idx);
            None
        }
        Take::Full => None,
    }
}

/// One request's dealings with its upstream's queue, over all its attempts.
pub(super) struct Waiting<'a> {
    queue: &'a Queue,
    metrics: &'a metrics::Histogram,
    size: usize,
    timeout: Duration,
    ticket: Option<Ticket<'a>>,
    /// When the current wait began.
    since: Option<Instant>,
    /// The end of the request's time in the queue, set when it first joins.
    deadline: Option<Instant>,
    /// Time waited so far; `None` while it never waited.
    waited: Option<Duration>,
}

impl<'a> Waiting<'a> {
    /// For a request to `upstream` whose route's connect timeout is `connect`
    /// (the queue's timeout unless it has its own).
    pub(super) fn new(upstream: &'a Arc<Upstream>, connect: Duration) -> Self {
        let q = upstream.config.queue;
        Waiting {
            queue: &upstream.queue,
            metrics: &upstream.metrics.queue,
            size: q.size as usize,
            timeout: q.timeout.unwrap_or(connect),
            ticket: None,
            since: None,
            deadline: None,
            waited: None,
        }
    }

    /// Time spent in the queue; `None` if the request never waited.
    pub(super) fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// A server not in `tried` with a slot for the request, as its index in
    /// `up` (which may move on to the current configuration's upstream while the
    /// request waits) and the slot; `None` when no server may take it at all.
    /// A wait ends at the queue's timeout, or at `until` if that is sooner.
    pub(super) async fn claim(
        &mut self,
        up: &mut Up<'_>,
        key: Option<u64>,
        affine: bool,
        tried: &mut Vec<usize>,
        until: Option<Instant>,
    ) -> Result<Option<(usize, InFlight)>, ProxyError> {
        // A pick that found no slot while the upstream seemed to have room (its
        // last slot taken under it): the next such miss waits instead of spinning.
        let mut missed = false;
        loop {
            let u = up.get();
            // While others wait, a newcomer goes behind them: slots go in arrival
            // order.
            let others_wait = self.ticket.is_none() && u.capped && !self.queue.is_empty();
            if !others_wait {
                let ctx = PickCtx {
                    key,
                    affine,
                    skip: tried,
                    ..PickCtx::default()
                };
                let room = match u.pick(&ctx) {
                    Some((idx, _)) => match take(u, idx) {
                        Take::Got(guard) => {
                            self.settle(u);
                            return Ok(Some((idx, guard)));
                        }
                        Take::TrialTaken => {
                            tried.push(idx);
                            continue;
                        }
                        Take::Full => Room::Free,
                    },
                    // Without caps nothing is ever full: no scan.
                    None if !u.capped => Room::Nothing,
                    None => u.room(tried),
                };
                match room {
                    Room::Nothing => {
                        self.settle(u);
                        return Ok(None);
                    }
                    Room::Free if !missed => {
                        missed = true;
                        continue;
                    }
                    Room::Free | Room::Full => {}
                }
            }
            self.enter(u, tried)?;
            let deadline = match (self.deadline, until) {
                (Some(d), Some(u)) => d.min(u),
                (d, u) => d.or(u).unwrap_or_else(Instant::now),
            };
            let Some(ticket) = self.ticket.as_mut() else {
                unreachable!("entered")
            };
            // Boxed: only requests that find every server full wait here (see
            // `ProxyService::call`).
            if Instant::now() >= deadline || !Box::pin(ticket.wait(deadline)).await {
                self.settle(u);
                return Err(refused());
            }
            // Woken: pick again, from the servers of the configuration live now.
            missed = false;
            if let Some(current) = self.queue.current() {
                if !Arc::ptr_eq(&current, up.get()) {
                    carry_tries(up.get(), &current, tried);
                    *up = Up::Current(current);
                }
            }
        }
    }

    /// Joins the queue, or goes back to its place after a wake it could not use;
    /// then looks for room once more (see `upstream::queue` on lost wake-ups).
    fn enter(&mut self, u: &Upstream, tried: &[usize]) -> Result<(), ProxyError> {
        let now = Instant::now();
        match &mut self.ticket {
            None => {
                let Some(ticket) = self.queue.join(self.size) else {
                    self.waited.get_or_insert(Duration::ZERO);
                    return Err(refused());
                };
                self.since = Some(now);
                self.deadline.get_or_insert(now + self.timeout);
                self.ticket = Some(ticket);
                if u.room(&[]) == Room::Free {
                    self.queue.wake(None);
                }
            }
            Some(ticket) => {
                ticket.rejoin();
                if u.room(tried) == Room::Free {
                    // Room for it after all: the first in line (it, or one before
                    // it) takes it.
                    self.queue.wake(None);
                } else if u.room(&[]) == Room::Free {
                    // Room only on servers it tried: for those after it.
                    self.queue.wake(Some(ticket));
                }
            }
        }
        Ok(())
    }

    /// Leaves the queue, if in it: the time is recorded, and a slot still free
    /// goes to the next in line (room may have come from a reload or a server
    /// back up, which free no slot and wake nobody).
    fn settle(&mut self, u: &Upstream) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        drop(ticket);
        self.record();
        if self.queue.queued() != 0 && u.room(&[]) == Room::Free {
            self.queue.wake(None);
        }
    }

    fn record(&mut self) {
        if let Some(since) = self.since.take() {
            let took = since.elapsed();
            self.metrics.record(took.as_secs_f64());
            *self.waited.get_or_insert(Duration::ZERO) += took;
        }
    }
}

impl Drop for Waiting<'_> {
    /// The client left while the request waited: its wait still counts in the
    /// histogram (the ticket, dropped after this, leaves the line).
    fn drop(&mut self) {
        self.record();
    }
}

/// The 503 of a full queue or a wait over.
fn refused() -> ProxyError {
    ProxyError::Refused(Refusal {
        reason: Reason::Queue,
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: Some(QUEUE_RETRY_AFTER),
    })
}

/// `tried` (indices into `from`'s servers) as indices into `to`'s, by address;
/// servers `to` lacks are dropped.
fn carry_tries(from: &Upstream, to: &Upstream, tried: &mut Vec<usize>) {
    let carried: Vec<usize> = tried
        .iter()
        .filter_map(|&i| to.position(from.servers[i].state.addr()))
        .collect();
    *tried = carried;
}
