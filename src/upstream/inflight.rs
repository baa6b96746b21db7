use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::health::Admission;
use super::ServerState;
use crate::balance::latency::FAILURE_PENALTY;
use crate::config::LeastTimeMode;

/// What a finished request teaches the balancer, per algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The algorithm looks at in-flight counts only.
    Nothing,
    /// Peak-EWMA of the time to the response head (what Finagle and tower time).
    Peak { tau: Duration },
    /// Time-decayed average of the time to the head or to the last byte.
    Average { mode: LeastTimeMode, tau: Duration },
}

/// Counts one request against a server from pick until its response body ends or
/// is dropped, so streams and cancelled requests are counted right, and records its
/// latency sample when it ends.
#[derive(Debug)]
pub struct InFlight {
    server: Arc<ServerState>,
    measure: Measure,
    start: Option<Instant>,
    head: Option<Instant>,
    failed: bool,
    /// The attempt's one failure towards passive ejection has been recorded.
    charged: bool,
    /// A trial request's verdict is still owed to the server's passive health.
    admission: Admission,
}

impl InFlight {
    /// Counts a request against `server` whatever its `max_conns` (see `claim`).
    pub fn new(server: Arc<ServerState>, measure: Measure) -> Self {
        server.inflight.fetch_add(1, Ordering::Relaxed);
        Self::taken(server, measure)
    }

    /// Takes one of `server`'s `max_conns` slots for a request, or `None` when it
    /// has none free (another request took the last one since the pick). The check
    /// and the count are one compare-and-swap (`ServerState::take_slot`), so
    /// concurrent requests never put a server past its cap; a server without a cap
    /// costs one load and a branch.
    pub fn claim(server: &Arc<ServerState>, measure: Measure) -> Option<Self> {
        server
            .take_slot()
            .then(|| Self::taken(Arc::clone(server), measure))
    }

    /// The guard of a slot `server.take_slot()` took. Apart from `claim` so that
    /// the request path builds the guard in place (measured: through an `Option`
    /// the guard was moved via the stack, a few ns per request).
    pub fn taken(server: Arc<ServerState>, measure: Measure) -> Self {
        server.requests.fetch_add(1, Ordering::Relaxed);
        let start = (measure != Measure::Nothing).then(Instant::now);
        InFlight {
            server,
            measure,
            start,
            head: None,
            failed: false,
            charged: false,
            admission: Admission::Normal,
        }
    }

    /// Marks the request as the server's trial (see `ServerState::admit`).
    pub fn set_admission(&mut self, admission: Admission) {
        self.admission = admission;
    }

    /// The admission, handed over once to whoever records the verdict; later calls
    /// (and the drop) see `Normal`.
    pub fn take_admission(&mut self) -> Admission {
        std::mem::replace(&mut self.admission, Admission::Normal)
    }

    pub fn server(&self) -> &Arc<ServerState> {
        &self.server
    }

    /// The response head arrived; a 5xx counts as a failure.
    pub fn on_head(&mut self, status: StatusCode) {
        if self.start.is_some() {
            self.head = Some(Instant::now());
        }
        self.failed |= status.is_server_error();
    }

    /// The exchange failed (connect error, timeout, broken connection).
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// Claims the attempt's one failure towards passive ejection: `true` the first
    /// time, so a failure seen in the head (a listed status) and another in the
    /// body count once (see `Upstream::record_failure`).
    pub fn claim_charge(&mut self) -> bool {
        !std::mem::replace(&mut self.charged, true)
    }

    /// The exchange ended through the client's fault (its request body was
    /// malformed, cut short or stalled): it teaches nothing about the server, so
    /// it records no failure and no latency sample (the time was the client's).
    pub fn discard(&mut self) {
        self.failed = false;
        self.start = None;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.server.inflight.fetch_sub(1, Ordering::Relaxed);
        // Only a server with a cap can have made anyone wait.
        if self.server.max_conns() != 0 {
            self.server.queue.slot_freed();
        }
        if self.failed {
            self.server.errors.fetch_add(1, Ordering::Relaxed);
        }
        if self.admission == Admission::Trial {
            self.server.trial_abandoned();
        }
        let Some(start) = self.start else { return };
        let now = Instant::now();
        let to_head = self.head.unwrap_or(now) - start;
        let latency = &self.server.latency;
        match self.measure {
            Measure::Nothing => {}
            Measure::Peak { tau } => {
                let sample = if self.failed {
                    to_head.max(FAILURE_PENALTY)
                } else {
                    to_head
                };
                latency.observe_peak(now, sample, tau);
            }
            Measure::Average { mode, tau } => {
                let sample = match mode {
                    LeastTimeMode::Header => to_head,
                    LeastTimeMode::LastByte => now - start,
                };
                let sample = if self.failed {
                    sample.max(FAILURE_PENALTY)
                } else {
                    sample
                };
                latency.observe_average(now, sample, tau);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Threads racing for a server's slots never hold more than its `max_conns`
    /// between them, and every slot comes back.
    #[test]
    fn concurrent_claims_never_pass_the_cap() {
        const MAX: usize = 3;
        let servers = crate::upstream::test_servers(&[1]);
        let state = Arc::clone(&servers[0].state);
        state.set_max_conns(MAX);
        let peak = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        if let Some(g) = InFlight::claim(&state, Measure::Nothing) {
                            peak.fetch_max(state.inflight(), Ordering::Relaxed);
                            drop(g);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= MAX);
        assert_eq!(state.inflight(), 0);
        let held: Vec<InFlight> = (0..MAX)
            .map(|_| InFlight::claim(&state, Measure::Nothing).expect("a free slot"))
            .collect();
        assert!(InFlight::claim(&state, Measure::Nothing).is_none());
        drop(held);
    }
}
