//! The root module, changed from `plugin-api/src/plugin.rs` as the enabled feature
//! says; everything else is as in the real crate.

#![allow(non_local_definitions)] // sabi_trait emits its impls inside a const block

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RStr},
    StableAbi,
};

use crate::{
    db::{Db, RawDatabaseRef},
    error::PluginFailure,
    Error, Message,
};

pub trait Plugin: Send + Sized + 'static {
    const CLASS_NAME: &'static str;
    fn new(cnc_id: &str, settings: Option<&str>) -> Result<Self, Error>;
    fn handle(&mut self, message: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error>;
}

#[sabi_trait]
pub trait PluginInstance: Send {
    #[sabi(last_prefix_field)]
    fn handle(
        &mut self,
        message: &Message<'_>,
        db: RawDatabaseRef<'_>,
    ) -> RResult<(), PluginFailure>;
}

pub type PluginInstanceBox = PluginInstance_TO<'static, RBox<()>>;

/// Without a feature: a field inserted before `new`, the mistake of editing the
/// struct in the middle.
#[cfg(not(any(feature = "major-2", feature = "minor-append")))]
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(option))]
pub struct PluginModule {
    pub class_name: RStr<'static>,
    pub plugin_version: RStr<'static>,
    pub vendor: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(
        cnc_id: RStr<'_>,
        settings: ROption<RStr<'_>>,
    ) -> RResult<PluginInstanceBox, PluginFailure>,
}

/// `major-2`: the real layout.
#[cfg(feature = "major-2")]
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(option))]
pub struct PluginModule {
    pub class_name: RStr<'static>,
    pub plugin_version: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(
        cnc_id: RStr<'_>,
        settings: ROption<RStr<'_>>,
    ) -> RResult<PluginInstanceBox, PluginFailure>,
}

/// `minor-append`: the real layout and one more field at the end, as a minor release
/// may add.
#[cfg(feature = "minor-append")]
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(option))]
pub struct PluginModule {
    pub class_name: RStr<'static>,
    pub plugin_version: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(
        cnc_id: RStr<'_>,
        settings: ROption<RStr<'_>>,
    ) -> RResult<PluginInstanceBox, PluginFailure>,
    pub vendor: RStr<'static>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "mes_plugin";
    const NAME: &'static str = "mes_plugin";
    const VERSION_STRINGS: VersionStrings = if cfg!(feature = "major-2") {
        VersionStrings::new("2.0.0")
    } else if cfg!(feature = "minor-append") {
        VersionStrings::new("1.1.0")
    } else {
        VersionStrings::new("1.0.0")
    };
}

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
    match catch_unwind(AssertUnwindSafe(|| {
        P::new(cnc_id.as_str(), settings.map(|s| s.as_str()).into_option())
    })) {
        Ok(Ok(plugin)) => RResult::ROk(PluginInstance_TO::from_value(
            Adapter(plugin),
            abi_stable::sabi_trait::TD_Opaque,
        )),
        Ok(Err(e)) => RResult::RErr(PluginFailure::error(e)),
        Err(panic) => RResult::RErr(PluginFailure::panic(panic)),
    }
}

#[doc(hidden)]
pub fn root_module<P: Plugin>(plugin_version: &'static str) -> PluginModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginModule {
        class_name: RStr::from_str(P::CLASS_NAME),
        plugin_version: RStr::from_str(plugin_version),
        #[cfg(not(feature = "major-2"))]
        vendor: RStr::from_str("fixture"),
        new: new_instance::<P>,
    }
    .leak_into_prefix()
}
