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
//! ## Compatibility
//!
//! The host checks every plugin library when it loads it, and refuses one that does not
//! match with a message naming the file, what differs and what to rebuild against
//! (`mes-collector check` and `mes-collector plugins DIR` show it). The rules, as
//! abi_stable 0.11.3 applies them and `host/tests/plugin_authoring.rs` verifies:
//!
//! - **Major version.** The plugin records the `mes-plugin-api` version it was built
//!   against. Another major version than the host's is refused: rebuild the plugin
//!   against the host's `mes-plugin-api` major version.
//! - **Minor version: the oldest host a plugin runs on.** A plugin built against 1.y
//!   loads into hosts built against 1.y or any later 1.x, and is refused by older ones.
//!   abi_stable compares major versions only; the host adds this rule, so that a minor
//!   release may add host behaviour that plugins built against it rely on. A plugin
//!   declares the oldest host it needs by the version it is built against: to run on
//!   1.0 hosts, keep `mes-plugin-api = "~1.0"` in its Cargo.toml.
//! - **Layout.** Every type reachable from the root module ([`PluginModule`], the
//!   [`PluginInstance`] and [`RawDatabase`] vtables, [`Message`], [`Value`],
//!   [`PluginFailure`]) is compared field by field with the host's: names, order,
//!   types, sizes. Any difference refuses the plugin, whatever its version says.
//!
//! So a minor release may only add what does not cross the boundary: new functions and
//! helpers like [`standard`], compiled into the plugins that use them. It may **not**
//! append fields to [`PluginModule`] or methods to [`PluginInstance`] or
//! [`RawDatabase`], although they are abi_stable prefix types: abi_stable accepts a
//! plugin whose prefix type has more fields than the host's (a newer plugin, which the
//! host refuses by the rule above anyway), but refuses one with fewer ("too many
//! fields"), so an appended field would lock every existing 1.x plugin out of the new
//! host. That, and any other change to a boundary type (a new [`Value`] variant, a
//! changed [`Message`], a removed, reordered or retyped field or method), needs a new
//! major version.
//!
//! A plugin's own version ([`PluginModule::plugin_version`]) is informational: the host
//! shows it in `check` and in dead letters.

mod db;
mod error;
mod ident;
mod message;
mod plugin;
pub mod standard;
#[cfg(feature = "testing")]
pub mod testing;
mod value;

pub use db::{Db, RawDatabase, RawDatabaseRef, RawDatabase_TO};
pub use error::{Error, FailureKind, PluginFailure};
pub use ident::{
    check_identifier, check_names, check_params, check_row, check_values, MAX_IDENTIFIER_LEN,
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
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::root_module;
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
    }
}
