//! Test fixture: one plugin source, built unchanged against every released
//! mes-plugin-api (`v<version>/plugin`), using only what 1.0.0 offers. Its class is
//! `ApiV<major>_<minor>` of the API it was built against, so that the builds of every
//! version load side by side into one host and each stores its own rows.

use mes_plugin_api::{export_plugin, standard::insert_cnc_data, Db, Error, Message, Plugin};

pub struct Versioned;

impl Plugin for Versioned {
    const CLASS_NAME: &'static str = concat!(
        "ApiV",
        env!("CARGO_PKG_VERSION_MAJOR"),
        "_",
        env!("CARGO_PKG_VERSION_MINOR")
    );

    fn new(_cnc_id: &str, _settings: Option<&str>) -> Result<Self, Error> {
        Ok(Versioned)
    }

    fn handle(&mut self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
        insert_cnc_data(db, msg)?;
        db.upsert(
            "cnc_status",
            &["cnc_id", "status", "part_program", "timestamp"],
            vec![
                msg.cnc_id().into(),
                Self::CLASS_NAME.into(),
                msg.part_program().into(),
                msg.timestamp().into(),
            ],
        )
    }
}

export_plugin!(Versioned);
