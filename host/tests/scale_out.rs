//! Several collectors: one live collector per client_id (a lease in the database),
//! and three collectors in one shared subscription, killed and stopped while messages
//! flow, storing every message exactly once with each machine's status at its newest.
//! And one collector's writers over the servers of `hosts`: they move together.

mod common;

use std::{thread, time::Duration};

use mes_collector::{
    metrics::Metrics,
    sink::{
        config::DbConfig,
        mysql::{MysqlSink, ServerInUse},
    },
};
use mysql::prelude::Queryable;
use serde_json::json;

use common::{
    faults::{PrivateBroker, TcpProxy},
    *,
};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn a_second_collector_with_a_live_client_id_is_refused_and_takes_over_when_the_holder_dies() {
    let db = TestDb::new("lease");
    let first = Setup::cnc001_type_a(&db, "lease1");
    let second = Setup::cnc001_type_a(&db, "lease2");
    // The same client_id, each with its own spool: a copied configuration.
    second
        .write_collector(&json!({"broker": {"client_id": first.client_id, "topic": first.topic}}));

    let mut holder = Collector::start(&first);
    let (code, log) = run_to_exit(&second, Duration::from_secs(20));
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(&format!(
            "not starting: broker.client_id {:?} is in use by the collector on",
            first.client_id
        )) && log.contains(&format!("(pid {})", holder.pid()))
            && log.contains("Give this collector its own broker.client_id"),
        "{log}"
    );
    // It never reached the broker, so the holder kept its session.
    assert!(!log.contains("subscribed to"), "{log}");
    first.publish(&[br#"{"cnc_id":"CNC001","part_program":"p1","timestamp":"1747379100","payload":{"status":"idle","spin":0,"X-Axis":0,"Y-Axis":0}}"#]);
    assert_eq!(db.wait_count("SELECT COUNT(*) FROM cnc_data", 1, WAIT), 1);

    // The holder dies without giving the lease back: on the same host, its
    // replacement sees the process is gone and takes over at once.
    holder.kill9();
    let mut replacement = Collector::start(&second);
    replacement.wait_log("which is no longer running", Duration::from_secs(5));
    first.publish(&[br#"{"cnc_id":"CNC001","part_program":"p2","timestamp":"1747379101","payload":{"status":"running","spin":9,"X-Axis":0,"Y-Axis":0}}"#]);
    assert_eq!(db.wait_count("SELECT COUNT(*) FROM cnc_data", 2, WAIT), 2);
    // A clean stop gives the lease back.
    assert!(replacement.stop().success());
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM collector_lease WHERE client_id = '{}'",
            first.client_id
        )),
        0
    );

    // A holder on another host cannot be checked: its lease must run out.
    db.conn()
        .exec_drop(
            "INSERT INTO collector_lease (client_id, holder, expires_at) \
             VALUES (?, 'host=plant-b-collector-2;pid=4242;since=0', NOW(3) + INTERVAL 4 SECOND)",
            (first.client_id.as_str(),),
        )
        .unwrap();
    let (code, log) = run_to_exit(&second, Duration::from_secs(20));
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("in use by the collector on plant-b-collector-2 (pid 4242)"),
        "{log}"
    );
    thread::sleep(Duration::from_secs(4));
    replacement.restart();
    let log = replacement.log();
    let this_run = run_in_log(&log, 2).expect("spawn_logged marks each run");
    assert!(
        this_run.contains(&format!(
            "lease on broker.client_id {:?} taken",
            first.client_id
        )),
        "{this_run}"
    );
    assert!(replacement.stop().success());
}

#[test]
fn three_collectors_in_a_shared_subscription_store_every_message_once_with_the_newest_status() {
    const N: u64 = 24_000;
    const MACHINES: usize = 50;
    let broker = PrivateBroker::start();
    let db = TestDb::new("share");
    let classes = sim_classes(MACHINES);
    let setups: Vec<Setup> = (0..3)
        .map(|i| {
            let mut s = Setup::new(
                &db,
                &format!("share{i}"),
                &classes,
                &["cnc-type-a", "cnc-type-b"],
            );
            s.use_broker(&broker.uri(), &json!({}));
            s
        })
        .collect();
    // Each its own client_id and spool; one group on the topic the machines publish to.
    let shared = format!("$share/collectors/{}", setups[0].topic);
    for s in &setups {
        s.write_collector(&json!({"broker": {"uri": broker.uri(), "topic": shared}}));
    }
    let mut collectors: Vec<Collector> = setups.iter().map(Collector::start).collect();
    let publisher = generate(&setups[0], N, 3_000, 0, MACHINES);
    // One member killed three times, another stopped and started again, while the
    // machines publish: each member's share waits at the broker (persistent session)
    // or in its spool.
    for (i, pause_ms) in [(0, 900), (0, 1_300), (1, 700), (0, 1_100)] {
        thread::sleep(Duration::from_millis(pause_ms));
        if i == 0 {
            collectors[0].kill9();
        } else {
            assert!(collectors[1].stop().success());
        }
        collectors[i].restart();
    }
    finish(publisher);
    db.wait_count("SELECT COUNT(*) FROM cnc_data", N, WAIT);
    // Longer than a batch: a duplicate would show up by now.
    thread::sleep(Duration::from_millis(500));
    let (rows, distinct, lo, hi) = seq_stats(&db);
    let logs: String = collectors.iter().map(|c| c.log()).collect();
    assert_eq!(
        (rows, distinct, lo, hi),
        (N, N, 0, N as i64 - 1),
        "rows, distinct seq, min, max\n{logs}"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM dead_letters"), 0);
    // A collector with parallel writers has a row per writer (`<client_id>#writer-…`).
    let positions = db.count(
        "SELECT COUNT(DISTINCT SUBSTRING_INDEX(client_id, '#writer-', 1)) FROM collector_position",
    );
    assert_eq!(positions, 3, "position rows of each collector");

    // Each machine's status is the newest of its messages by the order the plugins
    // declare, whichever collector committed which message last.
    check_newest_status(&mut db.conn(), MACHINES, "3 collectors");
    for c in &mut collectors {
        assert!(c.stop().success());
    }
    eprintln!(
        "3 collectors in one $share group: {N} messages from {MACHINES} machines stored once, \
         through 3 kills and 1 stop"
    );
}

/// A writer left on a later server of `hosts` follows another that moved back to an
/// earlier one at its next idle check (every 2 s), not after its own 30 s: alone, an
/// idle writer's return once left the busy one committing on the later Galera node.
#[test]
fn a_writer_left_on_a_later_server_follows_another_back_at_its_idle_check() {
    // Server 1 of `hosts` is a proxy to the local MariaDB, refusing at first; server
    // 2 is the local MariaDB itself.
    let proxy = TcpProxy::start("127.0.0.1:3306");
    proxy.cut();
    let cfg = DbConfig {
        host: String::new(),
        port: 3306,
        hosts: vec![format!("127.0.0.1:{}", proxy.port), "127.0.0.1:3306".into()],
        user: "root".into(),
        password: String::new(),
        password_file: None,
        database: "mysql".into(),
        tls: None,
    };
    let metrics = Metrics::new(std::iter::empty(), std::iter::empty());
    let sink = |server: &ServerInUse| {
        MysqlSink::new(cfg.clone(), "follow-test", 1000, metrics.clone())
            .sharing_server(server.clone())
    };
    let idle_check = Duration::from_millis(2_100);
    let (shared, alone) = (ServerInUse::default(), ServerInUse::default());
    let (mut left_behind, mut on_its_own) = (sink(&shared), sink(&alone));
    thread::sleep(idle_check);
    left_behind.check_alive();
    on_its_own.check_alive();
    assert_eq!(proxy.forwarded(), 0, "server 1 refuses: both on server 2");

    proxy.restore();
    let mut moved = sink(&shared);
    thread::sleep(idle_check);
    moved.check_alive();
    assert_eq!(proxy.forwarded(), 1, "a new writer connects to server 1");
    left_behind.check_alive();
    assert_eq!(
        proxy.forwarded(),
        2,
        "the writer sharing the server follows the one on server 1"
    );
    on_its_own.check_alive();
    assert_eq!(
        proxy.forwarded(),
        2,
        "a writer not sharing stays on server 2 until its own 30 s"
    );
}
