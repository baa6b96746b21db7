//! What one request carries through the pipeline's phases.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::client::ClientInfo;
use super::log::Record;
use crate::body::BodyLimits;
use crate::upstream::UpstreamServer;

/// One request's state between the phases: filled in by the filters and the
/// action, read by the later phases and the log.
#[derive(Debug)]
pub struct Ctx<'s> {
    pub client: &'s Arc<ClientInfo>,
    /// The request's host, lower-cased, without port (the `host` filter's).
    pub host: HeaderValue,
    /// Its id (the `request_id` filter's).
    pub request_id: HeaderValue,
    pub rec: Record,
    /// The server id of the sticky cookie the client sent, if any.
    pub sticky: Option<String>,
    /// A hash key a filter derived from the request (from its body, say); the
    /// proxy action balances on it instead of the upstream's `hash_key`.
    pub affinity: Option<u64>,
    /// The server whose response this is, once the proxy action has one.
    pub server: Option<&'s UpstreamServer>,
    /// The path to route by when it is not the request's own: with each encoded
    /// slash (`%2F`) read as a slash (the path filter's).
    pub route_path: Option<String>,
    /// How long the client may pause between two reads of its body (the
    /// listener's `client_body_timeout`).
    pub body_timeout: Duration,
    /// The largest body the request may have (`max_body_size`: the route's, else
    /// its listener's); `None`: no limit.
    pub max_body_size: Option<u64>,
}

impl<'s> Ctx<'s> {
    pub fn new(client: &'s Arc<ClientInfo>, rec: Record, body_timeout: Duration) -> Self {
        Ctx {
            client,
            host: HeaderValue::from_static(""),
            request_id: HeaderValue::from_static(""),
            rec,
            sticky: None,
            affinity: None,
            server: None,
            route_path: None,
            body_timeout,
            max_body_size: None,
        }
    }

    /// What the client's body may do: pause and grow.
    pub fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            timeout: self.body_timeout,
            max_size: self.max_body_size,
        }
    }
}
