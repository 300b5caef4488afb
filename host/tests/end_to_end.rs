//! The collector end to end, against the real broker and database: messages in,
//! rows and dead letters out.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

type DataRow = (String, String, i64, String);
/// reason, cnc_id, plugin_class, detail, payload
type DeadLetterRow = (String, Option<String>, Option<String>, String, Vec<u8>);

fn data_rows(db: &TestDb) -> Vec<DataRow> {
    db.rows("SELECT cnc_id, part_program, timestamp, json_data FROM cnc_data ORDER BY id")
}

#[test]
fn sample_messages_become_the_original_rows_with_either_plugin() {
    for class in ["CNCTypeA", "CNCTypeB"] {
        let db = TestDb::new("samples");
        let setup = Setup::new(
            &db,
            "samples",
            &classes(&[("CNC001", class), ("CNC002", class)]),
            &["cnc-type-a", "cnc-type-b"],
        );
        let mut collector = Collector::start(&setup);
        setup.publish(&SAMPLES);
        assert_eq!(
            db.wait_count("SELECT COUNT(*) FROM cnc_data", 3, WAIT),
            3,
            "{class}"
        );

        let rows = data_rows(&db);
        let want = [
            (
                "CNC001",
                "program_01",
                1747379028,
                r#"{"status": "running","spin":200,"X-Axis":30,"Y-Axis":80}"#,
            ),
            (
                "CNC002",
                "program_02",
                1747379030,
                r#"{"status": "idle","spin":0,"X-Axis":0,"Y-Axis":0}"#,
            ),
            (
                "CNC001",
                "program_03",
                1747379035,
                r#"{"status": "error","spin":100,"X-Axis":25,"Y-Axis":75}"#,
            ),
        ];
        for (got, want) in rows.iter().zip(want) {
            assert_eq!(
                (got.0.as_str(), got.1.as_str(), got.2),
                (want.0, want.1, want.2),
                "{class}"
            );
            let got_json: serde_json::Value = serde_json::from_str(&got.3).unwrap();
            let want_json: serde_json::Value = serde_json::from_str(want.3).unwrap();
            assert_eq!(got_json, want_json, "{class}");
        }

        let status: Vec<(String, String, f64, String, i64)> = db.rows(
            "SELECT cnc_id, status, spin, part_program, timestamp FROM cnc_status ORDER BY cnc_id",
        );
        assert_eq!(
            status,
            vec![
                (
                    "CNC001".into(),
                    "error".into(),
                    100.0,
                    "program_03".into(),
                    1747379035
                ),
                (
                    "CNC002".into(),
                    "idle".into(),
                    0.0,
                    "program_02".into(),
                    1747379030
                ),
            ],
            "{class}"
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM dead_letters"), 0);
        let status = collector.stop();
        assert!(
            status.success(),
            "exit status {status}: {}",
            collector.log()
        );
        assert!(
            collector
                .log()
                .contains("3 received, 3 stored, 0 dead letters"),
            "{}",
            collector.log()
        );
    }
}

#[test]
fn type_b_alarms_land_in_cnc_alarms() {
    let db = TestDb::new("alarms");
    let setup = Setup::new(
        &db,
        "alarms",
        &classes(&[("CNC002", "CNCTypeB")]),
        &["cnc-type-b"],
    );
    let _collector = Collector::start(&setup);
    let msg = r#"{"cnc_id":"CNC002","part_program":"program_07","timestamp":1747379100,
        "payload":{"status":"error","spin":0,"X-Axis":1,"Y-Axis":2,"feed_rate":250.5,"part_count":17,
        "alarms":[{"code":1002,"message":"Spindle overload"},{"code":"E-77","message":"Door 'open'; check"}]}}"#;
    setup.publish(&[msg.as_bytes()]);
    assert_eq!(db.wait_count("SELECT COUNT(*) FROM cnc_alarms", 2, WAIT), 2);
    let alarms: Vec<(String, i64, String, String)> =
        db.rows("SELECT cnc_id, timestamp, code, message FROM cnc_alarms ORDER BY id");
    assert_eq!(
        alarms,
        vec![
            (
                "CNC002".into(),
                1747379100,
                "1002".into(),
                "Spindle overload".into()
            ),
            (
                "CNC002".into(),
                1747379100,
                "E-77".into(),
                "Door 'open'; check".into()
            ),
        ]
    );
    let status: Vec<(Option<f64>, Option<i64>)> =
        db.rows("SELECT feed_rate, part_count FROM cnc_status WHERE cnc_id = 'CNC002'");
    assert_eq!(status, vec![(Some(250.5), Some(17))]);
}

#[test]
fn every_kind_of_bad_message_is_a_dead_letter_and_good_ones_still_flow() {
    let db = TestDb::new("dead");
    let setup = Setup::new(
        &db,
        "dead",
        &classes(&[
            ("CNC001", "CNCTypeA"),
            ("CNCF", "FaultyTest"),
            ("CNCX", "NoSuchClass"),
            ("CNC-REFUSE", "FaultyTest"),
        ]),
        &["cnc-type-a", "faulty-plugin"],
    );
    let mut collector = Collector::start(&setup);
    let faulty = |action: &str| {
        format!(
            r#"{{"cnc_id":"CNCF","part_program":"p","timestamp":1,"payload":{{"action":"{action}"}}}}"#
        )
    };
    let cases: Vec<(String, &str)> = vec![
        ("this is not json".into(), "not_json"),
        (
            r#"{"cnc_id":"CNC001","part_program":"p","timestamp":"1"}"#.into(),
            "bad_envelope",
        ),
        (
            r#"{"cnc_id":"CNC001","part_program":"p","timestamp":"soon","payload":{}}"#.into(),
            "bad_envelope",
        ),
        (
            r#"{"cnc_id":404,"part_program":"p","timestamp":1,"payload":{}}"#.into(),
            "bad_envelope",
        ),
        (
            r#"{"cnc_id":"CNC404","part_program":"p","timestamp":1,"payload":{}}"#.into(),
            "unknown_cnc_id",
        ),
        (
            r#"{"cnc_id":"CNCX","part_program":"p","timestamp":1,"payload":{}}"#.into(),
            "no_plugin",
        ),
        (
            r#"{"cnc_id":"CNC-REFUSE","part_program":"p","timestamp":1,"payload":{}}"#.into(),
            "plugin_init",
        ),
        (
            r#"{"cnc_id":"CNC001","part_program":"p","timestamp":1,"payload":{"status":"idle"}}"#
                .into(),
            "plugin_error",
        ),
        (faulty("error"), "plugin_error"),
        (faulty("panic"), "plugin_panic"),
        (faulty("bad_identifier"), "plugin_error"),
        (faulty("bad_sql"), "db_rejected"),
    ];
    for (msg, _) in &cases {
        setup.publish(&[msg.as_bytes()]);
    }
    setup.publish(&[SAMPLES[0].as_bytes()]);
    let n = cases.len() as u64;
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM dead_letters", n, WAIT),
        n,
        "{}",
        collector.log()
    );
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", 1, WAIT),
        1,
        "{}",
        collector.log()
    );

    let got: Vec<DeadLetterRow> = db
        .rows("SELECT reason, cnc_id, plugin_class, detail, payload FROM dead_letters ORDER BY id");
    let mut got_reasons: Vec<&str> = got.iter().map(|r| r.0.as_str()).collect();
    let mut want_reasons: Vec<&str> = cases.iter().map(|c| c.1).collect();
    got_reasons.sort();
    want_reasons.sort();
    assert_eq!(got_reasons, want_reasons);
    for (reason, cnc_id, class, detail, payload) in &got {
        assert!(
            cases
                .iter()
                .any(|(m, _)| m.as_bytes() == payload.as_slice()),
            "dead letter payload is not one of the messages sent: {:?}",
            String::from_utf8_lossy(payload)
        );
        assert!(!detail.is_empty(), "{reason} without detail");
        match reason.as_str() {
            "plugin_panic" => {
                assert_eq!(class.as_deref(), Some("FaultyTest"));
                assert!(detail.contains("asked to panic"), "{detail}");
            }
            "db_rejected" => {
                assert_eq!(
                    (cnc_id.as_deref(), class.as_deref()),
                    (Some("CNCF"), Some("FaultyTest"))
                );
                assert!(detail.contains("no_such_table"), "{detail}");
            }
            "no_plugin" => assert!(detail.contains("NoSuchClass"), "{detail}"),
            "unknown_cnc_id" => assert_eq!(cnc_id.as_deref(), Some("CNC404")),
            "plugin_error" if cnc_id.as_deref() == Some("CNC001") => {
                assert!(detail.contains("spin"), "{detail}")
            }
            _ => {}
        }
    }
    let log = collector.log();
    assert_eq!(
        log.matches("dead letter (").count(),
        cases.len(),
        "one log line per dead letter:\n{log}"
    );
    assert!(collector.stop().success(), "{}", collector.log());
}

#[test]
fn a_poison_message_inside_a_batch_costs_one_dead_letter() {
    let db = TestDb::new("poison");
    let setup = Setup::new(
        &db,
        "poison",
        &classes(&[("CNCF", "FaultyTest")]),
        &["faulty-plugin"],
    );
    // All messages wait in the spool while the database is away, so that they are
    // dispatched as one batch when it is back.
    let proxy = common::faults::TcpProxy::start("127.0.0.1:3306");
    setup.write_db(&db, proxy.port);
    proxy.cut();
    let collector = Collector::start(&setup);
    let mut msgs = Vec::new();
    for i in 0..60 {
        let action = if i == 37 { "bad_sql" } else { "store" };
        msgs.push(format!(
            r#"{{"cnc_id":"CNCF","part_program":"p{i}","timestamp":{i},"payload":{{"action":"{action}"}}}}"#
        ));
    }
    setup.publish(&msgs);
    setup.wait_spooled(&msgs, WAIT);
    proxy.restore();
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", 59, WAIT),
        59,
        "{}",
        collector.log()
    );
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM dead_letters", 1, WAIT),
        1
    );
    let (reason, payload): (String, String) = db
        .rows("SELECT reason, CAST(payload AS CHAR) FROM dead_letters")
        .pop()
        .unwrap();
    assert_eq!(reason, "db_rejected");
    assert!(payload.contains("\"p37\""), "{payload}");
    let missing = db.count("SELECT COUNT(*) FROM cnc_data WHERE part_program = 'p37'");
    assert_eq!(missing, 0);
    assert!(
        collector.log().contains("a batch of 60 messages"),
        "the poison message was not isolated within one batch:\n{}",
        collector.log()
    );
}

#[test]
fn a_non_plugin_library_is_reported_by_name_and_the_valid_one_loads() {
    let db = TestDb::new("junk");
    let setup = Setup::cnc001_type_a(&db, "junk");
    let junk = format!("libnot_a_plugin.{}", std::env::consts::DLL_EXTENSION);
    std::fs::write(
        setup.plugins_dir().join(&junk),
        b"this is not a shared library",
    )
    .unwrap();
    // A real shared library without the plugin symbol, where the system has one.
    let real_lib = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    if let Some(lib) = real_lib {
        std::fs::copy(lib, setup.plugins_dir().join("libsystem_math.so")).unwrap();
    }

    let (ok, text) = check(&setup);
    assert!(!ok, "{text}");
    assert!(text.contains(&junk) && text.contains("REFUSED"), "{text}");
    assert!(
        text.contains("libcnc_type_a.so") && text.contains("CNCTypeA"),
        "{text}"
    );
    if real_lib.is_some() {
        assert!(text.contains("libsystem_math.so"), "{text}");
    }

    let collector = Collector::start(&setup);
    assert!(collector.log().contains(&junk), "{}", collector.log());
    setup.publish(&[SAMPLES[0].as_bytes()]);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", 1, WAIT),
        1,
        "{}",
        collector.log()
    );
}

#[test]
fn check_passes_on_a_good_config_and_names_each_problem() {
    let db = TestDb::new("check");
    let setup = Setup::new(
        &db,
        "check",
        &classes(&[("CNC001", "CNCTypeA"), ("CNC002", "CNCTypeB")]),
        &["cnc-type-a", "cnc-type-b"],
    );
    let (ok, text) = check(&setup);
    assert!(ok, "{text}");
    for needle in [
        "CNCTypeA",
        "CNCTypeB",
        "1.0.0",
        "libcnc_type_b.so",
        "CNC002",
        "all checks passed",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }

    // A class name with no plugin.
    setup.write(
        "cnc_classes.json",
        &classes(&[("CNC001", "CNCTypeA"), ("CNC009", "FanucX")]),
    );
    let (ok, text) = check(&setup);
    assert!(!ok);
    assert!(
        text.contains("CNC009")
            && text.contains("\"FanucX\"")
            && text.contains("no plugin provides it"),
        "{text}"
    );

    // Malformed JSON.
    setup.write("cnc_classes.json", "[{\"cnc_id\": \"CNC001\",");
    let (ok, text) = check(&setup);
    assert!(!ok);
    assert!(text.contains("cnc_classes.json: invalid"), "{text}");

    // A missing file.
    setup.write("cnc_classes.json", &classes(&[("CNC001", "CNCTypeA")]));
    std::fs::remove_file(setup.path().join("db_config.json")).unwrap();
    let (ok, text) = check(&setup);
    assert!(!ok);
    assert!(text.contains("db_config.json: cannot read it"), "{text}");
}

#[test]
fn two_plugins_claiming_one_class_is_an_error_naming_both_files() {
    let db = TestDb::new("dup");
    let setup = Setup::cnc001_type_a(&db, "dup");
    std::fs::copy(
        plugin_lib("cnc-type-a"),
        setup.plugins_dir().join("libcopy_of_a.so"),
    )
    .unwrap();
    let (ok, text) = check(&setup);
    assert!(!ok);
    assert!(
        text.contains("class \"CNCTypeA\" is claimed by")
            && text.contains("libcopy_of_a.so")
            && text.contains("libcnc_type_a.so"),
        "{text}"
    );
    let out = mes_collector(&["run", "--config-dir", setup.path().to_str().unwrap()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        log.contains("libcopy_of_a.so") && log.contains("libcnc_type_a.so"),
        "{log}"
    );
}
