//! What the long-running commands share for their progress and summary lines.

use std::time::Duration;

/// How often a progress line goes to stderr.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Messages per second, 0 for no time at all (a single message, or none).
pub fn rate_of(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}
