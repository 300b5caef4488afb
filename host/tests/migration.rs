//! Coming from the original Python service: its `cnc_data` (INT timestamp, VARCHAR(45)
//! columns, TEXT json_data, utf8mb3, no stored_at) is recognised by `check`, and
//! migrations/001-from-python-service.sql, run with the `mariadb` client as a DBA
//! would, brings it to the current layout keeping every row, once and again.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use mysql::prelude::Queryable;

const WAIT: Duration = Duration::from_secs(30);
const FIXTURE: &str = include_str!("fixtures/python_service.sql");
const DATABASE_SQL: &str = include_str!("../../database.sql");
const MIGRATION: &str = include_str!("../../migrations/001-from-python-service.sql");

/// Runs `sql`, with `cnc_database` renamed to `db`, through the `mariadb` client:
/// (exit success, stdout and stderr).
fn mariadb(sql: &str, db: &str) -> (bool, String) {
    let mut child = Command::new("mariadb")
        .args(["-h127.0.0.1", "-P3306", "-uroot"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mariadb client (scripts/test.sh installs MariaDB)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.replace("cnc_database", db).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// (cnc_id, timestamp, part_program, json_data) as the old service's columns allow.
type OldRow<'a> = (
    Option<&'a str>,
    Option<i64>,
    Option<&'a str>,
    Option<&'a str>,
);

/// A database made with the original service's DDL, holding `rows`.
fn python_database(tag: &str, rows: &[OldRow<'_>]) -> TestDb {
    let db = TestDb {
        name: test_db_name(tag),
    };
    let (ok, out) = mariadb(FIXTURE, &db.name);
    assert!(ok, "{out}");
    let mut conn = db.conn();
    for r in rows {
        conn.exec_drop(
            "INSERT INTO cnc_data (cnc_id, timestamp, part_program, json_data) VALUES (?,?,?,?)",
            *r,
        )
        .unwrap();
    }
    db
}

type DataRow = (u64, String, i64, String, String);

fn data_rows(db: &TestDb) -> Vec<DataRow> {
    db.rows("SELECT id, cnc_id, timestamp, part_program, json_data FROM cnc_data ORDER BY id")
}

fn create_table(db: &TestDb) -> String {
    let (_, ddl): (String, String) = db
        .conn()
        .query_first("SHOW CREATE TABLE cnc_data")
        .unwrap()
        .unwrap();
    ddl
}

fn message(part_program: &str, timestamp: i64) -> String {
    format!(
        r#"{{"cnc_id": "CNC001","part_program": "{part_program}","timestamp": "{timestamp}","payload":{{"status": "running","spin":200,"X-Axis":30,"Y-Axis":80}}}}"#
    )
}

#[test]
fn the_python_services_table_is_recognised_and_migrated_keeping_every_row() {
    let longest = "P".repeat(45);
    let db = python_database(
        "py_migrate",
        &[
            (
                Some("CNC001"),
                Some(0),
                Some("program_01"),
                Some(r#"{"status": "running", "spin": 200}"#),
            ),
            (
                Some("CNC002"),
                Some(2_147_483_647),
                Some(&longest),
                Some(r#"{"status":"idle"}"#),
            ),
            (
                Some("Fräse-工程"),
                Some(1_747_379_028),
                Some("Kühlung über"),
                Some(r#"{"note": "Späne – 注意"}"#),
            ),
        ],
    );
    let original = data_rows(&db);
    assert_eq!(original.len(), 3);
    // The plant applies database.sql over it: the other tables appear, cnc_data stays.
    let (ok, out) = mariadb(DATABASE_SQL, &db.name);
    assert!(ok, "{out}");
    assert!(create_table(&db).contains("`timestamp` int(11)"));

    let setup = Setup::cnc001_type_a(&db, "py_migrate");
    let (passed, report) = check(&setup);
    assert!(!passed, "{report}");
    for want in [
        "cnc_data has the layout of the original Python service",
        "timestamp is int(11), not BIGINT",
        "id is int(11)",
        "cnc_id is varchar(45), not VARCHAR(64)",
        "part_program is varchar(45), not VARCHAR(255)",
        "json_data is text, not JSON",
        "utf8mb3, not utf8mb4",
        "no stored_at column",
        "001-from-python-service.sql",
    ] {
        assert!(report.contains(want), "{want:?} not in:\n{report}");
    }

    // What the old layout does to live messages: a longer part program and a time
    // past 2038 are refused by MySQL.
    let long_program = format!("{}-operation-10-finishing", "X".repeat(40));
    let after_2038 = 2_147_483_648;
    let mut collector = Collector::start(&setup);
    let refused = [
        message(&long_program, 1_747_379_100),
        message("program_02", after_2038),
    ];
    setup.publish(&[refused[0].as_bytes(), refused[1].as_bytes()]);
    assert_eq!(
        db.wait_count(
            "SELECT COUNT(*) FROM dead_letters WHERE reason = 'db_rejected'",
            2,
            WAIT
        ),
        2,
        "{}",
        collector.log()
    );
    collector.stop();

    let (ok, out) = mariadb(MIGRATION, &db.name);
    assert!(ok, "{out}");
    let migrated = create_table(&db);
    let stored_at: Vec<String> =
        db.rows("SELECT CAST(stored_at AS CHAR) FROM cnc_data ORDER BY id");
    // Idempotent: a second run changes nothing, not even stored_at.
    let (ok, again) = mariadb(MIGRATION, &db.name);
    assert!(ok, "{again}");
    assert!(
        again.contains("cnc_data already has the current layout"),
        "{again}"
    );
    assert_eq!(create_table(&db), migrated);
    assert_eq!(
        db.rows::<String>("SELECT CAST(stored_at AS CHAR) FROM cnc_data ORDER BY id"),
        stored_at
    );
    for want in [
        "`id` bigint(20) unsigned NOT NULL AUTO_INCREMENT",
        "`cnc_id` varchar(64) NOT NULL",
        "`timestamp` bigint(20) NOT NULL",
        "`part_program` varchar(255) NOT NULL",
        "`json_data` longtext NOT NULL CHECK (json_valid(`json_data`))",
        "`stored_at` datetime(3) NOT NULL DEFAULT current_timestamp(3)",
        "KEY `cnc_data_cnc_time` (`cnc_id`,`timestamp`)",
        "CHARSET=utf8mb4",
    ] {
        assert!(migrated.contains(want), "{want:?} not in:\n{migrated}");
    }
    assert_eq!(data_rows(&db), original, "every row kept with its values");

    let (passed, report) = check(&setup);
    assert!(passed, "{report}");
    assert!(
        report.contains("ok: the tables' columns are those of database.sql"),
        "{report}"
    );

    // The messages refused before are stored by a replay; new ones go straight in.
    let replay = mes_collector(&[
        "dead-letters",
        "replay",
        "--reason",
        "db_rejected",
        "--config-dir",
        setup.path().to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(
        replay.status.success(),
        "{}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
    collector.restart();
    let live = message(&format!("{long_program}-b"), 4_102_444_800);
    setup.publish(&[live.as_bytes()]);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", 6, WAIT),
        6,
        "{}",
        collector.log()
    );
    let new: Vec<(String, i64)> =
        db.rows("SELECT part_program, timestamp FROM cnc_data WHERE id > 3 ORDER BY timestamp");
    assert_eq!(
        new,
        [
            (long_program.clone(), 1_747_379_100),
            ("program_02".to_string(), after_2038),
            (format!("{long_program}-b"), 4_102_444_800),
        ]
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM dead_letters"), 0);
}

#[test]
fn a_null_the_new_layout_cannot_hold_stops_the_migration_before_any_change() {
    let db = python_database(
        "py_null",
        &[
            (Some("CNC001"), Some(5), Some("program_01"), Some("{}")),
            (Some("CNC002"), Some(6), None, Some("{}")),
        ],
    );
    let before = (create_table(&db), db.count("SELECT COUNT(*) FROM cnc_data"));
    let (ok, out) = mariadb(MIGRATION, &db.name);
    assert!(!ok, "{out}");
    assert!(out.contains("part_program"), "{out}");
    assert_eq!(
        (create_table(&db), db.count("SELECT COUNT(*) FROM cnc_data")),
        before
    );
    let null: Option<Option<String>> = db
        .conn()
        .query_first("SELECT part_program FROM cnc_data WHERE cnc_id = 'CNC002'")
        .unwrap();
    assert_eq!(null, Some(None), "the NULL is not turned into ''");
}

#[test]
fn check_asks_for_database_sql_when_dead_letters_lacks_the_replay_columns() {
    let db = TestDb::new("dl_columns");
    db.conn()
        .query_drop("ALTER TABLE dead_letters DROP COLUMN replays, DROP COLUMN last_replayed_at")
        .unwrap();
    let setup = Setup::cnc001_type_a(&db, "dl_columns");
    let (passed, report) = check(&setup);
    assert!(!passed, "{report}");
    assert!(
        report.contains(
            "dead_letters.replays, dead_letters.last_replayed_at missing (added by this version); apply database.sql"
        ),
        "{report}"
    );
    // database.sql, applied over the existing tables, adds them.
    let (ok, out) = mariadb(DATABASE_SQL, &db.name);
    assert!(ok, "{out}");
    let (passed, report) = check(&setup);
    assert!(passed, "{report}");
}
