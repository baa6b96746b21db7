//! The Telegram webhook mode's machinery outside the request pipeline.

pub mod dedup;
