//! Logging from a plugin ([`features::LOG`](crate::features::LOG)): the `log` crate's
//! macros, as anywhere else.
//!
//! A plugin library has its own copy of the `log` crate, which the host's logger
//! never sees. When the host attaches its log service, this crate installs a logger
//! in the plugin's copy that hands each record to the host, which adds the plugin's
//! class and the `cnc_id` of the message (or machine) in hand, filters it by
//! `RUST_LOG` (the target is the plugin's module path, e.g. `cnc_type_b`), writes it
//! as text or JSON like its own, and rate-limits each plugin (records over the limit
//! are dropped and counted in `mes_plugin_log_records_dropped_total`).
//!
//! Use `log` directly (`log = "0.4"` in Cargo.toml), or through this re-export:
//!
//! ```
//! use mes_plugin_api::log::{debug, warn};
//!
//! fn on_unknown_key(key: &str) {
//!     warn!("payload key {key:?} is not part of this controller's schema; ignored");
//!     debug!("that is all");
//! }
//! on_unknown_key("Z-Axis"); // outside a host, records go nowhere
//! ```
//!
//! On a host older than 1.1 the records go nowhere, as before.

pub use ::log::*;

use abi_stable::std_types::RStr;

use crate::{abi::LogRecordV1, host_link};

struct HostLogger;

static HOST_LOGGER: HostLogger = HostLogger;

/// Installs the forwarding logger in this library's `log`, unless the plugin set its
/// own, and starts at the host's most verbose level.
pub(crate) fn install() {
    let Some(service) = host_link::attached().and_then(|a| a.log) else {
        return;
    };
    if ::log::set_logger(&HOST_LOGGER).is_ok() {
        ::log::set_max_level(level_filter((service.max_level)()));
    }
}

fn level_filter(n: u8) -> LevelFilter {
    match n {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

impl Log for HostLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let Some(a) = host_link::attached() else {
            return false;
        };
        let Some(service) = a.log else {
            return false;
        };
        (service.enabled)(
            a.context,
            metadata.level() as u8,
            RStr::from_str(metadata.target()),
        )
    }

    fn log(&self, record: &Record<'_>) {
        let Some(a) = host_link::attached() else {
            return;
        };
        let Some(service) = a.log else {
            return;
        };
        let formatted;
        let message = match record.args().as_str() {
            Some(s) => s,
            None => {
                formatted = record.args().to_string();
                &formatted
            }
        };
        (service.log)(
            a.context,
            &LogRecordV1 {
                level: record.level() as u8,
                target: RStr::from_str(record.target()),
                message: RStr::from_str(message),
                module_path: RStr::from_str(record.module_path().unwrap_or("")),
                file: RStr::from_str(record.file().unwrap_or("")),
                line: record.line().unwrap_or(0),
            },
        );
    }

    fn flush(&self) {}
}
