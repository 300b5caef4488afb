//! Test fixture, class `FaultyTest`: misbehaves on request so that the host's handling
//! of plugin failures can be tested. The payload's `action` says how:
//! `"panic"`, `"error"`, `"bad_identifier"` (a column name that is not an identifier),
//! `"bad_sql"` (a row MySQL refuses: unknown table), anything else stores a `cnc_data`
//! row like the shipped plugins do. It refuses to be created for a cnc_id containing
//! `REFUSE`, or with `"bad": true` in its settings.

use mes_plugin_api::{export_plugin, standard::insert_cnc_data, Db, Error, Message, Plugin};

pub struct Faulty;

impl Plugin for Faulty {
    const CLASS_NAME: &'static str = "FaultyTest";

    fn new(cnc_id: &str, settings: Option<&str>) -> Result<Self, Error> {
        if cnc_id.contains("REFUSE") {
            return Err(Error::new(format!("refusing machine {cnc_id}")));
        }
        if let Some(text) = settings {
            let settings: serde_json::Value = serde_json::from_str(text)?;
            if settings["bad"] == serde_json::Value::Bool(true) {
                return Err(Error::new(
                    "settings key `bad` is true, which FaultyTest refuses; remove it or set it to false",
                ));
            }
        }
        Ok(Faulty)
    }

    fn handle(&mut self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
        let payload: serde_json::Value = msg.payload_as()?;
        match payload["action"].as_str().unwrap_or("store") {
            "panic" => panic!("asked to panic by {}", msg.cnc_id()),
            "error" => Err(Error::new("asked to fail")),
            "bad_identifier" => db.insert(
                "cnc_data",
                &["cnc_id`; DROP TABLE cnc_data; --"],
                vec![1.into()],
            ),
            "bad_sql" => db.insert("no_such_table", &["x"], vec![1.into()]),
            _ => insert_cnc_data(db, msg),
        }
    }
}

export_plugin!(Faulty);
