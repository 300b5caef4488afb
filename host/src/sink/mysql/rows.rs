//! A batch's rows on their way to MySQL: grouped by shape, cut into multi-row
//! statements of a few fixed sizes, their values converted to the driver's.

use std::collections::HashMap;

use mes_plugin_api::Value;
use mysql::{prelude::Queryable, Transaction};

use crate::{
    fasthash::FxBuild,
    sink::batch::{Batch, RecordedWrite, Shapes},
};

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
    // No statement takes more than the largest chunk: no need to size more rows.
    let mut fit = rows.len().min(MAX_PLACEHOLDERS / cols).min(CHUNK_ROWS[0]);
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

/// `rows` cut into statements, each of the size `next_chunk` gives.
fn chunks<'r, 'b>(mut rest: &'r [&'b [Value]]) -> impl Iterator<Item = &'r [&'b [Value]]> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (chunk, tail) = rest.split_at(next_chunk(rest));
        rest = tail;
        Some(chunk)
    })
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
            for chunk in chunks(&rows) {
                // Sized up front: collecting a flat_map grows the vector step by step.
                let mut params = Vec::with_capacity(chunk.iter().map(|r| r.len()).sum());
                params.extend(chunk.iter().flat_map(|row| row.iter().map(to_mysql)));
                let stmt = stmts.get(tx, shapes, shape, chunk.len())?;
                tx.exec_drop(&stmt, positional(params))?;
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

    fn sizes(rows: &[Vec<Value>]) -> Vec<usize> {
        let rows: Vec<&[Value]> = rows.iter().map(Vec::as_slice).collect();
        chunks(&rows).map(<[_]>::len).collect()
    }

    #[test]
    fn values_are_converted_kind_for_kind() {
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
    }

    #[test]
    fn no_values_are_sent_as_no_parameters() {
        assert_eq!(positional(Vec::new()), mysql::Params::Empty);
        assert_eq!(
            positional(vec![V::Int(1)]),
            mysql::Params::Positional(vec![V::Int(1)])
        );
    }

    #[test]
    fn a_value_counts_its_bytes_and_eight_more() {
        assert_eq!(value_bytes(&Value::from("abc")), 11);
        assert_eq!(value_bytes(&Value::json_text("[]")), 10);
        assert_eq!(value_bytes(&Value::from(&b"\x01"[..])), 9);
        assert_eq!(value_bytes(&Value::Int(1)), 9);
        assert_eq!(value_bytes(&Value::Null), 9);
    }

    #[test]
    fn rows_go_in_the_largest_fixed_chunk_that_they_fill() {
        for (rows, first) in [
            (1, 1),
            (3, 1),
            (4, 4),
            (15, 4),
            (16, 16),
            (63, 16),
            (64, 64),
            (255, 64),
            (256, 256),
            (1_000, 256),
        ] {
            assert_eq!(sizes(&table(rows, 3, 1))[0], first, "{rows} rows");
        }
        assert_eq!(sizes(&table(300, 3, 1)), [256, 16, 16, 4, 4, 4]);
        assert_eq!(sizes(&table(7, 3, 1)), [4, 1, 1, 1]);
    }

    #[test]
    fn a_statement_stays_within_65535_placeholders() {
        // 65,535 / 300 = 218 rows at most.
        assert_eq!(sizes(&table(300, 300, 1))[0], 64);
        // 65,535 / 1,100 = 59.
        assert_eq!(sizes(&table(100, 1_100, 1))[0], 16);
        // Wider than a statement may be: alone, for MySQL to refuse.
        assert_eq!(sizes(&table(2, 70_000, 0)), [1, 1]);
    }

    #[test]
    fn a_statement_stays_within_4_mib() {
        // 20 rows of 200,008 bytes fit, 21 do not.
        assert_eq!(sizes(&table(40, 1, 200_000))[0], 16);
        // 15 rows of 262,152 bytes fit, 16 do not.
        assert_eq!(sizes(&table(16, 1, 256 << 10))[0], 4);
        // 3 rows of 1 MiB fit, 4 do not.
        assert_eq!(sizes(&table(4, 1, 1 << 20)), [1, 1, 1, 1]);
        // A row larger than the limit goes alone.
        assert_eq!(sizes(&table(2, 1, 5 << 20)), [1, 1]);
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
