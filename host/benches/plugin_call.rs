//! One plugin call across the ABI, as the dispatcher makes it: the shipped
//! `libcnc_type_a.so` / `libcnc_type_b.so` loaded with the host's loader, an instance
//! per machine, and `handle(&message, db)` with the host's batch recorder as `db`.
//! `mapped_a` is CNCTypeA re-expressed as a mapping file
//! (plugins/cnc-mapping/examples/CNCTypeA.json) run by `libcnc_mapping.so`, for the
//! cost of a mapping beside the compiled plugin it replaces.
//!
//! The libraries come from the build: `cargo build --release --workspace` (or a debug
//! build) first; `MES_BENCH_PLUGIN_DIR` points elsewhere.
//! `cargo bench -p mes-collector --bench plugin_call`; one iteration = one message.

use std::{
    hint::black_box,
    path::{Path, PathBuf},
};

use abi_stable::{sabi_trait::TD_Opaque, std_types::RResult};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mes_collector::{
    config::ClassMapping,
    envelope, mappings,
    plugins::{load_file, new_instance, Instance},
    sink::batch::{Batch, Shapes},
};
use mes_plugin_api::{Message, RawDatabase_TO};

const TOPIC: &str = "sensor/CNC";
/// The host commits (and clears) its batch every this many messages by default.
const BATCH: usize = 500;

const TYPE_A: &str = r#"{"cnc_id":"SIM-A-0007","part_program":"program_12","timestamp":"1764176400","payload":{"status":"running","spin":5412,"X-Axis":231.875,"Y-Axis":48.302,"seq":123456,"sent_at_us":1764176400123456}}"#;
const TYPE_B: &str = r#"{"cnc_id":"SIM-B-0008","part_program":"program_03","timestamp":"1764176400","payload":{"status":"running","spin":9800,"X-Axis":12.5,"Y-Axis":407.111,"feed_rate":1250.4,"part_count":381,"alarms":[{"code":"EX1012","message":"Coolant level low"}],"seq":123457,"sent_at_us":1764176400123789}}"#;

/// The plugin library of that crate, from MES_BENCH_PLUGIN_DIR or the target
/// directory this bench was built in (then release, then debug).
fn plugin_path(crate_name: &str) -> PathBuf {
    let file = format!(
        "{}{}.{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    );
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("MES_BENCH_PLUGIN_DIR") {
        dirs.push(d.into());
    }
    // target/<profile>/deps/<bench> → target/<profile>, target
    let exe = std::env::current_exe().expect("current exe");
    if let Some(profile) = exe.parent().and_then(Path::parent) {
        dirs.push(profile.to_path_buf());
        if let Some(target) = profile.parent() {
            dirs.push(target.join("release"));
            dirs.push(target.join("debug"));
        }
    }
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{file} not found in {dirs:?}: build the plugins first \
                 (`cargo build --release --workspace`) or set MES_BENCH_PLUGIN_DIR"
            )
        })
}

fn instance(crate_name: &str, cnc_id: &str, class: &str) -> Instance {
    let path = plugin_path(crate_name);
    let plugin = load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(plugin.info.class_name, class, "{}", path.display());
    eprintln!(
        "plugin_call: {} {} from {}",
        plugin.info.class_name,
        plugin.info.version,
        path.display()
    );
    let mapping = ClassMapping {
        cnc_id: cnc_id.into(),
        class_name: class.into(),
        settings: None,
    };
    new_instance(&plugin, cnc_id, &mapping).expect("instance")
}

/// An instance of CNCTypeA's mapping on the mapping plugin, made as the collector
/// makes it for a machine of a mapped class.
fn mapped_instance(cnc_id: &str) -> Instance {
    let path = plugin_path("cnc-mapping");
    let engine = load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/cnc-mapping/examples/CNCTypeA.json");
    let mapping = mappings::load_file(&file).unwrap_or_else(|e| panic!("{e}"));
    let plugin = mappings::backed_by(&engine, &mapping);
    eprintln!(
        "plugin_call: {} on {} {} from {}",
        file.display(),
        engine.info.class_name,
        engine.info.version,
        path.display()
    );
    let class = ClassMapping {
        cnc_id: cnc_id.into(),
        class_name: mapping.class.clone(),
        settings: Some(mappings::engine_settings(&mapping, None)),
    };
    new_instance(&plugin, cnc_id, &class).expect("instance")
}

/// What the dispatcher does per message, minus routing and logging: record the
/// message's writes through the plugin into the batch; the batch is cleared every
/// `BATCH` messages as a commit would.
struct Host {
    batch: Batch,
    shapes: Shapes,
}

impl Host {
    fn new() -> Self {
        Host {
            batch: Batch::default(),
            shapes: Shapes::default(),
        }
    }

    fn call(&mut self, instance: &mut Instance, message: &Message<'_>) {
        if self.batch.len() >= BATCH {
            self.batch.clear();
        }
        self.batch.begin(TOPIC);
        let mut recorder = self.batch.recorder(&mut self.shapes);
        let db = RawDatabase_TO::from_ptr(&mut recorder, TD_Opaque);
        match instance.plugin.handle(black_box(message), db) {
            RResult::ROk(()) => {}
            RResult::RErr(e) => panic!("plugin failed: {e}"),
        }
        self.batch.end(Vec::new(), None);
    }
}

fn plugin_call(c: &mut Criterion) {
    let mut group = c.benchmark_group("plugin_call");
    group.throughput(Throughput::Elements(1));
    for (name, crate_name, class, raw) in [
        ("type_a", "cnc-type-a", "CNCTypeA", TYPE_A),
        ("mapped_a", "cnc-mapping", "CNCTypeA", TYPE_A),
        ("type_b", "cnc-type-b", "CNCTypeB", TYPE_B),
    ] {
        let env = envelope::parse(raw.as_bytes()).expect("valid envelope");
        let mut inst = if crate_name == "cnc-mapping" {
            mapped_instance(&env.cnc_id)
        } else {
            instance(crate_name, &env.cnc_id, class)
        };
        let message = Message::new(
            TOPIC,
            &env.cnc_id,
            &env.part_program,
            env.timestamp,
            env.payload(),
        );
        let mut host = Host::new();
        host.call(&mut inst, &message);
        assert!(
            !host.batch.writes.is_empty(),
            "{name}: the plugin wrote nothing"
        );

        // The call alone: the message is already parsed.
        group.bench_function(format!("{name}/handle"), |b| {
            b.iter(|| host.call(&mut inst, &message))
        });

        // Envelope parse + call, as the dispatcher does for every message.
        let mut host = Host::new();
        group.bench_function(format!("{name}/parse_and_handle"), |b| {
            b.iter(|| {
                let env = envelope::parse(black_box(raw.as_bytes())).expect("valid envelope");
                let message = Message::new(
                    TOPIC,
                    &env.cnc_id,
                    &env.part_program,
                    env.timestamp,
                    env.payload(),
                );
                host.call(&mut inst, &message);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, plugin_call);
criterion_main!(benches);
