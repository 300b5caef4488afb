//! Instructions per plugin call, for machines too noisy for timings: runs N calls of
//! one shipped plugin (as `benches/plugin_call.rs` makes them) under a counter.
//!
//! ```sh
//! cargo build --release --workspace --examples
//! for p in type_a mapped_a type_b; do for n in 0 20000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/plugin_cost $p $n 2>&1 | grep Collected
//! done; done
//! ```
//!
//! (instructions at 20000 − at 0) / 20000 = instructions per message.

use std::path::Path;

use abi_stable::{sabi_trait::TD_Opaque, std_types::RResult};
use mes_collector::{
    config::ClassMapping,
    envelope, mappings,
    plugins::{load_file, new_instance},
    sink::batch::{Batch, Shapes},
};
use mes_plugin_api::{Message, RawDatabase_TO};

const TYPE_A: &str = r#"{"cnc_id":"SIM-A-0007","part_program":"program_12","timestamp":"1764176400","payload":{"status":"running","spin":5412,"X-Axis":231.875,"Y-Axis":48.302,"seq":123456,"sent_at_us":1764176400123456}}"#;
const TYPE_B: &str = r#"{"cnc_id":"SIM-B-0008","part_program":"program_03","timestamp":"1764176400","payload":{"status":"running","spin":9800,"X-Axis":12.5,"Y-Axis":407.111,"feed_rate":1250.4,"part_count":381,"alarms":[{"code":"EX1012","message":"Coolant level low"}],"seq":123457,"sent_at_us":1764176400123789}}"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (which, n) = match &args[1..] {
        [w, n] => (w.as_str(), n.parse::<usize>().expect("a count")),
        _ => panic!("usage: plugin_cost type_a|mapped_a|type_b N"),
    };
    let dir = std::env::current_exe().unwrap();
    let dir = dir.parent().unwrap().parent().unwrap(); // target/<profile>
    let lib = |name: &str| dir.join(format!("lib{name}.so"));
    let raw = if which == "type_b" { TYPE_B } else { TYPE_A };
    let env = envelope::parse(raw.as_bytes()).expect("valid envelope");
    let (plugin, settings) = match which {
        "mapped_a" => {
            let engine = load_file(&lib("cnc_mapping")).unwrap();
            let file = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../plugins/cnc-mapping/examples/CNCTypeA.json");
            let m = mappings::load_file(&file).unwrap_or_else(|e| panic!("{e}"));
            (
                mappings::backed_by(&engine, &m),
                Some(mappings::engine_settings(&m, None)),
            )
        }
        "type_a" => (load_file(&lib("cnc_type_a")).unwrap(), None),
        "type_b" => (load_file(&lib("cnc_type_b")).unwrap(), None),
        other => panic!("unknown plugin {other}"),
    };
    let class = ClassMapping {
        cnc_id: env.cnc_id.to_string(),
        class_name: plugin.info.class_name.clone(),
        settings,
    };
    let mut inst = new_instance(&plugin, &env.cnc_id, &class).expect("instance");
    let message = Message::new(
        "sensor/CNC",
        &env.cnc_id,
        &env.part_program,
        env.timestamp,
        env.payload(),
    );
    let (mut batch, mut shapes) = (Batch::default(), Shapes::default());
    for i in 0..n {
        // As the dispatcher: a batch committed (cleared) every 500 messages.
        if i % 500 == 0 {
            batch.clear();
        }
        batch.begin("sensor/CNC");
        let mut recorder = batch.recorder(&mut shapes);
        let db = RawDatabase_TO::from_ptr(&mut recorder, TD_Opaque);
        if let RResult::RErr(e) = inst.plugin.handle(&message, db) {
            panic!("{e}");
        }
        batch.end(Vec::new(), None);
    }
}
