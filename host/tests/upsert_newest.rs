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
