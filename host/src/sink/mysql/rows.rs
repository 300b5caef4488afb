//! A batch's rows on their way to MySQL: grouped by shape, cut into multi-row
//! statements of a few fixed sizes, their values converted to the driver's.

use std::collections::HashMap;

use mes_plugin_api::Value;
use mysql::{prelude::Queryable, Transaction};

use crate::sink::batch::{Batch, Op, Shapes};

use super::statements::StatementCache;

/// Most placeholders MySQL accepts in one statement.
const MAX_PLACEHOLDERS: usize = 65_535;
/// Rows per multi-row statement. A few fixed sizes, so the prepared statements are
/// reused rather than one per row count.
const CHUNK_ROWS: [usize; 5] = [256, 64, 16, 4, 1];
/// Keep statements well under MariaDB's default 16 MiB `max_allowed_packet`.
const MAX_STATEMENT_BYTES: usize = 4 << 20;

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
/// `Params::from` would move every value into a new vector grown one push at a time
/// (about 1,000 instructions per message in the writer).
fn positional(params: Vec<mysql::Value>) -> mysql::Params {
    if params.is_empty() {
        mysql::Params::Empty
    } else {
        mysql::Params::Positional(params)
    }
}

fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Text(s) | Value::Json(s) => s.len() + 8,
        Value::Bytes(b) => b.len() + 8,
        _ => 9,
    }
}

/// How many of `rows` to put in the next statement: the largest fixed chunk size
/// that fits the placeholder and size limits.
fn next_chunk(rows: &[&[Value]]) -> usize {
    let cols = rows[0].len().max(1);
    let mut fit = rows.len().min(MAX_PLACEHOLDERS / cols);
    let mut bytes = 0;
    for (i, row) in rows.iter().take(fit).enumerate() {
        bytes += row.iter().map(value_bytes).sum::<usize>();
        if bytes > MAX_STATEMENT_BYTES && i > 0 {
            fit = i;
            break;
        }
    }
    CHUNK_ROWS.into_iter().find(|&c| c <= fit).unwrap_or(1)
}

/// Rows waiting to be written, grouped by shape in order of first appearance.
struct RowsByShape<'b> {
    groups: Vec<(usize, Vec<&'b [Value]>)>,
    group_of_shape: HashMap<usize, usize>,
}

impl<'b> RowsByShape<'b> {
    fn new() -> Self {
        RowsByShape {
            groups: Vec::new(),
            group_of_shape: HashMap::new(),
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
            let mut rest: &[&[Value]] = &rows;
            while !rest.is_empty() {
                let n = next_chunk(rest);
                // Sized up front: collecting a flat_map grows the vector step by step.
                let mut params = Vec::with_capacity(rest[..n].iter().map(|r| r.len()).sum());
                params.extend(rest[..n].iter().flat_map(|row| row.iter().map(to_mysql)));
                let stmt = stmts.get(tx, shapes, shape, n)?;
                tx.exec_drop(&stmt, positional(params))?;
                rest = &rest[n..];
            }
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
        for op in &batch.ops[e.first_op..e.end_op] {
            match op {
                Op::Row { shape, values } => rows.push(*shape, values),
                Op::Exec { sql, params } => {
                    rows.flush(tx, stmts, shapes)?;
                    let params: Vec<mysql::Value> = params.iter().map(to_mysql).collect();
                    tx.exec_drop(sql.as_str(), positional(params))?;
                }
            }
        }
    }
    rows.flush(tx, stmts, shapes)
}
