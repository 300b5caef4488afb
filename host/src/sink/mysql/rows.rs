//! A batch's rows on their way to MySQL: grouped by shape, each shape's rows sent as
//! one multi-row statement of literals (cut only where it would pass 4 MiB).

use std::collections::HashMap;

use mes_plugin_api::Value;
use mysql::{prelude::Queryable, Transaction};

use crate::{
    fasthash::FxBuild,
    sink::batch::{Batch, RecordedWrite, Shapes},
};

use super::{
    literals::push_row,
    statements::{RowSql, StatementCache},
};

/// Keep statements well under MariaDB's default 16 MiB `max_allowed_packet`.
const MAX_STATEMENT_BYTES: usize = 4 << 20;

/// A plugin's own SQL (`Db::exec`) keeps its placeholders: its parameters go as
/// the driver's values.
fn to_mysql(v: &Value) -> mysql::Value {
    match v {
        Value::Null => mysql::Value::NULL,
        Value::Int(i) => mysql::Value::Int(*i),
        Value::UInt(u) => mysql::Value::UInt(*u),
        Value::Float(f) => mysql::Value::Double(*f),
        Value::Text(s) | Value::Json(s) => mysql::Value::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => mysql::Value::Bytes(b.to_vec()),
    }
}

/// Parameters as the driver takes them: given a `Vec<mysql::Value>`, its
/// `Params::from` would move every value into a new vector grown one push at a time.
fn positional(params: Vec<mysql::Value>) -> mysql::Params {
    if params.is_empty() {
        mysql::Params::Empty
    } else {
        mysql::Params::Positional(params)
    }
}

/// Writes `rows` into `text` as statements of `sql`, handing each to `send`: as many
/// rows per statement as stay within [`MAX_STATEMENT_BYTES`], a larger row alone.
fn each_statement<E>(
    sql: &RowSql,
    rows: &[&[Value]],
    text: &mut String,
    mut send: impl FnMut(&str) -> Result<(), E>,
) -> Result<(), E> {
    text.clear();
    text.push_str(&sql.head);
    let mut rows_in_text = 0;
    for row in rows {
        let before = text.len();
        if rows_in_text > 0 {
            text.push(',');
        }
        push_row(text, row);
        if rows_in_text > 0 && text.len() + sql.tail.len() > MAX_STATEMENT_BYTES {
            text.truncate(before);
            text.push_str(&sql.tail);
            send(text)?;
            text.clear();
            text.push_str(&sql.head);
            push_row(text, row);
            rows_in_text = 0;
        }
        rows_in_text += 1;
    }
    if rows_in_text > 0 {
        text.push_str(&sql.tail);
        send(text)?;
    }
    Ok(())
}

/// Rows waiting to be written, grouped by shape in order of first appearance.
struct RowsByShape<'b> {
    groups: Vec<(usize, Vec<&'b [Value]>)>,
    // Shape numbers are the host's own, not a sender's: the fast hash is safe.
    group_of_shape: HashMap<usize, usize, FxBuild>,
}

impl<'b> RowsByShape<'b> {
    fn new() -> Self {
        RowsByShape {
            groups: Vec::new(),
            group_of_shape: HashMap::default(),
        }
    }

    fn push(&mut self, shape: usize, values: &'b [Value]) {
        let i = *self.group_of_shape.entry(shape).or_insert_with(|| {
            self.groups.push((shape, Vec::new()));
            self.groups.len() - 1
        });
        self.groups[i].1.push(values);
    }

    fn flush(
        &mut self,
        tx: &mut Transaction<'_>,
        stmts: &mut StatementCache,
        shapes: &Shapes,
    ) -> Result<(), mysql::Error> {
        for (shape, rows) in self.groups.drain(..) {
            let rows = stmts.merge.merge(shape, rows);
            let (sql, text) = stmts.sql(shapes, shape);
            each_statement(sql, &rows, text, |statement| tx.query_drop(statement))?;
        }
        self.group_of_shape.clear();
        Ok(())
    }
}

/// Writes the listed messages' rows, coalesced; `exec` statements are barriers.
pub(super) fn write_entries(
    tx: &mut Transaction<'_>,
    stmts: &mut StatementCache,
    shapes: &Shapes,
    batch: &Batch,
    which: &[usize],
) -> Result<(), mysql::Error> {
    let mut rows = RowsByShape::new();
    for &i in which {
        let e = &batch.entries[i];
        for op in &batch.writes[e.first_write..e.end_write] {
            match op {
                RecordedWrite::Row { shape, values } => rows.push(*shape, values),
                RecordedWrite::Exec { sql, params } => {
                    rows.flush(tx, stmts, shapes)?;
                    let params: Vec<mysql::Value> = params.iter().map(to_mysql).collect();
                    tx.exec_drop(sql.as_str(), positional(params))?;
                }
            }
        }
    }
    rows.flush(tx, stmts, shapes)
}

#[cfg(test)]
mod tests {
    use mes_plugin_api::Value;
    use mysql::Value as V;

    use super::*;

    /// `rows` rows of `cols` values of `bytes` bytes of text each.
    fn table(rows: usize, cols: usize, bytes: usize) -> Vec<Vec<Value>> {
        vec![vec![Value::from("x".repeat(bytes)); cols]; rows]
    }

    /// Rows per statement, and the statements' texts' total length.
    fn statements(rows: &[Vec<Value>], tail: &str) -> (Vec<usize>, Vec<String>) {
        let rows: Vec<&[Value]> = rows.iter().map(Vec::as_slice).collect();
        let sql = RowSql {
            head: "INSERT INTO t (a) VALUES ".into(),
            tail: tail.into(),
        };
        let mut sent = Vec::new();
        each_statement::<()>(&sql, &rows, &mut String::new(), |s| {
            sent.push(s.to_string());
            Ok(())
        })
        .unwrap();
        let counts = sent.iter().map(|s| s.matches("('").count()).collect();
        (counts, sent)
    }

    #[test]
    fn a_plugins_own_sql_gets_its_parameters_kind_for_kind() {
        let cases = [
            (Value::Null, V::NULL),
            (Value::Int(-7), V::Int(-7)),
            (Value::UInt(u64::MAX), V::UInt(u64::MAX)),
            (Value::Float(200.5), V::Double(200.5)),
            (Value::from("läuft"), V::Bytes("läuft".as_bytes().to_vec())),
            (
                Value::json_text(r#"{"a":1}"#),
                V::Bytes(br#"{"a":1}"#.to_vec()),
            ),
            (Value::from(&b"\x00\xff"[..]), V::Bytes(vec![0, 255])),
        ];
        for (ours, theirs) in cases {
            assert_eq!(to_mysql(&ours), theirs, "{ours:?}");
        }
        assert_eq!(positional(Vec::new()), mysql::Params::Empty);
        assert_eq!(
            positional(vec![V::Int(1)]),
            mysql::Params::Positional(vec![V::Int(1)])
        );
    }

    #[test]
    fn a_shapes_rows_go_in_one_statement() {
        let (counts, sent) = statements(&table(1_000, 3, 2), " ON DUPLICATE KEY UPDATE a=a");
        assert_eq!(counts, [1_000]);
        assert!(sent[0].starts_with("INSERT INTO t (a) VALUES ('xx','xx','xx'),('xx'"));
        assert!(sent[0].ends_with("('xx','xx','xx') ON DUPLICATE KEY UPDATE a=a"));
        assert_eq!(statements(&[], "").0, Vec::<usize>::new());
    }

    #[test]
    fn a_statement_stays_within_4_mib() {
        // Rows of 1 MiB and a little: three fit in 4 MiB with the text around them.
        let (counts, sent) = statements(&table(7, 1, 1 << 20), " tail");
        assert_eq!(counts, [3, 3, 1]);
        for s in &sent {
            assert!(s.len() <= MAX_STATEMENT_BYTES, "{} bytes", s.len());
            assert!(s.ends_with("') tail"));
        }
        // A row larger than the limit goes alone, for MySQL to refuse if it must.
        assert_eq!(statements(&table(3, 1, 5 << 20), "").0, [1, 1, 1]);
        // Exactly at the limit still fits.
        let head = "INSERT INTO t (a) VALUES ".len();
        let row = (MAX_STATEMENT_BYTES - head) / 2 - 4; // ('…') and a comma
        let (counts, sent) = statements(&table(2, 1, row), "");
        assert_eq!(counts, [2]);
        assert!(sent[0].len() <= MAX_STATEMENT_BYTES);
        assert!(statements(&table(2, 1, row + 1), "").0 == [1, 1]);
    }

    #[test]
    fn rows_are_grouped_by_shape_in_order_of_first_appearance() {
        let v: Vec<Vec<Value>> = (0..5).map(|i| vec![Value::Int(i)]).collect();
        let mut rows = RowsByShape::new();
        for (shape, values) in [2, 0, 2, 1, 0].into_iter().zip(&v) {
            rows.push(shape, values);
        }
        assert_eq!(
            rows.groups,
            [
                (2, vec![&v[0][..], &v[2][..]]),
                (0, vec![&v[1][..], &v[4][..]]),
                (1, vec![&v[3][..]]),
            ]
        );
    }
}
