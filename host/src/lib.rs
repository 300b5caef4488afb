//! The MES collector: MQTT in, plugins in the middle, MySQL out.
//!
//! A message enters in [`intake`], is dispatched to its machine's plugin in
//! [`dispatch`], and its rows are written in [`sink`]. Messages that cannot be stored
//! become [`dead_letter`]s.

pub mod check;
pub mod config;
pub mod crash_guard;
pub mod dead_letter;
pub mod dead_letters;
pub mod dispatch;
pub mod envelope;
pub mod fasthash;
pub mod intake;
pub mod isolation;
pub mod logging;
pub mod mappings;
pub mod metrics;
pub mod pipeline;
pub mod plugins;
pub mod quarantine;
pub mod replay;
pub mod run;
pub mod scaffold;
pub mod schema;
pub mod shutdown;
pub mod sink;
pub mod spool;

/// The host's version and the plugin API it was built against.
pub fn version_line() -> String {
    format!(
        "mes-collector {} (plugin API {})",
        env!("CARGO_PKG_VERSION"),
        mes_plugin_api::API_VERSION
    )
}

/// Locks a mutex, ignoring poison: every mutex of the collector guards data that a
/// panic cannot leave half-updated (each update is a few assignments), so a poisoned
/// lock is not worth stopping the collector for.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
