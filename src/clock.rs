//! The clock the lock-free per-server state reads: millisecond stamps that fit in
//! an atomic next to the value they date.

use std::sync::OnceLock;

use tokio::time::Instant;

const EPOCH_LEAD: std::time::Duration = std::time::Duration::from_secs(3600);

/// Milliseconds since a process-wide epoch, the time base of every estimate, so a
/// pick reads the clock once and compares stamps as integers. Wraps after 49 days;
/// differences stay right (`since`).
pub(crate) fn stamp(now: Instant) -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // An hour back, so that no clock that reads an Instant in this process is
    // before the epoch: tests run runtimes with paused clocks side by side, and one
    // that advanced must not put the epoch in another's future.
    let epoch = *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(EPOCH_LEAD).unwrap_or(now)
    });
    now.saturating_duration_since(epoch).as_millis() as u32
}
