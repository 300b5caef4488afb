//! A collector's config directory: collector.json, db_config.json, cnc_classes.json and
//! the plugins directory, written for the test's database, topic and client id.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use super::{plugin_lib, publish, unique, TestDb, BROKER};

/// cnc_classes.json for these (cnc_id, class) pairs.
pub fn classes(pairs: &[(&str, &str)]) -> String {
    let list: Vec<_> = pairs
        .iter()
        .map(|(id, class)| serde_json::json!({"cnc_id": id, "class_name": class}))
        .collect();
    serde_json::Value::Array(list).to_string()
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

    /// [`Setup::new`] for the smallest plant: machine CNC001 of class CNCTypeA, and the
    /// cnc-type-a plugin.
    pub fn cnc001_type_a(db: &TestDb, tag: &str) -> Setup {
        Setup::new(
            db,
            tag,
            &classes(&[("CNC001", "CNCTypeA")]),
            &["cnc-type-a"],
        )
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
        self.write_db_config(db, port, "root", "");
    }

    /// db_config.json for `db` as `user` with `password`.
    pub fn write_db_user(&self, db: &TestDb, user: &str, password: &str) {
        self.write_db_config(db, 3306, user, password);
    }

    fn write_db_config(&self, db: &TestDb, port: u16, user: &str, password: &str) {
        self.write(
            "db_config.json",
            &serde_json::json!({"host":"127.0.0.1","port":port,"user":user,"password":password,"database":db.name})
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

    /// Waits until the spool holds the records of `messages`, published to this
    /// setup's topic; fails after `timeout`.
    pub fn wait_spooled<M: AsRef<[u8]>>(&self, messages: &[M], timeout: Duration) {
        // Each record: 8 bytes of header, 10 of sequence number and topic length,
        // topic, payload.
        let want: u64 = messages
            .iter()
            .map(|m| (18 + self.topic.len() + m.as_ref().len()) as u64)
            .sum();
        let until = Instant::now() + timeout;
        while self.spool_bytes() < want {
            assert!(
                Instant::now() < until,
                "spool has {} of {want} bytes after {timeout:?}",
                self.spool_bytes()
            );
            thread::sleep(Duration::from_millis(50));
        }
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

    pub fn publish<M: AsRef<[u8]>>(&self, messages: &[M]) {
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
