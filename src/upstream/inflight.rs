use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::ServerState;

/// Counts one request against a server from pick until its response body ends or
/// is dropped, so streams and cancelled requests are counted right.
#[derive(Debug)]
pub struct InFlight(Arc<ServerState>);

impl InFlight {
    pub fn new(server: Arc<ServerState>) -> Self {
        server.inflight.fetch_add(1, Ordering::Relaxed);
        server.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(server)
    }

    pub fn server(&self) -> &Arc<ServerState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}
