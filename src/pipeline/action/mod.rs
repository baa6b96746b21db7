//! Actions: what a route does with a request once its filters let it through.
//! Exactly one per route, one file each: `proxy` (to an upstream), `redirect`,
//! `respond`. A new kind of route (the Telegram webhook mode) is a new variant
//! here and a file beside these.

pub mod proxy;
pub mod redirect;
pub mod respond;

use crate::config::RouteAction;
pub use proxy::Proxy;
pub use redirect::Redirect;
pub use respond::Respond;

/// A built action.
#[derive(Debug)]
pub enum Action {
    Proxy(Proxy),
    Redirect(Redirect),
    Respond(Respond),
}

impl Action {
    /// The action `config` describes; a proxying one needs its upstream's index
    /// in the snapshot and the route's slot among that upstream's routes.
    pub fn new(config: &RouteAction, upstream: Option<(usize, usize)>) -> Action {
        match config {
            RouteAction::Proxy(p) => {
                let (upstream, slot) = upstream.expect("validated: the upstream exists");
                Action::Proxy(Proxy {
                    upstream,
                    slot,
                    timeouts: p.timeouts,
                    retry: p.retry,
                })
            }
            RouteAction::Redirect(r) => Action::Redirect(Redirect::new(r)),
            RouteAction::Respond(r) => Action::Respond(Respond::new(r)),
        }
    }
}
