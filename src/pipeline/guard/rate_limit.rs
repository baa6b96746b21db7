//! `rate_limit`: nginx's `limit_req`. Every limit of the list must let the
//! request through (`limit::check`, one decision for all, none charged when one
//! refuses); a refused request gets the limit's status with `Retry-After`, a
//! delayed one waits its turn here.

use http::{Request, StatusCode};

use super::key::key_of;
use crate::config::{LimitKey, LimitStore, RateLimitConfig};
use crate::error::{ProxyError, Reason, Refusal};
use crate::limit::{self, Decision, Gcra, KeyRef, Limiter, Store, Tables, MAX_LIMITS};
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
    /// configuration checks), each with its table from `tables`.
    pub fn new(place: &str, list: &[RateLimitConfig], tables: &Tables) -> RateLimit {
        let list = &list[..list.len().min(MAX_LIMITS)];
        let limiters = list
            .iter()
            .enumerate()
            .map(|(i, c)| Limiter {
                gcra: Gcra::new(
                    c.rate.count,
                    c.rate.per.nanos(),
                    c.burst.into(),
                    c.delay.free(),
                ),
                store: match &c.store {
                    LimitStore::Local => Store::Local(
                        tables.rate(format!("{place} rate_limit[{i}] {}", c.state_id())),
                    ),
                    // Refused at load while no shared store is built in.
                    LimitStore::Redis(_) => unreachable!("the configuration has no redis store"),
                },
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
