//! Actions: what a route does with a request once its filters let it through.
//! Exactly one per route, one file each: `proxy` (to an upstream), `redirect`,
//! `respond`, and `telegram` (a bot's webhook: the proxy action under the
//! Telegram mode's rules).

pub mod proxy;
pub mod redirect;
pub mod respond;
pub mod telegram;

use crate::config::{RouteAction, RouteConfig};
use crate::pipeline::snapshot::Parts;
pub use proxy::Proxy;
pub use redirect::Redirect;
pub use respond::Respond;
pub use telegram::Telegram;

/// A built action.
#[derive(Debug)]
pub enum Action {
    Proxy(Proxy),
    Redirect(Redirect),
    Respond(Respond),
    Telegram(Box<Telegram>),
}

impl Action {
    /// The action of `route`, the `index`-th of its configuration; a proxying
    /// one needs its upstream's index in the snapshot and the route's slot among
    /// that upstream's routes.
    pub fn new(
        route: &RouteConfig,
        index: usize,
        upstream: Option<(usize, usize)>,
        parts: &Parts<'_>,
    ) -> Action {
        match &route.action {
            RouteAction::Proxy(p) => {
                let (upstream, slot) = upstream.expect("validated: the upstream exists");
                let proxy = Proxy {
                    upstream,
                    slot,
                    timeouts: p.timeouts,
                    retry: p.retry,
                    affine: false,
                };
                match &p.telegram {
                    Some(t) => {
                        Action::Telegram(Box::new(Telegram::new(route, index, proxy, t, parts)))
                    }
                    None => Action::Proxy(proxy),
                }
            }
            RouteAction::Redirect(r) => Action::Redirect(Redirect::new(r)),
            RouteAction::Respond(r) => Action::Respond(Respond::new(r)),
        }
    }

    /// The proxying part of the action, if it proxies.
    pub fn proxy(&self) -> Option<&Proxy> {
        match self {
            Action::Proxy(p) => Some(p),
            Action::Telegram(t) => Some(&t.proxy),
            Action::Redirect(_) | Action::Respond(_) => None,
        }
    }
}
