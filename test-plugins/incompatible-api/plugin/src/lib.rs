//! Test fixture, class `IncompatibleTest`: an ordinary plugin, except that it is built
//! against the fixture copy of mes-plugin-api in `../api`.

use mes_plugin_api::{export_plugin, standard::insert_cnc_data, Db, Error, Message, Plugin};

pub struct Incompatible;

impl Plugin for Incompatible {
    const CLASS_NAME: &'static str = "IncompatibleTest";

    fn new(_cnc_id: &str, _settings: Option<&str>) -> Result<Self, Error> {
        Ok(Incompatible)
    }

    fn handle(&mut self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
        insert_cnc_data(db, msg)
    }
}

export_plugin!(Incompatible);
