//! The hang watchdog: a plugin call that does not return within
//! `plugins.call_timeout_ms` makes the collector leave the process.
//!
//! A thread cannot be stopped safely from inside the process: Rust has no thread
//! cancellation, and `pthread_cancel` or `pthread_kill` would leave whatever the plugin
//! held (the allocator's locks, the recorder's half-written row, its own state)
//! behind in a process that goes on using it. So the watchdog reports the call, marks
//! the collector not ready, records the record in hand in the marker and exits; the
//! supervisor restarts the collector, which then dead-letters that message as
//! `plugin_hung` (see [`super`]).
//!
//! It costs the dispatcher nothing beyond the atomic store the crash guard makes
//! anyway: the watchdog samples that store a few times per timeout, and a call counts
//! as hung once the same record has been in hand for the whole timeout.

use std::{
    io::Write,
    sync::{atomic::Ordering, Arc},
    thread,
    time::{Duration, Instant},
};

use log::error;

use super::{
    marker::{Fatal, NONE},
    signals, EXIT_PLUGIN_HUNG,
};
use crate::metrics::Metrics;

/// Starts the watchdog thread. `describe` names the plugin and machine of a record
/// for the report; it runs only once a hang is found.
pub fn spawn(
    timeout: Duration,
    metrics: Arc<Metrics>,
    describe: Box<dyn Fn(u64) -> String + Send>,
) -> std::io::Result<()> {
    let tick = (timeout / 5).clamp(Duration::from_millis(10), Duration::from_millis(250));
    thread::Builder::new()
        .name("plugin-watchdog".into())
        .spawn(move || {
            let mut watched = NONE;
            let mut since = Instant::now();
            loop {
                thread::sleep(tick);
                let seq = signals::IN_HAND.load(Ordering::Acquire);
                if seq == NONE || seq != watched {
                    watched = seq;
                    since = Instant::now();
                    continue;
                }
                let running = since.elapsed() + tick;
                if running < timeout {
                    continue;
                }
                metrics.set_plugin_hung();
                signals::record(Fatal::Hung {
                    in_hand: seq,
                    after_ms: timeout.as_millis() as u64,
                });
                error!(
                    "plugin call HUNG: {} has not returned after {} ms (plugins.call_timeout_ms); a thread cannot be stopped safely inside the process, so the collector exits with status {EXIT_PLUGIN_HUNG} for its supervisor to restart it, and the next start stores this message as a dead letter (plugin_hung)",
                    describe(seq),
                    running.as_millis()
                );
                let _ = std::io::stderr().flush();
                // _exit, not exit: exit handlers could wait on a lock the hung call
                // holds. Uncommitted batches stay in the spool, as after any crash.
                // SAFETY: ends the process; nothing runs after it.
                unsafe { libc::_exit(EXIT_PLUGIN_HUNG) };
            }
        })
        .map(|_| ())
}
