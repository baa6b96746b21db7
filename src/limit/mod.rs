//! The state behind the rate and concurrency limits, kept outside the
//! configuration snapshots so that a reload does not hand every client a fresh
//! budget. The guards of the request pipeline (`pipeline::guard`) consult it.
//! `gcra` is the arithmetic; `redis` runs it in Redis for limits that several
//! replicas share.

pub mod gcra;
pub mod redis;
