//! Security: the collector works with exactly the grants the README gives it.

mod common;

use std::time::Duration;

use common::*;
use mysql::prelude::Queryable;

const WAIT: Duration = Duration::from_secs(30);

/// The README's "Database grants", for this test's database and user.
fn readme_grants(db: &str, user: &str) -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("### Database grants")
        .expect("README has a Database grants section");
    let block = &readme[start..];
    let sql = &block[block.find("```sql").unwrap() + 6..];
    let sql = &sql[..sql.find("```").unwrap()];
    sql.lines()
        .filter(|l| l.starts_with("GRANT"))
        .map(|l| {
            l.replace("cnc_database", db)
                .replace("'mes_collector'@'%'", user)
        })
        .collect()
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
            for grant in readme_grants(&db.name, &who) {
                root.query_drop(&grant)
                    .unwrap_or_else(|e| panic!("{grant}: {e}"));
            }
        }
        user
    }
}

impl Drop for User {
    fn drop(&mut self) {
        if let Ok(mut root) = mysql::Conn::new(
            mysql::OptsBuilder::new()
                .ip_or_hostname(Some("127.0.0.1"))
                .user(Some("root"))
                .pass(Some("")),
        ) {
            for host in self.hosts {
                let _ = root.query_drop(format!("DROP USER IF EXISTS '{}'@'{host}'", self.name));
            }
        }
    }
}

#[test]
fn the_collector_works_with_the_least_privileges_the_readme_grants() {
    let db = TestDb::new("leastpriv");
    let user = User::create(&db);
    let setup = Setup::new(
        &db,
        "leastpriv",
        r#"[{"cnc_id":"CNC001","class_name":"CNCTypeA"},{"cnc_id":"CNC002","class_name":"CNCTypeB"}]"#,
        &["cnc-type-a", "cnc-type-b"],
    );
    setup.write(
        "db_config.json",
        &serde_json::json!({"host":"127.0.0.1","port":3306,"user":user.name,"password":"lp-pass","database":db.name})
            .to_string(),
    );
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

    let out = mes_collector(&["check", "--config-dir", setup.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let mut collector = Collector::start(&setup);
    let alarm = r#"{"cnc_id":"CNC002","part_program":"p","timestamp":5,"payload":{"status":"error","spin":1,"X-Axis":0,"Y-Axis":0,"alarms":[{"code":7,"message":"x"}]}}"#;
    let mut msgs: Vec<&[u8]> = SAMPLES.iter().map(|s| s.as_bytes()).collect();
    msgs.push(alarm.as_bytes());
    msgs.push(b"{ not json");
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
    assert_eq!(db.count("SELECT COUNT(*) FROM collector_position"), 1);
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
