//! The dashboard's side of the upstreams: once a second, the second just ended
//! is folded into every server's and upstream's series with the gauges only the
//! upstreams know (in-flight, the balancer's load estimate); and a new server set
//! is compared with the old one to mark servers added and removed. Here rather
//! than in `observe::series`, which the upstream layer uses.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::{Source, Upstream};
use crate::observe::series::{second, Board, Event, Gauges};

/// Folds the second before `now` into every series of `upstreams` (the
/// current snapshot's) and the total; once per second, off the request path.
pub fn fold(board: &Board, now: Instant, upstreams: &[Arc<Upstream>]) {
    let at = second(now).saturating_sub(1);
    if at == 0 || at <= board.newest() {
        return;
    }
    let mut total = board.total().take(at);
    let mut total_gauges = Gauges::default();
    for u in upstreams {
        let Some(series) = &u.series else { continue };
        let mut sum = series.take(at);
        let mut gauges = Gauges::default();
        let mut loads = 0u32;
        for (i, s) in u.servers.iter().enumerate() {
            let Some(ss) = &s.series else { continue };
            let taken = ss.take(at);
            let g = Gauges {
                inflight: s.state.inflight() as u32,
                load: u.load_estimate(i) as f32,
            };
            ss.push(at, taken.point(g));
            sum.add(&taken);
            gauges.inflight += g.inflight;
            gauges.load += g.load;
            loads += 1;
        }
        if loads > 0 {
            // An upstream's estimate: its servers' mean.
            gauges.load /= loads as f32;
        }
        series.push(at, sum.point(gauges));
        total.add(&sum);
        total_gauges.inflight += gauges.inflight;
    }
    board.total().push(at, total.point(total_gauges));
    board.folded(at);
}

/// Notes in the upstreams' series which servers `new` added and removed
/// compared with `old` (a reload, the admin API, discovery), with `why`.
pub fn note_membership(old: &[Arc<Upstream>], new: &[Arc<Upstream>], why: &str) {
    let at = SystemTime::now();
    for u in new {
        let Some(series) = &u.series else { continue };
        let before = old.iter().find(|o| o.name == u.name);
        let had = |addr| before.is_some_and(|b| b.position(addr).is_some());
        for s in &u.servers {
            if !had(s.state.addr()) {
                let what = match s.source {
                    Source::Discovered(_) => "discovered",
                    _ => "added",
                };
                series.note(Event {
                    at,
                    what,
                    detail: format!("{} ({why}, source {})", s.state.addr(), s.source.as_str()),
                });
            }
        }
        for s in before.iter().flat_map(|b| b.servers.iter()) {
            if u.position(s.state.addr()).is_none() {
                series.note(Event {
                    at,
                    what: "removed",
                    detail: format!("{} ({why})", s.state.addr()),
                });
            }
        }
    }
}
