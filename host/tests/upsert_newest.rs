//! `Db::upsert_newest` against the real MariaDB: whatever order a set of rows is
//! committed in (by one statement or many, as several collectors or a replay would),
//! the stored row is the greatest by the ordering columns, then the others, NULL
//! first; and through a plugin and the broker, a late message does not move a
//! machine's status back.

mod common;

use mes_collector::sink::{
    batch::{RowKind, Shape},
    mysql::row_statement,
};
use mysql::{prelude::Queryable, Value as V};

use common::*;

type Row = (Option<i64>, Option<String>, Option<i64>);
/// k, status, ts, n
type StatusRow = (String, Option<String>, Option<i64>, Option<i64>);

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
    let params = |r: &Row| -> Vec<V> {
        vec![
            "A".into(),
            r.1.clone().map(V::from).unwrap_or(V::NULL),
            r.0.map(V::from).unwrap_or(V::NULL),
            r.2.map(V::from).unwrap_or(V::NULL),
        ]
    };
    let one = conn.prep(row_statement(&shape, 1)).unwrap();
    let all = conn.prep(row_statement(&shape, rows.len())).unwrap();
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
            conn.exec_drop(&one, params(r)).unwrap();
        }
        assert_eq!(stored(&mut conn), greatest, "one by one in order {order:?}");
        // All rows in one multi-row statement, as one batch writes them.
        conn.query_drop("DELETE FROM latest").unwrap();
        let many: Vec<V> = order.iter().flat_map(params).collect();
        conn.exec_drop(&all, many).unwrap();
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
    use mes_plugin_api::Value;

    let db = TestDb::new("merge");
    let mut conn = db.conn();
    for t in ["unmerged", "merged"] {
        conn.query_drop(format!(
            "CREATE TABLE {t} (id BIGINT AUTO_INCREMENT PRIMARY KEY, k VARCHAR(8) NOT NULL, \
             status VARCHAR(16) NULL, ts BIGINT NULL, n INT NULL, UNIQUE KEY (k)) \
             DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
        ))
        .unwrap();
    }
    let to_mysql = |v: &Value| match v {
        Value::Null => V::NULL,
        Value::Int(i) => V::from(*i),
        Value::Text(s) => V::from(s.as_str()),
        other => panic!("not generated: {other:?}"),
    };
    // A small deterministic generator: the same batches every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut merged_away = 0;
    for kind in [RowKind::UpsertNewest, RowKind::Upsert] {
        let shape = |table: &str| Shape {
            kind,
            table: table.into(),
            columns: vec!["k".into(), "status".into(), "ts".into(), "n".into()],
            order_by: if kind == RowKind::UpsertNewest {
                vec!["ts".into()]
            } else {
                vec![]
            },
        };
        let merge = merge_for(&shape("merged"), &table_info(&mut conn, "merged").unwrap())
            .expect("k is the only unique index the statement covers; id is AUTO_INCREMENT");
        for round in 0..300 {
            let rows: Vec<Vec<Value>> = (0..1 + next(12))
                .map(|_| {
                    vec![
                        Value::Text(["A", "a", "B", "C"][next(4) as usize].into()),
                        match next(4) {
                            0 => Value::Null,
                            s => Value::Text(["idle", "run", "err"][s as usize - 1].into()),
                        },
                        match next(8) {
                            0 => Value::Null,
                            t => Value::Int(t as i64 / 2),
                        },
                        Value::Int(next(3) as i64),
                    ]
                })
                .collect();
            let all: Vec<&[Value]> = rows.iter().map(Vec::as_slice).collect();
            let kept = merge.apply(all.clone());
            merged_away += all.len() - kept.len();
            for (table, list) in [("unmerged", &all), ("merged", &kept)] {
                let stmt = row_statement(&shape(table), list.len());
                let params: Vec<V> = list.iter().flat_map(|r| r.iter().map(to_mysql)).collect();
                conn.exec_drop(stmt, params).unwrap();
            }
            let state = |conn: &mut mysql::Conn, t: &str| -> Vec<StatusRow> {
                conn.query(format!("SELECT k, status, ts, n FROM {t} ORDER BY k"))
                    .unwrap()
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
}
