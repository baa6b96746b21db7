//! Driving a client connection to its end, and the reasons to end it gracefully:
//! its listener's drain (removed by a reload, or the proxy stopping) and, on
//! HTTP/2, the keep-alive limits (`keepalive_timeout` while no stream is open,
//! `keepalive_requests` streams carried). A graceful end lets open requests finish:
//! HTTP/1.1 closes after the current response (at once when idle), HTTP/2 sends
//! GOAWAY and closes once its streams are done.
//!
//! hyper-util's `GracefulShutdown` does the drain part, but only for connections
//! it wraps itself, which leaves no way to shut one down for another reason; this
//! is the same group (a watch channel) with the driver open to more signals.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::pipeline::Session;

/// One listener socket generation's connections, drained together.
#[derive(Debug)]
pub(super) struct Drain {
    tx: watch::Sender<()>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(()).0,
        }
    }
}

impl Drain {
    /// What a connection of the group watches (and holds until it ends).
    pub(super) fn watcher(&self) -> watch::Receiver<()> {
        self.tx.subscribe()
    }

    /// Asks every connection of the group to end gracefully and resolves once all
    /// have ended.
    pub(super) async fn shutdown(self) {
        self.tx.send_replace(());
        self.tx.closed().await;
    }
}

/// Runs `conn` to its end; `shut` starts its graceful end (hyper's
/// `graceful_shutdown`), called at most once: when the drain group asks, or when
/// the HTTP/2 keep-alive limits of `session` say so. HTTP/1.1's keep-alive is
/// `ClientIo`'s and the service's (`Connection: close`).
pub(super) async fn drive<C: Future>(
    conn: C,
    shut: impl FnOnce(Pin<&mut C>),
    mut drain: watch::Receiver<()>,
    session: &Session,
) -> C::Output {
    let mut conn = std::pin::pin!(conn);
    loop {
        let until = h2_end(session);
        let expired = async {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            out = conn.as_mut() => return out,
            // A dropped group (its sender gone) drains too, as hyper-util's does.
            _ = drain.changed() => break,
            () = session.changed() => {
                if session.is_h2() && session.spent() {
                    break;
                }
            }
            () = expired => {
                if h2_end(session).is_some_and(|t| t <= Instant::now()) {
                    break;
                }
            }
        }
    }
    shut(conn.as_mut());
    // Holds `drain` (its receiver) until the connection has ended: the group's
    // `shutdown` waits for that.
    let out = conn.await;
    drop(drain);
    out
}

/// When an idle HTTP/2 connection is to be shut down: `client_header_timeout`
/// after its start while it has had no stream (a client that connects and never
/// asks, as nginx bounds it), `keepalive_timeout` after its last stream ended
/// (nginx's since 1.19.7); `None` while a stream is open or for HTTP/1.1.
fn h2_end(session: &Session) -> Option<Instant> {
    if !session.is_h2() || session.open() > 0 {
        return None;
    }
    Some(session.idle_end())
}
