//! Test fixture: loads each library given with the fixture's mes-plugin-api 1.1.0,
//! whose root module has one field more than the real 1.0.0's, the way the collector
//! loads plugins, and prints `loaded <class>` or `refused: <abi_stable's report>`.
//! It shows what a minor release that appended a field would do to existing plugins.

use abi_stable::library::lib_header_from_path;
use mes_plugin_api::PluginModuleRef;

fn main() {
    for path in std::env::args().skip(1) {
        let loaded = lib_header_from_path(path.as_ref())
            .and_then(|h| h.init_root_module::<PluginModuleRef>());
        match loaded {
            Ok(module) => println!("{path}: loaded {}", module.class_name()),
            Err(e) => println!("{path}: refused: {e}"),
        }
    }
}
