//! Plugins survive host upgrades: a plugin built against every released
//! `mes-plugin-api` (frozen copies in test-plugins/api-versions) loads into this host
//! and stores its rows; a 1.1 plugin that uses nothing newer loads into a host built
//! against 1.0.0; one that requires a 1.1 feature is refused, naming the feature, by
//! both a 1.0 host and this host with the feature switched off; plugin logging and
//! metrics reach the host's log and `/metrics` through the real broker and database.
//!
//! The fixtures are built with `cargo build` into target/api-versions, shared by the
//! fixture workspaces, so the first run compiles their dependencies once (about half
//! a minute) and later runs reuse them.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use common::{
    build::{cargo_build, workspace_root, workspace_target},
    http::{get, metrics_addr},
    *,
};

const WAIT: Duration = Duration::from_secs(30);

struct Fixtures {
    /// The fixture plugin built against mes-plugin-api 1.0.0 and 1.1.0.
    v1_0: PathBuf,
    v1_1: PathBuf,
    /// A 1.1 plugin that requires the `metrics` feature.
    requires_metrics: PathBuf,
    /// A loader built against mes-plugin-api 1.0.0, as the 1.0 collector loaded.
    old_host: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static BUILT: OnceLock<Fixtures> = OnceLock::new();
    BUILT.get_or_init(|| {
        let started = Instant::now();
        let target = workspace_target().join("api-versions");
        for version in ["v1.0.0", "v1.1.0"] {
            let manifest = workspace_root()
                .join("test-plugins/api-versions")
                .join(version)
                .join("Cargo.toml");
            cargo_build(&manifest, &target, &[]);
        }
        eprintln!(
            "API version fixtures built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let lib = |name: &str| lib_in(&target.join("debug"), name);
        Fixtures {
            v1_0: lib("api_v1_0"),
            v1_1: lib("api_v1_1"),
            requires_metrics: lib("requires_metrics"),
            old_host: target.join("debug/old-host"),
        }
    })
}

fn message(cnc_id: &str, ts: u64, payload: &str) -> Vec<u8> {
    format!(
        r#"{{"cnc_id":"{cnc_id}","part_program":"program_{}","timestamp":"{ts}","payload":{payload}}}"#,
        ts % 3
    )
    .into_bytes()
}

const PAYLOAD: &str = r#"{"status":"running","spin":200,"X-Axis":30,"Y-Axis":80}"#;

#[test]
fn plugins_built_against_every_released_api_load_into_this_host_and_store_their_rows() {
    let fx = fixtures();
    let db = TestDb::new("apiversions");
    let classes = serde_json::json!([
        {"cnc_id": "CNC100", "class_name": "ApiV1_0"},
        {"cnc_id": "CNC110", "class_name": "ApiV1_1"},
        {"cnc_id": "CNC002", "class_name": "CNCTypeB"},
    ]);
    let setup = Setup::new(&db, "apiversions", &classes.to_string(), &["cnc-type-b"]);
    setup.install_lib(&fx.v1_0);
    setup.install_lib(&fx.v1_1);

    let out = mes_collector(&["plugins", setup.plugins_dir().to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    let row = |file: &str| {
        listing
            .lines()
            .find(|l| l.trim_start().starts_with(file))
            .unwrap_or_else(|| panic!("no row for {file}:\n{listing}"))
            .to_string()
    };
    assert!(
        row("libapi_v1_0.so").ends_with("ok, API 1.0.0"),
        "{listing}"
    );
    assert!(
        row("libapi_v1_1.so").ends_with("ok, API 1.1.0, can use log+metrics+upsert_newest"),
        "{listing}"
    );
    assert!(
        row("libcnc_type_b.so").contains(&format!("ok, API {}", mes_plugin_api::API_VERSION)),
        "{listing}"
    );

    let _collector = Collector::start(&setup);
    let per_machine = 20;
    let mut messages = Vec::new();
    for i in 0..per_machine {
        for cnc_id in ["CNC100", "CNC110", "CNC002"] {
            messages.push(message(cnc_id, 1_747_379_000 + i, PAYLOAD));
        }
    }
    setup.publish(&messages);
    let total = 3 * per_machine;
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", total, WAIT),
        total
    );
    for (cnc_id, class) in [("CNC100", "ApiV1_0"), ("CNC110", "ApiV1_1")] {
        assert_eq!(
            db.count(&format!(
                "SELECT COUNT(*) FROM cnc_data WHERE cnc_id = '{cnc_id}'"
            )),
            per_machine
        );
        let status: Vec<(String, i64)> = db.rows(&format!(
            "SELECT status, timestamp FROM cnc_status WHERE cnc_id = '{cnc_id}'"
        ));
        assert_eq!(
            status,
            vec![(class.to_string(), 1_747_379_000 + per_machine as i64 - 1)]
        );
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM dead_letters"), 0);
}

#[test]
fn a_plugin_that_requires_a_newer_feature_is_refused_naming_it_and_one_that_does_not_loads() {
    let fx = fixtures();

    // A host built against mes-plugin-api 1.0.0, loading the way the 1.0 collector did.
    let out = Command::new(&fx.old_host)
        .arg(&fx.v1_0)
        .arg(&fx.v1_1)
        .arg(plugin_lib("cnc-type-b"))
        .arg(&fx.requires_metrics)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let line = |lib: &Path| {
        said.lines()
            .find(|l| l.starts_with(&format!("{}:", lib.display())))
            .unwrap_or_else(|| panic!("no line for {}:\n{said}", lib.display()))
            .to_string()
    };
    assert!(
        line(&fx.v1_0).ends_with("loaded ApiV1_0; writes 2"),
        "{said}"
    );
    // Built against 1.1, using nothing newer than 1.0: runs on the 1.0 host.
    assert!(
        line(&fx.v1_1).ends_with("loaded ApiV1_1; writes 2"),
        "{said}"
    );
    // The shipped plugins require upsert_newest: a 1.0 host cannot keep cnc_status
    // ordered, so they refuse to run there rather than store statuses out of order.
    assert!(
        line(&plugin_lib("cnc-type-b")).contains(
            "refused: cnc_id CNC001 refused: this plugin requires the host feature `upsert_newest`"
        ),
        "{said}"
    );
    // A 1.0 host knows nothing of features: the plugin refuses to be created.
    let refused = line(&fx.requires_metrics);
    assert!(
        refused.contains(
            "refused: cnc_id CNC001 refused: this plugin requires the host feature `metrics` \
             (plugin API 1.1 or later), which this host (older than plugin API 1.1) does not offer"
        ),
        "{said}"
    );

    // This host with the feature switched off refuses it when it loads it.
    let db = TestDb::new("apirefuse");
    let classes = serde_json::json!([
        {"cnc_id": "CNC121", "class_name": "ApiV1_1Metrics"},
        {"cnc_id": "CNC110", "class_name": "ApiV1_1"},
    ]);
    let setup = Setup::new(&db, "apirefuse", &classes.to_string(), &[]);
    setup.install_lib(&fx.requires_metrics);
    setup.install_lib(&fx.v1_1);
    let out = mes_collector(&["check", "--config-dir", setup.path().to_str().unwrap()])
        .env("MES_COLLECTOR_WITHOUT_FEATURES", "metrics")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains(&format!(
            "librequires_metrics.so not loaded: built against mes-plugin-api 1.1.0, it requires \
             the host feature `metrics`, which needs a host with plugin API 1.1 or later; this \
             host has plugin API {} with `metrics` switched off",
            mes_plugin_api::API_VERSION
        )),
        "{report}"
    );
    assert!(
        report.contains("libapi_v1_1.so") && !report.contains("libapi_v1_1.so not loaded"),
        "{report}"
    );
    // With the feature on, the same configuration passes.
    let (ok, report) = check(&setup);
    assert!(ok, "{report}");
    let out = mes_collector(&["plugins", setup.plugins_dir().to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(
            "ApiV1_1Metrics  1.1.0    ok, API 1.1.0, can use log+metrics+upsert_newest, requires metrics"
        ),
        "{listing}"
    );
}

#[test]
fn plugin_log_records_and_counts_reach_the_hosts_log_and_metrics_bounded() {
    let fx = fixtures();
    let db = TestDb::new("apilog");
    let classes = serde_json::json!([
        {"cnc_id": "CNC121", "class_name": "ApiV1_1Metrics"},
        {"cnc_id": "CNC002", "class_name": "CNCTypeB"},
    ]);
    let setup = Setup::new(&db, "apilog", &classes.to_string(), &["cnc-type-b"]);
    setup.install_lib(&fx.requires_metrics);
    // A small log budget, so that a plugin logging per message meets it: bursts of
    // five seconds' worth (25 records), then 5 a second.
    setup.write_collector(&serde_json::json!({"plugins": {"log_records_per_second": 5}}));
    let collector = Collector::start_with(&setup, &["--log-format", "json"]);

    let n = 200u64;
    // Newest first: the last to commit is the oldest, which upsert_newest must not let
    // overwrite the status.
    let mut messages: Vec<Vec<u8>> = (0..n)
        .rev()
        .map(|i| message("CNC121", 1_747_379_000 + i, PAYLOAD))
        .collect();
    // CNCTypeB: alarms counted by code; an unknown key warned about once, not per message.
    for i in 0..3 {
        messages.push(message(
            "CNC002",
            1_747_379_100 + i,
            r#"{"status":"error","spin":1,"X-Axis":0,"Y-Axis":0,"Z-Axis":5,
                "alarms":[{"code":"E77","message":"Door open"},{"code":1002,"message":"Overload"}]}"#,
        ));
    }
    setup.publish(&messages);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", n + 3, WAIT),
        n + 3
    );

    let status: Vec<i64> = db.rows("SELECT timestamp FROM cnc_status WHERE cnc_id = 'CNC121'");
    assert_eq!(status, vec![1_747_379_000 + n as i64 - 1]);

    let log = collector.log();
    let plugin_lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["plugin"] == "ApiV1_1Metrics")
        .collect();
    let handled = plugin_lines
        .iter()
        .filter(|v| v["msg"].as_str().unwrap_or("").ends_with(" handled"))
        .count();
    assert!(
        handled >= 20 && handled < n as usize,
        "{handled} of {n} per-message records passed the rate limit:\n{log}"
    );
    let first = plugin_lines
        .iter()
        .find(|v| v["msg"].as_str().unwrap_or("").ends_with(" handled"))
        .unwrap();
    assert_eq!(first["cnc_id"], "CNC121", "{first}");
    assert_eq!(first["level"], "INFO", "{first}");
    assert_eq!(first["target"], "requires_metrics", "{first}");
    assert!(
        plugin_lines
            .iter()
            .any(|v| v["msg"] == "instance created for CNC121" && v["cnc_id"] == "CNC121"),
        "the constructor's record names its machine too:\n{log}"
    );
    assert!(!log.contains("below the default level"), "{log}");
    let unknown: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\\\"Z-Axis\\\" is not part of the CNCTypeB schema"))
        .collect();
    assert_eq!(unknown.len(), 1, "{log}");
    assert!(
        unknown[0].contains(r#""plugin":"CNCTypeB""#),
        "{}",
        unknown[0]
    );

    let (_, metrics) = get(&metrics_addr(&collector), "/metrics");
    let sample = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {prefix} in:\n{metrics}"))
    };
    let per_program: f64 = (0..3)
        .map(|p| {
            sample(&format!(
                r#"mes_plugin_events_total{{class="ApiV1_1Metrics",event="messages",label="program_{p}"}}"#
            ))
        })
        .sum();
    assert_eq!(per_program, n as f64);
    assert_eq!(
        sample(r#"mes_plugin_events_total{class="CNCTypeB",event="alarms",label="E77"}"#),
        3.0
    );
    assert_eq!(
        sample(r#"mes_plugin_events_total{class="CNCTypeB",event="alarms",label="1002"}"#),
        3.0
    );
    let dropped = sample(r#"mes_plugin_log_records_dropped_total{class="ApiV1_1Metrics"}"#);
    assert_eq!(
        dropped as usize + handled + 1,
        n as usize + 1,
        "every record either logged or counted as dropped:\n{metrics}"
    );
}

#[test]
fn the_frozen_copy_of_the_current_api_matches_plugin_api() {
    // plugin-api/ at version X must equal the frozen copy of X: a change to the API
    // is a new version (and, once released, a new frozen copy).
    let version = mes_plugin_api::API_VERSION;
    let frozen = workspace_root().join(format!("test-plugins/api-versions/v{version}/api/src"));
    let live = workspace_root().join("plugin-api/src");
    let mut names: Vec<_> = std::fs::read_dir(&live)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let a = std::fs::read_to_string(live.join(&name)).unwrap();
        let b = std::fs::read_to_string(frozen.join(&name)).unwrap_or_else(|_| {
            panic!(
                "{} is missing from {}: copy plugin-api/src there when releasing {version}",
                name.to_string_lossy(),
                frozen.display()
            )
        });
        assert!(
            a == b,
            "plugin-api/src/{} differs from the frozen copy of {version} in {}; bump the \
             version of plugin-api (and freeze the new one) instead of changing a released API",
            name.to_string_lossy(),
            frozen.display()
        );
    }
}
