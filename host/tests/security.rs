//! Security: the collector works with exactly the grants of `grants.sql`, the file the
//! Debian package ships for the DBA.

mod common;

use std::time::Duration;

use common::*;
use mysql::prelude::Queryable;

const WAIT: Duration = Duration::from_secs(30);

/// The GRANT statements of `grants.sql`, for this test's database and user.
fn shipped_grants(db: &str, user: &str) -> Vec<String> {
    let sql = include_str!("../../grants.sql");
    let grants: Vec<String> = sql
        .lines()
        .filter(|l| l.starts_with("GRANT"))
        .map(|l| {
            l.trim_end_matches(';')
                .replace("cnc_database", db)
                .replace("'mes_collector'@'%'", user)
        })
        .collect();
    assert!(!grants.is_empty(), "grants.sql has no GRANT line");
    grants
}

struct User {
    name: String,
    hosts: [&'static str; 2],
}

impl User {
    fn create(db: &TestDb) -> User {
        let name = unique("lp").replace('_', "");
        let user = User {
            name,
            hosts: ["localhost", "%"],
        };
        let mut root = db.conn();
        for host in user.hosts {
            let who = format!("'{}'@'{host}'", user.name);
            root.query_drop(format!("CREATE USER {who} IDENTIFIED BY 'lp-pass'"))
                .unwrap();
            for grant in shipped_grants(&db.name, &who) {
                root.query_drop(&grant)
                    .unwrap_or_else(|e| panic!("{grant}: {e}"));
            }
        }
        user
    }
}

impl Drop for User {
    fn drop(&mut self) {
        if let Ok(mut root) = try_root_conn(None) {
            for host in self.hosts {
                let _ = root.query_drop(format!("DROP USER IF EXISTS '{}'@'{host}'", self.name));
            }
        }
    }
}

#[test]
fn the_collector_works_with_the_least_privileges_the_shipped_grants() {
    let db = TestDb::new("leastpriv");
    let user = User::create(&db);
    let setup = Setup::new(
        &db,
        "leastpriv",
        r#"[{"cnc_id":"CNC001","class_name":"CNCTypeA"},{"cnc_id":"CNC002","class_name":"CNCTypeB"}]"#,
        &["cnc-type-a", "cnc-type-b"],
    );
    setup.write_db_user(&db, &user.name, "lp-pass");
    // The grants are really that narrow: no DDL, no access to other tables.
    let mut conn = mysql::Conn::new(
        mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .prefer_socket(false)
            .user(Some(user.name.as_str()))
            .pass(Some("lp-pass"))
            .db_name(Some(db.name.as_str())),
    )
    .unwrap();
    assert!(conn.query_drop("CREATE TABLE nope (x INT)").is_err());
    assert!(conn.query_drop("DELETE FROM cnc_data").is_err());

    let (ok, text) = check(&setup);
    assert!(ok, "{text}");

    let mut collector = Collector::start(&setup);
    let alarm = r#"{"cnc_id":"CNC002","part_program":"p","timestamp":5,"payload":{"status":"error","spin":1,"X-Axis":0,"Y-Axis":0,"alarms":[{"code":7,"message":"x"}]}}"#;
    let mut msgs = SAMPLES.to_vec();
    msgs.push(alarm);
    msgs.push("{ not json");
    setup.publish(&msgs);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", 4, WAIT),
        4,
        "{}",
        collector.log()
    );
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM dead_letters", 1, WAIT),
        1
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM cnc_alarms"), 1);
    assert_eq!(db.count("SELECT COUNT(*) FROM cnc_status"), 2);
    // One collector's rows (one per writer that committed).
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT SUBSTRING_INDEX(client_id, '#writer-', 1)) FROM collector_position"),
        1
    );
    // Restarting reads the position back with the same grants.
    assert!(collector.stop().success());
    collector.restart();
    setup.publish(&[SAMPLES[1].as_bytes()]);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", 5, WAIT),
        5,
        "{}",
        collector.log()
    );
    assert!(!collector.log().contains("denied"), "{}", collector.log());
}

#[test]
fn plugin_files_others_could_replace_or_not_on_the_allow_list_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new("trust");
    let setup = Setup::new(
        &db,
        "trust",
        r#"[{"cnc_id":"CNC001","class_name":"CNCTypeA"},{"cnc_id":"CNC002","class_name":"CNCTypeB"}]"#,
        &["cnc-type-a", "cnc-type-b"],
    );
    let b = setup.plugins_dir().join("libcnc_type_b.so");

    // World-writable file: refused with the fix; the other plugin still loads.
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, text) = check(&setup);
    assert!(!ok);
    assert!(
        text.contains("libcnc_type_b.so") && text.contains("writable by group or others"),
        "{text}"
    );
    assert!(text.contains("chmod go-w"), "{text}");
    assert!(
        text.contains("CNCTypeA") && text.contains("1.0.0    ok"),
        "{text}"
    );

    // Group-writable directory: nothing loads from it.
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(setup.plugins_dir(), std::fs::Permissions::from_mode(0o775)).unwrap();
    let (ok, text) = check(&setup);
    assert!(
        !ok && text.contains("writable by group or others"),
        "{text}"
    );
    std::fs::set_permissions(setup.plugins_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // The allow list: digests from `mes-collector plugins`.
    let out = mes_collector(&["plugins", setup.plugins_dir().to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let digest_of = |file: &str| {
        listing
            .lines()
            .find(|l| l.trim_end().ends_with(file) && l.trim().len() > 64)
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no digest for {file} in:\n{listing}"))
    };
    let digest_a = digest_of("libcnc_type_a.so");
    assert_eq!(digest_a.len(), 64);
    setup.write_collector(&serde_json::json!({"plugins": {"allow": [digest_a]}}));
    let (ok, text) = check(&setup);
    assert!(!ok);
    assert!(
        text.contains("libcnc_type_b.so") && text.contains("not in plugins.allow"),
        "{text}"
    );
    assert!(text.contains("libcnc_type_a.so  CNCTypeA"), "{text}");

    // Both allowed: all checks pass, and the collector stores through both.
    let digest_b = digest_of("libcnc_type_b.so");
    setup.write_collector(
        &serde_json::json!({"plugins": {"allow": [digest_of("libcnc_type_a.so"), digest_b]}}),
    );
    let (ok, text) = check(&setup);
    assert!(ok, "{text}");
    let collector = Collector::start(&setup);
    setup.publish(&SAMPLES);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", 3, WAIT),
        3,
        "{}",
        collector.log()
    );
}

/// `mes-collector plugins` with these arguments: (exit code, stdout, stderr).
fn plugins_cmd(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["plugins"];
    all.extend(args);
    let out = mes_collector(&all).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugins_applies_the_collectors_policy_and_prints_the_allow_entry_of_an_upgrade() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new("plugpol");
    let setup = Setup::new(
        &db,
        "plugpol",
        r#"[{"cnc_id":"CNC001","class_name":"CNCTypeA"},{"cnc_id":"CNC002","class_name":"CNCTypeB"}]"#,
        &["cnc-type-a", "cnc-type-b"],
    );
    let config_dir = setup.path().to_str().unwrap().to_string();
    let plugins_dir = setup.plugins_dir();
    let entry_of = |file: &std::path::Path| {
        let (code, out, err) = plugins_cmd(&[
            "allow-entry",
            file.to_str().unwrap(),
            "--config-dir",
            &config_dir,
        ]);
        assert_eq!(code, Some(0), "{out}{err}");
        let entry: String = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("not one JSON string ({e}): {out}"));
        assert_eq!(entry.len(), 64, "{out}");
        (entry, err)
    };
    let (digest_a, _) = entry_of(&plugins_dir.join("libcnc_type_a.so"));
    let (digest_b, err) = entry_of(&plugins_dir.join("libcnc_type_b.so"));
    assert!(err.contains("class CNCTypeB, version 1.0.0"), "{err}");

    // Only A pinned: `plugins` refuses B as `run` (and `check`) do, and says why.
    setup.write_collector(&serde_json::json!({"plugins": {"allow": [digest_a]}}));
    let (code, out, err) = plugins_cmd(&["--config-dir", &config_dir]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("plugins.allow: 1 SHA-256 digest(s)") && out.contains("collector.json"),
        "{out}"
    );
    assert!(
        out.contains("libcnc_type_b.so: `run` under this policy refuses it")
            && out.contains("not in plugins.allow"),
        "{out}"
    );
    let (ok, text) = check(&setup);
    assert!(!ok && text.contains("not in plugins.allow"), "{text}");
    // A bare directory is listed under the default policy, and says so.
    let (code, out, err) = plugins_cmd(&[plugins_dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("policy: the default (no plugins.allow)"),
        "{out}"
    );

    // B's entry added: all loads.
    setup.write_collector(&serde_json::json!({"plugins": {"allow": [digest_a, digest_b]}}));
    let (code, out, err) = plugins_cmd(&["--config-dir", &config_dir]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (_, err) = entry_of(&plugins_dir.join("libcnc_type_b.so"));
    assert!(err.contains("already in plugins.allow"), "{err}");

    // A new build of A (same code, other bytes: another digest), staged elsewhere.
    let staged = setup.path().join("staging");
    std::fs::create_dir(&staged).unwrap();
    let new_a = staged.join("libcnc_type_a.so");
    let mut bytes = std::fs::read(plugins_dir.join("libcnc_type_a.so")).unwrap();
    bytes.extend_from_slice(b"\0rebuilt");
    std::fs::write(&new_a, bytes).unwrap();
    std::fs::set_permissions(&new_a, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = plugins_cmd(&[staged.to_str().unwrap(), "--config-dir", &config_dir]);
    assert_eq!(
        code,
        Some(1),
        "the pinned policy refuses the new build:\n{out}{err}"
    );
    let (digest_new, err) = entry_of(&new_a);
    assert_ne!(digest_new, digest_a);
    assert!(
        err.contains(&format!("it replaces {digest_a:?}")) && err.contains("class CNCTypeA"),
        "{err}"
    );
    // Installed before the entry is changed: `plugins` and `check` refuse it, and
    // allow-entry names the entry that matches no file any more.
    std::fs::copy(&new_a, plugins_dir.join("libcnc_type_a.so")).unwrap();
    let (code, out, err) = plugins_cmd(&["--config-dir", &config_dir]);
    assert_eq!(code, Some(1), "{out}{err}");
    let (_, err) = entry_of(&plugins_dir.join("libcnc_type_a.so"));
    assert!(
        err.contains("match no file there any more") && err.contains(&digest_a),
        "{err}"
    );
    // The printed entry in place of the old one: loads, and the collector stores
    // through it.
    setup.write_collector(&serde_json::json!({"plugins": {"allow": [digest_new, digest_b]}}));
    let (code, out, err) = plugins_cmd(&["--config-dir", &config_dir]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (ok, text) = check(&setup);
    assert!(ok, "{text}");

    // A file that `run` refuses whatever the allow list says gets no entry.
    std::fs::set_permissions(&new_a, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, out, err) = plugins_cmd(&[
        "allow-entry",
        new_a.to_str().unwrap(),
        "--config-dir",
        &config_dir,
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("writable by group or others"), "{err}");
}

enum Want {
    Stored,
    Dead(&'static str),
}

#[test]
fn hostile_input_is_stored_as_data_or_dead_lettered_and_never_executed() {
    let db = TestDb::new("hostile");
    let sql_id = "x'); DROP TABLE cnc_data; --";
    let classes = serde_json::json!([
        {"cnc_id": "CNC001", "class_name": "CNCTypeA"},
        {"cnc_id": "CNCB", "class_name": "CNCTypeB"},
        {"cnc_id": "CNCF", "class_name": "FaultyTest"},
        {"cnc_id": sql_id, "class_name": "CNCTypeA"},
    ]);
    let setup = Setup::new(
        &db,
        "hostile",
        &classes.to_string(),
        &["cnc-type-a", "cnc-type-b", "faulty-plugin"],
    );
    let mut collector = Collector::start(&setup);

    let env = |cnc: &str, program: &str, payload: &str| {
        format!(
            r#"{{"cnc_id":{},"part_program":{},"timestamp":1747379028,"payload":{payload}}}"#,
            serde_json::to_string(cnc).unwrap(),
            serde_json::to_string(program).unwrap()
        )
    };
    let good_payload = r#"{"status":"idle","spin":0,"X-Axis":0,"Y-Axis":0}"#;
    let mut many_keys = String::from(r#"{"status":"idle","spin":0,"X-Axis":0,"Y-Axis":0"#);
    for i in 0..10_000 {
        many_keys.push_str(&format!(r#","k{i}":{i}"#));
    }
    many_keys.push('}');
    let deep = format!(
        r#"{{"status":"idle","spin":0,"X-Axis":0,"Y-Axis":0,"d":{}1{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("oversize", env("CNC001", "p", &format!(r#"{{"pad":"{}"}}"#, "x".repeat(300 * 1024))).into_bytes(), Want::Dead("too_large")),
        ("deeply nested", env("CNC001", "p", &deep).into_bytes(), Want::Dead("too_deep")),
        ("invalid UTF-8", b"{\"cnc_id\":\"CNC\xff\xfe\",\"part_program\":\"p\",\"timestamp\":1,\"payload\":{}}".to_vec(), Want::Dead("not_json")),
        ("raw NUL byte", b"{\"cnc_id\":\"CNC001\0\",\"part_program\":\"p\",\"timestamp\":1,\"payload\":{}}".to_vec(), Want::Dead("not_json")),
        ("escaped NUL in a field", env("CNC001", "prog\u{0}ram", good_payload).into_bytes(), Want::Stored),
        ("huge number in the envelope", br#"{"cnc_id":"CNC001","part_program":"p","timestamp":1e400,"payload":{}}"#.to_vec(), Want::Dead("not_json")),
        ("huge integer timestamp", br#"{"cnc_id":"CNC001","part_program":"p","timestamp":99999999999999999999999,"payload":{}}"#.to_vec(), Want::Dead("bad_envelope")),
        ("huge but valid float", env("CNC001", "p", r#"{"status":"idle","spin":1e308,"X-Axis":-1e308,"Y-Axis":5e-324}"#).into_bytes(), Want::Stored),
        ("duplicate envelope key", br#"{"cnc_id":"CNC001","cnc_id":"CNC002","part_program":"p","timestamp":1,"payload":{}}"#.to_vec(), Want::Dead("bad_envelope")),
        ("duplicate payload key", env("CNC001", "p", r#"{"status":"idle","status":"run","spin":0,"X-Axis":0,"Y-Axis":0}"#).into_bytes(), Want::Dead("plugin_error")),
        ("10,000-key payload", env("CNC001", "p", &many_keys).into_bytes(), Want::Stored),
        ("SQL in every field", env(sql_id, "'; DELETE FROM cnc_status; --", r#"{"status":"' OR '1'='1","spin":0,"X-Axis":0,"Y-Axis":0,"note":"`; DROP DATABASE x; --"}"#).into_bytes(), Want::Stored),
        ("SQL in alarm texts", env("CNCB", "p", r#"{"status":"error","spin":0,"X-Axis":0,"Y-Axis":0,"alarms":[{"code":"1' OR '1'='1","message":"\"); TRUNCATE cnc_alarms; --"}]}"#).into_bytes(), Want::Stored),
        ("non-identifier column from a plugin", env("CNCF", "p", r#"{"action":"bad_identifier"}"#).into_bytes(), Want::Dead("plugin_error")),
        ("unicode", env("CNC001", "Programm_ä_漢字_🛠", good_payload).into_bytes(), Want::Stored),
        ("empty message", Vec::new(), Want::Dead("not_json")),
        ("JSON but not an object", b"[1,2,3]".to_vec(), Want::Dead("bad_envelope")),
    ];
    for (_, bytes, _) in &cases {
        setup.publish(&[bytes.as_slice()]);
    }
    let stored = cases.iter().filter(|c| matches!(c.2, Want::Stored)).count() as u64;
    let dead = cases.len() as u64 - stored;
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", stored, WAIT),
        stored,
        "{}",
        collector.log()
    );
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM dead_letters", dead, WAIT),
        dead,
        "{}",
        collector.log()
    );

    let mut want_reasons: Vec<&str> = cases
        .iter()
        .filter_map(|c| {
            if let Want::Dead(r) = c.2 {
                Some(r)
            } else {
                None
            }
        })
        .collect();
    let mut got_reasons: Vec<String> = db.rows("SELECT reason FROM dead_letters");
    want_reasons.sort();
    got_reasons.sort();
    assert_eq!(got_reasons, want_reasons, "{}", collector.log());

    // Stored exactly as data.
    let programs: Vec<String> = db.rows("SELECT part_program FROM cnc_data ORDER BY id");
    assert!(
        programs.contains(&"prog\u{0}ram".to_string()),
        "{programs:?}"
    );
    assert!(
        programs.contains(&"Programm_ä_漢字_🛠".to_string()),
        "{programs:?}"
    );
    assert!(
        programs.contains(&"'; DELETE FROM cnc_status; --".to_string()),
        "{programs:?}"
    );
    let ids: Vec<String> = db.rows("SELECT cnc_id FROM cnc_status ORDER BY cnc_id");
    assert!(ids.contains(&sql_id.to_string()), "{ids:?}");
    let status: Vec<String> = db.rows(&format!(
        "SELECT status FROM cnc_status WHERE cnc_id = {}",
        mysql_quote(sql_id)
    ));
    assert_eq!(status, vec!["' OR '1'='1".to_string()]);
    let alarm: Vec<(String, String)> = db.rows("SELECT code, message FROM cnc_alarms");
    assert_eq!(
        alarm,
        vec![(
            "1' OR '1'='1".to_string(),
            "\"); TRUNCATE cnc_alarms; --".to_string()
        )]
    );
    let wide: Vec<String> =
        db.rows("SELECT json_data FROM cnc_data WHERE JSON_LENGTH(json_data) > 10000");
    assert_eq!(wide.len(), 1);
    let oversize: Vec<(u64, u64)> = db
        .rows("SELECT LENGTH(payload), payload_bytes FROM dead_letters WHERE reason = 'too_large'");
    assert_eq!(
        oversize,
        vec![(65_536, 256 * 1024 + 1)],
        "spooled one byte past the limit, kept 64 KiB"
    );

    // Still alive, still storing, nothing executed.
    setup.publish(&[SAMPLES[0].as_bytes()]);
    assert_eq!(
        db.wait_count("SELECT COUNT(*) FROM cnc_data", stored + 1, WAIT),
        stored + 1
    );
    assert!(collector.stop().success(), "{}", collector.log());
}

fn mysql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

mod tls {
    use std::{
        os::unix::fs::PermissionsExt,
        path::{Path, PathBuf},
        process::Command,
    };

    use super::*;
    use common::faults::PrivateBroker;

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A CA, a server certificate from it for `names`, and an unrelated CA.
    pub struct Certs {
        pub dir: tempfile::TempDir,
    }

    impl Certs {
        pub fn new() -> Certs {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let ec = [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ];
            for ca in ["ca", "other-ca"] {
                let (key, crt, subj) = (
                    format!("{ca}.key"),
                    format!("{ca}.crt"),
                    format!("/CN=test {ca}"),
                );
                let mut args = vec!["req", "-x509"];
                args.extend(ec);
                args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
                openssl(d, &args);
            }
            for (name, san) in [
                ("server", "DNS:localhost,IP:127.0.0.1"),
                ("wrong-name", "DNS:elsewhere.example"),
                ("client", "DNS:mes-collector"),
            ] {
                let (key, csr, crt, ext) = (
                    format!("{name}.key"),
                    format!("{name}.csr"),
                    format!("{name}.crt"),
                    format!("{name}.ext"),
                );
                std::fs::write(d.join(&ext), format!("subjectAltName={san}\n")).unwrap();
                let mut args = vec!["req"];
                args.extend(ec);
                args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=broker"]);
                openssl(d, &args);
                openssl(
                    d,
                    &[
                        "x509",
                        "-req",
                        "-in",
                        &csr,
                        "-CA",
                        "ca.crt",
                        "-CAkey",
                        "ca.key",
                        "-CAcreateserial",
                        "-out",
                        &crt,
                        "-days",
                        "2",
                        "-extfile",
                        &ext,
                    ],
                );
            }
            let passwd = d.join("passwd");
            let out = Command::new("mosquitto_passwd")
                .args([
                    "-b",
                    "-c",
                    passwd.to_str().unwrap(),
                    "collector",
                    "broker-pass",
                ])
                .output()
                .expect("mosquitto_passwd");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Mosquitto reads them after dropping to its own user.
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            for f in std::fs::read_dir(d).unwrap() {
                std::fs::set_permissions(f.unwrap().path(), std::fs::Permissions::from_mode(0o644))
                    .unwrap();
            }
            Certs { dir }
        }

        pub fn path(&self, file: &str) -> PathBuf {
            self.dir.path().join(file)
        }

        /// A broker with a TLS listener using `server` (a certificate name above) and
        /// the password file.
        pub fn broker(&self, server: &str) -> PrivateBroker {
            self.broker_with(server, "")
        }

        /// As `broker`, with more listener settings.
        pub fn broker_with(&self, server: &str, more: &str) -> PrivateBroker {
            let (ca, crt, key, pw) = (
                self.path("ca.crt"),
                self.path(&format!("{server}.crt")),
                self.path(&format!("{server}.key")),
                self.path("passwd"),
            );
            let more = more.to_string();
            PrivateBroker::start_with(move |_| {
                format!(
                    "cafile {}\ncertfile {}\nkeyfile {}\npassword_file {}\n{more}",
                    ca.display(),
                    crt.display(),
                    key.display(),
                    pw.display()
                )
            })
        }
    }

    /// A MariaDB of the test's own on a free port, serving TLS with a certificate
    /// from `certs` and refusing plain connections.
    struct PrivateMariaDb {
        port: u16,
        dir: tempfile::TempDir,
        child: std::process::Child,
    }

    impl PrivateMariaDb {
        fn start(certs: &Certs, server: &str) -> PrivateMariaDb {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let out = Command::new("mariadb-install-db")
                .args([
                    "--no-defaults",
                    "--auth-root-authentication-method=normal",
                    "--user=root",
                    "--skip-test-db",
                ])
                .arg(format!("--datadir={}", data.display()))
                .output()
                .expect("mariadb-install-db (scripts/test.sh installs mariadb-server)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mariadbd = ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .expect("mariadbd");
            let child = Command::new(mariadbd)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--socket={}", dir.path().join("sock").display()))
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .args([
                    "--user=root",
                    "--skip-log-bin",
                    "--require-secure-transport=ON",
                ])
                .arg(format!("--ssl-ca={}", certs.path("ca.crt").display()))
                .arg(format!(
                    "--ssl-cert={}",
                    certs.path(&format!("{server}.crt")).display()
                ))
                .arg(format!(
                    "--ssl-key={}",
                    certs.path(&format!("{server}.key")).display()
                ))
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("error.log")).unwrap())
                .spawn()
                .unwrap();
            let until = std::time::Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < until,
                    "private mariadbd did not listen"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            let db = PrivateMariaDb { port, dir, child };
            let ssl = mysql::SslOpts::default().with_root_cert_path(Some(certs.path("ca.crt")));
            let mut conn = db.conn(Some(ssl.with_danger_skip_domain_validation(true)));
            create_schema(&mut conn, "cnc_database");
            db
        }

        fn conn(&self, ssl: Option<mysql::SslOpts>) -> mysql::Conn {
            mysql::Conn::new(
                mysql::OptsBuilder::new()
                    .ip_or_hostname(Some("127.0.0.1"))
                    .tcp_port(self.port)
                    .prefer_socket(false)
                    .user(Some("root"))
                    .ssl_opts(ssl),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "{e}: {}",
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
                )
            })
        }
    }

    impl Drop for PrivateMariaDb {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn the_collector_reaches_mysql_over_tls_only_with_a_certificate_it_trusts() {
        let certs = Certs::new();
        let server = PrivateMariaDb::start(&certs, "server");
        let db = TestDb::new("dbtls"); // only for the Setup's defaults
        let mut setup = Setup::cnc001_type_a(&db, "dbtls");
        let db_config = |host: &str, ca: &str, verify: bool| {
            serde_json::json!({"host": host, "port": server.port, "user": "root", "password": "", "database": "cnc_database",
                               "tls": {"ca_file": certs.path(ca), "verify_hostname": verify}})
            .to_string()
        };
        let broker = setup.broker.clone();
        setup.use_broker(&broker, &serde_json::json!({}));

        // Trusted CA, matching name: connected, rows stored, over TLS.
        setup.write("db_config.json", &db_config("localhost", "ca.crt", true));
        let (ok, text) = check(&setup);
        assert!(ok, "{text}");
        let collector = Collector::start(&setup);
        setup.publish(&[SAMPLES[0].as_bytes()]);
        let mut conn = server.conn(Some(
            mysql::SslOpts::default()
                .with_root_cert_path(Some(certs.path("ca.crt")))
                .with_danger_skip_domain_validation(true),
        ));
        let until = std::time::Instant::now() + WAIT;
        loop {
            let n: u64 = conn
                .query_first("SELECT COUNT(*) FROM cnc_database.cnc_data")
                .unwrap()
                .unwrap();
            if n == 1 {
                break;
            }
            assert!(std::time::Instant::now() < until, "{}", collector.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(collector);

        // Plain connections are refused by this server: the collector used TLS.
        assert!(mysql::Conn::new(
            mysql::OptsBuilder::new()
                .ip_or_hostname(Some("127.0.0.1"))
                .tcp_port(server.port)
                .prefer_socket(false)
                .user(Some("root"))
        )
        .is_err());

        // A CA the server's certificate does not come from: refused.
        setup.write(
            "db_config.json",
            &db_config("localhost", "other-ca.crt", true),
        );
        let (ok, text) = check(&setup);
        assert!(!ok && text.contains("cannot connect"), "{text}");

        // The right CA but a certificate for another name: refused, unless the name
        // check is turned off.
        let elsewhere = PrivateMariaDb::start(&certs, "wrong-name");
        let elsewhere_config = |verify: bool| {
            serde_json::json!({"host": "localhost", "port": elsewhere.port, "user": "root", "password": "",
                               "database": "cnc_database", "tls": {"ca_file": certs.path("ca.crt"), "verify_hostname": verify}})
            .to_string()
        };
        setup.write("db_config.json", &elsewhere_config(true));
        let (ok, text) = check(&setup);
        assert!(!ok && text.contains("cannot connect"), "{text}");
        setup.write("db_config.json", &elsewhere_config(false));
        let (ok, text) = check(&setup);
        assert!(ok, "{text}");

        // A user the server admits only with a client certificate from its CA.
        let mut admin = server.conn(Some(
            mysql::SslOpts::default()
                .with_root_cert_path(Some(certs.path("ca.crt")))
                .with_danger_skip_domain_validation(true),
        ));
        for stmt in [
            "CREATE USER 'certuser'@'%' REQUIRE X509",
            "GRANT ALL ON cnc_database.* TO 'certuser'@'%'",
        ] {
            admin.query_drop(stmt).unwrap();
        }
        let cert_config = |with_cert: bool| {
            let mut tls = serde_json::json!({"ca_file": certs.path("ca.crt")});
            if with_cert {
                tls["cert_file"] = certs.path("client.crt").to_str().unwrap().into();
                tls["key_file"] = certs.path("client.key").to_str().unwrap().into();
            }
            serde_json::json!({"host": "localhost", "port": server.port, "user": "certuser", "password": "",
                               "database": "cnc_database", "tls": tls})
            .to_string()
        };
        setup.write("db_config.json", &cert_config(false));
        let (ok, text) = check(&setup);
        assert!(!ok && text.contains("cannot connect"), "{text}");
        setup.write("db_config.json", &cert_config(true));
        let (ok, text) = check(&setup);
        assert!(ok, "{text}");
    }

    #[test]
    fn a_broker_that_requires_client_certificates_accepts_the_configured_one() {
        let certs = Certs::new();
        let broker = certs.broker_with("server", "require_certificate true\n");
        let db = TestDb::new("mtls");
        let mut setup = Setup::cnc001_type_a(&db, "mtls");
        let uri = format!("ssl://localhost:{}", broker.port);
        let auth = |tls: serde_json::Value| serde_json::json!({"broker": {"tls": tls, "username": "collector", "password": "broker-pass"}});
        // Without a client certificate: refused.
        setup.use_broker(
            &uri,
            &auth(serde_json::json!({"ca_file": certs.path("ca.crt")})),
        );
        let (ok, text) = check(&setup);
        assert!(!ok && broker_line(&text).contains("PROBLEM"), "{text}");
        // With the one the CA issued: connected.
        setup.use_broker(
            &uri,
            &auth(serde_json::json!({
                "ca_file": certs.path("ca.crt"),
                "cert_file": certs.path("client.crt"),
                "key_file": certs.path("client.key"),
            })),
        );
        let (ok, text) = check(&setup);
        assert!(ok, "{text}");
    }

    /// `cnc-sim` with the test's environment free of a broker password.
    fn sim(args: &[&str]) -> Command {
        let mut cmd = cnc_sim(args);
        cmd.env_remove("MES_MQTT_PASSWORD");
        cmd
    }

    /// Starts `cnc-sim <conn> record` for `count` messages and waits for `ready`.
    fn start_recording(conn: &[&str], out: &Path, count: usize) -> std::process::Child {
        use std::io::BufRead;
        let mut args = conn.to_vec();
        let count = count.to_string();
        args.extend([
            "record",
            "--out",
            out.to_str().unwrap(),
            "--count",
            &count,
            "--timeout-secs",
            "20",
        ]);
        let mut child = sim(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut ready)
            .unwrap();
        if ready.trim() != "ready" {
            let out = child.wait_with_output().unwrap();
            panic!(
                "cnc-sim record did not subscribe:\n{}",
                common::build::text(&out)
            );
        }
        child
    }

    #[test]
    fn cnc_sim_records_and_publishes_through_a_tls_broker_with_a_password() {
        let certs = Certs::new();
        let broker = certs.broker("server");
        let uri = format!("ssl://localhost:{}", broker.port);
        let topic = format!("test/{}", unique("simtls"));
        let work = tempfile::tempdir().unwrap();
        let secret = work.path().join("mqtt.secret");
        std::fs::write(&secret, "broker-pass\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let messages = work.path().join("messages.jsonl");
        let sent = SAMPLES.join("\n") + "\n";
        std::fs::write(&messages, &sent).unwrap();
        let ca = certs.path("ca.crt");
        let flags = [
            "--broker",
            uri.as_str(),
            "--topic",
            topic.as_str(),
            "--ca-file",
            ca.to_str().unwrap(),
            "--username",
            "collector",
            "--password-file",
            secret.to_str().unwrap(),
        ];
        // A collector's configuration for the same broker, as a plant has it: a shared
        // subscription, a relative password file.
        let config = work.path().join("config");
        std::fs::create_dir(&config).unwrap();
        std::fs::copy(&secret, config.join("mqtt.secret")).unwrap();
        std::fs::write(
            config.join("collector.json"),
            serde_json::json!({"broker": {"uri": uri, "client_id": "mes-collector-1",
                "topic": format!("$share/collectors/{topic}"), "username": "collector",
                "password_file": "mqtt.secret", "tls": {"ca_file": ca}},
                "plugins_dir": "plugins"})
            .to_string(),
        )
        .unwrap();
        let from_config = ["--broker-config", config.to_str().unwrap()];

        // Recorded with the options, published with the collector's configuration.
        let recorded = work.path().join("recorded.jsonl");
        let recorder = start_recording(&flags, &recorded, SAMPLES.len());
        let mut args = from_config.to_vec();
        args.extend(["publish", "--file", messages.to_str().unwrap()]);
        common::build::run_ok(sim(&args));
        let out = recorder.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", common::build::text(&out));
        assert_eq!(std::fs::read_to_string(&recorded).unwrap(), sent);

        // And the other way round, with the password given inline.
        let recorded = work.path().join("recorded-2.jsonl");
        let recorder = start_recording(&from_config, &recorded, SAMPLES.len());
        let mut args = flags[..8].to_vec();
        args.extend([
            "--password",
            "broker-pass",
            "publish",
            "--file",
            messages.to_str().unwrap(),
        ]);
        common::build::run_ok(sim(&args));
        let out = recorder.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", common::build::text(&out));
        assert_eq!(std::fs::read_to_string(&recorded).unwrap(), sent);

        // The options are what made it work: the wrong password, a CA the broker's
        // certificate does not come from, or no TLS, are refused.
        let other_ca = certs.path("other-ca.crt");
        let plain = uri.replace("ssl://", "tcp://");
        let refused: [Vec<&str>; 3] = [
            [&flags[..8], &["--password", "not-it"][..]].concat(),
            [
                &flags[..4],
                &["--ca-file", other_ca.to_str().unwrap()],
                &flags[6..],
            ]
            .concat(),
            [&["--broker", plain.as_str()][..], &flags[2..4], &flags[8..]].concat(),
        ];
        for conn in refused {
            let mut args = conn.clone();
            args.extend(["publish", "--file", messages.to_str().unwrap()]);
            let out = sim(&args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("cannot connect to the broker"),
                "{conn:?}: {}",
                common::build::text(&out)
            );
            assert!(!err.contains("broker-pass"), "{err}");
        }
    }

    fn broker_line(text: &str) -> String {
        let start = text
            .find("\nbroker ")
            .unwrap_or_else(|| panic!("no broker section:\n{text}"));
        text[start..].lines().take(3).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn the_collector_connects_over_tls_only_to_the_right_broker_with_the_right_password() {
        let certs = Certs::new();
        let good = certs.broker("server");
        let wrong_name = certs.broker("wrong-name");
        let db = TestDb::new("tls");
        let mut setup = Setup::cnc001_type_a(&db, "tls");
        let uri = |b: &PrivateBroker| format!("ssl://localhost:{}", b.port);
        let tls = |ca: &str| serde_json::json!({"ca_file": certs.path(ca)});

        // The right CA and password: connected, and data flows.
        let good_cfg = serde_json::json!({"broker": {"tls": tls("ca.crt"), "username": "collector", "password": "broker-pass"}});
        setup.use_broker(&uri(&good), &good_cfg);
        let (ok, text) = check(&setup);
        assert!(ok, "{text}");
        let collector = Collector::start(&setup);
        let out = Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &good.port.to_string(), "--cafile"])
            .arg(certs.path("ca.crt"))
            .args([
                "-u",
                "collector",
                "-P",
                "broker-pass",
                "-q",
                "1",
                "-t",
                &setup.topic,
                "-m",
                SAMPLES[0],
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            db.wait_count("SELECT COUNT(*) FROM cnc_data", 1, WAIT),
            1,
            "{}",
            collector.log()
        );
        drop(collector);

        // A certificate from another CA: refused.
        setup.use_broker(
            &uri(&good),
            &serde_json::json!({"broker": {"tls": tls("other-ca.crt"), "username": "collector", "password": "broker-pass"}}),
        );
        let (ok, text) = check(&setup);
        assert!(!ok && broker_line(&text).contains("PROBLEM"), "{text}");

        // The right CA, but a certificate for another host name: refused...
        setup.use_broker(&uri(&wrong_name), &good_cfg);
        let (ok, text) = check(&setup);
        assert!(!ok && broker_line(&text).contains("PROBLEM"), "{text}");
        // ...because of the name alone.
        let mut lax = good_cfg.clone();
        lax["broker"]["tls"]["verify_hostname"] = false.into();
        setup.use_broker(&uri(&wrong_name), &lax);
        let (ok, text) = check(&setup);
        assert!(ok, "{text}");

        // The wrong password: refused.
        setup.use_broker(
            &uri(&good),
            &serde_json::json!({"broker": {"tls": tls("ca.crt"), "username": "collector", "password": "not-it"}}),
        );
        let (ok, text) = check(&setup);
        assert!(!ok && broker_line(&text).contains("PROBLEM"), "{text}");
        assert!(
            !text.contains("not-it") && !text.contains("broker-pass"),
            "{text}"
        );
    }
}
