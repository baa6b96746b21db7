//! Switchyard: a Layer-7 load-balancing reverse proxy.
//!
//! The data path, top to bottom: `server` accepts and serves connections, each
//! request walks the `pipeline` (filters, a route, its action) over one
//! configuration snapshot; the proxy action picks a server of an `upstream` with a
//! `balance` algorithm and forwards over its pool. The control path: `app` wires a
//! proxy, `control` reloads it, `admin` serves the API, `watch` follows the file,
//! `state` builds snapshots over the long-lived per-server state, `membership`
//! keeps server lists beyond the file, `checks` runs the active health checks. Each layer uses
//! only the layers below it (`tests/layering.rs`).

mod admin;
pub mod app;
pub mod balance;
pub mod body;
mod checks;
pub mod cidr;
mod clock;
pub mod config;
pub mod control;
mod crypto;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod import;
pub mod limit;
pub mod membership;
pub mod observe;
pub mod origin;
pub mod pipeline;
pub mod rng;
pub mod server;
pub mod state;
pub mod telegram;
mod tls;
pub mod upstream;
pub mod uri_path;
pub mod watch;
mod weak_map;

pub use app::{prepare, start, Running};
pub use config::Config;
