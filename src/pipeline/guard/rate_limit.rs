//! `rate_limit`: nginx's `limit_req`. Every limit of the list must let the
//! request through (`limit::check`, one decision for all, none charged when one
//! refuses); a refused request gets the limit's status with `Retry-After`, a
//! delayed one waits its turn here.

use http::{Request, StatusCode};

use super::request_key::key_of;
use crate::config::{LimitKey, LimitStore, RateLimitConfig};
use crate::error::{ProxyError, Reason, Refusal};
use crate::limit::{
    self, Decision, Gcra, KeyRef, Limiter, SharedLimit, Space, Store, Tables, MAX_LIMITS,
};
use crate::pipeline::ctx::Ctx;
use crate::pipeline::filter::Stop;

/// The rate limits of one listener or route.
#[derive(Debug)]
pub struct RateLimit {
    limiters: Box<[Limiter]>,
    /// What each limit counts by and answers with, in `limiters`' order.
    keys: Box<[(LimitKey, StatusCode)]>,
}

impl RateLimit {
    /// The limits `list` declared at `place` (at most `MAX_LIMITS`, as the
    /// configuration checks), each with its state from `tables`: a local table, or
    /// a Redis store, the key space every replica names alike for this limit and a
    /// local table for the store's outages.
    pub fn new(place: &str, list: &[RateLimitConfig], tables: &Tables) -> RateLimit {
        let list = &list[..list.len().min(MAX_LIMITS)];
        let limiters = list
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let id = format!("{place} rate_limit[{i}] {}", c.state_id());
                let store = match &c.store {
                    LimitStore::Local => Store::Local(tables.rate(id)),
                    LimitStore::Redis(url) => Store::Redis(SharedLimit {
                        store: tables.redis(&url.url),
                        space: Space::new(&space_name(place, i, c)),
                        fallback: tables.rate(format!("{id} fallback")),
                    }),
                };
                Limiter {
                    gcra: Gcra::new(
                        c.rate.count,
                        c.rate.per.nanos(),
                        c.burst.into(),
                        c.delay.free(),
                    ),
                    store,
                }
            })
            .collect();
        let keys = list.iter().map(|c| (c.key.clone(), c.status)).collect();
        RateLimit { limiters, keys }
    }

    pub async fn admit<B>(&self, ctx: &mut Ctx<'_>, req: &Request<B>) -> Result<(), Stop> {
        let mut keys: [Option<KeyRef<'_>>; MAX_LIMITS] = [None; MAX_LIMITS];
        for (slot, (key, _)) in keys.iter_mut().zip(self.keys.iter()) {
            *slot = key_of(key, ctx, req);
        }
        let n = self.keys.len();
        match limit::check(&self.limiters, &keys[..n], limit::now()).await {
            Decision::Pass { wait } => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Ok(())
            }
            Decision::Refuse { index, retry_after } => {
                Err(Stop::Error(ProxyError::Refused(Refusal {
                    reason: Reason::RateLimit,
                    status: self.keys[index].1,
                    retry_after: Some(retry_after),
                })))
            }
        }
    }
}

/// The Redis key space of limit `i` at `place`: its place and what it counts by,
/// the same on every replica of one configuration. Not its rate or burst: a
/// reload that changes them keeps the budget, and while a change rolls out over
/// the replicas, those on the old settings and those on the new still share one.
fn space_name(place: &str, i: usize, c: &RateLimitConfig) -> String {
    format!("{place} rate_limit[{i}] {}", c.key)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::path::Path;
    use std::sync::Arc;
    use std::task::Poll;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::config::Config;
    use crate::pipeline::{ClientInfo, Record};

    fn guard(limit: &str, tables: &Tables) -> RateLimit {
        let text = format!(
            "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\nrespond = {{}}\nrate_limit = {limit}\n"
        );
        let config = Config::parse(Path::new("t.toml"), &text).unwrap();
        RateLimit::new("route", &config.routes[0].rate_limit, tables)
    }

    /// Runs `n` requests through `g` at once (decided in order) and returns, for
    /// each, its status (200 for a pass) and when it went on.
    async fn at_once(g: &RateLimit, n: usize) -> Vec<(u16, Duration)> {
        let client = Arc::new(ClientInfo::new("192.0.2.1:1000".parse().unwrap(), "http"));
        let req = Request::new(());
        let start = Instant::now();
        let one = || async {
            let mut ctx = Ctx::new(
                &client,
                Record::start(&req, &client, None),
                Duration::from_secs(60),
            );
            let status = match g.admit(&mut ctx, &req).await {
                Ok(()) => 200,
                Err(Stop::Error(e)) => e.status().as_u16(),
                Err(Stop::Answer(_)) => unreachable!(),
            };
            (status, start.elapsed())
        };
        // Polled together: each decides on its first poll, in order, then waits.
        let mut pending: Vec<_> = (0..n).map(|_| Box::pin(one())).collect();
        let mut out = vec![None; n];
        std::future::poll_fn(|cx| {
            for (f, slot) in pending.iter_mut().zip(out.iter_mut()) {
                if slot.is_none() {
                    if let Poll::Ready(r) = f.as_mut().poll(cx) {
                        *slot = Some(r);
                    }
                }
            }
            if out.iter().all(Option::is_some) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        out.into_iter().flatten().collect()
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_requests_go_at_their_turns() {
        let tables = Tables::default();
        let g = guard(
            "{ rate = \"10/s\", burst = 5, delay = 2, status = 503 }",
            &tables,
        );
        let ms = Duration::from_millis;
        assert_eq!(
            at_once(&g, 7).await,
            [
                (200, ms(0)),
                (200, ms(0)),
                (200, ms(0)),
                (200, ms(100)),
                (200, ms(200)),
                (200, ms(300)),
                (503, ms(0)),
            ]
        );
        // delay = "all": every request past the rate waits its turn.
        let g = guard("{ rate = \"10/s\", burst = 3, delay = \"all\" }", &tables);
        assert_eq!(
            at_once(&g, 5).await,
            [
                (200, ms(0)),
                (200, ms(100)),
                (200, ms(200)),
                (200, ms(300)),
                (429, ms(0)),
            ]
        );
    }
}
