//! Counters a plugin keeps in the host's Prometheus registry
//! ([`features::METRICS`](crate::features::METRICS)).
//!
//! Each count lands in `mes_plugin_events_total{class, event, label}` on the host's
//! `/metrics`, under the plugin's class. The host bounds what a plugin can create: past
//! its limit of distinct `(event, label)` pairs per class (`plugins.metric_series_per_class`,
//! default 100), new pairs are counted under `label="other"`, so a plugin that counts
//! by an unbounded value (a serial number, a free text) cannot exhaust the registry.
//! Count by values with few distinct values, such as alarm codes.
//!
//! ```
//! use mes_plugin_api::metrics;
//!
//! fn on_alarm(code: &str) {
//!     metrics::count("alarms", code);
//! }
//! on_alarm("E1002"); // outside a host (or on a 1.0 host), counts go nowhere
//! ```
//!
//! In a plugin's unit tests (feature `testing`), [`testing::counts`](crate::testing)
//! returns what the test counted.

use abi_stable::std_types::RStr;

use crate::host_link;

/// Counts one occurrence of `event` with `label` (for example `("alarms", "E1002")`).
/// `event` should be a short snake_case name; the host replaces other characters by
/// `_` and cuts both to 64 bytes.
pub fn count(event: &str, label: &str) {
    add(event, label, 1);
}

/// Counts `n` occurrences at once; see [`count`].
pub fn add(event: &str, label: &str, n: u64) {
    let Some(a) = host_link::attached() else {
        #[cfg(feature = "testing")]
        crate::testing::record_count(event, label, n);
        return;
    };
    if let Some(service) = a.metrics {
        (service.count)(a.context, RStr::from_str(event), RStr::from_str(label), n);
    }
}
