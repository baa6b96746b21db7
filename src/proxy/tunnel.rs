//! HTTP/1.1 protocol switches (WebSocket and the like): the request's `Upgrade`
//! goes to the server, and when it answers 101 the two connections are spliced
//! byte for byte until either side closes. The tunnel holds the request's
//! in-flight guard, so a server's open tunnels count as load, and it runs as its
//! own task, apart from the configuration snapshot: reloads do not touch it.

use http::{header, HeaderMap, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::headers::strip_hop_by_hop;
use crate::body::RespBody;
use crate::upstream::InFlight;

/// What a switching request needs kept: its `Upgrade` value and the client side
/// of the upgrade.
#[derive(Debug)]
pub struct Upgrade {
    protocol: HeaderValue,
    client: OnUpgrade,
}

/// Takes the upgrade out of a request that asks for one (`Connection: upgrade`
/// and an `Upgrade` header, HTTP/1.1).
pub fn requested(req: &mut Request<Incoming>) -> Option<Upgrade> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = req.headers().get(header::UPGRADE)?.clone();
    asks.then(|| Upgrade {
        protocol,
        client: hyper::upgrade::on(req),
    })
}

impl Upgrade {
    /// Puts `Connection: upgrade` and the `Upgrade` value back on the outgoing head.
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
    }
}

/// Answers the client's switch with the server's 101 and splices the connections.
pub fn relay(mut res: Response<Incoming>, upgrade: Upgrade, guard: InFlight) -> Response<RespBody> {
    let server = hyper::upgrade::on(&mut res);
    let (mut head, _) = res.into_parts();
    let protocol = head.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut head.headers);
    head.headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = protocol {
        head.headers.insert(header::UPGRADE, p);
    }
    tokio::spawn(async move {
        let _guard = guard;
        let (client, server) = tokio::join!(upgrade.client, server);
        let (Ok(client), Ok(server)) = (client, server) else {
            tracing::debug!("protocol switch failed on one side");
            return;
        };
        let (mut c, mut s) = (TokioIo::new(client), TokioIo::new(server));
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
            tracing::debug!(error = %e, "tunnel ended with an error");
        }
    });
    Response::from_parts(head, RespBody::empty())
}
