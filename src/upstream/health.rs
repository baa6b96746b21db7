//! A server's health, as the balancers read it on every pick and as the active
//! checker and the request path (passive ejection) change it.
//!
//! Reads are one or two relaxed atomic loads and never touch the clock while the
//! server is simply healthy; the clock is read only while an ejection or a slow-start
//! ramp is running. Writes are rare (a state change, a failure) and may lock.
//!
//! Times are `stamp`s: milliseconds since the process-wide epoch, compared with
//! wrapping arithmetic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::ServerState;
use crate::clock::stamp;

pub use crate::balance::SLOW_START_FLOOR;

/// `passive` value while a trial request is out: ineligible for everyone else.
const TRIAL: u32 = u32::MAX;

/// The active checker's view of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Active {
    Up = 0,
    Down = 1,
    /// Added by a reload to an upstream with health checks: no traffic until its
    /// first check passes (Envoy's warming).
    Warming = 2,
}

impl Active {
    fn from_u8(v: u8) -> Active {
        match v {
            0 => Active::Up,
            1 => Active::Down,
            _ => Active::Warming,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Active::Up => "up",
            Active::Down => "down",
            Active::Warming => "warming",
        }
    }
}

/// What a pick learned when it claimed a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// The one request let through to an ejected server whose rest is over: its
    /// outcome restores or ejects the server again.
    Trial,
}

/// A snapshot of a server's health for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthView {
    pub active: Active,
    /// Passively ejected (resting, or its trial request is out).
    pub ejected: bool,
    /// Slow start is ramping its weight.
    pub ramping: bool,
    /// State changes since the server first appeared.
    pub transitions: u64,
    /// Times its own traffic ejected it (`max_fails`), and times its checks took it
    /// down.
    pub ejections: u64,
    pub downs: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub last_check: Option<Event>,
    /// The last state change and why: what a status page shows next to the state.
    pub last_change: Option<Event>,
}

pub use crate::observe::series::Event;
use crate::observe::series::Timeline;

#[derive(Debug)]
pub(super) struct Health {
    active: AtomicU8,
    /// 0: in service; `TRIAL`: trial out; else the stamp at which the rest ends.
    passive: AtomicU32,
    /// Stamps of recent failures, oldest first, at most `max_fails` of them.
    failures: Mutex<VecDeque<u32>>,
    /// Stamp at which a slow-start ramp began; 0: no ramp.
    ramp_start: AtomicU32,
    transitions: AtomicU64,
    ejections: AtomicU64,
    downs: AtomicU64,
    checks_passed: AtomicU64,
    checks_failed: AtomicU64,
    /// Written by the checker and by state changes, read by the status page: never
    /// on the request path.
    last_check: Mutex<Option<Event>>,
    last_change: Mutex<Option<Event>>,
    /// The last `HISTORY` changes, oldest first, for the status page's time line.
    history: Timeline,
}

/// Changes a server keeps for the status page's time line: enough for a flapping
/// server's last quarter of an hour at a change a minute, bounded whatever it does.
const HISTORY: usize = 16;

impl Health {
    pub(super) fn new(active: Active) -> Self {
        Health {
            active: AtomicU8::new(active as u8),
            passive: AtomicU32::new(0),
            failures: Mutex::new(VecDeque::new()),
            ramp_start: AtomicU32::new(0),
            transitions: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            downs: AtomicU64::new(0),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            last_check: Mutex::new(None),
            last_change: Mutex::new(None),
            history: Timeline::new(HISTORY),
        }
    }
}

/// A stamp that is never 0 (0 means "none" in the atomics above).
fn now_stamp(now: Instant) -> u32 {
    stamp(now).max(1)
}

/// Whether stamp `now` is at or past stamp `t`.
fn reached(now: u32, t: u32) -> bool {
    now.wrapping_sub(t) < u32::MAX / 2
}

fn ms(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX / 4)) as u32
}

impl ServerState {
    /// Whether the server may take a request now, health-wise: up as far as the
    /// checks know, and not resting after passive ejection (or resting over, with no
    /// trial out yet).
    pub fn available(&self) -> bool {
        let h = &self.health;
        if h.active.load(Ordering::Relaxed) != Active::Up as u8 {
            return false;
        }
        match h.passive.load(Ordering::Relaxed) {
            0 => true,
            TRIAL => false,
            until => reached(now_stamp(Instant::now()), until),
        }
    }

    /// Claims the server for a request the balancer picked. `None` when another
    /// request won the race for its trial.
    pub fn admit(&self) -> Option<Admission> {
        let h = &self.health;
        match h.passive.load(Ordering::Relaxed) {
            0 => Some(Admission::Normal),
            TRIAL => None,
            until => {
                let now = now_stamp(Instant::now());
                if !reached(now, until) {
                    return None;
                }
                h.passive
                    .compare_exchange(until, TRIAL, Ordering::AcqRel, Ordering::Relaxed)
                    .ok()
                    .map(|_| Admission::Trial)
            }
        }
    }

    /// A request that held the trial ended without a verdict (the client left): the
    /// next request may try.
    pub fn trial_abandoned(&self) {
        let now = now_stamp(Instant::now());
        let _ =
            self.health
                .passive
                .compare_exchange(TRIAL, now, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The request succeeded; a trial's success restores the server.
    pub fn record_success(&self, admission: Admission, slow_start: Duration) {
        if admission != Admission::Trial {
            return;
        }
        let h = &self.health;
        if h.passive
            .compare_exchange(TRIAL, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            h.failures.lock().unwrap_or_else(|e| e.into_inner()).clear();
            self.changed("restored", "trial request succeeded");
            self.start_ramp(slow_start);
        }
    }

    /// The request failed as `next_upstream` defines failure. With `max_fails`
    /// failures inside `fail_timeout` (an exact sliding window), the server rests for
    /// `fail_timeout`, if `may_eject` agrees (the ejection cap); a failed trial sends
    /// it back to rest at once.
    pub fn record_failure(
        &self,
        admission: Admission,
        max_fails: u32,
        fail_timeout: Duration,
        may_eject: impl FnOnce() -> bool,
        reason: &str,
    ) {
        let h = &self.health;
        let now = now_stamp(Instant::now());
        let until = now.wrapping_add(ms(fail_timeout)).max(1);
        if admission == Admission::Trial {
            if h.passive
                .compare_exchange(TRIAL, until, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.changed(
                    "ejected",
                    &format!("trial request failed ({reason}); resting {fail_timeout:?}"),
                );
            }
            return;
        }
        if max_fails == 0 || h.passive.load(Ordering::Relaxed) != 0 {
            return;
        }
        let mut window = h.failures.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = now.wrapping_sub(ms(fail_timeout));
        while window
            .front()
            .is_some_and(|&t| !reached(t, horizon) || t == horizon)
        {
            window.pop_front();
        }
        window.push_back(now);
        while window.len() > max_fails as usize {
            window.pop_front();
        }
        if window.len() < max_fails as usize || !may_eject() {
            return;
        }
        if h.passive
            .compare_exchange(0, until, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            window.clear();
            drop(window);
            self.changed(
                "ejected",
                &format!("{max_fails} failure(s) within {fail_timeout:?}, last: {reason}; resting {fail_timeout:?}"),
            );
        }
    }

    /// Cuts a rest short (active checks keep passing): the next request is the
    /// trial, which decides as usual.
    pub fn end_rest(&self, reason: &str) {
        let h = &self.health;
        let until = h.passive.load(Ordering::Relaxed);
        if until == 0 || until == TRIAL {
            return;
        }
        let now = now_stamp(Instant::now());
        if !reached(now, until)
            && h.passive
                .compare_exchange(until, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed("trial due", reason);
        }
    }

    /// Whether passive ejection has the server out (resting or on trial).
    pub fn ejected(&self) -> bool {
        self.health.passive.load(Ordering::Relaxed) != 0
    }

    /// The end of the current rest, if resting.
    pub fn rest_left(&self) -> Option<Duration> {
        match self.health.passive.load(Ordering::Relaxed) {
            0 | TRIAL => None,
            until => {
                let now = now_stamp(Instant::now());
                let left = until.wrapping_sub(now);
                (left < u32::MAX / 2).then(|| Duration::from_millis(u64::from(left)))
            }
        }
    }

    pub fn active(&self) -> Active {
        Active::from_u8(self.health.active.load(Ordering::Relaxed))
    }

    /// Sets the active state (the checker's lever), logging a change once with its
    /// reason; coming up starts the slow-start ramp.
    pub fn set_active(&self, to: Active, reason: &str, slow_start: Duration) {
        let from = Active::from_u8(self.health.active.swap(to as u8, Ordering::AcqRel));
        if from == to {
            return;
        }
        self.changed(to.as_str(), reason);
        if to == Active::Up {
            // Checks that saw the server recover outrank an ejection from its
            // traffic while it was failing: no need to wait out `fail_timeout`.
            let h = &self.health;
            if h.passive.swap(0, Ordering::AcqRel) != 0 {
                h.failures.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            self.start_ramp(slow_start);
        }
    }

    /// Starts a slow-start ramp now (no-op when `slow_start` is zero).
    pub fn start_ramp(&self, slow_start: Duration) {
        if !slow_start.is_zero() {
            self.health
                .ramp_start
                .store(now_stamp(Instant::now()), Ordering::Relaxed);
            self.note("slow_start", &format!("ramping over {slow_start:?}"));
        }
    }

    /// The share of its weight the server gets now: 1 normally, rising linearly from
    /// `SLOW_START_FLOOR` over `slow_start` after a recovery.
    pub fn ramp(&self, slow_start: Duration) -> f64 {
        let start = self.health.ramp_start.load(Ordering::Relaxed);
        if start == 0 {
            return 1.0;
        }
        let elapsed = now_stamp(Instant::now()).wrapping_sub(start);
        let total = ms(slow_start);
        if elapsed >= total || elapsed > u32::MAX / 2 {
            // Done (or the configuration dropped slow start): stop reading the clock.
            let _ = self.health.ramp_start.compare_exchange(
                start,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if !slow_start.is_zero() {
                self.changed("ramped", "slow start complete");
            }
            return 1.0;
        }
        SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * f64::from(elapsed) / f64::from(total)
    }

    pub fn health_view(&self) -> HealthView {
        let h = &self.health;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let event = |m: &Mutex<Option<Event>>| m.lock().unwrap_or_else(|e| e.into_inner()).clone();
        HealthView {
            active: self.active(),
            ejected: self.ejected(),
            ramping: h.ramp_start.load(Ordering::Relaxed) != 0,
            transitions: get(&h.transitions),
            ejections: get(&h.ejections),
            downs: get(&h.downs),
            checks_passed: get(&h.checks_passed),
            checks_failed: get(&h.checks_failed),
            last_check: event(&h.last_check),
            last_change: event(&h.last_change),
        }
    }

    /// Counts an active check's result and keeps it for the status page.
    pub fn record_check(&self, result: &Result<(), String>) {
        let h = &self.health;
        let (counter, what, detail) = match result {
            Ok(()) => (&h.checks_passed, "passed", String::new()),
            Err(e) => (&h.checks_failed, "failed", e.clone()),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *h.last_check.lock().unwrap_or_else(|e| e.into_inner()) = Some(Event {
            at: std::time::SystemTime::now(),
            what,
            detail,
        });
    }

    /// The server's last changes (`HISTORY` at most), oldest first.
    pub fn history(&self) -> Vec<Event> {
        self.health.history.to_vec()
    }

    /// Keeps `what` (a state it entered) in the server's history.
    pub(super) fn note(&self, what: &'static str, detail: &str) -> Event {
        let e = Event {
            at: std::time::SystemTime::now(),
            what,
            detail: detail.to_owned(),
        };
        self.health.history.push(e.clone());
        e
    }

    fn changed(&self, state: &'static str, reason: &str) {
        let h = &self.health;
        h.transitions.fetch_add(1, Ordering::Relaxed);
        match state {
            "ejected" => h.ejections.fetch_add(1, Ordering::Relaxed),
            "down" => h.downs.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let event = self.note(state, reason);
        *h.last_change.lock().unwrap_or_else(|e| e.into_inner()) = Some(event);
        if state == "up" || state == "restored" || state == "ramped" {
            tracing::info!(upstream = %self.key.upstream, server = %self.key.addr, state, reason, "server state changed");
        } else {
            tracing::warn!(upstream = %self.key.upstream, server = %self.key.addr, state, reason, "server state changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::test_servers;

    const T: Duration = Duration::from_secs(10);

    fn fail(s: &ServerState, max: u32) {
        s.record_failure(Admission::Normal, max, T, || true, "test");
    }

    #[tokio::test(start_paused = true)]
    async fn max_fails_inside_the_window_eject_for_fail_timeout_then_one_trial() {
        let servers = test_servers(&[1]);
        let s = &servers[0].state;
        fail(s, 3);
        tokio::time::advance(Duration::from_secs(6)).await;
        fail(s, 3);
        // The first failure leaves the 10 s window before the third arrives.
        tokio::time::advance(Duration::from_secs(5)).await;
        fail(s, 3);
        assert!(s.available() && !s.ejected());
        fail(s, 3);
        assert!(s.ejected() && !s.available());
        assert_eq!(s.admit(), None);
        tokio::time::advance(T - Duration::from_millis(2)).await;
        assert!(!s.available());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(s.available(), "the rest is over: a trial may go");
        assert_eq!(s.admit(), Some(Admission::Trial));
        assert!(!s.available(), "one trial at a time");
        assert_eq!(s.admit(), None);
        s.record_failure(Admission::Trial, 3, T, || true, "still bad");
        assert!(!s.available(), "a failed trial rests again");
        s.end_rest("checks pass");
        assert_eq!(
            s.admit(),
            Some(Admission::Trial),
            "a rest cut short allows a trial"
        );
        s.trial_abandoned();
        assert_eq!(
            s.admit(),
            Some(Admission::Trial),
            "an abandoned trial frees the slot"
        );
        s.record_success(Admission::Trial, Duration::ZERO);
        assert!(s.available() && !s.ejected());
        assert_eq!(s.admit(), Some(Admission::Normal));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_and_max_fails_zero_prevent_ejection() {
        let servers = test_servers(&[1]);
        let s = &servers[0].state;
        s.record_failure(Admission::Normal, 1, T, || false, "capped");
        assert!(!s.ejected());
        fail(s, 0);
        fail(s, 0);
        assert!(!s.ejected());
        fail(s, 1);
        assert!(s.ejected());
        assert_eq!(s.rest_left(), Some(T));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_linearly_from_the_floor() {
        let servers = test_servers(&[1]);
        let s = &servers[0].state;
        let ramp = Duration::from_secs(10);
        s.set_active(Active::Down, "test", ramp);
        assert!(!s.available());
        assert_eq!(s.ramp(ramp), 1.0, "no ramp before recovery");
        fail(s, 1);
        assert!(s.ejected());
        s.set_active(Active::Up, "test", ramp);
        assert!(
            !s.ejected(),
            "a recovery seen by the checks ends an ejection"
        );
        assert!((s.ramp(ramp) - 0.1).abs() < 1e-9);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!((s.ramp(ramp) - 0.55).abs() < 1e-3);
        assert!(s.health_view().ramping);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(s.ramp(ramp), 1.0);
        assert!(!s.health_view().ramping);
    }
}
