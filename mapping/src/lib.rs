//! # mes-mapping: a controller type described in JSON instead of Rust
//!
//! A mapping file says which rows a message becomes: for each row its table, how it is
//! written (insert, upsert, upsert_newest) and where each column's value comes from (a
//! JSON pointer into the payload, an envelope field, a machine setting or a constant),
//! with its type, what a missing value means, a value map and a scale. `docs/mapping.md`
//! ("Map a controller without Rust") is the reference of every key.
//!
//! This crate is the one implementation of that format. The `cnc-mapping` plugin
//! (class [`ENGINE_CLASS`]) applies it to messages; the host uses it for `check`,
//! `replay --mapping` and `new-mapping`. It does not call `export_plugin!`, so the host
//! links it without becoming a plugin itself.
//!
//! ```
//! use mes_mapping::{Machine, Mapping};
//! use mes_plugin_api::{testing::RecordingDb, Message};
//!
//! let text = r#"{"rows": [{"table": "spindle", "columns": {
//!     "cnc_id": {"envelope": "cnc_id"},
//!     "rpm":    {"pointer": "/spindle/rpm", "type": "integer"},
//!     "load":   {"pointer": "/spindle/load_pm", "type": "float", "scale": 0.1}
//! }}]}"#;
//! let mapping = mes_mapping::load(text, "Lathe.json (class Lathe)", Machine::Settings(None))
//!     .map_err(|errors| errors.join("\n"))
//!     .unwrap();
//! let msg = Message::new("t", "CNC001", "p", 1, r#"{"spindle":{"rpm":1200,"load_pm":455}}"#);
//! let mut db = RecordingDb::new();
//! db.with_db(|db| mapping.apply(&msg, db)).unwrap();
//! assert_eq!(db.writes().len(), 1);
//! ```

mod apply;
pub mod compile;
mod sparse;
pub mod spec;
pub mod starter;

pub use compile::{
    convert, infer_type, Envelope, Machine, Mapping, Pointer, Row, Type, Write, TYPES,
};
pub use spec::MappingSpec;

use serde::{Deserialize, Serialize};

/// The class name of the plugin that runs mappings. Machines are never mapped to it
/// directly: each mapping file defines a class of its own.
pub const ENGINE_CLASS: &str = "JsonMapping";

/// Parses and checks mapping text. `Err` lists every mistake as `path: what is wrong`
/// (one entry for a JSON syntax error or a key serde refuses, which stops reading).
pub fn load(text: &str, origin: &str, machine: Machine<'_>) -> Result<Mapping, Vec<String>> {
    let spec = spec::parse(text).map_err(|e| vec![e])?;
    Mapping::compile(&spec, origin, machine)
}

/// What the host hands the mapping plugin's constructor as settings: the mapped class,
/// its file, the file's text and the machine's own `settings` from `cnc_classes.json`.
///
/// The mapping travels as text, not as a JSON object: the host keeps settings as
/// `serde_json::Value`, whose objects are sorted by key, and the column order of a
/// row is the order of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    pub class: String,
    pub mapping_file: String,
    pub mapping: String,
    #[serde(default)]
    pub machine: Option<serde_json::Value>,
}

impl EngineSettings {
    /// "mapping config/mappings/X.json (class X)": how errors name the mapping.
    pub fn origin(&self) -> String {
        format!("mapping {} (class {})", self.mapping_file, self.class)
    }

    /// The mapping, checked for this machine. `Err` is one line naming the file, the
    /// class and every mistake.
    pub fn compile(&self) -> Result<Mapping, String> {
        let origin = self.origin();
        load(
            &self.mapping,
            &origin,
            Machine::Settings(self.machine.as_ref()),
        )
        .map_err(|errors| format!("{origin}: {}", errors.join("; ")))
    }
}

#[cfg(test)]
mod tests;
