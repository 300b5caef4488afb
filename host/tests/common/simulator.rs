//! `cnc-sim`, the machine simulator: the classes and messages of simulated machines,
//! and the checks of what the collector stored of them.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use mysql::{prelude::Queryable, Conn};

use super::{publish, unique, Setup, TestDb, BROKER};

/// Runs `cnc-sim` with these arguments.
pub fn cnc_sim(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cnc-sim"));
    cmd.args(args);
    cmd
}

/// cnc_classes.json for `cnc-sim generate --machines n`.
pub fn sim_classes(n: usize) -> String {
    let out = super::build::run_ok(cnc_sim(&["classes", "--machines", &n.to_string()]));
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `cnc-sim generate` against the setup's broker and topic.
pub fn generate(setup: &Setup, count: u64, rate: u64, start_seq: u64, machines: usize) -> Child {
    generate_cmd(setup, count, rate, start_seq, machines)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The `cnc-sim generate` of [`generate`], for a caller that adds to it or runs it
/// otherwise.
pub fn generate_cmd(
    setup: &Setup,
    count: u64,
    rate: u64,
    start_seq: u64,
    machines: usize,
) -> Command {
    cnc_sim(&[
        "generate",
        "--broker",
        &setup.broker,
        "--topic",
        &setup.topic,
        "--machines",
        &machines.to_string(),
        "--count",
        &count.to_string(),
        "--rate",
        &rate.to_string(),
        "--start-seq",
        &start_seq.to_string(),
    ])
}

/// `cnc-sim record` into `out` of `messages`, published to a topic of its own once it
/// has subscribed; returns the summary line it ends with.
pub fn record<M: AsRef<[u8]>>(messages: &[M], out: &Path) -> String {
    let topic = format!("test/{}", unique("record"));
    let mut recorder = cnc_sim(&[
        "record",
        "--out",
        out.to_str().unwrap(),
        "--count",
        &messages.len().to_string(),
        "--timeout-secs",
        "20",
        "--topic",
        &topic,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(recorder.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    publish(BROKER, &topic, messages);
    let mut summary = String::new();
    stdout.read_line(&mut summary).unwrap();
    assert!(recorder.wait().unwrap().success(), "{summary}");
    summary
}

/// Waits for a publisher and checks it lost nothing.
pub fn finish(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cnc-sim failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// (rows, distinct seq, min seq, max seq) of generated messages in cnc_data.
pub fn seq_stats(db: &TestDb) -> (u64, u64, i64, i64) {
    seq_stats_in(&mut db.conn())
}

/// [`seq_stats`] through `conn`, a connection to the test's database.
pub fn seq_stats_in(conn: &mut Conn) -> (u64, u64, i64, i64) {
    let row: Option<(u64, u64, Option<i64>, Option<i64>)> = conn
        .query_first(
            "SELECT COUNT(*), COUNT(DISTINCT JSON_EXTRACT(json_data, '$.seq')), \
             MIN(CAST(JSON_EXTRACT(json_data, '$.seq') AS SIGNED)), MAX(CAST(JSON_EXTRACT(json_data, '$.seq') AS SIGNED)) \
             FROM cnc_data",
        )
        .unwrap();
    let (n, d, lo, hi) = row.unwrap();
    (n, d, lo.unwrap_or(-1), hi.unwrap_or(-1))
}

/// The columns `Db::upsert_newest` orders `cnc_status` by, for a generated message:
/// the timestamp, then the other columns in the plugin's order.
type StatusKey = (i64, String, f64, Option<f64>, Option<i64>, String);
/// A machine's row: its cnc_id and [`StatusKey`].
type StatusRow = (String, i64, String, f64, Option<f64>, Option<i64>, String);

/// Checks through `conn` that each of the `machines` generated machines has its
/// cnc_status row at the greatest of its messages (timestamp first), whichever
/// collector committed which message last; `what` begins the failure messages.
pub fn check_newest_status(conn: &mut Conn, machines: usize, what: &str) {
    let mut newest: BTreeMap<String, StatusKey> = BTreeMap::new();
    let all: Vec<StatusRow> = conn
        .query(
            "SELECT cnc_id, timestamp, JSON_UNQUOTE(JSON_EXTRACT(json_data, '$.status')), \
             CAST(JSON_EXTRACT(json_data, '$.spin') AS DOUBLE), \
             CAST(JSON_EXTRACT(json_data, '$.feed_rate') AS DOUBLE), \
             CAST(JSON_EXTRACT(json_data, '$.part_count') AS SIGNED), part_program FROM cnc_data",
        )
        .unwrap();
    for (id, ts, status, spin, feed, count, program) in all {
        let key = (ts, status, spin, feed, count, program);
        let slot = newest.entry(id).or_insert_with(|| key.clone());
        let greater = (key.0, &key.1, key.2, key.3, key.4, &key.5)
            .partial_cmp(&(slot.0, &slot.1, slot.2, slot.3, slot.4, &slot.5))
            == Some(std::cmp::Ordering::Greater);
        if greater {
            *slot = key;
        }
    }
    let status: Vec<StatusRow> = conn
        .query(
            "SELECT cnc_id, timestamp, status, spin, feed_rate, part_count, part_program FROM cnc_status",
        )
        .unwrap();
    assert_eq!(status.len(), machines, "{what}: cnc_status rows");
    for (id, ts, st, spin, feed, count, program) in status {
        assert_eq!(
            Some(&(ts, st, spin, feed, count, program)),
            newest.get(&id),
            "{what}: cnc_status of {id}"
        );
    }
}
