//! The test MariaDB (127.0.0.1:3306, root): a database of the test's own, made from
//! database.sql and dropped at the end.

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use mysql::{prelude::Queryable, Conn, OptsBuilder};

use super::unique;

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

/// A database name of the test's own, made from `tag`.
pub fn test_db_name(tag: &str) -> String {
    format!("mes_t_{}", unique(tag))
}

/// Creates database `name` through `conn` as database.sql makes `cnc_database`.
pub fn create_schema(conn: &mut Conn, name: &str) {
    for stmt in schema_for(name) {
        conn.query_drop(&stmt)
            .unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

/// database.sql's statements, for a database named `name`.
fn schema_for(name: &str) -> Vec<String> {
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
        let name = test_db_name(tag);
        create_schema(&mut root_conn(None), &name);
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

    /// part_program → rows in cnc_data.
    pub fn rows_per_part_program(&self) -> BTreeMap<String, u64> {
        self.rows::<(String, u64)>(
            "SELECT part_program, COUNT(*) FROM cnc_data GROUP BY part_program",
        )
        .into_iter()
        .collect()
    }

    /// Polls `sql` (a COUNT) until it reaches `want` or `timeout` passes; returns the
    /// last value.
    pub fn wait_count(&self, sql: &str, want: u64, timeout: Duration) -> u64 {
        poll_count(want, timeout, || self.count(sql))
    }
}

/// Calls `count` until it returns `want` or more or `timeout` passes; returns the last
/// value.
pub fn poll_count(want: u64, timeout: Duration, mut count: impl FnMut() -> u64) -> u64 {
    let until = Instant::now() + timeout;
    loop {
        let n = count();
        if n >= want || Instant::now() > until {
            return n;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut root) = try_root_conn(None) {
            let _ = root.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}
