//! `plugins.isolate`: a plugin class run in a runner process. Its segfaults, aborts,
//! stack overflows and hangs cost only the message in hand, which becomes a dead
//! letter at once; the collector itself never restarts. `FaultyTest` runs isolated
//! beside an in-process `CNCTypeB`. Real broker, real database, real collector.

mod common;

use std::{
    collections::BTreeMap,
    fs,
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn message(cnc_id: &str, part_program: &str, action: &str) -> String {
    json!({"cnc_id":cnc_id,"part_program":part_program,"timestamp":1747379000,
           "payload":{"action":action,"status":"running","spin":100,"X-Axis":1,"Y-Axis":2}})
    .to_string()
}

type DeadRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Vec<u8>,
);

/// (reason, cnc_id, class, version, detail, part_program of the payload), in order.
fn dead_letters(db: &TestDb) -> Vec<(String, String, String, String, String, String)> {
    db.rows::<DeadRow>(
        "SELECT reason, cnc_id, plugin_class, plugin_version, detail, payload FROM dead_letters ORDER BY id",
    )
    .into_iter()
    .map(|(reason, cnc_id, class, version, detail, payload)| {
        let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        (
            reason,
            cnc_id.unwrap_or_default(),
            class.unwrap_or_default(),
            version.unwrap_or_default(),
            detail,
            payload["part_program"].as_str().unwrap_or_default().to_string(),
        )
    })
    .collect()
}

/// The pid of the last runner process the collector's log reports started.
fn last_runner_pid(log: &str) -> u32 {
    log.match_indices("runner process ")
        .filter_map(|(at, m)| {
            let rest = &log[at + m.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            rest[digits.len()..]
                .starts_with(" started")
                .then(|| digits.parse().ok())
                .flatten()
        })
        .last()
        .expect("a runner was started")
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, what: &str) {
    let until = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            Instant::now() < until,
            "runner {pid} still alive after {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(collector: &mut Collector, what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !done() {
        if let Some(status) = collector.exited() {
            panic!(
                "the collector exited ({status}) before {what}:\n{}",
                collector.log()
            );
        }
        assert!(
            Instant::now() < until,
            "not {what} within {WAIT:?}:\n{}",
            collector.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn crashes_and_hangs_of_an_isolated_plugin_cost_only_their_messages() {
    let db = TestDb::new("iso_faults");
    let classes =
        r#"[{"cnc_id":"F1","class_name":"FaultyTest"},{"cnc_id":"B1","class_name":"CNCTypeB"}]"#;
    let setup = Setup::new(&db, "iso_faults", classes, &["faulty-plugin", "cnc-type-b"]);
    setup.write_collector(&json!({"plugins": {
        "isolate": ["FaultyTest"],
        "allow_insecure_permissions": true,
        "call_timeout_ms": 1000
    }}));
    let mut collector = Collector::start(&setup);
    let pid = collector.pid();

    let actions = [
        "store",
        "store",
        "segfault",
        "store",
        "abort",
        "store",
        "stack_overflow",
        "store",
        "hang",
        "store",
    ];
    let mut messages = Vec::new();
    let mut good = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        let f = format!("f{i}");
        messages.push(message("F1", &f, action));
        if *action == "store" {
            good.push(f);
        }
        let b = format!("b{i}");
        messages.push(message("B1", &b, "store"));
        good.push(b);
    }
    setup.publish(&messages);
    wait_until(&mut collector, "every message handled", || {
        db.count("SELECT COUNT(*) FROM cnc_data") >= good.len() as u64
            && db.count("SELECT COUNT(*) FROM dead_letters") >= 4
    });
    // Longer than a batch: a duplicate or a further dead letter would show by now.
    std::thread::sleep(Duration::from_millis(700));

    let want: BTreeMap<String, u64> = good.iter().map(|g| (g.clone(), 1)).collect();
    assert_eq!(db.rows_per_part_program(), want, "{}", collector.log());
    let dead = dead_letters(&db);
    let summary: Vec<(&str, &str, &str, &str, &str)> = dead
        .iter()
        .map(|d| {
            (
                d.0.as_str(),
                d.1.as_str(),
                d.2.as_str(),
                d.3.as_str(),
                d.5.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("plugin_crashed", "F1", "FaultyTest", "0.1.0", "f2"),
            ("plugin_crashed", "F1", "FaultyTest", "0.1.0", "f4"),
            ("plugin_crashed", "F1", "FaultyTest", "0.1.0", "f6"),
            ("plugin_hung", "F1", "FaultyTest", "0.1.0", "f8"),
        ],
        "{dead:#?}"
    );
    let how = ["SIGSEGV", "SIGABRT", "SIGABRT", "no answer within 1000 ms"];
    for (d, how) in dead.iter().zip(how) {
        for needle in [
            "plugin FaultyTest 0.1.0",
            "libfaulty_plugin.so",
            "cnc_id F1",
            "spool record",
            "runner process",
            how,
        ] {
            assert!(
                d.4.contains(needle),
                "{needle:?} not in the detail: {}",
                d.4
            );
        }
        assert!(collector.log().contains(&d.4), "the log lacks: {}", d.4);
    }

    // The collector never left: the same process throughout, started once, and the
    // crash guard counted nothing (four crashes would have quarantined the build).
    assert!(collector.exited().is_none(), "{}", collector.log());
    assert_eq!(collector.pid(), pid);
    let log = collector.log();
    assert_eq!(log.matches(" starting: config").count(), 1, "{log}");
    assert!(
        !log.contains("HUNG: plugin"),
        "the in-process watchdog fired:\n{log}"
    );
    // One runner to begin with and one after each of the four failures.
    assert!(
        log.contains("runner process") && log.contains("(start 5;"),
        "{log}"
    );
    assert!(!log.contains("(start 6;"), "{log}");
    let state = fs::read_to_string(setup.path().join("spool/plugin-crashes.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    for counted in ["crashes", "quarantined", "pinned"] {
        assert_eq!(
            state[counted],
            json!([]),
            "the crash guard counted: {state}"
        );
    }

    let runner = last_runner_pid(&collector.log());
    assert!(alive(runner), "runner {runner} is not running");
    let status = collector.stop();
    assert!(status.success(), "stop: {status}\n{}", collector.log());
    // Closing its pipe ends the runner with the collector.
    wait_gone(runner, "the collector's clean stop");
    eprintln!(
        "FIGURES: isolated FaultyTest: {} messages stored once, 4 dead letters, 0 collector restarts, 4 runner restarts",
        good.len()
    );
}

#[test]
fn an_isolated_constructor_refusal_is_a_plugin_init_dead_letter_as_in_process() {
    let db = TestDb::new("iso_init");
    let classes = r#"[
        {"cnc_id":"F_REFUSE","class_name":"FaultyTest"},
        {"cnc_id":"F2","class_name":"FaultyTest","settings":{"bad":true}},
        {"cnc_id":"F1","class_name":"FaultyTest"},
        {"cnc_id":"B1","class_name":"CNCTypeB"}]"#;
    let setup = Setup::new(&db, "iso_init", classes, &["faulty-plugin", "cnc-type-b"]);
    setup.write_collector(&json!({"plugins": {
        "isolate": ["FaultyTest"],
        "allow_insecure_permissions": true
    }}));
    let (_, checked) = check(&setup);
    assert!(
        checked.contains("FaultyTest: runner loads libfaulty_plugin.so"),
        "{checked}"
    );

    let mut collector = Collector::start(&setup);
    setup.publish(&[
        message("F_REFUSE", "r0", "store"),
        message("F2", "s0", "store"),
        message("F1", "f0", "store"),
        message("F_REFUSE", "r1", "store"),
        message("F2", "s1", "store"),
        message("B1", "b0", "store"),
    ]);
    wait_until(&mut collector, "every message handled", || {
        db.count("SELECT COUNT(*) FROM cnc_data") >= 2
            && db.count("SELECT COUNT(*) FROM dead_letters") >= 4
    });
    std::thread::sleep(Duration::from_millis(700));
    let want: BTreeMap<String, u64> = [("b0".to_string(), 1), ("f0".to_string(), 1)].into();
    assert_eq!(db.rows_per_part_program(), want, "{}", collector.log());
    let dead = dead_letters(&db);
    let summary: Vec<(&str, &str, &str, &str)> = dead
        .iter()
        .map(|d| (d.0.as_str(), d.1.as_str(), d.2.as_str(), d.5.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("plugin_init", "F_REFUSE", "FaultyTest", "r0"),
            ("plugin_init", "F2", "FaultyTest", "s0"),
            ("plugin_init", "F_REFUSE", "FaultyTest", "r1"),
            ("plugin_init", "F2", "FaultyTest", "s1"),
        ],
        "{dead:#?}"
    );
    // The detail is the in-process one, word for word.
    assert_eq!(
        dead[0].4,
        r#"plugin FaultyTest 0.1.0 refused cnc_id "F_REFUSE": refusing machine F_REFUSE"#
    );
    assert!(
        dead[1].4.contains("settings key `bad` is true"),
        "{}",
        dead[1].4
    );
    assert_eq!(dead[0].4, dead[2].4);
    // A refusal is not a crash: one runner served all of it.
    let log = collector.log();
    assert!(
        log.contains("runner process") && !log.contains("(start 2;"),
        "{log}"
    );
    // A collector killed outright takes its runner with it (PR_SET_PDEATHSIG), even
    // one whose plugin hangs and so would never see the closed pipe: the call below
    // hangs for call_timeout_ms (5 s), and the collector is killed during it.
    let runner = last_runner_pid(&log);
    assert!(alive(runner), "runner {runner} is not running");
    setup.publish(&[message("F1", "h0", "hang")]);
    std::thread::sleep(Duration::from_millis(1500));
    collector.kill9();
    wait_gone(runner, "SIGKILL of the collector");
}

#[test]
fn replay_isolate_runs_through_crashes_and_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.jsonl");
    let lines = [
        message("F1", "a", "store"),
        message("F1", "b", "segfault"),
        message("F1", "c", "hang"),
        message("F1", "d", "panic"),
        message("F1", "e", "store"),
    ];
    fs::write(&file, lines.join("\n")).unwrap();
    let plugin = plugin_lib("faulty-plugin");
    let started = Instant::now();
    let out = mes_collector(&[
        "replay",
        "--isolate",
        "--plugin",
        plugin.to_str().unwrap(),
        "--cnc-id",
        "F1",
        file.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("INSERT cnc_data").count(), 2, "{stdout}");
    for needle in [
        "DEAD LETTER line 2 (plugin_crashed)",
        "DEAD LETTER line 3 (plugin_hung)",
        "DEAD LETTER line 4 (plugin_panic)",
        "'e', 1747379000",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
    assert!(stderr.contains("5 messages: 2 would be stored"), "{stderr}");
    // The hang is cut at replay's call timeout (5 s), not waited out.
    assert!(started.elapsed() < Duration::from_secs(30));
}
