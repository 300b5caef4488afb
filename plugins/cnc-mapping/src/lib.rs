//! Plugin class `JsonMapping`: runs a mapping file (`config/mappings/<Class>.json`) for
//! the machines of class `<Class>`.
//!
//! The host registers one class per mapping file, each backed by this library, and
//! hands the constructor the mapping in its settings ([`mes_mapping::EngineSettings`]).
//! All the logic lives in the `mes-mapping` crate, which the host links too (for
//! `check`, `replay --mapping` and `new-mapping`); this crate only exports it.

use mes_mapping::{EngineSettings, Mapping, ENGINE_CLASS};
use mes_plugin_api::{export_plugin, Db, Error, Message, Plugin};

/// One instance per machine: the mapping, compiled with that machine's settings.
pub struct JsonMapping {
    mapping: Mapping,
}

impl Plugin for JsonMapping {
    const CLASS_NAME: &'static str = ENGINE_CLASS;

    fn new(cnc_id: &str, settings: Option<&str>) -> Result<Self, Error> {
        let engine: EngineSettings = settings
            .ok_or(())
            .and_then(|s| serde_json::from_str(s).map_err(|_| ()))
            .map_err(|()| {
                Error::new(format!(
                    "class {ENGINE_CLASS} runs mapping files; map {cnc_id:?} to the class of a \
                     mapping (config/mappings/<Class>.json defines class <Class>), not to {ENGINE_CLASS}"
                ))
            })?;
        let mapping = engine.compile().map_err(Error::new)?;
        Ok(JsonMapping { mapping })
    }

    fn handle(&mut self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
        self.mapping.apply(msg, db)
    }
}

export_plugin!(JsonMapping);
