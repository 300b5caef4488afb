//! A batch's rows reach MySQL as literals in the statement text (`sink/mysql/literals.rs`).
//! Against the real MariaDB: every kind of plugin value comes back exactly as the
//! plugin gave it, byte for byte and bit for bit, whatever the session's SQL mode
//! (with and without `NO_BACKSLASH_ESCAPES`, which changes what a backslash means
//! in a string literal), and exactly as the same values bound as parameters store.

mod common;

use mes_collector::sink::{
    batch::{RowKind, Shape},
    mysql::rows_statement,
};
use mes_plugin_api::Value;
use mysql::{prelude::Queryable, Value as V};

use common::*;

type Stored = (
    u32,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<u64>,
    Option<f64>,
);

fn texts() -> Vec<String> {
    [
        "",
        "'",
        "''",
        "\\",
        "\\'",
        "'\\",
        "a\0b",
        "\u{1a}",
        "\n\r\t\u{8}",
        "\"",
        "%_",
        "läuft 😀",
        "x'); DROP TABLE t; --",
        "x\\'); DROP TABLE t; --",
        "\\\\\\",
        "_utf8mb4 X'41'",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn jsons() -> Vec<String> {
    [
        "{}",
        r#"{"a":"it's"}"#,
        r#"{"q":"\"","b":"\\","u":"\u00e9"}"#,
        r#"["\n",null,1.5e300,-0.0]"#,
        r#"{"s":"läuft 😀"}"#,
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn blobs() -> Vec<Vec<u8>> {
    vec![
        (0..=255).collect(),
        Vec::new(),
        b"'".to_vec(),
        b"\\".to_vec(),
        vec![0xff, 0xfe, 0x27, 0x5c, 0x00],
    ]
}

fn ints() -> Vec<i64> {
    vec![i64::MIN, -1, 0, 1, i64::MAX]
}

fn uints() -> Vec<u64> {
    vec![0, u64::MAX, 1 << 63]
}

fn floats() -> Vec<f64> {
    vec![
        0.1,
        1.0 / 3.0,
        -2.5e-7,
        123_456_789.123_456_79,
        f64::MAX,
        f64::MIN_POSITIVE,
        f64::EPSILON,
        1e22,
        -1e-300,
        0.0,
        -0.0,
        f64::MIN,
        5e-324,
        // Where the formatter switches between plain digits and an exponent.
        1e15,
        1e16,
        1e-5,
        1e-7,
    ]
}

/// Row `i` takes the `i`-th value of each list (cycling), every 7th column NULL in turn.
fn rows() -> Vec<Vec<Value>> {
    let (t, j, b, n, u, f) = (texts(), jsons(), blobs(), ints(), uints(), floats());
    (0..40)
        .map(|i| {
            let null_at = i % 7;
            let cell = |col: usize, v: Value| if col == null_at { Value::Null } else { v };
            vec![
                Value::UInt(i as u64),
                cell(1, Value::Text(t[i % t.len()].as_str().into())),
                cell(2, Value::json_text(&j[i % j.len()])),
                cell(3, Value::from(&b[i % b.len()][..])),
                cell(4, Value::Int(n[i % n.len()])),
                cell(5, Value::UInt(u[i % u.len()])),
                cell(6, Value::Float(f[i % f.len()])),
            ]
        })
        .collect()
}

/// What a row of plugin values should read back as.
fn expected(row: &[Value]) -> Stored {
    let bytes = |v: &Value| match v {
        Value::Null => None,
        Value::Text(s) | Value::Json(s) => Some(s.as_bytes().to_vec()),
        Value::Bytes(b) => Some(b.to_vec()),
        other => panic!("not a string: {other:?}"),
    };
    let Value::UInt(id) = row[0] else {
        panic!("id")
    };
    (
        id as u32,
        bytes(&row[1]),
        bytes(&row[2]),
        bytes(&row[3]),
        match row[4] {
            Value::Int(i) => Some(i),
            _ => None,
        },
        match row[5] {
            Value::UInt(u) => Some(u),
            _ => None,
        },
        match row[6] {
            // MariaDB stores -0 as 0, bound as a parameter as well as written out.
            Value::Float(f) => Some(if f == 0.0 { 0.0 } else { f }),
            _ => None,
        },
    )
}

fn as_parameter(v: &Value) -> V {
    match v {
        Value::Null => V::NULL,
        Value::Int(i) => V::Int(*i),
        Value::UInt(u) => V::UInt(*u),
        Value::Float(f) => V::Double(*f),
        Value::Text(s) | Value::Json(s) => V::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => V::Bytes(b.to_vec()),
    }
}

#[test]
fn every_value_reads_back_as_sent_in_every_sql_mode() {
    let db = TestDb::new("literals");
    let mut conn = db.conn();
    let rows = rows();
    let all: Vec<&[Value]> = rows.iter().map(Vec::as_slice).collect();
    let want: Vec<Stored> = rows.iter().map(|r| expected(r)).collect();
    for mode in [
        "STRICT_TRANS_TABLES",
        "STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES",
        "STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES,ANSI_QUOTES",
        "",
    ] {
        conn.query_drop(format!("SET SESSION sql_mode = '{mode}'"))
            .unwrap();
        for table in ["as_text", "as_parameters"] {
            conn.query_drop(format!("DROP TABLE IF EXISTS {table}"))
                .unwrap();
            conn.query_drop(format!(
                "CREATE TABLE {table} (id INT UNSIGNED PRIMARY KEY, t VARCHAR(255) NULL, \
                 j JSON NULL, b BLOB NULL, i BIGINT NULL, u BIGINT UNSIGNED NULL, d DOUBLE NULL) \
                 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
            ))
            .unwrap();
        }
        let shape = |table: &str| Shape {
            kind: RowKind::Insert,
            table: table.into(),
            columns: ["id", "t", "j", "b", "i", "u", "d"]
                .map(String::from)
                .to_vec(),
            order_by: vec![],
        };
        conn.query_drop(rows_statement(&shape("as_text"), &all))
            .unwrap_or_else(|e| panic!("sql_mode '{mode}': {e}"));
        let insert = conn
            .prep("INSERT INTO as_parameters (id, t, j, b, i, u, d) VALUES (?,?,?,?,?,?,?)")
            .unwrap();
        for row in &rows {
            let params: Vec<V> = row.iter().map(as_parameter).collect();
            conn.exec_drop(&insert, params).unwrap();
        }
        for table in ["as_text", "as_parameters"] {
            let got: Vec<Stored> = conn
                .query(format!(
                    "SELECT id, t, j, b, i, u, d FROM {table} ORDER BY id"
                ))
                .unwrap();
            assert_eq!(got.len(), want.len(), "{table}, sql_mode '{mode}'");
            for (g, w) in got.iter().zip(&want) {
                // Floats bit for bit (PartialEq would take -0.0 for 0.0).
                let bits = |s: &Stored| s.6.map(f64::to_bits);
                assert!(
                    g == w && bits(g) == bits(w),
                    "{table}, sql_mode '{mode}', row {}: stored {g:?}, sent {w:?}",
                    w.0
                );
            }
        }
    }
}
