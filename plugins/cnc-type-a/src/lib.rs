//! Plugin for class `CNCTypeA`: controllers that report status, spindle speed and the
//! X/Y axis positions.

use mes_plugin_api::{
    export_plugin, features, standard::insert_cnc_data, Db, Error, Feature, Message, Plugin,
};
use serde::Deserialize;

/// The payload keys this controller sends. Unknown keys are kept in `json_data` but
/// otherwise ignored.
#[derive(Deserialize)]
struct Payload {
    status: String,
    spin: f64,
    #[serde(rename = "X-Axis")]
    #[allow(dead_code)] // required by the schema, stored through json_data
    x_axis: f64,
    #[serde(rename = "Y-Axis")]
    #[allow(dead_code)]
    y_axis: f64,
}

/// One instance per machine mapped to `CNCTypeA`.
pub struct CncTypeA;

impl Plugin for CncTypeA {
    const CLASS_NAME: &'static str = "CNCTypeA";
    const REQUIRES: &'static [Feature] = &[features::UPSERT_NEWEST];

    fn new(_cnc_id: &str, _settings: Option<&str>) -> Result<Self, Error> {
        Ok(CncTypeA)
    }

    fn handle(&mut self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
        let p: Payload = msg.payload_as()?;
        insert_cnc_data(db, msg)?;
        // Ordered by the machine's own clock: a late or redelivered message, or one
        // committed by another collector of a shared subscription, never moves the
        // status back.
        db.upsert_newest(
            "cnc_status",
            &["cnc_id", "status", "spin", "part_program", "timestamp"],
            vec![
                msg.cnc_id().into(),
                p.status.into(),
                p.spin.into(),
                msg.part_program().into(),
                msg.timestamp().into(),
            ],
            &["timestamp"],
        )
    }
}

export_plugin!(CncTypeA);

#[cfg(test)]
mod tests {
    use super::*;
    use mes_plugin_api::testing::{RecordingDb, Write};
    use mes_plugin_api::Value;

    fn handle(payload: &str) -> (Result<(), Error>, RecordingDb) {
        let mut db = RecordingDb::new();
        let mut plugin = CncTypeA::new("CNC001", None).unwrap();
        let msg = Message::new("sensor/CNC", "CNC001", "program_01", 1747379028, payload);
        let result = db.handle(&mut plugin, &msg);
        (result, db)
    }

    #[test]
    fn sample_message_becomes_a_data_row_and_a_newest_status_upsert() {
        let payload = r#"{"status": "running","spin":200,"X-Axis":30,"Y-Axis":80}"#;
        let (result, db) = handle(payload);
        result.unwrap();
        assert_eq!(
            db.writes(),
            &[
                Write::Insert {
                    table: "cnc_data".into(),
                    columns: vec![
                        "cnc_id".into(),
                        "part_program".into(),
                        "timestamp".into(),
                        "json_data".into()
                    ],
                    values: vec![
                        "CNC001".into(),
                        "program_01".into(),
                        1747379028_i64.into(),
                        Value::json_text(payload),
                    ],
                },
                Write::UpsertNewest {
                    table: "cnc_status".into(),
                    columns: vec![
                        "cnc_id".into(),
                        "status".into(),
                        "spin".into(),
                        "part_program".into(),
                        "timestamp".into()
                    ],
                    values: vec![
                        "CNC001".into(),
                        "running".into(),
                        200.0.into(),
                        "program_01".into(),
                        1747379028_i64.into(),
                    ],
                    order_by: vec!["timestamp".into()],
                },
            ]
        );
    }

    #[test]
    fn missing_key_is_an_error_naming_it() {
        let (result, db) = handle(r#"{"status":"idle","X-Axis":0,"Y-Axis":0}"#);
        let err = result.unwrap_err();
        assert!(err.message().contains("spin"), "{err}");
        assert!(db.writes().is_empty());
    }

    #[test]
    fn wrong_type_is_an_error() {
        let (result, _) = handle(r#"{"status":"idle","spin":"fast","X-Axis":0,"Y-Axis":0}"#);
        assert!(result.is_err());
    }
}
