//! The cost of `plugins.isolate`: one message through the dispatcher's path
//! (`MessageHandler::handle`: limits, envelope parse, routing, plugin call, recorder)
//! with the plugin in process, and with it in a runner process (the collector binary
//! of this build, `plugin-runner` mode). The shipped `libcnc_type_a.so` /
//! `libcnc_type_b.so` from the build's target directory.
//!
//! `cargo bench -p mes-collector --bench isolation`; one iteration = one message.
//! After the criterion groups it prints `FIGURES:` lines from a plain loop of
//! `MES_BENCH_ISOLATION_N` messages (default 20000) per mode: wall µs per message and
//! CPU seconds per 100,000 messages, the collector's side (this process) and the
//! runner's (a reaped child, so `RUSAGE_CHILDREN`) apart.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mes_collector::{
    config::ClassMapping,
    dispatch::handler::MessageHandler,
    envelope::Limits,
    isolation::Isolation,
    plugins::{load_file, trust::PluginPolicy, Router},
    sink::batch::Batch,
};

const TOPIC: &str = "sensor/CNC";
const BATCH: usize = 500;

const TYPE_A: &str = r#"{"cnc_id":"SIM-A-0007","part_program":"program_12","timestamp":"1764176400","payload":{"status":"running","spin":5412,"X-Axis":231.875,"Y-Axis":48.302,"seq":123456,"sent_at_us":1764176400123456}}"#;
const TYPE_B: &str = r#"{"cnc_id":"SIM-B-0008","part_program":"program_03","timestamp":"1764176400","payload":{"status":"running","spin":9800,"X-Axis":12.5,"Y-Axis":407.111,"feed_rate":1250.4,"part_count":381,"alarms":[{"code":"EX1012","message":"Coolant level low"}],"seq":123457,"sent_at_us":1764176400123789}}"#;

/// target/<profile>, where this bench's plugins and collector binary are.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<bench>")
        .to_path_buf()
}

/// A router for both shipped classes, both isolated or both in process.
fn router(isolated: bool) -> Router {
    let mut plugins = BTreeMap::new();
    for lib in ["libcnc_type_a.so", "libcnc_type_b.so"] {
        let path = profile_dir().join(lib);
        let p = load_file(&path).unwrap_or_else(|e| {
            panic!("{e}: build the plugins first (`cargo build --workspace`, with --release for `cargo bench`)")
        });
        plugins.insert(p.info.class_name.clone(), p);
    }
    let classes: BTreeMap<String, ClassMapping> =
        [("SIM-A-0007", "CNCTypeA"), ("SIM-B-0008", "CNCTypeB")]
            .into_iter()
            .map(|(id, class)| {
                (
                    id.to_string(),
                    ClassMapping {
                        cnc_id: id.into(),
                        class_name: class.into(),
                        settings: None,
                    },
                )
            })
            .collect();
    let isolation = if isolated {
        let policy = PluginPolicy {
            isolate: vec!["CNCTypeA".into(), "CNCTypeB".into()],
            allow_insecure_permissions: true,
            ..PluginPolicy::default()
        };
        Isolation::new(&policy, &classes, &plugins)
            .expect("isolation")
            .map(|i| i.with_runner_exe(PathBuf::from(env!("CARGO_BIN_EXE_mes-collector"))))
    } else {
        None
    };
    Router::new(classes, plugins).with_isolation(isolation)
}

struct Host {
    handler: MessageHandler,
    batch: Batch,
}

impl Host {
    fn new(isolated: bool) -> Host {
        let mut h = Host {
            handler: MessageHandler::new(router(isolated), Limits::default()),
            batch: Batch::default(),
        };
        // The first message of each machine starts the runner and makes the instance.
        for raw in [TYPE_A, TYPE_B] {
            h.one(raw);
            let e = h.batch.entries.last().expect("one entry");
            assert!(
                e.dead.is_none() && e.end_write > e.first_write,
                "isolated={isolated}: {:?}",
                e.dead
            );
        }
        h
    }

    fn one(&mut self, raw: &str) {
        if self.batch.len() >= BATCH {
            self.batch.clear();
        }
        self.handler
            .handle(TOPIC, raw.as_bytes().to_vec(), &mut self.batch);
    }
}

fn isolation(c: &mut Criterion) {
    let mut group = c.benchmark_group("isolation");
    group.throughput(Throughput::Elements(1));
    for (mode, isolated) in [("in_process", false), ("isolated", true)] {
        let mut host = Host::new(isolated);
        for (name, raw) in [("type_a", TYPE_A), ("type_b", TYPE_B)] {
            group.bench_function(format!("{name}/{mode}"), |b| b.iter(|| host.one(raw)));
        }
    }
    group.finish();
    figures();
}

/// CPU seconds (user + system) of this process, or of its reaped children.
fn cpu_secs(who: i32) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn figures() {
    let n: usize = std::env::var("MES_BENCH_ISOLATION_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    for (mode, isolated) in [("in_process", false), ("isolated", true)] {
        let mut host = Host::new(isolated);
        let (self0, children0) = (cpu_secs(libc::RUSAGE_SELF), cpu_secs(libc::RUSAGE_CHILDREN));
        let start = Instant::now();
        for i in 0..n {
            host.one(if i % 2 == 0 { TYPE_A } else { TYPE_B });
        }
        let wall = start.elapsed();
        let own = cpu_secs(libc::RUSAGE_SELF) - self0;
        // Dropping the router closes the runners' pipes and reaps them, which adds
        // their CPU time to RUSAGE_CHILDREN.
        drop(host);
        std::thread::sleep(Duration::from_millis(50));
        let runners = cpu_secs(libc::RUSAGE_CHILDREN) - children0;
        let per100k = |s: f64| s * 100_000.0 / n as f64;
        println!(
            "FIGURES: {mode}: {n} messages (CNCTypeA and B alternating), {:.2} µs per message (wall), CPU-s per 100k: {:.2} collector + {:.2} runners = {:.2}",
            wall.as_secs_f64() * 1e6 / n as f64,
            per100k(own),
            per100k(runners),
            per100k(own + runners)
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = isolation
}
criterion_main!(benches);
