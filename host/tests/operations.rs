//! Running it in a plant: metrics, health endpoints, and secrets kept out of output.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::{
    faults::TcpProxy,
    http::{get, metrics_addr, parse_exposition, value},
    *,
};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn metrics_count_known_traffic_and_parse_as_prometheus_text() {
    let db = TestDb::new("metrics");
    let classes = r#"[{"cnc_id":"CNC001","class_name":"CNCTypeA"},{"cnc_id":"CNC002","class_name":"CNCTypeB"},
                      {"cnc_id":"CNC003","class_name":"CNCTypeA"}]"#;
    let setup = Setup::new(&db, "metrics", classes, &["cnc-type-a", "cnc-type-b"]);
    let collector = Collector::start(&setup);
    let addr = metrics_addr(&collector);
    let mut msgs = SAMPLES.to_vec();
    msgs.push("not json at all");
    msgs.push(r#"{"cnc_id":"CNC999","part_program":"p","timestamp":1,"payload":{}}"#);
    setup.publish(&msgs);
    db.wait_count("SELECT COUNT(*) FROM dead_letters", 2, WAIT);

    let (status, text) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    let samples = parse_exposition(&text);
    assert_eq!(value(&samples, "mes_messages_received_total"), 5.0);
    assert_eq!(
        value(
            &samples,
            r#"mes_messages_stored_total{class="CNCTypeA",cnc_id="CNC001"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            r#"mes_messages_stored_total{class="CNCTypeB",cnc_id="CNC002"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            r#"mes_messages_dead_lettered_total{class="unknown",cnc_id="unknown",reason="not_json"}"#
        ),
        1.0
    );
    // The unmapped cnc_id is counted, but does not become a label of its own.
    assert_eq!(
        value(
            &samples,
            r#"mes_messages_dead_lettered_total{class="unknown",cnc_id="unknown",reason="unknown_cnc_id"}"#
        ),
        1.0
    );
    assert!(!text.contains("CNC999"), "unbounded label value exposed");
    assert_eq!(value(&samples, "mes_database_up"), 1.0);
    assert_eq!(value(&samples, "mes_broker_up"), 1.0);
    assert!(value(&samples, "mes_batch_messages_count") >= 1.0);
    assert!(value(&samples, "mes_commit_seconds_count") >= 1.0);
    assert_eq!(value(&samples, "mes_spool_records"), 0.0);
    assert!(
        value(
            &samples,
            r#"mes_cnc_seconds_since_last_seen{cnc_id="CNC001"}"#
        ) < 30.0
    );
    // Never heard from: counted from the start.
    let silent = value(
        &samples,
        r#"mes_cnc_seconds_since_last_seen{cnc_id="CNC003"}"#,
    );
    assert!(value(&samples, "mes_uptime_seconds") + 1.0 >= silent);
    assert_eq!(
        value(
            &samples,
            &format!(
                r#"mes_build_info{{plugin_api="{}",version="{}"}}"#,
                mes_plugin_api::API_VERSION,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert!(value(&samples, "process_resident_memory_bytes") > 0.0);

    assert_eq!(get(&addr, "/healthz").0, 200);
    let (status, body) = get(&addr, "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"broker":true,"database":true}"#)
    );
}

#[test]
fn readyz_turns_503_while_the_database_is_unreachable() {
    let db = TestDb::new("readyz");
    let proxy = TcpProxy::start("127.0.0.1:3306");
    let setup = Setup::cnc001_type_a(&db, "readyz");
    setup.write_db(&db, proxy.port);
    let collector = Collector::start(&setup);
    let addr = metrics_addr(&collector);
    let wait_for = |want: u16| {
        let until = Instant::now() + WAIT;
        loop {
            let (status, body) = get(&addr, "/readyz");
            if status == want {
                return body;
            }
            assert!(
                Instant::now() < until,
                "/readyz stayed {status} ({body}), wanted {want}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(200);
    proxy.cut();
    let body = wait_for(503);
    assert_eq!(body, r#"{"broker":true,"database":false}"#);
    proxy.restore();
    wait_for(200);
    // Data published during the outage is stored once it is over.
    setup.publish(&[SAMPLES[0].as_bytes()]);
    assert_eq!(db.wait_count("SELECT COUNT(*) FROM cnc_data", 1, WAIT), 1);
}

#[test]
fn no_password_appears_in_logs_or_check_output() {
    const DB_SECRET: &str = "Db-S3cret-7f3a";
    const MQTT_SECRET: &str = "Mqtt-S3cret-91c2";
    const ENV_DB_SECRET: &str = "Env-Db-S3cret-55e0";
    let db = TestDb::new("secrets");
    let mut setup = Setup::cnc001_type_a(&db, "secrets");
    setup.write_db_user(&db, "root", DB_SECRET);
    let broker = setup.broker.clone();
    setup.use_broker(
        &broker,
        &serde_json::json!({"broker": {"username": "collector", "password": MQTT_SECRET}}),
    );

    // From the files.
    let out = mes_collector(&["check", "--config-dir", setup.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the wrong database password must fail the check"
    );
    assert!(text.contains("Access denied"), "{text}");
    for secret in [DB_SECRET, MQTT_SECRET] {
        assert!(!text.contains(secret), "check printed a password:\n{text}");
    }

    // From the environment, in text and JSON logs.
    for format in ["text", "json"] {
        let log_path = setup.path().join(format!("run-{format}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = mes_collector(&[
            "--log-format",
            format,
            "run",
            "--config-dir",
            setup.path().to_str().unwrap(),
        ])
        .env("MES_DB_PASSWORD", ENV_DB_SECRET)
        .env("MES_MQTT_PASSWORD", MQTT_SECRET)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
        let until = Instant::now() + WAIT;
        let text = loop {
            let text = std::fs::read_to_string(&log_path).unwrap();
            if text.contains("database") && text.contains("unavailable") || Instant::now() > until {
                break text;
            }
            thread::sleep(Duration::from_millis(100));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(text.contains("unavailable"), "{text}");
        for secret in [DB_SECRET, MQTT_SECRET, ENV_DB_SECRET] {
            assert!(
                !text.contains(secret),
                "the {format} log shows a password:\n{text}"
            );
        }
        if format == "json" {
            for line in text.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(v["msg"].is_string() && v["level"].is_string(), "{line}");
            }
        }
    }
}
