//! The extension entry point: how features arrive after 1.0 without changing the
//! root module. Hosts use these types; plugin authors never do (the
//! [`export_plugin!`](crate::export_plugin) macro exports the entry point).
//!
//! # Why not grow the root module
//!
//! abi_stable 0.11.3 checks every type reachable from the root module field by field
//! when it loads a library, and refuses a library whose prefix type (the root module,
//! or a `#[sabi_trait]` vtable such as [`RawDatabase`](crate::RawDatabase)'s) has
//! *fewer* fields than the host's (`abi_checking.rs`, `check_fields`: interface longer
//! than implementation is `FieldCountMismatch`, whatever the prefix type says). So a
//! field or method appended in 1.1 would lock every 1.0 plugin out of a 1.1 host. The
//! root module, [`PluginInstance`](crate::PluginInstance), [`RawDatabase`](crate::RawDatabase),
//! [`Message`](crate::Message), [`Value`] and [`PluginFailure`](crate::PluginFailure)
//! are therefore frozen for all of 1.x, and the
//! root module's version (what abi_stable compares) stays [`ROOT_MODULE_VERSION`].
//!
//! # What grows instead
//!
//! A plugin built against 1.1 or later also exports the symbol [`MANIFEST_SYMBOL`], a
//! [`PluginManifest`]: the API version it was built against, the features it
//! requires, and an `attach` function. A 1.0 plugin simply lacks the symbol. The host
//! looks it up by name (with `libloading`), checks its layout, refuses the plugin if it
//! requires a feature the host lacks, and otherwise calls `attach` once with a
//! [`HostServices`], through which the plugin looks up each host service by a
//! versioned name (`"log.v1"`, `"metrics.v1"`). A name, once released, always means
//! the same table; a service that must change gets a new name (`"log.v2"`) and the old
//! one stays. A host lacking a service returns null, so a plugin built against 1.N
//! that uses nothing newer than 1.M runs on a 1.M host.
//!
//! The same path gives the database handle new methods: a [`Db`](crate::Db) method
//! added in 1.N is a function of a host service table (`"db.v1"`, and `"db.v2"` for
//! the next), taking the handle the host passed to `handle` as its first argument, so
//! [`RawDatabase`](crate::RawDatabase)'s vtable never changes.

use abi_stable::{
    std_types::{RResult, RSlice, RStr, RString, RVec},
    type_layout::TypeLayout,
    StableAbi,
};

use crate::{Feature, RawDatabaseRef, Value};

/// The symbol (NUL-terminated) under which a 1.1+ plugin exports its
/// [`PluginManifest`].
pub const MANIFEST_SYMBOL: &[u8] = b"mes_plugin_manifest_v1\0";

/// The version every 1.x plugin's root module declares, whatever 1.x it was built
/// against: abi_stable compares it (major versions only), and the collector 1.0
/// refused a newer minor version, so keeping it lets a 1.1 plugin that needs nothing
/// newer load into a 1.0 host. The real version is [`PluginManifest::api_version`].
pub const ROOT_MODULE_VERSION: &str = "1.0.0";

/// What a 1.1+ plugin says of itself, exported under [`MANIFEST_SYMBOL`].
#[repr(C)]
#[derive(StableAbi)]
pub struct PluginManifest {
    /// The layout of this type as the plugin was built, for the host to compare with
    /// its own before it reads further.
    pub layout: &'static TypeLayout,
    /// The `mes-plugin-api` version the plugin was built against.
    pub api_version: RStr<'static>,
    /// Features the plugin cannot run without ([`Plugin::REQUIRES`](crate::Plugin::REQUIRES)).
    pub requires: RSlice<'static, Feature>,
    /// Hands the host's services to the plugin. The host calls it once, before it
    /// creates any instance.
    pub attach: extern "C" fn(host: &HostServices),
}

/// What the host hands to [`PluginManifest::attach`].
#[repr(C)]
#[derive(StableAbi)]
pub struct HostServices {
    /// The `mes-plugin-api` version the host was built against.
    pub api_version: RStr<'static>,
    /// The host's handle for this plugin library, passed back to every service call
    /// so the host knows whose call it is.
    pub context: *const (),
    /// The service table of a versioned name, or null if this host lacks it. The
    /// pointer stays valid for the life of the process.
    pub lookup: extern "C" fn(name: RStr<'_>) -> *const (),
}

/// The name of [`LogServiceV1`] for [`HostServices::lookup`].
pub const LOG_SERVICE_V1: &str = "log.v1";

/// Log records into the host's logger ([`features::LOG`](crate::features::LOG)).
#[repr(C)]
#[derive(StableAbi)]
pub struct LogServiceV1 {
    /// The most verbose level the host's filter lets through anywhere, as
    /// `log::LevelFilter as u8` (0 off, 1 error, ... 5 trace).
    pub max_level: extern "C" fn() -> u8,
    /// Whether a record of this level (`log::Level as u8`) and target would be kept.
    pub enabled: extern "C" fn(context: *const (), level: u8, target: RStr<'_>) -> bool,
    /// Logs one record.
    pub log: extern "C" fn(context: *const (), record: &LogRecordV1<'_>),
}

/// One log record, as it crosses to the host.
#[repr(C)]
#[derive(StableAbi)]
pub struct LogRecordV1<'a> {
    /// `log::Level as u8`: 1 error ... 5 trace.
    pub level: u8,
    pub target: RStr<'a>,
    pub message: RStr<'a>,
    pub module_path: RStr<'a>,
    pub file: RStr<'a>,
    pub line: u32,
}

/// The name of [`MetricsServiceV1`] for [`HostServices::lookup`].
pub const METRICS_SERVICE_V1: &str = "metrics.v1";

/// Counters in the host's registry ([`features::METRICS`](crate::features::METRICS)).
#[repr(C)]
#[derive(StableAbi)]
pub struct MetricsServiceV1 {
    /// Adds `n` to the plugin's counter `event` for label value `label`.
    pub count: extern "C" fn(context: *const (), event: RStr<'_>, label: RStr<'_>, n: u64),
}

/// The name of [`DbServiceV1`] for [`HostServices::lookup`].
pub const DB_SERVICE_V1: &str = "db.v1";

/// Database handle methods added in 1.1. Each takes the handle the host passed to the
/// plugin's `handle`, and the host checks that it is.
#[repr(C)]
#[derive(StableAbi)]
pub struct DbServiceV1 {
    /// [`Db::upsert_newest`](crate::Db::upsert_newest)
    /// ([`features::UPSERT_NEWEST`](crate::features::UPSERT_NEWEST)).
    pub upsert_newest: extern "C" fn(
        db: &mut RawDatabaseRef<'_>,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
        order_by: RSlice<'_, RStr<'_>>,
    ) -> RResult<(), RString>,
}
