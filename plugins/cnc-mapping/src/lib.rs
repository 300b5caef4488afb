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

#[cfg(test)]
mod tests {
    use super::*;
    use mes_plugin_api::testing::RecordingDb;

    fn settings(mapping: &str) -> String {
        serde_json::to_string(&EngineSettings {
            class: "Lathe".into(),
            mapping_file: "config/mappings/Lathe.json".into(),
            mapping: mapping.into(),
            machine: Some(serde_json::json!({"line": "L1"})),
        })
        .unwrap()
    }

    #[test]
    fn a_machine_mapped_to_the_engine_itself_is_refused_saying_what_to_do() {
        for s in [None, Some("{}"), Some(r#"{"line": 1}"#)] {
            let err = JsonMapping::new("CNC9", s).err().expect("refused");
            assert!(
                err.message().contains("config/mappings/<Class>.json"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_mapping_in_the_settings_runs_with_the_machine_settings() {
        let text = include_str!("../examples/Lathe.json");
        let mut p = JsonMapping::new("L9", Some(&settings(text))).unwrap();
        let msg = Message::new(
            "t",
            "L9",
            "p",
            5,
            r#"{"ctrl":{"state":2},"spindle":{"rpm":3},"pos":{"x_um":0}}"#,
        );
        let mut db = RecordingDb::new();
        db.handle(&mut p, &msg).unwrap();
        assert_eq!(db.writes().len(), 2);

        let err = JsonMapping::new(
            "L9",
            Some(&settings(&text.replace("\"float\"", "\"flaot\""))),
        )
        .err()
        .expect("refused");
        assert!(
            err.message().starts_with(
                "mapping config/mappings/Lathe.json (class Lathe): rows[1].columns.spindle_load.type: unknown type \"flaot\""
            ),
            "{err}"
        );
    }
}
