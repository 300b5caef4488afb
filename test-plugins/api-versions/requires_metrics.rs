//! Test fixture, class `ApiV1_1Metrics`: a plugin built against mes-plugin-api 1.1
//! that requires the host's metrics, counts every message by part program, logs one
//! record per message (to exercise the host's rate limit), stores a `cnc_data` row and
//! keeps `cnc_status` at the newest timestamp with `Db::upsert_newest`.

use mes_plugin_api::{
    export_plugin, features, log, metrics, standard::insert_cnc_data, Db, Error, Feature,
    Message, Plugin,
};

pub struct CountsMessages;

impl Plugin for CountsMessages {
    const CLASS_NAME: &'static str = "ApiV1_1Metrics";
    const REQUIRES: &'static [Feature] = &[features::METRICS];

    fn new(cnc_id: &str, _settings: Option<&str>) -> Result<Self, Error> {
        log::info!("instance created for {cnc_id}");
        Ok(CountsMessages)
    }

    fn handle(&mut self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
        metrics::count("messages", msg.part_program());
        log::info!("message at {} handled", msg.timestamp());
        log::debug!("below the default level: never shown at RUST_LOG=info");
        insert_cnc_data(db, msg)?;
        db.upsert_newest(
            "cnc_status",
            &["cnc_id", "status", "part_program", "timestamp"],
            vec![
                msg.cnc_id().into(),
                "running".into(),
                msg.part_program().into(),
                msg.timestamp().into(),
            ],
            &["timestamp"],
        )
    }
}

export_plugin!(CountsMessages);
