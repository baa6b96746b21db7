//! Active health checks: one checker task per upstream with a `health_check` table,
//! probing every server (except those marked `down`) each interval, HAProxy's
//! rise/fall style. The checkers run on the background runtime, apart from the
//! request path, and act on servers only through `ServerState::set_active`, so a
//! reload that keeps a server keeps its health.
//!
//! A checker outlives changes to its upstream's server list: it is handed the new
//! list, keeps the rise/fall counts of the servers that stay and probes the ones
//! that joined at once (they wait, warming, for a passing check), so adding or
//! removing a server causes no burst of checks on the others.

mod probe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::HealthCheckConfig;
use crate::upstream::{Active, ServerState, Upstream};

pub(crate) use probe::probe;

/// The checkers of the current snapshot.
#[derive(Debug, Default)]
pub(crate) struct Supervisor {
    runtime: Option<Handle>,
    checkers: HashMap<Arc<str>, Checker>,
}

#[derive(Debug)]
struct Checker {
    config: Arc<HealthCheckConfig>,
    targets: watch::Sender<Vec<Target>>,
    task: JoinHandle<()>,
}

#[derive(Debug, Clone)]
struct Target {
    state: Arc<ServerState>,
    slow_start: Duration,
}

impl Target {
    fn addr(&self) -> SocketAddr {
        self.state.addr()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Supervisor {
    pub(crate) fn start(&mut self, runtime: Handle) {
        self.runtime = Some(runtime);
    }

    pub(crate) fn stop(&mut self) {
        self.runtime = None;
        self.checkers.clear();
    }

    /// Brings the checkers in line with `upstreams`: an upstream whose check
    /// settings are unchanged keeps its checker, which gets the new server list;
    /// one with new settings gets a new checker; servers of upstreams that no longer
    /// have checks are released from the checks' verdict.
    pub(crate) fn sync(&mut self, upstreams: &[Arc<Upstream>]) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let mut next = HashMap::new();
        for u in upstreams {
            let Some(config) = &u.health_check else {
                continue;
            };
            let targets: Vec<Target> = u
                .servers
                .iter()
                .filter(|s| !s.down)
                .map(|s| Target {
                    state: Arc::clone(&s.state),
                    slow_start: s.passive.slow_start,
                })
                .collect();
            let checker = match self.checkers.remove(&u.name) {
                Some(c) if c.config == *config => {
                    c.targets.send_if_modified(|old| {
                        let same = old.len() == targets.len()
                            && old.iter().zip(&targets).all(|(a, b)| {
                                Arc::ptr_eq(&a.state, &b.state) && a.slow_start == b.slow_start
                            });
                        if !same {
                            *old = targets.clone();
                        }
                        !same
                    });
                    c
                }
                _ => {
                    let (tx, rx) = watch::channel(targets);
                    Checker {
                        task: runtime.spawn(run(Arc::clone(config), rx)),
                        config: Arc::clone(config),
                        targets: tx,
                    }
                }
            };
            next.insert(Arc::clone(&u.name), checker);
        }
        for (_, old) in self.checkers.drain() {
            for t in old.targets.borrow().iter() {
                t.state
                    .set_active(Active::Up, "health checks removed", Duration::ZERO);
            }
        }
        self.checkers = next;
    }
}

/// HAProxy's rise/fall counting for one server.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Streak {
    passes: u32,
    fails: u32,
    /// Passes since passive ejection rested the server.
    resting: u32,
}

impl Streak {
    /// Counts one check result and returns the state the server should now be in.
    pub(crate) fn record(&mut self, passed: bool, current: Active, rise: u32, fall: u32) -> Active {
        if passed {
            self.passes += 1;
            self.fails = 0;
        } else {
            self.fails += 1;
            self.passes = 0;
        }
        match current {
            Active::Up if self.fails >= fall => Active::Down,
            Active::Down if self.passes >= rise => Active::Up,
            // A new server needs one passing check; one that fails must rise.
            Active::Warming if passed => Active::Up,
            Active::Warming => Active::Down,
            other => other,
        }
    }
}

/// One interval, drawn uniformly from `interval × (1 ± jitter)`.
pub(crate) fn jittered(interval: Duration, jitter: f64) -> Duration {
    interval.mul_f64(1.0 + jitter * (2.0 * crate::rng::unit() - 1.0))
}

/// The rise/fall counts of each server, with the state they were counted for: a
/// server that left and came back before the checker saw it go has a new state
/// at the same address, and is new to the checks (probed at once, counted anew).
type Streaks = HashMap<SocketAddr, (Weak<ServerState>, Streak)>;

/// Whether `counted` is `state` (a `Weak` keeps its allocation, so the address of
/// a dropped state is never another's).
fn same(counted: &Weak<ServerState>, state: &Arc<ServerState>) -> bool {
    std::ptr::eq(counted.as_ptr(), Arc::as_ptr(state))
}

async fn run(config: Arc<HealthCheckConfig>, mut targets: watch::Receiver<Vec<Target>>) {
    let mut streaks = Streaks::new();
    // The first round covers everyone; later ones too, once per interval. Between
    // rounds, servers that join are probed as they come.
    let mut due: Vec<Target> = targets.borrow_and_update().clone();
    loop {
        check(&config, &due, &mut streaks).await;
        let next_round = tokio::time::Instant::now() + jittered(config.interval, config.jitter);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_round) => {
                    due = targets.borrow().clone();
                    break;
                }
                changed = targets.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = targets.borrow_and_update().clone();
                    streaks.retain(|a, (counted, _)| {
                        now.iter().any(|t| t.addr() == *a && same(counted, &t.state))
                    });
                    let joined: Vec<Target> = now
                        .into_iter()
                        .filter(|t| !streaks.contains_key(&t.addr()))
                        .collect();
                    check(&config, &joined, &mut streaks).await;
                }
            }
        }
    }
}

/// Probes `targets` at once and applies each result.
async fn check(config: &Arc<HealthCheckConfig>, targets: &[Target], streaks: &mut Streaks) {
    let mut round = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let config = Arc::clone(config);
        let state = Arc::clone(&t.state);
        round.spawn(async move {
            let result = probe(&config, state.addr(), state.pool.transport()).await;
            (i, result)
        });
    }
    while let Some(done) = round.join_next().await {
        let Ok((i, result)) = done else { continue };
        let t = &targets[i];
        let (counted, streak) = streaks
            .entry(t.addr())
            .or_insert_with(|| (Arc::downgrade(&t.state), Streak::default()));
        if !same(counted, &t.state) {
            *counted = Arc::downgrade(&t.state);
            *streak = Streak::default();
        }
        t.state.record_check(&result);
        let current = t.state.active();
        let next = streak.record(result.is_ok(), current, config.rise, config.fall);
        if next != current {
            let reason = match (&result, next) {
                (Err(e), _) => format!("{} consecutive check(s) failed, last: {e}", streak.fails),
                (Ok(()), Active::Up) if current == Active::Warming => {
                    "first check passed".to_owned()
                }
                (Ok(()), _) => format!("{} consecutive check(s) passed", streak.passes),
            };
            t.state.set_active(next, &reason, t.slow_start);
        }
        // A server resting after passive ejection whose checks keep passing gets
        // its trial request now rather than after `fail_timeout`.
        streak.resting = match (t.state.rest_left(), &result) {
            (Some(_), Ok(())) => streak.resting + 1,
            _ => 0,
        };
        if streak.resting >= config.rise {
            streak.resting = 0;
            let why = format!("{} check(s) passed while resting", config.rise);
            t.state.end_rest(&why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut s = Streak::default();
        let (rise, fall) = (2, 3);
        let mut state = Active::Up;
        for passed in [false, false, true, false, false] {
            state = s.record(passed, state, rise, fall);
            assert_eq!(state, Active::Up, "a pass resets the failure count");
        }
        state = s.record(false, state, rise, fall);
        assert_eq!(state, Active::Down);
        state = s.record(true, state, rise, fall);
        assert_eq!(state, Active::Down);
        state = s.record(false, state, rise, fall);
        state = s.record(true, state, rise, fall);
        assert_eq!(state, Active::Down);
        state = s.record(true, state, rise, fall);
        assert_eq!(state, Active::Up);
    }

    #[test]
    fn warming_needs_one_pass() {
        let mut s = Streak::default();
        assert_eq!(s.record(true, Active::Warming, 3, 3), Active::Up);
        let mut s = Streak::default();
        assert_eq!(s.record(false, Active::Warming, 3, 3), Active::Down);
    }

    #[test]
    fn jitter_stays_in_its_band_and_spreads() {
        let i = Duration::from_secs(10);
        let draws: Vec<Duration> = (0..1000).map(|_| jittered(i, 0.1)).collect();
        assert!(draws
            .iter()
            .all(|d| *d >= Duration::from_secs(9) && *d <= Duration::from_secs(11)));
        let low = draws.iter().filter(|d| **d < i).count();
        assert!((400..=600).contains(&low), "{low}");
    }
}
