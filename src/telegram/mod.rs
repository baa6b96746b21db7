//! The Telegram webhook mode's machinery that lives outside the request pipeline:
//! what the mode's route action and guard (under `pipeline`) call on, with no
//! knowledge of requests or responses. `update` reads an update's id, type and
//! affinity key from the body's bytes.

pub mod update;
