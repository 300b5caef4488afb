//! Nothing lost, nothing twice: kills, outages and damage, each injected by the test,
//! against the real broker and database.

mod common;

use std::{thread, time::Duration};

use common::{faults::*, *};
use mysql::prelude::Queryable;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

fn plugins() -> [&'static str; 2] {
    ["cnc-type-a", "cnc-type-b"]
}

/// Waits until `n` messages are stored, and a moment longer (a duplicate would show
/// by then): each of seq 0..n must be stored exactly once.
fn assert_stored_once(db: &TestDb, n: u64, collector: &Collector) {
    db.wait_count("SELECT COUNT(*) FROM cnc_data", n, WAIT);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        seq_stats(db),
        (n, n, 0, n as i64 - 1),
        "rows, distinct seq, min, max\n{}",
        collector.log()
    );
}

/// `batch.writers`, for the tests that run with one writer and with several. Several
/// take batches of 5 messages: the machines are spread over the writers once 20
/// batches per writer wait in the spool, and that way a backlog that spreads them,
/// and back, forms at these tests' rates, often.
fn writers(n: usize) -> serde_json::Value {
    match n {
        1 => json!({"batch": {"writers": 1}}),
        n => json!({"batch": {"writers": n, "max_messages": 5}}),
    }
}

/// With several writers: the machines were spread over them at some point.
fn assert_spread(collector: &Collector, writers: usize) {
    assert!(
        writers == 1 || collector.log().contains("spreading the machines over"),
        "no backlog spread the machines over the {writers} writers; the test did not test them:\n{}",
        collector.log()
    );
}

/// Kills the collector with SIGKILL at several moments while 20,000 messages flow,
/// restarting it each time: every message ends up stored exactly once.
fn survives_kill9(fsync: &str, writers: usize) {
    const N: u64 = 20_000;
    let broker = PrivateBroker::start();
    let db = TestDb::new("kill9");
    let mut setup = Setup::new(&db, "kill9", &sim_classes(20), &plugins());
    let mut extra = self::writers(writers);
    extra["spool"] = json!({"fsync": fsync});
    setup.use_broker(&broker.uri(), &extra);
    let mut collector = Collector::start(&setup);
    let publisher = generate(&setup, N, 4_000, 0, 20);
    for pause_ms in [700, 1_100, 450, 900, 1_300] {
        thread::sleep(Duration::from_millis(pause_ms));
        collector.kill9();
        collector.restart();
    }
    finish(publisher);
    db.wait_count("SELECT COUNT(*) FROM cnc_data", N, WAIT);
    // Longer than a batch: a duplicate would show up by now.
    thread::sleep(Duration::from_millis(500));
    let (rows, distinct, lo, hi) = seq_stats(&db);
    assert_eq!(
        (rows, distinct, lo, hi),
        (N, N, 0, N as i64 - 1),
        "fsync {fsync}: rows, distinct seq, min, max\n{}",
        collector.log()
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM dead_letters"), 0);
    assert_spread(&collector, writers);
    assert!(collector.stop().success());
}

#[test]
fn kill9_loses_nothing_and_duplicates_nothing_with_fsync_never() {
    survives_kill9("never", 1);
}

#[test]
fn kill9_loses_nothing_and_duplicates_nothing_with_fsync_always() {
    survives_kill9("always", 1);
}

#[test]
fn kill9_with_three_parallel_writers_loses_nothing_and_duplicates_nothing() {
    survives_kill9("never", 3);
}

/// The number of writers changes from one run to the next, each run killed with
/// SIGKILL while messages flow: the rows of every earlier layout still tell what is
/// committed, and every message is stored once.
#[test]
fn changing_the_number_of_writers_between_kills_stores_everything_once() {
    const N: u64 = 16_000;
    let broker = PrivateBroker::start();
    let db = TestDb::new("relayout");
    let mut setup = Setup::new(&db, "relayout", &sim_classes(20), &plugins());
    setup.use_broker(&broker.uri(), &writers(3));
    let mut collector = Collector::start(&setup);
    let publisher = generate(&setup, N, 4_000, 0, 20);
    // Fewer writers and more, and a run whose rows are not the latest layout's.
    for (pause_ms, next) in [(800, 2), (1_000, 4), (700, 2), (900, 1)] {
        thread::sleep(Duration::from_millis(pause_ms));
        collector.kill9();
        setup.write_collector(&writers(next));
        collector.restart();
    }
    finish(publisher);
    assert_stored_once(&db, N, &collector);
    assert_spread(&collector, 2);
    // The rows of earlier layouts are kept: the one-writer row and those of at least
    // one layout that spread.
    assert!(db.count("SELECT COUNT(*) FROM collector_position") >= 3);
    assert!(collector.stop().success());
}

#[test]
fn mysql_unreachable_mid_stream_stores_everything_once_after_recovery() {
    through_a_database_outage(1);
}

#[test]
fn two_writers_through_a_database_outage_store_everything_once() {
    through_a_database_outage(2);
}

fn through_a_database_outage(writers: usize) {
    const N: u64 = 6_000;
    let db = TestDb::new("dbdown");
    let proxy = TcpProxy::start("127.0.0.1:3306");
    let setup = Setup::new(&db, "dbdown", &sim_classes(10), &plugins());
    setup.write_db(&db, proxy.port);
    setup.write_collector(&self::writers(writers));
    let mut collector = Collector::start(&setup);
    let publisher = generate(&setup, N, 2_000, 0, 10);
    thread::sleep(Duration::from_millis(1_000));
    proxy.cut();
    thread::sleep(Duration::from_millis(3_000));
    let during = db.count("SELECT COUNT(*) FROM cnc_data");
    // The dashboard's spool gauge shows the backlog growing during the outage (it
    // was set only after commits, so it stood still until the database returned).
    let gauge = spool_gauge(&collector);
    proxy.restore();
    finish(publisher);
    db.wait_count("SELECT COUNT(*) FROM cnc_data", N, WAIT);
    thread::sleep(Duration::from_millis(500));
    assert!(
        gauge.waiting >= 100.0 && gauge.records + 50.0 >= gauge.waiting,
        "{} messages received and not committed during the outage, yet mes_spool_records said {}",
        gauge.waiting,
        gauge.records
    );
    assert_eq!(spool_gauge(&collector).records, 0.0, "all committed");
    let (rows, distinct, _, _) = seq_stats(&db);
    assert_eq!((rows, distinct), (N, N), "{}", collector.log());
    assert!(
        during < N,
        "the outage should have held some messages back:\n{}",
        collector.log()
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM dead_letters"),
        0,
        "nothing dead-lettered for an outage"
    );
    let log = collector.log();
    // A writer says so once; one that had nothing to commit may not have noticed.
    let once_per_writer = |needle: &str| (1..=writers).contains(&log.matches(needle).count());
    assert!(
        once_per_writer("unavailable"),
        "one line per writer when the database goes:\n{log}"
    );
    assert!(
        once_per_writer("reachable again"),
        "one line per writer when it comes back:\n{log}"
    );
    assert_spread(&collector, writers);
    assert!(collector.stop().success());
}

#[test]
fn broker_down_mid_stream_loses_nothing() {
    let mut broker = PrivateBroker::start();
    let db = TestDb::new("brokerdown");
    let mut setup = Setup::new(&db, "brokerdown", &sim_classes(10), &plugins());
    setup.use_broker(&broker.uri(), &json!({}));
    let mut collector = Collector::start(&setup);
    finish(generate(&setup, 3_000, 0, 0, 10));
    broker.stop();
    thread::sleep(Duration::from_millis(1_500));
    broker.restart();
    collector.wait_log("reconnected to MQTT broker", Duration::from_secs(60));
    finish(generate(&setup, 3_000, 0, 3_000, 10));
    assert_stored_once(&db, 6_000, &collector);
    assert!(collector.log().contains("lost connection to MQTT broker"));
    assert!(collector.stop().success());
}

/// `mes_spool_records`, and the messages received but not yet committed by the
/// collector's counters, from one scrape.
struct SpoolGauge {
    records: f64,
    waiting: f64,
}

fn spool_gauge(collector: &Collector) -> SpoolGauge {
    let (_, text) = http::get(&http::metrics_addr(collector), "/metrics");
    let samples = http::parse_exposition(&text);
    let value = |series: &str| http::value(&samples, series);
    SpoolGauge {
        records: value("mes_spool_records"),
        waiting: value("mes_messages_received_total") - value("mes_batch_messages_sum"),
    }
}

fn sample(i: usize) -> String {
    format!(
        r#"{{"cnc_id":"CNC001","part_program":"p{i}","timestamp":{i},"payload":{{"status":"running","spin":{i},"X-Axis":1,"Y-Axis":2}}}}"#
    )
}

#[test]
fn a_torn_spool_tail_is_cut_off_and_everything_before_it_stored() {
    let db = TestDb::new("torn");
    let proxy = TcpProxy::start("127.0.0.1:3306");
    let setup = Setup::cnc001_type_a(&db, "torn");
    setup.write_db(&db, proxy.port);
    proxy.cut();
    let mut collector = Collector::start(&setup);
    let msgs: Vec<String> = (0..100).map(sample).collect();
    setup.publish(&msgs);
    setup.wait_spooled(&msgs, Duration::from_secs(20));
    collector.kill9();
    let segment = setup.spool_segments().pop().unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    proxy.restore();
    collector.restart();
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", 99, WAIT),
        99,
        "{}",
        collector.log()
    );
    thread::sleep(Duration::from_millis(300));
    assert_eq!(db.count("SELECT COUNT(*) FROM cnc_data"), 99);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM cnc_data WHERE part_program = 'p99'"),
        0
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT part_program) FROM cnc_data"),
        99
    );
    assert!(collector.log().contains("cut off"), "{}", collector.log());
    assert_eq!(db.count("SELECT COUNT(*) FROM dead_letters"), 0);
}

#[test]
fn a_full_spool_holds_back_the_broker_and_loses_nothing() {
    const N: u64 = 4_000;
    let broker = PrivateBroker::start();
    let db = TestDb::new("full");
    let proxy = TcpProxy::start("127.0.0.1:3306");
    let mut setup = Setup::new(&db, "full", &sim_classes(10), &plugins());
    let limit = 64 * 1024;
    setup.use_broker(
        &broker.uri(),
        &json!({"spool": {"segment_bytes": 16 * 1024, "max_bytes": limit}}),
    );
    setup.write_db(&db, proxy.port);
    proxy.cut();
    let mut collector = Collector::start(&setup);
    finish(generate(&setup, N, 0, 0, 10));
    collector.wait_log("spool full", Duration::from_secs(30));
    thread::sleep(Duration::from_millis(1_000));
    let on_disk = setup.spool_bytes();
    let peak_kib = collector.peak_rss_kib();
    assert!(
        on_disk <= limit,
        "spool holds {on_disk} bytes, limit {limit}"
    );
    assert!(
        peak_kib < 64 * 1024,
        "collector peak RSS {peak_kib} KiB while the spool was full"
    );
    proxy.restore();
    db.wait_count("SELECT COUNT(*) FROM cnc_data", N, WAIT);
    thread::sleep(Duration::from_millis(500));
    let (rows, distinct, _, _) = seq_stats(&db);
    assert_eq!((rows, distinct), (N, N), "{}", collector.log());
    assert!(collector.log().contains("spool has room again"));
    eprintln!(
        "spool limit {limit} bytes: {on_disk} bytes on disk, peak RSS {peak_kib} KiB while full"
    );
}

#[test]
fn sigterm_commits_the_batch_in_hand_and_exits_promptly() {
    sigterm_mid_stream(1);
}

#[test]
fn sigterm_with_two_writers_commits_what_they_hold_and_exits_promptly() {
    sigterm_mid_stream(2);
}

fn sigterm_mid_stream(writers: usize) {
    // Several writers: at full speed, so that they catch up on a backlog when stopped.
    let (n, rate) = if writers > 1 {
        (10_000, 0)
    } else {
        (3_000, 3_000)
    };
    // Messages flow while the collector is stopped: a private broker without the
    // system one's 1,000-message queue limit.
    let broker = PrivateBroker::start();
    let db = TestDb::new("sigterm");
    let mut setup = Setup::new(&db, "sigterm", &sim_classes(4), &plugins());
    setup.use_broker(&broker.uri(), &self::writers(writers));
    let mut collector = Collector::start(&setup);
    let publisher = generate(&setup, n, rate, 0, 4);
    thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    assert!(collector.stop().success(), "{}", collector.log());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    finish(publisher);
    let stored_at_stop = db.count("SELECT COUNT(*) FROM cnc_data");
    assert!(stored_at_stop > 0);
    assert_spread(&collector, writers);
    // What was acknowledged but not committed is in the spool; the rest is on the
    // broker (this topic's session): a restart stores all of it, once.
    collector.restart();
    assert_stored_once(&db, n, &collector);
}

/// A clean stop whose last acknowledgements never reach the broker: the proxy hands
/// the collector's packets to the broker 50 ms late and drops what is still on its way
/// when the connection closes, as a reset does (paho closes a socket with unread
/// messages in it). The broker sends those messages again after the restart; they are
/// in the spool already, and must not be stored twice. Before the stop marked which
/// records it was not sure of, this stored the last ~150 messages twice.
#[test]
fn a_clean_stop_whose_last_acknowledgements_are_lost_stores_nothing_twice() {
    let broker = PrivateBroker::start();
    let proxy = TcpProxy::start_lagging(
        broker.uri().trim_start_matches("tcp://"),
        Duration::from_millis(50),
    );
    let db = TestDb::new("lost_acks");
    let mut setup = Setup::new(&db, "lost_acks", &sim_classes(4), &plugins());
    setup.use_broker(&format!("tcp://127.0.0.1:{}", proxy.port), &json!({}));
    // The publisher goes to the broker directly: only the collector's packets lag.
    setup.broker = broker.uri();
    let mut collector = Collector::start(&setup);
    let publisher = generate(&setup, 3_000, 3_000, 0, 4);
    thread::sleep(Duration::from_millis(500));
    assert!(collector.stop().success(), "{}", collector.log());
    finish(publisher);
    collector.restart();
    assert_stored_once(&db, 3_000, &collector);
    assert!(
        collector.log().contains("may come again"),
        "the stop tells how many records it is not sure of: {}",
        collector.log()
    );
}

#[test]
fn a_connection_lost_while_committing_does_not_store_the_batch_twice() {
    a_lost_commit_answer(1);
}

#[test]
fn with_two_writers_a_lost_commit_answer_does_not_store_a_batch_twice() {
    a_lost_commit_answer(2);
}

fn a_lost_commit_answer(writers: usize) {
    // Several writers: at full speed, so that the commit is lost while they catch up
    // on a backlog.
    let (n, rate) = if writers > 1 {
        (10_000, 0)
    } else {
        (2_000, 2_000)
    };
    // A private broker: the system one's 1,000-message queue limit drops messages
    // published at full speed to a collector that is catching up.
    let broker = PrivateBroker::start();
    let db = TestDb::new("indoubt");
    let proxy = TcpProxy::start("127.0.0.1:3306");
    let mut setup = Setup::new(&db, "indoubt", &sim_classes(10), &plugins());
    setup.write_db(&db, proxy.port);
    setup.use_broker(&broker.uri(), &self::writers(writers));
    let collector = Collector::start(&setup);
    // Let the first batches through, then lose the answer to a COMMIT the server ran.
    let publisher = generate(&setup, n, rate, 0, 10);
    thread::sleep(Duration::from_millis(300));
    proxy.cut_after_next_commit();
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !proxy.trap_sprung() {
        assert!(
            std::time::Instant::now() < until,
            "no COMMIT went through the proxy"
        );
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(1_000));
    proxy.restore();
    finish(publisher);
    assert_stored_once(&db, n, &collector);
    assert!(
        collector
            .log()
            .contains("was committed before the connection dropped"),
        "{}",
        collector.log()
    );
    assert_spread(&collector, writers);
}

/// Runs `mes-collector ARGS` with `proxy` set to cut the line once a COMMIT has gone
/// through it, and restores the line right after, so that a command that sent the
/// batch again would get through. The output, and whether the cut happened
/// (remembered: restoring the line ends what `trap_sprung` reports).
fn through_a_lost_commit_answer(proxy: &TcpProxy, args: &[&str]) -> (std::process::Output, bool) {
    proxy.cut_after_next_commit();
    let mut command = mes_collector(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let mut sprung = false;
    while command.try_wait().unwrap().is_none() {
        if proxy.trap_sprung() {
            sprung = true;
            proxy.restore();
        }
        if std::time::Instant::now() > until {
            let _ = command.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    // A command that exits at once leaves the line cut, unseen by the loop.
    let sprung = sprung || proxy.trap_sprung();
    (command.wait_with_output().unwrap(), sprung)
}

/// `mes-collector replay --write` commits no position row, so a COMMIT whose answer was
/// lost cannot be decided afterwards: the replay stops and says so, rather than
/// sending the batch again and maybe storing it twice; the server's commit stands.
#[test]
fn a_replay_that_loses_the_answer_to_its_commit_stops_and_says_so() {
    let db = TestDb::new("replay_indoubt");
    let proxy = TcpProxy::start("127.0.0.1:3306");
    let setup = Setup::new(&db, "replay_indoubt", "[]", &[]);
    setup.write_db(&db, proxy.port);
    let file = setup.path().join("messages.jsonl");
    std::fs::write(&file, [SAMPLES[0], SAMPLES[2]].join("\n")).unwrap();
    let type_a = plugin_lib("cnc-type-a");
    let (out, sprung) = through_a_lost_commit_answer(
        &proxy,
        &[
            "replay",
            "--plugin",
            type_a.to_str().unwrap(),
            "--cnc-id",
            "CNC001",
            "--write",
            "--config-dir",
            setup.path().to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(sprung, "no COMMIT went through the proxy: {said}");
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("replay: the COMMIT of a batch of 2 messages was sent to 127.0.0.1:")
            && said.contains("the batch may or may not be stored"),
        "{said}"
    );
    // The server ran the COMMIT: stored once, and no position row anywhere.
    assert_eq!(db.count("SELECT COUNT(*) FROM cnc_data"), 2, "{said}");
    assert_eq!(db.count("SELECT COUNT(*) FROM collector_position"), 0);
}

/// `dead-letters replay` commits no position row either, but every message of its
/// batches is a claimed dead letter: a COMMIT whose answer was lost is sent again, and
/// the claim that COMMIT made keeps the second run from storing anything twice.
#[test]
fn a_dead_letter_replay_that_loses_the_answer_to_its_commit_stores_it_once() {
    let db = TestDb::new("dl_indoubt");
    let proxy = TcpProxy::start("127.0.0.1:3306");
    let setup = Setup::cnc001_type_a(&db, "dl_indoubt");
    setup.write_db(&db, proxy.port);
    let mut conn = db.conn();
    conn.exec_drop(
        "INSERT INTO dead_letters (topic, cnc_id, reason, detail, payload, payload_bytes) \
         VALUES ('sensor/CNC', 'CNC001', 'plugin_error', 'test', ?, ?)",
        (SAMPLES[0], SAMPLES[0].len()),
    )
    .unwrap();
    let (out, sprung) = through_a_lost_commit_answer(
        &proxy,
        &[
            "dead-letters",
            "replay",
            "--config-dir",
            setup.path().to_str().unwrap(),
        ],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sprung, "no COMMIT went through the proxy: {said}");
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("running the batch again"), "{said}");
    assert!(
        said.contains("by this one's COMMIT whose answer was lost"),
        "{said}"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM cnc_data"), 1, "{said}");
    assert_eq!(db.count("SELECT COUNT(*) FROM dead_letters"), 0, "{said}");
    assert_eq!(db.count("SELECT COUNT(*) FROM collector_position"), 0);
}

/// The spool is replaced by an older copy of itself (a backup put back): the positions
/// in the database are beyond its end. It is stored all over again, as before, and
/// every position row of the collector's is reset, also those of a layout of writers
/// the next runs do not use: left standing, they would take the copy's new records,
/// once their numbers pass them, for committed.
#[test]
fn an_older_copy_of_the_spool_resets_every_position_row_and_is_stored() {
    let db = TestDb::new("oldcopy");
    let setup = Setup::new(&db, "oldcopy", &sim_classes(4), &plugins());
    let mut collector = Collector::start(&setup);
    finish(generate(&setup, 100, 0, 0, 4));
    db.wait_count("SELECT COUNT(*) FROM cnc_data", 100, WAIT);
    assert!(collector.stop().success());
    let spool = setup.path().join("spool");
    let copy = setup.path().join("spool-copy");
    copy_dir(&spool, &copy);
    collector.restart();
    finish(generate(&setup, 100, 0, 100, 4));
    db.wait_count("SELECT COUNT(*) FROM cnc_data", 200, WAIT);
    assert!(collector.stop().success());
    // The rows three writers would have left, had they caught up on a backlog then.
    let id = &setup.client_id;
    let mut conn = db.conn();
    conn.query_drop(format!(
        "INSERT INTO collector_position (client_id, last_seq) \
         SELECT CONCAT(client_id, '#writer-', w, '-of-3'), last_seq \
         FROM collector_position, (SELECT 0 AS w UNION SELECT 1 UNION SELECT 2) AS ws \
         WHERE client_id = '{id}'"
    ))
    .unwrap();
    let three_writer_rows = format!(
        "SELECT COUNT(*) FROM collector_position WHERE client_id LIKE '{id}#writer-%-of-3' AND last_seq > 0"
    );
    assert_eq!(db.count(&three_writer_rows), 3);

    std::fs::remove_dir_all(&spool).unwrap();
    std::fs::rename(&copy, &spool).unwrap();
    collector.restart();
    collector.wait_log("beyond the spool's end", WAIT);
    finish(generate(&setup, 100, 0, 200, 4));
    db.wait_count(
        "SELECT COUNT(DISTINCT JSON_EXTRACT(json_data, '$.seq')) FROM cnc_data",
        300,
        WAIT,
    );
    assert_eq!(db.count(&three_writer_rows), 0, "{}", collector.log());
    assert!(collector.stop().success());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
