//! Classes defined by mapping files (config/mappings/<Class>.json), run by the shipped
//! mapping plugin, against the real broker and database: a made-up controller mapped
//! to rows in new tables; a broken mapping refused at start with its file and JSON
//! path while the other classes run; replay of a mapping; new-mapping from a recorded
//! message through check to stored rows; and CNCTypeA re-expressed as a mapping,
//! storing exactly the rows the compiled plugin stores.
//!
//! Needs the plugin libraries of `cargo build --workspace` (scripts/test.sh builds them).

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{build::text, *};
use mysql::prelude::Queryable;

const WAIT: Duration = Duration::from_secs(30);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/cnc-mapping/examples")
        .join(name)
}

/// Whether `check` lists the mapping file as loaded.
fn listed_ok(report: &str, file: &str) -> bool {
    report
        .lines()
        .any(|l| l.trim_start().starts_with(file) && l.trim_end().ends_with("  ok"))
}

fn add_mapping(setup: &Setup, class: &str, text: &str) -> PathBuf {
    let dir = setup.path().join("mappings");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{class}.json"));
    fs::write(&file, text).unwrap();
    file
}

fn envelope(cnc_id: &str, ts: i64, payload: &str) -> String {
    format!(
        r#"{{"cnc_id":"{cnc_id}","part_program":"prog_{ts}","timestamp":{ts},"payload":{payload}}}"#
    )
}

/// The tables of plugins/cnc-mapping/examples/Lathe.json, as its README gives them.
const LATHE_TABLES: [&str; 2] = [
    "CREATE TABLE lathe_status (cnc_id VARCHAR(64) NOT NULL PRIMARY KEY, timestamp BIGINT NOT NULL, \
     state VARCHAR(32) NULL, spindle_rpm BIGINT NULL, spindle_load DOUBLE NULL, x_mm DOUBLE NULL, \
     door_open BOOLEAN NULL, line VARCHAR(32) NULL)",
    "CREATE TABLE lathe_tools (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
     cnc_id VARCHAR(64) NOT NULL, timestamp BIGINT NOT NULL, slot BIGINT NOT NULL, wear_mm DOUBLE NULL)",
];

#[test]
fn a_made_up_controller_is_mapped_to_rows_in_new_tables() {
    let db = TestDb::new("map_lathe");
    for t in LATHE_TABLES {
        db.conn().query_drop(t).unwrap();
    }
    let setup = Setup::new(
        &db,
        "map_lathe",
        r#"[{"cnc_id":"LATHE1","class_name":"Lathe","settings":{"line":"L2"}},
            {"cnc_id":"LATHE2","class_name":"Lathe"}]"#,
        &["cnc-mapping"],
    );
    add_mapping(
        &setup,
        "Lathe",
        &fs::read_to_string(example("Lathe.json")).unwrap(),
    );
    let (ok, report) = check(&setup);
    assert!(ok, "{report}");
    assert!(listed_ok(&report, "Lathe.json"), "{report}");

    let mut collector = Collector::start(&setup);
    let msgs = [
        envelope(
            "LATHE1",
            1000,
            r#"{"ctrl":{"state":1,"mode":"auto"},"spindle":{"rpm":1200,"load":41.5},"pos":{"x_um":120500},
               "door_open":false,"tools":[{"slot":1,"wear_um":25},{"slot":4,"wear_um":130.5}]}"#,
        ),
        envelope(
            "LATHE2",
            1001,
            r#"{"ctrl":{"state":3},"spindle":{"rpm":0},"pos":{"x_um":-2000},"door_open":true}"#,
        ),
        // Older than the first: upsert_newest keeps the newer row of LATHE1.
        envelope(
            "LATHE1",
            900,
            r#"{"ctrl":{"state":2},"spindle":{"rpm":5},"pos":{"x_um":1},"tools":[]}"#,
        ),
        // A dead letter naming the mapping, the JSON path and the payload pointer.
        envelope(
            "LATHE2",
            1002,
            r#"{"ctrl":{"state":1},"spindle":{"rpm":"fast"},"pos":{"x_um":0}}"#,
        ),
    ];
    setup.publish(&msgs);
    assert_eq!(db.wait_count("SELECT COUNT(*) FROM cnc_data", 3, WAIT), 3);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM dead_letters", 1, WAIT),
        1
    );
    collector.stop();

    type Status = (
        String,
        i64,
        Option<String>,
        Option<i64>,
        Option<f64>,
        Option<f64>,
        Option<i64>,
        Option<String>,
    );
    let status: Vec<Status> = db.rows(
        "SELECT cnc_id, timestamp, state, spindle_rpm, spindle_load, ROUND(x_mm, 6), door_open, line FROM lathe_status ORDER BY cnc_id",
    );
    assert_eq!(
        status,
        [
            (
                "LATHE1".into(),
                1000,
                Some("running".into()),
                Some(1200),
                Some(41.5),
                Some(120.5),
                Some(0),
                Some("L2".into())
            ),
            (
                "LATHE2".into(),
                1001,
                Some("setup".into()),
                Some(0),
                None,
                Some(-2.0),
                Some(1),
                None
            ),
        ]
    );
    let tools: Vec<(String, i64, i64, Option<f64>)> =
        db.rows("SELECT cnc_id, timestamp, slot, ROUND(wear_mm, 6) FROM lathe_tools ORDER BY id");
    assert_eq!(
        tools,
        [
            ("LATHE1".into(), 1000, 1, Some(0.025)),
            ("LATHE1".into(), 1000, 4, Some(0.1305)),
        ]
    );
    let dead: Vec<(String, String, String)> =
        db.rows("SELECT reason, plugin_class, detail FROM dead_letters");
    assert_eq!(dead[0].0, "plugin_error");
    assert_eq!(dead[0].1, "Lathe");
    assert!(
        dead[0].2.contains("Lathe.json (class Lathe): rows[1].columns.spindle_rpm: /spindle/rpm: expected an integer, found text \"fast\""),
        "{}",
        dead[0].2
    );
}

#[test]
fn a_broken_mapping_is_refused_at_start_naming_file_and_path_and_the_rest_runs() {
    let db = TestDb::new("map_broken");
    let setup = Setup::new(
        &db,
        "map_broken",
        r#"[{"cnc_id":"CNC001","class_name":"CNCTypeA"},
            {"cnc_id":"B1","class_name":"Broken"},
            {"cnc_id":"G1","class_name":"Good"}]"#,
        &["cnc-type-a", "cnc-mapping"],
    );
    let type_a = fs::read_to_string(example("CNCTypeA.json")).unwrap();
    add_mapping(&setup, "Good", &type_a);
    let broken = type_a.replace(r#""type": "float"}"#, r#""type": "flaot"}"#);
    assert_ne!(broken, type_a);
    let broken_file = add_mapping(&setup, "Broken", &broken);
    let want = format!(
        "{}: rows[1].columns.spin.type: unknown type \"flaot\"; expected one of text, integer, float, boolean, json",
        broken_file.display()
    );

    let (ok, report) = check(&setup);
    assert!(!ok, "{report}");
    assert!(report.contains(&format!("PROBLEM: {want}")), "{report}");
    assert!(
        report.contains(&format!(
            "cnc_id B1 is mapped to class \"Broken\", whose mapping {} was refused (above)",
            broken_file.display()
        )),
        "{report}"
    );
    assert!(listed_ok(&report, "Good.json"), "{report}");

    let mut collector = Collector::start(&setup);
    assert!(collector.log().contains(&want), "{}", collector.log());
    let msgs = [
        SAMPLES[0].to_string(),
        SAMPLES[0].replace("CNC001", "B1"),
        SAMPLES[0].replace("CNC001", "G1"),
    ];
    setup.publish(&msgs);
    assert_eq!(db.wait_count("SELECT COUNT(*) FROM cnc_data", 2, WAIT), 2);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM dead_letters", 1, WAIT),
        1
    );
    collector.stop();
    let stored: Vec<String> = db.rows("SELECT cnc_id FROM cnc_data ORDER BY cnc_id");
    assert_eq!(stored, ["CNC001", "G1"]);
    let dead: Vec<(String, String)> = db.rows("SELECT reason, cnc_id FROM dead_letters");
    assert_eq!(dead, [("no_plugin".to_string(), "B1".to_string())]);

    // A class defined by a mapping file and by a plugin: the collector does not start.
    add_mapping(&setup, "CNCTypeA", &type_a);
    let (code, log) = run_to_exit(&setup, WAIT);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("class \"CNCTypeA\" is defined twice: by mapping file"),
        "{log}"
    );
}

#[test]
fn replay_dry_run_shows_the_rows_of_a_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recorded.jsonl");
    let lines = [
        envelope(
            "LATHE1",
            1000,
            r#"{"ctrl":{"state":0},"spindle":{"rpm":10},"pos":{"x_um":1500},"tools":[{"slot":2,"wear_um":4}]}"#,
        ),
        envelope("LATHE1", 1001, r#"{"ctrl":{"state":1}}"#),
    ];
    fs::write(&file, lines.join("\n")).unwrap();
    let engine = plugin_lib("cnc-mapping");
    let lathe = example("Lathe.json");
    let out = mes_collector(&[
        "replay",
        "--mapping",
        lathe.to_str().unwrap(),
        "--plugin",
        engine.to_str().unwrap(),
        "--cnc-id",
        "LATHE1",
        "--settings",
        r#"{"line":"L7"}"#,
        file.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let payload = lines[0].split_once(r#""payload":"#).unwrap().1;
    let payload = &payload[..payload.len() - 1];
    let want = format!(
        "INSERT cnc_data (cnc_id, part_program, timestamp, json_data) VALUES ('LATHE1', 'prog_1000', 1000, json'{payload}')\n\
         UPSERT NEWEST BY (timestamp) lathe_status (cnc_id, timestamp, state, spindle_rpm, spindle_load, x_mm, door_open, line) VALUES ('LATHE1', 1000, 'idle', 10, NULL, 1.5, 0, 'L7')\n\
         INSERT lathe_tools (cnc_id, timestamp, slot, wear_mm) VALUES ('LATHE1', 1000, 2, 0.004)\n\
         DEAD LETTER line 2 (plugin_error) cnc_id=LATHE1 plugin=Lathe 1.0.0: mapping {} (class Lathe): rows[1].columns.spindle_rpm: /spindle/rpm is missing from the payload\n",
        lathe.display()
    );
    assert_eq!(stdout, want, "{}", text(&out));

    // A broken mapping is refused before any message, naming the file and the path.
    let broken = dir.path().join("Broken.json");
    fs::write(
        &broken,
        r#"{"rows":[{"table":"t","columns":{"a":{"pointer":"/a","typ":"text"}}}]}"#,
    )
    .unwrap();
    let out = mes_collector(&[
        "replay",
        "--mapping",
        broken.to_str().unwrap(),
        "--plugin",
        engine.to_str().unwrap(),
        "--cnc-id",
        "X",
        file.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: rows[0].columns.a.typ: unknown field `typ`",
            broken.display()
        )),
        "{stderr}"
    );
}

#[test]
fn new_mapping_from_a_recorded_message_checks_and_stores_rows() {
    let db = TestDb::new("map_new");
    let setup = Setup::new(
        &db,
        "map_new",
        r#"[{"cnc_id":"PRESS1","class_name":"AcmePress"}]"#,
        &["cnc-mapping"],
    );
    let sample = envelope(
        "PRESS1",
        5000,
        // One line: `cnc-sim record` skips messages with line breaks.
        r#"{"state":"run","force_kN":412.5,"strokes":12001,"die":{"id":"D-17","temp_C":61},"alarms":[{"code":"A12","level":2}],"flags":[1,0]}"#,
    );
    let recorded = setup.path().join("recorded.jsonl");
    record(std::slice::from_ref(&sample), &recorded);

    let mappings = setup.path().join("mappings");
    let out = mes_collector(&[
        "new-mapping",
        "AcmePress",
        "--from",
        recorded.to_str().unwrap(),
        "--dir",
        mappings.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("CREATE TABLE IF NOT EXISTS `acme_press_values`")
            && printed.contains("CREATE TABLE IF NOT EXISTS `acme_press_alarms`"),
        "{printed}"
    );

    // Before the tables exist, check names them.
    let (ok, report) = check(&setup);
    assert!(!ok, "{report}");
    assert!(
        report.contains(
            "AcmePress.json: rows[1].table: table `acme_press_values` is not in the database"
        ),
        "{report}"
    );
    let sql = fs::read_to_string(mappings.join("AcmePress.sql")).unwrap();
    let mut conn = db.conn();
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        conn.query_drop(stmt)
            .unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
    let (ok, report) = check(&setup);
    assert!(ok, "{report}");

    let mut collector = Collector::start(&setup);
    setup.publish(&[sample.as_bytes()]);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM acme_press_alarms", 1, WAIT),
        1
    );
    collector.stop();
    type Values = (String, i64, String, f64, i64, String, i64, String);
    let values: Vec<Values> = db.rows(
        "SELECT cnc_id, timestamp, state, force_kn, strokes, die_id, die_temp_c, CAST(flags AS CHAR) FROM acme_press_values",
    );
    assert_eq!(
        values,
        [(
            "PRESS1".into(),
            5000,
            "run".into(),
            412.5,
            12001,
            "D-17".into(),
            61,
            "[1,0]".into()
        )]
    );
    let alarms: Vec<(String, String, i64)> =
        db.rows("SELECT cnc_id, code, level FROM acme_press_alarms");
    assert_eq!(alarms, [("PRESS1".into(), "A12".into(), 2)]);
    assert_eq!(db.count("SELECT COUNT(*) FROM cnc_data"), 1);
    assert_eq!(db.count("SELECT COUNT(*) FROM dead_letters"), 0);
}

/// Payloads of CNCTypeA's shape and some that are not: different spins (integer,
/// float, exponent), extra keys, escapes and non-ASCII text, odd spacing, and
/// messages both must refuse.
fn type_a_payloads() -> Vec<String> {
    let statuses = [
        "running",
        "idle",
        "error",
        "setup",
        "caf\\u00e9 \\\"x\\\"",
        "Ω",
    ];
    let mut out = Vec::new();
    for i in 0..48 {
        let s = statuses[i % statuses.len()];
        let p = match i % 8 {
            0 => format!(r#"{{"status":"{s}","spin":{i},"X-Axis":1,"Y-Axis":2}}"#),
            1 => format!(
                r#"{{ "status" : "{s}" , "spin" : {i}.25 , "X-Axis" : -1.5e2 , "Y-Axis" : 0 }}"#
            ),
            2 => format!(
                r#"{{"Y-Axis":3,"X-Axis":4,"spin":{i}e1,"status":"{s}","seq":{i},"nested":{{"a":[1,{{"b":null}}]}}}}"#
            ),
            3 => format!(
                r#"{{"status":"{s}","spin":{i},"X-Axis":1,"Y-Axis":2,"extra":"\u00fcber"}}"#
            ),
            // Refused by both: missing spin, wrong type, null, missing axis.
            4 => format!(r#"{{"status":"{s}","X-Axis":1,"Y-Axis":2}}"#),
            5 => format!(r#"{{"status":"{s}","spin":"{i}","X-Axis":1,"Y-Axis":2}}"#),
            6 => r#"{"status":null,"spin":1,"X-Axis":1,"Y-Axis":2}"#.to_string(),
            _ => format!(r#"{{"status":"{s}","spin":{i},"Y-Axis":2}}"#),
        };
        out.push(p);
    }
    out
}

#[test]
fn type_a_as_a_mapping_stores_exactly_the_rows_of_the_compiled_plugin() {
    let db = TestDb::new("map_parity");
    let machines = 3;
    let mut classes = Vec::new();
    for k in 0..machines {
        classes.push(serde_json::json!({"cnc_id": format!("A{k}"), "class_name": "CNCTypeA"}));
        classes
            .push(serde_json::json!({"cnc_id": format!("M{k}"), "class_name": "CNCTypeAMapped"}));
    }
    let setup = Setup::new(
        &db,
        "map_parity",
        &serde_json::Value::Array(classes).to_string(),
        &["cnc-type-a", "cnc-mapping"],
    );
    add_mapping(
        &setup,
        "CNCTypeAMapped",
        &fs::read_to_string(example("CNCTypeA.json")).unwrap(),
    );
    let (ok, report) = check(&setup);
    assert!(ok, "{report}");

    let mut collector = Collector::start(&setup);
    // Each message twice, the same text but for the machine: once to a CNCTypeA
    // machine, once to its CNCTypeAMapped twin.
    let payloads = type_a_payloads();
    let mut msgs = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let k = i % machines;
        // Out of order, with ties: cnc_status must end the same by the ordering both
        // declare (upsert_newest by timestamp), not by arrival.
        let ts = 1_747_379_000 + ((i * 7) % payloads.len()) as i64 / 2;
        for prefix in ["A", "M"] {
            msgs.push(envelope(&format!("{prefix}{k}"), ts, p));
        }
    }
    setup.publish(&msgs);
    let refused = payloads.len() / 2; // cases 4..=7 of every 8
    let stored = 2 * (payloads.len() - refused) as u64;
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", stored, WAIT),
        stored
    );
    assert_eq!(
        db.wait_count(
            "SELECT COUNT(*) FROM dead_letters",
            2 * refused as u64,
            WAIT
        ),
        2 * refused as u64
    );
    collector.stop();

    // Row by row, each class's rows with its machines' ids made the same.
    let split = |rows: Vec<(String, Vec<String>)>| {
        let mut a = Vec::new();
        let mut m = Vec::new();
        for (id, rest) in rows {
            let (side, twin) = match id.split_at(1) {
                ("A", n) => (&mut a, n.to_string()),
                ("M", n) => (&mut m, n.to_string()),
                _ => panic!("unexpected cnc_id {id}"),
            };
            side.push((twin, rest));
        }
        (a, m)
    };
    let data: Vec<(String, String, i64, String)> = db.rows(
        "SELECT cnc_id, part_program, timestamp, CAST(json_data AS CHAR) FROM cnc_data ORDER BY timestamp, cnc_id",
    );
    let (a, m) = split(
        data.into_iter()
            .map(|(id, p, t, j)| (id, vec![p, t.to_string(), j]))
            .collect(),
    );
    assert_eq!(a.len(), payloads.len() - refused);
    assert_eq!(a, m);
    // The JSON is the payload text exactly as sent.
    assert_eq!(a[0].1[2], payloads[0]);

    type Status = (
        String,
        Option<String>,
        Option<f64>,
        Option<f64>,
        Option<i64>,
        String,
        i64,
    );
    let status: Vec<Status> = db.rows(
        "SELECT cnc_id, status, spin, feed_rate, part_count, part_program, timestamp FROM cnc_status ORDER BY cnc_id",
    );
    let (a, m) = split(
        status
            .into_iter()
            .map(|(id, s, sp, f, pc, p, t)| {
                (id, vec![format!("{s:?} {sp:?} {f:?} {pc:?} {p} {t}")])
            })
            .collect(),
    );
    assert_eq!(a.len(), machines);
    assert_eq!(a, m);

    let dead: Vec<(String, String, String)> =
        db.rows("SELECT cnc_id, reason, CAST(payload AS CHAR) FROM dead_letters ORDER BY id");
    let (a, m) = split(
        dead.into_iter()
            .map(|(id, r, p)| {
                (
                    id.clone(),
                    vec![r, p.replace(&format!("\"{id}\""), "\"X\"")],
                )
            })
            .collect(),
    );
    assert_eq!(a.len(), refused);
    let mut a_sorted = a.clone();
    let mut m_sorted = m.clone();
    a_sorted.sort();
    m_sorted.sort();
    assert_eq!(a_sorted, m_sorted);
}
