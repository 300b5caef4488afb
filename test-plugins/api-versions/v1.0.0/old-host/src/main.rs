//! Test fixture: a host built against mes-plugin-api 1.0.0 as released. For each
//! library given, it applies the 1.0 collector's loading steps (abi_stable's header
//! and layout check, then the 1.0 host's own rule: refuse a plugin built against a
//! newer minor version), creates an instance for machine `CNC001`, hands it one
//! message and prints what happened:
//! `<file>: loaded <class>; writes <n>` or `<file>: refused: <why>`.

use abi_stable::{
    library::{lib_header_from_path, RootModule},
    sabi_trait::TD_Opaque,
    sabi_types::VersionNumber,
    std_types::{ROption, RResult, RStr},
};
use mes_plugin_api::{testing::RecordingDb, Message, PluginModuleRef, RawDatabase_TO};

fn load(path: &str) -> Result<String, String> {
    let header = lib_header_from_path(path.as_ref()).map_err(|e| e.to_string())?;
    let host = VersionNumber::new(PluginModuleRef::VERSION_STRINGS).unwrap();
    let built = VersionNumber::new(header.version_strings()).map_err(|e| e.to_string())?;
    if built.major != host.major || built.minor > host.minor {
        return Err(format!("built against mes-plugin-api {built}, newer than this host's {host}"));
    }
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| e.to_string())?;
    let mut instance = match (module.new())(RStr::from_str("CNC001"), ROption::RNone) {
        RResult::ROk(i) => i,
        RResult::RErr(e) => return Err(format!("cnc_id CNC001 refused: {e}")),
    };
    let msg = Message::new("t", "CNC001", "p", 1747379028, r#"{"status":"idle","spin":0,"X-Axis":0,"Y-Axis":0}"#);
    let mut db = RecordingDb::new();
    let raw = RawDatabase_TO::from_ptr(&mut db, TD_Opaque);
    instance
        .handle(&msg, raw)
        .into_result()
        .map_err(|e| format!("handle failed: {e}"))?;
    Ok(format!(
        "loaded {}; writes {}",
        module.class_name(),
        db.writes().len()
    ))
}

fn main() {
    for path in std::env::args().skip(1) {
        match load(&path) {
            Ok(said) => println!("{path}: {said}"),
            Err(e) => println!("{path}: refused: {}", e.replace('\n', " ")),
        }
    }
}
