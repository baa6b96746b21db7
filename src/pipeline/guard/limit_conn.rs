//! `limit_conn`: nginx's `limit_conn`, requests in flight per key. A request
//! takes one slot of each limit of the list, held in its record until its
//! response body ends; if any limit is full it is refused with that limit's
//! status, and the slots it took from the others are given back at once.

use std::sync::Arc;

use http::{Request, StatusCode};

use super::request_key::key_of;
use crate::config::{LimitConnConfig, LimitKey};
use crate::error::{ProxyError, Reason, Refusal};
use crate::limit::{ConnTable, Slot, Tables, MAX_LIMITS};
use crate::pipeline::ctx::Ctx;
use crate::pipeline::filter::Stop;

/// The `limit_conn`s of one listener or route.
#[derive(Debug)]
pub struct LimitConn {
    limits: Box<[Limit]>,
}

#[derive(Debug)]
struct Limit {
    table: Arc<ConnTable>,
    key: LimitKey,
    max: u32,
    status: StatusCode,
}

impl LimitConn {
    /// The limits `list` declared at `place`, each with its table from `tables`
    /// (kept across reloads by place and key: in-flight counts are facts,
    /// whatever `max` becomes).
    pub fn new(place: &str, list: &[LimitConnConfig], tables: &Tables) -> LimitConn {
        let limits = list
            .iter()
            .take(MAX_LIMITS)
            .enumerate()
            .map(|(i, c)| Limit {
                table: tables.conn(format!("{place} limit_conn[{i}] key {}", c.key)),
                key: c.key.clone(),
                max: c.max,
                status: c.status,
            })
            .collect();
        LimitConn { limits }
    }

    pub fn admit<B>(&self, ctx: &mut Ctx<'_>, req: &Request<B>) -> Result<(), Stop> {
        let mut taken: [Option<Slot>; MAX_LIMITS] = Default::default();
        for (slot, l) in taken.iter_mut().zip(self.limits.iter()) {
            let Some(key) = key_of(&l.key, ctx, req) else {
                continue;
            };
            match l.table.acquire(key.hash(), l.max) {
                Some(s) => *slot = Some(s),
                // `taken` drops here: the other limits' slots are given back.
                None => {
                    return Err(Stop::Error(ProxyError::Refused(Refusal {
                        reason: Reason::LimitConn,
                        status: l.status,
                        // No telling when a request in flight ends.
                        retry_after: None,
                    })));
                }
            }
        }
        for s in taken.into_iter().flatten() {
            ctx.rec.held.push(s);
        }
        Ok(())
    }
}
