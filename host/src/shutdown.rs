//! One way for a long-running part to learn that the collector is stopping, and to
//! wait (sleep, back off) without outliving the stop by more than a moment.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

/// How often a wait looks at the flag: short enough that a stop is not noticeably
/// late, long enough that a waiting thread costs nothing.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// A stop request shared between threads. Clones share the flag.
///
/// ```
/// use mes_collector::shutdown::Shutdown;
/// use std::time::Duration;
///
/// let stop = Shutdown::default();
/// assert!(stop.sleep(Duration::from_millis(1)));
/// stop.request();
/// assert!(!stop.sleep(Duration::from_secs(60))); // returns at once
/// ```
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// Asks every holder to stop. True when it had been asked already.
    pub fn request(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sleeps for `d`, or less if a stop is requested meanwhile. True when the whole
    /// time passed without one.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.requested() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            thread::sleep((until - now).min(LOOK_EVERY));
        }
    }
}

/// Capped exponential back-off between attempts at something that is down (the
/// database, the broker), ended early by a stop.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { next: first, max }
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// Waits the current delay and doubles it (up to the cap). False when a stop was
    /// requested: the caller gives up.
    pub fn wait(&mut self, stop: &Shutdown) -> bool {
        let waited = stop.sleep(self.next);
        self.next = (self.next * 2).min(self.max);
        waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));
        let stop = Shutdown::default();
        let mut delays = Vec::new();
        for _ in 0..4 {
            delays.push(b.next);
            assert!(b.wait(&stop));
        }
        assert_eq!(delays, [1, 2, 4, 4].map(Duration::from_millis));
    }

    #[test]
    fn a_stop_ends_a_wait_early() {
        let stop = Shutdown::default();
        let other = stop.clone();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            other.request()
        });
        let started = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(30), Duration::from_secs(30));
        assert!(!b.wait(&stop));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!t.join().unwrap(), "the first request finds the flag unset");
        assert!(stop.request(), "a second request finds it set");
    }
}
