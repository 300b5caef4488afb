//! The plugin's side of the extension entry point: the host services it was given,
//! kept per library (each plugin library has its own copy of this crate's statics).

use std::sync::OnceLock;

use abi_stable::std_types::RStr;

use crate::{
    abi::{
        DbServiceV1, HostServices, LogServiceV1, MetricsServiceV1, DB_SERVICE_V1, LOG_SERVICE_V1,
        METRICS_SERVICE_V1,
    },
    features, Feature,
};

/// The services the host attached, looked up once.
pub(crate) struct Attached {
    pub host_api_version: &'static str,
    pub context: *const (),
    pub log: Option<&'static LogServiceV1>,
    pub metrics: Option<&'static MetricsServiceV1>,
    pub db: Option<&'static DbServiceV1>,
}

// SAFETY: `context` is the host's per-library handle, which the host shares between
// threads itself; the tables are immutable statics of the host.
unsafe impl Send for Attached {}
unsafe impl Sync for Attached {}

static ATTACHED: OnceLock<Attached> = OnceLock::new();

/// The host's services, or `None` in a host older than 1.1 (or in a unit test).
pub(crate) fn attached() -> Option<&'static Attached> {
    ATTACHED.get()
}

/// [`PluginManifest::attach`](crate::abi::PluginManifest::attach) of every plugin.
/// Runs on the host's thread across the boundary: it must not panic.
pub(crate) extern "C" fn attach(host: &HostServices) {
    let lookup = |name: &str| (host.lookup)(RStr::from_str(name));
    let log = lookup(LOG_SERVICE_V1) as *const LogServiceV1;
    let metrics = lookup(METRICS_SERVICE_V1) as *const MetricsServiceV1;
    let db = lookup(DB_SERVICE_V1) as *const DbServiceV1;
    let attached = ATTACHED.get_or_init(|| Attached {
        host_api_version: host.api_version.as_str(),
        context: host.context,
        // SAFETY: the host returns null or a table of the type its name stands for,
        // valid for the life of the process (the contract of `HostServices::lookup`).
        log: unsafe { log.as_ref() },
        metrics: unsafe { metrics.as_ref() },
        db: unsafe { db.as_ref() },
    });
    if attached.log.is_some() {
        crate::log::install();
    }
}

/// Whether the host provided `feature`.
pub(crate) fn has(feature: &Feature) -> bool {
    let Some(a) = attached() else {
        return false;
    };
    match feature.name() {
        n if n == features::LOG.name() => a.log.is_some(),
        n if n == features::METRICS.name() => a.metrics.is_some(),
        n if n == features::UPSERT_NEWEST.name() => a.db.is_some(),
        _ => false,
    }
}

/// The refusal for an instance whose plugin requires what the host did not attach:
/// a host older than the mechanism never looks at the manifest, so the plugin itself
/// must refuse.
pub(crate) fn missing_requirement(requires: &[Feature]) -> Option<String> {
    let missing = requires.iter().find(|f| !has(f))?;
    let host = match attached() {
        Some(a) => format!("this host (plugin API {})", a.host_api_version),
        None => "this host (older than plugin API 1.1)".to_string(),
    };
    Some(format!(
        "this plugin requires the host feature `{}` (plugin API {} or later), which {host} does \
         not offer; run it on a collector built with mes-plugin-api {} or later",
        missing.name(),
        missing.since(),
        missing.since()
    ))
}
