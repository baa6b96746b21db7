//! The state behind the rate and concurrency limits, kept outside the
//! configuration snapshots so that a reload does not hand every client a fresh
//! budget. The guards of the request pipeline (`pipeline::guard`) consult it.

pub mod gcra;
