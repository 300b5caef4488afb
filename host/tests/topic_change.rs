//! Changing `broker.topic` under a persistent session: the old subscription is
//! unsubscribed at the broker, so it neither delivers nor queues the old topic.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

/// A message of CNC001 whose part_program tells which topic it was sent on.
fn message(program: &str) -> String {
    format!(
        r#"{{"cnc_id":"CNC001","part_program":"{program}","timestamp":1747379028,"payload":{{"status":"running","spin":1,"X-Axis":0,"Y-Axis":0}}}}"#
    )
}

fn stored(db: &TestDb, program_prefix: &str) -> u64 {
    db.count(&format!(
        "SELECT COUNT(*) FROM cnc_data WHERE part_program LIKE '{program_prefix}%'"
    ))
}

#[test]
fn a_changed_topic_unsubscribes_the_old_one_at_the_broker() {
    let db = TestDb::new("topicchg");
    let mut setup = Setup::cnc001_type_a(&db, "topicchg");
    let topic_a = setup.topic.clone();
    let topic_b = format!("{topic_a}/b");
    let send = |topic: &str, program: &str| publish(BROKER, topic, &[message(program).as_bytes()]);

    // On topic A, with the persistent session the collector always uses.
    let mut collector = Collector::start(&setup);
    send(&topic_a, "A-first");
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", 1, WAIT),
        1,
        "{}",
        collector.log()
    );
    assert!(collector.stop().success(), "{}", collector.log());
    let remembered =
        std::fs::read_to_string(setup.path().join("spool/subscriptions.json")).unwrap();
    assert!(remembered.contains(&topic_a), "{remembered}");

    // Moved to topic B: the session is kept, and A is unsubscribed in it.
    setup.topic = topic_b.clone();
    setup.write_collector(&serde_json::json!({}));
    collector.restart();
    collector.wait_log(
        &format!("unsubscribed from old topic {topic_a:?} (no longer broker.topic)"),
        WAIT,
    );
    send(&topic_a, "A-after-change");
    send(&topic_b, "B-first");
    // A's message went to the broker before B's, so had it been delivered it would be
    // stored by the time B's is.
    assert_eq!(
        db.wait_count(
            "SELECT COUNT(*) FROM cnc_data WHERE part_program = 'B-first'",
            1,
            WAIT
        ),
        1,
        "{}",
        collector.log()
    );
    assert_eq!(stored(&db, "A-after"), 0, "{}", collector.log());

    // Stopped again: a message to A is not queued for the session any more.
    assert!(collector.stop().success(), "{}", collector.log());
    send(&topic_a, "A-while-stopped");
    send(&topic_b, "B-while-stopped");
    collector.restart();
    assert_eq!(
        db.wait_count(
            "SELECT COUNT(*) FROM cnc_data WHERE part_program = 'B-while-stopped'",
            1,
            WAIT
        ),
        1,
        "{}",
        collector.log()
    );
    send(&topic_b, "B-last");
    assert_eq!(
        db.wait_count(
            "SELECT COUNT(*) FROM cnc_data WHERE part_program = 'B-last'",
            1,
            WAIT
        ),
        1,
        "{}",
        collector.log()
    );
    assert_eq!(stored(&db, "A-"), 1, "only A-first: {}", collector.log());
    assert_eq!(stored(&db, "B-"), 3, "{}", collector.log());
    let remembered =
        std::fs::read_to_string(setup.path().join("spool/subscriptions.json")).unwrap();
    assert!(
        remembered.contains(&topic_b) && !remembered.contains(&format!("\"{topic_a}\"")),
        "{remembered}"
    );
    // Nothing left to unsubscribe at the last start.
    assert_eq!(
        collector
            .log()
            .matches("unsubscribed from old topic")
            .count(),
        1,
        "{}",
        collector.log()
    );
}
