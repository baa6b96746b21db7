//! Switchyard: a Layer-7 load-balancing reverse proxy.
//!
//! The request path is `server` (accept, hyper connection) → `proxy` (route, pick,
//! rewrite, forward) → `upstream` (per-server state and connection pool), with the
//! configuration held in one `ArcSwap<Snapshot>` (`state`).

pub mod admin;
pub mod balance;
pub mod body;
pub mod config;
pub mod control;
pub mod crypto;
pub mod demo;
pub mod error;
pub mod health;
pub mod observe;
pub mod origin;
pub mod proxy;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod watch;

pub use config::Config;
pub use server::{prepare, start, start_threads, Running};
