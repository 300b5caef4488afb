//! Plugin for class `CNCTypeB`: controllers that report what `CNCTypeA` reports plus
//! feed rate, part count and active alarms.

use std::collections::BTreeSet;

use mes_plugin_api::{
    export_plugin, features, log, metrics, standard::insert_cnc_data, Db, Error, Feature, Message,
    Plugin, Value,
};
use serde::Deserialize;

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
    feed_rate: Option<f64>,
    part_count: Option<i64>,
    #[serde(default)]
    alarms: Vec<Alarm>,
}

#[derive(Deserialize)]
struct Alarm {
    code: AlarmCode,
    message: String,
}

/// Controllers of this type send alarm codes as numbers or as text ("E1002").
#[derive(Deserialize)]
#[serde(untagged)]
enum AlarmCode {
    Number(i64),
    Text(String),
}

impl AlarmCode {
    fn into_text(self) -> String {
        match self {
            AlarmCode::Number(n) => n.to_string(),
            AlarmCode::Text(t) => t,
        }
    }
}

/// One instance per machine mapped to `CNCTypeB`.
pub struct CncTypeB {
    /// Payload keys outside the schema already warned about, so that a controller
    /// sending one in every message costs one log line, not one per message.
    unknown_keys: BTreeSet<String>,
}

impl CncTypeB {
    fn parse(&mut self, msg: &Message<'_>) -> Result<Payload, Error> {
        let mut de = serde_json::Deserializer::from_str(msg.payload());
        let mut unknown = Vec::new();
        let payload: Payload = serde_ignored::deserialize(&mut de, |path| {
            unknown.push(path.to_string());
        })
        .map_err(|e| Error::new(format!("payload does not fit the plugin's schema: {e}")))?;
        for key in unknown {
            if !self.unknown_keys.contains(&key) {
                log::warn!(
                    "payload key {key:?} is not part of the CNCTypeB schema and is only kept in json_data; said once per machine"
                );
                self.unknown_keys.insert(key);
            }
        }
        Ok(payload)
    }
}

impl Plugin for CncTypeB {
    const CLASS_NAME: &'static str = "CNCTypeB";
    const REQUIRES: &'static [Feature] = &[features::UPSERT_NEWEST];

    fn new(_cnc_id: &str, _settings: Option<&str>) -> Result<Self, Error> {
        Ok(CncTypeB {
            unknown_keys: BTreeSet::new(),
        })
    }

    fn handle(&mut self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
        let p = self.parse(msg)?;
        insert_cnc_data(db, msg)?;
        // Ordered by the machine's own clock: a late or redelivered message, or one
        // committed by another collector of a shared subscription, never moves the
        // status back.
        db.upsert_newest(
            "cnc_status",
            &[
                "cnc_id",
                "status",
                "spin",
                "feed_rate",
                "part_count",
                "part_program",
                "timestamp",
            ],
            vec![
                msg.cnc_id().into(),
                p.status.into(),
                p.spin.into(),
                p.feed_rate.into(),
                p.part_count.into(),
                msg.part_program().into(),
                msg.timestamp().into(),
            ],
            &["timestamp"],
        )?;
        for alarm in p.alarms {
            let code = alarm.code.into_text();
            metrics::count("alarms", &code);
            db.insert(
                "cnc_alarms",
                &["cnc_id", "timestamp", "code", "message"],
                vec![
                    msg.cnc_id().into(),
                    msg.timestamp().into(),
                    Value::from(code),
                    alarm.message.into(),
                ],
            )?;
        }
        Ok(())
    }
}

export_plugin!(CncTypeB);

#[cfg(test)]
mod tests {
    use super::*;
    use mes_plugin_api::testing::{RecordingDb, Write};

    fn handle(payload: &str) -> (Result<(), Error>, RecordingDb) {
        let mut db = RecordingDb::new();
        let mut plugin = CncTypeB::new("CNC002", None).unwrap();
        let msg = Message::new("sensor/CNC", "CNC002", "program_02", 1747379030, payload);
        let result = db.handle(&mut plugin, &msg);
        (result, db)
    }

    #[test]
    fn sample_message_of_type_a_shape_is_accepted() {
        let payload = r#"{"status": "idle","spin":0,"X-Axis":0,"Y-Axis":0}"#;
        let (result, db) = handle(payload);
        result.unwrap();
        let writes = db.writes();
        assert_eq!(writes.len(), 2);
        assert!(matches!(&writes[0], Write::Insert { table, values, .. }
            if table == "cnc_data" && values[3] == Value::json_text(payload)));
        match &writes[1] {
            Write::UpsertNewest { table, values, .. } => {
                assert_eq!(table, "cnc_status");
                assert_eq!(values[3], Value::Null, "feed_rate absent");
                assert_eq!(values[4], Value::Null, "part_count absent");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn alarms_become_rows_with_text_codes() {
        let payload = r#"{"status":"error","spin":100,"X-Axis":25,"Y-Axis":75,
            "feed_rate":120.5,"part_count":42,
            "alarms":[{"code":1002,"message":"Spindle overload"},
                      {"code":"E77","message":"Door open"}]}"#;
        let (result, db) = handle(payload);
        result.unwrap();
        let alarms: Vec<_> = db
            .writes()
            .iter()
            .filter_map(|w| match w {
                Write::Insert { table, values, .. } if table == "cnc_alarms" => Some(values),
                _ => None,
            })
            .collect();
        assert_eq!(alarms.len(), 2);
        assert_eq!(alarms[0][2], Value::from("1002"));
        assert_eq!(alarms[0][3], Value::from("Spindle overload"));
        assert_eq!(alarms[1][2], Value::from("E77"));
        assert_eq!(
            mes_plugin_api::testing::counts(),
            vec![
                ("alarms".to_string(), "1002".to_string(), 1),
                ("alarms".to_string(), "E77".to_string(), 1)
            ]
        );
        match &db.writes()[1] {
            Write::UpsertNewest { values, .. } => {
                assert_eq!(values[3], Value::Float(120.5));
                assert_eq!(values[4], Value::Int(42));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_alarm_is_an_error_and_writes_nothing() {
        let (result, db) =
            handle(r#"{"status":"error","spin":1,"X-Axis":0,"Y-Axis":0,"alarms":[{"code":1}]}"#);
        assert!(result.unwrap_err().message().contains("message"));
        assert!(db.writes().is_empty());
    }
}
