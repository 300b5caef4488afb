//! The `batch` section of `collector.json`: when the dispatcher seals a batch.

use std::time::Duration;

use serde::Deserialize;

use crate::sink::shares::MAX_WRITERS;

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most messages committed in one transaction.
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// The latency budget: how long a message may wait from the dispatcher's first
    /// sight of it to its commit, batch filling and commit together. Also read under
    /// its former name `max_wait_ms` (which bounded the filling only while the
    /// previous batch was still being committed), so existing files keep working.
    #[serde(default = "default_max_latency_ms", alias = "max_wait_ms")]
    pub max_latency_ms: u64,
    /// Database connections committing in parallel, each for a fixed share of the
    /// machines (by cnc_id), so that each machine's rows stay in order
    /// ([`crate::sink::shares`]).
    #[serde(default = "default_writers")]
    pub writers: usize,
}

impl BatchConfig {
    /// What is wrong with the section, saying how to fix it.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.max_messages == 0 {
            return Err("batch.max_messages must be at least 1".into());
        }
        if !(1..=MAX_WRITERS).contains(&self.writers) {
            return Err(format!(
                "batch.writers is {}; use 1 to {MAX_WRITERS} (more connections than the database server has cores only wait on each other)",
                self.writers
            ));
        }
        Ok(())
    }

    pub fn max_latency(&self) -> Duration {
        Duration::from_millis(self.max_latency_ms)
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_messages: default_max_messages(),
            max_latency_ms: default_max_latency_ms(),
            writers: default_writers(),
        }
    }
}

fn default_max_messages() -> usize {
    500
}

fn default_max_latency_ms() -> u64 {
    50
}

fn default_writers() -> usize {
    2
}
