//! Test harness: a database of the test's own, a config dir, the collector as a child
//! process, and a publisher. Every test uses its own database, topic and client id,
//! and cleans up after itself, so tests run in parallel against the real services.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod build;
pub mod faults;
pub mod http;

use std::{
    fs,
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use mysql::{prelude::Queryable, Conn, OptsBuilder};
use paho_mqtt as mqtt;

pub const BROKER: &str = "tcp://127.0.0.1:1883";
static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process and call.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// target/debug (or wherever this test binary was built).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The library `cargo build` makes of crate `crate_name` in `profile_dir` (a
/// `target/debug`).
pub fn lib_in(profile_dir: &Path, crate_name: &str) -> PathBuf {
    profile_dir.join(format!(
        "{}{}.{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    ))
}

/// A plugin library built by `cargo build --workspace` (scripts/test.sh does that
/// before the tests).
pub fn plugin_lib(crate_name: &str) -> PathBuf {
    let path = lib_in(&target_dir(), crate_name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A root connection to the test MariaDB, to `db` if given.
pub fn root_conn(db: Option<&str>) -> Conn {
    try_root_conn(db).expect("MariaDB on 127.0.0.1:3306 as root (scripts/test.sh starts it)")
}

/// As `root_conn`, for clean-up in `drop`, where a panic during a failing test's
/// unwinding would abort the test run.
pub fn try_root_conn(db: Option<&str>) -> mysql::Result<Conn> {
    let opts = OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(3306)
        .user(Some("root"))
        .pass(Some(""))
        .db_name(db);
    Conn::new(opts)
}

/// database.sql applied to a database of the test's own name.
pub fn schema_for(name: &str) -> Vec<String> {
    let sql = include_str!("../../../database.sql").replace("cnc_database", name);
    sql.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .split(';')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new(tag: &str) -> TestDb {
        let name = format!("mes_t_{}", unique(tag));
        let mut conn = root_conn(None);
        for stmt in schema_for(&name) {
            conn.query_drop(&stmt)
                .unwrap_or_else(|e| panic!("{stmt}: {e}"));
        }
        TestDb { name }
    }

    pub fn conn(&self) -> Conn {
        root_conn(Some(&self.name))
    }

    pub fn count(&self, sql: &str) -> u64 {
        self.conn().query_first::<u64, _>(sql).unwrap().unwrap_or(0)
    }

    pub fn rows<T: mysql::prelude::FromRow>(&self, sql: &str) -> Vec<T> {
        self.conn().query(sql).unwrap()
    }

    /// Polls `sql` (a COUNT) until it reaches `want` or `timeout` passes; returns the
    /// last value.
    pub fn wait_count(&self, sql: &str, want: u64, timeout: Duration) -> u64 {
        let until = Instant::now() + timeout;
        loop {
            let n = self.count(sql);
            if n >= want || Instant::now() > until {
                return n;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut root) = try_root_conn(None) {
            let _ = root.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}

/// A config dir for one collector.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub topic: String,
    pub client_id: String,
    pub broker: String,
}

impl Setup {
    /// Config for `db`, with `classes` as cnc_classes.json and the listed plugin crates
    /// in the plugins dir.
    pub fn new(db: &TestDb, tag: &str, classes: &str, plugins: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let id = unique(tag);
        let setup = Setup {
            dir,
            topic: format!("test/{id}"),
            client_id: format!("mes-test-{id}"),
            broker: BROKER.to_string(),
        };
        fs::create_dir(setup.plugins_dir()).unwrap();
        // The host refuses plugins that group or others could replace, whatever the
        // umask of the machine running the tests.
        fs::set_permissions(setup.plugins_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        for p in plugins {
            setup.add_plugin(p);
        }
        setup.write_collector(&serde_json::json!({}));
        setup.write_db(db, 3306);
        setup.write("cnc_classes.json", classes);
        setup
    }

    /// Copies a workspace plugin crate's library into the plugins dir, mode 0644.
    pub fn add_plugin(&self, crate_name: &str) -> PathBuf {
        self.install_lib(&plugin_lib(crate_name))
    }

    /// Copies a library into the plugins dir, mode 0644, as a plant installs one.
    pub fn install_lib(&self, lib: &Path) -> PathBuf {
        let dest = self.plugins_dir().join(lib.file_name().unwrap());
        fs::copy(lib, &dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
        dest
    }

    /// db_config.json for `db` reached through `port` (a proxy's, say).
    pub fn write_db(&self, db: &TestDb, port: u16) {
        self.write(
            "db_config.json",
            &serde_json::json!({"host":"127.0.0.1","port":port,"user":"root","password":"","database":db.name})
                .to_string(),
        );
    }

    /// Points the collector (and `publish`) at another broker.
    pub fn use_broker(&mut self, uri: &str, extra: &serde_json::Value) {
        self.broker = uri.to_string();
        self.write_collector(extra);
    }

    /// Bytes of spool segments: the files `spool.max_bytes` bounds (the spool
    /// directory also holds the crash guard's marker and state).
    pub fn spool_bytes(&self) -> u64 {
        self.spool_segments()
            .iter()
            .filter_map(|p| p.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// The spool's segment files, oldest first.
    pub fn spool_segments(&self) -> Vec<PathBuf> {
        let mut segments: Vec<PathBuf> = fs::read_dir(self.path().join("spool"))
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "spool"))
                    .collect()
            })
            .unwrap_or_default();
        segments.sort();
        segments
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub fn write(&self, file: &str, text: &str) {
        fs::write(self.dir.path().join(file), text).unwrap();
    }

    /// collector.json with `extra` merged over the test defaults.
    pub fn write_collector(&self, extra: &serde_json::Value) {
        let mut c = serde_json::json!({
            "broker": {"uri": self.broker, "client_id": self.client_id, "topic": self.topic, "qos": 1},
            "plugins_dir": "plugins",
            // A free port each, so tests run in parallel.
            "metrics_addr": "127.0.0.1:0",
            "batch": {"max_messages": 200, "max_latency_ms": 20}
        });
        merge(&mut c, extra);
        self.write("collector.json", &c.to_string());
    }

    pub fn publish(&self, messages: &[&[u8]]) {
        publish(&self.broker, &self.topic, messages);
    }
}

fn merge(base: &mut serde_json::Value, extra: &serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e.clone(),
    }
}

/// Publishes at QoS 1 and waits for every acknowledgement.
pub fn publish(broker: &str, topic: &str, messages: &[&[u8]]) {
    let cli = mqtt::Client::new(
        mqtt::CreateOptionsBuilder::new()
            .server_uri(broker)
            .client_id(format!("pub-{}", unique("p")))
            .persistence(None)
            .finalize(),
    )
    .unwrap();
    cli.connect(
        mqtt::ConnectOptionsBuilder::new()
            .clean_session(true)
            .finalize(),
    )
    .expect("connect to the test broker");
    for m in messages {
        cli.publish(mqtt::Message::new(topic, *m, 1)).unwrap();
    }
    cli.disconnect(None).unwrap();
}

/// Runs the collector binary with a config dir, capturing its log.
pub fn mes_collector(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mes-collector"));
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("MES_DB_PASSWORD")
        .env_remove("MES_MQTT_PASSWORD");
    cmd
}

/// `mes-collector run` for `setup`, to its end, for a collector expected to refuse to
/// start: (exit code, log). Killed after `timeout` if it does start.
pub fn run_to_exit(setup: &Setup, timeout: Duration) -> (Option<i32>, String) {
    let mut child = mes_collector(&["run", "--config-dir", setup.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Collector {
    child: Option<Child>,
    log: PathBuf,
    setup_dir: PathBuf,
    broker: String,
    client_id: String,
    runs: u32,
    /// Options before the `run` command, such as `--log-format json`.
    global_args: Vec<String>,
}

impl Collector {
    /// Starts `mes-collector run` and waits until it has subscribed.
    pub fn start(setup: &Setup) -> Collector {
        Self::start_with(setup, &[])
    }

    /// [`Collector::start`] with options given before `run`.
    pub fn start_with(setup: &Setup, global_args: &[&str]) -> Collector {
        let mut c = Collector {
            child: None,
            log: setup.path().join("collector.log"),
            setup_dir: setup.path().to_path_buf(),
            broker: setup.broker.clone(),
            client_id: setup.client_id.clone(),
            runs: 0,
            global_args: global_args.iter().map(|a| a.to_string()).collect(),
        };
        c.restart();
        c
    }

    /// Starts the collector again (after `kill9` or `stop`), appending to the same log.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.runs += 1;
        let mut out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(out, "--- run {} ---", self.runs).unwrap();
        let mut args: Vec<&str> = self.global_args.iter().map(String::as_str).collect();
        args.extend(["run", "--config-dir", self.setup_dir.to_str().unwrap()]);
        let child = mes_collector(&args)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let marker = format!("--- run {} ---", self.runs);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            let this_run = &log[log.find(&marker).unwrap_or(0)..];
            if this_run.contains("subscribed to") {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("collector exited ({status}) before subscribing:\n{log}");
            }
            assert!(
                Instant::now() < until,
                "collector did not subscribe within 30 s:\n{log}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Peak resident memory (VmHWM) of the running collector, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "collector exited ({status}) before {needle:?}:\n{}",
                    self.log()
                );
            }
            if Instant::now() > until {
                panic!(
                    "no {needle:?} in the collector's log after {timeout:?}:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(Duration::from_secs(20))
            .unwrap_or_else(|| {
                panic!(
                    "collector did not stop within 20 s of SIGTERM:\n{}",
                    self.log()
                )
            })
    }

    /// SIGTERM, then waits up to `timeout` for the exit; SIGKILL and `None` past it,
    /// for callers that record a slow stop instead of failing on it.
    pub fn stop_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let until = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if the collector ended on its own; it then counts as stopped,
    /// so `restart` works.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
        // Removes the persistent session the collector left on the broker.
        if let Ok(cli) = mqtt::Client::new(
            mqtt::CreateOptionsBuilder::new()
                .server_uri(&self.broker)
                .client_id(&self.client_id)
                .persistence(None)
                .finalize(),
        ) {
            let opts = mqtt::ConnectOptionsBuilder::new()
                .clean_session(true)
                .connect_timeout(Duration::from_secs(2))
                .finalize();
            if cli.connect(opts).is_ok() {
                let _ = cli.disconnect(None);
            }
        }
        if thread::panicking() {
            eprintln!(
                "--- collector log ({}) ---\n{}",
                self.setup_dir.display(),
                self.log()
            );
        }
    }
}

pub const SAMPLES: [&str; 3] = [
    r#"{"cnc_id": "CNC001","part_program": "program_01","timestamp": "1747379028","payload":{"status": "running","spin":200,"X-Axis":30,"Y-Axis":80}}"#,
    r#"{"cnc_id": "CNC002","part_program": "program_02","timestamp": "1747379030","payload":{"status": "idle","spin":0,"X-Axis":0,"Y-Axis":0}}"#,
    r#"{"cnc_id": "CNC001","part_program": "program_03","timestamp": "1747379035","payload":{"status": "error","spin":100,"X-Axis":25,"Y-Axis":75}}"#,
];

/// `mes-collector check` on the setup: (passed, stdout).
pub fn check(setup: &Setup) -> (bool, String) {
    let out = mes_collector(&["check", "--config-dir", setup.path().to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `cnc-sim` with these arguments.
pub fn cnc_sim(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cnc-sim"));
    cmd.args(args);
    cmd
}

/// cnc_classes.json for `cnc-sim generate --machines n`.
pub fn sim_classes(n: usize) -> String {
    let out = cnc_sim(&["classes", "--machines", &n.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `cnc-sim generate` against the setup's broker and topic.
pub fn generate(setup: &Setup, count: u64, rate: u64, start_seq: u64, machines: usize) -> Child {
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
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
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
