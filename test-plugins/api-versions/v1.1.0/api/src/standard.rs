//! Writes of the tables every plugin shares with the MES, so that each plugin fills
//! them the same way.

use crate::{Db, Error, Message, Value};

/// Inserts the message's row into `cnc_data`, the table the MES pages read:
/// `cnc_id`, `part_program`, `timestamp` (epoch seconds) and `json_data` (the payload
/// object as received).
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use mes_plugin_api::{standard::insert_cnc_data, testing::RecordingDb, Message};
///
/// let mut db = RecordingDb::new();
/// let msg = Message::new("sensor/CNC", "CNC001", "program_01", 1747379028, r#"{"spin":200}"#);
/// db.with_db(|db| insert_cnc_data(db, &msg)).unwrap();
/// assert_eq!(db.writes().len(), 1);
/// # }
/// ```
pub fn insert_cnc_data(db: &mut Db<'_>, msg: &Message<'_>) -> Result<(), Error> {
    db.insert(
        "cnc_data",
        &["cnc_id", "part_program", "timestamp", "json_data"],
        vec![
            msg.cnc_id().into(),
            msg.part_program().into(),
            msg.timestamp().into(),
            Value::json_text(msg.payload()),
        ],
    )
}
