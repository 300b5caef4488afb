//! Test fixture: the released `mes-plugin-api` 1.0.0 (its modules are compiled from
//! the frozen copy in `test-plugins/api-versions/v1.0.0/api/src`), except for the root
//! module in `plugin.rs`, which differs as the enabled feature says. Only `host/tests/plugin_authoring.rs` builds it.

#[path = "../../../api-versions/v1.0.0/api/src/db.rs"]
mod db;
#[path = "../../../api-versions/v1.0.0/api/src/error.rs"]
mod error;
#[path = "../../../api-versions/v1.0.0/api/src/ident.rs"]
mod ident;
#[path = "../../../api-versions/v1.0.0/api/src/message.rs"]
mod message;
mod plugin;
#[path = "../../../api-versions/v1.0.0/api/src/standard.rs"]
pub mod standard;
#[path = "../../../api-versions/v1.0.0/api/src/value.rs"]
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

/// The same export as the real crate's `export_plugin!`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __MES_PLUGIN_LIB_HEADER: $crate::__private::LibHeader = {
            extern "C" fn load_root_module() -> $crate::__private::RootModuleResult {
                $crate::__private::call_root_module_loader(|| {
                    $crate::__private::root_module::<$plugin>(env!("CARGO_PKG_VERSION"))
                })
            }
            // SAFETY: the constructor returns the root module of type PluginModuleRef.
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
