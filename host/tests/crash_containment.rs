//! A plugin that crashes or hangs the process must not stop the plant: the collector
//! runs under a small supervisor (restart on abnormal exit, as systemd's `Restart=`
//! does, at most `MAX_RESTARTS` times), a `FaultyTest` machine sends good messages
//! and one that segfaults, aborts, overflows the stack, hangs or gets the process
//! SIGKILLed, and a `CNCTypeB` machine sends good messages beside it. Every good
//! message must be stored exactly once and the bad one dead-lettered with its reason;
//! a build that keeps crashing must be quarantined. Real broker, real database.
//!
//! Each test prints `FIGURES:` lines with the restarts each failure took.

mod common;

use std::{
    collections::BTreeMap,
    fs,
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{Child, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;

const MAX_RESTARTS: u32 = 5;
const WAIT: Duration = Duration::from_secs(90);
const CLASSES: &str =
    r#"[{"cnc_id":"F1","class_name":"FaultyTest"},{"cnc_id":"B1","class_name":"CNCTypeB"}]"#;
const PLUGINS: [&str; 2] = ["faulty-plugin", "cnc-type-b"];

/// Runs the collector and restarts it whenever it ends other than by our SIGTERM.
struct Supervisor {
    child: Option<Child>,
    log: PathBuf,
    config_dir: PathBuf,
    broker: String,
    client_id: String,
    runs: u32,
    /// How each run that ended on its own ended.
    exits: Vec<ExitStatus>,
}

impl Supervisor {
    /// Starts the first run and waits until it has subscribed, so that the broker
    /// keeps what is published from now on for this client.
    fn start(setup: &Setup) -> Supervisor {
        let mut s = Supervisor {
            child: None,
            log: setup.path().join("collector.log"),
            config_dir: setup.path().to_path_buf(),
            broker: setup.broker.clone(),
            client_id: setup.client_id.clone(),
            runs: 0,
            exits: Vec::new(),
        };
        s.spawn();
        s.wait_subscribed();
        s
    }

    fn spawn(&mut self) {
        self.runs += 1;
        let args = ["run", "--config-dir", self.config_dir.to_str().unwrap()];
        self.child = Some(spawn_logged(&args, &self.log, self.runs));
    }

    fn this_run_log(&self) -> String {
        run_in_log(&self.log(), self.runs)
            .expect("spawn_logged marks each run")
            .to_string()
    }

    fn wait_subscribed(&mut self) {
        wait_subscribed(self.child.as_mut().unwrap(), &self.log, self.runs);
    }

    /// Keeps the collector running, restarting it after each exit, until `done`
    /// holds. Returns the restarts this took.
    fn run_until(&mut self, what: &str, mut done: impl FnMut() -> bool) -> u32 {
        let restarts_before = self.exits.len() as u32;
        let until = Instant::now() + WAIT;
        loop {
            if done() {
                return self.exits.len() as u32 - restarts_before;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                self.exits.push(status);
                assert!(
                    self.exits.len() as u32 <= MAX_RESTARTS,
                    "more than {MAX_RESTARTS} restarts, still not {what}; exits {:?}:\n{}",
                    self.exits,
                    self.log()
                );
                self.spawn();
            }
            assert!(
                Instant::now() < until,
                "not {what} within {WAIT:?}; exits {:?}:\n{}",
                self.exits,
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM; the clean stop must exit 0.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        assert!(
            child.try_wait().unwrap().is_none(),
            "collector ended on its own:\n{}",
            self.log()
        );
        // SAFETY: signals our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "stop: {status}:\n{}", self.log());
                return;
            }
            assert!(
                Instant::now() < until,
                "no stop within 20 s:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The metrics address of the current run, from its log.
    fn metrics_addr(&self) -> String {
        let log = self.this_run_log();
        let at = log.find("metrics on http://").expect("metrics line") + "metrics on http://".len();
        log[at..].split('/').next().unwrap().to_string()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        forget_session(&self.broker, &self.client_id);
        if thread::panicking() {
            eprintln!("--- collector log ---\n{}", self.log());
        }
    }
}

fn faulty(part_program: &str, action: &str) -> String {
    json!({"cnc_id":"F1","part_program":part_program,"timestamp":1747379000,
           "payload":{"action":action,"status":"running","spin":1}})
    .to_string()
}

fn type_b(part_program: &str) -> String {
    json!({"cnc_id":"B1","part_program":part_program,"timestamp":1747379000,
           "payload":{"status":"running","spin":100,"X-Axis":1,"Y-Axis":2}})
    .to_string()
}

#[derive(Debug)]
struct DeadRow {
    reason: String,
    cnc_id: Option<String>,
    class: Option<String>,
    version: Option<String>,
    detail: String,
    payload: String,
}

fn dead_letters(db: &TestDb) -> Vec<DeadRow> {
    db.rows::<(String, Option<String>, Option<String>, Option<String>, String, Vec<u8>)>(
        "SELECT reason, cnc_id, plugin_class, plugin_version, detail, payload FROM dead_letters ORDER BY id",
    )
    .into_iter()
    .map(|(reason, cnc_id, class, version, detail, payload)| DeadRow {
        reason,
        cnc_id,
        class,
        version,
        detail,
        payload: String::from_utf8_lossy(&payload).into_owned(),
    })
    .collect()
}

/// Good, good, bad, good, good from F1, with five good messages from B1 between them.
/// Returns the restarts the bad message took and how each run ended.
fn one_bad_message(
    tag: &str,
    action: &str,
    extra: serde_json::Value,
    reason: &str,
    detail: &[&str],
) -> (u32, Vec<ExitStatus>) {
    let db = TestDb::new(tag);
    let setup = Setup::new(&db, tag, CLASSES, &PLUGINS);
    setup.write_collector(&extra);
    let mut sup = Supervisor::start(&setup);
    let mut messages = Vec::new();
    let mut good = Vec::new();
    for i in 0..5 {
        let f = format!("f{i}");
        messages.push(faulty(&f, if i == 2 { action } else { "store" }));
        if i != 2 {
            good.push(f);
        }
        let b = format!("b{i}");
        messages.push(type_b(&b));
        good.push(b);
    }
    setup.publish(&messages);
    let restarts = sup.run_until(
        "all good messages stored and the bad one dead-lettered",
        || {
            db.count("SELECT COUNT(*) FROM cnc_data") >= good.len() as u64
                && db.count("SELECT COUNT(*) FROM dead_letters") >= 1
        },
    );
    // Longer than a batch: a duplicate or a second dead letter would show by now.
    thread::sleep(Duration::from_millis(700));
    let want: BTreeMap<String, u64> = good.iter().map(|g| (g.clone(), 1)).collect();
    assert_eq!(db.rows_per_part_program(), want, "{}", sup.log());
    let dead = dead_letters(&db);
    assert_eq!(dead.len(), 1, "{dead:?}\n{}", sup.log());
    let d = &dead[0];
    assert_eq!(
        (
            d.reason.as_str(),
            d.cnc_id.as_deref(),
            d.class.as_deref(),
            d.version.as_deref()
        ),
        (reason, Some("F1"), Some("FaultyTest"), Some("0.1.0")),
        "{d:?}"
    );
    assert!(d.payload.contains(r#""part_program":"f2""#), "{d:?}");
    for needle in ["libfaulty_plugin.so", "cnc_id F1", "spool record"]
        .iter()
        .chain(detail)
    {
        assert!(
            d.detail.contains(needle),
            "{needle:?} not in the detail: {}",
            d.detail
        );
    }
    // The log names the message and the plugin too.
    assert!(sup.log().contains(&d.detail), "{}", sup.log());
    sup.stop();
    let exits = sup.exits.clone();
    eprintln!(
        "FIGURES: {action}: {restarts} restart(s) until everything was stored; runs ended {:?}",
        exits.iter().map(describe_exit).collect::<Vec<_>>()
    );
    (restarts, exits)
}

fn describe_exit(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (_, Some(sig)) => format!("signal {sig}"),
        _ => format!("{s}"),
    }
}

#[test]
fn a_segfault_dead_letters_its_message_after_one_restart() {
    let (restarts, exits) = one_bad_message(
        "segv",
        "segfault",
        json!({}),
        "plugin_crashed",
        &["SIGSEGV"],
    );
    assert_eq!(restarts, 1);
    assert_eq!(exits[0].signal(), Some(libc::SIGSEGV));
}

#[test]
fn an_abort_dead_letters_its_message_after_one_restart() {
    let (restarts, exits) =
        one_bad_message("abort", "abort", json!({}), "plugin_crashed", &["SIGABRT"]);
    assert_eq!(restarts, 1);
    assert_eq!(exits[0].signal(), Some(libc::SIGABRT));
}

#[test]
fn a_stack_overflow_dead_letters_its_message_after_one_restart() {
    let (restarts, exits) = one_bad_message(
        "overflow",
        "stack_overflow",
        json!({}),
        "plugin_crashed",
        &["stack overflow"],
    );
    assert_eq!(restarts, 1);
    // The Rust runtime's handler reports the overflow and aborts.
    assert!(
        matches!(exits[0].signal(), Some(libc::SIGABRT | libc::SIGSEGV)),
        "{:?}",
        exits[0]
    );
}

#[test]
fn a_process_killed_without_a_signal_record_is_found_by_a_careful_pass() {
    // SIGKILL runs no handler: the first restart handles the batch one message at a
    // time, the second death pins the message in hand.
    let (restarts, exits) = one_bad_message(
        "sigkill",
        "sigkill",
        json!({}),
        "plugin_crashed",
        &["no fatal signal recorded"],
    );
    assert_eq!(restarts, 2);
    assert!(
        exits.iter().all(|e| e.signal() == Some(libc::SIGKILL)),
        "{exits:?}"
    );
}

#[test]
fn a_hung_call_makes_the_collector_exit_and_its_message_a_dead_letter() {
    let (restarts, exits) = one_bad_message(
        "hang",
        "hang",
        json!({"plugins": {"call_timeout_ms": 1000}}),
        "plugin_hung",
        &["did not return within 1000 ms"],
    );
    assert_eq!(restarts, 1);
    assert_eq!(exits[0].code(), Some(70), "the watchdog's exit status");
}

#[test]
fn a_build_that_keeps_crashing_is_quarantined_and_the_other_class_runs_on() {
    let db = TestDb::new("quarantine");
    let setup = Setup::new(&db, "quarantine", CLASSES, &PLUGINS);
    setup.write_collector(&json!({"plugins": {"quarantine_after_crashes": 2}}));
    let mut sup = Supervisor::start(&setup);
    setup.publish(&[
        faulty("q0", "segfault"),
        type_b("b0"),
        faulty("q1", "abort"),
        type_b("b1"),
    ]);
    let restarts = sup.run_until("both crashes dead-lettered", || {
        db.count("SELECT COUNT(*) FROM dead_letters WHERE reason = 'plugin_crashed'") >= 2
            && db.count("SELECT COUNT(*) FROM cnc_data") >= 2
    });
    assert_eq!(restarts, 2, "{}", sup.log());
    assert!(
        sup.log().contains("plugin class FaultyTest is QUARANTINED"),
        "{}",
        sup.log()
    );

    // Quarantined: a good FaultyTest message is a dead letter, CNCTypeB stores.
    setup.publish(&[faulty("q2", "store"), type_b("b2")]);
    let more = sup.run_until("q2 dead-lettered and b2 stored", || {
        db.count("SELECT COUNT(*) FROM dead_letters WHERE reason = 'plugin_quarantined'") >= 1
            && db.count("SELECT COUNT(*) FROM cnc_data WHERE part_program = 'b2'") >= 1
    });
    assert_eq!(more, 0, "a quarantined class crashes nothing");
    thread::sleep(Duration::from_millis(500));
    let want: BTreeMap<String, u64> = ["b0", "b1", "b2"]
        .iter()
        .map(|p| (p.to_string(), 1))
        .collect();
    assert_eq!(db.rows_per_part_program(), want);
    let dead = dead_letters(&db);
    let reasons: Vec<(&str, bool)> = dead
        .iter()
        .map(|d| (d.reason.as_str(), d.payload.contains("\"q")))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("plugin_crashed", true),
            ("plugin_crashed", true),
            ("plugin_quarantined", true)
        ],
        "{dead:?}"
    );
    assert!(dead[2].payload.contains(r#""part_program":"q2""#));
    assert!(
        dead[2].detail.contains("quarantine lift FaultyTest"),
        "{}",
        dead[2].detail
    );

    // /metrics, check and the quarantine command all show it.
    let (_, metrics) = http::get(&sup.metrics_addr(), "/metrics");
    assert!(
        metrics.contains(r#"mes_plugin_quarantined{class="FaultyTest"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mes_plugin_crashes{class="FaultyTest"} 2"#),
        "{metrics}"
    );
    let (passed, report) = check(&setup);
    assert!(
        !passed && report.contains("plugin class FaultyTest is quarantined"),
        "{report}"
    );
    let dir = setup.path().to_str().unwrap();
    let listed = mes_collector(&["quarantine", "list", "--config-dir", dir])
        .output()
        .unwrap();
    let listed_text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && listed_text.contains("QUARANTINED FaultyTest"),
        "{listed_text}"
    );

    // Lifted by the operator: the class runs again after a restart.
    sup.stop();
    let lifted = mes_collector(&["quarantine", "lift", "FaultyTest", "--config-dir", dir])
        .output()
        .unwrap();
    assert!(
        lifted.status.success(),
        "{}",
        String::from_utf8_lossy(&lifted.stdout)
    );
    let again = mes_collector(&["quarantine", "lift", "FaultyTest", "--config-dir", dir])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "nothing left to lift");
    sup.spawn();
    sup.wait_subscribed();
    setup.publish(&[faulty("q3", "store")]);
    sup.run_until("q3 stored", || {
        db.count("SELECT COUNT(*) FROM cnc_data WHERE part_program = 'q3'") >= 1
    });
    assert!(!sup.this_run_log().contains("QUARANTINED"), "{}", sup.log());
    sup.stop();
    assert_eq!(
        sup.exits.len(),
        2,
        "no crash after the lift: {:?}",
        sup.exits
    );
    eprintln!("FIGURES: quarantine after 2 crashes (segfault, abort): {restarts} restarts; the third FaultyTest message was a dead letter without a crash");
}
