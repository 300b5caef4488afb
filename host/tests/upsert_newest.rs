//! `Db::upsert_newest` against the real MariaDB: whatever order a set of rows is
//! committed in (by one statement or many, as several collectors or a replay would),
//! the stored row is the greatest by the ordering columns, then the others, NULL
//! first; and through a plugin and the broker, a late message does not move a
//! machine's status back.

mod common;

use mes_collector::sink::{
    batch::{RowKind, Shape},
    mysql::rows_statement,
};
use mes_plugin_api::Value;
use mysql::prelude::Queryable;

use common::*;

type Row = (Option<i64>, Option<String>, Option<i64>);
/// k, status, ts, n, d
type StatusRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
);

fn permutations(items: &[Row]) -> Vec<Vec<Row>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

#[test]
fn the_stored_row_is_the_greatest_whatever_the_commit_order() {
    let db = TestDb::new("newest");
    let mut conn = db.conn();
    conn.query_drop(
        "CREATE TABLE latest (k VARCHAR(8) PRIMARY KEY, status VARCHAR(16) NULL, \
         ts BIGINT NULL, n INT NULL)",
    )
    .unwrap();
    let shape = Shape {
        kind: RowKind::UpsertNewest,
        table: "latest".into(),
        columns: vec!["k".into(), "status".into(), "ts".into(), "n".into()],
        order_by: vec!["ts".into()],
    };
    // (ts, status, n): ties on ts broken by k (equal), then status, then n.
    let rows: Vec<Row> = vec![
        (Some(10), Some("idle".into()), Some(1)),
        (Some(12), Some("run".into()), Some(2)),
        (Some(12), Some("err".into()), Some(3)),
        (None, Some("zzz".into()), Some(9)),
        (Some(12), Some("run".into()), Some(1)),
        (Some(11), None, Some(5)),
    ];
    // Option orders None first, as the statement orders NULL.
    let greatest = rows
        .iter()
        .max_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)))
        .unwrap()
        .clone();
    assert_eq!(greatest, (Some(12), Some("run".into()), Some(2)));
    let values = |r: &Row| -> Vec<Value> {
        vec![
            "A".into(),
            r.1.clone().map(Value::from).unwrap_or(Value::Null),
            r.0.map(Value::Int).unwrap_or(Value::Null),
            r.2.map(Value::Int).unwrap_or(Value::Null),
        ]
    };
    let stored = |conn: &mut mysql::Conn| -> Row {
        conn.query_first("SELECT ts, status, n FROM latest WHERE k = 'A'")
            .unwrap()
            .unwrap()
    };
    let orders = permutations(&rows);
    assert_eq!(orders.len(), 720);
    for order in &orders {
        // One statement per row, as separate batches commit them.
        conn.query_drop("DELETE FROM latest").unwrap();
        for r in order {
            conn.query_drop(rows_statement(&shape, &[&values(r)]))
                .unwrap();
        }
        assert_eq!(stored(&mut conn), greatest, "one by one in order {order:?}");
        // All rows in one multi-row statement, as one batch writes them.
        conn.query_drop("DELETE FROM latest").unwrap();
        let many: Vec<Vec<Value>> = order.iter().map(values).collect();
        let many: Vec<&[Value]> = many.iter().map(Vec::as_slice).collect();
        conn.query_drop(rows_statement(&shape, &many)).unwrap();
        assert_eq!(
            stored(&mut conn),
            greatest,
            "in one statement in order {order:?}"
        );
    }
}

/// The merge of a batch's upserts (`sink/merge.rs`) stores what the unmerged rows
/// store: many random batches, over keys that a case-insensitive collation partly
/// calls equal, with ties and NULLs in the ordering column, both upsert kinds.
#[test]
fn merged_upserts_store_what_the_unmerged_rows_store() {
    use mes_collector::sink::merge::{merge_for, table_info};

    let db = TestDb::new("merge");
    let mut conn = db.conn();
    // Not strict: a value out of a column's range is clipped, not refused, so that
    // values the server stores equal (300 and 200 in a TINYINT) must not be merged.
    conn.query_drop("SET SESSION sql_mode = ''").unwrap();
    for t in ["unmerged", "merged"] {
        conn.query_drop(format!(
            "CREATE TABLE {t} (id BIGINT AUTO_INCREMENT PRIMARY KEY, k VARCHAR(8) NOT NULL, \
             status VARCHAR(16) NULL, ts BIGINT NULL, n TINYINT NULL, d DOUBLE NULL, \
             UNIQUE KEY (k)) \
             DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
        ))
        .unwrap();
    }
    // A small deterministic generator: the same batches every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut merged_away = 0;
    // Rows tied on ts and status, which only n or d can tell apart.
    let mut broken_ties = 0;
    for kind in [RowKind::UpsertNewest, RowKind::Upsert] {
        let shape = |table: &str| Shape {
            kind,
            table: table.into(),
            columns: ["k", "status", "ts", "n", "d"].map(String::from).to_vec(),
            order_by: if kind == RowKind::UpsertNewest {
                vec!["ts".into()]
            } else {
                vec![]
            },
        };
        let merge = merge_for(&shape("merged"), &table_info(&mut conn, "merged").unwrap())
            .expect("k is the only unique index the statement covers; id is AUTO_INCREMENT");
        for round in 0..600 {
            // Every other batch mostly ties on ts and status, for n and d to decide, and
            // starts from empty tables: a stored row with a greater ts would make the
            // whole batch change nothing.
            let ties = round % 2 == 1;
            if ties {
                for t in ["merged", "unmerged"] {
                    conn.query_drop(format!("DELETE FROM {t}")).unwrap();
                }
            }
            let rows: Vec<Vec<Value>> = (0..1 + next(12))
                .map(|_| {
                    vec![
                        Value::Text(["A", "a", "B", "C"][next(4) as usize].into()),
                        // `Run` is `run` to the collation, not to the merge: the
                        // statement keeps the bytes of whichever came first.
                        match next(if ties { 7 } else { 4 }) {
                            0 => Value::Null,
                            6 => Value::Text("Run".into()),
                            s if s > 3 => Value::Text("run".into()),
                            s => Value::Text(["idle", "run", "err"][s as usize - 1].into()),
                        },
                        match next(10) {
                            0 => Value::Null,
                            // Stored rounded: 1.5 and 2.4 are both 2 in a BIGINT.
                            8 => Value::Float(1.5),
                            9 => Value::Float(2.4),
                            _ if ties => Value::Int(2),
                            t => Value::Int(t as i64 / 2),
                        },
                        // TINYINT holds -128..=127: 300 and 200 are both stored as 127.
                        match next(5) {
                            0 => Value::Null,
                            1 => Value::Int(300),
                            2 => Value::Int(200),
                            n => Value::Int(n as i64),
                        },
                        match next(6) {
                            0 => Value::Null,
                            1 => Value::Float(-0.0),
                            2 => Value::Int(0),
                            3 => Value::Float(0.5),
                            4 => Value::UInt(1),
                            _ => Value::Float(1.0),
                        },
                    ]
                })
                .collect();
            let all: Vec<&[Value]> = rows.iter().map(Vec::as_slice).collect();
            let kept = merge.apply(all.clone());
            let tied = |r: &&[Value]| {
                kept.iter().any(|o| {
                    o[0] == r[0] && o[1] == r[1] && o[2] == r[2] && (o[3] != r[3] || o[4] != r[4])
                })
            };
            if kind == RowKind::UpsertNewest && all.iter().any(|r| !kept.contains(r) && tied(r)) {
                broken_ties += 1;
            }
            merged_away += all.len() - kept.len();
            for (table, list) in [("unmerged", &all), ("merged", &kept)] {
                conn.query_drop(rows_statement(&shape(table), list))
                    .unwrap();
            }
            // Bytes and bits: `Run` against `run`, -0.0 against 0.0.
            let state = |conn: &mut mysql::Conn, t: &str| -> Vec<(StatusRow, Option<u64>)> {
                let rows: Vec<StatusRow> = conn
                    .query(format!(
                        "SELECT k, CAST(status AS BINARY), ts, n, d FROM {t} ORDER BY k"
                    ))
                    .unwrap();
                rows.into_iter()
                    .map(|r| {
                        let bits = r.4.map(f64::to_bits);
                        (r, bits)
                    })
                    .collect()
            };
            assert_eq!(
                state(&mut conn, "merged"),
                state(&mut conn, "unmerged"),
                "{kind:?} round {round}: rows {rows:?}, merged to {kept:?}"
            );
        }
    }
    // The test would prove nothing if nothing merged.
    assert!(merged_away > 300, "only {merged_away} rows merged away");
    assert!(broken_ties >= 20, "only {broken_ties} batches broke a tie");
}
