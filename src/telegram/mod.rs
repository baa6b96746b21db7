//! The Telegram webhook mode's machinery outside the request pipeline (issue 15;
//! reference `telegram-webhook.md` part 2): reading an update's id and affinity
//! key (`update`), deduplicating and coalescing deliveries by `update_id`
//! (`dedup`), and the dead-letter log of updates given up on (`dead_letter`).
//! The pipeline's side is `pipeline::guard::telegram` (secret and source, before
//! the body) and `pipeline::action::telegram` (the delivery).

pub mod dead_letter;
pub mod dedup;
pub mod update;

pub use dead_letter::DeadLetters;
pub use dedup::Dedup;
