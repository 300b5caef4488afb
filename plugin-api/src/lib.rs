//! # mes-plugin-api: the contract between the MES collector and its CNC plugins
//!
//! A plugin turns the messages of one controller type into rows. It is a plain Rust
//! type implementing [`Plugin`], exported with one line, [`export_plugin!`], and built
//! as a `cdylib`. The host loads it at run time through a stable ABI
//! ([abi_stable](https://docs.rs/abi_stable)), so plugins and host ship independently.
//!
//! ## A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "cnc-lathe"
//! version = "1.0.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! mes-plugin-api = "1"
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//!
//! [profile.release]
//! panic = "unwind"   # the export macro turns panics into dead letters
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use mes_plugin_api::{export_plugin, Db, Error, Message, Plugin, Value};
//!
//! #[derive(serde::Deserialize)]
//! struct Payload {
//!     status: String,
//!     spin: f64,
//! }
//!
//! pub struct Lathe;
//!
//! impl Plugin for Lathe {
//!     const CLASS_NAME: &'static str = "Lathe";
//!
//!     fn new(_cnc_id: &str, _settings: Option<&str>) -> Result<Self, Error> {
//!         Ok(Lathe)
//!     }
//!
//!     fn handle(&mut self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
//!         let p: Payload = msg.payload_as()?;
//!         db.insert(
//!             "cnc_data",
//!             &["cnc_id", "part_program", "timestamp", "json_data"],
//!             vec![
//!                 msg.cnc_id().into(),
//!                 msg.part_program().into(),
//!                 msg.timestamp().into(),
//!                 Value::json_text(msg.payload()),
//!             ],
//!         )?;
//!         db.upsert(
//!             "cnc_status",
//!             &["cnc_id", "status", "spin", "part_program", "timestamp"],
//!             vec![
//!                 msg.cnc_id().into(),
//!                 p.status.into(),
//!                 p.spin.into(),
//!                 msg.part_program().into(),
//!                 msg.timestamp().into(),
//!             ],
//!         )
//!     }
//! }
//!
//! export_plugin!(Lathe);
//! ```
//!
//! Build it with `cargo build --release`, copy `target/release/libcnc_lathe.so` into
//! the host's plugins directory, map machines to `"Lathe"` in `cnc_classes.json`, and
//! restart the host.
//!
//! ## Host features (plugin API 1.1)
//!
//! Beyond the 1.0 contract, a plugin can use features of the host, each named in
//! [`features`]:
//!
//! - [`log`]: the `log` crate's macros reach the collector's log, with the plugin's
//!   class and the machine's `cnc_id` attached, filtered by `RUST_LOG`, rate-limited.
//! - [`metrics::count`]: counters in the collector's `/metrics`, bounded per class.
//! - [`Db::upsert_newest`]: "latest value" rows that keep the newest state by the
//!   plugin's own ordering, whatever order messages commit in.
//!
//! A feature the host lacks does nothing (or, for a `Db` method, returns an error),
//! unless the plugin lists it in [`Plugin::REQUIRES`]: then the host refuses the plugin
//! when it loads it, naming the feature and the host version it needs.
//!
//! ## Compatibility
//!
//! A plugin built against any `mes-plugin-api` 1.x loads into any collector built
//! against any 1.x, older or newer, unless it requires (in [`Plugin::REQUIRES`]) a
//! feature that collector lacks; then it is refused with a message naming the feature
//! and the plugin API version that brought it. `host/tests/api_versions.rs` builds a
//! plugin against a frozen copy of every released version (`test-plugins/api-versions`)
//! and loads each into the current host.
//!
//! How: abi_stable 0.11.3 checks every type reachable from the root module when it
//! loads a library, and refuses one whose prefix types (the root module, the
//! `#[sabi_trait]` vtables) have fewer fields than the host's, so those types are
//! frozen for all of 1.x, and new features arrive through a second, versioned entry
//! point that the host looks up by name ([`abi`] explains the mechanism). What that
//! means for each kind of change:
//!
//! | Change | Kind | Why |
//! |---|---|---|
//! | A new host feature: a service table under a new name (`"log.v2"`, `"db.v2"`), a [`features`] constant, the plugin-side function that uses it | minor | a host lacking the name returns null and the plugin goes without, or refuses if it requires it; older plugins never ask for it |
//! | A new [`Db`] method | minor | it is a function of a new `db.vN` service table, handed the 1.0 handle; [`RawDatabase`]'s vtable does not change |
//! | A new helper compiled into the plugin ([`standard`], [`check_row`], [`Message::payload_as`]) | minor | nothing crosses the boundary |
//! | A new variant of [`testing::Write`](crate::testing) | minor | the enum is `#[non_exhaustive]` (from 1.1) and never crosses the boundary |
//! | A field appended to [`PluginModule`], a method appended to [`PluginInstance`] or [`RawDatabase`] | **major** | abi_stable refuses every plugin with the shorter prefix type ("too many fields"), although they are prefix types |
//! | A new variant of [`Value`], [`FailureKind`] | **major** | exhaustive enums: abi_stable refuses a different variant count either way, and an old host would read an unknown discriminant |
//! | Any change to [`Message`], [`PluginFailure`] or a released service table (`LogServiceV1`, ...) | **major** (or a new name, which is minor) | their layouts are fixed by name: plugins and hosts read them by offset |
//! | A changed or removed trait item of [`Plugin`], a removed public item | **major** | plugin source no longer compiles |
//! | A new [`Plugin`] item with a default (as `REQUIRES` in 1.1) | minor | existing plugin source compiles unchanged |
//!
//! For 2.0: make [`Value`] and [`FailureKind`] `#[sabi(kind(WithNonExhaustive))]`, so
//! that they too can grow in minor versions.
//!
//! The host refuses a plugin built against another major version, and says what to
//! rebuild against; `mes-collector plugins DIR` shows each plugin's API version, the
//! features it can use on this host and those it requires.
//!
//! A plugin's own version ([`PluginModule::plugin_version`]) is informational: the host
//! shows it in `check` and in dead letters.

pub mod abi;
mod db;
mod error;
pub mod features;
mod host_link;
mod ident;
pub mod log;
mod message;
pub mod metrics;
mod plugin;
pub mod standard;
#[cfg(feature = "testing")]
pub mod testing;
mod value;

pub use db::{Db, RawDatabase, RawDatabaseRef, RawDatabase_TO};
pub use error::{Error, FailureKind, PluginFailure};
pub use features::Feature;
pub use ident::{
    check_identifier, check_names, check_order_by, check_params, check_row, check_values,
    MAX_IDENTIFIER_LEN,
};
pub use message::Message;
pub use plugin::{
    Plugin, PluginInstance, PluginInstanceBox, PluginInstance_TO, PluginModule, PluginModuleRef,
};
pub use value::Value;

/// The version of this crate, which a host reports next to its own.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exports a [`Plugin`] type as the library's root module. Write it once, at the top
/// level of the plugin crate:
///
/// ```
/// # use mes_plugin_api::{Db, Error, Message, Plugin};
/// # pub struct MyPlugin;
/// # impl Plugin for MyPlugin {
/// #     const CLASS_NAME: &'static str = "MyPlugin";
/// #     fn new(_: &str, _: Option<&str>) -> Result<Self, Error> { Ok(MyPlugin) }
/// #     fn handle(&mut self, _: &Message<'_>, _: &mut Db<'_>) -> Result<(), Error> { Ok(()) }
/// # }
/// mes_plugin_api::export_plugin!(MyPlugin);
/// ```
///
/// It records the plugin crate's version and wraps every call in `catch_unwind`, so
/// that a panic becomes a dead letter instead of aborting the host.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        // The symbol name abi_stable's loader looks up; checked against abi_stable's
        // own constant by a unit test of mes-plugin-api.
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __MES_PLUGIN_LIB_HEADER: $crate::__private::LibHeader = {
            extern "C" fn load_root_module() -> $crate::__private::RootModuleResult {
                $crate::__private::call_root_module_loader(|| {
                    $crate::__private::root_module::<$plugin>(env!("CARGO_PKG_VERSION"))
                })
            }
            // SAFETY: the constructor returns the root module of type PluginModuleRef,
            // the type named here, as LibHeader requires.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::PluginModuleRef>(
                    load_root_module,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };

        // The extension entry point (plugin API 1.1): looked up by name, so a host
        // that predates it ignores it. See `mes_plugin_api::abi`.
        #[doc(hidden)]
        #[export_name = "mes_plugin_manifest_v1"]
        pub static __MES_PLUGIN_MANIFEST: $crate::abi::PluginManifest =
            $crate::__private::manifest::<$plugin>();
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::{manifest, root_module};
    pub use abi_stable::library::{
        __call_root_module_loader as call_root_module_loader, CheckTypeLayout, LibHeader,
        RootModuleResult,
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_symbol_matches_abi_stable() {
        // export_plugin! spells the symbol out because abi_stable's own attribute macro
        // needs `abi_stable` as a direct dependency of every plugin crate.
        let src = include_str!("lib.rs");
        let quoted = format!(
            "#[export_name = \"{}\"]",
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
        assert!(src.contains(&quoted), "export_plugin! must export {quoted}");
        let manifest = std::str::from_utf8(crate::abi::MANIFEST_SYMBOL)
            .unwrap()
            .trim_end_matches('\0');
        let quoted = format!("#[export_name = \"{manifest}\"]");
        assert!(src.contains(&quoted), "export_plugin! must export {quoted}");
    }
}
