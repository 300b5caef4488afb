//! The plugin trait a plugin author implements, and the root module the host loads.

#![allow(non_local_definitions)] // sabi_trait emits its impls inside a const block

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RStr},
    StableAbi,
};

use crate::{
    abi::{PluginManifest, ROOT_MODULE_VERSION},
    db::{Db, RawDatabaseRef},
    error::PluginFailure,
    host_link, Error, Feature, Message,
};

/// What a plugin author implements: a plain Rust type, one instance per machine.
///
/// The host creates one instance per `cnc_id` mapped to [`CLASS_NAME`](Plugin::CLASS_NAME)
/// in `cnc_classes.json`, so an instance may keep per-machine state. Calls for one
/// machine never overlap. A panic in either method is caught at the boundary and
/// treated like a returned error.
///
/// ```
/// use mes_plugin_api::{export_plugin, Db, Error, Message, Plugin, Value};
///
/// pub struct Lathe;
///
/// impl Plugin for Lathe {
///     const CLASS_NAME: &'static str = "Lathe";
///
///     fn new(_cnc_id: &str, _settings: Option<&str>) -> Result<Self, Error> {
///         Ok(Lathe)
///     }
///
///     fn handle(&mut self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
///         db.insert(
///             "cnc_data",
///             &["cnc_id", "part_program", "timestamp", "json_data"],
///             vec![
///                 msg.cnc_id().into(),
///                 msg.part_program().into(),
///                 msg.timestamp().into(),
///                 Value::json_text(msg.payload()),
///             ],
///         )
///     }
/// }
///
/// export_plugin!(Lathe);
/// ```
pub trait Plugin: Send + Sized + 'static {
    /// The class name that `cnc_classes.json` maps machines to. Unique among the
    /// plugins a host loads.
    const CLASS_NAME: &'static str;

    /// Host features the plugin cannot run without (see [`features`](crate::features)).
    /// A host that lacks one refuses the plugin when it loads it, naming the feature
    /// and the host version it needs. Features not listed here are used where the
    /// host has them and do nothing where it does not. Default: none.
    const REQUIRES: &'static [Feature] = &[];

    /// Creates the instance for one machine. `settings` is the JSON text of the
    /// machine's optional `settings` object in `cnc_classes.json`; refuse settings you
    /// cannot use with an error saying which key is wrong.
    fn new(cnc_id: &str, settings: Option<&str>) -> Result<Self, Error>;

    /// Handles one message from this instance's machine, writing through `db`. An
    /// error sends the message to the dead-letter table with the error's text; none of
    /// the rows written for that message are kept.
    fn handle(&mut self, message: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error>;
}

/// A plugin instance as the host sees it, across the ABI boundary.
#[sabi_trait]
pub trait PluginInstance: Send {
    /// Handles one message; see [`Plugin::handle`].
    #[sabi(last_prefix_field)]
    fn handle(
        &mut self,
        message: &Message<'_>,
        db: RawDatabaseRef<'_>,
    ) -> RResult<(), PluginFailure>;
}

/// An owned plugin instance, as the host holds it.
pub type PluginInstanceBox = PluginInstance_TO<'static, RBox<()>>;

/// The root module every plugin library exports (through [`export_plugin!`](crate::export_plugin)).
///
/// Frozen for all of 1.x: a host whose module has more fields than a plugin's refuses
/// that plugin, although it is an abi_stable prefix type. Features after 1.0 arrive
/// through the extension entry point instead (see [`abi`](crate::abi)).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(option))]
pub struct PluginModule {
    /// The class name, as in [`Plugin::CLASS_NAME`].
    pub class_name: RStr<'static>,
    /// The plugin crate's own version (its `CARGO_PKG_VERSION`).
    pub plugin_version: RStr<'static>,
    /// Creates the instance for one machine; see [`Plugin::new`].
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(
        cnc_id: RStr<'_>,
        settings: ROption<RStr<'_>>,
    ) -> RResult<PluginInstanceBox, PluginFailure>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "mes_plugin";
    const NAME: &'static str = "mes_plugin";
    // Recorded in every plugin; abi_stable refuses another major version. It stays at
    // 1.0.0 through 1.x, since the root module does (see `abi::ROOT_MODULE_VERSION`).
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ROOT_MODULE_VERSION);
}

/// Wraps a [`Plugin`] so that no panic crosses the boundary: abi_stable aborts the
/// process if one does.
struct Adapter<P>(P);

impl<P: Plugin> PluginInstance for Adapter<P> {
    fn handle(
        &mut self,
        message: &Message<'_>,
        db: RawDatabaseRef<'_>,
    ) -> RResult<(), PluginFailure> {
        let mut db = Db::from_raw(db);
        match catch_unwind(AssertUnwindSafe(|| self.0.handle(message, &mut db))) {
            Ok(Ok(())) => RResult::ROk(()),
            Ok(Err(e)) => RResult::RErr(PluginFailure::error(e)),
            Err(panic) => RResult::RErr(PluginFailure::panic(panic)),
        }
    }
}

extern "C" fn new_instance<P: Plugin>(
    cnc_id: RStr<'_>,
    settings: ROption<RStr<'_>>,
) -> RResult<PluginInstanceBox, PluginFailure> {
    if let Some(refusal) = host_link::missing_requirement(P::REQUIRES) {
        return RResult::RErr(PluginFailure::error(Error::new(refusal)));
    }
    let made = catch_unwind(AssertUnwindSafe(|| {
        P::new(cnc_id.as_str(), settings.map(|s| s.as_str()).into_option())
    }));
    match made {
        Ok(Ok(plugin)) => RResult::ROk(PluginInstance_TO::from_value(
            Adapter(plugin),
            abi_stable::sabi_trait::TD_Opaque,
        )),
        Ok(Err(e)) => RResult::RErr(PluginFailure::error(e)),
        Err(panic) => RResult::RErr(PluginFailure::panic(panic)),
    }
}

/// Builds the root module of plugin `P`. Used by [`export_plugin!`].
#[doc(hidden)]
pub fn root_module<P: Plugin>(plugin_version: &'static str) -> PluginModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginModule {
        class_name: RStr::from_str(P::CLASS_NAME),
        plugin_version: RStr::from_str(plugin_version),
        new: new_instance::<P>,
    }
    .leak_into_prefix()
}

/// Builds the extension manifest of plugin `P`. Used by [`export_plugin!`].
#[doc(hidden)]
pub const fn manifest<P: Plugin>() -> PluginManifest {
    PluginManifest {
        layout: <PluginManifest as StableAbi>::LAYOUT,
        api_version: RStr::from_str(crate::API_VERSION),
        requires: RSlice::from_slice(P::REQUIRES),
        attach: host_link::attach,
    }
}
