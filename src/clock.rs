//! The clock the lock-free per-server state and the rate limiters read: stamps
//! since one process-wide epoch, small enough to fit in an atomic or a table slot
//! next to the value they date.

use std::sync::OnceLock;

use tokio::time::Instant;

const EPOCH_LEAD: std::time::Duration = std::time::Duration::from_secs(3600);

/// The process-wide epoch, an hour before the first reading, so that no clock
/// that reads an Instant in this process is before it: tests run runtimes with
/// paused clocks side by side, and one that advanced must not put the epoch in
/// another's future.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(EPOCH_LEAD).unwrap_or(now)
    })
}

/// Milliseconds since the epoch, the time base of every estimate, so a pick reads
/// the clock once and compares stamps as integers. Wraps after 49 days;
/// differences stay right (`since`).
pub(crate) fn stamp(now: Instant) -> u32 {
    now.saturating_duration_since(epoch()).as_millis() as u32
}

/// Nanoseconds since the epoch: the rate limiters' time (a GCRA state is one such
/// number; u64 nanoseconds last 584 years). Read through `tokio::time::Instant`,
/// so a paused test clock drives the limiters too. Never zero (the epoch is an
/// hour back), which leaves zero to mean "no state".
pub(crate) fn nanos(now: Instant) -> u64 {
    now.saturating_duration_since(epoch()).as_nanos() as u64
}
